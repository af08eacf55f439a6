//! Batched execution of repeated instructions (design idea 5).
//!
//! The schedule is static, so when a queue is in the middle of `repeat n, d`, its next
//! re-issues are known: same op, addresses/slots advancing by one. If everything they
//! read is already known — SRAM words that nothing will write in time, stream values
//! and ALU results that earlier instructions already produced and that no instruction
//! still to issue could overwrite in time — the whole run of re-issues can be computed
//! at once, with its results registered for the cycles they land on. Every effect (SRAM
//! words, stream values, ALU results, accumulator slots, statistics, the cycle count)
//! is the same as issuing them one per cycle; where any of that cannot be shown, the
//! engine issues one by one, which is also how every fault is found and reported.
//!
//! What "could overwrite in time" means is decided by looking ahead at the other
//! queues' schedules (`hazards`), conservatively: a batch stops before the first cycle
//! on which another queue might disturb what it reads or writes.

use super::*;
use crate::isa::flags;
use crate::mxm::Activations;
use crate::streams::{Fold, PlaneRefs, Rows};
use std::sync::OnceLock;

/// Fewest re-issues worth a batch.
const MIN_BATCH: u64 = 2;
/// Most re-issues in one batch (bounds the memory held for their results).
const MAX_BATCH: u64 = 4096;
/// Fewest results of a batch of `abc` that its product threads split into byte planes.
const SPLIT_ROWS: u64 = 64;
/// Result buffers of folded `abc` batches a plane keeps for its next batches (as many as
/// the batches it holds unfolded, so that a stream of batches allocates none).
const SPARE_RESULTS: usize = 5;
/// Batches of `abc` a plane keeps unfolded (see `Chip::settle_hist`).
pub(super) const UNFOLDED: usize = 4;

/// One batch attempt: queue, its instruction (operands of the first re-issue), its
/// position, the cycles of the re-issues and how many at most.
struct Job<'a> {
    qi: usize,
    hz: &'a Hazards,
    instr: Instr,
    pos: u32,
    run: Run,
    max_k: u64,
}

/// The cycles of a run of re-issues: t, t + d, t + 2d, ...
#[derive(Clone, Copy, Debug)]
struct Run {
    t: u64,
    d: u64,
}

/// What other queues may still do before cycle `end`: the checks walk the schedule of
/// only the queues that matter to them (a partner queue; the writers of a stream), as
/// far as `end`.
#[derive(Clone, Copy)]
struct Hazards {
    except: usize,
    end: u64,
    /// The run's plan gave the batch's length: nothing need be looked at.
    known: bool,
}

/// The queues whose code writes each stream, and each group of consecutive streams
/// (made when first looked at: a program looks at few of them).
#[derive(Default)]
pub(super) struct Writers {
    streams: usize,
    /// By `west as usize * streams + index`, in queue order.
    by_stream: Vec<Vec<usize>>,
    /// By `(west as usize * streams + first) * streams + count - 1`.
    groups: Vec<OnceLock<Vec<usize>>>,
}

impl Writers {
    pub(super) fn new(code: &[Arc<[Instr]>], streams: usize) -> Writers {
        let mut by_stream = vec![Vec::new(); 2 * streams];
        for (qi, code) in code.iter().enumerate() {
            for (s, n) in code.iter().filter_map(Instr::stream_writes) {
                let base = s.west as usize * streams;
                for i in s.index as usize..(s.index + n).min(streams as u32) as usize {
                    let w: &mut Vec<usize> = &mut by_stream[base + i];
                    if w.last() != Some(&qi) {
                        w.push(qi);
                    }
                }
            }
        }
        Writers {
            streams,
            by_stream,
            groups: (0..2 * streams * streams)
                .map(|_| OnceLock::new())
                .collect(),
        }
    }

    /// The writers of streams first..first + count (count >= 1, within the direction).
    fn group(&self, west: bool, first: usize, count: usize) -> &[usize] {
        let key = west as usize * self.streams + first;
        self.groups[key * self.streams + count - 1].get_or_init(|| {
            let mut list = self.by_stream[key..key + count].concat();
            list.sort_unstable();
            list.dedup();
            list
        })
    }
}

/// Results of accumulator slots written by a batch of `abc`, kept until every issue of
/// the batch is in the past (then folded into the slots).
#[derive(Clone, Debug)]
pub(super) struct AbcHist {
    t0: u64,
    d: u64,
    n: u64,
    slot0: u64,
    ready_lat: u64,
    float: bool,
    /// The results, row j at `j * lanes` (a reused buffer may hold more rows after them).
    pub(super) data: Vec<u32>,
    /// `data` split into byte planes as `acc` sends it, when the batch did not
    /// accumulate (its results are likely to be read as they are).
    planes: Option<[Rows; 4]>,
}

impl Chip {
    /// The four byte planes of `k` fp32 results in `buf` (see [`four_planes`]), shared.
    fn four_plane_rows(&self, buf: Vec<u8>, k: usize) -> [Rows; 4] {
        let rows = self.pool.plane_rows(buf, 4, k, self.lanes, 1);
        rows.try_into().expect("four planes")
    }

    /// The instruction, re-issues done, re-issues left and period of `qi`'s repeat.
    fn rep_instrs(&self, qi: usize) -> (Instr, u32, u64, u64) {
        let rep = self.q[qi].rep.as_ref().expect("in a repeat");
        (rep.instr, rep.k, rep.left as u64, rep.d as u64)
    }

