//! The instruction set, defined once.
//!
//! [`TABLE`] lists every instruction: mnemonic, unit, opcode, operand fields, functional
//! latency, allowed element types and a one-line description. The encoder, decoder,
//! disassembler, the metadata Python sees (`lpu.isa`) and `docs/isa.md` are all derived
//! from it; nothing else in the project lists instructions.
//!
//! Encoding: every instruction is one little-endian 64-bit word. Bits 0..8 hold the
//! opcode; operand fields follow from bit 8 upward in table order, each with the width of
//! its kind; all higher bits are zero. A fixed word keeps decode a table lookup and leaves
//! room for every operand (the real chip's 32-bit opcodes and 8-bit NOPs are not public
//! in enough detail to copy).

use crate::config::LatKey;
use crate::dtype::{set, DType};
use crate::error::DecodeError;
use std::fmt::Write as _;
use std::sync::OnceLock;

/// The functional unit an instruction belongs to. ICU instructions run on every queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Unit {
    Icu,
    Mem,
    Vxm,
    Mxm,
    Sxm,
    C2c,
}

impl Unit {
    pub const ALL: [Unit; 6] = [
        Unit::Icu,
        Unit::Mem,
        Unit::Vxm,
        Unit::Mxm,
        Unit::Sxm,
        Unit::C2c,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Unit::Icu => "ICU",
            Unit::Mem => "MEM",
            Unit::Vxm => "VXM",
            Unit::Mxm => "MXM",
            Unit::Sxm => "SXM",
            Unit::C2c => "C2C",
        }
    }
}

/// Number of stream registers per direction the encoding addresses.
pub const STREAMS: u32 = 32;
/// Operand value of a VXM source that names an ALU output: `ALU_SRC_BASE + alu`.
pub const ALU_SRC_BASE: u32 = 64;
/// Streams one `lw` takes at once (16 int8 weight rows or 8 fp16 rows).
pub const LW_STREAMS: usize = 16;
/// Operand value of a VXM destination meaning "no stream" (result only chained).
pub const DST_NONE: u32 = 127;

/// The kind of an operand field: its width, its range and its text form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldKind {
    /// An unsigned count (cycles, repetitions, lanes) of the given width in bits.
    Count(u8),
    /// A word address within a MEM slice. Advances by one on each `repeat`.
    Addr,
    /// A stream register: index 0..31 and direction. Text `s5e` (eastward) or `s5w`.
    Stream,
    /// A VXM operand: a stream (as [`FieldKind::Stream`]) or the output of an ALU (`alu3`).
    Src,
    /// A VXM result: a stream, or `-` for none (the result is only chained).
    Dst,
    /// An element type: `i8`, `i16`, `i32`, `f16`, `f32`, `bf16`.
    DType,
    /// An MXM accumulator slot. Advances by one on each `repeat`.
    Slot,
    /// A 0/1 flag.
    Flag,
}

impl FieldKind {
    pub fn bits(self) -> u32 {
        match self {
            FieldKind::Count(b) => b as u32,
            FieldKind::Addr => 16,
            FieldKind::Stream => 6,
            FieldKind::Src | FieldKind::Dst => 7,
            FieldKind::DType => 3,
            FieldKind::Slot => 12,
            FieldKind::Flag => 1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            FieldKind::Count(_) => "count",
            FieldKind::Addr => "addr",
            FieldKind::Stream => "stream",
            FieldKind::Src => "src",
            FieldKind::Dst => "dst",
            FieldKind::DType => "dtype",
            FieldKind::Slot => "slot",
            FieldKind::Flag => "flag",
        }
    }

    /// Whether `repeat` advances this operand by one per re-issue.
    pub fn advances(self) -> bool {
        matches!(self, FieldKind::Addr | FieldKind::Slot)
    }

    /// Whether a raw value is a legal encoding of this kind (chip-independent check).
    pub fn valid(self, v: u32) -> bool {
        match self {
            FieldKind::Stream => v < 2 * STREAMS,
            FieldKind::Src => v < 2 * STREAMS || (ALU_SRC_BASE..ALU_SRC_BASE + 16).contains(&v),
            FieldKind::Dst => v < 2 * STREAMS || v == DST_NONE,
            FieldKind::DType => DType::from_code(v).is_some(),
            _ => (v as u64) < (1u64 << self.bits()),
        }
    }

    /// The operand's text form, as the disassembler prints and the assembler reads it.
    pub fn format(self, v: u32) -> String {
        match self {
            FieldKind::Stream => stream_text(v),
            FieldKind::Src if v >= ALU_SRC_BASE => format!("alu{}", v - ALU_SRC_BASE),
            FieldKind::Src => stream_text(v),
            FieldKind::Dst if v == DST_NONE => "-".into(),
            FieldKind::Dst => stream_text(v),
            FieldKind::DType => DType::from_code(v)
                .map(|d| d.name().to_string())
                .unwrap_or_else(|| format!("dtype{v}")),
            _ => v.to_string(),
        }
    }
}

fn stream_text(v: u32) -> String {
    let dir = if v >= STREAMS { 'w' } else { 'e' };
    format!("s{}{}", v % STREAMS, dir)
}

