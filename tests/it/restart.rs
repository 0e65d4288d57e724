//! State persistence (README "Restart", docs/architecture.md "Restart (local mode)"): a `crossfade run`
//! killed mid-rollout, or restarted after one, and started again with the same spec.

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;

use crate::rollout::wait_terminal;
use crate::support::child::wait_state;
use crate::support::{
    pid_alive, pids_of, read_json, run_to_end, temp_dir, wait_gone, wait_until, Admin, App,
    Crossfade, Load, LoadConfig, Metrics, Spec,
};

/// The bound on a wait for an event (ready, exited, the rollout ended): each wait returns as soon
/// as its event happens, so the bound only ends a test that is stuck, and is long enough for a
/// debug binary's cold start on a loaded 2-core machine.
const PATIENCE: Duration = Duration::from_secs(60);

/// [`Load`] on `spec`'s listener whose requests may take up to [`PATIENCE`]: the assertions count
/// every answer, and a loaded machine must not turn a slow one into a transport error.
fn patient_load(spec: &Spec) -> Load {
    let mut config = LoadConfig::new(spec.listen());
    config.request_timeout = PATIENCE;
    Load::start(config)
}

/// The sample app `version` with a readiness deadline of [`PATIENCE`]: the deadline is the spec's
/// rule for a workload that never gets ready, and a cold start on a loaded machine must not break it.
fn patient(version: &str) -> App {
    App::version(version).set(
        "readiness",
        json!({ "interval": "50ms", "deadline": format!("{}s", PATIENCE.as_secs()) }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_during_a_rollout_rolls_it_back_and_kills_the_orphaned_green() {
    let dir = temp_dir();
    let state = dir.path().join("state.json");
    let mut spec = Spec::new().green(App::version("v2")).state_file(&state);
    spec.json["rollout"]["hold"] = json!("1h");
    spec.json["rollout"]["progress_deadline"] = json!("2h");
    let path = spec.write(dir.path(), "spec.yaml");
    let admin = Admin::new(spec.admin());
    let mut first = Crossfade::run(dir.path(), &path);
    first.wait_ready(&admin, Duration::from_secs(15)).await;
    let what = "a Progressing rollout with green's pids";
    let (old_blue, green) = wait_state(&state, Duration::from_secs(15), what, |s| {
        let progressing = s["rollout"]["rollout"]["phase"] == "Progressing";
        let green = pids_of(&s["rollout"]["preview_pids"]);
        (progressing && !green.is_empty()).then(|| (pids_of(&s["active_pids"]), green))
    })
    .await;
    first.kill_hard();
    assert!(
        green.iter().all(|&p| pid_alive(p)),
        "green outlives a SIGKILLed crossfade"
    );

    let mut second = Crossfade::run(dir.path(), &path);
    second.wait_ready(&admin, Duration::from_secs(15)).await;
    wait_gone(&green, Duration::from_secs(5)).await;
    // Blue was healthy: adopted, not started afresh (trial 13, N7).
    assert!(
        !old_blue.is_empty() && old_blue.iter().all(|&p| pid_alive(p)),
        "the same blue serves: {old_blue:?}"
    );
    let load = Load::start(LoadConfig::new(spec.listen()));
    load.wait_requests(150, Duration::from_secs(15)).await;
    let report = load.stop().await;

    assert_eq!(report.errors(), 0, "{report:?}");
    assert_eq!(
        report.ok_from("v1"),
        report.total(),
        "blue alone serves: {report:?}"
    );
    let status = admin.rollout().await;
    let rollout = &status["rollout"];
    assert_eq!(
        (rollout["id"].as_u64(), status["running"].as_bool()),
        (Some(1), Some(false)),
        "no new rollout: {status:#}"
    );
    assert_eq!(rollout["phase"], "RolledBack", "{status:#}");
    let reason = rollout["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("restarted in Progressing"),
        "restart reason: {reason}"
    );
    let events = status["events"].as_array().cloned().unwrap_or_default();
    assert!(
        events.iter().any(|e| e["reason"] == "Recovered"),
        "a Recovered event: {status:#}"
    );
    let saved = read_json(&state);
    assert_eq!(
        saved["rollout"]["rollout"]["phase"], "RolledBack",
        "state file: {saved:#}"
    );
    let weights = &admin.status().await["routes"][0]["weights"];
    assert_eq!(weights, &json!({ "blue": 10000, "green": 0 }));
    // The rollback by restart is counted (trial 9 I4), after this test's first scrape (nothing
    // else scrapes): 0 first, so that Prometheus' increase() sees the 1.
    let (before, after) = (admin.metrics().await, admin.metrics().await);
    assert_eq!(restart_counts(&before), (0.0, 0.0), "first scrape");
    assert_eq!(restart_counts(&after), (1.0, 1.0), "second scrape");
    // Session 40: the dashboard's annotation of rollout transitions marks this end of the
    // rollout too (it listed RolledBack, which a restart does not count, and not Recovered).
    let events = "crossfade_rollout_events_total";
    let reason = |s: &crate::support::admin::Sample| {
        let found = s.labels.iter().find(|(k, _)| k == "reason");
        found.map(|(_, v)| v.clone()).unwrap_or_default()
    };
    let counted: Vec<String> = (after.find(events, &[("route", "web")]))
        .filter(|s| s.value > before.sum(events, &[("route", "web"), ("reason", &reason(s))]))
        .map(reason)
        .collect();
    let annotated = crate::observability::annotated_reasons();
    assert!(
        counted.iter().any(|r| annotated.contains(r)),
        "the restart counted the events {counted:?}, and the dashboard annotates {annotated:?}"
    );
    second.terminate(Duration::from_secs(15)).await;
}

/// `crossfade_rollouts_total{outcome="rolled_back"}` and
/// `crossfade_rollout_events_total{reason="Recovered"}` of route `web`, in one scrape.
fn restart_counts(metrics: &Metrics) -> (f64, f64) {
    let route = ("route", "web");
    let outcome = [route, ("outcome", "rolled_back")];
    let reason = [route, ("reason", "Recovered")];
    (
        metrics
            .get("crossfade_rollouts_total", &outcome)
            .unwrap_or(f64::NAN),
        metrics
            .get("crossfade_rollout_events_total", &reason)
            .unwrap_or(f64::NAN),
    )
}

/// A `crossfade run` in `dir` with a state file whose rollout to v2 (one step of 100%) is
/// completed by `promote`: its spec file, admin API and process.
async fn completed_by_promotion(dir: &std::path::Path) -> (Spec, Admin, Crossfade) {
    let state = dir.join("state.json");
    let mut spec = Spec::new().green(App::version("v2")).state_file(&state);
    // Nothing to analyse without load: promote skips the steps (the rollout itself is another test).
    spec.json["rollout"]["steps"] = json!([100]);
    let path = spec.write(dir, "spec.yaml");
    let admin = Admin::new(spec.admin());
    let mut first = Crossfade::run(dir, &path);
    first.wait_ready(&admin, Duration::from_secs(15)).await;
    wait_until(
        Duration::from_secs(15),
        "the rollout to accept promote",
        || async { (admin.post("/rollout/promote").await.0 == 200).then_some(()) },
    )
    .await;
    let rollout = wait_terminal(&admin, Duration::from_secs(20)).await;
    assert_eq!(rollout["phase"], "Completed", "{rollout:#}");
    (spec, admin, first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_a_completed_rollout_serves_the_promoted_version_without_rolling_out_again() {
    let dir = temp_dir();
    let (spec, admin, mut first) = completed_by_promotion(dir.path()).await;
    let path = dir.path().join("spec.yaml");
    assert!(first.terminate(Duration::from_secs(15)).await.success());

    let mut second = Crossfade::run(dir.path(), &path);
    second.wait_ready(&admin, Duration::from_secs(15)).await;
    wait_until(
        Duration::from_secs(10),
        "the log to say no rollout starts",
        || async {
            // The unnamed green is called by its slot, green, where the role swap put it (it
            // was called blue, the slot the next preview would take).
            second
                .log()
                .contains("not starting the rollout to green: rollout 1 already rolled it out")
                .then_some(())
        },
    )
    .await;
    let load = Load::start(LoadConfig::new(spec.listen()));
    load.wait_requests(150, Duration::from_secs(15)).await;
    let report = load.stop().await;

    assert_eq!(report.errors(), 0, "{report:?}");
    assert_eq!(
        report.ok_from("v2"),
        report.total(),
        "the promoted v2 serves: {report:?}"
    );
    let status = admin.rollout().await;
    assert_eq!(status["active"], "green", "{status:#}");
    assert_eq!(status["rollout"]["id"], 1, "no second rollout: {status:#}");
    assert_eq!(status["running"], false, "{status:#}");
    // The rollout ended in the first process: the second one counts nothing for it.
    for scrape in ["first", "second"] {
        let metrics = admin.metrics().await;
        assert_eq!(restart_counts(&metrics), (0.0, 0.0), "{scrape} scrape");
    }
    assert_restart_is_the_last_event(&admin, second.pid(), "Completed").await;
    second.terminate(Duration::from_secs(15)).await;
}

/// `crossfade_rollout_transition_timestamp_seconds` of route `web`, from one scrape.
async fn transition_time(admin: &Admin) -> f64 {
    let metrics = admin.metrics().await;
    let name = "crossfade_rollout_transition_timestamp_seconds";
    metrics.get(name, &[("route", "web")]).expect(name)
}

/// Session 40: `crossfade_rollout_transition_timestamp_seconds` ("when the rollout's phase or
/// step last changed", docs/metrics.md) was set to the restarted process's start for the last
/// rollout it loaded, whose phase had not changed since the previous run ended it; so the same
/// holds after a binary upgrade, which loads the rollout the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_the_time_the_last_rollout_ended_as_its_last_transition() {
    let dir = temp_dir();
    let (_spec, admin, mut first) = completed_by_promotion(dir.path()).await;
    let ended = transition_time(&admin).await;
    assert!(first.terminate(Duration::from_secs(15)).await.success());

    let restarted_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs_f64();
    let mut second = Crossfade::run(dir.path(), &dir.path().join("spec.yaml"));
    second.wait_ready(&admin, Duration::from_secs(15)).await;
    let loaded = transition_time(&admin).await;
    assert!(
        loaded < restarted_at && (loaded - ended).abs() < 0.5,
        "the rollout ended at {ended} (the first run's gauge), the restart began at \
         {restarted_at}, and the restarted run's gauge says {loaded}"
    );
    second.terminate(Duration::from_secs(15)).await;
}

/// Trial 13 N15: after a clean restart `GET /rollout`'s last event was the previous run's
/// (`Completed`, or `Aborted: ... (generation 4)` beside a table at generation 1), which
/// `crossfade status` showed as current. The restart is now the last event, `Restored` with the
/// saved rollout's phase and this process's pid, and `status` shows the previous run's last
/// event as such, with its time.
async fn assert_restart_is_the_last_event(admin: &Admin, pid: u32, phase: &str) {
    let status = admin.rollout().await;
    let events = status["events"].as_array().expect("events");
    let last = events.last().expect("an event");
    assert_eq!(last["reason"], "Restored", "{status:#}");
    let message = last["message"].as_str().unwrap_or_default();
    let expected =
        format!("crossfade restarted from its state file (pid {pid}); rollout 1 ended {phase} at ");
    assert!(message.starts_with(&expected), "{message}");
    assert!(message.ends_with(", before the restart"), "{message}");
    let previous = &events[events.len() - 2];
    assert_eq!(previous["reason"], phase, "{status:#}");
    let addr = admin.addr.to_string();
    let done = run_to_end(
        ["status", "--admin", addr.as_str()],
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(done.code, Some(0), "{}{}", done.stdout, done.stderr);
    let text = done.stdout;
    assert!(
        text.contains("\n  last event: Restored: crossfade restarted"),
        "{text}"
    );
    // Session 41: one end, one time. The event that ended the rollout carries the rollout's
    // end, which the restart's event names, and status says that time once (it said
    // `ended Completed at ...22.719Z` and `before the restart: Completed at ...22.743Z`).
    let end = message
        .split(&format!(" ended {phase} at "))
        .nth(1)
        .and_then(|rest| rest.strip_suffix(", before the restart"))
        .expect("the end's time")
        .to_owned();
    let ended_at = previous["at_unix_seconds"]
        .as_f64()
        .expect("the event's time");
    assert!(
        end.starts_with("20") && end.ends_with('Z'),
        "the restart's event names the end as {end:?}"
    );
    let before = format!("\n  before the restart: {phase}: ");
    assert!(text.contains(&before), "{text}");
    assert_eq!(
        text.matches(end.as_str()).count(),
        1,
        "the end at {end} said once:\n{text}"
    );
    assert!(
        (end_unix(&end) - ended_at).abs() < 0.001,
        "the {phase} event at {ended_at} is the end the restart names, {end}: {status:#}"
    );
    let metrics = admin.metrics().await;
    let reason = [("route", "web"), ("reason", "Restored")];
    // Counted after the first scrape (the caller's scrapes came before this one).
    let counted = metrics.get("crossfade_rollout_events_total", &reason);
    assert_eq!(
        counted,
        Some(1.0),
        "crossfade_rollout_events_total{reason:?}"
    );
}

/// Unix seconds of `at`, an RFC 3339 UTC time with milliseconds (`2026-12-06T01:30:22.719Z`).
fn end_unix(at: &str) -> f64 {
    let parsed = humantime::parse_rfc3339(at).expect("an RFC 3339 time");
    let since = parsed.duration_since(std::time::UNIX_EPOCH);
    since.expect("a time after 1970").as_secs_f64()
}

/// The spec's green (v2) ended aborted; `crossfade migrate` started v3 and crossfade was killed
/// mid-rollout. The restart rolls v3 back and must not roll out v2 again: the state file remembers
/// every green that ended, not only the last rollout's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_a_crash_during_migrate_does_not_retry_the_specs_ended_green() {
    let dir = temp_dir();
    let state = dir.path().join("state.json");
    let mut spec = Spec::new().green(App::version("v2")).state_file(&state);
    spec.json["rollout"]["hold"] = json!("1h");
    spec.json["rollout"]["progress_deadline"] = json!("2h");
    let path = spec.write(dir.path(), "spec.yaml");
    let admin = Admin::new(spec.admin());
    let mut first = Crossfade::run(dir.path(), &path);
    first.wait_ready(&admin, Duration::from_secs(15)).await;
    wait_until(
        Duration::from_secs(15),
        "the spec's rollout to accept abort",
        || async { (admin.post("/rollout/abort").await.0 == 200).then_some(()) },
    )
    .await;
    let rollout = wait_terminal(&admin, Duration::from_secs(20)).await;
    assert_eq!(rollout["phase"], "Aborted", "{rollout:#}");
    let migrate = json!({ "green": App::version("v3").json });
    // Accepted once the aborted rollout has stopped its green.
    wait_until(
        Duration::from_secs(15),
        "the migrate to be accepted",
        || async {
            let (code, _) = admin.json("POST", "/rollout", Some(&migrate)).await;
            (code == 202).then_some(())
        },
    )
    .await;
    let what = "rollout 2 Progressing with green's pids";
    let green = wait_state(&state, Duration::from_secs(15), what, |s| {
        let record = &s["rollout"];
        let progressing =
            record["rollout"]["phase"] == "Progressing" && record["rollout"]["id"] == 2;
        let green = pids_of(&record["preview_pids"]);
        (progressing && !green.is_empty()).then_some(green)
    })
    .await;
    first.kill_hard();

    let mut second = Crossfade::run(dir.path(), &path);
    second.wait_ready(&admin, Duration::from_secs(15)).await;
    wait_gone(&green, Duration::from_secs(5)).await;
    wait_until(
        Duration::from_secs(10),
        "the log to say the spec's green is not rolled out again",
        || async {
            let log = second.log();
            (log.contains(
                "not starting the rollout to green: rollout 1 to it was aborted; blue serves",
            ))
            .then_some(())
        },
    )
    .await;
    let status = admin.rollout().await;
    let rollout = &status["rollout"];
    assert_eq!(
        (rollout["id"].as_u64(), status["running"].as_bool()),
        (Some(2), Some(false)),
        "no new rollout: {status:#}"
    );
    assert_eq!(rollout["phase"], "RolledBack", "{status:#}");
    let saved = read_json(&state);
    assert_eq!(saved["ended"][0]["id"], 1, "state file: {saved:#}");
    assert_eq!(
        saved["ended"][0]["phase"], "Aborted",
        "state file: {saved:#}"
    );
    let weights = &admin.status().await["routes"][0]["weights"];
    assert_eq!(weights, &json!({ "blue": 10000, "green": 0 }));
    second.terminate(Duration::from_secs(15)).await;
}

/// Every start records its own workload's pids, so a crash after any number of restarts leaves no
/// orphan behind; and a second instance cannot take over a state file that is in use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_restart_records_its_pids_and_a_state_file_serves_one_instance() {
    let dir = temp_dir();
    let state = dir.path().join("state.json");
    let spec = Spec::new().state_file(&state);
    let path = spec.write(dir.path(), "spec.yaml");
    let admin = Admin::new(spec.admin());
    let pids = |what: &'static str| {
        let state = state.clone();
        async move {
            wait_state(&state, Duration::from_secs(15), what, |s| {
                Some(pids_of(&s["active_pids"]))
                    .filter(|p| !p.is_empty() && p.iter().all(|&p| pid_alive(p)))
            })
            .await
        }
    };

    let mut first = Crossfade::run(dir.path(), &path);
    first.wait_ready(&admin, Duration::from_secs(15)).await;
    let first_pids = pids("the first run's pids").await;

    // A second instance on other ports but the same state file is refused, and kills nothing.
    refused_as_second_instance(spec.clone(), dir.path(), &first_pids).await;

    first.terminate(Duration::from_secs(15)).await;
    let mut second = Crossfade::run(dir.path(), &path);
    second.wait_ready(&admin, Duration::from_secs(15)).await;
    let second_pids = wait_until(Duration::from_secs(15), "new pids", || {
        let pids = pids("the second run's pids");
        let first = first_pids.clone();
        async move { Some(pids.await).filter(|p| *p != first) }
    })
    .await;

    second.kill_hard();
    let mut third = Crossfade::run(dir.path(), &path);
    third.wait_ready(&admin, Duration::from_secs(15)).await;
    // The healthy workload is adopted (trial 13, N7), and stopped with the run that adopted it.
    assert!(
        second_pids.iter().all(|&p| pid_alive(p)),
        "adopted: {second_pids:?}"
    );
    third.terminate(Duration::from_secs(15)).await;
    wait_gone(&second_pids, Duration::from_secs(5)).await;
}

/// Trial 44b (finding 10): a second run on the same state file and the same ports said only
/// `cannot bind the listen address ...: Address already in use`; the state file's lock is taken
/// before the sockets are bound, so it is told that another crossfade process holds the file, and
/// which one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_on_the_same_state_file_and_ports_names_the_lock_holder() {
    let dir = temp_dir();
    let state = dir.path().join("state.json");
    let spec = Spec::new().state_file(&state);
    let path = spec.write(dir.path(), "spec.yaml");
    let admin = Admin::new(spec.admin());
    let mut first = Crossfade::run(dir.path(), &path);
    first.wait_ready(&admin, PATIENCE).await;

    let mut second = Crossfade::run(dir.path(), &path);
    let code = second.wait_exit(PATIENCE).await;
    let held = format!(
        "state file {} is in use by another crossfade process (pid {} holds its lock {}.lock)",
        state.display(),
        first.pid(),
        state.display()
    );
    assert_eq!(code.code(), Some(1), "{}", second.log());
    assert!(second.log().contains(&held), "{held}\n{}", second.log());
    // The first run still serves.
    admin.status().await;
    assert!(first.terminate(PATIENCE).await.success());
}

/// README "Restart": an edited `blue:` after a completed rollout is ambiguous (the promoted green is
/// recorded as active), so the start is refused naming the field and the way out; an edited `blue:`
/// with no promotion recorded serves, as on a first start, with a `BlueChanged` event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_blue_is_refused_after_a_promotion_and_served_without_one() {
    let dir = temp_dir();
    let state = dir.path().join("state.json");
    let mut spec = Spec::new().state_file(&state).blue(patient("v1"));
    let admin = Admin::new(spec.admin());
    let path = spec.write(dir.path(), "spec.yaml");
    let mut first = Crossfade::run(dir.path(), &path);
    first.wait_ready(&admin, PATIENCE).await;
    assert!(first.terminate(PATIENCE).await.success());

    // No promotion yet: the edited blue serves.
    spec = spec.blue(patient("v1b"));
    let path = spec.write(dir.path(), "spec.yaml");
    let mut second = Crossfade::run(dir.path(), &path);
    second.wait_ready(&admin, PATIENCE).await;
    let load = patient_load(&spec);
    load.wait_requests(20, PATIENCE).await;
    let report = load.stop().await;
    assert_eq!(report.ok_from("v1b"), report.total(), "{report:?}");
    let events = admin.rollout().await["events"].to_string();
    assert!(events.contains("BlueChanged"), "{events}");

    // Roll out v2 to completion, then edit blue: refused, state file untouched.
    let request = json!({ "green": patient("v2").json, "rollout": { "steps": [100] } });
    let (status, body) = admin.json("POST", "/rollout", Some(&request)).await;
    assert_eq!(status, 202, "{body}");
    wait_until(PATIENCE, "promote to be accepted", || async {
        (admin.post("/rollout/promote").await.0 == 200).then_some(())
    })
    .await;
    let rollout = wait_terminal(&admin, PATIENCE).await;
    assert_eq!(rollout["phase"], "Completed", "{rollout:#}");
    assert!(second.terminate(PATIENCE).await.success());
    let recorded = std::fs::read_to_string(&state).unwrap();

    let edited = spec.clone().blue(patient("v3"));
    let path = edited.write(dir.path(), "spec.yaml");
    let mut refused = Crossfade::run(dir.path(), &path);
    let status = refused.wait_exit(PATIENCE).await;
    assert_eq!(status.code(), Some(1));
    let log = refused.log();
    for part in [
        "blue: was edited",
        "rollout 1",
        "--version v2",
        "move it to green:",
    ] {
        assert!(log.contains(part), "{part}: {log}");
    }
    assert!(log.contains(&state.display().to_string()), "{log}");
    assert_eq!(std::fs::read_to_string(&state).unwrap(), recorded);

    // Unchanged blue (v1b): the promoted v2 serves, as before.
    let path = spec.write(dir.path(), "spec.yaml");
    let mut third = Crossfade::run(dir.path(), &path);
    third.wait_ready(&admin, PATIENCE).await;
    let load = patient_load(&spec);
    load.wait_requests(20, PATIENCE).await;
    let report = load.stop().await;
    assert_eq!(report.ok_from("v2"), report.total(), "{report:?}");
    third.terminate(PATIENCE).await;
}

