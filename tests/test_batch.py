"""Batched issue of repeated instructions gives exactly what one-by-one issue gives.

Every program here runs twice, with ``Chip(fast=False)`` (every instruction issued on its
own cycle) and ``Chip(fast=True)`` (runs of re-issues computed at once where the engine
can show nothing could differ), and everything observable must be identical: outputs bit
for bit, SRAM, cycle counts, statistics, faults.
"""

from __future__ import annotations

import glob
import os

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import lpu
from lpu.builder import Builder
from lpu.layout import read_tensor, write_tensor

from conftest import ROOT


def loaded(prog: lpu.Program, inputs: dict, fast: bool) -> lpu.Chip:
    chip = lpu.Chip(prog.config, fast=fast)
    chip.load(prog)
    for name, v in inputs.items():
        write_tensor(chip, prog.tensor(name), v)
    return chip


def run_both(prog: lpu.Program, inputs: dict, *, until=None):
    """Run one by one and batched (and batched again, replaying the plan of a first run
    on other data when that run halted); everything must agree."""
    out = []
    for fast, replay in ((False, False), (True, False), (True, True)):
        chip = loaded(prog, inputs, fast)
        if replay:
            chip.reset()
            for name, v in inputs.items():
                write_tensor(chip, prog.tensor(name), np.ascontiguousarray(v[::-1]))
            first = chip.run()
            chip.reset()
            for name, v in inputs.items():
                write_tensor(chip, prog.tensor(name), v)
        status = chip.run() if until is None else chip.run_until(until)
        if replay and until is None:
            # (A tighter cycle limit than the first run's cuts batches short: then the
            # run is redone without the plan.)
            assert chip.replayed == (first == lpu.RunStatus.HALTED and status != lpu.RunStatus.FAULT)
        tensors = {t.name: read_tensor(chip, t) for t in prog.tensors}
        fault = None if chip.fault is None else str(chip.fault)
        out.append((status, chip.cycle, chip.cycles, chip.stats(), tensors, fault, chip.batched_issues))
    (s0, c0, n0, st0, t0, f0, b0), (s1, c1, n1, st1, t1, f1, b1), *again = out
    for s, c, n, st, t, f, _ in [out[1], *again]:
        assert (s0, c0, n0, f0) == (s, c, n, f)
        assert st0 == st
        for name in t0:
            assert t0[name].tobytes() == t[name].tobytes(), name
    assert b0 == 0
    return b1, t1, f1


def stream_program(cfg, n, dtype, op, split, then=None):
    """z = op(x, y) over n vectors split over `split` slices; with `then`, z = then(op(x,
    y)), the first result chained from its ALU into the second operation."""
    b = Builder(cfg)
    x = b.input("x", dtype, (n, cfg.lanes), hemi="W", split=split)
    y = b.input("y", dtype, (n, cfg.lanes), hemi="E", split=split)
    z = b.output("z", dtype, (n, cfg.lanes), hemi="E", split=split, apart_from=[y])
    t = b.earliest([x, y], b.vxm_pos)
    xs = b.read(x, stream=0, arrive=(b.vxm_pos, t))
    ys = b.read(y, stream=4, arrive=(b.vxm_pos, t))
    out = b.vxm(op, xs, ys, stream=8) if then is None else b.vxm(then, b.vxm(op, xs, ys), stream=8)
    b.write(out, z)
    return b.build()


@pytest.mark.parametrize("dtype,op", [("int8", "add"), ("float32", "mul"), ("int16", "max"), ("float16", "sub")])
def test_streaming_elementwise(dtype, op):
    cfg = lpu.ChipConfig("tsp_small")
    n = 300
    prog = stream_program(cfg, n, dtype, op, 2)
    rng = np.random.default_rng(1)
    if dtype.startswith("int"):
        x, y = (rng.integers(-100, 100, (n, cfg.lanes)).astype(dtype) for _ in range(2))
    else:
        x, y = (rng.standard_normal((n, cfg.lanes)).astype(dtype) for _ in range(2))
    batched, out, _ = run_both(prog, {"x": x, "y": y})
    assert batched > 0, "this program is a textbook case for batching"
    want = getattr(np, {"add": "add", "mul": "multiply", "max": "maximum", "sub": "subtract"}[op])(x, y)
    np.testing.assert_array_equal(out["z"], want)