/// A stream reference decoded from a Stream/Src/Dst operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StreamRef {
    pub index: u32,
    /// false = eastward (towards higher positions), true = westward.
    pub west: bool,
}

impl StreamRef {
    pub fn from_operand(v: u32) -> Option<StreamRef> {
        (v < 2 * STREAMS).then_some(StreamRef {
            index: v % STREAMS,
            west: v >= STREAMS,
        })
    }
    pub fn operand(self) -> u32 {
        self.index + if self.west { STREAMS } else { 0 }
    }
}

/// One operand field of an instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldDef {
    pub name: &'static str,
    pub kind: FieldKind,
}

/// Constraints the engine enforces beyond operand ranges.
pub mod flags {
    /// Must run on one of the VXM's large ALUs (0, 2, 5, 7, 8, 10, 13, 15).
    pub const LARGE_ALU: u8 = 1;
    /// Is a point-wise VXM operation with two inputs.
    pub const BINARY: u8 = 2;
    /// Is a point-wise VXM operation with one input.
    pub const UNARY: u8 = 4;
    /// Is decoded and timed but has no modelled effect beyond timing (multi-chip, power).
    pub const TIMING_ONLY: u8 = 8;
}

/// One instruction of the ISA.
#[derive(Clone, Copy, Debug)]
pub struct InstrDef {
    pub op: Op,
    pub mnemonic: &'static str,
    pub unit: Unit,
    pub opcode: u8,
    pub fields: &'static [FieldDef],
    /// Functional latency (d_func), or None for queue-control instructions.
    pub latency: Option<LatKey>,
    /// Element types the `dt` operand may take (0 when there is no `dt` operand).
    pub dtypes: u8,
    pub flags: u8,
    pub doc: &'static str,
}

impl InstrDef {
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
    /// Index of a named field.
    pub fn field(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }
}

/// Most operand fields any instruction has.
pub const MAX_FIELDS: usize = 5;

macro_rules! isa {
    ($(
        $variant:ident = $opcode:literal, $mn:literal, $unit:ident, $lat:expr, $dtypes:expr, $flags:expr,
        [$( $fname:literal : $fkind:expr ),*],
        $doc:literal;
    )*) => {
        /// Every instruction, by name. `Op as u8` is its opcode.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum Op { $( $variant = $opcode, )* }

        impl Op {
            /// Its flags in the table, without a table look-up (asked for every
            /// instruction a batch's look-ahead walks, and at every load).
            pub const fn flags(self) -> u8 {
                match self { $( Op::$variant => $flags, )* }
            }
        }

        /// The instruction table: the single definition of the ISA.
        pub static TABLE: &[InstrDef] = &[ $(
            InstrDef {
                op: Op::$variant,
                mnemonic: $mn,
                unit: Unit::$unit,
                opcode: $opcode,
                fields: &[ $( FieldDef { name: $fname, kind: $fkind } ),* ],
                latency: $lat,
                dtypes: $dtypes,
                flags: $flags,
                doc: $doc,
            },
        )* ];
    };
}

use flags::{BINARY, LARGE_ALU, TIMING_ONLY, UNARY};
use FieldKind::{Addr, Count, Dst, Flag, Slot, Src, Stream};
const DT: FieldKind = FieldKind::DType;
const NONE: Option<LatKey> = None;
const fn lat(k: LatKey) -> Option<LatKey> {
    Some(k)
}
const VB: Option<LatKey> = lat(LatKey::VxmBasic);
const VM: Option<LatKey> = lat(LatKey::VxmMul);
const VS: Option<LatKey> = lat(LatKey::VxmSpecial);

