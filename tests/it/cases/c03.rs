//! C03 — a pool at weight 0 still gets requests (ingress-nginx#3461, emissary#1605, traefik#1294).
//!
//! Right outcome: weight 0 gets exactly 0 responses and its request counter does not move; an omitted
//! weight is rejected or falls back to a documented default that is never an equal split; with every
//! weight 0 the proxy answers 503 and sends nothing upstream.
//!
//! Scale: the case sends 200,000 requests per phase; CI sends 20,000 over 8 keep-alive connections.
//! A `<=`-instead-of-`<` pick (1 request in 10,000 to the zero-weight pool) shows up in 20,000
//! requests with probability 1 − e⁻² ≈ 86 %; the exhaustive check over all 10,000 draws below
//! catches it with certainty.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::time::Duration;

use crossfade_proxy::config::{BackendConfig, RouteConfig};
use crossfade_proxy::table::RoutingTable;
use crossfade_proxy::weight::{draw_bp, Percent, Slot, FULL_BP};
use serde_json::{json, Value};

use crate::support::proxy::{requests_total, weight_gauges};
use crate::support::spec::write_json;
use crate::support::trace::{assert_no_errors, burst, from_pool};
use crate::support::{
    proxy_config, run_to_end, temp_dir, Load, LoadConfig, RunningProxy, SampleApp, TraceConfig,
};

