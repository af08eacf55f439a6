"""ICU instructions (nop, repeat, sync, notify, config, ifetch) and the Chip's control
API (run, step, run_until, breakpoints, watchpoints, snapshot/restore, stats, fault
policies), with every expected cycle derived by hand from docs/timing.md. Also the
meta-test that every instruction of the ISA is covered by an engine test."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lpu
from lpu import isa
from lpu.layout import read_tensor, write_tensor

import enginehelp as h

COVERS = {"nop", "repeat", "sync", "notify", "config", "ifetch", "read", "write", "add", "copy"}

CFG = h.config("tsp_small")
LANES = CFG.lanes
VX = CFG.vxm_position()
RD = h.lat(CFG, "mem_read")
WR = h.lat(CFG, "mem_write")
SL = CFG.superlanes


def copy_program(pre: str, rows: int = 1) -> tuple:
    """x in W0 is read by mem.W0.0 after the ICU instructions `pre` and written to E0 by
    a write issued mem_read + 2 cycles after the read (W0 and E0 are 2 positions apart).
    Returns the source and a function of the read's issue cycle giving the cycle count."""
    text = f"""
.chip tsp_small
.input x i8 [{rows},{LANES}] hemi=W addr=0 slices=0
.output y i8 [{rows},{LANES}] hemi=E addr=0 slices=0
.queue mem.W0.0
{pre}
    read 0, s0e
    {"repeat %d, 1" % (rows - 1) if rows > 1 else ""}
"""
    return text


def run_copy(pre: str, t_read: int, extra: str = "", rows: int = 1):
    """Run copy_program with the write placed for a read issued on t_read."""
    t_write = t_read + RD + (h.mem_pos(CFG, "E", 0) - h.mem_pos(CFG, "W", 0))
    text = copy_program(pre, rows) + f"""
.queue mem.E0.0
    @{t_write} write 0, s0e
    {"repeat %d, 1" % (rows - 1) if rows > 1 else ""}
""" + extra
    prog = lpu.assemble(text)
    x = np.arange(rows * LANES).reshape(rows, LANES).astype(np.int8)
    out, info = h.run(prog, {"x": x})
    np.testing.assert_array_equal(out["y"], x)
    return info, t_write + rows - 1 + WR


# ---------------------------------------------------------------------------------------
# ICU instructions.


def test_nop_delays_the_next_issue():
    # nop 4 then nop 3: the read issues on cycle 7.
    info, last = run_copy("    nop 4\n    nop 3", 7)
    assert info.cycles == h.cycles_for(CFG, last)


def test_repeat_with_gap_and_zero_count():
    # copy; repeat 2, 3: issues on t0, t0+3, t0+6 and the next instruction on t0+7.
    text = f"""
.chip tsp_small
.input x i8 [3,{LANES}] hemi=W addr=0 slices=0
.output y i8 [4,{LANES}] hemi=E addr=0 slices=0
.queue mem.W0.0
    read 0, s0e          ; t=0: lands at W0 on 3, at the VXM on 4
    repeat 2, 3          ; addresses 1, 2 on cycles 3, 6 (at the VXM on 7, 10)
.queue vxm.alu4
    @4 copy i8, s0e, s1e
    repeat 2, 3          ; 4, 7, 10
    copy i8, s0e, s1e    ; t0+7 = 11: nothing is on s0e at the VXM then
"""
    prog = lpu.assemble(text)
    chip, status = h.run_fault(prog, {"x": np.zeros((3, LANES), np.int8)})
    # vxm.alu4 = [nop 4, copy, repeat, copy]
    h.check_fault(chip, status, "stream_empty", 11, "vxm.alu4", 3, instruction="copy i8, s0e, s1e")
    # Without the last copy, the results land on 6, 9, 12 and are written on 7, 10, 13.
    text = text.replace("    copy i8, s0e, s1e    ; t0+7", "    ; t0+7") + """
.queue mem.E0.0
    @7 write 0, s1e
    repeat 2, 3
"""
    x = np.array([[1] * LANES, [2] * LANES, [3] * LANES], np.int8)
    out, info = h.run(lpu.assemble(text), {"x": x})
    np.testing.assert_array_equal(out["y"][:3], x)
    np.testing.assert_array_equal(out["y"][3], 0)
    assert info.cycles == h.cycles_for(CFG, 13 + WR)
    # repeat 0, d re-issues nothing: the next instruction issues on t0 + 1 (= 5, where
    # s0e is empty at the VXM).
    text0 = text.replace("    repeat 2, 3          ; 4, 7, 10", "    repeat 0, 5\n    copy i8, s0e, s1e")
    chip, status = h.run_fault(lpu.assemble(text0), {"x": np.zeros((3, LANES), np.int8)})
    h.check_fault(chip, status, "stream_empty", 5, "vxm.alu4", 3)


