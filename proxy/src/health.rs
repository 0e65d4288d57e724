//! Endpoint health and the preview's circuit breaker: which endpoints and backends may take a
//! request now, kept in atomics so the request path takes no lock.
//!
//! Three signals, none of which ever changes a configured weight:
//! - **active checks** (`routes[].health`, opt-in): one task per endpoint probes `GET path`;
//!   `fall` failures in a row mark it down, `rise` successes mark it up ([`checker`]);
//! - **passive outlier ejection** (`routes[].outlier`, on for upstream failures): consecutive
//!   failures (or 5xx, opt-in) of live requests eject an endpoint for `base_ejection` times its
//!   ejection count (1 s, 2 s, 3 s... up to 30 s by default), a count that drops by one per
//!   `decay_interval` re-admitted without an ejection (Envoy's outlier detection rule, see
//!   [`OutlierConfig`]): an endpoint that fails most requests but answers some is kept out longer
//!   and longer. The count's decay runs from the endpoint's re-admission: without active checks,
//!   the end of its backoff; with them, the probe that passes after it (an ejected endpoint waits
//!   for one). Either way the re-admission is logged ("endpoint re-admitted after its ejection")
//!   and broadcast ([`ProxyEvent::EndpointReadmitted`]); "endpoint passed its health checks" is
//!   said only when the checks themselves had failed;
//! - **the breaker** (`routes[].breaker`, opt-in): the preview backend's error rate over a short
//!   window trips it, which gives that backend an effective weight of 0 until the route's weights
//!   are next set ([`breaker`]).
//!
//! The weighted pick stays [`Weights::pick`](crate::Weights::pick) on the configured weights. When
//! the picked backend cannot serve (no endpoint up, or tripped), the request goes to the other
//! backend if that one can serve and has weight or is the active slot (a preview at weight 0 never
//! gets a request, C03). When the backend recovers, the very next pick follows the configured
//! split again (C14), since nothing was rewritten.
//!
//! When *no* backend the request may take can serve, the route **fails open**
//! (`routes[].fail_open`, on by default; [`fail_open`]): rather than 503, the request goes to the
//! backend its weighted pick chose (else the other one, on the same terms as above) and to an
//! endpoint health holds out there, by the backend's balancing policy. A health verdict against
//! every endpoint at once is more often the checks' mistake (a probe path typo reloaded by SIGHUP,
//! a patched `/healthz` answering 404, a check timing out under load, ejections after one burst
//! of 5xx) than every instance dead; Envoy's panic threshold and nginx's "all peers failed, mark
//! them as live" answer the same. Three things stay excluded: an endpoint that never passed a
//! check (C02: no check found it ready), a weight-0 preview (C03), and a backend whose breaker
//! tripped (a verdict on the version's live requests, not a guess of the probes): with only that
//! one left, the client gets 503. A request `forced` by the tester override never fails open.
//! The route enters the state at its first request sent so and leaves it at the first request
//! health routes again, each logged once at warn; requests sent so are counted
//! (`crossfade_fail_open_requests_total`) besides the backend's ordinary counters, which the
//! analysis reads as always. With `fail_open: false`, the client gets 503 "no endpoint".
//!
//! An endpoint of a route with active checks starts **held out** until its first probe passes
//! (one pass, as Envoy's first check of a new host; probed at once, not after one `interval`),
//! whether it came with the config the proxy started with, a SIGHUP reload, the admin API or a
//! rollout's preview: no request reaches an instance no check has found ready (C02). Envoy warms
//! a cluster the same way, holding its hosts until the first health check round. An endpoint of
//! a route without active checks is trusted until it fails (the controller adds a preview
//! endpoint only after its readiness probe passed). State lives per (route, slot, endpoint) in
//! the [`HealthRegistry`] and survives table swaps for as long as the endpoint stays.
//!
//! While endpoints await their first probe, a request whose route has no backend that can serve
//! **waits** for those first probes rather than get 503 at once: at most the route's
//! `health.timeout` plus [`FIRST_PROBE_SLACK`], since every first probe has a result by then (a
//! refused connect or an answer takes a round trip; a hang ends at the timeout). It goes on as
//! soon as a backend it may take can serve, or gets the ordinary 503 "no endpoint" once every
//! first probe failed. A route with an endpoint up does not wait: the other backend takes the
//! share of one whose endpoints await their probes (weights unchanged, as above). `GET /readyz`
//! answers 503 until the first probe round of the proxy's start is over
//! ([`HealthRegistry::first_probes_pending`]), so a load balancer sends it nothing meanwhile.

pub(crate) mod breaker;
pub(crate) mod checker;
mod event;
pub(crate) mod metrics;
mod registry;
pub(crate) mod report;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering, Ordering::Relaxed};
use std::sync::Arc;

use http::StatusCode;

use tokio::time::Instant;

use crate::balance::{self, Balance, EndpointLoad, Pending};
use crate::config::{BalancePolicy, BreakerConfig, OutlierConfig, RouteConfig};
use crate::error::ErrorKind;
use crate::table::{Backend, Route};
use crate::weight::Slot;

pub use checker::{probe_once, ProbeFailure, PROBE_USER_AGENT};
pub use event::{EjectReason, ProxyEvent};
pub use registry::{EjectedEndpoint, PassedCheck, TrippedBreaker};
pub(crate) use registry::{HealthRegistry, Hub, SlotHealth};

