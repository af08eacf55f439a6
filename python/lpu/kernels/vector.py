"""Point-wise and per-vector kernels on the VXM: elementwise ops, SiLU, GELU, SwiGLU,
RMSNorm, softmax and argmax.

Inputs and outputs are tensors; a kernel reads its inputs so they reach the VXM
together, chains its operations ALU to ALU without touching SRAM, and writes results
where they arrive. There is no divide on the chip: ``a / b`` is computed as
``a * rsqrt(b)**2`` (rsqrt correctly rounded in fp32, then two roundings), and
``sigmoid(x) = rsqrt(1 + exp(-x))**2``. The constant 1.0 is made on the fly as
``eq(x, x)``.

Padding lanes (past a vector's logical length) hold zeros in every tensor these
kernels write, so sums over lanes are unaffected; max/min reductions mask them.
"""

from __future__ import annotations

import math
from typing import Callable, List, Optional, Sequence, TypeVar, Union

import numpy as np

from .._core import Tensor
from ..builder import AluOut, Builder, Flow
from ..errors import InputError, LpuError, ScheduleError
from .reduce import allreduce, constants_for

__all__ = ["binary", "unary", "silu", "gelu", "swiglu", "rmsnorm", "quantize", "softmax", "argmax", "const_rows",
           "retry"]

Value = Union[Flow, AluOut]
T = TypeVar("T")


def const_rows(b: Builder, name: str, row: Union[np.ndarray, Sequence[float]], n: int, dtype: str = "float32",
               hemi: str = "E", apart_from: Sequence[Tensor] = ()) -> Tensor:
    """A constant tensor holding the same vector `n` times (read once per input vector)."""
    key = f"_const_{name}_{n}_{dtype}_{hemi}"
    for t in b._tensors:
        if t.name == key:
            return t
    vals = np.asarray(row, dtype=np.float64).reshape(-1)
    full = np.zeros(b.lanes)
    full[: len(vals)] = vals
    if len(vals) == 1:
        full[:] = vals[0]
    return b.constant(key, np.tile(full, (n, 1)).astype(dtype), dtype, hemi=hemi, apart_from=list(apart_from))


def _vectors(t: Tensor, lanes: int) -> int:
    return t.vectors(lanes)


def _start(b: Builder, tensors: List[Tensor], start: int) -> int:
    return b.earliest(tensors, b.vxm_pos, start)


def _write(b: Builder, v: Value, out: Tensor, stream: int = 12, first: int = 0) -> int:
    """Put a chained result on a stream towards `out` and write it there."""
    west = out.hemi == "W"
    if isinstance(v, AluOut) or v.west != west:
        v = b.vxm("copy", v, stream=stream, west=west)
    assert isinstance(v, Flow)
    return b.write(v, out, vectors=(first, v.count))


def _cast_to(b: Builder, v: Value, dtype: str, out: Tensor, stream: int = 12) -> Value:
    """Cast to the output's dtype on the way out (if it differs), onto the out stream."""
    west = out.hemi == "W"
    if out.dtype != dtype:
        return b.vxm("cast", v, dtype=dtype, to=out.dtype, stream=stream, west=west)
    return v


def binary(b: Builder, op: str, x: Tensor, y: Tensor, out: Tensor, *, start: int = 0) -> int:
    """out = op(x, y) lane by lane (add, sub, mul, max, min, ...)."""
    if x.shape != y.shape or x.dtype != y.dtype:
        raise InputError(f"{op}: '{x.name}' and '{y.name}' differ in shape or dtype")
    t = _start(b, [x, y], start)

    def attempt(t: int) -> int:
        xs = b.read(x, stream=0, arrive=(b.vxm_pos, t))
        ys = b.read(y, stream=4, arrive=(b.vxm_pos, t))
        return _write(b, _cast_to(b, b.vxm(op, xs, ys), x.dtype, out), out)

    return retry(b, op, t, attempt)


def retry(b: Builder, what: str, t: int, attempt: Callable[[int], T]) -> T:
    """Run `attempt(t)`, moving t one cycle later (and undoing the try) until its reads
    and writes find free MEM slots; reads that must meet need tensors in different
    slices (see ``Builder.tensor(apart_from=...)``)."""
    last = None
    for _ in range(1024):
        mark = b.checkpoint()
        try:
            return attempt(t)
        except LpuError as e:
            b.rollback(mark)
            last = e
            t += 1
    raise ScheduleError(f"{what}: found no cycle where its reads and writes are free (last problem: {last})")


