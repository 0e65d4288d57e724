//! A local HTTP/1.1 server standing in for what a rollout calls out to (webhook gates, a
//! Prometheus query API, a JSON KPI endpoint): it answers each request as the test says and
//! records every request it got.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// One request the server got: its target (path and query) and its JSON body (`null` when it
/// has none or it is not JSON).
pub type Call = (String, Value);

/// How the server answers one request: a status and a body, after an optional delay.
#[derive(Clone, Debug)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The body, sent as it is.
    pub body: String,
    /// How long to wait before answering (a slow or hanging webhook).
    pub delay: Duration,
}

impl Reply {
    /// `status` with `body`, at once.
    pub fn new(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            body: body.into(),
            delay: Duration::ZERO,
        }
    }

    /// The same answer, sent `delay` later.
    pub fn after(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

/// A running server on 127.0.0.1, stopped when dropped.
pub struct WebhookServer {
    addr: SocketAddr,
    calls: Arc<Mutex<Vec<Call>>>,
    task: tokio::task::JoinHandle<()>,
}

impl WebhookServer {
    /// Starts a server on a free port that answers every request with `answer(path)` (the path
    /// without the query) and records it.
    ///
    /// # Panics
    /// When no port can be bound.
    pub async fn start(answer: impl Fn(&str) -> Reply + Send + Sync + 'static) -> WebhookServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
        let answer = Arc::new(answer);
        let recorded = Arc::clone(&calls);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (calls, answer) = (Arc::clone(&recorded), Arc::clone(&answer));
                tokio::spawn(async move {
                    let service =
                        service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                            let (calls, answer) = (Arc::clone(&calls), Arc::clone(&answer));
                            async move {
                                let target = request.uri().to_string();
                                let path = request.uri().path().to_owned();
                                let body = request.into_body().collect().await?.to_bytes();
                                let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                                calls
                                    .lock()
                                    .unwrap_or_else(PoisonError::into_inner)
                                    .push((target, body));
                                let reply = answer(&path);
                                tokio::time::sleep(reply.delay).await;
                                let mut response =
                                    hyper::Response::new(Full::new(Bytes::from(reply.body)));
                                *response.status_mut() = hyper::StatusCode::from_u16(reply.status)
                                    .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
                                Ok::<_, hyper::Error>(response)
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        WebhookServer { addr, calls, task }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The requests so far whose target (path and query) starts with `prefix`.
    pub fn calls_to(&self, prefix: &str) -> Vec<Call> {
        let mut calls = self.calls();
        calls.retain(|(target, _)| target.starts_with(prefix));
        calls
    }
}

impl Drop for WebhookServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
