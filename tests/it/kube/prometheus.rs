//! `spec.rollout.analysis.metricsSource.prometheus` end to end, nothing stubbed: the controller and
//! proxy binaries against the emulator, real backends under load, and a real Prometheus scraping
//! the proxy. The analysis judges the counters read from Prometheus: a green answering 500s is
//! rolled back by them; with the Prometheus unreachable (while the proxy's own `/metrics` would
//! answer) no window is read, so none passes and the rollout is rolled back as inconclusive,
//! saying why.

use serde_json::json;

use super::e2e::{load, Cluster, WAIT};
use super::shift::create_target;
use crate::observability::prometheus::Prometheus;
use crate::support::{refused_addr, Crossfade, SampleApp};
use crossfade_controller::kube::crd::{Phase, TrafficShiftStatus, VerdictOutcome};

/// The pieces of one rollout; children stop when it is dropped.
struct Rollout {
    _cluster: Cluster,
    controller: Crossfade,
    _proxy: Crossfade,
    _prometheus: Option<Prometheus>,
    _apps: Vec<SampleApp>,
}

/// Blue (2 instances), green (1, with `green_flags`), the proxy, then TrafficShift `web` whose
/// analysis reads from Prometheus: a real one scraping the proxy (`live`), or an address that
/// refuses connections. Load through the proxy, then the controller, then green provisioned.
/// `None` without the emulator or without the `prometheus` binary.
async fn roll_out(green_flags: &[&str], live: bool) -> Option<(Rollout, TrafficShiftStatus)> {
    let cluster = Cluster::start()?;
    let path = cluster.dir.path().to_owned();
    let mut apps = SampleApp::start_many(&path, "blue", 2).await;
    let green = vec![SampleApp::start(&path, "green", "green-0", green_flags).await];
    create_target(&cluster.client, &[]).await;
    cluster.publish("web-blue", &apps).await;
    let (proxy, listen, admin) = cluster.proxy(&[]).await;
    let (refused, refused_at) = refused_addr();
    let prometheus = match live {
        true => Some(Prometheus::start(&path, admin.addr).await?),
        false => None,
    };
    let address = prometheus.as_ref().map_or(refused_at, Prometheus::address);
    let mut policy = Cluster::policy();
    if !live {
        // Every window is unread anyway: no need to wait for the hold's.
        policy["rollout"]["analysis"]["interval"] = json!("1s");
    }
    policy["rollout"]["analysis"]["metricsSource"] = json!({ "prometheus": {
        "address": format!("http://{address}"), "selector": "job=\"crossfade\"" } });
    cluster.create_shift_with(policy).await;
    let trace = load(listen);
    trace.wait_requests(50, WAIT).await;
    if let Some(p) = &prometheus {
        // Prometheus finds its targets a few seconds after it starts (its discovery manager
        // sends updates every 5 s): the rollout starts once it has scraped blue's counters.
        let blue = r#"crossfade_dispatched_requests_total{route="default/web",backend="blue"}"#;
        p.wait_for(blue, WAIT).await;
    }
    let controller = cluster.controller(&[]);
    cluster.provision_green(&green).await;
    apps.extend(green);
    let done = cluster
        .status_until("RolledBack", |s| s.phase == Some(Phase::RolledBack))
        .await;
    let _ = trace.stop().await;
    drop(refused);
    let rollout = Rollout {
        _cluster: cluster,
        controller,
        _proxy: proxy,
        _prometheus: prometheus,
        _apps: apps,
    };
    Some((rollout, done))
}

#[tokio::test]
async fn a_green_that_answers_500s_is_rolled_back_on_the_counters_read_from_prometheus() {
    let Some((r, done)) = roll_out(&["--error-rate", "0.5"], true).await else {
        return;
    };
    let verdict = done.last_verdict.clone().expect("a verdict");
    assert_eq!(
        verdict.outcome,
        VerdictOutcome::Fail,
        "{verdict:?}\ncontroller:\n{}",
        r.controller.log()
    );
    assert!(verdict.summary.contains("error rate"), "{verdict:?}");
}

#[tokio::test]
async fn an_unreachable_prometheus_leaves_every_window_unread_and_the_rollout_rolls_back() {
    let Some((r, done)) = roll_out(&[], false).await else {
        return;
    };
    let message = done.message.clone().unwrap_or_default();
    assert!(
        message.contains("analysis inconclusive (3 of 3 in a row)"),
        "{message}\ncontroller:\n{}",
        r.controller.log()
    );
    assert!(
        message.contains("cannot read metrics") && message.contains("prometheus query http://"),
        "{message}"
    );
    let verdict = done.last_verdict.clone().expect("a verdict");
    assert_eq!(verdict.outcome, VerdictOutcome::Inconclusive, "{verdict:?}");
}
