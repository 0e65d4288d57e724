//! The request path, in the order a request takes it: match route → pick backend by weight → pick
//! endpoint (`balance`) → forward → respond; plus the single safe retry and the one place where
//! errors become responses.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{CONTENT_TYPE, HOST, SET_COOKIE};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::Body as _;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use tokio::task::coop;
use tokio::time::Instant;

use crate::body::ProxyBody;
use crate::error::{BoxError, Error, ErrorKind};
use crate::expect::{self, Expectation};
use crate::handle::Table;
use crate::headers::{
    set_forwarded_scanned, strip_request_hop_by_hop, strip_response_hop_by_hop, RequestNames,
};
use crate::limits::{ClientBodyFailure, Limited, RequestPlace};
use crate::server::Conn;
use crate::sticky::{self, Assignment};
use crate::table::Backend;
use crate::tunnel;
use crate::upstream::{Deadlined, ResponseBody, SendError, Upstream, UpstreamBody};
use crate::{grpc, health, table};

pub(crate) type TableBackend = Backend<Arc<Upstream>>;
pub(crate) type TableRoute = table::Route<Arc<Upstream>>;

/// Answers one client request. Never fails: every error becomes a response here. The response's
/// body holds `permit` (the request's place under `limits.max_requests`) and `conn` until it ends
/// ([`Limited`]).
///
/// Takes the connection's `Arc` (not a borrow) so that the caller can box this future as it is.
/// The request waits in a box of its own until the first poll, where [`forward`] takes it apart:
/// held by value, its 264 bytes would stay in the future's state for the future's whole life
/// (what an `async` block captures keeps its place), and that state is allocated per request. With
/// the box, and the request taken out of it in a scope that ends before the await, the request
/// path's future is about 850 bytes rather than 1,110, which glibc's malloc serves from its
/// per-thread cache (up to 1,032 bytes) instead of its bins; the request's own box is freed at once
/// (docs/bench-2026-11-30-instructions.md, docs/bench-2026-12-01d-instructions.md).
///
/// The `Result` (never an error) is what hyper's service wants, given here so that no combinator
/// moves the response once more to wrap it.
pub(crate) fn handle(
    conn: Arc<Conn>,
    request: Request<Incoming>,
    permit: RequestPlace,
) -> impl Future<Output = Result<Response<Limited>, Infallible>> + Send {
    let mut request = Box::new(request);
    async move {
        // One load per request; the snapshot is kept to the end, so a concurrent change never
        // shows half-applied.
        let table = conn.shared.table.load_full();
        // The access log's line, when it is on (`access`): a branch when it is off.
        let mut log_line = crate::access::Pending::OFF;
        // The request lives in this block only, which ends before the await: a local that was
        // borrowed (here by the gRPC check) keeps its room in the future's state to the end of
        // its scope, even after it was moved away; in the block's scope it kept 264 bytes there.
        // The request stays in its box until `forward` takes it apart (and frees the box): taken
        // out here first, it was copied twice more (~100 instructions per request,
        // docs/bench-2026-12-03e-task-box.md).
        let (grpc, pending, forwarding, request_id) = {
            // The request's ID, when `request_id` is on: stamped before anything reads the
            // headers, so that the attempt, a retry and a shadow copy carry it.
            let request_id =
                (conn.shared.request_ids.as_ref()).map(|ids| ids.stamp(request.headers_mut()));
            if let Some(log) = &conn.shared.access {
                log_line = log.begin(&conn.peer, &*request, request_id.as_ref());
            }
            // Read before the request is taken apart: a gRPC client gets its errors as gRPC
            // statuses. gRPC runs over HTTP/2 only, so HTTP/1.x requests skip the header lookup.
            let grpc = request.version() == Version::HTTP_2 && grpc::is_grpc(request.headers());
            // An answer after an attempt may leave part of the body unread (`unread`).
            let pending = crate::unread::pending(request.version(), request.body());
            let forwarding = forward(&conn, &table, request, grpc, &mut log_line);
            (grpc, pending, forwarding, request_id)
        };
        let (mut parts, body) = match forwarding.await {
            Ok(response) => response.into_parts(),
            Err(error) => {
                conn.shared.local.count_error(&error);
                log_line.failed(&error);
                let mut response = error_response(&error, grpc);
                if pending {
                    crate::unread::close(&mut response);
                }
                if let Error::Overloaded(_) = error {
                    conn.shared.limits.advise_retry(&mut response);
                }
                response.into_parts()
            }
        };
        if let (Some(id), Some(ids)) = (&request_id, &conn.shared.request_ids) {
            ids.answer(&mut parts.headers, id);
        }
        log_line.respond(&mut parts);
        Ok(Response::from_parts(
            parts,
            Limited::new(body, Some(permit), Some(conn), log_line),
        ))
    }
}

/// Everything up to the first attempt happens when this is called; the future it returns waits for
/// that attempt (and a retry, if any). Not an `async fn`: an `async` body would keep the request as
/// its argument for its whole life and hold every local that lives across an await beside the
/// attempt's future; this one ([`Forward`]) holds the attempt's future and what [`finish`] and a
/// retry need (docs/bench-2026-11-30-instructions.md), in one hand-written state machine rather
/// than a nest of combinators, so that the response is moved once on its way out
/// (docs/bench-2026-12-01b-instructions.md).
///
/// `log` is the request's access log line: each attempt records where it went as it is sent
/// ([`crate::access::Pending::dispatched`]), so that a line whose client goes away while the
/// attempt waits names it. Held by the future (a reference, for a retry) until it resolves.
fn forward<'t>(
    conn: &'t Arc<Conn>,
    table: &'t Table,
    request: Box<Request<Incoming>>,
    grpc: bool,
    log: &'t mut crate::access::Pending,
) -> impl Future<Output = Result<Response<ProxyBody>, Error>> + Send + 't {
    let (mut parts, body) = (*request).into_parts();
    // hyper applied HTTP/1's head limits already; HTTP/2 gets the same here (`limits::head`).
    if parts.version == Version::HTTP_2 {
        let max = conn.shared.limits.config.max_header_bytes;
        if let Err(e) = crate::limits::head::check(&parts, max) {
            return Forward::ready(Err(e));
        }
    }
    // Matched and forwarded in normal form (see `path`): what the route matched is what the
    // backend serves.
    if let Err(e) = crate::path::normalize_uri(&mut parts.uri) {
        return refuse(conn, &parts, body, Error::BadRequest(e.as_str()), grpc);
    }
    // The asterisk form is for a server-wide OPTIONS alone (RFC 9112 §3.2.4, RFC 9113 §8.3.1):
    // `GET *` or `PRI * HTTP/1.1` is a malformed request, not a path no route matches (404).
    if parts.uri.path() == "*" && parts.method != http::Method::OPTIONS {
        let refused = "the asterisk-form request-target is for OPTIONS only (RFC 9112 §3.2.4)";
        return refuse(conn, &parts, body, Error::BadRequest(refused), grpc);
    }
    let selected = match select(conn, table, &parts) {
        Ok(selected) => selected,
        Err(Unselected::Refused(error)) => return refuse(conn, &parts, body, error, grpc),
        // Only while endpoints await their first probe (see `health::first_probes`): boxed, so
        // that the wait adds nothing to every request's future.
        Err(Unselected::FirstProbes(awaited)) => {
            let waiting = after_first_probes(conn, table, (parts, body), grpc, log, awaited);
            return Forward::Boxed {
                future: Box::pin(waiting),
            };
        }
    };
    forward_selected(conn, (parts, body), grpc, log, selected)
}

