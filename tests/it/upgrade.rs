//! `crossfade proxy --upgrade-socket`: the proxy binary upgraded in place. A new process takes the
//! listening sockets and the live routes over the Unix socket, the old one drains and exits, and
//! clients (pooled hyper-util clients over HTTP/1.1 keep-alive and h2c, a long request, a
//! WebSocket) see no error.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::support::child::children_of;
use crate::support::proxy::{requests_total, weight_gauges};
use crate::support::spec::{addr, write_json};
use crate::support::{pid_alive, proxy_config, temp_dir, wait_until, Admin, Crossfade, SampleApp};

/// A proxy config over `blue` and `green` that drains for at most `drain`.
fn config(blue: SocketAddr, green: SocketAddr, drain: &str) -> Value {
    let mut config = proxy_config(&[blue], &[green]);
    config["drain_timeout"] = json!(drain);
    config
}

/// `crossfade proxy CONFIG --workers 2 --upgrade-socket SOCKET`.
fn start_proxy(dir: &Path, config: &Path, socket: &Path) -> Crossfade {
    let args = [
        OsStr::new("proxy"),
        config.as_os_str(),
        OsStr::new("--workers"),
        OsStr::new("2"),
        OsStr::new("--upgrade-socket"),
        socket.as_os_str(),
    ];
    Crossfade::spawn(dir, &next_proxy_log(dir), args)
}

/// `proxy-1.log`, `proxy-2.log`...: the first name not taken in `dir`.
fn next_proxy_log(dir: &Path) -> String {
    (1..)
        .map(|i| format!("proxy-{i}.log"))
        .find(|name| !dir.join(name).exists())
        .unwrap_or_default()
}

/// Two sample apps, a config and a first proxy serving with an upgrade socket.
struct Setup {
    dir: tempfile::TempDir,
    _apps: Vec<SampleApp>,
    config: PathBuf,
    socket: PathBuf,
    listen: SocketAddr,
    admin: Admin,
    old: Crossfade,
}

impl Setup {
    async fn start(drain: &str) -> Setup {
        Setup::start_with(drain, |_| {}).await
    }

    /// As [`Setup::start`], with the config edited by `edit` first.
    async fn start_with(drain: &str, edit: impl FnOnce(&mut Value)) -> Setup {
        Setup::start_with_green(drain, &[], edit).await
    }

    /// As [`Setup::start_with`], with the green sample app started with `green_flags`.
    async fn start_with_green(
        drain: &str,
        green_flags: &[&str],
        edit: impl FnOnce(&mut Value),
    ) -> Setup {
        let dir = temp_dir();
        let blue = SampleApp::start(dir.path(), "v1", "v1", &[]).await;
        let green = SampleApp::start(dir.path(), "v2", "v2", green_flags).await;
        let mut json = config(blue.addr, green.addr, drain);
        edit(&mut json);
        let config = write_json(dir.path(), "proxy.yaml", &json);
        let socket = dir.path().join("upgrade.sock");
        let admin = Admin::new(addr(&json["admin"]));
        let mut old = start_proxy(dir.path(), &config, &socket);
        old.wait_ready(&admin, Duration::from_secs(15)).await;
        wait_until(Duration::from_secs(5), "the upgrade socket", || async {
            socket.exists().then_some(())
        })
        .await;
        Setup {
            listen: addr(&json["listen"]),
            dir,
            _apps: vec![blue, green],
            config,
            socket,
            admin,
            old,
        }
    }

    /// [`Setup::start_with_green`] with a green that answers every request 500 and takes half of
    /// the route, whose config `edit` completes (the health setting under test).
    async fn start_with_failing_green(edit: impl FnOnce(&mut Value)) -> Setup {
        Setup::start_with_green("10s", &["--error-rate", "100%"], |config| {
            let route = &mut config["routes"][0];
            route["blue"]["weight"] = json!(50);
            route["green"]["weight"] = json!(50);
            edit(route);
        })
        .await
    }

    /// Starts the new binary (the same one: what counts is the process change) on the same socket.
    fn upgrade(&self) -> Crossfade {
        start_proxy(self.dir.path(), &self.config, &self.socket)
    }

    /// Waits until the old process logged that its successor is ready.
    async fn handed_over(&self) {
        wait_until(Duration::from_secs(15), "the handover", || async {
            self.old
                .log()
                .contains("the new process is ready")
                .then_some(())
        })
        .await;
    }

    /// A whole upgrade: the new process started, the handover logged, and the old process exited
    /// cleanly within `exit`; returns the new process.
    async fn upgrade_and_retire_old(&mut self, exit: Duration) -> Crossfade {
        let new = self.upgrade();
        self.handed_over().await;
        let status = self.old.wait_exit(exit).await;
        assert!(status.success(), "the old process exits cleanly: {status}");
        new
    }
}

/// Clients that no one here wrote the connection handling of: hyper-util's pooled client, one over
/// HTTP/1.1 keep-alive and one over h2c (prior knowledge), `tasks` loops each, every request
/// counted.
pub(crate) struct Traffic {
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    ok: Arc<AtomicU64>,
    errors: Arc<Mutex<Vec<String>>>,
    /// Requests an HTTP/2 GOAWAY refused before they were sent, and so sent again.
    refused: Arc<AtomicU64>,
    /// Answered requests by the `X-Pool` of their response.
    pools: Arc<Mutex<BTreeMap<String, u64>>>,
}

/// One GET, sent again (twice at most) when an HTTP/2 graceful GOAWAY refused it before it reached
/// the server: hyper's client hands such a request over to a connection that has just received
/// GOAWAY (hyperium/hyper#2500), and reqwest retries exactly this case (seanmonstar/reqwest#1425).
async fn send(
    client: &Client<HttpConnector, Empty<Bytes>>,
    uri: &str,
    refused: &AtomicU64,
) -> Result<http::Response<hyper::body::Incoming>, hyper_util::client::legacy::Error> {
    let mut attempts = 0;
    loop {
        let request = http::Request::get(uri).body(Empty::new()).unwrap();
        match client.request(request).await {
            Err(e) if attempts < 2 && refused_by_goaway(&e) => {
                refused.fetch_add(1, Ordering::Relaxed);
                attempts += 1;
            }
            result => return result,
        }
    }
}

/// An h2 GOAWAY with `NO_ERROR` from the server: the graceful shutdown's refusal (RFC 9113 §6.8).
fn refused_by_goaway(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(e) = source {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return h2.is_go_away() && h2.is_remote() && h2.reason() == Some(h2::Reason::NO_ERROR);
        }
        source = e.source();
    }
    false
}

