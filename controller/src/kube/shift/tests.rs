use crossfade_proxy::weight::Slot;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::status::{invalid_spec, status_of};
use super::*;
use crate::kube::crd::{ConditionStatus, Phase as StatusPhase};
use crate::kube::store::ShiftRecord;
use crate::rollout::Phase;
use crate::rollout::{Input, Rollout};
use crate::spec::RolloutConfig;

fn at(seconds: i64) -> Time {
    Time(Timestamp::from_second(seconds).unwrap())
}

fn record(phase: Phase, published_bp: u32) -> ShiftRecord {
    let mut rollout = Rollout::new(1, RolloutConfig::default(), Slot::Blue);
    rollout.phase = phase;
    rollout.message = format!("{phase} now");
    ShiftRecord {
        published_bp,
        weights_generation: 4,
        ..ShiftRecord::new(2, rollout)
    }
}

fn condition(
    status: &crate::kube::crd::TrafficShiftStatus,
    type_: &str,
) -> (ConditionStatus, String) {
    let c = status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .expect(type_);
    (c.status, c.reason.clone())
}

#[test]
fn the_shadow_steps_weights_carry_the_rollouts_mirror_settings_and_no_other_step_does() {
    let mut r = record(Phase::Progressing, 0);
    r.rollout.config.steps[0].weight = crossfade_proxy::weight::Percent(0);
    let mut guard = crate::spec::ShadowGuard::default();
    guard.mirror.compare_headers = vec!["etag".into()];
    r.rollout.config.analysis.shadow = Some(guard.clone());
    let plain = status_of(&r, 2, None, "web-green", &at(10));
    assert_eq!(plain.weights.and_then(|w| w.shadow), None);
    r.shadow_published = true;
    let shadow = status_of(&r, 2, None, "web-green", &at(10));
    let weights = shadow.weights.expect("weights");
    assert_eq!((weights.preview.bp(), weights.generation), (0, 4));
    let mirror = weights.shadow.expect("the mirror settings");
    assert_eq!(mirror.to_config(), guard.mirror);
    // A record written before shadow steps existed reads as not mirroring.
    let mut old = serde_json::to_value(&r).expect("json");
    old.as_object_mut()
        .expect("object")
        .remove("shadowPublished");
    let old: ShiftRecord = serde_json::from_value(old).expect("an old record reads");
    assert!(!old.shadow_published);
}

#[test]
fn status_shows_phase_weights_and_conditions_per_api_conventions() {
    let status = status_of(
        &record(Phase::Progressing, 2500),
        2,
        None,
        "web-green",
        &at(10),
    );
    assert_eq!(status.phase, Some(StatusPhase::Progressing));
    let weights = status.weights.clone().unwrap();
    assert_eq!(
        (
            weights.active.bp(),
            weights.preview.bp(),
            weights.generation
        ),
        (7500, 2500, 4)
    );
    assert_eq!(status.observed_generation, Some(2));
    assert_eq!(status.preview_deployment.as_deref(), Some("web-green"));
    assert_eq!(
        condition(&status, PROGRESSING),
        (ConditionStatus::True, "Progressing".into())
    );
    assert_eq!(
        condition(&status, PROMOTED),
        (ConditionStatus::False, "Progressing".into())
    );
    assert_eq!(
        condition(&status, COMPLETED),
        (ConditionStatus::False, "Progressing".into())
    );
    assert_eq!(
        condition(&status, ANNOTATIONS_VALID),
        (ConditionStatus::True, "Valid".into())
    );
    assert!(status
        .conditions
        .iter()
        .filter(|c| c.type_ != ANNOTATIONS_VALID)
        .all(|c| c.observed_generation == Some(2) && c.message == "Progressing now"));
    let back: ShiftRecord = serde_json::from_value(status.rollout_state.unwrap()).unwrap();
    assert_eq!(back, record(Phase::Progressing, 2500));
}

#[test]
fn bad_command_annotations_show_as_annotations_valid_false_next_to_the_rollout() {
    let mut r = record(Phase::Progressing, 2500);
    r.annotation_problem =
        Some("annotation crossfade.dev/paused: \"yes\" is not \"true\" or \"false\"".into());
    r.commands.promote = Some("n1".into());
    let status = status_of(&r, 2, None, "web-green", &at(10));
    let c = status
        .conditions
        .iter()
        .find(|c| c.type_ == ANNOTATIONS_VALID)
        .unwrap();
    assert_eq!(
        (c.status, c.reason.as_str(), c.message.as_str()),
        (
            ConditionStatus::False,
            "InvalidAnnotation",
            "annotation crossfade.dev/paused: \"yes\" is not \"true\" or \"false\""
        )
    );
    assert_eq!(condition(&status, PROGRESSING).0, ConditionStatus::True);
    assert_eq!(status.commands.unwrap().promote.as_deref(), Some("n1"));
}

