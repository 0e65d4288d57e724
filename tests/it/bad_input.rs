//! Bad input: a spec with many mistakes; commands and working directories missing on this machine
//! (named by `check` and `run` before anything starts); relative paths taken from the spec file's
//! directory; and a green whose command exists but cannot be executed.

use std::ffi::OsStr;
use std::time::Duration;

use serde_json::json;

use crate::rollout::wait_terminal;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::support::spec::write_json;
use crate::support::{
    proxy_config, run_to_end, temp_dir, wait_until, Admin, App, Crossfade, Finished, Load,
    LoadConfig, RawConn, SampleApp, Spec,
};

/// Runs `crossfade <command> <file>` to its end and requires that it exits 1 with each of `words`
/// in its standard error (each message shows the command and what it wrote); returns what it
/// wrote, for what else a test requires of it.
async fn refuses(command: &str, file: &std::path::Path, words: &[&str]) -> Finished {
    let out = run_to_end(
        [OsStr::new(command), file.as_os_str()],
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(out.code, Some(1), "{command} {file:?}:\n{}", out.stderr);
    for words in words {
        assert!(
            out.stderr.contains(words),
            "{command} {file:?} says {words:?}:\n{}",
            out.stderr
        );
    }
    out
}

/// Runs `crossfade <args>` to its end and requires a usage error: exit 2 (clap's, and
/// `flags::Usage`'s) with each of `words` in its standard error; returns what it wrote.
async fn usage_error(args: &[&str], words: &[&str]) -> Finished {
    let out = run_to_end(args, Duration::from_secs(20)).await;
    assert_eq!(
        out.code,
        Some(2),
        "{args:?}: a usage error:\n{}",
        out.stderr
    );
    for words in words {
        assert!(
            out.stderr.contains(words),
            "{args:?} says {words:?}:\n{}",
            out.stderr
        );
    }
    out
}

/// A spec breaking seven rules, plus a command this machine does not have (trial report §10: named
/// in the same run as the rules, not once they are fixed), and the field path each problem must
/// name.
fn broken_spec() -> (Spec, [&'static str; 8]) {
    let mut spec = Spec::new()
        .blue(App::version("v1").set("instances", json!(0)))
        .green(
            App::version("v2")
                .set("args", json!(["sample-app", "--version", "v2"]))
                .set("command", json!("crossfade-no-such-command")),
        );
    spec.json["route"]["path_prefix"] = json!("api");
    spec.json["rollout"]["steps"] = json!([50, 20, 120]);
    spec.json["rollout"]["analysis"]["max_error_rate"] = json!(1.5);
    spec.json["rollout"]["analysis"]["min_requests"] = json!(0);
    let paths = [
        "route.path_prefix",
        "blue.instances",
        "green.args",
        "rollout.steps[1]",
        "rollout.steps[2]",
        "rollout.analysis.max_error_rate",
        "rollout.analysis.min_requests",
        "green.command",
    ];
    (spec, paths)
}

#[tokio::test]
async fn check_and_run_list_every_problem_of_a_spec_with_its_field_path() {
    let dir = temp_dir();
    let (spec, paths) = broken_spec();
    let file = spec.write(dir.path(), "spec.yaml");

    let lines = paths.map(|path| format!("{path}: "));
    let lines = lines.each_ref().map(String::as_str);
    for command in ["check", "run"] {
        refuses(command, &file, &lines).await;
    }
    let listening = tokio::net::TcpStream::connect(spec.listen()).await;
    assert!(
        listening.is_err(),
        "run started nothing for an invalid spec"
    );
}

/// Specs that `check` passed and `run` then refused (trial report, session 8): each must get the
/// same verdict from both, the same words naming the spec's own field (never the proxy config's
/// `routes[0]`), and a valid spec passes both (`run --exit-after-rollout` of a spec without
/// `green:` serves blue and exits 0).
#[tokio::test]
async fn check_and_run_give_the_same_verdict_naming_the_same_field() {
    let dir = temp_dir();
    let port = crate::support::free_addr().port();
    // Trial 25: a state_file that is a link to a file in a missing directory.
    std::os::unix::fs::symlink("nodir/st.json", dir.path().join("dangling.json")).unwrap();
    let cases: [(&str, &str, serde_json::Value, Option<&str>); 11] = [
        (
            "valid",
            "route",
            json!({ "name": "web.v2_a-b", "hosts": ["example.com", "[::1]"] }),
            None,
        ),
        (
            "space in name",
            "route",
            json!({ "name": "we b" }),
            Some("route.name: \"we b\" must be 1 to 63"),
        ),
        (
            "host with port",
            "route",
            json!({ "hosts": ["example.com:8080"] }),
            Some("route.hosts[0]: "),
        ),
        (
            "wildcard host not of the form *.name",
            "route",
            json!({ "hosts": ["example.com", "*example.com"] }),
            Some("route.hosts[1]: \"*example.com\": a wildcard is `*.` and a host name"),
        ),
        (
            "wildcard listen, admin on its port",
            "",
            json!({ "listen": format!("0.0.0.0:{port}"), "admin": format!("127.0.0.1:{port}") }),
            Some("admin: 127.0.0.1:"),
        ),
        (
            "wildcard admin on listen's port",
            "",
            json!({ "listen": format!("127.0.0.1:{port}"), "admin": format!("[::]:{port}") }),
            Some("admin: [::]:"),
        ),
        (
            "same address",
            "",
            json!({ "listen": format!("127.0.0.1:{port}"), "admin": format!("127.0.0.1:{port}") }),
            Some("is also the listen address"),
        ),
        (
            "open admin without a token",
            "",
            json!({ "admin": format!("0.0.0.0:{port}") }),
            Some("is not a loopback address, so it needs a bearer token"),
        ),
        // Trial 25: `check` said ok, and `run` refused ("state file .../st.json/: No such file
        // or directory", without the field).
        (
            "state file with a trailing slash",
            "state_file",
            json!("st.json/"),
            Some("state_file: "),
        ),
        (
            "state file naming the spec's directory",
            "state_file",
            json!("."),
            Some("names a directory, not a file"),
        ),
        (
            "state file linked into a missing directory",
            "state_file",
            json!("dangling.json"),
            Some("state_file: "),
        ),
    ];
    for (name, key, value, refused) in cases {
        let mut spec = Spec::new();
        match (key, value) {
            ("", serde_json::Value::Object(fields)) => {
                for (field, v) in fields {
                    spec.json[field] = v;
                }
            }
            (key, value) => spec.json[key] = value,
        }
        let file = spec.write(dir.path(), "spec.yaml");
        let check = run_to_end(
            [OsStr::new("check"), file.as_os_str()],
            Duration::from_secs(20),
        )
        .await;
        let run = run_to_end(
            [
                OsStr::new("run"),
                OsStr::new("--exit-after-rollout"),
                file.as_os_str(),
            ],
            Duration::from_secs(30),
        )
        .await;
        for (command, out) in [("check", &check), ("run", &run)] {
            match refused {
                None => assert_eq!(out.code, Some(0), "{name}: {command}:\n{}", out.stderr),
                Some(words) => {
                    assert_eq!(out.code, Some(1), "{name}: {command}:\n{}", out.stderr);
                    assert!(
                        out.stderr.contains(words),
                        "{name}: {command} says {words:?}:\n{}",
                        out.stderr
                    );
                    assert!(
                        !out.stderr.contains("routes[0]"),
                        "{name}: {command} names the spec's field, not the proxy config's:\n{}",
                        out.stderr
                    );
                }
            }
        }
    }
}

#[tokio::test]
async fn check_and_run_name_a_missing_command_or_workdir_by_field_before_starting_anything() {
    let dir = temp_dir();
    let not_executable = dir.path().join("app.sh");
    std::fs::write(&not_executable, "#!/bin/sh\n").unwrap();
    let spec = Spec::new()
        .blue(App::version("v1").set("workdir", json!("no-such-dir")))
        .green(App::version("v2").set("command", json!("crossfade-no-such-command")));
    let file = spec.write(dir.path(), "spec.yaml");
    let mut other = spec.clone();
    other.json["blue"]["command"] = json!("./app.sh");
    let other_file = other.write(dir.path(), "other.yaml");
    let wanted = [
        (&file, "blue.workdir: ", "no-such-dir"),
        (
            &file,
            "green.command: ",
            "\"crossfade-no-such-command\" not found in PATH",
        ),
        (&other_file, "blue.command: ", "not executable"),
    ];
    for command in ["check", "run"] {
        for (spec_file, field, what) in wanted {
            // Started elsewhere: the relative paths still follow the spec file.
            let out = run_to_end(
                [command.as_ref(), spec_file.as_os_str()],
                Duration::from_secs(20),
            )
            .await;
            assert_eq!(out.code, Some(1), "{command}: {}", out.stderr);
            let line = out.stderr.lines().find(|l| l.starts_with(field));
            assert!(
                line.is_some_and(|l| l.contains(what)),
                "{command} {field}{what}:\n{}",
                out.stderr
            );
        }
    }
    let path = dir.path().join("no-such-dir").display().to_string();
    let out = run_to_end(
        [OsStr::new("check"), file.as_os_str()],
        Duration::from_secs(20),
    )
    .await;
    assert!(
        out.stderr.contains(&path),
        "the resolved path is shown: {}",
        out.stderr
    );
    let listening = tokio::net::TcpStream::connect(spec.listen()).await;
    assert!(listening.is_err(), "run started nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relative_paths_are_resolved_from_the_spec_files_directory() {
    let dir = temp_dir();
    std::fs::create_dir(dir.path().join("work")).unwrap();
    let spec = Spec::new()
        .blue(App::version("v1").set("workdir", json!("work")))
        .state_file(std::path::Path::new("state/run.json"));
    std::fs::create_dir(dir.path().join("state")).unwrap();
    let file = spec.write(dir.path(), "spec.yaml");
    let out = run_to_end(
        [OsStr::new("check"), file.as_os_str()],
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    // The test's working directory is not the spec's: the state file lands next to the spec.
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &file);
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    let state = dir.path().join("state/run.json");
    crate::support::wait_until(Duration::from_secs(10), "the state file", || async {
        state.exists().then_some(())
    })
    .await;
    assert!(!std::path::Path::new("state/run.json").exists());
    run.terminate(Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn green_whose_command_cannot_be_executed_is_rolled_back_while_blue_keeps_serving() {
    let dir = temp_dir();
    // Executable, so the start-time check passes, but not a program: the spawn fails (ENOEXEC).
    let missing = dir.path().join("not-a-program");
    std::fs::write(&missing, "not a program\n").unwrap();
    std::fs::set_permissions(
        &missing,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let green = App::version("v2")
        .set("name", json!("payments-v2"))
        .set("command", json!(missing));
    let spec = Spec::new().green(green);
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    let load = Load::start(LoadConfig::new(spec.listen()));

    let rollout = wait_terminal(&admin, Duration::from_secs(20)).await;
    load.wait_requests(100, Duration::from_secs(10)).await;
    let report = load.stop().await;

    assert_eq!(rollout["phase"], "RolledBack", "{rollout:#}");
    let message = rollout["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("payments-v2"),
        "the message names the workload: {message}"
    );
    assert_eq!(report.errors(), 0, "{report:?}");
    assert_eq!(
        report.ok_from("v1"),
        report.total(),
        "blue serves: {report:?}"
    );
    run.terminate(Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_to_a_missing_command_is_refused_naming_the_field() {
    let dir = temp_dir();
    let spec = Spec::new();
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    let green = App::version("v2").set("command", json!("crossfade-no-such-command"));
    let (status, body) = admin
        .json("POST", "/rollout", Some(&json!({ "green": green.json })))
        .await;
    assert_eq!(status, 400, "a bad request, not a conflict: {body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("green.command: ") && error.contains("not found in PATH"),
        "{error}"
    );
    // Trial report: the admin API's rollout body follows the spec file's rule for shares (a bare
    // number is percent, a rate needs `%`): a bare rate is refused naming its field.
    let bare_rate = json!({
        "green": App::version("v2").json,
        "rollout": { "steps": [10, 100], "analysis": { "max_error_rate": 0.05 } },
    });
    let (status, body) = admin.json("POST", "/rollout", Some(&bare_rate)).await;
    assert_eq!(status, 400, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("rollout.analysis.max_error_rate: a bare number is ambiguous"),
        "{error}"
    );
    let (status, body) = admin.json("POST", "/rollout", Some(&json!({}))).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .starts_with("green: missing"),
        "{body}"
    );
    assert_eq!(
        admin.rollout().await["rollout"],
        serde_json::Value::Null,
        "nothing started"
    );
    run.terminate(Duration::from_secs(15)).await;
}

/// Trial 11, L4: a preview whose static endpoint is a running instance of the active `command`
/// workload (its port comes from the run, not the spec) was accepted, passed every step (it *is*
/// the active workload), and retiring the old slot then stopped the process the new active slot
/// served from. It is refused naming the field, nothing starts, and blue keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_to_a_running_instance_of_the_active_workload_is_refused_naming_the_field() {
    let dir = temp_dir();
    let spec = Spec::new();
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    let status = admin.status().await;
    let endpoint = status["routes"][0]["blue"]["endpoints"][0].clone();
    let endpoint = endpoint
        .as_str()
        .expect("blue's first endpoint")
        .to_string();
    let (status, body) = admin
        .json(
            "POST",
            "/rollout",
            Some(&json!({ "green": { "name": "v2", "endpoints": [endpoint] } })),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with(&format!(
            "green.endpoints[0]: {endpoint} is also an endpoint of"
        )),
        "{error}"
    );
    assert_eq!(
        admin.rollout().await["rollout"],
        serde_json::Value::Null,
        "nothing started"
    );
    let load = Load::start(LoadConfig::new(spec.listen()));
    load.wait_requests(20, Duration::from_secs(10)).await;
    let report = load.stop().await;
    assert_eq!(report.errors(), 0, "blue still serves: {report:?}");
    run.terminate(Duration::from_secs(15)).await;
}

/// `crossfade proxy` with no route would answer every request 404: refused at start naming
/// `routes`, and a SIGHUP reload to no route is refused with a logged error, the old table serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_config_without_a_route_is_refused_at_start_and_at_reload() {
    let dir = temp_dir();
    let ports = "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\n";
    for (name, text) in [
        ("no-key.yaml", ports.to_string()),
        ("empty-list.yaml", format!("{ports}routes: []\n")),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let needs = "routes: no route: a proxy config needs at least one route";
        refuses("proxy", &path, &[needs]).await;
    }

    let blue = SampleApp::start(dir.path(), "blue", "blue-0", &[]).await;
    let mut config = proxy_config(&[blue.addr], &[]);
    let path = write_json(dir.path(), "proxy.yaml", &config);
    let admin = Admin::new(config["admin"].as_str().unwrap().parse().unwrap());
    let mut proxy = Crossfade::proxy(dir.path(), &path);
    proxy.wait_ready(&admin, Duration::from_secs(15)).await;
    let before = admin.status().await;
    config["routes"] = json!([]);
    write_json(dir.path(), "proxy.yaml", &config);
    kill(Pid::from_raw(proxy.pid() as i32), Signal::SIGHUP).expect("SIGHUP the proxy");
    let log = wait_until(Duration::from_secs(10), "the reload to be refused", || {
        let log = proxy.log();
        async move { log.contains("routes unchanged").then_some(log) }
    })
    .await;
    assert!(log.contains("routes: no route"), "{log}");
    let after = admin.status().await;
    assert_eq!(after["routes"], before["routes"], "the old table serves");
    let listen = config["listen"].as_str().unwrap().parse().unwrap();
    let mut conn = RawConn::connect(listen).await;
    conn.send(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert_eq!(conn.read_response().await.status(), 200);
    proxy.terminate(Duration::from_secs(15)).await;
}

/// Trial report 4: `max_error_rate: 1` (meant as 1 %, read as 100 % before) is refused by `check`,
/// naming the field and both readings; `"1%"` passes.
#[tokio::test]
async fn check_refuses_a_bare_number_as_an_error_rate_showing_both_readings() {
    let dir = temp_dir();
    let mut spec = Spec::new();
    spec.json["rollout"]["analysis"]["max_error_rate"] = json!(1);
    let file = spec.write(dir.path(), "spec.yaml");
    let parts = [
        "rollout.analysis.max_error_rate: a bare number is ambiguous",
        "1 reads as 100% as a fraction, or as 1% as a percentage",
        "\"1%\"",
    ];
    refuses("check", &file, &parts).await;
    spec.json["rollout"]["analysis"]["max_error_rate"] = json!("1%");
    let file = spec.write(dir.path(), "spec.yaml");
    let out = run_to_end(
        [OsStr::new("check"), file.as_os_str()],
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
}

/// Trial report §1–§3, §7: durations that would overflow an `Instant` (and a `1ns` hold) are
/// refused by `check` and by `proxy` naming the field, instead of panicking at run time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_refuses_overflowing_durations_and_a_nanosecond_hold_naming_the_field() {
    let dir = temp_dir();
    let base = "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nroute: { name: web }\nblue: { endpoints: [127.0.0.1:9] }\n";
    for (name, rollout, field, what) in [
        (
            "pdmax.yaml",
            "rollout: { steps: [100], progress_deadline: 10000000000000000000s }",
            "rollout.progress_deadline",
            "above the maximum of 366 days",
        ),
        (
            "dmax.yaml",
            "rollout: { steps: [100], hold: 1s, drain_timeout: 10000000000000000000s }",
            "rollout.drain_timeout",
            "above the maximum of 366 days",
        ),
        // Past u64 seconds: humantime's own overflow said "number is too large" (trial 28).
        (
            "pd20.yaml",
            "rollout: { steps: [100], progress_deadline: 99999999999999999999s }",
            "rollout.progress_deadline: \"99999999999999999999s\" is above the maximum of 366 days",
            "above the maximum of 366 days",
        ),
        (
            "lat20.yaml",
            "rollout: { steps: [100], analysis: { max_latency_increase: 99999999999999999999ms } }",
            "rollout.analysis.max_latency_increase: \"99999999999999999999ms\" is above the maximum",
            "above the maximum of 366 days",
        ),
        (
            "hold_ns.yaml",
            "rollout: { steps: [100], hold: 1ns }",
            "rollout.hold",
            "1ns is below the minimum of 10ms",
        ),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("{base}{rollout}\n")).unwrap();
        refuses("check", &path, &[field, what]).await;
    }
    let path = dir.path().join("one.yaml");
    let text = "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nroutes: [{ name: web, blue: { endpoints: [127.0.0.1:9] } }]\nlimits: { header_read_timeout: 10000000000000000000s }\n";
    std::fs::write(&path, text).unwrap();
    let words = [
        "limits.header_read_timeout",
        "above the maximum of 366 days",
    ];
    refuses("proxy", &path, &words).await;
    let text = "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nroutes: [{ name: web, blue: { endpoints: [127.0.0.1:9] } }]\nlimits: { header_read_timeout: 99999999999999999999s }\n";
    std::fs::write(&path, text).unwrap();
    refuses("proxy", &path, &words).await;
    // A flag: the same parser, the same message.
    usage_error(
        &["demo", "--hold", "99999999999999999999s"],
        &["\"99999999999999999999s\" is above the maximum of 366 days"],
    )
    .await;
}

/// The largest allowed timeouts (366 days) serve requests: instants derived from them saturate
/// instead of overflowing (trial report §3, where every connection was dropped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_with_the_largest_allowed_timeouts_serves_requests() {
    let dir = temp_dir();
    let blue = SampleApp::start(dir.path(), "blue", "blue-0", &[]).await;
    let mut config = proxy_config(&[blue.addr], &[]);
    config["limits"] = json!({ "header_read_timeout": "366days" });
    config["upstream"] = json!({
        "connect_timeout": "366days",
        "response_timeout": "366days",
        "idle_timeout": "366days",
    });
    let path = write_json(dir.path(), "proxy.yaml", &config);
    let admin = Admin::new(config["admin"].as_str().unwrap().parse().unwrap());
    let mut proxy = Crossfade::proxy(dir.path(), &path);
    proxy.wait_ready(&admin, Duration::from_secs(15)).await;
    let listen = config["listen"].as_str().unwrap().parse().unwrap();
    for _ in 0..3 {
        let mut conn = RawConn::connect(listen).await;
        conn.send(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
        assert_eq!(conn.read_response().await.status(), 200);
    }
    assert!(!proxy.log().contains("panicked"), "{}", proxy.log());
    proxy.terminate(Duration::from_secs(15)).await;
}

/// Trial report 3 §12: `--workers 0` (silently one thread before) and `--workers 100000` (threads
/// spawned until the machine stalled) are refused naming the flag and the bounds.
#[tokio::test]
async fn proxy_refuses_zero_and_absurd_worker_counts() {
    let dir = temp_dir();
    let config = write_json(dir.path(), "proxy.yaml", &proxy_config(&[], &[]));
    for workers in ["0", "100000"] {
        let args = [
            OsStr::new("proxy"),
            config.as_os_str(),
            OsStr::new("--workers"),
            OsStr::new(workers),
        ];
        let out = run_to_end(args, Duration::from_secs(15)).await;
        assert_eq!(out.code, Some(2), "{workers}: {out:?}");
        let named = format!("invalid value '{workers}' for '--workers <WORKERS>'");
        assert!(out.stderr.contains(&named), "{}", out.stderr);
        let range = format!("{workers} is outside 1 to 1024, the range this flag takes");
        assert!(out.stderr.contains(&range), "{}", out.stderr);
    }
}

/// Session 42: a number outside a flag's range was named in Rust's words (`0 is not in
/// 1..=1024`); it is in an operator's, as a number above a flag's largest value is.
#[tokio::test]
async fn a_number_outside_a_flags_range_is_refused_naming_the_range_in_words() {
    for (flag, value, range) in [
        ("--rate", "0", "10 to 100000"),
        ("--rate", "100001", "10 to 100000"),
        ("--green-latency-ms", "60001", "0 to 60000"),
    ] {
        let said = format!("{value} is outside {range}, the range this flag takes");
        let out = usage_error(&["demo", flag, value], &[&said]).await;
        assert!(!out.stderr.contains("..="), "{}", out.stderr);
    }
}

/// Session 42: `status --admin 127.0.0.1:0` tried to connect and said "Connection refused".
/// Port 0 binds a free port (`run`, `proxy`, `demo`) but is no address to reach: every command
/// that reaches an admin API refuses it as a usage error naming --admin, from the flag or from
/// CROSSFADE_ADMIN.
#[tokio::test]
async fn an_admin_address_with_port_0_is_refused_by_the_commands_that_reach_one() {
    let dir = temp_dir();
    let page = dir.path().join("r.html").display().to_string();
    let file = dir.path().join("green.yaml").display().to_string();
    let said = "'--admin <ADMIN>': 127.0.0.1:0: port 0 is no address to reach";
    let admin = ["--admin", "127.0.0.1:0"];
    for command in [
        &["status"][..],
        &["status", "--json"],
        &["pause"],
        &["resume"],
        &["promote"],
        &["abort"],
        &["abort", "--force"],
        &["migrate", &file],
        &["report", "-o", &page],
    ] {
        let out = usage_error(&[command, &admin].concat(), &[said]).await;
        assert!(!out.stderr.contains("refused"), "{}", out.stderr);
    }
    let out = crate::support::run_to_end_with(
        ["status"],
        &[("CROSSFADE_ADMIN", "[::1]:0")],
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "CROSSFADE_ADMIN=[::1]:0 (the environment variable of --admin): [::1]:0: port 0 is \
             no address to reach"
        ),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("e.g. [::1]:9901"), "{}", out.stderr);
}

/// Trial 11, L16: a `--log` filter that does not parse was ignored (the default level used, one
/// line on stderr); it is refused as any other bad flag value, naming the flag.
#[tokio::test]
async fn proxy_refuses_a_log_filter_that_does_not_parse() {
    let dir = temp_dir();
    let config = write_json(dir.path(), "proxy.yaml", &proxy_config(&[], &[]));
    let args = [
        OsStr::new("proxy"),
        config.as_os_str(),
        OsStr::new("--log"),
        OsStr::new("crossfade=verbose"),
    ];
    let out = run_to_end(args, Duration::from_secs(15)).await;
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(
        out.stderr
            .contains("invalid value 'crossfade=verbose' for '--log <LOG>'"),
        "{}",
        out.stderr
    );
}

/// A TLS 1.3 ClientHello whose SNI `host_name` is `name` (an IP literal here, which RFC 6066 §3
/// forbids and clients such as wrk send anyway).
fn client_hello_with_sni(name: &[u8]) -> Vec<u8> {
    let be16 = |n: usize| u16::try_from(n).unwrap().to_be_bytes();
    let mut list = be16(3 + name.len()).to_vec();
    list.push(0);
    list.extend(be16(name.len()));
    list.extend(name);
    let mut extensions = vec![0, 0];
    extensions.extend(be16(list.len()));
    extensions.extend(list);
    let mut hello = vec![3, 3];
    hello.extend([7u8; 32]);
    hello.extend([0, 0, 2, 0x13, 0x01, 1, 0]);
    hello.extend(be16(extensions.len()));
    hello.extend(extensions);
    let mut handshake = vec![1];
    handshake.extend(&u32::try_from(hello.len()).unwrap().to_be_bytes()[1..]);
    handshake.extend(hello);
    let mut record = vec![0x16, 3, 1];
    record.extend(be16(handshake.len()));
    record.extend(handshake);
    record
}

/// Trial report 3 §12: a ClientHello with an IP address as SNI (wrk sends one per connection)
/// logged a rustls WARN per connection, a log flood any client could cause; now not shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ip_address_as_sni_does_not_log_a_warning_per_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = temp_dir();
    let (_, chain, key) = crate::clients::certificates("sni");
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_path, chain).unwrap();
    std::fs::write(&key_path, key).unwrap();
    let blue = SampleApp::start(dir.path(), "blue", "blue-0", &[]).await;
    let mut config = proxy_config(&[blue.addr], &[]);
    config["tls"] = json!({ "cert": cert_path, "key": key_path, "watch_interval": "0s" });
    let path = write_json(dir.path(), "proxy.yaml", &config);
    let admin = Admin::new(config["admin"].as_str().unwrap().parse().unwrap());
    let mut proxy = Crossfade::proxy(dir.path(), &path);
    proxy.wait_ready(&admin, Duration::from_secs(15)).await;
    let listen: std::net::SocketAddr = config["listen"].as_str().unwrap().parse().unwrap();
    for _ in 0..3 {
        let mut tcp = tokio::net::TcpStream::connect(listen).await.unwrap();
        tcp.write_all(&client_hello_with_sni(b"127.0.0.1"))
            .await
            .unwrap();
        // The proxy has read the hello once it answers (an alert) and closes.
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer));
        assert!(read.await.is_ok(), "the handshake was never answered");
    }
    let log = proxy.log();
    assert!(!log.contains("SNI"), "{log}");
    // (The open-file limit's warning at start depends on the machine's `ulimit -n`.)
    let warnings = log
        .lines()
        .filter(|l| l.contains("WARN") && !l.contains("RLIMIT_NOFILE"));
    assert_eq!(warnings.count(), 0, "{log}");
    proxy.terminate(Duration::from_secs(15)).await;
}

