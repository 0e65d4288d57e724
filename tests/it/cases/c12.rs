//! C12 — promotion is a two-step change and traffic briefly goes back to the old version
//! (argo-rollouts#1826, #2235).
//!
//! Right outcome: from the moment green has 100 % until the end, no response comes from the old blue
//! instances; the role swap is one table generation (no generation where roles and weights disagree);
//! the old pool leaves the table only after the swap is live.
//!
//! Scale: the case asks for 20 runs; CI runs 3 in a row (about 6 s each). Every response is recorded
//! with the instant its request started (`tokio::time::Instant`, far finer than the case's 10 ms).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::rollout::wait_terminal;
use crate::support::poll::Observation;
use crate::support::trace::{errors, Record};
use crate::support::{
    proxy_config, temp_dir, wait_until, Admin, App, Crossfade, Poller, RawConn, RunningProxy,
    SampleApp, Spec, Trace, TraceConfig,
};

/// Runs in CI (the case: 20).
const RUNS: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c12_no_request_goes_back_to_old_blue_after_green_has_everything() {
    for run in 1..=RUNS {
        one_run(run, false).await;
    }
}

/// The same family through an operator command: `POST /rollout/promote` during the 10 % step's
/// (long) hold skips to the end, and the same holds: no request back to old blue once green has
/// everything, the swap one generation, the old pool removed after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c12_an_operator_promote_mid_rollout_swaps_in_one_generation() {
    one_run(1, true).await;
}

async fn one_run(run: usize, promote: bool) {
    let dir = temp_dir();
    let pool = |version: &str, pool: &str| {
        let app = App::version(version).flags(["--pool", pool]);
        app.set("instances", json!(2))
    };
    let mut spec = Spec::new()
        .blue(pool("v1", "blue"))
        .green(pool("v2", "green"));
    spec.json["rollout"]["analysis"]["min_requests"] = json!(5);
    if promote {
        // Held long enough that only the operator's promote ends the 10 % step.
        spec.json["rollout"]["hold"] = json!("60s");
        spec.json["rollout"]["progress_deadline"] = json!("120s");
    }
    let admin = Admin::new(spec.admin());
    let mut child = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    child.wait_ready(&admin, Duration::from_secs(15)).await;
    let trace = Trace::start(TraceConfig::new(spec.listen()));
    let poller = Poller::start(admin, "/status", Duration::from_millis(20));
    if promote {
        wait_until(Duration::from_secs(20), "green at 10%", || async {
            (admin.rollout().await["rollout"]["applied_bp"] == 1_000).then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (status, answer) = admin.post("/rollout/promote").await;
        assert_eq!(status, 200, "promote: {answer}");
    }

    let rollout = wait_terminal(&admin, Duration::from_secs(30)).await;
    trace.wait_requests(150, Duration::from_secs(10)).await;
    let records = trace.stop().await;
    let observations = poller.stop().await;
    let status = admin.status().await;
    let events = admin.rollout().await["events"].clone();
    let run = format!("run {run}/{RUNS}");

    assert_eq!(rollout["phase"], "Completed", "{run}: {rollout:#}");
    let failed = errors(&records);
    assert!(
        failed.is_empty(),
        "{run}: {} errors: {:?}",
        failed.len(),
        failed.first()
    );
    let full = first_full_green(&observations).unwrap_or_else(|| panic!("{run}: never saw 100%"));
    assert_no_blue_after(&records, full, &run);

    // The 100 % step's generation, then exactly two more: the swap (roles and weights together) and
    // the old pool's endpoints leaving after its drain. A swap in two steps would make it three.
    let g100 = rollout["generation"].as_u64().expect("generation");
    assert_eq!(status["generation"], json!(g100 + 2), "{run}: {status:#}");
    for observation in &observations {
        check_generation(&observation.value, g100, &run);
    }
    assert!(
        observations
            .iter()
            .any(|o| route(&o.value)["active"] == "green"),
        "{run}: the swap was never observed"
    );
    assert_order(
        &events,
        &["Promoted", "Retiring", "ActiveDrained", "Completed"],
        &run,
    );
    child.terminate(Duration::from_secs(15)).await;
}

/// When `/status` first showed green at 100 % (the answer's arrival: the table had it by then).
fn first_full_green(observations: &[Observation]) -> Option<Instant> {
    observations
        .iter()
        .find(|o| route(&o.value)["weights"]["green"] == 10_000)
        .map(|o| o.received)
}

/// No request that started after `full` was answered by blue, and there were such requests.
fn assert_no_blue_after(records: &[Record], full: Instant, run: &str) {
    let after: Vec<&Record> = records.iter().filter(|r| r.started > full).collect();
    assert!(
        after.len() >= 100,
        "{run}: only {} requests after 100%",
        after.len()
    );
    let blue: Vec<&&Record> = after.iter().filter(|r| r.pool() == Some("blue")).collect();
    eprintln!(
        "c12 {run}: {} requests started after green had 100%",
        after.len()
    );
    assert!(
        blue.is_empty(),
        "{run}: {} of {} requests after green had 100% were answered by blue, e.g. {:?}",
        blue.len(),
        after.len(),
        blue.first()
    );
}

/// What one `/status` answer may show around the 100 % step's generation `g100`.
fn check_generation(status: &Value, g100: u64, run: &str) {
    let route = route(status);
    let generation = status["generation"].as_u64().expect("generation");
    let active_green = route["active"] == "green";
    let blue_endpoints = route["blue"]["endpoints"].as_array().map_or(0, Vec::len);
    let at = format!("{run}: {status}");
    assert!(generation <= g100 + 2, "{at}");
    if active_green {
        // Roles and weights in one generation: green is never active without all the weight.
        assert_eq!(
            route["weights"],
            json!({ "blue": 0, "green": 10_000 }),
            "{at}"
        );
        assert!(generation > g100, "{at}");
    } else {
        assert!(generation <= g100, "{at}");
    }
    if generation == g100 + 1 {
        assert_eq!(blue_endpoints, 2, "old pool removed with the swap: {at}");
    }
    if blue_endpoints == 0 {
        assert!(active_green, "old pool removed before the swap: {at}");
    }
}

/// `reasons` appear among the events in this order.
fn assert_order(events: &Value, reasons: &[&str], run: &str) {
    let seen: Vec<&str> = events
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["reason"].as_str()).collect())
        .unwrap_or_default();
    let positions: Vec<Option<usize>> = reasons
        .iter()
        .map(|r| seen.iter().position(|s| s == r))
        .collect();
    assert!(
        positions.iter().all(Option::is_some) && positions.is_sorted(),
        "{run}: expected {reasons:?} in order among {seen:?}"
    );
}

