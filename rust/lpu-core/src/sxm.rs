//! SXM semantics: lane movement as pure functions over stream vectors.
//!
//! Each function takes the input streams (one `lanes`-byte vector per stream) and writes
//! the output streams. Multi-byte types apply the same movement to every byte plane.

use crate::isa::{Instr, Op};

/// Lanes per superlane (`ChipConfig::validate` requires every config to have this many).
pub const SUPERLANE: usize = 16;

/// What SXM instruction `instr` makes of one vector on each of its input streams
/// (`src`) and map streams (`map`: permute's 2, distribute's 1, else none): one vector
/// per output stream (`dst`, every byte of which it writes). The engine calls this for
/// single issues and batches alike.
/// Err: a permute map that is not a permutation (a fault).
pub fn apply(
    instr: &Instr,
    src: &[&[u8]],
    map: &[&[u8]],
    dst: &mut [&mut [u8]],
) -> Result<(), String> {
    match instr.op {
        Op::Shiftn | Op::Shifts => shift(src, dst, instr.args[3] as usize, instr.op == Op::Shiftn),
        Op::Broadcast => broadcast(src, dst),
        Op::Rotate => rotate(src, dst),
        Op::Transpose => transpose(src, dst),
        Op::Distribute => distribute(src, map[0], dst),
        Op::Permute => {
            let lanes: Vec<usize> = map16(map[0], map[1]).collect();
            return permute(src, &lanes, dst);
        }
        _ => unreachable!("{} is not an SXM instruction", instr.op.mnemonic()),
    }
    Ok(())
}

/// Shift every plane by `n` lanes: north (`north = true`) moves lane l to l+n, south
/// moves lane l to l-n; lanes shifted in are zero.
pub fn shift(src: &[&[u8]], dst: &mut [&mut [u8]], n: usize, north: bool) {
    for (s, d) in src.iter().zip(dst.iter_mut()) {
        let lanes = s.len();
        d.fill(0);
        if n >= lanes {
            continue;
        }
        if north {
            d[n..].copy_from_slice(&s[..lanes - n]);
        } else {
            d[..lanes - n].copy_from_slice(&s[n..]);
        }
    }
}

/// Every superlane of every plane takes the plane's superlane 0.
pub fn broadcast(src: &[&[u8]], dst: &mut [&mut [u8]]) {
    for (s, d) in src.iter().zip(dst.iter_mut()) {
        for chunk in d.chunks_mut(SUPERLANE) {
            chunk.copy_from_slice(&s[..chunk.len()]);
        }
    }
}

/// Decode a 2-stream map of little-endian uint16 entries (lane indices for `permute`,
/// word addresses for a gather or scatter), lane by lane.
pub fn map16<'a>(lo: &'a [u8], hi: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
    lo.iter()
        .zip(hi)
        .map(|(l, h)| *l as usize | (*h as usize) << 8)
}

/// Permute lanes: output lane l takes input lane map[l]. The map must be a permutation.
pub fn permute(src: &[&[u8]], map: &[usize], dst: &mut [&mut [u8]]) -> Result<(), String> {
    let lanes = map.len();
    let mut seen = vec![false; lanes];
    for (l, &m) in map.iter().enumerate() {
        if m >= lanes {
            return Err(format!(
                "permute map lane {l} names lane {m}, beyond {lanes} lanes"
            ));
        }
        if std::mem::replace(&mut seen[m], true) {
            return Err(format!(
                "permute map names lane {m} twice: not a permutation"
            ));
        }
    }
    for (s, d) in src.iter().zip(dst.iter_mut()) {
        for (o, &m) in d.iter_mut().zip(map) {
            *o = s[m];
        }
    }
    Ok(())
}

/// Within each superlane, output lane j takes input lane map[j] of the same superlane;
/// a map entry of `SUPERLANE` or more gives zero.
pub fn distribute(src: &[&[u8]], map: &[u8], dst: &mut [&mut [u8]]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("ssse3") {
        // SAFETY: SSSE3 was found on this CPU just above.
        unsafe { distribute_ssse3(src, map, dst) };
        return;
    }
    distribute_lanes(src, map, dst);
}