isa! {
    // ---- ICU: every queue -------------------------------------------------------
    Nop = 0x00, "nop", Icu, NONE, 0, 0, ["n": Count(32)],
        "Issue nothing for n cycles (n >= 1); the next instruction issues n cycles later.";
    Repeat = 0x01, "repeat", Icu, NONE, 0, 0, ["n": Count(24), "d": Count(16)],
        "Re-issue the previous instruction n more times, d cycles apart; addr and slot operands advance by 1 each time.";
    Sync = 0x02, "sync", Icu, NONE, 0, 0, [],
        "Park this queue until a notify reaches it.";
    Notify = 0x03, "notify", Icu, lat(LatKey::IcuNotify), 0, 0, [],
        "Release every queue parked in sync, icu_notify cycles after issue.";
    Config = 0x04, "config", Icu, lat(LatKey::IcuConfig), 0, TIMING_ONLY, ["superlanes": Count(8)],
        "Set the number of powered superlanes (power is not modelled; timed and counted only).";
    Ifetch = 0x05, "ifetch", Icu, lat(LatKey::IcuIfetch), 0, TIMING_ONLY, ["n": Count(16)],
        "Refill the queue's instruction buffer with n instructions (instructions are preloaded here; the queue stalls icu_ifetch cycles).";

    // ---- MEM: one slice of SRAM ----------------------------------------------------
    Read = 0x10, "read", Mem, lat(LatKey::MemRead), 0, 0, ["addr": Addr, "dst": Stream],
        "Read the word at addr onto stream dst.";
    Write = 0x11, "write", Mem, lat(LatKey::MemWrite), 0, 0, ["addr": Addr, "src": Stream],
        "Write the vector on stream src (at issue) into the word at addr.";
    Gather = 0x12, "gather", Mem, lat(LatKey::MemGather), 0, 0, ["map": Stream, "dst": Stream],
        "Lane l of dst = byte l of the word at address map[l]; map is a 2-stream group of uint16 addresses.";
    Scatter = 0x13, "scatter", Mem, lat(LatKey::MemScatter), 0, 0, ["map": Stream, "src": Stream],
        "Byte l of the word at address map[l] = lane l of src; map is a 2-stream group of uint16 addresses.";

    // ---- VXM: point-wise ops on one ALU of the 4x4 mesh per lane --------------------
    Add = 0x20, "add", Vxm, VB, set::NUM, BINARY, ["dt": DT, "a": Src, "b": Src, "dst": Dst],
        "dst = a + b (integers wrap; floats round to nearest even).";
    Sub = 0x21, "sub", Vxm, VB, set::NUM, BINARY, ["dt": DT, "a": Src, "b": Src, "dst": Dst],
        "dst = a - b (integers wrap; floats round to nearest even).";
    Mul = 0x22, "mul", Vxm, VM, set::NUM, BINARY, ["dt": DT, "a": Src, "b": Src, "dst": Dst],
        "dst = a * b (integers keep the low bits; floats round to nearest even).";
    Max = 0x23, "max", Vxm, VB, set::NUM, BINARY | LARGE_ALU, ["dt": DT, "a": Src, "b": Src, "dst": Dst],
        "dst = max(a, b); NaN if either is NaN.";
    Min = 0x24, "min", Vxm, VB, set::NUM, BINARY | LARGE_ALU, ["dt": DT, "a": Src, "b": Src, "dst": Dst],
        "dst = min(a, b); NaN if either is NaN.";
    Eq = 0x25, "eq", Vxm, VB, set::NUM, BINARY, ["dt": DT, "a": Src, "b": Src, "dst": Dst],
        "dst = 1 if a == b else 0 (in type dt).";
    Ne = 0x26, "ne", Vxm, VB, set::NUM, BINARY, ["dt": DT, "a": Src, "b": Src, "dst": Dst],
        "dst = 1 if a != b else 0 (NaN != anything).";
    Lt = 0x27, "lt", Vxm, VB, set::NUM, BINARY, ["dt": DT, "a": Src, "b": Src, "dst": Dst],
        "dst = 1 if a < b else 0.";
    Le = 0x28, "le", Vxm, VB, set::NUM, BINARY, ["dt": DT, "a": Src, "b": Src, "dst": Dst],
        "dst = 1 if a <= b else 0.";
    Gt = 0x29, "gt", Vxm, VB, set::NUM, BINARY, ["dt": DT, "a": Src, "b": Src, "dst": Dst],
        "dst = 1 if a > b else 0.";
    Ge = 0x2a, "ge", Vxm, VB, set::NUM, BINARY, ["dt": DT, "a": Src, "b": Src, "dst": Dst],
        "dst = 1 if a >= b else 0.";
    And = 0x2b, "and", Vxm, VB, set::INT, BINARY, ["dt": DT, "a": Src, "b": Src, "dst": Dst],
        "dst = a & b.";
    Or = 0x2c, "or", Vxm, VB, set::INT, BINARY, ["dt": DT, "a": Src, "b": Src, "dst": Dst],
        "dst = a | b.";
    Xor = 0x2d, "xor", Vxm, VB, set::INT, BINARY, ["dt": DT, "a": Src, "b": Src, "dst": Dst],
        "dst = a ^ b.";
    Shl = 0x2e, "shl", Vxm, VB, set::INT, BINARY, ["dt": DT, "a": Src, "b": Src, "dst": Dst],
        "dst = a << b; shift counts outside 0..bits give 0.";
    Shr = 0x2f, "shr", Vxm, VB, set::INT, BINARY, ["dt": DT, "a": Src, "b": Src, "dst": Dst],
        "dst = a >> b, arithmetic; shift counts outside 0..bits give the sign fill.";
    Mask = 0x30, "mask", Vxm, VB, set::NUM, BINARY, ["dt": DT, "a": Src, "b": Src, "dst": Dst],
        "dst = a where b != 0, else 0 (select).";
    Maskn = 0x31, "maskn", Vxm, VB, set::NUM, BINARY, ["dt": DT, "a": Src, "b": Src, "dst": Dst],
        "dst = a where b == 0, else 0 (inverted select).";
    Neg = 0x38, "neg", Vxm, VB, set::NUM, UNARY, ["dt": DT, "a": Src, "dst": Dst],
        "dst = -a (integers wrap).";
    Abs = 0x39, "abs", Vxm, VB, set::NUM, UNARY, ["dt": DT, "a": Src, "dst": Dst],
        "dst = |a| (integers wrap: abs(min) = min).";
    Not = 0x3a, "not", Vxm, VB, set::INT, UNARY, ["dt": DT, "a": Src, "dst": Dst],
        "dst = ~a.";
    Copy = 0x3b, "copy", Vxm, VB, set::ALL, UNARY, ["dt": DT, "a": Src, "dst": Dst],
        "dst = a (moves a value between streams, directions or ALUs).";
    Relu = 0x3c, "relu", Vxm, VB, set::NUM, UNARY | LARGE_ALU, ["dt": DT, "a": Src, "dst": Dst],
        "dst = max(a, 0); NaN stays NaN.";
    Tanh = 0x3d, "tanh", Vxm, VS, set::FLOAT, UNARY | LARGE_ALU, ["dt": DT, "a": Src, "dst": Dst],
        "dst = tanh(a), computed in fp32 by libm and rounded to dt.";
    Exp = 0x3e, "exp", Vxm, VS, set::FLOAT, UNARY | LARGE_ALU, ["dt": DT, "a": Src, "dst": Dst],
        "dst = e^a, computed in fp32 by libm and rounded to dt.";
    Exp2 = 0x3f, "exp2", Vxm, VS, set::FLOAT, UNARY | LARGE_ALU, ["dt": DT, "a": Src, "dst": Dst],
        "dst = 2^a, computed in fp32 by libm and rounded to dt.";
    Rsqrt = 0x40, "rsqrt", Vxm, VS, set::FLOAT, UNARY | LARGE_ALU, ["dt": DT, "a": Src, "dst": Dst],
        "dst = 1/sqrt(a), computed as 1/sqrtf(a) in fp32 and rounded to dt.";
    Cast = 0x41, "cast", Vxm, lat(LatKey::VxmCast), set::ALL, LARGE_ALU,
        ["dt": DT, "to": DT, "a": Src, "dst": Dst, "sat": Flag],
        "dst = a converted from dt to type `to`: round to nearest even; float->int saturates (NaN->0); sat=1 also saturates int narrowing and float overflow (else wrap / inf).";

    // ---- MXM: one 320x320 plane -------------------------------------------------------
    Lw = 0x60, "lw", Mxm, lat(LatKey::MxmLw), set::MXM, 0, ["dt": DT, "src": Stream],
        "Load weight rows from the 16 streams src..src+15 into the weight buffer (16 int8 rows or 8 fp16 rows).";
    Iw = 0x61, "iw", Mxm, lat(LatKey::MxmIw), 0, 0, ["transpose": Flag],
        "Install the weight buffer into the array (usable mxm_iw cycles later; transpose=1 installs row r as column r) and clear the buffer.";
    Abc = 0x62, "abc", Mxm, lat(LatKey::MxmAbc), 0, 0, ["src": Stream, "slot": Slot, "acc": Flag],
        "Multiply the activation vector on src (1 stream int8, 2 streams fp16) by the installed weights into slot (acc=1 adds to it); slots advanced by repeat wrap around.";
    Acc = 0x63, "acc", Mxm, lat(LatKey::MxmAcc), 0, 0, ["slot": Slot, "dst": Stream],
        "Emit the int32/fp32 results in slot onto the 4 streams dst..dst+3; slots advanced by repeat wrap around.";

    // ---- SXM: data movement across lanes ------------------------------------------
    Shiftn = 0x70, "shiftn", Sxm, lat(LatKey::SxmShift), set::ALL, 0,
        ["dt": DT, "src": Stream, "dst": Stream, "n": Count(9)],
        "dst lane l = src lane l-n (shift north, towards higher lanes), zero fill.";
    Shifts = 0x71, "shifts", Sxm, lat(LatKey::SxmShift), set::ALL, 0,
        ["dt": DT, "src": Stream, "dst": Stream, "n": Count(9)],
        "dst lane l = src lane l+n (shift south, towards lane 0), zero fill.";
    Permute = 0x72, "permute", Sxm, lat(LatKey::SxmPermute), set::ALL, 0,
        ["dt": DT, "src": Stream, "map": Stream, "dst": Stream],
        "dst lane l = src lane map[l]; map is a 2-stream group of uint16 lane indices forming a permutation.";
    Distribute = 0x73, "distribute", Sxm, lat(LatKey::SxmDistribute), set::ALL, 0,
        ["dt": DT, "src": Stream, "map": Stream, "dst": Stream],
        "Within each superlane, dst lane j = src lane map[j] of the same superlane (map[j] >= 16 gives 0).";
    Broadcast = 0x76, "broadcast", Sxm, lat(LatKey::SxmPermute), set::ALL, 0,
        ["dt": DT, "src": Stream, "dst": Stream],
        "dst lane l = src lane l mod 16: superlane 0 copied to every superlane, on the permuter (a distribute first makes it one lane to all).";
    Rotate = 0x74, "rotate", Sxm, lat(LatKey::SxmRotate), 0, 0,
        ["src": Stream, "dst": Stream, "n": Count(3)],
        "From the n streams src.. (n = 3 or 4) emit n*n streams: dst+i*n+j = stream j rotated down by i lanes.";
    Transpose = 0x75, "transpose", Sxm, lat(LatKey::SxmTranspose), 0, 0,
        ["src": Stream, "dst": Stream],
        "Per superlane, transpose the 16x16 bytes of streams src..src+15: dst+i lane 16g+j = src+j lane 16g+i.";

    // ---- C2C: chip-to-chip links (decoded now; executed once multi-chip exists) -----------
    Send = 0x80, "send", C2c, lat(LatKey::C2c), 0, 0, ["src": Stream, "link": Count(4)],
        "Transmit the vector on src over link (multi-chip is not emulated yet: running it is an `unsupported` fault).";
    Receive = 0x81, "receive", C2c, lat(LatKey::C2c), 0, 0, ["dst": Stream, "link": Count(4)],
        "Place the next vector arriving on link onto dst (not emulated yet: an `unsupported` fault).";
    Deskew = 0x82, "deskew", C2c, lat(LatKey::C2c), 0, 0, [],
        "Stall until the next global-time epoch, aligning plesiochronous links (not emulated yet: an `unsupported` fault).";
}

