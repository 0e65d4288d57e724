use std::time::{Duration, SystemTime};

use super::*;
use crate::kube::command::{check_nonce, decide};

#[test]
fn a_nonce_is_a_utc_timestamp_and_six_hex_digits_and_a_valid_command_value() {
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1796033702); // 2026-11-30 10:15:02 UTC
    let n = nonce(at);
    let (stamp, suffix) = n.split_once('-').unwrap();
    assert_eq!(stamp, "20261130T101502Z");
    assert!(
        suffix.len() == 6 && suffix.chars().all(|c| c.is_ascii_hexdigit()),
        "{n}"
    );
    assert_eq!(check_nonce(&n), Ok(()));
    assert_ne!(nonce(at), nonce(at), "two nonces of the same second differ");
}

#[test]
fn each_verb_writes_annotations_the_controller_acts_on() {
    for verb in [
        Verb::Promote,
        Verb::Abort,
        Verb::Retry,
        Verb::Pause,
        Verb::Resume,
    ] {
        let annotations: std::collections::BTreeMap<String, String> = verb
            .annotations("n1")
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let start = CommandsSeen::default();
        let d = decide(&annotations, &start);
        assert_eq!(d.requests.len(), 1, "{verb:?}: {d:?}");
        let sent = Sent {
            verb,
            deployment: "default/web".into(),
            annotations: verb.annotations("n1"),
        };
        assert!(verb.acted(&sent, &d.seen), "{verb:?}: {d:?}");
        assert!(!verb.acted(&sent, &start), "{verb:?} before");
    }
}

/// TrafficShift `web` with `status` (phase, step), four default steps.
fn shift_with(phase: Phase, step: Option<u32>) -> TrafficShift {
    let mut shift = TrafficShift::new(
        "web",
        serde_json::from_value(json!({ "deployment": "web", "images": { "app": "web:v2" } }))
            .expect("spec"),
    );
    shift.status = Some(TrafficShiftStatus {
        phase: Some(phase),
        step,
        ..TrafficShiftStatus::default()
    });
    shift
}

#[test]
fn status_shows_a_step_only_once_one_has_started() {
    // Trial 7, G4: an abort during provisioning said `Aborting (step 1/4)`.
    let cases = [
        (Phase::Provisioning, None, "phase: Provisioning\n"),
        (
            Phase::Aborting,
            None,
            "phase: Aborting (during provisioning)\n",
        ),
        (
            Phase::Aborted,
            None,
            "phase: Aborted (during provisioning)\n",
        ),
        (Phase::Aborting, Some(0), "phase: Aborting (step 1/4)\n"),
        (
            Phase::Progressing,
            Some(2),
            "phase: Progressing (step 3/4)\n",
        ),
        // Trial 10, K18: a promote at step 1 completed "at step 1/4".
        (
            Phase::Completed,
            Some(0),
            "phase: Completed (promoted at step 1/4)\n",
        ),
        (Phase::Completed, Some(3), "phase: Completed (step 4/4)\n"),
    ];
    for (phase, step, line) in cases {
        let text = describe(&shift_with(phase, step));
        assert!(text.contains(line), "{phase:?} {step:?}: {text}");
    }
}

/// Trial 10, K18: superseded after its promotion, the old rollout runs on under the new spec's
/// header; `status --kube` says which generation and images the phase is of.
#[test]
fn status_says_when_the_phase_belongs_to_an_older_spec_generation() {
    let mut shift = shift_with(Phase::Promoted, Some(0));
    shift.metadata.generation = Some(2);
    let record = |generation: i64| json!({ "generation": generation, "images": { "app": "web:v3" }, "rollout": {} });
    if let Some(status) = shift.status.as_mut() {
        status.rollout_state = Some(record(1));
    }
    let text = describe(&shift);
    assert!(
        text.contains("  rolling out spec generation 1 (app=web:v3): generation 2 waits for it to end\n  phase: Promoted (step 1/4)\n"),
        "{text}"
    );
    // Ended (aborted when an invalid generation 2 superseded it): nothing waits (trial 34).
    let mut ended = shift_with(Phase::Aborted, Some(0));
    ended.metadata.generation = Some(2);
    if let Some(status) = ended.status.as_mut() {
        status.rollout_state = Some(record(1));
    }
    let text = describe(&ended);
    assert!(
        text.contains("  last rollout: spec generation 1 (app=web:v3), ended; generation 2 started none\n  phase: Aborted"),
        "{text}"
    );
    if let Some(status) = shift.status.as_mut() {
        status.rollout_state = Some(record(2));
    }
    let text = describe(&shift);
    assert!(!text.contains("waits for it"), "{text}");
}

