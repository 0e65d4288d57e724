//! The command annotations of the target Deployment ([`crate::kube::command`]) applied to one
//! TrafficShift's machine: operator commands become machine inputs, a retry starts a new rollout
//! of the same spec, and the record of what was acted on goes into the rollout's record.

use std::collections::BTreeMap;

use super::machine::{initial, Machine};
use crate::kube::command::{decide, Request, RETRY};
use crate::rollout::{Input, Phase};
use crate::spec::RolloutConfig;

/// An Event to publish on the TrafficShift: reason and note.
pub(super) type Note = (&'static str, String);

/// Applies `annotations` to machine `m`, whose reconcile starts with `inputs`: returns the
/// machine (a new one after an accepted retry) and its inputs, plus the Events to publish
/// (`Retried`, `CommandRejected` for a refused retry, `InvalidAnnotation` when the problems
/// change). Operator commands are appended after `inputs`, so a new rollout is started first.
pub(super) fn apply(
    mut m: Machine,
    mut inputs: Vec<Input>,
    annotations: &BTreeMap<String, String>,
    config: &RolloutConfig,
    generation: i64,
) -> (Machine, Vec<Input>, Vec<Note>) {
    let mut notes = Vec::new();
    let mut decision = decide(annotations, &m.record.commands);
    if decision.requests.first() == Some(&Request::Retry) {
        let r = &m.record.rollout;
        match r.phase {
            Phase::RolledBack | Phase::Aborted => {
                let why = r.reason.clone().unwrap_or_else(|| r.message.clone());
                notes.push((
                    "Retried",
                    format!(
                        "{RETRY}: rollout {} is {} ({why}); starting it again from its first step",
                        r.id,
                        r.phase.words()
                    ),
                ));
                m.record.commands.retry.clone_from(&decision.seen.retry);
                let next = Machine::start(config.clone(), generation, Some(&m.record));
                m = Machine {
                    written: m.written.take(),
                    ..next
                };
                inputs = initial(None);
                // The new rollout has its own `paused` record: decide again against it.
                decision = decide(annotations, &m.record.commands);
            }
            phase => {
                let why = match phase {
                    Phase::Completed => {
                        "the rollout completed; annotate a new image to roll out again".to_owned()
                    }
                    _ => format!(
                        "rollout {} is still {}; only a rolled back or aborted rollout can be retried",
                        r.id,
                        phase.words()
                    ),
                };
                notes.push(("CommandRejected", format!("retry rejected: {why}")));
            }
        }
    }
    if decision.problem != m.record.annotation_problem {
        if let Some(problem) = &decision.problem {
            notes.push(("InvalidAnnotation", problem.clone()));
        }
        m.record.annotation_problem = decision.problem.clone();
        m.unsaved = true;
    }
    if decision.seen != m.record.commands {
        m.record.commands = decision.seen;
        m.unsaved = true;
    }
    inputs.extend(decision.requests.into_iter().filter_map(|r| match r {
        Request::Operator(c) => Some(Input::Operator(c)),
        Request::Retry => None,
    }));
    (m, inputs, notes)
}
