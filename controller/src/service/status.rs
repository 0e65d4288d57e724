//! The [`ServiceStatus`] a service publishes: which slot and version serve, and the rollout.

use crossfade_proxy::weight::Slot;

use super::ServiceStatus;
use crate::rollout::{Phase, Rollout};
use crate::spec::WorkloadSpec;
use crate::state::ServiceState;

impl ServiceStatus {
    /// The status of `route` whose service holds `active` (slot and workload) and `state`;
    /// `running` says whether the state's rollout is running now.
    ///
    /// From the role swap on (`Retiring`) the promoted preview serves, while the service still
    /// holds the former active workload until the rollout's run has returned, which is after
    /// its `Completed` is published: the status names the promoted one, so that `crossfade
    /// status` never says blue is active under a rollout message saying green is (trial report
    /// 6, F12; trial 28, `Completed (ended)` under `v1 active in slot blue` in that moment).
    pub(crate) fn of(
        route: &str,
        active: (Slot, &WorkloadSpec),
        state: &ServiceState,
        running: bool,
    ) -> ServiceStatus {
        let record = state.rollout.as_ref();
        let swapped = match record {
            Some(r) if running && r.rollout.phase == Phase::Retiring => {
                Some((r.rollout.preview(), &r.preview_workload))
            }
            _ => completed_not_taken(active.0, state),
        };
        let (slot, spec) = swapped.unwrap_or(active);
        let (from_version, to_version) = match record {
            Some(r) => {
                let start = start_slot(&r.rollout);
                let from = r
                    .active_workload
                    .as_ref()
                    .map(|w| w.label(start).to_owned());
                (
                    from,
                    Some(r.preview_workload.label(start.other()).to_owned()),
                )
            }
            None => (None, None),
        };
        ServiceStatus {
            route: route.to_owned(),
            active: Some(slot),
            active_workload: spec.describe(),
            active_version: spec.label(slot).to_owned(),
            from_version,
            to_version,
            rollout: record.map(|r| r.rollout.clone()),
            running,
            events: state.events.clone(),
            hold: None,
            restarting: Vec::new(),
        }
    }
}

/// The slot and workload a rollout of `state` promoted when it is `Completed` but the service
/// still holds `active`, the slot it retired: from the publication of `Completed` until the
/// rollout's run has returned. `None` otherwise. The status and `crossfade_backend_info` name
/// the promoted workload then (trial 28: `v1 active in slot blue` under `Completed (ended)`, and
/// the promoted slot's info series gone, its workload timestamp restarted at the completion).
pub(crate) fn completed_not_taken(
    active: Slot,
    state: &ServiceState,
) -> Option<(Slot, &WorkloadSpec)> {
    let record = state.rollout.as_ref()?;
    // A completed rollout's `active` is the slot it promoted.
    let completed = record.rollout.phase == Phase::Completed && record.rollout.active != active;
    completed.then_some((record.rollout.active, &record.preview_workload))
}

/// The slot that was active when `rollout` started: a completed rollout's `active` is the slot it
/// promoted.
pub(crate) fn start_slot(rollout: &Rollout) -> Slot {
    match rollout.phase {
        Phase::Completed => rollout.active.other(),
        _ => rollout.active,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::busy_message;
    use crate::spec::RolloutConfig;

    fn at(phase: Phase) -> Rollout {
        let mut rollout = Rollout::new(4, RolloutConfig::default(), Slot::Blue);
        rollout.phase = phase;
        rollout
    }

    /// Trial 28: between the publication of `Completed` and the service taking the promoted
    /// workload as its active one, the status said the retired version was active.
    #[test]
    fn a_completed_rollout_names_the_promoted_version_active_before_the_service_took_it() {
        let (v1, v2) = (workload("v1"), workload("v2"));
        let mut state = ServiceState::default();
        let mut completed = at(Phase::Completed);
        completed.active = Slot::Green;
        state.begin(crate::state::RolloutRecord {
            rollout: completed,
            preview_workload: v2.clone(),
            preview_pids: Vec::new(),
            interrupted: false,
            active_workload: Some(v1.clone()),
            timeline: Default::default(),
            preview_digest: None,
        });
        // What `crossfade_backend_info` is set from (`Service::publish`).
        assert_eq!(
            completed_not_taken(Slot::Blue, &state),
            Some((Slot::Green, &v2))
        );
        assert_eq!(completed_not_taken(Slot::Green, &state), None, "taken");
        for (held, running) in [((Slot::Blue, &v1), false), ((Slot::Green, &v2), false)] {
            let status = ServiceStatus::of("web", held, &state, running);
            assert_eq!(status.active, Some(Slot::Green), "holding {held:?}");
            assert_eq!(status.active_version, "v2", "holding {held:?}");
        }
        // A rollback never swapped: the service's active workload is the one named.
        let mut rolled_back = at(Phase::RolledBack);
        rolled_back.active = Slot::Blue;
        state.rollout.as_mut().unwrap().rollout = rolled_back;
        let status = ServiceStatus::of("web", (Slot::Blue, &v1), &state, false);
        assert_eq!(status.active_version, "v1");
        assert_eq!(completed_not_taken(Slot::Blue, &state), None);
    }

    fn workload(name: &str) -> WorkloadSpec {
        WorkloadSpec {
            name: Some(name.to_owned()),
            command: Some(format!("./{name}")),
            args: vec!["{port}".to_owned()],
            ..WorkloadSpec::default()
        }
    }

    #[test]
    fn a_refused_start_suggests_abort_only_in_the_phases_that_accept_it() {
        // The machine accepts an abort before the promotion only, and not while already sending
        // all traffic back (trial report 6, F13: "abort it first" during Retiring, refused).
        for phase in [Phase::Provisioning, Phase::Progressing, Phase::Paused] {
            let text = busy_message(Some(&at(phase)));
            assert!(text.contains("(`crossfade abort`)"), "{phase:?}: {text}");
        }
        for phase in [
            Phase::Promoted,
            Phase::Retiring,
            Phase::RollingBack,
            Phase::Aborting,
            Phase::RolledBack,
        ] {
            let text = busy_message(Some(&at(phase)));
            assert!(!text.contains("`crossfade abort`"), "{phase:?}: {text}");
            assert!(text.contains("already in progress (rollout 4, "), "{text}");
        }
        let text = busy_message(Some(&at(Phase::Retiring)));
        assert_eq!(
            text,
            "a rollout is already in progress (rollout 4, retiring): green is already promoted \
             and blue is being retired; start the next rollout once this one has completed \
             (`crossfade status`)"
        );
        // check32: while blue is held as the backup of a green that cannot serve, "being
        // retired" did not say that the wait lasts until green can serve again.
        let mut held = at(Phase::Retiring);
        held.retire_held = true;
        assert_eq!(
            busy_message(Some(&held)),
            "a rollout is already in progress (rollout 4, retiring): green is already promoted \
             but has no instance that can serve, and blue, drained, is kept running as its \
             backup until green can serve again (its restart ready, its endpoints healthy); \
             the rollout completes then: start the next rollout once it has (`crossfade status`)"
        );
    }
}
