//! The `crossfade controller --kube` metrics and health listener: `GET /metrics` (the registry,
//! then `crossfade_build_info` and the `process_*` metrics of [`crossfade_proxy::process`], in the
//! text format the scraper's `Accept` asks for: OpenMetrics when it names it, as Prometheus does,
//! else the Prometheus text format 0.0.4; the proxy's admin API answers the same way,
//! [`crossfade_proxy::admin::metrics`]), `GET /healthz` and `GET /readyz` (Kubernetes probe
//! endpoints, <https://kubernetes.io/docs/reference/using-api/health-checks/>). Plain HTTP/1.1,
//! no auth: it exposes what Prometheus scrapes and nothing that changes state.
//!
//! - `/healthz`: 200 `ok` while the process serves (the liveness probe).
//! - `/readyz`: 200 `ok` once [`Health::set_ready`] was called (the CLI calls it when the
//!   TrafficShift CRD check passed), else 503 `not ready`. A follower waiting for the Lease is
//!   ready: it is healthy and can take over; leadership is not a readiness condition, so every
//!   replica stays scrapeable.
//! - anything else: 404; a method other than GET or HEAD: 405.
//!
//! The proxy's admin listener guards it ([`crossfade_proxy::admin::serve_guarded`]): at most
//! [`MAX_CONNECTIONS`] connections, where the one that has waited longest for a request makes
//! room for a new one, so idle connections never keep a probe from its answer; and a connection
//! that sends no complete request head within [`HEADER_READ_TIMEOUT`] (a slowloris) is closed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use crossfade_proxy::admin::serve_guarded;
use crossfade_proxy::LimitsConfig;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// Most connections the listener serves at once: 64, the proxy's admin API default
/// (`limits.max_admin_connections`). Its clients are a handful (Prometheus, the kubelet's
/// probes), and the cap bounds the file descriptors an unauthenticated client can hold.
pub const MAX_CONNECTIONS: usize = 64;

/// Longest a client may take to send a complete request head, from its accept or, on a
/// keep-alive connection, from its last response: 10 s, the proxy's `limits.header_read_timeout`
/// default (HAProxy's recommended `timeout http-request`). A kubelet probe sends its request at
/// once (its own `timeoutSeconds` defaults to 1 s).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The listener's guards: [`MAX_CONNECTIONS`] and [`HEADER_READ_TIMEOUT`], and the proxy's
/// defaults for the rest (`max_header_bytes` 64 KiB, `retry_after` 1 s).
pub fn limits() -> LimitsConfig {
    LimitsConfig {
        max_admin_connections: MAX_CONNECTIONS,
        header_read_timeout: HEADER_READ_TIMEOUT,
        ..LimitsConfig::default()
    }
}

/// What the listener answers from: the registry and the readiness flag. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Health {
    registry: Arc<Registry>,
    ready: Arc<AtomicBool>,
}

impl Health {
    /// A listener state over `registry`, not ready yet.
    pub fn new(registry: Registry) -> Health {
        Health {
            registry: Arc::new(registry),
            ready: Arc::new(AtomicBool::new(false)),
        }
    }

    /// `/readyz` answers 200 from now on.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Serves `listener` with the default guards ([`limits`]) until the returned future is
    /// dropped, which closes every connection at once.
    pub async fn serve(self, listener: TcpListener) {
        self.serve_limited(listener, &limits()).await;
    }

    /// Serves `listener` under `limits` (of which it uses `max_admin_connections`,
    /// `header_read_timeout`, `max_header_bytes` and `retry_after`: see
    /// [`crossfade_proxy::admin::serve_guarded`]) until the returned future is dropped. Accept
    /// errors (e.g. too many open files) are logged and the loop goes on after a short pause.
    pub async fn serve_limited(self, listener: TcpListener, limits: &LimitsConfig) {
        let handle = move |request: Request<Incoming>| {
            let answer = self.answer(&request);
            std::future::ready(answer)
        };
        // Dropped, never shut down: nothing to drain.
        let (drain, shutdown) = (Duration::ZERO, std::future::pending());
        serve_guarded(
            "metrics listener",
            limits,
            listener,
            handle,
            drain,
            shutdown,
        )
        .await;
    }

    /// The response to `req` (see the module docs).
    pub fn answer<B>(&self, req: &Request<B>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            // RFC 9110 §15.5.6: a 405 carries `Allow`, as the proxy's admin API's does.
            let mut answer = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
            answer
                .headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
            return answer;
        }
        match req.uri().path() {
            "/metrics" => crossfade_proxy::admin::metrics(req.headers(), &self.registry),
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" if self.ready.load(Ordering::Acquire) => text(StatusCode::OK, "ok\n"),
            "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: GET /metrics, /healthz or /readyz\n",
            ),
        }
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