/// A request that found no backend able to serve while endpoints it could use await their
/// first probe: it waits for them (at most the route's `health.timeout` and a little more, see
/// [`health::first_probes`]), then is selected again and forwarded, or answered 503 "no
/// endpoint" when still no backend can serve. Nothing was read of its body meanwhile.
async fn after_first_probes<'t>(
    conn: &'t Arc<Conn>,
    table: &'t Table,
    (parts, body): (Parts, Incoming),
    grpc: bool,
    log: &'t mut crate::access::Pending,
    awaited: Awaited<'t>,
) -> Answered {
    health::first_probes(awaited.route, awaited.picked, awaited.forced).await;
    match select(conn, table, &parts) {
        Ok(selected) => forward_selected(conn, (parts, body), grpc, log, selected).await,
        Err(unselected) => {
            let error = unselected.into_error();
            Ok(refused(conn, &parts, body, error, grpc))
        }
    }
}

/// [`forward`] once the request's route and backend are selected: everything up to the first
/// attempt, and the future that waits for it.
fn forward_selected<'t>(
    conn: &'t Arc<Conn>,
    (mut parts, body): (Parts, Incoming),
    grpc: bool,
    log: &'t mut crate::access::Pending,
    (route, assigned): Selected<'t>,
) -> Forward<'t, impl Future<Output = Result<Response<ProxyBody>, Failure>> + Send + 't> {
    // One pass over the header names for what the proxy looks up later (`headers::RequestNames`):
    // a request without a `Via` line skips the loop check's lookup.
    let names = RequestNames::scan(&parts.headers);
    if let Some(via) = conn.shared.via().filter(|_| names.via()) {
        if via.looped(&parts.headers) {
            return refuse(conn, &parts, body, looped(via, route), grpc);
        }
    }
    let (backend, forced) = (assigned.backend, assigned.forced);
    if let Some(header) = route.override_header() {
        parts.headers.remove(header);
    }
    // An upgrade request with content is served as an ordinary one, its `Upgrade` stripped (RFC
    // 9110 §7.8 lets a server ignore the offer): a backend's 101 may come before the proxy sent
    // the content, and the tunnel then carried the rest of it in its HTTP/1.1 framing (chunk
    // sizes and all) while what was already read was lost.
    let upgrade = tunnel::requested(&parts).filter(|_| body.is_end_stream());
    if let Some((protocol, handshake)) = upgrade {
        if let Some(client) = parts.extensions.remove::<OnUpgrade>() {
            let set_cookie = assigned.set_cookie;
            let upgrade = tunnel::Upgrade {
                client,
                protocol,
                handshake,
                forced,
                fail_open: assigned.fail_open,
            };
            // Boxed: the rare upgrade would otherwise grow every request's future (which hyper
            // keeps allocated for the connection's life) by its connect and handshake state.
            let request = (parts, body);
            let tunnel = tunnel::forward(conn, route, backend, request, upgrade, set_cookie, log);
            return Forward::Boxed {
                future: Box::pin(tunnel),
            };
        }
    }
    let downstream = parts.version;
    let path = match prepare(conn, &mut parts, names) {
        Ok(path) => path,
        Err(error) => return refuse(conn, &parts, body, error, grpc),
    };
    let bodiless = body.is_end_stream();
    let (parts, mut body, expectation) = if bodiless {
        (parts, Either::Right(Full::default()), None)
    } else {
        let limits = &conn.shared.limits.config;
        let (read_timeout, wait) = (limits.body_read_timeout, limits.expect_continue_timeout);
        let (parts, body, expectation) = expect::gate(parts, body, read_timeout, wait);
        (parts, Either::Left(body), expectation)
    };
    // Keep the parts for a retry (the one per-request header copy), unless none could happen: a
    // non-idempotent request, or one with a body not held back for a `100 Continue`, goes again
    // only elsewhere after a connect failure (see `retry_target`).
    let resendable = bodiless || expectation.is_some();
    let retry = ((resendable && idempotent(&parts.method))
        || route.retry_target(backend.slot()).is_some())
    .then(|| Retry::of(&parts, crate::upload::of(&body)));
    // The method and path, for a retry and for the warning a failure gets (`access::warn`).
    let line = RequestLine {
        method: parts.method.clone(),
        path: path.clone(),
    };
    // Shadow traffic costs a route without it this one check.
    let mirror = route.shadow().and_then(|rule| {
        let ids = conn.shared.request_ids.as_ref();
        crate::shadow::start(rule, route, backend, forced, ids, &parts, &path, &mut body)
    });
    let hop = Hop {
        route,
        downstream,
        attempt: 1,
        fail_open: assigned.fail_open,
        te: names.te(),
        head: line.method == Method::HEAD,
    };
    backend.upstream().budget().deposit();
    let set_cookie = assigned.set_cookie;
    let attempt = dispatch(conn, hop, backend, None, (parts, path, body), log);
    Forward::First {
        attempt,
        after: Some(After {
            conn,
            hop,
            backend,
            forced,
            line,
            retry,
            mirror,
            expectation,
            set_cookie,
            log,
        }),
    }
}

/// The answer to a request refused with `error` before any attempt, counted as a local reply: its
/// unread `body` is drained when small, else the answer closes the connection
/// ([`crate::unread::refused`]).
#[cold]
fn refuse<'t, D>(
    conn: &Conn,
    parts: &Parts,
    body: Incoming,
    error: Error,
    grpc: bool,
) -> Forward<'t, D> {
    Forward::ready(Ok(refused(conn, parts, body, error, grpc)))
}

/// [`refuse`]'s answer itself.
#[cold]
fn refused(
    conn: &Conn,
    parts: &Parts,
    body: Incoming,
    error: Error,
    grpc: bool,
) -> Response<ProxyBody> {
    conn.shared.local.count_error(&error);
    let mut response = error_response(&error, grpc);
    if conn.shared.access.is_some() {
        let served = crate::access::Served::of_error(&error);
        response.extensions_mut().insert(served);
    }
    let read_timeout = conn.shared.limits.config.body_read_timeout;
    crate::unread::refused(
        parts.version,
        &parts.headers,
        body,
        read_timeout,
        &mut response,
    );
    response
}

/// The answer to a request that came back round a forwarding loop (see [`crate::via`]).
#[cold]
fn looped(via: &crate::via::Via, route: &TableRoute) -> Error {
    via.log_loop(route.name());
    Error::LoopDetected {
        route: route.name().to_string(),
        pseudonym: via.pseudonym(),
    }
}

/// What a request's response is, or the error its client gets.
type Answered = Result<Response<ProxyBody>, Error>;

pin_project_lite::pin_project! {
    /// [`forward`]'s future: an answer known before any attempt, a boxed one (an upgrade, or a
    /// retry after the first attempt failed), or the first attempt (`D`, [`dispatch`]'s future)
    /// with what its outcome needs.
    #[project = ForwardProj]
    enum Forward<'t, D> {
        Ready {
            // `None` once taken.
            answer: Option<Answered>,
        },
        Boxed {
            future: Pin<Box<dyn Future<Output = Answered> + Send + 't>>,
        },
        First {
            #[pin]
            attempt: D,
            // `None` once the attempt resolved.
            after: Option<After<'t>>,
        },
    }
}

