//! Element types of tensors, streams and instructions.

/// An element type. Multi-byte types travel on stream groups (2 or 4 consecutive
/// streams, byte 0 on the lowest stream) and live in SRAM as byte planes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum DType {
    I8 = 0,
    I16 = 1,
    I32 = 2,
    F16 = 3,
    F32 = 4,
    Bf16 = 5,
}

impl DType {
    pub const ALL: [DType; 6] = [
        DType::I8,
        DType::I16,
        DType::I32,
        DType::F16,
        DType::F32,
        DType::Bf16,
    ];

    pub fn from_code(code: u32) -> Option<DType> {
        DType::ALL.get(code as usize).copied()
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::I8 => "i8",
            DType::I16 => "i16",
            DType::I32 => "i32",
            DType::F16 => "f16",
            DType::F32 => "f32",
            DType::Bf16 => "bf16",
        }
    }

    /// The numpy name of the type (`int8`, `float16`, ... ; `bfloat16` has no numpy dtype).
    pub fn numpy_name(self) -> &'static str {
        match self {
            DType::I8 => "int8",
            DType::I16 => "int16",
            DType::I32 => "int32",
            DType::F16 => "float16",
            DType::F32 => "float32",
            DType::Bf16 => "bfloat16",
        }
    }

    pub fn from_name(name: &str) -> Option<DType> {
        DType::ALL
            .iter()
            .copied()
            .find(|d| d.name() == name || d.numpy_name() == name)
    }

    /// Bytes per element = streams per stream group = byte planes in SRAM.
    pub const fn bytes(self) -> usize {
        match self {
            DType::I8 => 1,
            DType::I16 | DType::F16 | DType::Bf16 => 2,
            DType::I32 | DType::F32 => 4,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F16 | DType::F32 | DType::Bf16)
    }

    /// Bit mask of one type, for sets of allowed types.
    pub const fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// Sets of types, as bit masks over [`DType::bit`].
pub mod set {
    use super::DType;
    pub const INT: u8 = DType::I8.bit() | DType::I16.bit() | DType::I32.bit();
    pub const FLOAT: u8 = DType::F16.bit() | DType::F32.bit();
    pub const NUM: u8 = INT | FLOAT;
    pub const ALL: u8 = NUM | DType::Bf16.bit();
    pub const MXM: u8 = DType::I8.bit() | DType::F16.bit();

    pub fn names(mask: u8) -> Vec<&'static str> {
        DType::ALL
            .iter()
            .filter(|d| mask & d.bit() != 0)
            .map(|d| d.name())
            .collect()
    }
}
