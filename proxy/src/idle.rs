//! A client connection's life after the accept: closed gracefully when the drain asks, when no
//! request arrives within `limits.header_read_timeout` of the accept, or (HTTP/2 above all) when
//! no request has been in flight for that long.
//!
//! hyper closes an idle HTTP/1.1 keep-alive connection itself (its header read timeout runs
//! between requests) but has no idle timeout for HTTP/2: a client that made one request and went
//! silent (or vanished without a FIN: a NAT mapping dropped, a phone that switched networks) held
//! its place under `limits.max_connections` forever (trial report 3 §4). Here the connection is
//! watched: with no stream open for `header_read_timeout` (the same bound as HTTP/1.1's wait for
//! the next request head: "no request in progress for this long"), it gets hyper's graceful
//! shutdown, which for HTTP/2 is GOAWAY (RFC 9113 §6.8) and for HTTP/1.1 the close hyper would do
//! anyway. A connection with a stream open (a slow response, a gRPC stream) is never closed so.
//!
//! What is in flight is read off the per-connection context's reference count: each request
//! holds a clone of it from its start to the end of its response body (the clone the request path
//! already made, kept longer), so the watch adds no work per request. Whether a request started
//! since the last look is read off the context's count of requests started. The watch
//! looks every half timeout and closes after three quiet looks in a row, so a connection is closed
//! between one and one and a half timeouts after its last stream ended. Only a connection that
//! has carried an HTTP/2 request keeps being looked at after the first request's deadline: an
//! HTTP/1.1 one is hyper's to close when idle, and its task then polls no timer at each wake (by
//! callgrind, the watch's select and timer were ~600–700 instructions of ~37,000 per request).
//!
//! A connection with no request by the first deadline gets the same graceful shutdown (HTTP/2:
//! GOAWAY). Either way it then has [`GOAWAY_GRACE`] to end before it is dropped, unless a stream
//! is in flight: hyper's HTTP/2 graceful shutdown waits for its PING's answer, which a vanished
//! client never sends.
//!
//! hyper's HTTP/2 keep-alive PING (`http2().keep_alive_interval`) is off unless
//! `limits.h2_keepalive_interval` turns it on: in hyper 1.12 it takes a mutex and reads the clock
//! for every frame received (`proto/h2/ping.rs`), work on every request; a stream-less dead peer
//! is let go by this watch anyway, and the PING is for one that vanished with a stream open.
//!
//! [`GracefulShutdown`] and [`Watcher`] replace hyper-util's (same use): its watched connection
//! cannot also be shut down from outside, which the idle close needs, and its drain is one step,
//! where the proxy's is two ([`GracefulShutdown::shutdown_after`]): connections with work to end
//! first, idle HTTP/1.x ones only after a grace.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Poll, Wake, Waker};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio::sync::watch;
use tokio::time::Instant;

/// Quiet looks in a row after which a connection is idle: three, half a timeout apart, so that
/// at least a whole timeout passed since the last stream ended.
const QUIET_LOOKS: u32 = 3;

/// How long a connection shut down by this watch (no request by its deadline, or idle) may take
/// to end before it is dropped, if no request is in flight by then. An HTTP/2 one has been sent
/// GOAWAY with the highest stream id and a PING (hyper's graceful shutdown, RFC 9113 §6.8), and
/// ends once the PING is answered (one round trip) and the final GOAWAY is sent; h2 waits for
/// that answer without a bound, so a client that vanished (no FIN: the case the idle close is
/// for) would otherwise keep its place until TCP gives up on the unacknowledged GOAWAY (some
/// 15 minutes). One second covers any real round trip. A connection with a stream still in flight
/// is looked at again every half timeout and dropped only once at rest.
pub(crate) const GOAWAY_GRACE: Duration = Duration::from_secs(1);

/// Signals the watched connections to shut down gracefully and waits for them to end.
#[derive(Debug)]
pub(crate) struct GracefulShutdown {
    tx: watch::Sender<Stage>,
}

/// One connection's side of a [`GracefulShutdown`]; counted until the connection ends.
#[derive(Debug)]
pub(crate) struct Watcher {
    rx: watch::Receiver<Stage>,
}

/// How far a drain has gone, as the watched connections see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// No drain.
    Serving,
    /// The drain began: a connection that carried an HTTP/2 request (GOAWAY now, RFC 9113 §6.8:
    /// the client stops opening streams on it, those open finish) or that has a request in flight
    /// (an HTTP/1.x one then closes after its response) shuts down; an idle HTTP/1.x one is
    /// served on, since its client may be sending its next request head this very moment.
    Busy,
    /// Every connection shuts down.
    All,
}

