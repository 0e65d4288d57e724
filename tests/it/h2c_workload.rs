//! `crossfade run` serving h2c-only workloads (`protocol: h2c`, `crossfade sample-app --h2c`, as a
//! gRPC server): a rollout from one to the other under gRPC calls over HTTP/2 and plain GETs over
//! HTTP/1.1 and HTTP/2, with the proxy's h2c health checks on, and from static h2c endpoints;
//! `crossfade migrate` from an
//! HTTP/1.1 blue to an h2c green, kept over a restart by the state file; and an h2c-only green
//! left at the default `http1`, whose readiness fails saying so.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::sync::watch;

use crate::rollout::wait_terminal;
use crate::support::child::{run_to_end, wait_state};
use crate::support::{temp_dir, wait_until, Admin, App, Crossfade, Load, LoadConfig, Spec};

/// A sample app speaking only h2c, declared `protocol: h2c`.
fn h2c_app(version: &str) -> App {
    App::version(version)
        .flags(["--h2c"])
        .set("protocol", json!("h2c"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_between_h2c_workloads_serves_grpc_calls_without_a_failure() {
    let dir = temp_dir();
    let mut spec = Spec::new().blue(h2c_app("v1")).green(h2c_app("v2"));
    spec.json["rollout"]["steps"] = json!([{ "weight": 10, "hold": "2s" }, 50, 100]);
    // The proxy's own checks probe over h2c too: an HTTP/1.1 probe would hold every endpoint out.
    spec.json["route"]["health"] =
        json!({ "path": "/healthz", "interval": "500ms", "timeout": "500ms" });
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    let status = admin.rollout().await;
    assert!(
        status["active_workload"]
            .as_str()
            .is_some_and(|w| w.ends_with(" over h2c")),
        "GET /rollout says blue is spoken to over h2c: {status:#}"
    );

    let grpc = GrpcLoad::start(spec.listen(), 2);
    let load = Load::start(LoadConfig::new(spec.listen()));
    let rollout = wait_terminal(&admin, Duration::from_secs(40)).await;
    let at_end = grpc.report();
    wait_until(
        Duration::from_secs(10),
        "50 gRPC calls after the end",
        || {
            let after = grpc.report().since(&at_end);
            async move { (after.total() >= 50).then_some(()) }
        },
    )
    .await;
    let calls = grpc.stop().await;
    let gets = load.stop().await;
    let after = calls.since(&at_end);
    eprintln!(
        "gRPC calls answered: {:?}, failed: {}; GETs: {}",
        calls.ok,
        calls.failures.len(),
        gets.summary()
    );

    assert_eq!(rollout["phase"], "Completed", "rollout: {rollout:#}");
    assert_eq!(rollout["active"], "green", "rollout: {rollout:#}");
    assert!(calls.failures.is_empty(), "failed gRPC calls: {calls:?}");
    assert!(
        calls.ok("v1") > 0 && calls.ok("v2") > 0,
        "both versions answered gRPC calls: {calls:?}"
    );
    assert_eq!(
        after.ok("v2"),
        after.total(),
        "only v2 after the end: {after:?}"
    );
    assert_eq!(gets.errors(), 0, "client-visible errors of GETs: {gets:?}");
    assert!(
        gets.by_proto.get("h1").copied().unwrap_or(0) > 50,
        "HTTP/1.1 clients reached the h2c backends: {gets:?}"
    );
    let status = admin.status().await;
    let green = &status["routes"][0]["green"];
    assert!(
        green["health"]
            .as_array()
            .is_some_and(|h| !h.is_empty() && h.iter().all(|e| e["healthy"] == true)),
        "green's endpoints pass the proxy's h2c health checks: {status:#}"
    );
    let admin_addr = spec.admin().to_string();
    let done = run_to_end(["status", "--admin", &admin_addr], Duration::from_secs(20)).await;
    let text = done.stdout;
    assert_eq!(done.code, Some(0), "{text}{}", done.stderr);
    assert!(
        text.lines()
            .next()
            .is_some_and(|l| l.contains("green active")
                && l.contains("--version v2 --h2c")
                && l.ends_with("over h2c)")),
        "crossfade status names the promoted h2c workload:\n{text}"
    );
    run.terminate(Duration::from_secs(15)).await;
}

/// An h2c-only green left at the default `protocol: http1` never passes readiness: the rollout
/// rolls back before it gets any weight, and its reason says that the endpoint answers h2c and
/// how to declare it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_only_green_declared_http1_fails_readiness_with_a_hint_at_protocol_h2c() {
    let dir = temp_dir();
    let green = App::version("v2").flags(["--h2c"]).set(
        "readiness",
        json!({ "interval": "100ms", "deadline": "2s" }),
    );
    let spec = Spec::new().green(green);
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    let rollout = wait_terminal(&admin, Duration::from_secs(30)).await;
    assert_eq!(rollout["phase"], "RolledBack", "rollout: {rollout:#}");
    let message = rollout["message"].as_str().unwrap_or_default();
    eprintln!("rollback reason: {message}");
    assert!(
        message.contains("not ready after 2s")
            && message.contains("the endpoint answers cleartext HTTP/2 (h2c) and not HTTP/1.1")
            && message.contains("set `protocol: h2c` on this workload"),
        "the reason says what happened and how to fix it: {rollout:#}"
    );
    run.terminate(Duration::from_secs(15)).await;
}

/// `protocol: h2c` on an `endpoints` workload: a blue of static h2c-only endpoints (a
/// sample app the test runs) is probed ready over h2c and rolled out to an h2c command green
/// under gRPC calls with no failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_endpoints_blue_rolls_out_to_an_h2c_command_green() {
    let dir = temp_dir();
    let addr = crate::support::free_addr();
    let port = addr.port().to_string();
    let args = ["sample-app", "--port", &port, "--version", "v1", "--h2c"];
    let mut blue_app = Crossfade::spawn(dir.path(), "sample-v1.log", args);
    wait_until(
        Duration::from_secs(10),
        "sample-app v1 to listen",
        || async move { tokio::net::TcpStream::connect(addr).await.ok().map(drop) },
    )
    .await;
    let blue = json!({ "endpoints": [addr.to_string()], "protocol": "h2c",
                       "readiness": { "interval": "50ms", "deadline": "10s" } });
    let mut spec = Spec::new().blue(App { json: blue }).green(h2c_app("v2"));
    spec.json["rollout"]["steps"] = json!([{ "weight": 10, "hold": "2s" }, 50, 100]);
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    // Enough traffic for every window on a loaded machine: gRPC calls and the GET load.
    let grpc = GrpcLoad::start(spec.listen(), 2);
    let load = Load::start(LoadConfig::new(spec.listen()));
    let rollout = wait_terminal(&admin, Duration::from_secs(40)).await;
    let calls = grpc.stop().await;
    let gets = load.stop().await;
    assert_eq!(rollout["phase"], "Completed", "rollout: {rollout:#}");
    assert!(calls.failures.is_empty(), "failed gRPC calls: {calls:?}");
    assert!(calls.ok("v1") > 0 && calls.ok("v2") > 0, "{calls:?}");
    assert_eq!(gets.errors(), 0, "client-visible errors of GETs: {gets:?}");
    run.terminate(Duration::from_secs(15)).await;
    blue_app.terminate(Duration::from_secs(10)).await;
}

/// `crossfade migrate` from an HTTP/1.1 blue to an h2c-only green (blue and green differ): the
/// rollout completes with no client error, the state file keeps green's `protocol`, and a
/// restart on it serves the promoted green over h2c again (its readiness probes and the proxy's
/// backend both speak h2c), without rolling out again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migrate_to_an_h2c_green_completes_and_a_restart_serves_it_over_h2c() {
    let dir = temp_dir();
    let state = dir.path().join("state.json");
    let spec = Spec::new().state_file(&state);
    let admin = Admin::new(spec.admin());
    let spec_path = spec.write(dir.path(), "spec.yaml");
    let mut run = Crossfade::run(dir.path(), &spec_path);
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    let load = Load::start(LoadConfig::new(spec.listen()));
    let request = json!({
        "green": h2c_app("v2").json,
        "rollout": { "steps": [{ "weight": 10, "hold": "2s" }, 50, 100] },
    });
    let file = crate::support::spec::write_json(dir.path(), "green.yaml", &request);
    let admin_addr = spec.admin().to_string();
    let args = ["migrate", "--admin", &admin_addr, &file.to_string_lossy()];
    let done = run_to_end(args, Duration::from_secs(20)).await;
    assert_eq!(done.code, Some(0), "{}{}", done.stdout, done.stderr);
    let rollout = wait_terminal(&admin, Duration::from_secs(40)).await;
    assert_eq!(rollout["phase"], "Completed", "rollout: {rollout:#}");
    let saved = wait_state(&state, Duration::from_secs(5), "green active", |s| {
        (s["active"] == "green").then(|| s["active_workload"].clone())
    })
    .await;
    assert_eq!(
        saved["protocol"], "h2c",
        "the state file keeps it: {saved:#}"
    );
    let gets = load.stop().await;
    run.terminate(Duration::from_secs(15)).await;
    assert_eq!(gets.errors(), 0, "client-visible errors: {gets:?}");
    assert!(gets.ok_from("v1") > 0 && gets.ok_from("v2") > 0, "{gets:?}");

    let mut again = Crossfade::run(dir.path(), &spec_path);
    again.wait_ready(&admin, Duration::from_secs(15)).await;
    let status = admin.rollout().await;
    assert!(
        status["active_workload"]
            .as_str()
            .is_some_and(|w| w.contains("--version v2 --h2c") && w.ends_with(" over h2c")),
        "the restart serves the promoted h2c green: {status:#}"
    );
    let load = Load::start(LoadConfig::new(spec.listen()));
    load.wait_requests(60, Duration::from_secs(10)).await;
    let gets = load.stop().await;
    assert_eq!(
        gets.errors(),
        0,
        "client-visible errors after the restart: {gets:?}"
    );
    assert_eq!(gets.ok_from("v2"), gets.total(), "{gets:?}");
    again.terminate(Duration::from_secs(15)).await;
}

