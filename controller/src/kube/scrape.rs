//! The analysis counters of Kubernetes mode: scraped from every live proxy replica's
//! `<admin-url>/metrics` (the Prometheus text format 0.0.4, asked for in `Accept`, [`TEXT_ACCEPT`];
//! parsed by the `prometheus-parse` crate) and summed per
//! route and backend into the [`BackendSnapshot`]s the judge reads.
//!
//! [`MetricsSource::snapshot`] is synchronous, so the TrafficShift controller calls
//! [`ClusterMetrics::refresh`] for the route right before it reads (opening an analysis window,
//! analysing, checking a drain); `snapshot` then answers from what that scrape found. Nothing runs
//! in the background.
//!
//! Sums over replicas are kept as cumulative totals that never go down: each scrape adds what each
//! replica's counters rose since its previous scrape. A replica whose counters went down restarted
//! (the rule of Prometheus' `rate()`): its new counts since the restart are all added, never a
//! negative delta. A replica seen for the first time (a new Lease uid) adds its whole counts: they
//! started at 0 when it started serving the route. Gauges (in-flight requests, upgraded
//! connections) are the sum over the replicas of the last scrape.
//!
//! Metric names (proxy/src/metrics.rs, docs/metrics.md): `crossfade_dispatched_requests_total`,
//! `crossfade_backend_errors_total`, `crossfade_request_duration_seconds` (histogram),
//! `crossfade_client_abort_wait_seconds` (histogram: the client aborts, by wait),
//! `crossfade_in_flight_requests`, `crossfade_upgraded_connections`,
//! `crossfade_unanswered_requests{longer_than}` (gauges, summed the same way), each with labels
//! `route` and `backend` (`blue`, `green`); and the shadow families of a mirror target (docs/shadow.md),
//! summed the same way into the [`ShadowSnapshot`] the shadow step's judge reads:
//! `crossfade_shadow_mirrored_total`, `crossfade_shadow_compared_total{result}`,
//! `crossfade_shadow_mismatches_total{kind}`, `crossfade_shadow_skipped_total{reason}` and
//! `crossfade_shadow_errors_total{kind}` (every reason and kind added up),
//! `crossfade_shadow_request_duration_seconds` (histogram: the preview's response times to
//! mirrored requests, which the shadow step holds to `max_p99`),
//! `crossfade_shadow_paired_active_duration_seconds` and
//! `crossfade_shadow_paired_preview_duration_seconds` (histograms: both backends' times on the
//! same mirrored requests, for `max_p99_ratio`), and the gauges
//! `crossfade_shadow_in_flight` and `crossfade_shadow_unanswered_requests{longer_than}`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crossfade_proxy::histogram::LATENCY_BOUNDS_SECONDS;
use crossfade_proxy::stats::Unanswered;
use crossfade_proxy::weight::Slot;
use crossfade_proxy::{BackendSnapshot, HistogramSnapshot, ShadowSnapshot};
use futures_util::future::BoxFuture;
use prometheus_parse::{Scrape, Value};

use super::proxies::Replica;
use crate::traffic::MetricsSource;

/// The `Accept` of a scrape: the Prometheus text format 0.0.4, the one `prometheus-parse` reads
/// (the proxies negotiate it, `crossfade_proxy::exposition`; OpenMetrics only when asked for).
pub const TEXT_ACCEPT: &str = "text/plain;version=0.0.4";

/// How long one scrape of one replica may take (connect to the last body byte).
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the last reading of a replica that no longer serves a route is kept. A replica that
/// comes back within it (its Lease was stale for a while) adds only what it counted meanwhile;
/// after it, the replica is taken for gone and forgotten, so that pods coming and going do not
/// grow the controller's memory.
pub const FORGET_AFTER: Duration = Duration::from_secs(600);

