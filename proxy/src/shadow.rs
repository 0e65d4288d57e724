//! Shadow traffic with response comparison: a sampled share of the requests the active backend
//! serves is mirrored to the preview, fire-and-forget, and the two answers are compared.
//!
//! The client's request path pays for this only on a route with `shadow` ([`ShadowRule`]): a route
//! without it adds one `None` check per request (and one per frame of a request body, for the
//! [`RequestTee`] slot). For a mirrored request, [`start`] spawns the mirror task before
//! the request goes to the active backend, and returns a [`Mirror`] that the request path attaches
//! to the active backend's response ([`Mirror::attach`]): its body is then hashed frame by frame as
//! the client reads it ([`compare::Tap`], bounded by `max_body_bytes`) and handed to the task when it
//! ends. The task sends the request to the preview over the preview's pool, reads and hashes the
//! answer (bounded in bytes and by `shadow.timeout`), waits for the active backend's (bounded by
//! the same timeout), compares them and counts the outcome in the preview's [`ShadowStats`]. The
//! client never waits for the task, and the task never writes to the client. A bodiless idempotent
//! mirror reset before its response head (a pooled connection the preview closed as it was reused,
//! case C17) is sent once more on a fresh connection, as a live request is.
//!
//! A request body is kept frame by frame as it streams to the active backend ([`RequestTee`], in
//! `expect::ExpectBody`: shared frames, no copy, no delay) and sent to the preview whole when it
//! ended, up to `max_body_bytes`.
//!
//! Bounds: at most `max_in_flight` tasks per route (a sampled request past it is skipped), each
//! holding at most `max_body_bytes` of request body and one frame of each response body at a time,
//! for at most three times `timeout` (request body, preview's answer, active backend's answer). Mirrored
//! requests do not count in the preview's live counters (requests, errors, latency) nor in its
//! health, so they never move the rollout's live analysis or the breaker. Their own response
//! time (to the preview's head, or to its failure or timeout) is kept apart in the
//! [`ShadowStats`], for the shadow step's latency bounds.

pub(crate) mod compare;
mod stats;
#[cfg(test)]
mod tests;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderName;
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{HeaderValue, Method, Request, Response, Version};
use http_body_util::{BodyExt, Either, Full};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::body::ProxyBody;
use crate::config::ShadowConfig;
use crate::error::ErrorKind;
use crate::forward::{TableBackend, TableRoute};
use crate::upstream::{ResponseBody, Upstream, UpstreamBody};
use crate::weight::draw_bp;

use compare::{BoundedHash, Digest32, Observed, Tap};
pub(crate) use stats::ShadowPermit;
pub use stats::{MismatchKind, ShadowSnapshot, ShadowStats, SkipReason, SHADOW_ERROR_KINDS};

/// The header every mirrored request carries (value `1`), so a backend can tell shadow traffic
/// (and, for example, not send e-mails for it).
pub const SHADOW_HEADER: HeaderName = HeaderName::from_static("x-crossfade-shadow");

/// A route's [`ShadowConfig`] compiled for the request path (pure data, built with the table).
#[derive(Debug)]
pub struct ShadowRule {
    percent_bp: u32,
    headers: Box<[HeaderName]>,
    max_body_bytes: u64,
    max_in_flight: u32,
    timeout: Duration,
    methods: Box<[Method]>,
    ignore_paths: Box<[Box<str>]>,
    ignore_body_paths: Box<[Box<str>]>,
    log_per_minute: u32,
}

/// A mirrored request's link to its comparison, until the active backend's response is attached.
/// Boxed: every request's future holds an `Option<Mirror>`, one pointer wide, and only a
/// mirrored request (which spawns a task and copies its head anyway) pays for the rest.
#[derive(Debug)]
pub(crate) struct Mirror(Box<Pending>);

