//! The output latch of one VXM ALU: results by the cycle they land on, readable by a
//! chained instruction on exactly that cycle. Results of batched instructions are kept
//! plane by plane, one buffer per plane for many cycles.

use crate::streams::{PlaneRefs, Rows};
use std::collections::VecDeque;

#[derive(Clone, Debug)]
struct Bulk {
    t0: u64,
    d: u64,
    /// One entry per byte plane, each holding the plane of every result.
    planes: Vec<Rows>,
}

impl Bulk {
    fn index(&self, t: u64) -> Option<usize> {
        (t >= self.t0 && (t - self.t0).is_multiple_of(self.d))
            .then(|| ((t - self.t0) / self.d) as usize)
            .filter(|i| *i < self.planes[0].n)
    }
}

#[derive(Clone, Debug, Default)]
pub(super) struct Latch {
    single: VecDeque<(u64, Vec<u8>)>,
    bulk: Vec<Bulk>,
}

impl Latch {
    /// The width in bytes of the result landing on cycle `t` (None: there is none),
    /// copied to `out` (planes end to end) when it is `out`'s length.
    pub fn read_into(&self, t: u64, out: &mut [u8]) -> Option<usize> {
        if let Some((_, d)) = self.single.iter().find(|(c, _)| *c == t) {
            if d.len() == out.len() {
                out.copy_from_slice(d);
            }
            return Some(d.len());
        }
        let (b, i) = self.bulk.iter().find_map(|b| b.index(t).map(|i| (b, i)))?;
        let width = b.planes.iter().map(|p| p.width).sum();
        if width == out.len() {
            for (o, p) in out.chunks_mut(b.planes[0].width).zip(&b.planes) {
                o.copy_from_slice(p.row(i));
            }
        }
        Some(width)
    }

    /// Whether a result lands on cycle `t`.
    pub fn has(&self, t: u64) -> bool {
        self.read_into(t, &mut []).is_some()
    }

    /// The first j < k such that a result lands on cycle t + j d (k if there is none).
    pub fn first_landing(&self, t: u64, d: u64, k: u64) -> u64 {
        let on = |c: u64| {
            (c >= t && (c - t).is_multiple_of(d))
                .then(|| (c - t) / d)
                .filter(|j| *j < k)
        };
        let mut first = self
            .single
            .iter()
            .filter_map(|(c, _)| on(*c))
            .min()
            .unwrap_or(k);
        for b in &self.bulk {
            if first == 0 {
                break;
            }
            // Its landings from t up to the first one found so far.
            let end = t + (first - 1) * d;
            let mut i = if b.t0 >= t {
                0
            } else {
                (t - b.t0).div_ceil(b.d)
            };
            while i < b.planes[0].n as u64 && b.t0 + i * b.d <= end {
                if let Some(j) = on(b.t0 + i * b.d) {
                    first = j;
                    break;
                }
                i += 1;
            }
        }
        first
    }

    /// Results landing on t, t + d, ... (at most `k`, up to the first cycle with none),
    /// plane by plane, as references: `planes` planes of `lanes` bytes each, those of
    /// batched results running on to the end of their buffer (as `Streams::tails`).
    pub fn tails(&self, t: u64, d: u64, k: usize, planes: usize, lanes: usize) -> PlaneRefs<'_> {
        let mut out = PlaneRefs::new(planes, k);
        for j in 0..k {
            let tj = t + j as u64 * d;
            if let Some((_, v)) = self.single.iter().find(|(c, _)| *c == tj) {
                if v.len() != planes * lanes {
                    break;
                }
                out.put(j, (0..planes).map(|b| &v[b * lanes..(b + 1) * lanes]));
            } else if let Some((b, i)) = self.bulk.iter().find_map(|b| b.index(tj).map(|i| (b, i)))
            {
                if b.planes.len() != planes {
                    break;
                }
                out.put(j, b.planes.iter().map(|p| p.tail(i)));
            } else {
                break;
            }
        }
        out
    }

    /// Replace (or add) the result landing on cycle `t`.
    pub fn put(&mut self, t: u64, data: Vec<u8>) {
        self.single.retain(|(c, _)| *c != t);
        let at = self.single.partition_point(|(c, _)| *c < t);
        self.single.insert(at, (t, data));
    }

    /// Results of a batch, plane by plane, landing on t0, t0 + d, ...
    pub fn put_bulk(&mut self, t0: u64, d: u64, planes: Vec<Rows>) {
        self.bulk.push(Bulk { t0, d, planes });
    }

    /// Forget results that landed before `now` (nothing can chain from them any more).
    pub fn prune(&mut self, now: u64) {
        while self.single.front().is_some_and(|(c, _)| *c < now) {
            self.single.pop_front();
        }
        self.bulk
            .retain(|b| b.t0 + (b.planes[0].n as u64 - 1) * b.d >= now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_landing_is_the_first_cycle_has_finds() {
        let mut latch = Latch::default();
        latch.put(40, vec![1; 4]);
        latch.put(57, vec![1; 4]);
        latch.put_bulk(10, 3, vec![Rows::new(vec![0; 4 * 6], 4)]); // 10, 13, ..., 25
        latch.put_bulk(70, 2, vec![Rows::new(vec![0; 4 * 20], 4)]); // 70, 72, ..., 108
        for t in 0..120 {
            for d in 1..7 {
                for k in 0..30 {
                    let want = (0..k).find(|j| latch.has(t + j * d)).unwrap_or(k);
                    assert_eq!(latch.first_landing(t, d, k), want, "t {t} d {d} k {k}");
                }
            }
        }
    }
}
