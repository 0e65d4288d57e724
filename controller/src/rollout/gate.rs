//! Webhook gates: halting before the rollout, before a step or before promotion until the gates
//! approve, and the notification after completion (see [`crate::spec::gates`]).
//!
//! While halted, the progress deadline is suspended (manual approval may take hours) and the step's
//! hold no longer advances it, but analysis goes on at the current weight: a green that turns bad
//! while waiting still rolls back. Pause, promote and abort clear the halt; a late answer is then
//! stale and ignored.

use crossfade_proxy::duration::later;
use tokio::time::Instant;

use super::machine::{event, pct};
use super::{Command, GateAnswer, GateWait, Phase, Rollout};
use crate::spec::{GatePoint, GatePolicy};

impl Rollout {
    /// Whether gates are configured at `at`.
    pub(super) fn has_gates(&self, at: GatePoint) -> bool {
        self.config.gates.iter().any(|g| g.at == at)
    }

    /// Halts at `at` for `step` and asks its gates (once: a second call for the same halt does
    /// nothing).
    pub(super) fn halt_at_gate(&mut self, at: GatePoint, step: usize) -> Vec<Command> {
        if self
            .gate
            .as_ref()
            .is_some_and(|g| g.at == at && g.step == step)
        {
            return Vec::new();
        }
        self.gate = Some(GateWait {
            at,
            step,
            refusal: None,
        });
        self.timers.deadline = None;
        self.timers.hold_started = None;
        self.timers.hold_until = None;
        self.timers.gate_retry = None;
        vec![Command::AskGates { at, step }]
    }

    /// The gates' answer: go on, wait and ask again, or roll back.
    pub(super) fn on_gate(
        &mut self,
        at: GatePoint,
        step: usize,
        answer: GateAnswer,
        now: Instant,
    ) -> Vec<Command> {
        if at == GatePoint::AfterCompletion {
            return self.on_notified(answer);
        }
        let halted = self
            .gate
            .as_ref()
            .is_some_and(|g| g.at == at && g.step == step);
        if !halted || self.is_terminal() {
            return Vec::new();
        }
        let place = self.gate_place(at, step);
        if matches!(answer, GateAnswer::Refused { .. }) {
            self.gate_refusals = self.gate_refusals.saturating_add(1);
        }
        match answer {
            GateAnswer::Approved { note } => {
                self.gate = None;
                let mut out = vec![event("GateApproved", format!("{place}: {note}"))];
                out.extend(match at {
                    GatePoint::BeforeRollout => self.begin_provisioning(now),
                    GatePoint::BeforeStep => self.request_step(step, now),
                    _ => self.promote(now, "after the last step passed and its gates approved"),
                });
                out
            }
            GateAnswer::Refused {
                gate,
                reason,
                policy: GatePolicy::Rollback,
            } => {
                self.gate = None;
                let note = format!("{place}: gate {gate} refused: {reason}");
                if at == GatePoint::BeforeRollout {
                    // Nothing was started: nothing to undo.
                    self.phase = Phase::RolledBack;
                    self.reason = Some(note.clone());
                    self.timers = Default::default();
                    return vec![event(
                        "GateRejected",
                        format!("{note}; rolled back before start"),
                    )];
                }
                self.begin_rollback("GateRejected", note, now)
            }
            GateAnswer::Refused {
                gate,
                reason,
                policy: GatePolicy::Wait,
            } => {
                let refusal = format!("gate {gate} refused: {reason}");
                let retry = self.gate_retry(at);
                self.timers.gate_retry = Some(later(now, retry));
                let wait = self.gate.as_mut().expect("halted at this gate");
                let repeated = wait.refusal.as_deref() == Some(refusal.as_str());
                wait.refusal = Some(refusal.clone());
                if repeated {
                    return Vec::new();
                }
                let note = format!(
                    "{place}: {refusal}; asking again every {}",
                    super::machine::human(retry)
                );
                vec![event("GateRejected", note)]
            }
        }
    }

    /// A tick while halted: ask again once the retry time has come.
    pub(super) fn gate_tick(&mut self, now: Instant) -> Option<Vec<Command>> {
        let gate = self.gate.as_ref()?;
        if self.timers.gate_retry.is_none_or(|t| now < t) {
            return None;
        }
        self.timers.gate_retry = None;
        Some(vec![Command::AskGates {
            at: gate.at,
            step: gate.step,
        }])
    }

    /// The shortest `retry` of the gates at `at`.
    fn gate_retry(&self, at: GatePoint) -> std::time::Duration {
        self.config
            .gates
            .iter()
            .filter(|g| g.at == at)
            .map(|g| g.retry)
            .min()
            .unwrap_or(std::time::Duration::from_secs(10))
    }

    /// `before step 2/3 (50%)`, `before promotion`, `before the rollout`.
    pub(super) fn gate_place(&self, at: GatePoint, step: usize) -> String {
        match at {
            GatePoint::BeforeRollout => "before the rollout".into(),
            GatePoint::BeforeStep => format!(
                "before step {}/{} ({})",
                step + 1,
                self.config.steps.len().max(1),
                pct(self.config.weight_bp(step))
            ),
            GatePoint::BeforePromotion => "before promotion".into(),
            GatePoint::AfterCompletion => "after completion".into(),
        }
    }

    /// The after-completion notification's answer: recorded, changes nothing.
    fn on_notified(&mut self, answer: GateAnswer) -> Vec<Command> {
        if self.phase != Phase::Completed {
            return Vec::new();
        }
        match answer {
            GateAnswer::Approved { note } => {
                vec![event("GateApproved", format!("after completion: {note}"))]
            }
            GateAnswer::Refused { gate, reason, .. } => vec![event(
                "GateRejected",
                format!("after completion: gate {gate} refused: {reason} (the rollout is complete; nothing changes)"),
            )],
        }
    }
}