def test_sync_waits_for_notify():
    """notify on cycle 5 is delivered on 5 + icu_notify; a queue parked in sync issues its
    next instruction then; a sync reached exactly on the delivery cycle passes."""
    n = h.lat(CFG, "icu_notify")
    t_notify = 5
    t_deliver = t_notify + n
    extra = f"""
.queue vxm.alu0
    @{t_notify} notify
.queue mem.E3.0
    sync                  ; parked from cycle 0
    read 0, s7e           ; issues on the delivery cycle
.queue mem.E4.0
    @{t_deliver} sync     ; reached on the delivery cycle: passes
    read 0, s8e
"""
    info, last = run_copy("    sync", t_deliver, extra)
    assert info.cycles == h.cycles_for(CFG, max(last, t_notify + n, t_deliver + RD))
    assert info.stats["units"]["ICU"]["issued"] == 1


def test_sync_after_delivery_deadlocks():
    n = h.lat(CFG, "icu_notify")
    text = f"""
.chip tsp_small
.queue vxm.alu0
    @2 notify
.queue mem.W5.0
    @{2 + n + 1} sync     ; one cycle after the delivery: nothing will release it
    read 0, s0e
"""
    chip, status = h.run_fault(lpu.assemble(text), {})
    # mem.W5.0 = [nop, sync, read]; the deadlock is known on the first cycle with nothing
    # left to issue or deliver: the cycle after the sync was reached.
    h.check_fault(chip, status, "deadlock", 2 + n + 2, "mem.W5.0", 1, instruction="sync",
                  message="every remaining queue waits in sync and no notify is coming")


def test_two_notifies_release_two_syncs():
    n = h.lat(CFG, "icu_notify")
    extra = """
.queue vxm.alu1
    @1 notify
    @30 notify
"""
    # The read waits for the second notify: sync (released on 1+n), nop 1, sync (parked on
    # 2+n, released on 30+n).
    info, last = run_copy("    sync\n    nop 1\n    sync", 30 + n, extra)
    assert info.cycles == h.cycles_for(CFG, max(last, 30 + n))
    # Two syncs in a row both pass on the delivery cycle (the second is reached on it).
    info, last = run_copy("    sync\n    sync", 1 + n, extra)
    assert info.cycles == h.cycles_for(CFG, max(last, 30 + n))


def test_config_is_timed_and_counted():
    c = h.lat(CFG, "icu_config")
    info, last = run_copy("    config 1\n    config 2", 2)
    assert info.cycles == h.cycles_for(CFG, max(last, 1 + c))
    assert info.stats["units"]["ICU"]["issued"] == 2
    # A program of one config: it lands icu_config cycles after cycle 0.
    prog = lpu.assemble(".chip tsp_small\n.queue mem.W0.0\n    config 2\n")
    _, info = h.run(prog, {})
    assert info.cycles == h.cycles_for(CFG, c)
    with pytest.raises(lpu.AssemblyError, match=r"<string>:3:5: superlanes: must be 1..=2"):
        lpu.assemble(".chip tsp_small\n.queue mem.W0.0\n    config 3\n")