/// Trial report 5 F3: `crossfade check` on a proxy config (a top-level `routes:` key) checks it as
/// `crossfade proxy` does at start and on SIGHUP: ok with its routes, or every problem with its
/// field path (exit 1), and never as a spec.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_validates_a_proxy_config_as_the_proxy_does() {
    let dir = temp_dir();
    let blue: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let mut config = proxy_config(&[blue], &[]);
    config["drain_timeout"] = json!("5s");
    let good = write_json(dir.path(), "good.yaml", &config);
    let out = run_to_end(
        [OsStr::new("check"), good.as_os_str()],
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains("ok (proxy config, 1 route: web)"),
        "{}",
        out.stdout
    );

    config["routes"][0]["blue"]["weight"] = json!(90);
    config["routes"][0]["green"]["weight"] = json!(20);
    let mut second = config["routes"][0].clone();
    second["name"] = json!("web2");
    config["routes"].as_array_mut().unwrap().push(second);
    let bad = write_json(dir.path(), "bad.yaml", &config);
    let problems = [
        "routes[0].green.weight: blue 90% + green 20% = 110%",
        "routes[1].green.weight: blue 90% + green 20% = 110%",
        "routes[1].path_prefix: duplicate match: any host with path prefix \"/\" (first at \
         routes[0], \"web\")",
        "crossfade: proxy config ",
    ];
    let out = refuses("check", &bad, &problems).await;
    assert!(
        !out.stderr.contains("crossfade: spec "),
        "read as a spec: {}",
        out.stderr
    );
}

