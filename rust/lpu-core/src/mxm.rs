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
//! is an integer below 2^24, which fp32 represents exactly, in any order. Where the CPU
//! has integer dot-product instructions, int8 runs on those instead (`vnni`), with the
//! same integer results.

use crate::dtype::DType;
use crate::streams::Rows;
use multiversion::multiversion;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Rows of activations per block of the product kernel.
const ROWS: usize = 6;
/// Result lanes per block (four AVX-512 or eight AVX2 registers per row; 6 x 4 AVX-512
/// accumulators leave room for the weights and the broadcast activation).
const COLS: usize = 64;
/// fp32 or int32 lanes in one AVX-512 register (the kernels' unit of result lanes).
const REG_LANES: usize = 16;
/// Fewest activation rows worth packing int8 weights for the integer kernel.
const PACK_ROWS: usize = 16;
/// Fewest activation rows worth laying the fp32 weights out in panels (see
/// `Weights::panels`): copying 400 KB costs about what the panels save on 100 rows.
const PANEL_ROWS: usize = 128;
/// Fewest activation rows worth a second thread.
const ROWS_PER_THREAD: usize = 64;
/// Rows per piece of a product shared by threads: each takes pieces until none are
/// left, so a thread held up (by the OS, or by other work) does fewer of them.
const PIECE_ROWS: usize = 2 * BLOCK_ROWS;
/// Activation rows widened to fp32 at a time (a multiple of the kernel's 6-row blocks):
/// 96 x 320 values stay in L2 between widening and use, and each block of weights the
/// AVX-512 kernel keeps in L1 serves 16 tiles of rows.
const BLOCK_ROWS: usize = 96;

/// Fewest activation rows worth widening the weights to fp32 once for the register-tiled
/// kernel; fewer rows are multiplied straight from the installed bytes.
const DIRECT_ROWS: usize = 16;
/// Products straight from the bytes one install takes before it is widened anyway
/// (a program issuing `abc` one at a time would otherwise widen on every issue).
const DIRECT_CALLS: u32 = 4;
/// A product of few vectors leaves out the rows where they are all zero when at most
/// one in this many rows has a value (see [`Weights::sparse`]).
const SPARSE_SHARE: usize = 4;

/// Words per row of weights in a buffer (which holds `lanes` rows): an fp16 row, the
/// widest, is two words.
const WORDS_PER_ROW: usize = DType::F16.bytes();
// `Weights::rows` finds a word's row by a shift.
const _: () = assert!(WORDS_PER_ROW.is_power_of_two());

/// A plane's weight buffer: words of `lanes` bytes (an int8 row of weights is one
/// word, an fp16 row two: its low bytes, then its high bytes). A word a batch of `lw`
/// loaded is where its stream value was (a view of an SRAM page, which copy on write
/// keeps as it is): a decode step loads every weight once, and copying them into the
/// buffer was a tenth of the step. A word a single `lw` loaded is copied into `own`.
/// The buffer keeps its loads as they came (a batch's streams, a few dozen per
/// install), not a table of its 2 x lanes words: setting and clearing such a table
/// cost more than the loads' other work.
#[derive(Clone, Debug, Default)]
pub struct WeightBuf {
    lanes: usize,
    own: Vec<u8>,
    /// The loads since the buffer was last emptied, in order (a later load of a word
    /// replaces an earlier one).
    loads: Vec<Load>,
}

/// Words w0, w0 + every, ... (count of them): the first vectors of `rows`, or (None)
/// the buffer's own words.
#[derive(Clone, Debug)]
struct Load {
    w0: usize,
    every: usize,
    count: usize,
    rows: Option<Rows>,
}

impl WeightBuf {
    /// Words of `lanes` bytes, end to end in `bytes`.
    #[cfg(test)]
    pub fn owned(bytes: Vec<u8>, lanes: usize) -> Self {
        let count = bytes.len() / lanes;
        WeightBuf {
            lanes,
            own: bytes,
            loads: vec![Load {
                w0: 0,
                every: 1,
                count,
                rows: None,
            }],
        }
    }

    /// The last load of word `w`, and which of its words w is.
    fn load_of(&self, w: usize) -> Option<(&Load, usize)> {
        self.loads.iter().rev().find_map(|l| {
            let d = w.checked_sub(l.w0)?;
            (d.is_multiple_of(l.every) && d / l.every < l.count).then_some((l, d / l.every))
        })
    }

    /// Word `w`, which is word `r` of load `l`.
    fn word_of<'a>(&'a self, l: &'a Load, w: usize, r: usize) -> &'a [u8] {
        match &l.rows {
            Some(rows) => rows.row(r),
            None => &self.own[w * self.lanes..(w + 1) * self.lanes],
        }
    }

    /// Word `w` (loaded since the buffer was last emptied).
    pub fn word(&self, w: usize) -> &[u8] {
        match self.load_of(w) {
            Some((l, r)) => self.word_of(l, w, r),
            None => &self.own[w * self.lanes..(w + 1) * self.lanes],
        }
    }

    /// `f(w, load, r)` for each word w below `n` of every load (its word r), in load
    /// order: a word loaded twice comes last as it is now.
    fn each_word<'a>(&'a self, n: usize, mut f: impl FnMut(usize, &'a Load, usize)) {
        for l in &self.loads {
            let count = l.count.min(n.saturating_sub(l.w0).div_ceil(l.every));
            (0..count).for_each(|r| f(l.w0 + r * l.every, l, r));
        }
    }

    /// `f(w, word w)` for each word w below `n` of every load, in load order (see
    /// [`WeightBuf::each_word`]). A view's words are taken a stride apart, not each
    /// looked up (the row lists of a decode step's products were 3.5 % of it).
    fn each_word_bytes<'a>(&'a self, n: usize, mut f: impl FnMut(usize, &'a [u8])) {
        for l in &self.loads {
            let count = l.count.min(n.saturating_sub(l.w0).div_ceil(l.every));
            match &l.rows {
                Some(r) if r.fold.is_none() => {
                    let data: &[u8] = &r.data;
                    let (off, stride, width) = (r.off, r.stride, r.width);
                    for i in 0..count {
                        let at = off + i * stride;
                        f(l.w0 + i * l.every, &data[at..at + width]);
                    }
                }
                _ => (0..count).for_each(|r| {
                    let w = l.w0 + r * l.every;
                    f(w, self.word_of(l, w, r))
                }),
            }
        }
    }

    /// Words w0.. (`count` of them) to copy values into, if the buffer has room for
    /// them (it holds `WORDS_PER_ROW` x lanes words: lanes rows of fp16).
    pub fn own_words(&mut self, w0: usize, count: usize, lanes: usize) -> Option<&mut [u8]> {
        let words = WORDS_PER_ROW * lanes;
        if w0 + count > words {
            return None;
        }
        self.fit(lanes);
        self.own.resize(words * lanes, 0);
        self.loads.push(Load {
            w0,
            every: 1,
            count,
            rows: None,
        });
        Some(&mut self.own[w0 * lanes..(w0 + count) * lanes])
    }

    /// Words w0, w0 + every, ... are the first `count` vectors of `rows` (as views;
    /// all below `WORDS_PER_ROW` x lanes).
    pub fn view(&mut self, w0: usize, every: usize, rows: Rows, count: usize) {
        self.fit(rows.width);
        self.loads.push(Load {
            w0,
            every,
            count,
            rows: Some(rows),
        });
    }

    /// Whether word `w` is a view of `data`.
    fn views(&self, w: usize, data: &Arc<Vec<u8>>) -> bool {
        matches!(self.load_of(w), Some((Load { rows: Some(r), .. }, _)) if Arc::ptr_eq(&r.data, data))
    }

    /// Whether it has memory of its own to keep for later loads.
    pub fn holds_memory(&self) -> bool {
        !self.own.is_empty()
    }

    fn fit(&mut self, lanes: usize) {
        if self.lanes != lanes {
            *self = WeightBuf {
                lanes,
                ..Default::default()
            };
        }
    }

    /// Lets go of the viewed buffers (keeping its own memory): the loads after this
    /// overwrite it from word 0.
    pub fn emptied(mut self) -> Self {
        self.loads.clear();
        self
    }
}

/// A weight row as its words: its bytes (int8), or its low and high bytes (fp16).
type RowWords<'a> = (&'a [u8], &'a [u8]);

/// The weights installed in a plane.
#[derive(Debug, Default)]
pub struct Weights {
    /// int8 weights (results are int32) or fp16 weights (results are fp32).
    pub int8: bool,
    /// N, the result lanes.
    pub n: usize,
    /// The weight buffer as installed: `used` rows of n lanes as one or two words
    /// (int8, or fp16's low and high bytes), the rows after them ignored (zero).
    raw: WeightBuf,
    used: usize,
    /// Buffer row r is array column r.
    transpose: bool,
    /// Products made from `raw` so far (see `DIRECT_CALLS`).
    direct_calls: AtomicU32,
    /// K x N, exact as fp32; made on the first product that needs it. A decode step
    /// sends one vector per install, which is cheaper straight from `raw` than writing
    /// and reading back twice its bytes as fp32.
    w: OnceLock<Vec<f32>>,
    /// `w` in panels for the AVX-512 kernel; made on the first product with enough rows.
    panels: OnceLock<Vec<f32>>,
    /// The previous install's `w`, for the next one to fill instead of allocating
    /// (fresh zeroed memory costs page faults).
    spare: Mutex<Vec<f32>>,
    /// int8 weights packed for the integer kernel, when the CPU has one; made on the
    /// first product with enough rows to pay for the packing.
    packed: OnceLock<Option<vnni::Packed>>,
    /// Whether no loaded fp16 weight is an infinity or NaN; found on the first product
    /// that would leave out rows of zero activations (see [`Weights::sparse`]).
    finite: OnceLock<bool>,
}

impl Clone for Weights {
    fn clone(&self) -> Self {
        Weights {
            int8: self.int8,
            n: self.n,
            raw: self.raw.clone(),
            used: self.used,
            transpose: self.transpose,
            direct_calls: AtomicU32::new(self.direct_calls.load(Ordering::Relaxed)),
            w: self.w.clone(),
            panels: self.panels.clone(),
            spare: Default::default(),
            packed: self.packed.clone(),
            finite: self.finite.clone(),
        }
    }
}

impl Weights {
    /// From the K x N weight values (int8 or fp16 values, exact in fp32).
    #[cfg(test)]
    pub fn new(int8: bool, n: usize, w: Vec<f32>) -> Self {
        debug_assert!(w.len() / n <= 1024, "int8 exactness needs K <= 1024");
        Weights {
            int8,
            n,
            w: OnceLock::from(w),
            ..Default::default()
        }
    }

    /// Install the n x n array held by a plane's weight buffer: row r (of `used` loaded
    /// rows; the rest are zero) is one byte plane of n lanes for int8, two for fp16.
    /// With `transpose`, buffer row r becomes array column r. The buffer is taken, not
    /// copied: `buf` gets the previous install's buffer back (the plane's next loads
    /// overwrite it from row 0, and rows past them are ignored).
    pub fn install(
        &mut self,
        int8: bool,
        n: usize,
        buf: &mut WeightBuf,
        used: usize,
        transpose: bool,
    ) {
        debug_assert!(n <= 1024, "int8 exactness needs K <= 1024");
        *buf = std::mem::replace(&mut self.raw, std::mem::take(buf)).emptied();
        self.int8 = int8;
        self.n = n;
        self.used = used.min(n);
        self.transpose = transpose;
        self.direct_calls = AtomicU32::new(0);
        if let Some(w) = self.w.take() {
            *self.spare.get_mut().unwrap_or_else(|e| e.into_inner()) = w;
        }
        self.panels = OnceLock::new();
        self.packed = OnceLock::new();
        self.finite = OnceLock::new();
    }

