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
//! - [`template`]: pure: `kubectl set image` on a managed Deployment told from Crossfade's own
//!   image changes, and turned into a rollout request.
//! - [`leader`]: leader election on a Lease: one replica acts.
//! - [`ops`]: the operator's side of the commands (`crossfade ... --kube`).
//!
//! Not here yet: see "Not done yet" in docs/kubernetes.md.

pub mod backoff;
pub mod command;
pub mod crd;
pub mod leader;
pub mod ops;
pub mod reconcile;
pub mod shift;
pub mod store;
pub mod template;
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
    controllers(client, namespace, metrics, None).await;
    Ok(())
}

/// Both controllers, without the CRD check; their Events name `instance` as reporting instance
/// when given. Runs until dropped.
pub async fn controllers(
    client: ::kube::Client,
    namespace: Option<&str>,
    metrics: std::sync::Arc<dyn crate::traffic::MetricsSource>,
    instance: Option<&str>,
) {
    tokio::join!(
        reconcile::run(client.clone(), namespace, instance),
        shift::run(client, namespace, metrics, instance)
    );
}

/// As [`run`], but acting only while this replica holds the Lease of `election`
/// ([`leader::run_elected`]): the controllers start when it is acquired and are dropped when it
/// lapses; Events name `election.identity`. Returns when `shutdown` completes (the Lease released).
///
/// # Errors
/// [`shift::PreflightError`] when the TrafficShift CRD is missing or the API cannot be reached.
pub async fn run_elected(
    client: ::kube::Client,
    namespace: Option<&str>,
    metrics: std::sync::Arc<dyn crate::traffic::MetricsSource>,
    election: leader::Election,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), shift::PreflightError> {
    shift::preflight(&client).await?;
    let identity = election.identity.clone();
    let work = || controllers(client.clone(), namespace, metrics.clone(), Some(&identity));
    leader::run_elected(client.clone(), election, work, shutdown).await;
    Ok(())
}
