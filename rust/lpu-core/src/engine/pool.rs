//! Buffers for batched results, used again once nothing refers to them.
//!
//! A batch's results travel as shared [`Rows`] (streams, ALU latches, pending SRAM
//! writes hold them) and are dropped a few batches later. Allocating a fresh zeroed
//! buffer per batch cost a memset, or the kernel's page clearing, of every result byte;
//! taking back a buffer whose last holder has let go costs neither.

use crate::streams::{Fold, Rows};
use std::sync::{Arc, Mutex, MutexGuard};

/// Free buffers kept (more are released).
const SPARE: usize = 16;
/// Buffers shorter than this are neither lent nor taken back: the allocator makes them
/// about as fast, and a decode step's thousand small batches made every take scan
/// some fifty lent buffers.
const POOLED: usize = 16 * 1024;

/// Behind a lock so that a batch can take buffers while it holds references into the
/// chip (uncontended: one thread runs a chip).
#[derive(Debug, Default)]
pub(super) struct Pool {
    lent: Mutex<Vec<Arc<Vec<u8>>>>,
}

/// A copy of a chip (a snapshot) starts with no buffers: sharing them would keep both
/// from ever taking them back.
impl Clone for Pool {
    fn clone(&self) -> Self {
        Pool::default()
    }
}

impl Pool {
    fn lent(&self) -> MutexGuard<'_, Vec<Arc<Vec<u8>>>> {
        // A panic while holding the lock cannot leave the list inconsistent.
        self.lent.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A buffer of `len` bytes. A reused one holds old results: the caller must write
    /// every byte before sharing it.
    pub fn take(&self, len: usize) -> Vec<u8> {
        if len < POOLED {
            return vec![0; len];
        }
        let mut lent = self.lent();
        // Free buffers: only the pool refers to them (no weak references are ever made).
        let free = |b: &Arc<Vec<u8>>| Arc::strong_count(b) == 1;
        // SPARE of them are kept: the smallest go first (the oldest of equals; the list
        // is in lending order), since they are the cheapest to make again. Dropping the
        // oldest instead let a streaming matmul's few small batches push out its 1.3 MB
        // planes every run, each then allocated and zeroed again.
        let mut extra = lent
            .iter()
            .filter(|b| free(b))
            .count()
            .saturating_sub(SPARE);
        while extra > 0 {
            let smallest = (0..lent.len())
                .filter(|&i| free(&lent[i]))
                .min_by_key(|&i| lent[i].capacity());
            lent.remove(smallest.expect("a free buffer"));
            extra -= 1;
        }
        // The newest (likeliest still in cache) that holds `len` bytes and is not more
        // than twice that (a short batch would hold a long one's buffer).
        let best = lent
            .iter()
            .rposition(|b| free(b) && (len..=2 * len).contains(&b.capacity()));
        match best.map(|i| Arc::try_unwrap(lent.remove(i))) {
            Some(Ok(mut v)) => {
                v.resize(len, 0);
                v
            }
            _ => vec![0; len],
        }
    }

    /// Share `v` as vectors of `width` bytes, in classes of `p` (see `Fold`); it comes
    /// back to the pool once every holder has dropped it.
    fn rows(&self, v: Vec<u8>, width: usize, p: usize) -> Rows {
        let rows = Rows::folded(v, width, p);
        if rows.data.capacity() >= POOLED {
            self.lent().push(rows.data.clone());
        }
        rows
    }

