"""Choosing the next token from a logits vector (host side, numpy).

* ``temperature == 0``: greedy; the FIRST maximum wins ties (as run.c's
  ``sample_argmax`` and ``torch.argmax`` do).
* otherwise the logits are divided by ``temperature`` and softmaxed (in
  float64, after subtracting the maximum); then
* ``top_k > 0`` keeps the ``top_k`` most probable tokens, and
* ``top_p < 1`` keeps the smallest set of most probable tokens whose total
  probability reaches ``top_p`` (the token that crosses the threshold is kept),
  measured on the distribution renormalised after the ``top_k`` cut (the order
  transformers applies them in);
* the kept probabilities are renormalised and one token is drawn by inverse
  CDF with a single ``rng.random()`` coin.

Ranking is by probability with ties broken by the lower token id, so the
result is fully determined by the logits, the settings and the generator
state. Use :func:`make_rng` for a seeded ``numpy.random.Generator(PCG64(seed))``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..errors import InputError

__all__ = ["sample", "argmax_first", "probabilities", "make_rng", "validate_params", "Sampler"]


def make_rng(seed: int) -> np.random.Generator:
    """A deterministic generator: ``numpy.random.Generator(numpy.random.PCG64(seed))``."""
    return np.random.Generator(np.random.PCG64(seed))


def validate_params(temperature: float, top_k: int, top_p: float) -> None:
    """Raise ``ValueError`` unless ``temperature >= 0``, ``top_k >= 0`` (int) and ``0 < top_p <= 1``."""
    if not (isinstance(temperature, (int, float, np.floating)) and np.isfinite(temperature) and temperature >= 0):
        raise InputError(f"temperature must be a finite number >= 0, got {temperature!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 0:
        raise InputError(f"top_k must be an int >= 0 (0 disables it), got {top_k!r}")
    if not (isinstance(top_p, (int, float, np.floating)) and 0 < top_p <= 1):
        raise InputError(f"top_p must be in (0, 1] (1 disables it), got {top_p!r}")


def _check_logits(logits: np.ndarray) -> np.ndarray:
    x = np.asarray(logits)
    if x.ndim != 1 or x.size == 0:
        raise InputError(f"logits must be a non-empty 1-D array, got shape {x.shape}")
    if np.isnan(x).any():
        raise InputError("logits contain NaN")
    if not np.isfinite(x.max()):
        raise InputError("logits have no finite maximum (all -inf, or +inf present)")
    return x


def argmax_first(logits: np.ndarray) -> int:
    """Index of the first maximum of ``logits``."""
    return int(np.argmax(_check_logits(logits)))


def probabilities(logits: np.ndarray, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> np.ndarray:
    """The float64 distribution that :func:`sample` draws from (``temperature > 0``)."""
    validate_params(temperature, top_k, top_p)
    if temperature == 0:
        raise InputError("probabilities() needs temperature > 0 (temperature 0 is greedy)")
    x = _check_logits(logits).astype(np.float64)
    z = (x - x.max()) / float(temperature)
    p = np.exp(z)
    p /= p.sum()
    n = p.size
    if 0 < top_k < n or top_p < 1.0:
        order = np.argsort(-p, kind="stable")  # most probable first, lower id first on ties
        keep = n
        if 0 < top_k < n:
            keep = int(top_k)
        if top_p < 1.0:
            csum = np.cumsum(p[order[:keep]])
            total = csum[-1]
            # first position where the running total reaches top_p of what is kept
            cut = int(np.searchsorted(csum, top_p * total, side="left")) + 1
            keep = min(keep, cut)
        mask = np.zeros(n, dtype=bool)
        mask[order[:keep]] = True
        p = np.where(mask, p, 0.0)
        p /= p.sum()
    return p


def sample(
    logits: np.ndarray,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    rng: Optional[np.random.Generator] = None,
) -> int:
    """Pick a token id from ``logits`` (see the module docstring for the rules).

    Args:
        logits: 1-D array of scores, one per vocabulary entry.
        temperature: 0 for greedy, else the softmax temperature.
        top_k: keep only the ``top_k`` best tokens (0 = all).
        top_p: nucleus threshold in (0, 1] (1 = all).
        rng: the generator to draw from; required when ``temperature > 0``.
            Exactly one ``rng.random()`` call is made per sampled token.
    """
    validate_params(temperature, top_k, top_p)
    if temperature == 0:
        return argmax_first(logits)
    if rng is None:
        raise InputError("sample() with temperature > 0 needs rng (e.g. lpu.llm.sampling.make_rng(seed))")
    p = probabilities(logits, temperature, top_k, top_p)
    cdf = np.cumsum(p)
    u = rng.random() * cdf[-1]
    idx = int(np.searchsorted(cdf, u, side="right"))
    if idx >= p.size or p[idx] == 0:  # rounding at the very top of the CDF
        idx = int(np.flatnonzero(p)[-1])
    return idx


@dataclass
class Sampler:
    """Sampling settings plus their own seeded generator.

    ``Sampler(temperature=0.8, top_p=0.9, seed=1)(logits)`` returns a token id;
    two samplers with equal settings and seed give equal sequences.
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        validate_params(self.temperature, self.top_k, self.top_p)
        self.rng = make_rng(self.seed)

    def __call__(self, logits: np.ndarray) -> int:
        """Sample one token id from ``logits``."""
        return sample(logits, self.temperature, self.top_k, self.top_p, self.rng)
