"""Documentation that shows code runs, and documented numbers match the code."""

from __future__ import annotations

import os
import pickle
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


def _error_sections():
    with open(os.path.join(ROOT, "docs", "errors.md"), encoding="utf-8") as f:
        text = f.read()
    for name, body in re.findall(r"^## `(\w+)`\n(.*?)(?=^## )", text, re.S | re.M):
        code = re.search(r"```python\n(.*?)```", body, re.S)
        said = re.search(r"```text\n(.*?)```", body, re.S)
        yield pytest.param(name, code and code.group(1), said and said.group(1), id=name)


@pytest.mark.parametrize("name, code, said", list(_error_sections()))
def test_errors_doc_example_raises_its_class_with_the_documented_message(name, code, said, tmp_path,
                                                                          monkeypatch):
    import lpu.llm

    cls = getattr(lpu, name, None) or getattr(lpu.llm, name)
    assert issubclass(cls, lpu.LpuError) and cls is not lpu.LpuError
    assert code and said, f"the {name} section needs an example and its message"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(cls) as e:
        exec(compile(code, "docs/errors.md", "exec"), {"lpu": lpu})
    assert type(e.value) is cls
    assert f"{name}: {e.value}" == said.strip()
    # Errors cross process boundaries (multiprocessing pickles them) whole.
    back = pickle.loads(pickle.dumps(e.value))
    assert type(back) is cls and str(back) == str(e.value)
    for attr in ("offset", "field", "fault", "errors", "status", "cycle", "first", "second"):
        if hasattr(e.value, attr):
            assert getattr(back, attr) == getattr(e.value, attr), attr


def test_errors_doc_covers_every_error_class():
    import lpu.llm

    with open(os.path.join(ROOT, "docs", "errors.md"), encoding="utf-8") as f:
        text = f.read()
    classes = {n for n in dir(lpu) if isinstance(getattr(lpu, n), type) and issubclass(getattr(lpu, n), lpu.LpuError)}
    classes |= {n for n in dir(lpu.llm) if n.endswith("Error")}
    classes.discard("LpuError")
    documented = set(re.findall(r"^## `(\w+)`", text, re.M))
    assert documented == classes
    table = set(re.findall(r"^\| `(\w+)` \|", text, re.M))
    assert table == classes