/// `request_id.header` names the header an ID is written into, replacing what a request carried
/// there. A header with a meaning of its own (`Content-Type`, `Expect`, `traceparent`, the
/// proxy's shadow marker) or one a route reads for its own purpose (its `override_header`: every
/// request got 400, as the ID is neither blue nor green; its `sticky.header`) was accepted by
/// `check` and by the proxy (trial edge27); both now refuse it, naming the field and the route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_header_with_a_meaning_of_its_own_is_refused_naming_the_field() {
    let dir = temp_dir();
    let blue: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    // Trial 29: response fields (the ID goes into the response too), tracing headers with a
    // format of their own and gRPC's reserved fields were accepted.
    for header in [
        "Content-Type",
        "expect",
        "traceparent",
        "X-Crossfade-Shadow",
        "Date",
        "Location",
        "Retry-After",
        "X-B3-TraceId",
        "X-Amzn-Trace-Id",
        "grpc-timeout",
        "Sec-Fetch-Mode",
        "Access-Control-Allow-Origin",
    ] {
        let mut config = proxy_config(&[blue], &[]);
        config["request_id"] = json!({ "header": header });
        let file = write_json(dir.path(), "meaning.yaml", &config);
        let lower = header.to_ascii_lowercase();
        let words = [
            format!("request_id.header: {lower} is a header with a meaning of its own"),
            "x-request-id is usual".to_owned(),
        ];
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        for command in ["check", "proxy"] {
            refuses(command, &file, &words).await;
        }
    }
    let mut config = proxy_config(&[blue], &[]);
    config["request_id"] = json!({ "header": "X-Tester" });
    config["routes"][0]["override_header"] = json!("x-tester");
    config["routes"][0]["sticky"] = json!({ "header": "X-TESTER" });
    let file = write_json(dir.path(), "route.yaml", &config);
    let words = [
        "request_id.header: x-tester is also routes[0].override_header (route \"web\")",
        "request_id.header: x-tester is also routes[0].sticky.header (route \"web\")",
    ];
    for command in ["check", "proxy"] {
        refuses(command, &file, &words).await;
    }
}

/// What the TLS files hold that is valid but most likely not meant (here a host name two
/// `tls.sni` certificates name) is a warning of `crossfade check`, on standard output beside its
/// others, and logged once by a start. Before, `check` left it to a log line on standard error,
/// and `crossfade proxy` logged every such warning twice (the files were checked, then loaded,
/// each time with the warnings; trial edge27).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_warnings_are_printed_by_check_and_logged_once_by_a_start() {
    let dir = temp_dir();
    let at = |name: &str| dir.path().join(name);
    for (stem, generation) in ["default", "a", "b"].map(|n| (n, crate::clients::certificates(n))) {
        let (_, chain, key) = generation;
        std::fs::write(at(&format!("{stem}.crt")), chain).unwrap();
        std::fs::write(at(&format!("{stem}.key")), key).unwrap();
    }
    let blue: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let mut config = proxy_config(&[blue], &[]);
    config["tls"] = json!({
        "cert": at("default.crt"),
        "key": at("default.key"),
        "sni": [
            { "cert": at("a.crt"), "key": at("a.key") },
            { "cert": at("b.crt"), "key": at("b.key") },
        ],
    });
    let file = write_json(dir.path(), "proxy.yaml", &config);
    let warning = "tls.sni[1]'s certificate names localhost, which tls.sni[0]'s names too";
    let out = run_to_end(
        [OsStr::new("check"), file.as_os_str()],
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        out.stdout.matches(&format!("warning: {warning}")).count(),
        1,
        "{}",
        out.stdout
    );

    let admin = crate::support::Admin::new(crate::support::spec::addr(&config["admin"]));
    let mut proxy = Crossfade::spawn(
        dir.path(),
        "proxy.log",
        [OsStr::new("proxy"), file.as_os_str()],
    );
    proxy.wait_ready(&admin, Duration::from_secs(15)).await;
    let log = proxy.log();
    assert_eq!(log.matches(warning).count(), 1, "{log}");
}

/// Session 40: a `crossfade migrate` file given to `crossfade run` (the operator meant `migrate`)
/// was refused with `blue: missing` alone: a spec's own keys are all a migrate file has, so no
/// unknown field brought the hint that every other wrong kind of file gets. It says what the file
/// looks like and what `run` takes, after every problem found.
#[tokio::test]
async fn a_migrate_file_given_to_run_is_called_one() {
    let dir = temp_dir();
    let file = dir.path().join("green.yaml");
    std::fs::write(
        &file,
        "green:\n  name: v3\n  command: /bin/true\nrollout:\n  hold: 5s\n",
    )
    .expect("write green.yaml");
    let out = run_to_end(
        [OsStr::new("run"), file.as_os_str()],
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    for words in [
        "blue: missing",
        "green.args: {port} must appear in args or env",
        "(this looks like a rollout file for `crossfade migrate`; `run` takes a spec with `route:`, `blue:` and optional `green:` and `rollout:`)",
    ] {
        assert!(out.stderr.contains(words), "says {words:?}:\n{}", out.stderr);
    }
}

/// A file of one kind given to the command that takes another: the unknown-field error says what
/// the file looks like and what the command takes (trial report, session 8).
#[tokio::test]
async fn a_file_of_the_wrong_kind_gets_a_hint_naming_its_kind() {
    let dir = temp_dir();
    let spec = Spec::new().write(dir.path(), "spec.yaml");
    let blue: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let proxy = write_json(dir.path(), "proxy.yaml", &proxy_config(&[blue], &[]));
    let admin = crate::support::free_addr().to_string();
    let cases: [(&[&OsStr], &str); 4] = [
        (
            &[OsStr::new("migrate"), OsStr::new("--admin"), OsStr::new(&admin), spec.as_os_str()],
            "this looks like a rollout spec for `crossfade run`; `migrate` takes a file with `green:` and optional `rollout:`",
        ),
        (
            &[OsStr::new("proxy"), spec.as_os_str()],
            "this looks like a rollout spec for `crossfade run`; `proxy` takes a config with `routes:`",
        ),
        (
            &[OsStr::new("run"), proxy.as_os_str()],
            "this looks like a proxy config for `crossfade proxy`; `run` takes a spec with `route:`",
        ),
        (
            &[OsStr::new("migrate"), OsStr::new("--admin"), OsStr::new(&admin), proxy.as_os_str()],
            "this looks like a proxy config for `crossfade proxy`; `migrate` takes",
        ),
    ];
    for (args, hint) in cases {
        let out = run_to_end(args.iter().copied(), Duration::from_secs(20)).await;
        assert_eq!(out.code, Some(1), "{args:?}:\n{}", out.stderr);
        assert!(
            out.stderr.contains("unknown field"),
            "{args:?}:\n{}",
            out.stderr
        );
        assert!(
            out.stderr.contains(hint),
            "{args:?} hints {hint:?}:\n{}",
            out.stderr
        );
    }
}

/// Trial 12, M3: a NAME without `--kube` used to send the command to Kubernetes (a kubeconfig
/// error for a local user naming the route); it is refused saying how to reach the local
/// instance (its admin address) and that the NAME form is `--kube`'s; `retry`, which has no
/// local form, points at `crossfade migrate`.
#[tokio::test]
async fn a_name_without_kube_is_refused_saying_how_to_reach_the_local_instance() {
    for verb in ["status", "pause", "resume", "promote", "abort"] {
        let args = [verb, "web", "--admin", "127.0.0.1:27011"];
        let out = run_to_end(args, Duration::from_secs(20)).await;
        assert_eq!(out.code, Some(2), "{args:?}: {}", out.stderr);
        let local = format!(
            "`crossfade {verb} web` without --kube: `crossfade {verb}` acts on the running \
             `crossfade run` whose admin API is at 127.0.0.1:27011 (--admin or CROSSFADE_ADMIN) \
             and takes no name: `crossfade {verb} --admin 127.0.0.1:27011`"
        );
        assert!(out.stderr.contains(&local), "{args:?}: {}", out.stderr);
        let cluster = format!("give --kube: `crossfade {verb} --kube web`");
        assert!(out.stderr.contains(&cluster), "{args:?}: {}", out.stderr);
        assert!(
            !out.stderr.contains("kubeconfig"),
            "{args:?}: {}",
            out.stderr
        );
    }
    // Trial 28: an address where the NAME goes was answered with the default address's
    // command (`--admin 127.0.0.1:9901`), which a copy ran against another instance.
    for verb in ["status", "abort"] {
        let args = [verb, "127.0.0.1:27012"];
        let out = run_to_end(args, Duration::from_secs(20)).await;
        assert_eq!(out.code, Some(2), "{args:?}: {}", out.stderr);
        let said = format!(
            "`crossfade {verb} 127.0.0.1:27012` without --kube: 127.0.0.1:27012 is an address, \
             and `crossfade {verb}` takes the admin API's address as --admin, not as a NAME: \
             `crossfade {verb} --admin 127.0.0.1:27012`"
        );
        assert!(out.stderr.contains(&said), "{args:?}: {}", out.stderr);
        assert!(!out.stderr.contains("9901"), "{args:?}: {}", out.stderr);
    }
    let out = run_to_end(["retry", "web"], Duration::from_secs(20)).await;
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("start its rollout again with `crossfade migrate FILE`")
            && out.stderr.contains("`crossfade retry --kube web`"),
        "{}",
        out.stderr
    );
    // A usage error exits 2, as `retry web` (clap's) does (trial 20; it was 1).
    usage_error(
        &["retry"],
        &["start the rollout again with `crossfade migrate FILE`"],
    )
    .await;
}

/// Session 40: `crossfade retry --admin ADDR`, written as the other operator commands are, got
/// clap's "unexpected argument '--admin' found" and its tip "to pass '--admin' as a value, use
/// '-- --admin'", which leads nowhere. It says what `retry` without `--kube` says, with the
/// `crossfade migrate` command for that address; the same for `--admin-token-file`.
#[tokio::test]
async fn retry_given_the_admin_flags_points_at_migrate_for_that_address() {
    for args in [
        &["retry", "--admin", "127.0.0.1:27013"][..],
        &["retry", "--admin=127.0.0.1:27013"],
        &["--log", "info", "retry", "--admin", "127.0.0.1:27013"],
    ] {
        let out = usage_error(
            args,
            &["a running `crossfade run` has no retry: start the rollout again with `crossfade migrate FILE --admin 127.0.0.1:27013` (a file with `green:`); for a TrafficShift in a cluster, `crossfade retry --kube -n shop web`"],
        )
        .await;
        assert!(
            !out.stderr.contains("-- --admin"),
            "{args:?}: {}",
            out.stderr
        );
    }
    usage_error(
        &["retry", "--admin-token-file", "/nonexistent"],
        &["a running `crossfade run` has no retry: start the rollout again with `crossfade migrate FILE --admin-token-file /nonexistent`"],
    )
    .await;
}

/// Session 41: the errors `main` words after clap refused the command line (a negative value,
/// a bad `CROSSFADE_ADMIN`, `retry --admin`) ended with the top-level usage, `Usage: crossfade
/// [OPTIONS] <COMMAND>`, where clap's own errors end with the subcommand's. Each now ends with
/// the usage of the subcommand given, also after a global flag (`--log info status ...`).
#[tokio::test]
async fn a_reworded_flag_error_ends_with_its_subcommands_usage() {
    let cases: [(&[&str], &str); 4] = [
        (
            &["run", "spec.yaml", "--linger", "-5s"],
            "Usage: crossfade run [OPTIONS] <SPEC>",
        ),
        (
            &["--log", "info", "status", "--wait", "-1s"],
            "Usage: crossfade status [OPTIONS] [NAME]",
        ),
        (
            &["retry", "--admin", "127.0.0.1:27013"],
            "Usage: crossfade retry [OPTIONS] [NAME]",
        ),
        (
            &["demo", "--hold", "-1s"],
            "Usage: crossfade demo [OPTIONS]",
        ),
    ];
    for (args, usage) in cases {
        let out = usage_error(args, &[usage]).await;
        assert!(
            !out.stderr.contains("<COMMAND>"),
            "{args:?}: {}",
            out.stderr
        );
    }
    let out = crate::support::run_to_end_with(
        ["status"],
        &[("CROSSFADE_ADMIN", "127.0.0.1")],
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("CROSSFADE_ADMIN=127.0.0.1 (the environment variable of --admin)")
            && out
                .stderr
                .contains("Usage: crossfade status [OPTIONS] [NAME]"),
        "{}",
        out.stderr
    );
}

