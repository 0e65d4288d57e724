//! The request headers of a gate or a check at the time of the call: the plain `headers` and the
//! `headers_from` values read through a [`Values`] source ([`LocalValues`] in local mode, the
//! TrafficShift namespace's Secrets and ConfigMaps in Kubernetes mode, [`crate::kube::secrets`]).
//!
//! A value read is never written anywhere but into the request: errors name the field, the header
//! and the source (`Secret shop/kpi-token has no key "token"`), never what was read.

use std::collections::BTreeMap;

use futures_util::future::BoxFuture;

use crate::spec::headers::{HeaderFrom, ValueFrom};

/// Reads the value of a `headers_from` source, at each call.
pub trait Values: Send + Sync {
    /// The value `from` holds now, as read (line breaks not yet removed).
    ///
    /// # Errors
    /// Why it cannot be read, naming the source and never a value: `Secret shop/kpi-token has no
    /// key "token"`, `environment variable T is not set`.
    fn read<'a>(&'a self, from: &'a ValueFrom) -> BoxFuture<'a, Result<String, String>>;

    /// A spec field path (`rollout.gates[0].headers_from[1]`) as errors show it: as is locally,
    /// `spec.rollout.gates[0].headersFrom[1]` for a TrafficShift.
    fn field(&self, path: &str) -> String {
        path.to_owned()
    }
}

/// Local mode's sources: `file` and `env`. A `secret_key_ref` or `config_map_key_ref` needs a
/// cluster and is refused (the spec's validation refuses it before a rollout starts).
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalValues;

/// The one [`LocalValues`], for tasks that need a `'static` source.
pub static LOCAL: LocalValues = LocalValues;

impl Values for LocalValues {
    fn read<'a>(&'a self, from: &'a ValueFrom) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            match from {
                ValueFrom::File(path) => {
                    let path = path.clone();
                    tokio::task::spawn_blocking(move || {
                        crossfade_proxy::files::read_bounded(
                            &path,
                            crossfade_proxy::files::MAX_SECRET_BYTES,
                        )
                    })
                    .await
                    .unwrap_or_else(|e| Err(std::io::Error::other(e)))
                    .map_err(|e| format!("{}: {e}", from.describe()))
                    .and_then(|bytes| {
                        String::from_utf8(bytes)
                            .map_err(|_| format!("{} is not UTF-8 text", from.describe()))
                    })
                }
                ValueFrom::Env(name) => match std::env::var(name) {
                    Ok(value) => Ok(value),
                    Err(std::env::VarError::NotPresent) => {
                        Err(format!("{} is not set", from.describe()))
                    }
                    Err(std::env::VarError::NotUnicode(_)) => {
                        Err(format!("{} is not UTF-8 text", from.describe()))
                    }
                },
                ValueFrom::SecretKeyRef(_) => Err(format!(
                    "{}: Secrets are read in Kubernetes mode only; use `file` or `env`",
                    from.describe()
                )),
                ValueFrom::ConfigMapKeyRef(_) => Err(format!(
                    "{}: ConfigMaps are read in Kubernetes mode only; use `file` or `env`",
                    from.describe()
                )),
            }
        })
    }
}

/// The headers of one call: `plain` as written and every `from` header read now through
/// `values`. `path` is the field holding them (`rollout.gates[0]`,
/// `rollout.analysis.checks[1].web`).
///
/// # Errors
/// The first header that cannot be read, or whose value cannot be a header value (RFC 9110 §5.5:
/// no control characters but horizontal tab), as `<field>: header <name>: <why>`, e.g.
/// `spec.rollout.gates[0].headersFrom[0]: header Authorization: Secret shop/kpi-token has no key
/// "token"`. The value is never part of the message.
pub async fn resolve(
    values: &dyn Values,
    path: &str,
    plain: &BTreeMap<String, String>,
    from: &[HeaderFrom],
) -> Result<BTreeMap<String, String>, String> {
    let mut headers = plain.clone();
    for (i, header) in from.iter().enumerate() {
        let named = |why: String| {
            let field = values.field(&format!("{path}.headers_from[{i}]"));
            format!("{field}: header {}: {why}", header.name)
        };
        let value = values.read(&header.value_from).await.map_err(&named)?;
        let value = value.trim_end_matches(['\r', '\n']).to_owned();
        if http::HeaderValue::from_str(&value).is_err() {
            let why = format!(
                "the value of {} has characters a header cannot carry",
                header.value_from.describe()
            );
            return Err(named(why));
        }
        headers.insert(header.name.clone(), value);
    }
    Ok(headers)
}

#[cfg(test)]
mod tests;
