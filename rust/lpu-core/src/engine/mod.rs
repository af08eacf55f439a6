//! The cycle engine: instruction queues, issue timing, and the state of every unit.
//!
//! Timing rules (see `docs/timing.md`):
//! - Each queue issues at most one instruction per cycle. A MEM, VXM, MXM, SXM or C2C
//!   instruction occupies its queue for one cycle; `nop n` for n cycles; `repeat n, d`
//!   re-issues the previous instruction at t0+d, t0+2d, ..., t0+nd (t0 = its issue);
//!   `sync` parks the queue until a `notify` is delivered.
//! - An instruction reads its stream operands on its issue cycle t at its slice's
//!   position, and its result appears at its own position on cycle t + d_func, then
//!   moves one position per cycle. So a value produced at position p is consumed at
//!   position q by an instruction issued at t + d_func + |p - q|.
//! - The engine runs at superlane-0 time (design idea 4): every superlane sees the same
//!   schedule k cycles later, so a finished program's cycle count adds the skew of the
//!   last superlane (superlanes - 1 cycles).
//! - Idle cycles are skipped: the engine jumps to the next cycle at which a queue issues.

use crate::config::{ChipConfig, QueueInfo, QueueKind};
use crate::dtype::DType;
use crate::error::{CapacityError, LoadError};
use crate::isa::{FieldKind, Instr, Op, StreamRef, Unit, ALU_SRC_BASE, DST_NONE, LW_STREAMS};
use crate::mxm::Activations;
use crate::program::Program;
use crate::sram::{map_runs, LaneRun, Sram};
use crate::streams::Streams;
use crate::{mxm, sxm, vxm};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

mod batch;
mod busy;
mod due;
mod latch;
mod plan;
mod pool;

/// Why a run stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RunStatus {
    /// Every queue is drained and every result has landed.
    Halted,
    /// The requested cycle (`max_cycles`, `step`, `run_until`) was reached first.
    CycleLimit,
    /// A breakpoint instruction is about to issue.
    Breakpoint,
    /// A watched SRAM word was written.
    Watchpoint,
    /// A fault with policy `error` happened (see [`Chip::fault`]).
    Fault,
    /// The issue budget of this call ran out (used to check for Ctrl-C between slices).
    Paused,
}

impl RunStatus {
    pub fn name(self) -> &'static str {
        match self {
            RunStatus::Halted => "HALTED",
            RunStatus::CycleLimit => "CYCLE_LIMIT",
            RunStatus::Breakpoint => "BREAKPOINT",
            RunStatus::Watchpoint => "WATCHPOINT",
            RunStatus::Fault => "FAULT",
            RunStatus::Paused => "PAUSED",
        }
    }
}

/// Kinds of runtime fault: program bugs the chip would not report but the emulator does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// An instruction read a stream (or chained ALU output) that carries no valid data.
    StreamEmpty,
    /// Two writers put a value on one stream register in one cycle.
    StreamConflict,
    /// Two accesses of one MEM slice in one cycle that the SRAM cannot serve: two reads,
    /// two writes, or a read and a write on the same bank.
    BankConflict,
    /// Two results of one VXM ALU in one cycle.
    AluConflict,
    /// An MXM plane used before its weights or accumulator slot are ready, or while busy.
    MxmHazard,
    /// An operand is invalid when the instruction runs (address past the end after a
    /// repeat, a permute map that is not a permutation, a full weight buffer, mismatched
    /// types). Always stops the run.
    BadOperand,
    /// Every remaining queue waits in `sync` and no `notify` is coming. Always stops.
    Deadlock,
    /// The instruction needs something not emulated yet (C2C links). Always stops.
    Unsupported,
}

impl FaultKind {
    pub const ALL: [FaultKind; 8] = [
        FaultKind::StreamEmpty,
        FaultKind::StreamConflict,
        FaultKind::BankConflict,
        FaultKind::AluConflict,
        FaultKind::MxmHazard,
        FaultKind::BadOperand,
        FaultKind::Deadlock,
        FaultKind::Unsupported,
    ];
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::StreamEmpty => "stream_empty",
            FaultKind::StreamConflict => "stream_conflict",
            FaultKind::BankConflict => "bank_conflict",
            FaultKind::AluConflict => "alu_conflict",
            FaultKind::MxmHazard => "mxm_hazard",
            FaultKind::BadOperand => "bad_operand",
            FaultKind::Deadlock => "deadlock",
            FaultKind::Unsupported => "unsupported",
        }
    }
    pub fn from_name(s: &str) -> Option<FaultKind> {
        Self::ALL.iter().copied().find(|k| k.name() == s)
    }
    /// Whether the run can go on after this fault (policy warn/ignore).
    pub fn recoverable(self) -> bool {
        !matches!(
            self,
            FaultKind::BadOperand | FaultKind::Deadlock | FaultKind::Unsupported
        )
    }
}

/// What to do when a recoverable fault happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultPolicy {
    /// Stop the run with [`RunStatus::Fault`].
    Error,
    /// Record it in [`Chip::warnings`] and go on (empty reads give zeros, the last
    /// writer of a register wins, conflicting SRAM accesses all happen).
    Warn,
    /// Go on silently, as `Warn` but unrecorded.
    Ignore,
}

/// A runtime fault, located by cycle, queue and instruction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    pub kind: FaultKind,
    pub cycle: u64,
    pub queue: String,
    /// Index of the instruction in its queue (for a repeat, the repeated instruction).
    pub index: usize,
    /// Which re-issue of a repeated instruction (0 = the original issue).
    pub repeat: u32,
    pub instr: String,
    pub msg: String,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} at cycle {}, queue {}, instruction {} `{}`",
            self.kind.name(),
            self.cycle,
            self.queue,
            self.index,
            self.instr
        )?;
        if self.repeat > 0 {
            write!(f, " (repeat {})", self.repeat)?;
        }
        write!(f, ": {}", self.msg)
    }
}

/// Counters of one run (since load or the last [`Chip::clear_stats`]).
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Instructions issued per unit (index = [`Unit`] order), repeats included.
    pub issued: [u64; 6],
    /// Cycles on which at least one queue of the unit issued (see [`Stats::busy`]).
    busy: [busy::BusySet; 6],
    /// Instructions issued per queue.
    pub per_queue: Vec<u64>,
    pub sram_reads: u64,
    pub sram_writes: u64,
    pub stream_writes: u64,
    pub stream_reads: u64,
    pub macs_int8: u64,
    pub macs_fp16: u64,
    pub weights_installed: u64,
    /// Busy cycles per MXM plane (an fp16 activation keeps a plane busy 4 cycles).
    pub mxm_busy: Vec<u64>,
    /// Issues done in batches (see `engine/batch.rs`); the rest issued one by one.
    /// Not compared by `==`: the other counters are the same either way.
    pub batched: u64,
}

impl PartialEq for Stats {
    fn eq(&self, o: &Self) -> bool {
        (
            &self.issued,
            &self.busy,
            &self.per_queue,
            self.sram_reads,
            self.sram_writes,
        ) == (
            &o.issued,
            &o.busy,
            &o.per_queue,
            o.sram_reads,
            o.sram_writes,
        ) && (
            self.stream_writes,
            self.stream_reads,
            self.macs_int8,
            self.macs_fp16,
        ) == (o.stream_writes, o.stream_reads, o.macs_int8, o.macs_fp16)
            && (self.weights_installed, &self.mxm_busy) == (o.weights_installed, &o.mxm_busy)
    }
}
impl Eq for Stats {}

impl Stats {
    /// Cycles on which at least one queue of the unit (index = [`Unit`] order) issued.
    pub fn busy(&self, unit: usize) -> u64 {
        self.busy[unit].count()
    }

    /// Busy cycles of a unit in each of `n` bins of `width` cycles from cycle 0.
    pub fn busy_timeline(&self, unit: usize, width: u64, n: usize) -> Vec<u64> {
        self.busy[unit].histogram(width, n)
    }
}

/// Run limits for one call.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Stop before executing this cycle.
    pub until: u64,
    /// Stop (status `Paused`) after about this many issues, so the caller can check for
    /// interrupts; `u64::MAX` for none.
    pub issue_budget: u64,
}

/// Observer of what the chip does; chosen at compile time so tracing costs nothing
/// when off.
pub trait Tracer {
    /// Whether this tracer records anything (batched issue is used only when not).
    fn enabled(&self) -> bool {
        true
    }
    /// An instruction issued on `queue` at `cycle`; its result lands at `done`.
    fn issue(&mut self, _cycle: u64, _queue: usize, _index: usize, _instr: &Instr, _done: u64) {}
    /// The instruction `reader` issued on `cycle` read a stream value that `writer` put on
    /// the stream on cycle `landed`.
    fn value(&mut self, _reader: usize, _cycle: u64, _writer: usize, _landed: u64) {}
    /// The state of the chip's counters after `cycle` (called on cycles something issued).
    fn cycle(&mut self, _cycle: u64, _counters: &Counters) {}
}

/// Counters a tracer samples: values held in stream registers, and running totals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub live_streams: u64,
    pub sram_reads: u64,
    pub sram_writes: u64,
    pub stream_writes: u64,
}

/// The tracer that records nothing.
pub struct NoTrace;
impl Tracer for NoTrace {
    fn enabled(&self) -> bool {
        false
    }
}

#[derive(Clone, Debug)]
struct Rep {
    instr: Instr,
    index: usize,
    left: u32,
    d: u32,
    k: u32,
}

impl Rep {
    /// `n` re-issues, `d` cycles apart, of `instr` (at `index`), none done yet.
    fn new(instr: Instr, index: usize, n: u32, d: u32) -> Rep {
        Rep {
            instr,
            index,
            left: n,
            d,
            k: 0,
        }
    }
}

