//! Load shedding at the listener: the connection and in-flight request limits, the `503` with
//! `Retry-After` a shed client gets, and the counters behind `crossfade_shed_total`.
//!
//! # At the connection limit
//! HAProxy stops accepting at `maxconn`: new clients wait in the kernel's accept queue and learn
//! nothing until a slot frees or they time out. Envoy's listener limit accepts and closes at once:
//! the client sees a reset, which many clients retry immediately. Crossfade does what a client can
//! act on: up to [`SHED_CONNECTIONS`] connections above `limits.max_connections` are accepted and
//! every request on them is answered `503 Service Unavailable` with `Retry-After` and
//! `Connection: close` (HTTP/2: GOAWAY after the first answer); they are cut after
//! `limits.header_read_timeout` at most. Only past that allowance does the proxy stop accepting,
//! as HAProxy does, leaving further clients in the kernel's queue (bounded by the listen backlog),
//! so a flood cannot make the shed path itself unbounded.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{CONNECTION, RETRY_AFTER};
use http::{HeaderValue, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub(crate) mod head;

use crate::access::Pending;
use crate::body::ProxyBody;
use crate::config::LimitsConfig;
use crate::error::Error;
use crate::linger::LingerCounts;
use crate::server::Conn;

/// Connections accepted above `limits.max_connections` only to be answered 503: enough that a
/// burst of new clients learns to back off, few enough to cost nothing (no upstream, no table).
pub const SHED_CONNECTIONS: usize = 128;

/// Why a client was shed: the value of the `reason` label of `crossfade_shed_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShedReason {
    /// The connection arrived with `limits.max_connections` already open.
    Connections,
    /// The request arrived with `limits.max_requests` already in flight.
    Requests,
}

/// Why a client's request body failed: the value of the `reason` label of
/// `crossfade_client_body_failures_total`. Each is the client's fault, never counted against the
/// backend (its errors, outlier ejection, breaker, analysis).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientBodyFailure {
    /// The client went away mid-body (answered 400 if it still listens).
    Aborted,
    /// The body's framing did not decode (an invalid chunk size, RFC 9112 §7.1; answered 400).
    Malformed,
    /// No body byte for `limits.body_read_timeout` (answered 408, RFC 9110 §15.5.9).
    Timeout,
}

// === impl ClientBodyFailure ===

impl ClientBodyFailure {
    /// Every reason, in label order.
    pub const ALL: [ClientBodyFailure; 3] = [
        ClientBodyFailure::Aborted,
        ClientBodyFailure::Malformed,
        ClientBodyFailure::Timeout,
    ];

    /// The label value: `aborted`, `malformed` or `timeout`.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientBodyFailure::Aborted => "aborted",
            ClientBodyFailure::Malformed => "malformed",
            ClientBodyFailure::Timeout => "timeout",
        }
    }
}

/// The listener's limits, shared by every connection.
#[derive(Debug)]
pub(crate) struct Limits {
    pub(crate) config: LimitsConfig,
    connections: Arc<Semaphore>,
    shed_connections: Arc<Semaphore>,
    /// Requests in flight, at most `max_requests` (see [`RequestPlace`]).
    requests: Arc<AtomicUsize>,
    retry_after: HeaderValue,
    shed: [AtomicU64; 2],
    /// Client request bodies that failed, by [`ClientBodyFailure`].
    body_failures: [AtomicU64; 3],
    /// Connections being served (the accept loop's reserved place is not one).
    open: AtomicUsize,
    /// Lingering closes of client connections, by how they ended.
    pub(crate) lingered: LingerCounts,
}

/// One request's place under `limits.max_requests`; dropping it frees the place.
///
/// A counter rather than a `tokio::sync::Semaphore` permit: no request ever waits for a place
/// (over the limit it is shed at once), and a permit's release locks the semaphore's waiter list
/// on every request (by callgrind ~100 of ~36,000 instructions per request,
/// docs/bench-2026-12-01-instructions.md).
#[derive(Debug)]
pub(crate) struct RequestPlace(Arc<AtomicUsize>);

