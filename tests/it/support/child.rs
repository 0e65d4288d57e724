//! `crossfade` child processes: a guard for long-running ones (`run`, `proxy`) and a runner for
//! commands that end by themselves (`check`, `demo`, `run --exit-after-rollout`).

use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

use super::{pid_alive, wait_until, Admin, BIN};

/// How long a dropped guard waits after SIGTERM before it sends SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// A running `crossfade` process. Its stderr (the log) goes to a file in the test's temp dir; dropping
/// the guard stops it (SIGTERM, then SIGKILL to it and to its workloads' process groups) and, when the
/// test is failing, prints the end of its log.
pub struct Crossfade {
    child: Child,
    log: PathBuf,
    exited: Option<ExitStatus>,
}

impl Crossfade {
    /// Starts `crossfade ARGS` with stderr in `dir/<log_name>` and stdout discarded.
    pub fn spawn<I, S>(dir: &Path, log_name: &str, args: I) -> Crossfade
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Crossfade::spawn_env(dir, log_name, args, &[])
    }

    /// As [`Crossfade::spawn`], with the environment variables `env` set as well (as an image's
    /// `ENV` would set them).
    pub fn spawn_env<I, S>(dir: &Path, log_name: &str, args: I, env: &[(&str, &str)]) -> Crossfade
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Crossfade::spawn_from(Path::new(BIN), dir, log_name, args, env, None)
    }

    /// As [`Crossfade::spawn`], with `cwd` as the child's working directory (as systemd's `/`
    /// would be) rather than the test's.
    pub fn spawn_in<I, S>(cwd: &Path, dir: &Path, log_name: &str, args: I) -> Crossfade
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Crossfade::spawn_from(Path::new(BIN), dir, log_name, args, &[], Some(cwd))
    }

    /// As [`Crossfade::spawn`], running the binary at `program` (a link to it, as an installed
    /// copy would be) rather than cargo's.
    pub fn spawn_program<I, S>(program: &Path, dir: &Path, log_name: &str, args: I) -> Crossfade
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Crossfade::spawn_from(program, dir, log_name, args, &[], None)
    }

    fn spawn_from<I, S>(
        program: &Path,
        dir: &Path,
        log_name: &str,
        args: I,
        env: &[(&str, &str)],
        cwd: Option<&Path>,
    ) -> Crossfade
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let log = dir.join(log_name);
        let stderr = File::create(&log).expect("create the log file");
        let mut command = Command::new(program);
        if let Some(cwd) = cwd {
            command.current_dir(cwd);
        }
        // Each test's own runtime directory: a run without a state file keeps its child journal
        // there, keyed by its listen address, so no test meets another's (or a user's) journal.
        let child = command
            .args(args)
            .env("XDG_RUNTIME_DIR", dir)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn crossfade");
        Crossfade {
            child,
            log,
            exited: None,
        }
    }

    /// `crossfade run SPEC` (log in `dir/run.log`, or `run-2.log`... when several run in one dir).
    pub fn run(dir: &Path, spec: &Path) -> Crossfade {
        Crossfade::spawn(
            dir,
            &next_log(dir, "run"),
            [OsStr::new("run"), spec.as_os_str()],
        )
    }

    /// `crossfade run SPEC --exit-after-rollout`.
    pub fn run_once(dir: &Path, spec: &Path) -> Crossfade {
        let args = [
            OsStr::new("run"),
            spec.as_os_str(),
            OsStr::new("--exit-after-rollout"),
        ];
        Crossfade::spawn(dir, &next_log(dir, "run"), args)
    }

    /// `crossfade proxy CONFIG --workers 2`.
    pub fn proxy(dir: &Path, config: &Path) -> Crossfade {
        let args = [
            OsStr::new("proxy"),
            config.as_os_str(),
            OsStr::new("--workers"),
            OsStr::new("2"),
        ];
        Crossfade::spawn(dir, &next_log(dir, "proxy"), args)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log written so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `GET /readyz` answers 200 (proxy serving, every weighted backend has endpoints).
    ///
    /// # Panics
    /// When the process exits first or `timeout` passes; the message includes the log.
    pub async fn wait_ready(&mut self, admin: &Admin, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit() {
                panic!(
                    "crossfade exited ({status}) before it was ready; log:\n{}",
                    self.log()
                );
            }
            if admin.get_text("/readyz").await.is_ok_and(|(s, _)| s == 200) {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "crossfade not ready after {timeout:?}; log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The exit status if the process has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    /// Waits for the process to exit by itself.
    ///
    /// # Panics
    /// After `timeout`, with the log.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit() {
                return status;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "crossfade still running after {timeout:?}; log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL, as a crash would: the workloads it started keep running (orphans).
    pub fn kill_hard(&mut self) {
        let _ = self.child.kill();
        self.exited = self.child.wait().ok();
    }

    /// SIGTERM, then waits for the exit (crossfade stops its workloads first).
    ///
    /// # Panics
    /// After `timeout`, with the log.
    pub async fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        if self.try_exit().is_none() {
            let _ = kill(Pid::from_raw(self.pid() as i32), Signal::SIGTERM);
        }
        self.wait_exit(timeout).await
    }
}

impl Drop for Crossfade {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            eprintln!("--- end of {} ---\n{}", self.log.display(), tail.join("\n"));
        }
        if self.try_exit().is_some() {
            return;
        }
        let children = children_of(self.pid());
        let _ = kill(Pid::from_raw(self.pid() as i32), Signal::SIGTERM);
        // Drop cannot await: poll with a blocking sleep (a count, not a clock: clippy bans std's Instant).
        let tick = Duration::from_millis(20);
        for _ in 0..STOP_GRACE.as_millis() / tick.as_millis() {
            if self.try_exit().is_some() {
                return;
            }
            std::thread::sleep(tick);
        }
        self.kill_hard();
        // Workloads run in their own process groups: a SIGKILLed crossfade leaves them behind.
        for pid in children.into_iter().filter(|&p| pid_alive(p)) {
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}

/// `run.log`, or `run-2.log`, `run-3.log`... if taken.
fn next_log(dir: &Path, stem: &str) -> String {
    (1..)
        .map(|i| match i {
            1 => format!("{stem}.log"),
            n => format!("{stem}-{n}.log"),
        })
        .find(|name| !dir.join(name).exists())
        .unwrap_or_default()
}

/// Direct children of `pid`, from `/proc/*/stat`.
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&child| parent_of(child) == Some(pid))
        .collect()
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// What a finished command printed and how it ended.
#[derive(Debug)]
pub struct Finished {
    /// Exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs `crossfade ARGS` to its end and captures its output.
///
/// # Panics
/// When it has not ended after `timeout` (it is killed then).
pub async fn run_to_end<I, S>(args: I, timeout: Duration) -> Finished
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_to_end_with(args, &[], timeout).await
}

