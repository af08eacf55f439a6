//! Recording what the chip did, as a Chrome trace-event file (Perfetto and
//! chrome://tracing open it).
//!
//! The recorder is a [`Tracer`]: the engine is generic over its tracer, so a run without
//! one compiles the hooks away. It keeps compact records for a window of cycles and
//! writes JSON once at the end:
//!
//! - one track (thread) per instruction queue, grouped in processes by unit (MEM West,
//!   MEM East, VXM, MXM, SXM, ICU); one slice per issued instruction, one cycle long,
//!   with its text, queue index and the cycle its result lands;
//! - flow arrows from the instruction that put a value on a stream to each instruction
//!   that read it;
//! - counters: values held in stream registers, and SRAM bytes read and written per
//!   cycle.
//!
//! Time: `ns_per_cycle` nanoseconds per cycle (1 by default, so that the timeline reads
//! in cycles); the file's `otherData` says so.

use crate::config::{ChipConfig, QueueInfo, QueueKind};
use crate::engine::{Counters, Tracer};
use crate::isa::{Instr, Op};
use std::collections::HashMap;
use std::fmt::Write;

struct Issued {
    cycle: u64,
    queue: u32,
    index: u32,
    done: u64,
    instr: Instr,
}

/// A [`Tracer`] that keeps the events of cycles `from..to`.
pub struct Recorder {
    from: u64,
    to: u64,
    issues: Vec<Issued>,
    /// (producer queue, producer issue cycle, consumer queue, consumer issue cycle).
    flows: Vec<(u32, u64, u32, u64)>,
    counters: Vec<(u64, Counters)>,
    /// Issue cycle of the instruction of a queue whose result lands on a cycle.
    landing: HashMap<(u32, u64), u64>,
}

impl Recorder {
    pub fn new(from: u64, to: u64) -> Self {
        Recorder {
            from,
            to,
            issues: Vec::new(),
            flows: Vec::new(),
            counters: Vec::new(),
            landing: HashMap::new(),
        }
    }

    fn inside(&self, cycle: u64) -> bool {
        (self.from..self.to).contains(&cycle)
    }

    /// Instructions recorded so far.
    pub fn issued(&self) -> usize {
        self.issues.len()
    }

