//! `crossfade proxy` and systemd's readiness protocol (sd_notify(3)), over a real Unix datagram
//! socket that the test binds and names in `NOTIFY_SOCKET`, as systemd does for a `Type=notify`
//! unit (there is no systemd here: these tests check the protocol, not systemd itself): `READY=1`
//! once serving, `RELOADING=1` + `MONOTONIC_USEC=` then `READY=1` around a SIGHUP, `MAINPID=` +
//! `READY=1` from a SIGUSR2 successor once the old process drains (and nothing more from the old
//! one), `STOPPING=1` on SIGTERM; a socket that is gone is logged once; and a successor whose
//! predecessor does not confirm the handover claims neither the pid file nor `MAINPID`.
//! `crossfade run` too: `READY=1` once it serves, `STOPPING=1` on SIGTERM, nothing on SIGHUP (it
//! reloads nothing). Both say `READY=1` only once the start's first health probe round is over
//! (a probe the test holds; a SIGHUP during it reloads and says nothing). `crossfade proxy
//! --kube` is in `kube::proxy`.

use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

use crossfade_proxy::config::ProxyConfig;
use crossfade_proxy::handover::{HandoverListener, Listeners};
use crossfade_proxy::{Proxy, ProxyMetrics};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UnixDatagram};
use tokio::sync::watch;

use crate::support::spec::{addr, write_json};
use crate::support::{
    pid_alive, proxy_config, temp_dir, wait_gone, wait_until, Admin, App, Crossfade, SampleApp,
    Spec,
};

/// Every wait here: generous, since the tests share two cores with the rest of the suite.
const LIMIT: Duration = Duration::from_secs(20);

/// The next datagram on `socket`, as text.
///
/// # Panics
/// After [`LIMIT`] with nothing, printing `proxy`'s log.
pub(crate) async fn next(socket: &UnixDatagram, proxy: &Crossfade, what: &str) -> String {
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(LIMIT, socket.recv(&mut buf)).await {
        Ok(Ok(n)) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Ok(Err(e)) => panic!("receiving {what}: {e}"),
        Err(_) => panic!(
            "no datagram ({what}) within {LIMIT:?}; log:\n{}",
            proxy.log()
        ),
    }
}

/// The datagrams already queued on `socket` (none wait).
pub(crate) fn queued(socket: &UnixDatagram) -> Vec<String> {
    let mut buf = vec![0u8; 4096];
    let mut out = Vec::new();
    while let Ok(n) = socket.try_recv(&mut buf) {
        out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    out
}

pub(crate) fn signal(pid: u32, signal: Signal) {
    kill(Pid::from_raw(pid as i32), signal).unwrap_or_else(|e| panic!("{signal} to {pid}: {e}"));
}

/// Kills the SIGUSR2 successor (not a child of the test) when dropped, should an assertion fail.
struct Reap(u32);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0 as i32), Signal::SIGKILL);
    }
}

