//! The pure rollout state machine: inputs and `now` in, the next phase and commands out.
//!
//! [`Rollout::step`] does no I/O and reads no clock: the runtime passes `now`, executes the returned
//! [`Command`]s through its seams and feeds the results back as [`Input`]s. It asks for a
//! [`Input::Tick`] at [`Rollout::next_wakeup`].
//!
//! # Phases
//! ```text
//! Pending → Provisioning → Progressing(step k) ⇄ Paused → Promoted → Retiring → Completed
//!                 └──────────────┴──────────────────┴─→ RollingBack → RolledBack
//!                                                    └─→ Aborting    → Aborted
//! ```
//!
//! # Semantics
//! - **Start** → `Provisioning`: [`Command::StartPreview`]; the preview must report
//!   [`Input::PreviewReady`] within `progress_deadline`. **No weight is ever requested before
//!   `PreviewReady`** (case C02).
//! - **A step** starts by requesting its weight ([`Command::SetWeights`]). Its clock starts only when
//!   [`Input::WeightsApplied`] reports exactly that weight: [`Command::OpenWindow`], the hold
//!   timer and the analysis timer start. Every analysis interval (default: the step's hold) it asks
//!   for [`Command::Analyse`] and waits for the [`Input::Verdict`] before asking again.
//! - **Verdicts**: fail → roll back at once. Inconclusive → the streak grows; at
//!   `max_inconclusive` in a row the rollout pauses or rolls back (`on_inconclusive`); an
//!   inconclusive window never advances a step, so a window without traffic never passes (C14).
//!   Pass → the streak resets. The step advances when its hold has elapsed **and** the most
//!   recent verdict of the step is a pass; with an inconclusive last window it keeps analysing.
//! - **Deadlines**: provisioning and each step (from requesting its weight to passing) must finish
//!   within `progress_deadline`, or the rollout rolls back with `DeadlineExceeded` (C09). Waits for
//!   the runtime after the point of no return (swap, drain, stop) re-issue their command instead.
//! - **Promotion**: after the last step (100%) passes → `Promoted`: [`Command::SwapRoles`];
//!   [`Input::RolesSwapped`] → `Retiring`: [`Command::DrainActive`] with a deadline of
//!   `drain_timeout`; [`Input::DrainDeadlinePassed`] (what the deadline cut) is an event only;
//!   [`Input::RetireHeld`] (the runtime keeps the drained former active while the promoted one
//!   cannot serve) is an event, and the wait has no deadline;
//!   [`Input::ActiveDrained`] → [`Command::StopActive`]; [`Input::ActiveStopped`] →
//!   `Completed`, and `active` becomes the former preview. Until then `active` names the slot
//!   being retired.
//! - **Rollback and abort**: [`Command::SetWeights`] with the preview weight that the active
//!   backend's capacity allows ([`rollback_preview_bp`]): 0 at once when the preview fails hard
//!   (crashed, failed readiness or its breaker, or half of its analysed requests failed), has no
//!   healthy endpoint, or no capacity was reported; else the preview keeps what the active backend
//!   cannot carry at 1.5 × its healthy share, and each [`Input::Capacity`] with more healthy
//!   active endpoints lowers it, until 0 (C02, rollback variant). The wait for capacity has no
//!   deadline and `message` says what it waits for (`aborting: blue at 50%, 1 of 3 endpoints
//!   healthy; ...`); an abort meanwhile is refused (it says so, and names `abort --force`), and
//!   [`OperatorCommand::ForceAbort`] ends the wait: 0 at once, the reason extended with
//!   `force-abort by operator: ...` and an `AbortForced` event. When 0 is applied, [`Command::StopPreview`] and the final phase (`RolledBack`
//!   with a reason, or `Aborted`), unless the latest [`Input::Capacity`] says the active backend
//!   cannot carry all the traffic: then, and on such a reading while 0 waits to be applied, the
//!   preview gets back what the rule allows of the weight it had when the undo began, and the
//!   wait goes on (not for a hard or forced undo; session 44). The runtime reports 0 applied only
//!   once the preview has drained, with the capacity read again just before, so that the rule
//!   holds up to the moment the preview is stopped. The active backend is never touched. Rollback causes: failed
//!   analysis, preview failed to become ready or exited (crash loop, C09), deadline, inconclusive
//!   streak with policy rollback, a restart before promotion.
//! - **Operator**: *abort* wins in every phase before `Promoted`, including over a pending promote
//!   (C10); after the swap it is refused (nothing left to abort). *Force-abort* is an abort that
//!   sends all traffic back at once whatever the active backend's capacity, also accepted during
//!   a rollback's capacity wait (see above). *Pause* stops the step's timers and
//!   deadline (allowed while provisioning or progressing, not while a promote is pending); *resume*
//!   re-opens the window and restarts the step's hold. *Promote* skips the remaining steps: 100%
//!   is requested, and once applied the rollout is `Promoted` without waiting for analysis. A
//!   promote while provisioning is **remembered** and acted on at `PreviewReady` (never before);
//!   a promote while paused also resumes. A refused command emits an event with reason
//!   `CommandRejected` and changes nothing, `message` included (the refusal is the command's
//!   answer, never part of the rollout's situation or outcome).
//! - **Every transition** emits [`Command::Persist`] first (write-ahead), then its actions, then
//!   one or more [`Command::Event`]s with a human note that includes verdict values and thresholds;
//!   `message` always describes the current situation.
//! - **Collecting evidence**: a sequential judge's verdict that is still gathering evidence is no
//!   transition (no Persist, no event) but answers one [`Command::Progress`] with the evidence so
//!   far, for a log line at each analysis interval; `message` says the same.
//! - **Stale inputs** (a verdict nobody asked for, a weight ack for a value no longer requested,
//!   anything after a terminal phase) are ignored and produce no command — except a
//!   [`Input::PreviewReady`] after `RolledBack`/`Aborted`, which answers [`Command::StopPreview`]
//!   again: a preview whose start outlived the rollout must not be left running (the runtime
//!   cancels a start still in progress at [`Command::StopPreview`]; this covers a start that
//!   finished in the same instant).
//! - **Clock**: [`Rollout::hold_clock`] tells, at a given `now`, when the current step's hold
//!   started, how much of it has elapsed and is left, and when the next analysis window closes.
//! - **Restart**: timers are not persisted. After loading a persisted rollout, the runtime sends
//!   [`Input::Restarted`]: before `Promoted` it rolls back; `Promoted`/`Retiring` re-issue the pending
//!   swap, drain or stop and go on to `Completed`. A runtime whose workloads outlive the controller
//!   (Kubernetes) sends [`Input::Reattached`] instead: the rollout resumes where it stood with fresh
//!   timers but what was left of its progress deadline: provisioning asks for the preview again (the driver adopts what exists), a step
//!   re-requests its pending weight or re-opens its window and restarts its hold, a pause stays
//!   paused, and the waits after promotion and during rollback are re-issued as for `Restarted`,
//!   by the deadline that was left (a whole one without). Its [`Reattach`] cause words the Event:
//!   `Restarted` for a first load, `Reloaded` (naming the error) for a reload by the runtime that
//!   had the rollout and dropped it after a failed attempt.

