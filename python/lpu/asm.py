"""The assembler: TSP assembly text -> :class:`Program`.

The language is described in ``docs/assembly.md``. Operands are parsed by their *kind*
as the ISA table gives it (``lpu.isa``): there is no per-instruction code here, so a
new instruction in the table is assembled without touching this file. Every error in
the source is collected and reported together, each with file:line:col, the offending
text and what was expected.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import _core, isa
from ._core import ChipConfig, Program, Tensor
from .errors import AssemblyError, LpuError, SourceError

__all__ = ["assemble", "assemble_file", "disassemble"]

_STREAMS = 32
_KINDS_DTYPE = {
    "i8": "int8",
    "i16": "int16",
    "i32": "int32",
    "f16": "float16",
    "f32": "float32",
    "bf16": "bfloat16",
}
_DTYPE_CODES = {"i8": 0, "i16": 1, "i32": 2, "f16": 3, "f32": 4, "bf16": 5}
_NUMPY_TO_SHORT = {v: k for k, v in _KINDS_DTYPE.items()}
_TENSOR_KINDS = ("input", "output", "constant", "scratch")


class _Err(Exception):
    """A problem at a column of the current line (internal)."""

    def __init__(self, col: int, text: str, message: str):
        super().__init__(message)
        self.col = col
        self.text = text
        self.message = message


# ---------------------------------------------------------------------------------------
# Integer expressions: literals (decimal, 0x, 0b), constants, + - * // % and parentheses.

_TOKEN = re.compile(r"\s*(?:(0x[0-9a-fA-F_]+|0b[01_]+|\d[\d_]*)|([A-Za-z_][A-Za-z0-9_.]*)|(//|[-+*%()]))")


def _eval(text: str, col: int, consts: Dict[str, int]) -> int:
    """Evaluate an integer expression; `col` is where `text` starts on the line."""
    toks: List[Tuple[str, str, int]] = []
    pos = 0
    s = text.rstrip()
    while pos < len(s):
        m = _TOKEN.match(s, pos)
        if not m:
            raise _Err(col + pos, s[pos:], "expected a number, a constant or + - * // % ( )")
        kind = "num" if m.group(1) else "name" if m.group(2) else "op"
        toks.append((kind, m.group(m.lastindex or 0), col + m.start(m.lastindex or 0)))
        pos = m.end()
    if not toks:
        raise _Err(col, text, "expected a value")
    i = 0

    def peek() -> Optional[Tuple[str, str, int]]:
        return toks[i] if i < len(toks) else None

    def atom() -> int:
        nonlocal i
        t = peek()
        if t is None:
            raise _Err(col + len(text), "", "expression ends too early")
        i += 1
        k, v, c = t
        if k == "num":
            return int(v.replace("_", ""), 0)
        if k == "name":
            if v not in consts:
                raise _Err(c, v, "unknown constant (define it with .const)")
            return consts[v]
        if v == "-":
            return -atom()
        if v == "+":
            return atom()
        if v == "(":
            r = add()
            t2 = peek()
            if t2 is None or t2[1] != ")":
                raise _Err(c, v, "unclosed parenthesis")
            i += 1
            return r
        raise _Err(c, v, "expected a value")

    def mul() -> int:
        nonlocal i
        r = atom()
        while (t := peek()) is not None and t[1] in ("*", "//", "%"):
            i += 1
            rhs = atom()
            if t[1] != "*" and rhs == 0:
                raise _Err(t[2], t[1], "division by zero")
            r = r * rhs if t[1] == "*" else r // rhs if t[1] == "//" else r % rhs
        return r

    def add() -> int:
        nonlocal i
        r = mul()
        while (t := peek()) is not None and t[1] in ("+", "-"):
            i += 1
            r = r + mul() if t[1] == "+" else r - mul()
        return r

    r = add()
    if i != len(toks):
        k, v, c = toks[i]
        raise _Err(c, v, "unexpected text after the expression")
    return r


# ---------------------------------------------------------------------------------------
# Operand kinds.

_STREAM_RE = re.compile(r"^s(?:(\d+)|\{(.*)\})([ew])$")
_ALU_RE = re.compile(r"^alu(?:(\d+)|\{(.*)\})$")


def _inner(m: "re.Match[str]", col: int, consts: Dict[str, int]) -> int:
    if m.group(1) is not None:
        return int(m.group(1))
    return _eval(m.group(2), col + m.start(2), consts)


def _parse_stream(tok: str, col: int, consts: Dict[str, int]) -> int:
    m = _STREAM_RE.match(tok)
    if not m:
        raise _Err(col, tok, "expected a stream such as s5e (eastward) or s5w (westward)")
    idx = _inner(m, col, consts)
    if not 0 <= idx < _STREAMS:
        raise _Err(col, tok, f"stream index must be 0..{_STREAMS - 1}")
    return idx + (_STREAMS if m.group(3) == "w" else 0)


def _parse_count(bits: int) -> Callable[[str, int, Dict[str, int]], int]:
    def parse(tok: str, col: int, consts: Dict[str, int]) -> int:
        v = _eval(tok, col, consts)
        if not 0 <= v < (1 << bits):
            raise _Err(col, tok, f"value {v} is out of range 0..{(1 << bits) - 1}")
        return v

    return parse


def _parse_src(tok: str, col: int, consts: Dict[str, int]) -> int:
    m = _ALU_RE.match(tok)
    if m:
        alu = _inner(m, col, consts)
        if not 0 <= alu < 16:
            raise _Err(col, tok, "ALU index must be 0..15")
        return _core.ALU_SRC_BASE + alu
    try:
        return _parse_stream(tok, col, consts)
    except _Err:
        raise _Err(col, tok, "expected a stream (s5e, s5w) or a chained ALU output (alu3)")


def _parse_dst(tok: str, col: int, consts: Dict[str, int]) -> int:
    if tok == "-":
        return _core.DST_NONE
    try:
        return _parse_stream(tok, col, consts)
    except _Err:
        raise _Err(col, tok, "expected a stream (s5e, s5w) or - for none")


def _parse_dtype(tok: str, col: int, consts: Dict[str, int]) -> int:
    short = _NUMPY_TO_SHORT.get(tok, tok)
    if short not in _DTYPE_CODES:
        raise _Err(col, tok, "expected a type: i8 i16 i32 f16 f32 bf16")
    return _DTYPE_CODES[short]


def _kind_parser(f: isa.Field) -> Callable[[str, int, Dict[str, int]], int]:
    if f.kind == "stream":
        return _parse_stream
    if f.kind == "src":
        return _parse_src
    if f.kind == "dst":
        return _parse_dst
    if f.kind == "dtype":
        return _parse_dtype
    return _parse_count(f.bits)


# ---------------------------------------------------------------------------------------
# Splitting lines.


def _strip_comment(line: str) -> str:
    out = []
    quote = escaped = False
    for ch in line:
        if quote and escaped:
            escaped = False
        elif quote and ch == "\\":
            escaped = True
        elif ch == '"':
            quote = not quote
        elif not quote and ch in ";#":
            break
        out.append(ch)
    return "".join(out).rstrip()


def _split_top(text: str, start: int, sep: str) -> List[Tuple[str, int]]:
    """Split at `sep` outside brackets, braces and quotes; keep columns (1-based)."""
    parts: List[Tuple[str, int]] = []
    depth = 0
    quote = escaped = False
    cur_start = 0
    for i, ch in enumerate(text):
        if quote and escaped:
            escaped = False
        elif quote and ch == "\\":
            escaped = True
        elif ch == '"':
            quote = not quote
        elif not quote and ch in "[({":
            depth += 1
        elif not quote and ch in "])}":
            depth -= 1
        elif not quote and depth == 0 and (ch == sep or (sep == " " and ch in " \t")):
            parts.append((text[cur_start:i], start + cur_start))
            cur_start = i + 1
    parts.append((text[cur_start:], start + cur_start))
    out = []
    for p, c in parts:
        stripped = p.strip()
        if stripped:
            out.append((stripped, c + (len(p) - len(p.lstrip()))))
        elif sep == ",":
            out.append(("", c))
    return out


def _unquote(tok: str, col: int) -> str:
    if len(tok) < 2 or tok[0] != '"' or tok[-1] != '"':
        raise _Err(col, tok, 'expected a quoted string "..."')
    body = tok[1:-1]
    out = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            m = re.match(r"u\{([0-9a-fA-F]{1,6})\}", body[i + 1 :])
            if m:
                out.append(chr(int(m.group(1), 16)))
                i += 1 + m.end()
                continue
            out.append({"n": "\n", "t": "\t", "r": "\r"}.get(nxt, nxt))
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


# ---------------------------------------------------------------------------------------
# The assembler.


@dataclass
class _Queue:
    name: str
    words: List[int] = field(default_factory=list)
    lines: List[Tuple[int, int]] = field(default_factory=list)  # (line, col) per word
    cursor: Optional[int] = 0  # next issue cycle; None after sync (unknown)
    #: False for a section whose .queue named no queue: its lines are still checked.
    real: bool = True
    last_issue: int = 0
    last_unit: bool = False


@dataclass
class _Asm:
    path: str
    base_dir: str
    errors: List[SourceError] = field(default_factory=list)
    config: Optional[ChipConfig] = None
    preset: str = "tsp_v1"
    config_name: Optional[str] = None
    overrides: Dict[str, int] = field(default_factory=dict)
    consts: Dict[str, int] = field(default_factory=dict)
    aliases: Dict[str, str] = field(default_factory=dict)
    meta: Dict[str, str] = field(default_factory=dict)
    queues: Dict[str, _Queue] = field(default_factory=dict)
    queue: Optional[_Queue] = None
    tensors: List[Tuple[Tensor, int, Optional[np.ndarray]]] = field(default_factory=list)
    words: List[Tuple[str, int, int, bytes, int]] = field(default_factory=list)
    entries: Dict[str, Dict[str, int]] = field(default_factory=dict)
    line_no: int = 0
    line_text: str = ""

    def error(self, col: int, text: str, message: str, line: Optional[int] = None) -> None:
        self.errors.append(SourceError(self.path, line or self.line_no, col, text, message))

    # -- configuration ------------------------------------------------------------
    def chip(self) -> ChipConfig:
        if self.config is None:
            try:
                self.config = ChipConfig(self.preset, name=self.config_name, **self.overrides)
            except LpuError as e:
                self.error(1, "", f"chip configuration: {e}")
                self.config = ChipConfig(self.preset)
        return self.config

    def subst(self, tok: str) -> str:
        seen = 0
        while tok in self.aliases and seen < 16:
            tok = self.aliases[tok]
            seen += 1
        return tok

    # -- lines ---------------------------------------------------------------------
    def line(self, raw: str) -> None:
        text = _strip_comment(raw)
        self.line_text = text
        if not text.strip():
            return
        body = text.lstrip()
        col = len(text) - len(body) + 1
        if body.startswith("."):
            self.directive(body, col)
        else:
            self.instruction(body, col)

    def directive(self, body: str, col: int) -> None:
        parts = _split_top(body, col, " ")
        name, ncol = parts[0]
        args = parts[1:]
        handler = getattr(self, "d_" + name[1:], None)
        if handler is None:
            raise _Err(ncol, name, "unknown directive (see docs/assembly.md)")
        handler(args, ncol)

    def need(self, args: Sequence[Tuple[str, int]], n: int, col: int, usage: str) -> None:
        if len(args) != n:
            at = args[n][1] if len(args) > n else col
            raise _Err(at, "", f"expected: {usage}")

    def config_frozen(self, col: int, what: str) -> None:
        if self.config is not None:
            raise _Err(col, what, f"{what} must come before the first .queue, .tensor or .word")

    def d_chip(self, args: Sequence[Tuple[str, int]], col: int) -> None:
        self.need(args, 1, col, ".chip PRESET")
        self.config_frozen(col, ".chip")
        preset, c = args[0]
        if preset not in ChipConfig.presets():
            raise _Err(c, preset, f"unknown chip preset (one of {', '.join(ChipConfig.presets())})")
        self.preset = preset

    def d_name(self, args: Sequence[Tuple[str, int]], col: int) -> None:
        self.need(args, 1, col, ".name CONFIG_NAME")
        self.config_frozen(col, ".name")
        self.config_name = args[0][0]

    def d_set(self, args: Sequence[Tuple[str, int]], col: int) -> None:
        self.need(args, 2, col, ".set PARAMETER VALUE")
        self.config_frozen(col, ".set")
        (key, kc), (val, vc) = args
        known = dict(ChipConfig(self.preset).params())
        if key not in known:
            raise _Err(kc, key, "unknown chip parameter (see ChipConfig.params())")
        self.overrides[key] = _eval(val, vc, self.consts)

    def d_const(self, args: Sequence[Tuple[str, int]], col: int) -> None:
        if len(args) < 2:
            raise _Err(col, "", "expected: .const NAME EXPRESSION")
        (name, nc) = args[0]
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_.]*$", name):
            raise _Err(nc, name, "constant names are letters, digits, _ and .")
        expr_col = args[1][1]
        expr = self.line_text[expr_col - 1 :].strip()
        self.consts[name] = _eval(expr, expr_col, self.consts)

    def d_alias(self, args: Sequence[Tuple[str, int]], col: int) -> None:
        self.need(args, 2, col, ".alias NAME TOKEN")
        self.aliases[args[0][0]] = args[1][0]

    def d_meta(self, args: Sequence[Tuple[str, int]], col: int) -> None:
        self.need(args, 2, col, '.meta KEY "VALUE"')
        self.meta[args[0][0]] = _unquote(*args[1])

    def d_queue(self, args: Sequence[Tuple[str, int]], col: int) -> None:
        self.need(args, 1, col, ".queue QUEUE_NAME")
        name, c = args[0]
        name = self.subst(name)
        names = [q[0] for q in self.chip().queues()]
        if name not in names:
            near = [n for n in names if n.split(".")[0] == name.split(".")[0]][:4]
            hint = f" (e.g. {', '.join(near)})" if near else ""
            self.queue = _Queue(name, real=False)
            raise _Err(c, name, f"no such queue on {self.chip().name}{hint}")
        self.queue = self.queues.setdefault(name, _Queue(name))

    def d_entry(self, args: Sequence[Tuple[str, int]], col: int) -> None:
        if not args:
            raise _Err(col, "", "expected: .entry NAME [QUEUE=INDEX ...]")
        name = args[0][0]
        starts: Dict[str, int] = {}
        for tok, c in args[1:]:
            if "=" not in tok:
                raise _Err(c, tok, "expected QUEUE=INDEX")
            q, v = tok.split("=", 1)
            starts[self.subst(q)] = _eval(v, c + len(q) + 1, self.consts)
        self.entries[name] = starts

    def location(self, tok: str, col: int) -> Tuple[str, int]:
        tok = self.subst(tok)
        m = re.match(r"^([WE])(\d+)$", tok)
        if not m:
            raise _Err(col, tok, "expected a MEM slice such as W3 or E12")
        return m.group(1), int(m.group(2))

    def d_word(self, args: Sequence[Tuple[str, int]], col: int) -> None:
        self.need(args, 3, col, ".word SLICE ADDRESS HEX")
        (sl, sc), (ad, ac), (hx, hc) = args
        hemi, slice_ = self.location(sl, sc)
        addr = _eval(ad, ac, self.consts)
        lanes = self.chip().lanes
        try:
            data = bytes.fromhex(hx)
        except ValueError:
            raise _Err(hc, hx[:16], "expected hexadecimal bytes")
        if len(data) > lanes:
            raise _Err(hc, hx[:16], f"a word is {lanes} bytes; got {len(data)}")
        self.words.append((hemi, slice_, addr, data.ljust(lanes, b"\0"), self.line_no))

    def d_data(self, args: Sequence[Tuple[str, int]], col: int) -> None:
        if len(args) < 3:
            raise _Err(col, "", ".data SLICE ADDRESS BYTE, BYTE, ...")
        (sl, sc), (ad, ac) = args[0], args[1]
        hemi, slice_ = self.location(sl, sc)
        addr = _eval(ad, ac, self.consts)
        start = args[2][1]
        values = []
        for tok, c in _split_top(self.line_text[start - 1 :], start, ","):
            v = _eval(tok, c, self.consts)
            if not -128 <= v <= 255:
                raise _Err(c, tok, "byte values are -128..255")
            values.append(v & 0xFF)
        lanes = self.chip().lanes
        for i in range(0, len(values), lanes):
            chunk = bytes(values[i : i + lanes]).ljust(lanes, b"\0")
            self.words.append((hemi, slice_, addr + i // lanes, chunk, self.line_no))

    def d_tensor(self, args: Sequence[Tuple[str, int]], col: int) -> None:
        if len(args) < 4:
            raise _Err(col, "", "expected: .tensor NAME KIND DTYPE [SHAPE] key=value ...")
        kind, kc = args[1]
        if kind not in _TENSOR_KINDS:
            raise _Err(kc, kind, f"tensor kind must be one of {', '.join(_TENSOR_KINDS)}")
        self.tensor(args[0], kind, args[2:], col)

    def d_input(self, args: Sequence[Tuple[str, int]], col: int) -> None:
        self.short_tensor("input", args, col)

    def d_output(self, args: Sequence[Tuple[str, int]], col: int) -> None:
        self.short_tensor("output", args, col)

    def d_scratch(self, args: Sequence[Tuple[str, int]], col: int) -> None:
        self.short_tensor("scratch", args, col)

    def d_constant(self, args: Sequence[Tuple[str, int]], col: int) -> None:
        self.short_tensor("constant", args, col)

    def short_tensor(self, kind: str, args: Sequence[Tuple[str, int]], col: int) -> None:
        if len(args) < 3:
            raise _Err(col, "", f"expected: .{kind} NAME DTYPE [SHAPE] key=value ...")
        self.tensor(args[0], kind, args[1:], col)

    def tensor(self, name_arg: Tuple[str, int], kind: str, rest: Sequence[Tuple[str, int]], col: int) -> None:
        name, _nc = name_arg
        (dt, dc), (shape_tok, shc) = rest[0], rest[1]
        short = _NUMPY_TO_SHORT.get(dt, dt)
        if short not in _KINDS_DTYPE:
            raise _Err(dc, dt, "expected a type: i8 i16 i32 f16 f32 bf16")
        if not (shape_tok.startswith("[") and shape_tok.endswith("]")):
            raise _Err(shc, shape_tok, "expected a shape such as [4,320]")
        shape = []
        for tok, c in _split_top(shape_tok[1:-1], shc + 1, ","):
            if tok:
                shape.append(_eval(tok, c, self.consts))
        opts: Dict[str, Tuple[str, int]] = {}
        for tok, c in rest[2:]:
            if "=" not in tok:
                raise _Err(c, tok, "expected key=value (hemi, addr, slices, split, file, values)")
            k, v = tok.split("=", 1)
            opts[k] = (v, c + len(k) + 1)
        for k, (v, c) in opts.items():
            if k not in ("hemi", "addr", "slices", "split", "file", "values"):
                raise _Err(c - len(k) - 1, k, "unknown key (hemi, addr, slices, split, file, values)")
        for k in ("hemi", "addr", "slices"):
            if k not in opts:
                raise _Err(col, name, f"missing {k}=...")
        hemi = self.subst(opts["hemi"][0])
        if hemi not in ("W", "E"):
            raise _Err(opts["hemi"][1], hemi, "hemisphere is W or E")
        addr = _eval(opts["addr"][0], opts["addr"][1], self.consts)
        split = _eval(*opts["split"], self.consts) if "split" in opts else 1
        slices: List[int] = []
        stok, sc = opts["slices"]
        for part, pc in _split_top(stok, sc, ","):
            if re.match(r"^\d+-\d+$", part):
                a, b = (int(x) for x in part.split("-"))
                slices.extend(range(a, b + 1))
            else:
                slices.append(_eval(part, pc, self.consts))
        if any(t.name == name for t, _, _ in self.tensors):
            raise _Err(col, name, "a tensor of this name is already declared")
        try:
            t = Tensor(name, kind, _KINDS_DTYPE[short], shape, hemi, addr, slices, split)
            _core.check_tensor(self.chip(), t)
        except (LpuError, OverflowError) as e:
            raise _Err(col, name, str(e))
        data = None
        if "file" in opts or "values" in opts:
            if kind not in ("constant", "scratch", "input"):
                raise _Err(col, name, "only constant, scratch and input tensors take initial data")
            data = self.tensor_data(t, opts)
        elif kind == "constant":
            raise _Err(col, name, "a constant tensor needs file=PATH.npy or values=[...]")
        self.tensors.append((t, self.line_no, data))

    def tensor_data(self, t: Tensor, opts: Dict[str, Tuple[str, int]]) -> np.ndarray:
        from .layout import check_array, numpy_dtype

        if "file" in opts:
            fname, fc = opts["file"]
            if fname.startswith('"'):
                fname = _unquote(fname, fc)
            full = os.path.join(self.base_dir, fname)
            try:
                arr = np.load(full, allow_pickle=False)
            except (OSError, ValueError) as e:
                raise _Err(fc, fname, f"cannot read .npy file: {e}")
        else:
            vtok, vc = opts["values"]
            if not (vtok.startswith("[") and vtok.endswith("]")):
                raise _Err(vc, vtok[:20], "expected values=[v, v, ...]")
            vals = []
            for tok, c in _split_top(vtok[1:-1], vc + 1, ","):
                try:
                    vals.append(float(tok) if re.search(r"[.eEn]", tok) else _eval(tok, c, self.consts))
                except ValueError:
                    raise _Err(c, tok, "expected a number")
            want = int(np.prod(t.shape)) if t.shape else 1
            if len(vals) != want:
                raise _Err(vc, vtok[:20], f"shape {t.shape} needs {want} values, got {len(vals)}")
            arr = np.array(vals, dtype=np.float64).reshape(t.shape)
            dt = numpy_dtype(t)
            if dt.kind == "i":
                info = np.iinfo(dt)
                if np.any(arr != np.round(arr)) or arr.min() < info.min or arr.max() > info.max:
                    raise _Err(vc, vtok[:20], f"values do not fit {t.dtype}")
            arr = arr.astype(dt)
        try:
            return check_array(t, arr)
        except LpuError as e:
            raise _Err(opts.get("file", opts.get("values", ("", 0)))[1], t.name, str(e))

    # -- instructions ------------------------------------------------------------------
    def instruction(self, body: str, col: int) -> None:
        if self.queue is None:
            raise _Err(col, body.split()[0], "instruction outside a .queue section")
        q = self.queue
        at: Optional[int] = None
        if body.startswith("@"):
            m = re.match(r"^@(\S+)\s*", body)
            if not m:
                raise _Err(col, "@", "expected a cycle after @ (e.g. @12 read 0, s0e)")
            at = _eval(m.group(1), col + 1, self.consts)
            col += m.end()
            body = body[m.end() :]
            if not body:
                raise _Err(col, "", "expected an instruction after @cycle")
        m = re.match(r"^(\S+)\s*", body)
        assert m
        mnemonic = m.group(1)
        try:
            ins = isa.instruction(mnemonic)
        except LpuError:
            raise _Err(col, mnemonic, "unknown instruction (see docs/isa.md)")
        ops_text = body[m.end() :]
        ops_col = col + m.end()
        ops = _split_top(ops_text, ops_col, ",") if ops_text.strip() else []
        if len(ops) != len(ins.fields):
            want = ", ".join(f"{f.name}:{f.kind}" for f in ins.fields) or "no operands"
            raise _Err(col, body, f"{mnemonic} takes {len(ins.fields)} operand(s): {want}")
        values = []
        errs = []
        for f, (tok, c) in zip(ins.fields, ops):
            if not tok:
                errs.append(_Err(c, "", f"missing operand {f.name}"))
                continue
            try:
                values.append(_kind_parser(f)(self.subst(tok), c, self.consts))
            except _Err as e:
                errs.append(e)
        for err in errs[1:]:
            self.error(err.col, err.text, err.message)
        if errs:
            raise errs[0]
        if at is not None:
            if q.cursor is None:
                raise _Err(col, f"@{at}", "cannot place at a cycle after sync: the resume cycle depends on a notify")
            if at < q.cursor:
                raise _Err(col, f"@{at}", f"cycle {at} is already past: queue {q.name} is busy until cycle {q.cursor}")
            gap = at - q.cursor
            most = (1 << 32) - 1  # cycles one NOP can wait
            nops = -(-gap // most)
            if len(q.words) + nops > self.chip().instruction_capacity:
                raise _Err(col, f"@{at}", f"cycle {at} is out of reach: the NOPs to wait for it exceed the "
                           "instruction memory")
            while gap > 0:
                n = min(gap, most)
                self.emit(q, isa.encode("nop", [n]), "nop", [n], col)
                gap -= n
        try:
            word = ins.encode(*values)
        except LpuError as e:
            raise _Err(col, body, str(e))
        self.emit(q, word, mnemonic, values, col)

    def emit(self, q: _Queue, word: int, mnemonic: str, values: List[int], col: int) -> None:
        """Append a word and advance the queue's cycle cursor by the issue rules."""
        q.words.append(word)
        q.lines.append((self.line_no, col))
        ins = isa.instruction(mnemonic)
        if q.cursor is None:
            q.last_unit = ins.unit != "ICU"
            return
        if mnemonic == "nop":
            q.cursor += values[0]
        elif mnemonic == "repeat":
            if values[0] > 0:
                q.cursor = q.last_issue + values[0] * values[1] + 1
        elif mnemonic == "sync":
            q.cursor = None
        else:
            q.last_issue = q.cursor
            q.cursor += max(1, ins.latency_cycles(self.chip())) if mnemonic == "ifetch" else 1
        q.last_unit = ins.unit != "ICU"

    # -- the end -----------------------------------------------------------------------
    def finish(self) -> Optional[Program]:
        cfg = self.chip()
        for q in self.queues.values():
            if not q.real:
                continue
            for index, fieldname, msg in _core.check_code(cfg, q.name, q.words):
                line, col = q.lines[index]
                self.error(col, isa.disassemble(q.words[index]) if fieldname != "opcode" else "", f"{fieldname}: {msg}", line)
        inits: List[Tuple[str, int, int, bytes]] = []
        seen: Dict[Tuple[str, int, int], int] = {}
        for hemi, slice_, addr, data, line in self.words:
            key = (hemi, slice_, addr)
            if key in seen:
                self.error(1, f"{hemi}{slice_} {addr}", f"word already initialised on line {seen[key]}", line)
            seen[key] = line
            inits.append((hemi, slice_, addr, data))
        tensors = []
        for t, line, arr in self.tensors:
            tensors.append(t)
            if arr is not None:
                for hemi, slice_, addr, b in _core.pack_tensor(cfg, t, arr.reshape(-1).view(np.uint8)):
                    for i in range(0, len(b), cfg.lanes):
                        key = (hemi, slice_, addr + i // cfg.lanes)
                        if key in seen:
                            self.error(1, t.name, f"data overlaps the word initialised on line {seen[key]}", line)
                        seen[key] = line
                    inits.append((hemi, slice_, addr, b))
        for name, starts in self.entries.items():
            for qn, pc in starts.items():
                if qn not in self.queues and qn not in [x[0] for x in cfg.queues()]:
                    self.error(1, qn, f"entry '{name}': no such queue")
        if self.errors:
            return None
        try:
            return Program(
                cfg,
                {name: q.words for name, q in self.queues.items()},
                inits,
                tensors,
                self.entries,
                self.meta,
            )
        except LpuError as e:
            self.error(1, "", str(e), self.line_no)
            return None


def assemble(text: str, path: Optional[str] = None) -> Program:
    """Assemble source text into a Program.

    ``path`` names the source in error messages and is the directory that relative
    ``file=`` paths of ``.npy`` data are read from (the working directory if None).
    Raises :class:`AssemblyError` listing every error found.
    """
    name = path or "<string>"
    base = os.path.dirname(os.path.abspath(path)) if path else os.getcwd()
    a = _Asm(name, base)
    # Lines end at \n (or \r\n); other Unicode line separators may sit inside strings.
    for n, raw in enumerate(text.split("\n"), start=1):
        raw = raw[:-1] if raw.endswith("\r") else raw
        a.line_no = n
        try:
            a.line(raw)
        except _Err as e:
            a.error(e.col, e.text, e.message)
    prog = a.finish()
    if prog is None:
        a.errors.sort(key=lambda e: (e.line, e.col))
        raise AssemblyError(a.errors)
    return prog


def assemble_file(path: str) -> Program:
    """Assemble a source file."""
    with open(path, encoding="utf-8") as f:
        return assemble(f.read(), path)


def disassemble(program: Program) -> str:
    """Assembly text of a program; it re-assembles to the identical binary."""
    return program.disassemble()
