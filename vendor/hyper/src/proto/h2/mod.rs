use std::error::Error as StdError;
use std::future::Future;
use std::io::{Cursor, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Buf;
use futures_core::ready;
use h2::SendStream;
use http::header::{HeaderName, CONNECTION, TRANSFER_ENCODING, UPGRADE};
use http::HeaderMap;
use pin_project_lite::pin_project;

use crate::body::Body;

pub(crate) mod ping;
pub(crate) mod upgrade;

cfg_client! {
    pub(crate) mod client;
    pub(crate) use self::client::ClientTask;
}

cfg_server! {
    pub(crate) mod server;
    pub(crate) use self::server::Server;
}

/// Default initial stream window size defined in HTTP2 spec.
pub(crate) const SPEC_WINDOW_SIZE: u32 = 65_535;

// List of connection headers from RFC 9110 Section 7.6.1
//
// TE headers are allowed in HTTP/2 requests as long as the value is "trailers", so they're
// tested separately.
static CONNECTION_HEADERS: [HeaderName; 4] = [
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    TRANSFER_ENCODING,
    UPGRADE,
];

enum MessageKind {
    #[cfg(feature = "client")]
    Request,
    #[cfg(feature = "server")]
    Response,
}

fn strip_connection_headers(headers: &mut HeaderMap, kind: MessageKind) {
    for header in &CONNECTION_HEADERS {
        if headers.remove(header).is_some() {
            warn!("Connection header illegal in HTTP/2: {}", header.as_str());
        }
    }

    #[cfg(not(feature = "client"))]
    let _ = kind;
    #[cfg(feature = "client")]
    if matches!(kind, MessageKind::Request) {
        if headers
            .get(http::header::TE)
            .map_or(false, |te_header| te_header != "trailers")
        {
            warn!("TE headers not set to \"trailers\" are illegal in HTTP/2 requests");
            headers.remove(http::header::TE);
        }
    } else if headers.remove(http::header::TE).is_some() {
        warn!("TE headers illegal in HTTP/2 responses");
    }

    if let Some(header) = headers.remove(CONNECTION) {
        warn!(
            "Connection header illegal in HTTP/2: {}",
            CONNECTION.as_str()
        );
        // A `Connection` header may have a comma-separated list of names of other headers that
        // are meant for only this specific connection.
        //
        // Iterate these names and remove them as headers. Connection-specific headers are
        // forbidden in HTTP2, as that information has been moved into frame types of the h2
        // protocol.
        if let Ok(header_contents) = header.to_str() {
            for name in header_contents.split(',') {
                let name = name.trim();
                headers.remove(name);
            }
        }
    }
}

// body adapters used by both Client and Server

pin_project! {
    pub(crate) struct PipeToSendStream<S>
    where
        S: Body,
    {
        body_tx: SendStream<SendBuf<S::Data>>,
        data_done: bool,
        // A data chunk that has been polled from the body but is still waiting
        // for stream-level capacity before it can be shipped. Stored here so
        // it survives across `Poll::Pending` returns from `poll_capacity`; if
        // we left the chunk in a local, it would be dropped on every repoll.
        buffered_data: Option<Peeked<S::Data>>,
        // Crossfade patch 22: the bound on a chunk's wait for the peer's flow-control window.
        window: WindowWait,
        #[pin]
        stream: S,
    }
}

/// Crossfade patch 22: how long a response body's chunk may wait for the peer to open its
/// flow-control window (RFC 9113 §5.2) before the stream is reset with `CANCEL`, and what to call
/// when it is. Timed from the moment a chunk finds no window, and cleared by any window granted,
/// so a peer that reads slowly is never cut: only one that grants nothing (a zero
/// `SETTINGS_INITIAL_WINDOW_SIZE` and no `WINDOW_UPDATE`, which holds the stream with its socket
/// idle, where no socket-level timeout can see it). nginx bounds the same wait by `send_timeout`.
pub(crate) struct SendTimeout {
    pub(crate) time: crate::common::time::Time,
    pub(crate) after: std::time::Duration,
    pub(crate) on_timeout: Option<SendTimeoutHook>,
}

/// Crossfade patch 22: what a server connection calls each time a stream is reset at its send
/// timeout (a counter, typically).
#[derive(Clone)]
pub(crate) struct SendTimeoutHook(pub(crate) std::sync::Arc<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for SendTimeoutHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SendTimeoutHook")
    }
}

