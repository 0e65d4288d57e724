//! C02 — traffic moved to a pool that is not ready yet (argo-rollouts#2864, #1681, #3420).
//!
//! Right outcome (local mode): 0 client 503s or other errors; the proxy learns the preview's
//! endpoints, and the preview gets weight, only once *every* instance passed its readiness probe, so
//! no request reaches an instance before it was ready; a weight increase waits while the preview
//! fails its probe, and the controller says why.
//!
//! Scale: the case starts green's instances at 0, 3 and 6 s, each unready for 6 s; here at 0, 2 and
//! 4 s, each unready for 3 s, under 150 req/s over 8 keep-alive connections (the case: 200 req/s).
//!
//! At the proxy's start (C02's family through another trigger): a `crossfade proxy` whose green
//! fails its first probe sends green nothing from its first request on (here; in-process with a
//! held probe, `/readyz` and the bounded wait: the proxy's `first_probes::c02_*`; over a binary
//! upgrade: `upgrade::c02_*`).
//!
//! Rollback variant (argo-rollouts#3941): at 100% green, 2 of blue's 3 instances are killed and
//! their supervised restarts held back, then the rollout is aborted. Blue's weight rises no faster
//! than its healthy capacity (at most 1.5 × its healthy share: 50% with 1 of 3), the rollout says
//! that it waits and why, and it reaches 100% blue once the instances are back, with 0 client
//! errors under light load (40 req/s over 4 connections).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;

use crate::rollout::wait_terminal;
use crate::support::spec::write_json;
use crate::support::trace::{assert_no_errors, burst, errors, Record};
use crate::support::{
    proxy_config, run_to_end, temp_dir, wait_until, Admin, App, Crossfade, Poller, RunningProxy,
    SampleApp, Spec, Trace, TraceConfig, BIN,
};

/// Seconds between the starts of green's instances.
const STAGGER_S: u64 = 2;
/// Seconds each green instance answers 503 on `/healthz` after it started.
const UNREADY_S: u64 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c02_preview_gets_no_weight_before_every_instance_is_ready() {
    let dir = temp_dir();
    let stamps = dir.path().join("stamps");
    std::fs::create_dir(&stamps).expect("stamps dir");
    let mut spec = Spec::new()
        .blue(
            App::version("v1")
                .flags(["--pool", "blue"])
                .set("instances", json!(2)),
        )
        .green(staggered_green(&stamps));
    spec.json["rollout"]["analysis"]["min_requests"] = json!(5);
    let admin = Admin::new(spec.admin());
    let mut child = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    child.wait_ready(&admin, Duration::from_secs(15)).await;
    let trace = Trace::start(TraceConfig::new(spec.listen()));
    let statuses = Poller::start(admin, "/status", Duration::from_millis(25));
    let rollouts = Poller::start(admin, "/rollout", Duration::from_millis(100));

    let rollout = wait_terminal(&admin, Duration::from_secs(40)).await;
    let records = trace.stop().await;
    let (statuses, rollouts) = (statuses.stop().await, rollouts.stop().await);
    let events = admin.rollout().await["events"].clone();
    child.terminate(Duration::from_secs(15)).await;

    assert_eq!(rollout["phase"], "Completed", "{rollout:#}");
    let started = read_stamps(&stamps, 3);
    let spread = started[2].duration_since(started[0]).unwrap_or_default();
    assert!(spread >= Duration::from_secs(2 * STAGGER_S) - Duration::from_millis(200));
    // No instance can pass its probe before its start plus UNREADY_S.
    let all_ready = started[2] + Duration::from_secs(UNREADY_S);

    assert_no_errors(&records);
    let first_green = first_green_answer(&records).expect("green answered at some point");
    assert!(
        first_green >= all_ready,
        "green answered {} before all were ready",
        late(all_ready, first_green)
    );
    for status in &statuses {
        let green = &status.value["routes"][0]["green"];
        let learned = green["weight_bp"] != 0 || green["endpoints"] != json!([]);
        assert!(
            !learned || status.received_wall >= all_ready,
            "the proxy had green {green} {} before all green instances were ready",
            late(all_ready, status.received_wall)
        );
    }
    for event in events.as_array().expect("events") {
        let reason = event["reason"].as_str().unwrap_or_default();
        if matches!(reason, "PreviewReady" | "StepStarted" | "WeightsApplied") {
            let at = UNIX_EPOCH
                + Duration::from_secs_f64(event["at_unix_seconds"].as_f64().unwrap_or(0.0));
            assert!(at >= all_ready, "{reason} before all were ready: {event}");
        }
    }
    // While provisioning, the rollout says that it waits and why.
    let waiting = rollouts.iter().any(|o| {
        o.value["rollout"]["phase"] == "Provisioning"
            && o.value["rollout"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("no traffic until it is ready"))
    });
    assert!(waiting, "no /rollout answer said it waits for readiness");
}

