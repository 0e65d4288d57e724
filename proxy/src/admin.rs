//! The admin API, on its own listener (default `127.0.0.1:9901`): status, weights, metrics, health.
//!
//! | method and path | answer |
//! |---|---|
//! | `GET /status` | [`Status`](crate::Status) as JSON |
//! | `PUT /routes/{route}/weights[?force=true]` | `{route}` as named, `/` included (`shop/web`), or percent-encoded (`shop%2Fweb`); body `{"blue": 9000, "green": 1000}` (numbers are basis points) or `{"blue": "90%", "green": "10%"}`; one side may be omitted and gets the rest. 200 `{"generation": N, "weights": {...}}` (with a `"note"` for a lone bare side of 1 to 100, read as basis points, and for both weights 0, which disables the route: every request on it gets 503), 400 or 404 `{"error": ..., "field": ...}` (the first wrong field; when several are wrong, also `"problems": [{"path": "blue", "message": ...}, {"path": "green", ...}]` listing each, as a refused config lists its problems), 409 `{"error": ..., "owner": {"rollout": N}}` while a rollout owns the route (see [`crate::owner`]) unless `force=true`, 503 with `Retry-After: 1` and `{"error": "a binary upgrade is handing over to pid N: ...", "handover": {"pid": N}}` once this process has handed its routes to a successor ([`crate::handover`]; retry: the successor answers on the same address) |
//! | `GET /metrics` | the registry, then `crossfade_build_info` and the `process_*` metrics ([`crate::process`]): OpenMetrics 1.0 text when `Accept` names `application/openmetrics-text` (as Prometheus does), else the Prometheus text format 0.0.4 ([`crate::exposition`]); `Vary: Accept` |
//! | `GET /healthz` | 200 while the process lives |
//! | `GET /readyz` | 200 `ready` once serving, with the first health probe round of the start over ([`Status::first_probes_pending`](crate::Status::first_probes_pending)), and with every weighted backend holding a configured endpoint, else 503 with the reason; endpoint health does not count: a route whose endpoints are all down, or that is disabled (both weights 0), is listed as `unserved: route NAME: ...` in the 200 answer ([`Status::unserved`](crate::Status::unserved)) |
//! | anything else | the [`AdminExtension`], else 404 `{"error": "GET /x: not an admin endpoint (this one serves ...)", "endpoints": [...]}`; on a `crossfade proxy` admin API a `/rollout` path is told that rollouts need `crossfade run`'s admin address |
//!
//! `HEAD` is answered wherever `GET` is, without the body (RFC 9110 §9.3.2). A known path asked
//! with a method it does not serve gets 405 with an `Allow` header listing the ones it does (RFC
//! 9110 §15.5.6); a body over 64 KiB gets 413 (RFC 9110 §15.5.14), and one with a content coding
//! other than `identity` 415 (RFC 9110 §15.5.16).
//!
//! With a token ([`AdminAuth`], required on a non-loopback address) every request but `GET /healthz`
//! and `GET /readyz` needs `Authorization: Bearer <token>`, else 401 with a `WWW-Authenticate:
//! Bearer` challenge (RFC 6750 §3).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::header::{ALLOW, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use prometheus_client::registry::Registry;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::error::{Error, Result};
use crate::exposition::Format;
use crate::handle::Proxy;

mod auth;
mod guard;
mod room;
pub(crate) mod weights;

pub use auth::{AdminAuth, AdminAuthError, MIN_REMOTE_TOKEN_BYTES};
pub use guard::serve_guarded;

/// Largest admin request body read, in bytes.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Extra admin commands (the controller's `/rollout` commands), tried for any path the admin API
/// does not know.
pub trait AdminExtension: Send + Sync + 'static {
    /// Handles a request: `path` is the request path with its query string, `body` the whole body
    /// (at most 64 KiB). `None` means "not mine" and the client gets 404.
    fn handle(
        &self,
        method: Method,
        path: String,
        body: Bytes,
    ) -> BoxFuture<'static, Option<AdminReply>>;
}

