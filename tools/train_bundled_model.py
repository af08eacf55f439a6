#!/usr/bin/env python3
"""Train the small Llama-architecture model that ships inside ``lpu.llm``.

This is a developer tool. It needs ``torch`` (CPU is enough); the ``lpu``
package itself never imports torch.

What it does, in order:

1. Collects the Python standard library's own ``*.py`` files (the directory
   ``sysconfig.get_paths()["stdlib"]``), skipping ``site-packages``, the test
   suites, the machine-specific ``_sysconfigdata*`` module and generated data
   that is not code (``pydoc_data/``, and the charmap codec tables in
   ``encodings/`` - files containing ``### Decoding Table`` or a top-level
   ``decoding_map = ``). Files are sorted
   by their path relative to that directory, so the order is the same on every
   run. A file goes to the validation split when ``zlib.crc32(relpath) % 20 ==
   0`` (about 5 % of the files); everything else is training data.
2. Turns every file into bytes-level token ids using the llama2.c byte layout
   (0 ``<unk>``, 1 BOS, 2 EOS, id ``3 + b`` for byte ``b``). Each document is
   ``[BOS, " "] + bytes``: the space is the SentencePiece/llama2.c "dummy
   prefix", so prompts encoded by ``lpu.llm.ByteTokenizer`` (and by llama2.c's
   ``run.c``) look exactly like the training data.
3. Trains a Llama decoder (RMSNorm, rotate-half RoPE, grouped-query attention,
   SwiGLU, untied classifier) with AdamW, using a fixed seed. Every training
   sequence is ``[BOS, " "]`` followed by the training stream from the start of
   a randomly chosen line, so that a prompt such as ``"def "`` (encoded as
   ``[BOS, " ", "d", "e", "f", " "]``) looks like what the model was trained
   on. Validation uses plain windows of the held-out stream.
4. Writes ``config.json`` (Hugging Face ``LlamaForCausalLM`` style),
   ``model.safetensors`` (fp16, Hugging Face tensor names) and
   ``training.json`` (the run's settings, losses and held-out file list) into
   the output directory.

Use ``--benchmark`` to time a few steps of candidate sizes before a full run.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import struct
import sys
import sysconfig
import time
import zlib
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

BOS_ID = 1
EOS_ID = 2
BYTE_OFFSET = 3
VOCAB_SIZE = 256 + BYTE_OFFSET
SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__", "pydoc_data"}
NEWLINE_ID = ord("\n") + BYTE_OFFSET


# --------------------------------------------------------------------------- data


def stdlib_files() -> Tuple[Path, List[str]]:
    """Return the stdlib root and the sorted relative paths of its source files."""
    root = Path(sysconfig.get_paths()["stdlib"]).resolve()
    rels = []
    for p in root.rglob("*.py"):
        rel = p.relative_to(root)
        parts = rel.parts
        if any(part in SKIP_DIRS or part.startswith("config-") for part in parts[:-1]):
            continue
        if rel.name.startswith("_sysconfigdata"):
            continue
        if not p.is_file():
            continue
        if parts[0] == "encodings" and is_codec_table(p.read_bytes()):
            continue
        rels.append(rel.as_posix())
    rels.sort()
    return root, rels


def is_codec_table(data: bytes) -> bool:
    """The generated charmap codecs: big tables of code points, not typical code."""
    return b"### Decoding Table" in data or b"\ndecoding_map = " in data


def is_validation(rel: str) -> bool:
    """The split rule: about one file in twenty is held out."""
    return zlib.crc32(rel.encode("utf-8")) % 20 == 0


def encode_document(data: bytes) -> np.ndarray:
    """Token ids of one file: BOS, the dummy-prefix space, then one id per byte."""
    ids = np.frombuffer(data, dtype=np.uint8).astype(np.int64) + BYTE_OFFSET
    head = np.array([BOS_ID, ord(" ") + BYTE_OFFSET], dtype=np.int64)
    return np.concatenate([head, ids])


def build_streams(root: Path, rels: List[str]) -> Tuple[np.ndarray, np.ndarray, List[str], List[str]]:
    """Concatenate the training and validation documents into two id streams."""
    train, val, train_names, val_names = [], [], [], []
    for rel in rels:
        data = (root / rel).read_bytes()
        if not data.strip():
            continue
        if is_validation(rel):
            val.append(encode_document(data))
            val_names.append(rel)
        else:
            train.append(encode_document(data))
            train_names.append(rel)
    return np.concatenate(train), np.concatenate(val), train_names, val_names


# --------------------------------------------------------------------------- model


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


class Attention(nn.Module):
    def __init__(self, dim: int, n_heads: int, n_kv_heads: int, head_dim: int) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, head_dim
        self.q_proj = nn.Linear(dim, n_heads * head_dim, bias=False)
        self.k_proj = nn.Linear(dim, n_kv_heads * head_dim, bias=False)
        self.v_proj = nn.Linear(dim, n_kv_heads * head_dim, bias=False)
        self.o_proj = nn.Linear(n_heads * head_dim, dim, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = self.n_heads // self.n_kv_heads
        if rep > 1:  # query head h uses key/value head h // rep (as HF and run.c do)
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, -1))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: Dict) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg["dim"], cfg["eps"])
        self.self_attn = Attention(cfg["dim"], cfg["n_heads"], cfg["n_kv_heads"], cfg["head_dim"])
        self.post_attention_layernorm = RMSNorm(cfg["dim"], cfg["eps"])
        self.mlp = MLP(cfg["dim"], cfg["hidden_dim"])

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class Llama(nn.Module):
    """A minimal Llama decoder whose parameter names follow HF's LlamaForCausalLM."""

    def __init__(self, cfg: Dict) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg["vocab_size"], cfg["dim"])
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg["n_layers"]))
        self.norm = RMSNorm(cfg["dim"], cfg["eps"])
        self.lm_head = nn.Linear(cfg["dim"], cfg["vocab_size"], bias=False)
        hd = cfg["head_dim"]
        inv_freq = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
        pos = torch.arange(cfg["max_seq_len"], dtype=torch.float32)
        ang = torch.outer(pos, inv_freq)
        ang = torch.cat([ang, ang], dim=-1)
        self.register_buffer("cos", ang.cos(), persistent=False)
        self.register_buffer("sin", ang.sin(), persistent=False)
        self._init_weights()

    def _init_weights(self) -> None:
        std = 0.02
        for name, p in self.named_parameters():
            if p.dim() == 2:
                s = std / math.sqrt(2 * self.cfg["n_layers"]) if name.endswith(("o_proj.weight", "down_proj.weight")) else std
                nn.init.normal_(p, mean=0.0, std=s)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        cos, sin = self.cos[:t], self.sin[:t]
        x = self.embed_tokens(idx)
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.lm_head(self.norm(x))

    def hf_state(self) -> Dict[str, torch.Tensor]:
        """Parameters under their LlamaForCausalLM names."""
        out = {}
        for name, p in self.named_parameters():
            out[name if name.startswith("lm_head") else "model." + name] = p.detach()
        return out


