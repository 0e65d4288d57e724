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
use crate::support::{pids_of, read_json, temp_dir, wait_until, Admin, App, Crossfade, Spec};

/// The bound on a wait for an event (ready, exited, restarted).
const PATIENCE: Duration = Duration::from_secs(30);

/// A server that is not the backend: it answers every request `200 IMPOSTER` and counts them.
struct Imposter {
    hits: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
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
        Imposter { hits, task }
    }

    /// Requests it answered so far.
    fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Imposter {
    fn drop(&mut self) {
        self.task.abort();
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
    let status = admin.status().await;
    let endpoints = status["routes"][0]["blue"]["endpoints"].as_array().cloned();
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
        let v1 = trace::from_pool(&records, "v1");
        assert_eq!(v1, records.len(), "every answer from v1: {records:?}");
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