def test_ifetch_stalls_the_queue():
    f = h.lat(CFG, "icu_ifetch")
    # ifetch on cycle 1 stalls mem.W0.0 until 1 + icu_ifetch, when the read issues.
    info, last = run_copy("    nop 1\n    ifetch 16", 1 + f)
    assert info.cycles == h.cycles_for(CFG, last)
    # The assembler's @ knows the stall: @ on the stall's end places with no nop.
    prog = lpu.assemble(f".chip tsp_small\n.queue mem.W0.0\n    ifetch 3\n    @{f} config 1\n")
    assert prog.instructions("mem.W0.0") == ["ifetch 3", "config 1"]
    with pytest.raises(lpu.AssemblyError, match="already past"):
        lpu.assemble(f".chip tsp_small\n.queue mem.W0.0\n    ifetch 3\n    @{f - 1} config 1\n")
    # Timing with a custom latency.
    cfg = h.config("tsp_small", icu_ifetch=20)
    prog = lpu.assemble(".chip tsp_small\n.name tsp_small_custom\n.set icu_ifetch 20\n"
                        ".queue mem.W0.0\n    ifetch 1\n    config 1\n")
    assert prog.config == cfg
    _, info = h.run(prog, {})
    assert info.cycles == h.cycles_for(cfg, 20 + h.lat(cfg, "icu_config"))


# ---------------------------------------------------------------------------------------
# Streams: values move one position per cycle; a later writer on the same diagonal
# replaces the value downstream (rule 3).


def stream_prog():
    # W3 reads x onto s2e (at W3 on cycle 3); W1 reads y onto s2e on the same diagonal
    # (at W1 on cycle 5): downstream of W1 the stream carries y. The VXM copies s2e on
    # 5 + (VX - W1) and E0 writes it.
    p3, p1 = h.mem_pos(CFG, "W", 3), h.mem_pos(CFG, "W", 1)
    t_vxm = RD + 2 + (VX - p1)
    text = f"""
.chip tsp_small
.input x i8 [1,{LANES}] hemi=W addr=0 slices=3
.input y i8 [1,{LANES}] hemi=W addr=0 slices=1
.output z i8 [1,{LANES}] hemi=E addr=0 slices=0
.queue mem.W3.0
    read 0, s2e
.queue mem.W1.0
    @2 read 0, s2e
.queue vxm.alu9
    @{t_vxm} copy i8, s2e, s3e
.queue mem.E0.0
    @{t_vxm + 2 + 1} write 0, s3e
"""
    assert p1 - p3 == 2
    return lpu.assemble(text), t_vxm


def test_values_move_one_position_per_cycle_and_are_replaced_downstream():
    prog, t_vxm = stream_prog()
    chip = lpu.Chip(CFG)
    chip.load(prog)
    x = np.full(LANES, 7, np.uint8)
    y = np.full(LANES, 9, np.uint8)
    chip.write_sram("W", 3, 0, x)
    chip.write_sram("W", 1, 0, y)
    p3 = h.mem_pos(CFG, "W", 3)
    # x lands at W3 on cycle 3 and is at W3 + h on 3 + h.
    assert chip.run_until(3) == lpu.RunStatus.CYCLE_LIMIT and chip.cycle == 3
    np.testing.assert_array_equal(chip.stream("s2e", p3), x)
    assert chip.stream("s2e", p3 + 1) is None and chip.stream("s2e", p3 - 1) is None
    chip.step(1)
    np.testing.assert_array_equal(chip.stream("s2e", p3 + 1), x)
    chip.step(1)  # cycle 5: y is written at W1 = p3 + 2 on x's diagonal
    np.testing.assert_array_equal(chip.stream("s2e", p3 + 2), y)
    assert chip.stream("s2w", p3 + 2) is None
    chip.step(3)
    np.testing.assert_array_equal(chip.stream("s2e", p3 + 5), y)
    assert chip.run() == lpu.RunStatus.HALTED
    np.testing.assert_array_equal(chip.read_sram("E", 0, 0)[0], y)
    with pytest.raises(lpu.LpuError, match="off the chip"):
        chip.stream("s2e", CFG.positions)


# ---------------------------------------------------------------------------------------
# run / step / run_until / breakpoints / watchpoints / snapshots.