#[test]
fn transition_times_change_only_when_a_condition_status_changes() {
    let first = status_of(&record(Phase::Promoted, 0), 2, None, "web-green", &at(10));
    let second = status_of(
        &record(Phase::Completed, 0),
        2,
        Some(&first),
        "web-green",
        &at(20),
    );
    let time = |s: &crate::kube::crd::TrafficShiftStatus, t: &str| {
        s.conditions
            .iter()
            .find(|c| c.type_ == t)
            .unwrap()
            .last_transition_time
            .clone()
    };
    assert_eq!(time(&second, PROMOTED), at(10), "Promoted stayed True");
    assert_eq!(time(&second, COMPLETED), at(20), "Completed became True");
    assert_eq!(
        time(&second, PROGRESSING),
        at(20),
        "Progressing became False"
    );
    assert_eq!(
        condition(&second, PROGRESSING),
        (ConditionStatus::False, "Completed".into())
    );
    assert_eq!(second.preview_deployment, None, "no preview after the end");
}

#[test]
fn an_invalid_spec_sets_progressing_false_and_keeps_the_rest() {
    let running = status_of(
        &record(Phase::Progressing, 500),
        2,
        None,
        "web-green",
        &at(10),
    );
    let refused = invalid_spec(
        Some(&running),
        3,
        "spec.rollout.steps: not increasing",
        &at(20),
    );
    assert_eq!(
        condition(&refused, PROGRESSING),
        (ConditionStatus::False, "InvalidSpec".into())
    );
    assert_eq!(refused.observed_generation, Some(3));
    assert_eq!(refused.weights, running.weights);
    assert_eq!(refused.rollout_state, running.rollout_state);
}

fn shift_at(generation: i64, record: Option<&ShiftRecord>) -> TrafficShift {
    let mut shift: TrafficShift = serde_json::from_value(serde_json::json!({
        "apiVersion": "crossfade.dev/v1alpha1", "kind": "TrafficShift",
        "metadata": { "name": "web", "namespace": "default", "generation": generation },
        "spec": { "deployment": "web", "images": { "app": "web:v2" } }
    }))
    .unwrap();
    shift.status = record.map(|r| crate::kube::crd::TrafficShiftStatus {
        rollout_state: serde_json::to_value(r).ok(),
        ..Default::default()
    });
    shift
}

fn in_memory(phase: Phase) -> machine::Machine {
    machine::Machine::new(record(phase, 0))
}

#[test]
fn a_new_trafficshift_starts_a_rollout_of_its_generation() {
    let (m, inputs) = machine::load(None, &shift_at(3, None), RolloutConfig::default(), None);
    assert_eq!(inputs, [Input::Start]);
    assert_eq!((m.record.generation, m.record.rollout.id), (3, 1));
}

/// The progress deadline is kept in the record as wall-clock time when the machine sets one, and
/// a reloaded record resumes with what is left of it (0 once passed).
#[test]
fn the_progress_deadline_is_kept_as_wall_clock_time_and_resumed_from_it() {
    let mut m = machine::Machine::new(record(Phase::Provisioning, 0));
    let now = tokio::time::Instant::now();
    m.record.rollout = crate::rollout::Rollout::new(1, RolloutConfig::default(), Slot::Blue);
    m.record.rollout.step(Input::Start, now);
    let deadline = m
        .record
        .rollout
        .deadline()
        .expect("provisioning has a deadline");
    assert!(machine::keep_deadline(&mut m, now, 1_000_000));
    let left = u64::try_from((deadline - now).as_millis()).unwrap();
    assert_eq!(m.record.deadline_at_ms, Some(1_000_000 + left));
    assert!(!machine::keep_deadline(&mut m, now, 1_000_500), "unchanged");
    let inputs = machine::initial(Some((&m.record, None)), 1_000_000 + left - 2_000);
    assert_eq!(
        inputs[0],
        Input::Reattached {
            deadline_left: Some(Duration::from_secs(2)),
            cause: crate::rollout::Reattach::Restart,
        }
    );
    let inputs = machine::initial(Some((&m.record, None)), 1_000_000 + left + 9_000);
    assert_eq!(
        inputs[0],
        Input::Reattached {
            deadline_left: Some(Duration::ZERO),
            cause: crate::rollout::Reattach::Restart,
        }
    );
}