impl Traffic {
    pub(crate) fn start(target: SocketAddr, tasks: usize) -> Traffic {
        let (stop, rx) = watch::channel(false);
        let ok = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(AtomicU64::new(0));
        let pools = Arc::new(Mutex::new(BTreeMap::new()));
        let h1: Client<HttpConnector, Empty<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        let h2: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http();
        let handles = (0..tasks * 2)
            .map(|i| {
                let client = if i % 2 == 0 { h1.clone() } else { h2.clone() };
                let (ok, errors, mut stop) = (ok.clone(), errors.clone(), rx.clone());
                let (refused, pools) = (refused.clone(), pools.clone());
                tokio::spawn(async move {
                    while !*stop.borrow_and_update() {
                        let uri = format!("http://{target}/api?i={i}");
                        let outcome = match send(&client, &uri, &refused).await {
                            Ok(response) if response.status() == 200 => {
                                let pool = response.headers().get("x-pool");
                                let pool = pool.and_then(|p| p.to_str().ok()).unwrap_or("");
                                *pools.lock().unwrap().entry(pool.to_owned()).or_default() += 1;
                                match response.into_body().collect().await {
                                    Ok(_) => Ok(()),
                                    Err(e) => Err(format!("body: {e}")),
                                }
                            }
                            Ok(response) => Err(format!("status {}", response.status())),
                            Err(e) => Err(format!("{e:?}")),
                        };
                        match outcome {
                            Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                            Err(e) => {
                                errors.lock().unwrap().push(e);
                                0
                            }
                        };
                        tokio::select! {
                            () = tokio::time::sleep(Duration::from_millis(5)) => {}
                            _ = stop.changed() => {}
                        }
                    }
                })
            })
            .collect();
        Traffic {
            stop,
            tasks: handles,
            ok,
            errors,
            refused,
            pools,
        }
    }

    /// Requests answered by `pool` (their `X-Pool`) so far.
    fn answered_by(&self, pool: &str) -> u64 {
        self.pools.lock().unwrap().get(pool).copied().unwrap_or(0)
    }

    fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    pub(crate) async fn more(&self, n: u64) {
        let target = self.ok() + n;
        wait_until(
            Duration::from_secs(20),
            "more answered requests",
            || async { (self.ok() >= target).then_some(()) },
        )
        .await;
    }

    /// Stops and returns (answered, errors); prints how many requests a GOAWAY refused.
    async fn stop(self) -> (u64, Vec<String>) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            task.await.expect("a traffic task panicked");
        }
        let refused = self.refused.load(Ordering::Relaxed);
        println!("requests refused by GOAWAY before sending, sent again: {refused}");
        let errors = self.errors.lock().unwrap().clone();
        (self.ok.load(Ordering::Relaxed), errors)
    }

    /// [`Traffic::stop`], asserting that no request failed (the first five errors are shown);
    /// returns how many were answered.
    pub(crate) async fn stop_without_errors(self) -> u64 {
        let (answered, errors) = self.stop().await;
        assert!(
            errors.is_empty(),
            "{} errors: {:?}",
            errors.len(),
            &errors[..errors.len().min(5)]
        );
        answered
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_upgraded_in_place_under_keep_alive_load_answers_every_request() {
    let mut setup = Setup::start("10s").await;
    // Live state the new process must keep: weights set through the admin API, not in the file.
    let (status, answer) = setup
        .admin
        .put(
            "/routes/web/weights",
            &json!({ "blue": 7000, "green": 3000 }),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let traffic = Traffic::start(setup.listen, 4);
    traffic.more(300).await;

    let mut new = setup.upgrade_and_retire_old(Duration::from_secs(20)).await;
    traffic.more(300).await;
    let answered = traffic.stop_without_errors().await;

    assert!(answered >= 600, "{answered} answered");
    assert!(new.try_exit().is_none(), "the new process serves");
    let metrics = setup.admin.metrics().await;
    assert_eq!(weight_gauges(&metrics), (7000, 3000), "live weights kept");
    let served = requests_total(&metrics, "blue") + requests_total(&metrics, "green");
    assert!(
        served >= 1.0,
        "the new process served the traffic after the upgrade"
    );
    let log = setup.old.log();
    assert!(log.contains("draining for the new process"), "{log}");
}

/// Case C02 over a binary upgrade: green's only endpoint fails its health probes (`/healthz` 503,
/// while it would answer `/api`) throughout. Neither the old process, from its start, nor the new
/// one, which probes green before it takes over the traffic (the old one serves meanwhile), sends
/// a request to green, and no request fails across the handover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c02_an_upgrade_while_a_green_endpoint_is_down_sends_it_nothing_and_fails_nothing() {
    let unready = ["--unready-for", "600s"];
    let mut setup = Setup::start_with_green("10s", &unready, |config| {
        config["routes"][0]["blue"]["weight"] = json!(50);
        config["routes"][0]["green"]["weight"] = json!(50);
        config["routes"][0]["health"] =
            json!({ "interval": "1s", "timeout": "500ms", "rise": 2, "fall": 2 });
    })
    .await;
    let traffic = Traffic::start(setup.listen, 4);
    traffic.more(300).await;

    let mut new = setup.upgrade_and_retire_old(Duration::from_secs(20)).await;
    traffic.more(300).await;
    let to_green = traffic.answered_by("v2");
    let answered = traffic.stop_without_errors().await;

    assert_eq!(
        to_green, 0,
        "requests answered by green, which never passed a probe"
    );
    assert!(answered >= 600, "{answered} answered");
    assert!(new.try_exit().is_none(), "the new process serves");
    // The new process took the traffic only once its first probe round was over: both verdicts
    // are in its log before it serves.
    let log = new.log();
    let at = |line: &str| {
        log.find(line)
            .unwrap_or_else(|| panic!("no {line:?} in the new process's log: {log}"))
    };
    let serving = at("proxy serving");
    assert!(
        at("binary upgrade: probing the endpoints") < serving,
        "{log}"
    );
    assert!(
        at("endpoint passed its first health check") < serving,
        "{log}"
    );
    assert!(
        at("endpoint failed its first health check") < serving,
        "{log}"
    );
    let green = &setup.admin.status().await["routes"][0]["green"];
    assert_eq!(green["requests"], 0, "{green}");
}

/// One `GET /api` to `listen` on a new connection: its status.
async fn status_of_one_request(listen: SocketAddr) -> u16 {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let request = http::Request::get(format!("http://{listen}/api"))
        .body(Empty::new())
        .unwrap();
    client.request(request).await.unwrap().status().as_u16()
}

/// `routes[].fail_open` over a binary upgrade. A probe path typo reloaded by SIGHUP makes the
/// checks hold out blue's endpoint, which passed them before: the route fails open and serves.
/// The new process inherits the routes, typo included, and its first probe of the endpoint fails
/// too; before, the endpoint had then never passed a check in the new process, so the route
/// could not fail open and every request after the upgrade got 503 "no endpoint" (trial edge27):
/// a zero-downtime upgrade turned the checks' mistake into the outage fail-open exists to
/// prevent. The old process now hands over which endpoints passed a check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_failing_open_still_fails_open_after_an_upgrade() {
    let health = |path: &str| json!({ "path": path, "interval": "500ms", "timeout": "500ms", "rise": 1, "fall": 1 });
    let mut setup = Setup::start_with("10s", |config| {
        config["routes"][0]["health"] = health("/healthz");
    })
    .await;
    assert_eq!(status_of_one_request(setup.listen).await, 200);
    // The typo: the sample app answers `/slow?ms=typo` with 400.
    let text = std::fs::read_to_string(&setup.config).unwrap();
    let mut json: Value = serde_json::from_str(&text).unwrap();
    json["routes"][0]["health"] = health("/slow?ms=typo");
    write_json(setup.dir.path(), "proxy.yaml", &json);
    kill(Pid::from_raw(setup.old.pid() as i32), Signal::SIGHUP).unwrap();
    let admin = &setup.admin;
    wait_until(
        Duration::from_secs(20),
        "the route failing open",
        || async {
            (admin.status().await["routes"][0]["failing_open"] == json!(true)).then_some(())
        },
    )
    .await;
    assert_eq!(status_of_one_request(setup.listen).await, 200);

    let new = setup.upgrade_and_retire_old(Duration::from_secs(20)).await;
    let log = new.log();
    assert!(
        log.contains("endpoint failed its first health check"),
        "the new process's own probe failed too: {log}"
    );
    for _ in 0..3 {
        assert_eq!(
            status_of_one_request(setup.listen).await,
            200,
            "served failing open by the new process: {}",
            new.log()
        );
    }
    let route = &setup.admin.status().await["routes"][0];
    assert_eq!(route["failing_open"], json!(true), "{route}");
}