    /// The trace as Chrome trace-event JSON.
    pub fn to_json(&self, cfg: &ChipConfig, queues: &[QueueInfo], ns_per_cycle: f64) -> String {
        let us = |cycle: u64| cycle as f64 * ns_per_cycle / 1000.0;
        let mut out = String::with_capacity(256 + 200 * (self.issues.len() + self.flows.len()));
        out.push_str("{\"traceEvents\":[\n");
        let mut first = true;
        let mut event = |out: &mut String, body: String| {
            if !first {
                out.push_str(",\n");
            }
            first = false;
            out.push_str(&body);
        };
        // Tracks: processes by unit, threads by queue.
        let mut used: Vec<bool> = vec![false; queues.len()];
        for i in &self.issues {
            used[i.queue as usize] = true;
        }
        for (pid, name) in PROCESSES.iter().enumerate() {
            event(
                &mut out,
                format!(
                    "{{\"ph\":\"M\",\"name\":\"process_name\",\"pid\":{pid},\"tid\":0,\"args\":{{\"name\":\"{name}\"}}}}"
                ),
            );
            event(
                &mut out,
                format!(
                    "{{\"ph\":\"M\",\"name\":\"process_sort_index\",\"pid\":{pid},\"tid\":0,\"args\":{{\"sort_index\":{pid}}}}}"
                ),
            );
        }
        for (qi, q) in queues.iter().enumerate() {
            if !used[qi] {
                continue;
            }
            let pid = process(&q.kind);
            let tid = qi + 1;
            event(
                &mut out,
                format!(
                    "{{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":{pid},\"tid\":{tid},\"args\":{{\"name\":\"{}\"}}}}",
                    q.name
                ),
            );
            event(
                &mut out,
                format!(
                    "{{\"ph\":\"M\",\"name\":\"thread_sort_index\",\"pid\":{pid},\"tid\":{tid},\"args\":{{\"sort_index\":{tid}}}}}"
                ),
            );
        }
        for i in &self.issues {
            let q = &queues[i.queue as usize];
            let text = json_escape(&i.instr.to_string());
            event(
                &mut out,
                format!(
                    "{{\"ph\":\"X\",\"name\":\"{}\",\"cat\":\"{}\",\"ts\":{},\"dur\":{},\"pid\":{},\"tid\":{},\"args\":{{\"instruction\":\"{text}\",\"queue\":\"{}\",\"index\":{},\"cycle\":{},\"lands\":{}}}}}",
                    i.instr.op.mnemonic(),
                    i.instr.op.unit().name(),
                    us(i.cycle),
                    us(1),
                    process(&q.kind),
                    i.queue + 1,
                    q.name,
                    i.index,
                    i.cycle,
                    i.done
                ),
            );
        }
        for (id, &(pq, pt, cq, ct)) in self.flows.iter().enumerate() {
            let (pp, cp) = (
                process(&queues[pq as usize].kind),
                process(&queues[cq as usize].kind),
            );
            event(
                &mut out,
                format!(
                    "{{\"ph\":\"s\",\"name\":\"value\",\"cat\":\"stream\",\"id\":{id},\"ts\":{},\"pid\":{pp},\"tid\":{}}}",
                    us(pt),
                    pq + 1
                ),
            );
            event(
                &mut out,
                format!(
                    "{{\"ph\":\"f\",\"bp\":\"e\",\"name\":\"value\",\"cat\":\"stream\",\"id\":{id},\"ts\":{},\"pid\":{cp},\"tid\":{}}}",
                    us(ct),
                    cq + 1
                ),
            );
        }
        // A value leaves the chip at most `positions` cycles after it was written, so the
        // values written in the last `positions` cycles bound what the registers hold.
        let lanes = cfg.lanes() as u64;
        let span = cfg.positions() as u64;
        let written_by = |t: i64| {
            let i = self.counters.partition_point(|(c, _)| (*c as i64) <= t);
            if i == 0 {
                0
            } else {
                self.counters[i - 1].1.stream_writes
            }
        };
        let mut prev = Counters::default();
        for (i, (t, c)) in self.counters.iter().enumerate() {
            let in_flight = c.stream_writes - written_by(*t as i64 - span as i64);
            event(
                &mut out,
                format!(
                    "{{\"ph\":\"C\",\"name\":\"stream values in flight\",\"ts\":{},\"pid\":0,\"tid\":0,\"args\":{{\"values\":{in_flight}}}}}",
                    us(*t)
                ),
            );
            let sram = |t: u64, r: u64, w: u64| {
                format!(
                    "{{\"ph\":\"C\",\"name\":\"SRAM bytes per cycle\",\"ts\":{},\"pid\":0,\"tid\":0,\"args\":{{\"read\":{},\"written\":{}}}}}",
                    us(t),
                    r * lanes,
                    w * lanes
                )
            };
            event(
                &mut out,
                sram(
                    *t,
                    c.sram_reads - prev.sram_reads,
                    c.sram_writes - prev.sram_writes,
                ),
            );
            // Nothing issues on the cycles the engine skips.
            if self.counters.get(i + 1).is_none_or(|(n, _)| *n > t + 1) {
                event(&mut out, sram(t + 1, 0, 0));
            }
            prev = *c;
        }
        out.push_str("\n],\n\"displayTimeUnit\":\"ns\",\n");
        let _ = writeln!(
            out,
            "\"otherData\":{{\"chip\":\"{}\",\"clock_hz\":{},\"ns_per_cycle\":{},\"time\":\"1 cycle = {} ns on this timeline (the chip's clock period is {:.4} ns)\",\"from_cycle\":{},\"to_cycle\":{},\"instructions\":{}}}}}",
            json_escape(&cfg.name),
            cfg.clock_hz,
            ns_per_cycle,
            ns_per_cycle,
            1e9 / cfg.clock_hz as f64,
            self.from,
            if self.to == u64::MAX {
                "null".to_string()
            } else {
                self.to.to_string()
            },
            self.issues.len()
        );
        out
    }
}

impl Tracer for Recorder {
    fn issue(&mut self, cycle: u64, queue: usize, index: usize, instr: &Instr, done: u64) {
        if !self.inside(cycle) || instr.op == Op::Nop {
            return;
        }
        self.landing.insert((queue as u32, done), cycle);
        self.issues.push(Issued {
            cycle,
            queue: queue as u32,
            index: index as u32,
            done,
            instr: *instr,
        });
    }

    fn value(&mut self, reader: usize, cycle: u64, writer: usize, landed: u64) {
        if let Some(&t) = self.landing.get(&(writer as u32, landed)) {
            if self.inside(cycle) {
                self.flows.push((writer as u32, t, reader as u32, cycle));
            }
        }
    }

    fn cycle(&mut self, cycle: u64, counters: &Counters) {
        if self.inside(cycle) {
            self.counters.push((cycle, *counters));
        }
    }
}

const PROCESSES: [&str; 7] = [
    "chip counters",
    "MEM West",
    "MEM East",
    "VXM",
    "MXM",
    "SXM",
    "ICU and C2C",
];

fn process(kind: &QueueKind) -> usize {
    match kind {
        QueueKind::Mem { hemi: 0, .. } => 1,
        QueueKind::Mem { .. } => 2,
        QueueKind::Vxm { .. } => 3,
        QueueKind::MxmLoad { .. } | QueueKind::MxmAbc { .. } | QueueKind::MxmAcc { .. } => 4,
        QueueKind::Sxm { .. } => 5,
        _ => 6,
    }
}

fn json_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o
}
