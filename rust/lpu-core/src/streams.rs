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

#[derive(Clone, Copy, Debug)]
struct Entry {
    pos: u32,
    slot: u32,
    writer: u32,
}

#[derive(Clone, Debug)]
struct Bucket {
    key: i64,
    entries: Vec<Entry>,
}

#[derive(Clone)]
pub struct Streams {
    lanes: usize,
    streams: usize,
    mask: usize,
    buckets: Vec<Bucket>,
    arena: Vec<u8>,
    free: Vec<u32>,
    /// Values currently stored (for occupancy statistics).
    live: usize,
}

/// A write that landed on a register another writer had already written that cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub other_writer: u32,
}

impl Streams {
    /// `horizon` must exceed the longest functional latency plus the number of positions:
    /// no live diagonal is further apart than that.
    pub fn new(streams: usize, lanes: usize, horizon: usize) -> Self {
        let ring = (horizon + 2).next_power_of_two();
        Streams {
            lanes,
            streams,
            mask: ring - 1,
            buckets: vec![
                Bucket {
                    key: i64::MIN,
                    entries: Vec::new()
                };
                2 * streams * ring
            ],
            arena: Vec::new(),
            free: Vec::new(),
            live: 0,
        }
    }

    fn key(s: StreamRef, pos: u32, cycle: u64) -> i64 {
        if s.west {
            cycle as i64 + pos as i64
        } else {
            cycle as i64 - pos as i64
        }
    }

    fn bucket(&self, s: StreamRef, key: i64) -> usize {
        let sid = s.index as usize + if s.west { self.streams } else { 0 };
        sid * (self.mask + 1) + (key as usize & self.mask)
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
        let b = self.bucket(s, key);
        if self.buckets[b].key != key {
            // Everything in a reused bucket is on a diagonal no reader can see any more.
            let old = std::mem::take(&mut self.buckets[b].entries);
            self.live -= old.len();
            self.free.extend(old.iter().map(|e| e.slot));
            let bucket = &mut self.buckets[b];
            bucket.entries = old;
            bucket.entries.clear();
            bucket.key = key;
        }
        let lanes = self.lanes;
        if let Some(e) = self.buckets[b]
            .entries
            .iter()
            .find(|e| e.pos == pos)
            .copied()
        {
            let off = e.slot as usize * lanes;
            self.arena[off..off + lanes].copy_from_slice(data);
            let ent = self.buckets[b]
                .entries
                .iter_mut()
                .find(|x| x.pos == pos)
                .unwrap();
            ent.writer = writer;
            return Err(Conflict {
                other_writer: e.writer,
            });
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
        self.buckets[b].entries.push(Entry { pos, slot, writer });
        self.live += 1;
        Ok(())
    }

    /// The value a reader at `pos` sees on stream `s` on `cycle`, if any.
    pub fn read(&self, s: StreamRef, pos: u32, cycle: u64) -> Option<&[u8]> {
        let key = Self::key(s, pos, cycle);
        let bucket = &self.buckets[self.bucket(s, key)];
        if bucket.key != key {
            return None;
        }
        let best = if s.west {
            bucket
                .entries
                .iter()
                .filter(|e| e.pos >= pos)
                .min_by_key(|e| e.pos)
        } else {
            bucket
                .entries
                .iter()
                .filter(|e| e.pos <= pos)
                .max_by_key(|e| e.pos)
        }?;
        let off = best.slot as usize * self.lanes;
        Some(&self.arena[off..off + self.lanes])
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
    fn values_travel_one_position_per_cycle() {
        let mut s = Streams::new(32, 4, 200);
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
        let mut s = Streams::new(32, 1, 200);
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
        let mut s = Streams::new(32, 1, 8);
        for c in 0..10_000u64 {
            s.write(E, 0, c, &[c as u8], 0).unwrap();
            assert_eq!(s.read(E, 3, c + 3), Some(&[c as u8][..]));
        }
        assert!(s.live() <= 16);
    }
}
