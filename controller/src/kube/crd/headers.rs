//! `headersFrom` of a TrafficShift's gates, checks and metrics source: request headers whose
//! values are read from a Secret or a ConfigMap in the TrafficShift's namespace at each call, so
//! that a token is not written in the TrafficShift (nor in its status). Mirrors
//! [`crate::spec::headers::HeaderFrom`] in camelCase.
//!
//! The shape is a PodSpec container's `env[]` item (core/v1 `EnvVar` with `valueFrom`), as the
//! Kubernetes API conventions prefer a list of named subobjects to a map, and a field never holds
//! either a string or an object: a structural CRD schema cannot say "string or object" (only
//! int-or-string), so plain values stay in the `headers` map and Secret- or ConfigMap-held ones are
//! listed here.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::spec::headers::{HeaderFrom as SpecHeaderFrom, KeyRef, ValueFrom};

pub use crate::spec::headers::MAX_HEADERS_FROM;

/// One request header whose value is a Secret's or a ConfigMap's key, read before each call:
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
    /// Where the value is read from: exactly one of `secretKeyRef` or `configMapKeyRef`, as in a
    /// container's `env[].valueFrom`. The value is used as stored, without trailing line breaks;
    /// an object or key that is missing makes the call fail (the gate refuses, the check has no
    /// value, the metrics source reads nothing), naming this field, the object and the key.
    pub value_from: HeaderSource,
}

/// The source of a header's value, as core/v1 `EnvVarSource`: exactly one of `secretKeyRef` or
/// `configMapKeyRef` (its `fieldRef` and `resourceFieldRef` name a pod's own fields, which a
/// TrafficShift has none of). Written and read as [`SourceFields`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, JsonSchema)]
#[serde(into = "SourceFields")]
#[schemars(try_from = "SourceFields")]
pub enum HeaderSource {
    /// A key of a Secret in the TrafficShift's namespace.
    SecretKeyRef(KeySelector),
    /// A key of a ConfigMap in the TrafficShift's namespace (session 43).
    ConfigMapKeyRef(KeySelector),
}

/// The written form of [`HeaderSource`] (and its schema): both keys optional, exactly one
/// present, which the schema (`minProperties`/`maxProperties`) and the decoding both check.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(
    rename_all = "camelCase",
    expecting = "a map with the header value's source (secretKeyRef or configMapKeyRef)"
)]
#[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
pub struct SourceFields {
    /// A key of a Secret in the TrafficShift's namespace, for a token.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "not_null"
    )]
    pub secret_key_ref: Option<KeySelector>,
    /// A key of a ConfigMap in the TrafficShift's namespace (its `data`, else its `binaryData`),
    /// for a value that is not secret but kept out of the TrafficShift, e.g. a tenant ID.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "not_null"
    )]
    pub config_map_key_ref: Option<KeySelector>,
}

/// A selector that is written: an explicit `null` (`secretKeyRef: null`) is refused at its own
/// field (`...valueFrom.secretKeyRef: invalid type: null, expected a map of key settings (name,
/// key)`), where `Option`'s reading took it for absent and the error named only `valueFrom`
/// (session 43). Left out, the field is `None` (`default`).
fn not_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<KeySelector>, D::Error> {
    KeySelector::deserialize(d).map(Some)
}

/// A key of a Secret or a ConfigMap in the TrafficShift's namespace: core/v1
/// `SecretKeySelector` or `ConfigMapKeySelector` without `optional` (a header that silently went
/// missing would turn into a puzzling 401).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(
    rename_all = "camelCase",
    expecting = "a map of key settings (name, key)"
)]
pub struct KeySelector {
    /// The Secret's or ConfigMap's name (a DNS-1123 subdomain).
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
    /// The key in its `data` (or a ConfigMap's `binaryData`).
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

// === impl HeaderSource ===

/// Refused inside the `valueFrom` map rather than by `#[serde(try_from)]` after it, so that
/// [`super::decode()`] names `...headersFrom[1].valueFrom`, not the header holding it.
impl<'de> Deserialize<'de> for HeaderSource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<HeaderSource, D::Error> {
        d.deserialize_map(SourceVisitor)
    }
}

struct SourceVisitor;

impl<'de> serde::de::Visitor<'de> for SourceVisitor {
    type Value = HeaderSource;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a map with the header value's source (secretKeyRef or configMapKeyRef)")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<HeaderSource, A::Error> {
        let fields = SourceFields::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
        HeaderSource::try_from(fields).map_err(serde::de::Error::custom)
    }
}

impl TryFrom<SourceFields> for HeaderSource {
    type Error = &'static str;

    fn try_from(f: SourceFields) -> Result<HeaderSource, &'static str> {
        match (f.secret_key_ref, f.config_map_key_ref) {
            (Some(s), None) => Ok(HeaderSource::SecretKeyRef(s)),
            (None, Some(c)) => Ok(HeaderSource::ConfigMapKeyRef(c)),
            _ => Err("exactly one of secretKeyRef or configMapKeyRef"),
        }
    }
}

impl From<HeaderSource> for SourceFields {
    fn from(source: HeaderSource) -> SourceFields {
        match source {
            HeaderSource::SecretKeyRef(s) => SourceFields {
                secret_key_ref: Some(s),
                ..SourceFields::default()
            },
            HeaderSource::ConfigMapKeyRef(c) => SourceFields {
                config_map_key_ref: Some(c),
                ..SourceFields::default()
            },
        }
    }
}

// === impl HeaderFrom ===

impl HeaderFrom {
    /// The spec's `headers_from` item: `value_from: { secret_key_ref: { name, key } }` or
    /// `{ config_map_key_ref: { name, key } }`.
    pub fn to_config(&self) -> SpecHeaderFrom {
        let key = |s: &KeySelector| KeyRef {
            name: s.name.clone(),
            key: s.key.clone(),
        };
        let value_from = match &self.value_from {
            HeaderSource::SecretKeyRef(s) => ValueFrom::SecretKeyRef(key(s)),
            HeaderSource::ConfigMapKeyRef(c) => ValueFrom::ConfigMapKeyRef(key(c)),
        };
        SpecHeaderFrom {
            name: self.name.clone(),
            value_from,
        }
    }
}

#[cfg(test)]
mod tests;