    /// Queue `qi`'s issues before cycle `end`, each as `f(cycle, instruction)` (a run of
    /// re-issues as its first one, which is when it can first act). Returns the cycle
    /// from which its schedule is unknown (it waits for a notify), or `u64::MAX`.
    fn walk(&self, qi: usize, end: u64, mut f: impl FnMut(u64, &Instr)) -> u64 {
        let s = &self.q[qi];
        if s.parked {
            return s.next.max(self.cycle);
        }
        if s.rep.is_none() && s.next >= end {
            // Nothing before the end (most queues a look-ahead asks about): from the
            // queue's state alone, without reading its code.
            return u64::MAX;
        }
        let code = &self.code[qi];
        let mut t = s.next;
        let mut pc = s.pc;
        // A `repeat` re-issues the instruction before it. A queue may wait at one
        // whose instruction already issued (it is taken on the next cycle): then
        // that issue is the one repeated, as `step_queue` will do.
        let mut prev: Option<(Instr, u64)> = (pc > 0).then(|| (code[pc - 1], s.last_issue));
        if let Some(rep) = &s.rep {
            let mut instr = rep.instr;
            advance(&mut instr, rep.k + 1);
            f(t, &instr);
            t += (rep.left as u64 - 1) * rep.d as u64 + 1;
        }
        while t < end && pc < code.len() {
            let instr = code[pc];
            pc += 1;
            match instr.op {
                Op::Nop => t += instr.args[0] as u64,
                Op::Repeat => {
                    let (n, d) = (instr.args[0] as u64, instr.args[1] as u64);
                    if let (Some((p, tp)), true) = (prev, n > 0) {
                        let mut first = p;
                        advance(&mut first, 1);
                        let t0 = (tp + d).max(t);
                        f(t0, &first);
                        t = t0 + (n - 1) * d + 1;
                    }
                }
                Op::Sync => return t,
                _ => {
                    f(t, &instr);
                    prev = Some((instr, t));
                    t += if instr.op == Op::Ifetch {
                        instr.latency(&self.cfg.latencies) as u64
                    } else {
                        1
                    };
                }
            }
        }
        u64::MAX
    }

    /// First cycle on which a value that another queue might put on streams [s, s+n)
    /// (same direction) reaches position `at`: put on at `at` itself, or, `upstream`,
    /// anywhere it flows from (one position a cycle: a value put on at p on cycle c is
    /// at `at` on c + |p - at|, and on no earlier cycle).
    fn first_stream_arrival(
        &self,
        hz: &Hazards,
        s: StreamRef,
        n: u32,
        at: u32,
        upstream: bool,
    ) -> u64 {
        let (lo, hi) = match (upstream, s.west) {
            (false, _) => (at, at),
            (true, true) => (at, u32::MAX),
            (true, false) => (0, at),
        };
        let streams = self.cfg.streams as usize;
        let n = (n as usize).min(streams.saturating_sub(s.index as usize));
        if n == 0 || hz.known {
            return u64::MAX;
        }
        let mut first = u64::MAX;
        for &q in self.writers.group(s.west, s.index as usize, n) {
            let p = self.queues[q].position;
            if q == hz.except || !(lo..=hi).contains(&p) {
                continue;
            }
            let travel = p.abs_diff(at) as u64;
            let unknown = self.walk(q, hz.end, |t0, instr| {
                if let Some((w, wn)) = instr.stream_writes() {
                    if w.west == s.west && w.index < s.index + n as u32 && s.index < w.index + wn {
                        first = first.min(t0 + self.lat[instr.op as usize] as u64 + travel);
                    }
                }
            });
            first = first.min(unknown);
        }
        first
    }

    /// First issue of the queue of kind `kind` among the hazards (`ops`: only these ops,
    /// if given).
    fn first_issue_of(&self, hz: &Hazards, kind: QueueKind, ops: &[Op]) -> u64 {
        if hz.known {
            return u64::MAX;
        }
        let qi = self.queue_of(kind);
        if qi == hz.except {
            return u64::MAX;
        }
        let mut first = u64::MAX;
        let unknown = self.walk(qi, hz.end, |t0, instr| {
            if ops.is_empty() || ops.contains(&instr.op) {
                first = first.min(t0);
            }
        });
        first.min(unknown)
    }

    /// How many of `k` reads of streams [s, s+n) at `pos` on `r`'s cycles come before any
    /// other queue could still put a value there.
    fn safe_reads(&self, hz: &Hazards, s: StreamRef, n: u32, pos: u32, r: Run, k: u64) -> u64 {
        let safe = self.first_stream_arrival(hz, s, n, pos, true);
        if safe > r.t {
            k.min((safe - r.t - 1) / r.d + 1)
        } else {
            0
        }
    }

    /// Register results landing on `r`'s cycles on streams [s, s + planes.len()): plane b
    /// goes to stream s + b. Nothing is registered unless all of them can be.
    fn put_streams(&mut self, qi: usize, s: StreamRef, r: Run, planes: &[Rows]) -> bool {
        let pos = self.queues[qi].position;
        let refs = (0..planes.len() as u32).map(|b| StreamRef {
            index: s.index + b,
            west: s.west,
        });
        if !refs
            .clone()
            .zip(planes)
            .all(|(sr, p)| self.streams.bulk_free(sr, pos, r.t, r.d, p.n))
        {
            return false;
        }
        for (sr, p) in refs.zip(planes) {
            self.streams
                .write_bulk(sr, pos, r.t, r.d, p.clone(), qi as u32);
        }
        self.stats.stream_writes += (planes.len() * planes[0].n) as u64;
        true
    }