/// Session 41: `crossfade abort -f` (for `--force`) got clap's tip "to pass '-f' as a value,
/// use '-- -f'", which leads to a NAME error. A single-letter flag a command does not have is
/// named as such, with the command's short flags and the long flags that start with its letter.
#[tokio::test]
async fn a_short_flag_a_command_does_not_have_is_named_with_the_long_ones_it_may_mean() {
    let cases: [(&[&str], &str); 3] = [
        (
            &["abort", "-f"],
            "-f is not a flag of `crossfade abort` (its short flags: -n, -h); did you mean --force?",
        ),
        (
            &["status", "-j"],
            "-j is not a flag of `crossfade status` (its short flags: -n, -h); did you mean --json?",
        ),
        (
            &["run", "spec.yaml", "-v"],
            "-v is not a flag of `crossfade run` (its only short flag is -h); `crossfade run --help` lists its flags",
        ),
    ];
    for (args, words) in cases {
        let out = usage_error(args, &[words]).await;
        assert!(!out.stderr.contains("tip:"), "{args:?}: {}", out.stderr);
    }
}

/// Session 41: a NAME given without `--kube` was answered with `give --kube: crossfade pause
/// --kube Web_1` also when no TrafficShift can have that name, and that command is then refused.
/// Such a NAME is said to be none with `--kube` either, with the reason.
#[tokio::test]
async fn a_name_no_trafficshift_can_have_is_not_suggested_with_kube() {
    for (args, name) in [
        (&["pause", "Web_1"][..], "Web_1"),
        (&["abort", "--", "-f"], "-f"),
        (&["retry", "Web_1"], "Web_1"),
    ] {
        let said = format!("nor with --kube: NAME \"{name}\" cannot be a TrafficShift's name");
        let out = usage_error(args, &[&said]).await;
        assert!(
            !out.stderr.contains(&format!("--kube {name}`")),
            "{args:?}: {}",
            out.stderr
        );
    }
    // A name a TrafficShift can have is still suggested with --kube.
    usage_error(
        &["pause", "web"],
        &["give --kube: `crossfade pause --kube web`"],
    )
    .await;
}

/// Session 41: a Kubernetes manifest from deploy/ given to `check` was checked as a proxy config
/// (its RBAC `rules:` read as a near miss of `routes:`), and `run` added "this looks like a proxy
/// config". Each says it is a Kubernetes manifest, with its kinds and the kubectl command.
#[tokio::test]
async fn a_kubernetes_manifest_from_deploy_is_called_one() {
    let sidecar = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/examples/sidecar.yaml");
    // Its kinds, in file order (the first three; more follow).
    let kinds = "(ServiceAccount, Role, RoleBinding, ";
    let out = run_to_end(["check", sidecar], Duration::from_secs(20)).await;
    let said = format!("{sidecar} is a Kubernetes manifest {kinds}");
    let then = "), which `kubectl apply -f` takes, not crossfade: `crossfade check` takes a spec, \
                a proxy config, the settings file of `crossfade proxy --kube --config` or a \
                `crossfade migrate` file";
    assert!(
        out.code == Some(1)
            && out.stderr.contains(&said)
            && out.stderr.contains(then)
            && !out.stderr.contains("proxy config /"),
        "check says {said:?}: {:?} {}",
        out.code,
        out.stderr
    );
    for command in ["run", "proxy", "migrate"] {
        let out = run_to_end([command, sidecar], Duration::from_secs(20)).await;
        let said = format!("(this looks like a Kubernetes manifest {kinds}");
        let then = format!("), which `kubectl apply -f` takes, not crossfade; `{command}` takes");
        assert!(
            out.code == Some(1)
                && out.stderr.contains(&said)
                && out.stderr.contains(&then)
                && !out.stderr.contains("looks like a proxy config"),
            "{command} says {said:?}: {:?} {}",
            out.code,
            out.stderr
        );
    }
}

/// `retry` has no local form: without `--kube` its error names `retry` (not another verb) and
/// says what to give; `--admin` with a host name says what it takes.
#[tokio::test]
async fn cli_errors_name_the_command_run_and_what_a_flag_takes() {
    // A usage error exits 2, as `retry web` (clap's) does (trial 20; it was 1).
    let out = usage_error(&["retry"], &["`crossfade retry` acts on a TrafficShift in a cluster only: give --kube and its name, e.g. `crossfade retry --kube -n shop web`"]).await;
    assert!(!out.stderr.contains("status"), "{}", out.stderr);

    usage_error(&["retry", "--kube"], &["`crossfade retry --kube` needs the TrafficShift's name, e.g. `crossfade retry --kube -n shop web`"]).await;

    let out = usage_error(&["status", "--admin", "localhost:23901"], &["\"localhost:23901\" is not an address: expected IP:port such as 127.0.0.1:9901 (host names are not resolved)"]).await;
    assert!(
        !out.stderr.contains("invalid socket address syntax"),
        "{}",
        out.stderr
    );

    // Trial 20: `status --kube NAME --wait 5s` was accepted and the wait ignored.
    usage_error(
        &[
            "status",
            "--kube",
            "web",
            "--wait",
            "5s",
            "--kubeconfig",
            "/nonexistent",
        ],
        &["--wait does nothing in `crossfade status --kube NAME`"],
    )
    .await;

    // Trial 20: `--wait 0s` wrote the annotation, then said at once that no controller acted
    // "within 0ns" and asked whether one runs (exit 1). Refused before any request now.
    usage_error(
        &[
            "promote",
            "--kube",
            "web",
            "--wait",
            "0s",
            "--kubeconfig",
            "/nonexistent",
        ],
        &["'--wait <WAIT>': 0s leaves the controller no time to act"],
    )
    .await;
}

/// Session 42: `sample-app --port 99999` said "too large for this flag" without saying what the
/// flag takes; every whole-number flag now names its largest value, `--port` its range.
#[tokio::test]
async fn a_number_too_large_for_a_flag_is_refused_naming_what_the_flag_takes() {
    let app =
        |flag: &'static str, value: &'static str| ["sample-app", "--version", "v1", flag, value];
    for port in ["99999", "65536"] {
        usage_error(
            &app("--port", port),
            &[&format!("'--port <PORT>': {port} is not a port: write 1 to 65535, or 0 for a free port the system picks")],
        )
        .await;
    }
    usage_error(
        &app("--health-flap-cycles", "4294967296"),
        &["4294967296 is above 4294967295, the largest this flag takes"],
    )
    .await;
}

/// Trial report 6, F9: a route that an earlier one shadows (same path prefix, the earlier one
/// listing every host it names) is valid but never chosen: `crossfade check` says so naming
/// both routes, and still exits 0 (a config that loaded before keeps loading).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_warns_about_a_route_an_earlier_one_shadows() {
    let dir = temp_dir();
    let blue: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let mut config = proxy_config(&[blue], &[]);
    config["routes"][0]["hosts"] = json!(["www.example", "shop.example"]);
    let mut shop = config["routes"][0].clone();
    shop["name"] = json!("shop");
    shop["hosts"] = json!(["shop.example"]);
    config["routes"].as_array_mut().unwrap().push(shop);
    let file = write_json(dir.path(), "shadowed.yaml", &config);
    let out = run_to_end(
        [OsStr::new("check"), file.as_os_str()],
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let warning = format!(
        "{}: warning: routes[1].hosts: route \"shop\" is never chosen: routes[0] (\"web\") comes \
         first with the same path prefix \"/\" and lists every host it names",
        file.display()
    );
    assert!(out.stdout.contains(&warning), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("ok (proxy config, 2 routes: web, shop)"),
        "{}",
        out.stdout
    );
}

/// Trial 8, H4: `crossfade proxy CONFIG --admin ADDR` started on the file's admin address without
/// a word; every flag of `--kube` mode was accepted with CONFIG and ignored. Likewise `--wait`
/// without `--kube` and `--admin` with it. Each is refused (exit 2, nothing starts) naming the
/// flag and the mode; a value from the environment (`POD_NAME` in a pod) is not a request and
/// is not refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flag_that_does_nothing_in_the_chosen_mode_is_refused_naming_flag_and_mode() {
    let dir = temp_dir();
    let config = dir.path().join("missing.yaml");
    let config = config.to_str().unwrap();
    let proxy_mode =
        "does nothing in `crossfade proxy CONFIG`: it is a `crossfade proxy --kube` flag";
    let cases: Vec<(Vec<&str>, &str, &str)> = vec![
        (
            vec!["proxy", config, "--listen", "127.0.0.1:1"],
            "--listen",
            proxy_mode,
        ),
        (
            vec!["proxy", config, "--admin", "127.0.0.1:1"],
            "--admin",
            proxy_mode,
        ),
        (
            vec!["proxy", config, "--config", config],
            "--config",
            proxy_mode,
        ),
        (
            vec!["proxy", config, "--route", "ns/x"],
            "--route",
            proxy_mode,
        ),
        (
            vec!["proxy", config, "--namespace", "foo"],
            "--namespace",
            proxy_mode,
        ),
        (
            vec!["proxy", config, "--replica", "r1"],
            "--replica",
            proxy_mode,
        ),
        (
            vec!["proxy", config, "--kubeconfig", config],
            "--kubeconfig",
            proxy_mode,
        ),
        (
            vec!["proxy", config, "--lease-namespace", "x"],
            "--lease-namespace",
            proxy_mode,
        ),
        (
            vec!["proxy", config, "--admin-url", "http://x"],
            "--admin-url",
            proxy_mode,
        ),
        (
            vec!["proxy", config, "--shutdown-delay", "5s"],
            "--shutdown-delay",
            proxy_mode,
        ),
        (
            vec!["status", "--admin", "127.0.0.1:1", "--wait", "5s"],
            "--wait",
            "does nothing in `crossfade status` without --kube",
        ),
        (
            vec!["promote", "--wait", "5s"],
            "--wait",
            "does nothing in `crossfade promote` without --kube",
        ),
        (
            vec!["status", "--kube", "web", "--admin", "127.0.0.1:1"],
            "--admin",
            "does nothing in `crossfade status --kube NAME`",
        ),
        (
            vec!["abort", "--kube", "web", "--admin-token-file", config],
            "--admin-token-file",
            "does nothing in `crossfade abort --kube NAME`",
        ),
    ];
    for (args, flag, says) in cases {
        let out = run_to_end(&args, Duration::from_secs(20)).await;
        assert_eq!(out.code, Some(2), "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.contains(&format!("error: {flag} {says}")),
            "{args:?}: {}",
            out.stderr
        );
    }
    // From the environment: a default, not a request; the proxy goes on to read its CONFIG.
    let out = crate::support::run_to_end_with(
        ["proxy", config],
        &[("POD_NAME", "r1"), ("CROSSFADE_NAMESPACE", "foo")],
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("cannot read proxy config"),
        "{}",
        out.stderr
    );
}

/// Trial 8, H3: `crossfade check` called a proxy config with a YAML syntax error or a duplicate key
/// a rollout spec with "unknown field `routes`". It is told by its top-level keys even when it
/// does not parse, and `check` gives the error `crossfade proxy` gives, with line and column: the
/// repeated key's own (until trial 19, its route's first key's, line 4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_a_broken_proxy_config_with_the_proxys_own_parse_error() {
    let dir = temp_dir();
    let good = "listen: 127.0.0.1:9\nadmin: 127.0.0.1:9\nroutes:\n  - name: web\n    blue:\n      \
                endpoints: [127.0.0.1:9]\n      weight: 100\n";
    let files = [
        (
            "syntax.yaml",
            format!("{good}  bogus\n"),
            "could not find expected ':' at line 9 column 1",
        ),
        (
            "duplicate.yaml",
            format!("{good}    path_prefix: /a\n    path_prefix: /b\n"),
            "routes[0]: duplicate field `path_prefix` at line 9 column 5 (first at line 8)",
        ),
    ];
    for (name, text, says) in files {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        for command in ["check", "proxy"] {
            let words = ["proxy config ", "cannot parse config", says];
            let out = refuses(command, &path, &words).await;
            assert!(
                !out.stderr.contains("unknown field"),
                "{command} {name}: {}",
                out.stderr
            );
        }
    }
}

/// Trial 11, L11: a proxy config whose `routes:` is mistyped `route:` (with its list) was read by
/// `check` as a spec that does not parse; `check` now gives the proxy's own answer, as `proxy`
/// does: the unknown key with its line and the key it was meant to be.
#[tokio::test]
async fn check_reads_a_proxy_config_with_route_for_routes_as_a_proxy_config() {
    let dir = temp_dir();
    let text = "listen: 127.0.0.1:9\nadmin: 127.0.0.1:9\nroute:\n  - name: web\n    blue:\n      \
                endpoints: [127.0.0.1:9]\n      weight: 100\n";
    let path = dir.path().join("typo.yaml");
    std::fs::write(&path, text).unwrap();
    for command in ["check", "proxy"] {
        let words = ["proxy config ", "did you mean `routes`"];
        let out = refuses(command, &path, &words).await;
        assert!(
            !out.stderr.contains("crossfade: spec "),
            "{command}: {}",
            out.stderr
        );
    }
}

/// Trial 18, T21: an environment variable name with `=` (`A=B: x`) reached the process as
/// A="B=x" and `check` said ok; `check` and `run` now refuse it naming the field.
#[tokio::test]
async fn an_environment_variable_name_with_an_equals_sign_is_refused() {
    let dir = temp_dir();
    let spec = Spec::new().blue(App::version("v1").set("env", json!({ "A=B": "x" })));
    let file = spec.write(dir.path(), "spec.yaml");
    for command in ["check", "run"] {
        let words = "blue.env: \"A=B\" is not an environment variable name";
        refuses(command, &file, &[words]).await;
    }
}

