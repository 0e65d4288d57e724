//! Copying bytes both ways between an upgraded client connection and its backend connection, and the
//! close when the backend's drain deadline passes.
//!
//! Each direction is a pump: read from one side, write to the other, and on EOF pass the half-close
//! on (FIN), as `tokio::io::copy_bidirectional` does. A WebSocket pump also follows the frames it
//! copies ([`FrameTracker`]), so that at the close signal it can finish the frame in progress and
//! then inject a close frame 1001 "going away" (RFC 6455 §5.5.1, §7.4.1): unmasked toward the
//! client, masked toward the backend (§5.3). It then waits for the peer's own close frame, and shuts
//! its side down gracefully. The whole close is bounded by [`CLOSE_WAIT`].

use std::future::Future;
use std::time::Duration;

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{self, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

use super::frame::{close_frame, FrameTracker, GOING_AWAY, OPCODE_CLOSE};
use super::idle::{close_signal, Activity};
use super::{Protocol, Tunnels};

/// Read buffer per direction, in bytes: holds a typical WebSocket message or TLS record whole.
const BUFFER_BYTES: usize = 16 * 1024;

/// The longest a close at the drain deadline takes: finishing the frame in progress, the peers'
/// close replies and their TCP close. RFC 6455 §7.1.1 leaves this wait to the implementation; 2 s
/// is many round trips inside a data centre, and short next to a drain timeout (30 s by default),
/// so a silent peer cannot hold a retired backend for long.
pub const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// The close frame's reason text (RFC 6455 §7.4.1 names code 1001 "going away").
const REASON: &str = "going away";

/// The side a pump writes to: an injected close frame is masked only toward the backend (§5.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Toward {
    Client,
    Backend,
}

/// Copies bytes between `client` and `backend` until both directions end, or until the close
/// signal (`close` changes, or no byte moved for `idle`, see [`super::idle`]; `None`: no idle
/// timeout) and the close that follows. An idle close is counted in `tunnels`.
pub(crate) async fn splice(
    (client, backend): (Upgraded, Upgraded),
    (protocol, idle): (Protocol, Option<Duration>),
    close: watch::Receiver<u64>,
    tunnels: &Tunnels,
) {
    let websocket = protocol == Protocol::WebSocket;
    let (mut client_read, mut client_write) = io::split(TokioIo::new(client));
    let (mut backend_read, mut backend_write) = io::split(TokioIo::new(backend));
    let activity = Activity::new();
    let (signal, signalled) = watch::channel(0u64);
    let up = pump(
        (&mut client_read, &mut backend_write),
        (Toward::Backend, &activity),
        websocket,
        signalled.clone(),
    );
    let down = pump(
        (&mut backend_read, &mut client_write),
        (Toward::Client, &activity),
        websocket,
        signalled,
    );
    let watchdog = close_signal(close, &signal, (&activity, idle), tunnels);
    let ended = tokio::select! {
        ended = both(up, down, websocket) => ended,
        never = watchdog => match never {},
    };
    let deadline = match ended {
        Ok(Some(deadline)) => deadline,
        Ok(None) => return,
        Err(error) => {
            tracing::debug!(%error, "tunnel ended with an error");
            return;
        }
    };
    // Read what the peers still send until they close: closing a socket with unread bytes would
    // send a RST instead of a FIN.
    let drain = async { tokio::join!(discard(&mut client_read), discard(&mut backend_read)) };
    let _ = tokio::time::timeout_at(deadline, drain).await;
}

