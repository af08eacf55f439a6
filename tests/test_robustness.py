"""Limits, capacity, threads and files: nothing a user does hangs lpu or loses work."""

from __future__ import annotations

import _thread
import os
import signal
import threading

import numpy as np
import pytest

import lpu
from lpu.examples import vector_add_program
from lpu.files import atomic_path, save_npy
from lpu.layout import read_tensor


def busy_program(pairs: int) -> lpu.Program:
    """Every MEM slice of tsp_v1 reads a word on every cycle for 8192 * pairs cycles."""
    cfg = lpu.ChipConfig("tsp_v1")
    lines = [".chip tsp_v1"]
    for hemi, d in (("W", "e"), ("E", "w")):
        for s in range(cfg.mem_slices):
            lines.append(f".queue mem.{hemi}{s}.0")
            lines += [f"read 0, s{s % 32}{d}", "repeat 8191, 1"] * pairs
    return lpu.assemble("\n".join(lines))


def loaded(prog: lpu.Program) -> lpu.Chip:
    chip = lpu.Chip(prog.config)
    chip.load(prog)
    return chip


# -- limits ------------------------------------------------------------------------------


def test_a_program_that_never_halts_stops_at_the_default_cycle_limit():
    # 1000 NOPs of 2^32-1 cycles: about 4.3e12 cycles, far past any limit.
    prog = lpu.assemble(".chip tsp_tiny\n.queue vxm.alu0\n" + "nop 4294967295\n" * 1000)
    chip = loaded(prog)
    assert chip.run() == lpu.RunStatus.CYCLE_LIMIT
    assert chip.cycle == lpu._core.DEFAULT_MAX_CYCLES and not chip.halted
    # max_cycles counts from where the chip is, so a stopped run resumes with a new budget.
    assert chip.run(max_cycles=5) == lpu.RunStatus.CYCLE_LIMIT
    assert chip.cycle == lpu._core.DEFAULT_MAX_CYCLES + 5
    with pytest.raises(lpu.IncompleteRunError) as e:
        lpu.Runner(prog, max_cycles=1000)()
    assert e.value.cycle == 1000 and e.value.status == lpu.RunStatus.CYCLE_LIMIT
    assert "did not finish" in str(e.value)