    /// Run as many of `qi`'s next re-issues as can be done at once (at most `limit`),
    /// starting on cycle `t`; with `with_base`, the run starts with the repeated
    /// instruction itself, not yet issued (see `step_queue`). Returns how many issues
    /// were done (0: issue one by one).
    pub(super) fn try_batch(&mut self, qi: usize, t: u64, limit: u64, with_base: bool) -> u64 {
        if !self.fast || !self.watchpoints.is_empty() {
            return 0;
        }
        let (base, k0, left, d) = self.rep_instrs(qi);
        let mut max_k = (left + with_base as u64).min(MAX_BATCH).min(limit);
        if max_k < MIN_BATCH {
            return 0;
        }
        let known = match self.plan_use.answer(qi, t, max_k) {
            plan::Answer::Ask => false,
            plan::Answer::Skip => return 0,
            plan::Answer::Batch(k) => {
                max_k = k;
                true
            }
            plan::Answer::Diverged => {
                self.diverged = true;
                return 0;
            }
        };
        let mut instr = base;
        advance(&mut instr, k0 + 1 - with_base as u32);
        let hz = Hazards {
            except: qi,
            end: t + max_k * d + 64,
            known,
        };
        let kind = self.queues[qi].kind;
        let job = Job {
            qi,
            hz: &hz,
            instr,
            pos: self.queues[qi].position,
            run: Run { t, d },
            max_k,
        };
        let k = match (instr.op.unit(), kind) {
            (Unit::Mem, QueueKind::Mem { hemi, slice, port }) => {
                self.batch_mem(&job, hemi, slice, port)
            }
            (Unit::Vxm, QueueKind::Vxm { alu }) => self.batch_vxm(&job, alu as usize),
            (Unit::Sxm, _) => self.batch_sxm(&job),
            (Unit::Mxm, QueueKind::MxmLoad { plane }) => self.batch_lw(&job, plane as usize),
            (Unit::Mxm, QueueKind::MxmAbc { plane }) => self.batch_abc(&job, plane as usize),
            (Unit::Mxm, QueueKind::MxmAcc { plane }) => self.batch_acc(&job, plane as usize),
            _ => 0,
        };
        self.plan_use.note(qi, t, k);
        if known && k != max_k {
            self.diverged = true;
        }
        if k == 0 {
            return 0;
        }
        // Book-keeping exactly as k single issues would have done.
        let unit = instr.op.unit();
        let ui = Unit::ALL.iter().position(|u| *u == unit).unwrap();
        self.stats.issued[ui] += k;
        self.stats.batched += k;
        self.stats.per_queue[qi] += k;
        self.stats.busy[ui].insert_progression(t, d, k);
        let last = t + (k - 1) * d;
        let done = last + self.lat[instr.op as usize] as u64;
        self.last_activity = Some(self.last_activity.map_or(done, |a| a.max(done)));
        let s = &mut self.q[qi];
        s.last_issue = last;
        let rep = s.rep.as_mut().expect("in a repeat");
        let reissues = k as u32 - with_base as u32;
        rep.k += reissues;
        rep.left -= reissues;
        if rep.left == 0 {
            s.rep = None;
            s.next = last + 1;
        } else {
            s.next = last + d;
        }
        k
    }

    fn batch_mem(&mut self, job: &Job, hemi: u8, slice: u16, port: u8) -> u64 {
        let Job {
            qi,
            hz,
            instr,
            pos,
            run,
            max_k,
        } = *job;
        let (t, d) = (run.t, run.d);
        if !matches!(instr.op, Op::Read | Op::Write) {
            return 0;
        }
        self.flush_bulk(Some((hemi, slice)));
        let addr0 = instr.args[0] as u64;
        // Addresses past the slice are a fault: leave those to single issues.
        let mut k = max_k.min((self.cfg.addresses as u64).saturating_sub(addr0));
        // The slice's other port must stay idle (no other access, so no bank conflict and
        // no write that a read should see), and nothing may be waiting to land on it.
        let other = QueueKind::Mem {
            hemi,
            slice,
            port: 1 - port,
        };
        let stop = self.first_issue_of(hz, other, &[]);
        // Nor may it have issued already this cycle (earlier in issue order).
        let used = &self.bank[hemi as usize * self.cfg.mem_slices as usize + slice as usize];
        if used.cycle == t && (used.read.is_some() || used.write.is_some()) {
            return 0;
        }
        if self
            .pending
            .iter()
            .any(|w| w.hemi == hemi && w.slice == slice)
            || self
                .bulk_pending
                .iter()
                .any(|w| w.hemi == hemi && w.slice == slice)
        {
            return 0;
        }
        while k > 0 && t + (k - 1) * d >= stop {
            k -= 1;
        }
        if instr.op == Op::Read {
            let dst = StreamRef::from_operand(instr.args[1]).expect("valid");
            // Nothing else may write our stream at our position while we do.
            let other_w = self.first_stream_arrival(hz, dst, 1, pos, false);
            let lat = self.lat[Op::Read as usize] as u64;
            while k > 0 && t + (k - 1) * d + lat >= other_w {
                k -= 1;
            }
            if k < MIN_BATCH {
                return 0;
            }
            // Views of the SRAM pages (copy on write keeps them as they are now), in
            // segments (a page, or a run of written or unwritten words); segment i lands
            // from the cycle after those before it. All must fit before any is put.
            let (h, sl) = (hemi as usize, slice as usize);
            let (mut j, mut at) = (0, t + lat);
            while j < k {
                let n = self
                    .sram
                    .rows_len(h, sl, (addr0 + j) as usize, (k - j) as usize);
                if !self.streams.bulk_free(dst, pos, at, d, n) {
                    return 0;
                }
                (j, at) = (j + n as u64, at + n as u64 * d);
            }
            let (mut j, mut at) = (0, t + lat);
            while j < k {
                let rows = self
                    .sram
                    .rows(h, sl, (addr0 + j) as usize, (k - j) as usize);
                let n = rows.n as u64;
                self.streams.write_bulk(dst, pos, at, d, rows, qi as u32);
                (j, at) = (j + n, at + n * d);
            }
            self.stats.sram_reads += k;
            self.stats.stream_writes += k;
        } else {
            let src = StreamRef::from_operand(instr.args[1]).expect("valid");
            k = self.safe_reads(hz, src, 1, pos, run, k);
            // The values, as views of their writers' buffers where they allow, up to the
            // first missing one.
            let segs = self.streams.runs(src, pos, run.t, d, k as usize);
            k = segs.iter().map(|r| r.n as u64).sum();
            if k < MIN_BATCH {
                return 0;
            }
            let lat = self.lat[Op::Write as usize] as u64;
            self.bulk_pending.push(BulkWrite {
                hemi,
                slice,
                addr0: addr0 as u32,
                first: t + lat,
                d,
                segs,
                n: k,
                done: 0,
            });
            self.stats.sram_writes += k;
            self.stats.stream_reads += k;
        }
        k
    }

