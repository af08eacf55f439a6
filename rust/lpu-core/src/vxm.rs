//! VXM semantics: point-wise operations as pure functions over vectors (design idea 5).
//!
//! A vector of type `dt` is plane-major: `dt.bytes()` planes of `lanes` bytes, plane b
//! holding byte b of every element, exactly as it travels on a stream group. The engine
//! decides when an operation runs; this module decides what it computes. The rules are
//! written down in `docs/numerics.md`.

use crate::dtype::DType;
use crate::isa::Op;
use crate::numerics::{self, bits_to_f64, bits_to_int, f64_to_bits, f64_to_int, int_range, wrap};
use multiversion::multiversion;

/// Operands of one VXM operation, plane by plane: plane b of an operand holds byte b of
/// every element, as the operand travels on a stream group. All planes have the same
/// length, the number of elements: one vector of `lanes`, or a run of vectors end to end
/// (the operations are point-wise, so a run is just a longer vector).
pub struct VxmArgs<'a> {
    pub op: Op,
    pub dt: DType,
    /// Result type of `cast` (equal to `dt` for other ops).
    pub to: DType,
    pub sat: bool,
    pub a: &'a [&'a [u8]],
    /// Second operand for binary ops (empty for unary ones).
    pub b: &'a [&'a [u8]],
}

/// Evaluate one VXM operation over every element into `out` (`to.bytes()` planes).
pub fn execute(args: &VxmArgs, out: &mut [&mut [u8]]) {
    let (op, dt) = (args.op, args.dt);
    let n = out[0].len();
    debug_assert_eq!(out.len(), args.to.bytes());
    debug_assert!(args.a.len() == dt.bytes() && args.a.iter().all(|p| p.len() == n));
    if fast_path(args, out) {
        return;
    }
    // Element by element: the operands' bits gathered a plane at a time, the results
    // scattered the same way (forward passes over whole planes, not one byte of each
    // plane per element: that took about 14 ns an element).
    let mut r = gather(args.a, n);
    let y = if args.b.is_empty() {
        vec![0; n]
    } else {
        gather(args.b, n)
    };
    for (v, y) in r.iter_mut().zip(y) {
        let x = *v;
        *v = if op == Op::Cast {
            cast_bits(dt, args.to, args.sat, x)
        } else if op == Op::Copy {
            x
        } else if dt.is_float() {
            float_op(op, dt, x, y)
        } else {
            int_op(op, dt, x, y)
        };
    }
    for (b, p) in out.iter_mut().enumerate() {
        for (o, v) in p.iter_mut().zip(&r) {
            *o = (v >> (8 * b)) as u8;
        }
    }
}

/// Each element's bits from its bytes in `planes` (byte b in plane b).
fn gather(planes: &[&[u8]], n: usize) -> Vec<u32> {
    let mut bits = vec![0u32; n];
    for (b, p) in planes.iter().enumerate() {
        for (v, byte) in bits.iter_mut().zip(*p) {
            *v |= (*byte as u32) << (8 * b);
        }
    }
    bits
}

/// Typed loops for the common cases (int8, int16, int32 and fp32 arithmetic); same results as
/// the general element-by-element path, which the tests check.
fn fast_path(args: &VxmArgs, out: &mut [&mut [u8]]) -> bool {
    match (args.op, args.dt) {
        (Op::Copy, _) => {
            for (o, a) in out.iter_mut().zip(args.a) {
                o.copy_from_slice(a);
            }
            true
        }
        (Op::Add | Op::Sub | Op::Mul | Op::Max | Op::Min, DType::I8) => {
            i8_ops(args.op, args.a[0], args.b[0], &mut *out[0]);
            true
        }
        (op, DType::I16) if op != Op::Cast && op != Op::Copy => i16_ops(op, args.a, args.b, out),
        (op, DType::I32) if op != Op::Cast && op != Op::Copy => i32_ops(op, args.a, args.b, out),
        (Op::Cast, DType::I32) if args.to == DType::F32 => {
            i32_to_f32_planes(args.a, out);
            true
        }
        (Op::Cast, DType::F32) if args.to == DType::F16 => {
            f32_to_f16_planes(args.a, args.sat, out);
            true
        }
        (Op::Cast, DType::F16) if args.to == DType::F32 => {
            f16_to_f32_planes(args.a, out);
            true
        }
        (op, DType::F32) if op != Op::Cast && op != Op::Copy => f32_ops(op, args.a, args.b, out),
        (Op::Add | Op::Sub | Op::Mul | Op::Max | Op::Min, DType::F16) => {
            f16_ops(args.op, args.a, args.b, out);
            true
        }
        _ => false,
    }
}

/// fp16 add, sub and mul on whole planes: widened to fp32 (exact), computed in fp32 and
/// rounded to fp16. fp32 has more than twice fp16's precision plus two bits (24 >= 2 x
/// 11 + 2), so rounding to fp32 first and then to fp16 gives the correctly rounded
/// result, as the general path's f64 does; NaNs come out canonical either way. Attention
/// sums its heads in fp16: element by element, 7 adds of a vector took 55 microseconds.
/// Max and min pick an operand's bits as the general path does (17 ns an element there).
#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq+f16c",
    "x86_64+avx2",
    "aarch64+neon"
))]
fn f16_ops(op: Op, a: &[&[u8]], b: &[&[u8]], out: &mut [&mut [u8]]) {
    use crate::numerics::{f16_to_f32_bits, f32_to_f16_bits};
    let f = |h: u16| f32::from_bits(f16_to_f32_bits(h));
    macro_rules! map2 {
        ($g:expr) => {
            map16(a, b, out, |p, q| {
                let v: f32 = $g(f(p), f(q));
                f32_to_f16_bits(v.to_bits(), false)
            })
        };
    }
    use crate::numerics::F16_NAN;
    // One loop each, with `max` a constant in it.
    match op {
        Op::Add => map2!(|p: f32, q: f32| p + q),
        Op::Sub => map2!(|p: f32, q: f32| p - q),
        Op::Max => map16(a, b, out, |p, q| {
            pick(first_of(f(p), f(q), true), p, q, F16_NAN)
        }),
        Op::Min => map16(a, b, out, |p, q| {
            pick(first_of(f(p), f(q), false), p, q, F16_NAN)
        }),
        _ => map2!(|p: f32, q: f32| p * q),
    }
}

