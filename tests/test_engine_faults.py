"""One test per fault kind, checking kind, cycle, queue, instruction index and message,
plus the warn and ignore policies (docs/timing.md; the fault kinds of lpu.Chip).

Cycles are issue cycles of the faulting instruction, derived from the timing rules."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lpu

import enginehelp as h

COVERS = {"send", "receive", "deskew", "read", "write", "add", "mul", "sync", "abc", "gather", "permute"}

CFG = h.config("tsp_small")
LANES = CFG.lanes
VX = CFG.vxm_position()
RD = h.lat(CFG, "mem_read")
QUEUE_ORDER = [q[0] for q in CFG.queues()]


def add_prog(t_add_delta: int = 0) -> h.Prog:
    """x (W0) + y (W1) -> E0 as in docs/assembly.md, with the add moved by a delta."""
    p = h.Prog(CFG)
    p.tensor("input", "x", "i8", [1, LANES], "W", [0])
    p.tensor("input", "y", "i8", [1, LANES], "W", [1])
    p.tensor("output", "z", "i8", [1, LANES], "E", [0])
    t = RD + 2 + 10
    p.read("W", 0, 0, "s0e", t, VX)
    p.read("W", 1, 0, "s1e", t, VX)
    p.at("vxm.alu1", t + t_add_delta, "add i8, s0e, s1e, s2e", "vxm_basic", tag="add")
    p.write("E", 0, 0, "s2e", t + h.lat(CFG, "vxm_basic"), VX, tag="w")
    return p


ONES = {"x": np.ones((1, LANES), np.int8), "y": np.full((1, LANES), 2, np.int8)}


# ---------------------------------------------------------------------------------------
# stream_empty


def test_stream_empty():
    p = add_prog(t_add_delta=-1)
    it = p.item("add")
    chip, status = h.run_fault(p, ONES)
    h.check_fault(chip, status, "stream_empty", it.cycle, "vxm.alu1", p.index(it),
                  instruction="add i8, s0e, s1e, s2e",
                  message=f"stream s0e carries no valid data at position {VX}")
    # The chip stays stopped until reset.
    assert chip.run() == lpu.RunStatus.FAULT
    chip.reset()
    assert chip.fault is None


def test_stream_empty_warn_reads_zeros_and_ignore_records_nothing():
    p = add_prog(t_add_delta=-1)
    it = p.item("add")
    # The write still expects the sum on its original cycle: under warn, the add reads
    # zeros one cycle early, and the write reads nothing (its value lands one cycle early).
    chip, status = h.run_fault(p, ONES, {"stream_empty": "warn"})
    assert status == lpu.RunStatus.HALTED and chip.fault is None
    w = chip.warnings
    assert [(f.kind, f.cycle, f.queue, f.index) for f in w] == [
        ("stream_empty", it.cycle, "vxm.alu1", p.index(it)),
        ("stream_empty", it.cycle, "vxm.alu1", p.index(it)),
        ("stream_empty", p.item("w").cycle, "mem.E0.0", p.index(p.item("w"))),
    ]
    assert [f.message.split(" carries")[0] for f in w] == ["stream s0e", "stream s1e", "stream s2e"]
    np.testing.assert_array_equal(chip.read_sram("E", 0, 0)[0], 0)
    chip, status = h.run_fault(p, ONES, {"stream_empty": "ignore"})
    assert status == lpu.RunStatus.HALTED and chip.warnings == [] and chip.fault is None


# ---------------------------------------------------------------------------------------
# stream_conflict


def conflict_prog():
    p = add_prog()
    a = p.item("add")
    # ALU 6 also writes s2e at the VXM on the same cycle (its own copy of x).
    p.at("vxm.alu6", a.cycle, "sub i8, s0e, s1e, s2e", "vxm_basic", tag="sub")
    return p


def test_stream_conflict():
    p = conflict_prog()
    a, b = p.item("add"), p.item("sub")
    assert QUEUE_ORDER.index("vxm.alu1") < QUEUE_ORDER.index("vxm.alu6")  # alu1 issues first
    chip, status = h.run_fault(p, ONES)
    land = a.cycle + h.lat(CFG, "vxm_basic")
    h.check_fault(chip, status, "stream_conflict", b.cycle, "vxm.alu6", p.index(b),
                  instruction="sub i8, s0e, s1e, s2e",
                  message=f"stream s2e at position {VX} on cycle {land} is also written by vxm.alu1")


def test_stream_conflict_warn_last_writer_wins():
    p = conflict_prog()
    chip, status = h.run_fault(p, ONES, {"stream_conflict": "warn"})
    assert status == lpu.RunStatus.HALTED
    assert [f.kind for f in chip.warnings] == ["stream_conflict"]
    np.testing.assert_array_equal(chip.read_sram("E", 0, 0)[0].view(np.int8), -1)  # 1 - 2
    chip, status = h.run_fault(p, ONES, {"stream_conflict": "ignore"})
    assert status == lpu.RunStatus.HALTED and not chip.warnings


# ---------------------------------------------------------------------------------------
# bank_conflict


@pytest.mark.parametrize("what", ["two reads", "two writes", "read and write"])
def test_bank_conflict(what):
    p = add_prog()
    r = [i for i in p.items if i.queue == "mem.W0.0"][0]
    half = CFG.addresses // 2
    if what == "two reads":
        # Port 1 of W0 reads another address of the other bank on the same cycle.
        x = p.at("mem.W0.1", r.cycle, f"read {half + 1}, s9e", "mem_read")
        msg = "MEM slice W0 serves two reads in one cycle"
    elif what == "two writes":
        w = p.item("w")
        x = p.at("mem.E0.1", w.cycle, f"write {half + 2}, s2e", "mem_write")
        msg = "MEM slice E0 serves two writes in one cycle"
    else:
        # Port 1 writes bank 0 (address 3) while port 0 reads bank 0 (address 0).
        p.read("W", 2, 0, "s7e", r.cycle, h.mem_pos(CFG, "W", 0))
        x = p.at("mem.W0.1", r.cycle, "write 3, s7e", "mem_write")
        msg = "MEM slice W0 serves a read and a write on bank 0 in one cycle"
    chip, status = h.run_fault(p, ONES)
    h.check_fault(chip, status, "bank_conflict", x.cycle, x.queue, p.index(x), instruction=x.text,
                  message=msg)
    # warn: all accesses happen.
    chip, status = h.run_fault(p, ONES, {"bank_conflict": "warn"})
    assert status == lpu.RunStatus.HALTED and [f.kind for f in chip.warnings] == ["bank_conflict"]
    np.testing.assert_array_equal(chip.read_sram("E", 0, 0)[0], 3)
    if what == "two writes":
        np.testing.assert_array_equal(chip.read_sram("E", 0, half + 2)[0], 3)


# ---------------------------------------------------------------------------------------
# alu_conflict


def test_alu_conflict():
    # ALU 1: mul on t (lands t+3) and add on t+1 (lands t+3): two results on one cycle.
    p = h.Prog(CFG)
    p.tensor("input", "x", "i8", [2, LANES], "W", [0])
    p.tensor("input", "y", "i8", [2, LANES], "W", [1])
    t = RD + 2
    p.read("W", 0, 0, "s0e", t, VX, repeat=1)
    p.read("W", 1, 0, "s1e", t, VX, repeat=1)
    p.at("vxm.alu1", t, "mul i8, s0e, s1e, s2e", "vxm_mul")
    add = p.at("vxm.alu1", t + 1, "add i8, s0e, s1e, s3e", "vxm_basic")
    chip, status = h.run_fault(p, {"x": np.ones((2, LANES), np.int8), "y": np.ones((2, LANES), np.int8)})
    h.check_fault(chip, status, "alu_conflict", t + 1, "vxm.alu1", p.index(add),
                  instruction="add i8, s0e, s1e, s3e",
                  message=f"ALU 1 already has a result landing on cycle {t + 3}")
    chip, status = h.run_fault(p, {"x": np.ones((2, LANES), np.int8), "y": np.ones((2, LANES), np.int8)},
                               {"alu_conflict": "warn"})
    assert status == lpu.RunStatus.HALTED and [f.kind for f in chip.warnings] == ["alu_conflict"]


# ---------------------------------------------------------------------------------------
# mxm_hazard


def test_mxm_hazard_abc_without_weights():
    p = h.Prog(CFG)
    p.tensor("input", "x", "i8", [1, LANES], "W", [0])
    P = CFG.mxm_position(1)
    t = RD + abs(h.mem_pos(CFG, "W", 0) - P) + 5
    r = p.read("W", 0, 0, "s16w", t, P)
    abc = p.at("mxm1.abc", t, "abc s16w, 3, 0", "mxm_abc")
    chip, status = h.run_fault(p, {"x": np.ones((1, LANES), np.int8)})
    h.check_fault(chip, status, "mxm_hazard", t, "mxm1.abc", p.index(abc),
                  instruction="abc s16w, 3, 0", message="plane 1 has no installed weights")
    assert r.cycle == 5
    # warn: recorded and the run goes on (nothing is computed without weights).
    chip, status = h.run_fault(p, {"x": np.ones((1, LANES), np.int8)}, {"mxm_hazard": "warn"})
    assert status == lpu.RunStatus.HALTED and [f.kind for f in chip.warnings] == ["mxm_hazard"]


# ---------------------------------------------------------------------------------------
# bad_operand (always stops)


def test_bad_operand_address_past_the_end_after_repeat():
    last = CFG.addresses - 2
    p = h.Prog(CFG)
    r = p.at("mem.W4.1", 6, f"read {last}, s0e", "mem_read", repeat=3)
    chip, status = h.run_fault(p, {})
    h.check_fault(chip, status, "bad_operand", 6 + 2, "mem.W4.1", p.index(r),
                  instruction=f"read {last}, s0e", repeat=2,
                  message=f"address {CFG.addresses} is past the slice's {CFG.addresses} words")


def test_bad_operand_gather_map_past_the_end():
    p = h.Prog(CFG)
    p.tensor("input", "map", "i16", [1, LANES], "W", [2, 3])
    pos0 = h.mem_pos(CFG, "W", 0)
    p.load("W", [2, 3], 0, "e", 12, pos0)
    g = p.at("mem.W0.0", 12, "gather s0e, s4e", "mem_gather")
    amap = np.zeros((1, LANES), np.int16)
    amap[0, 5] = CFG.addresses
    chip, status = h.run_fault(p, {"map": amap})
    h.check_fault(chip, status, "bad_operand", 12, "mem.W0.0", p.index(g),
                  message=f"map lane 5 names address {CFG.addresses}, past the slice's {CFG.addresses} words")


def test_bad_operand_always_stops():
    with pytest.raises(lpu.LpuError):
        lpu.Chip(CFG).set_fault_policy("bad_operand", "ignore")


# ---------------------------------------------------------------------------------------
# deadlock


def test_deadlock():
    text = """
