"""The matmul kernel against numpy: fp16 exact to the documented order, int8 exact."""

from __future__ import annotations

import numpy as np
import pytest

import lpu
from lpu.builder import Builder
from lpu.kernels import dequant_epilogue, load_weights, matmul, quantize_per_channel


def tiles_of(x: np.ndarray, lanes: int, dtype) -> np.ndarray:
    M, K = x.shape
    kt = -(-K // lanes)
    out = np.zeros((kt, M, lanes), dtype)
    for i in range(kt):
        c = x[:, i * lanes : (i + 1) * lanes]
        out[i, :, : c.shape[1]] = c
    return out


def untile(y: np.ndarray, N: int) -> np.ndarray:
    return np.concatenate(list(y), axis=1)[:, :N]


def fp16_reference(x16: np.ndarray, w: np.ndarray) -> np.ndarray:
    """fp32 accumulation over k in order, products of fp16 values exact in fp32."""
    w16 = w.astype(np.float16).astype(np.float32)
    x32 = x16.astype(np.float32)
    y = np.zeros((x16.shape[0], w.shape[1]), np.float32)
    for k in range(w.shape[0]):
        y += x32[:, k : k + 1] * w16[k]
    return y


def build(cfg, K, N, M, dtype, hemi, epilogue=False, start=0, load_from=None):
    b = Builder(cfg)
    rng = np.random.default_rng(K * 1000 + N + M)
    W = rng.standard_normal((K, N)).astype(np.float32)
    w = load_weights(b, "w", W, dtype, hemi=hemi)
    x = b.input("x", dtype, (w.kt, M, cfg.lanes))
    other = "E" if hemi == "W" else "W"
    out_dt = "float32" if dtype == "float16" or epilogue else "int32"
    y = b.output("y", out_dt, (w.nt, M, cfg.lanes), hemi=other)
    end = matmul(b, x, w, y, epilogue=dequant_epilogue(w) if epilogue else None, start=start, load_from=load_from)
    return b.build(), W, w, end


# Shapes cover: one tile, K and N over several 320-tiles, K not a multiple of 16, several rows.
SHAPES = [(32, 32, 1), (70, 50, 3), (100, 96, 2), (33, 65, 1)]


@pytest.mark.parametrize("K,N,M", SHAPES)
@pytest.mark.parametrize("hemi", ["W", "E"])
def test_fp16_matches_sequential_fp32_accumulation_bit_for_bit(small, K, N, M, hemi):
    prog, W, w, end = build(small, K, N, M, "float16", hemi)
    x = np.random.default_rng(M).standard_normal((M, K)).astype(np.float16)
    run = lpu.Runner(prog)
    got = untile(run(x=tiles_of(x, small.lanes, np.float16))["y"], N)
    np.testing.assert_array_equal(got, fp16_reference(x, W))
    assert run.last is not None and run.last.cycles == end + small.superlanes  # land + 1 + (superlanes-1)
    assert run.last.stats["macs_fp16"] == w.kt * w.nt * M * small.lanes**2


@pytest.mark.parametrize("K,N,M", SHAPES)
def test_int8_is_exact(small, K, N, M):
    prog, W, w, _ = build(small, K, N, M, "int8", "W")
    x = np.random.default_rng(K).integers(-128, 128, (M, K)).astype(np.int8)
    got = untile(lpu.Runner(prog)(x=tiles_of(x, small.lanes, np.int8))["y"], N)
    q, _ = quantize_per_channel(W)
    np.testing.assert_array_equal(got, x.astype(np.int32) @ q.astype(np.int32))


def test_int8_extremes_on_full_size_planes(v1):
    # 320 products of -128 * -127 in one 320x320 tile, then a second K tile accumulated.
    K, N, M = 640, 320, 1
    b = Builder(v1)
    q = np.full((K, N), -127, np.int8)
    w = load_weights(b, "w", q.astype(np.float32), "int8", quantized=(q, np.ones(N, np.float32)))
    x = b.input("x", "int8", (w.kt, M, v1.lanes))
    y = b.output("y", "int32", (w.nt, M, v1.lanes), hemi="E")
    matmul(b, x, w, y)
    xv = np.full((M, K), -128, np.int8)
    got = untile(lpu.Runner(b.build())(x=tiles_of(xv, v1.lanes, np.int8))["y"], N)
    np.testing.assert_array_equal(got, np.full((M, N), 640 * 128 * 127, np.int32))


@pytest.mark.parametrize("dtype", ["float16", "int8"])
def test_full_size_multi_tile(v1, dtype):
    K, N, M = 700, 650, 2
    prog, W, w, _ = build(v1, K, N, M, dtype, "E")
    rng = np.random.default_rng(7)
    if dtype == "float16":
        x = rng.standard_normal((M, K)).astype(np.float16)
        want = fp16_reference(x, W)
    else:
        x = rng.integers(-128, 128, (M, K)).astype(np.int8)
        want = x.astype(np.int32) @ quantize_per_channel(W)[0].astype(np.int32)
    got = untile(lpu.Runner(prog)(x=tiles_of(x, v1.lanes, np.dtype(dtype)))["y"], N)
    np.testing.assert_array_equal(got, want)


def test_int8_dequant_epilogue(small):
    K, N = 70, 50
    prog, W, w, _ = build(small, K, N, 1, "int8", "W", epilogue=True)
    x = np.random.default_rng(5).integers(-128, 128, (1, K)).astype(np.int8)
    got = untile(lpu.Runner(prog)(x=tiles_of(x, small.lanes, np.int8))["y"], N)
    q, s = quantize_per_channel(W)
    acc = (x.astype(np.int32) @ q.astype(np.int32)).astype(np.float32)
    np.testing.assert_array_equal(got, acc * s)  # one fp32 multiply: exactly numpy's
    # Against the float matmul, int8 per-channel weights are within their rounding:
    # |error| <= sum_k |x_k| * scale_n / 2.
    bound = np.abs(x).astype(np.float32).sum() * s / 2 + 1e-3
    assert np.all(np.abs(got - x.astype(np.float32) @ W) <= bound)


def test_results_must_leave_through_the_vxm(small):
    b = Builder(small)
    w = load_weights(b, "w", np.ones((16, 16), np.float32), "float16", hemi="W")
    x = b.input("x", "float16", (1, 1, small.lanes))
    y = b.output("y", "float32", (1, 1, small.lanes), hemi="W")
    with pytest.raises(lpu.LpuError, match="other hemisphere"):
        matmul(b, x, w, y)


def test_weights_load_before_the_activations_are_due(small):
    """With load_from, the planes take their weights before `start` (when x would still
    be in the making): same results, and the products start as soon as x may be read."""
    K, N, M = 100, 96, 2
    x = np.random.default_rng(7).standard_normal((M, K)).astype(np.float16)
    ends = []
    for load_from in (None, 0):
        prog, W, w, end = build(small, K, N, M, "float16", "W", start=200, load_from=load_from)
        got = untile(lpu.Runner(prog)(x=tiles_of(x, small.lanes, np.float16))["y"], N)
        np.testing.assert_array_equal(got, fp16_reference(x, W))
        ends.append(end)
    assert ends[1] < ends[0]


def test_snapshots_of_a_chip_that_ran_before_run_the_same(small):
    """A chip that has run a matmul keeps memory its next run cannot see (its planes'
    weight buffers, its stream store). Snapshots leave that out, and so does the state a
    fast run keeps to redo from: a rerun after a reset, a snapshot restored at its start
    or in the middle, and a run stopped by a breakpoint after batches all end in the
    same bits, cycles and counters as the first run."""
    from lpu.layout import read_tensor, write_tensor

    prog, W, w, end = build(small, 100, 96, 2, "float16", "W")
    x = np.random.default_rng(2).standard_normal((2, 100)).astype(np.float16)
    chip = lpu.Chip(small)
    chip.load(prog)
    write_tensor(chip, prog.tensor("x"), tiles_of(x, small.lanes, np.float16))
    assert chip.run() == lpu.RunStatus.HALTED and chip.batched_issues > 0
    want = untile(read_tensor(chip, prog.tensor("y")), 96)
    np.testing.assert_array_equal(want, fp16_reference(x, W))
    cycles, stats = chip.cycles, chip.stats()

    def same() -> None:
        assert chip.run() == lpu.RunStatus.HALTED
        np.testing.assert_array_equal(untile(read_tensor(chip, prog.tensor("y")), 96), want)
        assert chip.cycles == cycles and chip.stats() == stats

    chip.reset(keep_sram=True)
    start = chip.snapshot()
    same()
    chip.restore(start)
    assert chip.run(max_cycles=end // 2) == lpu.RunStatus.CYCLE_LIMIT
    middle = chip.snapshot()
    same()
    for snap in (middle, start):
        chip.restore(snap)
        same()
    # The last abc issue (after the batched loads and products) as a breakpoint: the run
    # is redone one by one from the state kept before its first batch.
    chip.restore(start)
    last = max(i for i, text in enumerate(prog.instructions("mxm0.abc")) if text.startswith("abc"))
    chip.add_breakpoint("mxm0.abc", last)
    assert chip.run() == lpu.RunStatus.BREAKPOINT
    chip.remove_breakpoint("mxm0.abc", last)
    same()
