//! The shadow step through `crossfade run`: green is judged by mirrored traffic before it gets any
//! live weight. A green whose body differs is rolled back with no client ever answered by it; an
//! identical green passes into the live steps. A green that answers alike but slower than the
//! rollout's `max_p99` is rolled back there too; one within it passes.

use std::time::Duration;

use serde_json::{json, Value};

use crate::rollout::wait_terminal;
use crate::support::{temp_dir, Admin, App, Crossfade, Load, LoadConfig, LoadReport, Spec};

/// Blue v1, green v2, a 0% shadow step of 2 s (every request mirrored, at least 50 comparisons,
/// no mismatch allowed), then 50% and 100%.
fn shadow_spec() -> Spec {
    let mut spec = Spec::new().green(App::version("v2"));
    spec.json["rollout"]["steps"] = json!([{ "weight": 0, "hold": "2s" }, 50, 100]);
    spec.json["rollout"]["analysis"]["shadow"] = json!({
        "max_mismatch_rate": "0%",
        "min_compared": 50,
        "mirror": { "percent": 100, "compare_headers": ["content-type"] },
    });
    spec
}

/// The verdicts of step `step` (0-based) in a `GET /rollout` answer's rollout.
fn verdicts_at(rollout: &Value, step: u64) -> Vec<Value> {
    let all = rollout["verdicts"].as_array().cloned().unwrap_or_default();
    all.into_iter().filter(|v| v["step"] == step).collect()
}

