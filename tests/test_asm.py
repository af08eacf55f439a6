"""The assembler and disassembler."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lpu
from lpu import isa


def test_every_error_is_reported_with_location():
    src = """\
.chip tsp_small
.queue mem.W0.0
    read 0, s0x          ; bad stream
    frob 1, 2            ; unknown instruction
    read 99999, s0e      ; address too large for the field
.queue mem.W99.0         ; no such queue
    write 0 s1e          ; missing comma: one operand
.queue vxm.alu1
    exp f32, s0e, s4e    ; exp needs a large ALU
"""
    with pytest.raises(lpu.AssemblyError) as e:
        lpu.assemble(src, "prog.s")
    errs = e.value.errors
    assert [(x.line, x.col) for x in errs] == [(3, 13), (4, 5), (5, 10), (6, 8), (7, 5), (9, 5)]
    assert errs[0].path == "prog.s" and "s0x" in errs[0].text and "stream" in errs[0].message
    assert "unknown instruction" in errs[1].message
    assert "out of range" in errs[2].message
    assert "no such queue" in errs[3].message
    assert "takes 2 operand" in errs[4].message
    assert "large ALU" in errs[5].message
    assert str(errs[0]).startswith("prog.s:3:13: ")


def test_constants_aliases_expressions_and_cycle_placement(small):
    src = """
.chip tsp_small
.const BASE 0x10
.const N 3
.alias x_in s{BASE // 16 + 1}e
.queue mem.W0.0
    @2 read BASE + 2*N, x_in
    repeat N - 1, 2           ; busy until 2 + 2*2
    @8 read (BASE), s0w
"""
    p = lpu.assemble(src)
    assert p.instructions("mem.W0.0") == ["nop 2", "read 22, s2e", "repeat 2, 2", "nop 1", "read 16, s0w"]
    with pytest.raises(lpu.AssemblyError, match="already past"):
        lpu.assemble(src.replace("@8", "@6"))


def test_tensor_directives_and_npy_data(tmp_path, small):
    w = np.arange(64, dtype=np.int16).reshape(2, 32)
    np.save(tmp_path / "w.npy", w)
    src = """
.chip tsp_small
.constant w i16 [2,32] hemi=E addr=4 slices=3,4 file=w.npy
.constant c f32 [3] hemi=W addr=0 slices=0-3 values=[1.5, -2, 3]
.input x i8 [5] hemi=W addr=9 slices=7
"""
    path = tmp_path / "t.s"
    path.write_text(src)
    p = lpu.assemble_file(str(path))
    chip = lpu.Chip(small)
    chip.load(p)
    from lpu.layout import read_tensor

    np.testing.assert_array_equal(read_tensor(chip, p.tensor("w")), w)
    np.testing.assert_array_equal(read_tensor(chip, p.tensor("c")), np.array([1.5, -2, 3], np.float32))
    assert p.tensor("x").kind == "input" and p.tensor("x").addr == 9
    with pytest.raises(lpu.AssemblyError, match="needs 3 values"):
        lpu.assemble(".chip tsp_small\n.constant c f32 [3] hemi=W addr=0 slices=0-3 values=[1, 2]")
    with pytest.raises(lpu.AssemblyError, match="do not fit int8"):
        lpu.assemble(".chip tsp_small\n.constant c i8 [2] hemi=W addr=0 slices=0 values=[1, 300]")


@st.composite
def random_program(draw):
    """A random valid program: tensors, raw words, several queues of valid instructions."""
    cfg = lpu.ChipConfig("tsp_small")
    queues = {}
    names = [q[0] for q in cfg.queues()]
    for qname in draw(st.lists(st.sampled_from(names), min_size=1, max_size=4, unique=True)):
        words = []
        for _ in range(draw(st.integers(1, 6))):
            word = draw(st.integers(0, 2**64 - 1))
            try:
                mn, ops = isa.decode(word)
            except lpu.LpuError:
                continue
            if lpu._core.check_code(cfg, qname, words + [word]) == []:
                words.append(word)
        if words:
            queues[qname] = words
    inits = []
    for k in range(draw(st.integers(0, 3))):
        data = bytes(draw(st.lists(st.integers(0, 255), min_size=cfg.lanes, max_size=cfg.lanes)))
        inits.append(("W" if k % 2 else "E", k, draw(st.integers(0, cfg.addresses - 1)), data))
    tensors = []
    if draw(st.booleans()):
        dtype = draw(st.sampled_from(["int8", "int16", "float32", "bfloat16"]))
        split = draw(st.sampled_from([1, 2]))
        nslices = {"int8": 1, "int16": 2, "float32": 4, "bfloat16": 2}[dtype] * split
        tensors.append(lpu.Tensor("t", draw(st.sampled_from(["input", "output", "scratch"])), dtype, [3, 40], "W",
                                  20, list(range(nslices)), split))
    meta = {"note": draw(st.text(max_size=20))}
    entries = {"alt": {next(iter(queues)): 0}} if queues and draw(st.booleans()) else {}
    return lpu.Program(cfg, queues, inits, tensors, entries, meta)


@settings(max_examples=150, deadline=None)
@given(random_program())
def test_disassembly_reassembles_to_the_identical_binary(prog):
    text = prog.disassemble()
    again = lpu.assemble(text)
    assert again == prog
    assert again.to_bytes() == prog.to_bytes()


def test_many_errors_are_all_kept_but_the_message_stays_short():
    src = ".chip tsp_tiny\n.queue vxm.alu0\n" + "bogus 1\n" * 100
    with pytest.raises(lpu.AssemblyError) as e:
        lpu.assemble(src, "many.s")
    assert len(e.value.errors) == 100 and [x.line for x in e.value.errors] == list(range(3, 103))
    lines = str(e.value).splitlines()
    assert lines[0] == "100 errors in assembly:" and lines[-1] == "... and 80 more"
    assert len(lines) == 22 and lines[1].startswith("many.s:3:1:")
