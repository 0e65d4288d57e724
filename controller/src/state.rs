//! What a local-mode service persists, and how a restarted `crossfade run` recovers from it.
//!
//! Recovery rule: a rollout that had not reached `Promoted` is **rolled back** (its preview is
//! discarded and the recorded active workload serves); a rollout in `Promoted` or `Retiring` (the role
//! swap was published) is **completed** (the preview's workload becomes the active one). Either way the
//! processes recorded by the previous instance are stopped first, since the new instance starts its own.

use serde::{Deserialize, Serialize};

use crossfade_proxy::weight::Slot;

use crate::rollout::{Phase, Rollout};
use crate::spec::WorkloadSpec;

/// The most events kept in the state and shown in status.
pub const MAX_EVENTS: usize = 50;

/// A local-mode service's persisted state (the state file's JSON document).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ServiceState {
    /// The route served.
    pub route: String,
    /// The slot serving as active; `None` until first written.
    pub active: Option<Slot>,
    /// The workload serving as active (after a completed rollout, the former preview's spec).
    pub active_workload: Option<WorkloadSpec>,
    /// Process ids of the active workload's instances, for orphan clean-up after a crash.
    pub active_pids: Vec<u32>,
    /// The spec's `blue:` section when this state was last started (to tell an edited `blue:` from
    /// an unchanged one after a rollout made another workload active). `None` in state files
    /// written before it was recorded.
    pub spec_blue: Option<WorkloadSpec>,
    /// The id of the last rollout started; the next one gets this plus one.
    pub last_rollout_id: u64,
    /// The current or last rollout.
    pub rollout: Option<RolloutRecord>,
    /// Recent events, oldest first.
    pub events: Vec<StatusEvent>,
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
}

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
}

impl ServiceState {
    /// Applies the recovery rule (module docs) to a state loaded at start.
    pub fn recover(&mut self) -> Recovery {
        let mut orphan_pids = std::mem::take(&mut self.active_pids);
        let mut note = None;
        if let Some(record) = &mut self.rollout {
            orphan_pids.append(&mut record.preview_pids);
            let rollout = &mut record.rollout;
            if !rollout.is_terminal() {
                let preview = rollout.preview();
                let was = format!("{:?}", rollout.phase);
                let text = if matches!(rollout.phase, Phase::Promoted | Phase::Retiring) {
                    self.active = Some(preview);
                    self.active_workload = Some(record.preview_workload.clone());
                    rollout.phase = Phase::Completed;
                    rollout.active = preview;
                    format!("crossfade restarted in {was}: the role swap was already published, so the rollout is completed; {preview} is active")
                } else {
                    rollout.phase = Phase::RolledBack;
                    rollout.preview_bp = 0;
                    rollout.applied_bp = 0;
                    format!(
                        "crossfade restarted in {was}: rolled back; {} stays active",
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
            }
        }
        Recovery { orphan_pids, note }
    }

    /// True when `green` is the workload serving now or the preview of the last rollout that ended
    /// rolled back or aborted, a rollback by restart recovery included: `crossfade run` then does not
    /// start the same rollout again (README "Restart"), so a restart leaves blue serving alone and a
    /// green that crashes its controller is not rolled out again on every start.
    pub fn already_tried(&self, green: &WorkloadSpec) -> Option<String> {
        let same = |a: &WorkloadSpec| same_spec(a, green);
        if self.active_workload.as_ref().is_some_and(same) {
            return Some("the green workload is already active".into());
        }
        let record = self.rollout.as_ref()?;
        let failed = matches!(record.rollout.phase, Phase::RolledBack | Phase::Aborted);
        (failed && same(&record.preview_workload)).then(|| {
            format!(
                "rollout {} to this green workload ended {:?} ({}); change the green section, or use `crossfade migrate`, to try again",
                record.rollout.id, record.rollout.phase, record.rollout.message
            )
        })
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
        let id = self
            .rollout
            .as_ref()
            .map(|r| r.rollout.id)
            .unwrap_or_default();
        BlueCheck::Conflict(format!(
            "blue: was edited, but rollout {id} made {} ({}) the active workload, recorded in the \
             state file; refusing to guess which to serve. To roll out the edited version, move it \
             to green: and set blue: back to what it was (or to the active workload); to serve the \
             active workload, set blue: to it; to start from the spec alone, remove the state file",
            self.active.unwrap_or(Slot::Blue),
            active.describe()
        ))
    }
}

fn same_spec(a: &WorkloadSpec, b: &WorkloadSpec) -> bool {
    serde_json::to_value(a).ok() == serde_json::to_value(b).ok()
}

/// Stops processes recorded by a previous instance: only those still running whose command line
/// still names `command` (a recycled pid belonging to something else is left alone).
pub fn stop_orphans(pids: &[u32], commands: &[&str]) {
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
        }
    }
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
            }),
            ..ServiceState::default()
        }
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
}
