"""MXM: weight loads (lw/iw), activations (abc) and results (acc) through whole programs,
against numpy: int8 with exact int32 accumulation, fp16 with a sequential fp32 sum in
k order (docs/numerics.md), with cycle counts from the timing rule and MAC counts.

Every lw takes 16 streams in one cycle, so each of the 16 rows (8 for fp16: two byte
planes each) comes from its own MEM slice, read at the cycle its position requires: the
16 slices of the hemisphere on the plane's side nearest it (split=16, or split=8 with two
planes for fp16), or, on a chip with fewer than 24 slices per hemisphere, 8 West and 8
East slices (test_weights_from_both_hemispheres).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import enginehelp as h
from enginehelp import MxmProg, mxm_prog, ref_fp16, ref_int8, run_mxm, weight_inputs

COVERS = {"lw", "iw", "abc", "acc", "read", "write", "repeat"}

SMALL = h.config("tsp_small")


def check_f32(got: np.ndarray, want: np.ndarray) -> None:
    h.assert_bits_equal("f32", h.bits_of("f32", got), h.bits_of("f32", want), canonical_nan=True,
                        what="fp16 matmul")


def check_run(mp: MxmProg, x, w, out, info):
    cfg = mp.prog.cfg
    if mp.dt == "i8":
        np.testing.assert_array_equal(out["y"], ref_int8(x, w))
    else:
        check_f32(out["y"], ref_fp16(x, w))
    assert info.cycles == mp.prog.expected_cycles()
    key = "macs_int8" if mp.dt == "i8" else "macs_fp16"
    macs = mp.passes * mp.m * cfg.lanes * cfg.lanes
    assert info.stats[key] == macs
    assert info.stats["weights_installed"] == mp.passes
    # An fp16 abc keeps its plane busy 4 cycles, an int8 one 1 cycle; fp16 MACs count 4
    # times against the int8 peak of all planes.
    plane = int(mp.abc[0][0].queue[3])
    busy = mp.passes * mp.m * (1 if mp.dt == "i8" else 4)
    assert info.stats["mxm_busy_cycles"] == [busy if p == plane else 0 for p in range(cfg.mxm_planes)]
    weight = 1 if mp.dt == "i8" else 4
    peak = cfg.mxm_planes * cfg.lanes * cfg.lanes * info.cycles
    assert info.stats["mxm_utilization"] == pytest.approx(weight * macs / peak)


def fp16_values(rng, shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float16)


# ---------------------------------------------------------------------------------------
# tsp_small: 32 x 32 planes.


@pytest.mark.parametrize("plane", [0, 1, 2, 3])
@pytest.mark.parametrize("dt", ["i8", "f16"])
def test_matmul_every_plane(dt, plane):
    cfg = SMALL
    mp = mxm_prog(cfg, dt, m=3, plane=plane)
    rng = np.random.default_rng(plane)
    if dt == "i8":
        x = rng.integers(-128, 128, (3, cfg.lanes), dtype=np.int8)
        w = rng.integers(-128, 128, (cfg.lanes, cfg.lanes), dtype=np.int8)
    else:
        x, w = fp16_values(rng, (3, cfg.lanes)), fp16_values(rng, (cfg.lanes, cfg.lanes))
    out, info = run_mxm(mp, x, w)
    check_run(mp, x, w, out, info)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), m=st.integers(1, 4), passes=st.integers(1, 3))
def test_int8_random(seed, m, passes):
    cfg = SMALL
    rng = np.random.default_rng(seed)
    mp = mxm_prog(cfg, "i8", m=m, passes=passes, plane=seed % 4)
    x = rng.integers(-128, 128, (m, passes * cfg.lanes), dtype=np.int8)
    w = rng.integers(-128, 128, (passes * cfg.lanes, cfg.lanes), dtype=np.int8)
    out, info = run_mxm(mp, x, w)
    check_run(mp, x, w, out, info)


@st.composite
def fp16_arrays(draw, shape):
    special = st.sampled_from([0.0, -0.0, 65504.0, -65504.0, 2.0 ** -24, -(2.0 ** -24), 2.0 ** -14,
                               1.0, -1.0, 0.5, 3.0, 1e-3, 2048.0])
    vals = st.one_of(st.floats(width=16, allow_nan=False, allow_infinity=False, allow_subnormal=True),
                     special)
    n = int(np.prod(shape))
    flat = draw(st.lists(vals, min_size=1, max_size=64))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    base = rng.standard_normal(n) * np.exp2(rng.integers(-20, 8, n))
    idx = rng.integers(0, n, len(flat))
    base[idx] = flat
    return base.astype(np.float16).reshape(shape)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), m=st.integers(1, 3), passes=st.integers(1, 2))
def test_fp16_random_and_adversarial(data, m, passes):
    cfg = SMALL
    mp = mxm_prog(cfg, "f16", m=m, passes=passes, plane=data.draw(st.integers(0, 3)))
    x = data.draw(fp16_arrays((m, passes * cfg.lanes)))
    w = data.draw(fp16_arrays((passes * cfg.lanes, cfg.lanes)))
    out, info = run_mxm(mp, x, w)
    check_run(mp, x, w, out, info)


def test_fp16_extremes_inf_nan_and_order():
    cfg = SMALL
    L = cfg.lanes
    mp = mxm_prog(cfg, "f16", m=4)
    x = np.zeros((4, L), np.float16)
    w = np.zeros((L, L), np.float16)
    # Row 0: 65504 * 65504 (exact in fp32) summed over 32 terms: finite, rounded per step.
    x[0, :] = 65504
    w[:, 0] = 65504
    # Column 1: inf * 0 -> NaN; column 3: inf - inf -> NaN; a NaN input -> NaN.
    w[0, 1] = np.inf
    x[1, 0] = np.inf
    w[0, 2] = 1
    x[2, 0] = np.inf
    w[0, 3], w[1, 3] = 1, 1
    x[2, 1] = -np.inf
    # Row 3: the order of the sum matters: 1 + 2^-24 + ... + 2^-24 sequentially stays 1
    # in fp32, a tree sum would not. Subnormal products: 2^-24 * 2^-24 = 2^-48.
    x[3, 0] = 1
    w[0, 4] = 1
    x[3, 1:] = np.float16(2.0 ** -12)
    w[1:, 4] = np.float16(2.0 ** -12)
    w[1:, 5] = np.float16(2.0 ** -24)
    x[3, 0] = 1
    x[1, 1] = np.nan
    w[1, 6] = 1
    # Row 0, column 7: one infinite weight among finite ones gives inf.
    w[:, 7] = 1
    w[5, 7] = np.inf
    out, info = run_mxm(mp, x, w)
    check_run(mp, x, w, out, info)
    y = out["y"]
    assert np.isfinite(y[0, 0]) and abs(y[0, 0] / (65504.0 * 65504.0 * L) - 1) < 1e-6
    assert np.isnan(y[1, 1]) and np.isnan(y[1, 6]) and np.isnan(y[2, 3])
    assert y[0, 7] == np.inf
    assert y[3, 4] == 1.0  # 1 + 31 * 2^-24 rounds back to 1 at every step
    assert y[3, 5] == np.float32(31 * 2.0 ** -36)


def test_fp16_two_passes_equal_one_sequential_sum():
    cfg = SMALL
    L = cfg.lanes
    mp = mxm_prog(cfg, "f16", m=2, passes=2)
    rng = np.random.default_rng(9)
    x = fp16_values(rng, (2, 2 * L))
    w = fp16_values(rng, (2 * L, L))
    # Make the order visible: a large first term and many small ones.
    x[:, 0] = 2048
    w[0, :] = 1
    x[:, 1:] = np.float16(2.0 ** -7)
    out, info = run_mxm(mp, x, w)
    check_run(mp, x, w, out, info)
    # ... which here differs from adding two separately summed halves.
    halves = ref_fp16(x[:, :L], w[:L]) + ref_fp16(x[:, L:], w[L:])
    assert not np.array_equal(out["y"], halves)


@pytest.mark.parametrize("dt", ["i8", "f16"])
def test_iw_transpose_installs_rows_as_columns(dt):
    # iw 1: row r of the buffer becomes column r of the array, so y = x @ W.T.
    cfg = SMALL
    mp = mxm_prog(cfg, dt, m=2, transpose=1, plane=2)
    rng = np.random.default_rng(4)
    if dt == "i8":
        x = rng.integers(-128, 128, (2, cfg.lanes), dtype=np.int8)
        w = rng.integers(-128, 128, (cfg.lanes, cfg.lanes), dtype=np.int8)
        want = ref_int8(x, w.T)
    else:
        x, w = fp16_values(rng, (2, cfg.lanes)), fp16_values(rng, (cfg.lanes, cfg.lanes))
        want = ref_fp16(x, np.ascontiguousarray(w.T))
    out, info = run_mxm(mp, x, w)
    if dt == "i8":
        np.testing.assert_array_equal(out["y"], want)
    else:
        check_f32(out["y"], want)
    assert info.cycles == mp.prog.expected_cycles()


def test_int8_partial_load_installs_zero_rows():
    # iw after only the first lw: rows 16.. of the array are zero (the buffer is cleared
    # by each iw and starts empty).
    cfg = SMALL
    mp = mxm_prog(cfg, "i8", m=2, lw_blocks=1)
    rng = np.random.default_rng(1)
    x = rng.integers(-128, 128, (2, cfg.lanes), dtype=np.int8)
    w = rng.integers(-128, 128, (cfg.lanes, cfg.lanes), dtype=np.int8)
    out, info = run_mxm(mp, x, w)
    w0 = w.copy()
    w0[16:] = 0
    np.testing.assert_array_equal(out["y"], ref_int8(x, w0))
    assert info.cycles == mp.prog.expected_cycles()


def test_int32_accumulation_wraps_across_passes():
    """(-128)(-128) * 32 lanes per pass: after 4097 passes the int32 sum wraps. A custom
    tsp_small with mxm_abc = 1 lets an acc=1 abc follow every cycle."""
    cfg = h.config("tsp_small", mxm_abc=1, addresses=8192)
    L = cfg.lanes
    n = 4097
    p = h.Prog(cfg)
    # Weights: every row -128; loaded from 16 slices (8 W, 8 E) on westward streams.
    P = cfg.mxm_position(0)
    p.tensor("input", "wa", "i8", [16, L], "W", list(range(8)), split=8)
    p.tensor("input", "wb", "i8", [16, L], "E", list(range(8)), split=8)
    p.tensor("input", "x", "i8", [n, L], "W", [0], addr=16)
    p.tensor("output", "y", "i32", [1, L], "W", [4, 5, 6, 7], addr=16 + n)
    t_lw = 3 + abs(h.mem_pos(cfg, "E", 7) - P)
    p.at("mxm0.ld", t_lw, "lw i8, s0w", "mxm_lw", repeat=1)
    for s in range(8):
        p.read("W", s, 0, f"s{s}w", t_lw, P, repeat=1)
        p.read("E", s, 0, f"s{s + 8}w", t_lw, P, repeat=1)
    t_abc = t_lw + 2 + h.lat(cfg, "mxm_iw")
    p.at("mxm0.ld", t_lw + 2, "iw 0", "mxm_iw")
    p.read("W", 0, 16, "s16w", t_abc, P, repeat=n - 1)
    p.at("mxm0.abc", t_abc, "abc s16w, 0, 0", "mxm_abc")
    for k in range(1, n):
        p.at("mxm0.abc", t_abc + k, "abc s16w, 0, 1", "mxm_abc")
    t_acc = t_abc + n - 1 + h.lat(cfg, "mxm_abc")
    p.at("mxm0.acc", t_acc, "acc 0, s0e", "mxm_acc")
    p.store("W", [4, 5, 6, 7], 0, "e", t_acc + h.lat(cfg, "mxm_acc"), P, addr=16 + n)
    ins = {"wa": np.full((16, L), -128, np.int8), "wb": np.full((16, L), -128, np.int8),
           "x": np.full((n, L), -128, np.int8)}
    out, info = h.run(p, ins)
    total = n * L * 16384
    assert total > 2**31
    np.testing.assert_array_equal(out["y"][0], np.full(L, h.wrap(np.array(total), "i32"), np.int64))
    assert info.cycles == p.expected_cycles()
    assert info.stats["macs_int8"] == n * L * L


# ---------------------------------------------------------------------------------------
# Hazards and timing faults.


def test_fp16_abc_occupies_the_plane_four_cycles():
    cfg = SMALL
    for gap in (1, 2, 3):
        mp = mxm_prog(cfg, "f16", m=2, abc_gap=gap)
        it = mp.abc[0][0]
        x = np.ones((2, cfg.lanes), np.float16)
        w = np.ones((cfg.lanes, cfg.lanes), np.float16)
        ins = weight_inputs(mp, w, cfg.lanes)
        ins["x"] = x.reshape(1, 2, cfg.lanes)
        chip, status = h.run_fault(mp.prog, ins)
        h.check_fault(chip, status, "mxm_hazard", it.cycle + gap, "mxm0.abc", mp.prog.index(it),
                      instruction=it.text, repeat=1,
                      message=f"plane 0 is busy with an fp16 activation until cycle {it.cycle + 4}")
    # Every 4th cycle is fine (that is test_matmul_every_plane); int8 may go every cycle.


def test_abc_before_weights_are_installed_is_mxm_hazard():
    cfg = SMALL
    mp = mxm_prog(cfg, "i8", m=1, abc_delay=-1)
    it = mp.abc[0][0]
    ins = weight_inputs(mp, np.zeros((cfg.lanes, cfg.lanes), np.int8), cfg.lanes)
    ins["x"] = np.zeros((1, 1, cfg.lanes), np.int8)
    chip, status = h.run_fault(mp.prog, ins)
    ready = mp.iw[0].cycle + h.lat(cfg, "mxm_iw")
    h.check_fault(chip, status, "mxm_hazard", ready - 1, "mxm0.abc", mp.prog.index(it),
                  message=f"plane 0's weights are installed on cycle {ready}")


def test_acc_before_the_slot_is_ready_is_mxm_hazard():
    cfg = SMALL
    mp = mxm_prog(cfg, "i8", m=1, acc_delay=-1)
    ins = weight_inputs(mp, np.zeros((cfg.lanes, cfg.lanes), np.int8), cfg.lanes)
    ins["x"] = np.zeros((1, 1, cfg.lanes), np.int8)
    chip, status = h.run_fault(mp.prog, ins)
    ready = mp.abc[0][0].cycle + h.lat(cfg, "mxm_abc")
    h.check_fault(chip, status, "mxm_hazard", ready - 1, "mxm0.acc", mp.prog.index(mp.acc),
                  instruction="acc 0, s0e", message=f"slot 0 of plane 0 is ready on cycle {ready}")


@pytest.mark.parametrize("delta", [-1, 1])
def test_weights_one_cycle_off_are_stream_empty(delta):
    cfg = SMALL
    mp = mxm_prog(cfg, "i8", m=1)
    it = mp.lw[0]
    q = mp.prog.shifted(it, delta)
    q = q.shifted(q.twin(mp.iw[0]), delta)  # the iw follows the lw block on its queue
    ins = weight_inputs(mp, np.zeros((cfg.lanes, cfg.lanes), np.int8), cfg.lanes)
    ins["x"] = np.zeros((1, 1, cfg.lanes), np.int8)
    chip, status = h.run_fault(q, ins)
    # Early, stream 0 is not there yet; late, the second lw finds the block already gone.
    h.check_fault(chip, status, "stream_empty", it.cycle + delta + (1 if delta > 0 else 0),
                  "mxm0.ld", q.index(q.twin(it)), instruction="lw i8, s0w",
                  message="stream s0w carries no valid data", repeat=1 if delta > 0 else 0)


@pytest.mark.parametrize("delta", [-1, 1])
def test_activation_one_cycle_off_is_stream_empty(delta):
    cfg = SMALL
    mp = mxm_prog(cfg, "f16", m=1, abc_delay=2)  # so that one cycle early is after iw + 4
    it = mp.abc[0][0]
    q = mp.prog.shifted(it, delta)
    ins = weight_inputs(mp, np.zeros((cfg.lanes, cfg.lanes), np.float16), cfg.lanes)
    ins["x"] = np.zeros((1, 1, cfg.lanes), np.float16)
    chip, status = h.run_fault(q, ins)
    h.check_fault(chip, status, "stream_empty", it.cycle + delta, "mxm0.abc", q.index(q.twin(it)),
                  instruction="abc s16w, 0, 0", message="stream s16w carries no valid data")


@pytest.mark.parametrize("dt", ["i8", "f16"])
def test_weights_from_both_hemispheres(dt):
    """On a chip with 8 MEM slices per hemisphere, the 16 weight streams of an lw come
    from 8 West and 8 East slices (all flowing west to plane 1, or east to plane 2)."""
    cfg = h.config("tsp_small", mem_slices=8)
    for plane in (1, 2):
        mp = mxm_prog(cfg, dt, m=2, plane=plane)
        assert [g.hemi for g in mp.groups] == ["W", "E"]
        rng = np.random.default_rng(plane)
        if dt == "i8":
            x = rng.integers(-128, 128, (2, cfg.lanes), dtype=np.int8)
            w = rng.integers(-128, 128, (cfg.lanes, cfg.lanes), dtype=np.int8)
        else:
            x, w = fp16_values(rng, (2, cfg.lanes)), fp16_values(rng, (cfg.lanes, cfg.lanes))
        out, info = run_mxm(mp, x, w)
        check_run(mp, x, w, out, info)


def test_lw_past_a_full_buffer_is_bad_operand():
    # Three int8 lw blocks of 16 rows before an iw: the third finds the 32-row buffer full.
    cfg = SMALL
    mp = mxm_prog(cfg, "i8", m=1, lw_blocks=3)
    it = mp.lw[0]
    ins = weight_inputs(mp, np.zeros((cfg.lanes, cfg.lanes), np.int8), cfg.lanes)
    ins["x"] = np.zeros((1, 1, cfg.lanes), np.int8)
    chip, status = h.run_fault(mp.prog, ins)
    h.check_fault(chip, status, "bad_operand", it.cycle + 2, "mxm0.ld", mp.prog.index(it),
                  instruction="lw i8, s0w", message="the weight buffer already holds 32 of 32 rows",
                  repeat=2)


# ---------------------------------------------------------------------------------------
# tsp_v1: full 320 x 320 planes.


@pytest.mark.parametrize("dt", ["i8", "f16"])
def test_tsp_v1_full_matmul(dt):
    cfg = h.config("tsp_v1")
    L = cfg.lanes
    m = 4
    mp = mxm_prog(cfg, dt, m=m, plane=1 if dt == "i8" else 3)
    assert len(mp.groups) == 1 and len(mp.groups[0].slices) == 16
    nlw = mp.lw[0].repeat + 1
    assert nlw == (20 if dt == "i8" else 40)
    rng = np.random.default_rng(320)
    if dt == "i8":
        x = rng.integers(-128, 128, (m, L), dtype=np.int8)
        w = rng.integers(-128, 128, (L, L), dtype=np.int8)
        x[0] = -128  # max magnitude: 320 * 2^14 fits int32
        w[:, :8] = -128
    else:
        x, w = fp16_values(rng, (m, L)), fp16_values(rng, (L, L), 4.0)
        x[0, :3] = [65504, -65504, 2.0 ** -24]
        w[0, :3] = [65504, 2.0 ** -24, 2.0 ** -24]
    out, info = run_mxm(mp, x, w)
    check_run(mp, x, w, out, info)
    if dt == "i8":
        assert (out["y"][0, :8] == 320 * 16384).all()


def test_tsp_v1_all_minus_128():
    cfg = h.config("tsp_v1")
    L = cfg.lanes
    mp = mxm_prog(cfg, "i8", m=1, plane=0)
    x = np.full((1, L), -128, np.int8)
    w = np.full((L, L), -128, np.int8)
    out, info = run_mxm(mp, x, w)
    assert (out["y"] == 320 * 16384).all()
    check_run(mp, x, w, out, info)
