//! Webhook gates in the state machine: halts, retries, approval, rollback, and what operators and
//! analysis do meanwhile.

use super::*;
use crate::spec::{GateConfig, GatePoint, GatePolicy};

fn gate(at: GatePoint, on_reject: GatePolicy) -> GateConfig {
    GateConfig {
        name: format!("g-{at}"),
        at,
        url: "http://127.0.0.1:9/".into(),
        timeout: SECOND,
        on_reject,
        retry: 5 * SECOND,
        headers: Default::default(),
        headers_from: Vec::new(),
    }
}

fn with_gates(gates: Vec<GateConfig>) -> Harness {
    let mut c = config();
    c.gates = gates;
    Harness::new(c)
}

fn approved() -> GateAnswer {
    GateAnswer::Approved {
        note: "gate approved (status 200)".into(),
    }
}

fn refused(policy: GatePolicy) -> GateAnswer {
    GateAnswer::Refused {
        gate: "g".into(),
        reason: "status 403: not yet".into(),
        policy,
    }
}

fn answer(h: &mut Harness, at: GatePoint, step: usize, a: GateAnswer) -> Vec<Command> {
    h.send(Input::GateAnswered {
        at,
        step,
        answer: a,
    })
}

#[test]
fn before_rollout_nothing_starts_until_approved_and_a_refusal_waits_without_a_deadline() {
    let mut h = with_gates(vec![gate(GatePoint::BeforeRollout, GatePolicy::Wait)]);
    let out = h.send(Input::Start);
    assert_eq!(
        actions(&out),
        [Command::AskGates {
            at: GatePoint::BeforeRollout,
            step: 0
        }]
    );
    assert_eq!(h.r.phase, Phase::Pending);
    let out = answer(
        &mut h,
        GatePoint::BeforeRollout,
        0,
        refused(GatePolicy::Wait),
    );
    assert!(actions(&out).is_empty(), "{out:?}");
    assert!(
        h.r.message.contains("halted before the rollout"),
        "{}",
        h.r.message
    );
    // Hours later: still halted, no deadline fired, asked again every retry.
    assert_eq!(
        h.wait(5 * SECOND),
        [Command::AskGates {
            at: GatePoint::BeforeRollout,
            step: 0
        }]
    );
    answer(
        &mut h,
        GatePoint::BeforeRollout,
        0,
        refused(GatePolicy::Wait),
    );
    h.now += Duration::from_secs(3600);
    assert_eq!(h.r.phase, Phase::Pending);
    // The repeated refusal publishes no second event, but it is counted (for
    // crossfade_rollout_gate_refusals_total).
    assert_eq!(h.r.gate_refusals, 2);
    let out = answer(&mut h, GatePoint::BeforeRollout, 0, approved());
    assert_eq!(actions(&out), [Command::StartPreview]);
    assert_eq!(h.r.phase, Phase::Provisioning);
    assert!(h.r.gate.is_none());
}

#[test]
fn a_rollback_gate_before_the_rollout_ends_it_with_nothing_to_undo() {
    let mut h = with_gates(vec![gate(GatePoint::BeforeRollout, GatePolicy::Rollback)]);
    h.send(Input::Start);
    let out = answer(
        &mut h,
        GatePoint::BeforeRollout,
        0,
        refused(GatePolicy::Rollback),
    );
    assert!(
        actions(&out).is_empty(),
        "no StartPreview, no weights: {out:?}"
    );
    assert_eq!(h.r.phase, Phase::RolledBack);
    assert!(h
        .r
        .reason
        .as_deref()
        .unwrap()
        .contains("gate g refused: status 403"));
}

#[test]
fn before_each_step_the_weight_waits_for_the_gate_while_analysis_goes_on() {
    // Retry after the analysis interval, so that each tick below is one analysis.
    let mut g = gate(GatePoint::BeforeStep, GatePolicy::Wait);
    g.retry = 60 * SECOND;
    let mut h = with_gates(vec![g]);
    h.send(Input::Start);
    let out = h.send(Input::PreviewReady);
    assert_eq!(
        actions(&out),
        [Command::AskGates {
            at: GatePoint::BeforeStep,
            step: 0
        }],
        "no weight before the first step's gate"
    );
    let out = answer(&mut h, GatePoint::BeforeStep, 0, approved());
    assert_eq!(actions(&out), [Command::SetWeights { preview_bp: 1000 }]);
    h.applied(1000);
    // Step 1 passes after its hold: step 2's gate is asked, 10% holds.
    let out = h.window(Outcome::Pass);
    assert_eq!(
        actions(&out),
        [Command::AskGates {
            at: GatePoint::BeforeStep,
            step: 1
        }]
    );
    answer(&mut h, GatePoint::BeforeStep, 1, refused(GatePolicy::Wait));
    assert_eq!(h.r.applied_bp, 1000);
    assert!(
        h.r.message.contains("halted before step 2/3 (50%)"),
        "{}",
        h.r.message
    );
    // Analysis continues at 10% (no deadline while halted); a failure still rolls back.
    let out = h.window(Outcome::Pass);
    assert!(
        actions(&out).is_empty(),
        "a pass does not advance past the gate: {out:?}"
    );
    let out = h.window(Outcome::Fail);
    assert_eq!(actions(&out), [Command::SetWeights { preview_bp: 0 }]);
    assert_eq!(h.r.phase, Phase::RollingBack);
    // The gate's late answer is stale.
    assert!(answer(&mut h, GatePoint::BeforeStep, 1, approved()).is_empty());
}

