//! The proxy's configuration: listeners, upstream settings and routes, with validation that names
//! every problem's field path.
//!
//! Load, then validate, then convert: [`ProxyConfig::from_yaml`] parses and validates, and
//! [`ProxyConfig::validate`] reports **every** problem at once, each with its field path
//! (`routes[0].green.weight: 120% is above 100%`), so that an invalid state never reaches the proxy.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::access::AccessLogConfig;
pub use crate::request_id::RequestIdConfig;
pub use crate::sticky::StickyConfig;
pub use crate::via::ViaConfig;
use crate::weight::{Percent, Slot, Weights};

/// The whole proxy configuration, as read from YAML.
///
/// Every field has a default, so `{}` is a valid (route-less) config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    default,
    deny_unknown_fields,
    expecting = "a proxy config: a map with listen, admin, limits, tls, upstream, via, access_log, request_id, state_file and routes"
)]
pub struct ProxyConfig {
    /// Address of the traffic listener. Default `127.0.0.1:8080`.
    #[serde(deserialize_with = "crate::de::address")]
    pub listen: SocketAddr,
    /// Address of the admin listener (`/status`, `/metrics`, weights). Default `127.0.0.1:9901`.
    #[serde(deserialize_with = "crate::de::address")]
    pub admin: SocketAddr,
    /// Whether to keep the client's `X-Forwarded-For` values and append the peer address to them
    /// (`true`, the default), or to replace them with the peer address only (`false`, for a proxy that
    /// faces untrusted clients directly).
    pub trust_forwarded_for: bool,
    /// Whether every connection to the traffic listener begins with a PROXY protocol header (v1 or
    /// v2, HAProxy's specification), sent by an L4 load balancer in front of the proxy: its source
    /// address is then the client's (`X-Forwarded-For`, the access log, a sticky client-address
    /// key), and a connection without a well-formed one is closed unanswered (see
    /// `crate::proxy_protocol`). Only for a listener that nothing but such a balancer reaches.
    /// Default `false`. Read at start (a reload does not apply a change).
    pub proxy_protocol: bool,
    /// How long [`Proxy::serve`](crate::Proxy::serve) waits for in-flight requests after shutdown
    /// begins, as a human duration (`"30s"`). Default 30 s. Also how long upgraded connections
    /// (WebSockets) to an endpoint that a routing change removed get to end on their own before
    /// they are closed (1001 "going away", see [`Proxy::update`](crate::Proxy::update)).
    #[serde(with = "crate::duration::serde")]
    pub drain_timeout: Duration,
    /// How long, once a drain began (shutdown or binary upgrade), idle HTTP/1.x keep-alive client
    /// connections are still served, each response with `Connection: close`, before they are
    /// closed: a client that sends its next request on one as the drain begins gets its answer
    /// rather than a reset. At most half of `drain_timeout` is used, and the drain ends sooner
    /// when every connection has closed. `0s` closes idle connections at once. A human duration;
    /// default 1 s. Read at start (a reload does not apply it).
    #[serde(with = "crate::duration::serde")]
    pub drain_grace: Duration,
    /// Limits and timeouts on the client side of the traffic listener (see [`LimitsConfig`]).
    pub limits: LimitsConfig,
    /// TLS termination on the traffic listener (see [`TlsConfig`]). Default: none (cleartext
    /// HTTP/1.1 and HTTP/2 with prior knowledge).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// Settings of the upstream connections.
    pub upstream: UpstreamConfig,
    /// The `Via` entry on forwarded messages and the loop detection it gives (see
    /// [`ViaConfig`]). Default: on, with a random pseudonym per proxy instance.
    #[serde(skip_serializing_if = "ViaConfig::is_default")]
    pub via: ViaConfig,
    /// The access log: `off` (the default), `stdout`, or a file path that one JSON line per
    /// request is appended to (see [`AccessLogConfig`] and [`crate::access`]). A file that cannot
    /// be opened for appending is refused at start naming `access_log`. Read at start (a reload
    /// does not apply a change); a SIGHUP reopens the file.
    pub access_log: AccessLogConfig,
    /// Request IDs (see [`RequestIdConfig`] and [`crate::request_id`]): each request carries one
    /// in a header to its backend, in its access log line and back to the client. Default: none
    /// (off); `request_id: {}` turns them on with `x-request-id`. Read at start (a reload does not
    /// apply a change).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<RequestIdConfig>,
    /// Where weights are kept across restarts (absolute, or relative to the config file's
    /// directory): a JSON file the proxy replaces atomically, with a `.bak` copy beside it, at
    /// every change of its routes (an admin API weight write, a SIGHUP reload, a binary upgrade)
    /// before the change takes effect, and whose weights a start restores over the file's for each
    /// route whose endpoints and file weights did not change since (see [`crate::saved`]). Default:
    /// none, weights set through the admin API last until the process ends. Its directory must
    /// exist (`crossfade check` says so). Read at start (a reload does not apply a change).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_file: Option<PathBuf>,
    /// The routes, in declaration order (which breaks ties between routes with equally long path
    /// prefixes and equally specific matching hosts: `table::HostRank`).
    pub routes: Vec<RouteConfig>,
}