/// The health of one endpoint of one backend: written by live requests and by its checker.
#[derive(Debug)]
pub struct EndpointHealth {
    addr: SocketAddr,
    /// The active checks' verdict; true when no checks run.
    checked_up: AtomicBool,
    /// Of a route with active checks and new to the registry: held out (`checked_up` false)
    /// until its first probe passes, since no check has yet said it can serve (C02).
    first_check: AtomicBool,
    /// A health check passed for it in the process this one took over from at a binary upgrade
    /// ([`EndpointHealth::inherit_pass`]): held out until a probe passes here too, but a request
    /// may fail open to it ([`EndpointHealth::passed_a_check`]), as it could in that process.
    passed_before: AtomicBool,
    /// Its first probe has a result (passed or failed), or no first probe holds it: false only
    /// while a request may wait for that probe ([`first_probes`]). Written after `checked_up`
    /// (release), read with acquire, so that a reader that sees the result sees its verdict.
    probed: AtomicBool,
    /// The outlier ejection's state, an [`Ejection`] in one word (so that its end and the start
    /// of the count's decay change together): never ejected, ejected until a time, or re-admitted
    /// at a time; times in milliseconds on the hub's clock.
    ejection: AtomicU64,
    /// The ejection count the backoff multiplies (Envoy's): the decayed count plus one, stored at
    /// each ejection; it decays by one per `decay_interval` since the endpoint's re-admission
    /// ([`OutlierConfig::decayed_count`]), which is computed when read, not written here.
    ejections: AtomicU32,
    /// Upstream failures in a row.
    failures: AtomicU32,
    /// 5xx responses in a row.
    server_errors: AtomicU32,
    /// Withdrawn by whoever runs the endpoint's server ([`EndpointHealth::set_withdrawn`]): it
    /// knows the server is gone (a supervised process that exited and is not ready again), so
    /// whatever answers on the address now is not the backend. Held out of every request,
    /// failing open included, until restored.
    withdrawn: AtomicBool,
    /// Requests in flight and the RTT estimate, for the balancer ([`crate::balance`]).
    load: EndpointLoad,
    /// Why the last active probe failed (see [`checker`]); `None` once a probe passes. Written by
    /// the checker, read by `/status` only (never on the request path).
    check_failure: std::sync::Mutex<Option<Arc<str>>>,
}

/// The health view of one backend in one table: its endpoints' health (in endpoint order), its
/// long-lived per-slot state and the route's outlier and breaker settings.
#[derive(Debug)]
pub struct BackendHealth {
    route: Arc<str>,
    slot: Slot,
    endpoints: Box<[Arc<EndpointHealth>]>,
    outlier: OutlierConfig,
    breaker: Option<BreakerConfig>,
    /// The route's `health.timeout` when it has active checks (`None` without): how long a first
    /// probe takes at most, the bound of a request's wait for one ([`first_probes`]). With checks,
    /// an ejected endpoint also waits for them to pass.
    probe_timeout: Option<std::time::Duration>,
    /// How requests are spread over the endpoints (the route's resolved `balance`).
    balance: Balance,
    /// The route's `fail_open`: whether a request that no backend can serve goes to an endpoint
    /// health holds out ([`fail_open`]).
    fail_open: bool,
    state: Arc<SlotHealth>,
    hub: Arc<Hub>,
}

// === impl EndpointHealth ===

impl EndpointHealth {
    /// A fresh endpoint first seen at `now_ns` on the hub's clock: up, or, when `awaiting_check`,
    /// held out until its first probe passes ([`EndpointHealth::pass_first_check`]).
    pub(crate) fn fresh(addr: SocketAddr, now_ns: u64, awaiting_check: bool) -> EndpointHealth {
        EndpointHealth {
            addr,
            load: EndpointLoad::new(now_ns),
            checked_up: AtomicBool::new(!awaiting_check),
            first_check: AtomicBool::new(awaiting_check),
            passed_before: AtomicBool::new(false),
            probed: AtomicBool::new(!awaiting_check),
            withdrawn: AtomicBool::new(false),
            ejection: AtomicU64::new(Ejection::Never.encode()),
            ejections: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            server_errors: AtomicU32::new(0),
            check_failure: std::sync::Mutex::new(None),
        }
    }

    /// The endpoint's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether the endpoint may take a request at `now_ms`: checks pass, no ejection runs and it
    /// is not withdrawn.
    #[inline]
    pub fn is_up(&self, now_ms: u64) -> bool {
        self.admission(|| now_ms) != Admission::Down
    }

    /// Whether the endpoint may take a request, reading the clock only while an ejection is not
    /// yet over and recorded as such, so the request path of a healthy backend reads no clock.
    #[inline]
    fn admission(&self, now_ms: impl FnOnce() -> u64) -> Admission {
        if !self.checked_up.load(Relaxed) || self.withdrawn.load(Relaxed) {
            return Admission::Down;
        }
        match Ejection::decode(self.ejection.load(Relaxed)) {
            Ejection::Never | Ejection::Readmitted(_) => Admission::Up,
            Ejection::Until(until) if until <= now_ms() => Admission::Due,
            Ejection::Until(_) => Admission::Down,
        }
    }

    /// Records the end of an ejection whose backoff is over at `now_ms`: the endpoint is
    /// re-admitted at `at(until)`, `until` being the backoff's end, and the ejection count decays
    /// from then. True for the one caller that recorded it; false when no ejection was due (none,
    /// one still running, or one already ended).
    fn readmit(&self, now_ms: u64, at: impl FnOnce(u64) -> u64) -> bool {
        let current = self.ejection.load(Relaxed);
        let Ejection::Until(until) = Ejection::decode(current) else {
            return false;
        };
        if until > now_ms {
            return false;
        }
        let readmitted = Ejection::Readmitted(at(until)).encode();
        self.ejection
            .compare_exchange(current, readmitted, Relaxed, Relaxed)
            .is_ok()
    }

