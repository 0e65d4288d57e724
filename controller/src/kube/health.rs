//! The `crossfade controller --kube` metrics and health listener: `GET /metrics` (the registry in
//! the OpenMetrics text format), `GET /healthz` and `GET /readyz` (Kubernetes probe endpoints,
//! <https://kubernetes.io/docs/reference/using-api/health-checks/>). Plain HTTP/1.1, no auth: it
//! exposes what Prometheus scrapes and nothing that changes state.
//!
//! - `/healthz`: 200 `ok` while the process serves (the liveness probe).
//! - `/readyz`: 200 `ok` once [`Health::set_ready`] was called (the CLI calls it when the
//!   TrafficShift CRD check passed), else 503 `not ready`. A follower waiting for the Lease is
//!   ready: it is healthy and can take over; leadership is not a readiness condition, so every
//!   replica stays scrapeable.
//! - anything else: 404; a method other than GET or HEAD: 405.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// The OpenMetrics text format's content type (OpenMetrics 1.0, "Overall Structure").
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

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

    /// Serves `listener` until the returned future is dropped; one task per connection. Accept
    /// errors (e.g. too many open files) are logged and the loop goes on after 100 ms.
    pub async fn serve(self, listener: TcpListener) {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics listener: accept");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let health = self.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let health = health.clone();
                    async move { Ok::<_, Infallible>(health.answer(&req)) }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                if let Err(e) = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!(error = %e, "metrics listener: connection");
                }
            });
        }
    }

    /// The response to `req` (see the module docs).
    pub fn answer(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        }
        match req.uri().path() {
            "/metrics" => {
                let mut body = String::new();
                match prometheus_client::encoding::text::encode(&mut body, &self.registry) {
                    Ok(()) => Response::builder()
                        .header(header::CONTENT_TYPE, OPENMETRICS)
                        .body(Full::new(Bytes::from(body)))
                        .unwrap_or_default(),
                    Err(e) => text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &format!("encode metrics: {e}\n"),
                    ),
                }
            }
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
