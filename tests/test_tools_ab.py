"""tools/ab.py (docs/performance.md, "Measuring"): two builds timed in one process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import lpu

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_compare_loads_two_builds_side_by_side_and_checks_their_outputs(tmp_path):
    # Two copies of the installed build stand for a build before and after a change
    # (staging them with cargo is the slow part the test leaves out).
    for name in ("before", "after"):
        shutil.copytree(os.path.dirname(lpu.__file__), tmp_path / name / "lpu",
                        ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "ab.py"), "compare",
                           str(tmp_path / "before"), str(tmp_path / "after"), "--rounds", "2", "--case", "tree"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("tree: A best ") and "same outputs" in done.stdout


def test_compare_stops_when_the_builds_disagree(tmp_path):
    # The second "build" computes something else: its lane tree takes minimums.
    for name in ("a", "b"):
        shutil.copytree(os.path.dirname(lpu.__file__), tmp_path / name / "lpu",
                        ignore=shutil.ignore_patterns("__pycache__"))
    reduce = tmp_path / "b" / "lpu" / "kernels" / "reduce.py"
    text = reduce.read_text()
    check = '    if op not in ("add", "max", "min"):'
    assert text.count(check) == 1
    reduce.write_text(text.replace(check, '    op = "min" if op == "max" else op\n' + check))
    done = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "ab.py"), "compare",
                           str(tmp_path / "a"), str(tmp_path / "b"), "--rounds", "2", "--case", "tree"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "outputs differ" in done.stderr
