//! Shadow counters of one mirror target (route, preview slot): atomics written by the mirror tasks,
//! read by `/metrics`, `/status` and the controller's shadow analysis ([`ShadowSnapshot`]).
//!
//! Besides the comparisons, the mirror target's response time to mirrored requests is kept as the
//! live request path keeps it ([`crate::stats::BackendStats::latency`]): a histogram of the time
//! from sending to the response head, or to the failure or the `shadow.timeout` (so that a preview
//! that fails or never answers leaves samples, not a gap), and the exchanges still waiting for
//! their head by send time ([`crate::stats::unanswered`]). The shadow step's analysis holds the
//! preview to the rollout's latency bounds with them before it gets any live weight. Both are
//! made at the first mirrored request (24 KiB: the fine buckets and the send-tick ring), so that
//! the many backends that are never mirrored to hold one empty pointer for them.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::error::ErrorKind;
use crate::histogram::{HistogramSnapshot, LatencyHistogram};
use crate::stats::unanswered::{self, Unanswered, Waiting};
use crate::stats::BackendStats;

/// Why a sampled request was not compared: the closed value set of the `reason` label of
/// `crossfade_shadow_skipped_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// The method is not in `shadow.methods` (only safe methods by default).
    Method,
    /// The request's body was over `shadow.max_body_bytes`, failed, or did not end within
    /// `shadow.timeout`: the preview cannot be sent the same request.
    RequestBody,
    /// `shadow.max_in_flight` mirrored exchanges were already in flight.
    Concurrency,
    /// A response body was over `shadow.max_body_bytes` and status and headers matched, so the
    /// answers could not be told equal.
    BodyTooLarge,
    /// The active backend's answer did not complete (it failed, or the client went away before
    /// its body ended, or it took longer than `shadow.timeout`): nothing to compare with.
    PrimaryIncomplete,
}

/// What differed between the two answers: the closed value set of the `kind` label of
/// `crossfade_shadow_mismatches_total`. One comparison may count several kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MismatchKind {
    /// The status codes differ.
    Status,
    /// One of `shadow.compare_headers` differs (presence, values or their order).
    Header,
    /// The body hashes differ.
    Body,
}

/// Counters of the requests mirrored to one backend. All `Relaxed`: each counter is independent.
#[derive(Debug, Default)]
pub struct ShadowStats {
    mirrored: AtomicU64,
    /// Mirrored requests sent a second time after a reset before any answer (see
    /// `shadow::Mirror::fetch`).
    resent: AtomicU64,
    matched: AtomicU64,
    mismatched: AtomicU64,
    kinds: [AtomicU64; 3],
    skipped: [AtomicU64; 5],
    /// Mirrored exchanges that failed on the preview, by [`ErrorKind`], then one for a body that
    /// failed mid-stream.
    errors: [AtomicU64; 7],
    in_flight: AtomicU64,
    /// Minute (since the proxy's clock origin) and count of the mismatch log lines written in it.
    logged: AtomicU64,
    /// The response times of mirrored requests, from the first one sent on.
    timing: OnceLock<Timing>,
}

/// The response times of the requests mirrored to one backend.
#[derive(Debug, Default)]
struct Timing {
    /// Time from sending a mirrored request to the preview's response head, or to its failure or
    /// timeout, in seconds ([`ShadowStats::latency`]).
    latency: LatencyHistogram,
    /// Mirrored requests sent and without a response head (or failure) yet, by send tick.
    waiting: Waiting,
    /// Per mirrored request whose two times are known ([`ShadowStats::record_pair`]): the
    /// active backend's time to its response head, in seconds.
    paired_active: LatencyHistogram,
    /// The preview's time on the same requests, in seconds (a subset of `latency`'s samples).
    paired_preview: LatencyHistogram,
}

/// A mirrored request waiting for the preview's response head: ends the wait when answered
/// ([`HeadWait::answered`]) or dropped, and records the time to the head (or to the failure or
/// timeout) in [`ShadowStats::latency`].
#[derive(Debug)]
pub(crate) struct HeadWait<'a> {
    timing: &'a Timing,
    sent: Instant,
    /// The tick the wait is counted under, until it ended.
    tag: Option<u64>,
}

