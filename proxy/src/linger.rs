//! Lingering close of client connections (RFC 9112 §9.6), as nginx's `lingering_close`.
//!
//! The proxy may answer a request before it has read the request's body: a backend's early `413
//! Content Too Large` passed through (see `early`), or the proxy's own 503, 431 or 400. hyper then
//! closes the connection while the client may still be uploading. Closing a TCP socket with
//! unread bytes in its receive buffer makes the kernel send a reset instead of a FIN, and a
//! client that is still sending gets that reset on its next write, often before it has read the
//! answer sitting in its receive buffer: curl reports "Send failure: Connection reset by peer"
//! instead of the 413. RFC 9112 §9.6 asks a server to close in stages: shut down its sending side
//! (FIN), keep reading and discarding until the client closes, and only then close.
//!
//! [`LingeringIo`] wraps each accepted TCP stream (under TLS too: the TLS layer's shutdown sends
//! `close_notify` and then shuts the wrapped stream down). When hyper ends a connection gracefully
//! it shuts the stream down (`poll_shutdown`) and drops it; the wrapper's `Drop` then hands the
//! socket back to the connection's task ([`HandBack`], a slot in the connection's context)
//! instead of closing it, unless the client had closed its side already, or said that it closes
//! (`Connection: close`) and its request was read whole: such a client sends nothing more (RFC
//! 9112 §9.6), so its stream is closed at once (`HandBack::close_at_once`, vendor/hyper patch 17),
//! as nginx does. The wrapper's `poll_shutdown` only notes hyper's shutdown (an upgraded
//! connection's tunnel passes a half-close on and shuts down at once): the FIN goes out with the
//! `shutdown(2)` of a stream kept for the lingering close, or with the `close(2)` of one closed at
//! once, which sends it by itself when no byte is left unread. A `shutdown` there too was one
//! system call per connection more than nginx makes (docs/bench-2026-12-03-close.md). The task
//! runs [`linger`]: it discards what the client sends (without
//! copying it, `MSG_TRUNC`) until the client closes, no byte arrives for
//! `limits.lingering_timeout`, `limits.lingering_time` has passed, or `limits.lingering_max_bytes`
//! were discarded; then it closes. The connection keeps its place under `limits.max_connections`
//! meanwhile. A connection ended by an error or a timeout (no shutdown) closes at once, as does an
//! upgraded one (its stream left hyper for the tunnel).
//!
//! The served path costs nothing more: the wrapper passes every read and write straight through
//! (one branch on a read's result), and the hand-back happens once per connection, at its end.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use rustix::net::RecvFlags;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::config::LimitsConfig;

/// How many bytes one discarding `recv(2)` may take.
const DISCARD_CHUNK: usize = 64 * 1024;

/// A client connection's TCP stream that, when hyper shut it down gracefully and dropped it,
/// goes back to the connection's task for a lingering close (see the module docs), through the
/// [`HandBack`] of `holder` (the connection's context).
#[derive(Debug)]
pub(crate) struct LingeringIo<H: Holder> {
    /// Always `Some` until `Drop`.
    io: Option<TcpStream>,
    holder: Arc<H>,
    /// hyper shut the sending side down: the FIN is sent when the stream is handed back (see
    /// [`HandBack::put`]) or closed.
    shut: bool,
    /// A read returned the end of the stream: the client closed its side.
    eof: bool,
    /// A write found the client reading nothing (the socket's buffer full) and none has made
    /// progress since: `stall` runs (`limits.send_timeout`).
    stalled: bool,
    /// The deadline of a write that waits on a client that reads nothing, past which writes
    /// fail ([`LingeringIo::within_send_timeout`]). Made at the first such write only: most
    /// connections never have one.
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// Holds a client connection's [`HandBack`]: the connection's context, which the connection's
/// task and its stream share anyway, so handing the stream back allocates nothing of its own.
pub(crate) trait Holder {
    /// The connection's slot.
    fn hand_back(&self) -> &HandBack;

    /// `limits.send_timeout`: how long a write may wait on a client that reads nothing.
    fn send_timeout(&self) -> Duration;

