//! `headersFrom` of a TrafficShift's gates, checks and metrics source: request headers whose
//! values are read from a Secret in the TrafficShift's namespace at each call, so that a token is
//! not written in the TrafficShift (nor in its status). Mirrors
//! [`crate::spec::headers::HeaderFrom`] in camelCase.
//!
//! The shape is a PodSpec container's `env[]` item (core/v1 `EnvVar` with `valueFrom`), as the
//! Kubernetes API conventions prefer a list of named subobjects to a map, and a field never holds
//! either a string or an object: a structural CRD schema cannot say "string or object" (only
//! int-or-string), so plain values stay in the `headers` map and Secret-held ones are listed here.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::spec::headers::{HeaderFrom as SpecHeaderFrom, SecretKeyRef, ValueFrom};

pub use crate::spec::headers::MAX_HEADERS_FROM;

/// One request header whose value is a Secret's key, read before each call:
/// `{ name: Authorization, valueFrom: { secretKeyRef: { name: kpi-token, key: token } } }`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(
    rename_all = "camelCase",
    expecting = "a map of header settings (name, valueFrom)"
)]
pub struct HeaderFrom {
    /// The header's name, e.g. `Authorization` (an RFC 9110 §5.1 token); unique in the list and
    /// not also in `headers`.
    #[schemars(
        length(min = 1, max = 256),
        regex(pattern = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
    )]
    pub name: String,
    /// Where the value is read from.
    pub value_from: HeaderSource,
}

/// The source of a header's value (as core/v1 `EnvVarSource`; only `secretKeyRef` here).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(
    rename_all = "camelCase",
    expecting = "a map with the header value's source (secretKeyRef)"
)]
pub struct HeaderSource {
    /// A key of a Secret in the TrafficShift's namespace. The value is used as stored, without
    /// trailing line breaks; a Secret or key that is missing makes the call fail (the gate
    /// refuses, the check has no value, the metrics source reads nothing), naming this field.
    pub secret_key_ref: SecretKeySelector,
}

/// A key of a Secret in the TrafficShift's namespace: core/v1 `SecretKeySelector` without
/// `optional` (a header that silently went missing would turn into a puzzling 401).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(
    rename_all = "camelCase",
    expecting = "a map of Secret key settings (name, key)"
)]
pub struct SecretKeySelector {
    /// The Secret's name (a DNS-1123 subdomain).
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
    /// The key in the Secret's `data`.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

// === impl HeaderFrom ===

impl HeaderFrom {
    /// The spec's `headers_from` item: `value_from: { secret_key_ref: { name, key } }`.
    pub fn to_config(&self) -> SpecHeaderFrom {
        let r = &self.value_from.secret_key_ref;
        SpecHeaderFrom {
            name: self.name.clone(),
            value_from: ValueFrom::SecretKeyRef(SecretKeyRef {
                name: r.name.clone(),
                key: r.key.clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests;
