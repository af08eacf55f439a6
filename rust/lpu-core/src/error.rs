//! Error types of the core. Each maps to one Python exception class in `lpu`.

use thiserror::Error;

/// A chip configuration the engine cannot model.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("invalid chip config: {msg}")]
pub struct ConfigError {
    pub msg: String,
}

impl ConfigError {
    pub fn new(msg: impl Into<String>) -> Self {
        ConfigError { msg: msg.into() }
    }
}

/// An instruction word that does not decode, or whose operands are out of range.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{field}: {msg}")]
pub struct DecodeError {
    /// The operand field (or "opcode") at fault.
    pub field: String,
    pub msg: String,
}

impl DecodeError {
    pub fn new(field: impl Into<String>, msg: impl Into<String>) -> Self {
        DecodeError {
            field: field.into(),
            msg: msg.into(),
        }
    }
}

/// A malformed, truncated or incompatible program file.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("program file offset {offset}: {field}: {msg}")]
pub struct FormatError {
    /// Byte offset in the file where the problem was found.
    pub offset: u64,
    /// The field being read.
    pub field: String,
    pub msg: String,
}

impl FormatError {
    pub fn new(offset: usize, field: impl Into<String>, msg: impl Into<String>) -> Self {
        FormatError {
            offset: offset as u64,
            field: field.into(),
            msg: msg.into(),
        }
    }
}

/// Something does not fit on the chip (SRAM, instruction memory, accumulators).
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{msg}")]
pub struct CapacityError {
    pub msg: String,
}

/// A program that is well-formed but cannot be loaded on a given chip.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum LoadError {
    #[error("{0}")]
    Format(#[from] FormatError),
    #[error("{0}")]
    Capacity(#[from] CapacityError),
    #[error("{0}")]
    Config(#[from] ConfigError),
}
