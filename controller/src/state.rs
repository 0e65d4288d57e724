//! What a local-mode service persists, and how a restarted `crossfade run` recovers from it.
//!
//! Recovery rule: a rollout that had not reached `Promoted` is **rolled back** (its preview is
//! discarded and the recorded active workload serves); a rollout in `Promoted` or `Retiring` (the role
//! swap was published) is **completed** (the preview's workload becomes the active one), unless the
//! promoted workload cannot start: then the workload it replaced serves again and the rollout is
//! recorded rolled back ([`ServiceState::fall_back`]). The processes recorded by the previous
//! instance are stopped, except those the new instance adopts.

use serde::{Deserialize, Serialize};

use crossfade_proxy::weight::Slot;

use crate::driver::supervisor::Backoff;
use crate::rollout::{Phase, Rollout};
use crate::spec::WorkloadSpec;
use crate::timeline::Timeline;

/// The most events kept in the state and shown in status.
pub const MAX_EVENTS: usize = 50;

/// The reason of the event a restart with nothing to recover records
/// ([`ServiceState::note_restored`]).
pub const RESTORED: &str = "Restored";

/// The reasons of the events a start records about the previous run's end: [`RESTORED`], or
/// `Recovered` when it ended an unfinished rollout ([`ServiceState::recover`]). The events before
/// the last of them are the previous run's.
pub const RESTART_REASONS: [&str; 2] = [RESTORED, "Recovered"];

/// A local-mode service's persisted state (the state file's JSON document): a JSON object with
/// `version` ([`StateVersion`]), `route`, `active_pids`, `last_rollout_id` and `events` required
/// (every state file ever written has them; `version` may be missing from files written before it
/// was recorded, which are format 1), the other fields optional, and no field besides these.
/// Anything else (`{}`, `[]`, a document of another format version or with fields this version
/// does not know) is refused naming the field, so that
/// [`StateFile::load_or_backup`](crate::store::StateFile::load_or_backup) takes it for corrupt and
/// starts from the backup, rather than from an empty state that would forget the active workload.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a state document: a JSON object with version, route, active_pids, last_rollout_id and events"
)]
pub struct ServiceState {
    /// The document's format version: [`StateVersion::CURRENT`].
    #[serde(default)]
    pub version: StateVersion,
    /// The route served.
    pub route: String,
    /// The slot serving as active; `None` until first written.
    #[serde(default)]
    pub active: Option<Slot>,
    /// The workload serving as active (after a completed rollout, the former preview's spec).
    #[serde(default)]
    pub active_workload: Option<WorkloadSpec>,
    /// Process ids of the active workload's instances, for orphan clean-up after a crash.
    pub active_pids: Vec<u32>,
    /// Where each of the active workload's instances stands in its restart backoff, in instance
    /// order (`null` for one that is not in a backoff); written only while one is. A binary
    /// upgrade's new process and a start after a crash go on from it rather than from 500 ms
    /// ([`crate::driver::supervisor::Backoff`]). Missing in state files written before session 38,
    /// and then none is.
    #[serde(default, skip_serializing_if = "no_backoff")]
    pub active_backoff: Vec<Option<Backoff>>,
    /// The spec's `blue:` section when this state was last started (to tell an edited `blue:` from
    /// an unchanged one after a rollout made another workload active). `None` in state files
    /// written before it was recorded.
    #[serde(default)]
    pub spec_blue: Option<WorkloadSpec>,
    /// The id of the last rollout started; the next one gets this plus one.
    pub last_rollout_id: u64,
    /// The current or last rollout.
    #[serde(default)]
    pub rollout: Option<RolloutRecord>,
    /// Rollouts that ended before [`ServiceState::rollout`], newest last, at most [`MAX_ENDED`]: one
    /// entry per distinct preview workload (its latest end), so that a green section that already
    /// ended is never rolled out again automatically although a later rollout (`crossfade migrate`)
    /// replaced the record. Empty in state files written before it was recorded.
    #[serde(default)]
    pub ended: Vec<EndedRollout>,
    /// Recent events, oldest first.
    pub events: Vec<StatusEvent>,
}

/// Whether no active instance is in a restart backoff (`active_backoff` is then left out of the
/// file, so that a file with none reads as before session 38).
fn no_backoff(backoffs: &[Option<Backoff>]) -> bool {
    backoffs.iter().all(Option::is_none)
}

/// The format version of a state document (`"version": 1`), so that a document this crossfade
/// cannot read is refused rather than half-read. Missing from files written before it was
/// recorded, which are format 1 (the default).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct StateVersion(u32);

impl StateVersion {
    /// The format this crossfade writes and reads: 1.
    pub const CURRENT: StateVersion = StateVersion(1);
}

impl Default for StateVersion {
    fn default() -> StateVersion {
        StateVersion::CURRENT
    }
}

impl<'de> Deserialize<'de> for StateVersion {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<StateVersion, D::Error> {
        let version = u64::deserialize(deserializer)
            .map_err(|e| serde::de::Error::custom(format!("field `version`: {e}")))?;
        if version != u64::from(StateVersion::CURRENT.0) {
            return Err(serde::de::Error::custom(format!(
                "field `version`: {version} is not a state format this crossfade reads (it reads \
                 version {})",
                StateVersion::CURRENT.0
            )));
        }
        Ok(StateVersion::CURRENT)
    }
}

/// A rollout and the preview it was rolling out to.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RolloutRecord {
    /// The state machine.
    pub rollout: Rollout,
    /// The preview's spec.
    pub preview_workload: WorkloadSpec,
    /// Process ids of the preview's instances.
    pub preview_pids: Vec<u32>,
    /// True when the rollout was ended by recovery after a restart rather than by its own course.
    #[serde(default)]
    pub interrupted: bool,
    /// The workload that was active when the rollout started (the one the preview replaces). `None`
    /// in state files written before it was recorded.
    #[serde(default)]
    pub active_workload: Option<WorkloadSpec>,
    /// The rollout's course over time, for `crossfade report` (bounded, see
    /// [`crate::timeline`]). Empty in state files written before it was recorded.
    #[serde(default)]
    pub timeline: Timeline,
    /// `sha256:<hex>` of the preview's program file when the rollout began ([`crate::image`]);
    /// `None` for static endpoints, a program that could not be read, and older state files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_digest: Option<String>,
}

/// How an earlier rollout ended, kept after a later one replaced its [`RolloutRecord`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EndedRollout {
    /// The rollout's id.
    pub id: u64,
    /// Its terminal phase (`Completed`, `RolledBack` or `Aborted`).
    pub phase: Phase,
    /// Its final message (why it ended).
    pub message: String,
    /// The preview workload it rolled out.
    pub preview_workload: WorkloadSpec,
    /// The digest of that workload's program when it was rolled out
    /// ([`RolloutRecord::preview_digest`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_digest: Option<String>,
    /// The slot that workload ran in (the rollout's preview slot), which labels an unnamed one;
    /// `None` in state files written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_slot: Option<Slot>,
}

/// The most ended rollouts kept in [`ServiceState::ended`] (the oldest is dropped first).
pub const MAX_ENDED: usize = 50;

