"""A Llama-style decoder compiled to one program that runs a decode step on the chip.

Every matmul, norm, RoPE, attention, SwiGLU and the classifier run as kernels on the
emulated chip; weights (fp16) and the KV cache live in its SRAM, and so does the
position. Per token the host writes the token's embedding row, runs the program and
reads the logits (and the on-chip argmax).

Placement: the weights of every matmul sit in the West hemisphere and run on the two
West MXM planes; activations live in the East (results of West planes leave through
the VXM towards the East), which is also where the attention kernels want them.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from .._core import Chip, ChipConfig, Program, RunStatus, Tensor
from ..builder import Builder
from ..errors import CapacityError, IncompleteRunError, InputError
from ..kernels import attention as A
from ..kernels.matmul import Weights, dequant_epilogue, load_weights, matmul
from ..kernels.vector import argmax, binary, quantize, rmsnorm, swiglu
from ..files import PathLike
from ..layout import check_array, read_tensor, write_tensor
from .weights import Model

__all__ = ["ChipModel", "StepInfo", "compile_model"]

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class StepInfo:
    """Cost of one decode step on the emulated chip."""

    cycles: int
    clock_hz: int
    host_seconds: float
    macs_fp16: int
    mxm_utilization: float

    @property
    def chip_seconds(self) -> float:
        """Predicted time of the step on the real chip at the configured clock."""
        return self.cycles / self.clock_hz


def _sram_need(model: Model, lanes: int, weight_bytes: int) -> int:
    """Bytes the weights need on chip (rows padded to 16, columns to lanes)."""
    total = 0
    for arr in model.weights.values():
        if arr.ndim == 2:
            rows, cols = arr.shape
            total += weight_bytes * (-(-cols // 16) * 16) * (-(-rows // lanes) * lanes)
        else:
            total += 4 * (-(-arr.size // lanes) * lanes)
    return total


def compile_model(model: Model, config: Optional[ChipConfig] = None, *, max_seq: Optional[int] = None,
                  progress: Optional[Progress] = None, weights: str = "float16") -> "tuple[Program, Dict[str, int]]":
    """Build the decode-step program of `model` for a chip (default ``tsp_v1``).

    ``weights="int8"`` quantises every matrix per output channel (symmetric, scales
    kept in fp32) and each matmul's input vector on the chip (one scale per vector), so
    the MXM multiplies int8 by int8 into exact int32 sums, dequantised on the way out.
    """
    cfg = config or ChipConfig("tsp_v1")
    c = model.config
    lanes = cfg.lanes
    if weights not in ("float16", "int8"):
        raise InputError(f"weights must be 'float16' or 'int8', not {weights!r}")
    need = _sram_need(model, lanes, 1 if weights == "int8" else 2)
    if need > cfg.sram_bytes * 0.9:
        raise CapacityError(
            f"the model needs about {need / 2**20:.1f} MiB of SRAM for its {weights} weights alone; "
            f"the chip ({cfg.name}) has {cfg.sram_bytes / 2**20:.1f} MiB"
        )
    S = min(max_seq or c.max_seq_len, lanes)
    S -= S % 8
    if S < 8:
        raise InputError("max_seq must be at least 8")
    shape = A.AttentionShape(c.n_heads, c.n_kv_heads, c.head_dim, S, c.rope_theta)
    b = Builder(cfg)
    b.meta["model"] = model.source or "model"
    st = A.new_state(b, shape)
    D, F, V = c.dim, c.hidden_dim, c.vocab_size
    note = progress or (lambda what, i, n: None)
    steps = c.n_layers + 2
    note("weights", 0, steps)

    def W(name: str, w: np.ndarray) -> Weights:
        return load_weights(b, name, w, weights, hemi="W")

    layers: List[Dict[str, Any]] = []
    for i in range(c.n_layers):
        lw = model.layer(i)
        layers.append({
            "wq": W(f"l{i}.wq", lw["wq"].T), "wk": W(f"l{i}.wk", lw["wk"].T), "wv": W(f"l{i}.wv", lw["wv"].T),
            "wo": W(f"l{i}.wo", lw["wo"].T),
            "w1": W(f"l{i}.w1", lw["w1"].T), "w3": W(f"l{i}.w3", lw["w3"].T), "w2": W(f"l{i}.w2", lw["w2"].T),
            "g_att": b.constant(f"l{i}.attention_norm", lw["attention_norm"], "float32", hemi="W"),
            "g_ffn": b.constant(f"l{i}.ffn_norm", lw["ffn_norm"], "float32", hemi="W"),
            "kc": A.new_cache(b, st, f"l{i}.k_cache"),
            "vc": A.new_cache(b, st, f"l{i}.v_cache"),
        })
        note("weights", i + 1, steps)
    head = W("output", model.weights["output"].T)
    g_fin = b.constant("norm", model.weights["norm"], "float32", hemi="W")
    x = b.input("x", "float32", (D,), hemi="E")
    xn = b.scratch("xn", "float16", (D,), hemi="E")
    q = b.scratch("q", "float32", (shape.q_dim,), hemi="E")
    k = b.scratch("k", "float32", (shape.kv_dim,), hemi="E")
    v = b.scratch("v", "float32", (shape.kv_dim,), hemi="E")
    qr = b.scratch("q_rope", "float32", (shape.q_dim,), hemi="E")
    kr = b.scratch("k_rope", "float32", (shape.kv_dim,), hemi="E")
    yh = b.scratch("attn_heads", "float16", (shape.q_dim,), hemi="E")
    o = b.scratch("attn_out", "float32", (D,), hemi="E", apart_from=[x])
    g = b.scratch("gate", "float32", (F,), hemi="E")
    u = b.scratch("up", "float32", (F,), hemi="E")
    h = b.scratch("hidden", "float16", (F,), hemi="E")
    logits = b.output("logits", "float32", (V,), hemi="E")
    nxt = b.output("argmax", "int32", (1,), hemi="E")
    int8 = weights == "int8"
    if int8:
        row_scale = b.scratch("act_scale", "float32", (1, lanes), hemi="E")
        quantized = {name: b.scratch(f"{name}_q", "int8", tuple(t.shape), hemi="E") for name, t in
                     (("xn", xn), ("attn_heads", yh), ("hidden", h))}

    def mm(xin: Tensor, products: "list[tuple[Weights, Tensor]]", t: int, load_from: Optional[int] = None) -> int:
        """out = xin @ w for each (w, out), all from cycle t: they overlap on the planes
        (one loads its weights while another multiplies). The weights may be loaded
        from cycle `load_from` on, while xin is still being made."""
        epilogue: Callable[[Weights], Any] = lambda w: None
        if int8:
            t = quantize(b, xin, quantized[xin.name], row_scale, start=t)
            xin = quantized[xin.name]
            epilogue = lambda w: dequant_epilogue(w, row_scale)
        return max(matmul(b, xin, w, out, start=t, epilogue=epilogue(w), load_from=load_from) for w, out in products)

    note("schedule", 1, steps)
    t = A.prologue(b, st)
    for i, L in enumerate(layers):
        t0 = t
        t = rmsnorm(b, x, L["g_att"], xn, eps=c.norm_eps, start=t)
        t = mm(xn, [(L["wq"], q), (L["wk"], k), (L["wv"], v)], t, load_from=t0)
        # Independent work starts together (each waits for the units the others hold).
        t_q = A.rope(b, st, q, qr, which="q", start=t)
        t_v = A.append(b, st, v, L["vc"], start=t)
        t_k = A.append(b, st, kr, L["kc"], start=A.rope(b, st, k, kr, which="k", start=t))
        t0 = max(t_q, t_k, t_v)
        t = A.attend(b, st, qr, L["kc"], L["vc"], yh, start=t0)
        # The output projection loads its weights into the plane attend leaves free.
        t = mm(yh, [(L["wo"], o)], t, load_from=t0)
        t = binary(b, "add", x, o, x, start=t)
        t0 = t
        t = rmsnorm(b, x, L["g_ffn"], xn, eps=c.norm_eps, start=t)
        t = mm(xn, [(L["w1"], g), (L["w3"], u)], t, load_from=t0)
        t0 = t
        t = swiglu(b, g, u, h, start=t)
        t = mm(h, [(L["w2"], o)], t, load_from=t0)
        t = binary(b, "add", x, o, x, start=t)
        note("schedule", i + 2, steps)
    t0 = t
    t = rmsnorm(b, x, g_fin, xn, eps=c.norm_eps, start=t)
    t = mm(xn, [(head, logits)], t, load_from=t0)
    t = argmax(b, logits, nxt, start=t)
    A.advance(b, st, start=t)
    prog = b.build()
    note("schedule", steps, steps)
    return prog, {"max_seq": S}


class ChipModel:
    """A model running on an emulated chip, one decode step per call of :meth:`step`."""

    def __init__(self, model: Model, config: Optional[ChipConfig] = None, *, max_seq: Optional[int] = None,
                 progress: Optional[Progress] = None, weights: str = "float16"):
        self.model = model
        self.program, info = compile_model(model, config, max_seq=max_seq, progress=progress, weights=weights)
        self.max_seq: int = info["max_seq"]
        self.config = self.program.config
        self.chip = Chip(self.config)
        self.chip.load(self.program)
        self._x = self.program.tensor("x")
        self._logits = self.program.tensor("logits")
        self._argmax = self.program.tensor("argmax")
        self._pos = self.program.tensor("pos")
        self._emb = model.weights["tok_embeddings"]
        # The embedding rows as the bytes the chip stores, checked once here: a step
        # writes its row without checking it again (the Python around a step runs on
        # caches the run has just filled with weights, so each call there counts).
        check_array(self._x, self._emb[0])
        self._emb_bytes = np.ascontiguousarray(self._emb).view(np.uint8)
        # What a step costs on the chip, which the program fixes: (cycles, clock_hz,
        # macs_fp16, mxm_utilization), taken from the chip's statistics again whenever a
        # step's cycles differ.
        self._costs: Optional[Tuple[int, int, int, float]] = None
        self.pos = 0
        # (cycles, host seconds) of the last step: `last` is made from them when asked.
        self._last: Optional[Tuple[int, float]] = None
        #: If set, the next step writes a Chrome trace of its run to this file.
        self.trace_next: Optional[PathLike] = None

    @property
    def last(self) -> Optional[StepInfo]:
        """What the last step cost (None before the first step)."""
        if self._last is None or self._costs is None:
            return None
        (cycles, seconds), (_, hz, macs, util) = self._last, self._costs
        return StepInfo(cycles, hz, seconds, macs, util)

    def reset(self) -> None:
        """Start a new sequence (position 0; the cache is overwritten as it goes)."""
        write_tensor(self.chip, self._pos, np.zeros(self._pos.shape, np.int16))
        self.pos = 0

    def step(self, token: int) -> np.ndarray:
        """Run one decode step for `token` at the current position; returns the logits."""
        if self.pos >= self.max_seq:
            raise CapacityError(f"the sequence is full: the on-chip KV cache holds {self.max_seq} positions")
        if not 0 <= token < self._emb.shape[0]:
            raise InputError(f"token id {token} is outside the vocabulary of {self._emb.shape[0]}")
        t0 = time.perf_counter()
        chip = self.chip
        chip.reset(keep_sram=True)
        chip.write_tensor(self._x, self._emb_bytes[token])
        if self.trace_next is not None:
            status = chip.run(trace=self.trace_next)
            self.trace_next = None
        else:
            status = chip.run()
        if status != RunStatus.HALTED:
            if status == RunStatus.FAULT:
                chip.raise_for_fault()
            raise IncompleteRunError("the decode step", status, chip.cycle)
        logits = chip.read_tensor(self._logits).view(np.float32)
        cycles = chip.cycles
        if self._costs is None or self._costs[0] != cycles:
            stats = chip.stats(queues=False)
            self._costs = (cycles, stats["clock_hz"], stats["macs_fp16"], stats["mxm_utilization"])
        self._last = (cycles, time.perf_counter() - t0)
        self.pos += 1
        return logits

    def argmax(self) -> int:
        """The chip's own argmax of the last step's logits (first maximum)."""
        return int(read_tensor(self.chip, self._argmax)[0])


def print_progress(what: str, i: int, n: int) -> None:
    """A one-line progress indicator on stderr."""
    width = 30
    done = int(width * i / max(n, 1))
    sys.stderr.write(f"\r{what:9} [{'#' * done}{'.' * (width - done)}] {i}/{n}")
    if i >= n:
        sys.stderr.write("\n")
    sys.stderr.flush()

