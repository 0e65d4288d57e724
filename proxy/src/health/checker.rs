//! The active health check of one endpoint: `GET path` every `interval`, 2xx within `timeout` is
//! a success; `fall` failures in a row mark it down, `rise` successes in a row mark it up.
//!
//! Probes speak the backend's protocol (HTTP/1.1, or h2c prior knowledge). Each probe opens a
//! fresh connection (no pooling), so a process that accepts in the kernel but
//! never answers (stopped with SIGSTOP) fails by timeout, and a dead one by refusal. The connection
//! always goes to the endpoint; the probe's URI names `health.host` (default: the endpoint's
//! `ip:port`), which is the `Host` of an HTTP/1.1 probe and the `:authority` of an h2c one.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::time::MissedTickBehavior;

use super::{EjectReason, EndpointHealth, Hub, ProxyEvent, SlotHealth};
use crate::config::{HealthConfig, UpstreamProtocol};
use crate::weight::Slot;

type ProbeClient = Client<EndpointConnector, Empty<Bytes>>;

/// Connects every probe to one endpoint, whatever authority its URI names.
#[derive(Clone, Copy, Debug)]
struct EndpointConnector(SocketAddr);

/// One endpoint's checker; [`Checker::run`] ends when the endpoint's state is dropped or the task
/// is aborted (the endpoint left the table).
pub(crate) struct Checker {
    pub(crate) route: Arc<str>,
    pub(crate) slot: Slot,
    pub(crate) endpoint: Weak<EndpointHealth>,
    pub(crate) config: HealthConfig,
    /// The backend's protocol, which the probes speak.
    pub(crate) protocol: UpstreamProtocol,
    pub(crate) hub: Arc<Hub>,
    pub(crate) state: Arc<SlotHealth>,
}

/// Consecutive results, the rise/fall arithmetic kept apart from I/O so it can be tested alone.
#[derive(Debug, Default)]
pub(crate) struct Streak {
    successes: u32,
    failures: u32,
}

impl Streak {
    /// Counts one probe result; returns the new verdict when `rise`/`fall` is reached, given the
    /// verdict `up` in force.
    pub(crate) fn observe(&mut self, ok: bool, up: bool, config: &HealthConfig) -> Option<bool> {
        if ok {
            self.successes += 1;
            self.failures = 0;
            (!up && self.successes >= config.rise).then_some(true)
        } else {
            self.failures += 1;
            self.successes = 0;
            (up && self.failures >= config.fall).then_some(false)
        }
    }

    /// Whether the last result made the run of failures reach `fall` exactly: the probe at which
    /// the checks' verdict turns down, whatever the verdict in force was.
    pub(crate) fn fell_now(&self, config: &HealthConfig) -> bool {
        self.failures == config.fall
    }
}

/// What a probe result means for an endpoint, apart from the rise/fall arithmetic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Hold {
    /// Held out by an outlier ejection alone, whose backoff is over, and the probe passed: back.
    Readmit,
    /// Held out by an outlier ejection alone, which still runs, and the probe passed: nothing to
    /// say yet.
    Wait,
    /// Anything else: the checks' own verdict (`rise`/`fall`) decides.
    Checks,
}

impl Hold {
    /// `held`: taken out by an ejection while the checks never failed; `ok`: the probe passed;
    /// `ejected`: the ejection's backoff still runs.
    pub(crate) fn of(held: bool, ok: bool, ejected: bool) -> Hold {
        match (held && ok, ejected) {
            (true, false) => Hold::Readmit,
            (true, true) => Hold::Wait,
            (false, _) => Hold::Checks,
        }
    }
}

