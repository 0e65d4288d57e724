//! Crash anywhere (docs/reliability.md, "Crash anywhere"): `crossfade run` with a `state_file`,
//! under keep-alive load, rolls blue out to green and is SIGKILLed at a point of a schedule that
//! covers every phase (green provisioning, each step's hold, right after a verdict, promotion,
//! blue's drain, its retirement, right after completion; a failing green's rollback, an
//! operator's abort), each point a save of the state file
//! (as the test sees it appear, polled every millisecond) plus a delay of 0 to a few hundred
//! milliseconds. Killed alone (`kill -9` of `run`: its workloads live on, orphaned) or with its
//! whole process tree (what a node loss or an OOM-killed cgroup does: nothing is left to adopt).
//! Then `run` is started again on the same spec and state file, and every point must hold:
//!
//! - the restart comes up and serves: requests succeed, every answer after the kill comes from
//!   the version the state file makes active (after its recovery), and no request on a connection
//!   opened once the restart was ready fails;
//! - the processes of both versions alive (read from `/proc`) are exactly the state file's
//!   `active_pids`, all of the active version: no orphan of either version, nothing missing;
//!   the child journal names those pids and nothing else;
//! - the unfinished rollout is rolled back (killed before `Promoted`) or completed (killed in
//!   `Promoted` or `Retiring`, or between saving `Completed` and saving the promoted workload
//!   active) as docs/architecture.md says, with a `Recovered` event naming the phase; a finished
//!   one is `Restored`; no new rollout starts by itself; the active workload, when it was alive
//!   at a `kill -9`, is adopted (same pids), never after a tree kill; when one of its instances
//!   had no process at the `kill -9` (killed first, waiting for its restart), the others are
//!   adopted all the same and that one is started (session 37: before, all were started afresh);
//! - a new rollout (`POST /rollout`, v3) then completes, and leaves v3 alone running.
//!
//! Some points kill the restart too, and a third start must recover from both.
//!
//! Some points run two instances per workload, and kill the active workload's instance 0 first,
//! so that `run` dies while its supervisor handles the exit, waits out the backoff, or waits for
//! the restart to get ready.
//!
//! CI runs a handful of points ([`ci_schedule`]); `CROSSFADE_CRASH_POINTS=all` runs the long
//! schedule ([`long_schedule`]): every named point at several delays, both kills, restarts
//! killed, two instances, and a sweep of every distinct
//! state saved during a reference rollout (`CROSSFADE_CRASH_POINTS=name,name` runs the named
//! points of the long schedule only, `instances` its points with two instances). Each point
//! prints one `CRASH` line.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::rollout::wait_terminal;
use crate::support::child::children_of;
use crate::support::{
    pids_of, processes_with_arg, read_json, temp_dir, wait_gone, wait_until, Admin, App, Crossfade,
    Load, LoadConfig, Spec,
};

/// The bound on a wait for an event (ready, a phase, the processes settling): each returns as
/// soon as its event happens, so the bound only ends a test that is stuck.
const PATIENCE: Duration = Duration::from_secs(60);

/// How often the state file is looked at for a new save.
const POLL: Duration = Duration::from_millis(1);

/// How a point kills `crossfade run`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kill {
    /// SIGKILL to `run` alone: its workloads live on, orphaned (a crash, `kill -9`).
    Run,
    /// SIGKILL to `run` and every process it started, at once (a node loss, an OOM-killed
    /// cgroup): the restart has nothing to adopt.
    Tree,
}

/// A predicate on a saved state file.
type Matches = fn(&Value) -> bool;

/// Which save of the state file a point waits for.
#[derive(Clone)]
enum At {
    /// The first save `matches` accepts.
    Saved(Matches),
    /// The first save whose [`signature`] is this one (the sweep of the long schedule).
    Signature(String),
}

/// What a trial's rollout does, besides being killed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Course {
    /// A healthy green, rolled out to the end.
    Healthy,
    /// A green answering 500 to every request: the analysis rolls it back at its first step.
    Failing,
    /// An operator's abort (`POST /rollout/abort`) once the first step is applied.
    Aborted,
}

/// One point of the schedule: kill with `kill`, `delay` after the test saw the save `at` of a
/// rollout that takes `course`; with `restart_kill`, the restart is SIGKILLed too, that long
/// after it was started, and a third run must recover from both. Blue and green run `instances`
/// instances each; with `restarting`, the active workload's instance 0 is SIGKILLed at the save
/// (once it is gone, `delay` starts), so that `run` dies while its supervisor restarts it.
#[derive(Clone)]
struct Point {
    name: String,
    course: Course,
    at: At,
    delay: Duration,
    kill: Kill,
    restart_kill: Option<Duration>,
    instances: u32,
    restarting: bool,
}

