//! `ChipConfig` for Python.

use crate::ConfigError;
use lpu_core::config::{ChipConfig as Core, LatKey, QueueKind, SliceKind, HEMISPHERES};
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// Geometry and timing of a chip: superlanes, lanes, MEM slices, addresses, streams,
/// MXM planes, VXM ALUs, SXM units, clock and every functional latency.
///
/// ``ChipConfig()`` is the published chip (``tsp_v1``); ``ChipConfig("tsp_small")``
/// a small one for tests; keyword arguments override single parameters, e.g.
/// ``ChipConfig("tsp_v1", mem_read=5)``.
#[pyclass(module = "lpu._core", frozen, eq, from_py_object)]
#[derive(Clone, PartialEq)]
pub struct ChipConfig {
    pub inner: Core,
}

#[pymethods]
impl ChipConfig {
    #[new]
    #[pyo3(signature = (preset = "tsp_v1", name = None, **overrides))]
    fn new(
        preset: &str,
        name: Option<String>,
        overrides: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let mut c = Core::preset(preset).ok_or_else(|| {
            ConfigError::new_err(format!(
                "unknown preset '{preset}' (choose from {})",
                Core::PRESETS.join(", ")
            ))
        })?;
        if let Some(o) = overrides {
            for (k, v) in o.iter() {
                let k: String = k.extract()?;
                let v: u64 = v.extract().map_err(|_| {
                    ConfigError::new_err(format!("{k} must be a non-negative integer"))
                })?;
                c.set_param(&k, v)
                    .map_err(|e| ConfigError::new_err(e.msg))?;
            }
            if name.is_none() && !o.is_empty() {
                c.name = format!("{preset}-custom");
            }
        }
        if let Some(n) = name {
            c.name = n;
        }
        c.validate().map_err(|e| ConfigError::new_err(e.msg))?;
        Ok(ChipConfig { inner: c })
    }

    /// Names of the built-in presets.
    #[staticmethod]
    fn presets() -> Vec<&'static str> {
        Core::PRESETS.to_vec()
    }

    #[getter]
    fn name(&self) -> &str {
        &self.inner.name
    }
    #[getter]
    fn superlanes(&self) -> u32 {
        self.inner.superlanes
    }
    #[getter]
    fn lanes_per_superlane(&self) -> u32 {
        self.inner.lanes_per_superlane
    }
    /// Lanes in a vector (= bytes per MEM word = MXM plane size).
    #[getter]
    fn lanes(&self) -> usize {
        self.inner.lanes()
    }
    #[getter]
    fn mem_slices(&self) -> u32 {
        self.inner.mem_slices
    }
    #[getter]
    fn addresses(&self) -> u32 {
        self.inner.addresses
    }
    #[getter]
    fn streams(&self) -> u32 {
        self.inner.streams
    }
    #[getter]
    fn mxm_planes(&self) -> u32 {
        self.inner.mxm_planes
    }
    #[getter]
    fn mxm_acc_slots(&self) -> u32 {
        self.inner.mxm_acc_slots
    }
    #[getter]
    fn vxm_alus(&self) -> u32 {
        self.inner.vxm_alus
    }
    #[getter]
    fn clock_hz(&self) -> u64 {
        self.inner.clock_hz
    }
    /// Bytes of on-chip SRAM.
    #[getter]
    fn sram_bytes(&self) -> u64 {
        self.inner.sram_bytes()
    }
    /// Instructions the chip's instruction memory holds, all queues together.
    #[getter]
    fn instruction_capacity(&self) -> u64 {
        self.inner.instruction_capacity()
    }
    /// Number of stream-register positions from the west edge to the east edge.
    #[getter]
    fn positions(&self) -> u32 {
        self.inner.positions()
    }
    /// Peak int8 multiply-accumulates per cycle of all MXM planes.
    #[getter]
    fn peak_macs_per_cycle(&self) -> u64 {
        self.inner.peak_int8_macs_per_cycle()
    }
    /// Every functional latency (d_func) in cycles, by name.
    #[getter]
    fn latencies(&self) -> Vec<(&'static str, u32)> {
        LatKey::ALL
            .iter()
            .map(|k| (k.name(), self.inner.latencies.get(*k)))
            .collect()
    }

    /// Every parameter (geometry and latencies) as (name, value) pairs.
    fn params(&self) -> Vec<(&'static str, u64)> {
        self.inner.params()
    }

    /// Pickled as its name and every parameter, on top of any preset.
    fn __getnewargs_ex__<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<((&'static str,), Bound<'py, PyDict>)> {
        let kw = PyDict::new(py);
        kw.set_item("name", &self.inner.name)?;
        for (k, v) in self.inner.params() {
            kw.set_item(k, v)?;
        }
        Ok(((Core::PRESETS[0],), kw))
    }

    /// Position of a MEM slice (hemisphere 0 = West, 1 = East; slice 0 is next to the VXM).
    fn mem_position(&self, hemi: u8, slice: u32) -> PyResult<u32> {
        if hemi > 1 || slice >= self.inner.mem_slices {
            return Err(ConfigError::new_err(format!(
                "no MEM slice {}{slice}",
                HEMISPHERES.get(hemi as usize).unwrap_or(&"?")
            )));
        }
        Ok(self.inner.mem_position(hemi, slice))
    }
    fn vxm_position(&self) -> u32 {
        self.inner.vxm_position()
    }
    fn sxm_position(&self, hemi: u8) -> u32 {
        self.inner.sxm_position(hemi.min(1))
    }
    fn mxm_position(&self, plane: u32) -> PyResult<u32> {
        if plane >= self.inner.mxm_planes {
            return Err(ConfigError::new_err(format!("no MXM plane {plane}")));
        }
        Ok(self.inner.mxm_position(plane))
    }

    /// What sits at each stream-register position, west to east (e.g. "MEM W3").
    fn floorplan(&self) -> Vec<String> {
        self.inner
            .floorplan()
            .into_iter()
            .map(|s| match s {
                SliceKind::C2c { hemi } => format!("C2C {}", HEMISPHERES[hemi as usize]),
                SliceKind::Mxm { plane } => format!("MXM {plane}"),
                SliceKind::Sxm { hemi } => format!("SXM {}", HEMISPHERES[hemi as usize]),
                SliceKind::Mem { hemi, slice } => {
                    format!("MEM {}{}", HEMISPHERES[hemi as usize], slice)
                }
                SliceKind::Vxm => "VXM".into(),
            })
            .collect()
    }

    /// Every instruction queue as (name, unit, position).
    fn queues(&self) -> Vec<(String, &'static str, u32)> {
        self.inner
            .queues()
            .into_iter()
            .map(|q| (q.name, unit_name(q.kind), q.position))
            .collect()
    }

    fn __repr__(&self) -> String {
        format!(
            "ChipConfig('{}': {} lanes, {}x{} MEM slices x {} words, {} MXM planes, {} MHz)",
            self.inner.name,
            self.inner.lanes(),
            2,
            self.inner.mem_slices,
            self.inner.addresses,
            self.inner.mxm_planes,
            self.inner.clock_hz / 1_000_000
        )
    }
}

pub fn unit_name(k: QueueKind) -> &'static str {
    k.unit().name()
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<ChipConfig>()
}