/// One event, as shown on `GET /rollout`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusEvent {
    /// Wall-clock time, seconds since the Unix epoch.
    pub at_unix_seconds: f64,
    /// CamelCase reason (`StepStarted`, `AnalysisFailed`, `RolledBack`, ...).
    pub reason: String,
    /// What happened, for people.
    pub message: String,
}

impl StatusEvent {
    /// An event stamped with the current wall-clock time.
    pub fn now(reason: &str, message: &str) -> StatusEvent {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        StatusEvent {
            at_unix_seconds: at,
            reason: reason.to_owned(),
            message: message.to_owned(),
        }
    }
}

/// What recovery decided.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Process ids recorded by the previous instance, to stop before starting anew.
    pub orphan_pids: Vec<u32>,
    /// What was done, for the log; `None` when there was nothing to recover.
    pub note: Option<String>,
    /// The phase recovery ended an unfinished rollout in (`RolledBack`, or `Completed` when the
    /// role swap was already published); `None` when no rollout was unfinished. The service
    /// counts it in `crossfade_rollouts_total` ([`crate::metrics::RouteMetrics::recovered`]).
    pub ended: Option<Phase>,
    /// How long that rollout ran: from its persisted start (`timeline.started_at_unix_seconds`)
    /// to this recovery, observed in `crossfade_rollout_duration_seconds` with its outcome.
    /// `None` when no rollout was unfinished, when the state file records no start (written
    /// before timelines were kept: 0) or when the clock now reads earlier than that start.
    pub took: Option<std::time::Duration>,
}

impl ServiceState {
    /// Refuses a state file written for another route: `Err(message)` when the file records a route
    /// (a non-empty `route`) other than `route`, the spec's `route.name`. Adopting it would serve the
    /// other route's active workload and end (roll back) its unfinished rollout. The message names
    /// both routes; the caller adds the file. Call before [`ServiceState::recover`], so a refused
    /// start changes nothing. State files with no recorded route (never written) are accepted.
    pub fn check_route(&self, route: &str) -> Result<(), String> {
        if self.route.is_empty() || self.route == route {
            return Ok(());
        }
        Err(format!(
            "the state file belongs to route {:?}, but this spec's route.name is {:?}; refusing to \
             adopt another route's state (its active workload and rollouts). Give this spec its own \
             state_file, or set route.name back to {:?}",
            self.route, route, self.route
        ))
    }

    /// Applies the recovery rule (module docs) to a state loaded at start.
    pub fn recover(&mut self) -> Recovery {
        let mut orphan_pids = std::mem::take(&mut self.active_pids);
        // The backoff of instances whose processes are leftovers now; a start that adopts them
        // puts it back with their pids.
        self.active_backoff.clear();
        let mut note = None;
        let mut ended = None;
        let mut took = None;
        if let Some(record) = &mut self.rollout {
            orphan_pids.append(&mut record.preview_pids);
            let rollout = &mut record.rollout;
            if rollout.phase == Phase::Completed && self.active != Some(rollout.active) {
                // Saved completed, then the run died before the save that makes the promoted
                // slot active (`Service::rollout`, once the run returns): the promoted workload
                // served all the traffic and is the active one, as after a restart in
                // `Retiring`. Read as written, the restart served the retired version again and
                // stopped the promoted one as a leftover (trial 28).
                self.active = Some(rollout.active);
                self.active_workload = Some(record.preview_workload.clone());
            }
            if !rollout.is_terminal() {
                let preview = rollout.preview();
                let was = format!("{:?}", rollout.phase);
                let text = if matches!(rollout.phase, Phase::Promoted | Phase::Retiring) {
                    self.active = Some(preview);
                    self.active_workload = Some(record.preview_workload.clone());
                    rollout.phase = Phase::Completed;
                    rollout.active = preview;
                    // A hold of the retiring backend ended with the run that held it.
                    rollout.retire_held = false;
                    format!("crossfade restarted in {was}: the role swap was already published, so the rollout is completed; {preview} is active")
                } else {
                    // Before `Progressing` no weight was ever sent to the preview.
                    let untouched = matches!(rollout.phase, Phase::Pending | Phase::Provisioning);
                    // An operator's abort under way ends as the abort it was: recorded rolled
                    // back, it counted as `outcome="rolled_back"` and fired the rollback alert
                    // for an abort asked for (crash35).
                    let (phase, how) = match rollout.phase {
                        Phase::Aborting => (Phase::Aborted, "aborted as the operator asked"),
                        _ => (Phase::RolledBack, "rolled back"),
                    };
                    rollout.phase = phase;
                    rollout.preview_bp = 0;
                    rollout.applied_bp = 0;
                    let before = match untouched {
                        true => format!(" before {preview} got any traffic"),
                        false => String::new(),
                    };
                    format!(
                        "crossfade restarted in {was}: {how}{before}; {} stays active",
                        preview.other()
                    )
                };
                rollout.reason = Some(text.clone());
                rollout.message = text.clone();
                record.interrupted = true;
                self.events.push(StatusEvent::now("Recovered", &text));
                if self.events.len() > MAX_EVENTS {
                    self.events.remove(0);
                }
                note = Some(text);
                ended = Some(rollout.phase);
                // The rollout ends here: its report's end (`crossfade report`'s "ended" and
                // "took") and its duration are both this recovery's time.
                let now = crate::timeline::unix_now();
                record.timeline.ended_at_unix_seconds = Some(now);
                let started = record.timeline.started_at_unix_seconds;
                let ran = now - started;
                took = (started > 0.0 && ran >= 0.0)
                    .then(|| std::time::Duration::try_from_secs_f64(ran).ok())
                    .flatten();
            }
        }
        Recovery {
            orphan_pids,
            note,
            ended,
            took,
        }
    }

    /// Undoes the completion a recovery made ([`Recovery::ended`] `Completed`: the run died in
    /// `Promoted` or `Retiring`) when the promoted workload could not start: `slot` (the slot
    /// active before the recovery) and `workload` (its workload) serve again, and the rollout is
    /// recorded `RolledBack` with the preview's weight 0, its message saying why (`why`: the
    /// start's error). Returns that message, also recorded as a `Recovered` event. DESIGN: a
    /// rollout never leaves a route with no healthy backend while one exists; a restart during a
    /// held retirement (the promoted green could not serve, blue was kept as its backup) stopped
    /// blue and then exited when green could not start, leaving nothing to serve (session 32).
    pub fn fall_back(&mut self, slot: Slot, workload: WorkloadSpec, why: &str) -> String {
        self.active = Some(slot);
        self.active_workload = Some(workload);
        let Some(record) = &mut self.rollout else {
            let text = format!("crossfade restarted: the promoted workload could not start ({why}); {slot} serves again");
            self.push_event(StatusEvent::now("Recovered", &text));
            return text;
        };
        let rollout = &mut record.rollout;
        let preview = slot.other();
        rollout.phase = Phase::RolledBack;
        rollout.active = slot;
        rollout.preview_bp = 0;
        rollout.applied_bp = 0;
        rollout.retire_held = false;
        let text = format!(
            "crossfade restarted after {preview}'s promotion, but {preview} could not start \
             ({why}): rolled back; {slot} serves again"
        );
        rollout.reason = Some(text.clone());
        rollout.message = text.clone();
        record.interrupted = true;
        self.push_event(StatusEvent::now("Recovered", &text));
        text
    }