/// What [`Mirror`] holds.
#[derive(Debug)]
struct Pending {
    rule: Arc<ShadowRule>,
    done: oneshot::Sender<Observed>,
    /// When the request was dispatched to the active backend (its first attempt), for the active
    /// backend's time to its response head, paired with the preview's ([`ShadowStats`]).
    dispatched: Instant,
    /// The request body's upload state: with a body, the active backend is timed from its end
    /// when that came later, as the live request path times it.
    upload: Option<Arc<crate::upload::Upload>>,
}

/// What the mirror task knows of its request, for the mismatch log (no query, no headers but its
/// ID).
struct Context {
    route: Arc<str>,
    method: Method,
    path: Option<PathAndQuery>,
    /// The request's ID with `request_id` on, so that a mismatch can be found in both backends'
    /// logs.
    request_id: Option<http::HeaderValue>,
}

// === impl ShadowRule ===

impl ShadowRule {
    /// Compiles a validated config (invalid header names and methods are left out).
    pub fn of(config: &ShadowConfig) -> ShadowRule {
        let prefixes = |list: &[String]| list.iter().map(|p| p.as_str().into()).collect();
        ShadowRule {
            percent_bp: config.percent.bp(),
            headers: config
                .compare_headers
                .iter()
                .filter_map(|h| HeaderName::try_from(h.as_str()).ok())
                .collect(),
            max_body_bytes: config.max_body_bytes,
            max_in_flight: config.max_in_flight,
            timeout: config.timeout,
            methods: config
                .methods
                .iter()
                .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
                .collect(),
            ignore_paths: prefixes(&config.ignore.paths),
            ignore_body_paths: prefixes(&config.ignore.body_paths),
            log_per_minute: config.log_per_minute,
        }
    }

    /// Whether `path` is under one of `prefixes` (whole segments, as route prefixes match).
    fn under(prefixes: &[Box<str>], path: &str) -> bool {
        prefixes
            .iter()
            .any(|prefix| match path.strip_prefix(&**prefix) {
                None => false,
                Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
            })
    }
}

/// Decides whether a request the route sends to `served` is mirrored, and if so spawns the mirror
/// task. `parts` are the request as prepared for the upstream hop (hop-by-hop headers out,
/// forwarding headers in), `path` its path and `body` its body on the way to the active backend (a
/// streaming body gets a [`RequestTee`]); `forced` means the tester override picked the backend
/// (never mirrored); `request_ids`, with `request_id` on, names the header whose ID the mismatch
/// log gives. Counts a skip for a sampled request that cannot be mirrored.
#[allow(clippy::too_many_arguments)]
pub(crate) fn start(
    rule: &Arc<ShadowRule>,
    route: &TableRoute,
    served: &TableBackend,
    forced: bool,
    request_ids: Option<&crate::request_id::RequestIds>,
    parts: &Parts,
    path: &Option<PathAndQuery>,
    body: &mut UpstreamBody,
) -> Option<Mirror> {
    let active = route.active();
    let target = route.backend(active.other());
    let request_path = path.as_ref().map_or("/", PathAndQuery::path);
    if forced
        || served.slot() != active
        || target.endpoints().is_empty()
        || ShadowRule::under(&rule.ignore_paths, request_path)
        || draw_bp(crate::rng::thread_u32()) >= rule.percent_bp
    {
        return None;
    }
    let stats = target.upstream().stats();
    let skip = |reason| {
        stats.shadow().record_skip(reason);
        None
    };
    if !rule.methods.contains(&parts.method) {
        return skip(SkipReason::Method);
    }
    let Some(permit) = ShadowStats::enter(stats, rule.max_in_flight) else {
        return skip(SkipReason::Concurrency);
    };
    let Some(index) = crate::health::pick_endpoint(target, None) else {
        permit.stats().record_mirrored();
        permit.stats().record_error(Some(ErrorKind::ConnectError));
        return None;
    };
    let upstream = target.upstream();
    let mut request = mirrored_request(parts, upstream.uri(index, path.clone()));
    if parts.version == Version::HTTP_2 && upstream.version() == Version::HTTP_11 {
        crate::headers::join_cookie_crumbs(request.headers_mut());
    } else if parts.version < Version::HTTP_11 {
        crate::headers::default_host(request.headers_mut(), upstream.authority(index));
    }
    // Case C19, as for the live request (`forward::dispatch`): `TE` named in `Connection` to an
    // HTTP/1.1 preview, never over h2c. One lookup per mirrored request.
    if upstream.version() == Version::HTTP_11 {
        crate::headers::name_te_in_connection(request.headers_mut());
    }
    let request_body = match body {
        Either::Left(streaming) => {
            let (tee, copy) = RequestTee::new(rule.max_body_bytes);
            streaming.tee(tee);
            Some(copy)
        }
        Either::Right(_) => None,
    };
    let (done, active_answer) = oneshot::channel();
    let context = Context {
        route: Arc::clone(route.name()),
        method: parts.method.clone(),
        path: path.clone(),
        request_id: request_ids.and_then(|ids| parts.headers.get(ids.header()).cloned()),
    };
    let task = Task {
        rule: Arc::clone(rule),
        upstream: Arc::clone(upstream),
        permit,
        context,
        index,
    };
    tokio::spawn(task.run(request, request_body, active_answer));
    Some(Mirror(Box::new(Pending {
        rule: Arc::clone(rule),
        done,
        dispatched: Instant::now(),
        upload: crate::upload::of(body),
    })))
}

