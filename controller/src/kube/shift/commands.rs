//! The command annotations of the target Deployment ([`crate::kube::command`]) applied to one
//! TrafficShift's machine: operator commands become machine inputs, a retry starts a new rollout
//! of the same spec, and the record of what was acted on goes into the rollout's record.

use std::collections::BTreeMap;

use super::machine::{initial, Machine};
use crate::kube::command::{decide, stale, Action, RETRY};
use crate::kube::crd::{CommandOutcome, CommandsSeen, TrafficShift};
use crate::rollout::{Command, Decision, OperatorCommand};
use crate::rollout::{Input, Phase};
use crate::spec::RolloutConfig;

/// An Event to publish on the TrafficShift: reason and note.
pub(super) type Note = (&'static str, String);

/// Applies `annotations` to machine `m`, whose reconcile starts with `inputs`: returns the
/// machine (a new one after an accepted retry) and its inputs, plus the Events to publish
/// (`Retried`, `CommandRejected` for a refused retry, `InvalidAnnotation` when the problems
/// change). Operator commands are appended after `inputs`, so a new rollout is started first.
/// An accepted retry starts a rollout of `shift` (its spec, generation and `config`).
pub(super) fn apply(
    mut m: Machine,
    mut inputs: Vec<Input>,
    annotations: &BTreeMap<String, String>,
    config: &RolloutConfig,
    shift: &TrafficShift,
) -> (Machine, Vec<Input>, Vec<Note>) {
    let mut notes = Vec::new();
    let mut decision = decide(annotations, &m.record.commands);
    if let Some(retry) = decision
        .requests
        .first()
        .filter(|r| r.action == Action::Retry)
    {
        let value = retry.value.clone();
        let r = &m.record.rollout;
        match r.phase {
            Phase::RolledBack | Phase::Aborted => {
                let why = r.reason.clone().unwrap_or_else(|| r.message.clone());
                let note = format!(
                    "{RETRY}: rollout {} is {} ({why}); starting it again from its first step",
                    r.id,
                    r.phase.words()
                );
                m.record.commands.retry.clone_from(&decision.seen.retry);
                notes.push(("Retried", note.clone()));
                let next = Machine::start(config.clone(), shift, Some(&m.record));
                m = Machine {
                    written: m.written.take(),
                    ..next
                };
                // The retry started the new rollout: it is that rollout's command.
                let id = m.record.rollout.id;
                m.record.commands.last = Some(outcome(RETRY, value, true, note, id));
                inputs = initial(None, 0);
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
                let note = format!("retry rejected: {why}");
                decision.seen.last = Some(outcome(RETRY, value, false, note.clone(), r.id));
                notes.push(("CommandRejected", note));
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
    for r in decision.requests {
        if let Action::Operator(c) = r.action {
            inputs.push(Input::Operator(c));
            m.awaiting.push_back((c, r.annotation, r.value));
        }
    }
    (m, inputs, notes)
}

/// A TrafficShift's first look at the command annotations (no rollout record yet): records the
/// nonces written before it was created as handled ([`stale`]), starting from its
/// `status.commands` when it has one; returns the note of the `StaleCommandIgnored` Event when
/// some were ignored.
pub(super) fn forget_stale(
    m: &mut Machine,
    shift: &TrafficShift,
    annotations: &BTreeMap<String, String>,
) -> Option<String> {
    let status_seen = shift.status.as_ref().and_then(|s| s.commands.clone());
    // `paused` is per rollout: a new rollout looks at it afresh.
    let seen = CommandsSeen {
        paused: None,
        ..status_seen.unwrap_or_else(|| m.record.commands.clone())
    };
    let created = shift.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let (mut seen, ignored) = stale(annotations, &seen, created);
    if !ignored.is_empty() {
        if let Some(last) = &mut seen.last {
            last.rollout_id = Some(m.record.rollout.id);
        }
    }
    m.record.commands = seen;
    m.unsaved = true;
    if ignored.is_empty() {
        return None;
    }
    let pairs: Vec<String> = ignored.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let when = created.map_or_else(|| "unknown".to_owned(), |c| c.to_string());
    Some(format!(
        "ignored {}: written before trafficshift {} was created ({when}); write a new value to give a command",
        pairs.join(", "),
        shift.metadata.name.as_deref().unwrap_or_default()
    ))
}

/// Records the machine's answer to operator command `c` (its `commands` from one step) in
/// `status.commands.last` when the oldest command given by annotation is `c`.
pub(super) fn decided(m: &mut Machine, c: OperatorCommand, commands: &[Command]) {
    if m.awaiting.front().is_none_or(|(a, _, _)| *a != c) {
        return;
    }
    let Some((_, annotation, value)) = m.awaiting.pop_front() else {
        return;
    };
    let d = Decision::of(c, &m.record.rollout, commands);
    let id = m.record.rollout.id;
    m.record.commands.last = Some(outcome(annotation, value, d.accepted, d.message, id));
    m.unsaved = true;
}

/// The outcome of a command given to rollout `rollout_id`.
fn outcome(
    annotation: &str,
    value: String,
    accepted: bool,
    message: String,
    rollout_id: u64,
) -> CommandOutcome {
    CommandOutcome {
        annotation: annotation.to_owned(),
        value,
        accepted,
        message,
        rollout_id: Some(rollout_id),
    }
}
