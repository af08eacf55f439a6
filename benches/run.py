"""Run the benchmark suite and print emulator/numpy ratios.

    python benches/run.py                      # run, then print the table
    python benches/run.py --benchmark-save=x   # any pytest-benchmark option passes through
    python benches/run.py --table results.json # only print the table of a saved run

See docs/performance.md.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from typing import Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))

#: Ratio targets (emulator time / numpy time), by the group's leading case number.
TARGETS = {"1": 3.0, "2": 1.5, "5": 2.0}


def table(results: dict) -> str:
    groups: Dict[str, Dict[str, dict]] = {}
    for b in results["benchmarks"]:
        side = b["params"]["side"]
        groups.setdefault(b["group"], {})[side] = b
    rows: List[List[str]] = [["case", "emulator", "numpy", "ratio", "target", "emulated"]]
    for g in sorted(groups):
        sides = groups[g]
        if "lpu" not in sides or "numpy" not in sides:
            continue
        lpu, ref = sides["lpu"], sides["numpy"]
        t_lpu, t_ref = lpu["stats"]["median"], ref["stats"]["median"]
        ratio = t_lpu / t_ref
        target = TARGETS.get(g.split()[0])
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
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    mi = results.get("machine_info", {})
    lines.append("")
    lines.append(f"machine: {mi.get('cpu', {}).get('brand_raw', platform.processor())}, "
                 f"{os.cpu_count()} CPUs, Python {mi.get('python_version', platform.python_version())}")
    pgo = results.get("lpu_build_pgo")
    if pgo is not None:
        lines.append(f"build: release, {'with' if pgo else 'without'} the PGO profile (tools/pgo)")
    return "\n".join(lines)


def main(argv: List[str]) -> int:
    if argv[:1] == ["--table"]:
        with open(argv[1]) as f:
            print(table(json.load(f)))
        return 0
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "bench.json")
        cmd = [sys.executable, "-m", "pytest", HERE, "-q", "-p", "no:cacheprovider",
               "--benchmark-enable", f"--benchmark-json={out}", *argv]
        code = subprocess.call(cmd, cwd=os.path.dirname(HERE))
        if os.path.exists(out):
            with open(out) as f:
                print()
                print(table(json.load(f)))
        return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