def unary(b: Builder, op: str, x: Tensor, out: Tensor, *, start: int = 0) -> int:
    """out = op(x) lane by lane (neg, abs, relu, exp, tanh, rsqrt, ...)."""
    t = _start(b, [x], start)
    xs = b.read(x, stream=0, arrive=(b.vxm_pos, t), search=True)
    return _write(b, _cast_to(b, b.vxm(op, xs), x.dtype, out), out)


def _sigmoid(b: Builder, x: Value) -> AluOut:
    """sigmoid(x) = rsqrt(1 + exp(-x))^2, chained; 1.0 is made as eq(e, e)."""
    e = b.vxm("exp", b.vxm("neg", x))
    d = b.vxm("add", b.vxm("copy", e), b.vxm("eq", e, e))
    r = b.vxm("rsqrt", d)
    out = b.vxm("mul", r, r)
    assert isinstance(out, AluOut)
    return out


def silu(b: Builder, x: Tensor, out: Tensor, *, start: int = 0) -> int:
    """out = x * sigmoid(x) (float32 in; float32 or float16 out)."""
    t = _start(b, [x], start)
    xs = b.read(x, stream=0, arrive=(b.vxm_pos, t), search=True)
    sig = _sigmoid(b, xs)
    x2 = b.read(x, stream=4, arrive=(b.vxm_pos, sig.cycle))
    return _write(b, _cast_to(b, b.vxm("mul", x2, sig), "float32", out), out)


def swiglu(b: Builder, g: Tensor, u: Tensor, out: Tensor, *, start: int = 0) -> int:
    """out = silu(g) * u (the Llama MLP gate), float32 in, float32 or float16 out."""
    t = _start(b, [g, u], start)
    gs = b.read(g, stream=0, arrive=(b.vxm_pos, t), search=True)
    sig = _sigmoid(b, gs)
    y = b.vxm("mul", b.read(g, stream=4, arrive=(b.vxm_pos, sig.cycle)), sig)
    us = b.read(u, stream=8, arrive=(b.vxm_pos, y.cycle))
    return _write(b, _cast_to(b, b.vxm("mul", y, us), "float32", out), out)


_GELU_C = math.sqrt(2.0 / math.pi)


def gelu(b: Builder, x: Tensor, out: Tensor, *, start: int = 0) -> int:
    """out = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), computed with the
    identity 0.5 (1 + tanh(z)) = sigmoid(2z) as x * sigmoid(2 sqrt(2/pi) (x + 0.044715 x^3))."""
    n = _vectors(x, b.lanes)
    k1 = const_rows(b, "gelu_k1", [0.044715], n)
    k2 = const_rows(b, "gelu_k2", [2.0 * _GELU_C], n)
    vxm = b.vxm_pos
    t = _start(b, [x, k1, k2], start)
    xs = b.read(x, stream=0, arrive=(vxm, t), search=True)
    x2 = b.vxm("mul", xs, xs)
    a = b.vxm("mul", x2, b.read(k1, stream=4, arrive=(vxm, x2.cycle)))
    p = b.vxm("mul", a, b.read(x, stream=8, arrive=(vxm, a.cycle)))
    s = b.vxm("add", p, b.read(x, stream=16, arrive=(vxm, p.cycle)))
    z = b.vxm("mul", s, b.read(k2, stream=20, arrive=(vxm, s.cycle)))
    sig = _sigmoid(b, z)
    y = b.vxm("mul", b.read(x, stream=24, arrive=(vxm, sig.cycle)), sig)
    return _write(b, _cast_to(b, y, "float32", out), out)


def rmsnorm(b: Builder, x: Tensor, g: Tensor, out: Tensor, *, eps: float = 1e-5, start: int = 0) -> int:
    """out = x / sqrt(mean(x^2) + eps) * g over one vector of length n = x.shape[-1]
    (float32 in; float32 or float16 out). The sum of squares uses the fixed-order lane
    tree of :func:`~lpu.kernels.reduce.allreduce`; tiles are added in order first."""
    n = x.shape[-1]
    kt = _vectors(x, b.lanes)
    if len(x.shape) != 1 or x.dtype != "float32":
        raise InputError("rmsnorm takes one float32 vector")
    inv_n = const_rows(b, "inv_n", [1.0 / n], 1)
    eps_t = const_rows(b, f"eps{eps!r}", [eps], 1)
    consts = constants_for(b, "add", "float32") + [inv_n, eps_t]
    t = _start(b, [x, g] + consts, start)
    # Squares of the tiles, two cycles apart so one ALU can add them up in order.
    xs = b.read(x, stream=0, arrive=(b.vxm_pos, t), stride=2, search=True)
    sq = b.vxm("mul", xs, xs)
    total = allreduce(b, b.scan("add", sq) if kt > 1 else sq, "add")
    ms = b.vxm("mul", total, b.read(inv_n, stream=24, arrive=(b.vxm_pos, total.cycle)))
    r = b.vxm("rsqrt", b.vxm("add", ms, b.read(eps_t, stream=24, arrive=(b.vxm_pos, ms.cycle))))
    rs = b.hold(r, kt)
    xs = b.read(x, stream=0, arrive=(b.vxm_pos, rs.cycle), stride=2)
    y = b.vxm("mul", xs, rs)
    gs = b.read(g, stream=4, arrive=(b.vxm_pos, y.cycle), stride=2)
    return _write(b, _cast_to(b, b.vxm("mul", y, gs), "float32", out), out)