    fn batch_vxm(&mut self, job: &Job, alu: usize) -> u64 {
        let Job {
            qi,
            hz,
            instr,
            pos,
            run,
            max_k,
        } = *job;
        let (t, d) = (run.t, run.d);
        let a = instr.args;
        let def = instr.def();
        let dt = DType::from_code(a[0]).expect("valid");
        let (to, sat, operands, dst) = if instr.op == Op::Cast {
            (
                DType::from_code(a[1]).expect("valid"),
                a[4] != 0,
                ([a[2], 0], 1),
                a[3],
            )
        } else if def.has(flags::BINARY) {
            (dt, false, ([a[1], a[2]], 2), a[3])
        } else {
            (dt, false, ([a[1], 0], 1), a[2])
        };
        let srcs = &operands.0[..operands.1];
        let lanes = self.lanes;
        let (nb, ob) = (dt.bytes(), to.bytes());
        let lat = self.lat[instr.op as usize] as u64;
        // Results that landed before now can no longer be chained from. (Other ALUs'
        // results are read at this cycle and later, so their old ones can stay until
        // those ALUs issue again, as a single issue leaves them.)
        self.alu_out[alu].prune(t);
        // At most MAX_BATCH vectors of results, counting planes: an fp32 batch of 4,096
        // (5 MB) is copied to SRAM after it has left the cache, one of 1,024 before.
        let mut k = max_k.min(MAX_BATCH / ob as u64);
        // Our results: no other result may land on this ALU, nor another VXM writer on
        // our streams, while we produce them.
        let dst_s = (dst != DST_NONE).then(|| StreamRef::from_operand(dst).expect("valid"));
        if let Some(s) = dst_s {
            let other = self.first_stream_arrival(hz, s, ob as u32, pos, false);
            while k > 0 && t + (k - 1) * d + lat >= other {
                k -= 1;
            }
        }
        k = self.alu_out[alu].first_landing(t + lat, d, k);
        // An operand that is this ALU's own result (a running reduction, or a value held
        // by copying it) chains each re-issue to the previous one: with latency d, the
        // result of re-issue j lands on the cycle re-issue j + 1 reads it. Only the first
        // such operand must exist now; the batch computes the rest in order.
        let own = ALU_SRC_BASE + alu as u32;
        let chain = srcs.contains(&own);
        if chain && (lat != d || ob != nb) {
            return 0;
        }
        // Operands are references into their producers' buffers (SRAM pages, batched
        // results), one list per byte plane, each running on to the end of its buffer.
        let mut ops: Vec<PlaneRefs> = Vec::with_capacity(srcs.len());
        for &v in srcs {
            let n = if v == own { 1 } else { k as usize };
            let planes = if v >= ALU_SRC_BASE {
                self.alu_out[(v - ALU_SRC_BASE) as usize].tails(t, d, n, nb, lanes)
            } else {
                let s = StreamRef::from_operand(v).expect("valid");
                let safe = self.safe_reads(hz, s, nb as u32, pos, run, k);
                stream_refs(&self.streams, s, nb as u32, pos, run, safe, true)
            };
            if v == own && planes[0].is_empty() {
                return 0;
            }
            if v != own {
                k = k.min(planes[0].len() as u64);
            }
            ops.push(planes);
        }
        if k < MIN_BATCH {
            return 0;
        }
        let k = k as usize;
        // Every byte of these is written below (each re-issue, each plane, every lane).
        let mut buf = self.pool.take(ob * k * lanes);
        let mut out: Vec<&mut [u8]> = buf.chunks_exact_mut(k * lanes).collect();
        // Re-issues j, j + p, ..., j + (m - 1) p run as one call when each operand's
        // values lie end to end in memory (consecutive words of an SRAM page, or of a
        // batch's results); classes of p one after the other, so that each page is read
        // forwards (see `period`), and the results are stored class by class (`Fold`),
        // so that they are written forwards too, as are the SRAM words they go to. A
        // chain runs in order, one re-issue at a time.
        let p = if chain {
            1
        } else {
            period(&ops[0][0][..k], lanes)
        };
        let fold = Fold { p, k, first: 0 };
        let follows = |first: &[u8], x: &[u8], m: usize| {
            first.len() >= (m + 1) * lanes && x.as_ptr() == first.as_ptr().wrapping_add(m * lanes)
        };
        let own_op = srcs.iter().position(|v| *v == own);
        let none: &[u8] = &[];
        for r in 0..p.min(k) {
            let mut j = r;
            while j < k {
                let mut m = if chain { 1 } else { (k - j).div_ceil(p) };
                for v in ops.iter().flat_map(PlaneRefs::iter) {
                    m = (1..m)
                        .find(|&i| !follows(v[j], v[j + i * p], i))
                        .unwrap_or(m);
                }
                // The results, and (when chained, so in order) the previous one.
                let mut dst: [&mut [u8]; 4] = Default::default();
                let mut prev = [none; 4];
                for (b, o) in out.iter_mut().enumerate() {
                    let (before, from) = o.split_at_mut(fold.place(j) * lanes);
                    dst[b] = &mut from[..m * lanes];
                    prev[b] = match own_op {
                        None => none,
                        Some(c) if j == 0 => &ops[c][b][0][..lanes],
                        Some(_) => &before[(j - 1) * lanes..],
                    };
                }
                let mut x = [[none; 4]; 2];
                for (i, o) in ops.iter().enumerate() {
                    for (b, v) in x[i][..nb].iter_mut().enumerate() {
                        *v = if srcs[i] == own {
                            prev[b]
                        } else {
                            &o[b][j][..m * lanes]
                        };
                    }
                }
                vxm::execute(
                    &vxm::VxmArgs {
                        op: instr.op,
                        dt,
                        to,
                        sat,
                        a: &x[0][..nb],
                        b: if ops.len() == 2 { &x[1][..nb] } else { &[] },
                    },
                    &mut dst[..ob],
                );
                j += m * p;
            }
        }
        drop((ops, out));
        let out = self.pool.plane_rows(buf, ob, k, lanes, p);
        if let Some(s) = dst_s {
            if !self.put_streams(qi, s, Run { t: t + lat, d }, &out) {
                return 0;
            }
        }
        self.stats.stream_reads +=
            (k * srcs.iter().filter(|v| **v < ALU_SRC_BASE).count() * nb) as u64;
        self.alu_out[alu].put_bulk(t + lat, d, out);
        k as u64
    }

