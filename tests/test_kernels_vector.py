"""Lane reductions and per-vector kernels against numpy, with stated error bounds."""

from __future__ import annotations

import math

import numpy as np
import pytest

import lpu
from lpu.builder import Builder
from lpu.kernels import vector as V
from lpu.kernels.reduce import allreduce, constants_for

CONFIGS = ["tsp_small", "tsp_v1"]
#: Lane reductions also on 288 lanes (18 superlanes), where the radix-8 tree's lane 0
#: would take in lanes from outside the vector and max/min use the radix-4 tree with
#: neutral fills instead.
REDUCE_CONFIGS = {"tsp_small": {}, "tsp_v1": {}, "288-lanes": dict(superlanes=18)}


def reduce_config(name: str) -> lpu.ChipConfig:
    return lpu.ChipConfig("tsp_v1" if name == "288-lanes" else name, **REDUCE_CONFIGS[name])


def tree_sum(x: np.ndarray, lanes: int) -> np.float32:
    """The allreduce's addition order (whatever the tree's radix): the pairwise sum of
    the lanes in order, zero padded to a power of two, in fp32."""
    s = np.zeros(1 << (lanes - 1).bit_length(), np.float32)
    s[: len(x)] = x
    while len(s) > 1:
        s = (s[0::2] + s[1::2]).astype(np.float32)
    return s[0]


def run_vector_kernel(cfg, build, out_shape=None, out_dtype="float32", **inputs):
    b = Builder(cfg)
    ts = {k: b.input(k, str(v.dtype), v.shape, hemi="W") for k, v in inputs.items()}
    first = next(iter(inputs.values()))
    out = b.output("y", out_dtype, out_shape or first.shape, hemi="E")
    build(b, ts, out)
    run = lpu.Runner(b.build())
    return run(**inputs)["y"], run.last


@pytest.mark.parametrize("cname", list(REDUCE_CONFIGS))
@pytest.mark.parametrize("op", ["add", "max", "min"])
def test_allreduce(cname, op):
    cfg = reduce_config(cname)
    lanes = cfg.lanes
    for valid in (None, lanes - 3):
        b = Builder(cfg)
        x = b.input("x", "float32", (lanes,), hemi="W")
        y = b.output("y", "float32", (lanes,), hemi="E")
        t = b.earliest([x] + constants_for(b, op, "float32", valid), b.vxm_pos)
        b.write(allreduce(b, b.read(x, stream=0, arrive=(b.vxm_pos, t)), op, valid=valid, stream=0), y)
        xv = np.random.default_rng(lanes).standard_normal(lanes).astype(np.float32) - 3
        out = lpu.Runner(b.build())(x=xv)["y"]
        n = valid or lanes
        want = tree_sum(xv[:n], lanes) if op == "add" else getattr(xv[:n], op)()
        np.testing.assert_array_equal(out, np.full(lanes, want, np.float32))


@pytest.mark.parametrize("cname", list(REDUCE_CONFIGS))
@pytest.mark.parametrize("op", ["add", "max"])
@pytest.mark.parametrize("count,stride", [(5, 1), (3, 2)])
def test_allreduce_of_a_series(cname, op, count, stride):
    """Several vectors through the tree together: each gets its own total, in every lane."""
    cfg = reduce_config(cname)
    lanes = cfg.lanes
    valid = lanes - 7
    b = Builder(cfg)
    x = b.input("x", "float32", (count, lanes), hemi="W")
    y = b.output("y", "float32", (count, lanes), hemi="E")
    t = b.earliest([x] + constants_for(b, op, "float32", valid, count), b.vxm_pos)
    xs = b.read(x, stream=0, arrive=(b.vxm_pos, t), stride=stride)
    b.write(allreduce(b, xs, op, valid=valid, stream=0), y)
    rng = np.random.default_rng(count * lanes)
    # Mostly negative, so a zero shifted in where the neutral element belongs shows.
    xv = ((rng.standard_normal((count, lanes)) - 3) * np.arange(1, count + 1)[:, None]).astype(np.float32)
    out = lpu.Runner(b.build())(x=xv)["y"]
    for i in range(count):
        want = tree_sum(xv[i, :valid], lanes) if op == "add" else xv[i, :valid].max()
        np.testing.assert_array_equal(out[i], np.full(lanes, want, np.float32), err_msg=f"vector {i}")


