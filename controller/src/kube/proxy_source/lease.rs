//! The Lease keeper of `crossfade proxy --kube` (the shape is [`crate::kube::proxy_lease`]).

use std::collections::BTreeMap;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use tokio::sync::watch;

use super::metrics::KubeSourceMetrics;
use super::LEASE_FIELD_MANAGER;
use crate::kube::proxy_lease::{lease_name, ProxyLease, RENEW_INTERVAL};

/// What a replica reports in its Lease besides its identity: the applied generations and the
/// refused routes, as the apply loop last computed them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Reported {
    /// Route → the `status.weights.generation` in the table.
    pub(super) applied: BTreeMap<String, u64>,
    /// Route → `metadata.uid` of the TrafficShift that generation is of.
    pub(super) applied_uid: BTreeMap<String, String>,
    /// Route → why its TrafficShift is refused (the translation error).
    pub(super) refused: BTreeMap<String, String>,
}

impl From<BTreeMap<String, u64>> for Reported {
    fn from(applied: BTreeMap<String, u64>) -> Reported {
        Reported {
            applied,
            applied_uid: BTreeMap::new(),
            refused: BTreeMap::new(),
        }
    }
}

/// Keeps the Lease: applies it once the first route set is in the table, then every
/// [`RENEW_INTERVAL`] and at once when the applied generations or the refused routes change; returns when `stop` is set,
/// never in the middle of a write. A write is given up after [`RENEW_INTERVAL`] without an answer
/// (a failed renewal), so `stop` waits at most that long.
///
/// Server-side apply (rather than get + replace): one request both creates the Lease and renews it,
/// needs no read and no `resourceVersion`, so it cannot hit a 409 and costs one round trip per
/// renewal. Each replica is the only writer of its own Lease, so `force` only takes over fields a
/// previous manager (a different field manager from an older version, or `kubectl`) left behind.
pub(super) async fn keep_lease(
    leases: Api<Lease>,
    namespace: String,
    mut lease: ProxyLease,
    mut applied: watch::Receiver<Reported>,
    mut synced: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
    metrics: KubeSourceMetrics,
) {
    tokio::select! {
        _ = synced.wait_for(|s| *s) => {}
        _ = stop.wait_for(|s| *s) => return,
    }
    let name = lease_name(&lease.replica);
    let params = PatchParams::apply(LEASE_FIELD_MANAGER).force();
    let mut failing = false;
    loop {
        let reported = applied.borrow_and_update().clone();
        lease.applied = reported.applied;
        lease.applied_uid = reported.applied_uid;
        lease.refused = reported.refused;
        let body = lease.to_lease(&namespace, Timestamp::now());
        // A write still unanswered when the next one is due is given up (and counted as failed):
        // the keeper stays on its beat, and `stop` is never held up longer than that.
        let patch = Patch::Apply(&body);
        let write = leases.patch(&name, &params, &patch);
        let result = match tokio::time::timeout(RENEW_INTERVAL, write).await {
            Ok(written) => written
                .map(drop)
                .map_err(|e| crate::kube::api_error_words(&e)),
            Err(_) => Err(format!("no answer within {}s", RENEW_INTERVAL.as_secs())),
        };
        metrics.renewal(result.is_ok());
        match result {
            Ok(_) if failing => {
                failing = false;
                tracing::info!(lease = %name, "lease renewed again");
            }
            Ok(_) => tracing::debug!(lease = %name, applied = ?lease.applied, "lease renewed"),
            Err(e) => {
                // Logged on the first failure of a run: the controller stops counting this replica
                // once the Lease expires, which is the intended effect of a proxy it cannot hear.
                if !failing {
                    tracing::warn!(lease = %name, "cannot renew the lease {namespace}/{name}: {e}");
                }
                failing = true;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(RENEW_INTERVAL) => {}
            r = applied.changed() => if r.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

#[cfg(test)]
mod tests;
