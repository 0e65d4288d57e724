//! `Expect: 100-continue` passed through (RFC 9110 §10.1.1, case C20): the client's body is held
//! back until the backend asks for it, so the backend, not the proxy, decides whether it is sent.
//!
//! What the libraries do on their own: hyper's server answers `100 Continue` the first time the
//! request body is polled (over HTTP/2 too, with hyper patch 13 of `vendor/hyper/PATCHES.md`,
//! unless the client already sent content), and hyper's client writes the head and starts polling
//! the body at once, without waiting for a 100 (it hands a backend's 1xx to
//! `hyper::ext::on_informational`, over h2c too with patch 14). Passed through as is, the proxy would therefore send the client a 100
//! before the backend had a say, and stream the whole body even to a backend that answers 401
//! without reading it (traefik#2899, haproxy#3316).
//!
//! So a request with `Expect: 100-continue` and a body is sent with its `Expect` header and an
//! [`ExpectBody`] that yields nothing until a gate opens:
//!
//! - the backend's `100 Continue` (seen through `hyper::ext::on_informational`) opens it: the body
//!   is polled, hyper's server sends the client exactly one 100, and the upload streams through;
//! - the backend's final response arriving first closes it for good: the client gets that answer
//!   and no 100 (so it never sends the body), and when that response has been delivered the
//!   upstream request is abandoned (its connection is closed, never reused half-written);
//! - a backend that never answers (one that ignores `Expect`) gets the body after
//!   `limits.expect_continue_timeout` (1 s), as curl does when talking to it directly.
//!
//! An HTTP/1.0 client does not wait for a 100 (RFC 9110 §10.1.1): its `Expect` is removed and its
//! body passed on at once, never held back for a backend that sends no 100.
//!
//! The same holds whatever the client and the backend speak (HTTP/1.1, HTTP/2, h2c): an HTTP/2
//! client gets its 100 as an interim HEADERS frame (RFC 9113 §8.1), and an early final answer
//! ends its stream, the rest of the request refused with `RST_STREAM(NO_ERROR)` (h2 does that
//! when the unread body is dropped after a complete response; §8.1 again).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use http::header::EXPECT;
use http::request::Parts;
use http::{Request, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Sleep;

use crate::error::BoxError;
use crate::upload::{BodyReadTimeout, Upload};

const WAITING: u8 = 0;
const OPEN: u8 = 1;
const RESPONDED: u8 = 2;
const ABANDONED: u8 = 3;

/// The client's request body on its way upstream, held back while an expectation is pending.
///
/// Dropped before its first poll (the attempt failed before it wanted the body: a connect
/// failure), it hands the client's body back to its [`Upload`] ([`Unsent`]) for another attempt.
#[derive(Debug)]
pub struct ExpectBody {
    /// `None` only once handed back, in `drop`.
    inner: Option<Incoming>,
    gate: Option<Arc<Gate>>,
    timer: Option<Pin<Box<Sleep>>>,
    // A copy of the body for a shadow mirror (see `shadow`), when the request is mirrored.
    tee: Option<Box<crate::shadow::RequestTee>>,
    // Who owes the next move, shared with the attempt (see `upload`).
    upload: Arc<Upload>,
    // `limits.body_read_timeout` from when the client last owed bytes; armed while it does.
    idle: Option<Pin<Box<Sleep>>>,
    idle_armed: bool,
    // The client's body was polled: no longer whole, never handed back.
    polled: bool,
}

/// A client body that no attempt polled, kept by its [`Upload`] so another attempt can send it:
/// nothing of it was read from the client or written upstream.
#[derive(Debug)]
pub(crate) struct Unsent {
    inner: Incoming,
    gate: Option<Arc<Gate>>,
    tee: Option<Box<crate::shadow::RequestTee>>,
}

/// The shared state of one expectation.
#[derive(Debug)]
struct Gate {
    state: AtomicU8,
    waker: AtomicWaker,
    /// `limits.expect_continue_timeout`: how long the body waits for the backend's 100.
    wait: Duration,
}

/// The forwarding side's handle on an expectation: says when the final response arrived, and
/// abandons the upstream request when dropped if the body was never asked for.
#[derive(Debug)]
pub struct Expectation(Arc<Gate>);

/// Wraps the client's `body`, bounded by `read_timeout` (`limits.body_read_timeout`, see
/// `upload`); when the request expects `100-continue` (HTTP/1.1 or HTTP/2: an HTTP/1.0 request's
/// expectation is removed, RFC 9110 §10.1.1), gates it for at most `wait`
/// (`limits.expect_continue_timeout`) and registers the 100 callback on the upstream request's
/// extensions.
pub fn gate(
    mut parts: Parts,
    body: Incoming,
    read_timeout: Duration,
    wait: Duration,
) -> (Parts, ExpectBody, Option<Expectation>) {
    let upload = Arc::new(Upload::new(read_timeout));
    let body = Some(body);
    let mut expects = parts.headers.get(EXPECT).is_some_and(|v| {
        v.as_bytes()
            .trim_ascii()
            .eq_ignore_ascii_case(b"100-continue")
    });
    // An HTTP/1.0 client sends its body without waiting for a 100, and a server must ignore its
    // expectation (RFC 9110 §10.1.1; hyper's server sends it none): held back for a backend that
    // sends no 100, its upload would stall for `wait` (case C20). Not forwarded either: sent on
    // as HTTP/1.1, it would ask the backend to wait for a go-ahead no one gives.
    if expects && parts.version < Version::HTTP_11 {
        parts.headers.remove(EXPECT);
        expects = false;
    }
    if !expects {
        let body = ExpectBody {
            inner: body,
            gate: None,
            timer: None,
            tee: None,
            upload,
            idle: None,
            idle_armed: false,
            polled: false,
        };
        return (parts, body, None);
    }
    let gate = Arc::new(Gate {
        state: AtomicU8::new(WAITING),
        waker: AtomicWaker::new(),
        wait,
    });
    let mut request = Request::from_parts(parts, ());
    let opener = Arc::clone(&gate);
    hyper::ext::on_informational(&mut request, move |response| {
        if response.status() == StatusCode::CONTINUE {
            opener.advance(WAITING, OPEN);
        }
    });
    let (parts, ()) = request.into_parts();
    let body = ExpectBody {
        inner: body,
        gate: Some(Arc::clone(&gate)),
        timer: None,
        tee: None,
        upload,
        idle: None,
        idle_armed: false,
        polled: false,
    };
    (parts, body, Some(Expectation(gate)))
}

// === impl Gate ===

impl Gate {
    /// Moves from `from` to `to` and wakes the body; false when the state was not `from`.
    fn advance(&self, from: u8, to: u8) -> bool {
        let moved = self
            .state
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if moved {
            self.waker.wake();
        }
        moved
    }
}

// === impl Expectation ===

impl Expectation {
    /// The final response arrived: if the body was not asked for, it never will be.
    pub fn responded(&self) {
        self.0.advance(WAITING, RESPONDED);
    }
}

impl Drop for Expectation {
    fn drop(&mut self) {
        // The response was delivered (or the exchange failed) without the body being asked for:
        // fail the upstream body so hyper closes that connection instead of waiting on it.
        if !self.0.advance(RESPONDED, ABANDONED) {
            self.0.advance(WAITING, ABANDONED);
        }
    }
}

// === impl ExpectBody ===

impl ExpectBody {
    /// Keeps a copy of the body's frames for a shadow mirror as they go upstream (see
    /// `shadow::RequestTee`).
    pub(crate) fn tee(&mut self, tee: crate::shadow::RequestTee) {
        self.tee = Some(Box::new(tee));
    }

    /// The state this body shares with the attempt that sends it.
    pub(crate) fn upload(&self) -> &Arc<Upload> {
        &self.upload
    }
}

// === impl Unsent ===

impl Unsent {
    /// The body again, for an attempt with `parts` (whose 100 callback it registers when the
    /// request expects `100-continue`), sharing `upload`.
    pub(crate) fn resume(self, parts: Parts, upload: Arc<Upload>) -> (Parts, ExpectBody) {
        let mut request = Request::from_parts(parts, ());
        if let Some(gate) = &self.gate {
            let opener = Arc::clone(gate);
            hyper::ext::on_informational(&mut request, move |response| {
                if response.status() == StatusCode::CONTINUE {
                    opener.advance(WAITING, OPEN);
                }
            });
        }
        let body = ExpectBody {
            inner: Some(self.inner),
            gate: self.gate,
            timer: None,
            tee: self.tee,
            upload,
            idle: None,
            idle_armed: false,
            polled: false,
        };
        (request.into_parts().0, body)
    }
}

impl Drop for ExpectBody {
    fn drop(&mut self) {
        if self.polled {
            return;
        }
        if let Some(inner) = self.inner.take() {
            let (gate, tee) = (self.gate.take(), self.tee.take());
            self.upload.keep_unsent(Unsent { inner, gate, tee });
        }
    }
}

impl ExpectBody {
    /// Whether the body may be polled now; registers for a wake-up when not.
    fn poll_gate(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        let this = self;
        let Some(gate) = &this.gate else {
            return Poll::Ready(Ok(()));
        };
        gate.waker.register(cx.waker());
        match gate.state.load(Ordering::Acquire) {
            OPEN => return Poll::Ready(Ok(())),
            ABANDONED => {
                return Poll::Ready(Err("backend answered before asking for the body".into()))
            }
            RESPONDED => return Poll::Pending,
            _ => {}
        }
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(gate.wait)));
        if timer.as_mut().poll(cx).is_ready() && gate.advance(WAITING, OPEN) {
            return Poll::Ready(Ok(()));
        }
        Poll::Pending
    }
}