/// A SIGTERM sent while `crossfade run` is still starting (its admin port bound, blue not ready
/// yet) is handled, never by the default action's kill (which left blue running): blue's start is
/// cancelled, its instances stopped, the reason logged, and the exit is 0, as for a SIGTERM once
/// serving: a requested stop that went cleanly is no failure to systemd or Kubernetes. The handlers are installed before anything binds, so a `/readyz` that answers means they
/// are in place: a test (or a supervisor) may stop the process the moment it is ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_while_starting_cancels_the_start_stops_blue_and_exits_0() {
    let dir = temp_dir();
    let spec = Spec::new().blue(patient("v1").flags(["--unready-for", "30s"]));
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    // The admin port is bound before blue starts; blue stays unready for 30 s, so the signal
    // always lands during the start, however slow the machine.
    wait_until(PATIENCE, "the admin port to be bound", || async {
        tokio::net::TcpStream::connect(spec.admin())
            .await
            .ok()
            .map(drop)
    })
    .await;
    let _ = kill(Pid::from_raw(run.pid() as i32), Signal::SIGTERM);
    let status = run.wait_exit(PATIENCE).await;
    let log = run.log();
    assert_eq!(status.code(), Some(0), "{status}: {log}");
    assert!(
        log.contains("stopped by a signal before blue was ready"),
        "{log}"
    );
    assert!(log.contains("workload stopped"), "{log}");
}