/// A [`MetricsSource`] whose counters are read over the network: the controller asks it to
/// [`ClusterMetrics::refresh`] a route from the live proxy replicas that serve it before it reads
/// the route's snapshots.
pub trait ClusterMetrics: MetricsSource {
    /// Reads the counters of `route` from `replicas` (the live proxy replicas whose Lease lists
    /// the route), so that the next [`MetricsSource::snapshot`]s of the route include them.
    /// Failures are not returned: they make the route's snapshots errors until the next refresh.
    fn refresh<'a>(&'a self, route: &'a str, replicas: &'a [&'a Replica]) -> BoxFuture<'a, ()>;
}

/// One replica's counters of one backend of one route, as scraped.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reading {
    /// `crossfade_dispatched_requests_total`.
    pub requests: u64,
    /// `crossfade_backend_errors_total`.
    pub errors: u64,
    /// `crossfade_request_duration_seconds`, per bucket (not cumulative), in
    /// [`LATENCY_BOUNDS_SECONDS`] order plus `+Inf`.
    pub latency: HistogramSnapshot,
    /// `crossfade_in_flight_requests`.
    pub in_flight: u64,
    /// `crossfade_upgraded_connections`.
    pub upgraded: u64,
    /// `crossfade_unanswered_requests{longer_than}`, as groups by wait
    /// ([`Unanswered::from_cumulative`]).
    pub unanswered: Unanswered,
    /// `crossfade_client_abort_wait_seconds`, per bucket as `latency`: the requests whose client
    /// went away before their response head, by how long they had waited
    /// ([`BackendSnapshot::aborted`]). Empty from a proxy that does not export it.
    pub aborted: HistogramSnapshot,
    /// The `crossfade_shadow_*` families of this backend as a mirror target; `None` when the
    /// replica shows none (it never mirrored to this backend).
    pub shadow: Option<ShadowSnapshot>,
}

/// The bearer tokens of the proxies' admin APIs (`--proxy-token-file [NAMESPACE=]FILE`): one per
/// namespace of proxy Leases, and a default for the Leases of the namespaces not named. A proxy
/// replica is sent the token of its Lease's namespace, so that the proxies of one namespace (a
/// sidecar in an application namespace) need not hold the token that opens the others' admin
/// API (the ingress proxies': routes, weights, drain).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyTokens {
    /// For the Leases of every namespace not in `by_namespace`.
    pub default: Option<String>,
    /// Lease namespace → token.
    pub by_namespace: BTreeMap<String, String>,
}

impl ProxyTokens {
    /// The token for the replica whose Lease is `lease` (`namespace/name`), and which flag gave it
    /// (for the advice on a refused scrape): `--proxy-token-file NAMESPACE=FILE` when its
    /// namespace has one, else the default's.
    fn of(&self, lease: &str) -> (Option<&str>, String) {
        let namespace = lease.split_once('/').map_or("", |(ns, _)| ns);
        match self.by_namespace.get(namespace) {
            Some(token) => (
                Some(token.as_str()),
                format!("--proxy-token-file {namespace}=FILE"),
            ),
            None => (self.default.as_deref(), "--proxy-token-file".to_owned()),
        }
    }
}

/// The [`ClusterMetrics`] of `crossfade controller --kube`: scrapes the proxies' `/metrics`.
pub struct ProxyScraper {
    /// Bearer tokens for the proxies' admin APIs (`--proxy-token-file`).
    tokens: ProxyTokens,
    state: Mutex<State>,
}

/// The cumulative counters of a [`ClusterMetrics`] that reads replicas one by one (the proxies'
/// `/metrics` here, their series in Prometheus in [`super::prometheus`]), and each replica's last
/// reading.
#[derive(Default)]
pub(super) struct State {
    /// Cumulative, never decreasing, by route and backend (gauges as of the last scrape).
    totals: HashMap<(String, Slot), BackendSnapshot>,
    /// Cumulative shadow counters by route and mirror target (the in-flight gauge as of the last
    /// scrape); a key only once a replica showed shadow families for it.
    shadow: HashMap<(String, Slot), ShadowSnapshot>,
    /// Each replica's last reading and when it was taken, by (replica identity, route, backend):
    /// its Lease uid when scraped, its label set when read from Prometheus.
    last: HashMap<(String, String, Slot), (Reading, tokio::time::Instant)>,
    /// Why the route's last refresh is incomplete, when it is.
    problems: HashMap<String, String>,
}

// === impl ProxyScraper ===

impl ProxyScraper {
    /// A scraper sending `Authorization: Bearer <token>` when `token` is set (the proxies' admin
    /// API requires it off loopback).
    pub fn new(token: Option<String>) -> ProxyScraper {
        ProxyScraper::with_tokens(ProxyTokens {
            default: token,
            by_namespace: BTreeMap::new(),
        })
    }

