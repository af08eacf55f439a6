//! Entry points for fuzzing: each takes arbitrary bytes and must return without
//! panicking, however malformed the input. The cargo-fuzz targets in `fuzz/` call them
//! (`scripts/fuzz` runs those for a bounded time), and this crate's tests feed them
//! pseudo-random inputs and every saved regression input on every `cargo test`.

use crate::config::ChipConfig;
use crate::engine::{Chip, FaultKind, FaultPolicy, Limits};
use crate::isa::{Instr, Unit, TABLE};
use crate::program::{check_instr, Program, QueueCode};
use std::sync::Arc;

/// Instruction words: whatever decodes must encode back to the same word and print.
pub fn decode_words(data: &[u8]) {
    for chunk in data.chunks(8) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        let word = u64::from_le_bytes(w);
        if let Ok(i) = Instr::decode(word) {
            assert_eq!(Instr::decode(i.encode()), Ok(i), "{word:#x}");
            let _ = i.to_string();
        }
    }
}

/// A program file: whatever loads must write back to bytes that load to the same program.
pub fn load_program(data: &[u8]) {
    if let Ok(p) = Program::from_bytes(data) {
        let again = Program::from_bytes(&p.to_bytes()).expect("a program it wrote reads back");
        assert_eq!(p, again);
        let _ = p.disassemble();
    }
}