/// The request sent to the preview: the client's request as prepared for the active backend,
/// without a body yet and without `Expect` (its body is sent whole), marked with
/// [`SHADOW_HEADER`].
fn mirrored_request(parts: &Parts, uri: http::Uri) -> Request<UpstreamBody> {
    let mut request = Request::new(Either::Right(Full::default()));
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = parts.headers.clone();
    let headers = request.headers_mut();
    headers.remove(http::header::EXPECT);
    headers.insert(SHADOW_HEADER, HeaderValue::from_static("1"));
    request
}

/// A bodiless copy of `request`'s head (method, URI, version, headers), for a second attempt.
fn head_of(request: &Request<UpstreamBody>) -> Request<UpstreamBody> {
    let mut copy = Request::new(Either::Right(Full::default()));
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    copy
}

/// A copy of a mirrored request's body, kept frame by frame (no byte copied: frames are shared) as
/// the body streams to the active backend, and handed to the mirror task when it ends. Dropped,
/// with the task counting a skip (`request_body`), when the body goes past `max_body_bytes` or
/// fails.
#[derive(Debug)]
pub(crate) struct RequestTee {
    frames: Vec<Bytes>,
    len: u64,
    max: u64,
    done: oneshot::Sender<Bytes>,
}

impl RequestTee {
    fn new(max: u64) -> (RequestTee, oneshot::Receiver<Bytes>) {
        let (done, copy) = oneshot::channel();
        let tee = RequestTee {
            frames: Vec::new(),
            len: 0,
            max,
            done,
        };
        (tee, copy)
    }

    /// Keeps a frame's data; false once the body is over the bound.
    pub(crate) fn frame(&mut self, frame: &http_body::Frame<Bytes>) -> bool {
        let Some(data) = frame.data_ref() else {
            return true;
        };
        self.len = self.len.saturating_add(data.len() as u64);
        self.frames.push(data.clone());
        self.len <= self.max
    }

    /// The body ended: the mirror gets it whole.
    pub(crate) fn end(self) {
        let body = match self.frames.len() {
            1 => self.frames.into_iter().next().unwrap_or_default(),
            _ => Bytes::from(self.frames.concat()),
        };
        let _ = self.done.send(body);
    }
}

// === impl Mirror ===

