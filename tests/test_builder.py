"""The program builder: arrival-time scheduling and the static checker."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lpu
from lpu.builder import Builder
from lpu.errors import ScheduleError
from lpu.layout import read_tensor, write_tensor


def _add_program(cfg, rows=8, dtype="float32"):
    b = Builder(cfg)
    x = b.input("x", dtype, (rows, cfg.lanes))
    y = b.input("y", dtype, (rows, cfg.lanes))
    z = b.output("z", dtype, (rows, cfg.lanes), hemi="E")
    t = b.earliest([x, y], b.vxm_pos)
    xs = b.read(x, stream=0, arrive=(b.vxm_pos, t))
    ys = b.read(y, stream=4, arrive=(b.vxm_pos, t))
    b.write(b.vxm("add", xs, ys, stream=8), z)
    return b, b.build()


@pytest.mark.parametrize("dtype", ["int8", "int16", "float16", "float32"])
def test_elementwise_add_every_type(small, dtype):
    b, prog = _add_program(small, 6, dtype)
    rng = np.random.default_rng(3)
    if dtype.startswith("int"):
        info = np.iinfo(dtype)
        x = rng.integers(info.min, info.max, (6, small.lanes), dtype=dtype, endpoint=True)
        y = rng.integers(info.min, info.max, (6, small.lanes), dtype=dtype, endpoint=True)
        want = (x.astype(np.int64) + y).astype(dtype)
    else:
        x = rng.standard_normal((6, small.lanes)).astype(dtype)
        y = rng.standard_normal((6, small.lanes)).astype(dtype)
        want = (x.astype(np.float64) + y).astype(dtype)
    run = lpu.Runner(prog)
    np.testing.assert_array_equal(run(x=x, y=y)["z"], want)
    # The last write lands mem_write cycles after it issues; add the last superlane's skew.
    last = max(c + 5 for ps in b.placements().values() for c, _ in ps)  # 6 vectors: repeat 5, 1
    land = last + dict(small.latencies)["mem_write"]
    assert run.last is not None and run.last.cycles == land + 1 + small.superlanes - 1


def test_chaining_and_split_reads(small):
    b = Builder(small)
    x = b.input("x", "float32", (8, small.lanes), split=2)
    z = b.output("z", "float32", (8, small.lanes), hemi="E")
    t = b.earliest([x], b.vxm_pos)
    xs = b.read(x, stream=0, arrive=(b.vxm_pos, t))
    sq = b.vxm("mul", xs, xs)  # stays in the ALU
    b.write(b.vxm("relu", sq, stream=4, alu=0), z)
    x_val = np.random.default_rng(0).standard_normal((8, small.lanes)).astype(np.float32)
    out = lpu.Runner(b.build())(x=x_val)["z"]
    np.testing.assert_array_equal(out, x_val * x_val)


def test_operands_must_arrive_together(small):
    b = Builder(small)
    x = b.input("x", "int8", (2, small.lanes))
    y = b.input("y", "int8", (2, small.lanes))
    t = b.earliest([x, y], b.vxm_pos)
    xs = b.read(x, stream=0, arrive=(b.vxm_pos, t))
    ys = b.read(y, stream=1, arrive=(b.vxm_pos, t + 1))
    with pytest.raises(ScheduleError, match="arrive together"):
        b.vxm("add", xs, ys, stream=2)


def _two_inputs(cfg, hemi, x_slice, y_slice):
    """A builder with int8 vectors x and y in slices of `hemi`, and z across the VXM."""
    b = Builder(cfg)
    x = b.input("x", "int8", (1, cfg.lanes), hemi=hemi, slices=[x_slice])
    y = b.input("y", "int8", (1, cfg.lanes), hemi=hemi, slices=[y_slice])
    z = b.output("z", "int8", (1, cfg.lanes), hemi="WE"[hemi == "W"], slices=[0])
    return b, x, y, z, b.earliest([x, y], b.vxm_pos)


def test_static_checker_finds_clobbered_values(small):
    b, x, y, z, t = _two_inputs(small, "W", 0, 3)
    ys = b.read(y, stream=0, arrive=(b.vxm_pos, t))
    # x sits between y's slice and the VXM: reading it onto the same stream on y's
    # diagonal overwrites y's value before the VXM sees it. Found where it is placed, so
    # that a kernel can try elsewhere (see test_a_retrying_kernel_...).
    b.read(x, stream=0, arrive=(b.vxm_pos, t))
    with pytest.raises(ScheduleError, match="overwritten") as e:
        b.vxm("copy", ys, stream=5)
    assert "read 0, s0e" in str(e.value) and "copy" in str(e.value)
    # The other way round: the reader is placed first, the writer that would clobber its
    # value after; the writer is refused.
    b, x, y, z, t = _two_inputs(small, "W", 0, 3)
    ys = b.read(y, stream=0, arrive=(b.vxm_pos, t))
    b.write(b.vxm("copy", ys, stream=5), z)
    mark = b.checkpoint()
    with pytest.raises(ScheduleError, match="would be overwritten on the way by 'mem.W0.0 @3: read 0, s0e'"):
        b.read(x, stream=0, arrive=(b.vxm_pos, t))
    b.rollback(mark)
    out = lpu.Runner(b.build())(y=np.full((1, small.lanes), 7, np.int8), x=np.zeros((1, small.lanes), np.int8))
    assert (out["z"] == 7).all()
    # A read with search=True moves on until its values overwrite nothing still wanted.
    xs = b.read(x, stream=0, arrive=(b.vxm_pos, t), search=True)
    assert xs.at(b.vxm_pos) > t
    w = b.output("w", "int8", (1, small.lanes), hemi="E", slices=[1])
    b.write(b.vxm("neg", xs, stream=6), w)
    out = lpu.Runner(b.build())(y=np.full((1, small.lanes), 7, np.int8), x=np.full((1, small.lanes), 3, np.int8))
    assert (out["z"] == 7).all() and (out["w"] == -3).all()


def test_westward_values_are_checked_the_same_way(small):
    # The mirror image of the test above: y in E3 flows west to the VXM past x in E1.
    b, x, y, z, t = _two_inputs(small, "E", 1, 3)
    ys = b.read(y, stream=2, arrive=(b.vxm_pos, t))
    assert ys.west
    mark = b.checkpoint()
    b.read(x, stream=2, arrive=(b.vxm_pos, t))
    with pytest.raises(ScheduleError, match="overwritten on the way by 'mem.E1.0"):
        b.vxm("copy", ys, stream=5)
    b.rollback(mark)
    b.write(b.vxm("copy", ys, stream=5), z)
    with pytest.raises(ScheduleError, match="would be overwritten on the way by 'mem.E1.0"):
        b.read(x, stream=2, arrive=(b.vxm_pos, t))
    # Further from the VXM than y's slice, x's value would be overwritten by y's, which
    # harms no one: nothing reads x's there.
    b, x, y, z, t = _two_inputs(small, "E", 5, 3)
    b.write(b.vxm("copy", b.read(y, stream=2, arrive=(b.vxm_pos, t)), stream=5), z)
    b.read(x, stream=2, arrive=(b.vxm_pos, t))
    out = lpu.Runner(b.build())(y=np.full((1, small.lanes), 9, np.int8), x=np.zeros((1, small.lanes), np.int8))
    assert (out["z"] == 9).all()


def test_a_retrying_kernel_moves_past_streams_in_use(small):
    from lpu.kernels.vector import retry

    b, x, y, z, t = _two_inputs(small, "W", 0, 3)
    w = b.output("w", "int8", (1, small.lanes), hemi="E", slices=[1])
    b.write(b.vxm("copy", b.read(y, stream=0, arrive=(b.vxm_pos, t)), stream=5), z)
    # Another kernel wants stream 0 at the same time: its first tries are refused (x's
    # slice is between y's and the VXM) and undone, until a cycle where it fits.
    tries = []

    def attempt(t: int) -> int:
        tries.append(t)
        return b.write(b.vxm("neg", b.read(x, stream=0, arrive=(b.vxm_pos, t)), stream=6), w)

    retry(b, "neg", t, attempt)
    assert len(tries) > 1
    out = lpu.Runner(b.build())(y=np.full((1, small.lanes), 7, np.int8), x=np.full((1, small.lanes), 3, np.int8))
    assert (out["z"] == 7).all() and (out["w"] == -3).all()


def test_static_checker_finds_stream_and_bank_conflicts(small):
    b = Builder(small)
    x = b.input("x", "int8", (1, small.lanes), hemi="W", slices=[0])
    t = b.earliest([x], b.vxm_pos)
    xs = b.read(x, stream=0, arrive=(b.vxm_pos, t))
    b.vxm("copy", xs, stream=4, alu=1)
    with pytest.raises(ScheduleError, match="stream conflict") as e:
        b.vxm("neg", xs, stream=4, alu=3)  # same stream, same cycle, same position
    assert "copy" in str(e.value) and "neg" in str(e.value)
    b = Builder(small)
    x = b.input("x", "int8", (1, small.lanes), hemi="W", slices=[0])
    y = b.scratch("y", "int8", (1, small.lanes), hemi="W", slices=[0])
    b.read(x, stream=0, at=10)
    with pytest.raises(ScheduleError, match="read is taken"):
        b.read(y, stream=1, at=10)  # a second read of slice W0 on the same cycle
    later = b.read(y, stream=1, at=10, search=True)  # ...or the first cycle it can
    assert later.at(b.mem_pos("W", 0)) == 11
    b = Builder(small)
    x = b.input("x", "int8", (1, small.lanes), hemi="W", slices=[0])
    u = b.input("u", "int8", (1, small.lanes), hemi="W", slices=[1])
    y = b.scratch("y", "int8", (1, small.lanes), hemi="W", slices=[0])
    b.read(x, stream=0, at=10)  # issues on cycle 7
    us = b.read(u, stream=1, arrive=(b.mem_pos("W", 0), 7))
    with pytest.raises(ScheduleError, match="same bank"):
        b.write(us, y)  # a write of bank 0 of the same slice on cycle 7


def test_queue_overlap_is_refused(small):
    b = Builder(small)
    b.place("vxm.alu1", 5, "copy", [0, 0, 127], repeat=4, stride=2)
    with pytest.raises(ScheduleError, match="busy"):
        b.place("vxm.alu1", 9, "copy", [0, 1, 127])
    b.place("vxm.alu1", 14, "copy", [0, 1, 127])
    # Placed out of cycle order, and undone: each span is found whatever the order.
    mark = b.checkpoint()
    b.place("vxm.alu1", 100, "copy", [0, 1, 127], repeat=9)  # cycles 100..109
    b.place("vxm.alu1", 50, "copy", [0, 1, 127], repeat=9)  # 50..59
    for cycle, busy in ((49, False), (50, True), (59, True), (60, False), (99, False), (105, True), (110, False)):
        if busy:
            with pytest.raises(ScheduleError, match="busy"):
                b.place("vxm.alu1", cycle, "copy", [0, 1, 127])
        else:
            m = b.checkpoint()
            b.place("vxm.alu1", cycle, "copy", [0, 1, 127])
            b.rollback(m)
    with pytest.raises(ScheduleError, match="busy"):
        b.place("vxm.alu1", 90, "copy", [0, 1, 127], repeat=20)  # 90..110 meets 100..109
    b.rollback(mark)
    b.place("vxm.alu1", 90, "copy", [0, 1, 127], repeat=20)
    assert [c for c, _ in b.placements()["vxm.alu1"]] == [5, 14, 90]


def test_capacity(small):
    b = Builder(small)
    with pytest.raises(lpu.CapacityError, match="bytes"):
        b.scratch("big", "float32", (small.addresses * 10, small.lanes))


def test_placement_order_is_data_order(small):
    """A read placed after a write of the same words must see it; a write placed after an
    access of the same words must land after it. Otherwise the builder says which
    earlier instruction would be overtaken (or, with search, reads later)."""
    b = Builder(small)
    x = b.input("x", "int8", (4, small.lanes), hemi="W", slices=[0])
    y = b.scratch("y", "int8", (4, small.lanes), hemi="W", slices=[1])
    # Every other cycle, so reads can interleave with the writes without a bank conflict.
    xs = b.read(x, stream=0, at=10, west=True, stride=2)  # W1 is west of W0
    landed = b.write(xs, y)
    t_w = landed - b.lat["mem_write"] - 6  # the writes issue on t_w, t_w + 2, ...
    pos = b.mem_pos("W", 1)
    early = (pos, t_w - 1 + b.lat["mem_read"])  # reads issued one cycle before each write
    with pytest.raises(ScheduleError, match=f"before 'mem.W1.0 @{t_w}: write 0, s0w") as e:
        b.read(y, stream=2, arrive=early, stride=2)
    assert e.value.first is not None
    ys = b.read(y, stream=2, arrive=early, stride=2, search=True)
    # Moved to where word i is read on or after the cycle it lands.
    assert ys.at(pos) - b.lat["mem_read"] >= t_w + b.lat["mem_write"]
    # A write placed later may not land before that read has read the old words.
    b2 = Builder(small)
    x = b2.input("x", "int8", (4, small.lanes), hemi="W", slices=[0])
    y = b2.input("y", "int8", (4, small.lanes), hemi="W", slices=[1])
    ys = b2.read(y, stream=2, at=20)  # reads y on cycles 17..20
    xs = b2.read(x, stream=0, at=4, west=True)
    with pytest.raises(ScheduleError, match="would land before 'mem.W1.0 @[0-9]+: read 0, s2"):
        b2.write(xs, y)
    # Unrelated words are free.
    z = b2.scratch("z", "int8", (4, small.lanes), hemi="W", slices=[1], addr=64)
    b2.write(xs, z)
    # Far into a long write (words 0..199): its word 150 is still checked, and the word
    # after it is free.
    b3 = Builder(small)
    x = b3.input("x", "int8", (200, small.lanes), hemi="W", slices=[0])
    y = b3.scratch("y", "int8", (200, small.lanes), hemi="W", slices=[1], addr=0)
    after = b3.scratch("after", "int8", (1, small.lanes), hemi="W", slices=[1], addr=200)
    # Every other cycle, so that reads fit between the writes.
    landed = b3.write(b3.read(x, stream=0, at=10, west=True, stride=2), y)
    first = landed - b3.lat["mem_write"] - 2 * 199  # write i issues on first + 2i
    at = first + 2 * 100 + 1 + b3.lat["mem_read"]  # a read issued between writes 100 and 101
    with pytest.raises(ScheduleError, match="before 'mem.W1.0 @[0-9]+: write 0, s0w"):
        b3.read(y, stream=2, vectors=(150, 1), at=at)
    b3.read(after, stream=2, at=at)
    late = b3.read(y, stream=2, vectors=(150, 1), at=at, search=True)
    assert late.at(b3.mem_pos("W", 1)) - b3.lat["mem_read"] >= first + 2 * 150 + b3.lat["mem_write"]


def test_indirect_accesses_share_no_cycle_with_other_accesses_of_their_slice(small):
    """A gather's or scatter's addresses are data, so its bank is unknown: it cannot
    share a cycle with a read or a write of the same slice (on the chip, the same bank
    would be a bank_conflict fault at run time)."""
    def setup():
        b = Builder(small)
        x = b.input("x", "int8", (1, small.lanes), hemi="W", slices=[0])
        y = b.scratch("y", "int8", (1, small.lanes), hemi="W", slices=[0], addr=300)  # bank 1
        d = b.input("d", "int8", (1, small.lanes), hemi="W", slices=[3])
        m = b.input("m", "int16", (1, small.lanes), hemi="W", slices=[4, 5])
        pos = b.mem_pos("W", 0)
        return b, x, y, b.read(d, stream=1, arrive=(pos, 17)), b.read(m, stream=2, arrive=(pos, 17))

    b, x, y, df, mf = setup()
    b.read(x, stream=0, at=20)  # slice W0 reads bank 0 on cycle 17
    with pytest.raises(ScheduleError, match="bank, is data"):
        b.scatter(df, mf, y)
    b, x, y, df, mf = setup()
    b.scatter(df, mf, y)  # slice W0 writes an unknown bank on cycle 17
    with pytest.raises(ScheduleError, match="read is taken"):
        b.read(x, stream=0, at=20)
    assert b.read(x, stream=0, at=20, search=True).at(b.mem_pos("W", 0)) == 21


KERNEL_OPS = {"neg": np.negative, "abs": np.abs, "copy": lambda v: v}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(sorted(KERNEL_OPS)), st.sampled_from(["int8", "float32"]),
                          st.sampled_from("WE"), st.integers(0, 20), st.integers(0, 7), st.integers(0, 7),
                          st.integers(0, 20), st.integers(0, 12)),
                min_size=2, max_size=12))
def test_what_the_builder_accepts_runs_as_placed(kernels):
    """Random small kernels (read a vector, one VXM op, write it back) placed near one
    another on random slices, streams and cycles: each one the builder refuses is undone,
    and every one it accepts must compute its value when the program runs, whatever the
    others do to the streams (so no check that placement skips could let a value be
    clobbered unnoticed)."""
    cfg = lpu.ChipConfig("tsp_small")
    b = Builder(cfg)
    rng = np.random.default_rng(len(kernels))
    accepted, inputs, t = [], {}, 20
    for k, (op, dtype, hemi, sl, s_in, s_out, out_sl, dt) in enumerate(kernels):
        nb = np.dtype(dtype).itemsize  # byte planes: slices side by side, streams aligned
        x = b.input(f"x{k}", dtype, (1, cfg.lanes), hemi=hemi, slices=list(range(sl, sl + nb)), addr=2 * k)
        z = b.output(f"z{k}", dtype, (1, cfg.lanes), hemi="WE"[hemi == "W"], slices=list(range(out_sl, out_sl + nb)),
                     addr=2 * k + 1)
        inputs[x.name] = (rng.integers(-127, 128, (1, cfg.lanes)) * 0.5).astype(dtype)
        mark = b.checkpoint()
        try:
            xs = b.read(x, stream=s_in * nb % 32, arrive=(b.vxm_pos, t + dt))
            b.write(b.vxm(op, xs, stream=s_out * nb % 32), z)
            accepted.append((k, op))
        except ScheduleError:
            b.rollback(mark)
    out = lpu.Runner(b.build())(**inputs)
    for k, op in accepted:
        np.testing.assert_array_equal(out[f"z{k}"], KERNEL_OPS[op](inputs[f"x{k}"]), err_msg=f"kernel {k}")


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 6), st.integers(0, 11), st.sampled_from([0, 1, 1, 1]), st.integers(1, 4),
                          st.integers(0, 3), st.integers(1, 6)), min_size=1, max_size=6))
def test_runs_of_single_instructions_fold_into_repeats(runs):
    """Copies of single vectors, placed one call at a time in runs (n copies, source
    vectors a step of 0 or 1 apart, a constant spacing; destinations in order with
    gaps): the program built with runs folded into `repeat`s has fewer words, copies
    what the calls asked (numpy is the reference), and runs exactly like the program of
    one word per placed instruction: same cycles and statistics, one by one or batched.
    (Reads of one source vector repeated do not fold: a repeat advances the address.)"""
    cfg = lpu.ChipConfig("tsp_small")
    b = Builder(cfg)
    x = b.input("x", "float32", (12, cfg.lanes), hemi="W")
    z = b.output("z", "float32", (sum(n + skip for n, *_, skip, _ in runs), cfg.lanes), hemi="E")
    copies, t, dst = [], 10, 0
    for n, src, src_step, spacing, skip, pause in runs:
        dst += skip
        for k in range(n):
            i = min(src + k * src_step, 11)
            flow = b.read(x, stream=0, vectors=(i, 1), at=t + k * spacing)
            b.write(flow, z, vectors=(dst + k, 1))
            copies.append((i, dst + k))
        dst += n
        t += n * spacing + pause + 40
    folded, literal = b.build(), b.build(fold_repeats=False)
    assert folded.instruction_count <= literal.instruction_count
    if any(n >= 3 for n, *_ in runs):  # (two issues 1 cycle apart take two words either way)
        assert folded.instruction_count < literal.instruction_count
    xv = np.random.default_rng(len(copies)).standard_normal((12, cfg.lanes)).astype(np.float32)
    want = np.zeros((z.shape[0], cfg.lanes), np.float32)
    for i, j in copies:
        want[j] = xv[i]
    results = []
    for prog in (folded, literal):
        for fast in (True, False):
            chip = lpu.Chip(cfg)
            chip.load(prog)
            chip.fast = fast
            write_tensor(chip, prog.tensor("x"), xv)
            assert chip.run() == lpu.RunStatus.HALTED
            got = read_tensor(chip, prog.tensor("z"))
            np.testing.assert_array_equal(got, want)
            results.append((chip.cycle, chip.stats()))
    assert all(r == results[0] for r in results)