    /// `v` holds `planes` planes end to end, each of the same length: share it as one
    /// [`Rows`] per plane, the first `n` vectors of `width` bytes of each, in classes
    /// of `p` (see `Fold`). One buffer for a batch's planes rather than one each: a
    /// decode step makes about a thousand batches, most of several planes.
    pub fn plane_rows(
        &self,
        v: Vec<u8>,
        planes: usize,
        n: usize,
        width: usize,
        p: usize,
    ) -> Vec<Rows> {
        let len = v.len() / planes.max(1);
        debug_assert!(n * width <= len);
        let all = self.rows(v, width, 1);
        (0..planes)
            .map(|b| Rows {
                off: b * len,
                n,
                fold: (p > 1).then_some(Fold { p, k: n, first: 0 }),
                ..all.clone()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shortest pooled buffer.
    const U: usize = POOLED;

    #[test]
    fn a_buffer_comes_back_only_when_no_one_holds_it() {
        let pool = Pool::default();
        let a = pool.rows(vec![7; 8 * U], 8, 1);
        let ptr = a.data.as_ptr();
        // Still held: a new buffer, zeroed.
        let b = pool.take(8 * U);
        assert_ne!(b.as_ptr(), ptr);
        assert!(b.iter().all(|x| *x == 0));
        drop(a);
        // Let go: the same memory, cut to length.
        let c = pool.take(6 * U);
        assert_eq!(c.as_ptr(), ptr);
        assert_eq!(c, vec![7; 6 * U]);
        // A clone of the pool (of the chip) shares nothing.
        let d = pool.rows(c, 8, 1);
        let copy = pool.clone();
        assert!(copy.lent().is_empty());
        drop(d);
        // Far too big for U bytes: kept for a longer batch.
        let small = pool.take(U);
        assert_ne!(small.as_ptr(), ptr);
        assert_eq!(pool.lent().len(), 1);
        let again = pool.take(5 * U);
        assert_eq!(again.as_ptr(), ptr);
        assert!(pool.lent().is_empty());
    }

    #[test]
    fn a_batchs_planes_share_one_buffer() {
        // Three planes of 4 places of 2-byte vectors, 3 of them used, in classes of 2
        // (vector j of a class-ordered plane: 0, 2 | 1); the buffer comes back to the
        // pool once every plane is dropped.
        let pool = Pool::default();
        let width = 2;
        let len = U.div_ceil(3 * 4 * width) * 4 * width;
        let mut v = vec![0u8; 3 * len];
        for (b, plane) in v.chunks_exact_mut(len).enumerate() {
            for (place, vector) in plane.chunks_exact_mut(width).take(3).enumerate() {
                vector.fill((10 * b + place) as u8);
            }
        }
        let ptr = v.as_ptr();
        let planes = pool.plane_rows(v, 3, 3, width, 2);
        assert_eq!(planes.len(), 3);
        for (b, rows) in planes.iter().enumerate() {
            assert_eq!(rows.n, 3);
            let got: Vec<u8> = (0..3).map(|j| rows.row(j)[0]).collect();
            let b = 10 * b as u8;
            assert_eq!(got, vec![b, b + 2, b + 1], "plane {b}");
        }
        let one = planes[1].clone();
        drop(planes);
        let fresh = pool.take(3 * len);
        assert_ne!(fresh.as_ptr(), ptr, "still held");
        drop(one);
        let back = pool.take(3 * len);
        assert_eq!(back.as_ptr(), ptr);
    }

    #[test]
    fn short_buffers_are_not_pooled() {
        let pool = Pool::default();
        drop(pool.rows(vec![7; U - 1], 1, 1));
        assert!(pool.lent().is_empty());
        assert_eq!(pool.take(U - 1), vec![0; U - 1]);
    }

    #[test]
    fn spare_buffers_are_bounded() {
        let pool = Pool::default();
        for _ in 0..3 * SPARE {
            let r = pool.rows(vec![0; U], 16, 1);
            drop(r);
        }
        pool.take(64 * U);
        assert!(pool.lent().len() <= SPARE);
    }

    #[test]
    fn the_smallest_spare_buffers_go_first() {
        let pool = Pool::default();
        let big = pool.rows(vec![7; 4 * U], 16, 1);
        drop(big);
        let small: Vec<Rows> = (0..2 * SPARE)
            .map(|_| pool.rows(vec![0; U], 16, 1))
            .collect();
        drop(small);
        // The big one back (a new one would be zeroed, wherever it was put).
        assert_eq!(pool.take(4 * U), vec![7; 4 * U]);
    }
}
