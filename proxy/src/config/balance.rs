//! Load balancing settings within a backend (`upstream.balance`, `routes[].balance`): the policy
//! and the peak-EWMA parameters (see [`crate::balance`] for the algorithm).

use std::fmt;
use std::time::Duration;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use super::Problem;

/// How a backend's endpoints share its requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BalancePolicy {
    /// Power of two random choices over a peak-EWMA cost (`rtt × (pending + 1)`), as
    /// linkerd2-proxy: slow or busy endpoints get fewer requests; equal ones even shares over
    /// time, though not request by request (see [`crate::balance`]). Opt-in.
    P2cPeakEwma,
    /// Each endpoint in turn, exact to ±1 request whatever the endpoints' latencies. The default,
    /// as in nginx, HAProxy and Envoy: even shares per instance (case C04) hold exactly.
    #[default]
    RoundRobin,
}

// Read as a keyword: a wrong shape names the words, not a YAML tag (trial report H14). A policy
// left out is the proxy-wide one, then `round_robin`.
crate::keyword_enum!(
    BalancePolicy,
    default Some("round_robin"),
    "p2c_peak_ewma" => BalancePolicy::P2cPeakEwma,
    "round_robin" => BalancePolicy::RoundRobin,
);

/// Load balancing settings (`upstream.balance` for every route, `routes[].balance` for one).
///
/// Each field left out takes the proxy-wide value, then the default: a route's
/// `balance: { default_rtt: 100ms }` keeps the proxy-wide policy and decay. Written either as a map
/// or as the policy alone (`balance: round_robin`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    default,
    deny_unknown_fields,
    expecting = "a map with policy, default_rtt and decay"
)]
pub struct BalanceConfig {
    /// `round_robin` (default) or `p2c_peak_ewma` (see [`BalancePolicy`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<BalancePolicy>,
    /// RTT estimate of an endpoint before its first response: above 0, at most 1 min. Default
    /// 30 ms (linkerd2-proxy's `EWMA_DEFAULT_RTT`).
    #[serde(
        default,
        with = "crate::duration::serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub default_rtt: Option<Duration>,
    /// Time constant over which an RTT peak fades: at least 10 ms, at most 1 h. Default 10 s
    /// (linkerd2-proxy's `EWMA_DECAY`).
    #[serde(
        default,
        with = "crate::duration::serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub decay: Option<Duration>,
}

/// Longest `default_rtt`: a minute, far above any useful first guess of a response time.
pub const MAX_DEFAULT_RTT: Duration = Duration::from_secs(60);

/// Longest `decay`: an hour; a longer memory of one slow response only keeps an endpoint idle.
pub const MAX_DECAY: Duration = Duration::from_secs(3600);

impl BalanceConfig {
    /// True when no field is set (left out when a config is written).
    pub fn is_empty(&self) -> bool {
        *self == BalanceConfig::default()
    }

    /// Checks the fields, reporting problems under `at` (`upstream.balance`,
    /// `routes[0].balance`).
    pub(super) fn check(&self, at: &str, problems: &mut Vec<Problem>) {
        if let Some(rtt) = self.default_rtt {
            if rtt.is_zero() {
                problems.push(Problem::new(
                    format!("{at}.default_rtt"),
                    "must be above 0s",
                ));
            } else if rtt > MAX_DEFAULT_RTT {
                problems.push(Problem::new(
                    format!("{at}.default_rtt"),
                    format!("{} is above the maximum of 1m", crate::duration::show(rtt)),
                ));
            }
        }
        if let Some(decay) = self.decay {
            let message = if decay.is_zero() {
                Some("must be above 0s".to_owned())
            } else if decay > MAX_DECAY {
                Some(format!(
                    "{} is above the maximum of 1h",
                    crate::duration::show(decay)
                ))
            } else {
                crate::duration::at_least_interval(decay).err()
            };
            if let Some(message) = message {
                problems.push(Problem::new(format!("{at}.decay"), message));
            }
        }
    }
}

/// Reads a map of [`BalanceConfig`] or a bare policy string.
pub(super) mod shorthand {
    use super::*;

    /// For `Option<BalanceConfig>` (a route's).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<BalanceConfig>, D::Error> {
        Option::<Wrapped>::deserialize(d).map(|w| w.map(|w| w.0))
    }

    /// For a plain `BalanceConfig` (the proxy-wide one).
    pub fn deserialize_plain<'de, D: Deserializer<'de>>(d: D) -> Result<BalanceConfig, D::Error> {
        d.deserialize_any(Either)
    }

    struct Wrapped(BalanceConfig);

    impl<'de> Deserialize<'de> for Wrapped {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(Either).map(Wrapped)
        }
    }

    struct Either;

    impl<'de> Visitor<'de> for Either {
        type Value = BalanceConfig;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(
                "`p2c_peak_ewma`, `round_robin`, or a map of `policy`, `default_rtt`, `decay`",
            )
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<BalanceConfig, E> {
            let policy = BalancePolicy::deserialize(de::value::StrDeserializer::<E>::new(text))?;
            Ok(BalanceConfig {
                policy: Some(policy),
                ..BalanceConfig::default()
            })
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<BalanceConfig, A::Error> {
            BalanceConfig::deserialize(de::value::MapAccessDeserializer::new(map))
        }
    }
}
