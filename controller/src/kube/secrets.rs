//! The `headersFrom[].valueFrom.secretKeyRef` and `configMapKeyRef` values of a TrafficShift's
//! gates, checks and Prometheus metrics source (session 42; ConfigMaps session 43): one `GET` of
//! the Secret or ConfigMap, in the TrafficShift's own namespace, at each call, so a rotated value
//! is used at the next call and no object is cached or watched (the controller needs `get` on
//! secrets and configmaps only, which `resourceNames` can narrow; deploy/controller/rbac.yaml).

use futures_util::future::BoxFuture;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::NamespaceResourceScope;
use kube::api::Api;
use serde::de::DeserializeOwned;

use crate::headers::Values;
use crate::spec::headers::{KeyRef, ValueFrom};

/// Reads Secret and ConfigMap keys in one namespace for [`crate::headers::resolve`]; field paths
/// in its errors are spelled as in the TrafficShift (`spec.rollout.gates[0].headersFrom[0]`).
#[derive(Clone)]
pub struct ClusterValues {
    client: kube::Client,
    namespace: String,
}

impl ClusterValues {
    /// The Secrets and ConfigMaps of `namespace` (the TrafficShift's), read with `client`.
    pub fn new(client: kube::Client, namespace: &str) -> ClusterValues {
        ClusterValues {
            client,
            namespace: namespace.to_owned(),
        }
    }

    /// The value of `r.key` in the `K` (Secret or ConfigMap) named `r.name`, as UTF-8 text;
    /// `bytes` finds a key's bytes in the object.
    async fn key<K>(
        &self,
        r: &KeyRef,
        bytes: impl Fn(&K, &str) -> Option<Vec<u8>>,
    ) -> Result<String, String>
    where
        K: kube::Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let object = format!("{} {}/{}", K::kind(&()), self.namespace, r.name);
        let api: Api<K> = Api::namespaced(self.client.clone(), &self.namespace);
        let found = api.get_opt(&r.name).await.map_err(|e| {
            let e = super::api_error_words(&e);
            let plural = K::plural(&());
            format!("cannot read {object}: {e} (the controller needs `get` on {plural} there)")
        })?;
        let found = found.ok_or_else(|| format!("{object} does not exist"))?;
        let bytes =
            bytes(&found, &r.key).ok_or_else(|| format!("{object} has no key {:?}", r.key))?;
        String::from_utf8(bytes).map_err(|_| format!("{object} key {:?} is not UTF-8 text", r.key))
    }
}

/// A Secret's key: in `data` (the API server folds `stringData` into it).
fn secret_bytes(secret: &Secret, key: &str) -> Option<Vec<u8>> {
    secret.data.as_ref()?.get(key).map(|b| b.0.clone())
}

/// A ConfigMap's key: in `data`, else in `binaryData` (where `kubectl create configmap
/// --from-file` puts a file that is not UTF-8; the API server refuses a key in both).
fn config_map_bytes(config_map: &ConfigMap, key: &str) -> Option<Vec<u8>> {
    let text = config_map.data.as_ref().and_then(|d| d.get(key));
    let text = text.map(|t| t.as_bytes().to_vec());
    text.or_else(|| {
        config_map
            .binary_data
            .as_ref()?
            .get(key)
            .map(|b| b.0.clone())
    })
}

impl Values for ClusterValues {
    fn read<'a>(&'a self, from: &'a ValueFrom) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            match from {
                ValueFrom::SecretKeyRef(r) => self.key(r, secret_bytes).await,
                ValueFrom::ConfigMapKeyRef(r) => self.key(r, config_map_bytes).await,
                // A TrafficShift cannot name them (its schema has only `secretKeyRef` and
                // `configMapKeyRef`); a record that does would let its author read the
                // controller's own files and environment (its service account token among them).
                other => Err(format!(
                    "{} cannot be read in Kubernetes mode: only secretKeyRef or configMapKeyRef",
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
