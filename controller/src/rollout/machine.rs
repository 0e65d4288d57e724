//! The transitions of [`Rollout::step`], one small handler per input.

use crossfade_proxy::weight::FULL_BP;
use tokio::time::Instant;

use super::{Command, Input, Phase, Rollout, StepVerdict, Timers, MAX_VERDICTS};
use crate::analysis::{Outcome, Verdict};
use crate::spec::InconclusivePolicy;

/// Shorthand for an event command.
pub(super) fn event(reason: &'static str, message: String) -> Command {
    Command::Event { reason, message }
}

impl Rollout {
    /// Feeds one input at time `now` and returns the commands to execute, in order.
    ///
    /// A transition returns [`Command::Persist`] first, then its actions, then its events, and
    /// refreshes [`Rollout::message`]. A refused operator command returns only its
    /// `CommandRejected` event and appends the refusal to `message`. An input with nothing to do (stale, duplicate, or a tick
    /// before any timer) returns no command. Never panics.
    pub fn step(&mut self, input: Input, now: Instant) -> Vec<Command> {
        let out = match input {
            Input::Start => self.on_start(now),
            Input::PreviewReady => self.on_ready(now),
            Input::PreviewFailed { reason } => self.on_preview_lost("PreviewFailed", reason, now),
            Input::PreviewExited { reason } => self.on_preview_lost("PreviewExited", reason, now),
            Input::WeightsApplied {
                preview_bp,
                generation,
            } => self.on_applied(preview_bp, generation, now),
            Input::Verdict(verdict) => self.on_verdict(verdict, now),
            Input::Tick => self.on_tick(now),
            Input::RolesSwapped => self.on_swapped(now),
            Input::ActiveDrained => self.on_drained(now),
            Input::ActiveStopped => self.on_stopped(),
            Input::Operator(command) => self.on_operator(command, now),
            Input::Restarted => self.on_restarted(now),
        };
        self.finish(out)
    }

    /// Orders a transition's commands (Persist, actions, events) and refreshes `message`.
    fn finish(&mut self, out: Vec<Command>) -> Vec<Command> {
        let is_event = |c: &Command| matches!(c, Command::Event { .. });
        if !out.iter().any(is_event) {
            return out;
        }
        let situation = self.situation();
        if let [Command::Event {
            reason: "CommandRejected",
            message,
        }] = out.as_slice()
        {
            // A refusal changes no state: nothing to persist, but the message says what happened.
            self.message = format!("{situation}; {message}");
            return out;
        }
        self.message = situation;
        let (events, actions): (Vec<_>, Vec<_>) = out.into_iter().partition(is_event);
        let mut ordered = Vec::with_capacity(events.len() + actions.len() + 1);
        ordered.push(Command::Persist);
        ordered.extend(actions);
        ordered.extend(events);
        ordered
    }

    fn on_start(&mut self, now: Instant) -> Vec<Command> {
        if self.phase != Phase::Pending {
            return Vec::new();
        }
        self.phase = Phase::Provisioning;
        self.timers = Timers {
            deadline: Some(now + self.config.progress_deadline),
            ..Timers::default()
        };
        let note = format!(
            "starting the preview ({}); it gets no traffic until it is ready",
            self.preview()
        );
        vec![Command::StartPreview, event("Provisioning", note)]
    }

    fn on_ready(&mut self, now: Instant) -> Vec<Command> {
        match self.phase {
            Phase::Provisioning => {
                self.preview_ready = true;
                if self.promote_requested {
                    return self.request_promote(now);
                }
                self.start_step(0, now)
            }
            Phase::Paused if !self.preview_ready => {
                self.preview_ready = true;
                let note = format!("{} is ready; it stays at 0% until resumed", self.preview());
                vec![event("PreviewReady", note)]
            }
            _ => Vec::new(),
        }
    }

    /// Requests step `index`'s weight; the step's clock starts when it is applied.
    pub(super) fn start_step(&mut self, index: usize, now: Instant) -> Vec<Command> {
        self.phase = Phase::Progressing;
        self.step = index;
        self.inconclusive_streak = 0;
        let bp = self.config.weight_bp(index);
        let note = format!(
            "{}: shifting {} of traffic to {}",
            self.step_label(),
            pct(bp),
            self.preview()
        );
        let mut out = self.request_weight(bp, now);
        out.push(event("StepStarted", note));
        out
    }

    /// Requests `bp` for the preview with a fresh deadline and no step clock.
    pub(super) fn request_weight(&mut self, bp: u32, now: Instant) -> Vec<Command> {
        self.preview_bp = bp;
        self.weights_pending = true;
        self.timers = Timers {
            deadline: Some(now + self.config.progress_deadline),
            ..Timers::default()
        };
        vec![Command::SetWeights { preview_bp: bp }]
    }

