//! Per-(route, backend) traffic statistics: atomics written on the request path, read by the
//! controller's analysis ([`BackendSnapshot`]) and by the `/metrics` collector at scrape time.
//!
//! Stats are keyed by route name and slot, not by table, so they survive every table swap.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::error::ErrorKind;
use crate::histogram::{HistogramSnapshot, LatencyHistogram};
use crate::tunnel::Tunnels;

pub mod unanswered;

pub use unanswered::Unanswered;

/// Status classes in label order: `1xx` to `5xx`.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The closed value set of the `method` label of `crossfade_retries_by_method_total`: the methods a
/// retry can carry (idempotent ones, RFC 9110 §9.2.2), and `other` for any method retried after a
/// connect failure (nothing was written).
pub const RETRY_METHODS: [&str; 7] = ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE", "other"];

/// The closed value set of the `reason` label of `crossfade_retries_total`: the upstream error kinds
/// ([`ErrorKind::ALL`] order), then `refused_stream`: a request an h2c backend refused without
/// processing it (a `REFUSED_STREAM` reset, RFC 9113 §8.7, or a stream above a GOAWAY's
/// last-stream-id, §6.8), replayed on a fresh connection, at most 3 times (see `upstream::h2c`).
pub const RETRY_REASONS: [&str; 7] = [
    "connect_refused",
    "connect_timeout",
    "connect_error",
    "reset",
    "response_timeout",
    "protocol",
    "refused_stream",
];

/// The index of `refused_stream` in [`RETRY_REASONS`].
const REFUSED_STREAM: usize = 6;

/// The index of `method` in [`RETRY_METHODS`].
fn retry_method_index(method: &http::Method) -> usize {
    RETRY_METHODS[..6]
        .iter()
        .position(|m| *m == method.as_str())
        .unwrap_or(6)
}

/// Counters of one backend of one route. All updates are `Relaxed` atomics: each counter is
/// independent, and readers only need eventually consistent values.
#[derive(Debug, Default)]
pub struct BackendStats {
    /// Attempts dispatched upstream, including failed ones that were retried elsewhere.
    dispatched: AtomicU64,
    /// Responses sent to clients for this backend, by status class (index = class − 1).
    classes: [AtomicU64; 5],
    /// 5xx responses, gRPC server-fault statuses and upstream failures (retried ones included).
    errors: AtomicU64,
    /// Upstream failures by [`ErrorKind`].
    upstream_errors: [AtomicU64; 6],
    /// Requests re-sent after failing here, by [`RETRY_REASONS`]: any request after a connect
    /// failure (no byte sent; a body goes along whole), a bodiless idempotent one after a reset
    /// before the response head (by [`ErrorKind`]), and h2c streams the backend refused
    /// unprocessed (`refused_stream`, any method, body replayed).
    retries: [AtomicU64; 7],
    /// The same retries by request method ([`RETRY_METHODS`]).
    retry_methods: [AtomicU64; 7],
    /// Retries not made because the backend's retry budget was spent.
    budget_exhausted: AtomicU64,
    /// h2c streams the backend refused unprocessed that were not replayed because the request body
    /// was over the replay limit.
    replay_skipped: AtomicU64,
    in_flight: AtomicU64,
    /// Requests without a response head yet, by send time (bodiless ones; see [`unanswered`]).
    waiting: unanswered::Waiting,
    latency: LatencyHistogram,
    /// Requests whose client went away while they waited for their response head, by how long
    /// they had waited ([`BackendStats::record_client_abort`]); its count is the aborts.
    abort_waits: LatencyHistogram,
    /// Open upgraded connections (WebSocket and other HTTP/1.1 upgrades) and their close signal.
    tunnels: Tunnels,
    /// Requests mirrored to this backend as shadow traffic, and how their answers compared.
    shadow: crate::shadow::ShadowStats,
    /// The budget of the WARN lines for upstream failures answered 502/504 ([`crate::access::warn`]).
    warn_limit: crate::access::LogLimit,
}

