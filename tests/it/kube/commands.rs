//! Operator commands as annotations on the target Deployment (`crossfade.dev/promote`, `abort`,
//! `retry`, `resume` with a nonce; `paused` as a state), against the emulator: each nonce acts
//! once, a re-applied one never again, and bad values are reported without a crash.

use crossfade_controller::kube::command::{ABORT, PAUSED, PROMOTE, RETRY};
use crossfade_controller::kube::crd::{ConditionStatus, Phase, TrafficShift};
use crossfade_controller::kube::ops::describe;
use crossfade_controller::kube::shift::{ANNOTATIONS_VALID, PROMOTED};
use crossfade_controller::kube::store::ShiftRecord;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::cluster::Cluster;
use super::lifecycle::an_older_record_whose_spec_names_another_deployment;
use super::shift::{
    aborted_as_invalid, at_step_one, condition, events, events_with, make_undecodable, notes,
    slow_policy,
};

/// Sets annotations on Deployment `web` (a JSON merge patch: `null` removes one).
async fn annotate(client: &kube::Client, annotations: serde_json::Value) {
    let api: Api<Deployment> = Api::default_namespaced(client.clone());
    let patch = json!({ "metadata": { "annotations": annotations } });
    api.patch("web", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .expect("annotate deployment web");
}

fn rollout_id(shift: &TrafficShift) -> u64 {
    ShiftRecord::from_status(shift).map_or(0, |r| r.rollout.id)
}

fn count(events: &[String], wanted: &str) -> usize {
    events.iter().filter(|e| *e == wanted).count()
}

#[tokio::test]
async fn paused_pauses_and_resumes_and_a_promote_nonce_acts_once() {
    let Some(c) = Cluster::with_target().await else {
        return;
    };
    let (ctl, _) = c.rollout_at_step_one().await;

    annotate(&c.client, json!({ PAUSED: "true" })).await;
    let paused = c
        .status_until("Paused", |s| s.phase == Some(Phase::Paused))
        .await;
    assert_eq!(paused.commands.and_then(|c| c.paused), Some(true));
    annotate(&c.client, json!({ PAUSED: "false" })).await;
    c.status_until("Progressing again", |s| s.phase == Some(Phase::Progressing))
        .await;

    annotate(&c.client, json!({ PROMOTE: "20261130T100000Z-a1" })).await;
    let promoted = c
        .status_until("Promoted", |s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == PROMOTED && c.status == ConditionStatus::True)
        })
        .await;
    assert_eq!(
        promoted.commands.and_then(|c| c.promote).as_deref(),
        Some("20261130T100000Z-a1")
    );
    // The same promote nonce re-applied (a GitOps sync) together with a new abort nonce: the
    // abort is looked at (and refused, too late), the promote is not fired again.
    annotate(
        &c.client,
        json!({ PROMOTE: "20261130T100000Z-a1", ABORT: "b2", "gitops/synced": "2" }),
    )
    .await;
    c.status_until("abort b2 recorded", |s| {
        s.commands.as_ref().and_then(|c| c.abort.as_deref()) == Some("b2")
    })
    .await;
    let events = events_with(&c.client, &["Warning CommandRejected"]).await;
    assert_eq!(count(&events, "Warning CommandRejected"), 1, "{events:?}");
    assert_eq!(count(&events, "Normal Paused"), 1, "{events:?}");
    assert_eq!(count(&events, "Normal Resumed"), 1, "{events:?}");
    assert_eq!(count(&events, "Normal PromoteRequested"), 1, "{events:?}");
    ctl.abort();
}