/// [`run_to_end`] with extra environment variables for the child (the test's own environment is
/// never changed).
///
/// # Panics
/// When it has not ended after `timeout` (it is killed then).
pub async fn run_to_end_with<I, S>(args: I, env: &[(&str, &str)], timeout: Duration) -> Finished
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_to_end_in(None, args, env, timeout).await
}

/// [`run_to_end_with`] with `cwd`, when given, as the child's working directory.
///
/// # Panics
/// When it has not ended after `timeout` (it is killed then).
pub async fn run_to_end_in<I, S>(
    cwd: Option<&Path>,
    args: I,
    env: &[(&str, &str)],
    timeout: Duration,
) -> Finished
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let mut command = tokio::process::Command::new(BIN);
    if let Some(cwd) = cwd {
        command.current_dir(cwd);
    }
    let child = command
        .args(&args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(timeout, child)
        .await
        .unwrap_or_else(|_| panic!("crossfade {args:?} still running after {timeout:?}"))
        .expect("run crossfade");
    Finished {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Waits until `path` exists and parses as JSON for which `check` returns `Some`.
pub async fn wait_state<T>(
    path: &Path,
    timeout: Duration,
    what: &str,
    check: impl Fn(&serde_json::Value) -> Option<T>,
) -> T {
    wait_until(timeout, what, || {
        let value = std::fs::read_to_string(path)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
        std::future::ready(value.as_ref().and_then(&check))
    })
    .await
}

/// Starts `crossfade ARGS` as a tokio child (waited on without blocking the runtime, killed on
/// drop) with its stdout in the file `stdout` and its stderr discarded: for a command whose
/// printed outcome the test reads after signalling it.
pub fn spawn_with_stdout<I, S>(args: I, stdout: &Path) -> tokio::process::Child
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    tokio::process::Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(File::create(stdout).expect("create the stdout file"))
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn crossfade")
}
