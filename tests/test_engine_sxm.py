"""SXM: shifts, permute, broadcast, distribute, rotate and transpose through whole programs
(SRAM -> stream -> SXM -> stream -> SRAM) against numpy, with cycle counts from the
timing rule. The West SXM sits west of the West MEM slices, so its operands flow west
and its results east (and the reverse for the East SXM)."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lpu

import enginehelp as h

COVERS = {"shiftn", "shifts", "permute", "broadcast", "distribute", "rotate", "transpose", "read", "write"}

CFG = h.config("tsp_small")
LANES = CFG.lanes
DTYPES = ["i8", "i16", "i32", "f16", "f32", "bf16"]


def dirs(hemi: str):
    """(direction towards the SXM, direction away from it, the other hemisphere)."""
    return ("w", "e", "E") if hemi == "W" else ("e", "w", "W")


def sxm_prog(op: str, dt: str, rows: int, hemi: str = "W", n: int = 0, unit: int = 0,
             cfg=CFG) -> h.Prog:
    nb = h.DT_BYTES[dt]
    tdt = h.TENSOR_DT[dt]
    din, dout, other = dirs(hemi)
    sx = cfg.sxm_position(h.HEMI[hemi])
    p = h.Prog(cfg)
    x_sl = list(range(nb))
    p.tensor("input", "x", tdt, [rows, cfg.lanes], hemi, x_sl)
    p.tensor("output", "z", tdt, [rows, cfg.lanes], other, x_sl)
    t = h.lat(cfg, "mem_read") + abs(sx - h.mem_pos(cfg, hemi, 0))
    p.load(hemi, x_sl, 0, din, t, sx, rows)
    if op in ("shiftn", "shifts"):
        q, text = f"sxm.{hemi}.shift{unit}", f"{op} {dt}, s0{din}, s8{dout}, {n}"
    elif op == "permute":
        p.tensor("input", "map", "i16", [rows, cfg.lanes], hemi, [4, 5])
        p.load(hemi, [4, 5], 4, din, t, sx, rows)
        q, text = f"sxm.{hemi}.perm{unit}", f"permute {dt}, s0{din}, s4{din}, s8{dout}"
    elif op == "broadcast":
        q, text = f"sxm.{hemi}.perm{unit}", f"broadcast {dt}, s0{din}, s8{dout}"
    elif op == "distribute":
        p.tensor("input", "map", "i8", [rows, cfg.lanes], hemi, [4])
        p.load(hemi, [4], 4, din, t, sx, rows)
        q, text = f"sxm.{hemi}.dist{unit}", f"distribute {dt}, s0{din}, s4{din}, s8{dout}"
    else:
        raise ValueError(op)
    d = h.lat(cfg, h.LATENCY[op])
    p.at(q, t, text, d, repeat=rows - 1, tag="op")
    p.store(other, x_sl, 8, dout, t + d, sx, rows)
    return p


def random_bits(rng, dt, shape):
    return rng.integers(0, 1 << 8 * h.DT_BYTES[dt], shape)


def shift_ref(x: np.ndarray, n: int, north: bool) -> np.ndarray:
    out = np.zeros_like(x)
    if n == 0:
        return x.copy()
    if north:
        out[:, n:] = x[:, :-n]
    else:
        out[:, :-n] = x[:, n:]
    return out


@pytest.mark.parametrize("op", ["shiftn", "shifts"])
@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("hemi", ["W", "E"])
def test_shift(op, dt, hemi):
    rng = np.random.default_rng(zlib.crc32(f"{op}/{dt}/{hemi}".encode()))  # stable across runs
    rows = 3
    for n in (0, 1, 5, 16, LANES - 1):
        p = sxm_prog(op, dt, rows, hemi, n=n, unit=n % 4)
        x = random_bits(rng, dt, (rows, LANES))
        out, info = h.run(p, {"x": h.host_of(dt, x)})
        np.testing.assert_array_equal(h.bits_of(dt, out["z"]), shift_ref(x, n, op == "shiftn"))
        assert info.cycles == p.expected_cycles()


def test_shift_by_lanes_is_rejected_statically():
    with pytest.raises(lpu.AssemblyError, match=r"t\.s:3:5: .*shift must be below 32 lanes"):
        lpu.assemble(".chip tsp_small\n.queue sxm.W.shift0\n    shiftn i8, s0w, s1e, 32\n", "t.s")


@pytest.mark.parametrize("dt", DTYPES)
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_permute(dt, seed):
    rng = np.random.default_rng(seed)
    rows = 2
    hemi = "W" if seed % 2 else "E"
    p = sxm_prog("permute", dt, rows, hemi)
    x = random_bits(rng, dt, (rows, LANES))
    amap = np.stack([rng.permutation(LANES) for _ in range(rows)])
    out, info = h.run(p, {"x": h.host_of(dt, x), "map": amap.astype(np.int16)})
    want = np.take_along_axis(x, amap, axis=1)
    np.testing.assert_array_equal(h.bits_of(dt, out["z"]), want)
    assert info.cycles == p.expected_cycles()


def test_permute_with_a_non_permutation_is_bad_operand():
    rows = 2
    p = sxm_prog("permute", "i16", rows, "W")
    it = p.item("op")
    amap = np.stack([np.arange(LANES), np.arange(LANES)]).astype(np.int16)
    amap[1, 7] = 3  # lane 3 twice in the second map
    chip, status = h.run_fault(p, {"x": np.zeros((rows, LANES), np.int16), "map": amap})
    h.check_fault(chip, status, "bad_operand", it.cycle + 1, it.queue, p.index(it),
                  instruction=it.text, message="permute map names lane 3 twice: not a permutation",
                  repeat=1)
    amap[1, 7] = LANES  # beyond the lanes
    chip, status = h.run_fault(p, {"x": np.zeros((rows, LANES), np.int16), "map": amap})
    h.check_fault(chip, status, "bad_operand", it.cycle + 1, it.queue, p.index(it),
                  message=f"names lane {LANES}, beyond {LANES} lanes", repeat=1)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("hemi", ["W", "E"])
def test_broadcast(dt, hemi):
    rng = np.random.default_rng(zlib.crc32(f"broadcast/{dt}/{hemi}".encode()))
    rows = 3
    p = sxm_prog("broadcast", dt, rows, hemi)
    x = random_bits(rng, dt, (rows, LANES))
    out, info = h.run(p, {"x": h.host_of(dt, x)})
    np.testing.assert_array_equal(h.bits_of(dt, out["z"]), np.tile(x[:, :16], LANES // 16))
    assert info.cycles == p.expected_cycles()


@pytest.mark.parametrize("dt", DTYPES)
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_distribute(dt, seed):
    rng = np.random.default_rng(seed)
    rows = 2
    hemi = "E" if seed % 2 else "W"
    p = sxm_prog("distribute", dt, rows, hemi, unit=seed % 4)
    x = random_bits(rng, dt, (rows, LANES))
    amap = rng.integers(0, 20, (rows, LANES))  # >= 16 gives 0
    amap[:, :3] = [0, 15, 16]
    amap[:, -1] = 255
    out, info = h.run(p, {"x": h.host_of(dt, x), "map": amap.astype(np.uint8).view(np.int8)})
    lane = np.arange(LANES)[None, :]
    src = (lane // 16) * 16 + np.minimum(amap, 15)
    want = np.where(amap < 16, np.take_along_axis(x, src, axis=1), 0)
    np.testing.assert_array_equal(h.bits_of(dt, out["z"]), want)
    assert info.cycles == p.expected_cycles()


@pytest.mark.parametrize("op", ["shiftn", "permute", "distribute"])
@pytest.mark.parametrize("delta", [-1, 1])
def test_sxm_operand_off_by_one_cycle_is_stream_empty(op, delta):
    p = sxm_prog(op, "i16", 1, "W")
    it = p.item("op")
    q = p.shifted(it, delta)
    ins = {"x": np.zeros((1, LANES), np.int16)}
    if op == "permute":
        ins["map"] = np.arange(LANES, dtype=np.int16)[None, :]
    if op == "distribute":
        ins["map"] = np.zeros((1, LANES), np.int8)
    chip, status = h.run_fault(q, ins)
    h.check_fault(chip, status, "stream_empty", it.cycle + delta, it.queue, q.index(q.twin(it)),
                  instruction=it.text, message="stream s0w carries no valid data")


# ---------------------------------------------------------------------------------------
# 16-stream operations: the 16 operand streams come from 8 West and 8 East slices (all
# flowing west to the West SXM, the East ones across the VXM) and the 16 results go back
# east to 8 West and 8 East slices.


def sixteen_prog(op: str, rows: int, n: int = 4, cfg=CFG) -> h.Prog:
    sx = cfg.sxm_position(0)
    p = h.Prog(cfg)
    ins = 16 if op == "transpose" else n
    outs = 16 if op == "transpose" else n * n
    w_in = min(ins, 8)
    p.tensor("input", "xa", "i8", [w_in * rows, cfg.lanes], "W", list(range(w_in)), split=w_in)
    if ins > 8:
        p.tensor("input", "xb", "i8", [(ins - 8) * rows, cfg.lanes], "E", list(range(ins - 8)), split=ins - 8)
    w_out = min(outs, 8)
    p.tensor("output", "ya", "i8", [w_out * rows, cfg.lanes], "W", list(range(w_out)), addr=16, split=w_out)
    if outs > 8:
        p.tensor("output", "yb", "i8", [(outs - 8) * rows, cfg.lanes], "E", list(range(outs - 8)),
                 addr=16, split=outs - 8)
    t = h.lat(cfg, "mem_read") + abs(sx - h.mem_pos(cfg, "E", 7))
    for j in range(ins):
        hemi, s = ("W", j) if j < 8 else ("E", j - 8)
        p.read(hemi, s, 0, f"s{j}w", t, sx, rows - 1)
    d = h.lat(cfg, h.LATENCY[op])
    if op == "transpose":
        p.at("sxm.W.trans1", t, "transpose s0w, s0e", d, repeat=rows - 1, tag="op")
    else:
        p.at("sxm.W.rot0", t, f"rotate s0w, s0e, {n}", d, repeat=rows - 1, tag="op")
    for i in range(outs):
        hemi, s = ("W", i) if i < 8 else ("E", i - 8)
        p.write(hemi, s, 16, f"s{i}e", t + d, sx, rows - 1)
    return p


def split_blocks(xa, xb, per_w, total, rows):
    """Block b, stream j: xa[per_w*b + j] (j < 8), xb[(total-8)*b + j - 8] (j >= 8)."""
    blocks = []
    for b in range(rows):
        rows_ = [xa[per_w * b + j] for j in range(per_w)]
        if total > 8:
            rows_ += [xb[(total - 8) * b + j] for j in range(total - 8)]
        blocks.append(np.stack(rows_))
    return blocks


def test_transpose():
    rows = 2
    p = sixteen_prog("transpose", rows)
    rng = np.random.default_rng(11)
    xa = rng.integers(-128, 128, (8 * rows, LANES), dtype=np.int8)
    xb = rng.integers(-128, 128, (8 * rows, LANES), dtype=np.int8)
    out, info = h.run(p, {"xa": xa, "xb": xb})
    got = split_blocks(out["ya"], out["yb"], 8, 16, rows)
    for b, x in enumerate(split_blocks(xa, xb, 8, 16, rows)):
        g = LANES // 16
        want = x.reshape(16, g, 16).transpose(2, 1, 0).reshape(16, LANES)
        np.testing.assert_array_equal(got[b], want)
        # Transposing twice is the identity.
        np.testing.assert_array_equal(want.reshape(16, g, 16).transpose(2, 1, 0).reshape(16, LANES), x)
    assert info.cycles == p.expected_cycles()


@pytest.mark.parametrize("n", [3, 4])
def test_rotate(n):
    rows = 2
    p = sixteen_prog("rotate", rows, n=n)
    rng = np.random.default_rng(n)
    xa = rng.integers(-128, 128, (n * rows, LANES), dtype=np.int8)
    out, info = h.run(p, {"xa": xa})
    outs = n * n
    got = split_blocks(out["ya"], out.get("yb"), min(outs, 8), outs, rows)
    for b, x in enumerate(split_blocks(xa, None, n, n, rows)):
        for i in range(n):
            for j in range(n):
                # stream dst+i*n+j = stream j rotated down (towards lane 0) by i lanes
                np.testing.assert_array_equal(got[b][i * n + j], np.roll(x[j], -i), err_msg=f"{i},{j}")
    assert info.cycles == p.expected_cycles()


def test_rotate_and_transpose_groups_are_checked_statically():
    src = (".chip tsp_small\n.queue sxm.W.rot0\n    rotate s0w, s20e, 4\n    rotate s0w, s0e, 2\n"
           ".queue sxm.W.trans0\n    transpose s8w, s0e\n")
    with pytest.raises(lpu.AssemblyError) as e:
        lpu.assemble(src, "t.s")
    assert [(x.line, x.col) for x in e.value.errors] == [(3, 5), (4, 5), (6, 5)]