#[tokio::test]
async fn abort_then_retry_by_annotation_and_bad_values_are_reported_without_a_crash() {
    let Some(c) = Cluster::with_target().await else {
        return;
    };
    let (ctl, _) = c.rollout_at_step_one().await;

    annotate(&c.client, json!({ ABORT: "a1" })).await;
    let aborted = c
        .status_until("Aborted", |s| s.phase == Some(Phase::Aborted))
        .await;
    assert_eq!(aborted.weights.map(|w| w.preview.bp()), Some(0));
    c.deployment_deleted("web-green").await;
    let first = rollout_id(&c.shifts.get("web").await.expect("get"));

    // Bad values: a condition and a Warning Event naming each annotation; nothing acted on.
    annotate(&c.client, json!({ PAUSED: "yes", RETRY: "" })).await;
    let bad = c
        .status_until("AnnotationsValid=False", |s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == ANNOTATIONS_VALID && c.status == ConditionStatus::False)
        })
        .await;
    let valid = bad.conditions.iter().find(|c| c.type_ == ANNOTATIONS_VALID);
    let message = valid.map(|v| v.message.clone()).unwrap_or_default();
    assert_eq!(
        message,
        "annotation crossfade.dev/retry: nonce is empty; use any new value, e.g. a timestamp; \
         annotation crossfade.dev/paused: \"yes\" is not \"true\" or \"false\"; \
         taken as \"true\" until it is fixed"
    );
    assert_eq!(condition(&bad, ANNOTATIONS_VALID).1, "InvalidAnnotation");
    assert_eq!(bad.phase, Some(Phase::Aborted));
    events_with(&c.client, &["Warning InvalidAnnotation"]).await;

    // Fixed, and a retry: a new rollout of the same spec, from its first step.
    annotate(&c.client, json!({ PAUSED: null, RETRY: "r1" })).await;
    c.status_until("retried, step 1 at 10% again", |s| {
        at_step_one(s) && condition(s, ANNOTATIONS_VALID).0 == ConditionStatus::True
    })
    .await;
    let second = rollout_id(&c.shifts.get("web").await.expect("get"));
    assert_eq!(second, first + 1);
    let preview = c.deploys.get("web-green").await.expect("preview again");
    assert!(preview.metadata.deletion_timestamp.is_none());

    // The same abort and retry nonces re-applied: nothing happens; a new abort nonce aborts.
    annotate(
        &c.client,
        json!({ ABORT: "a1", RETRY: "r1", "gitops/synced": "2" }),
    )
    .await;
    annotate(&c.client, json!({ ABORT: "a2" })).await;
    c.status_until("Aborted again", |s| s.phase == Some(Phase::Aborted))
        .await;
    let events = events(&c.client).await;
    assert_eq!(count(&events, "Normal Retried"), 1, "{events:?}");
    assert_eq!(count(&events, "Normal Aborting"), 2, "{events:?}");
    // Trial 10, K3: an operator's abort is not a supersede, and says who aborted.
    assert_eq!(count(&events, "Normal Superseded"), 0, "{events:?}");
    let aborting = notes(&c.client, "web", "Aborting").await;
    assert_eq!(aborting.len(), 2, "{aborting:?}");
    assert!(
        aborting
            .iter()
            .all(|n| n.starts_with("aborted by operator")),
        "{aborting:?}"
    );
    assert_eq!(rollout_id(&c.shifts.get("web").await.expect("get")), second);
    ctl.abort();
}

#[tokio::test]
async fn an_abort_during_provisioning_shows_no_step_as_started() {
    // Trial 7, G4: it showed `phase: Aborting (step 1/4)` although step 1 had not started.
    let Some(c) = Cluster::start(&["web"]) else {
        return; // web-green never becomes available: the rollout stays provisioning
    };
    c.create_target(&[]).await;
    let log = c.status_log();
    c.create_shift(slow_policy()).await;
    let ctl = c.controller();
    c.status_until("Provisioning", |s| s.phase == Some(Phase::Provisioning))
        .await;
    annotate(&c.client, json!({ ABORT: "a1" })).await;
    let aborted = c
        .status_until("Aborted", |s| s.phase == Some(Phase::Aborted))
        .await;
    assert_eq!(aborted.step, None, "no step started");
    log.until("the log to see Aborted", |s| {
        s.phase == Some(Phase::Aborted)
    })
    .await;
    let all = log.all();
    let aborting: Vec<_> = all
        .iter()
        .filter(|s| s.phase == Some(Phase::Aborting))
        .collect();
    assert!(!aborting.is_empty(), "{all:?}");
    assert!(aborting.iter().all(|s| s.step.is_none()), "{aborting:?}");
    let shown = describe(&c.shifts.get("web").await.expect("get"));
    assert!(
        shown.contains("  phase: Aborted (during provisioning)\n"),
        "{shown}"
    );
    assert!(
        shown.contains("  message: aborted: aborted by operator while provisioning\n"),
        "{shown}"
    );
    ctl.abort();
}

