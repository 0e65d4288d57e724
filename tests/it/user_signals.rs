//! SIGUSR1 and SIGUSR2, whose default action ends a process at once (no drain, workloads left
//! orphaned), are caught by every long-running command: where they mean nothing each one is logged
//! as ignored, with why, and the process keeps serving (trial 8).

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;

use crate::support::child::children_of;
use crate::support::spec::write_json;
use crate::support::{
    pid_alive, proxy_config, temp_dir, wait_until, Admin, App, Crossfade, RawConn, SampleApp, Spec,
};

const PATIENCE: Duration = Duration::from_secs(30);

/// Sends SIGUSR1 then SIGUSR2 to `process` and waits until its log tells both were ignored;
/// returns the log. The process must have installed its handlers (e.g. be ready).
pub(crate) async fn send_user_signals(process: &Crossfade) -> String {
    let pid = Pid::from_raw(process.pid() as i32);
    kill(pid, Signal::SIGUSR1).expect("SIGUSR1");
    wait_until(PATIENCE, "SIGUSR1 to be logged", || {
        let log = process.log();
        async move { log.contains("SIGUSR1 ignored").then_some(()) }
    })
    .await;
    kill(pid, Signal::SIGUSR2).expect("SIGUSR2");
    wait_until(PATIENCE, "SIGUSR2 to be logged", || {
        let log = process.log();
        async move { log.contains("SIGUSR2 ignored").then_some(log) }
    })
    .await
}

