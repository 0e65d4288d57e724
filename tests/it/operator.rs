//! An operator drives a running `crossfade run` from the command line: `migrate` starts a rollout,
//! `pause`, `resume` and `promote` steer it, `status` shows it, and commands that make no sense now
//! are refused with a reason and a non-zero exit code.

use std::time::Duration;

use serde_json::json;

use crate::rollout::wait_terminal;
use crate::support::child::children_of;
use crate::support::spec::write_json;
use crate::support::{
    pid_alive, run_to_end, temp_dir, wait_gone, wait_until, Admin, App, Crossfade, Load,
    LoadConfig, Spec,
};

/// Runs `crossfade VERB --admin ADDR` and returns its exit code and stdout.
async fn operator(verb: &str, admin: &Admin, extra: &[&str]) -> (Option<i32>, String) {
    let addr = admin.addr.to_string();
    let mut args = vec![verb];
    args.extend_from_slice(extra);
    args.extend(["--admin", addr.as_str()]);
    let done = run_to_end(args, Duration::from_secs(20)).await;
    (done.code, done.stdout + &done.stderr)
}

/// `crossfade migrate` to `green` (a workload that never gets ready; the progress deadline an
/// hour away), then, once it provisions and its processes run, `crossfade abort`: the pids of
/// those processes, found as the children of `crossfade` whose command line contains `marker`.
async fn abort_while_provisioning(
    dir: &std::path::Path,
    admin: &Admin,
    crossfade: u32,
    green: serde_json::Value,
    marker: &str,
) -> Vec<u32> {
    let request = json!({ "green": green, "rollout": { "progress_deadline": "1h" } });
    let file = write_json(dir, &format!("{marker}.yaml"), &request);
    let (code, out) = operator("migrate", admin, &[&file.to_string_lossy()]).await;
    assert_eq!(code, Some(0), "{out}");
    wait_phase(admin, "Provisioning").await;
    let what = format!("green {marker} started");
    let green = wait_until(Duration::from_secs(10), &what, || async {
        let found: Vec<u32> = children_of(crossfade)
            .into_iter()
            .filter(|&pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
            })
            .collect();
        (!found.is_empty()).then_some(found)
    })
    .await;
    let (code, out) = operator("abort", admin, &[]).await;
    assert_eq!(code, Some(0), "{out}");
    green
}