def long_program(rows: int = 8):
    p = h.Prog(CFG)
    p.tensor("input", "a", "i16", [rows, LANES], "W", [0, 1])
    p.tensor("input", "b", "i16", [rows, LANES], "W", [2, 3])
    p.tensor("output", "z", "i16", [rows, LANES], "E", [2, 3])
    t = RD + 4
    p.load("W", [0, 1], 0, "e", t, VX, rows)
    p.load("W", [2, 3], 2, "e", t, VX, rows)
    p.at("vxm.alu2", t, "mul i16, s0e, s2e, s4e", "vxm_mul", repeat=rows - 1, tag="mul")
    p.store("E", [2, 3], 4, "e", t + h.lat(CFG, "vxm_mul"), VX, rows)
    return p


def inputs(rows=8, seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.integers(-2**15, 2**15, (rows, LANES)).astype(np.int16) for k in "ab"}


def load_chip(p, ins):
    from lpu.layout import write_tensor

    prog = p.assemble()
    chip = lpu.Chip(CFG)
    chip.load(prog)
    for t in prog.tensors:
        if t.name in ins:
            write_tensor(chip, t, ins[t.name])
    return chip, prog


def result(chip, prog):
    from lpu.layout import read_tensor

    return read_tensor(chip, prog.tensor("z"))


def test_step_run_until_and_run_agree():
    p = long_program()
    ins = inputs()
    want = h.wrap(ins["a"].astype(np.int64) * ins["b"], "i16").astype(np.int16)
    a, prog = load_chip(p, ins)
    assert a.run() == lpu.RunStatus.HALTED and a.halted
    np.testing.assert_array_equal(result(a, prog), want)
    assert a.cycles == p.expected_cycles()
    b, _ = load_chip(p, ins)
    steps = 0
    while b.step() == lpu.RunStatus.CYCLE_LIMIT:
        steps += 1
        assert b.cycle == steps
    assert b.halted and b.cycles == a.cycles
    np.testing.assert_array_equal(result(b, prog), want)
    assert b.stats() == a.stats()
    c, _ = load_chip(p, ins)
    assert c.run(max_cycles=10) == lpu.RunStatus.CYCLE_LIMIT and c.cycle == 10
    assert c.run_until(12) == lpu.RunStatus.CYCLE_LIMIT and c.cycle == 12
    assert c.step(3) == lpu.RunStatus.CYCLE_LIMIT and c.cycle == 15
    assert c.run() == lpu.RunStatus.HALTED
    np.testing.assert_array_equal(result(c, prog), want)
    assert c.cycles == a.cycles and c.stats() == a.stats()
    # After halting, run does nothing more.
    assert c.run() == lpu.RunStatus.HALTED and c.cycles == a.cycles


def test_breakpoint_stops_before_the_instruction_issues():
    p = long_program()
    mul = p.item("mul")
    a, prog = load_chip(p, inputs())
    a.add_breakpoint(mul.queue, p.index(mul))
    assert a.run() == lpu.RunStatus.BREAKPOINT
    assert a.cycle == mul.cycle
    assert a.queue_state(mul.queue) == (p.index(mul), p.index(mul) + 2, False)
    assert a.stats()["units"]["VXM"]["issued"] == 0
    snap = a.snapshot()
    assert snap.cycle == mul.cycle
    # Resuming issues the instruction (the breakpoint does not fire again at once).
    assert a.run() == lpu.RunStatus.HALTED
    done = result(a, prog).copy()
    cycles, stats = a.cycles, a.stats()
    a.restore(snap)
    assert a.cycle == mul.cycle and not a.halted
    assert a.remove_breakpoint(mul.queue, p.index(mul)) is True
    assert a.remove_breakpoint(mul.queue, p.index(mul)) is False
    assert a.run() == lpu.RunStatus.HALTED
    np.testing.assert_array_equal(result(a, prog), done)
    assert a.cycles == cycles and a.stats() == stats
    # Snapshots only go back onto a chip of the same config.
    other = lpu.Chip(h.config("tsp_tiny"))
    with pytest.raises(lpu.ConfigError):
        other.restore(snap)