/// `(NOTIFY_SOCKET, path)` for [`Crossfade::spawn_env`].
pub(crate) fn env(path: &Path) -> [(&'static str, &str); 1] {
    [("NOTIFY_SOCKET", path.to_str().expect("a UTF-8 temp path"))]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_reloading_mainpid_and_stopping_arrive_on_the_notify_socket() {
    let dir = temp_dir();
    let blue = SampleApp::start(dir.path(), "v1", "v1", &[]).await;
    let mut json = proxy_config(&[blue.addr], &[]);
    json["drain_timeout"] = json!("2s");
    let config = write_json(dir.path(), "proxy.yaml", &json);
    let socket = dir.path().join("upgrade.sock");
    let pid_file = dir.path().join("proxy.pid");
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("bind the notify socket");
    let args = [
        OsStr::new("proxy"),
        config.as_os_str(),
        OsStr::new("--upgrade-socket"),
        socket.as_os_str(),
        OsStr::new("--pid-file"),
        pid_file.as_os_str(),
    ];
    let mut old = Crossfade::spawn_env(dir.path(), "proxy.log", args, &env(&notify_path));
    let admin = Admin::new(addr(&json["admin"]));

    // READY=1 only once serving: both listeners accept at once, no retry.
    assert_eq!(next(&notify, &old, "READY").await, "READY=1\n");
    tokio::net::TcpStream::connect(addr(&json["listen"]))
        .await
        .expect("the traffic listener accepts once READY=1 arrived");
    let (status, _) = admin.get_text("/readyz").await.expect("the admin API");
    assert_eq!(status, 200);
    let old_pid = old.pid();
    assert_eq!(admin.status().await["pid"], json!(old_pid));

    // SIGHUP: RELOADING=1 with a monotonic timestamp, then READY=1.
    signal(old_pid, Signal::SIGHUP);
    let reloading = next(&notify, &old, "RELOADING").await;
    let usec = reloading
        .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
        .and_then(|rest| rest.strip_suffix('\n'))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("{reloading:?}"));
    assert!(usec > 0, "{reloading:?}");
    assert_eq!(
        next(&notify, &old, "READY after the reload").await,
        "READY=1\n"
    );
    assert!(
        old.log().contains("SIGHUP: routes reloaded"),
        "{}",
        old.log()
    );

    // SIGUSR2: the successor names itself once the old process drains, and has written the pid
    // file by then.
    signal(old_pid, Signal::SIGUSR2);
    let started = wait_until(LIMIT, "the successor's start", || async {
        let log = old.log();
        let line = log.lines().find(|l| l.contains("SIGUSR2: started"))?;
        line.rsplit_once("pid=")?.1.trim().parse::<u32>().ok()
    })
    .await;
    let _reap = Reap(started);
    assert_eq!(
        next(&notify, &old, "MAINPID").await,
        format!("MAINPID={started}\nREADY=1\n")
    );
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap(),
        format!("{started}\n")
    );
    let exit = old.wait_exit(LIMIT).await;
    assert!(exit.success(), "{exit}\n{}", old.log());
    // The old process said nothing more: a STOPPING=1 from it would stop the unit the successor
    // now serves.
    assert_eq!(queued(&notify), Vec::<String>::new(), "{}", old.log());
    assert_eq!(admin.status().await["pid"], json!(started));

    // SIGTERM to the successor: STOPPING=1.
    signal(started, Signal::SIGTERM);
    assert_eq!(next(&notify, &old, "STOPPING").await, "STOPPING=1\n");
    wait_gone(&[started], LIMIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notify_socket_that_goes_away_is_logged_once_and_the_proxy_serves_on() {
    let dir = temp_dir();
    let blue = SampleApp::start(dir.path(), "v1", "v1", &[]).await;
    let json = proxy_config(&[blue.addr], &[]);
    let config = write_json(dir.path(), "proxy.yaml", &json);
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("bind the notify socket");
    let args = [OsStr::new("proxy"), config.as_os_str()];
    let mut proxy = Crossfade::spawn_env(dir.path(), "proxy.log", args, &env(&notify_path));
    let admin = Admin::new(addr(&json["admin"]));
    assert_eq!(next(&notify, &proxy, "READY").await, "READY=1\n");
    tokio::net::TcpStream::connect(addr(&json["listen"]))
        .await
        .expect("the traffic listener accepts once READY=1 arrived");
    signal(proxy.pid(), Signal::SIGHUP);
    let reloading = next(&notify, &proxy, "RELOADING").await;
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading:?}"
    );
    assert_eq!(
        next(&notify, &proxy, "READY after the reload").await,
        "READY=1\n"
    );

    // The service manager's socket goes away: two more reloads (four sends) and a stop.
    drop(notify);
    std::fs::remove_file(&notify_path).unwrap();
    for reloads in 2..=3 {
        signal(proxy.pid(), Signal::SIGHUP);
        wait_until(LIMIT, "the reload", || async {
            (proxy.log().matches("SIGHUP: routes reloaded").count() == reloads).then_some(())
        })
        .await;
    }
    let (status, _) = admin.get_text("/readyz").await.expect("the admin API");
    assert_eq!(status, 200, "still serving");
    let exit = proxy.terminate(LIMIT).await;
    assert!(exit.success(), "{exit}\n{}", proxy.log());
    let log = proxy.log();
    let warnings: Vec<_> = log
        .lines()
        .filter(|l| l.contains("sd_notify: cannot send"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(warnings[0].contains("WARN"), "{log}");
    assert!(
        warnings[0].contains(&format!("NOTIFY_SOCKET {}", notify_path.display())),
        "{log}"
    );
}

/// The window of a binary upgrade in which the new process serves the inherited sockets but the
/// old one has not confirmed that it drains (it gave up on the new one, or died): the pid file and
/// the service manager must go on naming the old process. The test plays the old process over the
/// real handover protocol and never confirms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successor_without_the_old_processs_confirmation_claims_neither_pid_file_nor_mainpid() {
    let dir = temp_dir();
    let blue = SampleApp::start(dir.path(), "v1", "v1", &[]).await;
    let json = proxy_config(&[blue.addr], &[]);
    let config = write_json(dir.path(), "proxy.yaml", &json);
    let socket = dir.path().join("upgrade.sock");
    let pid_file = dir.path().join("proxy.pid");
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("bind the notify socket");

    // The "old process": this test, serving the config's listeners, named in the pid file.
    let listen = tokio::net::TcpListener::bind(addr(&json["listen"]))
        .await
        .unwrap();
    let admin_listener = tokio::net::TcpListener::bind(addr(&json["admin"]))
        .await
        .unwrap();
    let listeners = Listeners::of(&listen, &admin_listener).unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    let served = ProxyConfig::from_yaml(&text).expect("a valid config");
    let proxy = Proxy::new(&served, ProxyMetrics::default()).expect("the old side's proxy");
    let handover = HandoverListener::bind(&socket).expect("bind the upgrade socket");
    let old_pid = std::process::id();
    std::fs::write(&pid_file, format!("{old_pid}\n")).unwrap();

    let args = [
        OsStr::new("proxy"),
        config.as_os_str(),
        OsStr::new("--upgrade-socket"),
        socket.as_os_str(),
        OsStr::new("--pid-file"),
        pid_file.as_os_str(),
    ];
    let mut new = Crossfade::spawn_env(dir.path(), "proxy.log", args, &env(&notify_path));
    let successor = tokio::time::timeout(LIMIT, handover.successor(&listeners, &proxy))
        .await
        .unwrap_or_else(|_| panic!("the new process never said ready; log:\n{}", new.log()));
    // The new process serves the inherited sockets and has said `ready`; the old one goes away
    // without `draining`.
    drop(successor);
    wait_until(LIMIT, "the new process's warning", || async {
        new.log()
            .contains("the old process did not confirm that it drains")
            .then_some(())
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap(),
        format!("{old_pid}\n"),
        "the pid file still names the old process; log:\n{}",
        new.log()
    );
    let admin = Admin::new(addr(&json["admin"]));
    assert_eq!(admin.status().await["pid"], json!(new.pid()), "it serves");

    // It stops as it started: without a word to the service manager, leaving the file alone.
    let exit = new.terminate(LIMIT).await;
    assert!(exit.success(), "{exit}\n{}", new.log());
    assert!(!pid_alive(new.pid()));
    assert_eq!(queued(&notify), Vec::<String>::new(), "{}", new.log());
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap(),
        format!("{old_pid}\n")
    );
}

/// `crossfade run` under `Type=notify` (left without it before session 13): `READY=1` once the
/// proxy serves blue, nothing on SIGHUP (`run` reloads nothing, so no `RELOADING=1`), and
/// `STOPPING=1` on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crossfade_run_says_ready_once_serving_and_stopping_on_sigterm_and_never_reloading() {
    let dir = temp_dir();
    let app = App::version("v1").set(
        "readiness",
        json!({ "interval": "50ms", "deadline": format!("{}s", LIMIT.as_secs()) }),
    );
    let spec = Spec::new().blue(app);
    let path = spec.write(dir.path(), "spec.yaml");
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("bind the notify socket");
    let args = [OsStr::new("run"), path.as_os_str()];
    let mut run = Crossfade::spawn_env(dir.path(), "run.log", args, &env(&notify_path));

    // READY=1 only once serving: the proxy answers through blue at once, no retry.
    assert_eq!(next(&notify, &run, "READY").await, "READY=1\n");
    let (status, _) = Admin::new(spec.admin())
        .get_text("/readyz")
        .await
        .expect("the admin API");
    assert_eq!(status, 200);
    let mut conn = crate::support::RawConn::connect(spec.listen()).await;
    conn.send(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(conn.read_response().await.status(), 200);

    // SIGHUP: logged as ignored, and nothing told to the service manager.
    signal(run.pid(), Signal::SIGHUP);
    wait_until(LIMIT, "the SIGHUP to be logged", || {
        let log = run.log();
        async move { log.contains("SIGHUP ignored").then_some(()) }
    })
    .await;
    assert_eq!(queued(&notify), Vec::<String>::new(), "{}", run.log());

    // SIGTERM: STOPPING=1 as the drain starts, and a clean exit.
    let exit = run.terminate(LIMIT).await;
    assert!(exit.success(), "{exit}\n{}", run.log());
    assert_eq!(queued(&notify), ["STOPPING=1\n"], "{}", run.log());
}

/// The old process of a binary upgrade, played by a Python script over the real handover
/// protocol (one byte carrying the traffic and admin sockets, then the state line; it reads
/// `ready` and never confirms), so that the test decides when it goes away: a SIGTERM'd old
/// process drains, removes its own pid file and exits; a crashed one is killed. Arguments: listen
/// and admin addresses, upgrade socket, pid file, state line file. It prints `ready` once the new
/// process said so, then waits for its stdin to close and exits as a stopped old process does.
const OLD_PROCESS: &str = r#"
import os, socket, sys
listen, admin, path, pid_file, state = sys.argv[1:]
def tcp(address):
    host, port = address.rsplit(":", 1)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, int(port)))
    s.listen(128)
    return s
