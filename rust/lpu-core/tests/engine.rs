//! Engine behaviour on hand-built programs (numbers checked by hand from the timing rules).
#![allow(clippy::needless_range_loop)] // index loops read more clearly in these checks

use lpu_core::config::ChipConfig;
use lpu_core::engine::{Chip, FaultKind, FaultPolicy, Limits, RunStatus};
use lpu_core::isa::{Instr, Op, ALU_SRC_BASE, DST_NONE};
use lpu_core::program::{Program, QueueCode};
use lpu_core::DType;
use std::sync::Arc;

const W: u32 = 32; // westward stream offset

fn i(op: Op, args: &[u32]) -> Instr {
    Instr::new(op, args).unwrap()
}

fn prog(queues: Vec<(&str, Vec<Instr>)>) -> Program {
    let mut p = Program::new(ChipConfig::tsp_small());
    for (q, code) in queues {
        p.queues.push(QueueCode {
            queue: q.into(),
            code,
        });
    }
    p
}

fn run(chip: &mut Chip) -> RunStatus {
    chip.run(Limits {
        until: 1_000_000,
        issue_budget: u64::MAX,
    })
}

fn vector_add() -> Program {
    prog(vec![
        (
            "mem.W1.0",
            vec![i(Op::Read, &[0, 1]), i(Op::Repeat, &[3, 1])],
        ),
        (
            "mem.W0.0",
            vec![
                i(Op::Nop, &[1]),
                i(Op::Read, &[0, 0]),
                i(Op::Repeat, &[3, 1]),
            ],
        ),
        (
            "vxm.alu1",
            vec![
                i(Op::Nop, &[5]),
                i(Op::Add, &[DType::I8 as u32, 0, 1, 2]),
                i(Op::Repeat, &[3, 1]),
            ],
        ),
        (
            "mem.E0.0",
            vec![
                i(Op::Nop, &[8]),
                i(Op::Write, &[0, 2]),
                i(Op::Repeat, &[3, 1]),
            ],
        ),
    ])
}

#[test]
fn vector_add_values_and_cycles() {
    let p = Arc::new(vector_add());
    let mut chip = Chip::new(ChipConfig::tsp_small()).unwrap();
    chip.load(p, None).unwrap();
    let lanes = chip.config().lanes();
    for v in 0..4u32 {
        let x: Vec<u8> = (0..lanes).map(|l| (l as u32 + v) as u8).collect();
        let y: Vec<u8> = (0..lanes).map(|l| (3 * l as u32 + 100 * v) as u8).collect();
        chip.write_words(0, 0, v, &x);
        chip.write_words(0, 1, v, &y);
    }
    assert_eq!(run(&mut chip), RunStatus::Halted, "{:?}", chip.fault());
    let mut out = vec![0u8; lanes];
    for v in 0..4u32 {
        chip.read_word(1, 0, v, &mut out);
        for l in 0..lanes {
            assert_eq!(out[l], ((l as u32 + v) + (3 * l as u32 + 100 * v)) as u8);
        }
    }
    // Last write issues on cycle 11 and commits on 12; plus 1 cycle of superlane skew.
    assert_eq!(chip.cycles(), 12 + 1 + 1);
    let s = chip.stats();
    assert_eq!((s.sram_reads, s.sram_writes), (8, 4));
    assert_eq!(s.issued[1], 12); // MEM
    assert_eq!(s.issued[2], 4); // VXM
}