/// A protocol that is not one of the words is refused naming the field and the words, the same
/// by `crossfade check` (a spec and a migrate file), `crossfade migrate` (before it sends) and
/// `POST /rollout`; nothing starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_protocol_is_refused_naming_the_field_everywhere_a_workload_goes() {
    let dir = temp_dir();
    let words = "green.protocol: unknown variant `grpc`, expected `http1` or `h2c`";
    let bad = Spec::new().green(App::version("v2").set("protocol", json!("grpc")));
    let spec_path = bad.write(dir.path(), "bad.yaml");
    let done = run_to_end(
        ["check", &spec_path.to_string_lossy()],
        Duration::from_secs(20),
    )
    .await;
    assert_ne!(done.code, Some(0), "{}", done.stdout);
    assert!(
        done.stderr.contains(words),
        "check of a spec: {}",
        done.stderr
    );

    let spec = Spec::new();
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    let green = App::version("v2").set("protocol", json!("grpc")).json;
    let file =
        crate::support::spec::write_json(dir.path(), "green.yaml", &json!({ "green": green }));
    let file = file.to_string_lossy().into_owned();
    let done = run_to_end(["check", &file], Duration::from_secs(20)).await;
    assert_ne!(done.code, Some(0), "{}", done.stdout);
    assert!(
        done.stderr.contains(words),
        "check of a migrate file: {}",
        done.stderr
    );
    let admin_addr = spec.admin().to_string();
    let done = run_to_end(
        ["migrate", "--admin", &admin_addr, &file],
        Duration::from_secs(20),
    )
    .await;
    assert_ne!(done.code, Some(0), "{}", done.stdout);
    assert!(done.stderr.contains(words), "migrate: {}", done.stderr);
    let (status, answer) = admin
        .json("POST", "/rollout", Some(&json!({ "green": green })))
        .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer.to_string().contains(words),
        "POST /rollout: {answer}"
    );
    assert!(
        admin.rollout().await["rollout"].is_null(),
        "no rollout started"
    );
    run.terminate(Duration::from_secs(15)).await;
}