/// A tripped circuit breaker over a binary upgrade: green answers every request 500, its breaker
/// trips and takes it out (effective weight 0 until the weights are next set). Before, the new
/// process started with the breaker untripped, and green got its weight's share of requests,
/// and their 500s, again from the upgrade on (15 of 40 in trial edge27); the old process now
/// hands over which breakers are tripped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tripped_breaker_stays_tripped_after_an_upgrade() {
    let mut setup = Setup::start_with_failing_green(|route| {
        route["breaker"] = json!({ "max_error_rate": "50%", "window": "60s", "min_requests": 10 });
    })
    .await;
    let listen = setup.listen;
    let admin = &setup.admin;
    wait_until(
        Duration::from_secs(20),
        "green's breaker tripped",
        || async {
            status_of_one_request(listen).await;
            (admin.status().await["routes"][0]["green"]["tripped"] == json!(true)).then_some(())
        },
    )
    .await;

    let new = setup.upgrade_and_retire_old(Duration::from_secs(20)).await;
    all_served_by_blue(setup.listen, &new, "whose breaker tripped").await;
    let green = &setup.admin.status().await["routes"][0]["green"];
    assert_eq!(green["tripped"], json!(true), "{green}");
    assert!(new.log().contains("the circuit breaker stays tripped"));
}

/// An outlier ejection over a binary upgrade: green answers every request 500, outlier detection
/// ejects its one endpoint for 60 s, and the route serves from blue alone (fail-open does not
/// apply: blue can serve). Before, the new process started with the endpoint back, and green got
/// its weight's share of requests, and their 500s, again from the upgrade on until it was ejected
/// anew (the gap trial edge27 left); the old process now hands over the ejection, with the time
/// left of it and its count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ejected_endpoint_stays_ejected_after_an_upgrade() {
    let mut setup = Setup::start_with_failing_green(|route| {
        route["outlier"] =
            json!({ "consecutive_5xx": 3, "base_ejection": "60s", "max_ejection": "300s" });
    })
    .await;
    let listen = setup.listen;
    let admin = &setup.admin;
    let ejected = |status: Value| {
        let endpoint = &status["routes"][0]["green"]["health"][0];
        (endpoint["ejected_for_ms"].as_u64().is_some()).then(|| endpoint.clone())
    };
    let before = wait_until(
        Duration::from_secs(20),
        "green's endpoint ejected",
        || async {
            status_of_one_request(listen).await;
            ejected(admin.status().await)
        },
    )
    .await;

    let new = setup.upgrade_and_retire_old(Duration::from_secs(20)).await;
    all_served_by_blue(setup.listen, &new, "whose endpoint was ejected").await;
    let after = ejected(setup.admin.status().await).expect("still ejected after the upgrade");
    assert_eq!(after["ejections"], before["ejections"], "{after}");
    let left = |endpoint: &Value| endpoint["ejected_for_ms"].as_u64().unwrap();
    assert!(left(&after) <= left(&before), "{before} then {after}");
    assert!(new.log().contains("the endpoint stays ejected"));
}

/// Sends 40 requests to `listen`, each of which must get 200: none reached the failing green of
/// [`Setup::start_with_failing_green`], which `why` says should have been kept from it; panics
/// with `new`'s log otherwise.
async fn all_served_by_blue(listen: SocketAddr, new: &Crossfade, why: &str) {
    for _ in 0..40 {
        assert_eq!(
            status_of_one_request(listen).await,
            200,
            "a request went to green, {why}: {}",
            new.log()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_request_in_flight_during_an_upgrade_completes_on_the_old_process() {
    let mut setup = Setup::start("10s").await;
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    // Long enough to be in flight when the new process (started below) is ready, even on a busy
    // machine.
    let uri = format!("http://{}/slow?ms=6000", setup.listen);
    let request = http::Request::get(uri).body(Empty::new()).unwrap();
    let slow = tokio::spawn(async move { client.request(request).await });
    // The old process has dispatched it before its successor starts (a fixed pause was not
    // always enough on a loaded machine).
    wait_until(
        Duration::from_secs(15),
        "the slow request in flight",
        || async {
            let metrics = setup.admin.metrics().await;
            (metrics.sum("crossfade_in_flight_requests", &[]) >= 1.0).then_some(())
        },
    )
    .await;

    let mut new = setup.upgrade();
    setup.handed_over().await;
    assert!(
        !slow.is_finished(),
        "the slow request is still in flight at the handover"
    );
    assert!(pid_alive(setup.old.pid()), "the old process waits for it");
    let response = slow.await.unwrap().expect("the slow request is answered");
    assert_eq!(response.status(), 200);
    // Only a draining process says this: the response came from the old one.
    let connection = response
        .headers()
        .get("connection")
        .map(|v| v.to_str().unwrap());
    assert_eq!(connection, Some("close"), "{:?}", response.headers());
    let body = response
        .into_body()
        .collect()
        .await
        .expect("the whole body");
    assert!(!body.to_bytes().is_empty());
    let status = setup.old.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}");
    assert!(new.try_exit().is_none(), "the new process serves");
    let (status, _) = setup
        .admin
        .get_text("/status")
        .await
        .expect("admin answers");
    assert_eq!(status, 200);
}

/// Kills a process this test started indirectly (the SIGUSR2 successor) when dropped.
struct Reap(u32);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0 as i32), Signal::SIGKILL);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_websocket_stays_open_until_the_drain_deadline_of_a_sigusr2_upgrade() {
    let drain = Duration::from_secs(4);
    let mut setup = Setup::start("4s").await;
    let session = crate::support::ws::Session::open(setup.listen, Duration::from_millis(200)).await;