mod capacity;
mod clock;
mod gate;
mod machine;
mod operator;
mod promotion;
mod rollback;
mod status;
mod words;

#[cfg(test)]
mod tests;

use std::fmt;

use crossfade_proxy::weight::Slot;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::analysis::Verdict;
use crate::spec::{GatePoint, GatePolicy, RolloutConfig};

pub use capacity::{
    active_cap_bp, rollback_preview_bp, Capacities, Capacity, ROLLBACK_OVERLOAD_PERMILLE,
};
pub use clock::HoldClock;

/// Verdicts kept in [`Rollout::verdicts`]; older ones are dropped first.
pub const MAX_VERDICTS: usize = 50;

/// A rollout from the active slot to the preview slot, and everything needed to explain it.
///
/// Serialisable for the state store; the timers are not persisted (see [`Input::Restarted`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    /// Identifies this rollout among successive ones.
    pub id: u64,
    /// Steps, holds, analysis thresholds and deadlines.
    pub config: RolloutConfig,
    /// The slot serving before the rollout. Becomes the former preview at `Completed`.
    pub active: Slot,
    /// Where the rollout is.
    pub phase: Phase,
    /// Index of the current step in `config.steps` (0-based; messages count from 1).
    pub step: usize,
    /// The preview weight last requested, in basis points.
    pub preview_bp: u32,
    /// The preview weight last reported applied, in basis points.
    pub applied_bp: u32,
    /// Whether a [`Command::SetWeights`] for `preview_bp` awaits its [`Input::WeightsApplied`].
    pub weights_pending: bool,
    /// The routing table generation of the last applied weights.
    pub generation: u64,
    /// Whether the preview has passed readiness.
    pub preview_ready: bool,
    /// Whether an operator promote is pending (cancelled by abort).
    pub promote_requested: bool,
    /// Why the rollout is paused, while it is.
    pub pause: Option<PauseReason>,
    /// Why the rollout rolled back or was aborted, once it did.
    pub reason: Option<String>,
    /// The current situation for humans, e.g. `step 2/4 at 25%: holding 10s, last analysis passed
    /// (error rate 0% ≤ 1%, 812 requests)`.
    pub message: String,
    /// Inconclusive windows in a row at the current step.
    pub inconclusive_streak: u32,
    /// Whether the retired backend finished draining (`Retiring` only).
    pub active_drained: bool,
    /// Whether the drained former active is kept running because the promoted backend cannot
    /// serve ([`Input::RetireHeld`]; `Retiring` only). Absent (as in records written before it
    /// existed): false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retire_held: bool,
    /// The most recent verdicts, oldest first, at most [`MAX_VERDICTS`].
    pub verdicts: Vec<StepVerdict>,
    /// The webhook gate the rollout is halted at, while it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateWait>,
    /// How promotion gives the new version the active role; it decides the words of `message`
    /// and of the events from `Promoted` on. Absent (as in records written before it existed):
    /// [`Promotion::Swap`].
    #[serde(default, skip_serializing_if = "Promotion::is_swap")]
    pub promotion: Promotion,
    /// Refusals the gates answered while this process ran the rollout, every one counted (the
    /// same refusal asked again included; `after_completion` notifications excluded). Not
    /// persisted: `crossfade_rollout_gate_refusals_total` counts the increase, and a rollout loaded
    /// from a state file or Kubernetes status starts again at 0.
    #[serde(skip)]
    pub gate_refusals: u32,
    /// Whether the retired active workload is left running (static `endpoints`, which Crossfade
    /// did not start): the words say `blue left running`, not `blue stopped`. Absent (as in
    /// records written before it existed): false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub active_left_running: bool,
    /// Whether a rolled-back or aborted preview is left running (static `endpoints`): the words
    /// say `leaving green running (static endpoints)`, not `stopping green` (trial 30). Absent
    /// (as in records written before it existed): false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub preview_left_running: bool,
    /// Whether the rollback or abort in progress sends all traffic back at once because the
    /// preview fails hard (see [`rollback_preview_bp`]); false while none runs. Absent (as in
    /// records written before it existed): false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hard_undo: bool,
    /// The preview weight applied when the rollback or abort in progress began, in basis points:
    /// the share the preview gets back when the active backend cannot carry the traffic at the
    /// moment the preview is about to be stopped ([`Rollout::share_back`]; session 44). 0 while
    /// none runs. Not persisted: a rollout read back from its record (a restarted `crossfade
    /// run`, a Kubernetes reconcile that re-reads the status) has 0 here, and its undo stops the
    /// preview without giving a share back, as before session 44.
    #[serde(skip)]
    pub undo_from_bp: u32,
    /// Both backends' healthy endpoints as last reported ([`Input::Capacity`]); `None` until a
    /// runtime reports one (then a rollback sends all traffic back at once). A live reading, not
    /// persisted: a restarted runtime reports again.
    #[serde(skip)]
    pub capacity: Option<Capacities>,
    /// While the preview provisions, why it is not ready yet by its last readiness probe
    /// (`127.0.0.1:8081: last probe: status 503`), set by the runtime before each input; quoted
    /// when `progress_deadline` ends provisioning. Not persisted.
    #[serde(skip)]
    pub provision_probe: Option<String>,
    /// While the preview provisions, its ready replicas and the replicas it should have by the
    /// runtime's last reading ([`Input::PreviewReplicas`]; Kubernetes mode), which the message
    /// says (`provisioning green: 1 of 2 replicas ready; ...`). A live reading, not persisted.
    #[serde(skip)]
    pub preview_ready_replicas: Option<(u32, u32)>,
    #[serde(skip)]
    timers: Timers,
}

