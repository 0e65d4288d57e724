//! The `crossfade run` spec: what to serve, what to roll out and how to judge it (YAML).
//!
//! Load, then validate, then use: [`RunSpec::from_yaml`] parses and validates in one go and reports
//! every problem at once, each naming its field path (`rollout.steps[2]: 120% is above 100%`).
//!
//! ```yaml
//! listen: 127.0.0.1:8080
//! blue:  { command: ./app, args: ["--port", "{port}"], instances: 2 }
//! green: { command: ./app-v2, args: ["--port", "{port}"], instances: 2 }
//! rollout:
//!   steps: [10, { weight: 50, hold: 30s }, 100]
//!   analysis: { max_error_rate: "1%", max_p99: 250ms, min_requests: 50 }
//! ```

mod changes;
pub mod checks;
pub(crate) mod de;
pub mod gates;
pub mod headers;
mod judge;
mod paths;
mod ports;
mod problem;
pub mod shadow;
mod validate;
pub use validate::{MAX_CHECKS, MAX_GATES};
pub mod warnings;

pub use validate::{is_dns_subdomain, request_header_problems};

#[cfg(test)]
mod keyword_tests;
#[cfg(test)]
mod properties;
#[cfg(test)]
mod protocol_tests;
#[cfg(test)]
mod reference_tests;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crossfade_proxy::config::UpstreamProtocol;
use crossfade_proxy::weight::{Percent, Slot, FULL_BP};
use serde::{Deserialize, Serialize};

pub use changes::RolloutChanges;
pub use checks::CheckConfig;
pub use gates::{GateConfig, GatePoint, GatePolicy};
pub use judge::{FailWhenWorseThan, JudgeKind, LatencyIncrease};
pub use ports::PortRange;
pub use problem::{Problem, SpecError};
pub use shadow::ShadowGuard;

/// The placeholder replaced by an instance's port in a command workload's `args` and `env` values.
pub const PORT_PLACEHOLDER: &str = "{port}";

/// Most instances a command workload may start.
pub const MAX_INSTANCES: u32 = 64;

/// The whole `crossfade run` spec.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[serde(expecting = "a map of spec settings (listen, route, blue, green, rollout, via, ...)")]
pub struct RunSpec {
    /// Address the proxy listens on for client traffic. Default `127.0.0.1:8080`.
    #[serde(deserialize_with = "crossfade_proxy::de::address")]
    pub listen: SocketAddr,
    /// Address of the admin API (`/metrics`, weights, rollout commands). Default `127.0.0.1:9901`.
    #[serde(deserialize_with = "crossfade_proxy::de::address")]
    pub admin: SocketAddr,
    /// The one route Crossfade serves and shifts.
    pub route: RouteSpec,
    /// The workload serving before the rollout. Required: validation fails without it.
    pub blue: Option<WorkloadSpec>,
    /// The workload to roll out to. When present, `crossfade run` performs a rollout from blue to it;
    /// when absent it only serves blue.
    pub green: Option<WorkloadSpec>,
    /// How the rollout moves traffic and judges the preview.
    pub rollout: RolloutConfig,
    /// Where the rollout's state is persisted after every transition. Default: none, nothing is
    /// persisted and a restart starts from the spec alone.
    pub state_file: Option<PathBuf>,
    /// The proxy's `Via` entry and the loop detection it gives (see
    /// [`ViaConfig`](crossfade_proxy::config::ViaConfig)). Default: on, with a random pseudonym
    /// per run.
    #[serde(skip_serializing_if = "crossfade_proxy::config::ViaConfig::is_default")]
    pub via: crossfade_proxy::config::ViaConfig,
    /// The ports `{port}` instances are given (see [`PortRange`]): `25100-25199` or `{ from:
    /// 25100, to: 25199 }`, each a free port of the range on 127.0.0.1. Default: none, a free
    /// port from the kernel's ephemeral range.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_range: Option<PortRange>,
    /// The proxy's `drain_timeout`, as a proxy config's: on SIGTERM (or once `run
    /// --exit-after-rollout` lingered), how long requests in flight may finish before they are
    /// cut, and how long upgraded connections (WebSockets) to an endpoint that left the route
    /// get to end on their own. Default 30 s
    /// ([`DRAIN_TIMEOUT`](crossfade_proxy::config::DRAIN_TIMEOUT)). Not `rollout.drain_timeout`,
    /// the retiring backend's drain at the end of a rollout.
    #[serde(with = "crossfade_proxy::duration::serde")]
    pub drain_timeout: Duration,
    /// The proxy's `drain_grace`: once it drains (SIGTERM, a binary upgrade), how long idle
    /// HTTP/1.x keep-alive client connections are still served, each response with `Connection:
    /// close`, before they are closed; `0s` closes them at once. At most half of
    /// `drain_timeout`. Unset (`None`): 1 s ([`DRAIN_GRACE`](crossfade_proxy::config::DRAIN_GRACE)),
    /// or half of `drain_timeout` when that is less ([`RunSpec::drain_grace`]), so that a short
    /// `drain_timeout` alone is a valid spec (check34: `drain_timeout: 1s` was refused for a
    /// `drain_grace` nobody wrote).
    #[serde(
        with = "crossfade_proxy::duration::serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub drain_grace: Option<Duration>,
    /// The proxy's upstream settings (see
    /// [`UpstreamConfig`](crossfade_proxy::config::UpstreamConfig)): connect, response and idle
    /// timeouts, idle connections kept per endpoint, the retry budget and the endpoint pick, as a
    /// proxy config's `upstream:`. The idle timeout belongs below the backends' keep-alive timeout
    /// (case C17). Default: the proxy's defaults (2 s, 30 s, 4 s, 1024, ...).
    #[serde(skip_serializing_if = "is_default_upstream")]
    pub upstream: crossfade_proxy::config::UpstreamConfig,
    /// The proxy's `trust_forwarded_for`: `true` keeps a client's `X-Forwarded-For` (and
    /// `Forwarded`) and appends the peer's address, for a proxy behind a load balancer; `false`
    /// replaces it with the peer's address only, for a proxy that faces clients directly, so that
    /// no client can pose as another address to the backends or choose its `route.sticky`
    /// `client_address` bucket (case C19). Default `true`.
    #[serde(skip_serializing_if = "is_true")]
    pub trust_forwarded_for: bool,
    /// The proxy's `proxy_protocol`: every client connection begins with a PROXY protocol header
    /// (v1 or v2) from an L4 load balancer, whose source address is then the client's. Default
    /// `false`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub proxy_protocol: bool,
    /// The proxy's client-side limits and timeouts (see
    /// [`LimitsConfig`](crossfade_proxy::config::LimitsConfig)): header read timeout, header size,
    /// connections and requests at most, ... as a proxy config's `limits:`. Default: the proxy's.
    #[serde(skip_serializing_if = "is_default_limits")]
    pub limits: crossfade_proxy::config::LimitsConfig,
    /// TLS termination on the traffic listener (see
    /// [`TlsConfig`](crossfade_proxy::config::TlsConfig)); relative `cert` and `key` paths are
    /// taken from the spec's directory, and SIGHUP reloads the files. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<crossfade_proxy::config::TlsConfig>,
    /// The proxy's access log: `off` (the default), `stdout`, or a file (relative to the spec's
    /// directory) that one JSON line per request is appended to; SIGHUP reopens it (logrotate).
    /// See [`AccessLogConfig`](crossfade_proxy::config::AccessLogConfig).
    #[serde(skip_serializing_if = "is_default_access_log")]
    pub access_log: crossfade_proxy::config::AccessLogConfig,
    /// The proxy's request IDs (see [`RequestIdConfig`](crossfade_proxy::config::RequestIdConfig)):
    /// `request_id: {}` gives each request an `x-request-id`. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<crossfade_proxy::config::RequestIdConfig>,
}

