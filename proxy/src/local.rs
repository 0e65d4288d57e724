//! The proxy's own answers (local replies): every response the proxy makes itself instead of
//! forwarding a backend's, counted by route, the backend it was meant for, status class and a
//! closed reason, so that `crossfade_requests_total` sees a full outage and
//! `crossfade_local_responses_total` says why (docs/metrics.md).
//!
//! Counted on error paths only, under one mutex: the forwarding path never touches it.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use http::StatusCode;

use crate::error::Error;
use crate::weight::Slot;

/// Why the proxy answered a request itself: the closed value set of the `reason` label of
/// `crossfade_local_responses_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LocalReason {
    /// No route matches the request's host and path (404).
    NoRoute,
    /// The request's host would get another certificate than its connection's SNI picked (421,
    /// `tls.sni`).
    Misdirected,
    /// The matched route's weights are both 0 (503).
    RouteDisabled,
    /// The chosen backend has no endpoint that can take the request (503).
    NoEndpoint,
    /// A listener limit shed the request or its connection (`limits.max_requests`,
    /// `limits.max_connections`; 503 with `Retry-After`).
    Overloaded,
    /// The request cannot be forwarded as it is: a malformed target, several Host lines, a bad
    /// override header value, `CONNECT`, an aborted or malformed body (400).
    BadRequest,
    /// The client sent no request body byte for `limits.body_read_timeout` (408).
    RequestTimeout,
    /// The backend failed before its response head: connect failure, reset, timeout, protocol
    /// error (502, or 504 for timeouts); the kind is in `crossfade_upstream_errors_total`.
    Upstream,
    /// The request's `Via` already named this proxy: a forwarding loop (508, RFC 5842 §7.2).
    LoopDetected,
    /// hyper refused the request head before the proxy saw it: unparseable (400), a head over
    /// `limits.max_header_bytes` or with more than 100 fields (431), a request-target too long
    /// (414), an HTTP major version other than 1 on an HTTP/1 connection (505); or an HTTP/2
    /// request over the same limits, judged by the proxy on its HTTP/1.1 form (431); or a
    /// transfer coding other than `chunked` (501); or a plain HTTP/1.x request on a TLS
    /// listener (400, telling the client to use `https://`).
    BadHead,
}

// === impl LocalReason ===

impl LocalReason {
    /// Every reason, in label order.
    pub const ALL: [LocalReason; 10] = [
        LocalReason::NoRoute,
        LocalReason::Misdirected,
        LocalReason::RouteDisabled,
        LocalReason::NoEndpoint,
        LocalReason::Overloaded,
        LocalReason::BadRequest,
        LocalReason::RequestTimeout,
        LocalReason::Upstream,
        LocalReason::BadHead,
        LocalReason::LoopDetected,
    ];

    /// The label value: `no_route`, `misdirected`, `route_disabled`, `no_endpoint`, `overloaded`,
    /// `bad_request`, `request_timeout`, `upstream`, `bad_head`, `loop_detected`.
    pub fn as_str(self) -> &'static str {
        match self {
            LocalReason::NoRoute => "no_route",
            LocalReason::Misdirected => "misdirected",
            LocalReason::RouteDisabled => "route_disabled",
            LocalReason::NoEndpoint => "no_endpoint",
            LocalReason::Overloaded => "overloaded",
            LocalReason::BadRequest => "bad_request",
            LocalReason::RequestTimeout => "request_timeout",
            LocalReason::Upstream => "upstream",
            LocalReason::BadHead => "bad_head",
            LocalReason::LoopDetected => "loop_detected",
        }
    }

    /// Why `error` was answered, with the route (`""` when none matched) and the backend it was
    /// meant for (when one was chosen); `None` for errors of the control path, which never reach
    /// a client of the data listener.
    pub(crate) fn of(error: &Error) -> Option<(&str, Option<Slot>, LocalReason)> {
        Some(match error {
            Error::NoRoute => ("", None, LocalReason::NoRoute),
            Error::Misdirected { .. } => ("", None, LocalReason::Misdirected),
            Error::RouteDisabled { route } => (route, None, LocalReason::RouteDisabled),
            Error::NoEndpoint { route, backend } => {
                (route, Some(*backend), LocalReason::NoEndpoint)
            }
            Error::Overloaded(_) => ("", None, LocalReason::Overloaded),
            Error::HeadTooLarge(_) | Error::UnknownTransferCoding(_) => {
                ("", None, LocalReason::BadHead)
            }
            Error::BadRequest(_) | Error::BadOverride { .. } => ("", None, LocalReason::BadRequest),
            Error::RequestBodyTimeout { route, backend } => {
                (route, Some(*backend), LocalReason::RequestTimeout)
            }
            Error::RequestBodyFailed { route, backend, .. } => {
                (route, Some(*backend), LocalReason::BadRequest)
            }
            Error::LoopDetected { route, .. } => (route, None, LocalReason::LoopDetected),
            Error::Upstream { route, backend, .. } => {
                (route, Some(*backend), LocalReason::Upstream)
            }
            Error::Config(_)
            | Error::UnknownRoute(_)
            | Error::Owned { .. }
            | Error::Handover { .. }
            | Error::HandoverRefused { .. }
            | Error::HandingOver { .. }
            | Error::WeightsNotSaved(_)
            | Error::Rejected(_) => return None,
        })
    }
}