/// How a runtime carries out promotion ([`Command::SwapRoles`], [`Command::DrainActive`],
/// [`Command::StopActive`]); the machine's transitions are the same for both, only the words of
/// [`Rollout::message`] and of the events differ, so that they say what really runs.
///
/// Serialised with a `kind` tag: `{"kind": "in_place", "target": "web", ...}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Promotion {
    /// `crossfade run`: the preview slot becomes the active one, and the former active is drained
    /// and stopped (`completed: green is active`).
    #[default]
    Swap,
    /// Kubernetes mode: the target Deployment takes the preview's images and keeps the active role
    /// (backend `blue`), and the preview Deployment is drained and deleted (`completed: web runs
    /// crossfade-sample:v2 (active), preview web-green deleted`).
    InPlace {
        /// The target Deployment, e.g. `web`.
        target: String,
        /// The preview Deployment, e.g. `web-green`.
        preview: String,
        /// The images rolled out: the image alone for one container (`crossfade-sample:v2`),
        /// else `container=image` pairs (`app=web:v2, log=fluent:3`).
        images: String,
    },
}

/// Where a rollout is. Serialised by name (`"Progressing"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Phase {
    /// Created, not started.
    Pending,
    /// The preview is starting; no traffic goes to it.
    Provisioning,
    /// Stepping the preview's weight up and analysing it (see [`Rollout::step`]).
    Progressing,
    /// Stopped at a step until an operator resumes, promotes or aborts (see [`Rollout::pause`]).
    Paused,
    /// The preview won; the runtime is swapping roles.
    Promoted,
    /// Roles swapped; the former active backend is draining, then stopping.
    Retiring,
    /// Done: the former preview is active and the former active is stopped.
    Completed,
    /// Sending the preview's weight back to 0 after a failure; stops the preview next.
    RollingBack,
    /// Done: the preview got weight 0 and was stopped after a failure (see [`Rollout::reason`]).
    RolledBack,
    /// Sending the preview's weight back to 0 on an operator abort; stops the preview next.
    Aborting,
    /// Done: aborted by an operator; the preview got weight 0 and was stopped.
    Aborted,
}

