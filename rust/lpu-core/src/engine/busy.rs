//! Sets of busy cycles, stored sparsely (chunks of 4096 cycles as bitmaps), so that
//! "cycles on which a unit issued" is exact whether instructions issue one by one or in
//! batches, and a batch of n issues costs about n bit sets, not n map lookups.

use std::collections::BTreeMap;

/// Cycles per chunk: 64 words of 64 bits.
const CHUNK_SHIFT: u64 = 12;
const CHUNK: u64 = 1 << CHUNK_SHIFT;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BusySet {
    chunks: BTreeMap<u64, Box<[u64; 64]>>,
}

impl BusySet {
    fn chunk(&mut self, cycle: u64) -> &mut [u64; 64] {
        self.chunks
            .entry(cycle >> CHUNK_SHIFT)
            .or_insert_with(|| Box::new([0; 64]))
    }

    pub fn insert(&mut self, cycle: u64) {
        let c = (cycle & (CHUNK - 1)) as usize;
        self.chunk(cycle)[c >> 6] |= 1 << (c & 63);
    }

    /// Insert cycles t0, t0 + d, ..., t0 + (n - 1) d.
    pub fn insert_progression(&mut self, t0: u64, d: u64, n: u64) {
        let d = d.max(1);
        let mut k = 0;
        while k < n {
            let first = t0 + k * d;
            let base = first & !(CHUNK - 1);
            let chunk = self.chunk(first);
            // The terms of the progression that fall in this chunk.
            let m = ((base + CHUNK - first - 1) / d + 1).min(n - k);
            if d == 1 {
                let (lo, hi) = (first - base, first - base + m);
                let words = (lo >> 6) as usize..=((hi - 1) >> 6) as usize;
                for (word, w) in chunk[words.clone()].iter_mut().zip(words) {
                    let (a, b) = (64 * w as u64, 64 * w as u64 + 64);
                    let (l, h) = (lo.max(a), hi.min(b));
                    if l < h {
                        let bits = h - l;
                        let mask = if bits == 64 {
                            u64::MAX
                        } else {
                            ((1u64 << bits) - 1) << (l - a)
                        };
                        *word |= mask;
                    }
                }
            } else {
                // Bits gathered in a register, a word at a time (setting each in memory
                // made every one wait for the previous store to the same word).
                let (mut word, mut bits) = (((first - base) >> 6) as usize, 0u64);
                for j in 0..m {
                    let c = (first - base + j * d) as usize;
                    if c >> 6 != word {
                        chunk[word] |= bits;
                        (word, bits) = (c >> 6, 0);
                    }
                    bits |= 1 << (c & 63);
                }
                chunk[word] |= bits;
            }
            k += m;
        }
    }

    pub fn count(&self) -> u64 {
        self.chunks
            .values()
            .flat_map(|c| c.iter())
            .map(|b| b.count_ones() as u64)
            .sum()
    }

    /// How many cycles of each of `n` bins of `width` cycles (from cycle 0) are in the set.
    pub fn histogram(&self, width: u64, n: usize) -> Vec<u64> {
        let mut out = vec![0u64; n];
        let width = width.max(1);
        for (&chunk, words) in &self.chunks {
            for (w, &bits) in words.iter().enumerate() {
                let mut b = bits;
                while b != 0 {
                    let cycle = (chunk << CHUNK_SHIFT) + 64 * w as u64 + b.trailing_zeros() as u64;
                    b &= b - 1;
                    if let Some(o) = out.get_mut((cycle / width) as usize) {
                        *o += 1;
                    }
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
        for (t0, d, n) in [
            (0, 1, 200),
            (5, 1, 1),
            (63, 1, 2),
            (100, 3, 50),
            (7, 1, 64),
            (4000, 1, 9000),
            (4090, 13, 2000),
            (1 << 40, 4097, 5),
            (1, 2, 300),
            (10, 64, 100),
            (33, 65, 70),
            (5, 100, 200),
        ] {
            let mut a = BusySet::default();
            let mut b = BusySet::default();
            a.insert_progression(t0, d, n);
            for k in 0..n {
                b.insert(t0 + k * d);
            }
            assert_eq!(a, b);
            assert_eq!(a.count(), n);
            let h = a.histogram(16, 64);
            assert_eq!(
                h.iter().sum::<u64>(),
                (0..n).filter(|k| t0 + k * d < 1024).count() as u64
            );
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
