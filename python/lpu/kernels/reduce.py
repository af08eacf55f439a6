"""Reductions across the lanes of a vector, with the result in every lane.

The VXM works lane by lane, so a sum or maximum over lanes moves data across lanes in
the SXM, in trees whose levels are each a round trip VXM -> SXM -> VXM (about 100
cycles on tsp_v1, where each SXM sits beyond its hemisphere's MEM slices).

A suffix tree puts the total in lane 0: at level n, lane l combines lanes l, l + n,
l + 2n, ... (shifts of the whole vector or more left out), in pairs. It has radix 8
over both SXMs' four shifters (the West one shifts by 0..3n, the East one by 4n..7n;
they are equally far from the VXM, so all eight parts come back together): n = 1, 8,
64, 3 levels for 320 lanes. Lanes shifted in from outside the vector are zero, which
is neutral for ``add``, and lane 0 never takes them in when the lanes are a whole
number of the top level's stride (320 = 5 x 64). Otherwise max/min use radix 4 on the
West SXM alone (n = 1, 4, 16, ...), each shifted part first getting -inf/+inf in the
lanes it shifted in (the constants for eight parts would need more streams than are
free). Then a distributor copies lane 0 to the lanes of superlane 0 and the permuter's
broadcast copies that superlane to every superlane, so every lane holds the same bits.

The tree pairs neighbours at every level, so whatever the radix, a sum is the pairwise
(binary tree) sum of the lanes in order: deterministic and documented. A maximum or
minimum is exact in any order.

Streams used while it runs: westward 16 (to the West SXM), 20, 24, 28 and 8 (from the
East SXM; in the radix-4 tree, the neutral fills), 24 (the mask of ``valid``), 12 (the
distributor's map); eastward 4 (to the East SXM) and 16..31 (from the West SXM).
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Tuple, Union, overload

import numpy as np

from .._core import Tensor
from ..builder import AluOut, Builder, Flow
from ..errors import InputError

__all__ = ["allreduce", "sum_levels"]

_NEUTRAL = {"max": -np.inf, "min": np.inf}


def _constant(b: Builder, name: str, rows: np.ndarray, dtype: str, count: int,
              apart_from: Sequence[Tensor] = ()) -> Tensor:
    """The constant `name` (one vector per row of `rows`), each row repeated `count`
    times so that a series of `count` vectors can read its own copy; made once (in
    slices other than those of `apart_from`, to be read at the same time)."""
    full = f"{name}_{dtype}" + (f"_x{count}" if count > 1 else "")
    existing = [t for t in b._tensors if t.name == full]
    if existing:
        return existing[0]
    return b.constant(full, np.repeat(rows, count, axis=0).astype(dtype), dtype, hemi="E",
                      apart_from=list(apart_from))


def _fill_tensors(b: Builder, op: str, dtype: str, count: int = 1) -> Tuple[Tensor, Tensor, Tensor]:
    """Constant vectors that put the neutral element into the lanes a shift by m * n
    brings in from outside (the last m * n lanes), one row per tree level (n = 4^level):
    one tensor for each m = 1, 2, 3, so that the three can be read at once."""
    lanes = b.lanes
    levels = sum_levels(lanes)
    fills: "list[Tensor]" = []
    for m in (1, 2, 3):
        rows = np.zeros((levels, lanes))
        for k in range(levels):
            rows[k, max(0, lanes - m * 4**k):] = _NEUTRAL[op]
        fills.append(_constant(b, f"_reduce_fill{m}_{op}", rows, dtype, count, apart_from=fills))
    return fills[0], fills[1], fills[2]


def _valid_const(b: Builder, op: str, valid: int, dtype: str, count: int = 1) -> Tensor:
    keep = np.arange(b.lanes)[None, :] < valid
    arr = keep.astype(float) if op == "add" else np.where(keep, 0, _NEUTRAL[op])
    return _constant(b, f"_valid_{op}_{valid}", arr, dtype, count)


def _lane0_map(b: Builder, count: int) -> Tensor:
    return _constant(b, "_lane0_map", np.zeros((1, b.lanes)), "int8", count)


def constants_for(b: Builder, op: str, dtype: str, valid: Optional[int] = None, count: int = 1) -> "list[Tensor]":
    """The constant tensors an allreduce of `count` vectors reads (so callers can wait
    for them)."""
    out = [_lane0_map(b, count)] + (list(_fill_tensors(b, op, dtype, count)) if _needs_fills(b, op) else [])
    if valid is not None and valid < b.lanes:
        out.append(_valid_const(b, op, valid, dtype, count))
    return out


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

    A suffix tree (radix 8 over both SXMs; sums add in pairwise order) puts each
    total in lane 0; the distributor and the permuter's broadcast copy it to every
    lane.
    The input must reach the VXM no earlier than the constants it needs (see
    :func:`constants_for`)."""
    if op not in ("add", "max", "min"):
        raise InputError(f"allreduce supports add, max and min, not {op}")
    dtype, c = x.dtype, x.count
    d = x.stride if c > 1 else 1
    vxm = b.vxm_pos

    def const(t: Tensor, stream: int, at: int, row: int = 0) -> Flow:
        return b.read(t, stream=stream, vectors=(row * c, c), arrive=(vxm, at), stride=d)

    v: Union[Flow, AluOut] = x
    if valid is not None and valid < b.lanes:
        # Neutral values in the lanes past `valid`: x * mask for sums, x + pad otherwise.
        mask = const(_valid_const(b, op, valid, dtype, c), 24, _when(b, v))
        v = b.vxm("mul" if op == "add" else "add", v, mask)
    total = _to_lane0(b, v, op) if not _needs_fills(b, op) else _to_lane0_filled(b, v, op, const)
    # Lane 0 to every lane: to the lanes of its superlane by the distributor (a map of
    # zeros), then superlane 0 to every superlane by the permuter.
    sxm = b.sxm_pos("W")
    zeros = b.read(_lane0_map(b, c), stream=12, arrive=(sxm, total.at(sxm)), stride=d)
    spread = b.sxm("distribute", total, hemi="W", stream=16, west=False, map=zeros)
    every = b.sxm("broadcast", spread, hemi="W", stream=16, west=False)
    return b.vxm("copy", every, stream=stream, west=west)


