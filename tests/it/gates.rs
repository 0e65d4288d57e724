//! Webhook gates against a real local HTTP server: asked at every point with the rollout's context,
//! a refusal that rolls back before green gets traffic, a gate that times out halting the rollout
//! past its progress deadline until it answers, and a gate's `Authorization` read from a file at
//! each call (rotated, never shown).

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::rollout::wait_terminal;
use crate::support::webhook::{Reply, WebhookServer};
use crate::support::{temp_dir, Admin, App, Crossfade, Load, LoadConfig, Spec};

/// Answers `POST /ok` with 200, `/no` with 403 `not approved`, `/moved` with a 302 to `/ok`, `/auth` with 200 when the
/// `Authorization` is [`ADMITTED`] and 401 otherwise, and `/switch` with the status a test sets
/// (0: no answer for 2 s, then 200). Records every request's path, JSON body and `Authorization`.
struct GateServer {
    server: WebhookServer,
    switch: Arc<AtomicU16>,
}

/// The only `Authorization` that `/auth` admits.
const ADMITTED: &str = "Bearer new-3d1e77";

impl GateServer {
    async fn start() -> GateServer {
        let switch = Arc::new(AtomicU16::new(0));
        let status = Arc::clone(&switch);
        let server = WebhookServer::start_with_auth(move |path, auth| match path {
            "/ok" => Reply::new(200, ""),
            "/no" => Reply::new(403, "not approved"),
            "/moved" => Reply::new(302, "").location("/ok"),
            "/auth" if auth == ADMITTED => Reply::new(200, ""),
            "/auth" => Reply::new(401, "unauthorized"),
            _ => match status.load(Ordering::SeqCst) {
                0 => Reply::new(200, "").after(Duration::from_secs(2)),
                code => Reply::new(code, ""),
            },
        })
        .await;
        GateServer { server, switch }
    }

    fn url(&self, path: &str) -> String {
        self.server.url(path)
    }

    fn calls(&self) -> Vec<(String, Value)> {
        self.server.calls()
    }

    /// The `Authorization` of every request, in order (empty when absent).
    fn auths(&self) -> Vec<String> {
        self.server.auths()
    }
}

async fn start(spec: &Spec, dir: &std::path::Path) -> (Crossfade, Admin, Load) {
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir, &spec.write(dir, "spec.yaml"));
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    let load = Load::start(LoadConfig::new(spec.listen()));
    (run, admin, load)
}