    /// A scraper sending each replica the token of its Lease's namespace ([`ProxyTokens`]).
    pub fn with_tokens(tokens: ProxyTokens) -> ProxyScraper {
        ProxyScraper {
            tokens,
            state: Mutex::new(State::default()),
        }
    }

    async fn scrape(&self, replica: &Replica) -> Result<BTreeMap<(String, Slot), Reading>, String> {
        let Some(base) = &replica.admin_url else {
            return Err(format!(
                "proxy {}: its Lease has no annotation {}",
                replica.lease,
                super::proxies::ADMIN_URL
            ));
        };
        let url = format!("{base}/metrics");
        let mut headers = BTreeMap::new();
        headers.insert("accept".to_owned(), TEXT_ACCEPT.to_owned());
        let (token, flag) = self.tokens.of(&replica.lease);
        if let Some(token) = token {
            headers.insert("authorization".to_owned(), format!("Bearer {token}"));
        }
        let reply = crate::fetch::send(http::Method::GET, &url, &headers, None, SCRAPE_TIMEOUT)
            .await
            .map_err(|e| format!("proxy {}: scrape {e}", replica.lease))?;
        if !reply.status.is_success() {
            return Err(format!(
                "proxy {}: scrape {url}: status {}: {}{}",
                replica.lease,
                reply.status,
                reply.excerpt(),
                advice(reply.status, token.is_some(), &flag)
            ));
        }
        let text = String::from_utf8_lossy(&reply.body);
        parse(&text).map_err(|e| format!("proxy {}: {url}: {e}", replica.lease))
    }
}

/// What fixes a refused scrape: a 401 or 403 from a proxy's admin API means the controller
/// sent no token (`sent` false), or not the one the proxy was given (`--admin-token-file`);
/// `flag` names where the token sent came from. Empty for other statuses.
fn advice(status: http::StatusCode, sent: bool, flag: &str) -> String {
    let refused = status == http::StatusCode::UNAUTHORIZED || status == http::StatusCode::FORBIDDEN;
    match (refused, sent) {
        (false, _) => String::new(),
        (true, false) => "; the controller sends no token: give it the proxies' admin token with --proxy-token-file (or --proxy-token-file NAMESPACE=FILE for the proxies whose Leases are in NAMESPACE)".to_owned(),
        (true, true) => format!("; the token of {flag} is not the one the proxies' --admin-token-file holds"),
    }
}

impl ClusterMetrics for ProxyScraper {
    fn refresh<'a>(&'a self, route: &'a str, replicas: &'a [&'a Replica]) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let scrapes =
                futures_util::future::join_all(replicas.iter().map(|r| self.scrape(r))).await;
            let readings = replicas.iter().map(|r| r.uid.clone()).zip(scrapes);
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.merge(route, readings.collect(), "proxy metrics incomplete");
        })
    }
}

impl MetricsSource for ProxyScraper {
    fn snapshot(&self, route: &str, slot: Slot) -> crate::Result<BackendSnapshot> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.snapshot(route, slot, "no proxy replica scraped yet")
    }

    /// The shadow counters of the requests the proxies mirrored to `slot`, summed over the
    /// replicas as the request counters are; `None` while no replica has shown any.
    fn shadow(&self, route: &str, slot: Slot) -> crate::Result<Option<ShadowSnapshot>> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.shadow(route, slot)
    }
}

/// One refresh's readings: per replica (its identity in [`State::last`]), what it showed by route
/// and backend, or why it could not be read.
pub(super) type Readings = Vec<(String, Result<BTreeMap<(String, Slot), Reading>, String>)>;

// === impl State ===

