//! The proxy's errors and the one place where an error becomes an HTTP status.
//!
//! Upstream refused/reset/other connect failure → 502, upstream timeout → 504, no endpoint or a
//! disabled route → 503, no route → 404, bad client request → 400, a client that stalls its request
//! body → 408. A gRPC client gets the same answer as a gRPC status instead ([`Error::grpc_status`]).

use std::fmt;

use http::StatusCode;

use crate::config::ConfigError;
use crate::limits::ShedReason;
use crate::weight::Slot;

/// Boxed source error from a library (hyper, io).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result with the proxy's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the proxy, on the request path and on the control path.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration (or an edit of the routes) breaks a rule.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A control-path call named a route that does not exist.
    #[error("no route named {0:?}")]
    UnknownRoute(String),
    /// A manual weight write on a route that a rollout owns (answered 409 on the admin API).
    #[error("route {route} is owned by {owner}, which sets its weights")]
    Owned {
        /// The route's name.
        route: String,
        /// Its owner.
        owner: crate::owner::RouteOwner,
    },
    /// A binary upgrade's handover of the listening sockets failed at `step` (see
    /// [`crate::handover`]); the process that was serving keeps serving.
    #[error("binary upgrade: {step}: {source}")]
    Handover {
        /// What was being done, e.g. `receiving the listening sockets`.
        step: &'static str,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// The serving process refused a binary upgrade's handover for `reason` (`crossfade run`
    /// while a rollout is in progress): it serves on, and this process must exit.
    #[error(
        "binary upgrade refused by the serving process{}: {reason}; it serves on, unchanged",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    HandoverRefused {
        /// The serving process's ID, when the kernel said.
        pid: Option<u32>,
        /// Why, as it said.
        reason: String,
    },
    /// A change of the routes refused because a binary upgrade is handing the routes in force to
    /// a successor process ([`crate::handover`]): a change made here now would not be in the
    /// successor's routes. Answered 503 with `Retry-After` on the admin API; once the successor
    /// has taken over it takes the change (same admin address), and if the handover fails this
    /// process accepts changes again.
    #[error(
        "a binary upgrade is handing over to {}: this process changes no more routes (the change \
         would not reach the new process); retry once it has taken over",
        successor_name(.successor)
    )]
    HandingOver {
        /// The successor's process ID (`SO_PEERCRED` of its upgrade socket connection), when known.
        successor: Option<u32>,
    },
    /// A change of the routes refused because its weights could not be saved to the state file
    /// (`state_file`, [`crate::saved::WeightStore`]): the message names the file and the failure.
    /// Nothing changed. Answered 500 on the admin API.
    #[error("weights not changed: they cannot be saved: {0}")]
    WeightsNotSaved(String),
    /// A control-path edit was refused by the caller's own check.
    #[error("{0}")]
    Rejected(String),
    /// No route matches the request's host and path (answered 404).
    #[error("no route for this host and path")]
    NoRoute,
    /// The request's host would get another certificate than the one the client's SNI host name
    /// picked for its connection (`tls.sni`): answered 421 Misdirected Request (RFC 9110 §7.4,
    /// §15.5.20), which the client may retry on a new connection for that host (RFC 9113 §9.1.2).
    #[error("misdirected request: this connection was secured for another host than {host} (its TLS server name picked another certificate); connect again for {host}")]
    Misdirected {
        /// The request's host, as sent.
        host: String,
    },
    /// The route's weights are both 0 (answered 503; nothing is sent upstream).
    #[error("route {route} is disabled (both weights are 0)")]
    RouteDisabled {
        /// The route's name.
        route: String,
    },
    /// The picked backend has no endpoint (answered 503).
    #[error("no endpoint (route {route}, backend {backend})")]
    NoEndpoint {
        /// The route's name.
        route: String,
        /// The backend's slot.
        backend: Slot,
    },
    /// The proxy is at `limits.max_connections` or `limits.max_requests` (answered 503 with
    /// `Retry-After`, RFC 9110 §10.2.3; nothing is sent upstream).
    #[error("overloaded: too many {} (retry later)", .0.as_str())]
    Overloaded(ShedReason),
    /// The request cannot be forwarded as it is (answered 400).
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The client sent no byte of its request body for `limits.body_read_timeout` (answered 408,
    /// RFC 9110 §15.5.9); the upstream request was abandoned and nothing counts against the backend.
    #[error("request timeout: no request body byte within limits.body_read_timeout")]
    RequestBodyTimeout {
        /// The route's name.
        route: String,
        /// The backend the request was sent to.
        backend: Slot,
    },
    /// The client's request body failed after the request was sent upstream: the client went
    /// away mid-body (`malformed` false), or its chunked framing did not decode (RFC 9112 §7.1).
    /// Answered 400; the upstream request was abandoned and nothing counts against the backend,
    /// but the route and backend it was sent to are kept for the access log and
    /// `crossfade_local_responses_total`, as for [`Error::RequestBodyTimeout`].
    #[error("bad request: {}", body_failure(*.malformed))]
    RequestBodyFailed {
        /// The route's name.
        route: String,
        /// The backend the request was sent to.
        backend: Slot,
        /// True when the body's framing did not decode; false when the client went away.
        malformed: bool,
    },
    /// An HTTP/2 request whose HTTP/1.1 form breaks hyper's HTTP/1.1 head limits: more than 100
    /// header fields or more than `limits.max_header_bytes` (answered 431, RFC 6585 §5, as
    /// hyper answers such an HTTP/1.1 head; see `limits::head`).
    #[error("request header fields too large: {0}")]
    HeadTooLarge(&'static str),
    /// The request's `Transfer-Encoding` names a coding other than `chunked` (`gzip, chunked`):
    /// the header is hop-by-hop, so the proxy would forward bytes in a coding the backend is not
    /// told about (answered 501, RFC 9112 §6.1; nginx answers the same).
    #[error("not implemented: transfer coding {0:?} (only chunked is)")]
    UnknownTransferCoding(String),
    /// The route's tester override header has a value other than `blue` or `green`, or is sent
    /// more than once naming different backends (answered 400).
    #[error("bad request: header {header} must be blue or green, sent once or always the same")]
    BadOverride {
        /// The header's name.
        header: String,
    },
    /// The request's `Via` already names this proxy: it went round a forwarding loop and came
    /// back (answered 508 Loop Detected, RFC 5842 §7.2; nothing is sent upstream).
    #[error("forwarding loop: this request has passed this proxy before (route {route}; its Via names {pseudonym})")]
    LoopDetected {
        /// The route the request matched.
        route: String,
        /// This proxy's `Via` pseudonym.
        pseudonym: &'static str,
    },
    /// The upstream exchange failed before a response head arrived (answered 502 or 504).
    #[error("upstream {kind} (route {route}, backend {backend})")]
    Upstream {
        /// The route's name.
        route: String,
        /// The backend's slot.
        backend: Slot,
        /// What failed, as a closed set.
        kind: ErrorKind,
        /// The library error, for logs.
        #[source]
        source: Option<BoxError>,
        /// The endpoint the last attempt went to, when it reached the point of picking one.
        endpoint: Option<std::net::SocketAddr>,
        /// Requests sent upstream for this client request: 1, or 2 after a retry.
        attempts: u8,
    },
}

/// The closed set of upstream failures; the value of the `kind` and `reason` metric labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The endpoint refused the TCP connection (nothing listens). Safe to retry.
    ConnectRefused,
    /// The TCP connect took longer than `upstream.connect_timeout`. Safe to retry.
    ConnectTimeout,
    /// Another connect failure (unreachable network, resource limits). Safe to retry.
    ConnectError,
    /// The connection was reset or closed before the response head was complete. The request may
    /// have reached the backend: only idempotent bodiless requests are re-sent.
    Reset,
    /// No response head within `upstream.response_timeout`.
    ResponseTimeout,
    /// The upstream broke HTTP/1.1 (unparseable response and the like).
    Protocol,
}