fn route(status: &Value) -> &Value {
    &status["routes"][0]
}

/// The same family through a connection-level switch: a client that offers an upgrade to
/// cleartext HTTP/2 (`Upgrade: h2c`, as `curl --http2 http://...` does) to a backend that would
/// accept it. Tunnelled, its connection would stay with old blue whatever the weights; the proxy
/// answers it as an ordinary request instead (the backend never sees the offer), so its next
/// request on the same connection, once green has everything, goes to green.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c12_an_h2c_upgrade_offer_never_pins_a_connection_to_old_blue() {
    let dir = temp_dir();
    let (blue, heads) = h2c_accepting_backend().await;
    let green = SampleApp::start(dir.path(), "green", "green-0", &[]).await;
    let proxy = RunningProxy::start(
        dir.path(),
        "proxy.yaml",
        &proxy_config(&[blue], &[green.addr]),
    )
    .await;

    let mut conn = RawConn::connect(proxy.listen).await;
    conn.send(
        b"GET /api HTTP/1.1\r\nHost: shop.example\r\nConnection: Upgrade, HTTP2-Settings\r\n\
          Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    )
    .await;
    let first = conn.read_response().await;
    assert_eq!(first.status(), 200, "{first:?}");
    assert_eq!(first.header("x-pool"), Some("blue"));

    proxy.set_weights(0, 10_000).await;
    conn.send(b"GET /api HTTP/1.1\r\nHost: shop.example\r\n\r\n")
        .await;
    let next = conn.read_response().await;
    assert_eq!(next.status(), 200, "{next:?}");
    assert_eq!(next.header("x-pool"), Some("green"), "{next:?}");
    let heads = heads.lock().unwrap_or_else(PoisonError::into_inner).clone();
    for head in heads {
        let head = head.to_ascii_lowercase();
        assert!(
            !head.contains("upgrade") && !head.contains("http2-settings"),
            "the backend was offered the upgrade: {head}"
        );
    }
}

/// A blue backend that, like a server with h2c support, answers an `Upgrade: h2c` request with
/// 101 (then closes: no HTTP/2 here) and any other with 200 `X-Pool: blue`, keeping the connection;
/// returns its address and the request heads it read.
async fn h2c_accepting_backend() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&heads);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve_h2c_accepting(stream, Arc::clone(&seen)));
        }
    });
    (addr, heads)
}

async fn serve_h2c_accepting(stream: TcpStream, seen: Arc<Mutex<Vec<String>>>) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) if line.trim_end().is_empty() => break,
                Ok(_) => head.push_str(&line),
            }
        }
        let upgrade = head.to_ascii_lowercase().contains("upgrade: h2c");
        seen.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(head);
        let answer: &[u8] = if upgrade {
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
        } else {
            b"HTTP/1.1 200 OK\r\nX-Pool: blue\r\nContent-Length: 2\r\n\r\nok"
        };
        if reader.get_mut().write_all(answer).await.is_err() || upgrade {
            return;
        }
    }
}