/// How many issues `d` cycles apart from `t` fit in the issue budget and before `until`.
fn issue_limit(budget: u64, until: u64, t: u64, d: u64) -> u64 {
    budget.min(until.saturating_sub(t).div_ceil(d))
}

#[derive(Clone, Debug, Default)]
struct QState {
    pc: usize,
    next: u64,
    rep: Option<Rep>,
    parked: bool,
    last_issue: u64,
    /// Re-issues to do one by one before trying a batch again, and the next such pause:
    /// a run that cannot be batched now rarely can on the next cycle, and trying costs.
    batch_skip: u32,
    batch_backoff: u32,
    /// The `nop`s last taken ahead of their cycles (see `Chip::take_nops`): the first
    /// one's index and cycle, and the index after the last.
    nops_taken: Option<(usize, u64, usize)>,
}

#[derive(Clone, Debug)]
struct PendingWrite {
    cycle: u64,
    hemi: u8,
    slice: u16,
    addr: u32,
    data: Vec<u8>,
    /// For scatters: only these lanes are written (`None` = the whole word).
    lanes: Option<Vec<LaneRun>>,
}

#[derive(Clone, Debug, Default)]
struct Slot {
    issued: u64,
    ready: u64,
    float: bool,
    data: Vec<u32>,
}

#[derive(Debug, Default)]
struct Plane {
    buf: mxm::WeightBuf,
    buf_rows: usize,
    buf_dtype: Option<DType>,
    w_dtype: Option<DType>,
    weights: mxm::Weights,
    ready: u64,
    busy_until: u64,
    slots: Vec<Slot>,
    /// Batched abc results not yet folded into `slots`.
    hist: Vec<batch::AbcHist>,
    /// Buffers of folded results, for the next batches to reuse.
    spare: Vec<Vec<u32>>,
}

/// A copy (for a snapshot, or the state a run may be redone from) leaves out memory
/// whose contents nothing can see: the weight buffer while no rows are loaded (loads
/// overwrite it from row 0, and an install uses only the loaded rows; the copy allocates
/// its own on first load) and the spare result buffers. A decode step's run copies the
/// chip once, with three idle 200 KB buffers.
impl Clone for Plane {
    fn clone(&self) -> Self {
        Plane {
            buf: if self.buf_rows == 0 {
                mxm::WeightBuf::default()
            } else {
                self.buf.clone()
            },
            buf_rows: self.buf_rows,
            buf_dtype: self.buf_dtype,
            w_dtype: self.w_dtype,
            weights: self.weights.clone(),
            ready: self.ready,
            busy_until: self.busy_until,
            slots: self.slots.clone(),
            hist: self.hist.clone(),
            spare: Vec::new(),
        }
    }
}

impl Plane {
    /// A plane as `Chip::new` makes it, keeping this one's memory: its weight buffer
    /// (the previous install's when it has none), the fp32 weights array and spare
    /// result buffers (with those of its unfolded batches, which a streaming run leaves
    /// behind: the next run would allocate and zero them again). Nothing kept is
    /// visible: loads overwrite the buffer from row 0, without installed weights nothing
    /// reads the array, and batches write every value of a result buffer.
    fn recycled(self) -> Plane {
        let (weights, raw) = self.weights.recycled();
        let mut spare = self.spare;
        for h in self.hist {
            batch::keep_spare(&mut spare, h.data);
        }
        Plane {
            buf: if self.buf.holds_memory() {
                self.buf.emptied()
            } else {
                raw
            },
            weights,
            spare,
            ..Plane::default()
        }
    }

    /// Accumulator slot `slot`, to write. The slots up to the highest one used exist
    /// (a reset drops them, and dropping all 4,096 of each plane was most of a decode
    /// step's reset).
    fn slot_mut(&mut self, slot: usize) -> &mut Slot {
        if self.slots.len() <= slot {
            self.slots.resize_with(slot + 1, Slot::default);
        }
        &mut self.slots[slot]
    }

    /// The word of the buffer where the next `lw` of type `dt` puts its streams (row r
    /// of type dt is words r * bytes.., after the rows loaded), and how many more such
    /// loads fit.
    fn next_load(&self, dt: DType, lanes: usize) -> (usize, usize) {
        let rows = LW_STREAMS / dt.bytes();
        let start = self.buf_rows * dt.bytes();
        (start, (lanes - self.buf_rows.min(lanes)) / rows)
    }

    /// Count `k` loads of type `dt` as done.
    fn loaded(&mut self, dt: DType, k: usize) {
        self.buf_dtype = Some(dt);
        self.buf_rows += k * (LW_STREAMS / dt.bytes());
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct BankUse {
    cycle: u64,
    read: Option<u8>,
    write: Option<u8>,
}

/// Each opcode's functional latency on a chip of this config (0 for queue control).
fn latencies(cfg: &ChipConfig) -> [u32; 256] {
    let mut lat = [0u32; 256];
    for d in crate::isa::TABLE {
        lat[d.opcode as usize] = d.latency.map_or(0, |k| cfg.latencies.get(k));
    }
    lat
}

/// The state a paused run may be redone from (see [`Chip::run_sliced`]), kept until
/// something other than a run changes the chip. A copy of the chip goes without it.
#[derive(Default)]
struct Resume(Option<Box<Chip>>);

impl Clone for Resume {
    fn clone(&self) -> Self {
        Resume(None)
    }
}

/// A whole-chip state saved by [`Chip::snapshot`].
#[derive(Clone)]
pub struct Snapshot(Box<Chip>);

/// One emulated chip.
#[derive(Clone)]
pub struct Chip {
    cfg: ChipConfig,
    lanes: usize,
    queues: Arc<Vec<QueueInfo>>,
    /// Index of each queue by its kind (batches look up partner queues often).
    by_kind: Arc<HashMap<QueueKind, usize>>,
    /// By queue: the instruction the loaded entry point starts it at.
    start_pc: Arc<[usize]>,
    /// The queues with code from there (made at load: a reset finding them looked at
    /// every queue's code, each a line not in cache after a run).
    start_active: Arc<[usize]>,
    lat: [u32; 256],
    sram: Sram,
    streams: Streams,
    alu_out: Vec<latch::Latch>,
    planes: Vec<Plane>,
    program: Option<Arc<Program>>,
    code: Vec<Arc<[Instr]>>,
    /// By hemisphere and slice (`hemi * mem_slices + slice`): some instruction of the
    /// program reads it (`read` or `gather`). Only those are journalled for a redo: the
    /// redo writes the others' words again.
    read: Arc<[bool]>,
    entry: Option<String>,
    q: Vec<QState>,
    active: Vec<usize>,
    /// The queues whose code writes each group of streams: the only ones a batch
    /// reading or writing those streams must look ahead at.
    writers: Arc<batch::Writers>,
    cycle: u64,
    pending: VecDeque<PendingWrite>,
    bulk_pending: Vec<batch::BulkWrite>,
    /// Batched writes landing on or before this cycle have landed, but a slice's words
    /// are written only when something reads the slice, a single write lands, a batch
    /// of products starts (its calling thread writes them while the others multiply),
    /// or the run stops (see `Chip::flush_bulk`).
    bulk_due: u64,
    /// While a tracer records: (writer queue, landing cycle) of each stream value the
    /// current instruction read.
    value_log: Option<Vec<(u32, u64)>>,
    /// Issue runs of repeated instructions in batches when that is provably the same.
    fast: bool,
    notify_at: BTreeSet<u64>,
    last_notify: Option<u64>,
    bank: Vec<BankUse>,
    last_activity: Option<u64>,
    halted: bool,
    stats: Stats,
    fault: Option<Fault>,
    warnings: Vec<Fault>,
    policy: [FaultPolicy; 8],
    breakpoints: HashSet<(usize, usize)>,
    watchpoints: HashSet<(u8, u16, u32)>,
    watch_hit: Option<(u8, u16, u32)>,
    resume_cycle: Option<u64>,
    /// Result buffers of batches, taken back once dropped.
    pool: pool::Pool,
    resume: Resume,
    /// The batch decisions of a run of the loaded program from its start (see `plan`),
    /// kept across resets; what the current run does with them; whether the chip is
    /// at the start of its program (loaded or reset since its last run); whether the
    /// run being replayed went another way; whether the last run used a plan.
    plan: Option<Arc<plan::Plan>>,
    plan_use: plan::PlanUse,
    fresh: bool,
    diverged: bool,
    replayed: bool,
    // Scratch buffers reused by every instruction.
    sa: Vec<u8>,
    sb: Vec<u8>,
    so: Vec<u8>,
}

/// Maximum warnings kept (later ones are counted, not stored).
pub const MAX_WARNINGS: usize = 1000;

fn hemi_name(h: u8) -> &'static str {
    crate::config::HEMISPHERES[h as usize]
}

impl Chip {
    pub fn new(cfg: ChipConfig) -> Result<Chip, crate::error::ConfigError> {
        cfg.validate()?;
        let queues: Arc<Vec<QueueInfo>> = Arc::new(cfg.queues());
        let by_kind = Arc::new(
            queues
                .iter()
                .enumerate()
                .map(|(i, q)| (q.kind, i))
                .collect(),
        );
        let max_lat = *latencies(&cfg).iter().max().unwrap() as usize;
        let horizon = max_lat + cfg.positions() as usize + 8;
        let streams = Streams::new(cfg.streams as usize, cfg.lanes(), horizon, cfg.positions());
        let planes = vec![Plane::default(); cfg.mxm_planes as usize];
        let sram = Sram::new(cfg.mem_slices as usize, cfg.addresses as usize, cfg.lanes());
        let code = vec![Arc::from(Vec::new()); queues.len()];
        Ok(Chip::from_parts(
            cfg, queues, by_kind, streams, planes, sram, code,
        ))
    }

