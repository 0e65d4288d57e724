//! Per-route health settings: active checks, passive outlier ejection and the version-level
//! circuit breaker, with their defaults and rules.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Problem;
use crate::weight::{Percent, FULL_BP};

/// Active health checks of every endpoint of a route (`routes[].health`), opt-in.
///
/// Each endpoint is probed with `GET path` every `interval`; a 2xx answer within `timeout` is a
/// success. `fall` consecutive failures mark an endpoint down, `rise` consecutive successes mark it
/// up again. An endpoint starts held out until its first probe (sent at once) passes, at the
/// proxy's start as when a later table adds it (C02, see [`crate::health`]); a request that finds
/// no endpoint of its route probed yet waits for the first probes, at most `timeout` plus
/// [`crate::health::FIRST_PROBE_SLACK`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "HealthFields")]
pub struct HealthConfig {
    /// Path probed, starting with `/`. Default `/healthz`.
    pub path: String,
    /// Time between two probes of one endpoint. Default 1 s.
    #[serde(with = "crate::duration::serde")]
    pub interval: Duration,
    /// Longest wait for a probe's response head, at most `interval`. Default: 500 ms, or
    /// `interval` when that is shorter (a file that sets only `interval: 200ms` gets 200 ms).
    #[serde(with = "crate::duration::serde")]
    pub timeout: Duration,
    /// Consecutive successes that mark a down endpoint up. Default 2.
    pub rise: u32,
    /// Consecutive failures that mark an up endpoint down. Default 2.
    pub fall: u32,
    /// The authority the probes name (Envoy's `HttpHealthCheck.host`): `Host` of HTTP/1.1 probes
    /// (RFC 9112 §3.2), `:authority` of h2c probes (RFC 9113 §8.3.1), for backends that route
    /// or answer by name (virtual hosts, gRPC servers). A host with an optional port
    /// (`app.internal`, `app.internal:8080`, `10.0.0.7`, `[::1]:9001`), no userinfo (RFC 9110
    /// §4.2.4). The probe still connects to the endpoint. Default: the endpoint's own `ip:port`
    /// (`10.0.0.7:8080`), in both protocols.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// Passive outlier ejection from live traffic (`routes[].outlier`), on by default for upstream
/// failures.
///
/// An endpoint that fails `consecutive_failures` requests in a row (connect failure, reset before
/// the response head, response timeout), or answers `consecutive_5xx` 5xx in a row, is ejected.
///
/// The backoff is Envoy's outlier detection rule (`outlier_detection.base_ejection_time`,
/// `max_ejection_time`, `interval`; Envoy docs, "Outlier detection", ejection algorithm): each
/// endpoint keeps an ejection count, raised by one at every ejection; the `n`-th ejection lasts
/// `base_ejection · n`, at most `max_ejection` ([`OutlierConfig::ejection`]). The count drops by
/// one for every `decay_interval` the endpoint spends re-admitted without a new ejection, counted
/// from its re-admission: Envoy lowers the multiplier only while the host is back in service
/// ("when the host becomes healthy, the ejection time multiplier decreases with time", checked
/// once per `interval`). An endpoint is re-admitted when its ejection time has passed, or with
/// active checks when a probe passes after that (its count does not decay while it waits for
/// one). So an endpoint that fails most requests but answers some (a success between ejections
/// does not reset anything) is ejected for 1 s, 2 s, 3 s... up to `max_ejection`, and one that
/// stays quiet gets back to `base_ejection` after about
/// `max_ejection / base_ejection · decay_interval`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    default,
    deny_unknown_fields,
    expecting = "a map of outlier ejection settings (consecutive_failures, base_ejection, ...)"
)]
pub struct OutlierConfig {
    /// Upstream failures in a row that eject an endpoint; 0 turns this off. Default 3.
    #[serde(deserialize_with = "crate::de::count")]
    pub consecutive_failures: u32,
    /// 5xx responses in a row that eject an endpoint; 0 (the default) turns this off.
    #[serde(deserialize_with = "crate::de::count")]
    pub consecutive_5xx: u32,
    /// Length of a first ejection. Default 1 s.
    #[serde(with = "crate::duration::serde")]
    pub base_ejection: Duration,
    /// Longest ejection, however often an endpoint has been ejected. Default 30 s.
    #[serde(with = "crate::duration::serde")]
    pub max_ejection: Duration,
    /// Time re-admitted without an ejection after which an endpoint's ejection count drops by
    /// one, counted from the re-admission (Envoy's outlier `interval`, whose default this is).
    /// Default 10 s, above 0.
    #[serde(with = "crate::duration::serde")]
    pub decay_interval: Duration,
}