    /// Drop the installed rows at the end whose words are all views of `zero` (SRAM's
    /// page of never-written words), without reading them: they are zero rows (see
    /// [`Weights::rows`]), and a decode step's attention installs a KV cache whose
    /// positions still to come are mostly on such pages.
    pub fn trim_views_of(&mut self, zero: &Arc<Vec<u8>>) {
        let per = self.words_per_row();
        let n = per * self.used;
        // Most installs end in a loaded row: one look at the last word.
        if n == 0 || !self.raw.views(n - 1, zero) {
            return;
        }
        // Which words are such views, from one pass over the loads.
        let mut on_zero = vec![false; n];
        self.raw.each_word(n, |w, l, _| {
            on_zero[w] = l.rows.as_ref().is_some_and(|r| Arc::ptr_eq(&r.data, zero));
        });
        while self.used > 0
            && on_zero[per * (self.used - 1)..per * self.used]
                .iter()
                .all(|z| *z)
        {
            self.used -= 1;
        }
    }

    /// No weights, but the memory of these: the buffer for a plane to load into next and
    /// the fp32 array for the next install to fill.
    pub fn recycled(mut self) -> (Weights, WeightBuf) {
        let spare = self.w.take().unwrap_or_else(|| {
            std::mem::take(self.spare.get_mut().unwrap_or_else(|e| e.into_inner()))
        });
        let kept = Weights {
            spare: Mutex::new(spare),
            ..Default::default()
        };
        (kept, self.raw.emptied())
    }

    /// Words a row takes: row r is word r (int8), or words 2r and 2r + 1 (fp16's low
    /// and high bytes).
    fn words_per_row(&self) -> usize {
        if self.int8 {
            1
        } else {
            WORDS_PER_ROW
        }
    }

    /// The loaded rows, without the all-zero ones at the end: a row of +0 weights is
    /// the same as a row never loaded (see [`add_zero_products`]). A decode step's
    /// attention loads its whole KV cache, of which the positions still to come are
    /// zero rows.
    fn rows(&self) -> Vec<RowWords<'_>> {
        // A shift per word, not a divide by a number the compiler cannot see.
        let shift = self.words_per_row().trailing_zeros();
        let mut rows: Vec<RowWords<'_>> = vec![(&[], &[]); self.used];
        self.raw.each_word_bytes(self.used << shift, |w, word| {
            let row = &mut rows[w >> shift];
            if w & ((1 << shift) - 1) == 0 {
                row.0 = word;
            } else {
                row.1 = word;
            }
        });
        let zero = |b: &[u8]| b.iter().fold(0, |a, v| a | v) == 0;
        while rows.last().is_some_and(|(lo, hi)| zero(lo) && zero(hi)) {
            rows.pop();
        }
        rows
    }

    /// The K x N array as fp32, widened from the installed bytes on first use.
    fn values(&self) -> &[f32] {
        self.w.get_or_init(|| {
            let n = self.n;
            let mut w = std::mem::take(&mut *self.spare.lock().unwrap_or_else(|e| e.into_inner()));
            w.clear();
            let rows = self.rows();
            if !self.transpose {
                // Each row widened in L1 and appended, then zeros: zeroing the whole
                // array first wrote it twice.
                let mut one = vec![0f32; n];
                for row in &rows {
                    widen_row(self.int8, *row, &mut one);
                    w.extend_from_slice(&one);
                }
            }
            w.resize(n * n, 0.0);
            if self.transpose {
                // Buffer row r becomes array column r. A block of rows is widened first,
                // so that each array row gets a run of values at a time rather than one
                // value per cache line.
                const BLOCK: usize = 16;
                let mut block = vec![0f32; BLOCK * n];
                for (b, chunk) in rows.chunks(BLOCK).enumerate() {
                    for (row, out) in chunk.iter().zip(block.chunks_mut(n)) {
                        widen_row(self.int8, *row, out);
                    }
                    let r0 = b * BLOCK;
                    for (c, wrow) in w.chunks_mut(n).enumerate() {
                        for (i, v) in wrow[r0..r0 + chunk.len()].iter_mut().enumerate() {
                            *v = block[i * n + c];
                        }
                    }
                }
            }
            w
        })
    }

    /// The K x N array in panels of COLS columns, each panel's K rows end to end (the
    /// last panel padded to COLS), so that a tile of the AVX-512 kernel reads its weights
    /// as one forward stream rather than 256 bytes from every 1,280-byte row: on a
    /// 2-core Intel Xeon that took a tenth to a fifth off the streaming matmul's products.
    /// Only for N in whole registers (see `avx512::gemm`).
    fn panels(&self) -> &[f32] {
        self.panels.get_or_init(|| {
            let (w, n) = (self.values(), self.n);
            let k = w.len() / n;
            let mut out = vec![0f32; n.div_ceil(COLS) * k * COLS];
            for (p, panel) in out.chunks_exact_mut(k * COLS).enumerate() {
                let c0 = p * COLS;
                let wide = COLS.min(n - c0);
                for (row, prow) in w.chunks_exact(n).zip(panel.chunks_exact_mut(COLS)) {
                    prow[..wide].copy_from_slice(&row[c0..c0 + wide]);
                }
            }
            out
        })
    }

    /// Whether a product of `m` rows runs straight from the installed bytes (counting
    /// it towards `DIRECT_CALLS` if so: call once per product).
    fn direct(&self, m: usize) -> bool {
        m < DIRECT_ROWS
            && self.used > 0
            && self.w.get().is_none()
            && self.direct_calls.fetch_add(1, Ordering::Relaxed) < DIRECT_CALLS
    }

    /// For a product of fp16 vectors `xs` (m x n) that are zero (+0 or -0) in most of
    /// the loaded rows, such as a softmax's sums through a plane of ones (the positions
    /// still to come are zeros): the rows where some vector is not zero, and the vectors
    /// reduced to those rows (then their values past the loaded rows, then +0s), for
    /// [`from_bytes`]. None when most rows have values, or some weight is not finite.
    ///
    /// Leaving rows out changes no bit for a product that does not accumulate (the
    /// caller's part) when the weights left out are finite: each product left out is
    /// then +0 or -0, and a sum in order from +0 is never -0 (-0 comes only from adding
    /// -0 to -0), so adding a zero to it changes nothing; the rest is summed in the same
    /// order. An accumulating product starts from the slots, which may hold -0.
    fn sparse(&self, xs: &[f32]) -> Option<(Vec<RowWords<'_>>, Vec<f32>)> {
        let (n, used) = (self.n, self.used);
        let mut has = vec![false; used];
        for row in xs.chunks(n) {
            for (h, v) in has.iter_mut().zip(&row[..used]) {
                *h |= *v != 0.0;
            }
        }
        if has.iter().filter(|h| **h).count() * SPARSE_SHARE > used {
            return None;
        }
        let rows = self.rows();
        let finite = self.finite.get_or_init(|| {
            // An fp16 infinity or NaN has all five exponent bits set, in its high byte.
            let special = |hi: &[u8]| hi[..n].iter().fold(false, |a, b| a | (b & 0x7c == 0x7c));
            !rows.iter().any(|(_, hi)| special(hi))
        });
        if !finite {
            return None;
        }
        // `rows` stops at its last row that is not all zeros: what lies past it (of
        // the vectors) goes after the rows kept, as `from_bytes` takes it.
        let u = rows.len();
        let keep: Vec<usize> = (0..u).filter(|&k| has[k]).collect();
        let mut reduced = vec![0f32; xs.len()];
        for (row, out) in xs.chunks(n).zip(reduced.chunks_mut(n)) {
            for (o, &k) in out.iter_mut().zip(&keep) {
                *o = row[k];
            }
            out[keep.len()..keep.len() + n - u].copy_from_slice(&row[u..]);
        }
        Some((keep.iter().map(|&k| rows[k]).collect(), reduced))
    }

    /// `m` activation vectors through the array; row i of `acc` (M x N, raw bits of the
    /// slots: int32 or fp32) becomes the result of `abc`, added to its value when
    /// `accumulate`, else replacing it.
    pub fn apply(&self, m: usize, x: Activations<'_>, acc: &mut [u32], accumulate: bool) {
        self.apply_split(m, x, acc, accumulate, None, None)
    }

    /// [`Weights::apply`], and with `planes` (M x N bytes each) the results also split
    /// into byte planes (see [`byte_planes`]) by the threads that make them, while they
    /// are in cache. `side` runs on the calling thread while the others start on the
    /// product (it joins them afterwards).
    pub fn apply_split(
        &self,
        m: usize,
        x: Activations<'_>,
        acc: &mut [u32],
        accumulate: bool,
        planes: Option<Planes<'_>>,
        side: Option<&mut dyn FnMut()>,
    ) {
        let n = self.n;
        // Either kernel gives the same integers, so which one runs may depend on what
        // came before.
        let packed = if m >= PACK_ROWS {
            Some(self.packed.get_or_init(|| vnni::Packed::new(self)))
        } else {
            self.packed.get()
        };
        if let (Some(Some(p)), Activations::Int8(rows)) = (packed, x) {
            return p.product(m, rows, acc, accumulate, planes, side);
        }
        // A few fp16 vectors: their values once, to see whether most rows can be left out.
        let given = match x {
            Activations::Values(fill) if m < DIRECT_ROWS && !self.int8 && self.used > 0 => {
                let mut xs = vec![0f32; m * n];
                for (r, row) in xs.chunks_mut(n).enumerate() {
                    fill(r, row);
                }
                Some(xs)
            }
            _ => None,
        };
        // Mostly zero (see `sparse`): the rows kept and the vectors reduced to them go
        // through the direct product in place of all rows and the vectors as given.
        let sparse = given
            .as_deref()
            .filter(|_| !accumulate && !self.transpose)
            .and_then(|xs| self.sparse(xs));
        let (kept, given) = match sparse {
            Some((rows, xs)) => (Some(rows), Some(xs)),
            None => (None, given),
        };
        let direct = kept.is_some() || self.direct(m);
        let (w, k) = if direct {
            (&[][..], n)
        } else {
            let w = self.values();
            (w, w.len() / n)
        };
        let panels =
            (!direct && m >= PANEL_ROWS && n.is_multiple_of(REG_LANES)).then(|| self.panels());
        let raw = match kept {
            Some(rows) => rows,
            None if direct => self.rows(),
            None => Vec::new(),
        };
        // A block of rows at a time on each thread: activations widened, the sums
        // started, multiplied and stored while they are in cache. fp32 sums are made in
        // the slots' bits; int8 sums in fp32 beside them, then converted.
        par_rows(acc, n, planes, side, |i0, accs, mut planes| {
            let most = BLOCK_ROWS.min(accs.len() / n);
            let mut xf = vec![0f32; most * k];
            let mut yf = vec![0f32; if self.int8 { most * n } else { 0 }];
            for (b, ab) in accs.chunks_mut(BLOCK_ROWS * n).enumerate() {
                let rows = ab.len() / n;
                let xs = &mut xf[..rows * k];
                for (i, row) in xs.chunks_mut(k).enumerate() {
                    let r = i0 + b * BLOCK_ROWS + i;
                    match (x, &given) {
                        (Activations::Int8(rows), _) => widen_row(true, (rows(r), &[]), row),
                        (Activations::Values(_), Some(xs)) => {
                            row.copy_from_slice(&xs[r * k..(r + 1) * k])
                        }
                        (Activations::Values(fill), None) => fill(r, row),
                    }
                }
                let ys = if self.int8 {
                    &mut yf[..rows * n]
                } else {
                    as_f32(ab)
                };
                // Accumulating, the fp32 sum continues from the slot's value.
                let fresh = !accumulate || self.int8;
                if fresh && direct {
                    ys.fill(0.0);
                }
                let canonical = if direct && self.transpose {
                    from_bytes_transposed(self.int8, &raw, n, xs, ys);
                    false
                } else if direct {
                    from_bytes(self.int8, &raw, n, xs, ys);
                    false
                } else {
                    product(w, panels, n, xs, ys, fresh)
                };
                if self.int8 {
                    store_int8(accumulate, ab, &yf[..rows * n]);
                } else if !canonical {
                    canonical_nans(as_f32(ab));
                }
                if let Some(ps) = planes.take() {
                    let (these, rest) = split_planes(ps, ab.len());
                    byte_planes(&[ab], these);
                    planes = Some(rest);
                }
            }
        });
    }
}

