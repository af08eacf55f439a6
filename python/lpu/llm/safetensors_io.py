"""Reading and writing ``.safetensors`` files with numpy.

The file layout (from the safetensors specification): an unsigned 64-bit
little-endian header length ``N``, then ``N`` bytes of UTF-8 JSON mapping each
tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets
relative to the end of the header) plus an optional ``"__metadata__"`` dict of
strings, then the raw little-endian tensor bytes.

:func:`read_safetensors` uses the ``safetensors`` package when it is
importable and falls back to a small built-in reader otherwise. numpy has no
bfloat16 type, so BF16 tensors are always decoded by the built-in code (the
top 16 bits of a float32). Both paths return identical arrays.
:func:`write_safetensors` never needs the package.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np

from ..errors import InputError
from ..files import PathLike, atomic_path
from .errors import ModelFormatError

__all__ = [
    "read_safetensors",
    "write_safetensors",
    "read_header",
    "bf16_to_float32",
    "float32_to_bf16",
    "have_safetensors_package",
]


# safetensors dtype code -> little-endian numpy dtype (BF16 handled separately)
_NUMPY_DTYPES: Dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_ITEMSIZE = {code: dt.itemsize for code, dt in _NUMPY_DTYPES.items()}
_ITEMSIZE["BF16"] = 2
_MAX_HEADER = 100 * 1024 * 1024


def have_safetensors_package() -> bool:
    """True when ``import safetensors`` works."""
    try:
        import safetensors  # noqa: F401
    except ImportError:
        return False
    return True


def bf16_to_float32(raw: np.ndarray) -> np.ndarray:
    """Widen bfloat16 bit patterns (a ``uint16`` array) to float32 exactly."""
    bits = np.asarray(raw, dtype=np.uint16).astype(np.uint32) << np.uint32(16)
    return bits.view(np.float32)


def float32_to_bf16(x: np.ndarray) -> np.ndarray:
    """Round float32 values to bfloat16 (nearest, ties to even); returns ``uint16`` bits."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype(np.uint16)
    nan = np.isnan(np.asarray(x, dtype=np.float32))
    if nan.any():  # keep NaNs NaN (rounding could carry into the exponent)
        rounded[nan] = ((u[nan] >> np.uint32(16)) | np.uint32(0x0040)).astype(np.uint16)
    return rounded


