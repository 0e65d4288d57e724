use super::*;

fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn op(c: OperatorCommand) -> Action {
    Action::Operator(c)
}

fn actions(d: &Decision) -> Vec<Action> {
    d.requests.iter().map(|r| r.action).collect()
}

#[test]
fn a_new_nonce_acts_once_and_the_same_nonce_again_does_nothing() {
    let a = annotations(&[(PROMOTE, "n1")]);
    let first = decide(&a, &CommandsSeen::default());
    assert_eq!(actions(&first), vec![op(OperatorCommand::Promote)]);
    assert_eq!(first.seen.promote.as_deref(), Some("n1"));
    assert_eq!(
        (
            first.requests[0].annotation,
            first.requests[0].value.as_str()
        ),
        (PROMOTE, "n1")
    );
    let again = decide(&a, &first.seen);
    assert!(again.requests.is_empty(), "{again:?}");
    assert_eq!(again.seen, first.seen);
    let next = decide(&annotations(&[(PROMOTE, "n2")]), &first.seen);
    assert_eq!(actions(&next), vec![op(OperatorCommand::Promote)]);
}

#[test]
fn commands_given_together_act_in_order_retry_abort_pause_resume_promote() {
    let a = annotations(&[
        (PROMOTE, "p"),
        (ABORT, "a"),
        (RETRY, "r"),
        (PAUSED, "true"),
        (RESUME, "s"),
    ]);
    let d = decide(&a, &CommandsSeen::default());
    assert_eq!(
        actions(&d),
        vec![
            Action::Retry,
            op(OperatorCommand::Abort),
            op(OperatorCommand::Pause),
            op(OperatorCommand::Resume),
            op(OperatorCommand::Promote)
        ]
    );
    assert_eq!(d.problem, None);
}

#[test]
fn paused_is_a_state_acted_on_when_it_changes() {
    let seen = CommandsSeen::default();
    let paused = decide(&annotations(&[(PAUSED, "true")]), &seen);
    assert_eq!(actions(&paused), vec![op(OperatorCommand::Pause)]);
    let still = decide(&annotations(&[(PAUSED, "true")]), &paused.seen);
    assert!(still.requests.is_empty());
    let resumed = decide(&annotations(&[(PAUSED, "false")]), &paused.seen);
    assert_eq!(actions(&resumed), vec![op(OperatorCommand::Resume)]);
    assert_eq!(resumed.seen.paused, Some(false));
    // Removing the annotation resumes too; "false" on a rollout it never paused does nothing.
    let removed = decide(&annotations(&[]), &paused.seen);
    assert_eq!(actions(&removed), vec![op(OperatorCommand::Resume)]);
    assert_eq!(removed.seen.paused, None);
    let never = decide(&annotations(&[(PAUSED, "false")]), &seen);
    assert!(never.requests.is_empty());
    assert_eq!(never.seen.paused, Some(false));
}

#[test]
fn resume_by_nonce_and_by_paused_false_together_resume_once() {
    let seen = CommandsSeen {
        paused: Some(true),
        ..CommandsSeen::default()
    };
    let d = decide(&annotations(&[(PAUSED, "false"), (RESUME, "x")]), &seen);
    assert_eq!(actions(&d), vec![op(OperatorCommand::Resume)]);
    assert_eq!(d.seen.resume.as_deref(), Some("x"));
}

#[test]
fn bad_values_name_their_annotation_bad_nonces_are_ignored_and_a_bad_paused_pauses() {
    let long = "x".repeat(MAX_NONCE + 1);
    let a = annotations(&[
        (PAUSED, "yes"),
        (ABORT, ""),
        (PROMOTE, "a b"),
        (RETRY, &long),
        (RESUME, "ok"),
    ]);
    let d = decide(&a, &CommandsSeen::default());
    // A bad `paused` is taken as "true" (trial 10, K16); the resume nonce, after it, still acts.
    assert_eq!(
        actions(&d),
        vec![op(OperatorCommand::Pause), op(OperatorCommand::Resume)]
    );
    assert_eq!(
        d.problem.as_deref(),
        Some(
            "annotation crossfade.dev/retry: nonce is 129 bytes long, more than 128; \
             annotation crossfade.dev/abort: nonce is empty; use any new value, e.g. a timestamp; \
             annotation crossfade.dev/paused: \"yes\" is not \"true\" or \"false\"; taken as \"true\" until it is fixed; \
             annotation crossfade.dev/promote: nonce \"a b\" contains whitespace"
        )
    );
    let expected = CommandsSeen {
        resume: Some("ok".into()),
        paused: Some(true),
        ..CommandsSeen::default()
    };
    assert_eq!(d.seen, expected);
    // Looked at again: already paused, nothing more; fixed to "false", the pause ends.
    assert_eq!(actions(&decide(&a, &d.seen)), vec![]);
    let fixed = decide(&annotations(&[(PAUSED, "false")]), &d.seen);
    assert_eq!(actions(&fixed), vec![op(OperatorCommand::Resume)]);
    assert_eq!(fixed.problem, None);
}

