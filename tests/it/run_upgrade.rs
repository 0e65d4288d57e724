//! `crossfade run SPEC --upgrade-socket PATH`: `run` upgraded in place (README "Upgrading the
//! binary in place"). SIGUSR2 starts the binary again; the new process takes the listening
//! sockets and the state file's lock over the upgrade socket, adopts the active workload's running
//! instances, serves, and the old one drains and exits leaving the workloads running. Refused
//! while a rollout is in progress; a new process that fails leaves the old one serving and
//! supervising.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::support::child::wait_state;
use crate::support::{
    pid_alive, pids_of, read_json, temp_dir, wait_gone, wait_until, Admin, App, Crossfade, Spec,
};
use crate::upgrade::Traffic;

/// The bound on a wait for an event (ready, exited, restarted): each returns as soon as it happens.
const PATIENCE: Duration = Duration::from_secs(60);

/// A `crossfade run` with an upgrade socket, its blue (two instances) ready.
struct Setup {
    dir: tempfile::TempDir,
    spec: Spec,
    spec_path: PathBuf,
    state: PathBuf,
    admin: Admin,
    old: Crossfade,
    /// Blue's pids once ready, as the state file saved them.
    pids: Vec<u32>,
}

impl Setup {
    async fn start() -> Setup {
        let dir = temp_dir();
        let state = dir.path().join("state.json");
        let socket = dir.path().join("upgrade.sock");
        let blue = App::version("v1-up")
            .set("name", json!("v1-up"))
            .set("instances", json!(2));
        let spec = Spec::new().blue(blue).state_file(&state);
        let spec_path = spec.write(dir.path(), "spec.yaml");
        let args = [
            OsStr::new("run"),
            spec_path.as_os_str(),
            OsStr::new("--upgrade-socket"),
            socket.as_os_str(),
        ];
        let mut old = Crossfade::spawn(dir.path(), "run.log", args);
        let admin = Admin::new(spec.admin());
        old.wait_ready(&admin, PATIENCE).await;
        let pids = wait_state(&state, PATIENCE, "blue's two pids", |s| {
            let pids = pids_of(&s["active_pids"]);
            (pids.len() == 2).then_some(pids)
        })
        .await;
        wait_until(Duration::from_secs(10), "the upgrade socket", || async {
            socket.exists().then_some(())
        })
        .await;
        Setup {
            dir,
            spec,
            spec_path,
            state,
            admin,
            old,
            pids,
        }
    }

    /// SIGUSR2 to the old process; the new process it started (stopped with SIGKILL when the
    /// returned guard drops, should the test fail before it stops it).
    async fn sigusr2(&self) -> Reap {
        let old = self.old.pid();
        kill(Pid::from_raw(old as i32), Signal::SIGUSR2).expect("SIGUSR2");
        // As the old process logs it (it may be gone, or not its child any more, by the time a
        // poll of its children would see it).
        let new = wait_until(Duration::from_secs(10), "the new process", || async {
            let log = self.old.log();
            let line = log.lines().find(|l| l.contains("SIGUSR2: started"))?;
            let pid = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("pid="))?;
            pid.trim_matches(|c: char| !c.is_ascii_digit()).parse().ok()
        })
        .await;
        Reap(new)
    }

    fn log(&self) -> String {
        self.old.log()
    }
}

/// Stops a process this test started indirectly (SIGUSR2's new process), and what it runs, when
/// dropped.
struct Reap(u32);

impl Reap {
    /// SIGTERM, then waits until it has exited (it stops its workloads first).
    async fn terminate(&self) {
        let _ = kill(Pid::from_raw(self.0 as i32), Signal::SIGTERM);
        wait_gone(&[self.0], PATIENCE).await;
    }
}

impl Drop for Reap {
    fn drop(&mut self) {
        if pid_alive(self.0) {
            let _ = kill(Pid::from_raw(self.0 as i32), Signal::SIGTERM);
        }
    }
}

/// Requests each on a new connection (HTTP/1.1, `Connection: close`), one after the other on
/// each of `tasks` tasks: a listener closed or not accepted for a moment fails them.
struct Fresh {
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    ok: Arc<AtomicU64>,
    errors: Arc<Mutex<Vec<String>>>,
    /// The `X-Instance` of each answer (`v1-<port>`), once each.
    instances: Arc<Mutex<std::collections::BTreeSet<String>>>,
}

impl Fresh {
    fn start(target: SocketAddr, tasks: usize) -> Fresh {
        let (stop, rx) = watch::channel(false);
        let ok = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let instances = Arc::new(Mutex::new(std::collections::BTreeSet::new()));
        let tasks = (0..tasks)
            .map(|_| {
                let (ok, errors, stop) = (ok.clone(), errors.clone(), rx.clone());
                let instances = instances.clone();
                tokio::spawn(async move {
                    while !*stop.borrow() {
                        match one_request(target).await {
                            Ok(instance) => {
                                instances.lock().unwrap().insert(instance);
                                ok.fetch_add(1, Ordering::Relaxed)
                            }
                            Err(e) => {
                                errors.lock().unwrap().push(e);
                                0
                            }
                        };
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                })
            })
            .collect();
        Fresh {
            stop,
            tasks,
            ok,
            errors,
            instances,
        }
    }

    /// Stops, asserting that every request was answered 200; returns how many were.
    async fn stop_without_errors(self) -> u64 {
        let _ = self.stop.send(true);
        for task in self.tasks {
            task.await.expect("a request task panicked");
        }
        let errors = self.errors.lock().unwrap().clone();
        assert!(
            errors.is_empty(),
            "{} failed: {:?}",
            errors.len(),
            &errors[..errors.len().min(5)]
        );
        self.ok.load(Ordering::Relaxed)
    }
}

/// One GET on a new connection; the answering instance (its `X-Instance`, empty without one), or
/// `Err` unless it is answered 200.
async fn one_request(target: SocketAddr) -> Result<String, String> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(target)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        stream
            .write_all(b"GET /api HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut answer = Vec::new();
        stream
            .read_to_end(&mut answer)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let head = String::from_utf8_lossy(&answer[..answer.len().min(40)]).into_owned();
        if !head.starts_with("HTTP/1.1 200") {
            return Err(format!("answered {head:?}"));
        }
        let text = String::from_utf8_lossy(&answer).into_owned();
        let instance = text.lines().find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("x-instance")
                .then(|| value.trim().to_owned())
        });
        Ok(instance.unwrap_or_default())
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| "no answer within 10 s".to_owned())?
}