/// Whether `limits` is the proxy's default (left out when written).
fn is_default_limits(limits: &crossfade_proxy::config::LimitsConfig) -> bool {
    *limits == crossfade_proxy::config::LimitsConfig::default()
}

/// Whether `access_log` is the default, `off` (left out when written).
fn is_default_access_log(access_log: &crossfade_proxy::config::AccessLogConfig) -> bool {
    *access_log == crossfade_proxy::config::AccessLogConfig::default()
}

/// The route: which requests Crossfade splits between blue and green.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[serde(expecting = "a map of route settings (name, hosts, path_prefix, ...)")]
pub struct RouteSpec {
    /// The route's name, used in metrics labels and logs. Default `web`.
    pub name: String,
    /// `Host` header values that match (without port). Default: empty, any host matches.
    pub hosts: Vec<String>,
    /// Path prefix that matches; must start with `/`. Default `/`.
    pub path_prefix: String,
    /// The proxy's active health checks of every endpoint. Default: none (see
    /// [`HealthConfig`](crossfade_proxy::config::HealthConfig)).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<crossfade_proxy::config::HealthConfig>,
    /// The proxy's passive outlier ejection. Default: 3 upstream failures in a row eject an
    /// endpoint for 1 s (see [`OutlierConfig`](crossfade_proxy::config::OutlierConfig)).
    pub outlier: crossfade_proxy::config::OutlierConfig,
    /// The proxy's circuit breaker on the preview: a trip rolls the rollout back. Default: none
    /// (see [`BreakerConfig`](crossfade_proxy::config::BreakerConfig)).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breaker: Option<crossfade_proxy::config::BreakerConfig>,
    /// The proxy's `fail_open`: when health holds out every endpoint of every backend that may
    /// take a request, it goes to one of them by weight instead of getting 503. Default `true`
    /// (see [`RouteConfig::fail_open`](crossfade_proxy::config::RouteConfig::fail_open)).
    #[serde(skip_serializing_if = "is_true")]
    pub fail_open: bool,
    /// The proxy's sticky, monotone assignment of users to backends (a header, a cookie, or the
    /// client's address hashed to a bucket; green iff the bucket is below green's weight), so
    /// that a user moves to the preview once as its weight rises and back to the active backend
    /// at a rollback or abort (case C08). Default: none, every request is picked by weight (see
    /// [`StickyConfig`](crossfade_proxy::config::StickyConfig)).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sticky: Option<crossfade_proxy::config::StickyConfig>,
    /// The proxy's request timeout for this route: the longest wait for a response head once the
    /// whole request went upstream, past which the client gets 504 (RFC 9110 §15.6.5), so that
    /// a hung preview holds no request longer (case C13). Above 0, at most 366 days. Default:
    /// none, the proxy's `upstream.response_timeout` (30 s) applies (see
    /// [`RouteConfig::response_timeout`](crossfade_proxy::config::RouteConfig::response_timeout)).
    #[serde(
        default,
        with = "crossfade_proxy::duration::serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub response_timeout: Option<Duration>,
}