/// Requests per phase (the case's 200,000 scaled down 10×).
const PER_PHASE: usize = 20_000;
/// Requests per phase over HTTP/2 (fewer: the `<=` slip has its exhaustive check below).
const H2_PER_PHASE: u64 = 5_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c03_zero_weight_gets_nothing_end_to_end() {
    let dir = temp_dir();
    let blue = SampleApp::start(dir.path(), "blue", "blue-0", &[]).await;
    let green = SampleApp::start(dir.path(), "green", "green-0", &[]).await;
    let config = proxy_config(&[blue.addr], &[green.addr]);
    let proxy = RunningProxy::start(dir.path(), "proxy.yaml", &config).await;

    for (blue_bp, green_bp) in [(FULL_BP, 0), (0, FULL_BP)] {
        proxy.set_weights(blue_bp, green_bp).await;
        let (zero, full) = if green_bp == 0 {
            ("green", "blue")
        } else {
            ("blue", "green")
        };
        let before = proxy.admin.metrics().await;
        let records = burst(&TraceConfig::new(proxy.listen), PER_PHASE).await;
        let after = proxy.admin.metrics().await;
        assert_no_errors(&records);
        assert_eq!(from_pool(&records, zero), 0, "{zero} at weight 0 answered");
        assert_eq!(from_pool(&records, full), PER_PHASE);
        assert_eq!(
            requests_total(&after, zero),
            requests_total(&before, zero),
            "crossfade_requests_total for {zero} moved while its weight was 0"
        );
        assert_eq!(
            requests_total(&after, full) - requests_total(&before, full),
            PER_PHASE as f64
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c03_all_weights_zero_answers_503_and_sends_nothing_upstream() {
    let dir = temp_dir();
    let blue = SampleApp::start(dir.path(), "blue", "blue-0", &[]).await;
    let green = SampleApp::start(dir.path(), "green", "green-0", &[]).await;
    let config = proxy_config(&[blue.addr], &[green.addr]);
    let proxy = RunningProxy::start(dir.path(), "proxy.yaml", &config).await;
    proxy.set_weights(5_000, 5_000).await;
    burst(&TraceConfig::new(proxy.listen), 200).await;

    proxy.set_weights(0, 0).await;
    let (metrics, status) = (proxy.admin.metrics().await, proxy.admin.status().await);
    let records = burst(&TraceConfig::new(proxy.listen), 1_000).await;
    for record in &records {
        let answer = record.outcome.as_ref().expect("an answer");
        assert_eq!(answer.status, 503, "{record:?}");
        assert_eq!(answer.pool, "none", "a backend answered: {record:?}");
    }
    let (metrics_after, status_after) = (proxy.admin.metrics().await, proxy.admin.status().await);
    for backend in ["blue", "green"] {
        assert_eq!(
            requests_total(&metrics_after, backend),
            requests_total(&metrics, backend),
            "{backend}: requests counted while the route was disabled"
        );
        let dispatched = |s: &Value| s["routes"][0][backend]["requests"].clone();
        assert_eq!(dispatched(&status_after), dispatched(&status), "{backend}");
    }
}

/// The same over HTTP/2 (h2c prior knowledge, 4 connections): weight 0 gets no stream and its
/// counter does not move, in either direction; with both weights 0 every stream gets the proxy's
/// own 503 and nothing reaches a backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c03_zero_weight_gets_nothing_over_h2() {
    let dir = temp_dir();
    let blue = SampleApp::start(dir.path(), "blue", "blue-0", &[]).await;
    let green = SampleApp::start(dir.path(), "green", "green-0", &[]).await;
    let config = proxy_config(&[blue.addr], &[green.addr]);
    let proxy = RunningProxy::start(dir.path(), "proxy.yaml", &config).await;
    let h2_load = || {
        let mut load = LoadConfig::new(proxy.listen);
        (load.h1, load.h2, load.rate, load.path) = (0, 4, 2_000, "/api".into());
        Load::start(load)
    };

    for (blue_bp, green_bp, zero, full) in
        [(FULL_BP, 0, "green", "blue"), (0, FULL_BP, "blue", "green")]
    {
        proxy.set_weights(blue_bp, green_bp).await;
        let before = proxy.admin.metrics().await;
        let load = h2_load();
        load.wait_requests(H2_PER_PHASE, Duration::from_secs(60))
            .await;
        let report = load.stop().await;
        let after = proxy.admin.metrics().await;
        eprintln!(
            "c03 h2, {zero} at 0: {}, pools {:?}",
            report.summary(),
            report.pools
        );
        assert_eq!(report.errors(), 0, "{}", report.summary());
        assert_eq!(report.by_proto.get("h1"), None, "{}", report.summary());
        assert_eq!(report.pools.get(zero), None, "{zero} at weight 0 answered");
        assert_eq!(report.pools.get(full), Some(&report.total()));
        assert_eq!(
            requests_total(&after, zero),
            requests_total(&before, zero),
            "crossfade_requests_total for {zero} moved while its weight was 0"
        );
    }

    proxy.set_weights(0, 0).await;
    let before = proxy.admin.metrics().await;
    let load = h2_load();
    load.wait_requests(1_000, Duration::from_secs(60)).await;
    let report = load.stop().await;
    let after = proxy.admin.metrics().await;
    assert_eq!(report.transport_errors, 0, "{}", report.summary());
    assert_eq!(
        report.pools.get("none"),
        Some(&report.total()),
        "{:?}",
        report.pools
    );
    let refused: u64 = report
        .bad_status
        .iter()
        .filter(|((status, _), _)| *status == 503)
        .map(|(_, n)| n)
        .sum();
    assert_eq!(refused, report.total(), "{:?}", report.bad_status);
    for backend in ["blue", "green"] {
        assert_eq!(
            requests_total(&after, backend),
            requests_total(&before, backend),
            "{backend}: requests counted while the route was disabled"
        );
    }
}

/// Omitted weights: both omitted → the active slot gets everything (whichever slot is active); one
/// omitted → it gets what the other leaves; the only listed backend at 0 → the config is rejected
/// (the unlisted slot would get 100 % without endpoints). Never an equal split.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c03_omitted_weight_is_never_an_equal_split() {
    let dir = temp_dir();
    let blue = SampleApp::start(dir.path(), "blue", "blue-0", &[]).await;
    let green = SampleApp::start(dir.path(), "green", "green-0", &[]).await;
    let omitted = |active: &str| {
        let mut config = proxy_config(&[blue.addr], &[green.addr]);
        let route = &mut config["routes"][0];
        route["active"] = json!(active);
        route["blue"] = json!({ "endpoints": [blue.addr] });
        route["green"] = json!({ "endpoints": [green.addr] });
        config
    };
    for (active, expected_green) in [("blue", 0), ("green", FULL_BP)] {
        let name = format!("omitted-{active}.yaml");
        let proxy = RunningProxy::start(dir.path(), &name, &omitted(active)).await;
        let weights = weight_gauges(&proxy.admin.metrics().await);
        assert_eq!(
            weights,
            (FULL_BP - expected_green, expected_green),
            "active {active}"
        );
        let records = burst(&TraceConfig::new(proxy.listen), 2_000).await;
        assert_no_errors(&records);
        let expected = if expected_green == 0 { 0 } else { 2_000 };
        assert_eq!(from_pool(&records, "green"), expected, "active {active}");

        // One side given over the admin API: the other gets the rest.
        let (status, answer) = proxy
            .admin
            .put("/routes/web/weights", &json!({ "green": 0 }))
            .await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["weights"], json!({ "blue": FULL_BP, "green": 0 }));
        let records = burst(&TraceConfig::new(proxy.listen), 2_000).await;
        assert_eq!(from_pool(&records, "green"), 0, "active {active}");
    }

    // Blue given, green listed with its weight omitted: green gets the rest, 0.
    let mut config = proxy_config(&[blue.addr], &[green.addr]);
    config["routes"][0]["green"] = json!({ "endpoints": [green.addr] });
    let proxy = RunningProxy::start(dir.path(), "green-omitted.yaml", &config).await;
    assert_eq!(weight_gauges(&proxy.admin.metrics().await), (FULL_BP, 0));
    let records = burst(&TraceConfig::new(proxy.listen), 2_000).await;
    assert_eq!(from_pool(&records, "green"), 0);
    drop(proxy);

    // Only green listed, at weight 0: rejected at start, naming the field.
    let mut config = proxy_config(&[blue.addr], &[green.addr]);
    config["routes"][0]
        .as_object_mut()
        .expect("route object")
        .remove("blue");
    config["routes"][0]["green"] = json!({ "endpoints": [green.addr], "weight": 0 });
    let path = write_json(dir.path(), "only-green-zero.yaml", &config);
    let args = [OsStr::new("proxy"), path.as_os_str()];
    let finished = run_to_end(args, Duration::from_secs(15)).await;
    assert_ne!(finished.code, Some(0), "accepted: {finished:?}");
    assert!(
        finished.stderr.contains("routes[0].blue"),
        "the error names the field: {}",
        finished.stderr
    );
}

