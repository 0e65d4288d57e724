//! `spec.rollout.gates` of a TrafficShift: webhooks asked at fixed points of a rollout whose
//! answer lets it go on (2xx) or halts it; mirrors [`crate::spec::GateConfig`] in camelCase, with
//! the points and policies CamelCase as Kubernetes API conventions write enumerated values.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::headers::{HeaderFrom, MAX_HEADERS_FROM};
use super::Span;
use crate::spec::gates::{DEFAULT_RETRY, DEFAULT_TIMEOUT};
use crate::spec::{GateConfig, GatePoint, GatePolicy};

/// One webhook gate: a `POST` of the rollout's context as JSON to `url` at point `at`; a 2xx
/// answer lets the rollout go on (docs/judgement.md, "Webhook gates").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(
    rename_all = "camelCase",
    expecting = "a map of gate settings (name, at, url, ...)"
)]
pub struct Gate {
    /// Names the gate in Events and messages: letters, digits, `_`, `.`, `-`; unique within the
    /// TrafficShift.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[A-Za-z0-9_.-]+$"))]
    pub name: String,
    /// When the gate is asked.
    pub at: GateAt,
    /// Where to POST: an `http://` or `https://` URL.
    #[schemars(length(min = 1), regex(pattern = r"^https?://"))]
    pub url: String,
    /// Bound on one call, connection included; no answer in time is a refusal. Default 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Span>,
    /// What a refusal (non-2xx, timeout, no connection) does. Default `Wait`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_reject: Option<OnReject>,
    /// While waiting, how often the gate is asked again. Default 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Span>,
    /// Extra request headers with their values written here, e.g. `X-Team: shop`. Readable by
    /// whoever may read this TrafficShift: put tokens in `headersFrom`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Extra request headers whose values are keys of Secrets or ConfigMaps in this namespace,
    /// read before each call (e.g. an `Authorization` token); a list map keyed by `name`, as a
    /// container's `env[]` with `valueFrom.secretKeyRef` or `configMapKeyRef`. Default none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = MAX_HEADERS_FROM),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"])
    )]
    pub headers_from: Vec<HeaderFrom>,
}

/// Where a rollout asks a gate (the spec's `at`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub enum GateAt {
    /// Before anything starts: no preview, no traffic.
    BeforeRollout,
    /// Before each step's weight is published (the first step included).
    BeforeStep,
    /// After the last step passed, before the roles swap.
    BeforePromotion,
    /// After the rollout completed: a notification whose answer changes nothing.
    AfterCompletion,
}

/// What a gate's refusal does (the spec's `on_reject`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub enum OnReject {
    /// Halt at the gate and ask again every `retry`; the progress deadline is suspended meanwhile.
    Wait,
    /// Roll back at once.
    Rollback,
}

crate::spec::de::keyword_enum!(
    GateAt,
    default None,
    "BeforeRollout" => GateAt::BeforeRollout,
    "BeforeStep" => GateAt::BeforeStep,
    "BeforePromotion" => GateAt::BeforePromotion,
    "AfterCompletion" => GateAt::AfterCompletion,
);
crate::spec::de::keyword_enum!(
    OnReject,
    default None,
    "Wait" => OnReject::Wait,
    "Rollback" => OnReject::Rollback,
);

// === impl Gate ===

impl Gate {
    /// The spec's gate, omitted fields at its defaults (timeout and retry 10s, `Wait`). Not
    /// validated here: the rollout configuration is validated as a whole.
    pub fn to_config(&self) -> GateConfig {
        GateConfig {
            name: self.name.clone(),
            at: match self.at {
                GateAt::BeforeRollout => GatePoint::BeforeRollout,
                GateAt::BeforeStep => GatePoint::BeforeStep,
                GateAt::BeforePromotion => GatePoint::BeforePromotion,
                GateAt::AfterCompletion => GatePoint::AfterCompletion,
            },
            url: self.url.clone(),
            timeout: self.timeout.map_or(DEFAULT_TIMEOUT, |t| t.0),
            on_reject: match self.on_reject {
                None | Some(OnReject::Wait) => GatePolicy::Wait,
                Some(OnReject::Rollback) => GatePolicy::Rollback,
            },
            retry: self.retry.map_or(DEFAULT_RETRY, |t| t.0),
            headers: self.headers.clone(),
            headers_from: self
                .headers_from
                .iter()
                .map(HeaderFrom::to_config)
                .collect(),
        }
    }
}