/// Why a rollout is paused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PauseReason {
    /// An operator paused it.
    Operator,
    /// `max_inconclusive` windows in a row were inconclusive and the policy is `pause`.
    Inconclusive,
}

/// A halt at a webhook gate (see [`crate::spec::gates`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateWait {
    /// Where the rollout is halted.
    pub at: GatePoint,
    /// For `before_step`, the step about to start (0-based); else the current step.
    pub step: usize,
    /// The last refusal, e.g. `gate approval: status 403: not yet`; `None` while the first ask runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
}

/// What the gates at one point answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GateAnswer {
    /// Every gate at the point answered 2xx.
    Approved {
        /// Human note, e.g. `gate load-test: status 200`.
        note: String,
    },
    /// A gate refused (non-2xx, timeout, no connection); later gates at the point were not asked.
    Refused {
        /// The refusing gate's name.
        gate: String,
        /// Why, e.g. `status 403: not approved yet`, `timed out after 10s`.
        reason: String,
        /// What the refusing gate's `on_reject` says to do.
        policy: GatePolicy,
    },
}

/// A verdict and the step it judged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepVerdict {
    /// Step index (0-based).
    pub step: usize,
    /// Preview weight during the window, in basis points.
    pub preview_bp: u32,
    /// The verdict.
    pub verdict: Verdict,
}

