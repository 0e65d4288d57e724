//! The `crossfade controller --kube` metrics and health listener: `GET /metrics` (the registry in
//! the OpenMetrics text format, then `crossfade_build_info` and the `process_*` metrics of
//! [`crossfade_proxy::process`]), `GET /healthz` and `GET /readyz` (Kubernetes probe endpoints,
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
                    async move { Ok::<_, Infallible>(health.answer::<Incoming>(&req)) }
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
    pub fn answer<B>(&self, req: &Request<B>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        }
        match req.uri().path() {
            "/metrics" => {
                let mut body = String::new();
                match crossfade_proxy::process::encode(&mut body, &self.registry) {
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

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    fn get(health: &Health, method: Method, path: &str) -> (StatusCode, String, String) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .expect("request");
        let res = health.answer(&req);
        let status = res.status();
        let kind = res
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = futures_util::FutureExt::now_or_never(res.into_body().collect())
            .expect("a full body is ready")
            .expect("infallible")
            .to_bytes();
        (status, kind, String::from_utf8_lossy(&body).into_owned())
    }

    #[test]
    fn readyz_is_503_until_set_ready_and_healthz_is_always_200() {
        let health = Health::new(Registry::default());
        assert_eq!(get(&health, Method::GET, "/healthz").0, StatusCode::OK);
        let (status, _, body) = get(&health, Method::GET, "/readyz");
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
        );
        health.set_ready();
        let (status, _, body) = get(&health, Method::GET, "/readyz");
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok\n"));
    }

    #[test]
    fn metrics_are_openmetrics_and_other_paths_and_methods_are_refused() {
        let mut registry = Registry::with_prefix("crossfade");
        let rollout = crate::metrics::RolloutMetrics::register(&mut registry);
        let _route = rollout.route("default/web");
        let health = Health::new(registry);
        let (status, kind, body) = get(&health, Method::GET, "/metrics");
        assert_eq!((status, kind.as_str()), (StatusCode::OK, OPENMETRICS));
        assert!(
            body.contains(r#"crossfade_rollouts_total{route="default/web",outcome="completed"} 0"#),
            "{body}"
        );
        // The duration histogram's series too, before any rollout ends (docs/metrics.md).
        for outcome in crate::metrics::ROLLOUT_OUTCOMES {
            let count = format!(
                r#"crossfade_rollout_duration_seconds_count{{route="default/web",outcome="{outcome}"}} 0"#
            );
            assert!(body.lines().any(|l| l == count), "{count}\n{body}");
        }
        assert!(body.ends_with("# EOF\n"), "{body}");
        assert_eq!(
            get(&health, Method::GET, "/status").0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            get(&health, Method::POST, "/metrics").0,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
