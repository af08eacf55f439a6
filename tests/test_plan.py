"""A run from a program's start takes its batch decisions from the first such run that
halted (the program's plan, see ``rust/lpu-core/src/engine/plan.rs``) instead of looking
ahead at the queues' schedules again. Whatever the data, it must give exactly what a
chip without the plan gives (and what one-by-one issue gives); where data makes a run
go another way (a fault data causes), it must stop where and how that chip stops.
"""

from __future__ import annotations

import numpy as np
import pytest

import lpu
from lpu.layout import read_tensor, write_tensor

from test_batch import stream_program
from test_engine_sxm import LANES, sxm_prog


def outcome(chip: lpu.Chip, prog: lpu.Program, status: lpu.RunStatus) -> tuple:
    tensors = tuple(read_tensor(chip, t).tobytes() for t in prog.tensors)
    fault = None if chip.fault is None else str(chip.fault)
    return status, chip.cycle, chip.cycles, chip.stats(), tensors, fault


def run_on(chip: lpu.Chip, prog: lpu.Program, inputs: dict, until=None) -> tuple:
    """Reset, write `inputs`, run (to cycle `until`, then on); the outcome."""
    chip.reset()
    for name, v in inputs.items():
        write_tensor(chip, prog.tensor(name), v)
    if until is not None:
        chip.run_until(until)
    return outcome(chip, prog, chip.run())


def without_plan(prog: lpu.Program, inputs: dict, until=None) -> tuple:
    """The outcome on a chip that never ran the program (batched), checked against
    one-by-one issue."""
    out = []
    for fast in (True, False):
        chip = lpu.Chip(prog.config, fast=fast)
        chip.load(prog)
        out.append(run_on(chip, prog, inputs, until))
        assert not chip.replayed
    assert out[0] == out[1]
    return out[0]


def test_a_streaming_run_replays_on_new_data():
    cfg = lpu.ChipConfig("tsp_small")
    n = 300
    prog = stream_program(cfg, n, "int8", "add", 2)
    rng = np.random.default_rng(3)
    data = [{k: rng.integers(-100, 100, (n, cfg.lanes)).astype(np.int8) for k in "xy"} for _ in range(3)]
    chip = lpu.Chip(cfg)
    chip.load(prog)
    run_on(chip, prog, data[0])
    assert not chip.replayed, "the first run records the plan"
    assert chip.batched_issues > 0
    for d in data[1:]:
        got = run_on(chip, prog, d)
        assert chip.replayed
        assert got == without_plan(prog, d)
        z = read_tensor(chip, prog.tensor("z"))
        np.testing.assert_array_equal(z, d["x"] + d["y"])


def test_a_fault_that_data_causes_stops_a_replay_as_it_stops_a_first_run():
    # A batched run of permutes: the map of row 3 names a lane twice on the second run.
    rows = 6
    p = sxm_prog("permute", "i16", rows, "W")
    prog = p.assemble()
    rng = np.random.default_rng(4)
    x = rng.integers(-1000, 1000, (rows, LANES)).astype(np.int16)
    good = np.stack([rng.permutation(LANES) for _ in range(rows)]).astype(np.int16)
    bad = good.copy()
    bad[3, 7] = bad[3, 8]
    chip = lpu.Chip(prog.config)
    chip.load(prog)
    first = run_on(chip, prog, {"x": x, "map": good})
    assert first[0] == lpu.RunStatus.HALTED and chip.batched_issues > 0
    got = run_on(chip, prog, {"x": x, "map": bad})
    assert not chip.replayed, "the run went another way: it is redone without the plan"
    want = without_plan(prog, {"x": x, "map": bad})
    assert got == want
    assert want[0] == lpu.RunStatus.FAULT and "bad_operand" in want[5] and "twice" in want[5]
    # The plan is still the program's: the next run from the start takes it again.
    again = run_on(chip, prog, {"x": x, "map": good})
    assert chip.replayed and again == first


@pytest.mark.parametrize("until", [1, 40, 150])
def test_a_replay_stopped_part_way_goes_on_as_a_first_run_would(until):
    cfg = lpu.ChipConfig("tsp_small")
    n = 200
    prog = stream_program(cfg, n, "float32", "mul", 1)
    rng = np.random.default_rng(5)
    d = {k: rng.standard_normal((n, cfg.lanes)).astype(np.float32) for k in "xy"}
    chip = lpu.Chip(cfg)
    chip.load(prog)
    run_on(chip, prog, d)
    assert run_on(chip, prog, d, until) == without_plan(prog, d, until)


def test_a_plan_belongs_to_the_program_loaded():
    cfg = lpu.ChipConfig("tsp_small")
    progs = [stream_program(cfg, 100, "int8", op, 1) for op in ("add", "sub")]
    x = np.full((100, cfg.lanes), 9, np.int8)
    y = np.full((100, cfg.lanes), 4, np.int8)
    chip = lpu.Chip(cfg)
    for prog, want in zip(progs, (13, 5)):
        chip.load(prog)
        for replayed in (False, True):
            run_on(chip, prog, {"x": x, "y": y})
            assert chip.replayed == replayed
            assert (read_tensor(chip, prog.tensor("z")) == want).all()


def test_breakpoints_and_one_by_one_issue_do_without_the_plan():
    cfg = lpu.ChipConfig("tsp_small")
    prog = stream_program(cfg, 100, "int8", "add", 1)
    x = np.ones((100, cfg.lanes), np.int8)
    chip = lpu.Chip(cfg)
    chip.load(prog)
    run_on(chip, prog, {"x": x, "y": x})
    chip.fast = False
    run_on(chip, prog, {"x": x, "y": x})
    assert not chip.replayed
    chip.fast = True
    chip.add_breakpoint(prog.queue_names[0], 10_000)  # never reached
    run_on(chip, prog, {"x": x, "y": x})
    assert not chip.replayed
    chip.remove_breakpoint(prog.queue_names[0], 10_000)
    run_on(chip, prog, {"x": x, "y": x})
    assert chip.replayed

