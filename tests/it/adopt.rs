//! Adoption at restart (README "Restart", docs/reliability.md trial 13 N7): a `crossfade run`
//! SIGKILLed while its blue is healthy leaves blue running; the next run takes it over (same pid,
//! serving at once, event `Adopted`) instead of stopping it and paying its whole start time again,
//! and starts it afresh only when it is not the same process any more.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

use crate::support::child::wait_state;
use crate::support::trace::{self, TraceConfig};
use crate::support::{
    pid_alive, pids_of, processes_with_arg, read_json, temp_dir, wait_gone, wait_until, Admin, App,
    Crossfade, Load, LoadConfig, Spec,
};

/// The bound on a wait for an event (ready, exited): each returns as soon as its event happens.
const PATIENCE: Duration = Duration::from_secs(60);

/// A run of blue alone (`version`, one instance) with a state file, ready, and blue's pid as saved.
async fn blue_running(version: &str) -> (tempfile::TempDir, Spec, Crossfade, u32) {
    blue_running_with(version, &[]).await
}

/// [`blue_running`] with sample-app `flags` (e.g. `["--unready-for", "5s"]`).
async fn blue_running_with(
    version: &str,
    flags: &[&str],
) -> (tempfile::TempDir, Spec, Crossfade, u32) {
    let dir = temp_dir();
    let state = dir.path().join("state.json");
    let blue = App::version(version).flags(flags.iter().copied()).set(
        "readiness",
        json!({ "interval": "50ms", "deadline": format!("{}s", PATIENCE.as_secs()) }),
    );
    let spec = Spec::new().blue(blue).state_file(&state);
    let path = spec.write(dir.path(), "spec.yaml");
    let mut run = Crossfade::run(dir.path(), &path);
    run.wait_ready(&Admin::new(spec.admin()), PATIENCE).await;
    let pid = wait_state(&state, PATIENCE, "blue's pid", |s| {
        pids_of(&s["active_pids"]).first().copied()
    })
    .await;
    (dir, spec, run, pid)
}

/// The reasons of the admin API's events, in order.
async fn event_reasons(admin: &Admin) -> Vec<String> {
    let status = admin.rollout().await;
    let events = status["events"].as_array().cloned().unwrap_or_default();
    events
        .iter()
        .filter_map(|e| e["reason"].as_str().map(str::to_owned))
        .collect()
}

