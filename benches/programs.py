"""The programs the benchmarks run, built with the public Builder (or, for the SXM
16-stream case, the same assembly helpers the engine tests use)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import numpy as np

import lpu
from lpu.builder import Builder
from lpu.kernels.matmul import load_weights

WORDS_PER_SLICE = 8000  # a little under tsp_v1's 8192 addresses


@dataclass
class Case:
    program: lpu.Program
    tensors: Dict[str, lpu.Tensor]


def stream_add(cfg: lpu.ChipConfig, n: int, dtype: str) -> Case:
    """z = x + y over n vectors: both operands stream from SRAM to the VXM and the sums
    stream back, one vector per cycle."""
    b = Builder(cfg)
    split = -(-n // WORDS_PER_SLICE)
    x = b.input("x", dtype, (n, cfg.lanes), hemi="W", split=split)
    y = b.input("y", dtype, (n, cfg.lanes), hemi="E", split=split)
    z = b.output("z", dtype, (n, cfg.lanes), hemi="E", split=split, apart_from=[y])
    t = b.earliest([x, y], b.vxm_pos)
    xs = b.read(x, stream=0, arrive=(b.vxm_pos, t))
    ys = b.read(y, stream=4, arrive=(b.vxm_pos, t))
    b.write(b.vxm("add", xs, ys, stream=8), z)
    return Case(b.build(), {"x": x, "y": y, "z": z})


def stream_matmul(cfg: lpu.ChipConfig, n: int, w: np.ndarray) -> Case:
    """y = x @ w for n activation vectors through one MXM plane: the weights are
    installed once, activations stream in (int8: one per cycle, fp16: one every 4), and
    each result leaves the accumulator as soon as it is ready."""
    dtype = "int8" if w.dtype == np.int8 else "float16"
    lanes = cfg.lanes
    b = Builder(cfg)
    wt = load_weights(b, "w", w, dtype, hemi="W",
                      quantized=(w, np.ones(lanes, np.float32)) if dtype == "int8" else None)
    split = -(-n // WORDS_PER_SLICE)
    x = b.input("x", dtype, (n, lanes), hemi="W", split=split)
    y = b.output("y", "int32" if dtype == "int8" else "float32", (n, lanes), hemi="E", split=split)
    p = wt.planes[0]
    pos = b.mxm_pos(p)
    wf = b.read(wt.tiles[0], stream=0, vectors=(0, wt.rows[0][0]), arrive=(pos, 0),
                spread=16 if dtype == "int8" else 8, west=True, search=True)
    ready = b.mxm_install(p, b.mxm_load(p, wf) + 1)
    stride = 1 if dtype == "int8" else 4
    xf = b.read(x, stream=16, arrive=(pos, ready), stride=stride, west=True, search=True)
    b.mxm_abc(p, xf, 0)
    af = b.mxm_acc(p, 0, n, at=xf.at(pos) + b.lat["mxm_abc"], stream=20, west=False, stride=stride)
    b.write(af, y)
    return Case(b.build(), {"x": x, "y": y})


def dispatch(cfg: lpu.ChipConfig, per_queue: int) -> lpu.Program:
    """Every MEM slice of both hemispheres issues `per_queue` separate reads, one per
    cycle (no repeats, so nothing can be batched)."""
    lines = [f".chip {cfg.name}"]
    for hemi in "WE":
        for s in range(cfg.mem_slices):
            lines.append(f".queue mem.{hemi}{s}.0")
            d = "e" if hemi == "W" else "w"
            lines += [f"    read {a % cfg.addresses}, s{s % 32}{d}" for a in range(per_queue)]
    return lpu.assemble("\n".join(lines))


def transpose16(cfg: lpu.ChipConfig, steps: int):
    """`steps` transposes of 16 streams in the West SXM: stream j of step b is read from
    xa row b of slice j (j < 8, West) or xb (East, slice j - 8); result stream i goes to
    ya / yb the same way, in slices 8..15. Returns the assembly helper's program."""
    import enginehelp as h

    sx = cfg.sxm_position(0)
    p = h.Prog(cfg)
    for name, kind, first in (("x", "input", 0), ("y", "output", 8)):
        for half, hemi in (("a", "W"), ("b", "E")):
            p.tensor(kind, name + half, "i8", [8 * steps, cfg.lanes], hemi, list(range(first, first + 8)), split=8)
    t = h.lat(cfg, "mem_read") + abs(sx - h.mem_pos(cfg, "E", 7))
    for j in range(16):
        hemi, s = ("W", j) if j < 8 else ("E", j - 8)
        p.read(hemi, s, 0, f"s{j}w", t, sx, steps - 1)
    d = h.lat(cfg, "sxm_transpose")
    p.at("sxm.W.trans1", t, "transpose s0w, s0e", d, repeat=steps - 1)
    for i in range(16):
        hemi, s = ("W", 8 + i) if i < 8 else ("E", i)
        p.write(hemi, s, 0, f"s{i}e", t + d, sx, steps - 1)
    return p.assemble()