/// The default `drain_grace`: under traffic every HTTP/1.x connection gets its `Connection: close`
/// response well within it, and a client that idled this long seldom has a request on the wire
/// as the connection closes.
pub const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// The default `drain_timeout`: how long a shutdown waits for requests in flight (Kubernetes'
/// default `terminationGracePeriodSeconds`, so a pod's drain fits its grace).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Settings of the upstream connections, shared by every backend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    default,
    deny_unknown_fields,
    expecting = "a map of upstream settings (connect_timeout, response_timeout, idle_timeout, ...)"
)]
pub struct UpstreamConfig {
    /// Longest wait for a TCP connection to an endpoint; past it the request fails with 504.
    /// Default 2 s.
    #[serde(with = "crate::duration::serde")]
    pub connect_timeout: Duration,
    /// Longest wait for the response head once the whole request has gone upstream; past it the
    /// request fails with 504 (RFC 9110 §15.6.5). For a request without a body it runs from
    /// dispatch (connect included); for one with a body from when its last byte was handed to the
    /// upstream connection, and during the upload only while the backend holds it up, never while
    /// the client is still sending (see `upload`; `limits.body_read_timeout` bounds the client).
    /// The response body is not bounded. A route's own `response_timeout` overrides it. Default
    /// 30 s.
    #[serde(with = "crate::duration::serde")]
    pub response_timeout: Duration,
    /// How long an idle pooled connection is kept. Default 4 s: below the keep-alive timeout of
    /// common backends (nginx 75 s, Node.js 5 s, Go 90 s...), so that the proxy, not the backend,
    /// closes idle connections and a request is never written onto a connection the backend is
    /// closing (case C17, hyperium/hyper#2136). A backend's `Keep-Alive: timeout=N` shortens it
    /// for the connection it came on, to N s less 1 s, or none below 2 s (session 41; see
    /// `upstream::keep_alive`).
    #[serde(with = "crate::duration::serde")]
    pub idle_timeout: Duration,
    /// Most idle HTTP/1.1 connections kept per endpoint; a connection whose response ends while
    /// its endpoint already has this many idle is closed. Default 1024. Set it at or above the
    /// concurrent requests an endpoint gets: below that, connections are closed and reopened all
    /// the time (−41 % throughput measured with a cap of 16 under 64 concurrent requests,
    /// shared/reference/perf). 0 keeps none (a new connection per request). Idle connections cost
    /// the proxy about 20 KiB each and the backend a connection slot.
    #[serde(deserialize_with = "crate::de::count")]
    pub max_idle_per_endpoint: usize,
    /// Caps retries per backend to a share of its live traffic, so that a failing backend does not
    /// get a storm of re-sent requests on top of its load. Default 20% plus 10 per second.
    pub retry_budget: RetryBudgetConfig,
    /// How each backend spreads its requests over its endpoints, for every route without its own
    /// `balance` (see [`BalanceConfig`]). Default `round_robin`; `p2c_peak_ewma` uses a 30 ms
    /// default RTT and a 10 s decay.
    #[serde(
        deserialize_with = "balance::shorthand::deserialize_plain",
        skip_serializing_if = "BalanceConfig::is_empty"
    )]
    pub balance: BalanceConfig,
}

/// A retry budget (as linkerd2's): a backend may re-send at most `ratio` of its requests, plus
/// `min_per_second` retries per second whatever the traffic; a burst may spend up to 10 s of the
/// minimum plus 1000 retries saved from earlier traffic. A retry over the budget is not made: the
/// client gets the failure, counted in `crossfade_retry_budget_exhausted_total`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    default,
    deny_unknown_fields,
    expecting = "a map with ratio and min_per_second"
)]
pub struct RetryBudgetConfig {
    /// Retries allowed as a share of the backend's requests, in percent (`20`, `"12.5%"`): 0–100.
    /// Default 20%.
    pub ratio: crate::weight::Percent,
    /// Retries allowed per second whatever the traffic. Default 10.
    #[serde(deserialize_with = "crate::de::count")]
    pub min_per_second: u32,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        RetryBudgetConfig {
            ratio: crate::weight::Percent(2_000),
            min_per_second: 10,
        }
    }
}

