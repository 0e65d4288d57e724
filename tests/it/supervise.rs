//! A serving instance that dies is restarted by the process driver on its port, with an event and a
//! metric, while the proxy keeps traffic on the instances that are up: blue before a rollout, and
//! green once it has been promoted.

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;

use crate::rollout::wait_terminal;
use crate::support::spec::write_json;
use crate::support::trace::{self, TraceConfig};
use crate::support::{
    pid_alive, pids_of, read_json, run_to_end, temp_dir, wait_gone, wait_until, Admin, App,
    Crossfade, Load, LoadConfig, Spec,
};

/// Kills `victim` (SIGKILL, as a crash) and waits until the state file lists a live replacement
/// among the active pids, returning them.
async fn kill_and_wait_restart(state: &std::path::Path, victim: u32) -> Vec<u32> {
    kill(Pid::from_raw(victim as i32), Signal::SIGKILL).expect("kill the instance");
    wait_until(Duration::from_secs(15), "a restarted instance", || async {
        let pids = pids_of(&read_json(state)["active_pids"]);
        let replaced = !pids.contains(&victim) && pids.iter().all(|&p| pid_alive(p));
        (replaced && pids.len() == 2).then_some(pids)
    })
    .await
}

/// Waits until `backend`'s instance `index` (its endpoint: same port as before the crash) answers
/// through the proxy again, in a burst without any error. Meanwhile its endpoint was withdrawn
/// from the route's traffic (`port_taken` shows it), not left to outlier ejection.
async fn serves_again(spec: &Spec, admin: &Admin, backend: &str, index: usize) {
    let endpoint = admin.status().await["routes"][0][backend]["endpoints"][index].clone();
    let port = endpoint
        .as_str()
        .and_then(|e| e.rsplit(':').next())
        .map(str::to_owned);
    let suffix = format!("-{}", port.expect("the instance's endpoint"));
    wait_until(
        Duration::from_secs(15),
        "the restarted instance to serve",
        || async {
            let records = trace::burst(&TraceConfig::new(spec.listen()), 40).await;
            let clean = trace::errors(&records).is_empty();
            let reached = records
                .iter()
                .any(|r| r.instance().is_some_and(|i| i.ends_with(&suffix)));
            (clean && reached).then_some(())
        },
    )
    .await;
}

async fn restarts(admin: &Admin, backend: &str) -> f64 {
    let labels = [("route", "web"), ("backend", backend)];
    let metrics = admin.metrics().await;
    metrics
        .get("crossfade_instance_restarts_total", &labels)
        .unwrap_or_else(|| panic!("no restart counter for {backend}"))
}