/// Requests through the proxy, right after the new run's READY: every one answered by `version`.
async fn serves_at_once(spec: &Spec, version: &str) {
    let load = Load::start(LoadConfig::new(spec.listen()));
    load.wait_requests(50, PATIENCE).await;
    let report = load.stop().await;
    assert_eq!(report.errors(), 0, "{report:?}");
    assert_eq!(report.ok_from(version), report.total(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_a_sigkill_adopts_the_healthy_blue_and_serves_it_at_once() {
    // Blue takes WARM_UP to get ready after each start: a restart that started it afresh could not
    // be ready sooner.
    const WARM_UP: Duration = Duration::from_secs(5);
    let warm_up = format!("{}s", WARM_UP.as_secs());
    let (dir, spec, mut first, blue) =
        blue_running_with("v1-adopt", &["--unready-for", &warm_up]).await;
    let admin = Admin::new(spec.admin());
    first.kill_hard();
    assert!(pid_alive(blue), "blue outlives a SIGKILLed crossfade");

    let restarted = tokio::time::Instant::now();
    let mut second = Crossfade::run(dir.path(), &dir.path().join("spec.yaml"));
    second.wait_ready(&admin, PATIENCE).await;
    let took = restarted.elapsed();
    println!("ADOPT ready {took:?} after the restart (blue's warm-up {WARM_UP:?})");
    assert!(
        took < WARM_UP,
        "ready after {took:?}: blue was started afresh"
    );
    serves_at_once(&spec, "v1-adopt").await;
    assert!(pid_alive(blue), "the same blue serves: pid {blue}");
    let status = admin.rollout().await;
    let adopted: Vec<&Value> = (status["events"].as_array().into_iter().flatten())
        .filter(|e| e["reason"] == "Adopted")
        .collect();
    assert_eq!(adopted.len(), 1, "one Adopted event: {status:#}");
    let note = adopted[0]["message"].as_str().unwrap_or_default();
    assert!(note.contains(&format!("pid {blue}")), "{note}");
    assert!(
        !event_reasons(&admin)
            .await
            .iter()
            .any(|r| r == "LeftoversStopped"),
        "nothing stopped: {status:#}"
    );
    let log = second.log();
    assert!(log.contains("adopted"), "{log}");

    // Stopping works on a process that is not this run's child: SIGTERM to its group, and its
    // last lines (the sample app's drain) reach the new run's log through the re-opened pipe.
    second.terminate(PATIENCE).await;
    wait_gone(&[blue], Duration::from_secs(5)).await;
    let log = second.log();
    assert!(
        log.lines()
            .any(|l| l.contains("[blue-0]") && l.contains("draining")),
        "the adopted blue's output is relayed: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adopted_blue_that_exits_is_restarted_like_a_spawned_one() {
    let (dir, spec, mut first, blue) = blue_running("v1-adopt-exit").await;
    let admin = Admin::new(spec.admin());
    first.kill_hard();
    let mut second = Crossfade::run(dir.path(), &dir.path().join("spec.yaml"));
    second.wait_ready(&admin, PATIENCE).await;
    assert!(event_reasons(&admin).await.iter().any(|r| r == "Adopted"));

    kill(Pid::from_raw(blue as i32), Signal::SIGKILL).expect("kill the adopted blue");
    let state = dir.path().join("state.json");
    let next = wait_state(&state, PATIENCE, "blue restarted with a new pid", |s| {
        pids_of(&s["active_pids"])
            .first()
            .copied()
            .filter(|&p| p != blue)
    })
    .await;
    assert!(
        event_reasons(&admin)
            .await
            .iter()
            .any(|r| r == "ActiveRestarted"),
        "the adopted blue's exit is noticed and it is restarted"
    );
    // One instance's exit costs requests until its successor listens and passes its probe,
    // adopted or spawned (`ActiveRestarted` is published at the start): wait until the new blue
    // answers, then every request must.
    let warming = Load::start(LoadConfig::new(spec.listen()));
    wait_until(PATIENCE, "the restarted blue to answer", || {
        let answered = warming.report().ok_from("v1-adopt-exit");
        async move { (answered > 0).then_some(()) }
    })
    .await;
    warming.stop().await;
    serves_at_once(&spec, "v1-adopt-exit").await;
    second.terminate(PATIENCE).await;
    wait_gone(&[next], Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blue_that_died_while_no_run_watched_is_started_afresh_not_adopted() {
    let (dir, spec, mut first, blue) = blue_running("v1-adopt-dead").await;
    let admin = Admin::new(spec.admin());
    first.kill_hard();
    kill(Pid::from_raw(blue as i32), Signal::SIGKILL).expect("kill the orphaned blue");
    wait_gone(&[blue], Duration::from_secs(5)).await;

    let mut second = Crossfade::run(dir.path(), &dir.path().join("spec.yaml"));
    second.wait_ready(&admin, PATIENCE).await;
    serves_at_once(&spec, "v1-adopt-dead").await;
    let state = dir.path().join("state.json");
    let now = wait_state(&state, PATIENCE, "blue's pid", |s| {
        pids_of(&s["active_pids"]).first().copied()
    })
    .await;
    assert_ne!(now, blue, "a new blue");
    assert!(
        !event_reasons(&admin).await.iter().any(|r| r == "Adopted"),
        "nothing adopted"
    );
    second.terminate(PATIENCE).await;
    wait_gone(&[now], Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_blue_is_started_afresh_not_adopted() {
    let (dir, mut spec, mut first, blue) = blue_running("v1-adopt-edit").await;
    let admin = Admin::new(spec.admin());
    let state_at_kill = std::fs::read_to_string(dir.path().join("state.json"));
    first.kill_hard();
    assert!(pid_alive(blue), "blue outlives a SIGKILLed crossfade");
    // Any edit of `blue:` is served as written (README "Restart"), so the old one is not adopted.
    spec.json["blue"]["stop_grace"] = json!("3s");
    let path = spec.write(dir.path(), "spec.yaml");

    let mut second = Crossfade::run(dir.path(), &path);
    second.wait_ready(&admin, PATIENCE).await;
    // The old blue is SIGKILLed as a leftover before the new one starts, so it is gone by now.
    // It was not, twice in CI (sessions 35 and 36: still running 5 s after the restart was
    // ready), cause not found: a longer wait tells slow from never, and the failure says what the
    // process was doing and what the restart logged.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while pid_alive(blue) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the old blue (pid {blue}) still runs 20 s after the restart was ready; /proc stat: \
             {:?}; the state file at the kill: {state_at_kill:?}; the restart's log:\n{}",
            std::fs::read_to_string(format!("/proc/{blue}/stat")),
            second.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reasons = event_reasons(&admin).await;
    assert!(reasons.iter().any(|r| r == "BlueChanged"), "{reasons:?}");
    assert!(!reasons.iter().any(|r| r == "Adopted"), "{reasons:?}");
    serves_at_once(&spec, "v1-adopt-edit").await;
    second.terminate(PATIENCE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instance_of_a_healthy_blue_is_adopted() {
    let dir = temp_dir();
    let state = dir.path().join("state.json");
    let blue = App::version("v1-adopt-two").set("instances", json!(2));
    let spec = Spec::new().blue(blue).state_file(&state);
    let path = spec.write(dir.path(), "spec.yaml");
    let admin = Admin::new(spec.admin());
    let mut first = Crossfade::run(dir.path(), &path);
    first.wait_ready(&admin, PATIENCE).await;
    let mut before = wait_state(&state, PATIENCE, "blue's 2 pids", |s| {
        Some(pids_of(&s["active_pids"])).filter(|p| p.len() == 2)
    })
    .await;
    first.kill_hard();

    let mut second = Crossfade::run(dir.path(), &path);
    second.wait_ready(&admin, PATIENCE).await;
    serves_at_once(&spec, "v1-adopt-two").await;
    let mut after = pids_of(&crate::support::read_json(&state)["active_pids"]);
    before.sort_unstable();
    after.sort_unstable();
    assert_eq!(after, before, "both instances adopted");
    let note = admin.last_event("Adopted").await;
    for (i, pid) in ["instance 0", "instance 1"].iter().zip(&before) {
        assert!(note.contains(i), "{i}: {note}");
        assert!(note.contains(&format!("pid {pid}")), "pid {pid}: {note}");
    }
    second.terminate(PATIENCE).await;
    wait_gone(&before, Duration::from_secs(5)).await;
}

/// Session 38 (down37's report, "Left"): `run` killed (`kill -9`) after its supervisor restarted
/// an instance and before the state file saved the new pid (here no save works from the exit on,
/// which holds that window open; the child journal is written as ever). The next start found the
/// restarted process running but not among the state file's pids, and stopped both instances to
/// start blue afresh. The journal entry of a restart records the pid it replaces, which is the
/// one the state file saved for the instance: the next start adopts both instances, same pids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_killed_before_it_saved_a_restarted_instances_pid_adopts_it() {
    let dir = temp_dir();
    let state = dir.path().join("state.json");
    let blue = App::version("v1-adopt-unsaved").set("instances", json!(2));
    let spec = Spec::new().blue(blue).state_file(&state);
    let path = spec.write(dir.path(), "spec.yaml");
    let admin = Admin::new(spec.admin());
    let mut first = Crossfade::run(dir.path(), &path);
    first.wait_ready(&admin, PATIENCE).await;
    let before = wait_state(&state, PATIENCE, "blue's 2 pids", |s| {
        Some(pids_of(&s["active_pids"])).filter(|p| p.len() == 2)
    })
    .await;
    // From here no save of the state file works: its temporary file's path is a directory. A
    // save under way holds that path for a moment (the run saves on its own too): try again.
    let blocker = dir.path().join(".state.json.tmp");
    wait_until(PATIENCE, "the state file's saves blocked", || async {
        match std::fs::create_dir(&blocker) {
            Ok(()) => Some(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => None,
            Err(e) => panic!("block the state file's saves: {e}"),
        }
    })
    .await;
    kill(Pid::from_raw(before[1] as i32), Signal::SIGKILL).expect("kill blue instance 1");
    let journal = dir.path().join("state.json.children");
    let restarted = wait_until(PATIENCE, "instance 1's restart journalled", || async {
        let recorded = read_json(&journal)["children"].as_array().cloned()?;
        let entry = recorded.iter().find(|e| {
            e["instance"] == 1 && e["pid"].as_u64().is_some_and(|p| p != u64::from(before[1]))
        })?;
        entry["pid"].as_u64().and_then(|p| u32::try_from(p).ok())
    })
    .await;
    assert!(pid_alive(restarted), "the restart {restarted} runs");
    let saved = pids_of(&read_json(&state)["active_pids"]);
    assert_eq!(saved, before, "the restart's pid is not saved");
    first.kill_hard();
    std::fs::remove_dir(&blocker).expect("saves work again");

    let mut second = Crossfade::run(dir.path(), &path);
    second.wait_ready(&admin, PATIENCE).await;
    let after = wait_state(&state, PATIENCE, "blue's pids saved", |s| {
        Some(pids_of(&s["active_pids"])).filter(|p| p.len() == 2)
    })
    .await;
    assert_eq!(
        after,
        [before[0], restarted],
        "both adopted, not started afresh"
    );
    let note = admin.last_event("Adopted").await;
    assert!(note.contains(&format!("pid {restarted}")), "{note}");
    second.terminate(PATIENCE).await;
    wait_gone(&after, Duration::from_secs(5)).await;
}

/// Session 37: `run` killed (`kill -9`) while one of blue's two instances had no process (it
/// exited and the run was waiting out its restart backoff; here `run` is frozen first, so that it
/// cannot restart it). The next start stopped the live instance too and started both afresh,
/// serving nothing for blue's whole start time. Now it adopts the live instance (same pid,
/// serving at once) and starts the missing one at once on its old port, withdrawn from the route
/// until it is ready: no request fails meanwhile, the `Adopted` event says which instance had no
/// process, and the state file and the child journal name both processes (a second `kill -9`
/// finds them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_adopts_the_live_instance_and_starts_the_one_that_had_no_process() {
    let version = "v1-adopt-down";
    let dir = temp_dir();
    let state = dir.path().join("state.json");
    // A start takes 2 s to get ready: instance 0's start is under way while the restart serves.
    let blue = App::version(version)
        .flags(["--unready-for", "2s"])
        .set("instances", json!(2))
        .set(
            "readiness",
            json!({ "interval": "50ms", "deadline": format!("{}s", PATIENCE.as_secs()) }),
        );
    let spec = Spec::new().blue(blue).state_file(&state);
    let path = spec.write(dir.path(), "spec.yaml");
    let admin = Admin::new(spec.admin());
    let mut first = Crossfade::run(dir.path(), &path);
    first.wait_ready(&admin, PATIENCE).await;
    let pids = wait_state(&state, PATIENCE, "blue's 2 pids", |s| {
        Some(pids_of(&s["active_pids"])).filter(|p| p.len() == 2)
    })
    .await;
    let journal = dir.path().join("state.json.children");
    let entries = read_json(&journal)["children"].clone();
    let instance_0 = (entries.as_array().into_iter().flatten())
        .find(|e| {
            e["instance"] == 0
                && e["pid"]
                    .as_u64()
                    .is_some_and(|p| pids.contains(&(p as u32)))
        })
        .unwrap_or_else(|| panic!("instance 0 in the journal: {entries:#}"))
        .clone();
    let victim = instance_0["pid"].as_u64().expect("instance 0's pid") as u32;
    let port = instance_0["port"].as_u64().expect("instance 0's port") as u16;
    let live = *pids
        .iter()
        .find(|&&p| p != victim)
        .expect("instance 1's pid");

    kill(Pid::from_raw(first.pid() as i32), Signal::SIGSTOP).expect("freeze run");
    kill(Pid::from_raw(victim as i32), Signal::SIGKILL).expect("kill instance 0");
    wait_gone(&[victim], PATIENCE).await;
    first.kill_hard();

    let mut second = Crossfade::run(dir.path(), &path);
    second.wait_ready(&admin, PATIENCE).await;
    assert!(
        pid_alive(live),
        "the live instance (pid {live}) is adopted, not stopped\n{}",
        second.log()
    );
    let load = Load::start(LoadConfig::new(spec.listen()));
    let started = wait_state(&state, PATIENCE, "instance 0 started again", |s| {
        let now = pids_of(&s["active_pids"]);
        let started = now.iter().copied().find(|&p| p != live && p != 0);
        started.filter(|_| now.len() == 2 && now.contains(&live))
    })
    .await;
    wait_until(PATIENCE, "instance 0 ready", || async {
        let status = admin.rollout().await;
        let restarting = status["restarting"].as_array().map_or(0, Vec::len);
        let restarted = event_reasons(&admin)
            .await
            .iter()
            .any(|r| r == "ActiveRestarted");
        (restarted && restarting == 0).then_some(())
    })
    .await;
    load.wait_requests(50, PATIENCE).await;
    let report = load.stop().await;
    assert_eq!(
        report.errors(),
        0,
        "no request fails from the restart's READY on: {report:?}"
    );
    assert_eq!(report.ok_from(version), report.total(), "{report:?}");

    // Both instances serve through the route, instance 0 on its old port.
    let records = trace::burst(&TraceConfig::new(spec.listen()), 40).await;
    trace::assert_no_errors(&records);
    let answered: BTreeSet<&str> = records.iter().filter_map(trace::Record::instance).collect();
    let at_old_port = format!("{version}-{port}");
    assert!(
        answered.contains(at_old_port.as_str()),
        "instance 0 on port {port}: {answered:?}"
    );
    assert_eq!(answered.len(), 2, "{answered:?}");

    let alive: BTreeSet<u32> = processes_with_arg(version).into_iter().collect();
    assert_eq!(alive, BTreeSet::from([live, started]), "what runs of blue");
    let saved: BTreeSet<u32> = pids_of(&read_json(&state)["active_pids"])
        .into_iter()
        .collect();
    assert_eq!(saved, alive, "the state file names both");
    crate::crash::wait_journal(&journal, &alive, "after the restart").await;
    let restarted = read_json(&journal)["children"].clone();
    let entry = (restarted.as_array().into_iter().flatten())
        .find(|e| e["instance"] == 0)
        .unwrap_or_else(|| panic!("instance 0 in the journal: {restarted:#}"));
    assert_eq!(
        (entry["pid"].as_u64(), entry["port"].as_u64()),
        (Some(u64::from(started)), Some(u64::from(port))),
        "{restarted:#}"
    );
    let note = admin.last_event("Adopted").await;
    for words in [
        format!("instance 1 (pid {live}"),
        "blue instance 0 had no process".to_owned(),
        format!("started again at once on port {port}"),
    ] {
        assert!(note.contains(&words), "{words:?} in {note}");
    }
    second.terminate(PATIENCE).await;
    wait_gone(&[live, started], Duration::from_secs(5)).await;
}

/// A child journal that cannot be read (a torn write on a filesystem that does not order it, a
/// hand edit) is not silently replaced: the new run keeps it as `<journal>.corrupt`, says so, and
/// stops what the state file names (here blue, started afresh, not adopted: only the journal
/// proves a process is the one recorded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_child_journal_is_kept_aside_and_the_state_files_pids_stopped() {
    let (dir, spec, mut first, blue) = blue_running("v1-torn").await;
    first.kill_hard();
    let journal = dir.path().join("state.json.children");
    let torn = "{\"version\": 1, \"children\": [{\"tok";
    std::fs::write(&journal, torn).unwrap();

    let admin = Admin::new(spec.admin());
    let mut second = Crossfade::run(dir.path(), &dir.path().join("spec.yaml"));
    second.wait_ready(&admin, PATIENCE).await;
    let aside = dir.path().join("state.json.children.corrupt");
    assert_eq!(
        std::fs::read_to_string(&aside).ok().as_deref(),
        Some(torn),
        "the unreadable journal is kept"
    );
    let log = second.log();
    assert!(
        log.contains(&format!("the file is kept as {}", aside.display()))
            && log.contains("only the state file's pids are stopped"),
        "{log}"
    );
    wait_gone(&[blue], PATIENCE).await;
    serves_at_once(&spec, "v1-torn").await;
    // The new journal is whole and names the new blue.
    let text = std::fs::read_to_string(&journal).unwrap();
    let doc: Value = serde_json::from_str(&text).expect("the new journal is JSON");
    assert_eq!(doc["children"].as_array().map(Vec::len), Some(1), "{doc:#}");
    second.terminate(PATIENCE).await;
}

/// `deploy/systemd/crossfade-run.service`'s `[Service]` settings: `(key, value)` in file order,
/// continuation lines (`\` at the end) joined.
fn unit_settings(unit: &str) -> Vec<(String, String)> {
    let mut settings = Vec::new();
    let mut in_service = false;
    let mut pending = String::new();
    for line in unit.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_service = line == "[Service]";
            continue;
        }
        if !in_service || line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => pending.push_str(part),
            None => {
                pending.push_str(line);
                let (key, value) = pending.split_once('=').expect("key=value");
                settings.push((key.trim().to_owned(), value.trim().to_owned()));
                pending.clear();
            }
        }
    }
    settings
}

/// The sample systemd unit for `crossfade run`, its commands run as written (the binary and the
/// spec's path mapped into a temporary directory) under a notify socket: ExecStartPre= checks the
/// spec, ExecStart= says READY=1 once it serves; the main process killed alone (what
/// KillMode=process does to a crashed `run`: systemd's default control-group mode would kill blue
/// too, which no test here can show) leaves blue running, and ExecStart= again adopts it (same pid)
/// and says READY=1; the documented upgrade (SIGUSR2) hands over to a new process that sends
/// MAINPID= and READY=1 and serves the same blue; SIGTERM to it stops blue and says STOPPING=1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_units_commands_start_say_ready_and_restart_adopting_blue() {
    use crate::notify::{env, next, queued};
    use crate::support::BIN;

    let unit_path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/systemd/crossfade-run.service");
    let unit = std::fs::read_to_string(&unit_path).expect("read the unit");
    let settings = unit_settings(&unit);
    let one = |key: &str| -> String {
        let values: Vec<&String> = (settings.iter())
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v)
            .collect();
        assert_eq!(values.len(), 1, "one {key}= in {}", unit_path.display());
        values[0].clone()
    };
    assert_eq!(one("Type"), "notify", "run speaks sd_notify");
    assert_eq!(
        one("KillMode"),
        "process",
        "a crashed run's blue must survive for adoption"
    );
    assert_eq!(one("Restart"), "on-failure");
    assert_eq!(one("StateDirectory"), "crossfade");
    assert_eq!(
        one("NotifyAccess"),
        "all",
        "a binary upgrade's new process sends MAINPID="
    );

    let dir = temp_dir();
    let spec_path = dir.path().join("run.yaml");
    let socket = dir.path().join("upgrade.sock");
    let state = dir.path().join("run.state.json");
    let blue = App::version("v1-unit").set(
        "readiness",
        json!({ "interval": "50ms", "deadline": format!("{}s", PATIENCE.as_secs()) }),
    );
    let spec = Spec::new().blue(blue).state_file(&state);
    assert_eq!(spec.write(dir.path(), "run.yaml"), spec_path);
    // The unit's words, with the installed paths mapped to this test's.
    let command = |key: &str| -> Vec<String> {
        let line = one(key);
        let mut words = line.split_whitespace();
        assert_eq!(
            words.next(),
            Some("/usr/local/bin/crossfade"),
            "{key}={line}"
        );
        words
            .map(|w| match w {
                "/etc/crossfade/run.yaml" => spec_path.display().to_string(),
                "/run/crossfade-run/upgrade.sock" => socket.display().to_string(),
                _ => w.to_owned(),
            })
            .collect()
    };
    let (pre, start) = (command("ExecStartPre"), command("ExecStart"));
    let (spec_text, socket_text) = (
        spec_path.display().to_string(),
        socket.display().to_string(),
    );
    assert_eq!(pre, ["check", &spec_text]);
    assert_eq!(start, ["run", &spec_text, "--upgrade-socket", &socket_text]);

    let checked = std::process::Command::new(BIN)
        .args(&pre)
        .output()
        .expect("run ExecStartPre");
    assert!(checked.status.success(), "ExecStartPre: {checked:?}");

    let notify_path = dir.path().join("notify.sock");
    let notify = tokio::net::UnixDatagram::bind(&notify_path).expect("bind the notify socket");
    let mut first = Crossfade::spawn_env(dir.path(), "run.log", &start, &env(&notify_path));
    assert_eq!(next(&notify, &first, "READY").await, "READY=1\n");
    let blue_pid = wait_state(&state, PATIENCE, "blue's pid saved", |s| {
        pids_of(&s["active_pids"]).first().copied()
    })
    .await;
    first.kill_hard();
    assert!(pid_alive(blue_pid), "blue outlives its killed run");

    let mut second = Crossfade::spawn_env(dir.path(), "run-2.log", &start, &env(&notify_path));
    assert_eq!(next(&notify, &second, "READY").await, "READY=1\n");
    serves_at_once(&spec, "v1-unit").await;
    assert!(pid_alive(blue_pid), "the same blue serves: pid {blue_pid}");
    let admin = Admin::new(spec.admin());
    assert!(
        event_reasons(&admin).await.iter().any(|r| r == "Adopted"),
        "{}",
        second.log()
    );

    // The upgrade command the unit documents (SIGUSR2 to the main process): the new process
    // says MAINPID= and READY=1 once the old one drains; the old one exits 0 and says nothing
    // more (a STOPPING=1 would stop the unit); the same blue serves.
    crate::notify::signal(second.pid(), Signal::SIGUSR2);
    let claimed = next(&notify, &second, "MAINPID").await;
    let third: u32 = (claimed.strip_prefix("MAINPID="))
        .and_then(|rest| rest.strip_suffix("\nREADY=1\n"))
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("MAINPID=<pid>\\nREADY=1\\n, not {claimed:?}"));
    let exit = second.wait_exit(PATIENCE).await;
    assert!(exit.success(), "{exit}\n{}", second.log());
    assert!(queued(&notify).is_empty(), "{}", second.log());
    serves_at_once(&spec, "v1-unit").await;
    assert!(pid_alive(blue_pid), "the same blue serves: pid {blue_pid}");

    kill(Pid::from_raw(third as i32), Signal::SIGTERM).expect("SIGTERM the new process");
    wait_gone(&[third, blue_pid], PATIENCE).await;
    assert_eq!(queued(&notify), ["STOPPING=1\n"], "{}", second.log());
}

/// A run without `state_file` keeps its child journal in its runtime directory, keyed by its
/// listen address (`ChildJournal::runtime_path`): killed with `kill -9`, it leaves blue running,
/// and the next run on that address stops it (event `LeftoversStopped`) before it starts its own,
/// where before session 21 the orphan ran on for good beside the new blue. A clean stop removes
/// Trial 25: a relative `XDG_RUNTIME_DIR` is ignored, as the XDG Base Directory Specification
/// says, for the temporary directory: it was taken from the working directory, so a run started
/// from another directory kept no journal there or missed a killed run's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relative_xdg_runtime_dir_is_ignored_for_the_temporary_directory() {
    let dir = temp_dir();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).expect("a TMPDIR");
    let spec = Spec::new().blue(App::version("v1-relative-runtime"));
    let path = spec.write(dir.path(), "spec.yaml");
    let admin = Admin::new(spec.admin());
    let tmp_text = tmp.to_string_lossy();
    let env = [
        ("XDG_RUNTIME_DIR", "relative-runtime"),
        ("TMPDIR", tmp_text.as_ref()),
    ];
    let args = [OsStr::new("run"), path.as_os_str()];
    let mut run = Crossfade::spawn_env(dir.path(), "run.log", args, &env);
    run.wait_ready(&admin, PATIENCE).await;
    let listen = spec.listen();
    let uid = nix::unistd::getuid();
    let journal = tmp.join(format!(
        "crossfade-{uid}/run-{}-{}.children",
        listen.ip(),
        listen.port()
    ));
    wait_state(&journal, PATIENCE, "blue's pid in the journal", |j| {
        j["children"]
            .as_array()?
            .iter()
            .find_map(|c| c["pid"].as_u64())
    })
    .await;
    assert!(
        !run.log().contains("without a child journal"),
        "{}",
        run.log()
    );
    run.terminate(PATIENCE).await;
}