impl State {
    /// Adds one refresh of `route` to the totals: what each replica's counters rose since its
    /// last reading ([`accumulate`]), the gauges summed anew. A replica that could not be read
    /// adds nothing and makes the route's reads errors until the next complete refresh (logged
    /// at warn, after `incomplete`).
    pub(super) fn merge(&mut self, route: &str, readings: Readings, incomplete: &str) {
        let at = tokio::time::Instant::now();
        let mut problems = Vec::new();
        let mut gauges = Gauges::default();
        for (replica, readings) in readings {
            match readings {
                Ok(readings) => {
                    for slot in Slot::ALL {
                        // None: no request for this backend on this replica yet.
                        if let Some(now) = readings.get(&(route.to_owned(), slot)) {
                            self.add(route, slot, (&replica, now, at), &mut gauges);
                        }
                    }
                }
                Err(e) => problems.push(e),
            }
        }
        self.last
            .retain(|(_, r, _), (_, seen)| r != route || at.duration_since(*seen) < FORGET_AFTER);
        for slot in Slot::ALL {
            self.set_gauges(route, slot, &mut gauges);
        }
        if problems.is_empty() {
            self.problems.remove(route);
        } else {
            let why = problems.join("; ");
            tracing::warn!(route, "{incomplete}: {why}");
            self.problems.insert(route.to_owned(), why);
        }
    }

    /// Adds one replica's reading `now` of `slot` (taken `at`) to the totals and its gauges to
    /// `gauges`, and keeps it as the replica's last.
    fn add(
        &mut self,
        route: &str,
        slot: Slot,
        (replica, now, at): (&str, &Reading, tokio::time::Instant),
        gauges: &mut Gauges,
    ) {
        let key = (route.to_owned(), slot);
        let last_key = (replica.to_owned(), route.to_owned(), slot);
        let last = self.last.get(&last_key).map(|(r, _)| r);
        if let Some(shadow) = &now.shadow {
            let total = self.shadow.entry(key.clone()).or_default();
            accumulate_shadow(total, last.and_then(|r| r.shadow.as_ref()), shadow);
            let g = gauges.shadow.entry(slot).or_default();
            g.0 += shadow.in_flight;
            g.1.add(&shadow.unanswered);
        }
        accumulate(self.totals.entry(key).or_default(), last, now);
        let g = gauges.backend.entry(slot).or_default();
        g.0 += now.in_flight;
        g.1 += now.upgraded;
        g.2.add(&now.unanswered);
        self.last.insert(last_key, (now.clone(), at));
    }

    /// Sets the gauges of `slot`'s totals to their sums over this refresh's replicas.
    fn set_gauges(&mut self, route: &str, slot: Slot, gauges: &mut Gauges) {
        let total = self.totals.entry((route.to_owned(), slot)).or_default();
        let (in_flight, upgraded, unanswered) = gauges.backend.remove(&slot).unwrap_or_default();
        total.in_flight = in_flight;
        total.upgraded = upgraded;
        total.unanswered = unanswered;
        if let Some(shadow) = self.shadow.get_mut(&(route.to_owned(), slot)) {
            let (in_flight, unanswered) = gauges.shadow.remove(&slot).unwrap_or_default();
            shadow.in_flight = in_flight;
            shadow.unanswered = unanswered;
        }
    }

    /// The totals of `slot` on `route`; an error while the route's last refresh is incomplete,
    /// or `unread` (why) before its first.
    pub(super) fn snapshot(
        &self,
        route: &str,
        slot: Slot,
        unread: &str,
    ) -> crate::Result<BackendSnapshot> {
        self.incomplete(route, &format!("backend {slot}"))?;
        self.totals
            .get(&(route.to_owned(), slot))
            .cloned()
            .ok_or_else(|| {
                crate::Error::traffic(route, format!("no metrics for backend {slot}: {unread}"))
            })
    }

    /// The shadow totals of mirror target `slot` on `route`; `None` while no replica showed any.
    pub(super) fn shadow(&self, route: &str, slot: Slot) -> crate::Result<Option<ShadowSnapshot>> {
        self.incomplete(route, &format!("shadow traffic to {slot}"))?;
        Ok(self.shadow.get(&(route.to_owned(), slot)).cloned())
    }

    /// The problem of the route's last refresh, as the error a read returns.
    fn incomplete(&self, route: &str, what: &str) -> crate::Result<()> {
        match self.problems.get(route) {
            Some(why) => Err(crate::Error::traffic(
                route,
                format!("no complete metrics for {what}: {why}"),
            )),
            None => Ok(()),
        }
    }
}

