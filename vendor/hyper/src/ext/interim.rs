//! Crossfade patch 24: a server sends 1xx informational responses (RFC 9110 §15.2) before its
//! final response, as a proxy must forward those its backend sends ("A proxy MUST forward 1xx
//! responses unless the proxy itself requested the generation of the 1xx response").

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Context;

use atomic_waker::AtomicWaker;
use http::{Response, StatusCode};

/// How many 1xx responses may wait to be written at once; more are refused.
const QUEUED_AT_MOST: usize = 16;

/// Sends 1xx informational responses (RFC 9110 §15.2: `102 Processing`, `103 Early Hints`
/// (RFC 8297), ...) to the client of a server connection, written before the final response of
/// the request being served.
///
/// Over HTTP/1.1 one sender serves the whole connection
/// ([`server::conn::http1::Connection::informational`](crate::server::conn::http1::Connection::informational)):
/// what is sent goes to the request in flight, and is dropped if the final response has started,
/// or if the request is HTTP/1.0 (RFC 9110 §15.2: a server must not send a 1xx to an HTTP/1.0
/// client). Over HTTP/2 each request has its own, in its extensions, when the connection's
/// builder enables them
/// ([`server::conn::http2::Builder::informational_responses`](crate::server::conn::http2::Builder::informational_responses)).
///
/// `100 Continue` is not sent this way: hyper sends it itself when the service reads the body of
/// a request that expects it. Crossfade patch 24 (`PATCHES.md`).
#[derive(Clone)]
pub struct InformationalSender {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for InformationalSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InformationalSender").finish()
    }
}

// Small: an HTTP/1.1 connection holds one for its life (a `Vec`, not a `VecDeque`: it holds a
// few at most).
struct Shared {
    queue: Mutex<Vec<Response<()>>>,
    // The queue's length, read without the lock where it is most often 0; `CLOSED` once the
    // receiver is gone.
    state: AtomicUsize,
    waker: AtomicWaker,
}

/// `Shared::state`'s bit for a receiver that is gone.
const CLOSED: usize = 1 << (usize::BITS - 1);

/// The connection's (or stream's) end of an [`InformationalSender`].
pub(crate) struct InformationalReceiver {
    shared: Arc<Shared>,
}

/// A new sender and the receiver a connection or stream polls.
pub(crate) fn informational() -> (InformationalSender, InformationalReceiver) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(Vec::new()),
        state: AtomicUsize::new(0),
        waker: AtomicWaker::new(),
    });
    (
        InformationalSender {
            shared: Arc::clone(&shared),
        },
        InformationalReceiver { shared },
    )
}

impl InformationalSender {
    /// Queues `response` to be written before the final response, and wakes the connection.
    ///
    /// # Errors
    ///
    /// Gives `response` back when its status is not 1xx, is `100 Continue` or `101 Switching
    /// Protocols` (an upgrade is a final answer for that purpose), when the connection or stream
    /// has ended, or when 16 wait unwritten already.
    pub fn send(&self, response: Response<()>) -> Result<(), Response<()>> {
        let status = response.status();
        if !status.is_informational()
            || status == StatusCode::CONTINUE
            || status == StatusCode::SWITCHING_PROTOCOLS
            || self.shared.state.load(Ordering::Acquire) & CLOSED != 0
        {
            return Err(response);
        }
        {
            let mut queue = self.shared.queue.lock().unwrap_or_else(PoisonError::into_inner);
            if queue.len() >= QUEUED_AT_MOST {
                return Err(response);
            }
            queue.push(response);
            self.shared.state.fetch_add(1, Ordering::Release);
        }
        self.shared.waker.wake();
        Ok(())
    }
}

impl InformationalReceiver {
    /// Whether responses are queued; when none are, the task is woken at the next send. One
    /// atomic load when something is queued, a waker registration when not.
    pub(crate) fn poll_queued(&self, cx: &mut Context<'_>) -> bool {
        if self.queued() {
            return true;
        }
        self.shared.waker.register(cx.waker());
        self.queued()
    }

    /// Whether responses are queued (one atomic load; no waker registered).
    pub(crate) fn queued(&self) -> bool {
        self.shared.state.load(Ordering::Acquire) & !CLOSED != 0
    }

    /// Takes what is queued, in the order sent.
    pub(crate) fn take(&self) -> Vec<Response<()>> {
        let mut queue = self.shared.queue.lock().unwrap_or_else(PoisonError::into_inner);
        self.shared.state.fetch_sub(queue.len(), Ordering::Release);
        std::mem::take(&mut *queue)
    }

    /// Drops whatever is queued (sent for a request that has had its final response).
    pub(crate) fn clear(&self) {
        if self.queued() {
            drop(self.take());
        }
    }
}

impl Drop for InformationalReceiver {
    fn drop(&mut self) {
        self.shared.state.fetch_or(CLOSED, Ordering::Release);
    }
}
