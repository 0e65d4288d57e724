//! `crossfade demo --json`: the self-contained migration, healthy and with a failing v2.

use std::time::Duration;

use serde_json::Value;

use crate::support::run_to_end;

/// Runs `crossfade demo --json --hold 1s --rate 200 EXTRA...`; exit code and the JSON summary.
async fn demo(extra: &[&str]) -> (Option<i32>, Value) {
    let (code, summary, _) = demo_with_stderr(extra).await;
    (code, summary)
}

/// [`demo`], and what the demo wrote on stderr.
async fn demo_with_stderr(extra: &[&str]) -> (Option<i32>, Value, String) {
    let mut args = vec!["demo", "--json", "--hold", "1s", "--rate", "200"];
    args.extend_from_slice(extra);
    let out = run_to_end(&args, Duration::from_secs(40)).await;
    let summary = serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "summary is not JSON ({e}): {}\nstderr:\n{}",
            out.stdout, out.stderr
        )
    });
    (out.code, summary, out.stderr)
}

fn count(summary: &Value, field: &str) -> u64 {
    summary[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {summary:#}"))
}

/// Also trial 7, G5: `--listen` and `--admin` keep the demo's own listeners to the given ports.
#[tokio::test]
async fn demo_completes_with_no_client_errors_and_serves_v2() {
    let (listen, admin) = (
        crate::support::free_addr().to_string(),
        crate::support::free_addr().to_string(),
    );
    let (code, summary) = demo(&["--listen", &listen, "--admin", &admin]).await;
    assert_eq!(summary["listen"], listen.as_str(), "{summary:#}");
    assert_eq!(summary["admin"], admin.as_str(), "{summary:#}");

    assert_eq!(code, Some(0), "{summary:#}");
    assert_eq!(summary["outcome"], "Completed", "{summary:#}");
    assert_eq!(count(&summary, "client_errors"), 0, "{summary:#}");
    assert_eq!(summary["serving_version"], "v2", "{summary:#}");
    assert_eq!(summary["active"], "green", "{summary:#}");
    assert_eq!(summary["weights"]["green"], 10_000, "{summary:#}");
    let served = &summary["ok_by_version"];
    assert!(
        served["v1"].as_u64() > Some(0) && served["v2"].as_u64() > Some(0),
        "{summary:#}"
    );
    // Trial 9, I15: `requests` stays, deprecated, as the same successes.
    assert_eq!(summary["requests"], *served, "{summary:#}");
}

#[tokio::test]
async fn demo_with_a_failing_v2_rolls_back_and_exits_3() {
    let (code, summary, stderr) = demo_with_stderr(&["--green-error-rate", "0.2"]).await;
    // Trial 12, M11: the demo's own event list says what happened; its WARN transitions are not
    // logged a second time (the log lines only with --log or RUST_LOG).
    if std::env::var_os("RUST_LOG").is_none() {
        assert!(!stderr.contains(" WARN "), "{stderr}");
    }

    assert_eq!(code, Some(3), "{summary:#}");
    assert_eq!(summary["outcome"], "RolledBack", "{summary:#}");
    assert_eq!(summary["serving_version"], "v1", "{summary:#}");
    assert_eq!(summary["active"], "blue", "{summary:#}");
    assert_eq!(summary["weights"]["green"], 0, "{summary:#}");
    // The only client errors are v2's 500s: the sample app fails exactly floor(n × 0.2) of its first
    // n requests, and v2's requests are its successes plus those errors.
    let errors = count(&summary, "client_errors");
    let v2 = summary["ok_by_version"]["v2"].as_u64().unwrap_or(0) + errors;
    assert!(
        errors > 0 && errors <= v2 / 5,
        "{errors} errors of {v2} v2 requests: {summary:#}"
    );
    // Trial 7, G6: v2's errors are counted as v2's, and what v2 answered is both.
    assert_eq!(summary["errors_by_version"]["v2"], errors, "{summary:#}");
    assert_eq!(summary["answered_by_version"]["v2"], v2, "{summary:#}");
}

/// Trial 12, M16: a v2 that never answers is rolled back by the analysis as too slow, naming the
/// requests it holds past `max_p99` (500 ms in the demo), never as too little traffic (the
/// load generator's requests wait on it, so fewer than `min_requests` reach it).
#[tokio::test]
async fn demo_with_a_v2_that_never_answers_rolls_back_on_its_unanswered_requests() {
    // The flag's largest value (trial 20: 99999999999 is refused now), a minute: longer than the
    // whole demo, so v2 answers none of its requests.
    let (code, summary) = demo(&["--green-latency-ms", "60000"]).await;
    assert_eq!(code, Some(3), "{summary:#}");
    assert_eq!(summary["outcome"], "RolledBack", "{summary:#}");
    assert_eq!(summary["serving_version"], "v1", "{summary:#}");
    let message = summary["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("analysis failed: p99 > 500ms: ")
            && message.contains(" unanswered for more than 500ms"),
        "{summary:#}"
    );
    assert!(
        !message.contains("inconclusive") && !message.contains(" requests < "),
        "{summary:#}"
    );
}

/// M16's counterpart: a v2 that answers, at twice `max_p99`, still fails by latency.
#[tokio::test]
async fn demo_with_a_v2_twice_as_slow_as_max_p99_rolls_back_by_latency() {
    let (code, summary) = demo(&["--green-latency-ms", "1000"]).await;
    assert_eq!(code, Some(3), "{summary:#}");
    assert_eq!(summary["outcome"], "RolledBack", "{summary:#}");
    let message = summary["message"].as_str().unwrap_or_default();
    // Whether its answered requests or its waiting ones decide first depends on the machine's
    // pace: either way it is the p99 bound, with a window's evidence.
    assert!(
        message.contains("analysis failed: p99 ") && message.contains("> 500ms"),
        "{summary:#}"
    );
    assert!(!message.contains("inconclusive"), "{summary:#}");
}

/// Trial report 5 F15: the demo's settings errors name the flags typed, not spec paths.
/// Trial 19: a negative number given to a numeric flag (`--green-latency-ms -5`) reached clap as
/// an unknown flag ("unexpected argument '-5' found", naming no flag); the flag's own parser now
/// gets it and says what is wrong with it.
#[tokio::test]
async fn a_negative_number_is_refused_naming_the_flag_it_was_given_to() {
    for (args, wanted) in [
        (
            ["demo", "--green-latency-ms", "-5"],
            "invalid value '-5' for '--green-latency-ms <GREEN_LATENCY_MS>': \"-5\": a whole number cannot be negative",
        ),
        (
            ["demo", "--rate", "-300"],
            "invalid value '-300' for '--rate <RATE>': \"-300\": a whole number cannot be negative",
        ),
        (
            ["demo", "--green-error-rate", "-0.2"],
            "invalid value '-0.2' for '--green-error-rate <GREEN_ERROR_RATE>': `-0.2` is negative: a rate cannot be negative",
        ),
        // Trial 20: `-5%` is not number-shaped, so clap read it as flags `-5` and `%`.
        (
            ["demo", "--green-error-rate", "-5%"],
            "invalid value '-5%' for '--green-error-rate <GREEN_ERROR_RATE>': `-5%` is negative: a rate cannot be negative",
        ),
    ] {
        let out = run_to_end(&args, Duration::from_secs(20)).await;
        assert_eq!(out.code, Some(2), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(wanted), "{args:?}: {}", out.stderr);
        assert!(!out.stderr.contains("unexpected argument"), "{args:?}: {}", out.stderr);
    }
}

#[tokio::test]
async fn demo_settings_errors_name_the_flags() {
    for (args, wanted) in [
        (
            ["demo", "--steps", "50,10,100"],
            "--steps[1]: 10% is not above the previous step (50%)",
        ),
        (
            ["demo", "--hold", "0s"],
            "--hold: 0s is below the minimum of 10ms",
        ),
        // Session 44: was told of rollout.progress_deadline, which the demo has no flag for.
        (
            ["demo", "--hold", "1y"],
            "leaves no time to finish a step within the demo's progress deadline (2m): give a shorter --hold",
        ),
        // Session 43: a 0% step was told to set rollout.analysis.shadow, a spec field the demo
        // has no flag for.
        (
            ["demo", "--steps", "0,100"],
            "--steps[0]: 0% sends v2 no traffic to analyse, and the demo has no shadow step",
        ),
        (
            ["demo", "--steps", "10,0,100"],
            "--steps[1]: 0% sends v2 no traffic to analyse, and the demo has no shadow step (a 0% step judged on mirrored requests, which takes a spec and `crossfade run`): give every step above 0%, e.g. --steps 5,25,50,100",
        ),
        // Trial 18, T18: settings whose load cannot decide a step ran the whole demo and rolled
        // a healthy v2 back as inconclusive (exit 3); refused before anything starts.
        (
            ["demo", "--hold", "10ms"],
            "--rate: 300 requests per second × 5% (--steps[0]) × 10ms (--hold) sends v2 about",
        ),
    ] {
        let out = run_to_end(&args, Duration::from_secs(20)).await;
        // Trial 20: a usage error exits 2 whichever check finds it (these exited 1, clap's 2).
        assert_eq!(out.code, Some(2), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(wanted), "{args:?}: {}", out.stderr);
        assert!(!out.stderr.contains("rollout."), "{args:?}: {}", out.stderr);
    }
}

/// User37: `--listen` and `--admin` on one port were refused in the spec's words (`admin:
/// 127.0.0.1:24200 is also the listen address`); they are named by their flags, as every other
/// demo setting is.
#[tokio::test]
async fn demo_listen_and_admin_on_one_port_are_named_by_their_flags() {
    let port = crate::support::free_addr().port();
    let loopback = format!("127.0.0.1:{port}");
    let every = format!("0.0.0.0:{port}");
    for (listen, admin, wanted) in [
        (
            &loopback,
            &loopback,
            format!("--admin: {loopback} is also the --listen address"),
        ),
        (
            &every,
            &loopback,
            format!(
                "--admin: {loopback} shares port {port} with --listen {every}, and --listen \
                 {every} takes that port on every address: give --admin another port"
            ),
        ),
    ] {
        let args = ["demo", "--listen", listen, "--admin", admin];
        let out = run_to_end(args, Duration::from_secs(20)).await;
        assert_eq!(out.code, Some(2), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(&wanted), "{args:?}: {}", out.stderr);
    }
}

/// Trial 19 left: `--green-latency-ms 1000000000000` (30 years) ran the whole demo; `--steps ""`
/// and `1e400` as a step exited 1 where other bad flag values exit 2, and `1e400` was echoed as
/// `inf`.
#[tokio::test]
async fn demo_flag_values_out_of_bounds_are_usage_errors_that_echo_the_value() {
    for (args, wanted) in [
        (
            ["demo", "--green-latency-ms", "1000000000000"],
            "invalid value '1000000000000' for '--green-latency-ms <GREEN_LATENCY_MS>': 1000000000000 is outside 0 to 60000, the range this flag takes",
        ),
        (
            ["demo", "--steps", ""],
            "--steps[0]: \"\" is not a percentage",
        ),
        (
            ["demo", "--steps", "1e400"],
            "--steps[0]: \"1e400\" is not a percentage between 0 and 100",
        ),
    ] {
        let out = run_to_end(&args, Duration::from_secs(20)).await;
        assert_eq!(out.code, Some(2), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(wanted), "{args:?}: {}", out.stderr);
    }
}

/// Runs `crossfade ARGS` to its end (at most 40 s) with `stdout` as its standard output and its
/// stderr a pipe, closed at once when `close_stderr` (the reader of `crossfade demo 2>&1 | head -1`
/// gone).
async fn run_with<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(
    args: &[S],
    stdout: std::process::Stdio,
    close_stderr: bool,
) -> std::process::Output {
    let mut child = tokio::process::Command::new(crate::support::BIN)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(stdout)
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start crossfade");
    if close_stderr {
        drop(child.stderr.take());
    }
    tokio::time::timeout(Duration::from_secs(40), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("crossfade {args:?} still running after 40s"))
        .expect("wait for crossfade")
}

/// Runs `crossfade ARGS` with its stderr a pipe whose reader has already gone; its exit code and
/// stdout.
async fn run_with_stderr_closed(args: &[&str]) -> (Option<i32>, String) {
    let output = run_with(args, std::process::Stdio::piped(), true).await;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    (output.status.code(), stdout)
}

/// Trial 22: a closed stderr (the reader of `crossfade demo 2>&1 | head` gone) made the demo's
/// event lines, and any command's error line, panic: exit code 101 instead of the command's own.
#[tokio::test]
async fn a_closed_stderr_leaves_every_command_its_own_exit_code() {
    let (code, stdout) =
        run_with_stderr_closed(&["demo", "--hold", "1s", "--rate", "200", "--steps", "100"]).await;
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("Rollout Completed"), "{stdout}");
    let (_held, nobody) = crate::support::refused_addr();
    let nobody = nobody.to_string();
    let (code, stdout) = run_with_stderr_closed(&["status", "--admin", &nobody]).await;
    assert_eq!(code, Some(1), "cannot reach the admin API: {stdout}");
}

/// Runs `crossfade ARGS` with its stdout `/dev/full` (a disk with no space left); its exit code
/// and stderr.
async fn run_with_stdout_full(args: &[&std::ffi::OsStr]) -> (Option<i32>, String) {
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("open /dev/full");
    let output = run_with(args, full.into(), false).await;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.code(), stderr)
}

