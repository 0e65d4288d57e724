//! `crossfade controller --kube --metrics ADDR`, the binary: `/metrics` shows the TrafficShift's
//! rollout (phase, step, verdicts; every outcome's duration series at 0 before any rollout ends)
//! under route `default/web` and `crossfade_backend_info` with the
//! target's and the preview's images and the digests their pods report; `/healthz` and `/readyz`
//! answer 200; the TrafficShift deleted, every series of its route goes; the Lease lost, every
//! route series goes.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::cli::spawn_controller;
use super::cluster::{Cluster, FakeProxies};
use super::pods::digest_of;
use crate::support::admin::Admin;
use crate::support::{wait_until, Crossfade};

/// The metrics address the controller logged at start (`metrics=127.0.0.1:<port>`).
fn logged_addr(log: &str) -> Option<std::net::SocketAddr> {
    let at = log.find("metrics=")? + "metrics=".len();
    let rest = &log[at..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The controller's metrics listener, once `ctl` logged its address (within 30 s).
async fn metrics_listener(ctl: &Crossfade) -> Admin {
    let addr = wait_until(
        Duration::from_secs(30),
        "the metrics address in the log",
        || {
            let addr = logged_addr(&ctl.log());
            async move { addr }
        },
    )
    .await;
    Admin::new(addr)
}

/// Waits (30 s at most) until `admin`'s `/metrics` answers 200 with no series labelled
/// `route="ROUTE"`, gauges nor counters.
async fn until_no_series_of(admin: &Admin, route: &str) {
    let label = format!("route=\"{route}\"");
    wait_until(
        Duration::from_secs(30),
        &format!("no series of route {route} on /metrics"),
        || async {
            let (code, body) = admin.get_text("/metrics").await.ok()?;
            let left = body
                .lines()
                .any(|l| !l.starts_with('#') && l.contains(&label));
            (code == 200 && !left).then_some(())
        },
    )
    .await;
}

/// The value of the series `line_start` (name and labels, as encoded) in `body`, if present.
fn value(body: &str, line_start: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|rest| rest.trim().parse().ok())
}

/// A cluster with the target Deployment and a TrafficShift whose rollout stays Progressing at its
/// first step (10 %): the fake proxies ack the Lease, but the controller's scraper cannot read
/// their counters (their admin URL is closed), so every verdict is inconclusive and paused on.
/// `None` when the emulator is not available (the test is then skipped, as with [`Cluster::start`]).
async fn stuck_at_the_first_step() -> Option<(Cluster, Arc<FakeProxies>)> {
    let c = Cluster::start_with_pods(&["web", "web-green"])?;
    c.create_target(&[]).await;
    let proxies = FakeProxies::start(c.client.clone());
    c.create_shift(
        json!({ "steps": [{ "weight": 10, "hold": "300ms" }, { "weight": 100 }],
        "drainTimeout": "300ms", "analysis": { "minRequests": 1, "interval": "300ms",
        "onInconclusive": "Pause", "maxInconclusive": 100 } }),
    )
    .await;
    Some((c, proxies))
}

#[tokio::test]
async fn the_controller_binary_exports_the_rollout_of_a_trafficshift_on_its_metrics_listener() {
    let Some((c, _proxies)) = stuck_at_the_first_step().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = c.kubeconfig(dir.path());
    let mut ctl = spawn_controller(
        dir.path(),
        "controller.log",
        &kubeconfig,
        &["--metrics", "127.0.0.1:0"],
    );
    let admin = metrics_listener(&ctl).await;
    let verdicts =
        r#"crossfade_rollout_verdicts_total{route="default/web",outcome="inconclusive"}"#;
    let green_digest = format!("image_digest=\"{}\"", digest_of("web:v2"));
    let body = wait_until(
        Duration::from_secs(30),
        "an inconclusive verdict and green's digest on /metrics",
        || async {
            let (code, body) = admin.get_text("/metrics").await.ok()?;
            let verdict = value(&body, verdicts).is_some_and(|v| v >= 1.0);
            (code == 200 && verdict && body.contains(&green_digest)).then_some(body)
        },
    )
    .await;
    let phase = r#"crossfade_rollout_phase{route="default/web",phase="Progressing"}"#;
    assert_eq!(value(&body, phase), Some(1.0), "{body}");
    let paused = r#"crossfade_rollout_phase{route="default/web",phase="Paused"}"#;
    assert_eq!(value(&body, paused), Some(0.0), "{body}");
    let step = r#"crossfade_rollout_step{route="default/web"}"#;
    assert_eq!(value(&body, step), Some(1.0), "{body}");
    let steps = r#"crossfade_rollout_steps{route="default/web"}"#;
    assert_eq!(value(&body, steps), Some(2.0), "{body}");
    // The TrafficShift's drainTimeout, which bounds Retiring for CrossfadeRolloutStuck.
    let drain = r#"crossfade_rollout_drain_timeout_seconds{route="default/web"}"#;
    assert_eq!(value(&body, drain), Some(0.3), "{body}");
    let desired =
        r#"crossfade_rollout_desired_weight_basis_points{route="default/web",backend="green"}"#;
    assert_eq!(value(&body, desired), Some(1000.0), "{body}");
    let passed = r#"crossfade_rollout_verdicts_total{route="default/web",outcome="pass"}"#;
    assert_eq!(value(&body, passed), Some(0.0), "{body}");
    // No rollout has ended, yet every outcome's duration series is there at 0, so that
    // `increase()` over a range sees the first one (the dashboard's mean rollout duration).
    for outcome in ["completed", "rolled_back", "aborted"] {
        for part in ["count", "sum"] {
            let series = format!(
                r#"crossfade_rollout_duration_seconds_{part}{{route="default/web",outcome="{outcome}"}}"#
            );
            assert_eq!(value(&body, &series), Some(0.0), "{series}\n{body}");
        }
    }
    let started = r#"crossfade_rollout_events_total{route="default/web",reason="StepStarted"}"#;
    assert!(value(&body, started).is_some_and(|v| v >= 1.0), "{body}");
    let blue = format!(
        r#"crossfade_backend_info{{route="default/web",backend="blue",workload="deployment/web",image="web:v1",image_digest="{}",version="web"}} 1"#,
        digest_of("web:v1")
    );
    assert!(body.lines().any(|l| l == blue), "{body}");
    let green = format!(
        r#"crossfade_backend_info{{route="default/web",backend="green",workload="deployment/web-green",image="web:v2",image_digest="{}",version="web-green"}} 1"#,
        digest_of("web:v2")
    );
    assert!(body.lines().any(|l| l == green), "{body}");
    // Asked without `Accept`, the Prometheus text format 0.0.4; Prometheus names OpenMetrics first
    // and gets it (`crossfade_proxy::exposition`).
    assert!(
        !body.contains("# EOF"),
        "the text format has no # EOF: {body}"
    );
    let accept = [(
        "accept",
        "application/openmetrics-text;version=1.0.0,*/*;q=0.1",
    )];
    let (code, headers, openmetrics) = admin
        .request_with("GET", "/metrics", None, &accept)
        .await
        .expect("GET /metrics asking for OpenMetrics");
    assert_eq!(code, 200, "{openmetrics}");
    assert_eq!(
        headers["content-type"],
        crossfade_proxy::exposition::OPENMETRICS_CONTENT_TYPE
    );
    assert!(
        openmetrics.ends_with("# EOF\n"),
        "OpenMetrics ends with # EOF: {openmetrics}"
    );
    for path in ["/healthz", "/readyz"] {
        let (code, text) = admin.get_text(path).await.expect(path);
        assert_eq!((code, text.as_str()), (200, "ok\n"), "{path}");
    }
    let (code, _) = admin.get_text("/nope").await.expect("/nope");
    assert_eq!(code, 404);

    // Trial 10, K19: once the TrafficShift is deleted (the finalizer ran), none of its series
    // stays behind, gauges nor counters.
    c.shifts
        .delete("web", &kube::api::DeleteParams::default())
        .await
        .expect("delete the trafficshift");
    super::cluster::until_deleted(&c.shifts, "web").await;
    until_no_series_of(&admin, "default/web").await;
    let status = ctl.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "{status:?}\n{}", ctl.log());
}

