//! The `headersFrom[].valueFrom.secretKeyRef` values of a TrafficShift's gates, checks and
//! Prometheus metrics source (session 42): one `GET` of the Secret, in the TrafficShift's own
//! namespace, at each call, so a rotated Secret is used at the next call and no Secret is cached
//! or watched (the controller needs `get` on secrets only, which `resourceNames` can narrow;
//! deploy/controller/rbac.yaml).

use futures_util::future::BoxFuture;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;

use crate::headers::Values;
use crate::spec::headers::{SecretKeyRef, ValueFrom};

/// Reads Secret keys in one namespace for [`crate::headers::resolve`]; field paths in its errors
/// are spelled as in the TrafficShift (`spec.rollout.gates[0].headersFrom[0]`).
#[derive(Clone)]
pub struct SecretValues {
    api: Api<Secret>,
    namespace: String,
}

impl SecretValues {
    /// The Secrets of `namespace` (the TrafficShift's), read with `client`.
    pub fn new(client: kube::Client, namespace: &str) -> SecretValues {
        SecretValues {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
        }
    }

    /// The value of `r.key` in Secret `r.name`, as UTF-8 text.
    async fn key(&self, r: &SecretKeyRef) -> Result<String, String> {
        let secret = format!("Secret {}/{}", self.namespace, r.name);
        let found = self.api.get_opt(&r.name).await.map_err(|e| {
            let e = super::api_error_words(&e);
            format!("cannot read {secret}: {e} (the controller needs `get` on secrets there)")
        })?;
        let found = found.ok_or_else(|| format!("{secret} does not exist"))?;
        let bytes = found
            .data
            .as_ref()
            .and_then(|data| data.get(&r.key))
            .ok_or_else(|| format!("{secret} has no key {:?}", r.key))?;
        String::from_utf8(bytes.0.clone())
            .map_err(|_| format!("{secret} key {:?} is not UTF-8 text", r.key))
    }
}

impl Values for SecretValues {
    fn read<'a>(&'a self, from: &'a ValueFrom) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            match from {
                ValueFrom::SecretKeyRef(r) => self.key(r).await,
                // A TrafficShift cannot name them (its schema has only `secretKeyRef`); a record
                // that does would let its author read the controller's own files and environment
                // (its service account token among them).
                other => Err(format!(
                    "{} cannot be read in Kubernetes mode: only secretKeyRef",
                    other.describe()
                )),
            }
        })
    }

    fn field(&self, path: &str) -> String {
        format!("spec.{}", crate::kube::crd::camel(path))
    }
}

#[cfg(test)]
mod tests;
