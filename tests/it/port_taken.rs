//! A serving instance whose process is down while another server answers on its port (new-user
//! trial 32, finding A): the supervisor knows no instance of ours listens there, so the proxy
//! sends that port nothing from the exit until an instance of ours passed readiness again; and a
//! restart whose port is taken goes to another free port, which the route, the state and a later
//! run's adoption follow.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::trace::{self, TraceConfig};
use crate::support::{
    pid_alive, pids_of, read_json, temp_dir, wait_until, Admin, App, Crossfade, Spec,
};

/// The bound on a wait for an event (ready, exited, restarted).
const PATIENCE: Duration = Duration::from_secs(30);

/// What takes a killed instance's port: a server that is not the backend (it answers every
/// request `200 IMPOSTER` and counts them), or an outgoing connection whose source port it is.
struct Imposter {
    hits: Arc<AtomicU64>,
    task: Option<tokio::task::JoinHandle<()>>,
    _connection: Option<tokio::net::TcpStream>,
}

/// How [`Moved`] takes the port.
#[derive(Clone, Copy)]
enum Take {
    /// Another server listens on it.
    Server,
    /// An outgoing connection (to the proxy) has it as its source port.
    SourcePort,
}

impl Imposter {
    /// Binds 127.0.0.1:`port` as soon as the killed instance's socket is gone (tried every
    /// millisecond for 10 s), and serves.
    async fn take(port: u16) -> Imposter {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                Ok(listener) => break listener,
                Err(e) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "cannot take port {port}: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        };
        let hits = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&hits);
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(answer(conn, Arc::clone(&counted)));
            }
        });
        Imposter {
            hits,
            task: Some(task),
            _connection: None,
        }
    }

    /// Connects from 127.0.0.1:`port` to `to` as soon as the killed instance's socket is gone,
    /// and keeps the connection open: the port is the connection's source port.
    async fn connect_from(port: u16, to: SocketAddr) -> Imposter {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let connection = loop {
            let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
            let bound = socket.bind(SocketAddr::from(([127, 0, 0, 1], port)));
            match bound {
                Ok(()) => break socket.connect(to).await.expect("connect to the proxy"),
                Err(e) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "cannot bind port {port}: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        };
        Imposter {
            hits: Arc::new(AtomicU64::new(0)),
            task: None,
            _connection: Some(connection),
        }
    }

    /// Requests it answered so far.
    fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Imposter {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Answers each request head on `conn` (bodiless GETs, keep-alive) with `200 IMPOSTER`.
async fn answer(mut conn: tokio::net::TcpStream, hits: Arc<AtomicU64>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.drain(..end + 4);
            hits.fetch_add(1, Ordering::SeqCst);
            let reply = "HTTP/1.1 200 OK\r\nx-version: IMPOSTER\r\nx-pool: IMPOSTER\r\n\
                         x-instance: IMPOSTER\r\ncontent-length: 8\r\n\r\nIMPOSTER";
            if conn.write_all(reply.as_bytes()).await.is_err() {
                return;
            }
        }
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Blue: two instances of `blue.sh PORT`, which runs the sample app (`v1`), and a state file.
struct Blue {
    _dir: tempfile::TempDir,
    script: PathBuf,
    state: PathBuf,
    spec: Spec,
    admin: Admin,
    run: Crossfade,
}

impl Blue {
    async fn start() -> Blue {
        let dir = temp_dir();
        let state = dir.path().join("state.json");
        let script = dir.path().join("blue.sh");
        let body = format!(
            "#!/bin/sh\nexec '{}' sample-app --port \"$1\" --version v1\n",
            crate::support::BIN
        );
        std::fs::write(&script, body).expect("blue script");
        set_mode(&script, 0o755);
        let blue = App::version("v1")
            .set("command", json!(script))
            .set("args", json!(["{port}"]))
            .set("instances", json!(2));
        let spec = Spec::new().blue(blue).state_file(&state);
        let admin = Admin::new(spec.admin());
        let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
        run.wait_ready(&admin, PATIENCE).await;
        Blue {
            _dir: dir,
            script,
            state,
            spec,
            admin,
            run,
        }
    }

    /// Blue's pids, in instance order, once the state file lists both.
    async fn pids(&self) -> Vec<u32> {
        wait_until(PATIENCE, "blue's pids", || async {
            let pids = pids_of(&read_json(&self.state)["active_pids"]);
            (pids.len() == 2).then_some(pids)
        })
        .await
    }
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Blue's endpoints in the proxy's `/status`, in instance order.
async fn blue_endpoints(admin: &Admin) -> Vec<SocketAddr> {
    endpoints(admin, "blue").await
}

/// `slot`'s endpoints in the proxy's `/status`, in instance order.
async fn endpoints(admin: &Admin, slot: &str) -> Vec<SocketAddr> {
    let status = admin.status().await;
    let endpoints = status["routes"][0][slot]["endpoints"].as_array().cloned();
    endpoints
        .unwrap_or_default()
        .iter()
        .filter_map(|e| e.as_str()?.parse().ok())
        .collect()
}

/// The messages of the admin API's events with `reason`.
async fn events(admin: &Admin, reason: &str) -> Vec<String> {
    let status = admin.rollout().await;
    let events = status["events"].as_array().cloned().unwrap_or_default();
    events
        .iter()
        .filter(|e| e["reason"] == reason)
        .filter_map(|e| e["message"].as_str().map(str::to_owned))
        .collect()
}

/// `endpoint`'s health entry in blue's `/status`.
async fn blue_health(admin: &Admin, endpoint: SocketAddr) -> Value {
    let status = admin.status().await;
    let health = status["routes"][0]["blue"]["health"].as_array().cloned();
    let text = endpoint.to_string();
    health
        .unwrap_or_default()
        .into_iter()
        .find(|h| h["endpoint"] == text.as_str())
        .unwrap_or(Value::Null)
}

/// Sends `bursts` bursts of 40 requests through the proxy; every one must be answered by `v1`.
async fn all_answered_by_v1(spec: &Spec, bursts: usize) {
    for _ in 0..bursts {
        let records = trace::burst(&TraceConfig::new(spec.listen()), 40).await;
        trace::assert_no_errors(&records);
        let pools: Vec<&str> = records.iter().filter_map(trace::Record::pool).collect();
        assert!(
            pools.iter().all(|p| *p == "v1"),
            "every answer from v1: {pools:?}"
        );
    }
}

/// Trial 32, A (part 1): blue's instance 0 is killed and cannot be started again (its script is
/// no longer executable), and another server takes its port. The proxy sent it every other
/// request (it answered 200, so nothing ejected it) while `crossfade status` said `up`. From the
/// exit on, the endpoint is withdrawn: no request reaches the other server, and status says
/// `down`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_reaches_another_server_on_the_port_of_an_instance_that_is_down() {
    let blue = Blue::start().await;
    let pids = blue.pids().await;
    let endpoint = blue_endpoints(&blue.admin).await[0];
    set_mode(&blue.script, 0o644);
    kill(Pid::from_raw(pids[0] as i32), Signal::SIGKILL).expect("kill instance 0");
    let imposter = Imposter::take(endpoint.port()).await;
    wait_until(PATIENCE, "the exit reported", || async {
        let exited = events(&blue.admin, "ActiveExited").await;
        (!exited.is_empty()).then_some(())
    })
    .await;
    let health = blue_health(&blue.admin, endpoint).await;
    assert_eq!(health["withdrawn"], true, "{health:#}");
    assert_eq!(health["healthy"], false, "{health:#}");

    all_answered_by_v1(&blue.spec, 5).await;
    println!(
        "PORT_TAKEN {endpoint}: {} requests reached the other server",
        imposter.hits()
    );
    assert_eq!(imposter.hits(), 0, "requests reached the other server");
    let admin_addr = blue.admin.addr.to_string();
    let out = crate::support::run_to_end(
        ["status", "--admin", admin_addr.as_str()],
        Duration::from_secs(20),
    )
    .await;
    let down = format!("{endpoint} down (process ");
    assert!(out.stdout.contains(&down), "{}", out.stdout);
    let mut blue = blue;
    blue.run.terminate(PATIENCE).await;
}

/// A run whose active workload's instance 0 was killed while another server took its port at
/// once, before the supervisor's restart (0.5 s later), and was restarted on another port that
/// the route has now: the other server, the slot's endpoints before (`[P, P1]`) and after
/// (`[Q, P1]`), and how many requests the other server had answered when the exit was reported.
struct Moved {
    dir: tempfile::TempDir,
    spec: Spec,
    admin: Admin,
    run: Crossfade,
    imposter: Imposter,
    before: Vec<SocketAddr>,
    after: Vec<SocketAddr>,
    hits_at_exit: u64,
    /// The versions that may answer (`v1`; `v1` and `v2` during a rollout).
    versions: Vec<&'static str>,
}

impl Moved {
    /// Blue (`blue`, two instances) with a state file, serving alone; its instance 0 moved.
    async fn away(blue: App) -> Moved {
        Moved::away_with(blue, Take::Server, |_| {}).await
    }

    /// [`Moved::away`] with `edit` applied to the spec first.
    async fn away_with(blue: App, take: Take, edit: impl FnOnce(&mut Spec)) -> Moved {
        let dir = temp_dir();
        let state = dir.path().join("state.json");
        let mut spec = Spec::new()
            .blue(blue.set("instances", json!(2)))
            .state_file(&state);
        edit(&mut spec);
        let admin = Admin::new(spec.admin());
        let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
        run.wait_ready(&admin, PATIENCE).await;
        Moved::kill_and_take(dir, spec, run, ("blue", take), vec!["v1"]).await
    }

    /// Kills the active workload's (in `slot`) instance 0, takes its port, and waits for the move.
    async fn kill_and_take(
        dir: tempfile::TempDir,
        spec: Spec,
        run: Crossfade,
        (slot, take): (&str, Take),
        versions: Vec<&'static str>,
    ) -> Moved {
        let admin = Admin::new(spec.admin());
        let state = dir.path().join("state.json");
        let pids = wait_until(PATIENCE, "the active pids", || async {
            let pids = pids_of(&read_json(&state)["active_pids"]);
            (pids.len() == 2).then_some(pids)
        })
        .await;
        let before = endpoints(&admin, slot).await;
        assert_eq!(before.len(), 2, "{before:?}");
        let exits = events(&admin, "ActiveExited").await.len();
        kill(Pid::from_raw(pids[0] as i32), Signal::SIGKILL).expect("kill instance 0");
        let imposter = match take {
            Take::Server => Imposter::take(before[0].port()).await,
            Take::SourcePort => Imposter::connect_from(before[0].port(), spec.listen()).await,
        };
        wait_until(PATIENCE, "the exit reported", || async {
            (events(&admin, "ActiveExited").await.len() > exits).then_some(())
        })
        .await;
        let hits_at_exit = imposter.hits();
        let after = wait_until(
            PATIENCE,
            "instance 0 in the route on a new port",
            || async {
                let now = endpoints(&admin, slot).await;
                (now.len() == 2 && now[0] != before[0]).then_some(now)
            },
        )
        .await;
        assert_eq!(after[1], before[1], "instance 1 is untouched");
        Moved {
            dir,
            spec,
            admin,
            run,
            imposter,
            before,
            after,
            hits_at_exit,
            versions,
        }
    }

    /// Bursts through the proxy: every answer from one of `versions`, instance 0 answering from
    /// its new port, none from the other server since the exit was reported.
    async fn serves_on_the_new_port(&self) {
        let mut instances = std::collections::BTreeSet::new();
        for _ in 0..5 {
            let records = trace::burst(&TraceConfig::new(self.spec.listen()), 40).await;
            trace::assert_no_errors(&records);
            let pools: Vec<&str> = records.iter().filter_map(trace::Record::pool).collect();
            assert!(
                pools.iter().all(|p| self.versions.contains(p)),
                "answers from {:?} only: {pools:?}",
                self.versions
            );
            instances.extend(
                records
                    .iter()
                    .filter_map(|r| r.instance().map(str::to_owned)),
            );
        }
        let new = format!("-{}", self.after[0].port());
        assert!(
            instances.iter().any(|i| i.ends_with(&new)),
            "instance 0 answers from {}: {instances:?}",
            self.after[0]
        );
        println!(
            "PORT_TAKEN moved {} -> {}: the other server answered {} requests ({} before the exit was reported)",
            self.before[0],
            self.after[0],
            self.imposter.hits(),
            self.hits_at_exit
        );
        assert_eq!(
            self.imposter.hits(),
            self.hits_at_exit,
            "requests reached the other server after the exit was reported"
        );
    }
}

/// Trial 32, A (part 2), the reproduction: blue's instance 0 is killed and another server takes
/// its port at once. Its restart there failed to bind (`Address already in use`) every time,
/// with a backoff up to 30 s, for ever, while the proxy sent the other server every other
/// request (`curl` alternated `IMPOSTER` and `v1`). The restart goes to another free port; the
/// route, `crossfade status`, the event and the state follow, and no request reaches the other
/// server once the exit is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_whose_port_is_taken_moves_to_another_port_and_the_route_follows() {
    let moved = Moved::away(App::version("v1")).await;
    moved.serves_on_the_new_port().await;
    let restarted = events(&moved.admin, "ActiveRestarted").await;
    let taken = format!("restarted on {}", moved.after[0]);
    assert!(
        restarted
            .iter()
            .any(|m| m.contains(&taken) && m.contains("was taken")),
        "{restarted:?}"
    );
    let health = blue_health(&moved.admin, moved.after[0]).await;
    assert_eq!(health["healthy"], true, "{health:#}");
    let admin_addr = moved.admin.addr.to_string();
    let out = crate::support::run_to_end(
        ["status", "--admin", admin_addr.as_str()],
        Duration::from_secs(20),
    )
    .await;
    let up = format!("{} up", moved.after[0]);
    assert!(out.stdout.contains(&up), "{}", out.stdout);
    assert!(
        !out.stdout.contains(&moved.before[0].to_string()),
        "{}",
        out.stdout
    );
    let mut moved = moved;
    moved.run.terminate(PATIENCE).await;
}

/// The same for an h2c-only workload (`protocol: h2c`): the restart's probe and the route speak
/// h2c to the new port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_restart_whose_port_is_taken_moves_to_another_port() {
    let h2c = App::version("v1")
        .flags(["--h2c"])
        .set("protocol", json!("h2c"));
    let mut moved = Moved::away(h2c).await;
    moved.serves_on_the_new_port().await;
    moved.run.terminate(PATIENCE).await;
}

/// A `crossfade run` SIGKILLed after such a move leaves blue running, instance 0 on its new
/// port; the next run adopts both instances where they listen (the child journal recorded the
/// restart's port), serves them at once, and the other server, still on the old port, gets
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_restart_after_a_move_adopts_the_instance_on_its_new_port() {
    let mut moved = Moved::away(App::version("v1")).await;
    let state = moved.dir.path().join("state.json");
    let pids = pids_of(&read_json(&state)["active_pids"]);
    moved.run.kill_hard();
    let path = moved.dir.path().join("spec.yaml");
    moved.run = Crossfade::run(moved.dir.path(), &path);
    moved.run.wait_ready(&moved.admin, PATIENCE).await;
    let adopted = events(&moved.admin, "Adopted").await;
    assert_eq!(adopted.len(), 1, "{adopted:?}");
    wait_until(
        PATIENCE,
        "the state file to list the adopted pids",
        || async { (pids_of(&read_json(&state)["active_pids"]) == pids).then_some(()) },
    )
    .await;
    assert!(
        pids.iter().all(|&p| pid_alive(p)),
        "the same processes serve: {pids:?}"
    );
    assert_eq!(blue_endpoints(&moved.admin).await, moved.after);
    moved.serves_on_the_new_port().await;
    moved.run.terminate(PATIENCE).await;
}

/// The same during a rollout, green at 50%: blue's instance moves, the rollout goes on, and a
/// promote completes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_instance_whose_port_is_taken_mid_rollout_moves_and_the_rollout_completes() {
    let dir = temp_dir();
    let state = dir.path().join("state.json");
    let mut spec = Spec::new()
        .blue(App::version("v1").set("instances", json!(2)))
        .green(App::version("v2"))
        .state_file(&state);
    spec.json["rollout"]["steps"] = json!([50, 100]);
    spec.json["rollout"]["hold"] = json!("10m");
    spec.json["rollout"]["progress_deadline"] = json!("20m");
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, PATIENCE).await;
    wait_until(PATIENCE, "green at 50%", || async {
        let r = admin.rollout().await["rollout"].clone();
        (r["phase"] == "Progressing" && r["applied_bp"] == 5_000).then_some(())
    })
    .await;
    let mut moved =
        Moved::kill_and_take(dir, spec, run, ("blue", Take::Server), vec!["v1", "v2"]).await;
    moved.serves_on_the_new_port().await;
    assert_eq!(
        moved.admin.rollout().await["rollout"]["phase"],
        "Progressing"
    );
    let (code, answer) = moved.admin.post("/rollout/promote").await;
    assert_eq!(code, 200, "{answer}");
    let rollout = crate::rollout::wait_terminal(&moved.admin, PATIENCE).await;
    assert_eq!(rollout["phase"], "Completed", "{rollout:#}");
    moved.run.terminate(PATIENCE).await;
}

