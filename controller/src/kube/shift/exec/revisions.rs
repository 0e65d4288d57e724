//! The revisions (images and digests) of a TrafficShift's backends, read from their pods
//! ([`crate::kube::revision`]) at the end of a reconcile, at most every [`REFRESH`] unless the
//! target Deployment or the rollout's phase changed; shown in status and in
//! `crossfade_backend_info`. Reading them never fails a reconcile: an API error is logged and the
//! last revisions stay.
//!
//! The same list of the preview's pods shows whether it crash-loops
//! ([`crate::kube::revision::crash_looping`], case C09): a Deployment whose pods keep exiting still
//! shows replicas becoming ready between the crashes, which the preview's availability alone would
//! read as progress (argo-rollouts#3765); the shift controller rolls such a preview back.

use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;

use super::Exec;
use crate::driver::kube::{blue_selector, green_selector, preview_name};
use crate::kube::crd::{RevisionStatus, TrafficShiftStatus};
use crate::kube::revision::{crash_looping, list_pods, revision, REFRESH};
use crate::kube::shift::machine::Machine;
use crate::rollout::Phase;

/// The backends' revisions as last read, and what they were read for.
#[derive(Clone, Debug)]
pub(in crate::kube::shift) struct Observed {
    key: Key,
    at: tokio::time::Instant,
    active: Option<RevisionStatus>,
    preview: Option<RevisionStatus>,
}

/// What, when it changes, makes the pods worth listing again before [`REFRESH`] has passed.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Key {
    /// The target Deployment's resourceVersion: its status moves at every step of its rolling
    /// updates (at promotion, or anyone's), and its template at every image change.
    target_version: Option<String>,
    /// The rollout's phase: the preview's pods are up at `PreviewReady`, gone at the end.
    phase: Phase,
}

// === impl Exec ===

impl Exec<'_> {
    /// Lists the backends' pods when due (see the module docs) and keeps their revisions in `m`.
    /// Needs the target Deployment read this reconcile; does nothing without it. Returns how the
    /// preview crash-loops when its pods were listed now and one of them does.
    pub(super) async fn observe_revisions(&mut self, m: &mut Machine) -> Option<String> {
        let target = self.target.clone()?;
        let key = Key {
            target_version: target.metadata.resource_version.clone(),
            phase: m.record.rollout.phase,
        };
        let fresh = m
            .revisions
            .as_ref()
            .is_some_and(|o| o.key == key && o.at.elapsed() < REFRESH);
        if fresh {
            return None;
        }
        let previous = m.revisions.take();
        let active = self
            .read_active(&target)
            .await
            .map(|r| r.map(|(status, _)| status));
        let (preview, crash) = match preview_exists(m) {
            true => match self.read_preview(m).await {
                Ok((status, crash)) => (Ok(Some(status)), crash),
                Err(()) => (Err(()), None),
            },
            false => (Ok(None), None),
        };
        m.revisions = Some(Observed {
            key,
            at: tokio::time::Instant::now(),
            active: active.unwrap_or_else(|()| previous.as_ref().and_then(|p| p.active.clone())),
            preview: preview.unwrap_or_else(|()| previous.and_then(|p| p.preview)),
        });
        crash
    }

    async fn read_active(
        &self,
        target: &Deployment,
    ) -> Result<Option<(RevisionStatus, Option<String>)>, ()> {
        let Ok(selector) = blue_selector(target) else {
            return Ok(None); // no matchLabels: no Service selects the target's pods either
        };
        let template = self.target_images.clone().unwrap_or_default();
        let name = &self.shift.spec.deployment;
        self.read(name, &template, &selector).await.map(Some)
    }

    async fn read_preview(&self, m: &Machine) -> Result<(RevisionStatus, Option<String>), ()> {
        let template = self.preview_images(m);
        let selector = green_selector(&self.shift);
        let name = preview_name(&self.shift);
        self.read(&name, &template, &selector).await
    }

    /// One backend's revision from the pods `selector` selects, and how they crash-loop if they
    /// do ([`crash_looping`]); `Err` (logged) when they cannot be listed. Unreadable `imageID`s
    /// are logged and left out.
    async fn read(
        &self,
        deployment: &str,
        template: &[(String, String)],
        selector: &std::collections::BTreeMap<String, String>,
    ) -> Result<(RevisionStatus, Option<String>), ()> {
        let ns = self.shift.namespace().unwrap_or_else(|| "default".into());
        let shift = crate::driver::kube::key(&*self.shift);
        let pods = match list_pods(&self.ctx.client, &ns, selector).await {
            Ok(pods) => pods,
            Err(e) => {
                tracing::warn!(trafficshift = %shift, deployment, error = %crate::kube::api_error_words(&e), "list the backend's pods for their image digests");
                return Err(());
            }
        };
        let (status, unreadable) = revision(deployment, template, &pods);
        for u in unreadable {
            tracing::warn!(trafficshift = %shift, pod = %u.pod, container = %u.container, "status.containerStatuses[].imageID ignored: {}", u.error);
        }
        Ok((status, crash_looping(&pods)))
    }
}