/// Crossfade patches 22 and 23: one stream's waits for the peer's flow-control window, each
/// bounded by the connection's `SendTimeout` (none: unbounded). The timer is made at the stream's
/// first wait and reset, not rebuilt, at the next ones.
pub(crate) struct WindowWait {
    bound: Option<std::sync::Arc<SendTimeout>>,
    stall: Option<Pin<Box<dyn crate::rt::Sleep>>>,
    stalled: bool,
}

impl WindowWait {
    fn new(bound: Option<std::sync::Arc<SendTimeout>>) -> Self {
        WindowWait {
            bound,
            stall: None,
            stalled: false,
        }
    }

    /// Whether the waits are bounded (and chunks must then be handed to h2 in window-sized
    /// parts, so that each grant wakes the stream's sender).
    fn is_bounded(&self) -> bool {
        self.bound.is_some()
    }

    /// Called when `poll_capacity` is `Pending`: arms the timer at a wait's start and polls it.
    /// Once it has fired, the stream is reset with `CANCEL`, the hook called, and the error the
    /// sender ends with returned.
    fn poll_expired<B: Buf>(
        &mut self,
        tx: &mut SendStream<SendBuf<B>>,
        cx: &mut Context<'_>,
    ) -> Option<crate::Error> {
        let bound = self.bound.as_deref()?;
        if !self.stalled {
            self.stalled = true;
            match self.stall.as_mut() {
                Some(stall) => {
                    let deadline = bound.time.now() + bound.after;
                    bound.time.reset(stall, deadline);
                }
                None => self.stall = Some(bound.time.sleep(bound.after)),
            }
        }
        let stall = self.stall.as_mut()?;
        if stall.as_mut().poll(cx).is_pending() {
            return None;
        }
        debug!("send timeout: the peer opened no window");
        tx.send_reset(h2::Reason::CANCEL);
        if let Some(hook) = &bound.on_timeout {
            (hook.0)();
        }
        Some(crate::Error::new_body_write(
            "send timeout: the peer opened no flow-control window",
        ))
    }

    /// A window came: the next wait is timed afresh.
    fn granted(&mut self) {
        self.stalled = false;
    }
}

struct Peeked<D> {
    data: D,
    is_eos: bool,
}

impl<S> PipeToSendStream<S>
where
    S: Body,
{
    fn new(stream: S, tx: SendStream<SendBuf<S::Data>>) -> PipeToSendStream<S> {
        PipeToSendStream {
            body_tx: tx,
            data_done: false,
            buffered_data: None,
            window: WindowWait::new(None),
            stream,
        }
    }

    /// Crossfade patch 22: bounds each wait for the peer's window by `send_timeout`.
    #[cfg(feature = "server")]
    fn with_send_timeout(mut self, send_timeout: Option<std::sync::Arc<SendTimeout>>) -> Self {
        self.window = WindowWait::new(send_timeout);
        self
    }

    #[cfg(feature = "client")]
    fn send_reset(self: Pin<&mut Self>, reason: h2::Reason) {
        self.project().body_tx.send_reset(reason);
    }
}