/// The same for a promoted green, which its rollout's run attached to the route's green slot:
/// its instance moves within green's endpoints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promoted_green_instance_whose_port_is_taken_moves_within_green() {
    let dir = temp_dir();
    let state = dir.path().join("state.json");
    let mut spec = Spec::new()
        .green(App::version("v2").set("instances", json!(2)))
        .state_file(&state);
    spec.json["rollout"]["steps"] = json!([100]);
    spec.json["rollout"]["hold"] = json!("10m");
    spec.json["rollout"]["progress_deadline"] = json!("20m");
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, PATIENCE).await;
    wait_until(PATIENCE, "promote to be accepted", || async {
        (admin.post("/rollout/promote").await.0 == 200).then_some(())
    })
    .await;
    let rollout = crate::rollout::wait_terminal(&admin, PATIENCE).await;
    assert_eq!(rollout["phase"], "Completed", "{rollout:#}");
    wait_until(PATIENCE, "blue retired", || async {
        endpoints(&admin, "blue").await.is_empty().then_some(())
    })
    .await;
    let mut moved = Moved::kill_and_take(dir, spec, run, ("green", Take::Server), vec!["v2"]).await;
    moved.serves_on_the_new_port().await;
    moved.run.terminate(PATIENCE).await;
}

/// Three consecutive ports below the kernel's ephemeral range that 127.0.0.1 can bind now.
fn free_range() -> std::ops::RangeInclusive<u16> {
    let seed = u16::try_from(std::process::id() % 997).unwrap_or(0);
    (0..400u16)
        .map(|i| 20_000 + (seed + i * 23) % 9_000)
        .find(|&base| {
            (base..=base + 2).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
        })
        .map(|base| base..=base + 2)
        .expect("three free ports in a row")
}