impl Checker {
    pub(crate) async fn run(self) {
        let Some(addr) = self.endpoint.upgrade().map(|e| e.addr()) else {
            return;
        };
        let client = client(self.protocol, addr);
        let uri = probe_uri(addr, &self.config);
        let mut streak = Streak::default();
        // The checks' own verdict was down and said so (logged, counted).
        let mut reported_down = false;
        let mut ticks = tokio::time::interval(self.config.interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let result = self.probe(&client, &uri).await;
            let Some(endpoint) = self.endpoint.upgrade() else {
                return;
            };
            let cause = result.err().map(|e| Arc::<str>::from(e.to_string()));
            let ok = cause.is_none();
            endpoint.set_check_failure(cause.clone());
            if endpoint.awaiting_first_check() {
                if ok {
                    self.first_pass(&endpoint);
                } else if endpoint.fail_first_check() {
                    self.first_fail(&endpoint, cause.as_deref().unwrap_or(""));
                }
                // Requests waiting for first probes look again ([`super::first_probes`]).
                self.hub.first_probes.notify_waiters();
                continue;
            }
            let cause = cause.as_deref().unwrap_or("");
            let checked_up = endpoint.checked_up();
            // Taken out by an outlier ejection (which marks the checks' verdict down) while the
            // checks themselves never failed: the endpoint waits for its backoff to end and
            // then for one probe to pass, and that is a re-admission, not a pass of checks that
            // never failed (trial 11, L7).
            let held = !checked_up && !reported_down;
            let verdict = streak.observe(ok, checked_up, &self.config);
            match Hold::of(
                held,
                ok,
                endpoint.ejected_for_ms(self.hub.now_ms()).is_some(),
            ) {
                Hold::Readmit => self.readmit(&endpoint),
                Hold::Wait => {}
                Hold::Checks => {
                    if let Some(up) = verdict {
                        self.apply(&endpoint, up, cause);
                        reported_down = !up;
                    } else if held && streak.fell_now(&self.config) {
                        // Down already, held there by an outlier ejection: the checks failing is
                        // still logged and counted, so that the log has the down transition
                        // before its "passed its health checks" (trial 8, H6).
                        self.report_down(&endpoint, cause);
                        reported_down = true;
                    }
                }
            }
        }
    }

    /// The first probe of an endpoint held out until one passes passed: it takes requests from now on,
    /// which is logged and broadcast ([`ProxyEvent::EndpointUp`]) as any pass of the checks is.
    fn first_pass(&self, endpoint: &EndpointHealth) {
        if !endpoint.pass_first_check() {
            return;
        }
        let (route, backend, addr) = (self.route.to_string(), self.slot, endpoint.addr());
        tracing::info!(%route, %backend, endpoint = %addr, "endpoint passed its first health check");
        self.hub.send(ProxyEvent::EndpointUp {
            route,
            backend,
            endpoint: addr,
        });
    }

    /// The first probe of an endpoint held out until one passes failed: it stays out, and the
    /// log says why once (later failures are not repeated; `/status` has the last cause).
    fn first_fail(&self, endpoint: &EndpointHealth, cause: &str) {
        let (route, backend, addr) = (&self.route, self.slot, endpoint.addr());
        tracing::warn!(
            %route, %backend, endpoint = %addr, cause,
            "endpoint failed its first health check: no request until a probe passes"
        );
    }

    /// Puts back an endpoint that an outlier ejection held out while its checks passed: its
    /// ejection count decays from now ([`EndpointHealth::readmit_by_check`]), and the
    /// re-admission is logged ("endpoint re-admitted after its ejection") and broadcast
    /// ([`ProxyEvent::EndpointReadmitted`]), as one without checks is.
    fn readmit(&self, endpoint: &EndpointHealth) {
        // Recorded before the verdict turns up, so that no endpoint pick finds the ejection due
        // and reports the re-admission a second time.
        endpoint.readmit_by_check(self.hub.now_ms());
        if !endpoint.set_checked(true) {
            return;
        }
        let (route, backend, addr) = (self.route.to_string(), self.slot, endpoint.addr());
        tracing::info!(
            %route, %backend, endpoint = %addr,
            "endpoint re-admitted after its ejection: backoff over and a health check passed"
        );
        self.hub.send(ProxyEvent::EndpointReadmitted {
            route,
            backend,
            endpoint: addr,
        });
    }

