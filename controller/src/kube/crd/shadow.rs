//! `spec.rollout.analysis.shadow` of a TrafficShift (the shadow guard: a 0% first step judged by
//! mirrored requests) and the mirror settings the controller publishes with the weights of that
//! step (`status.weights.shadow`); mirror [`crate::spec::ShadowGuard`] and the proxy's
//! [`ShadowConfig`] in camelCase.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crossfade_proxy::config::{ShadowConfig, ShadowIgnore};

use super::{Share, Span};
use crate::spec::ShadowGuard;

/// The shadow guard: while the rollout holds its 0% first step, the proxies mirror the active
/// backend's requests to the preview and compare the answers (status, `compareHeaders`, body
/// SHA-256); each analysis of the step judges the mismatch rate of the comparisons made since its
/// window opened (docs/shadow.md). Needs a first step of weight 0, and a first step of weight 0
/// needs it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(
    rename_all = "camelCase",
    expecting = "a map of shadow settings (mirror, maxMismatchRate, minCompared)"
)]
pub struct ShadowPolicy {
    /// Highest share of compared answers that may differ. Default 0%: any difference fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_mismatch_rate: Option<Share>,
    /// Fewest comparisons a window needs before its rate counts; fewer are inconclusive, never a
    /// pass. Default 50.
    #[serde(
        default,
        deserialize_with = "crossfade_proxy::de::count_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub min_compared: Option<u64>,
    /// How requests are mirrored and compared. Every field has the proxy's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<MirrorPolicy>,
}

/// How requests are mirrored to the preview and its answers compared: the proxy's
/// `routes[].shadow` settings in camelCase. In `spec.rollout.analysis.shadow.mirror` an omitted
/// field takes the proxy's default; in `status.weights.shadow` every field is written.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(
    rename_all = "camelCase",
    expecting = "a map of mirror settings (percent, compareHeaders, ...)"
)]
pub struct MirrorPolicy {
    /// Share of the active backend's requests mirrored. Default 100%.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<Share>,
    /// Response headers compared (all values, in order). Default `[content-type]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub compare_headers: Option<Vec<String>>,
    /// Most bytes of each body hashed, and of a request body kept for the mirror. Default 1 MiB
    /// (1048576), at most 64 MiB.
    #[serde(
        default,
        deserialize_with = "crossfade_proxy::de::count_option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 1, max = 67_108_864))]
    pub max_body_bytes: Option<u64>,
    /// Most mirrored exchanges in flight at once per proxy. Default 64, at most 10000.
    #[serde(
        default,
        deserialize_with = "crossfade_proxy::de::count_option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 1, max = 10_000))]
    pub max_in_flight: Option<u32>,
    /// Longest a mirrored exchange may take, and the comparison's wait for the active backend's
    /// body. Default 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Span>,
    /// Methods mirrored, upper case (RFC 9110 §9.1). Default `[GET, HEAD, OPTIONS]` (the safe
    /// methods, RFC 9110 §9.2.1); CONNECT is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub methods: Option<Vec<String>>,
    /// What is left out for answers that legitimately differ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore: Option<MirrorIgnore>,
    /// Mismatches logged per minute by each proxy; 0 turns the log off. Default 6.
    #[serde(
        default,
        deserialize_with = "crossfade_proxy::de::count_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub log_per_minute: Option<u32>,
}

/// Path prefixes left out of mirroring (`paths`) or of body comparison (`bodyPaths`); whole
/// segments, as route prefixes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", expecting = "a map with paths and bodyPaths")]
pub struct MirrorIgnore {
    /// Path prefixes never mirrored. Default none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Path prefixes whose response body is not compared. Default none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub body_paths: Vec<String>,
}

// === impl ShadowPolicy ===

impl ShadowPolicy {
    /// The shadow guard this policy asks for, omitted fields at their defaults (not validated
    /// here: [`crate::spec::RolloutConfig::validate`] checks it with the rest).
    pub fn to_guard(&self) -> ShadowGuard {
        let mut guard = ShadowGuard::default();
        if let Some(rate) = self.max_mismatch_rate {
            guard.max_mismatch_rate = f64::from(rate.bp()) / 10_000.0;
        }
        if let Some(n) = self.min_compared {
            guard.min_compared = n;
        }
        if let Some(mirror) = &self.mirror {
            guard.mirror = mirror.to_config();
        }
        guard
    }
}

// === impl MirrorPolicy ===

impl MirrorPolicy {
    /// The proxy's settings, omitted fields at the proxy's defaults (not validated here: the
    /// proxy's [`ShadowConfig::check`] does, through the spec's validation or the proxy's route
    /// check).
    pub fn to_config(&self) -> ShadowConfig {
        let mut c = ShadowConfig::default();
        if let Some(p) = self.percent {
            c.percent = p.0;
        }
        if let Some(h) = &self.compare_headers {
            c.compare_headers = h.clone();
        }
        if let Some(n) = self.max_body_bytes {
            c.max_body_bytes = n;
        }
        if let Some(n) = self.max_in_flight {
            c.max_in_flight = n;
        }
        if let Some(t) = self.timeout {
            c.timeout = t.0;
        }
        if let Some(m) = &self.methods {
            c.methods = m.clone();
        }
        if let Some(i) = &self.ignore {
            c.ignore = ShadowIgnore {
                paths: i.paths.clone(),
                body_paths: i.body_paths.clone(),
            };
        }
        if let Some(n) = self.log_per_minute {
            c.log_per_minute = n;
        }
        c
    }

    /// Every field of `config` written out, as the controller publishes it in
    /// `status.weights.shadow` (so that a proxy of another version applies the same settings
    /// whatever its defaults). `to_config` of the result is `config` again, the timeout rounded
    /// down to whole milliseconds (the finest unit a duration is written in).
    pub fn from_config(config: &ShadowConfig) -> MirrorPolicy {
        let millis = u64::try_from(config.timeout.as_millis()).unwrap_or(u64::MAX);
        MirrorPolicy {
            percent: Some(Share(config.percent)),
            compare_headers: Some(config.compare_headers.clone()),
            max_body_bytes: Some(config.max_body_bytes),
            max_in_flight: Some(config.max_in_flight),
            timeout: Some(Span(std::time::Duration::from_millis(millis))),
            methods: Some(config.methods.clone()),
            ignore: Some(MirrorIgnore {
                paths: config.ignore.paths.clone(),
                body_paths: config.ignore.body_paths.clone(),
            }),
            log_per_minute: Some(config.log_per_minute),
        }
    }
}
