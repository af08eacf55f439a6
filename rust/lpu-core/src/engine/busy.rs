//! Sets of busy cycles, stored sparsely (64-cycle blocks), so that "cycles on which a
//! unit issued" is exact whether instructions issue one by one or in batches.

use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BusySet {
    blocks: BTreeMap<u64, u64>,
}

impl BusySet {
    pub fn insert(&mut self, cycle: u64) {
        *self.blocks.entry(cycle >> 6).or_insert(0) |= 1 << (cycle & 63);
    }

    /// Insert cycles t0, t0 + d, ..., t0 + (n - 1) d.
    pub fn insert_progression(&mut self, t0: u64, d: u64, n: u64) {
        if d == 1 {
            let (mut c, end) = (t0, t0 + n);
            while c < end {
                let block = c >> 6;
                let lo = c & 63;
                let hi = (end - (block << 6)).min(64);
                let mask = if hi - lo == 64 {
                    u64::MAX
                } else {
                    ((1u64 << (hi - lo)) - 1) << lo
                };
                *self.blocks.entry(block).or_insert(0) |= mask;
                c = (block + 1) << 6;
            }
        } else {
            for k in 0..n {
                self.insert(t0 + k * d);
            }
        }
    }

    pub fn count(&self) -> u64 {
        self.blocks.values().map(|b| b.count_ones() as u64).sum()
    }

    /// How many cycles of each of `n` bins of `width` cycles (from cycle 0) are in the set.
    pub fn histogram(&self, width: u64, n: usize) -> Vec<u64> {
        let mut out = vec![0u64; n];
        let width = width.max(1);
        for (&block, &bits) in &self.blocks {
            let mut b = bits;
            while b != 0 {
                let cycle = (block << 6) + b.trailing_zeros() as u64;
                b &= b - 1;
                if let Some(o) = out.get_mut((cycle / width) as usize) {
                    *o += 1;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progressions_match_single_inserts() {
        for (t0, d, n) in [(0, 1, 200), (5, 1, 1), (63, 1, 2), (100, 3, 50), (7, 1, 64)] {
            let mut a = BusySet::default();
            let mut b = BusySet::default();
            a.insert_progression(t0, d, n);
            for k in 0..n {
                b.insert(t0 + k * d);
            }
            assert_eq!(a, b);
            assert_eq!(a.count(), n);
            let h = a.histogram(16, 64);
            for (i, c) in h.iter().enumerate() {
                let lo = 16 * i as u64;
                let want = (0..n)
                    .filter(|k| (lo..lo + 16).contains(&(t0 + k * d)))
                    .count();
                assert_eq!(*c, want as u64);
            }
        }
    }
}
