//! The shadow step against proxies that record no pairs (older than the controller) and little of
//! blue's live traffic: `maxP99Ratio` cannot be read on pairs, nor against blue's live p99 until
//! blue has served `minRequests` in the window. Such a window is inconclusive, never a pass on
//! its comparisons alone (session 40: it passed, and green got live weight with the ratio never
//! checked); the window grows until the ratio can be read, and then it decides.
//!
//! The proxies are [`FakeProxies`] (Lease acks) with the counters of [`OlderProxies`]: per
//! refresh, 10 comparisons of green's at 150 ms and no pair, and one live request of blue's at
//! 50 ms, in the `/metrics` buckets only. So the outcome hangs on how many refreshes the window
//! spans, not on how long anything takes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crossfade_controller::kube::crd::{Phase, TrafficShiftStatus, VerdictOutcome};
use crossfade_controller::kube::proxies::Replica;
use crossfade_controller::kube::scrape::ClusterMetrics;
use crossfade_controller::traffic::MetricsSource;
use crossfade_proxy::histogram::LATENCY_BOUNDS_SECONDS;
use crossfade_proxy::weight::Slot;
use crossfade_proxy::{BackendSnapshot, HistogramSnapshot, ShadowSnapshot};
use futures_util::future::BoxFuture;
use serde_json::json;

use super::cluster::{Cluster, FakeProxies};
use super::shift::{completed, notes, rolled_back};

/// Green's time on each mirrored request and blue's on each live one: 3×.
const GREEN_SECONDS: f64 = 0.15;
const BLUE_SECONDS: f64 = 0.05;

/// [`FakeProxies`] with the counters of proxies that mirror but record no pairs, and see a
/// thousandth of the fake proxies' live traffic (one of blue's requests per refresh at 0%).
struct OlderProxies {
    proxies: Arc<FakeProxies>,
    refreshes: AtomicU64,
}

/// `n` requests that each took `seconds`, in the [`LATENCY_BOUNDS_SECONDS`] buckets only, as
/// the controller reads them from a proxy's `/metrics`.
fn all_at(seconds: f64, n: u64) -> HistogramSnapshot {
    let mut counts = vec![0; LATENCY_BOUNDS_SECONDS.len() + 1];
    counts[LATENCY_BOUNDS_SECONDS.partition_point(|&b| b < seconds)] = n;
    HistogramSnapshot {
        counts,
        fine: Vec::new(),
        sum_seconds: seconds * n as f64,
    }
}

impl MetricsSource for OlderProxies {
    fn snapshot(&self, route: &str, slot: Slot) -> crossfade_controller::Result<BackendSnapshot> {
        let mut snapshot = self.proxies.snapshot(route, slot)?;
        snapshot.requests /= 1000;
        let seconds = match slot {
            Slot::Green => GREEN_SECONDS,
            Slot::Blue => BLUE_SECONDS,
        };
        snapshot.latency = all_at(seconds, snapshot.requests);
        Ok(snapshot)
    }

    fn shadow(
        &self,
        _route: &str,
        _slot: Slot,
    ) -> crossfade_controller::Result<Option<ShadowSnapshot>> {
        let compared = 10 * self.refreshes.load(Ordering::SeqCst);
        Ok(Some(ShadowSnapshot {
            mirrored: compared,
            matched: compared,
            latency: all_at(GREEN_SECONDS, compared),
            ..ShadowSnapshot::default()
        }))
    }
}

impl ClusterMetrics for OlderProxies {
    fn refresh<'a>(&'a self, route: &'a str, replicas: &'a [&'a Replica]) -> BoxFuture<'a, ()> {
        self.refreshes.fetch_add(1, Ordering::SeqCst);
        self.proxies.refresh(route, replicas)
    }
}

#[tokio::test]
async fn a_shadow_window_too_thin_for_max_p99_ratio_is_held_until_the_ratio_rolls_green_back() {
    let Some(c) = Cluster::with_target().await else {
        return;
    };
    let proxies = FakeProxies::start(c.client.clone());
    let older = OlderProxies {
        proxies,
        refreshes: AtomicU64::new(0),
    };
    let ctl = c.controller_with(Arc::new(older));
    c.create_shift(json!({
        "steps": [{ "weight": 0 }, { "weight": 100 }], "hold": "300ms",
        "drainTimeout": "300ms", "progressDeadline": "120s",
        "analysis": { "minRequests": 20, "maxP99": "1s", "maxP99Ratio": 2.0,
            "maxInconclusive": 100, "shadow": { "minCompared": 5 } }
    }))
    .await;

    let ended = |s: &TrafficShiftStatus| rolled_back(s) || completed(s);
    let done = c.status_until("the rollout's end", ended).await;
    assert_eq!(done.phase, Some(Phase::RolledBack), "{done:#?}");
    let verdict = done.last_verdict.clone().expect("a verdict");
    assert_eq!(verdict.outcome, VerdictOutcome::Fail, "{verdict:?}");
    assert!(
        verdict.summary.starts_with("shadow p99 ratio to active ")
            && verdict
                .summary
                .contains("(unpaired: 0 pairs < 5, against active's live p99)"),
        "{verdict:?}"
    );
    assert_eq!(done.step, Some(0), "rolled back at the shadow step");
    // Before blue had served 20 requests in the window, the looks said why they decided nothing.
    let held = notes(&c.client, "web", "AnalysisInconclusive").await;
    assert!(
        held.iter().any(|n| n.contains(
            "shadow p99 ratio not checked: 0 pairs < 5, and against its live p99: active served "
        )),
        "{held:#?}"
    );
    eprintln!("{} looks held, then: {}", held.len(), verdict.summary);
    let passed = notes(&c.client, "web", "AnalysisPassed").await;
    assert!(passed.is_empty(), "{passed:#?}");
    ctl.abort();
}
