//! Number formats and conversions with defined rounding (design idea 6).
//!
//! Every narrowing to fp16 or bf16 is rounded once, to nearest with ties to even, from
//! an exact f64 value. Arithmetic on fp16 and fp32 computes the exact result in f64 and
//! rounds once: f64 carries more than 2p+2 bits for both formats, so this is the
//! correctly rounded IEEE result. NaN results are the canonical quiet NaN (sign 0).

use crate::dtype::DType;

/// Canonical quiet NaN bit patterns.
pub const F16_NAN: u16 = 0x7e00;
pub const BF16_NAN: u16 = 0x7fc0;
pub const F32_NAN: u32 = 0x7fc0_0000;

/// fp32 `exp` as the chip defines it: libm's f64 `exp` of the value, rounded to fp32
/// (canonical NaN for NaN). `exp_f32_fast` gives the same bits for most inputs without
/// libm, in straight-line code a loop can vectorise; this is the reference.
pub fn exp_f32(x: f32) -> u32 {
    let r = libm::exp(x as f64) as f32;
    if r.is_nan() {
        F32_NAN
    } else {
        r.to_bits()
    }
}

/// fp32 `exp` without libm: `(bits, true)` when the bits are `exp_f32(x)`'s, `(_, false)`
/// when it cannot tell (then call `exp_f32`; about one input in four million, and
/// those whose result is subnormal (x from -104 to -87), x above 88, and NaN).
///
/// Why the bits are the same: the value is computed in f64 to within a few f64 units
/// in the last place (ulps) of exp(x): x = k ln 2 + r with |r| <= ln 2 / 2 (ln 2 split
/// in two parts, so k ln 2 is exact to far below an ulp), exp(r) by its Taylor series to
/// r^13 (the rest is below 2^-60), times 2^k, which is exact. libm's `exp` is within
/// one ulp of exp(x) too. Two f64 values within a few ulps of each other round to the
/// same fp32 unless an fp32 rounding midpoint lies between them, so the result is
/// taken only when ours is more than 64 ulps from every midpoint (its 29 bits below
/// fp32's precision more than 64 from 2^28); fp32 results in this range are normal,
/// so those 29 bits are exactly what rounding to fp32 drops.
#[inline(always)]
pub fn exp_f32_fast(x: f32) -> (u32, bool) {
    const LOG2E: f64 = std::f64::consts::LOG2_E;
    // ln 2 = LN2_HI + LN2_LO; LN2_HI has 32 trailing zero bits, so k * LN2_HI is exact.
    const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    const ROUND: f64 = 6_755_399_441_055_744.0; // 1.5 * 2^52: adding it rounds to an integer
    let xd = x as f64;
    let t = xd * LOG2E + ROUND;
    let k = t - ROUND;
    let r = (xd - k * LN2_HI) - k * LN2_LO;
    // Horner's rule for 1 + r + r^2/2! + ... + r^13/13!.
    let mut p = 1.0 / 6_227_020_800.0;
    for d in [
        479_001_600.0,
        39_916_800.0,
        3_628_800.0,
        362_880.0,
        40_320.0,
        5_040.0,
        720.0,
        120.0,
        24.0,
        6.0,
        2.0,
        1.0,
        1.0,
    ] {
        p = p * r + 1.0 / d;
    }
    // k is t's low mantissa bits (an integer within +-2^31 for every x tested below).
    let ki = (t.to_bits() as i64).wrapping_sub(ROUND.to_bits() as i64);
    let scale = f64::from_bits((ki.wrapping_add(1023) as u64) << 52);
    let y = p * scale;
    let low = (y.to_bits() & ((1 << 29) - 1)) as i64;
    let clear = (low - (1 << 28)).abs() > 64;
    // exp(x) for x in this range is a normal fp32 number (and NaN fails every test).
    // Below -104 (masked scores: -inf or a large negative number), exp(x) is under
    // half the smallest fp32 subnormal, 2^-150, and rounds to +0.
    let tiny = x < -104.0;
    let ok = (clear && x > -87.0 && x < 88.0) || tiny;
    (if tiny { 0 } else { (y as f32).to_bits() }, ok)
}