/// A point-in-time copy of one backend's counters, as the controller's analysis reads them.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct BackendSnapshot {
    /// Requests dispatched to the backend since the proxy started (failed attempts included), and
    /// those answered 503 for it because it had no endpoint ([`BackendStats::record_local`]).
    pub requests: u64,
    /// 5xx responses (the proxy's own for this backend included, such as "no endpoint"), gRPC calls
    /// ending with a server-fault `grpc-status` (see [`crate::grpc`]), plus upstream failures
    /// (connect, reset, timeout), retried ones included.
    pub errors: u64,
    /// Requests dispatched and not yet finished (response body not yet complete or dropped).
    pub in_flight: u64,
    /// Time from dispatch (for a request with a body, from the end of its upload when that came
    /// later) to the response head (or to the failure), in seconds.
    pub latency: HistogramSnapshot,
    /// Upgraded connections (WebSocket and other HTTP/1.1 upgrades, RFC 9110 §7.8) open now. An
    /// upgrade counts in `in_flight` until its 101, then here until either side closes.
    #[serde(default)]
    pub upgraded: u64,
    /// Bodiless requests dispatched whose response head (or failure) has not come yet, by how
    /// long they have certainly waited (see [`unanswered`]): the analysis counts those waiting
    /// longer than `max_p99` as slower than it.
    #[serde(default, skip_serializing_if = "Unanswered::is_empty")]
    pub unanswered: Unanswered,
    /// Requests whose client went away (closed or reset its connection, reset its HTTP/2 stream)
    /// while they waited for their response head, by how long they had waited then (from
    /// dispatch; for a request with a body, from its upload's end when that came later), in
    /// seconds: each a lower bound of the backend's response time, never a response. They count
    /// in `requests` (dispatched) and never in `errors` or `latency`, so the analysis takes them
    /// out of the requests it judges and counts those that had waited past `max_p99` as slower
    /// than it ([`BackendStats::record_client_abort`]).
    #[serde(default, skip_serializing_if = "HistogramSnapshot::is_empty")]
    pub aborted: HistogramSnapshot,
}

// === impl BackendStats ===

impl BackendStats {
    /// Counts a dispatch and returns the guard that keeps it in flight until dropped. With
    /// `waiting_since` (a bodiless request, sent at that instant) it also counts as waiting for
    /// its response head until [`InFlight::record_response`] or the guard's drop
    /// ([`BackendSnapshot::unanswered`]). A request with a body is not counted there: its wait
    /// starts at its upload's end, which only the response's timing knows.
    #[inline]
    pub fn dispatch(self: &Arc<Self>, waiting_since: Option<Instant>) -> InFlight {
        self.dispatched.fetch_add(1, Relaxed);
        self.in_flight.fetch_add(1, Relaxed);
        let waiting = waiting_since.map(|at| self.waiting.start(unanswered::tick(at)));
        InFlight {
            stats: Arc::clone(self),
            waiting,
        }
    }

    /// Records a response head from upstream (or generated for this backend) after `elapsed`.
    #[inline]
    pub fn record_response(&self, status: StatusCode, elapsed: Duration) {
        self.count_class(status);
        self.latency.observe(elapsed);
    }

    /// Records a request whose client went away after `waited` without its response head (see
    /// [`BackendSnapshot::aborted`]): `crossfade_client_aborts_total`. Not an error of the
    /// backend, nor a response: no status class, no latency, no health report.
    #[cold]
    pub fn record_client_abort(&self, waited: Duration) {
        self.abort_waits.observe(waited);
    }

    /// Requests whose client went away before their response head, since start.
    pub fn client_aborts(&self) -> u64 {
        self.abort_waits.count()
    }

    /// How long the requests whose client went away had waited then, in seconds.
    pub fn abort_waits(&self) -> &LatencyHistogram {
        &self.abort_waits
    }

