//! Request headers whose values are not written in the spec (`headers_from` of a gate or of a
//! check's `prometheus`/`web` query): a token read from a file or an environment variable (local
//! mode), or from a Kubernetes Secret or ConfigMap (a TrafficShift's
//! `headersFrom[].valueFrom.secretKeyRef` or `configMapKeyRef`).
//!
//! The shape follows a PodSpec's `env[]` (Kubernetes API conventions: a list of named subobjects,
//! each with a `value_from` source), so the spec and the state file hold the reference only. The
//! value is read at the time of use, before each call, by [`crate::headers`]: a rotated token is
//! sent at the next call.
//!
//! ```yaml
//! gates:
//!   - name: approve
//!     at: before_promotion
//!     url: https://deploys.example/approve
//!     headers: { X-Team: shop }                   # plain values, written here
//!     headers_from:
//!       - name: Authorization
//!         value_from: { file: /run/secrets/approve-token }   # or { env: APPROVE_TOKEN }
//! ```

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Most `headers_from` entries one gate or query may have (as the TrafficShift's schema bounds
/// `headersFrom`).
pub const MAX_HEADERS_FROM: u32 = 16;

/// One request header whose value is read when the request is made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(expecting = "a map of header settings (name, value_from)")]
pub struct HeaderFrom {
    /// The header's name, e.g. `Authorization` (an RFC 9110 §5.1 token). Unique within the
    /// list, and not also in `headers`.
    pub name: String,
    /// Where its value is read from.
    pub value_from: ValueFrom,
}

/// Where a header's value is read from: exactly one source, written as a one-key map
/// (`{ file: /path }`, `{ env: NAME }`, `{ secret_key_ref: { name, key } }`,
/// `{ config_map_key_ref: { name, key } }`).
///
/// The value read is used as it is, except that trailing line breaks (`\n`, `\r\n`) are removed,
/// as a shell's `$(cat file)` does: files and Secrets or ConfigMaps made from files usually end with
/// one. A value
/// with other control characters cannot be a header value (RFC 9110 §5.5) and is refused at use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "SourceMap", try_from = "SourceMap")]
pub enum ValueFrom {
    /// The whole content of a file (UTF-8), read at each use, so a file rewritten by a secret
    /// manager is picked up. Local mode only; a relative path is taken from the spec file's
    /// directory.
    File(PathBuf),
    /// The value of an environment variable of the Crossfade process. Local mode only.
    Env(String),
    /// A key of a Secret in the TrafficShift's namespace (core/v1 `SecretKeySelector` without
    /// `optional`). Kubernetes mode only: a TrafficShift's `headersFrom[].valueFrom.secretKeyRef`.
    SecretKeyRef(KeyRef),
    /// A key of a ConfigMap in the TrafficShift's namespace, its `data` read first, then its
    /// `binaryData` (core/v1 `ConfigMapKeySelector` without `optional`). Kubernetes mode only: a
    /// TrafficShift's `headersFrom[].valueFrom.configMapKeyRef` (session 43).
    ConfigMapKeyRef(KeyRef),
}

/// A key of a Secret or a ConfigMap in the TrafficShift's own namespace, as a PodSpec's
/// `env[].valueFrom.secretKeyRef` or `configMapKeyRef` names one (core/v1 `SecretKeySelector`,
/// `ConfigMapKeySelector`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(expecting = "a map of key settings (name, key)")]
pub struct KeyRef {
    /// The object's name (a DNS-1123 subdomain).
    pub name: String,
    /// The key in its `data` (letters, digits, `-`, `_`, `.`).
    pub key: String,
}

/// The written form of [`ValueFrom`]: a map with exactly one of its keys (a Kubernetes-style
/// union, as `EnvVarSource`), so YAML, JSON and the state file all read `{ file: /path }`.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(expecting = "a map with one of file, env, secret_key_ref, config_map_key_ref")]
struct SourceMap {
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    file: Option<PathBuf>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    env: Option<String>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    secret_key_ref: Option<KeyRef>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    config_map_key_ref: Option<KeyRef>,
}

/// A source key that is written must hold a value: `env: null` is refused by its own field
/// (`...value_from.env: invalid type: null, expected a string`) rather than read as absent.
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

impl TryFrom<SourceMap> for ValueFrom {
    type Error = String;

    fn try_from(m: SourceMap) -> Result<ValueFrom, String> {
        const ONE_OF: &str = "`file`, `env`, `secret_key_ref`, `config_map_key_ref`";
        let sources = [
            m.file.map(ValueFrom::File),
            m.env.map(ValueFrom::Env),
            m.secret_key_ref.map(ValueFrom::SecretKeyRef),
            m.config_map_key_ref.map(ValueFrom::ConfigMapKeyRef),
        ];
        let mut written = sources.into_iter().flatten();
        match (written.next(), written.next()) {
            (Some(source), None) => Ok(source),
            (None, _) => Err(format!("value_from needs one of {ONE_OF}")),
            (Some(_), Some(_)) => Err(format!("value_from has more than one of {ONE_OF}; use one")),
        }
    }
}

impl From<ValueFrom> for SourceMap {
    fn from(v: ValueFrom) -> SourceMap {
        match v {
            ValueFrom::File(path) => SourceMap {
                file: Some(path),
                ..SourceMap::default()
            },
            ValueFrom::Env(name) => SourceMap {
                env: Some(name),
                ..SourceMap::default()
            },
            ValueFrom::SecretKeyRef(r) => SourceMap {
                secret_key_ref: Some(r),
                ..SourceMap::default()
            },
            ValueFrom::ConfigMapKeyRef(r) => SourceMap {
                config_map_key_ref: Some(r),
                ..SourceMap::default()
            },
        }
    }
}

impl ValueFrom {
    /// The source as messages name it: `file /run/secrets/t`, `environment variable T`,
    /// `Secret kpi-token key "token"`, `ConfigMap prom-tenant key "tenant"` (never its value).
    pub fn describe(&self) -> String {
        match self {
            ValueFrom::File(path) => format!("file {}", path.display()),
            ValueFrom::Env(name) => format!("environment variable {name}"),
            ValueFrom::SecretKeyRef(r) => format!("Secret {} key {:?}", r.name, r.key),
            ValueFrom::ConfigMapKeyRef(r) => format!("ConfigMap {} key {:?}", r.name, r.key),
        }
    }
}

// === impl RolloutConfig ===

impl super::RolloutConfig {
    /// Every `headers_from` list of the gates and checks, with the field path of its owner
    /// (`rollout.gates[0]`, `rollout.analysis.checks[1].web`), in field order.
    pub fn headers_from_lists(&self) -> Vec<(String, &[HeaderFrom])> {
        let mut out: Vec<(String, &[HeaderFrom])> = Vec::new();
        for (i, c) in self.analysis.checks.iter().enumerate() {
            let at = format!("rollout.analysis.checks[{i}]");
            if let Some(p) = &c.prometheus {
                out.push((format!("{at}.prometheus"), &p.headers_from));
            }
            if let Some(w) = &c.web {
                out.push((format!("{at}.web"), &w.headers_from));
            }
        }
        for (i, g) in self.gates.iter().enumerate() {
            out.push((format!("rollout.gates[{i}]"), &g.headers_from));
        }
        out
    }

    /// Resolves every relative `value_from.file` against `base`, the spec file's directory.
    pub(super) fn resolve_header_files(&mut self, base: &std::path::Path) {
        let checks = self.analysis.checks.iter_mut();
        let queries = checks.flat_map(|c| {
            let p = c.prometheus.as_mut().map(|p| &mut p.headers_from);
            let w = c.web.as_mut().map(|w| &mut w.headers_from);
            p.into_iter().chain(w)
        });
        let gates = self.gates.iter_mut().map(|g| &mut g.headers_from);
        for h in queries.chain(gates).flatten() {
            if let ValueFrom::File(path) = &mut h.value_from {
                if path.is_relative() && !path.as_os_str().is_empty() {
                    *path = base.join(&*path);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