/// The sequential judge's fields set in the TrafficShift (`judge: Sequential`,
/// `failWhenWorseThan: Allowance`, `maxLatencyIncrease`) reach the judge of a rollout run in
/// Kubernetes mode: the rollout record in status, from which the controller builds its judge
/// (`judge_for(&record.rollout.config.analysis)`), holds them once the rollout is at step 1.
#[tokio::test]
async fn the_sequential_judges_fields_in_a_trafficshift_reach_the_judge() {
    let Some(c) = Cluster::with_target().await else {
        return;
    };
    c.create_shift(json!({
        "steps": [{ "weight": 10, "hold": "60s" }, { "weight": 100, "hold": "300ms" }],
        "drainTimeout": "300ms",
        "analysis": { "minRequests": 5, "interval": "300ms", "maxInconclusive": 1000,
            "judge": "Sequential", "failWhenWorseThan": "Allowance", "maxLatencyIncrease": "15ms" }
    }))
    .await;
    let _ctl = c.controller();
    let judged = c.status_until("step 1 at 10%", at_step_one).await;
    let shifts: Api<TrafficShift> = Api::default_namespaced(c.client.clone());
    let shift = shifts.get("web").await.expect("get trafficshift web");
    let record = ShiftRecord::from_status(&shift).expect("the rollout's record in status");
    let analysis = &record.rollout.config.analysis;
    assert_eq!(
        analysis.fail_when_worse_than,
        crossfade_controller::spec::FailWhenWorseThan::Allowance,
        "{:?}",
        judged.last_verdict
    );
    assert_eq!(
        analysis.judge,
        crossfade_controller::spec::JudgeKind::Sequential
    );
    assert_eq!(
        analysis.max_latency_increase,
        crossfade_controller::spec::LatencyIncrease::Duration(std::time::Duration::from_millis(15))
    );
}

/// Waits until TrafficShift `name` has a status for which `check` holds; returns it.
async fn status_of_until(
    c: &Cluster,
    name: &str,
    what: &str,
    check: impl Fn(&crossfade_controller::kube::crd::TrafficShiftStatus) -> bool,
) -> crossfade_controller::kube::crd::TrafficShiftStatus {
    crate::support::wait_until(super::shift::WAIT, what, || async {
        let shift = c.shifts.get_opt(name).await.expect("get trafficshift")?;
        shift.status.filter(|s| check(s))
    })
    .await
}

#[tokio::test]
async fn a_new_trafficshift_ignores_a_promote_left_by_an_earlier_one() {
    // Trial 10, K1: `crossfade promote --kube` on an earlier rollout left its nonce on the
    // Deployment, and the next TrafficShift promoted its new image at once with no analysis.
    let Some(c) = Cluster::with_target().await else {
        return;
    };
    annotate(
        &c.client,
        json!({ PROMOTE: "20200101T000000Z-0fc7cc", ABORT: "manual-1" }),
    )
    .await;
    let (ctl, step1) = c.rollout_at_step_one().await;
    let seen = step1.commands.expect("the old nonces recorded");
    assert_eq!(seen.promote.as_deref(), Some("20200101T000000Z-0fc7cc"));
    assert_eq!(seen.abort.as_deref(), Some("manual-1"));
    let ignored = notes(&c.client, "web", "StaleCommandIgnored").await;
    assert_eq!(ignored.len(), 1, "{ignored:?}");
    assert!(
        ignored[0].starts_with(
            "ignored crossfade.dev/abort=manual-1, crossfade.dev/promote=20200101T000000Z-0fc7cc: \
             written before trafficshift web was created"
        ),
        "{ignored:?}"
    );
    let events = events(&c.client).await;
    for never in [
        "Normal PromoteRequested",
        "Normal Aborting",
        "Normal Promoted",
    ] {
        assert_eq!(count(&events, never), 0, "{events:?}");
    }
    // A nonce written now is this TrafficShift's own command.
    annotate(&c.client, json!({ PROMOTE: "p2" })).await;
    c.status_until("Promoted by p2", |s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == PROMOTED && c.status == ConditionStatus::True)
    })
    .await;
    ctl.abort();
}

