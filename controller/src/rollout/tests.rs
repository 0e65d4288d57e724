//! State machine tests: the normal flow, analysis, deadlines and stale inputs. Operator commands and
//! restarts are in `tests/operator.rs`.

mod analysis;
mod capacity;
mod clock;
mod failure;
mod gates;
mod operator;

use std::time::Duration;

use crossfade_proxy::weight::{Percent, Slot};
use tokio::time::Instant;

use super::*;
use crate::analysis::{Judge, Outcome, ThresholdJudge, Verdict, Window};
use crate::spec::{InconclusivePolicy, StepConfig};

/// A rollout under test with its own clock, starting at `t0`.
pub(super) struct Harness {
    pub r: Rollout,
    pub now: Instant,
    pub log: Vec<Command>,
}

const SECOND: Duration = Duration::from_secs(1);

/// Steps 10/50/100, hold 10s (analysis every 10s), deadline 60s, drain 5s, 3 inconclusive max.
pub(super) fn config() -> RolloutConfig {
    let mut c = RolloutConfig {
        steps: [1000, 5000, 10_000]
            .into_iter()
            .map(|bp| StepConfig {
                weight: Percent(bp),
                hold: None,
            })
            .collect(),
        hold: 10 * SECOND,
        progress_deadline: 60 * SECOND,
        drain_timeout: 5 * SECOND,
        ..RolloutConfig::default()
    };
    c.analysis.max_inconclusive = 3;
    c
}

impl Harness {
    pub fn new(config: RolloutConfig) -> Harness {
        Harness {
            r: Rollout::new(7, config, Slot::Blue),
            now: Instant::now(),
            log: Vec::new(),
        }
    }

    pub fn send(&mut self, input: Input) -> Vec<Command> {
        let out = self.r.step(input, self.now);
        self.log.extend(out.iter().cloned());
        out
    }

    pub fn wait(&mut self, d: Duration) -> Vec<Command> {
        self.now += d;
        self.send(Input::Tick)
    }

    pub fn applied(&mut self, bp: u32) -> Vec<Command> {
        self.send(Input::WeightsApplied {
            preview_bp: bp,
            generation: u64::from(bp) + 1,
        })
    }

    pub fn op(&mut self, command: OperatorCommand) -> Vec<Command> {
        self.send(Input::Operator(command))
    }

    /// Started, preview ready, step 1's weight applied: holding at 10%.
    pub fn holding() -> Harness {
        let mut h = Harness::new(config());
        h.send(Input::Start);
        h.send(Input::PreviewReady);
        h.applied(1000);
        h
    }

    /// Waits one analysis interval and answers the Analyse with `outcome`.
    pub fn window(&mut self, outcome: Outcome) -> Vec<Command> {
        let tick = self.wait(10 * SECOND);
        assert_eq!(tick, [Command::Analyse], "phase {:?}", self.r.phase);
        self.send(Input::Verdict(verdict(outcome)))
    }
}

pub(super) fn verdict(outcome: Outcome) -> Verdict {
    Verdict {
        outcome,
        findings: Vec::new(),
        summary: format!("test {outcome}"),
        checks: Vec::new(),
    }
}

/// The commands that are not Persist or Event.
pub(super) fn actions(out: &[Command]) -> Vec<Command> {
    out.iter()
        .filter(|c| !matches!(c, Command::Persist | Command::Event { .. }))
        .cloned()
        .collect()
}

