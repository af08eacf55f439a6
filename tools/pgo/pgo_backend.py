"""The package's build backend: maturin's, building with the profile in this directory.

pyproject.toml names this module as its PEP 517 backend. Every hook is maturin's; the
builds of a wheel (``pip install .``) and of an editable install first point rustc at
``lpu.profdata`` (profile-guided optimisation: the optimiser knows which branches the
emulator takes and which functions are hot, from running the benchmark suite; see
``train.py`` and docs/performance.md), when:

- the profile was made by the same compiler as the one building (``toolchain.txt``
  holds its ``rustc -vV``): another compiler's profile does not match its code, and an
  older one cannot read it;
- the crates' manifests and build scripts are those it was made with
  (``manifests.sha256``): they go into the hash in every function's symbol name, by
  which the profile finds its functions, so with others it finds none;
- the build does not set flags of its own (``RUSTFLAGS`` or ``CARGO_ENCODED_RUSTFLAGS``);
- ``LPU_NO_PGO`` is not set.

Otherwise the build is the same without the profile, and says so.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from typing import Any, Mapping, Optional

from maturin import (  # noqa: F401  (the hooks this backend passes through)
    build_sdist,
    get_requires_for_build_editable,
    get_requires_for_build_sdist,
    get_requires_for_build_wheel,
    prepare_metadata_for_build_editable,
    prepare_metadata_for_build_wheel,
)
from maturin import build_editable as _build_editable
from maturin import build_wheel as _build_wheel

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PROFILE = os.path.join(HERE, "lpu.profdata")
TOOLCHAIN = os.path.join(HERE, "toolchain.txt")
MANIFESTS = os.path.join(HERE, "manifests.sha256")
#: The files whose contents go into the crates' symbol hashes (cargo's -C metadata).
MANIFEST_FILES = ("Cargo.lock", "Cargo.toml", "rust/lpu-core/Cargo.toml", "rust/lpu-core/build.rs",
                  "rust/lpu-py/Cargo.toml", "rust/lpu-py/build.rs")


def manifests_digest(root: str = ROOT) -> str:
    """SHA-256 over the files of MANIFEST_FILES (name and contents)."""
    h = hashlib.sha256()
    for name in MANIFEST_FILES:
        h.update(name.encode() + b"\0")
        with open(os.path.join(root, name), "rb") as f:
            h.update(f.read() + b"\0")
    return h.hexdigest()


def rustc_version() -> str:
    """``rustc -vV`` of the compiler on PATH (the one cargo builds with)."""
    return subprocess.run(["rustc", "-vV"], capture_output=True, text=True, check=True).stdout


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def profile_flags() -> Optional[str]:
    """The rustc flag that applies the profile, or None (with the reason on stderr)."""
    if os.environ.get("LPU_NO_PGO"):
        return None
    if os.environ.get("RUSTFLAGS") or os.environ.get("CARGO_ENCODED_RUSTFLAGS"):
        print("lpu: RUSTFLAGS set; building without the PGO profile", file=sys.stderr)
        return None
    try:
        made_by = _read(TOOLCHAIN)
        made_from = _read(MANIFESTS).strip()
        rustc = rustc_version()
        now_from = manifests_digest()
    except (OSError, subprocess.SubprocessError):
        return None
    if not os.path.exists(PROFILE):
        print(f"lpu: {PROFILE} is missing; building without a PGO profile", file=sys.stderr)
        return None
    if rustc != made_by:
        first = made_by.splitlines()[0] if made_by else "?"
        print(f"lpu: the PGO profile was made by {first}, not this compiler; building without it",
              file=sys.stderr)
        return None
    if now_from != made_from:
        print("lpu: the crates' manifests changed since the PGO profile was made "
              "(python tools/pgo/train.py remakes it); building without it", file=sys.stderr)
        return None
    return f"-Cprofile-use={PROFILE}"


def _with_profile() -> None:
    flags = profile_flags()
    if flags is not None:
        os.environ["CARGO_ENCODED_RUSTFLAGS"] = flags


def build_wheel(wheel_directory: str, config_settings: Optional[Mapping[str, Any]] = None,
                metadata_directory: Optional[str] = None) -> str:
    """maturin's build_wheel, with the profile when it fits (see the module docstring)."""
    _with_profile()
    return _build_wheel(wheel_directory, config_settings, metadata_directory)


def build_editable(wheel_directory: str, config_settings: Optional[Mapping[str, Any]] = None,
                   metadata_directory: Optional[str] = None) -> str:
    """maturin's build_editable, with the profile when it fits."""
    _with_profile()
    return _build_editable(wheel_directory, config_settings, metadata_directory)