    /// Starts (or restarts) the current step's clock: window, hold and analysis timers.
    pub(super) fn open_window(&mut self, now: Instant) -> Vec<Command> {
        let deadline = self
            .timers
            .deadline
            .unwrap_or(now + self.config.progress_deadline);
        self.timers = Timers {
            deadline: Some(deadline),
            hold_until: Some(now + self.config.hold_of(self.step)),
            next_analysis: Some(now + self.config.interval_of(self.step)),
            awaiting_verdict: false,
            last_passed: false,
        };
        vec![Command::OpenWindow]
    }

    fn on_applied(&mut self, bp: u32, generation: u64, now: Instant) -> Vec<Command> {
        if !self.weights_pending || bp != self.preview_bp || self.is_terminal() {
            return Vec::new();
        }
        self.weights_pending = false;
        self.applied_bp = bp;
        self.generation = generation;
        let applied = format!(
            "{} at {} (generation {generation})",
            self.preview(),
            pct(bp)
        );
        match self.phase {
            Phase::Progressing if self.promote_requested && bp == FULL_BP => {
                self.promote(now, "by operator")
            }
            Phase::Progressing => {
                let (hold, every) = (
                    self.config.hold_of(self.step),
                    self.config.interval_of(self.step),
                );
                let note = format!(
                    "{}: {applied}; holding {}, analysing every {}",
                    self.step_label(),
                    human(hold),
                    human(every)
                );
                let mut out = self.open_window(now);
                out.push(event("WeightsApplied", note));
                out
            }
            Phase::Paused => vec![event("WeightsApplied", format!("{applied} while paused"))],
            Phase::RollingBack | Phase::Aborting => self.finish_undo(applied),
            _ => Vec::new(),
        }
    }

    fn on_verdict(&mut self, verdict: Verdict, now: Instant) -> Vec<Command> {
        if self.phase != Phase::Progressing || !self.timers.awaiting_verdict {
            return Vec::new();
        }
        self.timers.awaiting_verdict = false;
        let at = format!("{} at {}", self.step_label(), pct(self.applied_bp));
        self.record(verdict.clone());
        match verdict.outcome {
            Outcome::Fail => {
                let note = format!("{at}: analysis failed: {}", verdict.summary);
                self.begin_rollback("AnalysisFailed", note, now)
            }
            Outcome::Inconclusive => self.on_inconclusive(&verdict, at, now),
            Outcome::Pass => {
                self.inconclusive_streak = 0;
                self.timers.last_passed = true;
                let mut out = vec![event(
                    "AnalysisPassed",
                    format!("{at}: analysis passed: {}", verdict.summary),
                )];
                if self.timers.hold_until.is_some_and(|h| now >= h) {
                    out.extend(self.advance(now));
                }
                out
            }
        }
    }

    fn on_inconclusive(&mut self, verdict: &Verdict, at: String, now: Instant) -> Vec<Command> {
        self.inconclusive_streak += 1;
        self.timers.last_passed = false;
        let max = self.config.analysis.max_inconclusive;
        let note = format!(
            "{at}: analysis inconclusive ({} of {max} in a row): {}",
            self.inconclusive_streak, verdict.summary
        );
        if self.inconclusive_streak < max {
            return vec![event("AnalysisInconclusive", note)];
        }
        match self.config.analysis.on_inconclusive {
            InconclusivePolicy::Rollback => self.begin_rollback("AnalysisInconclusive", note, now),
            InconclusivePolicy::Pause => {
                let mut out = vec![event("AnalysisInconclusive", note)];
                out.extend(self.enter_pause(super::PauseReason::Inconclusive));
                out
            }
        }
    }

    /// Keeps the verdict history bounded.
    fn record(&mut self, verdict: Verdict) {
        if self.verdicts.len() >= MAX_VERDICTS {
            self.verdicts.remove(0);
        }
        self.verdicts.push(StepVerdict {
            step: self.step,
            preview_bp: self.applied_bp,
            verdict,
        });
    }

    /// The current step passed: the next step, or promotion after the last.
    fn advance(&mut self, now: Instant) -> Vec<Command> {
        if self.step + 1 < self.config.steps.len() {
            return self.start_step(self.step + 1, now);
        }
        if self.applied_bp == FULL_BP {
            return self.promote(now, "after the last step passed");
        }
        // An unvalidated config whose last step is below 100%: finish the ramp before the swap.
        self.promote_requested = true;
        self.request_weight(FULL_BP, now)
    }