/// Trial 18, T20: a readiness path that is not a valid request target (`"/health z"`) passed
/// `check`, and every probe then failed ("bad probe path"), so blue never became ready and `run`
/// gave up at the readiness deadline. It is refused naming the field, by the rule of the
/// proxy's `routes[].health.path`, before anything starts.
#[tokio::test]
async fn a_readiness_path_that_is_not_a_request_target_is_refused_naming_the_field() {
    let dir = temp_dir();
    let spec = Spec::new().blue(App::version("v1").set(
        "readiness",
        json!({ "path": "/health z", "interval": "50ms", "deadline": "10s" }),
    ));
    let file = spec.write(dir.path(), "spec.yaml");
    let words = "blue.readiness.path: \"/health z\" is not a valid request target (RFC 9112 §3.2)";
    for command in ["check", "run"] {
        refuses(command, &file, &[words]).await;
    }
}

/// Trial 18, T16: a key given twice in a map of a spec (`blue.env`, a gate's `headers`) was
/// accepted, the later value silently replacing the earlier (`env: { PORT: "{port}", PORT:
/// "8080" }` gave every instance port 8080), while a repeated field of a struct, and any repeated
/// key in an admin API JSON body, is refused. `check` and `run` now refuse it naming the map and
/// the key.
#[tokio::test]
async fn a_key_given_twice_in_a_map_of_a_spec_is_refused_naming_it() {
    let dir = temp_dir();
    // JSON is YAML; serde_json's maps cannot hold the repeated key, so it is written in.
    let text = serde_json::to_string(&Spec::new().json).unwrap();
    let env = text.replacen(
        r#""instances":1,"#,
        r#""instances":1,"env":{"PORT":"{port}","PORT":"8080"},"#,
        1,
    );
    assert!(env.contains(r#""PORT":"8080""#), "{env}");
    let file = dir.path().join("spec.yaml");
    std::fs::write(&file, env).unwrap();
    for command in ["check", "run"] {
        refuses(command, &file, &["blue.env: \"PORT\" is given twice"]).await;
    }
    let gate = "green: { endpoints: [127.0.0.1:9] }\nrollout:\n  gates:\n    - name: g\n      \
                at: before_step\n      url: http://127.0.0.1:9/\n      headers: { X-A: a, X-A: b }\n";
    let file = dir.path().join("green.yaml");
    std::fs::write(&file, gate).unwrap();
    let words = "rollout.gates[0].headers: \"X-A\" is given twice";
    refuses("check", &file, &[words]).await;
}

/// Trial 18, T15: `args: [--port, "{{port}}"]` (a template engine's spelling) holds `{port}`, so
/// `check` passed it and `run` started the app with `--port {25100}`, which never became ready;
/// `{PORT}` and `{ port }` got only "{port} must appear in args or env". Each is refused naming
/// the argument or variable, by `check` and `run` (nothing started) and for a `migrate` file.
#[tokio::test]
async fn a_misspelt_port_placeholder_is_refused_naming_its_field() {
    let dir = temp_dir();
    let not = "is not the placeholder {port}";
    let spec = Spec::new().blue(App::version("v1").set(
        "args",
        json!(["sample-app", "--port", "{{port}}", "--version", "v1"]),
    ));
    let file = spec.write(dir.path(), "spec.yaml");
    let words = format!("blue.args[2]: \"{{{{port}}}}\": {{{{port}}}} {not}");
    for command in ["check", "run"] {
        refuses(command, &file, &[&words]).await;
    }
    let listening = tokio::net::TcpStream::connect(spec.listen()).await;
    assert!(listening.is_err(), "run started nothing");
    let migrate = serde_json::json!({
        "green": App::version("v2")
            .set("args", json!(["sample-app", "--version", "v2"]))
            .set("env", json!({ "PORT": "{ PORT }" }))
            .json,
    });
    let migrate = write_json(dir.path(), "green.yaml", &migrate);
    let words = format!("green.env.PORT: \"{{ PORT }}\": {{ PORT }} {not}");
    refuses("check", &migrate, &[&words]).await;
}

/// Trial 18, T14: a `state_file` that `crossfade run` refuses at its start (a directory, a file
/// that is not a state document and has no backup, another route's state) passed `crossfade
/// check` (`ok`). `check` now reads it as a start would, without changing it, and refuses each
/// naming the field or the route, as `run` does; the files are left as they were.
#[tokio::test]
async fn check_refuses_a_state_file_that_run_would_refuse_naming_it() {
    let dir = temp_dir();
    let directory = dir.path().join("state-dir");
    std::fs::create_dir(&directory).unwrap();
    let not_state = dir.path().join("notes.txt");
    std::fs::write(&not_state, "listen: 1\n").unwrap();
    let other_route = dir.path().join("other.json");
    let other =
        r#"{"version": 1, "route": "api", "active_pids": [], "last_rollout_id": 0, "events": []}"#;
    std::fs::write(&other_route, other).unwrap();
    let cases = [
        (&directory, "state_file: state file"),
        (&not_state, "is corrupt and its backup"),
        (&other_route, "the state file belongs to route \"api\""),
    ];
    for (state, words) in cases {
        let file = Spec::new().state_file(state).write(dir.path(), "spec.yaml");
        for command in ["check", "run"] {
            refuses(command, &file, &[words]).await;
        }
    }
    assert!(directory.is_dir());
    assert_eq!(std::fs::read_to_string(&not_state).unwrap(), "listen: 1\n");
    assert_eq!(std::fs::read_to_string(&other_route).unwrap(), other);
}

/// Trial 32 (newuser32, H): `crossfade check` said `ok` for a `state_file` in a directory that
/// exists but where no file can be made (`/proc/self`, for root too), and the start then refused
/// it naming the state file, not the lock file that failed. `check` now tries to create a file
/// there (and removes it) and refuses naming the directory; the starts (`run`, `proxy`) name the
/// lock file. The same for a spec and a proxy config.
#[tokio::test]
async fn a_state_file_where_no_file_can_be_made_is_refused_by_check_and_by_the_start() {
    let dir = temp_dir();
    let state = std::path::Path::new("/proc/self/crossfade-state.json");
    let cannot = "state file /proc/self/crossfade-state.json: cannot create files in /proc/self";
    let lock = "its lock file /proc/self/crossfade-state.json.lock";
    let spec = Spec::new().state_file(state).write(dir.path(), "spec.yaml");
    refuses("check", &spec, &["state_file: ", cannot]).await;
    refuses("run", &spec, &[lock]).await;
    let mut config = proxy_config(&[crate::support::free_addr()], &[]);
    config["state_file"] = json!(state);
    let config = write_json(dir.path(), "proxy.yaml", &config);
    refuses("check", &config, &["state_file: ", cannot]).await;
    refuses("proxy", &config, &[lock]).await;
}

/// check33: `crossfade check` said `ok` for a `state_file` whose lock file, backup or (for a
/// spec) child journal was a directory, and the start then refused each (`its lock file ...: Is
/// a directory`, `state.json.bak: Is a directory`, `child journal ...: Is a directory`). `check`
/// now refuses each naming it, for a spec and a proxy config.
#[tokio::test]
async fn a_state_file_whose_lock_backup_or_journal_is_a_directory_is_refused_by_check() {
    let dir = temp_dir();
    let state = dir.path().join("state.json");
    let spec = Spec::new()
        .state_file(&state)
        .write(dir.path(), "spec.yaml");
    let mut config = proxy_config(&[crate::support::free_addr()], &[]);
    config["state_file"] = json!(state);
    let config = write_json(dir.path(), "proxy.yaml", &config);
    let companions = [
        ("state.json.lock", "its lock file", true),
        ("state.json.bak", "its backup", true),
        ("state.json.children", "its child journal", false),
    ];
    for (name, what, proxy_too) in companions {
        let odd = dir.path().join(name);
        std::fs::create_dir(&odd).expect("mkdir");
        let says = format!(
            "{what} {} is not a regular file (it is a directory)",
            odd.display()
        );
        refuses("check", &spec, &["state_file: ", &says]).await;
        if proxy_too {
            refuses("check", &config, &["state_file: ", &says]).await;
        }
        std::fs::remove_dir(&odd).expect("rmdir");
    }
    let out = run_to_end(
        [OsStr::new("check"), spec.as_os_str()],
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
}

/// Trial 17, T10: a proxy config whose `routes:` is mis-cased (`Routes:`, `ROUTES:`) or mistyped
/// (`rotues:`) was read by `check` as a spec ("did you mean `route`?"), and `proxy` added that it
/// looked like a spec; both now read it as the proxy config it is, name the key it was meant to
/// be (`routes`, letter case aside), and `run` says it looks like a proxy config.
#[tokio::test]
async fn check_and_proxy_read_a_near_miss_of_routes_as_a_proxy_config() {
    let dir = temp_dir();
    for key in ["Routes", "ROUTES", "rotues"] {
        let text = format!(
            "listen: 127.0.0.1:9\nadmin: 127.0.0.1:9\n{key}:\n  - name: web\n    blue:\n      \
             endpoints: [127.0.0.1:9]\n      weight: 100\n"
        );
        let path = dir.path().join(format!("{key}.yaml"));
        std::fs::write(&path, text).unwrap();
        for command in ["check", "proxy", "run"] {
            let unknown = format!("unknown field `{key}`");
            let out = refuses(command, &path, &[&unknown]).await;
            if command == "run" {
                assert!(
                    out.stderr.contains("this looks like a proxy config"),
                    "{command} {key}: {}",
                    out.stderr
                );
                continue;
            }
            assert!(
                out.stderr.contains("did you mean `routes`?"),
                "{command} {key}: {}",
                out.stderr
            );
            assert!(
                !out.stderr.contains("crossfade: spec ") && !out.stderr.contains("rollout spec"),
                "{command} {key}: {}",
                out.stderr
            );
        }
    }
}

/// Trial 9, I15: a misspelt key has its line and column wherever it is, the document's first
/// line included (the YAML reader leaves a position at line 1 column 1 out), and the known key it
/// was probably meant to be, for a spec (`check`, `run`) and a proxy config (`check`, `proxy`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_key_has_its_line_and_column_and_the_key_it_was_probably_meant_to_be() {
    let dir = temp_dir();
    let routes = "routes:\n  - name: web\n    blue: { endpoints: [127.0.0.1:9] }\n";
    let files = [
        (
            "first.yaml",
            "lisen: 127.0.0.1:9\nblue:\n  endpoints: [127.0.0.1:9]\n".to_owned(),
            ["check", "run"],
            "spec does not parse: unknown field `lisen`, expected one of `listen`,",
            "at line 1 column 1; did you mean `listen`?",
        ),
        (
            "nested.yaml",
            "blue:\n  endpoints: [127.0.0.1:9]\nrollout:\n  hodl: 5s\n".to_owned(),
            ["check", "run"],
            "rollout: unknown field `hodl`, expected one of `steps`, `hold`,",
            "at line 4 column 3; did you mean `hold`?",
        ),
        (
            "proxy.yaml",
            format!("lisen: 127.0.0.1:9\n{routes}"),
            ["check", "proxy"],
            "cannot parse config: unknown field `lisen`, expected one of `listen`,",
            "at line 1 column 1; did you mean `listen`?",
        ),
    ];
    for (name, text, commands, error, position) in files {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        for command in commands {
            refuses(command, &path, &[error, position]).await;
        }
    }
}

/// Trial 12, M15: the rate flags read `20%` (the spec's form) and `0.2` alike; a rate out of
/// range names both notations. The sample app's `--exit-after` makes an accepted start end by
/// itself (exit status 1), which a refused flag (usage error, 2) never reaches.
#[tokio::test]
async fn a_rate_flag_takes_a_percentage_or_a_fraction() {
    for rate in ["20%", "0.2"] {
        let port = crate::support::free_addr().port().to_string();
        let args = [
            "sample-app",
            "--version",
            "v1",
            "--port",
            port.as_str(),
            "--error-rate",
            rate,
            "--exit-after",
            "10ms",
        ];
        let out = run_to_end(args, Duration::from_secs(20)).await;
        assert_eq!(out.code, Some(1), "{rate}: {}", out.stderr);
        assert!(
            !out.stderr.contains("invalid value"),
            "{rate}: {}",
            out.stderr
        );
    }
    let args = ["sample-app", "--version", "v1", "--error-rate", "150%"];
    let out = run_to_end(args, Duration::from_secs(20)).await;
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("`150%` is outside 0% to 100%: write a percentage such as 20% or a fraction such as 0.2"),
        "{}",
        out.stderr
    );
    usage_error(
        &["demo", "--green-error-rate", "2"],
        &["`2` is 200% as a fraction, above 100%: write 2% for 2 percent"],
    )
    .await;
}

/// Trial 17, T1: a `path_prefix` holding a character no request path can hold (`?` of a query,
/// `#` of a fragment, a space) loaded without a word, and its route was never chosen: every
/// request went to another route or got 404. `check` and `proxy` refuse it naming the field and
/// the spelling to write; a non-ASCII prefix, which only clients sending raw UTF-8 match
/// (browsers and curl send it percent-encoded), is a warning naming the encoded spelling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_prefix_no_request_can_match_is_refused_naming_the_spelling_to_write() {
    let dir = temp_dir();
    let blue: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let cases = [
        (
            "/api?v=2",
            "routes[0].path_prefix: \"/api?v=2\": a prefix matches the path only, never the query \
             ('?' starts it), so no request would match it; write \"/api\"",
        ),
        (
            "/docs#top",
            "routes[0].path_prefix: \"/docs#top\": '#' starts a fragment, which clients never \
             send, so no request would match it; write \"/docs\"",
        ),
        (
            "/my files",
            "routes[0].path_prefix: \"/my files\": ' ' cannot appear in a request path (RFC 3986 \
             §3.3), so no request would match it; write it percent-encoded: \"/my%20files\"",
        ),
    ];
    for (prefix, says) in cases {
        let mut config = proxy_config(&[blue], &[]);
        config["routes"][0]["path_prefix"] = json!(prefix);
        let file = write_json(dir.path(), "prefix.yaml", &config);
        for command in ["check", "proxy"] {
            refuses(command, &file, &[says]).await;
        }
    }
    let mut config = proxy_config(&[blue], &[]);
    config["routes"][0]["path_prefix"] = json!("/café");
    let file = write_json(dir.path(), "raw.yaml", &config);
    let out = run_to_end(
        [OsStr::new("check"), file.as_os_str()],
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let warning = "warning: routes[0].path_prefix: \"/café\" holds non-ASCII characters, which \
                   browsers and HTTP clients send percent-encoded (\"/caf%C3%A9\"): this prefix \
                   matches only clients that send them raw; write \"/caf%C3%A9\"";
    assert!(out.stdout.contains(warning), "{}", out.stdout);
}

/// Trial 17, T2: an IPv6 address written unquoted, as the README writes it in prose
/// (`[::1]:9001`), is a YAML list (or, inside a flow list, a map), and was refused as "invalid
/// type: sequence, expected an address": nothing said to quote it. `check` and `proxy` now say so,
/// naming the field.
#[tokio::test]
async fn an_unquoted_ipv6_address_is_refused_saying_to_quote_it() {
    let dir = temp_dir();
    let route = "routes:\n  - name: web\n    blue:\n      endpoints: [127.0.0.1:9]\n";
    let cases = [
        (
            format!("listen: [::1]:8080\nadmin: 127.0.0.1:9\n{route}"),
            "listen: invalid type: a list, expected an address such as 127.0.0.1:8080; an IPv6 \
             address must be quoted in YAML (\"[::1]:8080\"), as unquoted brackets make a list",
        ),
        (
            "listen: 127.0.0.1:9\nadmin: 127.0.0.1:9\nroutes:\n  - name: web\n    blue: \
             { endpoints: [[::1]:9001] }\n"
                .to_owned(),
            "routes[0].blue.endpoints[0]: invalid type: a map, expected an address such as \
             127.0.0.1:8080; an IPv6 address must be quoted in YAML (\"[::1]:8080\")",
        ),
    ];
    for (text, says) in cases {
        let path = dir.path().join("ipv6.yaml");
        std::fs::write(&path, text).unwrap();
        for command in ["check", "proxy"] {
            refuses(command, &path, &[says]).await;
        }
    }
}

/// Trial 17, T6: a route's IPv6 host written without brackets (`::1`) was refused as "must be a
/// host name without port": it has no port. The error says to write it in brackets, as clients
/// send it in `Host`.
#[tokio::test]
async fn an_ipv6_route_host_without_brackets_is_refused_saying_to_bracket_it() {
    let dir = temp_dir();
    let blue: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let mut config = proxy_config(&[blue], &[]);
    config["routes"][0]["hosts"] = json!(["2001:db8::1", "shop.example:8080"]);
    let file = write_json(dir.path(), "hosts.yaml", &config);
    let problems = [
        "routes[0].hosts[0]: \"2001:db8::1\": an IPv6 address is written in brackets, as clients \
         send it in Host: \"[2001:db8::1]\"",
        "routes[0].hosts[1]: \"shop.example:8080\" must be a host name without port",
    ];
    refuses("check", &file, &problems).await;
}

/// Trial 29: `listen: "::1:8080"` (an IPv6 address and port without brackets) was refused as "port
/// 8080 is above 65535", which is false; an endpoint `127.0.0.1` without a port got only the
/// form. Each says what is wrong: the brackets (with the address meant), or the missing port.
#[tokio::test]
async fn an_address_without_brackets_or_port_is_refused_saying_which() {
    let dir = temp_dir();
    let blue: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let mut config = proxy_config(&[blue], &[]);
    config["listen"] = json!("::1:8080");
    config["routes"][0]["blue"]["endpoints"] = json!(["2001:db8::1:443"]);
    let file = write_json(dir.path(), "brackets.yaml", &config);
    let listen = "listen: \"::1:8080\" is not an address: an IPv6 address with a port is written \
                  in brackets (quoted in YAML): did you mean \"[::1]:8080\"?";
    let out = refuses("check", &file, &[listen]).await;
    assert!(!out.stderr.contains("above 65535"), "{}", out.stderr);
    config["listen"] = json!("127.0.0.1:0");
    let file = write_json(dir.path(), "brackets.yaml", &config);
    let endpoint = "\"2001:db8::1:443\" is not an address: an IPv6 address with a port is \
                    written in brackets (quoted in YAML): did you mean \"[2001:db8::1]:443\"?";
    refuses("check", &file, &[endpoint]).await;
    config["routes"][0]["blue"]["endpoints"] = json!(["127.0.0.1"]);
    let file = write_json(dir.path(), "brackets.yaml", &config);
    let words = "\"127.0.0.1\" is not an address: it has no port; expected IP:port";
    refuses("check", &file, &[words]).await;
    let words = "\"[::1]\" is not an address: it has no port";
    usage_error(&["status", "--admin", "[::1]"], &[words]).await;
}

/// Trial 29: a route host written as a URL (`http://shop.example`) was told "must be a host name
/// without port" (it has none), and one with a path (`shop.example/api`) only which characters a
/// host name holds; one with a leading dot (nginx's `.shop.example`) or `..` was accepted and
/// matched no client's host. Each says what it is and what to write, for `check` and a start.
#[tokio::test]
async fn a_route_host_written_as_a_url_or_with_a_path_is_refused_saying_what_to_write() {
    let dir = temp_dir();
    let blue: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let mut config = proxy_config(&[blue], &[]);
    let hosts = [
        "http://shop.example",
        "https://user@shop.example:8443/api?x",
        "http://[2001:db8::1]:80/",
        "shop.example/api",
        ".shop.example",
        "shop..example",
        "shop.example.",
    ];
    config["routes"][0]["hosts"] = json!(hosts);
    let file = write_json(dir.path(), "hosts.yaml", &config);
    let problems = [
        "routes[0].hosts[0]: \"http://shop.example\" is a URL, not a host name: write the host \
         alone, \"shop.example\" (no scheme, port or path",
        "routes[0].hosts[1]: \"https://user@shop.example:8443/api?x\" is a URL, not a host name: \
         write the host alone, \"shop.example\"",
        "routes[0].hosts[2]: \"http://[2001:db8::1]:80/\" is a URL, not a host name: write the \
         host alone, \"[2001:db8::1]\"",
        "routes[0].hosts[3]: \"shop.example/api\": a host name holds no path; write \
         \"shop.example\" here and the path in path_prefix (\"/api\")",
        // A leading dot (nginx's domain-and-subdomains form) or an empty label matched nothing.
        "routes[0].hosts[4]: \".shop.example\": a leading dot (nginx's form for a domain and its \
         subdomains) is not supported; write \"shop.example\" for the name and \
         \"*.shop.example\" for its subdomains",
        "routes[0].hosts[5]: \"shop..example\" has an empty label",
    ];
    for command in ["check", "proxy"] {
        let out = refuses(command, &file, &problems).await;
        assert!(!out.stderr.contains("without port"), "{}", out.stderr);
        // One trailing dot is an absolute name, matched as without it: valid.
        assert!(!out.stderr.contains("hosts[6]"), "{}", out.stderr);
    }
}

/// Trial 17, T4: a `tls.cert` or `tls.key` that is not a regular file was read to its end:
/// `/dev/zero` until the OOM killer stopped the process (23 GB), a FIFO never (the start, `check`,
/// and the certificate watcher's runtime thread blocked for good). Both are refused at once,
/// naming the field; a symbolic link to a regular file (a Kubernetes Secret's mount) still reads.
#[tokio::test]
async fn a_tls_file_that_is_not_a_regular_file_is_refused_naming_the_field() {
    let dir = temp_dir();
    let fifo = dir.path().join("tls.crt");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success(), "mkfifo {}", fifo.display());
    let blue: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let mut config = proxy_config(&[blue], &[]);
    config["tls"] = json!({ "cert": fifo, "key": "/dev/zero" });
    let file = write_json(dir.path(), "tls.yaml", &config);
    let cert = format!(
        "tls.cert: {} is not a regular file (a PEM file is expected)",
        fifo.display()
    );
    let key = "tls.key: /dev/zero is not a regular file (a PEM file is expected)";
    for command in ["check", "proxy"] {
        refuses(command, &file, &[&cert, key]).await;
    }
}

