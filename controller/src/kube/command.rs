//! Operator commands as annotations on the target Deployment, pure: from its annotations and the
//! record of what was acted on (`status.commands`) to the commands to act on now.
//!
//! | annotation | value | effect |
//! |---|---|---|
//! | `crossfade.dev/promote` | a nonce | skip the remaining steps (as `crossfade promote`) |
//! | `crossfade.dev/abort` | a nonce | all traffic back to the target, preview deleted |
//! | `crossfade.dev/force-abort` | a nonce | as `abort`, all traffic back at once whatever the target's ready endpoints; ends a rollback's capacity wait (as `crossfade abort --force`) |
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
//! rollout either.
//!
//! **A new TrafficShift ignores older nonces** ([`stale`]). Nothing removes a nonce from the
//! Deployment, so one written for an earlier TrafficShift of the same Deployment (a `promote` left
//! by `crossfade promote --kube`, a nonce kept in a manifest) is still there when a new one is
//! created. At its first reconcile (no rollout record in its status yet) a TrafficShift records
//! every nonce present as already handled, unless the nonce is a timestamp
//! (`20261130T101502Z-9f3a2c`, as the CLI writes, or RFC 3339) later than the TrafficShift's
//! `metadata.creationTimestamp`: that one was given for this TrafficShift and acts. The record is
//! written to status with the first transition, so a restarted controller does not look again.
//!
//! **`paused` is a state**, acted on when it changes against the value recorded for the current
//! rollout: `"true"` pauses (and a new rollout started while it is `"true"` is paused too, the
//! record of `paused` being per rollout), `"false"` or its removal resumes a pause it made. A
//! pause the analysis made (`onInconclusive: Pause`) is resumed with `crossfade.dev/resume`.
//! Any other value is reported and taken as `"true"` (fail safe: `paused=yes` meant to stop).
//!
//! Order within one look: retry, abort, force-abort, paused, resume, promote (abort wins over a promote given
//! at the same time, as in `crossfade run`). A bad nonce (empty, whitespace, longer than
//! [`MAX_NONCE`] bytes) is not acted on and not recorded, a bad `paused` pauses; either is
//! reported with the annotation's name (condition `AnnotationsValid=False` and a Warning Event
//! `InvalidAnnotation`) until it is fixed.

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;

use super::crd::{CommandOutcome, CommandsSeen};
use crate::rollout::OperatorCommand;

/// One-shot: skip the remaining steps and promote.
pub const PROMOTE: &str = "crossfade.dev/promote";
/// One-shot: abort the rollout (all traffic back to the target, preview deleted).
pub const ABORT: &str = "crossfade.dev/abort";
/// One-shot: as [`ABORT`], all traffic back at once whatever the target's capacity; ends a
/// rollback's or abort's capacity wait ([`OperatorCommand::ForceAbort`]).
pub const FORCE_ABORT: &str = "crossfade.dev/force-abort";
/// One-shot: start a rolled-back or aborted rollout again.
pub const RETRY: &str = "crossfade.dev/retry";
/// One-shot: resume a paused rollout.
pub const RESUME: &str = "crossfade.dev/resume";
/// State: `"true"` holds the rollout paused, `"false"` lets it run.
pub const PAUSED: &str = "crossfade.dev/paused";
/// Every command annotation, in the order they are acted on.
pub const ALL: [&str; 6] = [RETRY, ABORT, FORCE_ABORT, PAUSED, RESUME, PROMOTE];
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
    if nonce(FORCE_ABORT, &mut next.force_abort, &mut problems).is_some() {
        push(Action::Operator(OperatorCommand::ForceAbort), FORCE_ABORT);
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
        // Fail safe (trial 10, K16): an operator who wrote `yes` meant to stop the rollout.
        Some(other) => {
            problems.push(format!(
                "annotation {PAUSED}: {} is not \"true\" or \"false\"; taken as \"true\" until it is fixed",
                super::quoted(other)
            ));
            if next.paused != Some(true) {
                next.paused = Some(true);
                push(Action::Operator(OperatorCommand::Pause), PAUSED);
            }
        }
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

/// The one-shot annotations, in the order they are acted on.
const ONE_SHOT: [&str; 5] = [RETRY, ABORT, FORCE_ABORT, RESUME, PROMOTE];

/// The record a TrafficShift without one starts from (see the module docs): `seen` (its
/// `status.commands`, if any) with every valid one-shot nonce of `annotations` that it does not
/// hold yet recorded as handled, unless the nonce is a timestamp ([`written_at`]) later than
/// `created` (the TrafficShift's `metadata.creationTimestamp`; `None` ignores every nonce).
/// Returns the record and the `annotation=value` pairs ignored, in [`ALL`] order; `last` tells of
/// the last one ignored (refused), so that a `crossfade promote --kube` waiting for it hears why.
/// Pure; `paused` is a state and is left to [`decide`].
pub fn stale(
    annotations: &BTreeMap<String, String>,
    seen: &CommandsSeen,
    created: Option<Timestamp>,
) -> (CommandsSeen, Vec<(&'static str, String)>) {
    let mut next = seen.clone();
    let mut ignored = Vec::new();
    for key in ONE_SHOT {
        let Some(value) = annotations.get(key) else {
            continue;
        };
        let recorded = match key {
            RETRY => &mut next.retry,
            ABORT => &mut next.abort,
            FORCE_ABORT => &mut next.force_abort,
            RESUME => &mut next.resume,
            _ => &mut next.promote,
        };
        let given_later = matches!((written_at(value), created), (Some(at), Some(c)) if at > c);
        if check_nonce(value).is_err() || recorded.as_deref() == Some(value) || given_later {
            continue;
        }
        *recorded = Some(value.clone());
        ignored.push((key, value.clone()));
    }
    if let Some((key, value)) = ignored.last() {
        let when = created.map_or_else(|| "unknown".to_owned(), |c| c.to_string());
        next.last = Some(CommandOutcome {
            annotation: (*key).to_owned(),
            value: value.clone(),
            accepted: false,
            message: format!(
                "ignored: written before this TrafficShift was created ({when}); write a new value to give the command"
            ),
            rollout_id: None,
        });
    }
    (next, ignored)
}

/// When a nonce says it was written: the UTC second of `crossfade`'s nonces
/// (`20261130T101502Z-9f3a2c`: the part before the first `-`) or an RFC 3339 timestamp
/// (`2026-11-30T10:15:02Z`); `None` for any other value.
pub fn written_at(nonce: &str) -> Option<Timestamp> {
    if let Ok(at) = nonce.parse::<Timestamp>() {
        return Some(at);
    }
    let stamp = nonce.split('-').next()?;
    let b = stamp.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let compact = b.len() == 16 && digits(0..8) && b[8] == b'T' && digits(9..15) && b[15] == b'Z';
    if !compact {
        return None;
    }
    let s = |r: std::ops::Range<usize>| &stamp[r];
    let rfc3339 = format!(
        "{}-{}-{}T{}:{}:{}Z",
        s(0..4),
        s(4..6),
        s(6..8),
        s(9..11),
        s(11..13),
        s(13..15)
    );
    rfc3339.parse().ok()
}
