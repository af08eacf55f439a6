"""Decode attention with RoPE and a KV cache, step by step against numpy."""

from __future__ import annotations

import numpy as np
import pytest

import lpu
from lpu.builder import Builder
from lpu.kernels import attention as A
from lpu.layout import read_tensor, write_tensor


def rope_ref(x: np.ndarray, pos: int, hd: int, theta: float = 10000.0) -> np.ndarray:
    """Hugging Face rotate_half RoPE on a vector of heads, in float64."""
    half = hd // 2
    inv = theta ** (-np.arange(half) * 2 / hd)
    c, s = np.cos(pos * inv), np.sin(pos * inv)
    out = x.astype(np.float64).copy()
    for o in range(0, len(x), hd):
        a, b2 = x[o : o + half].astype(np.float64), x[o + half : o + hd].astype(np.float64)
        out[o : o + half] = a * c - b2 * s
        out[o + half : o + hd] = b2 * c + a * s
    return out


@pytest.mark.parametrize("cname,H,KV,hd,S", [("tsp_small", 4, 2, 8, 16), ("tsp_v1", 8, 4, 32, 64), ("tsp_v1", 4, 4, 64, 40),
                                            ("tsp_small", 6, 3, 16, 16), ("tsp_v1", 12, 6, 64, 32),
                                            # Short caches on the big chip: the softmax re-reads the
                                            # scores soon after writing them (a race before the
                                            # builder checked placement order against data order).
                                            ("tsp_v1", 4, 2, 16, 32), ("tsp_v1", 12, 12, 32, 16)])
def test_decode_attention_over_steps(cname, H, KV, hd, S):
    cfg = lpu.ChipConfig(cname)
    L = cfg.lanes
    shape = A.AttentionShape(H, KV, hd, S)
    b = Builder(cfg)
    st = A.new_state(b, shape)
    q_in = b.input("q", "float32", (H * hd,), hemi="E")
    k_in = b.input("k", "float32", (KV * hd,), hemi="E")
    v_in = b.input("v", "float32", (KV * hd,), hemi="E")
    qr = b.scratch("qr", "float32", (H * hd,), hemi="E")
    kr = b.scratch("kr", "float32", (KV * hd,), hemi="E")
    kc, vc = A.new_cache(b, st, "kc"), A.new_cache(b, st, "vc")
    out = b.output("out", "float16", (H * hd,), hemi="E")
    t = A.prologue(b, st)
    t = A.rope(b, st, q_in, qr, which="q", start=t)
    t = A.rope(b, st, k_in, kr, which="k", start=t)
    t = A.append(b, st, kr, kc, start=t)
    t = A.append(b, st, v_in, vc, start=t)
    t = A.attend(b, st, qr, kc, vc, out, start=t)
    A.advance(b, st, start=t)
    prog = b.build()
    chip = lpu.Chip(cfg)
    chip.load(prog)
    rng = np.random.default_rng(H * S)
    keys, values = [], []
    cycles = set()
    for step in range(7):
        q, k, v = (rng.standard_normal(n).astype(np.float32) for n in (H * hd, KV * hd, KV * hd))
        chip.reset(keep_sram=True)
        for name, val in (("q", q), ("k", k), ("v", v)):
            write_tensor(chip, prog.tensor(name), val)
        assert chip.run() == lpu.RunStatus.HALTED, chip.fault
        cycles.add(chip.cycles)
        got = read_tensor(chip, prog.tensor("out")).reshape(H, hd).astype(np.float64)
        qrope = rope_ref(q, step, hd) / np.sqrt(hd)
        np.testing.assert_allclose(read_tensor(chip, prog.tensor("qr")), qrope, rtol=1e-5, atol=1e-6)
        keys.append(rope_ref(k, step, hd).astype(np.float16).astype(np.float64))
        values.append(v.astype(np.float16).astype(np.float64))
        for h in range(H):
            g = h // (H // KV)
            qh = qrope[h * hd : (h + 1) * hd].astype(np.float16).astype(np.float64)
            sc = np.array([qh @ kk[g * hd : (g + 1) * hd] for kk in keys])
            p = np.exp(sc - sc.max())
            p /= p.sum()
            want = sum(pt * vv[g * hd : (g + 1) * hd] for pt, vv in zip(p, values))
            # P is rounded to fp16 (relative 2^-11) before it multiplies V, and the
            # result is stored as fp16: |error| <= 2^-10 max|v| + 2^-11 |out| + 1e-4.
            bound = 2.0**-10 * np.abs(values).max() + 2.0**-11 * np.abs(want) + 1e-4
            assert np.all(np.abs(got[h] - want) <= bound), (step, h, np.abs(got[h] - want).max())
    assert len(cycles) == 1, "every step takes the same number of cycles"
    np.testing.assert_array_equal(read_tensor(chip, prog.tensor("pos")), 7)