/// An admin answer: a status and a JSON body.
#[derive(Clone, Debug, PartialEq)]
pub struct AdminReply {
    /// The HTTP status.
    pub status: StatusCode,
    /// The JSON body.
    pub body: serde_json::Value,
    /// With a 405: the methods the path serves, sent as the `Allow` header (RFC 9110 §10.2.1).
    pub allow: Option<&'static str>,
    /// With a 503: when to ask again, in seconds, sent as the `Retry-After` header (RFC 9110
    /// §10.2.3).
    pub retry_after: Option<u32>,
}

/// Seconds a client is asked to wait (`Retry-After`) before it repeats a route change refused
/// during a binary upgrade's handover: the successor is ready within a moment, and the admin
/// address is the same.
pub const HANDOVER_RETRY_AFTER_SECS: u32 = 1;

/// Everything one admin request handler needs.
struct Admin {
    proxy: Proxy,
    registry: Arc<Registry>,
    extension: Option<Arc<dyn AdminExtension>>,
    auth: AdminAuth,
    /// How long a request body may take to arrive in full (`limits.header_read_timeout`).
    body_timeout: Duration,
}

/// Serves the admin API on `listener` until `shutdown` completes, then lets open admin requests
/// finish (at most the proxy's `drain_timeout`). `auth` decides who may use it (see [`AdminAuth`]).
///
/// The traffic listener's `limits` protect it too: at most `limits.max_admin_connections`
/// connections are served. At that limit a new connection takes the place of the one that has
/// waited longest for a request (silent since it connected, or idle between keep-alive
/// requests), which is closed ([`serve_guarded`], nginx's rule for idle keep-alive connections): idle
/// connections, however many, never keep `GET /healthz` and `GET /readyz` from answering. Only
/// when every admin connection has a request in flight is a new one shed (the policy of
/// [`crate::limits`]: `503` with `Retry-After`, then no more accepts past the shed allowance).
/// A connection that sends no
/// complete request head within `limits.header_read_timeout` (on connect, and idle between
/// keep-alive requests) is closed; a request body that does not arrive in full within
/// `limits.header_read_timeout` gets `408 Request Timeout` (RFC 9110 §15.5.9) and the connection
/// is closed; a head over `limits.max_header_bytes` gets 431 (RFC 6585 §5).
///
/// # Errors
/// None today: accept errors are logged and retried.
pub async fn serve_admin(
    proxy: Proxy,
    registry: Arc<Registry>,
    extension: Option<Arc<dyn AdminExtension>>,
    auth: AdminAuth,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let drain_timeout = proxy.shared.drain_timeout;
    let config = proxy.shared.limits.config.clone();
    let admin = Arc::new(Admin {
        proxy,
        registry,
        extension,
        auth,
        body_timeout: config.header_read_timeout,
    });
    let handle = move |request| {
        let admin = Arc::clone(&admin);
        async move { admin.handle(request).await }
    };
    serve_guarded("admin", &config, listener, handle, drain_timeout, shutdown).await;
    Ok(())
}

// === impl Admin ===

