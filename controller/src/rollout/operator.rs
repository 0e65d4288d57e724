//! Operator commands, deadlines and restart recovery: the transitions that interrupt the normal flow.

use tokio::time::Instant;

use super::machine::{event, human, pct};
use super::{Command, OperatorCommand, PauseReason, Phase, Rollout, Timers};

impl Rollout {
    pub(super) fn on_operator(&mut self, command: OperatorCommand, now: Instant) -> Vec<Command> {
        match command {
            OperatorCommand::Abort => self.on_abort(now),
            OperatorCommand::Pause => self.on_pause(),
            OperatorCommand::Resume => self.on_resume(now),
            OperatorCommand::Promote => self.on_promote(now),
        }
    }

    /// A refused command: an event and a message, nothing else changes.
    fn reject(&mut self, command: &str, why: String) -> Vec<Command> {
        vec![event(
            "CommandRejected",
            format!("{command} rejected: {why}"),
        )]
    }

    /// Why a command cannot apply in a terminal or post-promotion phase.
    fn too_late(&self) -> String {
        match self.phase {
            Phase::Promoted | Phase::Retiring => format!(
                "too late: {} is already promoted and the roles are swapped, nothing to abort; \
                 roll out {} again to go back",
                self.preview(),
                self.active
            ),
            phase => format!("the rollout is already {}", phase.as_str().to_lowercase()),
        }
    }

    fn on_abort(&mut self, now: Instant) -> Vec<Command> {
        match self.phase {
            Phase::Pending => {
                self.phase = Phase::Aborted;
                self.reason = Some("aborted by operator before start".into());
                vec![event(
                    "Aborted",
                    "aborted before start: nothing was started".into(),
                )]
            }
            Phase::Provisioning | Phase::Progressing | Phase::Paused => {
                let cancelled = if self.promote_requested {
                    " (pending promote cancelled)"
                } else {
                    ""
                };
                let note = format!("aborted by operator at {}{cancelled}", self.where_now());
                self.undo(Phase::Aborting, note.clone(), now);
                let mut out = self.request_weight(0, now);
                out.push(event(
                    "Aborting",
                    format!("{note}; sending all traffic back to {}", self.active),
                ));
                out
            }
            Phase::RollingBack | Phase::Aborting => self.reject(
                "abort",
                "already sending all traffic back to the active backend".into(),
            ),
            _ => {
                let why = self.too_late();
                self.reject("abort", why)
            }
        }
    }

    fn on_pause(&mut self) -> Vec<Command> {
        match self.phase {
            _ if self.promote_requested => {
                self.reject("pause", "a promote is pending; abort to cancel it".into())
            }
            Phase::Provisioning | Phase::Progressing => self.enter_pause(PauseReason::Operator),
            Phase::Paused => self.reject("pause", "already paused".into()),
            Phase::Pending => self.reject("pause", "the rollout has not started".into()),
            Phase::RollingBack | Phase::Aborting => {
                self.reject("pause", "the rollout is being rolled back".into())
            }
            _ => {
                let why = self.too_late();
                self.reject("pause", why)
            }
        }
    }

    /// Stops every timer (deadline included) and waits for the operator.
    pub(super) fn enter_pause(&mut self, reason: PauseReason) -> Vec<Command> {
        self.phase = Phase::Paused;
        self.pause = Some(reason);
        self.timers = Timers::default();
        let why = match reason {
            PauseReason::Operator => "by operator".to_string(),
            PauseReason::Inconclusive => format!(
                "after {} inconclusive analyses in a row",
                self.inconclusive_streak
            ),
        };
        let note = format!(
            "paused at {} {why}: resume, promote or abort",
            self.where_now()
        );
        vec![event("Paused", note)]
    }

    fn on_resume(&mut self, now: Instant) -> Vec<Command> {
        if self.phase != Phase::Paused {
            return self.reject("resume", format!("not paused ({})", self.phase.as_str()));
        }
        self.pause = None;
        self.inconclusive_streak = 0;
        if !self.preview_ready {
            self.phase = Phase::Provisioning;
            self.timers = Timers {
                deadline: Some(now + self.config.progress_deadline),
                ..Timers::default()
            };
            let note = format!("resumed: waiting for {} to become ready", self.preview());
            return vec![event("Resumed", note)];
        }
        if self.preview_bp == 0 {
            let mut out = vec![event("Resumed", "resumed".into())];
            out.extend(self.start_step(self.step, now));
            return out;
        }
        self.phase = Phase::Progressing;
        self.timers = Timers {
            deadline: Some(now + self.config.progress_deadline),
            ..Timers::default()
        };
        let mut out = if self.weights_pending {
            vec![Command::SetWeights {
                preview_bp: self.preview_bp,
            }]
        } else {
            self.open_window(now)
        };
        let hold = human(self.config.hold_of(self.step));
        out.push(event(
            "Resumed",
            format!("resumed at {}: holding {hold} again", self.where_now()),
        ));
        out
    }