/// Trial 24: a controller that loses the Lease while it runs (another replica took it: here the
/// test writes another holder into it) stops acting and exports no series of the TrafficShift's
/// route, as a follower exports none. Its last values would otherwise stay for as long as it
/// follows: a phase of `Progressing` that never moves (`CrossfadeRolloutStuck` fires for that
/// replica once the real leader's rollout is long over), and a second `phase` series beside the
/// leader's on the dashboard.
#[tokio::test]
async fn a_controller_that_loses_the_lease_exports_no_series_of_the_routes_it_steered() {
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    use kube::api::{Api, PostParams};

    let Some((c, _proxies)) = stuck_at_the_first_step().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = c.kubeconfig(dir.path());
    let extra = ["--identity", "ctl-a", "--lease-duration", "3s"];
    let mut ctl = spawn_controller(dir.path(), "controller.log", &kubeconfig, &extra);
    let admin = metrics_listener(&ctl).await;
    let phase = r#"crossfade_rollout_phase{route="default/web",phase="Progressing"}"#;
    wait_until(
        Duration::from_secs(30),
        "the rollout Progressing on /metrics",
        || async {
            let (code, body) = admin.get_text("/metrics").await.ok()?;
            (code == 200 && value(&body, phase) == Some(1.0)).then_some(())
        },
    )
    .await;

    // Another replica takes the Lease (a renewal of ours that came too late, say).
    let leases: Api<Lease> = Api::default_namespaced(c.client.clone());
    let mut lease = leases
        .get("crossfade-controller")
        .await
        .expect("get the lease");
    let spec = lease.spec.get_or_insert_with(Default::default);
    assert_eq!(spec.holder_identity.as_deref(), Some("ctl-a"));
    spec.holder_identity = Some("ctl-b".into());
    spec.lease_duration_seconds = Some(3600);
    spec.renew_time = Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
    leases
        .replace("crossfade-controller", &PostParams::default(), &lease)
        .await
        .expect("take the lease");

    until_no_series_of(&admin, "default/web").await;
    assert!(ctl.log().contains("leadership lost"), "{}", ctl.log());
    let status = ctl.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "{status:?}\n{}", ctl.log());
}