/// Session 39: after promotion (and while undoing), a reconcile that fails drops the machine and
/// the next reads the rollout from status again. Before, each such reload re-issued the wait with
/// a fresh progress deadline, kept in the record as a new `deadline_at_ms`: every reload wrote
/// status, and that write woke the next reconcile at once (a loop with any persistent error).
/// A reload keeps the persisted deadline, whatever the milliseconds between the two clocks.
#[test]
fn a_reloaded_rollout_after_promotion_keeps_its_persisted_deadline() {
    let cases = [
        (Phase::Promoted, false),
        (Phase::Retiring, false),
        (Phase::Retiring, true),
        (Phase::RollingBack, false),
        (Phase::Aborting, false),
    ];
    for (phase, drained) in cases {
        let mut saved = record(phase, 0);
        saved.rollout.active_drained = drained;
        // Persisted 30 s ago, with the default progress deadline (2 minutes).
        let loaded_ms = 5_000_000;
        saved.deadline_at_ms = Some(loaded_ms + 90_000);
        let mut m = machine::Machine::new(saved);
        let now = tokio::time::Instant::now();
        for input in machine::initial(Some((&m.record, None)), loaded_ms) {
            m.record.rollout.step(input, now);
        }
        // The clocks read again a few milliseconds apart (`persist`).
        let changed = machine::keep_deadline(&mut m, now, loaded_ms + 3);
        assert_eq!(
            (changed, m.record.deadline_at_ms),
            (false, Some(loaded_ms + 90_000)),
            "{phase} (drained {drained}): the reload rewrote the deadline"
        );
    }
}

#[test]
fn a_rollout_in_status_is_reattached_and_one_in_memory_ticks() {
    let saved = record(Phase::Progressing, 500);
    let (m, inputs) = machine::load(
        None,
        &shift_at(2, Some(&saved)),
        RolloutConfig::default(),
        None,
    );
    assert_eq!(
        inputs,
        [
            Input::Reattached {
                deadline_left: None,
                cause: crate::rollout::Reattach::Restart,
            },
            Input::Tick
        ]
    );
    assert_eq!(m.record, saved);
    let (_, inputs) = machine::load(
        Some(in_memory(Phase::Progressing)),
        &shift_at(2, None),
        RolloutConfig::default(),
        None,
    );
    assert_eq!(inputs, [Input::Tick]);
}

#[test]
fn a_newer_generation_aborts_before_promotion_waits_after_and_restarts_once_ended() {
    use crate::rollout::AbortCause;
    for phase in [Phase::Provisioning, Phase::Progressing, Phase::Paused] {
        let (m, inputs) = machine::load(
            Some(in_memory(phase)),
            &shift_at(3, None),
            RolloutConfig::default(),
            None,
        );
        assert_eq!(
            inputs,
            [
                Input::Tick,
                Input::Abort(AbortCause::Superseded { generation: 3 })
            ],
            "{phase}"
        );
        assert_eq!(
            m.record.generation, 2,
            "{phase}: the old rollout ends first"
        );
    }
    for phase in [
        Phase::Promoted,
        Phase::Retiring,
        Phase::RollingBack,
        Phase::Aborting,
    ] {
        let (_, inputs) = machine::load(
            Some(in_memory(phase)),
            &shift_at(3, None),
            RolloutConfig::default(),
            None,
        );
        assert_eq!(inputs, [Input::Tick], "{phase}: finishes first");
    }
    for phase in [Phase::Completed, Phase::RolledBack, Phase::Aborted] {
        let (m, inputs) = machine::load(
            Some(in_memory(phase)),
            &shift_at(3, None),
            RolloutConfig::default(),
            None,
        );
        assert_eq!(inputs, [Input::Start], "{phase}");
        assert_eq!(
            (m.record.generation, m.record.rollout.id),
            (3, 2),
            "{phase}"
        );
        assert_eq!(
            m.record.weights_generation, 4,
            "{phase}: the weights generation keeps rising"
        );
    }
}

/// A record of the rollout `shift_at` asks for at generation 2 (`deployment` web, images
/// `app=web:v2`, default policy), with `unreadyGrace` 30s, at step 1.
fn running_as_asked() -> machine::Machine {
    let mut m = in_memory(Phase::Progressing);
    m.record.images = shift_at(2, None).spec.images.into();
    m.record.deployment = Some("web".into());
    m.record.unready_grace_ms = Some(30_000);
    m
}

