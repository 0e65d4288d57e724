//! Stale proxy Leases deleted by the controller (since session 41).
//!
//! Each `crossfade proxy --kube` replica writes a Lease ([`super::proxy_lease`]) and deletes it
//! on SIGTERM; a replica killed hard (SIGKILL, a lost node) leaves it behind. Such a Lease is
//! already ignored as not live ([`super::proxies`]), but they accumulate. The leader lists the
//! Leases labelled [`PROXY_SELECTOR`] in the namespaces it reads proxy Leases from, once at the
//! start of its term and then every [`StaleLeases::every`], and deletes each that expired more
//! than [`StaleLeases::after`] ago (expiry: `renewTime + leaseDurationSeconds`, see
//! [`expired_at`]). Every delete carries the `uid` and `resourceVersion` it was judged on as
//! preconditions: a Lease renewed (or replaced) meanwhile answers 409 Conflict and stays.
//!
//! Why 1 hour by default: a replica renews every 5 s on a 15 s duration, so an hour past expiry
//! is some 700 missed renewals; a replica only cut off from the API server that long, whose Lease
//! goes, writes it again by server-side apply at its next renewal. An hour also leaves a dead
//! replica's Lease to look at (`kubectl get leases -l crossfade.dev/proxy=true`) after an incident.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, ListParams, Preconditions};
use kube::{Client, ResourceExt};

use super::proxies::PROXY_SELECTOR;
use super::proxy_lease::LEASE_DURATION_SECONDS;

/// How long past its expiry a proxy Lease is kept by default: 1 hour (module docs: why).
pub const STALE_AFTER: Duration = Duration::from_secs(3600);

/// How often the leader looks for stale proxy Leases by default: every 10 minutes.
pub const SWEEP_EVERY: Duration = Duration::from_secs(600);

/// When stale proxy Leases are deleted: [`STALE_AFTER`] past their expiry, looked for every
/// [`SWEEP_EVERY`] by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StaleLeases {
    /// How long past `renewTime + leaseDurationSeconds` a proxy Lease is kept.
    pub after: Duration,
    /// How often the leader lists the proxy Leases to find them (at most one list per namespace
    /// per period).
    pub every: Duration,
}

impl Default for StaleLeases {
    fn default() -> StaleLeases {
        StaleLeases {
            after: STALE_AFTER,
            every: SWEEP_EVERY,
        }
    }
}

/// When `lease` expired, or expires: `spec.renewTime` (else `spec.acquireTime`, else
/// `metadata.creationTimestamp`) plus `spec.leaseDurationSeconds` (else
/// [`LEASE_DURATION_SECONDS`]). `None` when it has none of the three times.
pub fn expired_at(lease: &Lease) -> Option<Timestamp> {
    let spec = lease.spec.as_ref();
    let since = spec
        .and_then(|s| s.renew_time.as_ref().or(s.acquire_time.as_ref()))
        .map(|t| t.0)
        .or_else(|| lease.metadata.creation_timestamp.as_ref().map(|t| t.0))?;
    let seconds = spec
        .and_then(|s| s.lease_duration_seconds)
        .unwrap_or(LEASE_DURATION_SECONDS);
    since
        .checked_add(SignedDuration::from_secs(i64::from(seconds)))
        .ok()
}

/// Whether `lease` expired more than `after` before `now` ([`expired_at`]); a Lease without any
/// time is not judged stale.
pub fn is_stale(lease: &Lease, now: Timestamp, after: Duration) -> bool {
    let after = SignedDuration::try_from(after).unwrap_or(SignedDuration::MAX);
    expired_at(lease)
        .and_then(|t| t.checked_add(after).ok())
        .is_some_and(|until| until < now)
}

/// Deletes the stale proxy Leases every `settings.every`, the first time at once; runs until
/// dropped. `lists` are the Lease APIs of the namespaces read ([`super::proxies::Proxies::apis`]).
pub async fn run(client: Client, lists: Vec<Api<Lease>>, settings: StaleLeases) {
    let mut tick = tokio::time::interval(settings.every.max(Duration::from_secs(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        sweep(&client, &lists, settings.after).await;
    }
}

/// One pass: lists the Leases labelled [`PROXY_SELECTOR`] of each of `lists` and deletes those
/// stale `after` their expiry, each on the precondition of its `uid` and `resourceVersion`.
/// Returns how many were deleted. Failures are logged (a list or delete refused, a Lease changed
/// meanwhile) and the pass goes on.
pub async fn sweep(client: &Client, lists: &[Api<Lease>], after: Duration) -> usize {
    let params = ListParams::default().labels(PROXY_SELECTOR);
    let mut deleted = 0;
    for api in lists {
        let leases = match api.list(&params).await {
            Ok(list) => list.items,
            Err(e) => {
                let words = super::api_error_words(&e);
                tracing::warn!("cannot list the proxy Leases to delete stale ones: {words}");
                continue;
            }
        };
        let now = Timestamp::now();
        for lease in leases.iter().filter(|l| is_stale(l, now, after)) {
            if delete(client, lease).await {
                deleted += 1;
            }
        }
    }
    deleted
}

/// Deletes `lease` if it is still the version judged (its `uid` and `resourceVersion` as
/// preconditions); whether it was deleted.
async fn delete(client: &Client, lease: &Lease) -> bool {
    let namespace = lease.namespace().unwrap_or_default();
    let name = format!("{namespace}/{}", lease.name_any());
    let api: Api<Lease> = Api::namespaced(client.clone(), &namespace);
    let params = DeleteParams::default().preconditions(Preconditions {
        uid: lease.uid(),
        resource_version: lease.resource_version(),
    });
    let expired = expired_at(lease).map_or_else(String::new, |t| t.to_string());
    match api.delete(&lease.name_any(), &params).await {
        Ok(_) => {
            tracing::info!(lease = %name, %expired, "deleted a stale proxy Lease");
            true
        }
        Err(kube::Error::Api(s)) if s.is_not_found() => false,
        Err(kube::Error::Api(s)) if s.code == 409 => {
            tracing::info!(lease = %name, "kept a proxy Lease that changed since it was listed");
            false
        }
        Err(e) => {
            let words = super::api_error_words(&e);
            tracing::warn!(lease = %name, "cannot delete a stale proxy Lease: {words}");
            false
        }
    }
}

#[cfg(test)]
mod tests;