sockets = [tcp(listen), tcp(admin)]
upgrade = socket.socket(socket.AF_UNIX)
upgrade.bind(path)
upgrade.listen(1)
with open(pid_file, "w") as f:
    f.write(f"{os.getpid()}\n")
print("listening", flush=True)
new, _ = upgrade.accept()
socket.send_fds(new, [b"S"], [s.fileno() for s in sockets])
with open(state, "rb") as f:
    new.sendall(f.read())
said = b""
while not said.endswith(b"\n"):
    more = new.recv(64)
    if not more:
        sys.exit(3)
    said += more
if said != b"ready\n":
    sys.exit(4)
new.close()
print("ready", flush=True)
sys.stdin.read()
os.remove(pid_file)
"#;

/// How the played old process goes away in [`an_old_process_gone_during_the_handover_leaves_the_new_one_named`].
#[derive(Clone, Copy, Debug)]
enum Gone {
    /// A SIGTERM during the handover: it drains (alive, not confirming), removes its pid file and
    /// exits.
    Stopped,
    /// `kill -9` during the handover: the pid file still names it.
    Killed,
}

/// Trial 13 N4: an old process that goes away during the handover (after it handed the sockets
/// and routes, before it confirmed) left the new one serving with no pid file (SIGTERM) or a pid
/// file naming the dead process (kill -9), no `MAINPID=`, and no upgrade socket. Now the new one
/// leaves the file and the service manager to the old process while it lives, and claims all
/// three once it has exited.
async fn an_old_process_gone_during_the_handover_leaves_the_new_one_named(gone: Gone) {
    let dir = temp_dir();
    let blue = SampleApp::start(dir.path(), "v1", "v1", &[]).await;
    let json = proxy_config(&[blue.addr], &[]);
    let config = write_json(dir.path(), "proxy.yaml", &json);
    let socket = dir.path().join("upgrade.sock");
    let pid_file = dir.path().join("proxy.pid");
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("bind the notify socket");
    let text = std::fs::read_to_string(&config).unwrap();
    let served = ProxyConfig::from_yaml(&text).expect("a valid config");
    let proxy = Proxy::new(&served, ProxyMetrics::default()).expect("the old side's proxy");
    let routes = proxy.hand_routes_over(None).routes;
    let mut line = serde_json::to_vec(&json!({ "version": 1, "routes": routes })).unwrap();
    line.push(b'\n');
    let state = dir.path().join("state.json");
    std::fs::write(&state, line).unwrap();

    let python = std::env::var_os("CROSSFADE_KMOCK_PYTHON").unwrap_or_else(|| "python3".into());
    let mut old = tokio::process::Command::new(python)
        .arg("-c")
        .arg(OLD_PROCESS)
        .args([&json["listen"], &json["admin"]].map(|a| a.as_str().unwrap().to_owned()))
        .args([&socket, &pid_file, &state])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 plays the old process");
    let old_pid = old.id().unwrap();
    let mut said = tokio::io::BufReader::new(old.stdout.take().unwrap());
    hear(&mut said, "listening").await;

    let args = [
        OsStr::new("proxy"),
        config.as_os_str(),
        OsStr::new("--upgrade-socket"),
        socket.as_os_str(),
        OsStr::new("--pid-file"),
        pid_file.as_os_str(),
    ];
    let mut new = Crossfade::spawn_env(dir.path(), "proxy.log", args, &env(&notify_path));
    hear(&mut said, "ready").await;
    let admin = Admin::new(addr(&json["admin"]));
    assert_eq!(admin.status().await["pid"], json!(new.pid()), "it serves");
    wait_until(LIMIT, "the new process's warning", || async {
        new.log()
            .contains("the old process did not confirm that it drains")
            .then_some(())
    })
    .await;
    match gone {
        Gone::Stopped => {
            // Alive and draining: it still owns the file and the service.
            assert_eq!(
                std::fs::read_to_string(&pid_file).unwrap(),
                format!("{old_pid}\n")
            );
            assert_eq!(queued(&notify), Vec::<String>::new(), "{}", new.log());
            drop(old.stdin.take());
        }
        Gone::Killed => signal(old_pid, Signal::SIGKILL),
    }
    let status = tokio::time::timeout(LIMIT, old.wait())
        .await
        .expect("the old process exits")
        .unwrap();
    assert_eq!(status.success(), matches!(gone, Gone::Stopped), "{status}");

    let new_pid = new.pid();
    assert_eq!(
        next(&notify, &new, "MAINPID").await,
        format!("MAINPID={new_pid}\nREADY=1\n")
    );
    wait_until(LIMIT, "the pid file naming the new process", || async {
        let held = std::fs::read_to_string(&pid_file).ok()?;
        (held == format!("{new_pid}\n")).then_some(())
    })
    .await;
    // And the upgrade socket is its own now: a next upgrade can take over.
    wait_until(LIMIT, "the new process's upgrade socket", || async {
        std::os::unix::net::UnixStream::connect(&socket)
            .ok()
            .map(drop)
    })
    .await;
    let log = new.log();
    assert!(log.contains("the old process exited"), "{log}");
    assert!(!log.contains("without in-place upgrades"), "{log}");

    let exit = new.terminate(LIMIT).await;
    assert!(exit.success(), "{exit}\n{}", new.log());
    assert!(!pid_file.exists(), "its own file is removed at exit");
}