/// A point-in-time copy of [`ShadowStats`], as `/status` and the controller read it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ShadowSnapshot {
    /// Requests sent to the mirror target.
    pub mirrored: u64,
    /// Comparisons whose status, chosen headers and body hash were all equal.
    pub matched: u64,
    /// Comparisons where something differed.
    pub mismatched: u64,
    /// Mismatches whose status differed.
    pub status_mismatches: u64,
    /// Mismatches where a compared header differed.
    pub header_mismatches: u64,
    /// Mismatches whose body hash differed.
    pub body_mismatches: u64,
    /// Sampled requests not compared, all reasons.
    pub skipped: u64,
    /// `skipped` by reason, in [`SkipReason::ALL`]'s order (`method`, `request_body`,
    /// `concurrency`, `body_too_large`, `primary_incomplete`), so that a shadow step with too few
    /// comparisons can say why (user38: a POST-only service had every request skipped for its
    /// `method`, and the rollback said only `2000 skipped`). All 0 (and absent from the JSON)
    /// from a data plane that does not report it (Kubernetes mode sums `skipped` alone).
    #[serde(default, skip_serializing_if = "no_skips")]
    pub skipped_by: [u64; 5],
    /// Mirrored exchanges that failed on the mirror target (no answer to compare).
    pub errors: u64,
    /// Mirrored exchanges in flight now.
    pub in_flight: u64,
    /// The preview's response time to mirrored requests: from sending to its response head, or
    /// to the failure or `shadow.timeout` when none came, in seconds (the buckets of the live
    /// `crossfade_request_duration_seconds`, and the fine ones from the proxy itself). Empty from
    /// a data plane that does not record it.
    #[serde(default, skip_serializing_if = "HistogramSnapshot::is_empty")]
    pub latency: HistogramSnapshot,
    /// Mirrored requests sent to the preview with no response head (nor failure) yet, by how
    /// long they have certainly waited (a gauge, as [`crate::BackendSnapshot::unanswered`]): the
    /// analysis counts those past `max_p99` as slower than it.
    #[serde(default, skip_serializing_if = "Unanswered::is_empty")]
    pub unanswered: Unanswered,
    /// The active backend's time to its response head, in seconds, on the mirrored requests
    /// whose two times are known (the pairs, [`ShadowStats::record_pair`]): measured as the live
    /// `crossfade_request_duration_seconds` is, from the first attempt. Empty from a data plane
    /// that does not record pairs.
    #[serde(default, skip_serializing_if = "HistogramSnapshot::is_empty")]
    pub paired_active: HistogramSnapshot,
    /// The preview's time on the same mirrored requests, in seconds (as [`Self::latency`]
    /// measures it), one sample per pair.
    #[serde(default, skip_serializing_if = "HistogramSnapshot::is_empty")]
    pub paired_preview: HistogramSnapshot,
}

/// Holds one place under `shadow.max_in_flight` of a mirror target until dropped.
#[derive(Debug)]
pub(crate) struct ShadowPermit(Arc<BackendStats>);

// === impl SkipReason ===

impl SkipReason {
    /// Every reason, in label order.
    pub const ALL: [SkipReason; 5] = [
        SkipReason::Method,
        SkipReason::RequestBody,
        SkipReason::Concurrency,
        SkipReason::BodyTooLarge,
        SkipReason::PrimaryIncomplete,
    ];

    /// The label value: `method`, `request_body`, `concurrency`, `body_too_large` or
    /// `primary_incomplete`.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Method => "method",
            SkipReason::RequestBody => "request_body",
            SkipReason::Concurrency => "concurrency",
            SkipReason::BodyTooLarge => "body_too_large",
            SkipReason::PrimaryIncomplete => "primary_incomplete",
        }
    }
}

// === impl MismatchKind ===

impl MismatchKind {
    /// Every kind, in label order.
    pub const ALL: [MismatchKind; 3] = [
        MismatchKind::Status,
        MismatchKind::Header,
        MismatchKind::Body,
    ];

    /// The label value: `status`, `header` or `body`.
    pub fn as_str(self) -> &'static str {
        match self {
            MismatchKind::Status => "status",
            MismatchKind::Header => "header",
            MismatchKind::Body => "body",
        }
    }
}

/// The `kind` label values of `crossfade_shadow_errors_total`: the upstream [`ErrorKind`]s, then
/// `body` for a preview body that failed mid-stream.
pub const SHADOW_ERROR_KINDS: [&str; 7] = [
    "connect_refused",
    "connect_timeout",
    "connect_error",
    "reset",
    "response_timeout",
    "protocol",
    "body",
];

// === impl ShadowStats ===

impl ShadowStats {
    /// Takes a place under `max` mirrored exchanges in flight to the backend of `stats`, or
    /// `None` when all are taken.
    pub(crate) fn enter(stats: &Arc<BackendStats>, max: u32) -> Option<ShadowPermit> {
        let before = stats.shadow().in_flight.fetch_add(1, Relaxed);
        if before >= u64::from(max) {
            stats.shadow().in_flight.fetch_sub(1, Relaxed);
            return None;
        }
        Some(ShadowPermit(Arc::clone(stats)))
    }

    pub(crate) fn record_mirrored(&self) {
        self.mirrored.fetch_add(1, Relaxed);
    }