/// The version-level circuit breaker (`routes[].breaker`), opt-in.
///
/// When the preview (non-active) backend's error rate over the last `window` reaches
/// `max_error_rate` with at least `min_requests` requests, the proxy gives that backend an
/// effective weight of 0 at once (its configured weight is unchanged), until the route's weights are
/// next set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    default,
    deny_unknown_fields,
    expecting = "a map with max_error_rate, window and min_requests"
)]
pub struct BreakerConfig {
    /// Error rate (5xx and upstream failures over requests) that trips the breaker, in percent.
    /// Default 50 %.
    pub max_error_rate: Percent,
    /// The sliding window the rate is measured over. Default 1 s, at least 100 ms.
    #[serde(with = "crate::duration::serde")]
    pub window: Duration,
    /// Fewest requests in the window before the rate counts. Default 20.
    #[serde(deserialize_with = "crate::de::count")]
    pub min_requests: u64,
}

/// [`HealthConfig`] as written in a file: `timeout` stays unset when it is left out, so that its
/// default can follow `interval`.
#[derive(Deserialize)]
#[serde(
    default,
    deny_unknown_fields,
    expecting = "a map of health check settings (path, interval, timeout, rise, fall, host)"
)]
struct HealthFields {
    path: String,
    #[serde(with = "crate::duration::serde")]
    interval: Duration,
    #[serde(with = "crate::duration::serde::option")]
    timeout: Option<Duration>,
    #[serde(deserialize_with = "crate::de::count")]
    rise: u32,
    #[serde(deserialize_with = "crate::de::count")]
    fall: u32,
    host: Option<String>,
}

impl Default for HealthFields {
    fn default() -> Self {
        let d = HealthConfig::default();
        HealthFields {
            path: d.path,
            interval: d.interval,
            timeout: None,
            rise: d.rise,
            fall: d.fall,
            host: d.host,
        }
    }
}

impl From<HealthFields> for HealthConfig {
    fn from(f: HealthFields) -> Self {
        HealthConfig {
            timeout: f.timeout.unwrap_or(DEFAULT_TIMEOUT.min(f.interval)),
            path: f.path,
            interval: f.interval,
            rise: f.rise,
            fall: f.fall,
            host: f.host,
        }
    }
}

/// The probe timeout when neither it nor a shorter `interval` is set: 500 ms.
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);

// === impl HealthConfig ===

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            path: "/healthz".to_owned(),
            interval: Duration::from_secs(1),
            timeout: DEFAULT_TIMEOUT,
            rise: 2,
            fall: 2,
            host: None,
        }
    }
}

/// What is wrong with the path an HTTP probe `GET`s, if anything: it must start with `/` and be a
/// valid request target (RFC 9112 §3.2: no space, control character, `<`, `>`, `"`, backquote or
/// non-ASCII; a query is fine; no `#` fragment, which a request target never carries). The rule
/// of `routes[].health.path` and of a workload's `readiness.path`, whose probe failed at every
/// try with a path like `"/health z"`, so the instance never became ready (trial 18, T20).
pub fn probe_path_problem(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        Some(format!("{path:?} must start with '/'"))
    } else if let Some((before, _)) = path.split_once('#') {
        // The URI parser drops a fragment without a word, so "/ready#v2" probed "/ready".
        Some(format!(
            "{path:?}: '#' starts a fragment, which a request target never carries (RFC 9112 \
             §3.2), so the probe would GET {before:?}; write {before:?}, or \"%23\" for a '#' in \
             the path"
        ))
    } else if format!("http://probe{path}").parse::<http::Uri>().is_err() {
        Some(format!(
            "{path:?} is not a valid request target (RFC 9112 §3.2)"
        ))
    } else {
        None
    }
}

impl HealthConfig {
    /// Appends a problem per broken rule, at `{at}.health.<field>`.
    pub fn check(&self, at: &str, problems: &mut Vec<Problem>) {
        let mut push = |field: &str, message: String| {
            problems.push(Problem::new(format!("{at}.health.{field}"), message));
        };
        if let Some(message) = probe_path_problem(&self.path) {
            push("path", message);
        }
        if self.interval < Duration::from_millis(10) {
            push("interval", "must be at least 10ms".to_owned());
        }
        // With `interval: 0s` a timeout left out defaults to 0s too: the interval's problem is
        // the one to name, not a timeout the file never set.
        if self.timeout.is_zero() && !self.interval.is_zero() {
            push("timeout", "must be above 0s".to_owned());
        } else if self.timeout > self.interval {
            let (timeout, interval) = (
                crate::duration::show(self.timeout),
                crate::duration::show(self.interval),
            );
            push(
                "timeout",
                format!("{timeout} must not be longer than interval ({interval})"),
            );
        }
        for (field, value) in [("rise", self.rise), ("fall", self.fall)] {
            if value == 0 {
                push(field, "must be at least 1".to_owned());
            }
        }
        if let Some(Err(message)) = self.host.as_deref().map(check_probe_host) {
            push("host", message);
        }
    }
}

