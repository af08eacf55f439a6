//! The queues waiting to issue, by the cycle they next issue on.
//!
//! Most waits are short (the next instruction, the next re-issue), so the next `RING`
//! cycles each have a bucket, found through a bitmap of the non-empty ones; later
//! cycles (long `nop`s) wait in a heap and move to their bucket as the ring comes near
//! them. A binary heap of every queue did the same with a logarithmic cost per issue,
//! about 5 % of a decode step.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Cycles with a bucket of their own (a power of two).
const RING: usize = 512;

#[derive(Debug)]
pub(super) struct Due {
    /// No entry is for a cycle before this one; bucket `c % RING` holds cycle c for c in
    /// `base..base + RING`.
    base: u64,
    ring: Vec<Vec<usize>>,
    /// Bit c % RING is set when that bucket is not empty.
    occupied: [u64; RING / 64],
    later: BinaryHeap<Reverse<(u64, usize)>>,
}

impl Due {
    pub fn new(from: u64) -> Due {
        Due {
            base: from,
            ring: vec![Vec::new(); RING],
            occupied: [0; RING / 64],
            later: BinaryHeap::new(),
        }
    }

    /// Queue `qi` issues next on cycle `t` (a cycle before the earliest still waiting
    /// counts as that one).
    pub fn push(&mut self, t: u64, qi: usize) {
        let t = t.max(self.base);
        if t < self.base + RING as u64 {
            let b = t as usize % RING;
            self.ring[b].push(qi);
            self.occupied[b / 64] |= 1 << (b % 64);
        } else {
            self.later.push(Reverse((t, qi)));
        }
    }

    /// The earliest cycle some queue waits for.
    pub fn next(&self) -> Option<u64> {
        let start = self.base as usize % RING;
        // Scan the bitmap from the base's bucket round to the one before it.
        for step in 0..=RING / 64 {
            let word = (start / 64 + step) % (RING / 64);
            let mut bits = self.occupied[word];
            if step == 0 {
                bits &= u64::MAX << (start % 64);
            } else if step == RING / 64 {
                bits &= !(u64::MAX << (start % 64));
            }
            if bits != 0 {
                let b = word * 64 + bits.trailing_zeros() as usize;
                return Some(self.base + ((b + RING - start) % RING) as u64);
            }
        }
        self.later.peek().map(|Reverse((t, _))| *t)
    }

    /// Move the queues due on or before cycle `t` to `out`, by cycle, then by index.
    pub fn pop_until(&mut self, t: u64, out: &mut Vec<usize>) {
        while let Some(c) = self.next().filter(|c| *c <= t) {
            self.advance(c);
            let b = c as usize % RING;
            let first = out.len();
            out.append(&mut self.ring[b]);
            out[first..].sort_unstable();
            self.occupied[b / 64] &= !(1 << (b % 64));
        }
    }

    /// Make `c` (the earliest cycle waited for) the base, bringing the heap's entries
    /// that are now near enough into their buckets.
    fn advance(&mut self, c: u64) {
        self.base = c;
        while let Some(&Reverse((t, qi))) = self.later.peek() {
            if t >= c + RING as u64 {
                break;
            }
            self.later.pop();
            self.push(t, qi);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_the_order_of_a_heap() {
        // Against a plain heap, on a pseudo-random mix of near and far pushes.
        let mut due = Due::new(0);
        let mut heap: BinaryHeap<Reverse<(u64, usize)>> = BinaryHeap::new();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut now = 0u64;
        let mut out = Vec::new();
        for round in 0..20_000 {
            for _ in 0..(round % 4) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let ahead = match x % 10 {
                    0 => 2000 + x % 5000,
                    1 => RING as u64 - 1 + x % 3,
                    _ => 1 + x % 40,
                };
                let qi = (x >> 20) as usize % 200;
                due.push(now + ahead, qi);
                heap.push(Reverse((now + ahead, qi)));
            }
            assert_eq!(due.next(), heap.peek().map(|Reverse((t, _))| *t));
            let Some(t) = due.next() else { continue };
            out.clear();
            due.pop_until(t, &mut out);
            let mut want = Vec::new();
            while heap.peek().is_some_and(|Reverse((c, _))| *c <= t) {
                want.push(heap.pop().unwrap().0 .1);
            }
            assert_eq!(out, want, "cycle {t}");
            now = t;
        }
    }
}
