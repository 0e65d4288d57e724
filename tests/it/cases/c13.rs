//! C13 — a dead or empty pool keeps its share of traffic (linkerd2#5360, traefik#7693).
//!
//! Right outcome: with green at 50 %, killing every green instance makes the proxy stop choosing
//! green within about a second (passive detection of refused connections), though its configured
//! weight is still 50; failed GETs that never reached green are retried on blue; GET errors are 0
//! after detection and ≤ 1 % overall; a POST already written to green is not retried; the
//! controller rolls back at once (the process driver reports the exit, the analysis sees the
//! errors) and blue is never stopped. When green hangs (SIGSTOP) instead, each request waits at most
//! the upstream response timeout and the active checks mark green down within about 3 s.
//!
//! Where each outcome is asserted (session 44): "a POST written to green is not re-sent" by the
//! proxy-alone kill run, whose slow bodiless POSTs (route `orders`) are all dispatched, on both
//! pools, before the kill: each one in flight on green gets the proxy's 502 and none is re-sent;
//! "failed GETs are retried" by the same run (at least one GET retried off green, and no more
//! retries than failures there); "rolls back within one analysis interval" by the rollout's record
//! (at most one analysis window judged between the kill and the end of the rollout).
//!
//! Scale: 150 GET/s over 8 keep-alive connections plus 10 POST/s on new connections (the case: 200
//! and 20), steps 10/50/100 holding 5 s with a 2 s analysis interval as in the case. The hang run
//! uses `crossfade proxy` over static sample apps (50/50, checks every 1 s, rise 2, fall 2, 500 ms
//! probe timeout, 2 s response timeout); its rollout form, `crossfade run` with the spec's
//! `route.response_timeout`, is `c13_run_hung_preview_requests_wait_at_most_the_routes_response_timeout`.
//! Time bounds carry slack for a loaded 2-core machine (detection: 1.5 s for the kill, 4 s for the
//! hang); the measured values are printed.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::rollout::wait_terminal;
use crate::support::child::wait_state;
use crate::support::trace::{errors, Record};
use crate::support::{
    pid_alive, pids_of, proxy_config, temp_dir, wait_until, Admin, App, Crossfade, Poller,
    RunningProxy, SampleApp, Spec, Trace, TraceConfig,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c13_dead_preview_stops_getting_traffic_and_rolls_back() {
    dead_preview(false).await;
}

/// The same over h2c workloads (`protocol: h2c`, `sample-app --h2c`): the proxy's pooled HTTP/2
/// connections to green die with it, and a request sent on one, or a connect refused after it,
/// must be handled as over HTTP/1.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c13_dead_h2c_preview_stops_getting_traffic_and_rolls_back() {
    dead_preview(true).await;
}