/// Trial 26: in Kubernetes mode `Promoted` lasts as long as the target Deployment's rolling
/// update, which the progress deadline does not bound, and `CrossfadeRolloutStuck` fired on a
/// large target rolling out for 9 minutes. While promoted, the controller exports when the
/// target last made progress (its `Progressing` condition's `lastUpdateTime`), which the rule
/// takes as a change (`crossfade-rules.test.yaml` has the rule's side); the series goes once the
/// rollout moves on.
#[tokio::test]
async fn a_promoted_rollout_exports_when_its_target_last_made_progress() {
    use crossfade_controller::kube::command::PROMOTE;
    use crossfade_controller::kube::crd::Phase;
    use kube::api::{Patch, PatchParams};

    // The kubelet makes the preview available, never the target: its rolling update goes on.
    let Some(c) = Cluster::start_with_pods(&["web-green"]) else {
        return;
    };
    c.create_target(&[]).await;
    let _proxies = FakeProxies::start(c.client.clone());
    c.create_shift(
        json!({ "steps": [{ "weight": 10, "hold": "60s" }, { "weight": 100 }],
        "drainTimeout": "300ms", "analysis": { "minRequests": 1, "interval": "300ms",
        "onInconclusive": "Pause", "maxInconclusive": 100 } }),
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = c.kubeconfig(dir.path());
    let mut ctl = spawn_controller(dir.path(), "controller.log", &kubeconfig, &[]);
    let admin = metrics_listener(&ctl).await;
    c.status_until("step 1 at 10%", |s| {
        s.weights.as_ref().is_some_and(|w| w.preview.bp() == 1000)
    })
    .await;
    let promote = json!({ "metadata": { "annotations": { PROMOTE: "p1" } } });
    c.deploys
        .patch("web", &PatchParams::default(), &Patch::Merge(promote))
        .await
        .expect("promote");
    c.status_until("Promoted", |s| s.phase == Some(Phase::Promoted))
        .await;
    // What the Deployment controller writes while it rolls the new images out.
    let progressing = json!({ "status": { "conditions": [{ "type": "Progressing", "status": "True",
        "reason": "ReplicaSetUpdated", "lastUpdateTime": "2026-12-04T03:00:00Z",
        "lastTransitionTime": "2026-12-04T02:50:00Z" }] } });
    c.deploys
        .patch_status("web", &PatchParams::default(), &Patch::Merge(progressing))
        .await
        .expect("target status");
    let series = r#"crossfade_rollout_target_progress_timestamp_seconds{route="default/web"}"#;
    wait_until(
        Duration::from_secs(30),
        "the target's last progress on /metrics",
        || async {
            let (_, body) = admin.get_text("/metrics").await.ok()?;
            (value(&body, series) == Some(1_796_353_200.0)).then_some(())
        },
    )
    .await;
    // The target rolled out: the rollout moves on and the series goes.
    let web = super::cluster::promoted_target(&c.deploys).await;
    super::cluster::mark_available(&c.deploys, &web).await;
    c.status_until("Completed", |s| s.phase == Some(Phase::Completed))
        .await;
    wait_until(
        Duration::from_secs(30),
        "no target progress series after the promotion",
        || async {
            let (_, body) = admin.get_text("/metrics").await.ok()?;
            value(&body, series).is_none().then_some(())
        },
    )
    .await;
    let status = ctl.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "{status:?}\n{}", ctl.log());
}