# --------------------------------------------------------------------------- output


def write_safetensors(path: Path, tensors: Dict[str, np.ndarray]) -> None:
    """Write fp16/fp32 numpy arrays as a safetensors file (sorted names, 8-aligned header)."""
    codes = {np.dtype("float16"): "F16", np.dtype("float32"): "F32"}
    header: Dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    blobs = []
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name])
        raw = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": codes[arr.dtype], "shape": list(arr.shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)


def hf_config(cfg: Dict) -> Dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg["vocab_size"],
        "hidden_size": cfg["dim"],
        "intermediate_size": cfg["hidden_dim"],
        "num_hidden_layers": cfg["n_layers"],
        "num_attention_heads": cfg["n_heads"],
        "num_key_value_heads": cfg["n_kv_heads"],
        "head_dim": cfg["head_dim"],
        "max_position_embeddings": cfg["max_seq_len"],
        "rms_norm_eps": cfg["eps"],
        "rope_theta": cfg["rope_theta"],
        "rope_parameters": {"rope_theta": cfg["rope_theta"], "rope_type": "default"},
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID,
        "torch_dtype": "float16",
        "lpu_tokenizer": {"type": "byte", "layout": "llama2c", "dummy_prefix": True},
    }


# --------------------------------------------------------------------------- training