/// The workload rolled out to: `v2-up`.
fn green() -> Value {
    App::version("v2-up").set("name", json!("v2-up")).json
}

/// The reasons of the run's events, in order.
fn reasons(status: &Value) -> Vec<String> {
    let events = status["events"].as_array().cloned().unwrap_or_default();
    events
        .iter()
        .filter_map(|e| e["reason"].as_str().map(str::to_owned))
        .collect()
}

/// Whether `log` has a line holding every one of `words`.
fn logged(log: &str, words: &[&str]) -> bool {
    log.lines().any(|l| words.iter().all(|w| l.contains(w)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_upgraded_by_sigusr2_under_load_loses_no_request_and_keeps_its_workload() {
    let mut setup = Setup::start().await;
    let listen = setup.spec.listen();
    // Keep-alive HTTP/1.1 and h2c clients, and requests each on a new connection.
    let traffic = Traffic::start(listen, 2);
    let fresh = Fresh::start(listen, 2);
    traffic.more(50).await;
    // A few routing-table generations in the old process (each write publishes one), so that a
    // new process numbering from 1 again would be seen going back.
    let all_blue = json!({ "blue": "100%", "green": "0%" });
    for _ in 0..5 {
        let (code, answer) = setup.admin.put("/routes/web/weights", &all_blue).await;
        assert_eq!(code, 200, "{answer}");
    }
    let old_generation = setup.admin.status().await["generation"].as_u64();
    assert!(old_generation >= Some(6), "{old_generation:?}");

    let new = setup.sigusr2().await;
    let exited = setup.old.wait_exit(PATIENCE).await;
    assert!(exited.success(), "the old process exits 0: {exited:?}");
    assert!(pid_alive(new.0), "the new process serves");
    // Session 35: generations keep rising across the upgrade (they started at 1 again).
    let status = setup.admin.status().await;
    assert_eq!(
        status["pid"],
        json!(new.0),
        "the new process answers: {status}"
    );
    assert!(
        status["generation"].as_u64() > old_generation,
        "generation {} after the old process's {old_generation:?}",
        status["generation"]
    );
    traffic.more(100).await;
    let fresh = fresh.stop_without_errors().await;
    assert!(fresh > 0, "requests on new connections were sent");

    // The same instances serve: adopted, not started again, and not stopped by the old process.
    for pid in &setup.pids {
        assert!(pid_alive(*pid), "blue instance {pid} runs on");
    }
    let state = read_json(&setup.state);
    assert_eq!(pids_of(&state["active_pids"]), setup.pids, "{state:#}");
    // The child journal is kept (the new process records its spawns there) and names them.
    let journal = std::fs::read_to_string(setup.dir.path().join("state.json.children"))
        .expect("the child journal is kept");
    for pid in &setup.pids {
        assert!(journal.contains(&format!("\"pid\": {pid}")), "{journal}");
    }
    assert!(reasons(&state).iter().any(|r| r == "Upgraded"), "{state:#}");
    let status = setup.admin.rollout().await;
    assert_eq!(status["active_version"], "v1-up", "{status:#}");
    assert_eq!(status["running"], false, "{status:#}");
    let upgraded: Vec<&Value> = (status["events"].as_array().into_iter().flatten())
        .filter(|e| e["reason"] == "Upgraded")
        .collect();
    assert_eq!(upgraded.len(), 1, "{status:#}");
    let note = upgraded[0]["message"].as_str().unwrap_or_default();
    assert!(
        note.contains(&format!("pid {}", setup.old.pid())),
        "names the old process: {note}"
    );
    for pid in &setup.pids {
        assert!(note.contains(&format!("pid {pid}")), "{note}");
    }
    // `crossfade status`, as an operator reads it from the new process.
    let admin = setup.spec.admin().to_string();
    let shown = crate::support::child::run_to_end(["status", "--admin", &admin], PATIENCE).await;
    assert_eq!(shown.code, Some(0), "{shown:?}");
    for word in ["v1-up", "Upgraded"] {
        assert!(shown.stdout.contains(word), "{word} in {}", shown.stdout);
    }
    let log = setup.log();
    assert!(logged(&log, &["binary upgrade", "took over from"]), "{log}");
    assert!(
        !log.contains("stopped v1-up"),
        "the old one stopped nothing: {log}"
    );

    // The new process supervises and steers: a rollout started now completes.
    setup.admin.start_rollout(&green()).await;
    let done = wait_until(PATIENCE, "the rollout to v2-up to end", || async {
        let status = setup.admin.rollout().await;
        (status["running"] == false && status["rollout"]["phase"] != Value::Null).then_some(status)
    })
    .await;
    assert_eq!(done["rollout"]["phase"], "Completed", "{done:#}");
    assert_eq!(done["active_version"], "v2-up", "{done:#}");
    // Not one request lost from before the upgrade to the end of the rollout.
    let answered = traffic.stop_without_errors().await;
    println!("RUN UPGRADE answered {answered} keep-alive/h2c requests, {fresh} on new connections");
    new.terminate().await;
    wait_gone(&setup.pids, Duration::from_secs(10)).await;
    drop(setup.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_during_a_rollout_is_refused_and_the_rollout_goes_on() {
    let mut setup = Setup::start().await;
    // A rollout that takes a while: its steps hold 2 s each.
    let body = json!({ "green": green(), "rollout": { "hold": "2s" } });
    let (code, answer) = setup.admin.json("POST", "/rollout", Some(&body)).await;
    assert_eq!(code, 202, "{answer}");
    let traffic = Traffic::start(setup.spec.listen(), 1);
    wait_until(PATIENCE, "the rollout to progress", || async {
        let status = setup.admin.rollout().await;
        (status["rollout"]["phase"] == "Progressing").then_some(())
    })
    .await;

    let new = setup.sigusr2().await;
    wait_gone(&[new.0], PATIENCE).await;
    let log = setup.log();
    assert!(
        logged(&log, &["binary upgrade refused", "rollout 1"]),
        "the old process says why: {log}"
    );
    assert!(
        logged(
            &log,
            &["the new process cannot start", "refused", "rollout 1"]
        ),
        "the new process says why it exits: {log}"
    );
    wait_until(
        Duration::from_secs(10),
        "the old process to say it serves on",
        || async {
            logged(&setup.log(), &["the new process exited", "keeps serving"]).then_some(())
        },
    )
    .await;
    assert!(setup.old.try_exit().is_none(), "the old process serves on");
    let done = wait_until(PATIENCE, "the rollout to end", || async {
        let status = setup.admin.rollout().await;
        (status["running"] == false).then_some(status)
    })
    .await;
    assert_eq!(done["rollout"]["phase"], "Completed", "{done:#}");
    traffic.stop_without_errors().await;
    setup.old.terminate(PATIENCE).await;
}

/// A new process with the same arguments, run by hand (not by SIGUSR2): it prints why it
/// refuses on stderr and exits 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_process_started_by_hand_during_a_rollout_says_why_and_exits_1() {
    let mut setup = Setup::start().await;
    let body = json!({ "green": green(), "rollout": { "hold": "2s" } });
    let (code, answer) = setup.admin.json("POST", "/rollout", Some(&body)).await;
    assert_eq!(code, 202, "{answer}");
    let socket = setup.dir.path().join("upgrade.sock");
    let finished = crate::support::child::run_to_end(
        [
            OsStr::new("run"),
            setup.spec_path.as_os_str(),
            OsStr::new("--upgrade-socket"),
            socket.as_os_str(),
        ],
        PATIENCE,
    )
    .await;
    assert_eq!(finished.code, Some(1), "{finished:?}");
    assert!(
        finished.stderr.contains("refused") && finished.stderr.contains("rollout 1"),
        "{}",
        finished.stderr
    );
    assert!(setup.old.try_exit().is_none(), "the old process serves on");
    setup.old.terminate(PATIENCE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_upgrade_leaves_the_old_process_serving_and_supervising() {
    let mut setup = Setup::start().await;
    // The new process reads a spec whose blue changed: it refuses after it connected (the old
    // process froze its controller for it), before it serves.
    let mut edited = setup.spec.clone();
    edited.json["blue"]["args"]
        .as_array_mut()
        .expect("blue's args")
        .extend([json!("--error-rate"), json!("0")]);
    edited.write(setup.dir.path(), "spec.yaml");
    let traffic = Traffic::start(setup.spec.listen(), 2);
    let new = setup.sigusr2().await;
    wait_gone(&[new.0], PATIENCE).await;
    let log = setup.log();
    assert!(
        logged(&log, &["the new process cannot start", "blue"]),
        "{log}"
    );
    assert!(setup.old.try_exit().is_none(), "the old process serves on");

    // Supervision is back: an instance killed now is started again.
    let victim = setup.pids[0];
    kill(Pid::from_raw(victim as i32), Signal::SIGKILL).expect("kill blue instance 0");
    let restarted = wait_state(&setup.state, PATIENCE, "instance 0 restarted", |s| {
        let pids = pids_of(&s["active_pids"]);
        (pids.len() == 2 && !pids.contains(&victim)).then_some(pids)
    })
    .await;
    assert!(restarted.contains(&setup.pids[1]), "{restarted:?}");
    let log = setup.log();
    assert!(
        logged(&log, &["binary upgrade failed", "supervised again"]),
        "{log}"
    );
    // And rollouts start again.
    setup.admin.start_rollout(&green()).await;
    let done = wait_until(PATIENCE, "the rollout to end", || async {
        let status = setup.admin.rollout().await;
        (status["running"] == false && status["rollout"]["phase"] != Value::Null).then_some(status)
    })
    .await;
    assert_eq!(done["rollout"]["phase"], "Completed", "{done:#}");
    traffic.stop_without_errors().await;
    setup.old.terminate(PATIENCE).await;
}

/// A spec that does not parse: the new process fails before it connects; the old one serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_spec_leaves_the_old_process_serving() {
    let mut setup = Setup::start().await;
    std::fs::write(&setup.spec_path, "listen: [broken\n").expect("break the spec");
    let new = setup.sigusr2().await;
    wait_gone(&[new.0], PATIENCE).await;
    wait_until(
        Duration::from_secs(10),
        "the old process to say it serves on",
        || async {
            logged(&setup.log(), &["the new process exited", "keeps serving"]).then_some(())
        },
    )
    .await;
    assert!(setup.old.try_exit().is_none(), "the old process serves on");
    let (code, _) = setup
        .admin
        .json("POST", "/rollout", Some(&json!({ "green": green() })))
        .await;
    assert_eq!(code, 202, "rollouts are accepted");
    setup.old.terminate(PATIENCE).await;
}

/// While a new process holds the handover (connected, the sockets and routes received, not ready
/// yet: a fake one here, this test on the upgrade socket), the old process starts no rollout and
/// takes no command (503 with `Retry-After`, naming the handover) and restarts no instance that
/// exits; once it goes away without saying ready, rollouts are accepted and the instance held
/// meanwhile is restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_handover_rollouts_and_restarts_wait_and_come_back_when_it_fails() {
    let setup = Setup::start().await;
    let stream = fake_successor(&setup).await;

    let body = json!({ "green": green() });
    for (path, body) in [("/rollout", Some(&body)), ("/rollout/pause", None)] {
        let (status, headers, answer) = setup
            .admin
            .request_with("POST", path, body, &[])
            .await
            .expect("the admin API answers");
        assert_eq!(status, 503, "POST {path}: {answer}");
        assert_eq!(
            headers.get("retry-after").and_then(|v| v.to_str().ok()),
            Some("1"),
            "POST {path}"
        );
        assert!(answer.contains("binary upgrade"), "POST {path}: {answer}");
    }
    let victim = setup.pids[0];
    kill(Pid::from_raw(victim as i32), Signal::SIGKILL).expect("kill blue instance 0");
    // Not restarted while held: its pid stays in the state file.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        pids_of(&read_json(&setup.state)["active_pids"]).contains(&victim),
        "restarted during the handover: {}",
        setup.log()
    );

    // The new process goes away without saying ready: all comes back.
    drop(stream);
    let restarted = wait_state(&setup.state, PATIENCE, "instance 0 restarted", |s| {
        let pids = pids_of(&s["active_pids"]);
        (pids.len() == 2 && !pids.contains(&victim)).then_some(pids)
    })
    .await;
    assert!(restarted.contains(&setup.pids[1]), "{restarted:?}");
    let traffic = Traffic::start(setup.spec.listen(), 2);
    setup.admin.start_rollout(&green()).await;
    let done = wait_until(PATIENCE, "the rollout to end", || async {
        let status = setup.admin.rollout().await;
        (status["running"] == false && status["rollout"]["phase"] != Value::Null).then_some(status)
    })
    .await;
    assert_eq!(done["rollout"]["phase"], "Completed", "{done:#}");
    traffic.stop_without_errors().await;
    let mut old = setup.old;
    old.terminate(PATIENCE).await;
}

/// SIGTERM to the old process while a new one holds the handover (a fake one here: it took the
/// sockets and routes): the new process adopts the workload and serves on once the old one is
/// gone, as the proxy's does, so the old one drains and exits without stopping the workload
/// under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_process_stopped_during_the_handover_leaves_the_workload_to_the_new_one() {
    let mut setup = Setup::start().await;
    let stream = fake_successor(&setup).await;

    let exit = setup.old.terminate(PATIENCE).await;
    assert!(exit.success(), "{exit}: {}", setup.log());
    for pid in &setup.pids {
        assert!(
            pid_alive(*pid),
            "instance {pid} was stopped; it must be left to the new process: {}",
            setup.log()
        );
    }
    let log = setup.log();
    assert!(logged(&log, &["SIGTERM during a binary upgrade"]), "{log}");
    // No new process adopts them here: stopped by the test.
    drop(stream);
    for pid in &setup.pids {
        let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGTERM);
    }
    wait_gone(&setup.pids, Duration::from_secs(10)).await;
}

/// A fake new process on `setup`'s upgrade socket: connected, it has read the sockets' byte
/// (their descriptors dropped with it) and the routes' line, so the old process has frozen its
/// controller; the connection, held open until dropped. Blocking reads on a thread of their own,
/// bounded by a read timeout (an async read here hung about one run in three, cause not found).
async fn fake_successor(setup: &Setup) -> std::os::unix::net::UnixStream {
    let socket = setup.dir.path().join("upgrade.sock");
    let (stream, line) = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let stream = std::os::unix::net::UnixStream::connect(&socket)
            .expect("connect to the upgrade socket");
        stream
            .set_read_timeout(Some(PATIENCE))
            .expect("a read timeout");
        let mut reader = std::io::BufReader::new(stream);
        let mut line = String::new();
        let read = reader.read_line(&mut line).map(|_| line);
        (reader.into_inner(), read)
    })
    .await
    .expect("the reading thread");
    let line = line.unwrap_or_else(|e| panic!("no routes: {e}: {}", setup.log()));
    assert!(line.contains("\"routes\""), "{line:?}");
    stream
}

