//! `port_range` (trial finding H16): `crossfade run` gives `{port}` instances ports of the spec's
//! range; a range whose every port is taken fails the start, naming the workload and the range.

use std::time::Duration;

use serde_json::json;

use crate::support::{free_addr, temp_dir, Admin, App, Crossfade, Spec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_gets_its_port_from_port_range() {
    let dir = temp_dir();
    // A port handed out once per test binary and free now: a range of that one port.
    let port = free_addr().port();
    let mut spec = Spec::new();
    spec.json["port_range"] = json!({ "from": port, "to": port });
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, Duration::from_secs(20)).await;
    let status = admin.status().await;
    let endpoint = status["routes"][0]["blue"]["endpoints"][0].clone();
    assert_eq!(
        endpoint,
        json!(format!("127.0.0.1:{port}")),
        "blue's one instance took the range's one port: {status:#}"
    );
    run.terminate(Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_range_with_every_port_taken_fails_the_start_naming_it() {
    let dir = temp_dir();
    // Held for the whole test: the range's only port is taken.
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = held.local_addr().expect("addr").port();
    let mut spec = Spec::new();
    spec.json["port_range"] = json!(format!("{port}-{port}"));
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    let status = run.wait_exit(Duration::from_secs(30)).await;
    assert!(!status.success(), "{status:?}");
    let log = run.log();
    let expected = format!(
        "workload blue: every port of port_range {port}-{port} is taken (1 tried on 127.0.0.1): \
         widen port_range or free one"
    );
    assert!(log.contains(&expected), "want {expected:?} in:\n{log}");
    drop(held);
}

/// A rollout started on a running instance (`POST /rollout`, `crossfade migrate`) whose green
/// cannot fit in `port_range` beside the active workload is refused with 400 naming
/// `port_range`, as `crossfade check` refuses such a spec. Until newuser 33 it was accepted
/// (202), started green's instances until the range ran out and rolled back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_request_whose_green_does_not_fit_in_port_range_is_refused() {
    let dir = temp_dir();
    // A range of one port, free now: blue's one instance takes it, so no green fits.
    let port = free_addr().port();
    let mut spec = Spec::new();
    spec.json["port_range"] = json!(format!("{port}-{port}"));
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, Duration::from_secs(20)).await;
    let request = json!({ "green": App::version("v2").json });
    let (status, body) = admin.json("POST", "/rollout", Some(&request)).await;
    assert_eq!(status, 400, "{body}");
    let expected = format!(
        "port_range: {port}-{port}: 1 port, but blue (1 instance) and green (1 instance) run \
         together during a rollout: 2 needed; widen port_range"
    );
    let error = body["error"].as_str().unwrap_or_default();
    assert!(error.contains(&expected), "want {expected:?} in {body:#}");
    run.terminate(Duration::from_secs(15)).await;
}