    /// Counts a connection whose write waited past [`Holder::send_timeout`]
    /// (`crossfade_send_timeouts_total`).
    fn send_timed_out(&self);
}

/// Where a client connection's stream goes back to the connection's task for a lingering close.
/// The task takes it once hyper is done ([`HandBack::take`]); a stream dropped after that (an
/// upgraded connection's, which outlives the task) is closed at once, not kept.
#[derive(Debug, Default)]
pub(crate) struct HandBack(Mutex<Back>);

#[derive(Debug, Default)]
struct Back {
    stream: Option<TcpStream>,
    /// The task has looked: it will not look again.
    taken: bool,
    /// The connection was upgraded: its stream belongs to a tunnel ([`HandBack::upgraded`]).
    upgraded: bool,
}

/// How a lingering close ended: the value of the `end` label of
/// `crossfade_lingering_closes_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LingerEnd {
    /// The client closed its side (FIN): the clean end.
    Closed,
    /// No byte came for `limits.lingering_timeout`.
    Quiet,
    /// `limits.lingering_time` passed (or, on a shed connection, its deadline).
    Time,
    /// `limits.lingering_max_bytes` were discarded.
    Bytes,
    /// The client reset the connection, or reading failed.
    Error,
}

/// The bounds of one lingering close.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bounds {
    /// When it ends whatever comes.
    pub(crate) until: Instant,
    /// The longest wait for the next byte.
    pub(crate) quiet: Duration,
    /// The most bytes discarded.
    pub(crate) max_bytes: u64,
}

/// Lingering closes by how they ended, and the bytes they discarded.
#[derive(Debug, Default)]
pub(crate) struct LingerCounts {
    ends: [AtomicU64; 5],
    discarded: AtomicU64,
}

// === impl LingeringIo ===

impl<H: Holder> LingeringIo<H> {
    /// Wraps an accepted stream; `holder`'s [`HandBack`] gets it back if hyper closes the
    /// connection gracefully while the client may still be sending.
    pub(crate) fn new(io: TcpStream, holder: Arc<H>) -> LingeringIo<H> {
        LingeringIo {
            io: Some(io),
            holder,
            shut: false,
            eof: false,
            stalled: false,
            stall: None,
        }
    }

    /// `polled`, a write's result; but when the write waits (the client reads nothing, so the
    /// socket's buffer is full), the wait is timed from the first write that waited since the
    /// last one that made progress, and past `limits.send_timeout` the write fails with
    /// `TimedOut`, which ends the connection (nginx's `send_timeout`). A write that proceeds
    /// costs one flag store.
    fn within_send_timeout<T>(
        &mut self,
        polled: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        if !polled.is_pending() {
            self.stalled = false;
            return polled;
        }
        if !self.stalled {
            self.stalled = true;
            let deadline = Instant::now() + self.holder.send_timeout();
            match &mut self.stall {
                Some(stall) => stall.as_mut().reset(deadline),
                None => self.stall = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        let passed = (self.stall.as_mut()).is_some_and(|stall| stall.as_mut().poll(cx).is_ready());
        if !passed {
            return Poll::Pending;
        }
        self.holder.send_timed_out();
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "limits.send_timeout passed while the client read nothing",
        )))
    }

    /// Receives the first bytes the client sent into `buf` without taking them off the stream
    /// (`MSG_PEEK`): they are read again by the next read.
    pub(crate) async fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        match &self.io {
            Some(io) => io.peek(buf).await,
            None => Err(io::Error::from(io::ErrorKind::NotConnected)),
        }
    }

    /// The wrapped stream, for the I/O methods (it is only taken in `Drop`).
    fn io(&mut self) -> io::Result<Pin<&mut TcpStream>> {
        let gone = || io::Error::from(io::ErrorKind::NotConnected);
        self.io.as_mut().map(Pin::new).ok_or_else(gone)
    }
}

impl<H: Holder> Drop for LingeringIo<H> {
    fn drop(&mut self) {
        if !self.shut || self.eof {
            return;
        }
        if let Some(io) = self.io.take() {
            self.holder.hand_back().put(io);
        }
    }
}

// === impl HandBack ===

impl HandBack {
    /// Keeps `stream`, whose sending side hyper shut down, for the task: shuts that side down
    /// (`shutdown(2)`, the FIN) and keeps it, unless the task has looked already (a connection
    /// closed at once): then it is closed (`close(2)` sends the FIN) without a `shutdown`. A
    /// `shutdown` that fails closes it at once too, as hyper's failed shutdown did (tokio's
    /// `TcpStream::poll_shutdown`: `ENOTCONN`, a connection the client reset, is no failure).
    fn put(&self, stream: TcpStream) {
        let mut back = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if back.taken {
            return;
        }
        match rustix::net::shutdown(&stream, rustix::net::Shutdown::Write) {
            Ok(()) | Err(rustix::io::Errno::NOTCONN) => back.stream = Some(stream),
            Err(error) => tracing::debug!(%error, "shutting a client connection down failed"),
        }
    }