    /// Records, at `now_ms`, that a passing health check put the endpoint back (see
    /// [`checker`]): an ejection whose backoff is over ends now, and the ejection count decays
    /// from now, not from the backoff's end (Envoy lowers the multiplier only while the host is
    /// back in service). No effect when no ejection is due.
    pub(crate) fn readmit_by_check(&self, now_ms: u64) {
        self.readmit(now_ms, |_| now_ms);
    }

    /// The endpoint's load: requests in flight and RTT estimate.
    pub fn load(&self) -> &EndpointLoad {
        &self.load
    }

    /// The active checks' verdict.
    pub fn checked_up(&self) -> bool {
        self.checked_up.load(Relaxed)
    }

    /// Milliseconds left of the ejection running at `now_ms`, if one runs.
    pub fn ejected_for_ms(&self, now_ms: u64) -> Option<u64> {
        match Ejection::decode(self.ejection.load(Relaxed)) {
            Ejection::Until(until) if until > now_ms => Some(until - now_ms),
            _ => None,
        }
    }

    /// Why the last active probe failed, e.g. `status 503 from GET /healthz`; `None` when the last
    /// probe passed or none ran.
    pub fn check_failure(&self) -> Option<Arc<str>> {
        self.check_failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Records the cause of the last probe's failure, or `None` when it passed.
    pub(crate) fn set_check_failure(&self, cause: Option<Arc<str>>) {
        *self
            .check_failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = cause;
    }

    /// Sets the checks' verdict; returns true when it changed.
    pub(crate) fn set_checked(&self, up: bool) -> bool {
        self.checked_up.swap(up, Relaxed) != up
    }

    /// Whether the endpoint is held out until its first probe passes.
    pub(crate) fn awaiting_first_check(&self) -> bool {
        self.first_check.load(Relaxed)
    }

    /// Its first probe passed: the endpoint is up. True when it was awaiting that probe.
    pub(crate) fn pass_first_check(&self) -> bool {
        let was = self.first_check.swap(false, Relaxed);
        self.checked_up.store(true, Relaxed);
        self.probed.store(true, Ordering::Release);
        was
    }

    /// Its first probe failed: still held out, but no longer awaited by requests or readiness.
    /// True for the first result.
    pub(crate) fn fail_first_check(&self) -> bool {
        !self.probed.swap(true, Ordering::AcqRel)
    }

    /// Whether a request failing open may go to it ([`fail_open`]): it passed a health check
    /// once (or its route has none) and is not withdrawn. One that never passed gets nothing,
    /// however the route fails open: no check has found it ready (C02); nor does one withdrawn:
    /// its server is known to be gone, which no check's mistake can be.
    pub fn passed_a_check(&self) -> bool {
        (!self.first_check.load(Relaxed) || self.passed_before.load(Relaxed))
            && !self.withdrawn.load(Relaxed)
    }

    /// Whether it is withdrawn ([`EndpointHealth::set_withdrawn`]).
    pub fn withdrawn(&self) -> bool {
        self.withdrawn.load(Relaxed)
    }

    /// Withdraws the endpoint from every request (`true`) or restores it (`false`): what runs
    /// its server says it is gone, or back. Envoy's EDS `health_status: UNHEALTHY`, which the
    /// control plane sets whatever the checks say. Returns true when it changed.
    pub(crate) fn set_withdrawn(&self, withdrawn: bool) -> bool {
        self.withdrawn.swap(withdrawn, Relaxed) != withdrawn
    }

    /// A health check passed for it in the process this one takes over from (a binary upgrade):
    /// it still waits for its first probe here, but counts as [`EndpointHealth::passed_a_check`].
    pub(crate) fn inherit_pass(&self) {
        self.passed_before.store(true, Relaxed);
    }

    /// Its outlier ejection at `now_ms`, as a binary upgrade hands it to the successor: the
    /// milliseconds left of a running ejection (`ejected_for_ms`), or since its re-admission
    /// (`back_for_ms`, from which its count decays), and the count stored at its last ejection.
    /// `None` for an endpoint never ejected.
    pub(crate) fn handed_ejection(&self, now_ms: u64) -> Option<(u64, u64, u32)> {
        let count = self.ejections.load(Relaxed);
        match Ejection::decode(self.ejection.load(Relaxed)) {
            Ejection::Never => None,
            Ejection::Until(until) if until > now_ms => Some((until - now_ms, 0, count)),
            // A backoff over and not yet recorded: back since its end.
            Ejection::Until(at) | Ejection::Readmitted(at) => {
                Some((0, now_ms.saturating_sub(at), count))
            }
        }
    }

    /// Takes on, at `now_ms`, the ejection the process this one took over from had
    /// ([`EndpointHealth::handed_ejection`]): ejected for the `ejected_for_ms` left of it, or
    /// back for `back_for_ms` (since this process's clock origin at most), with the ejection
    /// count `count`, so that its backoff, and the next one's length, go on as they would have.
    pub(crate) fn inherit_ejection(
        &self,
        now_ms: u64,
        (ejected_for_ms, back_for_ms, count): (u64, u64, u32),
    ) {
        let state = if ejected_for_ms > 0 {
            Ejection::Until(now_ms.saturating_add(ejected_for_ms).min(Ejection::MAX_MS))
        } else {
            Ejection::Readmitted(now_ms.saturating_sub(back_for_ms))
        };
        self.ejections.store(count, Relaxed);
        self.ejection.store(state.encode(), Relaxed);
    }

    /// Whether its first probe has yet to give a result (pass or fail).
    pub fn awaiting_first_probe(&self) -> bool {
        !self.probed.load(Ordering::Acquire)
    }

    /// The ejection count at `now_ms` under `outlier`: as it stood at the last ejection until the
    /// endpoint is re-admitted (during the backoff, and after it while a health check has yet to
    /// pass), then decayed by the time since the re-admission (0 for an endpoint never ejected).
    pub fn ejection_count(&self, outlier: &OutlierConfig, now_ms: u64) -> u32 {
        let state = Ejection::decode(self.ejection.load(Relaxed));
        Self::count_in(state, self.ejections.load(Relaxed), outlier, now_ms)
    }

    /// The ejection count `count` stored at the last ejection, as it stands at `now_ms` in `state`.
    fn count_in(state: Ejection, count: u32, outlier: &OutlierConfig, now_ms: u64) -> u32 {
        match state {
            Ejection::Never | Ejection::Until(_) => count,
            Ejection::Readmitted(at) => {
                let back = std::time::Duration::from_millis(now_ms.saturating_sub(at));
                outlier.decayed_count(count, back)
            }
        }
    }

    /// Ejects for the next backoff of `outlier` unless an ejection runs; returns its length and
    /// the endpoint's ejection count with it (the decayed count plus one, at most
    /// [`OutlierConfig::max_ejection_count`]).
    fn eject(&self, outlier: &OutlierConfig, now_ms: u64) -> Option<(std::time::Duration, u32)> {
        let current = self.ejection.load(Relaxed);
        let state = Ejection::decode(current);
        if matches!(state, Ejection::Until(until) if until > now_ms) {
            return None;
        }
        let count = Self::count_in(state, self.ejections.load(Relaxed), outlier, now_ms)
            .saturating_add(1)
            .min(outlier.max_ejection_count());
        let backoff = outlier.ejection(count);
        let until = now_ms
            .saturating_add(u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX))
            .clamp(now_ms + 1, Ejection::MAX_MS);
        // Only one of several racing failures ejects.
        self.ejection
            .compare_exchange(current, Ejection::Until(until).encode(), Relaxed, Relaxed)
            .ok()?;
        self.ejections.store(count, Relaxed);
        Some((backoff, count))
    }
}

