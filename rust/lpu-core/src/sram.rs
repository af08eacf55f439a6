//! On-chip SRAM: 2 hemispheres x slices x addresses x `lanes`-byte words.
//!
//! Pages of words are allocated on first write, so a `tsp_v1` chip (220 MiB) costs
//! nothing until a program touches it; unwritten words read as zero. Pages are shared
//! copy-on-write (`Arc`), which makes snapshots cheap.
//!
//! A run keeps the old value of every word it overwrites in the slices it reads
//! ([`Sram::start_journal`]), so that it can be redone from its start
//! ([`Sram::rewind`]). A saved snapshot would do as well, but it shares every page, and
//! the first write to each page would then copy all 40 KB of it: most pages a decode
//! step writes get one word (a KV cache row), and a handful of words saved is far less.

use crate::streams::Rows;
use std::ops::Range;
use std::sync::Arc;

/// Lanes `lane..lane + len` of a vector, all to (or from) word `addr`: how a gather or
/// scatter's lanes are handled, a run at a time (a KV cache append sends all of a
/// slice's lanes to one or two words; lane by lane, the lists and copies of 320 lanes
/// were a few percent of a decode step).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaneRun {
    pub lane: u32,
    pub len: u32,
    pub addr: u32,
}

/// `dst` = `src` (the same length) with non-temporal stores where the CPU has AVX-512
/// (else a plain copy): half a page or more written at once, by a streaming run
/// writing megabytes of results that nothing reads soon. A cached copy first reads every line
/// it is about to write; around the cache, a streaming int8 add's copies into SRAM
/// took about half as long.
fn copy_around_cache(dst: &mut [u8], src: &[u8]) {
    assert_eq!(dst.len(), src.len());
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512 F (checked); both slices hold dst.len() bytes.
        return unsafe { stream_copy(dst, src) };
    }
    dst.copy_from_slice(src);
}

/// [`copy_around_cache`] with AVX-512: plain stores up to dst's first 64-byte boundary
/// and after its last, streaming stores of 64 bytes between, then a store fence so
/// that other threads see the bytes in order with what follows.
///
/// # Safety
/// The CPU has AVX-512 F; `src` holds at least dst.len() bytes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn stream_copy(dst: &mut [u8], src: &[u8]) {
    use std::arch::x86_64::*;
    let n = dst.len();
    let head = dst.as_ptr().align_offset(64).min(n);
    let body = (n - head) / 64 * 64;
    dst[..head].copy_from_slice(&src[..head]);
    for i in (head..head + body).step_by(64) {
        // SAFETY: i + 64 <= head + body <= n, within both slices; dst + i is 64-byte
        // aligned (from `head`), as the streaming store needs; the load needs none.
        unsafe {
            let v = _mm512_loadu_si512(src.as_ptr().add(i).cast());
            _mm512_stream_si512(dst.as_mut_ptr().add(i).cast(), v);
        }
    }
    dst[head + body..].copy_from_slice(&src[head + body..n]);
    _mm_sfence();
}

/// [`lane_runs`] of a gather's or scatter's map, its little-endian uint16 word
/// addresses as two byte planes. A map of one word for every lane (a decode step's RoPE
/// table rows and KV cache appends) is one run, found without going lane by lane.
pub fn map_runs(lo: &[u8], hi: &[u8]) -> Vec<LaneRun> {
    let same = |b: &[u8]| b.iter().fold(0, |a, &x| a | (x ^ b[0])) == 0;
    if !lo.is_empty() && same(lo) && same(hi) {
        let addr = lo[0] as u32 | (hi[0] as u32) << 8;
        return vec![LaneRun {
            lane: 0,
            len: lo.len() as u32,
            addr,
        }];
    }
    lane_runs(crate::sxm::map16(lo, hi).map(|a| a as u32))
}

/// The runs of lanes, in lane order, that `addrs` (lane l's word for l = 0, 1, ...)
/// sends to one word each.
pub fn lane_runs(addrs: impl IntoIterator<Item = u32>) -> Vec<LaneRun> {
    let mut runs = Vec::new();
    let mut addrs = addrs.into_iter();
    let Some(addr) = addrs.next() else {
        return runs;
    };
    // The run being made stays in registers (growing the last one in the list cost a
    // store and a load per lane, one after the other: a gather's 320 lanes took about
    // 2,000 CPU cycles).
    let mut run = LaneRun {
        lane: 0,
        len: 1,
        addr,
    };
    for (l, addr) in (1..).zip(addrs) {
        if addr == run.addr {
            run.len += 1;
        } else {
            runs.push(run);
            run = LaneRun {
                lane: l,
                len: 1,
                addr,
            };
        }
    }
    runs.push(run);
    runs
}