/// Workload processes of a test that must not outlive it, killed by pid (their process group)
/// when it ends, also when it fails: a leak this test is about must not stay behind.
struct Reap(Vec<u32>);

impl Drop for Reap {
    fn drop(&mut self) {
        for &pid in self.0.iter().filter(|&&p| pid_alive(p)) {
            let _ = nix::sys::signal::killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}

/// Waits until `run`'s log shows each of `instances` (`green-0`) listening: the sample app's
/// first line.
async fn wait_listening(run: &Crossfade, instances: &[&str]) {
    wait_until(PATIENCE, "the instances to listen", || {
        let log = run.log();
        let all = instances.iter().all(|i| {
            log.lines()
                .any(|l| l.contains(&format!("[{i}]")) && l.contains("listening"))
        });
        std::future::ready(all.then_some(()))
    })
    .await;
}

/// Direct children of `pid` whose command line holds `--version version` (the sample app's).
fn children_running(pid: u32, version: &str) -> Vec<u32> {
    crate::support::child::children_of(pid)
        .into_iter()
        .filter(|child| {
            let cmdline = std::fs::read(format!("/proc/{child}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            args.windows(2)
                .any(|w| w[0] == b"--version" && w[1] == version.as_bytes())
                && pid_alive(*child)
        })
        .collect()
}

/// Trial 12 M1: a `crossfade run` SIGKILLed while green is still provisioning (its processes
/// started, not ready, so not yet in the state file's `preview_pids`) leaked green's processes for
/// good. Every spawn is now recorded before it happens (the child journal beside the state file):
/// the restart stops green's processes, says so (which pids, and that the rollback came before
/// green got any traffic), and blue alone serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_while_green_provisions_stops_greens_processes_and_says_so() {
    let dir = temp_dir();
    let state = dir.path().join("state.json");
    // Green never becomes ready while this test runs: the kill always lands in `Provisioning`.
    let green = patient("v2")
        .flags(["--unready-for", "1h"])
        .set("instances", json!(2))
        .set("readiness", json!({ "interval": "50ms", "deadline": "1h" }));
    let mut spec = Spec::new().green(green).state_file(&state);
    spec.json["rollout"]["progress_deadline"] = json!("2h");
    let path = spec.write(dir.path(), "spec.yaml");
    let admin = Admin::new(spec.admin());
    let mut first = Crossfade::run(dir.path(), &path);
    first.wait_ready(&admin, PATIENCE).await;
    wait_state(&state, PATIENCE, "a Provisioning rollout", |s| {
        (s["rollout"]["rollout"]["phase"] == "Provisioning").then_some(())
    })
    .await;
    let pid = first.pid();
    let green = wait_until(PATIENCE, "green's 2 processes", || {
        let found = children_running(pid, "v2");
        std::future::ready((found.len() == 2).then_some(found))
    })
    .await;
    // Both have written their first line: a process whose controller is gone dies of SIGPIPE at
    // its next write to the controller's pipe, and these write nothing more until ready.
    wait_listening(&first, &["green-0", "green-1"]).await;
    let _reap = Reap(green.clone());
    let old_blue = children_running(pid, "v1");
    let saved = read_json(&state);
    assert_eq!(
        saved["rollout"]["rollout"]["phase"], "Provisioning",
        "{saved:#}"
    );
    first.kill_hard();
    assert!(
        green.iter().all(|&p| pid_alive(p)),
        "green outlives a SIGKILLed crossfade"
    );

    let mut second = Crossfade::run(dir.path(), &path);
    second.wait_ready(&admin, PATIENCE).await;
    wait_gone(&green, PATIENCE).await;
    // Blue was healthy: adopted, not started afresh (trial 13, N7).
    assert!(
        !old_blue.is_empty() && old_blue.iter().all(|&p| pid_alive(p)),
        "the same blue serves: {old_blue:?}"
    );

    let status = admin.rollout().await;
    let rollout = &status["rollout"];
    assert_eq!(
        (rollout["id"].as_u64(), rollout["phase"].as_str()),
        (Some(1), Some("RolledBack")),
        "{status:#}"
    );
    let message = rollout["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("restarted in Provisioning: rolled back before green got any traffic"),
        "{message}"
    );
    for pid in &green {
        assert!(
            message.contains(&format!("(pid {pid})")),
            "green's pid {pid} named as stopped: {message}"
        );
    }
    for instance in ["green instance 0", "green instance 1"] {
        assert!(message.contains(instance), "{instance}: {message}");
    }
    let events = status["events"].as_array().cloned().unwrap_or_default();
    assert!(
        events.iter().any(|e| e["reason"] == "LeftoversStopped"),
        "{status:#}"
    );
    let load = patient_load(&spec);
    load.wait_requests(50, PATIENCE).await;
    let report = load.stop().await;
    assert_eq!(report.errors(), 0, "{report:?}");
    assert_eq!(report.ok_from("v1"), report.total(), "{report:?}");
    second.terminate(PATIENCE).await;
}

/// The same family at start: a `crossfade run` SIGKILLed while its blue is starting (not ready,
/// so not yet in the state file's `active_pids`) left blue's processes running; the next start
/// stops them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_a_kill_while_blue_starts_stops_the_unready_blue() {
    let dir = temp_dir();
    let state = dir.path().join("state.json");
    let slow = patient("v1")
        .flags(["--unready-for", "1h"])
        .set("readiness", json!({ "interval": "50ms", "deadline": "1h" }));
    let spec = Spec::new().blue(slow).state_file(&state);
    let path = spec.write(dir.path(), "spec.yaml");
    let admin = Admin::new(spec.admin());
    let mut first = Crossfade::run(dir.path(), &path);
    let pid = first.pid();
    let blue = wait_until(PATIENCE, "blue's process", || {
        let found = children_running(pid, "v1");
        std::future::ready((found.len() == 1).then_some(found))
    })
    .await;
    wait_listening(&first, &["blue-0"]).await;
    let _reap = Reap(blue.clone());
    first.kill_hard();
    assert!(blue.iter().all(|&p| pid_alive(p)), "blue outlives the kill");

    // The same blue, ready at once (an edited blue: with no promotion recorded serves).
    let ready = spec.clone().blue(patient("v1"));
    let ready_path = ready.write(dir.path(), "ready.yaml");
    let mut second = Crossfade::run(dir.path(), &ready_path);
    second.wait_ready(&admin, PATIENCE).await;
    wait_gone(&blue, PATIENCE).await;
    assert!(
        second
            .log()
            .contains("stopped what the previous run left running: blue instance 0"),
        "{}",
        second.log()
    );
    second.terminate(PATIENCE).await;
}

/// Trial 12 M7: `run --exit-after-rollout` again after the spec's green rolled back starts no
/// rollout; its outcome (exit 3, as CI needs) says the rollout shown is an earlier run's, and the
/// log says, at INFO and in words true now, why no rollout starts (it repeated the old rollout's
/// message at WARN, "already ended rolled back (...)").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_after_rollout_again_says_the_outcome_is_an_earlier_runs() {
    let dir = temp_dir();
    let (_, path) = failing_green_spec(dir.path());
    let run = |json: bool| {
        let mut args = vec![
            "run".into(),
            path.clone().into_os_string(),
            "--exit-after-rollout".into(),
        ];
        if json {
            args.push("--json".into());
        }
        crate::support::child::run_to_end(args, PATIENCE)
    };
    let first = run(false).await;
    assert_eq!(first.code, Some(3), "{}", first.stderr);
    assert!(
        first.stdout.starts_with("rollout 1 RolledBack"),
        "{}",
        first.stdout
    );

    let again = run(false).await;
    assert_eq!(again.code, Some(3), "{}", again.stderr);
    assert!(
        again
            .stdout
            .starts_with("rollout 1 (an earlier run's; not started again) RolledBack"),
        "{}",
        again.stdout
    );
    let why = "INFO not starting the rollout to green: rollout 1 rolled it back; blue serves";
    assert!(again.stderr.contains(why), "{}", again.stderr);
    assert!(
        !again.stderr.contains("WARN not starting"),
        "{}",
        again.stderr
    );

    let json = run(true).await;
    let outcome: serde_json::Value = serde_json::from_str(json.stdout.trim()).expect("one object");
    assert_eq!(
        (
            &outcome["earlier_run"],
            &outcome["rollout"],
            &outcome["exit_code"]
        ),
        (&json!(true), &json!(1), &json!(3)),
        "{outcome}"
    );
}

/// Runtry 30: the usual way to try a green again after it rolled back is to fix it and rebuild
/// it in place (same path, same spec). The state file knew the green only by its spec, so the
/// second `run` refused it ("Change the green section") and exited 3. The rollout records its
/// program's digest; a green whose program is another build is rolled out, and the log says why.
/// The same build again is still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_green_rebuilt_in_place_after_a_rollback_is_rolled_out_again() {
    let dir = temp_dir();
    let (program, path) = failing_green_spec(dir.path());
    let run = || {
        let args = vec![
            "run".into(),
            path.clone().into_os_string(),
            "--exit-after-rollout".into(),
        ];
        run_to_end(args, PATIENCE)
    };
    let sha256 = |path: &std::path::Path| {
        let bytes = std::fs::read(path).expect("read the program");
        format!("sha256:{:x}", <sha2::Sha256 as sha2::Digest>::digest(bytes))
    };
    let old = sha256(&program);
    let first = run().await;
    assert_eq!(first.code, Some(3), "{}", first.stderr);
    let same = run().await;
    assert_eq!(same.code, Some(3), "the same build: {}", same.stderr);
    assert!(
        same.stderr.contains("rolled it back; blue serves"),
        "{}",
        same.stderr
    );