pub(crate) async fn events(admin: &Admin) -> Vec<(String, String)> {
    let status = admin.rollout().await;
    let events = status["events"].as_array().cloned().unwrap_or_default();
    events
        .iter()
        .map(|e| {
            let text = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            (text("reason"), text("message"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_serving_instance_is_restarted_with_an_event_and_a_metric_blue_and_promoted_green()
{
    let dir = temp_dir();
    let state = dir.path().join("state.json");
    let two = |version| App::version(version).set("instances", json!(2));
    let spec = Spec::new().blue(two("v1")).state_file(&state);
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    assert_eq!(restarts(&admin, "blue").await, 0.0);
    let load = Load::start(LoadConfig::new(spec.listen()));

    // Blue serves: one of its instances crashes and comes back on the same port.
    let before = wait_until(Duration::from_secs(10), "blue's pids", || async {
        let pids = pids_of(&read_json(&state)["active_pids"]);
        (pids.len() == 2).then_some(pids)
    })
    .await;
    let after = kill_and_wait_restart(&state, before[0]).await;
    assert_eq!(after[1], before[1], "the other instance is untouched");
    assert_eq!(restarts(&admin, "blue").await, 1.0);
    let events = events(&admin).await;
    let exited = events.iter().find(|(r, _)| r == "ActiveExited");
    assert!(
        exited.is_some_and(|(_, m)| m.contains("instance 0 exited") && m.contains("restarting in")),
        "{events:?}"
    );
    let restarted = events.iter().find(|(r, _)| r == "ActiveRestarted");
    let pid_note = format!("pid {}", after[0]);
    assert!(
        restarted.is_some_and(|(_, m)| m.contains(&pid_note)),
        "{events:?}"
    );
    serves_again(&spec, &admin, "blue", 0).await;

    // Green, once promoted, is the serving workload and is supervised as well.
    let request = json!({ "green": two("v2").json, "rollout": { "steps": [100], "hold": "5m", "progress_deadline": "10m" } });
    let (status, body) = admin.json("POST", "/rollout", Some(&request)).await;
    assert_eq!(status, 202, "{body}");
    wait_until(
        Duration::from_secs(20),
        "promote to be accepted",
        || async { (admin.post("/rollout/promote").await.0 == 200).then_some(()) },
    )
    .await;
    let rollout = wait_terminal(&admin, Duration::from_secs(30)).await;
    assert_eq!(rollout["phase"], "Completed", "{rollout:#}");
    let green = wait_until(Duration::from_secs(10), "green's pids", || async {
        let pids = pids_of(&read_json(&state)["active_pids"]);
        let green = pids.len() == 2 && pids.iter().all(|p| !after.contains(p) && pid_alive(*p));
        green.then_some(pids)
    })
    .await;
    kill_and_wait_restart(&state, green[1]).await;
    assert_eq!(restarts(&admin, "green").await, 1.0);
    assert_eq!(restarts(&admin, "blue").await, 1.0);
    serves_again(&spec, &admin, "green", 1).await;

    // Requests in flight on a killed instance, and retries that reach it before the proxy ejects
    // it, may fail; everything else was served.
    let report = load.stop().await;
    assert!(
        report.ok_from("v1") > 0 && report.ok_from("v2") > 0,
        "{report:?}"
    );
    assert_eq!(report.transport_errors, 0, "{report:?}");
    run.terminate(Duration::from_secs(15)).await;
}

/// Trial 9, I14: an active instance waiting out its restart backoff reads `up` in the proxy's
/// view until a request fails there; `crossfade status` says what the supervisor knows next to
/// the endpoint, and `GET /rollout` lists it under `restarting`. The instance serves at its first
/// start and exits at once at every later one: a crash loop with a growing backoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_says_an_active_instance_waits_out_its_restart_backoff() {
    let dir = temp_dir();
    let state = dir.path().join("state.json");
    let marker = dir.path().join("started-once");
    let script = format!(
        "if [ -e '{m}' ]; then exit 1; fi; : > '{m}'; exec '{bin}' sample-app --port \"$0\" --version v1",
        m = marker.display(),
        bin = crate::support::BIN
    );
    let blue = App::version("v1")
        .set("command", json!("sh"))
        .set("args", json!(["-c", script, "{port}"]));
    let spec = Spec::new().blue(blue).state_file(&state);
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    let pids = wait_until(Duration::from_secs(10), "blue's pid", || async {
        let pids = pids_of(&read_json(&state)["active_pids"]);
        (pids.len() == 1).then_some(pids)
    })
    .await;
    let endpoint = admin.status().await["routes"][0]["blue"]["endpoints"][0].clone();
    let endpoint = endpoint.as_str().unwrap_or_default().to_owned();
    kill(Pid::from_raw(pids[0] as i32), Signal::SIGKILL).expect("kill the instance");

    let admin_addr = admin.addr.to_string();
    let wanted = format!("; {endpoint} ");
    let (line, restarting) = wait_until(
        Duration::from_secs(30),
        "status to say the instance is restarting",
        || async {
            let out = crate::support::run_to_end(
                ["status", "--admin", admin_addr.as_str()],
                Duration::from_secs(20),
            )
            .await;
            let line = out
                .stdout
                .lines()
                .find(|l| l.contains(&wanted) && l.contains(", restarting in "))?
                .to_owned();
            let restarting = admin.rollout().await["restarting"].clone();
            Some((line, restarting))
        },
    )
    .await;
    assert!(line.starts_with("  blue "), "{line}");
    assert!(line.contains(" (process exited ("), "{line}");
    let listed = restarting.as_array().cloned().unwrap_or_default();
    assert!(
        listed
            .iter()
            .all(|r| r["backend"] == "blue" && r["endpoint"] == endpoint.as_str()),
        "{restarting:#}"
    );
    run.terminate(Duration::from_secs(15)).await;
}

/// Session 35: an active instance restarted after a crash that never becomes ready (here the
/// restart never listens) was probed for ever: its endpoint withdrawn, `crossfade status` saying
/// `started again as pid N, not ready yet` for as long, no event. Now its workload's
/// `readiness.deadline` bounds it: stopped, the event `ActiveNotReady` with the last probe and
/// the backoff, counted in `crossfade_rollout_events_total`, `crossfade status` and `GET
/// /rollout` saying why it is down, and started again after the backoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_active_instance_not_ready_within_its_deadline_is_stopped_and_started_again() {
    let dir = temp_dir();
    let state = dir.path().join("state.json");
    let marker = dir.path().join("started-once");
    let script = format!(
        "if [ -e '{m}' ]; then exec sleep 1000; fi; : > '{m}'; exec '{bin}' sample-app --port \"$0\" --version v1",
        m = marker.display(),
        bin = crate::support::BIN
    );
    let blue = App::version("v1")
        .set("command", json!("sh"))
        .set("args", json!(["-c", script, "{port}"]))
        .set(
            "readiness",
            json!({ "timeout": "200ms", "interval": "50ms", "deadline": "1s" }),
        );
    let spec = Spec::new().blue(blue).state_file(&state);
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    let first = wait_until(Duration::from_secs(10), "blue's pid", || async {
        let pids = pids_of(&read_json(&state)["active_pids"]);
        (pids.len() == 1).then(|| pids[0])
    })
    .await;
    kill(Pid::from_raw(first as i32), Signal::SIGKILL).expect("kill the instance");
    // The restart that never listens: its pid is saved once it is started.
    let unready = wait_until(Duration::from_secs(20), "the restart", || async {
        let pids = pids_of(&read_json(&state)["active_pids"]);
        pids.first().copied().filter(|p| *p != first)
    })
    .await;
    let message = wait_until(
        Duration::from_secs(30),
        "an ActiveNotReady event",
        || async {
            let events = events(&admin).await;
            let found = events.iter().find(|(r, _)| r == "ActiveNotReady");
            found.map(|(_, m)| m.clone())
        },
    )
    .await;
    for words in [
        "instance 0 not ready within its readiness deadline 1s after its restart (last probe: ",
        "; stopped, restarting in ",
    ] {
        assert!(message.contains(words), "{words:?} in {message}");
    }
    wait_until(
        Duration::from_secs(10),
        "the unready restart stopped",
        || async { (!pid_alive(unready)).then_some(()) },
    )
    .await;
    let counted = admin.metrics().await.get(
        "crossfade_rollout_events_total",
        &[("route", "web"), ("reason", "ActiveNotReady")],
    );
    assert!(counted >= Some(1.0), "{counted:?}");
    // Said where an operator looks, until the next start (which, never listening, is not ready
    // either: the cycle repeats with a growing backoff).
    let admin_addr = admin.addr.to_string();
    wait_until(
        Duration::from_secs(30),
        "status to say why the instance is down",
        || async {
            let out = crate::support::run_to_end(
                ["status", "--admin", admin_addr.as_str()],
                Duration::from_secs(20),
            )
            .await;
            let said = out.stdout.lines().any(|l| {
                l.contains("(process not ready within its readiness deadline 1s")
                    && l.contains("restarting in ")
            });
            let restarting = admin.rollout().await["restarting"].clone();
            let listed = restarting.as_array().into_iter().flatten().any(|r| {
                r["cause"]
                    .as_str()
                    .is_some_and(|c| c.starts_with("not ready within"))
            });
            (said && listed).then_some(())
        },
    )
    .await;
    // And it is started again.
    wait_until(
        Duration::from_secs(30),
        "a start after the stop",
        || async {
            let pids = pids_of(&read_json(&state)["active_pids"]);
            pids.first()
                .copied()
                .filter(|p| *p != first && *p != unready)
        },
    )
    .await;
    run.terminate(Duration::from_secs(15)).await;
}

/// Trial 28: an abort while blue's instances are down (killed, their restarts failing), which the
/// proxy, having sent them no request since, counted up (since trial 32 the supervisor withdraws
/// their endpoints, so it counts them down too). The supervisor knows that no process serves
/// them, so the abort waits for blue's capacity with green's weight kept and green
/// running, instead of sending every request to dead endpoints and stopping the healthy green
/// (until trial 28 it did: `sending all traffic back to blue (2 of 2 endpoints healthy ...)`).
/// Once blue's instances start again, the abort ends with all traffic on blue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_never_sends_traffic_back_to_active_instances_that_are_not_running() {
    use std::os::unix::fs::PermissionsExt;
    let half = HalfWay::start("").await;
    let mode = |m| std::fs::set_permissions(&half.script, std::fs::Permissions::from_mode(m));
    // Blue's processes die, and cannot be started again until the script is executable again.
    mode(0o644).expect("chmod");
    half.kill_blue();
    let admin = half.admin;
    wait_until(
        Duration::from_secs(20),
        "both blue instances failing to restart",
        || async {
            let restarting = admin.rollout().await["restarting"].clone();
            let failing = restarting.as_array().map_or(0, |list| {
                list.iter()
                    .filter(|r| {
                        r["cause"]
                            .as_str()
                            .is_some_and(|c| c.starts_with("cannot be started again"))
                    })
                    .count()
            });
            (failing == 2).then_some(())
        },
    )
    .await;
    half.abort_waits_for_blue().await;
    // Blue can start again: the abort ends on its own, all traffic on blue.
    mode(0o755).expect("chmod");
    half.ends_aborted().await;
}

/// Trial 28, the same family: blue's instances were started again but do not listen yet (a slow
/// start, held here until the test lets them go on). Their processes run, their endpoints stay
/// withdrawn, and they cannot serve: the abort waits until they pass their readiness probe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_never_sends_traffic_back_to_restarted_active_instances_not_ready_yet() {
    let half = HalfWay::start("while [ -e \"$0.hold\" ]; do sleep 0.05; done\n").await;
    let hold = half.script.with_extension("sh.hold");
    std::fs::write(&hold, "").expect("hold file");
    let before = pids_of(&read_json(&half.state)["active_pids"]);
    half.kill_blue();
    wait_until(
        Duration::from_secs(20),
        "both blue instances restarted",
        || async {
            let pids = pids_of(&read_json(&half.state)["active_pids"]);
            let restarted = pids.len() == 2 && pids.iter().all(|p| !before.contains(p));
            (restarted && pids.iter().all(|&p| pid_alive(p))).then_some(())
        },
    )
    .await;
    half.abort_waits_for_blue().await;
    std::fs::remove_file(&hold).expect("remove the hold file");
    half.ends_aborted().await;
}

/// A rollout of a sample-app green, held at 50% (its analysis 10 minutes away, no load, so the
/// proxy never sends a request that would show it blue's instances are gone); blue's two
/// instances run `blue.sh PORT`, a script that runs `prelude` and then the sample app.
struct HalfWay {
    _dir: tempfile::TempDir,
    script: std::path::PathBuf,
    state: std::path::PathBuf,
    admin: Admin,
    run: Crossfade,
}

impl HalfWay {
    async fn start(prelude: &str) -> HalfWay {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir();
        let state = dir.path().join("state.json");
        let script = dir.path().join("blue.sh");
        let body = format!(
            "#!/bin/sh\n{prelude}exec '{}' sample-app --port \"$1\" --version v1\n",
            crate::support::BIN
        );
        std::fs::write(&script, body).expect("blue script");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let blue = App::version("v1")
            .set("command", json!(script))
            .set("args", json!(["{port}"]))
            .set("instances", json!(2));
        let mut spec = Spec::new()
            .blue(blue)
            .green(App::version("v2"))
            .state_file(&state);
        spec.json["rollout"]["steps"] = json!([50, 100]);
        spec.json["rollout"]["hold"] = json!("10m");
        spec.json["rollout"]["progress_deadline"] = json!("20m");
        let admin = Admin::new(spec.admin());
        let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
        run.wait_ready(&admin, Duration::from_secs(15)).await;
        wait_until(Duration::from_secs(30), "green at 50%", || async {
            let r = admin.rollout().await["rollout"].clone();
            (r["phase"] == "Progressing" && r["applied_bp"] == 5_000).then_some(())
        })
        .await;
        HalfWay {
            _dir: dir,
            script,
            state,
            admin,
            run,
        }
    }

    /// SIGKILLs blue's instances (as a crash).
    fn kill_blue(&self) {
        for pid in pids_of(&read_json(&self.state)["active_pids"]) {
            kill(Pid::from_raw(pid as i32), Signal::SIGKILL).expect("kill a blue instance");
        }
    }

    /// With both blue endpoints withdrawn from the proxy's traffic (the supervisor knows that no
    /// blue process can serve, which the proxy, having sent them no request, would not), an
    /// abort keeps green's weight and green running, saying that blue has no healthy endpoint.
    async fn abort_waits_for_blue(&self) {
        let admin = self.admin;
        let status = admin.status().await;
        let withdrawn = status["routes"][0]["blue"]["health"]
            .as_array()
            .map_or(0, |h| h.iter().filter(|e| e["withdrawn"] == true).count());
        assert_eq!(withdrawn, 2, "blue's endpoints are withdrawn: {status:#}");
        let (code, answer) = admin.post("/rollout/abort").await;
        assert_eq!(code, 200, "{answer}");
        // The abort either waits for blue (the right outcome) or has already ended.
        let rollout = wait_until(Duration::from_secs(20), "the abort to settle", || async {
            let r = admin.rollout().await["rollout"].clone();
            let message = r["message"].as_str().unwrap_or_default();
            let waits = r["phase"] == "Aborting" && message.contains("0 of 2 endpoints healthy");
            (waits || r["phase"] == "Aborted").then_some(r)
        })
        .await;
        assert_eq!(
            rollout["phase"], "Aborting",
            "the abort counted blue's instances that cannot serve as healthy: {rollout:#}"
        );
        let status = admin.status().await;
        assert_eq!(
            status["routes"][0]["green"]["weight_bp"], 5_000,
            "green's weight was taken while blue cannot serve: {status:#}"
        );
        let green = &status["routes"][0]["green"]["endpoints"];
        assert_eq!(
            green.as_array().map(Vec::len),
            Some(1),
            "green was stopped: {status:#}"
        );
    }

    /// Once blue can serve again, the abort ends on its own with all traffic on blue.
    async fn ends_aborted(mut self) {
        let rollout = wait_terminal(&self.admin, Duration::from_secs(90)).await;
        assert_eq!(rollout["phase"], "Aborted", "{rollout:#}");
        assert_eq!(
            self.admin.status().await["routes"][0]["weights"],
            json!({ "blue": 10_000, "green": 0 })
        );
        self.run.terminate(Duration::from_secs(15)).await;
    }
}

/// Trial 28: at the end of a completed rollout the promoted slot's `crossfade_backend_info` was
/// removed and set again once the service took the promoted workload, so its
/// `crossfade_backend_workload_timestamp_seconds` restarted at the completion: the requests the
/// promoted version answered during the rollout read as another workload's. It keeps the time
/// the slot got the workload, before the rollout ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_promoted_slots_workload_time_is_when_it_got_the_workload_not_the_completion() {
    let dir = temp_dir();
    let mut spec = Spec::new().green(App::version("v2"));
    spec.json["rollout"]["steps"] = json!([100]);
    spec.json["rollout"]["hold"] = json!("1h");
    spec.json["rollout"]["progress_deadline"] = json!("2h");
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    wait_until(
        Duration::from_secs(30),
        "the rollout at its step",
        || async { (admin.rollout().await["rollout"]["phase"] == "Progressing").then_some(()) },
    )
    .await;
    let (code, answer) = admin.post("/rollout/promote").await;
    assert_eq!(code, 200, "{answer}");
    wait_terminal(&admin, Duration::from_secs(30)).await;
    let events = admin.rollout().await["events"].clone();
    let completed = events
        .as_array()
        .and_then(|list| list.iter().find(|e| e["reason"] == "Completed"))
        .and_then(|e| e["at_unix_seconds"].as_f64())
        .expect("a Completed event");
    let metrics = admin.metrics().await;
    let got = metrics
        .get(
            "crossfade_backend_workload_timestamp_seconds",
            &[("route", "web"), ("backend", "green")],
        )
        .expect("green's workload time");
    assert!(
        got < completed,
        "green got its workload at {got}, after the completion at {completed}"
    );
    run.terminate(Duration::from_secs(15)).await;
}

