//! The Deployment reconciler: server-side applies the TrafficShift that a Deployment's annotations
//! ask for ([`super::trigger`]), and nothing else yet.
//!
//! Idempotent by construction: the desired TrafficShift is a pure function of the Deployment, applied
//! with one field manager, so a repeated annotation is a no-op write and a new value updates the
//! spec in place. It never deletes a TrafficShift: removing the annotation leaves the rollout to its
//! own course (an abort is a command, not an absence).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use super::crd::TrafficShift;
use super::trigger::{desired_shift, TriggerError};
use super::FIELD_MANAGER;

/// How long to wait before retrying after an API error.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// What the reconciler needs: a client.
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
}

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The Deployment's annotations are invalid; retried when the Deployment changes.
    #[error(transparent)]
    Trigger(#[from] TriggerError),
    /// Applying the TrafficShift failed; retried after a delay.
    #[error("apply trafficshift {namespace}/{name}: {source}")]
    Apply {
        /// The TrafficShift's namespace.
        namespace: String,
        /// The TrafficShift's name.
        name: String,
        /// The API error.
        source: kube::Error,
    },
}

/// Applies the TrafficShift `deploy` asks for, if any; then waits for the next change.
///
/// # Errors
/// [`ReconcileError::Trigger`] for bad annotations, [`ReconcileError::Apply`] when the API refuses.
pub async fn reconcile(
    deploy: Arc<Deployment>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let Some(shift) = desired_shift(&deploy)? else {
        return Ok(Action::await_change());
    };
    let namespace = shift.namespace().unwrap_or_else(|| "default".into());
    let name = shift.name_any();
    let api: Api<TrafficShift> = Api::namespaced(ctx.client.clone(), &namespace);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(&name, &params, &Patch::Apply(&shift))
        .await
        .map_err(|source| ReconcileError::Apply {
            namespace,
            name,
            source,
        })?;
    Ok(Action::await_change())
}

/// Bad annotations wait for the Deployment to change; API errors retry after [`RETRY_AFTER`].
pub fn error_policy(deploy: Arc<Deployment>, err: &ReconcileError, _: Arc<Context>) -> Action {
    tracing::warn!(deployment = %deploy.name_any(), error = %err, "reconcile failed");
    match err {
        ReconcileError::Trigger(_) => Action::await_change(),
        ReconcileError::Apply { .. } => Action::requeue(RETRY_AFTER),
    }
}

/// Runs the Deployment controller in `namespace` (all namespaces when `None`) until the watch
/// streams end, which they do not on their own: drop or abort the future to stop it.
pub async fn run(client: Client, namespace: Option<&str>) {
    let (deploys, shifts): (Api<Deployment>, Api<TrafficShift>) = match namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let ctx = Arc::new(Context { client });
    Controller::new(deploys, watcher::Config::default())
        .owns(shifts, watcher::Config::default())
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile loop");
            }
        })
        .await;
}
