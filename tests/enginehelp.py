"""Shared helpers for the engine tests: a program builder that computes issue cycles from
the documented timing rule, runners, and independent numpy/mpmath references of the
numerics in docs/numerics.md.

Nothing here asks the emulator what the answer should be. Issue cycles and cycle counts
follow docs/timing.md:

* a value produced at position p by an instruction issued on cycle t with latency d is
  consumed at position q by an instruction issued on ``t + d + |p - q|``;
* a finished program takes ``max(issue + d_func) + 1 + (superlanes - 1)`` cycles.

Values are checked against numpy (float64 computations rounded once to the target type),
exact rational rounding (``round_exact``) and mpmath.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

import lpu

# ---------------------------------------------------------------------------------------
# Chip geometry and timing, read from ChipConfig (never from a run).

HEMI = {"W": 0, "E": 1}


@lru_cache(maxsize=None)
def config(name: str = "tsp_small", **overrides: int) -> lpu.ChipConfig:
    if overrides:
        return lpu.ChipConfig(name, name=f"{name}_custom", **overrides)
    return lpu.ChipConfig(name)


def lat(cfg: lpu.ChipConfig, name: Union[str, int]) -> int:
    """A latency by its ChipConfig name (an int is returned as is)."""
    if isinstance(name, int):
        return name
    return dict(cfg.latencies)[name]


def mem_pos(cfg: lpu.ChipConfig, hemi: str, slice_: int) -> int:
    return cfg.mem_position(HEMI[hemi], slice_)


def producer_issue(t_consume: int, d: int, p: int, q: int) -> int:
    """Issue cycle of a producer at p (latency d) whose value a consumer at q reads on t."""
    return t_consume - d - abs(p - q)


def consumer_issue(t_produce: int, d: int, p: int, q: int) -> int:
    """Issue cycle of a consumer at q of a value produced at p by an issue on t."""
    return t_produce + d + abs(p - q)


def cycles_for(cfg: lpu.ChipConfig, last_landing: int) -> int:
    """Documented cycle count of a program whose last result lands on `last_landing`."""
    return last_landing + 1 + (cfg.superlanes - 1)


# ---------------------------------------------------------------------------------------
# A program builder: instructions are placed at cycles, per queue; the text uses @cycle.


@dataclass
class Item:
    queue: str
    cycle: int
    text: str
    d: int  # functional latency (0 for nothing that lands)
    repeat: int = 0
    gap: int = 1
    tag: Optional[str] = None
    occupancy: int = 1  # cycles the queue is busy after the issue (ifetch: icu_ifetch)

    @property
    def last_issue(self) -> int:
        return self.cycle + self.repeat * self.gap

    @property
    def landing(self) -> int:
        return self.last_issue + self.d


@dataclass
class Prog:
    """Assembly text built from (queue, cycle, instruction) items with known latencies."""

    cfg: lpu.ChipConfig
    header: List[str] = field(default_factory=list)
    decls: List[str] = field(default_factory=list)
    items: List[Item] = field(default_factory=list)

    def __post_init__(self) -> None:
        base = self.cfg.name.replace("_custom", "")
        self.header.append(f".chip {base}")
        if self.cfg.name != base:
            self.header.append(f".name {self.cfg.name}")
            defaults = dict(lpu.ChipConfig(base).params())
            for k, v in self.cfg.params():
                if defaults[k] != v:
                    self.header.append(f".set {k} {v}")

    # -- declarations -----------------------------------------------------------------
    def tensor(self, kind: str, name: str, dt: str, shape: Sequence[int], hemi: str,
               slices: Sequence[int], addr: int = 0, split: int = 1) -> None:
        sl = ",".join(str(s) for s in slices)
        shp = ",".join(str(s) for s in shape)
        extra = f" split={split}" if split != 1 else ""
        self.decls.append(f".{kind} {name} {dt} [{shp}] hemi={hemi} addr={addr} slices={sl}{extra}")

    # -- instructions -----------------------------------------------------------------
    def at(self, queue: str, cycle: int, text: str, d: Union[str, int] = 0, repeat: int = 0,
           gap: int = 1, tag: Optional[str] = None, occupancy: int = 1) -> Item:
        if cycle < 0:
            raise ValueError(f"{text!r} on {queue} would issue at negative cycle {cycle}")
        it = Item(queue, cycle, text, lat(self.cfg, d), repeat, gap, tag, occupancy)
        self.items.append(it)
        return it

    def item(self, tag: str) -> Item:
        (it,) = [i for i in self.items if i.tag == tag]
        return it

    def read(self, hemi: str, slice_: int, addr: int, stream: str, t_at: int, q_pos: int,
             repeat: int = 0, gap: int = 1, port: int = 0, tag: Optional[str] = None) -> Item:
        """A MEM read whose value is at position q_pos on cycle t_at."""
        p = mem_pos(self.cfg, hemi, slice_)
        t = producer_issue(t_at, lat(self.cfg, "mem_read"), p, q_pos)
        return self.at(f"mem.{hemi}{slice_}.{port}", t, f"read {addr}, {stream}", "mem_read",
                       repeat, gap, tag)

    def write(self, hemi: str, slice_: int, addr: int, stream: str, t_land: int, p_pos: int,
              repeat: int = 0, gap: int = 1, port: int = 0, tag: Optional[str] = None) -> Item:
        """A MEM write of the value that lands at position p_pos on cycle t_land."""
        q = mem_pos(self.cfg, hemi, slice_)
        t = t_land + abs(p_pos - q)
        return self.at(f"mem.{hemi}{slice_}.{port}", t, f"write {addr}, {stream}", "mem_write",
                       repeat, gap, tag)

    def load(self, hemi: str, slices: Sequence[int], stream_base: int, direction: str,
             t_at: int, q_pos: int, rows: int = 1, addr: int = 0, gap: int = 1) -> None:
        """Read byte plane b of `rows` consecutive vectors from slices[b] onto stream
        base+b so that every plane is at q_pos on t_at (then t_at+gap, ...)."""
        for b, s in enumerate(slices):
            self.read(hemi, s, addr, f"s{stream_base + b}{direction}", t_at, q_pos, rows - 1, gap)

    def store(self, hemi: str, slices: Sequence[int], stream_base: int, direction: str,
              t_land: int, p_pos: int, rows: int = 1, addr: int = 0, gap: int = 1) -> None:
        for b, s in enumerate(slices):
            self.write(hemi, s, addr, f"s{stream_base + b}{direction}", t_land, p_pos, rows - 1, gap)

    # -- derived facts ----------------------------------------------------------------
    def expected_cycles(self) -> int:
        return cycles_for(self.cfg, max(i.landing for i in self.items if i.d > 0))

    def _queue_items(self, queue: str) -> List[Item]:
        return sorted((i for i in self.items if i.queue == queue), key=lambda i: i.cycle)

    def index(self, it: Item) -> int:
        """Instruction index of an item in its queue: the assembler inserts one nop before
        an instruction placed after its queue's cursor, and repeat is one more word."""
        idx, cursor = 0, 0
        for x in self._queue_items(it.queue):
            if x.cycle > cursor:
                idx += 1
            if x is it:
                return idx
            idx += 1 + (1 if x.repeat else 0)
            cursor = x.last_issue + x.occupancy
        raise KeyError(it)

    def source(self) -> str:
        lines = list(self.header) + list(self.decls)
        for q in sorted({i.queue for i in self.items}):
            lines.append(f".queue {q}")
            cursor = 0
            for x in self._queue_items(q):
                if x.cycle < cursor:
                    raise ValueError(f"{q}: {x.text} at {x.cycle} overlaps the previous instruction")
                lines.append(f"    @{x.cycle} {x.text}")
                if x.repeat:
                    lines.append(f"    repeat {x.repeat}, {x.gap}")
                cursor = x.last_issue + x.occupancy
        return "\n".join(lines) + "\n"

    def assemble(self) -> lpu.Program:
        return lpu.assemble(self.source(), "<test>")

    def shifted(self, it: Item, delta: int) -> "Prog":
        """A copy with one item moved by `delta` cycles."""
        p = Prog(self.cfg, list(self.header), list(self.decls), [])
        for x in self.items:
            y = Item(**x.__dict__)
            if x is it:
                y.cycle += delta
            p.items.append(y)
        return p

    def twin(self, it: Item) -> Item:
        """The item in this program that has the same queue and text as `it`."""
        (y,) = [x for x in self.items if x.queue == it.queue and x.text == it.text
                and x.tag == it.tag and x.repeat == it.repeat]
        return y