def read_header(path: PathLike) -> Tuple[Dict[str, Any], int, int]:
    """Parse and validate a safetensors header.

    Returns ``(header, data_start, file_size)`` where ``header`` maps tensor
    names to their entries (``__metadata__`` included if present). Raises
    :class:`ModelFormatError` naming the file (and tensor) on any
    inconsistency: short file, bad JSON, unknown dtype, offsets outside the
    file or not matching the shape.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ModelFormatError(f"{path}: truncated safetensors file (shorter than the 8-byte header length)")
            (n,) = struct.unpack("<Q", head)
            if n > _MAX_HEADER or 8 + n > size:
                raise ModelFormatError(f"{path}: safetensors header length {n} does not fit in the {size}-byte file")
            text = f.read(n)
    except FileNotFoundError:
        raise ModelFormatError(f"{path}: file not found") from None
    try:
        header = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFormatError(f"{path}: safetensors header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise ModelFormatError(f"{path}: safetensors header is not a JSON object")
    data_start = 8 + n
    data_len = size - data_start
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= set(entry):
            raise ModelFormatError(f"{path}: tensor {name!r} has a malformed header entry")
        code = entry["dtype"]
        if code not in _ITEMSIZE:
            raise ModelFormatError(f"{path}: tensor {name!r} has unsupported dtype {code!r}")
        shape = entry["shape"]
        if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
            raise ModelFormatError(f"{path}: tensor {name!r} has a malformed shape {shape!r}")
        begin, end = entry["data_offsets"]
        want = int(np.prod(shape, dtype=np.int64)) * _ITEMSIZE[code]
        if end - begin != want or begin < 0:
            raise ModelFormatError(
                f"{path}: tensor {name!r} data_offsets {[begin, end]} hold {end - begin} bytes, "
                f"but shape {shape} of {code} needs {want}"
            )
        if end > data_len:
            raise ModelFormatError(
                f"{path}: tensor {name!r} ends at byte {data_start + end} but the file has only {size} bytes (truncated?)"
            )
    return header, data_start, size


def _read_builtin(path: Path, header: Dict[str, Any], data_start: int, names: Optional[set] = None) -> Dict[str, np.ndarray]:
    out: Dict[str, np.ndarray] = {}
    wanted = [k for k in header if k != "__metadata__" and (names is None or k in names)]
    if not wanted:
        return out
    buf = np.memmap(path, dtype=np.uint8, mode="r")
    try:
        for name in wanted:
            entry = header[name]
            begin, end = entry["data_offsets"]
            raw = buf[data_start + begin : data_start + end]
            code = entry["dtype"]
            if code == "BF16":
                arr = bf16_to_float32(raw.view("<u2"))
            else:
                arr = np.array(raw.view(_NUMPY_DTYPES[code]))  # copy, native byte order
                arr = arr.astype(arr.dtype.newbyteorder("="), copy=False)
            out[name] = arr.reshape(entry["shape"])
    finally:
        del buf
    return out


def read_safetensors(path: PathLike, use_package: Optional[bool] = None) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
    """Read every tensor of a safetensors file.

    Args:
        path: the ``.safetensors`` file.
        use_package: ``True`` to require the ``safetensors`` package, ``False``
            to force the built-in numpy reader, ``None`` (default) to use the
            package when importable.

    Returns:
        ``(tensors, metadata)``: arrays keep their stored dtype, except BF16
        which is widened to float32 (exactly); ``metadata`` is the header's
        ``__metadata__`` dict (empty if absent).
    """
    path = Path(path)
    header, data_start, _ = read_header(path)
    metadata = header.get("__metadata__") or {}
    if use_package is None:
        use_package = have_safetensors_package()
    if not use_package:
        return _read_builtin(path, header, data_start), dict(metadata)

    from safetensors import safe_open  # raises ImportError when forced but missing

    tensors: Dict[str, np.ndarray] = {}
    bf16 = {k for k, v in header.items() if k != "__metadata__" and v["dtype"] == "BF16"}
    try:
        with safe_open(str(path), framework="numpy") as f:
            for name in f.keys():
                if name not in bf16:
                    tensors[name] = np.asarray(f.get_tensor(name))
    except Exception as e:  # the package's own errors are not ModelFormatError
        raise ModelFormatError(f"{path}: safetensors could not read the file ({e})") from e
    tensors.update(_read_builtin(path, header, data_start, bf16))
    return tensors, dict(metadata)


def write_safetensors(
    path: PathLike,
    tensors: Dict[str, np.ndarray],
    dtype: str = "F32",
    metadata: Optional[Dict[str, str]] = None,
) -> None:
    """Write float arrays to ``path`` as safetensors.

    Args:
        path: output file.
        tensors: name -> array (any float dtype; converted).
        dtype: stored type, one of ``"F32"``, ``"F16"``, ``"BF16"``.
        metadata: string-to-string ``__metadata__`` (default ``{"format": "pt"}``
            so that ``transformers`` accepts the file).
    """
    if dtype not in ("F32", "F16", "BF16"):
        raise InputError(f"write_safetensors: dtype must be F32, F16 or BF16, got {dtype!r}")
    header: Dict[str, Any] = {"__metadata__": dict(metadata) if metadata is not None else {"format": "pt"}}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        arr = np.asarray(tensors[name], dtype=np.float32)
        if dtype == "F32":
            raw = arr.astype("<f4").tobytes()
        elif dtype == "F16":
            raw = arr.astype("<f2").tobytes()
        else:
            raw = float32_to_bf16(arr).astype("<u2").tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # keep the data 8-byte aligned
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)
