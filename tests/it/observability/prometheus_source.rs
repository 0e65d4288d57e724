//! The analysis counters read from a real Prometheus scraping a real `crossfade proxy`
//! ([`PrometheusMetrics`]): they match the proxy's own counters once Prometheus has scraped the
//! last request, stay monotonic across a restart of the proxy (its counters start again at 0,
//! Prometheus' sum falls), and an unreachable Prometheus leaves the route without a reading.

use std::time::Duration;

use crossfade_controller::kube::prometheus::PrometheusMetrics;
use crossfade_controller::kube::scrape::{parse, ClusterMetrics, Reading};
use crossfade_controller::traffic::MetricsSource;
use crossfade_proxy::weight::Slot;
use crossfade_proxy::BackendSnapshot;

use super::get_once;
use super::prometheus::Prometheus;
use crate::support::{proxy_config, temp_dir, RunningProxy, SampleApp};

/// How long Prometheus may take to show what the proxy counted (its scrape interval is 500 ms).
const WITHIN: Duration = Duration::from_secs(15);

/// Route `web`'s blue counters as the proxy itself exports them on `/metrics`.
async fn own_counters(proxy: &RunningProxy) -> Reading {
    let (status, text) = proxy
        .admin
        .get_text("/metrics")
        .await
        .expect("GET /metrics");
    assert_eq!(status, 200, "{text}");
    let mut readings = parse(&text).expect("the proxy's /metrics text");
    readings
        .remove(&("web".to_owned(), Slot::Blue))
        .expect("route web's blue counters")
}

/// Refreshes `source` until blue's snapshot satisfies `done`, checking that every snapshot read
/// on the way is at least `floor` and at least the one before it (monotonic).
async fn read_until(
    source: &PrometheusMetrics,
    floor: u64,
    done: impl Fn(&BackendSnapshot) -> bool,
) -> BackendSnapshot {
    let deadline = tokio::time::Instant::now() + WITHIN;
    let mut last = floor;
    loop {
        source.refresh("web", &[]).await;
        if let Ok(now) = source.snapshot("web", Slot::Blue) {
            assert!(
                now.requests >= last,
                "the reading went back from {last} to {}",
                now.requests
            );
            last = now.requests;
            if done(&now) {
                return now;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the prometheus reading did not get there within {WITHIN:?}: last {last} requests"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends `n` requests through the proxy; returns how many were answered 500.
async fn send(proxy: &RunningProxy, n: usize) -> usize {
    let mut failed = 0;
    for _ in 0..n {
        let answer = get_once(proxy.listen, "/").await;
        failed += usize::from(answer.starts_with("HTTP/1.1 500"));
    }
    failed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_readings_match_the_proxys_counters_and_stay_monotonic_across_its_restart() {
    let dir = temp_dir();
    let blue = SampleApp::start(dir.path(), "blue", "blue-0", &["--error-rate", "50%"]).await;
    let config = proxy_config(&[blue.addr], &[]);
    let mut proxy = RunningProxy::start(dir.path(), "proxy.json", &config).await;
    let Some(prom) = Prometheus::start(dir.path(), proxy.admin.addr).await else {
        return;
    };
    let address = format!("http://{}", prom.address());
    let source = PrometheusMetrics::new(&address, Some(r#"job="crossfade""#)).expect("valid");

    assert_eq!(
        send(&proxy, 20).await,
        10,
        "the sample app fails every second request"
    );
    let own = own_counters(&proxy).await;
    assert_eq!((own.requests, own.errors), (20, 10));
    let seen = read_until(&source, 0, |s| s.requests >= 20).await;
    assert_eq!(
        (seen.requests, seen.errors, &seen.latency.counts),
        (own.requests, own.errors, &own.latency.counts),
        "the reading once Prometheus scraped the last request is the proxy's own"
    );

    // The proxy restarts on the same addresses (same `instance`): its counters start at 0.
    proxy.child.terminate(Duration::from_secs(15)).await;
    let proxy = RunningProxy::start(dir.path(), "proxy.json", &config).await;
    let failed = send(&proxy, 6).await;
    let restarted = r#"crossfade_dispatched_requests_total{route="web",backend="blue"} == 6"#;
    prom.wait_for(restarted, WITHIN).await;
    let after = read_until(&source, 20, |s| s.requests >= 26).await;
    assert_eq!(after.requests, 26, "20 before the restart and 6 after");
    assert_eq!(after.errors as usize, 10 + failed);
    assert_eq!(after.latency.count(), 26);

    drop(prom);
    source.refresh("web", &[]).await;
    let why = source
        .snapshot("web", Slot::Blue)
        .expect_err("no reading from a stopped Prometheus")
        .to_string();
    assert!(
        why.contains("no complete metrics for backend blue") && why.contains(&address),
        "{why}"
    );
}