/// Once the preview was ready and got its first step, it fails its probe: the next weight increase
/// is never applied, the controller says why, and the progress deadline rolls the rollout back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c02_weight_increase_waits_for_a_healthy_preview() {
    let dir = temp_dir();
    let green = App::version("v2")
        .flags(["--pool", "green", "--fail-health-after", "4s"])
        .set("instances", json!(2));
    let mut spec = Spec::new()
        .blue(App::version("v1").flags(["--pool", "blue"]))
        .green(green);
    spec.json["rollout"]["steps"] = json!([{ "weight": 10, "hold": "4s" }, 50, 100]);
    spec.json["rollout"]["progress_deadline"] = json!("6s");
    spec.json["rollout"]["analysis"]["min_requests"] = json!(5);
    let admin = Admin::new(spec.admin());
    let mut child = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    child.wait_ready(&admin, Duration::from_secs(15)).await;
    let trace = Trace::start(TraceConfig::new(spec.listen()));
    let statuses = Poller::start(admin, "/status", Duration::from_millis(25));

    let rollout = wait_terminal(&admin, Duration::from_secs(40)).await;
    let records = trace.stop().await;
    let statuses = statuses.stop().await;
    let events = admin.rollout().await["events"].clone();
    let final_weights = admin.status().await["routes"][0]["weights"].clone();
    child.terminate(Duration::from_secs(15)).await;

    assert_eq!(rollout["phase"], "RolledBack", "{rollout:#}");
    let reasons: Vec<&str> = events
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["reason"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        reasons.contains(&"PreviewUnhealthy"),
        "the wait is not explained: {reasons:?}"
    );
    assert!(reasons.contains(&"DeadlineExceeded"), "{reasons:?}");
    let most = statuses
        .iter()
        .filter_map(|s| s.value["routes"][0]["green"]["weight_bp"].as_u64())
        .max();
    assert_eq!(
        most,
        Some(1_000),
        "green got more than its first step while unhealthy"
    );
    assert_no_errors(&records);
    assert_eq!(final_weights, json!({ "blue": 10_000, "green": 0 }));
}

/// A rollout at 100% green whose blue has 1 of 3 instances up: the other two were killed and
/// their supervised restarts are held back (`ctl/hold-<port>`) until the test lets them listen.
struct BlueDown {
    dir: tempfile::TempDir,
    ctl: std::path::PathBuf,
    child: Crossfade,
    admin: Admin,
    trace: Trace,
    /// The ports of the two instances held back.
    down: Vec<u16>,
}