/// Runtry 30: a workload's server that leaves its instance's process group (a daemon mode's
/// `setsid`, as nginx does without `daemon off;`) got no signal when the instance was stopped:
/// after an abort the preview's server went on serving on its port, and after `crossfade run`
/// stopped, blue's did, both unsupervised for good. Every process carrying the instance's token
/// in its environment is now stopped with the instance, and the log says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_left_its_instances_process_group_is_stopped_with_the_instance() {
    use crate::restart::{running_with_version, ReapEach};
    let dir = temp_dir();
    // The script stays in the foreground; the server it starts does not stay in its group.
    let escaping = |version: &str| {
        let script = format!(
            "setsid {} sample-app --port {{port}} --version {version} & wait",
            crate::support::BIN
        );
        App::version(version)
            .set("command", json!("/bin/sh"))
            .set("args", json!(["-c", script]))
    };
    let mut spec = Spec::new()
        .blue(escaping("v1-setsid"))
        .green(escaping("v2-setsid"));
    spec.json["rollout"]["hold"] = json!("1h");
    spec.json["rollout"]["progress_deadline"] = json!("2h");
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    let patience = Duration::from_secs(30);
    let servers = |version: &'static str| {
        wait_until(patience, version, move || {
            let found = running_with_version(version);
            std::future::ready((found.len() == 1).then_some(found))
        })
    };
    let blue = servers("v1-setsid").await;
    let _reap_blue = ReapEach(blue.clone());
    wait_until(patience, "a Progressing rollout", || async {
        (admin.rollout().await["rollout"]["phase"] == "Progressing").then_some(())
    })
    .await;
    let green = servers("v2-setsid").await;
    let _reap_green = ReapEach(green.clone());

    let (status, body) = admin.post("/rollout/abort").await;
    assert_eq!(status, 200, "{body}");
    wait_until(patience, "green's escaped server stopped", || {
        std::future::ready(green.iter().all(|&p| !pid_alive(p)).then_some(()))
    })
    .await;
    let log = run.log();
    assert!(
        log.contains(&format!(
            "pid {} (crossfade) it started left its process group",
            green[0]
        )),
        "the log names the escaped server:\n{log}"
    );
    assert!(blue.iter().all(|&p| pid_alive(p)), "blue still serves");

    let code = run.terminate(Duration::from_secs(15)).await;
    assert!(code.success(), "{code:?}\n{}", run.log());
    let left: Vec<u32> = blue.iter().copied().filter(|&p| pid_alive(p)).collect();
    assert!(
        left.is_empty(),
        "blue's escaped server still runs after `crossfade run` stopped: {left:?}\n{}",
        run.log()
    );
}

