//! The transitions of [`Rollout::step`], one small handler per input.

use crossfade_proxy::duration::later;
use crossfade_proxy::weight::FULL_BP;
use tokio::time::Instant;

use super::{Command, Input, Phase, Rollout, StepVerdict, Timers, MAX_VERDICTS};
use crate::analysis::{EvidenceSoFar, Metric, Outcome, Verdict};
use crate::spec::{GatePoint, InconclusivePolicy};

/// How many distinct earlier causes the note that ends an inconclusive streak repeats.
const EARLIER_CAUSES: usize = 2;

/// Shorthand for an event command.
pub(super) fn event(reason: &'static str, message: String) -> Command {
    Command::Event { reason, message }
}

impl Rollout {
    /// Feeds one input at time `now` and returns the commands to execute, in order.
    ///
    /// A transition returns [`Command::Persist`] first, then its actions, then its events, and
    /// refreshes [`Rollout::message`]. A refused operator command returns only its
    /// `CommandRejected` event and changes nothing, `message` included: the refusal is the
    /// command's answer and an event, never part of the rollout's situation or outcome (a refused
    /// abort after a rollback must not rewrite why it rolled back). An input with nothing to do
    /// (stale, duplicate, or a tick before any timer) returns no command. Never panics.
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
            Input::DrainDeadlinePassed {
                in_flight,
                closed_upgraded,
            } => self.on_drain_deadline(in_flight, closed_upgraded),
            Input::ActiveDrained => self.on_drained(now),
            Input::RetireHeld => self.on_retire_held(),
            Input::ActiveStopped => self.on_stopped(),
            Input::Operator(command) => self.on_operator(command, now),
            Input::Abort(cause) => self.abort_for(Some(&cause), false, now),
            Input::TargetChanged { reason } => self.on_target_changed(reason, now),
            Input::Restarted => self.on_restarted(now),
            Input::GateAnswered { at, step, answer } => self.on_gate(at, step, answer, now),
            Input::Reattached {
                deadline_left,
                cause,
            } => self.on_reattached(deadline_left, &cause, now),
            Input::Capacity(capacity) => self.on_capacity(capacity, now),
            Input::PreviewReplicas { ready, desired } => self.on_preview_replicas(ready, desired),
        };
        self.finish(out)
    }

    /// Orders a transition's commands (Persist, actions, events) and refreshes `message`.
    pub(super) fn finish(&mut self, out: Vec<Command>) -> Vec<Command> {
        let is_event = |c: &Command| matches!(c, Command::Event { .. });
        if !out.iter().any(is_event) {
            return out;
        }
        if let [Command::Event {
            reason: "CommandRejected",
            ..
        }] = out.as_slice()
        {
            // A refusal changes no state, its message included: nothing to persist.
            return out;
        }
        self.message = self.situation();
        let (events, actions): (Vec<_>, Vec<_>) = out.into_iter().partition(is_event);
        let mut ordered = Vec::with_capacity(events.len() + actions.len() + 1);
        ordered.push(Command::Persist);
        ordered.extend(actions);
        ordered.extend(events);
        ordered
    }

    /// A new count of the preview's ready replicas: kept, and said in the message while
    /// provisioning (no transition, no Event: status shows it).
    pub(super) fn on_preview_replicas(&mut self, ready: u32, desired: u32) -> Vec<Command> {
        self.preview_ready_replicas = Some((ready, desired));
        if self.phase == Phase::Provisioning {
            self.message = self.situation();
        }
        Vec::new()
    }

    pub(super) fn on_start(&mut self, now: Instant) -> Vec<Command> {
        if self.phase != Phase::Pending {
            return Vec::new();
        }
        if self.has_gates(GatePoint::BeforeRollout) {
            return self.halt_at_gate(GatePoint::BeforeRollout, 0);
        }
        self.begin_provisioning(now)
    }

    /// Starts the preview (after the `before_rollout` gates, if any, approved).
    pub(super) fn begin_provisioning(&mut self, now: Instant) -> Vec<Command> {
        self.phase = Phase::Provisioning;
        self.timers = Timers {
            deadline: Some(later(now, self.config.progress_deadline)),
            ..Timers::default()
        };
        let note = format!(
            "starting the preview ({}); it gets no traffic until it is ready",
            self.preview()
        );
        vec![Command::StartPreview, event("Provisioning", note)]
    }

    pub(super) fn on_ready(&mut self, now: Instant) -> Vec<Command> {
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
            // Provisioning outlived the rollout: the preview started after its StopPreview ran.
            Phase::RolledBack | Phase::Aborted => vec![Command::StopPreview],
            _ => Vec::new(),
        }
    }

    /// Starts step `index`: asks its `before_step` gates first if there are any (the current
    /// weight holds meanwhile), else requests its weight at once.
    pub(super) fn start_step(&mut self, index: usize, now: Instant) -> Vec<Command> {
        self.phase = Phase::Progressing;
        if self.has_gates(GatePoint::BeforeStep) {
            return self.halt_at_gate(GatePoint::BeforeStep, index);
        }
        self.request_step(index, now)
    }

    /// Requests step `index`'s weight; the step's clock starts when it is applied.
    pub(super) fn request_step(&mut self, index: usize, now: Instant) -> Vec<Command> {
        self.phase = Phase::Progressing;
        self.gate = None;
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

    /// Requests `bp` for the preview with a fresh deadline and no step clock. While the preview
    /// carries traffic at the weight applied before (`applied_bp` above 0), the analysis goes on
    /// every interval until `bp` is applied, and a failed verdict rolls back
    /// ([`Rollout::on_verdict`]): a weight increase waits for the preview to pass its readiness
    /// probe again, and a preview that hung at that moment (or after an operator's `promote`)
    /// kept its share unjudged until the progress deadline, its requests hanging (trial 32, D).
    pub(super) fn request_weight(&mut self, bp: u32, now: Instant) -> Vec<Command> {
        self.preview_bp = bp;
        self.weights_pending = true;
        let guard = (self.applied_bp > 0 && self.phase == Phase::Progressing)
            .then(|| later(now, self.config.interval_of(self.step)));
        self.timers = Timers {
            deadline: Some(later(now, self.config.progress_deadline)),
            next_analysis: guard,
            ..Timers::default()
        };
        vec![Command::SetWeights { preview_bp: bp }]
    }

    /// Starts (or restarts) the current step's clock: window, hold and analysis timers.
    pub(super) fn open_window(&mut self, now: Instant) -> Vec<Command> {
        let deadline = self
            .timers
            .deadline
            .unwrap_or(later(now, self.config.progress_deadline));
        self.timers = Timers {
            deadline: Some(deadline),
            hold_started: Some(now),
            hold_until: Some(later(now, self.config.hold_of(self.step))),
            next_analysis: Some(later(now, self.config.interval_of(self.step))),
            awaiting_verdict: false,
            last_passed: false,
            end_look: false,
            gate_retry: None,
        };
        vec![Command::OpenWindow]
    }

    pub(super) fn on_applied(&mut self, bp: u32, generation: u64, now: Instant) -> Vec<Command> {
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
            // The capacity rule holds up to the moment the preview is stopped (session 44).
            Phase::RollingBack | Phase::Aborting if bp == 0 => match self.share_back() {
                Some(back) => self.give_share_back(back, &applied, now),
                None => self.finish_undo(applied),
            },
            Phase::RollingBack | Phase::Aborting => self.undo_applied(applied, now),
            _ => Vec::new(),
        }
    }

    pub(super) fn on_verdict(&mut self, verdict: Verdict, now: Instant) -> Vec<Command> {
        if self.phase != Phase::Progressing || !self.timers.awaiting_verdict {
            return Vec::new();
        }
        self.timers.awaiting_verdict = false;
        let end_look = std::mem::take(&mut self.timers.end_look);
        let at = format!("{} at {}", self.step_label(), pct(self.applied_bp));
        if self.weights_pending {
            // A look while the next weight waits to be applied (`request_weight`): only a failure
            // acts; a pass or an inconclusive window proves nothing about the weight to come.
            if verdict.outcome != Outcome::Fail {
                return Vec::new();
            }
            self.record(verdict.clone());
            let note = format!(
                "{at}, while {} waited to be applied: analysis failed: {}",
                pct(self.preview_bp),
                verdict.summary
            );
            let hard = fails_hard(&verdict);
            return self.begin_rollback_as("AnalysisFailed", note, hard, now);
        }
        self.record(verdict.clone());
        match verdict.outcome {
            Outcome::Fail => {
                let note = format!("{at}: analysis failed: {}", verdict.summary);
                let hard = fails_hard(&verdict);
                self.begin_rollback_as("AnalysisFailed", note, hard, now)
            }
            // The extra look at the hold's end saw too little since the step's last pass to
            // judge: that pass stands and the step advances, as it did before the look existed.
            // Counting such a window toward `max_inconclusive` rolled back (or paused) a step
            // that passed every look with enough traffic (hold 10s, interval 4s,
            // max_inconclusive 1: the 2 s since the pass at 8 s had fewer than min_requests). A
            // window the proxies did not split as published is evidence, not thinness: it counts.
            Outcome::Inconclusive
                if end_look && verdict.finding(Metric::PreviewShare).is_none() =>
            {
                let mut out = vec![event(
                    "AnalysisInconclusive",
                    format!(
                        "{at}: analysis at the end of the hold inconclusive: {}; advancing on the step's earlier pass",
                        verdict.summary
                    ),
                )];
                out.extend(self.advance(now));
                out
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

    pub(super) fn on_inconclusive(
        &mut self,
        verdict: &Verdict,
        at: String,
        now: Instant,
    ) -> Vec<Command> {
        self.timers.last_passed = false;
        if verdict.accumulating() {
            // A sequential judge with enough traffic, still gathering evidence: not a thin window,
            // so it does not count toward `max_inconclusive` (the progress deadline bounds it). No
            // event, but a log line per look, or the log falls silent until the deadline (trial
            // report 4, F3).
            let progress = EvidenceSoFar::of(verdict).map(|evidence| Command::Progress {
                message: evidence.describe(self.preview()),
                evidence,
            });
            return progress.into_iter().collect();
        }
        self.inconclusive_streak += 1;
        let max = self.config.analysis.max_inconclusive;
        let note = format!(
            "{at}: analysis inconclusive ({} of {max} in a row): {}",
            self.inconclusive_streak, verdict.summary
        );
        if self.inconclusive_streak < max {
            return vec![event("AnalysisInconclusive", note)];
        }
        // The streak ends the step: its note becomes the rollout's outcome, so it keeps what the
        // earlier windows of the streak said when the last one says something else (a 401 from
        // the proxies' metrics, then "0 requests < 50"; trial 10, K23).
        let note = match self.earlier_in_streak(&verdict.summary) {
            Some(earlier) => format!("{note} (earlier in this streak: {earlier})"),
            None => note,
        };
        match self.config.analysis.on_inconclusive {
            InconclusivePolicy::Rollback => self.begin_rollback("AnalysisInconclusive", note, now),
            InconclusivePolicy::Pause => {
                let mut out = vec![event("AnalysisInconclusive", note)];
                out.extend(self.enter_pause(super::PauseReason::Inconclusive));
                out
            }
        }
    }

    /// Keeps the verdict history bounded, and `message` (which names the last analysis) true:
    /// a verdict that raises no event (the sequential judge's "collecting evidence") would
    /// otherwise leave the message naming an older one (trial report 4, F3).
    /// The distinct summaries of the streak's earlier inconclusive verdicts at this step that
    /// `last` (the summary of the verdict that ends it) does not already say, newest first, at
    /// most [`EARLIER_CAUSES`] of them joined by ` | `; `None` when there are none.
    pub(super) fn earlier_in_streak(&self, last: &str) -> Option<String> {
        let mut earlier: Vec<&str> = Vec::new();
        let streak = self
            .verdicts
            .iter()
            .rev()
            .skip(1) // the verdict that ends the streak, recorded already
            .filter(|v| v.step == self.step && !v.verdict.accumulating())
            .take_while(|v| v.verdict.outcome == Outcome::Inconclusive)
            .take(self.inconclusive_streak.saturating_sub(1) as usize);
        for v in streak {
            let summary = v.verdict.summary.as_str();
            if !last.contains(summary) && !earlier.contains(&summary) {
                earlier.push(summary);
            }
        }
        earlier.truncate(EARLIER_CAUSES);
        (!earlier.is_empty()).then(|| earlier.join(" | "))
    }

    pub(super) fn record(&mut self, verdict: Verdict) {
        if self.verdicts.len() >= MAX_VERDICTS {
            self.verdicts.remove(0);
        }
        self.verdicts.push(StepVerdict {
            step: self.step,
            preview_bp: self.applied_bp,
            verdict,
        });
        self.message = self.situation();
    }

    /// The current step passed: the next step, or promotion after the last.
    pub(super) fn advance(&mut self, now: Instant) -> Vec<Command> {
        if self.step + 1 < self.config.steps.len() {
            return self.start_step(self.step + 1, now);
        }
        if self.applied_bp == FULL_BP {
            if self.has_gates(GatePoint::BeforePromotion) {
                return self.halt_at_gate(GatePoint::BeforePromotion, self.step);
            }
            return self.promote(now, "after the last step passed");
        }
        // An unvalidated config whose last step is below 100%: finish the ramp before the swap.
        self.request_promote(now)
    }

    pub(super) fn on_tick(&mut self, now: Instant) -> Vec<Command> {
        if self.timers.deadline.is_some_and(|d| now >= d) {
            return self.on_deadline(now);
        }
        if let Some(ask) = self.gate_tick(now) {
            return ask;
        }
        if self.phase != Phase::Progressing || self.timers.awaiting_verdict {
            return Vec::new();
        }
        let hold_over = self.timers.hold_until.is_some_and(|h| now >= h);
        if self.timers.next_analysis.is_some_and(|t| now >= t) {
            // A look due when the hold is over, after a pass, is the look at the hold's end
            // below, whichever timer fired first (an interval that divides the hold brings both
            // at once).
            self.timers.end_look = self.timers.last_passed && hold_over && !self.weights_pending;
            self.timers.awaiting_verdict = true;
            self.timers.next_analysis = Some(later(now, self.config.interval_of(self.step)));
            return vec![Command::Analyse];
        }
        if self.timers.last_passed && !self.weights_pending && hold_over {
            // The last pass came before the hold ended (an `analysis.interval` that does not
            // divide the hold): one more look, over the traffic since, decides, and its pass
            // advances (`on_verdict`). The step advanced on that earlier pass, so up to one
            // interval of the step's latest traffic went unjudged before more weight (session
            // 31's leftover).
            self.timers.last_passed = false;
            self.timers.awaiting_verdict = true;
            self.timers.end_look = true;
            self.timers.next_analysis = Some(later(now, self.config.interval_of(self.step)));
            return vec![Command::Analyse];
        }
        Vec::new()
    }
}

/// Whether a failed verdict says the preview fails hard: half or more of its requests in the
/// window failed, so it serves less than it fails and a rollback sends everything back at once.
pub(super) fn fails_hard(verdict: &Verdict) -> bool {
    verdict
        .findings
        .iter()
        .any(|f| f.metric == Metric::ErrorRate && f.value >= HARD_ERROR_RATE)
}

/// The preview error rate (fraction) from which a failed analysis is a hard failure.
const HARD_ERROR_RATE: f64 = 0.5;

/// Basis points as percent text: `2500` → `25%`.
pub(super) fn pct(bp: u32) -> String {
    crossfade_proxy::weight::Percent(bp).to_string()
}

/// A duration as the spec writes it.
pub(super) fn human(d: std::time::Duration) -> String {
    crate::spec::human(d)
}