    /// A chip as `new` makes it, from the parts a reset keeps: the queue table, the
    /// stream store and planes emptied in place, the SRAM and each queue's code.
    fn from_parts(
        cfg: ChipConfig,
        queues: Arc<Vec<QueueInfo>>,
        by_kind: Arc<HashMap<QueueKind, usize>>,
        streams: Streams,
        planes: Vec<Plane>,
        sram: Sram,
        code: Vec<Arc<[Instr]>>,
    ) -> Chip {
        let lanes = cfg.lanes();
        let lat = latencies(&cfg);
        let nq = queues.len();
        let n_planes = planes.len();
        Chip {
            lanes,
            sram,
            streams,
            alu_out: vec![latch::Latch::default(); cfg.vxm_alus as usize],
            planes,
            program: None,
            code,
            read: Arc::from([]),
            entry: None,
            q: vec![QState::default(); nq],
            active: Vec::new(),
            writers: Arc::default(),
            cycle: 0,
            pending: VecDeque::new(),
            bulk_pending: Vec::new(),
            bulk_due: 0,
            value_log: None,
            fast: true,
            notify_at: BTreeSet::new(),
            last_notify: None,
            bank: vec![BankUse::default(); 2 * cfg.mem_slices as usize],
            last_activity: None,
            halted: true,
            stats: Stats {
                per_queue: vec![0; nq],
                mxm_busy: vec![0; n_planes],
                ..Stats::default()
            },
            fault: None,
            warnings: Vec::new(),
            policy: [FaultPolicy::Error; 8],
            breakpoints: HashSet::new(),
            watchpoints: HashSet::new(),
            watch_hit: None,
            resume_cycle: None,
            pool: pool::Pool::default(),
            resume: Resume::default(),
            plan: None,
            plan_use: plan::PlanUse::Off,
            fresh: false,
            diverged: false,
            replayed: false,
            sa: vec![0; 16 * lanes],
            sb: vec![0; 16 * lanes],
            so: vec![0; 16 * lanes],
            queues,
            by_kind,
            start_pc: Arc::from([]),
            start_active: Arc::from([]),
            lat,
            cfg,
        }
    }

    pub fn config(&self) -> &ChipConfig {
        &self.cfg
    }
    pub fn queues(&self) -> &[QueueInfo] {
        &self.queues
    }
    pub fn program(&self) -> Option<&Arc<Program>> {
        self.program.as_ref()
    }
    /// The next cycle to execute (superlane-0 time).
    pub fn cycle(&self) -> u64 {
        self.cycle
    }
    pub fn halted(&self) -> bool {
        self.halted
    }
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
    pub fn fault(&self) -> Option<&Fault> {
        self.fault.as_ref()
    }
    pub fn warnings(&self) -> &[Fault] {
        &self.warnings
    }
    pub fn watch_hit(&self) -> Option<(u8, u16, u32)> {
        self.watch_hit
    }
    pub fn sram(&self) -> &Sram {
        &self.sram
    }

    /// Cycles the program took: from cycle 0 to the last result landing in the last
    /// superlane. 0 before anything ran.
    pub fn cycles(&self) -> u64 {
        self.last_activity
            .map_or(0, |t| t + 1 + (self.cfg.superlanes as u64 - 1))
    }

    /// Batched issue of repeated instructions (on by default; results are identical,
    /// off forces one-by-one issue, e.g. to compare the two).
    pub fn set_fast(&mut self, on: bool) {
        self.touched();
        self.fast = on;
    }
    /// Whether the last run took its batch decisions from the program's plan (see
    /// `plan`).
    pub fn replayed(&self) -> bool {
        self.replayed
    }
    pub fn fast(&self) -> bool {
        self.fast
    }

    pub fn set_policy(&mut self, kind: FaultKind, policy: FaultPolicy) {
        self.touched();
        self.policy[kind as usize] = policy;
    }
    pub fn policy(&self, kind: FaultKind) -> FaultPolicy {
        self.policy[kind as usize]
    }

    pub fn queue_index(&self, name: &str) -> Option<usize> {
        self.queues.iter().position(|q| q.name == name)
    }

    /// The queue of a kind (every kind the config names has one).
    fn queue_of(&self, kind: QueueKind) -> usize {
        self.by_kind[&kind]
    }

    /// Load a program (it must target this chip's config) and prepare to run `entry`.
    pub fn load(&mut self, prog: Arc<Program>, entry: Option<&str>) -> Result<(), LoadError> {
        if prog.config != self.cfg {
            return Err(LoadError::Config(crate::error::ConfigError::new(format!(
                "the program was built for chip config '{}', which differs from this chip's '{}'",
                prog.config.name, self.cfg.name
            ))));
        }
        if let Some(e) = prog.check().into_iter().next() {
            return Err(LoadError::Format(crate::error::FormatError::new(
                0, "program", e,
            )));
        }
        if let Some(name) = entry {
            if !prog.entries.iter().any(|e| e.name == name) && name != "main" {
                return Err(LoadError::Config(crate::error::ConfigError::new(format!(
                    "no entry point named '{name}'"
                ))));
            }
        }
        self.check_capacity(&prog)?;
        let mut code: Vec<Arc<[Instr]>> = vec![Arc::from(Vec::new()); self.queues.len()];
        for qc in &prog.queues {
            let i = self
                .queue_index(&qc.queue)
                .expect("checked by Program::check");
            code[i] = Arc::from(qc.code.clone());
        }
        let slices = self.cfg.mem_slices as usize;
        let mut read = vec![false; 2 * slices];
        for (info, code) in self.queues.iter().zip(&code) {
            if let QueueKind::Mem { hemi, slice, .. } = info.kind {
                if code.iter().any(|i| matches!(i.op, Op::Read | Op::Gather)) {
                    read[hemi as usize * slices + slice as usize] = true;
                }
            }
        }
        self.read = read.into();
        self.writers = Arc::new(batch::Writers::new(&code, self.cfg.streams as usize));
        let mut start_pc = vec![0; self.queues.len()];
        if let Some(e) = prog.entries.iter().find(|e| Some(e.name.as_str()) == entry) {
            for (name, pc) in &e.starts {
                if let Some(i) = self.queue_index(name) {
                    start_pc[i] = *pc as usize;
                }
            }
        }
        self.start_active = (0..self.queues.len())
            .filter(|&i| start_pc[i] < code[i].len())
            .collect();
        self.start_pc = start_pc.into();
        self.code = code;
        self.program = Some(prog);
        self.entry = entry.map(str::to_string);
        self.plan = None;
        self.reset();
        Ok(())
    }

    fn check_capacity(&self, prog: &Program) -> Result<(), CapacityError> {
        let limit = self.cfg.instruction_capacity();
        let need = prog.instruction_count() as u64;
        if need > limit {
            return Err(CapacityError {
                msg: format!(
                    "the program has {need} instructions ({} bytes); the chip's instruction memory holds {limit} ({} bytes)",
                    8 * need,
                    8 * limit
                ),
            });
        }
        Ok(())
    }

    /// Return to the state right after `load`: SRAM holds only the program's
    /// initialisers, every queue is at its entry point, cycle 0, counters cleared.
    pub fn reset(&mut self) {
        self.forget_pause();
        self.reinit(None);
    }

    /// Like [`Chip::reset`] but SRAM keeps its current contents: run the program again
    /// on the state the last run left (a decode step after the previous one).
    pub fn restart(&mut self) {
        self.forget_pause();
        let sram = std::mem::replace(&mut self.sram, Sram::new(0, 0, 0));
        self.reinit(Some(sram));
    }

    /// Back to the state right after `load`, with `sram` as the SRAM if given (else the
    /// program's initialisers on an empty SRAM).
    fn reinit(&mut self, sram: Option<Sram>) {
        // The largest structures are emptied in place rather than made again.
        let mut streams = std::mem::replace(&mut self.streams, Streams::new(0, 0, 0, 0));
        streams.clear();
        let planes = std::mem::take(&mut self.planes)
            .into_iter()
            .map(Plane::recycled)
            .collect();
        let keep_sram = sram.is_some();
        let sram = sram.unwrap_or_else(|| {
            let cfg = &self.cfg;
            Sram::new(cfg.mem_slices as usize, cfg.addresses as usize, cfg.lanes())
        });
        let fresh = Chip::from_parts(
            self.cfg.clone(),
            self.queues.clone(),
            self.by_kind.clone(),
            streams,
            planes,
            sram,
            std::mem::take(&mut self.code),
        );
        let keep_policy = self.policy;
        let fast = self.fast;
        let bps = std::mem::take(&mut self.breakpoints);
        let wps = std::mem::take(&mut self.watchpoints);
        let prog = self.program.take();
        let read = std::mem::take(&mut self.read);
        let writers = std::mem::take(&mut self.writers);
        let start_pc = std::mem::take(&mut self.start_pc);
        let start_active = std::mem::take(&mut self.start_active);
        let entry = self.entry.take();
        let pool = std::mem::take(&mut self.pool);
        let (plan, replayed) = (self.plan.take(), self.replayed);
        *self = fresh;
        self.pool = pool;
        (self.plan, self.replayed) = (plan, replayed);
        self.read = read;
        self.writers = writers;
        self.start_pc = start_pc;
        self.start_active = start_active;
        self.policy = keep_policy;
        self.fast = fast;
        self.breakpoints = bps;
        self.watchpoints = wps;
        self.entry = entry;
        if let Some(p) = prog.as_ref().filter(|_| !keep_sram) {
            for init in &p.inits {
                let (h, s) = (init.hemi as usize, init.slice as usize);
                self.sram.write_words(h, s, init.addr as usize, &init.data);
            }
        }
        if prog.is_some() {
            for (q, &pc) in self.q.iter_mut().zip(self.start_pc.iter()) {
                q.pc = pc;
            }
            self.active = self.start_active.to_vec();
            self.halted = self.active.is_empty();
            self.fresh = true;
        }
        self.program = prog;
    }