#[test]
fn a_rollback_gate_before_a_step_rolls_back() {
    let mut h = with_gates(vec![gate(GatePoint::BeforeStep, GatePolicy::Rollback)]);
    h.send(Input::Start);
    h.send(Input::PreviewReady);
    answer(&mut h, GatePoint::BeforeStep, 0, approved());
    h.applied(1000);
    h.window(Outcome::Pass);
    let out = answer(
        &mut h,
        GatePoint::BeforeStep,
        1,
        refused(GatePolicy::Rollback),
    );
    assert_eq!(actions(&out), [Command::SetWeights { preview_bp: 0 }]);
    assert!(h
        .r
        .reason
        .as_deref()
        .unwrap()
        .starts_with("before step 2/3 (50%): gate g refused"));
}

#[test]
fn before_promotion_100_percent_holds_until_approved_and_an_operator_promote_skips_the_gate() {
    let mut h = with_gates(vec![gate(GatePoint::BeforePromotion, GatePolicy::Wait)]);
    h.send(Input::Start);
    h.send(Input::PreviewReady);
    h.applied(1000);
    h.window(Outcome::Pass);
    h.applied(5000);
    h.window(Outcome::Pass);
    h.applied(10_000);
    let out = h.window(Outcome::Pass);
    assert_eq!(
        actions(&out),
        [Command::AskGates {
            at: GatePoint::BeforePromotion,
            step: 2
        }]
    );
    assert_eq!(h.r.phase, Phase::Progressing);
    let out = answer(&mut h, GatePoint::BeforePromotion, 2, approved());
    assert_eq!(actions(&out), [Command::SwapRoles]);

    let mut h = with_gates(vec![gate(GatePoint::BeforePromotion, GatePolicy::Wait)]);
    h.send(Input::Start);
    h.send(Input::PreviewReady);
    h.applied(1000);
    let out = h.op(OperatorCommand::Promote);
    assert_eq!(actions(&out), [Command::SetWeights { preview_bp: 10_000 }]);
    let out = h.applied(10_000);
    assert_eq!(
        actions(&out),
        [Command::SwapRoles],
        "the operator's promote is the approval"
    );
}

#[test]
fn pause_and_abort_clear_a_halt() {
    let mut h = with_gates(vec![gate(GatePoint::BeforeStep, GatePolicy::Wait)]);
    h.send(Input::Start);
    h.send(Input::PreviewReady);
    h.op(OperatorCommand::Pause);
    assert!(h.r.gate.is_none());
    assert!(
        answer(&mut h, GatePoint::BeforeStep, 0, approved()).is_empty(),
        "stale"
    );
    let out = h.op(OperatorCommand::Resume);
    assert_eq!(
        actions(&out),
        [Command::AskGates {
            at: GatePoint::BeforeStep,
            step: 0
        }],
        "resuming asks again"
    );
    let out = h.op(OperatorCommand::Abort);
    assert_eq!(actions(&out), [Command::SetWeights { preview_bp: 0 }]);
    assert!(h.r.gate.is_none());
}

#[test]
fn after_completion_the_gate_is_told_and_its_answer_changes_nothing() {
    let mut h = with_gates(vec![gate(GatePoint::AfterCompletion, GatePolicy::Rollback)]);
    h.send(Input::Start);
    h.send(Input::PreviewReady);
    h.applied(1000);
    h.window(Outcome::Pass);
    h.applied(5000);
    h.window(Outcome::Pass);
    h.applied(10_000);
    h.window(Outcome::Pass);
    h.send(Input::RolesSwapped);
    h.send(Input::ActiveDrained);
    let out = h.send(Input::ActiveStopped);
    assert_eq!(h.r.phase, Phase::Completed);
    assert_eq!(
        actions(&out),
        [Command::AskGates {
            at: GatePoint::AfterCompletion,
            step: 2
        }]
    );
    let out = answer(
        &mut h,
        GatePoint::AfterCompletion,
        2,
        refused(GatePolicy::Rollback),
    );
    assert_eq!(h.r.phase, Phase::Completed);
    assert!(actions(&out).is_empty());
    assert!(out.iter().any(|c| matches!(
        c,
        Command::Event {
            reason: "GateRejected",
            ..
        }
    )));
}

#[test]
fn a_rollout_reattached_while_halted_at_a_gate_asks_it_again() {
    let mut h = with_gates(vec![gate(GatePoint::BeforeStep, GatePolicy::Wait)]);
    h.send(Input::Start);
    h.send(Input::PreviewReady);
    answer(&mut h, GatePoint::BeforeStep, 0, approved());
    h.applied(1000);
    h.window(Outcome::Pass);
    answer(&mut h, GatePoint::BeforeStep, 1, refused(GatePolicy::Wait));
    let json = serde_json::to_string(&h.r).unwrap();
    let mut h = Harness {
        r: serde_json::from_str(&json).unwrap(),
        now: h.now + Duration::from_secs(600),
        log: Vec::new(),
    };
    let out = h.send(Input::Reattached {
        deadline_left: None,
        cause: crate::rollout::Reattach::Restart,
    });
    assert_eq!(
        actions(&out),
        [
            Command::OpenWindow,
            Command::AskGates {
                at: GatePoint::BeforeStep,
                step: 1
            }
        ],
        "analysis goes on at 10% and the gate is asked again"
    );
    let out = answer(&mut h, GatePoint::BeforeStep, 1, approved());
    assert_eq!(actions(&out), [Command::SetWeights { preview_bp: 5000 }]);
}