    fn on_tick(&mut self, now: Instant) -> Vec<Command> {
        if self.timers.deadline.is_some_and(|d| now >= d) {
            return self.on_deadline(now);
        }
        if self.phase != Phase::Progressing || self.weights_pending || self.timers.awaiting_verdict
        {
            return Vec::new();
        }
        if self.timers.next_analysis.is_some_and(|t| now >= t) {
            self.timers.awaiting_verdict = true;
            self.timers.next_analysis = Some(now + self.config.interval_of(self.step));
            return vec![Command::Analyse];
        }
        if self.timers.last_passed && self.timers.hold_until.is_some_and(|h| now >= h) {
            return self.advance(now);
        }
        Vec::new()
    }

    /// Promotion: roles swap next; there is no way back to the old active from here.
    pub(super) fn promote(&mut self, now: Instant, how: &str) -> Vec<Command> {
        self.phase = Phase::Promoted;
        self.promote_requested = false;
        self.timers = Timers {
            deadline: Some(now + self.config.progress_deadline),
            ..Timers::default()
        };
        let note = format!("{} promoted {how}: swapping roles", self.preview());
        vec![Command::SwapRoles, event("Promoted", note)]
    }

    /// Asks for 100% and promotes once it is applied (at once when it already is).
    pub(super) fn request_promote(&mut self, now: Instant) -> Vec<Command> {
        self.promote_requested = true;
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

    fn on_swapped(&mut self, now: Instant) -> Vec<Command> {
        if self.phase != Phase::Promoted {
            return Vec::new();
        }
        self.phase = Phase::Retiring;
        self.active_drained = false;
        self.drain(now, "Retiring")
    }

    /// Asks the runtime to drain the old active, with a deadline of its own plus slack.
    fn drain(&mut self, now: Instant, reason: &'static str) -> Vec<Command> {
        let drain = self.config.drain_timeout;
        self.timers = Timers {
            deadline: Some(now + drain + self.config.progress_deadline),
            ..Timers::default()
        };
        let note = format!(
            "{} is active; draining {}'s in-flight requests (up to {})",
            self.preview(),
            self.active,
            human(drain)
        );
        vec![
            Command::DrainActive {
                deadline: now + drain,
            },
            event(reason, note),
        ]
    }

    fn on_drained(&mut self, now: Instant) -> Vec<Command> {
        if self.phase != Phase::Retiring || self.active_drained {
            return Vec::new();
        }
        self.active_drained = true;
        self.timers = Timers {
            deadline: Some(now + self.config.progress_deadline),
            ..Timers::default()
        };
        let note = format!("{} drained; stopping it", self.active);
        vec![Command::StopActive, event("ActiveDrained", note)]
    }

    fn on_stopped(&mut self) -> Vec<Command> {
        if self.phase != Phase::Retiring {
            return Vec::new();
        }
        let old = self.active;
        self.active = self.preview();
        self.phase = Phase::Completed;
        self.timers = Timers::default();
        let note = format!(
            "rollout completed: {} is active, {old} stopped",
            self.active
        );
        vec![event("Completed", note)]
    }

    fn on_preview_lost(
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

    /// Starts a rollback: preview weight 0 now, the preview is stopped once that is applied.
    pub(super) fn begin_rollback(
        &mut self,
        cause: &'static str,
        note: String,
        now: Instant,
    ) -> Vec<Command> {
        self.undo(Phase::RollingBack, note.clone(), now);
        let mut out = self.request_weight(0, now);
        out.push(event(cause, format!("{note}; rolling back")));
        out
    }

    /// Clears everything in flight and heads for `phase` (`RollingBack` or `Aborting`).
    pub(super) fn undo(&mut self, phase: Phase, reason: String, now: Instant) {
        self.phase = phase;
        self.reason = Some(reason);
        self.promote_requested = false;
        self.pause = None;
        self.timers = Timers {
            deadline: Some(now + self.config.progress_deadline),
            ..Timers::default()
        };
    }

    /// Weight 0 is applied: stop the preview and end.
    fn finish_undo(&mut self, applied: String) -> Vec<Command> {
        self.timers = Timers::default();
        let (phase, reason) = if self.phase == Phase::Aborting {
            (Phase::Aborted, "Aborted")
        } else {
            (Phase::RolledBack, "RolledBack")
        };
        self.phase = phase;
        let why = self.reason.clone().unwrap_or_default();
        let note = format!(
            "{}: {applied}; stopping {} ({why})",
            phase.as_str().to_lowercase(),
            self.preview()
        );
        vec![Command::StopPreview, event(reason, note)]
    }
}

/// Basis points as percent text: `2500` → `25%`.
pub(super) fn pct(bp: u32) -> String {
    crossfade_proxy::weight::Percent(bp).to_string()
}

/// A duration as the spec writes it.
pub(super) fn human(d: std::time::Duration) -> String {
    crate::spec::human(d)
}