    /// The whole state (of a paused run: as single issues would have left it at the
    /// pause, see `touched`).
    pub fn snapshot(&mut self) -> Snapshot {
        self.touched();
        Snapshot(Box::new(self.clone()))
    }

    /// Restore a snapshot taken from a chip with the same config.
    pub fn restore(&mut self, s: &Snapshot) -> Result<(), crate::error::ConfigError> {
        if s.0.cfg != self.cfg {
            return Err(crate::error::ConfigError::new(
                "the snapshot was taken on a chip with a different config",
            ));
        }
        self.forget_pause();
        *self = (*s.0).clone();
        Ok(())
    }

    pub fn clear_stats(&mut self) {
        self.touched();
        self.stats = Stats {
            per_queue: vec![0; self.queues.len()],
            mxm_busy: vec![0; self.planes.len()],
            ..Stats::default()
        };
    }

    pub fn add_breakpoint(&mut self, queue: usize, index: usize) {
        self.touched();
        self.breakpoints.insert((queue, index));
    }
    pub fn remove_breakpoint(&mut self, queue: usize, index: usize) -> bool {
        self.touched();
        self.breakpoints.remove(&(queue, index))
    }
    pub fn add_watchpoint(&mut self, hemi: u8, slice: u16, addr: u32) {
        self.touched();
        self.watchpoints.insert((hemi, slice, addr));
    }
    pub fn remove_watchpoint(&mut self, hemi: u8, slice: u16, addr: u32) -> bool {
        self.touched();
        self.watchpoints.remove(&(hemi, slice, addr))
    }

    /// Write whole words of SRAM from `addr` on directly (host DMA; not timed).
    pub fn write_words(&mut self, hemi: u8, slice: u16, addr: u32, data: &[u8]) {
        self.touched();
        self.sram
            .write_words(hemi as usize, slice as usize, addr as usize, data);
    }

    /// An SRAM word to write in place (host access, not timed).
    pub fn word_mut(&mut self, hemi: u8, slice: u16, addr: u32) -> &mut [u8] {
        self.touched();
        self.sram
            .word_mut(hemi as usize, slice as usize, addr as usize)
    }

    /// An SRAM word, or None if it was never written (it reads as zero).
    pub fn word(&self, hemi: u8, slice: u16, addr: u32) -> Option<&[u8]> {
        self.sram.word(hemi as usize, slice as usize, addr as usize)
    }

    pub fn read_word(&self, hemi: u8, slice: u16, addr: u32, out: &mut [u8]) {
        self.sram
            .read(hemi as usize, slice as usize, addr as usize, out);
    }

    /// The value on a stream register at a position on the current cycle.
    pub fn stream_value(&self, s: StreamRef, pos: u32) -> Option<&[u8]> {
        self.streams.read(s, pos, self.cycle)
    }

    /// Program counter of each queue: (next instruction index, instructions).
    pub fn queue_state(&self, i: usize) -> (usize, usize, bool) {
        (self.q[i].pc, self.code[i].len(), self.q[i].parked)
    }

    /// Run until halted, a stop condition, or `limits`.
    pub fn run(&mut self, limits: Limits) -> RunStatus {
        self.run_traced(limits, &mut NoTrace)
    }

    /// [`Chip::run`] with `tracer` watching; it pauses (status `Paused`) after
    /// `limits.issue_budget` issues.
    pub fn run_traced<T: Tracer>(&mut self, limits: Limits, tracer: &mut T) -> RunStatus {
        self.run_sliced(limits, tracer, |_| true)
    }

    /// [`Chip::run_traced`], going on after each `limits.issue_budget` issues unless
    /// `stop(cycle)` says to pause there (a caller checking for interrupts). It is one
    /// run throughout: a fault after a slice is redone from before the run's first
    /// batch, and its plan (see `plan`) is recorded or replayed. A run paused so and
    /// resumed by the next call stays one run for redoing a fault (unless something
    /// else changed the chip in between), though not for its plan.
    pub fn run_sliced<T: Tracer>(
        &mut self,
        limits: Limits,
        tracer: &mut T,
        mut stop: impl FnMut(u64) -> bool,
    ) -> RunStatus {
        if self.fault.is_some() {
            return RunStatus::Fault;
        }
        if self.halted {
            return RunStatus::Halted;
        }
        // Batches are used only where nothing can tell them from single issues: no tracer,
        // no watchpoints, every fault an error that stops the run.
        let fast = self.fast;
        self.fast = fast
            && !tracer.enabled()
            && self.watchpoints.is_empty()
            && self.policy.iter().all(|p| *p == FaultPolicy::Error);
        if tracer.enabled() {
            self.value_log = Some(Vec::new());
        }
        // A batched run from the program's start records its batch decisions, or
        // takes them from the plan the first such run that halted recorded.
        let fresh = std::mem::take(&mut self.fresh);
        self.plan_use = match &self.plan {
            _ if !(fresh && self.fast && self.breakpoints.is_empty()) => plan::PlanUse::Off,
            Some(p) => plan::PlanUse::Replay {
                plan: p.clone(),
                next: 0,
                step: 0,
            },
            None => plan::PlanUse::Record(plan::Plan::default()),
        };
        // A run resumed after a pause goes on as the same run: a fault is redone from
        // before the first batch of its first part.
        let mut base: Option<Box<Chip>> = self.resume.0.take();
        let mut status = self.run_slices(limits, tracer, &mut base, &mut stop);
        if status == RunStatus::Halted && self.plan_use.unfinished() {
            self.diverged = true;
        }
        if std::mem::take(&mut self.diverged) {
            // Not the recorded run (a batch attempt differed, or answers were left):
            // again from before the first batch, looking ahead as usual. (With no batch
            // attempt there is no such state, but then no answer was used either.)
            self.plan_use = plan::PlanUse::Off;
            if let Some(b) = base.take() {
                self.rewind_to(b);
                status = self.run_slices(limits, tracer, &mut base, &mut stop);
            }
        }
        let mut replayed = matches!(self.plan_use, plan::PlanUse::Replay { .. });
        if let Some(p) = std::mem::take(&mut self.plan_use).recorded() {
            if status == RunStatus::Halted {
                self.plan = Some(Arc::new(p));
            }
        }
        if matches!(status, RunStatus::Fault | RunStatus::Breakpoint) {
            if let Some(b) = base.take() {
                // Batches had already done issues for cycles after the stop: run the same
                // stretch again from before the first batch, one issue at a time, so the
                // chip stops in exactly the state single issues leave.
                self.rewind_to(b);
                self.fast = false;
                status = self.run_slices(limits, tracer, &mut None, &mut stop);
                replayed = false;
            }
        }
        if status != RunStatus::Halted {
            self.untake_nops();
        }
        self.replayed = replayed;
        self.flush_bulk(None);
        match base {
            // Paused between slices (the caller's `stop`): batches may have done issues
            // past the pause, so the state to redo from stays, and SRAM's journal.
            Some(b) if status == RunStatus::Paused => self.resume = Resume(Some(b)),
            _ => self.sram.stop_journal(),
        }
        self.fast = fast;
        self.value_log = None;
        status
    }

    /// Something other than a run is about to change the chip. If a run paused (see
    /// `run_sliced`), its batches may have done issues past the pause: it is redone
    /// from before its first batch to the pause cycle (no batch goes past a cycle
    /// limit), so that the change meets the chip as single issues would have left it,
    /// and the run resumed after it is a run of its own (a redo from before the pause
    /// would undo the change).
    fn touched(&mut self) {
        if let Some(base) = self.resume.0.take() {
            let at = self.cycle;
            self.rewind_to(base);
            let limits = Limits {
                until: at,
                issue_budget: u64::MAX,
            };
            self.run_sliced(limits, &mut NoTrace, |_| false);
        }
    }

    /// The chip starts afresh: a paused run will not resume.
    fn forget_pause(&mut self) {
        if self.resume.0.take().is_some() {
            self.sram.stop_journal();
        }
    }

    /// Back to `base`, the state kept before a run's first batch (see `run_steps`).
    /// SRAM goes back by its journal; slices the program never reads keep what they
    /// hold now (a redo writes the same words again).
    fn rewind_to(&mut self, mut base: Box<Chip>) {
        let mut sram = std::mem::replace(&mut self.sram, Sram::new(0, 0, 0));
        sram.rewind();
        base.sram = sram;
        *self = *base;
    }

    /// `run_inner` again after each `limits.issue_budget` issues, unless `stop`.
    fn run_slices<T: Tracer>(
        &mut self,
        limits: Limits,
        tracer: &mut T,
        base: &mut Option<Box<Chip>>,
        stop: &mut impl FnMut(u64) -> bool,
    ) -> RunStatus {
        loop {
            let status = self.run_inner(limits, tracer, base);
            if status != RunStatus::Paused || self.diverged || stop(self.cycle) {
                return status;
            }
        }
    }

    fn run_inner<T: Tracer>(
        &mut self,
        limits: Limits,
        tracer: &mut T,
        base: &mut Option<Box<Chip>>,
    ) -> RunStatus {
        // Queues that can issue, by the next cycle they do (then by index, the order in
        // which queues issue within a cycle), or as a plan says (from where the run's
        // previous slice stopped).
        let mut due = self.plan_use.steps();
        let status = self.run_steps(limits, tracer, base, &mut due);
        self.plan_use.stopped_at(&due);
        status
    }