/// A random but decodable program on `tsp_tiny`: each 9 bytes pick an instruction, its
/// operands and a queue that can run it. It is loaded (or refused), then run for a few
/// thousand cycles twice, with and without batching: both runs must agree exactly.
pub fn run_program(data: &[u8]) {
    let cfg = ChipConfig::tsp_tiny();
    let queues = cfg.queues();
    let mut prog = Program::new(cfg.clone());
    for chunk in data.chunks_exact(9).take(256) {
        let def = &TABLE[chunk[0] as usize % TABLE.len()];
        // Chip-to-chip instructions fault at once on one chip; keep a few.
        if def.unit == Unit::C2c && chunk[8] % 16 != 0 {
            continue;
        }
        let mut operands = Vec::with_capacity(def.fields.len());
        for (k, f) in def.fields.iter().enumerate() {
            let raw = u32::from_le_bytes([chunk[1 + k], chunk[2 + k], chunk[3 + k], chunk[4 + k]]);
            let bits = f.kind.bits();
            // Mostly small values: big counts only make idle cycles.
            let v = if chunk[8] & 1 == 0 { raw % 16 } else { raw };
            operands.push(if bits >= 32 { v } else { v & ((1 << bits) - 1) });
        }
        let Ok(instr) = Instr::new(def.op, &operands) else {
            continue;
        };
        let fits: Vec<_> = queues
            .iter()
            .filter(|q| check_instr(&cfg, q.kind, &instr).is_ok())
            .collect();
        if fits.is_empty() {
            continue;
        }
        let q = fits[chunk[8] as usize % fits.len()];
        match prog.queues.iter_mut().find(|c| c.queue == q.name) {
            Some(c) => c.code.push(instr),
            None => prog.queues.push(QueueCode {
                queue: q.name.clone(),
                code: vec![instr],
            }),
        }
    }
    let prog = Arc::new(prog);
    let limits = Limits {
        until: 3000,
        issue_budget: u64::MAX,
    };
    // Faults stop the run: batched and one-by-one issue must agree exactly, and a chip
    // reset after a run (which keeps some of its memory) must run as a new one.
    let outcome = |chip: &mut Chip| {
        let status = chip.run(limits);
        let mut sram = 0xcbf2_9ce4_8422_2325u64;
        for hemi in 0..2 {
            for slice in 0..cfg.mem_slices as usize {
                for addr in 0..cfg.addresses as usize {
                    for b in chip.sram().word(hemi, slice, addr).unwrap_or(&[]) {
                        sram = (sram ^ *b as u64).wrapping_mul(0x100_0000_01b3);
                    }
                }
            }
        }
        (
            status,
            chip.cycle(),
            chip.fault().map(|f| f.to_string()),
            chip.stats().clone(),
            sram,
        )
    };
    let mut results = Vec::new();
    for fast in [false, true] {
        let mut chip = Chip::new(cfg.clone()).expect("a preset is valid");
        chip.set_fast(fast);
        if chip.load(prog.clone(), None).is_err() {
            return;
        }
        results.push(outcome(&mut chip));
        chip.reset();
        results.push(outcome(&mut chip));
    }
    assert_eq!(results[0], results[2], "batched and one-by-one runs differ");
    assert_eq!(results[0], results[1], "a run after a reset differs");
    assert_eq!(
        results[2], results[3],
        "a batched run after a reset differs"
    );
    // A batched run from the start after one that halted takes that run's batch
    // decisions (its plan): on other data (addresses and maps read from SRAM differ, so
    // faults may come elsewhere) it must agree with chips that never ran the program.
    let mut x = data.iter().fold(0x9E37_79B9_7F4A_7C15u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x100_0000_01b3)
    }) | 1;
    let mut noise = vec![0u8; cfg.addresses as usize * cfg.lanes()];
    for b in noise.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Mostly small values, which make valid addresses and lane numbers.
        *b = if x % 4 == 0 {
            (x >> 32) as u8
        } else {
            (x >> 32) as u8 % 8
        };
    }
    let fill = |chip: &mut Chip| {
        for hemi in 0..2 {
            for slice in 0..cfg.mem_slices as u16 {
                chip.write_words(hemi, slice, 0, &noise);
            }
        }
    };
    // Both in slices of a few issues, as Python runs long ones (checking for Ctrl-C
    // between them): still one run each. (Slices of one size: a slice's end cuts a
    // batch short, so a plan recorded in other slices would be redone without.)
    let sliced = |chip: &mut Chip, issues: u64| {
        let limits = Limits {
            until: limits.until,
            issue_budget: issues,
        };
        chip.run_sliced(limits, &mut crate::engine::NoTrace, |_| false)
    };
    let mut chip = Chip::new(cfg.clone()).expect("a preset is valid");
    chip.load(prog.clone(), None).expect("loaded above");
    sliced(&mut chip, 4);
    let first = outcome(&mut chip);
    assert_eq!(first, results[2], "a run in slices differs");
    let replay = chip.halted() && chip.fault().is_none();
    // Paused after a few slices (as Ctrl-C does) and resumed: still as one run; or
    // with SRAM changed at the pause: then as a chip that issued one by one to the
    // pause cycle and changed the same way.
    let paused = |pause: u32| {
        let mut chip = Chip::new(cfg.clone()).expect("a preset is valid");
        chip.load(prog.clone(), None).expect("loaded above");
        let mut slices = 0;
        let slice = Limits {
            until: limits.until,
            issue_budget: 4,
        };
        chip.run_sliced(slice, &mut crate::engine::NoTrace, |_| {
            slices += 1;
            slices == pause
        });
        chip
    };
    for pause in 1..6 {
        let got = outcome(&mut paused(pause));
        assert_eq!(got, results[2], "a run paused after {pause} slices differs");
        let mut changed = paused(pause);
        let mut single = Chip::new(cfg.clone()).expect("a preset is valid");
        single.set_fast(false);
        single.load(prog.clone(), None).expect("loaded above");
        let to_pause = Limits {
            until: changed.cycle(),
            issue_budget: u64::MAX,
        };
        single.run(to_pause);
        fill(&mut changed);
        fill(&mut single);
        assert_eq!(
            outcome(&mut changed),
            outcome(&mut single),
            "a run changed at a pause after {pause} slices differs"
        );
    }
    // Stopped by a cycle limit, every queue is where single issues leave it: the `nop`s
    // taken ahead of their cycles are put back (a chip with a breakpoint set, which
    // takes none ahead, is the reference), and the run goes on to the same end.
    for until in [1, 3, 9, 40, 200] {
        let mut got = Vec::new();
        for breakpoint in [false, true] {
            let mut chip = Chip::new(cfg.clone()).expect("a preset is valid");
            chip.load(prog.clone(), None).expect("loaded above");
            if breakpoint {
                chip.add_breakpoint(0, usize::MAX);
            }
            let status = chip.run(Limits {
                until,
                issue_budget: u64::MAX,
            });
            let pcs: Vec<_> = (0..queues.len()).map(|q| chip.queue_state(q)).collect();
            got.push((status, chip.cycle(), pcs, outcome(&mut chip)));
        }
        assert_eq!(got[0], got[1], "stopped on cycle {until}: queues differ");
    }
    chip.reset();
    fill(&mut chip);
    sliced(&mut chip, 4);
    let got = outcome(&mut chip);
    for fast in [true, false] {
        let mut fresh = Chip::new(cfg.clone()).expect("a preset is valid");
        fresh.set_fast(fast);
        fresh.load(prog.clone(), None).expect("loaded above");
        fill(&mut fresh);
        let want = outcome(&mut fresh);
        assert_eq!(
            got.0, want.0,
            "a replay on other data differs (fast: {fast})"
        );
        assert_eq!((&got.1, &got.2, &got.4), (&want.1, &want.2, &want.4));
        assert_eq!(got.3, want.3, "statistics (fast: {fast})");
    }
    // Unless data made it fault, or it has nothing to issue, it did replay.
    let issued: u64 = chip.stats().issued.iter().sum();
    assert!(!replay || chip.fault().is_some() || issued == 0 || chip.replayed());
    // Every fault recorded and ignored: the run goes on through whatever happens.
    let mut chip = Chip::new(cfg).expect("a preset is valid");
    for kind in FaultKind::ALL {
        chip.set_policy(kind, FaultPolicy::Warn);
    }
    if chip.load(prog, None).is_ok() {
        let _ = chip.run(limits);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: a fixed sequence, so a failure reproduces.
    fn bytes(seed: u64, n: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
            })
            .collect()
    }

    fn regressions(target: &str) -> Vec<Vec<u8>> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/regressions")
            .join(target);
        let mut out = Vec::new();
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                out.push(std::fs::read(e.path()).expect("readable"));
            }
        }
        out
    }

    #[test]
    fn decoder_survives_random_words() {
        for seed in 0..1000 {
            decode_words(&bytes(seed, 4096));
        }
        for r in regressions("decode") {
            decode_words(&r);
        }
    }

    #[test]
    fn loader_survives_random_and_mutated_files() {
        // A valid file with random bytes changed, and random bytes after a valid header.
        let mut p = Program::new(ChipConfig::tsp_tiny());
        p.queues.push(QueueCode {
            queue: "vxm.alu0".into(),
            code: vec![Instr::new(crate::isa::Op::Nop, &[1]).expect("nop 1")],
        });
        let good = p.to_bytes();
        for seed in 0..3000 {
            let noise = bytes(seed, 64);
            let mut b = good.clone();
            for k in 0..1 + (noise[0] % 4) as usize {
                let at =
                    u16::from_le_bytes([noise[1 + 2 * k], noise[2 + 2 * k]]) as usize % b.len();
                b[at] ^= noise[20 + k] | 1;
            }
            load_program(&b);
            let mut c = good[..good.len().min(16)].to_vec();
            c.extend_from_slice(&bytes(seed + 1000, 256));
            load_program(&c);
        }
        for r in regressions("program") {
            load_program(&r);
        }
    }

    #[test]
    fn engine_survives_random_programs() {
        for seed in 0..1000 {
            run_program(&bytes(seed, 9 * (8 + seed as usize % 120)));
        }
        for r in regressions("engine") {
            run_program(&r);
        }
    }
}