    let old_pid = setup.old.pid();
    let signalled = tokio::time::Instant::now();
    kill(Pid::from_raw(old_pid as i32), Signal::SIGUSR2).expect("SIGUSR2");
    let new_pid = wait_until(Duration::from_secs(10), "the successor process", || async {
        children_of(old_pid).first().copied()
    })
    .await;
    let _reap = Reap(new_pid);
    setup.handed_over().await;
    let status = setup.old.wait_exit(drain + Duration::from_secs(10)).await;
    let exited = signalled.elapsed();
    assert!(status.success(), "{status}");
    assert!(pid_alive(new_pid), "the successor serves");

    let log = session.finish(Duration::from_secs(5)).await;
    let closed_at = log.server_close_at.expect("a close frame from the proxy");
    // The deadline runs from the handover, which comes after the signal: a lower bound that no
    // scheduling delay can break.
    let open_for = closed_at.duration_since(signalled);
    assert_eq!(
        log.server_close.as_ref().map(|(code, _)| *code),
        Some(CloseCode::Away),
        "{log:?}"
    );
    assert!(
        open_for >= drain,
        "closed {open_for:?} after SIGUSR2, before the {drain:?} drain deadline"
    );
    assert!(exited >= open_for, "the old process exits after closing it");
    assert!(
        log.replies.len() >= 15,
        "the session kept echoing while draining: {log:?}"
    );
    log.check_echoes().expect("every echo in order");
    // New connections reach the successor.
    let (status, _) = Admin::new(setup.listen)
        .get_text("/api")
        .await
        .expect("the successor answers");
    assert_eq!(status, 200);
}

/// Trial 11 L2: a process that handed over and still drains (a WebSocket keeps it) logs the
/// exit of the successor it started (which handed over in turn) as what it is, not as a failed
/// upgrade after which it "keeps serving".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_process_does_not_say_it_keeps_serving_when_its_successor_exits() {
    let mut setup = Setup::start("60s").await;
    let session = crate::support::ws::Session::open(setup.listen, Duration::from_millis(200)).await;
    let first = setup.old.pid();
    kill(Pid::from_raw(first as i32), Signal::SIGUSR2).expect("SIGUSR2 the first process");
    let second = wait_until(Duration::from_secs(10), "the second process", || async {
        children_of(first).first().copied()
    })
    .await;
    let _second = Reap(second);
    setup.handed_over().await;
    // Each process logs "proxy serving" with its pid once its upgrade socket listens; the three
    // share the first one's log.
    let serving = |count: usize| {
        let setup = &setup;
        async move {
            let pids = serving_pids(&setup.old.log());
            (pids.len() >= count).then_some(pids)
        }
    };
    let pids = wait_until(
        Duration::from_secs(15),
        "the second process serving",
        || serving(2),
    )
    .await;
    assert_eq!(pids[..2], [first, second]);
    kill(Pid::from_raw(second as i32), Signal::SIGUSR2).expect("SIGUSR2 the second process");
    let pids = wait_until(Duration::from_secs(15), "the third process serving", || {
        serving(3)
    })
    .await;
    let third = pids[2];
    let _third = Reap(third);
    let exited = format!("pid={second} status=");
    let log = wait_until(
        Duration::from_secs(30),
        "the first process's line on the second's exit",
        || async {
            let log = setup.old.log();
            log.lines()
                .any(|l| l.contains("binary upgrade:") && l.contains(&exited))
                .then_some(log)
        },
    )
    .await;
    assert!(pid_alive(first), "the first process still drains: {log}");
    let line = log
        .lines()
        .find(|l| l.contains("binary upgrade:") && l.contains(&exited))
        .unwrap();
    assert!(
        line.contains("exited after this one handed over; this one is draining"),
        "{line}"
    );
    assert!(!log.contains("keeps serving"), "{log}");
    session.close();
    let status = setup.old.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "{status}");
    assert!(pid_alive(third), "the third process serves");
}