/// The event reasons, in order.
pub(super) fn reasons(out: &[Command]) -> Vec<&'static str> {
    out.iter()
        .filter_map(|c| match c {
            Command::Event { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect()
}

pub(super) fn set(bp: u32) -> Command {
    Command::SetWeights { preview_bp: bp }
}

#[test]
fn happy_path_reaches_completed_with_exactly_the_expected_commands() {
    let mut h = Harness::new(config());
    let t0 = h.now;
    let mut steps: Vec<(Vec<Command>, Vec<&str>)> = Vec::new();
    let mut record = |out: Vec<Command>| steps.push((actions(&out), reasons(&out)));
    record(h.send(Input::Start));
    record(h.send(Input::PreviewReady));
    for bp in [1000, 5000, 10_000] {
        record(h.applied(bp));
        record(h.wait(10 * SECOND));
        record(h.send(Input::Verdict(verdict(Outcome::Pass))));
    }
    record(h.send(Input::RolesSwapped));
    record(h.send(Input::ActiveDrained));
    record(h.send(Input::ActiveStopped));
    let drain_deadline = t0 + 30 * SECOND + 5 * SECOND;
    let expected: Vec<(Vec<Command>, Vec<&str>)> = vec![
        (vec![Command::StartPreview], vec!["Provisioning"]),
        (vec![set(1000)], vec!["StepStarted"]),
        (vec![Command::OpenWindow], vec!["WeightsApplied"]),
        (vec![Command::Analyse], vec![]),
        (vec![set(5000)], vec!["AnalysisPassed", "StepStarted"]),
        (vec![Command::OpenWindow], vec!["WeightsApplied"]),
        (vec![Command::Analyse], vec![]),
        (vec![set(10_000)], vec!["AnalysisPassed", "StepStarted"]),
        (vec![Command::OpenWindow], vec!["WeightsApplied"]),
        (vec![Command::Analyse], vec![]),
        (vec![Command::SwapRoles], vec!["AnalysisPassed", "Promoted"]),
        (
            vec![Command::DrainActive {
                deadline: drain_deadline,
            }],
            vec!["Retiring"],
        ),
        (vec![Command::StopActive], vec!["ActiveDrained"]),
        (vec![], vec!["Completed"]),
    ];
    assert_eq!(steps, expected);
    assert_eq!(h.r.phase, Phase::Completed);
    assert_eq!(h.r.active, Slot::Green, "the former preview is active");
    assert!(h.r.is_terminal());
    assert_eq!(h.r.next_wakeup(), None);
    assert_eq!(h.r.message, "completed: green is active");
}

/// The event notes of `out`, by reason.
fn notes(out: &[Command]) -> Vec<(&'static str, String)> {
    out.iter()
        .filter_map(|c| match c {
            Command::Event { reason, message } => Some((*reason, message.clone())),
            _ => None,
        })
        .collect()
}

/// A Kubernetes-mode rollout (in-place promotion of deployment `web` to `crossfade-sample:v2`,
/// preview `web-green`), started and its preview ready.
fn in_place() -> Harness {
    let promotion = Promotion::InPlace {
        target: "web".into(),
        preview: "web-green".into(),
        images: "crossfade-sample:v2".into(),
    };
    let mut h = Harness::new(config());
    h.r = Rollout::new(7, config(), Slot::Blue).with_promotion(promotion);
    h.send(Input::Start);
    h.send(Input::PreviewReady);
    h
}

#[test]
fn an_in_place_promotion_says_the_target_runs_the_new_image_and_the_preview_is_deleted() {
    // Kubernetes mode (trial 7, G2): the target keeps the active role and takes the images; the
    // preview is drained and deleted. The same transitions as a swap, in the words of what runs.
    let mut h = in_place();
    for bp in [1000, 5000] {
        h.applied(bp);
        h.window(Outcome::Pass);
    }
    h.applied(10_000);
    let out = h.window(Outcome::Pass);
    assert!(notes(&out).contains(&(
        "Promoted",
        "green promoted after the last step passed: web takes crossfade-sample:v2, then all traffic goes back to it"
            .into()
    )), "{out:?}");
    assert_eq!(
        h.r.message,
        "promoted: web is rolling out crossfade-sample:v2; web-green serves meanwhile"
    );
    let refused = h.op(OperatorCommand::Abort);
    assert_eq!(
        notes(&refused),
        [(
            "CommandRejected",
            "abort rejected: too late: green is already promoted and web takes \
             crossfade-sample:v2, nothing to abort; once this rollout has completed, roll the \
             previous image out again (annotation crossfade.dev/image) to go back"
                .to_string()
        )]
    );
    let out = h.send(Input::RolesSwapped);
    assert_eq!(
        notes(&out),
        [(
            "Retiring",
            "web runs crossfade-sample:v2 (active); draining preview web-green's in-flight \
             requests and upgraded connections (up to 5s)"
                .to_string()
        )]
    );
    assert_eq!(
        h.r.message,
        "web runs crossfade-sample:v2 (active); draining preview web-green"
    );
    let out = h.send(Input::ActiveDrained);
    assert_eq!(
        notes(&out),
        [(
            "ActiveDrained",
            "preview web-green drained; deleting it".to_string()
        )]
    );
    assert_eq!(
        h.r.message,
        "web runs crossfade-sample:v2 (active); deleting preview web-green"
    );
    let out = h.send(Input::ActiveStopped);
    let done = "web runs crossfade-sample:v2 (active), preview web-green deleted";
    assert_eq!(
        notes(&out),
        [("Completed", format!("rollout completed: {done}"))]
    );
    assert_eq!(h.r.phase, Phase::Completed);
    assert_eq!(h.r.message, format!("completed: {done}"));
    assert!(!h.r.message.contains("green is active"), "{}", h.r.message);
}

/// Kubernetes mode (session 32's leftover): a preview kept after its drain because the target
/// has no ready endpoint was said only in a WARN log line, and the Retiring deadline asked for
/// the drain again with `DeadlineExceeded` every drainTimeout + progressDeadline. The hold is
/// said in the Kubernetes words, has no deadline, and an abort is refused: the target already
/// runs the new images and the preview is the route's backup (deleting it, as an abort of a
/// held swap stops green, would leave nothing that can serve).
#[test]
fn a_preview_kept_after_its_drain_in_kubernetes_is_said_so_not_asked_again_and_not_aborted() {
    let mut h = in_place();
    for bp in [1000, 5000, 10_000] {
        h.applied(bp);
        h.window(Outcome::Pass);
    }
    h.send(Input::RolesSwapped);
    let out = h.send(Input::RetireHeld);
    assert_eq!(
        notes(&out),
        [(
            "RetireHeld",
            "preview web-green drained but is kept and takes the route's requests as its backup: \
             deployment web has no ready endpoint; web-green is deleted once web has one"
                .to_string()
        )]
    );
    assert_eq!(
        h.r.message,
        "web runs crossfade-sample:v2 (active) but has no ready endpoint; preview web-green \
         drained and is kept as the route's backup until web has one"
    );
    for _ in 0..10 {
        let out = h.wait(60 * SECOND);
        assert!(out.is_empty(), "nothing to ask again while held: {out:?}");
    }
    let refused = h.op(OperatorCommand::Abort);
    assert!(
        matches!(notes(&refused).as_slice(), [(reason, why)] if *reason == "CommandRejected" && why.contains("too late")),
        "{refused:?}"
    );
    assert!(!refused.contains(&Command::StopPreview), "{refused:?}");
    assert_eq!(h.r.phase, Phase::Retiring);
    let out = h.send(Input::ActiveDrained);
    assert!(out.contains(&Command::StopActive), "{out:?}");
    assert_eq!(
        h.r.message,
        "web runs crossfade-sample:v2 (active); deleting preview web-green"
    );
}

/// A controller restart during such a hold (the record keeps `retire_held`) re-issues the drain
/// as after any restart, and the hold it then observes again is taken again: no deadline, no
/// `DeadlineExceeded` every drainTimeout + progressDeadline. The restored record said
/// `retire_held` already, so the machine ignored the `RetireHeld` the cluster sent again and
/// kept the re-issued drain's deadline (check33).
#[test]
fn a_preview_kept_after_its_drain_is_held_again_after_a_controller_restart() {
    let promotion = Promotion::InPlace {
        target: "web".into(),
        preview: "web-green".into(),
        images: "crossfade-sample:v2".into(),
    };
    let mut h = Harness::new(config());
    h.r = Rollout::new(7, config(), Slot::Blue).with_promotion(promotion);
    h.send(Input::Start);
    h.send(Input::PreviewReady);
    for bp in [1000, 5000, 10_000] {
        h.applied(bp);
        h.window(Outcome::Pass);
    }
    h.send(Input::RolesSwapped);
    h.send(Input::RetireHeld);
    let saved = serde_json::to_string(&h.r).unwrap();
    h.r = serde_json::from_str(&saved).unwrap();
    let out = h.send(Input::Reattached {
        deadline_left: None,
        cause: crate::rollout::Reattach::Restart,
    });
    assert!(
        matches!(actions(&out).as_slice(), [Command::DrainActive { .. }]),
        "{out:?}"
    );
    let out = h.send(Input::RetireHeld);
    assert_eq!(reasons(&out), ["RetireHeld"], "{out:?}");
    assert!(h.r.retire_held);
    for _ in 0..10 {
        let out = h.wait(60 * SECOND);
        assert!(out.is_empty(), "nothing to ask again while held: {out:?}");
    }
    assert_eq!(h.r.phase, Phase::Retiring);
}

#[test]
fn a_swap_promotion_keeps_its_words_and_is_left_out_of_the_serialised_rollout() {
    let mut h = Harness::holding();
    h.window(Outcome::Pass);
    h.applied(5000);
    h.window(Outcome::Pass);
    h.applied(10_000);
    let out = h.window(Outcome::Pass);
    assert!(
        notes(&out).contains(&(
            "Promoted",
            "green promoted after the last step passed: swapping roles".into()
        )),
        "{out:?}"
    );
    h.send(Input::RolesSwapped);
    assert_eq!(h.r.message, "green is active; draining blue");
    h.send(Input::ActiveDrained);
    let out = h.send(Input::ActiveStopped);
    assert_eq!(
        notes(&out),
        [(
            "Completed",
            "rollout completed: green is active, blue stopped".to_string()
        )]
    );
    let json = serde_json::to_value(&h.r).expect("json");
    assert!(json.get("promotion").is_none(), "{json}");
    let back: Rollout = serde_json::from_value(json).expect("reads back");
    assert_eq!(back.promotion, Promotion::Swap);
}

/// Trial 32 (check32): while the runtime keeps the drained former active because the promoted
/// backend cannot serve, the status said `draining blue` and, at each drain-plus-progress
/// deadline, `still waiting for the old active backend to drain: asking again`, though blue had
/// drained and was kept on purpose. The hold is said, in an event and in the message, and has no
/// deadline of its own: the runtime sends `ActiveDrained` once the promoted backend can serve.
#[test]
fn a_drained_active_kept_for_a_promoted_backend_that_cannot_serve_is_said_so_and_not_asked_again() {
    let mut h = Harness::holding();
    h.window(Outcome::Pass);
    h.applied(5000);
    h.window(Outcome::Pass);
    h.applied(10_000);
    h.window(Outcome::Pass);
    h.send(Input::RolesSwapped);
    let out = h.send(Input::RetireHeld);
    assert_eq!(
        notes(&out),
        [(
            "RetireHeld",
            "blue drained but is kept running and takes green's requests: green has no instance \
             that can serve now; blue is retired once green can serve again (`crossfade abort` \
             gives all traffic back to blue and stops green)"
                .to_string()
        )]
    );
    assert_eq!(
        h.r.message,
        "green is active; blue drained and is kept running as its backup: green has no instance \
         that can serve"
    );
    assert!(h.r.retire_held);
    assert!(h.send(Input::RetireHeld).is_empty(), "said once");
    for _ in 0..10 {
        let out = h.wait(60 * SECOND);
        assert!(out.is_empty(), "nothing to ask again while held: {out:?}");
    }
    let out = h.send(Input::ActiveDrained);
    assert!(out.contains(&Command::StopActive), "{out:?}");
    assert!(!h.r.retire_held);
    assert_eq!(h.r.message, "green is active; stopping blue");
    h.send(Input::ActiveStopped);
    assert_eq!(h.r.phase, Phase::Completed);
}

#[test]
fn a_static_active_is_said_to_be_left_running_not_stopped() {
    // Trial finding H16: static endpoints are retired by draining only, and left running.
    let mut h = Harness::holding();
    h.r.active_left_running = true;
    h.window(Outcome::Pass);
    h.applied(5000);
    h.window(Outcome::Pass);
    h.applied(10_000);
    h.window(Outcome::Pass);
    h.send(Input::RolesSwapped);
    let out = h.send(Input::ActiveDrained);
    assert_eq!(
        notes(&out),
        [(
            "ActiveDrained",
            "blue drained; leaving it running (static endpoints)".to_string()
        )]
    );
    let out = h.send(Input::ActiveStopped);
    let done = "green is active, blue left running (static endpoints)";
    assert_eq!(
        notes(&out),
        [("Completed", format!("rollout completed: {done}"))]
    );
    assert!(!h.r.message.contains("stopped"), "{}", h.r.message);
    let json = serde_json::to_value(&h.r).expect("json");
    assert_eq!(json["active_left_running"], true, "{json}");
}

#[test]
fn every_transition_persists_first_and_emits_an_event() {
    let mut h = Harness::holding();
    for out in [
        h.window(Outcome::Pass),
        h.applied(5000),
        h.op(OperatorCommand::Pause),
    ] {
        assert_eq!(out.first(), Some(&Command::Persist), "{out:?}");
        assert!(matches!(out.last(), Some(Command::Event { .. })), "{out:?}");
    }
}

/// Session 42: a preview with some replicas ready said only `provisioning green`. The count is
/// said while provisioning, with no transition (no command, so nothing but the message changes).
#[test]
fn a_provisioning_preview_counts_its_ready_replicas_in_the_message() {
    let mut h = Harness::new(config());
    h.send(Input::Start);
    let ready = |ready| Input::PreviewReplicas { ready, desired: 2 };
    assert_eq!(h.send(ready(1)), []);
    assert_eq!(
        h.r.message,
        "provisioning green: 1 of 2 replicas ready; no traffic until it is ready"
    );
    h.op(OperatorCommand::Promote);
    h.send(ready(0));
    assert_eq!(
        h.r.message,
        "provisioning green: 0 of 2 replicas ready; no traffic until it is ready; promote requested"
    );
}

#[test]
fn no_weight_is_requested_before_the_preview_is_ready() {
    let mut h = Harness::new(config());
    h.send(Input::Start);
    h.applied(1000); // an ack nobody asked for
    h.op(OperatorCommand::Promote); // remembered, not acted on
    for _ in 0..5 {
        h.wait(10 * SECOND);
    }
    assert!(
        !h.log
            .iter()
            .any(|c| matches!(c, Command::SetWeights { .. })),
        "{:?}",
        h.log
    );
    assert_eq!(h.r.phase, Phase::Provisioning);
    assert_eq!(
        h.r.message,
        "provisioning green: no traffic until it is ready; promote requested"
    );
    let out = h.send(Input::PreviewReady);
    assert_eq!(
        actions(&out),
        [set(10_000)],
        "the remembered promote acts only now"
    );
    let out = h.applied(10_000);
    assert_eq!(actions(&out), [Command::SwapRoles]);
}

#[test]
fn step_clock_starts_only_when_its_weight_is_applied() {
    let mut h = Harness::new(config());
    h.send(Input::Start);
    h.send(Input::PreviewReady);
    assert_eq!(
        h.wait(15 * SECOND),
        [],
        "no analysis before the weight is applied"
    );
    assert_eq!(h.applied(500), [], "another weight's ack is stale");
    let out = h.applied(1000);
    assert_eq!(actions(&out), [Command::OpenWindow]);
    assert_eq!(h.r.next_wakeup(), Some(h.now + 10 * SECOND));
    assert_eq!(h.r.generation, 1001);
}

#[test]
fn stale_inputs_are_ignored() {
    let mut h = Harness::holding();
    let before = h.r.clone();
    let stale = [
        Input::Verdict(verdict(Outcome::Fail)), // no Analyse outstanding
        Input::WeightsApplied {
            preview_bp: 5000,
            generation: 9,
        },
        Input::WeightsApplied {
            preview_bp: 1000,
            generation: 9,
        }, // duplicate ack
        Input::Start,
        Input::PreviewReady,
        Input::RolesSwapped,
        Input::ActiveDrained,
        Input::ActiveStopped,
    ];
    for input in stale {
        assert_eq!(h.send(input.clone()), [], "{input:?}");
    }
    assert_eq!(h.r, before);

    // A verdict arriving after a pause or a rollback changes nothing.
    h.wait(10 * SECOND);
    h.op(OperatorCommand::Pause);
    assert_eq!(h.send(Input::Verdict(verdict(Outcome::Fail))), []);
    assert_eq!(h.r.phase, Phase::Paused);
    h.op(OperatorCommand::Abort);
    h.applied(0);
    for input in [
        Input::Verdict(verdict(Outcome::Pass)),
        Input::Tick,
        Input::RolesSwapped,
    ] {
        assert_eq!(h.send(input), []);
    }
    assert_eq!(h.r.phase, Phase::Aborted);
}

#[test]
fn a_preview_ready_after_the_rollout_ended_is_stopped_again() {
    let mut h = Harness::new(config());
    h.send(Input::Start);
    h.op(OperatorCommand::Abort);
    assert_eq!(
        h.send(Input::PreviewReady),
        [],
        "StopPreview comes once weight 0 is applied"
    );
    assert_eq!(actions(&h.applied(0)), [Command::StopPreview]);
    // The runtime's provisioning finished only now: nothing may be left running.
    assert_eq!(h.send(Input::PreviewReady), [Command::StopPreview]);
    assert_eq!(h.r.phase, Phase::Aborted);
}

#[test]
fn message_describes_the_current_situation() {
    let mut h = Harness::holding();
    assert_eq!(h.r.message, "step 1/3 at 10%: holding 10s, no analysis yet");
    let judge = ThresholdJudge::new(config().analysis);
    h.wait(10 * SECOND);
    let v = judge.judge(
        &Window::from_counters(812, 0, Default::default()),
        &Window::default(),
    );
    h.send(Input::Verdict(v));
    assert_eq!(
        h.r.message,
        "step 2/3: waiting for 50% to be applied to green"
    );
    h.applied(5000);
    h.wait(10 * SECOND);
    let v = judge.judge(
        &Window::from_counters(20, 0, Default::default()),
        &Window::default(),
    );
    h.send(Input::Verdict(v));
    assert_eq!(
        h.r.message,
        "step 2/3 at 50%: holding 10s, last analysis inconclusive (20 requests < 50)"
    );
}

#[test]
fn rollout_round_trips_through_json_without_timers() {
    let mut h = Harness::holding();
    h.window(Outcome::Pass);
    let json = serde_json::to_string(&h.r).unwrap();
    let back: Rollout = serde_json::from_str(&json).unwrap();
    assert_eq!(back.phase, Phase::Progressing);
    assert_eq!(back.verdicts, h.r.verdicts);
    assert_eq!(back.next_wakeup(), None, "timers are not persisted");
    assert!(json.contains("\"phase\":\"Progressing\""), "{json}");
}

#[test]
fn a_drain_deadline_that_cut_connections_is_an_event_and_changes_nothing() {
    let mut h = Harness::new(config());
    h.send(Input::Start);
    h.send(Input::PreviewReady);
    for bp in [1000, 5000, 10_000] {
        h.applied(bp);
        h.wait(10 * SECOND);
        h.send(Input::Verdict(verdict(Outcome::Pass)));
    }
    let cut = Input::DrainDeadlinePassed {
        in_flight: 1,
        closed_upgraded: 20,
    };
    assert!(
        h.send(cut.clone()).is_empty(),
        "before Retiring it means nothing"
    );
    h.send(Input::RolesSwapped);
    let out = h.send(cut.clone());
    assert_eq!(reasons(&out), ["DrainDeadlinePassed"]);
    assert!(actions(&out).is_empty(), "{out:?}");
    let note = out.iter().find_map(|c| match c {
        Command::Event { message, .. } => Some(message.clone()),
        _ => None,
    });
    assert_eq!(
        note.as_deref(),
        Some("blue's drain deadline passed: 20 upgraded connections closed (1001 going away), 1 requests still in flight")
    );
    assert_eq!(h.r.phase, Phase::Retiring);
    assert_eq!(reasons(&h.send(Input::ActiveDrained)), ["ActiveDrained"]);
    assert!(h.send(cut).is_empty(), "after the drain it means nothing");
}