async fn phase(admin: &Admin) -> String {
    admin.rollout().await["rollout"]["phase"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn wait_phase(admin: &Admin, want: &str) {
    wait_until(Duration::from_secs(20), want, || async {
        (phase(admin).await == want).then_some(())
    })
    .await;
}

/// Trial 9, I14: a resumed step holds its 5m again from zero, and `status` (text and JSON) says
/// since when, how long it has held and how long is left. The 5m hold cannot run out meanwhile.
async fn hold_is_shown(admin: &Admin) {
    let (code, out) = operator("status", admin, &["--json"]).await;
    assert_eq!(code, Some(0), "{out}");
    let status: serde_json::Value = serde_json::from_str(&out).expect("status --json prints JSON");
    let hold = &status["rollout"]["hold"];
    let seconds = |k: &str| hold[k].as_f64().unwrap_or(-1.0);
    assert_eq!(seconds("hold_seconds"), 300.0, "{status:#}");
    let (elapsed, left) = (seconds("elapsed_seconds"), seconds("left_seconds"));
    assert!(elapsed >= 0.0 && left > 0.0, "{status:#}");
    assert!((elapsed + left - 300.0).abs() < 0.01, "{status:#}");
    for at in ["started_at", "ends_at"] {
        let text = hold[at].as_str().unwrap_or_default();
        assert!(text.len() == 24 && text.ends_with('Z'), "{at}: {status:#}");
    }
    let (code, out) = operator("status", admin, &[]).await;
    assert_eq!(code, Some(0), "{out}");
    let line = out.lines().nth(3).unwrap_or_default();
    assert!(
        line.starts_with("  holding 5m since ")
            && line.contains(" elapsed, ")
            && line.ends_with(" left"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_pause_resume_and_promote_steer_a_running_instance() {
    let dir = temp_dir();
    let spec = Spec::new();
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    let load = Load::start(LoadConfig::new(spec.listen()));

    // Nothing to steer yet: refused, with the reason, and a non-zero exit code.
    let (code, out) = operator("pause", &admin, &[]).await;
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("no rollout in progress"), "{out}");

    // Long holds: only the operator's promote can finish this rollout within the test.
    let request = json!({
        "green": App::version("v2").json,
        "rollout": { "steps": [10, 50, 100], "hold": "5m", "progress_deadline": "10m",
                     "analysis": { "min_requests": 5 } },
    });
    let file = write_json(dir.path(), "green.yaml", &request);
    let file = file.to_string_lossy().into_owned();
    let (code, out) = operator("migrate", &admin, &[&file]).await;
    assert_eq!(code, Some(0), "{out}");
    wait_phase(&admin, "Progressing").await;

    // A second rollout while one runs is refused.
    let (code, out) = operator("migrate", &admin, &[&file]).await;
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("already in progress"), "{out}");

    let (code, out) = operator("pause", &admin, &[]).await;
    assert_eq!(code, Some(0), "{out}");
    wait_phase(&admin, "Paused").await;
    // The summary for people (trial report §14), then the raw answers with --json.
    let (code, out) = operator("status", &admin, &[]).await;
    assert_eq!(code, Some(0), "{out}");
    let summary: Vec<&str> = out.lines().collect();
    assert!(summary[0].starts_with("route web: blue active ("), "{out}");
    assert!(
        summary[1].starts_with("rollout 1: Paused, step 1/3 (in progress), blue to green"),
        "{out}"
    );
    assert!(
        out.contains("\n  weights: blue 90%, green 10% (table generation "),
        "{out}"
    );
    assert!(out.contains("\nbackends (requests and errors counted per slot since crossfade started, across versions):\n  blue "), "{out}");
    assert!(out.contains("\n  green "), "{out}");
    // The build and process that serve, from `/status`.
    let instance = format!(
        "instance: crossfade {}, pid {}",
        env!("CARGO_PKG_VERSION"),
        run.pid()
    );
    assert!(summary.contains(&instance.as_str()), "{out}");
    let (code, out) = operator("status", &admin, &["--json"]).await;
    assert_eq!(code, Some(0), "{out}");
    let status: serde_json::Value = serde_json::from_str(&out).expect("status --json prints JSON");
    assert_eq!(
        status["rollout"]["rollout"]["phase"], "Paused",
        "{status:#}"
    );
    assert_eq!(
        status["proxy"]["routes"][0]["weights"]["green"], 1000,
        "{status:#}"
    );
    assert!(
        status["rollout"].get("hold").is_none(),
        "paused: {status:#}"
    );

    let (code, out) = operator("resume", &admin, &[]).await;
    assert_eq!(code, Some(0), "{out}");
    wait_phase(&admin, "Progressing").await;
    hold_is_shown(&admin).await;
    let (code, out) = operator("promote", &admin, &[]).await;
    assert_eq!(code, Some(0), "{out}");

    let rollout = wait_terminal(&admin, Duration::from_secs(30)).await;
    assert_eq!(rollout["phase"], "Completed", "{rollout:#}");
    let weights = &admin.status().await["routes"][0]["weights"];
    assert_eq!(weights, &json!({ "blue": 0, "green": 10000 }));
    let report = load.stop().await;
    assert_eq!(report.errors(), 0, "{report:?}");
    assert!(report.ok_from("v2") > 0, "{report:?}");

    // After the end, an abort is refused: there is nothing left to abort.
    let (code, out) = operator("abort", &admin, &[]).await;
    assert_ne!(code, Some(0), "{out}");
    run.terminate(Duration::from_secs(15)).await;
}

#[tokio::test]
async fn operator_commands_name_the_address_they_cannot_reach() {
    let admin = Admin::new(crate::support::free_addr());
    let (code, out) = operator("status", &admin, &[]).await;
    assert_ne!(code, Some(0));
    assert!(out.contains(&admin.addr.to_string()), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_owns_its_routes_weights_and_manual_writes_get_409_until_it_ends() {
    let dir = temp_dir();
    let spec = Spec::new();
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    let weights = json!({ "blue": 10000, "green": 0 });

    // No rollout: the route is the operator's.
    let (status, body) = admin.put("/routes/web/weights", &weights).await;
    assert_eq!(status, 200, "{body}");

    let request = json!({
        "green": App::version("v2").json,
        "rollout": { "steps": [10, 100], "hold": "5m", "progress_deadline": "10m" },
    });
    let (status, body) = admin.json("POST", "/rollout", Some(&request)).await;
    assert_eq!(status, 202, "{body}");
    wait_phase(&admin, "Progressing").await;
    let route = &admin.status().await["routes"][0];
    assert_eq!(route["owner"], json!({ "rollout": 1 }), "{route:#}");
    // The phase turns Progressing before the first step's weight is published (it then waits
    // for it to be applied): the generation is read once that publication is in, so that only
    // the refused write could move it.
    wait_until(
        Duration::from_secs(20),
        "the first step's 10% applied",
        || async { (admin.status().await["routes"][0]["weights"]["green"] == 1000).then_some(()) },
    )
    .await;
    let generation = admin.status().await["generation"].clone();

    let (status, body) = admin.put("/routes/web/weights", &weights).await;
    assert_eq!(status, 409, "{body}");
    let message = body["error"].as_str().unwrap_or_default();
    assert!(message.contains("owned by rollout 1"), "{message}");
    assert!(
        message.contains("crossfade pause") && message.contains("crossfade abort"),
        "{message}"
    );
    assert_eq!(
        admin.status().await["generation"],
        generation,
        "nothing published"
    );

    // The escape hatch: forced, the write applies (the rollout may set its weight again later).
    let (status, body) = admin.put("/routes/web/weights?force=true", &weights).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(admin.status().await["routes"][0]["weights"]["green"], 0);

    // Once the rollout has ended, the route is the operator's again.
    let (code, out) = operator("abort", &admin, &[]).await;
    assert_eq!(code, Some(0), "{out}");
    let rollout = wait_terminal(&admin, Duration::from_secs(30)).await;
    assert_eq!(rollout["phase"], "Aborted", "{rollout:#}");
    assert!(admin.status().await["routes"][0].get("owner").is_none());
    let (status, body) = admin.put("/routes/web/weights", &weights).await;
    assert_eq!(status, 200, "{body}");
    run.terminate(Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_answer_the_rollouts_decision_and_fail_when_it_refuses() {
    let dir = temp_dir();
    let spec = Spec::new();
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    let request = json!({
        "green": App::version("v2").json,
        "rollout": { "steps": [10, 100], "hold": "5m", "progress_deadline": "10m" },
    });
    let (status, body) = admin.json("POST", "/rollout", Some(&request)).await;
    assert_eq!(status, 202, "{body}");
    wait_phase(&admin, "Progressing").await;

    // Refused by the state machine (not merely delivered): 409 with the reason and the phase.
    let (status, body) = admin.post("/rollout/resume").await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["accepted"], false, "{body}");
    assert_eq!(body["phase"], "Progressing", "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("not paused"),
        "{body}"
    );

    // Accepted: the answer already carries the phase it led to.
    let addr = admin.addr.to_string();
    let done = run_to_end(["pause", "--admin", addr.as_str()], Duration::from_secs(20)).await;
    assert_eq!(done.code, Some(0), "{}{}", done.stdout, done.stderr);
    let answer: serde_json::Value = serde_json::from_str(&done.stdout).expect("a JSON answer");
    assert_eq!(answer["phase"], "Paused", "{answer}");
    assert_eq!(answer["command"], "pause", "{answer}");
    assert_eq!(answer["rollout"], 1, "{answer}");

    let (code, out) = operator("pause", &admin, &[]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("already paused") && out.contains("409"),
        "{out}"
    );

    let (code, out) = operator("resume", &admin, &[]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("\"Progressing\""), "{out}");

    let (code, out) = operator("abort", &admin, &[]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("\"Aborting\"") || out.contains("\"Aborted\""),
        "{out}"
    );
    let (code, out) = operator("abort", &admin, &[]).await;
    assert_ne!(code, Some(0), "{out}");
    run.terminate(Duration::from_secs(15)).await;
}

/// Trial report 5, F1: an abort while the preview is still starting (it would become ready only
/// in an hour) stops its processes at once, not when it becomes ready or its readiness deadline
/// passes, and the next `migrate` is accepted as soon as the abort has ended the rollout, not
/// refused with "already in progress" for as long as the preview takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_while_the_preview_starts_stops_it_at_once_and_the_next_migrate_is_taken() {
    let dir = temp_dir();
    let spec = Spec::new();
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    let load = Load::start(LoadConfig::new(spec.listen()));
    let slow = App::version("v2").flags(["--unready-for", "1h"]).set(
        "readiness",
        json!({ "interval": "100ms", "deadline": "30m" }),
    );
    let green = abort_while_provisioning(dir.path(), &admin, run.pid(), slow.json, "v2").await;
    wait_phase(&admin, "Aborted").await;
    // The default stop grace is 10 s; the sample app exits on SIGTERM at once.
    wait_gone(&green, Duration::from_secs(10)).await;

    // The next rollout is taken at once (not refused while the aborted one finishes), and runs
    // to its end.
    let request = json!({ "green": App::version("v3").json });
    let file = write_json(dir.path(), "v3.yaml", &request);
    let (code, out) = operator("migrate", &admin, &[&file.to_string_lossy()]).await;
    assert_eq!(code, Some(0), "{out}");
    let rollout = wait_terminal(&admin, Duration::from_secs(60)).await;
    assert_eq!(rollout["phase"], "Completed", "{rollout:#}\n{out}");
    assert!(green.iter().all(|&pid| !pid_alive(pid)));
    let report = load.stop().await;
    assert_eq!(report.errors(), 0, "{report:?}");
    run.terminate(Duration::from_secs(15)).await;
}

/// An aborted rollout whose preview takes its whole stop grace to go (it ignores SIGTERM) is
/// shown ended (`running: false`, `Aborted`) while its run still stops it. A `migrate` and a
/// `report` asked then are what `crossfade status` invites: they were refused ("a rollout is
/// already in progress ... it is finishing"; "still running"), and are now held until the old
/// preview is gone, then answered: the next rollout never overlaps the stopping preview.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migrate_and_a_report_right_after_an_abort_wait_for_the_stopping_preview_not_refused() {
    let dir = temp_dir();
    let spec = Spec::new();
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    let load = Load::start(LoadConfig::new(spec.listen()));
    // Never ready (nothing listens on its port), deaf to SIGTERM: killed after its 5 s grace.
    let stubborn = json!({
        "name": "stubborn",
        "command": "sh",
        "args": ["-c", "trap '' TERM; while :; do sleep 0.2; done # stubborn {port}"],
        "readiness": { "interval": "100ms", "deadline": "30m" },
        "stop_grace": "5s",
    });
    let green = abort_while_provisioning(dir.path(), &admin, run.pid(), stubborn, "stubborn").await;
    let ended = wait_until(Duration::from_secs(10), "shown ended", || async {
        let status = admin.rollout().await;
        (status["running"] == false).then_some(status)
    })
    .await;
    assert_eq!(ended["rollout"]["phase"], "Aborted", "{ended:#}");
    assert!(green.iter().any(|&pid| pid_alive(pid)), "still stopping");

    let report = dir.path().join("r.html");
    let v3 = write_json(
        dir.path(),
        "v3.yaml",
        &json!({ "green": App::version("v3").json }),
    );
    let (v3, report_arg) = (v3.to_string_lossy(), report.to_string_lossy());
    let (migrate_args, report_args) = ([&*v3], ["-o", &*report_arg]);
    let ((code, out), reported) = tokio::join!(
        operator("migrate", &admin, &migrate_args),
        operator("report", &admin, &report_args),
    );
    assert_eq!(code, Some(0), "taken, not refused: {out}");
    assert!(out.contains("rollout 2 started"), "{out}");
    // newuser34 C: the held command said nothing while it waited (up to the preview's grace).
    assert!(
        out.contains("waiting for the answer") && out.contains("preview is still stopping"),
        "{out}"
    );
    assert_eq!(reported.0, Some(0), "{}", reported.1);
    assert!(std::fs::read_to_string(&report).is_ok_and(|h| h.contains("Aborted")));
    assert!(
        green.iter().all(|&pid| !pid_alive(pid)),
        "the next rollout started only once the stopping preview was gone"
    );
    // Trial 25: the time waited was a raw clock reading, `still running 3s 1ms 233us 306ns`.
    let log = run.log();
    let killed = log
        .lines()
        .find(|l| l.contains("after SIGTERM (stop_grace 5s): SIGKILL"))
        .unwrap_or_else(|| panic!("the stubborn preview's SIGKILL is logged:\n{log}"));
    let waited = killed
        .split("still running ")
        .nth(1)
        .and_then(|rest| rest.split(" after SIGTERM").next())
        .unwrap_or_default();
    assert!(
        waited.starts_with("5s") && !waited.contains("us") && !waited.contains("ns"),
        "the time waited is told to the millisecond: {killed}"
    );
    let rollout = wait_terminal(&admin, Duration::from_secs(60)).await;
    assert_eq!(rollout["phase"], "Completed", "{rollout:#}");
    let report = load.stop().await;
    assert_eq!(report.errors(), 0, "{report:?}");
    run.terminate(Duration::from_secs(15)).await;
}

/// The rollout endpoints answer a method they do not serve with 405 and `Allow` (RFC 9110
/// §15.5.6), and `HEAD` where `GET` is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_endpoints_answer_other_methods_with_405_and_allow() {
    let dir = temp_dir();
    let spec = Spec::new();
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    for (method, path, allow) in [
        ("GET", "/rollout/pause", "POST"),
        ("PUT", "/rollout/abort", "POST"),
        ("DELETE", "/rollout", "GET, HEAD, POST"),
        // A query string does not make a known path unknown (trial 2 report F9).
        ("GET", "/rollout/abort?x=1", "POST"),
    ] {
        let (status, headers, body) = admin.request_with(method, path, None, &[]).await.unwrap();
        assert_eq!(status, 405, "{method} {path}: {body}");
        assert_eq!(headers["allow"], allow, "{method} {path}");
    }
    let (status, _, body) = admin
        .request_with("HEAD", "/rollout", None, &[])
        .await
        .unwrap();
    assert_eq!((status, body.as_str()), (200, ""), "HEAD /rollout");
    let (status, _, body) = admin
        .request_with("GET", "/rollout?pretty=1", None, &[])
        .await
        .unwrap();
    assert_eq!(status, 200, "GET /rollout?pretty=1: {body}");
    let (status, _, _) = admin
        .request_with("GET", "/rollout/nope", None, &[])
        .await
        .unwrap();
    assert_eq!(status, 404, "an unknown path stays 404");
    // Trial 20: a YAML body (a `crossfade migrate` file sent with curl) was told only that it
    // is not JSON; it is told what the body takes and what sends a YAML file.
    let yaml = "green:\n  endpoints: [127.0.0.1:9]\n";
    let (status, body) = admin.request_text("POST", "/rollout", yaml).await.unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("request body: not valid JSON: ")
            && body.contains("`crossfade migrate FILE`"),
        "{body}"
    );
    // Trial 20: `?force=true` (the weights endpoint's escape hatch) on a command was ignored, so
    // `abort?force=true` made a plain abort; it is refused, naming the endpoint that forces.
    for path in ["/rollout/abort?force=true", "/rollout/pause?x=1&force"] {
        let (status, _, body) = admin.request_with("POST", path, None, &[]).await.unwrap();
        assert_eq!(status, 400, "POST {path}: {body}");
        assert!(
            body.contains("a command takes no `force` parameter")
                && body.contains("POST /rollout/force-abort"),
            "POST {path}: {body}"
        );
    }
    run.terminate(Duration::from_secs(15)).await;
}

/// `crossfade status` against something that is not a crossfade admin API (here a server that
/// answers 404 `{}` to everything) fails naming the endpoint, instead of printing empty objects.
/// Also with an empty body (session 44: that was "admin API answered 404 Not Found for
/// /rollout", without the address or a word that it is no admin API).
#[tokio::test]
async fn status_against_a_server_that_answers_404_fails_naming_the_endpoint() {
    for body in ["{}", ""] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut buf = [0u8; 4096];
                    let _ = stream.read(&mut buf).await;
                    let answer = format!(
                        "HTTP/1.1 404 Not Found\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(answer.as_bytes()).await;
                });
            }
        });
        let done = run_to_end(
            ["status", "--admin", &addr.to_string()],
            Duration::from_secs(20),
        )
        .await;
        server.abort();
        assert_eq!(done.code, Some(1), "{done:?}");
        assert!(
            done.stderr
                .contains(&format!("GET /rollout at {addr} answered 404 Not Found"))
                && done
                    .stderr
                    .contains("not an answer of the admin API of `crossfade run`"),
            "body {body:?}: {}",
            done.stderr
        );
        assert!(
            done.stdout.is_empty(),
            "nothing printed as if it were a status: {}",
            done.stdout
        );
    }
}

