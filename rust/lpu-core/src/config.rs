//! Chip geometry and timing: one value object, `ChipConfig`, that everything else reads.
//!
//! The floorplan is a 1-D chain of stream-register positions from west to east
//! (design idea 3): `C2C W, MXM 0, MXM 1, SXM W, MEM W(n-1) .. MEM W0, VXM,
//! MEM E0 .. MEM E(n-1), SXM E, MXM 2, MXM 3, C2C E`. Every functional slice sits
//! at one position; a stream value moves one position per cycle.

use crate::error::ConfigError;
use crate::isa::Unit;

/// Defines the functional latencies (d_func) once: the `LatKey` enum, names and defaults.
macro_rules! latencies {
    ($( $key:ident = $name:literal, $default:literal; )*) => {
        /// One functional latency (d_func): cycles from an instruction's issue to its result
        /// appearing at its own slice. Values no public source gives are assumptions listed
        /// with their reasoning in `docs/timing.md`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum LatKey { $( $key, )* }

        impl LatKey {
            pub const ALL: &'static [LatKey] = &[ $( LatKey::$key, )* ];
            pub fn name(self) -> &'static str {
                match self { $( LatKey::$key => $name, )* }
            }
            pub fn from_name(name: &str) -> Option<LatKey> {
                match name { $( $name => Some(LatKey::$key), )* _ => None }
            }
        }

        /// Every functional latency of a chip, indexed by [`LatKey`].
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub struct Latencies(pub [u32; LatKey::ALL.len()]);

        impl Default for Latencies {
            fn default() -> Self {
                Latencies([ $( $default, )* ])
            }
        }
    };
}

latencies! {
    // key, name, default: cycles from issue to result at the issuing slice.
    MemRead = "mem_read", 3;
    MemWrite = "mem_write", 1;
    MemGather = "mem_gather", 4;
    MemScatter = "mem_scatter", 2;
    VxmBasic = "vxm_basic", 2;
    VxmMul = "vxm_mul", 3;
    VxmSpecial = "vxm_special", 8;
    VxmCast = "vxm_cast", 3;
    MxmLw = "mxm_lw", 1;
    MxmIw = "mxm_iw", 4;
    MxmAbc = "mxm_abc", 24;
    MxmAcc = "mxm_acc", 4;
    SxmShift = "sxm_shift", 4;
    SxmPermute = "sxm_permute", 24;
    SxmDistribute = "sxm_distribute", 4;
    SxmRotate = "sxm_rotate", 6;
    SxmTranspose = "sxm_transpose", 8;
    IcuNotify = "icu_notify", 10;
    IcuConfig = "icu_config", 1;
    IcuIfetch = "icu_ifetch", 8;
    C2c = "c2c", 1;
}

impl Latencies {
    pub fn get(&self, key: LatKey) -> u32 {
        self.0[key as usize]
    }
    pub fn set(&mut self, key: LatKey, value: u32) {
        self.0[key as usize] = value;
    }
}

/// Which kind of functional slice sits at a stream-register position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SliceKind {
    C2c { hemi: u8 },
    Mxm { plane: u8 },
    Sxm { hemi: u8 },
    Mem { hemi: u8, slice: u16 },
    Vxm,
}

/// The sub-unit a queue drives. Each queue accepts the ICU instructions and the
/// instructions of its own unit (and, for SXM, its own sub-unit).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QueueKind {
    /// One of the two issue ports of a MEM slice (the SRAM is pseudo-dual-ported).
    Mem {
        hemi: u8,
        slice: u16,
        port: u8,
    },
    /// The instruction queue of one VXM ALU.
    Vxm {
        alu: u8,
    },
    /// MXM plane queues: weight load/install, activations, accumulator emit.
    MxmLoad {
        plane: u8,
    },
    MxmAbc {
        plane: u8,
    },
    MxmAcc {
        plane: u8,
    },
    Sxm {
        hemi: u8,
        unit: SxmUnit,
        index: u8,
    },
    C2c {
        hemi: u8,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SxmUnit {
    Shifter,
    Permuter,
    Distributor,
    Transposer,
    Rotator,
}

impl SxmUnit {
    pub const ALL: [SxmUnit; 5] = [
        SxmUnit::Shifter,
        SxmUnit::Permuter,
        SxmUnit::Distributor,
        SxmUnit::Transposer,
        SxmUnit::Rotator,
    ];
    pub fn name(self) -> &'static str {
        match self {
            SxmUnit::Shifter => "shift",
            SxmUnit::Permuter => "perm",
            SxmUnit::Distributor => "dist",
            SxmUnit::Transposer => "trans",
            SxmUnit::Rotator => "rot",
        }
    }
}

