"""Decode-time attention over a KV cache held in SRAM, with RoPE.

One decode step handles one new token at position ``pos``. ``pos`` lives on the chip
(an int16 vector, every lane = pos) and everything that depends on it is data-driven,
so one static program serves every position:

- RoPE (Hugging Face ``rotate_half`` layout): ``x*cos + permute(x)*sin'``. The cos/sin
  rows for ``pos`` are fetched with ``gather`` (per-lane address = table base + pos) as
  the map passes the tables on its way to the VXM; the SXM permuter swaps the two
  halves of every head.
- Appending k and v: a cache is an ``(S + ROWS, kv_dim)`` fp16 tensor split over
  ``ROWS`` = 8 slices (the fp16 rows one ``lw`` takes per cycle). Row ``pos`` is written
  by a ``scatter`` in every slice whose map sends it to address ``pos // 8`` in slice
  ``pos % 8`` and to a spare word (rows S..S+7) in the other seven.
- Scores: the K cache rows are installed in an MXM plane *transposed*
  (``iw transpose=1``: column t = key t); each query head, moved into its kv head's
  lanes, goes through it as one activation row, giving one vector per head with
  q_h . k_t / sqrt(hd) in lane t. All heads then travel together, one vector each.
- Softmax across the lanes of each head's vector: lanes after ``pos`` get -inf, the
  maximum comes from :func:`~lpu.kernels.reduce.allreduce` (a tree of SXM shifts, all
  heads as one series), and e = exp(s - max) is stored as fp16 rows. The sum of each
  row is a matrix product: the rows go through a plane of ones (the first East plane,
  loaded once per program), which sums every lane in order and leaves the total in
  every lane; ``1/z`` is ``rsqrt(z)**2``.
- P . V: the V cache rows are installed in the plane, and each head's row of e goes
  through it; each head's result is shifted from its kv head's lanes to its own (those
  of its query) by the SXM on its way out and multiplied at the VXM by its ``1/z``,
  zero outside its lanes (normalising after the product uses the same fp16 e in the
  sum and in P . V, so the weights sum to one). The heads of each tile are then summed
  into one vector, which adds each head to zeros: exact.

Result: ``out`` is a ``(H * hd,)`` fp16 vector laid out as the query (head h in
elements h*hd..), so the output projection is one matmul by ``wo.T``: one weight
install per tile rather than one per head (a decode step of the bundled model loads 28
fewer planes).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Dict, List, Tuple

import numpy as np

from .._core import LW_STREAMS, Tensor
from ..builder import Builder, Flow, _stream_operand
from ..errors import CapacityError, InputError, LpuError
from .reduce import allreduce
from .matmul import plane_state
from .vector import retry

#: fp16 rows one ``lw`` takes (two streams each). A cache is split over this many slices,
#: so that its rows reach a plane at that rate; positions are addressed as
#: (pos // ROWS, pos % ROWS).
ROWS = LW_STREAMS // 2
assert ROWS & (ROWS - 1) == 0, "pos % ROWS and pos // ROWS are a mask and a shift"

__all__ = [
    "AttentionShape",
    "DecodeState",
    "new_state",
    "new_cache",
    "rope_tables",
    "prologue",
    "rope",
    "append",
    "attend",
    "advance",
]


@dataclass(frozen=True)
class AttentionShape:
    """Heads, kv heads, head width, cache length and RoPE base of one model."""

    n_heads: int
    n_kv_heads: int
    head_dim: int
    max_seq: int
    rope_theta: float = 10000.0

    @property
    def q_dim(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    def kv_head(self, h: int) -> int:
        return h // (self.n_heads // self.n_kv_heads)

    def tiles(self, width: int, lanes: int) -> int:
        """Vectors a row of `width` lanes takes."""
        return -(-width // lanes)


def rope_tables(shape: AttentionShape, width: int, scale: float = 1.0) -> Tuple[np.ndarray, np.ndarray]:
    """(cos, sin') of shape (max_seq, width): column j of row p holds cos/sin of
    p * theta**(-2i/hd), i = j mod hd/2, in every head; sin' is negated in the first
    half of each head (rotate_half). Both multiplied by `scale`."""
    hd = shape.head_dim
    half = hd // 2
    inv = shape.rope_theta ** (-np.arange(half, dtype=np.float64) * 2 / hd)
    ang = np.arange(shape.max_seq, dtype=np.float64)[:, None] * inv[None, :]
    cos = np.zeros((shape.max_seq, width))
    sin = np.zeros((shape.max_seq, width))
    for h in range(width // hd):
        o = h * hd
        cos[:, o : o + half] = cos[:, o + half : o + hd] = np.cos(ang)
        sin[:, o : o + half] = -np.sin(ang)
        sin[:, o + half : o + hd] = np.sin(ang)
    return (cos * scale).astype(np.float32), (sin * scale).astype(np.float32)


@dataclass
class DecodeState:
    """The tensors decode attention shares across layers (q has qt tiles, k/v kvt)."""

    shape: AttentionShape
    pos: Tensor          # int16: every lane = position of the token being decoded
    posf: Tensor         # float32 copy of pos
    rope_map: Tensor     # int16 (qt + kvt, lanes): addresses of the rope rows for pos, per tile
    cache_map: Tensor    # int16 (ROWS, lanes): relative scatter address per cache slice
    tables: Tuple[Tensor, Tensor, Tensor, Tensor]  # cos_q, sin_q (scaled by 1/sqrt(hd)), cos_k, sin_k
    perm: Tensor         # int16 lane map of rotate_half
    consts: Dict[str, Tensor]  # int16 constant vectors (see new_state)
    lanev: Tensor        # float32 (H, lanes): lane t = t in every row
    neg: Tensor          # float32 (H, lanes): -inf
    kvmask: Tensor       # float32 (heads per tile, lanes): 1 on a head's lanes within a tile
    qp: List[Tensor]     # per kv tile, float16 (H, lanes): query heads in their kv head's lanes
    scores: Tensor       # float32 (H, lanes) scratch: head h's score of position t in lane t
    maxes: Tensor        # float32 (H, lanes) scratch: row h = max of scores row h in every lane
    probs: Tensor        # float16 (H, lanes) scratch: exp(score - max), unnormalised
    invs: Tensor         # float32 (H, lanes) scratch: row h = 1 / sum of probs row h on head h's lanes, else 0
    headmask: Tensor     # float32 (H, lanes): 1 on head h's lanes of its query tile in row h
    heads: Tensor        # float16 (H, lanes) scratch: head h's output on its lanes, else 0
    ones: Tensor         # float16 (S, lanes): ones, the weights of the sum plane
    #: Cycle the sum plane's ones can be used (set by the first attend; -1 before).
    ones_ready: int = -1
    #: Instructions on the sum plane's load queue once the ones were placed.
    ones_loads: int = 0

    @property
    def qt(self) -> int:
        return self.tables[0].vectors(self.lanev.shape[-1]) // self.shape.max_seq

    @property
    def kvt(self) -> int:
        return self.tables[2].vectors(self.lanev.shape[-1]) // self.shape.max_seq


def new_state(b: Builder, shape: AttentionShape) -> DecodeState:
    """Allocate the decode-attention tensors. The rope tables sit at one address in the
    16 East slices nearest the VXM, the gather map in the farthest ones, so the map read
    from there passes the tables on its way to the VXM. The small constants live in the
    West; keep the activations that meet them (queries, keys) in the East."""
    cfg = b.config
    lanes = cfg.lanes
    S = shape.max_seq
    hd = shape.head_dim
    if S > lanes or S % ROWS:
        raise InputError(f"max_seq {S} must be a multiple of {ROWS} and at most {lanes} (one tile of positions)")
    if hd % 2 or lanes % hd or shape.n_heads % shape.n_kv_heads:
        raise InputError(f"head_dim {hd} must be even and divide {lanes}; n_heads a multiple of n_kv_heads")
    if shape.n_heads > lanes:
        raise InputError(f"at most {lanes} heads")
    if cfg.mem_slices < 18:
        raise CapacityError("decode attention needs at least 18 MEM slices per hemisphere")
    qt, kvt = shape.tiles(shape.q_dim, lanes), shape.tiles(shape.kv_dim, lanes)
    cq, sq = rope_tables(shape, qt * lanes, 1.0 / np.sqrt(hd))
    ck, sk = rope_tables(shape, kvt * lanes, 1.0)
    base = max(b.alloc.used(1, s) for s in range(16))
    tables = tuple(
        b.constant(f"_rope_{n}", arr, "float32", hemi="E", slices=list(range(4 * i, 4 * i + 4)), addr=base)
        for i, (n, arr) in enumerate((("cos_q", cq), ("sin_q", sq), ("cos_k", ck), ("sin_k", sk)))
    )
    far = [cfg.mem_slices - 2, cfg.mem_slices - 1]
    perm = np.arange(lanes)
    half = hd // 2
    for o in range(0, lanes, hd):
        perm[o : o + half] = np.arange(o + half, o + hd)
        perm[o + half : o + hd] = np.arange(o, o + half)
    hpt = lanes // hd
    kvm = np.zeros((hpt, lanes), np.float32)
    for k in range(hpt):
        kvm[k, k * hd : (k + 1) * hd] = 1
    pos = b.scratch("pos", "int16", (lanes,), hemi="W")
    consts: Dict[str, Tensor] = {}

    def i16(name: str, value: object) -> None:
        arr = np.asarray(value, dtype=np.int16)
        if arr.ndim == 0:
            arr = np.full(lanes, arr, np.int16)
        # Read together with pos and each other: keep them in slices of their own.
        consts[name] = b.constant(f"_attn_{name}", arr, "int16", hemi="W", apart_from=[pos, *consts.values()])

    col = np.ones((1, lanes), np.int16)
    for name, value in (
        ("j", np.arange(ROWS, dtype=np.int16)[:, None] * col), ("seven", ROWS - 1), ("spare", S // ROWS),
        ("three", ROWS.bit_length() - 1),
        ("one", 1), ("ntiles", np.array([qt] * qt + [kvt] * kvt, np.int16)[:, None] * col),
        ("tile_base", np.array([base + i for i in range(qt)] + [base + i for i in range(kvt)], np.int16)[:, None] * col),
    ):
        i16(name, value)
    H = shape.n_heads
    scores = b.scratch("_scores", "float32", (H, lanes), hemi="E")
    return DecodeState(
        shape=shape,
        pos=pos,
        posf=b.scratch("_posf", "float32", (lanes,), hemi="W"),
        rope_map=b.scratch("_rope_map", "int16", (qt + kvt, lanes), hemi="E", slices=far),
        cache_map=b.scratch("_cache_map", "int16", (ROWS, lanes), hemi="W", split=ROWS),
        tables=tables,  # type: ignore[arg-type]
        perm=b.constant("_rope_perm", perm.astype(np.int16), "int16", hemi="W"),
        consts=consts,
        lanev=b.constant("_lanev", np.repeat(np.arange(lanes, dtype=np.float32)[None, :], H, 0), "float32",
                         hemi="W"),
        neg=b.constant("_neg", np.full((H, lanes), -np.inf, np.float32), "float32", hemi="W"),
        kvmask=b.constant("_kvmask", kvm, "float32", hemi="W"),
        qp=[b.constant(f"_qp{i}", np.zeros((H, lanes), np.float16), "float16", hemi="E")
            for i in range(kvt)],
        scores=scores,
        maxes=b.scratch("_maxes", "float32", (H, lanes), hemi="E", apart_from=[scores]),
        probs=b.scratch("_probs", "float16", (H, lanes), hemi="E"),
        invs=b.scratch("_invs", "float32", (H, lanes), hemi="E"),
        headmask=b.constant("_headmask", kvm[np.arange(H) % hpt], "float32", hemi="W"),
        heads=b.scratch("_heads", "float16", (H, lanes), hemi="E"),
        ones=b.constant("_ones", np.ones((S, lanes), np.float16), "float16", hemi="E", split=ROWS),
    )


def new_cache(b: Builder, st: DecodeState, name: str) -> List[Tensor]:
    """A KV cache: one (S + 8, lanes) fp16 tensor per kv tile, each over 8 East slices
    (rows S.. are the spare words), with a constant `<name>.base` (its address in every
    lane) for the scatter maps."""
    out = []
    for i in range(st.kvt):
        t = b.scratch(f"{name}{i}", "float16", (st.shape.max_seq + ROWS, b.lanes), hemi="E", split=ROWS)
        b.constant(f"{t.name}.base", np.full(b.lanes, t.addr, np.int16), "int16", hemi="W", apart_from=[st.cache_map])
        out.append(t)
    return out


def _const(b: Builder, st: DecodeState, name: str, stream: int, at: int) -> Flow:
    return b.read(st.consts[name], stream=stream, arrive=(b.vxm_pos, at))


def prologue(b: Builder, st: DecodeState, *, start: int = 0) -> int:
    """Derive what depends on `pos`: posf, the rope gather map, and the 8 relative cache
    scatter maps (pos // 8 in slice pos % 8, the spare word S/8 elsewhere)."""
    vxm = b.vxm_pos
    t0 = b.earliest([st.pos] + list(st.consts.values()), vxm, start) + 2

    def attempt(t: int) -> int:
        p = b.read(st.pos, stream=0, arrive=(vxm, t))
        end = b.write(b.vxm("cast", p, dtype="int16", to="float32", stream=4, west=True), st.posf)
        # Rope rows: tile i of row pos is at base + i + pos * (tiles per row).
        n = st.qt + st.kvt
        ps = b.hold(p, n)
        nt = b.read(st.consts["ntiles"], stream=8, arrive=(vxm, ps.cycle), stride=2)
        rows = b.vxm("mul", ps, nt)
        offs = b.read(st.consts["tile_base"], stream=12, arrive=(vxm, rows.cycle), stride=2)
        end = max(end, b.write(b.vxm("add", rows, offs, stream=8, west=False), st.rope_map))
        # r = pos & 7, and q = pos >> 3 two cycles later, each held for 8 steps.
        r = b.vxm("and", p, _const(b, st, "seven", 16, t))
        p2 = b.read(st.pos, stream=20, arrive=(vxm, t + 2))
        q = b.vxm("shr", p2, _const(b, st, "three", 24, t + 2))
        rs = b.hold(r, ROWS)
        sel = b.vxm("eq", rs, b.read(st.consts["j"], stream=28, arrive=(vxm, rs.cycle), stride=2))
        qs = b.hold(q, ROWS)
        spare = b.hold(_const(b, st, "spare", 4, sel.cycle - 2), ROWS)
        if not qs.cycle == spare.cycle == sel.cycle:
            raise LpuError("internal: prologue timing")
        rel = b.vxm("add", b.vxm("mask", qs, sel), b.vxm("maskn", spare, sel), stream=0, west=True)
        return max(end, b.write(rel, st.cache_map))

    return retry(b, "prologue", t0, attempt)


def rope(b: Builder, st: DecodeState, x: Tensor, out: Tensor, *, which: str = "q", start: int = 0) -> int:
    """out = x * cos[pos] + rotate_half(x) * sin[pos], tile by tile (the q tables
    include 1/sqrt(hd))."""
    vxm, sxm = b.vxm_pos, b.sxm_pos("W")
    cos_t, sin_t = st.tables[:2] if which == "q" else st.tables[2:]
    first_map = 0 if which == "q" else st.qt
    glat = b.lat["mem_gather"]
    end = start
    for i in range(x.vectors(b.lanes)):
        t = b.earliest([x, st.perm], sxm, end)
        # The gathered rows must reach the VXM with the permuted x: make sure the map can.
        t = max(t, b.earliest([st.rope_map], vxm, start) + glat - (vxm - sxm) - b.lat["sxm_permute"])

        def attempt(t: int, i: int = i) -> int:
            xs = b.read(x, stream=0, vectors=(i, 1), arrive=(sxm, t))
            mp = b.read(st.perm, stream=4, arrive=(sxm, t))
            px = b.sxm("permute", xs, hemi="W", stream=0, west=False, map=mp)
            tv = px.at(vxm)
            gm = b.read(st.rope_map, stream=8, vectors=(first_map + i, 1), arrive=(vxm, tv - glat))
            cos, sin = b.gather(cos_t, gm, stream=12), b.gather(sin_t, gm, stream=16)
            a = b.vxm("mul", b.read(x, stream=20, vectors=(i, 1), arrive=(vxm, tv)), cos)
            y = b.vxm("add", a, b.vxm("mul", px, sin))
            if out.dtype != "float32":
                y = b.vxm("cast", y, dtype="float32", to=out.dtype)
            yf = b.vxm("copy", y, stream=24, west=out.hemi == "W", dtype=out.dtype)
            return b.write(yf, out, vectors=(i, 1))

        end = max(end, retry(b, "rope", t, attempt))
    return end


def append(b: Builder, st: DecodeState, x: Tensor, cache: List[Tensor], *, start: int = 0) -> int:
    """Write the float32 vector x (kv_dim) as fp16 row `pos` of the cache (one tensor
    per kv tile)."""
    vxm = b.vxm_pos
    end = start
    for i, c in enumerate(cache):
        base = next(t for t in b._tensors if t.name == f"{c.name}.base")
        t = b.earliest([x, st.cache_map, base], vxm, end) + 8
        end = max(end, retry(b, "append", t, partial(_append_at, b, st, x, i, c, base)))
    return end


def _append_at(b: Builder, st: DecodeState, x: Tensor, tile: int, cache: Tensor, base: Tensor, t: int) -> int:
    vxm = b.vxm_pos
    west = cache.hemi == "W"
    cast_lat, add_lat = b.lat["vxm_cast"], b.lat["vxm_basic"]
    xs = b.read(x, stream=0, vectors=(tile, 1), arrive=(vxm, t))
    data = b.vxm("cast", xs, dtype="float32", to="float16", stream=0, west=west)
    # The 8 maps (relative map + cache base) land on the same cycle as the data.
    t_m = t + cast_lat - add_lat
    rels = b.read(st.cache_map, stream=16, arrive=(vxm, t_m), spread=ROWS)
    bs = b.read(base, stream=4, arrive=(vxm, t_m))
    maps: List[Flow] = []
    for j in range(ROWS):
        rj = Flow(rels.base + 2 * j, 2, rels.west, rels.key, rels.origin, 1, 1, "int16", 1, rels.fid)
        mj = b.vxm("add", rj, bs, stream=2 + 2 * j, west=west)
        assert isinstance(mj, Flow)
        maps.append(mj)
    end = 0
    hemi = 0 if cache.hemi == "W" else 1
    for j, mp in enumerate(maps):
        for plane in range(2):
            sl = cache.slices[plane * ROWS + j]
            pos = b.config.mem_position(hemi, sl)
            tt = data.at(pos)
            q = b._mem_queue(hemi, sl, tt, tt, True)
            b._mark(hemi, sl, tt, 1, 1, -1, True)
            ident = b.place(q, tt, "scatter", [mp.operand(), _stream_operand(data.base + plane, data.west)])
            b._banks.append((hemi, sl, tt, 1, 1, -1, True, ident))
            b._stream_read(data, pos, tt, 1, 1, ident, [data.base + plane])
            b._stream_read(mp, pos, tt, 1, 1, ident)
            end = max(end, tt + b.lat["mem_scatter"])
    return end


def _masked_max(b: Builder, st: DecodeState, plane: int, t: int) -> int:
    """Scores from the slots (read from cycle `t`) with positions after pos set to
    -inf, into ``scores``; their maximum over the lanes of each head into ``maxes``."""
    H = st.shape.n_heads
    vxm = b.vxm_pos
    lat = b.lat["vxm_basic"]
    sc = b.mxm_acc(plane, 0, H, at=t, stream=20, west=False, stride=lat)
    T = sc.at(vxm)
    posf = b.hold(b.read(st.posf, stream=4, arrive=(vxm, T - lat)), H)
    valid = b.vxm("le", b.read(st.lanev, stream=8, vectors=(0, H), arrive=(vxm, T), stride=lat), posf)
    kept = b.vxm("mask", b.vxm("copy", sc), valid)
    dropped = b.vxm("maskn", b.read(st.neg, stream=12, vectors=(0, H), arrive=(vxm, valid.cycle), stride=lat), valid)
    s = b.vxm("add", kept, dropped, stream=24, west=False)
    landed = b.write(s, st.scores)
    return max(landed, b.write(allreduce(b, s, "max", stream=8), st.maxes))


def _exps(b: Builder, st: DecodeState, t: int) -> int:
    """e = exp(scores - max) as fp16 rows of ``probs`` (unnormalised)."""
    vxm, lat = b.vxm_pos, b.lat["vxm_basic"]
    s = b.read(st.scores, stream=24, arrive=(vxm, t), stride=lat)
    m = b.read(st.maxes, stream=28, arrive=(vxm, t), stride=lat)
    e = b.vxm("cast", b.vxm("exp", b.vxm("sub", s, m)), dtype="float32", to="float16", stream=24, west=False)
    return b.write(e, st.probs)


def _inverse_sums(b: Builder, st: DecodeState, plane: int, t: int) -> int:
    """From the sum plane's slots (read from cycle `t`): 1 / sum on each head's lanes
    (rsqrt(z)^2), zero on the others, into ``invs``."""
    lat = b.lat["vxm_basic"]
    H = st.shape.n_heads
    z = b.mxm_acc(plane, 0, H, at=t, stream=20, west=True, stride=lat)
    r = b.vxm("rsqrt", z)
    inv = b.vxm("mul", r, r)
    m = b.read(st.headmask, stream=8, vectors=(0, H), arrive=(b.vxm_pos, inv.cycle), stride=lat)
    return b.write(b.vxm("mask", inv, m, stream=24, west=False), st.invs)


def _out_row(b: Builder, st: DecodeState, plane: int, slot: int, h: int, t: int) -> Tuple[int, int]:
    """Head h's P.V from `slot` (read at `t`), shifted from its kv head's lanes to its
    own on its way past the SXM, times 1 / sum there and 0 elsewhere, as fp16 row h of
    ``heads``. Returns when it lands, and `t`."""
    sh = st.shape
    hpt = b.lanes // sh.head_dim
    y = b.mxm_acc(plane, slot, 1, at=t, stream=20, west=False)
    n = (h % hpt - sh.kv_head(h) % hpt) * sh.head_dim
    moved = b.sxm("shiftn" if n > 0 else "shifts", y, hemi="W", stream=24, west=False, n=abs(n))
    inv = b.read(st.invs, stream=28, vectors=(h, 1), arrive=(b.vxm_pos, moved.at(b.vxm_pos)))
    y16 = b.vxm("cast", b.vxm("mul", moved, inv), dtype="float32", to="float16", stream=8, west=False)
    assert isinstance(y16, Flow)
    return b.write(y16, st.heads, vectors=(h, 1)), t


def _sum_heads(b: Builder, st: DecodeState, tile: int, out: Tensor, t: int) -> int:
    """The rows of ``heads`` of query tile `tile` (read from cycle `t`), each zero off its
    own lanes, summed into vector `tile` of `out`."""
    hpt = b.lanes // st.shape.head_dim
    first = tile * hpt
    n = min(st.shape.n_heads, first + hpt) - first
    rows = b.read(st.heads, stream=12, vectors=(first, n), arrive=(b.vxm_pos, t), stride=b.lat["vxm_basic"])
    west = out.hemi == "W"
    total = b.scan("add", rows, stream=8, west=west) if n > 1 else b.vxm("copy", rows, stream=8, west=west)
    return b.write(total, out, vectors=(tile, 1))


def attend(b: Builder, st: DecodeState, q: Tensor, kc: List[Tensor], vc: List[Tensor], out: Tensor, *,
           start: int = 0, plane: int = 0) -> int:
    """Attention of the rope'd query q (float32, H*hd) over cache rows 0..pos; writes
    `out` (fp16, H*hd: head h's result in elements h*hd.., as in q)."""
    sh = st.shape
    H, hd, S = sh.n_heads, sh.head_dim, sh.max_seq
    lanes = b.lanes
    hpt = lanes // hd  # heads per tile
    vxm, sxm = b.vxm_pos, b.sxm_pos("W")
    pp = b.mxm_pos(plane)
    if plane >= b.config.mxm_planes // 2:
        raise InputError("attend runs on a West plane")
    if out.dtype != "float16" or out.vectors(lanes) != st.qt:
        raise InputError(f"attend writes a float16 vector of {H * hd} (as q); '{out.name}' is {out.dtype} "
                         f"of {out.vectors(lanes)} vectors, not {st.qt}")
    # 1. Each query head into its kv head's lanes of that kv tile (SXM shift), masked, fp16.
    end = start
    for h in range(H):
        g = sh.kv_head(h)
        n = (h % hpt - g % hpt) * hd
        t = b.earliest([q, st.kvmask], sxm, end if h == 0 else start)

        def attempt(t: int, h: int = h, g: int = g, n: int = n) -> int:
            xs = b.read(q, stream=20, vectors=(h // hpt, 1), arrive=(sxm, t), west=True)
            moved = b.sxm("shifts" if n >= 0 else "shiftn", xs, hemi="W", stream=0, west=False, n=abs(n))
            m = b.read(st.kvmask, stream=4, vectors=(g % hpt, 1), arrive=(vxm, moved.at(vxm)))
            y = b.vxm("cast", b.vxm("mul", moved, m), dtype="float32", to="float16", stream=8, west=False)
            return b.write(y, st.qp[g // hpt], vectors=(h, 1))

        end = max(end, retry(b, "attend", t, attempt))
    # 2. Scores: per kv tile, its K rows installed transposed (column t = key t; loaded
    # while step 1 runs), the query rows through it, accumulating over kv tiles in the
    # slots: slot h holds head h's scores with position t in lane t.
    done = 0
    # After what the matmuls placed so far do on the plane (ld_free: the last iw).
    own = plane_state(b, plane)
    last_abc, ld_free = max([own.abc_last, *own.buf_read.values()]), own.ld_free - 1
    for i, k_i in enumerate(kc):
        at = max(b.earliest([k_i], pp, start), ld_free + 1)
        kf = b.read(k_i, stream=0, vectors=(0, S), spread=ROWS, arrive=(pp, at), west=True, search=True)
        ld_free = max(b.mxm_load(plane, kf) + 1, last_abc + 1)
        ready = b.mxm_install(plane, ld_free, transpose=True)
        qf = b.read(st.qp[i], stream=16, vectors=(0, H), arrive=(pp, max(ready, b.earliest([st.qp[i]], pp, end))),
                    stride=4, west=True, search=True)
        done = b.mxm_abc(plane, qf, 0, accumulate=i > 0)
        last_abc = qf.at(pp) + 4 * (H - 1)
    # 3. Positions after pos masked, and each head's maximum over its lanes.
    t_p = retry(b, "softmax", done, partial(_masked_max, b, st, plane))
    # 4. e = exp(s - max) as fp16 rows (P unnormalised: 1 / sum is applied to P.V).
    t_p = retry(b, "softmax", b.earliest([st.scores, st.maxes], vxm, t_p), partial(_exps, b, st))
    # 5. Each head's sum of e, in every lane: e through a plane of ones (installed once
    # per program on the first East plane), summed in order over positions; then 1/sum.
    ps = b.config.mxm_planes // 2
    pe = b.mxm_pos(ps)
    loads = len(b._queues.get(f"mxm{ps}.ld", ()))
    if st.ones_ready < 0:
        if loads:
            raise InputError(f"attend sums on MXM plane {ps} (the first East plane), which this program "
                             "already loads: keep that plane for attention")
        of = b.read(st.ones, stream=0, spread=ROWS, arrive=(pe, b.earliest([st.ones], pe, start)), west=False,
                    search=True)
        st.ones_ready = b.mxm_install(ps, b.mxm_load(ps, of) + 1)
        st.ones_loads = len(b._queues[f"mxm{ps}.ld"])
    elif loads != st.ones_loads:
        raise InputError(f"MXM plane {ps} holds attention's ones, and something else loaded it since the "
                         "first attend: keep that plane for attention")
    ef = b.read(st.probs, stream=16, arrive=(pe, max(st.ones_ready, b.earliest([st.probs], pe, t_p))), stride=4,
                west=False, search=True)
    retry(b, "softmax", b.mxm_abc(ps, ef, 0), partial(_inverse_sums, b, st, ps))
    # 6. Per kv tile: P_h . V for the heads of that tile, each shifted to its query's
    # lanes and scaled by 1 / sum (zero off those lanes) on its way out.
    end = 0
    acc_free = 0
    slot = H
    lands = [0] * H
    for i, v_i in enumerate(vc):
        heads = [h for h in range(H) if sh.kv_head(h) // hpt == i]
        at = max(b.earliest([v_i], pp, last_abc), ld_free + 1)
        vf = b.read(v_i, stream=0, vectors=(0, S), spread=ROWS, arrive=(pp, at), west=True, search=True)
        ld_free = max(b.mxm_load(plane, vf) + 1, last_abc + 1)
        ready = b.mxm_install(plane, ld_free)
        acts = b.read(st.probs, stream=16, vectors=(heads[0], len(heads)),
                      arrive=(pp, max(ready, b.earliest([st.probs], pp, t_p))), stride=4, west=True, search=True)
        done = b.mxm_abc(plane, acts, slot)
        last_abc = acts.at(pp) + 4 * (len(heads) - 1)
        for n, h in enumerate(heads):
            landed, t_acc = retry(b, "attend", max(done + n, acc_free),
                                  partial(_out_row, b, st, plane, slot + n, h))
            end = max(end, landed)
            lands[h] = landed
            acc_free = t_acc + 1
        slot += len(heads)
    # The matmuls placed after this wait for its use of the plane and its slots.
    own.ld_free, own.abc_last, own.acc_free = ld_free + 1, last_abc, acc_free
    own.buf_read = {0: acc_free - 1, 1: acc_free - 1}
    # 7. The heads of each query tile summed into one vector of `out`, reading each row
    # as soon as it is there.
    lat = b.lat["vxm_basic"]
    for tile in range(st.qt):
        rows = lands[tile * hpt : (tile + 1) * hpt]
        t = max(land + b.lat["mem_read"] - k * lat for k, land in enumerate(rows))
        end = max(end, retry(b, "attend", t, partial(_sum_heads, b, st, tile, out)))
    return end


def advance(b: Builder, st: DecodeState, *, start: int = 0) -> int:
    """pos += 1, for the next decode step."""
    vxm = b.vxm_pos
    t = b.earliest([st.pos, st.consts["one"]], vxm, start)
    p = b.read(st.pos, stream=0, arrive=(vxm, t), search=True)
    one = _const(b, st, "one", 4, p.at(vxm))
    return b.write(b.vxm("add", p, one, stream=0, west=True), st.pos)