@pytest.mark.parametrize("fast", [True, False])
def test_a_stop_leaves_nops_still_to_come_in_their_queue(fast):
    # The read issues on cycle 0, `nop 5` is fetched on 1 (the queue waits to 6),
    # `nop 7` on 6, the second read on 13. The engine takes a queue's nops as soon as
    # it issues, but a stop on cycle 3 must show it before `nop 7`, and a breakpoint
    # set there then must stop on cycle 6.
    text = f"""
.chip tsp_small
.input x i8 [1,{LANES}] hemi=W addr=0 slices=0
.queue mem.W0.0
    read 0, s0e
    nop 5
    nop 7
    read 0, s1e
"""
    chip = lpu.Chip(CFG, fast=fast)
    chip.load(lpu.assemble(text))
    assert chip.run_until(3) == lpu.RunStatus.CYCLE_LIMIT
    assert chip.queue_state("mem.W0.0") == (2, 4, False)
    chip.add_breakpoint("mem.W0.0", 2)
    assert chip.run() == lpu.RunStatus.BREAKPOINT and chip.cycle == 6
    assert chip.queue_state("mem.W0.0") == (2, 4, False)
    assert chip.run() == lpu.RunStatus.HALTED
    assert chip.stats()["units"]["MEM"]["issued"] == 2


def test_breakpoints_survive_reset_and_hit_every_run():
    p = long_program()
    a, prog = load_chip(p, inputs())
    mul = p.item("mul")
    a.add_breakpoint(mul.queue, p.index(mul))
    for _ in range(2):
        assert a.run() == lpu.RunStatus.BREAKPOINT and a.cycle == mul.cycle
        assert a.run() == lpu.RunStatus.HALTED
        a.reset()
    with pytest.raises(lpu.LpuError):
        a.add_breakpoint("vxm.alu99", 0)


def test_watchpoint_stops_when_the_word_is_written():
    p = long_program()
    a, prog = load_chip(p, inputs())
    # z row 3, plane 1 is word 3 of E3; its write issues on (first write) + 3.
    w = [i for i in p.items if i.queue == "mem.E3.0"][0]
    t_land = w.cycle + 3 + WR
    a.add_watchpoint("E", 3, 3)
    assert a.run() == lpu.RunStatus.WATCHPOINT
    assert a.watch_hit == ("E", 3, 3)
    assert a.cycle == t_land
    before = a.read_sram("E", 3, 3)[0].copy()
    assert not (a.read_sram("E", 3, 4) != 0).any(), "later words are not written yet"
    assert a.run() == lpu.RunStatus.HALTED
    np.testing.assert_array_equal(a.read_sram("E", 3, 3)[0], before)
    assert a.watch_hit is None
    assert a.remove_watchpoint("E", 3, 3) and not a.remove_watchpoint("E", 3, 3)


def test_watchpoint_on_a_write_with_nothing_else_that_cycle():
    """The stop does not depend on whether other instructions issue on the landing cycle."""
    text = f"""
.chip tsp_small
.input x i8 [1,{LANES}] hemi=W addr=0 slices=0
.queue mem.W0.0
    read 0, s0e
.queue mem.W0.1
    @{RD} write 5, s0e         ; lands on {RD + WR}
.queue vxm.alu0
    @40 copy i8, s1e, -        ; much later (an empty operand: policy ignore)
"""
    prog = lpu.assemble(text)
    chip = lpu.Chip(CFG)
    chip.load(prog)
    chip.set_fault_policy("stream_empty", "ignore")
    chip.write_sram("W", 0, 0, np.full(LANES, 3, np.uint8))
    chip.add_watchpoint("W", 0, 5)
    assert chip.run() == lpu.RunStatus.WATCHPOINT
    assert chip.cycle == RD + WR
    # run_until past the landing cycle also stops there.
    chip.reset()
    chip.write_sram("W", 0, 0, np.full(LANES, 3, np.uint8))
    assert chip.run_until(30) == lpu.RunStatus.WATCHPOINT and chip.cycle == RD + WR
    assert chip.run() == lpu.RunStatus.HALTED


def test_reset_restores_sram_and_counters():
    p = long_program()
    a, prog = load_chip(p, inputs())
    a.run()
    assert a.cycles > 0
    a.reset()
    assert a.cycle == 0 and a.cycles == 0 and not a.halted and a.fault is None
    assert not a.read_sram("E", 2, 0, 8).any(), "SRAM holds only the program's initialisers"
    assert a.stats()["units"]["VXM"]["issued"] == 0


