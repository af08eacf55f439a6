"""The ``lpu`` command line: info, asm, dis, run, demo, generate."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import __version__, isa
from ._core import ChipConfig, Program
from .errors import InputError, LpuError

__all__ = ["main"]


def _config(name: str) -> ChipConfig:
    return ChipConfig(name)


def cmd_info(args: argparse.Namespace) -> int:
    cfg = _config(args.config)
    print(f"lpu {__version__}: chip configuration '{cfg.name}'")
    print(f"  lanes             {cfg.lanes} ({cfg.superlanes} superlanes x {cfg.lanes_per_superlane})")
    print(f"  MEM               2 x {cfg.mem_slices} slices x {cfg.addresses} words x {cfg.lanes} B"
          f" = {cfg.sram_bytes / 2**20:.1f} MiB")
    print(f"  streams           {cfg.streams} eastward + {cfg.streams} westward, {cfg.lanes} B each")
    print(f"  MXM               {cfg.mxm_planes} planes of {cfg.lanes}x{cfg.lanes}"
          f" ({cfg.peak_macs_per_cycle:,} int8 MACs/cycle)")
    print(f"  VXM               {cfg.vxm_alus} ALUs per lane (large: {', '.join(map(str, isa.LARGE_ALUS))})")
    print(f"  clock             {cfg.clock_hz / 1e6:.0f} MHz")
    print(f"  positions         {cfg.positions} stream-register positions, {len(cfg.queues())} instruction queues")
    print("  latencies (d_func, cycles):")
    lats = cfg.latencies
    for i in range(0, len(lats), 4):
        print("    " + "  ".join(f"{k}={v}" for k, v in lats[i : i + 4]))
    print("\nInstruction set:")
    for unit in isa.UNITS:
        names = [i.mnemonic for i in isa.instructions(unit)]
        print(f"  {unit:4} {len(names):2}  {' '.join(names)}")
    print(f"  total {len(isa.instructions())} instructions (docs/isa.md has the full table)")
    return 0


def cmd_asm(args: argparse.Namespace) -> int:
    from .asm import assemble_file

    prog = assemble_file(args.source)
    out = args.output or os.path.splitext(args.source)[0] + ".lpu"
    prog.save(out)
    print(f"{out}: {prog.instruction_count} instructions in {len(prog.queue_names)} queues,"
          f" {len(prog.tensors)} tensors, config {prog.config.name}")
    return 0


def cmd_dis(args: argparse.Namespace) -> int:
    sys.stdout.write(Program.load(args.program).disassemble())
    return 0


def _parse_inputs(items: Sequence[str]) -> Dict[str, np.ndarray]:
    out = {}
    for item in items:
        if "=" not in item:
            raise InputError(f"--input takes NAME=FILE.npy, not '{item}'")
        name, path = item.split("=", 1)
        out[name] = np.load(path, allow_pickle=False)
    return out


def print_report(stats: Dict, file=sys.stdout) -> None:
    """Cycles, predicted time and per-unit utilisation of a run."""
    cycles = stats["cycles"]
    print(f"cycles            {cycles:,}", file=file)
    print(f"predicted time    {stats['time_s'] * 1e6:,.3f} us at {stats['clock_hz'] / 1e6:.0f} MHz", file=file)
    print("unit  issued      busy cycles  utilisation", file=file)
    for unit, u in stats["units"].items():
        if u["issued"]:
            print(f"{unit:5} {u['issued']:<11,} {u['busy_cycles']:<12,} {u['utilization'] * 100:6.1f} %", file=file)
    if stats["macs_int8"] or stats["macs_fp16"]:
        print(f"MXM   {stats['macs_int8']:,} int8 MACs, {stats['macs_fp16']:,} fp16 MACs,"
              f" {stats['mxm_utilization'] * 100:.2f} % of peak", file=file)
    print(f"SRAM  {stats['sram_reads']:,} words read, {stats['sram_writes']:,} written;"
          f" streams {stats['stream_writes']:,} vectors written", file=file)


def cmd_run(args: argparse.Namespace) -> int:
    from .runner import Runner

    prog = Program.load(args.program)
    run = Runner(prog, entry=args.entry, max_cycles=args.max_cycles, trace=args.trace,
                 trace_window=_window(args.trace_window))
    outputs = run(**_parse_inputs(args.input))
    if args.out_dir:
        from .files import save_npy

        os.makedirs(args.out_dir, exist_ok=True)
        for name, arr in outputs.items():
            save_npy(os.path.join(args.out_dir, name + ".npy"), arr)
    for name, arr in outputs.items():
        print(f"{name}: {arr.dtype} {arr.shape}")
        if not args.out_dir:
            print(np.array2string(arr, threshold=64, edgeitems=3))
    assert run.last is not None
    print_report(run.last.stats)
    if args.trace:
        print(f"trace written to {args.trace} (open it in https://ui.perfetto.dev or chrome://tracing)")
    return 0


def _window(text: Optional[str]) -> Optional[Tuple[int, int]]:
    if text is None:
        return None
    try:
        a, b = (int(v) for v in text.split(":"))
    except ValueError:
        raise InputError(f"--trace-window takes FIRST:END cycles, e.g. 0:5000 (got {text!r})") from None
    return a, b


def cmd_report(args: argparse.Namespace) -> int:
    from .runner import Runner

    prog = Program.load(args.program)
    run = Runner(prog, entry=args.entry, max_cycles=args.max_cycles)
    run(**_parse_inputs(args.input))
    print(run.chip.report(), end="")
    if args.png:
        from .report import save_plot

        save_plot(run.chip, args.png, bins=args.bins)
        print(f"utilisation plot written to {args.png}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .examples import vector_add_program

    cfg = _config(args.config)
    prog = vector_add_program(cfg, rows=args.rows)
    from .runner import Runner

    rng = np.random.default_rng(0)
    x = rng.integers(-100, 100, size=(args.rows, cfg.lanes), dtype=np.int8)
    y = rng.integers(-100, 100, size=(args.rows, cfg.lanes), dtype=np.int8)
    out = Runner(prog)(x=x, y=y)
    ok = np.array_equal(out["z"], (x.astype(np.int16) + y).astype(np.int8))
    print(f"z = x + y for {args.rows} int8 vectors of {cfg.lanes} lanes on {cfg.name}: "
          f"{'matches numpy' if ok else 'MISMATCH'}")
    print(np.array2string(out["z"], threshold=24, edgeitems=2))
    return 0 if ok else 1


def cmd_generate(args: argparse.Namespace) -> int:
    from .llm import load, load_bundled
    from .llm.generate import Generator, check_request
    from .llm.onchip import print_progress

    # Options are checked before the model is loaded and compiled.
    check_request(args.max_tokens, args.temperature, args.top_k, args.top_p)
    t0 = time.perf_counter()
    sys.stderr.write(f"loading {'model ' + args.model if args.model else 'the bundled model'}...\n")
    model = load(args.model) if args.model else load_bundled()
    c = model.config
    sys.stderr.write(f"{c.n_layers} layers, dim {c.dim}, {c.n_heads} heads ({c.n_kv_heads} kv) of {c.head_dim}, "
                     f"ffn {c.hidden_dim}, vocab {c.vocab_size}; compiling for {args.config}\n")
    gen = Generator(model, config=_config(args.config), max_seq=args.max_seq, progress=print_progress,
                    weights=args.weights)
    gen.chip_model.trace_next = args.trace
    sys.stderr.write(f"ready in {time.perf_counter() - t0:.1f} s: {gen.chip_model.program.instruction_count:,} "
                     f"instructions per decode step\n")
    out = sys.stdout
    out.write(args.prompt)
    out.flush()
    n = 0
    for tok in gen.generate(args.prompt, max_new_tokens=args.max_tokens, temperature=args.temperature,
                            top_k=args.top_k, top_p=args.top_p, seed=args.seed):
        out.write(tok.text)
        out.flush()
        n += 1
    out.write(gen.tail + "\n")
    s = gen.stats
    rep = sys.stderr
    rep.write("\n--- report\n")
    rep.write(f"tokens            {n} generated after {s.steps - max(n - 1, 0)} prompt tokens "
              f"({s.steps} decode steps on the chip)\n")
    rep.write(f"emulator speed    {s.host_tokens_per_second:,.1f} tokens/s on this machine "
              f"({1e3 * s.host_seconds / max(s.steps, 1):.1f} ms per decode step)\n")
    rep.write(f"emulated cycles   {s.cycles_per_token:,.0f} per token\n")
    rep.write(f"predicted LPU     {s.chip_seconds_per_token * 1e6:,.1f} us per token = "
              f"{s.chip_tokens_per_second:,.0f} tokens/s at {s.clock_hz / 1e6:.0f} MHz\n")
    rep.write(f"MXM utilisation   {s.mxm_utilization * 100:.2f} % of the {gen.chip_model.config.peak_macs_per_cycle:,} "
              f"MACs/cycle peak\n")
    if args.trace:
        rep.write(f"trace             the first decode step, in {args.trace}\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lpu", description="Cycle-level emulator of Groq's Tensor Streaming Processor.")
    p.add_argument("--version", action="version", version=f"lpu {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("info", help="print the chip configuration and an ISA summary")
    s.add_argument("--config", default="tsp_v1", help="chip preset (tsp_v1, tsp_small, tsp_tiny)")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("asm", help="assemble a source file into a program file")
    s.add_argument("source")
    s.add_argument("-o", "--output", help="program file to write (default: SOURCE with .lpu)")
    s.set_defaults(func=cmd_asm)

    s = sub.add_parser("dis", help="disassemble a program file")
    s.add_argument("program")
    s.set_defaults(func=cmd_dis)

    s = sub.add_parser("run", help="run a program file on named .npy inputs")
    s.add_argument("program")
    s.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy")
    s.add_argument("--out-dir", help="write each output tensor to DIR/NAME.npy")
    s.add_argument("--entry", help="entry point (default: main)")
    s.add_argument("--max-cycles", type=int, help="stop after this many cycles")
    s.add_argument("--trace", metavar="FILE.json", help="write a Chrome trace of the run (Perfetto, chrome://tracing)")
    s.add_argument("--trace-window", metavar="FIRST:END", help="trace only these cycles")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("report", help="run a program and print its utilisation table (and plot it)")
    s.add_argument("program")
    s.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy")
    s.add_argument("--entry", help="entry point (default: main)")
    s.add_argument("--max-cycles", type=int, help="stop after this many cycles")
    s.add_argument("--png", metavar="FILE.png", help="save utilisation over time (needs matplotlib)")
    s.add_argument("--bins", type=int, default=200, help="time spans in the plot")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("generate", help="generate text with a language model running on the emulated chip")
    s.add_argument("--prompt", default="def ", help="text to continue (default: 'def ')")
    s.add_argument("--max-tokens", type=int, default=64, help="tokens to generate")
    s.add_argument("--model", help="a Hugging Face model directory or a llama2.c .bin (default: the bundled model)")
    s.add_argument("--temperature", type=float, default=0.8, help="0 for greedy decoding by the chip's argmax")
    s.add_argument("--top-k", type=int, default=40)
    s.add_argument("--top-p", type=float, default=1.0)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--config", default="tsp_v1", help="chip preset")
    s.add_argument("--max-seq", type=int, default=None, help="positions in the on-chip KV cache (<= 320)")
    s.add_argument("--weights", choices=["float16", "int8"], default="float16",
                   help="MXM weights: fp16, or int8 with per-channel scales (activations quantised on chip)")
    s.add_argument("--trace", metavar="FILE.json", help="write a Chrome trace of the first decode step")
    s.set_defaults(func=cmd_generate)

    s = sub.add_parser("demo", help="run a small example program and check it against numpy")
    s.add_argument("--config", default="tsp_v1")
    s.add_argument("--rows", type=int, default=8)
    s.set_defaults(func=cmd_demo)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args))
    except LpuError as e:
        print(f"lpu {args.command}: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"lpu {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"lpu {args.command}: interrupted", file=sys.stderr)
        return 130
