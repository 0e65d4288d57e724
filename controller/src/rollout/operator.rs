//! Operator commands, deadlines and restart recovery: the transitions that interrupt the normal flow.

use crossfade_proxy::duration::later;
use tokio::time::Instant;

use super::machine::{event, human, pct};
use super::{AbortCause, Command, OperatorCommand, PauseReason, Phase, Promotion, Rollout, Timers};

impl Rollout {
    pub(super) fn on_operator(&mut self, command: OperatorCommand, now: Instant) -> Vec<Command> {
        match command {
            OperatorCommand::Abort => self.on_abort(now),
            OperatorCommand::ForceAbort => self.on_force_abort(now),
            OperatorCommand::Pause => self.on_pause(),
            OperatorCommand::Resume => self.on_resume(now),
            OperatorCommand::Promote => self.on_promote(now),
        }
    }

    /// A refused command: an event and a message, nothing else changes.
    pub(super) fn reject(&mut self, command: &str, why: String) -> Vec<Command> {
        vec![event(
            "CommandRejected",
            format!("{command} rejected: {why}"),
        )]
    }

    /// Why `command` cannot apply in a terminal or post-promotion phase. Any command it suggests is
    /// one the rollout (or the service, once the rollout has ended) accepts at that point: after
    /// the swap nothing can be aborted or paused, and a new rollout (`crossfade migrate`) is
    /// accepted only once this one has completed.
    pub(super) fn too_late(&self, command: &str) -> String {
        match self.phase {
            Phase::Promoted | Phase::Retiring => self.too_late_promoted(command),
            phase => format!("the rollout is already {}", phase.words()),
        }
    }

    pub(super) fn on_abort(&mut self, now: Instant) -> Vec<Command> {
        self.abort_for(None, false, now)
    }

    /// `force-abort`: during a rollback or abort that holds traffic on the preview until the
    /// active backend can carry it (a capacity wait), all of it goes back at once, the operator's
    /// choice named in the reason and in an `AbortForced` event; before promotion, an abort that
    /// sends everything back at once whatever the active backend's capacity; refused where the
    /// traffic already goes back at once, and after promotion.
    pub(super) fn on_force_abort(&mut self, now: Instant) -> Vec<Command> {
        match self.phase {
            Phase::RollingBack | Phase::Aborting if self.holds_for_capacity() => {
                let words = format!(
                    "force-abort by operator: all traffic sent back to {} at once ({})",
                    self.active,
                    self.capacity_words()
                );
                let reason = match self.reason.take() {
                    Some(why) => format!("{why}; {words}"),
                    None => words.clone(),
                };
                self.reason = Some(reason);
                self.hard_undo = true;
                let mut out = self.request_weight(0, now);
                out.push(event(
                    "AbortForced",
                    format!(
                        "{words}; {} was kept at {} until {} could carry more",
                        self.preview(),
                        pct(self.preview_bp.max(self.applied_bp)),
                        self.active
                    ),
                ));
                out
            }
            Phase::RollingBack | Phase::Aborting => self.reject(
                "force-abort",
                format!(
                    "already sending all traffic back to {} at once",
                    self.active
                ),
            ),
            _ => self.abort_for(None, true, now),
        }
    }

    /// Whether a rollback or abort holds some traffic on the preview until the active backend
    /// can carry it (the last weight requested for the preview is above 0): a capacity wait,
    /// which `force-abort` ends.
    pub fn holds_for_capacity(&self) -> bool {
        matches!(self.phase, Phase::RollingBack | Phase::Aborting) && self.preview_bp > 0
    }

