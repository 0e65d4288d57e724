//! Pure: the TrafficShift status that shows a rollout, with conditions per the Kubernetes API
//! conventions (positive polarity, `lastTransitionTime` kept while the status does not change).

use crossfade_proxy::weight::{Percent, FULL_BP};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::analysis::Outcome;
use crate::kube::crd::{
    bounded_message, set_condition, Condition, ConditionStatus, MirrorPolicy, Phase as StatusPhase,
    Share, TrafficShift, TrafficShiftStatus, VerdictOutcome, VerdictStatus, WeightsStatus,
};
use crate::kube::store::ShiftRecord;
use crate::rollout::Phase;

/// Condition `Progressing`: `True` while the rollout runs; `False` once it ended (reason
/// `Completed`, `RolledBack`, `Aborted`) or when the spec is invalid (`InvalidSpec`).
pub const PROGRESSING: &str = "Progressing";
/// Condition `Promoted`: `True` from the promotion on (`kubectl wait --for=condition=Promoted`).
pub const PROMOTED: &str = "Promoted";
/// Condition `Completed`: `True` once the target runs the new images and the preview is gone.
pub const COMPLETED: &str = "Completed";
/// Condition `AnnotationsValid`: `False` (reason `InvalidAnnotation`, the message naming each
/// annotation) while a command annotation on the target Deployment has a bad value.
pub const ANNOTATIONS_VALID: &str = "AnnotationsValid";

/// The status that shows `record` for a TrafficShift of `generation`, keeping the transition
/// times of `previous` conditions that did not change, and its revisions (the preview's only
/// while the preview exists; the reconcile puts fresher ones in). `preview` names the preview
/// Deployment.
pub fn status_of(
    record: &ShiftRecord,
    generation: i64,
    previous: Option<&TrafficShiftStatus>,
    preview: &str,
    now: &Time,
) -> TrafficShiftStatus {
    let r = &record.rollout;
    let mut conditions = previous.map(|p| p.conditions.clone()).unwrap_or_default();
    let reason = r.phase.as_str();
    let promoted = matches!(
        r.phase,
        Phase::Promoted | Phase::Retiring | Phase::Completed
    );
    let rows = [
        (PROGRESSING, !r.is_terminal()),
        (PROMOTED, promoted),
        (COMPLETED, r.phase == Phase::Completed),
    ];
    for (type_, holds) in rows {
        set_condition(
            &mut conditions,
            condition(type_, holds, reason, &r.message, generation, now),
        );
    }
    let annotations = match &record.annotation_problem {
        None => condition(
            ANNOTATIONS_VALID,
            true,
            "Valid",
            "no command annotation has a bad value",
            generation,
            now,
        ),
        Some(problem) => condition(
            ANNOTATIONS_VALID,
            false,
            "InvalidAnnotation",
            problem,
            generation,
            now,
        ),
    };
    set_condition(&mut conditions, annotations);
    let preview_alive = !r.is_terminal() && r.phase != Phase::Pending;
    // No step has started before the preview is ready: show none rather than step 1.
    let step = r.started_step().and_then(|s| u32::try_from(s).ok());
    TrafficShiftStatus {
        phase: Some(StatusPhase::from(r.phase)),
        step,
        step_progress: step.map(|s| step_progress(s, r.config.steps.len())),
        rollout_id: Some(r.id),
        weights: Some(weights(record)),
        conditions,
        observed_generation: Some(generation),
        // The target missing after promotion is what the rollout waits for (session 40).
        message: Some(
            record
                .target_missing
                .clone()
                .unwrap_or_else(|| r.message.clone()),
        ),
        last_verdict: last_verdict(record, previous, now),
        preview_deployment: preview_alive.then(|| preview.to_owned()),
        commands: Some(record.commands.clone()),
        active_revision: previous.and_then(|p| p.active_revision.clone()),
        preview_revision: previous
            .and_then(|p| p.preview_revision.clone())
            .filter(|_| preview_alive),
        rollout_state: serde_json::to_value(record).ok(),
    }
}

/// Step index `step` (0 is the first) of a rollout of `steps` steps as people count it:
/// `step_progress(1, 4)` is `"2/4"` (`status.stepProgress`, the STEP column).
pub fn step_progress(step: u32, steps: usize) -> String {
    format!("{}/{steps}", u64::from(step) + 1)
}