impl QueueKind {
    pub fn unit(self) -> Unit {
        match self {
            QueueKind::Mem { .. } => Unit::Mem,
            QueueKind::Vxm { .. } => Unit::Vxm,
            QueueKind::MxmLoad { .. } | QueueKind::MxmAbc { .. } | QueueKind::MxmAcc { .. } => {
                Unit::Mxm
            }
            QueueKind::Sxm { .. } => Unit::Sxm,
            QueueKind::C2c { .. } => Unit::C2c,
        }
    }
}

/// One instruction queue: its name (as used in assembly and program files), what it
/// drives and the stream-register position of its slice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueInfo {
    pub name: String,
    pub kind: QueueKind,
    pub position: u32,
}

/// Geometry and timing of one chip.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChipConfig {
    pub name: String,
    pub superlanes: u32,
    pub lanes_per_superlane: u32,
    /// MEM slices per hemisphere.
    pub mem_slices: u32,
    /// Addresses (words) per MEM slice; the upper half is bank 1.
    pub addresses: u32,
    /// Stream registers per direction.
    pub streams: u32,
    /// MXM planes; half sit in each hemisphere.
    pub mxm_planes: u32,
    /// Accumulator slots per MXM plane.
    pub mxm_acc_slots: u32,
    /// ALUs per lane in the VXM.
    pub vxm_alus: u32,
    /// SXM sub-units per hemisphere, in the order of [`SxmUnit::ALL`].
    pub sxm_units: [u32; 5],
    pub clock_hz: u64,
    pub latencies: Latencies,
}

/// Every integer parameter of a config, by name (used by the program file and Python).
pub const PARAM_NAMES: [&str; 14] = [
    "superlanes",
    "lanes_per_superlane",
    "mem_slices",
    "addresses",
    "streams",
    "mxm_planes",
    "mxm_acc_slots",
    "vxm_alus",
    "sxm_shifters",
    "sxm_permuters",
    "sxm_distributors",
    "sxm_transposers",
    "sxm_rotators",
    "clock_hz",
];

/// Hemisphere names, index 0 = West, 1 = East.
pub const HEMISPHERES: [&str; 2] = ["W", "E"];

impl ChipConfig {
    /// The published first-generation chip (ISCA 2020): 20 superlanes × 16 lanes,
    /// 2 × 44 MEM slices of 8192 × 320-byte words (220 MiB), 32 streams each way,
    /// four 320×320 MXM planes, 16 VXM ALUs per lane, 900 MHz.
    pub fn tsp_v1() -> Self {
        ChipConfig {
            name: "tsp_v1".into(),
            superlanes: 20,
            lanes_per_superlane: 16,
            mem_slices: 44,
            addresses: 8192,
            streams: 32,
            mxm_planes: 4,
            mxm_acc_slots: 4096,
            vxm_alus: 16,
            sxm_units: [4, 1, 4, 2, 1],
            clock_hz: 900_000_000,
            latencies: Latencies::default(),
        }
    }

    /// A small chip for fast tests: 2 superlanes (32 lanes), 24 MEM slices per
    /// hemisphere of 512 words, same streams, units and latencies as `tsp_v1`.
    pub fn tsp_small() -> Self {
        ChipConfig {
            name: "tsp_small".into(),
            superlanes: 2,
            mem_slices: 24,
            addresses: 512,
            mxm_acc_slots: 256,
            ..Self::tsp_v1()
        }
    }