/// What tells a connection's activity: the per-connection context that each request holds until
/// its response ends, and which counts the requests started.
pub(crate) struct Activity<T> {
    context: Arc<T>,
    /// The context's count of requests started, at the last look.
    seen: u64,
    /// The context's reference count with no request in flight.
    baseline: usize,
    /// The idle timeout; looks every half of it.
    timeout: Duration,
    quiet: u32,
}

// === impl GracefulShutdown ===

impl GracefulShutdown {
    pub(crate) fn new() -> GracefulShutdown {
        GracefulShutdown {
            tx: watch::channel(Stage::Serving).0,
        }
    }

    /// A watcher for one more connection.
    pub(crate) fn watcher(&self) -> Watcher {
        Watcher {
            rx: self.tx.subscribe(),
        }
    }

    /// Connections watched now.
    pub(crate) fn count(&self) -> usize {
        self.tx.receiver_count()
    }

    /// Asks every watched connection to shut down gracefully; resolves once all have ended.
    pub(crate) async fn shutdown(self) {
        self.tx.send_replace(Stage::All);
        self.tx.closed().await;
    }

    /// The drain in two steps: at once, the connections with work to end shut down ([`Stage::Busy`]:
    /// HTTP/2 ones get GOAWAY, HTTP/1.x ones with a request in flight close after its response);
    /// idle HTTP/1.x connections (and any still telling their protocol) are served on for
    /// `grace`, or until every connection has ended, and then shut down too (an idle HTTP/1.x one
    /// closes at once). Resolves once all have ended. During `grace` the caller's responses say
    /// `Connection: close`, so a client that sends its next request on an idle connection gets
    /// the answer and moves off, rather than meeting a close as it sends (RFC 9112 §9.6, §9.3.1).
    /// A zero `grace` is [`GracefulShutdown::shutdown`].
    pub(crate) async fn shutdown_after(self, grace: Duration) {
        if grace.is_zero() {
            return self.shutdown().await;
        }
        self.tx.send_replace(Stage::Busy);
        tokio::select! {
            () = tokio::time::sleep(grace) => {}
            () = self.tx.closed() => return,
        }
        self.shutdown().await;
    }
}

/// What a watched connection's context tells about it beyond its reference count.
pub(crate) trait Context {
    /// Whether the connection has carried an HTTP/2 request. Only such a connection needs the
    /// idle looks: hyper closes an idle HTTP/1.1 connection itself (its header read timeout runs
    /// between requests), so an HTTP/1.1 connection's watch stops looking after its first request
    /// and its timer is no longer polled at each wake of the task.
    fn multiplexed(&self) -> bool;

    /// How many requests the connection has started (wrapping).
    fn requests(&self) -> u64;

    /// How long an idle HTTP/1.x connection is served on in a drain (`drain_grace`, at most half
    /// of `drain_timeout`): also the time a connection gets after a response that went out
    /// without `Connection: close` while the drain asked (see [`serve`]).
    fn drain_grace(&self) -> Duration;

    /// Whether the client abuses the connection: more premature stream resets than
    /// `limits.h2_max_premature_resets` allows (Rapid Reset, CVE-2023-44487). Looked at each time
    /// the connection's task wakes, so it must be cheap.
    fn abusive(&self) -> bool;
}

// === impl Watcher ===

impl Watcher {
    /// Resolves once the drain asks every connection to shut down (or the drain is gone): a
    /// connection whose protocol is not known yet carries no request, and is closed with the
    /// idle ones.
    pub(crate) async fn asked(&mut self) {
        while self.rx.changed().await.is_ok() {
            if *self.rx.borrow_and_update() == Stage::All {
                return;
            }
        }
    }
}

/// The drain's next stage, and the receiver for the one after it: one future type, so that
/// [`serve`] replaces it in place. [`Stage::All`] once the drain is gone. A `fn` returning an
/// `async move` block for the reason given at [`serve`]: it lives in every connection's task.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn stores its arguments twice (rust-lang/rust#62958)"
)]
fn next_stage(
    mut rx: watch::Receiver<Stage>,
) -> impl Future<Output = (Stage, watch::Receiver<Stage>)> {
    async move {
        let stage = match rx.changed().await {
            Ok(()) => *rx.borrow_and_update(),
            Err(_) => Stage::All,
        };
        (stage, rx)
    }
}

// === impl Activity ===

impl<T: Context> Activity<T> {
    /// Watches `context`; to be built once the connection holds its clone of `context` and
    /// before it serves a request, so that the count now is the idle one.
    pub(crate) fn new(context: Arc<T>, timeout: Duration) -> Activity<T> {
        let baseline = Arc::strong_count(&context);
        let seen = context.requests();
        Activity {
            context,
            seen,
            baseline,
            timeout,
            quiet: 0,
        }
    }

