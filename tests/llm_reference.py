"""Independent numpy float32 golden models of the Llama decoder.

This file deliberately shares no code with ``lpu.llm`` beyond the ``Model`` /
``ModelConfig`` containers it reads weights from. It is the reference that the
emulated chip's decode loop is checked against.

* :class:`ReferenceModel` - one token at a time with an explicit KV cache, in
  the canonical layout (Hugging Face ``rotate_half`` RoPE).
* :class:`RunCReference` - a numpy transcription of the semantics of
  llama2.c's ``run.c`` (interleaved RoPE pairs) that reads a llama2.c
  checkpoint file by itself. It exists to check that the llama2.c loader's row
  permutation really makes the canonical model compute what run.c computes.

All arithmetic is float32 except where noted; the RoPE angles are formed in
float32 the way both transformers and run.c form them.
"""

from __future__ import annotations

from typing import List, Sequence

import numpy as np

F32 = np.float32


def rmsnorm(x: np.ndarray, gain: np.ndarray, eps: float) -> np.ndarray:
    """x * (1 / sqrt(mean(x^2) + eps)) * gain, in float32."""
    ms = np.mean(x * x, dtype=F32)
    return (x * (F32(1.0) / np.sqrt(ms + F32(eps)))) * gain


def silu(v: np.ndarray) -> np.ndarray:
    """v * sigmoid(v) in float32."""
    with np.errstate(over="ignore"):
        return v / (F32(1.0) + np.exp(-v))


def softmax(s: np.ndarray) -> np.ndarray:
    """Softmax with max subtraction, float32."""
    e = np.exp(s - s.max())
    return e / e.sum(dtype=F32)


class ReferenceModel:
    """Canonical-layout Llama decoder, one token per call, with a KV cache.

    ``forward(token, pos)`` must be called with ``pos = 0, 1, 2, ...`` in order
    (as a decode loop does); ``reset()`` starts a new sequence.
    """

    def __init__(self, model) -> None:
        c = model.config
        self.cfg = c
        self.w = {k: np.asarray(v, dtype=F32) for k, v in model.weights.items()}
        self.L, self.D, self.H, self.KV = c.n_layers, c.dim, c.n_heads, c.n_kv_heads
        self.hd = c.head_dim
        self.eps = c.norm_eps
        # inverse frequencies as transformers computes them: float32 theta ** (2j/hd)
        exps = np.arange(0, self.hd, 2, dtype=np.int64).astype(F32) / F32(self.hd)
        self.inv_freq = (F32(1.0) / (F32(c.rope_theta) ** exps)).astype(F32)
        self.k_cache = np.zeros((self.L, c.max_seq_len, self.KV, self.hd), dtype=F32)
        self.v_cache = np.zeros((self.L, c.max_seq_len, self.KV, self.hd), dtype=F32)
        self.next_pos = 0

    def reset(self) -> None:
        """Forget the cached sequence."""
        self.k_cache[:] = 0
        self.v_cache[:] = 0
        self.next_pos = 0

    def rope(self, v: np.ndarray, pos: int) -> np.ndarray:
        """rotate_half RoPE on [heads, hd]: pairs (j, j + hd/2)."""
        ang = F32(pos) * self.inv_freq  # float32, like transformers
        cos, sin = np.cos(ang), np.sin(ang)
        half = self.hd // 2
        a, b = v[:, :half], v[:, half:]
        return np.concatenate([a * cos - b * sin, b * cos + a * sin], axis=1)

    def forward(self, token: int, pos: int) -> np.ndarray:
        """Logits (float32 [V]) after feeding ``token`` at position ``pos``."""
        if pos != self.next_pos:
            raise ValueError(f"positions must be fed in order: expected {self.next_pos}, got {pos}")
        if pos >= self.cfg.max_seq_len:
            raise ValueError(f"position {pos} exceeds max_seq_len {self.cfg.max_seq_len}")
        w = self.w
        x = w["tok_embeddings"][token].copy()
        rep = self.H // self.KV
        scale = F32(1.0 / np.sqrt(self.hd))
        for l in range(self.L):
            p = f"layers.{l}."
            h = rmsnorm(x, w[p + "attention_norm"], self.eps)
            q = (w[p + "wq"] @ h).reshape(self.H, self.hd)
            k = (w[p + "wk"] @ h).reshape(self.KV, self.hd)
            v = (w[p + "wv"] @ h).reshape(self.KV, self.hd)
            q = self.rope(q, pos)
            k = self.rope(k, pos)
            self.k_cache[l, pos] = k
            self.v_cache[l, pos] = v
            att = np.empty((self.H, self.hd), dtype=F32)
            for head in range(self.H):
                kvh = head // rep
                keys = self.k_cache[l, : pos + 1, kvh]  # [T, hd]
                vals = self.v_cache[l, : pos + 1, kvh]
                scores = (keys @ q[head]) * scale
                att[head] = softmax(scores) @ vals
            x = x + w[p + "wo"] @ att.reshape(-1)
            h = rmsnorm(x, w[p + "ffn_norm"], self.eps)
            x = x + w[p + "w2"] @ (silu(w[p + "w1"] @ h) * (w[p + "w3"] @ h))
        x = rmsnorm(x, w["norm"], self.eps)
        self.next_pos = pos + 1
        return (w["output"] @ x).astype(F32)

    def score(self, ids: Sequence[int]) -> np.ndarray:
        """Teacher-forced logits [len(ids), V] from a fresh cache."""
        self.reset()
        return np.stack([self.forward(int(t), i) for i, t in enumerate(ids)])

    def greedy(self, prompt_ids: Sequence[int], n: int) -> List[int]:
        """Feed the prompt from position 0, then ``n`` greedy tokens (first max on ties)."""
        if not prompt_ids:
            raise ValueError("greedy() needs at least one prompt token")
        self.reset()
        logits = None
        for i, t in enumerate(prompt_ids):
            logits = self.forward(int(t), i)
        out: List[int] = []
        pos = len(prompt_ids)
        for _ in range(n):
            nxt = int(np.argmax(logits))
            out.append(nxt)
            if len(out) == n:
                break
            logits = self.forward(nxt, pos)
            pos += 1
        return out