/// The kill run, with h2c workloads when `h2c`.
async fn dead_preview(h2c: bool) {
    let dir = temp_dir();
    let state = dir.path().join("state.json");
    let pool = |name: &str| {
        let app = App::version(name)
            .flags(["--pool", name])
            .set("instances", json!(2));
        match h2c {
            true => app.flags(["--h2c"]).set("protocol", json!("h2c")),
            false => app,
        }
    };
    let mut spec = Spec::new()
        .blue(pool("blue"))
        .green(pool("green"))
        .state_file(&state);
    spec.json["rollout"]["steps"] = json!([10, 50, 100]);
    spec.json["rollout"]["hold"] = json!("5s");
    spec.json["rollout"]["progress_deadline"] = json!("60s");
    spec.json["rollout"]["analysis"]["interval"] = json!("2s");
    let admin = Admin::new(spec.admin());
    let mut child = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    child.wait_ready(&admin, Duration::from_secs(15)).await;
    let trace = Trace::start(TraceConfig::new(spec.listen()));
    let posts = Posts::start(spec.listen(), 10);
    let statuses = Poller::start(admin, "/status", Duration::from_millis(20));

    wait_until(Duration::from_secs(30), "green at 50%", || async {
        let r = &admin.rollout().await["rollout"];
        (r["applied_bp"] == 5_000 && r["weights_pending"] == false).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (blue, green) = pids(&state).await;
    let judged_before = verdicts(&admin.rollout().await["rollout"]);
    let killed = Instant::now();
    for &pid in &green {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
    let rollout = wait_terminal(&admin, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let records = trace.stop().await;
    let posted = posts.stop().await;
    let statuses = statuses.stop().await;
    let metrics = admin.metrics().await;
    let blue_alive = blue.iter().all(|&p| pid_alive(p));
    child.terminate(Duration::from_secs(15)).await;

    assert_eq!(rollout["phase"], "RolledBack", "{rollout:#}");
    assert!(blue_alive, "blue is never stopped");
    // Rolled back within one analysis interval: at most one analysis window (2 s) was judged
    // between the kill and the end of the rollout, read from the rollout's own record.
    let windows_after_kill = verdicts(&rollout) - judged_before;
    assert!(
        windows_after_kill <= 1,
        "{windows_after_kill} analysis windows judged between the kill and the rollback \
         ({judged_before} before it): {rollout:#}"
    );
    // Detection: the first /status answer after the kill that shows no green endpoint up (passive
    // ejection), or green at weight 0 (the rollback), whichever came first.
    let detected = statuses
        .iter()
        .filter(|o| o.sent >= killed)
        .find(|o| green_out(&o.value))
        .map(|o| o.received)
        .expect("green was taken out");
    let detection = detected.duration_since(killed);
    let rolled_back = statuses
        .iter()
        .filter(|o| o.sent >= killed)
        .find(|o| o.value["routes"][0]["weights"]["green"] == 0)
        .map(|o| o.received.duration_since(killed));
    let failed = errors(&records);
    let after: Vec<_> = failed.iter().filter(|r| r.started > detected).collect();
    let post_errors = posted.iter().filter(|p| p.1.is_err()).count();
    let ejections = metrics.sum(
        "crossfade_ejections_total",
        &[("route", "web"), ("backend", "green")],
    );
    println!(
        "C13 kill (h2c {h2c}): detection {detection:?}, weight 0 after {rolled_back:?} \
         ({windows_after_kill} analysis windows judged after the kill), GET errors {}/{} \
         ({} after detection), POST errors {post_errors}/{}, green ejections {ejections}",
        failed.len(),
        records.len(),
        after.len(),
        posted.len()
    );
    assert!(
        detection <= Duration::from_millis(1_500),
        "detection took {detection:?}"
    );
    assert!(
        after.is_empty(),
        "GET errors after detection: {:?}",
        &after[..after.len().min(5)]
    );
    assert!(
        failed.len() * 100 <= records.len(),
        "GET errors {} of {} (> 1%)",
        failed.len(),
        records.len()
    );
    // A POST in flight at the kill fails (it is not re-sent); none that started after detection.
    let late_posts = posted
        .iter()
        .filter(|p| p.0 > detected && p.1.is_err())
        .count();
    assert_eq!(late_posts, 0, "POST errors after detection");
    let reason = rollout["message"].to_string() + &rollout.to_string();
    assert!(
        reason.contains("exit") || reason.contains("fail"),
        "{rollout:#}"
    );
}

/// The proxy alone (no controller to roll back): passive ejection must take the dead green out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c13_dead_preview_is_ejected_by_the_proxy_alone_within_a_second() {
    let dir = temp_dir();
    let blue = SampleApp::start_many(dir.path(), "blue", 2).await;
    let mut green = SampleApp::start_many(dir.path(), "green", 2).await;
    let mut config = proxy_config(&SampleApp::addrs(&blue), &SampleApp::addrs(&green));
    config["routes"][0]["blue"]["weight"] = json!(50);
    config["routes"][0]["green"]["weight"] = json!(50);
    // With checks, an ejected endpoint comes back only once they pass: no live request re-tries it.
    config["routes"][0]["health"] =
        json!({ "interval": "1s", "timeout": "500ms", "rise": 2, "fall": 2 });
    // Route `orders` (its own host, first so that it wins over `web`): the same pools at 50/50,
    // for the slow POSTs alone, so that its in-flight gauge counts nothing else.
    let orders = json!({
        "name": ORDERS,
        "hosts": [ORDERS_HOST],
        "blue": { "endpoints": SampleApp::addrs(&blue), "weight": 50 },
        "green": { "endpoints": SampleApp::addrs(&green), "weight": 50 },
    });
    let routes = config["routes"].as_array_mut().expect("routes");
    routes.insert(0, orders);
    let proxy = RunningProxy::start(dir.path(), "proxy.yaml", &config).await;
    let trace = Trace::start(TraceConfig::new(proxy.listen));
    let posts = Posts::start(proxy.listen, 10);
    let statuses = Poller::start(proxy.admin, "/status", Duration::from_millis(20));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let slow = slow_posts_in_flight(&proxy).await;
    let in_flight = orders_in_flight(&proxy.admin.metrics().await);

    let killed = Instant::now();
    for app in &mut green {
        app.child.kill_hard();
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let records = trace.stop().await;
    let posted = posts.stop().await;
    let statuses = statuses.stop().await;
    let mut slow_answers = Vec::new();
    for post in slow {
        slow_answers.push(post.await.expect("slow POST task"));
    }
    let metrics = proxy.admin.metrics().await;

    let detected = statuses
        .iter()
        .filter(|o| o.sent >= killed)
        .find(|o| green_out(&o.value))
        .map(|o| o.received)
        .expect("green was ejected");
    let detection = detected.duration_since(killed);
    let failed = errors(&records);
    let after: Vec<_> = failed.iter().filter(|r| r.started > detected).collect();
    let late_green = records
        .iter()
        .filter(|r| r.started > detected && r.pool() == Some("green"))
        .count();
    let post_errors = posted.iter().filter(|p| p.1.is_err()).count();
    let ejections = metrics.sum(
        "crossfade_ejections_total",
        &[
            ("route", "web"),
            ("backend", "green"),
            ("reason", "upstream_failure"),
        ],
    );
    let web_green = [("route", "web"), ("backend", "green")];
    let retried = metrics.sum("crossfade_retries_total", &web_green);
    let get = [("route", "web"), ("backend", "green"), ("method", "GET")];
    let retried_gets = metrics.sum("crossfade_retries_by_method_total", &get);
    let green_failures = metrics.sum("crossfade_upstream_errors_total", &web_green);
    let orders_retried = metrics.sum("crossfade_retries_total", &[("route", ORDERS)]);
    let slow_ok: Vec<_> = slow_answers
        .iter()
        .filter_map(|a| a.as_ref().ok())
        .collect();
    let slow_failed: Vec<_> = slow_answers
        .iter()
        .filter_map(|a| a.as_ref().err())
        .collect();
    println!(
        "C13 kill, proxy alone: ejected after {detection:?}, GET errors {}/{} ({} after), POST \
         errors {post_errors}/{}, green ejections {ejections}, retried off green {retried} ({retried_gets} \
         GETs) after {green_failures} failures; slow POSTs in flight (blue, green) {in_flight:?}: \
         {} answered 2xx, failed {slow_failed:?}, re-sent {orders_retried}",
        failed.len(),
        records.len(),
        after.len(),
        posted.len(),
        slow_ok.len()
    );
    // A POST written to green (the slow ones in flight there at the kill) is not re-sent: each gets
    // the proxy's 502; every other one is answered.
    assert_eq!(
        orders_retried, 0.0,
        "slow POSTs re-sent after green died: {slow_answers:?}"
    );
    assert!(
        in_flight.1 >= 1,
        "no slow POST in flight on green at the kill"
    );
    assert_eq!(
        slow_failed.len() as u64,
        in_flight.1,
        "slow POSTs failed, against those in flight on green at the kill (blue, green) \
         {in_flight:?}: {slow_answers:?}"
    );
    assert!(
        slow_failed.iter().all(|e| e.starts_with("status 502")),
        "{slow_failed:?}"
    );
    // GETs that met the dead green (picked before the ejection) were retried on blue, each once
    // at most: every retry follows one failure on green.
    assert!(
        retried_gets >= 1.0,
        "no GET met the dead green: retried {retried}"
    );
    assert!(
        retried <= green_failures,
        "retries {retried} after {green_failures} failures on green"
    );
    assert!(
        detection <= Duration::from_millis(1_500),
        "detection took {detection:?}"
    );
    assert!(
        ejections >= 2.0,
        "both green endpoints ejected: {ejections}"
    );
    // The gauges SREs alert on (CrossfadeBackendUnavailable) say the same.
    let healthy = |backend| {
        metrics.get(
            "crossfade_backend_healthy_endpoints",
            &[("route", "web"), ("backend", backend)],
        )
    };
    assert_eq!(healthy("green"), Some(0.0), "no green endpoint can serve");
    assert_eq!(healthy("blue"), Some(2.0));
    assert_eq!(late_green, 0);
    assert!(
        after.is_empty(),
        "GET errors after detection: {}",
        after.len()
    );
    assert!(
        failed.len() * 100 <= records.len(),
        "GET errors {}",
        failed.len()
    );
    // A POST with a body is never re-sent, so a few fail before green is ejected; none after.
    let late_posts = posted
        .iter()
        .filter(|p| p.0 > detected && p.1.is_err())
        .count();
    assert_eq!(late_posts, 0, "POST errors after detection");
    let weights = crate::support::proxy::weight_gauges(&metrics);
    assert_eq!(weights, (5_000, 5_000), "configured weights unchanged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c13_hung_preview_waits_at_most_the_response_timeout_and_is_marked_down() {
    let dir = temp_dir();
    let blue = SampleApp::start(dir.path(), "blue", "blue-0", &[]).await;
    let green = SampleApp::start(dir.path(), "green", "green-0", &[]).await;
    let mut config = proxy_config(&[blue.addr], &[green.addr]);
    config["upstream"] = json!({ "response_timeout": "2s" });
    config["routes"][0]["blue"]["weight"] = json!(50);
    config["routes"][0]["green"]["weight"] = json!(50);
    config["routes"][0]["health"] =
        json!({ "interval": "1s", "timeout": "500ms", "rise": 2, "fall": 2 });
    let proxy = RunningProxy::start(dir.path(), "proxy.yaml", &config).await;
    let mut trace_config = TraceConfig::new(proxy.listen);
    trace_config.conns = 16; // a hung request holds its connection for up to 2 s
    let trace = Trace::start(trace_config);
    let statuses = Poller::start(proxy.admin, "/status", Duration::from_millis(20));
    tokio::time::sleep(Duration::from_secs(2)).await;

    let stopped = Instant::now();
    let green_pid = Pid::from_raw(green.child.pid() as i32);
    kill(green_pid, Signal::SIGSTOP).expect("SIGSTOP green");
    tokio::time::sleep(Duration::from_secs(6)).await;
    let records = trace.stop().await;
    let statuses = statuses.stop().await;
    let metrics = proxy.admin.metrics().await;
    let _ = kill(green_pid, Signal::SIGCONT);

    let down = statuses
        .iter()
        .filter(|o| o.sent >= stopped)
        .find(|o| o.value["routes"][0]["green"]["health"][0]["checked_up"] == false)
        .map(|o| o.received)
        .expect("checks marked green down");
    let detection = down.duration_since(stopped);
    let longest = records
        .iter()
        .map(|r| r.finished.duration_since(r.started))
        .max()
        .unwrap_or_default();
    let failed = errors(&records);
    let after: Vec<&&Record> = failed.iter().filter(|r| r.started > down).collect();
    let weights = metrics.get(
        "crossfade_backend_weight_basis_points",
        &[("route", "web"), ("backend", "green")],
    );
    println!(
        "C13 hang: checks marked green down after {detection:?}, longest request {longest:?}, \
         errors {}/{} ({} started after detection)",
        failed.len(),
        records.len(),
        after.len()
    );
    assert!(
        detection <= Duration::from_secs(4),
        "detection took {detection:?}"
    );
    // The 2 s timeout plus scheduling slack: never the 5 s client limit. The slack is wide: a
    // clean-clone CI run on a machine shared with two builds measured 3.16 s (2.005 s alone).
    assert!(
        longest <= Duration::from_millis(4_000),
        "a request took {longest:?}"
    );
    assert!(after.is_empty(), "errors after detection: {}", after.len());
    assert!(failed
        .iter()
        .all(|r| matches!(&r.outcome, Ok(a) if a.status == 504)));
    assert_eq!(weights, Some(5_000.0), "the configured weight is unchanged");
}

/// The version-level breaker (issue 3): a preview answering 80 % 500s trips it within a second, the
/// proxy holds green at an effective weight of 0 at once, and the controller rolls back on the
/// event, long before its own 10 s analysis window would have judged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c13_breaker_trips_on_a_failing_preview_and_the_rollout_rolls_back() {
    let dir = temp_dir();
    let green = App::version("v2").flags(["--pool", "green", "--error-rate", "0.8"]);
    let mut spec = Spec::new()
        .blue(App::version("v1").flags(["--pool", "blue"]))
        .green(green);
    spec.json["route"]["breaker"] =
        json!({ "max_error_rate": "50%", "window": "1s", "min_requests": 10 });
    spec.json["rollout"]["steps"] = json!([50, 100]);
    spec.json["rollout"]["hold"] = json!("10s");
    spec.json["rollout"]["progress_deadline"] = json!("60s");
    let admin = Admin::new(spec.admin());
    let mut child = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    child.wait_ready(&admin, Duration::from_secs(15)).await;
    let trace = Trace::start(TraceConfig::new(spec.listen()));
    let applied = wait_until(Duration::from_secs(30), "green at 50%", || async {
        let r = &admin.rollout().await["rollout"];
        (r["applied_bp"] == 5_000).then(Instant::now)
    })
    .await;
    let rollout = wait_terminal(&admin, Duration::from_secs(30)).await;
    let ended = Instant::now();
    let records = trace.stop().await;
    let metrics = admin.metrics().await;
    let status = admin.status().await;
    child.terminate(Duration::from_secs(15)).await;

    let trips = metrics.get(
        "crossfade_breaker_trips_total",
        &[("route", "web"), ("backend", "green")],
    );
    println!(
        "C13 breaker: rolled back {:?} after green got 50%, trips {trips:?}, client errors {}/{}",
        ended.duration_since(applied),
        errors(&records).len(),
        records.len()
    );
    assert_eq!(rollout["phase"], "RolledBack", "{rollout:#}");
    assert!(
        rollout.to_string().contains("circuit breaker tripped"),
        "{rollout:#}"
    );
    assert_eq!(trips, Some(1.0));
    assert!(ended.duration_since(applied) < Duration::from_secs(8));
    // The rollback set the weights, which clears the trip.
    assert_eq!(status["routes"][0]["green"]["tripped"], false);
}

/// Analysis windows judged over the whole rollout: its `verdicts` (kept up to 50, far more than
/// this rollout's steps judge).
fn verdicts(rollout: &Value) -> usize {
    rollout["verdicts"].as_array().map_or(0, Vec::len)
}

/// Whether a `/status` answer shows green out of traffic: no endpoint up, or weight 0.
fn green_out(status: &Value) -> bool {
    // Route `web` by name: the proxy-alone kill run lists route `orders` first.
    let web = status["routes"]
        .as_array()
        .and_then(|routes| routes.iter().find(|r| r["name"] == "web"))
        .unwrap_or(&Value::Null);
    let green = &web["green"];
    let none_up = green["health"]
        .as_array()
        .is_some_and(|h| !h.is_empty() && h.iter().all(|e| e["healthy"] == false));
    none_up || web["weights"]["green"] == 0
}

/// (blue, green) pids from the state file.
async fn pids(state: &std::path::Path) -> (Vec<u32>, Vec<u32>) {
    let both = |s: &Value| {
        let blue = pids_of(&s["active_pids"]);
        let green = pids_of(&s["rollout"]["preview_pids"]);
        (blue.len() == 2 && green.len() == 2).then_some((blue, green))
    };
    wait_state(
        state,
        Duration::from_secs(10),
        "pids in the state file",
        both,
    )
    .await
}

/// One POST: when it started, and its status and `X-Pool`, or how it failed.
type Post = (Instant, Result<(u16, String), String>);

/// `POST /api` with a small body on a new connection, `per_second` times a second.
struct Posts {
    seen: Arc<Mutex<Vec<Post>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Posts {
    fn start(target: SocketAddr, per_second: u32) -> Posts {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let into = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_secs(1) / per_second);
            loop {
                ticks.tick().await;
                let into = Arc::clone(&into);
                tokio::spawn(async move {
                    let started = Instant::now();
                    let outcome = post(target).await;
                    into.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push((started, outcome));
                });
            }
        });
        Posts { seen, task }
    }

    async fn stop(self) -> Vec<Post> {
        self.task.abort();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.clone()
    }
}

async fn post(target: SocketAddr) -> Result<(u16, String), String> {
    let request = "POST /api HTTP/1.1\r\nHost: web\r\nContent-Length: 5\r\n\
                   Connection: close\r\n\r\norder";
    exchange(target, request, Duration::from_secs(5)).await
}

/// Sends `request` on a new connection and reads the answer to its end within `timeout`: its
/// status and `X-Pool` when 2xx, else `status N from POOL` or how it failed.
async fn exchange(
    target: SocketAddr,
    request: &str,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let exchange = async {
        let mut stream = TcpStream::connect(target)
            .await
            .map_err(|e| e.to_string())?;
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut text = String::new();
        stream
            .read_to_string(&mut text)
            .await
            .map_err(|e| e.to_string())?;
        let status = text
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("no status line in {text:?}"))?;
        let pool = text
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("x-pool:")
                    .map(|v| v.trim().to_owned())
            })
            .unwrap_or_default();
        if (200..300).contains(&status) {
            Ok((status, pool))
        } else {
            Err(format!("status {status} from {pool:?}"))
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| Err("timed out".to_owned()))
}