#[test]
fn arriving_one_cycle_late_is_a_fault_with_location() {
    let mut p = vector_add();
    p.queues[2].code[0] = i(Op::Nop, &[6]); // VXM one cycle late: reads vectors 1..4

    let mut chip = Chip::new(ChipConfig::tsp_small()).unwrap();
    chip.load(Arc::new(p), None).unwrap();
    assert_eq!(run(&mut chip), RunStatus::Fault);
    let f = chip.fault().unwrap();
    assert_eq!(f.kind, FaultKind::StreamEmpty);
    // The first consumer to find nothing is the write, whose result arrives a cycle late.
    assert_eq!((f.cycle, f.queue.as_str(), f.index), (8, "mem.E0.0", 1));
    // Runs stay stopped until reset.
    assert_eq!(run(&mut chip), RunStatus::Fault);
    chip.reset();
    chip.set_policy(FaultKind::StreamEmpty, FaultPolicy::Warn);
    assert_eq!(run(&mut chip), RunStatus::Halted);
    assert!(!chip.warnings().is_empty());
}

#[test]
fn deterministic_and_resumable() {
    let p = Arc::new(vector_add());
    let mut a = Chip::new(ChipConfig::tsp_small()).unwrap();
    a.load(p.clone(), None).unwrap();
    a.write_words(0, 0, 2, &[9; 32]);
    let mut b = a.clone();
    assert_eq!(run(&mut a), RunStatus::Halted);
    // Step the other one a cycle at a time.
    loop {
        let c = b.cycle();
        match b.run(Limits {
            until: c + 1,
            issue_budget: u64::MAX,
        }) {
            RunStatus::CycleLimit => continue,
            RunStatus::Halted => break,
            s => panic!("{s:?}"),
        }
    }
    assert_eq!(a.cycles(), b.cycles());
    assert_eq!(a.stats(), b.stats());
    let (mut x, mut y) = (vec![0; 32], vec![0; 32]);
    for v in 0..4 {
        a.read_word(1, 0, v, &mut x);
        b.read_word(1, 0, v, &mut y);
        assert_eq!(x, y);
    }
}

#[test]
fn breakpoints_and_snapshots() {
    let p = Arc::new(vector_add());
    let mut chip = Chip::new(ChipConfig::tsp_small()).unwrap();
    chip.load(p, None).unwrap();
    let q = chip.queue_index("mem.E0.0").unwrap();
    chip.add_breakpoint(q, 1);
    assert_eq!(run(&mut chip), RunStatus::Breakpoint);
    assert_eq!(chip.cycle(), 8);
    let snap = chip.snapshot();
    assert_eq!(run(&mut chip), RunStatus::Halted);
    let done = chip.cycles();
    chip.restore(&snap).unwrap();
    assert_eq!(chip.cycle(), 8);
    assert_eq!(run(&mut chip), RunStatus::Halted);
    assert_eq!(chip.cycles(), done);
}

#[test]
fn bank_rules() {
    // Read and write of one slice in one cycle: fine on different banks, a fault on one.
    let cfg = ChipConfig::tsp_small();
    let half = cfg.addresses / 2;
    // Port 0 reads on cycles 0 and 3; port 1 writes on cycle 3 what the first read put
    // on s0e (it lands at W0's position on cycle 3).
    let mk = |waddr: u32| {
        prog(vec![
            (
                "mem.W0.0",
                vec![i(Op::Read, &[0, 0]), i(Op::Nop, &[2]), i(Op::Read, &[1, 1])],
            ),
            (
                "mem.W0.1",
                vec![i(Op::Nop, &[3]), i(Op::Write, &[waddr, 0])],
            ),
        ])
    };
    let mut chip = Chip::new(cfg.clone()).unwrap();
    chip.load(Arc::new(mk(half)), None).unwrap();
    assert_eq!(run(&mut chip), RunStatus::Halted, "{:?}", chip.fault());
    let mut chip = Chip::new(cfg).unwrap();
    chip.load(Arc::new(mk(5)), None).unwrap();
    assert_eq!(run(&mut chip), RunStatus::Fault);
    let f = chip.fault().unwrap();
    assert_eq!((f.kind, f.cycle), (FaultKind::BankConflict, 3));
}

