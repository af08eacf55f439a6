"""Matrix multiplication on the MXM planes: y[M, N] = x[M, K] @ W[K, N].

Layouts (``lanes`` = 320 on tsp_v1):

- weights: one constant tensor per 320-column tile j, shape ``(Kp, lanes)``: row k is
  ``W[k, 320j : 320j+320]`` (zero padded), ``Kp`` = K rounded up to 16. It is split
  over 16 MEM slices (int8: 16 rows per ``lw``; fp16: 8 rows of 2 byte planes), in the
  hemisphere of the plane that uses it.
- activations: ``(kt, M, lanes)``: tile i holds ``x[:, 320i : 320i+320]`` (kt = K tiles).
- result: ``(nt, M, lanes)`` int32 (int8 weights) or float32 (fp16 weights).

A matmul uses the two planes of one hemisphere: each n-tile goes to the plane free to
load soonest, the K tiles of one n-tile accumulate in the plane's accumulator slots
(``abc acc=1``), and the results leave through the VXM (where an optional epilogue of
VXM operations can be applied on the fly) into the output tensor in the other
hemisphere. What the planes and their streams are busy with carries over from one
matmul to the next in a program, so matmuls started on the same cycle overlap (one
loads its weights while another multiplies). Matmuls on the West and East planes use
disjoint streams, so two can run at the same time.

Stream use for planes in hemisphere H (directions "towards" / "away from" the planes):
weights 0..15 towards, activations 16..19 towards, accumulator results 20..27 away,
epilogue results 28..31 away.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import numpy as np

from .._core import LW_STREAMS, Tensor
from ..builder import Builder, Flow
from ..errors import CapacityError, InputError, LpuError

__all__ = ["Weights", "load_weights", "matmul", "quantize_per_channel", "weight_tiles", "dequant_epilogue"]

Epilogue = Callable[[Builder, Flow, int], Flow]


@dataclass
class Weights:
    """A weight matrix laid out for the MXM (see the module docstring)."""

    name: str
    K: int
    N: int
    dtype: str
    tiles: List[Tensor]
    planes: List[int]
    #: Per-output-channel scales (int8 only): a float32 tensor of shape (nt, lanes).
    scales: Optional[Tensor] = None
    #: rows[j][i]: weight rows of K tile i of column tile j that are stored and loaded
    #: (rows past the last nonzero one are left out: the weight buffer is zero after
    #: each ``iw``); tile j's tensor holds them back to back.
    rows: Optional[List[List[int]]] = None

    def first_row(self, j: int, i: int) -> int:
        """Vector index in tile j's tensor of K tile i's first row."""
        if self.rows is None:
            return i * self.tiles[j].shape[-1]
        return sum(self.rows[j][:i])

    @property
    def kt(self) -> int:
        return -(-self.K // self.tiles[0].shape[-1]) if self.rows is None else len(self.rows[0])

    @property
    def nt(self) -> int:
        return len(self.tiles)

    @property
    def hemi(self) -> str:
        return self.tiles[0].hemi


def quantize_per_channel(w: np.ndarray) -> "tuple[np.ndarray, np.ndarray]":
    """Symmetric int8 per output channel (column): scale = max|w[:, n]| / 127."""
    w = np.asarray(w, dtype=np.float32)
    amax = np.abs(w).max(axis=0)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
    return q, scale


def weight_tiles(w: np.ndarray, lanes: int, dtype: str) -> List[np.ndarray]:
    """Split a K x N matrix into (Kp, lanes) column tiles, zero padded."""
    K, N = w.shape
    kp = -(-K // 16) * 16
    nt = -(-N // lanes)
    out = []
    for j in range(nt):
        t = np.zeros((kp, lanes), dtype=dtype)
        cols = w[:, j * lanes : (j + 1) * lanes]
        t[:K, : cols.shape[1]] = cols
        out.append(t)
    return out


def load_weights(b: Builder, name: str, w: np.ndarray, dtype: str = "float16", *, hemi: str = "W",
                 quantized: Optional["tuple[np.ndarray, np.ndarray]"] = None) -> Weights:
    """Place a K x N weight matrix in SRAM for the planes of one hemisphere.

    ``dtype`` is "float16" (values rounded to fp16) or "int8" (symmetric per-channel
    quantisation; ``quantized=(q, scales)`` gives precomputed values).
    """
    cfg = b.config
    half = cfg.mxm_planes // 2
    planes = list(range(half)) if hemi == "W" else list(range(half, cfg.mxm_planes))
    w = np.asarray(w)
    if w.ndim != 2:
        raise InputError(f"weights '{name}' must be a K x N matrix, got shape {w.shape}")
    scales = None
    if dtype == "int8":
        q, sc = quantized if quantized is not None else quantize_per_channel(w)
        data, split = q, LW_STREAMS
        nt = -(-w.shape[1] // cfg.lanes)
        sc_pad = np.zeros(nt * cfg.lanes, dtype=np.float32)
        sc_pad[: len(sc)] = sc
        # The scales meet the results at the VXM, coming from the output's hemisphere.
        scales = b.constant(f"{name}.scales", sc_pad.reshape(nt, cfg.lanes), "float32",
                            hemi="E" if hemi == "W" else "W")
    elif dtype == "float16":
        data, split = w.astype(np.float16), LW_STREAMS // 2
    else:
        raise InputError(f"MXM weights are int8 or float16, not {dtype}")
    tiles, rows = [], []
    for j, t in enumerate(weight_tiles(data, cfg.lanes, dtype)):
        per_k, kept = [], []
        for i in range(0, t.shape[0], cfg.lanes):
            block = t[i : i + cfg.lanes]
            nz = np.nonzero(np.any(block != 0, axis=1))[0]
            used = min(block.shape[0], -(-(int(nz[-1]) + 1 if len(nz) else 1) // 16) * 16)
            per_k.append(used)
            kept.append(block[:used])
        rows.append(per_k)
        tiles.append(b.constant(f"{name}.t{j}", np.concatenate(kept), dtype, hemi=hemi, split=split))
    return Weights(name, w.shape[0], w.shape[1], dtype, tiles, planes, scales, rows)


class _Bus:
    """The next free diagonal of a set of streams flowing one way (flows on it must
    not share diagonals)."""

    def __init__(self, west: bool):
        self.west = west
        self.key = -(1 << 60)

    def earliest(self, position: int) -> int:
        return self.key - position if self.west else self.key + position

    def take(self, flow: Flow) -> None:
        self.key = max(self.key, flow.key + flow.count * flow.stride)


@dataclass
class _PlaneState:
    ld_free: int = 0
    abc_last: int = -1
    acc_free: int = 0
    #: The accumulator slot buffer (0 or 1) the next n tile on this plane uses.
    buf: int = 0
    #: Last cycle an acc reads each slot buffer (the next abc into it must come after).
    buf_read: Dict[int, int] = field(default_factory=dict)


@dataclass
class _MxmState:
    """What earlier matmuls of a program left busy: each plane, and the next free
    diagonal of the weight and result streams of each hemisphere's planes. Kept per
    builder, so that matmuls started on the same cycle (on one input, say) overlap:
    one loads its weights into a plane while another multiplies on the other."""

    planes: Dict[int, _PlaneState] = field(default_factory=dict)
    buses: Dict["tuple[bool, str]", _Bus] = field(default_factory=dict)

    def bus(self, west: bool, what: str) -> _Bus:
        return self.buses.setdefault((west, what), _Bus(west))


_STATES: "weakref.WeakKeyDictionary[Builder, _MxmState]" = weakref.WeakKeyDictionary()


def _state(b: Builder) -> _MxmState:
    return _STATES.setdefault(b, _MxmState())


def plane_state(b: Builder, plane: int) -> _PlaneState:
    """What the matmuls placed so far left busy on a plane. A kernel that uses a plane by
    itself (attention) starts after it and records its own use, so that matmuls placed
    later (which may load their weights early: ``load_from``) wait for it."""
    return _state(b).planes.setdefault(plane, _PlaneState())


def matmul(b: Builder, x: Tensor, w: Weights, y: Tensor, *, start: int = 0, epilogue: Optional[Epilogue] = None,
           y_first: int = 0, x_first: int = 0, load_from: Optional[int] = None) -> int:
    """Schedule y = x @ W from cycle `start`; returns the cycle the last result lands.

    ``x`` has shape (kt, M, lanes) (or (M, K) with K <= lanes) and the weights' dtype;
    ``y`` receives nt * M vectors starting at vector ``y_first`` (tile j, row m at
    ``y_first + j*M + m``). ``epilogue(b, flow, j)`` may transform each result tile on its
    way through the VXM (it must return a flow of the same length). With ``load_from``,
    the weights may be loaded into the planes from that cycle on (earlier than `start`,
    while x is still being made); x is read from `start`.
    """
    cfg = b.config
    lanes = cfg.lanes
    fp16 = w.dtype == "float16"
    if x.dtype != w.dtype:
        raise InputError(f"activations '{x.name}' are {x.dtype}; weights '{w.name}' are {w.dtype}")
    shape = list(x.shape)
    M = shape[-2] if len(shape) >= 2 else 1
    if x.vectors(lanes) - x_first < w.kt * M or (len(shape) == 3 and shape[0] != w.kt):
        raise InputError(f"activations '{x.name}' of shape {shape} do not hold {w.kt} K tiles of {M} rows")
    half = cfg.mxm_planes // 2
    west_planes = w.planes[0] < half
    if (y.hemi == "W") == west_planes:
        raise InputError(f"results of the {'West' if west_planes else 'East'} planes leave through the VXM: "
                       f"put '{y.name}' in the other hemisphere")
    toward = west_planes  # flows towards the planes go west for West planes
    stride = 4 if fp16 else 1
    spread = LW_STREAMS // 2 if fp16 else LW_STREAMS
    kp = w.tiles[0].shape[0]
    if M > cfg.mxm_acc_slots // 2:
        raise CapacityError(f"{M} activation rows exceed half the {cfg.mxm_acc_slots} accumulator slots")
    state = _state(b)
    wbus, obus = state.bus(toward, "weights"), state.bus(not toward, "results")
    load_start = start if load_from is None else min(start, load_from)
    end = start
    for j in range(w.nt):
        # The plane that is free to load soonest (the lowest on a tie).
        p = min(w.planes, key=lambda q: (plane_state(b, q).ld_free, q))
        ps = state.planes[p]
        pos = b.mxm_pos(p)
        buf = ps.buf
        ps.buf = 1 - buf
        slot = buf * M
        x_stream = 16 + 2 * (p % 2)
        done = 0
        for i in range(w.kt):
            rows = w.rows[j][i] if w.rows else min(lanes, kp - i * lanes)
            t = max(ps.ld_free, wbus.earliest(pos), b.earliest([w.tiles[j]], pos, load_start))
            wf = b.read(w.tiles[j], stream=0, vectors=(w.first_row(j, i), rows), arrive=(pos, t), spread=spread,
                        west=toward, search=True)
            wbus.take(wf)
            last_lw = b.mxm_load(p, wf)
            t_iw = max(last_lw + 1, ps.abc_last + 1)
            ready = b.mxm_install(p, t_iw)
            ps.ld_free = t_iw + 1
            t = max(ready, b.earliest([x], pos, start))
            if i == 0:
                t = max(t, ps.buf_read.get(buf, -1) + 1)
            xf = b.read(x, stream=x_stream, vectors=(x_first + i * M, M), arrive=(pos, t), stride=stride,
                        west=toward, search=True)
            done = b.mxm_abc(p, xf, slot, accumulate=i > 0)
            ps.abc_last = xf.at(pos) + (M - 1) * stride
        # Emit the tile when its last result is in the slots, the acc queue is free and
        # the streams towards the VXM are free on the needed diagonals.
        t = max(done, ps.acc_free, obus.earliest(pos) - b.lat["mxm_acc"])
        while True:
            mark = b.checkpoint()
            try:
                af = b.mxm_acc(p, slot, M, at=t, stream=20 + 4 * (p % 2), west=not toward)
                out = epilogue(b, af, j) if epilogue is not None else af
                landed = b.write(out, y, vectors=(y_first + j * M, M))
                break
            except LpuError:
                b.rollback(mark)
                t += 1
                if t > done + 100_000:
                    raise
        obus.take(af)
        ps.acc_free = t + M
        ps.buf_read[buf] = t + M - 1
        end = max(end, landed)
    return end


def dequant_epilogue(w: Weights, row_scale: Optional[Tensor] = None) -> Epilogue:
    """For int8 weights: y = float32(acc) * scales[n] (* row_scale), on the way
    through the VXM. ``row_scale`` is a float32 tensor of shape (M, lanes) holding each
    activation row's scale in every lane (dynamic activation quantisation)."""
    if w.scales is None:
        raise InputError(f"weights '{w.name}' have no scales")
    scales = w.scales

    def epi(b: Builder, acc: Flow, j: int) -> Flow:
        f = b.vxm("cast", acc, dtype="int32", to="float32")  # chained in the ALU
        s = b.read(scales, stream=12, vectors=(j, 1), arrive=(b.vxm_pos, f.cycle))
        if acc.count > 1:
            raise InputError("dequant_epilogue handles one activation row per tile")
        if row_scale is None:
            return b.vxm("mul", f, s, stream=28, west=acc.west)
        g = b.vxm("mul", f, s)
        r = b.read(row_scale, stream=8, vectors=(0, 1), arrive=(b.vxm_pos, g.cycle))
        return b.vxm("mul", g, r, stream=28, west=acc.west)

    return epi
