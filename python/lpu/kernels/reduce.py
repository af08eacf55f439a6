"""Reductions across the lanes of a vector, with the result in every lane.

The VXM works lane by lane, so a sum or maximum over lanes moves data across lanes in
the SXM, in trees whose levels are each a round trip VXM -> SXM -> VXM (about 100
cycles on tsp_v1, where the SXM sits beyond the hemisphere's MEM slices).

- Sums: a suffix tree of radix 4 (level n = 1, 4, 16, ...: lane l adds lanes l + n,
  l + 2n and l + 3n, as (v + v[+n]) + (v[+2n] + v[+3n]), using the hemisphere's four
  shifters) puts the total in lane 0 in ceil(log4(lanes)) levels; the same tree with
  ``shiftn`` over the total masked to lane 0 copies it to every lane (adding zeros
  is exact, so every lane holds the same bits). The order of the additions is fixed by
  the tree, so results are deterministic.
- max/min: a suffix tree (``shifts`` by 1, 2, 4, ...) and an exclusive prefix tree
  (``shiftn``) of radix 2 run side by side, and lane l's total is suffix[l] (op)
  prefix[l] (exact in any order); ceil(log2(lanes)) levels.

Lanes shifted in from outside the vector are zero, which is neutral for ``add``; for
``max``/``min`` they are replaced by -inf/+inf.

Streams used while it runs (West SXM): westward 16..31, eastward 16..31, and for a
max or min of several vectors westward 12..15.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple, Union, overload

import numpy as np

from .._core import Tensor
from ..builder import AluOut, Builder, Flow
from ..errors import InputError

__all__ = ["allreduce", "reduce_levels", "sum_levels"]

_NEUTRAL = {"max": -np.inf, "min": np.inf}


def reduce_levels(lanes: int) -> int:
    """Tree levels needed to reduce `lanes` lanes."""
    return max(1, math.ceil(math.log2(lanes)))


def _constant(b: Builder, name: str, rows: np.ndarray, dtype: str, count: int) -> Tensor:
    """The constant `name` (one vector per row of `rows`), each row repeated `count`
    times so that a series of `count` vectors can read its own copy; made once."""
    full = f"{name}_{dtype}" + (f"_x{count}" if count > 1 else "")
    existing = [t for t in b._tensors if t.name == full]
    if existing:
        return existing[0]
    return b.constant(full, np.repeat(rows, count, axis=0).astype(dtype), dtype, hemi="E")


def _fill_tensors(b: Builder, op: str, dtype: str, count: int = 1) -> Tuple[Tensor, Tensor, Tensor]:
    """Constant vectors that put the neutral element into shifted-in lanes: suffix level
    k (its last 2^k lanes), prefix level k (its first 2^k lanes; 2 at level 0) and the
    prefix tree's shift by one (lane 0). Separate tensors so they can be read at once."""
    lanes = b.lanes
    levels = reduce_levels(lanes)
    suf = np.zeros((levels, lanes))
    pre = np.zeros((levels, lanes))
    for k in range(levels):
        suf[k, lanes - (1 << k):] = _NEUTRAL[op]
        pre[k, : (2 if k == 0 else 1 << k)] = _NEUTRAL[op]
    one = np.zeros((1, lanes))
    one[0, 0] = _NEUTRAL[op]
    return (_constant(b, f"_reduce_suffix_{op}", suf, dtype, count),
            _constant(b, f"_reduce_prefix_{op}", pre, dtype, count),
            _constant(b, f"_reduce_first_{op}", one, dtype, count))


def _valid_const(b: Builder, op: str, valid: int, dtype: str, count: int = 1) -> Tensor:
    keep = np.arange(b.lanes)[None, :] < valid
    arr = keep.astype(float) if op == "add" else np.where(keep, 0, _NEUTRAL[op])
    return _constant(b, f"_valid_{op}_{valid}", arr, dtype, count)


def constants_for(b: Builder, op: str, dtype: str, valid: Optional[int] = None, count: int = 1) -> "list[Tensor]":
    """The constant tensors an allreduce of `count` vectors reads (so callers can wait
    for them)."""
    out = list(_fill_tensors(b, op, dtype, count)) if op != "add" else [_unit(b, dtype, count)]
    if valid is not None and valid < b.lanes:
        out.append(_valid_const(b, op, valid, dtype, count))
    return out


def _unit(b: Builder, dtype: str, count: int = 1) -> Tensor:
    e0 = np.zeros((1, b.lanes))
    e0[0, 0] = 1
    return _constant(b, "_lane0", e0, dtype, count)


@overload
def allreduce(b: Builder, x: Union[Flow, AluOut], op: str = "add", *, valid: Optional[int] = None,
              stream: int, west: bool = False) -> Flow: ...


@overload
def allreduce(b: Builder, x: Union[Flow, AluOut], op: str = "add", *, valid: Optional[int] = None,
              stream: None = None, west: bool = False) -> AluOut: ...


