//! `Chip` for Python: runs release the GIL and check for Ctrl-C between slices.

use crate::config::ChipConfig;
use crate::program::{device_bytes, hemi_arg, tensor_ok, Program, Tensor};
use crate::{input_error, load_error, BusyError, ConfigError, FaultError};
use lpu_core::config::ChipConfig as CoreConfig;
use lpu_core::dtype::DType;
use lpu_core::engine::{
    Chip as Core, Fault as CoreFault, FaultKind, FaultPolicy, Limits, NoTrace,
    RunStatus as CoreStatus, Snapshot as CoreSnapshot, Tracer,
};
use lpu_core::isa::{StreamRef, Unit};
use lpu_core::trace::Recorder;
use numpy::{PyArray1, PyReadonlyArray1};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyType};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};

/// Issues per GIL-free slice of a run; between slices Python signals (Ctrl-C) are checked.
const SLICE_ISSUES: u64 = 2_000_000;
/// Default `max_cycles` of `run()`: about 1.1 s of chip time at 900 MHz.
pub const DEFAULT_MAX_CYCLES: u64 = 1_000_000_000;

/// Why a run stopped.
#[pyclass(module = "lpu._core", eq, eq_int, frozen, from_py_object)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// Every queue drained and every result landed.
    #[pyo3(name = "HALTED")]
    Halted,
    /// The requested cycle (max_cycles, step, run_until) was reached first.
    #[pyo3(name = "CYCLE_LIMIT")]
    CycleLimit,
    /// A breakpoint instruction is about to issue.
    #[pyo3(name = "BREAKPOINT")]
    Breakpoint,
    /// A watched SRAM word was written.
    #[pyo3(name = "WATCHPOINT")]
    Watchpoint,
    /// A fault stopped the chip; see `Chip.fault`.
    #[pyo3(name = "FAULT")]
    Fault,
}

impl From<CoreStatus> for RunStatus {
    fn from(s: CoreStatus) -> Self {
        match s {
            CoreStatus::Halted => RunStatus::Halted,
            CoreStatus::CycleLimit | CoreStatus::Paused => RunStatus::CycleLimit,
            CoreStatus::Breakpoint => RunStatus::Breakpoint,
            CoreStatus::Watchpoint => RunStatus::Watchpoint,
            CoreStatus::Fault => RunStatus::Fault,
        }
    }
}

/// A runtime fault: what went wrong, on which cycle, queue and instruction.
#[pyclass(module = "lpu._core", eq, frozen, get_all)]
#[derive(Clone, PartialEq)]
pub struct Fault {
    /// Fault kind, e.g. "stream_empty", "stream_conflict", "bank_conflict".
    pub kind: &'static str,
    pub cycle: u64,
    pub queue: String,
    /// Index of the instruction in its queue.
    pub index: usize,
    /// Which re-issue of a repeated instruction (0 = the original).
    pub repeat: u32,
    /// The instruction's assembly text.
    pub instruction: String,
    pub message: String,
}

impl From<&CoreFault> for Fault {
    fn from(f: &CoreFault) -> Self {
        Fault {
            kind: f.kind.name(),
            cycle: f.cycle,
            queue: f.queue.clone(),
            index: f.index,
            repeat: f.repeat,
            instruction: f.instr.clone(),
            message: f.msg.clone(),
        }
    }
}

/// How a value is pickled: a callable and its arguments.
type Reduce<'py, A> = (Bound<'py, PyAny>, A);

#[pymethods]
impl RunStatus {
    /// Pickled by name, so it unpickles to the same member.
    fn __reduce__<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<Reduce<'py, (Bound<'py, PyType>, &'static str)>> {
        let name = match self {
            RunStatus::Halted => "HALTED",
            RunStatus::CycleLimit => "CYCLE_LIMIT",
            RunStatus::Breakpoint => "BREAKPOINT",
            RunStatus::Watchpoint => "WATCHPOINT",
            RunStatus::Fault => "FAULT",
        };
        let getattr = py.import("builtins")?.getattr("getattr")?;
        Ok((getattr, (py.get_type::<RunStatus>(), name)))
    }
}