/// What each spec edit does to a rollout under way: a `spec.route` edit is the same rollout; an
/// edit of `spec.deployment` or of `spec.rollout.unreadyGrace` supersedes it (aborted before
/// promotion) as edits of `spec.images` and the rest of `spec.rollout` do. Before, both were
/// taken as the same rollout: the rollout carried on against the new Deployment, and the new
/// grace applied from the next reading (`exec.rs` read it from the live spec).
#[test]
fn a_deployment_or_unready_grace_edit_supersedes_the_rollout_and_a_route_edit_does_not() {
    use crate::kube::crd::{RouteSpec, Span};
    use crate::rollout::AbortCause;
    let superseded = [
        Input::Tick,
        Input::Abort(AbortCause::Superseded { generation: 3 }),
    ];
    let mut route = shift_at(3, None);
    route.spec.route = Some(RouteSpec {
        path_prefix: Some("/shop".into()),
        ..Default::default()
    });
    let (m, inputs) = machine::load(
        Some(running_as_asked()),
        &route,
        RolloutConfig::default(),
        None,
    );
    assert_eq!(inputs, [Input::Tick], "a route edit");
    assert_eq!(
        m.record.generation, 3,
        "the same rollout, at the new generation"
    );

    let mut deployment = shift_at(3, None);
    deployment.spec.deployment = "web2".into();
    let (m, inputs) = machine::load(
        Some(running_as_asked()),
        &deployment,
        RolloutConfig::default(),
        None,
    );
    assert_eq!(inputs, superseded, "a deployment edit");
    assert_eq!(
        m.record.rolled_out(&deployment).spec.deployment,
        "web",
        "the rollout ends on the Deployment it started on"
    );

    let mut grace = shift_at(3, None);
    grace.spec.rollout.unready_grace = Some(Span(Duration::from_secs(5)));
    let (m, inputs) = machine::load(
        Some(running_as_asked()),
        &grace,
        RolloutConfig::default(),
        None,
    );
    assert_eq!(inputs, superseded, "an unreadyGrace edit");
    assert_eq!(
        m.record.rolled_out(&grace).spec.rollout.unready_grace(),
        Duration::from_secs(30),
        "the rollout ends with the grace it started with"
    );
}

/// A new rollout keeps what it acts on from its spec: the target Deployment and `unreadyGrace`.
#[test]
fn a_new_rollout_records_its_deployment_and_unready_grace() {
    let mut shift = shift_at(3, None);
    shift.spec.rollout.unready_grace = Some(crate::kube::crd::Span(Duration::from_secs(7)));
    let (m, _) = machine::load(None, &shift, RolloutConfig::default(), None);
    assert_eq!(m.record.deployment.as_deref(), Some("web"));
    assert_eq!(m.record.unready_grace_ms, Some(7_000));
}

#[test]
fn weights_waiting_for_the_proxies_and_a_drain_are_looked_at_every_ack_poll() {
    use kube::runtime::controller::Action;
    // A paused rollout with nothing pending waits for a change.
    let mut m = in_memory(Phase::Paused);
    m.record.rollout.preview_ready = true;
    assert_eq!(machine::next_action(&m, POLL), Action::await_change());
    m.pending = Some(machine::Pending {
        preview_bp: 500,
        generation: 5,
        since: tokio::time::Instant::now(),
        reported: false,
    });
    assert_eq!(machine::next_action(&m, POLL), Action::requeue(ACK_POLL));
    m.pending = None;
    m.drain_deadline = Some(tokio::time::Instant::now() + std::time::Duration::from_secs(600));
    assert_eq!(machine::next_action(&m, POLL), Action::requeue(ACK_POLL));
}

#[test]
fn no_step_is_shown_before_the_preview_is_ready_even_when_aborting() {
    // Trial 7, G4: an abort during provisioning showed `step 1/4`, which had not started.
    for phase in [Phase::Provisioning, Phase::Aborting, Phase::Aborted] {
        let status = status_of(&record(phase, 0), 2, None, "web-green", &at(10));
        assert_eq!(status.step, None, "{phase}");
    }
    let mut started = record(Phase::Aborting, 500);
    started.rollout.preview_ready = true;
    let status = status_of(&started, 2, None, "web-green", &at(10));
    assert_eq!(status.step, Some(0));
    assert_eq!(status.step_progress.as_deref(), Some("1/4"));
    for phase in [Phase::Provisioning, Phase::Aborted] {
        let status = status_of(&record(phase, 0), 2, None, "web-green", &at(10));
        assert_eq!(status.step_progress, None, "{phase}");
    }
}