    // Fixed and rebuilt where it was: now a program that runs the sample app with its arguments.
    let fixed = format!("#!/bin/sh\nexec {} \"$@\"\n", crate::support::BIN);
    std::fs::write(&program, fixed).expect("rebuild the program");
    let new = sha256(&program);
    let rebuilt = run().await;
    // Rollout 2 runs the rebuilt green (no client sends traffic here, so its analysis is
    // inconclusive and it rolls back in turn: what matters is that it ran).
    assert!(
        rebuilt.stdout.starts_with("rollout 2 "),
        "{}\n{}",
        rebuilt.stdout,
        rebuilt.stderr
    );
    assert!(
        rebuilt.stderr.contains("[green-0]") && rebuilt.stderr.contains("version=v2"),
        "the rebuilt green served: {}",
        rebuilt.stderr
    );
    // Session 40: the line named only the new build, in words that read as the old one's.
    let line = format!(
        "green's program is another build than the one rollout 1 rolled back (now {new}; rollout \
         1 ran {old}): rolling it out"
    );
    assert!(rebuilt.stderr.contains(&line), "{line}\n{}", rebuilt.stderr);
}

/// Trial 22: when the state file says how the spec's green ended, `--exit-after-rollout` reports
/// that rollout, not the last one: here a later `crossfade migrate` to v3 completed, and the
/// outcome printed was that rollout's with exit 0, though the spec's green had rolled back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_after_rollout_reports_how_the_specs_green_ended_not_a_later_migrate() {
    let dir = temp_dir();
    let program = not_a_program(dir.path());
    let spec = Spec::new()
        .green(
            App::version("v2")
                .set("command", json!(program))
                .set("name", json!("v2")),
        )
        .state_file(&dir.path().join("state.json"));
    let path = spec.write(dir.path(), "spec.yaml");
    let exit_after = |json: bool| {
        let mut args = vec!["run".into(), path.clone().into_os_string()];
        args.push("--exit-after-rollout".into());
        if json {
            args.push("--json".into());
        }
        run_to_end(args, PATIENCE)
    };
    assert_eq!(exit_after(false).await.code, Some(3), "green rolls back");

    // A later rollout, to v3, completes (promoted: it needs no traffic to pass).
    let admin = Admin::new(spec.admin());
    let mut serving = Crossfade::run(dir.path(), &path);
    serving.wait_ready(&admin, PATIENCE).await;
    admin
        .start_rollout(&App::version("v3").set("name", json!("v3")).json)
        .await;
    wait_until(PATIENCE, "rollout 2 to be progressing", || async {
        let rollout = admin.rollout().await;
        (rollout["rollout"]["phase"] == "Progressing").then_some(())
    })
    .await;
    let (status, answer) = admin.post("/rollout/promote").await;
    assert_eq!(status, 200, "{answer}");
    let ended = wait_terminal(&admin, PATIENCE).await;
    assert_eq!(ended["phase"], "Completed", "{ended:#}");
    assert!(serving.terminate(PATIENCE).await.success());

    let again = exit_after(false).await;
    assert_eq!(again.code, Some(3), "{}\n{}", again.stdout, again.stderr);
    assert!(
        again.stdout.starts_with(
            "rollout 1 (an earlier run's; not started again) RolledBack (to v2), exit 3: "
        ),
        "{}",
        again.stdout
    );
    let json = exit_after(true).await;
    let outcome: serde_json::Value = serde_json::from_str(json.stdout.trim()).expect("one object");
    assert_eq!(
        (
            &outcome["rollout"],
            &outcome["outcome"],
            &outcome["to_version"],
            &outcome["exit_code"]
        ),
        (&json!(1), &json!("RolledBack"), &json!("v2"), &json!(3)),
        "{outcome}"
    );
}