/// `CROSSFADE_UPGRADE_SOCKET` is `crossfade proxy`'s. Until session 35 `run` read it too: a
/// user who had exported it for a proxy got `run --exit-after-rollout` refused as a usage error
/// (`--exit-after-rollout cannot be used with --upgrade-socket`, a flag never given), and a
/// plain `run` of a spec without `state_file` refused for want of one. Now `run` ignores it,
/// says so in its log, and binds nothing at that path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxys_upgrade_socket_variable_does_not_change_run() {
    let dir = temp_dir();
    let socket = dir.path().join("proxy-upgrade.sock");
    let spec = Spec::new();
    let spec_path = spec.write(dir.path(), "spec.yaml");
    let socket_text = socket.to_string_lossy().into_owned();
    let env = [("CROSSFADE_UPGRADE_SOCKET", socket_text.as_str())];
    let args = [
        OsStr::new("run"),
        spec_path.as_os_str(),
        OsStr::new("--exit-after-rollout"),
    ];
    let finished = crate::support::child::run_to_end_with(args, &env, PATIENCE).await;
    assert_eq!(finished.code, Some(0), "{finished:?}");
    assert!(
        finished.stdout.contains("no rollout ran, exit 0"),
        "{finished:?}"
    );
    assert!(
        logged(&finished.stderr, &["CROSSFADE_UPGRADE_SOCKET", "ignored"]),
        "{finished:?}"
    );
    assert!(!socket.exists(), "nothing bound at the proxy's socket path");
}

