//! What a response tells passive health (outlier ejection and the breaker), recorded once per
//! response at the moment its outcome is known.
//!
//! For most responses that moment is the head: a 5xx is a server error, anything else is not. A
//! gRPC call fails inside an HTTP 200 (gRPC over HTTP/2,
//! <https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md>): its `grpc-status` is in the
//! head of a trailers-only response, else in the trailers after the body. A server-fault status
//! (see `grpc::SERVER_FAULT_CODES`) counts exactly as a 5xx: toward `outlier.consecutive_5xx` and
//! in the breaker's window. When the status comes in the trailers, the head only ends the
//! endpoint's run of upstream failures, and the response is recorded when the trailers pass (a
//! [`Pending`] report carried by the response body); a call that never ends (the client cancels,
//! the body breaks) is not recorded, as a request that fails before its head is recorded as a
//! failure instead.

use std::sync::Arc;

use super::BackendHealth;
use crate::weight::Slot;

/// The health report of one response from one endpoint, before its outcome is known.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reporter<'a> {
    health: &'a Arc<BackendHealth>,
    /// The endpoint's index in its backend.
    index: usize,
    /// The route's active slot when the request was sent (the breaker judges only the preview).
    active: Slot,
}

/// A report whose outcome comes after the head (a gRPC status in the trailers); settled once.
/// Carried by every such response body, so kept to 16 bytes (`index` as `u32`).
#[derive(Debug)]
pub(crate) struct Pending {
    health: Arc<BackendHealth>,
    index: u32,
    active: Slot,
}

// === impl Reporter ===

impl<'a> Reporter<'a> {
    /// The report of a response from endpoint `index` of the backend whose health is `health`.
    #[inline]
    pub(crate) fn new(health: &'a Arc<BackendHealth>, index: usize, active: Slot) -> Self {
        Reporter {
            health,
            index,
            active,
        }
    }

    /// Records the response now: `server_error` for a 5xx or a gRPC server fault in the head.
    #[inline]
    pub(crate) fn now(self, server_error: bool) {
        self.health
            .record_response(self.index, server_error, self.active);
    }

    /// Records that the endpoint answered, and defers the response's outcome to [`Pending::settle`].
    pub(crate) fn later(self) -> Pending {
        self.health.record_reached(self.index);
        Pending {
            health: Arc::clone(self.health),
            // An index past u32 (never: endpoints are listed in a config) records nothing.
            index: u32::try_from(self.index).unwrap_or(u32::MAX),
            active: self.active,
        }
    }
}

// === impl Pending ===

impl Pending {
    /// Records the response: `server_error` for a gRPC server fault (or a call that ended without
    /// a status, which the client sees fail).
    pub(crate) fn settle(self, server_error: bool) {
        let index = usize::try_from(self.index).unwrap_or(usize::MAX);
        self.health
            .record_response(index, server_error, self.active);
    }
}

impl From<Box<Pending>> for Pending {
    fn from(boxed: Box<Pending>) -> Pending {
        *boxed
    }
}