async fn roll_out(admin: &Admin, green: App) {
    admin.start_rollout(&green.json).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gates_at_every_point_are_asked_in_order_with_the_rollouts_context() {
    let dir = temp_dir();
    let server = GateServer::start().await;
    let mut spec = Spec::new();
    spec.json["rollout"]["gates"] = json!([
        "before_rollout",
        "before_step",
        "before_promotion",
        "after_completion"
    ]
    .iter()
    .map(|at| json!({ "name": format!("g-{at}"), "at": at, "url": server.url("/ok") }))
    .collect::<Vec<_>>());
    spec.json["blue"]["name"] = json!("v1");
    let (mut run, admin, load) = start(&spec, dir.path()).await;
    // The active workload carries its `name:` everywhere, as the preview does: metrics and logs.
    // (Read as text: the `workload` label holds the command line, `{port}` braces included.)
    let (_, metrics) = admin.get_text("/metrics").await.expect("GET /metrics");
    let info = metrics
        .lines()
        .find(|l| l.starts_with("crossfade_backend_info{route=\"web\",backend=\"blue\""));
    assert!(
        info.is_some_and(|l| l.ends_with(",version=\"v1\"} 1")),
        "{metrics}"
    );
    let log = run.log();
    assert!(log.contains("[v1-0]") && !log.contains("[blue-0]"), "{log}");
    roll_out(&admin, App::version("v2").set("name", json!("v2"))).await;
    let rollout = wait_terminal(&admin, Duration::from_secs(40)).await;
    assert_eq!(rollout["phase"], "Completed", "{rollout:#}");

    let calls = server.calls();
    let seen: Vec<(String, String, u64, u64)> = calls
        .iter()
        .map(|(path, body)| {
            assert_eq!(path, "/ok");
            assert_eq!(body["route"], "web", "{body}");
            assert_eq!(body["preview"], "green", "{body}");
            assert_eq!(body["preview_version"], "v2", "{body}");
            assert_eq!(body["active_version"], "v1", "{body}");
            assert_eq!(body["steps"], 3, "{body}");
            (
                body["gate"].as_str().unwrap().to_string(),
                body["at"].as_str().unwrap().to_string(),
                body["step"].as_u64().unwrap(),
                body["preview_weight_bp"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, String, u64, u64)> = [
        ("before_rollout", 1, 1000),
        ("before_step", 1, 1000),
        ("before_step", 2, 5000),
        ("before_step", 3, 10_000),
        ("before_promotion", 3, 10_000),
        ("after_completion", 3, 10_000),
    ]
    .iter()
    .map(|(at, step, bp)| (format!("g-{at}"), at.to_string(), *step, *bp))
    .collect();
    assert_eq!(seen, expected);
    let report = load.stop().await;
    assert_eq!(report.errors(), 0, "{report:?}");
    run.terminate(Duration::from_secs(15)).await;
}

/// Rolls out v2 with one `before_step` gate at the [`GateServer`]'s `path`, `on_reject:
/// rollback`; checks that the rollout rolled back before green got any traffic, with no client
/// error, and returns its reason.
async fn rolled_back_by_a_refusing_gate(path: &str) -> String {
    let dir = temp_dir();
    let server = GateServer::start().await;
    let mut spec = Spec::new();
    spec.json["rollout"]["gates"] = json!([{
        "name": "load-test", "at": "before_step", "url": server.url(path), "on_reject": "rollback",
    }]);
    let (mut run, admin, load) = start(&spec, dir.path()).await;
    roll_out(&admin, App::version("v2")).await;
    let rollout = wait_terminal(&admin, Duration::from_secs(30)).await;
    assert_eq!(rollout["phase"], "RolledBack", "{rollout:#}");
    let report = load.stop().await;
    assert_eq!(report.ok_from("v2"), 0, "green got no traffic: {report:?}");
    assert_eq!(report.errors(), 0, "{report:?}");
    run.terminate(Duration::from_secs(15)).await;
    rollout["reason"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_rollback_gate_rolls_back_before_green_gets_traffic() {
    assert_eq!(
        rolled_back_by_a_refusing_gate("/no").await,
        "before step 1/3 (10%): gate load-test refused: status 403: not approved"
    );
}

/// user37b: a gate whose URL redirects (an `http://` moved to `https://`, a missing trailing
/// slash) is refused, as any non-2xx answer is, and the reason says where it points and that
/// redirects are not followed (it said only `status 302`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirecting_gate_is_refused_naming_where_it_points() {
    assert_eq!(
        rolled_back_by_a_refusing_gate("/moved").await,
        "before step 1/3 (10%): gate load-test refused: status 302, a redirect to /ok, which is \
         not followed: write the URL it points to"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_that_times_out_halts_past_the_progress_deadline_until_it_approves() {
    let dir = temp_dir();
    let server = GateServer::start().await;
    let mut spec = Spec::new();
    spec.json["rollout"]["progress_deadline"] = json!("3s");
    spec.json["rollout"]["gates"] = json!([{
        "name": "approval", "at": "before_promotion", "url": server.url("/switch"),
        "timeout": "300ms", "retry": "200ms",
    }]);
    let (mut run, admin, load) = start(&spec, dir.path()).await;
    roll_out(&admin, App::version("v2")).await;
    // Halted at 100% before promotion, told why.
    let halted = crate::support::wait_until(
        Duration::from_secs(30),
        "a halt before promotion",
        || async {
            let r = admin.rollout().await["rollout"].clone();
            let message = r["message"].as_str().unwrap_or_default().to_string();
            message
                .contains("halted before promotion")
                .then_some(message)
        },
    )
    .await;
    assert!(
        halted.contains("gate approval refused") || halted.contains("asking its gates"),
        "{halted}"
    );
    // Twice the progress deadline later: still halted, not rolled back.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let r = admin.rollout().await["rollout"].clone();
    assert_eq!(r["phase"], "Progressing", "{r:#}");
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("timed out after 300ms"),
        "{r:#}"
    );
    server.switch.store(200, Ordering::SeqCst);
    let rollout = wait_terminal(&admin, Duration::from_secs(30)).await;
    assert_eq!(rollout["phase"], "Completed", "{rollout:#}");
    let report = load.stop().await;
    assert_eq!(report.errors(), 0, "{report:?}");
    run.terminate(Duration::from_secs(15)).await;
}

/// A gate's `Authorization` from `headers_from: [{ value_from: { file: token } }]` (relative to the
/// spec's directory): the file's value is sent, without its line break, at each call, so a halt on
/// a refused token ends at the first call after the file is rewritten. Neither token is shown on
/// `GET /rollout` or in the log; the reference is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gates_header_from_a_file_is_read_at_each_call_and_never_shown() {
    let dir = temp_dir();
    let server = GateServer::start().await;
    let token = dir.path().join("token");
    std::fs::write(&token, "Bearer old-90b4c2\n").expect("write token");
    let mut spec = Spec::new();
    spec.json["rollout"]["gates"] = json!([{
        "name": "approval", "at": "before_promotion", "url": server.url("/auth"), "retry": "200ms",
        "headers_from": [{ "name": "Authorization", "value_from": { "file": "token" } }],
    }]);
    let (mut run, admin, load) = start(&spec, dir.path()).await;
    roll_out(&admin, App::version("v2")).await;
    let halted = crate::support::wait_until(Duration::from_secs(30), "a 401 halt", || async {
        let r = admin.rollout().await;
        let message = r["rollout"]["message"].as_str().unwrap_or_default();
        message
            .contains("gate approval refused: status 401")
            .then_some(r)
    })
    .await;
    assert!(server.auths().iter().all(|a| a == "Bearer old-90b4c2"));
    let shown = halted.to_string();
    assert!(!shown.contains("old-90b4c2"), "{shown}");
    assert!(shown.contains(&token.display().to_string()), "{shown}");

    std::fs::write(&token, "Bearer new-3d1e77\n").expect("rotate token");
    let rollout = wait_terminal(&admin, Duration::from_secs(30)).await;
    assert_eq!(rollout["phase"], "Completed", "{rollout:#}");
    assert_eq!(server.auths().last().map(String::as_str), Some(ADMITTED));
    let shown = format!("{}\n{}", admin.rollout().await, run.log());
    for secret in ["old-90b4c2", "new-3d1e77"] {
        assert!(!shown.contains(secret), "{secret} shown: {shown}");
    }
    let report = load.stop().await;
    assert_eq!(report.errors(), 0, "{report:?}");
    run.terminate(Duration::from_secs(15)).await;
}

/// Trial report 6, F20: one step, three places, two documented conventions that this test pins
/// so they cannot drift apart: the machine's JSON (`GET /rollout`: `step`, `gate.step`,
/// `verdicts[].step`) holds indexes into `config.steps` (0 = the first, as a TrafficShift's
/// `status.step`), and everything read by people or receivers counts from 1 (the gate's POST
/// body `step`, the message "before step 1/3", `crossfade status`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_halted_gate_names_the_same_step_in_get_rollout_the_webhook_and_the_message() {
    let dir = temp_dir();
    let server = GateServer::start().await;
    let mut spec = Spec::new();
    spec.json["rollout"]["gates"] = json!([{
        "name": "approval", "at": "before_step", "url": server.url("/no"), "retry": "200ms",
    }]);
    let (mut run, admin, load) = start(&spec, dir.path()).await;
    roll_out(&admin, App::version("v2")).await;
    let rollout = crate::support::wait_until(Duration::from_secs(30), "a refused gate", || async {
        let r = admin.rollout().await["rollout"].clone();
        r["gate"]["refusal"].is_string().then_some(r)
    })
    .await;
    let index = rollout["gate"]["step"].as_u64().expect("gate.step") as usize;
    assert_eq!(index, 0, "{rollout:#}");
    assert_eq!(rollout["step"], 0, "{rollout:#}");
    let (_, body) = server.calls().last().cloned().expect("the gate was asked");
    assert_eq!(body["step"].as_u64(), Some(index as u64 + 1), "{body}");
    assert_eq!(body["steps"], 3, "{body}");
    let weight = &rollout["config"]["steps"][index]["weight"];
    assert_eq!(weight.as_f64(), Some(10.0), "{rollout:#}");
    assert_eq!(body["preview_weight_bp"], 1000, "{body}");
    let message = rollout["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("halted before step 1/3 (10%)"),
        "{message}"
    );
    let _ = admin.post("/rollout/abort").await;
    wait_terminal(&admin, Duration::from_secs(30)).await;
    drop(load);
    run.terminate(Duration::from_secs(15)).await;
}