def run(prog: Union[Prog, lpu.Program], inputs: Dict[str, np.ndarray]) -> Tuple[Dict[str, np.ndarray], lpu.RunInfo]:
    program = prog.assemble() if isinstance(prog, Prog) else prog
    r = lpu.Runner(program)
    out = r(**inputs)
    assert r.last is not None
    return out, r.last


def run_fault(prog: Union[Prog, lpu.Program], inputs: Dict[str, np.ndarray],
              policies: Optional[Dict[str, str]] = None) -> Tuple[lpu.Chip, lpu.RunStatus]:
    """Load, write inputs, run; return the chip and status (no exception on faults)."""
    from lpu.layout import write_tensor

    program = prog.assemble() if isinstance(prog, Prog) else prog
    chip = lpu.Chip(program.config)
    chip.load(program)
    for k, v in (policies or {}).items():
        chip.set_fault_policy(k, v)
    for t in program.tensors:
        if t.name in inputs:
            write_tensor(chip, t, inputs[t.name])
    return chip, chip.run()


def check_fault(chip: lpu.Chip, status: lpu.RunStatus, kind: str, cycle: int, queue: str,
                index: int, instruction: Optional[str] = None, message: Optional[str] = None,
                repeat: int = 0) -> lpu.Fault:
    assert status == lpu.RunStatus.FAULT, f"expected a {kind} fault, got {status}"
    f = chip.fault
    assert f is not None
    got = (f.kind, f.cycle, f.queue, f.index, f.repeat)
    assert got == (kind, cycle, queue, index, repeat), f"fault {f}: {got} != {(kind, cycle, queue, index, repeat)}"
    if instruction is not None:
        assert f.instruction == instruction, (f.instruction, instruction)
    if message is not None:
        assert message in f.message, (f.message, message)
    with __import__("pytest").raises(lpu.FaultError) as e:
        chip.raise_for_fault()
    assert e.value.fault.kind == kind
    assert kind in str(e.value) and queue in str(e.value)
    return f


