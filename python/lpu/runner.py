"""Run a program in one call, in the style of Groq's ``tsp_runner``.

>>> run = Runner(program)            # doctest: +SKIP
>>> out = run(x=x, w=w)              # doctest: +SKIP
>>> out["y"], run.last.cycles        # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

import numpy as np

from ._core import Chip, Program, RunStatus
from .errors import IncompleteRunError, InputError
from .files import PathLike
from .layout import check_array, read_tensor, write_tensor

__all__ = ["Runner", "RunInfo"]


@dataclass(frozen=True)
class RunInfo:
    """What one run cost: cycles, the predicted time at the chip's clock, and counters."""

    cycles: int
    clock_hz: int
    stats: Dict[str, Any] = field(repr=False)

    @property
    def time_s(self) -> float:
        """Predicted wall time on the real chip at the configured clock."""
        return self.cycles / self.clock_hz

    @property
    def utilization(self) -> Dict[str, float]:
        """Busy fraction of each functional unit."""
        return {u: v["utilization"] for u, v in self.stats["units"].items()}


class Runner:
    """Callable wrapper around a program: named numpy inputs in, named outputs out.

    Each call writes the inputs into SRAM, runs the program from its entry point and
    returns a dict of the output tensors. ``last`` describes the most recent run.
    """

    def __init__(
        self,
        program: Program,
        chip: Optional[Chip] = None,
        entry: Optional[str] = None,
        max_cycles: Optional[int] = None,
        trace: Optional[PathLike] = None,
        trace_window: Optional[Tuple[int, int]] = None,
    ):
        self.program = program
        self.chip = chip if chip is not None else Chip(program.config)
        self.entry = entry
        self.max_cycles = max_cycles
        #: Write a Chrome trace of each run here (see ``Chip.run``).
        self.trace = trace
        self.trace_window = trace_window
        self.inputs = {t.name: t for t in program.tensors if t.kind == "input"}
        self.outputs = {t.name: t for t in program.tensors if t.kind == "output"}
        self.last: Optional[RunInfo] = None
        self.chip.load(program, entry)

    def __call__(self, **inputs: Any) -> Dict[str, np.ndarray]:
        unknown = sorted(set(inputs) - set(self.inputs))
        missing = sorted(set(self.inputs) - set(inputs))
        if unknown or missing:
            parts = []
            if unknown:
                parts.append(f"unknown input(s) {unknown}")
            if missing:
                parts.append(f"missing input(s) {missing}")
            raise InputError(f"{'; '.join(parts)}; the program takes {sorted(self.inputs)}")
        # Every input is checked before the chip is touched, so a bad one leaves it as
        # the last run left it.
        arrays = {name: check_array(self.inputs[name], value) for name, value in inputs.items()}
        self.chip.reset()
        for name, arr in arrays.items():
            write_tensor(self.chip, self.inputs[name], arr)
        kw: Dict[str, Any] = {}
        if self.max_cycles is not None:
            kw["max_cycles"] = self.max_cycles
        if self.trace is not None:
            kw.update(trace=self.trace, trace_window=self.trace_window)
        status = self.chip.run(**kw)
        if status == RunStatus.FAULT:
            self.chip.raise_for_fault()  # raises FaultError with cycle, queue and instruction
        if status != RunStatus.HALTED:
            raise IncompleteRunError("the program", status, self.chip.cycle)
        stats = self.chip.stats()
        self.last = RunInfo(stats["cycles"], stats["clock_hz"], stats)
        return {name: read_tensor(self.chip, t) for name, t in self.outputs.items()}