/// Whether an endpoint may take a request, by its checks and its ejection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Admission {
    Up,
    /// Up: its ejection's backoff is over, and its re-admission is not recorded yet (see
    /// [`BackendHealth::admits`]).
    Due,
    Down,
}

/// The outlier ejection state of an endpoint, as [`EndpointHealth`] keeps it in one `u64`: the
/// top bit set for [`Ejection::Readmitted`], the time in the other bits; 0 for
/// [`Ejection::Never`]. Times are milliseconds on the hub's clock (since the proxy was built).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ejection {
    /// Never ejected.
    Never,
    /// Ejected until this time (above 0); past it, back but not yet recorded as re-admitted.
    Until(u64),
    /// Re-admitted at this time after an ejection: the ejection count decays from here.
    Readmitted(u64),
}

impl Ejection {
    const READMITTED: u64 = 1 << 63;
    /// The latest time the encoding holds (292 million years of uptime).
    const MAX_MS: u64 = Self::READMITTED - 1;

    fn decode(word: u64) -> Ejection {
        match word {
            0 => Ejection::Never,
            w if w & Self::READMITTED != 0 => Ejection::Readmitted(w & Self::MAX_MS),
            until => Ejection::Until(until),
        }
    }

    fn encode(self) -> u64 {
        match self {
            Ejection::Never => 0,
            Ejection::Until(until) => until.clamp(1, Self::MAX_MS),
            Ejection::Readmitted(at) => Self::READMITTED | at.min(Self::MAX_MS),
        }
    }
}

// === impl BackendHealth ===

impl BackendHealth {
    /// Whether this view was built for the same health settings as `route` has now, and the same
    /// resolved `balance`.
    pub(crate) fn matches(&self, route: &RouteConfig, balance: &Balance) -> bool {
        self.balance == *balance
            && self.fail_open == route.fail_open
            && self.outlier == route.outlier
            && self.breaker == route.breaker
            && self.probe_timeout == route.health.as_ref().map(|h| h.timeout)
    }

    /// Whether an endpoint of this backend awaits the result of its first probe.
    #[cold]
    pub fn awaiting_first_probe(&self) -> bool {
        self.endpoints.iter().any(|e| e.awaiting_first_probe())
    }

    /// How many of the backend's first `configured` endpoints can take requests now (not
    /// ejected, passing their checks); an endpoint without health state counts as up, as in the
    /// endpoint pick.
    pub fn healthy_endpoints(&self, configured: usize) -> usize {
        let clock = LazyClock::new(&self.hub);
        (0..configured)
            .filter(|&i| self.endpoints.get(i).is_none_or(|e| self.admits(e, &clock)))
            .count()
    }

    /// Whether `endpoint` may take a request now. The first caller to find its ejection's
    /// backoff over records the re-admission ([`BackendHealth::readmitted`]): an endpoint pick,
    /// `/status` or the rollback's capacity read, whichever comes first.
    #[inline]
    fn admits(&self, endpoint: &EndpointHealth, clock: &LazyClock<'_>) -> bool {
        match endpoint.admission(|| clock.now()) {
            Admission::Up => true,
            Admission::Down => false,
            Admission::Due => {
                self.readmitted(endpoint, clock.now());
                true
            }
        }
    }