/// Whether the client has owed bytes for `timeout`: arms `idle` the first time it is asked after a
/// frame (reusing its allocation), then polls it.
fn read_stalled(
    idle: &mut Option<Pin<Box<Sleep>>>,
    armed: &mut bool,
    timeout: Duration,
    cx: &mut Context<'_>,
) -> bool {
    if !*armed {
        let deadline = crate::duration::later(tokio::time::Instant::now(), timeout);
        match idle {
            Some(sleep) => sleep.as_mut().reset(deadline),
            None => *idle = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
        *armed = true;
    }
    idle.as_mut()
        .is_some_and(|sleep| sleep.as_mut().poll(cx).is_ready())
}

impl Body for ExpectBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Err(error) = std::task::ready!(this.poll_gate(cx)) {
            return Poll::Ready(Some(Err(error)));
        }
        let Some(inner) = &mut this.inner else {
            return Poll::Ready(None);
        };
        if !this.polled {
            this.polled = true;
            this.upload.polled();
        }
        let polled = Pin::new(&mut *inner).poll_frame(cx);
        match &polled {
            Poll::Pending => {
                this.upload.waiting_for_client();
                let timeout = this.upload.read_timeout;
                if read_stalled(&mut this.idle, &mut this.idle_armed, timeout, cx) {
                    this.upload.stall();
                    return Poll::Ready(Some(Err(Box::new(BodyReadTimeout))));
                }
            }
            Poll::Ready(None) => this.upload.ended(),
            Poll::Ready(Some(Ok(_))) => {
                this.idle_armed = false;
                match inner.is_end_stream() {
                    true => this.upload.ended(),
                    false => this.upload.handed(),
                }
            }
            Poll::Ready(Some(Err(_))) => {}
        }
        if let Some(tee) = &mut this.tee {
            // Handed over at the end; dropped for a body over the bound or one that failed, which
            // the mirror counts as skipped.
            let (keep, ended) = match &polled {
                Poll::Ready(Some(Ok(frame))) => (tee.frame(frame), inner.is_end_stream()),
                Poll::Ready(None) => (true, true),
                Poll::Ready(Some(Err(_))) => (false, false),
                Poll::Pending => (true, false),
            };
            if !keep {
                this.tee = None;
            } else if ended {
                if let Some(tee) = this.tee.take() {
                    tee.end();
                }
            }
        }
        polled.map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Some(inner) => inner.size_hint(),
            None => SizeHint::with_exact(0),
        }
    }
}
