//! Programs: instruction queues, SRAM initialisers, named tensors and entry points,
//! and their versioned binary file format.
//!
//! File layout (all integers little-endian):
//!
//! ```text
//! magic     8 bytes  "LPUPROG\0"
//! version   u16 major, u16 minor
//! sections  u32 count, then per section: 4-byte tag, u32 payload length, payload
//! crc32     u32 (IEEE) of every byte before it
//! ```
//!
//! Sections: `CONF` (exactly one, first: the ChipConfig the program targets), `QUEU`
//! (one per non-empty instruction queue), `INIT` (SRAM initialisers), `TENS` (named
//! tensors), `ENTR` (entry points), `META` (key/value strings). Strings are a u16 byte
//! length and UTF-8. The reader checks structure first, so a damaged file is reported
//! at the offset and field where it stops making sense; the checksum catches the rest.

use crate::config::{ChipConfig, QueueInfo, QueueKind, SxmUnit, HEMISPHERES};
use crate::dtype::DType;
use crate::error::{DecodeError, FormatError};
use crate::isa::{is_large_alu, FieldKind, Instr, Op, StreamRef, Unit, ALU_SRC_BASE};

pub const MAGIC: &[u8; 8] = b"LPUPROG\0";
pub const VERSION_MAJOR: u16 = 1;
pub const VERSION_MINOR: u16 = 0;

/// The instructions of one queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueCode {
    pub queue: String,
    pub code: Vec<Instr>,
}

/// Words written into SRAM before the program starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SramInit {
    pub hemi: u8,
    pub slice: u16,
    pub addr: u32,
    /// Whole words: `len` is a multiple of the chip's lane count.
    pub data: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TensorKind {
    Input,
    Output,
    /// Data fixed at build time (stored with SRAM initialisers).
    Constant,
    /// On-chip storage that is neither read from nor returned to the host.
    Scratch,
}

impl TensorKind {
    pub const ALL: [TensorKind; 4] = [
        TensorKind::Input,
        TensorKind::Output,
        TensorKind::Constant,
        TensorKind::Scratch,
    ];
    pub fn name(self) -> &'static str {
        match self {
            TensorKind::Input => "input",
            TensorKind::Output => "output",
            TensorKind::Constant => "constant",
            TensorKind::Scratch => "scratch",
        }
    }
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|k| k.name() == s)
    }
}

/// Where a tensor lives on chip.
///
/// The tensor is a sequence of vectors (rows of its last dimension, each padded to
/// whole vectors of `lanes` elements). Vector `v`, byte plane `b` is stored in slice
/// `slices[b * split + v % split]` at address `addr + v / split`: byte planes of one
/// element sit in different slices so one cycle reads them all, and `split > 1` spreads
/// consecutive vectors over several slices so they can be read in parallel.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Layout {
    pub hemi: u8,
    pub addr: u32,
    pub split: u16,
    pub slices: Vec<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorDesc {
    pub name: String,
    pub kind: TensorKind,
    pub dtype: DType,
    pub shape: Vec<u64>,
    pub layout: Layout,
}

impl TensorDesc {
    /// Vectors needed on a chip with `lanes` lanes.
    pub fn vectors(&self, lanes: usize) -> u64 {
        vectors_for(&self.shape, lanes)
    }

    /// (slice, address) of byte plane `b` of vector `v`.
    pub fn location(&self, v: u64, b: usize) -> (u16, u32) {
        let split = self.layout.split as u64;
        let slice = self.layout.slices[b * split as usize + (v % split) as usize];
        (slice, self.layout.addr + (v / split) as u32)
    }
}

/// Vectors a tensor of this shape occupies: one row per leading index, each row of the
/// last dimension padded to whole vectors (a scalar is one vector).
pub fn vectors_for(shape: &[u64], lanes: usize) -> u64 {
    let (rows, cols) = match shape.split_last() {
        None => (1, 1),
        Some((last, lead)) => (lead.iter().fold(1u64, |a, &d| a.saturating_mul(d)), *last),
    };
    // Saturating: an absurd shape must fail the capacity check, not wrap around.
    rows.saturating_mul(cols.div_ceil(lanes as u64))
}

/// Where each queue starts for one named entry point (queues not listed start at 0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryPoint {
    pub name: String,
    pub starts: Vec<(String, u32)>,
}

/// A complete program for one chip configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Program {
    pub config: ChipConfig,
    pub queues: Vec<QueueCode>,
    pub inits: Vec<SramInit>,
    pub tensors: Vec<TensorDesc>,
    pub entries: Vec<EntryPoint>,
    pub meta: Vec<(String, String)>,
}

/// A static problem with one instruction, located by queue and index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstrError {
    pub queue: String,
    pub index: usize,
    pub error: DecodeError,
}

impl std::fmt::Display for InstrError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "queue {} instruction {}: {}",
            self.queue, self.index, self.error
        )
    }
}