/// The gauges of one refresh, summed over its replicas by backend: (in flight, upgraded,
/// unanswered), and the shadow ones (in flight, unanswered).
#[derive(Default)]
struct Gauges {
    backend: HashMap<Slot, (u64, u64, Unanswered)>,
    shadow: HashMap<Slot, (u64, Unanswered)>,
}

/// Adds to `total` what one replica's shadow counters rose between `last` (its previous reading,
/// `None` when first seen or before it mirrored) and `now`, by the rule of [`accumulate`]: a
/// counter below `last` means the replica restarted and all of `now` is new. Returns true when it
/// counted a restart.
pub fn accumulate_shadow(
    total: &mut ShadowSnapshot,
    last: Option<&ShadowSnapshot>,
    now: &ShadowSnapshot,
) -> bool {
    let reset = last.is_some_and(|l| {
        now.mirrored < l.mirrored
            || now.matched < l.matched
            || now.mismatched < l.mismatched
            || now.status_mismatches < l.status_mismatches
            || now.header_mismatches < l.header_mismatches
            || now.body_mismatches < l.body_mismatches
            || now.skipped < l.skipped
            || now.errors < l.errors
            || went_down(&now.latency, &l.latency)
            || went_down(&now.paired_active, &l.paired_active)
            || went_down(&now.paired_preview, &l.paired_preview)
    });
    let base = match (reset, last) {
        (false, Some(last)) => last.clone(),
        _ => ShadowSnapshot::default(),
    };
    let d = now.since(&base);
    total.mirrored += d.mirrored;
    total.matched += d.matched;
    total.mismatched += d.mismatched;
    total.status_mismatches += d.status_mismatches;
    total.header_mismatches += d.header_mismatches;
    total.body_mismatches += d.body_mismatches;
    total.skipped += d.skipped;
    total.errors += d.errors;
    add_window(&mut total.latency, &d.latency);
    add_window(&mut total.paired_active, &d.paired_active);
    add_window(&mut total.paired_preview, &d.paired_preview);
    reset
}

/// Adds to `total` what one replica's counters rose between `last` (its previous reading, `None`
/// when first seen) and `now`. Counters below `last` mean the replica restarted: all of `now` is
/// new. Never subtracts. Returns true when it counted a restart.
pub fn accumulate(total: &mut BackendSnapshot, last: Option<&Reading>, now: &Reading) -> bool {
    let reset = last.is_some_and(|last| {
        now.requests < last.requests
            || now.errors < last.errors
            || went_down(&now.latency, &last.latency)
            || went_down(&now.aborted, &last.aborted)
    });
    let base = match (reset, last) {
        (false, Some(last)) => last.clone(),
        _ => Reading::default(),
    };
    total.requests += now.requests.saturating_sub(base.requests);
    total.errors += now.errors.saturating_sub(base.errors);
    add_window(&mut total.latency, &now.latency.since(&base.latency));
    add_window(&mut total.aborted, &now.aborted.since(&base.aborted));
    reset
}

/// Whether a histogram's counts went down from `last` to `now` (its replica restarted).
fn went_down(now: &HistogramSnapshot, last: &HistogramSnapshot) -> bool {
    now.count() < last.count() || now.counts.iter().zip(&last.counts).any(|(n, l)| n < l)
}

/// Adds a histogram `window`'s counts and sum to `total`'s.
fn add_window(total: &mut HistogramSnapshot, window: &HistogramSnapshot) {
    if total.counts.len() < window.counts.len() {
        total.counts.resize(window.counts.len(), 0);
    }
    for (t, w) in total.counts.iter_mut().zip(&window.counts) {
        *t += w;
    }
    total.sum_seconds += window.sum_seconds;
}

/// One series of a reading, whether from a proxy's `/metrics` text ([`parse`]) or from a Prometheus
/// instant query ([`super::prometheus`]): the family's sample name (a histogram's without
/// `_bucket`), its labels and its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The sample name, e.g. `crossfade_dispatched_requests_total`; a histogram's family name,
    /// e.g. `crossfade_request_duration_seconds` (its `_sum` and `_count` are series of their own).
    pub metric: String,
    /// The labels (a histogram's without `le`).
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: SeriesValue,
}

