"""Tensor marshalling: numpy <-> on-chip layout, exact for every dtype and shape."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import lpu
from lpu.layout import read_tensor, write_tensor

DTYPES = ["int8", "int16", "int32", "float16", "float32"]
SMALL = lpu.ChipConfig("tsp_small")


def _tensor(dtype: str, shape, split: int = 1, kind: str = "input") -> lpu.Tensor:
    nb = np.dtype("float32" if dtype == "bfloat16" else dtype).itemsize if dtype != "bfloat16" else 2
    return lpu.Tensor("t", kind, dtype, list(shape), "E", 3, list(range(nb * split)), split)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(DTYPES), hnp.array_shapes(min_dims=0, max_dims=3, max_side=70), st.sampled_from([1, 2, 3]),
       st.data())
def test_round_trip_is_exact(dtype, shape, split, data):
    arr = data.draw(hnp.arrays(np.dtype(dtype), shape))
    t = _tensor(dtype, shape, split)
    if t.words(SMALL.lanes) + 3 > SMALL.addresses:
        return
    chip = lpu.Chip(SMALL)
    write_tensor(chip, t, arr)
    back = read_tensor(chip, t)
    assert back.dtype == arr.dtype and back.shape == arr.shape
    assert back.tobytes() == arr.tobytes()  # bit for bit, NaN payloads included


def test_bytes_land_where_the_layout_says():
    t = _tensor("int16", (2, 40), split=2)
    arr = (np.arange(80, dtype=np.int16) * 257).reshape(2, 40)
    chip = lpu.Chip(SMALL)
    write_tensor(chip, t, arr)
    lanes = SMALL.lanes
    for v in range(t.vectors(lanes)):
        row, part = divmod(v, 2)
        vals = np.zeros(lanes, np.int16)
        chunk = arr[row, part * lanes : (part + 1) * lanes]
        vals[: len(chunk)] = chunk
        for b in range(2):
            sl, addr = t.location(v, b)
            word = chip.read_sram("E", sl, addr)[0]
            np.testing.assert_array_equal(word, vals.view(np.uint8).reshape(-1, 2)[:, b])
    assert not chip.read_sram("E", 0, 3).flags.writeable


def test_bfloat16_rounds_to_nearest_even():
    t = _tensor("bfloat16", (4,))
    chip = lpu.Chip(SMALL)
    x = np.array([1.0, 1.0 + 2**-8, 1.0 + 3 * 2**-8, -3.14159], np.float32)
    write_tensor(chip, t, x)
    # bf16 keeps 8 significant bits: 1+2^-8 is a tie -> 1.0; 1+3*2^-8 -> 1+2^-6.
    np.testing.assert_array_equal(read_tensor(chip, t), np.array([1.0, 1.0, 1.0 + 2**-6, -3.140625], np.float32))


def test_bad_inputs_name_the_tensor():
    t = _tensor("float32", (2, 3))
    chip = lpu.Chip(SMALL)
    with pytest.raises(lpu.InputError, match="float32.*int64"):
        write_tensor(chip, t, np.zeros((2, 3), np.int64))
    with pytest.raises(lpu.InputError, match=r"shape \(2, 3\); got \(3, 2\)"):
        write_tensor(chip, t, np.zeros((3, 2), np.float32))
    big = lpu.Tensor("big", "input", "int8", [SMALL.addresses + 1, 4], "W", 0, [0])
    with pytest.raises(lpu.LpuError, match="slice has"):
        chip.write_tensor(big, np.zeros(4 * (SMALL.addresses + 1), np.uint8))


def test_runner_checks_names_dtypes_and_shapes():
    from lpu.examples import vector_add_program

    run = lpu.Runner(vector_add_program(SMALL, rows=2))
    x = np.ones((2, SMALL.lanes), np.int8)
    with pytest.raises(lpu.InputError, match=r"missing input\(s\) \['y'\]"):
        run(x=x)
    with pytest.raises(lpu.InputError, match=r"unknown input\(s\) \['z'\]"):
        run(x=x, y=x, z=x)
    with pytest.raises(lpu.InputError, match="int8"):
        run(x=x, y=x.astype(np.float32))
    out = run(x=x, y=x)
    np.testing.assert_array_equal(out["z"], x + x)
    assert run.last is not None and run.last.time_s == run.last.cycles / 900e6