/// Trial 30: `crossfade check spec.yaml > /dev/full` exited 0 with nothing written, so a script
/// saving the check's output (or `crdgen > crd.yaml` on a full disk) took an empty file for a
/// success. Every command that writes stdout now fails naming the cause; a closed pipe
/// (`| head`) still does not (the test above's family).
#[tokio::test]
async fn a_command_whose_stdout_cannot_be_written_fails_saying_so() {
    let dir = crate::support::temp_dir();
    let spec = crate::support::Spec::new().write(dir.path(), "spec.json");
    for args in [
        vec![std::ffi::OsStr::new("check"), spec.as_os_str()],
        vec![std::ffi::OsStr::new("crdgen")],
        vec![std::ffi::OsStr::new("--help")],
        vec![std::ffi::OsStr::new("--version")],
    ] {
        let (code, stderr) = run_with_stdout_full(&args).await;
        assert_eq!(code, Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("crossfade: cannot write to standard output: No space left on device"),
            "{args:?}: {stderr}"
        );
    }
    // A usage error keeps its own exit code and message.
    let (code, stderr) = run_with_stdout_full(&[std::ffi::OsStr::new("check")]).await;
    assert_eq!(code, Some(2), "{stderr}");
}

/// Session 42: a demo whose rollout rolled back, its summary written to a full disk, exited 3
/// without a word about the summary it lost. It keeps its 3 (the rollout did not complete) and
/// says on stderr that stdout could not be written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_demo_whose_summary_cannot_be_written_keeps_exit_3_and_says_so() {
    let args = [
        "demo",
        "--hold",
        "1s",
        "--steps",
        "100",
        "--rate",
        "200",
        "--green-error-rate",
        "50%",
    ];
    let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    let (code, stderr) = run_with_stdout_full(&args).await;
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("RolledBack"), "{stderr}");
    assert!(
        stderr.contains("crossfade: cannot write to standard output: No space left on device"),
        "{stderr}"
    );
}