/// A `crossfade run --upgrade-socket` whose blue has two instances: the first to start runs the
/// sample app with `sick`'s flags, the other without (roles taken with `mkdir`, which one
/// instance alone wins). For the health view over an upgrade. Or any `sh -c` script of blue's
/// ([`OneSick::with_script`]).
struct OneSick {
    dir: tempfile::TempDir,
    state: PathBuf,
    socket: PathBuf,
    spec: Spec,
    admin: Admin,
    old: Crossfade,
}

impl OneSick {
    /// Starts it, `edit` applied to the spec, and waits until it serves.
    async fn start(sick: &str, edit: impl FnOnce(&mut Spec)) -> OneSick {
        let script = |dir: &std::path::Path| {
            let bin = crate::support::BIN;
            format!(
                "if mkdir '{r}' 2>/dev/null; then exec '{bin}' sample-app --port \"$0\" --version \
                 v1 {sick}; fi; exec '{bin}' sample-app --port \"$0\" --version v1",
                r = dir.join("sick-instance").display()
            )
        };
        OneSick::with_script(script, edit).await
    }

    /// Starts it with blue's two instances running `sh -c` with the script `script` returns for
    /// the test's directory (its port as `$0`), `edit` applied to the spec, and waits until it
    /// serves.
    async fn with_script(
        script: impl FnOnce(&std::path::Path) -> String,
        edit: impl FnOnce(&mut Spec),
    ) -> OneSick {
        let dir = temp_dir();
        let state = dir.path().join("state.json");
        let socket = dir.path().join("upgrade.sock");
        let script = script(dir.path());
        let blue = App::version("v1")
            .set("command", json!("sh"))
            .set("args", json!(["-c", script, "{port}"]))
            .set("instances", json!(2));
        let mut spec = Spec::new().blue(blue).state_file(&state);
        edit(&mut spec);
        let spec_path = spec.write(dir.path(), "spec.yaml");
        let args = [
            OsStr::new("run"),
            spec_path.as_os_str(),
            OsStr::new("--upgrade-socket"),
            socket.as_os_str(),
        ];
        let mut old = Crossfade::spawn(dir.path(), "run.log", args);
        let admin = Admin::new(spec.admin());
        old.wait_ready(&admin, PATIENCE).await;
        OneSick {
            dir,
            state,
            socket,
            spec,
            admin,
            old,
        }
    }

