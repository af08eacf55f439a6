"""Tensor marshalling: numpy arrays <-> the on-chip layout of a :class:`Tensor`.

A tensor is stored as rows of its last dimension, each row padded to whole vectors of
``lanes`` elements; element byte b goes to byte plane b, and each byte plane sits in its
own MEM slice (``Tensor.location`` says where). The copying is done in the native core
straight from the array's memory: a C-contiguous array of the right dtype is not copied
before it reaches SRAM. ``bfloat16`` tensors are given and returned as ``float32``
arrays (numpy has no bfloat16; values are rounded to nearest even on the way in).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._core import Chip, Tensor
from .errors import InputError

__all__ = ["numpy_dtype", "check_array", "write_tensor", "read_tensor"]


def numpy_dtype(tensor: Tensor) -> np.dtype:
    """The numpy dtype arrays of this tensor have on the host."""
    return np.dtype("float32" if tensor.dtype == "bfloat16" else tensor.dtype)


def check_array(tensor: Tensor, array: Any) -> np.ndarray:
    """Check an array against a tensor's dtype and shape; return it C-contiguous.

    The dtype must match exactly (no silent casts that could lose data); for bfloat16
    tensors any float array is accepted and converted to float32.
    """
    arr = np.asarray(array)
    want = numpy_dtype(tensor)
    if tensor.dtype == "bfloat16" and arr.dtype.kind == "f":
        arr = arr.astype(np.float32, copy=False)
    if arr.dtype != want:
        raise InputError(
            f"tensor '{tensor.name}' is {tensor.dtype}; got an array of {arr.dtype} "
            f"(convert it with .astype(np.{want}) if that is intended)"
        )
    if tuple(arr.shape) != tuple(tensor.shape):
        raise InputError(
            f"tensor '{tensor.name}' has shape {tuple(tensor.shape)}; got {tuple(arr.shape)}"
        )
    return np.ascontiguousarray(arr)


def write_tensor(chip: Chip, tensor: Tensor, array: Any) -> None:
    """Store an array in the tensor's SRAM words on ``chip``."""
    arr = check_array(tensor, array)
    chip.write_tensor(tensor, arr.reshape(-1).view(np.uint8))


def read_tensor(chip: Chip, tensor: Tensor) -> np.ndarray:
    """Read a tensor from ``chip``'s SRAM as a new numpy array of its dtype and shape."""
    raw = chip.read_tensor(tensor)
    return raw.view(numpy_dtype(tensor)).reshape(tuple(tensor.shape))
