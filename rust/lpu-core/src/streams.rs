//! Stream registers without moving bytes (design idea 3).
//!
//! On the chip a value written onto an eastward stream at position p on cycle T is at
//! position p+h on cycle T+h, until a slice at a later position overwrites it or it
//! falls off the edge. Every value therefore lives on one diagonal, key T - p (T + p
//! for westward streams). A reader at position q on cycle t sees, on diagonal t - q,
//! the writer with the largest p <= q (smallest p >= q westward). Values are kept in a
//! ring of diagonal buckets per stream, so reads and writes cost O(writers on that
//! diagonal) and idle cycles cost nothing.

use crate::isa::StreamRef;
use std::sync::Arc;

/// Most values [`Streams::run`] copies at a time.
const COPY_RUN: usize = 32;

/// `n` vectors of `width` bytes in a shared buffer, vector i at byte `off + i * stride`,
/// or where `fold` puts it. Batched values travel as these without being copied: a run
/// of SRAM words is a view of an SRAM page, a batch's results are one buffer for all
/// its cycles.
#[derive(Clone, Debug)]
pub struct Rows {
    pub data: Arc<Vec<u8>>,
    pub off: usize,
    pub n: usize,
    pub width: usize,
    pub stride: usize,
    pub fold: Option<Fold>,
}

/// The results of a batch stored class by class: of its `k` vectors, j = c + q p is at
/// place start(c) + q, class c (vectors c, c + p, c + 2p, ...) end to end after the
/// classes before it. A batch whose operands come from p slices in turn computes them
/// in that order, and p writers take one class each: everyone walks memory forwards.
/// A view of some of the vectors starts at vector `first` of the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fold {
    pub p: usize,
    pub k: usize,
    pub first: usize,
}

impl Fold {
    /// The place of vector `j` of the batch.
    #[inline]
    pub fn place(&self, j: usize) -> usize {
        let (c, q) = (j % self.p, j / self.p);
        c * (self.k / self.p) + c.min(self.k % self.p) + q
    }
}

impl Rows {
    /// Vectors stored end to end.
    pub fn new(data: Vec<u8>, width: usize) -> Self {
        Rows {
            n: data.len() / width,
            data: Arc::new(data),
            off: 0,
            width,
            stride: width,
            fold: None,
        }
    }

    /// Vectors stored in classes of `p` (see [`Fold`]; end to end when p is 1).
    pub fn folded(data: Vec<u8>, width: usize, p: usize) -> Self {
        let rows = Rows::new(data, width);
        let fold = (p > 1).then_some(Fold {
            p,
            k: rows.n,
            first: 0,
        });
        Rows { fold, ..rows }
    }

    /// Where vector `i` starts in `data`.
    #[inline]
    pub fn offset(&self, i: usize) -> usize {
        match self.fold {
            None => self.off + i * self.stride,
            Some(f) => self.off + f.place(f.first + i) * self.stride,
        }
    }

    /// Vector `i`.
    #[inline]
    pub fn row(&self, i: usize) -> &[u8] {
        let at = self.offset(i);
        &self.data[at..at + self.width]
    }

    /// The buffer from vector `i` to its end.
    #[inline]
    pub fn tail(&self, i: usize) -> &[u8] {
        &self.data[self.offset(i)..]
    }

    /// Vectors `i..i + m` (sharing the buffer).
    pub fn sub(&self, i: usize, m: usize) -> Rows {
        debug_assert!(i + m <= self.n);
        match self.fold {
            None => Rows {
                data: self.data.clone(),
                off: self.off + i * self.stride,
                n: m,
                ..*self
            },
            Some(f) => Rows {
                data: self.data.clone(),
                n: m,
                fold: Some(Fold {
                    first: f.first + i,
                    ..f
                }),
                ..*self
            },
        }
    }

    /// Every `every`-th vector from vector `i`, `m` of them, as a view without a fold,
    /// where that exists (folded: when they are all of one class, or just one).
    pub fn every(&self, i: usize, every: usize, m: usize) -> Option<Rows> {
        debug_assert!(m == 0 || i + (m - 1) * every < self.n);
        let stride = match self.fold {
            None => self.stride * every,
            Some(f) if every.is_multiple_of(f.p) => self.stride * (every / f.p),
            Some(_) if m <= 1 => self.stride,
            Some(_) => return None,
        };
        Some(Rows {
            data: self.data.clone(),
            off: self.offset(i),
            n: m,
            width: self.width,
            stride,
            fold: None,
        })
    }

    /// The vectors end to end, when they are stored that way.
    pub fn contiguous(&self) -> Option<&[u8]> {
        (self.stride == self.width && self.fold.is_none())
            .then(|| &self.data[self.off..self.off + self.n * self.width])
    }
}

