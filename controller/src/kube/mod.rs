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
//!
//! Not here yet: the Kubernetes workload driver and traffic setter, commands by annotation, leader
//! election (see docs/kubernetes.md).

pub mod crd;
pub mod reconcile;
pub mod trigger;

/// The annotation and label prefix of everything Crossfade reads or writes on Kubernetes objects.
pub const PREFIX: &str = "crossfade.dev/";

/// The field manager of every write Crossfade makes (server-side apply and patches).
pub const FIELD_MANAGER: &str = "crossfade";