impl Drop for RequestPlace {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts one served connection while it lives.
pub(crate) struct Open<'a>(&'a AtomicUsize);

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection's place: served, or accepted only to be answered 503. Dropping it frees the place.
#[derive(Debug)]
pub(crate) enum Admission {
    Serve(#[allow(dead_code)] OwnedSemaphorePermit),
    Shed(#[allow(dead_code)] OwnedSemaphorePermit),
}

// === impl ShedReason ===

impl ShedReason {
    /// Both reasons, in label order.
    pub const ALL: [ShedReason; 2] = [ShedReason::Connections, ShedReason::Requests];

    /// The label value: `connections` or `requests`.
    pub fn as_str(self) -> &'static str {
        match self {
            ShedReason::Connections => "connections",
            ShedReason::Requests => "requests",
        }
    }
}

// === impl Limits ===

impl Limits {
    pub(crate) fn new(config: &LimitsConfig) -> Limits {
        let seconds = config.retry_after.as_secs().max(1);
        Limits {
            config: config.clone(),
            connections: Arc::new(Semaphore::new(config.max_connections)),
            shed_connections: Arc::new(Semaphore::new(SHED_CONNECTIONS)),
            requests: Arc::new(AtomicUsize::new(0)),
            retry_after: HeaderValue::from(seconds),
            shed: Default::default(),
            body_failures: Default::default(),
            open: AtomicUsize::new(0),
            lingered: LingerCounts::default(),
        }
    }

    /// Waits for a place for the next connection: a served one if any is free, else a shed one.
    /// Pending while both are full, which is when the accept loop stops accepting.
    pub(crate) async fn admission(&self) -> Admission {
        if let Ok(permit) = Arc::clone(&self.connections).try_acquire_owned() {
            return Admission::Serve(permit);
        }
        // Neither semaphore is ever closed, so neither acquire fails.
        tokio::select! {
            biased;
            Ok(permit) = Arc::clone(&self.connections).acquire_owned() => Admission::Serve(permit),
            Ok(permit) = Arc::clone(&self.shed_connections).acquire_owned() => Admission::Shed(permit),
            else => std::future::pending().await,
        }
    }

    /// Waits for a served place only (the admin API's, after it closed an idle connection to make
    /// room: that connection's task frees its place at once).
    pub(crate) async fn served(&self) -> Admission {
        match Arc::clone(&self.connections).acquire_owned().await {
            Ok(permit) => Admission::Serve(permit),
            // Never closed (see `admission`).
            Err(_) => std::future::pending().await,
        }
    }

    /// Trades a shed place for a served one when one has freed since (the accept took a while).
    pub(crate) fn upgrade(&self, admission: Admission) -> Admission {
        match admission {
            Admission::Shed(shed) => match Arc::clone(&self.connections).try_acquire_owned() {
                Ok(permit) => Admission::Serve(permit),
                Err(_) => Admission::Shed(shed),
            },
            serve => serve,
        }
    }

    /// A place for one more request in flight, or `None` at `limits.max_requests`.
    pub(crate) fn request(&self) -> Option<RequestPlace> {
        let max = self.config.max_requests;
        self.requests
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(RequestPlace(Arc::clone(&self.requests)))
    }