/// Checks a probe's authority: a host with an optional port, as `Host` and `:authority` carry it
/// (RFC 9110 §7.2, RFC 3986 §3.2), without userinfo (RFC 9110 §4.2.4).
fn check_probe_host(host: &str) -> Result<(), String> {
    let invalid = |why: &str| format!("{host:?} is not a host with an optional port: {why}");
    if host.is_empty() {
        return Err(invalid("empty"));
    }
    if host.contains('@') {
        return Err(invalid(
            "userinfo (`user@`) is not allowed (RFC 9110 §4.2.4)",
        ));
    }
    let authority: http::uri::Authority = host.parse().map_err(|e| invalid(&format!("{e}")))?;
    if authority.host().is_empty() {
        return Err(invalid("no host"));
    }
    match authority.as_str().get(authority.host().len()..) {
        None | Some("") => Ok(()),
        Some(":") => Err(invalid("empty port")),
        Some(port) => match port.strip_prefix(':') {
            Some(digits) if digits.parse::<u16>().is_ok() => Ok(()),
            Some(digits) if digits.bytes().all(|b| b.is_ascii_digit()) => Err(invalid(&format!(
                "port {}",
                crate::shown::outside(digits, 0, u16::MAX, "")
            ))),
            _ => Err(invalid(&format!("port {port:?} is not a number"))),
        },
    }
}

// === impl OutlierConfig ===

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            consecutive_failures: 3,
            consecutive_5xx: 0,
            base_ejection: Duration::from_secs(1),
            max_ejection: Duration::from_secs(30),
            decay_interval: Duration::from_secs(10),
        }
    }
}

impl OutlierConfig {
    /// Appends a problem per broken rule, at `{at}.outlier.<field>`.
    pub fn check(&self, at: &str, problems: &mut Vec<Problem>) {
        if self.base_ejection.is_zero() {
            let path = format!("{at}.outlier.base_ejection");
            problems.push(Problem::new(path, "must be above 0s"));
        }
        if self.max_ejection < self.base_ejection {
            let path = format!("{at}.outlier.max_ejection");
            problems.push(Problem::new(path, "must not be shorter than base_ejection"));
        }
        if self.decay_interval.is_zero() {
            let path = format!("{at}.outlier.decay_interval");
            problems.push(Problem::new(path, "must be above 0s"));
        }
    }

    /// How long an ejection lasts when it brings the endpoint's ejection count to `n` (1-based):
    /// `base_ejection · n`, capped at `max_ejection` (Envoy's outlier detection: the base
    /// ejection time multiplied by the number of times the host has been ejected).
    pub fn ejection(&self, n: u32) -> Duration {
        self.base_ejection
            .saturating_mul(n.max(1))
            .min(self.max_ejection)
    }

    /// The highest ejection count kept: the first whose ejection reaches `max_ejection`
    /// (`⌈max_ejection / base_ejection⌉`, at least 1). Counting further would only make a quiet
    /// endpoint wait longer for its decay with no longer ejection to show for it.
    pub fn max_ejection_count(&self) -> u32 {
        let base = self.base_ejection.as_nanos().max(1);
        let count = self.max_ejection.as_nanos().div_ceil(base).max(1);
        u32::try_from(count).unwrap_or(u32::MAX)
    }

    /// The ejection count of an endpoint whose count was `count` when it was re-admitted after
    /// its last ejection, `quiet` ago: one less per whole `decay_interval` in `quiet`, at least 0.
    pub fn decayed_count(&self, count: u32, quiet: Duration) -> u32 {
        let interval = self.decay_interval.as_nanos().max(1);
        let steps = u32::try_from(quiet.as_nanos() / interval).unwrap_or(u32::MAX);
        count.saturating_sub(steps)
    }
}

// === impl BreakerConfig ===

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            max_error_rate: Percent(5_000),
            window: Duration::from_secs(1),
            min_requests: 20,
        }
    }
}

impl BreakerConfig {
    /// Appends a problem per broken rule, at `{at}.breaker.<field>`.
    pub fn check(&self, at: &str, problems: &mut Vec<Problem>) {
        let rate = self.max_error_rate;
        if rate.bp() == 0 || rate.bp() > FULL_BP {
            let path = format!("{at}.breaker.max_error_rate");
            problems.push(Problem::new(
                path,
                format!("{rate} must be above 0% and at most 100%"),
            ));
        }
        if self.window < Duration::from_millis(100) {
            let path = format!("{at}.breaker.window");
            problems.push(Problem::new(path, "must be at least 100ms"));
        }
        if self.min_requests == 0 {
            let path = format!("{at}.breaker.min_requests");
            problems.push(Problem::new(path, "must be at least 1"));
        }
    }
}
