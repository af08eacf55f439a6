//! `lpu._core`: the Python face of `lpu-core`. Thin by design: argument conversion,
//! exceptions and the GIL; all behaviour lives in the core crate.

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyType};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its position in `mi_option_e`, the same in
/// mimalloc 2 and 3; libmimalloc-sys names no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// How long freed memory stays with the allocator before it goes back to the OS (ms).
/// Runs allocate and free megabytes (batched results, copied SRAM pages); with
/// mimalloc's default of 10 ms the next run, or the next LLM step, gets that memory
/// back as fresh pages that the kernel zeroes first (about a tenth of a decode step).
const PURGE_DELAY_MS: std::ffi::c_long = 1000;

/// The allocator's purge delay in milliseconds (tests check it was set).
#[pyfunction]
fn allocator_purge_delay() -> i64 {
    // SAFETY: mi_option_get reads one entry of mimalloc's option table (option numbers
    // below _mi_option_last are valid; 15 is). mimalloc documents it as not thread
    // safe because a first read may initialise the entry from the environment; this
    // entry was set when the module was initialised, so every later access only reads.
    unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) as i64 }
}

mod chip;
mod config;
mod isa;
mod program;

create_exception!(
    lpu,
    LpuError,
    PyException,
    "Base class of every error lpu raises."
);
create_exception!(
    lpu,
    ConfigError,
    LpuError,
    "An invalid chip configuration or a program/snapshot for another configuration."
);
create_exception!(
    lpu,
    ProgramFormatError,
    LpuError,
    "A malformed, truncated, damaged or incompatible program file (see .offset and .field)."
);
create_exception!(
    lpu,
    CapacityError,
    LpuError,
    "Something does not fit on the chip (SRAM, instruction memory)."
);
create_exception!(
    lpu,
    BusyError,
    LpuError,
    "The Chip is in use by another thread (each thread needs its own Chip)."
);
create_exception!(
    lpu,
    FaultError,
    LpuError,
    "A runtime fault stopped the chip (see .fault for cycle, queue and instruction)."
);

/// `InputError(LpuError, ValueError)`: a value given to lpu is not valid. It has two
/// bases so `except ValueError` works too; `create_exception!` makes single-base
/// classes only, so the class is made once at import with `type()`.
static INPUT_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();

fn input_error_type(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    INPUT_ERROR
        .get_or_try_init(py, || {
            let ns = PyDict::new(py);
            ns.set_item("__module__", "lpu")?;
            ns.set_item(
                "__doc__",
                "A value given to lpu is not valid: a wrong name, dtype, shape, \
                 queue, stream, address or option.",
            )?;
            let bases = (py.get_type::<LpuError>(), py.get_type::<PyValueError>());
            let t = py
                .get_type::<PyType>()
                .call1(("InputError", bases, ns))?
                .cast_into::<PyType>()?;
            Ok(t.unbind())
        })
        .map(|t| t.bind(py))
}

/// An `InputError` with this message.
pub(crate) fn input_error(msg: impl Into<String>) -> PyErr {
    let msg = msg.into();
    Python::attach(|py| match input_error_type(py) {
        Ok(t) => PyErr::from_type(t.clone(), msg),
        Err(e) => e,
    })
}

/// Turn a program-file error into ProgramFormatError with `offset` and `field` attributes.
pub(crate) fn format_error(py: Python<'_>, e: lpu_core::error::FormatError) -> PyErr {
    let err = ProgramFormatError::new_err(e.to_string());
    let v = err.value(py);
    let _ = v.setattr("offset", e.offset);
    let _ = v.setattr("field", e.field.clone());
    err
}

pub(crate) fn load_error(py: Python<'_>, e: lpu_core::error::LoadError) -> PyErr {
    use lpu_core::error::LoadError;
    match e {
        LoadError::Format(f) => format_error(py, f),
        LoadError::Capacity(c) => CapacityError::new_err(c.msg),
        LoadError::Config(c) => ConfigError::new_err(c.msg),
    }
}

/// Build profile of the native module ("release" or "debug"); benchmarks refuse debug.
#[pyfunction]
fn build_profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

/// Whether the native module was built with the profile-guided optimisation profile
/// (tools/pgo): the benchmarks report it beside their numbers.
#[pyfunction]
fn build_pgo() -> bool {
    env!("LPU_BUILD_PGO") == "1"
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    // SAFETY: mi_option_set stores into mimalloc's option table, which is not
    // synchronised. This mimalloc is private to this library (statically linked, not
    // the process allocator), and module initialisation runs under the import lock
    // before any other code of the library can run in any thread, and before the
    // library starts threads of its own: nothing else reads or writes the table now.
    // The option number is valid (see MI_OPTION_PURGE_DELAY).
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    m.add_function(wrap_pyfunction!(allocator_purge_delay, m)?)?;
    m.add("LpuError", py.get_type::<LpuError>())?;
    m.add("ConfigError", py.get_type::<ConfigError>())?;
    m.add("ProgramFormatError", py.get_type::<ProgramFormatError>())?;
    m.add("CapacityError", py.get_type::<CapacityError>())?;
    m.add("FaultError", py.get_type::<FaultError>())?;
    m.add("BusyError", py.get_type::<BusyError>())?;
    m.add("InputError", input_error_type(py)?)?;
    m.add_function(wrap_pyfunction!(build_profile, m)?)?;
    m.add_function(wrap_pyfunction!(build_pgo, m)?)?;
    config::register(m)?;
    isa::register(m)?;
    program::register(m)?;
    chip::register(m)?;
    Ok(())
}