/// Trial report 4b: a state file written for route `web` is not adopted by a spec for route `api`
/// (even when its `blue:` differs, the refusal names the routes, not an edited `blue:`); nothing
/// starts and the file is left as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_file_of_another_route_is_refused_naming_both_routes_and_the_file() {
    let dir = temp_dir();
    let state = dir.path().join("shared.json");
    let spec = Spec::new().state_file(&state);
    let admin = Admin::new(spec.admin());
    let path = spec.write(dir.path(), "web.yaml");
    let mut web = Crossfade::run(dir.path(), &path);
    web.wait_ready(&admin, Duration::from_secs(15)).await;
    assert!(web.terminate(Duration::from_secs(15)).await.success());
    let recorded = std::fs::read_to_string(&state).unwrap();
    assert!(recorded.contains("\"web\""), "{recorded}");

    let mut api = Spec::new().state_file(&state).blue(App::version("v9"));
    api.json["route"]["name"] = json!("api");
    let path = api.write(dir.path(), "api.yaml");
    let mut refused = Crossfade::run(dir.path(), &path);
    let status = refused.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(1));
    let log = refused.log();
    for part in ["\"web\"", "\"api\"", &state.display().to_string()] {
        assert!(log.contains(part), "{part}: {log}");
    }
    assert!(!log.contains("blue: was edited"), "{log}");
    assert!(!log.contains("v9"), "no workload started: {log}");
    assert_eq!(std::fs::read_to_string(&state).unwrap(), recorded);
}

