//! C07 — WebSocket / upgraded connections cut at promotion instead of drained
//! (argo-rollouts#3761, flagger#1759, gitpod#4344).
//!
//! Input, as the case gives it: blue and green run the sample app's WebSocket echo at `/ws` (each
//! reply names the pool); 20 sessions are opened before the migration, each sending one numbered
//! message per second; one new session per second during the migration; steps 10/50/100 with a 2 s
//! hold; blue retired with a 30 s drain timeout, and in a second run with 5 s. Plain HTTP load runs
//! beside them so that the analysis has requests to judge.
//!
//! Right outcome, checked here: new upgrades follow the weights at the moment of the upgrade (all
//! green once green has 100 %); every session keeps echoing with no message lost or duplicated
//! until it is closed; blue is retired (its endpoints leave the table) only when its
//! `upgraded` count is 0 — in the 30 s run because the clients closed their sessions 5 s after
//! 100 %, well before the deadline, in the 5 s run because the deadline passed and the proxy closed
//! each session with a close frame 1001 "going away" followed by a clean TCP end (no reset). The
//! per-backend gauge `crossfade_upgraded_connections` is exported and follows the sessions.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::rollout::wait_terminal;
use crate::support::poll::Observation;
use crate::support::ws::{Session, SessionLog};
use crate::support::{temp_dir, wait_until, Admin, App, Crossfade, Load, LoadConfig, Poller, Spec};

