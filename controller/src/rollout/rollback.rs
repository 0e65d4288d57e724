//! Rollback, deadlines and restart recovery: the transitions that take traffic back from the preview.

use std::time::Duration;

use crossfade_proxy::duration::later;
use tokio::time::Instant;

use super::machine::{event, human, pct};
use super::{Command, Phase, Reattach, Rollout, Timers};

impl Rollout {
    pub(super) fn on_preview_lost(
        &mut self,
        kind: &'static str,
        reason: String,
        now: Instant,
    ) -> Vec<Command> {
        let what = if kind == "PreviewFailed" {
            "failed"
        } else {
            "exited"
        };
        let note = format!("preview {} {what}: {reason}", self.preview());
        match self.phase {
            Phase::Provisioning | Phase::Progressing | Phase::Paused => {
                self.begin_rollback(kind, note, now)
            }
            Phase::Promoted | Phase::Retiring => {
                vec![event(
                    kind,
                    format!("{note} (already promoted: no rollback)"),
                )]
            }
            _ => Vec::new(),
        }
    }

    /// The target was changed under the rollout: roll back while the roles have not swapped
    /// (promoted included: the target was not given the new images yet), else nothing.
    pub(super) fn on_target_changed(&mut self, reason: String, now: Instant) -> Vec<Command> {
        match self.phase {
            Phase::Provisioning | Phase::Progressing | Phase::Paused | Phase::Promoted => {
                self.begin_rollback("TargetChanged", reason, now)
            }
            _ => Vec::new(),
        }
    }

    /// Starts a rollback: the preview's weight goes down as far as the active backend's capacity
    /// allows (0 at once when the preview fails hard: it crashed or failed), the preview is stopped
    /// once 0 is applied.
    pub(super) fn begin_rollback(
        &mut self,
        cause: &'static str,
        note: String,
        now: Instant,
    ) -> Vec<Command> {
        let hard = matches!(cause, "PreviewFailed" | "PreviewExited");
        self.begin_rollback_as(cause, note, hard, now)
    }

    /// [`Rollout::begin_rollback`] with `hard` decided by the caller (a failed analysis is hard
    /// when half or more of the preview's requests failed).
    pub(super) fn begin_rollback_as(
        &mut self,
        cause: &'static str,
        note: String,
        hard: bool,
        now: Instant,
    ) -> Vec<Command> {
        self.undo(Phase::RollingBack, note.clone(), hard, now);
        let target = self.rollback_target();
        let mut out = self.request_weight(target, now);
        out.push(event(
            cause,
            format!("{note}; rolling back{}", self.ramp_words(target)),
        ));
        out
    }

    /// `; green keeps 50% until blue can carry more (blue: 1 of 3 endpoints healthy)` when a
    /// rollback to `target` waits for the active backend's capacity; empty when it goes to 0.
    pub(super) fn ramp_words(&self, target: u32) -> String {
        match self.capacity.filter(|_| target > 0) {
            Some(c) => format!(
                "; {} keeps {} until {} can carry more ({} of {} endpoints healthy)",
                self.preview(),
                pct(target),
                self.active,
                c.active.healthy,
                c.active.total
            ),
            None => String::new(),
        }
    }

    /// An intermediate preview weight of a rollback is applied: go lower at once if the capacity
    /// reported meanwhile allows, else wait for [`Input::Capacity`](super::Input::Capacity) with no
    /// deadline.
    pub(super) fn undo_applied(&mut self, applied: String, now: Instant) -> Vec<Command> {
        let target = self.rollback_target();
        if target < self.applied_bp {
            let note = format!("{applied}; {}", self.capacity_words());
            let mut out = self.request_weight(target, now);
            out.push(event(
                "CapacityChanged",
                format!("{note}; shifting {} to {}", self.preview(), pct(target)),
            ));
            return out;
        }
        self.timers = Timers::default();
        let note = format!(
            "{applied}; {}; waiting until {} can carry more",
            self.capacity_words(),
            self.active
        );
        vec![event("WeightsApplied", note)]
    }

    /// Clears everything in flight and heads for `phase` (`RollingBack` or `Aborting`); `hard`
    /// sends all traffic back at once whatever the active backend's capacity.
    pub(super) fn undo(&mut self, phase: Phase, reason: String, hard: bool, now: Instant) {
        self.phase = phase;
        self.hard_undo = hard;
        self.undo_from_bp = self.applied_bp;
        self.reason = Some(reason);
        self.promote_requested = false;
        self.pause = None;
        self.gate = None;
        self.timers = Timers {
            deadline: Some(later(now, self.config.progress_deadline)),
            ..Timers::default()
        };
    }