/// Waits for the next line from the played old process (see [`OLD_PROCESS`]).
async fn hear(said: &mut tokio::io::BufReader<tokio::process::ChildStdout>, what: &str) {
    let mut heard = String::new();
    let read = tokio::io::AsyncBufReadExt::read_line(said, &mut heard);
    let n = tokio::time::timeout(LIMIT, read).await;
    assert!(
        matches!(n, Ok(Ok(n)) if n > 0),
        "the old process never said {what}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_process_stopped_during_the_handover_hands_pid_file_and_mainpid_on_once_it_exits() {
    an_old_process_gone_during_the_handover_leaves_the_new_one_named(Gone::Stopped).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_process_killed_during_the_handover_leaves_pid_file_and_mainpid_to_the_new_one() {
    an_old_process_gone_during_the_handover_leaves_the_new_one_named(Gone::Killed).await;
}

/// An endpoint that answers every request `200` at once, except `GET /held`: its answer waits
/// until [`HeldProbe::release`]. The proxy's active health check probes `/held`, so the test
/// decides when the first probe round is over.
struct HeldProbe {
    addr: std::net::SocketAddr,
    /// `GET /held` requests received so far.
    seen: watch::Receiver<usize>,
    /// Set to true to answer the held requests (and every later one at once).
    release: watch::Sender<bool>,
}

impl HeldProbe {
    async fn start() -> HeldProbe {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let (seen_tx, seen) = watch::channel(0usize);
        let (release, released) = watch::channel(false);
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let (seen_tx, mut released) = (seen_tx.clone(), released.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let mut chunk = [0u8; 1024];
                        let Ok(n) = conn.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                            continue;
                        };
                        if buf.starts_with(b"GET /held ") {
                            seen_tx.send_modify(|n| *n += 1);
                            if released.wait_for(|r| *r).await.is_err() {
                                return;
                            }
                        }
                        buf.drain(..end + 4);
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n";
                        if conn.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        HeldProbe {
            addr,
            seen,
            release,
        }
    }

    /// Waits until the first `GET /held` has arrived (and is held).
    async fn probed(&mut self) {
        tokio::time::timeout(LIMIT, self.seen.wait_for(|n| *n > 0))
            .await
            .expect("the proxy's first health probe within the limit")
            .expect("the held endpoint runs");
    }

    /// Answers the held probes, and every later one at once.
    fn release(&self) {
        self.release.send_replace(true);
    }
}

/// The active checks of the tests below: one probe of `/held`, and the next not before the test
/// ends; a timeout well above the test's waits, so that the first probe ends only when the test
/// releases it.
fn held_health() -> serde_json::Value {
    json!({ "path": "/held", "interval": "60s", "timeout": "30s", "rise": 1, "fall": 1 })
}

/// Waits until `GET /readyz` answers, and returns its status.
async fn readyz(admin: &Admin) -> u16 {
    wait_until(LIMIT, "the admin API", || async {
        admin
            .get_text("/readyz")
            .await
            .ok()
            .map(|(status, _)| status)
    })
    .await
}

/// Waits until `proxy`'s log holds `line` `count` times.
async fn logged(proxy: &Crossfade, line: &str, count: usize) {
    wait_until(LIMIT, line, || async {
        (proxy.log().matches(line).count() >= count).then_some(())
    })
    .await;
}

/// Session 24 held endpoints of routes with active checks out until their first probe passed,
/// and `/readyz` at 503 until the start's first probe round was over, but `crossfade proxy` said
/// `READY=1` as soon as its listeners served: systemd started the units ordered after it while
/// its readiness endpoint still said no. Now `READY=1` comes once the round is over; a SIGHUP
/// during the round reloads without a word (a `READY=1` from it would say ready early), and the
/// reloads after `READY=1` are framed as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crossfade_proxy_says_ready_only_once_its_first_health_probe_round_is_over() {
    let dir = temp_dir();
    let mut held = HeldProbe::start().await;
    let mut json = proxy_config(&[held.addr], &[]);
    json["routes"][0]["health"] = held_health();
    let config = write_json(dir.path(), "proxy.yaml", &json);
    let args = [OsStr::new("proxy"), config.as_os_str()];
    let admin = Admin::new(addr(&json["admin"]));
    let lines = ("proxy serving", "SIGHUP: routes reloaded");
    let (proxy, notify) = ready_after_held_round(dir.path(), &mut held, &args, &admin, lines).await;

    // A reload from now on: RELOADING=1, then READY=1.
    signal(proxy.pid(), Signal::SIGHUP);
    let reloading = next(&notify, &proxy, "RELOADING").await;
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading:?}"
    );
    assert_eq!(
        next(&notify, &proxy, "READY after the reload").await,
        "READY=1\n"
    );
    stops_saying_stopping(proxy, &notify).await;
}

