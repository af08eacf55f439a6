//! `Program` and `Tensor` for Python.

use crate::config::ChipConfig;
use crate::{format_error, input_error, CapacityError, ProgramFormatError};
use lpu_core::dtype::DType;
use lpu_core::isa::Instr;
use lpu_core::program::{
    EntryPoint, Layout, Program as Core, QueueCode, SramInit, TensorDesc, TensorKind,
};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::collections::BTreeMap;
use std::sync::Arc;

fn hemi_index(h: &Bound<'_, PyAny>) -> PyResult<u8> {
    if let Ok(s) = h.extract::<String>() {
        return match s.as_str() {
            "W" | "w" => Ok(0),
            "E" | "e" => Ok(1),
            _ => Err(input_error(format!(
                "hemisphere must be 'W' or 'E', not '{s}'"
            ))),
        };
    }
    match h.extract::<u8>() {
        Ok(v) if v <= 1 => Ok(v),
        _ => Err(input_error(
            "hemisphere must be 'W', 'E', 0 (West) or 1 (East)",
        )),
    }
}

pub(crate) fn hemi_arg(h: &Bound<'_, PyAny>) -> PyResult<u8> {
    hemi_index(h)
}

/// A named tensor of a program and where it lives on chip.
///
/// Vector ``v`` (rows of the last dimension, padded to whole vectors) and byte plane
/// ``b`` sit in slice ``slices[b * split + v % split]`` of hemisphere ``hemi`` at address
/// ``addr + v // split``.
#[pyclass(module = "lpu._core", frozen, eq, from_py_object)]
#[derive(Clone, PartialEq)]
pub struct Tensor {
    pub inner: TensorDesc,
}

#[pymethods]
impl Tensor {
    #[new]
    #[pyo3(signature = (name, kind, dtype, shape, hemi, addr, slices, split = 1))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        name: String,
        kind: &str,
        dtype: &str,
        shape: Vec<u64>,
        hemi: &Bound<'_, PyAny>,
        addr: u32,
        slices: Vec<u16>,
        split: u16,
    ) -> PyResult<Self> {
        let kind = TensorKind::from_name(kind).ok_or_else(|| {
            input_error(format!(
                "tensor kind must be input, output, constant or scratch, not '{kind}'"
            ))
        })?;
        let dtype = DType::from_name(dtype)
            .ok_or_else(|| input_error(format!("unknown dtype '{dtype}'")))?;
        Ok(Tensor {
            inner: TensorDesc {
                name,
                kind,
                dtype,
                shape,
                layout: Layout {
                    hemi: hemi_index(hemi)?,
                    addr,
                    split,
                    slices,
                },
            },
        })
    }
    /// The constructor's arguments, for pickling.
    #[allow(clippy::type_complexity)]
    fn __getnewargs__(
        &self,
    ) -> (
        &str,
        &'static str,
        &'static str,
        Vec<u64>,
        &'static str,
        u32,
        Vec<u16>,
        u16,
    ) {
        (
            &self.inner.name,
            self.kind(),
            self.dtype(),
            self.shape(),
            self.hemi(),
            self.addr(),
            self.slices(),
            self.split(),
        )
    }
    #[getter]
    fn name(&self) -> &str {
        &self.inner.name
    }
    #[getter]
    fn kind(&self) -> &'static str {
        self.inner.kind.name()
    }
    /// numpy name of the element type ("int8", "float16", ..., "bfloat16").
    #[getter]
    fn dtype(&self) -> &'static str {
        self.inner.dtype.numpy_name()
    }
    #[getter]
    fn shape(&self) -> Vec<u64> {
        self.inner.shape.clone()
    }
    /// "W" or "E".
    #[getter]
    fn hemi(&self) -> &'static str {
        lpu_core::config::HEMISPHERES[self.inner.layout.hemi as usize]
    }
    #[getter]
    fn addr(&self) -> u32 {
        self.inner.layout.addr
    }
    #[getter]
    fn split(&self) -> u16 {
        self.inner.layout.split
    }
    #[getter]
    fn slices(&self) -> Vec<u16> {
        self.inner.layout.slices.clone()
    }
    /// Vectors the tensor occupies on a chip with `lanes` lanes.
    fn vectors(&self, lanes: usize) -> u64 {
        self.inner.vectors(lanes)
    }
    /// Words per slice it occupies (vectors / split, rounded up).
    fn words(&self, lanes: usize) -> u64 {
        self.inner
            .vectors(lanes)
            .div_ceil(self.inner.layout.split as u64)
    }
    /// (slice, address) of byte plane `plane` of vector `vector`.
    fn location(&self, vector: u64, plane: usize) -> PyResult<(u16, u32)> {
        if plane >= self.inner.dtype.bytes() {
            return Err(input_error(format!(
                "{} has {} byte planes",
                self.inner.dtype.name(),
                self.inner.dtype.bytes()
            )));
        }
        Ok(self.inner.location(vector, plane))
    }
    fn __repr__(&self) -> String {
        let l = &self.inner.layout;
        format!(
            "Tensor('{}', {}, {}, shape={:?}, hemi='{}', addr={}, slices={:?}, split={})",
            self.inner.name,
            self.inner.kind.name(),
            self.inner.dtype.numpy_name(),
            self.inner.shape,
            lpu_core::config::HEMISPHERES[l.hemi as usize],
            l.addr,
            l.slices,
            l.split
        )
    }
}