@pytest.mark.parametrize("dtype", ["int8", "float32"])
def test_a_chip_run_again_computes_afresh(dtype):
    # Batches reuse the buffers of earlier batches' results once nothing holds them; a
    # second run with other inputs must not see any of the first run's values.
    cfg = lpu.ChipConfig("tsp_small")
    n = 600
    prog = stream_program(cfg, n, dtype, "add", 3)
    chip = lpu.Chip(cfg)
    chip.load(prog)
    rng = np.random.default_rng(5)
    for _ in range(3):
        x, y = (rng.integers(-60, 60, (n, cfg.lanes)).astype(dtype) for _ in range(2))
        chip.reset()
        write_tensor(chip, prog.tensor("x"), x)
        write_tensor(chip, prog.tensor("y"), y)
        chip.run()
        assert chip.batched_issues > 0
        np.testing.assert_array_equal(read_tensor(chip, prog.tensor("z")), x + y)


@settings(max_examples=25, deadline=None)
@given(st.integers(5, 200), st.sampled_from(["int8", "float32", "int32"]), st.sampled_from(["add", "mul", "min"]),
       st.integers(1, 3), st.integers(1, 400))
def test_random_streams_and_stops(n, dtype, op, split, stop):
    cfg = lpu.ChipConfig("tsp_small")
    prog = stream_program(cfg, n, dtype, op, split)
    rng = np.random.default_rng(n)
    x, y = (rng.integers(-50, 50, (n, cfg.lanes)).astype(dtype) for _ in range(2))
    run_both(prog, {"x": x, "y": y})
    run_both(prog, {"x": x, "y": y}, until=stop)


@settings(max_examples=20, deadline=None)
@given(st.integers(5, 300), st.sampled_from(["int8", "float32"]), st.sampled_from(["add", "max"]),
       st.sampled_from(["abs", "neg", "copy"]), st.integers(1, 3), st.integers(1, 600))
def test_chained_results_of_split_tensors(n, dtype, op, then, split, stop):
    # The first operation's results stay in its ALU and feed the second (results of a
    # batch read back by another ALU, in the order the batch stored them).
    cfg = lpu.ChipConfig("tsp_small")
    prog = stream_program(cfg, n, dtype, op, split, then=then)
    rng = np.random.default_rng(n + split)
    xv, yv = (rng.integers(-60, 60, (n, cfg.lanes)).astype(dtype) for _ in range(2))
    batched, out, _ = run_both(prog, {"x": xv, "y": yv})
    assert batched > 0 or n < 50
    first = np.add(xv, yv) if op == "add" else np.maximum(xv, yv)
    want = {"abs": np.abs, "neg": np.negative, "copy": np.copy}[then](first)
    np.testing.assert_array_equal(out["z"], want)
    run_both(prog, {"x": xv, "y": yv}, until=stop)