impl<S> Future for PipeToSendStream<S>
where
    S: Body,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    type Output = crate::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut me = self.project();
        loop {
            // Register for RST_STREAM notification while we wait for the next
            // body chunk or for send capacity, so the task wakes up if the
            // peer resets the stream.
            if let Poll::Ready(reason) = me
                .body_tx
                .poll_reset(cx)
                .map_err(crate::Error::new_body_write)?
            {
                debug!("stream received RST_STREAM: {:?}", reason);
                return Poll::Ready(Err(crate::Error::new_body_write(::h2::Error::from(reason))));
            }

            // If a previously-polled chunk is still waiting for stream-level
            // send capacity, drive that to completion before touching the
            // body again.
            if me.buffered_data.is_some() {
                // Crossfade patch 22: the capacity is kept for the split below.
                let mut capacity = me.body_tx.capacity();
                while capacity == 0 {
                    let polled = match me.body_tx.poll_capacity(cx) {
                        Poll::Ready(capacity) => capacity,
                        Poll::Pending => {
                            // Crossfade patch 22: the wait for the peer's window is bounded.
                            if let Some(err) = me.window.poll_expired(me.body_tx, cx) {
                                return Poll::Ready(Err(err));
                            }
                            return Poll::Pending;
                        }
                    };
                    match polled {
                        Some(Ok(granted)) => capacity = granted,
                        Some(Err(e)) => return Poll::Ready(Err(crate::Error::new_body_write(e))),
                        None => {
                            // None means the stream is no longer in a
                            // streaming state, we either finished it
                            // somehow, or the remote reset us.
                            return Poll::Ready(Err(crate::Error::new_body_write(
                                "send stream capacity unexpectedly closed",
                            )));
                        }
                    }
                }
                // Crossfade patch 22: a window came; the next wait is timed afresh.
                me.window.granted();

                let mut peeked = me.buffered_data.take().expect("checked is_some above");
                // Crossfade patch 22: with a send timeout, h2 is handed no more than the window
                // it has for the stream, so that each window the client grants wakes this pipe
                // (h2 wakes it only when its capacity grows, which it does not while h2 still
                // buffers bytes of an earlier chunk), and the wait is timed from the last grant.
                // The capacity the chunk needs is asked for as `send_data` asks for what it
                // buffers (h2 assigns what the windows have at once); what does not fit waits here.
                if me.window.is_bounded() && capacity < peeked.data.remaining() {
                    me.body_tx.reserve_capacity(peeked.data.remaining());
                    capacity = me.body_tx.capacity();
                }
                if me.window.is_bounded() && capacity < peeked.data.remaining() {
                    let part = peeked.data.copy_to_bytes(capacity);
                    me.body_tx
                        .send_data(SendBuf::Part(part), false)
                        .map_err(crate::Error::new_body_write)?;
                    me.body_tx.reserve_capacity(peeked.data.remaining());
                    *me.buffered_data = Some(peeked);
                    continue;
                }
                let buf = SendBuf::Buf(peeked.data);
                me.body_tx
                    .send_data(buf, peeked.is_eos)
                    .map_err(crate::Error::new_body_write)?;

                if peeked.is_eos {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }

            // Poll for the next body frame *before* reserving any connection
            // flow-control capacity. Reserving capacity speculatively (even a
            // single byte) pins that capacity on the connection-level window,
            // which can deadlock a second stream when talking to peers that
            // only emit WINDOW_UPDATE once their receive window is fully
            // exhausted. See #4003.
            match ready!(me.stream.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => {
                    if frame.is_data() {
                        let chunk = frame.into_data().unwrap_or_else(|_| unreachable!());
                        let is_eos = me.stream.is_end_stream();
                        let len = chunk.remaining();
                        trace!("send body chunk: {} bytes, eos={}", len, is_eos);

                        if len == 0 {
                            // Zero-length data frames need no capacity; send
                            // them straight through so trailing empty frames
                            // (e.g. an explicit end-of-stream marker) are
                            // delivered.
                            let buf = SendBuf::Buf(chunk);
                            me.body_tx
                                .send_data(buf, is_eos)
                                .map_err(crate::Error::new_body_write)?;

                            if is_eos {
                                return Poll::Ready(Ok(()));
                            }
                            continue;
                        }

                        // Reserve a minimal claim on the connection-level
                        // flow-control window rather than the whole chunk. The
                        // chunk is already in hand, so this still cannot pin
                        // capacity against a body that never produces data
                        // (#4003), and h2 raises the request to the buffered
                        // length inside `send_data`, so the demand eventually
                        // signalled to the peer is unchanged. Claiming the full
                        // length up front instead makes every in-flight stream a
                        // heavyweight claimant while it waits, which is costly
                        // once the streams on a connection collectively demand
                        // more than the window the peer advertises. Stash the
                        // chunk in `self` so it survives the upcoming
                        // `poll_capacity` wait even if it returns
                        // `Poll::Pending`.
                        me.body_tx.reserve_capacity(1);
                        *me.buffered_data = Some(Peeked {
                            data: chunk,
                            is_eos,
                        });
                    } else if frame.is_trailers() {
                        // no more DATA, so give any capacity back
                        me.body_tx.reserve_capacity(0);
                        me.body_tx
                            .send_trailers(frame.into_trailers().unwrap_or_else(|_| unreachable!()))
                            .map_err(crate::Error::new_body_write)?;
                        return Poll::Ready(Ok(()));
                    } else {
                        trace!("discarding unknown frame");
                        // loop again
                    }
                }
                Some(Err(e)) => return Poll::Ready(Err(me.body_tx.on_user_err(e))),
                None => {
                    // no more frames means we're done here
                    // but at this point, we haven't sent an EOS DATA, or
                    // any trailers, so send an empty EOS DATA.
                    return Poll::Ready(me.body_tx.send_eos_frame());
                }
            }
        }
    }
}