    fn run_steps<T: Tracer>(
        &mut self,
        limits: Limits,
        tracer: &mut T,
        base: &mut Option<Box<Chip>>,
        due: &mut plan::Steps,
    ) -> RunStatus {
        self.watch_hit = None;
        let mut budget = limits.issue_budget;
        // Parked queues join `due` when notified.
        for &qi in &self.active {
            if !self.q[qi].parked {
                due.push(self.q[qi].next, qi);
            }
        }
        let mut now: Vec<usize> = Vec::new();
        loop {
            // The next cycle anything happens.
            let mut t = due.next().unwrap_or(u64::MAX);
            if let Some(&n) = self.notify_at.iter().next() {
                t = t.min(n);
            }
            // A watched write must stop the run on the cycle it lands, not on the next
            // cycle something issues: with watchpoints set, landings are events too.
            if !self.watchpoints.is_empty() {
                if let Some(w) = self.pending.front() {
                    t = t.min(w.cycle);
                }
            }
            if t == u64::MAX {
                if self.active.is_empty() {
                    return self.finish();
                }
                let qi = self.active[0];
                self.raise_at(
                    FaultKind::Deadlock,
                    qi,
                    self.q[qi].pc.saturating_sub(1),
                    0,
                    "every remaining queue waits in sync and no notify is coming".into(),
                );
                return RunStatus::Fault;
            }
            t = t.max(self.cycle);
            if t >= limits.until {
                self.cycle = limits.until.max(self.cycle);
                self.commit_writes(self.cycle.saturating_sub(1));
                return RunStatus::CycleLimit;
            }
            if budget == 0 {
                return RunStatus::Paused;
            }
            self.cycle = t;
            self.commit_writes(t);
            self.streams.prune(t);
            for p in 0..self.planes.len() {
                if self.planes[p].hist.len() > batch::UNFOLDED {
                    self.settle_hist(p, t);
                }
            }
            if self.watch_hit.is_some() {
                return RunStatus::Watchpoint;
            }
            // Deliver notifies due now.
            while let Some(&n) = self.notify_at.iter().next() {
                if n > t {
                    break;
                }
                self.notify_at.remove(&n);
                self.last_notify = Some(n);
                for &qi in &self.active {
                    if self.q[qi].parked {
                        self.q[qi].parked = false;
                        self.q[qi].next = t;
                        due.push(t, qi);
                    }
                }
            }
            now.clear();
            due.pop_until(t, &mut now);
            self.plan_use.note_steps(t, &now);
            // Breakpoints are checked for every queue before anything issues this cycle.
            if !self.breakpoints.is_empty()
                && self.resume_cycle != Some(t)
                && now.iter().any(|&qi| {
                    self.q[qi].rep.is_none() && self.breakpoints.contains(&(qi, self.q[qi].pc))
                })
            {
                self.resume_cycle = Some(t);
                return RunStatus::Breakpoint;
            }
            if self.fast && base.is_none() && now.iter().any(|&q| self.may_batch(q)) {
                // A batch may happen this cycle: keep the state to redo it from if needed.
                // SRAM is not kept but journalled from here on (holding its pages would
                // make the first write to each copy it), and only in the slices the
                // program reads: a redo writes the others' words again.
                // Nor the plan in use: a redo from there does without it.
                let sram = std::mem::replace(&mut self.sram, Sram::new(0, 0, 0));
                let plan_use = std::mem::take(&mut self.plan_use);
                let b = Box::new(self.clone());
                self.sram = sram;
                self.plan_use = plan_use;
                self.sram.start_journal(&self.read);
                *base = Some(b);
            }
            let mut finished = false;
            for &qi in &now {
                self.step_queue(qi, t, limits.until, tracer, &mut budget);
                if self.fault.is_some() {
                    self.cycle = t;
                    return RunStatus::Fault;
                }
                if self.diverged {
                    return RunStatus::Paused; // redone by `run_sliced`
                }
                if self.breakpoints.is_empty() {
                    self.take_nops(qi);
                }
                let s = &self.q[qi];
                if s.rep.is_none() && s.pc >= self.code[qi].len() && !s.parked {
                    finished = true;
                } else if !s.parked {
                    due.push(s.next, qi);
                }
            }
            if finished {
                let (q, code) = (&self.q, &self.code);
                self.active
                    .retain(|&qi| q[qi].rep.is_some() || q[qi].pc < code[qi].len() || q[qi].parked);
            }
            if tracer.enabled() {
                let c = Counters {
                    live_streams: self.streams.live() as u64,
                    sram_reads: self.stats.sram_reads,
                    sram_writes: self.stats.sram_writes,
                    stream_writes: self.stats.stream_writes,
                };
                tracer.cycle(t, &c);
            }
            self.cycle = t + 1;
            if self.watch_hit.is_some() {
                return RunStatus::Watchpoint;
            }
        }
    }

    /// Take the `nop`s queue `qi` fetches next now rather than on the cycle each is
    /// due (a `nop` only sets the cycle the queue's next instruction issues on): the
    /// same issues on the same cycles, without a visit to the queue for each. Over half the queue
    /// visits of a decode step were to fetch a `nop`. A `nop` that ends the code is
    /// left for its cycle, which the program's length counts. (Not with breakpoints,
    /// which may be on a `nop`.)
    fn take_nops(&mut self, qi: usize) {
        let (s, code) = (&mut self.q[qi], &self.code[qi]);
        if s.rep.is_some() || s.parked {
            return;
        }
        let from = (s.pc, s.next);
        while let Some(i) = code.get(s.pc).filter(|i| i.op == Op::Nop) {
            if s.pc + 1 == code.len() {
                break;
            }
            s.next += i.args[0] as u64;
            s.pc += 1;
        }
        if s.pc != from.0 {
            s.nops_taken = Some((from.0, from.1, s.pc));
        }
    }

    /// A run stopped before its end on `self.cycle`: put back the `nop`s taken ahead
    /// whose cycle has not come, so that the queues are where single issues leave them
    /// (`queue_state`, a breakpoint set on one of those `nop`s, the next run's steps).
    fn untake_nops(&mut self) {
        for (s, code) in self.q.iter_mut().zip(&self.code) {
            let Some((pc0, next0, end)) = s.nops_taken.take() else {
                continue;
            };
            if s.pc != end || s.rep.is_some() || s.parked {
                continue; // it has issued since
            }
            // Nor if it issued and came back to the same index (code fetched anew).
            let Some(nops) = code
                .get(pc0..end)
                .filter(|n| n.iter().all(|i| i.op == Op::Nop))
            else {
                continue;
            };
            if s.next != next0 + nops.iter().map(|i| i.args[0] as u64).sum::<u64>() {
                continue;
            }
            let (mut pc, mut next) = (pc0, next0);
            while pc < end && next < self.cycle {
                next += code[pc].args[0] as u64;
                pc += 1;
            }
            (s.pc, s.next) = (pc, next);
        }
    }

    /// Whether queue `q`, due now, might issue a batch this cycle: it is in a repeat, or
    /// about to take one or to issue the instruction before one, after any `sync`s that
    /// let it through and `repeat 0`s (which cost no cycle).
    fn may_batch(&self, q: usize) -> bool {
        let (s, code) = (&self.q[q], &self.code[q]);
        let free = |i: &Instr| i.op == Op::Sync || (i.op == Op::Repeat && i.args[0] == 0);
        let pc = (s.pc..code.len())
            .find(|&pc| !free(&code[pc]))
            .unwrap_or(code.len());
        s.rep.is_some() || code[pc..].iter().take(2).any(|i| i.op == Op::Repeat)
    }

    fn finish(&mut self) -> RunStatus {
        self.commit_writes(u64::MAX);
        self.notify_at.clear();
        if let Some(t) = self.last_activity {
            self.cycle = self.cycle.max(t + 1);
        }
        self.halted = true;
        if self.watch_hit.is_some() {
            return RunStatus::Watchpoint;
        }
        RunStatus::Halted
    }

    fn commit_writes(&mut self, t: u64) {
        self.bulk_due = self.bulk_due.max(t);
        if self.pending.front().is_some_and(|w| w.cycle <= t) {
            self.flush_bulk(None); // landed before these, or with them
        }
        while self.pending.front().is_some_and(|w| w.cycle <= t) {
            let w = self.pending.pop_front().unwrap();
            let (h, s, a) = (w.hemi as usize, w.slice as usize, w.addr as usize);
            match &w.lanes {
                None => {
                    self.sram.write(h, s, a, &w.data);
                    if self.watchpoints.contains(&(w.hemi, w.slice, w.addr)) {
                        self.watch_hit = Some((w.hemi, w.slice, w.addr));
                    }
                }
                Some(runs) => {
                    self.sram.write_lanes(h, s, runs, &w.data);
                    for r in runs {
                        if self.watchpoints.contains(&(w.hemi, w.slice, r.addr)) {
                            self.watch_hit = Some((w.hemi, w.slice, r.addr));
                        }
                    }
                }
            }
        }
    }