/// Runs both pumps to their end; the first error ends both. `Some(deadline)` when the close signal
/// ended them (the time left for the peers to close).
///
/// A WebSocket has no half-close: once one side has ended its stream (the backend closes TCP after
/// the close handshake, RFC 6455 §7.1.1), the other gets [`CLOSE_WAIT`] to end its own, and is then
/// dropped. Other protocols keep a half-closed tunnel open as long as the other side sends.
async fn both<A, B>(up: A, down: B, websocket: bool) -> io::Result<Option<Instant>>
where
    A: Future<Output = io::Result<Option<Instant>>>,
    B: Future<Output = io::Result<Option<Instant>>>,
{
    tokio::pin!(up, down);
    let (mut up_end, mut down_end) = (None, None);
    let mut linger = None;
    while up_end.is_none() || down_end.is_none() {
        tokio::select! {
            end = &mut up, if up_end.is_none() => up_end = Some(end?),
            end = &mut down, if down_end.is_none() => down_end = Some(end?),
            () = sleep_until(linger) => return Ok(None),
        }
        let one_ended = matches!(up_end, Some(None)) || matches!(down_end, Some(None));
        if websocket && one_ended && linger.is_none() {
            linger = Some(Instant::now() + CLOSE_WAIT);
        }
    }
    Ok(up_end.flatten().max(down_end.flatten()))
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// One direction: copies `from` into `to` until EOF (then shuts `to` down) or the close signal
/// (then closes as the module doc says). Returns the close's deadline when the signal came.
async fn pump<R, W>(
    (from, to): (&mut R, &mut W),
    (toward, activity): (Toward, &Activity),
    websocket: bool,
    mut close: watch::Receiver<u64>,
) -> io::Result<Option<Instant>>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut frames = FrameTracker::default();
    let mut from_closed = false;
    let mut buf = vec![0u8; BUFFER_BYTES];
    let deadline = loop {
        let n = tokio::select! {
            read = from.read(&mut buf) => read?,
            () = signalled(&mut close) => break Instant::now() + CLOSE_WAIT,
        };
        if n == 0 {
            to.shutdown().await?;
            return Ok(None);
        }
        activity.touch();
        if websocket {
            from_closed |= frames.feed(&buf[..n]);
        }
        if let Some(deadline) = write_or_signal(to, &buf[..n], &mut close).await? {
            break deadline;
        }
        activity.touch();
    };
    if websocket {
        let mut close = Close {
            frames,
            from_closed,
            buf,
        };
        let closing = close.run(from, to, toward);
        if let Err(error) = tokio::time::timeout_at(deadline, closing)
            .await
            .unwrap_or(Ok(()))
        {
            tracing::debug!(%error, "websocket close failed");
        }
    }
    let _ = tokio::time::timeout_at(deadline, to.shutdown()).await;
    Ok(Some(deadline))
}

/// Writes all of `data`; `Some(deadline)` when the close signal came meanwhile. A peer that does
/// not read must not hold the close off: the write then gets until the close's deadline, and fails
/// with `TimedOut` after it (the tunnel is dropped).
async fn write_or_signal<W: AsyncWrite + Unpin>(
    to: &mut W,
    data: &[u8],
    close: &mut watch::Receiver<u64>,
) -> io::Result<Option<Instant>> {
    let write = to.write_all(data);
    tokio::pin!(write);
    tokio::select! {
        written = &mut write => written.map(|()| None),
        () = signalled(close) => {
            let deadline = Instant::now() + CLOSE_WAIT;
            match tokio::time::timeout_at(deadline, write).await {
                Ok(written) => written.map(|()| Some(deadline)),
                Err(_) => Err(io::ErrorKind::TimedOut.into()),
            }
        }
    }
}

/// Resolves when the close signal changes; never when its sender is gone.
async fn signalled(close: &mut watch::Receiver<u64>) {
    if close.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Reads and drops everything until EOF or an error.
async fn discard<R: AsyncRead + Unpin>(from: &mut R) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 {
            return;
        }
    }
}

/// The WebSocket close of one direction, at the close signal.
struct Close {
    frames: FrameTracker,
    /// `from` has sent its close frame (it has reached `to`, or will not be forwarded).
    from_closed: bool,
    buf: Vec<u8>,
}

impl Close {
    /// Finishes the frame in progress, injects the close into `to` (unless `from` already sent
    /// one through), then drops what `from` sends until its close frame or EOF.
    async fn run<R, W>(&mut self, from: &mut R, to: &mut W, toward: Toward) -> io::Result<()>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        if !self.from_closed && self.finish_frame(from, to).await? {
            let mask = (toward == Toward::Backend).then(|| crate::rng::thread_u32().to_be_bytes());
            to.write_all(&close_frame(GOING_AWAY, REASON, mask)).await?;
            to.flush().await?;
        }
        while !self.from_closed {
            let n = from.read(&mut self.buf).await?;
            if n == 0 {
                return Ok(());
            }
            self.from_closed = self.frames.feed(&self.buf[..n]);
        }
        Ok(())
    }

    /// Copies the rest of the frame in progress; true when a close frame can be written next (a
    /// boundary was reached, the frame that ended was not a close, the stream is not broken).
    async fn finish_frame<R, W>(&mut self, from: &mut R, to: &mut W) -> io::Result<bool>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        if self.frames.at_boundary() {
            return Ok(true);
        }
        loop {
            if self.frames.is_broken() {
                return Ok(false);
            }
            let n = from.read(&mut self.buf).await?;
            if n == 0 {
                return Ok(false);
            }
            let step = self.frames.advance(&self.buf[..n]);
            to.write_all(&self.buf[..step.consumed]).await?;
            let Some(opcode) = step.ended else {
                continue;
            };
            if opcode == OPCODE_CLOSE {
                self.from_closed = true;
                return Ok(false);
            }
            // Bytes after the boundary are not forwarded: nothing follows a close frame (§5.5.1).
            self.from_closed = self.frames.feed(&self.buf[step.consumed..n]);
            return Ok(true);
        }
    }
}
