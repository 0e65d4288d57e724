//! Judgement end to end: `rollout.analysis.checks` against a real Prometheus (Debian's package)
//! scraping a real `crossfade run`, and against a local JSON web endpoint; and a whole rollout
//! decided by the sequential judge.
//!
//! In the check tests the built-in error bound is 100%, so only the check can fail green: what the
//! test sees is the check's decision, not the proxy judge's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::observability::prometheus::Prometheus;
use crate::rollout::wait_terminal;
use crate::support::webhook::{Reply, WebhookServer};
use crate::support::{
    run_to_end, temp_dir, wait_until, Admin, App, Crossfade, Load, LoadConfig, Spec,
};

/// The preview's share of 5xx answers over the last 5 s, from the proxy's own counters in
/// Prometheus; no sample (green not scraped yet) is inconclusive.
const ERROR_RATIO: &str = concat!(
    r#"sum(increase(crossfade_requests_total{route="{{ route }}",backend="{{ preview }}",class="5xx"}[5s]))"#,
    r#" / sum(increase(crossfade_requests_total{route="{{ route }}",backend="{{ preview }}"}[5s]))"#
);

/// Blue v1; two steps (50%, 100%) holding 2 s; analysis every second; built-in error bound off.
fn spec(checks: Value) -> Spec {
    let mut spec = Spec::new();
    spec.json["rollout"]["steps"] = json!([50, 100]);
    spec.json["rollout"]["hold"] = json!("2s");
    spec.json["rollout"]["progress_deadline"] = json!("30s");
    spec.json["rollout"]["analysis"] = json!({
        "interval": "1s",
        "max_error_rate": "100%",
        "min_requests": 10,
        "max_inconclusive": 4,
        "checks": checks,
    });
    spec
}

async fn start_rollout(admin: &Admin, green: App) {
    admin.start_rollout(&green.json).await;
}