/// Trial 13, N12: `crossfade abort|pause|resume|promote|migrate --admin` at an address that is
/// not the admin API of `crossfade run` (here an application that answers 200 to everything, as
/// the proxy's own listener forwards to one) sends no `POST` there: the `GET /rollout` probe goes
/// first and the command fails naming it. Before, the `POST /rollout/abort` reached the
/// application and the CLI then said "nothing was done".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_at_an_application_address_sends_it_no_post() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let record = std::sync::Arc::clone(&seen);
    let server = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let record = std::sync::Arc::clone(&record);
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 4096];
                let n = stream.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]);
                record
                    .lock()
                    .unwrap()
                    .push(head.lines().next().unwrap_or_default().to_owned());
                let answer = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    let dir = temp_dir();
    let file = write_json(
        dir.path(),
        "m.yaml",
        &json!({ "green": { "command": "/bin/true", "args": ["{port}"] } }),
    );
    let file = file.to_string_lossy().into_owned();
    let addr = addr.to_string();
    for args in [
        vec!["abort", "--admin", &addr],
        vec!["pause", "--admin", &addr],
        vec!["resume", "--admin", &addr],
        vec!["promote", "--admin", &addr],
        vec!["migrate", &file, "--admin", &addr],
    ] {
        let done = run_to_end(args.clone(), Duration::from_secs(20)).await;
        assert_eq!(done.code, Some(1), "{args:?}: {done:?}");
        assert!(
            done.stderr.contains("GET /rollout at") && done.stderr.contains("200 OK"),
            "{args:?}: {}",
            done.stderr
        );
    }
    server.abort();
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.is_empty(), "the probes reached the server");
    assert!(
        seen.iter()
            .all(|line| line.starts_with("GET /rollout ") || line.starts_with("GET /status ")),
        "only the probes (GET /rollout, then GET /status to name a proxy's admin), no command: \
         {seen:?}"
    );
}

