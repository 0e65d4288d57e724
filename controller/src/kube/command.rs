//! Operator commands as annotations on the target Deployment, pure: from its annotations and the
//! record of what was acted on (`status.commands`) to the commands to act on now.
//!
//! | annotation | value | effect |
//! |---|---|---|
//! | `crossfade.dev/promote` | a nonce | skip the remaining steps (as `crossfade promote`) |
//! | `crossfade.dev/abort` | a nonce | all traffic back to the target, preview deleted |
//! | `crossfade.dev/retry` | a nonce | start a rolled-back or aborted rollout again, same spec |
//! | `crossfade.dev/resume` | a nonce | resume a paused rollout, whatever paused it |
//! | `crossfade.dev/paused` | `"true"` / `"false"` | state: `true` pauses the rollout, `false` (or removing it) resumes a pause it made |
//!
//! **One-shot by nonce.** A nonce is any value (`crossfade promote --kube` writes a UTC
//! timestamp and a random suffix, `20261130T101502Z-9f3a2c`); a command acts only when its
//! annotation's value differs from the value recorded in `status.commands` for it, and the value
//! is recorded whether the rollout accepted the command or refused it (a `CommandRejected`
//! Event says why). Re-applying the same manifest (GitOps) therefore never fires a command twice.
//! The record outlives rollouts, so a nonce left on the Deployment does not fire again on the next
//! rollout either; a TrafficShift without a record yet (new) acts on the nonces it finds.
//!
//! **`paused` is a state**, acted on when it changes against the value recorded for the current
//! rollout: `"true"` pauses (and a new rollout started while it is `"true"` is paused too, the
//! record of `paused` being per rollout), `"false"` or its removal resumes a pause it made. A
//! pause the analysis made (`onInconclusive: Pause`) is resumed with `crossfade.dev/resume`.
//!
//! Order within one look: retry, abort, paused, resume, promote (abort wins over a promote given
//! at the same time, as in `crossfade run`). A bad value (empty, whitespace, longer than
//! [`MAX_NONCE`] bytes, `paused` not `"true"`/`"false"`) is not acted on and not recorded; it is
//! reported with the annotation's name (condition `AnnotationsValid=False` and a Warning Event
//! `InvalidAnnotation`) until it is fixed.

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use super::crd::CommandsSeen;
use crate::rollout::OperatorCommand;

/// One-shot: skip the remaining steps and promote.
pub const PROMOTE: &str = "crossfade.dev/promote";
/// One-shot: abort the rollout (all traffic back to the target, preview deleted).
pub const ABORT: &str = "crossfade.dev/abort";
/// One-shot: start a rolled-back or aborted rollout again.
pub const RETRY: &str = "crossfade.dev/retry";
/// One-shot: resume a paused rollout.
pub const RESUME: &str = "crossfade.dev/resume";
/// State: `"true"` holds the rollout paused, `"false"` lets it run.
pub const PAUSED: &str = "crossfade.dev/paused";
/// Every command annotation, in the order they are acted on.
pub const ALL: [&str; 5] = [RETRY, ABORT, PAUSED, RESUME, PROMOTE];
/// Longest nonce accepted, in bytes.
pub const MAX_NONCE: usize = 128;

/// What a command annotation asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Start the ended rollout again (same spec generation, a new rollout id).
    Retry,
    /// Give the rollout machine this operator command.
    Operator(OperatorCommand),
}

/// One command to act on, and the annotation that gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// What to do.
    pub action: Action,
    /// The annotation, e.g. [`PROMOTE`].
    pub annotation: &'static str,
    /// Its value (the nonce, or `true`/`false` for [`PAUSED`]).
    pub value: String,
}

/// The outcome of one look at the annotations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The commands to act on now, in order (retry first).
    pub requests: Vec<Request>,
    /// The record to keep once they are acted on.
    pub seen: CommandsSeen,
    /// Every bad annotation, `annotation crossfade.dev/paused: "yes" is not "true" or "false"`,
    /// separated by `; `; `None` when all are valid.
    pub problem: Option<String>,
}

/// Decides which commands the `annotations` of the target Deployment give, against `seen`, the
/// record of the ones acted on. Pure; see the module docs for the rules.
pub fn decide(annotations: &BTreeMap<String, String>, seen: &CommandsSeen) -> Decision {
    let mut next = seen.clone();
    let mut requests = Vec::new();
    let mut problems = Vec::new();
    let nonce = |key: &str, recorded: &mut Option<String>, problems: &mut Vec<String>| {
        let value = annotations.get(key)?;
        if let Err(why) = check_nonce(value) {
            problems.push(format!("annotation {key}: {why}"));
            return None;
        }
        if recorded.as_deref() == Some(value.as_str()) {
            return None;
        }
        *recorded = Some(value.clone());
        Some(())
    };
    let mut push = |action, annotation: &'static str| {
        let value = annotations.get(annotation).cloned().unwrap_or_default();
        let resume = Action::Operator(OperatorCommand::Resume);
        if action == resume && requests.iter().any(|r: &Request| r.action == resume) {
            return;
        }
        requests.push(Request {
            action,
            annotation,
            value,
        });
    };
    if nonce(RETRY, &mut next.retry, &mut problems).is_some() {
        push(Action::Retry, RETRY);
    }
    if nonce(ABORT, &mut next.abort, &mut problems).is_some() {
        push(Action::Operator(OperatorCommand::Abort), ABORT);
    }
    match annotations.get(PAUSED).map(String::as_str) {
        Some("true") if next.paused != Some(true) => {
            next.paused = Some(true);
            push(Action::Operator(OperatorCommand::Pause), PAUSED);
        }
        Some("false") | None if next.paused == Some(true) => {
            next.paused = annotations.get(PAUSED).map(|_| false);
            push(Action::Operator(OperatorCommand::Resume), PAUSED);
        }
        Some("false") => next.paused = Some(false),
        Some("true") | None => {}
        Some(other) => problems.push(format!(
            "annotation {PAUSED}: {other:?} is not \"true\" or \"false\""
        )),
    }
    if nonce(RESUME, &mut next.resume, &mut problems).is_some() {
        push(Action::Operator(OperatorCommand::Resume), RESUME);
    }
    if nonce(PROMOTE, &mut next.promote, &mut problems).is_some() {
        push(Action::Operator(OperatorCommand::Promote), PROMOTE);
    }
    Decision {
        requests,
        seen: next,
        problem: (!problems.is_empty()).then(|| problems.join("; ")),
    }
}

/// Whether `value` can be a nonce: 1 to [`MAX_NONCE`] bytes, no whitespace.
///
/// # Errors
/// Why not, lowercase (`nonce is empty`).
pub fn check_nonce(value: &str) -> Result<(), String> {
    if value.is_empty() {
        Err("nonce is empty; use any new value, e.g. a timestamp".into())
    } else if value.len() > MAX_NONCE {
        Err(format!(
            "nonce is {} bytes long, more than {MAX_NONCE}",
            value.len()
        ))
    } else if value.chars().any(char::is_whitespace) {
        Err(format!("nonce {value:?} contains whitespace"))
    } else {
        Ok(())
    }
}