/// Words per lazily allocated page (40 KB on `tsp_v1`). A page that a view shares is
/// copied whole on its next write: a decode step copies a few dozen of them (its KV
/// caches share pages, which attention's weight loads view), and pages of 256 words
/// made it 5 % slower; pages of 64 made streaming VXM runs 9 % slower (more pieces).
pub const PAGE_WORDS: usize = 128;

#[derive(Clone)]
pub struct Sram {
    lanes: usize,
    slices: usize,
    addresses: usize,
    pages_per_slice: usize,
    pages: Vec<Option<Arc<Vec<u8>>>>,
    /// By page: the words ever written (a bit each). A read of words never written is
    /// a view of `zero`, so that what it feeds can tell they are zero without reading
    /// them: attention loads its whole KV cache into a plane each step, and the rows
    /// of the positions still to come lie in written pages (scanning them for zeros
    /// was 3 % of a decode step).
    written: Vec<[u64; PAGE_WORDS / 64]>,
    /// What a never-written page reads as.
    zero: Arc<Vec<u8>>,
    journal: Option<Box<Journal>>,
    /// The last journal, emptied, to start the next with its memory: a decode step
    /// starts one each run, and making it (a list as long as the pages) and growing
    /// its lists again each time copied some 400 KB a step.
    spare: Spare,
}

/// A copy of the SRAM starts without a spare journal.
#[derive(Default)]
struct Spare(Option<Box<Journal>>);

impl Clone for Spare {
    fn clone(&self) -> Self {
        Spare(None)
    }
}

/// The old values of the words written since [`Sram::start_journal`].
#[derive(Clone)]
struct Journal {
    /// By slice (`hemi * slices + slice`): whether its old words are kept.
    tracked: Vec<bool>,
    /// By page: the words already kept (a bit each), once one is.
    kept: Vec<Option<Box<[u64; PAGE_WORDS / 64]>>>,
    /// The pages that have an entry in `kept`.
    kept_pages: Vec<usize>,
    /// Pages that did not exist when the journal started (they read as zero then).
    created: Vec<usize>,
    /// Page and word of each kept word, its old bytes at the same index in `data`.
    words: Vec<(u32, u16)>,
    data: Vec<u8>,
}

impl Sram {
    pub fn new(slices: usize, addresses: usize, lanes: usize) -> Self {
        let pages_per_slice = addresses.div_ceil(PAGE_WORDS);
        Sram {
            lanes,
            slices,
            addresses,
            pages_per_slice,
            pages: vec![None; 2 * slices * pages_per_slice],
            written: vec![[0; PAGE_WORDS / 64]; 2 * slices * pages_per_slice],
            zero: Arc::new(vec![0u8; PAGE_WORDS * lanes]),
            journal: None,
            spare: Spare::default(),
        }
    }

    /// From now on keep the old value of each word written in a slice marked in
    /// `tracked` (by `hemi * slices + slice`), the first time it is written.
    pub fn start_journal(&mut self, tracked: &[bool]) {
        let pages = self.pages.len();
        let mut j = self
            .spare
            .0
            .take()
            .filter(|j| j.kept.len() == pages)
            .unwrap_or_else(|| {
                Box::new(Journal {
                    tracked: Vec::new(),
                    kept: vec![None; pages],
                    kept_pages: Vec::new(),
                    created: Vec::new(),
                    words: Vec::new(),
                    data: Vec::new(),
                })
            });
        j.tracked.clear();
        j.tracked.extend_from_slice(tracked);
        self.journal = Some(j);
    }

    /// Stop keeping old values (and forget the ones kept).
    pub fn stop_journal(&mut self) {
        if let Some(j) = self.journal.take() {
            self.retire(j);
        }
    }

    /// Empty a finished journal and keep it for the next (unless it grew large: a run
    /// that overwrote megabytes of words read again need not hold them after).
    fn retire(&mut self, mut j: Box<Journal>) {
        const KEPT_BYTES: usize = 8 << 20;
        if j.data.capacity() > KEPT_BYTES {
            return;
        }
        for i in j.kept_pages.drain(..) {
            j.kept[i] = None;
        }
        j.created.clear();
        j.words.clear();
        j.data.clear();
        self.spare.0 = Some(j);
    }