impl Point {
    /// The named point `name` (see [`named`]), killed as `kill` `delay_ms` after its save.
    fn new(name: &str, delay_ms: u64, kill: Kill) -> Point {
        let (course, at) = named(name).unwrap_or_else(|| panic!("no point {name}"));
        Point {
            name: name.to_owned(),
            course,
            at: At::Saved(at),
            delay: Duration::from_millis(delay_ms),
            kill,
            restart_kill: None,
            instances: 1,
            restarting: false,
        }
    }

    /// This point with its restart killed `ms` after it was started.
    fn restart_killed(mut self, ms: u64) -> Point {
        self.restart_kill = Some(Duration::from_millis(ms));
        self
    }

    /// This point with two instances per workload, the active workload's instance 0 killed at
    /// the save: `run` is killed `delay` after it is gone, while its supervisor restarts it
    /// (blue needs 1 s to get ready after a start, so that a restart under way is not ready yet
    /// for a while: the exit is handled at once, the restart follows after 500 ms of backoff).
    fn restarting(mut self) -> Point {
        self.instances = 2;
        self.restarting = true;
        self
    }

    fn matches(&self, state: &Value) -> bool {
        match &self.at {
            At::Saved(matches) => matches(state),
            At::Signature(wanted) => signature(state) == *wanted,
        }
    }

    /// The point in words: `draining +0ns (Tree), restart killed +300ms`.
    fn describe(&self) -> String {
        let restart = match self.restart_kill {
            Some(after) => format!(", restart killed +{after:?}"),
            None => String::new(),
        };
        let instances = match (self.instances, self.restarting) {
            (1, _) => String::new(),
            (n, false) => format!(", {n} instances"),
            (n, true) => format!(", {n} instances, active instance 0 killed first"),
        };
        format!(
            "{} +{:?} ({:?}){instances}{restart}",
            self.name, self.delay, self.kill
        )
    }
}

/// The rollout record of a state file (`rollout.rollout`).
fn rollout_of(state: &Value) -> &Value {
    &state["rollout"]["rollout"]
}

fn phase_is(state: &Value, phase: &str) -> bool {
    rollout_of(state)["phase"] == phase
}

/// Green provisioning: the rollout saved before green's start (it takes 1 s to be ready).
fn provisioning(s: &Value) -> bool {
    phase_is(s, "Provisioning")
}

/// Step `step` of a `Progressing` rollout, its weight requested (saved before it is applied):
/// for a step after the first, right after the verdict that passed the one before.
fn step_saved(s: &Value, step: u64) -> bool {
    let r = rollout_of(s);
    phase_is(s, "Progressing") && r["step"] == step && r["weights_pending"] == true
}

/// Step `step` applied: its hold runs.
fn step_applied(s: &Value, step: u64) -> bool {
    let r = rollout_of(s);
    phase_is(s, "Progressing") && r["step"] == step && r["weights_pending"] == false
}

/// The named points: the course of the rollout and a predicate on the state file saved.
fn named(name: &str) -> Option<(Course, Matches)> {
    let at: Matches = match name {
        "provisioning" => provisioning,
        "step1-saved" => |s| step_saved(s, 0),
        "step1-hold" => |s| step_applied(s, 0),
        "verdict1" => |s| step_saved(s, 1),
        "step2-hold" => |s| step_applied(s, 1),
        "verdict2" => |s| step_saved(s, 2),
        "step3-hold" => |s| step_applied(s, 2),
        "promoted" => |s| phase_is(s, "Promoted"),
        "draining" => |s| phase_is(s, "Retiring") && rollout_of(s)["active_drained"] == false,
        "retiring" => |s| phase_is(s, "Retiring") && rollout_of(s)["active_drained"] == true,
        "completed" => |s| phase_is(s, "Completed"),
        "rolling-back" => |s| phase_is(s, "RollingBack"),
        "rolled-back" => |s| phase_is(s, "RolledBack"),
        "aborting" => |s| phase_is(s, "Aborting"),
        "aborted" => |s| phase_is(s, "Aborted"),
        _ => return None,
    };
    let course = match name {
        "rolling-back" | "rolled-back" => Course::Failing,
        "aborting" | "aborted" => Course::Aborted,
        _ => Course::Healthy,
    };
    Some((course, at))
}

/// The named points in rollout order, then those of a failing and of an aborted rollout.
const NAMES: [&str; 15] = [
    "provisioning",
    "step1-saved",
    "step1-hold",
    "verdict1",
    "step2-hold",
    "verdict2",
    "step3-hold",
    "promoted",
    "draining",
    "retiring",
    "completed",
    "rolling-back",
    "rolled-back",
    "aborting",
    "aborted",
];

/// The points CI runs: every phase of a rollout to the end, a rollback, `run` alone or the whole
/// tree killed, and one restart killed as well.
fn ci_schedule() -> Vec<Point> {
    vec![
        Point::new("provisioning", 200, Kill::Run),
        Point::new("step1-hold", 300, Kill::Tree),
        Point::new("verdict1", 0, Kill::Run),
        Point::new("rolling-back", 0, Kill::Run),
        Point::new("promoted", 0, Kill::Run),
        Point::new("draining", 0, Kill::Tree).restart_killed(300),
        Point::new("retiring", 0, Kill::Run),
        Point::new("completed", 0, Kill::Run),
        Point::new("step1-hold", 250, Kill::Run).restarting(),
        Point::new("step1-hold", 800, Kill::Run).restarting(),
    ]
}