/// Runtry 30: one byte that is not UTF-8 in a workload's output (`caf\xe9`, Latin-1) ended the
/// relay of its output for good, without a word: the pipe lost its reader, so every later write
/// of the process failed (`EPIPE`; a Python server that logs each request then answered none,
/// 100% 502, and a program that does not ignore `SIGPIPE` dies of it), and a line without a
/// break grew the relay's buffer without bound. Now such bytes are relayed as U+FFFD, a long line
/// in pieces of at most `MAX_RELAYED_LINE`, and what follows is relayed as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workloads_output_that_is_not_utf8_or_very_long_is_relayed_to_its_end() {
    let dir = temp_dir();
    let script = format!(
        "printf 'caf\\351 au lait\\n'; head -c 40000 /dev/zero | tr '\\0' x; echo; \
         echo after the long line; exec {} sample-app --port {{port}} --version v1",
        crate::support::BIN
    );
    let blue = App::version("v1")
        .set("command", json!("/bin/sh"))
        .set("args", json!(["-c", script]));
    let spec = Spec::new().blue(blue);
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    let relayed = |log: &str| -> Vec<String> {
        log.lines()
            .filter_map(|l| l.split_once("[blue-0] ").map(|(_, text)| text.to_owned()))
            .collect()
    };
    // The line after the odd output (stdout, the same pipe) and the app's own log (stderr: its
    // records) are both relayed. Their order in crossfade's log is not the order they were
    // written in: the two pipes are relayed by two tasks (requiring it failed 1 run in 6 under
    // load, cases31).
    wait_until(
        Duration::from_secs(15),
        "the line after the odd output and the sample app's own log relayed",
        || {
            let lines = relayed(&run.log());
            let after = lines.iter().any(|l| l == "after the long line");
            let app = lines.iter().any(|l| l.contains("sample-app listening"));
            std::future::ready((after && app).then_some(()))
        },
    )
    .await;
    let lines = relayed(&run.log());
    assert!(
        lines.iter().any(|l| l == "caf\u{FFFD} au lait"),
        "the Latin-1 byte relayed as U+FFFD: {lines:?}"
    );
    let pieces: Vec<usize> = lines
        .iter()
        .filter(|l| !l.is_empty() && l.bytes().all(|b| b == b'x'))
        .map(String::len)
        .collect();
    assert_eq!(
        pieces,
        [16384, 16384, 7232],
        "the 40000-byte line in pieces"
    );
    run.terminate(Duration::from_secs(15)).await;
}