/// Whether `upstream` is the proxy's default (left out when written).
fn is_default_upstream(upstream: &crossfade_proxy::config::UpstreamConfig) -> bool {
    *upstream == crossfade_proxy::config::UpstreamConfig::default()
}

/// Whether `value` is `true` (the default of [`RouteSpec::fail_open`], left out when written).
fn is_true(value: &bool) -> bool {
    *value
}

/// One backend's workload: processes Crossfade starts (`command`) or endpoints it does not start
/// (`endpoints`). Exactly one of the two must be set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[serde(expecting = "a map of workload settings (command, endpoints, ...)")]
pub struct WorkloadSpec {
    /// Label in logs, events, `crossfade status` and the metrics' `version` label. Default: the
    /// slot's name, `blue` or `green`. Not empty, no control characters, at most 63 characters.
    pub name: Option<String>,
    /// Program to start (path or name looked up in `PATH`; not a shell line). A list is refused
    /// naming where its arguments go ([`de::command`]).
    #[serde(deserialize_with = "de::command")]
    pub command: Option<String>,
    /// Arguments; `{port}` is replaced by the instance's port.
    pub args: Vec<String>,
    /// Extra environment variables; `{port}` in a value is replaced by the instance's port. A
    /// name given twice is refused ([`crossfade_proxy::de::unique_map`]).
    #[serde(deserialize_with = "crossfade_proxy::de::unique_map")]
    pub env: BTreeMap<String, String>,
    /// Working directory of started processes. Default: Crossfade's own.
    pub workdir: Option<PathBuf>,
    /// Processes to start, each on its own port. Default 1, at most [`MAX_INSTANCES`]. Only for
    /// `command` workloads.
    #[serde(deserialize_with = "de::count")]
    pub instances: u32,
    /// Static endpoints that Crossfade routes to but does not start or stop.
    #[serde(deserialize_with = "crossfade_proxy::de::addresses")]
    pub endpoints: Vec<SocketAddr>,
    /// How the proxy speaks to this workload's endpoints: `http1` (the default) or `h2c`
    /// (cleartext HTTP/2 with prior knowledge, RFC 9113 §3.3, for a workload that speaks only
    /// HTTP/2, such as a gRPC server), as a proxy config backend's `protocol` (see
    /// [`UpstreamProtocol`]): requests, retries, `route.health` probes and the readiness probes
    /// of `readiness` all speak it. Blue and green each have their own.
    #[serde(skip_serializing_if = "UpstreamProtocol::is_default")]
    pub protocol: UpstreamProtocol,
    /// How an instance is judged ready to receive traffic.
    pub readiness: ReadinessConfig,
    /// Time between SIGTERM and SIGKILL when stopping a started process. Default 10s; 0 kills at once.
    #[serde(with = "crossfade_proxy::duration::serde")]
    pub stop_grace: Duration,
}

/// The readiness probe: `GET path` on every instance until it answers 2xx, in the workload's
/// `protocol` (HTTP/1.1, or h2c with prior knowledge, judged as the proxy's h2c health checks
/// judge: [`crossfade_proxy::health::probe_once`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[serde(expecting = "a map of readiness settings (path, timeout, interval, deadline)")]
pub struct ReadinessConfig {
    /// Path probed on each instance; must start with `/`. Default `/healthz`.
    pub path: String,
    /// Timeout of one probe. Default 1s.
    #[serde(with = "crossfade_proxy::duration::serde")]
    pub timeout: Duration,
    /// Time between probes of one instance. Default 200ms.
    #[serde(with = "crossfade_proxy::duration::serde")]
    pub interval: Duration,
    /// Time an instance has to become ready after it was started before the workload has failed.
    /// Default 30s; at least `timeout + interval`, so that an instance not answering its first
    /// probe (taken as it starts) gets a second.
    #[serde(with = "crossfade_proxy::duration::serde")]
    pub deadline: Duration,
}