/// The slots' raw bits as the fp32 values they hold.
fn as_f32(bits: &mut [u32]) -> &mut [f32] {
    // SAFETY: f32 and u32 have the same size and alignment and every bit pattern is a
    // valid value of both, so the same memory, for the same lifetime and with the
    // same exclusive borrow, is a valid slice of as many f32.
    unsafe { std::slice::from_raw_parts_mut(bits.as_mut_ptr().cast::<f32>(), bits.len()) }
}

/// [`gemm`] with the weights given as installed bytes (`used` rows of `raw`, then zero
/// rows): each weight row is widened once into a buffer that stays in L1 and added into
/// every result row, y[r][c] += x[r][k] * w[k][c] for k in order, so the bits are gemm's.
///
/// The zero rows are not multiplied one by one. Adding x * 0 (that is, +0 or -0 for a
/// finite x) leaves every sum as it is, except that -0 + +0 is +0; and once a sum is +0,
/// adding zeros keeps it +0. So for a row of activations whose tail (k >= `used`) is
/// finite, the tail's whole effect is: if some product is +0 (some x[k] has its sign bit
/// clear), sums that are -0 become +0. A row with an infinity or NaN in its tail takes
/// the plain loop (0 x inf is NaN).
fn from_bytes(int8: bool, rows: &[RowWords<'_>], n: usize, x: &[f32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if avx512::available() {
        // Up to 6 rows at a time, their sums in registers together.
        let mut r0 = 0;
        let m = y.len() / n;
        while r0 < m {
            let (xs, ys) = (&x[r0 * n..], &mut y[r0 * n..]);
            // Five rows go as 4 + 1: the kernel has no 5-row form.
            let r = match m - r0 {
                5 => 4,
                left => left.min(6),
            };
            // SAFETY: `available()` found AVX-512 F, AVX2 and FMA on this CPU, the
            // target features the function requires; it reads memory out of slices
            // only where it asserted the bounds first.
            unsafe {
                match r {
                    1 => avx512::from_bytes_block::<1>(int8, rows, n, xs, ys),
                    2 => avx512::from_bytes_block::<2>(int8, rows, n, xs, ys),
                    3 => avx512::from_bytes_block::<3>(int8, rows, n, xs, ys),
                    4 => avx512::from_bytes_block::<4>(int8, rows, n, xs, ys),
                    _ => avx512::from_bytes_block::<6>(int8, rows, n, xs, ys),
                }
            }
            r0 += r;
        }
        for (xr, yr) in x.chunks_exact(n).zip(y.chunks_exact_mut(n)) {
            add_zero_products(&xr[rows.len().min(n)..], yr);
        }
        return;
    }
    from_bytes_rows(int8, rows, n, x, y)
}

/// [`from_bytes`] on any CPU, for any number of rows.
#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq+fma",
    "x86_64+avx2+fma",
    "aarch64+neon"
))]
fn from_bytes_rows(int8: bool, rows: &[(&[u8], &[u8])], n: usize, x: &[f32], y: &mut [f32]) {
    let used = rows.len().min(n);
    let mut wr = vec![0f32; n];
    for (kk, row) in rows[..used].iter().enumerate() {
        widen_row(int8, *row, &mut wr);
        for (xr, yr) in x.chunks_exact(n).zip(y.chunks_exact_mut(n)) {
            let xv = xr[kk];
            for (a, wv) in yr.iter_mut().zip(&wr) {
                *a = mac(*a, xv, *wv);
            }
        }
    }
    for (xr, yr) in x.chunks_exact(n).zip(y.chunks_exact_mut(n)) {
        add_zero_products(&xr[used..], yr);
    }
}

/// y[c] += x[k] * 0 for every k in order and every c, as [`from_bytes`] explains.
fn add_zero_products(x: &[f32], y: &mut [f32]) {
    // Folds rather than `any`, which stops early and so does not vectorise (this was a
    // quarter of a transposed product's time).
    if x.iter().fold(false, |a, v| a | !v.is_finite()) {
        for xv in x {
            y.iter_mut().for_each(|a| *a += xv * 0.0);
        }
    } else if x.iter().fold(false, |a, v| a | v.is_sign_positive()) {
        y.iter_mut()
            .filter(|a| a.to_bits() == 0x8000_0000)
            .for_each(|a| *a = 0.0);
    }
}

/// Buffer rows a transposed direct product widens and turns k-major at a time.
const T_ROWS: usize = 16;

/// `rows`, T_ROWS rows of n values, k-major into `wt`: wt[k * 16 + i] = rows[i * n + k].
/// In 16 x 16 tiles of fixed-size arrays, which compile without bounds checks.
#[inline(always)]
fn transpose_block(rows: &[f32], n: usize, wt: &mut [f32]) {
    const B: usize = T_ROWS;
    let whole = n / B * B;
    for k0 in (0..whole).step_by(B) {
        let src: [&[f32; B]; B] =
            std::array::from_fn(|i| rows[i * n + k0..i * n + k0 + B].try_into().expect("16"));
        let dst: &mut [f32; B * B] = (&mut wt[k0 * B..(k0 + B) * B]).try_into().expect("256");
        for kk in 0..B {
            for i in 0..B {
                dst[kk * B + i] = src[i][kk];
            }
        }
    }
    for k in whole..n {
        for i in 0..B {
            wt[k * B + i] = rows[i * n + k];
        }
    }
}

/// [`from_bytes`] for a transposed install (buffer row c is array column c): a block of
/// buffer rows is widened and turned k-major in L1, then each result row's block of
/// lanes sums x[r][k] * w[k][c] over k in order, so the bits are gemm's. A decode step
/// multiplies one query by its K cache this way; widening the whole array to fp32
/// first wrote 400 KB one value at a time for one product. The array's columns past
/// the `used` rows are zero (see [`add_zero_products`]).
#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq+fma",
    "x86_64+avx2+fma",
    "aarch64+neon"
))]
fn from_bytes_transposed(int8: bool, raw: &[(&[u8], &[u8])], n: usize, x: &[f32], y: &mut [f32]) {
    const B: usize = T_ROWS;
    let cols = raw.len().min(n);
    let mut rows = vec![0f32; B * n];
    let mut wt = vec![0f32; n * B];
    for c0 in (0..cols).step_by(B) {
        let nb = B.min(cols - c0);
        for (i, out) in rows.chunks_exact_mut(n).enumerate() {
            if i < nb {
                widen_row(int8, raw[c0 + i], out);
            } else {
                out.fill(0.0);
            }
        }
        transpose_block(&rows, n, &mut wt);
        // Up to ROWS result rows at once: their sums are independent chains.
        for (xs, ys) in x.chunks(ROWS * n).zip(y.chunks_mut(ROWS * n)) {
            let b = Block {
                xs,
                ys,
                wt: &wt,
                n,
                c0,
                nb,
            };
            match xs.len() / n {
                1 => b.sum::<1>(),
                2 => b.sum::<2>(),
                3 => b.sum::<3>(),
                4 => b.sum::<4>(),
                5 => b.sum::<5>(),
                _ => b.sum::<ROWS>(),
            }
        }
    }
    for (xr, yr) in x.chunks_exact(n).zip(y.chunks_exact_mut(n)) {
        add_zero_products(xr, &mut yr[cols..]);
    }
}

/// R result rows of a transposed product and a block of its columns (see
/// [`from_bytes_transposed`]): `wt` holds the block's weights k-major.
struct Block<'a> {
    xs: &'a [f32],
    ys: &'a mut [f32],
    wt: &'a [f32],
    n: usize,
    c0: usize,
    nb: usize,
}

impl Block<'_> {
    /// y[r][c0 + i] += x[r][k] * wt[k][i] for k in order. R is a constant so that the
    /// R rows of sums (one vector register each) stay in registers through k: with R
    /// taken from the data they were stored and loaded again for every k, and a decode
    /// step's attention scores took 34,000 time-stamp ticks a product.
    #[inline(always)]
    fn sum<const R: usize>(self) {
        const B: usize = T_ROWS;
        let Block {
            xs,
            ys,
            wt,
            n,
            c0,
            nb,
        } = self;
        let mut acc = [[0f32; B]; R];
        for (a, yr) in acc.iter_mut().zip(ys.chunks_exact(n)) {
            a[..nb].copy_from_slice(&yr[c0..c0 + nb]);
        }
        let xs: [&[f32]; R] = std::array::from_fn(|r| &xs[r * n..(r + 1) * n]);
        for (k, wk) in wt.chunks_exact(B).enumerate().take(n) {
            let wk: &[f32; B] = wk.try_into().expect("16");
            for r in 0..R {
                let xv = xs[r][k];
                for i in 0..B {
                    acc[r][i] = mac(acc[r][i], xv, wk[i]);
                }
            }
        }
        for (a, yr) in acc.iter().zip(ys.chunks_exact_mut(n)) {
            yr[c0..c0 + nb].copy_from_slice(&a[..nb]);
        }
    }
}

/// a + x * w, for x * w a product of two fp16 (or int8) values: one fused multiply-add,
/// which gives the bits of the separate multiply and add because such a product is
/// exact in fp32 (see [`avx512::gemm`]), and takes one instruction where there is one.
#[inline(always)]
fn mac(a: f32, x: f32, w: f32) -> f32 {
    x.mul_add(w, a)
}

/// Sums `y` of int8 products (exact integers, see above) into the slots' raw bits
/// `acc`, accumulated with wrapping like the hardware's int32.
#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq",
    "x86_64+avx2",
    "aarch64+neon"
))]
fn store_int8(accumulate: bool, acc: &mut [u32], y: &[f32]) {
    for (a, v) in acc.iter_mut().zip(y) {
        let v = *v as i32;
        *a = (if accumulate {
            (*a as i32).wrapping_add(v)
        } else {
            v
        }) as u32;
    }
}

/// fp32 sums with every NaN made the canonical one (the hardware's default NaN
/// differs between platforms: x86 gives 0xffc00000 for inf * 0; the bits must not).
#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq",
    "x86_64+avx2",
    "aarch64+neon"
))]
fn canonical_nans(y: &mut [f32]) {
    // A select per value rather than a branch: the loop vectorises.
    let nan = f32::from_bits(crate::numerics::F32_NAN);
    for v in y.iter_mut() {
        *v = if v.is_nan() { nan } else { *v };
    }
}

/// 32-bit results as four byte planes (plane b holds byte b of every value, row after
/// row), as they leave on a stream group: each of `out` holds as many bytes as `rows`
/// values. A single `acc`, a batch of them and the product threads split results here.
pub fn byte_planes(rows: &[&[u32]], out: [&mut [u8]; 4]) {
    let [p0, p1, p2, p3] = out;
    #[cfg(target_arch = "x86_64")]
    let simd = std::is_x86_feature_detected!("avx512f");
    let mut at = 0;
    for row in rows {
        let r = at..at + row.len();
        let mut z = [
            &mut p0[r.clone()],
            &mut p1[r.clone()],
            &mut p2[r.clone()],
            &mut p3[r],
        ];
        let mut done = 0;
        #[cfg(target_arch = "x86_64")]
        if simd {
            // SAFETY: AVX-512 F was found on this CPU just above.
            done = unsafe { byte_planes_avx512(row, &mut z) };
        }
        for (e, v) in row.iter().enumerate().skip(done) {
            [z[0][e], z[1][e], z[2][e], z[3][e]] = v.to_le_bytes();
        }
        at += row.len();
    }
}

