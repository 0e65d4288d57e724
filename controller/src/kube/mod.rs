//! Kubernetes mode: the `TrafficShift` custom resource and the Deployment annotations that ask for a
//! rollout.
//!
//! # Layout
//! - [`crd`]: the `TrafficShift` resource (`crossfade.dev/v1alpha1`), its spec and status types, and
//!   the CRD manifest generated from them ([`crd::crd_yaml`], written to `deploy/crd/` by
//!   `crossfade crdgen`).
//! - [`trigger`]: pure: from a Deployment's `crossfade.dev/*` annotations to the `TrafficShift` it
//!   asks for, with errors that name the annotation.
//! - [`reconcile`]: the Deployment reconciler that applies what [`trigger`] asks for.
//! - [`shift`]: the TrafficShift controller, which drives the rollout machine through the
//!   Kubernetes driver ([`crate::driver::kube`]) and writes status and Events.
//! - [`store`]: the rollout's state in the TrafficShift status, resourceVersion-guarded.
//! - [`command`]: pure: the command annotations (`crossfade.dev/promote`, `abort`, `retry`,
//!   `resume` with nonces, `paused`) against the record of those acted on.
//! - [`backoff`]: exponential backoff of failed reconciles, per object.
//!
//! Not here yet: proxies reading the weights, leader election (see
//! docs/kubernetes.md).

pub mod backoff;
pub mod command;
pub mod crd;
pub mod ops;
pub mod reconcile;
pub mod shift;
pub mod store;
pub mod trigger;

/// The annotation and label prefix of everything Crossfade reads or writes on Kubernetes objects.
pub const PREFIX: &str = "crossfade.dev/";

/// The field manager of every write Crossfade makes (server-side apply and patches).
pub const FIELD_MANAGER: &str = "crossfade";

/// Runs the Deployment reconciler and the TrafficShift controller in `namespace` (all namespaces
/// when `None`) until the returned future is dropped, after checking the CRD is installed.
///
/// # Errors
/// [`shift::PreflightError`] when the TrafficShift CRD is missing or the API cannot be reached.
pub async fn run(
    client: ::kube::Client,
    namespace: Option<&str>,
    metrics: std::sync::Arc<dyn crate::traffic::MetricsSource>,
) -> Result<(), shift::PreflightError> {
    shift::preflight(&client).await?;
    tokio::join!(
        reconcile::run(client.clone(), namespace),
        shift::run(client, namespace, metrics)
    );
    Ok(())
}
