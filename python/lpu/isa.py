"""The instruction set, as defined by the single table in the native core.

``instructions()`` lists every instruction with its unit, mnemonic, operand fields
(name, kind, width, bit position), opcode and functional latency. Nothing here lists
instructions by hand: everything is read from the core's table.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, List, Optional, Sequence, Tuple

from . import _core

__all__ = [
    "Field",
    "Instruction",
    "instructions",
    "instruction",
    "encode",
    "decode",
    "disassemble",
    "markdown",
    "LARGE_ALUS",
    "UNITS",
]

#: The VXM ALUs that can run transcendentals, casts, max/min and ReLU.
LARGE_ALUS: Tuple[int, ...] = tuple(_core.LARGE_ALUS)
#: Functional units, ICU first.
UNITS: Tuple[str, ...] = ("ICU", "MEM", "VXM", "MXM", "SXM", "C2C")


@dataclass(frozen=True)
class Field:
    """One operand field: its name, kind, width in bits, position in the word, and
    whether `repeat` adds one to it on each re-issue."""

    name: str
    kind: str
    bits: int
    shift: int
    advances: bool


@dataclass(frozen=True)
class Instruction:
    """One instruction of the ISA."""

    mnemonic: str
    unit: str
    opcode: int
    fields: Tuple[Field, ...]
    #: Name of the ChipConfig latency that is its d_func, or None for queue control.
    latency: Optional[str]
    #: Element types its ``dt`` operand accepts (empty if it has none).
    dtypes: Tuple[str, ...]
    #: Runs only on a large VXM ALU.
    large_alu: bool
    #: Decoded and timed but without other modelled effect (C2C, power).
    timing_only: bool
    doc: str

    def latency_cycles(self, config: "_core.ChipConfig") -> int:
        """The functional latency on a chip configuration (0 for queue control)."""
        if self.latency is None:
            return 0
        return dict(config.latencies)[self.latency]

    def encode(self, *operands: int) -> int:
        """Encode with raw operand values, one per field."""
        return _core.encode(self.mnemonic, list(operands))

    @property
    def syntax(self) -> str:
        """Assembly syntax, e.g. ``read addr, dst``."""
        names = ", ".join(f.name for f in self.fields)
        return f"{self.mnemonic} {names}".rstrip()


@lru_cache(maxsize=None)
def _table() -> Tuple[Instruction, ...]:
    out = []
    for mn, unit, opcode, fields, lat, dtypes, large, timing, doc in _core.isa_table():
        shift = 8
        fs = []
        for name, kind, bits, advances in fields:
            fs.append(Field(name, kind, bits, shift, advances))
            shift += bits
        out.append(
            Instruction(mn, unit, opcode, tuple(fs), lat, tuple(dtypes), large, timing, doc)
        )
    return tuple(out)


@lru_cache(maxsize=None)
def _by_mnemonic() -> Dict[str, Instruction]:
    return {i.mnemonic: i for i in _table()}


def instructions(unit: Optional[str] = None) -> List[Instruction]:
    """Every instruction of the ISA (optionally only those of one unit)."""
    return [i for i in _table() if unit is None or i.unit == unit.upper()]


def instruction(mnemonic: str) -> Instruction:
    """The instruction with this mnemonic; InputError if there is none."""
    try:
        return _by_mnemonic()[mnemonic]
    except KeyError:
        raise _core.InputError(f"unknown instruction '{mnemonic}' (see docs/isa.md)") from None


def encode(mnemonic: str, operands: Sequence[int]) -> int:
    """Encode an instruction from raw operand values."""
    return _core.encode(mnemonic, list(operands))


def decode(word: int) -> Tuple[str, List[int]]:
    """Decode an instruction word into (mnemonic, operand values)."""
    return _core.decode(word)


def disassemble(word: int) -> str:
    """Assembly text of one instruction word."""
    return _core.disassemble_word(word)


def markdown() -> str:
    """The ISA reference (``docs/isa.md``), generated from the table."""
    return _core.isa_markdown()