/// [`byte_planes`] of one row, 16 values at a time (each shifted and narrowed to its
/// bytes); returns how many values it did (the rest are fewer than 16).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn byte_planes_avx512(row: &[u32], z: &mut [&mut [u8]; 4]) -> usize {
    use std::arch::x86_64::*;
    let whole = row.len() / 16 * 16;
    for (i, v) in row[..whole].chunks_exact(16).enumerate() {
        let v: &[u32; 16] = v.try_into().expect("16");
        // SAFETY: `v` is 16 readable u32s; the load has no alignment need.
        let v = unsafe { _mm512_loadu_si512(v.as_ptr().cast()) };
        let bytes = [
            _mm512_cvtepi32_epi8(v),
            _mm512_cvtepi32_epi8(_mm512_srli_epi32::<8>(v)),
            _mm512_cvtepi32_epi8(_mm512_srli_epi32::<16>(v)),
            _mm512_cvtepi32_epi8(_mm512_srli_epi32::<24>(v)),
        ];
        for (plane, b) in z.iter_mut().zip(bytes) {
            let out: &mut [u8; 16] = (&mut plane[i * 16..i * 16 + 16]).try_into().expect("16");
            // SAFETY: `out` is 16 writable bytes; the store has no alignment need.
            unsafe { _mm_storeu_si128(out.as_mut_ptr().cast(), b) };
        }
    }
    whole
}

/// Activation vectors for [`Weights::apply`].
#[derive(Clone, Copy)]
pub enum Activations<'a> {
    /// int8 vectors as raw bytes: row i is `rows(i)` (K bytes).
    Int8(&'a (dyn Fn(usize) -> &'a [u8] + Sync)),
    /// Values exact in fp32 (fp16 activations): `fill(i, row)` writes row i.
    Values(&'a (dyn Fn(usize, &mut [f32]) + Sync)),
}

/// One weight-buffer row as values: int8 bytes, or fp16 as two byte planes (low bytes,
/// high bytes).
fn widen_row(int8: bool, (lo, hi): (&[u8], &[u8]), out: &mut [f32]) {
    if int8 {
        out.iter_mut()
            .zip(lo)
            .for_each(|(o, b)| *o = *b as i8 as f32);
    } else {
        widen_f16(lo, hi, out);
    }
}

/// fp16 values given as their low and high bytes, widened exactly to fp32 (every weight
/// row and every fp16 activation goes through it). Where the CPU has AVX-512 this is
/// its conversion instruction, which keeps a NaN's payload where
/// [`crate::numerics::f16_to_f32`] gives the canonical NaN: the MXM cannot tell, since
/// a NaN operand makes the sum NaN, and sums are stored canonical (see [`store`]).
pub fn widen_f16(lo: &[u8], hi: &[u8], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if avx512::available() {
        // SAFETY: `available()` found AVX-512 F on this CPU, the only target feature
        // the function requires; it touches memory only through checked slices.
        return unsafe { avx512::widen_f16(lo, hi, out) };
    }
    widen_f16_portable(lo, hi, out)
}

/// [`widen_f16`] in integer steps, compiled to vector code.
#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq",
    "x86_64+avx2",
    "aarch64+neon"
))]
fn widen_f16_portable(lo: &[u8], hi: &[u8], out: &mut [f32]) {
    for ((o, l), h) in out.iter_mut().zip(lo).zip(hi) {
        *o = f32::from_bits(crate::numerics::f16_to_f32_bits(
            *l as u16 | (*h as u16) << 8,
        ));
    }
}

/// Four byte planes of results (see [`byte_planes`]).
pub type Planes<'a> = [&'a mut [u8]; 4];

/// The first `at` bytes of each plane, and the rest.
fn split_planes(planes: Planes<'_>, at: usize) -> (Planes<'_>, Planes<'_>) {
    let [a, b, c, d] = planes.map(|p| p.split_at_mut(at));
    ([a.0, b.0, c.0, d.0], [a.1, b.1, c.1, d.1])
}

/// `f(first, rows, their planes)` over pieces of the rows of `acc` (rows of `n`
/// values) and the same rows of `planes` (`n` bytes each), on several threads when
/// there are enough rows, the calling thread one of them once it has run `side`. Rows
/// are independent, so splitting them cannot change a bit.
fn par_rows(
    acc: &mut [u32],
    n: usize,
    mut planes: Option<Planes<'_>>,
    side: Option<&mut dyn FnMut()>,
    f: impl Fn(usize, &mut [u32], Option<Planes<'_>>) + Sync,
) {
    let m = acc.len() / n.max(1);
    let threads = threads().min(m / ROWS_PER_THREAD).max(1);
    if threads == 1 {
        if let Some(side) = side {
            side();
        }
        return f(0, acc, planes);
    }
    let per = PIECE_ROWS.min(m.div_ceil(threads));
    let mut pieces = Vec::new();
    for (i, ys) in acc.chunks_mut(per * n).enumerate() {
        let mine = planes.take().map(|ps| {
            let (mine, rest) = split_planes(ps, ys.len());
            planes = Some(rest);
            mine
        });
        pieces.push((i * per, ys, mine));
    }
    let queue = Mutex::new(pieces.into_iter());
    let work = || loop {
        // A panic on another thread cannot leave the iterator inconsistent.
        let piece = queue.lock().unwrap_or_else(|e| e.into_inner()).next();
        let Some((i0, ys, planes)) = piece else {
            return;
        };
        f(i0, ys, planes);
    };
    std::thread::scope(|s| {
        for _ in 1..threads {
            s.spawn(work);
        }
        if let Some(side) = side {
            side();
        }
        work();
    });
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
                        *a = mac(*a, xv, *wv);
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
            *a = mac(*a, *xv, *wv);
        }
    }
}

/// How the register-tiled kernels cover `m` rows x `blocks` registers of results: tiles
/// of `r` rows x `b` registers where they fit, else single rows of `b` registers, else
/// single registers. Calls `tile(rows, registers, first row, first register)`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn for_tiles(
    m: usize,
    blocks: usize,
    r: usize,
    b: usize,
    mut tile: impl FnMut(usize, usize, usize, usize),
) {
    let mut r0 = 0;
    while r0 < m {
        let rows = r.min(m - r0);
        let mut b0 = 0;
        while b0 < blocks {
            let nb = b.min(blocks - b0);
            if rows == r && nb == b {
                tile(r, b, r0, b0);
            } else if nb == b {
                (r0..r0 + rows).for_each(|i| tile(1, b, i, b0));
            } else {
                for i in r0..r0 + rows {
                    (b0..b0 + nb).for_each(|j| tile(1, 1, i, j));
                }
            }
            b0 += nb;
        }
        r0 += rows;
    }
}

/// [`gemm`] on the best kernel this CPU has; all give the same bits. `panels`, if
/// given, is `w` as [`Weights::panels`] lays it out, for the AVX-512 kernel. With
/// `fresh` the sums start from zero, not from the values in `y`. Returns whether every
/// NaN in `y` is now canonical (see [`canonical_nans`]).
fn product(
    w: &[f32],
    panels: Option<&[f32]>,
    n: usize,
    x: &[f32],
    y: &mut [f32],
    fresh: bool,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if avx512::available() {
        // SAFETY: `available()` found AVX-512 F and FMA on this CPU, the target features
        // the kernel requires; it reads memory out of slices only where it asserted the
        // bounds first.
        unsafe { avx512::gemm(w, panels, n, x, y, fresh) };
        return n.is_multiple_of(avx512::L);
    }
    let _ = panels;
    if fresh {
        y.fill(0.0);
    }
    gemm(w, n, x, y);
    false
}