/// T4's family: every other file an operator names (the spec or config itself for `check`,
/// `proxy` and `run`, and the admin token file) is read through the same bounded reader
/// (`crossfade_proxy::files`), so a FIFO or `/dev/zero` there is refused at once, naming the file,
/// instead of blocking or filling memory (each command, before: a FIFO blocked it for good).
#[tokio::test]
async fn any_file_an_operator_names_that_is_not_a_regular_file_is_refused_naming_it() {
    let dir = temp_dir();
    let fifo = dir.path().join("config.yaml");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success(), "mkfifo {}", fifo.display());
    let zero = std::path::Path::new("/dev/zero");
    // Which kind of file it is (session 42: a list of the kinds it might be).
    let dir_path = dir.path();
    for (command, path, read_as, what) in [
        ("check", fifo.as_path(), "", "a FIFO"),
        ("proxy", fifo.as_path(), "proxy config ", "a FIFO"),
        ("run", fifo.as_path(), "spec ", "a FIFO"),
        ("check", zero, "", "a device"),
        ("proxy", zero, "proxy config ", "a device"),
        ("run", zero, "spec ", "a device"),
        ("run", dir_path, "spec ", "a directory"),
    ] {
        let problem = format!(
            "cannot read {read_as}{}: not a regular file: it is {what}",
            path.display()
        );
        refuses(command, path, &[&problem]).await;
    }
    let blue: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let config = write_json(dir.path(), "proxy.yaml", &proxy_config(&[blue], &[]));
    let out = run_to_end(
        [
            OsStr::new("check"),
            OsStr::new("--admin-token-file"),
            zero.as_os_str(),
            config.as_os_str(),
        ],
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("/dev/zero"), "{}", out.stderr);
    assert!(
        out.stderr.contains("not a regular file: it is a device"),
        "{}",
        out.stderr
    );
}

/// Trial 17, T1 (continued): `routes[].shadow.ignore.paths` are request path prefixes too, and
/// took anything starting with `/`: `"/a b"`, `"/x?y"` or `"/a//b"` loaded and never matched, so
/// the paths meant to stay unmirrored were mirrored. They are held to `path_prefix`'s rules.
#[tokio::test]
async fn a_shadow_ignore_path_no_request_can_match_is_refused_naming_the_field() {
    let dir = temp_dir();
    let blue: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let mut config = proxy_config(&[blue], &[]);
    config["routes"][0]["shadow"] = json!({
        "ignore": { "paths": ["/a b", "/x?y", "/a//b", "/ok"], "body_paths": ["/now"] }
    });
    let file = write_json(dir.path(), "shadow.yaml", &config);
    let problems = [
        "routes[0].shadow.ignore.paths[0]: \"/a b\": ' ' cannot appear in a request path",
        "routes[0].shadow.ignore.paths[1]: \"/x?y\": a prefix matches the path only, never the \
         query",
        "routes[0].shadow.ignore.paths[2]: \"/a//b\" is not in normal form, so no request would \
         match it; write \"/a/b\"",
    ];
    let out = refuses("check", &file, &problems).await;
    assert!(!out.stderr.contains("paths[3]"), "{}", out.stderr);
    assert!(!out.stderr.contains("body_paths"), "{}", out.stderr);
}

/// Trial 17, T13: a YAML merge key (`<<: *web`, the usual way to share a route's settings) is not
/// applied by the reader, and the error said only "unknown field `<<`". It now says that merge keys
/// are not supported and what works instead, for `check` and `proxy` alike.
#[tokio::test]
async fn a_yaml_merge_key_is_refused_saying_merge_keys_are_not_supported() {
    let dir = temp_dir();
    let text = "listen: 127.0.0.1:9\nadmin: 127.0.0.1:9\nroutes:\n  - &web\n    name: web\n    \
                blue: { endpoints: [127.0.0.1:9] }\n  - <<: *web\n    name: api\n    \
                path_prefix: /api\n";
    let path = dir.path().join("merge.yaml");
    std::fs::write(&path, text).unwrap();
    let words = [
        "routes[1]: unknown field `<<`, expected one of `name`, `hosts`",
        "; YAML merge keys (`<<: *anchor`) are not supported: write the keys out (an alias \
         `*anchor` for a whole value works)",
    ];
    for command in ["check", "proxy"] {
        refuses(command, &path, &words).await;
    }
}

/// Trial 18's report: a spec or proxy config holding a second YAML document (`---`), and a key
/// given twice at the top of a file, were refused without a line (a nested key given twice had
/// the line of its map's start, not its own). Each names the line now, for `check` and the
/// command that reads the file.
#[tokio::test]
async fn a_second_document_and_a_top_level_key_given_twice_are_refused_with_their_line() {
    let dir = temp_dir();
    let routes = "routes:\n  - name: web\n    blue: { endpoints: [127.0.0.1:9] }\n";
    let spec = "blue: { endpoints: [127.0.0.1:9] }\n";
    let second = "more than one YAML document: a second begins at line";
    let cases = [
        (
            format!("listen: 127.0.0.1:9\n{routes}---\nadmin: 127.0.0.1:9\n"),
            "proxy",
            format!("{second} 5,"),
        ),
        (
            format!("---\n{spec}---\n{spec}"),
            "run",
            format!("{second} 3,"),
        ),
        (
            format!("listen: 127.0.0.1:9\n{routes}listen: 127.0.0.1:8\n"),
            "proxy",
            "duplicate field `listen` at line 5 column 1 (first at line 1)".to_owned(),
        ),
        (
            format!("# a spec\n{spec}admin: 127.0.0.1:9\n{spec}"),
            "run",
            "duplicate field `blue` at line 4 column 1 (first at line 2)".to_owned(),
        ),
    ];
    for (text, command, words) in cases {
        let path = dir.path().join("file.yaml");
        std::fs::write(&path, &text).unwrap();
        for command in ["check", command] {
            refuses(command, &path, &[&words]).await;
        }
    }
}