    /// Records that `endpoint`'s backoff is over and it takes requests again (without a check
    /// holding it): re-admitted at the backoff's end, when it became eligible, so the ejection
    /// count decays from then; logged and broadcast once per ejection, as a re-admission by a
    /// probe is ([`ProxyEvent::EndpointReadmitted`]).
    #[cold]
    #[inline(never)]
    fn readmitted(&self, endpoint: &EndpointHealth, now_ms: u64) {
        if !endpoint.readmit(now_ms, |until| until) {
            return;
        }
        let ejections = endpoint.ejection_count(&self.outlier, now_ms);
        let (route, backend, addr) = (self.route.to_string(), self.slot, endpoint.addr);
        tracing::info!(
            %route, %backend, endpoint = %addr, ejections,
            "endpoint re-admitted after its ejection: backoff over"
        );
        self.hub.send(ProxyEvent::EndpointReadmitted {
            route,
            backend,
            endpoint: addr,
        });
    }

    /// The endpoints' health, in endpoint order.
    pub fn endpoints(&self) -> &[Arc<EndpointHealth>] {
        &self.endpoints
    }

    /// The balancing settings the endpoints are chosen by.
    pub fn balance(&self) -> &Balance {
        &self.balance
    }

    /// Each endpoint's RTT estimate now, in seconds, in endpoint order (for `/metrics`).
    pub fn rtt_estimates(&self) -> impl Iterator<Item = (SocketAddr, f64)> + '_ {
        let now = self.hub.now_ns();
        self.endpoints
            .iter()
            .map(move |e| (e.addr, e.load.rtt_ns(&self.balance, now) / 1e9))
    }

    /// A request sent to endpoint `index` at `sent`: it counts as pending (for the balancer) until
    /// the returned record is dropped, which [`Dispatched::responded`] and
    /// [`Dispatched::failed`] do. `None` for an endpoint without health state.
    #[inline]
    pub(crate) fn dispatched(&self, index: usize, sent: Instant) -> Option<Dispatched<'_>> {
        let endpoint = self.endpoints.get(index)?;
        Some(Dispatched {
            pending: endpoint.load.dispatch(&self.balance),
            sent_ns: self.hub.ns_at(sent),
        })
    }

    /// True while the breaker holds this backend at an effective weight of 0.
    pub fn tripped(&self) -> bool {
        self.state.tripped()
    }

    /// Each endpoint's health now, for `/status`.
    pub fn status(&self) -> Vec<crate::status::EndpointStatus> {
        let clock = LazyClock::new(&self.hub);
        let status = |e: &Arc<EndpointHealth>| {
            // First: it records a re-admission that is due, which the count decays from.
            let healthy = self.admits(e, &clock);
            let now = clock.now();
            crate::status::EndpointStatus {
                endpoint: e.addr,
                healthy,
                checked_up: e.checked_up(),
                ejected_for_ms: e.ejected_for_ms(now),
                ejections: e.ejection_count(&self.outlier, now),
                pending: e.load.pending(),
                last_check_failure: e.check_failure().map(|c| c.to_string()),
                awaiting_first_probe: e.awaiting_first_probe(),
                withdrawn: e.withdrawn(),
            }
        };
        self.endpoints.iter().map(status).collect()
    }

    /// Whether a request may go to this backend failing open ([`fail_open`]): its route fails
    /// open, its breaker has not tripped (a trip is the version's verdict on live requests, not a
    /// guess of the checks), and an endpoint of it passed a health check once.
    pub fn may_fail_open(&self) -> bool {
        self.fail_open && !self.state.tripped() && self.endpoints.iter().any(|e| e.passed_a_check())
    }

    /// True while the route fails open: from the first request sent failing open to the first
    /// one health routes again.
    pub fn failing_open(&self) -> bool {
        self.state.failing_open()
    }

    /// Requests sent to this backend failing open since start (per route and slot, across
    /// tables).
    pub fn fail_open_requests(&self) -> u64 {
        self.state.fail_open_requests()
    }

    /// Whether the backend can take a request now: not tripped, and some endpoint up.
    #[inline]
    pub fn can_serve(&self) -> bool {
        if self.state.tripped() {
            return false;
        }
        let clock = LazyClock::new(&self.hub);
        self.endpoints.iter().any(|e| self.admits(e, &clock))
    }

    /// Records a response head from endpoint `index` (`active` is the route's active slot now).
    #[inline]
    pub fn record_status(&self, index: usize, status: StatusCode, active: Slot) {
        self.record_response(index, status.is_server_error(), active);
    }

    /// Records a response from endpoint `index` whose outcome is known: `server_error` for a 5xx,
    /// and for a gRPC server-fault status (see `grpc`), which counts exactly as a 5xx does
    /// (toward `outlier.consecutive_5xx` and in the breaker's window). Once per response.
    #[inline]
    pub fn record_response(&self, index: usize, server_error: bool, active: Slot) {
        if let Some(endpoint) = self.endpoints.get(index) {
            endpoint.failures.store(0, Relaxed);
            if server_error {
                let n = endpoint.server_errors.fetch_add(1, Relaxed) + 1;
                let limit = self.outlier.consecutive_5xx;
                if limit > 0 && n >= limit {
                    self.eject(endpoint, EjectReason::Http5xx);
                }
            } else {
                // A success ends the run of 5xx only: the ejection count decays with quiet time,
                // not with one good answer (an endpoint failing 80 % always has one).
                endpoint.server_errors.store(0, Relaxed);
            }
        }
        self.record_breaker(server_error, active);
    }

    /// Records that endpoint `index` answered with a head whose outcome comes later (a gRPC
    /// status in the trailers, see [`report`]): it is reachable, so its run of upstream failures
    /// ends; the response itself is recorded by [`BackendHealth::record_response`] when the
    /// outcome is known.
    #[inline]
    pub(crate) fn record_reached(&self, index: usize) {
        if let Some(endpoint) = self.endpoints.get(index) {
            endpoint.failures.store(0, Relaxed);
        }
    }

    /// Records an upstream failure of endpoint `index`. Protocol errors say nothing about whether
    /// the endpoint is reachable and do not count toward ejection.
    pub fn record_failure(&self, index: usize, kind: ErrorKind, active: Slot) {
        if let Some(endpoint) = self.endpoints.get(index) {
            if kind != ErrorKind::Protocol {
                let n = endpoint.failures.fetch_add(1, Relaxed) + 1;
                let limit = self.outlier.consecutive_failures;
                if limit > 0 && n >= limit {
                    self.eject(endpoint, EjectReason::UpstreamFailure);
                }
            }
        }
        self.record_breaker(true, active);
    }

    fn eject(&self, endpoint: &EndpointHealth, reason: EjectReason) {
        let clock = LazyClock::new(&self.hub);
        // A response that comes back after the backoff, before anything else looked: the
        // re-admission is said before the next ejection.
        self.admits(endpoint, &clock);
        let Some((backoff, ejections)) = endpoint.eject(&self.outlier, clock.now()) else {
            return;
        };
        endpoint.failures.store(0, Relaxed);
        endpoint.server_errors.store(0, Relaxed);
        self.state.count_ejection(reason);
        let (route, backend, addr) = (&self.route, self.slot, endpoint.addr);
        if self.probe_timeout.is_some() {
            // With active checks, back only once the backoff is over *and* a probe passes after it: a dead endpoint
            // is not re-tried with live requests (a POST could not be re-sent elsewhere). The
            // checker re-admits it (see `checker`).
            endpoint.set_checked(false);
            tracing::warn!(
                %route, %backend, endpoint = %addr, %reason, ?backoff, ejections,
                "endpoint ejected: re-admitted when its backoff is over and a health check passes"
            );
        } else {
            tracing::warn!(
                %route, %backend, endpoint = %addr, %reason, ?backoff, ejections,
                "endpoint ejected: re-admitted when its backoff is over"
            );
        }
        self.hub.send(ProxyEvent::EndpointDown {
            route: self.route.to_string(),
            backend: self.slot,
            endpoint: endpoint.addr,
            reason,
        });
    }

    #[inline]
    fn record_breaker(&self, error: bool, active: Slot) {
        let Some(config) = &self.breaker else {
            return;
        };
        let now = self.hub.now_ms();
        let window = self.state.window();
        window.record(now, config.window, error);
        if !error || self.slot == active || self.state.tripped() {
            return;
        }
        let (requests, errors) = window.totals(now, config.window);
        if requests < config.min_requests
            || errors * 10_000 < u64::from(config.max_error_rate.bp()) * requests
        {
            return;
        }
        if self.state.trip() {
            let error_rate = errors as f64 / requests as f64;
            tracing::warn!(
                route = %self.route, backend = %self.slot, error_rate, requests,
                "circuit breaker tripped: effective weight 0 until the weights are next set"
            );
            self.hub.send(ProxyEvent::BreakerTripped {
                route: self.route.to_string(),
                backend: self.slot,
                error_rate,
                requests,
            });
        }
    }
}