/// The pids of the "proxy serving" lines in `log`, in order.
fn serving_pids(log: &str) -> Vec<u32> {
    log.lines()
        .filter(|l| l.contains("proxy serving"))
        .filter_map(|l| {
            let pid = l.split("pid=").nth(1)?;
            pid.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_binary_that_fails_to_start_leaves_the_old_one_serving() {
    let mut setup = Setup::start("5s").await;
    let traffic = Traffic::start(setup.listen, 2);
    traffic.more(100).await;

    // A new process whose config is invalid exits before it asks for anything.
    let bad = write_json(setup.dir.path(), "bad.yaml", &json!({ "routes": [] }));
    let mut failed = start_proxy(setup.dir.path(), &bad, &setup.socket);
    let status = failed.wait_exit(Duration::from_secs(10)).await;
    assert!(!status.success(), "an invalid config fails the new process");
    traffic.more(100).await;

    // One that takes the sockets and dies before it is ready (a crash mid-handover).
    let mut crashed = std::os::unix::net::UnixStream::connect(&setup.socket).expect("connect");
    crashed
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut first = [0u8; 1];
    std::io::Read::read_exact(&mut crashed, &mut first).expect("the sockets arrive");
    drop(crashed);
    wait_until(
        Duration::from_secs(5),
        "the old process to notice",
        || async { setup.old.log().contains("still serving").then_some(()) },
    )
    .await;
    traffic.more(100).await;
    assert!(setup.old.try_exit().is_none(), "the old process serves on");

    // A good one then takes over.
    let mut new = setup.upgrade_and_retire_old(Duration::from_secs(15)).await;
    traffic.more(100).await;
    traffic.stop_without_errors().await;
    assert!(new.try_exit().is_none());
}

/// Trial report 3 §7: `--upgrade-socket` naming a file that is not a socket (a typo, a swapped
/// argument) is refused naming the flag and the path; the file is left as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_socket_path_holding_a_regular_file_is_refused_and_the_file_kept() {
    let dir = temp_dir();
    let blue = SampleApp::start(dir.path(), "blue", "blue-0", &[]).await;
    let config = write_json(dir.path(), "proxy.yaml", &proxy_config(&[blue.addr], &[]));
    let precious = dir.path().join("precious.txt");
    std::fs::write(&precious, "important data").unwrap();
    let args = [
        OsStr::new("proxy"),
        config.as_os_str(),
        OsStr::new("--upgrade-socket"),
        precious.as_os_str(),
    ];
    let out = crate::support::child::run_to_end(args, Duration::from_secs(15)).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    let named = format!(
        "--upgrade-socket {}: a regular file is there",
        precious.display()
    );
    assert!(out.stderr.contains(&named), "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(&precious).unwrap(),
        "important data"
    );
}

/// Trial report 3 §3: a binary upgrade keeps the weights in force, and the new process's first
/// SIGHUP judges the file against what the *old* process last loaded: an edit of the weights made
/// in the file before the upgrade is applied then, not mistaken for an untouched file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_upgrade_a_sighup_applies_weights_edited_in_the_file_before_it() {
    let mut setup = Setup::start("5s").await;
    let body = json!({ "blue": "70%", "green": "30%" });
    let (status, answer) = setup.admin.put("/routes/web/weights", &body).await;
    assert_eq!(status, 200, "{answer}");
    // The operator edits the weights in the file, then upgrades the binary (no SIGHUP between).
    let mut json: Value = serde_json::from_str(&std::fs::read_to_string(&setup.config).unwrap())
        .expect("the config is JSON");
    json["routes"][0]["blue"]["weight"] = json!(50);
    json["routes"][0]["green"]["weight"] = json!(50);
    write_json(setup.dir.path(), "proxy.yaml", &json);
    let mut new = setup.upgrade();
    setup.handed_over().await;
    let weights = || async { setup.admin.status().await["routes"][0]["weights"].clone() };
    assert_eq!(
        weights().await,
        json!({ "blue": 7000, "green": 3000 }),
        "kept"
    );
    // Trial 13 N8: its start line said the weights came "from the config file".
    let old_pid = setup.old.pid();
    let serving = wait_until(Duration::from_secs(15), "the new start line", || async {
        let log = new.log();
        let line = log.lines().find(|l| l.contains("proxy serving"))?;
        Some(line.to_owned())
    })
    .await;
    assert!(
        serving.contains(&format!(
            "handed over by pid {old_pid} with the routes in force"
        )) && serving.contains("apply at the next SIGHUP")
            && !serving.contains("from the config file"),
        "{serving}"
    );
    kill(Pid::from_raw(new.pid() as i32), Signal::SIGHUP).expect("SIGHUP the new process");
    wait_until(Duration::from_secs(10), "the file's weights", || async {
        (weights().await == json!({ "blue": 5000, "green": 5000 })).then_some(())
    })
    .await;
    // Logged just after the table is published: waited for, not read once.
    wait_until(Duration::from_secs(10), "the reload's warning", || async {
        new.log()
            .contains("replaced by the file's (blue 50%, green 50%)")
            .then_some(())
    })
    .await;
    let _ = setup.old.wait_exit(Duration::from_secs(15)).await;
    new.terminate(Duration::from_secs(15)).await;
}

/// Trial report 5 F2: a SIGUSR2 successor that cannot start (its config is invalid) says why in one
/// error record of the log it shares with the serving process, naming each field that is wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigusr2_successor_with_an_invalid_config_logs_one_error_line() {
    let mut setup = Setup::start("5s").await;
    let mut json: Value = serde_json::from_str(&std::fs::read_to_string(&setup.config).unwrap())
        .expect("the config is JSON");
    json["routes"][0]["blue"]["weight"] = json!(90);
    json["routes"][0]["green"]["weight"] = json!(20);
    json["routes"][0]["name"] = json!("");
    write_json(setup.dir.path(), "proxy.yaml", &json);
    kill(Pid::from_raw(setup.old.pid() as i32), Signal::SIGUSR2).expect("SIGUSR2");
    let log = wait_until(
        Duration::from_secs(15),
        "the new process's exit",
        || async {
            let log = setup.old.log();
            log.contains("binary upgrade: the new process exited")
                .then_some(log)
        },
    )
    .await;
    let line = log
        .lines()
        .find(|l| l.contains("ERROR") && l.contains("the new process cannot start"))
        .unwrap_or_else(|| panic!("no ERROR line: {log}"));
    assert!(
        line.contains(
            "invalid config: routes[0].name: must not be empty; routes[0].green.weight: blue 90% \
             + green 20% = 110%"
        ),
        "{line}"
    );
    let orphans: Vec<_> = log
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    assert!(
        orphans.is_empty(),
        "lines without a timestamp: {orphans:?}\n{log}"
    );
    assert!(setup.old.try_exit().is_none(), "the old process serves on");
    setup.old.terminate(Duration::from_secs(15)).await;
}

/// The message of each line of `log`, without its timestamp, that appears more than once.
fn repeated_lines(log: &str) -> Vec<&str> {
    let messages: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(_, message)| message.trim()))
        .filter(|m| !m.is_empty())
        .collect();
    let mut repeated: Vec<&str> = messages
        .iter()
        .copied()
        .filter(|m| messages.iter().filter(|other| *other == m).count() > 1)
        .collect();
    repeated.dedup();
    repeated
}

/// Trial 13 N13: in the log a SIGUSR2 upgrade's two processes share, the new process repeated
/// the old one's start-time warnings (a route the file shadows, an open-file limit below what
/// `limits.max_connections` needs) although it took the routes in force over and inherited the
/// limit, and confirmed the old one's drain, which the old one logs. Each event is now logged
/// once, by the process it belongs to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigusr2_upgrade_logs_each_event_once() {
    let mut setup = Setup::start_with("5s", |json| {
        let mut wide = json["routes"][0].clone();
        wide["name"] = json!("wide");
        wide["hosts"] = json!(["a.example", "b.example"]);
        let mut shadowed = json["routes"][0].clone();
        shadowed["name"] = json!("shadowed");
        shadowed["hosts"] = json!(["a.example"]);
        let routes = json["routes"].as_array_mut().expect("routes");
        routes.push(wide);
        routes.push(shadowed);
        // Above any hard open-file limit (Linux caps it at fs.nr_open, at most 2^30).
        json["limits"] = json!({ "max_connections": 1_000_000_000_u64 });
    })
    .await;
    let first = setup.old.pid();
    kill(Pid::from_raw(first as i32), Signal::SIGUSR2).expect("SIGUSR2");
    // The old process, with no connection to drain, exits at once: the new one is known by its
    // start line, not as its child.
    let second = wait_until(
        Duration::from_secs(15),
        "the new process serving",
        || async { serving_pids(&setup.old.log()).get(1).copied() },
    )
    .await;
    let _second = Reap(second);
    let status = setup.old.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "{status}");
    let log = setup.old.log();
    assert_eq!(serving_pids(&log), [first, second], "{log}");
    for (what, count) in [
        ("route \"shadowed\" is never chosen", 1),
        ("need 2000000000 open files", 1),
        ("drains", 1),
    ] {
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(what)).collect();
        assert_eq!(lines.len(), count, "{what:?}: {lines:#?}\n{log}");
    }
    assert_eq!(repeated_lines(&log), Vec::<&str>::new(), "{log}");
    assert!(
        log.contains(&format!("binary upgrade: took over from pid {first}")),
        "{log}"
    );
    // The new process serves the old one's routes; the file's warnings come with the SIGHUP
    // that applies it.
    kill(Pid::from_raw(second as i32), Signal::SIGHUP).expect("SIGHUP");
    wait_until(Duration::from_secs(15), "the reload's warning", || async {
        let log = setup.old.log();
        log.lines()
            .any(|l| l.contains("SIGHUP: ") && l.contains("route \"shadowed\" is never chosen"))
            .then_some(())
    })
    .await;
}

