"""The program file: round trips, and every kind of damage raising ProgramFormatError."""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lpu
from lpu import isa


def sample_program(cfg: lpu.ChipConfig) -> lpu.Program:
    x = lpu.Tensor("x", "input", "float32", [3, 40], "W", 0, [0, 1, 2, 3])
    y = lpu.Tensor("y", "output", "int8", [2, 2, 64], "E", 8, [5, 6], split=2)
    return lpu.Program(
        cfg,
        {
            "mem.W0.0": [isa.encode("read", [0, 0]), isa.encode("repeat", [2, 1])],
            "vxm.alu0": [isa.encode("nop", [5]), isa.encode("relu", [4, 0, 127])],
        },
        inits=[("E", 3, 10, bytes(range(cfg.lanes)) * 2)],
        tensors=[x, y],
        entries={"main": {"mem.W0.0": 0}, "late": {"mem.W0.0": 1}},
        meta={"source": "test", "note": 'quote " and \\ backslash'},
    )


def test_round_trip_bytes_and_file(small, tmp_path):
    p = sample_program(small)
    b = p.to_bytes()
    q = lpu.Program.from_bytes(b)
    assert q == p and q.to_bytes() == b
    assert q.config == small
    assert q.queue_names == ["mem.W0.0", "vxm.alu0"]
    assert q.instructions("vxm.alu0") == ["nop 5", "relu f32, s0e, -"]
    assert [t.name for t in q.tensors] == ["x", "y"]
    assert q.tensor("y").split == 2 and q.tensor("y").slices == [5, 6]
    assert q.entries == {"late": {"mem.W0.0": 1}, "main": {"mem.W0.0": 0}}
    assert q.meta["note"] == 'quote " and \\ backslash'
    assert q.inits == [("E", 3, 10, bytes(range(small.lanes)) * 2)]
    path = tmp_path / "p.lpu"
    p.save(path)
    assert lpu.Program.load(path) == p
    assert not [f for f in os.listdir(tmp_path) if f != "p.lpu"], "no temporary files left"


def test_every_truncation_raises_with_offset(small):
    b = sample_program(small).to_bytes()
    for n in range(len(b)):
        with pytest.raises(lpu.ProgramFormatError) as e:
            lpu.Program.from_bytes(b[:n])
        assert 0 <= e.value.offset <= n
        assert e.value.field


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_random_byte_flips_are_caught(data):
    b = bytearray(sample_program(lpu.ChipConfig("tsp_small")).to_bytes())
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(b) - 1), st.integers(1, 255)), min_size=1, max_size=4, unique_by=lambda f: f[0]))
    for pos, x in flips:
        b[pos] ^= x
    with pytest.raises(lpu.ProgramFormatError):
        lpu.Program.from_bytes(bytes(b))


def test_wrong_magic_version_and_config(small):
    b = bytearray(sample_program(small).to_bytes())
    bad = bytearray(b)
    bad[:4] = b"ELF\x7f"
    with pytest.raises(lpu.ProgramFormatError, match="magic") as e:
        lpu.Program.from_bytes(bytes(bad))
    assert (e.value.offset, e.value.field) == (0, "magic")
    bad = bytearray(b)
    bad[8:10] = struct.pack("<H", 2)
    with pytest.raises(lpu.ProgramFormatError, match="version 2.0 is not supported") as e:
        lpu.Program.from_bytes(bytes(bad))
    assert (e.value.offset, e.value.field) == (8, "version.major")
    # A program for the small chip does not load on a tsp_v1.
    with pytest.raises(lpu.ConfigError, match="tsp_small"):
        lpu.Chip(lpu.ChipConfig("tsp_v1")).load(sample_program(small))


def test_config_section_damage_names_the_field(small):
    # Rewrite the stored superlanes value to 0 and fix the CRC: the config is rejected.
    import zlib

    b = bytearray(sample_program(small).to_bytes())
    key = b"superlanes"
    at = b.index(key) + len(key)
    b[at : at + 8] = struct.pack("<Q", 0)
    body = bytes(b[:-4])
    b[-4:] = struct.pack("<I", zlib.crc32(body))
    with pytest.raises(lpu.ProgramFormatError, match="superlanes") as e:
        lpu.Program.from_bytes(bytes(b))
    assert e.value.field == "config"


def test_invalid_programs_are_refused_at_construction(small):
    with pytest.raises(lpu.ProgramFormatError, match="no queue named"):
        lpu.Program(small, {"mem.W99.0": [isa.encode("read", [0, 0])]})
    with pytest.raises(lpu.ProgramFormatError, match="large ALU"):
        lpu.Program(small, {"vxm.alu1": [isa.encode("exp", [4, 0, 127])]})
    with pytest.raises(lpu.ProgramFormatError, match="beyond"):
        lpu.Program(small, {"mem.W0.0": [isa.encode("read", [small.addresses, 0])]})
    with pytest.raises(lpu.ProgramFormatError, match="overlap"):
        lpu.Program(small, {}, inits=[("W", 0, 0, bytes(64)), ("W", 0, 1, bytes(32))])


def test_tensor_layout_locations(small):
    t = lpu.Tensor("t", "input", "int16", [5, 40], "W", 7, [0, 1, 2, 3], split=2)
    # 40 elements need 2 vectors of 32 lanes: 10 vectors, 2 planes, 2-way split.
    assert t.vectors(small.lanes) == 10 and t.words(small.lanes) == 5
    assert t.location(0, 0) == (0, 7) and t.location(1, 0) == (1, 7)
    assert t.location(3, 1) == (3, 8)
    with pytest.raises(lpu.LpuError):
        t.location(0, 2)
    np.testing.assert_equal(lpu.Tensor("s", "input", "int8", [], "E", 0, [0]).vectors(320), 1)
