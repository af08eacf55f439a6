"""Shape and hyper-parameters of a Llama-style decoder."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, Mapping

from ..errors import InputError

__all__ = ["ModelConfig"]


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of a Llama-architecture decoder.

    Attributes:
        dim: model (residual stream) width ``D``.
        hidden_dim: feed-forward width ``F`` (rows of ``w1``/``w3``).
        n_layers: number of decoder blocks ``L``.
        n_heads: number of query heads ``H``.
        n_kv_heads: number of key/value heads ``KV`` (grouped-query attention
            when smaller than ``n_heads``); query head ``h`` reads kv head
            ``h // (n_heads // n_kv_heads)``.
        vocab_size: number of token ids ``V``.
        max_seq_len: longest sequence (KV-cache length) the model supports.
        norm_eps: epsilon inside RMSNorm's square root.
        rope_theta: RoPE base frequency.
        head_dim: per-head width ``hd``; 0 or None (the default) means
            ``dim // n_heads``. After construction it is always the actual width.
        tie_embeddings: whether the classifier (``output``) shares the token
            embedding matrix.
    """

    dim: int
    hidden_dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    max_seq_len: int
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    head_dim: int = 0
    tie_embeddings: bool = False

    def __post_init__(self) -> None:
        for name in ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "max_seq_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InputError(f"ModelConfig.{name} must be an int, got {value!r}")
            if value <= 0:
                raise InputError(f"ModelConfig.{name} must be positive, got {value}")
        if self.head_dim is None or (self.head_dim == 0 and not isinstance(self.head_dim, bool)):
            if self.dim % self.n_heads != 0:
                raise InputError(
                    f"ModelConfig: dim ({self.dim}) is not divisible by n_heads ({self.n_heads}); "
                    "give head_dim explicitly"
                )
            object.__setattr__(self, "head_dim", self.dim // self.n_heads)
        if isinstance(self.head_dim, bool) or not isinstance(self.head_dim, int) or self.head_dim <= 0:
            raise InputError(f"ModelConfig.head_dim must be a positive int, got {self.head_dim!r}")
        if self.head_dim % 2 != 0:
            raise InputError(f"ModelConfig.head_dim must be even for RoPE, got {self.head_dim}")
        if self.n_heads % self.n_kv_heads != 0:
            raise InputError(
                f"ModelConfig: n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})"
            )
        eps = float(self.norm_eps)
        if not (math.isfinite(eps) and eps > 0):
            raise InputError(f"ModelConfig.norm_eps must be a positive finite number, got {self.norm_eps!r}")
        theta = float(self.rope_theta)
        if not (math.isfinite(theta) and theta > 0):
            raise InputError(f"ModelConfig.rope_theta must be a positive finite number, got {self.rope_theta!r}")
        object.__setattr__(self, "norm_eps", eps)
        object.__setattr__(self, "rope_theta", theta)
        object.__setattr__(self, "tie_embeddings", bool(self.tie_embeddings))

    # ------------------------------------------------------------------ derived sizes

    @property
    def q_dim(self) -> int:
        """Rows of ``wq``: ``n_heads * head_dim``."""
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        """Rows of ``wk`` and ``wv``: ``n_kv_heads * head_dim``."""
        return self.n_kv_heads * self.head_dim

    @property
    def n_rep(self) -> int:
        """How many query heads share one key/value head."""
        return self.n_heads // self.n_kv_heads

    def param_count(self) -> int:
        """Number of distinct parameters (the classifier counted once when tied)."""
        per_layer = 2 * self.dim + 2 * self.q_dim * self.dim + 2 * self.kv_dim * self.dim + 3 * self.hidden_dim * self.dim
        total = self.vocab_size * self.dim + self.n_layers * per_layer + self.dim
        if not self.tie_embeddings:
            total += self.vocab_size * self.dim
        return total

    def to_dict(self) -> Dict[str, Any]:
        """Plain ``dict`` of the fields (``head_dim`` resolved)."""
        return asdict(self)

    # ------------------------------------------------------------------ HF config.json

    @classmethod
    def from_hf_config(cls, cfg: Mapping[str, Any]) -> "ModelConfig":
        """Build from a Hugging Face ``config.json`` dict of a Llama model.

        Accepts the layouts written by transformers 4.x (``rope_theta`` at the
        top level, ``torch_dtype``) and 5.x (``rope_parameters`` holding
        ``rope_theta``, ``dtype``). An explicit ``head_dim`` is honoured.
        Features this package does not implement (attention or MLP biases, RoPE
        scaling, activations other than SiLU) raise ``ValueError``.
        """

        def need(key: str) -> Any:
            if key not in cfg or cfg[key] is None:
                raise InputError(f"HF config: required field {key!r} is missing")
            return cfg[key]

        model_type = cfg.get("model_type", "llama")
        if model_type != "llama":
            raise InputError(f"HF config: model_type {model_type!r} is not supported (only 'llama')")
        act = cfg.get("hidden_act", "silu")
        if act not in ("silu", "swish"):
            raise InputError(f"HF config: hidden_act {act!r} is not supported (only 'silu')")
        for flag in ("attention_bias", "mlp_bias"):
            if cfg.get(flag):
                raise InputError(f"HF config: {flag}=true is not supported")

        theta: Any = None
        rope_params = cfg.get("rope_parameters")
        if isinstance(rope_params, Mapping):
            rope_type = rope_params.get("rope_type", rope_params.get("type", "default"))
            if rope_type not in (None, "default"):
                raise InputError(f"HF config: rope_parameters.rope_type {rope_type!r} is not supported")
            theta = rope_params.get("rope_theta")
        scaling = cfg.get("rope_scaling")
        if isinstance(scaling, Mapping):
            rope_type = scaling.get("rope_type", scaling.get("type", "default"))
            if rope_type not in (None, "default"):
                raise InputError(f"HF config: rope_scaling {rope_type!r} is not supported")
            if theta is None:
                theta = scaling.get("rope_theta")
        if theta is None:
            theta = cfg.get("rope_theta", 10000.0)

        n_heads = int(need("num_attention_heads"))
        n_kv = cfg.get("num_key_value_heads")
        head_dim = cfg.get("head_dim")
        return cls(
            dim=int(need("hidden_size")),
            hidden_dim=int(need("intermediate_size")),
            n_layers=int(need("num_hidden_layers")),
            n_heads=n_heads,
            n_kv_heads=int(n_kv) if n_kv is not None else n_heads,
            vocab_size=int(need("vocab_size")),
            max_seq_len=int(cfg.get("max_position_embeddings", 2048)),
            norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            rope_theta=float(theta),
            head_dim=int(head_dim) if head_dim is not None else 0,
            tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        )

    def to_hf_config(self, **extra: Any) -> Dict[str, Any]:
        """A ``config.json`` dict readable by transformers 4.x and 5.x.

        ``rope_theta`` is written both at the top level (4.x) and inside
        ``rope_parameters`` (5.x). Keyword arguments are merged in last
        (e.g. ``bos_token_id=1``).
        """
        out: Dict[str, Any] = {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": self.vocab_size,
            "hidden_size": self.dim,
            "intermediate_size": self.hidden_dim,
            "num_hidden_layers": self.n_layers,
            "num_attention_heads": self.n_heads,
            "num_key_value_heads": self.n_kv_heads,
            "head_dim": self.head_dim,
            "max_position_embeddings": self.max_seq_len,
            "rms_norm_eps": self.norm_eps,
            "rope_theta": self.rope_theta,
            "rope_parameters": {"rope_theta": self.rope_theta, "rope_type": "default"},
            "hidden_act": "silu",
            "attention_bias": False,
            "mlp_bias": False,
            "tie_word_embeddings": self.tie_embeddings,
        }
        out.update(extra)
        return out