/// Runtry 30: log records were written to stderr in place, on the runtime's threads. With a
/// stderr nobody reads (a pager, a terminal paused with Ctrl-S, a stuck log shipper), a chatty
/// workload's relayed output filled the pipe and every thread then blocked in `write(2)`: the
/// proxy answered nothing (48 requests, then only timeouts, by hand). Records are now written
/// without blocking: in place while the pipe takes them, else to a bounded backlog that a thread
/// of its own writes, dropped (and counted) when it is full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stderr_nobody_reads_does_not_stop_the_proxy_serving() {
    use std::process::{Command, Stdio};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = temp_dir();
    // About 2 MB of output on both streams, far more than a pipe holds (64 KiB); `chatted`
    // once it is all written.
    let chatted = dir.path().join("chatted");
    let script = format!(
        "(i=0; while [ $i -lt 5000 ]; do echo \"out $i {pad}\"; echo \"err $i {pad}\" >&2; \
         i=$((i+1)); done; touch {}) & exec {} sample-app --port {{port}} --version v1",
        chatted.display(),
        crate::support::BIN,
        pad = "x".repeat(200),
    );
    let blue = App::version("v1")
        .set("command", json!("/bin/sh"))
        .set("args", json!(["-c", script]));
    let spec = Spec::new().blue(blue);
    let path = spec.write(dir.path(), "spec.yaml");
    let run = Command::new(crate::support::BIN)
        .args(["run".as_ref(), path.as_os_str()])
        .env("XDG_RUNTIME_DIR", dir.path())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn crossfade");
    let mut run = StoppedOnDrop(run);
    // Never read: its pipe fills and stays full.
    let stderr = run.0.stderr.take();
    let get = |addr: std::net::SocketAddr| async move {
        let exchange = async {
            let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
            let request = "GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n";
            stream.write_all(request.as_bytes()).await.ok()?;
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).await.ok()?;
            Some(answer.starts_with(b"HTTP/1.1 200"))
        };
        tokio::time::timeout(Duration::from_secs(5), exchange)
            .await
            .ok()
            .flatten()
            .unwrap_or(false)
    };
    let listen = spec.listen();
    wait_until(Duration::from_secs(30), "the proxy serving", || async {
        get(listen).await.then_some(())
    })
    .await;
    // Relayed (or dropped) to its end: before, the relay blocked in its write to stderr, and
    // with it the workload's own writes.
    wait_until(
        Duration::from_secs(30),
        "the workload's output read",
        || std::future::ready(chatted.exists().then_some(())),
    )
    .await;
    let mut failed = 0;
    for _ in 0..100 {
        if !get(listen).await {
            failed += 1;
        }
    }
    // Read at last (closed): the stop's records are not waited for.
    drop(stderr);
    drop(run);
    assert_eq!(failed, 0, "requests not answered while stderr was not read");
}

/// A `crossfade run` spawned by hand: SIGTERM when dropped (so that it stops its workloads),
/// SIGKILL if it has not exited 15 s later.
struct StoppedOnDrop(std::process::Child);

impl Drop for StoppedOnDrop {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0.id() as i32), Signal::SIGTERM);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while tokio::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// DESIGN: a rollout never leaves a route with no healthy backend while one exists (trial 32,
/// newuser32 C). The promoted green crashes right after the role swap, while blue drains (slow
/// requests still on blue hold the drain), and its supervised restart stays not ready for 12 s
/// (`--unready-for`). Before, green's crash answered clients 502 (blue, at weight 0 and no
/// longer active, took no overflow), and blue was removed and stopped at the end of its drain
/// though green could not serve. Now blue is the route's backup from the swap until it is
/// retired: it takes the requests green cannot serve, is kept running past its drain while green
/// has no instance that can serve, and is retired once green's restarted instance is ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promoted_green_that_crashes_while_blue_drains_leaves_blue_serving_until_it_is_back() {
    let dir = temp_dir();
    let state = dir.path().join("state.json");
    let green = App::version("v2").flags(["--unready-for", "12s"]);
    let mut spec = Spec::new().green(green).state_file(&state);
    spec.json["green"]["readiness"] = json!({ "deadline": "30s", "interval": "100ms" });
    spec.json["rollout"]["steps"] =
        json!([{ "weight": 50, "hold": "1s" }, { "weight": 100, "hold": "1s" }]);
    spec.json["rollout"]["progress_deadline"] = json!("40s");
    spec.json["rollout"]["drain_timeout"] = json!("20s");
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    let load = Load::start(LoadConfig::new(spec.listen()));

    // At the 50% step: slow requests, about half of them on blue, hold its drain 6 s.
    wait_until(Duration::from_secs(30), "the 50% step", || async {
        let r = admin.rollout().await["rollout"].clone();
        (r["phase"] == "Progressing" && r["applied_bp"] == 5_000).then_some(())
    })
    .await;
    let green_pids = pids_of(&read_json(&state)["rollout"]["preview_pids"]);
    assert!(!green_pids.is_empty(), "green's pids in the state file");
    let slow = slow_requests_over_the_swap(&admin, spec.listen(), 6000).await;
    for pid in &green_pids {
        kill(Pid::from_raw(*pid as i32), Signal::SIGKILL).expect("kill green");
    }
    // While held, the status says why blue still runs (check32: it said `draining blue`).
    let held = wait_until(Duration::from_secs(30), "blue held", || async {
        let r = admin.rollout().await["rollout"].clone();
        (r["retire_held"] == true).then_some(r)
    })
    .await;
    let message = held["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("blue drained and is kept running as its backup"),
        "{held:#}"
    );
    let rollout = wait_terminal(&admin, Duration::from_secs(40)).await;
    let report = load.stop().await;
    for mut conn in slow {
        assert_eq!(conn.read_response().await.status(), 200, "a slow request");
    }
    let log = run.log();
    run.terminate(Duration::from_secs(15)).await;

    assert_eq!(rollout["phase"], "Completed", "{rollout:#}");
    assert_eq!(report.errors(), 0, "{}", report.summary());
    assert!(report.ok_from("v1") > 0, "{}", report.summary());
    let kept = log
        .find("is kept running and takes green's requests")
        .unwrap_or_else(|| panic!("blue was not kept running while green was down; log:\n{log}"));
    let retired = log
        .find("can serve again: retiring blue")
        .unwrap_or_else(|| panic!("no retirement once green was back; log:\n{log}"));
    assert!(kept < retired, "{log}");
}

/// Sends 16 requests for `/slow?ms=MS` to the proxy at `listen` (at a 50% step about half of them
/// go to blue and hold its drain that long) and waits for the role swap (`Retiring`); returns the
/// connections, to read their answers.
async fn slow_requests_over_the_swap(
    admin: &Admin,
    listen: std::net::SocketAddr,
    ms: u64,
) -> Vec<crate::support::raw::RawConn> {
    let mut slow = Vec::new();
    for _ in 0..16 {
        let mut conn = crate::support::raw::RawConn::connect(listen).await;
        let request = format!("GET /slow?ms={ms} HTTP/1.1\r\nhost: web\r\n\r\n");
        conn.send(request.as_bytes()).await;
        slow.push(conn);
    }
    wait_until(Duration::from_secs(15), "the role swap", || async {
        let r = admin.rollout().await["rollout"].clone();
        (r["phase"] == "Retiring").then_some(())
    })
    .await;
    slow
}

/// A `crossfade run` held after promotion for a static green that died: green is the endpoint
/// of a sample app the test started; at the 50% step, 16 slow requests (4 s), about half of them
/// on blue, hold blue's drain past the role swap; right after the swap green's server is stopped
/// for good, and this returns once `/rollout` says blue is held (`retire_held`). The load runs
/// at `rate` requests per second for at most `max_duration`.
struct HeldForDeadStaticGreen {
    dir: tempfile::TempDir,
    admin: Admin,
    run: Crossfade,
    load: Load,
    /// The slow requests, to read their answers.
    slow: Vec<crate::support::raw::RawConn>,
    /// The port green listened on, to bring a server back on it.
    green_port: String,
}