    fn batch_sxm(&mut self, job: &Job) -> u64 {
        let Job {
            qi,
            hz,
            instr,
            pos,
            run,
            max_k,
        } = *job;
        let (t, d) = (run.t, run.d);
        let lanes = self.lanes;
        let Some(SxmOperands {
            src,
            n_in,
            map,
            dst,
            n_out,
        }) = SxmOperands::of(&instr)
        else {
            return 0;
        };
        let streams = self.cfg.streams;
        if src.index + n_in > streams || dst.index + n_out > streams {
            return 0;
        }
        // The inputs (and the map), as references to the values on their streams.
        let safe = self.safe_reads(hz, src, n_in, pos, run, max_k);
        let inp = stream_refs(&self.streams, src, n_in, pos, run, safe, false);
        let mut k = inp[0].len() as u64;
        let maps = match map {
            Some((m, mn)) => {
                if m.index + mn > streams {
                    return 0;
                }
                let safe = self.safe_reads(hz, m, mn, pos, run, k);
                let refs = stream_refs(&self.streams, m, mn, pos, run, safe, false);
                k = k.min(refs[0].len() as u64);
                refs
            }
            None => PlaneRefs::default(),
        };
        let lat = self.lat[instr.op as usize] as u64;
        let other = self.first_stream_arrival(hz, dst, n_out, pos, false);
        while k > 0 && t + (k - 1) * d + lat >= other {
            k -= 1;
        }
        if k < MIN_BATCH {
            return 0;
        }
        let mut vals = self.pool.take(n_out as usize * k as usize * lanes);
        // Each issue's results go straight to their place in `vals` (lists made once,
        // not per issue).
        let mut places: Vec<_> = vals
            .chunks_exact_mut(k as usize * lanes)
            .map(|v| v.chunks_exact_mut(lanes))
            .collect();
        let (mut srcs, mut map_j, mut out) = (Vec::new(), Vec::new(), Vec::new());
        let mut done = 0;
        for j in 0..k as usize {
            srcs.clear();
            srcs.extend(inp.iter().map(|p| p[j]));
            map_j.clear();
            map_j.extend(maps.iter().map(|p| p[j]));
            out.clear();
            out.extend(places.iter_mut().map(|c| c.next().expect("k places")));
            if sxm::apply(&instr, &srcs, &map_j, &mut out).is_err() {
                break; // a fault: leave it to a single issue
            }
            done += 1;
        }
        drop((inp, maps, out, places));
        k = done;
        if k < MIN_BATCH {
            return 0;
        }
        let vals = self
            .pool
            .plane_rows(vals, n_out as usize, k as usize, lanes, 1);
        if !self.put_streams(qi, dst, Run { t: t + lat, d }, &vals) {
            return 0;
        }
        self.stats.stream_reads += k * (n_in + map.map_or(0, |(_, mn)| mn)) as u64;
        k
    }

    /// A run of `lw`: each re-issue appends its streams' values (16 int8 or 8 fp16
    /// weight rows) to the plane's weight buffer, as `exec_mxm` does one at a time. A
    /// run that would mix types or overfill the buffer is left to single issues, which
    /// report it.
    fn batch_lw(&mut self, job: &Job, p: usize) -> u64 {
        let Job {
            hz,
            instr,
            pos,
            run,
            max_k,
            ..
        } = *job;
        if instr.op != Op::Lw {
            return 0;
        }
        let lanes = self.lanes;
        let dt = DType::from_code(instr.args[0]).expect("valid");
        let src = StreamRef::from_operand(instr.args[1]).expect("valid");
        let n = LW_STREAMS as u32;
        let plane = &mut self.planes[p];
        if src.index + n > self.cfg.streams || plane.buf_dtype.is_some_and(|d| d != dt) {
            return 0;
        }
        let (start, room) = plane.next_load(dt, lanes);
        let k = self.safe_reads(hz, src, n, pos, run, max_k.min(room as u64));
        // The stream values, where their writers put them: per stream, views (or
        // copies) that together hold its first k values, up to the first missing one.
        // (All streams' pieces in one list, stream i's from ends[i - 1] to ends[i]: a
        // list per stream was 17 allocations per batch.)
        let mut k = k as usize;
        let mut pieces: Vec<Rows> = Vec::with_capacity(2 * LW_STREAMS);
        let mut ends = [0; LW_STREAMS];
        for (i, end) in ends.iter_mut().enumerate() {
            let s = StreamRef {
                index: src.index + i as u32,
                west: src.west,
            };
            let from = pieces.len();
            self.streams.runs_into(s, pos, run.t, run.d, k, &mut pieces);
            k = k.min(pieces[from..].iter().map(|r| r.n).sum());
            *end = pieces.len();
        }
        if (k as u64) < MIN_BATCH {
            return 0;
        }
        // The pieces move into the buffer (a clone would touch each one's count again).
        let plane = &mut self.planes[p];
        let mut pieces = pieces.into_iter();
        let mut from = 0;
        for (i, &end) in ends.iter().enumerate() {
            let mut j = 0;
            for rows in pieces.by_ref().take(end - from) {
                let (n, count) = (rows.n, rows.n.min(k.saturating_sub(j)));
                plane
                    .buf
                    .view(start + j * LW_STREAMS + i, LW_STREAMS, rows, count);
                j += n;
            }
            from = end;
        }
        plane.loaded(dt, k);
        self.stats.stream_reads += (LW_STREAMS * k) as u64;
        k as u64
    }

