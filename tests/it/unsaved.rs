//! A `crossfade run` whose state file cannot be written (trial 13, N1; README "Restart"): a
//! transition that cannot be saved is not taken. The rollout holds where it is (weights and
//! workloads unchanged), says so, and resumes once saves work again; a restart that cannot write
//! the file refuses, naming `state_file`, and stops nothing.
//!
//! The state file's directory is replaced by a regular file, so every write fails with ENOTDIR, or
//! its backup's path by a directory, so every save's last rename fails (ways that work as root,
//! where a read-only mode does not stop writes).

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use crate::rollout::wait_terminal;
use crate::support::child::wait_state;
use crate::support::{
    pid_alive, pids_of, read_json, temp_dir, wait_gone, wait_until, Admin, App, Crossfade, Load,
    LoadConfig, RawConn, Spec,
};

/// The bound on each wait for an event: it only ends a stuck test, and covers a debug binary's
/// cold start on a loaded 2-core machine.
const PATIENCE: Duration = Duration::from_secs(90);

/// The log line of each failed save while a rollout holds.
const HOLDING: &str = "holding: the next transition cannot be saved";

/// The sample app `version`, with a readiness deadline of [`PATIENCE`].
fn patient(version: &str) -> App {
    App::version(version).set(
        "readiness",
        json!({ "interval": "50ms", "deadline": format!("{}s", PATIENCE.as_secs()) }),
    )
}

/// [`Load`] on `spec`'s listener whose requests may take up to [`PATIENCE`].
fn patient_load(spec: &Spec) -> Load {
    let mut config = LoadConfig::new(spec.listen());
    config.request_timeout = PATIENCE;
    Load::start(config)
}

/// Replaces the directory `dir` by a regular file (the directory is kept aside).
fn break_dir(dir: &Path) {
    std::fs::rename(dir, dir.with_extension("moved")).expect("move the state directory aside");
    std::fs::write(dir, b"not a directory\n").expect("a file where the directory was");
}

/// Puts the directory `dir` back.
fn mend_dir(dir: &Path) {
    std::fs::remove_file(dir).expect("remove the file");
    std::fs::rename(dir.with_extension("moved"), dir).expect("put the directory back");
}

