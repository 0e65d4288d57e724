//! Which build and which process serves (trial finding H13): `crossfade_build_info` and the
//! `process_*` metrics on `/metrics`, `version`, `commit` and `pid` in `/status`, `version` and
//! `pid` in the startup log line,
//! and `crossfade proxy --pid-file`, which names the successor after a SIGUSR2 upgrade.

use std::ffi::OsStr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;

use crate::support::spec::{addr, write_json};
use crate::support::{
    pid_alive, proxy_config, temp_dir, wait_gone, wait_until, Admin, Crossfade, SampleApp,
};

/// Every wait here: generous, since the tests share two cores with the rest of the suite.
const LIMIT: Duration = Duration::from_secs(20);

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The process ID in the pid file at `path`, once it is there.
async fn pid_in(path: &Path, what: &str) -> u32 {
    wait_until(LIMIT, what, || async {
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    })
    .await
}

/// The commit `crossfade --version` names (`crossfade 0.1.0 (74414d6)`), as `/status` and
/// `crossfade_build_info` name it: `74414d6`, `74414d6-dirty`, or `unknown`.
async fn built_commit() -> String {
    let out = crate::support::child::run_to_end(["--version"], LIMIT).await;
    let line = out.stdout.trim_end();
    let commit = line
        .strip_prefix(&format!("crossfade {VERSION} ("))
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not `crossfade {VERSION} (<commit>)`: {line:?}"));
    match commit {
        "unknown commit" => "unknown".to_owned(),
        commit => commit.to_owned(),
    }
}

/// Kills the SIGUSR2 successor (not a child of the test) when dropped, should an assertion fail.
struct Reap(u32);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0 as i32), Signal::SIGKILL);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_tells_its_version_and_pid_in_metrics_status_log_and_pid_file() {
    let dir = temp_dir();
    let blue = SampleApp::start(dir.path(), "v1", "v1", &[]).await;
    let json = proxy_config(&[blue.addr], &[]);
    let config = write_json(dir.path(), "proxy.yaml", &json);
    let pid_file = dir.path().join("run").join("proxy.pid");
    std::fs::create_dir(dir.path().join("run")).unwrap();
    let args = [
        OsStr::new("proxy"),
        config.as_os_str(),
        OsStr::new("--pid-file"),
        pid_file.as_os_str(),
    ];
    let mut proxy = Crossfade::spawn(dir.path(), "proxy.log", args);
    let admin = Admin::new(addr(&json["admin"]));
    proxy.wait_ready(&admin, LIMIT).await;
    let pid = proxy.pid();
    assert_eq!(pid_in(&pid_file, "the pid file").await, pid);

    let status = admin.status().await;
    assert_eq!(status["version"], json!(VERSION), "{status}");
    assert_eq!(status["pid"], json!(pid), "{status}");
    // The commit too, as `--version` names it: two builds of one version told apart.
    let commit = built_commit().await;
    assert_eq!(status["commit"], json!(commit), "{status}");

    let metrics = admin.metrics().await;
    let labels = [("version", VERSION), ("revision", commit.as_str())];
    let build = metrics.get("crossfade_build_info", &labels);
    assert_eq!(build, Some(1.0), "{:?}", metrics.samples);
    let value = |name: &str| {
        metrics
            .get(name, &[])
            .unwrap_or_else(|| panic!("{name} missing"))
    };
    assert!(value("process_resident_memory_bytes") > 0.0);
    assert!(value("process_cpu_seconds_total") >= 0.0);
    let open = value("process_open_fds");
    assert!(open >= 1.0 && open <= value("process_max_fds"), "{open}");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = value("process_start_time_seconds");
    assert!(
        started <= now + 1.0 && started > now - 3600.0,
        "{started} vs {now}"
    );

    let serving = wait_until(LIMIT, "the serving log line", || async {
        proxy
            .log()
            .lines()
            .find(|l| l.contains("proxy serving"))
            .map(str::to_owned)
    })
    .await;
    assert!(
        serving.contains(&format!("version=\"{VERSION}\"")),
        "{serving}"
    );
    assert!(serving.contains(&format!("pid={pid}")), "{serving}");