    /// Whether a request started since the last look (or since the connection began), taking
    /// the note of it.
    fn started(&mut self) -> bool {
        let requests = self.context.requests();
        let started = requests != self.seen;
        self.seen = requests;
        started
    }

    /// Whether a request is in flight (from its start to the end of its response body).
    fn busy(&self) -> bool {
        Arc::strong_count(&self.context) > self.baseline
    }

    /// Whether no request is in flight and none started since the last look.
    fn at_rest(&mut self) -> bool {
        !self.started() && !self.busy()
    }

    /// Whether the drain at `stage` asks this connection to shut down now (see [`Stage`]).
    fn asked(&self, stage: Stage) -> bool {
        match stage {
            Stage::Serving => false,
            Stage::Busy => self.context.multiplexed() || self.busy(),
            Stage::All => true,
        }
    }

    /// One look: true once the connection has been quiet (no request in flight, none started)
    /// for [`QUIET_LOOKS`] looks in a row.
    fn idle(&mut self) -> bool {
        match self.at_rest() {
            true => self.quiet += 1,
            false => self.quiet = 0,
        }
        self.quiet >= QUIET_LOOKS
    }
}

/// Whether the drain watch was woken since it was last polled, and the connection task to wake
/// when it is (see [`serve`]).
///
/// The watch is polled with a waker of its own (this), so a wake of the connection's task by
/// its sockets does not poll it again: polled while pending, tokio's `watch::Receiver::changed`
/// locks its `Notify`'s waiter list to compare wakers, ~160 instructions at each of the ~3 wakes
/// per request (by callgrind, 474 of 36,534 instructions per request,
/// docs/bench-2026-12-01-instructions.md).
#[derive(Debug)]
struct DrainWake {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for DrainWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Set before the task is woken: the task's next poll sees it.
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// Drives `connection` to its end: `shutdown` (hyper's graceful shutdown) is called once, when
/// the drain asks (`watcher`; at [`Stage::Busy`] only a connection with work to end, see
/// [`GracefulShutdown::shutdown_after`]), when it has been idle (`activity`), or when no request came by
/// `deadline`. In the last two cases the connection is given [`GOAWAY_GRACE`] more, then dropped
/// (closed) if nothing is in flight: an HTTP/2 client gets its GOAWAY (RFC 9113 §6.8 says an
/// endpoint SHOULD send one before closing; trial report 3 §4 found a bare FIN before the first
/// request), while one that answers nothing cannot hold its place longer. After the drain's
/// shutdown, the timer goes on as it was (the first deadline, or the idle looks of an HTTP/2
/// connection) and the connection is dropped at the first look that finds it at rest. (An
/// HTTP/1.1 connection still reading its first head closes at once on the shutdown; one that
/// sent nothing is in protocol detection (`crate::preface`), which the shutdown cancels.)
///
/// When the drain asks while the response in flight has already gone out without
/// `Connection: close` (`promised`: hyper wrote its head promising keep-alive), the shutdown
/// would close the connection right after that response, and its client, told nothing, would
/// send its next request into the close and lose it (trial 11 L2). Such a connection is left to
/// finish that response, and is then served on as an idle one at the drain's start: for
/// [`Context::drain_grace`] from the response's end, its next request answered with
/// `Connection: close` (the caller's draining responses say it), and shut down when the grace
/// ends (at once if idle); the drain's `drain_timeout` bounds it all.
///
/// Returns the connection's result and whether it was shut down before it carried any request:
/// such a connection has no answer for a lingering close to protect (`crate::linger`), and a
/// slowloris client must not have one prolong its stay.
///
/// `connection` comes pinned by the caller (hyper's HTTP/1.1 connection is ~720 B; the caller
/// boxes it). Not an `async fn` but a `fn` returning an `async move` block that uses what it
/// captures in place: an `async fn` keeps each argument's slot beside the local it moves into
/// (rust-lang/rust#62958), which made this future 127 B larger by `tests/idle_memory.rs`.
///
/// One timer serves both: it fires at `deadline`, then every half timeout for the idle looks
/// (reset in place, not rebuilt). This future lives in every client connection's task for the
/// connection's life, so its size is memory per idle connection (`bench/idle.sh`,
/// `tests/idle_memory.rs`). It is polled at every wake of the task, so it is a hand-written
/// poll rather than a `select!`: the connection first, the drain watch, and the timer only while
/// it still matters (until the first request; after it, only for a connection that carried an
/// HTTP/2 request). The drain watch is polled only when it was woken ([`DrainWake`]).
pub(crate) fn serve<'a, C, E, T, F, P, K>(
    mut connection: Pin<&'a mut C>,
    (shutdown, promised, calm): (F, P, K),
    watcher: Watcher,
    mut activity: Activity<T>,
    deadline: Instant,
) -> impl Future<Output = (Result<(), E>, bool)> + 'a
where
    C: Future<Output = Result<(), E>> + 'a,
    F: Fn(Pin<&mut C>) + 'a,
    P: Fn(Pin<&mut C>) -> bool + 'a,
    K: Fn(Pin<&mut C>) + 'a,
    T: Context + 'a,
    E: 'a,
{
    let Watcher { rx } = watcher;
    let look = (activity.timeout / 2).max(Duration::from_millis(1));
    async move {
        let drain = next_stage(rx);
        tokio::pin!(drain);
        // Woken at first, so the first poll registers the watch's waker.
        let drain_wake = Arc::new(DrainWake {
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        let timer = tokio::time::sleep_until(deadline);
        tokio::pin!(timer);
        let (mut first, mut closing, mut looking) = (false, false, true);
        // The drain asked while a response that promised keep-alive was in flight (`held`), then
        // that response ended and the connection is served on until the timer (`graced`).
        let (mut held, mut graced) = (false, false);
        // The client was found abusive and told so (`calm`): dropped after `GOAWAY_GRACE`
        // whatever is in flight.
        let mut calmed = false;
        std::future::poll_fn(|cx| loop {
            if !calmed && activity.context.abusive() {
                tracing::debug!("premature stream resets past the limit; GOAWAY ENHANCE_YOUR_CALM");
                calm(connection.as_mut());
                (calmed, closing, looking) = (true, true, true);
                let grace = crate::duration::later(Instant::now(), GOAWAY_GRACE);
                timer.as_mut().reset(grace);
            }
            if let Poll::Ready(result) = connection.as_mut().poll(cx) {
                return Poll::Ready((result, closing && !first));
            }
            if !closing && !held && !graced {
                // Registered before the flag is read: a wake in between is seen now or wakes
                // the task again.
                drain_wake.task.register(cx.waker());
                if drain_wake.woken.swap(false, Ordering::Acquire) {
                    let waker = Waker::from(Arc::clone(&drain_wake));
                    let mut drain_cx = std::task::Context::from_waker(&waker);
                    if let Poll::Ready((stage, rx)) = drain.as_mut().poll(&mut drain_cx) {
                        // The receiver is kept (in the next watch, polled only while serving on):
                        // the drain counts the connection as open until it is dropped.
                        drain.set(next_stage(rx));
                        if activity.asked(stage) && promised(connection.as_mut()) {
                            tracing::debug!("drain: the response in flight promised keep-alive");
                            held = true;
                        } else if activity.asked(stage) {
                            shutdown(connection.as_mut());
                            closing = true;
                        } else {
                            // Served on: polled at once, to register for the next stage.
                            drain_wake.woken.store(true, Ordering::Release);
                        }
                        continue;
                    }
                }
            }
            if !first && activity.started() {
                first = true;
                match activity.context.multiplexed() {
                    true => timer
                        .as_mut()
                        .reset(crate::duration::later(Instant::now(), look)),
                    false => looking = false,
                }
            }
            // After `first`'s block, which stops the looks of an HTTP/1.1 connection.
            if held && !activity.busy() {
                (held, graced, looking) = (false, true, true);
                let grace = activity.context.drain_grace();
                timer
                    .as_mut()
                    .reset(crate::duration::later(Instant::now(), grace));
            }
            if !looking || timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if calmed {
                tracing::debug!("abusive client: GOAWAY not written in time; closing");
                return Poll::Ready((Ok(()), false));
            }
            // The grace after a response that promised keep-alive ended: shut down (an idle
            // HTTP/1.x connection closes at once; a request that came meanwhile was answered
            // with `Connection: close`), then as any other shut down below.
            if graced {
                graced = false;
                shutdown(connection.as_mut());
                closing = true;
                let grace = crate::duration::later(Instant::now(), GOAWAY_GRACE);
                timer.as_mut().reset(grace);
                continue;
            }
            // Shut down and still open: dropped once at rest (see `GOAWAY_GRACE`), else looked at
            // again while its streams finish.
            if closing {
                if activity.at_rest() {
                    tracing::debug!("shut down, nothing in flight, not ended in time; closing");
                    return Poll::Ready((Ok(()), !first));
                }
                let next = crate::duration::later(timer.deadline(), look);
                timer.as_mut().reset(next);
                continue;
            }
            if !first || activity.idle() {
                tracing::debug!(
                    first,
                    "no request (in flight) within the header read timeout"
                );
                shutdown(connection.as_mut());
                closing = true;
                let grace = crate::duration::later(Instant::now(), GOAWAY_GRACE);
                timer.as_mut().reset(grace);
                continue;
            }
            let next = crate::duration::later(timer.deadline(), look);
            timer.as_mut().reset(next);
        })
        .await
    }
}

#[cfg(test)]
mod tests;