/// Trial 18's report: `readiness.deadline: 1ms` passed `check`, and the instance then failed at
/// its first probe, taken as it starts. The deadline must leave room for a second probe
/// (`timeout + interval`): refused naming the field and the rule, before anything starts.
#[tokio::test]
async fn a_readiness_deadline_too_short_for_a_second_probe_is_refused() {
    let dir = temp_dir();
    let spec = Spec::new().blue(App::version("v1").set(
        "readiness",
        json!({ "timeout": "1s", "interval": "50ms", "deadline": "1ms" }),
    ));
    let file = spec.write(dir.path(), "spec.yaml");
    let words = "blue.readiness.deadline: 1ms is below timeout + interval (1s + 50ms = 1s 50ms)";
    for command in ["check", "run"] {
        refuses(command, &file, &[words]).await;
    }
    let listening = tokio::net::TcpStream::connect(spec.listen()).await;
    assert!(listening.is_err(), "run started nothing");
}

/// Trial 18's report: `args: [--port, $PORT]` with `env: { PORT: "{port}" }` passed `check`, and
/// the program got the text `$PORT`: args are not run through a shell. Refused naming the
/// argument and saying to write `{port}`.
#[tokio::test]
async fn a_shell_variable_for_the_port_in_args_is_refused_saying_to_write_the_placeholder() {
    let dir = temp_dir();
    let spec = Spec::new().blue(
        App::version("v1")
            .set(
                "args",
                json!(["sample-app", "--port", "$PORT", "--version", "v1"]),
            )
            .set("env", json!({ "PORT": "{port}" })),
    );
    let file = spec.write(dir.path(), "spec.yaml");
    let words = "blue.args[2]: \"$PORT\": $PORT is a shell variable, and args and env are passed \
                 to the program as written, not through a shell, so it would get $PORT itself; \
                 write {port}";
    for command in ["check", "run"] {
        refuses(command, &file, &[words]).await;
    }
}

/// Trial 19: a `state_file` naming the config or spec itself was refused as a corrupt state file
/// "missing or corrupt too", with the advice to remove both files to start afresh, which would
/// have removed the settings. It is refused saying what the file is, and left as it was.
#[tokio::test]
async fn a_state_file_naming_a_settings_file_is_refused_saying_what_it_is() {
    let dir = temp_dir();
    let path = dir.path().join("self.yaml");
    let config = "listen: 127.0.0.1:9\nadmin: 127.0.0.1:8\nstate_file: self.yaml\nroutes: [{ \
                  name: web, blue: { endpoints: [127.0.0.1:7] } }]\n";
    let spec = "listen: 127.0.0.1:9\nadmin: 127.0.0.1:8\nstate_file: self.yaml\nroute: { name: \
                web }\nblue: { endpoints: [127.0.0.1:7] }\n";
    for (text, command, kind) in [
        (config, "proxy", "a proxy config for `crossfade proxy`"),
        (spec, "run", "a rollout spec for `crossfade run`"),
    ] {
        std::fs::write(&path, text).unwrap();
        let words = format!(
            "state_file: {} is {kind}, not a state file: crossfade writes its state there, so \
             name a path of its own",
            path.display()
        );
        for command in ["check", command] {
            let out = refuses(command, &path, &[&words]).await;
            assert!(!out.stderr.contains("remove both"), "{}", out.stderr);
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    }
}

/// newuser 33: a `state_file` naming the other command's state file (a `crossfade proxy`'s weights
/// for a `crossfade run`, a `crossfade run`'s rollout state for a `crossfade proxy`, or either for
/// `crossfade report --state`) was refused as corrupt, with the advice to remove it and its
/// backup, which would lose the other process's state. It is refused saying what the file is, and
/// left as it was.
#[tokio::test]
async fn a_state_file_of_the_other_command_is_refused_saying_whose_it_is() {
    let dir = temp_dir();
    let path = dir.path().join("state.json");
    let proxy_state = r#"{"version": 1, "routes": {"web": {"weights": {"blue": 10000, "green": 0},
        "file_weights": {"blue": 10000, "green": 0}, "blue": ["127.0.0.1:7"], "green": []}}}"#;
    let run_state = r#"{"version": 1, "route": "web", "active": "blue", "last_rollout_id": 0}"#;
    // Free addresses: `run` binds them before it reads the state file.
    let addrs = format!(
        "listen: {}\nadmin: {}\nstate_file: state.json\n",
        crate::support::free_addr(),
        crate::support::free_addr()
    );
    let config =
        format!("{addrs}routes: [{{ name: web, blue: {{ endpoints: [127.0.0.1:7] }} }}]\n");
    let spec = format!("{addrs}route: {{ name: web }}\nblue: {{ endpoints: [127.0.0.1:7] }}\n");
    let settings = dir.path().join("settings.yaml");
    for (state, settings_text, command, whose) in [
        (
            proxy_state,
            &spec,
            "run",
            "the state file of a `crossfade proxy` (its routes' weights)",
        ),
        (
            run_state,
            &config,
            "proxy",
            "the state file of a `crossfade run` (its rollouts)",
        ),
    ] {
        std::fs::write(&path, state).unwrap();
        std::fs::write(&settings, settings_text).unwrap();
        let words = format!(
            "state_file: {} is {whose}, not this command's: give each crossfade process a \
             state_file of its own",
            path.display()
        );
        for command in ["check", command] {
            let out = refuses(command, &settings, &[&words]).await;
            assert!(!out.stderr.contains("remove both"), "{}", out.stderr);
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), state);
    }
    std::fs::write(&path, proxy_state).unwrap();
    let report = dir.path().join("r.html");
    let args = [
        OsStr::new("report"),
        OsStr::new("--state"),
        path.as_os_str(),
    ];
    let args = args
        .into_iter()
        .chain([OsStr::new("-o"), report.as_os_str()]);
    let out = run_to_end(args, Duration::from_secs(30)).await;
    // A file of another kind is the flag's mistake: a usage error (user44b, session 44).
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    let words = format!(
        "--state {} is the state file of a `crossfade proxy` (its routes' weights), not a \
         `crossfade run` state file",
        path.display()
    );
    assert!(
        out.stderr.contains(&words),
        "want {words:?} in {}",
        out.stderr
    );
}

/// Trial 20: Kubernetes names given to the controller and the proxy were not checked: `--namespace
/// Default` watched a namespace no object can be in (nothing found, no word), `--lease-name "Bad
/// Name"` failed every Lease write, `--identity ""` is a Lease with no holder, and `--admin-url
/// "not a url"` went into the Lease, failing every scrape. Each is a usage
/// error before any request (the kubeconfig here does not exist).
#[tokio::test]
async fn kubernetes_names_given_as_flags_are_refused_before_any_request() {
    let cases: [(&[&str], &str); 7] = [
        // Written to the Lease as given: every scrape of the replica failed.
        (
            &["proxy", "--kube", "--admin-url", "not a url"],
            "--admin-url (or env CROSSFADE_ADMIN_URL): \"not a url\" is not an http:// or https:// URL",
        ),
        (
            &["controller", "--kube", "--namespace", "Default"],
            "\"Default\" cannot be a namespace (lower-case letters, digits and `-`, at most 63); did you mean `default`?",
        ),
        (
            &["controller", "--kube", "--lease-name", "Bad Name"],
            "\"Bad Name\" cannot be a Kubernetes object's name",
        ),
        (
            &["controller", "--kube", "--identity", ""],
            "\"\" cannot be an identity",
        ),
        (
            &["controller", "--kube", "--proxy-namespace", "crossfade_system"],
            "\"crossfade_system\" cannot be a namespace",
        ),
        // A list: each namespace checked, the bad one named.
        (
            &["controller", "--kube", "--proxy-namespace", "crossfade-proxy-leases,Shop"],
            "\"Shop\" cannot be a namespace",
        ),
        (
            &["proxy", "--kube", "--namespace", "Shop"],
            "--namespace: \"Shop\" cannot be a namespace (lower-case letters, digits and `-`, at most 63); did you mean `shop`?",
        ),
    ];
    for (args, wanted) in cases {
        let args = args.iter().chain(&["--kubeconfig", "/nonexistent"]);
        let out = run_to_end(args, Duration::from_secs(20)).await;
        assert_eq!(out.code, Some(2), "{wanted}: {}", out.stderr);
        assert!(out.stderr.contains(wanted), "{wanted}: {}", out.stderr);
        assert!(!out.stderr.contains("/nonexistent"), "{}", out.stderr);
    }
}

/// A new binary started by hand beside a serving proxy, without that one's `--upgrade-socket` (or
/// with another), failed with "Address already in use" alone; it now says what a handover needs.
#[tokio::test]
async fn a_proxy_whose_address_is_taken_says_how_to_replace_a_serving_one() {
    let dir = temp_dir();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    // Never connected to: the start fails before it serves.
    let endpoint = "127.0.0.1:9".parse().unwrap();
    let mut config = proxy_config(&[endpoint], &[]);
    config["listen"] = json!(taken.local_addr().unwrap().to_string());
    let config = write_json(dir.path(), "proxy.yaml", &config);
    let in_use = format!(
        "cannot bind the listen address {}: Address already in use",
        taken.local_addr().unwrap()
    );
    refuses(
        "proxy",
        &config,
        &[
            &in_use,
            "a proxy serving already? To replace one in place, start this one with the \
             --upgrade-socket that one was started with, or send that one SIGUSR2",
        ],
    )
    .await;
    let socket = dir.path().join("up.sock");
    let args = [
        OsStr::new("proxy"),
        config.as_os_str(),
        OsStr::new("--upgrade-socket"),
        socket.as_os_str(),
    ];
    let out = run_to_end(args, Duration::from_secs(15)).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    let named = format!(
        "and none on --upgrade-socket {}: a proxy serving already, started without \
         --upgrade-socket or with another path?",
        socket.display()
    );
    assert!(
        out.stderr.contains(&in_use) && out.stderr.contains(&named),
        "{}",
        out.stderr
    );
}

/// A negative value for a flag (`--wait -1s`) is named with its flag, exit 2; clap alone said
/// "unexpected argument '-1' found" (trial 20 and 21 leftover). `--wait=-1s` already reached the
/// parser; a `-1s` with no flag before it stays clap's own error.
/// The command's help says what the flag takes (session 41: `--wait takes 0 or more` was
/// false, `--wait` takes at least 1s).
#[tokio::test]
async fn a_negative_flag_value_is_named_with_its_flag() {
    usage_error(
        &["status", "--wait", "-1s"],
        &["--wait -1s: a negative value, and no value of crossfade's flags can be negative (`crossfade status --help` says what --wait takes)"],
    )
    .await;
    usage_error(
        &["sample-app", "--port", "0", "--unready-for", "-5ms"],
        &["--unready-for -5ms: a negative value"],
    )
    .await;
    let out = usage_error(&["status", "-1s"], &["unexpected argument '-1'"]).await;
    assert!(!out.stderr.contains("negative"), "{}", out.stderr);
}

/// Trial 28: a name that becomes a metric label value and is repeated in every status line (a
/// workload's `name`, a check's, a gate's) had no length limit; 5000 characters were accepted.
/// `check` refuses each one of 64 characters naming its field and the limit of 63 (the
/// Kubernetes label value limit), and accepts 63.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_refuses_names_above_63_characters_naming_the_field_and_the_limit() {
    let dir = temp_dir();
    let spec = |n: usize| {
        let name = "v".repeat(n);
        format!(
            "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nroute: {{ name: web }}\n\
             blue: {{ name: {name}, endpoints: [127.0.0.1:9] }}\n\
             green: {{ name: {name}é, endpoints: [127.0.0.1:10] }}\n\
             rollout:\n  steps: [100]\n  analysis:\n    checks:\n      - name: {name}\n        \
             prometheus: {{ address: \"http://127.0.0.1:9090\", query: 'up' }}\n        max: 1\n  \
             gates: [{{ name: {name}, at: before_promotion, url: \"http://127.0.0.1:9/ok\" }}]\n"
        )
    };
    let path = dir.path().join("long.yaml");
    std::fs::write(&path, spec(64)).unwrap();
    refuses(
        "check",
        &path,
        &[
            "blue.name: \"vvvvvvvvvvvvvvvvvvvv\"... is 64 characters long, above the limit of 63",
            // Characters, not bytes: 63 ASCII and one two-byte letter.
            "green.name: \"vvvvvvvvvvvvvvvvvvvv\"... is 65 characters long, above the limit of 63",
            "rollout.analysis.checks[0].name: \"vvvvvvvvvvvvvvvvvvvv\"... is 64 characters long",
            "rollout.gates[0].name: \"vvvvvvvvvvvvvvvvvvvv\"... is 64 characters long",
        ],
    )
    .await;
    let path = dir.path().join("fits.yaml");
    // green's name is 63 characters here: 62 `v` and `é`.
    std::fs::write(
        &path,
        spec(63).replacen(
            &format!("{}é", "v".repeat(63)),
            &format!("{}é", "v".repeat(62)),
            1,
        ),
    )
    .unwrap();
    let out = run_to_end(
        [OsStr::new("check"), path.as_os_str()],
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
}

/// Trial 28: a file of flow collections nested 30 000 levels deep kept `check` inside the YAML
/// scanner (quadratic in the depth) for over 20 s before its recursion limit refused it. `check`,
/// `run` and `proxy` refuse one deeper than 128 levels before parsing, naming the file and where.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_nested_deeper_than_128_levels_is_refused_before_parsing_naming_it() {
    let dir = temp_dir();
    let path = dir.path().join("deep.yaml");
    let n = 2000;
    std::fs::write(
        &path,
        format!("listen: {}{}\n", "[".repeat(n), "]".repeat(n)),
    )
    .unwrap();
    let shown = path.display().to_string();
    let what = "'[' at line 1, column 137 nests flow collections deeper than 128 levels";
    refuses("check", &path, &[&format!("cannot read {shown}"), what]).await;
    refuses("run", &path, &[&shown, what]).await;
    refuses("proxy", &path, &[&shown, what]).await;
}