impl Op {
    pub fn def(self) -> &'static InstrDef {
        let i = opcode_index()[self as usize].expect("every Op is in TABLE");
        &TABLE[i as usize]
    }

    pub fn from_opcode(opcode: u8) -> Option<Op> {
        opcode_index()[opcode as usize].map(|i| TABLE[i as usize].op)
    }

    pub fn from_mnemonic(m: &str) -> Option<Op> {
        TABLE.iter().find(|d| d.mnemonic == m).map(|d| d.op)
    }

    pub fn mnemonic(self) -> &'static str {
        self.def().mnemonic
    }

    pub fn unit(self) -> Unit {
        self.def().unit
    }
}

fn opcode_index() -> &'static [Option<u16>; 256] {
    static INDEX: OnceLock<[Option<u16>; 256]> = OnceLock::new();
    INDEX.get_or_init(|| {
        let mut idx = [None; 256];
        for (i, d) in TABLE.iter().enumerate() {
            idx[d.opcode as usize] = Some(i as u16);
        }
        idx
    })
}

/// Consecutive streams that one operand of an instruction names: the operand gives the
/// first, the instruction says how many.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamGroup {
    /// The operand's field index.
    pub field: usize,
    /// How many streams.
    pub count: u32,
    /// The first stream's index must be a multiple of this.
    pub align: u32,
    /// Written (else read).
    pub write: bool,
}

