//! The Kubernetes workload driver: the preview (green) is a Deployment copied from the target's pod
//! template with the TrafficShift's images; each backend has a headless Service; at promotion the
//! target Deployment takes the new images and the preview is deleted after the drain.
//!
//! Unlike [`super::WorkloadDriver`], whose `provision` future owns local processes until they are
//! ready, Kubernetes workloads outlive the controller and their readiness is observed, not awaited:
//! every call here is idempotent (server-side apply, delete of what may already be gone) and
//! answers with what the cluster shows now, so a reconcile can call it again after a restart.
//!
//! Why the target takes the new images instead of the preview becoming active: `kubectl get deploy
//! web` keeps showing the Deployment users created, with its replicas, and a GitOps tool that
//! owns `deploy/web` sees the image it should commit rather than a Deployment scaled to zero it
//! would scale back up. The price is a second rolling update of the target, while the preview
//! carries 100% of the traffic.

mod build;

#[cfg(test)]
mod api_tests;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use crossfade_proxy::weight::Slot;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

pub use build::{
    availability, backend_service, blue_selector, controlled_by, green_selector, key,
    missing_containers, no_container_port, preview_deployment, preview_name, ready_replicas,
    runs_images, service_name, Availability, BACKEND_LABEL, SHIFT_LABEL,
};

use crate::kube::crd::TrafficShift;
use crate::kube::proxy_source::translate::SERVICE_NAME_LABEL;
use crate::kube::FIELD_MANAGER;

/// The preview Deployment as [`KubeDriver::ensure_preview`] applied it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedPreview {
    /// Whether it has rolled out its template ([`availability`]).
    pub availability: Availability,
    /// Its pod template's images (container → image) as the API server stored them (after any
    /// admission webhook that rewrites image references): what [`KubeDriver::preview`] is
    /// compared with later.
    pub images: BTreeMap<String, String>,
    /// Its ready replicas (`status.readyReplicas`; 0 before its first status).
    pub ready: u32,
    /// The replicas it should have (`spec.replicas`, default 1).
    pub desired: u32,
}

/// Why the Kubernetes driver could not do what was asked. Every message names the object.
#[derive(Debug, thiserror::Error)]
pub enum KubeDriverError {
    /// The API server refused or could not be reached.
    #[error("{object}: {action}: {}", crate::kube::api_error_words(source))]
    Api {
        /// `deployment shop/web-green`.
        object: String,
        /// What was attempted: `apply`, `get`, `patch images`, `delete`.
        action: &'static str,
        /// The API error.
        source: kube::Error,
    },
    /// The objects do not allow the rollout (a container the Deployment does not have, no selector).
    #[error("{object}: {message}")]
    Invalid {
        /// `trafficshift shop/web` or `deployment shop/web`.
        object: String,
        /// Lowercase, naming the field.
        message: String,
    },
    /// An object Crossfade would create already exists and belongs to someone else; it is left alone.
    #[error("{object} exists and is not controlled by trafficshift {shift}; rename or delete it")]
    NotOwned {
        /// `deployment shop/web-green`.
        object: String,
        /// `shop/web`.
        shift: String,
    },
}

/// Creates, watches and retires the workloads of a TrafficShift's rollout.
#[derive(Clone)]
pub struct KubeDriver {
    client: Client,
}

// === impl KubeDriver ===

impl KubeDriver {
    /// A driver writing with `client` as field manager `crossfade`.
    pub fn new(client: Client) -> KubeDriver {
        KubeDriver { client }
    }

    fn deployments(&self, shift: &TrafficShift) -> Api<Deployment> {
        let ns = shift.namespace().unwrap_or_else(|| "default".into());
        Api::namespaced(self.client.clone(), &ns)
    }

    /// The target Deployment (`spec.deployment`), or `None` when it does not exist.
    ///
    /// # Errors
    /// [`KubeDriverError::Api`] when it cannot be read.
    pub async fn target(
        &self,
        shift: &TrafficShift,
    ) -> Result<Option<Deployment>, KubeDriverError> {
        let name = &shift.spec.deployment;
        self.deployments(shift)
            .get_opt(name)
            .await
            .map_err(|source| api(shift, "deployment", name, "get", source))
    }