/// One route: a match on host and path prefix, and the two backends it splits its traffic across.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    default,
    deny_unknown_fields,
    expecting = "a route: a map with name, path_prefix, blue and green (and hosts, health, ...)"
)]
pub struct RouteConfig {
    /// Unique name, used in metric labels and admin URLs: 1 to 63 ASCII letters, digits, `-`, `_`
    /// or `.`; or `<namespace>/<name>` of those for a route read from a Kubernetes TrafficShift
    /// (namespace up to 63, name up to 253).
    pub name: String,
    /// Host names that this route answers, compared case-insensitively with the request's host with
    /// any port removed. Empty (the default) matches any host.
    pub hosts: Vec<String>,
    /// Sticky, monotone assignment of users to backends (see [`StickyConfig`]). Default: none, every
    /// request is picked by weight on its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sticky: Option<StickyConfig>,
    /// A request header (e.g. `X-Crossfade-Backend`) whose value `blue` or `green` forces that
    /// backend, even at weight 0, for testers; any other value is answered 400. Stripped before
    /// forwarding. Default: none (off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub override_header: Option<String>,
    /// Path prefix that this route answers, starting with `/`. Default `/`. A prefix matches whole
    /// segments: `/api` matches `/api` and `/api/x` but not `/apix`; a prefix ending in `/` matches
    /// any path that starts with it.
    pub path_prefix: String,
    /// The slot serving before a rollout (the **active** role). Default `blue`.
    pub active: Slot,
    /// A backend that takes the route's requests that the backends with weight cannot serve (all
    /// their endpoints held out by health, a connect failed), even at weight 0, as the active slot
    /// does: nginx's and HAProxy's `backup` server. `crossfade run` makes the retiring backend
    /// the backup from the role swap until its endpoints are removed, so that a promoted backend
    /// that goes down while the other drains does not leave the route without a healthy backend
    /// (a weight-0 preview never takes a request, C03: only a backend that served may be one).
    /// Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<Slot>,
    /// The backend in the blue slot.
    pub blue: BackendConfig,
    /// The backend in the green slot.
    pub green: BackendConfig,
    /// Active health checks of the route's endpoints. Default: none (see [`HealthConfig`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthConfig>,
    /// Passive outlier ejection. Default: on for upstream failures (see [`OutlierConfig`]).
    pub outlier: OutlierConfig,
    /// The preview's circuit breaker. Default: none (see [`BreakerConfig`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breaker: Option<BreakerConfig>,
    /// Whether the route **fails open** when health holds out every endpoint: when no backend
    /// that may take a request (one with weight, or the active slot) has an endpoint that its
    /// active checks and outlier ejection admit, the request goes, by the configured weights, to
    /// an endpoint health holds out, instead of getting 503 "no endpoint". Only endpoints that
    /// passed a health check once (or of a route without checks) are used: one whose first probe
    /// never passed gets nothing (C02); a weight-0 preview gets nothing (C03); a backend whose
    /// breaker tripped gets nothing, so with only it left the request gets 503. While any
    /// backend the request may take can serve, health works as without it (C13). Default
    /// `true`: a health verdict about *every* endpoint at once is more often a mistake of the
    /// checks (a probe path typo, a health endpoint that 404s after a patch, a `/healthz` slower
    /// than `health.timeout` under load, ejections after one burst of 5xx) than every instance
    /// dead, and when they are dead the client gets 502/504 instead of 503 (see the README,
    /// "Health"). `false` answers 503 as soon as nothing can serve.
    #[serde(skip_serializing_if = "is_true")]
    pub fail_open: bool,
    /// This route's request timeout, in place of `upstream.response_timeout` and with its
    /// semantics: the longest wait for the response head once the whole request has gone upstream,
    /// past which the client gets 504 (RFC 9110 §15.6.5). Default: none, the proxy-wide
    /// `upstream.response_timeout` applies.
    #[serde(
        default,
        with = "crate::duration::serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub response_timeout: Option<Duration>,
    /// Shadow traffic: a share of the active backend's requests mirrored to the preview and the
    /// answers compared (see [`ShadowConfig`]). Default: none (off: one `None` check per request).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowConfig>,
    /// How each backend of this route spreads its requests over its endpoints: `p2c_peak_ewma` or
    /// `round_robin`, or a map with `policy`, `default_rtt` and `decay` (see [`BalanceConfig`]);
    /// fields left out take `upstream.balance`'s. Default: `upstream.balance`.
    #[serde(
        default,
        deserialize_with = "balance::shorthand::deserialize",
        skip_serializing_if = "Option::is_none"
    )]
    pub balance: Option<BalanceConfig>,
}

/// One backend: the endpoints of one version of the service, and its share of the route.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    default,
    deny_unknown_fields,
    expecting = "a backend: a map with endpoints, weight and protocol"
)]
pub struct BackendConfig {
    /// The endpoints, among which each request takes one by the route's `balance`. Empty is allowed only while the weight is 0.
    #[serde(deserialize_with = "crate::de::addresses")]
    pub endpoints: Vec<SocketAddr>,
    /// The backend's share of the route in percent (`12.5` or `"12.5%"`, 0.01 % steps). Omitted: see
    /// [`RouteConfig::weights`]. An explicit 0 means no request, ever.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<Percent>,
    /// How the proxy speaks to the endpoints: `http1` (the default) or `h2c` (see
    /// [`UpstreamProtocol`]). Whatever the client speaks.
    #[serde(skip_serializing_if = "UpstreamProtocol::is_default")]
    pub protocol: UpstreamProtocol,
}