    /// A tiny chip (one superlane, 16 lanes) for exhaustive tests.
    pub fn tsp_tiny() -> Self {
        ChipConfig {
            name: "tsp_tiny".into(),
            superlanes: 1,
            mem_slices: 4,
            addresses: 64,
            mxm_acc_slots: 64,
            ..Self::tsp_v1()
        }
    }

    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "tsp_v1" => Some(Self::tsp_v1()),
            "tsp_small" => Some(Self::tsp_small()),
            "tsp_tiny" => Some(Self::tsp_tiny()),
            _ => None,
        }
    }

    pub const PRESETS: [&'static str; 3] = ["tsp_v1", "tsp_small", "tsp_tiny"];

    /// Lanes in a vector (= bytes in a MEM word = MXM plane dimension).
    pub fn lanes(&self) -> usize {
        (self.superlanes * self.lanes_per_superlane) as usize
    }

    pub fn param(&self, name: &str) -> Option<u64> {
        Some(match name {
            "superlanes" => self.superlanes as u64,
            "lanes_per_superlane" => self.lanes_per_superlane as u64,
            "mem_slices" => self.mem_slices as u64,
            "addresses" => self.addresses as u64,
            "streams" => self.streams as u64,
            "mxm_planes" => self.mxm_planes as u64,
            "mxm_acc_slots" => self.mxm_acc_slots as u64,
            "vxm_alus" => self.vxm_alus as u64,
            "sxm_shifters" => self.sxm_units[0] as u64,
            "sxm_permuters" => self.sxm_units[1] as u64,
            "sxm_distributors" => self.sxm_units[2] as u64,
            "sxm_transposers" => self.sxm_units[3] as u64,
            "sxm_rotators" => self.sxm_units[4] as u64,
            "clock_hz" => self.clock_hz,
            _ => return LatKey::from_name(name).map(|k| self.latencies.get(k) as u64),
        })
    }

    /// Set a parameter or latency by name. The value is range-checked by [`validate`].
    pub fn set_param(&mut self, name: &str, value: u64) -> Result<(), ConfigError> {
        let small = |v: u64| -> Result<u32, ConfigError> {
            u32::try_from(v).map_err(|_| ConfigError::new(format!("{name} = {v} is too large")))
        };
        match name {
            "superlanes" => self.superlanes = small(value)?,
            "lanes_per_superlane" => self.lanes_per_superlane = small(value)?,
            "mem_slices" => self.mem_slices = small(value)?,
            "addresses" => self.addresses = small(value)?,
            "streams" => self.streams = small(value)?,
            "mxm_planes" => self.mxm_planes = small(value)?,
            "mxm_acc_slots" => self.mxm_acc_slots = small(value)?,
            "vxm_alus" => self.vxm_alus = small(value)?,
            "sxm_shifters" => self.sxm_units[0] = small(value)?,
            "sxm_permuters" => self.sxm_units[1] = small(value)?,
            "sxm_distributors" => self.sxm_units[2] = small(value)?,
            "sxm_transposers" => self.sxm_units[3] = small(value)?,
            "sxm_rotators" => self.sxm_units[4] = small(value)?,
            "clock_hz" => self.clock_hz = value,
            _ => {
                let key = LatKey::from_name(name)
                    .ok_or_else(|| ConfigError::new(format!("unknown chip parameter '{name}'")))?;
                self.latencies.set(key, small(value)?);
            }
        }
        Ok(())
    }

    /// Every (name, value) pair: geometry parameters, then latencies.
    pub fn params(&self) -> Vec<(&'static str, u64)> {
        let mut out: Vec<(&'static str, u64)> = PARAM_NAMES
            .iter()
            .map(|n| (*n, self.param(n).unwrap()))
            .collect();
        out.extend(
            LatKey::ALL
                .iter()
                .map(|k| (k.name(), self.latencies.get(*k) as u64)),
        );
        out
    }

    /// Reject geometry the engine cannot model.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |m: String| Err(ConfigError::new(m));
        if self.name.is_empty() || self.name.len() > 64 {
            return err("config name must be 1 to 64 characters".into());
        }
        if !(1..=64).contains(&self.superlanes) {
            return err(format!("superlanes = {} (must be 1..=64)", self.superlanes));
        }
        if self.lanes_per_superlane as usize != crate::sxm::SUPERLANE {
            return err(format!(
                "lanes_per_superlane = {} (the transposer, distributor and broadcast work on 16-lane superlanes; must be 16)",
                self.lanes_per_superlane
            ));
        }
        if !(1..=256).contains(&self.mem_slices) {
            return err(format!(
                "mem_slices = {} (must be 1..=256)",
                self.mem_slices
            ));
        }
        if !(2..=65536).contains(&self.addresses) || !self.addresses.is_multiple_of(2) {
            return err(format!(
                "addresses = {} (must be even, 2..=65536: two banks per slice)",
                self.addresses
            ));
        }
        if self.streams != 32 {
            return err(format!(
                "streams = {} (the instruction encoding and VXM routing assume 32 per direction)",
                self.streams
            ));
        }
        if self.mxm_planes != 4 && self.mxm_planes != 2 && self.mxm_planes != 0 {
            return err(format!(
                "mxm_planes = {} (must be 0, 2 or 4)",
                self.mxm_planes
            ));
        }
        if !(1..=4096).contains(&self.mxm_acc_slots) {
            return err(format!(
                "mxm_acc_slots = {} (must be 1..=4096)",
                self.mxm_acc_slots
            ));
        }
        if self.vxm_alus != 16 {
            return err(format!(
                "vxm_alus = {} (the VXM is a 4x4 mesh; must be 16)",
                self.vxm_alus
            ));
        }
        for (unit, n) in SxmUnit::ALL.iter().zip(self.sxm_units) {
            if n > 8 {
                return err(format!("sxm {} units = {} (at most 8)", unit.name(), n));
            }
        }
        if self.clock_hz == 0 {
            return err("clock_hz must be positive".into());
        }
        for key in LatKey::ALL {
            let v = self.latencies.get(*key);
            if !(1..=1024).contains(&v) {
                return err(format!("latency {} = {v} (must be 1..=1024)", key.name()));
            }
        }
        Ok(())
    }

    /// Bytes of SRAM on the chip.
    pub fn sram_bytes(&self) -> u64 {
        2 * self.mem_slices as u64 * self.addresses as u64 * self.lanes() as u64
    }

    /// Instructions the chip can hold, all queues together. Instructions are 8 bytes;
    /// the real chip keeps them in MEM slices reserved for the purpose, and we allow as
    /// much as 8 slices of one hemisphere (no public source gives the split).
    pub fn instruction_capacity(&self) -> u64 {
        self.addresses as u64 * self.lanes() as u64
    }

    /// Number of stream-register positions from the west edge to the east edge.
    pub fn positions(&self) -> u32 {
        // C2C, MXM planes, SXM, MEM slices per side, plus the VXM in the middle.
        2 * (1 + self.mxm_planes / 2 + 1 + self.mem_slices) + 1
    }

    /// Position of the VXM (the centre of the chip).
    pub fn vxm_position(&self) -> u32 {
        1 + self.mxm_planes / 2 + 1 + self.mem_slices
    }

    /// Position of a MEM slice (slice 0 is next to the VXM).
    pub fn mem_position(&self, hemi: u8, slice: u32) -> u32 {
        let c = self.vxm_position();
        if hemi == 0 {
            c - 1 - slice
        } else {
            c + 1 + slice
        }
    }

    pub fn sxm_position(&self, hemi: u8) -> u32 {
        self.mem_position(hemi, self.mem_slices)
    }

    /// MXM planes 0..n/2 are West (plane 0 outermost), the rest East (last outermost).
    pub fn mxm_position(&self, plane: u32) -> u32 {
        let half = self.mxm_planes / 2;
        if plane < half {
            1 + plane
        } else {
            self.positions() - 1 - (self.mxm_planes - plane)
        }
    }

    pub fn c2c_position(&self, hemi: u8) -> u32 {
        if hemi == 0 {
            0
        } else {
            self.positions() - 1
        }
    }

    /// What sits at each position, west to east.
    pub fn floorplan(&self) -> Vec<SliceKind> {
        let mut v = Vec::with_capacity(self.positions() as usize);
        v.push(SliceKind::C2c { hemi: 0 });
        for p in 0..self.mxm_planes / 2 {
            v.push(SliceKind::Mxm { plane: p as u8 });
        }
        v.push(SliceKind::Sxm { hemi: 0 });
        for s in (0..self.mem_slices).rev() {
            v.push(SliceKind::Mem {
                hemi: 0,
                slice: s as u16,
            });
        }
        v.push(SliceKind::Vxm);
        for s in 0..self.mem_slices {
            v.push(SliceKind::Mem {
                hemi: 1,
                slice: s as u16,
            });
        }
        v.push(SliceKind::Sxm { hemi: 1 });
        for p in self.mxm_planes / 2..self.mxm_planes {
            v.push(SliceKind::Mxm { plane: p as u8 });
        }
        v.push(SliceKind::C2c { hemi: 1 });
        v
    }

    /// Every instruction queue, in a fixed order (the order of program sections and of
    /// issue within a cycle).
    pub fn queues(&self) -> Vec<QueueInfo> {
        let mut q = Vec::new();
        for hemi in 0..2u8 {
            for slice in 0..self.mem_slices {
                for port in 0..2u8 {
                    q.push(QueueInfo {
                        name: format!("mem.{}{}.{}", HEMISPHERES[hemi as usize], slice, port),
                        kind: QueueKind::Mem {
                            hemi,
                            slice: slice as u16,
                            port,
                        },
                        position: self.mem_position(hemi, slice),
                    });
                }
            }
        }
        for alu in 0..self.vxm_alus as u8 {
            q.push(QueueInfo {
                name: format!("vxm.alu{alu}"),
                kind: QueueKind::Vxm { alu },
                position: self.vxm_position(),
            });
        }
        for plane in 0..self.mxm_planes as u8 {
            let position = self.mxm_position(plane as u32);
            for (suffix, kind) in [
                ("ld", QueueKind::MxmLoad { plane }),
                ("abc", QueueKind::MxmAbc { plane }),
                ("acc", QueueKind::MxmAcc { plane }),
            ] {
                q.push(QueueInfo {
                    name: format!("mxm{plane}.{suffix}"),
                    kind,
                    position,
                });
            }
        }
        for hemi in 0..2u8 {
            for (unit, count) in SxmUnit::ALL.iter().zip(self.sxm_units) {
                for index in 0..count as u8 {
                    q.push(QueueInfo {
                        name: format!(
                            "sxm.{}.{}{}",
                            HEMISPHERES[hemi as usize],
                            unit.name(),
                            index
                        ),
                        kind: QueueKind::Sxm {
                            hemi,
                            unit: *unit,
                            index,
                        },
                        position: self.sxm_position(hemi),
                    });
                }
            }
        }
        for hemi in 0..2u8 {
            q.push(QueueInfo {
                name: format!("c2c.{}", HEMISPHERES[hemi as usize]),
                kind: QueueKind::C2c { hemi },
                position: self.c2c_position(hemi),
            });
        }
        q
    }

    /// Peak MACs per cycle of all MXM planes in int8 mode.
    pub fn peak_int8_macs_per_cycle(&self) -> u64 {
        let n = self.lanes() as u64;
        self.mxm_planes as u64 * n * n
    }
}