    /// Put back what the tracked slices held when the journal started, and stop it.
    pub fn rewind(&mut self) {
        let Some(j) = self.journal.take() else {
            return;
        };
        let lanes = self.lanes;
        for (k, &(i, w)) in j.words.iter().enumerate() {
            let off = w as usize * lanes;
            self.page_mut(i as usize)[off..off + lanes]
                .copy_from_slice(&j.data[k * lanes..(k + 1) * lanes]);
        }
        for &i in &j.created {
            self.pages[i] = None;
            self.written[i] = [0; PAGE_WORDS / 64];
        }
        self.retire(j);
    }

    /// Before words `words` of page `i` are written (every write comes here): mark
    /// them written, and keep their old values if the journal wants them.
    fn keep(&mut self, i: usize, words: Range<usize>) {
        for (b, bits) in self.written[i].iter_mut().enumerate() {
            // The words of `words` in this 64: a mask of them.
            let (lo, hi) = (words.start.max(64 * b), words.end.min(64 * (b + 1)));
            if lo < hi {
                *bits |= (u64::MAX >> (64 - (hi - lo))) << (lo - 64 * b);
            }
        }
        let Some(j) = self.journal.as_deref_mut() else {
            return;
        };
        if !j.tracked[i / self.pages_per_slice] {
            return;
        }
        if j.kept[i].is_none() {
            j.kept_pages.push(i);
        }
        let Some(page) = &self.pages[i] else {
            // Never written: the whole page goes when the journal rewinds.
            j.created.push(i);
            j.kept[i] = Some(Box::new([u64::MAX; PAGE_WORDS / 64]));
            return;
        };
        let bits = j.kept[i].get_or_insert_with(|| Box::new([0; PAGE_WORDS / 64]));
        let lanes = self.lanes;
        for w in words {
            if bits[w / 64] & (1 << (w % 64)) == 0 {
                bits[w / 64] |= 1 << (w % 64);
                j.words.push((i as u32, w as u16));
                j.data.extend_from_slice(&page[w * lanes..(w + 1) * lanes]);
            }
        }
    }

    /// The page never-written words are read from (views of it are all zero).
    pub fn zero_page(&self) -> &Arc<Vec<u8>> {
        &self.zero
    }

    fn page_index(&self, hemi: usize, slice: usize, addr: usize) -> usize {
        (hemi * self.slices + slice) * self.pages_per_slice + addr / PAGE_WORDS
    }

    /// The word at an address, or None if it was never written (reads as zero).
    pub fn word(&self, hemi: usize, slice: usize, addr: usize) -> Option<&[u8]> {
        let p = self.pages[self.page_index(hemi, slice, addr)].as_ref()?;
        let off = (addr % PAGE_WORDS) * self.lanes;
        Some(&p[off..off + self.lanes])
    }

    pub fn read(&self, hemi: usize, slice: usize, addr: usize, out: &mut [u8]) {
        match self.word(hemi, slice, addr) {
            Some(w) => out.copy_from_slice(w),
            None => out.fill(0),
        }
    }

    pub fn write(&mut self, hemi: usize, slice: usize, addr: usize, data: &[u8]) {
        self.word_mut(hemi, slice, addr).copy_from_slice(data);
    }

    /// The word at an address, to write in place (its page is allocated, or copied if
    /// shared, first).
    pub fn word_mut(&mut self, hemi: usize, slice: usize, addr: usize) -> &mut [u8] {
        let lanes = self.lanes;
        let (i, w) = (self.page_index(hemi, slice, addr), addr % PAGE_WORDS);
        self.keep(i, w..w + 1);
        &mut self.page_mut(i)[w * lanes..(w + 1) * lanes]
    }

    /// Page `i`'s words, to write in place (allocated first if it was never written,
    /// copied first if shared).
    fn page_mut(&mut self, i: usize) -> &mut [u8] {
        let len = PAGE_WORDS * self.lanes;
        Arc::make_mut(self.pages[i].get_or_insert_with(|| Arc::new(vec![0u8; len]))).as_mut_slice()
    }