/// What happened, as reported to [`Rollout::step`].
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// Begin the rollout.
    Start,
    /// The preview passed readiness.
    PreviewReady,
    /// The preview could not be started or did not become ready.
    PreviewFailed {
        /// Human reason, e.g. `instance 2 not ready after 30s`.
        reason: String,
    },
    /// A preview process exited (crash).
    PreviewExited {
        /// Human reason, e.g. `instance 1 exited with code 1`.
        reason: String,
    },
    /// The proxy published weights: the preview slot has `preview_bp`.
    WeightsApplied {
        /// The preview's applied weight in basis points.
        preview_bp: u32,
        /// The routing table generation that carries it.
        generation: u64,
    },
    /// The verdict of the window closed by the last [`Command::Analyse`].
    Verdict(Verdict),
    /// A timer may have expired; sent at [`Rollout::next_wakeup`] (spurious ticks are harmless).
    Tick,
    /// The roles were swapped in one proxy table generation ([`Command::SwapRoles`] done).
    RolesSwapped,
    /// The former active backend's drain deadline passed while something still held it: its
    /// upgraded connections that were still open have been closed (1001 "going away" for
    /// WebSockets). Sent just before [`Input::ActiveDrained`]; only reported as an event.
    DrainDeadlinePassed {
        /// Requests still in flight at the deadline.
        in_flight: u64,
        /// Upgraded connections (WebSocket and other HTTP/1.1 upgrades) closed at the deadline.
        closed_upgraded: u64,
    },
    /// The former active backend's in-flight requests and upgraded connections reached 0, or its
    /// drain deadline passed, and its endpoints left the table.
    ActiveDrained,
    /// The former active backend has drained, but the runtime keeps it (its endpoints, as the
    /// route's backup, and its processes) because the promoted backend has no instance that can
    /// serve; it sends [`Input::ActiveDrained`] once the promoted backend can serve again. An
    /// event and the message say so; the hold has no deadline of its own (`Retiring` only).
    RetireHeld,
    /// The former active workload stopped.
    ActiveStopped,
    /// An operator command.
    Operator(OperatorCommand),
    /// The rollout is aborted for a reason other than an operator's command ([`AbortCause`]):
    /// as [`OperatorCommand::Abort`] before promotion, with the cause in its reason and Events;
    /// ignored (no `CommandRejected`) where an abort does not apply.
    Abort(AbortCause),
    /// The workload the rollout promotes into was changed by someone else under the rollout
    /// (Kubernetes: the target Deployment's pod template, outside Crossfade's management): before
    /// the roles swap the rollout rolls back (all traffic to the active backend, preview stopped)
    /// rather than overwrite that change; afterwards, and once ended, it is ignored.
    TargetChanged {
        /// Human reason, naming the images, e.g. `deployment web's pod template changed ...`.
        reason: String,
    },
    /// The rollout was loaded from the state store after a restart (timers were lost).
    Restarted,
    /// The answer to [`Command::AskGates`].
    GateAnswered {
        /// The point asked.
        at: GatePoint,
        /// The step asked for.
        step: usize,
        /// What the gates said.
        answer: GateAnswer,
    },
    /// The rollout was loaded after a controller restart whose workloads kept running (Kubernetes:
    /// the preview Deployment outlives the controller): resume where it stood, with fresh timers
    /// but for the progress deadline, which keeps what was left of it.
    Reattached {
        /// What was left of the progress deadline of the phase or step it stood in (0 when it
        /// passed while no controller ran; at most `progress_deadline`), from the wall-clock
        /// deadline its record kept; `None` (a record of an older version, or none kept) gives
        /// a whole `progress_deadline`. Kept, a controller restarting more often than the deadline
        /// (OOM-killed, leader churn) never rolled back a preview that never became ready (cases31).
        deadline_left: Option<std::time::Duration>,
        /// Why it was loaded: the runtime's first load of it (`Restarted`), or a reload by the
        /// runtime that had it, after a failed attempt (`Reloaded`); it decides the Event.
        cause: Reattach,
    },
    /// While the preview provisions, how many of its replicas are ready (Kubernetes: the preview
    /// Deployment's `readyReplicas` of its `spec.replicas`). No transition: kept for the message,
    /// which says it while provisioning.
    PreviewReplicas {
        /// Replicas ready.
        ready: u32,
        /// Replicas it should have.
        desired: u32,
    },
    /// Both backends' healthy endpoints changed (the runtime reports each change, and a reading
    /// before an operator command). Kept in every phase; while a rollback or abort waits for the
    /// active backend's capacity it may lower the preview's weight ([`rollback_preview_bp`]).
    Capacity(Capacities),
}

/// Why a rollout was loaded again ([`Input::Reattached`]), which decides how its Event says so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reattach {
    /// The runtime loaded it for the first time: the controller (re)started, or took over from
    /// another replica. Event `Restarted`: `crossfade restarted at step 1/4 (5%): resuming with
    /// fresh timers`, or after promotion `still waiting for the role swap after a restart: asking
    /// again`.
    Restart,
    /// The runtime that had it in memory dropped it after an attempt that failed (Kubernetes: a
    /// reconcile whose error is `error`, in words) and read it back from its store; nothing
    /// restarted. Event `Reloaded`: `reloaded from status after a failed reconcile (<error>), not
    /// a controller restart: at step 1/4 (5%): resuming with fresh timers`, or after promotion
    /// `...: still waiting for the role swap: asking again`. Before (session 40) the machine said
    /// `Restarted` and the runtime rewrote its note.
    Reload {
        /// What the failed attempt said, e.g. `deployment default/web: patch images: 403
        /// Forbidden: ...`.
        error: String,
    },
}