/// out = g(a, b) for each 16-bit element, its low and high bytes in two planes (`b`
/// empty: a unary operation, given `a` twice). Inlined into each typed loop, which the
/// compiler then turns into vector instructions for its target.
#[inline(always)]
fn map16(a: &[&[u8]], b: &[&[u8]], out: &mut [&mut [u8]], g: impl Fn(u16, u16) -> u16) {
    let b = if b.is_empty() { a } else { b };
    let [o0, o1] = out else {
        unreachable!("two planes")
    };
    let n = o0.len();
    let (x0, x1, y0, y1) = (&a[0][..n], &a[1][..n], &b[0][..n], &b[1][..n]);
    let o1 = &mut o1[..n];
    for e in 0..n {
        let v = g(
            u16::from_le_bytes([x0[e], x1[e]]),
            u16::from_le_bytes([y0[e], y1[e]]),
        );
        [o0[e], o1[e]] = v.to_le_bytes();
    }
}

/// int8 add, sub, mul (wrapping), max and min on whole planes.
#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq",
    "x86_64+avx2",
    "aarch64+neon"
))]
fn i8_ops(op: Op, a: &[u8], b: &[u8], out: &mut [u8]) {
    macro_rules! elementwise {
        ($f:expr) => {
            for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
                *o = $f(*x as i8, *y as i8) as u8;
            }
        };
    }
    match op {
        Op::Add => elementwise!(i8::wrapping_add),
        Op::Sub => elementwise!(i8::wrapping_sub),
        Op::Mul => elementwise!(i8::wrapping_mul),
        Op::Max => elementwise!(std::cmp::max::<i8>),
        _ => elementwise!(std::cmp::min::<i8>),
    }
}

/// The integer operations of the typed loops, through `$map` (`map16` or `map32`) on
/// elements of `$t` held as `$u`, with the general path's results: wrapping arithmetic,
/// compares giving 1 or 0. Returns false from the caller for an operation it does not
/// cover (shifts and the rest take the general path).
macro_rules! int_ops {
    ($map:ident, $t:ty, $u:ty, $op:expr, $a:expr, $b:expr, $out:expr) => {
        match $op {
            Op::Add => $map($a, $b, $out, |p, q| (p as $t).wrapping_add(q as $t) as $u),
            Op::Sub => $map($a, $b, $out, |p, q| (p as $t).wrapping_sub(q as $t) as $u),
            Op::Mul => $map($a, $b, $out, |p, q| (p as $t).wrapping_mul(q as $t) as $u),
            Op::Max => $map($a, $b, $out, |p, q| (p as $t).max(q as $t) as $u),
            Op::Min => $map($a, $b, $out, |p, q| (p as $t).min(q as $t) as $u),
            Op::And => $map($a, $b, $out, |p, q| p & q),
            Op::Or => $map($a, $b, $out, |p, q| p | q),
            Op::Xor => $map($a, $b, $out, |p, q| p ^ q),
            Op::Eq => $map($a, $b, $out, |p, q| (p == q) as $u),
            Op::Ne => $map($a, $b, $out, |p, q| (p != q) as $u),
            Op::Lt => $map($a, $b, $out, |p, q| ((p as $t) < (q as $t)) as $u),
            Op::Le => $map($a, $b, $out, |p, q| ((p as $t) <= (q as $t)) as $u),
            Op::Gt => $map($a, $b, $out, |p, q| ((p as $t) > (q as $t)) as $u),
            Op::Ge => $map($a, $b, $out, |p, q| ((p as $t) >= (q as $t)) as $u),
            Op::Mask => $map($a, $b, $out, |p, q| if q != 0 { p } else { 0 }),
            Op::Maskn => $map($a, $b, $out, |p, q| if q == 0 { p } else { 0 }),
            Op::Neg => $map($a, $b, $out, |p, _| (p as $t).wrapping_neg() as $u),
            Op::Abs => $map($a, $b, $out, |p, _| (p as $t).wrapping_abs() as $u),
            Op::Not => $map($a, $b, $out, |p, _| !p),
            Op::Relu => $map($a, $b, $out, |p, _| (p as $t).max(0) as $u),
            _ => return false,
        }
    };
}

/// int16 operations on whole planes (a decode step's position arithmetic, compares and
/// masks); see `int_ops`.
#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq",
    "x86_64+avx2",
    "aarch64+neon"
))]
fn i16_ops(op: Op, a: &[&[u8]], b: &[&[u8]], out: &mut [&mut [u8]]) -> bool {
    int_ops!(map16, i16, u16, op, a, b, out);
    true
}

/// int32 operations on whole planes (on the MXM's int8 products, say); see `int_ops`.
/// Element by element they took 5-8 ns an element.
#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq",
    "x86_64+avx2",
    "aarch64+neon"
))]
fn i32_ops(op: Op, a: &[&[u8]], b: &[&[u8]], out: &mut [&mut [u8]]) -> bool {
    int_ops!(map32, i32, u32, op, a, b, out);
    true
}

/// int32 -> fp32 casts on whole planes (the dequantisation of int8 products), rounded
/// to nearest even as the general path's (an int32 is exact in f64, which rounds once
/// to fp32).
#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq",
    "x86_64+avx2",
    "aarch64+neon"
))]
fn i32_to_f32_planes(a: &[&[u8]], out: &mut [&mut [u8]]) {
    map32(a, &[], out, |p, _| (p as i32 as f32).to_bits());
}