/// Trial 7, G11: `crossfade status --admin` at a `crossfade proxy`'s admin API says in plain words
/// that it is a proxy's admin, not the admin of `crossfade run`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_at_a_proxy_admin_says_it_is_a_proxy_admin() {
    let dir = temp_dir();
    let config = crate::support::proxy_config(&["127.0.0.1:9".parse().unwrap()], &[]);
    let path = write_json(dir.path(), "proxy.yaml", &config);
    let admin = Admin::new(config["admin"].as_str().unwrap().parse().unwrap());
    let mut proxy = Crossfade::proxy(dir.path(), &path);
    proxy.wait_ready(&admin, Duration::from_secs(15)).await;
    let (code, out) = operator("status", &admin, &[]).await;
    assert_eq!(code, Some(1), "{out}");
    // Which build and process answered, from its `/status`.
    let instance = format!(
        "crossfade {}, pid {}",
        env!("CARGO_PKG_VERSION"),
        proxy.pid()
    );
    assert!(
        out.contains(&format!("is the admin API of a `crossfade proxy` ({instance}; GET /rollout answered 404 Not Found), which has no rollouts")),
        "{out}"
    );
    assert!(!out.contains("a crossfade admin API sends"), "{out}");
    // Trial 9, I15: said once, not three times (the proxy's own 404 text is not quoted).
    assert_eq!(out.matches("crossfade run").count(), 1, "{out}");
    proxy.terminate(Duration::from_secs(15)).await;
}