/// The values of consecutive streams (byte planes) for a run of reads, in one list:
/// plane b's are `self[b]`, all planes as long.
#[derive(Debug, Default)]
pub struct PlaneRefs<'a> {
    refs: Vec<&'a [u8]>,
    stride: usize,
    len: usize,
}

impl<'a> PlaneRefs<'a> {
    /// `planes` planes of room for `k` values each, none there yet.
    pub fn new(planes: usize, k: usize) -> Self {
        PlaneRefs {
            refs: vec![&[]; planes * k],
            stride: k,
            len: 0,
        }
    }

    /// Read j's values, plane by plane (j: the reads so far).
    pub fn put(&mut self, j: usize, values: impl Iterator<Item = &'a [u8]>) {
        for (b, v) in values.enumerate() {
            self.refs[b * self.stride + j] = v;
        }
        self.len = j + 1;
    }

    /// The values of every plane, from plane 0 on.
    pub fn iter(&self) -> impl Iterator<Item = &[&'a [u8]]> {
        let planes = self.refs.len().checked_div(self.stride).unwrap_or(0);
        (0..planes).map(|b| &self[b])
    }
}

impl<'a> std::ops::Index<usize> for PlaneRefs<'a> {
    type Output = [&'a [u8]];
    fn index(&self, b: usize) -> &[&'a [u8]] {
        &self.refs[b * self.stride..][..self.len]
    }
}

/// Values written by one batched instruction: `rows.n` vectors at cycles
/// `first + k * stride` at one position (see the engine's batched execution).
#[derive(Clone, Debug)]
struct Bulk {
    sid: usize,
    pos: u32,
    key0: i64,
    step: i64,
    last_cycle: u64,
    rows: Rows,
    writer: u32,
}

impl Bulk {
    /// Whether some of its keys lie in [lo, hi].
    fn overlaps(&self, lo: i64, hi: i64) -> bool {
        self.key0 <= hi && self.key0 + (self.rows.n as i64 - 1) * self.step >= lo
    }

    fn index(&self, key: i64) -> Option<usize> {
        // Range first, and no division for a step of 1: this runs for every batched
        // writer of a stream on each lookup, and a 64-bit division is tens of cycles.
        let off = key - self.key0;
        if off < 0 || off > (self.rows.n as i64 - 1) * self.step {
            return None;
        }
        if self.step == 1 {
            return Some(off as usize);
        }
        (off % self.step == 0).then(|| (off / self.step) as usize)
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    pos: u32,
    slot: u32,
    writer: u32,
}

/// The values one-by-one writers put on one diagonal of one stream. A bucket holds its
/// key's values only if it was written since the store was last emptied (its `epoch`
/// is the store's): emptying the store leaves the buckets as they are.
///
/// Most diagonals have one writer: its entry is kept in the bucket itself, the others
/// behind a pointer (a list behind a pointer for every bucket made each lookup and
/// write two cache misses, the bucket and its list, in the ring's cold lines).
#[derive(Clone, Debug)]
struct Bucket {
    key: i64,
    epoch: u32,
    n: u32,
    first: Entry,
    // Boxed to keep the bucket at 40 bytes (a list in place would make it 56).
    #[allow(clippy::box_collection)]
    more: Option<Box<Vec<Entry>>>,
}

// The ring's buckets are read on every one-by-one read and write: keep them small.
const _: () = assert!(std::mem::size_of::<Bucket>() == 40);

impl Default for Bucket {
    fn default() -> Self {
        Bucket {
            key: i64::MIN,
            epoch: 0,
            n: 0,
            first: Entry {
                pos: 0,
                slot: 0,
                writer: 0,
            },
            more: None,
        }
    }
}

impl Bucket {
    fn entries(&self) -> impl Iterator<Item = &Entry> + Clone {
        let first = (self.n > 0).then_some(&self.first);
        let more = (self.n > 1).then_some(self.more.as_deref()).flatten();
        first.into_iter().chain(more.into_iter().flatten())
    }

    fn entries_mut(&mut self) -> impl Iterator<Item = &mut Entry> {
        let n = self.n;
        let first = (n > 0).then_some(&mut self.first);
        let more = (n > 1).then_some(self.more.as_deref_mut()).flatten();
        first.into_iter().chain(more.into_iter().flatten())
    }

    fn push(&mut self, e: Entry) {
        if self.n == 0 {
            self.first = e;
        } else {
            self.more.get_or_insert_with(Default::default).push(e);
        }
        self.n += 1;
    }

