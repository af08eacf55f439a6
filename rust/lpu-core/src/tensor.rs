//! Tensor marshalling: host arrays (C order, little-endian elements) <-> SRAM words.
//!
//! A tensor is viewed as rows of its last dimension; each row is padded to whole
//! vectors of `lanes` elements; byte b of every element goes to byte plane b. Where
//! each (vector, plane) word lives is given by [`TensorDesc::location`].

use crate::engine::Chip;
use crate::program::{SramInit, TensorDesc};
use std::ops::Range;

fn geometry(t: &TensorDesc) -> (usize, usize) {
    let cols = t.shape.last().copied().unwrap_or(1) as usize;
    let rows = if t.shape.is_empty() {
        1
    } else {
        t.shape[..t.shape.len() - 1].iter().product::<u64>() as usize
    };
    (rows, cols)
}

/// Elements in the tensor.
pub fn numel(t: &TensorDesc) -> usize {
    let (r, c) = geometry(t);
    r * c
}

/// Write host data (`numel * bytes` bytes, element-major) into the tensor's SRAM words.
pub fn write_tensor(chip: &mut Chip, t: &TensorDesc, data: &[u8]) {
    let lanes = chip.config().lanes();
    let nb = t.dtype.bytes();
    let mut planes = vec![0u8; nb * lanes];
    for_each_vector(t, lanes, |v, elems, n| {
        split_planes(nb, &data[elems], &mut planes, lanes);
        for (b, plane) in planes.chunks_exact(lanes).enumerate() {
            let (slice, addr) = t.location(v, b);
            let word = chip.word_mut(t.layout.hemi, slice, addr);
            word[..n].copy_from_slice(&plane[..n]);
            word[n..].fill(0);
        }
    });
}

/// Read the tensor's words back into host layout (`out` is `numel * bytes` bytes).
pub fn read_tensor(chip: &Chip, t: &TensorDesc, out: &mut [u8]) {
    let lanes = chip.config().lanes();
    let nb = t.dtype.bytes();
    let zero = vec![0u8; lanes];
    for_each_vector(t, lanes, |v, elems, _| {
        let mut words: [&[u8]; 4] = [&zero; 4];
        for (b, w) in words.iter_mut().enumerate().take(nb) {
            let (slice, addr) = t.location(v, b);
            *w = chip.word(t.layout.hemi, slice, addr).unwrap_or(&zero);
        }
        join_planes(nb, &words, &mut out[elems]);
    });
}

/// The SRAM initialisers that hold host data for a tensor (consecutive words merged).
pub fn pack(t: &TensorDesc, lanes: usize, data: &[u8]) -> Vec<SramInit> {
    let nb = t.dtype.bytes();
    let mut planes = vec![0u8; nb * lanes];
    let mut inits = Vec::new();
    for_each_vector(t, lanes, |v, elems, n| {
        split_planes(nb, &data[elems], &mut planes, lanes);
        for (b, plane) in planes.chunks_exact(lanes).enumerate() {
            let (slice, addr) = t.location(v, b);
            let mut word = vec![0u8; lanes];
            word[..n].copy_from_slice(&plane[..n]);
            inits.push(SramInit {
                hemi: t.layout.hemi,
                slice,
                addr,
                data: word,
            })
        }
    });
    canonical_inits(inits, lanes)
}

/// Visit every vector of a tensor: its index, the byte range of its elements in host
/// layout, and how many lanes they fill.
fn for_each_vector(t: &TensorDesc, lanes: usize, mut f: impl FnMut(u64, Range<usize>, usize)) {
    let nb = t.dtype.bytes();
    let (rows, cols) = geometry(t);
    let vpr = cols.div_ceil(lanes);
    for r in 0..rows {
        for j in 0..vpr {
            let c0 = j * lanes;
            let n = (cols - c0).min(lanes);
            let first = (r * cols + c0) * nb;
            f((r * vpr + j) as u64, first..first + n * nb, n);
        }
    }
}