/// What the first attempt's outcome is finished with, or retried with.
struct After<'t> {
    conn: &'t Conn,
    hop: Hop<'t>,
    backend: &'t TableBackend,
    /// The tester override chose the backend.
    forced: bool,
    line: RequestLine,
    retry: Option<Retry>,
    mirror: Option<crate::shadow::Mirror>,
    expectation: Option<Expectation>,
    set_cookie: Option<HeaderValue>,
    /// The access log line, for a retry to record where it went.
    log: &'t mut crate::access::Pending,
}

impl<D> Forward<'_, D> {
    fn ready(answer: Answered) -> Self {
        Forward::Ready {
            answer: Some(answer),
        }
    }
}

impl<'t, D> Future for Forward<'t, D>
where
    D: Future<Output = Result<Response<ProxyBody>, Failure>>,
{
    type Output = Answered;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Answered> {
        let (failure, after) = match self.as_mut().project() {
            ForwardProj::Ready { answer } => match answer.take() {
                Some(answer) => return Poll::Ready(answer),
                None => return Poll::Pending,
            },
            ForwardProj::Boxed { future } => return future.as_mut().poll(cx),
            ForwardProj::First { attempt, after } => {
                let outcome = std::task::ready!(attempt.poll(cx));
                let Some(after) = after.take() else {
                    return Poll::Pending;
                };
                match outcome {
                    Ok(response) => return Poll::Ready(Ok(after.answered(response))),
                    Err(failure) => (failure, after),
                }
            }
        };
        // Boxed: the retry's own attempt would otherwise double every request's future.
        let future = Box::pin(after.retry_or_answer(failure));
        self.set(Forward::Boxed { future });
        self.poll(cx)
    }
}

impl<'t> After<'t> {
    /// The first attempt's response, made the client's.
    fn answered(self, response: Response<ProxyBody>) -> Response<ProxyBody> {
        let response = match self.mirror {
            Some(mirror) => mirror.attach(response),
            None => response,
        };
        finish(response, self.expectation, self.set_cookie)
    }

    fn retry_or_answer(self, failure: Failure) -> impl Future<Output = Answered> + Send + 't {
        let failed = (self.backend, self.forced, failure);
        let finish = (self.expectation, self.set_cookie, self.mirror);
        let again = (self.line, self.retry);
        retry_or_answer(self.conn, self.hop, failed, again, finish, self.log)
    }
}

/// After a failed first attempt on `backend`: the one retry [`retry_target`] allows (and the budget
/// pays for), else the error the client gets. A `mirror` of the request (shadow traffic) compares
/// the retry's answer when the retry went to the same backend, whose answer it was started for
/// (trial 29: every retried request was skipped as `primary_incomplete`, though the client got
/// the active backend's complete answer); its answer from the other backend, or none, is not the
/// active backend's, and the dropped mirror counts the skip.
async fn retry_or_answer(
    conn: &Conn,
    hop: Hop<'_>,
    (backend, forced, failure): (&TableBackend, bool, Failure),
    (line, retry): (RequestLine, Option<Retry>),
    (expectation, set_cookie, mirror): (
        Option<Expectation>,
        Option<HeaderValue>,
        Option<crate::shadow::Mirror>,
    ),
    log: &mut crate::access::Pending,
) -> Result<Response<ProxyBody>, Error> {
    let route = hop.route;
    // No endpoint was up at the pick, though the backend could serve when it was chosen (its last
    // endpoint went down in between): nothing was sent, and the request goes where
    // `health::choose` sends it now, the other backend if that may take it. Not a re-send: no
    // budget, no retry counted.
    let overflow = matches!(failure, Failure::NoEndpoint) && !forced;
    let target = if overflow {
        retry.as_ref().and(health::overflow(route, backend))
    } else {
        retry
            .as_ref()
            .zip(failure.kind())
            .and_then(|(retry, kind)| {
                retry_target(route, backend, kind, (retry, &line.method), forced)
            })
    };
    let (Some(target), Some(retry)) = (target, retry) else {
        return Err(failure.answer(route, backend, &line));
    };
    // A body goes again only if the failed attempt never polled it (nothing of it was written),
    // once that attempt has handed it back (`Upload::returned`).
    if let Some(upload) = &retry.upload {
        upload.returned(BODY_HANDBACK_WAIT).await;
    }
    let Some((parts, path, body)) = retry.into_attempt(&line) else {
        return Err(failure.answer(route, backend, &line));
    };
    // A retry storm would pile re-sent requests onto a failing backend: the budget caps them.
    if !overflow && !backend.upstream().budget().try_withdraw() {
        backend.upstream().stats().record_budget_exhausted();
        return Err(failure.answer(route, backend, &line));
    }
    // On the same backend, the retry goes to another endpoint than the one that just failed while
    // another is up (round-robin alone would send it back there under concurrent load).
    let avoid = failure.endpoint().filter(|_| std::ptr::eq(target, backend));
    failure.retried(route, backend, &line.method);
    // A request moved off a backend with no endpoint up was not sent before: not a second attempt.
    let attempt = hop.attempt + u8::from(!overflow);
    let hop = Hop { attempt, ..hop };
    let mirror = mirror.filter(|_| std::ptr::eq(target, backend));
    dispatch(conn, hop, target, avoid, (parts, path, body), log)
        .await
        .map(|response| {
            let response = match mirror {
                Some(mirror) => mirror.attach(response),
                None => response,
            };
            finish(response, expectation, set_cookie)
        })
        .map_err(|failure| failure.answer(route, target, &line))
}

/// How long a retry waits for the failed attempt to hand its unpolled request body back
/// (`Upload::returned`): the handback comes as soon as hyper's task that held the body runs after
/// the connection's failure, well within this bound; past it the request is answered 502 as one
/// whose body cannot go again.
const BODY_HANDBACK_WAIT: Duration = Duration::from_secs(1);

/// The response head arrived: tell a pending expectation, keep it until the body is done, and add
/// the sticky cookie the assignment minted.
pub(crate) fn finish(
    mut response: Response<ProxyBody>,
    expectation: Option<Expectation>,
    set_cookie: Option<HeaderValue>,
) -> Response<ProxyBody> {
    if let Some(expectation) = expectation {
        expectation.responded();
        response.body_mut().keep_expectation(expectation);
    }
    if let Some(cookie) = set_cookie {
        response.headers_mut().append(SET_COOKIE, cookie);
    }
    response
}

/// What is wrong with a request target this reverse proxy cannot take, or `None`: the
/// authority form (`GET a:80`), which only `CONNECT` uses (RFC 9112 §3.2.3); a scheme other than
/// `http` or `https` (absolute form, or HTTP/2's `:scheme`; RFC 9112 §3.2.2); and userinfo in the
/// authority (`http://user@a/`), an error for `http` and `https` URIs (RFC 9110 §4.2.4) and never
/// sent in HTTP/2's `:authority` (RFC 9113 §8.3.1), which would otherwise be routed by the host
/// after it. An origin-form target has neither scheme nor authority and passes at once.
fn target_problem(uri: &http::Uri) -> Option<&'static str> {
    let authority = uri.authority()?;
    match uri.scheme_str() {
        None => Some("a target in authority form is only for CONNECT"),
        Some(scheme)
            if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") =>
        {
            Some("the request target's scheme is not http or https")
        }
        Some(_) if authority.as_str().contains('@') => Some("userinfo in the request target"),
        Some(_) => None,
    }
}

/// A request's route and the backend assigned to it.
type Selected<'t> = (&'t TableRoute, Assignment<'t, Arc<Upstream>>);

