"""Exceptions raised by :mod:`lpu.llm`."""

from __future__ import annotations

__all__ = ["ModelFormatError"]

from ..errors import LpuError


class ModelFormatError(LpuError, ValueError):
    """A model or tokenizer file is missing, truncated or does not match its config.

    The message always names the offending file and, where there is one, the
    tensor or field.
    """
