//! The output latch of one VXM ALU: results by the cycle they land on, readable by a
//! chained instruction on exactly that cycle. Results of batched instructions are kept
//! as one array for many cycles.

use std::collections::VecDeque;
use std::sync::Arc;

#[derive(Clone, Debug)]
struct Bulk {
    t0: u64,
    d: u64,
    n: usize,
    width: usize,
    data: Arc<Vec<u8>>,
}

impl Bulk {
    fn index(&self, t: u64) -> Option<usize> {
        (t >= self.t0 && (t - self.t0) % self.d == 0)
            .then(|| ((t - self.t0) / self.d) as usize)
            .filter(|i| *i < self.n)
    }
}

#[derive(Clone, Debug, Default)]
pub(super) struct Latch {
    single: VecDeque<(u64, Vec<u8>)>,
    bulk: Vec<Bulk>,
}

impl Latch {
    /// The result landing on cycle `t`, if any.
    pub fn get(&self, t: u64) -> Option<&[u8]> {
        if let Some((_, d)) = self.single.iter().find(|(c, _)| *c == t) {
            return Some(d);
        }
        self.bulk
            .iter()
            .find_map(|b| b.index(t).map(|i| &b.data[i * b.width..(i + 1) * b.width]))
    }

    pub fn has(&self, t: u64) -> bool {
        self.get(t).is_some()
    }

    /// Replace (or add) the result landing on cycle `t`.
    pub fn put(&mut self, t: u64, data: Vec<u8>) {
        self.single.retain(|(c, _)| *c != t);
        let at = self.single.partition_point(|(c, _)| *c < t);
        self.single.insert(at, (t, data));
    }

    /// Results of a batch: `n` values of `width` bytes landing on t0, t0 + d, ...
    pub fn put_bulk(&mut self, t0: u64, d: u64, width: usize, data: Arc<Vec<u8>>) {
        let n = data.len() / width;
        self.bulk.push(Bulk {
            t0,
            d,
            n,
            width,
            data,
        });
    }

    /// Forget results that landed before `now` (nothing can chain from them any more).
    pub fn prune(&mut self, now: u64) {
        while self.single.front().is_some_and(|(c, _)| *c < now) {
            self.single.pop_front();
        }
        self.bulk.retain(|b| b.t0 + (b.n as u64 - 1) * b.d >= now);
    }
}
