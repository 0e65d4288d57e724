//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several controller replicas
//! exactly one acts at a time (the rules of client-go's `leaderelection` package, the one
//! kube-controller-manager uses).
//!
//! - **Acquire.** A follower reads the Lease every `retry` period. It takes the Lease (a PUT with
//!   the `resourceVersion` it read, so that of two contenders one gets 409 Conflict) when it has no
//!   holder, or when the holder has not renewed it for `leaseDurationSeconds` **as measured on
//!   the follower's own clock since it last saw the Lease change** (client-go's observed time; no
//!   trust in the other node's clock). A new follower therefore waits a full duration before it
//!   replaces a holder that died.
//! - **Lead.** The leader renews (`renewTime`) every `retry` period. It counts as leader until
//!   `renew_deadline` after the start of its last successful renewal (by its own clock), and
//!   `renew_deadline` < `duration` (10 s against 15 s by default): when renewals fail (API down, a
//!   partition, a 409 from someone who took it) the work future is **dropped** at that instant, at
//!   least `duration - renew_deadline` before any follower may take the Lease over. Dropping it
//!   cancels every reconcile and watch; the next leader resumes from `status.rolloutState`.
//! - **Release.** On shutdown a leader empties `holderIdentity`, so a follower takes over at its
//!   next look rather than after a full duration.
//!
//! Why not a crate: `kube-lease-manager` 0.13 (kube 5) keeps reporting leadership while renewals
//! fail (its watch loop logs the error and backs off without telling the receiver), so a leader
//! cut off from the API would keep acting after its Lease expired and another replica took over.

#[cfg(test)]
mod tests;

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::Client;
use tokio::time::Instant;

/// The Lease's name by default.
pub const DEFAULT_LEASE: &str = "crossfade-controller";

/// Where and how to elect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Election {
    /// The Lease's namespace.
    pub namespace: String,
    /// The Lease's name ([`DEFAULT_LEASE`]).
    pub name: String,
    /// This replica's identity, written to `holderIdentity` (the pod name in a cluster).
    pub identity: String,
    /// `leaseDurationSeconds`: how long followers wait for a renewal (default 15 s; whole seconds,
    /// at least 1).
    pub duration: Duration,
}

/// The timings derived from the lease duration, as client-go's defaults (15 s / 10 s / 2 s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Timing {
    duration: Duration,
    renew_deadline: Duration,
    retry: Duration,
}

impl Election {
    fn timing(&self) -> Timing {
        let duration = self.duration.max(Duration::from_secs(1));
        Timing {
            duration,
            renew_deadline: duration * 2 / 3,
            retry: (duration * 2 / 15).max(Duration::from_millis(100)),
        }
    }
}

/// What a follower remembers of the Lease: what it last saw and when (its own clock).
struct Observed {
    holder: Option<String>,
    renew: Option<MicroTime>,
    at: Instant,
}

/// Runs `work()` only while this replica holds the Lease: it waits to acquire it, runs the work,
/// drops the work when leadership lapses (see the module docs), and waits to acquire it again.
/// Returns when `work` returns or `shutdown` completes; a leader then releases the Lease.
pub async fn run_elected<W, F>(
    client: Client,
    election: Election,
    mut work: W,
    shutdown: impl Future<Output = ()>,
) where
    W: FnMut() -> F,
    F: Future<Output = ()>,
{
    let api: Api<Lease> = Api::namespaced(client, &election.namespace);
    let timing = election.timing();
    tokio::pin!(shutdown);
    let mut observed: Option<Observed> = None;
    loop {
        let until = tokio::select! {
            until = acquire(&api, &election, timing, &mut observed) => until,
            () = &mut shutdown => return,
        };
        tracing::info!(lease = %election.name, identity = %election.identity, "leading: this replica acts");
        let outcome = tokio::select! {
            () = work() => Some("work ended"),
            () = keep(&api, &election, timing, until) => None,
            () = &mut shutdown => Some("shutdown"),
        };
        if let Some(why) = outcome {
            release(&api, &election).await;
            tracing::info!(lease = %election.name, identity = %election.identity, "{why}: lease released");
            return;
        }
        tracing::warn!(lease = %election.name, identity = %election.identity,
            "leadership lost or not renewed in time: stopped acting; following");
        observed = None;
    }
}

/// The holder of the Lease `name` in `namespace` while it looks live: a `holderIdentity` whose
/// `renewTime` is less than `leaseDurationSeconds` ago by this machine's clock (15 s when the
/// Lease does not say). For `crossfade controller --kube --no-leader-election`, which warns when
/// an elected controller acts on the same cluster (trial 10, K20): a hint, not an election (the
/// two machines' clocks may differ). `None` for no Lease, an empty holder, or an expired one.
///
/// # Errors
/// The API error of the read (a missing Lease is `Ok(None)`).
pub async fn live_holder(
    client: Client,
    namespace: &str,
    name: &str,
) -> Result<Option<String>, kube::Error> {
    let api: Api<Lease> = Api::namespaced(client, namespace);
    let lease = api.get_opt(name).await?;
    Ok(lease.and_then(|l| holder_if_live(&l, k8s_openapi::jiff::Timestamp::now())))
}

/// The Lease's holder if it renewed within its duration before `now` ([`live_holder`]).
fn holder_if_live(lease: &Lease, now: k8s_openapi::jiff::Timestamp) -> Option<String> {
    let spec = lease.spec.as_ref()?;
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty())?;
    let renewed = spec.renew_time.as_ref()?.0;
    let seconds = spec.lease_duration_seconds.unwrap_or(15).max(1);
    let expires = renewed.checked_add(k8s_openapi::jiff::SignedDuration::from_secs(i64::from(
        seconds,
    )));
    expires.ok().filter(|e| *e > now).map(|_| holder)
}