    /// Closes the stream when it comes back instead of keeping it for a lingering close: for a
    /// connection whose client said that it closes and whose request was read whole, so that no
    /// byte can be left unread (see `server::http`). nginx closes such connections at once too.
    pub(crate) fn close_at_once(&self) {
        drop(self.take());
    }

    /// Marks the connection as upgraded, before its 101 goes out: hyper then hands the stream to a
    /// tunnel (`crate::tunnel`), whose shutdown passes a half-close on (RFC 9293 §3.6: the other
    /// direction stays open) and must send its FIN at once, not when the tunnel ends.
    pub(crate) fn upgraded(&self) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .upgraded = true;
    }

    fn is_upgraded(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .upgraded
    }

    /// The stream handed back, if any; a stream handed back later is closed instead.
    pub(crate) fn take(&self) -> Option<TcpStream> {
        let mut back = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        back.taken = true;
        back.stream.take()
    }
}

impl<H: Holder> AsyncRead for LingeringIo<H> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = match self.io() {
            Ok(io) => io.poll_read(cx, buf),
            Err(e) => return Poll::Ready(Err(e)),
        };
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() == before {
            self.eof |= buf.remaining() > 0;
        }
        polled
    }
}

impl<H: Holder> AsyncWrite for LingeringIo<H> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = match self.io() {
            Ok(io) => io.poll_write(cx, buf),
            Err(e) => return Poll::Ready(Err(e)),
        };
        self.within_send_timeout(polled, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = match self.io() {
            Ok(io) => io.poll_write_vectored(cx, bufs),
            Err(e) => return Poll::Ready(Err(e)),
        };
        self.within_send_timeout(polled, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(AsyncWrite::is_write_vectored)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.io() {
            Ok(io) => io.poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    /// hyper's graceful end: notes the shutdown; the FIN goes out when the stream is handed back
    /// or closed (see the module docs), as hyper writes nothing after it and drops the stream
    /// next. An upgraded connection's ([`HandBack::upgraded`]) is a tunnel's half-close, whose
    /// other direction may go on for long: that FIN goes out at once.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let upgraded = self.holder.hand_back().is_upgraded();
        let io = match self.io() {
            Ok(io) => io,
            Err(e) => return Poll::Ready(Err(e)),
        };
        let polled = if upgraded {
            io.poll_shutdown(cx)
        } else {
            Poll::Ready(Ok(()))
        };
        if matches!(polled, Poll::Ready(Ok(()))) {
            self.shut = true;
        }
        polled
    }
}

// === impl LingerEnd ===

impl LingerEnd {
    /// Every end, in label order.
    pub const ALL: [LingerEnd; 5] = [
        LingerEnd::Closed,
        LingerEnd::Quiet,
        LingerEnd::Time,
        LingerEnd::Bytes,
        LingerEnd::Error,
    ];

    /// The label value: `closed`, `quiet`, `time`, `bytes` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            LingerEnd::Closed => "closed",
            LingerEnd::Quiet => "quiet",
            LingerEnd::Time => "time",
            LingerEnd::Bytes => "bytes",
            LingerEnd::Error => "error",
        }
    }
}

// === impl LingerCounts ===

impl LingerCounts {
    fn count(&self, end: LingerEnd, discarded: u64) {
        self.ends[end as usize].fetch_add(1, Ordering::Relaxed);
        self.discarded.fetch_add(discarded, Ordering::Relaxed);
    }

    /// Lingering closes per end, in [`LingerEnd::ALL`] order.
    pub(crate) fn ends(&self) -> [u64; 5] {
        std::array::from_fn(|i| self.ends[i].load(Ordering::Relaxed))
    }

    /// Bytes discarded by lingering closes, in bytes.
    pub(crate) fn discarded(&self) -> u64 {
        self.discarded.load(Ordering::Relaxed)
    }
}

/// The bounds of a lingering close starting now under `limits`, ending at `cap` at the latest
/// (a shed connection's deadline); `None` when `limits.lingering_time` is 0 (lingering is off).
pub(crate) fn bounds(limits: &LimitsConfig, cap: Option<Instant>) -> Option<Bounds> {
    if limits.lingering_time.is_zero() {
        return None;
    }
    let until = crate::duration::later(Instant::now(), limits.lingering_time);
    Some(Bounds {
        until: cap.map_or(until, |cap| cap.min(until)),
        quiet: limits.lingering_timeout,
        max_bytes: limits.lingering_max_bytes,
    })
}

