//! What the proxy reports about health to whoever listens ([`crate::Proxy::events`]).

use std::fmt;
use std::net::SocketAddr;

use crate::weight::Slot;

/// A health change, broadcast to every receiver of [`crate::Proxy::events`]. A receiver that lags
/// by more than the channel's capacity (64) loses the oldest events.
#[derive(Clone, Debug, PartialEq)]
pub enum ProxyEvent {
    /// The breaker of the route's preview backend tripped: its effective weight is 0 until the
    /// route's weights are next set.
    BreakerTripped {
        /// The route's name.
        route: String,
        /// The tripped backend.
        backend: Slot,
        /// Errors over requests in the window, 0 to 1.
        error_rate: f64,
        /// Requests in the window.
        requests: u64,
    },
    /// An endpoint was taken out: ejected by live traffic, or marked down by its checks.
    EndpointDown {
        /// The route's name.
        route: String,
        /// The endpoint's backend.
        backend: Slot,
        /// The endpoint.
        endpoint: SocketAddr,
        /// Why.
        reason: EjectReason,
    },
    /// An endpoint's checks passed `rise` times in a row after they had failed (`fall` in a row).
    EndpointUp {
        /// The route's name.
        route: String,
        /// The endpoint's backend.
        backend: Slot,
        /// The endpoint.
        endpoint: SocketAddr,
    },
    /// An endpoint taken out by an outlier ejection is back. Without active checks, its backoff
    /// is over: said by the first look after its end (an endpoint pick, `/status`, the
    /// rollback's capacity read), so without traffic it can come later than the end itself.
    /// With checks, a probe passed after the backoff, the checks having never failed (when they
    /// had, [`ProxyEvent::EndpointUp`] says it instead). Once per ejection.
    EndpointReadmitted {
        /// The route's name.
        route: String,
        /// The endpoint's backend.
        backend: Slot,
        /// The endpoint.
        endpoint: SocketAddr,
    },
}

/// Why an endpoint was taken out; the `reason` label of `crossfade_ejections_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EjectReason {
    /// Consecutive upstream failures of live requests (connect, reset, response timeout).
    UpstreamFailure,
    /// Consecutive 5xx responses to live requests.
    Http5xx,
    /// `fall` failed active checks in a row.
    HealthCheck,
}

impl EjectReason {
    /// Every reason, in label order.
    pub const ALL: [EjectReason; 3] = [
        EjectReason::UpstreamFailure,
        EjectReason::Http5xx,
        EjectReason::HealthCheck,
    ];

    /// The label value: `upstream_failure`, `http_5xx` or `health_check`.
    pub fn as_str(self) -> &'static str {
        match self {
            EjectReason::UpstreamFailure => "upstream_failure",
            EjectReason::Http5xx => "http_5xx",
            EjectReason::HealthCheck => "health_check",
        }
    }

    /// Index into per-reason counter arrays, in [`EjectReason::ALL`] order.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for EjectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