#[test]
fn the_status_counts_steps_from_1_over_the_rollouts_own_steps_and_names_the_rollout() {
    // The STEP column showed `status.step`, an index from 0, while everything else said `1/4`.
    let mut r = record(Phase::Progressing, 2500);
    r.rollout.preview_ready = true;
    r.rollout.step = 1;
    r.rollout.id = 3;
    let status = status_of(&r, 2, None, "web-green", &at(10));
    assert_eq!(status.step, Some(1));
    assert_eq!(status.step_progress.as_deref(), Some("2/4"));
    assert_eq!(status.rollout_id, Some(3));
}

#[test]
fn a_kube_rollout_is_promoted_in_the_words_of_its_deployments_and_images() {
    let mut shift = TrafficShift::new(
        "web",
        serde_json::from_value(serde_json::json!({
            "deployment": "web", "images": { "app": "crossfade-sample:v2" }
        }))
        .expect("spec"),
    );
    let words = |shift: &TrafficShift| match machine::promotion_of(shift) {
        crate::rollout::Promotion::InPlace {
            target,
            preview,
            images,
        } => format!("{target} {preview} {images}"),
        other => format!("{other:?}"),
    };
    assert_eq!(words(&shift), "web web-green crossfade-sample:v2");
    shift
        .spec
        .images
        .insert("log".into(), crate::kube::crd::ImageRef("fluent:3".into()));
    assert_eq!(
        words(&shift),
        "web web-green app=crossfade-sample:v2, log=fluent:3"
    );
}

fn dynamic(
    name: &str,
    namespace: &str,
    deployment: &str,
    created: Option<&str>,
) -> Arc<DynamicObject> {
    Arc::new(
        serde_json::from_value(serde_json::json!({
            "apiVersion": "crossfade.dev/v1alpha1", "kind": "TrafficShift",
            "metadata": { "name": name, "namespace": namespace, "creationTimestamp": created },
            "spec": { "deployment": deployment, "images": { "app": "web:v2" } }
        }))
        .expect("object"),
    )
}

fn typed(object: &DynamicObject) -> TrafficShift {
    serde_json::from_value(serde_json::to_value(object).expect("json")).expect("typed")
}

#[test]
fn the_oldest_trafficshift_of_a_deployment_owns_it_and_the_others_are_told_which() {
    // Trial 10, K2: two TrafficShifts for one Deployment both ran, and commands reached both.
    let web = dynamic("web", "shop", "web", Some("2026-12-01T22:00:00Z"));
    let third = dynamic("web-third", "shop", "web", Some("2026-12-01T22:30:00Z"));
    let twin = dynamic("a-twin", "shop", "web", Some("2026-12-01T22:30:00Z"));
    let elsewhere = dynamic("old", "other", "web", Some("2026-12-01T21:00:00Z"));
    let api = dynamic("api", "shop", "api", Some("2026-12-01T21:00:00Z"));
    let known = vec![third.clone(), web.clone(), elsewhere, api, twin.clone()];
    assert_eq!(other_owner(&typed(&web), &known), None);
    assert_eq!(other_owner(&typed(&third), &known).as_deref(), Some("web"));
    // Created in the same second: the first by name.
    let pair = vec![third.clone(), twin.clone()];
    assert_eq!(other_owner(&typed(&twin), &pair), None);
    assert_eq!(
        other_owner(&typed(&third), &pair).as_deref(),
        Some("a-twin")
    );
    // Not in the cache yet, or alone: it owns its Deployment.
    assert_eq!(other_owner(&typed(&web), &[]), None);
    // One without a creation time (not from an API server) never wins over one with.
    let undated = dynamic("aaa", "shop", "web", None);
    assert_eq!(
        other_owner(&typed(&undated), &known).as_deref(),
        Some("web")
    );
    assert_eq!(other_owner(&typed(&web), &[undated]), None);
}

fn target_running(
    images: &[(&str, &str)],
    annotations: &[(&str, &str)],
) -> k8s_openapi::api::apps::v1::Deployment {
    let containers: Vec<_> = images
        .iter()
        .map(|(c, i)| serde_json::json!({ "name": c, "image": i }))
        .collect();
    let annotations: serde_json::Map<String, serde_json::Value> = annotations
        .iter()
        .map(|(k, v)| ((*k).to_owned(), serde_json::json!(v)))
        .collect();
    serde_json::from_value(serde_json::json!({
        "metadata": { "name": "web", "annotations": annotations },
        "spec": { "selector": {}, "template": { "spec": { "containers": containers } } }
    }))
    .expect("deployment")
}