/// The lingering close of `stream`, whose sending side is shut down: discards what the client
/// sends within `bounds` (see the module docs), counts how it ended in `counts`, then closes.
pub(crate) async fn linger(stream: TcpStream, bounds: Bounds, counts: &LingerCounts) {
    let mut discarded = 0u64;
    let end = discard(&stream, bounds, &mut discarded).await;
    tracing::debug!(end = end.as_str(), discarded, "lingering close ended");
    counts.count(end, discarded);
}

thread_local! {
    /// The buffer [`discard`] gives `recv`: with MSG_TRUNC, Linux discards TCP data without copying
    /// it (tcp(7)), so the buffer is never written, but `recv` takes its length from it. One per
    /// thread, zeroed once, borrowed only within a `recv` call: a buffer per lingering close
    /// (`vec![0; 64 KiB]`, a `calloc`) was 58 % of the proxy's instructions with a new connection
    /// per request (`PROFILE_CLOSE=20 bench/profile.sh`, docs/bench-2026-12-02e-pgo.md).
    static SINK: RefCell<Vec<u8>> = RefCell::new(vec![0u8; DISCARD_CHUNK]);
}

/// Reads and discards until an end; `discarded` counts the bytes.
async fn discard(stream: &TcpStream, bounds: Bounds, discarded: &mut u64) -> LingerEnd {
    loop {
        let quiet = crate::duration::later(Instant::now(), bounds.quiet);
        let (wait, on_timeout) = match quiet < bounds.until {
            true => (quiet, LingerEnd::Quiet),
            false => (bounds.until, LingerEnd::Time),
        };
        match tokio::time::timeout_at(wait, stream.readable()).await {
            Err(_) => return on_timeout,
            Ok(Err(_)) => return LingerEnd::Error,
            Ok(Ok(())) => {}
        }
        let flags = RecvFlags::DONTWAIT | RecvFlags::TRUNC;
        let received = stream.try_io(Interest::READABLE, || {
            SINK.with_borrow_mut(|sink| rustix::net::recv(stream, &mut sink[..], flags))
                .map(|(n, _)| n)
                .map_err(io::Error::from)
        });
        match received {
            Ok(0) => return LingerEnd::Closed,
            Ok(n) => *discarded += n as u64,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return LingerEnd::Error,
        }
        if *discarded >= bounds.max_bytes {
            return LingerEnd::Bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    #[derive(Debug, Default)]
    struct Slot(HandBack);

    impl Holder for Slot {
        fn hand_back(&self) -> &HandBack {
            &self.0
        }

        fn send_timeout(&self) -> Duration {
            Duration::from_secs(60)
        }

        fn send_timed_out(&self) {}
    }

    /// A client connection and the proxy's end of it, wrapped.
    async fn connected() -> (TcpStream, LingeringIo<Slot>, Arc<Slot>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await;
        let (server, _) = listener.accept().await.unwrap();
        let slot = Arc::new(Slot::default());
        (
            client.unwrap(),
            LingeringIo::new(server, Arc::clone(&slot)),
            slot,
        )
    }

    #[tokio::test]
    async fn a_stream_closed_at_once_is_closed_without_a_shutdown_and_its_client_reads_the_end() {
        let (mut client, mut io, slot) = connected().await;
        io.write_all(b"answer").await.unwrap();
        io.shutdown().await.unwrap();
        // As `server::serve_http` does once hyper's connection has ended, before dropping it.
        slot.0.close_at_once();
        // No `shutdown(2)` yet (after one, a write fails with EPIPE): the close sends the FIN.
        let stream = io.io.as_ref().unwrap();
        assert_eq!(stream.try_write(b", more").unwrap(), 6);
        drop(io);
        let mut read = Vec::new();
        client.read_to_end(&mut read).await.unwrap();
        assert_eq!(read, b"answer, more");
        assert!(slot.0.take().is_none());
    }

    #[tokio::test]
    async fn a_stream_handed_back_is_shut_down_and_still_reads_what_the_client_sends() {
        let (mut client, mut io, slot) = connected().await;
        io.write_all(b"answer").await.unwrap();
        io.shutdown().await.unwrap();
        drop(io);
        let kept = slot.0.take().expect("handed back for the lingering close");
        assert!(
            kept.try_write(b"x").is_err(),
            "its sending side is shut down"
        );
        let mut read = Vec::new();
        client.read_to_end(&mut read).await.unwrap();
        assert_eq!(read, b"answer");
        client.write_all(b"late upload").await.unwrap();
        let mut late = [0; 11];
        kept.readable().await.unwrap();
        let mut kept = kept;
        kept.read_exact(&mut late).await.unwrap();
        assert_eq!(&late, b"late upload");
    }
}