/// Exact value of an fp16 bit pattern.
pub fn f16_to_f64(h: u16) -> f64 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = ((h >> 10) & 0x1f) as i32;
    let frac = (h & 0x3ff) as f64;
    match exp {
        0 => sign * frac * (2f64).powi(-24),
        31 if frac == 0.0 => sign * f64::INFINITY,
        31 => f64::NAN,
        e => sign * (1.0 + frac / 1024.0) * (2f64).powi(e - 15),
    }
}

/// fp16 → f32 through a lookup table (exact; every fp16 value is an f32 value).
pub fn f16_to_f32(h: u16) -> f32 {
    f16_table()[h as usize]
}

/// The value of every fp16 bit pattern.
fn f16_table() -> &'static [f32; 65536] {
    static T: std::sync::OnceLock<Box<[f32; 65536]>> = std::sync::OnceLock::new();
    T.get_or_init(|| {
        let mut t = Box::new([0f32; 65536]);
        for (h, v) in t.iter_mut().enumerate() {
            *v = f16_to_f64(h as u16) as f32;
        }
        t
    })
}

/// fp16 → f32 in integer steps and one multiply, for loops the compiler vectorises
/// (the table is faster one value at a time). Same bits as [`f16_to_f32`], NaN included.
#[inline(always)]
pub fn f16_to_f32_bits(h: u16) -> u32 {
    let em = (h & 0x7fff) as u32;
    // Exponent and fraction moved to f32's places read as 2^-112 times the value, for
    // normal and subnormal fp16 alike; the power-of-two scaling is exact.
    let v = (f32::from_bits(em << 13) * f32::from_bits(0x7780_0000)).to_bits();
    let r = if em >= 0x7c00 { 0x7f80_0000 } else { v } | ((h as u32 & 0x8000) << 16);
    if em > 0x7c00 {
        F32_NAN
    } else {
        r
    }
}

/// f32 → fp16 with exactly the rounding of [`f64_to_f16`] (every f32 is an f64), in
/// integer steps and one add so that loops over it vectorise.
#[inline(always)]
pub fn f32_to_f16_bits(x: u32, sat: bool) -> u16 {
    let a = x & 0x7fff_ffff;
    // Below 2^-14 (fp16 subnormals): adding 0.5, whose last place is fp16's smallest
    // step 2^-24, rounds to nearest even; the bits above 0.5's count the steps.
    let sub = (f32::from_bits(a) + 0.5)
        .to_bits()
        .wrapping_sub(0x3f00_0000);
    // Normal: rebias the exponent and round the 13 dropped bits, ties to even (a carry
    // out of the fraction correctly moves to the next exponent).
    let norm = a.wrapping_add(0xc800_0fff).wrapping_add((a >> 13) & 1) >> 13;
    let mut r = if a < 0x3880_0000 { sub } else { norm };
    // 65520 and more round past the largest finite value 65504.
    if a >= 0x477f_f000 {
        r = if sat { 0x7bff } else { 0x7c00 };
    }
    if a == 0x7f80_0000 {
        r = 0x7c00;
    }
    r |= (x >> 16) & 0x8000;
    if a > 0x7f80_0000 {
        r = F16_NAN as u32;
    }
    r as u16
}