/// The value of a [`Series`].
#[derive(Clone, Debug, PartialEq)]
pub enum SeriesValue {
    /// A counter's, gauge's or untyped sample's value.
    Scalar(f64),
    /// A histogram's buckets: (`le` upper bound, cumulative count), in any order.
    Histogram(Vec<(f64, f64)>),
    /// A summary: no family read here is one.
    Other,
}

impl Series {
    /// The value of label `name`.
    fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }
}

/// The per-route, per-backend readings in one `/metrics` text.
///
/// # Errors
/// When the text cannot be read as the Prometheus/OpenMetrics text format, or a latency histogram
/// has other buckets than [`LATENCY_BOUNDS_SECONDS`] (a proxy of another version).
pub fn parse(text: &str) -> Result<BTreeMap<(String, Slot), Reading>, String> {
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .map_err(|e| format!("not Prometheus text: {e}"))?;
    let series: Vec<Series> = scrape
        .samples
        .into_iter()
        .map(|sample| Series {
            metric: sample.metric,
            labels: sample
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            value: match sample.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => SeriesValue::Scalar(v),
                Value::Histogram(buckets) => {
                    SeriesValue::Histogram(buckets.iter().map(|b| (b.less_than, b.count)).collect())
                }
                Value::Summary(_) => SeriesValue::Other,
            },
        })
        .collect();
    readings(&series)
}