/// The value of `metric` in a verdict's findings.
fn finding(verdict: &Value, metric: &str) -> Option<f64> {
    let findings = verdict["verdict"]["findings"].as_array()?;
    let found = findings.iter().find(|f| f["metric"] == metric)?;
    found["value"].as_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_green_whose_body_differs_is_rolled_back_in_the_shadow_step_before_any_client_sees_it() {
    // `GET /` answers the version string: v1 and v2 differ in every body.
    let spec = shadow_spec();
    let (_dir, admin, mut run, rollout, report) =
        rollout_under(&spec, LoadConfig::new(spec.listen())).await;

    assert_eq!(rollout["phase"], "RolledBack", "{rollout:#}");
    let reason = rollout["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("step 1/3 at 0%") && reason.contains("shadow mismatch rate 100% > 0%"),
        "reason: {reason}"
    );
    assert_eq!(
        report.ok_from("v2"),
        0,
        "a client got green's answer: {report:?}"
    );
    assert_eq!(report.errors(), 0, "client-visible errors: {report:?}");
    assert!(report.ok_from("v1") > 0, "{report:?}");
    let failed = verdicts_at(&rollout, 0);
    for v in &failed {
        eprintln!("shadow step verdict: {}", v["verdict"]["summary"]);
    }
    let last = failed.last().expect("a verdict at the shadow step");
    assert_eq!(last["verdict"]["outcome"], "fail", "{last:#}");
    assert!(
        finding(last, "shadow_compared").is_some_and(|n| n >= 50.0),
        "{last:#}"
    );
    assert_eq!(finding(last, "shadow_mismatch_rate"), Some(1.0), "{last:#}");
    let live = rollout["verdicts"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|v| v["preview_bp"].as_u64() != Some(0));
    assert!(!live, "green never had live weight: {rollout:#}");

    let metrics = admin.metrics().await;
    let shadow = |name: &str, labels: &[(&str, &str)]| {
        let mut all = vec![("route", "web"), ("backend", "green")];
        all.extend_from_slice(labels);
        metrics.get(name, &all).unwrap_or(0.0)
    };
    let body = shadow("crossfade_shadow_mismatches_total", &[("kind", "body")]);
    let status = shadow("crossfade_shadow_mismatches_total", &[("kind", "status")]);
    assert!(
        body >= 50.0 && status == 0.0,
        "body {body}, status {status}"
    );
    assert_eq!(
        shadow("crossfade_shadow_compared_total", &[("result", "matched")]),
        0.0
    );
    let green_live = metrics
        .find(
            "crossfade_requests_total",
            &[("route", "web"), ("backend", "green")],
        )
        .map(|s| s.value)
        .sum::<f64>();
    assert_eq!(green_live, 0.0, "green served no live request");
    let value = metrics.get(
        "crossfade_analysis_value",
        &[("route", "web"), ("metric", "shadow_mismatch_rate")],
    );
    assert_eq!(value, Some(1.0));
    run.terminate(Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identical_green_passes_the_shadow_step_into_the_live_steps() {
    let dir = temp_dir();
    let spec = shadow_spec();
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    // `/chunked` is the same 10 KB pattern from every version (only `X-Version` says which).
    let mut config = LoadConfig::new(spec.listen());
    config.path = "/chunked".into();
    let load = Load::start(config);

    let rollout = wait_terminal(&admin, Duration::from_secs(30)).await;
    let report = load.stop().await;

    assert_eq!(rollout["phase"], "Completed", "{rollout:#}");
    assert_eq!(report.errors(), 0, "client-visible errors: {report:?}");
    assert!(
        report.ok_from("v2") > 0,
        "green served live steps: {report:?}"
    );
    let shadow = verdicts_at(&rollout, 0);
    for v in &shadow {
        eprintln!("shadow step verdict: {}", v["verdict"]["summary"]);
    }
    let passed = shadow.last().expect("a verdict at the shadow step");
    assert_eq!(passed["verdict"]["outcome"], "pass", "{passed:#}");
    assert!(
        finding(passed, "shadow_compared").is_some_and(|n| n >= 50.0),
        "{passed:#}"
    );
    assert_eq!(
        finding(passed, "shadow_mismatch_rate"),
        Some(0.0),
        "{passed:#}"
    );
    let live = verdicts_at(&rollout, 1);
    assert!(
        live.iter().any(|v| finding(v, "requests").is_some()),
        "the 50% step was judged on live traffic: {rollout:#}"
    );
    // Mirroring ended with the shadow step: green's live traffic was not mirrored anywhere.
    let status = admin.status().await;
    let mirrored = status["routes"][0]["green"]["shadow"]["mirrored"].as_u64();
    let blue_mirrored = status["routes"][0]["blue"]["shadow"]["mirrored"].as_u64();
    assert!(mirrored.is_some_and(|n| n >= 50), "{status:#}");
    assert_eq!(blue_mirrored.unwrap_or(0), 0, "{status:#}");
    run.terminate(Duration::from_secs(15)).await;
}

/// newuser32's G: blue v1, green v2 answering like blue on `/chunked` after `latency_ms`; a 0%
/// shadow step of 2 s (at least 5 comparisons), then 100%; `max_p99: 300ms`. The load asks
/// `/chunked`, which every version answers alike, so only the time can tell green apart.
fn slow_green_spec(latency_ms: u64) -> Spec {
    let latency = latency_ms.to_string();
    let green = App::version("v2").flags(["--latency", latency.as_str()]);
    let mut spec = Spec::new().green(green);
    spec.json["rollout"]["steps"] = json!([{ "weight": 0, "hold": "2s" }, 100]);
    spec.json["rollout"]["analysis"]["max_p99"] = json!("300ms");
    spec.json["rollout"]["analysis"]["shadow"] = json!({
        "min_compared": 5,
        "mirror": { "percent": 100 },
    });
    spec
}

/// A latency test's rollout: [`slow_green_spec`]`(latency_ms)` run under `/chunked` at 50
/// requests per second to the rollout's end. Returns the still-serving run (with its directory
/// and admin API), the ended rollout and the load's report.
async fn slow_green_rollout(
    latency_ms: u64,
) -> (tempfile::TempDir, Admin, Crossfade, Value, LoadReport) {
    let spec = slow_green_spec(latency_ms);
    let mut config = LoadConfig::new(spec.listen());
    config.path = "/chunked".into();
    config.rate = 50;
    rollout_under(&spec, config).await
}

/// `spec` run under the load `config` to the rollout's end. Returns the still-serving run (with
/// its directory and admin API), the ended rollout and the load's report.
async fn rollout_under(
    spec: &Spec,
    config: LoadConfig,
) -> (tempfile::TempDir, Admin, Crossfade, Value, LoadReport) {
    let dir = temp_dir();
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    let load = Load::start(config);
    let rollout = wait_terminal(&admin, Duration::from_secs(30)).await;
    let report = load.stop().await;
    (dir, admin, run, rollout, report)
}

/// newuser32's G: a green that answers exactly like blue but 1.5 s late passed its shadow step
/// (`shadow mismatch rate 0% ≤ 0%`) and got 100% at once, although the rollout bounds p99 at
/// 300 ms. The shadow step now times green's answers to the mirrored requests and rolls it back
/// there, before any live weight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_green_that_answers_alike_but_slower_than_max_p99_is_rolled_back_at_the_shadow_step() {
    let (_dir, admin, mut run, rollout, report) = slow_green_rollout(1500).await;

    assert_eq!(rollout["phase"], "RolledBack", "{rollout:#}");
    let reason = rollout["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("step 1/2 at 0%") && reason.contains("shadow p99"),
        "reason: {reason}"
    );
    let last = verdicts_at(&rollout, 0)
        .pop()
        .expect("a shadow step verdict");
    eprintln!("shadow step verdict: {}", last["verdict"]["summary"]);
    assert_eq!(last["verdict"]["outcome"], "fail", "{last:#}");
    assert_eq!(
        finding(&last, "shadow_mismatch_rate"),
        Some(0.0),
        "{last:#}"
    );
    let p99 = finding(&last, "shadow_p99_seconds");
    assert!(p99.is_some_and(|s| s >= 1.45), "{last:#}");
    let live = rollout["verdicts"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|v| v["preview_bp"].as_u64() != Some(0));
    assert!(!live, "green never had live weight: {rollout:#}");
    assert_eq!(
        report.ok_from("v2"),
        0,
        "a client got green's answer: {report:?}"
    );
    assert_eq!(report.errors(), 0, "client-visible errors: {report:?}");

    let metrics = admin.metrics().await;
    let green_live = metrics
        .find(
            "crossfade_requests_total",
            &[("route", "web"), ("backend", "green")],
        )
        .map(|s| s.value)
        .sum::<f64>();
    assert_eq!(green_live, 0.0, "green served no live request");
    let value = metrics.get(
        "crossfade_analysis_value",
        &[("route", "web"), ("metric", "shadow_p99_seconds")],
    );
    assert!(value.is_some_and(|s| s >= 1.45), "{value:?}");
    let threshold = metrics.get(
        "crossfade_analysis_threshold",
        &[("route", "web"), ("metric", "shadow_p99_seconds")],
    );
    assert_eq!(threshold, Some(0.3));
    let timed = metrics.get(
        "crossfade_shadow_request_duration_seconds_count",
        &[("route", "web"), ("backend", "green")],
    );
    assert!(timed.is_some_and(|n| n >= 5.0), "{timed:?}");
    run.terminate(Duration::from_secs(15)).await;
}

/// The same rollout with a green 100 ms late, within `max_p99`: the shadow step passes with its
/// p99 recorded, and the rollout completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_green_within_max_p99_passes_the_shadow_step_with_its_p99_recorded() {
    let (_dir, _admin, mut run, rollout, report) = slow_green_rollout(100).await;

    assert_eq!(rollout["phase"], "Completed", "{rollout:#}");
    assert_eq!(report.errors(), 0, "client-visible errors: {report:?}");
    let passed = verdicts_at(&rollout, 0)
        .pop()
        .expect("a shadow step verdict");
    eprintln!("shadow step verdict: {}", passed["verdict"]["summary"]);
    assert_eq!(passed["verdict"]["outcome"], "pass", "{passed:#}");
    let p99 = finding(&passed, "shadow_p99_seconds");
    assert!(p99.is_some_and(|s| (0.095..0.3).contains(&s)), "{passed:#}");
    run.terminate(Duration::from_secs(15)).await;
}

/// shadow34: blue and green each `--latency` late, `max_p99: 1s` (both well within it) and
/// `max_p99_ratio: 2`, a 0% shadow step of 5 s (at least 5 comparisons) then 100%; `/slow` is
/// never mirrored (`ignore.paths`).
///
/// 5 s, not 2 s (session 40): a pause of the proxy on a loaded machine delays blue's and green's
/// exchanges in flight alike, and when those are more than 1% of the window's pairs they are
/// both p99s, at a ratio under 2. The whole suite on the shared 2-core machine passed a green
/// 3× slower with `shadow p99 ratio to active 1.19 ≤ 2.00 (paired: p99 163.3ms vs active's
/// 136.7ms on the same 72 mirrored requests)` over 2 s. Over 5 s (192 pairs) it takes a longer
/// or luckier pause: stopping `crossfade run` for 80 ms still passed it once in 3 (1.16), so this
/// lowers the odds, no more (docs/shadow.md, "Few pairs and a stalled proxy"; the emulator's twin
/// in tests/it/kube/shadow.rs holds 5 s for the same reason).
fn paced_spec(blue_ms: u64, green_ms: u64) -> Spec {
    let (blue, green) = (blue_ms.to_string(), green_ms.to_string());
    let mut spec = Spec::new()
        .blue(App::version("v1").flags(["--latency", blue.as_str()]))
        .green(App::version("v2").flags(["--latency", green.as_str()]));
    spec.json["rollout"]["steps"] = json!([{ "weight": 0, "hold": "5s" }, 100]);
    spec.json["rollout"]["analysis"]["max_p99"] = json!("1s");
    spec.json["rollout"]["analysis"]["max_p99_ratio"] = json!(2.0);
    spec.json["rollout"]["analysis"]["shadow"] = json!({
        "min_compared": 5,
        "mirror": { "percent": 100, "ignore": { "paths": ["/slow"] } },
    });
    spec
}

/// A [`paced_spec`] rollout under `/chunked` (mirrored) at 40 requests per second, and with
/// `slow` also `/slow?ms=400` (not mirrored) at 4 per second, to the rollout's end. Returns the
/// still-serving run, the ended rollout and the `/chunked` load's report.
async fn paced_rollout(
    blue_ms: u64,
    green_ms: u64,
    slow: bool,
) -> (tempfile::TempDir, Crossfade, Value, LoadReport) {
    let dir = temp_dir();
    let spec = paced_spec(blue_ms, green_ms);
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    let mut config = LoadConfig::new(spec.listen());
    config.path = "/chunked".into();
    config.rate = 40;
    let load = Load::start(config);
    let slow = slow.then(|| {
        let mut config = LoadConfig::new(spec.listen());
        config.path = "/slow?ms=400".into();
        config.rate = 4;
        Load::start(config)
    });
    let rollout = wait_terminal(&admin, Duration::from_secs(30)).await;
    let report = load.stop().await;
    if let Some(slow) = slow {
        slow.stop().await;
    }
    (dir, run, rollout, report)
}

/// shadow34: a green 3× slower than blue on the very requests mirrored to it (150 ms against
/// 50 ms), well within `max_p99`, is rolled back at the shadow step by `max_p99_ratio`, read on
/// the pairs. Blue's live p99 is not what green is held to: blue also serves `/slow` (never
/// mirrored, 450 ms), so its live p99 is 3× green's, and the unpaired reading (green's p99
/// against blue's live p99, all there was before pairs were kept) passed this green into 100%.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_green_3x_slower_than_blue_on_the_same_requests_is_rolled_back_by_the_paired_ratio() {
    let (_dir, mut run, rollout, report) = paced_rollout(50, 150, true).await;

    assert_eq!(rollout["phase"], "RolledBack", "{rollout:#}");
    let reason = rollout["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("step 1/2 at 0%") && reason.contains("shadow p99 ratio"),
        "reason: {reason}"
    );
    let last = verdicts_at(&rollout, 0)
        .pop()
        .expect("a shadow step verdict");
    let summary = last["verdict"]["summary"].as_str().unwrap_or_default();
    eprintln!("shadow step verdict: {summary}");
    assert_eq!(last["verdict"]["outcome"], "fail", "{last:#}");
    assert!(summary.contains("(paired: p99 "), "{summary}");
    let ratio = finding(&last, "shadow_p99_ratio");
    // 150 ms over 50 ms: 3, less what the proxy and a loaded machine add to blue's time (a CI
    // rehearsal read 162.3 ms against 69.9: 2.32), and above the policy's 2.0, which the verdict
    // says it broke. Unpaired (green against blue's live p99, 450 ms `/slow` included) it reads
    // about 0.33.
    assert!(ratio.is_some_and(|r| (2.0..4.0).contains(&r)), "{last:#}");
    let p99 = finding(&last, "shadow_p99_seconds");
    assert!(p99.is_some_and(|s| s < 1.0), "within max_p99: {last:#}");
    assert_eq!(report.ok_from("v2"), 0, "a client got green's answer");
    assert_eq!(report.errors(), 0, "client-visible errors: {report:?}");
    run.terminate(Duration::from_secs(15)).await;
}