@pytest.mark.parametrize("split", [1, 3])
def test_words_a_batch_wrote_read_back_and_written_over_at_once(split):
    # Batched writes land in SRAM lazily (when something reads their slice, a single
    # write lands, or the run stops): a single read of words just written must see
    # them, and a single write over one of them must come after it all the same.
    cfg = lpu.ChipConfig("tsp_small")
    n = 200
    b = Builder(cfg)
    x = b.input("x", "int8", (n, cfg.lanes), hemi="W", split=split)
    y = b.input("y", "int8", (n, cfg.lanes), hemi="E", split=split)
    u = b.input("u", "int8", (1, cfg.lanes), hemi="W", apart_from=[x])
    z = b.output("z", "int8", (n, cfg.lanes), hemi="E", split=split, apart_from=[y])
    again = b.output("again", "int8", (2, cfg.lanes), hemi="W", apart_from=[x, u])
    t = b.earliest([x, y], b.vxm_pos)
    landed = b.write(b.vxm("add", b.read(x, stream=0, arrive=(b.vxm_pos, t)),
                           b.read(y, stream=4, arrive=(b.vxm_pos, t)), stream=8), z)
    for i, v in enumerate((n // 2, n - 1)):
        back = b.read(z, stream=12, vectors=(v, 1), arrive=(b.vxm_pos, b.earliest([z], b.vxm_pos, landed + 1)),
                      search=True)
        b.write(b.vxm("copy", back, stream=16 + 4 * i), again, vectors=(i, 1))
    late = b.read(u, stream=24, arrive=(b.vxm_pos, b.earliest([u], b.vxm_pos, landed + 1)), search=True)
    b.write(b.vxm("copy", late, stream=28), z, vectors=(n // 3, 1))
    rng = np.random.default_rng(split)
    xv, yv = (rng.integers(-60, 60, (n, cfg.lanes)).astype(np.int8) for _ in range(2))
    uv = rng.integers(-60, 60, (1, cfg.lanes)).astype(np.int8)
    batched, out, _ = run_both(b.build(), {"x": xv, "y": yv, "u": uv})
    assert batched > 0
    want = xv + yv
    np.testing.assert_array_equal(out["again"], want[[n // 2, n - 1]])
    want[n // 3] = uv[0]
    np.testing.assert_array_equal(out["z"], want)


@pytest.mark.parametrize("dt,blocks", [("i8", 20), ("f16", 40), ("i8", 23), ("f16", 41)])
def test_weight_loads(dt, blocks):
    # A run of lw fills a full plane's weight buffer (20 int8 or 40 fp16 blocks on
    # tsp_v1); past that, the lw that finds the buffer full faults the same either way.
    import enginehelp as h

    cfg = h.config("tsp_v1")
    full = cfg.lanes // (16 if dt == "i8" else 8)
    mp = h.mxm_prog(cfg, dt, m=2, lw_blocks=blocks)
    rng = np.random.default_rng(blocks)
    if dt == "i8":
        w = rng.integers(-128, 128, (cfg.lanes, cfg.lanes), dtype=np.int8)
        x = rng.integers(-128, 128, (1, 2, cfg.lanes), dtype=np.int8)
    else:
        w, x = (rng.standard_normal(s).astype(np.float16) for s in ((cfg.lanes, cfg.lanes), (1, 2, cfg.lanes)))
    ins = h.weight_inputs(mp, w, cfg.lanes)
    ins["x"] = x
    batched, out, fault = run_both(mp.prog.assemble(), ins)
    if blocks <= full:
        assert batched > 0
        want = x[0].astype(np.float64) @ w.astype(np.float64)
        np.testing.assert_allclose(out["y"], want, rtol=1e-3, atol=1e-2 * np.abs(want).max())
    else:
        # (A fault makes the fast chip redo the run one by one from before its batches.)
        assert fault is not None and "the weight buffer already holds" in fault


def test_kernels_and_examples_agree():
    import sys

    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from llm_reference import random_model

    from lpu.llm.onchip import compile_model

    model = random_model(2, dim=64, hidden_dim=172, n_layers=1, n_heads=4, n_kv_heads=2, max_seq_len=32)
    prog, _ = compile_model(model, lpu.ChipConfig("tsp_v1"))
    x = model.weights["tok_embeddings"][5]
    batched, _, _ = run_both(prog, {"x": x})
    assert batched > 0
    for path in sorted(glob.glob(os.path.join(ROOT, "examples", "*.s"))):
        prog = lpu.assemble_file(path)
        rng = np.random.default_rng(0)
        inputs = {}
        for t in prog.tensors:
            if t.kind == "input":
                dt = np.dtype("float32" if t.dtype == "bfloat16" else t.dtype)
                if dt.kind == "f":
                    inputs[t.name] = rng.standard_normal(t.shape).astype(dt)
                else:
                    inputs[t.name] = rng.integers(0, 60, t.shape).astype(dt)
        run_both(prog, inputs)


def test_faults_are_the_same():
    cfg = lpu.ChipConfig("tsp_small")
    prog = stream_program(cfg, 50, "int8", "add", 1)
    # Cut one operand stream short: the 32nd add finds it empty, in the middle of a run
    # the fast engine would otherwise batch.
    text = prog.disassemble()
    head, tail = text.split(".queue mem.E0.0", 1)
    bad = lpu.assemble(head + ".queue mem.E0.0" + tail.replace("repeat 49, 1", "repeat 30, 1", 1))
    rng = np.random.default_rng(0)
    x = rng.integers(-50, 50, (50, cfg.lanes)).astype(np.int8)
    _, _, fault = run_both(bad, {"x": x, "y": x})
    assert fault is not None and "empty" in fault and "cycle" in fault


@pytest.mark.parametrize("dtype", ["int8", "float16"])
@pytest.mark.parametrize("slots_times", [1.5, 20.5])
def test_streaming_matmul(dtype, slots_times):
    """Activations streamed through one plane's weights, results written as they leave:
    batched abc runs are one matrix product; the slots wrap around (so a batch of acc
    can run on from one batch of abc's results into the next)."""
    from lpu.kernels.matmul import load_weights

    # Room for more vectors than a batch takes (4,096), so that batches of acc start
    # part-way through a batch of abc's results.
    cfg = lpu.ChipConfig("tsp_small", addresses=4096)
    n, lanes = int(slots_times * cfg.mxm_acc_slots) + 3, cfg.lanes
    rng = np.random.default_rng(5)
    if dtype == "int8":
        w = rng.integers(-128, 128, (lanes, lanes)).astype(np.int8)
        x = rng.integers(-128, 128, (n, lanes)).astype(np.int8)
    else:
        w = rng.standard_normal((lanes, lanes)).astype(np.float16)
        x = rng.standard_normal((n, lanes)).astype(np.float16)
    b = Builder(cfg)
    wt = load_weights(b, "w", w, dtype, hemi="W",
                      quantized=(w, np.ones(lanes, np.float32)) if dtype == "int8" else None)
    xt = b.input("x", dtype, (n, lanes), hemi="W", split=2)
    yt = b.output("y", "int32" if dtype == "int8" else "float32", (n, lanes), hemi="E", split=2)
    p = wt.planes[0]
    pos = b.mxm_pos(p)
    wf = b.read(wt.tiles[0], stream=0, vectors=(0, wt.rows[0][0]), arrive=(pos, 0),
                spread=16 if dtype == "int8" else 8, west=True, search=True)
    ready = b.mxm_install(p, b.mxm_load(p, wf) + 1)
    stride = 1 if dtype == "int8" else 4
    xf = b.read(xt, stream=16, arrive=(pos, ready), stride=stride, west=True, search=True)
    b.mxm_abc(p, xf, 0)
    af = b.mxm_acc(p, 0, n, at=xf.at(pos) + b.lat["mxm_abc"], stream=20, west=False, stride=stride)
    b.write(af, yt)
    prog = b.build()
    batched, out, _ = run_both(prog, {"x": x})
    assert batched > 0
    # Stopped part-way, with results of batches landing in SRAM but not yet written
    # there: both modes must show the same words.
    for part in range(1, 6):
        run_both(prog, {"x": x}, until=xf.at(pos) + stride * n * part // 6)
    want = x.astype(np.float32) @ w.astype(np.float32)
    if dtype == "int8":
        np.testing.assert_array_equal(out["y"], want.astype(np.int32))
    else:
        np.testing.assert_allclose(out["y"], want, rtol=1e-3, atol=1e-3)


def chain_program(cfg, n, dtype, op):
    """A running reduction (`scan`: each re-issue takes its own ALU's previous result) and
    a held vector (`hold`: an ALU copying its own result) feeding a point-wise op."""
    lat = lpu.isa.instruction("copy").latency_cycles(cfg)
    b = Builder(cfg)
    x = b.input("x", dtype, (n, cfg.lanes), hemi="W")
    w = b.input("w", dtype, (n, cfg.lanes), hemi="W", apart_from=[x])
    y = b.input("y", dtype, (1, cfg.lanes), hemi="E")
    red = b.output("red", dtype, (1, cfg.lanes), hemi="E")
    z = b.output("z", dtype, (n, cfg.lanes), hemi="E", apart_from=[y])
    t = b.earliest([x, w, y], b.vxm_pos) + 4
    b.write(b.scan(op, b.read(x, stream=0, arrive=(b.vxm_pos, t), stride=lat), stream=8), red)
    held = b.hold(b.read(y, stream=4, arrive=(b.vxm_pos, t - lat)), n)
    b.write(b.vxm(op, b.read(w, stream=12, arrive=(b.vxm_pos, t), stride=lat), held, stream=16), z)
    return b.build()


@settings(max_examples=15, deadline=None)
@given(st.integers(2, 150), st.sampled_from(["float32", "int32", "int8"]), st.sampled_from(["add", "max", "min"]),
       st.integers(1, 600))
def test_running_reductions_and_held_vectors(n, dtype, op, stop):
    cfg = lpu.ChipConfig("tsp_small")
    prog = chain_program(cfg, n, dtype, op)
    rng = np.random.default_rng(n)
    x = rng.integers(-20, 20, (n, cfg.lanes)).astype(dtype)
    y = rng.integers(-20, 20, (1, cfg.lanes)).astype(dtype)
    w = rng.integers(-20, 20, (n, cfg.lanes)).astype(dtype)
    inputs = {"x": x, "w": w, "y": y}
    batched, out, _ = run_both(prog, inputs)
    if n >= 16:
        # More than the 3n + 2 MEM issues: the chained VXM runs were batched too.
        assert batched > 3 * n + 2
    f = {"add": np.add, "max": np.maximum, "min": np.minimum}[op]
    np.testing.assert_array_equal(out["red"][0], f.reduce(x, axis=0, dtype=dtype))
    np.testing.assert_array_equal(out["z"], f(w, y))
    run_both(prog, inputs, until=stop)


def test_a_broken_chain_faults_the_same():
    cfg = lpu.ChipConfig("tsp_small")
    prog = chain_program(cfg, 40, "float32", "add")
    # Without the scan's first copy, its first re-issue has no result to chain from.
    lines = prog.disassemble().splitlines()
    i = next(i for i, line in enumerate(lines) if line.strip().startswith("copy f32, s0"))
    lines[i] = "    nop 1"
    bad = lpu.assemble("\n".join(lines))
    x = np.ones((40, cfg.lanes), np.float32)
    _, _, fault = run_both(bad, {"x": x, "w": x, "y": x[:1]})
    assert fault is not None and "chain" in fault


def breakpoint_runs(prog: lpu.Program, inputs: dict, queue: str, watch: str, index: int = 1) -> list:
    """Run with a breakpoint on `queue`'s instruction `index` (its second by default),
    then on to the end, one by one and in batches; both must agree. Returns the batched
    chip's two stops: status, cycle, statistics and tensor `watch`'s bytes."""
    seen = []
    for fast in (False, True):
        chip = loaded(prog, inputs, fast)
        chip.add_breakpoint(queue, index)
        states = []
        for _ in range(2):
            status = chip.run()
            states.append((status, chip.cycle, chip.stats(), read_tensor(chip, prog.tensor(watch)).tobytes()))
        seen.append(states)
    assert seen[0] == seen[1]
    return seen[1]


def test_a_breakpoint_amid_batches_stops_in_the_same_state():
    """A breakpoint on cycle ~150 while every queue is in the middle of a batched run:
    the fast chip redoes the stretch one by one from before its first batch. Slice
    pages no instruction reads (z's) are not saved for that; they must still end up
    exactly as one-by-one issue leaves them: half new, half what they held before."""
    cfg = lpu.ChipConfig("tsp_small")
    text = stream_program(cfg, 200, "int8", "add", 2).disassemble()
    prog = lpu.assemble(text + "\n.queue mem.W5.0\n    nop 150\n    read 0, s20e\n")
    rng = np.random.default_rng(5)
    x, y = (rng.integers(-50, 50, (200, cfg.lanes)).astype(np.int8) for _ in range(2))
    z = np.full((200, cfg.lanes), 7, np.int8)
    (stop, at, _, half), (end, _, _, full) = breakpoint_runs(prog, {"x": x, "y": y, "z": z}, "mem.W5.0", "z")
    assert stop == lpu.RunStatus.BREAKPOINT and end == lpu.RunStatus.HALTED
    want = (x.astype(np.int16) + y).astype(np.int8)
    assert full == want.tobytes()
    old = np.frombuffer(half, np.int8).reshape(200, cfg.lanes)
    new = np.all(old == want, axis=1)
    assert new.any() and (old[~new] == 7).all() and not new.all(), "z is half written at the breakpoint"


def test_a_breakpoint_amid_batches_that_write_what_they_read():
    """x = x + y in place, stopped by a breakpoint while the adds and the writes back
    run in batches: x's slices are read, so the fast chip must put back the words its
    batches had already written past the stop (its SRAM journal) before redoing the
    stretch one by one; the state at the stop and after must be one-by-one issue's."""
    cfg = lpu.ChipConfig("tsp_small")
    n = 200
    b = Builder(cfg)
    x = b.input("x", "int8", (n, cfg.lanes), hemi="W", split=2)
    y = b.input("y", "int8", (n, cfg.lanes), hemi="E", split=2)
    t = b.earliest([x, y], b.vxm_pos)
    xs = b.read(x, stream=0, arrive=(b.vxm_pos, t))
    ys = b.read(y, stream=4, arrive=(b.vxm_pos, t))
    b.write(b.vxm("add", xs, ys, stream=8, west=True), x)
    text = b.build().disassemble()
    prog = lpu.assemble(text + "\n.queue mem.E5.0\n    nop 150\n    read 0, s20e\n")
    rng = np.random.default_rng(6)
    xv, yv = (rng.integers(-50, 50, (n, cfg.lanes)).astype(np.int8) for _ in range(2))
    (stop, _, _, half), (end, _, _, full) = breakpoint_runs(prog, {"x": xv, "y": yv}, "mem.E5.0", "x")
    assert stop == lpu.RunStatus.BREAKPOINT and end == lpu.RunStatus.HALTED
    want = (xv.astype(np.int16) + yv).astype(np.int8)
    assert full == want.tobytes()
    mid = np.frombuffer(half, np.int8).reshape(n, cfg.lanes)
    new = np.all(mid == want, axis=1)
    assert new.any() and not new.all(), "x is half updated at the breakpoint"
    assert (mid[~new] == xv[~new]).all()


def test_a_run_released_by_sync_then_a_fault_stops_in_the_same_state():
    """mem.W1.0 passes a `sync` on the cycle a notify lands and issues a read followed
    by a repeat on the same cycle, which is batched from its first issue. A cycle later
    mem.W0.0 faults. The batched chip must redo the stretch one by one, so that the read
    run counts one issue, not eight (it kept all eight: the state before the batch was
    only saved for queues whose next instruction was a repeat or came before one, not
    for a `sync` that passes into one)."""
    src = """
.chip tsp_small
.queue mem.W0.0
    notify                     ; lands on cycle 10
    nop 10
    write 0, s0e               ; cycle 11: nothing on s0e, a fault
.queue mem.W1.0
    nop 10
    sync                       ; cycle 10: the notify lands, so it passes
    read 14, s14e              ; ...and the run of 8 reads starts the same cycle
    repeat 7, 4
"""
    prog = lpu.assemble(src)
    batched, _, fault = run_both(prog, {})
    assert fault is not None and "stream_empty" in fault
    chip = loaded(prog, {}, True)
    chip.run()
    assert chip.stats()["queues"]["mem.W1.0"] == 1


def test_a_run_whose_first_issue_meets_its_slices_other_port_faults():
    """Port 0 of slice W0 reads on cycle 0; port 1 starts a run of reads on the same
    cycle, which would be batched from its first issue. Two reads of one slice in a
    cycle are a bank conflict: the fast chip must fault as one-by-one issue does (it ran
    on: the look-ahead saw only the other port's issues still to come, not the one it
    had made earlier that cycle)."""
    src = """
.chip tsp_small
.queue mem.W0.0
    read 6, s6e
.queue mem.W0.1
    read 6, s0e
    repeat 5, 2
"""
    prog = lpu.assemble(src)
    _, _, fault = run_both(prog, {})
    assert fault is not None and "bank_conflict" in fault and "two reads" in fault


def test_a_repeat_not_yet_taken_is_a_hazard():
    """A queue whose instruction issued on cycle t takes the `repeat` after it on t + 1.
    A queue earlier in issue order that starts a batch on t + 1 must count those
    re-issues among the writes still to come: here mem.W0.1 stores what passes it on
    s0w, first x's rows (read in E10, upstream), then from cycle 47 y's rows, which
    mem.E2.0 (nearer) puts on the same stream from cycle 40 on, one a cycle."""
    src = """
.chip tsp_small
.input x i8 [20,32] hemi=E addr=0 slices=10
.input y i8 [13,32] hemi=E addr=0 slices=2
.output z i8 [20,32] hemi=W addr=0 slices=0
.queue mem.E10.0
    @25 read 0, s0w            ; reaches W0 (12 positions west) 3 + 12 cycles later
    repeat 19, 1
.queue mem.E2.0
    @40 read 0, s0w            ; 4 positions from W0: from cycle 47 on, W0 sees y
    repeat 12, 1
.queue mem.W0.1
    @40 write 0, s0w
    repeat 19, 1
"""
    prog = lpu.assemble(src)
    rng = np.random.default_rng(8)
    x = rng.integers(-128, 128, (20, 32)).astype(np.int8)
    y = rng.integers(-128, 128, (13, 32)).astype(np.int8)
    batched, out, fault = run_both(prog, {"x": x, "y": y})
    assert fault is None and batched > 0
    np.testing.assert_array_equal(out["z"], np.concatenate([x[:7], y]))


def _position(hemi: str, sl: int) -> int:
    """Where MEM slice `sl` of a hemisphere sits on tsp_small (the VXM is at 28)."""
    return 27 - sl if hemi == "W" else 29 + sl


@st.composite
def relay_programs(draw):
    """MEM read runs that put rows on one stream from several slices (a nearer one
    overwrites what passes it) and write runs that store what passes them, mostly
    timed to catch some reader's rows, sometimes with a nearer reader starting on the
    writer's first cycle: legal programs the kernels never make, with random starts,
    lengths, periods and ports. Some catch nothing valid, or use both ports of a slice
    at once: those fault, and must fault the same way in both modes."""
    d = draw(st.sampled_from("ew"))
    slices = draw(st.lists(st.tuples(st.sampled_from("WE"), st.integers(0, 23)), min_size=3, max_size=7,
                           unique=True))
    # In stream order (upstream first); the first is a reader, so every writer has one
    # upstream, and the last a writer.
    slices.sort(key=lambda hs: _position(*hs), reverse=d == "w")
    roles = ["read"] + [draw(st.sampled_from(["write", "read"])) for _ in slices[2:]] + ["write"]
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    runs = []  # [role, hemi, slice, port, start, n, period]
    for i, (hemi, sl) in enumerate(slices):
        port = draw(st.integers(0, 1))
        if roles[i] == "read":
            n, period, start = draw(st.integers(1, 24)), draw(st.sampled_from([1, 1, 1, 2])), draw(st.integers(0, 40))
        elif draw(st.integers(0, 9)) < 9:
            src = draw(st.sampled_from([j for j in range(i) if roles[j] == "read"]))
            _, rh, rsl, _, rs, rn, period = runs[src]
            skip = draw(st.integers(0, rn - 1))
            n = draw(st.integers(1, rn - skip))
            dist = abs(_position(hemi, sl) - _position(rh, rsl))
            start = rs + 3 + dist + skip * period + draw(st.sampled_from([0] * 8 + [-1, 1]))
            nearer = [j for j in range(src + 1, i) if roles[j] == "read"]
            if nearer and draw(st.booleans()):
                runs[draw(st.sampled_from(nearer))][4] = start  # a repeat taken while we batch
        else:
            n, period, start = draw(st.integers(1, 24)), 1, draw(st.integers(0, 60))
        runs.append([roles[i], hemi, sl, port, max(start, 0), n, period])
    lines = [".chip tsp_small"]
    inputs = {}
    for i, (role, hemi, sl, port, start, n, period) in enumerate(runs):
        if role == "read":
            lines.append(f".input x{i} i8 [{n},32] hemi={hemi} addr=0 slices={sl}")
            inputs[f"x{i}"] = rng.integers(-128, 128, (n, 32)).astype(np.int8)
        else:
            lines.append(f".output z{i} i8 [{n},32] hemi={hemi} addr=0 slices={sl}")
        repeat = f"\n    repeat {n - 1}, {period}" if n > 1 else ""
        lines += [f".queue mem.{hemi}{sl}.{port}", f"    @{start} {role} 0, s0{d}{repeat}"]
    return lpu.assemble("\n".join(lines) + "\n"), inputs


@settings(max_examples=600, deadline=None)
@given(relay_programs())
def test_random_relays_on_one_stream(case):
    """Batches of reads and writes on a stream that several queues write: everything
    (stores, faults, cycles) as one-by-one issue gives."""
    prog, inputs = case
    run_both(prog, inputs)


def test_a_breakpoint_on_a_repeat_stops_there_in_both_modes():
    """Batches may start with the instruction a repeat repeats (before the repeat is
    taken, a cycle later); a breakpoint on the repeat itself must still stop there."""
    prog = lpu.assemble("""
.chip tsp_small
.input x i8 [20,32] hemi=W addr=0 slices=0
.output z i8 [20,32] hemi=E addr=0 slices=0
.queue mem.W0.0
    @10 read 0, s0e
    repeat 19, 1
.queue mem.E0.0
    @15 write 0, s0e           ; E0 is 2 positions east of W0; a read lands in 3
    repeat 19, 1
""")
    x = np.random.default_rng(9).integers(-128, 128, (20, 32)).astype(np.int8)
    (stop, at, _, half), (end, _, _, full) = breakpoint_runs(prog, {"x": x}, "mem.W0.0", "z", index=2)
    assert stop == lpu.RunStatus.BREAKPOINT and at == 11 and end == lpu.RunStatus.HALTED
    assert full == x.tobytes() and half != full


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 255), st.one_of(st.integers(2, 36), st.integers(250, 300))),
                min_size=1, max_size=7), st.integers(0, 2**32 - 1))
# Nearly every slot, then short runs that miss the rest: the first run's values stay.
@example(later=[(10, 250), (100, 30), (200, 5), (50, 7), (150, 3)], seed=1)
# Every slot again, later than the first (which it hides), then short runs.
@example(later=[(7, 256), (100, 30), (200, 5), (50, 7), (150, 3)], seed=2)
@example(later=[(3, 300), (40, 20), (60, 20), (80, 20), (90, 256), (1, 2)], seed=3)
def test_abc_runs_over_overlapping_slots(later, seed):
    """int8 abc runs into overlapping, wrapping ranges of the 256 slots (up to eight
    runs: more than a plane keeps unfolded), the first filling them all, later ones short,
    nearly all of them or all of them again (a run that fills every slot hides the ones
    before it), then every slot read back: each holds the product of the last activation
    written to it, in fast and one-by-one mode alike."""
    from lpu.kernels.matmul import load_weights

    cfg = lpu.ChipConfig("tsp_small", addresses=4096)  # room for long runs
    lanes, slots = cfg.lanes, cfg.mxm_acc_slots
    rng = np.random.default_rng(seed)
    runs = [(0, slots)] + later
    n = sum(m for _, m in runs)
    w = rng.integers(-128, 128, (lanes, lanes)).astype(np.int8)
    x = rng.integers(-128, 128, (n, lanes)).astype(np.int8)
    b = Builder(cfg)
    wt = load_weights(b, "w", w, "int8", hemi="W", quantized=(w, np.ones(lanes, np.float32)))
    xt = b.input("x", "int8", (n, lanes), hemi="W")
    yt = b.output("y", "int32", (slots, lanes), hemi="E")
    p = wt.planes[0]
    pos = b.mxm_pos(p)
    wf = b.read(wt.tiles[0], stream=0, vectors=(0, wt.rows[0][0]), arrive=(pos, 0), spread=16, west=True,
                search=True)
    t = b.mxm_install(p, b.mxm_load(p, wf) + 1)
    want = np.zeros((slots, lanes), np.int32)
    first = 0
    for slot0, m in runs:
        xf = b.read(xt, stream=16, vectors=(first, m), arrive=(pos, t), west=True, search=True)
        b.mxm_abc(p, xf, slot0)
        t = xf.at(pos) + m
        for j in range(m):
            want[(slot0 + j) % slots] = x[first + j].astype(np.int32) @ w.astype(np.int32)
        first += m
    af = b.mxm_acc(p, 0, slots, at=t + b.lat["mxm_abc"], stream=20, west=False)
    b.write(af, yt)
    batched, out, fault = run_both(b.build(), {"x": x})
    assert fault is None and batched > 0
    np.testing.assert_array_equal(out["y"], want)