/// Trial report 5 F9: `--upgrade-socket` in a directory that does not exist is refused naming the
/// flag, the path and the directory, before any listener is bound (no "draining" of connections it
/// had accepted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_socket_in_a_missing_directory_is_refused_before_binding() {
    let dir = temp_dir();
    let json = proxy_config(&["127.0.0.1:9".parse().unwrap()], &[]);
    let config = write_json(dir.path(), "proxy.yaml", &json);
    let socket = dir.path().join("nodir").join("x.sock");
    let args = [
        OsStr::new("proxy"),
        config.as_os_str(),
        OsStr::new("--upgrade-socket"),
        socket.as_os_str(),
    ];
    let out = crate::support::child::run_to_end(args, Duration::from_secs(15)).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    let named = format!(
        "--upgrade-socket {}: directory {} does not exist",
        socket.display(),
        dir.path().join("nodir").display()
    );
    assert!(out.stderr.contains(&named), "{}", out.stderr);
    assert!(
        !out.stderr.contains("draining"),
        "nothing was bound, so nothing drains: {}",
        out.stderr
    );
    // Trial 25: a path that names a directory (`x.sock/`) passed the check, and the bind failed
    // once the listeners were bound ("binding the upgrade socket: No such file or directory",
    // without the flag or the path, after "draining client connections").
    for named in ["x.sock/", "."] {
        let socket = dir.path().join(named);
        let args = [
            OsStr::new("proxy"),
            config.as_os_str(),
            OsStr::new("--upgrade-socket"),
            socket.as_os_str(),
        ];
        let out = crate::support::child::run_to_end(args, Duration::from_secs(15)).await;
        assert_eq!(out.code, Some(1), "{named}: {out:?}");
        let said = format!(
            "--upgrade-socket {}: names a directory, not a socket file",
            socket.display()
        );
        assert!(out.stderr.contains(&said), "{named}: {}", out.stderr);
        assert!(!out.stderr.contains("draining"), "{named}: {}", out.stderr);
    }
}

/// The `Via` entry of a response from a fresh connection to `listen`.
async fn via_of(listen: SocketAddr) -> String {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let request = http::Request::get(format!("http://{listen}/"))
        .header(http::header::CONNECTION, "close")
        .body(Empty::new())
        .unwrap();
    let response = client.request(request).await.expect("an answer");
    assert_eq!(response.status(), 200);
    let via = response.headers().get_all(http::header::VIA).iter();
    let lines: Vec<String> = via.map(|v| v.to_str().unwrap().to_owned()).collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    lines[0].clone()
}

/// The proxy's random `Via` pseudonym (RFC 9110 §7.6.3) passes to the successor: backends' logs
/// and loop detection see one proxy before and after a binary upgrade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_random_via_pseudonym_is_kept_over_an_upgrade() {
    let mut setup = Setup::start("5s").await;
    let before = via_of(setup.listen).await;
    assert!(before.starts_with("1.1 crossfade-"), "{before}");
    let mut new = setup.upgrade();
    setup.handed_over().await;
    let _ = setup.old.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(
        via_of(setup.listen).await,
        before,
        "the new process's entry"
    );
    assert!(
        new.log().contains("keeping the Via pseudonym"),
        "{}",
        new.log()
    );
    new.terminate(Duration::from_secs(15)).await;
}

/// Plays a successor that takes the listening sockets and the routes and then hangs: connects to
/// the upgrade socket and reads the exchange's first step (the byte that carries the sockets,
/// whose descriptors this end does not take, then the state line), never saying `ready`. Returns
/// the connection (dropping it is the successor going away) and the state line as JSON; `log`
/// (the old process's) is in the message of a failure.
///
/// Blocking reads (each waits up to 20 s) on a thread of their own: the byte that carries the
/// descriptors ends a read short, and tokio takes a short read for an emptied socket and waits
/// for a readiness edge that the state line, already queued behind it, never gives.
async fn hold_a_handover(
    socket: &Path,
    log: impl Fn() -> String,
) -> (std::os::unix::net::UnixStream, Value) {
    let path = socket.to_path_buf();
    let read = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut stream = std::os::unix::net::UnixStream::connect(&path)?;
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        let mut received = Vec::new();
        while !received.ends_with(b"\n") {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).map_err(|e| {
                std::io::Error::new(e.kind(), format!("{e} (received {received:?})"))
            })?;
            if n == 0 {
                let message = format!("the old process closed the exchange after {received:?}");
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    message,
                ));
            }
            received.extend_from_slice(&chunk[..n]);
        }
        Ok((stream, received))
    })
    .await
    .expect("the reading thread");
    let (stream, received) = read.unwrap_or_else(|e| {
        panic!(
            "no routes from the upgrade socket: {e}; the old process's log:\n{}",
            log()
        )
    });
    let line = received
        .strip_prefix(b"S")
        .expect("the sockets' byte first");
    let state = serde_json::from_slice(line).expect("the state line is JSON");
    (stream, state)
}

