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

use super::latch::Latch;
use super::*;
use crate::isa::flags;

/// Fewest re-issues worth a batch.
const MIN_BATCH: u64 = 4;
/// Most re-issues in one batch (bounds the memory held for their results).
const MAX_BATCH: u64 = 4096;

/// The first upcoming issue of an instruction (or of a run of re-issues) of another queue.
#[derive(Clone, Copy, Debug)]
struct Upcoming {
    queue: usize,
    t0: u64,
    instr: Instr,
}

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

impl Run {
    fn at(self, j: u64) -> u64 {
        self.t + j * self.d
    }
}

/// What other queues may still do.
struct Hazards {
    issues: Vec<Upcoming>,
    /// From this cycle on, some queue's schedule is unknown (it waits for a notify).
    unknown: u64,
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
    data: Vec<u32>,
}

impl Chip {
    /// The instruction, re-issues done, re-issues left and period of `qi`'s repeat.
    fn rep_instrs(&self, qi: usize) -> (Instr, u32, u64, u64) {
        let rep = self.q[qi].rep.as_ref().expect("in a repeat");
        (rep.instr, rep.k, rep.left as u64, rep.d as u64)
    }

    /// The issues other queues still have before cycle `end`.
    fn hazards(&self, except: usize, end: u64) -> Hazards {
        let mut issues = Vec::new();
        let mut unknown = u64::MAX;
        for &qi in &self.active {
            if qi == except {
                continue;
            }
            let s = &self.q[qi];
            if s.parked {
                unknown = unknown.min(s.next.max(self.cycle));
                continue;
            }
            let code = &self.code[qi];
            let mut t = s.next;
            let mut pc = s.pc;
            let mut prev: Option<(Instr, u64)> = None;
            if let Some(rep) = &s.rep {
                let mut instr = rep.instr;
                advance(&mut instr, rep.k + 1);
                issues.push(Upcoming {
                    queue: qi,
                    t0: t,
                    instr,
                });
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
                            issues.push(Upcoming {
                                queue: qi,
                                t0: tp + d,
                                instr: first,
                            });
                            t = tp + n * d + 1;
                        }
                    }
                    Op::Sync => {
                        unknown = unknown.min(t);
                        break;
                    }
                    _ => {
                        issues.push(Upcoming {
                            queue: qi,
                            t0: t,
                            instr,
                        });
                        prev = Some((instr, t));
                        t += if instr.op == Op::Ifetch {
                            instr.latency(&self.cfg.latencies) as u64
                        } else {
                            1
                        };
                    }
                }
            }
        }
        Hazards { issues, unknown }
    }

    /// Streams an instruction on queue `qi` writes: (first stream, count, landing latency).
    fn stream_writes(&self, instr: &Instr) -> Option<(StreamRef, u32)> {
        let a = instr.args;
        let (v, n) = match instr.op {
            Op::Read | Op::Gather => (a[1], 1),
            Op::Acc => (a[1], 4),
            Op::Receive => (a[0], 1),
            Op::Shiftn | Op::Shifts => (a[2], dt_bytes(a[0])),
            Op::Permute | Op::Distribute => (a[3], dt_bytes(a[0])),
            Op::Rotate => (a[1], a[2] * a[2]),
            Op::Transpose => (a[1], 16),
            Op::Cast => (a[3], dt_bytes(a[1])),
            _ if instr.def().has(flags::BINARY) => (a[3], dt_bytes(a[0])),
            _ if instr.def().has(flags::UNARY) => (a[2], dt_bytes(a[0])),
            _ => return None,
        };
        StreamRef::from_operand(v).map(|s| (s, n))
    }

    /// First cycle on which another queue might land a value on streams
    /// [s, s+n) (same direction) at a position in [lo, hi].
    fn first_stream_landing(&self, hz: &Hazards, s: StreamRef, n: u32, lo: u32, hi: u32) -> u64 {
        let mut first = hz.unknown;
        for u in &hz.issues {
            let Some((w, wn)) = self.stream_writes(&u.instr) else {
                continue;
            };
            let pos = self.queues[u.queue].position;
            if w.west != s.west || pos < lo || pos > hi {
                continue;
            }
            if w.index < s.index + n && s.index < w.index + wn {
                first = first.min(u.t0 + self.lat[u.instr.op as usize] as u64);
            }
        }
        first
    }

    /// First issue of queue `qi` among the hazards (`ops`: only these ops, if given).
    fn first_issue_of(&self, hz: &Hazards, qi: usize, ops: &[Op]) -> u64 {
        let mut first = hz.unknown;
        for u in &hz.issues {
            if u.queue == qi && (ops.is_empty() || ops.contains(&u.instr.op)) {
                first = first.min(u.t0);
            }
        }
        first
    }

    /// How many of `k` reads of streams [s, s+n) at `pos`, on cycles t + j*d, find a value
    /// that no other queue can still change.
    fn stream_inputs(&self, hz: &Hazards, s: StreamRef, n: u32, pos: u32, r: Run, k: u64) -> u64 {
        let (lo, hi) = if s.west { (pos, u32::MAX) } else { (0, pos) };
        let safe = self.first_stream_landing(hz, s, n, lo, hi);
        let mut j = 0;
        while j < k && r.at(j) < safe {
            let tj = r.at(j);
            let present = (0..n).all(|b| {
                let r = StreamRef {
                    index: s.index + b,
                    west: s.west,
                };
                self.streams.read(r, pos, tj).is_some()
            });
            if !present {
                break;
            }
            j += 1;
        }
        j
    }

    /// Copy the values of streams [s, s+n) at `pos` on cycle `t` into `out` (plane-major).
    fn gather_streams(&self, s: StreamRef, n: u32, pos: u32, t: u64, out: &mut [u8]) {
        let lanes = self.lanes;
        for b in 0..n as usize {
            let r = StreamRef {
                index: s.index + b as u32,
                west: s.west,
            };
            out[b * lanes..(b + 1) * lanes]
                .copy_from_slice(self.streams.read(r, pos, t).expect("checked present"));
        }
    }

    /// Register per-stream results landing on `r`'s cycles: `vals` holds k groups of n planes.
    fn put_streams(
        &mut self,
        qi: usize,
        s: StreamRef,
        n: u32,
        r: Run,
        vals: &[u8],
        k: u64,
    ) -> bool {
        let lanes = self.lanes;
        let pos = self.queues[qi].position;
        let group = n as usize * lanes;
        for b in 0..n as usize {
            let mut plane = Vec::with_capacity(k as usize * lanes);
            for j in 0..k as usize {
                plane.extend_from_slice(&vals[j * group + b * lanes..j * group + (b + 1) * lanes]);
            }
            let sr = StreamRef {
                index: s.index + b as u32,
                west: s.west,
            };
            if !self
                .streams
                .write_bulk(sr, pos, r.t, r.d, Arc::new(plane), qi as u32)
            {
                return false;
            }
        }
        self.stats.stream_writes += n as u64 * k;
        true
    }

    /// Run as many of `qi`'s next re-issues as can be done at once (at most `limit`),
    /// starting on cycle `t`. Returns how many were done (0: issue one by one).
    pub(super) fn try_batch(&mut self, qi: usize, t: u64, limit: u64) -> u64 {
        if !self.fast || !self.watchpoints.is_empty() {
            return 0;
        }
        let (base, k0, left, d) = self.rep_instrs(qi);
        let max_k = left.min(MAX_BATCH).min(limit);
        if max_k < MIN_BATCH {
            return 0;
        }
        let mut instr = base;
        advance(&mut instr, k0 + 1);
        let hz = self.hazards(qi, t + max_k * d + 64);
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
            (Unit::Mxm, QueueKind::MxmAbc { plane }) => self.batch_abc(&job, plane as usize),
            (Unit::Mxm, QueueKind::MxmAcc { plane }) => self.batch_acc(&job, plane as usize),
            _ => 0,
        };
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
        rep.k += k as u32;
        rep.left -= k as u32;
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
        let lanes = self.lanes;
        let addr0 = instr.args[0] as u64;
        // Addresses past the slice are a fault: leave those to single issues.
        let mut k = max_k.min((self.cfg.addresses as u64).saturating_sub(addr0));
        // The slice's other port must stay idle (no other access, so no bank conflict and
        // no write that a read should see), and nothing may be waiting to land on it.
        let other = self.queue_index(&format!(
            "mem.{}{}.{}",
            crate::config::HEMISPHERES[hemi as usize],
            slice,
            1 - port
        ));
        let mut stop = other.map_or(u64::MAX, |o| self.first_issue_of(hz, o, &[]));
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
        stop = stop.min(hz.unknown);
        while k > 0 && t + (k - 1) * d >= stop {
            k -= 1;
        }
        if instr.op == Op::Read {
            let dst = StreamRef::from_operand(instr.args[1]).expect("valid");
            // Nothing else may write our stream at our position while we do.
            let other_w = self.first_stream_landing(hz, dst, 1, pos, pos);
            let lat = self.lat[Op::Read as usize] as u64;
            while k > 0 && t + (k - 1) * d + lat >= other_w {
                k -= 1;
            }
            if k < MIN_BATCH {
                return 0;
            }
            let mut vals = vec![0u8; k as usize * lanes];
            for j in 0..k as usize {
                self.sram.read(
                    hemi as usize,
                    slice as usize,
                    addr0 as usize + j,
                    &mut vals[j * lanes..(j + 1) * lanes],
                );
            }
            if !self
                .streams
                .write_bulk(dst, pos, t + lat, d, Arc::new(vals), qi as u32)
            {
                return 0;
            }
            self.stats.sram_reads += k;
            self.stats.stream_writes += k;
        } else {
            let src = StreamRef::from_operand(instr.args[1]).expect("valid");
            k = self.stream_inputs(hz, src, 1, pos, run, k);
            if k < MIN_BATCH {
                return 0;
            }
            let mut data = vec![0u8; k as usize * lanes];
            for j in 0..k {
                self.gather_streams(
                    src,
                    1,
                    pos,
                    t + j * d,
                    &mut data[j as usize * lanes..(j as usize + 1) * lanes],
                );
            }
            let lat = self.lat[Op::Write as usize] as u64;
            self.bulk_pending.push(BulkWrite {
                hemi,
                slice,
                addr0: addr0 as u32,
                first: t + lat,
                d,
                data,
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
        let (to, sat, srcs, dst) = if instr.op == Op::Cast {
            (
                DType::from_code(a[1]).expect("valid"),
                a[4] != 0,
                vec![a[2]],
                a[3],
            )
        } else if def.has(flags::BINARY) {
            (dt, false, vec![a[1], a[2]], a[3])
        } else {
            (dt, false, vec![a[1]], a[2])
        };
        let lanes = self.lanes;
        let (nb, ob) = (dt.bytes(), to.bytes());
        let lat = self.lat[instr.op as usize] as u64;
        let mut k = max_k;
        for &v in &srcs {
            if v >= ALU_SRC_BASE {
                let l = &self.alu_out[(v - ALU_SRC_BASE) as usize];
                let mut j = 0;
                while j < k && l.get(t + j * d).is_some_and(|x| x.len() == nb * lanes) {
                    j += 1;
                }
                k = j;
            } else {
                let s = StreamRef::from_operand(v).expect("valid");
                k = self.stream_inputs(hz, s, nb as u32, pos, run, k);
            }
        }
        // Our results: no other result may land on this ALU, nor another VXM writer on
        // our streams, while we produce them.
        let latch: &Latch = &self.alu_out[alu];
        let mut j = 0;
        while j < k && !latch.has(t + j * d + lat) {
            j += 1;
        }
        k = j;
        let dst_s = (dst != DST_NONE).then(|| StreamRef::from_operand(dst).expect("valid"));
        if let Some(s) = dst_s {
            let other = self.first_stream_landing(hz, s, ob as u32, pos, pos);
            while k > 0 && t + (k - 1) * d + lat >= other {
                k -= 1;
            }
        }
        if k < MIN_BATCH {
            return 0;
        }
        let mut xa = vec![0u8; nb * lanes];
        let mut xb = vec![0u8; nb * lanes];
        let mut out = vec![0u8; k as usize * ob * lanes];
        for j in 0..k {
            let tj = t + j * d;
            for (i, &v) in srcs.iter().enumerate() {
                let buf = if i == 0 { &mut xa } else { &mut xb };
                if v >= ALU_SRC_BASE {
                    buf.copy_from_slice(
                        self.alu_out[(v - ALU_SRC_BASE) as usize]
                            .get(tj)
                            .expect("checked"),
                    );
                } else {
                    let s = StreamRef::from_operand(v).expect("valid");
                    self.gather_streams(s, nb as u32, pos, tj, buf);
                }
            }
            let o = &mut out[j as usize * ob * lanes..(j as usize + 1) * ob * lanes];
            vxm::execute(
                &vxm::VxmArgs {
                    op: instr.op,
                    dt,
                    to,
                    sat,
                    a: &xa,
                    b: if srcs.len() == 2 { &xb } else { &[] },
                },
                lanes,
                o,
            );
        }
        self.stats.stream_reads +=
            k * srcs.iter().filter(|v| **v < ALU_SRC_BASE).count() as u64 * nb as u64;
        let out = Arc::new(out);
        if let Some(s) = dst_s {
            if !self.put_streams(qi, s, ob as u32, Run { t: t + lat, d }, &out, k) {
                return 0;
            }
        }
        self.alu_out[alu].put_bulk(t + lat, d, ob * lanes, out);
        k
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
        let a = instr.args;
        let lanes = self.lanes;
        let (src, dst, n_in, n_out, map) = match instr.op {
            Op::Shiftn | Op::Shifts => (a[1], a[2], dt_bytes(a[0]), dt_bytes(a[0]), None),
            Op::Permute => (a[1], a[3], dt_bytes(a[0]), dt_bytes(a[0]), Some((a[2], 2))),
            Op::Distribute => (a[1], a[3], dt_bytes(a[0]), dt_bytes(a[0]), Some((a[2], 1))),
            Op::Rotate => (a[0], a[1], a[2], a[2] * a[2], None),
            Op::Transpose => (a[0], a[1], 16, 16, None),
            _ => return 0,
        };
        let src = StreamRef::from_operand(src).expect("valid");
        let dst = StreamRef::from_operand(dst).expect("valid");
        if src.index + n_in > 32 || dst.index + n_out > 32 {
            return 0;
        }
        let mut k = self.stream_inputs(hz, src, n_in, pos, run, max_k);
        if let Some((m, mn)) = map {
            let m = StreamRef::from_operand(m).expect("valid");
            if m.index + mn > 32 {
                return 0;
            }
            k = self.stream_inputs(hz, m, mn, pos, run, k);
        }
        let lat = self.lat[instr.op as usize] as u64;
        let other = self.first_stream_landing(hz, dst, n_out, pos, pos);
        while k > 0 && t + (k - 1) * d + lat >= other {
            k -= 1;
        }
        let mut inp = vec![0u8; n_in as usize * lanes];
        let mut mapv = vec![0u8; 2 * lanes];
        let mut out = vec![vec![0u8; lanes]; n_out as usize];
        let mut vals = Vec::with_capacity(k as usize * n_out as usize * lanes);
        let mut done = 0;
        for j in 0..k {
            let tj = t + j * d;
            self.gather_streams(src, n_in, pos, tj, &mut inp);
            let srcs: Vec<&[u8]> = inp.chunks(lanes).collect();
            match instr.op {
                Op::Shiftn | Op::Shifts => {
                    sxm::shift(&srcs, &mut out, a[3] as usize, instr.op == Op::Shiftn)
                }
                Op::Rotate => sxm::rotate(&srcs, &mut out),
                Op::Transpose => sxm::transpose(&srcs, &mut out),
                _ => {
                    let (m, mn) = map.expect("map");
                    let m = StreamRef::from_operand(m).expect("valid");
                    self.gather_streams(m, mn, pos, tj, &mut mapv[..mn as usize * lanes]);
                    if instr.op == Op::Distribute {
                        sxm::distribute(&srcs, &mapv[..lanes], &mut out);
                    } else {
                        let mp = sxm::map16(&mapv[..lanes], &mapv[lanes..2 * lanes]);
                        if sxm::permute(&srcs, &mp, &mut out).is_err() {
                            break; // a fault: leave it to a single issue
                        }
                    }
                }
            }
            for o in &out {
                vals.extend_from_slice(o);
            }
            done += 1;
        }
        k = done;
        if k < MIN_BATCH {
            return 0;
        }
        if !self.put_streams(qi, dst, n_out, Run { t: t + lat, d }, &vals, k) {
            return 0;
        }
        self.stats.stream_reads += k * (n_in + map.map_or(0, |(_, mn)| mn)) as u64;
        k
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
        if src.index % nb != 0 || src.index + nb > 32 {
            return 0;
        }
        let ld = self.queue_index(&format!("mxm{p}.ld"));
        let stop = ld.map_or(u64::MAX, |q| self.first_issue_of(hz, q, &[Op::Iw]));
        let mut k = self.stream_inputs(hz, src, nb, pos, run, max_k);
        while k > 0 && t + (k - 1) * d >= stop {
            k -= 1;
        }
        if k < MIN_BATCH {
            return 0;
        }
        self.settle_hist(p, u64::MAX);
        let slot0 = instr.args[1] as u64;
        let accumulate = instr.args[2] != 0;
        let mut data = vec![0u32; k as usize * lanes];
        let mut x = vec![0u8; nb as usize * lanes];
        let mut yf = vec![0f32; lanes];
        let mut yi = vec![0i32; lanes];
        for j in 0..k as usize {
            let slot = ((slot0 + j as u64) % slots) as usize;
            self.gather_streams(src, nb, pos, t + j as u64 * d, &mut x);
            // The slot's value before this abc: an earlier abc of this batch, or the slot.
            let prev: Option<&[u32]> = if !accumulate {
                None
            } else if j as u64 >= slots {
                let i = j - slots as usize;
                Some(&data[i * lanes..(i + 1) * lanes])
            } else {
                let s = &self.planes[p].slots;
                s.get(slot).filter(|s| !s.data.is_empty()).map(|s| {
                    if s.float != float {
                        &[][..]
                    } else {
                        &s.data[..]
                    }
                })
            };
            if prev.is_some_and(|v| v.is_empty()) {
                data.truncate(j * lanes);
                break; // mixed types in a slot: a fault for a single issue
            }
            let plane = &self.planes[p];
            if float {
                match prev {
                    Some(v) => yf
                        .iter_mut()
                        .zip(v)
                        .for_each(|(y, b)| *y = f32::from_bits(*b)),
                    None => yf.fill(0.0),
                }
                let xs: Vec<f32> = (0..lanes)
                    .map(|kk| {
                        crate::numerics::f16_to_f32(x[kk] as u16 | (x[lanes + kk] as u16) << 8)
                    })
                    .collect();
                mxm::matvec_f16(&plane.w_f32, &xs, &mut yf);
                for (o, v) in data[j * lanes..(j + 1) * lanes].iter_mut().zip(&yf) {
                    *o = v.to_bits();
                }
            } else {
                match prev {
                    Some(v) => yi.iter_mut().zip(v).for_each(|(y, b)| *y = *b as i32),
                    None => yi.fill(0),
                }
                let xs: Vec<i8> = x[..lanes].iter().map(|b| *b as i8).collect();
                mxm::matvec_i8(&plane.w_i8, &xs, &mut yi);
                for (o, v) in data[j * lanes..(j + 1) * lanes].iter_mut().zip(&yi) {
                    *o = *v as u32;
                }
            }
        }
        let k = (data.len() / lanes) as u64;
        if k < MIN_BATCH {
            return 0;
        }
        let lat = self.lat[Op::Abc as usize] as u64;
        let plane = &mut self.planes[p];
        if plane.slots.is_empty() {
            plane.slots = vec![Slot::default(); slots as usize];
        }
        plane.busy_until = t + (k - 1) * d + occupancy;
        plane.hist.push(AbcHist {
            t0: t,
            d,
            n: k,
            slot0: slot0 % slots,
            ready_lat: lat,
            float,
            data,
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
        if dst.index % 4 != 0 {
            return 0;
        }
        // An abc not yet issued could still change a slot we read.
        let abc = self.queue_index(&format!("mxm{p}.abc"));
        let stop = abc.map_or(u64::MAX, |q| self.first_issue_of(hz, q, &[]));
        let slot0 = instr.args[0] as u64;
        let mut vals = Vec::with_capacity(max_k as usize * 4 * lanes);
        let mut k = 0;
        while k < max_k {
            let tj = t + k * d;
            if tj >= stop {
                break;
            }
            let slot = (slot0 + k) % slots;
            let Some((ready, data)) = self.slot_value(p, slot, tj) else {
                break;
            };
            if tj < ready {
                break;
            }
            let start = vals.len();
            vals.resize(start + 4 * lanes, 0);
            for (l, v) in data.iter().enumerate() {
                crate::numerics::set_lane_bits(&mut vals[start..], lanes, 4, l, *v);
            }
            k += 1;
        }
        if k < MIN_BATCH {
            return 0;
        }
        let lat = self.lat[Op::Acc as usize] as u64;
        if !self.put_streams(qi, dst, 4, Run { t: t + lat, d }, &vals, k) {
            return 0;
        }
        k
    }

    /// The value of accumulator slot `slot` of plane `p` as an `acc` on cycle `t` sees it:
    /// (ready cycle, data), from the latest `abc` issued on or before `t`.
    pub(super) fn slot_value(&self, p: usize, slot: u64, t: u64) -> Option<(u64, Vec<u32>)> {
        let lanes = self.lanes;
        let slots = self.cfg.mxm_acc_slots as u64;
        let plane = &self.planes[p];
        let mut best: Option<(u64, u64, Vec<u32>)> = plane
            .slots
            .get(slot as usize)
            .filter(|s| !s.data.is_empty())
            .map(|s| (s.issued, s.ready, s.data.clone()));
        for h in &plane.hist {
            // Re-issue j writes slot (slot0 + j) % slots on cycle t0 + j d.
            let first = (slot + slots - h.slot0) % slots;
            if first >= h.n || h.t0 + first * h.d > t {
                continue;
            }
            let last_by_time = ((t - h.t0) / h.d).min(h.n - 1);
            let j = first + (last_by_time - first) / slots * slots;
            let issued = h.t0 + j * h.d;
            if best.as_ref().is_none_or(|b| issued >= b.0) {
                let v = h.data[j as usize * lanes..(j as usize + 1) * lanes].to_vec();
                best = Some((issued, issued + h.ready_lat, v));
            }
        }
        best.map(|(_, r, v)| (r, v))
    }

    /// Fold batched `abc` results whose issues are all before `now` into the slots.
    pub(super) fn settle_hist(&mut self, p: usize, now: u64) {
        let lanes = self.lanes;
        let slots = self.cfg.mxm_acc_slots as u64;
        let plane = &mut self.planes[p];
        let mut keep = Vec::new();
        for h in std::mem::take(&mut plane.hist) {
            if now != u64::MAX && h.t0 + (h.n - 1) * h.d >= now {
                keep.push(h);
                continue;
            }
            for j in h.n.saturating_sub(slots)..h.n {
                let slot = ((h.slot0 + j) % slots) as usize;
                let s = &mut plane.slots[slot];
                s.data = h.data[j as usize * lanes..(j as usize + 1) * lanes].to_vec();
                s.float = h.float;
                s.issued = h.t0 + j * h.d;
                s.ready = s.issued + h.ready_lat;
            }
        }
        plane.hist = keep;
    }

    /// Commit batched SRAM writes that land on or before `t`.
    pub(super) fn commit_bulk(&mut self, t: u64) {
        let lanes = self.lanes;
        for w in &mut self.bulk_pending {
            let n = (w.data.len() / lanes) as u64;
            while w.done < n && w.first + w.done * w.d <= t {
                let j = w.done as usize;
                self.sram.write(
                    w.hemi as usize,
                    w.slice as usize,
                    w.addr0 as usize + j,
                    &w.data[j * lanes..(j + 1) * lanes],
                );
                w.done += 1;
            }
        }
        self.bulk_pending
            .retain(|w| (w.done as usize) < w.data.len() / lanes);
    }
}

/// Batched SRAM writes of one instruction: word j lands on `first + j * d`.
#[derive(Clone, Debug)]
pub(super) struct BulkWrite {
    hemi: u8,
    slice: u16,
    addr0: u32,
    first: u64,
    d: u64,
    data: Vec<u8>,
    done: u64,
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

fn dt_bytes(code: u32) -> u32 {
    DType::from_code(code).map_or(1, |d| d.bytes() as u32)
}