    /// The EndpointSlices of `slot`'s Service (`<name>-blue`, `<name>-green`): a list by the
    /// well-known label `kubernetes.io/service-name` (the EndpointSlice API's own link from a
    /// slice to its Service), for the backend's rollback capacity ([`crate::kube::capacity`]).
    /// Empty when the Service has none (yet).
    ///
    /// # Errors
    /// [`KubeDriverError::Api`] when they cannot be listed (e.g. `list endpointslices` not granted).
    pub async fn endpoint_slices(
        &self,
        shift: &TrafficShift,
        slot: Slot,
    ) -> Result<Vec<EndpointSlice>, KubeDriverError> {
        let ns = shift.namespace().unwrap_or_else(|| "default".into());
        let slices: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &ns);
        let service = service_name(shift, slot);
        let selector = format!("{SERVICE_NAME_LABEL}={service}");
        let listed = slices
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|source| api(shift, "endpointslices of service", &service, "list", source))?;
        Ok(listed.items)
    }

    /// Applies both backends' Services (`<name>-blue`, `<name>-green`).
    ///
    /// # Errors
    /// [`KubeDriverError::NotOwned`] when a Service of that name belongs to someone else (one left
    /// by an earlier TrafficShift of the same name is adopted: [`left_by_predecessor`]),
    /// [`KubeDriverError::Invalid`] when the target has no `matchLabels`, else API errors.
    pub async fn ensure_services(
        &self,
        shift: &TrafficShift,
        target: &Deployment,
    ) -> Result<(), KubeDriverError> {
        let ns = shift.namespace().unwrap_or_else(|| "default".into());
        let services: Api<Service> = Api::namespaced(self.client.clone(), &ns);
        for slot in [Slot::Blue, Slot::Green] {
            let desired = backend_service(shift, target, slot)?;
            let name = desired.name_any();
            let err = |action, source| api(shift, "service", &name, action, source);
            let current = services.get_opt(&name).await.map_err(|e| err("get", e))?;
            if let Some(current) = current.filter(|s| !controlled_by(s, shift)) {
                if !left_by_predecessor(&current, shift) {
                    return Err(not_owned(shift, "service", &name));
                }
                adopt(&services, &current, shift)
                    .await
                    .map_err(|e| err("adopt", e))?;
            }
            services
                .patch(&name, &apply(), &Patch::Apply(&desired))
                .await
                .map_err(|e| err("apply", e))?;
        }
        Ok(())
    }

    /// Applies the preview Deployment and says whether it is available and how many of its
    /// replicas are ready, with its pod template's images as the API server stored them
    /// ([`AppliedPreview`]).
    ///
    /// # Errors
    /// [`KubeDriverError::NotOwned`] when `<name>-green` belongs to someone else (one left by an
    /// earlier TrafficShift of the same name is adopted: [`left_by_predecessor`]),
    /// [`KubeDriverError::Invalid`] when the images name a container the target does not have,
    /// else API errors.
    pub async fn ensure_preview(
        &self,
        shift: &TrafficShift,
        target: &Deployment,
    ) -> Result<AppliedPreview, KubeDriverError> {
        let desired = preview_deployment(shift, target)?;
        let name = desired.name_any();
        let deployments = self.deployments(shift);
        let err = |action, source| api(shift, "deployment", &name, action, source);
        let current = deployments
            .get_opt(&name)
            .await
            .map_err(|e| err("get", e))?;
        if let Some(current) = current.filter(|d| !controlled_by(d, shift)) {
            if !left_by_predecessor(&current, shift) {
                return Err(not_owned(shift, "deployment", &name));
            }
            adopt(&deployments, &current, shift)
                .await
                .map_err(|e| err("adopt", e))?;
        }
        let applied = deployments
            .patch(&name, &apply(), &Patch::Apply(&desired))
            .await
            .map_err(|e| err("apply", e))?;
        let (ready, desired) = ready_replicas(&applied);
        Ok(AppliedPreview {
            availability: availability(&applied),
            images: crate::kube::template::template_images(&applied),
            ready,
            desired,
        })
    }

    /// The preview Deployment `<name>-green` when it exists and this TrafficShift controls it;
    /// `None` when it is gone or belongs to someone else.
    ///
    /// # Errors
    /// [`KubeDriverError::Api`] when it cannot be read.
    pub async fn preview(
        &self,
        shift: &TrafficShift,
    ) -> Result<Option<Deployment>, KubeDriverError> {
        let name = preview_name(shift);
        let current = self
            .deployments(shift)
            .get_opt(&name)
            .await
            .map_err(|source| api(shift, "deployment", &name, "get", source))?;
        Ok(current.filter(|d| controlled_by(d, shift)))
    }

    /// Sets the preview Deployment's `spec.replicas` (a merge patch of that field alone, as
    /// `kubectl scale` does; its template is left as it is) when this TrafficShift controls it;
    /// `false` when it is gone or not ours.
    ///
    /// # Errors
    /// API errors.
    pub async fn scale_preview(
        &self,
        shift: &TrafficShift,
        replicas: i32,
    ) -> Result<bool, KubeDriverError> {
        let name = preview_name(shift);
        if self.preview(shift).await?.is_none() {
            return Ok(false);
        }
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        let patch = json!({ "spec": { "replicas": replicas } });
        self.deployments(shift)
            .patch(&name, &params, &Patch::Merge(&patch))
            .await
            .map_err(|source| api(shift, "deployment", &name, "scale", source))?;
        Ok(true)
    }

    /// Gives the target Deployment the TrafficShift's images (a strategic merge patch by container
    /// name, as `kubectl set image` does, with the annotation
    /// [`crate::kube::template::SERVING_IMAGES`] recording them) and says whether it has rolled
    /// them out. `read` is the target as the caller read (and checked) it, else it is read here.
    /// The patch is guarded by that reading's resourceVersion: a change since (another client's
    /// edit the caller's check did not see) gets 409 from the API server and `Waiting`, so the
    /// next reconcile reads and checks it before patching (check31: a template change in the
    /// moment between the check and the patch was promoted with the images).
    ///
    /// # Errors
    /// [`KubeDriverError::Invalid`] when the target is gone, else API errors.
    pub async fn promote_target(
        &self,
        shift: &TrafficShift,
        read: Option<Deployment>,
    ) -> Result<Availability, KubeDriverError> {
        let name = &shift.spec.deployment;
        let err = |action, source| api(shift, "deployment", name, action, source);
        let read = match read {
            Some(target) => Some(target),
            None => self.target(shift).await?,
        };
        let Some(target) = read else {
            return Err(KubeDriverError::Invalid {
                object: format!("trafficshift {}", key(shift)),
                message: format!("spec.deployment: deployment {name} does not exist"),
            });
        };
        if runs_images(&target, shift) {
            return Ok(availability(&target));
        }
        // The record already names these images, so this promotion was patched and someone
        // changed the template since (`kubectl set image` during the target's rolling update).
        // Patching again would drop their images without the rollout they ask for: the Deployment
        // reconciler takes the template back and requests theirs (kube/template.rs); wait for it.
        let promoted = crate::kube::template::recorded(&target).is_some_and(|recorded| {
            shift
                .spec
                .images
                .iter()
                .all(|(c, i)| recorded.get(c) == Some(&i.0))
        });
        if promoted {
            return Ok(Availability::Waiting(format!(
                "deployment {name}'s pod template was changed by another client after the promotion; waiting for crossfade to take it back"
            )));
        }
        let containers: Vec<_> = shift
            .spec
            .images
            .iter()
            .map(|(c, i)| json!({ "name": c, "image": i.0 }))
            .collect();
        // The record of the images Crossfade set goes in the same patch, so that the Deployment
        // reconciler never sees this change as someone else's (kube/template.rs).
        let mut serving = crate::kube::template::template_images(&target);
        serving.extend(
            shift
                .spec
                .images
                .iter()
                .map(|(c, i)| (c.clone(), i.0.clone())),
        );
        let serving = crate::kube::template::record(&serving);
        let patch = json!({
            "metadata": {
                "annotations": { crate::kube::template::SERVING_IMAGES: serving },
                "resourceVersion": target.metadata.resource_version,
            },
            "spec": { "template": { "spec": { "containers": containers } } }
        });
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        let patched = match self
            .deployments(shift)
            .patch(name, &params, &Patch::Strategic(patch))
            .await
        {
            Ok(patched) => patched,
            Err(kube::Error::Api(status)) if status.code == 409 => {
                return Ok(Availability::Waiting(format!(
                    "deployment {name} changed since it was read; it is read and checked again before the promotion patches it"
                )))
            }
            Err(e) => return Err(err("patch images", e)),
        };
        Ok(availability(&patched))
    }

    /// Deletes the preview Deployment if this TrafficShift controls it (in the background, with
    /// its uid as precondition); `true` once it is gone, or when the one of that name is not ours.
    ///
    /// # Errors
    /// API errors other than "not found" (409 Conflict when it was replaced since it was read).
    pub async fn delete_preview(&self, shift: &TrafficShift) -> Result<bool, KubeDriverError> {
        let name = preview_name(shift);
        let deployments = self.deployments(shift);
        let err = |action, source| api(shift, "deployment", &name, action, source);
        let Some(current) = deployments
            .get_opt(&name)
            .await
            .map_err(|e| err("get", e))?
        else {
            return Ok(true);
        };
        if !controlled_by(&current, shift) {
            return Ok(true); // not ours: never delete it
        }
        // Only the object just read: one recreated under this name since (by someone else) gets
        // 409 Conflict instead of being deleted, and is looked at again next time.
        let params = DeleteParams::background().preconditions(Preconditions {
            uid: current.metadata.uid.clone(),
            resource_version: None,
        });
        match deployments.delete(&name, &params).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.is_not_found() => Ok(true),
            Err(e) => Err(err("delete", e)),
        }
    }
}