/// fp32 operations on whole planes, with exactly the general path's rules (see
/// `float_op`): fp32 arithmetic and libm are correctly rounded the same way, results
/// that are NaN become the canonical NaN, sign and mask operations pass bits through.
/// False: not an fp32 operation this covers.
#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq",
    "x86_64+avx2",
    "aarch64+neon"
))]
fn f32_ops(op: Op, a: &[&[u8]], b: &[&[u8]], out: &mut [&mut [u8]]) -> bool {
    use crate::numerics::F32_NAN as NAN;
    const ONE: u32 = 0x3f80_0000;
    const SIGN: u32 = 0x8000_0000;
    let f = f32::from_bits;
    let canon = |v: f32| {
        if v.is_nan() {
            crate::numerics::F32_NAN
        } else {
            v.to_bits()
        }
    };
    let cmp = |c: bool| if c { ONE } else { 0 };
    // A unary operation ignores its second operand.
    macro_rules! map2 {
        ($g:expr) => {
            map32(a, b, out, $g)
        };
    }
    macro_rules! map1 {
        ($g:expr) => {
            map32(a, &[], out, |p, _| $g(p))
        };
    }
    match op {
        Op::Add => map2!(|p, q| canon(f(p) + f(q))),
        Op::Sub => map2!(|p, q| canon(f(p) - f(q))),
        Op::Mul => map2!(|p, q| canon(f(p) * f(q))),
        // One loop each, with `max` a constant in it.
        Op::Max => map2!(|p, q| pick(first_of(f(p), f(q), true), p, q, NAN)),
        Op::Min => map2!(|p, q| pick(first_of(f(p), f(q), false), p, q, NAN)),
        Op::Eq => map2!(|p, q| cmp(f(p) == f(q))),
        Op::Ne => map2!(|p, q| cmp(f(p) != f(q))),
        Op::Lt => map2!(|p, q| cmp(f(p) < f(q))),
        Op::Le => map2!(|p, q| cmp(f(p) <= f(q))),
        Op::Gt => map2!(|p, q| cmp(f(p) > f(q))),
        Op::Ge => map2!(|p, q| cmp(f(p) >= f(q))),
        Op::Mask => map2!(|p, q| if f(q) != 0.0 { p } else { 0 }),
        Op::Maskn => map2!(|p, q| if f(q) == 0.0 { p } else { 0 }),
        Op::Neg => map1!(|p| p ^ SIGN),
        Op::Abs => map1!(|p| p & !SIGN),
        Op::Relu => map1!(|p| {
            let u = f(p);
            if u.is_nan() {
                crate::numerics::F32_NAN
            } else if u > 0.0 {
                p
            } else {
                0
            }
        }),
        // Vectorised without libm, then libm for the few inputs that takes (see
        // `exp_f32_fast`): libm's own exp took 12 ns an element, a decode step's exps
        // 5 % of its time.
        Op::Exp => {
            let mut slow = false;
            map1!(|p| {
                let (v, ok) = numerics::exp_f32_fast(f(p));
                slow |= !ok;
                v
            });
            if slow {
                let n = out[0].len();
                for e in 0..n {
                    let p = u32::from_le_bytes([a[0][e], a[1][e], a[2][e], a[3][e]]);
                    if !numerics::exp_f32_fast(f(p)).1 {
                        let v = numerics::exp_f32(f(p)).to_le_bytes();
                        for (o, v) in out.iter_mut().zip(v) {
                            o[e] = v;
                        }
                    }
                }
            }
        }
        Op::Exp2 => map1!(|p| canon(libm::exp2(f(p) as f64) as f32)),
        Op::Tanh => map1!(|p| canon(libm::tanh(f(p) as f64) as f32)),
        // IEEE square roots are correctly rounded, the CPU's as libm's (a test checks),
        // and the CPU's is one instruction: libm's took a decode step's rsqrts 0.1 ms.
        Op::Rsqrt => map1!(|p| canon(1.0f32 / f(p).sqrt())),
        _ => return false,
    }
    true
}

/// out = g(a, b) for each fp32 element, its four bytes in four planes (`b` empty: a
/// unary operation, `g`'s second argument unused). The planes are turned into words a
/// chunk at a time (`planes32`), `g` runs over whole arrays of words, which the
/// compiler vectorises for its target, and the results go back into planes. Inlined into
/// each typed loop.
#[inline(always)]
fn map32(a: &[&[u8]], b: &[&[u8]], out: &mut [&mut [u8]], mut g: impl FnMut(u32, u32) -> u32) {
    const CHUNK: usize = 512;
    thread_local! {
        // The words of a chunk of operands and results, kept (zeroing 6 KB on every
        // call was a tenth of a one-vector operation).
        static WORDS: std::cell::Cell<Vec<u32>> = const { std::cell::Cell::new(Vec::new()) };
    }
    let n = out[0].len();
    let wide = planes32::wide();
    // The buffer is taken out of the thread's slot and put back, not used inside a
    // closure passed to the slot: that closure would be compiled for the baseline CPU,
    // not with the caller's target features (the loop below ran four times slower).
    let mut words = WORDS.take();
    if words.len() < 3 * CHUNK {
        words.resize(3 * CHUNK, 0);
    }
    let (x, rest) = words.split_at_mut(CHUNK);
    let (y, z) = rest.split_at_mut(CHUNK);
    let mut e0 = 0;
    while e0 < n {
        let m = CHUNK.min(n - e0);
        planes32::gather(a, e0, &mut x[..m], wide);
        let y = if b.is_empty() {
            &x[..m]
        } else {
            planes32::gather(b, e0, &mut y[..m], wide);
            &y[..m]
        };
        for ((o, p), q) in z[..m].iter_mut().zip(&x[..m]).zip(y) {
            *o = g(*p, *q);
        }
        planes32::scatter(&z[..m], out, e0, wide);
        e0 += m;
    }
    WORDS.set(words);
}