/// A complete program: instruction queues, SRAM initialisers, named tensors and entry
/// points, for one chip configuration. Immutable; build one with the assembler or
/// the builder, or read one from a file.
#[pyclass(module = "lpu._core", frozen)]
#[derive(Clone)]
pub struct Program {
    pub inner: Arc<Core>,
}

#[pymethods]
impl Program {
    /// Assemble a program from its parts. ``queues`` maps queue names to encoded
    /// instruction words; ``inits`` lists (hemisphere, slice, address, bytes) words;
    /// ``entries`` maps entry-point names to {queue: start index}.
    #[new]
    #[pyo3(signature = (config, queues, inits = Vec::new(), tensors = Vec::new(), entries = BTreeMap::new(), meta = BTreeMap::new()))]
    fn new(
        py: Python<'_>,
        config: &ChipConfig,
        queues: BTreeMap<String, Vec<u64>>,
        inits: Vec<(Bound<'_, PyAny>, u16, u32, Vec<u8>)>,
        tensors: Vec<Tensor>,
        entries: BTreeMap<String, BTreeMap<String, u32>>,
        meta: BTreeMap<String, String>,
    ) -> PyResult<Self> {
        let mut p = Core::new(config.inner.clone());
        // Queues in the chip's canonical order, so equal programs encode identically.
        let order: Vec<String> = config.inner.queues().into_iter().map(|q| q.name).collect();
        for name in queues.keys() {
            if !order.contains(name) {
                return Err(invalid(
                    py,
                    "queues",
                    format!("no queue named '{name}' on {}", config.inner.name),
                ));
            }
        }
        for name in order {
            let Some(words) = queues.get(&name) else {
                continue;
            };
            if words.is_empty() {
                continue;
            }
            let mut code = Vec::with_capacity(words.len());
            for (i, w) in words.iter().enumerate() {
                let instr = Instr::decode(*w).map_err(|e| {
                    invalid(py, "queues", format!("queue {name} instruction {i}: {e}"))
                })?;
                code.push(instr);
            }
            p.queues.push(QueueCode { queue: name, code });
        }
        for (h, slice, addr, data) in inits {
            p.inits.push(SramInit {
                hemi: hemi_index(&h)?,
                slice,
                addr,
                data,
            });
        }
        // One canonical form (sorted, adjacent words merged) so that equal contents
        // give identical files whichever way they were written.
        let lanes = config.inner.lanes();
        p.inits = lpu_core::tensor::canonical_inits(std::mem::take(&mut p.inits), lanes);
        p.tensors = tensors.into_iter().map(|t| t.inner).collect();
        for (name, starts) in entries {
            p.entries.push(EntryPoint {
                name,
                starts: starts.into_iter().collect(),
            });
        }
        p.meta = meta.into_iter().collect();
        if let Some(problem) = p.check().into_iter().next() {
            return Err(invalid(py, "program", problem));
        }
        Ok(Program { inner: Arc::new(p) })
    }

    /// Read a program from the bytes of a program file.
    #[staticmethod]
    fn from_bytes(py: Python<'_>, data: &[u8]) -> PyResult<Self> {
        let p = py
            .detach(|| Core::from_bytes(data))
            .map_err(|e| format_error(py, e))?;
        Ok(Program { inner: Arc::new(p) })
    }

    /// The program file's bytes.
    fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let b = py.detach(|| self.inner.to_bytes());
        PyBytes::new(py, &b)
    }