impl Mirror {
    /// Hashes the active backend's response body as the client reads it, for the comparison.
    pub(crate) fn attach(self, response: Response<ProxyBody>) -> Response<ProxyBody> {
        let pending = *self.0;
        let (parts, body) = response.into_parts();
        let empty = http_body::Body::is_end_stream(&body);
        // The live path's reading of the same response time (`forward::attempted`), from the
        // first attempt on: what the client waited for the head.
        let head = crate::upload::response_time(pending.upload.as_deref(), pending.dispatched);
        let tap = Tap::new(
            parts.status,
            &parts.headers,
            &pending.rule.headers,
            pending.rule.max_body_bytes,
            head,
            pending.done,
        );
        // An empty body (a HEAD answer, 204, 304) is never polled: it ends here.
        if empty {
            tap.end();
            return Response::from_parts(parts, body);
        }
        Response::from_parts(parts, body.tapped(tap))
    }
}

// === the mirror task ===

struct Task {
    rule: Arc<ShadowRule>,
    upstream: Arc<Upstream>,
    permit: ShadowPermit,
    context: Context,
    /// The preview endpoint the request goes to.
    index: usize,
}

impl Task {
    async fn run(
        self,
        mut request: Request<UpstreamBody>,
        request_body: Option<oneshot::Receiver<Bytes>>,
        mut active_answer: oneshot::Receiver<Observed>,
    ) {
        let stats = self.permit.stats();
        let timeout = self.rule.timeout;
        let bodiless = request_body.is_none();
        if let Some(copy) = request_body {
            // The client's body, once it has gone to the active backend whole and within bounds.
            let Ok(Ok(body)) = tokio::time::timeout(timeout, copy).await else {
                return stats.record_skip(SkipReason::RequestBody);
            };
            *request.body_mut() = Either::Right(Full::new(body));
        }
        stats.record_mirrored();
        let deadline = Instant::now() + timeout;
        let preview = match self.fetch(request, bodiless, deadline).await {
            Ok(observed) => observed,
            Err((kind, head)) => {
                // The active backend's answer, if it came whole by now (not waited for: the
                // preview's exchange is over). With the preview's time to its head (or to the
                // deadline, when none came), the two times pair.
                let active = active_answer.try_recv().ok();
                if let (Some(active), Some(head)) = (&active, head) {
                    stats.record_pair(active.head, head);
                }
                // The preview's answer did not come whole within `timeout`, and neither had the
                // active backend's by then (an endpoint slow by nature, a long download, a slow
                // client): no evidence against the preview, which is timed already
                // (`ShadowStats::latency`). Counted as its error, it failed the shadow step's
                // `max_error_rate` for answering exactly as blue does (check33).
                if kind == Some(ErrorKind::ResponseTimeout) && active.is_none() {
                    return stats.record_skip(SkipReason::PrimaryIncomplete);
                }
                return stats.record_error(kind);
            }
        };
        let Ok(Ok(active)) = tokio::time::timeout(timeout, active_answer).await else {
            return stats.record_skip(SkipReason::PrimaryIncomplete);
        };
        stats.record_pair(active.head, preview.head);
        let path = self.context.path.as_ref().map_or("/", PathAndQuery::path);
        let compare_body = !ShadowRule::under(&self.rule.ignore_body_paths, path);
        match compare::compare(&active, &preview, compare_body) {
            Ok(kinds) => {
                stats.record_comparison(&kinds);
                if !kinds.is_empty() && stats.may_log(minute(), self.rule.log_per_minute) {
                    self.log(&kinds, &active, &preview);
                }
            }
            Err(reason) => stats.record_skip(reason),
        }
    }