/// How a rollout moves traffic to the preview and judges it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[serde(expecting = "a map of rollout settings (steps, hold, analysis, ...)")]
pub struct RolloutConfig {
    /// The preview's weight at each step, strictly increasing, the last one 100%. Default
    /// 5%, 25%, 50%, 100%. Each entry is a percentage (`25`, `"0.5%"`) or `{ weight: 25, hold: 30s }`.
    /// The first may be 0% with `analysis.shadow`: a shadow step, judged by mirrored traffic.
    pub steps: Vec<StepConfig>,
    /// How long each step holds its weight (at least) unless the step sets its own. Default 10s.
    #[serde(with = "crossfade_proxy::duration::serde")]
    pub hold: Duration,
    /// How the preview is judged.
    pub analysis: AnalysisConfig,
    /// Bound on any one phase or step: provisioning, a step (from requesting its weight to passing),
    /// waiting for weights or a drain. Exceeding it rolls back (before promotion). Default 120s.
    #[serde(with = "crossfade_proxy::duration::serde")]
    pub progress_deadline: Duration,
    /// How long the retired backend may take to finish its in-flight requests. Default 30s.
    #[serde(with = "crossfade_proxy::duration::serde")]
    pub drain_timeout: Duration,
    /// Webhook gates asked before the rollout, before each step, before promotion or after
    /// completion (see [`gates`]). Default none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<GateConfig>,
}

/// One rollout step: the preview's weight and, optionally, its own hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct StepConfig {
    /// The preview's share of the route during this step.
    pub weight: Percent,
    /// How long the step holds at least; default [`RolloutConfig::hold`].
    #[serde(
        with = "crossfade_proxy::duration::serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub hold: Option<Duration>,
}

/// Thresholds of the analysis that decides whether a step passes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[serde(expecting = "a map of analysis settings (interval, max_error_rate, judge, ...)")]
pub struct AnalysisConfig {
    /// Length of one analysis window. Default: the step's hold.
    #[serde(with = "crossfade_proxy::duration::serde::option")]
    pub interval: Option<Duration>,
    /// Highest error rate (errors / requests) the preview may show, as a fraction in 0..=1. A spec
    /// writes it as a percentage string (`"1%"`); a bare number there is refused as ambiguous
    /// (README "Shares"). Default 0.01 (1%).
    #[serde(with = "de::fraction")]
    pub max_error_rate: f64,
    /// Highest p99 latency the preview may show. Default: no bound.
    #[serde(with = "crossfade_proxy::duration::serde::option")]
    pub max_p99: Option<Duration>,
    /// Highest preview p99 as a multiple of the active backend's p99 in the same window (checked
    /// when active served at least `min_requests`; with fewer the window is inconclusive, but at
    /// a step where active takes no traffic, 100%, where the rule is skipped). At a shadow step:
    /// the preview's p99 on the mirrored requests as a multiple of the active backend's on the
    /// same requests (with at least `shadow.min_compared` pairs; else the live reading, and with
    /// too little of that the window is inconclusive). Default: no bound.
    #[serde(deserialize_with = "de::number_option")]
    pub max_p99_ratio: Option<f64>,
    /// Fewest preview requests a window needs to count; fewer make it inconclusive. Default 50.
    #[serde(deserialize_with = "de::count")]
    pub min_requests: u64,
    /// Inconclusive windows in a row that trigger `on_inconclusive`. Default 3.
    #[serde(deserialize_with = "de::count")]
    pub max_inconclusive: u32,
    /// What to do after `max_inconclusive` inconclusive windows in a row. Default rollback.
    pub on_inconclusive: InconclusivePolicy,
    /// Which judge decides: `threshold` (default) or `sequential` (see docs/judgement.md).
    pub judge: JudgeKind,
    /// Sequential judge: the highest probability of rolling back a green that is no worse than
    /// blue (with `fail_when_worse_than: allowance`: no worse than blue by more than the allowed
    /// increases), over the whole rollout however often it looks (Ville's inequality). In
    /// (0, 0.5]; default 0.01.
    #[serde(deserialize_with = "de::number")]
    pub alpha: f64,
    /// Sequential judge: the highest probability of passing a green that is worse by
    /// `max_error_rate_increase` or `max_latency_increase`. In (0, 0.5]; default 0.05.
    #[serde(deserialize_with = "de::number")]
    pub beta: f64,
    /// Sequential judge: the error-rate increase over blue, in percentage points, that must not
    /// pass (`"1%"` = green 1.5% against blue 0.5%). A percentage string in a spec (README
    /// "Shares"); default 0.01.
    #[serde(with = "de::fraction")]
    pub max_error_rate_increase: f64,
    /// Sequential judge: the latency growth over blue that must not pass, `"20%"` or `"10ms"`.
    /// Default 20%.
    pub max_latency_increase: LatencyIncrease,
    /// Sequential judge: what a fail needs evidence of. `blue` (default): green worse than blue at
    /// all; `allowance`: green worse than blue by more than `max_error_rate_increase` or
    /// `max_latency_increase` (a green within them is failed with probability ≤ `alpha`). The
    /// ceilings `max_error_rate` and `max_p99` apply either way.
    pub fail_when_worse_than: FailWhenWorseThan,
    /// Extra checks read from Prometheus or a web endpoint at every analysis (see [`checks`]). A
    /// check out of range fails the analysis; one that cannot be read makes it inconclusive.
    /// Default none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckConfig>,
    /// Judges a 0% step by shadow traffic: the preview's answers to mirrored requests against the
    /// active backend's (see [`ShadowGuard`]). Required for a 0% step. Default none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowGuard>,
}