    /// Words `addr..addr + n` for some 1 <= n <= max (up to the end of their page), as a
    /// view of the page: later writes copy the page first, so the view keeps these values.
    /// Words never written are a view of the zero page instead (n stops where that
    /// changes).
    pub fn rows(&self, hemi: usize, slice: usize, addr: usize, max: usize) -> Rows {
        let (p, n, written) = self.run(hemi, slice, addr, max);
        let page = match &self.pages[p] {
            Some(page) if written => page,
            _ => &self.zero,
        };
        Rows {
            data: page.clone(),
            off: addr % PAGE_WORDS * self.lanes,
            n,
            width: self.lanes,
            stride: self.lanes,
            fold: None,
        }
    }

    /// How many words [`Sram::rows`] would give (without making the view).
    pub fn rows_len(&self, hemi: usize, slice: usize, addr: usize, max: usize) -> usize {
        self.run(hemi, slice, addr, max).1
    }

    /// The page of `rows`, its count of words, and whether word `addr` was written.
    fn run(&self, hemi: usize, slice: usize, addr: usize, max: usize) -> (usize, usize, bool) {
        let p = self.page_index(hemi, slice, addr);
        let i = addr % PAGE_WORDS;
        let end = (i + max).min(PAGE_WORDS);
        let bits = &self.written[p];
        let written = |w: usize| bits[w / 64] >> (w % 64) & 1 == 1;
        // The run of words from i as written as word i: up to the first other bit.
        let mut n = end - i;
        let mut w = i;
        while w < end {
            let b = w / 64;
            let same = if written(i) { bits[b] } else { !bits[b] };
            let other = (!same >> (w % 64)).trailing_zeros() as usize;
            if w + other < 64 * (b + 1) {
                n = (w + other).min(end) - i;
                break;
            }
            w = 64 * (b + 1);
        }
        (p, n, written(i))
    }

    /// `f(sram, page, first word in it, words, words before)` for each page the words
    /// `addr..addr + n` of a slice lie in, in order, once their old values are kept.
    fn by_page(
        &mut self,
        hemi: usize,
        slice: usize,
        addr: usize,
        n: usize,
        mut f: impl FnMut(&mut Sram, usize, usize, usize, usize),
    ) {
        let mut done = 0;
        while done < n {
            let a = addr + done;
            let i = self.page_index(hemi, slice, a);
            let at = a % PAGE_WORDS;
            let m = (PAGE_WORDS - at).min(n - done);
            self.keep(i, at..at + m);
            f(self, i, at, m, done);
            done += m;
        }
    }

    /// Write the vectors of `rows` to consecutive words from `addr`, a page at a time.
    pub fn write_rows(&mut self, hemi: usize, slice: usize, addr: usize, rows: &Rows) {
        if let Some(run) = rows.contiguous() {
            return self.write_words(hemi, slice, addr, run);
        }
        let lanes = self.lanes;
        self.by_page(hemi, slice, addr, rows.n, |sram, i, at, m, done| {
            let words = &mut sram.page_mut(i)[at * lanes..(at + m) * lanes];
            for (r, word) in words.chunks_mut(lanes).enumerate() {
                word.copy_from_slice(rows.row(done + r));
            }
        });
    }

    /// Write `data`, whole words end to end, to consecutive words from `addr`: one copy
    /// per page (around the cache for half a page or more), and a page written whole
    /// that did not exist or that a view shares is made from the data.
    pub fn write_words(&mut self, hemi: usize, slice: usize, addr: usize, data: &[u8]) {
        let lanes = self.lanes;
        self.by_page(
            hemi,
            slice,
            addr,
            data.len() / lanes,
            |sram, i, at, m, done| {
                let run = &data[done * lanes..(done + m) * lanes];
                let held = sram.pages[i]
                    .as_ref()
                    .is_some_and(|p| Arc::strong_count(p) == 1);
                if m == PAGE_WORDS && !held {
                    // Not made (zeroed, or copied from the one a view shares) first only
                    // to be written over.
                    sram.pages[i] = Some(Arc::new(run.to_vec()));
                } else if m >= PAGE_WORDS / 2 {
                    // Half a page or more, from a streaming run: around the cache.
                    copy_around_cache(&mut sram.page_mut(i)[at * lanes..(at + m) * lanes], run);
                } else {
                    sram.page_mut(i)[at * lanes..(at + m) * lanes].copy_from_slice(run);
                }
            },
        );
    }