/// Session 41: a controller that takes a rollout over (here a restart; a new leader alike) keeps
/// `crossfade_rollout_transition_timestamp_seconds` at the time the rollout's phase or step last
/// changed, which the record in status keeps (`rolloutState.transitionedAt`). Before, it said the
/// takeover's time, which put `CrossfadeRolloutStuck` off by the takeover's age (the rollout's
/// time in its step before it; `crossfade run` kept the time from session 40 on).
#[tokio::test]
async fn a_restarted_controller_keeps_the_time_of_the_rollouts_last_transition() {
    let Some((c, _proxies)) = stuck_at_the_first_step().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = c.kubeconfig(dir.path());
    let metrics = ["--metrics", "127.0.0.1:0"];
    let mut ctl = spawn_controller(dir.path(), "controller.log", &kubeconfig, &metrics);
    let before = transitioned_at_step_one(&ctl).await;
    // The series moves when the machine steps, the record a moment later, with the transition's
    // status write (session 41: read in between once under CI load, 0.18 s apart).
    let what = format!("rolloutState.transitionedAt to say the series' {before}");
    wait_until(Duration::from_secs(15), &what, || async {
        let shift = c.shifts.get("web").await.ok()?;
        let state = shift.status.and_then(|s| s.rollout_state);
        let at = state
            .as_ref()
            .and_then(|s| s["transitionedAt"].as_str())
            .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())?;
        #[allow(clippy::cast_precision_loss)]
        let at = at.as_microsecond() as f64 / 1e6;
        ((at - before).abs() < 1e-3).then_some(())
    })
    .await;
    // The rollout stays at its step meanwhile (its verdicts inconclusive, paused on at the 100th).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = ctl.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "{status:?}\n{}", ctl.log());
    let mut ctl = spawn_controller(dir.path(), "controller2.log", &kubeconfig, &metrics);
    let after = transitioned_at_step_one(&ctl).await;
    assert!(
        (after - before).abs() < 1e-3,
        "a restart 2 s after the rollout's last transition (at {before}) moved it to {after}"
    );
    let status = ctl.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "{status:?}\n{}", ctl.log());
}

/// `crossfade_rollout_transition_timestamp_seconds` of route `default/web` on `ctl`'s metrics
/// listener, once it shows the rollout `Progressing` at step 1 (within 30 s).
async fn transitioned_at_step_one(ctl: &Crossfade) -> f64 {
    let admin = metrics_listener(ctl).await;
    let phase = r#"crossfade_rollout_phase{route="default/web",phase="Progressing"}"#;
    let step = r#"crossfade_rollout_step{route="default/web"}"#;
    let series = r#"crossfade_rollout_transition_timestamp_seconds{route="default/web"}"#;
    wait_until(
        Duration::from_secs(30),
        "the rollout Progressing at step 1 on /metrics",
        || async {
            let (code, body) = admin.get_text("/metrics").await.ok()?;
            let there = value(&body, phase) == Some(1.0) && value(&body, step) == Some(1.0);
            value(&body, series).filter(|_| code == 200 && there)
        },
    )
    .await
}