// === request path ===

/// A table payload that carries its backend's [`BackendHealth`].
pub(crate) trait HasHealth {
    fn health(&self) -> &BackendHealth;
}

/// Where a request whose weighted pick was `picked` goes: `picked` when it can serve; else the
/// other backend when it can serve and has weight or is the active slot; else `None` (503).
#[inline]
pub(crate) fn choose<'r, U: HasHealth>(
    route: &'r Route<U>,
    picked: &'r Backend<U>,
) -> Option<&'r Backend<U>> {
    let chosen = if picked.upstream().health().can_serve() {
        Some(picked)
    } else {
        overflow(route, picked)
    };
    if let Some(backend) = chosen {
        // One relaxed load of a flag no request writes while health routes normally.
        if backend.upstream().health().failing_open() {
            stopped_failing_open(route, backend);
        }
    }
    chosen
}

/// Where a request whose weighted pick was `picked` goes when no backend it may take can serve
/// ([`choose`] found none, and no first probe it could use is awaited): `picked` when the route
/// fails open and it may take the request so ([`BackendHealth::may_fail_open`]), else the other
/// backend when it may take `picked`'s requests ([`Route::takes_overflow`]: a weight-0 preview
/// never does, C03) and may fail open; `None` (503) otherwise. So the configured weights split
/// the requests failing open as they split the others. Envoy's panic threshold balances over
/// every host of a cluster once fewer than 50 % are healthy; this fails open only when *no*
/// endpoint can serve, so that health keeps every request off a bad endpoint while one good
/// one is left (C13).
#[cold]
pub(crate) fn fail_open<'r, U: HasHealth>(
    route: &'r Route<U>,
    picked: &'r Backend<U>,
) -> Option<&'r Backend<U>> {
    let may = |b: &Backend<U>| b.upstream().health().may_fail_open();
    if may(picked) {
        return Some(picked);
    }
    let other = route.backend(picked.slot().other());
    (route.takes_overflow(other.slot()) && may(other)).then_some(other)
}