#[pymethods]
impl Fault {
    #[new]
    fn new(
        kind: &str,
        cycle: u64,
        queue: String,
        index: usize,
        repeat: u32,
        instruction: String,
        message: String,
    ) -> PyResult<Self> {
        Ok(Fault {
            kind: fault_kind(kind)?.name(),
            cycle,
            queue,
            index,
            repeat,
            instruction,
            message,
        })
    }

    #[allow(clippy::type_complexity)] // the constructor's arguments, as Python sees them
    fn __getnewargs__(&self) -> (&'static str, u64, String, usize, u32, String, String) {
        (
            self.kind,
            self.cycle,
            self.queue.clone(),
            self.index,
            self.repeat,
            self.instruction.clone(),
            self.message.clone(),
        )
    }

    fn __str__(&self) -> String {
        let rep = if self.repeat > 0 {
            format!(" (repeat {})", self.repeat)
        } else {
            String::new()
        };
        format!(
            "{} at cycle {}, queue {}, instruction {} `{}`{}: {}",
            self.kind, self.cycle, self.queue, self.index, self.instruction, rep, self.message
        )
    }
    fn __repr__(&self) -> String {
        format!("Fault({})", self.__str__())
    }
}

/// A saved whole-chip state (see `Chip.snapshot`).
#[pyclass(module = "lpu._core", frozen)]
pub struct Snapshot {
    inner: CoreSnapshot,
    cycle: u64,
}

#[pymethods]
impl Snapshot {
    /// The cycle the chip was at.
    #[getter]
    fn cycle(&self) -> u64 {
        self.cycle
    }
}

/// One emulated chip. ``Chip()`` is a ``tsp_v1``; ``Chip(ChipConfig("tsp_small"))`` a
/// small one. Load a Program, then ``run()``, ``step(n)`` or ``run_until(cycle)``.
///
/// Runs release the GIL, so other threads go on meanwhile; a call on a Chip that another
/// thread is using raises BusyError (the chip sits behind a lock), except ``cycle``,
/// which then tells how far the run has got.
#[pyclass(module = "lpu._core", frozen)]
pub struct Chip {
    inner: Mutex<Core>,
    /// The cycle reached, as of the last slice of a run in progress.
    progress: AtomicU64,
}

fn fault_kind(name: &str) -> PyResult<FaultKind> {
    FaultKind::from_name(name).ok_or_else(|| {
        let names: Vec<&str> = FaultKind::ALL.iter().map(|k| k.name()).collect();
        input_error(format!(
            "unknown fault kind '{name}' (one of {})",
            names.join(", ")
        ))
    })
}

impl Chip {
    /// The chip, or BusyError while another thread is using it.
    fn core(&self) -> PyResult<MutexGuard<'_, Core>> {
        match self.inner.try_lock() {
            Ok(g) => Ok(g),
            Err(TryLockError::WouldBlock) => Err(BusyError::new_err(
                "this Chip is in use by another thread (a run, load or tensor copy is in \
                 progress); give each thread its own Chip",
            )),
            // Poisoned only by a panic, which pyo3 already reported as PanicException;
            // the chip's state is whatever that call left.
            Err(TryLockError::Poisoned(p)) => Ok(p.into_inner()),
        }
    }
}

/// An error unless `count` words from `addr` exist in that slice.
fn check_word(chip: &Core, hemi: u8, slice: u16, addr: u32, count: u32) -> PyResult<()> {
    let c = chip.config();
    if slice as u32 >= c.mem_slices {
        return Err(input_error(format!(
            "slice {slice} does not exist (0..{})",
            c.mem_slices
        )));
    }
    if addr as u64 + count as u64 > c.addresses as u64 {
        return Err(input_error(format!(
            "addresses {addr}..{} run past the slice's {} words",
            addr as u64 + count as u64,
            c.addresses
        )));
    }
    if hemi > 1 {
        return Err(input_error(format!("hemisphere {hemi} does not exist")));
    }
    Ok(())
}

