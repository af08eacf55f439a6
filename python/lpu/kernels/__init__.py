"""Kernels: functions that emit scheduled programs through the builder.

Each kernel takes a :class:`~lpu.builder.Builder`, its input and output tensors and a
start cycle, places its instructions, and returns the cycle its outputs are in SRAM.

- :mod:`.matmul`: matrix multiplication on the MXM planes (fp16, int8 + scales).
- :mod:`.reduce`: sums and max/min across lanes (SXM shift trees).
- :mod:`.vector`: elementwise ops, SiLU, GELU, SwiGLU, RMSNorm, softmax, argmax.
"""

from __future__ import annotations

from .matmul import Weights, dequant_epilogue, load_weights, matmul, quantize_per_channel, weight_tiles
from .reduce import allreduce
from .vector import argmax, binary, gelu, rmsnorm, silu, softmax, swiglu, unary

__all__ = [
    "Weights",
    "allreduce",
    "argmax",
    "binary",
    "dequant_epilogue",
    "gelu",
    "load_weights",
    "matmul",
    "quantize_per_channel",
    "rmsnorm",
    "silu",
    "softmax",
    "swiglu",
    "unary",
    "weight_tiles",
]