/// Trial 30: a `hosts` entry in brackets was taken as an IPv6 address whatever it held, so
/// `[10.0.0.5]` (an IPv4 address bracketed), `[fe80::1%eth0]` (with a zone), `[web]` and `[]`
/// passed `check` and a start and matched no request (a client's `Host` of that form is answered
/// 400). Each is refused naming the entry and what to write; a bracketed IPv6 address, in any
/// spelling, still loads.
#[tokio::test]
async fn a_bracketed_route_host_that_is_no_ipv6_address_is_refused_saying_what_to_write() {
    let dir = temp_dir();
    let blue: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let mut config = proxy_config(&[blue], &[]);
    config["routes"][0]["hosts"] =
        json!(["[10.0.0.5]", "[fe80::1%eth0]", "[web]", "[]", "[0:0::1]"]);
    let file = write_json(dir.path(), "hosts.yaml", &config);
    let problems = [
        "routes[0].hosts[0]: \"[10.0.0.5]\": brackets are for an IPv6 address; an IPv4 address is \
         written without them, as clients send it in Host: \"10.0.0.5\"",
        "routes[0].hosts[1]: \"[fe80::1%eth0]\": a zone (%eth0) is never in a client's Host; \
         write \"[fe80::1]\"",
        "routes[0].hosts[2]: \"[web]\" is not a bracketed IPv6 address",
        "routes[0].hosts[3]: \"[]\" is not a bracketed IPv6 address",
    ];
    for command in ["check", "proxy"] {
        let out = refuses(command, &file, &problems).await;
        assert!(!out.stderr.contains("hosts[4]"), "{}", out.stderr);
    }
    config["routes"][0]["hosts"] = json!(["[0:0::1]", "[2001:DB8::1]", "[::ffff:10.0.0.5]"]);
    let file = write_json(dir.path(), "hosts.yaml", &config);
    let checked = run_to_end(
        [OsStr::new("check"), file.as_os_str()],
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(checked.code, Some(0), "{checked:?}");
}

/// A state file edited by hand with numbers at the edge of their types is served, not panicked
/// on (newuser34): times past the year 9999 or too large for a duration (`1e12`, `1e300` Unix
/// seconds) read as 9999-12-31T23:59:59.999Z in `GET /rollout`, `crossfade status` and the report,
/// and a `last_rollout_id` of `u64::MAX` refuses the next rollout with a 500 that names it.
/// Before: `crossfade report --state` panicked on the rollout's start time, `crossfade run`
/// panicked at start on its end time, and a rollout request panicked the service, which ended
/// `crossfade run`.
#[tokio::test]
async fn a_state_file_edited_with_out_of_range_times_and_ids_is_served_not_panicked_on() {
    let dir = temp_dir();
    let state = dir.path().join("state.json");
    let spec = Spec::new().state_file(&state);
    let admin = Admin::new(spec.admin());
    let file = spec.write(dir.path(), "spec.yaml");
    let mut run = Crossfade::run(dir.path(), &file);
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    let green = json!({ "green": App::version("v2").json });
    let (status, body) = admin.json("POST", "/rollout", Some(&green)).await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = admin.json("POST", "/rollout/abort", None).await;
    assert_eq!(status, 200, "{body}");
    wait_terminal(&admin, Duration::from_secs(20)).await;
    assert!(run.terminate(Duration::from_secs(20)).await.success());

    let mut edited: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    edited["last_rollout_id"] = json!(u64::MAX);
    edited["rollout"]["timeline"]["started_at_unix_seconds"] = json!(1e300);
    edited["rollout"]["timeline"]["ended_at_unix_seconds"] = json!(1e12);
    for event in edited["events"].as_array_mut().unwrap() {
        event["at_unix_seconds"] = json!(1e12);
    }
    write_json(dir.path(), "state.json", &edited);
    let _ = std::fs::remove_file(dir.path().join("state.json.bak"));

    let page = dir.path().join("report.html");
    let (state_arg, page_arg) = (state.display().to_string(), page.display().to_string());
    let out = run_to_end(
        ["report", "--state", &state_arg, "-o", &page_arg],
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("9999-12-31T23:59:59Z"), "the start time");

    let mut run = Crossfade::run(dir.path(), &file);
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    // The start's `Restored` event names the saved rollout's end time.
    let rollout = admin.rollout().await.to_string();
    assert!(
        rollout.contains("ended Aborted at 9999-12-31T23:59:59.999Z"),
        "{rollout}"
    );
    let (status, body) = admin.json("POST", "/rollout", Some(&green)).await;
    assert_eq!(status, 500, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("no rollout number is left") && error.contains("last_rollout_id"),
        "{error}"
    );
    assert!(
        run.try_exit().is_none(),
        "crossfade run ended:\n{}",
        run.log()
    );
    let (status, _) = admin.json("GET", "/rollout", None).await;
    assert_eq!(status, 200);
    assert!(run.terminate(Duration::from_secs(20)).await.success());
}

/// newuser34 A: the version a completed rollout made active can no longer start (its program, a
/// copy of the binary, was removed). `crossfade check` said `ok`, and `crossfade run` exited 1
/// with `workload v2: cannot start ...`, naming a version in no file the operator wrote. Both now
/// name the field, the version, the state file it comes from, and what to do.
#[tokio::test]
async fn an_active_version_from_the_state_file_that_cannot_start_is_named_with_its_file() {
    let dir = temp_dir();
    let state = dir.path().join("state.json");
    let copy = dir.path().join("crossfade-v2");
    std::fs::copy(crate::support::BIN, &copy).expect("copy the binary");
    let spec = Spec::new()
        .blue(App::version("v1").set("name", json!("v1")))
        .state_file(&state);
    let admin = Admin::new(spec.admin());
    let file = spec.write(dir.path(), "spec.yaml");
    let mut run = Crossfade::run(dir.path(), &file);
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    let v2 = App::version("v2").set("name", json!("v2"));
    let green = json!({ "green": v2.set("command", json!(copy)).json });
    let (status, body) = admin.json("POST", "/rollout", Some(&green)).await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = admin.json("POST", "/rollout/promote", None).await;
    assert_eq!(status, 200, "{body}");
    let ended = wait_terminal(&admin, Duration::from_secs(30)).await;
    assert_eq!(ended["phase"], "Completed", "{ended:#}");
    assert!(run.terminate(Duration::from_secs(20)).await.success());
    std::fs::remove_file(&copy).expect("remove the copy");

    let file_arg = file.display().to_string();
    let out = run_to_end(["check", file_arg.as_str()], Duration::from_secs(20)).await;
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    let said = format!(
        "v2 is the version state file {} records as serving",
        state.display()
    );
    for words in [
        "state_file's active workload.command",
        said.as_str(),
        "remove the state file",
    ] {
        assert!(out.stderr.contains(words), "{words}\n{}", out.stderr);
    }
    let mut run = Crossfade::run(dir.path(), &file);
    let code = run.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(code.code(), Some(1), "{}", run.log());
    assert!(run.log().contains(&said), "{}", run.log());
}

/// newuser34 B: a state file whose recorded active workload was edited into one that cannot
/// serve (`instances: 0`) made `crossfade run` fail with `invalid config: routes[0].green.
/// endpoints: green has weight 100% but no endpoints`, naming neither the file nor the field. It
/// is refused before anything is written or started, naming both.
#[tokio::test]
async fn a_state_files_active_workload_edited_to_no_instance_is_refused_naming_file_and_field() {
    let dir = temp_dir();
    let state = dir.path().join("state.json");
    let spec = Spec::new().state_file(&state);
    let admin = Admin::new(spec.admin());
    let file = spec.write(dir.path(), "spec.yaml");
    let mut run = Crossfade::run(dir.path(), &file);
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    assert!(run.terminate(Duration::from_secs(20)).await.success());
    let mut edited: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    edited["active_workload"]["instances"] = json!(0);
    write_json(dir.path(), "state.json", &edited);
    let _ = std::fs::remove_file(dir.path().join("state.json.bak"));
    let before = std::fs::read(&state).unwrap();

    let file_arg = file.display().to_string();
    let out = run_to_end(["check", file_arg.as_str()], Duration::from_secs(20)).await;
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("active_workload.instances: 0"),
        "{}",
        out.stderr
    );
    let mut run = Crossfade::run(dir.path(), &file);
    let code = run.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(code.code(), Some(1), "{}", run.log());
    let log = run.log();
    for words in [
        state.display().to_string().as_str(),
        "active_workload.instances: 0",
        "fix the field",
    ] {
        assert!(log.contains(words), "{words}\n{log}");
    }
    assert_eq!(
        std::fs::read(&state).unwrap(),
        before,
        "the file is left as it was"
    );
}

/// User37: a spec whose `listen` and `admin` lie inside a `port_range` just wide enough for blue
/// and green passed `crossfade check` (`ok`); `run` then served, and green found every port of
/// the range taken (the proxy's own listeners held two) and was rolled back. `check` and `run`
/// now count the ports the listeners take and refuse it before starting, naming `port_range`.
#[tokio::test]
async fn a_port_range_whose_ports_the_proxys_own_listeners_take_is_refused_by_check_and_run() {
    let dir = temp_dir();
    let mut spec = Spec::new()
        .blue(App::version("v1").set("instances", json!(2)))
        .green(App::version("v2").set("instances", json!(2)));
    let port = spec.listen().port();
    let admin = format!("127.0.0.1:{}", port + 1);
    spec.json["admin"] = json!(admin);
    spec.json["port_range"] = json!(format!("{port}-{}", port + 3));
    let file = spec.write(dir.path(), "spec.yaml");
    let words = format!(
        "port_range: {port}-{}: 2 ports left for instances (listen 127.0.0.1:{port} and admin \
         {admin} take 2 of its 4), but blue (2 instances) and green (2 instances) run together \
         during a rollout: 4 needed; widen port_range",
        port + 3
    );
    for command in ["check", "run"] {
        refuses(command, &file, &[&words]).await;
    }
    let listening = tokio::net::TcpStream::connect(spec.listen()).await;
    assert!(listening.is_err(), "run started nothing");
}

/// New-user audit D4: a 100,000-character `weight` made a 100 KB error line from `crossfade
/// check`, and a 3 MB file that is no config a 3 MB one echoing it (3145727 bytes: YAML drops
/// the trailing space). Each error quotes the value's
/// start, names the field and the length, and stays under a kilobyte; a file that is one string
/// is named by its length alone (session 44).
#[tokio::test]
async fn check_quotes_an_oversized_value_by_its_start_and_length() {
    let dir = temp_dir();
    let weight = "x".repeat(100_000);
    let config = dir.path().join("proxy.yaml");
    let text = format!(
        "routes:\n  - name: web\n    blue: {{ endpoints: [127.0.0.1:9000], weight: \"{weight}\" }}\n"
    );
    std::fs::write(&config, text).unwrap();
    let start = format!("\"{}\"… (100000 bytes)", "x".repeat(64));
    let named = format!("routes[0].blue.weight: {start} is not a percentage");
    let out = refuses("check", &config, &[&named]).await;
    assert!(out.stderr.len() < 1000, "{} bytes", out.stderr.len());

    let prose = dir.path().join("notes.txt");
    std::fs::write(&prose, "lorem ipsum ".repeat(262_144)).unwrap();
    // Session 44 (user44b): a file that is one string is named by its size, none of it quoted
    // (a token file's secret was echoed).
    let words = ["the file is a YAML string of 3145727 bytes, not a map of spec settings"];
    let out = refuses("check", &prose, &words).await;
    assert!(!out.stderr.contains("lorem"), "{}", out.stderr);
    assert!(out.stderr.len() < 1000, "{} bytes", out.stderr.len());
}

/// Session 44 (user44b): a token file given by mistake as a spec, a proxy config or a migrate
/// file was echoed into the error (`invalid type: string "sk_live_...", expected ...`), a leak
/// into CI logs. Each loader names what the file is and its size, none of its content.
#[tokio::test]
async fn a_file_that_is_one_string_is_named_by_its_size_not_echoed() {
    let dir = temp_dir();
    let token = dir.path().join("tok.yaml");
    std::fs::write(&token, "sk_live_SECRETTOKEN123\n").unwrap();
    let string = "the file is a YAML string of 22 bytes, not a";
    let check = refuses("check", &token, &["spec does not parse", string]).await;
    let proxy = refuses("proxy", &token, &["cannot parse config", string]).await;
    // Nothing listens on port 1: the file is refused before the admin API is asked.
    let args = [OsStr::new("migrate"), token.as_os_str()]
        .into_iter()
        .chain([OsStr::new("--admin"), OsStr::new("127.0.0.1:1")]);
    let migrate = run_to_end(args, Duration::from_secs(30)).await;
    assert_eq!(migrate.code, Some(1), "{}", migrate.stderr);
    assert!(migrate.stderr.contains(string), "{}", migrate.stderr);
    for out in [check, proxy, migrate] {
        assert!(!out.stderr.contains("SECRET"), "{}", out.stderr);
    }
}

/// Session 41: a `--kubeconfig` that cannot be read is named once, with the system's reason; kube's
/// own words quoted the path twice (`failed to read kubeconfig from '"/x"'`).
#[tokio::test]
async fn a_kubeconfig_that_cannot_be_read_is_named_once_with_the_reason() {
    let dir = temp_dir();
    let missing = dir.path().join("missing-kubeconfig");
    let path = missing.to_str().expect("a UTF-8 temp path");
    let args = ["status", "--kube", "web", "--kubeconfig", path];
    let out = run_to_end(args, Duration::from_secs(20)).await;
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert_eq!(
        out.stderr.trim_end(),
        format!("crossfade: --kubeconfig {path}: No such file or directory (os error 2)"),
    );
}