# ---------------------------------------------------------------------------------------
# Types: sizes, numpy host dtypes and bit patterns.

DT_BYTES = {"i8": 1, "i16": 2, "i32": 4, "f16": 2, "f32": 4, "bf16": 2}
INT_DT = ("i8", "i16", "i32")
FLOAT_DT = ("f16", "f32")
#: Host type of a tensor holding the type's bits (bf16 is carried as int16 bits).
HOST = {"i8": np.int8, "i16": np.int16, "i32": np.int32, "f16": np.float16,
        "f32": np.float32, "bf16": np.int16}
TENSOR_DT = {"i8": "i8", "i16": "i16", "i32": "i32", "f16": "f16", "f32": "f32", "bf16": "i16"}
UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32}
CANONICAL_NAN = {"f16": 0x7E00, "f32": 0x7FC00000, "bf16": 0x7FC0}
#: (precision p incl. the implicit bit, emin, emax) of the float formats.
FORMAT = {"f16": (11, -14, 15), "f32": (24, -126, 127), "bf16": (8, -126, 127)}


def bits_of(dt: str, host: np.ndarray) -> np.ndarray:
    """Raw bits (as int64) of a host array of type dt."""
    return np.asarray(host).view(UINT[DT_BYTES[dt]]).astype(np.int64)


def host_of(dt: str, bits: np.ndarray) -> np.ndarray:
    """Host array of type dt (HOST[dt]) holding these bits."""
    return np.asarray(bits).astype(np.int64).astype(UINT[DT_BYTES[dt]]).view(HOST[dt])


def int_range(dt: str) -> Tuple[int, int]:
    b = 8 * DT_BYTES[dt]
    return -(1 << (b - 1)), (1 << (b - 1)) - 1


def wrap(v: np.ndarray, dt: str) -> np.ndarray:
    b = 8 * DT_BYTES[dt]
    v = np.asarray(v, dtype=object if b > 32 else np.int64)
    return ((v + (1 << (b - 1))) % (1 << b)) - (1 << (b - 1))