/// Each superlane of each plane of `src` with its map and its place in `dst`:
/// (output, input, map), 16 lanes each.
fn superlanes<'a, 's: 'a, 'd: 'a>(
    src: &'a [&'s [u8]],
    map: &'a [u8],
    dst: &'a mut [&'d mut [u8]],
) -> impl Iterator<Item = (&'a mut [u8], &'a [u8], &'a [u8])> + use<'a, 's, 'd> {
    src.iter().zip(dst.iter_mut()).flat_map(move |(s, d)| {
        d.chunks_exact_mut(SUPERLANE)
            .zip(s.chunks_exact(SUPERLANE))
            .zip(map.chunks_exact(SUPERLANE))
            .map(|((d, s), m)| (d, s, m))
    })
}

/// [`distribute`] a lane at a time.
fn distribute_lanes(src: &[&[u8]], map: &[u8], dst: &mut [&mut [u8]]) {
    // A superlane at a time, with its 16 lanes as an array: no division or bounds check
    // per lane (one lane at a time, a decode step's distributes took 0.2 ms).
    for (d, s, m) in superlanes(src, map, dst) {
        let s: &[u8; SUPERLANE] = s.try_into().expect("a superlane");
        for (o, &j) in d.iter_mut().zip(m) {
            *o = if (j as usize) < SUPERLANE {
                s[j as usize & (SUPERLANE - 1)]
            } else {
                0
            };
        }
    }
}

/// [`distribute`] a superlane at a time: a superlane is one 16-byte register and
/// `pshufb` is the distributor itself (a map byte with its top bit set gives zero, so
/// entries of 16 or more are first given that bit).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "ssse3")]
fn distribute_ssse3(src: &[&[u8]], map: &[u8], dst: &mut [&mut [u8]]) {
    use std::arch::x86_64::*;
    let fifteen = _mm_set1_epi8(15);
    for (d, s, m) in superlanes(src, map, dst) {
        // SAFETY: each piece is 16 bytes (chunks_exact of SUPERLANE = 16); the loads and
        // the store have no alignment need.
        unsafe {
            let m = _mm_loadu_si128(m.as_ptr().cast());
            // Entries 16..=127 compare greater than 15 (as signed bytes) and get all bits
            // set; 128..=255 are negative, their top bit already set.
            let m = _mm_or_si128(m, _mm_cmpgt_epi8(m, fifteen));
            let v = _mm_shuffle_epi8(_mm_loadu_si128(s.as_ptr().cast()), m);
            _mm_storeu_si128(d.as_mut_ptr().cast(), v);
        }
    }
}

/// From n input streams emit n*n: output i*n+j is input j with lane l taking lane l+i
/// (cyclically), i.e. every rotation an n-wide window needs.
pub fn rotate(src: &[&[u8]], dst: &mut [&mut [u8]]) {
    let n = src.len();
    for i in 0..n {
        for (j, s) in src.iter().enumerate() {
            let lanes = s.len();
            let d = &mut dst[i * n + j];
            for (l, o) in d.iter_mut().enumerate() {
                *o = s[(l + i) % lanes];
            }
        }
    }
}

/// 16x16 transpose inside every superlane: output stream i, lane 16g+j = input stream j,
/// lane 16g+i.
pub fn transpose(src: &[&[u8]], dst: &mut [&mut [u8]]) {
    debug_assert_eq!(src.len(), 16);
    let lanes = src[0].len();
    for (i, d) in dst.iter_mut().enumerate() {
        for g in (0..lanes).step_by(16) {
            for j in 0..16 {
                d[g + j] = src[j][g + i];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The outputs as the functions take them.
    fn outs(v: &mut [Vec<u8>]) -> Vec<&mut [u8]> {
        v.iter_mut().map(|o| o.as_mut_slice()).collect()
    }

    #[test]
    fn transpose_twice_is_identity() {
        let src: Vec<Vec<u8>> = (0..16)
            .map(|s| (0..32).map(|l| (s * 32 + l) as u8).collect())
            .collect();
        let refs: Vec<&[u8]> = src.iter().map(|v| v.as_slice()).collect();
        let mut t = vec![vec![0u8; 32]; 16];
        transpose(&refs, &mut outs(&mut t));
        assert_eq!(t[3][16 + 5], src[5][16 + 3]);
        let trefs: Vec<&[u8]> = t.iter().map(|v| v.as_slice()).collect();
        let mut back = vec![vec![0u8; 32]; 16];
        transpose(&trefs, &mut outs(&mut back));
        assert_eq!(back, src);
    }

    #[test]
    fn distribute_by_register_agrees_with_lane_by_lane() {
        // Every map byte value (0..=255) in every lane position, over two planes.
        let lanes = 16 * SUPERLANE;
        let map: Vec<u8> = (0..lanes).map(|l| (l * 37 % 256) as u8).collect();
        assert!((0..=255u8).all(|v| map.contains(&v)));
        let planes: Vec<Vec<u8>> = (0..2)
            .map(|p| (0..lanes).map(|l| (l * 11 + p * 101 + 1) as u8).collect())
            .collect();
        let src: Vec<&[u8]> = planes.iter().map(|p| p.as_slice()).collect();
        let mut want = vec![vec![0u8; lanes]; 2];
        distribute_lanes(&src, &map, &mut outs(&mut want));
        let mut got = vec![vec![0xaau8; lanes]; 2];
        distribute(&src, &map, &mut outs(&mut got));
        assert_eq!(got, want);
    }

    #[test]
    fn distribute_moves_lanes_within_each_superlane() {
        let lanes = 3 * SUPERLANE;
        let s: Vec<u8> = (0..lanes).map(|l| (l * 5 + 1) as u8).collect();
        let map: Vec<u8> = (0..lanes).map(|l| ((l * 7) % 19) as u8).collect();
        let mut d = vec![vec![0xffu8; lanes]];
        distribute(&[&s], &map, &mut outs(&mut d));
        for l in 0..lanes {
            let m = map[l] as usize;
            let want = if m < SUPERLANE {
                s[l / SUPERLANE * SUPERLANE + m]
            } else {
                0
            };
            assert_eq!(d[0][l], want, "lane {l}");
        }
    }

    #[test]
    fn permute_rejects_non_permutations() {
        let s = vec![1u8, 2, 3];
        let mut d = vec![vec![0u8; 3]];
        assert!(permute(&[&s], &[0, 0, 1], &mut outs(&mut d)).is_err());
        assert!(permute(&[&s], &[0, 1, 5], &mut outs(&mut d)).is_err());
        permute(&[&s], &[2, 0, 1], &mut outs(&mut d)).unwrap();
        assert_eq!(d[0], vec![3, 1, 2]);
    }

    #[test]
    fn shifts_and_rotations() {
        let s: Vec<u8> = (1..=8).collect();
        let mut d = vec![vec![0u8; 8]];
        shift(&[&s], &mut outs(&mut d), 3, true);
        assert_eq!(d[0], vec![0, 0, 0, 1, 2, 3, 4, 5]);
        shift(&[&s], &mut outs(&mut d), 3, false);
        assert_eq!(d[0], vec![4, 5, 6, 7, 8, 0, 0, 0]);
        let a: Vec<u8> = (0..8).collect();
        let b: Vec<u8> = (10..18).collect();
        let c: Vec<u8> = (20..28).collect();
        let mut out = vec![vec![0u8; 8]; 9];
        rotate(&[&a, &b, &c], &mut outs(&mut out));
        let wide: Vec<u8> = (0..48).collect();
        let mut two = vec![vec![0u8; 48]; 2];
        broadcast(&[&wide, &wide[..]], &mut outs(&mut two));
        let first: Vec<u8> = (0..16).collect();
        assert_eq!(two[1], [first.clone(), first.clone(), first].concat());
        assert_eq!(out[0], a);
        assert_eq!(out[3 + 1], vec![11, 12, 13, 14, 15, 16, 17, 10]);
        assert_eq!(out[6 + 2][7], 21);
    }
}
