"""The benchmark report (benches/run.py): the table of one run and the summary of
several, from made-up pytest-benchmark results whose ratios are known."""

from __future__ import annotations

import importlib.util
import os
import statistics

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def run():
    spec = importlib.util.spec_from_file_location("bench_run", os.path.join(ROOT, "benches", "run.py"))
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def results(cases: "dict[str, tuple[float, float]]", pgo: bool = True) -> dict:
    """pytest-benchmark's JSON for cases {group: (emulator median, numpy median)}."""
    # Each side's fastest round: 0.9 of the median for the emulator, 0.8 for numpy.
    out = [{"group": g, "params": {"side": side}, "stats": {"median": t, "min": t * f},
            "extra_info": {"cycles": 1234}}
           for g, (lpu, ref) in cases.items() for side, t, f in (("lpu", lpu, 0.9), ("numpy", ref, 0.8))]
    # A case with one side only (a failed half) is left out of the table.
    out.append({"group": "9 half", "params": {"side": "lpu"}, "stats": {"median": 1.0}, "extra_info": {}})
    return {"benchmarks": out, "machine_info": {"cpu": {"brand_raw": "Test CPU"}}, "lpu_build_pgo": pgo}


def row(text: str, case: str) -> "list[str]":
    lines = [line for line in text.splitlines() if line.startswith(case)]
    assert len(lines) == 1, text
    return lines[0][len(case):].split()


def test_one_run_table_gives_each_case_its_ratio_and_target(run):
    text = run.table(results({"5 llm decode": (0.045, 0.018), "3 sxm permute": (0.006, 0.012)}, pgo=False))
    assert row(text, "5 llm decode")[:6] == ["45.00", "ms", "18.00", "ms", f"{0.045 / 0.018:.2f}x", "<="]
    assert row(text, "3 sxm permute")[4] == "0.50x"
    assert "1,234 cycles" in text and "9 half" not in text
    assert "Test CPU" in text and "without the PGO profile" in text


def test_summary_of_runs_takes_medians_and_counts_runs_within_target(run):
    decode = [(0.045, 0.018), (0.044, 0.026), (0.049, 0.019), (0.043, 0.015)]
    vxm = [(0.010, 0.005), (0.011, 0.003)]
    runs = [results({"5 llm decode": d, **({"1 vxm add": v} if i < 2 else {})}) for i, (d, v) in
            enumerate(zip(decode, vxm + vxm))]
    text = run.summary(runs)
    ratios = [a / b for a, b in decode]
    got = row(text, "5 llm decode")
    assert got[0] == f"{statistics.median(a for a, _ in decode) * 1e3:.2f}"
    assert got[2] == f"{statistics.median(b for _, b in decode) * 1e3:.2f}"
    assert got[4] == f"{statistics.median(ratios):.2f}x"
    assert got[5] == f"{min(ratios):.2f}-{max(ratios):.2f}x"
    # Both sides at their fastest round over all runs, wherever each was.
    assert got[6] == f"{0.9 * min(a for a, _ in decode) / (0.8 * min(b for _, b in decode)):.2f}x"
    assert got[-3:] == [str(sum(r <= 2.0 for r in ratios)), "of", "4"]
    # A case missing from some runs counts only the runs that have it.
    assert row(text, "1 vxm add")[-3:] == ["1", "of", "2"]
    assert text.startswith("4 runs")


def test_runs_needs_a_positive_count(run, capsys):
    for argv in (["--runs"], ["--runs", "0"], ["--runs", "x"]):
        assert run.main(argv) == 2
    assert "--runs needs a number" in capsys.readouterr().err