#[tokio::test]
async fn a_nonce_stamped_after_the_trafficshift_was_created_acts_at_its_first_look() {
    // The other half of K1: a `crossfade promote --kube` given right after the TrafficShift was
    // created, before the controller first looked at it, is not lost.
    let Some(c) = Cluster::with_target().await else {
        return;
    };
    let shift = c.create_shift(slow_policy()).await;
    let created = shift
        .metadata
        .creation_timestamp
        .expect("creationTimestamp")
        .0;
    let later = created
        .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(1))
        .expect("a second later");
    let nonce = format!("{}-a1b2c3", later.strftime("%Y%m%dT%H%M%SZ"));
    annotate(&c.client, json!({ PROMOTE: nonce, ABORT: "manual-1" })).await;
    let ctl = c.controller();
    let promoted = c
        .status_until("Promoted by the fresh nonce", |s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == PROMOTED && c.status == ConditionStatus::True)
        })
        .await;
    let seen = promoted.commands.expect("commands");
    assert_eq!(seen.promote.as_deref(), Some(nonce.as_str()));
    assert_eq!(seen.abort.as_deref(), Some("manual-1"));
    let events = events(&c.client).await;
    assert_eq!(count(&events, "Normal Aborting"), 0, "{events:?}");
    let ignored = notes(&c.client, "web", "StaleCommandIgnored").await;
    assert_eq!(ignored.len(), 1, "{ignored:?}");
    assert!(
        ignored[0].starts_with("ignored crossfade.dev/abort=manual-1: written before"),
        "{ignored:?}"
    );
    ctl.abort();
}

#[tokio::test]
async fn a_second_trafficshift_for_a_deployment_is_refused_and_commands_reach_only_the_first() {
    // Trial 10, K2: both ran, each with its own preview, and a promote for one promoted both.
    let Some(c) = Cluster::with_target().await else {
        return;
    };
    let (ctl, _) = c.rollout_at_step_one().await;
    let third: TrafficShift = serde_json::from_value(json!({
        "apiVersion": "crossfade.dev/v1alpha1", "kind": "TrafficShift",
        "metadata": { "name": "web-third" },
        "spec": { "deployment": "web", "images": { "app": "web:v9" } }
    }))
    .expect("trafficshift");
    c.shifts
        .create(&kube::api::PostParams::default(), &third)
        .await
        .expect("create web-third");
    let refused = status_of_until(&c, "web-third", "Conflict", |s| {
        s.conditions.iter().any(|c| {
            c.type_ == "Progressing" && c.status == ConditionStatus::False && c.reason == "Conflict"
        })
    })
    .await;
    let message = refused.message.clone().unwrap_or_default();
    assert!(
        message.starts_with("deployment web is already rolled out by trafficshift web"),
        "{message}"
    );
    assert_eq!(refused.phase, None, "web-third started nothing");
    let conflicts = notes(&c.client, "web-third", "Conflict").await;
    assert_eq!(conflicts, [message]);

    // The CLI refuses to write a command for it: it would reach `web`.
    let sent = crossfade_controller::kube::ops::send(
        &c.client,
        "default",
        "web-third",
        crossfade_controller::kube::ops::Verb::Promote,
    )
    .await;
    let err = sent.expect_err("a command for web-third is refused");
    assert!(
        err.to_string().starts_with("trafficshift default/web-third does not run: deployment web is already rolled out by trafficshift web"),
        "{err}"
    );

    // A command on the Deployment reaches `web` only; web-third records it as seen.
    annotate(&c.client, json!({ PROMOTE: "p1" })).await;
    c.status_until("web promoted", |s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == PROMOTED && c.status == ConditionStatus::True)
    })
    .await;
    let third = status_of_until(&c, "web-third", "p1 recorded by web-third", |s| {
        s.commands.as_ref().and_then(|c| c.promote.as_deref()) == Some("p1")
    })
    .await;
    assert_eq!(third.phase, None, "{third:?}");
    assert!(
        c.deploys
            .get_opt("web-third-green")
            .await
            .expect("get")
            .is_none(),
        "no preview for web-third"
    );
    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::default_namespaced(c.client.clone());
    assert!(services
        .get_opt("web-third-blue")
        .await
        .expect("get")
        .is_none());
    let events = notes(&c.client, "web-third", "PromoteRequested").await;
    assert!(events.is_empty(), "{events:?}");
    ctl.abort();
}