/// Whether `object`'s controller owner is an earlier TrafficShift of `shift`'s name (same kind and
/// group, another uid): one deleted since, whose dependents garbage collection has not removed
/// yet (it runs asynchronously; the emulator never runs it), while the Deployment reconciler
/// already made `shift` again. Names are unique in a namespace, and an owner reference names an
/// object of its dependent's namespace, so that owner no longer exists (trial 10, K5).
pub fn left_by_predecessor(object: &impl kube::Resource, shift: &TrafficShift) -> bool {
    let Some(uid) = shift.metadata.uid.as_deref() else {
        return false;
    };
    let name = shift.metadata.name.as_deref().unwrap_or_default();
    let owner = object
        .meta()
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true));
    owner.is_some_and(|r| {
        r.kind == "TrafficShift"
            && r.api_version.starts_with("crossfade.dev/")
            && r.name == name
            && r.uid != uid
    })
}

/// Makes `shift` the only owner of `current`, left by a predecessor ([`left_by_predecessor`]):
/// a JSON merge patch that replaces `metadata.ownerReferences` (a list: replaced whole), guarded
/// by the resourceVersion read, so that the server-side apply that follows owns it as usual.
async fn adopt<K>(api: &Api<K>, current: &K, shift: &TrafficShift) -> Result<(), kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let owner = shift.controller_owner_ref(&());
    let name = current.meta().name.clone().unwrap_or_default();
    let patch = json!({ "metadata": {
        "ownerReferences": owner.map(|o| vec![o]).unwrap_or_default(),
        "resourceVersion": current.meta().resource_version,
    } });
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    api.patch(&name, &params, &Patch::Merge(&patch)).await?;
    tracing::info!(
        trafficshift = %key(shift),
        object = %name,
        "adopted {name}, left by an earlier trafficshift of the same name (deleted; garbage collection had not removed it yet)"
    );
    Ok(())
}

fn apply() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

fn api(
    shift: &TrafficShift,
    kind: &str,
    name: &str,
    action: &'static str,
    source: kube::Error,
) -> KubeDriverError {
    let ns = shift.namespace().unwrap_or_else(|| "default".into());
    KubeDriverError::Api {
        object: format!("{kind} {ns}/{name}"),
        action,
        source,
    }
}

fn not_owned(shift: &TrafficShift, kind: &str, name: &str) -> KubeDriverError {
    let ns = shift.namespace().unwrap_or_else(|| "default".into());
    KubeDriverError::NotOwned {
        object: format!("{kind} {ns}/{name}"),
        shift: key(shift),
    }
}