#[pymethods]
impl Chip {
    /// ``fast`` (default on) issues runs of repeated instructions in batches where that
    /// provably gives the same results; off issues everything one by one.
    #[new]
    #[pyo3(signature = (config = None, fast = true))]
    fn new(config: Option<ChipConfig>, fast: bool) -> PyResult<Self> {
        let cfg = config.map(|c| c.inner).unwrap_or_else(CoreConfig::tsp_v1);
        let mut inner = Core::new(cfg).map_err(|e| ConfigError::new_err(e.msg))?;
        inner.set_fast(fast);
        Ok(Chip {
            inner: Mutex::new(inner),
            progress: AtomicU64::new(0),
        })
    }

    /// Whether runs of repeated instructions are issued in batches.
    #[getter]
    fn fast(&self) -> PyResult<bool> {
        let c = self.core()?;
        Ok(c.fast())
    }

    /// Issues since load that were done in batches (the rest one by one). Not part of
    /// ``stats()``, which is the same whichever way instructions issue.
    #[getter]
    fn batched_issues(&self) -> PyResult<u64> {
        let c = self.core()?;
        Ok(c.stats().batched)
    }

    /// Whether the last run took its batch decisions from the first run of the loaded
    /// program that halted, instead of looking ahead at the queues' schedules again. A
    /// run from the program's start (after ``load`` or ``reset``) does, with batching on
    /// and no breakpoints, once such a run has halted; the results are the same.
    #[getter]
    fn replayed(&self) -> PyResult<bool> {
        let c = self.core()?;
        Ok(c.replayed())
    }

    #[setter]
    fn set_fast(&self, on: bool) -> PyResult<()> {
        let mut c = self.core()?;
        c.set_fast(on);
        Ok(())
    }

    #[getter]
    fn config(&self) -> PyResult<ChipConfig> {
        let c = self.core()?;
        Ok(ChipConfig {
            inner: c.config().clone(),
        })
    }

    /// The loaded program, if any.
    #[getter]
    fn program(&self) -> PyResult<Option<Program>> {
        let c = self.core()?;
        Ok(c.program().map(|p| Program { inner: p.clone() }))
    }

    /// Load a program (built for this chip's config) and prepare to run `entry`.
    #[pyo3(signature = (program, entry = None))]
    fn load(&self, py: Python<'_>, program: &Program, entry: Option<&str>) -> PyResult<()> {
        let mut c = self.core()?;
        let chip = &mut *c;
        let prog = program.inner.clone();
        py.detach(move || chip.load(prog, entry))
            .map_err(|e| load_error(py, e))
    }

    /// Back to the state right after `load` (SRAM holds only the program's
    /// initialisers). With ``keep_sram=True`` SRAM keeps its contents, so the program can
    /// run again on the state the previous run left.
    #[pyo3(signature = (keep_sram = false))]
    fn reset(&self, keep_sram: bool) -> PyResult<()> {
        let mut c = self.core()?;
        if keep_sram {
            c.restart();
        } else {
            c.reset();
        }
        Ok(())
    }

    /// Run until the program halts, a breakpoint/watchpoint/fault, or `max_cycles` more
    /// cycles have passed (status CYCLE_LIMIT; `cycle` says where it stopped). The run
    /// can be resumed by calling `run` again. Ctrl-C stops it between cycles with
    /// KeyboardInterrupt, leaving the chip consistent and resumable.
    ///
    /// With ``trace="out.json"`` the run also writes a Chrome trace-event file
    /// (Perfetto, chrome://tracing) of the cycles in ``trace_window=(first, end)`` (all by
    /// default): a track per queue, a slice per instruction, arrows from the producer of
    /// each stream value to its readers, and counters of stream registers and SRAM
    /// traffic. The timeline shows ``ns_per_cycle`` ns per cycle (1: it reads in cycles).
    #[pyo3(signature = (max_cycles = DEFAULT_MAX_CYCLES, *, trace = None, trace_window = None, ns_per_cycle = 1.0))]
    fn run(
        &self,
        py: Python<'_>,
        max_cycles: u64,
        trace: Option<std::path::PathBuf>,
        trace_window: Option<(u64, u64)>,
        ns_per_cycle: f64,
    ) -> PyResult<RunStatus> {
        let mut c = self.core()?;
        let until = c.cycle().saturating_add(max_cycles);
        let Some(path) = trace else {
            if trace_window.is_some() {
                return Err(input_error("trace_window needs trace=<file>"));
            }
            return run_sliced(py, &mut c, &self.progress, until, &mut NoTrace);
        };
        let (from, to) = trace_window.unwrap_or((0, u64::MAX));
        if from >= to {
            return Err(input_error(format!(
                "trace_window ({from}, {to}) is empty: it is (first cycle, end cycle)"
            )));
        }
        if !(ns_per_cycle > 0.0 && ns_per_cycle.is_finite()) {
            return Err(input_error(format!(
                "ns_per_cycle must be a positive number, not {ns_per_cycle}"
            )));
        }
        let mut rec = Recorder::new(from, to);
        let status = run_sliced(py, &mut c, &self.progress, until, &mut rec)?;
        let json = rec.to_json(c.config(), c.queues(), ns_per_cycle);
        crate::program::atomic_write(&path, json.as_bytes()).map_err(|e| {
            pyo3::exceptions::PyOSError::new_err(format!(
                "cannot write the trace to {}: {e}",
                path.display()
            ))
        })?;
        Ok(status)
    }