/// The same for `crossfade proxy --upgrade-socket` on a fresh start (its own serving loop):
/// `READY=1` only once the first probe round is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgradable_proxy_says_ready_only_once_its_first_health_probe_round_is_over() {
    let dir = temp_dir();
    let mut held = HeldProbe::start().await;
    let mut json = proxy_config(&[held.addr], &[]);
    json["routes"][0]["health"] = held_health();
    let config = write_json(dir.path(), "proxy.yaml", &json);
    let socket = dir.path().join("upgrade.sock");
    let args = [
        OsStr::new("proxy"),
        config.as_os_str(),
        OsStr::new("--upgrade-socket"),
        socket.as_os_str(),
    ];
    let admin = Admin::new(addr(&json["admin"]));
    let lines = ("proxy serving", "SIGHUP: routes reloaded");
    let (proxy, notify) = ready_after_held_round(dir.path(), &mut held, &args, &admin, lines).await;
    stops_saying_stopping(proxy, &notify).await;
}

/// The same for `crossfade run`, blue's endpoints probed by the route's `health`; its SIGHUP
/// (nothing to reload) is only logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crossfade_run_says_ready_only_once_its_first_health_probe_round_is_over() {
    let dir = temp_dir();
    let mut held = HeldProbe::start().await;
    let mut spec = Spec::new();
    spec.json["blue"] = json!({ "endpoints": [held.addr.to_string()] });
    spec.json["route"]["health"] = held_health();
    let path = spec.write(dir.path(), "spec.yaml");
    let args = [OsStr::new("run"), path.as_os_str()];
    let admin = Admin::new(spec.admin());
    let lines = ("serving route web", "SIGHUP ignored");
    let (run, notify) = ready_after_held_round(dir.path(), &mut held, &args, &admin, lines).await;
    stops_saying_stopping(run, &notify).await;
}