    /// Records that `crossfade run` started again from this state (loaded from its state file)
    /// with no rollout to recover (a start that ends an unfinished one records `Recovered`
    /// instead, [`ServiceState::recover`]): an event [`RESTORED`] naming this process (`pid`)
    /// and the saved rollout's phase and end, so that the latest event is this start rather
    /// than the previous run's last, which read as current after a clean restart (trial 13 N15).
    pub fn note_restored(&mut self, pid: u32) {
        let rollout = match &self.rollout {
            Some(record) => {
                let rollout = &record.rollout;
                let ended = record
                    .timeline
                    .ended_at_unix_seconds
                    .map(|at| format!(" at {}", crate::timeline::rfc3339(at)))
                    .unwrap_or_default();
                format!(
                    "rollout {} ended {}{ended}, before the restart",
                    rollout.id,
                    rollout.phase.as_str()
                )
            }
            None => "no rollout yet".to_owned(),
        };
        let text = format!("crossfade restarted from its state file (pid {pid}); {rollout}");
        self.push_event(StatusEvent::now(RESTORED, &text));
    }

    /// Adds `event` to [`ServiceState::events`], dropping the oldest past [`MAX_EVENTS`].
    pub fn push_event(&mut self, event: StatusEvent) {
        self.events.push(event);
        if self.events.len() > MAX_EVENTS {
            self.events.remove(0);
        }
    }

    /// Records that the processes a previous run left running were stopped at this start
    /// (`stopped` says which, e.g. `v2 instance 0 (pid 4242)`): an event `LeftoversStopped`, and,
    /// when this start's recovery ended the rollout ([`Recovery::ended`]), the same words added to
    /// that rollout's message and reason and to its `Recovered` event, so that `crossfade status`
    /// says what the rollback stopped.
    pub fn note_stopped(&mut self, stopped: &str, recovered: bool) {
        let text = format!("stopped what the previous run left running: {stopped}");
        if recovered {
            if let Some(record) = &mut self.rollout {
                let rollout = &mut record.rollout;
                rollout.message = format!("{}; {text}", rollout.message);
                rollout.reason = Some(rollout.message.clone());
                if let Some(event) = self
                    .events
                    .iter_mut()
                    .rev()
                    .find(|e| e.reason == "Recovered")
                {
                    event.message = rollout.message.clone();
                }
            }
        }
        self.events
            .push(StatusEvent::now("LeftoversStopped", &text));
        if self.events.len() > MAX_EVENTS {
            self.events.remove(0);
        }
    }

    /// Records `record` as the current rollout. The one it replaces, if it had ended, moves to
    /// [`ServiceState::ended`] (replacing an earlier end of the same preview workload).
    pub fn begin(&mut self, record: RolloutRecord) {
        if let Some(last) = self.rollout.take().filter(|r| r.rollout.is_terminal()) {
            self.ended
                .retain(|e| !same_spec(&e.preview_workload, &last.preview_workload));
            self.ended.push(EndedRollout {
                id: last.rollout.id,
                phase: last.rollout.phase,
                preview_slot: Some(preview_ran_in(&last.rollout)),
                message: last.rollout.message,
                preview_workload: last.preview_workload,
                preview_digest: last.preview_digest,
            });
            if self.ended.len() > MAX_ENDED {
                self.ended.remove(0);
            }
        }
        self.rollout = Some(record);
    }

    /// `Some(how)` when `green` is the workload serving now or the preview of any rollout that has
    /// ended (completed, rolled back or aborted, a rollback by restart recovery included), the last
    /// one or an earlier one that a `crossfade migrate` replaced: `crossfade run` then does not start
    /// that rollout again (README "Restart"), so a restart leaves the active workload serving alone
    /// and a green that crashes its controller is not rolled out again on every start. Say it with
    /// [`AlreadyTried::describe`].
    ///
    /// `digest` is the digest of `green`'s program file now ([`crate::image::hash_file`]): an
    /// ended rollout of the same spec whose program was another build (both digests known and
    /// different: fixed and rebuilt in place, the usual way of trying again) does not count, so
    /// the rebuilt green is rolled out (runtry 30: it was refused until the spec was edited).
    pub fn already_tried(
        &self,
        green: &WorkloadSpec,
        digest: Option<&str>,
    ) -> Option<AlreadyTried> {
        if self
            .active_workload
            .as_ref()
            .is_some_and(|a| same_spec(a, green))
        {
            return Some(AlreadyTried::Active {
                completed_by: self.completed_to(green),
            });
        }
        let last = self
            .rollout
            .as_ref()
            .filter(|r| r.rollout.is_terminal())
            .map(|r| {
                (
                    (
                        r.rollout.id,
                        r.rollout.phase,
                        Some(preview_ran_in(&r.rollout)),
                    ),
                    &r.preview_workload,
                    &r.preview_digest,
                )
            });
        let ended = self.ended.iter().rev().map(|e| {
            (
                (e.id, e.phase, e.preview_slot),
                &e.preview_workload,
                &e.preview_digest,
            )
        });
        let rebuilt =
            |then: &Option<String>| matches!((then, digest), (Some(a), Some(b)) if a != b);
        let ((id, phase, slot), _, then) = last
            .into_iter()
            .chain(ended)
            .find(|(_, preview, then)| same_spec(preview, green) && !rebuilt(then))?;
        Some(AlreadyTried::Ended {
            id,
            phase,
            slot,
            digest: then.clone(),
        })
    }
}

/// The slot `rollout`'s preview ran in ([`EndedRollout::preview_slot`]): once it completed, the
/// active one (the completion made its preview the active backend, and [`Rollout::preview`]
/// then names the slot it replaced); else the one other than the active. Recorded as the other
/// one for every phase, a completed rollout's unnamed green was labelled by the slot it replaced
/// after a later rollout (check33).
fn preview_ran_in(rollout: &Rollout) -> Slot {
    match rollout.phase {
        Phase::Completed => rollout.active,
        _ => rollout.preview(),
    }
}

/// Why `crossfade run` does not start the spec's green ([`ServiceState::already_tried`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AlreadyTried {
    /// The green workload is the one serving now; `completed_by` is the rollout that made it
    /// active, when recorded.
    Active {
        /// The id of the completed rollout to it.
        completed_by: Option<u64>,
    },
    /// A rollout to the green workload ended, and another workload serves.
    Ended {
        /// The rollout's id.
        id: u64,
        /// How it ended: `Completed` (and replaced since), `RolledBack` or `Aborted`.
        phase: Phase,
        /// The slot it ran in, when recorded ([`EndedRollout::preview_slot`]).
        slot: Option<Slot>,
        /// The digest of its preview's program file when it began (`sha256:<64 hex>`), when
        /// recorded: what a rebuilt green's log line names as the build that rollout ran.
        digest: Option<String>,
    },
}

