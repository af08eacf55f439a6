"""Llama-style language models for the LPU emulator: formats, tokenizers, sampling.

Pure numpy; ``safetensors`` and ``tokenizers`` are used when installed. See
``docs/llm.md``.
"""

from __future__ import annotations

from pathlib import Path

from .config import ModelConfig
from .errors import ModelFormatError
from .sampling import Sampler, make_rng, sample
from .tokenizer import ByteTokenizer, HFTokenizer, Llama2cTokenizer, Tokenizer
from .weights import Model, load, load_hf, load_llama2c, save_hf, save_llama2c

__all__ = [
    "ModelConfig",
    "ModelFormatError",
    "Model",
    "load",
    "load_hf",
    "load_llama2c",
    "save_hf",
    "save_llama2c",
    "Tokenizer",
    "ByteTokenizer",
    "Llama2cTokenizer",
    "HFTokenizer",
    "sample",
    "make_rng",
    "Sampler",
    "bundled_path",
    "load_bundled",
    "Generator",
    "ChipModel",
]


def __getattr__(name: str):  # type: ignore[no-untyped-def]
    # generate and onchip import this package, so they load on first use (no cycle).
    if name == "Generator":
        from .generate import Generator

        return Generator
    if name == "ChipModel":
        from .onchip import ChipModel

        return ChipModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def bundled_path() -> Path:
    """Directory of the small model shipped with the package (HF layout, fp16)."""
    return Path(__file__).resolve().parent / "bundled"


def load_bundled(*, use_safetensors_package: bool | None = None) -> Model:
    """Load the bundled model (see ``bundled/README.md``)."""
    return load(bundled_path(), use_safetensors_package=use_safetensors_package)
