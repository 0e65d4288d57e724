//! The human `message`: what the rollout is doing now and why.

use super::machine::{human, pct};
use super::{PauseReason, Phase, Rollout};
use crate::analysis::EvidenceSoFar;

impl Rollout {
    /// `step 2/4`: the current step counted from 1.
    pub(super) fn step_label(&self) -> String {
        format!("step {}/{}", self.step + 1, self.config.steps.len().max(1))
    }

    /// The current situation, e.g. `step 2/4 at 25%: holding 10s, last analysis passed (error rate
    /// 0% ≤ 1%, 812 requests)`.
    pub(super) fn situation(&self) -> String {
        let preview = self.preview();
        let reason = self.reason.as_deref().unwrap_or("no reason recorded");
        if let Some(gate) = self.gate.as_ref().filter(|_| !self.is_terminal()) {
            let place = self.gate_place(gate.at, gate.step);
            let held = if self.preview_ready {
                format!("{preview} holds {}", pct(self.applied_bp))
            } else {
                format!("{preview} not started")
            };
            return match &gate.refusal {
                Some(refusal) => format!("halted {place} ({held}): {refusal}; asking again"),
                None => format!("halted {place} ({held}): asking its gates"),
            };
        }
        match self.phase {
            Phase::Pending => "pending: not started".into(),
            Phase::Provisioning => self.provisioning(),
            Phase::Progressing => self.progressing(),
            Phase::Paused => self.paused(),
            Phase::Promoted => self.promoted_situation(),
            Phase::Retiring => self.retiring_situation(),
            Phase::Completed => format!("completed: {}", self.completed_words(None)),
            Phase::RollingBack if self.waits_for_capacity() => {
                self.capacity_wait_situation("rolling back", reason)
            }
            Phase::RollingBack => format!(
                "rolling back ({reason}): waiting for {preview}'s weight {} to be applied",
                pct(self.preview_bp)
            ),
            Phase::RolledBack => format!("rolled back: {reason}"),
            Phase::Aborting if self.waits_for_capacity() => {
                self.capacity_wait_situation("aborting", reason)
            }
            Phase::Aborting => format!(
                "aborting ({reason}): waiting for {preview}'s weight {} to be applied",
                pct(self.preview_bp)
            ),
            Phase::Aborted => format!("aborted: {reason}"),
        }
    }

    /// `provisioning green: 1 of 2 replicas ready; no traffic until it is ready`, the count as
    /// last reported ([`super::Input::PreviewReplicas`]), when one was.
    fn provisioning(&self) -> String {
        let ready = match self.preview_ready_replicas {
            Some((ready, desired)) => format!("{ready} of {desired} replicas ready; "),
            None => String::new(),
        };
        let promote = match self.promote_requested {
            true => "; promote requested",
            false => "",
        };
        let preview = self.preview();
        format!("provisioning {preview}: {ready}no traffic until it is ready{promote}")
    }

    fn progressing(&self) -> String {
        let preview = self.preview();
        if self.promote_requested {
            return format!("promoting: waiting for 100% to be applied to {preview}");
        }
        if self.weights_pending {
            let bp = pct(self.preview_bp);
            return format!(
                "{}: waiting for {bp} to be applied to {preview}",
                self.step_label()
            );
        }
        if let Some(evidence) = self.evidence_so_far() {
            // Whatever the hold, the step waits for the evidence now (trial report 4, F3).
            let line = evidence.describe(preview);
            return format!("{} at {}: {line}", self.step_label(), pct(self.applied_bp));
        }
        let hold = human(self.config.hold_of(self.step));
        format!(
            "{} at {}: holding {hold}, {}",
            self.step_label(),
            pct(self.applied_bp),
            self.last_analysis()
        )
    }

    fn paused(&self) -> String {
        let at = self.where_now();
        match self.pause {
            Some(PauseReason::Inconclusive) => format!(
                "paused {at} after {} inconclusive analyses in a row ({}): resume, promote or abort",
                self.inconclusive_streak,
                self.last_analysis()
            ),
            _ => format!("paused {at} by operator: resume, promote or abort"),
        }
    }

    /// The evidence so far when this step's last analysis was a sequential judge's "collecting
    /// evidence".
    fn evidence_so_far(&self) -> Option<EvidenceSoFar> {
        let last = self.verdicts.last().filter(|v| v.step == self.step)?;
        EvidenceSoFar::of(&last.verdict)
    }

    /// `last analysis passed (…)`, or `no analysis yet` at this step.
    fn last_analysis(&self) -> String {
        match self.verdicts.last().filter(|v| v.step == self.step) {
            Some(v) => format!(
                "last analysis {} ({})",
                v.verdict.outcome, v.verdict.summary
            ),
            None => "no analysis yet".into(),
        }
    }
}