/// The long schedule: every named point at delays 0, 3, 20 and 300 ms killing `run` alone,
/// and at 0 ms killing the tree; then the points of each phase with the restart killed too, 0,
/// 150 and 400 ms after it was started (while it recovers, adopts, stops leftovers, starts the
/// active workload, or once it serves).
fn long_schedule() -> Vec<Point> {
    let mut points = Vec::new();
    for name in NAMES {
        for delay in [0, 3, 20, 300] {
            points.push(Point::new(name, delay, Kill::Run));
        }
        points.push(Point::new(name, 0, Kill::Tree));
    }
    let phases = [
        "provisioning",
        "step1-hold",
        "promoted",
        "draining",
        "retiring",
        "completed",
        "rolling-back",
    ];
    for name in phases {
        for restart in [0, 150, 400] {
            for kill in [Kill::Run, Kill::Tree] {
                points.push(Point::new(name, 0, kill).restart_killed(restart));
            }
        }
    }
    // Two instances, `run` killed while one of them is restarted: as its exit is handled (0 ms),
    // during its backoff (250 ms), once started again and not ready yet (800 ms); and a point
    // of each phase with two instances and nothing killed but `run`.
    for name in phases {
        for delay in [0, 250, 800] {
            points.push(Point::new(name, delay, Kill::Run).restarting());
        }
        points.push(Point::new(name, 250, Kill::Tree).restarting());
        let mut both = Point::new(name, 0, Kill::Run);
        both.instances = 2;
        points.push(both);
    }
    points
}

/// What of a saved state tells one save from the next: the rollout's phase, step, weights,
/// drain, the preview's pid count and the active slot.
fn signature(state: &Value) -> String {
    let r = rollout_of(state);
    if r.is_null() {
        return "no rollout".into();
    }
    let flag = |field: &str, word: &str| match r[field] == true {
        true => format!(" {word}"),
        false => String::new(),
    };
    format!(
        "{} step {} bp {}/{}{}{} preview pids {} active {}",
        r["phase"].as_str().unwrap_or("?"),
        r["step"],
        r["preview_bp"],
        r["applied_bp"],
        flag("weights_pending", "pending"),
        flag("active_drained", "drained"),
        pids_of(&state["rollout"]["preview_pids"]).len(),
        state["active"].as_str().unwrap_or("?"),
    )
}

/// Whether the rollout saved in `state` is over with its promoted workload (if any) active: the
/// last save of a rollout.
fn settled(state: &Value) -> bool {
    let r = rollout_of(state);
    let phase = r["phase"].as_str().unwrap_or_default();
    match phase {
        "Completed" => state["active"] == r["active"],
        "RolledBack" | "Aborted" => true,
        _ => false,
    }
}

/// Unique version names: each trial's processes are told apart from every other test's.
static TRIALS: AtomicUsize = AtomicUsize::new(0);

/// The versions of one trial: blue, green (the spec's), and the rollout after the restart.
struct Versions {
    blue: String,
    green: String,
    next: String,
}

impl Versions {
    fn new() -> Versions {
        let n = TRIALS.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        Versions {
            blue: format!("v1-crash-{pid}-{n}"),
            green: format!("v2-crash-{pid}-{n}"),
            next: format!("v3-crash-{pid}-{n}"),
        }
    }

    fn all(&self) -> [&str; 3] {
        [&self.blue, &self.green, &self.next]
    }

    /// Every live process of any of them.
    fn alive(&self) -> BTreeSet<u32> {
        self.all()
            .iter()
            .flat_map(|v| processes_with_arg(v))
            .collect()
    }
}

/// Kills whatever of a trial's versions still runs when it ends, also when it failed: an orphan
/// this test is about must not outlive it.
struct Reap<'a>(&'a Versions);

impl Drop for Reap<'_> {
    fn drop(&mut self) {
        for pid in self.0.alive() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}

/// A sample-app workload that may take [`PATIENCE`] to get ready on a loaded machine.
fn patient(version: &str) -> App {
    App::version(version).set(
        "readiness",
        json!({ "interval": "50ms", "deadline": format!("{}s", PATIENCE.as_secs()) }),
    )
}