@pytest.fixture
def python_ctrl_c():
    """Python's own Ctrl-C handler for the test, whatever the runner was started with: a
    shell starts background jobs with SIGINT ignored, and Ctrl-C then does nothing."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_stops_a_long_run_promptly_and_the_run_resumes_to_the_same_end(python_ctrl_c):
    prog = busy_program(600)
    whole = loaded(prog)
    assert whole.run() == lpu.RunStatus.HALTED

    chip = loaded(prog)

    def press_ctrl_c_once_running():
        while True:
            try:
                chip.stats()
            except lpu.BusyError:  # the run has started (it holds the chip)
                _thread.interrupt_main()  # what Ctrl-C does
                return

    presser = threading.Thread(target=press_ctrl_c_once_running)
    presser.start()
    with pytest.raises(KeyboardInterrupt):
        chip.run()
    presser.join()
    stopped = chip.cycle
    # Promptly: long before the end (the run takes a third of a second or more).
    assert 0 < stopped < whole.cycles // 2
    assert not chip.halted and chip.fault is None
    # Batches may have run ahead of the stop; a snapshot (as any change would) first
    # brings the chip to exactly where it stopped: as a run limited to that cycle.
    snap = chip.snapshot()
    limited = loaded(prog)
    assert limited.run_until(stopped) == lpu.RunStatus.CYCLE_LIMIT
    assert chip.cycle == snap.cycle == stopped and chip.stats() == limited.stats()
    assert chip.run() == lpu.RunStatus.HALTED
    assert chip.cycles == whole.cycles and chip.stats() == whole.stats()


# -- capacity ----------------------------------------------------------------------------


def test_a_program_larger_than_instruction_memory_is_refused_at_load():
    cfg = lpu.ChipConfig("tsp_tiny")
    small = vector_add_program(cfg, rows=4)
    chip = loaded(small)
    chip.step(3)
    before = (chip.cycle, chip.program.to_bytes())
    n = cfg.instruction_capacity + 1
    big = lpu.assemble(".chip tsp_tiny\n.queue vxm.alu0\n" + "nop 1\n" * n)
    with pytest.raises(lpu.CapacityError, match=f"{n} instructions .* holds {cfg.instruction_capacity}"):
        chip.load(big)
    # The failed load changed nothing: the old program is still there, mid-run.
    assert (chip.cycle, chip.program.to_bytes()) == before
    assert chip.run() == lpu.RunStatus.HALTED


def test_a_tensor_larger_than_sram_is_refused_before_anything_runs():
    from lpu.builder import Builder

    b = Builder(lpu.ChipConfig("tsp_tiny"))
    with pytest.raises(lpu.CapacityError, match="no room"):
        b.tensor("big", "input", "float32", (10_000, 64))


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
def test_eight_full_size_chips_fit_in_modest_memory():
    cfg = lpu.ChipConfig("tsp_v1")
    prog = vector_add_program(cfg, rows=64)
    base = _rss_mib()
    chips = [loaded(prog) for _ in range(8)]
    rng = np.random.default_rng(8)
    for i, chip in enumerate(chips):
        x = rng.integers(-128, 128, (64, cfg.lanes), dtype=np.int8)
        out = lpu.Runner(prog, chip=chip)(x=x, y=np.full_like(x, i))
        np.testing.assert_array_equal(out["z"], (x.astype(np.int16) + i).astype(np.int8))
    # 8 x 220 MiB of SRAM would be 1.7 GiB; only the words touched take memory.
    assert _rss_mib() - base < 512
    assert all(c.config.sram_bytes == 220 * 2**20 for c in chips)


def test_the_native_allocator_keeps_freed_memory_between_runs():
    # Set (through mimalloc's option API) when lpu._core is imported: a run's freed
    # buffers are reused by the next run instead of coming back as fresh zeroed pages.
    assert lpu._core.allocator_purge_delay() == 1000


# -- threads -----------------------------------------------------------------------------


def test_chips_in_several_threads_give_the_serial_results():
    cfg = lpu.ChipConfig("tsp_v1")
    prog = vector_add_program(cfg, rows=2000)
    rng = np.random.default_rng(5)
    inputs = [
        {k: rng.integers(-128, 128, (2000, cfg.lanes), dtype=np.int8) for k in "xy"} for _ in range(4)
    ]

    def one(i):
        run = lpu.Runner(prog)
        return run(**inputs[i])["z"], run.last.cycles

    serial = [one(i) for i in range(4)]
    parallel = [None] * 4

    def work(i):
        parallel[i] = one(i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (z, cycles), (pz, pcycles), ins in zip(serial, parallel, inputs):
        np.testing.assert_array_equal(pz, z)
        np.testing.assert_array_equal(z, (ins["x"].astype(np.int16) + ins["y"]).astype(np.int8))
        assert pcycles == cycles


def test_a_chip_busy_in_another_thread_refuses_with_busy_error():
    prog = busy_program(300)
    chip = loaded(prog)
    worker = threading.Thread(target=chip.run)
    worker.start()
    refused, seen = None, []
    while worker.is_alive():
        seen.append(chip.cycle)  # how far the run has got: never refused
        try:
            chip.stats()
        except lpu.BusyError as e:
            refused = e
    worker.join()
    assert refused is not None and "another thread" in str(refused)
    assert seen == sorted(seen) and seen[-1] <= chip.cycle and len(set(seen)) > 1
    # The run in the other thread was not disturbed.
    assert chip.halted and chip.fault is None
    alone = loaded(prog)
    alone.run()
    assert chip.cycles == alone.cycles and chip.stats() == alone.stats()


# -- files -------------------------------------------------------------------------------


def _files(d):
    return sorted(os.listdir(d))


def test_program_save_replaces_a_file_whole_and_leaves_nothing_behind(tmp_path):
    cfg = lpu.ChipConfig("tsp_tiny")
    path = tmp_path / "p.lpu"
    old, new = vector_add_program(cfg, rows=2), vector_add_program(cfg, rows=5)
    old.save(path)
    new.save(path)
    assert lpu.Program.load(path).to_bytes() == new.to_bytes()
    assert _files(tmp_path) == ["p.lpu"]
    # A write that cannot finish (the target is a directory) leaves everything as it was.
    (tmp_path / "d").mkdir()
    with pytest.raises(OSError):
        new.save(tmp_path / "d")
    assert _files(tmp_path) == ["d", "p.lpu"] and _files(tmp_path / "d") == []
    assert lpu.Program.load(path).to_bytes() == new.to_bytes()


def test_a_trace_that_cannot_be_written_leaves_the_old_one(tmp_path):
    prog = vector_add_program(lpu.ChipConfig("tsp_tiny"), rows=2)
    (tmp_path / "t.json").mkdir()
    chip = loaded(prog)
    with pytest.raises(OSError, match="cannot write the trace"):
        chip.run(trace=tmp_path / "t.json")
    assert _files(tmp_path) == ["t.json"]


@pytest.mark.parametrize("failure", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_a_failure_mid_write_keeps_the_old_file(tmp_path, failure):
    path = tmp_path / "out.npy"
    save_npy(path, np.arange(10))
    with pytest.raises(type(failure)):
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            f.write(b"\x93NUMPY half of a file")
            raise failure
    np.testing.assert_array_equal(np.load(path), np.arange(10))
    assert _files(tmp_path) == ["out.npy"]


def test_saved_files_have_the_usual_permissions(tmp_path):
    save_npy(tmp_path / "a.npy", np.zeros(3))
    with open(tmp_path / "b", "wb"):
        pass
    assert os.stat(tmp_path / "a.npy").st_mode == os.stat(tmp_path / "b").st_mode


def test_a_plot_that_fails_mid_write_keeps_the_old_png(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from lpu.report import save_plot

    chip = loaded(vector_add_program(lpu.ChipConfig("tsp_tiny"), rows=2))
    chip.run()
    path = tmp_path / "u.png"
    save_plot(chip, path)
    good = path.read_bytes()
    assert good.startswith(b"\x89PNG")

    def broken(self, fname, **kw):
        with open(fname, "wb") as f:
            f.write(b"\x89PNG truncated")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(OSError, match="disk full"):
        save_plot(chip, path)
    assert path.read_bytes() == good and _files(tmp_path) == ["u.png"]


# -- processes ---------------------------------------------------------------------------


def test_configs_programs_tensors_and_errors_pickle_for_worker_processes():
    import pickle

    custom = lpu.ChipConfig("tsp_small", mem_read=7, name="mine")
    prog = vector_add_program(lpu.ChipConfig("tsp_tiny"), rows=3)
    for obj in [lpu.ChipConfig(), lpu.ChipConfig("tsp_tiny"), custom, prog.tensors[0], lpu.RunStatus.FAULT]:
        back = pickle.loads(pickle.dumps(obj))
        assert type(back) is type(obj) and back == obj
    assert pickle.loads(pickle.dumps(custom)).name == "mine"
    back = pickle.loads(pickle.dumps(prog))
    assert back.to_bytes() == prog.to_bytes()
    # The unpickled program runs to the same result.
    x, y = (np.arange(3 * 16, dtype=np.int8).reshape(3, 16) * k for k in (1, 3))
    assert (lpu.Runner(back)(x=x, y=y)["z"] == lpu.Runner(prog)(x=x, y=y)["z"]).all()


def test_a_whole_run_in_a_worker_process_gives_the_same_result():
    import concurrent.futures
    import multiprocessing

    prog = vector_add_program(lpu.ChipConfig("tsp_tiny"), rows=4)
    x = np.arange(4 * 16, dtype=np.int8).reshape(4, 16)
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter, as on macOS/Windows
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
        out, cycles = pool.submit(_run_in_worker, prog, x).result(timeout=120)
        with pytest.raises(lpu.InputError, match="shape"):
            pool.submit(_run_in_worker, prog, x[:2]).result(timeout=120)
    here = lpu.Runner(prog)
    np.testing.assert_array_equal(out, here(x=x, y=x)["z"])
    assert cycles == here.last.cycles


def _run_in_worker(prog, x):
    run = lpu.Runner(prog)
    return run(x=x, y=x)["z"], run.last.cycles


def test_a_runner_call_with_a_bad_input_leaves_the_last_run_in_place():
    cfg = lpu.ChipConfig("tsp_tiny")
    run = lpu.Runner(vector_add_program(cfg, rows=2))
    x = np.ones((2, cfg.lanes), np.int8)
    z = run(x=x, y=x)["z"]
    cycle = run.chip.cycle
    with pytest.raises(lpu.InputError, match="'y' is int8; got an array of float32"):
        run(x=x * 5, y=x.astype(np.float32))
    assert run.chip.cycle == cycle
    np.testing.assert_array_equal(read_tensor(run.chip, run.outputs["z"]), z)


def test_a_refused_builder_tensor_takes_no_sram():
    from lpu.builder import Builder

    cfg = lpu.ChipConfig("tsp_tiny")
    b, fresh = Builder(cfg), Builder(cfg)
    with pytest.raises(lpu.InputError, match="shape"):
        b.tensor("w", "constant", "int8", (4, cfg.lanes), data=np.zeros((3, cfg.lanes), np.int8))
    placed = b.tensor("w", "constant", "int8", (4, cfg.lanes))
    assert placed == fresh.tensor("w", "constant", "int8", (4, cfg.lanes))