/// Exact value of a bf16 bit pattern (the top half of an f32).
pub fn bf16_to_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// Round an exact value to a binary float format with `frac` fraction bits and `exp`
/// exponent bits, to nearest with ties to even. Overflow of a finite value gives
/// ±infinity, or the largest finite value when `sat` is set; an infinite input stays
/// infinite (it is exact, not an overflow), as in [`f64_to_f32`].
fn round_to_format(x: f64, frac: u32, exp: u32, sat: bool) -> u32 {
    let sign_bit = 1u32 << (frac + exp);
    let max_biased = (1u32 << exp) - 1;
    let inf = max_biased << frac;
    if x.is_nan() {
        return inf | (1 << (frac - 1));
    }
    let sign = if x.is_sign_negative() { sign_bit } else { 0 };
    let a = x.abs();
    let overflow = if sat { inf - 1 } else { inf };
    if a.is_infinite() {
        return sign | inf;
    }
    if a == 0.0 {
        return sign;
    }
    let bias = (1i32 << (exp - 1)) - 1;
    let e = ((a.to_bits() >> 52) as i32) - 1023; // f64 subnormals are far below any target
    let q = e.max(1 - bias) - frac as i32; // exponent of the target's last place
    let scaled = a * f64::from_bits(((1023 - q) as u64) << 52); // exact power-of-two scaling
    let mut m = scaled.round_ties_even() as u64;
    let mut lead = q + frac as i32; // exponent of the leading bit when normal
    if m >= 1u64 << (frac + 1) {
        m >>= 1;
        lead += 1;
    }
    if m < 1u64 << frac {
        return sign | m as u32; // subnormal or zero
    }
    let biased = (lead + bias) as u32;
    if biased >= max_biased {
        return sign | overflow;
    }
    sign | (biased << frac) | (m as u32 - (1 << frac))
}

pub fn f64_to_f16(x: f64, sat: bool) -> u16 {
    round_to_format(x, 10, 5, sat) as u16
}

pub fn f64_to_bf16(x: f64, sat: bool) -> u16 {
    round_to_format(x, 7, 8, sat) as u16
}

pub fn f64_to_f32(x: f64, sat: bool) -> f32 {
    if x.is_nan() {
        return f32::from_bits(F32_NAN);
    }
    let r = x as f32; // Rust rounds f64 -> f32 to nearest even
    if sat && r.is_infinite() && x.is_finite() {
        return f32::MAX.copysign(r);
    }
    r
}

/// Round a float to an integer of `bits` bits: nearest, ties to even, saturating;
/// NaN gives 0.
pub fn f64_to_int(x: f64, bits: u32) -> i64 {
    if x.is_nan() {
        return 0;
    }
    let (lo, hi) = int_range(bits);
    let r = x.round_ties_even();
    if r <= lo as f64 {
        lo
    } else if r >= hi as f64 {
        hi
    } else {
        r as i64
    }
}

pub fn int_range(bits: u32) -> (i64, i64) {
    (-(1i64 << (bits - 1)), (1i64 << (bits - 1)) - 1)
}

/// Wrap an integer to `bits` bits, two's complement.
pub fn wrap(v: i64, bits: u32) -> i64 {
    let s = 64 - bits;
    (v << s) >> s
}

/// Read lane `l` of a plane-major vector (plane b holds byte b of every element) as
/// raw little-endian bits.
#[inline]
pub fn lane_bits(planes: &[u8], lanes: usize, bytes: usize, l: usize) -> u32 {
    let mut v = 0u32;
    for b in 0..bytes {
        v |= (planes[b * lanes + l] as u32) << (8 * b);
    }
    v
}

#[inline]
pub fn set_lane_bits(planes: &mut [u8], lanes: usize, bytes: usize, l: usize, v: u32) {
    for b in 0..bytes {
        planes[b * lanes + l] = (v >> (8 * b)) as u8;
    }
}

/// The value of raw bits of type `dt` as f64 (exact for every type).
#[inline]
pub fn bits_to_f64(dt: DType, v: u32) -> f64 {
    match dt {
        DType::I8 => v as u8 as i8 as f64,
        DType::I16 => v as u16 as i16 as f64,
        DType::I32 => v as i32 as f64,
        DType::F16 => f16_to_f32(v as u16) as f64,
        DType::F32 => f32::from_bits(v) as f64,
        DType::Bf16 => bf16_to_f32(v as u16) as f64,
    }
}

/// The value of raw bits of an integer type, sign-extended.
#[inline]
pub fn bits_to_int(dt: DType, v: u32) -> i64 {
    match dt {
        DType::I8 => v as u8 as i8 as i64,
        DType::I16 => v as u16 as i16 as i64,
        _ => v as i32 as i64,
    }
}