impl HeldForDeadStaticGreen {
    async fn start(rate: u32, max_duration: Duration) -> HeldForDeadStaticGreen {
        use crate::support::sample::SampleApp;

        let dir = temp_dir();
        let green = SampleApp::start(dir.path(), "v2", "green-0", &[]).await;
        let mut spec = Spec::new();
        spec.json["green"] = json!({
            "endpoints": [green.addr.to_string()],
            "readiness": { "deadline": "10s", "interval": "100ms" },
        });
        spec.json["rollout"]["steps"] =
            json!([{ "weight": 50, "hold": "1s" }, { "weight": 100, "hold": "1s" }]);
        spec.json["rollout"]["progress_deadline"] = json!("40s");
        spec.json["rollout"]["drain_timeout"] = json!("20s");
        spec.json["rollout"]["analysis"]["min_requests"] = json!(1);
        let admin = Admin::new(spec.admin());
        let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
        run.wait_ready(&admin, Duration::from_secs(15)).await;
        let mut config = LoadConfig::new(spec.listen());
        (config.rate, config.max_duration) = (rate, max_duration);
        let load = Load::start(config);
        wait_until(Duration::from_secs(30), "the 50% step", || async {
            let r = admin.rollout().await["rollout"].clone();
            (r["phase"] == "Progressing" && r["applied_bp"] == 5_000).then_some(())
        })
        .await;
        let slow = slow_requests_over_the_swap(&admin, spec.listen(), 4000).await;
        let green_port = green.addr.port().to_string();
        drop(green); // stops it
        wait_until(Duration::from_secs(30), "blue held", || async {
            let r = admin.rollout().await["rollout"].clone();
            (r["retire_held"] == true).then_some(())
        })
        .await;
        HeldForDeadStaticGreen {
            dir,
            admin,
            run,
            load,
            slow,
            green_port,
        }
    }
}

/// The same hold with a static green (endpoints Crossfade did not start) whose server dies right
/// after the role swap (check32). Nothing supervises it, so the proxy's health alone says whether
/// it can serve, and the proxy re-admits an ejected endpoint each time its backoff runs out,
/// whether or not it could serve. Before, blue was retired at the first such re-admission (100 ms
/// after the hold began), and every request answered 502 from then on. Now an endpoint taken
/// back only by its ejection's end (its ejection count not decayed) does not count: blue stays
/// the backup through re-admissions and is retired once green's server is back and has served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promoted_static_green_that_dies_while_blue_drains_leaves_blue_serving_past_its_re_admissions(
) {
    // A light load, as a quiet service has: a re-admitted endpoint then stays admitted until
    // the next request fails on it (up to 125 ms), past the runtime's 100 ms capacity poll.
    let HeldForDeadStaticGreen {
        dir,
        admin,
        mut run,
        load,
        slow,
        green_port: port,
    } = HeldForDeadStaticGreen::start(8, Duration::from_secs(150)).await;
    // The proxy re-admits green's endpoint when its ejection runs out; the load fails on it and
    // ejects it again. Blue must still be there after that.
    let green_health = || async {
        let status = admin.get("/status").await;
        status["routes"][0]["green"]["health"][0].clone()
    };
    wait_until(Duration::from_secs(20), "a re-admission", || async {
        let e = green_health().await;
        (e["healthy"] == true && e["ejections"].as_u64() > Some(0)).then_some(())
    })
    .await;
    wait_until(Duration::from_secs(20), "ejected again", || async {
        (green_health().await["healthy"] == false).then_some(())
    })
    .await;
    let r = admin.rollout().await["rollout"].clone();
    assert_eq!(
        r["phase"], "Retiring",
        "blue was retired on a re-admission: {r:#}"
    );

    let args: Vec<String> = ["sample-app", "--port", &port, "--version", "v2"]
        .map(String::from)
        .to_vec();
    let addr = format!("127.0.0.1:{port}").parse().expect("addr");
    let _back =
        crate::support::sample::SampleApp::start_args(dir.path(), "green-back", addr, &args, &[])
            .await;
    let rollout = wait_terminal(&admin, Duration::from_secs(120)).await;
    let report = load.stop().await;
    for mut conn in slow {
        assert_eq!(conn.read_response().await.status(), 200, "a slow request");
    }
    run.terminate(Duration::from_secs(15)).await;
    assert_eq!(rollout["phase"], "Completed", "{rollout:#}");
    assert_eq!(report.errors(), 0, "{}", report.summary());
}

/// An operator's way out of a hold that does not end (check32's leftover): the promoted static
/// green's server dies after the role swap and never comes back, blue is held as its backup and
/// `crossfade abort`, which said "too late" after promotion, now gives all the traffic back to
/// blue at once and ends the rollout `Aborted`, with blue the active backend and no backup left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_ends_a_held_retirement_with_blue_active_again() {
    let HeldForDeadStaticGreen {
        admin,
        mut run,
        load,
        slow,
        ..
    } = HeldForDeadStaticGreen::start(20, Duration::from_secs(60)).await;

    let (code, answer) = admin.post("/rollout/abort").await;
    assert_eq!(code, 200, "{answer}");
    let rollout = wait_terminal(&admin, Duration::from_secs(20)).await;
    let at_end = load.report();
    load.wait_requests(40, Duration::from_secs(10)).await;
    let report = load.stop().await;
    let after = report.since(&at_end);
    for mut conn in slow {
        assert_eq!(conn.read_response().await.status(), 200, "a slow request");
    }
    let status = admin.status().await;
    run.terminate(Duration::from_secs(15)).await;

    assert_eq!(rollout["phase"], "Aborted", "{rollout:#}");
    assert_eq!(rollout["active"], "blue", "{rollout:#}");
    let route = &status["routes"][0];
    assert_eq!(route["active"], "blue", "{status:#}");
    assert_eq!(
        route["weights"],
        json!({ "blue": 10000, "green": 0 }),
        "{status:#}"
    );
    assert!(
        route.get("backup").is_none_or(serde_json::Value::is_null),
        "{status:#}"
    );
    assert!(
        after.total() >= 40 && after.ok_from("v1") == after.total(),
        "only blue after the abort: {after:?}"
    );
    assert_eq!(report.errors(), 0, "{}", report.summary());
}

/// How [`stop_during_a_held_retirement`] stops `crossfade run`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    /// SIGTERM.
    Term,
    /// SIGKILL, as a crash.
    Kill,
    /// Blue runs two instances; `run` is frozen (SIGSTOP, so that it restarts nothing), blue's
    /// instance 0 SIGKILLed, then `run` SIGKILLed: a crash while that instance waited for its
    /// restart.
    KillWithBlueDown,
}

/// A `crossfade run` stopped as `stop` says while it holds blue after promotion, for a green
/// whose instances run once and then fail every start (a script that exits 1 once its marker
/// file exists), then started again with the same spec and state file; returns once the
/// restarted run is ready.
async fn restart_during_a_held_retirement(stop: Stop) -> Restarted {
    let held = stop_during_a_held_retirement(stop, GREEN_EXITS, &[]).await;
    let mut again = Crossfade::run(held.dir.path(), &held.spec_path);
    again.wait_ready(&held.admin, Duration::from_secs(30)).await;
    Restarted {
        dir: held.dir,
        admin: held.admin,
        run: again,
        listen: held.listen,
        blue_pids: held.blue_pids,
    }
}

