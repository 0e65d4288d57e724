//! Rollout records of older versions that name no target Deployment: neither `deployment`
//! (recorded since session 35) nor promotion words (`rollout.promotion`, which a controller of
//! this version writes at its first reconcile of a rollout). Such a record predates the rule that
//! a rollout acts only on its own target. Taking the live `spec.deployment` for its target, as
//! [`ShiftRecord::target`] does, is right only while the spec has not changed since the rollout
//! started. Before (session 36), after an edit of `spec.deployment` (made while the controller
//! was being upgraded) the rollout carried on as the same rollout on the newly named Deployment,
//! which it had never read: before promotion the template check rolled it back naming that
//! Deployment, and a promotion would have given it the new images while the traffic went to the
//! old one's pods.
//!
//! Here such a record is given its target before anything is done with it
//! ([`name_target`]): the spec's when the spec is the rollout's own generation; else the
//! Deployment the rollout's blue Service (`<name>-blue`) selects, which the rollout made from its
//! target's `spec.selector.matchLabels` at its start and which only a new rollout changes; else
//! none can be told, and the controller does nothing on the cluster for the TrafficShift until
//! it can ([`refuse`]: condition `Progressing=False`, reason [`TARGET_UNKNOWN`], and a Warning
//! Event saying how to name it). The commands of `crossfade promote|abort|... --kube`
//! (`kube/ops.rs`) take the same rule ([`name_older_target`]) for the Deployment they annotate,
//! and write nothing when it cannot tell (session 36: the live `spec.deployment`).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DynamicObject, ListParams};
use kube::runtime::controller::Action;
use kube::ResourceExt;

use super::{exec, invalid, Context, ShiftError};
#[cfg(doc)]
use crate::kube::store::ShiftRecord;
use crate::rollout::{Phase, Promotion};

/// Reason of `Progressing=False` (and of a Warning Event) for a TrafficShift whose rollout record,
/// written by an older version, names no target Deployment, and whose spec changed since the
/// rollout started so that the Deployment it acts on cannot be told ([`name_target`]).
pub const TARGET_UNKNOWN: &str = "TargetUnknown";

/// What [`name_older_target`] found for a TrafficShift's rollout record.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum OlderTarget {
    /// Nothing to name: no record, an ended rollout, or a record that names its target
    /// (`deployment`, or promotion words).
    Recorded,
    /// The record named no target; it now names this Deployment (in the object as read, not yet
    /// on the cluster).
    Named(String),
    /// The record names no target and none can be told: why, and how to name it, in the words of
    /// condition `Progressing=False` reason [`TARGET_UNKNOWN`].
    Unknown(String),
}

/// Names the target Deployment of the running rollout in `object`'s `status.rolloutState` (as
/// read from the API server) when the record names none and no promotion words either: the
/// record gets `deployment` ([`ShiftRecord::deployment`]), which every later step reads (the
/// rollout acts on it, and a spec naming another supersedes it) and the next status write keeps.
/// `object`'s own `spec.deployment` when the record is of `object`'s generation (the spec has not
/// changed since the rollout started) or the rollout has not started (`Pending`); else the only
/// Deployment of the namespace whose `spec.selector.matchLabels` are the selector of the
/// rollout's blue Service. Records that name their target, ended rollouts and objects without a
/// record are left as they are ([`OlderTarget::Recorded`]).
///
/// The one rule for the controller ([`name_target`]) and for the commands of
/// `crossfade promote|abort|... --kube` (`kube/ops.rs`), which annotate the Deployment it names.
///
/// # Errors
/// The API error when the Service `<name>-blue` cannot be read or the namespace's Deployments
/// cannot be listed (only for a record that names no target, of an earlier spec generation).
pub(crate) async fn name_older_target(
    client: &kube::Client,
    object: &mut DynamicObject,
) -> Result<OlderTarget, kube::Error> {
    let Some(record) = super::record_in(object) else {
        return Ok(OlderTarget::Recorded);
    };
    let named = record.deployment.is_some() || record.rollout.promotion != Promotion::Swap;
    if named || record.rollout.is_terminal() {
        return Ok(OlderTarget::Recorded);
    }
    let generation = object.metadata.generation.unwrap_or(1);
    let spec = object
        .data
        .pointer("/spec/deployment")
        .and_then(|d| d.as_str());
    let same_spec = record.generation == generation || record.rollout.phase == Phase::Pending;
    let target = match spec.filter(|_| same_spec) {
        Some(spec) => Ok(spec.to_owned()),
        None => selected_by_blue_service(client, object).await?,
    };
    match target {
        Ok(target) => {
            if let Some(state) = object.data.pointer_mut("/status/rolloutState") {
                state["deployment"] = serde_json::Value::String(target.clone());
            }
            Ok(OlderTarget::Named(target))
        }
        Err(why) => Ok(OlderTarget::Unknown(format!(
            "status.rolloutState was written by an older version of crossfade and does not name the deployment rollout {} acts on, and the spec changed since that rollout started (generation {}, now {generation}): {why}; nothing is done until it is named: set status.rolloutState.deployment to it (kubectl edit trafficshift {} -n {} --subresource=status)",
            record.rollout.id,
            record.generation,
            object.name_any(),
            object.namespace().unwrap_or_else(|| "default".into()),
        ))),
    }
}

