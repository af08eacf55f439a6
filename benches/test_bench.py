"""The emulator on the work it exists for, each case beside numpy doing the same math.

Every case has two benchmarks in one group: ``lpu`` (the emulator) and ``numpy`` (the
baseline, measured in the same run). ``run.py`` prints the ratio of their medians. The
emulator side records the emulated cycle count and rates in ``extra_info`` and checks
its output against numpy: a fast wrong answer is not a result.

What is timed on the emulator side is ``chip.run()`` with the inputs already in SRAM
(``write_tensor``/``read_tensor`` are host copies, timed in the chip-and-load case).
Where the data of a case does not fit the chip's 220 MiB of SRAM at once (fp32 and the
matmuls), the case is one quarter of it (25,000 vectors) on both sides.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

import lpu
from lpu.layout import read_tensor, write_tensor

import programs

CFG = lpu.ChipConfig("tsp_v1")
LANES = CFG.lanes
ROUNDS = 15


def settle() -> None:
    """Let OpenBLAS's worker threads go to sleep: after a numpy matmul they spin for a
    while, and on a 2-core machine that takes a core from the emulator's threads."""
    time.sleep(0.2)


def loaded(prog: lpu.Program, inputs) -> lpu.Chip:
    chip = lpu.Chip(prog.config)
    chip.load(prog)
    for t in prog.tensors:
        if t.name in inputs:
            write_tensor(chip, t, inputs[t.name])
    return chip


def run_chip(benchmark, chip: lpu.Chip, rounds: int = ROUNDS) -> None:
    """Time chip.run() from the loaded state (SRAM kept between rounds)."""
    settle()
    benchmark.pedantic(chip.run, setup=lambda: chip.reset(keep_sram=True), rounds=rounds,
                       warmup_rounds=1, iterations=1)
    assert chip.halted and chip.fault is None, chip.fault


# -- 1. streaming VXM -----------------------------------------------------------------

@pytest.fixture(scope="module", params=[("int8", 100_000), ("float32", 25_000)], ids=["int8", "fp32"])
def vxm_case(request):
    dtype, n = request.param
    case = programs.stream_add(CFG, n, dtype)
    rng = np.random.default_rng(0)
    if dtype == "int8":
        x, y = (rng.integers(-128, 128, (n, LANES), dtype=np.int8) for _ in range(2))
    else:
        x, y = (rng.standard_normal((n, LANES), dtype=np.float32) for _ in range(2))
    return dtype, n, case, x, y


@pytest.mark.parametrize("side", ["lpu", "numpy"])
def test_vxm_stream_add(benchmark, vxm_case, side):
    dtype, n, case, x, y = vxm_case
    benchmark.group = f"1 vxm add {dtype} {n}x{LANES}"
    if side == "numpy":
        out = benchmark(np.add, x, y)
        np.testing.assert_array_equal(out, x + y)
        return
    chip = loaded(case.program, {"x": x, "y": y})
    run_chip(benchmark, chip)
    np.testing.assert_array_equal(read_tensor(chip, case.tensors["z"]), x + y)
    benchmark.extra_info.update(cycles=chip.cycles, vectors=n,
                                vectors_per_s=n / benchmark.stats.stats.median)


# -- 2. streaming MXM -----------------------------------------------------------------

@pytest.fixture(scope="module", params=["int8", "float16"])
def mxm_case(request):
    n = 25_000
    rng = np.random.default_rng(1)
    if request.param == "int8":
        w = rng.integers(-128, 128, (LANES, LANES), dtype=np.int8)
        x = rng.integers(-128, 128, (n, LANES), dtype=np.int8)
    else:
        w = rng.standard_normal((LANES, LANES)).astype(np.float16)
        x = rng.standard_normal((n, LANES)).astype(np.float16)
    return request.param, n, programs.stream_matmul(CFG, n, w), w, x