def allreduce(b: Builder, x: Union[Flow, AluOut], op: str = "add", *, valid: Optional[int] = None,
              stream: Optional[int] = None, west: bool = False) -> Union[Flow, AluOut]:
    """Reduce each vector of `x` over its lanes with ``op`` (add, max, min); every lane
    of a result holds that vector's total. `x` may be a series of vectors (they go
    through the tree together, each level one repeat). Lanes at or after ``valid`` are
    ignored (treated as the neutral element). Returns the results at the VXM (in an
    ALU, or on ``stream``).

    Sums: a suffix tree of radix 4 puts the total in lane 0 (additions in a fixed tree
    order), then the same tree of the masked total copies it to every lane (adding zeros
    is exact).
    max/min: suffix and exclusive-prefix trees side by side, combined per lane (exact).
    The input must reach the VXM no earlier than the constants it needs (see
    :func:`constants_for`)."""
    if op not in ("add", "max", "min"):
        raise InputError(f"allreduce supports add, max and min, not {op}")
    dtype, c = x.dtype, x.count
    d = x.stride if c > 1 else 1
    levels = reduce_levels(b.lanes)
    vxm = b.vxm_pos

    def const(t: Tensor, stream: int, at: int, row: int = 0) -> Flow:
        return b.read(t, stream=stream, vectors=(row * c, c), arrive=(vxm, at), stride=d)

    v: Union[Flow, AluOut] = x
    if valid is not None and valid < b.lanes:
        # Neutral values in the lanes past `valid`: x * mask for sums, x + pad otherwise.
        mask = const(_valid_const(b, op, valid, dtype, c), 24, _when(b, v))
        v = b.vxm("mul" if op == "add" else "add", v, mask)
    if isinstance(v, AluOut) or not v.west:
        v = b.vxm("copy", v, stream=16, west=True)
    assert isinstance(v, Flow)
    if op == "add":
        total = _sum_tree(b, v, "shifts", stream=16, last_stream=None)
        assert isinstance(total, AluOut)
        e0 = const(_unit(b, dtype, c), 24, total.cycle)
        lane0 = b.vxm("mul", total, e0, stream=16, west=True)
        return _sum_tree(b, lane0, "shiftn", stream=16, last_stream=stream, last_west=west)
    suf, pre, first = _fill_tensors(b, op, dtype, c)
    s_out = p_out = v
    s_val: Union[Flow, AluOut] = v
    p_val: Union[Flow, AluOut] = v
    for k in range(levels):
        n = 1 << k
        s_sh = b.sxm("shifts", s_out, hemi="W", stream=16, west=False, n=n)
        s_cp = b.sxm("shifts", s_out, hemi="W", stream=20, west=False, n=0)
        p_sh = b.sxm("shiftn", p_out, hemi="W", stream=24, west=False, n=2 if k == 0 else n)
        p_cp = b.sxm("shiftn" if k == 0 else "shifts", p_out, hemi="W", stream=28, west=False, n=1 if k == 0 else 0)
        t = s_sh.at(vxm)
        parts = [
            b.vxm("add", s_sh, const(suf, 24, t, k)),
            b.vxm("copy", s_cp),
            b.vxm("add", p_sh, const(pre, 28, t, k)),
            # A series is still passing the VXM on stream 20 when the level's results
            # leave on it; its fill comes on 12..15 instead.
            b.vxm("add", p_cp, const(first, 20 if c == 1 else 12, t)) if k == 0 else b.vxm("copy", p_cp),
        ]
        last = k == levels - 1
        s_val = b.vxm(op, parts[0], parts[1], stream=None if last else 16, west=True)
        p_val = b.vxm(op, parts[2], parts[3], stream=None if last else 20, west=True)
        if not last:
            assert isinstance(s_val, Flow) and isinstance(p_val, Flow)
            s_out, p_out = s_val, p_val
    return b.vxm(op, s_val, p_val, stream=stream, west=west)


def sum_levels(lanes: int) -> int:
    """Levels of the radix-4 sum tree over `lanes` lanes."""
    return max(1, math.ceil(math.log(lanes, 4) - 1e-9))


def _sum_tree(b: Builder, v: Flow, shift: str, *, stream: int, last_stream: Optional[int],
              last_west: bool = False) -> Union[Flow, AluOut]:
    """v = (v + v[n]) + (v[2n] + v[3n]) for n = 1, 4, 16, ... (v[m]: v shifted by m lanes
    with ``shift``; shifts of the whole vector or more are left out), each level a
    round trip to the West SXM's four shifters."""
    lanes = b.lanes
    out: Union[Flow, AluOut] = v
    n = 1
    while n < lanes:
        assert isinstance(out, Flow)
        # The copy (a shift by 0) and the shifted vectors reach the VXM together.
        parts = [b.sxm("shifts", out, hemi="W", stream=16, west=False, n=0)]
        parts += [b.sxm(shift, out, hemi="W", stream=16 + 4 * m, west=False, n=m * n)
                  for m in (1, 2, 3) if m * n < lanes]
        last = 4 * n >= lanes
        dst = dict(stream=last_stream, west=last_west) if last else dict(stream=stream, west=True)
        if len(parts) == 2:
            out = b.vxm("add", parts[0], parts[1], **dst)  # type: ignore[call-overload]
        else:
            low = b.vxm("add", parts[0], parts[1])
            high = b.vxm("add", parts[2], parts[3]) if len(parts) == 4 else b.vxm("copy", parts[2])
            out = b.vxm("add", low, high, **dst)  # type: ignore[call-overload]
        n *= 4
    return out


def _when(b: Builder, v: Union[Flow, AluOut]) -> int:
    return v.cycle if isinstance(v, AluOut) else v.at(b.vxm_pos)