    /// Starts the wait of a mirrored request sent now for the preview's response head.
    pub(crate) fn sent(&self) -> HeadWait<'_> {
        let timing = self.timing.get_or_init(Timing::default);
        let sent = Instant::now();
        HeadWait {
            timing,
            sent,
            tag: Some(timing.waiting.start(unanswered::tick(sent))),
        }
    }

    /// The preview's response time to mirrored requests, in seconds: to the response head, or
    /// to the failure or timeout ([`ShadowSnapshot::latency`]). Empty before the first.
    pub fn latency(&self) -> &LatencyHistogram {
        self.timing.get().map_or_else(|| empty(), |t| &t.latency)
    }

    /// Records one pair: the active backend's time to its response head for a mirrored
    /// request (`active`) and the preview's for the same request (`preview`: to its head, or to
    /// `shadow.timeout` when none came by then). Made where both are known: once the preview's
    /// exchange and the active backend's answer are over (the comparisons, and the preview's
    /// exchanges that failed after their head or timed out while the active backend's answer
    /// had come whole). Nothing before the first mirrored request was sent.
    pub(crate) fn record_pair(&self, active: Duration, preview: Duration) {
        if let Some(timing) = self.timing.get() {
            timing.paired_active.observe(active);
            timing.paired_preview.observe(preview);
        }
    }

    /// The active backend's time to its response head on the paired mirrored requests
    /// ([`ShadowSnapshot::paired_active`]). Empty before the first pair.
    pub fn paired_active(&self) -> &LatencyHistogram {
        self.timing
            .get()
            .map_or_else(|| empty(), |t| &t.paired_active)
    }

    /// The preview's time on the same requests ([`ShadowSnapshot::paired_preview`]).
    pub fn paired_preview(&self) -> &LatencyHistogram {
        self.timing
            .get()
            .map_or_else(|| empty(), |t| &t.paired_preview)
    }

    /// Mirrored requests waiting for the preview's response head now, by how long they have
    /// waited ([`ShadowSnapshot::unanswered`]).
    pub fn unanswered(&self) -> Unanswered {
        self.timing.get().map_or_else(Unanswered::default, |t| {
            t.waiting.snapshot(unanswered::tick(Instant::now()))
        })
    }

    pub(crate) fn record_resent(&self) {
        self.resent.fetch_add(1, Relaxed);
    }

    pub(crate) fn record_skip(&self, reason: SkipReason) {
        self.skipped[reason as usize].fetch_add(1, Relaxed);
    }

    pub(crate) fn record_error(&self, kind: Option<ErrorKind>) {
        let index = kind.map_or(6, ErrorKind::index);
        self.errors[index].fetch_add(1, Relaxed);
    }

    /// Counts one comparison: matched when `kinds` is empty, else mismatched once and each kind.
    pub(crate) fn record_comparison(&self, kinds: &[MismatchKind]) {
        if kinds.is_empty() {
            self.matched.fetch_add(1, Relaxed);
            return;
        }
        self.mismatched.fetch_add(1, Relaxed);
        for kind in kinds {
            self.kinds[*kind as usize].fetch_add(1, Relaxed);
        }
    }

    /// Whether a mismatch log line may be written at `minute`: at most `per_minute` per minute.
    pub(crate) fn may_log(&self, minute: u64, per_minute: u32) -> bool {
        if per_minute == 0 {
            return false;
        }
        // High 48 bits: the minute; low 16: lines written in it.
        let mut current = self.logged.load(Relaxed);
        loop {
            let (at, count) = (current >> 16, current & 0xffff);
            let next = match at == minute {
                true if count >= u64::from(per_minute.min(0xffff)) => return false,
                true => current + 1,
                false => (minute << 16) | 1,
            };
            match self
                .logged
                .compare_exchange_weak(current, next, Relaxed, Relaxed)
            {
                Ok(_) => return true,
                Err(seen) => current = seen,
            }
        }
    }

    /// Comparisons by result, in the order `matched`, `mismatched`.
    pub fn results(&self) -> [u64; 2] {
        [self.matched.load(Relaxed), self.mismatched.load(Relaxed)]
    }

    /// Mismatches by [`MismatchKind`], in label order.
    pub fn kinds(&self) -> [u64; 3] {
        self.kinds.each_ref().map(|c| c.load(Relaxed))
    }

    /// Skips by [`SkipReason`], in label order.
    pub fn skips(&self) -> [u64; 5] {
        self.skipped.each_ref().map(|c| c.load(Relaxed))
    }

    /// Errors by [`SHADOW_ERROR_KINDS`].
    pub fn errors(&self) -> [u64; 7] {
        self.errors.each_ref().map(|c| c.load(Relaxed))
    }

    /// Requests mirrored since start.
    pub fn mirrored(&self) -> u64 {
        self.mirrored.load(Relaxed)
    }

    /// Mirrored requests sent a second time since start, after a reset before any answer
    /// (typically a pooled connection the backend closed as it was reused, case C17). Each is
    /// also one `mirrored`.
    pub fn resent(&self) -> u64 {
        self.resent.load(Relaxed)
    }

    /// Mirrored exchanges in flight now.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Relaxed)
    }

    /// A copy of every counter.
    pub fn snapshot(&self) -> ShadowSnapshot {
        let [matched, mismatched] = self.results();
        let [status_mismatches, header_mismatches, body_mismatches] = self.kinds();
        ShadowSnapshot {
            mirrored: self.mirrored(),
            matched,
            mismatched,
            status_mismatches,
            header_mismatches,
            body_mismatches,
            skipped: self.skips().iter().sum(),
            skipped_by: self.skips(),
            errors: self.errors().iter().sum(),
            in_flight: self.in_flight(),
            latency: self.latency().snapshot(),
            unanswered: self.unanswered(),
            paired_active: self.paired_active().snapshot(),
            paired_preview: self.paired_preview().snapshot(),
        }
    }
}