def test_attention_keeps_its_sum_plane_to_itself():
    """attend sums on the first East plane, loaded with ones once per program: a program
    that loads that plane too is refused, not run with the wrong weights."""
    cfg = lpu.ChipConfig("tsp_small")
    shape = A.AttentionShape(4, 2, 8, 16)
    ps = cfg.mxm_planes // 2

    def build(before: bool):
        b = Builder(cfg)
        st = A.new_state(b, shape)
        q = b.input("q", "float32", (32,), hemi="E")
        kc, vc = A.new_cache(b, st, "kc"), A.new_cache(b, st, "vc")
        out = b.output("out", "float16", (32,), hemi="E")
        if before:
            b.mxm_install(ps, 5)
        t = A.attend(b, st, q, kc, vc, out, start=A.prologue(b, st))
        b.mxm_install(ps, t + 10)
        A.attend(b, st, q, kc, vc, out, start=t + 20)

    for before in (True, False):
        with pytest.raises(lpu.InputError, match=f"plane {ps}"):
            build(before)


def test_attention_output_must_be_laid_out_as_the_query():
    """attend's result is one fp16 vector laid out as q (the output projection's input);
    a tensor of another type or size is refused when the program is built."""
    cfg = lpu.ChipConfig("tsp_v1")
    shape = A.AttentionShape(12, 6, 64, 32)  # q is 768 wide: 3 vectors
    for dtype, n, problem in (("float16", 12 * cfg.lanes, "of 12 vectors"), ("float32", 768, "is float32")):
        b = Builder(cfg)
        st = A.new_state(b, shape)
        q = b.input("q", "float32", (768,), hemi="E")
        kc, vc = A.new_cache(b, st, "kc"), A.new_cache(b, st, "vc")
        out = b.output("out", dtype, (n,), hemi="E")
        with pytest.raises(lpu.InputError, match=problem):
            A.attend(b, st, q, kc, vc, out)


def test_a_matmul_loading_during_attention_waits_for_its_plane():
    """A matmul placed after attend on attend's plane, allowed to load its weights from
    before attend started (``load_from``), must not load over the caches attend has
    installed there: attend records its use of the plane. Both results against numpy."""
    from dataclasses import replace

    from lpu.kernels.matmul import load_weights, matmul

    cfg = lpu.ChipConfig("tsp_small")
    H, KV, hd, S = 4, 2, 8, 16
    shape = A.AttentionShape(H, KV, hd, S)
    b = Builder(cfg)
    st = A.new_state(b, shape)
    q_in = b.input("q", "float32", (H * hd,), hemi="E")
    kv_in = b.input("kv", "float32", (KV * hd,), hemi="E")
    kc, vc = A.new_cache(b, st, "kc"), A.new_cache(b, st, "vc")
    out = b.output("out", "float16", (H * hd,), hemi="E")
    y = b.output("y", "float32", (24,), hemi="E")
    w = np.random.default_rng(1).standard_normal((H * hd, 24)).astype(np.float32)
    wt = replace(load_weights(b, "w", w), planes=[0])  # attend's plane
    t0 = A.prologue(b, st)
    t = A.append(b, st, kv_in, kc, start=t0)
    t = A.append(b, st, kv_in, vc, start=t)
    t = A.attend(b, st, q_in, kc, vc, out, start=t)
    matmul(b, out, wt, y, start=t, load_from=t0)
    prog = b.build()
    chip = lpu.Chip(cfg)
    chip.load(prog)
    rng = np.random.default_rng(2)
    q, kv = rng.standard_normal(H * hd).astype(np.float32), rng.standard_normal(KV * hd).astype(np.float32)
    write_tensor(chip, prog.tensor("q"), q)
    write_tensor(chip, prog.tensor("kv"), kv)
    assert chip.run() == lpu.RunStatus.HALTED, chip.fault
    # One position: each head's softmax weight is 1, so its output is its kv head's v.
    v16 = kv.astype(np.float16).astype(np.float64)
    want = np.concatenate([v16[(h // (H // KV)) * hd : (h // (H // KV) + 1) * hd] for h in range(H)])
    got = read_tensor(chip, prog.tensor("out")).astype(np.float64)
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=1e-3)
    w16 = w.astype(np.float16).astype(np.float64)
    np.testing.assert_allclose(read_tensor(chip, prog.tensor("y")), got @ w16, rtol=1e-4, atol=1e-4)