/// Trial report 11 L3: a route change that reaches the old process after it handed its routes to
/// a successor was answered 200 and lost. Now it is refused with 503 and `Retry-After`, naming the
/// successor's pid, for as long as the handover lasts (held here by a successor that never says
/// `ready`); accepted again once that successor goes away; and after a real upgrade the new
/// process applies it with a generation above every one the old process gave out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weight_write_during_a_handover_is_refused_with_retry_after_and_then_applied_by_the_new_process(
) {
    let mut setup = Setup::start("5s").await;
    let weights = |blue: u32| json!({ "blue": blue, "green": 10_000 - blue });
    let (status, answer) = setup
        .admin
        .put("/routes/web/weights", &weights(9_000))
        .await;
    assert_eq!(status, 200, "{answer}");
    let before = answer["generation"].as_u64().expect("a generation");

    // This test is the successor: the old process has sent the routes and waits for `ready`.
    let (held, state) = hold_a_handover(&setup.socket, || setup.old.log()).await;
    assert_eq!(state["generation"], json!(before), "{state}");
    let me = std::process::id();
    let (status, headers, body) = setup
        .admin
        .request_with("PUT", "/routes/web/weights", Some(&weights(2_000)), &[])
        .await
        .expect("an answer from the old process");
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        headers.get(http::header::RETRY_AFTER).map(|v| v.as_bytes()),
        Some(&b"1"[..]),
        "{headers:?}"
    );
    let body: Value = serde_json::from_str(&body).expect("a JSON body");
    assert_eq!(body["handover"]["pid"], json!(me), "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!("a binary upgrade is handing over to pid {me}")),
        "{body}"
    );
    let status_now = setup.admin.status().await;
    assert_eq!(status_now["generation"], json!(before), "nothing applied");
    assert_eq!(
        status_now["routes"][0]["weights"],
        json!({ "blue": 9_000, "green": 1_000 })
    );
    assert!(
        setup
            .old
            .log()
            .contains(&format!("routes handed to pid {me}")),
        "{}",
        setup.old.log()
    );

    // The successor goes away before `ready`: the old process serves on and takes writes again.
    drop(held);
    wait_until(Duration::from_secs(20), "the failed handover", || async {
        setup
            .old
            .log()
            .contains("route changes accepted again")
            .then_some(())
    })
    .await;
    let (status, answer) = setup
        .admin
        .put("/routes/web/weights", &weights(8_000))
        .await;
    assert_eq!(status, 200, "{answer}");
    let last_old = answer["generation"].as_u64().expect("a generation");
    assert_eq!(last_old, before + 1);

    // A real upgrade: the new process has the old one's routes, and its generations count on.
    let mut new = setup.upgrade();
    setup.handed_over().await;
    let _ = setup.old.wait_exit(Duration::from_secs(15)).await;
    let status_now = setup.admin.status().await;
    assert_eq!(status_now["pid"], json!(new.pid()), "{status_now}");
    assert_eq!(
        status_now["routes"][0]["weights"],
        json!({ "blue": 8_000, "green": 2_000 }),
        "the write the old process acknowledged last is in force"
    );
    assert!(
        status_now["generation"].as_u64() > Some(last_old),
        "{status_now}"
    );
    let (status, answer) = setup
        .admin
        .put("/routes/web/weights", &weights(2_000))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer["generation"].as_u64() > Some(last_old + 1),
        "generations keep rising across the upgrade: {answer} after {last_old}"
    );
    assert_eq!(
        setup.admin.status().await["routes"][0]["weights"],
        json!({ "blue": 2_000, "green": 8_000 })
    );
    new.terminate(Duration::from_secs(15)).await;
}

/// Trial 13 N13: with the upgrade socket file deleted (a temporary-file cleaner), a SIGUSR2
/// successor reported `Address already in use`, naming a listener, not the missing socket. It now
/// says that no process listens on `--upgrade-socket`, and the old process serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigusr2_successor_without_the_upgrade_socket_says_so() {
    let mut setup = Setup::start("5s").await;
    std::fs::remove_file(&setup.socket).expect("remove the upgrade socket");
    kill(Pid::from_raw(setup.old.pid() as i32), Signal::SIGUSR2).expect("SIGUSR2");
    let log = wait_until(
        Duration::from_secs(30),
        "the new process's exit",
        || async {
            let log = setup.old.log();
            log.contains("binary upgrade: the new process exited")
                .then_some(log)
        },
    )
    .await;
    let line = log
        .lines()
        .find(|l| l.contains("ERROR") && l.contains("the new process cannot start"))
        .unwrap_or_else(|| panic!("no ERROR line: {log}"));
    let expected = format!(
        "--upgrade-socket {}: no process listens there",
        setup.socket.display()
    );
    assert!(line.contains(&expected), "{line}");
    assert!(!line.contains("already in use"), "{line}");
    // Trial 13 N13: that the old process serves on is its own to say, once; the new one said it
    // too, and "binary upgrade:" twice in its line.
    assert_eq!(log.matches("keeps serving").count(), 1, "{log}");
    assert_eq!(line.matches("binary upgrade:").count(), 1, "{line}");
    assert!(setup.old.try_exit().is_none(), "the old process serves on");
    setup.old.terminate(Duration::from_secs(15)).await;
}

/// Trial 17, T3: a new process whose config names another listen address serves on the inherited
/// socket (and says so), but its SIGHUPs compared the file with the address it did not serve: a
/// file put back to the address served was warned about as `changed settings not applied ...:
/// listen`, and one still naming the address not served was not. A SIGHUP compares with the
/// addresses in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_upgrade_that_kept_the_listen_socket_a_sighup_compares_the_file_with_it() {
    let mut setup = Setup::start("5s").await;
    let original = std::fs::read_to_string(&setup.config).unwrap();
    let mut json: Value = serde_json::from_str(&original).expect("the config is JSON");
    let elsewhere = crate::support::free_addr();
    json["listen"] = json!(elsewhere.to_string());
    write_json(setup.dir.path(), "proxy.yaml", &json);
    let mut new = setup.upgrade();
    setup.handed_over().await;
    wait_until(
        Duration::from_secs(15),
        "the kept socket's warning",
        || async {
            new.log()
                .contains("listen: the inherited socket is kept")
                .then_some(())
        },
    )
    .await;
    let _ = setup.old.wait_exit(Duration::from_secs(15)).await;
    let hup = |n: usize| {
        kill(Pid::from_raw(new.pid() as i32), Signal::SIGHUP).expect("SIGHUP the new process");
        let new = &new;
        async move {
            wait_until(Duration::from_secs(10), "the reload", || async {
                (new.log().matches("SIGHUP: routes reloaded").count() == n).then_some(())
            })
            .await;
        }
    };
    // The file names the address served again: nothing to restart for.
    std::fs::write(&setup.config, &original).unwrap();
    hup(1).await;
    assert!(
        !new.log().contains("changed settings not applied"),
        "{}",
        new.log()
    );
    // The file names an address not served: that needs a restart.
    write_json(setup.dir.path(), "proxy.yaml", &json);
    hup(2).await;
    let log = new.log();
    let warning = log
        .lines()
        .find(|l| l.contains("changed settings not applied"))
        .unwrap_or_else(|| panic!("no warning: {log}"));
    assert!(warning.ends_with(": listen"), "{warning}");
    new.terminate(Duration::from_secs(15)).await;
}

