//! The Kubernetes API emulator: `tests/kube/kmock_server.py` (kmock 0.8, patched) started per test
//! on 127.0.0.1 port 0 and stopped on drop.
//!
//! The Python comes from `CROSSFADE_KMOCK_PYTHON` (set by `scripts/test.sh`, which creates the venv),
//! else `target/kmock-venv/bin/python` when a previous `scripts/test.sh` left it. Without either a
//! test is skipped with a loud message, except when tools are required (`CROSSFADE_REQUIRE_TOOLS`,
//! which `scripts/test.sh` sets, or `CI=true`: [`crate::support::tools_required`]), where it fails.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// How long the emulator may take to print `READY` (it takes about a second).
const STARTUP: Duration = Duration::from_secs(30);

/// A running emulator; killed when dropped.
pub struct Emulator {
    child: Child,
    /// Held open: the launcher exits when its stdin closes, so it dies with this test process.
    _stdin: ChildStdin,
    port: u16,
}

/// The launcher script in the repository.
pub fn launcher() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/kube/kmock_server.py")
}

/// The venv's Python, or `None` (after a loud message) when it is missing and tools are not
/// required.
///
/// # Panics
/// When no venv is found and tools are required (scripts/test.sh, `CI=true`:
/// [`crate::support::tools_required`]): CI must run the Kubernetes tests.
pub fn python() -> Option<PathBuf> {
    let from_env = std::env::var_os("CROSSFADE_KMOCK_PYTHON").map(PathBuf::from);
    let default = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/kmock-venv/bin/python");
    let found = from_env.or(Some(default)).filter(|p| p.exists());
    if found.is_none() {
        let hint = "no kmock venv: set CROSSFADE_KMOCK_PYTHON or run scripts/test.sh once \
                    (python3 -m venv target/kmock-venv && target/kmock-venv/bin/pip install kmock==0.8)";
        crate::support::missing_tool("Kubernetes emulator test", hint);
    }
    found
}

// === impl Emulator ===

impl Emulator {
    /// Starts an emulator, or returns `None` when the venv is missing and tools are not
    /// required (see [`python`]).
    ///
    /// # Panics
    /// When the launcher exits or stays silent instead of printing `READY <port>`; the message
    /// carries its stderr (e.g. `kmock hook missing: ...` after a kmock upgrade).
    pub fn start() -> Option<Emulator> {
        Emulator::start_with(&[])
    }

    /// As [`Emulator::start`] with more launcher arguments, e.g. `["--omit", RESOURCE]` for a
    /// cluster that does not serve a resource.
    pub fn start_with(args: &[&str]) -> Option<Emulator> {
        let python = python()?;
        let mut child = Command::new(&python)
            .arg(launcher())
            .args(["--port", "0", "--exit-on-stdin-eof"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", python.display()));
        let stderr = drain(child.stderr.take().expect("piped stderr"));
        let stdin = child.stdin.take().expect("piped stdin");
        let port = read_port(child.stdout.take().expect("piped stdout"));
        let Some(port) = port else {
            let _ = child.kill();
            let status = child.wait();
            let err = stderr.lock().map(|s| s.clone()).unwrap_or_default();
            panic!("kmock emulator did not start ({status:?}); stderr:\n{err}");
        };
        Some(Emulator {
            child,
            _stdin: stdin,
            port,
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A kubeconfig file for the emulator (context `emulator`, namespace `default`), written into
    /// `dir`, for the `crossfade` binary's `--kubeconfig`.
    pub fn kubeconfig(&self, dir: &std::path::Path) -> PathBuf {
        let path = dir.join("kubeconfig.yaml");
        let text = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: emulator\n\
             clusters: [{{ name: emulator, cluster: {{ server: \"{}\" }} }}]\n\
             users: [{{ name: emulator, user: {{}} }}]\n\
             contexts: [{{ name: emulator, context: {{ cluster: emulator, user: emulator, namespace: default }} }}]\n",
            self.url()
        );
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }

    /// A kube client for the emulator, default namespace `default`.
    pub fn client(&self) -> kube::Client {
        let url = self.url().parse().expect("valid url");
        kube::Client::try_from(kube::Config::new(url)).expect("kube client")
    }
}

impl Emulator {
    /// Kills the emulator now (its port then refuses connections): an API server gone.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The port from the first `READY <port> ...` line, or `None` on exit or after [`STARTUP`].
fn read_port(stdout: impl Read + Send + 'static) -> Option<u16> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let port = lines.find_map(|l| {
            let l = l.ok()?;
            l.strip_prefix("READY ")?
                .split_whitespace()
                .next()?
                .parse::<u16>()
                .ok()
        });
        let _ = tx.send(port);
        for _ in lines {} // keep the pipe drained
    });
    rx.recv_timeout(STARTUP).ok().flatten()
}

/// Collects a child's stderr in the background (never blocks the child on a full pipe).
fn drain(stderr: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&text);
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(mut s) = sink.lock() {
                s.push_str(&line);
                s.push('\n');
            }
        }
    });
    text
}
