"""The small model bundled in lpu.llm: it loads with numpy alone, is small, and writes Python.

Run with ``PYTHONPATH=python pytest tests/test_llm_bundled.py``.
"""

from __future__ import annotations

import json
import keyword
import math
import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

import lpu.llm
from llm_reference import ReferenceModel, RunCReference
from lpu.llm import ByteTokenizer, bundled_path, load, load_bundled, save_llama2c
from lpu.llm.safetensors_io import have_safetensors_package

MAX_BYTES = 15 * 1000 * 1000
GREEDY_BYTES = 64


@pytest.fixture(scope="module")
def model():
    return load_bundled(use_safetensors_package=False)


@pytest.fixture(scope="module")
def greedy_ids(model):
    prompt = model.tokenizer.encode("def ")
    return prompt, ReferenceModel(model).greedy(prompt, GREEDY_BYTES)


def test_bundled_files_and_size():
    d = bundled_path()
    assert d == Path(lpu.llm.__file__).resolve().parent / "bundled"
    files = {p.name: p.stat().st_size for p in d.iterdir() if p.is_file()}
    assert {"config.json", "model.safetensors", "training.json", "README.md"} <= set(files)
    assert sum(files.values()) <= MAX_BYTES, files
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["torch_dtype"] == "float16"


def test_bundled_shape(model):
    c = model.config
    assert c.vocab_size == 259 and c.head_dim in (32, 64) and c.dim % 16 == 0
    assert c.n_kv_heads < c.n_heads and c.max_seq_len >= 512
    assert isinstance(model.tokenizer, ByteTokenizer) and model.tokenizer.dummy_prefix
    # fp16 on disk: every loaded weight is exactly representable in fp16
    for k, w in model.weights.items():
        assert np.array_equal(w.astype(np.float16).astype(np.float32), w), k


_NUMPY_ONLY = r"""
import importlib.abc, json, sys
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"safetensors", "tokenizers", "torch", "transformers"}:
            raise ImportError("blocked for this test: " + name)
        return None
sys.meta_path.insert(0, _Block())
sys.path.insert(0, sys.argv[1])
import numpy as np
from lpu.llm import load_bundled
from lpu.llm.safetensors_io import have_safetensors_package
m = load_bundled()
print(json.dumps({
    "have_package": have_safetensors_package(),
    "tokenizer": type(m.tokenizer).__name__,
    "config": m.config.to_dict(),
    "sums": {k: float(v.astype(np.float64).sum()) for k, v in sorted(m.weights.items())},
    "blocked": sorted(k for k in sys.modules if k.split(".")[0] in {"safetensors", "tokenizers", "torch"}),
}))
"""


