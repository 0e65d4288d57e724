//! The Deployment reconciler: server-side applies the TrafficShift that a Deployment's annotations
//! ask for ([`super::trigger`]), and takes back images that another client set on a managed
//! Deployment, requesting them as a rollout instead ([`super::template`]).
//!
//! Every request applied and every refusal is published as a Kubernetes Event on the Deployment
//! (`RolloutRequested`, `InvalidAnnotation`), so `kubectl describe deploy/web` says what happened.
//!
//! Idempotent by construction: the desired TrafficShift is a pure function of the Deployment, applied
//! with one field manager, so a repeated annotation is a no-op write and a new value updates the
//! spec in place. It never deletes a TrafficShift: removing the annotation leaves the rollout to its
//! own course (an abort is a command, not an absence).

#[cfg(test)]
mod api_tests;

use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};

use super::backoff::Backoff;
use super::template::{observe, Images};
use super::trigger::{desired_shift, managed, TriggerError};
use super::FIELD_MANAGER;

/// Longest Event note the API accepts (1 kB); longer notes are cut.
const MAX_NOTE: usize = 1024;

/// What the reconciler needs: a client and an Event recorder.
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// Publishes Events as the `crossfade` controller.
    pub recorder: Recorder,
    /// Failed applies in a row, by Deployment `namespace/name`.
    backoff: Backoff,
}

// === impl Context ===

impl Context {
    /// A context whose Events are reported by controller `crossfade`.
    pub fn new(client: Client) -> Context {
        let recorder = Recorder::new(client.clone(), FIELD_MANAGER.into());
        Context {
            client,
            recorder,
            backoff: Backoff::default(),
        }
    }

    /// Publishes an Event about `deploy`; a failure to publish is logged, never fatal.
    async fn publish(&self, deploy: &Deployment, type_: EventType, reason: &str, note: String) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(cut(note, MAX_NOTE)),
            action: "Reconcile".into(),
            secondary: None,
        };
        // With the resourceVersion in the reference (as client-go's GetReference has it) a new
        // annotation value gets its own Event; without it kube's Recorder folds every later one
        // into a series of the first, which keeps the first note.
        let mut regarding = deploy.object_ref(&());
        regarding.resource_version = deploy.metadata.resource_version.clone();
        if let Err(e) = self.recorder.publish(&event, &regarding).await {
            tracing::warn!(deployment = %deploy.name_any(), reason, error = %crate::kube::api_error_words(&e), "publish event");
        }
    }
}

/// `text` cut to at most `max` bytes on a character boundary.
fn cut(mut text: String, max: usize) -> String {
    if text.len() > max {
        let end = (0..=max)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        text.truncate(end);
    }
    text
}

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// Recording or reverting the Deployment's images failed (a 409 when it changed meanwhile);
    /// retried after a delay.
    #[error(
        "patch deployment {deployment}: {}",
        crate::kube::api_error_words(source)
    )]
    Patch {
        /// `namespace/name`.
        deployment: String,
        /// The API error.
        source: kube::Error,
    },
    /// The Deployment's annotations are invalid; retried when the Deployment changes.
    #[error(transparent)]
    Trigger(#[from] TriggerError),
    /// The reconcile did not finish within [`super::shift::RECONCILE_TIMEOUT`] (an API request
    /// that never answered) and was dropped; retried after a delay.
    #[error("deployment {deployment}: reconcile did not finish within {}s (an API request that never answered); dropped", super::shift::RECONCILE_TIMEOUT.as_secs())]
    TimedOut {
        /// `namespace/name`.
        deployment: String,
    },
    /// Applying the TrafficShift failed; retried after a delay.
    #[error(
        "apply trafficshift {namespace}/{name}: {}",
        crate::kube::api_error_words(source)
    )]
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
/// Publishes `RolloutRequested` when the TrafficShift is new or its spec changed (with a Warning
/// `NoContainerPort` when the pod template declares no container port), and
/// `InvalidAnnotation` (a Warning naming each bad annotation) when the annotations are refused.
///
/// # Errors
/// [`ReconcileError::Trigger`] for bad annotations, [`ReconcileError::Apply`] when the API refuses.
pub async fn reconcile(
    deploy: Arc<Deployment>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let desired = desired_shift(&deploy);
    // Images changed by someone else are taken back and requested by annotation first; bad
    // annotations are reported before anything is changed.
    if desired.is_ok() && managed(&deploy) {
        if let Some(action) = intercept(&deploy, &ctx).await? {
            return Ok(action);
        }
    }
    let shift = match desired {
        Ok(Some(shift)) => shift,
        Ok(None) => return Ok(Action::await_change()),
        Err(e) => {
            ctx.publish(
                &deploy,
                EventType::Warning,
                "InvalidAnnotation",
                e.to_string(),
            )
            .await;
            return Err(e.into());
        }
    };
    let namespace = shift.namespace().unwrap_or_else(|| "default".into());
    let name = shift.name_any();
    // The answer is read untyped: a TrafficShift whose policy was edited into one that does not
    // decode (the fields this apply does not own stay) still takes the images asked for.
    let api = super::shift::invalid::api(ctx.client.clone(), &namespace);
    let apply_error = |source| ReconcileError::Apply {
        namespace: namespace.clone(),
        name: name.clone(),
        source,
    };
    // Read as a dynamic object: one that does not decode (hand-edited) is overwritten by the
    // apply rather than failing it, and counts as a changed spec.
    let before = super::shift::invalid::api(ctx.client.clone(), &namespace)
        .get_opt(&name)
        .await
        .map_err(apply_error)?
        .and_then(|b| super::shift::invalid::typed(&b).ok());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(&name, &params, &Patch::Apply(&shift))
        .await
        .map_err(apply_error)?;
    ctx.backoff.succeeded(&key(&deploy));
    if before.map(|b| b.spec) != Some(shift.spec.clone()) {
        let note = format!("trafficshift {name}: {}", shift.spec.images_text());
        ctx.publish(&deploy, EventType::Normal, "RolloutRequested", note)
            .await;
        // A rollout the proxies could never route: said now, not after the progress deadline.
        if let Some(warning) = crate::driver::kube::no_container_port(&deploy) {
            ctx.publish(&deploy, EventType::Warning, "NoContainerPort", warning)
                .await;
        }
    }
    Ok(Action::await_change())
}

