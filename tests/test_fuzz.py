"""Nothing a user feeds lpu crashes it: random assembly, program bytes, tensors and API
arguments either work or raise a specific ``lpu.LpuError`` subclass.

``scripts/fuzz`` runs these with many more examples (``LPU_FUZZ_EXAMPLES``); inputs
that once failed are pinned with ``@example``.
"""

from __future__ import annotations

import os

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import lpu
from lpu.errors import AssemblyError, InputError
from lpu.layout import read_tensor, write_tensor

EXAMPLES = int(os.environ.get("LPU_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

MNEMONICS = sorted(i.mnemonic for i in lpu.isa.instructions())
TOKENS = MNEMONICS + [
    ".chip tsp_tiny", ".chip tsp_small", ".queue", "mem.W0.0", "mem.E1.1", "vxm.alu0", "mxm0.abc",
    ".const", ".alias", ".input", ".output", ".tensor", ".data", ".word", ".entry", ".meta",
    "i8", "f32", "f16", "s0e", "s31w", "s32e", "alu3", "-", "@", "@5", "@-1", "repeat", "0", "1",
    "4096", "99999999999", "-3", "[4,16]", "hemi=W", "slices=0", "addr=", ",", ";", "\"", "'", "(", ")", "+",
    "*", "X", "\t", "é", "\x00",
]


def line_of(tokens):
    return " ".join(tokens)


@FUZZ
@given(st.lists(st.lists(st.sampled_from(TOKENS), max_size=7).map(line_of), max_size=25))
@example([".chip tsp_tiny", ".queue vxm.alu0", "repeat 3, 1"])
@example([".chip tsp_tiny", ".const X 99999999999*99999999999", ".queue mem.W0.0", "@X read 0, s0e"])
@example([".chip tsp_tiny", ".queue mem.W0.0", "@99999999999999999999 read 0, s0e"])  # once: MemoryError
@example([".queue abc", "@"])  # once: AssertionError
def test_assembler_never_crashes(lines):
    text = "\n".join(lines)
    try:
        prog = lpu.assemble(text, "fuzz.s")
    except AssemblyError as e:
        assert e.errors and all(err.line >= 1 for err in e.errors)
        assert "fuzz.s:" in str(e)
    else:
        # Whatever assembles disassembles to text that assembles to the same bytes.
        assert lpu.assemble(prog.disassemble()).to_bytes() == prog.to_bytes()


@FUZZ
@given(st.text(max_size=400))
def test_assembler_on_arbitrary_text(text):
    try:
        lpu.assemble(text)
    except AssemblyError:
        pass


@FUZZ
@given(st.binary(max_size=600))
def test_program_loader_on_arbitrary_bytes(data):
    try:
        lpu.Program.from_bytes(data)
    except lpu.ProgramFormatError as e:
        assert e.field


DTYPES = ["int8", "int16", "int32", "float16", "bfloat16", "float32"]


@FUZZ
@given(dtype=st.sampled_from(DTYPES), shape=st.lists(st.integers(1, 40), min_size=1, max_size=3),
       split=st.integers(1, 3), data=st.data())
def test_marshalling_round_trips_or_refuses(dtype, shape, split, data):
    cfg = lpu.ChipConfig("tsp_tiny")
    nb = {"int8": 1, "int16": 2, "int32": 4, "float16": 2, "bfloat16": 2, "float32": 4}[dtype]
    t = lpu.Tensor("x", "input", dtype, shape, "W", 0, list(range(nb * split)), split)
    chip = lpu.Chip(cfg)
    np_dt = np.float32 if dtype == "bfloat16" else np.dtype(dtype)
    wrong = data.draw(st.sampled_from(["none", "shape", "dtype", "nan"]))
    arr_shape = list(shape) if wrong != "shape" else list(shape) + [2]
    if np.issubdtype(np_dt, np.integer):
        info = np.iinfo(np_dt)
        arr = np.random.default_rng(len(shape)).integers(info.min, info.max, arr_shape, endpoint=True).astype(np_dt)
    else:
        arr = np.random.default_rng(len(shape)).standard_normal(arr_shape).astype(np_dt)
        if wrong == "nan":
            arr.reshape(-1)[0] = np.nan
    if wrong == "dtype":
        arr = arr.astype(np.complex64)
    try:
        write_tensor(chip, t, arr)
    except InputError as e:
        assert wrong in ("shape", "dtype") or nb * split > cfg.mem_slices, e
        return
    except lpu.CapacityError as e:
        assert "a slice has" in str(e)
        return
    assert wrong in ("none", "nan")
    back = read_tensor(chip, t)
    if dtype == "bfloat16":  # rounded to bf16's 8 significant bits
        assert back.shape == tuple(shape)
        np.testing.assert_allclose(back, arr, rtol=2.0 ** -8, atol=0)
    else:
        np.testing.assert_array_equal(back.view(np.uint8), arr.view(np.uint8))


@FUZZ
@given(st.sampled_from(["read_sram", "write_sram", "stream", "add_breakpoint", "add_watchpoint", "run",
                        "step", "run_until", "set_fault_policy", "queue_state", "timeline"]),
       st.lists(st.one_of(st.integers(-5, 1 << 40), st.sampled_from(["W", "E", "X", "mem.W0.0", "nope", ""])),
                max_size=4))
def test_chip_api_with_bad_arguments(method, args):
    chip = lpu.Chip(lpu.ChipConfig("tsp_tiny"))
    try:
        getattr(chip, method)(*args)
    except lpu.LpuError as e:
        assert type(e) is not lpu.LpuError, f"{method}{tuple(args)} raised the bare base class: {e}"
    except (TypeError, OverflowError):
        pass  # Python's own argument conversion


ARG = st.one_of(st.integers(-5, 1 << 40), st.sampled_from(["W", "E", "x", "int8", "input", "nope", "", "s3e"]),
                st.lists(st.integers(-2, 70), max_size=4))
PROGRAM = lpu.assemble(".chip tsp_tiny\n.input x i8 [2,16] hemi=W addr=0 slices=0\n.queue mem.W0.0\nread 0, s0e\n")


@FUZZ
@given(st.sampled_from(["config", "config_kw", "tensor", "program_tensor", "encode", "decode", "instruction",
                        "mem_position", "mxm_position", "disassemble"]),
       st.lists(ARG, max_size=8))
def test_other_api_with_bad_arguments(what, args):
    calls = {
        "config": lambda *a: lpu.ChipConfig(*a[:1]),
        "config_kw": lambda *a: lpu.ChipConfig("tsp_tiny", **{k: v for k, v in zip(
            ["mem_slices", "addresses", "superlanes", "streams", "mxm_planes"], a)}),
        "tensor": lambda *a: lpu.Tensor(*a),
        "program_tensor": lambda *a: PROGRAM.tensor(*a[:1]),
        "encode": lambda *a: lpu.isa.encode(*a[:2]),
        "decode": lambda *a: lpu.isa.decode(*a[:1]),
        "instruction": lambda *a: lpu.isa.instruction(*a[:1]),
        "mem_position": lambda *a: PROGRAM.config.mem_position(*a[:2]),
        "mxm_position": lambda *a: PROGRAM.config.mxm_position(*a[:1]),
        "disassemble": lambda *a: lpu.isa.disassemble(*a[:1]),
    }
    try:
        calls[what](*args)
    except lpu.LpuError as e:
        assert type(e) is not lpu.LpuError, f"{what}{tuple(args)} raised the bare base class: {e}"
    except (TypeError, OverflowError):
        pass  # Python's own argument conversion