    /// The first of blue's endpoints in `GET /status` for which `pick` holds.
    async fn endpoint(&self, pick: impl Fn(&Value) -> bool) -> Option<Value> {
        let status = self.admin.status().await;
        let health = status["routes"][0]["blue"]["health"].as_array().cloned();
        health.into_iter().flatten().find(|h| pick(h))
    }

    /// A SIGUSR2 upgrade while requests on new connections run, before, during and after it
    /// (50 answered by the new process at least): each must get 200. Returns the new process and
    /// the instances that answered.
    async fn upgrade_under_load(&mut self) -> (Reap, std::collections::BTreeSet<String>) {
        wait_until(Duration::from_secs(10), "the upgrade socket", || async {
            self.socket.exists().then_some(())
        })
        .await;
        let fresh = Fresh::start(self.spec.listen(), 2);
        let old = self.old.pid();
        kill(Pid::from_raw(old as i32), Signal::SIGUSR2).expect("SIGUSR2");
        let exited = self.old.wait_exit(PATIENCE).await;
        assert!(exited.success(), "the old process exits 0: {exited:?}");
        let new = self.admin.status().await["pid"]
            .as_u64()
            .unwrap_or_default() as u32;
        let new = Reap(new);
        assert_ne!(new.0, old, "the new process serves");
        let answered = fresh.ok.load(Ordering::Relaxed);
        wait_until(Duration::from_secs(30), "50 more answers", || async {
            (fresh.ok.load(Ordering::Relaxed) >= answered + 50).then_some(())
        })
        .await;
        let _ = fresh.stop.send(true);
        for task in fresh.tasks {
            task.await.expect("a request task panicked");
        }
        let errors = fresh.errors.lock().unwrap().clone();
        assert!(
            errors.is_empty(),
            "{} failed: {:?}\n{}",
            errors.len(),
            &errors[..errors.len().min(5)],
            self.old.log()
        );
        let instances = fresh.instances.lock().unwrap().clone();
        println!(
            "RUN UPGRADE HEALTH: {} requests on new connections, answered by {instances:?}",
            fresh.ok.load(Ordering::Relaxed)
        );
        (new, instances)
    }

    /// Stops the new process, and waits until blue's instances are gone.
    async fn stop(self, new: Reap) {
        let mut instances = pids_of(&read_json(&self.state)["active_pids"]);
        new.terminate().await;
        instances.retain(|p| pid_alive(*p));
        wait_gone(&instances, Duration::from_secs(10)).await;
        drop(self.dir);
    }
}