/// 32-bit words to and from their four byte planes. With AVX-512 BW, 64 words at a time
/// by byte and word interleaves (and their inverse), which leave the words of each 64 in
/// an order of their own (see `avx512::gather`). Operands and results take the same order,
/// so a result still lands where its operands came from. Gathering a word's bytes a
/// plane at a time (four widening loads, three shifts and ORs per 16 words, and the same
/// back) took most of an fp32 operation's time.
mod planes32 {
    /// Whether the 64-word interleaves can run here.
    pub(super) fn wide() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bw")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// Words of elements e0.. (out.len() of them) from `planes`; with `wide` (which
    /// [`scatter`] must be given too) in interleaved order by 64.
    pub(super) fn gather(planes: &[&[u8]], e0: usize, out: &mut [u32], wide: bool) {
        let m = out.len();
        let p = [
            &planes[0][e0..e0 + m],
            &planes[1][e0..e0 + m],
            &planes[2][e0..e0 + m],
            &planes[3][e0..e0 + m],
        ];
        let whole = if wide { m / 64 * 64 } else { 0 };
        #[cfg(target_arch = "x86_64")]
        if whole > 0 {
            // SAFETY: `wide` says the CPU has AVX-512 F and BW (see `wide`).
            unsafe { avx512::gather(p, &mut out[..whole]) };
        }
        for e in whole..m {
            out[e] = u32::from_le_bytes([p[0][e], p[1][e], p[2][e], p[3][e]]);
        }
    }