/// the journal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_state_file_a_restart_stops_what_a_killed_run_left_running() {
    let dir = temp_dir();
    let blue = App::version("v1-stateless").set(
        "readiness",
        json!({ "interval": "50ms", "deadline": format!("{}s", PATIENCE.as_secs()) }),
    );
    let spec = Spec::new().blue(blue);
    let path = spec.write(dir.path(), "spec.yaml");
    let admin = Admin::new(spec.admin());
    let mut first = Crossfade::run(dir.path(), &path);
    first.wait_ready(&admin, PATIENCE).await;
    // The support spawner sets XDG_RUNTIME_DIR to the test's directory.
    let listen = spec.listen();
    let journal = dir.path().join(format!(
        "crossfade/run-{}-{}.children",
        listen.ip(),
        listen.port()
    ));
    let orphan = wait_state(&journal, PATIENCE, "blue's pid in the journal", |j| {
        j["children"]
            .as_array()?
            .iter()
            .find_map(|c| c["pid"].as_u64())
    })
    .await as u32;
    first.kill_hard();
    assert!(pid_alive(orphan), "blue outlives its killed run");

    let mut second = Crossfade::run(dir.path(), &path);
    second.wait_ready(&admin, PATIENCE).await;
    wait_gone(&[orphan], Duration::from_secs(10)).await;
    let reasons = event_reasons(&admin).await;
    assert!(
        reasons.iter().any(|r| r == "LeftoversStopped"),
        "{reasons:?}\n{}",
        second.log()
    );
    assert!(
        second.log().contains(&format!("pid {orphan}")),
        "{}",
        second.log()
    );
    serves_at_once(&spec, "v1-stateless").await;

    let exit = second.terminate(PATIENCE).await;
    assert!(exit.success(), "{exit}\n{}", second.log());
    assert!(
        !journal.exists(),
        "a clean stop removes {}",
        journal.display()
    );
}