/// Trial report 5 F10: the README's example (`crossfade run deploy/examples/local.yaml` from the
/// checkout) leaves its state file's companions beside it (the backup, the lock, a damaged file set
/// aside, the temporary file of a save); `.gitignore` covers all of them, so `git status` stays
/// clean.
#[test]
fn the_state_file_and_its_companions_are_ignored_by_git() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let in_git = std::process::Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["rev-parse", "--is-inside-work-tree"])
        .output();
    if !in_git.is_ok_and(|o| o.status.success()) {
        let hint = format!("git and a work tree are needed: none at {}", root.display());
        crate::support::missing_tool(
            "the_state_file_and_its_companions_are_ignored_by_git",
            &hint,
        );
        return;
    }
    let state = std::path::Path::new("deploy/examples/crossfade.state.json");
    let backup = crossfade_controller::store::StateFile::new(state).backup_path();
    let companions = [
        state.to_path_buf(),
        backup,
        state.with_extension("json.lock"),
        state.with_extension("json.corrupt"),
        state.with_file_name(".crossfade.state.json.tmp"),
    ];
    for path in companions {
        let ignored = std::process::Command::new("git")
            .arg("-C")
            .arg(root)
            .args(["check-ignore", "--no-index", "-q"])
            .arg(&path)
            .status()
            .expect("run git check-ignore");
        assert!(
            ignored.success(),
            "{} is not ignored by .gitignore",
            path.display()
        );
    }
}