/// The protocol of a backend's upstream connections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 keep-alive connections (RFC 9112), one request at a time each, pooled per
    /// endpoint. The default.
    #[default]
    Http1,
    /// Cleartext HTTP/2 with prior knowledge (RFC 9113 §3.3): requests are streams multiplexed
    /// over one pooled connection per endpoint, and trailers pass end to end, which gRPC needs.
    /// Active health checks speak it too; upgrade requests (WebSocket) still go over a dedicated
    /// HTTP/1.1 connection, since HTTP/2 has no `Upgrade`.
    H2c,
}

// Read as a keyword: a wrong shape names the words, not a YAML tag (trial report H14).
crate::keyword_enum!(
    UpstreamProtocol,
    default Some("http1"),
    "http1" => UpstreamProtocol::Http1,
    "h2c" => UpstreamProtocol::H2c,
);

impl UpstreamProtocol {
    /// True for the default, [`UpstreamProtocol::Http1`] (left out when a config is written).
    pub fn is_default(&self) -> bool {
        *self == UpstreamProtocol::Http1
    }
}

/// A config that could not be used.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// The text is not valid YAML for [`ProxyConfig`] (unknown field, wrong type...).
    #[error("cannot parse config: {0}")]
    Parse(String),
    /// The config parsed but breaks one or more rules; every problem is listed.
    #[error("invalid config:{}", ProblemLines(.0))]
    Invalid(Vec<Problem>),
}

/// One broken rule, with the path of the field that breaks it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// Field path, e.g. `routes[0].green.weight`.
    pub path: String,
    /// What is wrong, lowercase, no trailing period.
    pub message: String,
}

// === impl ProxyConfig ===

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin: SocketAddr::from(([127, 0, 0, 1], 9901)),
            trust_forwarded_for: true,
            proxy_protocol: false,
            drain_timeout: DRAIN_TIMEOUT,
            drain_grace: DRAIN_GRACE,
            limits: LimitsConfig::default(),
            tls: None,
            upstream: UpstreamConfig::default(),
            via: ViaConfig::default(),
            access_log: AccessLogConfig::default(),
            request_id: None,
            state_file: None,
            routes: Vec::new(),
        }
    }
}

impl ProxyConfig {
    /// Parses a YAML config file (`crossfade proxy CONFIG`, also at each SIGHUP reload) and
    /// validates it. A file config must have at least one route: without one every request would
    /// be answered 404, which is never what an operator meant (an empty file, `routes: []`, or a
    /// forgotten or misindented `routes:` key).
    ///
    /// # Errors
    /// [`ConfigError::Parse`] when the text is not a config, [`ConfigError::Invalid`] listing every
    /// problem when it breaks a rule, `routes` among them when there is no route.
    pub fn from_yaml(text: &str) -> Result<ProxyConfig, ConfigError> {
        let config: ProxyConfig = serde_yaml_ng::from_str(text)
            .map_err(|e| ConfigError::Parse(crate::de::yaml_words_in(text, &e)))?;
        let mut problems = config.problems();
        if config.routes.is_empty() {
            let message = "no route: a proxy config needs at least one route (without one every request is answered 404)";
            problems.push(Problem::new("routes", message));
        }
        ConfigError::from_problems(problems)?;
        Ok(config)
    }

    /// Parses and validates a config file's text as [`ProxyConfig::from_yaml`] does, then
    /// resolves its relative file paths from `base`, the file's directory
    /// ([`ProxyConfig::resolve_paths`]): what `crossfade proxy CONFIG` does at start, at each SIGHUP
    /// reload and in the new process of a binary upgrade, and what `crossfade check` does.
    ///
    /// # Errors
    /// As [`ProxyConfig::from_yaml`].
    pub fn load(text: &str, base: &Path) -> Result<ProxyConfig, ConfigError> {
        let mut config = ProxyConfig::from_yaml(text)?;
        config.resolve_paths(base);
        Ok(config)
    }

    /// Makes every relative file path of the config absolute against `base`, the config file's
    /// directory: `tls.cert`, `tls.key`, those of `tls.sni`, an `access_log` file and `state_file`. Relative paths
    /// follow the file that names them, as in a spec (and docker compose, kubeconfig, Cargo): the
    /// config then means the same whatever the working directory (`/` under systemd). Absolute
    /// paths, `off` and `stdout` are left alone.
    pub fn resolve_paths(&mut self, base: &Path) {
        if let Some(tls) = &mut self.tls {
            resolve(&mut tls.cert, base);
            resolve(&mut tls.key, base);
            for pair in &mut tls.sni {
                resolve(&mut pair.cert, base);
                resolve(&mut pair.key, base);
            }
        }
        if let AccessLogConfig::File(path) = &mut self.access_log {
            resolve(path, base);
        }
        if let Some(path) = &mut self.state_file {
            resolve(path, base);
        }
    }