/// The route of the slow POSTs in the proxy-alone kill run, and its host.
const ORDERS: &str = "orders";
const ORDERS_HOST: &str = "orders.example";

/// How long each slow POST waits in the sample app (`/slow?ms=`): far longer than the wait for
/// them to be dispatched, so that green's are in flight when it is killed.
const SLOW_POST_MS: u64 = 8_000;

/// A slow POST's answer (see [`exchange`]).
type SlowPost = tokio::task::JoinHandle<Result<(u16, String), String>>;

/// Starts bodiless `POST /slow` requests on route `orders` (the request a retry would find
/// easiest to re-send: nothing to replay) until the proxy has dispatched all of them
/// (`crossfade_dispatched_requests_total`), 8 at least, and one or more is in flight on each pool.
async fn slow_posts_in_flight(proxy: &RunningProxy) -> Vec<SlowPost> {
    let request = format!(
        "POST /slow?ms={SLOW_POST_MS} HTTP/1.1\r\nHost: {ORDERS_HOST}\r\nContent-Length: 0\r\n\
         Connection: close\r\n\r\n"
    );
    let mut posts = Vec::new();
    let mut in_flight = (0, 0);
    // At 50/50, 8 + k POSTs all on one pool has probability 2^-(7+k); the bound only keeps a
    // broken proxy from looping forever.
    while posts.len() < 8 || ((in_flight.0 == 0 || in_flight.1 == 0) && posts.len() < 16) {
        let (target, request) = (proxy.listen, request.clone());
        let timeout = Duration::from_millis(3 * SLOW_POST_MS);
        posts.push(tokio::spawn(async move {
            exchange(target, &request, timeout).await
        }));
        let launched = posts.len() as u64;
        let what = format!("{launched} slow POSTs dispatched by the proxy");
        in_flight = wait_until(Duration::from_secs(20), &what, || async {
            let metrics = proxy.admin.metrics().await;
            let labels = [("route", ORDERS)];
            let dispatched = metrics.sum("crossfade_dispatched_requests_total", &labels);
            (dispatched >= launched as f64).then(|| orders_in_flight(&metrics))
        })
        .await;
    }
    // Dispatched is counted as the attempt starts: give the heads time to reach the sample apps.
    tokio::time::sleep(Duration::from_millis(300)).await;
    posts
}