    /// Records an answer the proxy made itself for this backend (see [`crate::local`]): `status`
    /// counts in its class (and as an error when it is a 5xx, as a backend's own 5xx does), and
    /// with `unsent` as a request too ([`BackendSnapshot::requests`]), since no attempt was
    /// dispatched (no endpoint), so that the error share of the backend's requests stays within 1.
    pub fn record_local(&self, status: StatusCode, unsent: bool) {
        if unsent {
            self.dispatched.fetch_add(1, Relaxed);
        }
        self.count_class(status);
    }

    /// Records an upstream failure after `elapsed`; `answered` is true when the client gets the
    /// error response on behalf of this backend (false when the request is retried elsewhere).
    pub fn record_failure(&self, kind: ErrorKind, elapsed: Duration, answered: bool) {
        self.upstream_errors[kind.index()].fetch_add(1, Relaxed);
        self.errors.fetch_add(1, Relaxed);
        self.latency.observe(elapsed);
        if answered {
            self.classes[4].fetch_add(1, Relaxed);
        }
    }

    /// Records a retry of a request that failed here with `kind`.
    pub fn record_retry(&self, kind: ErrorKind, method: &http::Method) {
        self.retries[kind.index()].fetch_add(1, Relaxed);
        self.retry_methods[retry_method_index(method)].fetch_add(1, Relaxed);
    }

    /// Records a request whose h2c stream this backend refused unprocessed (RFC 9113 §6.8, §8.7),
    /// replayed on a fresh connection (each replay counted):
    /// `crossfade_retries_total{reason="refused_stream"}`.
    pub fn record_refused_retry(&self, method: &http::Method) {
        self.retries[REFUSED_STREAM].fetch_add(1, Relaxed);
        self.retry_methods[retry_method_index(method)].fetch_add(1, Relaxed);
    }

    /// Counts a refused h2c stream that was not replayed: its request body was over the replay
    /// limit (`upstream::h2c`), so the client got the failure.
    pub fn record_replay_skipped(&self) {
        self.replay_skipped.fetch_add(1, Relaxed);
    }

    /// Refused h2c streams not replayed (body over the replay limit) since start.
    pub fn replay_skipped(&self) -> u64 {
        self.replay_skipped.load(Relaxed)
    }

    /// Retries made after failing here, by method ([`RETRY_METHODS`] order).
    pub fn retry_methods(&self) -> [u64; 7] {
        self.retry_methods.each_ref().map(|c| c.load(Relaxed))
    }

    /// Counts a retry that the retry budget refused.
    pub fn record_budget_exhausted(&self) {
        self.budget_exhausted.fetch_add(1, Relaxed);
    }

    /// Retries refused by the retry budget since start.
    pub fn budget_exhausted(&self) -> u64 {
        self.budget_exhausted.load(Relaxed)
    }

    /// Records a failure of the response body stream after the head was sent.
    pub fn record_body_error(&self) {
        self.upstream_errors[ErrorKind::Reset.index()].fetch_add(1, Relaxed);
        self.errors.fetch_add(1, Relaxed);
    }

    /// Records a gRPC call that ended with a server-fault status (see [`crate::grpc`]) in an HTTP
    /// 2xx response: an error like a 5xx, while its status class stays as sent.
    pub fn record_grpc_error(&self) {
        self.errors.fetch_add(1, Relaxed);
    }

    #[inline]
    fn count_class(&self, status: StatusCode) {
        let class = class_index(status);
        self.classes[class].fetch_add(1, Relaxed);
        if class == 4 {
            self.errors.fetch_add(1, Relaxed);
        }
    }

    /// A copy of the counters the controller reads.
    pub fn snapshot(&self) -> BackendSnapshot {
        BackendSnapshot {
            requests: self.dispatched.load(Relaxed),
            errors: self.errors.load(Relaxed),
            in_flight: self.in_flight.load(Relaxed),
            latency: self.latency.snapshot(),
            upgraded: self.tunnels.open(),
            unanswered: self.unanswered(),
            aborted: self.abort_waits.snapshot(),
        }
    }