/// The trial's spec for `point`: blue, a green that takes 1 s to get ready (so that provisioning
/// lasts) and, for a [`Course::Failing`] rollout, answers 500 to every request, each with the
/// point's instances (blue also 1 s to get ready when an instance of it is restarted); steps
/// 20/60/100 held 1 s each, the state file in `dir`.
fn crash_spec(dir: &Path, versions: &Versions, point: &Point) -> Spec {
    let instances = json!(point.instances);
    let mut green = patient(&versions.green)
        .flags(["--unready-for", "1s"])
        .set("instances", instances.clone());
    if point.course == Course::Failing {
        green = green.flags(["--error-rate", "100%"]);
    }
    let mut blue = patient(&versions.blue).set("instances", instances);
    if point.restarting {
        blue = blue.flags(["--unready-for", "1s"]);
    }
    let mut spec = Spec::new()
        .blue(blue)
        .green(green)
        .state_file(&dir.join("state.json"));
    spec.json["rollout"]["steps"] = json!([20, 60, 100]);
    spec.json["rollout"]["hold"] = json!("1s");
    spec.json["rollout"]["progress_deadline"] = json!("60s");
    spec
}

/// Keep-alive load of HTTP/1.1 (4) and h2c (2) connections, 100 requests a second.
fn crash_load(spec: &Spec) -> Load {
    let mut config = LoadConfig::new(spec.listen());
    config.rate = 100;
    config.request_timeout = Duration::from_secs(3);
    config.max_duration = Duration::from_secs(300);
    Load::start(config)
}

/// The state file's content if it was replaced since `last` (a save renames a new file over
/// it, so its inode changes).
fn read_if_saved(path: &Path, last: &mut Option<(u64, i64, i64)>) -> Option<Value> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    let id = (meta.ino(), meta.mtime(), meta.mtime_nsec());
    if *last == Some(id) {
        return None;
    }
    let value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    *last = Some(id);
    Some(value)
}

