//! Tensor marshalling: host arrays (C order, little-endian elements) <-> SRAM words.
//!
//! A tensor is viewed as rows of its last dimension; each row is padded to whole
//! vectors of `lanes` elements; byte b of every element goes to byte plane b. Where
//! each (vector, plane) word lives is given by [`TensorDesc::location`].

use crate::engine::Chip;
use crate::program::{SramInit, TensorDesc};

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
    for_each_word(t, lanes, data, |slice, addr, word| {
        chip.write_word(t.layout.hemi, slice, addr, word)
    });
}

/// The SRAM initialisers that hold host data for a tensor (consecutive words merged).
pub fn pack(t: &TensorDesc, lanes: usize, data: &[u8]) -> Vec<SramInit> {
    let mut inits = Vec::new();
    for_each_word(t, lanes, data, |slice, addr, word| {
        inits.push(SramInit {
            hemi: t.layout.hemi,
            slice,
            addr,
            data: word.to_vec(),
        })
    });
    canonical_inits(inits, lanes)
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

/// Visit every (slice, address, word) of a tensor holding host data.
fn for_each_word(t: &TensorDesc, lanes: usize, data: &[u8], mut f: impl FnMut(u16, u32, &[u8])) {
    let nb = t.dtype.bytes();
    let (rows, cols) = geometry(t);
    debug_assert_eq!(data.len(), rows * cols * nb);
    let vpr = cols.div_ceil(lanes);
    let mut word = vec![0u8; lanes];
    for r in 0..rows {
        for j in 0..vpr {
            let v = (r * vpr + j) as u64;
            let c0 = j * lanes;
            let n = (cols - c0).min(lanes);
            let elems = &data[(r * cols + c0) * nb..(r * cols + c0 + n) * nb];
            for b in 0..nb {
                for (l, w) in word.iter_mut().enumerate().take(n) {
                    *w = elems[l * nb + b];
                }
                word[n..].fill(0);
                let (slice, addr) = t.location(v, b);
                f(slice, addr, &word);
            }
        }
    }
}

/// Read the tensor's words back into host layout (`out` is `numel * bytes` bytes).
pub fn read_tensor(chip: &Chip, t: &TensorDesc, out: &mut [u8]) {
    let lanes = chip.config().lanes();
    let nb = t.dtype.bytes();
    let (rows, cols) = geometry(t);
    let vpr = cols.div_ceil(lanes);
    let mut word = vec![0u8; lanes];
    for r in 0..rows {
        for j in 0..vpr {
            let v = (r * vpr + j) as u64;
            let c0 = j * lanes;
            let n = (cols - c0).min(lanes);
            let elems = &mut out[(r * cols + c0) * nb..(r * cols + c0 + n) * nb];
            for b in 0..nb {
                let (slice, addr) = t.location(v, b);
                chip.read_word(t.layout.hemi, slice, addr, &mut word);
                for (l, w) in word.iter().enumerate().take(n) {
                    elems[l * nb + b] = *w;
                }
            }
        }
    }
}