    /// Aborts for `cause` (`None`: the operator's command; `force`: its `force-abort`, all traffic
    /// back at once whatever the active backend's capacity). Where an abort does not apply, the
    /// operator's is refused (`CommandRejected`) and any other cause changes nothing.
    pub(super) fn abort_for(
        &mut self,
        cause: Option<&AbortCause>,
        force: bool,
        now: Instant,
    ) -> Vec<Command> {
        let command = if force { "force-abort" } else { "abort" };
        let words = match (cause, force) {
            (Some(cause), _) => cause.words(),
            (None, true) => "force-aborted by operator".to_owned(),
            (None, false) => "aborted by operator".to_owned(),
        };
        match self.phase {
            _ if cause.is_some() && !self.abortable() => Vec::new(),
            Phase::Pending => {
                self.phase = Phase::Aborted;
                self.reason = Some(format!("{words} before start"));
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
                let note = format!("{words} {}{cancelled}", self.where_now());
                self.undo(Phase::Aborting, note.clone(), force, now);
                let target = self.rollback_target();
                let mut out = self.request_weight(target, now);
                let how = match target {
                    0 => match self.capacity {
                        // Why all of it at once, when the reading could have held some back.
                        Some(c) => format!(
                            "sending all traffic back to {} ({} of {} endpoints healthy; {}: {} of {})",
                            self.active,
                            c.active.healthy,
                            c.active.total,
                            self.preview(),
                            c.preview.healthy,
                            c.preview.total
                        ),
                        None => format!("sending all traffic back to {}", self.active),
                    },
                    _ => format!(
                        "sending traffic back to {}{}",
                        self.active,
                        self.ramp_words(target)
                    ),
                };
                out.push(event("Aborting", format!("{note}; {how}")));
                out
            }
            Phase::RollingBack | Phase::Aborting if self.holds_for_capacity() => {
                let why = format!(
                    "already sending traffic back to {} as fast as its capacity allows ({}); \
                     `abort --force` sends all of it back at once",
                    self.active,
                    self.capacity_words()
                );
                self.reject(command, why)
            }
            Phase::RollingBack | Phase::Aborting => self.reject(
                command,
                "already sending all traffic back to the active backend".into(),
            ),
            // The promoted backend cannot serve and the old one, drained, is kept running as its
            // backup, with no end in sight: the operator's way back (check32). The old one takes
            // all the traffic again at once (it has carried what the promoted one could not) and
            // the promoted one is stopped, as an abort before promotion stops the preview.
            // In Kubernetes the target already runs the new images: there is no swap to revert
            // (and the preview, held as the backup, must not be deleted), so it is too late.
            Phase::Retiring
                if self.retire_held && cause.is_none() && self.promotion == Promotion::Swap =>
            {
                let (old, new) = (self.active, self.preview());
                self.phase = Phase::Aborted;
                self.retire_held = false;
                self.timers = Timers::default();
                let note = format!(
                    "{words} after promotion, while {new} could not serve and {old} was kept as \
                     its backup: all traffic back to {old} at once, {new} stopped"
                );
                self.reason = Some(note.clone());
                vec![
                    Command::RevertSwap,
                    Command::StopPreview,
                    event("Aborted", note),
                ]
            }
            _ => {
                let why = self.too_late(command);
                self.reject(command, why)
            }
        }
    }

    /// Whether an abort applies: before promotion and not already undoing.
    fn abortable(&self) -> bool {
        matches!(
            self.phase,
            Phase::Pending | Phase::Provisioning | Phase::Progressing | Phase::Paused
        )
    }

    pub(super) fn on_pause(&mut self) -> Vec<Command> {
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
                let why = self.too_late("pause");
                self.reject("pause", why)
            }
        }
    }

    /// Stops every timer (deadline included) and waits for the operator.
    pub(super) fn enter_pause(&mut self, reason: PauseReason) -> Vec<Command> {
        self.phase = Phase::Paused;
        self.gate = None;
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
            "paused {} {why}: resume, promote or abort",
            self.where_now()
        );
        vec![event("Paused", note)]
    }

    pub(super) fn on_resume(&mut self, now: Instant) -> Vec<Command> {
        if self.phase != Phase::Paused {
            return self.reject("resume", format!("not paused ({})", self.phase.words()));
        }
        self.pause = None;
        self.inconclusive_streak = 0;
        if !self.preview_ready {
            self.phase = Phase::Provisioning;
            self.timers = Timers {
                deadline: Some(later(now, self.config.progress_deadline)),
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
            deadline: Some(later(now, self.config.progress_deadline)),
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
            format!("resumed {}: holding {hold} again", self.where_now()),
        ));
        out
    }

    pub(super) fn on_promote(&mut self, now: Instant) -> Vec<Command> {
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
                    deadline: Some(later(now, self.config.progress_deadline)),
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
                    _ => self.too_late("promote"),
                };
                self.reject("promote", why)
            }
        }
    }

    /// `at step 2/4 (25%)`, `before step 1/4 (5%)`, `while provisioning` or `while promoting`:
    /// where the rollout stands. `before` is a step whose weight was never requested: a pause
    /// during provisioning that outlived it read `paused at step 1/3 (0%)`, though step 1 is 10%
    /// (trial 30).
    pub(super) fn where_now(&self) -> String {
        if self.phase == Phase::Provisioning || !self.preview_ready {
            return "while provisioning".into();
        }
        if self.promote_requested {
            return "while promoting".into();
        }
        let bp = self.preview_bp.max(self.applied_bp);
        let step_bp = self.config.weight_bp(self.step);
        if bp == 0 && step_bp > 0 {
            return format!("before {} ({})", self.step_label(), pct(step_bp));
        }
        format!("at {} ({})", self.step_label(), pct(bp))
    }
}