/// [`gemm`] written with AVX-512 operations: the same sums in the same order (so the
/// same bits), with each 64-lane row of weights loaded into registers once per k. The
/// compiler's version of `gemm` reloads the weights for every activation row, and on an
/// AMD EPYC takes twice as long.
///
/// Each multiply and add is one fused multiply-add. That rounds once, where `gemm`
/// rounds the product and then the sum; but every product here is exact in fp32 (fp16
/// values have 11 significant bits, so a product has at most 22, and its exponent,
/// -48 to 32, is well inside fp32's normal range; int8 products are small integers), so
/// rounding it changes nothing and both give the same bits, zeros' signs, infinities and
/// NaNs included. On a 2-core Intel Xeon VM, fusing them took the streaming fp16 matmul
/// benchmark from 82 to 69 ms.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// Lanes per register; the tiles of `gemm`, ROWS x COLS results (6 x 4 registers).
    pub(super) const L: usize = super::REG_LANES;
    const R: usize = super::ROWS;
    const B: usize = super::COLS / L;
    /// Rows of weights per block of k (see `gemm`).
    const KC: usize = 64;
    /// Registers of sums `from_bytes_row` keeps per pass over k (of AVX-512's 32; the
    /// others widen the weights): 320 lanes.
    const SUM_REGS: usize = 20;
    /// Rows ahead that `from_bytes_row` asks the CPU to fetch.
    const AHEAD: usize = 8;

    pub(super) fn available() -> bool {
        std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
    }

    /// 16 fp16 values from their low and high bytes: bytes widened to 32 bits, the high
    /// ones shifted over the low ones, narrowed to 16 bits and converted.
    #[target_feature(enable = "avx512f")]
    fn f16x16(lo: __m128i, hi: __m128i) -> __m512 {
        let bits = _mm512_or_si512(
            _mm512_cvtepu8_epi32(lo),
            _mm512_slli_epi32::<8>(_mm512_cvtepu8_epi32(hi)),
        );
        _mm512_cvtph_ps(_mm512_cvtepi32_epi16(bits))
    }

    /// [`super::widen_f16`], 16 values at a time (see `f16x16`).
    #[target_feature(enable = "avx512f")]
    pub(super) fn widen_f16(lo: &[u8], hi: &[u8], out: &mut [f32]) {
        let n = out.len().min(lo.len()).min(hi.len());
        let whole = n / L * L;
        let blocks = out[..whole]
            .chunks_exact_mut(L)
            .zip(lo.chunks_exact(L).zip(hi.chunks_exact(L)));
        for (o, (l, h)) in blocks {
            let (l, h): (&[u8; L], &[u8; L]) =
                (l.try_into().expect("16"), h.try_into().expect("16"));
            // SAFETY: `l` and `h` are 16 readable bytes each; the loads have no
            // alignment need.
            let (lv, hv) = unsafe {
                (
                    _mm_loadu_si128(l.as_ptr().cast()),
                    _mm_loadu_si128(h.as_ptr().cast()),
                )
            };
            let v = f16x16(lv, hv);
            let o: &mut [f32; L] = o.try_into().expect("16");
            // SAFETY: `o` is 16 writable f32s; the store has no alignment need.
            unsafe { _mm512_storeu_ps(o.as_mut_ptr(), v) };
        }
        super::widen_f16_portable(&lo[whole..n], &hi[whole..n], &mut out[whole..n]);
    }

    /// [`super::from_bytes`] for R rows of activations (x and y R x n): the sums stay
    /// in registers (R x NB of them per pass over k, 320 lanes in one pass for one row)
    /// while each weight row is widened 16 lanes at a time straight into its
    /// multiply-adds, y[r][c] += x[r][k] * w[k][c] for k in order, so the bits are the
    /// plain loop's. A decode step multiplies every weight once this way; widening each
    /// row into memory and adding it from there took half as many instructions again.
    /// Lanes past the last whole register take the plain loop. Leaves the zero rows past
    /// `used` to the caller.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) fn from_bytes_block<const R: usize>(
        int8: bool,
        rows: &[super::RowWords<'_>],
        n: usize,
        x: &[f32],
        y: &mut [f32],
    ) {
        let rows = &rows[..rows.len().min(n)];
        // Each row's words hold n bytes, x and y R rows of n: the kernel reads them
        // through pointers.
        assert!(
            x.len() >= R * n
                && y.len() >= R * n
                && rows
                    .iter()
                    .all(|(lo, hi)| lo.len() >= n && (int8 || hi.len() >= n))
        );
        // Registers of sums per row and pass: all 32 registers but those that widen the
        // weights and hold the activations.
        let most = match R {
            1 => SUM_REGS,
            2 => 10,
            3 => 8,
            4 => 6,
            _ => 4,
        };
        let blocks = n / L;
        let mut b0 = 0;
        while b0 < blocks {
            let left = blocks - b0;
            let pass = Pass {
                int8,
                rows,
                n,
                x,
                c0: b0 * L,
            };
            // SAFETY: the caller's CPU has the target features (see `from_bytes_block`),
            // every row has n bytes per word and x and y R x n values (asserted above).
            b0 += unsafe {
                match left.min(most) {
                    SUM_REGS.. => pass.run::<R, SUM_REGS>(y),
                    10.. => pass.run::<R, 10>(y),
                    8.. => pass.run::<R, 8>(y),
                    6.. => pass.run::<R, 6>(y),
                    4.. => pass.run::<R, 4>(y),
                    2.. => pass.run::<R, 2>(y),
                    _ => pass.run::<R, 1>(y),
                }
            };
        }
        let c0 = blocks * L;
        if c0 < n {
            let mut wr = vec![0f32; n];
            for (k, row) in rows.iter().enumerate() {
                super::widen_row(int8, *row, &mut wr);
                for r in 0..R {
                    let xk = x[r * n + k];
                    for (a, wv) in y[r * n + c0..(r + 1) * n].iter_mut().zip(&wr[c0..]) {
                        *a = super::mac(*a, xk, *wv);
                    }
                }
            }
        }
    }

    /// Each pair of registers (32 lanes) between lane order and the order two byte
    /// unpacks give (lanes 0-7 and 16-23 in the first, 8-15 and 24-31 in the second):
    /// the same exchange of halves both ways.
    #[target_feature(enable = "avx512f")]
    fn swap_halves(acc: &mut [__m512]) {
        let first = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23);
        let second =
            _mm512_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
        for p in acc.chunks_exact_mut(2) {
            let (a, b) = (p[0], p[1]);
            p[0] = _mm512_permutex2var_ps(a, first, b);
            p[1] = _mm512_permutex2var_ps(a, second, b);
        }
    }

    /// One pass of [`from_bytes_block`] over k, for the registers of lanes from `c0`.
    struct Pass<'a> {
        int8: bool,
        rows: &'a [super::RowWords<'a>],
        n: usize,
        x: &'a [f32],
        c0: usize,
    }

    impl Pass<'_> {
        /// Sums NB registers of lanes of R rows into `y` (R x n); returns NB.
        ///
        /// # Safety
        /// Each of `rows`' words must hold at least n bytes (fp16 rows both); x must
        /// hold R rows of n values.
        #[target_feature(enable = "avx512f,avx2,fma")]
        unsafe fn run<const R: usize, const NB: usize>(&self, y: &mut [f32]) -> usize {
            let Pass {
                int8,
                rows,
                n,
                x,
                c0,
            } = *self;
            // The loops write no value outside these bounds, checked once here.
            assert!(c0 + NB * L <= n && y.len() >= R * n && x.len() >= R * n && rows.len() <= n);
            let (xp, yp) = (x.as_ptr(), y.as_mut_ptr());
            // fp16 rows take 32 lanes at a time: their low and high bytes interleaved
            // by two unpacks give lanes 0-7 and 16-23 in one register, 8-15 and 24-31
            // in the other, each converted whole; the two sums keep that order and
            // are put back in lane order at the end (half the shuffles of `f16x16`).
            let pairs = !int8 && NB.is_multiple_of(2);
            let mut acc = [[_mm512_setzero_ps(); NB]; R];
            for (r, acc) in acc.iter_mut().enumerate() {
                for (b, a) in acc.iter_mut().enumerate() {
                    // SAFETY: lanes c0 + b * L.. + L of row r are within y (asserted
                    // above); the load has no alignment need.
                    *a = unsafe { _mm512_loadu_ps(yp.add(r * n + c0 + b * L)) };
                }
                if pairs {
                    swap_halves(acc);
                }
            }
            for (k, (lo, hi)) in rows.iter().enumerate() {
                // The weights come from memory, a row from each of 16 SRAM pages in
                // turn, which the CPU's prefetchers do not follow: ask for the lines of
                // the row AHEAD rows on. (A decode step's one-vector products, timed
                // alone: 22 us each before, 19 with this, 17 with the unpacks too.)
                if let Some((plo, phi)) = rows.get(k + AHEAD) {
                    for c in (c0..c0 + NB * L).step_by(64) {
                        // A prefetch reads nothing and cannot fault (c < n anyway).
                        _mm_prefetch::<_MM_HINT_T0>(plo.as_ptr().wrapping_add(c).cast());
                        if !int8 {
                            _mm_prefetch::<_MM_HINT_T0>(phi.as_ptr().wrapping_add(c).cast());
                        }
                    }
                }
                let mut xv = [_mm512_setzero_ps(); R];
                for (r, v) in xv.iter_mut().enumerate() {
                    // SAFETY: k < rows.len() <= n, so r * n + k is within x (asserted).
                    *v = _mm512_set1_ps(unsafe { *xp.add(r * n + k) });
                }
                let (lo, hi) = (lo.as_ptr(), hi.as_ptr());
                if pairs {
                    for j in 0..NB / 2 {
                        let c = c0 + 2 * j * L;
                        // SAFETY: bytes c.. + 2L of each word are within its n bytes
                        // (the caller's promise), as c + 2L <= c0 + NB * L <= n; the
                        // loads have no alignment need.
                        let (l, h) = unsafe {
                            (
                                _mm256_loadu_si256(lo.add(c).cast()),
                                _mm256_loadu_si256(hi.add(c).cast()),
                            )
                        };
                        let wa = _mm512_cvtph_ps(_mm256_unpacklo_epi8(l, h));
                        let wb = _mm512_cvtph_ps(_mm256_unpackhi_epi8(l, h));
                        for (acc, xv) in acc.iter_mut().zip(&xv) {
                            acc[2 * j] = _mm512_fmadd_ps(*xv, wa, acc[2 * j]);
                            acc[2 * j + 1] = _mm512_fmadd_ps(*xv, wb, acc[2 * j + 1]);
                        }
                    }
                    continue;
                }
                for b in 0..NB {
                    let c = c0 + b * L;
                    // SAFETY: bytes c.. + L of each word are within its n bytes (the
                    // caller's promise), as c + L <= n; the loads have no alignment
                    // need.
                    let w = unsafe {
                        if int8 {
                            let v = _mm_loadu_si128(lo.add(c).cast());
                            _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(v))
                        } else {
                            let l = _mm_loadu_si128(lo.add(c).cast());
                            let h = _mm_loadu_si128(hi.add(c).cast());
                            f16x16(l, h)
                        }
                    };
                    // One rounding, as the separate multiply and add (see `gemm`).
                    for (acc, xv) in acc.iter_mut().zip(&xv) {
                        acc[b] = _mm512_fmadd_ps(*xv, w, acc[b]);
                    }
                }
            }
            for (r, acc) in acc.iter_mut().enumerate() {
                if pairs {
                    swap_halves(acc);
                }
                for (b, a) in acc.iter().enumerate() {
                    // SAFETY: as the loads above; the store has no alignment need.
                    unsafe { _mm512_storeu_ps(yp.add(r * n + c0 + b * L), *a) };
                }
            }
            NB
        }
    }

    /// With `panels` ([`super::Weights::panels`]: N must be whole registers), the tiles
    /// read their weights from those. The tiles store NaNs canonical (the lanes past the
    /// last whole register, if any, are left as they come).
    ///
    /// With `fresh` the sums start from zero (the tiles do not read `y`: for a product
    /// into memory not in cache, reading it first costs as much as the store).
    #[target_feature(enable = "avx512f,fma")]
    pub(super) fn gemm(
        w: &[f32],
        panels: Option<&[f32]>,
        n: usize,
        x: &[f32],
        y: &mut [f32],
        fresh: bool,
    ) {
        let m = y.len() / n;
        let k = x.len() / m.max(1);
        let blocks = n / L;
        // Where register b's weights for k = 0 are, and the step to the next k.
        let (wt, step) = match panels {
            Some(p) => (p, B * L),
            None => (w, n),
        };
        let ws = |b: usize| Wts {
            w: wt,
            at: match panels {
                Some(_) => b / B * k * B * L + b % B * L,
                None => b * L,
            },
            step,
        };
        // A block of KC rows of one panel's weights (16 KB) stays in L1 while every row
        // of activations goes through it; the sums go to `y` and come back between
        // blocks, exact as fp32, so the order over k and the bits are the same as one
        // pass. With the whole of k per tile, the weights came from L2 for every tile
        // and the loop waited on them. (With this, and the tile's registers in plain
        // arrays rather than built by array::from_fn, the kernel alone on 2 threads
        // and 25,000 rows of 320: 29-31 -> 24-25 ms.)
        let mut b0 = 0;
        while b0 < blocks {
            let nb = B.min(blocks - b0);
            let mut k0 = 0;
            loop {
                let k1 = (k0 + KC).min(k);
                let span = Span {
                    k0,
                    k1,
                    load: k0 > 0 || !fresh,
                    last: k1 == k,
                };
                let mut r0 = 0;
                while r0 < m {
                    if nb < B {
                        (b0..b0 + nb).for_each(|b| tile::<1, 1>(ws(b), n, x, k, y, r0, b, span));
                        r0 += 1;
                    } else if m - r0 >= R {
                        tile::<R, B>(ws(b0), n, x, k, y, r0, b0, span);
                        r0 += R;
                    } else {
                        tile::<1, B>(ws(b0), n, x, k, y, r0, b0, span);
                        r0 += 1;
                    }
                }
                if span.last {
                    break;
                }
                k0 = k1;
            }
            b0 += nb;
        }
        // Lanes past the last whole register.
        if blocks * L < n {
            for r in 0..m {
                let (xr, yr) = (&x[r * k..(r + 1) * k], &mut y[r * n..(r + 1) * n]);
                if fresh {
                    yr[blocks * L..].fill(0.0);
                }
                super::axpy_rows(w, n, blocks * L, xr, yr);
            }
        }
    }

    /// A tile's weights: register b of row k at `w[at + k * step + b * L]`.
    struct Wts<'a> {
        w: &'a [f32],
        at: usize,
        step: usize,
    }

    /// Which k a tile sums over, whether it starts from the values in `y` (else from
    /// zero) and whether it is the last span of k (its stores make NaNs canonical).
    #[derive(Clone, Copy)]
    struct Span {
        k0: usize,
        k1: usize,
        load: bool,
        last: bool,
    }

    /// Rows r0.. (RR of them) times lane registers b0.. (BB of them), over the span of
    /// k, with the weights `ws` (x and y rows have k and n values).
    #[target_feature(enable = "avx512f,fma")]
    #[allow(clippy::too_many_arguments)]
    fn tile<const RR: usize, const BB: usize>(
        ws: Wts<'_>,
        n: usize,
        x: &[f32],
        k: usize,
        y: &mut [f32],
        r0: usize,
        b0: usize,
        span: Span,
    ) {
        let Wts { w, at: w_at, step } = ws;
        let Span { k0, k1, load, last } = span;
        let c0 = b0 * L;
        // The loops read and write no value outside these bounds, checked once here:
        // checks per value were half the loop's instructions, and the loop runs at the
        // rate the CPU decodes them.
        assert!(c0 + BB * L <= n && (r0 + RR) * n <= y.len() && (r0 + RR) * k <= x.len());
        assert!(k1 <= k && (k1 == k0 || w_at + (k1 - 1) * step + BB * L <= w.len()));
        let (wp, xp, yp) = (w.as_ptr(), x.as_ptr(), y.as_mut_ptr());
        let mut acc = [[_mm512_setzero_ps(); BB]; RR];
        if load {
            for (r, a) in acc.iter_mut().enumerate() {
                for (b, a) in a.iter_mut().enumerate() {
                    // SAFETY: row r0 + r, lanes c0 + b * L.. + L are within y (asserted
                    // above); the load has no alignment need.
                    *a = unsafe { _mm512_loadu_ps(yp.add((r0 + r) * n + c0 + b * L)) };
                }
            }
        }
        for kk in k0..k1 {
            let mut wv = [_mm512_setzero_ps(); BB];
            for (b, v) in wv.iter_mut().enumerate() {
                // SAFETY: kk < k1 and b < BB, so these 16 values end at or before
                // w_at + (k1 - 1) * step + BB * L, within w (asserted above); the load
                // has no alignment need.
                *v = unsafe { _mm512_loadu_ps(wp.add(w_at + kk * step + b * L)) };
            }
            for (r, a) in acc.iter_mut().enumerate() {
                // SAFETY: row r0 + r of x has k values, within x (asserted above), and
                // kk < k1 <= k.
                let xb = _mm512_set1_ps(unsafe { *xp.add((r0 + r) * k + kk) });
                for (a, wv) in a.iter_mut().zip(&wv) {
                    // One rounding, as the separate multiply and add (see `gemm`).
                    *a = _mm512_fmadd_ps(xb, *wv, *a);
                }
            }
        }
        let nan = _mm512_set1_ps(f32::from_bits(crate::numerics::F32_NAN));
        for (r, a) in acc.iter().enumerate() {
            for (b, a) in a.iter().enumerate() {
                let v = if last {
                    _mm512_mask_mov_ps(*a, _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(*a, *a), nan)
                } else {
                    *a
                };
                // SAFETY: as the loads above; the store has no alignment need.
                unsafe { _mm512_storeu_ps(yp.add((r0 + r) * n + c0 + b * L), v) };
            }
        }
    }
}