/// [`reconcile`], dropped after [`super::shift::RECONCILE_TIMEOUT`] (every write it makes is
/// idempotent, so a dropped one is redone by the retry).
///
/// # Errors
/// As [`reconcile`], and [`ReconcileError::TimedOut`].
pub async fn reconcile_bounded(
    deploy: Arc<Deployment>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let deployment = key(&deploy);
    // On the heap, as the TrafficShift reconcile (`shift::reconcile_finalized`): moved by value
    // into `timeout`, a large state machine costs the polling thread's stack.
    tokio::time::timeout(
        super::shift::RECONCILE_TIMEOUT,
        Box::pin(reconcile(deploy, ctx)),
    )
    .await
    .unwrap_or(Err(ReconcileError::TimedOut { deployment }))
}

/// Compares the Deployment's template images with Crossfade's record ([`super::template`]): on
/// first sight records them; when someone else changed them, reverts them and turns the new
/// images into the rollout annotations, publishing `ImageChangeIntercepted`. `Some(action)` when
/// it patched the Deployment (the patch brings the next reconcile).
async fn intercept(deploy: &Deployment, ctx: &Context) -> Result<Option<Action>, ReconcileError> {
    let namespace = deploy.namespace().unwrap_or_else(|| "default".into());
    let name = deploy.name_any();
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    let patch_error = |source| ReconcileError::Patch {
        deployment: format!("{namespace}/{name}"),
        source,
    };
    match observe(deploy) {
        Images::Recorded => Ok(None),
        Images::FirstSight { patch } => {
            api.patch(&name, &params, &Patch::Merge(&patch))
                .await
                .map_err(patch_error)?;
            Ok(Some(Action::await_change()))
        }
        Images::Changed { patch, changes } => {
            api.patch(&name, &params, &Patch::Strategic(&patch))
                .await
                .map_err(patch_error)?;
            let what: Vec<String> = changes
                .iter()
                .map(|(c, (old, new))| format!("{c}={new} (serving {old})"))
                .collect();
            let note = format!(
                "the pod template's images were changed by another client: {}; the deployment keeps serving the images crossfade recorded, and the new ones are rolled out through a preview (annotation set)",
                what.join(", ")
            );
            ctx.publish(deploy, EventType::Normal, "ImageChangeIntercepted", note)
                .await;
            Ok(Some(Action::await_change()))
        }
    }
}

/// Bad annotations wait for the Deployment to change; API errors retry with exponential backoff
/// ([`super::backoff`]: 5 s doubling up to 5 min, reset by a successful apply).
pub fn error_policy(deploy: Arc<Deployment>, err: &ReconcileError, ctx: Arc<Context>) -> Action {
    tracing::warn!(deployment = %deploy.name_any(), error = %err, "reconcile failed");
    match err {
        ReconcileError::Trigger(_) => Action::await_change(),
        ReconcileError::Apply { .. }
        | ReconcileError::Patch { .. }
        | ReconcileError::TimedOut { .. } => Action::requeue(ctx.backoff.failed(&key(&deploy))),
    }
}

fn key(deploy: &Deployment) -> String {
    crate::driver::kube::key(deploy)
}

/// Runs the Deployment controller in `namespace` (all namespaces when `None`) until the watch
/// streams end, which they do not on their own: drop or abort the future to stop it. Its Events
/// name `instance` as reporting instance when given.
pub async fn run(client: Client, namespace: Option<&str>, instance: Option<&str>) {
    // TrafficShifts as dynamic objects: only their owner references matter here, and one that
    // does not decode must not fail the watch's list (see `shift::invalid`).
    let resource = super::shift::invalid::resource();
    let (deploys, shifts): (Api<Deployment>, Api<DynamicObject>) = match namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced_with(client.clone(), ns, &resource),
        ),
        None => (
            Api::all(client.clone()),
            Api::all_with(client.clone(), &resource),
        ),
    };
    let mut ctx = Context::new(client);
    if let Some(instance) = instance {
        ctx.recorder = Recorder::new(ctx.client.clone(), super::shift::reporter(instance));
    }
    let ctx = Arc::new(ctx);
    Controller::new(deploys, watcher::Config::default())
        .owns_with(shifts, resource, watcher::Config::default())
        .run(reconcile_bounded, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile loop");
            }
        })
        .await;
}