    /// Parses the proxy's own settings for a proxy whose routes come from elsewhere
    /// (`crossfade proxy --kube --config FILE`, where the cluster's TrafficShifts are the routes):
    /// every key of a proxy config file (`listen`, `admin`, `trust_forwarded_for`,
    /// `drain_timeout`, `drain_grace`, `limits`, `tls`, `upstream`, `via`, `access_log`) with the same defaults and the same
    /// validation as [`ProxyConfig::from_yaml`], and no route. An empty file is the defaults.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming `routes` when the file has a `routes` key (even an empty
    /// one: routes written here would be silently ignored), or `state_file` (the weights are the
    /// cluster's), else as [`ProxyConfig::from_yaml`]:
    /// [`ConfigError::Parse`] when the text is not a config (an unknown key among them), and
    /// [`ConfigError::Invalid`] listing every broken rule by its field path
    /// (`limits.max_header_bytes: 100 is outside 8192 to 1048576 bytes`).
    pub fn settings_from_yaml(text: &str) -> Result<ProxyConfig, ConfigError> {
        let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(text)
            .map_err(|e| ConfigError::Parse(crate::de::yaml_words_in(text, &e)))?;
        if value.is_null() {
            return Ok(ProxyConfig::default());
        }
        let message = "not allowed here: the routes and their weights come from the cluster's \
                       TrafficShifts (spec.route, status.weights); remove the key";
        let refused: Vec<Problem> = FILE_ONLY_KEYS
            .iter()
            .filter(|key| value.get(key).is_some())
            .map(|key| Problem::new(*key, message))
            .collect();
        if !refused.is_empty() {
            // The other keys' problems with them, all in one report (trial 25: `state_file:`
            // alone was named, and a broken `limits` or `tls` beside it only after its removal).
            let mut rest = value;
            if let Some(map) = rest.as_mapping_mut() {
                for key in FILE_ONLY_KEYS {
                    map.remove(key);
                }
            }
            let mut problems = refused;
            // A parse error in the rest is told once the refused keys are gone, with its line.
            if let Ok(config) = serde_yaml_ng::from_value::<ProxyConfig>(rest) {
                problems.extend(config.problems());
            }
            return Err(ConfigError::Invalid(problems));
        }
        let config: ProxyConfig = serde_yaml_ng::from_str(text).map_err(|e| {
            ConfigError::Parse(without_file_only_keys(crate::de::yaml_words_in(text, &e)))
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every rule and reports all problems at once. (An empty route list is valid here, for
    /// a proxy whose routes are all added later; [`ProxyConfig::from_yaml`] refuses it in a file.)
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] with one [`Problem`] per broken rule, in field order.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ConfigError::from_problems(self.problems())
    }

    /// Reads the files the config names (the TLS certificate and key) and opens the access log's
    /// (creating it, empty, when missing) as a start does, without serving anything: with
    /// [`ProxyConfig::from_yaml`], the whole check `crossfade check` runs on a proxy config.
    /// `config_file` is the file the config was read from, when there is one.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming `access_log` or `state_file` when a file the proxy writes
    /// (the access log, the state file, its `.bak` and `.lock`) is also `config_file` or another
    /// file the config names (every such clash, before any file is opened); else naming
    /// `tls.cert` or `tls.key` (unreadable, not PEM, a key that does not match the
    /// certificate...), `access_log` (a file that cannot be opened for appending), or
    /// `state_file` (its directory is missing or not a directory; the file itself is made at the
    /// first save).
    pub fn check_files(&self, config_file: Option<&Path>) -> Result<(), ConfigError> {
        self.check_files_among(config_file, &[], FilesOf::Proxy)
    }

    /// [`ProxyConfig::check_files`], with `others` also among the files that no file the proxy
    /// writes may be: for `crossfade run`, whose spec names files that are not the proxy's (its
    /// workloads' programs, its state file's child journal). A clash is named on the written
    /// file's field (`access_log: PATH is also blue.command: ...`), in the words of `whose`
    /// files they are (`the spec file`, and what `crossfade run` writes into its state file).
    ///
    /// # Errors
    /// As [`ProxyConfig::check_files`], a clash with one of `others` included.
    pub fn check_files_among(
        &self,
        config_file: Option<&Path>,
        others: &[OtherFile],
        whose: FilesOf,
    ) -> Result<(), ConfigError> {
        ConfigError::from_problems(own_files::clashes(self, config_file, others, whose))?;
        if let Some(tls) = &self.tls {
            crate::tls::Tls::new(tls)?;
        }
        self.access_log.check()?;
        match self.state_file.as_deref().and_then(state_file_problem) {
            Some(message) => Err(ConfigError::Invalid(vec![Problem::new(
                "state_file",
                message,
            )])),
            None => Ok(()),
        }
    }

    /// Why `path`, a file the proxy writes that a command-line `flag` names (`--pid-file`, into
    /// which it `writes`, in words: "writes its process ID into it"), cannot be: it is also
    /// `config_file` or a file the config names (the access log, the state file, a TLS file), as
    /// [`ProxyConfig::check_files`] refuses among the config's own files. Empty when it is none.
    pub fn flag_file_clashes(
        &self,
        config_file: Option<&Path>,
        flag: &str,
        path: &Path,
        writes: &'static str,
    ) -> Vec<String> {
        own_files::flag_clashes(self, config_file, (flag, path, writes))
    }

    /// What is valid but most likely not meant in the files the config names, each naming its
    /// field: a TLS certificate out of its validity period (a start serves it anyway), a host
    /// name two `tls.sni` certificates name. Empty when the files cannot be read: that is
    /// [`ProxyConfig::check_files`]'s error. `crossfade check` prints them beside
    /// [`ProxyConfig::warnings`]; a start logs them.
    pub fn file_warnings(&self) -> Vec<String> {
        let tls = self
            .tls
            .as_ref()
            .and_then(|tls| crate::tls::Tls::new(tls).ok());
        tls.map(|tls| tls.warnings().to_vec()).unwrap_or_default()
    }

    /// What is valid but most likely not meant, each naming its field: a route shadowed by an
    /// earlier one ([`shadowed_routes`]); an endpoint listed twice, in both backends or
    /// unreachable by its address, and a sticky header that is the override header
    /// ([`validate::route_warnings`]), and a shadow that mirrors nothing ([`ShadowConfig::warnings`]); a
    /// minted `__Secure-`/`__Host-` cookie without `tls:`
    /// ([`validate::cookie_prefix_warnings`]); a timeout that cuts clients off set below 1 s
    /// ([`LimitsConfig::warnings`]). Empty when nothing is.
    pub fn warnings(&self) -> Vec<Problem> {
        let mut warnings = validate::shadowed_routes(&self.routes);
        warnings.extend(self.limits.warnings());
        warnings.extend(validate::route_warnings(&self.routes));
        let tls = self.tls.is_some();
        warnings.extend(validate::cookie_prefix_warnings(&self.routes, tls));
        warnings.extend(self.timing_warnings());
        warnings
    }

    /// Valid settings that most likely are slips, each naming its field (trial 29):
    /// - `upstream.response_timeout` or a route's `response_timeout` below 1 s, most often `ms`
    ///   written for `s`: every request slower than that gets 504, and each counts against its
    ///   endpoint's outlier ejection (nginx's `proxy_read_timeout` default is 60 s);
    /// - a `drain_grace` above half of `drain_timeout`, of which only half is used.
    fn timing_warnings(&self) -> Vec<Problem> {
        let slip = |field: String, timeout: Duration| {
            listener::below_a_second(
                field,
                timeout,
                "every request a backend takes longer to answer gets 504 and counts against its \
                 endpoint's outlier ejection",
            )
        };
        let routes = self.routes.iter().enumerate().filter_map(|(i, route)| {
            let timeout = route.response_timeout?;
            slip(format!("routes[{i}].response_timeout"), timeout)
        });
        let mut warnings: Vec<Problem> = slip(
            "upstream.response_timeout".to_owned(),
            self.upstream.response_timeout,
        )
        .into_iter()
        .chain(routes)
        .collect();
        let half = self.drain_timeout / 2;
        if self.drain_grace > half {
            warnings.push(Problem::new(
                "drain_grace",
                format!(
                    "{} is above half of drain_timeout ({}): only {} is used, so that requests \
                     taken in the grace still have time to finish; raise drain_timeout to use \
                     more",
                    crate::duration::show(self.drain_grace),
                    crate::duration::show(self.drain_timeout),
                    crate::duration::show(half),
                ),
            ));
        }
        warnings
    }

    /// The listen and the admin address, each with its name, as
    /// [`crate::loops::own_address_problem`] takes them.
    pub fn own_addresses(&self) -> [(SocketAddr, &'static str); 2] {
        [(self.listen, "listen"), (self.admin, "admin")]
    }

    fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        self.limits.check(&mut problems);
        if let Some(tls) = &self.tls {
            tls.check(&mut problems);
        }
        self.upstream.check(&mut problems);
        self.via.check(&mut problems);
        if let Some(request_id) = &self.request_id {
            request_id.check(&mut problems);
            request_id.check_routes(&self.routes, &mut problems);
        }
        if let Some(message) = listeners_collide(self.listen, self.admin) {
            problems.push(Problem::new("admin", message));
        }
        if self
            .state_file
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            // An empty path was taken as the working directory's `.lock` and every save failed
            // with "state file : No such file or directory", after `crossfade check` said ok.
            let message = "must name a file (leave state_file out for no state file)";
            problems.push(Problem::new("state_file", message));
        }
        check_routes(&self.routes, &mut problems);
        validate::check_own_addresses(&self.routes, &self.own_addresses(), &mut problems);
        validate::check_route_matches(&self.routes, &mut problems);
        problems
    }
}

// === impl UpstreamConfig ===

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(4),
            max_idle_per_endpoint: 1024,
            retry_budget: RetryBudgetConfig::default(),
            balance: BalanceConfig::default(),
        }
    }
}