/// Puts `program` at `path` at once (a rename over it, as package managers install binaries): a
/// hard link to it, or a copy where the file system refuses one.
fn install(program: &Path, path: &Path) {
    let staged = path.with_extension("new");
    let _ = std::fs::remove_file(&staged);
    if std::fs::hard_link(program, &staged).is_err() {
        std::fs::copy(program, &staged).expect("copy the binary");
    }
    std::fs::rename(&staged, path).expect("install the binary");
}

/// A proxy run from a binary installed in its test dir with `--upgrade-timeout timeout`, under
/// traffic; then a "new binary" that never gets as far as the upgrade socket is installed there
/// and the proxy is sent SIGUSR2.
struct Hung {
    _dir: tempfile::TempDir,
    _apps: Vec<SampleApp>,
    program: PathBuf,
    old: Crossfade,
    traffic: Option<Traffic>,
    /// The hanging process SIGUSR2 started.
    pid: u32,
}

impl Hung {
    async fn start(timeout: &str) -> Hung {
        let dir = temp_dir();
        let blue = SampleApp::start(dir.path(), "v1", "v1", &[]).await;
        let green = SampleApp::start(dir.path(), "v2", "v2", &[]).await;
        let json = config(blue.addr, green.addr, "5s");
        let config = write_json(dir.path(), "proxy.yaml", &json);
        let socket = dir.path().join("upgrade.sock");
        let admin = Admin::new(addr(&json["admin"]));
        // Run from an installed path, which SIGUSR2 starts again.
        let program = dir.path().join("crossfade");
        install(Path::new(crate::support::BIN), &program);
        let args = [
            OsStr::new("proxy"),
            config.as_os_str(),
            OsStr::new("--upgrade-socket"),
            socket.as_os_str(),
            OsStr::new("--upgrade-timeout"),
            OsStr::new(timeout),
        ];
        let log = next_proxy_log(dir.path());
        let mut old = Crossfade::spawn_program(&program, dir.path(), &log, args);
        old.wait_ready(&admin, Duration::from_secs(15)).await;
        let old_pid = old.pid();
        let traffic = Traffic::start(addr(&json["listen"]), 2);
        traffic.more(50).await;

        let hanging = dir.path().join("hanging.sh");
        std::fs::write(&hanging, "#!/bin/sh\nexec sleep 600\n").unwrap();
        let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
        std::fs::set_permissions(&hanging, mode).unwrap();
        install(&hanging, &program);
        kill(Pid::from_raw(old_pid as i32), Signal::SIGUSR2).expect("SIGUSR2");
        let pid = wait_until(
            Duration::from_secs(10),
            "the process SIGUSR2 started",
            || async { children_of(old_pid).first().copied() },
        )
        .await;
        wait_until(Duration::from_secs(10), "the start logged", || async {
            old.log().contains("SIGUSR2: started").then_some(())
        })
        .await;
        Hung {
            _dir: dir,
            _apps: vec![blue, green],
            program,
            old,
            traffic: Some(traffic),
            pid,
        }
    }
}

impl Drop for Hung {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
    }
}

/// A process that SIGUSR2 started and that hangs before it connects to the upgrade socket (a new
/// binary that hangs at start) was never timed out: the old process waited on it without a word,
/// and each further SIGUSR2 started one more. Now a further SIGUSR2 is ignored while it starts,
/// it is killed after `--upgrade-timeout`, the old process serves throughout, and the next
/// SIGUSR2 (with a good binary installed) upgrades.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigusr2_successor_that_hangs_at_start_is_stopped_and_a_later_sigusr2_upgrades() {
    let mut setup = Hung::start("2s").await;
    let (hung, old_pid) = (setup.pid, setup.old.pid());
    let traffic = setup.traffic.take().expect("traffic");
    // A second SIGUSR2 while it hangs starts no other process.
    kill(Pid::from_raw(old_pid as i32), Signal::SIGUSR2).expect("the second SIGUSR2");
    let ignored = format!("SIGUSR2 ignored: pid {hung}, started by an earlier SIGUSR2");
    let old = &mut setup.old;
    wait_until(
        Duration::from_secs(10),
        "the second SIGUSR2 ignored",
        || async { old.log().contains(&ignored).then_some(()) },
    )
    .await;
    assert_eq!(children_of(old_pid), [hung], "{}", old.log());

    let stopped = wait_until(
        Duration::from_secs(15),
        "the hanging process stopped",
        || async {
            let log = old.log();
            log.lines()
                .find(|l| l.contains("binary upgrade: stopped the new process"))
                .map(str::to_owned)
        },
    )
    .await;
    assert!(stopped.contains(&format!("pid={hung}")), "{stopped}");
    assert!(stopped.contains("this one keeps serving"), "{stopped}");
    let log = old.log();
    let deadline = log
        .lines()
        .find(|l| l.contains("has not connected to the upgrade socket"))
        .unwrap_or_else(|| panic!("no line on the deadline: {log}"));
    assert!(deadline.contains(&format!("pid {hung}")), "{deadline}");
    assert!(!pid_alive(hung), "the hanging process is gone");
    assert!(old.try_exit().is_none(), "the old process serves on");
    traffic.more(50).await;

    // With a good binary installed again, the next SIGUSR2 upgrades.
    install(Path::new(crate::support::BIN), &setup.program);
    kill(Pid::from_raw(old_pid as i32), Signal::SIGUSR2).expect("the third SIGUSR2");
    // Named by its "proxy serving" line: once the old process has exited it is no child of it.
    let new_pid = wait_until(Duration::from_secs(10), "the successor serving", || async {
        serving_pids(&old.log()).get(1).copied()
    })
    .await;
    let _new = Reap(new_pid);
    let status = old.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "{status}");
    traffic.more(50).await;
    traffic.stop_without_errors().await;
    let log = old.log();
    assert_eq!(
        log.matches("SIGUSR2: started").count(),
        2,
        "one process per SIGUSR2 that was not ignored: {log}"
    );
    assert!(pid_alive(new_pid), "the new process serves");
}

/// The same hanging process when the proxy is stopped before its deadline: it is killed with the
/// proxy (there is no process left for it to take over from), not left running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigusr2_successor_still_starting_is_stopped_with_the_proxy() {
    let mut setup = Hung::start("60s").await;
    let status = setup.old.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "{status}");
    let log = setup.old.log();
    assert!(
        log.contains(&format!(
            "SIGTERM: stopping pid {}, which SIGUSR2 started and which has not connected",
            setup.pid
        )),
        "{log}"
    );
    assert!(!pid_alive(setup.pid), "the hanging process is gone: {log}");
}