impl AlreadyTried {
    /// One line for the log of a start: `not starting the rollout to v2: rollout 1 rolled it
    /// back; v1 serves. Change the green section, or use `crossfade migrate`, to try it again`,
    /// where `green` is the spec's green (its `name:`) and `serving` the version serving now.
    pub fn describe(&self, green: &str, serving: &str) -> String {
        let what = match self {
            AlreadyTried::Active {
                completed_by: Some(id),
            } => {
                return format!(
                    "not starting the rollout to {green}: rollout {id} already rolled it out, \
                     and it serves now"
                )
            }
            AlreadyTried::Active { completed_by: None } => {
                return format!("not starting the rollout to {green}: it serves already")
            }
            AlreadyTried::Ended { id, phase, .. } => match phase {
                Phase::Completed => {
                    format!("rollout {id} rolled it out, and a later rollout replaced it")
                }
                Phase::Aborted => format!("rollout {id} to it was aborted"),
                _ => format!("rollout {id} rolled it back"),
            },
        };
        format!(
            "not starting the rollout to {green}: {what}; {serving} serves. Change the green \
             section, or use `crossfade migrate`, to try it again"
        )
    }

    /// For an ended rollout of the same spec as the green `green`, whose program is another build
    /// now (its digest `now`), the line that says the green is rolled out anyway, naming both
    /// builds: `v2's program is another build than the one rollout 1 rolled back (now
    /// sha256:…; rollout 1 ran sha256:…): rolling it out` (`?` for a digest not known). Until
    /// session 40 it named only the new digest, where the words read as the old one's. `None`
    /// for [`AlreadyTried::Active`].
    pub fn rebuilt(&self, green: &str, now: Option<&str>) -> Option<String> {
        let AlreadyTried::Ended {
            id, phase, digest, ..
        } = self
        else {
            return None;
        };
        let how = match phase {
            Phase::Completed => "rolled out",
            Phase::Aborted => "aborted",
            _ => "rolled back",
        };
        let then = digest.as_deref().unwrap_or("?");
        Some(format!(
            "{green}'s program is another build than the one rollout {id} {how} (now {}; \
             rollout {id} ran {then}): rolling it out",
            now.unwrap_or("?")
        ))
    }
}

/// How a spec's `blue:` relates to the workload the state file records as active
/// ([`ServiceState::check_blue`]).
#[derive(Clone, Debug, PartialEq)]
pub enum BlueCheck {
    /// Nothing recorded, or the recorded active workload is `blue:` itself: serve `blue:`.
    Serve,
    /// A promoted workload is recorded and `blue:` is the section it replaced, unchanged: serve the
    /// recorded workload (README "Restart").
    ServeRecorded,
    /// `blue:` was edited and no rollout made another workload active: all local processes start
    /// afresh on a restart anyway, so the edited `blue:` serves, as on a first start. The recorded
    /// workload it replaces is given for the event.
    Edited(Box<WorkloadSpec>),
    /// `blue:` was edited after a rollout made another workload active: which one to serve is
    /// ambiguous, so the start is refused with this message (it names the field, the recorded
    /// workload and how to proceed).
    Conflict(String),
}

impl ServiceState {
    /// A supervised instance, `instance` of its workload, was started again: its new `pid`
    /// replaces `previous_pid` where the state records it (`active_pids`, and a rollout's
    /// `preview_pids`). A `previous_pid` of 0 is an instance that had no process when this run
    /// started ([`crate::driver::process::Found::Down`]): such instances are all saved as 0, in
    /// instance order, so only entry `instance` of `active_pids` is replaced (until session 37
    /// every 0 was, and with two instances down the state file named the first one's pid twice
    /// and the second's not at all, which a crash then would neither adopt nor stop).
    pub fn restarted(&mut self, instance: usize, previous_pid: u32, pid: u32) {
        if previous_pid == 0 {
            if let Some(p) = self.active_pids.get_mut(instance).filter(|p| **p == 0) {
                *p = pid;
            }
            return;
        }
        let preview = (self.rollout.iter_mut()).flat_map(|r| r.preview_pids.iter_mut());
        for p in self.active_pids.iter_mut().chain(preview) {
            if *p == previous_pid {
                *p = pid;
            }
        }
    }

    /// Decides what an edited `blue:` means (see [`BlueCheck`]). Call after [`ServiceState::recover`].
    pub fn check_blue(&self, blue: &WorkloadSpec) -> BlueCheck {
        let Some(active) = &self.active_workload else {
            return BlueCheck::Serve;
        };
        if same_spec(active, blue) {
            return BlueCheck::Serve;
        }
        // The `blue:` this state was started with; for a state file from before it was recorded,
        // the active workload when no rollout ever completed (it can only have come from `blue:`).
        let completed = self
            .rollout
            .as_ref()
            .is_some_and(|r| r.rollout.phase == Phase::Completed);
        let recorded = self
            .spec_blue
            .as_ref()
            .or((!completed && self.active == Some(Slot::Blue)).then_some(active));
        let Some(recorded) = recorded else {
            // Older state file after a rollout: `blue:` cannot be compared; the rule of README
            // "Restart" applies (the recorded workload serves).
            return BlueCheck::ServeRecorded;
        };
        if same_spec(recorded, blue) {
            return BlueCheck::ServeRecorded;
        }
        if same_spec(recorded, active) {
            return BlueCheck::Edited(Box::new(active.clone()));
        }
        let by = match self.completed_to(active) {
            Some(id) => format!("rollout {id}"),
            None => "a rollout".to_owned(),
        };
        BlueCheck::Conflict(format!(
            "blue: was edited, but {by} made {} ({}) the active workload, recorded in the \
             state file; refusing to guess which to serve. To roll out the edited version, move it \
             to green: and set blue: back to what it was (or to the active workload); to serve the \
             active workload, set blue: to it; to start from the spec alone, remove the state file",
            self.active.unwrap_or(Slot::Blue),
            active.describe()
        ))
    }

    /// The id of the latest completed rollout to `workload` (the one that made it active): the
    /// current record or an ended one ([`ServiceState::ended`]); `None` when none is recorded
    /// (it was dropped, or the state file predates `ended`).
    fn completed_to(&self, workload: &WorkloadSpec) -> Option<u64> {
        let current = self
            .rollout
            .as_ref()
            .filter(|r| r.rollout.phase == Phase::Completed)
            .filter(|r| same_spec(&r.preview_workload, workload))
            .map(|r| r.rollout.id);
        current.or_else(|| {
            self.ended
                .iter()
                .rev()
                .find(|e| e.phase == Phase::Completed && same_spec(&e.preview_workload, workload))
                .map(|e| e.id)
        })
    }
}

fn same_spec(a: &WorkloadSpec, b: &WorkloadSpec) -> bool {
    serde_json::to_value(a).ok() == serde_json::to_value(b).ok()
}