/// One `GET /` through `listen`; its status.
async fn get_status(listen: std::net::SocketAddr) -> u16 {
    let mut conn = RawConn::connect(listen).await;
    conn.send(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await;
    conn.read_response().await.status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr1_and_sigusr2_leave_a_proxy_without_upgrade_socket_serving() {
    let dir = temp_dir();
    let blue = SampleApp::start(dir.path(), "blue", "blue-0", &[]).await;
    let config = proxy_config(&[blue.addr], &[]);
    let path = write_json(dir.path(), "proxy.yaml", &config);
    let admin = Admin::new(config["admin"].as_str().unwrap().parse().unwrap());
    let mut proxy = Crossfade::proxy(dir.path(), &path);
    proxy.wait_ready(&admin, PATIENCE).await;

    let log = send_user_signals(&proxy).await;
    assert!(
        log.contains("SIGUSR2 ignored: binary upgrade needs --upgrade-socket"),
        "{log}"
    );
    assert!(proxy.try_exit().is_none(), "the proxy exited: {log}");
    let listen = config["listen"].as_str().unwrap().parse().unwrap();
    assert_eq!(get_status(listen).await, 200);
    let status = proxy.terminate(PATIENCE).await;
    assert!(status.success(), "{status}: {}", proxy.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr1_and_sigusr2_leave_crossfade_run_and_its_workloads_running() {
    let dir = temp_dir();
    let app = App::version("v1").set(
        "readiness",
        json!({ "interval": "50ms", "deadline": format!("{}s", PATIENCE.as_secs()) }),
    );
    let spec = Spec::new().blue(app);
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, PATIENCE).await;
    let workloads = children_of(run.pid());
    assert!(
        !workloads.is_empty(),
        "no workload process under crossfade run"
    );

    let log = send_user_signals(&run).await;
    assert!(run.try_exit().is_none(), "crossfade run exited: {log}");
    for pid in &workloads {
        assert!(pid_alive(*pid), "workload {pid} is gone: {log}");
    }
    assert_eq!(get_status(spec.listen()).await, 200);
    let status = run.terminate(PATIENCE).await;
    assert!(status.success(), "{status}: {}", run.log());
}

/// `crossfade proxy --upgrade-socket` has its own signal loop, where SIGUSR2 upgrades the binary
/// (tests/it/upgrade.rs); SIGUSR1 means nothing there either: logged as ignored, saying what
/// SIGUSR2 does, and the proxy keeps serving without starting a successor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr1_leaves_a_proxy_with_upgrade_socket_serving() {
    let dir = temp_dir();
    let blue = SampleApp::start(dir.path(), "blue", "blue-0", &[]).await;
    let config = proxy_config(&[blue.addr], &[]);
    let path = write_json(dir.path(), "proxy.yaml", &config);
    let socket = dir.path().join("upgrade.sock");
    let admin = Admin::new(config["admin"].as_str().unwrap().parse().unwrap());
    let args = [
        std::ffi::OsStr::new("proxy"),
        path.as_os_str(),
        std::ffi::OsStr::new("--upgrade-socket"),
        socket.as_os_str(),
    ];
    let mut proxy = Crossfade::spawn(dir.path(), "proxy.log", args);
    proxy.wait_ready(&admin, PATIENCE).await;

    kill(Pid::from_raw(proxy.pid() as i32), Signal::SIGUSR1).expect("SIGUSR1");
    let ignored = "SIGUSR1 ignored: crossfade gives it no meaning (SIGUSR2 upgrades)";
    let log = wait_until(PATIENCE, "SIGUSR1 to be logged", || {
        let log = proxy.log();
        async move { log.contains(ignored).then_some(log) }
    })
    .await;
    assert!(proxy.try_exit().is_none(), "the proxy exited: {log}");
    let listen = config["listen"].as_str().unwrap().parse().unwrap();
    assert_eq!(get_status(listen).await, 200);
    assert!(
        children_of(proxy.pid()).is_empty(),
        "no successor started: {log}"
    );
    let status = proxy.terminate(PATIENCE).await;
    assert!(status.success(), "{status}: {}", proxy.log());
}

/// Trial 13 N14: a second SIGTERM (or SIGINT, SIGHUP) during the proxy's drain was ignored
/// without a word. It is logged, saying that the drain goes on and how to stop at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_during_the_drain_is_logged_with_what_it_does() {
    let dir = temp_dir();
    let blue = SampleApp::start(dir.path(), "v1", "v1", &[]).await;
    let mut config = proxy_config(&[blue.addr], &[]);
    config["drain_timeout"] = json!("300s");
    let path = write_json(dir.path(), "proxy.yaml", &config);
    let admin = Admin::new(crate::support::spec::addr(&config["admin"]));
    let mut proxy = Crossfade::spawn(dir.path(), "proxy.log", ["proxy", path.to_str().unwrap()]);
    proxy.wait_ready(&admin, PATIENCE).await;
    // A request the drain waits for.
    let listen = crate::support::spec::addr(&config["listen"]);
    let mut slow = tokio::net::TcpStream::connect(listen).await.unwrap();
    let head = b"GET /slow?ms=300000 HTTP/1.1\r\nHost: web\r\n\r\n";
    tokio::io::AsyncWriteExt::write_all(&mut slow, head)
        .await
        .unwrap();
    wait_until(PATIENCE, "the slow request in flight", || async {
        let (_, metrics) = admin.get_text("/metrics").await.ok()?;
        metrics
            .contains("\ncrossfade_client_requests_in_flight 1\n")
            .then_some(())
    })
    .await;
    let pid = Pid::from_raw(proxy.pid() as i32);
    kill(pid, Signal::SIGTERM).expect("SIGTERM");
    wait_until(PATIENCE, "the drain", || async {
        proxy.log().contains("shutting down").then_some(())
    })
    .await;
    kill(pid, Signal::SIGTERM).expect("the second SIGTERM");
    let log = wait_until(PATIENCE, "the second SIGTERM's line", || async {
        let log = proxy.log();
        log.contains("SIGTERM ignored: already draining")
            .then_some(log)
    })
    .await;
    assert!(log.contains("SIGKILL stops the process at once"), "{log}");
    // Trial 17, T9: SIGUSR2 (an upgrade sent to a process that already drains, e.g. the old one
    // after a handover) was swallowed without a word.
    kill(pid, Signal::SIGUSR2).expect("SIGUSR2");
    wait_until(PATIENCE, "the SIGUSR2's line", || async {
        proxy
            .log()
            .contains("SIGUSR2 ignored: already draining")
            .then_some(())
    })
    .await;
    assert!(pid_alive(proxy.pid()), "it drains on");
    kill(pid, Signal::SIGKILL).expect("SIGKILL");
    proxy.wait_exit(PATIENCE).await;
}

/// Trial 25: `crossfade run` swallowed a second SIGTERM or Ctrl-C without a word while it
/// stopped (the drain, then each workload's `stop_grace`, which a workload deaf to SIGTERM takes
/// whole). It is logged, saying that the stop goes on and how to stop at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_while_crossfade_run_stops_is_logged_with_what_it_does() {
    let dir = temp_dir();
    // Ready through its sample-app; the shell around it ignores SIGTERM, so the stop waits for
    // the whole stop_grace before its SIGKILL.
    let script = format!(
        "trap '' TERM; {} sample-app --port {{port}} --version v1 & while :; do sleep 0.2; done",
        crate::support::BIN
    );
    let stubborn = json!({
        "name": "v1",
        "command": "sh",
        "args": ["-c", script],
        "readiness": { "interval": "50ms", "deadline": format!("{}s", PATIENCE.as_secs()) },
        "stop_grace": "300s",
    });
    let mut spec = Spec::new();
    spec.json["blue"] = stubborn;
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, PATIENCE).await;
    let workloads = children_of(run.pid());
    assert!(!workloads.is_empty(), "no workload under crossfade run");
    let pid = Pid::from_raw(run.pid() as i32);
    kill(pid, Signal::SIGTERM).expect("SIGTERM");
    wait_until(PATIENCE, "the stop", || async {
        run.log().contains("shutting down").then_some(())
    })
    .await;
    for (signal, name) in [(Signal::SIGINT, "SIGINT"), (Signal::SIGTERM, "SIGTERM")] {
        kill(pid, signal).expect(name);
        let said = format!("{name} ignored: already stopping");
        let log = wait_until(PATIENCE, "the signal's line", || async {
            let log = run.log();
            log.contains(&said).then_some(log)
        })
        .await;
        assert!(log.contains("SIGKILL stops crossfade at once"), "{log}");
    }
    assert!(pid_alive(run.pid()), "it stops on");
    kill(pid, Signal::SIGKILL).expect("SIGKILL");
    run.wait_exit(PATIENCE).await;
    // The deaf shell and what it runs: this test's to end.
    for workload in workloads {
        let _ = nix::sys::signal::killpg(Pid::from_raw(workload as i32), Signal::SIGKILL);
    }
}