/// What the gRPC calls got.
#[derive(Clone, Debug, Default)]
struct GrpcReport {
    /// Calls answered `grpc-status: 0` with a reply, by the version the reply names.
    ok: BTreeMap<String, u64>,
    /// Every other outcome, in words (HTTP status, `grpc-status`, transport error).
    failures: Vec<String>,
}

impl GrpcReport {
    fn ok(&self, version: &str) -> u64 {
        self.ok.get(version).copied().unwrap_or(0)
    }

    fn total(&self) -> u64 {
        self.ok.values().sum::<u64>() + self.failures.len() as u64
    }

    /// What was answered since `earlier`.
    fn since(&self, earlier: &GrpcReport) -> GrpcReport {
        let ok = self
            .ok
            .iter()
            .map(|(v, n)| (v.clone(), n - earlier.ok(v)))
            .collect();
        let failures = self.failures[earlier.failures.len()..].to_vec();
        GrpcReport { ok, failures }
    }
}

/// Unary gRPC calls through the proxy, one at a time on each of `connections` HTTP/2
/// prior-knowledge connections (hyper's client, over the `h2` crate), every 10 ms.
struct GrpcLoad {
    report: Arc<Mutex<GrpcReport>>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl GrpcLoad {
    fn start(target: SocketAddr, connections: usize) -> GrpcLoad {
        let report = Arc::new(Mutex::new(GrpcReport::default()));
        let (stop, stopped) = watch::channel(false);
        let tasks = (0..connections)
            .map(|_| tokio::spawn(calls(target, report.clone(), stopped.clone())))
            .collect();
        GrpcLoad {
            report,
            stop,
            tasks,
        }
    }

    fn report(&self) -> GrpcReport {
        self.report
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    async fn stop(mut self) -> GrpcReport {
        let _ = self.stop.send(true);
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
        self.report()
    }
}

/// One connection's calls until `stop`; a connection that fails is counted and opened again.
async fn calls(
    target: SocketAddr,
    report: Arc<Mutex<GrpcReport>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut sender = None;
    let mut ticker = tokio::time::interval(Duration::from_millis(10));
    while !*stop.borrow() {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        let outcome = tokio::time::timeout(Duration::from_secs(5), call(target, &mut sender))
            .await
            .unwrap_or_else(|_| Err("no answer in 5s".into()));
        let mut report = report.lock().unwrap_or_else(PoisonError::into_inner);
        match outcome {
            Ok(version) => *report.ok.entry(version).or_default() += 1,
            Err(why) => {
                sender = None;
                report.failures.push(why);
            }
        }
    }
}

type Sender = http2::SendRequest<Full<Bytes>>;

/// One unary call (an empty request message); the version its reply names.
async fn call(target: SocketAddr, sender: &mut Option<Sender>) -> Result<String, String> {
    if sender.is_none() {
        let stream = tokio::net::TcpStream::connect(target)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (tx, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|e| format!("h2 handshake: {e}"))?;
        tokio::spawn(conn);
        *sender = Some(tx);
    }
    let tx = sender.as_mut().ok_or("no connection")?;
    tx.ready().await.map_err(|e| format!("h2 not ready: {e}"))?;
    let request = http::Request::post(format!("http://{target}/crossfade.Sample/Version"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
        .map_err(|e| e.to_string())?;
    let response = tx
        .send_request(request)
        .await
        .map_err(|e| format!("request: {e}"))?;
    if response.status() != 200 {
        return Err(format!("HTTP status {}", response.status()));
    }
    if let Some(status) = response.headers().get("grpc-status") {
        return Err(format!("trailers-only grpc-status {status:?}"));
    }
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?;
    let status = body.trailers().and_then(|t| t.get("grpc-status")).cloned();
    if status.as_ref().is_none_or(|s| s != "0") {
        return Err(format!("grpc-status {status:?} in the trailers"));
    }
    reply_version(&body.to_bytes()).ok_or_else(|| "a reply that is not one message".into())
}

/// The version a sample app's reply names: one uncompressed length-prefixed message holding
/// protobuf field 1, a string shorter than 128 bytes.
fn reply_version(body: &[u8]) -> Option<String> {
    let (&[flag, a, b, c, d], message) = body.split_first_chunk::<5>()?;
    let len = u32::from_be_bytes([a, b, c, d]) as usize;
    let (&[tag, n], version) = message.split_first_chunk::<2>()?;
    let framed = flag == 0 && message.len() == len && tag == 0x0a;
    (framed && version.len() == usize::from(n)).then(|| String::from_utf8_lossy(version).into())
}
