//! `lpu-core`: a cycle-level emulator of a Tensor Streaming Processor, in pure Rust.
//!
//! The Python package `lpu` wraps this crate; nothing here depends on Python.

pub mod config;
pub mod dtype;
pub mod engine;
pub mod error;
pub mod fuzz;
pub mod isa;
pub mod mxm;
pub mod numerics;
pub mod program;
pub mod sram;
pub mod streams;
pub mod sxm;
pub mod tensor;
pub mod trace;
pub mod vxm;

pub use config::ChipConfig;
pub use dtype::DType;
pub use engine::{Chip, RunStatus};
pub use isa::{Instr, Op};
pub use program::Program;