/// Why [`select`] found no backend for a request.
enum Unselected<'t> {
    /// It is answered with this error now.
    Refused(Error),
    /// No backend it may take can serve, and endpoints that could serve it await their first
    /// probe: it waits for them ([`health::first_probes`]) and is selected again.
    FirstProbes(Awaited<'t>),
}

/// What a request waiting for first probes was picked for.
struct Awaited<'t> {
    route: &'t TableRoute,
    picked: &'t TableBackend,
    /// The tester override chose `picked`: only its endpoints count.
    forced: bool,
}

impl Unselected<'_> {
    /// The error the client gets when it is not selected (again): for a request that waited
    /// for first probes, 503 "no endpoint", counted now.
    fn into_error(self) -> Error {
        match self {
            Unselected::Refused(error) => error,
            Unselected::FirstProbes(awaited) => no_endpoint(awaited.route, awaited.picked),
        }
    }
}

/// 503 "no endpoint" for a request picked for `picked` on `route`, counted as `picked`'s local
/// reply.
fn no_endpoint(route: &TableRoute, picked: &TableBackend) -> Error {
    let error = Error::NoEndpoint {
        route: route.name().to_string(),
        backend: picked.slot(),
    };
    picked.upstream().stats().record_local(error.status(), true);
    error
}

/// Matches the route and picks its backend ([`assign`]); health moves the request off a backend
/// that cannot serve ([`health::choose`]), or holds it while the endpoints that could serve it
/// await their first probe.
fn select<'t>(
    conn: &Conn,
    table: &'t Table,
    parts: &Parts,
) -> Result<Selected<'t>, Unselected<'t>> {
    let (route, assigned) = assign(conn, table, parts).map_err(Unselected::Refused)?;
    let picked = assigned.backend;
    if assigned.forced {
        // The tester override stays on its backend, but not ahead of that backend's first probes.
        let held = !picked.upstream().health().can_serve()
            && health::awaits_first_probes(route, picked, true);
        if held {
            let awaited = Awaited {
                route,
                picked,
                forced: true,
            };
            return Err(Unselected::FirstProbes(awaited));
        }
        return Ok((route, assigned));
    }
    // Health never rewrites weights: it only moves a request off a backend that cannot serve.
    let Some(backend) = health::choose(route, picked) else {
        if health::awaits_first_probes(route, picked, false) {
            let awaited = Awaited {
                route,
                picked,
                forced: false,
            };
            return Err(Unselected::FirstProbes(awaited));
        }
        return failing_open(route, assigned);
    };
    Ok((
        route,
        Assignment {
            backend,
            ..assigned
        },
    ))
}

/// A request that no backend it may take can serve, with no first probe to wait for: sent
/// failing open when its route does ([`health::fail_open`]), else answered 503 "no endpoint".
#[cold]
fn failing_open<'t>(
    route: &'t TableRoute,
    assigned: Assignment<'t, Arc<Upstream>>,
) -> Result<Selected<'t>, Unselected<'t>> {
    let picked = assigned.backend;
    let Some(backend) = health::fail_open(route, picked) else {
        return Err(Unselected::Refused(no_endpoint(route, picked)));
    };
    health::sent_failing_open(route, backend);
    let assigned = Assignment {
        backend,
        fail_open: true,
        ..assigned
    };
    Ok((route, assigned))
}

/// Matches the route and picks its backend, per request: the tester override, else the sticky
/// key's bucket, else a random draw, against the route's weights ([`sticky::assign`]).
fn assign<'t>(conn: &Conn, table: &'t Table, parts: &Parts) -> Result<Selected<'t>, Error> {
    if parts.method == Method::CONNECT && !tunnel::extended_websocket(parts) {
        // A reverse proxy has no tunnel to offer (RFC 9110 §9.3.6), but for a WebSocket over
        // HTTP/2 (RFC 8441), which is routed as an upgrade is.
        return Err(Error::BadRequest(
            match parts.extensions.get::<hyper::ext::Protocol>() {
                Some(_) => "extended CONNECT is supported for the websocket protocol only",
                None => "CONNECT is not supported",
            },
        ));
    }
    if let Some(problem) = target_problem(&parts.uri) {
        return Err(Error::BadRequest(problem));
    }
    let mut host_lines = parts.headers.get_all(HOST).iter();
    let host_line = host_lines.next();
    if host_lines.next().is_some() {
        // RFC 9112 §3.2: more than one Host line gets 400; routing on one while the backend reads
        // the other would let a client reach a route it was not matched to.
        return Err(Error::BadRequest("more than one host header"));
    }
    if host_line.is_some_and(|h| !crate::headers::valid_host(h.as_bytes())) {
        // RFC 9112 §3.2: a Host with an invalid field value gets 400 (trial 11, L9).
        return Err(Error::BadRequest("invalid host header"));
    }
    let host = request_host(parts, host_line);
    if host.is_none() && parts.version >= Version::HTTP_11 {
        // RFC 9112 §3.2: an HTTP/1.1 request without Host gets 400.
        return Err(Error::BadRequest("missing host"));
    }
    if conn.misdirected(host) {
        // RFC 9110 §7.4: the connection's certificate was picked for another host (`tls.sni`).
        let host = host.unwrap_or_default().to_owned();
        return Err(Error::Misdirected { host });
    }
    let route = table
        .match_route(host, parts.uri.path())
        .ok_or(Error::NoRoute)?;
    let trust = conn.shared.trust_forwarded_for;
    let assigned = sticky::assign(route, &parts.headers, conn.peer.as_bytes(), trust)?;
    Ok((route, assigned))
}

/// Where a request that failed on `failed` with `kind` may be sent once more, if anywhere.
///
/// - Connect failure (no byte of the request written), whatever the method, body included (the
///   body was never polled, so it goes to the next attempt whole; nginx's `proxy_next_upstream
///   error` and Envoy's `connect-failure` retry do the same): the other backend if it has weight
///   or is the active slot and has an endpoint up, else another endpoint of the same backend
///   ([`health::retry_elsewhere`]). So a preview at 100 % whose endpoints die sends its failed
///   connects to the active slot (trial 8, H2), never to a weight-0 preview.
/// - Reset before the response head, for an idempotent request (RFC 9110 §9.2.2) without a body
///   or whose body the failed attempt never polled: typically a pooled connection that the
///   backend closed just as it was reused (case C17), or a backend that died mid-request (C13).
///   The same places, else the same backend on a fresh connection. A body is never polled while
///   it is held back for the backend's `100 Continue` (`expect`): such a `PUT` on a stale
///   connection had only its head written, and goes again whole (session 40; until then 502).
/// - Anything else (timeouts, protocol errors, non-idempotent resets, resets of a request whose
///   body was polled): never, it may act twice. Once its body was polled (a byte of it may have
///   been read from the client and written), a request is never sent again.
///
/// A stream an h2c backend refused without processing it (RFC 9113 §6.8, §8.7) is not a failure
/// here: the upstream layer replays it (up to 3 times), body included (`upstream::h2c`); one that could not be
/// replayed arrives here as a protocol error, never retried.
///
/// A request `forced` to a backend by the tester override stays on that backend.
fn retry_target<'a>(
    route: &'a TableRoute,
    failed: &'a TableBackend,
    kind: ErrorKind,
    (retry, method): (&Retry, &Method),
    forced: bool,
) -> Option<&'a TableBackend> {
    let elsewhere = || connect_retry_target(route, failed, forced);
    match kind {
        kind if kind.is_connect() => elsewhere(),
        ErrorKind::Reset
            if idempotent(method) && retry.upload.as_ref().is_none_or(|u| u.never_polled()) =>
        {
            Some(elsewhere().unwrap_or(failed))
        }
        _ => None,
    }
}

