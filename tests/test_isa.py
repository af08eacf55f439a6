"""The ISA as Python sees it: complete, consistent with the table, round-tripping."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lpu
from lpu import isa

from conftest import ROOT


def test_every_unit_of_the_published_architecture_is_covered():
    names = {i.mnemonic for i in isa.instructions()}
    # ICU, MEM, MXM, SXM and C2C instruction names from the ISCA 2020 table.
    assert {"nop", "repeat", "sync", "notify", "config", "ifetch"} <= names
    assert {"read", "write", "gather", "scatter"} <= names
    assert {"lw", "iw", "abc", "acc"} <= names
    assert {"shiftn", "shifts", "permute", "broadcast", "distribute", "rotate", "transpose"} <= names
    assert {"send", "receive", "deskew"} <= names
    vxm = {i.mnemonic for i in isa.instructions("VXM")}
    assert {"add", "sub", "mul", "neg", "abs", "max", "min", "eq", "ne", "lt", "le", "gt", "ge"} <= vxm
    assert {"mask", "and", "or", "xor", "not", "shl", "shr", "cast", "relu", "tanh", "exp", "exp2", "rsqrt"} <= vxm
    for i in isa.instructions("VXM"):
        if i.mnemonic not in ("copy",):
            assert set(i.dtypes) <= {"i8", "i16", "i32", "f16", "f32", "bf16"}
    assert {"i8", "i16", "i32", "f16", "f32"} <= set(isa.instruction("add").dtypes)


def test_metadata_is_consistent():
    cfg = lpu.ChipConfig()
    lat = dict(cfg.latencies)
    opcodes = set()
    for i in isa.instructions():
        assert i.opcode not in opcodes
        opcodes.add(i.opcode)
        assert i.unit in isa.UNITS
        assert i.doc.endswith(".")
        if i.latency is not None:
            assert i.latency in lat
            assert i.latency_cycles(cfg) == lat[i.latency] >= 1
        end = 8
        for f in i.fields:
            assert f.shift == end
            end += f.bits
        assert end <= 64
    assert isa.instruction("exp").large_alu and not isa.instruction("add").large_alu
    assert isa.instruction("ifetch").timing_only and not isa.instruction("send").timing_only
    with pytest.raises(lpu.InputError, match="unknown instruction 'frobnicate'"):
        isa.instruction("frobnicate")


def _operand(draw, f: isa.Field) -> int:
    if f.kind == "stream":
        return draw(st.integers(0, 63))
    if f.kind == "src":
        return draw(st.one_of(st.integers(0, 63), st.integers(64, 79)))
    if f.kind == "dst":
        return draw(st.one_of(st.integers(0, 63), st.just(127)))
    if f.kind == "dtype":
        return draw(st.integers(0, 5))
    return draw(st.integers(0, (1 << f.bits) - 1))


@st.composite
def valid_instruction(draw):
    ins = draw(st.sampled_from(isa.instructions()))
    ops = [_operand(draw, f) for f in ins.fields]
    if "dt" in [f.name for f in ins.fields]:
        allowed = ["i8", "i16", "i32", "f16", "f32", "bf16"]
        dt = draw(st.sampled_from([d for d in allowed if d in ins.dtypes]))
        ops[[f.name for f in ins.fields].index("dt")] = allowed.index(dt)
    return ins, ops


@settings(max_examples=3000, deadline=None)
@given(valid_instruction())
def test_encode_decode_round_trip(case):
    ins, ops = case
    word = ins.encode(*ops)
    assert word & 0xFF == ins.opcode
    for f, v in zip(ins.fields, ops):
        assert (word >> f.shift) & ((1 << f.bits) - 1) == v
    assert isa.decode(word) == (ins.mnemonic, ops)
    text = isa.disassemble(word)
    assert text.split()[0] == ins.mnemonic


@settings(max_examples=2000, deadline=None)
@given(st.integers(0, 2**64 - 1))
def test_any_word_decodes_or_raises_lpu_error(word):
    try:
        mn, ops = isa.decode(word)
    except lpu.LpuError:
        return
    assert isa.encode(mn, ops) == word


def test_bad_operands_are_rejected():
    with pytest.raises(lpu.LpuError, match="dt"):
        isa.encode("and", [4, 0, 1, 2])  # bitwise and on f32
    with pytest.raises(lpu.LpuError, match="unknown instruction"):
        isa.encode("nope", [])
    with pytest.raises(lpu.LpuError, match="operands"):
        isa.encode("read", [1])


def test_isa_doc_is_generated_from_the_table():
    with open(os.path.join(ROOT, "docs", "isa.md"), encoding="utf-8") as f:
        assert f.read() == isa.markdown(), "docs/isa.md is stale: UPDATE_DOCS=1 cargo test -p lpu-core"
    for i in isa.instructions():
        assert f"`{i.mnemonic}`" in isa.markdown()


def test_the_operands_a_repeat_advances_are_the_ones_its_doc_names():
    # `repeat`'s own text says which operand kinds advance; every field says whether it
    # does (the builder folds runs of single instructions by it).
    doc = isa.instruction("repeat").doc
    kinds = {f.kind for i in isa.instructions() for f in i.fields}
    named = {k for k in kinds if f"{k} and" in doc or f"and {k}" in doc}
    assert named == {"addr", "slot"}
    for i in isa.instructions():
        for f in i.fields:
            assert f.advances == (f.kind in named), (i.mnemonic, f.name)
