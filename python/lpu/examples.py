"""Small programs built in code, used by ``lpu demo`` and the tests."""

from __future__ import annotations

from ._core import ChipConfig, Program
from .asm import assemble

__all__ = ["vector_add_program"]


def vector_add_program(config: ChipConfig, rows: int = 8) -> Program:
    """z = x + y over `rows` int8 vectors: x in MEM W0, y in W1, z written to E0.

    Every issue cycle follows from the timing rule (a value produced at position p with
    latency d is consumed at position q at issue + d + |p - q|).
    """
    lat = dict(config.latencies)
    vxm = config.vxm_position()
    px, py, pz = config.mem_position(0, 0), config.mem_position(0, 1), config.mem_position(1, 0)
    t_add = lat["mem_read"] + (vxm - py)  # the earliest cycle y can reach the VXM
    t_x = t_add - lat["mem_read"] - (vxm - px)
    t_y = t_add - lat["mem_read"] - (vxm - py)
    t_z = t_add + lat["vxm_basic"] + (pz - vxm)
    more = f"    repeat {rows - 1}, 1\n" if rows > 1 else ""
    text = f"""
.chip {config.name}
.input x i8 [{rows},{config.lanes}] hemi=W addr=0 slices=0
.input y i8 [{rows},{config.lanes}] hemi=W addr=0 slices=1
.output z i8 [{rows},{config.lanes}] hemi=E addr=0 slices=0
.queue mem.W0.0
    @{t_x} read 0, s0e
{more}.queue mem.W1.0
    @{t_y} read 0, s1e
{more}.queue vxm.alu1
    @{t_add} add i8, s0e, s1e, s2e
{more}.queue mem.E0.0
    @{t_z} write 0, s2e
{more}"""
    return assemble(text, "<vector_add>")