/// Trial 25, the same while the active workload still starts: the signal cancels the start, which
/// stops what it started (each instance's stop_grace); a second one was swallowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_while_a_cancelled_start_stops_is_logged_with_what_it_does() {
    let dir = temp_dir();
    // Never ready (nothing listens on its port), deaf to SIGTERM.
    let stubborn = json!({
        "name": "v1",
        "command": "sh",
        "args": ["-c", "trap '' TERM; while :; do sleep 0.2; done # {port}"],
        "readiness": { "interval": "50ms", "deadline": "30m" },
        "stop_grace": "300s",
    });
    let mut spec = Spec::new();
    spec.json["blue"] = stubborn;
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    let started = wait_until(PATIENCE, "the workload started", || async {
        let pids = children_of(run.pid());
        (!pids.is_empty() && run.log().contains("started sh")).then_some(pids)
    })
    .await;
    let pid = Pid::from_raw(run.pid() as i32);
    kill(pid, Signal::SIGTERM).expect("SIGTERM");
    wait_until(PATIENCE, "the cancelled start", || async {
        run.log()
            .contains("signal received before the active workload was ready")
            .then_some(())
    })
    .await;
    kill(pid, Signal::SIGINT).expect("SIGINT");
    let log = wait_until(PATIENCE, "the SIGINT's line", || async {
        let log = run.log();
        log.contains("SIGINT ignored: already stopping the starting workload")
            .then_some(log)
    })
    .await;
    assert!(log.contains("SIGKILL stops crossfade at once"), "{log}");
    assert!(pid_alive(run.pid()), "it stops on");
    kill(pid, Signal::SIGKILL).expect("SIGKILL");
    run.wait_exit(PATIENCE).await;
    for workload in started {
        let _ = nix::sys::signal::killpg(Pid::from_raw(workload as i32), Signal::SIGKILL);
    }
}

/// newuser34 D: `crossfade run`'s drain on SIGTERM was the proxy's fixed 30 s, which no spec
/// could set (a 20 s request in flight was waited for with `rollout.drain_timeout: 8s`). The
/// spec's top-level `drain_timeout` is the proxy's: here 2 s cuts a 60 s request, and the run
/// exits well before the 30 s default would have let it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crossfade_runs_drain_on_sigterm_is_the_specs_drain_timeout() {
    let dir = temp_dir();
    let mut spec = Spec::new().blue(App::version("v1").set("stop_grace", json!("2s")));
    spec.json["drain_timeout"] = json!("2s");
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, PATIENCE).await;
    let mut slow = tokio::net::TcpStream::connect(spec.listen()).await.unwrap();
    let head = b"GET /slow?ms=60000 HTTP/1.1\r\nHost: web\r\n\r\n";
    tokio::io::AsyncWriteExt::write_all(&mut slow, head)
        .await
        .unwrap();
    wait_until(PATIENCE, "the slow request in flight", || async {
        let (_, metrics) = admin.get_text("/metrics").await.ok()?;
        metrics
            .contains("\ncrossfade_client_requests_in_flight 1\n")
            .then_some(())
    })
    .await;
    let signalled = tokio::time::Instant::now();
    kill(Pid::from_raw(run.pid() as i32), Signal::SIGTERM).expect("SIGTERM");
    let status = run.wait_exit(Duration::from_secs(60)).await;
    let took = signalled.elapsed();
    println!("DRAIN_TIMEOUT run exited {took:?} after SIGTERM");
    assert!(status.success(), "{status:?}\n{}", run.log());
    // 2 s of drain, then blue's stop (at most its 2 s stop_grace): far from the 30 s default.
    assert!(took < Duration::from_secs(20), "{took:?}\n{}", run.log());
    assert!(run.log().contains("drain timeout passed"), "{}", run.log());
}