    /// One probe of this checker's endpoint ([`exchange`]).
    async fn probe(&self, client: &ProbeClient, uri: &Uri) -> Result<(), ProbeFailure> {
        exchange(client, uri, &self.config.path, self.config.timeout).await
    }

    fn apply(&self, endpoint: &EndpointHealth, up: bool, cause: &str) {
        if up {
            // An ejection whose backoff is over ends with this pass ("passed its health checks"
            // says it); one still running ends with its backoff, and says so then.
            endpoint.readmit_by_check(self.hub.now_ms());
        }
        if !endpoint.set_checked(up) {
            return;
        }
        let (route, backend, addr) = (self.route.to_string(), self.slot, endpoint.addr());
        if up {
            tracing::info!(%route, %backend, endpoint = %addr, "endpoint passed its health checks");
            self.hub.send(ProxyEvent::EndpointUp {
                route,
                backend,
                endpoint: addr,
            });
        } else {
            self.report_down(endpoint, cause);
        }
    }

    /// Logs (with `cause`, why the last probe failed), counts
    /// (`crossfade_ejections_total{reason="health_check"}`) and broadcasts that `endpoint` failed
    /// its checks (`fall` failures in a row).
    fn report_down(&self, endpoint: &EndpointHealth, cause: &str) {
        let (route, backend, addr) = (self.route.to_string(), self.slot, endpoint.addr());
        tracing::warn!(
            %route, %backend, endpoint = %addr, cause,
            "endpoint failed its health checks"
        );
        self.state.count_ejection(EjectReason::HealthCheck);
        self.hub.send(ProxyEvent::EndpointDown {
            route,
            backend,
            endpoint: addr,
            reason: EjectReason::HealthCheck,
        });
    }
}

/// The `User-Agent` of every probe (the active health checks, [`probe_once`], and so `crossfade
/// run`'s readiness probes): a backend tells them from clients by it, in its access log or its
/// metrics, as Envoy's `Envoy/HC` lets it (RFC 9110 §10.1.5).
pub const PROBE_USER_AGENT: &str = "crossfade-probe";

/// Why one probe failed ([`probe_once`], the active health checks). Its `Display` is the words
/// of the checks' log and `/status`: `connect failed: Connection refused (os error 111)`,
/// `timeout after 1000 ms waiting for GET /healthz`, `status 503 from GET /healthz`, `GET
/// /healthz failed: ...`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeFailure {
    /// The request could not be built from `path` (not a valid request target).
    NotSent {
        /// The probe's path.
        path: String,
        /// Why, in the `http` crate's words.
        why: String,
    },
    /// The connection could not be made (`why`: the innermost I/O error).
    Connect(String),
    /// A response head came, with a status that is not 2xx.
    Status {
        /// The response's status code (RFC 9110 §15).
        status: u16,
        /// The probe's path.
        path: String,
    },
    /// The connection was made but no response head came: it did not parse (for an HTTP/2 probe,
    /// a server that speaks only HTTP/1.1, and the other way round), or the connection closed
    /// or was reset first.
    NoAnswer {
        /// The probe's path.
        path: String,
        /// The client's error and its innermost source.
        why: String,
    },
    /// No response head within the probe's timeout.
    Timeout {
        /// The probe's path.
        path: String,
        /// The timeout, in milliseconds.
        ms: u128,
    },
}

impl std::fmt::Display for ProbeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProbeFailure::NotSent { path, why } => write!(f, "GET {path} not sent: {why}"),
            ProbeFailure::Connect(why) => write!(f, "connect failed: {why}"),
            ProbeFailure::Status { status, path } => write!(f, "status {status} from GET {path}"),
            ProbeFailure::NoAnswer { path, why } => write!(f, "GET {path} failed: {why}"),
            ProbeFailure::Timeout { path, ms } => {
                write!(f, "timeout after {ms} ms waiting for GET {path}")
            }
        }
    }
}

impl std::error::Error for ProbeFailure {}

