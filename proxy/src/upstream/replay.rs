//! A request body that can be sent again: [`ReplayBody`] forwards the client's body frames to the
//! first attempt while keeping a copy of them, up to [`REPLAY_LIMIT`] bytes, so that a request an
//! h2c backend refused without processing it (RFC 9113 §6.8, §8.7) can be replayed on a fresh
//! connection with the identical body and trailers (gRPC's), as linkerd2-proxy's `ReplayBody` does.
//!
//! The copy holds `Bytes` handles of the frames read (no byte is copied). A replay first yields the
//! copied frames, then, if the client's body was still being read, continues from the client's
//! stream where the previous attempt left it (waiting until that attempt has let go of it). Once
//! more than [`REPLAY_LIMIT`] bytes were read, the copy is dropped and no replay can be made.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

use crate::error::BoxError;

/// The most request body bytes kept for a replay: 64 KiB, above any ordinary gRPC unary call and
/// form post, small enough that every request in flight may hold it. linkerd2-proxy's fixed replay
/// limit too; fixed here, not configuration (the README says why; `refused_not_replayed_total`
/// shows whether it bites).
pub(super) const REPLAY_LIMIT: usize = 64 * 1024;

/// One attempt's view of a replayable request body. [`ReplayBody::new`] makes the first attempt and
/// the handle that makes later ones ([`ReplayBody::again`]).
#[derive(Debug)]
pub(super) struct ReplayBody<B> {
    shared: Arc<Shared<B>>,
    /// The client's body, while this attempt reads from it.
    body: Option<B>,
    /// How many data frames this attempt has yielded (from the copy, then from the body).
    next: usize,
    /// Whether this attempt has yielded the trailers.
    trailers_sent: bool,
}

#[derive(Debug)]
struct Shared<B> {
    state: Mutex<State<B>>,
    limit: usize,
}

#[derive(Debug)]
struct State<B> {
    /// The client's body, when no attempt holds it.
    body: Option<B>,
    /// An attempt waiting for the body to be let go.
    waiting: Option<Waker>,
    /// The data frames read so far, while `len <= limit`.
    chunks: Vec<Bytes>,
    /// Data frames read from the client's body so far.
    frames: usize,
    /// Bytes read from the client's body so far.
    len: usize,
    trailers: Option<HeaderMap>,
    /// The client's body is done (end of stream or trailers).
    ended: bool,
    /// More than the limit was read, or the copy was released: no replay.
    dropped: bool,
}

// === impl ReplayBody ===

impl<B> ReplayBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    /// The first attempt on `body`, and a handle (never polled itself) for replays, keeping up to
    /// `limit` bytes.
    pub(super) fn new(body: B, limit: usize) -> (ReplayBody<B>, ReplayBody<B>) {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                body: Some(body),
                waiting: None,
                chunks: Vec::new(),
                frames: 0,
                len: 0,
                trailers: None,
                ended: false,
                dropped: false,
            }),
            limit,
        });
        let handle = ReplayBody::attempt(Arc::clone(&shared));
        (ReplayBody::attempt(shared), handle)
    }

    fn attempt(shared: Arc<Shared<B>>) -> ReplayBody<B> {
        ReplayBody {
            shared,
            body: None,
            next: 0,
            trailers_sent: false,
        }
    }

    /// A new attempt that yields the whole body from its start, or `None` when the body was over
    /// the limit (or [`ReplayBody::release`]d).
    pub(super) fn again(&self) -> Option<ReplayBody<B>> {
        let dropped = self.shared.lock().dropped;
        (!dropped).then(|| ReplayBody::attempt(Arc::clone(&self.shared)))
    }

    /// No replay will be made: the copy is freed (the attempt in flight keeps streaming).
    pub(super) fn release(&self) {
        let mut state = self.shared.lock();
        state.dropped = true;
        state.chunks = Vec::new();
        state.trailers = None;
    }

    /// The bytes of the copied frames this attempt has not yielded yet.
    fn remaining(&self, state: &State<B>) -> u64 {
        let rest = state.chunks.get(self.next..).unwrap_or_default();
        rest.iter().map(|c| c.len() as u64).sum()
    }
}