    /// Advance `n` cycles (or less if the program stops first).
    #[pyo3(signature = (n = 1))]
    fn step(&self, py: Python<'_>, n: u64) -> PyResult<RunStatus> {
        let mut c = self.core()?;
        let until = c.cycle().saturating_add(n);
        run_sliced(py, &mut c, &self.progress, until, &mut NoTrace)
    }

    /// Run until just before `cycle` executes (or the program stops first).
    fn run_until(&self, py: Python<'_>, cycle: u64) -> PyResult<RunStatus> {
        run_sliced(py, &mut *self.core()?, &self.progress, cycle, &mut NoTrace)
    }

    /// The next cycle to execute (superlane-0 time). While another thread runs the chip,
    /// the cycle its run had reached at its last check for Ctrl-C (for progress displays).
    #[getter]
    fn cycle(&self) -> u64 {
        match self.inner.try_lock() {
            Ok(c) => c.cycle(),
            Err(TryLockError::WouldBlock) => self.progress.load(Ordering::Relaxed),
            Err(TryLockError::Poisoned(p)) => p.into_inner().cycle(),
        }
    }

    /// Cycles the program took so far, including the last superlane's skew.
    #[getter]
    fn cycles(&self) -> PyResult<u64> {
        let c = self.core()?;
        Ok(c.cycles())
    }

    #[getter]
    fn halted(&self) -> PyResult<bool> {
        let c = self.core()?;
        Ok(c.halted())
    }

    /// The fault that stopped the chip, or None.
    #[getter]
    fn fault(&self) -> PyResult<Option<Fault>> {
        let c = self.core()?;
        Ok(c.fault().map(Fault::from))
    }

    /// Faults recorded under the "warn" policy.
    #[getter]
    fn warnings(&self) -> PyResult<Vec<Fault>> {
        let c = self.core()?;
        Ok(c.warnings().iter().map(Fault::from).collect())
    }

    /// Raise FaultError if a fault stopped the chip.
    fn raise_for_fault(&self, py: Python<'_>) -> PyResult<()> {
        let c = self.core()?;
        if let Some(f) = c.fault() {
            let err = FaultError::new_err(f.to_string());
            let _ = err.value(py).setattr("fault", Fault::from(f));
            return Err(err);
        }
        Ok(())
    }

    /// Set what a fault kind does: "error" (stop), "warn" (record, go on) or "ignore".
    fn set_fault_policy(&self, kind: &str, policy: &str) -> PyResult<()> {
        let mut c = self.core()?;
        let k = fault_kind(kind)?;
        let p = match policy {
            "error" => FaultPolicy::Error,
            "warn" => FaultPolicy::Warn,
            "ignore" => FaultPolicy::Ignore,
            _ => {
                return Err(input_error(format!(
                    "policy must be error, warn or ignore, not '{policy}'"
                )))
            }
        };
        if !k.recoverable() && p != FaultPolicy::Error {
            return Err(input_error(format!("{kind} faults always stop the chip")));
        }
        c.set_policy(k, p);
        Ok(())
    }