impl Admin {
    async fn handle(&self, mut request: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = request.uri().path().to_owned();
        // HEAD is GET without the body (RFC 9110 §9.3.2): hyper leaves the body out of the answer.
        if request.method() == Method::HEAD {
            *request.method_mut() = Method::GET;
        }
        let probe =
            request.method() == Method::GET && matches!(path.as_str(), "/healthz" | "/readyz");
        if !probe {
            if let Err((answer, challenge)) = self.auth.check(request.headers()) {
                let mut response = reply(answer);
                response.headers_mut().insert(WWW_AUTHENTICATE, challenge);
                return response;
            }
        }
        if let Some(route) = weights::route_of(&path) {
            if request.method() != Method::PUT {
                return reply(AdminReply::not_allowed("PUT"));
            }
            let writer = match weights::writer(request.uri().query()) {
                Ok(writer) => writer,
                Err(error) => return reply(error),
            };
            return match read_body(request, self.body_timeout).await {
                Ok(body) => reply(weights::put(&self.proxy, &route, &body, writer)),
                Err(error) => reply(error),
            };
        }
        match (request.method(), path.as_str()) {
            (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n".to_owned()),
            (&Method::GET, "/readyz") => self.readyz(),
            (&Method::GET, "/status") => json_response(StatusCode::OK, &self.proxy.status()),
            (&Method::GET, "/metrics") => metrics(request.headers(), &self.registry),
            (_, "/healthz" | "/readyz" | "/status" | "/metrics") => {
                reply(AdminReply::not_allowed("GET, HEAD"))
            }
            _ => self.extension(request).await,
        }
    }

    fn readyz(&self) -> Response<Full<Bytes>> {
        let status = self.proxy.status();
        match status.not_ready_reason() {
            None => {
                let mut answer = "ready\n".to_owned();
                for line in status.unserved() {
                    answer.push_str(&format!("unserved: {line}\n"));
                }
                text(StatusCode::OK, answer)
            }
            Some(reason) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
        }
    }

    async fn extension(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let method = request.method().clone();
        let Some(extension) = self.extension.clone() else {
            return reply(not_found(&method, &target(request.uri()), false));
        };
        let bare = target(request.uri());
        let path = request
            .uri()
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
        let body = match read_body(request, self.body_timeout).await {
            Ok(body) => body,
            Err(error) => return reply(error),
        };
        match extension.handle(method.clone(), path, body).await {
            Some(answer) => reply(answer),
            None => reply(not_found(&method, &bare, true)),
        }
    }
}

/// Reads the whole request body: at most [`MAX_BODY_BYTES`] (else 413), without a key repeated in
/// one JSON object ([`crate::de::duplicate_json_key`], else 400 naming it), within `timeout` (else 408,
/// RFC 9110 §15.5.9: the client stopped short of its announced length or never ended its chunks).
async fn read_body(request: Request<Incoming>, timeout: Duration) -> Result<Bytes, AdminReply> {
    if let Some(coding) = content_coding(&request) {
        return Err(AdminReply::error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Content-Encoding: {coding}: the admin API reads bodies as sent (identity, RFC \
                 9110 §8.4.1); send the JSON uncompressed"
            ),
            None,
        ));
    }
    // A `Content-Length` over the limit is refused at once, before a byte of the body is read
    // (trial 17, T7: it was read up to the limit, or waited for until `timeout` and answered 408).
    let announced = hyper::body::Body::size_hint(request.body()).lower();
    if announced > MAX_BODY_BYTES as u64 {
        return Err(AdminReply::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body is over the limit of {MAX_BODY_BYTES} bytes (Content-Length: \
                 {announced})"
            ),
            None,
        ));
    }
    let collect = Limited::new(request.into_body(), MAX_BODY_BYTES).collect();
    let Ok(collected) = tokio::time::timeout(timeout, collect).await else {
        return Err(AdminReply::error(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive in full within {} (limits.header_read_timeout)",
                crate::duration::show(timeout)
            ),
            None,
        ));
    };
    match collected {
        Ok(collected) => {
            let body = collected.to_bytes();
            // Here, before any handler reads it: every JSON body of the admin API (weights,
            // rollout commands, extensions) is refused in the same words.
            match crate::de::duplicate_json_key(&body) {
                Some(key) => Err(AdminReply::error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "key {key:?} appears twice in the JSON body; give each key once (a \
                         repeated key would be read as the last one and the others ignored)"
                    ),
                    Some(&key),
                )),
                None => Ok(body),
            }
        }
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => Err(AdminReply::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is over the limit of {MAX_BODY_BYTES} bytes"),
            None,
        )),
        Err(error) => Err(AdminReply::error(
            StatusCode::BAD_REQUEST,
            format!("cannot read body: {error}"),
            None,
        )),
    }
}