#[test]
fn promotion_sees_a_template_changed_under_the_rollout_and_who_takes_it_back() {
    use super::exec::{changed_under, Changed};
    use std::collections::BTreeMap;
    let shift = typed(&dynamic("web", "shop", "web", None));
    let started = BTreeMap::from([("app".to_owned(), "web:v1".to_owned())]);
    // As started, or already carrying this rollout's images: nothing to say.
    for image in ["web:v1", "web:v2"] {
        let target = target_running(&[("app", image)], &[]);
        assert_eq!(
            changed_under(Some(&started), &target, &shift),
            Changed::No,
            "{image}"
        );
    }
    // A record of an older version tells nothing.
    let v8 = target_running(&[("app", "web:v8")], &[]);
    assert_eq!(changed_under(None, &v8, &shift), Changed::No);
    // Changed by someone else on a Deployment Crossfade does not manage (trial 10, K4).
    let Changed::Unmanaged(reason) = changed_under(Some(&started), &v8, &shift) else {
        panic!("unmanaged change not seen");
    };
    assert_eq!(
        reason,
        "deployment web's pod template was changed by another client during the rollout: \
         app=web:v8 (the rollout started from web:v1, this rollout promotes web:v2); \
         crossfade.dev/enabled is not \"true\", so promotion does not overwrite it"
    );
    let disabled = target_running(&[("app", "web:v8")], &[("crossfade.dev/enabled", "false")]);
    assert!(matches!(
        changed_under(Some(&started), &disabled, &shift),
        Changed::Unmanaged(_)
    ));
    // Managed: Crossfade's reconciler of Deployments takes it back.
    let managed = target_running(&[("app", "web:v8")], &[("crossfade.dev/enabled", "true")]);
    assert_eq!(
        changed_under(Some(&started), &managed, &shift),
        Changed::Managed
    );
    // Changed after Crossfade's own promotion patch (its record names web:v2): the driver waits.
    let patched = target_running(
        &[("app", "web:v8")],
        &[("crossfade.dev/serving-images", r#"{"app":"web:v2"}"#)],
    );
    assert_eq!(changed_under(Some(&started), &patched, &shift), Changed::No);
}

/// Trial 30: a condition message past the schema's 32,768 characters made a real API server
/// refuse every status write of the TrafficShift (422); the emulator checks no schema. Every
/// condition's message is bounded, and a status that shows a bounded message counts as showing
/// the long one (else its Event would be published at every reconcile).
#[test]
fn condition_messages_stay_within_the_schemas_bound_and_still_count_as_shown() {
    use crate::kube::crd::MAX_MESSAGE;
    let long = format!("spec.rollout: {}", "problem; ".repeat(5000));
    let mut r = record(Phase::Progressing, 2500);
    r.annotation_problem = Some(long.clone());
    r.rollout.message = long.clone();
    let status = status_of(&r, 2, None, "web-green", &at(10));
    for c in &status.conditions {
        let chars = c.message.chars().count();
        assert!(chars <= MAX_MESSAGE, "{}: {chars} characters", c.type_);
    }
    let valid = status
        .conditions
        .iter()
        .find(|c| c.type_ == ANNOTATIONS_VALID);
    let message = &valid.expect("AnnotationsValid").message;
    assert!(message.starts_with("spec.rollout: problem; "), "{message}");
    assert!(message.ends_with(" characters cut)"), "{message}");

    let refused = invalid_spec(None, 3, &long, &at(20));
    let mut shift = shift_at(3, None);
    shift.status = Some(refused);
    assert!(status::shows_invalid(&shift, &long), "shown, cut");
    assert!(!status::shows_invalid(&shift, "another problem"));
}

/// A status edited by hand to the last rollout number: the next rollout is numbered 1, not a
/// panic of the controller (newuser34: `id + 1` overflowed).
#[test]
fn the_rollout_after_the_largest_number_is_numbered_one() {
    let mut previous = record(Phase::Completed, 10_000);
    previous.rollout.id = u64::MAX;
    let next = machine::Machine::start(
        RolloutConfig::default(),
        &shift_at(3, None),
        Some(&previous),
    );
    assert_eq!(next.record.rollout.id, 1);
    previous.rollout.id = 41;
    let next = machine::Machine::start(
        RolloutConfig::default(),
        &shift_at(3, None),
        Some(&previous),
    );
    assert_eq!(next.record.rollout.id, 42);
}

/// Deployment `name` in namespace `shop`, with no owner.
fn target_deployment(name: &str) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": name, "namespace": "shop" }
    }))
    .expect("deployment")
}

/// The names of the TrafficShifts a change of Deployment `name` wakes, sorted.
fn woken_by(name: &str, known: &[Arc<DynamicObject>]) -> Vec<String> {
    let mut names: Vec<String> = shifts_of(&target_deployment(name), known)
        .into_iter()
        .map(|r| r.name)
        .collect();
    names.sort();
    names
}