/// Trial report 5 F13: `crossfade migrate` lists the rules a green breaks and what this machine
/// lacks (its command, its workdir) in one answer, as `crossfade check` does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_lists_rule_and_machine_problems_at_once() {
    let dir = temp_dir();
    let spec = Spec::new();
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    let request = json!({
        "green": { "command": "/nonexistent/app", "args": ["{port}"], "workdir": "/nope" },
        "rollout": { "steps": [50, 10] },
    });
    let file = write_json(dir.path(), "m.yaml", &request);
    let (code, out) = operator("migrate", &admin, &[&file.to_string_lossy()]).await;
    assert_eq!(code, Some(1), "{out}");
    for field in [
        "rollout.steps[1]: 10% is not above the previous step (50%)",
        "rollout.steps: the last step must be 100%",
        "green.command: ",
        "green.workdir: ",
    ] {
        assert!(out.contains(field), "{field}:\n{out}");
    }
    run.terminate(Duration::from_secs(15)).await;
}

/// Trial 7, G10: a bare-number rate does not hide the file's other problems: `migrate` lists them
/// all in one answer (nothing started), suggesting only a valid reading of the rate, and `check`
/// recognises the migrate file and lists the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_and_check_list_a_bare_rate_with_every_other_problem() {
    let dir = temp_dir();
    let spec = Spec::new();
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    let request = json!({
        "green": { "command": "/nonexistent/app", "workdir": "/nope" },
        "rollout": { "steps": [50, 10], "analysis": { "max_error_rate": 2 } },
    });
    let file = write_json(dir.path(), "m.yaml", &request);
    let (code, out) = operator("migrate", &admin, &[&file.to_string_lossy()]).await;
    assert_eq!(code, Some(1), "{out}");
    let checked = run_to_end(["check", &*file.to_string_lossy()], Duration::from_secs(20)).await;
    assert_eq!(checked.code, Some(1), "{checked:?}");
    for out in [&out, &checked.stderr] {
        for field in [
            "rollout.analysis.max_error_rate: a bare number is ambiguous",
            "write the rate with a % sign: \"2%\"",
            "rollout.steps[1]: 10% is not above the previous step (50%)",
            "green.args: {port} must appear",
            "green.command: ",
            "green.workdir: ",
        ] {
            assert!(out.contains(field), "{field}:\n{out}");
        }
        assert!(!out.contains("200%\""), "{out}");
        assert!(!out.contains("blue: missing"), "{out}");
    }
    assert_eq!(
        admin.rollout().await["running"],
        false,
        "no rollout was started"
    );
    run.terminate(Duration::from_secs(15)).await;
}