/// Trial 10, K18: the last command of an earlier rollout is shown as that rollout's, not as the
/// current one's; one of the current rollout (or of a record without rollout ids) as before.
#[test]
fn status_shows_an_earlier_rollouts_last_command_as_that_rollouts() {
    let mut shift = shift_with(Phase::Progressing, Some(0));
    let last = |rollout_id| CommandsSeen {
        promote: Some("p1".into()),
        last: Some(CommandOutcome {
            annotation: "crossfade.dev/promote".into(),
            value: "p1".into(),
            accepted: true,
            message: "promoting".into(),
            rollout_id,
        }),
        ..CommandsSeen::default()
    };
    let cases = [
        (Some(1), Some(2), "  last command (to rollout 1; this is rollout 2): crossfade.dev/promote=p1 accepted: promoting\n"),
        (Some(2), Some(2), "  last command: crossfade.dev/promote=p1 accepted: promoting\n"),
        (None, Some(2), "  last command: crossfade.dev/promote=p1 accepted: promoting\n"),
    ];
    for (given, current, line) in cases {
        if let Some(status) = shift.status.as_mut() {
            status.commands = Some(last(given));
            status.rollout_id = current;
        }
        let text = describe(&shift);
        assert!(text.contains(line), "{given:?} {current:?}: {text}");
    }
}

/// The STEP column's `status.stepProgress`, when written, is what `status --kube` counts with:
/// the rollout's own number of steps, not the spec's default.
#[test]
fn status_shows_the_step_progress_the_controller_wrote() {
    let mut shift = shift_with(Phase::Progressing, Some(1));
    if let Some(status) = shift.status.as_mut() {
        status.step_progress = Some("2/3".into());
    }
    let text = describe(&shift);
    assert!(text.contains("  phase: Progressing (step 2/3)\n"), "{text}");
}

/// Trial 20: an `InvalidSpec` message lists one problem a line; its later lines printed flush
/// left, read as items of the status's own.
#[test]
fn status_indents_the_later_lines_of_a_message() {
    let mut shift = shift_with(Phase::Progressing, None);
    let message = "spec.rollout.steps: the last step must be 100%, got 50%\nspec.rollout.hold: 0s is below the minimum of 10ms";
    if let Some(status) = shift.status.as_mut() {
        status.message = Some(message.into());
    }
    let text = describe(&shift);
    assert!(
        text.contains("  message: spec.rollout.steps: the last step must be 100%, got 50%\n    spec.rollout.hold: 0s"),
        "{text}"
    );
    assert!(!text.contains("\nspec.rollout.hold"), "{text}");
}

/// `status --kube` on a TrafficShift edited into one that does not decode while its rollout is
/// still being aborted (or finishing after promotion) from its record: the field, then that
/// rollout's phase and weights as the controller wrote them, not "nothing is rolled out" with
/// `Progressing=False (InvalidSpec)`, which the controller sets only once the rollout has ended.
#[test]
fn status_of_an_undecodable_trafficshift_shows_the_rollout_still_running_from_its_record() {
    let object = |phase: &str| -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "crossfade.dev/v1alpha1", "kind": "TrafficShift",
            "metadata": { "name": "web", "namespace": "default", "generation": 2 },
            "spec": { "deployment": "web", "images": { "app": "web:v2" },
                "rollout": { "hold": "9000h" } },
            "status": { "phase": phase, "step": 0, "stepProgress": "1/2",
                "weights": { "active": "50%", "preview": "50%", "generation": 4 },
                "message": "promoted at step 1/2: retiring blue",
                "rolloutState": { "generation": 1, "images": { "app": "web:v2" }, "rollout": {} } }
        }))
        .expect("object")
    };
    let running = object("Promoted");
    let problem = crate::kube::shift::invalid::typed(&running).expect_err("does not decode");
    let text = describe_undecodable(&running, &problem);
    assert!(
        text.starts_with("trafficshift default/web\n  invalid: spec.rollout.hold: "),
        "{text}"
    );
    assert!(
        text.contains("  rolling out spec generation 1 (app=web:v2): generation 2 waits for it to end\n  phase: Promoted (step 1/2)\n  weights: active 50% preview 50% (generation 4)\n"),
        "{text}"
    );
    assert!(!text.contains("nothing is rolled out"), "{text}");
    // Ended: what the controller shows from then on.
    let ended = object("Aborted");
    let text = describe_undecodable(&ended, &problem);
    assert_eq!(text, describe_invalid("default", "web", &problem));
}

/// After `spec.deployment` was edited mid-rollout, the rollout that still runs (being aborted, or
/// finishing after promotion) acts on the Deployment it started on: `status --kube` names it next
/// to the new spec's header, which names the new one.
#[test]
fn status_names_the_deployment_an_older_rollout_acts_on_when_the_spec_names_another() {
    let mut shift = shift_with(Phase::Aborting, Some(0));
    shift.metadata.generation = Some(2);
    shift.spec.deployment = "web2".into();
    if let Some(status) = shift.status.as_mut() {
        status.rollout_state = Some(json!({ "generation": 1, "deployment": "web",
            "images": { "app": "web:v2" }, "rollout": {} }));
    }
    let text = describe(&shift);
    assert!(
        text.contains("  deployment: web2 -> app=web:v2\n  rolling out spec generation 1 (deployment web, app=web:v2): generation 2 waits for it to end\n"),
        "{text}"
    );
    shift.spec.deployment = "web".into();
    let text = describe(&shift);
    assert!(
        text.contains("  rolling out spec generation 1 (app=web:v2): generation 2 waits"),
        "{text}"
    );
}