/// Session 42: `crossfade crdgen >&-` (stdout closed) exited 0 with nothing written: std's
/// runtime puts `/dev/null` on a closed stdout. A command that prints to a closed stdout now fails
/// as one that prints to a full disk does; `>/dev/null` still succeeds, and since session 43
/// `1<>/dev/null` too.
#[tokio::test]
async fn a_command_whose_stdout_is_closed_fails_saying_so() {
    let closed = |args: &str, redirect: &str| {
        let script = format!("exec \"$0\" {args} {redirect}");
        let output = std::process::Command::new("sh")
            .args(["-c", &script, crate::support::BIN])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run sh");
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        (output.status.code(), stderr)
    };
    for args in ["crdgen", "--help", "sample-app --help"] {
        let (code, stderr) = closed(args, ">&-");
        assert_eq!(code, Some(1), "{args} >&-: {stderr}");
        assert!(
            stderr.contains("crossfade: cannot write to standard output: it was closed"),
            "{args} >&-: {stderr}"
        );
        let (code, stderr) = closed(args, ">/dev/null");
        assert_eq!(code, Some(0), "{args} >/dev/null: {stderr}");
        // Session 43: a /dev/null given read-write is a discarded output too; it was taken for
        // std's runtime's on a closed stdout, and the command exited 1.
        let (code, stderr) = closed(args, "1<>/dev/null");
        assert_eq!(code, Some(0), "{args} 1<>/dev/null: {stderr}");
        // ... and when stderr is one too (daemon(3)), as it was before.
        let (code, stderr) = closed(args, "1<>/dev/null 2<>/dev/null");
        assert_eq!(code, Some(0), "{args} 1<>/dev/null 2<>/dev/null: {stderr}");
        // A read-only stdout takes no write either.
        let (code, stderr) = closed(args, "1</dev/null");
        assert_eq!(code, Some(1), "{args} 1</dev/null: {stderr}");
        assert!(
            stderr.contains("cannot write to standard output: it was closed"),
            "{args} 1</dev/null: {stderr}"
        );
    }
}