/// Stops processes recorded by a previous instance: only those still running whose command line
/// still names `command` (a recycled pid belonging to something else is left alone). Returns the
/// pids it stopped.
pub fn stop_orphans(pids: &[u32], commands: &[&str]) -> Vec<u32> {
    let mut stopped = Vec::new();
    for &pid in pids {
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let argv0 = cmdline.split(|&b| b == 0).next().unwrap_or_default();
        let argv0 = String::from_utf8_lossy(argv0);
        let base = |s: &str| s.rsplit('/').next().unwrap_or(s).to_owned();
        if commands.iter().any(|c| base(c) == base(&argv0)) {
            tracing::warn!(
                pid,
                "stopping an orphaned workload process from a previous run"
            );
            crate::driver::process::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
            stopped.push(pid);
        }
    }
    stopped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::Rollout;

    fn app(version: &str) -> WorkloadSpec {
        WorkloadSpec {
            command: Some("app".into()),
            args: vec!["--version".into(), version.into()],
            ..WorkloadSpec::default()
        }
    }

    /// down37's report: two instances with no process at a start after a crash are both saved as
    /// pid 0; each one's restart must replace its own entry, not every 0.
    #[test]
    fn a_restart_replaces_its_own_instances_pid_and_a_down_instance_only_its_entry() {
        let mut state = promoted("v1", "v2");
        state.active_pids = vec![0, 11, 0];
        let preview = state.rollout.as_mut().map(|r| &mut r.preview_pids).unwrap();
        *preview = vec![0, 21];
        state.restarted(2, 0, 42);
        assert_eq!(state.active_pids, [0, 11, 42]);
        state.restarted(0, 0, 41);
        assert_eq!(state.active_pids, [41, 11, 42]);
        state.restarted(1, 11, 43);
        state.restarted(1, 21, 44);
        assert_eq!(state.active_pids, [41, 43, 42]);
        let preview = state.rollout.as_ref().map(|r| r.preview_pids.clone());
        assert_eq!(
            preview,
            Some(vec![0, 44]),
            "a preview's 0 is not an instance down"
        );
    }

    #[test]
    fn a_state_file_of_another_route_is_refused_naming_both_routes() {
        let mut state = promoted("v1", "v2");
        state.route = "web".into();
        let err = state.check_route("api").unwrap_err();
        assert!(err.contains("\"web\"") && err.contains("\"api\""), "{err}");
        assert!(!err.contains("blue: was edited"), "{err}");
        assert_eq!(state.check_route("web"), Ok(()));
        state.route.clear();
        assert_eq!(
            state.check_route("api"),
            Ok(()),
            "a never-written route is adopted"
        );
    }

    /// The state after a completed rollout from `blue` to `green`, started with `blue:` = `blue`.
    fn promoted(blue: &str, green: &str) -> ServiceState {
        let mut rollout = Rollout::new(1, Default::default(), Slot::Blue);
        rollout.phase = Phase::Completed;
        ServiceState {
            active: Some(Slot::Green),
            active_workload: Some(app(green)),
            spec_blue: Some(app(blue)),
            rollout: Some(RolloutRecord {
                rollout,
                preview_workload: app(green),
                preview_pids: Vec::new(),
                interrupted: false,
                active_workload: Some(app(blue)),
                timeline: Timeline::default(),
                preview_digest: None,
            }),
            ..ServiceState::default()
        }
    }

    /// check32: a run stopped while it kept the drained blue as the backup of a green that could
    /// not serve saved `retire_held: true`; the restart completes the rollout (the role swap was
    /// published) and must not show the completed rollout as still holding blue.
    #[test]
    fn a_restart_during_a_held_retirement_completes_without_the_hold() {
        let mut state = promoted("v1", "v2");
        state.active = Some(Slot::Blue);
        let record = state.rollout.as_mut().unwrap();
        record.rollout.phase = Phase::Retiring;
        record.rollout.retire_held = true;
        state.recover();
        let rollout = &state.rollout.as_ref().unwrap().rollout;
        assert_eq!(rollout.phase, Phase::Completed);
        assert!(!rollout.retire_held, "{rollout:?}");
    }

    /// A restart that completed a held rollout, then could not start green, falls back: blue is
    /// active again, the rollout is rolled back with green at 0, and the status says why. The
    /// spec's green is then not rolled out again by itself ([`ServiceState::already_tried`]).
    #[test]
    fn a_fall_back_after_a_completing_recovery_makes_the_replaced_workload_active_again() {
        let mut state = promoted("v1", "v2");
        state.active = Some(Slot::Blue);
        let record = state.rollout.as_mut().unwrap();
        record.rollout.phase = Phase::Retiring;
        record.rollout.retire_held = true;
        assert_eq!(state.recover().ended, Some(Phase::Completed));
        assert_eq!(state.active, Some(Slot::Green));

        let note = state.fall_back(Slot::Blue, app("v1"), "instance 0 exited");
        assert_eq!(state.active, Some(Slot::Blue));
        assert!(same_spec(
            state.active_workload.as_ref().unwrap(),
            &app("v1")
        ));
        let rollout = &state.rollout.as_ref().unwrap().rollout;
        assert_eq!(rollout.phase, Phase::RolledBack);
        assert_eq!((rollout.active, rollout.preview_bp), (Slot::Blue, 0));
        assert!(!rollout.retire_held);
        assert_eq!(rollout.message, note);
        assert!(
            note.contains("green could not start (instance 0 exited)"),
            "{note}"
        );
        let last = state.events.last().unwrap();
        assert_eq!((last.reason.as_str(), &last.message), ("Recovered", &note));
        assert!(
            matches!(
                state.already_tried(&app("v2"), None),
                Some(AlreadyTried::Ended {
                    phase: Phase::RolledBack,
                    ..
                })
            ),
            "the spec's green would be rolled out again"
        );
    }

    #[test]
    fn an_edited_blue_after_a_promotion_is_refused_naming_the_field_and_the_way_out() {
        let state = promoted("v1", "v2");
        assert_eq!(state.check_blue(&app("v1")), BlueCheck::ServeRecorded);
        assert_eq!(state.check_blue(&app("v2")), BlueCheck::Serve);
        let BlueCheck::Conflict(message) = state.check_blue(&app("v3")) else {
            panic!("an edited blue: must be refused");
        };
        for part in [
            "blue:",
            "rollout 1",
            "--version v2",
            "green:",
            "remove the state file",
        ] {
            assert!(message.contains(part), "{part}: {message}");
        }
    }

    /// Trial 12 M8: rollouts that ended without a promotion after the one that made the active
    /// workload active are not named as the one that did.
    #[test]
    fn an_edited_blue_refusal_names_the_rollout_that_made_the_active_workload_active() {
        let mut state = promoted("v1", "v2");
        // Rollout 2 to v3 rolled back, then rollout 3 to v4 aborted.
        for (id, green, phase) in [(2, "v3", Phase::RolledBack), (3, "v4", Phase::Aborted)] {
            state.begin(record(id, green));
            state.rollout.as_mut().unwrap().rollout.phase = phase;
        }
        let BlueCheck::Conflict(message) = state.check_blue(&app("v9")) else {
            panic!("an edited blue: must be refused");
        };
        assert!(message.contains("but rollout 1 made"), "{message}");
        // Nothing recorded completed to the active workload: no number.
        state.ended.clear();
        let BlueCheck::Conflict(message) = state.check_blue(&app("v9")) else {
            panic!("an edited blue: must be refused");
        };
        assert!(message.contains("but a rollout made"), "{message}");
    }

    #[test]
    fn an_edited_blue_without_a_promotion_serves_the_edit() {
        let state = ServiceState {
            active: Some(Slot::Blue),
            active_workload: Some(app("v1")),
            spec_blue: Some(app("v1")),
            ..ServiceState::default()
        };
        assert_eq!(state.check_blue(&app("v1")), BlueCheck::Serve);
        assert_eq!(
            state.check_blue(&app("v1.1")),
            BlueCheck::Edited(Box::new(app("v1")))
        );
        // A state file from before `spec_blue` was recorded, same answer.
        let legacy = ServiceState {
            spec_blue: None,
            ..state
        };
        assert_eq!(
            legacy.check_blue(&app("v1.1")),
            BlueCheck::Edited(Box::new(app("v1")))
        );
        assert_eq!(
            ServiceState::default().check_blue(&app("v1")),
            BlueCheck::Serve
        );
    }

    fn record(id: u64, green: &str) -> RolloutRecord {
        RolloutRecord {
            rollout: Rollout::new(id, Default::default(), Slot::Blue),
            preview_workload: app(green),
            preview_pids: Vec::new(),
            interrupted: false,
            active_workload: None,
            timeline: Timeline::default(),
            preview_digest: None,
        }
    }

    #[test]
    fn a_green_that_ended_is_not_retried_after_a_later_rollout_replaced_its_record() {
        let mut state = ServiceState {
            active: Some(Slot::Blue),
            active_workload: Some(app("v1")),
            ..ServiceState::default()
        };
        state.begin(record(1, "v2"));
        assert_eq!(state.already_tried(&app("v2"), None), None, "still running");
        state.rollout.as_mut().unwrap().rollout.phase = Phase::RolledBack;
        // `crossfade migrate` to v3, then a crash mid-rollout: recovery rolls v3 back.
        state.begin(record(2, "v3"));
        state.recover();
        let v2 = state
            .already_tried(&app("v2"), None)
            .expect("v2 ended: not retried");
        assert_eq!(
            v2,
            AlreadyTried::Ended {
                id: 1,
                phase: Phase::RolledBack,
                slot: Some(Slot::Green),
                digest: None,
            }
        );
        assert_eq!(
            v2.describe("v2", "v1"),
            "not starting the rollout to v2: rollout 1 rolled it back; v1 serves. Change the \
             green section, or use `crossfade migrate`, to try it again"
        );
        let v3 = state
            .already_tried(&app("v3"), None)
            .expect("v3 ended: not retried");
        assert_eq!(
            v3,
            AlreadyTried::Ended {
                id: 2,
                phase: Phase::RolledBack,
                slot: Some(Slot::Green),
                digest: None,
            }
        );
        assert_eq!(state.already_tried(&app("v4"), None), None);
    }

    /// newuser32 H: an ended rollout keeps the slot its preview ran in, which labels an unnamed
    /// green after a later rollout (a `crossfade migrate`) made that slot the active one; it was
    /// labelled by the slot other than the active one, the wrong one then. State files written
    /// before it was recorded read as `None`.
    #[test]
    fn an_ended_rollout_keeps_the_slot_its_preview_ran_in() {
        let mut state = ServiceState::default();
        let mut first = record(1, "v2");
        first.rollout.phase = Phase::RolledBack;
        state.begin(first);
        // A migrate to v3 completed: green (where v2 ran) is the active slot now.
        let mut second = record(2, "v3");
        second.rollout.phase = Phase::Completed;
        state.begin(second);
        state.active = Some(Slot::Green);
        let Some(AlreadyTried::Ended { id: 1, slot, .. }) = state.already_tried(&app("v2"), None)
        else {
            panic!("v2 ended");
        };
        assert_eq!(slot, Some(Slot::Green));
        let mut saved = serde_json::to_value(&state).unwrap();
        assert_eq!(saved["ended"][0]["preview_slot"], "green");
        saved["ended"][0]
            .as_object_mut()
            .unwrap()
            .remove("preview_slot");
        let older: ServiceState = serde_json::from_value(saved).unwrap();
        assert_eq!(older.ended[0].preview_slot, None);
    }

    /// The same for a rollout that completed: its green ran in the slot the completion made the
    /// active one, not in the other (check33: recorded as the one it replaced).
    #[test]
    fn a_completed_rollout_keeps_the_slot_its_preview_ran_in() {
        let mut state = ServiceState::default();
        let mut first = record(1, "v2");
        first.rollout.phase = Phase::Completed;
        first.rollout.active = Slot::Green;
        state.begin(first);
        let Some(AlreadyTried::Ended { id: 1, slot, .. }) = state.already_tried(&app("v2"), None)
        else {
            panic!("v2 ended");
        };
        assert_eq!(slot, Some(Slot::Green), "the last record");
        // A migrate to v3 (blue to green's place: it ran in blue) completed since.
        let mut second = record(2, "v3");
        second.rollout = Rollout::new(2, Default::default(), Slot::Green);
        second.rollout.phase = Phase::Completed;
        second.rollout.active = Slot::Blue;
        state.begin(second);
        state.active = Some(Slot::Blue);
        state.active_workload = Some(app("v3"));
        let Some(AlreadyTried::Ended { id: 1, slot, .. }) = state.already_tried(&app("v2"), None)
        else {
            panic!("v2 ended");
        };
        assert_eq!(slot, Some(Slot::Green), "an ended one");
    }

    /// Trial 13 N15: a restart with nothing to recover records itself as the latest event, with
    /// the saved rollout's phase and end, after the previous run's events.
    #[test]
    fn a_restart_with_nothing_to_recover_is_the_latest_event() {
        let mut state = promoted("v1", "v2");
        let record = state.rollout.as_mut().expect("the record");
        record.timeline.ended_at_unix_seconds = Some(1_796_217_947.5);
        state
            .events
            .push(StatusEvent::now("Completed", "completed"));
        assert!(state.recover().note.is_none());
        state.note_restored(4242);
        let reasons: Vec<&str> = state.events.iter().map(|e| e.reason.as_str()).collect();
        assert_eq!(reasons, ["Completed", "Restored"]);
        assert_eq!(
            state.events[1].message,
            "crossfade restarted from its state file (pid 4242); rollout 1 ended Completed at \
             2026-12-02T13:25:47.500Z, before the restart"
        );
        let mut fresh = ServiceState::default();
        fresh.note_restored(7);
        assert_eq!(
            fresh.events[0].message,
            "crossfade restarted from its state file (pid 7); no rollout yet"
        );
    }

    /// Trial 28: a run killed after it saved its rollout `Completed` but before it saved the
    /// promoted slot as active left a file whose `active` is the retired slot; the restart
    /// served the retired version and stopped the promoted one. The completed record decides.
    #[test]
    fn a_completed_rollout_whose_role_swap_was_not_saved_makes_the_promoted_slot_active() {
        let mut state = ServiceState {
            active: Some(Slot::Blue),
            active_workload: Some(app("v1")),
            active_pids: vec![11, 12],
            ..ServiceState::default()
        };
        let mut completed = record(1, "v2");
        completed.rollout.phase = Phase::Completed;
        completed.rollout.active = Slot::Green;
        completed.preview_pids = vec![21];
        state.begin(completed);
        let recovery = state.recover();
        assert_eq!(state.active, Some(Slot::Green));
        assert_eq!(state.active_workload, Some(app("v2")));
        assert_eq!(recovery.note, None, "nothing was left unfinished");
        assert_eq!(
            recovery.ended, None,
            "counted as ended by the run that completed it"
        );
        let tried = state.already_tried(&app("v2"), None);
        assert_eq!(
            tried,
            Some(AlreadyTried::Active {
                completed_by: Some(1)
            })
        );

        // Saved as the run left it after its last save: nothing changes.
        let mut state = ServiceState {
            active: Some(Slot::Green),
            active_workload: Some(app("v2")),
            ..ServiceState::default()
        };
        let mut completed = record(1, "v2");
        completed.rollout.phase = Phase::Completed;
        completed.rollout.active = Slot::Green;
        state.begin(completed);
        state.recover();
        assert_eq!(state.active, Some(Slot::Green));
        assert_eq!(state.active_workload, Some(app("v2")));
    }

    /// A rollout that a restart ended reports how long it ran, from the start its record
    /// persisted; a record without a start (an older state file) reports none.
    #[test]
    fn recovery_reports_the_time_from_the_persisted_start_to_the_recovery() {
        let mut state = ServiceState::default();
        let mut progressing = record(1, "v2");
        progressing.rollout.phase = Phase::Progressing;
        progressing.timeline = Timeline::starting(crate::timeline::unix_now() - 90.0);
        state.begin(progressing);
        let recovery = state.recover();
        assert_eq!(recovery.ended, Some(Phase::RolledBack));
        let took = recovery.took.expect("a start was persisted").as_secs_f64();
        // At least the 90 s since the persisted start; the bound above only catches a wrong
        // origin (0 or a unit error), not speed.
        assert!((90.0..3600.0).contains(&took), "{took}");

        let mut older = ServiceState::default();
        let mut progressing = record(2, "v3");
        progressing.rollout.phase = Phase::Progressing;
        older.begin(progressing);
        let recovery = older.recover();
        assert_eq!(recovery.ended, Some(Phase::RolledBack));
        assert_eq!(recovery.took, None, "no start in the record");

        // Nothing unfinished: nothing ended, no duration.
        assert_eq!(ServiceState::default().recover().took, None);
    }

    /// Crash35: a run killed while an operator's abort was under way (`Aborting`: green's weight
    /// going back to 0, then green stopped) was recovered `RolledBack`, counted as a rollback
    /// (`crossfade_rollouts_total{outcome="rolled_back"}`, the rollback alert) though the
    /// operator had asked for the abort. It ends `Aborted`, saying so; a rollback under way
    /// still ends `RolledBack`.
    #[test]
    fn a_restart_during_an_abort_ends_the_rollout_aborted() {
        for (was, ended, words) in [
            (
                Phase::Aborting,
                Phase::Aborted,
                "aborted as the operator asked",
            ),
            (Phase::RollingBack, Phase::RolledBack, "rolled back"),
        ] {
            let mut state = ServiceState::default();
            let mut record = record(1, "v2");
            record.rollout.phase = was;
            record.rollout.applied_bp = 2000;
            state.begin(record);
            assert_eq!(state.recover().ended, Some(ended), "{was:?}");
            let rollout = &state.rollout.as_ref().expect("the record").rollout;
            assert_eq!((rollout.phase, rollout.applied_bp), (ended, 0), "{was:?}");
            let said = format!("crossfade restarted in {was:?}: {words}; blue stays active");
            assert_eq!(rollout.message, said);
        }
    }

    /// The report of a rollout that a restart ended has an end: the recovery, the same time its
    /// duration is measured to. It had none (`crossfade report` said "ended: not recorded" and
    /// measured "took" to the last sample). A rollout that had already ended keeps its own end.
    #[test]
    fn recovery_records_the_end_of_the_rollout_it_ended_for_its_report() {
        let start = crate::timeline::unix_now() - 90.0;
        let mut state = ServiceState::default();
        let mut progressing = record(1, "v2");
        progressing.rollout.phase = Phase::Progressing;
        progressing.timeline = Timeline::starting(start);
        state.begin(progressing);
        let recovery = state.recover();
        let timeline = &state.rollout.as_ref().expect("the record").timeline;
        let ended = timeline.ended_at_unix_seconds.expect("the recovery's end");
        let took = recovery.took.expect("a start was persisted").as_secs_f64();
        assert!(
            (ended - start - took).abs() < 1e-6,
            "{ended} {start} {took}"
        );
        assert!(
            (timeline.duration_seconds() - took).abs() < 1e-6,
            "{timeline:?}"
        );
        let report = crate::report::ReportData::from_state(&state)
            .expect("a rollout recovery ended can be reported")
            .render();
        assert!(!report.contains("not recorded"), "{report}");
        assert!(report.contains("1m 30s"), "took: {report}");

        let mut over = ServiceState::default();
        let mut completed = record(2, "v3");
        completed.rollout.phase = Phase::Completed;
        completed.timeline = Timeline::starting(start);
        completed.timeline.ended_at_unix_seconds = Some(start + 30.0);
        over.begin(completed);
        assert_eq!(over.recover().ended, None);
        let timeline = &over.rollout.as_ref().expect("the record").timeline;
        assert_eq!(timeline.ended_at_unix_seconds, Some(start + 30.0));
    }

    /// Trial 12 M7: a restart after later rollouts says what happened to the spec's green in
    /// words that are true now, not the old rollout's message.
    #[test]
    fn a_green_already_tried_is_described_by_how_it_ended_and_what_serves_now() {
        let mut state = promoted("v1", "v2");
        let active = state.already_tried(&app("v2"), None).expect("v2 is active");
        assert_eq!(
            active,
            AlreadyTried::Active {
                completed_by: Some(1)
            }
        );
        assert_eq!(
            active.describe("v2", "v2"),
            "not starting the rollout to v2: rollout 1 already rolled it out, and it serves now"
        );
        // Rollout 2 (migrate) promoted v3: v2 completed earlier and was replaced.
        state.begin(record(2, "v3"));
        state.rollout.as_mut().unwrap().rollout.phase = Phase::Completed;
        state.active_workload = Some(app("v3"));
        let replaced = state.already_tried(&app("v2"), None).expect("v2 ended");
        let line = replaced.describe("v2", "v3");
        assert_eq!(
            line,
            "not starting the rollout to v2: rollout 1 rolled it out, and a later rollout \
             replaced it; v3 serves. Change the green section, or use `crossfade migrate`, to try \
             it again"
        );
        assert!(!line.contains("green is active"), "{line}");
    }

    #[test]
    fn ended_rollouts_keep_one_entry_per_green_and_at_most_max_ended() {
        let mut state = ServiceState::default();
        for id in 1..=(MAX_ENDED as u64 + 10) {
            state.begin(record(id, &format!("v{}", id % 2)));
            state.rollout.as_mut().unwrap().rollout.phase = Phase::Aborted;
        }
        let ids: Vec<u64> = state.ended.iter().map(|e| e.id).collect();
        assert_eq!(ids, [MAX_ENDED as u64 + 8, MAX_ENDED as u64 + 9]);
        for id in 1..=(MAX_ENDED as u64 + 10) {
            state.begin(record(1000 + id, &format!("w{id}")));
            state.rollout.as_mut().unwrap().rollout.phase = Phase::Completed;
        }
        assert_eq!(state.ended.len(), MAX_ENDED);
        assert!(
            state.already_tried(&app("v0"), None).is_none(),
            "the oldest dropped"
        );
    }

    /// A file that is JSON but not a state document (`{}`, `[]`, another format version with
    /// unknown fields) takes the corrupt path: the backup is loaded, the file kept as
    /// `.corrupt`, and the note names the file and the field.
    #[test]
    fn json_that_is_not_a_state_document_starts_from_the_backup() {
        use crate::store::StateFile;
        let cases = [
            ("{}", "missing field `route`"),
            ("[]", "not the JSON object a state document is"),
            (r#"{"version":99,"garbage":true}"#, "field `version`: 99"),
            (
                r#"{"version":1,"route":"web","active_pids":[],"last_rollout_id":0,"events":[],"garbage":true}"#,
                "unknown field `garbage`",
            ),
        ];
        for (text, field) in cases {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("state.json");
            let file = StateFile::new(&path);
            let good = ServiceState {
                route: "web".into(),
                active: Some(Slot::Green),
                active_workload: Some(app("v2")),
                ..ServiceState::default()
            };
            file.save(&good).unwrap();
            std::fs::write(&path, text).unwrap();
            let (state, note) = file.load_or_backup::<ServiceState>().unwrap();
            let state = state.expect("the backup is loaded");
            assert_eq!(state.active, Some(Slot::Green), "{text}");
            assert_eq!(state.version, StateVersion::CURRENT);
            let note = note.expect("a note says why");
            assert!(note.contains(&path.display().to_string()), "{note}");
            assert!(note.contains(field), "{text}: {note}");
            let aside = dir.path().join("state.json.corrupt");
            assert_eq!(std::fs::read_to_string(aside).unwrap(), text);
        }
    }

    /// A state file written before `version` was recorded (all other fields as ever written)
    /// loads as format 1; a saved one carries `"version": 1`.
    #[test]
    fn a_file_without_version_is_format_1_and_saves_write_it() {
        let legacy = r#"{"route":"web","active":"blue","active_workload":null,"active_pids":[7],"last_rollout_id":2,"rollout":null,"events":[]}"#;
        let state: ServiceState = serde_json::from_str(legacy).unwrap();
        assert_eq!(state.version, StateVersion::CURRENT);
        assert_eq!(state.active_pids, vec![7]);
        let saved = serde_json::to_value(&state).unwrap();
        assert_eq!(saved["version"], 1);
        let again: ServiceState = serde_json::from_value(saved).unwrap();
        assert_eq!(again.last_rollout_id, 2);
    }

    /// Session 38: `active_backoff` (each active instance's restart backoff) is optional: a file
    /// written before it loads with none; one with it keeps it through a save and a load; with
    /// no instance in a backoff it is not written at all (the file reads as before); and a
    /// recovery drops it with the pids (the start that adopts them puts it back).
    #[test]
    fn active_backoff_is_optional_kept_when_saved_and_left_out_when_none() {
        let before = r#"{"version":1,"route":"web","active":"blue","active_pids":[7,8],"last_rollout_id":2,"events":[]}"#;
        let mut state: ServiceState = serde_json::from_str(before).unwrap();
        assert!(state.active_backoff.is_empty());
        state.active_backoff = vec![None, None];
        let saved = serde_json::to_value(&state).unwrap();
        assert!(saved.get("active_backoff").is_none(), "{saved}");

        let waiting = Backoff {
            exits_in_a_row: 4,
            next_restart_in_ms: 8_000,
            restart_due_unix_ms: Some(1_780_000_000_000),
            ready_since_unix_ms: None,
        };
        state.active_backoff = vec![None, Some(waiting)];
        let saved = serde_json::to_value(&state).unwrap();
        assert_eq!(saved["active_backoff"][1]["next_restart_in_ms"], 8_000);
        let again: ServiceState = serde_json::from_value(saved).unwrap();
        assert_eq!(again.active_backoff, [None, Some(waiting)]);

        let unknown = r#"{"version":1,"route":"web","active_pids":[7],"last_rollout_id":0,"events":[],"active_backoff":[{"exits_in_a_row":1,"next_restart_in_ms":500,"nope":1}]}"#;
        let refused = serde_json::from_str::<ServiceState>(unknown).unwrap_err();
        assert!(refused.to_string().contains("nope"), "{refused}");

        let mut state = again;
        state.recover();
        assert!(state.active_backoff.is_empty());
    }

    /// A green of the same spec whose program is another build than the rolled-back one (both
    /// digests known and different) is not "already tried"; the same build, or a digest unknown
    /// on either side (older state files, an unreadable program), still is.
    #[test]
    fn a_rebuilt_green_is_not_already_tried() {
        let mut state = ServiceState::default();
        let mut rolled_back = record(1, "v2");
        rolled_back.rollout.phase = Phase::RolledBack;
        rolled_back.preview_digest = Some("sha256:aa".into());
        state.begin(rolled_back);
        let ended = Some(AlreadyTried::Ended {
            id: 1,
            phase: Phase::RolledBack,
            slot: Some(Slot::Green),
            digest: Some("sha256:aa".into()),
        });
        assert_eq!(state.already_tried(&app("v2"), Some("sha256:bb")), None);
        assert_eq!(state.already_tried(&app("v2"), Some("sha256:aa")), ended);
        assert_eq!(state.already_tried(&app("v2"), None), ended);
        // Moved to `ended` by a later rollout, it keeps its digest.
        state.begin(record(2, "v3"));
        assert_eq!(state.already_tried(&app("v2"), Some("sha256:bb")), None);
        assert_eq!(state.already_tried(&app("v2"), Some("sha256:aa")), ended);
    }

    /// Session 40: the line for a rebuilt green named only the new build's digest, in words that
    /// read as the old one's (`... than the one rollout 1 rolled back (sha256:bb)`).
    #[test]
    fn the_rebuilt_green_line_names_the_new_build_and_the_one_the_rollout_ran() {
        let mut state = ServiceState::default();
        let mut rolled_back = record(1, "v2");
        rolled_back.rollout.phase = Phase::RolledBack;
        rolled_back.preview_digest = Some("sha256:aa".into());
        state.begin(rolled_back);
        let tried = state.already_tried(&app("v2"), None).expect("v2 ended");
        assert_eq!(
            tried.rebuilt("v2", Some("sha256:bb")).as_deref(),
            Some(
                "v2's program is another build than the one rollout 1 rolled back (now \
                 sha256:bb; rollout 1 ran sha256:aa): rolling it out"
            )
        );
        let active = AlreadyTried::Active { completed_by: None };
        assert_eq!(active.rebuilt("v2", Some("sha256:bb")), None);
    }
}