#[test]
fn sync_and_notify() {
    let p = prog(vec![
        ("mem.W0.0", vec![i(Op::Sync, &[]), i(Op::Read, &[0, 0])]),
        ("mem.W1.0", vec![i(Op::Nop, &[7]), i(Op::Notify, &[])]),
    ]);
    let mut chip = Chip::new(ChipConfig::tsp_small()).unwrap();
    chip.load(Arc::new(p), None).unwrap();
    assert_eq!(run(&mut chip), RunStatus::Halted);
    // notify issues on 7, is delivered on 7 + 10; the read issues then and lands 3 later.
    assert_eq!(chip.cycles(), 17 + 3 + 1 + 1);
    let p = prog(vec![(
        "mem.W0.0",
        vec![i(Op::Sync, &[]), i(Op::Read, &[0, 0])],
    )]);
    let mut chip = Chip::new(ChipConfig::tsp_small()).unwrap();
    chip.load(Arc::new(p), None).unwrap();
    assert_eq!(run(&mut chip), RunStatus::Fault);
    assert_eq!(chip.fault().unwrap().kind, FaultKind::Deadlock);
}

#[test]
fn vxm_chaining() {
    // relu(x) * x computed as a chain: ALU0 relu -> ALU1 mul with the x stream.
    let p = prog(vec![
        (
            "mem.W0.0",
            vec![i(Op::Read, &[0, 0]), i(Op::Nop, &[1]), i(Op::Read, &[0, 0])],
        ),
        (
            "vxm.alu0",
            vec![
                i(Op::Nop, &[4]),
                i(Op::Relu, &[DType::I8 as u32, 0, DST_NONE]),
            ],
        ),
        (
            "vxm.alu1",
            vec![
                i(Op::Nop, &[6]),
                i(Op::Mul, &[DType::I8 as u32, ALU_SRC_BASE, 0, W + 4]),
            ],
        ),
        (
            "mem.W1.0",
            vec![i(Op::Nop, &[11]), i(Op::Write, &[0, W + 4])],
        ),
    ]);
    let mut chip = Chip::new(ChipConfig::tsp_small()).unwrap();
    chip.load(Arc::new(p), None).unwrap();
    let x: Vec<u8> = (0..32).map(|l| (l as i8 - 16) as u8).collect();
    chip.write_words(0, 0, 0, &x);
    assert_eq!(run(&mut chip), RunStatus::Halted, "{:?}", chip.fault());
    let mut out = vec![0u8; 32];
    chip.read_word(0, 1, 0, &mut out);
    for l in 0..32 {
        let v = l as i8 - 16;
        assert_eq!(out[l] as i8, v.max(0).wrapping_mul(v));
    }
}

/// Issue cycle for a value produced with latency `lat` at `from` to be at `to` on `t`.
fn issue_for(from: u32, to: u32, lat: u32, t: u32) -> u32 {
    t - lat - from.abs_diff(to)
}

