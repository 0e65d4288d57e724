//! Automatic rollback: a green that answers 500 on 20% of its requests.

use std::time::Duration;

use crate::rollout::wait_terminal;
use crate::support::child::wait_state;
use crate::support::{
    pids_of, read_json, temp_dir, wait_gone, Admin, App, Crossfade, Load, LoadConfig, Spec,
};

/// Blue v1 and a green v2 failing one request in five (the sample app fails exactly 20 of any 100).
fn failing_green_spec(state: &std::path::Path) -> Spec {
    let green = App::version("v2").flags(["--error-rate", "0.2"]);
    Spec::new().green(green).state_file(state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn green_failing_one_request_in_five_is_rolled_back_while_blue_keeps_serving() {
    let dir = temp_dir();
    let state = dir.path().join("state.json");
    let spec = failing_green_spec(&state);
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    let load = Load::start(LoadConfig::new(spec.listen()));
    let green = wait_state(&state, Duration::from_secs(15), "green's pids", |s| {
        Some(pids_of(&s["rollout"]["preview_pids"])).filter(|p| !p.is_empty())
    })
    .await;

    let rollout = wait_terminal(&admin, Duration::from_secs(30)).await;
    let at_end = load.report();
    load.wait_requests(100, Duration::from_secs(10)).await;
    let report = load.stop().await;
    let after = report.since(&at_end);

    assert_eq!(rollout["phase"], "RolledBack", "{rollout:#}");
    assert_eq!(rollout["active"], "blue", "{rollout:#}");
    let reason = rollout["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("analysis failed"), "reason: {reason}");
    assert_eq!(report.transport_errors, 0, "{report:?}");
    let green_500s = report
        .bad_status
        .get(&(500, "v2".into()))
        .copied()
        .unwrap_or(0);
    assert!(
        green_500s > 0,
        "green got traffic and failed some: {report:?}"
    );
    assert_eq!(
        report.non_2xx(),
        green_500s,
        "the only non-2xx are green's 500s: {report:?}"
    );
    assert!(report.ok_from("v1") > 0, "{report:?}");
    assert!(
        after.total() >= 100 && after.ok_from("v1") == after.total(),
        "only v1 after the rollback: {after:?}"
    );
    let weights = &admin.status().await["routes"][0]["weights"];
    assert_eq!(weights, &serde_json::json!({ "blue": 10000, "green": 0 }));
    wait_gone(&green, Duration::from_secs(5)).await;
    run.terminate(Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_exits_with_code_3_after_a_rollback() {
    let dir = temp_dir();
    let state = dir.path().join("state.json");
    let spec = failing_green_spec(&state);
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run_once(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    let load = Load::start(LoadConfig::new(spec.listen()));
    let status = run.wait_exit(Duration::from_secs(30)).await;
    // The proxy is gone with the process: the load's last requests fail, so its counts are not checked.
    drop(load);

    assert_eq!(status.code(), Some(3), "exit status: {status}");
    let saved = read_json(&state);
    assert_eq!(
        saved["rollout"]["rollout"]["phase"], "RolledBack",
        "state file: {saved:#}"
    );
    wait_gone(
        &pids_of(&saved["rollout"]["preview_pids"]),
        Duration::from_secs(5),
    )
    .await;
    wait_gone(&pids_of(&saved["active_pids"]), Duration::from_secs(5)).await;
}