/// The stream groups of one instruction, in field order (at most three).
#[derive(Clone, Copy, Debug, Default)]
pub struct StreamGroups {
    groups: [StreamGroup; 3],
    len: usize,
}

impl std::ops::Deref for StreamGroups {
    type Target = [StreamGroup];
    fn deref(&self) -> &[StreamGroup] {
        &self.groups[..self.len]
    }
}

impl StreamGroups {
    #[inline]
    fn of(list: &[(usize, u32, bool)]) -> StreamGroups {
        let mut g = StreamGroups::default();
        for &(field, count, write) in list {
            g.groups[g.len] = StreamGroup {
                field,
                count,
                align: count,
                write,
            };
            g.len += 1;
        }
        g
    }
}

/// A decoded instruction: its op and its operand values in table field order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Instr {
    pub op: Op,
    pub args: [u32; MAX_FIELDS],
}

impl Instr {
    /// Build an instruction, checking the number and range of operands.
    pub fn new(op: Op, operands: &[u32]) -> Result<Instr, DecodeError> {
        let def = op.def();
        if operands.len() != def.fields.len() {
            return Err(DecodeError::new(
                def.mnemonic,
                format!(
                    "takes {} operands, got {}",
                    def.fields.len(),
                    operands.len()
                ),
            ));
        }
        let mut args = [0; MAX_FIELDS];
        args[..operands.len()].copy_from_slice(operands);
        let i = Instr { op, args };
        i.check()?;
        Ok(i)
    }

