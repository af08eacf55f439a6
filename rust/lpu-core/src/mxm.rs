//! MXM semantics: the dot products of one plane, as pure functions.
//!
//! Weights W are K x N (K = N = lanes), row k arriving as one vector whose lane n is
//! W[k][n]; an activation vector x has lane k = x[k]; the result has lane n =
//! sum_k x[k] * W[k][n].
//!
//! int8 x int8 products accumulate exactly in int32. fp16 x fp16 products are exact in
//! fp32 and are accumulated in fp32 sequentially over k = 0, 1, ..., K-1, continuing from
//! the slot's value when accumulating; so a K-tiled matmul over several passes equals one
//! long sequential sum, and every implementation gives the same bits.
//!
//! Both run on one fp32 kernel. For fp16 that is the definition. For int8 it is exact:
//! a product is at most 2^14 in magnitude, so every partial sum of at most 1024 of them
//! is an integer below 2^24, which fp32 represents exactly, in any order.

use multiversion::multiversion;

/// Rows of activations per block of the product kernel.
const ROWS: usize = 6;
/// Result lanes per block (four AVX-512 or eight AVX2 registers per row; 6 x 4 AVX-512
/// accumulators leave room for the weights and the broadcast activation).
const COLS: usize = 64;
/// Fewest activation rows worth a second thread.
const ROWS_PER_THREAD: usize = 64;

/// The weights installed in a plane.
#[derive(Clone, Debug, Default)]
pub struct Weights {
    /// int8 weights (results are int32) or fp16 weights (results are fp32).
    pub int8: bool,
    /// N, the result lanes.
    pub n: usize,
    /// K x N, exact as fp32.
    w: Vec<f32>,
}

impl Weights {
    /// From the K x N weight values (int8 or fp16 values, exact in fp32).
    #[cfg(test)]
    pub fn new(int8: bool, n: usize, w: Vec<f32>) -> Self {
        debug_assert!(w.len() / n <= 1024, "int8 exactness needs K <= 1024");
        Weights { int8, n, w }
    }

    /// Install the n x n array held by a plane's weight buffer: row r (of `used` loaded
    /// rows; the rest are zero) is `r_bytes` bytes, byte planes of n lanes each (one for
    /// int8, two for fp16). With `transpose`, buffer row r becomes array column r.
    pub fn install(&mut self, int8: bool, n: usize, buf: &[u8], used: usize, transpose: bool) {
        debug_assert!(n <= 1024, "int8 exactness needs K <= 1024");
        let rb = if int8 { n } else { 2 * n };
        let f16 = crate::numerics::f16_table();
        let value = |r: usize, c: usize| {
            let row = &buf[r * rb..(r + 1) * rb];
            if int8 {
                row[c] as i8 as f32
            } else {
                f16[(row[c] as u16 | (row[n + c] as u16) << 8) as usize]
            }
        };
        self.int8 = int8;
        self.n = n;
        self.w.resize(n * n, 0.0);
        // Each entry is written once, in array order.
        for (i, out) in self.w.chunks_mut(n).enumerate() {
            if transpose {
                for (r, o) in out[..used].iter_mut().enumerate() {
                    *o = value(r, i);
                }
                out[used..].fill(0.0);
            } else if i < used {
                for (c, o) in out.iter_mut().enumerate() {
                    *o = value(i, c);
                }
            } else {
                out.fill(0.0);
            }
        }
    }