/// The int8 product on the CPU's integer dot-product instructions (AVX-512 VNNI):
/// `vpdpbusd` multiplies 4 unsigned bytes by 4 signed bytes and adds the 4 products to
/// an int32 lane, 64 multiply-adds per instruction, four times the fp32 rate. The
/// activations are made unsigned by adding 128, and 128 x (the column's weight sum) is
/// taken off at the end. Every step is exact integer arithmetic (a sum of at most 1024
/// products of at most 2^15 is far below 2^31), so the result is the same integer as
/// the fp32 kernel's, in any order.
mod vnni {
    use super::Weights;

    /// Result lanes per register.
    const L: usize = super::REG_LANES;

    /// Weights laid out for the kernel: for block b of 16 result lanes and group j of 4
    /// k, the 16 x 4 weights lane-major (one 64-byte register) at `(b * kq + j) * 64`.
    #[derive(Clone, Debug)]
    pub struct Packed {
        n: usize,
        k: usize,
        kq: usize,
        w: Vec<i8>,
        /// 128 x the sum of each result lane's weights.
        bias: Vec<i32>,
    }

    impl Packed {
        /// Packed int8 weights, if they are int8, N is whole registers and the CPU has
        /// the instructions.
        pub fn new(wts: &Weights) -> Option<Packed> {
            let n = wts.n;
            if !wts.int8 || n == 0 || !n.is_multiple_of(L) || !available() {
                return None;
            }
            let values = wts.values();
            let k = values.len() / n;
            let kq = k.div_ceil(4);
            let mut w = vec![0i8; n * kq * 4];
            let mut bias = vec![0i32; n];
            for (kk, wrow) in values.chunks(n).enumerate() {
                for (c, (v, sum)) in wrow.iter().zip(bias.iter_mut()).enumerate() {
                    let v = *v as i8;
                    w[((c / L) * kq + kk / 4) * 64 + (c % L) * 4 + kk % 4] = v;
                    *sum += 128 * v as i32;
                }
            }
            Some(Packed { n, k, kq, w, bias })
        }

        /// The int32 sums of x (M int8 vectors, row i = `rows(i)`) times the weights into
        /// `acc` (M x N), added to its values with wrapping when `accumulate` (as the
        /// hardware's int32 accumulators), else replacing them. The threads store their
        /// own results: nothing is converted or copied afterwards.
        pub fn product<'a>(
            &self,
            m: usize,
            rows: &(dyn Fn(usize) -> &'a [u8] + Sync),
            acc: &mut [u32],
            accumulate: bool,
            planes: Option<super::Planes<'_>>,
            side: Option<&mut dyn FnMut()>,
        ) {
            let (n, kq) = (self.n, self.kq);
            assert!(acc.len() == m * n);
            thread_local! {
                static XU: std::cell::RefCell<Vec<u8>> = Default::default();
            }
            XU.with(|cell| {
                let xu = &mut *cell.borrow_mut();
                // Unsigned activations (x + 128 is the byte with its top bit flipped),
                // each row padded to whole groups of 4 (the padding meets zero weights).
                xu.resize(m * kq * 4, 0);
                for (i, row) in xu.chunks_mut(kq * 4).enumerate() {
                    for (u, b) in row.iter_mut().zip(&rows(i)[..self.k]) {
                        *u = b ^ 0x80;
                    }
                }
                let xu = &*xu;
                super::par_rows(acc, n, planes, side, |i0, ys, planes| {
                    let xs = &xu[i0 * kq * 4..(i0 + ys.len() / n) * kq * 4];
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: `Packed` exists only where `available()` found AVX-512 F,
                    // BW and VNNI on this CPU (see `new`), which is all the kernel's
                    // target features require; the kernel touches memory only through
                    // checked slices.
                    unsafe {
                        x86::gemm(self, xs, ys, accumulate)
                    }
                    #[cfg(not(target_arch = "x86_64"))]
                    unreachable!("packed weights are only made on x86_64");
                    if let Some(planes) = planes {
                        super::byte_planes(&[ys], planes);
                    }
                });
            })
        }
    }