    /// Bodiless requests waiting for their response head now, by how long they have waited.
    pub fn unanswered(&self) -> Unanswered {
        self.waiting.snapshot(unanswered::tick(Instant::now()))
    }

    /// Responses by status class, in [`STATUS_CLASSES`] order.
    pub fn classes(&self) -> [u64; 5] {
        self.classes.each_ref().map(|c| c.load(Relaxed))
    }

    /// Upstream failures by kind, in [`ErrorKind::ALL`] order.
    pub fn upstream_errors(&self) -> [u64; 6] {
        self.upstream_errors.each_ref().map(|c| c.load(Relaxed))
    }

    /// Retries by reason, in [`RETRY_REASONS`] order.
    pub fn retries(&self) -> [u64; 7] {
        self.retries.each_ref().map(|c| c.load(Relaxed))
    }

    /// Attempts dispatched upstream since start, failed ones that were retried elsewhere included:
    /// [`BackendSnapshot::requests`].
    pub fn dispatched(&self) -> u64 {
        self.dispatched.load(Relaxed)
    }

    /// 5xx responses, gRPC server-fault statuses and upstream failures since start (retried ones
    /// and broken response bodies included): [`BackendSnapshot::errors`].
    pub fn errors(&self) -> u64 {
        self.errors.load(Relaxed)
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Relaxed)
    }

    /// The shadow counters of requests mirrored to this backend.
    pub fn shadow(&self) -> &crate::shadow::ShadowStats {
        &self.shadow
    }

    /// The line budget of the warnings for this backend's upstream failures.
    pub(crate) fn warn_limit(&self) -> &crate::access::LogLimit {
        &self.warn_limit
    }

    /// The backend's open upgraded connections and their close signal.
    pub fn tunnels(&self) -> &Tunnels {
        &self.tunnels
    }

    /// The latency histogram (time to response head, in seconds).
    pub fn latency(&self) -> &LatencyHistogram {
        &self.latency
    }
}

/// Keeps one request counted as in flight; dropping it (response body finished or dropped, or the
/// request failed) ends it.
#[derive(Debug)]
pub struct InFlight {
    stats: Arc<BackendStats>,
    /// The send tick the request waits for its response head under, until it has one.
    waiting: Option<u64>,
}

impl InFlight {
    /// The stats this request counts in.
    pub fn stats(&self) -> &Arc<BackendStats> {
        &self.stats
    }

    /// Records the response head that answered this request after `elapsed`
    /// ([`BackendStats::record_response`]) and ends its wait for it.
    #[inline]
    pub fn record_response(&mut self, status: StatusCode, elapsed: Duration) {
        self.stats.record_response(status, elapsed);
        if let Some(tag) = self.waiting.take() {
            self.stats.waiting.end(tag);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.stats.in_flight.fetch_sub(1, Relaxed);
        if let Some(tag) = self.waiting.take() {
            self.stats.waiting.end(tag);
        }
    }
}

/// The status class index of `status`: 0 for `1xx` … 4 for `5xx` (the order of
/// [`STATUS_CLASSES`]); a code outside 100..=599 falls in the nearest class.
#[inline]
pub(crate) fn class_index(status: StatusCode) -> usize {
    usize::from(status.as_u16() / 100).clamp(1, 5) - 1
}

#[cfg(test)]
mod label_tests {
    use super::*;

    /// The retry reasons and the shadow error kinds begin with the upstream error kinds, in the
    /// order `ErrorKind::index` counts them: a kind added to one list and not the other would
    /// count under the wrong label.
    #[test]
    fn reason_and_shadow_labels_begin_with_the_error_kinds_in_index_order() {
        for kind in ErrorKind::ALL {
            assert_eq!(RETRY_REASONS[kind.index()], kind.as_str());
            assert_eq!(
                crate::shadow::SHADOW_ERROR_KINDS[kind.index()],
                kind.as_str()
            );
        }
        assert_eq!(RETRY_REASONS[REFUSED_STREAM], "refused_stream");
    }
}