class RunCReference:
    """run.c's forward pass in numpy, reading a llama2.c version-0 checkpoint itself.

    Interleaved RoPE: for even ``i`` within the q (or k) vector,
    ``freq = 1 / 10000 ** ((i % hd) / hd)``, and the pair ``(i, i+1)`` is rotated
    by ``pos * freq``. eps 1e-5, theta 10000 (both hard-coded in run.c).
    """

    def __init__(self, path: str) -> None:
        raw = np.fromfile(path, dtype="<i4", count=7)
        dim, hidden, L, H, KV, vocab, seq = (int(v) for v in raw)
        shared = vocab > 0
        vocab = abs(vocab)
        hd = dim // H
        kv_dim = KV * hd
        f = np.fromfile(path, dtype="<f4", offset=28)
        pos = 0

        def take(*shape: int) -> np.ndarray:
            nonlocal pos
            n = int(np.prod(shape))
            a = f[pos : pos + n].reshape(shape)
            pos += n
            return a

        self.emb = take(vocab, dim)
        self.rms_att = take(L, dim)
        self.wq = take(L, dim, dim)
        self.wk = take(L, kv_dim, dim)
        self.wv = take(L, kv_dim, dim)
        self.wo = take(L, dim, dim)
        self.rms_ffn = take(L, dim)
        self.w1 = take(L, hidden, dim)
        self.w2 = take(L, dim, hidden)
        self.w3 = take(L, hidden, dim)
        self.rms_final = take(dim)
        take(seq, hd // 2)  # freq_cis_real (legacy, unused)
        take(seq, hd // 2)  # freq_cis_imag
        self.wcls = self.emb if shared else take(vocab, dim)
        self.dim, self.L, self.H, self.KV, self.hd, self.kv_dim = dim, L, H, KV, hd, kv_dim
        self.key_cache = np.zeros((L, seq, kv_dim), dtype=F32)
        self.value_cache = np.zeros((L, seq, kv_dim), dtype=F32)

    def _rope(self, vec: np.ndarray, pos: int) -> np.ndarray:
        out = vec.copy()
        for i in range(0, vec.size, 2):
            head_dim = i % self.hd
            freq = F32(1.0) / np.power(F32(10000.0), F32(head_dim) / F32(self.hd))
            val = F32(pos) * freq
            fcr, fci = np.cos(val), np.sin(val)
            v0, v1 = vec[i], vec[i + 1]
            out[i] = v0 * fcr - v1 * fci
            out[i + 1] = v0 * fci + v1 * fcr
        return out

    def forward(self, token: int, pos: int) -> np.ndarray:
        """Logits after ``token`` at ``pos`` (positions fed in order from 0)."""
        x = self.emb[token].copy()
        kv_mul = self.H // self.KV
        for l in range(self.L):
            xb = rmsnorm(x, self.rms_att[l], 1e-5)
            q = self._rope(self.wq[l] @ xb, pos)
            k = self._rope(self.wk[l] @ xb, pos)
            self.key_cache[l, pos] = k
            self.value_cache[l, pos] = self.wv[l] @ xb
            att_out = np.zeros(self.dim, dtype=F32)
            for h in range(self.H):
                qh = q[h * self.hd : (h + 1) * self.hd]
                off = (h // kv_mul) * self.hd
                keys = self.key_cache[l, : pos + 1, off : off + self.hd]
                scores = (keys @ qh) / np.sqrt(F32(self.hd))
                att_out[h * self.hd : (h + 1) * self.hd] = softmax(scores) @ self.value_cache[l, : pos + 1, off : off + self.hd]
            x = x + self.wo[l] @ att_out
            xb = rmsnorm(x, self.rms_ffn[l], 1e-5)
            x = x + self.w2[l] @ (silu(self.w1[l] @ xb) * (self.w3[l] @ xb))
        x = rmsnorm(x, self.rms_final, 1e-5)
        return (self.wcls @ x).astype(F32)


def random_model(
    seed: int,
    *,
    dim: int = 64,
    hidden_dim: int = 172,
    n_layers: int = 2,
    n_heads: int = 4,
    n_kv_heads: int = 2,
    vocab_size: int = 259,
    max_seq_len: int = 64,
    head_dim=None,
    tie: bool = False,
    tokenizer=None,
):
    """A small random ``lpu.llm.Model`` for tests (weights ~ N(0, 1/in), norm gains 1 +- 0.1)."""
    from lpu.llm import ByteTokenizer, Model, ModelConfig

    cfg = ModelConfig(dim=dim, hidden_dim=hidden_dim, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv_heads,
                      vocab_size=vocab_size, max_seq_len=max_seq_len, head_dim=head_dim, tie_embeddings=tie)
    rng = np.random.default_rng(seed)
    hd = cfg.head_dim
    qd, kvd = n_heads * hd, n_kv_heads * hd

    def mat(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(F32)

    def gain() -> np.ndarray:
        return (1.0 + 0.1 * rng.standard_normal(dim)).astype(F32)

    w = {"tok_embeddings": rng.standard_normal((vocab_size, dim)).astype(F32)}
    for i in range(n_layers):
        p = f"layers.{i}."
        w[p + "attention_norm"] = gain()
        w[p + "wq"] = mat(qd, dim)
        w[p + "wk"] = mat(kvd, dim)
        w[p + "wv"] = mat(kvd, dim)
        w[p + "wo"] = mat(dim, qd)
        w[p + "ffn_norm"] = gain()
        w[p + "w1"] = mat(hidden_dim, dim)
        w[p + "w2"] = mat(dim, hidden_dim)
        w[p + "w3"] = mat(hidden_dim, dim)
    w["norm"] = gain()
    w["output"] = w["tok_embeddings"] if tie else mat(vocab_size, dim)
    if tokenizer is None and vocab_size >= 259:
        tokenizer = ByteTokenizer(vocab_size=vocab_size)
    return Model(config=cfg, weights=w, tokenizer=tokenizer, source=f"random_model(seed={seed})")