    fn batch_abc(&mut self, job: &Job, p: usize) -> u64 {
        let Job {
            qi: _,
            hz,
            instr,
            pos,
            run,
            max_k,
        } = *job;
        let (t, d) = (run.t, run.d);
        let lanes = self.lanes;
        let slots = self.cfg.mxm_acc_slots as u64;
        let plane = &self.planes[p];
        let Some(wdt) = plane.w_dtype else { return 0 };
        let float = wdt == DType::F16;
        let occupancy = if float { 4 } else { 1 };
        if t < plane.ready || t < plane.busy_until || d < occupancy {
            return 0; // hazards are faults: single issues report them
        }
        let src = StreamRef::from_operand(instr.args[0]).expect("valid");
        let nb = wdt.bytes() as u32;
        if !src.index.is_multiple_of(nb) || src.index + nb > self.cfg.streams {
            return 0;
        }
        let stop = self.first_issue_of(hz, QueueKind::MxmLoad { plane: p as u8 }, &[Op::Iw]);
        let mut k = self.safe_reads(hz, src, nb, pos, run, max_k);
        while k > 0 && t + (k - 1) * d >= stop {
            k -= 1;
        }
        if k < MIN_BATCH {
            return 0;
        }
        let slot0 = instr.args[1] as u64;
        let accumulate = instr.args[2] != 0;
        if accumulate {
            // Every slot an accumulating abc adds to then holds a value from before the batch.
            k = k.min(slots);
        }
        if k < MIN_BATCH {
            return 0;
        }
        // A reused buffer's old values need no clearing when the product writes every
        // value, nor is it cut to the batch's length (it stays as long as it was: see
        // `keep_spare`); accumulating, the slots' values (or zeros) go in first.
        let mut data = take_spare(&mut self.planes[p].spare);
        if accumulate {
            self.settle_hist(p, u64::MAX);
            data.clear();
        }
        if data.len() < k as usize * lanes {
            data.resize(k as usize * lanes, 0);
        }
        if accumulate {
            for j in 0..k as usize {
                let slot = ((slot0 + j as u64) % slots) as usize;
                match self.planes[p]
                    .slots
                    .get(slot)
                    .filter(|s| !s.data.is_empty())
                {
                    // Mixed types in a slot: a fault, which a single issue reports.
                    Some(s) if s.float != float => {
                        k = j as u64;
                        break;
                    }
                    Some(s) => data[j * lanes..(j + 1) * lanes].copy_from_slice(&s.data),
                    None => {}
                }
            }
            if k < MIN_BATCH {
                return 0;
            }
            data.truncate(k as usize * lanes);
        }
        // The activations, up to the first missing one.
        let planes = stream_refs(&self.streams, src, nb, pos, run, k, false);
        k = k.min(planes[0].len() as u64);
        if k < MIN_BATCH {
            return 0;
        }
        let fp16 = |j: usize, xs: &mut [f32]| mxm::widen_f16(planes[0][j], planes[1][j], xs);
        let int8 = |j: usize| planes[0][j];
        let x = if float {
            Activations::Values(&fp16)
        } else {
            Activations::Int8(&int8)
        };
        // Every byte of these is written. (Few results are split faster where they are
        // sent than handed round as planes.)
        let mut bytes: Option<Vec<u8>> =
            (!accumulate && k >= SPLIT_ROWS).then(|| self.pool.take(4 * k as usize * lanes));
        let split = bytes.as_mut().map(|b| four_planes(b));
        // Batched writes that have landed go to SRAM while other threads start on the
        // products: a stream of results is written beside the next batch's products.
        let (due, bulk, sram) = (self.bulk_due, &mut self.bulk_pending, &mut self.sram);
        let mut commit = || commit_bulk(sram, bulk, due, None);
        self.planes[p].weights.apply_split(
            k as usize,
            x,
            &mut data[..k as usize * lanes],
            accumulate,
            split,
            Some(&mut commit),
        );
        drop(planes);
        let bytes = bytes.map(|b| self.four_plane_rows(b, k as usize));
        let lat = self.lat[Op::Abc as usize] as u64;
        let plane = &mut self.planes[p];
        plane.busy_until = t + (k - 1) * d + occupancy;
        plane.hist.push(AbcHist {
            t0: t,
            d,
            n: k,
            slot0: slot0 % slots,
            ready_lat: lat,
            float,
            data,
            planes: bytes,
        });
        self.stats.mxm_busy[p] += k * occupancy;
        let macs = k * (lanes * lanes) as u64;
        if float {
            self.stats.macs_fp16 += macs;
        } else {
            self.stats.macs_int8 += macs;
        }
        self.stats.stream_reads += k * nb as u64;
        k
    }

    fn batch_acc(&mut self, job: &Job, p: usize) -> u64 {
        let Job {
            qi,
            hz,
            instr,
            pos: _,
            run,
            max_k,
        } = *job;
        let (t, d) = (run.t, run.d);
        let lanes = self.lanes;
        let slots = self.cfg.mxm_acc_slots as u64;
        let dst = StreamRef::from_operand(instr.args[1]).expect("valid");
        if !dst.index.is_multiple_of(4) {
            return 0;
        }
        // An abc not yet issued could still change a slot we read.
        let stop = self.first_issue_of(hz, QueueKind::MxmAbc { plane: p as u8 }, &[]);
        let slot0 = instr.args[0] as u64;
        let mut results = Vec::new();
        // Where the first result comes from, and how many of the first results are the
        // rows after it there.
        let mut first = None;
        let mut in_order = 0;
        while (results.len() as u64) < max_k {
            let k = results.len() as u64;
            let tj = t + k * d;
            if tj >= stop {
                break;
            }
            let slot = (slot0 + k) % slots;
            // The next row of the batch the results so far came from, found without
            // searching every batch (a stream of results is thousands of them).
            let next = first
                .filter(|_| in_order == k && k > 0)
                .and_then(|(h, j)| self.latest_row(p, h, j + k, slot, tj));
            let viewed = |(h, _): (usize, u64)| self.planes[p].hist[h].planes.is_some();
            if next.is_none() && in_order == k && k >= MIN_BATCH && first.is_some_and(viewed) {
                break; // the views below end here
            }
            if let Some(v) = next {
                debug_assert_eq!(
                    self.slot_source(p, slot, tj).map(|(_, _, from)| from),
                    Some(first.map(|(h, j)| (h, j + k)))
                );
                in_order += 1;
                results.push(v);
                continue;
            }
            match self.slot_source(p, slot, tj) {
                Some((ready, data, from)) if tj >= ready => {
                    if k == 0 {
                        first = from;
                    }
                    // The first row of a batch that split its results: the next batch of
                    // acc sends views of them.
                    let other = |(h, j): (usize, u64)| j == 0 && first.is_none_or(|(f, _)| f != h);
                    if k >= MIN_BATCH && from.is_some_and(|at| other(at) && viewed(at)) {
                        break;
                    }
                    if in_order == k && first.is_some_and(|(h, j)| from == Some((h, j + k))) {
                        in_order += 1;
                    }
                    results.push(data);
                }
                _ => break,
            }
        }
        let mut k = results.len() as u64;
        if k < MIN_BATCH {
            return 0;
        }
        // Rows of one batch of abc that split its results already: views of those (a
        // batch of acc that runs on into the next batch of abc's results stops there).
        let made = first.filter(|_| in_order >= MIN_BATCH).and_then(|(h, j)| {
            let ps = self.planes[p].hist[h].planes.as_ref()?;
            k = in_order;
            Some((
                h,
                j,
                ps.iter().map(|r| r.sub(j as usize, k as usize)).collect(),
            ))
        });
        // Views that reach the end of the batch's planes leave them to the views alone:
        // their buffers go back to the pool as soon as those are dropped.
        let done_with = made
            .as_ref()
            .and_then(|(h, j, _)| (j + k == self.planes[p].hist[*h].n).then_some(*h));
        let planes: Vec<Rows> = made.map(|(_, _, v)| v).unwrap_or_else(|| {
            // Every byte of these is written (a value per lane of every result).
            let mut planes = self.pool.take(4 * k as usize * lanes);
            mxm::byte_planes(&results, four_planes(&mut planes));
            self.four_plane_rows(planes, k as usize).to_vec()
        });
        let lat = self.lat[Op::Acc as usize] as u64;
        if !self.put_streams(qi, dst, Run { t: t + lat, d }, &planes) {
            return 0;
        }
        if let Some(h) = done_with {
            self.planes[p].hist[h].planes = None;
        }
        k
    }