/// Records a request of `route` sent to `backend` failing open: counted
/// (`crossfade_fail_open_requests_total`), and the route's entering the state logged once.
///
/// The state is a flag in both backends' [`SlotHealth`] (next to the breaker's, so that
/// [`choose`] reads it from a line it reads anyway); blue's says whether the change was logged.
#[cold]
pub(crate) fn sent_failing_open<U: HasHealth>(route: &Route<U>, backend: &Backend<U>) {
    let health = backend.upstream().health();
    health.state.count_fail_open();
    if health.state.failing_open() {
        return;
    }
    if mark_failing_open(route, true) {
        tracing::warn!(
            route = %health.route,
            backend = %backend.slot(),
            blue_bp = route.weights().of(Slot::Blue),
            green_bp = route.weights().of(Slot::Green),
            "failing open: no backend of the route that may take its requests has an endpoint \
             that health admits, so requests go by weight to endpoints health holds out \
             (fail_open), until one can serve again"
        );
    }
}

/// The route of `backend` was failing open and health routes a request again: said once.
#[cold]
#[inline(never)]
fn stopped_failing_open<U: HasHealth>(route: &Route<U>, backend: &Backend<U>) {
    if mark_failing_open(route, false) {
        tracing::warn!(
            route = %backend.upstream().health().route,
            backend = %backend.slot(),
            blue_bp = route.weights().of(Slot::Blue),
            green_bp = route.weights().of(Slot::Green),
            "stopped failing open: an endpoint passes health again, requests follow health and \
             the configured weights"
        );
    }
}

/// Sets whether `route` fails open in both backends' state (`choose` reads the flag of the
/// backend it picked); whether that changed it (blue's flag, set last, keeps the answer).
fn mark_failing_open<U: HasHealth>(route: &Route<U>, on: bool) -> bool {
    let [blue, green] = route
        .backends()
        .each_ref()
        .map(|b| &b.upstream().health().state);
    green.set_failing_open(on);
    blue.set_failing_open(on) != on
}

/// Whether a request of `route` would fail open now: it is not disabled, no backend that may
/// take its requests can serve, and one of them may take them failing open (for `/status`).
pub(crate) fn fails_open_now<U: HasHealth>(route: &Route<U>) -> bool {
    let weights = route.weights();
    if weights.of(Slot::Blue) + weights.of(Slot::Green) == 0 {
        return false;
    }
    let eligible = || {
        route
            .backends()
            .iter()
            .filter(|b| route.takes_overflow(b.slot()) && !b.endpoints().is_empty())
    };
    !eligible().any(|b| b.upstream().health().can_serve())
        && eligible().any(|b| b.upstream().health().may_fail_open())
}

/// The other backend of `route` than `from`, when it may take `from`'s requests
/// ([`Route::takes_overflow`]: it has weight or is the active slot) and can serve now.
#[inline]
pub(crate) fn overflow<'r, U: HasHealth>(
    route: &'r Route<U>,
    from: &'r Backend<U>,
) -> Option<&'r Backend<U>> {
    let other = route.backend(from.slot().other());
    (route.takes_overflow(other.slot())
        && !other.endpoints().is_empty()
        && other.upstream().health().can_serve())
    .then_some(other)
}

/// Where a request whose connect to `failed` failed goes once more (see
/// `forward::retry_target`): the other backend when it may take it and can serve now
/// ([`overflow`]), else another endpoint of `failed` when it has one; `None` otherwise.
pub(crate) fn retry_elsewhere<'r, U: HasHealth>(
    route: &'r Route<U>,
    failed: &'r Backend<U>,
) -> Option<&'r Backend<U>> {
    overflow(route, failed).or_else(|| (failed.endpoints().len() > 1).then_some(failed))
}

/// How much longer than the route's `health.timeout` a request waits for first probes
/// ([`first_probes`]): 250 ms, room for a checker task that a busy machine runs a little after the
/// table that added its endpoint was published, so that its probe, not the wait, times out first.
pub const FIRST_PROBE_SLACK: std::time::Duration = std::time::Duration::from_millis(250);

/// Whether a request picked for `picked` on `route`, which no backend can serve now, would be
/// served once first probes have results: `picked` (the only backend a `forced` request may
/// take), or the other backend if it may take `picked`'s requests, has an endpoint awaiting its
/// first probe. Cold: asked only when a request found nowhere to go.
#[cold]
pub(crate) fn awaits_first_probes<U: HasHealth>(
    route: &Route<U>,
    picked: &Backend<U>,
    forced: bool,
) -> bool {
    let awaiting = |b: &Backend<U>| b.upstream().health().awaiting_first_probe();
    let other = route.backend(picked.slot().other());
    awaiting(picked) || (!forced && route.takes_overflow(other.slot()) && awaiting(other))
}

/// Waits until a request picked for `picked` on `route` can be served ([`choose`] finds a
/// backend; for a `forced` request, `picked` can serve), until no first probe it could use is
/// awaited ([`awaits_first_probes`]), or at most the route's `health.timeout` plus
/// [`FIRST_PROBE_SLACK`]; whichever comes first. The caller then selects again.
pub(crate) async fn first_probes<U: HasHealth>(
    route: &Route<U>,
    picked: &Backend<U>,
    forced: bool,
) {
    let health = picked.upstream().health();
    let other = route.backend(picked.slot().other()).upstream().health();
    let Some(timeout) = health.probe_timeout.max(other.probe_timeout) else {
        return;
    };
    let deadline = Instant::now() + timeout + FIRST_PROBE_SLACK;
    loop {
        // Registered before the look, so that a result between the look and the wait wakes it.
        let notified = health.hub.first_probes.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let served = match forced {
            true => health.can_serve(),
            false => choose(route, picked).is_some(),
        };
        if served || !awaits_first_probes(route, picked, forced) {
            return;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return;
        }
    }
}