/// `(phase, step, green's weight in basis points)` as `GET /rollout` and `GET /status` say.
async fn where_it_is(admin: &Admin) -> (String, u64, u64) {
    let rollout = admin.rollout().await;
    let weights = &admin.status().await["routes"][0]["weights"];
    (
        rollout["rollout"]["phase"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        rollout["rollout"]["step"].as_u64().unwrap_or(u64::MAX),
        weights["green"].as_u64().unwrap_or(u64::MAX),
    )
}

/// A `crossfade run` rolling out v2 over v1 under load, paused at a step whose weight is applied
/// and saved; then its state directory is broken and the rollout resumed, and it holds (the next
/// step's weight cannot be saved). Blue's and green's pids as the state file last recorded them.
struct Held {
    dir: tempfile::TempDir,
    st: std::path::PathBuf,
    state: std::path::PathBuf,
    admin: Admin,
    run: Crossfade,
    load: Load,
    blue: Vec<u32>,
    green: Vec<u32>,
}

async fn held_rollout() -> Held {
    let dir = temp_dir();
    let st = dir.path().join("st");
    std::fs::create_dir(&st).unwrap();
    let state = st.join("state.json");
    let mut spec = Spec::new()
        .blue(patient("v1"))
        .green(patient("v2"))
        .state_file(&state);
    spec.json["rollout"]["hold"] = json!("2s");
    spec.json["rollout"]["progress_deadline"] = json!("10m");
    let path = spec.write(dir.path(), "spec.yaml");
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &path);
    run.wait_ready(&admin, PATIENCE).await;
    let load = patient_load(&spec);
    // Paused at a step whose weight is applied (saved while the file can be written), so that
    // the transition that must hold is known: the next step's weight, some time after a resume.
    wait_until(PATIENCE, "a pause at an applied weight", || async {
        let rollout = &admin.rollout().await["rollout"];
        let applied = rollout["phase"] == "Progressing"
            && rollout["preview_bp"].as_u64().unwrap_or(0) > 0
            && rollout["weights_pending"] == false;
        if !applied || admin.post("/rollout/pause").await.0 != 200 {
            return None;
        }
        let paused = &admin.rollout().await["rollout"];
        if paused["phase"] == "Paused" && paused["weights_pending"] == false {
            return Some(());
        }
        // The next step's weight was still being applied: try again.
        admin.post("/rollout/resume").await;
        None
    })
    .await;
    wait_state(
        &state,
        PATIENCE,
        "a Paused rollout in the state file",
        |s| (s["rollout"]["rollout"]["phase"] == "Paused").then_some(()),
    )
    .await;
    let saved = read_json(&state);
    let blue = pids_of(&saved["active_pids"]);
    let green = pids_of(&saved["rollout"]["preview_pids"]);
    assert!(!blue.is_empty() && !green.is_empty(), "{saved:#}");

    break_dir(&st);
    let (code, answer) = admin.post("/rollout/resume").await;
    assert_eq!(code, 200, "resume changes no weight: {answer:#}");
    wait_until(PATIENCE, "the rollout to hold", || async {
        run.log().contains(HOLDING).then_some(())
    })
    .await;
    Held {
        dir,
        st,
        state,
        admin,
        run,
        load,
        blue,
        green,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_holds_while_its_state_cannot_be_saved_and_resumes_once_it_can() {
    let Held {
        dir: _dir,
        st,
        state,
        admin,
        mut run,
        load,
        blue,
        ..
    } = held_rollout().await;
    let held = where_it_is(&admin).await;
    let status = admin.rollout().await;
    let message = status["rollout"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(HOLDING)
            && message.contains(&state.display().to_string())
            && message.contains("Not a directory"),
        "the status says why it holds, naming the file and the error: {status:#}"
    );
    // Three more failed tries later, nothing has moved.
    wait_until(PATIENCE, "three more failed saves", || async {
        (run.log().matches(HOLDING).count() >= 4).then_some(())
    })
    .await;
    assert_eq!(where_it_is(&admin).await, held, "held where it was");
    assert_eq!(held.0, "Progressing", "{held:?}");
    assert!(held.2 < 10_000, "green is not promoted: {held:?}");
    assert!(blue.iter().all(|&p| pid_alive(p)), "blue is not retired");
    let status = admin.rollout().await;
    let events = status["events"].as_array().cloned().unwrap_or_default();
    let not_saved = events.iter().filter(|e| e["reason"] == "StateNotSaved");
    assert_eq!(not_saved.count(), 1, "one event per hold: {status:#}");
    let metrics = admin.metrics().await;
    let counted = [("route", "web"), ("reason", "StateNotSaved")];
    assert_eq!(
        metrics.get("crossfade_rollout_events_total", &counted),
        Some(1.0)
    );

    mend_dir(&st);
    let rollout = wait_terminal(&admin, PATIENCE).await;
    assert_eq!(rollout["phase"], "Completed", "{rollout:#}");
    let status = admin.rollout().await;
    let events = status["events"].as_array().cloned().unwrap_or_default();
    let saved_again = events
        .iter()
        .find(|e| e["reason"] == "StateSaved")
        .unwrap_or_else(|| panic!("resuming is an event: {status:#}"));
    let message = saved_again["message"].as_str().unwrap_or_default();
    // Trial 25: the time held was a raw clock reading, `over 12s 780ms 441us 536ns`.
    let held_for = message
        .split(" over ")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .unwrap_or_default();
    assert!(
        held_for.ends_with('s') && !held_for.contains("us") && !held_for.contains("ns"),
        "the time it held is told to the millisecond: {message}"
    );
    let saved = read_json(&state);
    assert_eq!(
        saved["rollout"]["rollout"]["phase"], "Completed",
        "{saved:#}"
    );
    let report = load.stop().await;
    assert_eq!(report.errors(), 0, "{report:?}");
    run.terminate(PATIENCE).await;
}

/// The family of N1 the other way: while the state cannot be saved, what sends traffic back to
/// blue still acts, since a restart from the state last saved rolls the rollout back as well.
/// An operator's abort during the hold is taken (200), green's weight goes to 0 and green is
/// stopped, blue serves on, and no request fails; the log says it acted without a save.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_while_the_state_cannot_be_saved_sends_traffic_back_and_stops_green() {
    let Held {
        dir: _dir,
        st,
        admin,
        mut run,
        load,
        blue,
        green,
        ..
    } = held_rollout().await;
    let (code, answer) = admin.post("/rollout/abort").await;
    assert_eq!(
        code,
        200,
        "an abort acts during a hold: {answer:#}\n{}",
        run.log()
    );
    let rollout = wait_terminal(&admin, PATIENCE).await;
    assert_eq!(rollout["phase"], "Aborted", "{rollout:#}");
    assert_eq!(where_it_is(&admin).await.2, 0, "green has no weight");
    wait_gone(&green, PATIENCE).await;
    assert!(blue.iter().all(|&p| pid_alive(p)), "blue serves on");
    assert!(
        run.log()
            .contains("acting anyway, because this transition sends traffic back to blue"),
        "{}",
        run.log()
    );
    let report = load.stop().await;
    assert_eq!(report.errors(), 0, "{report:?}");
    mend_dir(&st);
    run.terminate(PATIENCE).await;
}

/// The same family, without an operator: green's processes die while the state cannot be saved.
/// Their exit is watched during the hold too and sends traffic back to blue at once, without a
/// save (it was not watched until the save worked again, which may be never: a full disk); the
/// rollout rolls back for that reason (`PreviewExited`), green gets no weight and blue serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn green_dying_while_the_state_cannot_be_saved_rolls_the_rollout_back() {
    let Held {
        dir: _dir,
        st,
        admin,
        mut run,
        load,
        blue,
        green,
        ..
    } = held_rollout().await;
    for &pid in &green {
        // SIGKILL: no graceful stop, as a crash or the OOM killer would end it.
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
    }
    let rollout = wait_terminal(&admin, PATIENCE).await;
    assert_eq!(rollout["phase"], "RolledBack", "{rollout:#}\n{}", run.log());
    let status = admin.rollout().await;
    let events = status["events"].as_array().cloned().unwrap_or_default();
    assert!(
        events.iter().any(|e| e["reason"] == "PreviewExited"),
        "rolled back because green exited: {status:#}"
    );
    assert_eq!(where_it_is(&admin).await.2, 0, "green has no weight");
    assert!(blue.iter().all(|&p| pid_alive(p)), "blue serves on");
    assert!(
        run.log()
            .contains("acting anyway, because this transition sends traffic back to blue"),
        "{}",
        run.log()
    );
    load.stop().await;
    mend_dir(&st);
    run.terminate(PATIENCE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_that_cannot_write_its_state_refuses_and_stops_nothing() {
    let dir = temp_dir();
    let st = dir.path().join("st");
    std::fs::create_dir(&st).unwrap();
    let state = st.join("state.json");
    let mut spec = Spec::new()
        .blue(patient("v1"))
        .green(patient("v2"))
        .state_file(&state);
    spec.json["rollout"]["hold"] = json!("1h");
    spec.json["rollout"]["progress_deadline"] = json!("2h");
    let path = spec.write(dir.path(), "spec.yaml");
    let admin = Admin::new(spec.admin());
    let mut first = Crossfade::run(dir.path(), &path);
    first.wait_ready(&admin, PATIENCE).await;
    let what = "a Progressing rollout with green's pids";
    let (blue, green) = wait_state(&state, PATIENCE, what, |s| {
        let progressing = s["rollout"]["rollout"]["phase"] == "Progressing";
        let green = pids_of(&s["rollout"]["preview_pids"]);
        (progressing && !green.is_empty()).then(|| (pids_of(&s["active_pids"]), green))
    })
    .await;
    let endpoint = admin.status().await["routes"][0]["blue"]["endpoints"][0].clone();
    let endpoint: std::net::SocketAddr = endpoint
        .as_str()
        .and_then(|e| e.parse().ok())
        .unwrap_or_else(|| panic!("blue's endpoint: {endpoint}"));
    first.kill_hard();

    // The directory replaced by a file: refused by the spec's check, naming `state_file`.
    break_dir(&st);
    let mut second = Crossfade::run(dir.path(), &path);
    let exit = second.wait_exit(PATIENCE).await;
    assert!(!exit.success(), "{exit:?}");
    let log = second.log();
    assert!(
        log.contains("state_file: ") && log.contains("is not a directory"),
        "the refusal names state_file: {log}"
    );
    mend_dir(&st);
    // The state file can be written, its child journal cannot (its path is a directory that is
    // not empty): refused before anything is stopped, as for the state file. (Stopping first
    // would leave nothing serving: the start fails once the journal must be written.)
    let journal = st.join("state.json.children");
    let journal_aside = st.join("journal.moved");
    std::fs::rename(&journal, &journal_aside).expect("the journal exists");
    std::fs::create_dir_all(journal.join("in-the-way")).unwrap();
    let mut refused = Crossfade::run(dir.path(), &path);
    let exit = refused.wait_exit(PATIENCE).await;
    assert!(!exit.success(), "{exit:?}");
    let log = refused.log();
    assert!(
        log.contains(&format!("state_file: child journal {}", journal.display()))
            && log.contains("refusing to start"),
        "the refusal names state_file and the journal: {log}"
    );
    assert!(
        blue.iter().chain(&green).all(|&p| pid_alive(p)),
        "nothing stopped: {log}"
    );
    std::fs::remove_dir_all(&journal).unwrap();
    std::fs::rename(&journal_aside, &journal).unwrap();
    // The directory is there, the file reads, but a save fails (its backup's path is a directory
    // that is not empty, so the rename over it fails as a full disk's write would): refused
    // before anything is stopped.
    let backup = st.join("state.json.bak");
    std::fs::remove_file(&backup).expect("the backup exists");
    std::fs::create_dir_all(backup.join("in-the-way")).unwrap();
    let mut third = Crossfade::run(dir.path(), &path);
    let exit = third.wait_exit(PATIENCE).await;
    assert!(!exit.success(), "{exit:?}");
    let log = third.log();
    assert!(
        log.contains(&format!("state_file: state file {}", backup.display()))
            && log.contains("refusing to start")
            && log.contains("was neither stopped nor taken over"),
        "the refusal names state_file, the file and the error: {log}"
    );
    // Nothing was stopped: blue still serves on its port (and green still runs).
    assert!(
        blue.iter().chain(&green).all(|&p| pid_alive(p)),
        "nothing stopped"
    );
    let mut conn = RawConn::connect(endpoint).await;
    conn.send(b"GET / HTTP/1.1\r\nHost: blue\r\nConnection: close\r\n\r\n")
        .await;
    let answer = conn.read_response().await;
    assert_eq!(
        (answer.status(), answer.header("x-version")),
        (200, Some("v1"))
    );

    std::fs::remove_dir_all(&backup).unwrap();
    let mut fourth = Crossfade::run(dir.path(), &path);
    fourth.wait_ready(&admin, PATIENCE).await;
    wait_gone(&green, PATIENCE).await;
    // Blue, healthy all along, is adopted: the refused third start's save kept its pids (crash35:
    // before, that save recorded `active_pids: []`, and this start stopped blue as a leftover and
    // started it afresh).
    assert!(
        blue.iter().all(|&p| pid_alive(p)),
        "blue adopted, not started afresh: {}",
        fourth.log()
    );
    let load = patient_load(&spec);
    load.wait_requests(100, PATIENCE).await;
    let report = load.stop().await;
    assert_eq!(report.errors(), 0, "{report:?}");
    assert_eq!(report.ok_from("v1"), report.total(), "{report:?}");
    let status = admin.rollout().await;
    assert_eq!(status["rollout"]["phase"], "RolledBack", "{status:#}");
    fourth.terminate(PATIENCE).await;
}