/// What a rollout does when analysis keeps being inconclusive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InconclusivePolicy {
    /// Pause and wait for an operator to resume, promote or abort.
    Pause,
    /// Roll back to the active backend.
    #[default]
    Rollback,
}

de::keyword_enum!(
    InconclusivePolicy,
    default Some("rollback"),
    "pause" => InconclusivePolicy::Pause,
    "rollback" => InconclusivePolicy::Rollback,
);

// === impl RunSpec ===

impl RunSpec {
    /// Parses a YAML spec and validates it.
    ///
    /// # Errors
    /// [`SpecError::Parse`] when the text is not YAML of this shape (unknown fields included), and
    /// [`SpecError::Invalid`] listing every rule it breaks.
    pub fn from_yaml(text: &str) -> Result<RunSpec, SpecError> {
        let (spec, problems) = RunSpec::parse(text)?;
        SpecError::check(problems)?;
        Ok(spec)
    }

    /// Parses a spec file's text, resolves its relative paths from `base` (the file's directory,
    /// see [`RunSpec::resolve_paths`]) and checks everything at once: the rules of
    /// [`RunSpec::from_yaml`] and what only this machine can tell ([`RunSpec::check_machine`]: the
    /// commands exist and may be executed, the working directories exist), so one run of
    /// `crossfade check` lists every problem it can find. A field already refused by a rule is not
    /// reported again by the machine checks.
    ///
    /// # Errors
    /// [`SpecError::Parse`] with the parser's first error (YAML and serde stop there: a syntax
    /// error, a wrong type or an unknown field), and [`SpecError::Invalid`] listing every problem.
    pub fn load(text: &str, base: &std::path::Path) -> Result<RunSpec, SpecError> {
        let (mut spec, mut problems) = RunSpec::parse(text)?;
        spec.resolve_paths(base);
        let refused: Vec<String> = problems.iter().map(|p| p.path.clone()).collect();
        problems.extend(
            spec.check_machine()
                .into_iter()
                .filter(|p| !refused.contains(&p.path)),
        );
        SpecError::check(problems)?;
        Ok(spec)
    }