    pub fn def(&self) -> &'static InstrDef {
        self.op.def()
    }

    /// Operand values, one per field.
    pub fn operands(&self) -> &[u32] {
        &self.args[..self.def().fields.len()]
    }

    /// The stream groups it reads and writes: the one place that says how many
    /// streams each stream operand spans (the element type's bytes for most; `lw`'s 16,
    /// `acc`'s 4 fp32 planes, an address map's 2 bytes, ...). The engine, its batches
    /// and the program checks all take them from here. A group's operand may name no
    /// stream (a VXM operand `alu3`, a destination `-`): `StreamRef::from_operand`
    /// says so. `abc`'s input is left out: its width is the type of the weights the
    /// plane holds when it runs.
    #[inline]
    pub fn stream_groups(&self) -> StreamGroups {
        let a = self.args;
        let dt = |k: usize| DType::from_code(a[k]).map_or(1, |d| d.bytes() as u32);
        let (r, w) = (false, true);
        match self.op {
            Op::Read => StreamGroups::of(&[(1, 1, w)]),
            Op::Gather => StreamGroups::of(&[(0, 2, r), (1, 1, w)]),
            Op::Write => StreamGroups::of(&[(1, 1, r)]),
            Op::Scatter => StreamGroups::of(&[(0, 2, r), (1, 1, r)]),
            Op::Lw => StreamGroups::of(&[(1, LW_STREAMS as u32, r)]),
            Op::Acc => StreamGroups::of(&[(1, 4, w)]),
            Op::Shiftn | Op::Shifts | Op::Broadcast => {
                StreamGroups::of(&[(1, dt(0), r), (2, dt(0), w)])
            }
            Op::Permute => StreamGroups::of(&[(1, dt(0), r), (2, 2, r), (3, dt(0), w)]),
            Op::Distribute => StreamGroups::of(&[(1, dt(0), r), (2, 1, r), (3, dt(0), w)]),
            Op::Transpose => StreamGroups::of(&[(0, 16, r), (1, 16, w)]),
            Op::Rotate => {
                // n and n x n streams, anywhere they fit.
                let mut g = StreamGroups::of(&[(0, a[2], r), (1, a[2] * a[2], w)]);
                g.groups[..2].iter_mut().for_each(|g| g.align = 1);
                g
            }
            Op::Cast => StreamGroups::of(&[(2, dt(0), r), (3, dt(1), w)]),
            Op::Send => StreamGroups::of(&[(0, 1, r)]),
            Op::Receive => StreamGroups::of(&[(0, 1, w)]),
            _ if self.op.flags() & flags::BINARY != 0 => {
                StreamGroups::of(&[(1, dt(0), r), (2, dt(0), r), (3, dt(0), w)])
            }
            _ if self.op.flags() & flags::UNARY != 0 => {
                StreamGroups::of(&[(1, dt(0), r), (2, dt(0), w)])
            }
            _ => StreamGroups::default(),
        }
    }

    /// The streams it writes: (first, how many), if it writes any.
    #[inline]
    pub fn stream_writes(&self) -> Option<(StreamRef, u32)> {
        let g = self.stream_groups().iter().find(|g| g.write).copied()?;
        StreamRef::from_operand(self.args[g.field]).map(|s| (s, g.count))
    }

    /// Operand by field name (slow; for tools, not the engine's hot path).
    pub fn get(&self, name: &str) -> Option<u32> {
        self.def().field(name).map(|i| self.args[i])
    }

    /// Chip-independent validity: every operand is a legal value of its kind and the
    /// `dt` operand is one the instruction accepts.
    pub fn check(&self) -> Result<(), DecodeError> {
        let def = self.def();
        for (i, f) in def.fields.iter().enumerate() {
            let v = self.args[i];
            if !f.kind.valid(v) {
                return Err(DecodeError::new(
                    f.name,
                    format!("{} is not a valid {} operand", v, f.kind.name()),
                ));
            }
            if f.name == "dt" && def.dtypes & (1 << v) == 0 {
                return Err(DecodeError::new(
                    f.name,
                    format!(
                        "{} does not take {} (allowed: {})",
                        def.mnemonic,
                        f.kind.format(v),
                        set::names(def.dtypes).join(", ")
                    ),
                ));
            }
        }
        for v in &self.args[def.fields.len()..] {
            if *v != 0 {
                return Err(DecodeError::new(def.mnemonic, "unused operand slot is set"));
            }
        }
        Ok(())
    }

    pub fn encode(&self) -> u64 {
        let def = self.def();
        let mut w = def.opcode as u64;
        let mut shift = 8;
        for (i, f) in def.fields.iter().enumerate() {
            w |= (self.args[i] as u64) << shift;
            shift += f.kind.bits();
        }
        w
    }

    pub fn decode(word: u64) -> Result<Instr, DecodeError> {
        let opcode = (word & 0xff) as u8;
        let op = Op::from_opcode(opcode)
            .ok_or_else(|| DecodeError::new("opcode", format!("unknown opcode 0x{opcode:02x}")))?;
        let def = op.def();
        let mut args = [0; MAX_FIELDS];
        let mut shift = 8;
        for (i, f) in def.fields.iter().enumerate() {
            let bits = f.kind.bits();
            args[i] = ((word >> shift) & ((1u64 << bits) - 1)) as u32;
            shift += bits;
        }
        if shift < 64 && word >> shift != 0 {
            return Err(DecodeError::new(
                def.mnemonic,
                format!("reserved bits {shift}..63 are not zero"),
            ));
        }
        let i = Instr { op, args };
        i.check()?;
        Ok(i)
    }

    /// Assembly text: `mnemonic op1, op2, ...`.
    pub fn disassemble(&self) -> String {
        let def = self.def();
        let mut s = def.mnemonic.to_string();
        for (i, f) in def.fields.iter().enumerate() {
            s.push_str(if i == 0 { " " } else { ", " });
            s.push_str(&f.kind.format(self.args[i]));
        }
        s
    }

    /// Functional latency on a chip with the given latencies (0 for queue control).
    pub fn latency(&self, lat: &crate::config::Latencies) -> u32 {
        self.def().latency.map_or(0, |k| lat.get(k))
    }
}

impl std::fmt::Display for Instr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.disassemble())
    }
}

/// The VXM ALUs that are "large" (can run transcendentals, casts, max/min).
pub const LARGE_ALUS: [u8; 8] = [0, 2, 5, 7, 8, 10, 13, 15];

