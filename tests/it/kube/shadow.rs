//! The shadow step in Kubernetes mode, with nothing stubbed: the `crossfade controller --kube` and
//! `crossfade proxy --kube` binaries against the emulator, real sample-app backends, steady load
//! through the proxy. The controller publishes the mirror settings with the shadow step's weights
//! (`status.weights.shadow`), the proxy mirrors blue's requests to green once it applies them
//! (acknowledged in its Lease), and the controller judges the shadow counters it scrapes from the
//! proxy's `/metrics`. A green whose answers differ is rolled back before it gets any live weight;
//! an identical green passes into the live steps.

use serde_json::json;

use crossfade_controller::kube::crd::{Phase, TrafficShiftStatus, VerdictOutcome};

use super::e2e::{MadeBy, Scenario, Setup, WAIT};
use super::shift::events;
use crate::support::trace::{errors, from_pool};

/// A 0% shadow step of 2 s (every request mirrored, at least 50 comparisons, no mismatch allowed),
/// then 50% and 100%.
fn shadow_policy() -> serde_json::Value {
    json!({
        "route": { "hosts": ["127.0.0.1"], "port": "http" },
        "rollout": {
            "steps": [{ "weight": 0, "hold": "2s" }, { "weight": 50 }, { "weight": 100 }],
            "hold": "2s", "drainTimeout": "10s", "progressDeadline": "30s",
            "analysis": { "minRequests": 20, "maxErrorRate": "1%",
                "shadow": { "maxMismatchRate": "0%", "minCompared": 50,
                    "mirror": { "percent": 100, "compareHeaders": ["content-type"] } } }
        }
    })
}

/// Whether `status` shows the shadow step's weights: preview 0 with mirror settings.
fn mirroring(status: &TrafficShiftStatus) -> bool {
    status
        .weights
        .as_ref()
        .is_some_and(|w| w.preview.bp() == 0 && w.shadow.is_some())
}

/// The proxy's shadow counter `name` for mirror target green, with `labels`.
async fn shadow_count(admin: &crate::support::Admin, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut all = vec![("route", "default/web"), ("backend", "green")];
    all.extend_from_slice(labels);
    admin.metrics().await.get(name, &all).unwrap_or(0.0)
}

#[tokio::test]
async fn a_green_whose_answers_differ_is_rolled_back_at_the_shadow_step_before_any_live_weight() {
    // `/` names the version: green's body differs from blue's on every request.
    let setup = Setup::new(MadeBy::Policy(shadow_policy()));
    let Some((s, trace)) = Scenario::start(setup).await else {
        return;
    };
    let done = s
        .cluster
        .status_until("RolledBack", |s| s.phase == Some(Phase::RolledBack))
        .await;
    let verdict = done.last_verdict.clone().expect("a verdict");
    assert_eq!(
        verdict.outcome,
        VerdictOutcome::Fail,
        "{verdict:?}\ncontroller:\n{}",
        s.controller.log()
    );
    assert!(
        verdict.summary.contains("shadow mismatch rate 100% > 0%"),
        "{verdict:?}"
    );
    assert_eq!(done.step, Some(0), "rolled back at the shadow step");
    // The mirror settings were published with the shadow step's weights, and taken back.
    s.log.until("the shadow step's weights", mirroring).await;
    let weights = done.weights.clone().expect("weights");
    assert_eq!((weights.preview.bp(), weights.shadow), (0, None));
    assert!(
        s.log.preview_weights().iter().all(|&bp| bp == 0),
        "green got live weight: {:?}",
        s.log.preview_weights()
    );
    // The proxy mirrored and compared (its own counters, which the controller scraped).
    let mismatched = shadow_count(
        &s.admin,
        "crossfade_shadow_compared_total",
        &[("result", "mismatched")],
    )
    .await;
    assert!(mismatched >= 50.0, "{mismatched} mismatches");
    let body = shadow_count(
        &s.admin,
        "crossfade_shadow_mismatches_total",
        &[("kind", "body")],
    )
    .await;
    assert!(body >= 50.0, "{body} body mismatches");
    // The rollback is applied (RolledBack follows the proxy's ack): nothing is mirrored any more.
    let before = shadow_count(&s.admin, "crossfade_shadow_mirrored_total", &[]).await;
    trace.wait_requests(trace.len() + 150, WAIT).await;
    let after = shadow_count(&s.admin, "crossfade_shadow_mirrored_total", &[]).await;
    assert_eq!(before, after, "requests mirrored after the rollback");
    // No client was ever answered by green, and none saw an error.
    let records = trace.stop().await;
    assert_eq!(
        from_pool(&records, "green"),
        0,
        "a client got green's answer"
    );
    let failed = errors(&records);
    assert!(failed.is_empty(), "{:?}", failed.first());
    let seen = events(&s.cluster.client).await;
    assert!(
        seen.iter().any(|e| e == "Warning AnalysisFailed"),
        "{seen:?}"
    );
    s.stop().await;
}