/// Whether `value` is `true`, the default of [`RouteConfig::fail_open`] (left out when a config
/// is written).
fn is_true(value: &bool) -> bool {
    *value
}

// === impl RouteConfig ===

impl Default for RouteConfig {
    fn default() -> Self {
        RouteConfig {
            name: String::new(),
            hosts: Vec::new(),
            sticky: None,
            override_header: None,
            path_prefix: "/".to_owned(),
            active: Slot::Blue,
            backup: None,
            blue: BackendConfig::default(),
            green: BackendConfig::default(),
            health: None,
            outlier: OutlierConfig::default(),
            breaker: None,
            fail_open: true,
            response_timeout: None,
            shadow: None,
            balance: None,
        }
    }
}

impl RouteConfig {
    /// The backend config of `slot`.
    pub fn backend(&self, slot: Slot) -> &BackendConfig {
        match slot {
            Slot::Blue => &self.blue,
            Slot::Green => &self.green,
        }
    }

    /// The backend config of `slot`, mutably.
    pub fn backend_mut(&mut self, slot: Slot) -> &mut BackendConfig {
        match slot {
            Slot::Blue => &mut self.blue,
            Slot::Green => &mut self.green,
        }
    }

    /// The resolved split in basis points.
    ///
    /// Both weights given: used as they are. One omitted: it gets whatever the other leaves of 100 %.
    /// Both omitted: the active slot gets 100 % and the preview 0 % — never an equal split (case C03,
    /// emissary-ingress/emissary#1605). On an invalid config the result is not meaningful; validate
    /// first.
    pub fn weights(&self) -> Weights {
        let bp = |slot: Slot| self.backend(slot).weight.map(Percent::bp);
        match (bp(Slot::Blue), bp(Slot::Green)) {
            (Some(blue), Some(green)) => Weights { blue, green },
            (Some(blue), None) => Weights::with(Slot::Blue, blue),
            (None, Some(green)) => Weights::with(Slot::Green, green),
            (None, None) => Weights::all_to(self.active),
        }
    }