def model_cfg(args: argparse.Namespace) -> Dict:
    return {
        "vocab_size": VOCAB_SIZE,
        "dim": args.dim,
        "hidden_dim": args.hidden,
        "n_layers": args.layers,
        "n_heads": args.heads,
        "n_kv_heads": args.kv_heads,
        "head_dim": args.dim // args.heads,
        "max_seq_len": args.max_seq_len,
        "eps": 1e-5,
        "rope_theta": 10000.0,
    }


def line_starts(stream: np.ndarray, seq: int) -> np.ndarray:
    """Positions just after a newline, leaving room for a full window."""
    starts = np.flatnonzero(stream == NEWLINE_ID) + 1
    return starts[starts + seq < len(stream)]


def batch(stream: np.ndarray, starts: np.ndarray, rng: np.random.Generator, bsz: int, seq: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """``bsz`` rows of ``[BOS, " "] + stream[line start : line start + seq - 1]``."""
    picks = starts[rng.integers(0, len(starts), size=bsz)]
    head = np.array([BOS_ID, ord(" ") + BYTE_OFFSET], dtype=np.int64)
    rows = np.stack([np.concatenate([head, stream[s : s + seq - 1]]) for s in picks])
    t = torch.from_numpy(rows)
    return t[:, :-1], t[:, 1:]


@torch.no_grad()
def evaluate(model: Llama, windows: torch.Tensor, bsz: int) -> float:
    """Mean cross entropy (nats per token, i.e. per byte) over fixed windows."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, windows.shape[0], bsz):
        w = windows[i : i + bsz]
        logits = model(w[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1), reduction="sum")
        total += float(loss)
        count += w[:, 1:].numel()
    model.train()
    return total / count


def lr_at(step: int, args: argparse.Namespace) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    frac = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * (args.min_lr_frac + (1 - args.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * frac)))


def make_optimizer(model: Llama, args: argparse.Namespace) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.dim() == 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.95), eps=1e-8)


def greedy(model: Llama, prompt: str, n: int) -> str:
    """Greedy continuation (full recompute each step; fine for a short sample)."""
    ids = [BOS_ID, ord(" ") + BYTE_OFFSET] + [b + BYTE_OFFSET for b in prompt.encode("utf-8")]
    model.eval()
    with torch.no_grad():
        for _ in range(n):
            ctx = torch.tensor([ids[-model.cfg["max_seq_len"] :]])
            ids.append(int(model(ctx)[0, -1].argmax()))
    model.train()
    out = bytes(i - BYTE_OFFSET for i in ids[2:] if i >= BYTE_OFFSET)
    return out.decode("utf-8", "replace")


def benchmark(args: argparse.Namespace, train: np.ndarray) -> None:
    """Time a few optimiser steps for a handful of candidate shapes."""
    shapes = [
        (256, 4, 8, 4, 688),
        (256, 6, 8, 4, 688),
        (320, 5, 10, 5, 864),
        (192, 6, 6, 3, 512),
    ]
    rng = np.random.default_rng(0)
    starts = line_starts(train, args.seq)
    for dim, layers, heads, kv, hidden in shapes:
        a = argparse.Namespace(**vars(args))
        a.dim, a.layers, a.heads, a.kv_heads, a.hidden = dim, layers, heads, kv, hidden
        torch.manual_seed(0)
        model = Llama(model_cfg(a))
        opt = make_optimizer(model, a)
        n_params = sum(p.numel() for p in model.parameters())
        times = []
        for i in range(args.benchmark + 1):
            x, y = batch(train, starts, rng, a.batch, a.seq)
            t0 = time.perf_counter()
            logits = model(x)
            loss = F.cross_entropy(logits.reshape(-1, VOCAB_SIZE), y.reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if i:  # the first step warms up allocators
                times.append(time.perf_counter() - t0)
        per = sum(times) / len(times)
        tok = a.batch * a.seq
        print(
            f"d{dim} L{layers} H{heads} KV{kv} F{hidden}: {n_params/1e6:.2f} M params, "
            f"{per:.3f} s/step, {tok/per:.0f} tok/s, fp16 size {2*n_params/1e6:.1f} MB",
            flush=True,
        )


def main(argv: List[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "python" / "lpu" / "llm" / "bundled")
    ap.add_argument("--seed", type=int, default=20240611)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=688)
    ap.add_argument("--max-seq-len", type=int, default=512)
    ap.add_argument("--seq", type=int, default=512, help="training window length")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr-frac", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--eval-windows", type=int, default=64)
    ap.add_argument("--benchmark", type=int, default=0, help="time this many steps per candidate shape and exit")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    data_rng = np.random.default_rng(args.seed)

    t_start = time.time()
    root, rels = stdlib_files()
    train, val, train_names, val_names = build_streams(root, rels)
    print(
        f"stdlib {root}: {len(train_names)} training files ({len(train)} tokens), "
        f"{len(val_names)} validation files ({len(val)} tokens)",
        flush=True,
    )
    if args.benchmark:
        benchmark(args, train)
        return 0

    cfg = model_cfg(args)
    model = Llama(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {json.dumps(cfg)}; {n_params} parameters", flush=True)
    opt = make_optimizer(model, args)

    # Fixed validation windows: evenly spaced over the validation stream.
    n_win = min(args.eval_windows, (len(val) - 1) // (args.seq + 1))
    stride = (len(val) - args.seq - 1) // max(1, n_win - 1)
    windows = torch.from_numpy(np.stack([val[i * stride : i * stride + args.seq + 1] for i in range(n_win)]))

    starts = line_starts(train, args.seq)
    history = []
    t_train = time.time()
    c_train = time.process_time()
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args)
        x, y = batch(train, starts, data_rng, args.batch, args.seq)
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, VOCAB_SIZE), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 25 == 0:
            el = time.time() - t_train
            print(f"step {step:5d} loss {loss.item():.4f} lr {lr_at(step, args):.2e} {el:7.1f}s", flush=True)
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            vl = evaluate(model, windows, args.batch)
            history.append({"step": step + 1, "train_loss": loss.item(), "val_loss": vl, "seconds": time.time() - t_train})
            print(f"== step {step + 1}: val {vl:.4f} nats/byte", flush=True)
    train_seconds = time.time() - t_train
    train_cpu_seconds = time.process_time() - c_train

    # Round to fp16 (what ships) and measure again.
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())
    val_fp16 = evaluate(model, windows, args.batch)
    sample = greedy(model, "def ", 160)
    print(f"final val loss (fp16 weights): {val_fp16:.4f} nats/byte", flush=True)
    print("greedy sample for 'def ':\n" + sample, flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.numpy().astype(np.float16) for k, v in model.hf_state().items()}
    write_safetensors(args.out / "model.safetensors", tensors)
    (args.out / "config.json").write_text(json.dumps(hf_config(cfg), indent=2, sort_keys=True) + "\n")
    info = {
        "command": "python tools/train_bundled_model.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "out"},
        "parameters": n_params,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "numpy_version": np.__version__,
        "data": {
            "stdlib_root": str(root),
            "split_rule": "validation iff zlib.crc32(relative_posix_path) % 20 == 0",
            "excluded": "site-packages, dist-packages, test, tests, idle_test, pydoc_data, _sysconfigdata*, encodings charmap tables",
            "train_sequences": "[BOS, ' '] + training stream from a random line start",
            "train_files": len(train_names),
            "train_tokens": int(len(train)),
            "validation_files": val_names,
            "validation_tokens": int(len(val)),
            "validation_windows": int(n_win),
        },
        "history": history,
        "final_val_loss_fp32": history[-1]["val_loss"],
        "final_val_loss_fp16": val_fp16,
        "train_seconds": train_seconds,
        "train_cpu_seconds": train_cpu_seconds,
        "total_seconds": time.time() - t_start,
        "greedy_sample_def": sample,
    }
    (args.out / "training.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"wrote {args.out} in {time.time() - t_start:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
