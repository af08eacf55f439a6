//! A run's batch decisions, kept to be reused by the next runs of the program.
//!
//! Whether a run of re-issues can be batched, and how far, is decided by looking ahead
//! at the other queues' schedules (`batch.rs`). That depends on the program and on the
//! queues' states, never on the data: runs of a program from the state right after its
//! load or a reset go the same way whatever SRAM holds, until a fault stops one. So the
//! first such run that halts keeps, for every batch attempt, its queue, its cycle and
//! how many issues it batched (none, if it found it could not), and the runs after it
//! take those answers instead of looking ahead again: a decode step asks the same
//! questions every token, and the look-ahead was the largest part of its engine work.
//! The queues due on each cycle are kept too, and replayed in place of keeping them
//! in order by the cycle each issues next (`Due`).
//!
//! Each answer is checked against the attempt it is taken for: the same queue on the
//! same cycle, no more issues than the attempt allows (run limits may be tighter), and
//! the batch doing exactly that many. A run that differs anywhere (where data can make
//! it differ: a fault that data causes, such as a permute map that is not a
//! permutation), or that ends before using every answer, is redone from the state
//! before its first batch without them. (An attempt the plan skips does not do what a
//! failed attempt may do on its way, such as writing landed words into SRAM early or
//! folding a plane's results into its slots; those change how values are held, not
//! what any reader sees, and where they change how far a later batch can go, its
//! check finds it.)

use super::due::Due;
use std::sync::Arc;

/// One batch attempt of a recorded run: queue `qi` on cycle `t` batched `k` issues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Attempt {
    qi: u32,
    t: u64,
    k: u64,
}

/// The batch attempts of a run, in the order they were made, and the queues it
/// stepped on each cycle (cycle, queue), in order.
#[derive(Clone, Debug, Default)]
pub(super) struct Plan {
    attempts: Vec<Attempt>,
    steps: Vec<(u64, u32)>,
}

/// The queues to step, cycle by cycle: kept in order by the cycle each issues next, or
/// replayed from a plan.
pub(super) enum Steps {
    Live(Due),
    Replay { plan: Arc<Plan>, at: usize },
}

impl Steps {
    /// Queue `qi` issues next on cycle `t` (see [`Due::push`]).
    pub(super) fn push(&mut self, t: u64, qi: usize) {
        if let Steps::Live(due) = self {
            due.push(t, qi);
        }
    }

    /// The next cycle some queue is due on.
    pub(super) fn next(&self) -> Option<u64> {
        match self {
            Steps::Live(due) => due.next(),
            Steps::Replay { plan, at } => plan.steps.get(*at).map(|s| s.0),
        }
    }

    /// Move the queues due on or before cycle `t` to `out` (see [`Due::pop_until`]).
    pub(super) fn pop_until(&mut self, t: u64, out: &mut Vec<usize>) {
        match self {
            Steps::Live(due) => due.pop_until(t, out),
            Steps::Replay { plan, at } => {
                while let Some(&(_, qi)) = plan.steps.get(*at).filter(|s| s.0 <= t) {
                    out.push(qi as usize);
                    *at += 1;
                }
            }
        }
    }
}

/// What the current run does with plans.
#[derive(Clone, Debug, Default)]
pub(super) enum PlanUse {
    /// Nothing (not a run from the start, batching off, or breakpoints set).
    #[default]
    Off,
    /// Keeps its attempts, to become the program's plan if it halts.
    Record(Plan),
    /// Takes its answers from a plan; `next` is the attempt to come and `step` the
    /// next of its steps (a run made in slices goes on from there).
    Replay {
        plan: Arc<Plan>,
        next: usize,
        step: usize,
    },
}

/// What a batch attempt does under the plan in use.
pub(super) enum Answer {
    /// Look ahead as usual.
    Ask,
    /// The recorded run found no batch here.
    Skip,
    /// The recorded run batched this many issues: batch them without looking ahead.
    Batch(u64),
    /// The run is not the recorded one.
    Diverged,
}

impl PlanUse {
    /// The answer for queue `qi`'s attempt on cycle `t`, of at most `max_k` issues.
    pub(super) fn answer(&mut self, qi: usize, t: u64, max_k: u64) -> Answer {
        let PlanUse::Replay { plan, next, .. } = self else {
            return Answer::Ask;
        };
        let a = plan.attempts.get(*next).copied();
        *next += 1;
        match a {
            Some(a) if a.qi as usize == qi && a.t == t && a.k <= max_k => match a.k {
                0 => Answer::Skip,
                k => Answer::Batch(k),
            },
            _ => Answer::Diverged,
        }
    }

    /// How the run steps its queues: from the plan it replays, if it does.
    pub(super) fn steps(&self) -> Steps {
        match self {
            PlanUse::Replay { plan, step, .. } => Steps::Replay {
                plan: plan.clone(),
                at: *step,
            },
            _ => Steps::Live(Due::new(0)),
        }
    }

    /// The run stopped having stepped its queues as far as `steps` (it may resume).
    pub(super) fn stopped_at(&mut self, steps: &Steps) {
        if let (PlanUse::Replay { step, .. }, Steps::Replay { at, .. }) = (self, steps) {
            *step = *at;
        }
    }

    /// The queues `now` are stepped on cycle `t`.
    pub(super) fn note_steps(&mut self, t: u64, now: &[usize]) {
        if let PlanUse::Record(p) = self {
            p.steps.extend(now.iter().map(|&qi| (t, qi as u32)));
        }
    }

    /// Queue `qi`'s attempt on cycle `t` batched `k` issues.
    pub(super) fn note(&mut self, qi: usize, t: u64, k: u64) {
        if let PlanUse::Record(p) = self {
            p.attempts.push(Attempt {
                qi: qi as u32,
                t,
                k,
            });
        }
    }

    /// A replay that has answers left over: it did not go as the recorded run did.
    pub(super) fn unfinished(&self) -> bool {
        matches!(self, PlanUse::Replay { plan, next, .. } if *next != plan.attempts.len())
    }

    /// What a recording run kept (the program's plan, if the run halted).
    pub(super) fn recorded(self) -> Option<Plan> {
        match self {
            PlanUse::Record(p) => Some(p),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_come_in_order_and_only_for_the_recorded_attempts() {
        let mut rec = PlanUse::Record(Plan::default());
        assert!(matches!(rec.answer(0, 0, 10), Answer::Ask));
        rec.note(3, 10, 0);
        rec.note(5, 12, 7);
        let plan = Arc::new(rec.recorded().expect("recording"));
        let replay = || PlanUse::Replay {
            plan: plan.clone(),
            next: 0,
            step: 0,
        };
        let mut r = replay();
        assert!(matches!(r.answer(3, 10, 64), Answer::Skip));
        assert!(r.unfinished());
        assert!(matches!(r.answer(5, 12, 7), Answer::Batch(7)));
        assert!(!r.unfinished());
        assert!(
            matches!(r.answer(5, 20, 7), Answer::Diverged),
            "one too many"
        );
        // Another queue, another cycle, or a tighter limit than the batch recorded.
        for (qi, t, max_k) in [(4, 10, 64), (3, 11, 64)] {
            assert!(matches!(replay().answer(qi, t, max_k), Answer::Diverged));
        }
        let mut r = replay();
        r.answer(3, 10, 64);
        assert!(matches!(r.answer(5, 12, 6), Answer::Diverged));
    }
}
