"""Traces (Chrome trace-event JSON), the utilisation report and its plot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict

import numpy as np
import pytest

import lpu
from lpu.layout import read_tensor, write_tensor

from conftest import ROOT

REQUIRED = {
    "X": {"name", "ph", "ts", "dur", "pid", "tid"},
    "C": {"name", "ph", "ts", "pid", "args"},
    "s": {"name", "ph", "ts", "pid", "tid", "id"},
    "f": {"name", "ph", "ts", "pid", "tid", "id"},
    "M": {"name", "ph", "pid", "args"},
}


def check_trace(doc: dict) -> list:
    """Everything a trace viewer relies on; returns the instruction slices."""
    assert isinstance(doc["traceEvents"], list) and doc["displayTimeUnit"] == "ns"
    assert doc["otherData"]["ns_per_cycle"] > 0 and "1 cycle" in doc["otherData"]["time"]
    slices, counters, flows = defaultdict(list), defaultdict(list), defaultdict(dict)
    for e in doc["traceEvents"]:
        assert e["ph"] in REQUIRED, e
        missing = REQUIRED[e["ph"]] - set(e)
        assert not missing, (missing, e)
        if e["ph"] == "X":
            assert e["dur"] > 0
            slices[(e["pid"], e["tid"])].append((e["ts"], e["ts"] + e["dur"]))
        elif e["ph"] == "C":
            assert all(isinstance(v, (int, float)) for v in e["args"].values())
            counters[e["name"]].append(e["ts"])
        elif e["ph"] in "sf":
            assert e["ph"] not in flows[e["id"]], f"flow {e['id']} has two {e['ph']} events"
            flows[e["id"]][e["ph"]] = e
    for track, spans in slices.items():
        spans.sort()
        for (a0, a1), (b0, _) in zip(spans, spans[1:]):
            assert b0 >= a1 - 1e-9, f"overlapping slices on track {track}: {a0}..{a1} and {b0}"
    for name, ts in counters.items():
        assert ts == sorted(ts), f"counter {name} goes back in time"
    for fid, pair in flows.items():
        assert set(pair) == {"s", "f"}, f"flow {fid} is not a start/finish pair"
        for e in pair.values():  # each end sits inside a slice of its track
            assert any(a - 1e-9 <= e["ts"] < b for a, b in slices[(e["pid"], e["tid"])]), e
        assert pair["s"]["ts"] <= pair["f"]["ts"]
    return [e for e in doc["traceEvents"] if e["ph"] == "X"]


def vector_add(tmp_path, **run):
    prog = lpu.assemble_file(os.path.join(ROOT, "examples", "vector_add.s"))
    chip = lpu.Chip(prog.config)
    chip.load(prog)
    x = (np.arange(8 * 320) % 100).astype(np.int8).reshape(8, 320)
    write_tensor(chip, prog.tensor("x"), x)
    write_tensor(chip, prog.tensor("y"), x)
    path = tmp_path / "t.json"
    assert chip.run(trace=path, **run) == lpu.RunStatus.HALTED
    np.testing.assert_array_equal(read_tensor(chip, prog.tensor("z")), x + x)
    return chip, json.loads(path.read_text())


def test_known_program_gives_exactly_the_expected_events(tmp_path):
    chip, doc = vector_add(tmp_path)
    xs = check_trace(doc)
    lat = dict(chip.config.latencies)
    # The schedule documented in examples/vector_add.s (timing rule of docs/timing.md).
    want = set()
    for k in range(8):
        want |= {("mem.W1.0", k, f"read {k}, s1e", k + lat["mem_read"]),
                 ("mem.W0.0", 1 + k, f"read {k}, s0e", 1 + k + lat["mem_read"]),
                 ("vxm.alu1", 5 + k, "add i8, s0e, s1e, s2e", 5 + k + lat["vxm_basic"]),
                 ("mem.E0.0", 8 + k, f"write {k}, s2e", 8 + k + lat["mem_write"])}
    got = {(e["args"]["queue"], e["args"]["cycle"], e["args"]["instruction"], e["args"]["lands"]) for e in xs}
    assert got == want and len(xs) == len(want)
    for e in xs:
        assert e["ts"] == pytest.approx(e["args"]["cycle"] / 1000) and e["dur"] == pytest.approx(0.001)
    # Arrows: add k reads read k of y and of x; write k reads add k.
    queue_of = {(e["pid"], e["tid"]): e["args"]["queue"] for e in xs}
    ends = defaultdict(dict)
    for e in doc["traceEvents"]:
        if e["ph"] in "sf":
            ends[e["id"]][e["ph"]] = (queue_of[(e["pid"], e["tid"])], round(e["ts"] * 1000))
    arrows = {(v["s"], v["f"]) for v in ends.values()}
    want_arrows = set()
    for k in range(8):
        want_arrows |= {(("mem.W1.0", k), ("vxm.alu1", 5 + k)), (("mem.W0.0", 1 + k), ("vxm.alu1", 5 + k)),
                        (("vxm.alu1", 5 + k), ("mem.E0.0", 8 + k))}
    assert arrows == want_arrows
    # SRAM counter: y alone on cycle 0, x and y on 1..7, x alone on 8; the writes on 8..15.
    sram = {round(e["ts"] * 1000): e["args"] for e in doc["traceEvents"]
            if e["ph"] == "C" and e["name"] == "SRAM bytes per cycle"}
    for c in range(16):
        reads = 320 * ((c <= 7) + (1 <= c <= 8))
        assert sram[c] == {"read": reads, "written": 320 * (8 <= c <= 15)}, c
    assert sram[16] == {"read": 0, "written": 0}


def test_window_and_scale(tmp_path):
    chip, doc = vector_add(tmp_path, trace_window=(5, 9), ns_per_cycle=1000 / 900)
    xs = check_trace(doc)
    assert {e["args"]["cycle"] for e in xs} == {5, 6, 7, 8}
    assert doc["otherData"]["from_cycle"] == 5 and doc["otherData"]["to_cycle"] == 9
    e = min(xs, key=lambda e: e["ts"])
    assert e["ts"] == pytest.approx(5 * (1000 / 900) / 1000)
    assert chip.cycles == 36  # tracing changes nothing the program does


def test_bad_trace_arguments_raise_clearly(tmp_path):
    chip = lpu.Chip()
    with pytest.raises(lpu.LpuError, match="trace_window needs trace"):
        chip.run(trace_window=(0, 5))
    with pytest.raises(lpu.LpuError, match="empty"):
        chip.run(trace=tmp_path / "t.json", trace_window=(5, 5))
    with pytest.raises(lpu.LpuError, match="ns_per_cycle"):
        chip.run(trace=tmp_path / "t.json", ns_per_cycle=0)
    with pytest.raises(OSError, match="cannot write the trace"):
        chip.run(trace=tmp_path / "missing-dir" / "t.json")


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "lpu", *args], capture_output=True, text=True, cwd=cwd)


def test_generate_traces_one_decode_step(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from llm_reference import random_model

    from lpu.llm import save_hf
    from lpu.llm.onchip import ChipModel

    model = random_model(3, dim=64, hidden_dim=128, n_layers=1, n_heads=4, n_kv_heads=2, max_seq_len=32)
    save_hf(model, tmp_path / "m")
    r = cli("generate", "--model", str(tmp_path / "m"), "--prompt", "a", "--max-tokens", "3",
            "--temperature", "0", "--trace", str(tmp_path / "step.json"))
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / "step.json").read_text())
    xs = check_trace(doc)
    # One step: the same instructions the program issues, once.
    cm = ChipModel(model)
    cm.step(1)
    assert len(xs) == sum(cm.chip.stats()["units"][u]["issued"] for u in ("MEM", "VXM", "MXM", "SXM", "ICU"))
    units = {e["cat"] for e in xs}
    assert {"MEM", "VXM", "MXM", "SXM"} <= units


def test_run_trace_report_and_plot(tmp_path):
    assert cli("asm", os.path.join(ROOT, "examples", "vector_add.s"), "-o", "va.lpu", cwd=tmp_path).returncode == 0
    np.save(tmp_path / "x.npy", (np.arange(8 * 320) % 100).astype(np.int8).reshape(8, 320))
    r = cli("run", "va.lpu", "--input", "x=x.npy", "--input", "y=x.npy", "--trace", "t.json",
            "--trace-window", "0:10", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert {e["args"]["cycle"] for e in check_trace(json.loads((tmp_path / "t.json").read_text()))} <= set(range(10))
    r = cli("report", "va.lpu", "--input", "x=x.npy", "--input", "y=x.npy", "--png", "u.png", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    # 36 cycles; MEM issues on cycles 0..15 (16), the VXM on 5..12 (8); 24 SRAM words of 320 bytes.
    assert "36 cycles" in r.stdout
    assert "MEM" in r.stdout and "44.44%" in r.stdout and "22.22%" in r.stdout
    assert f"{24 * 320 / 36:.0f} bytes/cycle" in r.stdout and "56,320" in r.stdout
    png = (tmp_path / "u.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_timeline_matches_the_schedule():
    prog = lpu.assemble_file(os.path.join(ROOT, "examples", "vector_add.s"))
    chip = lpu.Chip(prog.config)
    chip.load(prog)
    chip.run()
    tl = chip.timeline(bins=36)
    assert list(tl["cycles"]) == list(range(36))
    np.testing.assert_array_equal(tl["MEM"], [1.0 if c <= 15 else 0.0 for c in range(36)])
    np.testing.assert_array_equal(tl["VXM"], [1.0 if 5 <= c <= 12 else 0.0 for c in range(36)])
    with pytest.raises(lpu.LpuError):
        chip.timeline(0)


def test_docs_examples_run(tmp_path, monkeypatch):
    """The Python snippets of docs/tracing.md, on a loaded chip."""
    import re

    text = open(os.path.join(ROOT, "docs", "tracing.md")).read()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 2
    monkeypatch.chdir(tmp_path)
    prog = lpu.assemble_file(os.path.join(ROOT, "examples", "vector_add.s"))
    chip = lpu.Chip(prog.config)
    chip.load(prog)
    exec(compile(blocks[0], "docs/tracing.md", "exec"), {"chip": chip})
    for name in ("out.json", "start.json"):
        assert len(check_trace(json.loads((tmp_path / name).read_text()))) == 32
    exec(compile(blocks[1], "docs/tracing.md", "exec"), {"chip": chip})
    assert (tmp_path / "util.png").stat().st_size > 5000
