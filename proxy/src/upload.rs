//! A request body on its way upstream: who owes the next move, the client or the backend.
//!
//! The response timeout (`upstream.response_timeout`, a route's `response_timeout`) is the
//! backend's bound, so it must not run while the **client** is still uploading: as Envoy's route
//! timeout, it starts when the whole request has gone upstream (for a request with a body: when its
//! last byte was handed to the upstream connection). While the upload is under way it runs only
//! while the backend holds the upload up (the body waits for the upstream connection to take the
//! frame it was given, or for the backend's `100 Continue`): a backend that stops reading an upload
//! is still cut after the timeout, as nginx's `proxy_send_timeout` does, and counts against the
//! endpoint.
//!
//! The client's side is bounded by `limits.body_read_timeout` (nginx's `client_body_timeout`): a
//! client that sends no byte of its body for that long gets `408 Request Timeout` (RFC 9110
//! §15.5.9), and the upstream request is abandoned. That is the client's fault, so it never counts
//! against the endpoint, its backend's error rate, the breaker or the analysis; it is counted in
//! `crossfade_client_body_failures_total{reason="timeout"}`.
//!
//! A body that went nowhere (its attempt failed before polling it: a connect failure, so no byte of
//! the request was written, or a reset while the body was held back for a `100 Continue`) is
//! handed back here ([`Upload::unsent`]), so that the request can be retried with its body (see
//! `forward::retry_target`).

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};
use std::task::Poll;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// `handed` while the body waits for the client's next bytes.
const WAITING_FOR_CLIENT: u64 = u64::MAX;

/// The state a request body shares with the attempt that sends it (see the module docs).
#[derive(Debug)]
pub(crate) struct Upload {
    base: Instant,
    /// Nanoseconds after `base` when the body last handed something to the upstream connection (a
    /// frame, or its end), or when the attempt started: from then on the backend side owes the
    /// next move. [`WAITING_FOR_CLIENT`] while the body waits for the client.
    handed: AtomicU64,
    /// Nanoseconds after `base` when the body's last byte was handed over; `u64::MAX` before.
    ended: AtomicU64,
    /// `limits.body_read_timeout`.
    pub(crate) read_timeout: Duration,
    /// The client sent nothing for `read_timeout`: the body failed on the client's account.
    stalled: AtomicBool,
    /// The client's body, when its attempt dropped it without polling it (see [`Upload::unsent`]).
    unsent: Mutex<Option<crate::expect::Unsent>>,
    /// An attempt polled the client's body: it is never handed back.
    polled: AtomicBool,
    /// Woken when the body is handed back or first polled (see [`Upload::returned`]).
    settled: Notify,
}

/// The error a request body fails with when the client sent nothing for `limits.body_read_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the client sent no request body byte within limits.body_read_timeout")]
pub(crate) struct BodyReadTimeout;

/// The response timeout passed while the backend side owed the next move.
#[derive(Debug)]
pub(crate) struct Elapsed;

// === impl Upload ===

impl Upload {
    pub(crate) fn new(read_timeout: Duration) -> Upload {
        Upload {
            base: Instant::now(),
            handed: AtomicU64::new(0),
            ended: AtomicU64::new(u64::MAX),
            read_timeout,
            stalled: AtomicBool::new(false),
            unsent: Mutex::new(None),
            polled: AtomicBool::new(false),
            settled: Notify::new(),
        }
    }

    /// The backend side owes the next move from now (a frame handed over, the body's end, an
    /// attempt's start).
    pub(crate) fn handed(&self) {
        self.handed.store(self.now(), Relaxed);
    }

    /// The body's last byte was handed over (the backend side owes the response from now).
    pub(crate) fn ended(&self) {
        let now = self.now();
        self.handed.store(now, Relaxed);
        self.ended.store(now, Relaxed);
    }

    fn now(&self) -> u64 {
        let nanos = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        nanos.min(u64::MAX - 1)
    }

    /// Whether the body's last byte was handed to the upstream connection: false while any of it
    /// is still to come from the client (or was never asked for, as after an early answer to
    /// `Expect: 100-continue`).
    pub(crate) fn is_ended(&self) -> bool {
        self.ended.load(Relaxed) != u64::MAX
    }

    /// The body waits for the client.
    pub(crate) fn waiting_for_client(&self) {
        self.handed.store(WAITING_FOR_CLIENT, Relaxed);
    }

    /// The client sent nothing for `read_timeout`.
    pub(crate) fn stall(&self) {
        self.stalled.store(true, Relaxed);
    }

    /// Whether the body failed because the client stalled (see [`BodyReadTimeout`]).
    pub(crate) fn stalled(&self) -> bool {
        self.stalled.load(Relaxed)
    }

    /// Keeps a body its attempt dropped unpolled.
    pub(crate) fn keep_unsent(&self, body: crate::expect::Unsent) {
        *self.unsent.lock().unwrap_or_else(PoisonError::into_inner) = Some(body);
        self.settled.notify_one();
    }

    /// An attempt polls the client's body for the first time: from now on it may have been read
    /// from the client and written upstream, and it is never handed back.
    pub(crate) fn polled(&self) {
        self.polled.store(true, Relaxed);
        self.settled.notify_one();
    }

    /// Whether no attempt has polled the client's body: nothing of it was read from the client or
    /// written upstream, whether or not the attempt that carried it has handed it back yet.
    pub(crate) fn never_polled(&self) -> bool {
        !self.polled.load(Relaxed)
    }