/// Sessions opened before the migration (the case: 20).
const BEFORE: usize = 20;
/// Each session sends one message per this period (the case: 1 per second).
const MESSAGE_EVERY: Duration = Duration::from_secs(1);
/// During the migration, one new session per this period (the case: 1 per second).
const NEW_SESSION_EVERY: Duration = Duration::from_secs(1);
/// In the 30 s run, clients close their sessions this long after green has 100 %.
const CLIENTS_CLOSE_AFTER_FULL: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c07_sessions_closed_by_clients_let_blue_retire_before_the_30s_drain_deadline() {
    let run = migrate("30s", true).await;
    let (swap, retired) = (run.swapped_at(), run.retired_at());
    let drained_for = retired - swap;
    eprintln!("c07 30s: blue retired {drained_for:?} after the swap");
    assert!(
        drained_for < Duration::from_secs(20),
        "blue waited for the 30 s deadline instead of the gauge reaching 0: {drained_for:?}"
    );
    assert!(
        run.blue_upgraded_after(swap) > 0,
        "the drain had no open session to wait for; the test proves nothing"
    );
    assert_eq!(run.deadline_event(), None, "{:#}", run.events);
    for log in run.logs.iter().filter(|l| l.pool == "blue") {
        assert!(log.client_closed, "{log:?}");
        assert_eq!(log.server_close, None, "{log:?}");
        assert!(log.clean_end && log.error.is_none(), "{log:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c07_sessions_left_open_get_close_1001_at_the_5s_drain_deadline_then_blue_retires() {
    let run = migrate("5s", false).await;
    let (swap, retired) = (run.swapped_at(), run.retired_at());
    let drained_for = retired - swap;
    eprintln!("c07 5s: blue retired {drained_for:?} after the swap");
    // The deadline is 5 s after the swap; `swap` is when a 50 ms poll first saw it.
    assert!(
        drained_for >= Duration::from_millis(4_800),
        "blue retired before its drain deadline while sessions were open: {drained_for:?}"
    );
    let blue: Vec<&SessionLog> = run.logs.iter().filter(|l| l.pool == "blue").collect();
    assert!(blue.len() >= BEFORE);
    for log in &blue {
        assert_going_away_after(log, swap + Duration::from_millis(4_800));
    }
    for log in run.logs.iter().filter(|l| l.pool == "green") {
        assert_eq!(
            log.server_close, None,
            "a green session was closed: {log:?}"
        );
    }
    let note = run
        .deadline_event()
        .unwrap_or_else(|| panic!("no DrainDeadlinePassed: {:#}", run.events));
    let closed = format!(
        "{} upgraded connections closed (1001 going away)",
        blue.len()
    );
    assert!(note.contains(&closed), "{note}");
}

/// What one migration left to check.
struct Run {
    observations: Vec<Observation>,
    logs: Vec<SessionLog>,
    /// The rollout's events (`GET /rollout`).
    events: Value,
}

/// Runs the case's migration with `drain` as blue's drain timeout; `clients_close` makes the
/// clients close every session [`CLIENTS_CLOSE_AFTER_FULL`] after green has 100 %, else they keep
/// them open (blue's close then, green's at the end of the test). Checks what both runs share.
async fn migrate(drain: &str, clients_close: bool) -> Run {
    let dir = temp_dir();
    let mut spec = Spec::new()
        .blue(App::version("v1").flags(["--pool", "blue"]))
        // Green becomes ready 3 s after it starts: the sessions opened first are all on blue.
        .green(App::version("v2").flags(["--pool", "green", "--unready-for", "3s"]));
    spec.json["rollout"]["hold"] = json!("2s");
    spec.json["rollout"]["drain_timeout"] = json!(drain);
    spec.json["rollout"]["progress_deadline"] = json!("30s");
    spec.json["rollout"]["analysis"]["min_requests"] = json!(5);
    let admin = Admin::new(spec.admin());
    let mut child = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    child.wait_ready(&admin, Duration::from_secs(15)).await;

    let mut sessions = Vec::new();
    for _ in 0..BEFORE {
        sessions.push(Session::open(spec.listen(), MESSAGE_EVERY).await);
    }
    assert_eq!(route(&admin.status().await)["weights"]["green"], 0);
    assert!(sessions.iter().all(|s| s.pool == "blue"));
    let gauge = admin.metrics().await;
    let labels = [("route", "web"), ("backend", "blue")];
    assert_eq!(
        gauge.get("crossfade_upgraded_connections", &labels),
        Some(BEFORE as f64)
    );

    let mut load = LoadConfig::new(spec.listen());
    (load.h1, load.h2, load.rate) = (2, 0, 100);
    let load = Load::start(load);
    let poller = Poller::start(admin, "/status", Duration::from_millis(50));
    let full = open_during_migration(&admin, &mut sessions, spec.listen()).await;
    if clients_close {
        tokio::time::sleep_until(full + CLIENTS_CLOSE_AFTER_FULL).await;
        sessions.iter().for_each(Session::close);
    }
    let rollout = wait_terminal(&admin, Duration::from_secs(60)).await;
    assert_eq!(rollout["phase"], "Completed", "{rollout:#}");
    let events = admin.rollout().await["events"].clone();
    let mut logs = Vec::new();
    for session in sessions {
        if !clients_close && session.pool == "green" {
            session.close();
        }
        logs.push(session.finish(Duration::from_secs(10)).await);
    }
    // The poller may not have looked since the retirement yet (it is the last change): wait for it.
    wait_until(
        Duration::from_secs(10),
        "/status to show blue retired",
        || async {
            let seen = poller.seen();
            seen.iter()
                .any(|o| endpoints(&route(&o.value)["blue"]) == 0)
                .then_some(())
        },
    )
    .await;
    let observations = poller.stop().await;
    let report = load.stop().await;
    assert_eq!(report.errors(), 0, "{report:?}");
    let blue_gauge = admin
        .metrics()
        .await
        .get("crossfade_upgraded_connections", &labels);
    assert_eq!(
        blue_gauge,
        Some(0.0),
        "blue's gauge after every session ended"
    );
    let run = Run {
        observations,
        logs,
        events,
    };
    run.check_shared();
    child.terminate(Duration::from_secs(15)).await;
    run
}

/// Opens one session per second from the first step until 3 s after green has 100 %; returns when
/// `/status` first showed green at 100 %.
async fn open_during_migration(
    admin: &Admin,
    sessions: &mut Vec<Session>,
    proxy: std::net::SocketAddr,
) -> Instant {
    let started = Instant::now();
    let mut full = None;
    loop {
        let status = admin.status().await;
        if full.is_none() && route(&status)["weights"]["green"] == 10_000 {
            full = Some(Instant::now());
        }
        if full.is_some_and(|f| f.elapsed() >= Duration::from_secs(3)) {
            return full.unwrap_or(started);
        }
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "green never got 100%"
        );
        sessions.push(Session::open(proxy, MESSAGE_EVERY).await);
        tokio::time::sleep(NEW_SESSION_EVERY).await;
    }
}

// === impl Run ===

impl Run {
    /// When `/status` first showed green active (the role swap, which starts blue's drain).
    fn swapped_at(&self) -> Instant {
        self.first(|route| route["active"] == "green")
            .expect("the swap was never observed")
    }

    /// When `/status` first showed blue without endpoints (retired).
    fn retired_at(&self) -> Instant {
        self.first(|route| endpoints(&route["blue"]) == 0)
            .expect("blue was never retired")
    }

    /// The most blue upgraded connections any observation after `at` showed.
    fn blue_upgraded_after(&self, at: Instant) -> u64 {
        self.observations
            .iter()
            .filter(|o| o.sent > at)
            .filter_map(|o| route(&o.value)["blue"]["upgraded"].as_u64())
            .max()
            .unwrap_or(0)
    }

    /// The message of the `DrainDeadlinePassed` event, if the drain hit its deadline.
    fn deadline_event(&self) -> Option<String> {
        self.events.as_array()?.iter().find_map(|e| {
            (e["reason"] == "DrainDeadlinePassed")
                .then(|| e["message"].as_str().unwrap_or("").to_owned())
        })
    }

    fn first(&self, seen: impl Fn(&Value) -> bool) -> Option<Instant> {
        self.observations
            .iter()
            .find(|o| seen(route(&o.value)))
            .map(|o| o.received)
    }

    /// What both runs must show: echoes intact, upgrades following the weights, blue retired only
    /// with no upgraded connection open, the gauge seen at 20 and more.
    fn check_shared(&self) {
        for log in &self.logs {
            if let Err(problem) = log.check_echoes() {
                panic!("{} session: {problem}: {log:?}", log.pool);
            }
        }
        for o in &self.observations {
            let blue = &route(&o.value)["blue"];
            if endpoints(blue) == 0 {
                assert_eq!(
                    blue["upgraded"], 0,
                    "blue retired with sessions open: {}",
                    o.value
                );
            }
        }
        let max_blue = self
            .observations
            .iter()
            .filter_map(|o| route(&o.value)["blue"]["upgraded"].as_u64())
            .max()
            .unwrap_or(0);
        assert!(
            max_blue >= BEFORE as u64,
            "blue's gauge peaked at {max_blue}"
        );
        self.check_upgrades_follow_weights();
    }

    /// A session opened while green had 0 is blue; one requested after green had 100 % is green.
    fn check_upgrades_follow_weights(&self) {
        let last_zero = self
            .observations
            .iter()
            .take_while(|o| route(&o.value)["weights"]["green"] == 0)
            .last()
            .map(|o| o.sent);
        let full = self
            .first(|route| route["weights"]["green"] == 10_000)
            .expect("100%");
        let (mut before, mut after) = (0, 0);
        for log in &self.logs {
            if last_zero.is_some_and(|zero| log.opened < zero) {
                before += 1;
                assert_eq!(log.pool, "blue", "upgraded while green had 0: {log:?}");
            }
            if log.requested > full {
                after += 1;
                assert_eq!(log.pool, "green", "upgraded after green had 100%: {log:?}");
            }
        }
        let green = self.logs.iter().filter(|l| l.pool == "green").count();
        eprintln!(
            "c07: {} sessions, {green} on green; {before} opened before the migration, {after} after 100%",
            self.logs.len()
        );
        assert!(
            before >= BEFORE,
            "only {before} sessions provably opened before the migration"
        );
        assert!(after >= 2, "only {after} sessions opened after 100%");
    }
}

/// The server closed the session with 1001 "going away", not before `not_before`, and the
/// connection then ended cleanly (no reset).
fn assert_going_away_after(log: &SessionLog, not_before: Instant) {
    let close = log.server_close.as_ref();
    assert_eq!(
        close,
        Some(&(CloseCode::Away, "going away".to_owned())),
        "{log:?}"
    );
    assert!(
        log.clean_end && log.error.is_none(),
        "reset instead of a close: {log:?}"
    );
    let closed_at = log.server_close_at.expect("close time");
    assert!(
        closed_at >= not_before,
        "closed before the deadline: {log:?}"
    );
}

fn route(status: &Value) -> &Value {
    &status["routes"][0]
}

fn endpoints(backend: &Value) -> usize {
    backend["endpoints"].as_array().map_or(0, Vec::len)
}

/// The rollback side of C07 (session 40): WebSocket sessions that green holds when the rollout is
/// undone (an operator's abort here; an analysis rollback stops the preview the same way,
/// `Command::StopPreview`) are drained like blue's at a promotion, not cut: they keep echoing
/// until green's drain deadline (`green.stop_grace`, 3 s), then each gets a close frame 1001
/// "going away" and a clean end before green is stopped; blue's sessions are untouched, and every
/// upgrade after the abort goes to blue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c07_green_sessions_at_an_abort_get_close_1001_before_green_stops_and_blue_keeps_its() {
    let dir = temp_dir();
    let mut spec = Spec::new()
        .blue(App::version("v1").flags(["--pool", "blue"]))
        .green(
            App::version("v2")
                .flags(["--pool", "green"])
                .set("stop_grace", json!("3s")),
        );
    spec.json["rollout"]["steps"] = json!([50, 100]);
    spec.json["rollout"]["hold"] = json!("60s");
    spec.json["rollout"]["progress_deadline"] = json!("120s");
    spec.json["rollout"]["analysis"]["max_inconclusive"] = json!(100);
    let admin = Admin::new(spec.admin());
    let mut child = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    child.wait_ready(&admin, Duration::from_secs(15)).await;
    wait_until(Duration::from_secs(20), "green at 50%", || async {
        (route(&admin.status().await)["weights"]["green"] == 5_000).then_some(())
    })
    .await;
    let mut sessions = Vec::new();
    let on = |sessions: &[Session], pool: &str| sessions.iter().filter(|s| s.pool == pool).count();
    while on(&sessions, "green") < 3 || on(&sessions, "blue") < 3 {
        assert!(sessions.len() < 60, "50% never gave both pools 3 sessions");
        sessions.push(Session::open(spec.listen(), MESSAGE_EVERY).await);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    let aborted_at = Instant::now();
    let (status, answer) = admin.post("/rollout/abort").await;
    assert_eq!(status, 200, "POST /rollout/abort: {answer}");
    let rollout = wait_terminal(&admin, Duration::from_secs(30)).await;
    assert_eq!(rollout["phase"], "Aborted", "{rollout:#}");
    let mut after = Vec::new();
    for _ in 0..5 {
        after.push(Session::open(spec.listen(), MESSAGE_EVERY).await);
    }
    assert!(
        after.iter().all(|s| s.pool == "blue"),
        "an upgrade after the abort went to green"
    );

    let (green, blue): (Vec<Session>, Vec<Session>) =
        sessions.into_iter().partition(|s| s.pool == "green");
    for session in green {
        let log = session.finish(Duration::from_secs(20)).await;
        assert_going_away_after(&log, aborted_at + Duration::from_millis(2_500));
        log.check_echoes()
            .unwrap_or_else(|p| panic!("green session: {p}: {log:?}"));
    }
    for session in blue.into_iter().chain(after) {
        session.close();
        let log = session.finish(Duration::from_secs(10)).await;
        assert_eq!(log.server_close, None, "a blue session was closed: {log:?}");
        assert!(log.clean_end && log.error.is_none(), "{log:?}");
        log.check_echoes()
            .unwrap_or_else(|p| panic!("blue session: {p}: {log:?}"));
    }
    let gauge = admin.metrics().await;
    let labels = [("route", "web"), ("backend", "green")];
    let green_open = gauge.get("crossfade_upgraded_connections", &labels);
    assert!(
        matches!(green_open, None | Some(0.0)),
        "green's gauge: {green_open:?}"
    );
    child.terminate(Duration::from_secs(15)).await;
}