    /// The policy of each fault kind.
    fn fault_policies(&self) -> PyResult<Vec<(&'static str, &'static str)>> {
        let c = self.core()?;
        Ok(FaultKind::ALL
            .iter()
            .map(|k| {
                let p = match c.policy(*k) {
                    FaultPolicy::Error => "error",
                    FaultPolicy::Warn => "warn",
                    FaultPolicy::Ignore => "ignore",
                };
                (k.name(), p)
            })
            .collect())
    }

    /// Stop before instruction `index` of `queue` issues.
    fn add_breakpoint(&self, queue: &str, index: usize) -> PyResult<()> {
        let mut c = self.core()?;
        let q = queue_of(&c, queue)?;
        c.add_breakpoint(q, index);
        Ok(())
    }

    fn remove_breakpoint(&self, queue: &str, index: usize) -> PyResult<bool> {
        let mut c = self.core()?;
        let q = queue_of(&c, queue)?;
        Ok(c.remove_breakpoint(q, index))
    }

    /// Stop when a write to this SRAM word lands: the run returns WATCHPOINT with
    /// ``cycle`` = the landing cycle (the word already holds the new value); running on
    /// continues from that cycle.
    fn add_watchpoint(&self, hemi: &Bound<'_, PyAny>, slice: u16, addr: u32) -> PyResult<()> {
        let mut c = self.core()?;
        let h = hemi_arg(hemi)?;
        check_word(&c, h, slice, addr, 1)?;
        c.add_watchpoint(h, slice, addr);
        Ok(())
    }

    fn remove_watchpoint(&self, hemi: &Bound<'_, PyAny>, slice: u16, addr: u32) -> PyResult<bool> {
        let mut c = self.core()?;
        Ok(c.remove_watchpoint(hemi_arg(hemi)?, slice, addr))
    }

    /// The (hemisphere, slice, address) whose write stopped the last run, if any.
    #[getter]
    fn watch_hit(&self) -> PyResult<Option<(&'static str, u16, u32)>> {
        let c = self.core()?;
        Ok(c.watch_hit()
            .map(|(h, s, a)| (lpu_core::config::HEMISPHERES[h as usize], s, a)))
    }

    fn snapshot(&self) -> PyResult<Snapshot> {
        let mut c = self.core()?;
        Ok(Snapshot {
            inner: c.snapshot(),
            cycle: c.cycle(),
        })
    }

    fn restore(&self, snapshot: &Snapshot) -> PyResult<()> {
        let mut c = self.core()?;
        c.restore(&snapshot.inner)
            .map_err(|e| ConfigError::new_err(e.msg))
    }