/// Whether no skip is counted by reason (serde's `skip_serializing_if` for
/// [`ShadowSnapshot::skipped_by`]).
fn no_skips(by: &[u64; 5]) -> bool {
    by.iter().all(|&n| n == 0)
}

/// The empty histogram a backend never mirrored to reads.
fn empty() -> &'static LatencyHistogram {
    static NONE: OnceLock<LatencyHistogram> = OnceLock::new();
    NONE.get_or_init(LatencyHistogram::default)
}

// === impl HeadWait ===

impl HeadWait<'_> {
    /// The preview's response head came, or the exchange failed or timed out before it: records
    /// the time since the request was sent and ends the wait. Returns that time.
    pub(crate) fn answered(mut self) -> Duration {
        let elapsed = self.sent.elapsed();
        self.timing.latency.observe(elapsed);
        self.end();
        elapsed
    }

    fn end(&mut self) {
        if let Some(tag) = self.tag.take() {
            self.timing.waiting.end(tag);
        }
    }
}

impl Drop for HeadWait<'_> {
    fn drop(&mut self) {
        self.end();
    }
}

impl ShadowPermit {
    /// The counters of the mirror target.
    pub(crate) fn stats(&self) -> &ShadowStats {
        self.0.shadow()
    }
}

impl Drop for ShadowPermit {
    fn drop(&mut self) {
        self.0.shadow().in_flight.fetch_sub(1, Relaxed);
    }
}

// === impl ShadowSnapshot ===

impl ShadowSnapshot {
    /// Comparisons made: matched plus mismatched.
    pub fn compared(&self) -> u64 {
        self.matched + self.mismatched
    }

    /// The counts between the snapshot `earlier` and this one (saturating at 0, so a counter
    /// reset gives an empty window rather than a wrap-around); `in_flight` and `unanswered` are
    /// this one's.
    pub fn since(&self, earlier: &ShadowSnapshot) -> ShadowSnapshot {
        ShadowSnapshot {
            mirrored: self.mirrored.saturating_sub(earlier.mirrored),
            matched: self.matched.saturating_sub(earlier.matched),
            mismatched: self.mismatched.saturating_sub(earlier.mismatched),
            status_mismatches: self
                .status_mismatches
                .saturating_sub(earlier.status_mismatches),
            header_mismatches: self
                .header_mismatches
                .saturating_sub(earlier.header_mismatches),
            body_mismatches: self.body_mismatches.saturating_sub(earlier.body_mismatches),
            skipped: self.skipped.saturating_sub(earlier.skipped),
            skipped_by: std::array::from_fn(|i| {
                self.skipped_by[i].saturating_sub(earlier.skipped_by[i])
            }),
            errors: self.errors.saturating_sub(earlier.errors),
            in_flight: self.in_flight,
            latency: self.latency.since(&earlier.latency),
            unanswered: self.unanswered.clone(),
            paired_active: self.paired_active.since(&earlier.paired_active),
            paired_preview: self.paired_preview.since(&earlier.paired_preview),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every backend has shadow stats, few are ever mirrored to: their timing (24 KiB) is made by
    /// the first mirrored request only, and reads as empty before.
    #[test]
    fn the_timing_is_made_at_the_first_mirrored_request() {
        let stats = ShadowStats::default();
        assert!(stats.timing.get().is_none());
        assert_eq!(stats.latency().count(), 0);
        assert!(stats.unanswered().is_empty());
        assert!(stats.snapshot().latency.is_empty());
        assert!(stats.timing.get().is_none(), "reading made it");
        let wait = stats.sent();
        assert_eq!(stats.unanswered().total(), 1);
        wait.answered();
        assert_eq!(stats.latency().count(), 1);
        assert!(stats.unanswered().is_empty());
        assert!(stats.timing.get().is_some());
    }
}
