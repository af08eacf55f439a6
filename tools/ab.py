"""Compare two builds of the emulator in one process, round by round.

On a shared machine the speed of a run moves by a third from one stretch of seconds
to the next, so two builds timed one after the other differ by more than most
changes do. Loaded side by side in one Python process (as packages ``lpuA`` and
``lpuB``: the package imports itself only relatively) and run in alternate rounds,
both see the same stretches; the median of the rounds' ratios then moves by about
one percent where separate runs move by ten.

    python tools/ab.py stage /tmp/before     # copy python/lpu and build the extension
    # ... change the Rust code ...
    python tools/ab.py stage /tmp/after
    python tools/ab.py compare /tmp/before /tmp/after --rounds 20

``stage`` builds with ``cargo build --release`` (no PGO profile: compare builds made
the same way). ``compare`` times 16 decode steps of the bundled model per round
(``--case tree``: an 8-vector fp32 maximum over the lanes, attention's softmax tree)
and checks that both builds give the same bits.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.machinery
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
Round = Callable[[], Tuple[float, Any]]


def stage(dest: str) -> None:
    """`dest`/lpu: this tree's Python package with a freshly built extension."""
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    subprocess.run(["cargo", "build", "--release", "-p", "lpu-py"], cwd=ROOT, check=True)
    pkg = os.path.join(dest, "lpu")
    shutil.rmtree(pkg, ignore_errors=True)
    shutil.copytree(os.path.join(ROOT, "python", "lpu"), pkg,
                    ignore=shutil.ignore_patterns("_core*.so", "__pycache__"))
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    shutil.copy(os.path.join(target, "release", "lib_core.so"), os.path.join(pkg, "_core" + suffix))
    print(f"staged {pkg}")


def decode_round(m: Any) -> Round:
    llm = importlib.import_module(m.__name__ + ".llm")
    onchip = importlib.import_module(m.__name__ + ".llm.onchip")
    model = llm.load_bundled()
    cm = onchip.ChipModel(model, m.ChipConfig("tsp_v1"))
    tokens = model.tokenizer.encode("def main():\n    ")[:16]
    tokens += [35] * (16 - len(tokens))

    def run() -> Tuple[float, Any]:
        cm.reset()
        t = time.perf_counter()
        out = [cm.step(x) for x in tokens]
        return time.perf_counter() - t, out

    return run


def tree_round(m: Any) -> Round:
    import numpy as np

    builder = importlib.import_module(m.__name__ + ".builder")
    reduce = importlib.import_module(m.__name__ + ".kernels.reduce")
    layout = importlib.import_module(m.__name__ + ".layout")
    cfg = m.ChipConfig("tsp_v1")
    b = builder.Builder(cfg)
    x = b.input("x", "float32", (8, cfg.lanes), hemi="E")
    y = b.output("y", "float32", (8, cfg.lanes), hemi="E")
    t = b.earliest([x] + reduce.constants_for(b, "max", "float32", None, 8), b.vxm_pos)
    b.write(reduce.allreduce(b, b.read(x, stream=0, arrive=(b.vxm_pos, t), stride=2), "max", stream=8), y)
    prog = b.build()
    chip = m.Chip(cfg)
    chip.load(prog)
    values = np.random.default_rng(0).standard_normal((8, cfg.lanes)).astype(np.float32)
    layout.write_tensor(chip, prog.tensor("x"), values)

    def run() -> Tuple[float, Any]:
        best = float("inf")
        for _ in range(100):
            chip.reset(keep_sram=True)
            t0 = time.perf_counter()
            chip.run()
            best = min(best, time.perf_counter() - t0)
        return best, layout.read_tensor(chip, prog.tensor("y"))

    return run


def compare(a: str, b: str, rounds: int, case: str) -> None:
    import numpy as np

    root = tempfile.mkdtemp(prefix="lpu-ab-")
    for name, d in (("lpuA", a), ("lpuB", b)):
        shutil.copytree(os.path.join(d, "lpu"), os.path.join(root, name))
    sys.path.insert(0, root)
    make = decode_round if case == "decode" else tree_round
    runs = [make(importlib.import_module(n)) for n in ("lpuA", "lpuB")]
    for r in runs:
        r()  # the first run records the plan
    times: "list[list[float]]" = [[], []]
    ratios = []
    for i in range(rounds):
        got = {}
        for j in ((0, 1) if i % 2 == 0 else (1, 0)):
            got[j] = runs[j]()
            times[j].append(got[j][0])
        ratios.append(got[1][0] / got[0][0])
        if not all(np.array_equal(p, q) for p, q in zip(np.atleast_2d(got[0][1]), np.atleast_2d(got[1][1]))):
            sys.exit(f"round {i}: the builds' outputs differ")
    q = statistics.quantiles(ratios, n=4)
    print(f"{case}: A best {min(times[0]) * 1e3:.3f} ms, B best {min(times[1]) * 1e3:.3f} ms; "
          f"B/A per round: median {statistics.median(ratios):.3f}, quartiles {q[0]:.3f}-{q[2]:.3f} "
          f"({rounds} rounds, same outputs)")
    shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("stage", help="copy the package and build the extension into DIR")
    s.add_argument("dir")
    c = sub.add_parser("compare", help="time two staged builds in alternate rounds")
    c.add_argument("a")
    c.add_argument("b")
    c.add_argument("--rounds", type=int, default=20)
    c.add_argument("--case", choices=["decode", "tree"], default="decode")
    args = p.parse_args()
    if args.cmd == "stage":
        stage(args.dir)
    else:
        compare(args.a, args.b, args.rounds, args.case)


if __name__ == "__main__":
    main()
