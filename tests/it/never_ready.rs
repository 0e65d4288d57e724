//! A green whose health check never passes gets no traffic and is rolled back.

use std::time::Duration;

use serde_json::json;

use crate::rollout::wait_terminal;
use crate::support::{temp_dir, Admin, App, Crossfade, Load, LoadConfig, Spec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn green_that_never_becomes_ready_gets_no_weight_and_is_rolled_back() {
    let dir = temp_dir();
    let green = App::version("v2")
        .flags(["--unready-for", "1h"])
        .set("name", json!("checkout-v2"))
        .set(
            "readiness",
            json!({ "interval": "100ms", "deadline": "2s" }),
        );
    let spec = Spec::new().green(green);
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    let load = Load::start(LoadConfig::new(spec.listen()));

    let rollout = wait_terminal(&admin, Duration::from_secs(30)).await;
    load.wait_requests(50, Duration::from_secs(10)).await;
    let report = load.stop().await;

    assert!(
        matches!(rollout["phase"].as_str(), Some("RolledBack" | "Aborted")),
        "{rollout:#}"
    );
    let message = rollout["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("checkout-v2"),
        "the message names the workload: {message}"
    );
    assert_eq!(report.errors(), 0, "{report:?}");
    assert_eq!(
        report.ok_from("v1"),
        report.total(),
        "blue answered everything: {report:?}"
    );
    let metrics = admin.metrics().await;
    let green = metrics.sum(
        "crossfade_requests_total",
        &[("route", "web"), ("backend", "green")],
    );
    assert_eq!(green, 0.0, "no request reached green");
    let weight = metrics.get(
        "crossfade_backend_weight_basis_points",
        &[("backend", "green")],
    );
    assert_eq!(weight, Some(0.0));
    let events = admin.rollout().await["events"].clone();
    let weighted = events
        .as_array()
        .into_iter()
        .flatten()
        .any(|e| e["reason"] == "WeightsApplied");
    assert!(!weighted, "green's weight was never applied: {events:#}");
    run.terminate(Duration::from_secs(15)).await;
}
