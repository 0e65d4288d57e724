//! Faults of the controller itself: `crossfade run` SIGKILLed mid-shift and started again, and its
//! state file damaged between two runs. Also covered without load: `restart` (recovery rules) and
//! `controller::store` unit tests (every kind of damage).

use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use super::{load_config, phase_of, print_fault, spec_with, Run};
use crate::rollout::wait_terminal;
use crate::support::{processes_with_arg, wait_gone, App, Crossfade, Load};

/// Documented (README "Restart"): a restarted run rolls back a rollout that had not reached
/// `Promoted`, stops the killed run's green, and serves blue (adopted when healthy). While no
/// process listens, clients see refused connections: those errors are unavoidable and bounded by the
/// restart. Asserted: no error once the new run is ready, blue alone answers, never a second green
/// (no green process is left or started again), and the old green is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_sigkilled_mid_shift_restarts_into_a_rollback_with_one_green_at_most() {
    const GREEN: &str = "v2-ctlkill";
    let mut run = Run::start(spec_with(App::version(GREEN), "30s")).await;
    let mut config = load_config(&run.spec);
    config.request_timeout = Duration::from_secs(3);
    let load = Load::start(config);
    let (_, green) = run.pids(1, 1).await;
    run.wait_step(1_000).await;
    load.wait_requests(100, Duration::from_secs(10)).await;
    assert_eq!(processes_with_arg(GREEN), green, "one green");

    let fault = Instant::now();
    run.child.kill_hard();
    let path = run.dir.path().join("spec.yaml");
    let mut second = Crossfade::run(run.dir.path(), &path);
    second.wait_ready(&run.admin, Duration::from_secs(20)).await;
    let ready = Instant::now();
    wait_gone(&green, Duration::from_secs(10)).await;
    let at_ready = load.report();
    load.wait_requests(200, Duration::from_secs(20)).await;
    let report = load.stop().await;
    let after = report.since(&at_ready);
    let status = run.admin.rollout().await;
    let greens = processes_with_arg(GREEN);
    second.terminate(Duration::from_secs(15)).await;

    let outcome = format!(
        "{}, ready again {:?} after the kill",
        phase_of(&status["rollout"]),
        ready.duration_since(fault)
    );
    print_fault("controller SIGKILL mid-shift", &report, fault, &outcome);
    assert_eq!(status["rollout"]["phase"], "RolledBack", "{status:#}");
    assert_eq!(status["running"], false, "no new rollout: {status:#}");
    assert!(
        greens.is_empty(),
        "a green process after the restart: {greens:?}"
    );
    // The killed process's connections fail when each client next uses them, which may be a
    // tick after the restart is ready (it took 57 ms once): those errors are the kill's. A
    // connection opened once the restart was ready must see none.
    assert!(
        report.error_connections.iter().all(|&t| t <= ready),
        "errors on connections opened after the restart was ready: {report:?}"
    );
    assert!(
        after.non_2xx() == 0 && after.ok_from("v1") + after.errors() == after.total(),
        "blue alone once ready, and no error but the killed process's (above): {after:?}"
    );
}

/// Turns a good state file's bytes into damaged ones.
type Damage = fn(&[u8]) -> Vec<u8>;

/// Completes a rollout to green, then damages the state file between runs: a run that finds it
/// corrupt says so (naming the file and the cause), starts from the backup every save writes, and
/// serves the last known-good active version (green, not the spec's blue) without an error; with
/// the backup damaged too it refuses to start, naming both, and starts nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_or_truncated_state_file_serves_the_last_known_good_active_version() {
    const GREEN: &str = "v2-state";
    let mut run = Run::start(spec_with(App::version(GREEN), "1s")).await;
    let load = Load::start(load_config(&run.spec));
    let rollout = wait_terminal(&run.admin, Duration::from_secs(40)).await;
    drop(load);
    assert_eq!(rollout["phase"], "Completed", "{rollout:#}");
    run.child.terminate(Duration::from_secs(15)).await;
    let spec = run.dir.path().join("spec.yaml");
    let corrupt = run.dir.path().join("state.json.corrupt");

    let damages: [(&str, Damage); 2] = [
        ("corrupt", |_| b"{\"active\": \"gr\x00een\", ".to_vec()),
        ("truncated", |good| good[..good.len() / 2].to_vec()),
    ];
    for (name, damage) in damages {
        let good = std::fs::read(&run.state).expect("state file");
        std::fs::write(&run.state, damage(&good)).expect("damage the state file");
        let fault = Instant::now();
        let mut child = Crossfade::run(run.dir.path(), &spec);
        child.wait_ready(&run.admin, Duration::from_secs(20)).await;
        let load = Load::start(load_config(&run.spec));
        load.wait_requests(150, Duration::from_secs(20)).await;
        let report = load.stop().await;
        let events = run.admin.rollout().await["events"].clone();
        child.terminate(Duration::from_secs(15)).await;
        let log = child.log();

        print_fault(
            &format!("state file {name}"),
            &report,
            fault,
            "served from the backup",
        );
        assert_eq!(report.errors(), 0, "{report:?}");
        assert_eq!(
            report.ok_from(GREEN),
            report.total(),
            "green serves: {report:?}"
        );
        let said = format!("state file {} is corrupt: ", run.state.display());
        assert!(
            log.contains(&said) && log.contains("started from its backup"),
            "{log}"
        );
        let reasons = events.as_array().cloned().unwrap_or_default();
        assert!(
            reasons.iter().any(|e| e["reason"] == "StateFileCorrupt"),
            "{events:#}"
        );
        assert_eq!(std::fs::read(&corrupt).expect("kept aside"), damage(&good));
        let saved = crate::support::read_json(&run.state);
        assert_eq!(
            saved["active"],
            json!("green"),
            "the file is whole again: {saved:#}"
        );
    }

    std::fs::write(&run.state, "{").expect("damage the state file");
    std::fs::write(run.dir.path().join("state.json.bak"), "").expect("damage the backup");
    let mut child = Crossfade::run(run.dir.path(), &spec);
    let status = child.wait_exit(Duration::from_secs(15)).await;
    let log = child.log();
    assert_eq!(status.code(), Some(1), "{log}");
    let said = format!(
        "state file {} is corrupt and its backup",
        run.state.display()
    );
    assert!(
        log.contains(&said) && log.contains("nothing was started"),
        "{log}"
    );
    // The backup's own state, with its cause (trial 28: "missing or corrupt too").
    let backup_said =
        "state.json.bak is corrupt too (EOF while parsing a value at line 1 column 0)";
    assert!(log.contains(backup_said), "{log}");
    assert!(processes_with_arg(GREEN).is_empty(), "nothing started");
    println!("FAULT state file and backup corrupt: refused to start ({status}), nothing started");
}
