//! The instruction table for Python (`lpu.isa` builds its objects from these tuples).

use crate::input_error;
use lpu_core::dtype::set;
use lpu_core::isa::{flags, markdown, FieldKind, Instr, Op, TABLE};
use pyo3::prelude::*;

/// (name, kind, bits) of one operand field.
type FieldTuple = (&'static str, &'static str, u32, bool);

/// Every instruction as a tuple: (mnemonic, unit, opcode, fields, latency name or None,
/// dtypes, large_alu, timing_only, doc).
#[allow(clippy::type_complexity)]
#[pyfunction]
fn isa_table() -> Vec<(
    &'static str,
    &'static str,
    u8,
    Vec<FieldTuple>,
    Option<&'static str>,
    Vec<&'static str>,
    bool,
    bool,
    &'static str,
)> {
    TABLE
        .iter()
        .map(|d| {
            (
                d.mnemonic,
                d.unit.name(),
                d.opcode,
                d.fields
                    .iter()
                    .map(|f| (f.name, f.kind.name(), f.kind.bits(), f.kind.advances()))
                    .collect(),
                d.latency.map(|k| k.name()),
                set::names(d.dtypes),
                d.has(flags::LARGE_ALU),
                d.has(flags::TIMING_ONLY),
                d.doc,
            )
        })
        .collect()
}

/// Encode one instruction from its mnemonic and raw operand values.
#[pyfunction]
fn encode(mnemonic: &str, operands: Vec<u32>) -> PyResult<u64> {
    let op = Op::from_mnemonic(mnemonic)
        .ok_or_else(|| input_error(format!("unknown instruction '{mnemonic}'")))?;
    Instr::new(op, &operands)
        .map(|i| i.encode())
        .map_err(|e| input_error(format!("{mnemonic}: {e}")))
}

/// Decode an instruction word into (mnemonic, operand values).
#[pyfunction]
fn decode(word: u64) -> PyResult<(&'static str, Vec<u32>)> {
    let i = Instr::decode(word).map_err(|e| input_error(e.to_string()))?;
    Ok((i.op.mnemonic(), i.operands().to_vec()))
}

/// Assembly text of one instruction word.
#[pyfunction]
fn disassemble_word(word: u64) -> PyResult<String> {
    Instr::decode(word)
        .map(|i| i.disassemble())
        .map_err(|e| input_error(e.to_string()))
}

/// Text form of an operand value of a kind ("stream", "src", "dst", "dtype", ...).
#[pyfunction]
fn format_operand(kind: &str, value: u32) -> PyResult<String> {
    let k = kind_by_name(kind)?;
    Ok(k.format(value))
}

fn kind_by_name(kind: &str) -> PyResult<FieldKind> {
    Ok(match kind {
        "count" => FieldKind::Count(32),
        "addr" => FieldKind::Addr,
        "stream" => FieldKind::Stream,
        "src" => FieldKind::Src,
        "dst" => FieldKind::Dst,
        "dtype" => FieldKind::DType,
        "slot" => FieldKind::Slot,
        "flag" => FieldKind::Flag,
        _ => return Err(input_error(format!("unknown operand kind '{kind}'"))),
    })
}

/// `docs/isa.md`, generated from the instruction table.
#[pyfunction]
fn isa_markdown() -> String {
    markdown()
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(isa_table, m)?)?;
    m.add_function(wrap_pyfunction!(encode, m)?)?;
    m.add_function(wrap_pyfunction!(decode, m)?)?;
    m.add_function(wrap_pyfunction!(disassemble_word, m)?)?;
    m.add_function(wrap_pyfunction!(format_operand, m)?)?;
    m.add_function(wrap_pyfunction!(isa_markdown, m)?)?;
    let large: Vec<u32> = lpu_core::isa::LARGE_ALUS
        .iter()
        .map(|a| *a as u32)
        .collect();
    m.add("LARGE_ALUS", large)?;
    m.add("STREAMS", lpu_core::isa::STREAMS)?;
    m.add("LW_STREAMS", lpu_core::isa::LW_STREAMS)?;
    m.add("ALU_SRC_BASE", lpu_core::isa::ALU_SRC_BASE)?;
    m.add("DST_NONE", lpu_core::isa::DST_NONE)?;
    Ok(())
}