impl Default for ChipConfig {
    fn default() -> Self {
        Self::tsp_v1()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsp_v1_matches_published_numbers() {
        let c = ChipConfig::tsp_v1();
        c.validate().unwrap();
        assert_eq!(c.lanes(), 320);
        assert_eq!(c.sram_bytes(), 220 * 1024 * 1024);
        assert_eq!(c.peak_int8_macs_per_cycle(), 409_600);
    }

    #[test]
    fn floorplan_positions_agree() {
        for name in ChipConfig::PRESETS {
            let c = ChipConfig::preset(name).unwrap();
            c.validate().unwrap();
            let plan = c.floorplan();
            assert_eq!(plan.len() as u32, c.positions());
            assert_eq!(plan[c.vxm_position() as usize], SliceKind::Vxm);
            for hemi in 0..2u8 {
                for s in 0..c.mem_slices {
                    assert_eq!(
                        plan[c.mem_position(hemi, s) as usize],
                        SliceKind::Mem {
                            hemi,
                            slice: s as u16
                        }
                    );
                }
                assert_eq!(plan[c.sxm_position(hemi) as usize], SliceKind::Sxm { hemi });
                assert_eq!(plan[c.c2c_position(hemi) as usize], SliceKind::C2c { hemi });
            }
            for p in 0..c.mxm_planes {
                assert_eq!(
                    plan[c.mxm_position(p) as usize],
                    SliceKind::Mxm { plane: p as u8 }
                );
            }
            let names: std::collections::HashSet<_> =
                c.queues().into_iter().map(|q| q.name).collect();
            assert_eq!(names.len(), c.queues().len(), "queue names are unique");
        }
    }

    #[test]
    fn params_round_trip() {
        let c = ChipConfig::tsp_small();
        let mut d = ChipConfig::tsp_v1();
        d.name = c.name.clone();
        for (k, v) in c.params() {
            d.set_param(k, v).unwrap();
        }
        assert_eq!(c, d);
        assert!(d.set_param("nonsense", 1).is_err());
    }
}
