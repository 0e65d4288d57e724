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
    /// holds the former active workload until the rollout ends: the status names the promoted
    /// one, so that `crossfade status` never says blue is active under a rollout message saying
    /// green is (trial report 6, F12).
    pub(crate) fn of(
        route: &str,
        active: (Slot, &WorkloadSpec),
        state: &ServiceState,
        running: bool,
    ) -> ServiceStatus {
        let record = state.rollout.as_ref();
        let swapped = record.filter(|r| running && r.rollout.phase == Phase::Retiring);
        let (slot, spec) = match swapped {
            Some(r) => (r.rollout.preview(), &r.preview_workload),
            None => active,
        };
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
    }
}