    /// What this spec says that is valid but does nothing or cannot be shown apart
    /// ([`warnings`]): sequential-judge keys under `judge: threshold`, a green with blue's name,
    /// and the proxy's warnings about the route (a `route.sticky` cookie named `__Host-...`).
    /// `text` is the spec file's text, which tells a key written from one left to its default.
    /// One line per warning, naming its field; empty for most specs.
    pub fn warnings(&self, text: &str) -> Vec<String> {
        let written = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text)
            .ok()
            .and_then(|doc| doc.get("rollout").cloned())
            .unwrap_or_default();
        let mut lines = warnings::unread_judge_keys(&written, &self.rollout);
        lines.extend(warnings::shadow_timeout_below_max_p99(&self.rollout));
        if let (Some(blue), Some(green)) = (&self.blue, &self.green) {
            lines.extend(warnings::same_label(blue, Slot::Blue, green, "green.name"));
        }
        lines.extend(self.route_warnings());
        lines
    }

    /// The proxy's warnings about the route `crossfade run` serves (e.g. a minted `route.sticky`
    /// cookie named `__Host-...`, which no browser keeps without TLS), under the spec's path. The
    /// endpoints are the workloads' (checked with them), so the stand-in's are left out.
    fn route_warnings(&self) -> Vec<String> {
        let stand_in = vec![validate::stand_in(self)];
        let config = self.proxy_config(Slot::Blue, stand_in, self.blue_protocol());
        let route = config.warnings().into_iter().filter_map(|problem| {
            let rest = problem.path.strip_prefix("routes[0]")?;
            (!rest.contains(".endpoints[")).then(|| format!("route{rest}: {}", problem.message))
        });
        route.collect()
    }

    /// The parsed spec and every rule it breaks (none when valid).
    fn parse(text: &str) -> Result<(RunSpec, Vec<Problem>), SpecError> {
        let spec: RunSpec =
            serde_yaml_ng::from_str(text).map_err(|e| SpecError::parse_in(text, e))?;
        let mut problems = bare_rate_problems(text);
        // A rate refused as ambiguous is not judged again by its fraction reading.
        let refused: Vec<String> = problems.iter().map(|p| p.path.clone()).collect();
        problems.extend(
            validate::run_spec(&spec)
                .into_iter()
                .filter(|p| !refused.contains(&p.path)),
        );
        Ok((spec, problems))
    }

    /// Checks every rule and reports all problems at once.
    ///
    /// # Errors
    /// [`SpecError::Invalid`] with one [`Problem`] per broken rule.
    pub fn validate(&self) -> Result<(), SpecError> {
        SpecError::check(validate::run_spec(self))
    }

    /// [`RunSpec::validate`] for a rollout started on a running service (`POST /rollout`,
    /// `crossfade migrate`): `blue` holds the active workload, which serves in slot `active`
    /// (`green` after a promotion), and `green` the requested preview. A preview endpoint that
    /// the active workload uses is named as status shows it: `green.endpoints[0]: 127.0.0.1:8001
    /// is also an endpoint of v2, active in slot green` (`v2` is the active workload's `name`,
    /// left out when it has none), never as "a blue endpoint" of a blue slot that is empty.
    ///
    /// `running` are the endpoints the active workload serves on now: for a `command` workload
    /// the ports its instances were given, which its spec does not hold (trial 11, L4: a preview
    /// pointed at a running instance of the active workload passed every step, since it *is*
    /// that workload, and retiring the old slot then stopped the process the new active slot
    /// served from). A preview endpoint among them is refused the same way.
    ///
    /// # Errors
    /// [`SpecError::Invalid`] with one [`Problem`] per broken rule.
    pub fn validate_start(&self, active: Slot, running: &[SocketAddr]) -> Result<(), SpecError> {
        let slot = active.as_str();
        let owner = match self.blue.as_ref().and_then(|b| b.name.as_deref()) {
            Some(name) if name != slot => format!("an endpoint of {name}, active in slot {slot}"),
            _ => format!("an endpoint of the active workload (slot {slot})"),
        };
        let mut problems = validate::run_spec_with(self, &owner);
        // As in a spec (trial 22): the preview must not be the workload serving already.
        if let (Some(active), Some(preview)) = (&self.blue, &self.green) {
            if active == preview && preview.is_command() {
                let which = match active.name.as_deref() {
                    Some(name) => format!("{name}, active in slot {slot}"),
                    None => format!("slot {slot}"),
                };
                problems.push(Problem {
                    path: "green".into(),
                    message: format!(
                        "is the workload already active ({which}): a rollout to it would change \
                         nothing; give green: the new version"
                    ),
                });
            }
        }
        let green = self.green.as_ref().map_or(&[][..], |g| &g.endpoints[..]);
        for (i, endpoint) in green.iter().enumerate() {
            let path = format!("green.endpoints[{i}]");
            if running.contains(endpoint) && !problems.iter().any(|p| p.path == path) {
                problems.push(Problem {
                    path,
                    message: format!(
                        "{endpoint} is also {owner}, where one of its running instances serves"
                    ),
                });
            }
        }
        SpecError::check(problems)
    }

    /// The proxy's `drain_grace`: the spec's, else 1 s
    /// ([`DRAIN_GRACE`](crossfade_proxy::config::DRAIN_GRACE)) held to half of `drain_timeout`.
    pub fn drain_grace(&self) -> Duration {
        (self.drain_grace)
            .unwrap_or(crossfade_proxy::config::DRAIN_GRACE.min(self.drain_timeout / 2))
    }

    /// The proxy config `crossfade run` serves this spec with: its `listen`, `admin`, `via`,
    /// `drain_timeout`, `drain_grace`, `upstream`, `trust_forwarded_for`, `proxy_protocol`, `limits`, `tls`,
    /// `access_log` and `request_id`, and one
    /// route named `route.name` (hosts, path prefix, health, outlier, breaker, fail_open, sticky
    /// and response_timeout from `route:`) with
    /// all weight (100%) on `active`'s `endpoints`, spoken to in `protocol` (the active
    /// workload's `protocol`), and none on the other slot (whose protocol the preview's
    /// endpoints bring, [`crate::traffic::TrafficSetter::set_endpoints`]).
    ///
    /// Validation ([`RunSpec::validate`], [`RunSpec::load`]) checks this config by the proxy's own
    /// rules ([`ProxyConfig::validate`](crossfade_proxy::config::ProxyConfig::validate)) and reports its problems under the spec's paths
    /// (`routes[0].hosts[0]` as `route.hosts[0]`), so a valid spec always gives a valid config.
    pub fn proxy_config(
        &self,
        active: Slot,
        endpoints: Vec<SocketAddr>,
        protocol: UpstreamProtocol,
    ) -> crossfade_proxy::config::ProxyConfig {
        use crossfade_proxy::config::{BackendConfig, ProxyConfig, RouteConfig};
        let serving = BackendConfig {
            endpoints,
            weight: Some(Percent(FULL_BP)),
            protocol,
        };
        let idle = BackendConfig {
            endpoints: Vec::new(),
            weight: Some(Percent(0)),
            ..BackendConfig::default()
        };
        let (blue, green) = match active {
            Slot::Blue => (serving, idle),
            Slot::Green => (idle, serving),
        };
        ProxyConfig {
            listen: self.listen,
            admin: self.admin,
            routes: vec![RouteConfig {
                name: self.route.name.clone(),
                hosts: self.route.hosts.clone(),
                path_prefix: self.route.path_prefix.clone(),
                active,
                blue,
                green,
                health: self.route.health.clone(),
                outlier: self.route.outlier.clone(),
                breaker: self.route.breaker.clone(),
                fail_open: self.route.fail_open,
                sticky: self.route.sticky.clone(),
                response_timeout: self.route.response_timeout,
                ..RouteConfig::default()
            }],
            via: self.via.clone(),
            drain_timeout: self.drain_timeout,
            drain_grace: self.drain_grace(),
            upstream: self.upstream.clone(),
            trust_forwarded_for: self.trust_forwarded_for,
            proxy_protocol: self.proxy_protocol,
            limits: self.limits.clone(),
            tls: self.tls.clone(),
            access_log: self.access_log.clone(),
            request_id: self.request_id.clone(),
            ..ProxyConfig::default()
        }
    }
}