// === impl ErrorKind ===

impl ErrorKind {
    /// Every kind, in label order.
    pub const ALL: [ErrorKind; 6] = [
        ErrorKind::ConnectRefused,
        ErrorKind::ConnectTimeout,
        ErrorKind::ConnectError,
        ErrorKind::Reset,
        ErrorKind::ResponseTimeout,
        ErrorKind::Protocol,
    ];

    /// The metric label value: `connect_refused`, `connect_timeout`, `connect_error`, `reset`,
    /// `response_timeout` or `protocol`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::ConnectRefused => "connect_refused",
            ErrorKind::ConnectTimeout => "connect_timeout",
            ErrorKind::ConnectError => "connect_error",
            ErrorKind::Reset => "reset",
            ErrorKind::ResponseTimeout => "response_timeout",
            ErrorKind::Protocol => "protocol",
        }
    }

    /// Index into per-kind counter arrays, in [`ErrorKind::ALL`] order.
    pub fn index(self) -> usize {
        self as usize
    }

    /// True when no request byte can have been written: the connection never existed, so the
    /// request may be sent elsewhere if it has no body.
    pub fn is_connect(self) -> bool {
        matches!(
            self,
            ErrorKind::ConnectRefused | ErrorKind::ConnectTimeout | ErrorKind::ConnectError
        )
    }

    /// What happened, for a log line's `cause` when the failure carries no error of its own (a
    /// timeout is the proxy's own verdict, not an error of the connection): names the setting
    /// that bounded the wait.
    pub fn description(self) -> &'static str {
        match self {
            ErrorKind::ConnectRefused => "the endpoint refused the TCP connection",
            ErrorKind::ConnectTimeout => "no TCP connection within upstream.connect_timeout",
            ErrorKind::ConnectError => "the TCP connect failed",
            ErrorKind::Reset => "the connection closed before the response head was complete",
            ErrorKind::ResponseTimeout => {
                "no response head within the response timeout (routes[].response_timeout, else upstream.response_timeout)"
            }
            ErrorKind::Protocol => "the response broke HTTP/1.1",
        }
    }

    /// The status a client gets: 504 for timeouts, 502 otherwise.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::ConnectTimeout | ErrorKind::ResponseTimeout => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::BAD_GATEWAY,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            ErrorKind::ConnectRefused => "connect refused",
            ErrorKind::ConnectTimeout => "connect timeout",
            ErrorKind::ConnectError => "connect error",
            ErrorKind::Reset => "connection reset",
            ErrorKind::ResponseTimeout => "response timeout",
            ErrorKind::Protocol => "protocol error",
        };
        f.write_str(text)
    }
}