    /// Issue whatever `qi` issues on cycle `t` (zero-cost ICU instructions chain).
    fn step_queue<T: Tracer>(
        &mut self,
        qi: usize,
        t: u64,
        until: u64,
        tracer: &mut T,
        budget: &mut u64,
    ) {
        loop {
            let s = &self.q[qi];
            if s.parked || s.next != t {
                return;
            }
            if let Some(d) = self.q[qi].rep.as_ref().map(|r| r.d as u64) {
                if !tracer.enabled() {
                    let s = &mut self.q[qi];
                    if s.batch_skip > 0 {
                        s.batch_skip -= 1;
                    } else {
                        let limit = issue_limit(*budget, until, t, d);
                        let k = self.try_batch(qi, t, limit, false);
                        let s = &mut self.q[qi];
                        if k > 0 {
                            s.batch_backoff = 0;
                            *budget = budget.saturating_sub(k);
                            return;
                        }
                        s.batch_backoff = (2 * s.batch_backoff).clamp(1, 64);
                        s.batch_skip = s.batch_backoff;
                    }
                }
                let rep = self.q[qi].rep.as_ref().expect("checked");
                let mut rep = rep.clone();
                rep.k += 1;
                rep.left -= 1;
                let mut instr = rep.instr;
                let def = instr.def();
                for (fi, f) in def.fields.iter().enumerate() {
                    if f.kind.advances() {
                        instr.args[fi] += rep.k;
                    }
                }
                let (index, k) = (rep.index, rep.k);
                let s = &mut self.q[qi];
                s.next = if rep.left == 0 {
                    t + 1
                } else {
                    t + rep.d as u64
                };
                s.rep = (rep.left > 0).then_some(rep);
                self.issue(qi, index, k, &instr, t, tracer);
                *budget = budget.saturating_sub(1);
                return;
            }
            let code = &self.code[qi];
            let pc = self.q[qi].pc;
            if pc >= code.len() {
                return;
            }
            let instr = code[pc];
            self.q[qi].pc += 1;
            match instr.op {
                Op::Nop => {
                    self.q[qi].next = t + instr.args[0] as u64;
                    return;
                }
                Op::Repeat => {
                    let (n, d) = (instr.args[0], instr.args[1]);
                    if n == 0 {
                        continue;
                    }
                    let prev = code[pc - 1];
                    let s = &mut self.q[qi];
                    s.rep = Some(Rep::new(prev, pc - 1, n, d));
                    s.next = (s.last_issue + d as u64).max(t);
                    continue;
                }
                Op::Sync => {
                    if self.last_notify != Some(t) {
                        self.q[qi].parked = true;
                        return;
                    }
                    continue;
                }
                _ => {}
            }
            if self.batch_with_repeat(qi, pc, t, until, tracer, budget) {
                return;
            }
            self.q[qi].next = t + 1;
            self.issue(qi, pc, 0, &instr, t, tracer);
            *budget = budget.saturating_sub(1);
            return;
        }
    }

    /// The instruction at `pc` (due on `t`, `pc` already stepped past it) followed by
    /// `repeat n, d` is a run of n + 1 issues from `t`: batch it from its first issue,
    /// as if the repeat had been taken. Returns whether a batch was done; if not,
    /// nothing changed. (Not with breakpoints, which may stop on the repeat itself.)
    fn batch_with_repeat<T: Tracer>(
        &mut self,
        qi: usize,
        pc: usize,
        t: u64,
        until: u64,
        tracer: &T,
        budget: &mut u64,
    ) -> bool {
        let Some(&r) = self.code[qi].get(pc + 1) else {
            return false;
        };
        if r.op != Op::Repeat || r.args[0] == 0 || tracer.enabled() || !self.breakpoints.is_empty()
        {
            return false;
        }
        let (n, d) = (r.args[0], r.args[1]);
        let instr = self.code[qi][pc];
        let s = &mut self.q[qi];
        s.pc = pc + 2;
        s.rep = Some(Rep::new(instr, pc, n, d));
        let limit = issue_limit(*budget, until, t, d as u64);
        let k = self.try_batch(qi, t, limit, true);
        if k == 0 {
            let s = &mut self.q[qi];
            s.pc = pc + 1;
            s.rep = None;
            return false;
        }
        *budget = budget.saturating_sub(k);
        true
    }

    fn raise_at(
        &mut self,
        kind: FaultKind,
        qi: usize,
        index: usize,
        repeat: u32,
        msg: String,
    ) -> bool {
        let policy = if kind.recoverable() {
            self.policy[kind as usize]
        } else {
            FaultPolicy::Error
        };
        if policy == FaultPolicy::Ignore {
            return false;
        }
        let instr = self.code[qi]
            .get(index)
            .map_or_else(String::new, |i| i.disassemble());
        let f = Fault {
            kind,
            cycle: self.cycle,
            queue: self.queues[qi].name.clone(),
            index,
            repeat,
            instr,
            msg,
        };
        match policy {
            FaultPolicy::Error => {
                self.fault = Some(f);
                true
            }
            _ => {
                if self.warnings.len() < MAX_WARNINGS {
                    self.warnings.push(f);
                }
                false
            }
        }
    }

    fn issue<T: Tracer>(
        &mut self,
        qi: usize,
        index: usize,
        k: u32,
        instr: &Instr,
        t: u64,
        tracer: &mut T,
    ) {
        let unit = instr.op.unit();
        let ui = Unit::ALL.iter().position(|u| *u == unit).unwrap();
        self.stats.issued[ui] += 1;
        self.stats.per_queue[qi] += 1;
        self.stats.busy[ui].insert(t);
        self.q[qi].last_issue = t;
        let done = t + self.lat[instr.op as usize] as u64;
        self.last_activity = Some(self.last_activity.map_or(done, |a| a.max(done)));
        tracer.issue(t, qi, index, instr, done);
        let ctx = Ctx {
            qi,
            index,
            k,
            t,
            done,
        };
        let kind = self.queues[qi].kind;
        let pos = self.queues[qi].position;
        match (unit, kind) {
            (Unit::Mem, QueueKind::Mem { hemi, slice, .. }) => {
                self.exec_mem(&ctx, instr, hemi, slice, pos)
            }
            (Unit::Vxm, QueueKind::Vxm { alu }) => self.exec_vxm(&ctx, instr, alu as usize, pos),
            (
                Unit::Mxm,
                QueueKind::MxmLoad { plane }
                | QueueKind::MxmAbc { plane }
                | QueueKind::MxmAcc { plane },
            ) => self.exec_mxm(&ctx, instr, plane as usize, pos),
            (Unit::Sxm, _) => self.exec_sxm(&ctx, instr, pos),
            (Unit::Icu | Unit::C2c, _) => self.exec_icu_or_c2c(&ctx, instr),
            _ => unreachable!("queue/unit pairing is checked at load"),
        }
        if let Some(log) = &mut self.value_log {
            for (writer, landed) in log.drain(..) {
                tracer.value(qi, t, writer as usize, landed);
            }
        }
    }

    /// Report a fault at the instruction in `ctx`; true if the run must stop.
    fn raise(&mut self, ctx: &Ctx, kind: FaultKind, msg: String) -> bool {
        self.raise_at(kind, ctx.qi, ctx.index, ctx.k, msg)
    }

    /// The first stream of an aligned group of `n` streams, or a fault.
    fn group(&mut self, ctx: &Ctx, base: u32, n: usize) -> Option<StreamRef> {
        let s0 = StreamRef::from_operand(base).expect("validated stream operand");
        let n = n as u32;
        if s0.index + n > self.cfg.streams {
            let name = FieldKind::Stream.format(base);
            let msg = format!("a group of {n} streams cannot start at {name}");
            self.raise(ctx, FaultKind::BadOperand, msg);
            return None;
        }
        Some(s0)
    }

    /// Read `n` consecutive streams from `base` at `pos` into the operand buffer `which`
    /// (plane-major). Returns false if the run must stop.
    fn read_group(&mut self, ctx: &Ctx, base: u32, n: usize, pos: u32, which: Which) -> bool {
        let slot = match which {
            Which::A => &mut self.sa,
            Which::B => &mut self.sb,
        };
        let mut dst = std::mem::take(slot);
        let ok = self.read_group_into(ctx, base, n, pos, &mut dst);
        match which {
            Which::A => self.sa = dst,
            Which::B => self.sb = dst,
        }
        ok
    }

    /// [`Chip::read_group`] into `dst` (at least `n` planes long).
    fn read_group_into(
        &mut self,
        ctx: &Ctx,
        base: u32,
        n: usize,
        pos: u32,
        dst: &mut [u8],
    ) -> bool {
        let Some(s0) = self.group(ctx, base, n) else {
            return false;
        };
        let lanes = self.lanes;
        for (b, dst) in dst.chunks_mut(lanes).take(n).enumerate() {
            let s = StreamRef {
                index: s0.index + b as u32,
                west: s0.west,
            };
            self.stats.stream_reads += 1;
            match self.streams.read_traced(s, pos, ctx.t) {
                Some((v, writer, landed)) => {
                    dst.copy_from_slice(v);
                    if let Some(log) = &mut self.value_log {
                        log.push((writer, landed));
                    }
                }
                None => {
                    dst.fill(0);
                    let name = FieldKind::Stream.format(s.operand());
                    if self.raise(
                        ctx,
                        FaultKind::StreamEmpty,
                        format!("stream {name} carries no valid data at position {pos}"),
                    ) {
                        return false;
                    }
                }
            }
        }
        true
    }

    /// Put `n` planes of `data` on streams base.. at `pos`, landing on cycle `at`.
    fn write_group(
        &mut self,
        ctx: &Ctx,
        base: u32,
        n: usize,
        pos: u32,
        at: u64,
        data: &[u8],
    ) -> bool {
        let Some(s0) = self.group(ctx, base, n) else {
            return false;
        };
        let lanes = self.lanes;
        for b in 0..n {
            let s = StreamRef {
                index: s0.index + b as u32,
                west: s0.west,
            };
            self.stats.stream_writes += 1;
            if let Err(c) =
                self.streams
                    .write(s, pos, at, &data[b * lanes..(b + 1) * lanes], ctx.qi as u32)
            {
                let other = self.queues[c.other_writer as usize].name.clone();
                let name = FieldKind::Stream.format(s.operand());
                if self.raise(
                    ctx,
                    FaultKind::StreamConflict,
                    format!(
                        "stream {name} at position {pos} on cycle {at} is also written by {other}"
                    ),
                ) {
                    return false;
                }
            }
        }
        true
    }