/// Why a rollout is aborted when no operator asked for it (Kubernetes mode); see [`Input::Abort`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AbortCause {
    /// A newer spec (`metadata.generation` of the TrafficShift) replaces the rollout's:
    /// `superseded by spec generation 3`.
    Superseded {
        /// The new spec generation.
        generation: i64,
    },
    /// The TrafficShift was deleted: `TrafficShift deleted`.
    Deleted,
}

impl AbortCause {
    /// The cause in words, as the rollout's reason starts: `superseded by spec generation 3`,
    /// `TrafficShift deleted` (an operator's abort says `aborted by operator`).
    pub fn words(&self) -> String {
        match self {
            AbortCause::Superseded { generation } => {
                format!("superseded by spec generation {generation}")
            }
            AbortCause::Deleted => "TrafficShift deleted".into(),
        }
    }
}

/// A one-shot operator command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OperatorCommand {
    /// Stop at the current step (timers stop, weights stay).
    Pause,
    /// Continue a paused rollout: re-open the window, restart the step's hold.
    Resume,
    /// Skip the remaining steps: 100% to the preview, then promote.
    Promote,
    /// Send all traffic back to the active backend and stop the preview.
    Abort,
    /// `force-abort` (`crossfade abort --force`): as [`OperatorCommand::Abort`], but all traffic
    /// goes back at once whatever the active backend's capacity; during a rollback or abort that
    /// holds traffic on the preview until the active backend can carry it, it ends that wait. The
    /// operator's exit from a long capacity wait (it may overload the active backend).
    #[serde(rename = "force-abort")]
    ForceAbort,
}

impl OperatorCommand {
    /// The command's one name, as the admin API's path (`POST /rollout/force-abort`), the
    /// command annotation (`crossfade.dev/force-abort`) and refusals (`force-abort rejected: ...`)
    /// spell it: `pause`, `resume`, `promote`, `abort`, `force-abort`.
    pub fn as_str(self) -> &'static str {
        match self {
            OperatorCommand::Pause => "pause",
            OperatorCommand::Resume => "resume",
            OperatorCommand::Promote => "promote",
            OperatorCommand::Abort => "abort",
            OperatorCommand::ForceAbort => "force-abort",
        }
    }
}

/// The machine's decision on one operator command, as the admin API answers it (200 when
/// `accepted`, 409 otherwise).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The command decided on.
    pub command: OperatorCommand,
    /// The rollout it was given to.
    pub rollout: u64,
    /// Whether the machine acted on it; `false` means it changed nothing.
    pub accepted: bool,
    /// The phase right after the decision (e.g. `Paused`, `Aborting`).
    pub phase: Phase,
    /// Accepted: where the rollout stands now. Refused: why (`"pause rejected: already paused"`).
    pub message: String,
}

impl Decision {
    /// The decision that `commands`, returned by [`Rollout::step`] for `Input::Operator(command)`,
    /// express: refused when they are exactly one `CommandRejected` event (see [`Rollout::step`]).
    pub fn of(command: OperatorCommand, rollout: &Rollout, commands: &[Command]) -> Decision {
        let refusal = match commands {
            [Command::Event {
                reason: "CommandRejected",
                message,
            }] => Some(message.clone()),
            _ => None,
        };
        Decision {
            command,
            rollout: rollout.id,
            accepted: refusal.is_none(),
            phase: rollout.phase,
            message: refusal.unwrap_or_else(|| rollout.message.clone()),
        }
    }
}