impl RunSpec {
    /// `blue`'s `protocol` (`http1` without a blue): what the spec's checks of the proxy config
    /// stand in for the active workload.
    pub fn blue_protocol(&self) -> UpstreamProtocol {
        self.blue
            .as_ref()
            .map_or_else(UpstreamProtocol::default, |b| b.protocol)
    }
}

impl Default for RunSpec {
    fn default() -> Self {
        RunSpec {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin: SocketAddr::from(([127, 0, 0, 1], 9901)),
            route: RouteSpec::default(),
            blue: None,
            green: None,
            rollout: RolloutConfig::default(),
            state_file: None,
            via: crossfade_proxy::config::ViaConfig::default(),
            port_range: None,
            drain_timeout: crossfade_proxy::config::DRAIN_TIMEOUT,
            drain_grace: None,
            upstream: crossfade_proxy::config::UpstreamConfig::default(),
            trust_forwarded_for: true,
            proxy_protocol: false,
            limits: crossfade_proxy::config::LimitsConfig::default(),
            tls: None,
            access_log: crossfade_proxy::config::AccessLogConfig::default(),
            request_id: None,
        }
    }
}

impl Default for RouteSpec {
    fn default() -> Self {
        RouteSpec {
            name: "web".into(),
            hosts: Vec::new(),
            path_prefix: "/".into(),
            health: None,
            outlier: crossfade_proxy::config::OutlierConfig::default(),
            breaker: None,
            fail_open: true,
            sticky: None,
            response_timeout: None,
        }
    }
}

// === impl WorkloadSpec ===

impl WorkloadSpec {
    /// The label for logs and events: `name`, or the slot's name.
    pub fn label(&self, slot: Slot) -> &str {
        self.name.as_deref().unwrap_or(slot.as_str())
    }

    /// Checks this workload alone, reporting problems under `path` (e.g. `green`); for a workload
    /// that arrives without the rest of a spec (a rollout started over the admin API). Cross-checks
    /// with the listen address and the other slot are done only by [`RunSpec::validate`].
    ///
    /// # Errors
    /// [`SpecError::Invalid`] with one [`Problem`] per broken rule.
    pub fn validate(&self, path: &str) -> Result<(), SpecError> {
        SpecError::check(validate::workload_spec(self, path))
    }

    /// Whether Crossfade starts this workload's processes (`command`) rather than routing to static
    /// endpoints.
    pub fn is_command(&self) -> bool {
        self.command.is_some()
    }

    /// A short human description: `` `./app --port {port}` ×2 instances `` or `endpoints
    /// 10.0.0.7:80, 10.0.0.8:80`, followed by ` over h2c` for an h2c workload.
    pub fn describe(&self) -> String {
        let over = match self.protocol {
            UpstreamProtocol::Http1 => "",
            UpstreamProtocol::H2c => " over h2c",
        };
        if let Some(command) = &self.command {
            let mut line = command.clone();
            for arg in &self.args {
                line.push(' ');
                line.push_str(arg);
            }
            let plural = if self.instances == 1 { "" } else { "s" };
            return format!("`{line}` ×{} instance{plural}{over}", self.instances);
        }
        let list: Vec<String> = self.endpoints.iter().map(ToString::to_string).collect();
        format!("endpoints {}{over}", list.join(", "))
    }
}

impl Default for WorkloadSpec {
    fn default() -> Self {
        WorkloadSpec {
            name: None,
            command: None,
            args: Vec::new(),
            env: BTreeMap::new(),
            workdir: None,
            instances: 1,
            endpoints: Vec::new(),
            protocol: UpstreamProtocol::Http1,
            readiness: ReadinessConfig::default(),
            stop_grace: Duration::from_secs(10),
        }
    }
}

impl Default for ReadinessConfig {
    fn default() -> Self {
        ReadinessConfig {
            path: "/healthz".into(),
            timeout: Duration::from_secs(1),
            interval: Duration::from_millis(200),
            deadline: Duration::from_secs(30),
        }
    }
}

// === impl RolloutConfig ===

impl RolloutConfig {
    /// Checks the rollout settings alone, reporting problems under `rollout.`, as
    /// [`RunSpec::validate`] does for a whole spec.
    ///
    /// # Errors
    /// [`SpecError::Invalid`] with one [`Problem`] per broken rule.
    pub fn validate(&self) -> Result<(), SpecError> {
        SpecError::check(validate::rollout_config(self))
    }

    /// The hold of step `index`: its own, or the default [`RolloutConfig::hold`].
    pub fn hold_of(&self, index: usize) -> Duration {
        self.steps
            .get(index)
            .and_then(|s| s.hold)
            .unwrap_or(self.hold)
    }

    /// The analysis window length during step `index`: `analysis.interval`, or the step's hold.
    pub fn interval_of(&self, index: usize) -> Duration {
        self.analysis
            .interval
            .unwrap_or_else(|| self.hold_of(index))
    }