/// The commands a text suggests: every `` `crossfade VERB ...` `` in it.
fn suggested(text: &str) -> Vec<String> {
    text.split("`crossfade ")
        .skip(1)
        .filter_map(|rest| rest.split(['`', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// Trial report 6, F13: while blue drains after a promotion (Retiring), every command a refusal
/// or `crossfade status` suggests is one the instance accepts then (a new rollout only "once this
/// rollout has completed", and then it is accepted); F14: the refusals leave the rollout's
/// message alone; F12: status names the promoted version as active from the role swap on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_suggested_while_retiring_is_accepted_when_suggested() {
    let dir = temp_dir();
    let blue = App::version("v1")
        .flags(["--latency", "60000"])
        .set("name", json!("v1"));
    let mut spec = Spec::new().blue(blue);
    spec.json["rollout"]["drain_timeout"] = json!("90s");
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, Duration::from_secs(15)).await;

    // One request held by blue (60 s): the drain after the promotion waits for it.
    let mut slow = tokio::net::TcpStream::connect(spec.listen()).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut slow, b"GET /slow HTTP/1.1\r\nHost: web\r\n\r\n")
        .await
        .unwrap();
    wait_until(
        Duration::from_secs(10),
        "blue holds the slow request",
        || async { (admin.status().await["routes"][0]["blue"]["in_flight"] == 1).then_some(()) },
    )
    .await;

    let request = json!({
        "green": App::version("v2").set("name", json!("v2")).json,
        "rollout": { "steps": [10, 50, 100], "hold": "5m", "progress_deadline": "10m" },
    });
    let file = write_json(dir.path(), "green.yaml", &request)
        .to_string_lossy()
        .into_owned();
    let (code, out) = operator("migrate", &admin, &[&file]).await;
    assert_eq!(code, Some(0), "{out}");
    wait_phase(&admin, "Progressing").await;
    let (code, out) = operator("promote", &admin, &[]).await;
    assert_eq!(code, Some(0), "{out}");
    wait_phase(&admin, "Retiring").await;

    // Everything an operator may try now, and what each answer suggests.
    let mut texts = Vec::new();
    for verb in ["status", "pause", "resume", "promote", "abort"] {
        texts.push(operator(verb, &admin, &[]).await.1);
    }
    let (code, out) = operator("migrate", &admin, &[&file]).await;
    assert_ne!(code, Some(0), "a second rollout while retiring: {out}");
    texts.push(out);
    let weights = json!({ "blue": 10000 });
    let (status, answer) = admin.put("/routes/web/weights", &weights).await;
    assert_eq!(status, 409, "{answer}");
    texts.push(answer.to_string());

    let (code, status) = operator("status", &admin, &[]).await;
    assert_eq!(code, Some(0), "{status}");
    assert!(
        status.starts_with("route web: v2 active in slot green ("),
        "{status}"
    );
    assert!(
        status.contains("  blue       0%  v1, retiring: "),
        "{status}"
    );
    let message = admin.rollout().await["rollout"]["message"].clone();
    assert_eq!(message, "green is active; draining blue", "{status}");

    let mut later = Vec::new();
    for text in &texts {
        for verb in suggested(text) {
            if verb == "migrate" {
                assert!(text.contains("once this rollout has completed"), "{text}");
                later.push(verb);
                continue;
            }
            let (code, out) = operator(&verb, &admin, &[]).await;
            assert_eq!(
                code,
                Some(0),
                "`crossfade {verb}`, suggested while retiring ({text}), is refused: {out}"
            );
        }
    }
    assert_eq!(
        phase(&admin).await,
        "Retiring",
        "the suggestions ran while retiring"
    );

    // The slow request goes: blue is drained and the rollout completes; a new rollout (the
    // previous version again) is accepted now.
    drop(slow);
    let rollout = wait_terminal(&admin, Duration::from_secs(30)).await;
    assert_eq!(rollout["phase"], "Completed", "{rollout:#}");
    assert_eq!(
        rollout["message"], "completed: green is active",
        "{rollout:#}"
    );
    assert!(
        !later.is_empty(),
        "the abort's refusal suggests going back by a new rollout"
    );
    let back = json!({
        "green": App::version("v1").set("name", json!("v1")).json,
        "rollout": { "steps": [10, 50, 100], "hold": "5m", "progress_deadline": "10m" },
    });
    let back = write_json(dir.path(), "back.yaml", &back)
        .to_string_lossy()
        .into_owned();
    let (code, out) = operator("migrate", &admin, &[&back]).await;
    assert_eq!(code, Some(0), "{out}");
    run.terminate(Duration::from_secs(15)).await;
}

/// user37b: what `crossfade migrate` prints as the effective policy names the judge (a sequential
/// judge is not the fixed thresholds it printed before), its look interval, the checks and the
/// gates, also those the running spec's `rollout:` kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_prints_the_sequential_judge_checks_and_gates_it_started_with() {
    let dir = temp_dir();
    let mut spec = Spec::new();
    // A gate the file does not write: the running spec's stays in force, and is said.
    spec.json["rollout"]["gates"] = json!([{
        "name": "approval", "at": "before_promotion",
        "url": format!("http://{}/ask", crate::support::free_addr()),
    }]);
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, Duration::from_secs(15)).await;

    let request = json!({
        "green": App::version("v2").set("name", json!("v2")).json,
        "rollout": {
            "hold": "5m", "progress_deadline": "10m",
            "analysis": {
                "judge": "sequential", "interval": "1s",
                "checks": [{
                    "name": "budget", "min": 0.2,
                    "web": { "url": format!("http://{}/budget", crate::support::free_addr()),
                             "json_path": "$.remaining" },
                }],
            },
        },
    });
    let file = write_json(dir.path(), "green.yaml", &request);
    let (code, out) = operator("migrate", &admin, &[&file.to_string_lossy()]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(
            "; hold 5m; analysis: sequential judge against the active backend (alpha 1%, beta 5%, \
             allowing 1% more errors and 20% more latency, failing when worse than blue), every 1s, \
             error rate ≤ 1%"
        ),
        "{out}"
    );
    assert!(
        out.contains(", checks budget; gates approval (before_promotion)\n"),
        "{out}"
    );

    let (code, out) = operator("abort", &admin, &[]).await;
    assert_eq!(code, Some(0), "{out}");
    wait_terminal(&admin, Duration::from_secs(30)).await;
    run.terminate(Duration::from_secs(15)).await;
}

/// Trial 12, M2: a `crossfade migrate` file's `rollout:` changes only the keys it writes; the
/// running spec's steps and analysis bounds (`max_p99`, `min_requests`) stay in force, as the
/// effective policy on `GET /rollout` shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migrate_files_partial_rollout_keeps_the_running_specs_analysis_bounds() {
    let dir = temp_dir();
    let mut spec = Spec::new();
    spec.json["rollout"]["analysis"]["max_p99"] = json!("5s");
    spec.json["rollout"]["analysis"]["min_requests"] = json!(7);
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, Duration::from_secs(15)).await;

    // Only the hold (and the deadline it needs) written: the steps and bounds are the spec's.
    let request = json!({
        "green": App::version("v2").set("name", json!("v2")).json,
        "rollout": { "hold": "5m", "progress_deadline": "10m" },
    });
    let file = write_json(dir.path(), "green.yaml", &request);
    let (code, out) = operator("migrate", &admin, &[&file.to_string_lossy()]).await;
    assert_eq!(code, Some(0), "{out}");
    // Trial 12, M9: what started, the effective policy and how to follow it, for people.
    assert!(
        out.starts_with("rollout 1 started on route web: blue to v2 (green)\n"),
        "{out}"
    );
    assert!(
        out.contains(
            "; hold 5m; analysis: error rate ≤ 1%, p99 ≤ 5s, at least 7 requests a window"
        ),
        "{out}"
    );
    let follow = format!("follow it with `crossfade status --admin {}`", admin.addr);
    assert!(out.contains(&follow), "{out}");
    let config = admin.rollout().await["rollout"]["config"].clone();
    assert_eq!(config["hold"], "5m", "{config:#}");
    assert_eq!(config["progress_deadline"], "10m", "{config:#}");
    let steps: Vec<_> = config["steps"].as_array().cloned().unwrap_or_default();
    assert_eq!(steps.len(), 3, "the spec's steps 10/50/100: {config:#}");
    assert_eq!(config["analysis"]["max_p99"], "5s", "{config:#}");
    assert_eq!(config["analysis"]["min_requests"], 7, "{config:#}");
    assert_eq!(config["analysis"]["max_error_rate"], "1%", "{config:#}");

    let (code, out) = operator("abort", &admin, &[]).await;
    assert_eq!(code, Some(0), "{out}");
    wait_terminal(&admin, Duration::from_secs(30)).await;
    run.terminate(Duration::from_secs(15)).await;
}