impl BlueDown {
    async fn start() -> BlueDown {
        let dir = temp_dir();
        let ctl = dir.path().join("ctl");
        std::fs::create_dir(&ctl).expect("ctl dir");
        let mut spec = Spec::new().blue(held_blue(&ctl));
        // Generous probe timeouts: a loaded machine must not make green look down (a rollback
        // from a preview with no healthy endpoint goes to blue at once, by design).
        spec.json["route"]["health"] =
            json!({ "interval": "500ms", "timeout": "500ms", "rise": 2, "fall": 3 });
        let admin = Admin::new(spec.admin());
        let mut child = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
        child.wait_ready(&admin, Duration::from_secs(20)).await;
        let mut load = TraceConfig::new(spec.listen());
        (load.rate, load.conns, load.max_duration) = (40, 4, Duration::from_secs(120));
        let trace = Trace::start(load);

        let request = json!({
            "green": App::version("v2").flags(["--pool", "green"]).set("instances", json!(2)).json,
            "rollout": {
                "steps": [{ "weight": 50, "hold": "1s" }, 100],
                "hold": "10m",
                "progress_deadline": "20m",
                "analysis": { "max_error_rate": "1%", "min_requests": 5 },
            },
        });
        let (code, body) = admin.json("POST", "/rollout", Some(&request)).await;
        assert_eq!(code, 202, "{body}");
        wait_until(Duration::from_secs(60), "100% on green", || async {
            let r = admin.rollout().await["rollout"].clone();
            let full = r["phase"] == "Progressing" && r["step"] == 1 && r["applied_bp"] == 10_000;
            full.then_some(())
        })
        .await;

        // Two of blue's instances go down and restart, held back before they listen.
        let blue = admin.status().await["routes"][0]["blue"]["endpoints"].clone();
        let blue: Vec<String> = serde_json::from_value(blue).expect("blue endpoints");
        assert_eq!(blue.len(), 3, "{blue:?}");
        let down: Vec<u16> = blue[1..]
            .iter()
            .map(|e| {
                e.rsplit(':')
                    .next()
                    .and_then(|p| p.parse().ok())
                    .expect("port")
            })
            .collect();
        for port in &down {
            std::fs::write(ctl.join(format!("hold-{port}")), "").expect("hold file");
            kill_instance(&ctl, *port);
        }
        wait_until(
            Duration::from_secs(20),
            "1 of 3 blue endpoints healthy",
            || async { (healthy(&admin.status().await, "blue") == 1).then_some(()) },
        )
        .await;
        BlueDown {
            dir,
            ctl,
            child,
            admin,
            trace,
            down,
        }
    }

    /// Waits until the abort (or rollback) holds green at 50% for blue's capacity; returns the
    /// rollout's message then.
    async fn capacity_wait(&self) -> String {
        let admin = self.admin;
        wait_until(
            Duration::from_secs(20),
            "a wait for blue's capacity",
            || async {
                let r = admin.rollout().await["rollout"].clone();
                let status = admin.status().await;
                let message = r["message"].as_str().unwrap_or_default().to_owned();
                let blue_bp = &status["routes"][0]["blue"]["weight_bp"];
                let waits =
                    r["phase"] == "Aborting" && message.contains("1 of 3 endpoints healthy");
                (waits && *blue_bp == 5_000).then_some(message)
            },
        )
        .await
    }

    /// Lets the two held instances listen again.
    fn release(&self) {
        for port in &self.down {
            std::fs::remove_file(self.ctl.join(format!("hold-{port}"))).expect("remove hold file");
        }
    }
}