/// A green's second start in [`stop_during_a_held_retirement`]: it exits at once.
const GREEN_EXITS: &str = "echo 'green cannot start again' >&2; exit 1";

/// A `crossfade run` stopped as [`restart_during_a_held_retirement`] says, for a green whose
/// instances run `again` (shell) from their second start on and a blue run with `blue_flags`
/// (sample-app flags); returns before any restart.
async fn stop_during_a_held_retirement(stop: Stop, again: &str, blue_flags: &[&str]) -> Held {
    let dir = temp_dir();
    let state = dir.path().join("state.json");
    let marker = dir.path().join("green-started-once");
    let script = format!(
        "if [ -e '{m}' ]; then {again}; fi; : > '{m}'; \
         exec '{bin}' sample-app --port \"$0\" --version v2",
        m = marker.display(),
        bin = crate::support::BIN
    );
    let green = App::version("v2")
        .set("command", json!("sh"))
        .set("args", json!(["-c", script, "{port}"]))
        .set(
            "readiness",
            json!({ "deadline": "5s", "interval": "100ms" }),
        );
    let mut blue = App::version("v1").flags(blue_flags.iter().copied());
    if stop == Stop::KillWithBlueDown {
        blue = blue.set("instances", json!(2));
    }
    let mut spec = Spec::new().blue(blue).green(green).state_file(&state);
    spec.json["rollout"]["steps"] =
        json!([{ "weight": 50, "hold": "1s" }, { "weight": 100, "hold": "1s" }]);
    spec.json["rollout"]["progress_deadline"] = json!("40s");
    spec.json["rollout"]["drain_timeout"] = json!("20s");
    let spec_path = spec.write(dir.path(), "spec.yaml");
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec_path);
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    let load = Load::start(LoadConfig::new(spec.listen()));
    wait_until(Duration::from_secs(30), "the 50% step", || async {
        let r = admin.rollout().await["rollout"].clone();
        (r["phase"] == "Progressing" && r["applied_bp"] == 5_000).then_some(())
    })
    .await;
    let blue_pids = pids_of(&read_json(&state)["active_pids"]);
    let green_pids = pids_of(&read_json(&state)["rollout"]["preview_pids"]);
    assert!(
        !blue_pids.is_empty() && !green_pids.is_empty(),
        "pids in the state file"
    );
    let slow = slow_requests_over_the_swap(&admin, spec.listen(), 4000).await;
    for pid in &green_pids {
        kill(Pid::from_raw(*pid as i32), Signal::SIGKILL).expect("kill green");
    }
    wait_until(Duration::from_secs(30), "blue held", || async {
        let r = admin.rollout().await["rollout"].clone();
        (r["retire_held"] == true).then_some(())
    })
    .await;
    drop(slow);
    load.stop().await;
    match stop {
        Stop::Term => {
            run.terminate(Duration::from_secs(30)).await;
        }
        Stop::Kill => run.kill_hard(),
        Stop::KillWithBlueDown => {
            kill(Pid::from_raw(run.pid() as i32), Signal::SIGSTOP).expect("freeze run");
            let victim = blue_pids[0];
            kill(Pid::from_raw(victim as i32), Signal::SIGKILL).expect("kill blue instance 0");
            wait_gone(&[victim], Duration::from_secs(30)).await;
            run.kill_hard();
        }
    }
    Held {
        dir,
        admin,
        spec_path,
        listen: spec.listen(),
        blue_pids,
    }
}

/// A `crossfade run` stopped by [`stop_during_a_held_retirement`].
struct Held {
    dir: tempfile::TempDir,
    admin: Admin,
    /// The spec both runs read.
    spec_path: std::path::PathBuf,
    /// The proxy's address.
    listen: std::net::SocketAddr,
    /// Blue's pids before the stop, in instance order.
    blue_pids: Vec<u32>,
}

/// A `crossfade run` restarted by [`restart_during_a_held_retirement`].
struct Restarted {
    /// The temporary directory of the spec, the state file and the logs.
    dir: tempfile::TempDir,
    admin: Admin,
    /// The restarted run, ready.
    run: Crossfade,
    /// The proxy's address.
    listen: std::net::SocketAddr,
    /// Blue's pids before the restart.
    blue_pids: Vec<u32>,
}

impl Restarted {
    /// Checks that blue serves again with the rollout rolled back for green's failed start, and
    /// that the route answers only blue, without errors; returns the restarted run's log.
    async fn blue_serves_again(mut self) -> String {
        let r = self.admin.rollout().await["rollout"].clone();
        let load = Load::start(LoadConfig::new(self.listen));
        load.wait_requests(40, Duration::from_secs(20)).await;
        let report = load.stop().await;
        let log = self.run.log();
        self.run.terminate(Duration::from_secs(15)).await;

        assert_eq!(r["phase"], "RolledBack", "{r:#}");
        assert_eq!(r["active"], "blue", "{r:#}");
        let message = r["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("green could not start") && message.contains("blue serves again"),
            "{r:#}"
        );
        assert!(report.total() >= 40, "{}", report.summary());
        assert_eq!(report.ok_from("v1"), report.total(), "{}", report.summary());
        log
    }
}

/// check34: a state file whose unfinished rollout promoted a green that cannot start here (its
/// `workdir` gone) is one `crossfade run` starts on, serving blue again (the fallback above);
/// `crossfade check` refused it (`state_file's active workload.workdir: ...`, exit 1). It now
/// says so as a warning, and `run` serves blue as it says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_warns_of_a_promoted_green_that_cannot_start_as_run_falls_back() {
    let held = stop_during_a_held_retirement(Stop::Kill, GREEN_EXITS, &[]).await;
    let state = held.dir.path().join("state.json");
    let mut doc = read_json(&state);
    let gone = held.dir.path().join("gone");
    doc["rollout"]["preview_workload"]["workdir"] = json!(gone);
    write_json(held.dir.path(), "state.json", &doc);
    let _ = std::fs::remove_file(held.dir.path().join("state.json.bak"));
    let spec_arg = held.spec_path.display().to_string();
    let out = run_to_end(["check", spec_arg.as_str()], Duration::from_secs(20)).await;
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    for words in [
        "warning: state_file's active workload.workdir",
        "blue, which it replaced, serves again",
    ] {
        assert!(out.stdout.contains(words), "{words}\n{}", out.stdout);
    }
    // Served by blue, as `check` said. (The spec's green, without the edited workdir, is another
    // green than the one rolled back, so the start rolls it out anew.)
    let mut again = Crossfade::run(held.dir.path(), &held.spec_path);
    again.wait_ready(&held.admin, Duration::from_secs(30)).await;
    let load = Load::start(LoadConfig::new(held.listen));
    load.wait_requests(20, Duration::from_secs(20)).await;
    let report = load.stop().await;
    let log = again.log();
    again.terminate(Duration::from_secs(15)).await;
    assert!(
        log.contains("green could not start") && log.contains("blue serves again"),
        "{log}"
    );
    assert!(report.ok_from("v1") >= 20, "{}", report.summary());
    assert_eq!(report.errors(), 0, "{}", report.summary());
}