    /// Sets both weights explicitly, so that [`RouteConfig::weights`] returns `weights`.
    pub fn set_weights(&mut self, weights: Weights) {
        for slot in Slot::ALL {
            self.backend_mut(slot).weight = Some(Percent(weights.of(slot)));
        }
    }
}

// === impl ConfigError ===

impl ConfigError {
    /// `Ok` for no problems, else [`ConfigError::Invalid`] with all of them.
    ///
    /// # Errors
    /// When `problems` is not empty.
    pub fn from_problems(problems: Vec<Problem>) -> Result<(), ConfigError> {
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// The problems of an [`ConfigError::Invalid`] error; empty for a parse error.
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Parse(_) => &[],
            ConfigError::Invalid(problems) => problems,
        }
    }
}

/// Why `file` cannot be a state file before anything is read, or `None` when it can: it names
/// no file (it ends with `/`, `/.` or `/..`: `Path` drops a trailing separator, so `st.json/`
/// passed every check and the first save then failed with "No such file or directory", trial 25),
/// or its directory is missing or not a directory: the directory of the file it names, through
/// a symbolic link ([`crate::files::real_path`], as the saves take it; trial 25: a link to a
/// file in a missing directory passed, and the start refused). The message starts with the path
/// (and the link's target). The one rule of a proxy config's `state_file` and a spec's
/// (`crossfade run`).
pub fn state_file_problem(file: &Path) -> Option<String> {
    let named = |file: &Path| {
        if crate::files::names_a_directory(file) {
            return Some(format!(
                "{}: names a directory, not a file: give the file's name (such as state.json)",
                file.display()
            ));
        }
        None
    };
    if let Some(problem) = named(file) {
        return Some(problem);
    }
    let real = crate::files::real_path(file);
    let shown = if real == file {
        file.display().to_string()
    } else if let Some(problem) = named(&real) {
        return Some(format!("{} (a symbolic link): {problem}", file.display()));
    } else {
        format!("{} (a symbolic link to {})", file.display(), real.display())
    };
    let dir = match real.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => None,
        Ok(_) => Some(format!("{shown}: {} is not a directory", dir.display())),
        Err(e) => Some(format!("{shown}: directory {}: {e}", dir.display())),
    }
}