    /// `m` activation vectors through the array: `fill(i, x)` writes vector i (K values,
    /// exact in fp32) into `x`; row i of `acc` (M x N, raw bits of the slots: int32 or
    /// fp32) becomes the result of `abc`, added to its value when `accumulate`, else
    /// replacing it.
    pub fn apply(
        &self,
        m: usize,
        fill: impl Fn(usize, &mut [f32]),
        acc: &mut [u32],
        accumulate: bool,
    ) {
        let n = self.n;
        let k = self.w.len() / n;
        // Scratch buffers kept per thread: megabytes each, used on every batch.
        thread_local! {
            static SCRATCH: std::cell::RefCell<(Vec<f32>, Vec<f32>)> = Default::default();
        }
        SCRATCH.with(|cell| {
            let (x, y) = &mut *cell.borrow_mut();
            x.resize(m * k, 0.0);
            for (i, row) in x.chunks_mut(k).enumerate() {
                fill(i, row);
            }
            y.clear();
            if accumulate && !self.int8 {
                // The fp32 sum continues from the slot's value.
                y.extend(acc.iter().map(|a| f32::from_bits(*a)));
            } else {
                y.resize(m * n, 0.0);
            }
            let threads = threads().min(m / ROWS_PER_THREAD).max(1);
            if threads == 1 {
                gemm(&self.w, n, x, y);
            } else {
                // Rows are independent, so splitting them cannot change a bit.
                let per = m.div_ceil(threads);
                std::thread::scope(|s| {
                    for (xs, ys) in x.chunks(per * k).zip(y.chunks_mut(per * n)) {
                        s.spawn(move || gemm(&self.w, n, xs, ys));
                    }
                });
            }
            for (a, v) in acc.iter_mut().zip(y.iter()) {
                *a = if self.int8 {
                    // Exact integer sum (see above); int32 accumulation wraps like the
                    // hardware's.
                    let v = *v as i32;
                    (if accumulate {
                        (*a as i32).wrapping_add(v)
                    } else {
                        v
                    }) as u32
                } else if v.is_nan() {
                    // The hardware's default NaN differs between platforms (x86 gives
                    // 0xffc00000 for inf * 0); the bits must not.
                    crate::numerics::F32_NAN
                } else {
                    v.to_bits()
                };
            }
        });
    }
}

fn threads() -> usize {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *N.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get().min(8)))
}

/// y[r][c] += sum over k, in order, of x[r][k] * w[k][c] (x: M x K, y: M x N, w: K x N),
/// each product and sum rounded to fp32. Blocks of ROWS x COLS results stay in registers
/// while k runs; the remaining rows and columns take the plain loop, with the same order.
#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq+fma",
    "x86_64+avx2+fma",
    "aarch64+neon"
))]
fn gemm(w: &[f32], n: usize, x: &[f32], y: &mut [f32]) {
    let m = y.len() / n;
    let k = x.len() / m.max(1);
    let mut r0 = 0;
    while r0 + ROWS <= m {
        let mut c0 = 0;
        while c0 + COLS <= n {
            let mut acc = [[0f32; COLS]; ROWS];
            for (r, a) in acc.iter_mut().enumerate() {
                a.copy_from_slice(&y[(r0 + r) * n + c0..(r0 + r) * n + c0 + COLS]);
            }
            for kk in 0..k {
                let wr: &[f32; COLS] = w[kk * n + c0..kk * n + c0 + COLS]
                    .try_into()
                    .expect("COLS wide");
                for (r, a) in acc.iter_mut().enumerate() {
                    let xv = x[(r0 + r) * k + kk];
                    for (a, wv) in a.iter_mut().zip(wr) {
                        *a += xv * wv;
                    }
                }
            }
            for (r, a) in acc.iter().enumerate() {
                y[(r0 + r) * n + c0..(r0 + r) * n + c0 + COLS].copy_from_slice(a);
            }
            c0 += COLS;
        }
        for r in r0..r0 + ROWS {
            axpy_rows(w, n, c0, &x[r * k..(r + 1) * k], &mut y[r * n..(r + 1) * n]);
        }
        r0 += ROWS;
    }
    for r in r0..m {
        axpy_rows(w, n, 0, &x[r * k..(r + 1) * k], &mut y[r * n..(r + 1) * n]);
    }
}

