//! Webhook gates (`rollout.gates`): HTTP POSTs at fixed points of a rollout whose answer lets it go
//! on (2xx) or halts it (anything else, or no answer within the timeout). For load tests before
//! traffic moves, manual approval before each step or before promotion, and notifications after
//! completion.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::headers::HeaderFrom;

/// Where a rollout asks a gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GatePoint {
    /// Before anything starts: no preview, no traffic. A `rollback` answer ends the rollout with
    /// nothing to undo.
    BeforeRollout,
    /// Before each step's weight is requested (the first step included), while the previous weight
    /// holds and is still analysed.
    BeforeStep,
    /// After the last step passed, before the roles swap; 100% holds and is still analysed.
    BeforePromotion,
    /// After the rollout completed: a notification, whose answer is recorded as an event and
    /// changes nothing.
    AfterCompletion,
}

/// What a gate's refusal (non-2xx, timeout, no connection) does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GatePolicy {
    /// Halt at the gate and ask again every `retry`, with the progress deadline suspended (manual
    /// approval can take hours). Analysis goes on at the current weight, and the operator can
    /// promote or abort meanwhile.
    #[default]
    Wait,
    /// Roll back at once.
    Rollback,
}

super::de::keyword_enum!(
    GatePoint,
    default None,
    "before_rollout" => GatePoint::BeforeRollout,
    "before_step" => GatePoint::BeforeStep,
    "before_promotion" => GatePoint::BeforePromotion,
    "after_completion" => GatePoint::AfterCompletion,
);

super::de::keyword_enum!(
    GatePolicy,
    default Some("wait"),
    "wait" => GatePolicy::Wait,
    "rollback" => GatePolicy::Rollback,
);

/// One webhook gate.
///
/// The POST body is JSON: `{"gate", "at", "route", "rollout", "step", "steps", "preview_weight_bp",
/// "preview", "active", "preview_version", "active_version", "phase"}` (`step` counts from 1; for
/// `before_step` it is the step about to start and `preview_weight_bp` its weight in basis points).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(expecting = "a map of gate settings (name, at, url, ...)")]
pub struct GateConfig {
    /// Names the gate in events and messages; unique, `[A-Za-z0-9_.-]+`, at most 63 characters.
    pub name: String,
    /// When the gate is asked.
    pub at: GatePoint,
    /// Where to POST: an `http://` or `https://` URL.
    pub url: String,
    /// Bound on one call, connection included; no answer in time is a refusal. Default 10s.
    #[serde(default = "default_timeout", with = "crossfade_proxy::duration::serde")]
    pub timeout: Duration,
    /// What a refusal does. Default `wait`.
    #[serde(default)]
    pub on_reject: GatePolicy,
    /// While waiting, how often the gate is asked again. Default 10s.
    #[serde(default = "default_retry", with = "crossfade_proxy::duration::serde")]
    pub retry: Duration,
    /// Extra request headers, e.g. `X-Team`, with their values written here; a name given twice
    /// is refused ([`crossfade_proxy::de::unique_map`]).
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "crossfade_proxy::de::unique_map"
    )]
    pub headers: BTreeMap<String, String>,
    /// Extra request headers whose values are read before each call, e.g. an `Authorization`
    /// token from a file (see [`crate::spec::headers`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers_from: Vec<HeaderFrom>,
}

/// A gate's `timeout` when it sets none: 10s.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A gate's `retry` when it sets none: 10s.
pub const DEFAULT_RETRY: Duration = Duration::from_secs(10);

fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}

fn default_retry() -> Duration {
    DEFAULT_RETRY
}

impl GatePoint {
    /// The name as configured: `before_step`.
    pub fn as_str(self) -> &'static str {
        match self {
            GatePoint::BeforeRollout => "before_rollout",
            GatePoint::BeforeStep => "before_step",
            GatePoint::BeforePromotion => "before_promotion",
            GatePoint::AfterCompletion => "after_completion",
        }
    }
}

impl fmt::Display for GatePoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