/// Where a request whose connect to `failed` failed (nothing of it written) may go once more: the
/// other backend when it may take it and can serve now, else another endpoint of `failed`
/// ([`health::retry_elsewhere`]); a request `forced` by the tester override only the latter. The
/// rule of [`retry_target`] for connect failures, shared by upgrade requests (`tunnel::forward`).
pub(crate) fn connect_retry_target<'a>(
    route: &'a TableRoute,
    failed: &'a TableBackend,
    forced: bool,
) -> Option<&'a TableBackend> {
    match forced {
        true => (failed.endpoints().len() > 1).then_some(failed),
        false => health::retry_elsewhere(route, failed),
    }
}

/// Idempotent methods (RFC 9110 §9.2.2), which a client or proxy may repeat automatically.
pub(crate) fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// How many header fields [`prepare`] may add to a request: `Host`, `X-Forwarded-For`,
/// `X-Forwarded-Proto`, `X-Forwarded-Host` and `Via`.
const ADDED_FIELDS: usize = 5;

/// The host a request is for: the request-target's authority when present (absolute form, or
/// HTTP/2 `:authority`; RFC 9112 §3.2.2 says it overrides Host), else `host_line`, its Host header.
fn request_host<'p>(parts: &'p Parts, host_line: Option<&'p HeaderValue>) -> Option<&'p str> {
    match parts.uri.authority() {
        Some(authority) => Some(authority.host()),
        None => host_line.and_then(|h| h.to_str().ok()),
    }
}

/// Rewrites the request for the upstream hop: hop-by-hop headers out, Host from the authority (an
/// HTTP/2 client's `:authority` becomes Host), forwarding headers and this proxy's `Via` entry
/// (with the client's protocol) in. Returns the path to send. `names` is the scan of `parts`'
/// headers, taken before any header was added to them.
///
/// The header map gets room for every field added here first: hyper sizes a new connection's
/// first request map to the fields it read, and adding them one at a time grew it (each growth a
/// reallocation and a rehash) three times per request on a new connection. Reserved before the
/// hop-by-hop fields go (whose room is then reused), not after: the map, sent, becomes the
/// upstream connection's map for parsing the response (hyper reuses it), and a map sized to the
/// request alone grew again there for the response's `Via` (measured in
/// docs/bench-2026-12-03b-alloc.md).
pub(crate) fn prepare(
    conn: &Conn,
    parts: &mut Parts,
    names: RequestNames,
) -> Result<Option<PathAndQuery>, Error> {
    parts.headers.reserve(ADDED_FIELDS);
    if crate::headers::saw_other_hop_by_hop(names) {
        use crate::headers::TransferCodingProblem;
        match crate::headers::transfer_coding_problem(&parts.headers) {
            Some(TransferCodingProblem::Unknown(coding)) => {
                return Err(Error::UnknownTransferCoding(coding));
            }
            Some(TransferCodingProblem::ChunkedTwice) => {
                return Err(Error::BadRequest(
                    "Transfer-Encoding applies chunked more than once (RFC 9112 §6.1)",
                ));
            }
            None => {}
        }
    }
    strip_request_hop_by_hop(&mut parts.headers, names);
    let uri = std::mem::take(&mut parts.uri).into_parts();
    if let Some(authority) = uri.authority {
        let host = authority.as_str().rsplit('@').next().unwrap_or_default();
        if parts.headers.get(HOST).map(HeaderValue::as_bytes) != Some(host.as_bytes()) {
            let host =
                HeaderValue::from_str(host).map_err(|_| Error::BadRequest("bad authority"))?;
            parts.headers.insert(HOST, host);
        }
    }
    let https = conn.shared.tls.is_some();
    let trust = conn.shared.trust_forwarded_for;
    set_forwarded_scanned(&mut parts.headers, &conn.peer, (trust, https), names);
    if let Some(via) = conn.shared.via() {
        via.append(&mut parts.headers, parts.version);
    }
    // The head as sent upstream must pass the limit the proxy itself applies (hyper's 100 lines,
    // which backends built on hyper or Python's http.server share): the lines added above
    // (forwarding headers, Via) count, so a head the proxy took is never refused by such a
    // backend only because of them (trial 7, G1). `len` counts every line, Host included.
    if parts.headers.len() > crate::limits::head::MAX_HEADER_LINES {
        return Err(Error::HeadTooLarge(
            "more than 100 header fields with the proxy's forwarding headers and Via",
        ));
    }
    Ok(uri.path_and_query)
}

/// What [`dispatch`] needs to know about the request beyond its parts.
#[derive(Clone, Copy)]
struct Hop<'a> {
    route: &'a TableRoute,
    /// The client's HTTP version.
    downstream: Version,
    /// Which attempt this is: 1, or 2 for a retry.
    attempt: u8,
    /// The request is sent failing open (see [`health::fail_open`]): its endpoint is picked
    /// among those health holds out when none is up.
    fail_open: bool,
    /// The client's request had a `TE` line (its scan, [`RequestNames::te`]): an HTTP/1.1
    /// upstream gets `TE` named in `Connection` when the strip left it (its `trailers`).
    te: bool,
    /// The request is a `HEAD`: its response has no content, whatever its head announces
    /// (RFC 9110 §9.3.2; see [`respond`]).
    head: bool,
}

/// Sends one attempt to one endpoint of `backend` and waits for the response head; records where
/// it went on the access log's line `log` (one branch when the log is off). `log` is not held by
/// the returned future.
///
/// Not an `async fn`: the request goes into the upstream's future when this is called, so the
/// returned future does not also hold the request's parts (an `async fn` keeps its arguments
/// apart from the futures it awaits, and this future is part of every request's).
fn dispatch<'a>(
    conn: &'a Conn,
    hop: Hop<'a>,
    backend: &'a TableBackend,
    avoid: Option<usize>,
    (mut parts, path, body): (Parts, Option<PathAndQuery>, UpstreamBody),
    log: &mut crate::access::Pending,
) -> impl Future<Output = Result<Response<ProxyBody>, Failure>> + 'a {
    let upstream = backend.upstream();
    let index = match hop.fail_open {
        false => health::pick_endpoint(backend, avoid),
        true => health::pick_endpoint_failing_open(backend, avoid),
    };
    let Some(index) = index else {
        return Dispatching::NoEndpoint;
    };
    if log.is_on() {
        let endpoint = backend.endpoints().get(index).copied();
        log.dispatched(hop.route.name(), backend.slot(), endpoint, hop.attempt);
    }
    parts.uri = upstream.uri(index, path);
    parts.version = upstream.version();
    // Case C19: RFC 9110 §10.1.4 asks a sender of `TE` to name it in `Connection`; never over
    // h2c, where `Connection` is malformed (RFC 9113 §8.2.2; hyper's client would drop it and the
    // `TE` it names). Only requests whose scan saw `TE` look it up.
    if hop.te && parts.version == Version::HTTP_11 {
        crate::headers::name_te_in_connection(&mut parts.headers);
    }
    if hop.downstream == Version::HTTP_2 && parts.version == Version::HTTP_11 {
        crate::headers::join_cookie_crumbs(&mut parts.headers);
    } else if hop.downstream < Version::HTTP_11 && parts.version == Version::HTTP_11 {
        crate::headers::default_host(&mut parts.headers, upstream.authority(index));
    }
    let upload = crate::upload::of(&body);
    // A gRPC call (it always has a body) waits as long as its own deadline when that is longer
    // than the response timeout: a unary call of 60 s with `grpc-timeout: 90S` ended in
    // DEADLINE_EXCEEDED from the proxy at 30 s (proxytry31). Never shorter: the client gives up at
    // its deadline itself, and a proxy timeout racing that would count as the backend's error.
    let grpc_deadline = upload
        .as_ref()
        .and_then(|_| crate::grpc::timeout(&parts.headers));
    let informational = conn.informational(&mut parts.extensions, hop.downstream);
    let request = Request::from_parts(parts, body);
    let start = Instant::now();
    let guard = upstream.stats().dispatch(upload.is_none().then_some(start));
    // Pending for the balancer until the response head or a failure (or this future's drop).
    let load = upstream.health().dispatched(index, start);
    let route_timeout = hop.route.response_timeout();
    let timeout = route_timeout.unwrap_or(conn.shared.upstream.response_timeout);
    let timeout = grpc_deadline.map_or(timeout, |deadline| {
        timeout.max(deadline.min(crate::duration::MAX))
    });
    let send = upstream.send(index, request, start, informational);
    let sent = Sent {
        conn,
        hop,
        backend,
        attempt: Attempt {
            index,
            guard,
            start,
            upload: upload.clone(),
            load,
        },
    };
    match upload {
        // Against `start`: one clock read fewer than `timeout` (which reads the clock itself).
        None => Dispatching::Timed {
            send,
            deadline: crate::duration::later(start, timeout),
            sent: Awaiting(Some(sent)),
        },
        // With a body, the timeout runs only while the backend owes the next move (`upload`).
        // Boxed: the upload's timer stays out of every bodiless request's future.
        Some(upload) => Dispatching::Upload {
            send: Box::pin(async move {
                crate::upload::within(timeout, Some(&upload), send)
                    .await
                    .ok()
            }),
            sent: Awaiting(Some(sent)),
        },
    }
}