/// DESIGN: a rollout never leaves a route with no healthy backend while one exists (session 32's
/// leftover). A restart while blue was held as the backup of a promoted green that could not
/// serve completed the rollout: it stopped blue, then failed to start green and exited 1, and
/// nothing served the route. Now blue, still running after the crash, is adopted and serves
/// again, and the rollout is recorded rolled back with green's start error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_during_a_held_retirement_keeps_blue_serving_when_green_cannot_start() {
    let restarted = restart_during_a_held_retirement(Stop::Kill).await;
    let blue_pids = restarted.blue_pids.clone();
    let log = restarted.blue_serves_again().await;
    // Still running after the crash: adopted, not started afresh.
    assert!(
        blue_pids
            .iter()
            .all(|pid| log.contains(&format!("pid {pid}"))),
        "blue's instances were not adopted: {blue_pids:?}; log:\n{log}"
    );
}

/// Session 37: the same crash while one of blue's two instances had no process (it waited for
/// its restart). Green cannot start, and blue serves again: its live instance is adopted (same
/// pid) and the missing one started beside it. Before, the fallback adopted blue only when every
/// instance ran, so it stopped the live one and started blue afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_during_a_held_retirement_with_a_blue_instance_down_adopts_the_other() {
    let restarted = restart_during_a_held_retirement(Stop::KillWithBlueDown).await;
    let (dead, live) = (restarted.blue_pids[0], restarted.blue_pids[1]);
    let log = restarted.run.log();
    assert!(
        pid_alive(live),
        "blue's live instance {live} adopted: {log}"
    );
    let state = restarted.dir.path().join("state.json");
    let started = wait_until(Duration::from_secs(30), "blue's instance 0 started", || {
        let pids = pids_of(&read_json(&state)["active_pids"]);
        let started = pids.iter().copied().find(|&p| p != live && p != 0);
        let both = pids.len() == 2 && pids.contains(&live) && started.is_some_and(pid_alive);
        std::future::ready(started.filter(|_| both))
    })
    .await;
    assert_ne!(started, dead);
    let note = restarted.admin.last_event("Adopted").await;
    for words in [
        format!("instance 1 (pid {live}"),
        "blue instance 0 had no process".to_owned(),
    ] {
        assert!(note.contains(&words), "{words:?} in {note}");
    }
    restarted.blue_serves_again().await;
}

/// A signal while the restart waits for the promoted green (which starts but never becomes
/// ready) stops what that start made, as any start does, and blue's instances that the restart
/// kept running as green's fallback too: the run exits without leaving a workload no run
/// supervises (check33: blue's instances, spared from the leftovers for the fallback, were left
/// running after the run exited). The state file keeps what the previous run left, so the next
/// start falls back to blue again (check33: the restart had saved the rollout completed, and
/// the next start, finding green active and nothing to fall back to, exited 1 with nothing
/// serving).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_while_the_restart_waits_for_the_promoted_green_stops_blue_and_the_next_start_falls_back(
) {
    let held = stop_during_a_held_retirement(Stop::Kill, "exec sleep 120", &[]).await;
    assert!(
        held.blue_pids.iter().all(|&pid| pid_alive(pid)),
        "blue runs on after the crash: {:?}",
        held.blue_pids
    );
    let mut again = Crossfade::run(held.dir.path(), &held.spec_path);
    wait_until(Duration::from_secs(30), "green's second start", || async {
        again
            .log()
            .contains("started sh workload=green")
            .then_some(())
    })
    .await;
    let _ = kill(Pid::from_raw(again.pid() as i32), Signal::SIGINT);
    again.wait_exit(Duration::from_secs(30)).await;
    let log = again.log();
    assert!(
        log.contains("stopped by a signal before green was ready"),
        "{log}"
    );
    wait_until(
        Duration::from_secs(15),
        "blue's instances stopped",
        || async {
            held.blue_pids
                .iter()
                .all(|&pid| !pid_alive(pid))
                .then_some(())
        },
    )
    .await;
    // The file still says what the previous run left (the recovery was not settled): the next
    // start recovers the same way and, green not starting again, serves blue, started afresh.
    let state = read_json(&held.dir.path().join("state.json"));
    assert_eq!(
        state["rollout"]["rollout"]["phase"], "Retiring",
        "{state:#}"
    );
    let restarted = Restarted {
        run: Crossfade::run(held.dir.path(), &held.spec_path),
        dir: held.dir,
        admin: held.admin,
        listen: held.listen,
        blue_pids: held.blue_pids,
    };
    let mut restarted = restarted;
    restarted
        .run
        .wait_ready(&restarted.admin, Duration::from_secs(30))
        .await;
    restarted.blue_serves_again().await;
}

/// A signal while that restart starts blue afresh (green could not start; blue was stopped
/// with the previous run) stops the start, and the error says so: before, it read `green could
/// not start (...), nor could blue, which it replaced: stopped by a signal ...`, blaming blue for
/// the operator's stop (check33).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_while_the_fallback_starts_blue_afresh_is_said_to_be_a_stop_not_a_failure() {
    let held =
        stop_during_a_held_retirement(Stop::Term, GREEN_EXITS, &["--unready-for", "3s"]).await;
    let mut again = Crossfade::run(held.dir.path(), &held.spec_path);
    wait_until(Duration::from_secs(30), "blue's fresh start", || async {
        let log = again.log();
        let fallback = log.find("green could not start")?;
        log[fallback..].contains("started ").then_some(())
    })
    .await;
    let _ = kill(Pid::from_raw(again.pid() as i32), Signal::SIGINT);
    again.wait_exit(Duration::from_secs(30)).await;
    let log = again.log();
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.contains("stopped by a signal before blue was ready"),
        "{log}"
    );
    assert!(!log.contains("nor could blue"), "{log}");
}

/// The same after a clean stop (SIGTERM), which stops blue with everything else: blue is started
/// afresh when green cannot start, rather than the run exiting with nothing to serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_during_a_held_retirement_starts_blue_again_when_green_cannot_start() {
    let restarted = restart_during_a_held_retirement(Stop::Term).await;
    let blue_pids = restarted.blue_pids.clone();
    restarted.blue_serves_again().await;
    assert!(
        blue_pids.iter().all(|&pid| !pid_alive(pid)),
        "{blue_pids:?}"
    );
}