    /// Weight 0 is applied: stop the preview and end.
    pub(super) fn finish_undo(&mut self, applied: String) -> Vec<Command> {
        self.timers = Timers::default();
        self.hard_undo = false;
        self.undo_from_bp = 0;
        let (phase, reason) = if self.phase == Phase::Aborting {
            (Phase::Aborted, "Aborted")
        } else {
            (Phase::RolledBack, "RolledBack")
        };
        self.phase = phase;
        let why = self.reason.clone().unwrap_or_default();
        let retire = match self.preview_left_running {
            true => format!("leaving {} running (static endpoints)", self.preview()),
            false => format!("stopping {}", self.preview()),
        };
        let note = format!("{}: {applied}; {retire} ({why})", phase.words());
        vec![Command::StopPreview, event(reason, note)]
    }
    /// A phase or step ran past `progress_deadline`.
    pub(super) fn on_deadline(&mut self, now: Instant) -> Vec<Command> {
        let limit = human(self.config.progress_deadline);
        match self.phase {
            Phase::Provisioning => {
                let why = self.provision_probe.as_ref();
                let note = format!(
                    "{} not ready within progress_deadline {limit}{}",
                    self.preview(),
                    why.map_or(String::new(), |why| format!(" ({why})"))
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
                let at = format!("{} ({})", self.step_label(), pct(self.preview_bp));
                let note = match self.promote_requested {
                    true => {
                        format!("promotion: 100% was not applied within progress_deadline {limit}")
                    }
                    false => format!("{at} {what} within progress_deadline {limit}{last}"),
                };
                self.begin_rollback("DeadlineExceeded", note, now)
            }
            _ => self.retry_pending(now, limit),
        }
    }

    /// Past the point of no return (or while undoing), a lost answer is retried, never given up on.
    fn retry_pending(&mut self, now: Instant, limit: String) -> Vec<Command> {
        let Some((mut out, waiting)) = self.ask_pending(now) else {
            return Vec::new();
        };
        let note = format!("still waiting for {waiting} after {limit}: asking again");
        out.push(event("DeadlineExceeded", note));
        out
    }

    /// Asks again for what the rollout waits on past the point of no return (or while undoing),
    /// with a fresh progress deadline where the wait has one: the actions and what is waited for
    /// (`the role swap`). `None`, with the timers cleared, in a phase that waits on nothing.
    fn ask_pending(&mut self, now: Instant) -> Option<(Vec<Command>, &'static str)> {
        Some(match self.phase {
            Phase::RollingBack | Phase::Aborting => (
                self.request_weight(self.rollback_target(), now),
                "the rollback's preview weight to be applied",
            ),
            Phase::Promoted => {
                self.timers.deadline = Some(later(now, self.config.progress_deadline));
                (vec![Command::SwapRoles], "the role swap")
            }
            Phase::Retiring if !self.active_drained => {
                (self.drain_again(now), "the old active backend to drain")
            }
            Phase::Retiring => {
                self.timers.deadline = Some(later(now, self.config.progress_deadline));
                (vec![Command::StopActive], "the old active backend to stop")
            }
            _ => {
                self.timers = Timers::default();
                return None;
            }
        })
    }

    /// After a restart the timers are gone: before promotion roll back, after it finish the job.
    pub(super) fn on_restarted(&mut self, now: Instant) -> Vec<Command> {
        match self.phase {
            Phase::Provisioning | Phase::Progressing | Phase::Paused => {
                let note = format!("crossfade restarted {}, before promotion", self.where_now());
                self.begin_rollback("Restarted", note, now)
            }
            Phase::Pending | Phase::Completed | Phase::RolledBack | Phase::Aborted => Vec::new(),
            _ => self.ask_again_by(None, &Reattach::Restart, now),
        }
    }

    /// After promotion (or while undoing), a reattached rollout asks again for what it waits on
    /// ([`Rollout::ask_pending`]), saying why as `cause` does ([`reattached`]), by the progress
    /// deadline it had (`deadline_left`), not a fresh one (a whole one without). Before (session
    /// 39), each reload of the rollout from Kubernetes status, which follows every failed
    /// reconcile, set a fresh deadline, wrote it to status, and that write woke the next
    /// reconcile at once: a persistent error after promotion rewrote status many times a second.
    fn ask_again_by(
        &mut self,
        deadline_left: Option<Duration>,
        cause: &Reattach,
        now: Instant,
    ) -> Vec<Command> {
        let Some((mut out, waiting)) = self.ask_pending(now) else {
            return Vec::new();
        };
        if let (Some(left), Some(fresh)) = (deadline_left, self.timers.deadline) {
            self.timers.deadline = Some(fresh.min(later(now, left)));
        }
        let restarted = format!("still waiting for {waiting} after a restart: asking again");
        let asking = format!("still waiting for {waiting}: asking again");
        out.push(reattached(cause, restarted, &asking));
        out
    }

    /// After a restart of a controller whose workloads kept running: resume with fresh timers (a
    /// whole new hold: the clock of the interrupted step is not credited) but with what was left
    /// of the progress deadline (`deadline_left`, at most `progress_deadline`; a whole one without).
    pub(super) fn on_reattached(
        &mut self,
        deadline_left: Option<Duration>,
        cause: &Reattach,
        now: Instant,
    ) -> Vec<Command> {
        let limit = self.config.progress_deadline;
        // A step's progress is the controller's own work (its hold and analysis), which stopped
        // while no controller ran: it gets at least one hold and one analysis interval, so that a
        // long outage does not roll back a healthy step. Provisioning (the preview's readiness,
        // which went on meanwhile) keeps what was left.
        let least = match self.phase {
            Phase::Progressing => {
                self.config.hold_of(self.step) + self.config.interval_of(self.step)
            }
            _ => Duration::ZERO,
        };
        let left = deadline_left.map_or(limit, |left| left.max(least).min(limit));
        let kept = match deadline_left {
            Some(_) => format!(
                " (progress deadline: {} left)",
                crate::spec::human_elapsed(left)
            ),
            None => String::new(),
        };
        let resuming = format!("{}: resuming with fresh timers{kept}", self.where_now());
        // The progress deadline keeps what was left of it (cases31): fresh, a controller that
        // restarts more often than the deadline would never end a preview that is never ready.
        let deadline = Some(later(now, left));
        // A halt at a webhook gate lost its retry timer: ask the gate again.
        let halted = self.gate.take().filter(|_| !self.is_terminal());
        let mut out = match self.phase {
            Phase::Pending | Phase::Progressing if halted.is_some() => {
                let gate = halted.expect("checked");
                let mut out = if self.phase == Phase::Progressing && self.applied_bp > 0 {
                    self.timers = Timers {
                        deadline,
                        ..Timers::default()
                    };
                    self.open_window(now)
                } else {
                    Vec::new()
                };
                out.extend(self.halt_at_gate(gate.at, gate.step));
                out
            }
            Phase::Provisioning => {
                self.timers = Timers {
                    deadline,
                    ..Timers::default()
                };
                vec![Command::StartPreview]
            }
            Phase::Progressing if self.weights_pending => {
                let out = self.request_weight(self.preview_bp, now);
                self.timers.deadline = deadline;
                out
            }
            Phase::Progressing => {
                self.timers = Timers {
                    deadline,
                    ..Timers::default()
                };
                self.open_window(now)
            }
            Phase::Paused => {
                self.timers = Timers::default();
                Vec::new()
            }
            Phase::Pending | Phase::Completed | Phase::RolledBack | Phase::Aborted => {
                return Vec::new()
            }
            // A rollback held above 0% for the active backend's capacity, its weight applied,
            // which the capacity read now does not lower: nothing is asked again (session 40).
            Phase::RollingBack | Phase::Aborting
                if self.waits_for_capacity() && self.rollback_target() >= self.applied_bp =>
            {
                return self.hold_again(cause)
            }
            Phase::Promoted | Phase::Retiring | Phase::RollingBack | Phase::Aborting => {
                return self.ask_again_by(deadline_left, cause, now)
            }
        };
        out.push(reattached(
            cause,
            format!("crossfade restarted {resuming}"),
            &resuming,
        ));
        out
    }

    /// A reattached rollback (or abort) that holds the preview at a weight the proxies applied
    /// until the active backend can carry more ([`Rollout::waits_for_capacity`]), and that the
    /// capacity read since does not lower, keeps holding with no deadline, as it did
    /// ([`Rollout::undo_applied`]), and says why as `cause` does. A later capacity reading
    /// ([`Input::Capacity`](super::Input::Capacity)) lowers the weight. Before
    /// (session 40), each reattach asked for the same weight again: a new weights generation and
    /// a deadline in status, cleared again once applied; a reload that failed after that write (a
    /// list of the proxies' Leases failing at every reconcile) published a new generation at every
    /// retry, each write waking the next retry at once.
    fn hold_again(&mut self, cause: &Reattach) -> Vec<Command> {
        self.timers = Timers::default();
        let holding = format!(
            "{} holds {} until {} can carry more ({}): nothing to ask again",
            self.preview(),
            pct(self.applied_bp),
            self.active,
            self.capacity_words()
        );
        let restarted = format!("crossfade restarted while {holding}");
        vec![reattached(cause, restarted, &holding)]
    }
}

/// The Event that says a rollout was reattached for `cause`: `Restarted` with `restarted`
/// (`crossfade restarted at step 1/4 (5%): resuming with fresh timers`), or `Reloaded` naming the
/// error before `situation`, where the rollout stands and what it does (`reloaded from status
/// after a failed reconcile (<error>), not a controller restart: at step 1/4 (5%): resuming with
/// fresh timers`).
fn reattached(cause: &Reattach, restarted: String, situation: &str) -> Command {
    match cause {
        Reattach::Restart => event("Restarted", restarted),
        Reattach::Reload { error } => event(
            "Reloaded",
            format!(
                "reloaded from status after a failed reconcile ({error}), not a controller restart: {situation}"
            ),
        ),
    }
}
