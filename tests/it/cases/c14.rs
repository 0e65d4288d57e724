//! C14 — weights forgotten after a health check fails and recovers (traefik#2986).
//!
//! Right outcome: while green is marked down, 100 % of traffic goes to blue with 0 errors; within
//! about rise × interval of green recovering, the split returns to the configured 90/10; it never
//! becomes 50/50; the configured weights on `/metrics` never change. (A single failed probe below
//! `fall` not taking the pool out is proven exactly, on paused time, by the proxy's unit test
//! `health::tests::one_failed_probe_below_fall_keeps_the_endpoint_up`.)
//!
//! Scale: green's `/healthz` flaps 200/503 every 3 s for 3 cycles (the case: 5), checks every 1 s
//! with rise 2 and fall 2, 300 req/s during the flaps (the case: 500). The split after recovery is
//! measured over 10k requests (the case: 20k): green's share p = 0.1 has σ = √(p(1−p)/n) = 0.3 pp,
//! so the ±1 pp tolerance is 3.3σ.
//!
//! The case's variant, blue (the active pool, at 90) flapping instead of green, runs the same
//! checks with the roles exchanged: while blue is marked down every request goes to green (it has
//! weight, so it takes blue's share) with 0 errors, and 90/10 returns once blue is back.

use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use crate::support::poll::Observation;
use crate::support::proxy::weight_gauges;
use crate::support::trace::{burst, errors, from_pool, Record};
use crate::support::{
    proxy_config, temp_dir, wait_until, Poller, RunningProxy, SampleApp, Trace, TraceConfig,
};

/// Half a flap period of green's `/healthz`, and the number of cycles.
const FLAP: Duration = Duration::from_secs(3);
const CYCLES: u32 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c14_weights_return_exactly_after_health_flaps() {
    flaps("green").await;
}

/// The case's variant: the active pool, blue at 90 %, flaps; green (10 %) carries everything while
/// blue is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c14_weights_return_exactly_after_the_active_pool_flaps() {
    flaps("blue").await;
}

/// Runs the case with `flapping` (`"blue"` or `"green"`) flapping its `/healthz` and the other pool
/// steady, weights 90/10 held throughout.
async fn flaps(flapping: &str) {
    let dir = temp_dir();
    let flags = ["--health-flap", "3s", "--health-flap-cycles", "3"];
    let flags_of = |pool: &str| {
        if pool == flapping {
            &flags[..]
        } else {
            &[][..]
        }
    };
    let blue = SampleApp::start(dir.path(), "blue", "blue-0", flags_of("blue")).await;
    let green = SampleApp::start(dir.path(), "green", "green-0", flags_of("green")).await;
    // The later start bounds the flapping app's schedule from above.
    let flap_started = Instant::now();
    let mut config = proxy_config(&[blue.addr], &[green.addr]);
    config["routes"][0]["blue"]["weight"] = json!(90);
    config["routes"][0]["green"]["weight"] = json!(10);
    config["routes"][0]["health"] =
        json!({ "interval": "1s", "timeout": "500ms", "rise": 2, "fall": 2 });
    let proxy = RunningProxy::start(dir.path(), "proxy.yaml", &config).await;
    let mut trace_config = TraceConfig::new(proxy.listen);
    trace_config.rate = 300;
    let trace = Trace::start(trace_config);
    let statuses = Poller::start(proxy.admin, "/status", Duration::from_millis(20));

    // Through the flaps, the configured weights on /metrics never move.
    let flaps_end = flap_started + FLAP * 2 * CYCLES;
    let mut gauges = Vec::new();
    while Instant::now() < flaps_end {
        gauges.push(weight_gauges(&proxy.admin.metrics().await));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let recovered = wait_until(
        Duration::from_secs(20),
        "the flapping pool healthy again",
        || async {
            let status = proxy.admin.status().await;
            (status["routes"][0][flapping]["health"][0]["healthy"] == true).then(Instant::now)
        },
    )
    .await;
    let records = trace.stop().await;
    let statuses = statuses.stop().await;
    let split = burst(&TraceConfig::new(proxy.listen), 10_000).await;
    let metrics = proxy.admin.metrics().await;

    let (violations, while_down) = answered_while_down(&records, &statuses, flapping);
    let downs = metrics.get(
        "crossfade_ejections_total",
        &[
            ("route", "web"),
            ("backend", flapping),
            ("reason", "health_check"),
        ],
    );
    let green_share = from_pool(&split, "green") as f64 / split.len() as f64;
    println!(
        "C14 ({flapping} flaps): {} requests during flaps, {} errors, {while_down} answered while \
         {flapping} was down ({violations} by {flapping}); {flapping} marked down {downs:?} times; \
         recovered {:?} after its health returned; split after recovery green {:.2}% of {} \
         (errors {})",
        records.len(),
        errors(&records).len(),
        recovered.duration_since(flaps_end),
        green_share * 100.0,
        split.len(),
        errors(&split).len()
    );
    assert!(
        errors(&records).is_empty(),
        "errors: {:?}",
        errors(&records).first()
    );
    assert!(
        while_down > 100,
        "too little traffic while {flapping} was down: {while_down}"
    );
    assert_eq!(violations, 0, "{flapping} answered while marked down");
    assert!(
        matches!(downs, Some(d) if (2.0..=3.0).contains(&d)),
        "downs {downs:?}"
    );
    assert!(
        gauges.iter().all(|&g| g == (9_000, 1_000)),
        "weights moved: {gauges:?}"
    );
    assert_eq!(weight_gauges(&metrics), (9_000, 1_000));
    assert!(
        recovered.duration_since(flaps_end) <= Duration::from_secs(5),
        "{flapping} marked healthy {:?} after its health returned",
        recovered.duration_since(flaps_end)
    );
    assert!(errors(&split).is_empty());
    assert!(
        (green_share - 0.10).abs() <= 0.01,
        "green share {green_share}"
    );
}

/// (answers by `pool` while it was down, all answers while it was down). A request counts as
/// "while down" when the last `/status` answer before it started and the first one after it
/// finished both show `pool`'s endpoint down; a flap back up between them would need two probes
/// (2 s), far more than the 20 ms between answers.
fn answered_while_down(records: &[Record], statuses: &[Observation], pool: &str) -> (usize, usize) {
    let down = |o: &Observation| o.value["routes"][0][pool]["health"][0]["healthy"] == false;
    let mut violations = 0;
    let mut total = 0;
    for record in records {
        let before = statuses.iter().rev().find(|o| o.received <= record.started);
        let after = statuses.iter().find(|o| o.sent >= record.finished);
        if let (Some(before), Some(after)) = (before, after) {
            if down(before) && down(after) {
                total += 1;
                violations += usize::from(record.pool() == Some(pool));
            }
        }
    }
    (violations, total)
}