def test_stats_count_issues_and_traffic():
    rows = 8
    p = long_program(rows)
    out, info = h.run(p, inputs(rows))
    s = info.stats
    assert s["cycles"] == p.expected_cycles()
    assert s["units"]["MEM"]["issued"] == 6 * rows
    assert s["units"]["VXM"]["issued"] == rows
    assert s["units"]["VXM"]["busy_cycles"] == rows
    assert s["units"]["VXM"]["utilization"] == pytest.approx(rows / s["cycles"])
    assert s["units"]["MXM"]["issued"] == 0
    assert s["sram_reads"] == 4 * rows and s["sram_writes"] == 2 * rows
    assert s["stream_writes"] == 4 * rows + 2 * rows  # reads put 1 stream, mul 2
    assert s["stream_reads"] == 4 * rows + 2 * rows  # mul reads 4, writes read 1 each
    assert s["queues"]["vxm.alu2"] == rows and s["queues"]["mem.W0.0"] == rows
    assert s["time_s"] == pytest.approx(s["cycles"] / CFG.clock_hz)
    chip, _ = load_chip(p, inputs(rows))
    chip.run()
    totals = chip.stats(queues=False)
    assert "queues" not in totals and {**totals, "queues": s["queues"]} == s
    assert info.time_s == pytest.approx(s["cycles"] / CFG.clock_hz)
    # MEM: the 4 reads issue on 8 different cycles in total (slices at different positions).
    mem_cycles = {i.cycle + k for i in p.items if i.queue.startswith("mem.") for k in range(rows)}
    assert s["units"]["MEM"]["busy_cycles"] == len(mem_cycles)
    chip, prog = load_chip(p, inputs(rows))
    chip.run()
    chip.clear_stats()
    assert chip.stats()["units"]["MEM"]["issued"] == 0


def test_fault_policies_api():
    chip = lpu.Chip(CFG)
    kinds = [k for k, _ in chip.fault_policies()]
    assert kinds == ["stream_empty", "stream_conflict", "bank_conflict", "alu_conflict",
                     "mxm_hazard", "bad_operand", "deadlock", "unsupported"]
    assert all(p == "error" for _, p in chip.fault_policies())
    chip.set_fault_policy("bank_conflict", "warn")
    chip.set_fault_policy("mxm_hazard", "ignore")
    assert dict(chip.fault_policies())["bank_conflict"] == "warn"
    assert dict(chip.fault_policies())["mxm_hazard"] == "ignore"
    for k in ("bad_operand", "deadlock", "unsupported"):
        with pytest.raises(lpu.LpuError, match="always stop"):
            chip.set_fault_policy(k, "warn")
    with pytest.raises(lpu.LpuError, match="unknown fault kind"):
        chip.set_fault_policy("nonsense", "warn")
    with pytest.raises(lpu.LpuError, match="policy must be"):
        chip.set_fault_policy("stream_empty", "maybe")


def test_load_checks_the_config():
    prog = lpu.assemble(".chip tsp_tiny\n.queue mem.W0.0\n    config 1\n")
    with pytest.raises(lpu.ConfigError, match="tsp_tiny"):
        lpu.Chip(CFG).load(prog)


@pytest.mark.parametrize("name", ["tsp_tiny", "tsp_small", "tsp_v1"])
def test_superlane_skew_in_the_cycle_count(name):
    # One read on cycle 2: it lands on 2 + mem_read; the count adds superlanes - 1.
    cfg = h.config(name)
    prog = lpu.assemble(f".chip {name}\n.queue mem.W0.0\n    @2 read 0, s0e\n")
    _, info = h.run(prog, {})
    assert info.cycles == 2 + h.lat(cfg, "mem_read") + 1 + cfg.superlanes - 1


# ---------------------------------------------------------------------------------------
# The meta-test: every instruction of the ISA is covered by an engine test module.

ENGINE_TEST_MODULES = ["test_engine_mem", "test_engine_vxm", "test_engine_mxm", "test_engine_sxm",
                       "test_engine_control", "test_engine_faults", "test_determinism"]