/// The per-route, per-backend readings of one replica's `series`.
///
/// # Errors
/// When a latency histogram has other buckets than [`LATENCY_BOUNDS_SECONDS`] (a proxy of another
/// version), a `longer_than` is no number of seconds, or a family has an unexpected type.
pub fn readings(series: &[Series]) -> Result<BTreeMap<(String, Slot), Reading>, String> {
    let mut out: BTreeMap<(String, Slot), Reading> = BTreeMap::new();
    let mut unanswered: BTreeMap<(String, Slot), Vec<(f64, u64)>> = BTreeMap::new();
    let mut shadow_unanswered: BTreeMap<(String, Slot), Vec<(f64, u64)>> = BTreeMap::new();
    for sample in series {
        let (Some(route), Some(backend)) = (sample.label("route"), sample.label("backend")) else {
            continue;
        };
        let slot = match backend {
            "blue" => Slot::Blue,
            "green" => Slot::Green,
            _ => continue,
        };
        let field = match sample.metric.as_str() {
            "crossfade_dispatched_requests_total" => Field::Requests,
            "crossfade_backend_errors_total" => Field::Errors,
            "crossfade_in_flight_requests" => Field::InFlight,
            "crossfade_upgraded_connections" => Field::Upgraded,
            "crossfade_unanswered_requests" => match longer_than(sample, route, backend)? {
                Some(b) => Field::Unanswered(b),
                None => continue,
            },
            "crossfade_shadow_unanswered_requests" => match longer_than(sample, route, backend)? {
                Some(b) => Field::Shadow(ShadowField::Unanswered(b)),
                None => continue,
            },
            "crossfade_shadow_request_duration_seconds_sum" => {
                Field::Shadow(ShadowField::LatencySum)
            }
            "crossfade_shadow_request_duration_seconds" => Field::ShadowLatency,
            "crossfade_shadow_paired_active_duration_seconds_sum" => {
                Field::Shadow(ShadowField::PairedActiveSum)
            }
            "crossfade_shadow_paired_active_duration_seconds" => Field::ShadowPairedActive,
            "crossfade_shadow_paired_preview_duration_seconds_sum" => {
                Field::Shadow(ShadowField::PairedPreviewSum)
            }
            "crossfade_shadow_paired_preview_duration_seconds" => Field::ShadowPairedPreview,
            "crossfade_request_duration_seconds_sum" => Field::LatencySum,
            "crossfade_request_duration_seconds" => Field::Latency,
            "crossfade_client_abort_wait_seconds_sum" => Field::AbortedSum,
            "crossfade_client_abort_wait_seconds" => Field::Aborted,
            "crossfade_shadow_mirrored_total" => Field::Shadow(ShadowField::Mirrored),
            "crossfade_shadow_compared_total" => match sample.label("result") {
                Some("matched") => Field::Shadow(ShadowField::Matched),
                Some("mismatched") => Field::Shadow(ShadowField::Mismatched),
                _ => continue,
            },
            "crossfade_shadow_mismatches_total" => match sample.label("kind") {
                Some("status") => Field::Shadow(ShadowField::Status),
                Some("header") => Field::Shadow(ShadowField::Header),
                Some("body") => Field::Shadow(ShadowField::Body),
                _ => continue,
            },
            "crossfade_shadow_skipped_total" => Field::Shadow(ShadowField::Skipped),
            "crossfade_shadow_errors_total" => Field::Shadow(ShadowField::Errors),
            "crossfade_shadow_in_flight" => Field::Shadow(ShadowField::InFlight),
            _ => continue,
        };
        let reading = out.entry((route.to_owned(), slot)).or_default();
        let scalar = match &sample.value {
            SeriesValue::Scalar(v) => Some(*v),
            _ => None,
        };
        match (field, scalar) {
            (Field::Requests, Some(v)) => reading.requests = count(v),
            (Field::Errors, Some(v)) => reading.errors = count(v),
            (Field::InFlight, Some(v)) => reading.in_flight = count(v),
            (Field::Upgraded, Some(v)) => reading.upgraded = count(v),
            (Field::Unanswered(bound), Some(v)) => unanswered
                .entry((route.to_owned(), slot))
                .or_default()
                .push((bound, count(v))),
            (Field::LatencySum, Some(v)) => reading.latency.sum_seconds = v.max(0.0),
            (Field::AbortedSum, Some(v)) => reading.aborted.sum_seconds = v.max(0.0),
            (Field::Shadow(f), Some(v)) => {
                let shadow = reading.shadow.get_or_insert_with(ShadowSnapshot::default);
                let n = count(v);
                match f {
                    ShadowField::LatencySum => shadow.latency.sum_seconds = v.max(0.0),
                    ShadowField::PairedActiveSum => shadow.paired_active.sum_seconds = v.max(0.0),
                    ShadowField::PairedPreviewSum => shadow.paired_preview.sum_seconds = v.max(0.0),
                    ShadowField::Unanswered(bound) => shadow_unanswered
                        .entry((route.to_owned(), slot))
                        .or_default()
                        .push((bound, n)),
                    ShadowField::Mirrored => shadow.mirrored = n,
                    ShadowField::Matched => shadow.matched = n,
                    ShadowField::Mismatched => shadow.mismatched = n,
                    ShadowField::Status => shadow.status_mismatches = n,
                    ShadowField::Header => shadow.header_mismatches = n,
                    ShadowField::Body => shadow.body_mismatches = n,
                    // One sample per reason or kind: their sum.
                    ShadowField::Skipped => shadow.skipped += n,
                    ShadowField::Errors => shadow.errors += n,
                    ShadowField::InFlight => shadow.in_flight = n,
                }
            }
            (Field::Latency, None) => {
                let SeriesValue::Histogram(buckets) = &sample.value else {
                    continue;
                };
                reading.latency.counts = per_bucket(buckets).map_err(|e| {
                    format!("crossfade_request_duration_seconds of {route}/{backend}: {e}")
                })?;
            }
            (Field::ShadowLatency, None) => {
                let SeriesValue::Histogram(buckets) = &sample.value else {
                    continue;
                };
                let shadow = reading.shadow.get_or_insert_with(ShadowSnapshot::default);
                shadow.latency.counts = per_bucket(buckets).map_err(|e| {
                    format!("crossfade_shadow_request_duration_seconds of {route}/{backend}: {e}")
                })?;
            }
            (field @ (Field::ShadowPairedActive | Field::ShadowPairedPreview), None) => {
                let SeriesValue::Histogram(buckets) = &sample.value else {
                    continue;
                };
                let shadow = reading.shadow.get_or_insert_with(ShadowSnapshot::default);
                let histogram = match field {
                    Field::ShadowPairedActive => &mut shadow.paired_active,
                    _ => &mut shadow.paired_preview,
                };
                histogram.counts = per_bucket(buckets)
                    .map_err(|e| format!("{} of {route}/{backend}: {e}", sample.metric))?;
            }
            (Field::Aborted, None) => {
                let SeriesValue::Histogram(buckets) = &sample.value else {
                    continue;
                };
                reading.aborted.counts = per_bucket(buckets).map_err(|e| {
                    format!("crossfade_client_abort_wait_seconds of {route}/{backend}: {e}")
                })?;
            }
            _ => {
                return Err(format!(
                    "{} of {route}/{backend}: unexpected sample type",
                    sample.metric
                ))
            }
        }
    }
    for (key, cumulative) in unanswered {
        if let Some(reading) = out.get_mut(&key) {
            reading.unanswered = Unanswered::from_cumulative(cumulative);
        }
    }
    for (key, cumulative) in shadow_unanswered {
        if let Some(shadow) = out.get_mut(&key).and_then(|r| r.shadow.as_mut()) {
            shadow.unanswered = Unanswered::from_cumulative(cumulative);
        }
    }
    Ok(out)
}

