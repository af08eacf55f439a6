"""Documentation that shows code runs, and documented numbers match the code."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

import lpu

from conftest import ROOT


def _blocks(path: str, lang: str):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        text = f.read()
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


def test_readme_python_example_runs():
    blocks = _blocks("README.md", "python")
    assert blocks
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})


def test_assembly_doc_first_program_assembles_and_adds():
    src = _blocks("docs/assembly.md", "")[0]
    prog = lpu.assemble(src, "docs/assembly.md")
    rng = np.random.default_rng(1)
    x = rng.integers(-128, 128, (4, 32), dtype=np.int8)
    y = rng.integers(-128, 128, (4, 32), dtype=np.int8)
    run = lpu.Runner(prog)
    out = run(x=x, y=y)
    np.testing.assert_array_equal(out["z"], (x.astype(np.int16) + y).astype(np.int8))
    # The comments in the example state the timing: last write on cycle 11, lands on 12.
    assert run.last is not None and run.last.cycles == 12 + 1 + 1


def test_timing_doc_lists_every_latency_with_its_default():
    with open(os.path.join(ROOT, "docs", "timing.md"), encoding="utf-8") as f:
        text = f.read()
    for name, value in lpu.ChipConfig("tsp_v1").latencies:
        assert re.search(rf"\| `{name}` \| {value} \|", text), name


def test_builder_doc_example_runs():
    blocks = _blocks("docs/builder.md", "python")
    assert blocks
    for code in blocks:
        exec(compile(code, "docs/builder.md", "exec"), {})