/// The request's content coding when it has one other than `identity` (RFC 9110 §8.4): a
/// compressed body was read as JSON as it stood and refused as "not valid JSON: expected value
/// at line 1 column 1", and a body merely labelled `gzip` was taken; 415 says what is wrong
/// (RFC 9110 §15.5.16).
fn content_coding(request: &Request<Incoming>) -> Option<String> {
    let codings = request
        .headers()
        .get_all(http::header::CONTENT_ENCODING)
        .iter()
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        .collect::<Vec<_>>()
        .join(", ");
    let other = codings
        .split(',')
        .map(str::trim)
        .any(|c| !c.is_empty() && !c.eq_ignore_ascii_case("identity"));
    other.then_some(codings)
}

// === impl AdminReply ===

impl AdminReply {
    /// An error answer: `{"error": message}` plus `"field"` when one field is at fault.
    pub fn error(
        status: StatusCode,
        message: impl Into<String>,
        field: Option<&str>,
    ) -> AdminReply {
        let mut body = json!({ "error": message.into() });
        if let (Some(field), Some(object)) = (field, body.as_object_mut()) {
            object.insert("field".to_owned(), Value::from(field));
        }
        AdminReply::new(status, body)
    }

    /// An answer with no `Allow` header.
    pub fn new(status: StatusCode, body: serde_json::Value) -> AdminReply {
        AdminReply {
            status,
            body,
            allow: None,
            retry_after: None,
        }
    }

    /// 405 Method Not Allowed for a path that serves only `allow` (e.g. `"GET, HEAD, POST"`),
    /// sent as the `Allow` header too (RFC 9110 §15.5.6).
    pub fn not_allowed(allow: &'static str) -> AdminReply {
        let message = format!("method not allowed (use {allow})");
        let mut reply = AdminReply::error(StatusCode::METHOD_NOT_ALLOWED, message, None);
        reply.allow = Some(allow);
        reply
    }