/// Trial 12, M5: a command refused with no rollout in progress answers in the same shape as one
/// the rollout refused: `accepted: false`, `command`, the last rollout's id and phase (`null`
/// before the first), `message` and `error`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_refused_without_a_rollout_answers_in_the_shape_of_a_refused_decision() {
    let dir = temp_dir();
    let spec = Spec::new();
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    let same_shape = |body: &serde_json::Value, command: &str| {
        assert_eq!(body["accepted"], false, "{body}");
        assert_eq!(body["command"], command, "{body}");
        // The reason: no rollout in progress, or (the run may still be ending when the phase
        // is already published) the ended rollout's own refusal; the shape is the same.
        let error = body["error"].as_str().unwrap_or_default();
        assert!(!error.is_empty(), "{body}");
        assert_eq!(body["message"], body["error"], "{body}");
        for key in ["rollout", "phase"] {
            assert!(body.get(key).is_some(), "{key}: {body}");
        }
    };

    // Before the first rollout: no id, no phase.
    let (status, body) = admin.post("/rollout/abort").await;
    assert_eq!(status, 409, "{body}");
    same_shape(&body, "abort");
    assert!(
        body["rollout"].is_null() && body["phase"].is_null(),
        "{body}"
    );
    let error = body["error"].as_str().unwrap_or_default();
    assert!(error.contains("no rollout in progress"), "{body}");

    let request = json!({
        "green": App::version("v2").json,
        "rollout": { "steps": [10, 100], "hold": "5m", "progress_deadline": "10m" },
    });
    let (status, body) = admin.json("POST", "/rollout", Some(&request)).await;
    assert_eq!(status, 202, "{body}");
    let (code, out) = operator("abort", &admin, &[]).await;
    assert_eq!(code, Some(0), "{out}");
    let rollout = wait_terminal(&admin, Duration::from_secs(30)).await;
    assert_eq!(rollout["phase"], "Aborted", "{rollout:#}");

    // After it: the last rollout's id and phase, through the CLI too.
    for verb in ["pause", "resume", "promote", "abort"] {
        let addr = admin.addr.to_string();
        let done = run_to_end([verb, "--admin", addr.as_str()], Duration::from_secs(20)).await;
        assert_eq!(done.code, Some(1), "{verb}: {done:?}");
        let body: serde_json::Value = serde_json::from_str(&done.stdout).expect("a JSON answer");
        same_shape(&body, verb);
        assert_eq!(body["rollout"], 1, "{body}");
        assert_eq!(body["phase"], "Aborted", "{body}");
    }
    run.terminate(Duration::from_secs(15)).await;
}

/// Trial 22, findings 11 and 12: a spec or a `crossfade migrate` file that writes a setting of
/// the sequential judge under `judge: threshold` (it does nothing), or names green as blue is
/// named (status, events, the report and metrics cannot tell them apart), is valid and loads,
/// with a warning naming the field: `check` prints it, `migrate` prints the instance's
/// (`POST /rollout`'s `warnings`), and a file that says neither gets none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_keys_under_the_threshold_judge_and_a_green_named_as_blue_are_warned() {
    let dir = temp_dir();
    let mut spec = Spec::new()
        .blue(App::version("v1").set("name", json!("v1")))
        .green(App::version("v2").set("name", json!("v1")));
    spec.json["rollout"]["analysis"]["alpha"] = json!(0.02);
    let spec_file = spec.write(dir.path(), "spec.yaml");
    let checked = run_to_end(
        ["check", &*spec_file.to_string_lossy()],
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(checked.code, Some(0), "{checked:?}");
    for said in [
        "warning: rollout.analysis.alpha: has no effect: only the sequential judge reads it, and \
         the rollout's judge is `threshold` (the default; `judge:` is not written)",
        "warning: green.name: \"v1\" is also the active workload's name (blue)",
    ] {
        assert!(checked.stdout.contains(said), "{said}:\n{checked:?}");
    }
    assert!(checked.stdout.contains(": ok (route web"), "{checked:?}");

    // The instance runs blue alone (threshold judge); a migrate file writes `beta` and no judge.
    let spec = Spec::new().blue(App::version("v1").set("name", json!("v1")));
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "running.yaml"));
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    let request = json!({
        "green": App::version("v2").set("name", json!("v1")).json,
        "rollout": { "analysis": { "beta": 0.1 } },
    });
    let file = write_json(dir.path(), "green.yaml", &request);
    // Which judge it runs under is the instance's: `check` alone cannot tell, and says nothing.
    let checked = run_to_end(["check", &*file.to_string_lossy()], Duration::from_secs(20)).await;
    assert_eq!(checked.code, Some(0), "{checked:?}");
    assert!(!checked.stdout.contains("warning"), "{checked:?}");
    let (code, out) = operator("migrate", &admin, &[&file.to_string_lossy()]).await;
    assert_eq!(code, Some(0), "{out}");
    for said in [
        "crossfade: warning: rollout.analysis.beta: has no effect",
        "crossfade: warning: green.name: \"v1\" is also the active workload's name (blue)",
    ] {
        assert!(out.contains(said), "{said}:\n{out}");
    }
    assert_eq!(
        admin.rollout().await["running"],
        true,
        "started all the same"
    );
    let (code, out) = operator("abort", &admin, &[]).await;
    assert_eq!(code, Some(0), "{out}");
    wait_terminal(&admin, Duration::from_secs(30)).await;

    // A file that writes `judge: threshold` itself: `check` can tell, and says it.
    let request = json!({
        "green": App::version("v3").set("name", json!("v3")).json,
        "rollout": { "analysis": { "judge": "threshold", "max_latency_increase": "10ms" } },
    });
    let file = write_json(dir.path(), "threshold.yaml", &request);
    let checked = run_to_end(["check", &*file.to_string_lossy()], Duration::from_secs(20)).await;
    assert_eq!(checked.code, Some(0), "{checked:?}");
    let said = "warning: rollout.analysis.max_latency_increase: has no effect: only the \
                sequential judge reads it, and the rollout's judge is `threshold`; write";
    assert!(checked.stdout.contains(said), "{checked:?}");
    // Neither kind of warning for a file that writes the sequential judge with its keys.
    let request = json!({
        "green": App::version("v3").set("name", json!("v3")).json,
        "rollout": { "analysis": { "judge": "sequential", "alpha": 0.02 } },
    });
    let file = write_json(dir.path(), "sequential.yaml", &request);
    let (code, out) = operator("migrate", &admin, &[&file.to_string_lossy()]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("warning"), "{out}");
    let (code, out) = operator("abort", &admin, &[]).await;
    assert_eq!(code, Some(0), "{out}");
    wait_terminal(&admin, Duration::from_secs(30)).await;
    run.terminate(Duration::from_secs(15)).await;
}