/// `crossfade_in_flight_requests` of route `orders` as (blue, green).
fn orders_in_flight(metrics: &crate::support::Metrics) -> (u64, u64) {
    let gauge = |backend| {
        let labels = [("route", ORDERS), ("backend", backend)];
        metrics
            .get("crossfade_in_flight_requests", &labels)
            .unwrap_or(0.0) as u64
    };
    (gauge("blue"), gauge("green"))
}

/// The same family over WebSocket: an upgrade request picked for a dead preview never reached it
/// (its connect was refused), so, like a GET, it is sent once to blue instead of answered 502; no
/// client sees an upgrade fail, before the passive ejection or after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c13_websocket_upgrade_refused_by_a_dead_preview_is_retried_on_blue() {
    let dir = temp_dir();
    let blue = SampleApp::start(dir.path(), "blue", "blue-0", &[]).await;
    // Two green endpoints where nothing listens: every connect to green is refused.
    let green = [crate::support::free_addr(), crate::support::free_addr()];
    let mut config = proxy_config(&[blue.addr], &green);
    config["routes"][0]["blue"]["weight"] = json!(50);
    config["routes"][0]["green"]["weight"] = json!(50);
    let proxy = RunningProxy::start(dir.path(), "proxy.yaml", &config).await;

    let mut answers = Vec::new();
    for _ in 0..UPGRADES {
        let url = format!("ws://{}/ws", proxy.listen);
        let answer = match tokio_tungstenite::connect_async(url).await {
            Ok((mut ws, response)) => {
                let _ = ws.close(None).await;
                let pool = response.headers().get("x-pool").cloned();
                format!("101 {pool:?}")
            }
            Err(error) => error.to_string(),
        };
        answers.push(answer);
    }
    let metrics = proxy.admin.metrics().await;
    let green = [("route", "web"), ("backend", "green")];
    let refused = metrics.sum("crossfade_upstream_errors_total", &green);
    let retried = metrics.sum("crossfade_retries_total", &green);
    println!(
        "C13 upgrades to a dead green: green refused {refused}, retried {retried}, answers \
         {answers:?}"
    );
    let failed: Vec<_> = answers.iter().filter(|a| !a.starts_with("101")).collect();
    assert!(failed.is_empty(), "upgrades failed: {failed:?}");
    assert!(answers.iter().all(|a| a.contains("blue")), "{answers:?}");
    // Green was picked and refused (else the run proves nothing), and each refusal was retried.
    assert!(refused >= 1.0, "green was never picked");
    assert_eq!(retried, refused, "every refused upgrade is retried once");
}

