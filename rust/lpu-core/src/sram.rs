//! On-chip SRAM: 2 hemispheres x slices x addresses x `lanes`-byte words.
//!
//! Pages of words are allocated on first write, so a `tsp_v1` chip (220 MiB) costs
//! nothing until a program touches it; unwritten words read as zero. Pages are shared
//! copy-on-write (`Arc`), which makes snapshots cheap.

use crate::streams::Rows;
use std::sync::Arc;

/// Words per lazily allocated page.
pub const PAGE_WORDS: usize = 256;

#[derive(Clone)]
pub struct Sram {
    lanes: usize,
    slices: usize,
    addresses: usize,
    pages_per_slice: usize,
    pages: Vec<Option<Arc<Vec<u8>>>>,
    /// What a never-written page reads as.
    zero: Arc<Vec<u8>>,
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
            zero: Arc::new(vec![0u8; PAGE_WORDS * lanes]),
        }
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
        let off = (addr % PAGE_WORDS) * lanes;
        &mut self.page_mut(self.page_index(hemi, slice, addr))[off..off + lanes]
    }

    /// Page `i`'s words, to write in place (allocated first if it was never written,
    /// copied first if shared).
    fn page_mut(&mut self, i: usize) -> &mut [u8] {
        let len = PAGE_WORDS * self.lanes;
        Arc::make_mut(self.pages[i].get_or_insert_with(|| Arc::new(vec![0u8; len]))).as_mut_slice()
    }

    /// Words `addr..addr + n` for some 1 <= n <= max (up to the end of their page), as a
    /// view of the page: later writes copy the page first, so the view keeps these values.
    pub fn rows(&self, hemi: usize, slice: usize, addr: usize, max: usize) -> Rows {
        let page = self.pages[self.page_index(hemi, slice, addr)]
            .as_ref()
            .unwrap_or(&self.zero);
        let i = addr % PAGE_WORDS;
        Rows {
            data: page.clone(),
            off: i * self.lanes,
            n: max.min(PAGE_WORDS - i),
            width: self.lanes,
            stride: self.lanes,
            fold: None,
        }
    }

    /// Write the vectors of `rows` to consecutive words from `addr`, a page at a time.
    pub fn write_rows(&mut self, hemi: usize, slice: usize, addr: usize, rows: &Rows) {
        let lanes = self.lanes;
        let mut done = 0;
        while done < rows.n {
            let a = addr + done;
            let i = self.page_index(hemi, slice, a);
            let at = a % PAGE_WORDS;
            let m = (PAGE_WORDS - at).min(rows.n - done);
            let words = &mut self.page_mut(i)[at * lanes..(at + m) * lanes];
            match rows.sub(done, m).contiguous() {
                Some(run) => words.copy_from_slice(run),
                None => {
                    for (r, word) in words.chunks_mut(lanes).enumerate() {
                        word.copy_from_slice(rows.row(done + r));
                    }
                }
            }
            done += m;
        }
    }

    /// Write byte `lane` of `data` to that lane of word `addr`, for each (lane, addr) of
    /// `lanes` (a scatter), looking each page up once per run of lanes on it.
    pub fn write_lanes(&mut self, hemi: usize, slice: usize, lanes: &[(u32, u32)], data: &[u8]) {
        let width = self.lanes;
        let first = self.page_index(hemi, slice, 0);
        let page_of = move |&(_, addr): &(u32, u32)| first + addr as usize / PAGE_WORDS;
        let mut k = 0;
        while k < lanes.len() {
            let i = page_of(&lanes[k]);
            let run = lanes[k..].iter().take_while(|l| page_of(l) == i).count();
            let page = self.page_mut(i);
            for &(lane, addr) in &lanes[k..k + run] {
                page[(addr as usize % PAGE_WORDS) * width + lane as usize] = data[lane as usize];
            }
            k += run;
        }
    }

    /// Forget the pages of the slices marked in `which` (by `hemi * slices + slice`).
    pub fn drop_slices(&mut self, which: &[bool]) {
        let per = self.pages_per_slice;
        for (pages, _) in self.pages.chunks_mut(per).zip(which).filter(|(_, w)| **w) {
            pages.fill(None);
        }
    }

    /// Take the pages of the slices marked in `which` from `other`.
    pub fn move_slices(&mut self, other: &mut Sram, which: &[bool]) {
        let per = self.pages_per_slice;
        let slices = self.pages.chunks_mut(per).zip(other.pages.chunks_mut(per));
        for ((mine, theirs), _) in slices.zip(which).filter(|(_, w)| **w) {
            for (m, t) in mine.iter_mut().zip(theirs) {
                *m = t.take();
            }
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
        // And 300 stored end to end (copied a page at a time).
        let run = Rows::new(data[..300 * lanes].to_vec(), lanes);
        a.write_rows(0, 1, addr, &run);
        for r in 0..300 {
            b.write(0, 1, addr + r, run.row(r));
        }
        // A scatter whose lanes land on words of two pages.
        let lanes_at: Vec<(u32, u32)> = (0..lanes as u32)
            .map(|l| (l, (PAGE_WORDS as u32 - 2) + l % 4))
            .collect();
        let word: Vec<u8> = (100..100 + lanes as u8).collect();
        a.write_lanes(0, 3, &lanes_at, &word);
        for &(l, at) in &lanes_at {
            b.word_mut(0, 3, at as usize)[l as usize] = word[l as usize];
        }
        for (h, s, at) in [
            (1, 2, addr),
            (1, 2, addr + 199),
            (0, 1, addr),
            (0, 1, PAGE_WORDS),
            (0, 1, addr + 299),
            (0, 3, PAGE_WORDS - 2),
            (0, 3, PAGE_WORDS + 1),
        ] {
            assert_eq!(a.word(h, s, at), b.word(h, s, at), "{h} {s} {at}");
        }
        assert_eq!(a.allocated_bytes(), b.allocated_bytes());
    }

    #[test]
    fn dropped_slices_can_be_handed_back() {
        let lanes = 8;
        let mut live = Sram::new(2, 512, lanes);
        live.write(0, 0, 3, &[1; 8]);
        live.write(1, 1, 300, &[2; 8]);
        let mut saved = live.clone();
        // Slice (1, 1) is left out of the saved copy, then handed back as it is now.
        let which = [false, false, false, true];
        saved.drop_slices(&which);
        assert!(saved.word(1, 1, 300).is_none());
        live.write(1, 1, 300, &[3; 8]);
        live.write(0, 0, 3, &[4; 8]);
        saved.move_slices(&mut live, &which);
        assert_eq!(saved.word(1, 1, 300), Some(&[3u8; 8][..]));
        assert_eq!(saved.word(0, 0, 3), Some(&[1u8; 8][..]));
    }
}