    /// Row `j` of batch `hist[h]` of plane `p`, written to `slot`, when it is what an
    /// `acc` of that slot on cycle `t` reads (see [`Chip::slot_source`]): issued and
    /// ready by `t`, and nothing newer wrote the slot by then (neither a later row of
    /// the batch, nor another batch, nor a single issue).
    fn latest_row(&self, p: usize, h: usize, j: u64, slot: u64, t: u64) -> Option<&[u32]> {
        let plane = &self.planes[p];
        let b = &plane.hist[h];
        let slots = self.cfg.mxm_acc_slots as u64;
        let issued = b.t0 + j * b.d;
        let newer_row = j + slots < b.n && b.t0 + (j + slots) * b.d <= t;
        let others_older = plane.hist[..h]
            .iter()
            .all(|o| o.t0 + (o.n - 1) * o.d < issued)
            && plane.hist[h + 1..].iter().all(|o| o.t0 > t);
        let slot_older = plane
            .slots
            .get(slot as usize)
            .is_none_or(|s| s.data.is_empty() || s.issued <= issued);
        (j < b.n && issued + b.ready_lat <= t && !newer_row && others_older && slot_older)
            .then(|| &b.data[j as usize * self.lanes..(j as usize + 1) * self.lanes])
    }

    /// The value of accumulator slot `slot` of plane `p` as an `acc` on cycle `t` sees it:
    /// (ready cycle, data), from the latest `abc` issued on or before `t`.
    pub(super) fn slot_value(&self, p: usize, slot: u64, t: u64) -> Option<(u64, &[u32])> {
        self.slot_source(p, slot, t).map(|(r, v, _)| (r, v))
    }

    /// [`Chip::slot_value`], and where the value is: row j of batch `hist[h]` as
    /// Some((h, j)), or None for the slot itself.
    #[allow(clippy::type_complexity)]
    fn slot_source(
        &self,
        p: usize,
        slot: u64,
        t: u64,
    ) -> Option<(u64, &[u32], Option<(usize, u64)>)> {
        let lanes = self.lanes;
        let slots = self.cfg.mxm_acc_slots as u64;
        let plane = &self.planes[p];
        let mut best: Option<(u64, u64, &[u32], _)> = plane
            .slots
            .get(slot as usize)
            .filter(|s| !s.data.is_empty())
            .map(|s| (s.issued, s.ready, &s.data[..], None));
        for (hi, h) in plane.hist.iter().enumerate() {
            // Re-issue j writes slot (slot0 + j) % slots on cycle t0 + j d.
            let first = (slot + slots - h.slot0) % slots;
            if first >= h.n || h.t0 + first * h.d > t {
                continue;
            }
            let last_by_time = ((t - h.t0) / h.d).min(h.n - 1);
            let j = first + (last_by_time - first) / slots * slots;
            let issued = h.t0 + j * h.d;
            if best.as_ref().is_none_or(|b| issued >= b.0) {
                let v = &h.data[j as usize * lanes..(j as usize + 1) * lanes];
                best = Some((issued, issued + h.ready_lat, v, Some((hi, j))));
            }
        }
        best.map(|(_, r, v, from)| (r, v, from))
    }

    /// Fold batched `abc` results whose issues are all before `now` into the slots
    /// (`u64::MAX`: all of them, so that the slots can be read directly). Each slot
    /// takes the newest of them that wrote it (as writing them in order would leave it),
    /// unless a single `abc` wrote it later; the others are never copied.
    pub(super) fn settle_hist(&mut self, p: usize, now: u64) {
        let lanes = self.lanes;
        let slots = self.cfg.mxm_acc_slots as u64;
        let plane = &mut self.planes[p];
        let (mut done, keep): (Vec<AbcHist>, Vec<AbcHist>) = std::mem::take(&mut plane.hist)
            .into_iter()
            .partition(|h| now == u64::MAX || h.t0 + (h.n - 1) * h.d < now);
        plane.hist = keep;
        // Unless the slots are about to be read directly: the newest of them that wrote
        // every slot stays unfolded and hides everything older, which goes unread (a
        // stream of batches is then never copied into the slots).
        if now != u64::MAX {
            if let Some(c) = done.iter().rposition(|h| h.n >= slots) {
                if done.len() - c + plane.hist.len() <= UNFOLDED {
                    for h in done.drain(..c) {
                        keep_spare(&mut plane.spare, h.data);
                    }
                    done.append(&mut plane.hist);
                    plane.hist = done;
                    return;
                }
            }
        }
        let mut seen = vec![false; slots as usize];
        while let Some(h) = done.pop() {
            for j in (h.n.saturating_sub(slots)..h.n).rev() {
                let slot = ((h.slot0 + j) % slots) as usize;
                if std::mem::replace(&mut seen[slot], true) {
                    continue;
                }
                let s = plane.slot_mut(slot);
                let issued = h.t0 + j * h.d;
                if !s.data.is_empty() && s.issued > issued {
                    continue; // a single abc replaced it since
                }
                s.data.clear();
                s.data
                    .extend_from_slice(&h.data[j as usize * lanes..(j as usize + 1) * lanes]);
                s.float = h.float;
                s.issued = issued;
                s.ready = issued + h.ready_lat;
            }
            keep_spare(&mut plane.spare, h.data);
        }
    }