    /// Pickled as its program file.
    fn __reduce__<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<(Bound<'py, PyAny>, (Bound<'py, PyBytes>,))> {
        let from_bytes = py.get_type::<Program>().getattr("from_bytes")?;
        Ok((from_bytes, (self.to_bytes(py),)))
    }

    /// Write the program file atomically (a failed write leaves any old file intact).
    fn save(&self, py: Python<'_>, path: std::path::PathBuf) -> PyResult<()> {
        let bytes = self.inner.to_bytes();
        py.detach(|| atomic_write(&path, &bytes))
            .map_err(|e| pyo3::exceptions::PyOSError::new_err(format!("{}: {e}", path.display())))
    }

    /// Read a program file.
    #[staticmethod]
    fn load(py: Python<'_>, path: std::path::PathBuf) -> PyResult<Self> {
        let data = std::fs::read(&path).map_err(|e| {
            pyo3::exceptions::PyOSError::new_err(format!("{}: {e}", path.display()))
        })?;
        Self::from_bytes(py, &data)
    }

    /// Assembly text that re-assembles to the identical binary.
    fn disassemble(&self) -> String {
        self.inner.disassemble()
    }

    #[getter]
    fn config(&self) -> ChipConfig {
        ChipConfig {
            inner: self.inner.config.clone(),
        }
    }

    /// Names of the queues that have instructions.
    #[getter]
    fn queue_names(&self) -> Vec<String> {
        self.inner.queues.iter().map(|q| q.queue.clone()).collect()
    }

    /// Encoded instruction words of a queue (empty if it has none).
    fn code(&self, queue: &str) -> Vec<u64> {
        self.inner
            .queues
            .iter()
            .find(|q| q.queue == queue)
            .map(|q| q.code.iter().map(|i| i.encode()).collect())
            .unwrap_or_default()
    }

    /// Assembly text of each instruction of a queue.
    fn instructions(&self, queue: &str) -> Vec<String> {
        self.inner
            .queues
            .iter()
            .find(|q| q.queue == queue)
            .map(|q| q.code.iter().map(|i| i.disassemble()).collect())
            .unwrap_or_default()
    }

    #[getter]
    fn instruction_count(&self) -> usize {
        self.inner.instruction_count()
    }

    #[getter]
    fn tensors(&self) -> Vec<Tensor> {
        self.inner
            .tensors
            .iter()
            .map(|t| Tensor { inner: t.clone() })
            .collect()
    }

    fn tensor(&self, name: &str) -> PyResult<Tensor> {
        self.inner
            .tensor(name)
            .map(|t| Tensor { inner: t.clone() })
            .ok_or_else(|| {
                let names: Vec<&str> = self.inner.tensors.iter().map(|t| t.name.as_str()).collect();
                input_error(format!(
                    "no tensor named '{name}'; the program has {names:?}"
                ))
            })
    }

    /// Entry points: name -> {queue: start index}.
    #[getter]
    fn entries(&self) -> BTreeMap<String, BTreeMap<String, u32>> {
        self.inner
            .entries
            .iter()
            .map(|e| (e.name.clone(), e.starts.iter().cloned().collect()))
            .collect()
    }

    #[getter]
    fn meta(&self) -> BTreeMap<String, String> {
        self.inner.meta.iter().cloned().collect()
    }

    /// SRAM initialisers as (hemisphere, slice, address, bytes).
    #[getter]
    fn inits<'py>(&self, py: Python<'py>) -> Vec<InitTuple<'py>> {
        self.inner
            .inits
            .iter()
            .map(|i| {
                (
                    lpu_core::config::HEMISPHERES[i.hemi as usize],
                    i.slice,
                    i.addr,
                    PyBytes::new(py, &i.data),
                )
            })
            .collect()
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other
            .cast::<Program>()
            .map(|o| *o.get().inner == *self.inner)
            .unwrap_or(false)
    }

    fn __repr__(&self) -> String {
        format!(
            "Program(config='{}', queues={}, instructions={}, tensors={})",
            self.inner.config.name,
            self.inner.queues.len(),
            self.inner.instruction_count(),
            self.inner.tensors.len()
        )
    }
}

fn invalid(py: Python<'_>, field: &str, msg: String) -> PyErr {
    let err = ProgramFormatError::new_err(format!("invalid program: {msg}"));
    let v = err.value(py);
    let _ = v.setattr("offset", py.None());
    let _ = v.setattr("field", field);
    err
}