#[test]
fn mxm_int8_matvec() {
    let cfg = ChipConfig::tsp_small();
    let lanes = cfg.lanes(); // 32
    let plane_pos = cfg.mxm_position(2);
    let slice_pos = |r: u32| {
        if r < 8 {
            cfg.mem_position(0, r)
        } else {
            cfg.mem_position(1, r - 8)
        }
    };
    let slice_name = |r: u32| {
        if r < 8 {
            format!("mem.W{r}.0")
        } else {
            format!("mem.E{}.0", r - 8)
        }
    };
    let w: Vec<i8> = (0..lanes * lanes)
        .map(|i| ((i * 37 + 11) % 255) as i8)
        .collect();
    let x: Vec<i8> = (0..lanes)
        .map(|i| ((i * 91 + 5) % 256) as u8 as i8)
        .collect();
    // The farthest weight slice (W7) is 34 positions from plane 2 on tsp_small: the lw
    // needs mem_read + 34 cycles; the weights are usable 2 lw + 1 iw + 4 cycles later.
    let (t_lw, t_abc) = (40, 50);
    let mut p = Program::new(cfg.clone());
    let mut chip_words: Vec<(u8, u16, u32, Vec<u8>)> = Vec::new();
    for r in 0..16u32 {
        let pos = slice_pos(r);
        let start = issue_for(pos, plane_pos, 3, t_lw);
        let mut code = vec![
            i(Op::Nop, &[start]),
            i(Op::Read, &[0, r]),
            i(Op::Read, &[1, r]),
        ];
        let (hemi, slice) = if r < 8 {
            (0, r as u16)
        } else {
            (1, (r - 8) as u16)
        };
        for (addr, row) in [(0u32, r as usize), (1, r as usize + 16)] {
            let word: Vec<u8> = w[row * lanes..(row + 1) * lanes]
                .iter()
                .map(|v| *v as u8)
                .collect();
            chip_words.push((hemi, slice, addr, word));
        }
        if r == 3 {
            // W3 also sends the activation vector on s16e for the abc.
            let at = issue_for(pos, plane_pos, 3, t_abc);
            code.push(i(Op::Nop, &[at - start - 2]));
            code.push(i(Op::Read, &[2, 16]));
            chip_words.push((0, 3, 2, x.iter().map(|v| *v as u8).collect()));
        }
        p.queues.push(QueueCode {
            queue: slice_name(r),
            code,
        });
    }
    p.queues.push(QueueCode {
        queue: "mxm2.ld".into(),
        code: vec![
            i(Op::Nop, &[t_lw]),
            i(Op::Lw, &[DType::I8 as u32, 0]),
            i(Op::Repeat, &[1, 1]),
            i(Op::Iw, &[0]),
        ],
    });
    p.queues.push(QueueCode {
        queue: "mxm2.abc".into(),
        code: vec![i(Op::Nop, &[t_abc]), i(Op::Abc, &[16, 0, 0])],
    });
    let t_acc = t_abc + 24;
    p.queues.push(QueueCode {
        queue: "mxm2.acc".into(),
        code: vec![i(Op::Nop, &[t_acc]), i(Op::Acc, &[0, W + 20])],
    });
    for b in 0..4u32 {
        let pos = cfg.mem_position(1, 4 + b);
        let at = t_acc + 4 + (plane_pos - pos);
        p.queues.push(QueueCode {
            queue: format!("mem.E{}.1", 4 + b),
            code: vec![i(Op::Nop, &[at]), i(Op::Write, &[4, W + 20 + b])],
        });
    }
    let mut chip = Chip::new(cfg).unwrap();
    chip.load(Arc::new(p), None).unwrap();
    for (h, s, a, word) in chip_words {
        chip.write_words(h, s, a, &word);
    }
    assert_eq!(
        run(&mut chip),
        RunStatus::Halted,
        "{}",
        chip.fault().map(|f| f.to_string()).unwrap_or_default()
    );
    let mut planes = vec![vec![0u8; lanes]; 4];
    for b in 0..4 {
        chip.read_word(1, 4 + b as u16, 4, &mut planes[b]);
    }
    for n in 0..lanes {
        let got = i32::from_le_bytes([planes[0][n], planes[1][n], planes[2][n], planes[3][n]]);
        let want: i32 = (0..lanes)
            .map(|k| x[k] as i32 * w[k * lanes + n] as i32)
            .sum();
        assert_eq!(got, want, "lane {n}");
    }
    assert_eq!(chip.stats().macs_int8, (lanes * lanes) as u64);
    // A reset keeps the plane's memory but not its weights: an abc without an iw faults
    // as on a new chip.
    let abc_only = prog(vec![(
        "mxm2.abc",
        vec![i(Op::Nop, &[t_abc]), i(Op::Abc, &[16, 0, 0])],
    )]);
    chip.load(Arc::new(abc_only), None).unwrap();
    assert_eq!(run(&mut chip), RunStatus::Fault);
    let fault = chip.fault().expect("a fault");
    assert_eq!(fault.kind, FaultKind::MxmHazard, "{fault}");
}