/// Trial 32 (newuser32, F): `crossfade demo` killed with SIGKILL (which it cannot catch) left
/// its two sample apps running for good, listening, with nothing to stop them. They now watch
/// their parent (`sample-app --exit-with-parent`) and exit when it is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demo_killed_with_sigkill_leaves_no_sample_app_running() {
    use crate::support::child::children_of;
    use crate::support::{pid_alive, wait_gone, wait_until};

    let mut child = tokio::process::Command::new(crate::support::BIN)
        .args(["demo", "--hold", "30s", "--rate", "50"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start crossfade demo");
    let demo = child.id().expect("demo pid");
    let apps = wait_until(Duration::from_secs(30), "both sample apps", || async {
        let apps = children_of(demo);
        (apps.len() >= 2).then_some(apps)
    })
    .await;
    child.start_kill().expect("SIGKILL the demo");
    let _ = child.wait().await;
    assert!(!pid_alive(demo));
    wait_gone(&apps, Duration::from_secs(5)).await;
}

/// Starts `crossfade demo ARGS` (stderr read), sends it `signal` once its stderr has shown
/// `moment`, and requires that it exits 3 saying it was interrupted, its sample apps gone;
/// returns what it wrote on stderr after the signal.
async fn interrupt_demo_at(
    args: &[&str],
    moment: &str,
    signal: nix::sys::signal::Signal,
) -> String {
    use nix::sys::signal::kill;
    use nix::unistd::Pid;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

    use crate::support::child::children_of;
    use crate::support::wait_gone;

    let mut child = tokio::process::Command::new(crate::support::BIN)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start crossfade demo");
    let demo = child.id().expect("demo pid");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut seen = String::new();
    let reached = tokio::time::timeout(Duration::from_secs(30), async {
        while stderr.read_line(&mut seen).await.expect("read stderr") > 0 {
            if seen.contains(moment) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(reached, Ok(true), "{signal} at {moment:?}: {seen}");
    let apps = children_of(demo);
    kill(Pid::from_raw(demo as i32), signal).expect("signal the demo");
    let rest = tokio::time::timeout(Duration::from_secs(30), async {
        let mut rest = String::new();
        let _ = stderr.read_to_string(&mut rest).await;
        (rest, child.wait().await.expect("wait for the demo"))
    })
    .await;
    let (rest, status) =
        rest.unwrap_or_else(|_| panic!("{signal} at {moment:?}: the demo did not exit"));
    assert_eq!(
        status.code(),
        Some(3),
        "{signal} at {moment:?}: {seen}{rest}"
    );
    assert!(
        rest.contains("crossfade demo: interrupted before the rollout ended"),
        "{signal} at {moment:?}: {rest}"
    );
    wait_gone(&apps, Duration::from_secs(5)).await;
    rest
}

/// Session 40: `crossfade demo` stopped by Ctrl-C (SIGINT) or SIGTERM mid-rollout exited 130,
/// a code its README did not list. It exits 3, as `run --exit-after-rollout` does for a rollout a
/// signal stopped (the rollout did not complete), after stopping v1 and v2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demo_stopped_by_sigint_or_sigterm_exits_3_with_its_apps_stopped() {
    use nix::sys::signal::Signal;
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // The demo prints the rollout's events on stderr (not a terminal) once it watches the
        // rollout.
        let args = ["demo", "--hold", "30s", "--rate", "50"];
        interrupt_demo_at(&args, "Provisioning", signal).await;
    }
}

/// Session 42: a Ctrl-C between v1's start and the rollout's start (the demo's first half
/// second of load) was lost: the demo rolled out to its end and exited 0. One while v1 started
/// exited 1. Both now stop the demo with 3, its processes stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demo_interrupted_before_its_rollout_started_exits_3_with_its_apps_stopped() {
    // The log line after which each signal is sent: v1's process started (v1 not ready yet),
    // and v1 ready (the rollout not started yet).
    for moment in ["started ", "workload ready workload=v1"] {
        let args = ["--log", "info", "demo", "--hold", "30s", "--rate", "50"];
        let rest = interrupt_demo_at(&args, moment, nix::sys::signal::Signal::SIGINT).await;
        assert!(!rest.contains("Completed"), "{moment}: {rest}");
    }
}