/// What the runtime must do, in order, after a [`Rollout::step`].
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Start the preview workload; answer [`Input::PreviewReady`] or [`Input::PreviewFailed`].
    StartPreview,
    /// Publish route weights: the preview slot gets `preview_bp`, the active slot the rest; answer
    /// [`Input::WeightsApplied`].
    SetWeights {
        /// The preview's weight in basis points (0..=10000).
        preview_bp: u32,
    },
    /// Snapshot both backends' counters: an analysis window starts now.
    OpenWindow,
    /// Close the window, judge it, answer [`Input::Verdict`], and open the next window.
    Analyse,
    /// Make the preview the active slot in one proxy table generation, with 100% on it; answer
    /// [`Input::RolesSwapped`].
    SwapRoles,
    /// Undo the role swap in one proxy table generation: the former active backend, kept running
    /// as the route's backup ([`Input::RetireHeld`]), is the active slot again with 100% on it.
    /// No answer; [`Command::StopPreview`] follows (an operator's abort of a held retirement).
    RevertSwap,
    /// Wait until the former active backend has no request in flight and no upgraded connection
    /// open, or `deadline` (then close its upgraded connections), then remove its endpoints from the
    /// table; answer [`Input::DrainDeadlinePassed`] when the deadline passed, then
    /// [`Input::ActiveDrained`].
    DrainActive {
        /// When to stop waiting for in-flight requests and upgraded connections.
        deadline: Instant,
    },
    /// Stop the former active workload; answer [`Input::ActiveStopped`].
    StopActive,
    /// Stop the preview workload (its weight 0 is applied). Must be harmless when nothing runs.
    StopPreview,
    /// POST to every gate configured at `at`, in order, until one refuses; answer
    /// [`Input::GateAnswered`].
    AskGates {
        /// Which gates.
        at: GatePoint,
        /// The step it is asked for (for `before_step`, the step about to start; 0-based).
        step: usize,
    },
    /// Write the rollout to the state store.
    Persist,
    /// Say how the analysis is going when no transition happens: a sequential judge still
    /// collecting evidence, at each analysis interval. An info log line (route, rollout, step and
    /// the numbers as fields), no event: one per interval would flood Kubernetes Events and the
    /// event list. [`Rollout::message`] already says the same.
    Progress {
        /// `analysis: collecting evidence, e-value 12 of needed 20 (fail 0.80 of 300), 2050
        /// requests on green`.
        message: String,
        /// The numbers behind it.
        evidence: crate::analysis::EvidenceSoFar,
    },
    /// Publish an event (log line, Kubernetes Event).
    ///
    /// Reasons: `Provisioning`, `PreviewReady`, `StepStarted`, `WeightsApplied`, `AnalysisPassed`,
    /// `AnalysisFailed`, `AnalysisInconclusive`, `Paused`, `Resumed`, `PromoteRequested`,
    /// `Promoted`, `Retiring`, `DrainDeadlinePassed`, `RetireHeld`, `ActiveDrained`, `Completed`, `PreviewFailed`,
    /// `PreviewExited`, `DeadlineExceeded`, `Aborting`, `Aborted`, `RolledBack`, `Restarted`,
    /// `Reloaded`, `CommandRejected`, `GateApproved`, `GateRejected`, `CapacityChanged`, `AbortForced`.
    Event {
        /// CamelCase reason (see above).
        reason: &'static str,
        /// Human note, with values and thresholds where a verdict decided.
        message: String,
    },
}

/// The rollout's timers: absolute instants, never persisted.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Timers {
    /// When the current phase or step must have finished.
    deadline: Option<Instant>,
    /// When the current step's hold started: its weight was applied, or it was resumed.
    hold_started: Option<Instant>,
    /// When the current step's hold ends.
    hold_until: Option<Instant>,
    /// When the current analysis window closes.
    next_analysis: Option<Instant>,
    /// Whether an [`Command::Analyse`] awaits its verdict.
    awaiting_verdict: bool,
    /// Whether the most recent verdict since the window (re)opened passed.
    last_passed: bool,
    /// Whether the analysis awaited is the extra look at the end of a hold whose last pass came
    /// before it ended ([`Rollout::on_tick`]): its failure rolls back, its pass advances, and a
    /// window too thin to judge leaves the step's earlier pass standing.
    end_look: bool,
    /// When to ask the gate the rollout is halted at again.
    gate_retry: Option<Instant>,
}

// === impl Phase ===