/// The health view over a `crossfade run` upgrade (session 35; the proxy's own upgrade tests
/// cover the calls, `upgrade::an_ejected_endpoint_stays_ejected_after_an_upgrade`). Blue's sick
/// instance answers every request but `/healthz` with 500 (its readiness passes, so it is
/// adopted); outlier detection ejects it for 5 minutes. Requests on new connections before,
/// during and after a SIGUSR2 upgrade all get 200: the new process, which adopts the same two
/// instances, takes the ejection over (its time left and its count) and sends the ejected
/// instance nothing in the gap. This test found that the old process could kill the healthy
/// instance as it exited (2 upgrades of 8; now `supervisor::Owned` lets a released instance run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_ejected_before_a_run_upgrade_gets_no_request_from_the_new_process() {
    let mut run = OneSick::start("--error-rate 100%", |spec| {
        spec.json["route"]["outlier"] =
            json!({ "consecutive_5xx": 3, "base_ejection": "5m", "max_ejection": "10m" });
    })
    .await;
    let listen = run.spec.listen();
    let ejected = |h: &Value| h["ejected_for_ms"].as_u64().is_some();
    let before = wait_until(PATIENCE, "the sick instance ejected", || async {
        let _ = one_request(listen).await;
        run.endpoint(ejected).await
    })
    .await;
    let (new, _) = run.upgrade_under_load().await;
    let after = (run.endpoint(ejected).await)
        .unwrap_or_else(|| panic!("still ejected after the upgrade: {}", run.old.log()));
    assert_eq!(after["endpoint"], before["endpoint"], "{after}");
    assert_eq!(after["ejections"], before["ejections"], "{after}");
    run.stop(new).await;
}

/// The same for active health checks (`route.health`): blue's sick instance fails `/healthz`
/// from 1 s after its start on, while its readiness (`/api`) passes, so it is adopted; the
/// checks mark it down. No request reaches it before, during or after the upgrade: the new
/// process holds it out until a probe of its own passes, which none does, and takes over
/// the rest, served by the healthy instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_down_by_health_checks_before_a_run_upgrade_gets_no_request_from_the_new_process(
) {
    let mut run = OneSick::start("--fail-health-after 1s", |spec| {
        spec.json["blue"]["readiness"]["path"] = json!("/api");
        spec.json["route"]["health"] =
            json!({ "path": "/healthz", "interval": "500ms", "timeout": "500ms", "fall": 2, "rise": 1 });
    })
    .await;
    let down = |h: &Value| h["checked_up"] == false;
    let sick = wait_until(PATIENCE, "the sick instance down", || async {
        run.endpoint(down).await
    })
    .await;
    let port = sick["endpoint"].as_str().and_then(|e| e.rsplit(':').next());
    let sick_instance = format!("v1-{}", port.expect("the sick endpoint's port"));
    let (new, answered) = run.upgrade_under_load().await;
    assert!(
        !answered.contains(&sick_instance),
        "{sick_instance} answered: {answered:?}\n{}",
        run.old.log()
    );
    assert_eq!(
        answered.len(),
        1,
        "the healthy instance served: {answered:?}"
    );
    let after = run.endpoint(down).await;
    assert_eq!(
        after.map(|h| h["endpoint"].clone()),
        Some(sick["endpoint"].clone()),
        "still down after the upgrade"
    );
    run.stop(new).await;
}

/// An instance failing its readiness probe does not block a `crossfade run` upgrade (runleft35's
/// leftover: the new process refused to adopt it, "not adopting v1: ... not ready", and the old
/// one served on: one sick instance blocked every upgrade until it recovered). The new process
/// adopts it not ready: without `route.health` (so only readiness judges it) it takes no request
/// from the new process, and once its `readiness.deadline` has passed it is stopped and started
/// again (`ActiveNotReady`); the restart is healthy here, and serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_failing_readiness_does_not_block_a_run_upgrade_and_the_new_process_restarts_it(
) {
    let mut run = OneSick::start("--fail-health-after 1s", |spec| {
        spec.json["blue"]["readiness"]["deadline"] = json!("10s");
    })
    .await;
    let listen = run.spec.listen();
    // Which instance is sick: the one whose `/healthz` answers 503 (its `/api` answers 200).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut instances = std::collections::BTreeSet::new();
    while instances.len() < 2 {
        instances.insert(
            one_request(listen)
                .await
                .expect("served before the upgrade"),
        );
    }
    let mut sick = None;
    for name in &instances {
        let port: u16 = name
            .rsplit('-')
            .next()
            .and_then(|p| p.parse().ok())
            .expect(name);
        if healthz(SocketAddr::from(([127, 0, 0, 1], port))).await != 200 {
            sick = Some(name.clone());
        }
    }
    let sick = sick.expect("one instance fails /healthz");
    let (new, _) = run.upgrade_under_load().await;
    let log = run.old.log();
    assert!(logged(&log, &["adopted not ready"]), "{log}");
    // Withdrawn by the new process until its restart: within the 10 s deadline.
    for _ in 0..30 {
        let answered = one_request(listen).await.expect("served after the upgrade");
        assert_ne!(
            answered, sick,
            "the instance adopted not ready got a request"
        );
    }
    // The new process stops it at its deadline and starts it again; the restart serves.
    let message = wait_until(PATIENCE, "an ActiveNotReady event", || async {
        let events = crate::supervise::events(&run.admin).await;
        events
            .into_iter()
            .find(|(r, _)| r == "ActiveNotReady")
            .map(|(_, m)| m)
    })
    .await;
    // Its deadline counted from its adoption: no restart of this process's came before.
    assert!(
        message.contains(
            " not ready within its readiness deadline 10s after it was adopted not ready (last probe: "
        ),
        "{message}"
    );
    wait_until(PATIENCE, "the restarted instance answering", || async {
        (one_request(listen).await.ok()? == sick).then_some(())
    })
    .await;
    run.stop(new).await;
}