    let exit = proxy.terminate(LIMIT).await;
    assert!(exit.success(), "{exit}");
    assert!(!pid_file.exists(), "the pid file is removed on exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_sigusr2_the_pid_file_names_the_successor_and_the_old_process_is_gone() {
    let dir = temp_dir();
    let blue = SampleApp::start(dir.path(), "v1", "v1", &[]).await;
    let mut json = proxy_config(&[blue.addr], &[]);
    json["drain_timeout"] = json!("2s");
    let config = write_json(dir.path(), "proxy.yaml", &json);
    let socket = dir.path().join("upgrade.sock");
    let pid_file = dir.path().join("proxy.pid");
    let args = [
        OsStr::new("proxy"),
        config.as_os_str(),
        OsStr::new("--upgrade-socket"),
        socket.as_os_str(),
        OsStr::new("--pid-file"),
        pid_file.as_os_str(),
    ];
    let mut old = Crossfade::spawn(dir.path(), "proxy.log", args);
    let admin = Admin::new(addr(&json["admin"]));
    old.wait_ready(&admin, LIMIT).await;
    let old_pid = old.pid();
    assert_eq!(pid_in(&pid_file, "the first pid file").await, old_pid);
    wait_until(LIMIT, "the upgrade socket", || async {
        socket.exists().then_some(())
    })
    .await;

    kill(Pid::from_raw(old_pid as i32), Signal::SIGUSR2).expect("SIGUSR2");
    // The successor's ID from the old process's log (with nothing in flight the old process may
    // exit before the successor could be found among its children).
    let started = wait_until(LIMIT, "the successor's start", || async {
        let log = old.log();
        let line = log.lines().find(|l| l.contains("SIGUSR2: started"))?;
        line.rsplit_once("pid=")?.1.trim().parse::<u32>().ok()
    })
    .await;
    let _reap = Reap(started);
    let exit = old.wait_exit(LIMIT).await;
    assert!(exit.success(), "{exit}\n{}", old.log());
    assert!(!pid_alive(old_pid));
    // The successor wrote the file once the old process confirmed that it drains, and the old one
    // waits for the successor's word that it did before it exits, so the file is there now.
    let held = std::fs::read_to_string(&pid_file).expect("the pid file stays");
    assert_eq!(held, format!("{started}\n"));
    let new_pid = started;
    assert!(pid_alive(new_pid), "the successor serves");
    let status = admin.status().await;
    assert_eq!(status["pid"], json!(new_pid), "{status}");
    assert_eq!(status["version"], json!(VERSION), "{status}");

    // The successor removes the file it holds when it stops.
    kill(Pid::from_raw(new_pid as i32), Signal::SIGTERM).expect("SIGTERM");
    wait_gone(&[new_pid], LIMIT).await;
    wait_until(LIMIT, "the pid file removed", || async {
        (!pid_file.exists()).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pid_file_in_a_missing_directory_is_refused_naming_the_flag() {
    let dir = temp_dir();
    let json = proxy_config(&["127.0.0.1:9".parse().unwrap()], &[]);
    let config = write_json(dir.path(), "proxy.yaml", &json);
    let pid_file = dir.path().join("nodir").join("proxy.pid");
    let args = [
        OsStr::new("proxy"),
        config.as_os_str(),
        OsStr::new("--pid-file"),
        pid_file.as_os_str(),
    ];
    let out = crate::support::child::run_to_end(args, LIMIT).await;
    // A usage error, as `report -o spec.yaml` is (user44b, session 44).
    assert_eq!(out.code, Some(2), "{out:?}");
    let named = format!(
        "--pid-file {}: directory {} does not exist",
        pid_file.display(),
        dir.path().join("nodir").display()
    );
    assert!(out.stderr.contains(&named), "{}", out.stderr);
    assert!(!out.stderr.contains("proxy serving"), "{}", out.stderr);
    // Trial 25: `proxy.pid/` passed the check and failed at the write, once serving.
    let pid_file = dir.path().join("proxy.pid/");
    let args = [
        OsStr::new("proxy"),
        config.as_os_str(),
        OsStr::new("--pid-file"),
        pid_file.as_os_str(),
    ];
    let out = crate::support::child::run_to_end(args, LIMIT).await;
    assert_eq!(out.code, Some(2), "{out:?}");
    let named = format!(
        "--pid-file {}: names a directory, not a file",
        pid_file.display()
    );
    assert!(out.stderr.contains(&named), "{}", out.stderr);
    assert!(!out.stderr.contains("proxy serving"), "{}", out.stderr);
}

/// Trial 10, K6: `crossfade --version` names the commit it was built from, so that two builds of
/// one package version can be told apart: `crossfade 0.1.0 (74414d6)`, with `-dirty` when the
/// sources differ from the commit; `(unknown commit)` from a build without git.
#[tokio::test]
async fn crossfade_version_names_the_commit_it_was_built_from() {
    let out = crate::support::child::run_to_end(["--version"], LIMIT).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let line = out.stdout.trim_end();
    let commit = line
        .strip_prefix(&format!("crossfade {VERSION} ("))
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not `crossfade {VERSION} (<commit>)`: {line:?}"));
    // The commit git names now: the build script asked the same git when cargo built the
    // binary for this test (it runs again whenever HEAD or the branch moves).
    let head = std::process::Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short=7",
            "HEAD",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    match head {
        Some(head) => assert!(
            commit == head || commit == format!("{head}-dirty"),
            "{line:?}, HEAD is {head}"
        ),
        None => assert_eq!(commit, "unknown commit", "{line:?}"),
    }
}

/// With port 0 in the config (any free port), the start line named `listen=127.0.0.1:0` and
/// `admin=127.0.0.1:0`: the operator had no way to find the ports. It names the bound ones.
#[tokio::test]
async fn the_start_line_names_the_ports_bound_for_port_0() {
    let dir = temp_dir();
    let blue = SampleApp::start(dir.path(), "v1", "v1", &[]).await;
    let mut json = proxy_config(&[blue.addr], &[]);
    json["listen"] = json!("127.0.0.1:0");
    json["admin"] = json!("127.0.0.1:0");
    let config = write_json(dir.path(), "proxy.yaml", &json);
    let mut proxy = Crossfade::spawn(
        dir.path(),
        "proxy.log",
        [OsStr::new("proxy"), config.as_os_str()],
    );
    let serving = wait_until(LIMIT, "the serving log line", || async {
        proxy
            .log()
            .lines()
            .find(|l| l.contains("proxy serving"))
            .map(str::to_owned)
    })
    .await;
    let bound = |key: &str| -> std::net::SocketAddr {
        let word = serving
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in {serving}"));
        word.parse().unwrap_or_else(|e| panic!("{word}: {e}"))
    };
    let (listen, admin) = (bound("listen="), bound("admin="));
    assert_ne!(listen.port(), 0, "{serving}");
    assert_ne!(admin.port(), 0, "{serving}");
    let status = Admin::new(admin).get("/status").await;
    assert_eq!(status["routes"][0]["name"], "web", "{status}");
    tokio::net::TcpStream::connect(listen)
        .await
        .unwrap_or_else(|e| panic!("connect to {listen}: {e}"));
    let exit = proxy.terminate(LIMIT).await;
    assert!(exit.success(), "{exit}");
}