    fn on_promote(&mut self, now: Instant) -> Vec<Command> {
        match self.phase {
            _ if self.promote_requested => {
                self.reject("promote", "promote already requested".into())
            }
            Phase::Provisioning => {
                self.promote_requested = true;
                let note = format!(
                    "promote requested: {} gets 100% once it is ready, never before",
                    self.preview()
                );
                vec![event("PromoteRequested", note)]
            }
            Phase::Progressing => self.request_promote(now),
            Phase::Paused => {
                self.pause = None;
                if self.preview_ready {
                    return self.request_promote(now);
                }
                self.phase = Phase::Provisioning;
                self.timers = Timers {
                    deadline: Some(now + self.config.progress_deadline),
                    ..Timers::default()
                };
                self.on_promote(now)
            }
            Phase::Pending => self.reject("promote", "the rollout has not started".into()),
            Phase::RollingBack | Phase::Aborting => {
                self.reject("promote", "the rollout is being rolled back".into())
            }
            _ => {
                let why = match self.phase {
                    Phase::Promoted | Phase::Retiring => "already promoted".to_string(),
                    _ => self.too_late(),
                };
                self.reject("promote", why)
            }
        }
    }

    /// A phase or step ran past `progress_deadline`.
    pub(super) fn on_deadline(&mut self, now: Instant) -> Vec<Command> {
        let limit = human(self.config.progress_deadline);
        match self.phase {
            Phase::Provisioning => {
                let note = format!(
                    "{} not ready within progress_deadline {limit}",
                    self.preview()
                );
                self.begin_rollback("DeadlineExceeded", note, now)
            }
            Phase::Progressing => {
                let last = self.verdicts.last().filter(|v| v.step == self.step);
                let last = last.map_or(String::new(), |v| {
                    format!(
                        " (last analysis {}: {})",
                        v.verdict.outcome, v.verdict.summary
                    )
                });
                let what = if self.weights_pending {
                    "was not applied"
                } else {
                    "did not pass"
                };
                let note = format!(
                    "{} {what} within progress_deadline {limit}{last}",
                    self.where_now()
                );
                self.begin_rollback("DeadlineExceeded", note, now)
            }
            _ => self.retry_pending(now, limit),
        }
    }

    /// Past the point of no return (or while undoing), a lost answer is retried, never given up on.
    fn retry_pending(&mut self, now: Instant, limit: String) -> Vec<Command> {
        let (action, waiting) = match self.phase {
            Phase::RollingBack | Phase::Aborting => (
                self.request_weight(0, now),
                "preview weight 0 to be applied",
            ),
            Phase::Promoted => {
                self.timers.deadline = Some(now + self.config.progress_deadline);
                (vec![Command::SwapRoles], "the role swap")
            }
            Phase::Retiring if !self.active_drained => {
                (self.drain_again(now), "the old active backend to drain")
            }
            Phase::Retiring => {
                self.timers.deadline = Some(now + self.config.progress_deadline);
                (vec![Command::StopActive], "the old active backend to stop")
            }
            _ => {
                self.timers = Timers::default();
                return Vec::new();
            }
        };
        let note = format!("still waiting for {waiting} after {limit}: asking again");
        let mut out = action;
        out.push(event("DeadlineExceeded", note));
        out
    }

    fn drain_again(&mut self, now: Instant) -> Vec<Command> {
        let drain = self.config.drain_timeout;
        self.timers = Timers {
            deadline: Some(now + drain + self.config.progress_deadline),
            ..Timers::default()
        };
        vec![Command::DrainActive {
            deadline: now + drain,
        }]
    }

    /// After a restart the timers are gone: before promotion roll back, after it finish the job.
    pub(super) fn on_restarted(&mut self, now: Instant) -> Vec<Command> {
        match self.phase {
            Phase::Provisioning | Phase::Progressing | Phase::Paused => {
                let note = format!(
                    "crossfade restarted at {}, before promotion",
                    self.where_now()
                );
                self.begin_rollback("Restarted", note, now)
            }
            Phase::Pending | Phase::Completed | Phase::RolledBack | Phase::Aborted => Vec::new(),
            _ => {
                let mut out = self.retry_pending(now, "a restart".into());
                for command in &mut out {
                    if let Command::Event { reason, .. } = command {
                        *reason = "Restarted";
                    }
                }
                out
            }
        }
    }

    /// `step 2/4 (25%)` or `provisioning`: where the rollout stands, for notes.
    pub(super) fn where_now(&self) -> String {
        if self.phase == Phase::Provisioning || !self.preview_ready {
            return "provisioning".into();
        }
        format!(
            "{} ({})",
            self.step_label(),
            pct(self.preview_bp.max(self.applied_bp))
        )
    }
}
