//! A full rollout through `crossfade run` under HTTP/1.1 and HTTP/2 keep-alive load.

use std::time::Duration;

use serde_json::json;

use crate::support::child::wait_state;
use crate::support::{
    pids_of, temp_dir, wait_gone, wait_until, Admin, App, Crossfade, Load, LoadConfig, Spec,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_rollout_under_h1_and_h2_load_has_no_client_errors() {
    let dir = temp_dir();
    let state = dir.path().join("state.json");
    let mut spec = Spec::new().green(App::version("v2")).state_file(&state);
    // 10% of 150 req/s is 15 req/s: a 2 s first step expects 30 green requests against min_requests 10.
    spec.json["rollout"]["steps"] = json!([{ "weight": 10, "hold": "2s" }, 50, 100]);
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    let load = Load::start(LoadConfig::new(spec.listen()));
    let blue_pids = wait_state(
        &state,
        Duration::from_secs(5),
        "blue's pids in the state file",
        |s| Some(pids_of(&s["active_pids"])).filter(|p| !p.is_empty()),
    )
    .await;

    let rollout = wait_terminal(&admin, Duration::from_secs(30)).await;
    let at_end = load.report();
    load.wait_requests(100, Duration::from_secs(10)).await;
    let report = load.stop().await;
    let after = report.since(&at_end);

    assert_eq!(rollout["phase"], "Completed", "rollout: {rollout:#}");
    assert_eq!(rollout["active"], "green", "rollout: {rollout:#}");
    assert_eq!(report.errors(), 0, "client-visible errors: {report:?}");
    assert!(
        report.ok_from("v1") > 0 && report.ok_from("v2") > 0,
        "both versions served: {report:?}"
    );
    for proto in ["h1", "h2"] {
        assert!(
            report.by_proto.get(proto).copied().unwrap_or(0) > 50,
            "{proto} carried load: {report:?}"
        );
    }
    assert!(
        after.total() >= 100 && after.ok_from("v2") == after.total(),
        "only v2 after completion: {after:?}"
    );
    let status = admin.status().await;
    let route = &status["routes"][0];
    assert_eq!(
        route["weights"],
        json!({ "blue": 0, "green": 10000 }),
        "status: {status:#}"
    );
    assert_eq!(route["active"], "green", "status: {status:#}");
    let metrics = admin.metrics().await;
    let weight = |backend| {
        metrics.get(
            "crossfade_backend_weight_basis_points",
            &[("route", "web"), ("backend", backend)],
        )
    };
    assert_eq!(
        (weight("blue"), weight("green")),
        (Some(0.0), Some(10000.0))
    );
    wait_gone(&blue_pids, Duration::from_secs(5)).await;
    run.terminate(Duration::from_secs(15)).await;
}

/// Waits until `GET /rollout` shows a rollout in a terminal phase and returns it.
pub async fn wait_terminal(admin: &Admin, timeout: Duration) -> serde_json::Value {
    wait_until(timeout, "the rollout to end", || async {
        let status = admin.rollout().await;
        let phase = status["rollout"]["phase"].as_str().unwrap_or_default();
        let done =
            matches!(phase, "Completed" | "RolledBack" | "Aborted") && status["running"] == false;
        done.then(|| status["rollout"].clone())
    })
    .await
}