    /// Write lanes `lane..lane + len` of `data` to the same lanes of word `addr`, for
    /// each run of `runs` (a scatter; see [`lane_runs`]).
    pub fn write_lanes(&mut self, hemi: usize, slice: usize, runs: &[LaneRun], data: &[u8]) {
        let width = self.lanes;
        for r in runs {
            let (i, w) = (
                self.page_index(hemi, slice, r.addr as usize),
                r.addr as usize % PAGE_WORDS,
            );
            self.keep(i, w..w + 1);
            let page = self.page_mut(i);
            let (lane, len) = (r.lane as usize, r.len as usize);
            page[w * width + lane..w * width + lane + len].copy_from_slice(&data[lane..lane + len]);
        }
    }

    pub fn addresses(&self) -> usize {
        self.addresses
    }

    /// Bytes of host memory the allocated pages take.
    pub fn allocated_bytes(&self) -> usize {
        self.pages.iter().flatten().count() * PAGE_WORDS * self.lanes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_never_written_are_views_of_the_zero_page() {
        let mut s = Sram::new(4, 1024, 16);
        // Page 1 of slice 2 (words 128..256): words 130 and 131 written, 200 too.
        s.write_words(0, 2, 130, &[5u8; 32]);
        s.write(0, 2, 200, &[6u8; 16]);
        let mut pieces = Vec::new();
        let mut a = 128;
        while a < 256 {
            let r = s.rows(0, 2, a, 256 - a);
            pieces.push((a, r.n, Arc::ptr_eq(&r.data, s.zero_page())));
            a += r.n;
        }
        assert_eq!(
            pieces,
            [
                (128, 2, true),
                (130, 2, false),
                (132, 68, true),
                (200, 1, false),
                (201, 55, true)
            ]
        );
        // A zero view stays zero when its word is written later; a rewind forgets
        // the words of pages it drops.
        let before = s.rows(0, 2, 140, 1);
        s.start_journal(&[true; 8]);
        s.write(0, 2, 140, &[7u8; 16]);
        s.write(0, 3, 0, &[8u8; 16]);
        assert!(before.data[before.off..before.off + 16]
            .iter()
            .all(|b| *b == 0));
        assert!(!Arc::ptr_eq(&s.rows(0, 2, 140, 1).data, s.zero_page()));
        s.rewind();
        assert!(Arc::ptr_eq(&s.rows(0, 3, 0, 1).data, s.zero_page()));
        assert_eq!(s.word(0, 2, 140).unwrap(), &[0u8; 16]);
        // Runs of written words of every length, against a word-by-word model.
        let mut seed = 12345u64;
        let mut next = |m: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % m
        };
        let mut t = Sram::new(1, 256, 4);
        let mut model = [false; 256];
        for _ in 0..40 {
            let (a, n) = (next(256) as usize, 1 + next(70) as usize);
            let n = n.min(256 - a);
            t.write_words(0, 0, a, &vec![1u8; 4 * n]);
            model[a..a + n].iter_mut().for_each(|m| *m = true);
            for _ in 0..20 {
                let (i, max) = (next(256) as usize, 1 + next(200) as usize);
                let r = t.rows(0, 0, i, max);
                let end = (i + max).min((i / PAGE_WORDS + 1) * PAGE_WORDS);
                let want = (i..end).take_while(|w| model[*w] == model[i]).count();
                assert_eq!(
                    (r.n, Arc::ptr_eq(&r.data, t.zero_page())),
                    (want, !model[i])
                );
            }
        }
    }

    #[test]
    fn lazy_and_copy_on_write() {
        let mut s = Sram::new(44, 8192, 320);
        assert_eq!(s.allocated_bytes(), 0);
        let mut w = vec![0u8; 320];
        s.read(1, 43, 8191, &mut w);
        assert!(w.iter().all(|b| *b == 0));
        s.write(1, 43, 8191, &[7u8; 320]);
        let snap = s.clone();
        s.write(1, 43, 8191, &[9u8; 320]);
        assert_eq!(snap.word(1, 43, 8191).unwrap()[0], 7);
        assert_eq!(s.word(1, 43, 8191).unwrap()[0], 9);
        assert_eq!(s.allocated_bytes(), PAGE_WORDS * 320);
    }

