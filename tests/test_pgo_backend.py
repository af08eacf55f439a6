"""The build backend (tools/pgo/pgo_backend.py) applies the PGO profile only when the
compiler and the crates' manifests that made it are the ones building and the build
sets no flags of its own; the committed profile was made from the current manifests."""

from __future__ import annotations

import importlib.util
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def backend(tmp_path, monkeypatch):
    pytest.importorskip("maturin")
    spec = importlib.util.spec_from_file_location("pgo_backend", os.path.join(ROOT, "tools", "pgo", "pgo_backend.py"))
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for var in ("RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "LPU_NO_PGO"):
        monkeypatch.delenv(var, raising=False)
    profile = tmp_path / "lpu.profdata"
    profile.write_bytes(b"profile")
    monkeypatch.setattr(mod, "PROFILE", str(profile))
    monkeypatch.setattr(mod, "TOOLCHAIN", str(tmp_path / "toolchain.txt"))
    monkeypatch.setattr(mod, "MANIFESTS", str(tmp_path / "manifests.sha256"))
    return mod


def made_by(backend, text: str, manifests: str = "") -> None:
    with open(backend.TOOLCHAIN, "w") as f:
        f.write(text)
    with open(backend.MANIFESTS, "w") as f:
        f.write((manifests or backend.manifests_digest()) + "\n")


def this_rustc(backend) -> str:
    try:
        return backend.rustc_version()
    except (OSError, subprocess.SubprocessError):
        pytest.skip("no rustc on PATH")


def test_the_profile_applies_when_this_compiler_made_it(backend):
    made_by(backend, this_rustc(backend))
    assert backend.profile_flags() == f"-Cprofile-use={backend.PROFILE}"


def test_another_compilers_profile_is_left_out(backend, capsys):
    made_by(backend, this_rustc(backend).replace("release: ", "release: 0.") + "\n")
    assert backend.profile_flags() is None
    assert "not this compiler" in capsys.readouterr().err


def test_a_profile_from_other_manifests_is_left_out(backend, capsys):
    made_by(backend, this_rustc(backend), manifests="0" * 64)
    assert backend.profile_flags() is None
    assert "manifests changed" in capsys.readouterr().err


@pytest.mark.parametrize("var", ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "LPU_NO_PGO"])
def test_flags_of_the_builds_own_win(backend, monkeypatch, var):
    made_by(backend, this_rustc(backend))
    monkeypatch.setenv(var, "-Copt-level=2")
    assert backend.profile_flags() is None


def test_without_a_profile_or_its_toolchain_the_build_goes_on(backend, capsys):
    assert backend.profile_flags() is None  # no toolchain.txt
    made_by(backend, this_rustc(backend))
    os.remove(backend.PROFILE)
    assert backend.profile_flags() is None
    err = capsys.readouterr().err
    assert "is missing" in err and "not this compiler" not in err


def test_the_committed_profile_was_made_from_these_manifests(backend):
    # Changing Cargo.lock, a manifest or a build script changes every function's symbol
    # name, and the profile then matches none: run `python tools/pgo/train.py`.
    with open(os.path.join(ROOT, "tools", "pgo", "manifests.sha256")) as f:
        assert f.read().strip() == backend.manifests_digest()
    with open(os.path.join(ROOT, "tools", "pgo", "toolchain.txt")) as f:
        text = f.read()
    assert text.startswith("rustc ") and "LLVM version: " in text
    assert os.path.getsize(os.path.join(ROOT, "tools", "pgo", "lpu.profdata")) > 0