/// A [`OneSick::with_script`] run whose blue runs the sample app as `version`, unless the file
/// `crash` exists (then a start exits 1 at once); once both instances served, the file is made
/// and instance 1 killed, so that it crash-loops: returned after its fourth exit (the kill and
/// three restarts, 0.5, 1 and 2 s apart), when its next restart is 4 s away. With blue's two
/// pids as they were.
async fn one_crash_looping(version: &str) -> (OneSick, PathBuf, Vec<u32>) {
    let run = OneSick::with_script(
        |dir| {
            let (bin, crash) = (crate::support::BIN, dir.join("crash"));
            format!(
                "if [ -e '{}' ]; then exit 1; fi; exec '{bin}' sample-app --port \"$0\" \
                 --version {version}",
                crash.display()
            )
        },
        |_| {},
    )
    .await;
    let crash = run.dir.path().join("crash");
    let pids = wait_state(&run.state, PATIENCE, "blue's two pids", |s| {
        let pids = pids_of(&s["active_pids"]);
        (pids.len() == 2).then_some(pids)
    })
    .await;
    std::fs::write(&crash, "").expect("the crash file");
    kill(Pid::from_raw(pids[1] as i32), Signal::SIGKILL).expect("kill blue instance 1");
    wait_until(PATIENCE, "four exits of instance 1", || async {
        let events = crate::supervise::events(&run.admin).await;
        let exits = (events.iter())
            .filter(|(r, m)| r == "ActiveExited" && m.contains("instance 1"))
            .count();
        (exits >= 4).then_some(())
    })
    .await;
    (run, crash, pids)
}

/// Waits until blue's two instances run again, instance 1 started anew (not `before[1]`), and
/// asserts that what runs of `version` is exactly what the state file and the child journal of
/// `run` record; blue's pids then.
async fn both_running_as_recorded(run: &OneSick, version: &str, before: &[u32]) -> Vec<u32> {
    let now = wait_state(&run.state, PATIENCE, "instance 1 started again", |s| {
        let now = pids_of(&s["active_pids"]);
        let started = now.len() == 2 && now[1] != 0 && now[1] != before[1] && pid_alive(now[1]);
        started.then_some(now)
    })
    .await;
    let listen = run.spec.listen();
    wait_until(PATIENCE, "both instances answering", || async {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..20 {
            seen.insert(one_request(listen).await.ok()?);
        }
        (seen.len() == 2).then_some(())
    })
    .await;
    let recorded: std::collections::BTreeSet<u32> = now.iter().copied().collect();
    let running = wait_until(PATIENCE, "no other process of blue", || async {
        let running: std::collections::BTreeSet<u32> = crate::support::processes_with_arg(version)
            .into_iter()
            .collect();
        (running == recorded).then_some(running)
    })
    .await;
    assert_eq!(
        running, recorded,
        "what runs is what the state file records"
    );
    let journal = run.dir.path().join("state.json.children");
    crate::crash::wait_journal(&journal, &recorded, "blue's instances").await;
    now
}

/// An instance with no process at the takeover (closing35, "Left"): it crash-loops under the old
/// process, which waits out its restart backoff, when a SIGUSR2 upgrade comes. Until session 36
/// the new process refused the upgrade (`not all running as the child journal records them`)
/// and the old one served on. Now the upgrade goes through with no request failing: the new
/// process adopts the running instance (same pid), holds the missing one's endpoint out, and
/// starts it itself once the old process has handed over, restarting it with backoff while it
/// still crashes; once its command works again it serves, and what runs is exactly what the
/// state file and the child journal record (no second copy of it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_waiting_for_its_restart_does_not_block_a_run_upgrade_and_the_new_process_starts_it(
) {
    let version = "v1-backoff";
    let (mut run, crash, pids) = one_crash_looping(version).await;
    let (new, answered) = run.upgrade_under_load().await;
    assert_eq!(
        answered.len(),
        1,
        "instance 0 alone served: {answered:?}\n{}",
        run.old.log()
    );
    let upgraded = wait_until(PATIENCE, "the Upgraded event", || async {
        let events = crate::supervise::events(&run.admin).await;
        events
            .into_iter()
            .find(|(r, _)| r == "Upgraded")
            .map(|(_, m)| m)
    })
    .await;
    assert!(
        upgraded.contains(&format!("(pid {}", pids[0])) && upgraded.contains("had no process"),
        "{upgraded}"
    );
    // Its command works again: the new process's restart serves.
    std::fs::remove_file(&crash).expect("remove the crash file");
    let now = both_running_as_recorded(&run, version, &pids).await;
    assert_eq!(now[0], pids[0], "instance 0 adopted, not started again");
    run.stop(new).await;
}

/// Session 38 (down37's report, "Left"): the restart backoff of a crash-looping instance went
/// back to 500 ms at each binary upgrade, so an upgrade made it hammer whatever it fails on
/// again. Now the old process saves each instance's backoff with its pids (`active_backoff`),
/// and the new process goes on from it: instance 1, down at the takeover while it waited out
/// its 4 s backoff, is reported once the old process has handed over with the rest of that
/// same wait, and its next exit with 8 s (until then: 500 ms, then 1 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_looping_instance_keeps_its_restart_backoff_across_a_run_upgrade() {
    let (mut run, _crash, _pids) = one_crash_looping("v1-backoff-kept").await;
    let due = saved_restart_due(&run).await;
    let (new, _) = run.upgrade_under_load().await;
    let exits = the_rest_then_8s(&run, "Upgraded", due).await;
    assert!(
        exits.contains("took it over in a binary upgrade"),
        "{exits}"
    );
    run.stop(new).await;
}