@pytest.mark.parametrize("cname", CONFIGS)
def test_pointwise_activations(cname):
    cfg = lpu.ChipConfig(cname)
    rng = np.random.default_rng(4)
    for n in (cfg.lanes - 5, cfg.lanes + 7):  # one tile with padding, and two tiles
        x = (rng.standard_normal(n) * 3).astype(np.float32)
        u = rng.standard_normal(n).astype(np.float32)
        xd = x.astype(np.float64)
        sig = 1 / (1 + np.exp(-xd))
        # Bound: exp and rsqrt are within 1 ulp of fp32, then a few fp32 roundings:
        # |error| <= 4e-6 |ref| + 1e-7.
        def close(got, ref):
            assert np.all(np.abs(got - ref) <= 4e-6 * np.abs(ref) + 1e-7), np.abs(got - ref).max()

        got, _ = run_vector_kernel(cfg, lambda b, t, o: V.silu(b, t["x"], o), x=x)
        close(got, xd * sig)
        got, _ = run_vector_kernel(cfg, lambda b, t, o: V.swiglu(b, t["x"], t["u"], o), x=x, u=u)
        close(got, xd * sig * u)
        got, _ = run_vector_kernel(cfg, lambda b, t, o: V.gelu(b, t["x"], o), x=x)
        close(got, 0.5 * xd * (1 + np.tanh(math.sqrt(2 / math.pi) * (xd + 0.044715 * xd**3))))
        got, _ = run_vector_kernel(cfg, lambda b, t, o: V.binary(b, "mul", t["x"], t["u"], o), x=x, u=u)
        np.testing.assert_array_equal(got, x * u)


@pytest.mark.parametrize("cname", CONFIGS)
def test_rmsnorm(cname):
    cfg = lpu.ChipConfig(cname)
    rng = np.random.default_rng(6)
    for n in (cfg.lanes - 5, cfg.lanes + 7):
        x = (rng.standard_normal(n) * 4).astype(np.float32)
        g = rng.standard_normal(n).astype(np.float32)
        got, _ = run_vector_kernel(cfg, lambda b, t, o: V.rmsnorm(b, t["x"], t["g"], o, eps=1e-5), x=x, g=g)
        ref = x / np.sqrt((x.astype(np.float64) ** 2).mean() + 1e-5) * g
        # The sum is fp32 in tree order (relative error <= levels * 2^-24), then rsqrt
        # and two products: 2e-6 relative covers it.
        assert np.all(np.abs(got - ref) <= 2e-6 * np.abs(ref) + 1e-7)
        got16, _ = run_vector_kernel(cfg, lambda b, t, o: V.rmsnorm(b, t["x"], t["g"], o), out_dtype="float16", x=x, g=g)
        np.testing.assert_array_equal(got16, got.astype(np.float16))


@pytest.mark.parametrize("cname", CONFIGS)
def test_softmax_rows(cname):
    cfg = lpu.ChipConfig(cname)
    n = cfg.lanes - 3
    x = (np.random.default_rng(8).standard_normal((3, n)) * 5).astype(np.float32)
    got, _ = run_vector_kernel(cfg, lambda b, t, o: V.softmax(b, t["x"], o), x=x)
    e = np.exp(x.astype(np.float64) - x.max(1, keepdims=True))
    ref = e / e.sum(1, keepdims=True)
    assert np.all(np.abs(got - ref) <= 2e-6 * ref + 1e-9)
    np.testing.assert_allclose(got.sum(1), 1, rtol=1e-5)