#[tokio::test]
async fn an_invalid_paused_value_pauses_the_rollout_until_it_is_fixed() {
    // Trial 10, K16: an operator who wrote `paused=yes` meant to stop the rollout.
    let Some(c) = Cluster::with_target().await else {
        return;
    };
    let (ctl, _) = c.rollout_at_step_one().await;

    annotate(&c.client, json!({ PAUSED: "yes" })).await;
    let paused = c
        .status_until("Paused with AnnotationsValid=False", |s| {
            s.phase == Some(Phase::Paused)
                && condition(s, ANNOTATIONS_VALID).0 == ConditionStatus::False
        })
        .await;
    let valid = paused
        .conditions
        .iter()
        .find(|c| c.type_ == ANNOTATIONS_VALID);
    assert_eq!(
        valid.map(|v| v.message.as_str()),
        Some(
            "annotation crossfade.dev/paused: \"yes\" is not \"true\" or \"false\"; \
             taken as \"true\" until it is fixed"
        )
    );
    assert_eq!(paused.weights.map(|w| w.preview.bp()), Some(1000));

    // Fixed to "false": the pause it made ends.
    annotate(&c.client, json!({ PAUSED: "false" })).await;
    c.status_until("Progressing, AnnotationsValid=True", |s| {
        s.phase == Some(Phase::Progressing)
            && condition(s, ANNOTATIONS_VALID).0 == ConditionStatus::True
    })
    .await;
    let events = events_with(&c.client, &["Normal Paused", "Normal Resumed"]).await;
    assert_eq!(count(&events, "Normal Paused"), 1, "{events:?}");
    ctl.abort();
}