/// Write a file so that readers see the old contents or the new, never a part.
pub fn atomic_write(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    // Unique per process and per call, so concurrent saves never share a temporary.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir
        .unwrap_or(std::path::Path::new("."))
        .join(format!(".{name}.{}-{n}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// One SRAM initialiser as Python sees it: (hemisphere, slice, address, bytes).
type InitTuple<'py> = (&'static str, u16, u32, Bound<'py, PyBytes>);

/// Static problems of one queue's code on a chip: (instruction index, field, message).
#[pyfunction]
fn check_code(
    config: &ChipConfig,
    queue: &str,
    words: Vec<u64>,
) -> PyResult<Vec<(usize, String, String)>> {
    let Some(q) = config.inner.queues().into_iter().find(|q| q.name == queue) else {
        return Err(input_error(format!(
            "no queue named '{queue}' on {}",
            config.inner.name
        )));
    };
    let mut code = Vec::with_capacity(words.len());
    let mut errs = Vec::new();
    for (i, w) in words.iter().enumerate() {
        match Instr::decode(*w) {
            Ok(instr) => code.push(instr),
            Err(e) => {
                errs.push((i, e.field, e.msg));
                code.push(Instr::new(lpu_core::isa::Op::Nop, &[1]).expect("valid nop"));
            }
        }
    }
    errs.extend(
        lpu_core::program::check_queue(&config.inner, &q, &code)
            .into_iter()
            .map(|e| (e.index, e.error.field, e.error.msg)),
    );
    errs.sort();
    Ok(errs)
}

/// Host bytes of a tensor in its on-chip element format: checked for size, and for
/// bfloat16 converted from float32 (rounded to nearest even).
pub(crate) fn device_bytes<'a>(
    t: &TensorDesc,
    d: &'a [u8],
) -> PyResult<std::borrow::Cow<'a, [u8]>> {
    let n = lpu_core::tensor::numel(t);
    if t.dtype == DType::Bf16 {
        if d.len() != 4 * n {
            return Err(input_error(format!(
                "bfloat16 tensor '{}' needs {n} float32 values ({} bytes), got {} bytes",
                t.name,
                4 * n,
                d.len()
            )));
        }
        let bits = d
            .chunks(4)
            .flat_map(|c| {
                let x = f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64;
                lpu_core::numerics::f64_to_bf16(x, false).to_le_bytes()
            })
            .collect();
        return Ok(std::borrow::Cow::Owned(bits));
    }
    let need = n * t.dtype.bytes();
    if d.len() != need {
        return Err(input_error(format!(
            "tensor '{}' needs {need} bytes, got {}",
            t.name,
            d.len()
        )));
    }
    Ok(std::borrow::Cow::Borrowed(d))
}

/// InputError for a tensor placed where it cannot be, CapacityError for one too large.
pub(crate) fn tensor_ok(cfg: &lpu_core::config::ChipConfig, t: &TensorDesc) -> PyResult<()> {
    lpu_core::program::check_placement(cfg, t)
        .map_err(|m| input_error(format!("tensor '{}': {m}", t.name)))?;
    lpu_core::program::check_fits(cfg, t)
        .map_err(|m| CapacityError::new_err(format!("tensor '{}': {m}", t.name)))
}

/// Raise InputError if a tensor is placed where it cannot be, CapacityError if it does
/// not fit the chip.
#[pyfunction]
fn check_tensor(config: &ChipConfig, tensor: &Tensor) -> PyResult<()> {
    tensor_ok(&config.inner, &tensor.inner)
}

/// SRAM initialisers (hemisphere, slice, address, bytes) holding a tensor's data;
/// `data` is the raw little-endian element bytes of a C-ordered array of its shape.
#[pyfunction]
fn pack_tensor<'py>(
    py: Python<'py>,
    config: &ChipConfig,
    tensor: &Tensor,
    data: numpy::PyReadonlyArray1<'_, u8>,
) -> PyResult<Vec<InitTuple<'py>>> {
    tensor_ok(&config.inner, &tensor.inner)?;
    let t = &tensor.inner;
    let d = device_bytes(t, data.as_slice()?)?;
    let inits = lpu_core::tensor::pack(t, config.inner.lanes(), &d);
    Ok(inits
        .into_iter()
        .map(|i| {
            (
                lpu_core::config::HEMISPHERES[i.hemi as usize],
                i.slice,
                i.addr,
                PyBytes::new(py, &i.data),
            )
        })
        .collect())
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Tensor>()?;
    m.add_class::<Program>()?;
    m.add_function(wrap_pyfunction!(check_code, m)?)?;
    m.add_function(wrap_pyfunction!(check_tensor, m)?)?;
    m.add_function(wrap_pyfunction!(pack_tensor, m)?)?;
    Ok(())
}
