//! `InexactBound` in Kubernetes mode: the controller judges `maxP99` from the proxies'
//! `crossfade_request_duration_seconds` buckets, so a bound between two bucket bounds cannot be
//! decided exactly. A TrafficShift asking for one gets one Warning Event (and a WARN) when its
//! rollout starts, naming the field and the bounds around it, however many reconciles the rollout
//! takes; its verdicts show p99 as an estimate with the bucket around it, and the bound acts as the
//! upper bucket bound. A bound that is a bucket bound gets no Event and is decided exactly.
//!
//! The proxies' counters come from [`FakeProxies`]; the latencies are what a scrape of their
//! `/metrics` would give: bucket counts only, no fine buckets ([`SlowPreview`]).

use std::sync::Arc;

use crossfade_controller::kube::crd::VerdictOutcome;
use crossfade_controller::kube::proxies::Replica;
use crossfade_controller::kube::scrape::ClusterMetrics;
use crossfade_controller::traffic::MetricsSource;
use crossfade_proxy::histogram::LATENCY_BOUNDS_SECONDS;
use crossfade_proxy::weight::Slot;
use crossfade_proxy::{BackendSnapshot, HistogramSnapshot};
use futures_util::future::BoxFuture;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use serde_json::json;

use super::cluster::{Cluster, FakeProxies};
use super::shift::{completed, rolled_back};

/// Every preview request took 700 ms, every active one 10 ms: as scraped, the preview's requests
/// are all in the bucket (500 ms, 750 ms].
const PREVIEW_SECONDS: f64 = 0.7;
const ACTIVE_SECONDS: f64 = 0.01;

/// [`FakeProxies`]' request counts with latencies: each backend's requests all took its fixed
/// time, in the [`LATENCY_BOUNDS_SECONDS`] buckets only (`fine` empty), as the controller reads
/// them from a proxy's `/metrics`.
struct SlowPreview {
    proxies: Arc<FakeProxies>,
}

impl MetricsSource for SlowPreview {
    fn snapshot(&self, route: &str, slot: Slot) -> crossfade_controller::Result<BackendSnapshot> {
        let mut snapshot = self.proxies.snapshot(route, slot)?;
        let seconds = match slot {
            Slot::Green => PREVIEW_SECONDS,
            Slot::Blue => ACTIVE_SECONDS,
        };
        let mut counts = vec![0; LATENCY_BOUNDS_SECONDS.len() + 1];
        counts[LATENCY_BOUNDS_SECONDS.partition_point(|&b| b < seconds)] = snapshot.requests;
        snapshot.latency = HistogramSnapshot {
            counts,
            fine: Vec::new(),
            sum_seconds: seconds * snapshot.requests as f64,
        };
        Ok(snapshot)
    }
}

impl ClusterMetrics for SlowPreview {
    fn refresh<'a>(&'a self, route: &'a str, replicas: &'a [&'a Replica]) -> BoxFuture<'a, ()> {
        self.proxies.refresh(route, replicas)
    }
}

/// A two-step rollout of TrafficShift `web` with `maxP99` as its p99 bound.
fn policy(max_p99: &str) -> serde_json::Value {
    json!({ "steps": [{ "weight": 50 }, { "weight": 100 }], "hold": "300ms",
        "drainTimeout": "300ms", "analysis": { "minRequests": 5, "maxP99": max_p99 } })
}

/// The `InexactBound` Events about TrafficShift `web`.
async fn inexact_events(client: &kube::Client) -> Vec<Event> {
    let api: Api<Event> = Api::default_namespaced(client.clone());
    let list = api.list(&ListParams::default()).await.expect("list events");
    list.items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("InexactBound"))
        .filter(|e| {
            let regarding = e.regarding.as_ref();
            regarding.and_then(|r| r.kind.as_deref()) == Some("TrafficShift")
                && regarding.and_then(|r| r.name.as_deref()) == Some("web")
        })
        .collect()
}

/// `maxP99: 600ms` lies between the bucket bounds 500 ms and 750 ms. The preview's requests all
/// took 700 ms: above the bound, but in the bucket that straddles it, so not proven above it; the
/// rollout completes (the bound acted as 750 ms), its verdict shows the estimate and its bucket,
/// and the one Warning Event said so when the rollout started.
#[tokio::test]
async fn a_max_p99_between_bucket_bounds_is_warned_once_per_rollout_and_acts_as_the_upper_bound() {
    let Some(c) = Cluster::with_target().await else {
        return;
    };
    let proxies = FakeProxies::start(c.client.clone());
    let ctl = c.controller_with(Arc::new(SlowPreview { proxies }));
    c.create_shift(policy("600ms")).await;

    let done = c.status_until("Completed", completed).await;
    let verdict = done.last_verdict.clone().expect("a verdict");
    assert_eq!(verdict.outcome, VerdictOutcome::Pass, "{verdict:?}");
    assert!(
        verdict.summary.contains("p99 ≈ ")
            && verdict
                .summary
                .contains(" (between 500ms and 750ms), not proven above 600ms"),
        "{verdict:?}"
    );
    // Every step, verdict and the retirement were reconciles of their own: still one Event, not
    // repeated (no series).
    let events = inexact_events(&c.client).await;
    assert_eq!(events.len(), 1, "{events:#?}");
    let event = &events[0];
    assert_eq!(event.type_.as_deref(), Some("Warning"), "{event:?}");
    assert!(event.series.is_none(), "published once: {event:?}");
    let note = event.note.clone().unwrap_or_default();
    for part in [
        "spec.rollout.analysis.maxP99: 600ms is not a bound of the proxies' latency buckets",
        "the nearest are 500ms and 750ms",
        "this bound acts as 750ms",
        "Use 500ms or 750ms for an exact decision",
    ] {
        assert!(note.contains(part), "{part:?} not in {note}");
    }
    ctl.abort();
}

/// `maxP99: 500ms` is a bucket bound: no Event, and the same 700 ms preview is proven above it
/// and rolled back.
#[tokio::test]
async fn a_max_p99_on_a_bucket_bound_gets_no_warning_and_is_decided_exactly() {
    let Some(c) = Cluster::with_target().await else {
        return;
    };
    let proxies = FakeProxies::start(c.client.clone());
    let ctl = c.controller_with(Arc::new(SlowPreview { proxies }));
    c.create_shift(policy("500ms")).await;

    let done = c.status_until("RolledBack", rolled_back).await;
    let verdict = done.last_verdict.clone().expect("a verdict");
    assert_eq!(verdict.outcome, VerdictOutcome::Fail, "{verdict:?}");
    assert!(
        verdict
            .summary
            .contains(" (between 500ms and 750ms) > 500ms"),
        "{verdict:?}"
    );
    // The Event would have been published before the rollout's first step, long before this.
    let events = inexact_events(&c.client).await;
    assert!(events.is_empty(), "{events:#?}");
    ctl.abort();
}
