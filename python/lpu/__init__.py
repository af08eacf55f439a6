"""lpu: a cycle-level emulator of Groq's Tensor Streaming Processor.

Build a :class:`Program` (assembly text via :func:`assemble`, or the program builder),
load it on a :class:`Chip`, feed numpy arrays and get results with exact cycle counts.
``lpu.Runner`` wraps this in one call; ``lpu.llm`` runs a small language model on the
emulated chip.
"""

from __future__ import annotations

from ._core import (
    BusyError,
    CapacityError,
    Chip,
    ChipConfig,
    ConfigError,
    Fault,
    FaultError,
    LpuError,
    Program,
    ProgramFormatError,
    RunStatus,
    Snapshot,
    Tensor,
)
from . import isa
from .asm import assemble, assemble_file
from .errors import AssemblyError, IncompleteRunError, InputError, ScheduleError
from .runner import RunInfo, Runner

__version__ = "0.1.0"

__all__ = [
    "AssemblyError",
    "IncompleteRunError",
    "InputError",
    "ScheduleError",
    "RunInfo",
    "Runner",
    "assemble",
    "assemble_file",
    "BusyError",
    "CapacityError",
    "Chip",
    "ChipConfig",
    "ConfigError",
    "Fault",
    "FaultError",
    "LpuError",
    "Program",
    "ProgramFormatError",
    "RunStatus",
    "Snapshot",
    "Tensor",
    "isa",
    "__version__",
]
