"""Atomic file writing: a failure mid-write never leaves a truncated file behind."""

from __future__ import annotations

import os
import tempfile
from typing import Union

import numpy as np

__all__ = ["atomic_write_bytes", "save_npy"]


def atomic_write_bytes(path: Union[str, os.PathLike], data: bytes) -> None:
    """Write `data` to `path` so readers see the old file or the new one, never a part."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def save_npy(path: Union[str, os.PathLike], array: np.ndarray) -> None:
    """``np.save`` done atomically."""
    import io

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())