    /// Empty, as holding `key` of `epoch`.
    fn reuse(&mut self, key: i64, epoch: u32) {
        self.key = key;
        self.epoch = epoch;
        self.n = 0;
        if let Some(m) = &mut self.more {
            m.clear();
        }
    }
}

pub struct Streams {
    lanes: usize,
    streams: usize,
    mask: usize,
    buckets: Vec<Bucket>,
    /// How many times the store was emptied (see [`Bucket`]), modulo 2^32 (when it
    /// wraps, every bucket is marked empty): emptying the buckets written since the
    /// time before was most of a decode step's reset (11 us).
    epoch: u32,
    arena: Vec<u8>,
    free: Vec<u32>,
    /// Values currently stored (for occupancy statistics).
    live: usize,
    /// Batched values, by stream id.
    bulk: Vec<Vec<Bulk>>,
    /// The first cycle on which some batched values will have left the chip, overall
    /// and by stream id.
    prune_at: u64,
    expiry: Vec<u64>,
    /// By stream id, the least and greatest diagonal a one-by-one value was ever put on:
    /// reads of batched values outside it need not look for one.
    single_keys: Vec<(i64, i64)>,
    positions: u32,
}

/// A write that landed on a register another writer had already written that cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub other_writer: u32,
}

/// A copy. An empty store (no values: a decode step's run copies the chip, to redo from,
/// a few cycles after a reset) is copied as a new one: its arena holds no value, and a
/// bucket holds none whatever its key says, so the copy has no buckets until its first
/// value (making 2 MB of empty ones was 0.6 % of a decode step).
impl Clone for Streams {
    fn clone(&self) -> Self {
        let empty = self.live == 0 && self.bulk.iter().all(Vec::is_empty);
        Streams {
            lanes: self.lanes,
            streams: self.streams,
            mask: self.mask,
            buckets: match empty {
                true => Vec::new(),
                false => self.buckets.clone(),
            },
            epoch: self.epoch,
            arena: match empty {
                true => Vec::new(),
                false => self.arena.clone(),
            },
            free: match empty {
                true => Vec::new(),
                false => self.free.clone(),
            },
            live: self.live,
            bulk: self.bulk.clone(),
            prune_at: self.prune_at,
            expiry: self.expiry.clone(),
            single_keys: self.single_keys.clone(),
            positions: self.positions,
        }
    }
}

impl Streams {
    /// `horizon` must exceed the longest functional latency plus the number of positions:
    /// no live diagonal is further apart than that.
    pub fn new(streams: usize, lanes: usize, horizon: usize, positions: u32) -> Self {
        let ring = (horizon + 2).next_power_of_two();
        Streams {
            lanes,
            streams,
            mask: ring - 1,
            buckets: Vec::new(), // made on the first value (see `write`)
            epoch: 0,
            arena: Vec::new(),
            free: Vec::new(),
            live: 0,
            bulk: vec![Vec::new(); 2 * streams],
            prune_at: u64::MAX,
            expiry: vec![u64::MAX; 2 * streams],
            single_keys: vec![(i64::MAX, i64::MIN); 2 * streams],
            positions,
        }
    }

    /// Empty again, as `new` made it, keeping the memory of the buckets and the value
    /// arena (a decode step resets the chip every step; growing them again each time
    /// costs reallocation, copying and page faults).
    pub fn clear(&mut self) {
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.buckets.iter_mut().for_each(|b| b.reuse(i64::MIN, 0));
            self.epoch = 1;
        }
        self.free.clear();
        self.free
            .extend((0..(self.arena.len() / self.lanes.max(1)) as u32).rev());
        self.live = 0;
        self.bulk.iter_mut().for_each(Vec::clear);
        self.prune_at = u64::MAX;
        self.expiry.fill(u64::MAX);
        self.single_keys.fill((i64::MAX, i64::MIN));
    }

    /// Whether one-by-one values may lie on diagonals lo..=hi of stream `sid`.
    fn singles_between(&self, sid: usize, lo: i64, hi: i64) -> bool {
        let (min, max) = self.single_keys[sid];
        lo <= max && hi >= min
    }

    fn sid(&self, s: StreamRef) -> usize {
        s.index as usize + if s.west { self.streams } else { 0 }
    }

    /// Whether a batched writer at `pos` may put `n` values on stream `s` on cycles
    /// `first + k * stride`: no other writer put a value on that register on any of them.
    pub fn bulk_free(&self, s: StreamRef, pos: u32, first: u64, stride: u64, n: usize) -> bool {
        let key0 = Self::key(s, pos, first);
        let keys = (0..n).map(|k| key0 + (k as u64 * stride) as i64);
        let last = key0 + (n.saturating_sub(1) as u64 * stride) as i64;
        let sid = self.sid(s);
        !self.bulk[sid]
            .iter()
            .filter(|o| o.pos == pos && o.overlaps(key0, last))
            .any(|o| keys.clone().any(|key| o.index(key).is_some()))
            && (!self.singles_between(sid, key0, last)
                || keys.clone().all(|key| {
                    self.holding(s, key)
                        .is_none_or(|b| b.entries().all(|e| e.pos != pos))
                }))
    }