/// Waits until this replica holds the Lease; returns until when it counts as leader.
async fn acquire(
    api: &Api<Lease>,
    election: &Election,
    timing: Timing,
    observed: &mut Option<Observed>,
) -> Instant {
    loop {
        let start = Instant::now();
        match try_acquire(api, election, timing, observed).await {
            Ok(true) => return crossfade_proxy::duration::later(start, timing.renew_deadline),
            Ok(false) => {}
            Err(e) => {
                tracing::debug!(lease = %election.name, error = %crate::kube::api_error_words(&e), "acquire")
            }
        }
        tokio::time::sleep(timing.retry).await;
    }
}

/// One attempt: `Ok(true)` when this replica now holds the Lease.
async fn try_acquire(
    api: &Api<Lease>,
    election: &Election,
    timing: Timing,
    observed: &mut Option<Observed>,
) -> Result<bool, kube::Error> {
    let Some(lease) = api.get_opt(&election.name).await? else {
        let lease = lease_for(election, None, 0);
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.is_already_exists() || s.is_conflict() => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
    let now = Instant::now();
    let changed = observed
        .as_ref()
        .is_none_or(|o| o.holder != holder || o.renew != spec.renew_time);
    if changed {
        *observed = Some(Observed {
            holder: holder.clone(),
            renew: spec.renew_time.clone(),
            at: now,
        });
    }
    let seen_at = observed.as_ref().map_or(now, |o| o.at);
    let duration = spec
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map_or(timing.duration, Duration::from_secs);
    let free = match &holder {
        None => true,
        Some(h) if *h == election.identity => true,
        Some(_) => now.duration_since(seen_at) >= duration,
    };
    if !free {
        return Ok(false);
    }
    let transitions = spec.lease_transitions.unwrap_or(0)
        + i32::from(holder.as_deref() != Some(&election.identity));
    let mut next = lease_for(
        election,
        lease.metadata.resource_version.clone(),
        transitions,
    );
    if let (Some(next), true) = (
        &mut next.spec,
        holder.as_deref() == Some(&election.identity),
    ) {
        next.acquire_time = spec.acquire_time; // still the same term
    }
    replace(api, election, &next).await
}

/// Replaces the Lease with `next`, guarded by its `resourceVersion`: `Ok(false)` on 409 Conflict
/// (another replica wrote it since it was read), API errors otherwise.
async fn replace(api: &Api<Lease>, election: &Election, next: &Lease) -> Result<bool, kube::Error> {
    match api
        .replace(&election.name, &PostParams::default(), next)
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.is_conflict() => Ok(false),
        Err(e) => Err(e),
    }
}

/// Renews the Lease every retry period; returns when leadership lapses: a renewal refused (409:
/// someone else wrote it) or the Lease no longer ours, or no successful renewal by the deadline.
async fn keep(api: &Api<Lease>, election: &Election, timing: Timing, mut until: Instant) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(timing.retry) => {}
            () = tokio::time::sleep_until(until) => return,
        }
        let start = Instant::now();
        match tokio::time::timeout_at(until, renew(api, election)).await {
            Ok(Ok(true)) => until = crossfade_proxy::duration::later(start, timing.renew_deadline),
            Ok(Ok(false)) => return,
            Ok(Err(e)) => {
                tracing::warn!(lease = %election.name, error = %crate::kube::api_error_words(&e), "renew failed")
            }
            Err(_) => return, // the deadline passed during the renewal
        }
    }
}

/// `Ok(false)` when the Lease is someone else's now.
async fn renew(api: &Api<Lease>, election: &Election) -> Result<bool, kube::Error> {
    let lease = api.get(&election.name).await?;
    let mut spec = lease.spec.unwrap_or_default();
    if spec.holder_identity.as_deref() != Some(&election.identity) {
        return Ok(false);
    }
    spec.renew_time = Some(now());
    let next = Lease {
        metadata: ObjectMeta {
            name: Some(election.name.clone()),
            namespace: Some(election.namespace.clone()),
            resource_version: lease.metadata.resource_version,
            ..ObjectMeta::default()
        },
        spec: Some(spec),
    };
    replace(api, election, &next).await
}

/// Empties `holderIdentity` if this replica holds the Lease (best effort, bounded to 2 s).
async fn release(api: &Api<Lease>, election: &Election) {
    let attempt = async {
        let lease = api.get(&election.name).await?;
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(&election.identity) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now());
        let next = Lease {
            metadata: lease.metadata,
            spec: Some(spec),
        };
        api.replace(&election.name, &PostParams::default(), &next)
            .await
            .map(drop)
    };
    match tokio::time::timeout(Duration::from_secs(2), attempt).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(lease = %election.name, error = %crate::kube::api_error_words(&e), "release lease")
        }
        Err(_) => tracing::warn!(lease = %election.name, "release lease: timed out"),
    }
}

/// The Lease held by `election.identity` from now.
fn lease_for(election: &Election, resource_version: Option<String>, transitions: i32) -> Lease {
    let seconds = i32::try_from(election.timing().duration.as_secs()).unwrap_or(i32::MAX);
    let now = now(); // one instant for both, as client-go: a term starts when it is renewed
    Lease {
        metadata: ObjectMeta {
            name: Some(election.name.clone()),
            namespace: Some(election.namespace.clone()),
            resource_version,
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(election.identity.clone()),
            lease_duration_seconds: Some(seconds),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }),
    }
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}