    fn use_bank(&mut self, ctx: &Ctx, hemi: u8, slice: u16, addr: u32, write: bool) -> bool {
        let bank = (addr >= self.cfg.addresses / 2) as u8;
        let i = hemi as usize * self.cfg.mem_slices as usize + slice as usize;
        let u = &mut self.bank[i];
        if u.cycle != ctx.t {
            *u = BankUse {
                cycle: ctx.t,
                read: None,
                write: None,
            };
        }
        let problem = if write {
            match (u.write, u.read) {
                (Some(_), _) => Some("two writes".to_string()),
                (_, Some(b)) if b == bank => Some(format!("a read and a write on bank {bank}")),
                _ => None,
            }
        } else {
            match (u.read, u.write) {
                (Some(_), _) => Some("two reads".to_string()),
                (_, Some(b)) if b == bank => Some(format!("a read and a write on bank {bank}")),
                _ => None,
            }
        };
        if write {
            u.write = Some(bank);
        } else {
            u.read = Some(bank);
        }
        if let Some(p) = problem {
            let msg = format!(
                "MEM slice {}{} serves {p} in one cycle",
                hemi_name(hemi),
                slice
            );
            return !self.raise(ctx, FaultKind::BankConflict, msg);
        }
        true
    }

    fn exec_mem(&mut self, ctx: &Ctx, instr: &Instr, hemi: u8, slice: u16, pos: u32) {
        let a = instr.args;
        let lanes = self.lanes;
        let addresses = self.cfg.addresses;
        let check_addr = |addr: u32| addr < addresses;
        if matches!(instr.op, Op::Read | Op::Gather) {
            self.flush_bulk(Some((hemi, slice))); // batched writes it may read
        }
        match instr.op {
            Op::Read | Op::Write => {
                let addr = a[0];
                if !check_addr(addr) {
                    self.raise(
                        ctx,
                        FaultKind::BadOperand,
                        format!("address {addr} is past the slice's {addresses} words"),
                    );
                    return;
                }
                if !self.use_bank(ctx, hemi, slice, addr, instr.op == Op::Write) {
                    return;
                }
                if instr.op == Op::Read {
                    self.stats.sram_reads += 1;
                    let mut v = std::mem::take(&mut self.so);
                    self.sram.read(
                        hemi as usize,
                        slice as usize,
                        addr as usize,
                        &mut v[..lanes],
                    );
                    self.write_group(ctx, a[1], 1, pos, ctx.done, &v[..lanes]);
                    self.so = v;
                } else {
                    if !self.read_group(ctx, a[1], 1, pos, Which::A) {
                        return;
                    }
                    self.stats.sram_writes += 1;
                    let data = self.sa[..lanes].to_vec();
                    self.push_write(PendingWrite {
                        cycle: ctx.done,
                        hemi,
                        slice,
                        addr,
                        data,
                        lanes: None,
                    });
                }
            }
            Op::Gather | Op::Scatter => {
                if !self.read_group(ctx, a[0], 2, pos, Which::B) {
                    return;
                }
                // Lane l's word: its two map bytes, taken a run of lanes to one word at
                // a time.
                let (lo, hi) = self.sb[..2 * lanes].split_at(lanes);
                let runs = map_runs(lo, hi);
                if let Some(r) = runs.iter().find(|r| r.addr >= addresses) {
                    self.raise(
                        ctx,
                        FaultKind::BadOperand,
                        format!(
                            "map lane {} names address {}, past the slice's {addresses} words",
                            r.lane, r.addr
                        ),
                    );
                    return;
                }
                let bank0 = runs.first().map_or(0, |r| r.addr);
                if !self.use_bank(ctx, hemi, slice, bank0, instr.op == Op::Scatter) {
                    return;
                }
                if instr.op == Op::Gather {
                    self.stats.sram_reads += 1;
                    let mut v = std::mem::take(&mut self.so);
                    for r in &runs {
                        let (l, n) = (r.lane as usize, r.len as usize);
                        let to = &mut v[l..l + n];
                        match self
                            .sram
                            .word(hemi as usize, slice as usize, r.addr as usize)
                        {
                            Some(w) => to.copy_from_slice(&w[l..l + n]),
                            None => to.fill(0),
                        }
                    }
                    self.write_group(ctx, a[1], 1, pos, ctx.done, &v[..lanes]);
                    self.so = v;
                } else {
                    if !self.read_group(ctx, a[1], 1, pos, Which::A) {
                        return;
                    }
                    self.stats.sram_writes += 1;
                    let data = self.sa[..lanes].to_vec();
                    self.push_write(PendingWrite {
                        cycle: ctx.done,
                        hemi,
                        slice,
                        addr: bank0,
                        data,
                        lanes: Some(runs),
                    });
                }
            }
            _ => {}
        }
    }

    fn push_write(&mut self, w: PendingWrite) {
        // Keep the queue ordered by commit cycle (latencies differ between write kinds).
        let at = self.pending.partition_point(|p| p.cycle <= w.cycle);
        self.pending.insert(at, w);
    }

    /// Read a VXM source operand (stream group or chained ALU output) into scratch.
    fn vxm_src(&mut self, ctx: &Ctx, v: u32, bytes: usize, pos: u32, which: Which) -> bool {
        if v < ALU_SRC_BASE {
            return self.read_group(ctx, v, bytes, pos, which);
        }
        let alu = (v - ALU_SRC_BASE) as usize;
        let lanes = self.lanes;
        self.alu_out[alu].prune(ctx.t);
        let dst = match which {
            Which::A => &mut self.sa,
            Which::B => &mut self.sb,
        };
        let dst = &mut dst[..bytes * lanes];
        match self.alu_out[alu].read_into(ctx.t, dst) {
            Some(w) if w == bytes * lanes => true,
            Some(w) => {
                let msg = format!(
                    "ALU {alu} produced a {}-byte value; this operand needs {bytes} bytes",
                    w / lanes
                );
                !self.raise(ctx, FaultKind::BadOperand, msg)
            }
            None => {
                dst.fill(0);
                let msg = format!("ALU {alu} has no result on this cycle to chain from");
                !self.raise(ctx, FaultKind::StreamEmpty, msg)
            }
        }
    }

    fn exec_vxm(&mut self, ctx: &Ctx, instr: &Instr, alu: usize, pos: u32) {
        let a = instr.args;
        let def = instr.def();
        let dt = DType::from_code(a[0]).expect("validated dtype");
        let (to, sat, src_a, src_b, dst) = if instr.op == Op::Cast {
            (
                DType::from_code(a[1]).expect("validated dtype"),
                a[4] != 0,
                a[2],
                None,
                a[3],
            )
        } else if def.has(crate::isa::flags::BINARY) {
            (dt, false, a[1], Some(a[2]), a[3])
        } else {
            (dt, false, a[1], None, a[2])
        };
        let lanes = self.lanes;
        let nb = dt.bytes();
        if !self.vxm_src(ctx, src_a, nb, pos, Which::A) {
            return;
        }
        if let Some(b) = src_b {
            if !self.vxm_src(ctx, b, nb, pos, Which::B) {
                return;
            }
        }
        let ob = to.bytes();
        let mut out = vec![0u8; ob * lanes];
        // The operands' and result's byte planes, without a list allocated for each.
        fn planes(buf: &[u8], lanes: usize) -> [&[u8]; 4] {
            std::array::from_fn(|i| buf.get(i * lanes..(i + 1) * lanes).unwrap_or(&[]))
        }
        let (a, b) = (planes(&self.sa, lanes), planes(&self.sb, lanes));
        let mut o: [&mut [u8]; 4] = Default::default();
        for (o, chunk) in o.iter_mut().zip(out.chunks_mut(lanes)) {
            *o = chunk;
        }
        vxm::execute(
            &vxm::VxmArgs {
                op: instr.op,
                dt,
                to,
                sat,
                a: &a[..nb],
                b: if src_b.is_some() { &b[..nb] } else { &[] },
            },
            &mut o[..ob],
        );
        if dst != DST_NONE && !self.write_group(ctx, dst, ob, pos, ctx.done, &out) {
            return;
        }
        if self.alu_out[alu].has(ctx.done) {
            let msg = format!(
                "ALU {alu} already has a result landing on cycle {}",
                ctx.done
            );
            if self.raise(ctx, FaultKind::AluConflict, msg) {
                return;
            }
        }
        // Results older than this cycle can no longer be chained from.
        self.alu_out[alu].prune(ctx.t);
        self.alu_out[alu].put(ctx.done, out);
    }