def test_bundled_loads_with_numpy_only(model):
    """A fresh interpreter that cannot import safetensors/tokenizers/torch loads the same weights."""
    # keep the directory that provides `lpu` for this test run (may be a shim around python/lpu)
    root = Path(lpu.llm.__file__).parent.parent.parent
    out = subprocess.run(
        [sys.executable, "-c", _NUMPY_ONLY, str(root)], capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    info = json.loads(out.stdout)
    assert info["have_package"] is False and info["blocked"] == []
    assert info["tokenizer"] == "ByteTokenizer" and info["config"] == model.config.to_dict()
    want = {k: float(v.astype(np.float64).sum()) for k, v in sorted(model.weights.items())}
    assert info["sums"] == want


@pytest.mark.skipif(not have_safetensors_package(), reason="safetensors not installed")
def test_bundled_package_reader_agrees(model):
    other = load(bundled_path(), use_safetensors_package=True)
    for k, w in model.weights.items():
        np.testing.assert_array_equal(other.weights[k], w, err_msg=k)


def test_greedy_continuation_reads_as_python(model, greedy_ids):
    """Criterion: the 64 greedy tokens after "def " are all byte tokens; at least 60 of the 64
    bytes are printable ASCII, newline or tab; the first line is `def NAME(`; and the
    continuation contains at least one Python keyword (keyword.kwlist) or `self` as a word."""
    prompt, ids = greedy_ids
    assert prompt == [1, 35, 103, 104, 105, 35]
    assert len(ids) == GREEDY_BYTES and all(3 <= i < 259 for i in ids)
    data = bytes(i - 3 for i in ids)
    printable = sum(32 <= b < 127 or b in (9, 10) for b in data)
    assert printable >= 60, data
    text = "def " + data.decode("utf-8", "replace")
    assert re.match(r"def [A-Za-z_][A-Za-z0-9_]*\(", text), text
    words = set(re.findall(r"[A-Za-z_]+", text[4:]))
    assert words & (set(keyword.kwlist) | {"self"}), text


def _held_out_files(n: int):
    info = json.loads((bundled_path() / "training.json").read_text())
    root = Path(sysconfig.get_paths()["stdlib"])
    found = [root / rel for rel in info["data"]["validation_files"]]
    found = [p for p in found if p.is_file() and p.stat().st_size >= 4096][:n]
    if not found:
        pytest.skip("none of the held-out stdlib files exists in this Python")
    return found


def test_held_out_perplexity(model):
    """On held-out stdlib files (never seen in training), the mean negative log-likelihood of
    510 bytes from the middle of each file (one full 512-position context with BOS and the
    dummy space) is below 3.0 nats/byte for every file; uniform guessing gives ln(259) = 5.56."""
    ref = ReferenceModel(model)
    results = {}
    for path in _held_out_files(3):
        raw = path.read_bytes()
        start = raw.index(b"\n", len(raw) // 2) + 1  # a line start in the middle of the file
        data = raw[start : start + 510]
        ids = [1, 35] + [b + 3 for b in data]  # ByteTokenizer layout: BOS, dummy-prefix space, bytes
        assert len(ids) <= model.config.max_seq_len
        logits = ref.score(ids[:-1]).astype(np.float64)
        top = logits.max(1)
        logz = np.log(np.exp(logits - top[:, None]).sum(1)) + top
        nll = logz - logits[np.arange(len(ids) - 1), ids[1:]]
        results[path.name] = float(nll[1:].mean())  # skip predicting the dummy space after BOS
    assert max(results.values()) < 3.0, results
    assert max(results.values()) < 0.55 * math.log(259), results


def test_bundled_matches_transformers_greedy(model, greedy_ids):
    """transformers' LlamaForCausalLM on the bundled directory gives the same 64 greedy tokens."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    hf = transformers.LlamaForCausalLM.from_pretrained(str(bundled_path()), torch_dtype=torch.float32).eval()
    prompt, ids = greedy_ids
    with torch.no_grad():
        logits = hf(torch.tensor([prompt + ids])).logits[0].numpy()
    hf_greedy = [int(np.argmax(logits[len(prompt) - 1 + i])) for i in range(GREEDY_BYTES)]
    assert hf_greedy == ids  # teacher-forced on our tokens: every step's argmax agrees
    ref = ReferenceModel(model).score(prompt + ids)
    scale = np.abs(logits).max()
    assert np.abs(ref - logits).max() <= 1e-4 * scale


def test_bundled_exports_to_llama2c(tmp_path, model, greedy_ids):
    """Exported with its byte-level tokenizer.bin, the model reloads with the same greedy output,
    and an independent run.c transcription agrees on the logits."""
    save_llama2c(model, tmp_path / "model.bin", tokenizer_path=tmp_path / "tokenizer.bin")
    m2 = load(tmp_path / "model.bin")
    prompt, ids = greedy_ids
    assert m2.tokenizer.encode("def ") == prompt
    assert ReferenceModel(m2).greedy(prompt, GREEDY_BYTES) == ids
    runc = RunCReference(str(tmp_path / "model.bin"))
    ref = ReferenceModel(m2)
    seq = prompt + ids[:10]
    worst = max(float(np.abs(runc.forward(t, p) - ref.forward(t, p)).max()) for p, t in enumerate(seq))
    assert worst < 1e-4