/// With `port_range`, the restart whose port is taken moves to another port of the range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_whose_port_is_taken_moves_within_port_range() {
    let range = free_range();
    let (from, to) = (*range.start(), *range.end());
    let mut moved = Moved::away_with(App::version("v1"), Take::Server, |spec| {
        spec.json["port_range"] = json!(format!("{from}-{to}"));
    })
    .await;
    for endpoint in moved.before.iter().chain(&moved.after) {
        assert!(range.contains(&endpoint.port()), "{endpoint} in {range:?}");
    }
    moved.serves_on_the_new_port().await;
    moved.run.terminate(PATIENCE).await;
}

/// Trial 32, A: without any other server, an outgoing connection of the host that got the
/// instance's port as its source port while the instance was down made every restart there fail
/// to bind, for ever. The restart moves to another port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_whose_port_is_an_outgoing_connections_source_port_moves() {
    let mut moved = Moved::away_with(App::version("v1"), Take::SourcePort, |_| {}).await;
    moved.serves_on_the_new_port().await;
    moved.run.terminate(PATIENCE).await;
}

/// portnew33's leftover: from a restart to its readiness, `crossfade status` showed the old
/// endpoint `down` and nothing else (the supervisor's entry went with the restart), and
/// `GET /rollout` listed nothing; a restart that moved off a taken port did not say where the new
/// process listens. Instance 0 here is unready for 4 s after each start: the window is said as
/// such (`started again as pid N on ... (its port was taken), not ready yet`) until it is ready,
/// then the new endpoint reads `up` with nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_says_a_moved_restart_is_not_ready_yet_with_its_pid_and_new_port() {
    let blue = App::version("v1").set(
        "args",
        json!([
            "sample-app",
            "--port",
            "{port}",
            "--version",
            "v1",
            "--unready-for",
            "4s"
        ]),
    );
    let dir = temp_dir();
    let state = dir.path().join("state.json");
    let spec = Spec::new()
        .blue(blue.set("instances", json!(2)))
        .state_file(&state);
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, PATIENCE).await;
    let pids = wait_until(PATIENCE, "the active pids", || async {
        let pids = pids_of(&read_json(&state)["active_pids"]);
        (pids.len() == 2).then_some(pids)
    })
    .await;
    let before = blue_endpoints(&admin).await;
    kill(Pid::from_raw(pids[0] as i32), Signal::SIGKILL).expect("kill instance 0");
    let _imposter = Imposter::take(before[0].port()).await;
    // GET /rollout: the entry stays through the restart, with the new process.
    let started = wait_until(PATIENCE, "instance 0 started again", || async {
        let rollout = admin.rollout().await;
        let entry = rollout["restarting"].get(0).cloned()?;
        entry["started"].is_object().then_some(entry)
    })
    .await;
    let new: SocketAddr = started["started"]["endpoint"]
        .as_str()
        .and_then(|e| e.parse().ok())
        .expect("the new process's endpoint");
    assert_eq!(started["endpoint"], before[0].to_string(), "{started:#}");
    assert_ne!(new, before[0], "{started:#}");
    let pid = started["started"]["pid"].as_u64().expect("its pid");
    // Session 35: until when it may get ready (its readiness deadline), past which it is stopped
    // and started again.
    let ready_by = started["started"]["ready_by"]
        .as_str()
        .expect("its readiness deadline")
        .to_owned();
    let admin_addr = admin.addr.to_string();
    let out = crate::support::run_to_end(
        ["status", "--admin", admin_addr.as_str()],
        Duration::from_secs(20),
    )
    .await;
    let said = format!(
        "{} down (process exited (signal: 9 (SIGKILL)); started again as pid {pid} on {new} (its \
         port was taken), not ready yet: stopped and started again if not ready by {ready_by})",
        before[0]
    );
    assert!(out.stdout.contains(&said), "{said}\n{}", out.stdout);
    // Ready: the entry goes, and the route serves the new endpoint.
    wait_until(PATIENCE, "instance 0 ready on its new port", || async {
        let rollout = admin.rollout().await;
        let empty = rollout["restarting"]
            .as_array()
            .is_none_or(|entries| entries.is_empty());
        (empty && blue_endpoints(&admin).await.contains(&new)).then_some(())
    })
    .await;
    let out = crate::support::run_to_end(
        ["status", "--admin", admin_addr.as_str()],
        Duration::from_secs(20),
    )
    .await;
    assert!(out.stdout.contains(&format!("{new} up")), "{}", out.stdout);
    assert!(!out.stdout.contains("not ready yet"), "{}", out.stdout);
    run.terminate(PATIENCE).await;
}