/// kube36: after `spec.deployment` was edited from `api` to `api2` mid-rollout, the rollout still
/// acts on `api` (its record's target) until it has ended, so a change of `api` (its pods rolled
/// out during the role swap) wakes the TrafficShift at once, as one of `api2` does. Before, only
/// `spec.deployment` was matched, and `api`'s changes were seen at the next poll (2 s). A record
/// of an older version names its target in its promotion words only.
#[test]
fn a_deployment_change_wakes_the_trafficshifts_whose_spec_or_rollout_record_targets_it() {
    let with_record = |name: &str, state: serde_json::Value| {
        let mut shift = (*dynamic(name, "shop", "api2", None)).clone();
        shift.data["status"] = serde_json::json!({ "rolloutState": state });
        Arc::new(shift)
    };
    let edited = with_record("web", serde_json::json!({ "deployment": "api" }));
    let older = with_record(
        "old",
        serde_json::json!({ "rollout": { "promotion": { "kind": "in_place", "target": "api",
            "preview": "old-green", "images": "web:v2" } } }),
    );
    let unrelated = dynamic("other", "shop", "db", None);
    let known = vec![edited, older, unrelated];
    assert_eq!(woken_by("api", &known), ["api", "old", "web"]);
    assert_eq!(woken_by("api2", &known), ["api2", "old", "web"]);
    assert_eq!(woken_by("db", &known), ["db", "other"]);
}

/// Deployment `name` whose `spec.selector.matchLabels` are `app: <app>`.
fn selecting(name: &str, app: &str) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": name, "namespace": "shop" },
        "spec": { "selector": { "matchLabels": { "app": app } },
            "template": { "metadata": { "labels": { "app": app } } } }
    }))
    .expect("deployment")
}

/// kube36: the target of a record of an older version that names none is the one Deployment
/// whose selector is the rollout's blue Service's; none or several, and it cannot be told (the
/// controller then does nothing for the TrafficShift but say so).
#[test]
fn an_older_records_target_is_the_only_deployment_its_blue_service_selects() {
    use std::collections::BTreeMap;

    let selector = BTreeMap::from([("app".to_owned(), "web".to_owned())]);
    let web = selecting("web", "web");
    let web2 = selecting("web2", "web2");
    let copy = selecting("web-copy", "web");
    let without = target_deployment("bare");
    assert_eq!(
        older::selected("web-blue", &selector, &[web2.clone(), web.clone(), without]),
        Ok("web".to_owned())
    );
    assert_eq!(
        older::selected("web-blue", &selector, std::slice::from_ref(&web2)),
        Err("service web-blue selects app=web, which is no deployment's selector".to_owned())
    );
    assert_eq!(
        older::selected("web-blue", &selector, &[web, web2, copy]),
        Err(
            "service web-blue selects app=web, the selector of deployments web, web-copy"
                .to_owned()
        )
    );
}

/// TrafficShift `web` (generation 5) of Deployment `deployment` with no rollout record, whose
/// status shows rollout 3 and weights generation 7 giving the target `active` and the preview
/// `preview`.
fn with_share(deployment: &str, active: &str, preview: &str) -> TrafficShift {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "crossfade.dev/v1alpha1", "kind": "TrafficShift",
        "metadata": { "name": "web", "generation": 5 },
        "spec": { "deployment": deployment, "images": { "app": "web:v2" } },
        "status": { "rolloutId": 3,
            "weights": { "active": active, "preview": preview, "generation": 7 } }
    }))
    .expect("trafficshift")
}

/// Session 39: a deleted TrafficShift with no record while `status.weights` still gives the
/// preview a share gets a rollout standing at that share (numbered on from status), which the
/// deletion's abort sends back to the target as published weights; with no share, none.
#[test]
fn a_share_left_without_a_record_is_a_rollout_the_deletion_aborts_back_to_the_target() {
    let mut shift = with_share("web", "80%", "20%");
    let m = machine::left_share_rollout(&shift, RolloutConfig::default(), None).expect("a rollout");
    let r = &m.record.rollout;
    assert_eq!((r.id, r.phase, r.step), (4, Phase::Progressing, 1));
    assert_eq!((r.preview_bp, r.applied_bp, r.generation), (2000, 2000, 7));
    assert_eq!(m.record.weights_generation, 7);
    let mut rollout = r.clone();
    let now = tokio::time::Instant::now();
    let abort = Input::Abort(crate::rollout::AbortCause::Deleted);
    let commands = rollout.step(abort, now);
    assert!(
        commands
            .iter()
            .any(|c| matches!(c, crate::rollout::Command::SetWeights { preview_bp: 0 })),
        "{commands:?}"
    );
    assert_eq!(rollout.phase, Phase::Aborting);
    let status = shift.status.as_mut().expect("status");
    status.weights.as_mut().expect("weights").preview =
        serde_json::from_value("0%".into()).expect("0%");
    assert!(machine::left_share_rollout(&shift, RolloutConfig::default(), None).is_none());
}