/// shadow34: a green as fast as blue on the same requests (both 50 ms) passes the paired ratio
/// and the rollout completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_green_as_fast_as_blue_on_the_same_requests_passes_the_paired_ratio() {
    let (_dir, mut run, rollout, report) = paced_rollout(50, 50, false).await;

    assert_eq!(rollout["phase"], "Completed", "{rollout:#}");
    let passed = verdicts_at(&rollout, 0)
        .pop()
        .expect("a shadow step verdict");
    let summary = passed["verdict"]["summary"].as_str().unwrap_or_default();
    eprintln!("shadow step verdict: {summary}");
    assert_eq!(passed["verdict"]["outcome"], "pass", "{passed:#}");
    assert!(summary.contains("(paired: p99 "), "{summary}");
    let ratio = finding(&passed, "shadow_p99_ratio");
    assert!(ratio.is_some_and(|r| (0.7..1.4).contains(&r)), "{passed:#}");
    assert_eq!(report.errors(), 0, "client-visible errors: {report:?}");
    run.terminate(Duration::from_secs(15)).await;
}

/// User38: a shadow step whose requests are all skipped for their method (a POST-only service
/// under the default `mirror.methods`, here GET load with `methods: [HEAD]`) is inconclusive, and
/// the rollback said only `0 shadow comparisons < 50 (..., 612 skipped, 0 errors)`: nothing on
/// why no request was compared. The proxy now reports its skips by reason, and the verdict names
/// the reason and the `mirror` key that decides it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_step_whose_requests_are_all_skipped_names_why() {
    let mut spec = shadow_spec();
    spec.json["rollout"]["steps"] = json!([{ "weight": 0, "hold": "1s" }, 100]);
    spec.json["rollout"]["analysis"]["max_inconclusive"] = json!(1);
    spec.json["rollout"]["analysis"]["shadow"]["mirror"]["methods"] = json!(["HEAD"]);
    let (_dir, _admin, mut run, rollout, report) =
        rollout_under(&spec, LoadConfig::new(spec.listen())).await;

    assert_eq!(rollout["phase"], "RolledBack", "{rollout:#}");
    let reason = rollout["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("0 shadow comparisons < 50")
            && reason.contains("for their method, not in mirror.methods)"),
        "reason: {reason}"
    );
    assert_eq!(report.errors(), 0, "client-visible errors: {report:?}");
    run.terminate(Duration::from_secs(15)).await;
}
