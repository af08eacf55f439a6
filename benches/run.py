"""Run the benchmark suite and print emulator/numpy ratios.

    python benches/run.py                      # run, then print the table
    python benches/run.py --runs 5             # five runs: each case's median ratio and range
    python benches/run.py --benchmark-save=x   # any pytest-benchmark option passes through
    python benches/run.py --table results.json # only print the table of a saved run

See docs/performance.md.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))

#: Ratio targets (emulator time / numpy time), by the group's leading case number.
TARGETS = {"1": 3.0, "2": 1.5, "5": 2.0}


def pairs(results: dict) -> Dict[str, Tuple[dict, dict]]:
    """Each case (benchmark group) that has both sides: (emulator's, numpy's) entry."""
    groups: Dict[str, Dict[str, dict]] = {}
    for b in results["benchmarks"]:
        groups.setdefault(b["group"], {})[b["params"]["side"]] = b
    return {g: (s["lpu"], s["numpy"]) for g, s in sorted(groups.items()) if "lpu" in s and "numpy" in s}


def target_of(case: str) -> Optional[float]:
    return TARGETS.get(case.split()[0])


def columns(rows: List[List[str]]) -> List[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def footer(results: dict) -> List[str]:
    mi = results.get("machine_info", {})
    lines = ["", f"machine: {mi.get('cpu', {}).get('brand_raw', platform.processor())}, "
             f"{os.cpu_count()} CPUs, Python {mi.get('python_version', platform.python_version())}"]
    pgo = results.get("lpu_build_pgo")
    if pgo is not None:
        lines.append(f"build: release, {'with' if pgo else 'without'} the PGO profile (tools/pgo)")
    return lines


def table(results: dict) -> str:
    rows: List[List[str]] = [["case", "emulator", "numpy", "ratio", "target", "emulated"]]
    for g, (lpu, ref) in pairs(results).items():
        t_lpu, t_ref = lpu["stats"]["median"], ref["stats"]["median"]
        ratio = t_lpu / t_ref
        target = target_of(g)
        extra = lpu.get("extra_info", {})
        facts = []
        if "cycles" in extra:
            facts.append(f"{extra['cycles']:,} cycles")
        for key, unit in (("vectors_per_s", "vectors/s"), ("macs_per_s", "MACs/s"),
                          ("instructions_per_s", "instr/s"), ("cycles_per_s", "cycles/s"),
                          ("tokens_per_s", "tokens/s")):
            if key in extra:
                facts.append(f"{extra[key]:.3g} {unit}")
        rows.append([g, f"{t_lpu * 1e3:.2f} ms", f"{t_ref * 1e3:.2f} ms", f"{ratio:.2f}x",
                     f"<= {target:g}x" if target else "", ", ".join(facts)])
    return "\n".join(columns(rows) + footer(results))


def summary(runs: List[dict]) -> str:
    """Several runs of the suite: per case, the medians of each side's medians, the
    median ratio and the range of the ratios (one per run), the ratio of each side's
    fastest round over all runs ("best": both sides at their quietest), and in how
    many runs the ratio was within its target. On a shared machine one run's ratio can
    be far from another's (either side can hit a slow stretch); this is what to quote,
    with "best" telling whether a good ratio came from a slow baseline."""
    ratios: Dict[str, List[float]] = {}
    times: Dict[str, Tuple[List[float], List[float]]] = {}
    fastest: Dict[str, Tuple[float, float]] = {}
    for results in runs:
        for g, (lpu, ref) in pairs(results).items():
            t_lpu, t_ref = lpu["stats"]["median"], ref["stats"]["median"]
            ratios.setdefault(g, []).append(t_lpu / t_ref)
            side = times.setdefault(g, ([], []))
            side[0].append(t_lpu)
            side[1].append(t_ref)
            best = fastest.get(g, (float("inf"), float("inf")))
            fastest[g] = (min(best[0], lpu["stats"]["min"]), min(best[1], ref["stats"]["min"]))
    rows: List[List[str]] = [["case", "emulator", "numpy", "ratio", "range", "best", "target", "met"]]
    for g, rs in ratios.items():
        target = target_of(g)
        met = f"{sum(r <= target for r in rs)} of {len(rs)}" if target else ""
        t_lpu, t_ref = (statistics.median(t) for t in times[g])
        rows.append([g, f"{t_lpu * 1e3:.2f} ms", f"{t_ref * 1e3:.2f} ms", f"{statistics.median(rs):.2f}x",
                     f"{min(rs):.2f}-{max(rs):.2f}x", f"{fastest[g][0] / fastest[g][1]:.2f}x",
                     f"<= {target:g}x" if target else "", met])
    lines = [f"{len(runs)} runs; times are medians of the runs' medians, ratio the median of their ratios", ""]
    return "\n".join(lines + columns(rows) + (footer(runs[-1]) if runs else []))


def main(argv: List[str]) -> int:
    if argv[:1] == ["--table"]:
        with open(argv[1]) as f:
            print(table(json.load(f)))
        return 0
    runs = 1
    if argv[:1] == ["--runs"]:
        if len(argv) < 2 or not argv[1].isdigit() or int(argv[1]) < 1:
            print("--runs needs a number of runs (1 or more)", file=sys.stderr)
            return 2
        runs, argv = int(argv[1]), argv[2:]
    results: List[dict] = []
    code = 0
    with tempfile.TemporaryDirectory() as d:
        for i in range(runs):
            out = os.path.join(d, f"bench{i}.json")
            cmd = [sys.executable, "-m", "pytest", HERE, "-q", "-p", "no:cacheprovider",
                   "--benchmark-enable", f"--benchmark-json={out}", *argv]
            code = subprocess.call(cmd, cwd=os.path.dirname(HERE)) or code
            if os.path.exists(out):
                with open(out) as f:
                    results.append(json.load(f))
                print()
                print(table(results[-1]))
    if runs > 1 and results:
        print()
        print(summary(results))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