/// A `kill -9` after the role swap (Retiring: blue draining a held request) leaves the promoted
/// green serving; the restart completes the rollout and adopts green's healthy instances (same
/// pids, event `Adopted`) rather than stopping them and starting green afresh, so the route does
/// not wait for green's whole start (here `--unready-for 5s`, as a slow JVM would) with no
/// backend; blue, which was retiring, is stopped. Trial 24: a restart that completed a rollout
/// adopted nothing, so a kill of `run` in Retiring stopped both healthy versions and the route
/// served nothing until a fresh green was ready (5.3 s for a green with a 5 s start, measured by
/// hand, 2026-12-03).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_the_role_swap_adopts_the_promoted_green() {
    let dir = temp_dir();
    let state = dir.path().join("state.json");
    let readiness = json!({ "interval": "50ms", "deadline": format!("{}s", PATIENCE.as_secs()) });
    // Blue answers after a minute: the held request keeps it retiring after the role swap.
    let blue = App::version("v1-swap")
        .flags(["--latency", "60000"])
        .set("readiness", readiness.clone());
    let green = App::version("v2-swap")
        .flags(["--unready-for", "5s"])
        .set("instances", json!(2))
        .set("readiness", readiness);
    let mut spec = Spec::new().blue(blue).green(green).state_file(&state);
    spec.json["rollout"]["steps"] = json!([100]);
    spec.json["rollout"]["hold"] = json!("1h");
    spec.json["rollout"]["progress_deadline"] = json!("2h");
    spec.json["rollout"]["drain_timeout"] = json!("5m");
    let path = spec.write(dir.path(), "spec.yaml");
    let admin = Admin::new(spec.admin());
    let mut first = Crossfade::run(dir.path(), &path);
    first.wait_ready(&admin, PATIENCE).await;
    let blue_pids = wait_state(&state, PATIENCE, "blue's pid", |s| {
        Some(pids_of(&s["active_pids"])).filter(|p| !p.is_empty())
    })
    .await;
    // One request held by blue before green gets any weight.
    let mut slow = tokio::net::TcpStream::connect(spec.listen()).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut slow, b"GET /slow HTTP/1.1\r\nHost: web\r\n\r\n")
        .await
        .unwrap();
    wait_until(PATIENCE, "blue holds the slow request", || async {
        (admin.status().await["routes"][0]["blue"]["in_flight"] == 1).then_some(())
    })
    .await;
    wait_until(PATIENCE, "the rollout at its step", || async {
        (admin.rollout().await["rollout"]["phase"] == "Progressing").then_some(())
    })
    .await;
    let (code, answer) = admin.post("/rollout/promote").await;
    assert_eq!(code, 200, "{answer}");
    let mut green_pids = wait_state(&state, PATIENCE, "Retiring, green's 2 pids", |s| {
        let record = &s["rollout"];
        (record["rollout"]["phase"] == "Retiring")
            .then(|| pids_of(&record["preview_pids"]))
            .filter(|p| p.len() == 2)
    })
    .await;
    first.kill_hard();
    assert!(
        green_pids.iter().all(|&p| pid_alive(p)),
        "green outlives a SIGKILLed crossfade"
    );

    let mut second = Crossfade::run(dir.path(), &path);
    second.wait_ready(&admin, PATIENCE).await;
    let mut after = wait_state(&state, PATIENCE, "the active pids", |s| {
        Some(pids_of(&s["active_pids"])).filter(|p| p.len() == 2)
    })
    .await;
    green_pids.sort_unstable();
    after.sort_unstable();
    assert_eq!(after, green_pids, "green adopted:\n{}", second.log());
    let reasons = event_reasons(&admin).await;
    assert!(reasons.iter().any(|r| r == "Adopted"), "{reasons:?}");
    assert_eq!(admin.rollout().await["rollout"]["phase"], "Completed");
    serves_at_once(&spec, "v2-swap").await;
    wait_gone(&blue_pids, Duration::from_secs(5)).await;
    drop(slow);
    second.terminate(PATIENCE).await;
    wait_gone(&green_pids, Duration::from_secs(5)).await;
}