#[tokio::test]
async fn an_identical_green_passes_the_shadow_step_and_proceeds_to_its_live_steps() {
    // `/chunked` is the same 10 KB pattern from every version (only `X-Version` says which).
    let setup = Setup {
        path: "/chunked",
        ..Setup::new(MadeBy::Policy(shadow_policy()))
    };
    let Some((s, trace)) = Scenario::start(setup).await else {
        return;
    };
    let done = s
        .cluster
        .status_until("Completed", |s| s.phase == Some(Phase::Completed))
        .await;
    s.log
        .until("the log to see Completed", |s| {
            s.phase == Some(Phase::Completed)
        })
        .await;
    let records = trace.stop().await;
    let failed = errors(&records);
    assert!(
        failed.is_empty(),
        "{} of {} requests failed, first {:?}\ncontroller:\n{}",
        failed.len(),
        records.len(),
        failed.first(),
        s.controller.log()
    );
    assert!(
        from_pool(&records, "green") > 0,
        "green served no live step"
    );
    // The shadow step passed on the proxy's comparisons, then the live steps followed.
    let all = s.log.all();
    // (Only the shadow step is judged by the mismatch rate; its pass shows with the next step.)
    let passed = all.iter().find(|s| {
        s.last_verdict.as_ref().is_some_and(|v| {
            v.outcome == VerdictOutcome::Pass && v.summary.contains("shadow mismatch rate 0%")
        })
    });
    assert!(passed.is_some(), "no shadow pass: {all:#?}");
    assert!(all.iter().any(mirroring), "no shadow weights published");
    assert_eq!(s.log.preview_weights(), [0, 5000, 10_000, 0]);
    // Mirroring ended with the shadow step: no live step's publication carries mirror settings.
    assert!(
        all.iter()
            .filter_map(|s| s.weights.as_ref())
            .all(|w| w.preview.bp() == 0 || w.shadow.is_none()),
        "{all:#?}"
    );
    assert_eq!(done.weights.and_then(|w| w.shadow), None);
    let matched = shadow_count(
        &s.admin,
        "crossfade_shadow_compared_total",
        &[("result", "matched")],
    )
    .await;
    let mismatched = shadow_count(
        &s.admin,
        "crossfade_shadow_compared_total",
        &[("result", "mismatched")],
    )
    .await;
    assert!(
        matched >= 50.0 && mismatched == 0.0,
        "{matched} matched, {mismatched} mismatched"
    );
    s.stop().await;
}

