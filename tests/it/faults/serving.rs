//! Faults of the serving side during a rollout that must still complete: the active backend (blue)
//! loses an instance mid-shift, and every backend closes idle keep-alive connections sooner than the
//! proxy's upstream pool would. Also covered: `supervise` (blue crash with no rollout running, HTTP/1.1
//! and h2c), C17 (the exact reuse race, HTTP/1.1).

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;
use tokio::time::Instant;

use super::{load_config, phase_of, print_fault, spec_with, Run};
use crate::rollout::wait_terminal;
use crate::support::{wait_until, App, Load};

/// Blue has two instances; one is SIGKILLed at 50 %. Its refused and reset GETs are re-sent to the
/// other endpoint, so clients see 0 errors; the process driver restarts it on its port; the rollout
/// goes on and completes (a crash of the active backend is no verdict on the preview).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_instance_crashing_during_the_shift_costs_no_request_and_the_rollout_completes() {
    let mut spec = spec_with(App::version("v2-bluecrash"), "4s");
    spec = spec.blue(App::version("v1").set("instances", json!(2)));
    let mut run = Run::start(spec).await;
    let load = Load::start(load_config(&run.spec));
    let (blue, _) = run.pids(2, 1).await;
    run.wait_step(5_000).await;
    let fault = Instant::now();
    kill(Pid::from_raw(blue[0] as i32), Signal::SIGKILL).expect("SIGKILL blue");
    let labels = [("route", "web"), ("backend", "blue")];
    let restarted = wait_until(Duration::from_secs(15), "blue restarted", || async {
        let restarts = run
            .admin
            .metrics()
            .await
            .get("crossfade_instance_restarts_total", &labels);
        (restarts == Some(1.0)).then(|| fault.elapsed())
    })
    .await;
    let rollout = wait_terminal(&run.admin, Duration::from_secs(60)).await;
    let at_end = load.report();
    load.wait_requests(100, Duration::from_secs(20)).await;
    let report = load.stop().await;
    let tail = report.since(&at_end);
    run.child.terminate(Duration::from_secs(15)).await;

    let outcome = format!("{}, blue restarted after {restarted:?}", phase_of(&rollout));
    print_fault("blue crashes during the shift", &report, fault, &outcome);
    assert_eq!(rollout["phase"], "Completed", "{rollout:#}");
    assert_eq!(report.errors(), 0, "{report:?}");
    assert_eq!(tail.ok_from("v2-bluecrash"), tail.total(), "{tail:?}");
}

/// Blue and green close a keep-alive connection idle for 300 ms, the proxy keeps idle upstream
/// connections 4 s (its default): pooled connections are often closed by the backend first. A closed
/// one is dropped at checkout, or the request is re-sent when the close raced its write, so a whole
/// rollout under load costs 0 errors. 30 requests a second over the 6 client connections leaves
/// upstream connections idle for hundreds of milliseconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_closing_idle_connections_before_the_proxy_cost_no_request() {
    let idle = ["--idle-timeout", "300ms"];
    let mut spec = spec_with(App::version("v2-idle").flags(idle), "3s");
    spec = spec.blue(App::version("v1").flags(idle));
    spec.json["rollout"]["steps"] = json!([50, 100]);
    spec.json["rollout"]["analysis"]["min_requests"] = json!(5);
    let mut run = Run::start(spec).await;
    let mut config = load_config(&run.spec);
    config.rate = 30;
    let load = Load::start(config);
    let fault = Instant::now();
    let rollout = wait_terminal(&run.admin, Duration::from_secs(60)).await;
    load.wait_requests(60, Duration::from_secs(20)).await;
    let report = load.stop().await;
    let metrics = run.admin.metrics().await;
    run.child.terminate(Duration::from_secs(15)).await;

    let retries = metrics.sum("crossfade_retries_total", &[("route", "web")]);
    let outcome = format!("{}, proxy retries {retries}", phase_of(&rollout));
    print_fault(
        "backend keep-alive 300ms < proxy idle 4s",
        &report,
        fault,
        &outcome,
    );
    assert_eq!(rollout["phase"], "Completed", "{rollout:#}");
    assert!(
        report.ok_from("v1") > 0 && report.ok_from("v2-idle") > 0,
        "{report:?}"
    );
    assert_eq!(report.errors(), 0, "{report:?}");
}