fn bad(field: &str, msg: impl Into<String>) -> DecodeError {
    DecodeError::new(field, msg)
}

/// Check one instruction against the chip and the queue it is on: the unit matches the
/// queue, addresses exist, stream groups are aligned, large-ALU ops sit on large ALUs.
pub fn check_instr(cfg: &ChipConfig, kind: QueueKind, i: &Instr) -> Result<(), DecodeError> {
    let def = i.def();
    let a = &i.args;
    if def.unit != Unit::Icu {
        let ok = match (def.unit, kind) {
            (Unit::Mem, QueueKind::Mem { .. }) | (Unit::Vxm, QueueKind::Vxm { .. }) => true,
            (Unit::C2c, QueueKind::C2c { .. }) => true,
            (Unit::Mxm, QueueKind::MxmLoad { .. }) => matches!(i.op, Op::Lw | Op::Iw),
            (Unit::Mxm, QueueKind::MxmAbc { .. }) => i.op == Op::Abc,
            (Unit::Mxm, QueueKind::MxmAcc { .. }) => i.op == Op::Acc,
            (Unit::Sxm, QueueKind::Sxm { unit, .. }) => sxm_unit(i.op) == Some(unit),
            _ => false,
        };
        if !ok {
            return Err(bad(
                "queue",
                format!("{} cannot run on this queue", def.mnemonic),
            ));
        }
    }
    for (fi, f) in def.fields.iter().enumerate() {
        if f.kind == FieldKind::Addr && a[fi] >= cfg.addresses {
            return Err(bad(
                f.name,
                format!(
                    "address {} is beyond the slice's {} words",
                    a[fi], cfg.addresses
                ),
            ));
        }
        if f.kind == FieldKind::Slot && a[fi] >= cfg.mxm_acc_slots {
            return Err(bad(
                f.name,
                format!(
                    "slot {} is beyond the {} accumulator slots",
                    a[fi], cfg.mxm_acc_slots
                ),
            ));
        }
    }
    match i.op {
        Op::Nop if a[0] == 0 => return Err(bad("n", "nop needs n >= 1")),
        Op::Repeat if a[1] == 0 => return Err(bad("d", "repeat needs d >= 1")),
        Op::Config if a[0] == 0 || a[0] > cfg.superlanes => {
            return Err(bad("superlanes", format!("must be 1..={}", cfg.superlanes)))
        }
        Op::Shiftn | Op::Shifts if a[3] as usize >= cfg.lanes() => {
            return Err(bad(
                "n",
                format!("shift must be below {} lanes", cfg.lanes()),
            ))
        }
        Op::Rotate if a[2] != 3 && a[2] != 4 => return Err(bad("n", "rotate takes n = 3 or 4")),
        _ => {}
    }
    for g in i.stream_groups().iter() {
        let (f, v) = (def.fields[g.field].name, a[g.field]);
        let Some(s) = StreamRef::from_operand(v) else {
            continue; // an ALU's output, or no stream
        };
        if !s.index.is_multiple_of(g.align) {
            return Err(bad(
                f,
                format!(
                    "stream group of {} must start at a multiple of {}, not {}",
                    g.count,
                    g.align,
                    FieldKind::Stream.format(v)
                ),
            ));
        }
        if s.index + g.count > cfg.streams {
            return Err(bad(
                f,
                format!(
                    "a group of {} streams from {} runs past stream {}",
                    g.count,
                    FieldKind::Stream.format(v),
                    cfg.streams - 1
                ),
            ));
        }
    }
    if def.unit == Unit::Vxm {
        let alu = match kind {
            QueueKind::Vxm { alu } => alu,
            _ => unreachable!("unit checked above"),
        };
        if def.has(crate::isa::flags::LARGE_ALU) && !is_large_alu(alu) {
            return Err(bad(
                "queue",
                format!(
                    "{} needs a large ALU (0, 2, 5, 7, 8, 10, 13, 15), not ALU {alu}",
                    def.mnemonic
                ),
            ));
        }
        for (fi, f) in def.fields.iter().enumerate() {
            let v = a[fi];
            if f.kind == FieldKind::Src && v >= ALU_SRC_BASE && v - ALU_SRC_BASE >= cfg.vxm_alus {
                return Err(bad(f.name, "no such ALU"));
            }
        }
    }
    Ok(())
}

/// The SXM sub-unit that runs an SXM instruction.
pub fn sxm_unit(op: Op) -> Option<SxmUnit> {
    Some(match op {
        Op::Shiftn | Op::Shifts => SxmUnit::Shifter,
        Op::Permute | Op::Broadcast => SxmUnit::Permuter,
        Op::Distribute => SxmUnit::Distributor,
        Op::Transpose => SxmUnit::Transposer,
        Op::Rotate => SxmUnit::Rotator,
        _ => return None,
    })
}

