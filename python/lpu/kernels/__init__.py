"""Kernels: functions that emit scheduled programs through the builder.

Each kernel takes a :class:`~lpu.builder.Builder`, its input and output tensors and a
start cycle, places its instructions, and returns the cycle its outputs are in SRAM.
"""

from __future__ import annotations

from .matmul import Weights, dequant_epilogue, load_weights, matmul, quantize_per_channel, weight_tiles

__all__ = ["Weights", "dequant_epilogue", "load_weights", "matmul", "quantize_per_channel", "weight_tiles"]