/// At 100% green, blue has 1 of 3 instances up (the other two restart, held back until the test lets
/// them listen again), and the operator aborts: blue gets 50% (1.5 × its healthy share), never more
/// while only 1 is healthy; the rollout says it waits for blue's capacity; once the two are back,
/// blue gets 100% and the rollout is aborted. No client error throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c02_rollback_moves_weight_back_no_faster_than_blue_can_carry_it() {
    let mut b = BlueDown::start().await;
    let admin = b.admin;
    let statuses = Poller::start(admin, "/status", Duration::from_millis(25));
    let (code, body) = admin.post("/rollout/abort").await;
    assert_eq!(code, 200, "{body}");
    let waiting = b.capacity_wait().await;
    let degraded = statuses.stop().await;
    assert!(waiting.contains("blue at 50%"), "{waiting}");
    assert!(!degraded.is_empty());
    for status in &degraded {
        let blue = &status.value["routes"][0]["blue"];
        let weight = blue["weight_bp"].as_u64().unwrap_or(u64::MAX);
        assert!(
            weight <= 5_000,
            "blue got {weight} bp with {} of 3 endpoints healthy",
            healthy(&status.value, "blue")
        );
    }

    // The two instances come back: blue can carry all of it.
    b.release();
    let rollout = wait_terminal(&admin, Duration::from_secs(60)).await;
    let status = admin.status().await;
    let events = admin.rollout().await["events"].clone();
    let records = b.trace.stop().await;
    b.child.terminate(Duration::from_secs(15)).await;

    assert_eq!(rollout["phase"], "Aborted", "{rollout:#}");
    assert_eq!(
        status["routes"][0]["weights"],
        json!({ "blue": 10_000, "green": 0 })
    );
    let reasons: Vec<&str> = events
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["reason"].as_str()).collect())
        .unwrap_or_default();
    assert!(reasons.contains(&"CapacityChanged"), "{reasons:?}");
    let failed = errors(&records);
    assert!(
        failed.is_empty(),
        "{} client errors of {}, e.g. {:?}",
        failed.len(),
        records.len(),
        failed.first()
    );
}

/// The operator's exit from a long capacity wait: while the abort holds green at 50% for blue
/// (1 of 3 up, the others held back for as long as the test wants), a second abort is refused
/// with words that say so and name the way out (`409`), and `crossfade abort --force` sends all
/// traffic to blue at once: accepted, `Aborted` with 100% blue while blue still has 1 of 3, the
/// reason and an `AbortForced` event naming the operator's command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c02_abort_force_ends_a_capacity_wait_at_once_and_names_the_operator() {
    let mut b = BlueDown::start().await;
    let admin = b.admin;
    let (code, body) = admin.post("/rollout/abort").await;
    assert_eq!(code, 200, "{body}");
    b.capacity_wait().await;

    let (code, body) = admin.post("/rollout/abort").await;
    assert_eq!(code, 409, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with(
            "abort rejected: already sending traffic back to blue as fast as its capacity allows"
        ) && error.contains("`abort --force`"),
        "{body}"
    );
    assert_eq!(body["phase"], "Aborting", "{body}");

    let addr = admin.addr.to_string();
    let done = run_to_end(
        ["abort", "--force", "--admin", addr.as_str()],
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(done.code, Some(0), "{}{}", done.stdout, done.stderr);
    let answer: serde_json::Value = serde_json::from_str(&done.stdout).expect("json answer");
    assert_eq!(answer["command"], "force-abort", "{answer}");
    assert_eq!(answer["accepted"], true, "{answer}");

    let rollout = wait_terminal(&admin, Duration::from_secs(60)).await;
    let status = admin.status().await;
    let events = admin.rollout().await["events"].clone();
    assert_eq!(rollout["phase"], "Aborted", "{rollout:#}");
    assert_eq!(
        status["routes"][0]["weights"],
        json!({ "blue": 10_000, "green": 0 })
    );
    assert_eq!(
        healthy(&status, "blue"),
        1,
        "blue was still down when forced"
    );
    let reason = rollout["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("aborted by operator")
            && reason.contains("force-abort by operator: all traffic sent back to blue at once"),
        "{rollout:#}"
    );
    let forced: Vec<&serde_json::Value> = events
        .as_array()
        .map(|a| a.iter().filter(|e| e["reason"] == "AbortForced").collect())
        .unwrap_or_default();
    assert_eq!(forced.len(), 1, "{events:#}");
    b.release();
    let _ = b.trace.stop().await;
    b.child.terminate(Duration::from_secs(15)).await;
    drop(b.dir);
}