/// Session 40: a TrafficShift deleted with a record of an ended rollout while `status.weights`
/// still gives the preview a share (written by another client) gets a rollout standing at that
/// share, numbered on from the record and with its policy and target Deployment, whatever the
/// spec says now; a record still under way, or the preview at 0%, is left to itself.
#[test]
fn a_share_left_after_an_ended_rollout_is_a_rollout_of_its_record_the_deletion_aborts() {
    let mut shift = with_share("other", "0%", "100%");
    let step = |bp| crate::spec::StepConfig {
        weight: crossfade_proxy::weight::Percent(bp),
        hold: None,
    };
    let config = RolloutConfig {
        steps: vec![step(5_000), step(10_000)],
        ..RolloutConfig::default()
    };
    let mut record = ShiftRecord::new(4, Rollout::new(3, config.clone(), Slot::Blue));
    record.weights_generation = 6;
    record.deployment = Some("web".into());
    assert!(!machine::ended_with_share(&record, &shift), "under way");
    record.rollout.phase = Phase::Completed;
    assert!(machine::ended_with_share(&record, &shift));
    let m = machine::left_share_rollout(&shift, RolloutConfig::default(), Some(&record))
        .expect("a rollout");
    let r = &m.record.rollout;
    assert_eq!((r.id, r.phase, r.step), (4, Phase::Progressing, 1));
    assert_eq!(r.config, config);
    assert_eq!(
        (r.preview_bp, r.applied_bp, r.generation),
        (10_000, 10_000, 7)
    );
    assert_eq!(m.record.weights_generation, 7);
    assert_eq!(m.record.target(&shift), "web");
    let status = shift.status.as_mut().expect("status");
    status.weights.as_mut().expect("weights").preview =
        serde_json::from_value("0%".into()).expect("0%");
    assert!(!machine::ended_with_share(&record, &shift));
}

/// Session 39: a rollout reloaded from status after a failed reconcile of the same process says
/// so, with the error, where the first load in a process says "crossfade restarted": before and
/// after promotion. Session 40: the machine words it (`Reattach::Reload`), where session 39
/// rewrote the machine's `Restarted` note.
#[test]
fn a_reload_after_a_failed_reconcile_is_worded_as_one_not_as_a_restart() {
    let reload = machine::Reload {
        error: "deployment default/web: patch images: 403 Forbidden".into(),
        kind: "deployment default/web: patch images: 403 Forbidden".into(),
        say: true,
    };
    let cases = [
        (
            Phase::Progressing,
            "at step 1/4 (5%): resuming with fresh timers",
            "crossfade restarted at step 1/4 (5%): resuming with fresh timers",
        ),
        (
            Phase::Promoted,
            "still waiting for the role swap: asking again",
            "still waiting for the role swap after a restart: asking again",
        ),
    ];
    for (phase, rest, restarted) in cases {
        let mut saved = record(phase, 500);
        (saved.rollout.applied_bp, saved.rollout.preview_ready) = (500, true);
        let events = |reload: Option<&machine::Reload>| {
            let mut m = machine::Machine::new(saved.clone());
            let now = tokio::time::Instant::now();
            machine::initial(Some((&m.record, reload)), 0)
                .into_iter()
                .flat_map(|input| m.record.rollout.step(input, now))
                .filter_map(|command| match command {
                    crate::rollout::Command::Event { reason, message } => Some((reason, message)),
                    _ => None,
                })
                .filter(|(reason, _)| ["Restarted", "Reloaded"].contains(reason))
                .collect::<Vec<_>>()
        };
        let said = format!(
            "reloaded from status after a failed reconcile ({}), not a controller restart: {rest}",
            reload.error
        );
        let reloaded = events(Some(&reload));
        assert_eq!(reloaded.len(), 1, "{phase}: {reloaded:?}");
        assert_eq!(reloaded[0].0, RELOADED, "{phase}: {reloaded:?}");
        assert!(reloaded[0].1.starts_with(&said), "{phase}: {reloaded:?}");
        let first = events(None);
        assert_eq!(first.len(), 1, "{phase}: {first:?}");
        assert_eq!(first[0].0, "Restarted", "{phase}: {first:?}");
        assert!(first[0].1.starts_with(restarted), "{phase}: {first:?}");
    }
}