/// Check a whole queue: each instruction, plus `repeat` only after a unit instruction.
pub fn check_queue(cfg: &ChipConfig, q: &QueueInfo, code: &[Instr]) -> Vec<InstrError> {
    let mut errs = Vec::new();
    for (idx, i) in code.iter().enumerate() {
        let mut r = check_instr(cfg, q.kind, i);
        if r.is_ok() && i.op == Op::Repeat {
            let prev = idx.checked_sub(1).map(|p| code[p].op);
            if prev.is_none_or(|p| p.unit() == Unit::Icu) {
                r = Err(bad(
                    "repeat",
                    "repeat must follow a MEM, VXM, MXM, SXM or C2C instruction",
                ));
            }
        }
        if let Err(error) = r {
            errs.push(InstrError {
                queue: q.name.clone(),
                index: idx,
                error,
            });
        }
    }
    errs
}

impl Program {
    pub fn new(config: ChipConfig) -> Self {
        Program {
            config,
            queues: Vec::new(),
            inits: Vec::new(),
            tensors: Vec::new(),
            entries: Vec::new(),
            meta: Vec::new(),
        }
    }

    /// Total instructions in all queues.
    pub fn instruction_count(&self) -> usize {
        self.queues.iter().map(|q| q.code.len()).sum()
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorDesc> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Every static problem of the program on its own config, as readable messages.
    pub fn check(&self) -> Vec<String> {
        let cfg = &self.config;
        let mut errs = Vec::new();
        if let Err(e) = cfg.validate() {
            return vec![e.to_string()];
        }
        let queues = cfg.queues();
        let mut seen = std::collections::HashSet::new();
        for qc in &self.queues {
            if !seen.insert(qc.queue.as_str()) {
                errs.push(format!("queue {} appears twice", qc.queue));
            }
            match queues.iter().find(|q| q.name == qc.queue) {
                None => errs.push(format!("no queue named '{}' on {}", qc.queue, cfg.name)),
                Some(q) => errs.extend(check_queue(cfg, q, &qc.code).iter().map(|e| e.to_string())),
            }
        }
        let lanes = cfg.lanes();
        let mut spans: Vec<(u8, u16, u32, u32)> = Vec::new();
        for (n, init) in self.inits.iter().enumerate() {
            if let Err(m) = check_init(cfg, init) {
                errs.push(format!("SRAM initialiser {n}: {m}"));
            } else {
                let end = init.addr + (init.data.len() / lanes) as u32;
                spans.push((init.hemi, init.slice, init.addr, end));
            }
        }
        spans.sort_unstable();
        for w in spans.windows(2) {
            let (a, b) = (w[0], w[1]);
            if (a.0, a.1) == (b.0, b.1) && b.2 < a.3 {
                errs.push(format!(
                    "SRAM initialisers overlap at {}{} address {}",
                    HEMISPHERES[a.0 as usize], a.1, b.2
                ));
            }
        }
        let mut names = std::collections::HashSet::new();
        for t in &self.tensors {
            if !names.insert(t.name.as_str()) {
                errs.push(format!("tensor '{}' is declared twice", t.name));
            }
            if let Err(m) = check_tensor(cfg, t) {
                errs.push(format!("tensor '{}': {m}", t.name));
            }
        }
        for e in &self.entries {
            for (qname, pc) in &e.starts {
                let len = self
                    .queues
                    .iter()
                    .find(|q| &q.queue == qname)
                    .map(|q| q.code.len());
                match len {
                    None if queues.iter().any(|q| &q.name == qname) && *pc == 0 => {}
                    None => errs.push(format!("entry '{}': queue '{qname}' has no code", e.name)),
                    Some(l) if *pc as usize > l => errs.push(format!(
                        "entry '{}': start {pc} is past the end of {qname} ({l} instructions)",
                        e.name
                    )),
                    _ => {}
                }
            }
        }
        errs
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.bytes(MAGIC);
        w.u16(VERSION_MAJOR);
        w.u16(VERSION_MINOR);
        let mut sections: Vec<([u8; 4], Vec<u8>)> = Vec::new();
        let mut s = Writer::default();
        s.str(&self.config.name);
        let params = self.config.params();
        s.u16(params.len() as u16);
        for (k, v) in params {
            s.str(k);
            s.u64(v);
        }
        sections.push((*b"CONF", s.0));
        for q in &self.queues {
            let mut s = Writer::default();
            s.str(&q.queue);
            s.u32(q.code.len() as u32);
            for i in &q.code {
                s.u64(i.encode());
            }
            sections.push((*b"QUEU", s.0));
        }
        for init in &self.inits {
            let mut s = Writer::default();
            s.u8(init.hemi);
            s.u16(init.slice);
            s.u32(init.addr);
            s.u32((init.data.len() / self.config.lanes().max(1)) as u32);
            s.bytes(&init.data);
            sections.push((*b"INIT", s.0));
        }
        for t in &self.tensors {
            let mut s = Writer::default();
            s.str(&t.name);
            s.u8(t.kind as u8);
            s.u8(t.dtype as u8);
            s.u8(t.shape.len() as u8);
            for d in &t.shape {
                s.u64(*d);
            }
            s.u8(t.layout.hemi);
            s.u32(t.layout.addr);
            s.u16(t.layout.split);
            s.u16(t.layout.slices.len() as u16);
            for sl in &t.layout.slices {
                s.u16(*sl);
            }
            sections.push((*b"TENS", s.0));
        }
        for e in &self.entries {
            let mut s = Writer::default();
            s.str(&e.name);
            s.u16(e.starts.len() as u16);
            for (q, pc) in &e.starts {
                s.str(q);
                s.u32(*pc);
            }
            sections.push((*b"ENTR", s.0));
        }
        if !self.meta.is_empty() {
            let mut s = Writer::default();
            s.u16(self.meta.len() as u16);
            for (k, v) in &self.meta {
                s.str(k);
                s.str(v);
            }
            sections.push((*b"META", s.0));
        }
        w.u32(sections.len() as u32);
        for (tag, payload) in sections {
            w.bytes(&tag);
            w.u32(payload.len() as u32);
            w.bytes(&payload);
        }
        let crc = crc32fast::hash(&w.0);
        w.u32(crc);
        w.0
    }

    pub fn from_bytes(data: &[u8]) -> Result<Program, FormatError> {
        let mut r = Reader { data, pos: 0 };
        let magic = r.take(8, "magic")?;
        if magic != MAGIC {
            return Err(FormatError::new(
                0,
                "magic",
                "not an lpu program file (bad magic)",
            ));
        }
        let major = r.u16("version.major")?;
        let minor = r.u16("version.minor")?;
        if major != VERSION_MAJOR {
            return Err(FormatError::new(
                8,
                "version.major",
                format!(
                    "file format version {major}.{minor} is not supported (this build reads {VERSION_MAJOR}.x)"
                ),
            ));
        }
        let count_at = r.pos;
        let count = r.u32("section_count")?;
        // Every section takes at least 8 bytes, so the count is bounded by the data left.
        if count as usize > r.remaining() / 8 {
            return Err(FormatError::new(
                count_at,
                "section_count",
                format!("{count} sections cannot fit in {} bytes", r.remaining()),
            ));
        }
        let mut config: Option<ChipConfig> = None;
        let mut prog = Program::new(ChipConfig::tsp_v1());
        let mut queues: Vec<QueueInfo> = Vec::new();
        for n in 0..count {
            let tag_at = r.pos;
            let tag: [u8; 4] = r.take(4, "section.tag")?.try_into().unwrap();
            let len = r.u32("section.length")? as usize;
            let start = r.pos;
            if len > r.remaining() {
                return Err(FormatError::new(
                    start - 4,
                    "section.length",
                    format!("section of {len} bytes runs past the end of the file"),
                ));
            }
            let mut s = Reader {
                data: &data[..start + len],
                pos: start,
            };
            let tag_str = String::from_utf8_lossy(&tag).to_string();
            if n == 0 && &tag != b"CONF" {
                return Err(FormatError::new(
                    tag_at,
                    "section.tag",
                    format!("first section must be CONF, found '{tag_str}'"),
                ));
            }
            match &tag {
                b"CONF" => {
                    if config.is_some() {
                        return Err(FormatError::new(
                            tag_at,
                            "section.tag",
                            "second CONF section",
                        ));
                    }
                    let cfg = read_config(&mut s)?;
                    queues = cfg.queues();
                    prog.config = cfg.clone();
                    config = Some(cfg);
                }
                b"QUEU" => prog.queues.push(read_queue(&mut s, &prog, &queues)?),
                b"INIT" => prog.inits.push(read_init(&mut s, &prog.config)?),
                b"TENS" => prog.tensors.push(read_tensor(&mut s, &prog)?),
                b"ENTR" => prog.entries.push(read_entry(&mut s, &prog, &queues)?),
                b"META" => {
                    if !prog.meta.is_empty() {
                        return Err(FormatError::new(
                            tag_at,
                            "section.tag",
                            "second META section",
                        ));
                    }
                    let n = s.u16("meta.count")?;
                    for _ in 0..n {
                        let k = s.str("meta.key")?;
                        let v = s.str("meta.value")?;
                        prog.meta.push((k, v));
                    }
                }
                _ => {
                    return Err(FormatError::new(
                        tag_at,
                        "section.tag",
                        format!("unknown section '{tag_str}'"),
                    ))
                }
            }
            if s.pos != start + len {
                return Err(FormatError::new(
                    s.pos,
                    format!("{tag_str} section"),
                    format!(
                        "{} bytes left over at the end of the section",
                        start + len - s.pos
                    ),
                ));
            }
            r.pos = start + len;
        }
        if config.is_none() {
            return Err(FormatError::new(r.pos, "section.tag", "no CONF section"));
        }
        let crc_at = r.pos;
        let body_crc = crc32fast::hash(&data[..crc_at]);
        let crc = r.u32("crc32")?;
        if crc != body_crc {
            return Err(FormatError::new(
                crc_at,
                "crc32",
                format!("checksum mismatch (stored {crc:08x}, computed {body_crc:08x}): the file is damaged"),
            ));
        }
        if r.remaining() != 0 {
            return Err(FormatError::new(
                r.pos,
                "end",
                format!("{} trailing bytes after the checksum", r.remaining()),
            ));
        }
        Ok(prog)
    }

    /// The program as assembly text that re-assembles to the identical binary.
    pub fn disassemble(&self) -> String {
        use std::fmt::Write;
        let cfg = &self.config;
        let mut s = String::new();
        let _ = writeln!(s, "; lpu program for {}", cfg.name);
        let base = ChipConfig::preset(&cfg.name).unwrap_or_else(ChipConfig::tsp_v1);
        let _ = writeln!(
            s,
            ".chip {}",
            if ChipConfig::preset(&cfg.name).is_some() {
                cfg.name.as_str()
            } else {
                "tsp_v1"
            }
        );
        if ChipConfig::preset(&cfg.name).is_none() {
            let _ = writeln!(s, ".name {}", cfg.name);
        }
        for ((k, v), (_, v0)) in cfg.params().into_iter().zip(base.params()) {
            if v != v0 {
                let _ = writeln!(s, ".set {k} {v}");
            }
        }
        for (k, v) in &self.meta {
            let _ = writeln!(s, ".meta {} {}", k, quote(v));
        }
        for t in &self.tensors {
            let shape: Vec<String> = t.shape.iter().map(|d| d.to_string()).collect();
            let slices: Vec<String> = t.layout.slices.iter().map(|d| d.to_string()).collect();
            let _ = writeln!(
                s,
                ".tensor {} {} {} [{}] hemi={} addr={} split={} slices={}",
                t.name,
                t.kind.name(),
                t.dtype.name(),
                shape.join(","),
                HEMISPHERES[t.layout.hemi as usize],
                t.layout.addr,
                t.layout.split,
                slices.join(",")
            );
        }
        let lanes = cfg.lanes();
        for init in &self.inits {
            for (n, word) in init.data.chunks(lanes).enumerate() {
                let hex: String = word.iter().map(|b| format!("{b:02x}")).collect();
                let _ = writeln!(
                    s,
                    ".word {}{} {} {}",
                    HEMISPHERES[init.hemi as usize],
                    init.slice,
                    init.addr as usize + n,
                    hex
                );
            }
        }
        for q in &self.queues {
            let _ = writeln!(s, "\n.queue {}", q.queue);
            for i in &q.code {
                let _ = writeln!(s, "    {i}");
            }
        }
        for e in &self.entries {
            let starts: Vec<String> = e.starts.iter().map(|(q, pc)| format!("{q}={pc}")).collect();
            let _ = writeln!(s, "\n.entry {} {}", e.name, starts.join(" "));
        }
        s
    }
}

/// A string literal for assembly: quotes, backslashes and control characters escaped,
/// so the text stays on one line.
fn quote(v: &str) -> String {
    let mut s = String::from("\"");
    for c in v.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            c if c.is_control() || matches!(c, '\u{85}' | '\u{2028}' | '\u{2029}') => {
                s.push_str(&format!("\\u{{{:x}}}", c as u32))
            }
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

pub fn check_init(cfg: &ChipConfig, init: &SramInit) -> Result<(), String> {
    let lanes = cfg.lanes();
    if init.hemi > 1 {
        return Err(format!("hemisphere {} does not exist", init.hemi));
    }
    if init.slice as u32 >= cfg.mem_slices {
        return Err(format!(
            "slice {} does not exist (0..{})",
            init.slice, cfg.mem_slices
        ));
    }
    if init.data.is_empty() || !init.data.len().is_multiple_of(lanes) {
        return Err(format!(
            "data is {} bytes, not a whole number of {lanes}-byte words",
            init.data.len()
        ));
    }
    let words = (init.data.len() / lanes) as u64;
    if init.addr as u64 + words > cfg.addresses as u64 {
        return Err(format!(
            "words {}..{} run past the slice's {} addresses",
            init.addr,
            init.addr as u64 + words,
            cfg.addresses
        ));
    }
    Ok(())
}

/// Why a tensor is not valid on a chip: its placement, then whether it fits.
pub fn check_tensor(cfg: &ChipConfig, t: &TensorDesc) -> Result<(), String> {
    check_placement(cfg, t)?;
    check_fits(cfg, t)
}

/// Whether a tensor's name, shape and placement make sense on a chip.
pub fn check_placement(cfg: &ChipConfig, t: &TensorDesc) -> Result<(), String> {
    let l = &t.layout;
    if t.name.is_empty() {
        return Err("empty name".into());
    }
    if l.hemi > 1 {
        return Err(format!("hemisphere {} does not exist", l.hemi));
    }
    if l.split == 0 {
        return Err("split must be at least 1".into());
    }
    let want = t.dtype.bytes() * l.split as usize;
    if l.slices.len() != want {
        return Err(format!(
            "{} slices given; {} x split {} needs {want}",
            l.slices.len(),
            t.dtype.name(),
            l.split
        ));
    }
    if let Some(s) = l.slices.iter().find(|s| **s as u32 >= cfg.mem_slices) {
        return Err(format!("slice {s} does not exist (0..{})", cfg.mem_slices));
    }
    let mut uniq = l.slices.clone();
    uniq.sort_unstable();
    uniq.dedup();
    if uniq.len() != l.slices.len() {
        return Err("a slice is listed twice".into());
    }
    if t.shape.contains(&0) {
        return Err("shape has a zero dimension".into());
    }
    Ok(())
}

/// Whether a validly placed tensor fits in its slices' addresses.
pub fn check_fits(cfg: &ChipConfig, t: &TensorDesc) -> Result<(), String> {
    let l = &t.layout;
    let words = t.vectors(cfg.lanes()).div_ceil(l.split as u64);
    if l.addr as u64 + words > cfg.addresses as u64 {
        return Err(format!(
            "needs addresses {}..{} but a slice has {}",
            l.addr,
            l.addr as u64 + words,
            cfg.addresses
        ));
    }
    Ok(())
}

#[derive(Default)]
struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }
    fn str(&mut self, s: &str) {
        self.u16(s.len() as u16);
        self.bytes(s.as_bytes());
    }
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }
    fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8], FormatError> {
        if n > self.remaining() {
            return Err(FormatError::new(
                self.pos,
                field,
                format!("truncated: needs {n} bytes, {} left", self.remaining()),
            ));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self, field: &str) -> Result<u8, FormatError> {
        Ok(self.take(1, field)?[0])
    }
    fn u16(&mut self, field: &str) -> Result<u16, FormatError> {
        Ok(u16::from_le_bytes(self.take(2, field)?.try_into().unwrap()))
    }
    fn u32(&mut self, field: &str) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.take(4, field)?.try_into().unwrap()))
    }
    fn u64(&mut self, field: &str) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.take(8, field)?.try_into().unwrap()))
    }
    fn str(&mut self, field: &str) -> Result<String, FormatError> {
        let at = self.pos;
        let n = self.u16(field)? as usize;
        let b = self.take(n, field)?;
        String::from_utf8(b.to_vec())
            .map_err(|_| FormatError::new(at, field, "string is not valid UTF-8"))
    }
    /// A count of items of at least `min_size` bytes each, bounded by the bytes left.
    fn count<T: Into<u64> + Copy>(
        &self,
        at: usize,
        field: &str,
        n: T,
        min_size: usize,
    ) -> Result<usize, FormatError> {
        let n: u64 = n.into();
        if n > (self.remaining() / min_size.max(1)) as u64 {
            return Err(FormatError::new(
                at,
                field,
                format!(
                    "{n} items cannot fit in the {} bytes left",
                    self.remaining()
                ),
            ));
        }
        Ok(n as usize)
    }
}

