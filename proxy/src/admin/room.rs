//! Room for a new admin connection at `limits.max_admin_connections`: the connection that has
//! waited longest for a request (just accepted and silent, or idle between keep-alive requests)
//! is closed to make room, as nginx closes its idle keep-alive connections when it runs out of
//! `worker_connections` (`ngx_drain_connections`).
//!
//! Without it, a client holding the limit's worth of idle connections (re-opened every
//! `limits.header_read_timeout`) made every admin request, `GET /healthz` and `GET /readyz`
//! included, answer 503, so a kubelet probing the admin port restarted a healthy proxy (trial 13
//! N6). A probe opens a fresh connection and sends its request at once: it takes the place of
//! the longest-silent connection and is answered truthfully. Only when every admin connection has
//! a request in flight is a new one shed (`503` with `Retry-After`, [`crate::limits`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

/// The admin connections waiting for a request, longest-waiting first.
#[derive(Debug, Default)]
pub(super) struct Waiting {
    inner: Mutex<Queue>,
}

#[derive(Debug, Default)]
struct Queue {
    /// The next place in the queue (rising: a smaller one has waited longer).
    next: u64,
    /// Each waiting connection's close signal, by its place.
    by_age: BTreeMap<u64, Arc<Notify>>,
}

/// One admin connection's standing in [`Waiting`]: waiting while it has no request in flight.
/// Dropping it takes the connection out.
#[derive(Debug)]
pub(super) struct Standing {
    waiting: Arc<Waiting>,
    /// Fires when the connection is to be closed to make room.
    pub(super) close: Arc<Notify>,
    /// Requests in flight on the connection (HTTP/2 may carry several) and its place while none.
    state: Mutex<(usize, Option<u64>)>,
}

// === impl Waiting ===

impl Waiting {
    /// A new connection, waiting for its first request from now.
    pub(super) fn join(self: &Arc<Self>) -> Arc<Standing> {
        let close = Arc::new(Notify::new());
        let place = self.enqueue(&close);
        Arc::new(Standing {
            waiting: Arc::clone(self),
            close,
            state: Mutex::new((0, Some(place))),
        })
    }

    /// Tells the connection that has waited longest to close; `false` when none waits (every
    /// connection has a request in flight).
    pub(super) fn close_longest_waiting(&self) -> bool {
        let oldest = self.lock().by_age.pop_first();
        match oldest {
            Some((_, close)) => {
                // A stored permit: the connection's task sees it even if it is not polling now.
                close.notify_one();
                true
            }
            None => false,
        }
    }

    fn enqueue(&self, close: &Arc<Notify>) -> u64 {
        let mut queue = self.lock();
        let place = queue.next;
        queue.next += 1;
        queue.by_age.insert(place, Arc::clone(close));
        place
    }

    fn remove(&self, place: u64) {
        self.lock().by_age.remove(&place);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

// === impl Standing ===

impl Standing {
    /// A request arrived: the connection waits no more until it has none in flight.
    pub(super) fn busy(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.0 += 1;
        if let Some(place) = state.1.take() {
            self.waiting.remove(place);
        }
    }

    /// A request was answered: with none left in flight, the connection waits again, at the end
    /// of the queue.
    pub(super) fn done(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.0 = state.0.saturating_sub(1);
        if state.0 == 0 && state.1.is_none() {
            state.1 = Some(self.waiting.enqueue(&self.close));
        }
    }
}

impl Drop for Standing {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Some(place) = state.1.take() {
            self.waiting.remove(place);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_waiting_connection_is_closed_and_busy_ones_never() {
        let waiting = Arc::new(Waiting::default());
        let (first, second, third) = (waiting.join(), waiting.join(), waiting.join());
        // The first has a request in flight; the second waited longest of the others.
        first.busy();
        assert!(waiting.close_longest_waiting());
        assert!(tokio_test_notified(&second.close));
        assert!(!tokio_test_notified(&third.close));
        // The first, answered, waits again behind the third.
        first.done();
        assert!(waiting.close_longest_waiting());
        assert!(tokio_test_notified(&third.close));
        assert!(waiting.close_longest_waiting());
        assert!(tokio_test_notified(&first.close));
        assert!(!waiting.close_longest_waiting(), "none waits any more");
        // A dropped connection leaves the queue.
        let fourth = waiting.join();
        drop(fourth);
        assert!(!waiting.close_longest_waiting());
    }

    /// Whether `notify` holds a permit (a `notify_one` not yet waited for).
    fn tokio_test_notified(notify: &Notify) -> bool {
        let notified = notify.notified();
        tokio::pin!(notified);
        // A stored permit completes the future at its first poll.
        let waker = futures_util::task::noop_waker();
        let mut context = std::task::Context::from_waker(&waker);
        std::future::Future::poll(notified.as_mut(), &mut context).is_ready()
    }
}