def test_every_instruction_has_an_engine_test():
    mods = [importlib.import_module(m) for m in ENGINE_TEST_MODULES]
    covered = h.covered_union(mods)
    every = {i.mnemonic for i in isa.instructions()}
    missing = sorted(every - covered)
    assert not missing, f"instructions without an engine test: {missing}"
    assert not covered - every, f"covered names that are not instructions: {sorted(covered - every)}"


def test_a_final_nop_does_not_delay_halting():
    # As docs/timing.md says: halting needs every instruction issued and every result
    # landed; a NOP's wait only delays what comes after it.
    for src, cycle in [("nop 100000\n", 1), ("nop 100000\nnop 1\n", 100_001)]:
        prog = lpu.assemble(".chip tsp_tiny\n.queue vxm.alu0\n" + src)
        chip = lpu.Chip(prog.config)
        chip.load(prog)
        assert chip.run() == lpu.RunStatus.HALTED
        assert chip.cycle == cycle and chip.cycles == 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(1, 5), max_size=3), min_size=1, max_size=6), st.lists(st.integers(1, 9), max_size=3))
def test_nops_between_issues_and_at_the_end(gaps, tail):
    """Rows read one by one with runs of nops between them (and nops after the last),
    each written where it lands: the reads issue on the cycles the nops add up to, the
    rows arrive, and the run, stopped on every cycle or not, with a breakpoint set
    (the engine then takes each nop on its own cycle) or not, ends the same way."""
    rows = len(gaps)
    lines, t, reads = [], 0, []
    for i, nops in enumerate(gaps):
        lines += [f"    nop {n}" for n in nops] + [f"    read {i}, s0e"]
        t += sum(nops)
        reads.append(t)
        t += 1
    lines += [f"    nop {n}" for n in tail]
    dist = h.mem_pos(CFG, "E", 0) - h.mem_pos(CFG, "W", 0)
    writes = "\n".join(f"    @{r + RD + dist} write {i}, s0e" for i, r in enumerate(reads))
    prog = lpu.assemble(f"""
.chip tsp_small
.input x i8 [{rows},{LANES}] hemi=W addr=0 slices=0
.output y i8 [{rows},{LANES}] hemi=E addr=0 slices=0
.queue mem.W0.0
""" + "\n".join(lines) + "\n.queue mem.E0.0\n" + writes + "\n")
    x = np.random.default_rng(rows).integers(-128, 128, (rows, LANES)).astype(np.int8)
    ends = []
    for breakpoint, stepped in [(False, False), (True, False), (False, True)]:
        chip = lpu.Chip(CFG)
        chip.load(prog)
        write_tensor(chip, prog.tensor("x"), x)
        if breakpoint:
            chip.add_breakpoint("vxm.alu0", 0)  # a queue with no code: never hit
        if stepped:
            while chip.step() == lpu.RunStatus.CYCLE_LIMIT:
                pass
        else:
            assert chip.run() == lpu.RunStatus.HALTED
        assert chip.halted
        np.testing.assert_array_equal(read_tensor(chip, prog.tensor("y")), x)
        assert chip.cycles == h.cycles_for(CFG, reads[-1] + RD + dist + WR)
        ends.append((chip.cycle, chip.stats()))
    assert ends[1] == ends[0] and ends[2] == ends[0]


def test_an_entry_point_sets_where_queues_start_also_after_a_reset():
    from lpu.layout import read_tensor, write_tensor

    prog = lpu.assemble("""
.chip tsp_small
.input x i8 [2,32] hemi=W addr=0 slices=0
.output z i8 [1,32] hemi=E addr=0 slices=0
.queue mem.W0.0
    read 0, s0e
    read 1, s0e
.queue mem.E0.0
    nop 5                      ; a read on cycle 0 reaches E0 (2 positions east) on 5
    write 0, s0e
.entry second mem.W0.0=1
""")
    x = np.arange(64).reshape(2, 32).astype(np.int8)
    for entry, want in ((None, x[0]), ("second", x[1])):
        chip = lpu.Chip(prog.config)
        chip.load(prog, entry=entry)
        for _ in range(2):  # a reset goes back to the entry point
            write_tensor(chip, prog.tensor("x"), x)
            assert chip.run() == lpu.RunStatus.HALTED
            np.testing.assert_array_equal(read_tensor(chip, prog.tensor("z"))[0], want)
            chip.reset()