#[tokio::test]
async fn a_command_on_one_rollout_is_not_shown_as_the_next_rollouts() {
    // Trial 10, K18: `last command:` of a rolled-back rollout 4 showed rollout 3's promote as if
    // it applied to rollout 4.
    let Some(c) = Cluster::with_target().await else {
        return;
    };
    let (ctl, _) = c.rollout_at_step_one().await;
    annotate(&c.client, json!({ ABORT: "a1" })).await;
    let aborted = c
        .status_until("rollout 1 aborted", |s| s.phase == Some(Phase::Aborted))
        .await;
    let last = aborted.commands.and_then(|c| c.last).expect("last command");
    assert_eq!(
        (last.value.as_str(), last.accepted),
        ("a1", true),
        "{last:?}"
    );
    assert_eq!(last.rollout_id, Some(1), "{last:?}");
    assert_eq!(aborted.rollout_id, Some(1));
    let shown = describe(&c.shifts.get("web").await.expect("get"));
    assert!(
        shown.contains("  last command: crossfade.dev/abort=a1 accepted: "),
        "{shown}"
    );
    c.deployment_deleted("web-green").await;

    // A new image: rollout 2, which was given no command.
    let patch = json!({ "spec": { "images": { "app": "web:v3" } } });
    c.shifts
        .patch("web", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .expect("patch images");
    let second = c
        .status_until("rollout 2 at step 1", |s| {
            at_step_one(s) && s.observed_generation == Some(2)
        })
        .await;
    let shift = c.shifts.get("web").await.expect("get");
    assert_eq!(rollout_id(&shift), 2);
    assert_eq!(second.rollout_id, Some(2));
    let last = second.commands.and_then(|c| c.last).expect("last command");
    assert_eq!(last.rollout_id, Some(1), "rollout 1's, kept: {last:?}");
    let shown = describe(&shift);
    assert!(
        !shown.contains("  last command: crossfade.dev/abort=a1"),
        "rollout 1's abort shown as rollout 2's: {shown}"
    );
    assert!(
        shown.contains(
            "  last command (to rollout 1; this is rollout 2): crossfade.dev/abort=a1 accepted: "
        ),
        "{shown}"
    );

    // A command on rollout 2 is its own.
    annotate(&c.client, json!({ PAUSED: "true" })).await;
    let paused = c
        .status_until("rollout 2 paused", |s| s.phase == Some(Phase::Paused))
        .await;
    let last = paused.commands.and_then(|c| c.last).expect("last command");
    assert_eq!(
        (last.annotation.as_str(), last.rollout_id),
        (PAUSED, Some(2)),
        "{last:?}"
    );
    let shown = describe(&c.shifts.get("web").await.expect("get"));
    assert!(
        shown.contains("  last command: crossfade.dev/paused=true accepted: "),
        "{shown}"
    );
    ctl.abort();
}

/// A paused rollout whose TrafficShift is then edited into one that does not decode
/// (`hold: 9000h`) is superseded from its record as a progressing one is: aborted (traffic back
/// to blue), then `InvalidSpec`; the pause does not keep it standing.
#[tokio::test]
async fn a_paused_rollout_made_undecodable_is_aborted_from_its_record() {
    let Some(c) = Cluster::with_target().await else {
        return;
    };
    let (ctl, _) = c.rollout_at_step_one().await;
    annotate(&c.client, json!({ PAUSED: "true" })).await;
    c.status_until("Paused", |s| s.phase == Some(Phase::Paused))
        .await;
    make_undecodable(&c.client).await;
    let shown = aborted_as_invalid(&c.client).await;
    assert_eq!(
        shown.weights.as_ref().map(|w| w.preview.bp()),
        Some(0),
        "all traffic back to blue: {shown:?}"
    );
    c.deployment_deleted("web-green").await;
    ctl.abort();
}

/// kube37 (left by kube36): `crossfade promote --kube` on a running record of an older version
/// that names no target (no `deployment`, no promotion words), whose `spec.deployment` was edited
/// to `web2` while no controller ran: the annotation goes on `web`, the Deployment Service
/// `web-blue` selects, which the rollout acts on (the controller's rule, `kube/shift/older.rs`).
/// Before, it went on the live `spec.deployment`, `web2`, which that rollout does not read. With
/// `web-blue` gone no target can be told: nothing is written, and the error says how to name it.
#[tokio::test]
async fn a_command_on_an_older_record_goes_to_the_deployment_its_blue_service_selects() {
    use crossfade_controller::kube::ops::{send, Verb};
    use k8s_openapi::api::core::v1::Service;
    use kube::api::DeleteParams;
    use kube::ResourceExt;

    let Some(c) = an_older_record_whose_spec_names_another_deployment().await else {
        return;
    };
    let annotation = |d: &Deployment, key: &str| d.annotations().get(key).cloned();

    let sent = send(&c.client, "default", "web", Verb::Promote)
        .await
        .expect("promote sent");
    assert_eq!(sent.deployment, "default/web");
    let web = c.deploys.get("web").await.expect("deployment web");
    assert_eq!(
        annotation(&web, PROMOTE),
        Some(sent.annotations[0].1.clone())
    );
    let web2 = c.deploys.get("web2").await.expect("deployment web2");
    assert_eq!(annotation(&web2, PROMOTE), None, "nothing on web2");

    let services: Api<Service> = Api::default_namespaced(c.client.clone());
    services
        .delete("web-blue", &DeleteParams::default())
        .await
        .expect("delete service web-blue");
    let err = send(&c.client, "default", "web", Verb::Abort)
        .await
        .expect_err("no target can be told")
        .to_string();
    assert!(
        err.starts_with(
            "trafficshift default/web: the controller has not named the deployment its rollout \
             acts on yet: status.rolloutState was written by an older version of crossfade"
        ) && err.contains("service web-blue, which selects its target's pods, does not exist")
            && err.ends_with(
                "set status.rolloutState.deployment to it (kubectl edit trafficshift web -n \
                 default --subresource=status); nothing was written"
            ),
        "{err}"
    );
    for name in ["web", "web2"] {
        let d = c.deploys.get(name).await.expect("deployment");
        assert_eq!(annotation(&d, ABORT), None, "no abort on {name}");
    }
}
