//! `port_range` (trial finding H16): `crossfade run` gives `{port}` instances ports of the spec's
//! range; a range whose every port is taken fails the start, naming the workload and the range.

use std::time::Duration;

use serde_json::json;

use crate::support::{free_addr, temp_dir, Admin, Crossfade, Spec};

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
