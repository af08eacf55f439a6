"""Text generation with the model running on the emulated chip.

>>> gen = Generator()                                    # the bundled model   # doctest: +SKIP
>>> for tok in gen.generate(prompt="def ", max_new_tokens=32):                # doctest: +SKIP
...     print(tok.text, end="")
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterator, List, Optional, Sequence, Union

import numpy as np

from .._core import ChipConfig
from ..errors import CapacityError, InputError
from .onchip import ChipModel, Progress, StepInfo
from .sampling import Sampler, validate_params
from .weights import Model, load

__all__ = ["Generator", "GeneratedToken", "GenerationStats"]


@dataclass(frozen=True)
class GeneratedToken:
    """One generated token, with the logits it was drawn from and what that step cost."""

    id: int
    #: Text this token completes (may be empty while a UTF-8 sequence is incomplete).
    text: str
    #: float32 logits of the step that produced this token.
    logits: np.ndarray = field(repr=False)
    #: Position of the token in the sequence.
    position: int
    #: Cycles, host time and MXM use of the decode step that produced the logits.
    step: StepInfo


@dataclass
class GenerationStats:
    """Totals over the decode steps of one :meth:`Generator.generate` call."""

    steps: int = 0
    cycles: int = 0
    host_seconds: float = 0.0
    clock_hz: int = 900_000_000
    mxm_utilization: float = 0.0

    def add(self, s: StepInfo) -> None:
        self.mxm_utilization = (self.mxm_utilization * self.steps + s.mxm_utilization) / (self.steps + 1)
        self.steps += 1
        self.cycles += s.cycles
        self.host_seconds += s.host_seconds
        self.clock_hz = s.clock_hz

    @property
    def cycles_per_token(self) -> float:
        return self.cycles / max(self.steps, 1)

    @property
    def host_tokens_per_second(self) -> float:
        """Decode steps per second of the emulator on this machine."""
        return self.steps / self.host_seconds if self.host_seconds else 0.0

    @property
    def chip_seconds_per_token(self) -> float:
        """Predicted latency of one decode step on the real chip at its clock."""
        return self.cycles_per_token / self.clock_hz

    @property
    def chip_tokens_per_second(self) -> float:
        return 1.0 / self.chip_seconds_per_token if self.steps else 0.0


def check_request(max_new_tokens: int, temperature: float, top_k: int, top_p: float) -> None:
    """Raise InputError for options :meth:`Generator.generate` cannot take."""
    validate_params(temperature, top_k, top_p)
    if max_new_tokens < 0:
        raise InputError(f"max_new_tokens must be >= 0, got {max_new_tokens}")


class Generator:
    """Generate text with a model whose every decode step runs on the emulated chip.

    ``model`` is a loaded :class:`~lpu.llm.Model`, a path that :func:`lpu.llm.load`
    reads (a Hugging Face directory or a llama2.c ``.bin``), or None for the bundled
    model. ``config`` picks the chip (default ``tsp_v1``); ``max_seq`` caps the
    context held in the on-chip KV cache (at most 320 positions).
    """

    def __init__(self, model: Union[Model, str, "os.PathLike[str]", None] = None, *,
                 config: Optional[ChipConfig] = None, max_seq: Optional[int] = None,
                 progress: Optional[Progress] = None, weights: str = "float16"):
        if model is None:
            from . import load_bundled

            model = load_bundled()
        elif not isinstance(model, Model):
            model = load(model)
        self.model = model
        self.tokenizer = model.tokenizer
        self.chip_model = ChipModel(model, config, max_seq=max_seq, progress=progress, weights=weights)
        self.stats = GenerationStats()
        self.tail = ""

    @property
    def max_seq(self) -> int:
        return self.chip_model.max_seq

    def generate(self, prompt: Optional[str] = None, token_ids: Optional[Sequence[int]] = None, *,
                 max_new_tokens: int = 64, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
                 seed: int = 0, stop_at_eos: bool = True) -> Iterator[GeneratedToken]:
        """Yield up to `max_new_tokens` tokens after the prompt (text, or token ids).

        The prompt is fed one token per decode step, as llama2.c does. temperature 0
        means greedy decoding by the chip's own argmax (the first maximum); otherwise
        tokens are sampled on the host from the chip's logits with a generator seeded
        by `seed` (top_k 0 and top_p 1 switch those filters off).
        """
        check_request(max_new_tokens, temperature, top_k, top_p)
        ids: List[int]
        if token_ids is not None:
            ids = [int(t) for t in token_ids]
        elif prompt is not None:
            if self.tokenizer is None:
                raise InputError("this model has no tokenizer: pass token_ids instead of a prompt")
            ids = self.tokenizer.encode(prompt, bos=True)
        else:
            raise InputError("give a prompt or token_ids")
        if not ids:
            raise InputError("the prompt is empty")
        if len(ids) + max_new_tokens > self.max_seq:
            raise CapacityError(f"{len(ids)} prompt tokens + {max_new_tokens} new ones exceed the "
                           f"{self.max_seq} positions of the on-chip KV cache")
        sampler = Sampler(temperature, top_k, top_p, seed) if temperature > 0 else None
        decoder = self.tokenizer.stream_decoder() if self.tokenizer is not None else None
        eos = getattr(self.tokenizer, "eos_id", None)
        cm = self.chip_model
        cm.reset()
        self.stats = GenerationStats()
        logits = np.zeros(0, np.float32)
        for tok in ids:
            logits = cm.step(tok)
            assert cm.last is not None
            self.stats.add(cm.last)
        for i in range(max_new_tokens):
            step = cm.last
            assert step is not None
            nxt = cm.argmax() if sampler is None else sampler(logits)
            text = decoder.push(nxt) if decoder is not None else ""
            yield GeneratedToken(nxt, text, logits, cm.pos, step)
            if stop_at_eos and nxt == eos:
                break
            if i + 1 == max_new_tokens or cm.pos >= cm.max_seq:
                break
            logits = cm.step(nxt)
            assert cm.last is not None
            self.stats.add(cm.last)
        # Text held back at the end (an incomplete UTF-8 sequence becomes U+FFFD).
        self.tail = decoder.flush() if decoder is not None else ""

    def complete(self, prompt: str, max_new_tokens: int = 64, **kw: object) -> str:
        """The generated text as one string."""
        text = "".join(t.text for t in self.generate(prompt, max_new_tokens=max_new_tokens, **kw))  # type: ignore[arg-type]
        return text + self.tail