    #[test]
    fn batched_writes_cross_pages_like_single_writes() {
        let lanes = 8;
        let (mut a, mut b) = (Sram::new(4, 1024, lanes), Sram::new(4, 1024, lanes));
        // Every third of 600 vectors (a strided view, as a batch's input), written from
        // an address that makes the run cross a page boundary.
        let data: Vec<u8> = (0..600 * lanes).map(|i| (i * 7 % 251) as u8).collect();
        let rows = Rows {
            stride: 3 * lanes,
            n: 200,
            ..Rows::new(data.clone(), lanes)
        };
        let addr = PAGE_WORDS - 50;
        a.write_rows(1, 2, addr, &rows);
        for r in 0..200 {
            b.write(1, 2, addr + r, rows.row(r));
        }
        // And 300 stored end to end (copied a page at a time); then 600, whose middle
        // 256 make a page of their own, over a page a view still holds (it keeps its
        // values).
        let run = Rows::new(data[..300 * lanes].to_vec(), lanes);
        a.write_rows(0, 1, addr, &run);
        for r in 0..300 {
            b.write(0, 1, addr + r, run.row(r));
        }
        let held = a.rows(0, 1, PAGE_WORDS, 4);
        let old: Vec<u8> = (0..4).flat_map(|r| held.row(r).to_vec()).collect();
        a.write_words(0, 1, addr, &data);
        for (r, word) in data.chunks(lanes).enumerate() {
            b.write(0, 1, addr + r, word);
        }
        assert_eq!(
            (0..4)
                .flat_map(|r| held.row(r).to_vec())
                .collect::<Vec<u8>>(),
            old
        );
        // A scatter whose lanes land on words of two pages, and one whose lanes come in
        // runs to one word, one of them back to an earlier word.
        let word: Vec<u8> = (100..100 + lanes as u8).collect();
        let scatters: [(usize, Vec<u32>); 2] = [
            (
                0,
                (0..lanes as u32)
                    .map(|l| (PAGE_WORDS as u32 - 2) + l % 4)
                    .collect(),
            ),
            (1, vec![10, 10, 10, 12, 10, 11, 11, 10]),
        ];
        for (h, addrs) in &scatters {
            a.write_lanes(*h, 3, &lane_runs(addrs.iter().copied()), &word);
            for (l, &at) in addrs.iter().enumerate() {
                b.word_mut(*h, 3, at as usize)[l] = word[l];
            }
        }
        for (h, s, at) in [
            (1, 2, addr),
            (1, 2, addr + 199),
            (0, 1, addr),
            (0, 1, PAGE_WORDS),
            (0, 1, addr + 299),
            (0, 1, 2 * PAGE_WORDS),
            (0, 1, addr + 599),
            (0, 3, PAGE_WORDS - 2),
            (0, 3, PAGE_WORDS + 1),
            (1, 3, 10),
            (1, 3, 11),
            (1, 3, 12),
        ] {
            assert_eq!(a.word(h, s, at), b.word(h, s, at), "{h} {s} {at}");
        }
        assert_eq!(a.allocated_bytes(), b.allocated_bytes());
    }

    #[test]
    fn copies_around_the_cache_copy_every_byte() {
        let src: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
        for start in [0, 1, 17, 63, 64] {
            for len in [0, 1, 63, 64, 65, 200, 4000] {
                let mut dst = vec![0xeeu8; 4200];
                copy_around_cache(&mut dst[start..start + len], &src[..len]);
                assert_eq!(&dst[start..start + len], &src[..len], "at {start}, {len}");
                assert!(dst[..start]
                    .iter()
                    .chain(&dst[start + len..])
                    .all(|b| *b == 0xee));
            }
        }
    }

    #[test]
    fn lanes_to_the_same_word_make_one_run() {
        let runs = lane_runs([4, 4, 4, 9, 4, 4]);
        let want =
            [(0, 3, 4), (3, 1, 9), (4, 2, 4)].map(|(lane, len, addr)| LaneRun { lane, len, addr });
        assert_eq!(runs, want);
        assert!(lane_runs([]).is_empty());
        // From a map's byte planes: one word for all lanes, the same low byte but
        // another high byte in one lane, and a spread.
        for addrs in [
            vec![259u16; 6],
            vec![3, 3, 259, 3, 3, 3],
            vec![4, 4, 9, 4, 1, 1],
        ] {
            let (lo, hi): (Vec<u8>, Vec<u8>) =
                addrs.iter().map(|a| (*a as u8, (a >> 8) as u8)).unzip();
            assert_eq!(
                map_runs(&lo, &hi),
                lane_runs(addrs.iter().map(|a| *a as u32)),
                "{addrs:?}"
            );
        }
        // Runs cover the lanes in order and give back each lane's word; neighbours differ.
        for addrs in [
            vec![7],
            vec![1, 2],
            vec![3; 320],
            (0..320).map(|l| l / 3 % 5).collect(),
        ] {
            let runs = lane_runs(addrs.iter().copied());
            let back: Vec<u32> = runs
                .iter()
                .flat_map(|r| vec![r.addr; r.len as usize])
                .collect();
            assert_eq!(back, addrs);
            assert!(runs
                .windows(2)
                .all(|w| w[0].lane + w[0].len == w[1].lane && w[0].addr != w[1].addr));
        }
    }

