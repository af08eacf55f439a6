"""Atomic file writing: a failure mid-write never leaves a truncated file behind.

Everything lpu writes (programs, traces, outputs, plots, model files) goes to a
temporary file next to the target, is flushed to disk, and is renamed over the target
only when complete; if anything fails (including Ctrl-C) the temporary file is removed
and the old file, if any, is left as it was.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from typing import Iterator, Union

import numpy as np

__all__ = ["atomic_path", "atomic_write_bytes", "save_npy"]

PathLike = Union[str, "os.PathLike[str]"]


def _file_mode() -> int:
    # mkstemp makes 0600 files; give the result the mode a plain open() would have.
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _file_mode()


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[str]:
    """A temporary path to write instead of ``path``; it replaces ``path`` when the
    ``with`` block finishes, and is removed if the block raises."""
    target = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(target))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(target) + ".", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        os.chmod(tmp, _FILE_MODE)
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the new one, never a part."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def save_npy(path: PathLike, array: np.ndarray) -> None:
    """``np.save`` done atomically."""
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())