impl Phase {
    /// The phase's name, as serialised and used as a metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Provisioning => "Provisioning",
            Phase::Progressing => "Progressing",
            Phase::Paused => "Paused",
            Phase::Promoted => "Promoted",
            Phase::Retiring => "Retiring",
            Phase::Completed => "Completed",
            Phase::RollingBack => "RollingBack",
            Phase::RolledBack => "RolledBack",
            Phase::Aborting => "Aborting",
            Phase::Aborted => "Aborted",
        }
    }

    /// The phase in words for messages to people (`"rolled back"`, `"rolling back"`), where
    /// [`Phase::as_str`] is the API name (`"RolledBack"`).
    pub fn words(self) -> &'static str {
        match self {
            Phase::Pending => "pending",
            Phase::Provisioning => "provisioning",
            Phase::Progressing => "progressing",
            Phase::Paused => "paused",
            Phase::Promoted => "promoted",
            Phase::Retiring => "retiring",
            Phase::Completed => "completed",
            Phase::RollingBack => "rolling back",
            Phase::RolledBack => "rolled back",
            Phase::Aborting => "aborting",
            Phase::Aborted => "aborted",
        }
    }

    /// Whether the rollout is over: `Completed`, `RolledBack` or `Aborted`.
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Completed | Phase::RolledBack | Phase::Aborted)
    }
}

// === impl Promotion ===

impl Promotion {
    /// Whether this is [`Promotion::Swap`] (the default, left out when serialised).
    pub fn is_swap(&self) -> bool {
        matches!(self, Promotion::Swap)
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl Rollout ===

impl Rollout {
    /// A `Pending` rollout from `active` to the other slot. `config` should be validated.
    pub fn new(id: u64, config: RolloutConfig, active: Slot) -> Rollout {
        let mut r = Rollout {
            id,
            config,
            active,
            phase: Phase::Pending,
            step: 0,
            preview_bp: 0,
            applied_bp: 0,
            weights_pending: false,
            generation: 0,
            preview_ready: false,
            promote_requested: false,
            pause: None,
            reason: None,
            message: String::new(),
            inconclusive_streak: 0,
            active_drained: false,
            retire_held: false,
            verdicts: Vec::new(),
            gate: None,
            promotion: Promotion::Swap,
            gate_refusals: 0,
            active_left_running: false,
            preview_left_running: false,
            hard_undo: false,
            undo_from_bp: 0,
            capacity: None,
            provision_probe: None,
            preview_ready_replicas: None,
            timers: Timers::default(),
        };
        r.message = r.situation();
        r
    }

    /// This rollout with `promotion`'s words (see [`Promotion`]); `message` is refreshed.
    pub fn with_promotion(mut self, promotion: Promotion) -> Rollout {
        self.set_promotion(promotion);
        self
    }

    /// Sets how promotion is carried out, for its words (see [`Promotion`]), and refreshes
    /// `message`. Changes no phase, weight or timer.
    pub fn set_promotion(&mut self, promotion: Promotion) {
        self.promotion = promotion;
        self.message = self.situation();
    }

    /// The slot being rolled out to: the one that is not `active`.
    pub fn preview(&self) -> Slot {
        self.active.other()
    }

    /// The index (0 for the first) of the step the rollout is at once one has started, or `None`
    /// before: while the preview provisions, and for a rollout aborted or rolled back then. A step
    /// starts when the preview is ready. A TrafficShift's `status.step` and
    /// `crossfade_rollout_step` (0 then) both follow this, so that `crossfade run` and
    /// `crossfade controller --kube` show the same step (until session 40 the metric said step 1
    /// in both while the TrafficShift's status showed none).
    pub fn started_step(&self) -> Option<usize> {
        self.preview_ready.then_some(self.step)
    }

    /// Whether the rollout is over (see [`Phase::is_terminal`]).
    pub fn is_terminal(&self) -> bool {
        self.phase.is_terminal()
    }

    /// When the current phase or step must have finished (its progress deadline), if it has one:
    /// what a runtime keeps, as wall-clock time, for [`Input::Reattached`] after a restart.
    pub fn deadline(&self) -> Option<Instant> {
        self.timers.deadline
    }

    /// When the runtime must send [`Input::Tick`] next; `None` while nothing is timed (pending,
    /// paused, waiting for a verdict with no deadline, terminal).
    pub fn next_wakeup(&self) -> Option<Instant> {
        let t = &self.timers;
        let analysis = t.next_analysis.filter(|_| !t.awaiting_verdict);
        let hold = t
            .hold_until
            .filter(|_| t.last_passed && !t.awaiting_verdict);
        [t.deadline, analysis, hold, t.gate_retry]
            .into_iter()
            .flatten()
            .min()
    }
}