/// Lanes `c0..` of one result row: y[c] += x[k] * w[k][c] for k in order.
#[inline(always)]
fn axpy_rows(w: &[f32], n: usize, c0: usize, x: &[f32], y: &mut [f32]) {
    for (kk, xv) in x.iter().enumerate() {
        let row = &w[kk * n + c0..(kk + 1) * n];
        for (a, wv) in y[c0..].iter_mut().zip(row) {
            *a += xv * wv;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(w: &[f32], n: usize, x: &[f32], y: &mut [f32]) {
        let k = w.len() / n;
        for (xr, yr) in x.chunks(k).zip(y.chunks_mut(n)) {
            for (kk, xv) in xr.iter().enumerate() {
                for c in 0..n {
                    yr[c] += xv * w[kk * n + c];
                }
            }
        }
    }

    #[test]
    fn blocked_kernel_and_threads_match_the_plain_loop() {
        // Ragged sizes exercise the block edges; fp32 sums are order-sensitive, so equal
        // bits show the order is the same.
        for (m, n) in [(1, 70), (7, 64), (9, 130), (300, 320)] {
            let k = n;
            let w: Vec<f32> = (0..k * n)
                .map(|i| ((i * 7919) % 97) as f32 * 0.37 - 17.0)
                .collect();
            let x: Vec<f32> = (0..m * k)
                .map(|i| ((i * 104_729) % 89) as f32 * 0.11 - 5.0)
                .collect();
            let mut want = vec![0.5f32; m * n];
            naive(&w, n, &x, &mut want);
            let wts = Weights::new(false, n, w);
            let mut got: Vec<u32> = vec![0.5f32.to_bits(); m * n];
            wts.apply(
                m,
                |i, r| r.copy_from_slice(&x[i * k..(i + 1) * k]),
                &mut got,
                true,
            );
            assert!(
                got.iter().zip(&want).all(|(g, w)| *g == w.to_bits()),
                "{m}x{n}"
            );
        }
    }

    #[test]
    fn int8_extremes_are_exact() {
        let k = 320;
        let w = Weights::new(true, k, vec![-128.0; k * k]);
        let x = |_: usize, r: &mut [f32]| r.fill(-128.0);
        let mut y = vec![5u32; k];
        w.apply(1, x, &mut y, true);
        assert!(y.iter().all(|v| *v == 320 * 16384 + 5));
        w.apply(1, x, &mut y, false);
        assert!(y.iter().all(|v| *v == 320 * 16384));
    }

    #[test]
    fn fp16_nan_is_canonical() {
        // inf * 0 and inf - inf give the canonical quiet NaN on every platform.
        let w = Weights::new(false, 2, vec![f32::INFINITY, 1.0, 1.0, 0.0]);
        let mut y = vec![0u32; 2];
        w.apply(
            1,
            |_, r| r.copy_from_slice(&[0.0, f32::NEG_INFINITY]),
            &mut y,
            false,
        );
        assert_eq!(y, vec![crate::numerics::F32_NAN; 2]);
        let w = Weights::new(false, 1, vec![f32::INFINITY, 1.0]);
        let mut y = vec![0u32; 1];
        w.apply(
            1,
            |_, r| r.copy_from_slice(&[1.0, f32::NEG_INFINITY]),
            &mut y,
            false,
        );
        assert_eq!(y[0], crate::numerics::F32_NAN);
    }

    #[test]
    fn fp16_order_is_sequential() {
        // 1 + 2^-24 + 2^-24 ... sequentially stays 1 in fp32; a tree sum would not.
        let w = Weights::new(false, 1, vec![1.0; 4]);
        let x = [1.0f32, 2f32.powi(-24), 2f32.powi(-24), 2f32.powi(-24)];
        let mut y = vec![0u32; 1];
        w.apply(1, |_, r| r.copy_from_slice(&x), &mut y, false);
        assert_eq!(f32::from_bits(y[0]), 1.0);
    }
}
