//! The parts of [`ServiceStatus`] that depend on when it is read: the current step's hold and
//! the active instances waiting out a restart backoff (trial 9, I14).

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use crossfade_proxy::weight::Slot;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::ServiceStatus;
use crate::rollout::HoldClock;
use crate::timeline::rfc3339_of;

/// The current step's hold as `GET /rollout` shows it while a step holds (field `hold`).
///
/// Times are RFC 3339 in UTC with milliseconds (`2026-12-01T22:31:05.120Z`); durations are
/// seconds with millisecond precision, measured when the answer was made. The step advances once
/// `left_seconds` is 0 **and** its latest analysis passed; a resume starts the hold from zero
/// again (see [`HoldClock`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HoldStatus {
    /// When the hold started: the step's weight was applied, or the rollout was resumed.
    pub started_at: String,
    /// When the hold ends (`started_at` plus `hold_seconds`).
    pub ends_at: String,
    /// The step's configured hold, seconds.
    pub hold_seconds: f64,
    /// Seconds since `started_at`.
    pub elapsed_seconds: f64,
    /// Seconds until `ends_at`; 0 once the hold is over.
    pub left_seconds: f64,
    /// Seconds until the current analysis window is judged; 0 while it is being judged.
    pub next_analysis_in_seconds: f64,
}

/// How an [`InstanceRestart`]'s `cause` begins when the instance's last start failed (`cannot be
/// started again (No such file or directory (os error 2))`), rather than its process exited.
pub(crate) const START_FAILED: &str = "cannot be started again";

/// An active instance that exited on its own, from its exit until its restart passed readiness,
/// as the driver knows it: waiting out its restart backoff, then (`started`) started again and
/// not ready yet. Its endpoint is withdrawn from the route meanwhile (field `restarting` of
/// `GET /rollout`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstanceRestart {
    /// The slot the instance serves in.
    pub backend: Slot,
    /// Which instance of the workload (0-based).
    pub instance: usize,
    /// Its endpoint in the route (the restarted process listens there again, unless its port was
    /// taken: `started.endpoint`).
    pub endpoint: SocketAddr,
    /// Why it is down: the exit status (`exit status: 1`), or why the last start failed.
    pub cause: String,
    /// When the next start is due, RFC 3339 in UTC with milliseconds.
    pub restart_at: String,
    /// Seconds until then, measured when the answer was made; 0 once due.
    pub restart_in_seconds: f64,
    /// When the next start is due on the runtime's clock (in memory only).
    #[serde(skip)]
    pub(crate) due: Option<Instant>,
    /// Once started again, until it passes readiness: the new process. Absent while the backoff
    /// runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<StartedAgain>,
}

/// The process an [`InstanceRestart`] started again, not ready yet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StartedAgain {
    /// Its process id.
    pub pid: u32,
    /// Where it listens: the instance's endpoint, or another port of the same host when that
    /// port was taken by another process (the route moves to it once it is ready).
    pub endpoint: SocketAddr,
    /// When it was started, RFC 3339 in UTC with milliseconds.
    pub started_at: String,
    /// When its workload's `readiness.deadline` passes, RFC 3339 in UTC with milliseconds: not
    /// ready by then, it is stopped and started again after the backoff (event
    /// `ActiveNotReady`). Absent from a status written before session 35.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_by: Option<String>,
}

// === impl HoldStatus ===

impl HoldStatus {
    /// `clock` read at the wall-clock time `wall` (the same moment as the clock's `now`).
    pub fn of(clock: &HoldClock, wall: SystemTime) -> HoldStatus {
        let started = wall.checked_sub(clock.elapsed).unwrap_or(wall);
        HoldStatus {
            started_at: rfc3339_of(started),
            ends_at: rfc3339_of(started + clock.hold),
            hold_seconds: seconds(clock.hold),
            elapsed_seconds: seconds(clock.elapsed),
            left_seconds: seconds(clock.left),
            next_analysis_in_seconds: seconds(clock.next_analysis_in),
        }
    }
}

// === impl InstanceRestart ===

impl InstanceRestart {
    /// Instance `instance` of `backend` at `endpoint` exited (`cause`) and starts again after
    /// `restart_in`, counted from `now` (runtime clock) and `wall` (the same moment).
    pub(crate) fn new(
        (backend, instance, endpoint): (Slot, usize, SocketAddr),
        cause: String,
        restart_in: Duration,
        (now, wall): (Instant, SystemTime),
    ) -> InstanceRestart {
        InstanceRestart {
            backend,
            instance,
            endpoint,
            cause,
            restart_at: rfc3339_of(wall + restart_in),
            restart_in_seconds: seconds(restart_in),
            due: Some(now + restart_in),
            started: None,
        }
    }
}

// === impl ServiceStatus ===

impl ServiceStatus {
    /// This status with its time-dependent fields measured at `now` (runtime clock) and `wall` (the
    /// same moment): `hold` from the running rollout's step clock, `restarting[].restart_in_seconds`.
    pub fn at(mut self, now: Instant, wall: SystemTime) -> ServiceStatus {
        let rollout = self.rollout.as_ref().filter(|_| self.running);
        self.hold = rollout
            .and_then(|r| r.hold_clock(now))
            .map(|clock| HoldStatus::of(&clock, wall));
        for restart in &mut self.restarting {
            if let Some(due) = restart.due {
                restart.restart_in_seconds = seconds(due.saturating_duration_since(now));
            }
        }
        self
    }
}

/// Seconds with millisecond precision.
fn seconds(d: Duration) -> f64 {
    d.as_millis() as f64 / 1000.0
}

/// A duration of `seconds` as people read it: `250ms` under a second, else whole seconds
/// (`8s`, `1m 10s`).
pub(super) fn short(seconds: f64) -> String {
    let s = if seconds.is_finite() {
        seconds.max(0.0)
    } else {
        0.0
    };
    let d = if s < 1.0 {
        Duration::from_millis((s * 1000.0).round() as u64)
    } else {
        Duration::from_secs(s.round() as u64)
    };
    crate::spec::human(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hold_clock_is_shown_in_wall_clock_time_and_seconds() {
        let now = Instant::now();
        let clock = HoldClock {
            started: now,
            hold: Duration::from_secs(150),
            elapsed: Duration::from_millis(70_250),
            left: Duration::from_millis(79_750),
            next_analysis_in: Duration::from_millis(79_750),
        };
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_250_000);
        let status = HoldStatus::of(&clock, wall);
        assert_eq!(status.started_at, "2026-12-02T22:18:49.750Z");
        assert_eq!(status.ends_at, "2026-12-02T22:21:19.750Z");
        assert_eq!(status.hold_seconds, 150.0);
        assert_eq!(status.elapsed_seconds, 70.25);
        assert_eq!(status.left_seconds, 79.75);
        assert_eq!(short(status.elapsed_seconds), "1m 10s");
        assert_eq!(short(0.25), "250ms");
        assert_eq!(short(f64::NAN), "0s");
    }
}