def sum_levels(lanes: int, radix: int = 4) -> int:
    """Levels of a suffix tree of `radix` over `lanes` lanes."""
    return max(1, math.ceil(math.log(lanes, radix) - 1e-9))


#: Westward streams that bring the East SXM's four shifts back to the VXM.
_EAST_PARTS = (20, 24, 28, 8)


def _needs_fills(b: Builder, op: str) -> bool:
    """Whether the radix-8 tree's lane 0 would take in lanes shifted in from outside
    the vector: never for sums (they are zero); for max/min, unless the lanes are a
    whole number of the top level's stride (320 = 5 x 64 on tsp_v1), so that lane 0's
    part of the tree covers exactly lanes 0 .. lanes - 1."""
    top = 8 ** (sum_levels(b.lanes, 8) - 1)
    return op != "add" and b.lanes % top != 0


def _to_lane0(b: Builder, x: Union[Flow, AluOut], op: str) -> Flow:
    """Lane 0 of the result holds ``op`` over x's lanes, on its way to the West SXM
    (westward stream 16). A suffix tree of radix 8 over both SXMs: each level sends the
    vector to the West SXM's four shifters (shifts by 0, n, 2n, 3n) and the East SXM's
    (4n .. 7n), which sit as far from the VXM on either side, so all eight come back
    together; they are combined in pairs, ((p0 + p1) + (p2 + p3)) + ((p4 + p5) + (p6 +
    p7)), shifts of the whole vector or more left out; n = 1, 8, 64, ... Other lanes
    take in zeros from outside the vector, which only matters for max/min (see
    :func:`_needs_fills`)."""
    lanes = b.lanes
    west = b.vxm("copy", x, stream=16, west=True)
    east = b.vxm("copy", x, stream=4, west=False)
    n = 1
    while True:
        parts: "list[Union[Flow, AluOut]]" = [
            b.sxm("shifts", west, hemi="W", stream=16 + 4 * m, west=False, n=m * n) for m in range(4) if m * n < lanes]
        parts += [b.sxm("shifts", east, hemi="E", stream=_EAST_PARTS[m - 4], west=True, n=m * n)
                  for m in range(4, 8) if m * n < lanes]
        a, z = _pairs(b, op, parts)
        west = b.vxm(op, a, z, stream=16, west=True)
        n *= 8
        if n >= lanes:
            return west
        east = b.vxm(op, a, z, stream=4, west=False)


def _to_lane0_filled(b: Builder, x: Union[Flow, AluOut], op: str, const: "Callable[[Tensor, int, int, int], Flow]"
                     ) -> Flow:
    """:func:`_to_lane0` for max/min where lane 0 would take in lanes from outside the
    vector: radix 4 on the West SXM alone (n = 1, 4, 16, ...), each shifted part first
    getting the neutral element in the lanes it shifted in (``const(tensor, stream,
    cycle, row)`` reads a row of a constant to the VXM for the series)."""
    lanes = b.lanes
    v = x if isinstance(x, Flow) and x.west else b.vxm("copy", x, stream=16, west=True)
    fills = _fill_tensors(b, op, x.dtype, x.count)
    n, level = 1, 0
    while n < lanes:
        # The copy (a shift by 0) and the shifted vectors reach the VXM together.
        parts = [b.sxm("shifts", v, hemi="W", stream=16 + 4 * m, west=False, n=m * n)
                 for m in range(4) if m * n < lanes]
        at = _when(b, parts[0])
        filled: "list[Union[Flow, AluOut]]" = [b.vxm("copy", parts[0])]
        filled += [b.vxm("add", p, const(fills[m - 1], 16 + 4 * m, at, level)) for m, p in enumerate(parts[1:], 1)]
        a, z = _pairs(b, op, filled)
        v = b.vxm(op, a, z, stream=16, west=True)
        n *= 4
        level += 1
    return v


def _pairs(b: Builder, op: str, parts: "list[Union[Flow, AluOut]]") -> "tuple[Union[Flow, AluOut], ...]":
    """Combine `parts` with ``op`` in pairs, round after round (an odd one out is copied
    so that every operand of a round arrives together), down to the last two."""
    while len(parts) > 2:
        paired: "list[Union[Flow, AluOut]]" = [b.vxm(op, parts[i], parts[i + 1]) for i in range(0, len(parts) - 1, 2)]
        if len(parts) % 2:
            paired.append(b.vxm("copy", parts[-1]))
        parts = paired
    return parts[0], parts[1]


def _when(b: Builder, v: Union[Flow, AluOut]) -> int:
    return v.cycle if isinstance(v, AluOut) else v.at(b.vxm_pos)