/// An executable file in `dir` that is not a program: `run` accepts a spec that names it, and a
/// green running it fails to start and is rolled back.
/// `dir/spec.yaml`: the default spec with a state file, whose green v2 runs [`not_a_program`]
/// (its start fails, so its rollout rolls back). Returns the program's path and the spec's.
fn failing_green_spec(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let program = not_a_program(dir);
    let spec = Spec::new()
        .green(App::version("v2").set("command", json!(program)))
        .state_file(&dir.join("state.json"));
    (program, spec.write(dir, "spec.yaml"))
}

fn not_a_program(dir: &std::path::Path) -> std::path::PathBuf {
    let program = dir.join("not-a-program");
    std::fs::write(&program, "not a program\n").expect("write the fake program");
    let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    std::fs::set_permissions(&program, mode).expect("make it executable");
    program
}

/// A state file reached through a symbolic link (`state_file: link.json`, a link to
/// `state/state.json`: a config-management layout, or two specs meant to share nothing) is the
/// file the link names, for the lock, the child journal and every save: a second instance on the
/// real path while one runs on the link (or the other way round) is refused and kills nothing,
/// and a save keeps the link a link. Trial 24: the lock was `link.json.lock`, beside the link, so
/// a second `crossfade run` on the real path took the lock `state/state.json.lock`, read the first
/// one's workload as a killed run's orphans and SIGKILLed every instance of its blue (an outage
/// of the route until its supervisor restarted them), and its saves replaced the link with a
/// regular file, so the two paths named two diverging states from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_file_reached_through_a_symlink_is_locked_and_saved_as_the_file_it_names() {
    let dir = temp_dir();
    std::fs::create_dir(dir.path().join("state")).unwrap();
    let real = dir.path().join("state/state.json");
    let link = dir.path().join("link.json");
    // Dangling until the first save: the file the link names is created there.
    std::os::unix::fs::symlink("state/state.json", &link).unwrap();
    let spec = Spec::new().state_file(&link);
    let path = spec.write(dir.path(), "spec.yaml");
    let admin = Admin::new(spec.admin());
    let mut first = Crossfade::run(dir.path(), &path);
    first.wait_ready(&admin, Duration::from_secs(15)).await;
    let first_pids = wait_state(
        &real,
        Duration::from_secs(15),
        "the first run's pids",
        |s| Some(pids_of(&s["active_pids"])).filter(|p| !p.is_empty()),
    )
    .await;
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink(),
        "a save replaced the link {} with a file",
        link.display()
    );

    // A second instance on the file the link names is refused, and kills nothing.
    let (other, other_path) =
        refused_as_second_instance(spec.clone().state_file(&real), dir.path(), &first_pids).await;

    // Killed, then started on the real path: the run on the link left its journal and pids
    // where this one looks, so its healthy blue is adopted (same pids), not started twice.
    first.kill_hard();
    let mut second = Crossfade::run(dir.path(), &other_path);
    second
        .wait_ready(&Admin::new(other.admin()), Duration::from_secs(15))
        .await;
    let second_pids = wait_state(
        &real,
        Duration::from_secs(15),
        "the second run's pids",
        |s| Some(pids_of(&s["active_pids"])).filter(|p| !p.is_empty()),
    )
    .await;
    assert_eq!(second_pids, first_pids, "adopted:\n{}", second.log());
    second.terminate(Duration::from_secs(15)).await;
    wait_gone(&first_pids, Duration::from_secs(5)).await;
}