    /// Waits, at most `within`, until the failed attempt that carried the client's body has handed
    /// it back (true) or polled it (false). Over h2c the body is dropped by hyper's task that
    /// pipes it to the stream, which may run after the attempt's failure was seen: until session
    /// 41 a `PUT` held back for its `100 Continue` on a dropped h2c connection got 502 instead of
    /// its resend for a few in every hundred (case C17).
    pub(crate) async fn returned(&self, within: Duration) -> bool {
        let settled = async {
            loop {
                if self
                    .unsent
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .is_some()
                {
                    return true;
                }
                if !self.never_polled() {
                    return false;
                }
                self.settled.notified().await;
            }
        };
        tokio::time::timeout(within, settled).await.unwrap_or(false)
    }

    /// The client's body, if the attempt that carried it dropped it without polling it: no byte of
    /// it was read from the client or written upstream, so it can go to another attempt.
    pub(crate) fn unsent(&self) -> Option<crate::expect::Unsent> {
        self.unsent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// When the response timeout passes, `None` while the client owes the next move.
    fn deadline(&self, timeout: Duration) -> Option<Instant> {
        match self.handed.load(Relaxed) {
            WAITING_FOR_CLIENT => None,
            nanos => Some(crate::duration::later(
                self.base + Duration::from_nanos(nanos),
                timeout,
            )),
        }
    }
}

/// The state shared with the body of a request that has one.
pub(crate) fn of(body: &crate::upstream::UpstreamBody) -> Option<std::sync::Arc<Upload>> {
    match body {
        http_body_util::Either::Left(body) => Some(std::sync::Arc::clone(body.upload())),
        http_body_util::Either::Right(_) => None,
    }
}

/// The time the backend took to answer an attempt that started at `start`: from `start`, or for a
/// request with a body that ended after `start`, from the body's end, so that a slow client's
/// upload never reads as a slow backend (in the latency histogram the analysis judges, and in the
/// balancer's RTT estimate).
pub(crate) fn response_time(upload: Option<&Upload>, start: Instant) -> Duration {
    let Some(upload) = upload else {
        return start.elapsed();
    };
    match upload.ended.load(Relaxed) {
        u64::MAX => start.elapsed(),
        nanos => {
            let ended = upload.base + Duration::from_nanos(nanos);
            ended.max(start).elapsed()
        }
    }
}

/// Waits for `send` (an attempt's exchange up to the response head) within the response
/// `timeout`. Without a body (`upload` is `None`) the timeout runs from now, connect included. With
/// one, it runs only while the backend side owes the next move, and from the body's end to the
/// response head (see the module docs).
///
/// # Errors
/// [`Elapsed`] when the timeout passed.
pub(crate) async fn within<F: Future>(
    timeout: Duration,
    upload: Option<&Upload>,
    send: F,
) -> Result<F::Output, Elapsed> {
    let Some(upload) = upload else {
        return tokio::time::timeout(timeout, send)
            .await
            .map_err(|_| Elapsed);
    };
    upload.handed();
    let mut send = std::pin::pin!(send);
    let mut sleep = std::pin::pin!(tokio::time::sleep(timeout));
    std::future::poll_fn(|cx| {
        if let Poll::Ready(output) = send.as_mut().poll(cx) {
            return Poll::Ready(Ok(output));
        }
        while sleep.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            match upload.deadline(timeout) {
                Some(deadline) if deadline <= now => return Poll::Ready(Err(Elapsed)),
                Some(deadline) => sleep.as_mut().reset(deadline),
                // The client owes bytes: `read_timeout` bounds that; look again later.
                None => sleep.as_mut().reset(crate::duration::later(now, timeout)),
            }
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_timeout_does_not_run_while_the_client_owes_bytes() {
        let upload = Upload::new(Duration::from_secs(60));
        let timeout = Duration::from_secs(1);
        let send = async {
            upload.waiting_for_client();
            tokio::time::sleep(Duration::from_secs(5)).await;
            upload.handed();
            tokio::time::sleep(Duration::from_millis(900)).await;
            "head"
        };
        assert_eq!(within(timeout, Some(&upload), send).await.unwrap(), "head");
    }

    #[tokio::test(start_paused = true)]
    async fn the_timeout_runs_from_the_last_hand_over() {
        let upload = Upload::new(Duration::from_secs(60));
        let started = Instant::now();
        let send = async {
            upload.waiting_for_client();
            tokio::time::sleep(Duration::from_secs(5)).await;
            upload.handed();
            std::future::pending::<()>().await;
        };
        assert!(within(Duration::from_secs(1), Some(&upload), send)
            .await
            .is_err());
        assert_eq!(started.elapsed(), Duration::from_secs(6));
    }

    #[tokio::test(start_paused = true)]
    async fn the_response_time_of_an_upload_runs_from_its_end() {
        let upload = Upload::new(Duration::from_secs(60));
        let start = Instant::now();
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(response_time(Some(&upload), start), Duration::from_secs(5));
        upload.ended();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            response_time(Some(&upload), start),
            Duration::from_millis(20)
        );
        assert_eq!(response_time(None, start), Duration::from_millis(5_020));
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_body_the_timeout_runs_from_the_start() {
        let started = Instant::now();
        let send = std::future::pending::<()>();
        assert!(within(Duration::from_secs(2), None, send).await.is_err());
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }
}
