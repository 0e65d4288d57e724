//! Crossfade's data plane: an L7 HTTP proxy that splits each route's traffic between a blue and a green
//! backend by weight, swaps its routing table atomically, drains retired backends and exports metrics.
//!
//! A request's path reads like the module list: `server` accepts, `forward` matches the route in
//! the [`table`], picks a backend by [`weight`] and an endpoint by [`balance`], sends it over the
//! backend's `upstream` pool, and answers; errors become statuses in [`error`].
//!
//! # Layout
//! - [`config`]: the proxy's configuration (routes, backends, endpoints, weights) and its validation.
//! - [`duration`]: the one bound (at most 366 days) on every configured duration, and
//!   saturating instant arithmetic.
//! - [`weight`]: basis points, percent parsing, backend slots and the weighted pick.
//! - [`rng`]: the cheap per-thread random numbers behind the pick, and a seedable one for tests.
//! - [`path`]: request paths normalised for matching (RFC 3986 §6.2.2, dot segments, `//`).
//! - [`table`]: the pure routing data: matching, weighted pick, endpoint round-robin (no I/O).
//! - [`balance`]: the endpoint pick within a backend: power of two choices over a peak-EWMA cost
//!   (`rtt × (pending + 1)`, as linkerd2-proxy), or round-robin; lock-free per-endpoint atomics.
//! - [`sticky`]: sticky, monotone assignment (key → bucket → backend) and the tester override.
//! - `expect`: `Expect: 100-continue` passed through: the client's body waits for the backend's 100.
//! - `upload`: a request body on its way upstream: the response timeout runs only while the backend
//!   owes the next move; a client that stalls its upload gets 408 (`limits.body_read_timeout`).
//! - [`headers`]: hop-by-hop header hygiene (RFC 9110 §7.6.1) and `X-Forwarded-*`.
//! - [`via`]: the `Via` entry on forwarded messages (RFC 9110 §7.6.3) and the loops it reveals
//!   (508 Loop Detected); [`loops`] refuses the loops an address comparison can see.
//! - [`error`]: the error type and the one mapping from error to HTTP status.
//! - [`histogram`]: the lock-free latency histogram shared by `/metrics` and the controller's analysis.
//! - [`stats`]: per-(route, backend) counters that survive table swaps.
//! - [`health`]: endpoint health (active checks, passive ejection) and the preview's breaker.
//! - [`metrics`]: the Prometheus collector over those counters.
//! - [`process`]: `crossfade_build_info` and the `process_*` metrics (read from `/proc`), and the
//!   whole `/metrics` answer around the registry.
//! - [`exposition`]: the text format of a `/metrics` answer, OpenMetrics or Prometheus 0.0.4,
//!   negotiated from the request's `Accept`.
//! - `upstream`: one pooled client per backend (HTTP/1.1, or h2c streams multiplexed per
//!   endpoint), failure classification.
//! - `early`: the upstream connection wrapper that keeps a backend's early answer (a 413 before
//!   the upload was read) readable when the backend resets the connection under the upload.
//! - [`shadow`]: shadow traffic: requests mirrored to the preview, answers compared, counted.
//! - [`tunnel`]: HTTP/1.1 Upgrade (WebSocket) tunnels over dedicated upstream connections, their
//!   gauge, and their close (1001 "going away") when a retired backend's drain deadline passes.
//! - `drain`: the tunnels to endpoints a table swap removed, closed the same way once
//!   `drain_timeout` has passed.
//! - `server`, `forward`, `body`: the accept loop, the request path and the streamed response body.
//! - [`limits`]: connection and request limits, and the 503 with `Retry-After` when shedding.
//! - `idle`: a client connection closed gracefully when the drain asks, when it sends no request
//!   in time, or when no request has been in flight for `header_read_timeout` (HTTP/2: GOAWAY).
//! - [`linger`]: the lingering close of client connections (RFC 9112 §9.6): after an answer given
//!   before the request body was read, the client's upload is discarded until it closes.
//! - `tls`: TLS termination (rustls, ALPN `h2`/`http/1.1`) with a certificate reloadable in place.
//! - [`handle`]: [`Proxy`], the handle that owns the table and serves.
//! - [`handover`]: zero-downtime upgrade of the binary: the listening sockets pass to a successor
//!   process (`SCM_RIGHTS` over a Unix socket) and this one drains.
//! - [`saved`]: weights kept across restarts in a state file (`state_file`): the saved document
//!   and the rule a start restores them by.
//! - [`reload`]: route reloads from the config file (SIGHUP) that keep weights set at runtime
//!   unless the file's changed, and the settings a reload cannot apply.
//! - [`owner`]: route ownership (the rollout that sets a route's weights) against manual writes.
//! - [`status`]: what `/status` and `/readyz` report.
//! - [`admin`]: the admin API (status, weights, metrics, health).
//! - [`access`]: the opt-in access log (one JSON line per request, written off the request path
//!   by a thread of its own) and the rate-limited WARN line of each upstream failure answered
//!   502/504.
//! - `fuzzing` (feature `fuzzing`, and in unit tests): crate-private parsers exposed to the
//!   cargo-fuzz targets in `fuzz/`; `fuzz_checks` (unit tests) runs those targets' checks over their
//!   committed corpora on stable (docs/fuzzing.md).
#![warn(missing_docs)]
// Internal docs are read with `cargo doc --document-private-items` (scripts/test.sh checks them
// so), where a public item's links to private ones resolve.
#![allow(rustdoc::private_intra_doc_links)]

pub mod access;
pub mod admin;
pub mod balance;
mod body;
pub mod config;
pub mod de;
mod drain;
pub mod duration;
mod early;
pub mod error;
mod expect;
pub mod exposition;
pub mod files;
mod forward;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod grpc;
pub mod handle;
pub mod handover;
pub mod headers;
pub mod health;
pub mod histogram;
mod idle;
mod interim;
pub mod limits;
pub mod linger;
pub mod local;
pub mod loops;
pub mod metrics;
pub mod owner;
pub mod path;
mod preface;
pub mod process;
pub(crate) mod proxy_protocol;
pub mod reload;
pub mod request_id;
pub mod rng;
pub mod saved;
mod server;
pub mod shadow;
pub mod shown;
pub mod stats;
pub mod status;
pub mod sticky;
pub mod table;
mod tls;
pub mod tunnel;
mod unread;
mod upload;
mod upstream;
pub mod via;
pub mod weight;

pub use config::{
    AccessLogConfig, BackendConfig, ConfigError, LimitsConfig, Problem, ProxyConfig,
    RequestIdConfig, RouteConfig, ShadowConfig, TlsConfig, TlsPair, UpstreamConfig,
    UpstreamProtocol,
};
pub use error::{Error, ErrorKind, Result};
pub use handle::{HandedRoutes, Proxy};
pub use health::{EjectReason, ProxyEvent};
pub use histogram::{HistogramSnapshot, LatencyHistogram};
pub use metrics::ProxyMetrics;
pub use owner::{RouteOwner, WeightWriter};
pub use shadow::ShadowSnapshot;
pub use stats::BackendSnapshot;
pub use status::{EndpointStatus, RouteStatus, SlotStatus, Status};
pub use weight::{Percent, Slot, Weights};

// The fuzz targets' shared checks (`fuzz/checks/*.rs`) name this crate as the targets see it.
#[cfg(test)]
extern crate self as crossfade_proxy;
#[cfg(test)]
mod fuzz_checks;
#[cfg(test)]
mod properties;
