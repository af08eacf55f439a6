//! MXM semantics: the dot products of one 320x320 plane, as pure functions.
//!
//! Weights W are K x N (K = N = lanes), row k arriving as one vector whose lane n is
//! W[k][n]; an activation vector x has lane k = x[k]; the result has lane n =
//! sum_k x[k] * W[k][n].
//!
//! int8 x int8 products accumulate exactly in int32 (320 products of at most 2^14 never
//! overflow). fp16 x fp16 products are exact in fp32 and are accumulated in fp32
//! sequentially over k = 0, 1, ..., K-1, continuing from the slot's value when
//! accumulating; so a K-tiled matmul over several passes equals one long sequential sum,
//! and every implementation (this one, a SIMD one, the batched one) gives the same bits.

/// y[n] (+)= sum_k x[k] * w[k*n_cols + n], exact int32.
pub fn matvec_i8(w: &[i8], x: &[i8], y: &mut [i32]) {
    let n = y.len();
    for (k, &xk) in x.iter().enumerate() {
        if xk == 0 {
            continue; // exact: adding 0 changes nothing
        }
        let xk = xk as i32;
        let row = &w[k * n..(k + 1) * n];
        for (acc, &wk) in y.iter_mut().zip(row) {
            *acc += xk * wk as i32;
        }
    }
}

/// y[n] = y[n] + x[k] * w[k][n] for k = 0..K in order, in fp32 (products are exact).
/// A NaN result is the canonical quiet NaN: the hardware's default NaN differs between
/// platforms (x86 gives 0xffc00000 for inf * 0), and the bits must not.
pub fn matvec_f16(w: &[f32], x: &[f32], y: &mut [f32]) {
    let n = y.len();
    for (k, &xk) in x.iter().enumerate() {
        let row = &w[k * n..(k + 1) * n];
        for (acc, &wk) in y.iter_mut().zip(row) {
            *acc += xk * wk;
        }
    }
    for v in y.iter_mut().filter(|v| v.is_nan()) {
        *v = f32::from_bits(crate::numerics::F32_NAN);
    }
}

/// Many activation vectors through the same weights at once (`x` is M x K, `y` M x N),
/// with exactly the per-output arithmetic of [`matvec_i8`].
pub fn matmul_i8(w: &[i8], x: &[i8], y: &mut [i32], k: usize) {
    let n = w.len() / k;
    for (xr, yr) in x.chunks(k).zip(y.chunks_mut(n)) {
        matvec_i8(w, xr, yr);
    }
}

/// Many activation vectors at once, with exactly the arithmetic of [`matvec_f16`].
pub fn matmul_f16(w: &[f32], x: &[f32], y: &mut [f32], k: usize) {
    let n = w.len() / k;
    for (xr, yr) in x.chunks(k).zip(y.chunks_mut(n)) {
        matvec_f16(w, xr, yr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int8_extremes_do_not_overflow() {
        let k = 320;
        let w = vec![-128i8; k * k];
        let x = vec![-128i8; k];
        let mut y = vec![0i32; k];
        matvec_i8(&w, &x, &mut y);
        assert!(y.iter().all(|v| *v == 320 * 16384));
    }

    #[test]
    fn fp16_nan_is_canonical() {
        // inf * 0 and inf - inf give the canonical quiet NaN on every platform.
        let w = vec![f32::INFINITY, 1.0, 1.0, 0.0];
        let x = vec![0.0f32, f32::NEG_INFINITY];
        let mut y = vec![0f32; 2];
        matvec_f16(&w, &x, &mut y);
        assert_eq!(y[0].to_bits(), crate::numerics::F32_NAN);
        let w = vec![f32::INFINITY, 1.0];
        let x = vec![1.0f32, f32::NEG_INFINITY];
        let mut y = [0f32; 1];
        matvec_f16(&w, &x, &mut y[..]);
        assert_eq!(y[0].to_bits(), crate::numerics::F32_NAN);
    }

    #[test]
    fn fp16_order_is_sequential() {
        // 1 + 2^-24 + 2^-24 ... sequentially stays 1 in fp32; a tree sum would not.
        let k = 4;
        let w = vec![1.0f32, 1.0, 1.0, 1.0];
        let x = vec![1.0f32, 2f32.powi(-24), 2f32.powi(-24), 2f32.powi(-24)];
        let mut y = vec![0f32; 1];
        matvec_f16(&w, &x, &mut y);
        assert_eq!(y[0], 1.0);
        let _ = k;
    }
}
