"""VXM: every operation and every type it accepts, through the whole chip
(SRAM -> streams -> VXM -> streams -> SRAM), against independent references of
docs/numerics.md, with cycle counts from the timing rule of docs/timing.md.

Multi-byte values travel on stream groups with each byte plane in its own MEM slice
(an fp32 tensor uses slices=[0,1,2,3]); every read is timed from its slice's position so
that all planes of both operands meet at the VXM on the same cycle.
"""

from __future__ import annotations

import math
import re
import zlib
from functools import lru_cache

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lpu
from lpu import isa

import enginehelp as h
from enginehelp import op_text, vxm_prog

COVERS = {i.mnemonic for i in isa.instructions("VXM")}
# Also covered here: read and write carry every operand (timing checked in each test).
COVERS |= {"read", "write", "repeat", "nop"}

CFG = h.config("tsp_small")
LANES = CFG.lanes
ROWS_EDGE = 16
ROWS_PROP = 2
PROPS = settings(max_examples=200, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@lru_cache(maxsize=None)
def runner(op: str, dt: str, rows: int, to: str = "", sat: int = 0):
    p = vxm_prog(op, dt, rows, to, sat)
    return lpu.Runner(p.assemble()), p


def run_bits(op: str, dt: str, a_bits: np.ndarray, b_bits: np.ndarray = None, to: str = "",
             sat: int = 0, rows: int = ROWS_EDGE) -> np.ndarray:
    """Run op on bit patterns (shape [rows, LANES]); return result bits; check cycles."""
    r, p = runner(op, dt, rows, to, sat)
    ins = {"a": h.host_of(dt, a_bits)}
    if b_bits is not None:
        ins["b"] = h.host_of(dt, b_bits)
    out = r(**ins)
    assert r.last.cycles == p.expected_cycles(), (r.last.cycles, p.expected_cycles())
    return h.bits_of(to or dt, out["z"])


def check(op: str, dt: str, a: np.ndarray, b: np.ndarray, got: np.ndarray) -> None:
    # exp, exp2, tanh: at most 1 ulp of fp32 from the correctly rounded value (mpmath),
    # then rounded once to dt; rsqrt: exactly 1.0f / sqrtf(x); specials exact.
    if op in h.SPECIAL:
        h.check_special(op, dt, a, got)
        return
    want = h.ref_vxm(op, dt, a, b)
    h.assert_bits_equal(dt, got, want, [a] if b is None else [a, b],
                        canonical_nan=op not in h.MOVES_BITS, what=op)


def cases():
    for ins in isa.instructions("VXM"):
        if ins.mnemonic == "cast":
            continue
        for dt in ins.dtypes:
            yield ins.mnemonic, dt


CASES = list(cases())


# ---------------------------------------------------------------------------------------
# Deterministic: every (op, type) on all pairs of edge values plus random patterns.


@pytest.mark.parametrize("op,dt", CASES, ids=[f"{o}-{d}" for o, d in CASES])
def test_op_on_edge_values(op, dt):
    rng = np.random.default_rng(zlib.crc32(f"{op}/{dt}".encode()))  # stable across runs
    edges = h.edge_bits(dt)
    n = ROWS_EDGE * LANES
    if op in h.BINARY:
        ea, eb = h.pairs(edges)
        if op in ("shl", "shr"):
            bits = 8 * h.DT_BYTES[dt]
            counts = [c & ((1 << bits) - 1) for c in (0, 1, bits - 1, bits, bits + 1, -1, 255, 3)]
            ea, eb = h.pairs(edges)
            eb = np.array(counts * (len(ea) // len(counts) + 1))[: len(ea)]
        ea, eb = ea[:n], eb[:n]
        a = h.pad_rows(ea, LANES, ROWS_EDGE, rng, dt)
        b = h.pad_rows(eb, LANES, ROWS_EDGE, rng, dt)
    else:
        a = h.pad_rows(np.array(edges), LANES, ROWS_EDGE, rng, dt)
        b = None
    got = run_bits(op, dt, a, b)
    check(op, dt, a, b, got)


@pytest.mark.parametrize("op,dt", [("add", "i8"), ("mul", "f32"), ("exp", "f16"), ("max", "i32"),
                                   ("not", "i16"), ("copy", "bf16")])
@pytest.mark.parametrize("delta", [-1, 1])
def test_operand_one_cycle_early_or_late_is_stream_empty(op, dt, delta):
    p = vxm_prog(op, dt, 1)
    it = p.item("op")
    q = p.shifted(it, delta)
    moved = q.twin(it)
    a = np.zeros((1, LANES), h.HOST[dt])
    ins = {"a": a, "b": a} if op in h.BINARY else {"a": a}
    chip, status = h.run_fault(q, ins)
    h.check_fault(chip, status, "stream_empty", it.cycle + delta, it.queue, q.index(moved),
                  instruction=it.text, message=f"stream s0e carries no valid data at position {CFG.vxm_position()}")


# ---------------------------------------------------------------------------------------
# Property tests: hypothesis values of every accepted type.


def value_strategy(dt: str):
    if dt in h.INT_DT:
        lo, hi = h.int_range(dt)
        return st.integers(lo, hi).map(lambda v, m=(1 << 8 * h.DT_BYTES[dt]) - 1: v & m)
    if dt == "bf16":
        return st.integers(0, 0xFFFF)
    width = 16 if dt == "f16" else 32
    host = np.float16 if dt == "f16" else np.float32
    floats = st.floats(width=width, allow_nan=True, allow_infinity=True, allow_subnormal=True)
    edge = st.sampled_from(h.edge_bits(dt))
    return st.one_of(floats.map(lambda v: int(h.bits_of(dt, np.array([v], host))[0])), edge)


def fill(values, rows: int) -> np.ndarray:
    v = np.asarray(values, dtype=np.int64)
    n = rows * LANES
    return np.resize(v, n).reshape(rows, LANES)


def _prop(op: str, data) -> None:
    dt = data.draw(st.sampled_from(isa.instruction(op).dtypes), label="dt")
    vs = value_strategy(dt)
    if op == "shl" or op == "shr":
        bits = 8 * h.DT_BYTES[dt]
        counts = st.one_of(st.integers(-2, bits + 2), vs.map(lambda v: v)).map(
            lambda v, m=(1 << bits) - 1: v & m)
        pairs = data.draw(st.lists(st.tuples(vs, counts), min_size=1, max_size=ROWS_PROP * LANES))
    elif op in h.BINARY:
        pairs = data.draw(st.lists(st.tuples(vs, vs), min_size=1, max_size=ROWS_PROP * LANES))
    else:
        pairs = [(v, 0) for v in data.draw(st.lists(vs, min_size=1, max_size=ROWS_PROP * LANES))]
    a = fill([x for x, _ in pairs], ROWS_PROP)
    b = fill([y for _, y in pairs], ROWS_PROP) if op in h.BINARY else None
    got = run_bits(op, dt, a, b, rows=ROWS_PROP)
    check(op, dt, a, b, got)


VXM_OPS = [i.mnemonic for i in isa.instructions("VXM") if i.mnemonic != "cast"]


@pytest.mark.parametrize("op", VXM_OPS)
@PROPS
@given(data=st.data())
def test_op_property(op, data):
    _prop(op, data)


# ---------------------------------------------------------------------------------------
# Casts: every (from, to) pair and both sat settings.

CAST_DT = list(isa.instruction("cast").dtypes)
CAST_CASES = [(f, t, s) for f in CAST_DT for t in CAST_DT for s in (0, 1)]


@pytest.mark.parametrize("frm,to,sat", CAST_CASES, ids=[f"{f}-{t}-sat{s}" for f, t, s in CAST_CASES])
def test_cast_on_edge_values(frm, to, sat):
    rng = np.random.default_rng(7)
    edges = h.edge_bits(frm)
    if frm in h.INT_DT and to in h.FLOAT_DT + ("bf16",):
        # Integers that are ties or overflow in the target float.
        lo, hi = h.int_range(frm)
        extra = [v for v in (65504, 65505, 65519, 65520, 65535, 2049, 2051, 4097, 16777217,
                             16777219, 257, 259, -65520, -2049) if lo <= v <= hi]
        edges = sorted(set(edges) | {v & ((1 << 8 * h.DT_BYTES[frm]) - 1) for v in extra})
    a = h.pad_rows(np.array(edges), LANES, ROWS_EDGE, rng, frm)
    got = run_bits("cast", frm, a, to=to, sat=sat)
    want = h.ref_cast(frm, to, a, bool(sat))
    h.assert_bits_equal(to, got, want, [a], what=f"cast {frm}->{to} sat={sat}")


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_cast_property(data):
    frm = data.draw(st.sampled_from(CAST_DT), label="from")
    to = data.draw(st.sampled_from(CAST_DT), label="to")
    sat = data.draw(st.sampled_from([0, 1]), label="sat")
    vs = value_strategy(frm)
    if frm in h.INT_DT:
        # Also numbers near float ties and the fp16 range.
        lo, hi = h.int_range(frm)
        m = (1 << 8 * h.DT_BYTES[frm]) - 1
        near = st.integers(-70000, 70000).filter(lambda v: lo <= v <= hi).map(lambda v: v & m)
        vs = st.one_of(vs, near)
    vals = data.draw(st.lists(vs, min_size=1, max_size=ROWS_PROP * LANES))
    a = fill(vals, ROWS_PROP)
    got = run_bits("cast", frm, a, to=to, sat=sat, rows=ROWS_PROP)
    h.assert_bits_equal(to, got, h.ref_cast(frm, to, a, bool(sat)), [a], what=f"cast {frm}->{to} sat={sat}")


def test_cast_examples_from_the_doc():
    # 2.5 -> 2, 3.5 -> 4, NaN -> 0, overflow clamps (docs/numerics.md).
    vals = np.array([2.5, 3.5, -2.5, np.nan, 1e9, -1e9, np.inf, -np.inf, 127.5, -128.5], np.float32)
    a = h.pad_rows(h.bits_of("f32", vals), LANES, ROWS_EDGE, np.random.default_rng(0), "f32")
    got = run_bits("cast", "f32", a, to="i8", sat=0)[0, : vals.size]
    assert list(h.value_of("i8", got)) == [2, 4, -2, 0, 127, -128, 127, -128, 127, -128]


def test_reference_self_consistency():
    """The two references of rounding (numpy's and exact rationals) agree on fp16/fp32."""
    from fractions import Fraction

    rng = np.random.default_rng(3)
    x = rng.standard_normal(3000) * np.exp2(rng.integers(-160, 140, 3000).astype(float))
    x = np.concatenate([x, [65520.0, 65519.99, 2.0 ** -25, 3 * 2.0 ** -26, 2.0 ** 128 * (1 - 2.0 ** -25)]])
    for dt in ("f16", "f32"):
        a = h.to_float_bits(dt, x)
        b = np.array([h.float_bits(dt, h.round_exact(Fraction(v), dt)) if v else 0 for v in x])
        assert np.array_equal(a, b), dt


# ---------------------------------------------------------------------------------------
# Transcendentals: special inputs are exact.


@pytest.mark.parametrize("dt", ["f16", "f32"])
def test_transcendental_special_inputs(dt):
    inf, nan = math.inf, math.nan
    cases = {
        "exp": [(-inf, 0.0), (0.0, 1.0), (-0.0, 1.0), (inf, inf), (nan, nan)],
        "exp2": [(-inf, 0.0), (0.0, 1.0), (1.0, 2.0), (-1.0, 0.5), (10.0, 1024.0), (inf, inf), (nan, nan)],
        "tanh": [(0.0, 0.0), (-0.0, -0.0), (inf, 1.0), (-inf, -1.0), (nan, nan)],
        "rsqrt": [(0.0, inf), (-0.0, -inf), (-1.0, nan), (-inf, nan), (inf, 0.0), (4.0, 0.5),
                  (0.25, 2.0), (nan, nan)],
    }
    for op, pairs in cases.items():
        xs = np.array([x for x, _ in pairs], h.HOST[dt])
        a = h.pad_rows(h.bits_of(dt, xs), LANES, ROWS_EDGE, np.random.default_rng(0), dt)
        got = run_bits(op, dt, a)[0, : len(pairs)]
        for (x, want), g in zip(pairs, got):
            wb = h.CANONICAL_NAN[dt] if math.isnan(want) else int(h.bits_of(dt, np.array([want], h.HOST[dt]))[0])
            assert int(g) == wb, f"{op}({x}) in {dt}: got {hex(int(g))}, want {hex(wb)}"


def test_fp16_rounding_and_overflow_examples():
    # 2048 + 1 is a tie -> 2048; 2048 + 3 -> 2052; 65504 + 16 = 65520 ties up to inf;
    # 300 * 300 overflows; the smallest subnormals round to even.
    f = lambda *v: h.bits_of("f16", np.array(v, np.float16))  # noqa: E731
    a = f(2048, 2048, 65504, 300, 2.0 ** -24, -65504, 2.0 ** -24)
    b = f(1, 3, 16, 300, 2.0 ** -24, -8, 0.5)
    for op, want in (("add", [2048, 2052, np.inf, 600, 2.0 ** -23, -65504, 0.5]),
                     ("mul", [2048, 6144, np.inf, np.inf, 0.0, np.inf, 0.0])):
        A = h.pad_rows(a, LANES, ROWS_EDGE, np.random.default_rng(0), "f16")
        B = h.pad_rows(b, LANES, ROWS_EDGE, np.random.default_rng(1), "f16")
        got = run_bits(op, "f16", A, B)[0, : a.size]
        np.testing.assert_array_equal(h.value_of("f16", got), np.array(want, np.float64), err_msg=op)


# ---------------------------------------------------------------------------------------
# Chaining: y = relu(a * x + b) in fp32 on three ALUs, no MEM in between.


def chain_prog(delay: int = 0, rows: int = 4, cfg=CFG) -> h.Prog:
    p = h.Prog(cfg)
    vx = cfg.vxm_position()
    for name, sl in (("a", [0, 1, 2, 3]), ("x", [4, 5, 6, 7])):
        p.tensor("input", name, "f32", [rows, cfg.lanes], "W", sl)
    p.tensor("input", "b", "f32", [rows, cfg.lanes], "E", [0, 1, 2, 3])
    p.tensor("output", "y", "f32", [rows, cfg.lanes], "E", [4, 5, 6, 7])
    t_mul = h.lat(cfg, "mem_read") + abs(vx - h.mem_pos(cfg, "W", 7))
    p.load("W", [0, 1, 2, 3], 0, "e", t_mul, vx, rows)
    p.load("W", [4, 5, 6, 7], 4, "e", t_mul, vx, rows)
    p.at("vxm.alu3", t_mul, "mul f32, s0e, s4e, -", "vxm_mul", rows - 1, tag="mul")
    t_add = t_mul + h.lat(cfg, "vxm_mul")  # exactly the cycle ALU 3's result exists
    p.load("E", [0, 1, 2, 3], 8, "w", t_add, vx, rows)  # b comes westward from E0-3
    p.at("vxm.alu6", t_add + delay, "add f32, alu3, s8w, -", "vxm_basic", rows - 1, tag="add")
    t_relu = t_add + h.lat(cfg, "vxm_basic")
    p.at("vxm.alu7", t_relu, "relu f32, alu6, s12e", "vxm_basic", rows - 1, tag="relu")
    p.store("E", [4, 5, 6, 7], 12, "e", t_relu + h.lat(cfg, "vxm_basic"), vx, rows)
    return p


def test_chain_relu_axpb_fp32():
    p = chain_prog()
    rng = np.random.default_rng(5)
    a, x, b = (rng.standard_normal((4, LANES)).astype(np.float32) for _ in range(3))
    a[0, :4] = [np.inf, 0, 1e38, -0.0]
    x[0, :4] = [0, 1, 1e38, 1]
    out, info = h.run(p, {"a": a, "x": x, "b": b})
    with np.errstate(invalid="ignore"):  # inf * 0
        ax = h.to_float_bits("f32", a.astype(np.float64) * x.astype(np.float64))
        axb = h.to_float_bits("f32", h.value_of("f32", ax) + b.astype(np.float64))
    want = h.ref_vxm("relu", "f32", axb)
    h.assert_bits_equal("f32", h.bits_of("f32", out["y"]), want, what="relu(a*x+b)")
    assert info.cycles == p.expected_cycles()
    stats = info.stats
    assert stats["sram_reads"] == 4 * 12 and stats["sram_writes"] == 4 * 4
    assert stats["units"]["VXM"]["issued"] == 12


@pytest.mark.parametrize("delta", [-1, 1])
def test_chain_consumed_off_cycle_is_stream_empty(delta):
    p = chain_prog(delay=delta, rows=1)
    it = p.item("add")
    chip, status = h.run_fault(p, {k: np.zeros((1, LANES), np.float32) for k in "axb"})
    # Early, ALU 3's result does not exist yet; late, it is gone (rule 6: chaining works
    # on exactly the cycle the result is produced). The chained operand is read first.
    msg = "ALU 3 has no result on this cycle to chain from"
    h.check_fault(chip, status, "stream_empty", it.cycle, "vxm.alu6", p.index(it),
                  instruction="add f32, alu3, s8w, -", message=msg)


def test_chain_of_another_width_is_bad_operand():
    # ALU 3's fp32 product (4 bytes per lane) chained into an int8 operation (1 byte).
    p = h.Prog(CFG)
    vx = CFG.vxm_position()
    for name, sl in (("a", [0, 1, 2, 3]), ("x", [4, 5, 6, 7])):
        p.tensor("input", name, "f32", [1, CFG.lanes], "W", sl)
    t_mul = h.lat(CFG, "mem_read") + abs(vx - h.mem_pos(CFG, "W", 7))
    p.load("W", [0, 1, 2, 3], 0, "e", t_mul, vx, 1)
    p.load("W", [4, 5, 6, 7], 4, "e", t_mul, vx, 1)
    p.at("vxm.alu3", t_mul, "mul f32, s0e, s4e, -", "vxm_mul")
    it = p.at("vxm.alu6", t_mul + h.lat(CFG, "vxm_mul"), "abs i8, alu3, s12e", "vxm_basic")
    chip, status = h.run_fault(p, {k: np.ones((1, LANES), np.float32) for k in "ax"})
    h.check_fault(chip, status, "bad_operand", it.cycle, "vxm.alu6", p.index(it),
                  instruction="abs i8, alu3, s12e",
                  message="ALU 3 produced a 4-byte value; this operand needs 1 bytes")


def test_chain_int8_two_results_in_flight():
    # ALU 0 multiplies every cycle (latency 3); ALU 1 adds each product to w as it appears:
    # three results of ALU 0 are in flight at once and each is chained on its own cycle.
    p = h.Prog(CFG)
    vx = CFG.vxm_position()
    rows = 6
    p.tensor("input", "x", "i8", [rows, LANES], "W", [0])
    p.tensor("input", "y", "i8", [rows, LANES], "W", [1])
    p.tensor("input", "w", "i8", [rows, LANES], "W", [2])
    p.tensor("output", "z", "i8", [rows, LANES], "E", [0])
    t0 = h.lat(CFG, "mem_read") + 2
    p.load("W", [0], 0, "e", t0, vx, rows)
    p.load("W", [1], 1, "e", t0, vx, rows)
    p.at("vxm.alu0", t0, "mul i8, s0e, s1e, -", "vxm_mul", rows - 1)
    t1 = t0 + h.lat(CFG, "vxm_mul")
    p.load("W", [2], 2, "e", t1, vx, rows)
    p.at("vxm.alu1", t1, "add i8, alu0, s2e, s3e", "vxm_basic", rows - 1)
    p.store("E", [0], 3, "e", t1 + h.lat(CFG, "vxm_basic"), vx, rows)
    rng = np.random.default_rng(2)
    x, y, w = (rng.integers(-128, 128, (rows, LANES), dtype=np.int8) for _ in range(3))
    out, info = h.run(p, {"x": x, "y": y, "w": w})
    want = h.wrap(x.astype(np.int64) * y + w, "i8").astype(np.int8)
    np.testing.assert_array_equal(out["z"], want)
    assert info.cycles == p.expected_cycles()


# ---------------------------------------------------------------------------------------
# Static checks by the assembler.


@pytest.mark.parametrize("op", sorted(h.LARGE_ONLY))
def test_large_alu_ops_rejected_on_small_alus(op):
    small = [a for a in range(16) if a not in h.LARGE_ALUS]
    assert sorted(a for a in range(16) if a not in small) == sorted(isa.LARGE_ALUS)
    dt = "f32"
    txt = op_text(op, dt, "i32") if op == "cast" else op_text(op, dt)
    src = f".chip tsp_small\n.queue vxm.alu{small[2]}\n    nop 3\n    {txt}\n"
    with pytest.raises(lpu.AssemblyError) as e:
        lpu.assemble(src, "prog.s")
    msg = str(e.value)
    assert re.search(r"prog\.s:4:5: .*large ALU", msg), msg
    (err,) = e.value.errors
    assert (err.line, err.col) == (4, 5)
    # The same line on a large ALU assembles.
    lpu.assemble(src.replace(f"alu{small[2]}", "alu2"), "prog.s")


def test_bf16_arithmetic_and_float_bitwise_are_rejected():
    src = ".chip tsp_small\n.queue vxm.alu0\n    add bf16, s0e, s2e, s4e\n    xor f32, s0e, s4e, s8e\n"
    with pytest.raises(lpu.AssemblyError) as e:
        lpu.assemble(src, "t.s")
    assert [(x.line, x.col) for x in e.value.errors] == [(3, 5), (4, 5)]


def test_misaligned_group_is_rejected():
    src = ".chip tsp_small\n.queue vxm.alu1\n    add f32, s2e, s4e, s8e\n"
    with pytest.raises(lpu.AssemblyError, match=r"t\.s:3:\d+: .*multiple of 4"):
        lpu.assemble(src, "t.s")