/// `pid N`, or `a new process` when its ID is unknown: the successor of [`Error::HandingOver`].
fn successor_name(successor: &Option<u32>) -> String {
    match successor {
        Some(pid) => format!("pid {pid}"),
        None => "a new process".to_owned(),
    }
}

/// What [`Error::RequestBodyFailed`] says of the body: malformed or aborted.
fn body_failure(malformed: bool) -> &'static str {
    match malformed {
        true => {
            "the request body is malformed (its chunked framing does not decode, RFC 9112 §7.1)"
        }
        false => "the client aborted the request body",
    }
}

// === impl Error ===

impl Error {
    /// The HTTP status this error is answered with, decided here and nowhere else.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::NoRoute => StatusCode::NOT_FOUND,
            Error::Misdirected { .. } => StatusCode::MISDIRECTED_REQUEST,
            Error::RouteDisabled { .. } | Error::NoEndpoint { .. } | Error::Overloaded(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::BadRequest(_) | Error::BadOverride { .. } => StatusCode::BAD_REQUEST,
            Error::RequestBodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Error::RequestBodyFailed { .. } => StatusCode::BAD_REQUEST,
            Error::LoopDetected { .. } => StatusCode::LOOP_DETECTED,
            Error::HeadTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Error::UnknownTransferCoding(_) => StatusCode::NOT_IMPLEMENTED,
            Error::Upstream { kind, .. } => kind.status(),
            Error::UnknownRoute(_) => StatusCode::NOT_FOUND,
            Error::Config(_) | Error::Rejected(_) => StatusCode::BAD_REQUEST,
            Error::Owned { .. } => StatusCode::CONFLICT,
            Error::HandingOver { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::Handover { .. } | Error::HandoverRefused { .. } | Error::WeightsNotSaved(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// The gRPC status a gRPC client gets instead of [`Error::status`] (in a trailers-only
    /// response, [`crate::grpc::local_reply`]): the HTTP status mapped by gRPC's table
    /// ([`crate::grpc::code_for_http`]: 502/503/504 and 429 → UNAVAILABLE 14, 404 →
    /// UNIMPLEMENTED 12, 400 → INTERNAL 13, 408 → UNKNOWN 2), except an upstream response timeout,
    /// which is DEADLINE_EXCEEDED 4 as Envoy's route timeout answers since envoyproxy/envoy#44479
    /// (before it, UNAVAILABLE by the table, envoyproxy/envoy#10184): the request reached the
    /// backend and may have been carried out, which DEADLINE_EXCEEDED says and UNAVAILABLE (a
    /// status clients retry) does not. A connect timeout (nothing sent) stays UNAVAILABLE.
    pub fn grpc_status(&self) -> u32 {
        match self {
            Error::Upstream {
                kind: ErrorKind::ResponseTimeout,
                ..
            } => crate::grpc::DEADLINE_EXCEEDED,
            _ => crate::grpc::code_for_http(self.status()),
        }
    }

    /// The short plain-text body a client gets, e.g.
    /// `crossfade: upstream connect refused (route web, backend green)\n`.
    pub fn body(&self) -> String {
        format!("crossfade: {self}\n")
    }

    /// The `grpc-message` a gRPC client gets (before percent-encoding): [`Error::body`] without
    /// its line end.
    pub fn grpc_message(&self) -> String {
        format!("crossfade: {self}")
    }

    /// The upstream failure kind, if this is an upstream error.
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            Error::Upstream { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