/// What an upstream exchange resolves to (see [`Upstream::send`]).
type Exchanged = Result<Response<ResponseBody>, SendError>;

pin_project_lite::pin_project! {
    /// [`dispatch`]'s future, one state machine: no endpoint to send to, or the exchange `S`
    /// ([`Upstream::send`]'s future) within the response timeout, then its outcome counted and
    /// the response made fit for the client ([`attempted`]).
    #[project = DispatchingProj]
    enum Dispatching<'a, S> {
        NoEndpoint,
        /// Bodiless: the timeout runs from the start (as `tokio::time::timeout_at` would: the
        /// exchange is polled first, then the deadline, unconstrained by the coop budget when the
        /// exchange used it up). The exchange keeps the timer (`upstream::Deadlined`: an
        /// upstream connection's timer serves each request it carries).
        Timed {
            #[pin]
            send: S,
            deadline: Instant,
            // `None` once resolved.
            sent: Awaiting<'a>,
        },
        /// With a body: the exchange within `upload::within`, boxed; `None` when the timeout passed.
        Upload {
            send: Pin<Box<dyn Future<Output = Option<Exchanged>> + Send + 'a>>,
            sent: Awaiting<'a>,
        },
    }
}

/// An attempt on its way, with what its outcome is judged by.
struct Sent<'a> {
    conn: &'a Conn,
    hop: Hop<'a>,
    backend: &'a TableBackend,
    attempt: Attempt<'a>,
}

impl<S> Future for Dispatching<'_, S>
where
    S: Deadlined<Output = Exchanged>,
{
    type Output = Result<Response<ProxyBody>, Failure>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (outcome, sent) = match self.project() {
            DispatchingProj::NoEndpoint => return Poll::Ready(Err(Failure::NoEndpoint)),
            DispatchingProj::Timed {
                mut send,
                deadline,
                sent,
            } => {
                let deadline = *deadline;
                let had_budget = coop::has_budget_remaining();
                let outcome = match send.as_mut().poll(cx) {
                    Poll::Ready(outcome) => Some(outcome),
                    // As `timeout_at` does: when the exchange used up the task's coop budget, the
                    // deadline is looked at unconstrained, or a task whose exchange always did
                    // would never time out.
                    Poll::Pending if had_budget && !coop::has_budget_remaining() => {
                        let passed =
                            std::future::poll_fn(|cx| send.as_mut().poll_deadline(deadline, cx));
                        let mut passed = coop::unconstrained(passed);
                        std::task::ready!(Pin::new(&mut passed).poll(cx));
                        None
                    }
                    Poll::Pending => {
                        std::task::ready!(send.poll_deadline(deadline, cx));
                        None
                    }
                };
                (outcome, sent)
            }
            DispatchingProj::Upload { send, sent } => {
                (std::task::ready!(send.as_mut().poll(cx)), sent)
            }
        };
        match sent.0.take() {
            Some(Sent {
                conn,
                hop,
                backend,
                attempt,
            }) => Poll::Ready(attempted(conn, &hop, backend, attempt, outcome)),
            // Polled again after it resolved: nothing more will come.
            None => Poll::Pending,
        }
    }
}

/// An attempt's [`Sent`] until its outcome is known (`None` then). Dropped before that, the
/// request's future was dropped while it waited for its response head: its client went away (an
/// HTTP/1 connection closed or reset, an HTTP/2 stream reset or its connection closed; see
/// `server::http1_builder`). Dropping the attempt has dropped the exchange already (an HTTP/1.1
/// upstream connection with it, closed, never back in the idle stack; an h2c stream, reset), and
/// its [`crate::stats::InFlight`] ends the in-flight count and the unanswered slot; here the abort
/// is counted for the backend ([`crate::stats::BackendStats::record_client_abort`]), never as its
/// error. The client's access log line says 499 (`access::Pending`'s drop).
///
/// A `Drop` on this wrapper rather than on the future: the future's resolved path takes the
/// [`Sent`] out, so the common path pays one `None` check in the drop.
struct Awaiting<'a>(Option<Sent<'a>>);

impl Drop for Awaiting<'_> {
    fn drop(&mut self) {
        if let Some(sent) = self.0.take() {
            sent.abandoned();
        }
    }
}

impl Sent<'_> {
    /// Counts the attempt as abandoned by its client (see [`Awaiting`]), unless the proxy is
    /// dropping what its drain left after `drain_timeout`, which is not the client's doing.
    #[cold]
    fn abandoned(self) {
        let Sent {
            conn,
            hop,
            backend,
            attempt,
        } = self;
        let waited = crate::upload::response_time(attempt.upload.as_deref(), attempt.start);
        if !conn
            .shared
            .count_client_abort(attempt.guard.stats(), waited)
        {
            return;
        }
        // On HTTP/2, a premature reset: bounded per connection (Rapid Reset, CVE-2023-44487).
        conn.count_premature_reset();
        let route = hop.route.name();
        let endpoint = backend.endpoints().get(attempt.index);
        tracing::debug!(%route, backend = %backend.slot(), ?endpoint, ?waited, "the client went away before the response head");
    }
}

/// One attempt of [`dispatch`], sent: what its outcome is counted with.
struct Attempt<'a> {
    /// The endpoint it went to.
    index: usize,
    guard: crate::stats::InFlight,
    /// When it was sent.
    start: Instant,
    /// The request body's state, if it has one.
    upload: Option<Arc<crate::upload::Upload>>,
    /// Pending for the balancer until the response head or a failure.
    load: Option<health::Dispatched<'a>>,
}