    /// A read-only copy of `count` SRAM words, shape (count, lanes), dtype uint8.
    #[pyo3(signature = (hemi, slice, addr, count = 1))]
    fn read_sram<'py>(
        &self,
        py: Python<'py>,
        hemi: &Bound<'_, PyAny>,
        slice: u16,
        addr: u32,
        count: u32,
    ) -> PyResult<Bound<'py, PyAny>> {
        let c = self.core()?;
        let h = hemi_arg(hemi)?;
        check_word(&c, h, slice, addr, count)?;
        let lanes = c.config().lanes();
        let mut v = vec![0u8; count as usize * lanes];
        for (i, w) in v.chunks_mut(lanes).enumerate() {
            c.read_word(h, slice, addr + i as u32, w);
        }
        readonly(
            PyArray1::from_vec(py, v).into_any(),
            &[count as usize, lanes],
        )
    }

    /// Write SRAM words (host access, not timed). `data` is uint8 of shape (n, lanes) or (lanes,).
    fn write_sram(
        &self,
        hemi: &Bound<'_, PyAny>,
        slice: u16,
        addr: u32,
        data: PyReadonlyArray1<'_, u8>,
    ) -> PyResult<()> {
        let mut c = self.core()?;
        let h = hemi_arg(hemi)?;
        let lanes = c.config().lanes();
        let d = data.as_slice()?;
        if d.is_empty() || d.len() % lanes != 0 {
            return Err(input_error(format!(
                "data is {} bytes, not whole {lanes}-byte words",
                d.len()
            )));
        }
        let n = (d.len() / lanes) as u32;
        check_word(&c, h, slice, addr, n)?;
        c.write_words(h, slice, addr, d);
        Ok(())
    }

    /// The value a reader at `position` sees on a stream this cycle (uint8, lanes), or None.
    /// `stream` is text like "s5e" or "s5w".
    fn stream<'py>(
        &self,
        py: Python<'py>,
        stream: &str,
        position: u32,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let c = self.core()?;
        let s = parse_stream(stream)?;
        if position >= c.config().positions() {
            return Err(input_error(format!(
                "position {position} is off the chip (0..{})",
                c.config().positions()
            )));
        }
        match c.stream_value(s, position) {
            None => Ok(None),
            Some(v) => {
                let lanes = v.len();
                Ok(Some(readonly(
                    PyArray1::from_vec(py, v.to_vec()).into_any(),
                    &[lanes],
                )?))
            }
        }
    }

    /// Write a tensor's data into SRAM. `data` is the raw little-endian element bytes of
    /// a C-ordered array of the tensor's shape (for bfloat16: float32 values, rounded).
    fn write_tensor(
        &self,
        py: Python<'_>,
        tensor: &Tensor,
        data: PyReadonlyArray1<'_, u8>,
    ) -> PyResult<()> {
        let mut c = self.core()?;
        tensor_ok(c.config(), &tensor.inner)?;
        let t = &tensor.inner;
        let d = device_bytes(t, data.as_slice()?)?;
        let chip = &mut *c;
        py.detach(|| lpu_core::tensor::write_tensor(chip, t, &d));
        Ok(())
    }

    /// Read a tensor's raw element bytes from SRAM (for bfloat16: float32 values).
    fn read_tensor<'py>(
        &self,
        py: Python<'py>,
        tensor: &Tensor,
    ) -> PyResult<Bound<'py, PyArray1<u8>>> {
        let c = self.core()?;
        tensor_ok(c.config(), &tensor.inner)?;
        let t = &tensor.inner;
        let n = lpu_core::tensor::numel(t);
        let mut out = vec![0u8; n * t.dtype.bytes()];
        let chip = &*c;
        py.detach(|| lpu_core::tensor::read_tensor(chip, t, &mut out));
        if t.dtype == DType::Bf16 {
            out = out
                .chunks(2)
                .flat_map(|c| {
                    lpu_core::numerics::bf16_to_f32(u16::from_le_bytes([c[0], c[1]])).to_le_bytes()
                })
                .collect();
        }
        Ok(PyArray1::from_vec(py, out))
    }

    /// Counters since load: per-unit instructions, busy cycles and utilisation, SRAM and
    /// stream traffic, MACs, cycles and the predicted time at the configured clock.
    /// With `queues=False` the per-queue issue counts (most of the call's cost: a key
    /// per queue used) are left out.
    #[pyo3(signature = (*, queues = true))]
    fn stats<'py>(&self, py: Python<'py>, queues: bool) -> PyResult<Bound<'py, PyDict>> {
        let c = self.core()?;
        let s = c.stats();
        let cfg = c.config();
        let cycles = c.cycles();
        let d = PyDict::new(py);
        d.set_item("cycles", cycles)?;
        d.set_item("clock_hz", cfg.clock_hz)?;
        d.set_item("time_s", cycles as f64 / cfg.clock_hz as f64)?;
        let units = PyDict::new(py);
        for (i, u) in Unit::ALL.iter().enumerate() {
            let e = PyDict::new(py);
            let busy = s.busy(i);
            e.set_item("issued", s.issued[i])?;
            e.set_item("busy_cycles", busy)?;
            e.set_item(
                "utilization",
                if cycles > 0 {
                    busy as f64 / cycles as f64
                } else {
                    0.0
                },
            )?;
            units.set_item(u.name(), e)?;
        }
        d.set_item("units", units)?;
        if queues {
            let queues = PyDict::new(py);
            for (q, n) in c.queues().iter().zip(&s.per_queue) {
                if *n > 0 {
                    queues.set_item(&q.name, *n)?;
                }
            }
            d.set_item("queues", queues)?;
        }
        d.set_item("sram_reads", s.sram_reads)?;
        d.set_item("sram_writes", s.sram_writes)?;
        d.set_item("stream_writes", s.stream_writes)?;
        d.set_item("stream_reads", s.stream_reads)?;
        d.set_item("macs_int8", s.macs_int8)?;
        d.set_item("macs_fp16", s.macs_fp16)?;
        d.set_item("weights_installed", s.weights_installed)?;
        d.set_item("mxm_busy_cycles", s.mxm_busy.clone())?;
        // fp16 runs at a quarter of the int8 rate, so weigh its MACs by 4 against the peak.
        let peak = cfg.peak_int8_macs_per_cycle() as f64 * cycles as f64;
        let used = s.macs_int8 as f64 + 4.0 * s.macs_fp16 as f64;
        d.set_item(
            "mxm_utilization",
            if peak > 0.0 { used / peak } else { 0.0 },
        )?;
        Ok(d)
    }

    /// A utilisation table of the run so far: per-unit issues and busy cycles, MACs per
    /// cycle against the MXM peak, SRAM and stream traffic against theirs.
    fn report(&self) -> PyResult<String> {
        let c = self.core()?;
        let s = c.stats();
        let cfg = c.config();
        let cycles = c.cycles();
        let per = |x: f64| if cycles > 0 { x / cycles as f64 } else { 0.0 };
        let pct = |x: f64, peak: f64| if peak > 0.0 { 100.0 * x / peak } else { 0.0 };
        let lanes = cfg.lanes() as f64;
        let mut out = format!(
            "chip {}: {} cycles = {:.3} us at {} MHz\n\n{:<6} {:>12} {:>12} {:>8}\n",
            cfg.name,
            group(cycles),
            cycles as f64 / cfg.clock_hz as f64 * 1e6,
            cfg.clock_hz / 1_000_000,
            "unit",
            "issued",
            "busy cycles",
            "busy"
        );
        for (i, u) in Unit::ALL.iter().enumerate() {
            out += &format!(
                "{:<6} {:>12} {:>12} {:>7.2}%\n",
                u.name(),
                group(s.issued[i]),
                group(s.busy(i)),
                100.0 * per(s.busy(i) as f64)
            );
        }
        // fp16 runs at a quarter of the int8 rate: weigh its MACs by 4 against the peak.
        let peak = cfg.peak_int8_macs_per_cycle() as f64;
        let macs = per(s.macs_int8 as f64 + s.macs_fp16 as f64);
        let eff = per(s.macs_int8 as f64 + 4.0 * s.macs_fp16 as f64);
        out += &format!(
            "\nMXM    {:.0} MACs/cycle ({} int8, {} fp16 in all): {:.2}% of the peak of {} \
             int8 MACs/cycle (fp16 counts 4x)\n",
            macs,
            group(s.macs_int8),
            group(s.macs_fp16),
            pct(eff, peak),
            group(peak as u64)
        );
        // Peaks of the published design [SUM20 eq. 1, 2]: two banks per slice; 32 streams
        // each way past every position.
        let sram_peak = 2.0 * cfg.mem_slices as f64 * 2.0 * lanes;
        let sram = per((s.sram_reads + s.sram_writes) as f64) * lanes;
        out += &format!(
            "SRAM   {:.0} bytes/cycle ({} words read, {} written): {:.2}% of the peak of {} bytes/cycle\n",
            sram,
            group(s.sram_reads),
            group(s.sram_writes),
            pct(sram, sram_peak),
            group(sram_peak as u64)
        );
        let stream_peak = 2.0 * cfg.streams as f64 * lanes;
        let streams = per(s.stream_writes as f64) * lanes;
        out += &format!(
            "stream {:.0} bytes/cycle written ({} vectors); each position passes up to {} bytes/cycle\n",
            streams,
            group(s.stream_writes),
            group(stream_peak as u64)
        );
        Ok(out)
    }

    /// Busy fraction of each unit over time: ``bins`` equal spans of the run, as arrays
    /// keyed by unit name, plus ``"cycles"``: the first cycle of each bin.
    #[pyo3(signature = (bins = 100))]
    fn timeline<'py>(&self, py: Python<'py>, bins: usize) -> PyResult<Bound<'py, PyDict>> {
        let c = self.core()?;
        if bins == 0 {
            return Err(input_error("bins must be at least 1"));
        }
        let cycles = c.cycles().max(1);
        let width = cycles.div_ceil(bins as u64).max(1);
        let n = cycles.div_ceil(width) as usize;
        let s = c.stats();
        let d = PyDict::new(py);
        let starts: Vec<u64> = (0..n as u64).map(|i| i * width).collect();
        d.set_item("cycles", PyArray1::from_vec(py, starts))?;
        for (i, u) in Unit::ALL.iter().enumerate() {
            let h: Vec<f64> = s
                .busy_timeline(i, width, n)
                .iter()
                .enumerate()
                .map(|(b, c)| *c as f64 / (width.min(cycles - b as u64 * width)) as f64)
                .collect();
            d.set_item(u.name(), PyArray1::from_vec(py, h))?;
        }
        Ok(d)
    }

    /// Reset the counters of `stats()`.
    fn clear_stats(&self) -> PyResult<()> {
        let mut c = self.core()?;
        c.clear_stats();
        Ok(())
    }

    /// (next instruction index, instruction count, parked in sync) of a queue.
    fn queue_state(&self, queue: &str) -> PyResult<(usize, usize, bool)> {
        let c = self.core()?;
        let q = queue_of(&c, queue)?;
        Ok(c.queue_state(q))
    }

    fn __repr__(&self) -> PyResult<String> {
        let c = self.core()?;
        Ok(format!(
            "Chip('{}', cycle={}, {})",
            c.config().name,
            c.cycle(),
            if c.fault().is_some() {
                "faulted"
            } else if c.halted() {
                "halted"
            } else {
                "running"
            }
        ))
    }
}