/// `path` joined onto `base` when it is relative (an empty path stays empty: the rules name it).
fn resolve(path: &mut PathBuf, base: &Path) {
    if path.is_relative() && !path.as_os_str().is_empty() {
        *path = base.join(&*path);
    }
}

/// Why the admin API cannot bind `admin` next to the proxy's `listen`, or `None` when both can
/// be bound: the same address, or the same port where either address is a wildcard (`0.0.0.0`,
/// `::`), which takes the port on every local address (Linux refuses the second bind with
/// `EADDRINUSE` even with `SO_REUSEADDR`). Port 0 asks the kernel for a free port, so it never
/// collides.
///
/// The message is `"{admin} is also the listen address"` or `"{admin} shares port P with listen
/// {listen}, which takes that port on every address: give admin another port"`.
pub fn listeners_collide(listen: SocketAddr, admin: SocketAddr) -> Option<String> {
    if listen.port() == 0 || listen.port() != admin.port() {
        return None;
    }
    if listen == admin {
        return Some(format!("{admin} is also the listen address"));
    }
    let (wildcard, whose) = if listen.ip().is_unspecified() {
        (listen, "listen")
    } else if admin.ip().is_unspecified() {
        (admin, "admin")
    } else {
        return None;
    };
    Some(format!(
        "{admin} shares port {} with listen {listen}, and {whose} {wildcard} takes that port on \
         every address: give admin another port",
        admin.port()
    ))
}

/// `text` (such as a [`ConfigError`]'s display, one problem per line) on one line, for a log
/// record: log shippers (journald, Docker's log driver) make one record per line, so the lines after
/// the first would lose the record's time and level. Lines are trimmed and joined with `; `, or with
/// a space after a line ending in `:`; empty lines are dropped.
///
/// `invalid config:\n  routes[0].name: must not be empty\n  routes[1]...` becomes
/// `invalid config: routes[0].name: must not be empty; routes[1]...`.
pub fn one_line(text: &str) -> String {
    let mut joined = String::with_capacity(text.len());
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if !joined.is_empty() {
            joined.push_str(if joined.ends_with(':') { " " } else { "; " });
        }
        joined.push_str(line);
    }
    joined
}

struct ProblemLines<'a>(&'a [Problem]);

impl fmt::Display for ProblemLines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for problem in self.0 {
            write!(f, "\n  {problem}")?;
        }
        Ok(())
    }
}

// === impl Problem ===

impl Problem {
    /// A problem at `path`, a long value quoted in `message` cut to its start and length
    /// ([`crate::shown::with_short_quotes`]).
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Problem {
        let message = message.into();
        Problem {
            path: path.into(),
            message: crate::shown::with_short_quotes(&message).into_owned(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

mod balance;
mod health;
mod listener;
mod own_files;
pub use own_files::{FilesOf, OtherFile};
mod shadow;
mod validate;

pub use balance::{BalanceConfig, BalancePolicy, MAX_DECAY, MAX_DEFAULT_RTT};
pub use health::{probe_path_problem, BreakerConfig, HealthConfig, OutlierConfig};
pub use listener::{
    LimitsConfig, TlsConfig, TlsPair, MAX_HEADER_BYTES, MIN_HEADER_BYTES, MIN_WATCH_INTERVAL,
};
pub use shadow::{ShadowConfig, ShadowIgnore, MAX_SHADOW_BODY_BYTES, MAX_SHADOW_IN_FLIGHT};
pub use validate::{check_own_addresses, check_routes, shadowed_routes, shadowings, Shadowed};

/// The keys of a proxy config file that settings for `crossfade proxy --kube` may not hold
/// ([`ProxyConfig::settings_from_yaml`] refuses them).
const FILE_ONLY_KEYS: [&str; 2] = ["routes", "state_file"];

/// `message` (an unknown top-level key of `--kube` settings) without the keys those settings
/// refuse: they are left out of serde's `expected one of` list, and a `did you mean` naming one
/// says instead that the routes come from the cluster (trial 20: `route:` was told to write
/// `routes`, which is then refused).
fn without_file_only_keys(mut message: String) -> String {
    for key in FILE_ONLY_KEYS {
        message = message
            .replace(&format!(", `{key}`"), "")
            .replace(&format!("`{key}`, "), "");
        let suggestion = format!("; did you mean `{key}`?");
        if message.contains(&suggestion) {
            message = message.replace(
                &suggestion,
                &format!(
                    "; `{key}` is not a setting of `crossfade proxy --kube`: the routes and their \
                     weights come from the cluster's TrafficShifts (spec.route, status.weights)"
                ),
            );
        }
    }
    message
}

#[cfg(test)]
mod keyword_tests;

#[cfg(test)]
mod tests;