/// Encode a float value as raw bits of float type `dt`, rounding once.
#[inline]
pub fn f64_to_bits(dt: DType, x: f64, sat: bool) -> u32 {
    match dt {
        DType::F16 => f64_to_f16(x, sat) as u32,
        DType::Bf16 => f64_to_bf16(x, sat) as u32,
        _ => f64_to_f32(x, sat).to_bits(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectorisable_f16_widening_matches_the_table_for_every_value() {
        for h in 0..=u16::MAX {
            assert_eq!(f16_to_f32_bits(h), f16_to_f32(h).to_bits(), "{h:#06x}");
        }
    }

    #[test]
    fn vectorisable_f16_narrowing_rounds_like_the_definition() {
        let check = |x: u32| {
            let v = f32::from_bits(x) as f64;
            for sat in [false, true] {
                assert_eq!(
                    f32_to_f16_bits(x, sat),
                    f64_to_f16(v, sat),
                    "{x:#010x} sat={sat}"
                );
            }
        };
        // Every sign, exponent and kept fraction, with the dropped 13 bits at the
        // rounding boundaries (normal results, overflow, infinities, NaNs).
        for hi in 0..1u32 << 19 {
            for lo in [0, 1, 0xfff, 0x1000, 0x1001, 0x1fff] {
                check(hi << 13 | lo);
            }
        }
        // Subnormal results (and underflow to zero) round at bit 13 to 24 of the
        // fraction: every exponent there, fractions at a stride that is prime to those
        // places, plus the halfway points of each place.
        for e in 0x60u32..=0x71 {
            for m in (0..1u32 << 23).step_by(61) {
                check(e << 23 | m);
                check(0x8000_0000 | e << 23 | m);
            }
            for place in 13..24 {
                let half = 1u32 << (place - 1);
                for k in [0u32, 1, 2, 3, 0x3ff >> (place - 13)] {
                    let m = (k << place) & 0x7f_ffff;
                    for d in [half - 1, half, half + 1] {
                        check(e << 23 | (m + d));
                    }
                }
            }
        }
        // f32 subnormals.
        for m in (0..1u32 << 23).step_by(4099) {
            check(m);
        }
    }

    #[test]
    fn f16_round_trip_every_value() {
        for h in 0..=u16::MAX {
            let x = f16_to_f64(h);
            let back = f64_to_f16(x, false);
            if x.is_nan() {
                assert_eq!(back, F16_NAN);
            } else {
                assert_eq!(back, h, "{h:#06x}");
            }
            assert_eq!(f16_to_f32(h).to_bits(), (x as f32).to_bits());
        }
    }

    #[test]
    fn bf16_round_trip_every_value() {
        for b in 0..=u16::MAX {
            let x = bf16_to_f32(b) as f64;
            let back = f64_to_bf16(x, false);
            if x.is_nan() {
                assert_eq!(back, BF16_NAN);
            } else {
                assert_eq!(back, b);
            }
        }
    }

    #[test]
    fn f16_ties_and_sticky_bits() {
        let one = 1.0f64;
        let ulp = 2f64.powi(-10);
        // Exactly halfway between 1 and 1+ulp: ties to even (1.0).
        assert_eq!(f64_to_f16(one + ulp / 2.0, false), 0x3c00);
        // Just above halfway (sticky bit far down): rounds up.
        assert_eq!(f64_to_f16(one + ulp / 2.0 + 2f64.powi(-40), false), 0x3c01);
        // Halfway between 1+ulp and 1+2ulp: ties to even (1+2ulp).
        assert_eq!(f64_to_f16(one + 1.5 * ulp, false), 0x3c02);
        // Overflow and saturation.
        assert_eq!(f64_to_f16(65520.0, false), 0x7c00);
        assert_eq!(f64_to_f16(65519.0, false), 0x7bff);
        assert_eq!(f64_to_f16(1e9, true), 0x7bff);
        assert_eq!(f64_to_f16(-1e9, true), 0xfbff);
        // Saturation applies to overflow of finite values; infinities are exact and stay
        // infinite for every target (fp32 does the same in f64_to_f32).
        assert_eq!(f64_to_f16(f64::INFINITY, true), 0x7c00);
        assert_eq!(f64_to_f16(f64::NEG_INFINITY, true), 0xfc00);
        assert_eq!(f64_to_bf16(f64::INFINITY, true), 0x7f80);
        assert_eq!(f64_to_f32(f64::INFINITY, true), f32::INFINITY);
        // Smallest subnormal, and underflow to zero at half of it (tie to even 0).
        assert_eq!(f64_to_f16(2f64.powi(-24), false), 0x0001);
        assert_eq!(f64_to_f16(2f64.powi(-25), false), 0x0000);
        assert_eq!(f64_to_f16(-2f64.powi(-25) * 1.5, false), 0x8001);
        // Subnormal rounding up into the smallest normal.
        assert_eq!(f64_to_f16(2f64.powi(-14) - 2f64.powi(-26), false), 0x0400);
    }

    #[test]
    fn int_conversions() {
        assert_eq!(f64_to_int(2.5, 8), 2);
        assert_eq!(f64_to_int(3.5, 8), 4);
        assert_eq!(f64_to_int(-2.5, 8), -2);
        assert_eq!(f64_to_int(1e10, 8), 127);
        assert_eq!(f64_to_int(-1e10, 32), i32::MIN as i64);
        assert_eq!(f64_to_int(f64::NAN, 16), 0);
        assert_eq!(wrap(200, 8), -56);
        assert_eq!(wrap(-129, 8), 127);
    }

    /// `exp_f32_fast` agrees with libm wherever it says it does, on `x` and the f32
    /// values around it.
    fn check_exp_fast(bits: impl Iterator<Item = u32>) -> (u64, u64) {
        let (mut taken, mut all) = (0, 0);
        for b in bits {
            let x = f32::from_bits(b);
            let (v, ok) = exp_f32_fast(x);
            all += 1;
            if ok {
                taken += 1;
                assert_eq!(v, exp_f32(x), "exp({x:e}) = exp({b:#010x})");
            }
        }
        (taken, all)
    }

    #[test]
    fn fast_exp_is_libms_wherever_it_is_taken() {
        // Every f32 in steps of a prime (about 2.5 million, every exponent), the
        // softmax's usual range densely, and the edges of the fast path's range.
        let step = check_exp_fast((0..=u32::MAX).step_by(1709));
        let dense = check_exp_fast(
            (f32::to_bits(-20.0)..f32::to_bits(-19.0))
                .step_by(3)
                .chain(f32::to_bits(-1.0)..f32::to_bits(-0.999)),
        );
        let edges = [
            -104.0f32, -87.0, -86.99, 0.0, -0.0, 1e-30, 88.0, 87.99, 89.0,
        ];
        let edge = check_exp_fast(edges.iter().map(|x| x.to_bits()));
        // And it is taken almost everywhere in its range (the rest is libm's).
        assert!(dense.0 * 1000 >= dense.1 * 999, "{dense:?}");
        assert!(step.0 > 0 && edge.0 > 0);
        for x in [f32::NAN, f32::INFINITY, -100.0, -87.5, 100.0] {
            assert!(!exp_f32_fast(x).1, "{x} is libm's");
        }
        for x in [f32::NEG_INFINITY, -1e30, -104.001] {
            assert_eq!(exp_f32_fast(x), (0, true), "{x}");
        }
    }

    /// Every f32 value (about 4 billion; a minute in a release build):
    /// `cargo test --release -p lpu-core -- --ignored fast_exp_every_value`.
    #[test]
    #[ignore]
    fn fast_exp_every_value() {
        let (taken, all) = check_exp_fast(0..=u32::MAX);
        println!("taken for {taken} of {all} values");
    }
}