    /// Register `rows` written on stream `s` at `pos` on cycles `first + k * stride`
    /// (the caller checked [`Streams::bulk_free`]).
    pub fn write_bulk(
        &mut self,
        s: StreamRef,
        pos: u32,
        first: u64,
        stride: u64,
        rows: Rows,
        writer: u32,
    ) {
        debug_assert_eq!(rows.width, self.lanes);
        debug_assert!(self.bulk_free(s, pos, first, stride, rows.n));
        let b = Bulk {
            sid: self.sid(s),
            pos,
            key0: Self::key(s, pos, first),
            step: stride as i64,
            last_cycle: first + (rows.n as u64 - 1) * stride,
            rows,
            writer,
        };
        let gone = b.last_cycle + self.positions as u64 + 1;
        self.prune_at = self.prune_at.min(gone);
        self.expiry[b.sid] = self.expiry[b.sid].min(gone);
        self.bulk[b.sid].push(b);
    }

    /// The values a reader at `pos` sees on stream `s` on cycles t, t + d, ... (at most
    /// `k`), up to the first cycle with no value, in pieces (see [`Streams::run`]).
    pub fn runs(&self, s: StreamRef, pos: u32, t: u64, d: u64, k: usize) -> Vec<Rows> {
        let mut pieces = Vec::new();
        self.runs_into(s, pos, t, d, k, &mut pieces);
        pieces
    }

    /// [`Streams::runs`], the pieces appended to `pieces`.
    pub fn runs_into(
        &self,
        s: StreamRef,
        pos: u32,
        t: u64,
        d: u64,
        k: usize,
        pieces: &mut Vec<Rows>,
    ) {
        let mut j = 0;
        while j < k {
            let Some(rows) = self.run(s, pos, t + j as u64 * d, d, k - j) else {
                break;
            };
            j += rows.n;
            pieces.push(rows);
        }
    }

    /// The first of those values: a view of one batched writer's buffer for as many as
    /// it provides in order, else a copy of at most COPY_RUN of them (so that the next
    /// piece views what a batched writer provides after them: a run of results began
    /// with a few single issues and was copied whole, 1,000 vectors at a time). None:
    /// the first value is missing.
    fn run(&self, s: StreamRef, pos: u32, t: u64, d: u64, k: usize) -> Option<Rows> {
        if let Some(view) = self.span(s, pos, t, d, k) {
            return Some(view);
        }
        let refs = self.refs(s, pos, t, d, k.min(COPY_RUN));
        (!refs.is_empty()).then(|| Rows::new(refs.concat(), self.lanes))
    }

    /// How far upstream of a reader at `pos` a writer at `p` is (None: downstream).
    fn distance(s: StreamRef, pos: u32, p: u32) -> Option<u32> {
        if s.west {
            p.checked_sub(pos)
        } else {
            pos.checked_sub(p)
        }
    }

    /// `run` as a view of one batched writer that provides the reads' values in order
    /// (every `d / step`-th of its vectors).
    fn span(&self, s: StreamRef, pos: u32, t: u64, d: u64, k: usize) -> Option<Rows> {
        let key0 = Self::key(s, pos, t);
        let (bp, b, i0) = self.bulk_best(s, pos, key0)?;
        // (No division for steps of 1, the usual case: this runs for every stream of
        // every batch, and a division is tens of cycles.)
        let step = b.step as u64;
        let every = match step {
            1 => d as usize,
            _ if d.is_multiple_of(step) => (d / step) as usize,
            _ => return None,
        };
        let near = Self::distance(s, pos, bp).expect("upstream");
        let left = b.rows.n - i0;
        let mut m = k.min(if every == 1 {
            left
        } else {
            left.div_ceil(every)
        });
        let key = |j: usize| key0 + (j as u64 * d) as i64;
        // A batched writer between it and the reader takes over from its first value.
        for o in &self.bulk[b.sid] {
            // (Most other writers of the stream have no key in the window: the search
            // below divides once per key.)
            if Self::distance(s, pos, o.pos).is_some_and(|x| x < near)
                && o.overlaps(key0, key(m.saturating_sub(1)))
            {
                if let Some(j) = (0..m).find(|j| o.index(key(*j)).is_some()) {
                    m = j;
                }
            }
        }
        // So does a one-by-one writer at or between (it wins a tie of positions).
        let singles = m > 0 && self.singles_between(b.sid, key0, key(m - 1));
        if let Some(j) = (0..m).filter(|_| singles).find(|j| {
            self.holding(s, key(*j)).is_some_and(|b| {
                b.entries()
                    .any(|e| Self::distance(s, pos, e.pos).is_some_and(|x| x <= near))
            })
        }) {
            m = j;
        }
        if m == 0 {
            return None;
        }
        b.rows.every(i0, every, m)
    }