impl<B> Shared<B> {
    fn lock(&self) -> MutexGuard<'_, State<B>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.body.is_none() {
            let mut state = this.shared.lock();
            if this.next < state.frames {
                // Replaying what an earlier attempt read.
                let Some(chunk) = state.chunks.get(this.next).filter(|_| !state.dropped) else {
                    return Poll::Ready(Some(Err(
                        "the request body is over the replay limit".into()
                    )));
                };
                let chunk = chunk.clone();
                this.next += 1;
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
            if state.ended {
                if !this.trailers_sent {
                    this.trailers_sent = true;
                    if let Some(trailers) = state.trailers.clone() {
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                }
                return Poll::Ready(None);
            }
            match state.body.take() {
                Some(body) => this.body = Some(body),
                None => {
                    // An earlier attempt still holds the client's body: it lets go when dropped.
                    state.waiting = Some(cx.waker().clone());
                    return Poll::Pending;
                }
            }
        }
        let Some(body) = this.body.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = match Pin::new(&mut *body).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => {
                this.shared.lock().ended = true;
                return Poll::Ready(None);
            }
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(Some(Ok(frame))) => frame,
        };
        let end = body.is_end_stream();
        let limit = this.shared.limit;
        let mut state = this.shared.lock();
        if let Some(data) = frame.data_ref() {
            state.frames += 1;
            this.next += 1;
            state.len = state.len.saturating_add(data.len());
            if state.len > limit {
                state.dropped = true;
                state.chunks = Vec::new();
            } else if !state.dropped {
                state.chunks.push(data.clone());
            }
        } else if let Some(trailers) = frame.trailers_ref() {
            this.trailers_sent = true;
            state.ended = true;
            if !state.dropped {
                state.trailers = Some(trailers.clone());
            }
        }
        if end {
            state.ended = true;
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        if let Some(body) = &self.body {
            return body.is_end_stream();
        }
        let state = self.shared.lock();
        if self.next < state.frames {
            return false;
        }
        if state.ended {
            return self.trailers_sent || state.trailers.is_none();
        }
        state.body.as_ref().is_some_and(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        if let Some(body) = &self.body {
            return body.size_hint();
        }
        let state = self.shared.lock();
        let copied = self.remaining(&state);
        if state.ended {
            return SizeHint::with_exact(copied);
        }
        match state.body.as_ref().filter(|_| self.next == state.frames) {
            Some(body) => {
                let hint = body.size_hint();
                let mut sum = SizeHint::new();
                sum.set_lower(hint.lower().saturating_add(copied));
                if let Some(upper) = hint.upper() {
                    sum.set_upper(upper.saturating_add(copied));
                }
                sum
            }
            None => {
                let mut sum = SizeHint::new();
                sum.set_lower(copied);
                sum
            }
        }
    }
}

impl<B> Drop for ReplayBody<B> {
    fn drop(&mut self) {
        if let Some(body) = self.body.take() {
            let mut state = self.shared.lock();
            state.body = Some(body);
            if let Some(waker) = state.waiting.take() {
                waker.wake();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, StreamBody};

    use super::*;

    type Frames = StreamBody<
        futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, std::io::Error>>>,
    >;

    fn body(chunks: &[&'static str], trailers: bool) -> Frames {
        let mut frames: Vec<_> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))))
            .collect();
        if trailers {
            let mut map = HeaderMap::new();
            map.insert("grpc-status", "0".parse().unwrap());
            frames.push(Ok(Frame::trailers(map)));
        }
        StreamBody::new(futures_util::stream::iter(frames))
    }

    async fn collect<B>(body: ReplayBody<B>) -> (Bytes, Option<HeaderMap>)
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        let collected = body.collect().await.unwrap();
        let trailers = collected.trailers().cloned();
        (collected.to_bytes(), trailers)
    }

    #[tokio::test]
    async fn a_replay_yields_the_same_frames_and_trailers() {
        let (first, handle) = ReplayBody::new(body(&["ab", "cd"], true), 16);
        let (bytes, trailers) = collect(first).await;
        assert_eq!(bytes, "abcd");
        let again = handle.again().expect("under the limit");
        assert_eq!(again.size_hint().exact(), Some(4));
        let (replayed, replayed_trailers) = collect(again).await;
        assert_eq!(replayed, "abcd");
        assert_eq!(replayed_trailers, trailers);
        assert_eq!(replayed_trailers.unwrap()["grpc-status"], "0");
    }

    #[tokio::test]
    async fn a_replay_continues_a_body_the_first_attempt_only_began() {
        let (mut first, handle) = ReplayBody::new(body(&["ab", "cd", "ef"], true), 16);
        let frame = first.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "ab");
        drop(first);
        let (replayed, trailers) = collect(handle.again().unwrap()).await;
        assert_eq!(replayed, "abcdef");
        assert!(trailers.is_some());
    }

    #[tokio::test]
    async fn over_the_limit_there_is_no_replay() {
        let (first, handle) = ReplayBody::new(body(&["abcd", "efgh"], false), 6);
        assert_eq!(collect(first).await.0, "abcdefgh");
        assert!(handle.again().is_none());
    }

    #[tokio::test]
    async fn an_empty_body_stays_an_empty_stream() {
        let (first, handle) = ReplayBody::new(http_body_util::Full::<Bytes>::default(), 16);
        assert!(first.is_end_stream());
        drop(first);
        assert!(handle.again().unwrap().is_end_stream());
        handle.release();
        assert!(handle.again().is_none());
    }
}