/// The outcome of an [`Attempt`]: the response made fit for the client, or the failure, counted.
/// `sent` is `None` when the response timeout passed.
fn attempted(
    conn: &Conn,
    hop: &Hop<'_>,
    backend: &TableBackend,
    attempt: Attempt<'_>,
    sent: Option<Result<Response<ResponseBody>, SendError>>,
) -> Result<Response<ProxyBody>, Failure> {
    let Attempt {
        index,
        mut guard,
        start,
        upload,
        load,
    } = attempt;
    let upstream = backend.upstream();
    let active = hop.route.active();
    let elapsed = crate::upload::response_time(upload.as_deref(), start);
    let (kind, source) = match sent {
        // Upgrade requests take `tunnel`: a 101 here switches to a protocol nobody asked for, which
        // a server must not do (RFC 9110 §15.2.2). Forwarded, it would end the client's connection.
        Some(Ok(response)) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
            let unasked = "101 Switching Protocols to a request without Upgrade (RFC 9110 §15.2.2)";
            (ErrorKind::Protocol, Some(unasked.into()))
        }
        Some(Ok(mut response)) => {
            if let Some(via) = conn.shared.via() {
                let version = response.version();
                via.append(response.headers_mut(), version);
            }
            if let Some(load) = load {
                load.responded(elapsed);
            }
            guard.record_response(response.status(), elapsed);
            // Answered before the whole request body went upstream (`unread`'s forwarded case).
            let early = upload.as_ref().is_some_and(|upload| !upload.is_ended());
            if early {
                response.body_mut().not_reused();
            }
            let report = health::report::Reporter::new(upstream.health(), index, active);
            let mut response = respond(response, (guard, report), hop);
            if early && hop.downstream < Version::HTTP_2 {
                crate::unread::close(&mut response);
            }
            return Ok(response);
        }
        Some(Err(_)) if upload.as_ref().is_some_and(|upload| upload.stalled()) => {
            return Err(stalled_upload(conn, hop));
        }
        Some(Err(e)) if e.downstream_aborted => {
            let malformed = e.downstream_malformed;
            let reason = match malformed {
                true => ClientBodyFailure::Malformed,
                false => ClientBodyFailure::Aborted,
            };
            conn.shared.limits.count_body_failure(reason);
            tracing::debug!(route = %hop.route.name(), malformed, "the client's request body failed");
            return Err(Failure::DownstreamAborted { malformed });
        }
        Some(Err(e)) => (e.kind, Some(e.source)),
        None => (ErrorKind::ResponseTimeout, None),
    };
    if let Some(load) = load {
        load.failed(elapsed);
    }
    upstream.health().record_failure(index, kind, active);
    let route = hop.route.name();
    let endpoint = backend.endpoints().get(index);
    tracing::debug!(%route, backend = %backend.slot(), ?endpoint, %kind, ?source, "upstream failed");
    Err(Failure::Upstream {
        kind,
        elapsed,
        source,
        endpoint: index,
        attempt: hop.attempt,
    })
}

/// The client stalled its upload past `limits.body_read_timeout` (see `upload`): counted as the
/// client's failure, not the backend's.
#[cold]
fn stalled_upload(conn: &Conn, hop: &Hop<'_>) -> Failure {
    conn.shared
        .limits
        .count_body_failure(ClientBodyFailure::Timeout);
    tracing::debug!(route = %hop.route.name(), "the client stalled its request body");
    Failure::BodyTimeout
}

/// The upstream response made fit for the client's hop.
///
/// Case C18: a body of unknown length cannot be chunked to an HTTP/1.0 client. hyper's server then
/// delimits it by closing the connection, but still announces `Connection: keep-alive` to a 1.0
/// client that asked for it; marking the response HTTP/1.0 makes hyper drop keep-alive cleanly.
/// A sized body, or a response [`without_content`] whatever its body (hyper's server writes none
/// of it), is marked HTTP/1.1 and so keeps the client's keep-alive: hyper announces it to a 1.0
/// client only for an HTTP/1.1 head, and an h2c backend's head says HTTP/2. Until session 40 a
/// 1.0 keep-alive client lost its connection over h2c: `Connection: keep-alive` missing from
/// every answer, and a `HEAD` of a resource without `content-length` (the backend's stream still
/// open at the head) or a 204 or 304 taken for a body of unknown length.
fn respond(
    response: Response<ResponseBody>,
    (guard, report): (crate::stats::InFlight, health::report::Reporter<'_>),
    hop: &Hop<'_>,
) -> Response<ProxyBody> {
    let (mut parts, mut body) = response.into_parts();
    // Case C17: a backend's `Keep-Alive: timeout=N` bounds its connection's reuse (see
    // `upstream::keep_alive`); a response without it pays nothing more.
    if let Some(keep_alive) = strip_response_hop_by_hop(&mut parts.headers) {
        body.keep_alive(&keep_alive);
    }
    if hop.downstream < Version::HTTP_11 {
        let sized = without_content(hop.head, parts.status) || body.size_hint().exact().is_some();
        parts.version = match sized {
            true => Version::HTTP_11,
            false => Version::HTTP_10,
        };
    }
    // A gRPC call fails inside an HTTP 2xx (a 5xx is counted already): its status is in this head
    // (trailers-only response) or in the trailers, read as they pass. Either way it reaches the
    // endpoint's health as a 5xx would (`health::report`). Other responses pay this one
    // content-type check.
    let mut server_error = parts.status.is_server_error();
    if parts.status.is_success() && grpc::is_grpc(&parts.headers) {
        match grpc::verdict(&parts.headers) {
            grpc::Verdict::Absent => {
                let body = ProxyBody::grpc(body, guard, report.later());
                return Response::from_parts(parts, body);
            }
            grpc::Verdict::ServerFault => {
                guard.stats().record_grpc_error();
                server_error = true;
            }
            grpc::Verdict::Fine => {}
        }
    }
    report.now(server_error);
    Response::from_parts(parts, ProxyBody::upstream(body, guard))
}

/// Whether a response has no content whatever its head announces: the answer to a `HEAD`
/// (`head`), a 204 or a 304 (RFC 9110 §9.3.2, §15.3.5, §15.4.5; RFC 9112 §6.3). Its length is
/// known (none), so it needs no close to delimit it.
fn without_content(head: bool, status: StatusCode) -> bool {
    head || matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED)
}

/// The response for an error, every local reply's one builder: status decided by
/// [`Error::status`], short plain-text body; to a gRPC client (`grpc`: its request's content-type
/// is gRPC's, [`grpc::is_grpc`]) a trailers-only response with HTTP status 200 and the
/// [`Error::grpc_status`] and [`Error::grpc_message`] instead ([`grpc::local_reply`]), which its
/// gRPC library reads as the call's status. Metrics count the error by what it is either way.
pub(crate) fn error_response(error: &Error, grpc: bool) -> Response<ProxyBody> {
    if grpc {
        return grpc::local_reply(error.grpc_status(), &error.grpc_message());
    }
    let mut response = Response::new(ProxyBody::full(error.body()));
    *response.status_mut() = error.status();
    let plain = HeaderValue::from_static("text/plain; charset=utf-8");
    response.headers_mut().insert(CONTENT_TYPE, plain);
    response
}

/// What a failed attempt left behind.
enum Failure {
    /// The backend had no endpoint; nothing was sent.
    NoEndpoint,
    /// The client's request body failed (the client went away, or with `malformed` its framing
    /// did not decode): not the backend's fault, not counted against it, never retried.
    DownstreamAborted { malformed: bool },
    /// The client sent no body byte for `limits.body_read_timeout`: not the backend's fault, not
    /// counted against it, never retried.
    BodyTimeout,
    /// The upstream exchange failed before a response head.
    Upstream {
        kind: ErrorKind,
        elapsed: Duration,
        source: Option<BoxError>,
        /// The endpoint (index in the backend) the attempt went to.
        endpoint: usize,
        /// Which attempt failed (see [`Hop`]).
        attempt: u8,
    },
}