/// Session 38: the same crash loop, `crossfade run` killed (SIGKILL) while instance 1 waits out
/// its 4 s backoff. The next start adopts instance 0 and starts instance 1 once the rest of that
/// wait has passed (the state file saved it at the exit), then goes on with 8 s. Until then it
/// was started at once, and its next exit got 500 ms. Instance 0 serves meanwhile: a start after
/// a crash adopts a workload only beside an instance that answers its probe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_after_a_kill_9_keeps_a_crash_looping_instances_restart_backoff() {
    let (mut run, _crash, pids) = one_crash_looping("v1-backoff-crash").await;
    let due = saved_restart_due(&run).await;
    run.old.kill_hard();
    let spec_path = run.dir.path().join("spec.yaml");
    let mut again = Crossfade::run(run.dir.path(), &spec_path);
    again.wait_ready(&run.admin, PATIENCE).await;
    let exits = the_rest_then_8s(&run, "Adopted", due).await;
    assert!(
        exits.contains("no process when this crossfade started"),
        "{exits}"
    );
    let adopted = crate::supervise::events(&run.admin).await;
    let (_, adopted) = (adopted.iter().rev())
        .find(|(r, _)| r == "Adopted")
        .expect("the Adopted event");
    assert!(
        adopted.contains(&format!("(pid {}", pids[0]))
            && adopted.contains("started again once the rest of its restart backoff has passed"),
        "{adopted}"
    );
    let mut instances = pids_of(&read_json(&run.state)["active_pids"]);
    again.terminate(PATIENCE).await;
    instances.retain(|p| pid_alive(*p));
    wait_gone(&instances, Duration::from_secs(10)).await;
}

/// When instance 1 of [`one_crash_looping`]'s run is due to restart, in ms since the Unix epoch,
/// as its state file saved it with its 4 s wait (its next backoff 8 s).
async fn saved_restart_due(run: &OneSick) -> u64 {
    wait_state(&run.state, PATIENCE, "instance 1's backoff saved", |s| {
        let saved = &s["active_backoff"][1];
        let waiting = saved["next_restart_in_ms"] == 8_000;
        waiting
            .then(|| saved["restart_due_unix_ms"].as_u64())
            .flatten()
    })
    .await
}

/// Waits for the first two exits of instance 1 reported after the last event `since` (the new
/// process's first event), and asserts that the first is reported with the rest of the wait
/// that was `due` (ms since the epoch; computed just before its event was stamped), the second
/// with 8 s. The two messages.
async fn the_rest_then_8s(run: &OneSick, since: &str, due: u64) -> String {
    // Each: (time in ms, restart_in, message).
    let exits = wait_until(
        PATIENCE,
        "two exits of instance 1 reported anew",
        || async {
            let events = run.admin.rollout().await["events"].clone();
            let events = events.as_array().cloned().unwrap_or_default();
            let start = events.iter().rposition(|e| e["reason"] == since)?;
            let exits: Vec<(f64, Duration, String)> = (events[start..].iter())
                .filter(|e| e["reason"] == "ActiveExited")
                .filter_map(|e| {
                    let message = e["message"].as_str()?.to_owned();
                    let (_, restart_in) = message.rsplit_once("restarting in ")?;
                    let restart_in = crossfade_proxy::duration::parse(restart_in).ok()?;
                    let at = e["at_unix_seconds"].as_f64()? * 1000.0;
                    (message.contains("instance 1 ")).then_some((at, restart_in, message))
                })
                .collect();
            (exits.len() >= 2).then_some(exits)
        },
    )
    .await;
    let (at, first, message) = &exits[0];
    let rest = (due as f64 - at).max(0.0);
    let first_ms = first.as_secs_f64() * 1000.0;
    assert!(
        first_ms >= rest - 50.0 && first_ms <= rest + 1000.0 && *first <= Duration::from_secs(4),
        "the rest of its 4s wait, due at {due} ms, reported at {at} ms: {message}"
    );
    let (_, second, next) = &exits[1];
    assert_eq!(
        *second,
        Duration::from_secs(8),
        "the backoff goes on: {next}"
    );
    format!("{message}\n{next}")
}

/// The same upgrade, its new process killed (SIGKILL) right after the old one exited, while
/// the instance it was to start still crashes: nothing is lost. The next `crossfade run` on the
/// same spec and state file (a restart after a crash) finds what the new process recorded,
/// stops what is left and serves both instances again, and what runs is exactly what the state
/// file and the child journal record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_process_killed_before_it_started_the_missing_instance_leaves_nothing_lost() {
    let version = "v1-backoff-killed";
    let (mut run, crash, pids) = one_crash_looping(version).await;
    let (new, _) = run.upgrade_under_load().await;
    let _ = kill(Pid::from_raw(new.0 as i32), Signal::SIGKILL);
    wait_gone(&[new.0], PATIENCE).await;
    std::fs::remove_file(&crash).expect("remove the crash file");
    let spec_path = run.dir.path().join("spec.yaml");
    let mut again = Crossfade::run(run.dir.path(), &spec_path);
    again.wait_ready(&run.admin, PATIENCE).await;
    both_running_as_recorded(&run, version, &pids).await;
    let mut instances = pids_of(&read_json(&run.state)["active_pids"]);
    again.terminate(PATIENCE).await;
    instances.retain(|p| pid_alive(*p));
    wait_gone(&instances, Duration::from_secs(10)).await;
}

/// The status of `GET /healthz` at `endpoint`, 0 when it does not answer.
async fn healthz(endpoint: SocketAddr) -> u16 {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(endpoint).await.ok()?;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.ok()?;
        let head = String::from_utf8_lossy(&answer[..answer.len().min(12)]).into_owned();
        head.get(9..12)?.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()
        .flatten()
        .unwrap_or(0)
}
