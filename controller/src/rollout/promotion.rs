//! Promotion and retirement: the swap of roles, the drain and stop of the former active backend.

use crossfade_proxy::duration::later;
use crossfade_proxy::weight::FULL_BP;
use tokio::time::Instant;

use super::machine::event;
use super::{Command, Phase, Promotion, Rollout, Timers};

impl Rollout {
    /// Promotion: roles swap next; there is no way back to the old active from here.
    pub(super) fn promote(&mut self, now: Instant, how: &str) -> Vec<Command> {
        self.phase = Phase::Promoted;
        self.gate = None;
        self.promote_requested = false;
        self.timers = Timers {
            deadline: Some(later(now, self.config.progress_deadline)),
            ..Timers::default()
        };
        let note = self.promoted_note(how);
        vec![Command::SwapRoles, event("Promoted", note)]
    }

    /// Asks for 100% and promotes once it is applied (at once when it already is).
    pub(super) fn request_promote(&mut self, now: Instant) -> Vec<Command> {
        self.promote_requested = true;
        self.gate = None;
        self.phase = Phase::Progressing;
        if self.applied_bp == FULL_BP && !self.weights_pending {
            return self.promote(now, "by operator");
        }
        let note = format!(
            "promote requested: shifting 100% of traffic to {}",
            self.preview()
        );
        let mut out = if self.weights_pending && self.preview_bp == FULL_BP {
            Vec::new()
        } else {
            self.request_weight(FULL_BP, now)
        };
        out.push(event("PromoteRequested", note));
        out
    }

    pub(super) fn on_swapped(&mut self, now: Instant) -> Vec<Command> {
        if self.phase != Phase::Promoted {
            return Vec::new();
        }
        self.phase = Phase::Retiring;
        self.active_drained = false;
        self.drain(now, "Retiring")
    }

    /// Asks the runtime to drain the old active, with a deadline of its own plus slack.
    pub(super) fn drain(&mut self, now: Instant, reason: &'static str) -> Vec<Command> {
        let drain = self.config.drain_timeout;
        self.timers = Timers {
            deadline: Some(later(later(now, drain), self.config.progress_deadline)),
            ..Timers::default()
        };
        let note = self.retiring_note();
        vec![
            Command::DrainActive {
                deadline: later(now, drain),
            },
            event(reason, note),
        ]
    }

    /// The drain deadline cut what still held the old active: say what, change nothing.
    pub(super) fn on_drain_deadline(
        &mut self,
        in_flight: u64,
        closed_upgraded: u64,
    ) -> Vec<Command> {
        if self.phase != Phase::Retiring || self.active_drained {
            return Vec::new();
        }
        let note = format!(
            "{}'s drain deadline passed: {closed_upgraded} upgraded connections closed \
             (1001 going away), {in_flight} requests still in flight",
            self.active
        );
        vec![event("DrainDeadlinePassed", note)]
    }

    /// The runtime keeps the drained former active while the promoted backend cannot serve: say
    /// so once, and drop the deadline, whose re-issued drain would only be kept again (and whose
    /// event said the old active had not drained yet).
    pub(super) fn on_retire_held(&mut self) -> Vec<Command> {
        if self.phase != Phase::Retiring || self.active_drained || self.retire_held {
            return Vec::new();
        }
        self.retire_held = true;
        self.timers = Timers::default();
        let (old, new) = (self.active, self.preview());
        let note = match &self.promotion {
            Promotion::Swap => format!(
                "{old} drained but is kept running and takes {new}'s requests: {new} has no \
                 instance that can serve now; {old} is retired once {new} can serve again \
                 (`crossfade abort` gives all traffic back to {old} and stops {new})"
            ),
            Promotion::InPlace {
                target, preview, ..
            } => format!(
                "preview {preview} drained but is kept and takes the route's requests as its \
                 backup: deployment {target} has no ready endpoint; {preview} is deleted once \
                 {target} has one"
            ),
        };
        vec![event("RetireHeld", note)]
    }

    pub(super) fn on_drained(&mut self, now: Instant) -> Vec<Command> {
        if self.phase != Phase::Retiring || self.active_drained {
            return Vec::new();
        }
        self.active_drained = true;
        self.retire_held = false;
        self.timers = Timers {
            deadline: Some(later(now, self.config.progress_deadline)),
            ..Timers::default()
        };
        let note = self.drained_note();
        vec![Command::StopActive, event("ActiveDrained", note)]
    }

    pub(super) fn on_stopped(&mut self) -> Vec<Command> {
        if self.phase != Phase::Retiring {
            return Vec::new();
        }
        let old = self.active;
        self.active = self.preview();
        self.phase = Phase::Completed;
        self.timers = Timers::default();
        let note = format!("rollout completed: {}", self.completed_words(Some(old)));
        let mut out = vec![event("Completed", note)];
        if self.has_gates(crate::spec::GatePoint::AfterCompletion) {
            out.push(Command::AskGates {
                at: crate::spec::GatePoint::AfterCompletion,
                step: self.step,
            });
        }
        out
    }

    /// Asks for the old active backend's drain again (a deadline passed, or the controller
    /// restarted), with a fresh deadline. A hold ([`Input::RetireHeld`](super::Input::RetireHeld)) is forgotten: the
    /// runtime observes it again and says so, which drops the deadline again; kept, a
    /// restarted Kubernetes controller's `RetireHeld` was ignored and the re-issued drain's
    /// deadline said `DeadlineExceeded` every drainTimeout + progressDeadline (check33).
    pub(super) fn drain_again(&mut self, now: Instant) -> Vec<Command> {
        self.retire_held = false;
        let drain = self.config.drain_timeout;
        self.timers = Timers {
            deadline: Some(later(later(now, drain), self.config.progress_deadline)),
            ..Timers::default()
        };
        vec![Command::DrainActive {
            deadline: later(now, drain),
        }]
    }
}