    /// The answer for a control-path error: 404 for an unknown route, 409 for a route a rollout
    /// owns (with `"owner"` and what to do instead), 503 with `Retry-After` during a binary
    /// upgrade's handover (with `"handover": {"pid": N}`, the successor's pid, `null` when
    /// unknown), 400 otherwise, listing config problems one by one.
    pub fn from_error(error: &Error) -> AdminReply {
        let status = match error {
            Error::UnknownRoute(_) => StatusCode::NOT_FOUND,
            Error::Owned { .. } => StatusCode::CONFLICT,
            Error::HandingOver { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::WeightsNotSaved(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        if let Error::HandingOver { successor } = error {
            let mut reply = AdminReply::error(status, error.to_string(), None);
            if let Some(object) = reply.body.as_object_mut() {
                object.insert("handover".to_owned(), json!({ "pid": successor }));
            }
            reply.retry_after = Some(HANDOVER_RETRY_AFTER_SECS);
            return reply;
        }
        if let Error::Owned { owner, .. } = error {
            // Only commands the rollout accepts now: after its promotion it can be neither paused
            // nor aborted, and it sets no more weights.
            let message = if owner.promoted {
                format!(
                    "{error}: it has promoted its preview and is retiring the other backend; wait \
                     until it has completed (`crossfade status`), when the route's weights are \
                     the operator's again, or repeat with ?force=true to override it"
                )
            } else {
                format!(
                    "{error}: steer the rollout instead (`crossfade pause` holds the weights, \
                     `crossfade abort` sends all traffic back to the active backend), or repeat \
                     with ?force=true to override it until its next step"
                )
            };
            let mut reply = AdminReply::error(status, message, None);
            if let Some(object) = reply.body.as_object_mut() {
                object.insert("owner".to_owned(), json!(owner));
            }
            return reply;
        }
        let mut reply = AdminReply::error(status, error.to_string(), None);
        if let (Error::Config(config), Some(object)) = (error, reply.body.as_object_mut()) {
            let problems = serde_json::to_value(config.problems()).unwrap_or_default();
            object.insert("problems".to_owned(), problems);
        }
        reply
    }
}

/// The endpoints every admin API serves, for a 404's list.
const PROXY_ENDPOINTS: [&str; 5] = [
    "GET /status",
    "PUT /routes/{route}/weights",
    "GET /metrics",
    "GET /healthz",
    "GET /readyz",
];

/// The endpoints of `crossfade run`'s extension (the controller's rollout commands).
const ROLLOUT_ENDPOINTS: [&str; 4] = [
    "GET /rollout",
    "GET /rollout/report",
    "POST /rollout",
    "POST /rollout/{pause,resume,promote,abort,force-abort}",
];

/// 404 for a path no one serves: `{"error": ..., "endpoints": [...]}` naming the request and
/// listing what this server serves. Without an extension (a `crossfade proxy` admin API), a
/// `/rollout` path is told that rollouts are `crossfade run`'s, whose admin address the rollout
/// commands need.
/// The request target as a 404 names it: its path, or the whole target when it has none (a
/// `CONNECT host:port` was named `CONNECT : not an admin endpoint`).
fn target(uri: &http::Uri) -> String {
    match uri.path() {
        "" => uri.to_string(),
        path => path.to_owned(),
    }
}

fn not_found(method: &Method, path: &str, extension: bool) -> AdminReply {
    let mut endpoints: Vec<&str> = PROXY_ENDPOINTS.to_vec();
    if extension {
        endpoints.extend(ROLLOUT_ENDPOINTS);
    }
    let list = endpoints.join(", ");
    let message = if !extension && (path == "/rollout" || path.starts_with("/rollout/")) {
        format!(
            "{method} {path}: this is a `crossfade proxy` admin API, which has no rollouts; \
             `crossfade status`, `pause`, `resume`, `promote`, `abort` and `migrate` need the admin \
             address of `crossfade run` (this one serves {list})"
        )
    } else {
        format!("{method} {path}: not an admin endpoint (this one serves {list})")
    };
    let mut reply = AdminReply::error(StatusCode::NOT_FOUND, message, None);
    if let Some(object) = reply.body.as_object_mut() {
        object.insert("endpoints".to_owned(), json!(endpoints));
    }
    reply
}

fn reply(reply: AdminReply) -> Response<Full<Bytes>> {
    let mut response = json_response(reply.status, &reply.body);
    if reply.status == StatusCode::REQUEST_TIMEOUT {
        // The rest of the body may still come: close rather than read it as the next request.
        let close = HeaderValue::from_static("close");
        response
            .headers_mut()
            .insert(http::header::CONNECTION, close);
    }
    if let Some(allow) = reply.allow {
        let allow = HeaderValue::from_static(allow);
        response.headers_mut().insert(ALLOW, allow);
    }
    if let Some(seconds) = reply.retry_after {
        response
            .headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// The answer to a `GET /metrics` with request headers `headers`: `registry` and this process's
/// own metrics ([`crate::process::encode`]) in the format `Accept` asks for
/// ([`Format::negotiate`]), with `Vary: Accept` (RFC 9110 §12.5.5: the answer depends on it), or
/// 500 when encoding fails. The controller's metrics listener answers with it too.
pub fn metrics(headers: &http::HeaderMap, registry: &Registry) -> Response<Full<Bytes>> {
    let format = Format::negotiate(headers);
    let mut out = String::new();
    if let Err(error) = crate::process::encode(&mut out, registry, format) {
        tracing::warn!(%error, "encoding metrics failed");
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics encoding failed\n".into(),
        );
    }
    let mut response = Response::new(Full::new(Bytes::from(out)));
    let content_type = HeaderValue::from_static(format.content_type());
    response.headers_mut().insert(CONTENT_TYPE, content_type);
    let vary = HeaderValue::from_static("accept");
    response.headers_mut().insert(http::header::VARY, vary);
    response
}

fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response<Full<Bytes>> {
    let mut bytes = serde_json::to_vec_pretty(body).unwrap_or_default();
    bytes.push(b'\n');
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    let content_type = HeaderValue::from_static("application/json");
    response.headers_mut().insert(CONTENT_TYPE, content_type);
    response
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let content_type = HeaderValue::from_static("text/plain; charset=utf-8");
    response.headers_mut().insert(CONTENT_TYPE, content_type);
    response
}