/// Blue's three instances, each writing its pid to `ctl/pid-<port>` and, while `ctl/hold-<port>`
/// exists, waiting before it listens (a restart that takes as long as the test wants).
fn held_blue(ctl: &Path) -> App {
    let script = format!(
        r#"echo $$ > "$CTL/pid-{{port}}"
while [ -e "$CTL/hold-{{port}}" ]; do sleep 0.05; done
exec "{BIN}" sample-app --port {{port}} --version v1 --pool blue"#
    );
    App {
        json: json!({
            "command": "sh",
            "args": ["-c", script],
            "env": { "CTL": ctl },
            "instances": 3,
            "readiness": { "interval": "50ms", "deadline": "20s" },
            "stop_grace": "2s",
        }),
    }
}

/// SIGKILLs the blue instance on `port` (a process this test's `crossfade run` started).
fn kill_instance(ctl: &Path, port: u16) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let text = std::fs::read_to_string(ctl.join(format!("pid-{port}"))).expect("pid file");
    let pid: i32 = text.trim().parse().expect("a pid");
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap_or_else(|e| panic!("kill {pid}: {e}"));
}

/// How many of `slot`'s endpoints the proxy's `/status` shows healthy.
fn healthy(status: &serde_json::Value, slot: &str) -> usize {
    status["routes"][0][slot]["health"]
        .as_array()
        .map_or(0, |h| h.iter().filter(|e| e["healthy"] == true).count())
}

/// Green's three instances, started `STAGGER_S` apart by a wrapper that records each start time in
/// `stamps/started-<i>` (`mkdir` hands out the slots atomically), each unready for `UNREADY_S`.
fn staggered_green(stamps: &Path) -> App {
    let script = format!(
        r#"i=0; while ! mkdir "$STAMPS/slot$i" 2>/dev/null; do i=$((i+1)); done
sleep $((i*{STAGGER_S})); date +%s.%N > "$STAMPS/started-$i"
exec "{BIN}" sample-app --port {{port}} --version v2 --pool green --unready-for {UNREADY_S}s"#
    );
    App {
        json: json!({
            "command": "sh",
            "args": ["-c", script],
            "env": { "STAMPS": stamps },
            "instances": 3,
            "readiness": { "interval": "50ms", "deadline": "20s" },
            "stop_grace": "2s",
        }),
    }
}

/// The `n` start times, sorted.
fn read_stamps(dir: &Path, n: usize) -> Vec<SystemTime> {
    let mut times: Vec<SystemTime> = (0..n)
        .map(|i| {
            let path = dir.join(format!("started-{i}"));
            let text = std::fs::read_to_string(&path).expect("start stamp");
            let secs: f64 = text.trim().parse().expect("seconds since the epoch");
            UNIX_EPOCH + Duration::from_secs_f64(secs)
        })
        .collect();
    times.sort();
    times
}

/// When the first response from green arrived.
fn first_green_answer(records: &[Record]) -> Option<SystemTime> {
    records
        .iter()
        .filter(|r| r.pool() == Some("green"))
        .map(|r| r.finished_wall)
        .min()
}

/// `"1.2s"`: how long before `deadline` `at` was.
fn late(deadline: SystemTime, at: SystemTime) -> String {
    let early = deadline.duration_since(at).unwrap_or_default();
    format!("{early:?}")
}