fn read_config(s: &mut Reader) -> Result<ChipConfig, FormatError> {
    let start = s.pos;
    let name = s.str("config.name")?;
    let at = s.pos;
    let n = s.u16("config.count")?;
    let n = s.count(at, "config.count", n, 10)?;
    let mut cfg = ChipConfig::tsp_v1();
    cfg.name = name;
    let want = cfg.params();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..n {
        let key_at = s.pos;
        let key = s.str("config.key")?;
        let v = s.u64(&format!("config.{key}"))?;
        if !seen.insert(key.clone()) {
            return Err(FormatError::new(
                key_at,
                "config.key",
                format!("parameter '{key}' appears twice"),
            ));
        }
        cfg.set_param(&key, v)
            .map_err(|e| FormatError::new(key_at, format!("config.{key}"), e.msg))?;
    }
    if let Some((missing, _)) = want.iter().find(|(k, _)| !seen.contains(*k)) {
        return Err(FormatError::new(
            start,
            "config",
            format!("parameter '{missing}' is missing"),
        ));
    }
    cfg.validate()
        .map_err(|e| FormatError::new(start, "config", e.msg))?;
    Ok(cfg)
}

fn read_queue(
    s: &mut Reader,
    prog: &Program,
    queues: &[QueueInfo],
) -> Result<QueueCode, FormatError> {
    let name_at = s.pos;
    let name = s.str("queue.name")?;
    let q = queues.iter().find(|q| q.name == name).ok_or_else(|| {
        FormatError::new(
            name_at,
            "queue.name",
            format!("no queue named '{name}' on {}", prog.config.name),
        )
    })?;
    if prog.queues.iter().any(|c| c.queue == name) {
        return Err(FormatError::new(
            name_at,
            "queue.name",
            format!("queue '{name}' appears twice"),
        ));
    }
    let at = s.pos;
    let n = s.u32("queue.count")?;
    let n = s.count(at, "queue.count", n, 8)?;
    let mut code = Vec::with_capacity(n);
    for idx in 0..n {
        let at = s.pos;
        let word = s.u64("instruction")?;
        let field = |e: &DecodeError| format!("queue {name} instruction {idx}: {}", e.field);
        let i = Instr::decode(word).map_err(|e| FormatError::new(at, field(&e), e.msg))?;
        code.push(i);
    }
    if let Some(e) = check_queue(&prog.config, q, &code).into_iter().next() {
        let at = at + 4 + 8 * e.index;
        return Err(FormatError::new(
            at,
            format!("queue {name} instruction {}: {}", e.index, e.error.field),
            e.error.msg,
        ));
    }
    Ok(QueueCode { queue: name, code })
}