/// One probe of `endpoint` as the active health checks send it, on a fresh connection: `GET
/// path` in `protocol` (HTTP/1.1, or h2c with prior knowledge, RFC 9113 §3.3) with the endpoint's
/// `ip:port` as `Host` / `:authority`, judged by the checks' rule: passed iff the response head is
/// 2xx within `timeout`. A gRPC server's answer passes by its head too (its `grpc-status`, in the
/// head or the trailers, is not read), as it does for the checks. `crossfade run`'s readiness
/// probe of an h2c workload is this one, so that readiness and the proxy's checks agree.
///
/// # Errors
/// Why the probe failed ([`ProbeFailure`]), in the words of the checks' log and `/status`.
pub async fn probe_once(
    endpoint: SocketAddr,
    protocol: UpstreamProtocol,
    path: &str,
    timeout: std::time::Duration,
) -> Result<(), ProbeFailure> {
    let uri: Uri =
        format!("http://{endpoint}{path}")
            .parse()
            .map_err(|e| ProbeFailure::NotSent {
                path: path.to_owned(),
                why: format!("{e}"),
            })?;
    exchange(&client(protocol, endpoint), &uri, path, timeout).await
}

/// One probe: `Ok` for a 2xx within `timeout`, else why not ([`ProbeFailure`]).
async fn exchange(
    client: &ProbeClient,
    uri: &Uri,
    path: &str,
    timeout: std::time::Duration,
) -> Result<(), ProbeFailure> {
    let path = || path.to_owned();
    let request = Request::get(uri.clone())
        .header(http::header::USER_AGENT, PROBE_USER_AGENT)
        .body(Empty::new())
        .map_err(|e| ProbeFailure::NotSent {
            path: path(),
            why: format!("{e}"),
        })?;
    match tokio::time::timeout(timeout, client.request(request)).await {
        Ok(Ok(response)) if response.status().is_success() => Ok(()),
        Ok(Ok(response)) => Err(ProbeFailure::Status {
            status: response.status().as_u16(),
            path: path(),
        }),
        Ok(Err(error)) => Err(failure_cause(&error, path())),
        Err(_) => Err(ProbeFailure::Timeout {
            path: path(),
            ms: timeout.as_millis(),
        }),
    }
}

/// Why a probe that got no response failed: [`ProbeFailure::Connect`] with the innermost I/O
/// error when the connection could not be made, else [`ProbeFailure::NoAnswer`] with the error
/// and its innermost source.
fn failure_cause(error: &hyper_util::client::legacy::Error, path: String) -> ProbeFailure {
    use std::error::Error as _;
    let mut innermost = error.source();
    while let Some(source) = innermost.and_then(|e| e.source()) {
        innermost = Some(source);
    }
    match innermost {
        Some(source) if error.is_connect() => ProbeFailure::Connect(source.to_string()),
        Some(source) => ProbeFailure::NoAnswer {
            path,
            why: format!("{error}: {source}"),
        },
        None => ProbeFailure::NoAnswer {
            path,
            why: error.to_string(),
        },
    }
}

fn client(protocol: UpstreamProtocol, addr: SocketAddr) -> ProbeClient {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .http2_only(protocol == UpstreamProtocol::H2c)
        .build(EndpointConnector(addr))
}

/// `http://<host><path>`, where `host` is `health.host` or else the endpoint's `ip:port`.
/// hyper's client sends the URI's authority as `Host` (HTTP/1.1, with the path in origin form)
/// or `:authority` (HTTP/2).
fn probe_uri(addr: SocketAddr, config: &HealthConfig) -> Uri {
    let uri = match &config.host {
        Some(host) => format!("http://{host}{}", config.path),
        None => format!("http://{addr}{}", config.path),
    };
    // Both parts are validated with the config; the fallback is never used.
    uri.parse().unwrap_or_else(|_| Uri::from_static("/"))
}

// === impl EndpointConnector ===

impl tower::Service<Uri> for EndpointConnector {
    type Response = TokioIo<TcpStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TokioIo<TcpStream>>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let addr = self.0;
        Box::pin(async move {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            Ok(TokioIo::new(stream))
        })
    }
}
