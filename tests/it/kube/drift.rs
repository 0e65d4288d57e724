//! The sequential judge at the 100% step in Kubernetes mode: blue takes no traffic there, so a
//! drift of the service's own within the allowance is not read as green being worse (the same
//! rule as `crossfade run`'s, chosen from the weight the controller published).
//!
//! The proxies' counters come from [`FakeProxies`] (1000 requests per scrape, split as
//! published); [`DriftAtFull`] adds what a scrape of their `/metrics` would show: latencies in the
//! buckets, and errors on 5% of the requests green serves while it has all the traffic.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crossfade_controller::kube::proxies::Replica;
use crossfade_controller::kube::scrape::ClusterMetrics;
use crossfade_controller::traffic::MetricsSource;
use crossfade_proxy::histogram::LATENCY_BOUNDS_SECONDS;
use crossfade_proxy::weight::Slot;
use crossfade_proxy::{BackendSnapshot, HistogramSnapshot};
use futures_util::future::BoxFuture;
use serde_json::json;

use super::cluster::{Cluster, FakeProxies};
use super::shift::{completed, rolled_back};

/// [`FakeProxies`]' counters, with 2% of every backend's requests at 100 ms and the rest at 10 ms,
/// and errors on 5% of green's requests served while blue served none (green at 100%).
struct DriftAtFull {
    proxies: Arc<FakeProxies>,
    /// Per route: green's and blue's requests at the last scrape, and green's errors so far.
    seen: Mutex<HashMap<String, (u64, u64, u64)>>,
}

impl DriftAtFull {
    /// Counts the errors of the requests green served since the last scrape.
    fn account(&self, route: &str) {
        let count = |slot| self.proxies.snapshot(route, slot).map_or(0, |s| s.requests);
        let (green, blue) = (count(Slot::Green), count(Slot::Blue));
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let (last_green, last_blue, errors) = seen.entry(route.to_owned()).or_default();
        if blue == *last_blue && green > *last_green {
            *errors += (green - *last_green) * 5 / 100;
        }
        (*last_green, *last_blue) = (green, blue);
    }
}

impl MetricsSource for DriftAtFull {
    fn snapshot(&self, route: &str, slot: Slot) -> crossfade_controller::Result<BackendSnapshot> {
        let mut snapshot = self.proxies.snapshot(route, slot)?;
        let n = snapshot.requests;
        let mut counts = vec![0; LATENCY_BOUNDS_SECONDS.len() + 1];
        let bucket = |seconds: f64| LATENCY_BOUNDS_SECONDS.partition_point(|&b| b < seconds);
        counts[bucket(0.1)] = n * 2 / 100;
        counts[bucket(0.01)] = n - n * 2 / 100;
        snapshot.latency = HistogramSnapshot {
            counts,
            fine: Vec::new(),
            sum_seconds: 0.0,
        };
        if slot == Slot::Green {
            let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
            snapshot.errors = seen.get(route).map_or(0, |s| s.2);
        }
        Ok(snapshot)
    }
}

impl ClusterMetrics for DriftAtFull {
    fn refresh<'a>(&'a self, route: &'a str, replicas: &'a [&'a Replica]) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            self.proxies.refresh(route, replicas).await;
            self.account(route);
        })
    }
}

/// Errors go from 0 to 5% once green has all the traffic, against a 10-point allowance: the
/// rollout completes, and the verdicts at 100% say blue took no traffic. Judged as a step with
/// blue traffic, green's 5% against blue's 0% was proven worse at the first look at 100%.
#[tokio::test]
async fn a_drift_within_the_allowance_at_the_100_percent_step_does_not_roll_green_back() {
    let Some(c) = Cluster::with_target().await else {
        return;
    };
    let proxies = FakeProxies::start(c.client.clone());
    let metrics = Arc::new(DriftAtFull {
        proxies,
        seen: Mutex::default(),
    });
    let ctl = c.controller_with(metrics);
    c.create_shift(json!({
        "steps": [{ "weight": 50 }, { "weight": 100 }], "hold": "1s", "drainTimeout": "300ms",
        "analysis": { "judge": "Sequential", "interval": "300ms", "minRequests": 20,
            "maxErrorRate": "50%", "maxErrorRateIncrease": "10%", "maxLatencyIncrease": "250ms" }
    }))
    .await;
    let done = c
        .status_until("the rollout to end", |s| completed(s) || rolled_back(s))
        .await;
    let verdict = done.last_verdict.clone().expect("a verdict");
    assert!(completed(&done), "{verdict:?}");
    assert!(
        verdict
            .summary
            .starts_with("sequential (blue at 0%): errors green "),
        "{verdict:?}"
    );
    ctl.abort();
}