/// The `longer_than` label of an unanswered-requests gauge in seconds; `None` without one.
///
/// # Errors
/// When it is not a number of seconds.
fn longer_than(sample: &Series, route: &str, backend: &str) -> Result<Option<f64>, String> {
    let Some(bound) = sample.label("longer_than") else {
        return Ok(None);
    };
    match bound.parse::<f64>() {
        Ok(b) if b.is_finite() && b >= 0.0 => Ok(Some(b)),
        _ => Err(format!(
            "{} of {route}/{backend}: longer_than {bound:?} is not a number of seconds",
            sample.metric
        )),
    }
}

#[derive(Clone, Copy)]
enum Field {
    Requests,
    Errors,
    InFlight,
    Upgraded,
    /// `crossfade_unanswered_requests` at `longer_than` (seconds).
    Unanswered(f64),
    LatencySum,
    Latency,
    AbortedSum,
    Aborted,
    Shadow(ShadowField),
    /// `crossfade_shadow_request_duration_seconds`'s buckets.
    ShadowLatency,
    /// `crossfade_shadow_paired_active_duration_seconds`'s buckets.
    ShadowPairedActive,
    /// `crossfade_shadow_paired_preview_duration_seconds`'s buckets.
    ShadowPairedPreview,
}

/// Which count of a [`ShadowSnapshot`] a `crossfade_shadow_*` sample is.
#[derive(Clone, Copy)]
enum ShadowField {
    Mirrored,
    Matched,
    Mismatched,
    Status,
    Header,
    Body,
    Skipped,
    Errors,
    InFlight,
    /// `crossfade_shadow_request_duration_seconds_sum`.
    LatencySum,
    /// `crossfade_shadow_paired_active_duration_seconds_sum`.
    PairedActiveSum,
    /// `crossfade_shadow_paired_preview_duration_seconds_sum`.
    PairedPreviewSum,
    /// `crossfade_shadow_unanswered_requests` at `longer_than` (seconds).
    Unanswered(f64),
}

/// A sample value as a count: negative, NaN and fractions are rounded into `u64`.
fn count(v: f64) -> u64 {
    if v.is_finite() && v > 0.0 {
        // Counts below 2^53 are exact in f64; saturating above.
        v.round().min(u64::MAX as f64) as u64
    } else {
        0
    }
}

/// Cumulative `le` buckets to per-bucket counts in [`LATENCY_BOUNDS_SECONDS`] order plus `+Inf`.
fn per_bucket(buckets: &[(f64, f64)]) -> Result<Vec<u64>, String> {
    let mut sorted: Vec<(f64, u64)> = buckets.iter().map(|(le, n)| (*le, count(*n))).collect();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let bounds: Vec<f64> = sorted.iter().map(|b| b.0).collect();
    let expected: Vec<f64> = LATENCY_BOUNDS_SECONDS
        .iter()
        .copied()
        .chain([f64::INFINITY])
        .collect();
    let same = bounds.len() == expected.len()
        && bounds
            .iter()
            .zip(&expected)
            .all(|(a, b)| a == b || (a - b).abs() <= 1e-9 * b.abs());
    if !same {
        return Err(format!(
            "{} buckets that are not this controller's {} latency bounds",
            bounds.len(),
            expected.len()
        ));
    }
    let mut previous = 0;
    Ok(sorted
        .iter()
        .map(|(_, cumulative)| {
            let n = cumulative.saturating_sub(previous);
            previous = previous.max(*cumulative);
            n
        })
        .collect())
}

#[cfg(test)]
mod tests;