/// The pure pick over every possible draw: weight 0 is never chosen, 10000 always is, and a disabled
/// route picks nothing — for every way of writing those weights in a config.
#[test]
fn c03_zero_weight_never_matches_any_draw() {
    let endpoint = |port| vec![SocketAddr::from(([127, 0, 0, 1], port))];
    let backend = |port, weight: Option<u32>| BackendConfig {
        endpoints: endpoint(port),
        weight: weight.map(Percent),
        ..BackendConfig::default()
    };
    let cases = [
        (Some(FULL_BP), Some(0), Slot::Blue, Some(Slot::Blue)),
        (Some(0), Some(FULL_BP), Slot::Blue, Some(Slot::Green)),
        (None, Some(0), Slot::Blue, Some(Slot::Blue)),
        (Some(FULL_BP), None, Slot::Green, Some(Slot::Blue)),
        (None, None, Slot::Blue, Some(Slot::Blue)),
        (None, None, Slot::Green, Some(Slot::Green)),
        (Some(0), Some(0), Slot::Blue, None),
    ];
    for (blue, green, active, expected) in cases {
        let route = RouteConfig {
            name: "web".into(),
            active,
            blue: backend(1, blue),
            green: backend(2, green),
            ..RouteConfig::default()
        };
        let table = RoutingTable::build(1, vec![route], |_, _, _| ());
        let route = &table.routes()[0];
        let extremes = [0, 1, u32::MAX / 2, u32::MAX - 1, u32::MAX].map(draw_bp);
        for r in (0..FULL_BP).chain(extremes) {
            let picked = route.pick(r).map(|b| b.slot());
            assert_eq!(
                picked, expected,
                "blue {blue:?} green {green:?} active {active}: draw {r}"
            );
        }
    }
}