.chip tsp_small
.queue mem.W2.0
    read 0, s0e          ; cycle 0
    sync                 ; cycle 1: parks; no notify anywhere
    read 1, s0e
.queue mem.E1.1
    @5 read 0, s3w       ; the last issue, on 5
"""
    chip, status = h.run_fault(lpu.assemble(text), {})
    # Nothing can issue after cycle 5: the deadlock is known on cycle 6. The fault names
    # the first queue still waiting, at its sync.
    h.check_fault(chip, status, "deadlock", 6, "mem.W2.0", 1, instruction="sync",
                  message="every remaining queue waits in sync and no notify is coming")
    assert chip.queue_state("mem.W2.0") == (2, 3, True)


# ---------------------------------------------------------------------------------------
# unsupported: the C2C instructions (chip-to-chip links are not emulated)


@pytest.mark.parametrize("text,queue", [("send s4e, 2", "c2c.E"), ("receive s5w, 1", "c2c.W"),
                                        ("deskew", "c2c.W")])
def test_unsupported_c2c(text, queue):
    src = f".chip tsp_small\n.queue {queue}\n    config 1\n    @7 {text}\n"
    chip, status = h.run_fault(lpu.assemble(src), {})
    # [config 1 (cycle 0), nop 6, the C2C instruction on 7]
    h.check_fault(chip, status, "unsupported", 7, queue, 2, instruction=text,
                  message="chip-to-chip links are not emulated yet")
    with pytest.raises(lpu.LpuError, match="always stop"):
        chip.set_fault_policy("unsupported", "warn")


# ---------------------------------------------------------------------------------------
# Policies for every recoverable kind: warn records and goes on, ignore records nothing.


def _bank_prog():
    p = add_prog()
    r = [i for i in p.items if i.queue == "mem.W0.0"][0]
    p.at("mem.W0.1", r.cycle, "read 1, s9e", "mem_read")
    return p


def _alu_prog():
    p = add_prog()
    a = p.item("add")
    p.at("vxm.alu1", a.cycle - 1, "mul i8, s5e, s5e, -", "vxm_mul")  # lands with the add
    p.read("W", 2, 0, "s5e", a.cycle - 1, VX)
    return p


def _mxm_prog():
    p = add_prog()
    t = RD + abs(h.mem_pos(CFG, "W", 3) - CFG.mxm_position(0)) + 30
    p.read("W", 3, 0, "s16w", t, CFG.mxm_position(0))
    p.at("mxm0.abc", t, "abc s16w, 0, 0", "mxm_abc")
    return p


RECOVERABLE = {
    "stream_empty": lambda: add_prog(t_add_delta=1),
    "stream_conflict": conflict_prog,
    "bank_conflict": _bank_prog,
    "alu_conflict": _alu_prog,
    "mxm_hazard": _mxm_prog,
}


@pytest.mark.parametrize("kind", sorted(RECOVERABLE))
def test_policies_for_every_recoverable_kind(kind):
    p = RECOVERABLE[kind]()
    chip, status = h.run_fault(p, ONES)
    assert status == lpu.RunStatus.FAULT and chip.fault.kind == kind
    first = chip.fault
    chip, status = h.run_fault(p, ONES, {kind: "warn"})
    assert status == lpu.RunStatus.HALTED and chip.fault is None and chip.halted
    assert chip.warnings and {f.kind for f in chip.warnings} == {kind}
    w = chip.warnings[0]
    assert (w.kind, w.cycle, w.queue, w.index, w.instruction, w.message) == (
        first.kind, first.cycle, first.queue, first.index, first.instruction, first.message)
    assert chip.cycles == p.expected_cycles()
    chip, status = h.run_fault(p, ONES, {kind: "ignore"})
    assert status == lpu.RunStatus.HALTED and chip.warnings == [] and chip.fault is None
    assert chip.cycles == p.expected_cycles()


# ---------------------------------------------------------------------------------------
# No program reaches a Rust panic: random valid programs either run or stop with a fault.


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_random_programs_run_or_fault_but_never_panic(seed):
    import random

    from lpu import _core, isa

    cfg = h.config("tsp_tiny")
    rng = random.Random(seed)
    queues = [q for q, _, _ in cfg.queues()]
    dts = ["i8", "i16", "i32", "f16", "f32", "bf16"]

    def operand(ins, f):
        if f.kind == "stream":
            return rng.randrange(64)
        if f.kind == "src":
            return rng.choice([rng.randrange(64), _core.ALU_SRC_BASE + rng.randrange(16)])
        if f.kind == "dst":
            return rng.choice([rng.randrange(64), _core.DST_NONE])
        if f.kind == "dtype":
            return dts.index(rng.choice(ins.dtypes or dts))
        if f.kind == "addr":
            return rng.randrange(cfg.addresses)
        if f.kind == "slot":
            return rng.randrange(cfg.mxm_acc_slots)
        return rng.randrange(min(1 << f.bits, 24))

    code = {}
    for _ in range(rng.randrange(1, 10)):
        q = rng.choice(queues)
        words = code.get(q, [])
        for _ in range(rng.randrange(1, 8)):
            ins = rng.choice(isa.instructions())
            try:
                w = isa.encode(ins.mnemonic, [operand(ins, f) for f in ins.fields])
            except lpu.LpuError:
                continue
            if not _core.check_code(cfg, q, words + [w]):
                words.append(w)
        if words:
            code[q] = words
    prog = lpu.Program(cfg, code)
    chip = lpu.Chip(cfg)
    chip.load(prog)
    for kind in ("stream_empty", "stream_conflict", "bank_conflict", "alu_conflict", "mxm_hazard"):
        chip.set_fault_policy(kind, rng.choice(["error", "warn", "ignore"]))
    for hemi in "WE":
        for s in range(cfg.mem_slices):
            data = np.frombuffer(rng.randbytes(cfg.lanes * cfg.addresses), np.uint8)
            chip.write_sram(hemi, s, 0, data)
    status = chip.run(max_cycles=100_000)
    assert status in (lpu.RunStatus.HALTED, lpu.RunStatus.FAULT, lpu.RunStatus.CYCLE_LIMIT)
    assert (status == lpu.RunStatus.FAULT) == (chip.fault is not None)
    chip.stats()