/// Trial 28: a `crossfade run` killed after it saved its rollout `Completed` but before it saved
/// the promoted slot as the active one (the two saves are separate; a SIGKILL between them was
/// seen by hand) leaves a state file whose `active`, `active_workload` and `active_pids` are
/// still the retired blue's. The restart served blue's version again, started afresh, and stopped
/// the promoted green, which served all the traffic, as a leftover. It must serve green, adopted.
/// The file is made as the run leaves it then: the finished rollout's record, with the active
/// fields as the run saved them before the role swap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_between_the_completion_and_its_role_swap_save_serves_the_promoted_green() {
    let dir = temp_dir();
    let state = dir.path().join("state.json");
    let mut spec = Spec::new()
        .blue(App::version("v1-done"))
        .green(App::version("v2-done"))
        .state_file(&state);
    spec.json["rollout"]["steps"] = json!([100]);
    spec.json["rollout"]["hold"] = json!("1h");
    spec.json["rollout"]["progress_deadline"] = json!("2h");
    let path = spec.write(dir.path(), "spec.yaml");
    let admin = Admin::new(spec.admin());
    let mut first = Crossfade::run(dir.path(), &path);
    first.wait_ready(&admin, PATIENCE).await;
    let before = wait_state(&state, PATIENCE, "the rollout at its step", |s| {
        (s["rollout"]["rollout"]["phase"] == "Progressing").then(|| s.clone())
    })
    .await;
    let (code, answer) = admin.post("/rollout/promote").await;
    assert_eq!(code, 200, "{answer}");
    let done = wait_state(&state, PATIENCE, "completed, green active", |s| {
        let completed = s["rollout"]["rollout"]["phase"] == "Completed" && s["active"] == "green";
        completed.then(|| s.clone())
    })
    .await;
    let green_pids = pids_of(&done["active_pids"]);
    assert_eq!(green_pids.len(), 1, "{done:#}");
    first.kill_hard();

    let mut window = done.clone();
    for field in ["active", "active_workload", "active_pids"] {
        window[field] = before[field].clone();
    }
    assert_eq!(window["active"], "blue", "{before:#}");
    std::fs::write(&state, serde_json::to_vec_pretty(&window).unwrap()).expect("state file");

    let mut second = Crossfade::run(dir.path(), &path);
    second.wait_ready(&admin, PATIENCE).await;
    serves_at_once(&spec, "v2-done").await;
    let after = pids_of(&read_state(&state)["active_pids"]);
    assert_eq!(after, green_pids, "green adopted:\n{}", second.log());
    assert!(
        pid_alive(green_pids[0]),
        "green was stopped:\n{}",
        second.log()
    );
    second.terminate(PATIENCE).await;
    wait_gone(&green_pids, Duration::from_secs(5)).await;
}

/// The state file as JSON.
fn read_state(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("state file")).expect("state JSON")
}