/// Starts `crossfade args` with a notify socket while the first probe of its only endpoint is
/// `held`, and checks the round's rule: while held, `/readyz` answers 503, `/status` names the
/// awaited endpoint, and nothing is said to the service manager, not even for a SIGHUP (applied,
/// and logged as `sighup` says, once `serving` is logged); once released, `READY=1` and `/readyz`
/// 200. Returns the process and the notify socket.
async fn ready_after_held_round(
    dir: &Path,
    held: &mut HeldProbe,
    args: &[&OsStr],
    admin: &Admin,
    (serving, sighup): (&str, &str),
) -> (Crossfade, UnixDatagram) {
    let notify_path = dir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("bind the notify socket");
    let child = Crossfade::spawn_env(dir, "crossfade.log", args, &env(&notify_path));

    // Serving, its first probe held: not ready, by /readyz and to the service manager.
    held.probed().await;
    assert_eq!(readyz(admin).await, 503, "{}", child.log());
    let pending = &admin.status().await["first_probes_pending"];
    assert_eq!(pending.as_array().map(Vec::len), Some(1), "{pending}");
    logged(&child, serving, 1).await;
    // A SIGHUP during the round is applied, and tells the service manager nothing.
    signal(child.pid(), Signal::SIGHUP);
    logged(&child, sighup, 1).await;
    assert_eq!(queued(&notify), Vec::<String>::new(), "{}", child.log());

    // The probe passes: READY=1, and /readyz says so too.
    held.release();
    assert_eq!(next(&notify, &child, "READY").await, "READY=1\n");
    assert_eq!(readyz(admin).await, 200, "{}", child.log());
    (child, notify)
}

/// SIGTERM ends `child` cleanly, and the last it said was `STOPPING=1`.
async fn stops_saying_stopping(mut child: Crossfade, notify: &UnixDatagram) {
    let exit = child.terminate(LIMIT).await;
    assert!(exit.success(), "{exit}\n{}", child.log());
    assert_eq!(queued(notify), ["STOPPING=1\n"], "{}", child.log());
}
