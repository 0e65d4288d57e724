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
//!
//! The case's last rule, "the controller's analysis is not fooled by windows where green served no
//! traffic", through `crossfade run`: `c14_run_windows_a_health_down_green_served_nothing_never_pass`.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::rollout::wait_terminal;
use crate::support::poll::Observation;
use crate::support::proxy::weight_gauges;
use crate::support::trace::{burst, errors, from_pool, Record};
use crate::support::{
    proxy_config, temp_dir, wait_until, Admin, App, Crossfade, Load, LoadConfig, Poller,
    RunningProxy, SampleApp, Spec, Trace, TraceConfig,
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

/// The case's last rule through `crossfade run` with the sequential judge, whose evidence is
/// cumulative over the rollout: green passes its first looks at 100 %, then its `/healthz` turns
/// 503 for good (10 s after its start) and the route's health checks hold both its instances out,
/// so every request goes to blue and green serves none. Those looks add no evidence, and until
/// trial 31 each of them still passed on the evidence of the earlier ones: at the end of the hold
/// the rollout promoted a green its proxy had marked down and stopped blue (phase `Completed`,
/// the proxy failing open to green). Now each such window is inconclusive (the observed-split
/// guard, as in Kubernetes mode: green got 0 % of the window's requests where 100 % was
/// published), the step never passes, and the rollout rolls back with blue serving throughout.
/// Each such look counts toward `max_inconclusive` (3 by default), though the sequential judge's
/// looks gathering evidence do not: until session 32 the step waited for its progress deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c14_run_windows_a_health_down_green_served_nothing_never_pass() {
    let dir = temp_dir();
    let pool = |name: &str| App::version(name).flags(["--pool", name]);
    let green = App::version("green").flags(["--pool", "green", "--fail-health-after", "10s"]);
    let mut spec = Spec::new().blue(pool("blue")).green(green);
    spec.json["route"]["health"] =
        json!({ "interval": "200ms", "timeout": "150ms", "rise": 2, "fall": 2 });
    spec.json["rollout"]["steps"] =
        json!([{ "weight": 50, "hold": "1s" }, { "weight": 100, "hold": "15s" }]);
    spec.json["rollout"]["progress_deadline"] = json!("20s");
    spec.json["rollout"]["drain_timeout"] = json!("1s");
    spec.json["rollout"]["analysis"] = json!({
        "judge": "sequential",
        "interval": "1s",
        "min_requests": 20,
        // This test is about traffic, not latency: scheduling noise on a loaded machine must not
        // fail or hold back an equal green (see judgement.rs).
        "max_latency_increase": "250ms",
        "fail_when_worse_than": "allowance",
    });
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    let mut config = LoadConfig::new(spec.listen());
    (config.rate, config.path) = (400, "/api".into());
    let load = Load::start(config);

    let rollout = wait_terminal(&admin, Duration::from_secs(60)).await;
    let report = load.stop().await;
    let status = admin.status().await;
    run.terminate(Duration::from_secs(15)).await;

    let at_100: Vec<&Value> = rollout["verdicts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["step"] == 1)
        .collect();
    let outcomes: Vec<&str> = at_100
        .iter()
        .map(|v| v["verdict"]["outcome"].as_str().unwrap_or_default())
        .collect();
    println!(
        "C14 run: {} ({}); looks at 100%: {outcomes:?}; load {}",
        rollout["phase"],
        rollout["message"],
        report.summary()
    );
    // The rule is tested only if green had passed at 100 % before it went down.
    assert!(
        outcomes.contains(&"pass"),
        "green never passed at 100% before its health failed: {outcomes:?}"
    );
    assert_eq!(
        rollout["phase"], "RolledBack",
        "a green its proxy held out was promoted: {rollout:#}"
    );
    let last = at_100.last().expect("looks at 100%");
    let summary = last["verdict"]["summary"].as_str().unwrap_or_default();
    assert_eq!(last["verdict"]["outcome"], "inconclusive", "{last:#}");
    assert!(
        summary.contains("observed split: preview got") && summary.contains("desired 100.0%"),
        "the window where green served nothing says so: {summary}"
    );
    let message = rollout["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("analysis inconclusive (3 of 3 in a row)")
            && message.contains("observed split"),
        "the rollback comes from max_inconclusive, not the progress deadline: {message}"
    );
    assert_eq!(report.errors(), 0, "{}", report.summary());
    assert_eq!(status["routes"][0]["weights"]["green"], 0, "{status:#}");
}

/// The same family at a small canary weight, through the look at the hold's end: green at 5 %
/// (hold 7 s, a look every 3 s, `max_inconclusive: 1`) passes at 3 s and 6 s, its health fails
/// at about 5 s, and the look at 7 s sees it serve none of about 400 requests. Too few for
/// `min_requests` (inconclusive), and the guard's normal approximation, with its 5-point floor,
/// never finds 0 % off at 5 %: the end look counted as a thin slice and the step advanced to 100 %
/// on its earlier pass. Now the window is off-split by the exact chance of none (0.95⁴⁰⁰ ≈ 1e-9),
/// counts, and the rollout rolls back at 5 %.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c14_run_a_small_canary_held_out_by_health_at_the_holds_end_does_not_advance() {
    let dir = temp_dir();
    let pool = |name: &str| App::version(name).flags(["--pool", name]);
    let green = App::version("green").flags(["--pool", "green", "--fail-health-after", "4500ms"]);
    let mut spec = Spec::new().blue(pool("blue")).green(green);
    spec.json["route"]["health"] =
        json!({ "interval": "200ms", "timeout": "150ms", "rise": 2, "fall": 2 });
    spec.json["rollout"]["steps"] = json!([{ "weight": 5, "hold": "7s" }, 100]);
    spec.json["rollout"]["progress_deadline"] = json!("30s");
    spec.json["rollout"]["drain_timeout"] = json!("1s");
    spec.json["rollout"]["analysis"] = json!({
        "interval": "3s",
        "min_requests": 20,
        "max_inconclusive": 1,
        "max_error_rate": "1%",
    });
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    let mut config = LoadConfig::new(spec.listen());
    (config.rate, config.path) = (400, "/api".into());
    let load = Load::start(config);

    let rollout = wait_terminal(&admin, Duration::from_secs(60)).await;
    let report = load.stop().await;
    run.terminate(Duration::from_secs(15)).await;

    let verdicts: Vec<&Value> = rollout["verdicts"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    let looks: Vec<(u64, &str)> = verdicts
        .iter()
        .map(|v| {
            let outcome = v["verdict"]["outcome"].as_str().unwrap_or_default();
            (v["step"].as_u64().unwrap_or(99), outcome)
        })
        .collect();
    println!(
        "C14 small canary: {} ({}); looks (step, outcome): {looks:?}; load {}",
        rollout["phase"],
        rollout["message"],
        report.summary()
    );
    // The rule is tested only if green passed at 5 % before it went down.
    assert!(
        looks.contains(&(0, "pass")),
        "green never passed at 5% before its health failed: {looks:?}"
    );
    assert!(
        looks.iter().all(|(step, _)| *step == 0),
        "the step at 5% advanced on a green its proxy held out: {looks:?}"
    );
    assert_eq!(rollout["phase"], "RolledBack", "{rollout:#}");
    let message = rollout["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("step 1/2 at 5%"),
        "the step at 5% advanced to 100% (a weight that then waited for a held-out green's \
         readiness): {message}"
    );
    assert!(
        message.contains("analysis inconclusive") && message.contains("on one backend"),
        "the rollback names the window green served none of: {message}"
    );
    assert_eq!(report.errors(), 0, "{}", report.summary());
}
