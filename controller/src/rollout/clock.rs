//! The current step's clock as people ask for it: since when it holds, and how long is left.

use std::time::Duration;

use tokio::time::Instant;

use super::{Phase, Rollout};

/// Where the current step's hold stands at one instant (see [`Rollout::hold_clock`]).
///
/// The hold starts when the step's weight is reported applied, and again from zero at a resume
/// (which also opens a new analysis window). The step advances once the hold has elapsed **and**
/// the step's latest analysis passed, so `left` is the least time until the next step, not a
/// promise: a failed analysis ends the step sooner, an inconclusive one makes it wait longer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HoldClock {
    /// When the hold started (the runtime's clock, tokio's [`Instant`]).
    pub started: Instant,
    /// The step's configured hold (`rollout.hold` or the step's own).
    pub hold: Duration,
    /// Time since `started`.
    pub elapsed: Duration,
    /// Time until the hold ends; zero once it has.
    pub left: Duration,
    /// Time until the current analysis window closes and is judged; zero while it is being judged
    /// (its verdict awaited) or due.
    pub next_analysis_in: Duration,
}

impl Rollout {
    /// The current step's hold at `now`, while one runs: `Progressing`, the step's weight applied,
    /// not halted at a gate. `None` otherwise (provisioning, waiting for a weight, paused, halted,
    /// promoting, over) and for a rollout loaded from a state file or a status until its step's
    /// clock starts again (timers are never persisted, so a restarted controller never shows a
    /// hold it did not time).
    pub fn hold_clock(&self, now: Instant) -> Option<HoldClock> {
        let t = &self.timers;
        if self.phase != Phase::Progressing || self.weights_pending || self.gate.is_some() {
            return None;
        }
        let (started, until) = (t.hold_started?, t.hold_until?);
        let next_analysis_in = match t.next_analysis {
            Some(next) if !t.awaiting_verdict => next.saturating_duration_since(now),
            _ => Duration::ZERO,
        };
        Some(HoldClock {
            started,
            hold: until.saturating_duration_since(started),
            elapsed: now.saturating_duration_since(started),
            left: until.saturating_duration_since(now),
            next_analysis_in,
        })
    }
}