    #[test]
    fn a_journal_rewinds_the_slices_it_tracks() {
        // Every way of writing (words, runs across a page boundary, scattered lanes),
        // into pages that existed and pages that did not, in a tracked and an untracked
        // slice; words written twice keep their first old value.
        let lanes = 8;
        let mut live = Sram::new(2, 512, lanes);
        live.write(0, 0, 3, &[1; 8]);
        live.write(0, 0, 255, &[5; 8]);
        live.write(1, 1, 300, &[2; 8]);
        let before = live.clone();
        live.start_journal(&[true, false, false, true]);
        live.write(0, 0, 3, &[4; 8]);
        live.write(0, 0, 3, &[6; 8]);
        let mut src = Sram::new(1, 512, lanes);
        for a in 0..4 {
            src.write(0, 0, 254 + a, &[10 + a as u8; 8]);
        }
        live.write_rows(0, 0, 254, &src.rows(0, 0, 254, 2));
        live.write_rows(0, 0, 256, &src.rows(0, 0, 256, 2));
        live.write_words(1, 1, 256, &vec![3; 256 * lanes]); // a whole page, made anew
        let runs = [(0, 300), (3, 301), (5, 40)].map(|(lane, addr)| LaneRun { lane, len: 1, addr });
        live.write_lanes(1, 1, &runs, &[9; 8]);
        live.write(0, 1, 7, &[7; 8]); // untracked
        assert_eq!(live.word(0, 0, 3), Some(&[6u8; 8][..]));
        live.rewind();
        for (h, sl, a) in [
            (0, 0, 3),
            (0, 0, 254),
            (0, 0, 255),
            (0, 0, 256),
            (0, 0, 257),
            (1, 1, 256),
            (1, 1, 300),
            (1, 1, 301),
            (1, 1, 511),
            (1, 1, 40),
        ] {
            assert_eq!(live.word(h, sl, a), before.word(h, sl, a), "{h} {sl} {a}");
        }
        // The page the journal saw created reads as never written again.
        assert!(live.word(0, 0, 256).is_none());
        assert_eq!(live.word(0, 1, 7), Some(&[7u8; 8][..]));
        // After a rewind nothing is journalled any more.
        live.write(0, 0, 3, &[8; 8]);
        live.rewind();
        assert_eq!(live.word(0, 0, 3), Some(&[8u8; 8][..]));
    }

    #[test]
    fn a_journal_started_again_keeps_only_its_own_run() {
        // The next journal reuses the last one's memory: it must start empty, so that
        // a rewind puts back what its own run overwrote and nothing an earlier run did.
        let lanes = 8;
        let mut live = Sram::new(1, 512, lanes);
        live.write(0, 0, 3, &[1; 8]);
        live.write(0, 0, 4, &[1; 8]);
        live.start_journal(&[true, true]);
        live.write(0, 0, 3, &[2; 8]);
        live.write(0, 0, 200, &[2; 8]); // a page made in this run
        live.stop_journal();
        // Its words and made page are not put back by the next run's rewind.
        live.start_journal(&[true, true]);
        live.write(0, 0, 4, &[3; 8]);
        live.rewind();
        assert_eq!(live.word(0, 0, 3), Some(&[2u8; 8][..]));
        assert_eq!(live.word(0, 0, 4), Some(&[1u8; 8][..]));
        assert_eq!(live.word(0, 0, 200), Some(&[2u8; 8][..]));
        // Nor does it take a word as kept because an earlier run kept it.
        live.start_journal(&[true, true]);
        live.write(0, 0, 3, &[5; 8]);
        live.rewind();
        assert_eq!(live.word(0, 0, 3), Some(&[2u8; 8][..]));
    }
}