fn at(text: &str) -> Option<Timestamp> {
    Some(text.parse().expect("timestamp"))
}

#[test]
fn nonces_tell_when_they_were_written_when_they_are_timestamps() {
    assert_eq!(
        written_at("20261201T224051Z-0fc7cc"),
        at("2026-12-01T22:40:51Z")
    );
    assert_eq!(
        written_at("2026-12-01T22:40:51Z"),
        at("2026-12-01T22:40:51Z")
    );
    for other in [
        "manual-1",
        "n1",
        "20261301T224051Z-0f",
        "2026120T224051Z-x",
        "",
        "-",
    ] {
        assert_eq!(written_at(other), None, "{other:?}");
    }
}

#[test]
fn a_new_trafficshift_ignores_nonces_written_before_it_and_acts_on_later_ones() {
    // Trial 10, K1: a promote left by the CLI on an earlier rollout promoted a new TrafficShift's
    // image with no analysis; old abort/retry/resume nonces aborted another one at once.
    let created = at("2026-12-01T22:45:00Z");
    let a = annotations(&[
        (PROMOTE, "20261201T224051Z-0fc7cc"),
        (ABORT, "manual-1"),
        (RETRY, "20261201T224500Z-aaaaaa"), // the same second as the creation: not later
        (RESUME, "20261201T224501Z-bbbbbb"),
        (PAUSED, "true"),
    ]);
    let (seen, ignored) = stale(&a, &CommandsSeen::default(), created);
    assert_eq!(
        ignored,
        [
            (RETRY, "20261201T224500Z-aaaaaa".to_owned()),
            (ABORT, "manual-1".to_owned()),
            (PROMOTE, "20261201T224051Z-0fc7cc".to_owned()),
        ]
    );
    let d = decide(&a, &seen);
    assert_eq!(
        actions(&d),
        [op(OperatorCommand::Pause), op(OperatorCommand::Resume)],
        "paused is a state; the resume written after the creation acts"
    );
    let last = seen.last.clone().expect("the last one ignored is told");
    assert_eq!((last.annotation.as_str(), last.accepted), (PROMOTE, false));
    assert!(
        last.message.starts_with(
            "ignored: written before this TrafficShift was created (2026-12-01T22:45:00Z)"
        ),
        "{}",
        last.message
    );

    // What is already recorded stays as it is; without a creation time nothing is trusted.
    let (again, none) = stale(&a, &seen, created);
    assert_eq!(
        (again.promote.clone(), none.len()),
        (seen.promote.clone(), 0)
    );
    let (_, all) = stale(&a, &CommandsSeen::default(), None);
    assert_eq!(all.len(), 4);
    // Bad values are left to `decide`, which reports them.
    let (bad, none) = stale(
        &annotations(&[(PROMOTE, "now please")]),
        &CommandsSeen::default(),
        None,
    );
    assert_eq!((bad, none.len()), (CommandsSeen::default(), 0));
}

#[test]
fn a_force_abort_nonce_acts_once_after_an_abort_given_with_it() {
    let a = annotations(&[(FORCE_ABORT, "f1"), (ABORT, "a1")]);
    let d = decide(&a, &CommandsSeen::default());
    assert_eq!(
        actions(&d),
        vec![op(OperatorCommand::Abort), op(OperatorCommand::ForceAbort)]
    );
    assert_eq!(d.requests[1].annotation, FORCE_ABORT);
    assert_eq!(d.seen.force_abort.as_deref(), Some("f1"));
    assert!(decide(&a, &d.seen).requests.is_empty(), "once");
    // Written before a new TrafficShift was created: ignored, as every one-shot nonce.
    let (seen, ignored) = stale(
        &annotations(&[(FORCE_ABORT, "f1")]),
        &CommandsSeen::default(),
        None,
    );
    assert_eq!(ignored, vec![(FORCE_ABORT, "f1".to_owned())]);
    assert_eq!(seen.force_abort.as_deref(), Some("f1"));
}

/// Trial 30: a huge `paused` value (an annotation may hold 256 KiB) was quoted whole in the
/// `AnnotationsValid` message, past the 32,768 characters a condition may carry; it is quoted in
/// part, with its length, and still pauses.
#[test]
fn a_huge_bad_paused_value_is_quoted_in_part_and_still_pauses() {
    let value = "y".repeat(40_000);
    let annotations = BTreeMap::from([(PAUSED.to_owned(), value)]);
    let d = decide(&annotations, &CommandsSeen::default());
    let problem = d.problem.expect("reported");
    assert_eq!(
        problem,
        format!(
            "annotation crossfade.dev/paused: \"{}...\" (40000 bytes) is not \"true\" or \"false\"; taken as \"true\" until it is fixed",
            "y".repeat(crate::kube::QUOTED_MAX)
        )
    );
    assert_eq!(d.seen.paused, Some(true));
}
