"""MEM: read, write, gather and scatter through whole programs, against numpy, with
cycle counts from the timing rule (docs/timing.md rules 2-4)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st


import enginehelp as h

COVERS = {"read", "write", "gather", "scatter", "repeat", "nop"}

CFG = h.config("tsp_small")
LANES = CFG.lanes
VX = CFG.vxm_position()


# ---------------------------------------------------------------------------------------
# Plain copies: SRAM -> stream -> SRAM, both directions, every layout.


@pytest.mark.parametrize("dt,split", [("i8", 1), ("i16", 1), ("f16", 2), ("f32", 1), ("i32", 2)])
@pytest.mark.parametrize("direction", ["east", "west"])
def test_copy_between_hemispheres(dt, split, direction):
    """x (W or E hemisphere) is read plane by plane and written to the other side with no
    unit in between: the write of a plane issues mem_read + |p - q| after its read."""
    nb = h.DT_BYTES[dt]
    src, dst, sd = ("W", "E", "e") if direction == "east" else ("E", "W", "w")
    rows = 6
    vectors = rows  # rows of LANES elements
    p = h.Prog(CFG)
    sl = list(range(nb * split))
    p.tensor("input", "x", h.TENSOR_DT[dt], [rows, LANES], src, sl, addr=3, split=split)
    p.tensor("output", "y", h.TENSOR_DT[dt], [rows, LANES], dst, sl[::-1], addr=5, split=split)
    t0 = 10
    # Vector v, plane b lives in slice sl[b*split + v % split] at addr + v // split.
    for b in range(nb):
        for k in range(split):
            n = len(range(k, vectors, split))
            s_in, s_out = sl[b * split + k], sl[::-1][b * split + k]
            stream = f"s{b * split + k}{sd}"
            r = p.read(src, s_in, 3, stream, t0 + k, h.mem_pos(CFG, src, s_in), n - 1, split)
            p.write(dst, s_out, 5, stream, r.cycle + h.lat(CFG, "mem_read"), h.mem_pos(CFG, src, s_in),
                    n - 1, split)
    rng = np.random.default_rng(1)
    x = h.host_of(dt, rng.integers(0, 1 << 8 * nb, (rows, LANES)))
    out, info = h.run(p, {"x": x})
    np.testing.assert_array_equal(h.bits_of(dt, out["y"]), h.bits_of(dt, x))
    assert info.cycles == p.expected_cycles()
    assert info.stats["sram_reads"] == rows * nb == info.stats["sram_writes"]


@pytest.mark.parametrize("delta", [-1, 1])
def test_write_one_cycle_early_or_late_is_stream_empty(delta):
    p = h.Prog(CFG)
    p.tensor("input", "x", "i8", [1, LANES], "W", [2])
    p.tensor("output", "y", "i8", [1, LANES], "E", [3])
    r = p.read("W", 2, 0, "s6e", 9, h.mem_pos(CFG, "W", 2))
    w = p.write("E", 3, 0, "s6e", 9, h.mem_pos(CFG, "W", 2), tag="w")
    out, info = h.run(p, {"x": np.full((1, LANES), 5, np.int8)})
    assert (out["y"] == 5).all() and info.cycles == p.expected_cycles()
    assert r.cycle == 9 - h.lat(CFG, "mem_read")
    q = p.shifted(w, delta)
    chip, status = h.run_fault(q, {"x": np.zeros((1, LANES), np.int8)})
    h.check_fault(chip, status, "stream_empty", w.cycle + delta, "mem.E3.0", q.index(q.twin(w)),
                  instruction="write 0, s6e",
                  message=f"stream s6e carries no valid data at position {h.mem_pos(CFG, 'E', 3)}")


def test_repeat_advances_addresses_with_a_gap():
    # read 2, s0e / repeat 3, 2: addresses 2..5 on cycles t, t+2, t+4, t+6; the write
    # follows the same pattern one hemisphere further.
    p = h.Prog(CFG)
    p.tensor("input", "x", "i8", [8, LANES], "W", [4])
    p.tensor("output", "y", "i8", [8, LANES], "E", [6])
    r = p.read("W", 4, 2, "s3e", 5, h.mem_pos(CFG, "W", 4), repeat=3, gap=2)
    w = p.write("E", 6, 0, "s3e", r.cycle + 3, h.mem_pos(CFG, "W", 4), repeat=3, gap=2)
    assert w.cycle == r.cycle + 3 + (h.mem_pos(CFG, "E", 6) - h.mem_pos(CFG, "W", 4))
    x = np.arange(8 * LANES).reshape(8, LANES).astype(np.int8)
    out, info = h.run(p, {"x": x})
    np.testing.assert_array_equal(out["y"][:4], x[2:6])
    np.testing.assert_array_equal(out["y"][4:], 0)
    assert info.cycles == w.cycle + 3 * 2 + h.lat(CFG, "mem_write") + CFG.superlanes


def test_write_lands_mem_write_cycles_later():
    """A read sees the word as it is on its issue cycle; a write changes it mem_write
    cycles after its issue (here mem_write = 3 on a custom chip)."""
    cfg = h.config("tsp_small", mem_write=3)
    p = h.Prog(cfg)
    p.tensor("input", "x", "i8", [1, LANES], "W", [1], addr=0)
    p.tensor("input", "old", "i8", [1, LANES], "W", [0], addr=7)
    p.tensor("output", "seen", "i8", [4, LANES], "E", [0], addr=0)
    pos0 = h.mem_pos(cfg, "W", 0)
    # x is read from W1 and arrives at W0 on cycle 10, where port 0 writes it to address
    # 7: the word changes on cycle 13.
    p.read("W", 1, 0, "s0e", 10, pos0)
    p.write("W", 0, 7, "s0e", 10, pos0)
    # Port 1 reads address 7 on cycles 11..14 (not on 10: a read and a write of one bank
    # in one cycle is a bank conflict); each value goes to its own word of E0.
    for k in range(4):
        p.at("mem.W0.1", 11 + k, "read 7, s1e", "mem_read")
        p.write("E", 0, k, "s1e", 11 + k + h.lat(cfg, "mem_read"), pos0)
    x = np.full((1, LANES), 9, np.int8)
    old = np.full((1, LANES), -4, np.int8)
    out, info = h.run(p, {"x": x, "old": old})
    assert [int(v) for v in out["seen"][:, 0]] == [-4, -4, 9, 9]
    assert info.cycles == p.expected_cycles()


# ---------------------------------------------------------------------------------------
# Gather and scatter: map = uint16 addresses per lane on a 2-stream group.


def gather_prog(rows: int, table_rows: int, delay: int = 0) -> h.Prog:
    """table in W0; map (int16 addresses) in W2/W3 -> s0e,s1e; gather on W0 -> s2e;
    written to E1."""
    p = h.Prog(CFG)
    p.tensor("input", "table", "i8", [table_rows, LANES], "W", [0])
    p.tensor("input", "map", "i16", [rows, LANES], "W", [2, 3])
    p.tensor("output", "z", "i8", [rows, LANES], "E", [1])
    pos0 = h.mem_pos(CFG, "W", 0)
    t_g = 12
    p.load("W", [2, 3], 0, "e", t_g, pos0, rows)
    p.at("mem.W0.0", t_g + delay, "gather s0e, s2e", "mem_gather", repeat=rows - 1, tag="gather")
    p.write("E", 1, 0, "s2e", t_g + h.lat(CFG, "mem_gather"), pos0, repeat=rows - 1)
    return p


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), rows=st.integers(1, 5), table_rows=st.sampled_from([1, 7, 64, 300]))
def test_gather_matches_numpy(seed, rows, table_rows):
    rng = np.random.default_rng(seed)
    p = gather_prog(rows, table_rows)
    table = rng.integers(-128, 128, (table_rows, LANES), dtype=np.int8)
    amap = rng.integers(0, table_rows, (rows, LANES)).astype(np.int16)
    out, info = h.run(p, {"table": table, "map": amap})
    want = table[amap.astype(np.int64), np.arange(LANES)[None, :]]
    np.testing.assert_array_equal(out["z"], want)
    assert info.cycles == p.expected_cycles()
    assert info.stats["sram_reads"] == 3 * rows


@pytest.mark.parametrize("odd_lane", [0, 7, LANES - 1])
def test_gather_map_of_one_word_but_one_lane(odd_lane):
    """Every lane reads word 3 but one, which reads word 259: the same low byte, so a
    map seen as one word for all lanes by its low bytes alone would read word 3 there."""
    p = gather_prog(1, 300)
    table = np.random.default_rng(odd_lane).integers(-128, 128, (300, LANES), dtype=np.int8)
    amap = np.full((1, LANES), 3, np.int16)
    amap[0, odd_lane] = 259
    out, _ = h.run(p, {"table": table, "map": amap})
    np.testing.assert_array_equal(out["z"], table[amap.astype(np.int64), np.arange(LANES)[None, :]])
    uniform = np.full((1, LANES), 259, np.int16)
    out, _ = h.run(p, {"table": table, "map": uniform})
    np.testing.assert_array_equal(out["z"][0], table[259])


def test_gather_map_one_cycle_off_is_stream_empty():
    for delta in (-1, 1):
        p = gather_prog(1, 4)
        it = p.item("gather")
        q = p.shifted(it, delta)
        chip, status = h.run_fault(q, {"table": np.zeros((4, LANES), np.int8),
                                       "map": np.zeros((1, LANES), np.int16)})
        h.check_fault(chip, status, "stream_empty", it.cycle + delta, "mem.W0.0", q.index(q.twin(it)),
                      instruction="gather s0e, s2e", message="stream s0e carries no valid data")


def scatter_prog(rows: int, table_rows: int) -> h.Prog:
    """table (input and output at the same place) in E3; map in E5/E6 and data in E4,
    all flowing westward; scatter on E3."""
    p = h.Prog(CFG)
    p.tensor("input", "table", "i8", [table_rows, LANES], "E", [3])
    p.tensor("output", "result", "i8", [table_rows, LANES], "E", [3])
    p.tensor("input", "map", "i16", [rows, LANES], "E", [6, 5])
    p.tensor("input", "data", "i8", [rows, LANES], "E", [4])
    pos3 = h.mem_pos(CFG, "E", 3)
    t_s = 12
    p.load("E", [6, 5], 4, "w", t_s, pos3, rows)
    p.load("E", [4], 9, "w", t_s, pos3, rows)
    p.at("mem.E3.1", t_s, "scatter s4w, s9w", "mem_scatter", repeat=rows - 1, tag="scatter")
    return p


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), rows=st.integers(1, 5), table_rows=st.sampled_from([1, 5, 64, 400]))
def test_scatter_matches_numpy(seed, rows, table_rows):
    rng = np.random.default_rng(seed)
    p = scatter_prog(rows, table_rows)
    table = rng.integers(-128, 128, (table_rows, LANES), dtype=np.int8)
    amap = rng.integers(0, table_rows, (rows, LANES)).astype(np.int16)
    data = rng.integers(-128, 128, (rows, LANES), dtype=np.int8)
    out, info = h.run(p, {"table": table, "map": amap, "data": data})
    want = table.copy()
    for r in range(rows):  # later scatters land later and win
        want[amap[r].astype(np.int64), np.arange(LANES)] = data[r]
    np.testing.assert_array_equal(out["result"], want)
    assert info.cycles == p.expected_cycles()
    assert info.stats["sram_writes"] == rows


def test_gather_and_scatter_count_as_one_access_to_lane0s_bank():
    """Rule 4: a gather is one read of the bank of lane 0's address. A write on the same
    slice in the same cycle is fine on the other bank and a bank_conflict on the same."""
    half = CFG.addresses // 2
    for lane0_addr, write_addr, ok in ((0, half + 1, True), (half + 2, 3, True), (0, 3, False),
                                      (half, half + 9, False)):
        p = gather_prog(1, CFG.addresses)
        pos0 = h.mem_pos(CFG, "W", 0)
        g = p.item("gather")
        # Port 1 writes (on the gather's cycle) the vector W1 read onto s5e.
        p.read("W", 1, 0, "s5e", g.cycle, pos0)
        w = p.at("mem.W0.1", g.cycle, f"write {write_addr}, s5e", "mem_write", tag="w")
        p.tensor("input", "other", "i8", [1, LANES], "W", [1])
        table = np.arange(CFG.addresses * LANES).reshape(CFG.addresses, LANES).astype(np.int8)
        amap = np.full((1, LANES), 5, np.int16)
        amap[0, 0] = lane0_addr
        amap[0, 1] = half + 3  # other lanes may use either bank
        ins = {"table": table, "map": amap, "other": np.ones((1, LANES), np.int8)}
        if ok:
            out, info = h.run(p, ins)
            want = table[amap[0].astype(np.int64), np.arange(LANES)]
            np.testing.assert_array_equal(out["z"][0], want)
            assert info.cycles == p.expected_cycles()
        else:
            chip, status = h.run_fault(p, ins)
            h.check_fault(chip, status, "bank_conflict", g.cycle, "mem.W0.1", p.index(w),
                          message="MEM slice W0 serves a read and a write on bank")


def test_mem_ports_read_and_write_in_one_cycle_on_different_banks():
    # Port 0 reads bank 0 while port 1 writes bank 1 of the same slice, every cycle.
    half = CFG.addresses // 2
    p = h.Prog(CFG)
    rows = 5
    p.tensor("input", "x", "i8", [rows, LANES], "W", [2], addr=0)
    p.tensor("output", "y", "i8", [rows, LANES], "W", [2], addr=half)
    p.tensor("output", "z", "i8", [rows, LANES], "W", [0], addr=0)
    pos2 = h.mem_pos(CFG, "W", 2)
    r = p.read("W", 2, 0, "s0e", 8, pos2, repeat=rows - 1)  # lands at W2 on cycle 8
    # W0 writes it (it travels east from W2 to W0).
    p.write("W", 0, 0, "s0e", 8, pos2, repeat=rows - 1)
    # Meanwhile W2's port 1 writes to bank 1 what W3 reads, on the cycles port 0 reads.
    p.tensor("input", "u", "i8", [rows, LANES], "W", [3])
    p.read("W", 3, 0, "s1e", r.cycle, pos2, repeat=rows - 1)
    p.at("mem.W2.1", r.cycle, f"write {half}, s1e", "mem_write", repeat=rows - 1)
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, (rows, LANES), dtype=np.int8)
    u = rng.integers(-128, 128, (rows, LANES), dtype=np.int8)
    out, info = h.run(p, {"x": x, "u": u})
    np.testing.assert_array_equal(out["z"], x)
    np.testing.assert_array_equal(out["y"], u)
    assert info.cycles == p.expected_cycles()