    /// Elements e0.. of `planes` from `words`, taken in the order [`gather`] gave.
    pub(super) fn scatter(words: &[u32], planes: &mut [&mut [u8]], e0: usize, wide: bool) {
        let m = words.len();
        let [p0, p1, p2, p3] = planes else {
            unreachable!("four planes")
        };
        let mut p = [
            &mut p0[e0..e0 + m],
            &mut p1[e0..e0 + m],
            &mut p2[e0..e0 + m],
            &mut p3[e0..e0 + m],
        ];
        let whole = if wide { m / 64 * 64 } else { 0 };
        #[cfg(target_arch = "x86_64")]
        if whole > 0 {
            // SAFETY: as in `gather`.
            unsafe { avx512::scatter(&words[..whole], &mut p) };
        }
        for e in whole..m {
            let v = words[e].to_le_bytes();
            for (pl, v) in p.iter_mut().zip(v) {
                pl[e] = v;
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    mod avx512 {
        use std::arch::x86_64::*;

        /// Words from planes, 64 at a time (`out.len()` a multiple of 64, each plane at
        /// least as long). Within each 128-bit lane l of a 64's four registers (its
        /// elements 16l..16l + 15), word j of register k is element 16l + 4k + j: the
        /// byte interleave pairs planes 0 and 1, and 2 and 3, into 16-bit halves
        /// (elements 16l..16l + 7 in the low unpack, the rest in the high one), the word
        /// interleave pairs the halves.
        ///
        /// # Safety
        /// The CPU has AVX-512 F and BW.
        #[target_feature(enable = "avx512f,avx512bw")]
        pub(super) unsafe fn gather(p: [&[u8]; 4], out: &mut [u32]) {
            let m = out.len();
            assert!(m.is_multiple_of(64) && p.iter().all(|pl| pl.len() >= m));
            let o = out.as_mut_ptr();
            for c in (0..m).step_by(64) {
                // SAFETY: c + 64 <= m, within every plane and `out` (asserted); the
                // loads and stores have no alignment need. (No closures here: they
                // would not take the target features.)
                unsafe {
                    let a = _mm512_loadu_si512(p[0].as_ptr().add(c).cast());
                    let b = _mm512_loadu_si512(p[1].as_ptr().add(c).cast());
                    let cc = _mm512_loadu_si512(p[2].as_ptr().add(c).cast());
                    let d = _mm512_loadu_si512(p[3].as_ptr().add(c).cast());
                    let (ab_lo, ab_hi) = (_mm512_unpacklo_epi8(a, b), _mm512_unpackhi_epi8(a, b));
                    let (cd_lo, cd_hi) = (_mm512_unpacklo_epi8(cc, d), _mm512_unpackhi_epi8(cc, d));
                    let o = o.add(c);
                    _mm512_storeu_si512(o.cast(), _mm512_unpacklo_epi16(ab_lo, cd_lo));
                    _mm512_storeu_si512(o.add(16).cast(), _mm512_unpackhi_epi16(ab_lo, cd_lo));
                    _mm512_storeu_si512(o.add(32).cast(), _mm512_unpacklo_epi16(ab_hi, cd_hi));
                    _mm512_storeu_si512(o.add(48).cast(), _mm512_unpackhi_epi16(ab_hi, cd_hi));
                }
            }
        }

        /// The inverse of [`gather`]: each lane's 16 bytes regrouped by plane (four bytes
        /// of each of its 4 words), then a 4 x 4 transpose of those groups across the
        /// four registers by dword and qword interleaves.
        ///
        /// # Safety
        /// The CPU has AVX-512 F and BW.
        #[target_feature(enable = "avx512f,avx512bw")]
        pub(super) unsafe fn scatter(words: &[u32], p: &mut [&mut [u8]; 4]) {
            let m = words.len();
            assert!(m.is_multiple_of(64) && p.iter().all(|pl| pl.len() >= m));
            let by_plane = _mm512_broadcast_i32x4(_mm_setr_epi8(
                0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15,
            ));
            let w = words.as_ptr();
            for c in (0..m).step_by(64) {
                // SAFETY: c + 64 <= m, within `words` and every plane (asserted); no
                // alignment need.
                unsafe {
                    let s0 = _mm512_shuffle_epi8(_mm512_loadu_si512(w.add(c).cast()), by_plane);
                    let s1 =
                        _mm512_shuffle_epi8(_mm512_loadu_si512(w.add(c + 16).cast()), by_plane);
                    let s2 =
                        _mm512_shuffle_epi8(_mm512_loadu_si512(w.add(c + 32).cast()), by_plane);
                    let s3 =
                        _mm512_shuffle_epi8(_mm512_loadu_si512(w.add(c + 48).cast()), by_plane);
                    let (t01_lo, t01_hi) =
                        (_mm512_unpacklo_epi32(s0, s1), _mm512_unpackhi_epi32(s0, s1));
                    let (t23_lo, t23_hi) =
                        (_mm512_unpacklo_epi32(s2, s3), _mm512_unpackhi_epi32(s2, s3));
                    let planes = [
                        _mm512_unpacklo_epi64(t01_lo, t23_lo),
                        _mm512_unpackhi_epi64(t01_lo, t23_lo),
                        _mm512_unpacklo_epi64(t01_hi, t23_hi),
                        _mm512_unpackhi_epi64(t01_hi, t23_hi),
                    ];
                    for (pl, v) in p.iter_mut().zip(planes) {
                        _mm512_storeu_si512(pl.as_mut_ptr().add(c).cast(), v);
                    }
                }
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn words_go_back_to_their_planes_and_operations_see_whole_words() {
            for m in [1, 63, 64, 65, 320, 511] {
                let planes: Vec<Vec<u8>> = (0..4)
                    .map(|b| (0..m).map(|e| (e * 7 + b * 61 + e / 5) as u8).collect())
                    .collect();
                let refs: Vec<&[u8]> = planes.iter().map(|p| p.as_slice()).collect();
                for wide in [false, wide()] {
                    let mut words = vec![0u32; m];
                    gather(&refs, 0, &mut words, wide);
                    // Each word is some element's four bytes, each element once.
                    let mut want: Vec<u32> = (0..m)
                        .map(|e| u32::from_le_bytes([0, 1, 2, 3].map(|b| planes[b][e])))
                        .collect();
                    let mut got = words.clone();
                    got.sort_unstable();
                    want.sort_unstable();
                    assert_eq!(got, want, "m = {m}");
                    // Back again, and an operation on the words lands per element.
                    let mut back = vec![vec![0u8; m]; 4];
                    let mut outs: Vec<&mut [u8]> =
                        back.iter_mut().map(|p| p.as_mut_slice()).collect();
                    let flip: Vec<u32> = words.iter().map(|w| w ^ 0x0403_0201).collect();
                    scatter(&flip, &mut outs, 0, wide);
                    for e in 0..m {
                        for b in 0..4 {
                            assert_eq!(back[b][e], planes[b][e] ^ (b as u8 + 1), "m {m} e {e}");
                        }
                    }
                }
            }
        }
    }
}

/// fp32 → fp16 casts on whole planes (the MXM's fp16 activations), rounded exactly as
/// the general path's `cast_bits`.
#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq",
    "x86_64+avx2",
    "aarch64+neon"
))]
fn f32_to_f16_planes(a: &[&[u8]], sat: bool, out: &mut [&mut [u8]]) {
    let (lo, hi) = out.split_at_mut(1);
    let (lo, hi) = (&mut *lo[0], &mut *hi[0]);
    let n = lo.len();
    let x = (&a[0][..n], &a[1][..n], &a[2][..n], &a[3][..n]);
    let hi = &mut hi[..n];
    for e in 0..n {
        let v = u32::from_le_bytes([x.0[e], x.1[e], x.2[e], x.3[e]]);
        [lo[e], hi[e]] = crate::numerics::f32_to_f16_bits(v, sat).to_le_bytes();
    }
}

/// fp16 to fp32: exact, a NaN as fp32's canonical NaN (`f16_to_f32_bits`, as the
/// general path gives). How an int8 matmul's fp16 input is widened before it is
/// quantised (`quantize`).
fn f16_to_f32_planes(a: &[&[u8]], out: &mut [&mut [u8]]) {
    use crate::numerics::f16_to_f32_bits;
    let n = out[0].len();
    let (lo, hi) = (&a[0][..n], &a[1][..n]);
    let [o0, o1, o2, o3] = out else {
        unreachable!("an fp32 result has four planes")
    };
    let (o0, o1, o2, o3) = (&mut o0[..n], &mut o1[..n], &mut o2[..n], &mut o3[..n]);
    for e in 0..n {
        let v = f16_to_f32_bits(u16::from_le_bytes([lo[e], hi[e]]));
        [o0[e], o1[e], o2[e], o3[e]] = v.to_le_bytes();
    }
}

fn bool_to(dt: DType, c: bool) -> u32 {
    let v = if c { 1.0 } else { 0.0 };
    if dt.is_float() {
        f64_to_bits(dt, v, false)
    } else {
        c as u32
    }
}

fn int_op(op: Op, dt: DType, x: u32, y: u32) -> u32 {
    let bits = 8 * dt.bytes() as u32;
    let (a, b) = (bits_to_int(dt, x), bits_to_int(dt, y));
    let r = match op {
        Op::Add => a + b,
        Op::Sub => a - b,
        Op::Mul => a * b,
        Op::Max => a.max(b),
        Op::Min => a.min(b),
        Op::Eq => return bool_to(dt, a == b),
        Op::Ne => return bool_to(dt, a != b),
        Op::Lt => return bool_to(dt, a < b),
        Op::Le => return bool_to(dt, a <= b),
        Op::Gt => return bool_to(dt, a > b),
        Op::Ge => return bool_to(dt, a >= b),
        Op::And => a & b,
        Op::Or => a | b,
        Op::Xor => a ^ b,
        Op::Shl if (0..bits as i64).contains(&b) => a << b,
        Op::Shl => 0,
        Op::Shr if (0..bits as i64).contains(&b) => a >> b,
        Op::Shr => {
            if a < 0 {
                -1
            } else {
                0
            }
        }
        Op::Mask => {
            if b != 0 {
                a
            } else {
                0
            }
        }
        Op::Maskn => {
            if b == 0 {
                a
            } else {
                0
            }
        }
        Op::Neg => -a,
        Op::Abs => a.abs(),
        Op::Not => !a,
        Op::Relu => a.max(0),
        _ => unreachable!("{op:?} is not an integer VXM op"),
    };
    wrap(r, bits) as u32 & mask(bits)
}

fn mask(bits: u32) -> u32 {
    if bits == 32 {
        u32::MAX
    } else {
        (1 << bits) - 1
    }
}

/// f32 and f64, for [`first_of`].
trait Float: PartialOrd + Copy {
    fn is_nan(self) -> bool;
    fn is_sign_negative(self) -> bool;
}

macro_rules! float {
    ($t:ty) => {
        impl Float for $t {
            #[inline(always)]
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
            #[inline(always)]
            fn is_sign_negative(self) -> bool {
                <$t>::is_sign_negative(self)
            }
        }
    };
}
float!(f32);
float!(f64);

/// The IEEE maximum (`max`) or minimum of u and v, as whether it is u: None if either
/// is NaN (the result is NaN); +0 is greater than -0.
#[inline(always)]
fn first_of<F: Float>(u: F, v: F, max: bool) -> Option<bool> {
    if u.is_nan() || v.is_nan() {
        return None;
    }
    // Equal: only +0 and -0 can differ, and the greater has the sign clear.
    Some(if u == v {
        u.is_sign_negative() != max
    } else {
        (u > v) == max
    })
}

/// The bits [`first_of`] picks: p, q or the type's canonical NaN.
#[inline(always)]
fn pick<T>(first: Option<bool>, p: T, q: T, nan: T) -> T {
    match first {
        None => nan,
        Some(true) => p,
        Some(false) => q,
    }
}

fn float_op(op: Op, dt: DType, x: u32, y: u32) -> u32 {
    let (a, b) = (bits_to_f64(dt, x), bits_to_f64(dt, y));
    let sign = 1u32 << (8 * dt.bytes() - 1);
    let r = match op {
        Op::Add => a + b,
        Op::Sub => a - b,
        Op::Mul => a * b,
        Op::Max | Op::Min => match first_of(a, b, op == Op::Max) {
            None => f64::NAN,
            Some(true) => a,
            Some(false) => b,
        },
        Op::Eq => return bool_to(dt, a == b),
        Op::Ne => return bool_to(dt, a != b),
        Op::Lt => return bool_to(dt, a < b),
        Op::Le => return bool_to(dt, a <= b),
        Op::Gt => return bool_to(dt, a > b),
        Op::Ge => return bool_to(dt, a >= b),
        Op::Mask => return if b != 0.0 { x } else { 0 },
        Op::Maskn => return if b == 0.0 { x } else { 0 },
        // Sign-bit operations, exact on every value including NaN.
        Op::Neg => return x ^ sign,
        Op::Abs => return x & !sign,
        Op::Relu if a.is_nan() => f64::NAN,
        Op::Relu => {
            if a > 0.0 {
                a
            } else {
                0.0
            }
        }
        // Double precision, then one rounding: within 1 fp32 ulp of the true value
        // (libm's single-precision tanhf can be 2 ulp off).
        Op::Exp => libm::exp(a),
        Op::Exp2 => libm::exp2(a),
        Op::Tanh => libm::tanh(a),
        Op::Rsqrt => (1.0f32 / (a as f32).sqrt()) as f64,
        _ => unreachable!("{op:?} is not a float VXM op"),
    };
    f64_to_bits(dt, r, false)
}

/// Convert raw bits of type `from` to raw bits of type `to` (see `cast` in the ISA).
pub fn cast_bits(from: DType, to: DType, sat: bool, x: u32) -> u32 {
    let to_bits = 8 * to.bytes() as u32;
    match (from.is_float(), to.is_float()) {
        (false, false) => {
            let v = bits_to_int(from, x);
            let (lo, hi) = int_range(to_bits);
            let r = if sat {
                v.clamp(lo, hi)
            } else {
                wrap(v, to_bits)
            };
            r as u32 & mask(to_bits)
        }
        (false, true) => f64_to_bits(to, bits_to_int(from, x) as f64, sat),
        (true, false) => f64_to_int(bits_to_f64(from, x), to_bits) as u32 & mask(to_bits),
        (true, true) => f64_to_bits(to, bits_to_f64(from, x), sat),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The planes of a vector stored plane after plane in one buffer.
    fn planes(buf: &[u8], lanes: usize) -> Vec<&[u8]> {
        buf.chunks(lanes).collect()
    }

    /// The planes of a result buffer stored plane after plane.
    fn planes_mut(buf: &mut [u8], lanes: usize) -> Vec<&mut [u8]> {
        buf.chunks_mut(lanes).collect()
    }
    use crate::numerics::{f64_to_f16, lane_bits, set_lane_bits, F32_NAN};

    fn run1(op: Op, dt: DType, a: &[u32], b: &[u32]) -> Vec<u32> {
        let n = a.len();
        let nb = dt.bytes();
        let mut pa = vec![0u8; nb * n];
        let mut pb = vec![0u8; if b.is_empty() { 0 } else { nb * n }];
        for l in 0..n {
            set_lane_bits(&mut pa, n, nb, l, a[l]);
            if !b.is_empty() {
                set_lane_bits(&mut pb, n, nb, l, b[l]);
            }
        }
        let mut out = vec![0u8; nb * n];
        execute(
            &VxmArgs {
                op,
                dt,
                to: dt,
                sat: false,
                a: &planes(&pa, n),
                b: &planes(&pb, n),
            },
            &mut planes_mut(&mut out, n),
        );
        (0..n).map(|l| lane_bits(&out, n, nb, l)).collect()
    }

    fn f32s(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn int8_wraps_and_fast_path_agrees() {
        let a: Vec<u32> = (0..256).map(|i| i as u32).collect();
        let b: Vec<u32> = (0..256).map(|i| (i * 7 + 3) as u32 & 0xff).collect();
        for op in [Op::Add, Op::Sub, Op::Mul, Op::Max, Op::Min] {
            let fast = run1(op, DType::I8, &a, &b);
            for l in 0..256 {
                let slow = int_op(op, DType::I8, a[l], b[l]);
                assert_eq!(fast[l], slow, "{op:?} lane {l}");
            }
        }
        assert_eq!(run1(Op::Add, DType::I8, &[127], &[1]), vec![0x80]);
    }

    #[test]
    fn square_roots_are_libms() {
        // Every exponent with a spread of fractions, the subnormals, zeros, infinities,
        // NaNs and negatives: the CPU's square root gives libm's bits.
        let mut seed = 0x9e37_79b9u32;
        for e in 0..256u32 {
            for _ in 0..2000 {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                for sign in [0, 0x8000_0000] {
                    let x = f32::from_bits(sign | e << 23 | seed >> 9);
                    assert_eq!(x.sqrt().to_bits(), libm::sqrtf(x).to_bits(), "{x:e}");
                }
            }
        }
    }

    #[test]
    fn f16_fast_path_agrees() {
        // Every class of fp16 value (zeros, subnormals, normals near the rounding and
        // overflow boundaries, infinities, NaNs) against a spread of others, each pair
        // through the typed loop and the general path (f64, one rounding).
        let vals: Vec<u32> = [
            0u32, 0x8000, 1, 0x8001, 0x3ff, 0x400, 0x3c00, 0xbc00, 0x3c01, 0x7bff, 0xfbff, 0x7c00,
            0xfc00, 0x7e00, 0x7c01, 0xfe01, 0x6800, 0x1400, 0x0200, 0x5bff,
        ]
        .into_iter()
        .chain((0..300).map(|i| (i * 40503 + 17) & 0xffff))
        .collect();
        let (a, b): (Vec<u32>, Vec<u32>) = vals
            .iter()
            .flat_map(|x| vals.iter().map(move |y| (*x, *y)))
            .unzip();
        for op in [Op::Add, Op::Sub, Op::Mul, Op::Max, Op::Min] {
            let fast = run1(op, DType::F16, &a, &b);
            for l in 0..a.len() {
                let slow = float_op(op, DType::F16, a[l], b[l]);
                assert_eq!(fast[l], slow, "{op:?} {:#06x} {:#06x}", a[l], b[l]);
            }
        }
    }

    /// Every pair of `vals` through every operation the typed integer loop takes and
    /// those it leaves to the general path, against the general path.
    fn int_fast_path_agrees(dt: DType, vals: &[u32]) {
        let (a, b): (Vec<u32>, Vec<u32>) = vals
            .iter()
            .flat_map(|x| vals.iter().map(move |y| (*x, *y)))
            .unzip();
        for op in [
            Op::Add,
            Op::Sub,
            Op::Mul,
            Op::Max,
            Op::Min,
            Op::And,
            Op::Or,
            Op::Xor,
            Op::Eq,
            Op::Ne,
            Op::Lt,
            Op::Le,
            Op::Gt,
            Op::Ge,
            Op::Mask,
            Op::Maskn,
            Op::Neg,
            Op::Abs,
            Op::Not,
            Op::Relu,
            Op::Shl,
            Op::Shr,
        ] {
            let unary = matches!(op, Op::Neg | Op::Abs | Op::Not | Op::Relu);
            let fast = run1(op, dt, &a, if unary { &[] } else { &b });
            for l in 0..a.len() {
                let slow = int_op(op, dt, a[l], if unary { 0 } else { b[l] });
                assert_eq!(fast[l], slow, "{dt:?} {op:?} {:#x} {:#x}", a[l], b[l]);
            }
        }
    }

    #[test]
    fn int16_fast_path_agrees() {
        // Extremes, zero, ones and a spread of values.
        let vals: Vec<u32> = [
            0u32, 1, 2, 0x7fff, 0x8000, 0x8001, 0xffff, 0xfffe, 0x1234, 0xedcb,
        ]
        .into_iter()
        .chain((0..40).map(|i| (i * 1657 + 99) & 0xffff))
        .collect();
        int_fast_path_agrees(DType::I16, &vals);
    }

    #[test]
    fn int32_fast_path_agrees() {
        // As for int16; the products of the spread overflow 32 bits.
        let vals: Vec<u32> = [
            0u32,
            1,
            2,
            0x7fff_ffff,
            0x8000_0000,
            0x8000_0001,
            0xffff_ffff,
            0xffff_fffe,
            0x0001_0000,
            0x1234_5678,
            0xedcb_a988,
        ]
        .into_iter()
        .chain((0..40u32).map(|i| i.wrapping_mul(0x9e37_79b9).wrapping_add(99)))
        .collect();
        int_fast_path_agrees(DType::I32, &vals);
    }

    #[test]
    fn int32_to_fp32_cast_fast_path_agrees() {
        // Exact values, values that round (ties to even among them) and the extremes.
        let mut a: Vec<u32> = [0i32, 1, -1, 16_777_216, 16_777_217, 16_777_218, 16_777_219]
            .into_iter()
            .chain([
                33_554_434,
                33_554_438,
                i32::MAX,
                i32::MIN,
                i32::MIN + 1,
                -16_777_217,
            ])
            .map(|v| v as u32)
            .collect();
        a.extend((0..5000u32).map(|i| i.wrapping_mul(0x9e37_79b9)));
        cast_fast_path_agrees(DType::I32, DType::F32, &a);
    }

    /// Casts of `a` (`from` bits) through the typed loop, with and without saturation,
    /// against the general path.
    fn cast_fast_path_agrees(from: DType, to: DType, a: &[u32]) {
        let (n, nb, ob) = (a.len(), from.bytes(), to.bytes());
        let mut pa = vec![0u8; nb * n];
        for (l, x) in a.iter().enumerate() {
            set_lane_bits(&mut pa, n, nb, l, *x);
        }
        for sat in [false, true] {
            let mut out = vec![0u8; ob * n];
            execute(
                &VxmArgs {
                    op: Op::Cast,
                    dt: from,
                    to,
                    sat,
                    a: &planes(&pa, n),
                    b: &[],
                },
                &mut planes_mut(&mut out, n),
            );
            for (l, x) in a.iter().enumerate() {
                let want = cast_bits(from, to, sat, *x);
                assert_eq!(lane_bits(&out, n, ob, l), want, "{x:#010x} sat={sat}");
            }
        }
    }

    #[test]
    fn fp16_to_fp32_cast_fast_path_agrees() {
        // Every fp16 bit pattern: zeros, subnormals, normals, infinities, NaNs with
        // payloads and signs.
        let a: Vec<u32> = (0..=u16::MAX as u32).collect();
        cast_fast_path_agrees(DType::F16, DType::F32, &a);
    }

    #[test]
    fn fp16_cast_fast_path_agrees() {
        // Every fp16 value (exact), halfway points between neighbours (ties), values
        // just off them, overflow, f32 subnormals and NaNs with payloads and signs.
        let mut a: Vec<u32> = (0..=u16::MAX)
            .flat_map(|h| {
                let v = crate::numerics::f16_to_f32(h).to_bits();
                [v, v + 0x1000, v + 0xfff, v + 0x1001, v.wrapping_sub(0x1000)]
            })
            .collect();
        a.extend([
            0x7f80_0001,
            0xffc0_1234,
            0x0000_0001,
            0x8000_0003,
            0x477f_efff,
        ]);
        cast_fast_path_agrees(DType::F32, DType::F16, &a);
    }

    #[test]
    fn shifts_out_of_range() {
        let m1 = (-8i32) as u32;
        assert_eq!(
            run1(Op::Shr, DType::I32, &[m1, m1, 64], &[1, 40, 3]),
            vec![(-4i32) as u32, u32::MAX, 8]
        );
        assert_eq!(
            run1(Op::Shl, DType::I16, &[3, 3], &[15, 16]),
            vec![0x8000, 0]
        );
    }

    #[test]
    fn float_specials() {
        let nan = f32::NAN;
        let r = run1(
            Op::Max,
            DType::F32,
            &f32s(&[1.0, nan, -0.0, 0.0]),
            &f32s(&[2.0, 1.0, 0.0, -0.0]),
        );
        assert_eq!(r, vec![2f32.to_bits(), F32_NAN, 0, 0]);
        let r = run1(Op::Relu, DType::F32, &f32s(&[-1.0, -0.0, 3.0, nan]), &[]);
        assert_eq!(r, vec![0, 0, 3f32.to_bits(), F32_NAN]);
        let r = run1(Op::Rsqrt, DType::F32, &f32s(&[4.0, 0.0, -0.0, -1.0]), &[]);
        assert_eq!(
            r,
            vec![
                0.5f32.to_bits(),
                f32::INFINITY.to_bits(),
                f32::NEG_INFINITY.to_bits(),
                F32_NAN
            ]
        );
        let r = run1(Op::Neg, DType::F16, &[0x7e01], &[]);
        assert_eq!(
            r,
            vec![0xfe01],
            "neg flips the sign of a NaN without touching the payload"
        );
        let r = run1(Op::Exp, DType::F32, &f32s(&[f32::NEG_INFINITY, 0.0]), &[]);
        assert_eq!(r, f32s(&[0.0, 1.0]));
    }

    #[test]
    fn f16_add_is_correctly_rounded() {
        // 2048 + 1 in fp16: exact result 2049 is a tie between 2048 and 2050 -> 2048.
        let h = |x: f64| f64_to_f16(x, false) as u32;
        assert_eq!(
            run1(Op::Add, DType::F16, &[h(2048.0)], &[h(1.0)]),
            vec![h(2048.0)]
        );
        assert_eq!(
            run1(Op::Add, DType::F16, &[h(2048.0)], &[h(3.0)]),
            vec![h(2052.0)]
        );
        assert_eq!(
            run1(Op::Mul, DType::F16, &[h(300.0)], &[h(300.0)]),
            vec![0x7c00]
        );
    }

    #[test]
    fn casts() {
        let f = |x: f32| x.to_bits();
        assert_eq!(cast_bits(DType::F32, DType::I8, false, f(2.5)), 2);
        assert_eq!(cast_bits(DType::F32, DType::I8, false, f(-300.0)), 0x80);
        assert_eq!(cast_bits(DType::F32, DType::I8, false, f(f32::NAN)), 0);
        assert_eq!(cast_bits(DType::I32, DType::I8, false, 300), 300 & 0xff);
        assert_eq!(cast_bits(DType::I32, DType::I8, true, 300), 127);
        assert_eq!(cast_bits(DType::F32, DType::F16, false, f(1e6)), 0x7c00);
        assert_eq!(cast_bits(DType::F32, DType::F16, true, f(1e6)), 0x7bff);
        assert_eq!(cast_bits(DType::I8, DType::F32, false, 0xff), f(-1.0));
        assert_eq!(cast_bits(DType::F32, DType::Bf16, false, f(1.0)), 0x3f80);
        assert_eq!(cast_bits(DType::Bf16, DType::F32, false, 0x3f80), f(1.0));
        assert_eq!(
            cast_bits(DType::I32, DType::F32, false, 16_777_217),
            f(16_777_216.0)
        );
    }
}
