"""Model formats, tokenizers and sampling of lpu.llm, checked against golden values.

Run with ``PYTHONPATH=python pytest tests/test_llm_formats.py``.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from llm_reference import ReferenceModel, RunCReference, random_model
from lpu.llm import (
    ByteTokenizer,
    Llama2cTokenizer,
    Model,
    ModelConfig,
    ModelFormatError,
    load,
    load_llama2c,
    save_hf,
    save_llama2c,
)
from lpu.llm.safetensors_io import float32_to_bf16, have_safetensors_package, read_safetensors, write_safetensors
from lpu.llm.sampling import Sampler, argmax_first, make_rng, probabilities, sample
from lpu.llm.tokenizer import byte_vocab_pieces, read_tokenizer_bin, write_tokenizer_bin
from lpu.llm.weights import half_to_interleaved, interleaved_to_half

READERS = [False] + ([True] if have_safetensors_package() else [])
PROMPT = [1, 35, 103, 104, 105, 35, 120, 43, 4, 200, 17, 99, 258, 3]


def assert_same_weights(a: Model, b: Model) -> None:
    assert set(a.weights) == set(b.weights)
    for k in a.weights:
        assert a.weights[k].dtype == np.float32
        np.testing.assert_array_equal(a.weights[k], b.weights[k], err_msg=k)


# =========================================================================== config


def test_config_defaults_and_derived_sizes():
    c = ModelConfig(dim=256, hidden_dim=688, n_layers=4, n_heads=8, n_kv_heads=4, vocab_size=259, max_seq_len=512)
    assert c.head_dim == 32 and c.q_dim == 256 and c.kv_dim == 128 and c.n_rep == 2
    assert c.norm_eps == 1e-5 and c.rope_theta == 10000.0 and c.tie_embeddings is False
    # 2*259*256 (emb + untied output) + 256 (final norm) + 4 * per-layer
    per_layer = 2 * 256 + 2 * 256 * 256 + 2 * 128 * 256 + 3 * 688 * 256
    assert c.param_count() == 2 * 259 * 256 + 256 + 4 * per_layer == 3034880


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(n_heads=8, n_kv_heads=3), "multiple of n_kv_heads"),
        (dict(dim=100, n_heads=8, n_kv_heads=4), "not divisible by n_heads"),
        (dict(head_dim=15), "even"),
        (dict(vocab_size=0), "vocab_size must be positive"),
        (dict(n_layers=2.0), "n_layers must be an int"),
        (dict(norm_eps=0.0), "norm_eps"),
        (dict(rope_theta=-1.0), "rope_theta"),
    ],
)
def test_config_validation_messages(kwargs, fragment):
    base = dict(dim=64, hidden_dim=172, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=259, max_seq_len=64)
    base.update(kwargs)
    with pytest.raises(ValueError, match=fragment):
        ModelConfig(**base)


HF4 = {  # as transformers 4.4x writes a Llama config.json
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "hidden_act": "silu",
    "hidden_size": 288,
    "initializer_range": 0.02,
    "intermediate_size": 768,
    "max_position_embeddings": 256,
    "mlp_bias": False,
    "model_type": "llama",
    "num_attention_heads": 6,
    "num_hidden_layers": 6,
    "num_key_value_heads": 6,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": None,
    "rope_theta": 10000.0,
    "tie_word_embeddings": True,
    "torch_dtype": "float32",
    "transformers_version": "4.46.3",
    "use_cache": True,
    "vocab_size": 32000,
}

HF5 = {  # as transformers 5.x writes it: rope_parameters, dtype, explicit head_dim
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "bos_token_id": 1,
    "dtype": "bfloat16",
    "eos_token_id": 2,
    "head_dim": 64,
    "hidden_act": "silu",
    "hidden_size": 512,
    "intermediate_size": 1376,
    "max_position_embeddings": 1024,
    "mlp_bias": False,
    "model_type": "llama",
    "num_attention_heads": 4,
    "num_hidden_layers": 3,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-06,
    "rope_parameters": {"rope_theta": 500000.0, "rope_type": "default"},
    "tie_word_embeddings": False,
    "transformers_version": "5.24.0",
    "vocab_size": 300,
}


def test_from_hf_config_transformers4():
    c = ModelConfig.from_hf_config(HF4)
    assert (c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads) == (288, 768, 6, 6, 6)
    assert (c.vocab_size, c.max_seq_len, c.head_dim) == (32000, 256, 48)
    assert c.norm_eps == 1e-5 and c.rope_theta == 10000.0 and c.tie_embeddings is True


def test_from_hf_config_transformers5_rope_parameters_and_head_dim():
    c = ModelConfig.from_hf_config(HF5)
    assert c.head_dim == 64 and c.q_dim == 256 and c.kv_dim == 128  # head_dim honoured (not 512/4)
    assert c.rope_theta == 500000.0 and c.norm_eps == 1e-6 and c.tie_embeddings is False
    assert c.n_kv_heads == 2 and c.max_seq_len == 1024


def test_hf_config_round_trip_and_defaults():
    c = ModelConfig.from_hf_config(HF5)
    d = c.to_hf_config(bos_token_id=1)
    assert d["rope_theta"] == d["rope_parameters"]["rope_theta"] == 500000.0
    assert d["bos_token_id"] == 1 and d["head_dim"] == 64
    assert ModelConfig.from_hf_config(d) == c
    minimal = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 4, "vocab_size": 10}
    m = ModelConfig.from_hf_config(minimal)
    assert m.n_kv_heads == 4 and m.norm_eps == 1e-6 and m.rope_theta == 10000.0 and m.max_seq_len == 2048


@pytest.mark.parametrize(
    "patch, fragment",
    [
        ({"model_type": "mistral"}, "model_type"),
        ({"attention_bias": True}, "attention_bias"),
        ({"hidden_act": "gelu"}, "hidden_act"),
        ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "rope_scaling"),
        ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4}}, "rope_type"),
        ({"hidden_size": None}, "hidden_size"),
    ],
)
def test_from_hf_config_rejects_unsupported(patch, fragment):
    d = dict(HF4)
    d.update(patch)
    with pytest.raises(ValueError, match=fragment):
        ModelConfig.from_hf_config(d)


# =========================================================================== HF directories


@pytest.mark.parametrize("use_package", READERS)
@pytest.mark.parametrize("tie", [False, True])
def test_hf_round_trip_fp32(tmp_path, use_package, tie):
    m = random_model(1, tie=tie)
    save_hf(m, tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["tie_word_embeddings"] is tie and cfg["lpu_tokenizer"]["type"] == "byte"
    names = set(read_safetensors(tmp_path / "model.safetensors", use_package=False)[0])
    assert ("lm_head.weight" in names) is (not tie)
    assert "model.layers.1.mlp.gate_proj.weight" in names and len(names) == 2 * 9 + 2 + (not tie)
    back = load(tmp_path, use_safetensors_package=use_package)
    assert back.config == m.config
    assert_same_weights(m, back)
    assert isinstance(back.tokenizer, ByteTokenizer)
    if tie:
        assert back.weights["output"] is back.weights["tok_embeddings"]


@pytest.mark.parametrize("use_package", READERS)
def test_hf_fp16_and_bf16_tensors(tmp_path, use_package):
    m = random_model(2)
    save_hf(m, tmp_path / "f16", dtype="F16")
    save_hf(m, tmp_path / "bf16", dtype="BF16")
    f16 = load(tmp_path / "f16", use_safetensors_package=use_package)
    bf16 = load(tmp_path / "bf16", use_safetensors_package=use_package)
    for k, w in m.weights.items():
        np.testing.assert_array_equal(f16.weights[k], w.astype(np.float16).astype(np.float32), err_msg=k)
        # bf16 has 8 significant bits: round-to-nearest gives relative error <= 2^-8
        err = np.abs(bf16.weights[k] - w) / np.maximum(np.abs(w), 1e-30)
        assert err.max() <= 2.0**-8, k
        # and it is one of the two bf16 neighbours (truncation or truncation + 1 ulp)
        lo = (w.view(np.uint32) & 0xFFFF0000).view(np.float32)
        hi = ((w.view(np.uint32) & 0xFFFF0000) + 0x10000).view(np.float32)
        assert np.all((bf16.weights[k] == lo) | (bf16.weights[k] == hi)), k
        assert np.all((bf16.weights[k].view(np.uint32) & 0xFFFF) == 0), k
    cfg = json.loads((tmp_path / "bf16" / "config.json").read_text())
    assert cfg["torch_dtype"] == "bfloat16"


def _hand_safetensors(path: Path, entries) -> None:
    """Write a safetensors file from (name, dtype, shape, raw bytes) without lpu code."""
    header, blob = {}, b""
    for name, dt, shape, raw in entries:
        header[name] = {"dtype": dt, "shape": shape, "data_offsets": [len(blob), len(blob) + len(raw)]}
        blob += raw
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + blob)


@pytest.mark.parametrize("use_package", READERS)
def test_safetensors_golden_bits(tmp_path, use_package):
    bf = struct.pack("<6H", 0x3F80, 0xC000, 0x3EAB, 0x7F80, 0x0001, 0x8000)
    f16 = struct.pack("<3H", 0x3C00, 0xC500, 0x7BFF)
    f32 = struct.pack("<2f", 0.1, -3.5)
    p = tmp_path / "g.safetensors"
    _hand_safetensors(p, [("b", "BF16", [2, 3], bf), ("h", "F16", [3], f16), ("f", "F32", [1, 2], f32)])
    t, meta = read_safetensors(p, use_package=use_package)
    assert meta == {}
    np.testing.assert_array_equal(
        t["b"], np.array([[1.0, -2.0, 0.333984375], [np.inf, 2.0**-133, -0.0]], dtype=np.float32)
    )
    assert t["b"].dtype == np.float32 and np.signbit(t["b"][1, 2])
    np.testing.assert_array_equal(t["h"], np.array([1.0, -5.0, 65504.0], dtype=np.float16))
    np.testing.assert_array_equal(t["f"], np.array([[0.1, -3.5]], dtype=np.float32))


def test_bf16_rounding_is_nearest_even():
    x = np.array([1.0, 1.0 + 2**-8, 1.0 + 3 * 2**-8, 1.0 + 2**-8 + 2**-20, -2.0, np.inf, np.nan], dtype=np.float32)
    bits = float32_to_bf16(x)
    assert list(bits[:6]) == [0x3F80, 0x3F80, 0x3F82, 0x3F81, 0xC000, 0x7F80]
    assert (bits[6] & 0x7F80) == 0x7F80 and (bits[6] & 0x7F) != 0  # still a NaN


def test_safetensors_readers_agree_with_package_writer(tmp_path):
    torch = pytest.importorskip("torch")
    st = pytest.importorskip("safetensors.torch")
    g = torch.Generator().manual_seed(0)
    src = {"a": torch.randn(5, 7, generator=g).to(torch.bfloat16), "b": torch.randn(9, generator=g).half(),
           "c": torch.randn(2, 3, generator=g)}
    st.save_file(src, str(tmp_path / "p.safetensors"))
    for use_package in READERS:
        t, _ = read_safetensors(tmp_path / "p.safetensors", use_package=use_package)
        for k, v in src.items():
            np.testing.assert_array_equal(np.asarray(t[k], dtype=np.float32), v.float().numpy(), err_msg=k)
    # and our writer is readable by the package
    write_safetensors(tmp_path / "ours.safetensors", {"x": src["c"].numpy()}, dtype="BF16")
    back = st.load_file(str(tmp_path / "ours.safetensors"))["x"]
    assert back.dtype == torch.bfloat16
    np.testing.assert_array_equal(back.float().numpy(), src["c"].to(torch.bfloat16).float().numpy())


def test_hf_sharded_index(tmp_path):
    m = random_model(3)
    save_hf(m, tmp_path)
    full, _ = read_safetensors(tmp_path / "model.safetensors", use_package=False)
    names = sorted(full)
    half = len(names) // 2
    write_safetensors(tmp_path / "model-00001-of-00002.safetensors", {k: full[k] for k in names[:half]})
    write_safetensors(tmp_path / "model-00002-of-00002.safetensors", {k: full[k] for k in names[half:]})
    (tmp_path / "model.safetensors").unlink()
    wm = {k: f"model-0000{1 + (i >= half)}-of-00002.safetensors" for i, k in enumerate(names)}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wm}))
    assert_same_weights(m, load(tmp_path))


# --------------------------------------------------------------------------- malformed HF


def test_hf_missing_files(tmp_path):
    with pytest.raises(ModelFormatError, match="config.json"):
        load(tmp_path)
    m = random_model(4)
    save_hf(m, tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(ModelFormatError, match=r"model\.safetensors: file not found"):
        load(tmp_path)


def test_hf_wrong_shape_names_file_and_tensor(tmp_path):
    m = random_model(5)
    save_hf(m, tmp_path)
    t, _ = read_safetensors(tmp_path / "model.safetensors")
    t["model.layers.1.self_attn.k_proj.weight"] = np.zeros((64, 64), np.float32)  # should be 32 x 64
    write_safetensors(tmp_path / "model.safetensors", t)
    with pytest.raises(ModelFormatError) as e:
        load(tmp_path)
    msg = str(e.value)
    assert "model.safetensors" in msg and "model.layers.1.self_attn.k_proj.weight" in msg and "(32, 64)" in msg


def test_hf_missing_and_unexpected_tensor(tmp_path):
    m = random_model(6)
    save_hf(m, tmp_path)
    t, _ = read_safetensors(tmp_path / "model.safetensors")
    del t["model.norm.weight"]
    write_safetensors(tmp_path / "model.safetensors", t)
    with pytest.raises(ModelFormatError, match="'model.norm.weight' is missing"):
        load(tmp_path)
    t["model.norm.weight"] = m.weights["norm"]
    t["model.layers.0.self_attn.q_proj.bias"] = np.zeros(64, np.float32)
    write_safetensors(tmp_path / "model.safetensors", t)
    with pytest.raises(ModelFormatError, match="q_proj.bias"):
        load(tmp_path)


@pytest.mark.parametrize("use_package", READERS)
def test_hf_truncated_safetensors(tmp_path, use_package):
    m = random_model(7)
    save_hf(m, tmp_path)
    f = tmp_path / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[:-100])
    with pytest.raises(ModelFormatError) as e:
        load(tmp_path, use_safetensors_package=use_package)
    assert str(f) in str(e.value) and "truncated" in str(e.value)
    assert "model.norm.weight" in str(e.value)  # the last tensor in sorted order is the one cut
    f.write_bytes(data[:5])
    with pytest.raises(ModelFormatError, match="truncated"):
        load(tmp_path)
    f.write_bytes(struct.pack("<Q", 10) + b"{not json}")
    with pytest.raises(ModelFormatError, match="not valid JSON"):
        load(tmp_path)


def test_hf_unsupported_dtype(tmp_path):
    p = tmp_path / "x.safetensors"
    _hand_safetensors(p, [("w", "F8_E4M3", [2], b"\x00\x00")])
    with pytest.raises(ModelFormatError, match="'w' has unsupported dtype 'F8_E4M3'"):
        read_safetensors(p)


def test_hf_config_errors_are_model_format_errors(tmp_path):
    m = random_model(8)
    save_hf(m, tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["num_key_value_heads"] = 3
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFormatError, match=r"config\.json.*multiple of n_kv_heads"):
        load(tmp_path)


# =========================================================================== llama2.c


def _count_floats(c: ModelConfig, with_freq=True, wcls=True) -> int:
    hd = c.dim // c.n_heads
    n = c.vocab_size * c.dim + c.n_layers * (2 * c.dim + 2 * c.dim * c.dim + 2 * c.kv_dim * c.dim + 3 * c.dim * c.hidden_dim)
    n += c.dim
    if with_freq:
        n += c.max_seq_len * hd
    if wcls:
        n += c.vocab_size * c.dim
    return n


def test_rope_row_permutation_golden():
    w = np.arange(2 * 8).reshape(8, 2).astype(np.float32)  # 2 heads of hd=4, rows r0..r7
    got = interleaved_to_half(w, n_heads=2)
    np.testing.assert_array_equal(got[:, 0], [0, 4, 2, 6, 8, 12, 10, 14])  # per head: r0 r2 r1 r3
    np.testing.assert_array_equal(half_to_interleaved(got, 2), w)


@pytest.mark.parametrize("tie", [False, True])
def test_llama2c_round_trip_gqa(tmp_path, tie):
    m = random_model(10, tie=tie, max_seq_len=32)
    ckpt = tmp_path / "model.bin"
    save_llama2c(m, ckpt, tokenizer_path=tmp_path / "tokenizer.bin")
    header = struct.unpack("<7i", ckpt.read_bytes()[:28])
    assert header == (64, 172, 2, 4, 2, 259 if tie else -259, 32)
    assert ckpt.stat().st_size == 28 + 4 * _count_floats(m.config, wcls=not tie)
    back = load(ckpt)  # finds tokenizer.bin next to it
    assert back.config == m.config
    assert_same_weights(m, back)
    assert isinstance(back.tokenizer, Llama2cTokenizer) and back.tokenizer.vocab_size == 259
    # the wq rows stored in the file are the interleaved (llama2.c) order
    stored = np.frombuffer(ckpt.read_bytes(), dtype="<f4", offset=28)
    off = 259 * 64 + 2 * 64
    wq0 = stored[off : off + 64 * 64].reshape(64, 64)
    np.testing.assert_array_equal(wq0[1], m.weights["layers.0.wq"][8])  # head 0, hd 16: row 1 <- row 8
    np.testing.assert_array_equal(wq0[16 + 2], m.weights["layers.0.wq"][16 + 1])


@pytest.mark.parametrize("tie", [False, True])
def test_llama2c_matches_run_c_semantics(tmp_path, tie):
    """The canonical reference on the loaded model equals an independent run.c transcription."""
    m = random_model(11, tie=tie, max_seq_len=32)
    ckpt = tmp_path / "m.bin"
    save_llama2c(m, ckpt)
    loaded = load_llama2c(ckpt, require_tokenizer=False)
    ref, runc = ReferenceModel(loaded), RunCReference(str(ckpt))
    worst = 0.0
    for pos, t in enumerate(PROMPT):
        a, b = ref.forward(t, pos), runc.forward(t, pos)
        worst = max(worst, float(np.abs(a - b).max()))
    assert worst < 1e-5
    # sensitivity: using the file's interleaved rows without the permutation changes the logits
    raw = Model(config=loaded.config, weights=dict(loaded.weights), source="unpermuted")
    for i in range(m.config.n_layers):
        raw.weights[f"layers.{i}.wq"] = half_to_interleaved(loaded.weights[f"layers.{i}.wq"], 4)
        raw.weights[f"layers.{i}.wk"] = half_to_interleaved(loaded.weights[f"layers.{i}.wk"], 2)
    bad = ReferenceModel(raw)
    runc2 = RunCReference(str(ckpt))
    diffs = [np.abs(bad.forward(t, p) - runc2.forward(t, p)).max() for p, t in enumerate(PROMPT)]
    assert diffs[0] < 1e-5 and max(diffs) > 1e-2  # position 0 has no rotation


def test_llama2c_and_hf_formats_same_logits(tmp_path):
    m = random_model(12, max_seq_len=32)
    save_hf(m, tmp_path / "hf", dtype="F32")
    save_llama2c(m, tmp_path / "m.bin", tokenizer_path=tmp_path / "tokenizer.bin")
    a, b = ReferenceModel(load(tmp_path / "hf")), ReferenceModel(load(tmp_path / "m.bin"))
    la, lb = a.score(PROMPT), b.score(PROMPT)
    np.testing.assert_allclose(la, lb, rtol=0, atol=1e-5)
    assert la.std() > 0.1  # not a degenerate comparison


def test_llama2c_hand_written_file_without_freq_tables(tmp_path):
    """A tied checkpoint written by hand (no freq_cis tables) loads with the documented permutation."""
    rng = np.random.default_rng(13)
    dim, hidden, L, H, KV, V, S = 8, 16, 1, 2, 1, 259, 4
    parts = {"emb": (V, dim), "rms_att": (L, dim), "wq": (L, dim, dim), "wk": (L, 4, dim), "wv": (L, 4, dim),
             "wo": (L, dim, dim), "rms_ffn": (L, dim), "w1": (L, hidden, dim), "w2": (L, dim, hidden),
             "w3": (L, hidden, dim), "rms_final": (dim,)}
    arrs = {k: rng.standard_normal(s).astype("<f4") for k, s in parts.items()}
    path = tmp_path / "hand.bin"
    path.write_bytes(struct.pack("<7i", dim, hidden, L, H, KV, V, S) + b"".join(a.tobytes() for a in arrs.values()))
    m = load(path, require_tokenizer=False)
    assert m.tokenizer is None and m.config.tie_embeddings and m.config.n_kv_heads == 1
    wk = arrs["wk"][0]  # one kv head of hd 4: canonical rows = file rows 0, 2, 1, 3
    np.testing.assert_array_equal(m.weights["layers.0.wk"], wk[[0, 2, 1, 3]])
    np.testing.assert_array_equal(m.weights["layers.0.wq"], arrs["wq"][0][[0, 2, 1, 3, 4, 6, 5, 7]])
    np.testing.assert_array_equal(m.weights["layers.0.w2"], arrs["w2"][0])
    assert m.weights["output"] is m.weights["tok_embeddings"]


def test_llama2c_malformed(tmp_path):
    m = random_model(14, max_seq_len=16)
    ckpt = tmp_path / "m.bin"
    save_llama2c(m, ckpt)
    data = ckpt.read_bytes()
    (tmp_path / "cut.bin").write_bytes(data[:-8])
    with pytest.raises(ModelFormatError) as e:
        load(tmp_path / "cut.bin", require_tokenizer=False)
    assert "cut.bin" in str(e.value) and "truncated" in str(e.value)
    (tmp_path / "short.bin").write_bytes(data[:10])
    with pytest.raises(ModelFormatError, match="short.bin.*header"):
        load(tmp_path / "short.bin", require_tokenizer=False)
    (tmp_path / "zero.bin").write_bytes(struct.pack("<7i", 64, 172, 2, 0, 2, 259, 16) + data[28:])
    with pytest.raises(ModelFormatError, match="zero.bin.*n_heads"):
        load(tmp_path / "zero.bin", require_tokenizer=False)
    with pytest.raises(ModelFormatError, match="tokenizer.bin: tokenizer file not found"):
        load(ckpt)
    with pytest.raises(ModelFormatError, match="nothere.bin: file not found"):
        load(tmp_path / "nothere.bin")


def test_llama2c_unrepresentable_models(tmp_path):
    with pytest.raises(ValueError, match="head_dim"):
        save_llama2c(random_model(15, dim=48, head_dim=16, n_heads=4, n_kv_heads=2), tmp_path / "a.bin")
    m = random_model(15)
    m2 = Model(config=ModelConfig(**{**m.config.to_dict(), "rope_theta": 5e5}), weights=m.weights)
    with pytest.raises(ValueError, match="rope_theta"):
        save_llama2c(m2, tmp_path / "b.bin")


# =========================================================================== tokenizers


def test_byte_tokenizer_golden():
    t = ByteTokenizer()
    assert (t.vocab_size, t.bos_id, t.eos_id) == (259, 1, 2)
    assert t.encode("def ") == [1, 35, 103, 104, 105, 35]
    assert t.encode("é", bos=False, eos=True) == [35, 0xC3 + 3, 0xA9 + 3, 2]
    assert t.encode("") == [1]
    assert t.decode([1, 35, 103, 104, 105, 35]) == "def "
    assert t.decode([35, 103]) == " d"  # no BOS before it: the space is real
    assert t.decode([1, 35, 35, 2, 0]) == " "  # only one dummy space dropped; control ids are silent
    assert t.decode_bytes([1, 35, 3, 258]) == b"\x00\xff"
    text = "x = 'π≈3.14'\n\tprint(x)  # ok 🐍"
    assert t.decode(t.encode(text)) == text
    raw = ByteTokenizer(dummy_prefix=False)
    assert raw.encode("ab") == [1, 100, 101] and raw.decode([1, 35, 100]) == " a"
    with pytest.raises(ValueError, match="outside the vocabulary"):
        t.decode([259])


def test_stream_decoder_holds_partial_utf8():
    t = ByteTokenizer()
    ids = t.encode("a€b")  # € is e2 82 ac
    s = t.stream_decoder()
    out = [s.push(i) for i in ids]
    assert out == ["", "", "a", "", "", "€", "b"]
    s2 = t.stream_decoder()
    assert [s2.push(i) for i in [1, 35, 0xE2 + 3]] == ["", "", ""]
    assert s2.flush() == "\ufffd"


def test_tokenizer_bin_round_trip_and_errors(tmp_path):
    pieces = [b"<unk>", b"\n<s>\n", b"\n</s>\n", b"abc", b"", b"\xff\x00z"]
    scores = [0.0, 0.0, 0.0, -1.5, 2.25, 1e-3]
    p = tmp_path / "tokenizer.bin"
    write_tokenizer_bin(p, pieces, scores)
    raw = p.read_bytes()
    assert raw[:4] == struct.pack("<I", 6) and raw[4:12] == struct.pack("<fi", 0.0, 5)
    assert len(raw) == 4 + sum(8 + len(x) for x in pieces)
    got_p, got_s, max_len = read_tokenizer_bin(p, vocab_size=6)
    assert got_p == pieces and got_s == [float(np.float32(s)) for s in scores] and max_len == 6
    assert read_tokenizer_bin(p)[0] == pieces  # vocab size from the file length
    with pytest.raises(ModelFormatError, match="bytes left after 4 tokens"):
        read_tokenizer_bin(p, vocab_size=4)
    with pytest.raises(ModelFormatError, match="truncated.*token 6"):
        read_tokenizer_bin(p, vocab_size=7)
    p.write_bytes(raw[:-2])
    with pytest.raises(ModelFormatError, match=r"tokenizer\.bin: truncated or corrupt tokenizer.bin at token 5"):
        read_tokenizer_bin(p, vocab_size=6)


def _merge_vocab():
    pieces = byte_vocab_pieces()[:3] + [b"<0x%02X>" % b for b in range(256)]  # 0..258 as in llama2.c
    extra = [(b" ", 0.0), (b"h", 0.0), (b"e", 0.0), (b"l", 0.0), (b"o", 0.0), (b"he", 1.0), (b"ll", 2.0),
             (b"llo", 0.5), (b"hello", 3.0), (b" hello", 4.0), ("é".encode(), 0.0), (b"a", 0.0), (b"aa", 1.0)]
    ids = {}
    scores = [0.0] * len(pieces)
    for piece, score in extra:
        ids[piece] = len(pieces)
        pieces.append(piece)
        scores.append(score)
    return Llama2cTokenizer(pieces, scores), ids


def test_llama2c_encode_follows_run_c():
    tok, ids = _merge_vocab()
    # "hello x": dummy prefix; ll(2.0) then he(1.0) then llo(0.5) then hello(3.0) then " hello"(4.0);
    # 'x' is not a piece -> byte fallback 0x78 + 3.
    assert tok.encode("hello x") == [1, ids[b" hello"], ids[b" "], 0x78 + 3]
    assert tok.encode("hello x", bos=False, eos=True) == [ids[b" hello"], ids[b" "], 0x78 + 3, 2]
    # equal scores: the leftmost pair merges first
    assert tok.encode("aaa") == [1, ids[b" "], ids[b"aa"], ids[b"a"]]
    # whole-codepoint lookup vs byte fallback for a missing multi-byte code point
    assert tok.encode("éü", bos=False) == [ids[b" "], ids["é".encode()], 0xC3 + 3, 0xBC + 3]
    assert tok.encode("") == [1]
    assert tok.decode(tok.encode("hello x")) == "hello x"  # leading space dropped after BOS, <0x78> -> 'x'
    assert tok.decode([ids[b" hello"]]) == " hello"
    assert tok.decode(tok.encode("éü")) == "éü"
    no_space = Llama2cTokenizer([b"<unk>", b"<s>", b"</s>", b"a"], [0.0] * 4)
    with pytest.raises(ValueError, match="no ' ' piece"):
        no_space.encode("a")


def test_byte_vocab_bin_gives_byte_tokenizer_ids(tmp_path):
    p = tmp_path / "tokenizer.bin"
    write_tokenizer_bin(p, byte_vocab_pieces())
    l2c = Llama2cTokenizer.from_file(p, vocab_size=259)
    bt = ByteTokenizer()
    for text in ["def f(x):\n\treturn x  # é€🐍", " leading", "", "<0x41>"]:
        assert l2c.encode(text) == bt.encode(text), text
        ids = bt.encode(text, eos=True)
        assert l2c.decode(ids) == bt.decode(ids) == text


def test_hf_dir_tokenizer_selection(tmp_path):
    m = random_model(16, vocab_size=300)
    m.tokenizer = None
    save_hf(m, tmp_path)
    with pytest.raises(ModelFormatError, match="tokenizer.json: file not found"):
        load(tmp_path)
    assert load(tmp_path, require_tokenizer=False).tokenizer is None
    m259 = random_model(16)
    m259.tokenizer = None
    save_hf(m259, tmp_path / "b")
    assert isinstance(load(tmp_path / "b").tokenizer, ByteTokenizer)  # byte-level by vocab size
    m3 = random_model(17, vocab_size=272, tokenizer=_merge_vocab()[0])
    save_hf(m3, tmp_path / "c")
    back = load(tmp_path / "c")
    assert isinstance(back.tokenizer, Llama2cTokenizer) and back.tokenizer.pieces == m3.tokenizer.pieces


def test_hf_tokenizer_json(tmp_path):
    tk = pytest.importorskip("tokenizers")
    from lpu.llm import HFTokenizer

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "hello": 3, "world": 4, "!": 5}
    t = tk.Tokenizer(tk.models.WordLevel(vocab, unk_token="<unk>"))
    t.pre_tokenizer = tk.pre_tokenizers.Whitespace()
    t.add_special_tokens(["<s>", "</s>"])
    t.save(str(tmp_path / "tokenizer.json"))
    m = random_model(18, vocab_size=6, tokenizer=None)
    save_hf(m, tmp_path)
    back = load(tmp_path)
    assert isinstance(back.tokenizer, HFTokenizer)
    assert (back.tokenizer.bos_id, back.tokenizer.eos_id, back.tokenizer.vocab_size) == (1, 2, 6)
    assert back.tokenizer.encode("hello world !", eos=True) == [1, 3, 4, 5, 2]
    assert back.tokenizer.decode([1, 3, 4, 2]) == "hello world"
    s = back.tokenizer.stream_decoder()
    assert "".join(s.push(i) for i in [1, 3, 4]) + s.flush() == "hello world"


# =========================================================================== sampling


def test_greedy_first_max_and_top_k_one():
    logits = np.array([1.0, 3.0, -np.inf, 3.0, 2.0], dtype=np.float32)
    assert argmax_first(logits) == 1
    assert sample(logits, temperature=0.0) == 1
    rng = make_rng(0)
    assert all(sample(logits, temperature=1.0, top_k=1, rng=rng) == 1 for _ in range(50))
    assert all(sample(logits, temperature=5.0, top_p=1e-9, rng=rng) == 1 for _ in range(50))


def test_sampling_is_seeded_and_deterministic():
    logits = np.random.default_rng(0).standard_normal(259).astype(np.float32)
    a = [sample(logits, 0.9, 40, 0.95, make_rng(123)) for _ in range(3)]
    assert len(set(a)) == 1  # same seed, same first draw
    s1, s2, s3 = Sampler(0.8, 0, 0.9, seed=7), Sampler(0.8, 0, 0.9, seed=7), Sampler(0.8, 0, 0.9, seed=8)
    seq1 = [s1(logits) for _ in range(200)]
    assert seq1 == [s2(logits) for _ in range(200)]
    assert seq1 != [s3(logits) for _ in range(200)]
    # one coin per token, inverse CDF: reproduce the first draw by hand
    coin = make_rng(99).random()
    p = np.exp(logits.astype(np.float64) - logits.max())
    p /= p.sum()
    assert sample(logits, 1.0, 0, 1.0, make_rng(99)) == int(np.searchsorted(np.cumsum(p), coin, side="right"))


def test_filtered_probabilities_golden():
    logits = np.log(np.array([0.1, 0.5, 0.15, 0.25]))
    np.testing.assert_allclose(probabilities(logits), [0.1, 0.5, 0.15, 0.25], rtol=1e-12)
    np.testing.assert_allclose(probabilities(logits, top_k=2), [0, 2 / 3, 0, 1 / 3], rtol=1e-12)
    np.testing.assert_allclose(probabilities(logits, top_p=0.7), [0, 2 / 3, 0, 1 / 3], rtol=1e-12)
    np.testing.assert_allclose(probabilities(logits, top_p=0.8), [0, 0.5 / 0.9, 0.15 / 0.9, 0.25 / 0.9], rtol=1e-12)
    np.testing.assert_allclose(probabilities(logits, top_p=0.4), [0, 1, 0, 0])
    # top_p applies to the distribution renormalised after top_k (as in transformers):
    # top 3 renormalised = .556, .278, .167 -> the first two already reach 0.8
    np.testing.assert_allclose(probabilities(logits, top_k=3, top_p=0.8), [0, 2 / 3, 0, 1 / 3], rtol=1e-12)
    sq = np.sqrt([0.1, 0.5, 0.15, 0.25])
    np.testing.assert_allclose(probabilities(logits, temperature=2.0), sq / sq.sum(), rtol=1e-12)
    # ties in the ranking: the lower id is kept
    np.testing.assert_allclose(probabilities(np.zeros(4), top_k=2), [0.5, 0.5, 0, 0])


def test_sampling_distribution_matches_probabilities():
    """20000 draws: every empirical frequency within 0.015 of its probability (> 4 sigma)."""
    logits = np.log(np.array([0.1, 0.5, 0.15, 0.25], dtype=np.float32))
    n = 20000
    for kw, expect in [({}, [0.1, 0.5, 0.15, 0.25]), ({"top_k": 2}, [0, 2 / 3, 0, 1 / 3]),
                       ({"temperature": 0.5}, np.array([0.01, 0.25, 0.0225, 0.0625]) / 0.345)]:
        rng = make_rng(2024)
        kw = {"temperature": 1.0, **kw}
        counts = np.bincount([sample(logits, rng=rng, **kw) for _ in range(n)], minlength=4)
        np.testing.assert_allclose(counts / n, expect, atol=0.015)
        assert np.all(counts[np.asarray(expect) == 0] == 0)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_k": -1}, "top_k"),
        ({"top_k": 1.5}, "top_k"),
        ({"top_k": True}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.01}, "top_p"),
        ({"temperature": 1.0, "rng": None}, "needs rng"),
    ],
)
def test_sampling_argument_validation(kwargs, fragment):
    args = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "rng": make_rng(0)}
    args.update(kwargs)
    with pytest.raises(ValueError, match=fragment):
        sample(np.zeros(4, np.float32), **args)


def test_sampling_rejects_bad_logits():
    with pytest.raises(ValueError, match="NaN"):
        sample(np.array([0.0, np.nan]), temperature=0)
    with pytest.raises(ValueError, match="1-D"):
        sample(np.zeros((2, 2)), temperature=0)
    with pytest.raises(ValueError, match="finite maximum"):
        sample(np.full(3, -np.inf), temperature=1.0, rng=make_rng(0))


# =========================================================================== reference vs transformers


@pytest.mark.parametrize("shape", [dict(), dict(dim=48, head_dim=16, n_heads=4, n_kv_heads=1), dict(tie=True, n_kv_heads=4)])
def test_reference_matches_transformers(tmp_path, shape):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    m = random_model(21, max_seq_len=32, **shape)
    save_hf(m, tmp_path, dtype="F32")
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM.from_pretrained(str(tmp_path), torch_dtype=torch.float32)
    hf.eval()
    assert hf.config.head_dim == m.config.head_dim and hf.config.num_key_value_heads == m.config.n_kv_heads
    with torch.no_grad():
        want = hf(torch.tensor([PROMPT])).logits[0].numpy()
    got = ReferenceModel(m).score(PROMPT)
    scale = np.abs(want).max()
    assert np.abs(got - want).max() <= 1e-5 * max(1.0, scale) * 4, np.abs(got - want).max()
    assert scale > 1.0