fn read_init(s: &mut Reader, cfg: &ChipConfig) -> Result<SramInit, FormatError> {
    let start = s.pos;
    let hemi = s.u8("init.hemi")?;
    let slice = s.u16("init.slice")?;
    let addr = s.u32("init.addr")?;
    let at = s.pos;
    let words = s.u32("init.words")?;
    let lanes = cfg.lanes();
    let words = s.count(at, "init.words", words, lanes)?;
    let data = s.take(words * lanes, "init.data")?.to_vec();
    let init = SramInit {
        hemi,
        slice,
        addr,
        data,
    };
    check_init(cfg, &init).map_err(|m| FormatError::new(start, "init", m))?;
    Ok(init)
}

fn read_tensor(s: &mut Reader, prog: &Program) -> Result<TensorDesc, FormatError> {
    let start = s.pos;
    let name = s.str("tensor.name")?;
    let at = s.pos;
    let kind = s.u8("tensor.kind")?;
    let kind = *TensorKind::ALL.get(kind as usize).ok_or_else(|| {
        FormatError::new(at, "tensor.kind", format!("unknown tensor kind {kind}"))
    })?;
    let at = s.pos;
    let dt = s.u8("tensor.dtype")?;
    let dtype = DType::from_code(dt as u32)
        .ok_or_else(|| FormatError::new(at, "tensor.dtype", format!("unknown dtype {dt}")))?;
    let at = s.pos;
    let ndim = s.u8("tensor.ndim")?;
    let ndim = s.count(at, "tensor.ndim", ndim, 8)?;
    let mut shape = Vec::with_capacity(ndim);
    for _ in 0..ndim {
        shape.push(s.u64("tensor.shape")?);
    }
    let at = s.pos;
    let hemi = s.u8("tensor.hemi")?;
    if hemi > 1 {
        return Err(FormatError::new(
            at,
            "tensor.hemi",
            format!("hemisphere {hemi} does not exist"),
        ));
    }
    let addr = s.u32("tensor.addr")?;
    let split = s.u16("tensor.split")?;
    let at = s.pos;
    let n = s.u16("tensor.slices")?;
    let n = s.count(at, "tensor.slices", n, 2)?;
    let mut slices = Vec::with_capacity(n);
    for _ in 0..n {
        slices.push(s.u16("tensor.slice")?);
    }
    // Guard the vector count against overflow before any arithmetic on it.
    let mut total: u64 = 1;
    for d in &shape {
        total = total
            .checked_mul(*d)
            .filter(|t| *t < (1 << 40))
            .ok_or_else(|| FormatError::new(start, "tensor.shape", "shape is impossibly large"))?;
    }
    let t = TensorDesc {
        name,
        kind,
        dtype,
        shape,
        layout: Layout {
            hemi,
            addr,
            split,
            slices,
        },
    };
    if prog.tensors.iter().any(|o| o.name == t.name) {
        return Err(FormatError::new(
            start,
            "tensor.name",
            format!("tensor '{}' declared twice", t.name),
        ));
    }
    check_tensor(&prog.config, &t)
        .map_err(|m| FormatError::new(start, format!("tensor {}", t.name), m))?;
    Ok(t)
}