/// The index of the queue called `name`.
fn queue_of(c: &Core, name: &str) -> PyResult<usize> {
    c.queue_index(name)
        .ok_or_else(|| input_error(format!("no queue named '{name}'")))
}

/// Run `chip` up to cycle `until` without the GIL, checking for Ctrl-C every
/// SLICE_ISSUES issues (taking the GIL for that moment). It is one run throughout (see
/// `Chip::run_sliced`); Ctrl-C stops it between cycles, consistent and resumable.
fn run_sliced<T: Tracer + Send>(
    py: Python<'_>,
    chip: &mut Core,
    progress: &AtomicU64,
    until: u64,
    tracer: &mut T,
) -> PyResult<RunStatus> {
    progress.store(chip.cycle(), Ordering::Relaxed);
    let limits = Limits {
        until,
        issue_budget: SLICE_ISSUES,
    };
    let mut interrupt = None;
    let (c, tr, it) = (&mut *chip, &mut *tracer, &mut interrupt);
    let s = py.detach(move || {
        c.run_sliced(limits, tr, |cycle| {
            progress.store(cycle, Ordering::Relaxed);
            *it = Python::attach(|py| py.check_signals()).err();
            it.is_some()
        })
    });
    progress.store(chip.cycle(), Ordering::Relaxed);
    match interrupt {
        Some(e) => Err(e),
        None => Ok(s.into()),
    }
}