@pytest.mark.parametrize("cname", CONFIGS)
def test_argmax_takes_the_first_maximum(cname):
    cfg = lpu.ChipConfig(cname)
    rng = np.random.default_rng(9)
    for n in (cfg.lanes - 5, 2 * cfg.lanes + 7):
        x = (rng.standard_normal(n) - 10).astype(np.float32)  # all negative: padding must not win
        for spots in ([n - 1], [n // 2, n - 1], [3, 4]):
            xx = x.copy()
            xx[spots] = 7.5
            got, _ = run_vector_kernel(cfg, lambda b, t, o: V.argmax(b, t["x"], o), out_shape=(1,),
                                       out_dtype="int32", x=xx)
            assert got[0] == int(np.argmax(xx)) == spots[0]


@pytest.mark.parametrize("cname,n,dtype,valid", [("tsp_small", 20, "float32", None), ("tsp_small", 100, "float16", None),
                                                 ("tsp_v1", 700, "float32", None), ("tsp_v1", 640, "float16", 16),
                                                 ("tsp_small", 8, "float32", "zeros")])
def test_quantize_is_the_documented_fp32_steps(cname, n, dtype, valid):
    cfg = lpu.ChipConfig(cname)
    L = cfg.lanes
    b = Builder(cfg)
    x = b.input("x", dtype, (n,), hemi="E")
    xq = b.output("xq", "int8", (n,), hemi="E")
    sc = b.output("scale", "float32", (1, L), hemi="E")
    V.quantize(b, x, xq, sc, valid=valid if isinstance(valid, int) else None)
    rng = np.random.default_rng(n)
    xv = (rng.standard_normal(n) * 3).astype(dtype)
    if valid == "zeros":
        xv[:] = 0
    out = lpu.Runner(b.build())(x=xv)
    f = np.float32
    x32 = xv.astype(f)
    lanes = np.arange(-(-n // L) * L)[:n] % L
    counted = x32 if not isinstance(valid, int) else np.where(lanes < valid, x32, f(0))
    m = max(f(np.abs(counted).max()), f(2.0 ** -100))
    r = f(1) / np.sqrt(m)  # both correctly rounded in fp32, as the chip's rsqrt
    k = f(f(r * r) * f(127))
    want_q = np.clip(np.rint(x32 * k), -128, 127).astype(np.int8)
    np.testing.assert_array_equal(out["scale"][0], np.full(L, f(m * f(1 / 127)), f))
    if isinstance(valid, int):
        np.testing.assert_array_equal(out["xq"][lanes < valid], want_q[lanes < valid])
    else:
        np.testing.assert_array_equal(out["xq"], want_q)


@pytest.mark.parametrize("special", [np.inf, -np.inf, np.nan])
def test_allreduce_copies_any_total_to_every_lane(special):
    """The total leaves lane 0 by copying, not by arithmetic: an infinite or NaN sum is
    the same in every lane (multiplying it by a 0/1 mask and adding zeros, as an earlier
    version did, turned the other lanes into NaN)."""
    cfg = lpu.ChipConfig("tsp_v1")
    lanes = cfg.lanes
    b = Builder(cfg)
    x = b.input("x", "float32", (lanes,), hemi="W")
    y = b.output("y", "float32", (lanes,), hemi="E")
    t = b.earliest([x] + constants_for(b, "add", "float32"), b.vxm_pos)
    b.write(allreduce(b, b.read(x, stream=0, arrive=(b.vxm_pos, t)), "add", stream=0), y)
    xv = np.ones(lanes, np.float32)
    xv[100] = special
    out = lpu.Runner(b.build())(x=xv)["y"]
    want = np.full(lanes, tree_sum(xv, lanes), np.float32)
    assert np.isnan(want[0]) == np.isnan(special)
    np.testing.assert_array_equal(out.view(np.uint32), want.view(np.uint32))