/// Watches the state file until `point`'s save (`true`) or the end of the rollout without it
/// (`false`), adding the [`signature`] of each new save to `seen`. A [`Course::Aborted`]
/// rollout is aborted through `admin` once its first step is applied.
async fn wait_for_save(path: &Path, point: &Point, admin: &Admin, seen: &mut Vec<String>) -> bool {
    let deadline = Instant::now() + PATIENCE;
    let mut last = None;
    let mut abort = point.course == Course::Aborted;
    loop {
        if let Some(state) = read_if_saved(path, &mut last) {
            let sig = signature(&state);
            if seen.last() != Some(&sig) {
                seen.push(sig);
            }
            if abort && step_applied(&state, 0) {
                // Sent aside, so that the saves it causes (Aborting, then Aborted a few
                // milliseconds later) are all seen; its answer may never come (the kill).
                let admin = *admin;
                tokio::spawn(async move { admin.request("POST", "/rollout/abort", None).await });
                abort = false;
            }
            if point.matches(&state) {
                return true;
            }
            if settled(&state) {
                return false;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{}: no save matched in {PATIENCE:?}; saves seen: {seen:?}",
            point.name
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Starts `crossfade run SPEC` (`path`) again and waits until it is ready. While nothing
/// listened on the proxy's port, a reconnect of the load may have got that very port as its
/// source port (Linux connects such a socket to itself, TCP simultaneous open: see
/// [`crate::support::refused_addr`]), which holds the address until the load drops the
/// connection on the garbage it reads (seen once in 156 points): a start that fails with
/// "Address already in use" is tried again, at most 5 times 200 ms apart. A process that holds
/// the address for good (a workload that inherited the listening socket) still fails the test.
async fn start_again(dir: &Path, path: &Path, admin: &Admin) -> Crossfade {
    for _ in 0..5 {
        let mut run = Crossfade::run(dir, path);
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = run.try_exit() {
                let log = run.log();
                assert!(
                    log.contains("Address already in use"),
                    "crossfade exited ({status}) before it was ready; log:\n{log}"
                );
                break;
            }
            if admin.get_text("/readyz").await.is_ok_and(|(s, _)| s == 200) {
                return run;
            }
            assert!(
                Instant::now() < deadline,
                "crossfade not ready after {PATIENCE:?}; log:\n{}",
                run.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!("CRASH note: the listen address was in use at a restart; trying again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the listen address stayed in use through 5 starts");
}

/// Every descendant of `pid` (children, their children...), from `/proc`.
fn descendants(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut queue = vec![pid];
    while let Some(parent) = queue.pop() {
        for child in children_of(parent) {
            found.push(child);
            queue.push(child);
        }
    }
    found
}

/// Kills `run` as `how` says.
fn kill_run(run: &mut Crossfade, how: Kill) {
    if how == Kill::Tree {
        // Frozen first, so that it forks nothing between the listing and the kill.
        let _ = kill(Pid::from_raw(run.pid() as i32), Signal::SIGSTOP);
        for pid in descendants(run.pid()) {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
    run.kill_hard();
}

/// Waits until the child journal at `path` has one entry per pid of `pids` and no other: what
/// the next start stops or adopts is what runs now.
///
/// # Panics
/// After [`PATIENCE`], naming `context` and the journal.
pub(crate) async fn wait_journal(path: &Path, pids: &BTreeSet<u32>, context: &str) {
    let what = format!("{context}: the child journal to name {pids:?} alone");
    wait_until(PATIENCE, &what, || {
        let doc = read_json(path);
        let entries = doc["children"].as_array().cloned().unwrap_or_default();
        let listed: BTreeSet<u32> = (entries.iter())
            .filter_map(|c| c["pid"].as_u64())
            .map(|p| p as u32)
            .collect();
        std::future::ready((entries.len() == pids.len() && listed == *pids).then_some(()))
    })
    .await;
}

/// What the restart must do with the state file as the killed run left it.
#[derive(Debug)]
struct Expected {
    /// The rollout's phase once recovered.
    phase: &'static str,
    /// The `Recovered` event's prefix (`crossfade restarted in Retiring`), or `None` when the
    /// rollout had ended (`Restored`).
    recovered: Option<String>,
    /// The slot active after the restart (`blue`, `green`).
    slot: String,
    /// Whether the spec's green is the active version after the restart.
    green_active: bool,
    /// The active workload's pids as saved (those the restart adopts after a `kill -9`).
    pids: Vec<u32>,
}

impl Expected {
    /// The recovery rule of docs/architecture.md ("Restart (local mode)") applied to `state`.
    fn of(state: &Value) -> Expected {
        let record = &state["rollout"];
        let r = rollout_of(state);
        let phase = r["phase"].as_str().unwrap_or_default().to_owned();
        let active = state["active"].as_str().unwrap_or("blue").to_owned();
        let preview = match r["active"].as_str() {
            Some("blue") => "green",
            _ => "blue",
        };
        let preview_pids = pids_of(&record["preview_pids"]);
        let active_pids = pids_of(&state["active_pids"]);
        let completes = |recovered| Expected {
            phase: "Completed",
            recovered,
            slot: preview.to_owned(),
            green_active: true,
            pids: preview_pids.clone(),
        };
        match phase.as_str() {
            "Promoted" | "Retiring" => completes(Some(format!(
                "crossfade restarted in {phase}: the role swap"
            ))),
            // Saved completed, killed before the save that makes the promoted slot active.
            "Completed" if active != r["active"] => Expected {
                slot: r["active"].as_str().unwrap_or("green").to_owned(),
                ..completes(None)
            },
            "Completed" => Expected {
                phase: "Completed",
                recovered: None,
                slot: active,
                green_active: true,
                pids: active_pids,
            },
            "RolledBack" | "Aborted" => Expected {
                phase: if phase == "Aborted" {
                    "Aborted"
                } else {
                    "RolledBack"
                },
                recovered: None,
                slot: active,
                green_active: false,
                pids: active_pids,
            },
            // An operator's abort under way ends as the abort it was.
            "Aborting" => Expected {
                phase: "Aborted",
                recovered: Some(format!("crossfade restarted in {phase}: aborted")),
                slot: active,
                green_active: false,
                pids: active_pids,
            },
            _ => Expected {
                phase: "RolledBack",
                recovered: Some(format!("crossfade restarted in {phase}: rolled back")),
                slot: active,
                green_active: false,
                pids: active_pids,
            },
        }
    }
}

/// What one point did, for its `CRASH` line.
struct Trial {
    /// The save the kill followed, or `None` when the rollout ended before the point's save.
    killed_after: Option<String>,
    line: String,
}

/// Runs one point: a rollout killed at `point`, the restart, every invariant (module docs), and
/// a new rollout. Panics on the first invariant broken.
async fn trial(point: Point) -> Trial {
    let versions = Versions::new();
    let _reap = Reap(&versions);
    let dir = temp_dir();
    let state = dir.path().join("state.json");
    let spec = crash_spec(dir.path(), &versions, &point);
    let path = spec.write(dir.path(), "spec.yaml");
    let admin = Admin::new(spec.admin());
    let mut first = Crossfade::run(dir.path(), &path);
    first.wait_ready(&admin, PATIENCE).await;
    let load = crash_load(&spec);

    let mut seen = Vec::new();
    let reached = wait_for_save(&state, &point, &admin, &mut seen).await;
    if !reached {
        first.terminate(PATIENCE).await;
        return Trial {
            killed_after: None,
            line: format!("not reached; saves seen: {seen:?}"),
        };
    }
    if point.restarting {
        // Its supervisor restarts it: `run` dies `delay` after it is gone.
        let victim = pids_of(&read_json(&state)["active_pids"])[0];
        let _ = kill(Pid::from_raw(victim as i32), Signal::SIGKILL);
        wait_gone(&[victim], PATIENCE).await;
    }
    if !point.delay.is_zero() {
        tokio::time::sleep(point.delay).await;
    }
    let alive_at_kill = versions.alive();
    kill_run(&mut first, point.kill);
    let killed = Instant::now();
    let at_kill = read_json(&state);
    let expected = Expected::of(&at_kill);
    let (active_version, other_version) = match expected.green_active {
        true => (&versions.green, &versions.blue),
        false => (&versions.blue, &versions.green),
    };
    // Answers the killed process had sent are read for a moment after its death.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let at_restart = load.report();

    let mut restart_killed = None;
    if let Some(after) = point.restart_kill {
        let mut killed = Crossfade::run(dir.path(), &path);
        tokio::time::sleep(after).await;
        kill_run(&mut killed, Kill::Run);
        restart_killed = Some(signature(&read_json(&state)));
    }
    let mut second = start_again(dir.path(), &path, &admin).await;
    let ready = Instant::now();
    let context = format!(
        "{}: killed after the save of {:?}; state at the kill {}; state at the restart's kill \
         {restart_killed:?}; expected {expected:?}",
        point.describe(),
        seen.last(),
        signature(&at_kill),
    );

    // Exactly the workloads the state file says are alive, all of the active version.
    let (pids, saved) = wait_until(PATIENCE, "the state file's pids alone alive", || {
        let saved = read_json(&state);
        let pids: BTreeSet<u32> = pids_of(&saved["active_pids"]).into_iter().collect();
        let alive = versions.alive();
        let active: BTreeSet<u32> = processes_with_arg(active_version).into_iter().collect();
        let settled = !pids.is_empty() && alive == pids && active == pids;
        std::future::ready(settled.then_some((pids, saved)))
    })
    .await;
    assert!(
        processes_with_arg(other_version).is_empty(),
        "{context}: an orphan of {other_version}"
    );
    wait_journal(&dir.path().join("state.json.children"), &pids, &context).await;
    assert_eq!(
        saved["active"], expected.slot,
        "{context}: the active slot saved: {saved:#}"
    );
    let adopted: BTreeSet<u32> = expected.pids.iter().copied().collect();
    // The active workload's instances that were alive at the kill.
    let live: BTreeSet<u32> = adopted.intersection(&alive_at_kill).copied().collect();
    match point.kill {
        Kill::Run if !adopted.is_empty() && adopted.is_subset(&alive_at_kill) => assert_eq!(
            pids,
            adopted,
            "{context}: the active workload adopted\n{}",
            second.log()
        ),
        // Instance 0 killed first, with no process at the kill: the others adopted all the same.
        Kill::Run if point.restarting => assert!(
            !live.is_empty() && live.is_subset(&pids) && pids.len() == adopted.len(),
            "{context}: the live instances {live:?} adopted, the one with no process started \
             beside them: {pids:?}\n{}",
            second.log()
        ),
        Kill::Run => {}
        Kill::Tree => assert!(
            pids.is_disjoint(&alive_at_kill),
            "{context}: started afresh"
        ),
    }

    // The state file's active version answers: every answer since the kill is its, and requests
    // fail only on connections opened before the restart was ready.
    let answered_at_ready = load.report().ok_from(active_version);
    wait_until(PATIENCE, "answers from the restart", || {
        let answered = load.report().ok_from(active_version);
        std::future::ready((answered >= answered_at_ready + 20).then_some(()))
    })
    .await;
    let after_kill = load.report().since(&at_restart);
    assert_eq!(
        after_kill.ok_from(active_version) + after_kill.errors(),
        after_kill.total(),
        "{context}: answers after the kill from {active_version} alone: {after_kill:?}"
    );
    assert_eq!(after_kill.non_2xx(), 0, "{context}: {after_kill:?}");
    assert!(
        after_kill.error_connections.iter().all(|&t| t <= ready),
        "{context}: errors on connections opened after the restart was ready: {after_kill:?}"
    );

    // The rollout's outcome and events.
    let status = admin.rollout().await;
    let rollout = &status["rollout"];
    assert_eq!(
        rollout["id"],
        rollout_of(&at_kill)["id"],
        "{context}: no new rollout: {status:#}"
    );
    assert_eq!(status["running"], false, "{context}: {status:#}");
    assert_eq!(rollout["phase"], expected.phase, "{context}: {status:#}");
    let events = status["events"].as_array().cloned().unwrap_or_default();
    let last_start = events
        .iter()
        .rev()
        .find(|e| e["reason"] == "Recovered" || e["reason"] == "Restored")
        .unwrap_or_else(|| panic!("{context}: no Recovered or Restored event: {status:#}"));
    let message = last_start["message"].as_str().unwrap_or_default();
    match &expected.recovered {
        // A killed restart may have saved the recovery already: this one restores it then.
        Some(_) if restart_killed.is_some() && last_start["reason"] == "Restored" => {}
        Some(prefix) => {
            assert_eq!(last_start["reason"], "Recovered", "{context}: {status:#}");
            assert!(message.starts_with(prefix), "{context}: {message}");
        }
        None => assert_eq!(last_start["reason"], "Restored", "{context}: {status:#}"),
    }
    if let Some(prefix) = &expected.recovered {
        let reason = rollout["reason"].as_str().unwrap_or_default();
        assert!(reason.starts_with(prefix), "{context}: {status:#}");
    }
    let recovered_events = (events.iter())
        .filter(|e| e["reason"] == "Recovered")
        .count();
    assert_eq!(
        recovered_events,
        usize::from(expected.recovered.is_some()),
        "{context}: one Recovered event per recovery: {status:#}"
    );
    let route = &admin.status().await["routes"][0];
    assert_eq!(
        route["active"],
        expected.slot.as_str(),
        "{context}: {route:#}"
    );
    assert_eq!(
        route["weights"][expected.slot.as_str()],
        10000,
        "{context}: {route:#}"
    );

    // A new rollout afterwards completes and leaves its version alone (two short steps: it is
    // the service's state after the restart that is tried, not the steps).
    let next_rollout = json!({
        "green": patient(&versions.next).json,
        "rollout": { "steps": [50, 100], "hold": "300ms" },
    });
    admin.start_rollout_with(&next_rollout).await;
    let next = wait_terminal(&admin, PATIENCE).await;
    assert_eq!(next["phase"], "Completed", "{context}: {next:#}");
    let next_pids = wait_until(PATIENCE, "v3 alone alive", || {
        let saved = pids_of(&read_json(&state)["active_pids"]);
        let pids: BTreeSet<u32> = saved.into_iter().collect();
        let alive = versions.alive();
        let next: BTreeSet<u32> = processes_with_arg(&versions.next).into_iter().collect();
        std::future::ready((!pids.is_empty() && alive == pids && next == pids).then_some(pids))
    })
    .await;
    wait_journal(
        &dir.path().join("state.json.children"),
        &next_pids,
        &context,
    )
    .await;
    let report = load.stop().await;
    let since_kill = report.since(&at_restart);
    second.terminate(PATIENCE).await;
    let next_pids: Vec<u32> = next_pids.into_iter().collect();
    wait_gone(&next_pids, Duration::from_secs(10)).await;

    let outcome = match &expected.recovered {
        Some(_) => format!("Recovered {}", expected.phase),
        None => format!("Restored ({})", expected.phase),
    };
    Trial {
        killed_after: seen.last().cloned(),
        line: format!(
            "state at the kill: {}; {outcome}, {} active ({}), ready {:?} after the kill; \
             requests from the kill to the restart's check: {}, errors {} (all before ready); \
             v3 rolled out after it: {} of {} later requests answered by v3",
            signature(&at_kill),
            expected.slot,
            match (point.kill, !pids.is_empty() && pids == adopted) {
                (Kill::Run, true) => "adopted",
                (Kill::Run, false) if !live.is_empty() && live.is_subset(&pids) => {
                    "adopted, the instance with no process started"
                }
                _ => "started afresh",
            },
            ready.duration_since(killed),
            after_kill.total(),
            after_kill.errors(),
            since_kill.ok_from(&versions.next),
            since_kill.total() - after_kill.total(),
        ),
    }
}

/// Runs `points` one after another, each in a task of its own so that a broken invariant is
/// reported and the next point still runs; prints one `CRASH` line per point and fails naming
/// every point that broke one.
async fn run_schedule(points: Vec<Point>) {
    let mut failures = Vec::new();
    let mut unreached = 0;
    let total = points.len();
    for (i, point) in points.into_iter().enumerate() {
        let name = point.describe();
        let started = Instant::now();
        match tokio::spawn(trial(point)).await {
            Ok(trial) => {
                unreached += usize::from(trial.killed_after.is_none());
                println!(
                    "CRASH {}/{total} {name}: {} [{:?}]",
                    i + 1,
                    trial.line,
                    started.elapsed()
                );
            }
            Err(e) => {
                println!(
                    "CRASH {}/{total} {name}: FAILED [{:?}]",
                    i + 1,
                    started.elapsed()
                );
                failures.push(format!("{name}: {e}"));
            }
        }
    }
    println!(
        "CRASH points {total}, failed {}, not reached {unreached}",
        failures.len()
    );
    assert!(failures.is_empty(), "points that failed: {failures:#?}");
}

/// The schedule `CROSSFADE_CRASH_POINTS` asks for: unset, CI's; `all`, the long schedule and
/// the sweep; `instances`, the long schedule's points with two instances per workload; names,
/// the long schedule's points of those names.
fn chosen() -> Option<Vec<Point>> {
    let wanted = std::env::var("CROSSFADE_CRASH_POINTS").ok()?;
    if wanted == "all" {
        return Some(long_schedule());
    }
    if wanted == "instances" {
        return Some(
            long_schedule()
                .into_iter()
                .filter(|p| p.instances > 1)
                .collect(),
        );
    }
    let names: Vec<&str> = wanted.split(',').map(str::trim).collect();
    for name in &names {
        assert!(
            named(name).is_some(),
            "CROSSFADE_CRASH_POINTS: no point {name:?} (points: {NAMES:?}, or all, or instances)"
        );
    }
    Some(
        long_schedule()
            .into_iter()
            .filter(|p| names.contains(&p.name.as_str()))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_at_any_point_of_a_rollout_restarts_into_the_state_files_version() {
    run_schedule(chosen().unwrap_or_else(ci_schedule)).await;
}

/// The sweep of the long schedule (`CROSSFADE_CRASH_POINTS=all` only): a reference rollout
/// records every distinct state saved (as polled), then each is a point, killed 0 and 3 ms after
/// it with `run` alone and 0 ms after it with the tree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_after_every_save_of_a_rollout_restarts_into_the_state_files_version() {
    if std::env::var("CROSSFADE_CRASH_POINTS").as_deref() != Ok("all") {
        println!("CRASH sweep skipped: CROSSFADE_CRASH_POINTS=all runs it");
        return;
    }
    let saves = reference_saves().await;
    println!("CRASH sweep: {} distinct saves: {saves:#?}", saves.len());
    let mut points = Vec::new();
    for (i, sig) in saves.iter().enumerate() {
        for (delay, kill) in [(0, Kill::Run), (3, Kill::Run), (0, Kill::Tree)] {
            points.push(Point {
                name: format!("save {i} [{sig}]"),
                at: At::Signature(sig.clone()),
                ..Point::new("step1-hold", delay, kill)
            });
        }
    }
    run_schedule(points).await;
}

/// Crash35 (found by the schedule above, a restart killed 150 ms after it started): the saves a
/// restart makes before its service runs recorded `active_pids: []` (the recovery takes the
/// saved pids out as leftovers to stop; the service wrote the serving pids back only once it
/// ran, some 70 ms later), so a restart killed in that window left the next one nothing to adopt:
/// it stopped the healthy blue and started it afresh (and a blue that takes long to start left
/// the route with nothing to serve meanwhile). Killed right after its first save, the restart
/// leaves blue's pid recorded, and the next one adopts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_killed_right_after_its_first_save_leaves_blue_to_adopt() {
    let versions = Versions::new();
    let _reap = Reap(&versions);
    let dir = temp_dir();
    let state = dir.path().join("state.json");
    let spec = Spec::new().blue(patient(&versions.blue)).state_file(&state);
    let path = spec.write(dir.path(), "spec.yaml");
    let admin = Admin::new(spec.admin());
    let mut first = Crossfade::run(dir.path(), &path);
    first.wait_ready(&admin, PATIENCE).await;
    let blue = wait_until(PATIENCE, "blue's pid saved", || {
        let pids = pids_of(&read_json(&state)["active_pids"]);
        std::future::ready(pids.first().copied())
    })
    .await;
    first.kill_hard();

    let mut last = None;
    let _ = read_if_saved(&state, &mut last);
    let mut second = Crossfade::run(dir.path(), &path);
    let deadline = Instant::now() + PATIENCE;
    let saved = loop {
        if let Some(saved) = read_if_saved(&state, &mut last) {
            kill_run(&mut second, Kill::Run);
            break saved;
        }
        assert!(Instant::now() < deadline, "no save by the restart");
        tokio::time::sleep(POLL).await;
    };
    let at_kill = read_json(&state);
    assert_eq!(
        pids_of(&at_kill["active_pids"]),
        [blue],
        "the restart's save names blue (first save seen: {saved:#})\n{}",
        second.log()
    );

    let mut third = Crossfade::run(dir.path(), &path);
    third.wait_ready(&admin, PATIENCE).await;
    assert_eq!(
        processes_with_arg(&versions.blue),
        [blue],
        "the same blue serves\n{}",
        third.log()
    );
    let events = admin.rollout().await["events"].clone();
    let last_adoption = (events.as_array().into_iter().flatten())
        .rfind(|e| e["reason"] == "Adopted" || e["reason"] == "LeftoversStopped");
    assert_eq!(
        last_adoption.map(|e| &e["reason"]),
        Some(&json!("Adopted")),
        "{events:#}"
    );
    third.terminate(PATIENCE).await;
    wait_gone(&[blue], Duration::from_secs(10)).await;
}

/// The distinct states a rollout of [`crash_spec`] saves, in order, as polled.
async fn reference_saves() -> Vec<String> {
    let versions = Versions::new();
    let _reap = Reap(&versions);
    let dir = temp_dir();
    let never = Point {
        name: "reference".into(),
        at: At::Signature(String::new()),
        ..Point::new("step1-hold", 0, Kill::Run)
    };
    let spec = crash_spec(dir.path(), &versions, &never);
    let path = spec.write(dir.path(), "spec.yaml");
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &path);
    run.wait_ready(&admin, PATIENCE).await;
    let _load = crash_load(&spec);
    let mut seen = Vec::new();
    let state = dir.path().join("state.json");
    let _ = wait_for_save(&state, &never, &admin, &mut seen).await;
    run.terminate(PATIENCE).await;
    let unique: Vec<String> = seen.iter().fold(Vec::new(), |mut unique, sig| {
        if !unique.contains(sig) {
            unique.push(sig.clone());
        }
        unique
    });
    unique
}