/// Session 32: an `--admin` address that takes the connection and never answers (a stuck
/// instance, a port that is not an admin API) held `status`, every rollout command, `migrate`
/// and `report` for ever. Each now fails (exit code 1) once the read before it is not answered
/// within its bound, naming the address and the request, and sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_command_gives_up_on_an_address_that_never_answers() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let (requests_tx, mut requests) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    // Takes every connection and reads what comes, answering nothing.
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = silent.accept().await else {
                return;
            };
            let seen = requests_tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0; 4096];
                while let Ok(n @ 1..) = tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await {
                    let _ = seen.send(buf[..n].to_vec());
                }
            });
        }
    });
    let dir = temp_dir();
    let file = write_json(
        dir.path(),
        "green.yaml",
        &json!({ "green": App::version("v2").json }),
    );
    let report = dir.path().join("report.html");
    let commands: Vec<Vec<String>> = [
        vec!["status"],
        vec!["status", "--json"],
        vec!["pause"],
        vec!["resume"],
        vec!["promote"],
        vec!["abort"],
        vec!["abort", "--force"],
        vec!["migrate", &file.to_string_lossy()],
        vec!["report", "-o", &report.to_string_lossy()],
    ]
    .into_iter()
    .map(|args| {
        let mut args: Vec<String> = args.into_iter().map(str::to_owned).collect();
        args.extend(["--admin".to_owned(), addr.clone()]);
        args
    })
    .collect();
    // Together, so the test waits for the bound once; each one alone would hang without it.
    let runs = commands
        .iter()
        .map(|args| run_to_end(args.clone(), Duration::from_secs(60)));
    let finished = futures_util::future::join_all(runs).await;
    for (args, out) in commands.iter().zip(finished) {
        assert_eq!(out.code, Some(1), "{args:?}: {out:?}");
        for words in [addr.as_str(), "did not answer GET /rollout within"] {
            assert!(
                out.stderr.contains(words),
                "{args:?} names {words:?}: {out:?}"
            );
        }
        assert!(!report.exists(), "no report written");
    }
    let mut sent = Vec::new();
    while let Ok(bytes) = requests.try_recv() {
        sent.extend(bytes);
    }
    let sent = String::from_utf8_lossy(&sent);
    assert!(sent.contains("GET /rollout HTTP/1.1"), "{sent}");
    assert!(!sent.contains("POST"), "no command sent to it: {sent}");
}

/// Whether `endpoint` answers `GET /healthz` within 300 ms (a hung sample app reads and never
/// answers).
async fn answers(endpoint: std::net::SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut conn = tokio::net::TcpStream::connect(endpoint).await.ok()?;
        conn.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .ok()?;
        let mut buf = [0u8; 64];
        (conn.read(&mut buf).await.ok()? > 0).then_some(())
    };
    tokio::time::timeout(Duration::from_millis(300), attempt)
        .await
        .ok()
        .flatten()
        .is_some()
}

/// Trial 32 (newuser32, D): paused at 50%, green hangs, the operator promotes. The promotion's
/// 100% waits for green to pass its readiness probe again, which a hung green never does, and no
/// analysis ran meanwhile: green kept 50% of the requests, hanging, until the progress deadline.
/// Now the analysis goes on at the applied weight while the next one waits, and the hung
/// requests (unanswered past `max_p99`) fail it: the rollout rolls back within a few intervals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promote_that_waits_for_a_hung_green_is_rolled_back_by_the_analysis() {
    let dir = temp_dir();
    let green = App::version("v2").flags(["--hang-after", "4s"]);
    let mut spec = Spec::new().green(green);
    spec.json["rollout"]["steps"] = json!([50, 100]);
    spec.json["rollout"]["hold"] = json!("60s");
    spec.json["rollout"]["progress_deadline"] = json!("2m");
    spec.json["rollout"]["analysis"] =
        json!({ "interval": "1s", "min_requests": 5, "max_p99": "500ms" });
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    let load = Load::start(LoadConfig::new(spec.listen()));
    wait_until(Duration::from_secs(15), "green at 50%", || async {
        let r = admin.rollout().await["rollout"].clone();
        (r["phase"] == "Progressing" && r["applied_bp"] == 5_000).then_some(())
    })
    .await;
    let (code, answer) = admin.post("/rollout/pause").await;
    assert_eq!(code, 200, "{answer}");
    let status = admin.status().await;
    let green: std::net::SocketAddr = status["routes"][0]["green"]["endpoints"][0]
        .as_str()
        .and_then(|e| e.parse().ok())
        .unwrap_or_else(|| panic!("green's endpoint in {status:#}"));
    wait_until(Duration::from_secs(10), "green to hang", || async {
        (!answers(green).await).then_some(())
    })
    .await;
    let (code, answer) = admin.post("/rollout/promote").await;
    assert_eq!(code, 200, "{answer}");
    let promoted_at = tokio::time::Instant::now();

    let rollout = wait_terminal(&admin, Duration::from_secs(30)).await;
    let took = promoted_at.elapsed();
    drop(load);
    run.terminate(Duration::from_secs(15)).await;
    assert_eq!(rollout["phase"], "RolledBack", "{rollout:#}");
    let message = rollout["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("while 100% waited to be applied: analysis failed"),
        "{message}"
    );
    assert!(
        took < Duration::from_secs(20),
        "rolled back {took:?} after the promote, not by the analysis"
    );
}