/// A request in flight to one endpoint, for the balancer: pending until dropped.
#[derive(Debug)]
#[must_use = "the request counts as pending until this is dropped"]
pub(crate) struct Dispatched<'a> {
    pending: Pending<'a>,
    /// When it was sent, on the hub's clock.
    sent_ns: u64,
}

impl Dispatched<'_> {
    /// The response head arrived `elapsed` after dispatch: an RTT sample.
    #[inline]
    pub(crate) fn responded(self, elapsed: std::time::Duration) {
        let rtt = duration_ns(elapsed);
        self.pending
            .responded(rtt, self.sent_ns.saturating_add(rtt));
    }

    /// The attempt failed after `elapsed` (never lowers the estimate, see [`crate::balance`]).
    pub(crate) fn failed(self, elapsed: std::time::Duration) {
        let elapsed = duration_ns(elapsed);
        self.pending
            .failed(elapsed, self.sent_ns.saturating_add(elapsed));
    }
}

fn duration_ns(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The endpoint of `backend` for the next request, among those that are up, by the backend's
/// balancing policy ([`crate::balance`]); `None` when none is up.
///
/// - `p2c_peak_ewma`: the cheaper of two random endpoints that are up.
/// - `round_robin`: the next endpoint that is up.
///
/// For a retry, `avoid` is the endpoint the attempt just failed on: the retry goes to another
/// endpoint that is up (p2c: the cheaper of two others; round-robin: the next after `avoid`,
/// without moving the cursor, which would put the next request on the failing endpoint again and
/// keep first attempts in step with it), and falls back to `avoid` itself only when no other
/// endpoint is up.
#[inline]
pub(crate) fn pick_endpoint<U: HasHealth>(
    backend: &Backend<U>,
    avoid: Option<usize>,
) -> Option<usize> {
    let health = backend.upstream().health();
    let clock = LazyClock::new(&health.hub);
    let up = |i: usize| {
        let endpoint = health.endpoints.get(i);
        endpoint.is_none_or(|e| health.admits(e, &clock))
    };
    pick_among(backend, avoid, up)
}

/// The endpoint of `backend` for a request sent failing open ([`fail_open`]): one that is up
/// when there is one again ([`pick_endpoint`]), else, by the same balancing policy, one that
/// health holds out but that passed a check once ([`EndpointHealth::passed_a_check`]); `None`
/// when it has none.
#[cold]
pub(crate) fn pick_endpoint_failing_open<U: HasHealth>(
    backend: &Backend<U>,
    avoid: Option<usize>,
) -> Option<usize> {
    let health = backend.upstream().health();
    // Looked at first, not tried: a pick that finds none up has moved the round-robin cursor, and
    // a second turn per request would keep every request on the same endpoints (with two, one).
    if health.can_serve() {
        return pick_endpoint(backend, avoid);
    }
    let passed = |i: usize| health.endpoints.get(i).is_some_and(|e| e.passed_a_check());
    pick_among(backend, avoid, passed)
}

/// The endpoint of `backend` for the next request among those that are `up`, by the backend's
/// balancing policy ([`pick_endpoint`]).
#[inline]
fn pick_among<U: HasHealth>(
    backend: &Backend<U>,
    avoid: Option<usize>,
    up: impl Fn(usize) -> bool,
) -> Option<usize> {
    let health = backend.upstream().health();
    let n = backend.endpoints().len();
    if health.balance.policy == BalancePolicy::P2cPeakEwma {
        return pick_p2c(health, n, avoid, up);
    }
    match avoid {
        Some(failed) if failed < n => (1..n)
            .map(|k| (failed + k) % n)
            .find(|&i| up(i))
            .or_else(|| up(failed).then_some(failed)),
        // One turn of the round-robin cursor, then the first endpoint that is up from there.
        // Drawing the cursor again per endpoint could miss every endpoint that is up when other
        // requests advance it meanwhile (two endpoints, one down: this request draws the down one
        // twice while another takes the one in between), answering 503 with an endpoint up.
        _ => {
            let start = backend.pick_endpoint()?;
            (0..n).map(|k| (start + k) % n).find(|&i| up(i))
        }
    }
}

/// The p2c pick among endpoints `0..n` that are `up`, except `avoid` unless it is the only one.
#[inline]
fn pick_p2c(
    health: &BackendHealth,
    n: usize,
    avoid: Option<usize>,
    up: impl Fn(usize) -> bool,
) -> Option<usize> {
    let avoid = avoid.filter(|&i| i < n);
    // Costs are compared only when there are two endpoints to compare: one clock read then.
    let now = if n >= 2 { health.hub.now_ns() } else { 0 };
    let cost = |i: usize| {
        health
            .endpoints
            .get(i)
            .map_or(f64::INFINITY, |e| e.load.cost(&health.balance, now))
    };
    let eligible = |i: usize| Some(i) != avoid && up(i);
    balance::p2c(n, eligible, cost, &mut crate::rng::ThreadRng).or_else(|| avoid.filter(|&i| up(i)))
}

/// The hub's clock, read at most once.
struct LazyClock<'a> {
    hub: &'a Hub,
    now: std::cell::Cell<Option<u64>>,
}

impl<'a> LazyClock<'a> {
    fn new(hub: &'a Hub) -> LazyClock<'a> {
        LazyClock {
            hub,
            now: std::cell::Cell::new(None),
        }
    }

    fn now(&self) -> u64 {
        if let Some(now) = self.now.get() {
            return now;
        }
        let now = self.hub.now_ms();
        self.now.set(Some(now));
        now
    }
}

#[cfg(test)]
mod fail_open_tests;
#[cfg(test)]
mod tests;