def quantize(b: Builder, x: Tensor, xq: Tensor, scale: Tensor, *, valid: Optional[int] = None,
             start: int = 0) -> int:
    """Symmetric int8 quantisation of all of `x` (float32 or float16, any number of
    vectors) with one scale, for an int8 matmul: m = max |x| (at least 2^-100, so zeros
    stay zeros), ``scale`` = m / 127 in every lane of its first vector (float32), and
    ``xq`` = x * 127 / m rounded to nearest (ties to even), saturating, as int8;
    127 / m is 127 * rsqrt(m)^2. With ``valid``, only lanes below it count towards m
    (the others may hold anything; their xq lanes are then meaningless)."""
    kt = _vectors(x, b.lanes)
    if x.dtype not in ("float32", "float16") or xq.dtype != "int8" or xq.vectors(b.lanes) != kt:
        raise InputError(f"quantize: '{x.name}' must be float32/float16 and '{xq.name}' int8 of the same size")
    c127 = const_rows(b, "q127", [127.0], 1)
    inv127 = const_rows(b, "q1_127", [1.0 / 127.0], 1)
    tiny = const_rows(b, "q_tiny", [2.0 ** -100], 1)
    consts = constants_for(b, "max", "float32") + [c127, inv127, tiny]
    t = _start(b, [x] + consts, start)
    vxm = b.vxm_pos

    def wide(v: Value) -> Value:
        return b.vxm("cast", v, dtype="float16", to="float32") if x.dtype == "float16" else v

    delay = b.lat["vxm_cast"] if x.dtype == "float16" else 0
    # |x| of the tiles, two cycles apart so one ALU can take their maximum in order.
    if valid is None:
        xs = b.read(x, stream=0, arrive=(vxm, t), stride=2, search=True)
        a = b.vxm("abs", wide(xs))
    else:
        keep = const_rows(b, f"q_valid{valid}", (np.arange(b.lanes) < valid).astype(float), kt,
                          hemi=x.hemi, apart_from=[x])

        def first(t: int) -> AluOut:
            xs = b.read(x, stream=0, arrive=(vxm, t), stride=2)
            ks = b.read(keep, stream=4, arrive=(vxm, xs.at(vxm) + delay), stride=2)
            return b.vxm("abs", b.vxm("mul", wide(xs), ks))

        a = retry(b, "quantize", t, first)
    m = allreduce(b, b.scan("max", a) if kt > 1 else a, "max")
    m = b.vxm("max", m, b.read(tiny, stream=24, arrive=(vxm, m.cycle)))
    sc = b.vxm("mul", m, b.read(inv127, stream=24, arrive=(vxm, m.cycle)))
    _write(b, sc, scale, stream=8)
    r = b.vxm("rsqrt", m)
    rr = b.vxm("mul", r, r)
    k = b.vxm("mul", rr, b.read(c127, stream=28, arrive=(vxm, rr.cycle)))
    ks = b.hold(k, kt)
    xs = b.read(x, stream=0, arrive=(vxm, ks.cycle - delay), stride=2)
    y = b.vxm("mul", wide(xs), ks)
    q = b.vxm("cast", y, dtype="float32", to="int8", sat=True, stream=12, west=xq.hemi == "W")
    return b.write(q, xq)