/// Byte b of each `nb`-byte element into `planes[b * lanes..]`, in one pass over the
/// elements (written out per element size so it compiles to vector shuffles).
fn split_planes(nb: usize, elems: &[u8], planes: &mut [u8], lanes: usize) {
    match nb {
        1 => planes[..elems.len()].copy_from_slice(elems),
        2 => {
            let (p0, p1) = planes.split_at_mut(lanes);
            for ((e, a), b) in elems.chunks_exact(2).zip(p0).zip(p1) {
                (*a, *b) = (e[0], e[1]);
            }
        }
        4 => {
            let (p01, p23) = planes.split_at_mut(2 * lanes);
            let ((p0, p1), (p2, p3)) = (p01.split_at_mut(lanes), p23.split_at_mut(lanes));
            for ((((e, a), b), c), d) in elems.chunks_exact(4).zip(p0).zip(p1).zip(p2).zip(p3) {
                (*a, *b, *c, *d) = (e[0], e[1], e[2], e[3]);
            }
        }
        _ => unreachable!("elements are 1, 2 or 4 bytes"),
    }
}

/// The inverse of [`split_planes`]: byte b of each element from `words[b]`.
fn join_planes(nb: usize, words: &[&[u8]; 4], elems: &mut [u8]) {
    let [w0, w1, w2, w3] = *words;
    match nb {
        1 => elems.copy_from_slice(&w0[..elems.len()]),
        2 => {
            for ((e, a), b) in elems.chunks_exact_mut(2).zip(w0).zip(w1) {
                e.copy_from_slice(&[*a, *b]);
            }
        }
        4 => {
            for ((((e, a), b), c), d) in elems.chunks_exact_mut(4).zip(w0).zip(w1).zip(w2).zip(w3) {
                e.copy_from_slice(&[*a, *b, *c, *d]);
            }
        }
        _ => unreachable!("elements are 1, 2 or 4 bytes"),
    }
}

/// Sort initialisers by (hemisphere, slice, address) and merge adjacent runs.
pub fn canonical_inits(mut inits: Vec<SramInit>, lanes: usize) -> Vec<SramInit> {
    inits.sort_by_key(|i| (i.hemi, i.slice, i.addr));
    let mut out: Vec<SramInit> = Vec::with_capacity(inits.len());
    for i in inits {
        if let Some(last) = out.last_mut() {
            let end = last.addr as usize + last.data.len() / lanes;
            if last.hemi == i.hemi && last.slice == i.slice && end == i.addr as usize {
                last.data.extend_from_slice(&i.data);
                continue;
            }
        }
        out.push(i);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ChipConfig;
    use crate::dtype::DType;
    use crate::program::{Layout, TensorKind};

    #[test]
    fn planes_round_trip_and_land_where_location_says() {
        let cfg = ChipConfig::tsp_tiny();
        let lanes = cfg.lanes();
        for dtype in [DType::I8, DType::I16, DType::F32] {
            let nb = dtype.bytes();
            let split = (4 / nb as u16).min(2); // tsp_tiny has 4 slices per hemisphere
            let t = TensorDesc {
                name: "t".into(),
                kind: TensorKind::Input,
                dtype,
                shape: vec![3, lanes as u64 + 5], // two vectors per row, the second partial
                layout: Layout {
                    hemi: 1,
                    addr: 2,
                    split,
                    slices: (0..split * nb as u16).collect(),
                },
            };
            crate::program::check_tensor(&cfg, &t).unwrap();
            let data: Vec<u8> = (0..numel(&t) * nb).map(|i| (i * 7 + 3) as u8).collect();
            let mut chip = Chip::new(cfg.clone()).unwrap();
            write_tensor(&mut chip, &t, &data);
            let mut back = vec![0u8; data.len()];
            read_tensor(&chip, &t, &mut back);
            assert_eq!(back, data, "{dtype:?}");
            // Element 1 of row 2's second vector: byte b sits in lane 1 of plane b.
            let cols = lanes + 5;
            let e = 2 * cols + lanes + 1;
            for b in 0..nb {
                let (slice, addr) = t.location(2 * 2 + 1, b);
                let word = chip.word(1, slice, addr).unwrap();
                assert_eq!(word[1], data[e * nb + b]);
                assert!(word[5..].iter().all(|&x| x == 0), "padding lanes are zero");
            }
            // The initialisers of the same data put the same bytes in the same words.
            for init in pack(&t, lanes, &data) {
                for (k, w) in init.data.chunks(lanes).enumerate() {
                    let got = chip.word(init.hemi, init.slice, init.addr + k as u32);
                    assert_eq!(got.unwrap(), w);
                }
            }
        }
    }
}
