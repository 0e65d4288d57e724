//! Test-only: a scripted Kubernetes API server on `tower_test`'s mock service, the pattern of
//! kube's own client tests (`kube-client/src/client/mod.rs`, `test_mock`) and of controller-rs's
//! fixtures: the code under test runs on a `kube::Client` whose every request arrives here, and
//! the test takes them one at a time, asserts their exact shape (method, path, query, content
//! type, body) and answers each with an object, an API error, or never (a request that hangs).
//!
//! Tests run on paused time (`#[tokio::test(start_paused = true)]`): [`ApiServer::next`] gives up
//! after [`PATIENCE`] of mock time, which tokio reaches at once when nothing else is pending, so a
//! request that never comes fails the test instead of hanging it; and [`Call::at`] is exact.

use std::collections::BTreeMap;
use std::time::Duration;

use http::{Request, Response};
use kube::client::Body;
use serde_json::{json, Value};
use tokio::time::Instant;
use tower_test::mock::{Handle, SendResponse};

/// How long (mock time) [`ApiServer::next`] waits for a request before failing the test.
pub(crate) const PATIENCE: Duration = Duration::from_secs(3600);

/// The server side of a mock client: the requests, in the order the client sent them.
pub(crate) struct ApiServer {
    handle: Handle<Request<Body>, Response<Body>>,
    /// Requests never answered: kept so that they hang rather than fail.
    held: Vec<SendResponse<Response<Body>>>,
}

/// One request, read whole, and the way to answer it.
pub(crate) struct Call {
    /// `GET`, `PUT`, ...
    pub(crate) method: String,
    /// The URI path.
    pub(crate) path: String,
    /// The query's pairs (kube writes `?&force=true&fieldManager=x`; order does not matter).
    pub(crate) query: BTreeMap<String, String>,
    /// The `Content-Type` header, if any.
    pub(crate) content_type: Option<String>,
    /// The body as JSON (`Null` when empty).
    pub(crate) body: Value,
    /// When it arrived (tokio's clock).
    pub(crate) at: Instant,
    reply: SendResponse<Response<Body>>,
}

/// A client whose requests go to the returned [`ApiServer`] (default namespace `default`).
pub(crate) fn client() -> (kube::Client, ApiServer) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = ApiServer {
        handle,
        held: Vec::new(),
    };
    (kube::Client::new(service, "default"), server)
}

/// A `Status` error body as the API server sends it (`reason` as in `metav1.StatusReason`).
pub(crate) fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code })
}

/// The query pairs `pairs` as a map, to compare with [`Call::query`].
pub(crate) fn query(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The record of a rollout of generation 1 at its first step, whose weights (generation 1) wait
/// for the proxies. It names no target Deployment and has no promotion words, as a record of a
/// version before them (2026-12-01), and none of the fields added since.
pub(crate) fn progressing_record() -> crate::kube::store::ShiftRecord {
    let mut rollout = crate::rollout::Rollout::new(
        1,
        crate::spec::RolloutConfig::default(),
        crossfade_proxy::weight::Slot::Blue,
    );
    let now = Instant::now();
    rollout.step(crate::rollout::Input::Start, now);
    rollout.step(crate::rollout::Input::PreviewReady, now);
    assert_eq!(rollout.phase, crate::rollout::Phase::Progressing);
    assert!(rollout.weights_pending);
    crate::kube::store::ShiftRecord {
        published_bp: rollout.preview_bp,
        weights_generation: 1,
        ..crate::kube::store::ShiftRecord::new(1, rollout)
    }
}

// === impl ApiServer ===

impl ApiServer {
    /// The next request; fails the test when none comes within [`PATIENCE`].
    pub(crate) async fn next(&mut self) -> Call {
        let next = tokio::time::timeout(PATIENCE, self.handle.next_request()).await;
        let Ok(Some((request, reply))) = next else {
            panic!("the code under test made no further request");
        };
        let at = Instant::now();
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.expect("request body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("a JSON request body")
        };
        let query = form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
            .filter(|(k, _)| !k.is_empty())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let content_type = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Call {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            query,
            content_type,
            body,
            at,
            reply,
        }
    }

    /// The next request, asserting its method and path.
    pub(crate) async fn expect(&mut self, method: &str, path: &str) -> Call {
        let call = self.next().await;
        assert_eq!(call.line(), format!("{method} {path}"), "{:#}", call.body);
        call
    }

    /// Never answers `call`: its request hangs until the client gives up on it.
    pub(crate) fn hold(&mut self, call: Call) {
        self.held.push(call.reply);
    }

    /// Asserts that no request arrives within `within` (mock time, which this advances).
    pub(crate) async fn assert_quiet(&mut self, within: Duration) {
        if let Ok(Some((request, _))) =
            tokio::time::timeout(within, self.handle.next_request()).await
        {
            panic!("unexpected request {} {}", request.method(), request.uri());
        }
    }
}

// === impl Call ===

impl Call {
    /// `METHOD path`.
    pub(crate) fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    /// Answers with `code` and the JSON `body`.
    pub(crate) fn respond(self, code: u16, body: Value) {
        self.respond_bytes(code, body.to_string().into_bytes());
    }

    /// Answers 200 with the JSON `body`.
    pub(crate) fn ok(self, body: Value) {
        self.respond(200, body);
    }

    /// Answers with `code` and raw bytes (a watch stream: one JSON event per line).
    pub(crate) fn respond_bytes(self, code: u16, body: Vec<u8>) {
        let response = Response::builder()
            .status(code)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .expect("a response");
        self.reply.send_response(response);
    }
}

/// How [`ApiServer::serve`] answers one request.
pub(crate) enum Answer {
    /// This status and JSON body.
    Reply(u16, Value),
    /// Never: the request hangs.
    Hold,
}

/// A request [`ApiServer::serve`] answered: `METHOD path`, its query and body.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    /// `METHOD path`.
    pub(crate) line: String,
    /// The query's pairs.
    pub(crate) query: BTreeMap<String, String>,
    /// The body as JSON.
    pub(crate) body: Value,
}

impl ApiServer {
    /// Answers every request with `answer` until `task` ends; returns its output and the requests
    /// in order. For code that makes many requests whose order is not the point of the test.
    pub(crate) async fn serve<T>(
        &mut self,
        mut task: tokio::task::JoinHandle<T>,
        mut answer: impl FnMut(&Call) -> Answer,
    ) -> (T, Vec<Seen>) {
        let mut seen = Vec::new();
        let mut held = Vec::new();
        let done = loop {
            tokio::select! {
                biased;
                done = &mut task => break done.expect("the task under test panicked"),
                call = self.next() => {
                    seen.push(Seen { line: call.line(), query: call.query.clone(), body: call.body.clone() });
                    match answer(&call) {
                        Answer::Reply(code, body) => call.respond(code, body),
                        Answer::Hold => held.push(call.reply),
                    }
                }
            }
        };
        self.held.extend(held);
        (done, seen)
    }
}