    /// The values a reader at `pos` sees on cycles t, t + d, ... (at most `k`), up to the
    /// first cycle with no value, as references into the writers' buffers. For each
    /// cycle the closest writer upstream wins; each batched writer is visited only at
    /// its keys inside the window.
    pub fn refs(&self, s: StreamRef, pos: u32, t: u64, d: u64, k: usize) -> Vec<&[u8]> {
        self.lookup(s, pos, t, d, k, false)
    }

    /// [`Streams::refs`], where each value from a batched writer runs on to the end of
    /// its writer's buffer (the first `lanes` bytes are the value): a caller that finds
    /// the next value at the next address can take both from the first reference.
    pub fn tails(&self, s: StreamRef, pos: u32, t: u64, d: u64, k: usize) -> Vec<&[u8]> {
        self.lookup(s, pos, t, d, k, true)
    }

    fn lookup(&self, s: StreamRef, pos: u32, t: u64, d: u64, k: usize, tail: bool) -> Vec<&[u8]> {
        let mut out: Vec<&[u8]> = vec![&[]; k];
        let n = self.lookup_into(s, pos, t, d, tail, &mut out, &mut vec![0; k]);
        out.truncate(n);
        out
    }

    /// [`Streams::tails`] (`tail`) or [`Streams::refs`] of streams [s, s + n): one
    /// list for all, as long as the shortest.
    #[allow(clippy::too_many_arguments)]
    pub fn planes(
        &self,
        s: StreamRef,
        n: u32,
        pos: u32,
        t: u64,
        d: u64,
        k: usize,
        tail: bool,
    ) -> PlaneRefs<'_> {
        let mut p = PlaneRefs::new(n as usize, k);
        let mut best = vec![0; k];
        p.len = k;
        for (b, out) in p.refs.chunks_exact_mut(k.max(1)).enumerate() {
            let sb = StreamRef {
                index: s.index + b as u32,
                west: s.west,
            };
            let m = self.lookup_into(sb, pos, t, d, tail, out, &mut best);
            p.len = p.len.min(m);
        }
        p
    }

    /// The values for `out.len()` reads (see `refs` and `tails`) into `out`; returns how
    /// many there are before the first read with none. `best` is room for as many.
    #[allow(clippy::too_many_arguments)]
    fn lookup_into<'a>(
        &'a self,
        s: StreamRef,
        pos: u32,
        t: u64,
        d: u64,
        tail: bool,
        out: &mut [&'a [u8]],
        best: &mut [u32],
    ) -> usize {
        let k = out.len();
        if k == 0 {
            return 0;
        }
        let key0 = Self::key(s, pos, t);
        let last = key0 + ((k as u64 - 1) * d) as i64;
        let d = d as i64;
        // Per read: the value of the closest batched writer, and its distance.
        out.fill(&[]);
        best.fill(u32::MAX);
        let list = &self.bulk[self.sid(s)];
        for b in list {
            // Not the writers whose values all lie off the reads' diagonals (no division
            // for them: a lane tree's streams hold many).
            if !b.overlaps(key0, last) {
                continue;
            }
            let Some(dist) = Self::distance(s, pos, b.pos) else {
                continue;
            };
            let first = ((key0 - b.key0).max(0) + b.step - 1) / b.step;
            let end = ((last - b.key0).div_euclid(b.step) + 1).min(b.rows.n as i64);
            macro_rules! take {
                ($j:expr, $i:expr) => {{
                    let (j, i) = ($j, $i as usize);
                    if dist < best[j] {
                        best[j] = dist;
                        out[j] = if tail { b.rows.tail(i) } else { b.rows.row(i) };
                    }
                }};
            }
            // off = b.key0 + i * b.step - key0 steps by b.step.
            let mut off = b.key0 + first * b.step - key0;
            if b.step % d == 0 {
                // Every value of the writer is read (the common case), or none is.
                if off % d == 0 {
                    let every = (b.step / d) as usize;
                    for (n, i) in (first..end.max(first)).enumerate() {
                        take!((off / d) as usize + n * every, i);
                    }
                }
                continue;
            }
            // Track off mod d without dividing for every i.
            let mut rem = off % d;
            let step_rem = b.step % d;
            for i in first..end.max(first) {
                if rem == 0 {
                    take!((off / d) as usize, i);
                }
                off += b.step;
                rem += step_rem;
                if rem >= d {
                    rem -= d;
                }
            }
        }
        let lanes = self.lanes;
        if self.singles_between(self.sid(s), key0, last) {
            for (j, (v, &dist)) in out.iter_mut().zip(best.iter()).enumerate() {
                let key = key0 + j as i64 * d;
                let Some(bucket) = self.holding(s, key) else {
                    continue;
                };
                let ring = bucket
                    .entries()
                    .filter_map(|e| Self::distance(s, pos, e.pos).map(|x| (x, e.slot)))
                    .min();
                // A one-by-one writer wins a tie of positions: it wrote last.
                if let Some((_, slot)) = ring.filter(|(x, _)| *x <= dist) {
                    *v = &self.arena[slot as usize * lanes..(slot as usize + 1) * lanes];
                }
            }
        }
        // Up to the first read with no value.
        out.iter().position(|v| v.is_empty()).unwrap_or(k)
    }

    /// Forget batched values that have left the chip before `cycle`.
    pub fn prune(&mut self, cycle: u64) {
        if cycle < self.prune_at {
            return;
        }
        let gone = |b: &Bulk| b.last_cycle + self.positions as u64 + 1;
        self.prune_at = u64::MAX;
        // Only the streams with values to forget are looked through.
        for (list, expiry) in self.bulk.iter_mut().zip(&mut self.expiry) {
            if *expiry <= cycle {
                list.retain(|b| gone(b) > cycle);
                *expiry = list.iter().map(gone).min().unwrap_or(u64::MAX);
            }
            self.prune_at = self.prune_at.min(*expiry);
        }
    }

    fn bulk_best(&self, s: StreamRef, pos: u32, key: i64) -> Option<(u32, &Bulk, usize)> {
        let sid = self.sid(s);
        let mut best: Option<(u32, &Bulk, usize)> = None;
        for b in &self.bulk[sid] {
            let upstream = if s.west { b.pos >= pos } else { b.pos <= pos };
            if !upstream {
                continue;
            }
            if let Some(i) = b.index(key) {
                let better = match best {
                    None => true,
                    Some((p, _, _)) => {
                        if s.west {
                            b.pos < p
                        } else {
                            b.pos > p
                        }
                    }
                };
                if better {
                    best = Some((b.pos, b, i));
                }
            }
        }
        best
    }

    fn key(s: StreamRef, pos: u32, cycle: u64) -> i64 {
        if s.west {
            cycle as i64 + pos as i64
        } else {
            cycle as i64 - pos as i64
        }
    }

    fn bucket(&self, s: StreamRef, key: i64) -> usize {
        (key as usize & self.mask) * 2 * self.streams + self.sid(s)
    }

    /// The bucket of a key, to read, if it holds that key's values (none are allocated
    /// until a value is written).
    fn holding(&self, s: StreamRef, key: i64) -> Option<&Bucket> {
        self.buckets
            .get(self.bucket(s, key))
            .filter(|b| b.key == key && b.epoch == self.epoch)
    }

    /// Put `data` on stream `s` at `pos` on `cycle`. Returns the earlier writer when the
    /// register was already written by someone else on that cycle (the new value wins).
    pub fn write(
        &mut self,
        s: StreamRef,
        pos: u32,
        cycle: u64,
        data: &[u8],
        writer: u32,
    ) -> Result<(), Conflict> {
        let key = Self::key(s, pos, cycle);
        if self.buckets.is_empty() {
            self.buckets = vec![Bucket::default(); 2 * self.streams * (self.mask + 1)];
        }
        let b = self.bucket(s, key);
        let sid = self.sid(s);
        let span = &mut self.single_keys[sid];
        *span = (span.0.min(key), span.1.max(key));
        let epoch = self.epoch;
        let bucket = &mut self.buckets[b];
        if bucket.epoch != epoch {
            // Written before the store was emptied: its values went with the arena.
            bucket.reuse(key, epoch);
        } else if bucket.key != key {
            // Everything in a reused bucket is on a diagonal no reader can see any more.
            self.live -= bucket.n as usize;
            self.free.extend(bucket.entries().map(|e| e.slot));
            bucket.reuse(key, epoch);
        }
        let lanes = self.lanes;
        let bulk_writer = self.bulk[sid]
            .iter()
            .find(|o| o.pos == pos && o.index(key).is_some())
            .map(|o| o.writer);
        if let Some(e) = self.buckets[b].entries_mut().find(|e| e.pos == pos) {
            let (slot, other_writer) = (e.slot as usize, e.writer);
            e.writer = writer;
            self.arena[slot * lanes..(slot + 1) * lanes].copy_from_slice(data);
            return Err(Conflict { other_writer });
        }
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.arena.resize(self.arena.len() + lanes, 0);
                (self.arena.len() / lanes - 1) as u32
            }
        };
        let off = slot as usize * lanes;
        self.arena[off..off + lanes].copy_from_slice(data);
        self.buckets[b].push(Entry { pos, slot, writer });
        self.live += 1;
        match bulk_writer {
            Some(other_writer) => Err(Conflict { other_writer }),
            None => Ok(()),
        }
    }

    /// The value a reader at `pos` sees on stream `s` on `cycle`, if any.
    pub fn read(&self, s: StreamRef, pos: u32, cycle: u64) -> Option<&[u8]> {
        self.read_traced(s, pos, cycle).map(|(v, _, _)| v)
    }

    /// `read`, with the value's writer and the cycle it put the value on the stream.
    pub fn read_traced(&self, s: StreamRef, pos: u32, cycle: u64) -> Option<(&[u8], u32, u64)> {
        let key = Self::key(s, pos, cycle);
        let ring = match self.holding(s, key) {
            None => None,
            Some(bucket) if s.west => bucket
                .entries()
                .filter(|e| e.pos >= pos)
                .min_by_key(|e| e.pos),
            Some(bucket) => bucket
                .entries()
                .filter(|e| e.pos <= pos)
                .max_by_key(|e| e.pos),
        };
        let lanes = self.lanes;
        // The cycle a writer at position p put a value on this diagonal.
        let written = |p: u32| {
            if s.west {
                (key - p as i64) as u64
            } else {
                (key + p as i64) as u64
            }
        };
        let from_ring = |e: &Entry| {
            let v = &self.arena[e.slot as usize * lanes..(e.slot as usize + 1) * lanes];
            (v, e.writer, written(e.pos))
        };
        fn from_bulk(b: &Bulk, i: usize, landed: u64) -> (&[u8], u32, u64) {
            (b.rows.row(i), b.writer, landed)
        }
        // A one-by-one write wins a tie with a batched one at the same position: it is
        // the later writer of that register.
        match (ring, self.bulk_best(s, pos, key)) {
            (Some(e), None) => Some(from_ring(e)),
            (None, Some((_, b, i))) => Some(from_bulk(b, i, written(b.pos))),
            (None, None) => None,
            (Some(e), Some((bp, b, i))) => {
                let ring_wins = if s.west { e.pos <= bp } else { e.pos >= bp };
                if ring_wins {
                    Some(from_ring(e))
                } else {
                    Some(from_bulk(b, i, written(b.pos)))
                }
            }
        }
    }

    /// Stored values (an upper bound on the values still travelling on the chip).
    pub fn live(&self) -> usize {
        self.live
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const E: StreamRef = StreamRef {
        index: 3,
        west: false,
    };
    const W: StreamRef = StreamRef {
        index: 3,
        west: true,
    };

    #[test]
    fn folded_rows_are_the_vectors_in_class_order() {
        let width = 3;
        for (k, p) in [(1, 4), (10, 3), (12, 4), (13, 5), (7, 7), (9, 1)] {
            // Vector j holds j in every byte; stored class by class.
            let mut data = vec![0u8; k * width];
            let fold = Fold { p, k, first: 0 };
            for j in 0..k {
                let at = fold.place(j) * width;
                data[at..at + width].fill(j as u8);
            }
            // Every place is taken once: the bytes are a permutation of the vectors.
            let mut seen: Vec<u8> = data.iter().step_by(width).copied().collect();
            seen.sort_unstable();
            assert_eq!(seen, (0..k as u8).collect::<Vec<_>>(), "k {k} p {p}");
            let rows = Rows::folded(data, width, p);
            for j in 0..k {
                assert_eq!(rows.row(j), &[j as u8; 3][..]);
                assert_eq!(&rows.tail(j)[..width], &[j as u8; 3][..]);
            }
            for i in 0..k {
                for m in 0..=k - i {
                    let sub = rows.sub(i, m);
                    assert!((0..m).all(|j| sub.row(j) == rows.row(i + j)));
                    for every in 1..=k {
                        let n = if m == 0 { 0 } else { (m - 1) / every + 1 };
                        match sub.every(0, every, n) {
                            Some(v) => {
                                assert!(v.fold.is_none());
                                assert!((0..n).all(|j| v.row(j) == rows.row(i + j * every)));
                            }
                            // Only a folded view of vectors of several classes has none.
                            None => assert!(p > 1 && !every.is_multiple_of(p) && n > 1),
                        }
                    }
                }
            }
            assert_eq!(rows.contiguous().is_some(), p == 1);
        }
    }

    #[test]
    fn values_travel_one_position_per_cycle() {
        let mut s = Streams::new(32, 4, 200, 200);
        s.write(E, 10, 100, &[1, 2, 3, 4], 0).unwrap();
        assert_eq!(s.read(E, 10, 100), Some(&[1u8, 2, 3, 4][..]));
        assert_eq!(s.read(E, 15, 105), Some(&[1u8, 2, 3, 4][..]));
        assert_eq!(s.read(E, 15, 104), None);
        assert_eq!(
            s.read(E, 9, 99),
            None,
            "nothing flows west on an eastward stream"
        );
        s.write(W, 10, 100, &[9; 4], 0).unwrap();
        assert_eq!(s.read(W, 4, 106), Some(&[9u8; 4][..]));
        assert_eq!(s.read(W, 11, 99), None);
    }

    #[test]
    fn later_writer_overwrites_downstream() {
        let mut s = Streams::new(32, 1, 200, 200);
        s.write(E, 10, 100, &[1], 0).unwrap();
        s.write(E, 12, 102, &[2], 1).unwrap(); // same diagonal, further east
        assert_eq!(s.read(E, 11, 101), Some(&[1u8][..]));
        assert_eq!(s.read(E, 20, 110), Some(&[2u8][..]));
        assert_eq!(
            s.write(E, 12, 102, &[3], 5),
            Err(Conflict { other_writer: 1 })
        );
        assert_eq!(s.read(E, 20, 110), Some(&[3u8][..]));
    }

    #[test]
    fn buckets_are_recycled() {
        let mut s = Streams::new(32, 1, 8, 8);
        for c in 0..10_000u64 {
            s.write(E, 0, c, &[c as u8], 0).unwrap();
            assert_eq!(s.read(E, 3, c + 3), Some(&[c as u8][..]));
        }
        assert!(s.live() <= 16);
    }

    #[test]
    fn a_cleared_store_holds_nothing_and_fills_again() {
        // Values on both directions, some in buckets used twice (the ring has 16), and
        // a copy made before the clear keeps its own.
        let mut s = Streams::new(32, 1, 8, 8);
        for c in 0..40u64 {
            s.write(E, 0, c, &[c as u8], 0).unwrap();
            s.write(W, 3, c, &[!(c as u8)], 0).unwrap();
        }
        let copy = s.clone();
        s.clear();
        assert_eq!(s.live(), 0);
        for c in 0..40u64 {
            assert_eq!(s.read(E, 0, c), None);
            assert_eq!(s.read(W, 3, c), None);
        }
        assert_eq!(copy.read(E, 2, 41), Some(&[39u8][..]));
        s.write(E, 0, 39, &[7], 0).unwrap();
        assert_eq!(s.read(E, 2, 41), Some(&[7u8][..]));
        assert_eq!(s.read(E, 2, 40), None);
    }

    #[test]
    fn a_diagonal_written_again_after_a_clear_forgets_its_other_writers() {
        // Two writers on one diagonal; after a clear only the upstream one writes it
        // again: a reader past both sees that value, not the other writer's old one
        // (which was closer), and the old one's place in the arena is used again.
        let mut s = Streams::new(32, 1, 8, 8);
        s.write(E, 0, 10, &[1], 0).unwrap();
        s.write(E, 2, 12, &[2], 1).unwrap();
        assert_eq!(s.read(E, 3, 13), Some(&[2u8][..]));
        s.clear();
        s.write(E, 0, 10, &[3], 0).unwrap();
        assert_eq!(s.read(E, 3, 13), Some(&[3u8][..]));
        assert_eq!(s.live(), 1);
        s.write(E, 2, 12, &[4], 1).unwrap();
        assert_eq!(s.read(E, 3, 13), Some(&[4u8][..]));
        assert_eq!(s.read(E, 1, 11), Some(&[3u8][..]));
    }

    #[test]
    fn a_bucket_of_an_epoch_before_the_count_wrapped_holds_nothing() {
        // A value written in epoch 1; the count then goes all the way round (to its
        // last value, then emptied: it wraps) and back to 1. The wrap marked every
        // bucket empty, so the old value is not taken for one of the new epoch 1.
        let mut s = Streams::new(32, 1, 8, 8);
        s.clear();
        assert_eq!(s.epoch, 1);
        s.write(E, 0, 20, &[5], 0).unwrap();
        s.epoch = u32::MAX;
        s.clear();
        s.epoch = 0;
        s.clear();
        assert_eq!(s.epoch, 1);
        assert_eq!(s.read(E, 1, 21), None);
    }
}
