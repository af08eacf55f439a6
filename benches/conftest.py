"""Benchmarks of the emulator beside numpy doing the same math (see docs/performance.md).

Run them with ``python benches/run.py`` (it prints the table of ratios). A debug build
of the extension would measure the compiler, not the emulator: the suite refuses it.
"""

from __future__ import annotations

import os
import sys

import pytest

import lpu

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The numpy reference decoder and the assembly helpers live with the tests.
sys.path.insert(0, os.path.join(ROOT, "tests"))


def pytest_configure(config: pytest.Config) -> None:
    profile = lpu._core.build_profile()
    if profile != "release":
        pytest.exit(f"lpu._core is a {profile} build; benchmarks need a release build "
                    "(pip install . or maturin develop --release)", returncode=4)


def pytest_benchmark_update_json(config: pytest.Config, benchmarks: list, output_json: dict) -> None:
    # Whether the numbers come from a build with the PGO profile (benches/run.py says so).
    output_json["lpu_build_pgo"] = lpu._core.build_pgo()
