"""The exception hierarchy. Every error lpu raises is an :class:`LpuError`.

The classes raised by the native core (``ConfigError``, ``ProgramFormatError``,
``CapacityError``, ``FaultError``, ``InputError``) are defined there; the ones raised by Python code
are defined here under the same base.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

from ._core import BusyError, CapacityError, ConfigError, FaultError, InputError, LpuError, ProgramFormatError

__all__ = [
    "LpuError",
    "ConfigError",
    "ProgramFormatError",
    "CapacityError",
    "FaultError",
    "BusyError",
    "AssemblyError",
    "SourceError",
    "ScheduleError",
    "InputError",
    "IncompleteRunError",
]


@dataclass(frozen=True)
class SourceError:
    """One problem in assembly source: where, the offending text, and what was expected."""

    path: str
    line: int
    col: int
    text: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}:{self.col}"
        shown = f" near '{self.text}'" if self.text else ""
        return f"{where}: {self.message}{shown}"


#: How many problems an AssemblyError's message lists (``errors`` has them all).
SHOWN_ERRORS = 20


class AssemblyError(LpuError):
    """Assembly source with errors. ``errors`` lists every problem found, in order."""

    def __init__(self, errors: Sequence[SourceError]):
        self.errors: List[SourceError] = list(errors)
        count = len(self.errors)
        head = f"{count} error{'s' if count != 1 else ''} in assembly:\n"
        shown = [str(e) for e in self.errors[:SHOWN_ERRORS]]
        if count > SHOWN_ERRORS:  # all of them stay in .errors
            shown.append(f"... and {count - SHOWN_ERRORS} more")
        super().__init__(head + "\n".join(shown))

    def __reduce__(self) -> Any:
        return (type(self), (self.errors,))


class ScheduleError(LpuError):
    """A program built with the builder has a timing conflict (stream or bank)."""

    def __init__(self, message: str, first: Optional[str] = None, second: Optional[str] = None):
        self.first = first
        self.second = second
        super().__init__(message)

    def __reduce__(self) -> Any:
        return (type(self), (str(self), self.first, self.second))


class IncompleteRunError(LpuError):
    """A call that runs the chip to the end (``Runner``, ``generate``) saw it stop early.

    ``status`` is the :class:`RunStatus` it stopped with (a cycle limit or a breakpoint)
    and ``cycle`` the cycle reached; the chip is left as it stopped, so it can be
    inspected or resumed with ``Chip.run``.
    """

    def __init__(self, what: str, status: Any, cycle: int):
        self.what = what
        self.status = status
        self.cycle = cycle
        super().__init__(f"{what} did not finish: stopped with {status} at cycle {cycle}")

    def __reduce__(self) -> Any:
        return (type(self), (self.what, self.status, self.cycle))
