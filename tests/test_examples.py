"""The hand-written assembly programs in examples/: each assembles, computes what numpy
computes on random inputs, takes the number of cycles the timing rule gives (derived
here from the chip's positions and latencies, not from the .s file), and survives
`lpu asm` -> `lpu dis` -> `lpu asm` with an identical binary."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import lpu

import enginehelp as h
from conftest import ROOT
from enginehelp import ref_fp16

EXAMPLES = os.path.join(ROOT, "examples")


def L(cfg, name):
    return h.lat(cfg, name)


def pos(cfg, hemi, s):
    return h.mem_pos(cfg, hemi, s)


# Each case: inputs(rng) -> dict, reference(inputs) -> dict, cycles(cfg) -> int.


def vector_add():
    def inputs(rng):
        return {k: rng.integers(-128, 128, (8, 320), dtype=np.int8) for k in "xy"}

    def ref(i):
        return {"z": (i["x"].astype(np.int16) + i["y"]).astype(np.int8)}

    def cycles(cfg):
        vx = cfg.vxm_position()
        t_add = L(cfg, "mem_read") + (vx - pos(cfg, "W", 1))
        last = t_add + 7 + L(cfg, "vxm_basic") + (pos(cfg, "E", 0) - vx)
        return h.cycles_for(cfg, last + L(cfg, "mem_write"))

    return inputs, ref, cycles


def relu():
    def inputs(rng):
        x = (rng.standard_normal((4, 320)) * 10).astype(np.float32)
        x[0, :4] = [-0.0, np.nan, -np.inf, np.inf]
        return {"x": x}

    def ref(i):
        x = i["x"]
        return {"z": np.where(np.isnan(x), np.float32(np.nan), np.where(x > 0, x, np.float32(0)))}

    def cycles(cfg):
        vx = cfg.vxm_position()
        t = L(cfg, "mem_read") + (vx - pos(cfg, "W", 3))
        last = t + L(cfg, "vxm_basic") + (pos(cfg, "E", 3) - vx) + 3
        return h.cycles_for(cfg, last + L(cfg, "mem_write"))

    return inputs, ref, cycles


def chain():
    def inputs(rng):
        return {k: rng.standard_normal((4, 320)).astype(np.float32) for k in "axb"}

    def ref(i):
        ax = (i["a"].astype(np.float64) * i["x"]).astype(np.float32)
        s = (ax.astype(np.float64) + i["b"]).astype(np.float32)
        return {"y": np.where(s > 0, s, np.float32(0))}

    def cycles(cfg):
        vx = cfg.vxm_position()
        t_mul = L(cfg, "mem_read") + (vx - pos(cfg, "W", 7))
        t_relu = t_mul + L(cfg, "vxm_mul") + L(cfg, "vxm_basic")
        last = t_relu + L(cfg, "vxm_basic") + (pos(cfg, "E", 7) - vx) + 3
        return h.cycles_for(cfg, last + L(cfg, "mem_write"))

    return inputs, ref, cycles


def gather():
    def inputs(rng):
        return {"table": rng.integers(-128, 128, (64, 320), dtype=np.int8),
                "map": rng.integers(0, 64, (4, 320)).astype(np.int16)}

    def ref(i):
        return {"z": i["table"][i["map"].astype(np.int64), np.arange(320)[None, :]]}

    def cycles(cfg):
        t_g = L(cfg, "mem_read") + (pos(cfg, "W", 0) - pos(cfg, "W", 3))
        last = t_g + L(cfg, "mem_gather") + (pos(cfg, "E", 1) - pos(cfg, "W", 0)) + 3
        return h.cycles_for(cfg, last + L(cfg, "mem_write"))

    return inputs, ref, cycles


def broadcast():
    def inputs(rng):
        return {"x": rng.integers(-128, 128, (4, 320), dtype=np.int8), "map": np.zeros((4, 320), np.int8)}

    def ref(i):
        return {"z": np.repeat(i["x"][:, :1], 320, axis=1)}

    def cycles(cfg):
        sx = cfg.sxm_position(0)
        t = L(cfg, "mem_read") + pos(cfg, "W", 4) - sx
        last = t + L(cfg, "sxm_distribute") + L(cfg, "sxm_permute") + pos(cfg, "W", 6) - sx + 3
        return h.cycles_for(cfg, last + L(cfg, "mem_write"))

    return inputs, ref, cycles


def transpose():
    def inputs(rng):
        return {"x": rng.integers(-128, 128, (32, 320), dtype=np.int8)}

    def ref(i):
        blocks = []
        for b in range(2):
            x = i["x"][16 * b: 16 * b + 16]
            # Y[i] lane 16g+j = X[j] lane 16g+i, for each of the 20 superlanes g.
            blocks.append(x.reshape(16, 20, 16).transpose(2, 1, 0).reshape(16, 320))
        return {"y": np.concatenate(blocks)}

    def cycles(cfg):
        sx = cfg.sxm_position(0)
        far = pos(cfg, "W", 28) - sx
        t = L(cfg, "mem_read") + far
        last = t + L(cfg, "sxm_transpose") + far + 1
        return h.cycles_for(cfg, last + L(cfg, "mem_write"))

    return inputs, ref, cycles


def matmul(dt):
    m = 8 if dt == "i8" else 4
    gap = 1 if dt == "i8" else 4

    def inputs(rng):
        if dt == "i8":
            return {"w": rng.integers(-128, 128, (320, 320), dtype=np.int8),
                    "x": rng.integers(-128, 128, (m, 320), dtype=np.int8)}
        return {"w": rng.standard_normal((320, 320)).astype(np.float16),
                "x": (rng.standard_normal((m, 320)) * 3).astype(np.float16)}

    def ref(i):
        if dt == "i8":
            return {"y": (i["x"].astype(np.int64) @ i["w"].astype(np.int64)).astype(np.int32)}
        return {"y": ref_fp16(i["x"], i["w"])}

    def cycles(cfg):
        P = cfg.mxm_position(0)
        nlw = cfg.lanes // (16 if dt == "i8" else 8)
        t_lw = L(cfg, "mem_read") + (pos(cfg, "W", 28) - P)
        t_abc = t_lw + nlw + L(cfg, "mxm_iw")
        t_acc = t_abc + L(cfg, "mxm_abc")
        last = t_acc + L(cfg, "mxm_acc") + (pos(cfg, "W", 20) - P) + gap * (m - 1)
        return h.cycles_for(cfg, last + L(cfg, "mem_write"))

    return inputs, ref, cycles


CASES = {
    "vector_add.s": vector_add(),
    "relu.s": relu(),
    "chain.s": chain(),
    "gather.s": gather(),
    "broadcast.s": broadcast(),
    "transpose.s": transpose(),
    "matmul_int8.s": matmul("i8"),
    "matmul_fp16.s": matmul("f16"),
}


def test_every_example_is_tested_and_listed():
    files = sorted(f for f in os.listdir(EXAMPLES) if f.endswith(".s"))
    assert files == sorted(CASES)
    with open(os.path.join(EXAMPLES, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    for name in files:
        assert name in readme


@pytest.mark.parametrize("name", sorted(CASES))
def test_example_runs(name):
    inputs, ref, cycles = CASES[name]
    prog = lpu.assemble_file(os.path.join(EXAMPLES, name))
    run = lpu.Runner(prog)
    for seed in range(2):
        ins = inputs(np.random.default_rng(seed))
        out = run(**ins)
        want = ref(ins)
        assert set(out) == set(want)
        for k in want:
            if out[k].dtype.kind == "f":
                dt = "f32" if out[k].dtype == np.float32 else "f16"
                h.assert_bits_equal(dt, h.bits_of(dt, out[k]), h.bits_of(dt, want[k].astype(out[k].dtype)),
                                    canonical_nan=True, what=f"{name} {k}")
            else:
                np.testing.assert_array_equal(out[k], want[k], err_msg=f"{name} {k}")
        assert run.last.cycles == cycles(prog.config), name
    if name.startswith("matmul"):
        key = "macs_int8" if "int8" in name else "macs_fp16"
        assert run.last.stats[key] == ins["x"].shape[0] * 320 * 320


def _lpu(*args, cwd):
    r = subprocess.run([sys.executable, "-m", "lpu", *args], cwd=cwd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.mark.parametrize("name", sorted(CASES))
def test_asm_dis_asm_round_trip(name, tmp_path):
    src = os.path.join(EXAMPLES, name)
    a = tmp_path / "a.lpu"
    b = tmp_path / "b.lpu"
    _lpu("asm", src, "-o", str(a), cwd=tmp_path)
    text = _lpu("dis", str(a), cwd=tmp_path)
    (tmp_path / "dis.s").write_text(text)
    _lpu("asm", str(tmp_path / "dis.s"), "-o", str(b), cwd=tmp_path)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() == lpu.assemble_file(src).to_bytes()