/// Whether the preview Deployment exists in this phase (as `status.previewDeployment` says).
fn preview_exists(m: &Machine) -> bool {
    let r = &m.record.rollout;
    !r.is_terminal() && r.phase != Phase::Pending
}

/// Puts the revisions last read (if any) into `status`: the preview's only while
/// `status.previewDeployment` is set. Revisions not read keep what `status` had.
pub(super) fn with_revisions(status: &mut TrafficShiftStatus, observed: Option<&Observed>) {
    if let Some(o) = observed {
        if o.active.is_some() {
            status.active_revision.clone_from(&o.active);
        }
        if o.preview.is_some() {
            status.preview_revision.clone_from(&o.preview);
        }
    }
    if status.preview_deployment.is_none() {
        status.preview_revision = None;
    }
}

/// The preview's revision for the metric: only for the preview of this phase.
pub(super) fn active_and_preview(
    observed: Option<&Observed>,
) -> (Option<&RevisionStatus>, Option<&RevisionStatus>) {
    match observed {
        Some(o) => (o.active.as_ref(), o.preview.as_ref()),
        None => (None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(deployment: &str) -> RevisionStatus {
        RevisionStatus {
            deployment: deployment.into(),
            pods: 1,
            ..RevisionStatus::default()
        }
    }

    fn observed(active: Option<&str>, preview: Option<&str>) -> Observed {
        Observed {
            key: Key {
                target_version: Some("7".into()),
                phase: Phase::Progressing,
            },
            at: tokio::time::Instant::now(),
            active: active.map(rev),
            preview: preview.map(rev),
        }
    }

    #[test]
    fn revisions_read_replace_those_shown_and_unread_ones_stay() {
        let mut status = TrafficShiftStatus {
            preview_deployment: Some("web-green".into()),
            active_revision: Some(rev("old")),
            preview_revision: Some(rev("old-green")),
            ..TrafficShiftStatus::default()
        };
        with_revisions(&mut status, Some(&observed(Some("web"), None)));
        assert_eq!(status.active_revision, Some(rev("web")));
        assert_eq!(
            status.preview_revision,
            Some(rev("old-green")),
            "not read: kept"
        );
        with_revisions(&mut status, None);
        assert_eq!(status.active_revision, Some(rev("web")));
    }

    #[test]
    fn without_a_preview_deployment_there_is_no_preview_revision() {
        let mut status = TrafficShiftStatus {
            preview_revision: Some(rev("web-green")),
            ..TrafficShiftStatus::default()
        };
        with_revisions(&mut status, Some(&observed(Some("web"), Some("web-green"))));
        assert_eq!(status.preview_revision, None);
        assert_eq!(status.active_revision, Some(rev("web")));
    }
}