    pub(super) fn available() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512bw")
                && std::is_x86_feature_detected!("avx512vnni")
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    }

    #[cfg(target_arch = "x86_64")]
    mod x86 {
        use super::{Packed, L};
        use std::arch::x86_64::*;

        /// Rows and 16-lane blocks per register tile: 4 x 4 accumulators.
        const R: usize = 4;
        const B: usize = 4;

        #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
        pub fn gemm(p: &Packed, xu: &[u8], y: &mut [u32], accumulate: bool) {
            let (n, row) = (p.n, p.kq * 4);
            let m = y.len() / n;
            let blocks = n / L;
            super::super::for_tiles(m, blocks, R, B, |rows, regs, r0, b0| match (rows, regs) {
                (R, B) => tile::<R, B>(p, xu, y, r0, b0, row, accumulate),
                (1, B) => tile::<1, B>(p, xu, y, r0, b0, row, accumulate),
                _ => tile::<1, 1>(p, xu, y, r0, b0, row, accumulate),
            });
        }

        /// Rows r0.. (RR of them) times lane blocks b0.. (BB of them), over all of k.
        #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
        fn tile<const RR: usize, const BB: usize>(
            p: &Packed,
            xu: &[u8],
            y: &mut [u32],
            r0: usize,
            b0: usize,
            row: usize,
            accumulate: bool,
        ) {
            let kq = p.kq;
            let mut acc = [[_mm512_setzero_si512(); BB]; RR];
            // Bounds are checked once, here, not per value (see `avx512::tile`): each row
            // of xs holds kq groups of 4 bytes, each of ws kq registers of 64.
            let xs: [&[u8]; RR] = std::array::from_fn(|r| &xu[(r0 + r) * row..(r0 + r + 1) * row]);
            let ws: [&[i8]; BB] =
                std::array::from_fn(|b| &p.w[(b0 + b) * kq * 64..(b0 + b + 1) * kq * 64]);
            assert!(row >= kq * 4);
            for j in 0..kq {
                let w: [__m512i; BB] = std::array::from_fn(|b| {
                    // SAFETY: j < kq, so bytes j * 64.. j * 64 + 64 lie within ws[b]'s
                    // kq * 64 (sliced above); the load has no alignment need.
                    unsafe { _mm512_loadu_si512(ws[b].as_ptr().add(j * 64).cast()) }
                });
                for (a, x) in acc.iter_mut().zip(&xs) {
                    // SAFETY: j < kq, so bytes j * 4..j * 4 + 4 lie within the row's
                    // row >= kq * 4 (sliced above, asserted); unaligned read.
                    let four = unsafe { x.as_ptr().add(j * 4).cast::<i32>().read_unaligned() };
                    let xb = _mm512_set1_epi32(i32::from_le(four));
                    for (a, w) in a.iter_mut().zip(&w) {
                        *a = _mm512_dpbusd_epi32(*a, xb, *w);
                    }
                }
            }
            for (r, a) in acc.iter().enumerate() {
                for (b, a) in a.iter().enumerate() {
                    let c = (b0 + b) * L;
                    let bias: &[i32; L] = p.bias[c..c + L].try_into().expect("16");
                    // SAFETY: `bias` is 16 readable i32s; unaligned load.
                    let mut v =
                        _mm512_sub_epi32(*a, unsafe { _mm512_loadu_si512(bias.as_ptr().cast()) });
                    let out: &mut [u32; L] = (&mut y[(r0 + r) * p.n + c..(r0 + r) * p.n + c + L])
                        .try_into()
                        .expect("16");
                    if accumulate {
                        // SAFETY: `out` is 16 readable u32s; unaligned load. The add
                        // wraps, as the int32 accumulators do.
                        v = _mm512_add_epi32(v, unsafe { _mm512_loadu_si512(out.as_ptr().cast()) });
                    }
                    // SAFETY: `out` is 16 writable u32s; unaligned store.
                    unsafe { _mm512_storeu_si512(out.as_mut_ptr().cast(), v) };
                }
            }
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
        // Ragged sizes exercise the block edges; fp32 sums of values of many magnitudes
        // are order-sensitive, so equal bits show the order is the same. The values are
        // fp16 (11 significant bits, exponents -24..-9 and up), as the MXM's always are.
        let fp16 = |i: usize, s: usize| {
            let v = ((i * s) % 2047) as f32 * 2f32.powi((i * 31 % 16) as i32 - 24);
            if i.is_multiple_of(3) {
                -v
            } else {
                v
            }
        };
        // 1,000 rows are several pieces per thread, the last one short.
        for (m, n) in [(1, 70), (7, 64), (9, 130), (300, 320), (1000, 96)] {
            let k = n;
            let w: Vec<f32> = (0..k * n).map(|i| fp16(i, 7919)).collect();
            let x: Vec<f32> = (0..m * k).map(|i| fp16(i, 104_729)).collect();
            let mut want = vec![0.5f32; m * n];
            naive(&w, n, &x, &mut want);
            let wts = Weights::new(false, n, w);
            let mut got: Vec<u32> = vec![0.5f32.to_bits(); m * n];
            let fill = |i: usize, r: &mut [f32]| r.copy_from_slice(&x[i * k..(i + 1) * k]);
            // Work handed to the calling thread runs once, whatever the threads do.
            let mut sides = 0;
            let mut side = || sides += 1;
            let x = Activations::Values(&fill);
            wts.apply_split(m, x, &mut got, true, None, Some(&mut side));
            assert_eq!(sides, 1);
            assert!(
                got.iter().zip(&want).all(|(g, w)| *g == w.to_bits()),
                "{m}x{n}"
            );
        }
    }

    #[test]
    fn int8_integer_kernel_matches_the_fp32_kernel() {
        // Random int8 values, both extremes, and row/lane counts that leave partial tiles.
        for (m, n) in [(1, 16), (3, 48), (4, 64), (9, 80), (70, 320)] {
            let mut seed = (m * 31 + n) as u64;
            let mut next = || {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                match (seed >> 33) % 8 {
                    0 => -128.0,
                    1 => 127.0,
                    v => ((seed >> 40) as u8 as i8 as f32) + v as f32 - v as f32,
                }
            };
            let w: Vec<f32> = (0..n * n).map(|_| next()).collect();
            let x: Vec<f32> = (0..m * n).map(|_| next()).collect();
            let bytes: Vec<u8> = x.iter().map(|v| *v as i8 as u8).collect();
            let rows = |i: usize| &bytes[i * n..(i + 1) * n];
            let mut want = vec![0f32; m * n];
            gemm(&w, n, &x, &mut want);
            let mut wts = Weights::new(true, n, w.clone());
            let packed = wts.packed.get_or_init(|| vnni::Packed::new(&wts));
            assert_eq!(packed.is_some(), vnni::available(), "{m}x{n}");
            // With the integer kernel (where the CPU has it), then with the fp32 one;
            // adding to the slots' values (with wrapping) and replacing them.
            for _ in 0..2 {
                for (start, accumulate) in [(7, true), (i32::MAX as u32, true), (7, false)] {
                    let mut got: Vec<u32> = vec![start; m * n];
                    wts.apply(m, Activations::Int8(&rows), &mut got, accumulate);
                    let base = if accumulate { start as i32 } else { 0 };
                    for (g, w) in got.iter().zip(&want) {
                        assert_eq!(*g as i32, base.wrapping_add(*w as i32), "{m}x{n}");
                    }
                }
                wts.packed = std::sync::OnceLock::from(None);
            }
        }
    }

    #[test]
    fn int8_extremes_are_exact() {
        let k = 320;
        let w = Weights::new(true, k, vec![-128.0; k * k]);
        let row = vec![0x80u8; k]; // -128
        let x = Activations::Int8(&|_| &row[..]);
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
        let x = |_: usize, r: &mut [f32]| r.copy_from_slice(&[0.0, f32::NEG_INFINITY]);
        w.apply(1, Activations::Values(&x), &mut y, false);
        assert_eq!(y, vec![crate::numerics::F32_NAN; 2]);
        let w = Weights::new(false, 1, vec![f32::INFINITY, 1.0]);
        let mut y = vec![0u32; 1];
        let x = |_: usize, r: &mut [f32]| r.copy_from_slice(&[1.0, f32::NEG_INFINITY]);
        w.apply(1, Activations::Values(&x), &mut y, false);
        assert_eq!(y[0], crate::numerics::F32_NAN);
    }

    /// `len` random fp16 values of every class (subnormals, zeros of both signs,
    /// extremes, infinities), as bits.
    fn fp16_bits(mut seed: u64, len: usize) -> Vec<u16> {
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        (0..len)
            .map(|_| match next() % 8 {
                0 => [
                    0x0000, 0x8000, 0x7c00, 0xfc00, 0x7bff, 0xfbff, 0x0001, 0x83ff,
                ][(next() % 8) as usize],
                // Subnormal.
                1 => (next() % 0x400) as u16 | (next() as u16 & 0x8000),
                // Finite, any exponent.
                _ => next() as u16 & 0xfbff,
            })
            .collect()
    }

    /// [`fp16_bits`] widened exactly, as the kernels see them.
    fn fp16_values(seed: u64, len: usize) -> Vec<f32> {
        let bits = fp16_bits(seed, len);
        let lo: Vec<u8> = bits.iter().map(|b| *b as u8).collect();
        let hi: Vec<u8> = bits.iter().map(|b| (*b >> 8) as u8).collect();
        let mut out = vec![0f32; len];
        widen_f16(&lo, &hi, &mut out);
        out
    }

    #[test]
    fn fp16_products_of_every_class_sum_in_order() {
        let mut seed = 0x2545_f491_4f6c_dd1d;
        let mut fp16 = |len: usize| {
            seed += 1;
            fp16_values(seed, len)
        };
        for (m, n, k) in [(13, 320, 40), (7, 70, 33)] {
            let (w, x) = (fp16(k * n), fp16(m * k));
            let start: Vec<f32> = fp16(m * n).iter().map(|v| v * 3.0e-3).collect();
            let mut got = start.clone();
            gemm(&w, n, &x, &mut got);
            for r in 0..m {
                for c in 0..n {
                    let mut a = start[r * n + c];
                    for kk in 0..k {
                        a += x[r * k + kk] * w[kk * n + c];
                    }
                    let g = got[r * n + c];
                    assert!(
                        g.to_bits() == a.to_bits() || (g.is_nan() && a.is_nan()),
                        "row {r} col {c}: {g} != {a}"
                    );
                }
            }
        }
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_avx512_kernel_gives_the_same_bits() {
        if !avx512::available() {
            return;
        }
        // Sizes with every kind of edge: rows past the 6-row tiles, lanes past the
        // 64-lane tiles and past the last 16-lane register, k past one block of the
        // kernel's KC weight rows; with the weights in panels
        // where N is whole registers (208: a last panel of one register).
        for (m, n, k) in [
            (13, 320, 40),
            (7, 70, 33),
            (1, 16, 5),
            (6, 64, 1),
            (20, 200, 64),
            (19, 208, 30),
            // k in several blocks of the kernel's KC, the last one whole or short.
            (13, 320, 130),
            (7, 64, 65),
            (8, 80, 128),
        ] {
            let mut vals = fp16_values(0x9e37_79b9 + m as u64, k * n + m * k + m * n);
            let start: Vec<f32> = vals.split_off(k * n + m * k);
            let x = vals.split_off(k * n);
            let w = vals;
            let wts = Weights::new(false, n, w.clone());
            let panels = n.is_multiple_of(REG_LANES).then(|| wts.panels());
            for (p, fresh) in std::iter::once(None)
                .chain(panels.map(Some))
                .flat_map(|p| [(p, false), (p, true)])
            {
                // From the values in y, or (fresh) from zeros whatever y holds.
                let mut want = if fresh {
                    vec![0.0; m * n]
                } else {
                    start.clone()
                };
                gemm(&w, n, &x, &mut want);
                let mut got = start.clone();
                // SAFETY: checked above that the CPU has AVX-512 F and FMA.
                unsafe { avx512::gemm(&w, p, n, &x, &mut got, fresh) };
                for (g, a) in got.iter().zip(&want) {
                    // NaNs canonical where the tiles store them (not in a ragged tail).
                    assert!(
                        g.to_bits() == a.to_bits()
                            || (a.is_nan() && g.to_bits() == crate::numerics::F32_NAN)
                            || (a.is_nan() && g.is_nan() && !n.is_multiple_of(REG_LANES))
                    );
                }
            }
        }
    }

    #[test]
    fn products_from_installed_bytes_match_the_widened_array() {
        // fp16 buffers of every class and int8 buffers, partly loaded, plain and
        // transposed, through few rows (straight from the bytes, several times over,
        // then widened) and many (widened, or packed for int8): all against the plain
        // loop over the array the buffer defines. 70 lanes end in part of a register.
        for (n, int8, used, transpose) in [
            (80, false, 57, false),
            (80, false, 80, true),
            (80, true, 33, false),
            (80, true, 80, false),
            (80, true, 45, true),
            (70, false, 61, false),
            (70, true, 70, false),
            (70, false, 70, true),
            // A decode step's planes: one vector, 32 fp16 lanes at a time.
            (320, false, 320, false),
            (320, false, 200, false),
            (320, true, 320, false),
        ] {
            let rb = if int8 { n } else { 2 * n };
            let vals = fp16_bits(used as u64 + 17, n * n);
            let mut buf = vec![0u8; 2 * n * n];
            for (r, row) in buf.chunks_mut(rb).take(n).enumerate() {
                for c in 0..n {
                    let bits = vals[r * n + c];
                    if int8 {
                        row[c] = bits as u8;
                    } else {
                        (row[c], row[n + c]) = (bits as u8, (bits >> 8) as u8);
                    }
                }
            }
            // The array: buffer rows 0..used (columns when transposed), then zeros.
            let mut w = vec![0f32; n * n];
            for r in 0..used {
                let mut row = vec![0f32; n];
                let (lo, hi) = buf[r * rb..(r + 1) * rb].split_at(n);
                widen_row(int8, (lo, hi), &mut row);
                for (c, v) in row.iter().enumerate() {
                    let (i, j) = if transpose { (c, r) } else { (r, c) };
                    w[i * n + j] = *v;
                }
            }
            // Each install takes DIRECT_CALLS products straight from its bytes (of up
            // to 6 rows at once: every count up to 7 is here), then widens.
            for ms in [&[1, 3, 1, 2, 1, 1, 15, 16, 40, 130][..], &[6, 5, 4, 7, 2]] {
                let mut wts = Weights::default();
                let mut given = WeightBuf::owned(buf.clone(), n);
                wts.install(int8, n, &mut given, used, transpose);
                assert!(
                    given.own.is_empty(),
                    "the first install hands back an empty buffer"
                );
                for &m in ms {
                    let seed = m as u64 * 7 + used as u64;
                    let x = fp16_values(seed, m * n);
                    let bytes: Vec<u8> = fp16_bits(seed, m * n).iter().map(|b| *b as u8).collect();
                    let xi: Vec<f32> = bytes.iter().map(|b| *b as i8 as f32).collect();
                    let start = fp16_values(m as u64, m * n);
                    let mut want = if int8 {
                        vec![0f32; m * n]
                    } else {
                        start.clone()
                    };
                    naive(&w, n, if int8 { &xi } else { &x }, &mut want);
                    let mut got: Vec<u32> = start.iter().map(|v| v.to_bits()).collect();
                    let rows = |i: usize| &bytes[i * n..(i + 1) * n];
                    let fill = |i: usize, r: &mut [f32]| r.copy_from_slice(&x[i * n..(i + 1) * n]);
                    let acts = if int8 {
                        Activations::Int8(&rows)
                    } else {
                        Activations::Values(&fill)
                    };
                    wts.apply(m, acts, &mut got, !int8);
                    for (i, (g, a)) in got.iter().zip(&want).enumerate() {
                        let ok = if int8 {
                            *g as i32 == *a as i32
                        } else {
                            // NaNs canonical (x86 makes 0xffc00000 for inf - inf).
                            *g == if a.is_nan() {
                                crate::numerics::F32_NAN
                            } else {
                                a.to_bits()
                            }
                        };
                        assert!(ok, "int8 {int8} used {used} m {m} at {i}: {g:#x} vs {a}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_weight_buffer_holds_views_and_copies() {
        let lanes = 4;
        let mut buf = WeightBuf::default();
        buf.own_words(0, 2, lanes)
            .expect("room")
            .copy_from_slice(&[1; 8]);
        // Vectors 1 and 2 of a batch of 6 stored in 2 classes (0, 2, 4 then 1, 3, 5),
        // as words 2 and 4.
        let rows = Rows::folded((0..24).collect(), lanes, 2).sub(1, 2);
        buf.view(2, 2, rows.clone(), 2);
        assert_eq!(buf.word(1), &[1; 4]);
        assert_eq!(buf.word(2), &[12, 13, 14, 15]);
        assert_eq!(buf.word(4), &[4, 5, 6, 7]);
        // A copy over a view; no room past 2 x lanes words.
        buf.own_words(2, 1, lanes).expect("room").fill(9);
        assert_eq!(buf.word(2), &[9; 4]);
        assert!(buf.own_words(7, 2, lanes).is_none());
        // Emptied, it lets go of the viewed buffer and keeps its own memory.
        assert_eq!(Arc::strong_count(&rows.data), 2);
        let buf = buf.emptied();
        assert_eq!(Arc::strong_count(&rows.data), 1);
        assert!(buf.holds_memory());
    }

    #[test]
    fn rows_viewing_the_zero_page_at_the_end_are_dropped_unread() {
        // fp16 rows of 4 lanes (4 fit): row 0 own bytes, row 1 zero bytes of another
        // buffer, row 2 half on the zero page, row 3 all on it.
        let lanes = 4;
        let zero = Arc::new(vec![0u8; 8 * lanes]);
        let other = Rows::new(vec![0u8; 8 * lanes], lanes);
        let page = Rows {
            data: zero.clone(),
            off: 0,
            n: 8,
            width: lanes,
            stride: lanes,
            fold: None,
        };
        let mut buf = WeightBuf::default();
        buf.own_words(0, 2, lanes).expect("room").fill(0x3c);
        buf.view(2, 1, other.clone(), 2);
        buf.view(4, 1, page.sub(3, 1), 1);
        buf.view(5, 1, other.sub(2, 1), 1);
        buf.view(6, 1, page.sub(5, 2), 2);
        let mut wts = Weights::default();
        wts.install(false, lanes, &mut buf, 4, false);
        wts.trim_views_of(&zero);
        assert_eq!(wts.used, 3, "row 3 dropped, row 2 kept");
        // The zero rows of other buffers are found by reading them.
        assert_eq!(wts.rows().len(), 1);
        // Every row on the zero page: none left.
        let mut buf = WeightBuf::default();
        buf.view(0, 1, page.clone(), 8);
        wts.install(false, lanes, &mut buf, 4, false);
        wts.trim_views_of(&zero);
        assert_eq!(wts.used, 0);
    }

    /// `wts` applied to the vectors `x` (rows of n) from the sums `start` gives `want`
    /// bit for bit (NaNs canonical, as the kernels store them).
    fn apply_matches(
        wts: &Weights,
        n: usize,
        x: &[f32],
        start: &[f32],
        accumulate: bool,
        want: &[f32],
        what: &str,
    ) {
        let mut got: Vec<u32> = start.iter().map(|v| v.to_bits()).collect();
        let fill = |i: usize, r: &mut [f32]| r.copy_from_slice(&x[i * n..(i + 1) * n]);
        wts.apply(
            x.len() / n,
            Activations::Values(&fill),
            &mut got,
            accumulate,
        );
        for (i, (g, a)) in got.iter().zip(want).enumerate() {
            let a = if a.is_nan() {
                crate::numerics::F32_NAN
            } else {
                a.to_bits()
            };
            assert_eq!(*g, a, "{what}: row {} lane {}", i / n, i % n);
        }
    }

    #[test]
    fn zero_rows_past_the_loaded_ones_keep_their_effect() {
        // Weights with zero columns (those lanes keep their starting value through the
        // loaded rows), sums starting at -0 and +0, and activation rows whose tails are:
        // negative, with a +0, with a -0 only, with an infinity, with a NaN.
        // The buffer's rows past the first `used` are zero (+0 weights), and its last
        // row is -0 weights: loading `used` rows, n - 1 (zero rows at the end, which
        // are no different) or all n (a -0 row is not a zero row) gives the same sums
        // as the plain loop.
        let (n, used) = (20, 5); // n: a 16-lane tile and a ragged one
        let w16: Vec<u16> = (0..n * n)
            .map(|i| {
                let (r, c) = (i / n, i % n);
                if r == n - 1 {
                    0x8000
                } else if r >= used || c % 3 == 0 {
                    0
                } else {
                    0x3c00 + (i as u16 % 7) * 0x40 // 1.0 .. 1.375
                }
            })
            .collect();
        let mut buf = vec![0u8; 2 * n * n];
        for (r, row) in buf.chunks_mut(2 * n).take(n).enumerate() {
            for c in 0..n {
                (row[c], row[n + c]) = (w16[r * n + c] as u8, (w16[r * n + c] >> 8) as u8);
            }
        }
        let buffer: Vec<f32> = w16
            .iter()
            .map(|b| f32::from_bits(crate::numerics::f16_to_f32_bits(*b)))
            .collect();
        let tails: [&[f32]; 5] = [
            &[-1.0, -2.0, -0.5],
            &[-1.0, 0.0, -2.0],
            &[-0.0, -0.0, -3.0],
            &[-1.0, f32::INFINITY, 2.0],
            &[1.0, -1.0, f32::NAN],
        ];
        let m = tails.len();
        let mut x = vec![0f32; m * n];
        for (r, tail) in tails.iter().enumerate() {
            for k in 0..n {
                x[r * n + k] = if k < used {
                    -((k + r) as f32)
                } else {
                    tail[k % tail.len()]
                };
            }
        }
        let start: Vec<f32> = (0..m * n)
            .map(|i| if i % 2 == 0 { -0.0 } else { 0.0 })
            .collect();
        // Transposed, the zero rows are zero columns: those lanes add x[k] * 0 for all k.
        for (transpose, loaded) in [false, true]
            .into_iter()
            .flat_map(|t| [used, n - 1, n].map(|l| (t, l)))
        {
            let w: Vec<f32> = (0..n * n)
                .map(|i| {
                    let (r, c) = if transpose {
                        (i % n, i / n)
                    } else {
                        (i / n, i % n)
                    };
                    if r < loaded {
                        buffer[r * n + c]
                    } else {
                        0.0
                    }
                })
                .collect();
            let mut want = start.clone();
            naive(&w, n, &x, &mut want);
            let mut wts = Weights::default();
            wts.install(
                false,
                n,
                &mut WeightBuf::owned(buf.clone(), n),
                loaded,
                transpose,
            );
            let what = format!("transpose {transpose} loaded {loaded}");
            apply_matches(&wts, n, &x, &start, true, &want, &what);
            if loaded == n {
                continue;
            }
            assert!(
                want.iter().any(|v| v.to_bits() == 0x8000_0000),
                "some sums stay -0"
            );
            let flipped =
                (start.iter().zip(&want)).any(|(s, w)| s.to_bits() != w.to_bits() && *w == 0.0);
            assert!(
                flipped && want.iter().any(|v| v.is_nan()),
                "some -0 sums become +0, some NaN"
            );
        }
    }

    #[test]
    fn mostly_zero_activations_leave_their_zero_rows_out_exactly() {
        // Few vectors, zero (+0 or -0) in all but a few of the loaded rows (the softmax
        // sums of a decode step), the rest of every class; weights of every finite class
        // (-0 included, so some products left out are -0 and some +0); values past the
        // loaded rows finite or not. Against the plain loop from +0, bit for bit, with
        // the zero rows left out; and the same with an infinity among the weights, or
        // accumulating from -0, where nothing may be left out.
        let bits = |b: u16| if b & 0x7c00 == 0x7c00 { b & 0x83ff } else { b };
        for (n, used) in [(320, 320), (320, 256), (80, 57), (70, 70)] {
            for inf_row in [None, Some(used / 2)] {
                let mut w16: Vec<u16> = fp16_bits(n as u64 + used as u64, n * n)
                    .into_iter()
                    .map(bits)
                    .collect();
                if let Some(r) = inf_row {
                    w16[r * n + 3] = 0x7c00;
                }
                let mut buf = vec![0u8; 2 * n * n];
                for (r, row) in buf.chunks_mut(2 * n).enumerate() {
                    for c in 0..n {
                        (row[c], row[n + c]) = (w16[r * n + c] as u8, (w16[r * n + c] >> 8) as u8);
                    }
                }
                let w: Vec<f32> = (0..n * n)
                    .map(|i| {
                        let v = f32::from_bits(crate::numerics::f16_to_f32_bits(w16[i]));
                        if i / n < used {
                            v
                        } else {
                            0.0
                        }
                    })
                    .collect();
                for (m, accumulate) in [(1, false), (2, false), (6, false), (15, false), (6, true)]
                {
                    let vals = fp16_values(m as u64 * 31 + n as u64, m * n);
                    // Values in one row in twelve and one row of each vector's own
                    // (every class), zeros of both signs elsewhere; past the loaded rows,
                    // the values as they come.
                    let x: Vec<f32> = (0..m * n)
                        .map(|i| {
                            let k = i % n;
                            if k >= used || k % 12 == 0 || k == 1 + 2 * (i / n) {
                                vals[i]
                            } else if (i * 5) % 3 == 0 {
                                -0.0
                            } else {
                                0.0
                            }
                        })
                        .collect();
                    let start = vec![if accumulate { -0.0f32 } else { 0.0 }; m * n];
                    let mut want = start.clone();
                    naive(&w, n, &x, &mut want);
                    let mut wts = Weights::default();
                    wts.install(false, n, &mut WeightBuf::owned(buf.clone(), n), used, false);
                    let what = format!("n {n} used {used} m {m} inf {inf_row:?}");
                    apply_matches(&wts, n, &x, &start, accumulate, &want, &what);
                    // Left out exactly when it may and pays (no product was then made
                    // the plain way).
                    let rows_with_values = (0..used)
                        .filter(|&k| (0..m).any(|r| x[r * n + k] != 0.0))
                        .count();
                    let sparse = inf_row.is_none()
                        && !accumulate
                        && m < DIRECT_ROWS
                        && rows_with_values * SPARSE_SHARE <= used;
                    assert!(
                        sparse || m > 2 || inf_row.is_some() || accumulate,
                        "the case is tried"
                    );
                    assert_eq!(
                        wts.direct_calls.load(Ordering::Relaxed) == 0,
                        sparse,
                        "n {n} used {used} m {m} inf {inf_row:?} accumulate {accumulate}"
                    );
                }
            }
        }
    }

    #[test]
    fn widening_gives_every_fp16_value_exactly() {
        // All 65,536 values, at an offset that leaves a ragged tail: the same bits as the
        // definition, except that a NaN need only stay a NaN (see `widen_f16`).
        let bits: Vec<u16> = (0..=u16::MAX).chain(0..7).collect();
        let lo: Vec<u8> = bits.iter().map(|b| *b as u8).collect();
        let hi: Vec<u8> = bits.iter().map(|b| (*b >> 8) as u8).collect();
        let mut out = vec![0f32; bits.len()];
        widen_f16(&lo, &hi, &mut out);
        for (b, v) in bits.iter().zip(&out) {
            let want = f32::from_bits(crate::numerics::f16_to_f32_bits(*b));
            assert!(
                v.to_bits() == want.to_bits() || (v.is_nan() && want.is_nan()),
                "{b:#06x}: {v} vs {want}"
            );
        }
    }

    #[test]
    fn fp16_order_is_sequential() {
        // 1 + 2^-24 + 2^-24 ... sequentially stays 1 in fp32; a tree sum would not.
        let w = Weights::new(false, 1, vec![1.0; 4]);
        let x = [1.0f32, 2f32.powi(-24), 2f32.powi(-24), 2f32.powi(-24)];
        let mut y = vec![0u32; 1];
        w.apply(
            1,
            Activations::Values(&|_: usize, r: &mut [f32]| r.copy_from_slice(&x)),
            &mut y,
            false,
        );
        assert_eq!(f32::from_bits(y[0]), 1.0);
    }

    #[test]
    fn byte_planes_split_each_value_into_its_four_bytes() {
        // Rows of whole and ragged lengths (the vector path and the tail), one empty.
        let rows: Vec<Vec<u32>> = [320usize, 37, 0, 16, 5]
            .iter()
            .enumerate()
            .map(|(r, &n)| {
                (0..n as u32)
                    .map(|i| (i + 1).wrapping_mul(0x9e37_79b9) ^ (r as u32) << 7)
                    .collect()
            })
            .collect();
        let refs: Vec<&[u32]> = rows.iter().map(|r| &r[..]).collect();
        let total: usize = rows.iter().map(Vec::len).sum();
        let mut planes = vec![vec![0xaau8; total]; 4];
        let [p0, p1, p2, p3] = &mut planes[..] else {
            unreachable!("four planes")
        };
        byte_planes(&refs, [p0, p1, p2, p3]);
        let flat: Vec<u32> = rows.concat();
        for (i, v) in flat.iter().enumerate() {
            let got = [planes[0][i], planes[1][i], planes[2][i], planes[3][i]];
            assert_eq!(got, v.to_le_bytes(), "value {i}");
        }
    }
}