    /// Whether step `index` is a shadow step: 0% with `analysis.shadow` (see [`ShadowGuard`]).
    pub fn is_shadow_step(&self, index: usize) -> bool {
        self.analysis.shadow.is_some() && self.steps.get(index).is_some_and(|s| s.weight.bp() == 0)
    }

    /// The preview's weight at step `index` in basis points; 100% past the last step.
    pub fn weight_bp(&self, index: usize) -> u32 {
        self.steps.get(index).map_or(FULL_BP, |s| s.weight.bp())
    }
}

impl Default for RolloutConfig {
    fn default() -> Self {
        RolloutConfig {
            steps: [500, 2500, 5000, FULL_BP]
                .into_iter()
                .map(|bp| StepConfig {
                    weight: Percent(bp),
                    hold: None,
                })
                .collect(),
            hold: Duration::from_secs(10),
            analysis: AnalysisConfig::default(),
            progress_deadline: Duration::from_secs(120),
            drain_timeout: Duration::from_secs(30),
            gates: Vec::new(),
        }
    }
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        AnalysisConfig {
            interval: None,
            max_error_rate: 0.01,
            max_p99: None,
            max_p99_ratio: None,
            min_requests: 50,
            max_inconclusive: 3,
            on_inconclusive: InconclusivePolicy::Rollback,
            judge: JudgeKind::Threshold,
            alpha: 0.01,
            beta: 0.05,
            max_error_rate_increase: 0.01,
            max_latency_increase: LatencyIncrease::default(),
            fail_when_worse_than: FailWhenWorseThan::Blue,
            checks: Vec::new(),
            shadow: None,
        }
    }
}

/// [`bare_rate_problems`] for a document already parsed, e.g. the JSON body of `POST /rollout`.
pub(crate) fn bare_rate_problems_in(doc: &serde_yaml_ng::Value) -> Vec<Problem> {
    de::bare_rates(doc)
}

/// The rate fields of a spec or `crossfade migrate` file's text written as a bare number (see
/// [`de::bare_rates`]): one [`Problem`] per field, showing both readings. Empty when the text is
/// not YAML (the typed parse reports that).
pub(crate) fn bare_rate_problems(text: &str) -> Vec<Problem> {
    serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text)
        .map(|doc| de::bare_rates(&doc))
        .unwrap_or_default()
}

/// Reads a rate given on a command line or in the environment (`crossfade demo
/// --green-error-rate`, `crossfade sample-app --error-rate`): a percentage (`"20%"`, the form a
/// spec writes) or a fraction (`0.2`), both meaning 20% (trial 12, M15). The same reader as the
/// spec's rate fields; a spec still refuses a bare number as ambiguous (README "Shares"), a flag
/// reads it as a fraction, as it always has.
///
/// # Errors
/// Text that is not a number or a percentage, a negative rate (`-5%`: "cannot be negative"),
/// and a rate above 100% (1), saying both notations; a bare number above 1 and at most 100 says it
/// read as a fraction and how to write it as a percentage (`20`: "2000% as a fraction ... write
/// 20%"); one above 100 (`150`) is outside 0% to 100% either way.
pub fn parse_rate(text: &str) -> Result<f64, String> {
    let notations = "write a percentage such as 20% or a fraction such as 0.2 (the same rate)";
    let rate = de::fraction::parse(text)
        .ok()
        .filter(|r| !r.is_nan())
        .ok_or_else(|| format!("`{text}` is not a rate: {notations}"))?;
    if rate < 0.0 {
        Err(format!(
            "`{text}` is negative: a rate cannot be negative; {notations}"
        ))
    } else if rate <= 1.0 {
        Ok(rate)
    } else if !text.trim().ends_with('%') && rate <= 100.0 {
        // Session 43: `--green-error-rate 20` (20% meant) was told "`20` is outside 0% to
        // 100%", which it is not as a percentage. Above 100 no percentage is meant either.
        let number = text.trim();
        Err(format!(
            "`{text}` is {} as a fraction, above 100%: write {number}% for {number} percent (a \
             number without % is a fraction: 0.2 is 20%)",
            fraction_percent(rate)
        ))
    } else {
        Err(format!("`{text}` is outside 0% to 100%: {notations}"))
    }
}

/// Formats a fraction as a percentage with up to two decimals: `0.021` → `2.1%`, `1.5` → `150%`.
pub fn fraction_percent(fraction: f64) -> String {
    let text = format!("{:.2}", fraction * 100.0);
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}%")
}

/// Formats a duration the way the spec writes it: `30s`, `1m 30s`, `250ms`, `365days`
/// ([`crossfade_proxy::duration::show`]).
pub(crate) fn human(d: Duration) -> String {
    crossfade_proxy::duration::show(d)
}

/// Formats a measured duration (a clock's elapsed time, not a configured one) to the
/// millisecond: `12s 780ms`, `1s 1ms`. [`human`] shows every unit a clock reading has, so a
/// measured span read `12s 780ms 441us 536ns` in operators' logs and events (trial 25).
pub(crate) fn human_elapsed(d: Duration) -> String {
    let millis = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    human(Duration::from_millis(millis))
}
