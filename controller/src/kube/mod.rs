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
//! - [`proxies`]: the proxy replicas' Leases: which weights generation each has applied (closed-loop
//!   weights) and where its `/metrics` are.
//! - [`scrape`]: the analysis counters scraped from the proxies' `/metrics` ([`scrape::ProxyScraper`]).
//! - [`backoff`]: exponential backoff of failed reconciles, per object.
//! - [`proxy_source`]: `crossfade proxy --kube`: TrafficShifts and EndpointSlices → the proxy's
//!   routes, and the proxy's Lease.
//! - [`proxy_lease`]: the per-replica Lease (applied generations, admin URL), both sides of it.
//!
//! Not here yet: commands by annotation, leader election (see docs/kubernetes.md).

pub mod backoff;
pub mod crd;
pub mod proxies;
pub mod proxy_lease;
pub mod proxy_source;
pub mod reconcile;
pub mod scrape;
pub mod shift;
pub mod store;
pub mod trigger;

/// The annotation and label prefix of everything Crossfade reads or writes on Kubernetes objects.
pub const PREFIX: &str = "crossfade.dev/";

/// The field manager of every write Crossfade makes (server-side apply and patches).
pub const FIELD_MANAGER: &str = "crossfade";

/// Runs the Deployment reconciler and the TrafficShift controller in `namespace` (all namespaces
/// when `None`) until the returned future is dropped, after checking the CRD is installed. The
/// proxies' Leases are read in `proxy_namespace` (all namespaces when `None`); the analysis reads
/// `metrics` ([`scrape::ProxyScraper`] in production).
///
/// # Errors
/// [`shift::PreflightError`] when the TrafficShift CRD is missing or the API cannot be reached.
pub async fn run(
    client: ::kube::Client,
    namespace: Option<&str>,
    proxy_namespace: Option<&str>,
    metrics: std::sync::Arc<dyn scrape::ClusterMetrics>,
) -> Result<(), shift::PreflightError> {
    shift::preflight(&client).await?;
    let proxies = proxies::Proxies::new(client.clone(), proxy_namespace);
    tokio::join!(
        reconcile::run(client.clone(), namespace),
        shift::run(client, namespace, proxies, metrics)
    );
    Ok(())
}