def value_of(dt: str, bits: np.ndarray) -> np.ndarray:
    """The exact value of each bit pattern: int64 for ints, float64 for floats."""
    bits = np.asarray(bits, dtype=np.int64)
    if dt in INT_DT:
        return wrap(bits, dt).astype(np.int64)
    with np.errstate(invalid="ignore"):  # signalling NaNs are quieted: still NaN
        if dt == "f16":
            return bits.astype(np.uint16).view(np.float16).astype(np.float64)
        if dt == "f32":
            return bits.astype(np.uint32).view(np.float32).astype(np.float64)
        return (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def round_exact(x: Fraction, dt: str, sat: bool = False) -> float:
    """Round an exact rational to float type dt, to nearest with ties to even, with
    subnormals; overflow gives inf (or the largest finite value when sat). Returns the
    rounded value as a Python float (exact: every such value is a float64)."""
    p, emin, emax = FORMAT[dt]
    if x == 0:
        return 0.0
    sign = -1 if x < 0 else 1
    a = abs(x)
    e = a.numerator.bit_length() - a.denominator.bit_length()  # 2^e <= a < 2^(e+2)
    if Fraction(2) ** e > a:
        e -= 1
    while Fraction(2) ** (e + 1) <= a:
        e += 1
    q = max(e, emin) - (p - 1)  # exponent of the last place
    n = round(a / Fraction(2) ** q)  # Fraction rounds half to even
    r = Fraction(n) * Fraction(2) ** q
    max_finite = (2 - Fraction(2) ** (1 - p)) * Fraction(2) ** emax
    if r > max_finite:
        return sign * (float(max_finite) if sat else math.inf)
    return sign * float(r)


def float_bits(dt: str, v: float) -> int:
    """Bits of a value exactly representable in float type dt (NaN -> canonical)."""
    if math.isnan(v):
        return CANONICAL_NAN[dt]
    if dt == "f16":
        return int(np.float16(v).view(np.uint16))
    b = int(np.float32(v).view(np.uint32))
    return b >> 16 if dt == "bf16" else b


def to_float_bits(dt: str, x: np.ndarray, sat: bool = False) -> np.ndarray:
    """Round float64 values once to float type dt; bits as int64. NaN -> canonical NaN.
    f16/f32 use numpy's correctly rounded float64 conversions; bf16 uses round_exact."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        if dt == "f16":
            r = x.astype(np.float16).astype(np.float64)
        elif dt == "f32":
            r = x.astype(np.float32).astype(np.float64)
        else:
            r = np.array([v if not math.isfinite(v) or v == 0 else round_exact(Fraction(v), "bf16")
                          for v in x.ravel()], dtype=np.float64).reshape(x.shape)
    if sat:
        p, _, emax = FORMAT[dt]
        mx = float((2 - Fraction(2) ** (1 - p)) * Fraction(2) ** emax)
        over = np.isinf(r) & np.isfinite(x)
        r = np.where(over, np.copysign(mx, x), r)
    return np.array([float_bits(dt, v) for v in r.ravel()], dtype=np.int64).reshape(x.shape)


def nan_mask(dt: str, bits: np.ndarray) -> np.ndarray:
    if dt in INT_DT:
        return np.zeros(np.shape(bits), dtype=bool)
    return np.isnan(value_of(dt, bits))


def ulp_distance32(a_bits: np.ndarray, b_bits: np.ndarray) -> np.ndarray:
    """Distance in units in the last place between fp32 bit patterns (ordered ints)."""

    def order(b: np.ndarray) -> np.ndarray:
        b = np.asarray(b, dtype=np.int64)
        return np.where(b & 0x80000000, -(b & 0x7FFFFFFF), b)

    return np.abs(order(a_bits) - order(b_bits))


def assert_bits_equal(dt: str, got: np.ndarray, want: np.ndarray, inputs: Sequence[np.ndarray] = (),
                      canonical_nan: bool = True, what: str = "") -> None:
    """Compare result bits with expected bits; NaN expectations compare by NaN-ness (and,
    with canonical_nan, the result must be the canonical quiet NaN)."""
    got = np.asarray(got, dtype=np.int64).ravel()
    want = np.asarray(want, dtype=np.int64).ravel()
    wn = nan_mask(dt, want)
    gn = nan_mask(dt, got)
    bad = np.nonzero((wn != gn) | (~wn & (got != want)) | (wn & canonical_nan & (got != CANONICAL_NAN.get(dt, -1))))[0]
    if bad.size:
        i = bad[0]
        ins = ", ".join(f"{hex(int(np.asarray(x).ravel()[i]))}" for x in inputs)
        raise AssertionError(
            f"{what} {dt}: {bad.size} lanes differ; first at {i}: inputs ({ins}) "
            f"got {hex(int(got[i]))} want {hex(int(want[i]))}"
        )


# ---------------------------------------------------------------------------------------
# VXM reference (docs/numerics.md), on bit patterns.

BINARY = ("add", "sub", "mul", "max", "min", "eq", "ne", "lt", "le", "gt", "ge", "and", "or",
          "xor", "shl", "shr", "mask", "maskn")
UNARY = ("neg", "abs", "not", "copy", "relu", "tanh", "exp", "exp2", "rsqrt")
SPECIAL = ("tanh", "exp", "exp2", "rsqrt")
#: Ops whose NaN results are produced (canonical); mask/maskn/copy/neg/abs move bits.
MOVES_BITS = ("mask", "maskn", "copy", "neg", "abs")


def sign_bit(dt: str) -> int:
    return 1 << (8 * DT_BYTES[dt] - 1)


def ref_vxm(op: str, dt: str, a: np.ndarray, b: Optional[np.ndarray] = None) -> np.ndarray:
    """Expected result bits of a VXM op (not cast, not the transcendentals, which are
    checked with a tolerance) on bit patterns a (and b)."""
    a = np.asarray(a, dtype=np.int64)
    b = None if b is None else np.asarray(b, dtype=np.int64)
    bits = 8 * DT_BYTES[dt]
    mask_all = (1 << bits) - 1
    if op == "copy":
        return a.copy()
    if dt in INT_DT:
        x = value_of(dt, a)
        y = None if b is None else value_of(dt, b)
        if op in ("eq", "ne", "lt", "le", "gt", "ge"):
            f = {"eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal,
                 "gt": np.greater, "ge": np.greater_equal}[op]
            return f(x, y).astype(np.int64)
        if op == "shl":
            ok = (y >= 0) & (y < bits)
            r = np.where(ok, np.left_shift(x, np.where(ok, y, 0)), 0)
        elif op == "shr":
            ok = (y >= 0) & (y < bits)
            r = np.where(ok, np.right_shift(x, np.where(ok, y, 0)), np.where(x < 0, -1, 0))
        else:
            r = {
                "add": lambda: x + y, "sub": lambda: x - y, "mul": lambda: x * y,
                "max": lambda: np.maximum(x, y), "min": lambda: np.minimum(x, y),
                "and": lambda: x & y, "or": lambda: x | y, "xor": lambda: x ^ y,
                "mask": lambda: np.where(y != 0, x, 0), "maskn": lambda: np.where(y == 0, x, 0),
                "neg": lambda: -x, "abs": lambda: np.abs(x), "not": lambda: ~x,
                "relu": lambda: np.maximum(x, 0),
            }[op]()
        return np.asarray(wrap(r, dt), dtype=np.int64) & mask_all
    # floats
    x = value_of(dt, a)
    y = None if b is None else value_of(dt, b)
    sb = sign_bit(dt)
    one = float_bits(dt, 1.0)
    with np.errstate(all="ignore"):
        if op in ("eq", "ne", "lt", "le", "gt", "ge"):
            f = {"eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal,
                 "gt": np.greater, "ge": np.greater_equal}[op]
            return np.where(f(x, y), one, 0).astype(np.int64)
        if op == "neg":
            return a ^ sb
        if op == "abs":
            return a & ~sb & mask_all
        if op == "mask":
            return np.where(y != 0, a, 0)
        if op == "maskn":
            return np.where(y == 0, a, 0)
        if op in ("add", "sub", "mul"):
            r = {"add": x + y, "sub": x - y, "mul": x * y}[op]  # exact in float64
            return to_float_bits(dt, r)
        if op in ("max", "min"):
            r = np.maximum(x, y) if op == "max" else np.minimum(x, y)  # NaN propagates
            zeros = (x == 0) & (y == 0)
            neg_a, neg_b = np.signbit(x), np.signbit(y)
            if op == "max":
                z = np.where(neg_a & neg_b, -0.0, 0.0)
            else:
                z = np.where(neg_a | neg_b, -0.0, 0.0)
            r = np.where(zeros, z, r)
            return to_float_bits(dt, r)
        if op == "relu":
            r = np.where(np.isnan(x), np.nan, np.where(x > 0, x, 0.0))
            return to_float_bits(dt, r)
    raise ValueError(f"no reference for {op} {dt}")


def ref_cast(frm: str, to: str, a: np.ndarray, sat: bool) -> np.ndarray:
    """Expected bits of `cast frm, to, a, dst, sat` per the conversion table."""
    v = value_of(frm, a)
    if frm in INT_DT and to in INT_DT:
        lo, hi = int_range(to)
        r = np.clip(v, lo, hi) if sat else wrap(v, to)
        return np.asarray(r, dtype=np.int64) & ((1 << (8 * DT_BYTES[to])) - 1)
    if to in INT_DT:  # float -> int: rint (ties to even), clamp, NaN -> 0
        lo, hi = int_range(to)
        with np.errstate(invalid="ignore"):
            r = np.where(np.isnan(v), 0, np.clip(np.rint(v), lo, hi))
        return r.astype(np.int64) & ((1 << (8 * DT_BYTES[to])) - 1)
    # -> float: one rounding from the exact value (int64 values are exact in float64
    # for every int type here, as are all source floats)
    return to_float_bits(to, v.astype(np.float64), sat)


# -- transcendentals ---------------------------------------------------------------------

def _mp_exact(op: str, v: float):
    import mpmath

    with mpmath.workprec(120):
        x = mpmath.mpf(v)
        if op == "exp":
            return mpmath.exp(x)
        if op == "exp2":
            return mpmath.power(2, x)
        if op == "tanh":
            return mpmath.tanh(x)
        raise ValueError(op)


def _mpf_fraction(m) -> Fraction:
    sign, man, exp, _bc = m._mpf_
    f = Fraction(int(man)) * (Fraction(2) ** int(exp))
    return -f if sign else f


def ref_special_f32(op: str, v: float) -> float:
    """The correctly rounded fp32 value of op(v) (v an fp32 value)."""
    if math.isnan(v):
        return math.nan
    if op == "rsqrt":
        with np.errstate(all="ignore"):
            return float(np.float32(1.0) / np.sqrt(np.float32(v)))
    if math.isinf(v):
        return {"exp": (math.inf, 0.0), "exp2": (math.inf, 0.0), "tanh": (1.0, -1.0)}[op][v < 0]
    if v == 0:
        return {"exp": 1.0, "exp2": 1.0, "tanh": v}[op]
    m = _mp_exact(op, v)
    sign, man, exp, bc = m._mpf_
    if man and exp + bc > 200:  # far beyond fp32's range: overflows
        return -math.inf if sign else math.inf
    if not man or exp + bc < -200:  # far below half the smallest subnormal: rounds to 0
        return -0.0 if sign else 0.0
    return round_exact(_mpf_fraction(m), "f32")


def check_special(op: str, dt: str, a_bits: np.ndarray, got_bits: np.ndarray) -> None:
    """exp, exp2, tanh: within 1 fp32 ulp of the correctly rounded value (libm's bound),
    then rounded to dt; rsqrt is exact (1.0f / sqrtf(x), both correctly rounded)."""
    xs = value_of(dt, a_bits).ravel()
    got = np.asarray(got_bits, dtype=np.int64).ravel()
    for i, v in enumerate(xs):
        ref = ref_special_f32(op, float(v))
        g = int(got[i])
        if math.isnan(ref):
            assert g == CANONICAL_NAN[dt], f"{op}({v}) in {dt}: got {hex(g)}, want canonical NaN"
            continue
        r32 = int(np.float32(ref).view(np.uint32))
        tol = 0 if op == "rsqrt" else 1
        if dt == "f32":
            assert ulp_distance32(np.array([g]), np.array([r32]))[0] <= tol, (
                f"{op}({v!r}): got {np.uint32(g).view(np.float32)!r}, correctly rounded "
                f"{np.float32(ref)!r}; more than {tol} ulp apart")
        else:
            # The fp32 result (within tol ulp) rounded once to fp16.
            cands = set()
            for k in range(-tol, tol + 1):
                o = (-(r32 & 0x7FFFFFFF) if r32 & 0x80000000 else r32) + k
                nb = (-o | 0x80000000) if o < 0 else o
                f32 = np.uint32(nb).view(np.float32)
                if math.isnan(float(f32)):
                    continue
                with np.errstate(over="ignore"):
                    cands.add(int(f32.astype(np.float16).view(np.uint16)))
            assert g in cands, f"{op}({v!r}) in f16: got {hex(g)}, allowed {sorted(map(hex, cands))}"


# ---------------------------------------------------------------------------------------
# Interesting values.

def edge_bits(dt: str) -> List[int]:
    """Bit patterns at the edges of a type: zeros, extremes, subnormals, inf, NaN, ties."""
    if dt in INT_DT:
        lo, hi = int_range(dt)
        bits = 8 * DT_BYTES[dt]
        vals = [0, 1, -1, 2, -2, lo, lo + 1, hi, hi - 1, bits - 1, bits, bits + 1, 3, 7, 100 % hi,
                -(bits - 1), lo // 2, hi // 2 + 1]
        m = (1 << bits) - 1
        return sorted({v & m for v in vals})
    p, emin, emax = FORMAT[dt]
    vals = [0.0, 1.0, 2.0, 3.0, 0.5, 1.5, 2.5, -2.5, 3.5, 1 + 2.0 ** (1 - p), 1 + 2.0 ** (-p),
            2.0 ** emin, 2.0 ** (emin - p + 1), 2.0 ** emin - 2.0 ** (emin - p + 1),
            float((2 - Fraction(2) ** (1 - p)) * Fraction(2) ** emax), 2.0 ** (p - 1) + 1,
            2.0 ** p, 100.0, 127.5, 128.0, 255.5, 300.0, 1e4, 65504.0 if dt == "f16" else 1e30,
            math.inf, 0.1, 2.0 ** (emax // 2), 40.0, -88.0, 10.0]
    out = set()
    for v in vals:
        for s in (v, -v):
            r = round_exact(Fraction(s), dt) if math.isfinite(s) else s
            out.add(float_bits(dt, r) if r != 0 else (sign_bit(dt) if math.copysign(1, s) < 0 else 0))
    out.add(CANONICAL_NAN[dt])
    out.add(CANONICAL_NAN[dt] | sign_bit(dt) | 1)  # a negative NaN with a payload
    return sorted(out)


def pairs(values: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
    a = np.repeat(np.asarray(values, dtype=np.int64), len(values))
    b = np.tile(np.asarray(values, dtype=np.int64), len(values))
    return a, b


def pad_rows(bits: np.ndarray, lanes: int, rows: int, rng: np.random.Generator, dt: str) -> np.ndarray:
    """Fill a [rows, lanes] bit array with `bits` then random patterns of dt."""
    n = rows * lanes
    bits = np.asarray(bits, dtype=np.int64).ravel()[:n]
    extra = rng.integers(0, 1 << (8 * DT_BYTES[dt]), n - bits.size, dtype=np.int64)
    return np.concatenate([bits, extra]).reshape(rows, lanes)


#: d_func of each instruction, by the latency names of docs/timing.md.
LATENCY = {
    "read": "mem_read", "write": "mem_write", "gather": "mem_gather", "scatter": "mem_scatter",
    "mul": "vxm_mul", "tanh": "vxm_special", "exp": "vxm_special", "exp2": "vxm_special",
    "rsqrt": "vxm_special", "cast": "vxm_cast", "lw": "mxm_lw", "iw": "mxm_iw",
    "abc": "mxm_abc", "acc": "mxm_acc", "shiftn": "sxm_shift", "shifts": "sxm_shift",
    "permute": "sxm_permute", "broadcast": "sxm_permute", "distribute": "sxm_distribute", "rotate": "sxm_rotate",
    "transpose": "sxm_transpose", "notify": "icu_notify", "config": "icu_config",
    "ifetch": "icu_ifetch", "send": "c2c", "receive": "c2c", "deskew": "c2c",
}
for _op in BINARY + UNARY:
    LATENCY.setdefault(_op, "vxm_basic")
#: The large ALUs (docs/isa.md).
LARGE_ALUS = (0, 2, 5, 7, 8, 10, 13, 15)
LARGE_ONLY = ("max", "min", "relu", "tanh", "exp", "exp2", "rsqrt", "cast")


def covered_union(modules: Iterable[object]) -> set:
    out: set = set()
    for m in modules:
        out |= set(getattr(m, "COVERS"))
    return out


# ---------------------------------------------------------------------------------------
# Program builders shared by several test modules.

def alu_for(op: str, k: int = 0) -> int:
    """A large ALU for large-only ops, otherwise a varying small or large one."""
    if op in LARGE_ONLY:
        return LARGE_ALUS[k % len(LARGE_ALUS)]
    return (k * 5 + 1) % 16


def op_text(op: str, dt: str, to: str = "", sat: int = 0) -> str:
    if op == "cast":
        return f"cast {dt}, {to}, s0e, s8e, {sat}"
    if op in BINARY:
        return f"{op} {dt}, s0e, s4e, s8e"
    return f"{op} {dt}, s0e, s8e"


def vxm_prog(op: str, dt: str, rows: int, to: str = "", sat: int = 0, alu: Optional[int] = None,
             cfg: Optional[lpu.ChipConfig] = None) -> Prog:
    """a (type dt) in W slices 0.., b in the next W slices, z in E slices 0..; the op
    issues at the first cycle every plane of a and b can be at the VXM."""
    cfg = cfg or config("tsp_small")
    to = to or dt
    nb, ob = DT_BYTES[dt], DT_BYTES[to]
    p = Prog(cfg)
    lanes = cfg.lanes
    vx = cfg.vxm_position()
    a_sl = list(range(nb))
    b_sl = list(range(nb, 2 * nb))
    z_sl = list(range(ob))
    p.tensor("input", "a", TENSOR_DT[dt], [rows, lanes], "W", a_sl)
    binary = op in BINARY
    if binary:
        p.tensor("input", "b", TENSOR_DT[dt], [rows, lanes], "W", b_sl)
    p.tensor("output", "z", TENSOR_DT[to], [rows, lanes], "E", z_sl)
    far = max(b_sl if binary else a_sl)
    t_op = lat(cfg, "mem_read") + abs(vx - mem_pos(cfg, "W", far))
    p.load("W", a_sl, 0, "e", t_op, vx, rows)
    if binary:
        p.load("W", b_sl, 4, "e", t_op, vx, rows)
    d = lat(cfg, LATENCY[op])
    alu = alu_for(op) if alu is None else alu
    p.at(f"vxm.alu{alu}", t_op, op_text(op, dt, to, sat), d, repeat=rows - 1, tag="op")
    p.store("E", z_sl, 8, "e", t_op + d, vx, rows)
    return p


@dataclass
class WGroup:
    """Some of the rows of every lw block, stored as one tensor."""

    name: str
    hemi: str
    slices: List[int]
    first: int  # first row of the block this group holds
    rows: int  # rows of each block it holds


def groups_for(cfg: lpu.ChipConfig, dt: str, plane: int) -> List[WGroup]:
    nb = 1 if dt == "i8" else 2
    per = 16 // nb
    if cfg.mem_slices >= 16 + 8:
        # One hemisphere: the 16 slices nearest the plane's side.
        hemi = "W" if plane < cfg.mxm_planes // 2 else "E"
        first = cfg.mem_slices - 16
        return [WGroup("w", hemi, list(range(first, first + 16)), 0, per)]
    return [WGroup("wa", "W", list(range(8)), 0, per // 2),
            WGroup("wb", "E", list(range(8)), per // 2, per // 2)]


@dataclass
class MxmProg:
    prog: Prog
    groups: List[WGroup]
    dt: str
    m: int
    passes: int
    abc: List[List[Item]]  # per pass, the abc item
    iw: List[Item]
    acc: Item
    lw: List[Item]


def mxm_prog(cfg: lpu.ChipConfig, dt: str, m: int, passes: int = 1, plane: int = 0,
             abc_gap: Optional[int] = None, abc_delay: int = 0, acc_delay: int = 0,
             lw_blocks: Optional[int] = None, transpose: int = 0) -> MxmProg:
    """y[m] = x[m] @ W over `passes` weight sets of lanes x lanes, accumulated in slot m."""
    lanes = cfg.lanes
    nb = 1 if dt == "i8" else 2
    per = 16 // nb
    nlw = lanes // per if lw_blocks is None else lw_blocks
    gap = abc_gap or (1 if dt == "i8" else 4)
    west = plane < cfg.mxm_planes // 2
    din, dout = ("w", "e") if west else ("e", "w")
    P = cfg.mxm_position(plane)
    groups = groups_for(cfg, dt, plane)
    p = Prog(cfg)
    for g in groups:
        p.tensor("input", g.name, dt, [g.rows * (lanes // per) * passes, lanes], g.hemi, g.slices,
                 split=g.rows)
    # Activations and results share the slices of the last group at other addresses.
    g0 = groups[-1]
    x_sl = g0.slices[:nb]
    y_sl = g0.slices[-4:]
    p.tensor("input", "x", dt, [passes, m, lanes], g0.hemi, x_sl, addr=64)
    p.tensor("output", "y", "i32" if dt == "i8" else "f32", [m, lanes], g0.hemi, y_sl, addr=128)
    ld, abq, acq = f"mxm{plane}.ld", f"mxm{plane}.abc", f"mxm{plane}.acc"
    L = lambda k: lat(cfg, k)  # noqa: E731
    t_lw = L("mem_read") + max(abs(mem_pos(cfg, g.hemi, s) - P) for g in groups for s in g.slices)
    abcs, iws, lws = [], [], []
    for ps in range(passes):
        # lw j of this pass reads block j (address ps*nlw + j of every weight slice).
        lws.append(p.at(ld, t_lw, f"lw {dt}, s0{din}", "mxm_lw", repeat=nlw - 1, tag=f"lw{ps}"))
        for g in groups:
            for i in range(g.rows):
                for b in range(nb):
                    s = g.slices[b * g.rows + i]
                    stream = (g.first + i) * nb + b
                    p.read(g.hemi, s, ps * (lanes // per), f"s{stream}{din}", t_lw, P, repeat=nlw - 1)
        t_iw = t_lw + nlw
        iws.append(p.at(ld, t_iw, f"iw {transpose}", "mxm_iw", tag=f"iw{ps}"))
        t_abc = t_iw + L("mxm_iw") + abc_delay
        pass_abcs = []
        abc_item = p.at(abq, t_abc, f"abc s16{din}, 0, {1 if ps else 0}", "mxm_abc", repeat=m - 1,
                        gap=gap, tag=f"abc{ps}")
        pass_abcs.append(abc_item)
        abcs.append(pass_abcs)
        p.load(g0.hemi, x_sl, 16, din, t_abc, P, rows=m, addr=64 + ps * m, gap=gap)
        # The next pass: its iw after this pass's last abc, its first abc when slot 0 is
        # ready again (mxm_abc after this pass's first abc).
        last_abc = t_abc + (m - 1) * gap
        next_iw = max(last_abc + 1, t_abc + L("mxm_abc") - L("mxm_iw"), t_iw + 1 + nlw)
        t_lw = next_iw - nlw
    t_acc = abcs[-1][0].cycle + L("mxm_abc") + acc_delay
    acc = p.at(acq, t_acc, f"acc 0, s0{dout}", "mxm_acc", repeat=m - 1, gap=gap, tag="acc")
    p.store(g0.hemi, y_sl, 0, dout, t_acc + L("mxm_acc"), P, rows=m, addr=128, gap=gap)
    return MxmProg(p, groups, dt, m, passes, abcs, iws, acc, lws)


def weight_inputs(mp: MxmProg, w: np.ndarray, lanes: int) -> dict:
    """Split W [passes*lanes, lanes] into the group tensors (row R*j + i of W is row
    rows*j + i - first of its group's tensor)."""
    per = 16 // (1 if mp.dt == "i8" else 2)
    out = {}
    blocks = w.shape[0] // per
    for g in mp.groups:
        idx = [per * j + g.first + i for j in range(blocks) for i in range(g.rows)]
        out[g.name] = np.ascontiguousarray(w[idx])
    return out


def run_mxm(mp: MxmProg, x: np.ndarray, w: np.ndarray):
    """x [m, passes*lanes], w [passes*lanes, lanes]."""
    cfg = mp.prog.cfg
    lanes = cfg.lanes
    ins = weight_inputs(mp, w, lanes)
    ins["x"] = np.ascontiguousarray(x.reshape(mp.m, mp.passes, lanes).transpose(1, 0, 2))
    return run(mp.prog, ins)


def ref_int8(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    y = x.astype(np.int64) @ w.astype(np.int64)
    return wrap(y, "i32").astype(np.int32)


def ref_fp16(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The sequential fp32 sum of docs/numerics.md: y += x[k] * W[k], k = 0, 1, ..."""
    x32, w32 = x.astype(np.float32), w.astype(np.float32)
    y = np.zeros((x.shape[0], w.shape[1]), np.float32)
    with np.errstate(all="ignore"):
        for k in range(w.shape[0]):
            y += x32[:, k : k + 1] * w32[k][None, :]
    return y