    /// Counts one shed: a request, or a connection (once, however many requests it carries).
    pub(crate) fn count(&self, reason: ShedReason) {
        self.shed[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A shed client's answer: 503, `Retry-After`, and for a shed connection `Connection: close`
    /// (hyper then closes an HTTP/1.1 connection after it). To a gRPC client (`grpc`, see
    /// [`crate::forward::error_response`]) a trailers-only UNAVAILABLE with the same
    /// `Retry-After`.
    pub(crate) fn answer(&self, reason: ShedReason, grpc: bool) -> Response<ProxyBody> {
        let error = Error::Overloaded(reason);
        let mut response = crate::forward::error_response(&error, grpc);
        self.advise_retry(&mut response);
        let headers = response.headers_mut();
        if reason == ShedReason::Connections {
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }

    /// Adds `Retry-After` (`limits.retry_after`, whole seconds; RFC 9110 §10.2.3) to a shed
    /// answer, as [`Limits::answer`] does, and to an [`Error::Overloaded`] met on the request path
    /// (a WebSocket over HTTP/2 that finds no place for its tunnel, `tunnel`).
    pub(crate) fn advise_retry<B>(&self, response: &mut Response<B>) {
        response
            .headers_mut()
            .insert(RETRY_AFTER, self.retry_after.clone());
    }

    /// Counts a client request body that failed on the client's account.
    pub(crate) fn count_body_failure(&self, reason: ClientBodyFailure) {
        self.body_failures[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Client body failures counted so far, in [`ClientBodyFailure::ALL`] order.
    pub(crate) fn body_failure_counts(&self) -> [u64; 3] {
        self.body_failures
            .each_ref()
            .map(|c| c.load(Ordering::Relaxed))
    }

    /// Sheds counted so far, in [`ShedReason::ALL`] order.
    pub(crate) fn shed_counts(&self) -> [u64; 2] {
        self.shed.each_ref().map(|c| c.load(Ordering::Relaxed))
    }

    /// Counts a connection as served until the guard drops.
    pub(crate) fn open(&self) -> Open<'_> {
        self.open.fetch_add(1, Ordering::Relaxed);
        Open(&self.open)
    }

    /// Client connections served now (shed ones not included).
    pub(crate) fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Client requests in flight now.
    pub(crate) fn requests_in_flight(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }
}

pin_project! {
    /// A response body that holds its request's place under `limits.max_requests` until the body
    /// ends or is dropped (a streamed response is in flight until its last byte), and its access
    /// log line, which counts the bytes sent and is queued then.
    #[derive(Debug)]
    pub(crate) struct Limited {
        #[pin]
        body: ProxyBody,
        permit: Option<RequestPlace>,
        // The client connection's context, held until the body ends: the idle watch counts the
        // request as in flight while it is held (`crate::idle`).
        context: Option<Arc<Conn>>,
        log_line: Pending,
    }

    impl PinnedDrop for Limited {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            // A body hyper never polled because it had nothing to send (a bodiless answer)
            // ended as it should; any other unfinished one did not.
            if this.log_line.is_on() {
                let ended = this.body.is_end_stream();
                this.log_line.end(ended);
            }
        }
    }
}

impl Limited {
    pub(crate) fn new(
        body: ProxyBody,
        permit: Option<RequestPlace>,
        context: Option<Arc<Conn>>,
        log_line: Pending,
    ) -> Limited {
        Limited {
            body,
            permit,
            context,
            log_line,
        }
    }
}

impl Body for Limited {
    type Data = Bytes;
    type Error = <ProxyBody as Body>::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let polled = this.body.poll_frame(cx);
        if this.log_line.is_on() {
            if let Poll::Ready(Some(Ok(frame))) = &polled {
                this.log_line.sent(frame.data_ref().map_or(0, Bytes::len));
            }
        }
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            this.log_line.end(matches!(polled, Poll::Ready(None)));
            this.permit.take();
            this.context.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn admission_sheds_past_the_limit_and_stops_past_the_allowance() {
        let config = LimitsConfig {
            max_connections: 1,
            ..LimitsConfig::default()
        };
        let limits = Limits::new(&config);
        let served = limits.admission().await;
        assert!(matches!(served, Admission::Serve(_)));
        let mut shed = Vec::new();
        for _ in 0..SHED_CONNECTIONS {
            let admission = limits.admission().await;
            assert!(matches!(admission, Admission::Shed(_)));
            shed.push(admission);
        }
        let waiting = tokio::time::timeout(std::time::Duration::ZERO, limits.admission()).await;
        assert!(waiting.is_err(), "no place past the shed allowance");
        drop(served);
        let again = limits.upgrade(shed.pop().unwrap());
        assert!(
            matches!(again, Admission::Serve(_)),
            "a freed place is taken"
        );
        let open = limits.open();
        assert_eq!(limits.open_connections(), 1);
        drop(open);
        assert_eq!(limits.open_connections(), 0);
    }

    #[test]
    fn request_places_stop_at_max_requests_and_free_on_drop() {
        let config = LimitsConfig {
            max_requests: 2,
            ..LimitsConfig::default()
        };
        let limits = Limits::new(&config);
        let first = limits.request().expect("a first place");
        let second = limits.request().expect("a second place");
        assert_eq!(limits.requests_in_flight(), 2);
        assert!(limits.request().is_none(), "no place past max_requests");
        assert_eq!(limits.requests_in_flight(), 2, "a refusal takes no place");
        drop(first);
        assert_eq!(limits.requests_in_flight(), 1);
        let third = limits.request().expect("a freed place is taken");
        drop((second, third));
        assert_eq!(limits.requests_in_flight(), 0);
    }

    #[test]
    fn a_shed_answer_is_503_with_retry_after() {
        let config = LimitsConfig {
            retry_after: std::time::Duration::from_secs(7),
            ..LimitsConfig::default()
        };
        let limits = Limits::new(&config);
        let response = limits.answer(ShedReason::Requests, false);
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()[RETRY_AFTER], "7");
        assert!(response.headers().get(CONNECTION).is_none());
        let response = limits.answer(ShedReason::Connections, false);
        assert_eq!(response.headers()[CONNECTION], "close");
        let response = limits.answer(ShedReason::Requests, true);
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["grpc-status"], "14");
        assert_eq!(response.headers()[RETRY_AFTER], "7");
        limits.count(ShedReason::Requests);
        assert_eq!(limits.shed_counts(), [0, 1]);
    }
}