@pytest.mark.parametrize("side", ["lpu", "numpy"])
def test_mxm_stream_matmul(benchmark, mxm_case, side):
    dtype, n, case, w, x = mxm_case
    benchmark.group = f"2 mxm {dtype} {n}x{LANES} @ {LANES}x{LANES}"
    xf, wf = x.astype(np.float32), w.astype(np.float32)
    want = xf @ wf
    if side == "numpy":
        out = benchmark(np.matmul, xf, wf)
        np.testing.assert_allclose(out, want, rtol=1e-5)
        return
    chip = loaded(case.program, {"x": x})
    run_chip(benchmark, chip)
    got = read_tensor(chip, case.tensors["y"])
    if dtype == "int8":
        np.testing.assert_array_equal(got, want.astype(np.int32))  # exact integers
    else:
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)
    macs = n * LANES * LANES
    benchmark.extra_info.update(cycles=chip.cycles, macs=macs, macs_per_s=macs / benchmark.stats.stats.median)


# -- 3. SXM ---------------------------------------------------------------------------

@pytest.mark.parametrize("side", ["lpu", "numpy"])
def test_sxm_permute(benchmark, side):
    """10,000 vectors, each with its own lane permutation (as two runs of 5,000: one
    slice holds 8,192 words)."""
    from test_engine_sxm import sxm_prog

    rows = 5_000
    benchmark.group = f"3 sxm permute int8 2x{rows}x{LANES}"
    rng = np.random.default_rng(2)
    x = rng.integers(-128, 128, (2, rows, LANES), dtype=np.int8)
    perm = np.argsort(rng.random((2, rows, LANES)), axis=2).astype(np.int16)
    want = np.take_along_axis(x, perm, axis=2)
    if side == "numpy":
        out = benchmark(np.take_along_axis, x, perm, 2)
        np.testing.assert_array_equal(out, want)
        return
    prog = sxm_prog("permute", "i8", rows, "W", cfg=CFG).assemble()
    chips = [loaded(prog, {"x": x[i], "map": perm[i]}) for i in range(2)]

    def both():
        for c in chips:
            c.reset(keep_sram=True)
            c.run()

    benchmark.pedantic(both, rounds=ROUNDS, warmup_rounds=1)
    z = prog.tensor("z")
    for i, c in enumerate(chips):
        np.testing.assert_array_equal(read_tensor(c, z), want[i])
    benchmark.extra_info.update(cycles=sum(c.cycles for c in chips), vectors=2 * rows)


@pytest.mark.parametrize("side", ["lpu", "numpy"])
def test_sxm_transpose(benchmark, side):
    """10,000 vectors as 625 steps of 16 streams, each superlane's 16x16 bytes transposed."""
    steps = 625
    benchmark.group = f"3 sxm transpose int8 {16 * steps}x{LANES}"
    rng = np.random.default_rng(3)
    blocks = rng.integers(-128, 128, (steps, 16, LANES), dtype=np.int8)
    sl = LANES // 16

    def ref(b):  # stream i lane 16g+j = stream j lane 16g+i
        return np.ascontiguousarray(b.reshape(steps, 16, sl, 16).transpose(0, 3, 2, 1).reshape(steps, 16, LANES))

    want = ref(blocks)
    if side == "numpy":
        out = benchmark(ref, blocks)
        np.testing.assert_array_equal(out, want)
        return
    prog = programs.transpose16(CFG, steps)
    # Stream j of step b comes from xa row 8b + j (j < 8) or xb row 8b + j - 8.
    xa = blocks[:, :8].reshape(8 * steps, LANES)
    xb = blocks[:, 8:].reshape(8 * steps, LANES)
    chip = loaded(prog, {"xa": xa, "xb": xb})
    run_chip(benchmark, chip)
    ya = read_tensor(chip, prog.tensor("ya")).reshape(steps, 8, LANES)
    yb = read_tensor(chip, prog.tensor("yb")).reshape(steps, 8, LANES)
    np.testing.assert_array_equal(np.concatenate([ya, yb], axis=1), want)
    benchmark.extra_info.update(cycles=chip.cycles, vectors=16 * steps)


# -- 4. dispatch ----------------------------------------------------------------------

