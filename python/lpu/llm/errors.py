"""Exceptions raised by :mod:`lpu.llm`."""

from __future__ import annotations

__all__ = ["ModelFormatError"]

# The base class lives on one line so that it can later become ``lpu.LpuError``
# (e.g. ``_Base = LpuError``) without touching anything else.
_Base = ValueError


class ModelFormatError(_Base):
    """A model or tokenizer file is missing, truncated or does not match its config.

    The message always names the offending file and, where there is one, the
    tensor or field.
    """