def softmax(b: Builder, x: Tensor, out: Tensor, *, start: int = 0) -> int:
    """Row-wise softmax over the last axis (length <= lanes): subtract the row maximum,
    exp, and multiply by rsqrt(sum)^2 (no divide on the chip)."""
    n = x.shape[-1]
    if n > b.lanes or x.dtype != "float32":
        raise InputError(f"softmax rows must be float32 and fit one vector of {b.lanes} lanes")
    rows = _vectors(x, b.lanes)
    valid = const_rows(b, f"valid{n}", (np.arange(b.lanes) < n).astype(float), 1)
    consts = constants_for(b, "max", "float32", n) + constants_for(b, "add", "float32") + [valid]
    end = start
    for row in range(rows):
        t = _start(b, [x] + consts, end)
        xs = b.read(x, stream=0, vectors=(row, 1), arrive=(b.vxm_pos, t), search=True)
        m = allreduce(b, xs, "max", valid=n)
        x2 = b.read(x, stream=4, vectors=(row, 1), arrive=(b.vxm_pos, m.cycle))
        e = b.vxm("exp", b.vxm("sub", x2, m))
        keep = b.read(valid, stream=8, arrive=(b.vxm_pos, e.cycle))
        ez = b.vxm("mul", e, keep, stream=0, west=False)  # zero the padding lanes
        s = allreduce(b, ez, "add")
        r = b.vxm("rsqrt", s)
        inv = b.vxm("mul", r, r)
        # e is needed again: recompute nothing, fetch it from where it went (an SRAM stash).
        stash = b.scratch(f"_softmax_e_{b._ids}", "float32", (b.lanes,), hemi="E")
        b.write(ez, stash)
        e2 = b.read(stash, stream=4, arrive=(b.vxm_pos, inv.cycle))
        end = _write(b, b.vxm("mul", e2, inv), out, first=row)
    return end


def argmax(b: Builder, x: Tensor, out: Tensor, *, start: int = 0) -> int:
    """Index of the first maximum of a float32 vector (any length, several tiles); the
    int32 index is written to every lane of `out`'s first vector."""
    n = x.shape[-1]
    kt = _vectors(x, b.lanes)
    if len(x.shape) != 1 or x.dtype != "float32":
        raise InputError("argmax takes one float32 vector")
    lanes = b.lanes
    pad = np.zeros(kt * lanes)
    pad[n:] = -np.inf
    # Constants read side by side with x and each other: slices of their own.
    pad_t = b.constant(f"_argmax_pad_{n}", pad.reshape(kt, lanes).astype(np.float32), "float32", hemi="E",
                       apart_from=[x])
    iota_t = b.constant(f"_argmax_iota_{n}", np.arange(kt * lanes, dtype=np.float32).reshape(kt, lanes),
                        "float32", hemi="E", apart_from=[x, pad_t])
    big = b.constant(f"_argmax_big_{n}", np.full((kt, lanes), float(1 << 24), np.float32), "float32", hemi="E",
                     apart_from=[x, pad_t, iota_t])
    consts = constants_for(b, "max", "float32") + constants_for(b, "min", "float32") + [pad_t, iota_t, big]
    vxm = b.vxm_pos

    def masked(t: int) -> Value:
        """x with -inf in the padding lanes, tiles two cycles apart from t."""
        xs = b.read(x, stream=0, arrive=(vxm, t), stride=2)
        return b.vxm("add", xs, b.read(pad_t, stream=4, arrive=(vxm, t), stride=2))

    def phase1(t: int) -> AluOut:
        xm = masked(t)
        m = allreduce(b, b.scan("max", xm) if kt > 1 else xm, "max")
        assert isinstance(m, AluOut)
        return m

    mark = b.checkpoint()
    t = _start(b, [x] + consts, start)
    m: Optional[AluOut] = None
    for _ in range(1024):
        try:
            m = phase1(t)
            break
        except LpuError:
            b.rollback(mark)
            t += 1
    if m is None:
        raise ScheduleError("argmax: no free cycle for its reads")

    def phase2(delay: int) -> int:
        # The smallest index whose value equals the maximum: index where equal, else 2^24.
        held = b.hold(m, kt + delay)
        ms = AluOut(held.alu, held.cycle + 2 * delay, kt, held.stride, held.dtype)
        xm = masked(ms.cycle - b.lat["vxm_basic"])
        eq = b.vxm("eq", xm, ms)
        idx = b.vxm("mask", b.read(iota_t, stream=8, arrive=(vxm, eq.cycle), stride=2), eq)
        other = b.vxm("maskn", b.read(big, stream=16, arrive=(vxm, eq.cycle), stride=2), eq)
        cand = b.vxm("add", idx, other)
        best = allreduce(b, b.scan("min", cand) if kt > 1 else cand, "min")
        as_int = b.vxm("cast", best, dtype="float32", to="int32", stream=12, west=out.hemi == "W")
        assert isinstance(as_int, Flow)
        return b.write(as_int, out, vectors=(0, 1))

    return retry(b, "argmax", 0, phase2)