/// [`name_older_target`] for the controller, before anything is done with a record read from
/// status: logs the target it names.
///
/// Returns `Some(why)` when no target can be told (no such Service, or not exactly one Deployment
/// selecting its pods): [`refuse`] says so.
///
/// # Errors
/// [`ShiftError::Read`] when the Service or the Deployments cannot be read.
pub(super) async fn name_target(
    ctx: &Context,
    object: &mut DynamicObject,
) -> Result<Option<String>, ShiftError> {
    let shift = invalid::key(object);
    let named = name_older_target(&ctx.client, object).await;
    match named.map_err(|source| ShiftError::Read {
        shift: shift.clone(),
        source,
    })? {
        OlderTarget::Recorded => Ok(None),
        OlderTarget::Named(target) => {
            tracing::info!(trafficshift = %shift, "status.rolloutState of an older version names no target deployment: it is {target}");
            Ok(None)
        }
        OlderTarget::Unknown(why) => Ok(Some(why)),
    }
}

/// The Deployment whose pods the rollout's blue Service (`<name>-blue`) selects: `Ok` with its
/// name when exactly one Deployment of the namespace has the Service's selector as its
/// `matchLabels`, else `Err` with why not, in words.
async fn selected_by_blue_service(
    client: &kube::Client,
    object: &DynamicObject,
) -> Result<Result<String, String>, kube::Error> {
    let ns = object.namespace().unwrap_or_else(|| "default".into());
    let service_name = crate::driver::kube::service_name(
        &super::bare(object),
        crossfade_proxy::weight::Slot::Blue,
    );
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let service = services.get_opt(&service_name).await?;
    let selector = service.and_then(|s| s.spec).and_then(|s| s.selector);
    let Some(selector) = selector.filter(|s| !s.is_empty()) else {
        return Ok(Err(format!(
            "service {service_name}, which selects its target's pods, does not exist or selects nothing"
        )));
    };
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let listed = deployments.list(&ListParams::default()).await?;
    Ok(selected(&service_name, &selector, &listed.items))
}

/// Of `deployments`, the one whose `spec.selector.matchLabels` are `selector` (that of Service
/// `service`): `Ok` with its name when exactly one has them, else `Err` with why not, in words.
pub(super) fn selected(
    service: &str,
    selector: &BTreeMap<String, String>,
    deployments: &[Deployment],
) -> Result<String, String> {
    let selecting: Vec<String> = deployments
        .iter()
        .filter(|d| {
            let labels = d
                .spec
                .as_ref()
                .and_then(|s| s.selector.match_labels.as_ref());
            labels == Some(selector)
        })
        .map(ResourceExt::name_any)
        .collect();
    let labels: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let labels = labels.join(",");
    match selecting.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(format!(
            "service {service} selects {labels}, which is no deployment's selector"
        )),
        many => Err(format!(
            "service {service} selects {labels}, the selector of deployments {}",
            many.join(", ")
        )),
    }
}

/// A TrafficShift whose rollout's target cannot be told ([`name_target`] gave `why`): condition
/// `Progressing=False`, reason [`TARGET_UNKNOWN`], `why` as message, and a Warning Event, once
/// per spec generation and message; the rest of the status (the record, the weights) is kept,
/// and nothing is done on the cluster. Looked at again every [`exec::CONFLICT_POLL`] (and at
/// each change of the TrafficShift, such as the status edit that names the target).
///
/// # Errors
/// The status write's.
pub(super) async fn refuse(
    ctx: &Context,
    object: &DynamicObject,
    why: String,
) -> Result<Action, ShiftError> {
    let shift = match invalid::typed(object) {
        Ok(shift) => shift,
        Err(_) => match super::record_in(object) {
            Some(record) => super::of_record(object, &record),
            None => super::bare(object),
        },
    };
    let action = Action::requeue(exec::CONFLICT_POLL);
    exec::Exec::new(ctx, std::sync::Arc::new(shift))
        .not_started(TARGET_UNKNOWN, why, action)
        .await
}

/// [`refuse`] for a TrafficShift being deleted: its finalizer stays until the target is named
/// and the rollout has ended.
///
/// # Errors
/// [`ShiftError::Finalizing`] (looked at again within 2 s), or the status write's.
pub(super) async fn refuse_deleted(
    ctx: &Context,
    object: &DynamicObject,
    why: String,
) -> Result<Action, ShiftError> {
    refuse(ctx, object, why).await?;
    Err(ShiftError::Finalizing {
        shift: invalid::key(object),
        phase: "its target deployment not named",
    })
}
