"""Loading and saving Llama-style models: Hugging Face directories and llama2.c checkpoints.

Every loader returns a :class:`Model` whose ``weights`` use one canonical set
of names, float32 arrays in PyTorch ``nn.Linear`` layout (out x in)::

    tok_embeddings            [V, D]
    layers.{i}.attention_norm [D]
    layers.{i}.wq             [H*hd, D]
    layers.{i}.wk             [KV*hd, D]
    layers.{i}.wv             [KV*hd, D]
    layers.{i}.wo             [D, H*hd]
    layers.{i}.ffn_norm       [D]
    layers.{i}.w1             [F, D]   (gate)
    layers.{i}.w2             [D, F]   (down)
    layers.{i}.w3             [F, D]   (up)
    norm                      [D]
    output                    [V, D]   (the same array as tok_embeddings when tied)

RoPE convention of the canonical layout: Hugging Face ``rotate_half``. Inside
each head of width ``hd`` the rotated pairs are ``(j, j + hd/2)`` for ``j <
hd/2`` with angle ``pos * theta**(-2j/hd)``. llama2.c rotates the adjacent
pairs ``(2j, 2j+1)`` instead, with the same angles. Because attention only
uses ``q . k`` per head, reordering the rows of ``wq`` and ``wk`` inside each
head turns one convention into the other exactly: the llama2.c loader moves
row ``2j`` of a head to row ``j`` and row ``2j+1`` to row ``j + hd/2`` (``wq``
per query head, ``wk`` per key/value head), and the writer does the inverse.
A canonical model loaded from a llama2.c file therefore computes the same
logits as llama2.c's ``run.c`` on that file.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..errors import InputError
from ..files import PathLike, atomic_path, atomic_write_bytes
from .config import ModelConfig
from .errors import ModelFormatError
from .safetensors_io import read_safetensors, write_safetensors
from .tokenizer import (
    ByteTokenizer,
    HFTokenizer,
    Llama2cTokenizer,
    Tokenizer,
    load_hf_tokenizer,
    write_tokenizer_bin,
)

__all__ = [
    "Model",
    "load",
    "load_hf",
    "load_llama2c",
    "save_hf",
    "save_llama2c",
    "expected_shapes",
    "hf_name_map",
    "interleaved_to_half",
    "half_to_interleaved",
]


_LAYER_TENSORS = ("attention_norm", "wq", "wk", "wv", "wo", "ffn_norm", "w1", "w2", "w3")
_HF_LAYER_NAMES = {
    "attention_norm": "input_layernorm.weight",
    "wq": "self_attn.q_proj.weight",
    "wk": "self_attn.k_proj.weight",
    "wv": "self_attn.v_proj.weight",
    "wo": "self_attn.o_proj.weight",
    "ffn_norm": "post_attention_layernorm.weight",
    "w1": "mlp.gate_proj.weight",
    "w2": "mlp.down_proj.weight",
    "w3": "mlp.up_proj.weight",
}


def expected_shapes(config: ModelConfig) -> Dict[str, Tuple[int, ...]]:
    """Canonical tensor name -> shape for ``config`` (``output`` included)."""
    c = config
    shapes: Dict[str, Tuple[int, ...]] = {"tok_embeddings": (c.vocab_size, c.dim)}
    for i in range(c.n_layers):
        p = f"layers.{i}."
        shapes[p + "attention_norm"] = (c.dim,)
        shapes[p + "wq"] = (c.q_dim, c.dim)
        shapes[p + "wk"] = (c.kv_dim, c.dim)
        shapes[p + "wv"] = (c.kv_dim, c.dim)
        shapes[p + "wo"] = (c.dim, c.q_dim)
        shapes[p + "ffn_norm"] = (c.dim,)
        shapes[p + "w1"] = (c.hidden_dim, c.dim)
        shapes[p + "w2"] = (c.dim, c.hidden_dim)
        shapes[p + "w3"] = (c.hidden_dim, c.dim)
    shapes["norm"] = (c.dim,)
    shapes["output"] = (c.vocab_size, c.dim)
    return shapes


def hf_name_map(config: ModelConfig) -> Dict[str, str]:
    """Canonical name -> ``LlamaForCausalLM`` state-dict name."""
    m = {"tok_embeddings": "model.embed_tokens.weight", "norm": "model.norm.weight", "output": "lm_head.weight"}
    for i in range(config.n_layers):
        for short, hf in _HF_LAYER_NAMES.items():
            m[f"layers.{i}.{short}"] = f"model.layers.{i}.{hf}"
    return m


def interleaved_to_half(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Reorder the rows of a q/k projection from llama2.c RoPE pairs to HF pairs.

    Within each head, row ``2j`` goes to ``j`` and row ``2j+1`` to ``j + hd/2``.
    """
    out_dim, in_dim = w.shape
    hd = out_dim // n_heads
    return np.ascontiguousarray(w.reshape(n_heads, hd // 2, 2, in_dim).transpose(0, 2, 1, 3).reshape(out_dim, in_dim))


def half_to_interleaved(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Inverse of :func:`interleaved_to_half` (HF layout -> llama2.c layout)."""
    out_dim, in_dim = w.shape
    hd = out_dim // n_heads
    return np.ascontiguousarray(w.reshape(n_heads, 2, hd // 2, in_dim).transpose(0, 2, 1, 3).reshape(out_dim, in_dim))


@dataclass(eq=False)
class Model:
    """A loaded model: config, canonical float32 weights, tokenizer and origin.

    Attributes:
        config: the shape and hyper-parameters.
        weights: canonical name -> float32 array (see the module docstring).
            When ``config.tie_embeddings`` is true, ``weights["output"]`` is the
            very same array as ``weights["tok_embeddings"]``.
        tokenizer: a :class:`~lpu.llm.tokenizer.Tokenizer`, or None when the
            model was loaded with ``require_tokenizer=False`` and none was found.
        source: where the model came from (a path, or a description).
    """

    config: ModelConfig
    weights: Dict[str, np.ndarray]
    tokenizer: Optional[Tokenizer] = None
    source: str = ""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check names, shapes and dtypes; fill ``output`` for tied models.

        Raises :class:`ModelFormatError` naming ``source`` and the tensor.
        """
        src = self.source or "<model>"
        if self.config.tie_embeddings:
            emb = self.weights.get("tok_embeddings")
            out = self.weights.get("output")
            if out is not None and out is not emb and emb is not None and not np.array_equal(out, emb):
                raise ModelFormatError(f"{src}: tie_embeddings is set but tensor 'output' differs from 'tok_embeddings'")
            if emb is not None:
                self.weights["output"] = emb
        shapes = expected_shapes(self.config)
        for name, shape in shapes.items():
            arr = self.weights.get(name)
            if arr is None:
                raise ModelFormatError(f"{src}: tensor {name!r} is missing")
            if tuple(arr.shape) != shape:
                raise ModelFormatError(f"{src}: tensor {name!r} has shape {tuple(arr.shape)}, expected {shape}")
            if arr.dtype != np.float32:
                self.weights[name] = arr = np.ascontiguousarray(arr, dtype=np.float32)
            if not np.all(np.isfinite(arr)):
                raise ModelFormatError(f"{src}: tensor {name!r} contains NaN or infinite values")
        extra = sorted(set(self.weights) - set(shapes))
        if extra:
            raise ModelFormatError(f"{src}: unexpected tensors {extra[:5]}{' ...' if len(extra) > 5 else ''}")
        if self.config.tie_embeddings:
            self.weights["output"] = self.weights["tok_embeddings"]

    def layer(self, i: int) -> Dict[str, np.ndarray]:
        """The nine tensors of layer ``i`` under their short names (``wq``, ``w1``, ...)."""
        if not 0 <= i < self.config.n_layers:
            raise IndexError(f"layer {i} out of range (model has {self.config.n_layers})")
        return {t: self.weights[f"layers.{i}.{t}"] for t in _LAYER_TENSORS}

    def nbytes(self) -> int:
        """Bytes of float32 weight storage (a tied classifier counted once)."""
        seen: Dict[int, int] = {}
        for arr in self.weights.values():
            seen[id(arr)] = arr.nbytes
        return sum(seen.values())


# --------------------------------------------------------------------------- dispatch


def load(
    path: PathLike,
    tokenizer_path: Optional[PathLike] = None,
    *,
    use_safetensors_package: Optional[bool] = None,
    require_tokenizer: bool = True,
) -> Model:
    """Load a model, choosing the format from ``path``.

    * a directory containing ``config.json`` (or a ``config.json`` /
      ``*.safetensors`` file inside one): Hugging Face format, see :func:`load_hf`;
    * a file ending in ``.bin``: llama2.c checkpoint, see :func:`load_llama2c`
      (``tokenizer_path`` defaults to ``tokenizer.bin`` beside it).

    Raises :class:`ModelFormatError` for missing, truncated or inconsistent files.
    """
    p = Path(path)
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ModelFormatError(f"{p / 'config.json'}: file not found (a Hugging Face model directory needs it)")
        return load_hf(p, use_safetensors_package=use_safetensors_package, require_tokenizer=require_tokenizer)
    if p.suffix == ".bin":
        return load_llama2c(p, tokenizer_path, require_tokenizer=require_tokenizer)
    if p.name == "config.json" or p.suffix == ".safetensors":
        return load_hf(p.parent, use_safetensors_package=use_safetensors_package, require_tokenizer=require_tokenizer)
    if not p.exists():
        raise ModelFormatError(f"{p}: no such file or directory")
    raise ModelFormatError(f"{p}: unknown model format (expected a directory with config.json, or a llama2.c .bin file)")


# --------------------------------------------------------------------------- Hugging Face


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFormatError(f"{path}: file not found") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFormatError(f"{path}: not valid JSON ({e})") from None


def _hf_tensors(directory: Path, use_package: Optional[bool]) -> Tuple[Dict[str, np.ndarray], Dict[str, Path]]:
    """All tensors of a HF directory (single file or sharded) and the file each came from."""
    single = directory / "model.safetensors"
    index = directory / "model.safetensors.index.json"
    if single.is_file():
        files = [single]
    elif index.is_file():
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ModelFormatError(f"{index}: no 'weight_map' object")
        files = [directory / f for f in sorted(set(weight_map.values()))]
    else:
        hint = " (only safetensors weights are supported)" if (directory / "pytorch_model.bin").exists() else ""
        raise ModelFormatError(f"{single}: file not found{hint}")
    tensors: Dict[str, np.ndarray] = {}
    origin: Dict[str, Path] = {}
    for f in files:
        if not f.is_file():
            raise ModelFormatError(f"{f}: file not found (listed in {index.name})")
        part, _ = read_safetensors(f, use_package=use_package)
        for k, v in part.items():
            tensors[k] = v
            origin[k] = f
    return tensors, origin


def load_hf(
    directory: PathLike,
    *,
    use_safetensors_package: Optional[bool] = None,
    require_tokenizer: bool = True,
) -> Model:
    """Load a Hugging Face ``LlamaForCausalLM`` directory.

    Reads ``config.json`` and ``model.safetensors`` (or the shards listed in
    ``model.safetensors.index.json``); tensors may be F32, F16 or BF16 and are
    converted to float32. ``use_safetensors_package`` selects the reader (see
    :func:`lpu.llm.safetensors_io.read_safetensors`). The tokenizer is chosen by
    :func:`lpu.llm.tokenizer.load_hf_tokenizer`, or by an ``lpu_tokenizer``
    entry ``{"type": "llama2c", "file": "tokenizer.bin"}`` written by
    :func:`save_hf`.
    """
    directory = Path(directory)
    cfg_path = directory / "config.json"
    raw_cfg = _read_json(cfg_path)
    if not isinstance(raw_cfg, dict):
        raise ModelFormatError(f"{cfg_path}: not a JSON object")
    try:
        config = ModelConfig.from_hf_config(raw_cfg)
    except ValueError as e:
        raise ModelFormatError(f"{cfg_path}: {e}") from None

    tensors, origin = _hf_tensors(directory, use_safetensors_package)
    names = hf_name_map(config)
    shapes = expected_shapes(config)
    weights: Dict[str, np.ndarray] = {}
    for canon, hf in names.items():
        if canon == "output" and config.tie_embeddings:
            continue
        arr = tensors.pop(hf, None)
        where = directory / "model.safetensors"
        if arr is None:
            raise ModelFormatError(f"{where}: tensor {hf!r} is missing")
        if tuple(arr.shape) != shapes[canon]:
            raise ModelFormatError(
                f"{origin[hf]}: tensor {hf!r} has shape {tuple(arr.shape)}, expected {shapes[canon]} from config.json"
            )
        weights[canon] = np.ascontiguousarray(arr, dtype=np.float32)
    if config.tie_embeddings:
        tensors.pop("lm_head.weight", None)  # HF ignores it when tied
        weights["output"] = weights["tok_embeddings"]
    leftover = sorted(k for k in tensors if not k.endswith("rotary_emb.inv_freq"))
    if leftover:
        raise ModelFormatError(
            f"{origin[leftover[0]]}: unexpected tensors for a Llama model: {leftover[:5]}"
            f"{' ...' if len(leftover) > 5 else ''}"
        )

    tokenizer: Optional[Tokenizer] = None
    spec = raw_cfg.get("lpu_tokenizer")
    try:
        if isinstance(spec, dict) and spec.get("type") == "llama2c":
            tokenizer = Llama2cTokenizer.from_file(directory / spec.get("file", "tokenizer.bin"), config.vocab_size)
        else:
            tokenizer = load_hf_tokenizer(directory, raw_cfg, config.vocab_size)
    except ModelFormatError:
        if require_tokenizer:
            raise
    return Model(config=config, weights=weights, tokenizer=tokenizer, source=str(directory))


def save_hf(model: Model, directory: PathLike, dtype: str = "F32", *, extra_config: Optional[Dict[str, Any]] = None) -> None:
    """Write ``model`` as a Hugging Face directory readable by :func:`load_hf` and transformers.

    Writes ``config.json`` and ``model.safetensors`` (``dtype`` ``"F32"``,
    ``"F16"`` or ``"BF16"``; ``lm_head.weight`` omitted when tied). The
    tokenizer is kept: a :class:`ByteTokenizer` as an ``lpu_tokenizer`` config
    entry, a :class:`Llama2cTokenizer` as ``tokenizer.bin`` plus a config entry,
    an :class:`HFTokenizer` by copying its ``tokenizer.json``.
    """
    model.validate()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    c = model.config
    tok = model.tokenizer
    cfg = c.to_hf_config()
    if tok is not None:
        cfg["bos_token_id"] = tok.bos_id
        cfg["eos_token_id"] = tok.eos_id
    if isinstance(tok, ByteTokenizer):
        cfg["lpu_tokenizer"] = {"type": "byte", "layout": "llama2c", "dummy_prefix": tok.dummy_prefix}
    elif isinstance(tok, Llama2cTokenizer):
        tok.save(directory / "tokenizer.bin")
        cfg["lpu_tokenizer"] = {"type": "llama2c", "file": "tokenizer.bin"}
    elif isinstance(tok, HFTokenizer):
        src = Path(tok.source)
        if src.resolve() != (directory / "tokenizer.json").resolve():
            shutil.copyfile(src, directory / "tokenizer.json")
    cfg["torch_dtype"] = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}.get(dtype, dtype)
    if extra_config:
        cfg.update(extra_config)
    names = hf_name_map(c)
    tensors = {
        hf: model.weights[canon] for canon, hf in names.items() if not (canon == "output" and c.tie_embeddings)
    }
    write_safetensors(directory / "model.safetensors", tensors, dtype=dtype)
    atomic_write_bytes(directory / "config.json", (json.dumps(cfg, indent=2, sort_keys=True) + "\n").encode())


# --------------------------------------------------------------------------- llama2.c


def _llama2c_layout(dim: int, hidden: int, n_layers: int, n_heads: int, n_kv: int, vocab: int, seq_len: int) -> List[Tuple[str, Tuple[int, ...]]]:
    hd = dim // n_heads
    kv_dim = hd * n_kv
    return [
        ("token_embedding", (vocab, dim)),
        ("rms_att", (n_layers, dim)),
        ("wq", (n_layers, dim, dim)),
        ("wk", (n_layers, kv_dim, dim)),
        ("wv", (n_layers, kv_dim, dim)),
        ("wo", (n_layers, dim, dim)),
        ("rms_ffn", (n_layers, dim)),
        ("w1", (n_layers, hidden, dim)),
        ("w2", (n_layers, dim, hidden)),
        ("w3", (n_layers, hidden, dim)),
        ("rms_final", (dim,)),
        ("freq_cis_real", (seq_len, hd // 2)),
        ("freq_cis_imag", (seq_len, hd // 2)),
        ("wcls", (vocab, dim)),
    ]


def load_llama2c(
    path: PathLike, tokenizer_path: Optional[PathLike] = None, *, require_tokenizer: bool = True
) -> Model:
    """Load a llama2.c "version 0" checkpoint (the format run.c reads).

    Layout: 7 little-endian int32 (``dim, hidden_dim, n_layers, n_heads,
    n_kv_heads, vocab_size, seq_len``; a negative vocab_size means a separate
    classifier is stored at the end), then fp32 tensors in the order token
    embedding, rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3, rms_final, the two
    legacy ``freq_cis`` tables (skipped; tolerated absent when the classifier is
    shared) and the classifier. ``norm_eps`` is 1e-5 and ``rope_theta`` 10000
    (run.c hard-codes both). ``wq``/``wk`` rows are permuted to the canonical
    RoPE layout (see the module docstring). The tokenizer comes from
    ``tokenizer_path`` or ``tokenizer.bin`` next to the checkpoint.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ModelFormatError(f"{path}: file not found") from None
    if size < 28:
        raise ModelFormatError(f"{path}: truncated llama2.c checkpoint ({size} bytes, the header alone is 28)")
    header = np.fromfile(path, dtype="<i4", count=7)
    dim, hidden, n_layers, n_heads, n_kv, vocab_signed, seq_len = (int(v) for v in header)
    shared = vocab_signed > 0
    vocab = abs(vocab_signed)
    fields = dict(dim=dim, hidden_dim=hidden, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv,
                  vocab_size=vocab, seq_len=seq_len)
    bad = [k for k, v in fields.items() if v <= 0]
    if bad:
        raise ModelFormatError(f"{path}: invalid llama2.c header {fields} (non-positive {bad})")
    if dim % n_heads or n_heads % n_kv or (dim // n_heads) % 2:
        raise ModelFormatError(f"{path}: invalid llama2.c header {fields} (head sizes do not divide)")

    layout = _llama2c_layout(dim, hidden, n_layers, n_heads, n_kv, vocab, seq_len)
    counts = {name: int(np.prod(shape)) for name, shape in layout}
    base = sum(v for k, v in counts.items() if k not in ("freq_cis_real", "freq_cis_imag", "wcls"))
    freq = counts["freq_cis_real"] + counts["freq_cis_imag"]
    n_floats = (size - 28) // 4
    if shared:
        allowed = {base + freq: True, base: False}
    else:
        allowed = {base + freq + counts["wcls"]: True}
    if (size - 28) % 4 or n_floats not in allowed:
        want = " or ".join(str(28 + 4 * n) for n in sorted(allowed))
        raise ModelFormatError(
            f"{path}: file has {size} bytes but the header {fields} "
            f"({'shared' if shared else 'separate'} classifier) needs {want} (truncated or wrong header?)"
        )
    has_freq = allowed[n_floats]

    data = np.memmap(path, dtype="<f4", mode="r", offset=28, shape=(n_floats,))
    arrays: Dict[str, np.ndarray] = {}
    off = 0
    for name, shape in layout:
        if name in ("freq_cis_real", "freq_cis_imag") and not has_freq:
            continue
        if name == "wcls" and shared:
            continue
        n = counts[name]
        arrays[name] = np.array(data[off : off + n], dtype=np.float32).reshape(shape)
        off += n
    del data

    config = ModelConfig(dim=dim, hidden_dim=hidden, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv,
                         vocab_size=vocab, max_seq_len=seq_len, norm_eps=1e-5, rope_theta=10000.0,
                         tie_embeddings=shared)
    w: Dict[str, np.ndarray] = {"tok_embeddings": arrays["token_embedding"]}
    for i in range(n_layers):
        p = f"layers.{i}."
        w[p + "attention_norm"] = arrays["rms_att"][i].copy()
        w[p + "wq"] = interleaved_to_half(arrays["wq"][i], n_heads)
        w[p + "wk"] = interleaved_to_half(arrays["wk"][i], n_kv)
        w[p + "wv"] = arrays["wv"][i].copy()
        w[p + "wo"] = arrays["wo"][i].copy()
        w[p + "ffn_norm"] = arrays["rms_ffn"][i].copy()
        w[p + "w1"] = arrays["w1"][i].copy()
        w[p + "w2"] = arrays["w2"][i].copy()
        w[p + "w3"] = arrays["w3"][i].copy()
    w["norm"] = arrays["rms_final"]
    w["output"] = w["tok_embeddings"] if shared else arrays["wcls"]

    tok_path = Path(tokenizer_path) if tokenizer_path is not None else path.with_name("tokenizer.bin")
    tokenizer: Optional[Tokenizer] = None
    try:
        tokenizer = Llama2cTokenizer.from_file(tok_path, vocab)
    except ModelFormatError:
        if require_tokenizer:
            raise
    return Model(config=config, weights=w, tokenizer=tokenizer, source=str(path))


def save_llama2c(model: Model, path: PathLike, tokenizer_path: Optional[PathLike] = None) -> None:
    """Write ``model`` as a llama2.c version-0 checkpoint that run.c can run.

    The classifier is stored separately (negative vocab_size in the header)
    unless the model is tied. The legacy ``freq_cis`` tables are written as
    llama2.c's exporter does (run.c skips them). ``wq``/``wk`` rows are permuted
    back to llama2.c's interleaved RoPE pairs. When ``tokenizer_path`` is given
    the tokenizer is written there as ``tokenizer.bin`` (byte-level and
    llama2.c tokenizers only).

    Raises ``ValueError`` if the model cannot be expressed in this format:
    ``head_dim != dim / n_heads``, ``rope_theta != 10000`` or
    ``norm_eps != 1e-5`` (run.c hard-codes the last two).
    """
    model.validate()
    c = model.config
    if c.head_dim * c.n_heads != c.dim:
        raise InputError(f"llama2.c needs head_dim == dim / n_heads; got head_dim {c.head_dim}, dim {c.dim}, n_heads {c.n_heads}")
    if c.rope_theta != 10000.0:
        raise InputError(f"llama2.c's run.c hard-codes rope_theta = 10000, model has {c.rope_theta}")
    if abs(c.norm_eps - 1e-5) > 1e-12:
        raise InputError(f"llama2.c's run.c hard-codes norm_eps = 1e-5, model has {c.norm_eps}")
    pieces_scores = None
    if tokenizer_path is not None:
        tok = model.tokenizer
        if isinstance(tok, ByteTokenizer):
            pieces_scores = (tok.pieces(), [0.0] * tok.vocab_size)
        elif isinstance(tok, Llama2cTokenizer):
            pieces_scores = (tok.pieces, tok.scores)
        else:
            raise InputError(f"cannot write a tokenizer.bin for tokenizer {tok!r}")
    w = model.weights
    L = c.n_layers
    hd = c.head_dim
    header = np.array(
        [c.dim, c.hidden_dim, L, c.n_heads, c.n_kv_heads, c.vocab_size if c.tie_embeddings else -c.vocab_size, c.max_seq_len],
        dtype="<i4",
    )
    inv = 1.0 / (10000.0 ** (np.arange(0, hd, 2, dtype=np.float32)[: hd // 2] / hd))
    ang = np.outer(np.arange(c.max_seq_len, dtype=np.float32), inv)

    def stack(short: str, fix=None) -> np.ndarray:
        mats = [w[f"layers.{i}.{short}"] for i in range(L)]
        if fix is not None:
            mats = [fix(m) for m in mats]
        return np.stack(mats)

    parts = [
        w["tok_embeddings"],
        stack("attention_norm"),
        stack("wq", lambda m: half_to_interleaved(m, c.n_heads)),
        stack("wk", lambda m: half_to_interleaved(m, c.n_kv_heads)),
        stack("wv"),
        stack("wo"),
        stack("ffn_norm"),
        stack("w1"),
        stack("w2"),
        stack("w3"),
        w["norm"],
        np.cos(ang),
        np.sin(ang),
    ]
    if not c.tie_embeddings:
        parts.append(w["output"])
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(header.tobytes())
        for arr in parts:
            f.write(np.ascontiguousarray(arr, dtype="<f4").tobytes())
    if pieces_scores is not None and tokenizer_path is not None:
        write_tokenizer_bin(tokenizer_path, pieces_scores[0], pieces_scores[1])