/// newuser32's G in the cluster: a green that answers like blue (`/chunked`) but 1.5 s late is
/// rolled back at the shadow step on its response times to the mirrored requests, which the
/// controller scrapes from the proxy (`crossfade_shadow_request_duration_seconds`), before any
/// live weight.
#[tokio::test]
async fn a_green_that_answers_alike_but_slower_than_max_p99_is_rolled_back_at_the_shadow_step() {
    let mut policy = shadow_policy();
    policy["rollout"]["analysis"]["maxP99"] = json!("300ms");
    policy["rollout"]["analysis"]["shadow"]["minCompared"] = json!(5);
    let setup = Setup {
        path: "/chunked",
        green_flags: vec!["--latency", "1500"],
        ..Setup::new(MadeBy::Policy(policy))
    };
    let Some((s, trace)) = Scenario::start(setup).await else {
        return;
    };
    let done = s
        .cluster
        .status_until("RolledBack", |s| s.phase == Some(Phase::RolledBack))
        .await;
    let verdict = done.last_verdict.clone().expect("a verdict");
    assert_eq!(
        verdict.outcome,
        VerdictOutcome::Fail,
        "{verdict:?}\ncontroller:\n{}",
        s.controller.log()
    );
    assert!(verdict.summary.contains("shadow p99"), "{verdict:?}");
    assert!(
        verdict.summary.contains("shadow mismatch rate 0%")
            || verdict.summary.contains("0 differed"),
        "{verdict:?}"
    );
    assert_eq!(done.step, Some(0), "rolled back at the shadow step");
    assert!(
        s.log.preview_weights().iter().all(|&bp| bp == 0),
        "green got live weight: {:?}",
        s.log.preview_weights()
    );
    let timed = shadow_count(
        &s.admin,
        "crossfade_shadow_request_duration_seconds_count",
        &[],
    )
    .await;
    assert!(timed >= 1.0, "{timed} mirrored requests timed");
    let records = trace.stop().await;
    assert_eq!(
        from_pool(&records, "green"),
        0,
        "a client got green's answer"
    );
    s.stop().await;
}

/// shadow34 in the cluster: blue 50 ms, green the same answers 150 ms late (3×, within
/// `maxP99: 1s`): the shadow step reads `maxP99Ratio` on the pairs (both backends' times on the
/// same mirrored requests, scraped from the proxy's `crossfade_shadow_paired_*` histograms) and
/// rolls green back before any live weight.
#[tokio::test]
async fn a_green_3x_slower_than_blue_on_the_same_requests_is_rolled_back_by_the_paired_ratio() {
    let mut policy = shadow_policy();
    // A shadow step of 5 s, not 2 s: on a loaded machine (CI beside other builds) a 2 s window
    // once passed green and the live 50% step rolled it back instead (`p99 ratio to active ≈
    // 3.33 ... (76 requests)`: green had live weight). Not for want of pairs (a 2 s window holds
    // about 270): a pause of the proxy delays blue's and green's exchanges in flight alike, and
    // when those are more than 1% of the pairs they are both p99s, at a ratio under 2 (session
    // 40 reproduced it 4 times in 4 by stopping the proxy for 80 ms: `≈ 1.87 ... (paired: p99
    // 249ms vs active's 133.5ms on the same 264 mirrored requests)`). Over 5 s, about 700 pairs,
    // the same pause read 2.36 and 3.04 (docs/shadow.md, "Few pairs and a stalled proxy").
    policy["rollout"]["steps"][0]["hold"] = json!("5s");
    policy["rollout"]["analysis"]["maxP99"] = json!("1s");
    policy["rollout"]["analysis"]["maxP99Ratio"] = json!(2.0);
    policy["rollout"]["analysis"]["shadow"]["minCompared"] = json!(5);
    let setup = Setup {
        path: "/chunked",
        blue_flags: vec!["--latency", "50"],
        green_flags: vec!["--latency", "150"],
        ..Setup::new(MadeBy::Policy(policy))
    };
    let Some((s, trace)) = Scenario::start(setup).await else {
        return;
    };
    let done = s
        .cluster
        .status_until("RolledBack", |s| s.phase == Some(Phase::RolledBack))
        .await;
    let verdict = done.last_verdict.clone().expect("a verdict");
    assert_eq!(
        verdict.outcome,
        VerdictOutcome::Fail,
        "{verdict:?}\ncontroller:\n{}",
        s.controller.log()
    );
    assert!(
        verdict.summary.contains("shadow p99 ratio to active")
            && verdict.summary.contains("(paired: p99 "),
        "{verdict:?}"
    );
    assert_eq!(done.step, Some(0), "rolled back at the shadow step");
    assert!(
        s.log.preview_weights().iter().all(|&bp| bp == 0),
        "green got live weight: {:?}",
        s.log.preview_weights()
    );
    let paired = shadow_count(
        &s.admin,
        "crossfade_shadow_paired_active_duration_seconds_count",
        &[],
    )
    .await;
    assert!(paired >= 5.0, "{paired} pairs");
    let records = trace.stop().await;
    assert_eq!(
        from_pool(&records, "green"),
        0,
        "a client got green's answer"
    );
    s.stop().await;
}
