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
    /// A `Location` header to send (a redirect), if any.
    pub location: Option<String>,
}

impl Reply {
    /// `status` with `body`, at once.
    pub fn new(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            body: body.into(),
            delay: Duration::ZERO,
            location: None,
        }
    }

    /// The same answer with a `Location: location` header (give a 3xx `status`: a redirect).
    pub fn location(mut self, location: impl Into<String>) -> Reply {
        self.location = Some(location.into());
        self
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
    auths: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl WebhookServer {
    /// Starts a server on a free port that answers every request with `answer(path)` (the path
    /// without the query) and records it.
    ///
    /// # Panics
    /// When no port can be bound.
    pub async fn start(answer: impl Fn(&str) -> Reply + Send + Sync + 'static) -> WebhookServer {
        WebhookServer::start_with_auth(move |path, _| answer(path)).await
    }

    /// As [`WebhookServer::start`], with `answer(path, authorization)`: the request's
    /// `Authorization` value (empty when absent), which [`WebhookServer::auths`] also records.
    ///
    /// # Panics
    /// When no port can be bound.
    pub async fn start_with_auth(
        answer: impl Fn(&str, &str) -> Reply + Send + Sync + 'static,
    ) -> WebhookServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
        let auths: Arc<Mutex<Vec<String>>> = Arc::default();
        let answer = Arc::new(answer);
        let (recorded, recorded_auths) = (Arc::clone(&calls), Arc::clone(&auths));
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (calls, auths, answer) = (
                    Arc::clone(&recorded),
                    Arc::clone(&recorded_auths),
                    Arc::clone(&answer),
                );
                tokio::spawn(async move {
                    let service =
                        service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                            let (calls, auths, answer) =
                                (Arc::clone(&calls), Arc::clone(&auths), Arc::clone(&answer));
                            async move {
                                let target = request.uri().to_string();
                                let path = request.uri().path().to_owned();
                                let auth = request
                                    .headers()
                                    .get(hyper::header::AUTHORIZATION)
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or_default()
                                    .to_owned();
                                auths
                                    .lock()
                                    .unwrap_or_else(PoisonError::into_inner)
                                    .push(auth.clone());
                                let body = request.into_body().collect().await?.to_bytes();
                                let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                                calls
                                    .lock()
                                    .unwrap_or_else(PoisonError::into_inner)
                                    .push((target, body));
                                let reply = answer(&path, &auth);
                                tokio::time::sleep(reply.delay).await;
                                let mut response =
                                    hyper::Response::new(Full::new(Bytes::from(reply.body)));
                                *response.status_mut() = hyper::StatusCode::from_u16(reply.status)
                                    .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
                                if let Some(location) = reply
                                    .location
                                    .and_then(|l| hyper::header::HeaderValue::from_str(&l).ok())
                                {
                                    response
                                        .headers_mut()
                                        .insert(hyper::header::LOCATION, location);
                                }
                                Ok::<_, hyper::Error>(response)
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        WebhookServer {
            addr,
            calls,
            auths,
            task,
        }
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

    /// The `Authorization` of every request so far, in order (empty when absent).
    pub fn auths(&self) -> Vec<String> {
        self.auths
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