    /// Sends the mirrored request and reads the answer: its head, and its body hashed up to the
    /// bound (past it the body is dropped, which closes the connection), both by `deadline`
    /// (`shadow.timeout` after sending: past it `response_timeout`). The error is `None` for a
    /// body that failed mid-stream.
    ///
    /// The time from sending to the response head, or to the failure or the deadline when no
    /// head came, is the preview's latency sample ([`ShadowStats::latency`]), as the live request
    /// path records its own: a preview that fails or never answers is timed too, never left out.
    ///
    /// The error carries the kind and the preview's time to its response head when one came (its
    /// body failed or overran the deadline after it), or the time to the deadline when no head
    /// came by it (at least `shadow.timeout`: a lower bound); `None` for a transport failure
    /// before any head, which says nothing of the preview's speed.
    ///
    /// A `bodiless` request of an idempotent method that fails with a reset before its response
    /// head (typically a pooled keep-alive connection that green closed just as it was reused,
    /// case C17) is sent once more, on a fresh connection, under the rule of the live request
    /// path (`forward::retry_target`): green's keep-alive close is not green failing, and is
    /// counted as no error, but as a re-send (`crossfade_shadow_resent_total`, as the live path
    /// counts its own in `crossfade_retries_total`). A request with a body is never sent twice.
    async fn fetch(
        &self,
        request: Request<UpstreamBody>,
        bodiless: bool,
        deadline: Instant,
    ) -> Result<Observed, (Option<ErrorKind>, Option<Duration>)> {
        let timed_out = Some(ErrorKind::ResponseTimeout);
        let again =
            (bodiless && crate::forward::idempotent(request.method())).then(|| head_of(&request));
        let wait = self.permit.stats().sent();
        let head = async {
            match self.send(request).await {
                Err(failed) if failed.kind == ErrorKind::Reset => match again {
                    Some(again) => {
                        self.permit.stats().record_resent();
                        self.send(again).await
                    }
                    None => Err(failed),
                },
                sent => sent,
            }
        };
        let head = tokio::time::timeout_at(deadline, head).await;
        let took = wait.answered();
        let response = head
            .map_err(|_elapsed| (timed_out, Some(took)))?
            .map_err(|e| (Some(e.kind), None))?;
        let (parts, mut body) = response.into_parts();
        // Green's pooled connection is the live requests' too: its `Keep-Alive` counts for them
        // (case C17, `upstream::keep_alive`). One lookup per mirrored response.
        if let Some(keep_alive) = parts.headers.get(crate::headers::KEEP_ALIVE) {
            body.keep_alive(keep_alive);
        }
        let body = tokio::time::timeout_at(deadline, self.hash(body))
            .await
            .map_err(|_elapsed| (timed_out, Some(took)))?
            .map_err(|kind| (kind, Some(took)))?;
        Ok(Observed {
            status: parts.status,
            headers: compare::pick_headers(&parts.headers, &self.rule.headers),
            body,
            head: took,
        })
    }

    /// One attempt of `request` to the mirror's endpoint. A mirror's 1xx responses reach no
    /// client, as its final one does not.
    async fn send(
        &self,
        request: Request<UpstreamBody>,
    ) -> Result<http::Response<ResponseBody>, crate::upstream::SendError> {
        let now = tokio::time::Instant::now();
        self.upstream.send(self.index, request, now, None).await
    }

    async fn hash(&self, mut body: ResponseBody) -> Result<Digest32, Option<ErrorKind>> {
        let mut hash = BoundedHash::new(self.rule.max_body_bytes);
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| None)?;
            if let Some(data) = frame.data_ref() {
                hash.update(data);
                if hash.too_large() {
                    break;
                }
            }
        }
        Ok(hash.finish())
    }

    fn log(&self, kinds: &[MismatchKind], active: &Observed, preview: &Observed) {
        let c = &self.context;
        let kinds: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
        let headers = compare::differing_headers(&self.rule.headers, active, preview);
        tracing::info!(
            route = %c.route,
            method = %c.method,
            path = c.path.as_ref().map_or("/", PathAndQuery::path),
            request_id = c.request_id.as_ref().and_then(|id| id.to_str().ok()),
            differs = ?kinds,
            active_status = active.status.as_u16(),
            preview_status = preview.status.as_u16(),
            headers = ?headers,
            active_body = %compare::describe(active.body),
            preview_body = %compare::describe(preview.body),
            "shadow answer differs"
        );
    }
}

/// Minutes since the first call in this process (for the mismatch log's rate limit).
fn minute() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_secs() / 60
}
