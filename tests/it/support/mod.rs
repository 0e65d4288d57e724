//! Helpers shared by every scenario: ports, temp dirs, specs, child processes, the admin API, load and
//! metrics. Each scenario uses real sockets on 127.0.0.1 and real `crossfade` child processes.
//!
//! # Layout
//! - [`spec`]: [`Spec`] and [`App`], a `crossfade run` spec built as JSON (valid YAML) that tests can
//!   tweak field by field, plus [`proxy_config`] for `crossfade proxy`.
//! - [`child`]: [`Crossfade`], a running `crossfade` child process (stderr to a file, stopped on drop),
//!   and [`run_to_end`] for commands that end by themselves.
//! - [`admin`]: [`Admin`], a small JSON client of the admin API, and [`Metrics`], a parsed `/metrics`.
//! - [`load`]: [`Load`], keep-alive HTTP/1.1 and HTTP/2 load that counts answers by `X-Version`.
//! - [`trace`]: [`Trace`], load that records every request (times, pool, instance) for timing and
//!   per-instance checks, and [`trace::burst`] for a fixed number of requests.
//! - [`raw`]: [`RawConn`], byte-exact HTTP/1.x over a `TcpStream` (HTTP/1.0 clients, hop-by-hop headers).
//! - [`sample`]: [`SampleApp`], `crossfade sample-app` children as static backends.
//! - [`proxy`]: [`RunningProxy`], a ready `crossfade proxy` child and its admin API.
//! - [`poll`]: [`Poller`], an admin endpoint polled in the background, every answer timestamped.
//! - [`webhook`]: [`webhook::WebhookServer`], a local HTTP server standing in for webhook gates,
//!   a Prometheus query API or a KPI endpoint: answers as the test says, records every request.
//! - [`ws`]: [`ws::Session`], a WebSocket session on the sample app's `/ws` echo, one numbered
//!   message per second, recording replies and how it ended.
//! - this file: free ports, temp dirs, [`wait_until`], process liveness, [`processes_with_arg`],
//!   and the rule for tests that need a real tool ([`have_tool`], [`missing_tool`]).

#![allow(dead_code, unused_imports)] // Not every scenario uses every helper or re-export.

pub mod admin;
pub mod child;
pub mod load;
pub mod poll;
pub mod proxy;
pub mod raw;
pub mod sample;
pub mod spec;
pub mod trace;
pub mod webhook;
pub mod ws;

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

pub use admin::{Admin, Metrics};
pub use child::{run_to_end, run_to_end_in, run_to_end_with, Crossfade, Finished};
pub use load::{Load, LoadConfig, LoadReport};
pub use poll::Poller;
pub use proxy::RunningProxy;
pub use raw::RawConn;
pub use sample::SampleApp;
pub use spec::{proxy_config, App, Spec};
pub use trace::{Trace, TraceConfig};

/// The `crossfade` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_crossfade");

/// An address on 127.0.0.1 where a connect is refused for as long as the returned socket lives:
/// bound, never listening. Unlike a [`free_addr`] nobody listens on, no other test can bind its
/// port meanwhile, and no connect to it can get it as its own source port (Linux's TCP
/// simultaneous open then connects a socket to itself, and the "refused" address answers): a
/// rollout whose green endpoint was such an address once passed its readiness probe (CI
/// rehearsal of 02693663).
pub fn refused_addr() -> (tokio::net::TcpSocket, SocketAddr) {
    let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
    socket
        .bind((Ipv4Addr::LOCALHOST, 0).into())
        .expect("bind 127.0.0.1:0");
    let addr = socket.local_addr().expect("local address");
    (socket, addr)
}

/// Whether a test whose real tool (curl, h2load, wrk, haproxy, chromium, git, the kmock venv) is
/// missing must fail rather than skip: when `CROSSFADE_REQUIRE_TOOLS` is set to anything but
/// empty or `0` (scripts/test.sh, the README's test command that CI runs, exports it after
/// installing every tool), or when `CI` is `true`. Elsewhere such a test says loudly that it was
/// skipped and passes, so a bare `cargo test` works on a machine that never ran scripts/test.sh
/// (session 44: the rule was `CI=true` alone, which scripts/test.sh did not set).
pub fn tools_required() -> bool {
    let required =
        std::env::var("CROSSFADE_REQUIRE_TOOLS").is_ok_and(|v| !v.is_empty() && v != "0");
    required || std::env::var("CI").as_deref() == Ok("true")
}

/// Reports that `test` cannot run because of `hint` (what is missing and how to get it).
///
/// # Panics
/// With `hint` when tools are required ([`tools_required`]); otherwise prints a loud `SKIPPED`
/// line and returns, and the caller skips.
pub fn missing_tool(test: &str, hint: &str) {
    assert!(
        !tools_required(),
        "{test}: {hint} (required: CROSSFADE_REQUIRE_TOOLS or CI=true is set)"
    );
    eprintln!("\n!!!!! {test}: SKIPPED: {hint} !!!!!\n");
}

/// Whether `tool --version` runs; when it does not, [`missing_tool`] with a hint naming the
/// Debian `package` that scripts/test.sh installs (so: false, or a panic when tools are required).
pub fn have_tool(test: &str, tool: &str, package: &str) -> bool {
    if std::process::Command::new(tool)
        .arg("--version")
        .output()
        .is_ok()
    {
        return true;
    }
    let hint =
        format!("{tool} is not installed (Debian package {package}; scripts/test.sh installs it)");
    missing_tool(test, &hint);
    false
}

/// A free TCP address on 127.0.0.1: bind port 0, read the port, release it. Another process could take
/// it before the test binds it again; on a test machine that is rare enough, and never a fixed port.
///
/// The kernel may hand the same port to two binds that follow each other once the first is
/// closed, so a test asking for a listen and an admin address could get one port twice: each port
/// is handed out once per test binary.
pub fn free_addr() -> SocketAddr {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let listener =
            std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let mut given = GIVEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if given.insert(addr.port()) {
            return addr;
        }
    }
}

/// A fresh temporary directory, removed when dropped.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("crossfade-it-")
        .tempdir()
        .expect("create a temp dir")
}

/// Polls `check` every 50 ms until it returns `Some`, and returns that value.
///
/// # Panics
/// After `timeout`, naming `what` was waited for.
pub async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether process `pid` exists and is not a zombie (a killed orphan may stay a zombie in a container
/// whose init does not reap: for a test it is gone); the controller's own check
/// (`children::pid_running`).
pub fn pid_alive(pid: u32) -> bool {
    crossfade_controller::driver::children::pid_running(pid)
}

/// Waits until every pid in `pids` is gone.
///
/// # Panics
/// When one is still alive after `timeout`.
pub async fn wait_gone(pids: &[u32], timeout: Duration) {
    let what = format!("processes {pids:?} to exit");
    wait_until(timeout, &what, || async {
        pids.iter().all(|&p| !pid_alive(p)).then_some(())
    })
    .await;
}

/// Reads a JSON file (the state file).
///
/// # Panics
/// When it cannot be read or parsed.
pub fn read_json(path: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// The pids in a JSON array field such as the state file's `active_pids`.
pub fn pids_of(value: &serde_json::Value) -> Vec<u32> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p.as_u64())
                .map(|p| p as u32)
                .collect()
        })
        .unwrap_or_default()
}

/// Pids of live processes whose command line holds `needle` as one argument (a unique version name,
/// so that other tests' sample apps never match).
pub fn processes_with_arg(needle: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|&b| b == 0).any(|arg| arg == needle.as_bytes()))
        })
        .filter(|&pid| pid_alive(pid))
        .collect()
}