@pytest.mark.parametrize("side", ["lpu", "numpy"])
def test_dispatch(benchmark, side):
    """A million separate reads over all 88 MEM slices; the baseline copies the same
    million 320-byte words."""
    per_queue = 1_000_000 // (2 * CFG.mem_slices) + 1
    n = 2 * CFG.mem_slices * per_queue
    benchmark.group = f"4 dispatch {n:,} instructions"
    if side == "numpy":
        src = np.random.default_rng(4).integers(0, 255, (n, LANES), dtype=np.uint8)
        out = benchmark(np.copy, src)
        assert np.array_equal(out, src)
        return
    prog = programs.dispatch(CFG, per_queue)
    chip = loaded(prog, {})
    run_chip(benchmark, chip, rounds=3)
    stats = chip.stats()
    # Independent expectation (docs/timing.md): one read per instruction, all queues in
    # lockstep; the last value lands mem_read cycles after the last issue, then the
    # wavefront needs superlanes - 1 more cycles.
    assert stats["sram_reads"] == n
    assert chip.cycles == per_queue - 1 + dict(CFG.latencies)["mem_read"] + 1 + CFG.superlanes - 1
    median = benchmark.stats.stats.median
    benchmark.extra_info.update(cycles=chip.cycles, instructions=n, instructions_per_s=n / median,
                                cycles_per_s=chip.cycles / median)


# -- 5. LLM decode --------------------------------------------------------------------

@pytest.fixture(scope="module")
def bundled():
    from lpu.llm import load_bundled

    return load_bundled()


STEPS = 16


@pytest.mark.parametrize("side", ["lpu", "numpy"])
def test_llm_decode(benchmark, bundled, side):
    """Decode steps of the bundled model (dim 256, 4 layers): the emulator runs the whole
    step on the chip, the reference is the numpy forward pass of the same weights."""
    from llm_reference import ReferenceModel

    benchmark.group = f"5 llm decode step, bundled model ({STEPS} steps per round)"
    tokens = bundled.tokenizer.encode("def main():\n    ")[:STEPS]
    tokens += [35] * (STEPS - len(tokens))
    ref = ReferenceModel(bundled)
    if side == "numpy":
        def decode():
            ref.reset()
            return [ref.forward(t, i) for i, t in enumerate(tokens)]

        benchmark.pedantic(decode, rounds=ROUNDS, warmup_rounds=1)
        return
    from lpu.llm.onchip import ChipModel

    cm = ChipModel(bundled, CFG)

    def decode():
        cm.reset()
        return [cm.step(t) for t in tokens]

    got = benchmark.pedantic(decode, rounds=ROUNDS, warmup_rounds=1)
    ref.reset()
    for i, t in enumerate(tokens):
        want = ref.forward(t, i)
        np.testing.assert_allclose(got[i], want, rtol=2e-3, atol=2e-3 * np.abs(want).max())
    median = benchmark.stats.stats.median
    benchmark.extra_info.update(cycles=cm.last.cycles, tokens_per_s=STEPS / median,
                                instructions=cm.program.instruction_count)


# -- 6. a chip and a program ----------------------------------------------------------

@pytest.mark.parametrize("side", ["lpu", "numpy"])
def test_chip_and_load(benchmark, bundled, side):
    """Create a tsp_v1 chip and load the bundled model's decode program (6 MB of
    weights into SRAM); the baseline copies the same weights."""
    from lpu.llm.onchip import compile_model

    prog, _ = compile_model(bundled, CFG)
    benchmark.group = "6 chip + load (LLM program)"
    if side == "numpy":
        arrays = list(bundled.weights.values())
        out = benchmark(lambda: [a.copy() for a in arrays])
        assert len(out) == len(arrays)
        return

    def make():
        chip = lpu.Chip(CFG)
        chip.load(prog)
        return chip

    chip = benchmark(make)
    assert chip.program is not None and chip.program.instruction_count == prog.instruction_count
    assert not chip.halted and chip.cycle == 0
    benchmark.extra_info.update(instructions=prog.instruction_count)