    fn exec_mxm(&mut self, ctx: &Ctx, instr: &Instr, p: usize, pos: u32) {
        let a = instr.args;
        let lanes = self.lanes;
        let slots = self.cfg.mxm_acc_slots;
        match instr.op {
            Op::Lw => {
                let dt = DType::from_code(a[0]).expect("validated dtype");
                let plane = &mut self.planes[p];
                // The streams go straight to the buffer (rows past the loaded ones are
                // not part of the weights, whatever the checks below find).
                let (start, room) = plane.next_load(dt, lanes);
                let mut buf = std::mem::take(&mut plane.buf);
                let read = match buf.own_words(start, LW_STREAMS, lanes) {
                    Some(rows) => self.read_group_into(ctx, a[1], LW_STREAMS, pos, rows),
                    None => self.read_group(ctx, a[1], LW_STREAMS, pos, Which::A),
                };
                self.planes[p].buf = buf;
                if !read {
                    return;
                }
                let plane = &mut self.planes[p];
                if plane.buf_dtype.is_some_and(|d| d != dt) {
                    self.raise(
                        ctx,
                        FaultKind::BadOperand,
                        "lw mixes weight types before iw".into(),
                    );
                    return;
                }
                if room == 0 {
                    let msg = format!(
                        "the weight buffer already holds {} of {lanes} rows",
                        plane.buf_rows
                    );
                    self.raise(ctx, FaultKind::BadOperand, msg);
                    return;
                }
                plane.loaded(dt, 1);
            }
            Op::Iw => {
                let transpose = a[0] != 0;
                let plane = &mut self.planes[p];
                let dt = plane.buf_dtype.unwrap_or(DType::I8);
                // Rows past the ones loaded since the last install are zero (install
                // reads only the loaded ones, so the buffer need not be cleared).
                let used = plane.buf_rows.min(lanes);
                plane
                    .weights
                    .install(dt == DType::I8, lanes, &mut plane.buf, used, transpose);
                plane.weights.trim_views_of(self.sram.zero_page());
                plane.buf_rows = 0;
                plane.buf_dtype = None;
                plane.w_dtype = Some(dt);
                plane.ready = ctx.done;
                self.stats.weights_installed += 1;
            }
            Op::Abc => {
                let slot = (a[1] % slots) as usize;
                let accumulate = a[2] != 0;
                // Adding to the slot reads it; replacing it makes it newer than any batch.
                if accumulate {
                    self.settle_hist(p, u64::MAX);
                }
                let (w_dtype, ready, busy_until) = {
                    let plane = &self.planes[p];
                    (plane.w_dtype, plane.ready, plane.busy_until)
                };
                let Some(dt) = w_dtype else {
                    self.raise(
                        ctx,
                        FaultKind::MxmHazard,
                        format!("plane {p} has no installed weights"),
                    );
                    return;
                };
                if ctx.t < ready {
                    let msg = format!("plane {p}'s weights are installed on cycle {ready}");
                    if self.raise(ctx, FaultKind::MxmHazard, msg) {
                        return;
                    }
                }
                if ctx.t < busy_until {
                    let msg = format!(
                        "plane {p} is busy with an fp16 activation until cycle {busy_until}"
                    );
                    if self.raise(ctx, FaultKind::MxmHazard, msg) {
                        return;
                    }
                }
                let src = StreamRef::from_operand(a[0]).expect("validated stream operand");
                if !(src.index as usize).is_multiple_of(dt.bytes()) {
                    let msg = format!("fp16 activations need an even stream, not s{}", src.index);
                    self.raise(ctx, FaultKind::BadOperand, msg);
                    return;
                }
                if !self.read_group(ctx, a[0], dt.bytes(), pos, Which::A) {
                    return;
                }
                let float = dt == DType::F16;
                let occupancy = if float { 4 } else { 1 };
                let plane = &mut self.planes[p];
                plane.busy_until = ctx.t + occupancy;
                self.stats.mxm_busy[p] += occupancy;
                let s = plane.slot_mut(slot);
                if accumulate && !s.data.is_empty() && s.float != float {
                    self.raise(
                        ctx,
                        FaultKind::BadOperand,
                        format!("slot {slot} holds results of the other type"),
                    );
                    return;
                }
                // Accumulation happens as results leave the array, in issue order, so an
                // abc may add to a slot whose previous result is still in the pipeline.
                let plane = &mut self.planes[p];
                let s = &mut plane.slots[slot];
                if s.data.is_empty() || !accumulate {
                    s.data.clear();
                    s.data.resize(lanes, 0);
                }
                s.float = float;
                s.ready = ctx.done;
                s.issued = ctx.t;
                let sa = &self.sa;
                let fp16 = |_: usize, row: &mut [f32]| {
                    mxm::widen_f16(&sa[..lanes], &sa[lanes..2 * lanes], row)
                };
                let int8 = |_: usize| &sa[..lanes];
                let x = if float {
                    Activations::Values(&fp16)
                } else {
                    Activations::Int8(&int8)
                };
                plane.weights.apply(1, x, &mut s.data, accumulate);
                if float {
                    self.stats.macs_fp16 += (lanes * lanes) as u64;
                } else {
                    self.stats.macs_int8 += (lanes * lanes) as u64;
                }
            }
            Op::Acc => {
                let slot = (a[0] % slots) as usize;
                let Some((ready, data)) = self
                    .slot_value(p, slot as u64, ctx.t)
                    .map(|(r, d)| (r, d.to_vec()))
                else {
                    self.raise(
                        ctx,
                        FaultKind::MxmHazard,
                        format!("slot {slot} of plane {p} holds no result"),
                    );
                    return;
                };
                if ctx.t < ready {
                    let msg = format!("slot {slot} of plane {p} is ready on cycle {ready}");
                    if self.raise(ctx, FaultKind::MxmHazard, msg) {
                        return;
                    }
                }
                let mut out = vec![0u8; 4 * lanes];
                let mut planes = out.chunks_exact_mut(lanes);
                crate::mxm::byte_planes(
                    &[&data],
                    std::array::from_fn(|_| planes.next().expect("four planes")),
                );
                self.write_group(ctx, a[1], 4, pos, ctx.done, &out);
            }
            _ => {}
        }
    }

    fn exec_sxm(&mut self, ctx: &Ctx, instr: &Instr, pos: u32) {
        let lanes = self.lanes;
        let Some(ops) = SxmOperands::of(instr) else {
            return;
        };
        let (n_in, n_out) = (ops.n_in as usize, ops.n_out as usize);
        if !self.read_group(ctx, ops.src.operand(), n_in, pos, Which::A) {
            return;
        }
        if let Some((map, n)) = ops.map {
            if !self.read_group(ctx, map.operand(), n as usize, pos, Which::B) {
                return;
            }
        }
        let srcs: Vec<&[u8]> = self.sa[..n_in * lanes].chunks(lanes).collect();
        let maps: Vec<&[u8]> = self.sb[..ops.map.map_or(0, |(_, n)| n as usize) * lanes]
            .chunks(lanes)
            .collect();
        let mut flat = std::mem::take(&mut self.so);
        flat.resize(n_out * lanes, 0);
        let mut out: Vec<&mut [u8]> = flat.chunks_exact_mut(lanes).collect();
        if let Err(m) = sxm::apply(instr, &srcs, &maps, &mut out) {
            self.so = flat;
            self.raise(ctx, FaultKind::BadOperand, m);
            return;
        }
        self.write_group(ctx, ops.dst.operand(), n_out, pos, ctx.done, &flat);
        self.so = flat;
    }

    fn exec_icu_or_c2c(&mut self, ctx: &Ctx, instr: &Instr) {
        match instr.op {
            Op::Notify => {
                self.notify_at.insert(ctx.done);
            }
            Op::Ifetch => {
                // The queue stalls while its buffer refills.
                let s = &mut self.q[ctx.qi];
                s.next = s.next.max(ctx.done);
            }
            Op::Send | Op::Receive | Op::Deskew => {
                self.raise(
                    ctx,
                    FaultKind::Unsupported,
                    "chip-to-chip links are not emulated yet (single-chip emulator)".into(),
                );
            }
            _ => {}
        }
    }
}

/// An SXM instruction's streams (from [`Instr::stream_groups`]): the input group, the
/// map (permute, distribute) and the output group.
struct SxmOperands {
    src: StreamRef,
    n_in: u32,
    map: Option<(StreamRef, u32)>,
    dst: StreamRef,
    n_out: u32,
}

impl SxmOperands {
    fn of(instr: &Instr) -> Option<SxmOperands> {
        if instr.op.unit() != Unit::Sxm {
            return None;
        }
        let g = instr.stream_groups();
        let stream = |g: &crate::isa::StreamGroup| {
            StreamRef::from_operand(instr.args[g.field]).expect("validated stream operand")
        };
        let (first, last) = (g.first()?, g.last()?);
        Some(SxmOperands {
            src: stream(first),
            n_in: first.count,
            map: (g.len() == 3).then(|| (stream(&g[1]), g[1].count)),
            dst: stream(last),
            n_out: last.count,
        })
    }
}

/// Which scratch buffer an operand is read into.
#[derive(Clone, Copy)]
enum Which {
    A,
    B,
}

struct Ctx {
    qi: usize,
    index: usize,
    k: u32,
    t: u64,
    done: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isa::Instr;
    use crate::program::QueueCode;

    fn run(chip: &mut Chip, until: u64) -> RunStatus {
        chip.run(Limits {
            until,
            issue_budget: u64::MAX,
        })
    }

    #[test]
    fn watchpoint_stops_on_the_landing_cycle_even_when_nothing_issues_then() {
        // A read on 0 lands at W0 on 3; port 1 writes it to address 5 on 3 (lands on 4);
        // the next issue is on 40. The watch must stop on 4, also under run_until.
        let i = |op, args: &[u32]| Instr::new(op, args).unwrap();
        let mut p = Program::new(ChipConfig::tsp_small());
        p.queues.push(QueueCode {
            queue: "mem.W0.0".into(),
            code: vec![i(Op::Read, &[0, 0])],
        });
        p.queues.push(QueueCode {
            queue: "mem.W0.1".into(),
            code: vec![i(Op::Nop, &[3]), i(Op::Write, &[5, 0])],
        });
        p.queues.push(QueueCode {
            queue: "mem.W1.0".into(),
            code: vec![i(Op::Nop, &[40]), i(Op::Read, &[0, 1])],
        });
        let mut chip = Chip::new(ChipConfig::tsp_small()).unwrap();
        chip.load(Arc::new(p), None).unwrap();
        chip.add_watchpoint(0, 0, 5);
        assert_eq!(run(&mut chip, u64::MAX), RunStatus::Watchpoint);
        assert_eq!(chip.cycle(), 4);
        assert_eq!(run(&mut chip, u64::MAX), RunStatus::Halted);
        chip.reset();
        assert_eq!(run(&mut chip, 30), RunStatus::Watchpoint);
        assert_eq!((chip.cycle(), chip.watch_hit()), (4, Some((0, 0, 5))));
        assert_eq!(run(&mut chip, u64::MAX), RunStatus::Halted);
        assert_eq!(chip.cycles(), 40 + 3 + 2);
    }
}