/// The status of a TrafficShift whose spec cannot be rolled out: `Progressing=False`, reason
/// `InvalidSpec`, the problems as message; the rest of `previous` is kept.
pub fn invalid_spec(
    previous: Option<&TrafficShiftStatus>,
    generation: i64,
    message: &str,
    now: &Time,
) -> TrafficShiftStatus {
    not_progressing(previous, generation, "InvalidSpec", message, now)
}

/// `previous` with `Progressing=False` for `reason` (`InvalidSpec`, `Conflict`) and `message`,
/// which is also `status.message`, for spec `generation`.
pub fn not_progressing(
    previous: Option<&TrafficShiftStatus>,
    generation: i64,
    reason: &str,
    message: &str,
    now: &Time,
) -> TrafficShiftStatus {
    let mut status = previous.cloned().unwrap_or_default();
    let c = condition(PROGRESSING, false, reason, message, generation, now);
    set_condition(&mut status.conditions, c);
    status.observed_generation = Some(generation);
    status.message = Some(message.to_owned());
    status
}

/// Whether the status shows this spec generation as invalid with this message already.
pub fn shows_invalid(shift: &TrafficShift, message: &str) -> bool {
    shows_not_progressing(shift, "InvalidSpec", message)
}

/// Whether the status shows this spec generation as `Progressing=False` for `reason` with this
/// message already.
pub fn shows_not_progressing(shift: &TrafficShift, reason: &str, message: &str) -> bool {
    shows_progressing_false(shift, reason, Some(message))
}

/// Whether the status shows this spec generation as `Progressing=False` for `reason`, whatever
/// the message.
pub fn shows_not_progressing_for(shift: &TrafficShift, reason: &str) -> bool {
    shows_progressing_false(shift, reason, None)
}

/// [`shows_not_progressing`], with the message checked only when given.
fn shows_progressing_false(shift: &TrafficShift, reason: &str, message: Option<&str>) -> bool {
    let Some(status) = &shift.status else {
        return false;
    };
    status.observed_generation == shift.metadata.generation
        && status.conditions.iter().any(|c| {
            c.type_ == PROGRESSING
                && c.status == crate::kube::crd::ConditionStatus::False
                && c.reason == reason
                && message.is_none_or(|m| c.message == bounded_message(m))
        })
}

fn condition(
    type_: &str,
    holds: bool,
    reason: &str,
    message: &str,
    generation: i64,
    now: &Time,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if holds {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        },
        reason: reason.to_owned(),
        message: message.to_owned(),
        last_transition_time: now.clone(),
        observed_generation: Some(generation),
    }
}

/// The published weights: the target (active) gets what the preview does not; at the shadow
/// step, with the rollout's mirror settings.
fn weights(record: &ShiftRecord) -> WeightsStatus {
    let preview = record.published_bp.min(FULL_BP);
    let guard = record.rollout.config.analysis.shadow.as_ref();
    WeightsStatus {
        active: Share(Percent(FULL_BP - preview)),
        preview: Share(Percent(preview)),
        generation: record.weights_generation,
        shadow: guard
            .filter(|_| record.shadow_published)
            .map(|g| MirrorPolicy::from_config(&g.mirror)),
    }
}

/// The last verdict, stamped when it was first shown (kept from `previous` while unchanged).
fn last_verdict(
    record: &ShiftRecord,
    previous: Option<&TrafficShiftStatus>,
    now: &Time,
) -> Option<VerdictStatus> {
    let v = &record.rollout.verdicts.last()?.verdict;
    let outcome = match v.outcome {
        Outcome::Pass => VerdictOutcome::Pass,
        Outcome::Fail => VerdictOutcome::Fail,
        Outcome::Inconclusive => VerdictOutcome::Inconclusive,
    };
    let same = |p: &&VerdictStatus| p.outcome == outcome && p.summary == v.summary;
    let time = previous
        .and_then(|p| p.last_verdict.as_ref())
        .filter(same)
        .map_or_else(|| now.clone(), |p| p.time.clone());
    Some(VerdictStatus {
        outcome,
        summary: v.summary.clone(),
        time,
    })
}