/// README: SIGTERM or SIGINT stops `run` cleanly, workloads stopped, exit 0; that includes a green
/// still provisioning (its start cancelled and what it started stopped, process group and all),
/// which no later run may be there to clean up. Green here is a start script (`sh -c`) that runs
/// the server as its child, as many images do. Trial 24: a SIGTERM during green's start stopped
/// blue and exited 0, but only the scripts were killed (the start's future was dropped with the
/// run, and `kill_on_drop` signals the child alone), so the servers ran on, orphaned, holding
/// their ports; a clean stop removes the runtime journal, so no later run stopped them either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_while_green_provisions_stops_greens_whole_process_groups_before_exiting() {
    for (signal, version) in [(Signal::SIGTERM, "v2-term"), (Signal::SIGINT, "v2-int")] {
        let dir = temp_dir();
        // Green never becomes ready while this test runs: the signal always lands in `Provisioning`.
        let script = format!(
            "{} sample-app --port {{port}} --version {version} --unready-for 1h; echo gone",
            crate::support::BIN
        );
        let green = patient(version)
            .set("command", json!("/bin/sh"))
            .set("args", json!(["-c", script]))
            .set("instances", json!(2))
            .set("readiness", json!({ "interval": "50ms", "deadline": "1h" }));
        let mut spec = Spec::new().green(green);
        spec.json["rollout"]["progress_deadline"] = json!("2h");
        let path = spec.write(dir.path(), "spec.yaml");
        let admin = Admin::new(spec.admin());
        let mut run = Crossfade::run(dir.path(), &path);
        run.wait_ready(&admin, PATIENCE).await;
        wait_until(PATIENCE, "a Provisioning rollout", || async {
            (admin.rollout().await["rollout"]["phase"] == "Provisioning").then_some(())
        })
        .await;
        let servers = wait_until(PATIENCE, "green's 2 servers", || {
            let found = running_with_version(version);
            std::future::ready((found.len() == 2).then_some(found))
        })
        .await;
        // Not process group leaders (the scripts are): SIGKILLed one by one if the test fails.
        let _reap = ReapEach(servers.clone());
        let blue = children_running(run.pid(), "v1");
        kill(Pid::from_raw(run.pid() as i32), signal).unwrap();
        let code = run.wait_exit(PATIENCE).await;
        assert!(code.success(), "{signal}: {code:?}\n{}", run.log());
        let left: Vec<u32> = (servers.iter().chain(&blue).copied())
            .filter(|&p| pid_alive(p))
            .collect();
        assert!(
            left.is_empty(),
            "{signal}: still running after `run` exited: {left:?} (green's servers {servers:?}, \
             blue {blue:?})\n{}",
            run.log()
        );
    }
}

/// SIGKILLs each of its processes still running when dropped (a failed test leaves none).
pub(crate) struct ReapEach(pub(crate) Vec<u32>);

impl Drop for ReapEach {
    fn drop(&mut self) {
        for &pid in self.0.iter().filter(|&&p| pid_alive(p)) {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}

/// Every process (any parent) whose command line holds `--version version` (the sample app's).
pub(crate) fn running_with_version(version: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            args.windows(2)
                .any(|w| w[0] == b"--version" && w[1] == version.as_bytes())
                && pid_alive(pid)
        })
        .collect()
}

/// Runs `spec` on other ports (`listen`, `admin`), written to `dir/other.yaml`, while a first
/// instance on the same state file runs with `first_pids`: the second one must exit with an error
/// that says the file is in use, and the first one's workload must survive. Returns the spec on
/// other ports and its path.
async fn refused_as_second_instance(
    mut other: Spec,
    dir: &std::path::Path,
    first_pids: &[u32],
) -> (Spec, std::path::PathBuf) {
    other.json["listen"] = json!(crate::support::free_addr().to_string());
    other.json["admin"] = json!(crate::support::free_addr().to_string());
    let other_path = other.write(dir, "other.yaml");
    let mut intruder = Crossfade::run(dir, &other_path);
    let code = intruder.wait_exit(Duration::from_secs(15)).await;
    assert!(
        !code.success()
            && intruder
                .log()
                .contains("in use by another crossfade process"),
        "a second instance on the same state file must not start: {code:?}\n{}",
        intruder.log()
    );
    assert!(
        first_pids.iter().all(|&p| pid_alive(p)),
        "the first instance's workload survives: {first_pids:?}"
    );
    (other, other_path)
}

/// Trial 28: a SIGTERM to `run --exit-after-rollout` mid-rollout exited 3 with nothing on
/// stdout, so a pipeline reading the outcome (`--json`) had nothing to parse and could not tell
/// the stop from a rollback. It prints the interrupted rollout, in the phase it was stopped in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_after_rollout_stopped_by_a_signal_mid_rollout_says_so_on_stdout() {
    for json in [true, false] {
        let dir = temp_dir();
        let mut spec = Spec::new()
            .green(App::version("v2"))
            .state_file(&dir.path().join("state.json"));
        spec.json["rollout"]["steps"] = json!([50, 100]);
        spec.json["rollout"]["hold"] = json!("10m");
        spec.json["rollout"]["progress_deadline"] = json!("20m");
        let path = spec.write(dir.path(), "spec.yaml");
        let admin = Admin::new(spec.admin());
        let stdout = dir.path().join("run.out");
        let mut args = vec![
            "run".as_ref(),
            path.as_os_str(),
            "--exit-after-rollout".as_ref(),
        ];
        if json {
            args.push("--json".as_ref());
        }
        let mut child = crate::support::child::spawn_with_stdout(args, &stdout);
        wait_until(PATIENCE, "the rollout at its first step", || async {
            let (_, text) = admin.get_text("/rollout").await.ok()?;
            let answer: serde_json::Value = serde_json::from_str(&text).ok()?;
            let r = &answer["rollout"];
            (r["phase"] == "Progressing" && r["applied_bp"] == 5_000).then_some(())
        })
        .await;
        let pid = Pid::from_raw(child.id().expect("pid") as i32);
        kill(pid, Signal::SIGTERM).expect("SIGTERM");
        let status = tokio::time::timeout(PATIENCE, child.wait())
            .await
            .expect("exits after SIGTERM")
            .expect("wait");
        assert_eq!(status.code(), Some(3));
        let printed = std::fs::read_to_string(&stdout).expect("stdout");
        if json {
            let outcome: serde_json::Value =
                serde_json::from_str(printed.trim()).unwrap_or_else(|e| panic!("{e}: {printed:?}"));
            assert_eq!(outcome["interrupted"], true, "{outcome}");
            assert_eq!(outcome["outcome"], "Progressing", "{outcome}");
            assert_eq!(outcome["rollout"], 1, "{outcome}");
            assert_eq!(outcome["exit_code"], 3, "{outcome}");
            assert_eq!(outcome["to_version"], "green", "{outcome}");
        } else {
            assert!(
                printed.starts_with(
                    "rollout 1 interrupted (blue -> green), exit 3: stopped by a signal while \
                     Progressing, before the rollout ended (step 1/2 at 50%"
                ),
                "{printed:?}"
            );
            assert_eq!(printed.lines().count(), 1, "{printed:?}");
        }
    }
}