fn parse_stream(s: &str) -> PyResult<StreamRef> {
    let err = || input_error(format!("'{s}' is not a stream (write e.g. s5e or s5w)"));
    let body = s.strip_prefix('s').ok_or_else(err)?;
    let (num, dir) = body.split_at(body.len().saturating_sub(1));
    let index: u32 = num.parse().map_err(|_| err())?;
    if index >= lpu_core::isa::STREAMS {
        return Err(err());
    }
    match dir {
        "e" => Ok(StreamRef { index, west: false }),
        "w" => Ok(StreamRef { index, west: true }),
        _ => Err(err()),
    }
}

/// Reshape a fresh array and mark it read-only.
fn readonly<'py>(a: Bound<'py, PyAny>, shape: &[usize]) -> PyResult<Bound<'py, PyAny>> {
    let a = a.call_method1("reshape", (shape.to_vec(),))?;
    let kw = PyDict::new(a.py());
    kw.set_item("write", false)?;
    a.call_method("setflags", (), Some(&kw))?;
    Ok(a)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<RunStatus>()?;
    m.add_class::<Fault>()?;
    m.add_class::<Snapshot>()?;
    m.add_class::<Chip>()?;
    m.add("DEFAULT_MAX_CYCLES", DEFAULT_MAX_CYCLES)?;
    Ok(())
}

/// 1234567 -> "1,234,567".
fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