/// The checks recorded in the rollout's verdicts, flattened.
fn recorded_checks(rollout: &Value) -> Vec<Value> {
    rollout["verdicts"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|v| {
            v["verdict"]["checks"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promql_check_promotes_a_good_green_and_rolls_back_a_bad_one() {
    let dir = temp_dir();
    // Prometheus needs the admin address (its scrape target) before the spec names Prometheus.
    let mut spec = spec(json!([]));
    let Some(prom) = Prometheus::start(dir.path(), spec.admin()).await else {
        return;
    };
    spec.json["rollout"]["analysis"]["checks"] = json!([{
        "name": "error-ratio",
        "prometheus": { "address": format!("http://{}", prom.address()), "query": ERROR_RATIO },
        "max": 0.05,
    }]);
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    let load = Load::start(LoadConfig::new(spec.listen()));
    // Prometheus hands new targets to its scrapers every 5 s: wait for the first scrape.
    prom.wait_for(r#"up{job="crossfade"} == 1"#, Duration::from_secs(20))
        .await;

    start_rollout(&admin, App::version("v2").flags(["--error-rate", "0.3"])).await;
    let bad = wait_terminal(&admin, Duration::from_secs(40)).await;
    assert_eq!(bad["phase"], "RolledBack", "{bad:#}");
    let reason = bad["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("error-ratio") && reason.contains("> max 0.05 (prometheus)"),
        "the reason names the check, its value and bound: {reason}"
    );
    let failed = recorded_checks(&bad)
        .into_iter()
        .find(|c| c["ok"] == false && c["value"].is_number())
        .expect("a failed check in the verdicts");
    assert!(failed["value"].as_f64().unwrap() > 0.05, "{failed}");
    assert!(
        failed["query"]
            .as_str()
            .unwrap()
            .contains(r#"backend="green""#),
        "the query as sent, templates filled: {failed}"
    );

    // The next green is `green` again: wait until the query's 5 s range no longer holds the rolled
    // back one's errors (a check should range over no more than the analysis interval).
    prom.wait_for(
        r#"sum(increase(crossfade_requests_total{backend="green",class="5xx"}[5s])) == 0"#,
        Duration::from_secs(20),
    )
    .await;
    start_rollout(&admin, App::version("v3")).await;
    let good = wait_terminal(&admin, Duration::from_secs(40)).await;
    assert_eq!(good["phase"], "Completed", "{good:#}");
    let passed = recorded_checks(&good)
        .into_iter()
        .filter(|c| c["ok"] == true)
        .count();
    assert!(
        passed >= 2,
        "each step passed with the check read: {good:#}"
    );
    let metrics = admin.metrics().await;
    let value = metrics.get(
        "crossfade_analysis_check_value",
        &[("check", "error-ratio"), ("provider", "prometheus")],
    );
    assert!(value.is_some_and(|v| v <= 0.05), "{value:?}");
    assert!(
        metrics.sum(
            "crossfade_analysis_checks_total",
            &[("check", "error-ratio"), ("result", "fail")]
        ) >= 1.0
    );
    let report = load.stop().await;
    // Blue kept serving throughout: only the bad green's own 5xx reached clients.
    assert_eq!(report.transport_errors, 0, "{report:?}");
    run.terminate(Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_down_is_inconclusive_and_green_is_never_promoted() {
    let dir = temp_dir();
    // Nothing listens here: every query fails to connect.
    let nowhere = crate::support::free_addr();
    let spec = spec(json!([{
        "name": "error-ratio",
        "prometheus": { "address": format!("http://{nowhere}"), "query": ERROR_RATIO },
        "max": 0.05,
        "timeout": "500ms",
    }]));
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    let load = Load::start(LoadConfig::new(spec.listen()));

    start_rollout(&admin, App::version("v2")).await;
    let rollout = wait_terminal(&admin, Duration::from_secs(40)).await;
    assert_eq!(rollout["phase"], "RolledBack", "{rollout:#}");
    let reason = rollout["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("inconclusive") && reason.contains("error-ratio: no value (prometheus:"),
        "{reason}"
    );
    let verdicts = rollout["verdicts"].as_array().cloned().unwrap_or_default();
    assert!(
        verdicts.iter().all(|v| v["verdict"]["outcome"] != "pass"),
        "no analysis passed without its check: {rollout:#}"
    );
    assert_eq!(rollout["step"], 0, "never past the first step: {rollout:#}");
    // user37b: `crossfade status` names the check that left the last verdict inconclusive
    // (it read `... requests ≥ 10, error rate 0% ≤ 100%` as if nothing were missing).
    let addr = admin.addr.to_string();
    let status = run_to_end(["status", "--admin", &addr], Duration::from_secs(20)).await;
    let last = status
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("last verdict: inconclusive"))
        .unwrap_or_default();
    assert!(
        last.contains("; error-ratio: no value (prometheus: "),
        "{}",
        status.stdout
    );
    let report = load.stop().await;
    assert_eq!(report.errors(), 0, "{report:?}");
    run.terminate(Duration::from_secs(15)).await;
}

/// A JSON endpoint answering `{"data": {"success_rate": X}}` with the X a test sets.
struct KpiServer {
    server: WebhookServer,
    value: Arc<AtomicU64>,
}

impl KpiServer {
    async fn start(value: f64) -> KpiServer {
        let value = Arc::new(AtomicU64::new(value.to_bits()));
        let shared = Arc::clone(&value);
        let server = WebhookServer::start(move |path| {
            let x = f64::from_bits(shared.load(Ordering::Relaxed));
            Reply::new(
                200,
                json!({ "path": path, "data": { "success_rate": x } }).to_string(),
            )
        })
        .await;
        KpiServer { server, value }
    }

    fn set(&self, value: f64) {
        self.value.store(value.to_bits(), Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_check_reads_a_json_number_and_fails_green_below_its_minimum() {
    let dir = temp_dir();
    let kpi = KpiServer::start(0.999).await;
    let spec = spec(json!([{
        "name": "checkout-success",
        "web": {
            "url": format!("http://{}/kpi/{{{{ preview_version }}}}", kpi.server.addr()),
            "json_path": "$.data.success_rate",
        },
        "min": 0.99,
    }]));
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    let load = Load::start(LoadConfig::new(spec.listen()));

    start_rollout(&admin, App::version("v2").set("name", json!("v2"))).await;
    let good = wait_terminal(&admin, Duration::from_secs(40)).await;
    assert_eq!(good["phase"], "Completed", "{good:#}");
    let check = recorded_checks(&good).pop().expect("checks recorded");
    assert_eq!(check["provider"], "web");
    assert_eq!(check["value"], 0.999);
    assert!(
        check["query"].as_str().unwrap().ends_with("/kpi/v2"),
        "the URL as sent names the preview's version: {check}"
    );

    kpi.set(0.95);
    start_rollout(&admin, App::version("v3")).await;
    let bad = wait_terminal(&admin, Duration::from_secs(40)).await;
    assert_eq!(bad["phase"], "RolledBack", "{bad:#}");
    let reason = bad["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("checkout-success 0.95 < min 0.99 (web)"),
        "{reason}"
    );
    let report = load.stop().await;
    assert_eq!(report.errors(), 0, "{report:?}");
    run.terminate(Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sequential_judge_promotes_an_equal_green_and_rolls_back_a_worse_one() {
    let dir = temp_dir();
    let mut spec = Spec::new();
    spec.json["rollout"]["steps"] = json!([20, 50, 100]);
    spec.json["rollout"]["hold"] = json!("1s");
    spec.json["rollout"]["progress_deadline"] = json!("45s");
    spec.json["rollout"]["analysis"] = json!({
        "judge": "sequential",
        "interval": "500ms",
        "min_requests": 20,
        "max_error_rate": "50%",
        "max_error_rate_increase": "5%",
        // The sample app answers in well under a millisecond: a relative allowance (the default 20%)
        // of such a tail needs thousands of requests to clear, and on a loaded 2-core CI machine
        // scheduling delays alone reach tens of milliseconds. This test is about errors.
        "max_latency_increase": "250ms",
        // ... and fail only beyond that allowance: by default the fail side tests "no worse than
        // blue", and an equal green was once rolled back on scheduling noise (`slow (> 2.5ms)
        // green 12.2% vs blue 4.11%`), far inside 250 ms.
        "fail_when_worse_than": "allowance",
    });
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    let mut config = LoadConfig::new(spec.listen());
    config.rate = 300;
    let load = Load::start(config);

    start_rollout(&admin, App::version("v2")).await;
    let good = wait_terminal(&admin, Duration::from_secs(150)).await;
    assert_eq!(good["phase"], "Completed", "{good:#}");
    let evidence = good["verdicts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["verdict"]["outcome"] == "pass")
        .flat_map(|v| {
            v["verdict"]["findings"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .any(|f| f["metric"] == "error_pass_evidence" && f["ok"] == true);
    assert!(
        evidence,
        "passes carry the evidence of no regression: {good:#}"
    );
    // Looks that are still collecting evidence raise no event but are logged, with the numbers
    // (trial report 4, F3): the first looks, at ~30 green requests, are far from `1 / beta`.
    let log = run.log();
    assert!(
        log.contains("analysis: collecting evidence, "),
        "no progress line in the log:\n{log}"
    );

    // 30% errors against blue's 0%: far beyond the 5-point allowance, with the ceiling at 50%.
    start_rollout(&admin, App::version("v3").flags(["--error-rate", "0.3"])).await;
    let bad = wait_terminal(&admin, Duration::from_secs(40)).await;
    assert_eq!(bad["phase"], "RolledBack", "{bad:#}");
    let reason = bad["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("evidence green is worse beyond the allowance"),
        "{reason}"
    );
    assert_eq!(bad["step"], 0, "decided at the first step: {bad:#}");
    load.stop().await;
    run.terminate(Duration::from_secs(15)).await;
}

/// Whether `rollout` has a pass verdict at `step` judged with the preview at `preview_bp`.
fn passed_at(rollout: &Value, step: u64, preview_bp: u64) -> bool {
    rollout["verdicts"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|v| {
            v["step"] == step && v["preview_bp"] == preview_bp && v["verdict"]["outcome"] == "pass"
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sequential_judge_does_not_read_a_drift_at_the_100_percent_step_as_green_being_worse() {
    // At 100% blue takes no traffic: the judge sets green's newest requests against blue's
    // requests of the earlier steps. Here the service itself starts failing 5% of its requests
    // (a dependency going bad) once the 100% step has passed once: within the 10-point
    // allowance, and blue, were it serving, would fail as many (both versions read the same
    // file). Judged as a step with blue traffic, that read as green 5% worse than blue's 0% and
    // rolled green back (user37b's rollback at 100%, session 37, whose drift was in latency).
    let dir = temp_dir();
    let drift = dir.path().join("error-rate");
    let drift_flag = drift.to_str().expect("utf-8 temp path");
    let app = |version: &str| App::version(version).flags(["--error-rate-file", drift_flag]);
    let mut spec = Spec::new().blue(app("v1"));
    spec.json["rollout"]["steps"] = json!([50, 100]);
    spec.json["rollout"]["hold"] = json!("4s");
    spec.json["rollout"]["progress_deadline"] = json!("40s");
    spec.json["rollout"]["analysis"] = json!({
        "judge": "sequential",
        "interval": "500ms",
        "min_requests": 20,
        "max_error_rate": "50%",
        "max_error_rate_increase": "10%",
        // A sub-millisecond service's tail is scheduling noise on a loaded machine: a latency
        // allowance that covers it (the fail side stays the default, "worse than blue").
        "max_latency_increase": "250ms",
    });
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    let mut config = LoadConfig::new(spec.listen());
    config.rate = 400;
    config.max_duration = Duration::from_secs(200);
    let load = Load::start(config);

    // The default fail side ("worse than blue") may prove a scheduling-noise tail worse at the
    // 50% step on a loaded machine (see the test above): that is not this test's question, so
    // such a rollout is tried again with the next version, up to three times.
    let mut completed = None;
    let mut noise = Vec::new();
    for version in ["v2", "v3", "v4"] {
        start_rollout(&admin, app(version)).await;
        let reached = wait_until(
            Duration::from_secs(60),
            "a pass at 100% or the end",
            || async {
                let status = admin.rollout().await;
                let rollout = &status["rollout"];
                let ended = status["running"] == false
                    && matches!(rollout["phase"].as_str(), Some("RolledBack" | "Completed"));
                (passed_at(rollout, 1, 10_000) || ended).then_some(!ended)
            },
        )
        .await;
        if !reached {
            let ended = wait_terminal(&admin, Duration::from_secs(5)).await;
            assert_eq!(ended["step"], 0, "ended before 100% on its own: {ended:#}");
            noise.push(ended["reason"].clone());
            continue;
        }
        std::fs::write(&drift, "5%").expect("write the drift");
        let ended = wait_terminal(&admin, Duration::from_secs(40)).await;
        std::fs::remove_file(&drift).expect("end the drift");
        completed = Some(ended);
        break;
    }
    let ended = completed.unwrap_or_else(|| panic!("never reached 100%: {noise:#?}"));
    assert_eq!(ended["phase"], "Completed", "{ended:#}");
    // The drift was there to be judged: verdicts at 100% saw green failing, and said that blue
    // took no traffic.
    let at_full: Vec<&Value> = ended["verdicts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["step"] == 1 && v["preview_bp"] == 10_000)
        .collect();
    let drifted = at_full.iter().any(|v| {
        let summary = v["verdict"]["summary"].as_str().unwrap_or_default();
        let errors = v["verdict"]["findings"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|f| f["metric"] == "error_rate")
            .and_then(|f| f["value"].as_f64())
            .unwrap_or_default();
        summary.starts_with("sequential (blue at 0%)") && errors >= 0.01
    });
    assert!(drifted, "no verdict at 100% judged the drift: {at_full:#?}");
    load.stop().await;
    run.terminate(Duration::from_secs(15)).await;
}

/// Session 40: `max_p99_ratio` at a live step where blue has weight but too few requests in the
/// window to compare with. Green 3× slower than blue (150 ms against 50 ms, both within
/// `max_p99`), at 95% then 100%, 40 requests per second: a 2 s look holds about 76 of green's
/// requests and 4 of blue's (`min_requests` 20). That look passed with the ratio unchecked, the
/// rollout went on to 100% (where blue takes no traffic and the ratio never applies) and
/// completed. Now such a look is inconclusive, the window stays open and grows until blue has
/// served `min_requests` in it, and the ratio rolls green back. Asserted on the verdicts, not on
/// how long any of it took.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_p99_ratio_without_enough_of_blues_requests_holds_the_step_until_it_can_be_checked() {
    let dir = temp_dir();
    let mut spec = Spec::new()
        .blue(App::version("v1").flags(["--latency", "50"]))
        .green(App::version("v2").flags(["--latency", "150"]));
    spec.json["rollout"]["steps"] = json!([95, 100]);
    spec.json["rollout"]["hold"] = json!("2s");
    spec.json["rollout"]["progress_deadline"] = json!("120s");
    spec.json["rollout"]["analysis"] = json!({
        "min_requests": 20,
        "max_p99": "1s",
        "max_p99_ratio": 2.0,
        "max_inconclusive": 40,
    });
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    let mut config = LoadConfig::new(spec.listen());
    config.rate = 40;
    let load = Load::start(config);
    let rollout = wait_terminal(&admin, Duration::from_secs(150)).await;
    let report = load.stop().await;

    let verdicts: Vec<Value> = rollout["verdicts"].as_array().cloned().unwrap_or_default();
    for v in &verdicts {
        eprintln!(
            "verdict at {}: {}",
            v["preview_bp"], v["verdict"]["summary"]
        );
    }
    assert_eq!(rollout["phase"], "RolledBack", "{rollout:#}");
    let reason = rollout["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("step 1/2 at 95%") && reason.contains("p99 ratio to active"),
        "reason: {reason}"
    );
    let at_95: Vec<&Value> = verdicts.iter().filter(|v| v["step"] == 0).collect();
    assert!(
        at_95.iter().all(|v| v["verdict"]["outcome"] != "pass"),
        "a look at 95% passed: {rollout:#}"
    );
    let unchecked = |v: &&Value| {
        v["verdict"]["outcome"] == "inconclusive"
            && v["verdict"]["summary"]
                .as_str()
                .is_some_and(|s| s.starts_with("p99 ratio not checked: active served "))
    };
    assert!(at_95.iter().any(unchecked), "{rollout:#}");
    assert_eq!(report.errors(), 0, "client-visible errors: {report:?}");
    run.terminate(Duration::from_secs(15)).await;
}