/// The same family through another trigger: a `crossfade proxy` with active checks, whose green
/// gets two more instances by a SIGHUP reload, one of them not ready (`/healthz` 503). No request
/// reaches the unready one, right after the reload or later; the ready one gets requests once its
/// first check passed (probed at once), and the clients see no error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c02_endpoint_added_by_a_reload_gets_no_request_before_a_check_passes() {
    let dir = temp_dir();
    let blue = SampleApp::start(dir.path(), "blue", "blue-0", &[]).await;
    let green = SampleApp::start(dir.path(), "green", "green-0", &[]).await;
    let unready = ["--unready-for", "120s"];
    let unready = SampleApp::start(dir.path(), "green", "green-unready", &unready).await;
    let ready = SampleApp::start(dir.path(), "green", "green-ready", &[]).await;
    let mut config = proxy_config(&[blue.addr], &[green.addr]);
    config["routes"][0]["blue"]["weight"] = json!(50);
    config["routes"][0]["green"]["weight"] = json!(50);
    config["routes"][0]["health"] =
        json!({ "interval": "1s", "timeout": "500ms", "rise": 2, "fall": 2 });
    let proxy = RunningProxy::start(dir.path(), "proxy.yaml", &config).await;

    config["routes"][0]["green"]["endpoints"] = json!([green.addr, unready.addr, ready.addr]);
    write_json(dir.path(), "proxy.yaml", &config);
    kill(Pid::from_raw(proxy.child.pid() as i32), Signal::SIGHUP).expect("SIGHUP the proxy");
    wait_until(Duration::from_secs(10), "the reload", || {
        let reloaded = proxy.child.log().contains("SIGHUP: routes reloaded");
        async move { reloaded.then_some(()) }
    })
    .await;
    let traced = TraceConfig::new(proxy.listen);
    let mut records = burst(&traced, 1_000).await;
    // Past rise × interval: the unready endpoint has had probes enough to be judged either way.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let later = burst(&traced, 1_000).await;
    let by_instance = |records: &[Record], instance: &str| {
        records
            .iter()
            .filter(|r| r.instance() == Some(instance))
            .count()
    };
    println!(
        "C02 reload: right after it, unready {} ready {}; later, unready {} ready {}",
        by_instance(&records, "green-unready"),
        by_instance(&records, "green-ready"),
        by_instance(&later, "green-unready"),
        by_instance(&later, "green-ready"),
    );
    assert!(
        by_instance(&later, "green-ready") > 0,
        "the ready endpoint never got a request"
    );
    records.extend(later);
    assert_eq!(
        by_instance(&records, "green-unready"),
        0,
        "sent to an unready instance"
    );
    assert!(
        errors(&records).is_empty(),
        "{:?}",
        errors(&records).first()
    );
}

/// The same family at the proxy's start: a `crossfade proxy` started with a config whose green
/// answers `/api` but fails its health probe (`/healthz` 503) gets traffic from the moment it
/// accepts, before it is ready. No request reaches green, none fails (a request that finds no
/// endpoint probed yet waits for the first probes), before `/readyz` answers 200 or after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c02_a_proxy_started_with_an_unready_green_sends_it_nothing_from_its_first_request() {
    let dir = temp_dir();
    let blue = SampleApp::start(dir.path(), "blue", "blue-0", &[]).await;
    let unready = ["--unready-for", "600s"];
    let green = SampleApp::start(dir.path(), "green", "green-0", &unready).await;
    let mut config = proxy_config(&[blue.addr], &[green.addr]);
    config["routes"][0]["blue"]["weight"] = json!(50);
    config["routes"][0]["green"]["weight"] = json!(50);
    config["routes"][0]["health"] =
        json!({ "interval": "1s", "timeout": "500ms", "rise": 2, "fall": 2 });
    let path = write_json(dir.path(), "proxy.yaml", &config);
    let listen = crate::support::spec::addr(&config["listen"]);
    let admin = Admin::new(crate::support::spec::addr(&config["admin"]));
    let mut child = Crossfade::proxy(dir.path(), &path);
    wait_until(Duration::from_secs(15), "the proxy accepting", || async {
        tokio::net::TcpStream::connect(listen).await.ok().map(drop)
    })
    .await;
    let records = burst(&TraceConfig::new(listen), 500).await;
    child.wait_ready(&admin, Duration::from_secs(15)).await;
    let later = burst(&TraceConfig::new(listen), 500).await;
    child.terminate(Duration::from_secs(15)).await;

    let to_green = records
        .iter()
        .chain(&later)
        .filter(|r| r.pool() == Some("green"))
        .count();
    assert_eq!(
        to_green, 0,
        "requests answered by green, which never passed a probe"
    );
    assert_no_errors(&records);
    assert!(errors(&later).is_empty(), "{:?}", errors(&later).first());
}