fn read_entry(
    s: &mut Reader,
    prog: &Program,
    queues: &[QueueInfo],
) -> Result<EntryPoint, FormatError> {
    let name = s.str("entry.name")?;
    let at = s.pos;
    let n = s.u16("entry.count")?;
    let n = s.count(at, "entry.count", n, 6)?;
    let mut starts = Vec::with_capacity(n);
    for _ in 0..n {
        let at = s.pos;
        let q = s.str("entry.queue")?;
        let pc = s.u32("entry.start")?;
        if !queues.iter().any(|x| x.name == q) {
            return Err(FormatError::new(
                at,
                "entry.queue",
                format!("no queue named '{q}'"),
            ));
        }
        let len = prog
            .queues
            .iter()
            .find(|c| c.queue == q)
            .map_or(0, |c| c.code.len());
        if pc as usize > len {
            return Err(FormatError::new(
                at,
                "entry.start",
                format!("start {pc} is past the end of {q} ({len} instructions)"),
            ));
        }
        starts.push((q, pc));
    }
    Ok(EntryPoint { name, starts })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isa::Op;

    pub(crate) fn sample() -> Program {
        let cfg = ChipConfig::tsp_small();
        let lanes = cfg.lanes();
        let mut p = Program::new(cfg);
        p.queues.push(QueueCode {
            queue: "mem.W0.0".into(),
            code: vec![
                Instr::new(Op::Read, &[0, 0]).unwrap(),
                Instr::new(Op::Repeat, &[3, 1]).unwrap(),
            ],
        });
        p.queues.push(QueueCode {
            queue: "vxm.alu0".into(),
            code: vec![
                Instr::new(Op::Nop, &[4]).unwrap(),
                Instr::new(Op::Relu, &[DType::I8 as u32, 0, 1]).unwrap(),
            ],
        });
        p.inits.push(SramInit {
            hemi: 0,
            slice: 0,
            addr: 0,
            data: (0..4 * lanes).map(|i| i as u8).collect(),
        });
        p.tensors.push(TensorDesc {
            name: "x".into(),
            kind: TensorKind::Input,
            dtype: DType::F32,
            shape: vec![3, 40],
            layout: Layout {
                hemi: 1,
                addr: 8,
                split: 1,
                slices: vec![0, 1, 2, 3],
            },
        });
        p.entries.push(EntryPoint {
            name: "main".into(),
            starts: vec![("mem.W0.0".into(), 0)],
        });
        p.meta.push(("source".into(), "test \"q\"".into()));
        p
    }

    #[test]
    fn round_trip() {
        let p = sample();
        assert!(p.check().is_empty(), "{:?}", p.check());
        let b = p.to_bytes();
        assert_eq!(Program::from_bytes(&b).unwrap(), p);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let b = sample().to_bytes();
        for n in 0..b.len() {
            let e = Program::from_bytes(&b[..n]).unwrap_err();
            assert!(e.offset as usize <= n, "offset {} past end {n}", e.offset);
        }
    }

    #[test]
    fn every_single_byte_flip_is_caught() {
        let b = sample().to_bytes();
        for n in 0..b.len() {
            for bit in [0x01u8, 0x80] {
                let mut c = b.clone();
                c[n] ^= bit;
                assert!(Program::from_bytes(&c).is_err(), "flip at {n} accepted");
            }
        }
    }

    #[test]
    fn wrong_magic_version_and_config() {
        let b = sample().to_bytes();
        let mut c = b.clone();
        c[0] = b'X';
        assert_eq!(Program::from_bytes(&c).unwrap_err().field, "magic");
        let mut c = b.clone();
        c[8] = 9;
        let e = Program::from_bytes(&c).unwrap_err();
        assert_eq!((e.field.as_str(), e.offset), ("version.major", 8));
        // A program whose instructions do not fit its config.
        let mut p = sample();
        p.queues[0].code[0] = Instr::new(Op::Read, &[600, 0]).unwrap();
        let e = Program::from_bytes(&p.to_bytes()).unwrap_err();
        assert!(e.field.contains("addr"), "{e}");
        // Relu on a small ALU.
        let mut p = sample();
        p.queues[1].queue = "vxm.alu1".into();
        let e = Program::from_bytes(&p.to_bytes()).unwrap_err();
        assert!(e.msg.contains("large ALU"), "{e}");
        // A config the engine cannot model.
        let mut p = sample();
        p.config.superlanes = 0;
        let e = Program::from_bytes(&p.to_bytes()).unwrap_err();
        assert_eq!(e.field, "config");
    }

    #[test]
    fn repeat_must_follow_a_unit_instruction() {
        let mut p = sample();
        p.queues[1].code.push(Instr::new(Op::Nop, &[1]).unwrap());
        p.queues[1]
            .code
            .push(Instr::new(Op::Repeat, &[1, 1]).unwrap());
        assert_eq!(p.check().len(), 1);
        assert!(Program::from_bytes(&p.to_bytes()).is_err());
    }

    #[test]
    fn vectors_of_shapes() {
        assert_eq!(vectors_for(&[], 320), 1);
        assert_eq!(vectors_for(&[5], 320), 1);
        assert_eq!(vectors_for(&[321], 320), 2);
        assert_eq!(vectors_for(&[3, 2, 640], 320), 12);
        assert_eq!(vectors_for(&[1 << 40, 1 << 40, 640], 320), u64::MAX);
    }
}
