//! The rollback's capacity rule: weight goes back to the active backend no faster than its healthy
//! endpoints can carry it (case C02, rollback variant; argo-rollouts#3941).

use crossfade_proxy::weight::FULL_BP;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::machine::{event, pct};
use super::{Command, Phase, Rollout};

/// How much more than its share one endpoint may be asked to carry during a rollback, in
/// thousandths: 1500 = 1.5 × the share it has when every endpoint of its backend is healthy.
pub const ROLLBACK_OVERLOAD_PERMILLE: u64 = 1_500;

/// How many of one backend's endpoints take requests now, as the data plane sees them (local mode:
/// the proxy's per-endpoint health, `GET /status` `routes[].<slot>.health[].healthy`, less the
/// active instances that cannot serve, exited or restarted and not ready yet:
/// [`crate::traffic::TrafficSetter::capacity`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    /// Endpoints that pass their health checks and are not ejected.
    pub healthy: u32,
    /// Endpoints configured for the backend (one per instance), healthy or not.
    pub total: u32,
}

/// Both backends' [`Capacity`] at one reading, reported with [`super::Input::Capacity`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacities {
    /// The active backend's (the one a rollback sends traffic back to).
    pub active: Capacity,
    /// The preview backend's (the one a rollback takes traffic from).
    pub preview: Capacity,
}

/// The most weight, in basis points of the route, that the active backend may have during a
/// rollback with `active` capacity: [`ROLLBACK_OVERLOAD_PERMILLE`] × healthy / total of the route,
/// at most 10000. 1 of 3 healthy → 5000 (each healthy endpoint carries 1.5 × its share), 2 of 3 →
/// 10000. A backend with no configured endpoint has no known capacity and is not capped (10000).
pub fn active_cap_bp(active: Capacity) -> u32 {
    if active.total == 0 {
        return FULL_BP;
    }
    let cap = u64::from(FULL_BP) * ROLLBACK_OVERLOAD_PERMILLE * u64::from(active.healthy)
        / (1_000 * u64::from(active.total));
    u32::try_from(cap.min(u64::from(FULL_BP))).unwrap_or(FULL_BP)
}

/// The preview weight, in basis points, that a rollback publishes next when the preview holds
/// `applied_bp` now.
///
/// - `hard` (the preview fails hard: crashed, failed its readiness, tripped its breaker, or its
///   analysis failed with half or more of its requests in error), no reading (`None`: a data plane
///   that reports no capacity), or a preview with no healthy endpoint: 0 at once, since any
///   capacity beats none.
/// - Otherwise the preview keeps what the active backend cannot carry yet ([`active_cap_bp`]),
///   never more than it holds now: a rollback never raises the preview's weight, and an active
///   backend with no healthy endpoint leaves the preview where it is (the route always keeps a
///   healthy backend).
pub fn rollback_preview_bp(applied_bp: u32, capacity: Option<Capacities>, hard: bool) -> u32 {
    let Some(capacity) = capacity.filter(|_| !hard) else {
        return 0;
    };
    if capacity.preview.healthy == 0 {
        return 0;
    }
    applied_bp.min(FULL_BP - active_cap_bp(capacity.active))
}

// === impl Rollout ===

impl Rollout {
    /// The preview weight the rollback in progress aims at now (see [`rollback_preview_bp`]).
    pub(super) fn rollback_target(&self) -> u32 {
        rollback_preview_bp(self.applied_bp, self.capacity, self.hard_undo)
    }

    /// Whether a rollback or abort holds the preview above 0 until the active backend has the
    /// capacity for its traffic.
    pub(super) fn waits_for_capacity(&self) -> bool {
        matches!(self.phase, Phase::RollingBack | Phase::Aborting)
            && !self.weights_pending
            && self.applied_bp > 0
    }

    /// A new capacity reading: kept, and while a rollback waits for the active backend's capacity,
    /// the next lower preview weight is requested (or the message tells the new reading).
    pub(super) fn on_capacity(&mut self, capacity: Capacities, now: Instant) -> Vec<Command> {
        if self.capacity == Some(capacity) {
            return Vec::new();
        }
        self.capacity = Some(capacity);
        if self.weights_pending {
            // 0 requested, not applied yet: the preview still runs, and gets its share back if
            // the active backend can no longer carry it (session 44).
            return match self.share_back() {
                Some(back) => self.give_share_back(back, "before 0% was applied", now),
                None => Vec::new(),
            };
        }
        if !self.waits_for_capacity() {
            return Vec::new();
        }
        let target = self.rollback_target();
        if target >= self.applied_bp {
            // Still waiting: no transition, but the message says the new count.
            self.message = self.situation();
            return Vec::new();
        }
        let note = format!(
            "{}; shifting {} to {}",
            self.capacity_words(),
            self.preview(),
            pct(target)
        );
        let mut out = self.request_weight(target, now);
        out.push(event("CapacityChanged", note));
        out
    }

    /// The preview weight a rollback or abort that heads for 0 (the preview's stop) gives back
    /// instead, because the active backend cannot carry the traffic by the latest reading:
    /// what the capacity rule allows of the weight the preview had when the undo began
    /// ([`rollback_preview_bp`] of [`Rollout::undo_from_bp`]). `None` when 0 stands: the
    /// active backend can carry it all, the undo is hard or forced, no capacity is reported, the
    /// preview has no healthy endpoint, or it had no weight.
    ///
    /// Session 44: the capacity was only read when the abort was decided; an active instance
    /// that crashed in the next few milliseconds left the route with no backend that could serve
    /// once the healthy preview was stopped (user44b, finding 2).
    pub(super) fn share_back(&self) -> Option<u32> {
        if !matches!(self.phase, Phase::RollingBack | Phase::Aborting) || self.preview_bp != 0 {
            return None;
        }
        let back = rollback_preview_bp(self.undo_from_bp, self.capacity, self.hard_undo);
        (back > 0).then_some(back)
    }

    /// The active backend lost the capacity to carry all traffic before the preview was stopped
    /// (`when`: `before 0% was applied`, or what was applied): the preview gets `back` again,
    /// and the rollback or abort waits for the active backend's capacity from there, as it does
    /// when decided with too few healthy active endpoints.
    pub(super) fn give_share_back(&mut self, back: u32, when: &str, now: Instant) -> Vec<Command> {
        let note = format!(
            "{}, {when}: {} is not stopped; it gets {} back until {} can carry more",
            self.capacity_words(),
            self.preview(),
            pct(back),
            self.active
        );
        let mut out = self.request_weight(back, now);
        out.push(event("CapacityChanged", note));
        out
    }

    /// `blue at 50%, 1 of 3 endpoints healthy`: the active backend's weight and capacity now.
    pub(super) fn capacity_words(&self) -> String {
        let active = FULL_BP - self.applied_bp.min(FULL_BP);
        let at = format!("{} at {}", self.active, pct(active));
        match self.capacity {
            Some(c) => format!(
                "{at}, {} of {} endpoints healthy",
                c.active.healthy, c.active.total
            ),
            None => at,
        }
    }

    /// The situation of a rollback or abort that waits for the active backend's capacity.
    pub(super) fn capacity_wait_situation(&self, what: &str, reason: &str) -> String {
        format!(
            "{what}: {}; {} keeps {} until {} can carry more (at most 1.5 × its healthy share) \
             ({reason})",
            self.capacity_words(),
            self.preview(),
            pct(self.applied_bp),
            self.active
        )
    }
}