    /// Write the words of batched writes that have landed (see `Chip::bulk_due`), to
    /// slice `only` (hemisphere, slice) or to every slice.
    pub(super) fn flush_bulk(&mut self, only: Option<(u8, u16)>) {
        if !self.bulk_pending.is_empty() {
            commit_bulk(&mut self.sram, &mut self.bulk_pending, self.bulk_due, only);
        }
    }
}

/// Commit the words of batched SRAM writes `pending` (to slice `only`, if given) that
/// land on or before `t`, and forget the writes done.
fn commit_bulk(sram: &mut Sram, pending: &mut Vec<BulkWrite>, t: u64, only: Option<(u8, u16)>) {
    for w in pending.iter_mut() {
        if only.is_some_and(|o| o != (w.hemi, w.slice)) {
            continue;
        }
        let due = w.done + w.due_words(t);
        while w.done < due {
            // The segment holding word `done`, and how many of its words are due.
            let mut i = w.done as usize;
            let seg = w
                .segs
                .iter()
                .find(|s| {
                    if i < s.n {
                        true
                    } else {
                        i -= s.n;
                        false
                    }
                })
                .expect("within the write");
            let m = (seg.n - i).min((due - w.done) as usize);
            let (h, sl, addr) = (w.hemi as usize, w.slice as usize, w.addr0 as usize);
            let part = seg.sub(i, m);
            sram.write_rows(h, sl, addr + w.done as usize, &part);
            w.done += m as u64;
        }
    }
    pending.retain(|w| w.done < w.n);
}

/// The four byte planes of a buffer taken for them, end to end.
fn four_planes(buf: &mut [u8]) -> [&mut [u8]; 4] {
    debug_assert!(!buf.is_empty() && buf.len().is_multiple_of(4));
    let mut planes = buf.chunks_exact_mut(buf.len() / 4);
    std::array::from_fn(|_| planes.next().expect("four planes"))
}

/// The longest spare result buffer (see [`keep_spare`]), or a new one.
fn take_spare(spare: &mut Vec<Vec<u32>>) -> Vec<u32> {
    (0..spare.len())
        .max_by_key(|&i| spare[i].len())
        .map_or_else(Vec::new, |i| spare.swap_remove(i))
}

/// Keep result buffer `v` for a later batch: up to SPARE_RESULTS of them, the longest
/// (a batch lengthening a shorter one zeroes what it adds).
pub(super) fn keep_spare(spare: &mut Vec<Vec<u32>>, v: Vec<u32>) {
    if spare.len() < SPARE_RESULTS {
        return spare.push(v);
    }
    if let Some(short) = spare.iter_mut().min_by_key(|s| s.len()) {
        if short.len() < v.len() {
            *short = v;
        }
    }
}

/// References to the values of streams [s, s+n) at `pos` for reads on `r`'s cycles (at
/// most `k`), all planes of one length: up to the first read some stream has no value
/// for (`tail`: as `Streams::tails`).
fn stream_refs(
    streams: &Streams,
    s: StreamRef,
    n: u32,
    pos: u32,
    r: Run,
    k: u64,
    tail: bool,
) -> PlaneRefs<'_> {
    streams.planes(s, n, pos, r.t, r.d, k as usize, tail)
}

/// Batched SRAM writes of one instruction: word j (of `n`, held by the segments in
/// order) lands on `first + j * d`.
#[derive(Clone, Debug)]
pub(super) struct BulkWrite {
    hemi: u8,
    slice: u16,
    addr0: u32,
    first: u64,
    d: u64,
    segs: Vec<Rows>,
    n: u64,
    done: u64,
}

impl BulkWrite {
    /// How many of its words have landed by cycle `t` and are not yet written.
    fn due_words(&self, t: u64) -> u64 {
        match t.checked_sub(self.first) {
            Some(dt) => (dt / self.d + 1).min(self.n) - self.done,
            None => 0,
        }
    }
}

/// The period p of the vectors `rows` in memory: row j + p follows row j at the next
/// address in its buffer (for the first of the first 64 rows that has such a p below
/// 64; else 1). The rows run on to the end of their buffers (see `Streams::tails`);
/// one-by-one values, which do not, are passed over: consecutive ones often sit side
/// by side in the stream arena without making a period. A tensor split over p slices
/// reaches the VXM a vector from each slice in turn, so consecutive operands lie in p
/// different pages; visited in classes of stride p, each page is read from start to end,
/// which the CPU's prefetchers follow (visiting 26 pages at once, they do not).
fn period(rows: &[&[u8]], lanes: usize) -> usize {
    let next_to =
        |a: &[u8], b: &[u8]| a.len() > lanes && b.as_ptr() as usize == a.as_ptr() as usize + lanes;
    let k = rows.len().min(128);
    (0..k.min(64))
        .find_map(|j| (1..(k - j).min(65)).find(|&p| next_to(rows[j], rows[j + p])))
        .unwrap_or(1)
}

/// Advance an instruction's address and slot operands by `k` (what `repeat` does).
pub(super) fn advance(instr: &mut Instr, k: u32) {
    let def = instr.def();
    for (fi, f) in def.fields.iter().enumerate() {
        if f.kind.advances() {
            instr.args[fi] += k;
        }
    }
}