/// One series of `crossfade_local_responses_total`: the backend (`None`: none was chosen), the
/// reason, and the status class index (0 = `1xx` … 4 = `5xx`).
pub(crate) type LocalKey = (Option<Slot>, LocalReason, usize);

/// The proxy's local replies by route name (`""`: no route matched) and [`LocalKey`], since start.
/// Bounded: routes come from the configuration (a removed route's series stay, frozen, as the
/// per-backend ones do), the rest from closed sets.
#[derive(Debug, Default)]
pub(crate) struct LocalReplies {
    counts: Mutex<BTreeMap<String, BTreeMap<LocalKey, u64>>>,
}

// === impl LocalReplies ===

impl LocalReplies {
    /// Counts one local reply with `status` on `route` (`""`: none matched), meant for `backend`.
    pub(crate) fn count(
        &self,
        route: &str,
        backend: Option<Slot>,
        reason: LocalReason,
        status: StatusCode,
    ) {
        let class = crate::stats::class_index(status);
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let per_route = match counts.get_mut(route) {
            Some(per_route) => per_route,
            None => counts.entry(route.to_owned()).or_default(),
        };
        *per_route.entry((backend, reason, class)).or_default() += 1;
    }

    /// Counts the answer to `error` (see [`LocalReason::of`]); control-path errors are not counted.
    pub(crate) fn count_error(&self, error: &Error) {
        if let Some((route, backend, reason)) = LocalReason::of(error) {
            self.count(route, backend, reason, error.status());
        }
    }

    /// Every count, by route then key, for the metrics collector.
    pub(crate) fn snapshot(&self) -> Vec<(String, LocalKey, u64)> {
        let counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts
            .iter()
            .flat_map(|(route, keys)| keys.iter().map(|(key, n)| (route.clone(), *key, *n)))
            .collect()
    }
}

/// The status hyper answered a connection's request head with before closing it, when the
/// connection ended with `error` (see `Server::on_error` in hyper's HTTP/1 role): 400 for an
/// unparseable head, 431 for one over the size limit, 414 for a request-target too long, 505 for
/// an unsupported HTTP major version. `None` when hyper sent nothing (any other end, and an
/// HTTP/2 preface on an HTTP/1 connection, which it does not answer).
pub(crate) fn hyper_answer(error: &hyper::Error) -> Option<StatusCode> {
    if !error.is_parse() || error.is_parse_version_h2() || error.is_parse_status() {
        return None;
    }
    if error.is_parse_too_large() {
        // 431 or 414: one class, and the reason does not tell them apart.
        return Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }
    let text = error.to_string();
    if text.starts_with("unsupported HTTP major version") {
        return Some(StatusCode::HTTP_VERSION_NOT_SUPPORTED);
    }
    if text.starts_with("internal error inside Hyper") {
        return None;
    }
    Some(StatusCode::BAD_REQUEST)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_kept_per_route_backend_reason_and_class() {
        let replies = LocalReplies::default();
        let unavailable = StatusCode::SERVICE_UNAVAILABLE;
        replies.count(
            "web",
            Some(Slot::Blue),
            LocalReason::NoEndpoint,
            unavailable,
        );
        replies.count(
            "web",
            Some(Slot::Blue),
            LocalReason::NoEndpoint,
            unavailable,
        );
        replies.count("", None, LocalReason::NoRoute, StatusCode::NOT_FOUND);
        let snapshot = replies.snapshot();
        assert_eq!(
            snapshot,
            vec![
                ("".to_owned(), (None, LocalReason::NoRoute, 3), 1),
                (
                    "web".to_owned(),
                    (Some(Slot::Blue), LocalReason::NoEndpoint, 4),
                    2
                ),
            ]
        );
    }

    #[test]
    fn control_path_errors_are_not_local_replies() {
        let replies = LocalReplies::default();
        replies.count_error(&Error::UnknownRoute("web".to_owned()));
        assert!(replies.snapshot().is_empty());
        replies.count_error(&Error::RouteDisabled {
            route: "web".to_owned(),
        });
        assert_eq!(
            replies.snapshot(),
            vec![("web".to_owned(), (None, LocalReason::RouteDisabled, 4), 1)]
        );
    }
}