pub fn is_large_alu(alu: u8) -> bool {
    LARGE_ALUS.contains(&alu)
}

/// `docs/isa.md`, generated from [`TABLE`].
pub fn markdown() -> String {
    let mut s = String::new();
    s.push_str("# Instruction set reference\n\n");
    s.push_str(
        "Generated from the instruction table in `rust/lpu-core/src/isa.rs` \
         (`UPDATE_DOCS=1 cargo test -p lpu-core` rewrites it; a test fails when it is stale).\n\n",
    );
    s.push_str(
        "Every instruction is one little-endian 64-bit word: the opcode in bits 0..8, then the \
         operand fields from bit 8 upward in the order listed, each as wide as its kind; \
         higher bits are zero. Latency is the functional delay d_func in cycles, named by its \
         `ChipConfig` entry (defaults in `docs/timing.md`).\n\n",
    );
    s.push_str("## Operand kinds\n\n| kind | bits | text | meaning |\n|---|---|---|---|\n");
    for (kind, text, meaning) in [
        (
            FieldKind::Count(0),
            "`12`",
            "unsigned count; width given per field",
        ),
        (
            FieldKind::Addr,
            "`4095`",
            "word address in a MEM slice; `repeat` adds 1 per re-issue",
        ),
        (
            FieldKind::Stream,
            "`s5e`, `s5w`",
            "stream 0..31, eastward or westward",
        ),
        (
            FieldKind::Src,
            "`s5e`, `alu3`",
            "a stream, or the output of VXM ALU 0..15 (chaining)",
        ),
        (
            FieldKind::Dst,
            "`s5w`, `-`",
            "a stream, or none (result only chained)",
        ),
        (
            FieldKind::DType,
            "`i8` `i16` `i32` `f16` `f32` `bf16`",
            "element type",
        ),
        (
            FieldKind::Slot,
            "`17`",
            "MXM accumulator slot; `repeat` adds 1 per re-issue",
        ),
        (FieldKind::Flag, "`0`, `1`", "flag"),
    ] {
        let bits = if let FieldKind::Count(_) = kind {
            "n".to_string()
        } else {
            kind.bits().to_string()
        };
        let _ = writeln!(s, "| {} | {} | {} | {} |", kind.name(), bits, text, meaning);
    }
    s.push_str(
        "\nMulti-byte types use stream groups: a `dt` of 2 bytes reads streams s and s+1, \
         4 bytes s..s+3 (byte 0 on the lowest stream); the group base must be a multiple of \
         its size. Instructions marked *large* run only on the VXM's large ALUs \
         (0, 2, 5, 7, 8, 10, 13, 15). *Timing only* instructions are decoded, timed and \
         counted but have no other modelled effect.\n",
    );
    for unit in Unit::ALL {
        let _ = write!(
            s,
            "\n## {}\n\n| mnemonic | opcode | operands | latency | types | description |\n|---|---|---|---|---|---|\n",
            unit.name()
        );
        for d in TABLE.iter().filter(|d| d.unit == unit) {
            let ops: Vec<String> = d
                .fields
                .iter()
                .map(|f| match f.kind {
                    FieldKind::Count(b) => format!("{}:count{}", f.name, b),
                    k => format!("{}:{}", f.name, k.name()),
                })
                .collect();
            let mut notes = Vec::new();
            if d.has(LARGE_ALU) {
                notes.push("*large*");
            }
            if d.has(TIMING_ONLY) {
                notes.push("*timing only*");
            }
            let _ = writeln!(
                s,
                "| `{}` | 0x{:02x} | {} | {} | {} | {}{} |",
                d.mnemonic,
                d.opcode,
                if ops.is_empty() {
                    "—".into()
                } else {
                    format!("`{}`", ops.join(", "))
                },
                d.latency.map_or("—".into(), |k| format!("`{}`", k.name())),
                if d.dtypes == 0 {
                    "—".into()
                } else {
                    set::names(d.dtypes).join(" ")
                },
                d.doc,
                if notes.is_empty() {
                    String::new()
                } else {
                    format!(" {}", notes.join(" "))
                }
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny deterministic generator (xorshift) so the property test needs no crate.
    pub(crate) struct Rng(u64);
    impl Rng {
        pub(crate) fn new(seed: u64) -> Self {
            Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
        }
        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        pub(crate) fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn random_valid(def: &InstrDef, rng: &mut Rng) -> Instr {
        loop {
            let mut args = [0u32; MAX_FIELDS];
            for (i, f) in def.fields.iter().enumerate() {
                args[i] = (rng.next() & ((1u64 << f.kind.bits()) - 1)) as u32;
            }
            let i = Instr { op: def.op, args };
            if i.check().is_ok() {
                return i;
            }
        }
    }

    #[test]
    fn table_is_consistent() {
        let mut seen = std::collections::HashSet::new();
        for d in TABLE {
            assert!(seen.insert(d.opcode), "duplicate opcode {:#x}", d.opcode);
            assert_eq!(d.op as u8, d.opcode);
            assert!(d.fields.len() <= MAX_FIELDS);
            let bits: u32 = d.fields.iter().map(|f| f.kind.bits()).sum();
            assert!(bits <= 56, "{} operands need {bits} bits", d.mnemonic);
            assert_eq!(Op::from_mnemonic(d.mnemonic), Some(d.op));
            assert_eq!(d.op.flags(), d.flags);
            assert_eq!(d.field("dt").is_some(), d.dtypes != 0, "{}", d.mnemonic);
            if d.unit == Unit::Vxm {
                assert!(d.latency.is_some());
            }
        }
    }

    #[test]
    fn every_stream_operand_has_one_group() {
        let mut rng = Rng::new(3);
        for d in TABLE {
            let i = random_valid(d, &mut rng);
            let groups = i.stream_groups();
            let streams: Vec<usize> = (0..d.fields.len())
                .filter(|&f| {
                    matches!(
                        d.fields[f].kind,
                        FieldKind::Stream | FieldKind::Src | FieldKind::Dst
                    )
                })
                .filter(|_| d.op != Op::Abc)
                .collect();
            let fields: Vec<usize> = groups.iter().map(|g| g.field).collect();
            assert_eq!(fields, streams, "{}", d.mnemonic);
            for g in groups.iter() {
                assert!(
                    g.align >= 1 && (g.count >= 1 || d.op == Op::Rotate),
                    "{}",
                    d.mnemonic
                );
                // Destinations are written, everything else read.
                let name = d.fields[g.field].name;
                assert_eq!(g.write, name == "dst", "{} {name}", d.mnemonic);
            }
            assert!(groups.iter().filter(|g| g.write).count() <= 1);
        }
        // Widths that depend on operands.
        let f32_add = Instr::new(Op::Add, &[DType::F32 as u32, 4, 8, 12]).unwrap();
        assert_eq!(
            f32_add.stream_writes(),
            StreamRef::from_operand(12).map(|s| (s, 4))
        );
        let cast = Instr::new(Op::Cast, &[DType::I8 as u32, DType::F16 as u32, 1, 2, 0]).unwrap();
        let g = cast.stream_groups();
        assert_eq!((g[0].count, g[1].count), (1, 2));
        let rot = Instr::new(Op::Rotate, &[0, 40, 3]).unwrap();
        let g = rot.stream_groups();
        assert_eq!(
            (g[0].count, g[0].align, g[1].count, g[1].align),
            (3, 1, 9, 1)
        );
        let chained = Instr::new(Op::Add, &[DType::I8 as u32, 0, 1, DST_NONE]).unwrap();
        assert_eq!(chained.stream_writes(), None);
    }

    #[test]
    fn encode_decode_round_trip_every_instruction() {
        let mut rng = Rng::new(7);
        for d in TABLE {
            for _ in 0..500 {
                let i = random_valid(d, &mut rng);
                let w = i.encode();
                assert_eq!(Instr::decode(w).unwrap(), i, "{}", i);
                assert_eq!(Instr::decode(w).unwrap().encode(), w);
            }
        }
    }

    #[test]
    fn random_words_never_panic_and_valid_ones_round_trip() {
        let mut rng = Rng::new(11);
        for _ in 0..200_000 {
            let w = if rng.below(2) == 0 {
                rng.next()
            } else {
                // keep the high bits clear so more words decode
                rng.next() >> rng.below(56)
            };
            if let Ok(i) = Instr::decode(w) {
                assert_eq!(i.encode(), w);
            }
        }
    }

    #[test]
    fn decode_errors_name_the_field() {
        assert_eq!(Instr::decode(0xff).unwrap_err().field, "opcode");
        // add with dt = 7 (not a type)
        let w = Op::Add as u64 | (7 << 8);
        assert_eq!(Instr::decode(w).unwrap_err().field, "dt");
        // and on f32 is not allowed
        let e = Instr::new(Op::And, &[DType::F32 as u32, 0, 1, 2]).unwrap_err();
        assert_eq!(e.field, "dt");
        let e = Instr::new(Op::Read, &[0, 64]).unwrap_err();
        assert_eq!(e.field, "dst");
        let w = Instr::new(Op::Sync, &[]).unwrap().encode() | (1 << 40);
        assert!(Instr::decode(w).unwrap_err().msg.contains("reserved"));
    }

    #[test]
    fn disassembly_text() {
        let i = Instr::new(Op::Add, &[DType::F32 as u32, 4, ALU_SRC_BASE + 3, DST_NONE]).unwrap();
        assert_eq!(i.disassemble(), "add f32, s4e, alu3, -");
        let i = Instr::new(Op::Read, &[100, 32 + 7]).unwrap();
        assert_eq!(i.to_string(), "read 100, s7w");
    }

    #[test]
    fn isa_doc_is_fresh() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/isa.md");
        let want = markdown();
        if std::env::var_os("UPDATE_DOCS").is_some() {
            std::fs::write(path, &want).unwrap();
        }
        let have = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            have == want,
            "docs/isa.md is stale: run `UPDATE_DOCS=1 cargo test -p lpu-core isa_doc`"
        );
    }
}