/// Upgrades in the WebSocket run: at 50/50, all going to blue by chance has probability 2⁻²⁰.
const UPGRADES: usize = 20;

/// C13's hang run driven by the process driver: `crossfade run` with `route.response_timeout: 1s`
/// (until trial 29 a key the spec refused, so a rollout's requests to a hung preview waited the
/// proxy's default 30 s, or until the rollback stopped green). Green stops answering 3 s after its
/// start (it still accepts and reads); each request it holds gets 504 after about 1 s, never
/// later, blue's requests are all answered, and the rollout rolls back on the errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c13_run_hung_preview_requests_wait_at_most_the_routes_response_timeout() {
    let dir = temp_dir();
    let blue = App::version("v1").flags(["--pool", "blue"]);
    let green = App::version("v2").flags(["--pool", "green", "--hang-after", "3s"]);
    let mut spec = Spec::new().blue(blue).green(green);
    spec.json["route"]["response_timeout"] = json!("1s");
    spec.json["rollout"]["steps"] = json!([50, 100]);
    spec.json["rollout"]["hold"] = json!("10s");
    spec.json["rollout"]["analysis"]["interval"] = json!("2s");
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    let mut trace = TraceConfig::new(spec.listen());
    trace.conns = 16; // a held request holds its connection
    let trace = Trace::start(trace);
    let rollout = wait_terminal(&admin, Duration::from_secs(30)).await;
    let records = trace.stop().await;
    run.terminate(Duration::from_secs(15)).await;

    assert_eq!(rollout["phase"], "RolledBack", "{rollout:#}");
    let failed = errors(&records);
    let longest = records
        .iter()
        .map(|r| r.finished.duration_since(r.started))
        .max()
        .unwrap_or_default();
    eprintln!(
        "c13 run hang: {} of {} requests failed, longest {longest:?}",
        failed.len(),
        records.len()
    );
    assert!(!failed.is_empty(), "green never held a request");
    assert!(
        failed
            .iter()
            .all(|r| matches!(&r.outcome, Ok(a) if a.status == 504)),
        "a failure other than the timeout's 504: {:?}",
        failed
            .iter()
            .find(|r| !matches!(&r.outcome, Ok(a) if a.status == 504))
    );
    // The 1 s timeout plus slack for a loaded machine; the default (30 s) or the rollback's stop
    // of green (several seconds) would be far above it.
    assert!(
        longest <= Duration::from_millis(2_500),
        "a request took {longest:?}"
    );
}
