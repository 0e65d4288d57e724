//! What `run --exit-after-rollout` reports when it starts no rollout because the state file says
//! how the spec's green already ended (README "Restart"): that rollout's outcome, not the last
//! rollout's, which may be a later `crossfade migrate` to another version (trial 22).

use std::process::ExitCode;

use crossfade_controller::rollout::Phase;
use crossfade_controller::service::ServiceStatus;
use crossfade_controller::state::{AlreadyTried, ServiceState};

use crate::serve::{outcome_line, EXIT_ROLLED_BACK};

/// The earlier rollout that decided the spec's green, as the state file recorded it at start.
#[derive(Clone, Debug, PartialEq)]
pub struct Earlier {
    /// Its id; `None` when the green serves and the rollout that completed it is no longer
    /// recorded (the state file keeps one ended rollout per workload, the last).
    pub id: Option<u64>,
    /// How it ended; `Completed` when the green serves.
    pub phase: Phase,
    /// Its final message, or why no rollout starts when none is recorded.
    pub message: String,
    /// The spec's green, by its `name:` (or its slot).
    pub green: String,
}

// === impl Earlier ===

impl Earlier {
    /// The earlier outcome `tried` names, its message read from `state`; `why` is the log line
    /// that says why no rollout starts ([`AlreadyTried::describe`]), used when none is recorded.
    pub fn of(state: &ServiceState, tried: &AlreadyTried, green: &str, why: &str) -> Earlier {
        let (id, phase) = match *tried {
            AlreadyTried::Active { completed_by } => (completed_by, Phase::Completed),
            AlreadyTried::Ended { id, phase, .. } => (Some(id), phase),
        };
        let recorded = id.and_then(|id| {
            let last = state.rollout.as_ref().filter(|r| r.rollout.id == id);
            last.map(|r| r.rollout.message.clone()).or_else(|| {
                let ended = state.ended.iter().rev().find(|e| e.id == id);
                ended.map(|e| e.message.clone())
            })
        });
        Earlier {
            id,
            phase,
            message: recorded.unwrap_or_else(|| why.to_owned()),
            green: green.to_owned(),
        }
    }

    /// 0 when the green was completed (it serves, or served until a later rollout replaced
    /// it), [`EXIT_ROLLED_BACK`] when it was rolled back or aborted.
    pub fn code(&self) -> ExitCode {
        ExitCode::from(self.exit_code())
    }

    /// [`Earlier::code`] as a number, for the outcome line.
    fn exit_code(&self) -> u8 {
        if self.phase == Phase::Completed {
            0
        } else {
            EXIT_ROLLED_BACK
        }
    }

    /// The outcome line: [`outcome_line`] when `status`'s last rollout is this one (its versions
    /// are known), else this rollout's own (`rollout 1 (an earlier run's; not started again)
    /// RolledBack (to v2), exit 3: ...`), or with `json` the same object, `from_version` null.
    pub fn line(&self, status: &ServiceStatus, json: bool) -> String {
        let code = self.code();
        let last = status.rollout.as_ref().map(|r| r.id);
        if self.id.is_some() && self.id == last {
            return outcome_line(status, &code, json, true);
        }
        let exit_code = self.exit_code();
        if json {
            return serde_json::json!({
                "route": status.route,
                "rollout": self.id,
                "outcome": self.id.map(|_| self.phase.as_str()),
                "from_version": null,
                "to_version": self.green,
                "message": self.message,
                "exit_code": exit_code,
                "earlier_run": self.id.is_some(),
            })
            .to_string();
        }
        match self.id {
            Some(id) => format!(
                "rollout {id} (an earlier run's; not started again) {} (to {}), exit {exit_code}: {}",
                self.phase, self.green, self.message
            ),
            None => format!(
                "route {}: no rollout ran, exit {exit_code}: {}",
                status.route, self.message
            ),
        }
    }
}
