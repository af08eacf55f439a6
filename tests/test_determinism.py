"""Determinism: the same program and inputs give the same bits, cycles and counters on
every run, also when two chips run at the same time in two Python threads (Chip.run
releases the GIL)."""

from __future__ import annotations

import threading
import time

import numpy as np

import lpu

import enginehelp as h
from enginehelp import mxm_prog, weight_inputs
from enginehelp import vxm_prog

COVERS = {"lw", "iw", "abc", "acc", "exp", "read", "write", "repeat"}

V1 = h.config("tsp_v1")


def long_mxm():
    """fp16 matmuls of many activation vectors on tsp_v1: batched products split over
    threads, the work where a race would show."""
    m = 4000
    mp = mxm_prog(V1, "f16", m=m, plane=2)
    rng = np.random.default_rng(77)
    x = (rng.standard_normal((m, V1.lanes)) * 4).astype(np.float16)
    w = rng.standard_normal((V1.lanes, V1.lanes)).astype(np.float16)
    ins = weight_inputs(mp, w, V1.lanes)
    ins["x"] = x.reshape(1, m, V1.lanes)
    return mp, ins


def long_vxm():
    cfg = V1
    rows = 4000
    p = vxm_prog("exp", "f32", rows, cfg=cfg)
    rng = np.random.default_rng(3)
    a = (rng.standard_normal((rows, cfg.lanes)) * 10).astype(np.float32)
    return p, {"a": a}


def bits(out):
    return {k: v.view(np.uint8).tobytes() for k, v in out.items()}


def run_once(program, ins):
    r = lpu.Runner(program)
    out = r(**ins)
    return bits(out), r.last.cycles, r.last.stats


def test_same_program_twice_gives_identical_results():
    mp, ins = long_mxm()
    prog = mp.prog.assemble()
    a = run_once(prog, ins)
    b = run_once(prog, ins)
    assert a[0] == b[0] and a[1] == b[1] and a[2] == b[2]
    assert a[1] == mp.prog.expected_cycles()
    # The same Runner (chip reset between calls) too.
    r = lpu.Runner(prog)
    first = bits(r(**ins))
    assert bits(r(**ins)) == first == a[0]


def _threads(jobs):
    results = [None] * len(jobs)

    def work(i, program, ins):
        results[i] = run_once(program, ins)

    ts = [threading.Thread(target=work, args=(i, p, x)) for i, (p, x) in enumerate(jobs)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return results, time.perf_counter() - t0


def test_two_threads_same_program_match_serial_runs():
    mp, ins = long_mxm()
    prog = mp.prog.assemble()
    serial = run_once(prog, ins)
    results, _ = _threads([(prog, ins), (prog, ins)])
    for r in results:
        assert r[0] == serial[0] and r[1] == serial[1] and r[2] == serial[2]


def test_two_threads_different_programs_match_serial_runs():
    mp, mins = long_mxm()
    vp, vins = long_vxm()
    progs = [(mp.prog.assemble(), mins), (vp.assemble(), vins)]
    serial = [run_once(p, x) for p, x in progs]
    results, _ = _threads(progs)
    for r, s in zip(results, serial):
        assert r[0] == s[0] and r[1] == s[1] and r[2] == s[2]
    assert serial[1][1] == vp.expected_cycles()


def test_the_gil_is_released_during_run():
    """While one thread runs a program, the main thread keeps running Python: some of
    its ticks fall inside a run (if run() held the GIL, none could, however fast)."""
    mp, ins = long_mxm()
    prog = mp.prog.assemble()
    chip = lpu.Chip(V1)
    chip.load(prog)
    from lpu.layout import write_tensor

    for t in prog.tensors:
        if t.name in ins:
            write_tensor(chip, t, ins[t.name])
    runs: list = []
    status = []
    stop = threading.Event()

    def work():
        while not stop.is_set() and len(runs) < 200:
            chip.reset(keep_sram=True)
            t0 = time.perf_counter()
            status.append(chip.run())
            runs.append((t0, time.perf_counter()))

    def inside(t):
        return any(a < t < b for a, b in list(runs))

    th = threading.Thread(target=work)
    th.start()
    ticks: list = []
    while th.is_alive() and not any(inside(t) for t in ticks):
        ticks.append(time.perf_counter())
        time.sleep(0.0005)
    stop.set()
    th.join()
    assert status and all(s == lpu.RunStatus.HALTED for s in status)
    assert any(inside(t) for t in ticks), "the main thread could not run while the chip ran"