trait SendStreamExt {
    fn on_user_err<E>(&mut self, err: E) -> crate::Error
    where
        E: Into<Box<dyn std::error::Error + Send + Sync>>;
    fn send_eos_frame(&mut self) -> crate::Result<()>;
}

impl<B: Buf> SendStreamExt for SendStream<SendBuf<B>> {
    fn on_user_err<E>(&mut self, err: E) -> crate::Error
    where
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let err = crate::Error::new_user_body(err);
        debug!("send body user stream error: {}", err);
        self.send_reset(err.h2_reason());
        err
    }

    fn send_eos_frame(&mut self) -> crate::Result<()> {
        trace!("send body eos");
        self.send_data(SendBuf::None, true)
            .map_err(crate::Error::new_body_write)
    }
}

#[repr(usize)]
enum SendBuf<B> {
    Buf(B),
    Cursor(Cursor<Box<[u8]>>),
    // Crossfade patch 22: the part of a chunk that fits the stream's window.
    Part(bytes::Bytes),
    None,
}

impl<B: Buf> Buf for SendBuf<B> {
    #[inline]
    fn remaining(&self) -> usize {
        match self {
            Self::Buf(b) => b.remaining(),
            Self::Cursor(c) => Buf::remaining(c),
            Self::Part(p) => p.remaining(),
            Self::None => 0,
        }
    }

    #[inline]
    fn chunk(&self) -> &[u8] {
        match self {
            Self::Buf(b) => b.chunk(),
            Self::Cursor(c) => c.chunk(),
            Self::Part(p) => p.chunk(),
            Self::None => &[],
        }
    }

    #[inline]
    fn advance(&mut self, cnt: usize) {
        match self {
            Self::Buf(b) => b.advance(cnt),
            Self::Cursor(c) => c.advance(cnt),
            Self::Part(p) => p.advance(cnt),
            Self::None => {}
        }
    }

    fn chunks_vectored<'data>(&'data self, dst: &mut [IoSlice<'data>]) -> usize {
        match self {
            Self::Buf(b) => b.chunks_vectored(dst),
            Self::Cursor(c) => c.chunks_vectored(dst),
            Self::Part(p) => p.chunks_vectored(dst),
            Self::None => 0,
        }
    }
}