impl Failure {
    fn kind(&self) -> Option<ErrorKind> {
        match self {
            Failure::NoEndpoint | Failure::DownstreamAborted { .. } | Failure::BodyTimeout => None,
            Failure::Upstream { kind, .. } => Some(*kind),
        }
    }

    /// The endpoint the failed attempt went to, if it reached one.
    fn endpoint(&self) -> Option<usize> {
        match self {
            Failure::NoEndpoint | Failure::DownstreamAborted { .. } | Failure::BodyTimeout => None,
            Failure::Upstream { endpoint, .. } => Some(*endpoint),
        }
    }

    /// Counts the failure against `backend` and turns it into the error the client gets; an
    /// upstream failure is logged at WARN with the request's `line` (rate-limited,
    /// [`crate::access::warn`]).
    fn answer(self, route: &TableRoute, backend: &TableBackend, line: &RequestLine) -> Error {
        let (route, slot) = (route.name().to_string(), backend.slot());
        let stats = backend.upstream().stats();
        match self {
            Failure::NoEndpoint => {
                stats.record_local(StatusCode::SERVICE_UNAVAILABLE, true);
                Error::NoEndpoint {
                    route,
                    backend: slot,
                }
            }
            Failure::DownstreamAborted { malformed } => {
                // Dispatched already: the answer is counted, never as the backend's error, and
                // names the route and backend it was sent to (until newuser34 a `bad_request`
                // of no route, `attempts` 0, as if the proxy had refused it before sending).
                stats.record_local(StatusCode::BAD_REQUEST, false);
                Error::RequestBodyFailed {
                    route,
                    backend: slot,
                    malformed,
                }
            }
            Failure::BodyTimeout => {
                // Dispatched already: the answer is counted, never as the backend's error.
                stats.record_local(StatusCode::REQUEST_TIMEOUT, false);
                Error::RequestBodyTimeout {
                    route,
                    backend: slot,
                }
            }
            Failure::Upstream {
                kind,
                elapsed,
                source,
                endpoint,
                attempt,
            } => {
                stats.record_failure(kind, elapsed, true);
                let error = Error::Upstream {
                    route,
                    backend: slot,
                    kind,
                    source,
                    endpoint: backend.endpoints().get(endpoint).copied(),
                    attempts: attempt,
                };
                let path = line.path.as_ref().map_or("/", PathAndQuery::path);
                crate::access::warn::upstream_failed(
                    stats.warn_limit(),
                    &error,
                    &line.method,
                    path,
                );
                error
            }
        }
    }

    /// Counts the failure against `backend` as one that is being retried elsewhere.
    fn retried(self, route: &TableRoute, backend: &TableBackend, method: &Method) {
        if let Failure::Upstream { kind, elapsed, .. } = self {
            let stats = backend.upstream().stats();
            stats.record_failure(kind, elapsed, false);
            stats.record_retry(kind, method);
            tracing::debug!(route = %route.name(), backend = %backend.slot(), %kind, "retrying");
        }
    }
}

/// The parts of a request, kept so it can be sent again after a failure (see [`retry_target`]);
/// for a request with a body, the [`crate::upload::Upload`] its body is handed back to when an
/// attempt drops it unsent.
///
/// The header lines are kept as a list, in the map's order, and the map is rebuilt only for a
/// retry: copying a list is one allocation, where cloning the `HeaderMap` is two and copies its
/// index too, on every request that could be retried (by callgrind, the clone was ~660
/// instructions of ~37,000 per request).
struct Retry {
    headers: Vec<(HeaderName, HeaderValue)>,
    upload: Option<Arc<crate::upload::Upload>>,
    /// An HTTP/2 request's 1xx sender (`interim::wants_informational`), which lives in its
    /// extensions: the retry's backend's 1xx reach the client too. HTTP/1.1 requests share their
    /// connection's and have none here.
    informational: Option<hyper::ext::InformationalSender>,
}

/// A request's method and path (with its query), kept from its first attempt: for a retry, and
/// for the warning an upstream failure gets. Cloned once per request (reference counts, no
/// copy of the path's bytes).
struct RequestLine {
    method: Method,
    path: Option<PathAndQuery>,
}

impl Retry {
    fn of(parts: &Parts, upload: Option<Arc<crate::upload::Upload>>) -> Retry {
        let mut headers = Vec::with_capacity(parts.headers.len());
        headers.extend(
            parts
                .headers
                .iter()
                .map(|(name, value)| (name.clone(), value.clone())),
        );
        let informational = parts.extensions.get().cloned();
        Retry {
            headers,
            upload,
            informational,
        }
    }

    /// The request again (`line`'s method and path), or `None` when its body was polled by the
    /// failed attempt.
    fn into_attempt(
        self,
        line: &RequestLine,
    ) -> Option<(Parts, Option<PathAndQuery>, UpstreamBody)> {
        let (mut parts, ()) = Request::new(()).into_parts();
        parts.method = line.method.clone();
        parts.headers.reserve(self.headers.len());
        for (name, value) in self.headers {
            parts.headers.append(name, value);
        }
        if let Some(informational) = self.informational {
            parts.extensions.insert(informational);
        }
        let path = line.path.clone();
        let Some(upload) = self.upload else {
            return Some((parts, path, Either::Right(Full::default())));
        };
        let (parts, body) = upload.unsent()?.resume(parts, Arc::clone(&upload));
        Some((parts, path, Either::Left(body)))
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;

    use super::*;

    fn lines(headers: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
        headers
            .iter()
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect()
    }

    /// The output type of `f`, whatever its arguments, without calling it.
    fn size_of_output<F, A, B, C, R>(_: &F) -> usize
    where
        F: FnOnce(A, B, C) -> R,
    {
        std::mem::size_of::<R>()
    }

    /// The request path's future is allocated per request (`server::request_within_limits`);
    /// above 1,032 bytes glibc's malloc serves it from its bins instead of its per-thread cache,
    /// ~250 instructions for the allocation instead of ~40 (docs/bench-2026-12-01d-instructions.md).
    /// This bounds the test build's layout; the release build's is checked by the profile.
    #[test]
    fn the_request_future_fits_glibcs_per_thread_cache() {
        let size = size_of_output(&handle);
        assert!(size <= 1032, "the request path's future is {size} bytes");
    }

    #[test]
    fn a_retry_sends_the_same_method_path_and_header_lines_in_the_same_order() {
        let request = Request::put("/a?b")
            .header("x-one", "1")
            .header("accept", "text/plain")
            .header("x-one", "2")
            .header(HOST, "shop.test")
            .header("accept", "*/*")
            .body(())
            .unwrap();
        let (parts, ()) = request.into_parts();
        let path = Some(PathAndQuery::from_static("/a?b"));
        let line = RequestLine {
            method: parts.method.clone(),
            path: path.clone(),
        };
        let (again, again_path, _) = Retry::of(&parts, None).into_attempt(&line).unwrap();
        assert_eq!(again.method, Method::PUT);
        assert_eq!(again_path, path);
        assert_eq!(lines(&again.headers), lines(&parts.headers));
        assert_eq!(again.headers.get_all("x-one").iter().count(), 2);
    }
}
