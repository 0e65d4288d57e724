//! The rollback's capacity rule (case C02, rollback variant): weight goes back to the active
//! backend no faster than its healthy endpoints can carry at 1.5 × their share.

use super::*;
use crate::analysis::{Finding, Metric};

/// `healthy` of `total` active endpoints, and 2 healthy preview endpoints of 2.
fn capacity(healthy: u32, total: u32) -> Capacities {
    Capacities {
        active: Capacity { healthy, total },
        preview: Capacity {
            healthy: 2,
            total: 2,
        },
    }
}

/// A failed verdict: the preview's error rate `value` above 1%.
fn failed_by_error_rate(value: f64) -> Verdict {
    Verdict {
        findings: vec![Finding {
            metric: Metric::ErrorRate,
            value,
            threshold: 0.01,
            ok: false,
            between: None,
            unanswered: 0,
        }],
        ..verdict(Outcome::Fail)
    }
}

/// At step 3/3 with 100% applied to the preview, with `active` capacity reported.
fn at_full(active: Capacities) -> Harness {
    let mut h = Harness::holding();
    h.send(Input::Capacity(active));
    assert_eq!(actions(&h.window(Outcome::Pass)), [set(5000)]);
    h.applied(5000);
    assert_eq!(actions(&h.window(Outcome::Pass)), [set(10_000)]);
    h.applied(10_000);
    assert_eq!(h.r.phase, Phase::Progressing);
    h
}

#[test]
fn the_active_backend_gets_at_most_one_and_a_half_times_its_healthy_share() {
    let cap = |healthy, total| active_cap_bp(Capacity { healthy, total });
    assert_eq!(cap(0, 3), 0);
    assert_eq!(cap(1, 3), 5_000);
    assert_eq!(cap(2, 3), 10_000);
    assert_eq!(cap(3, 3), 10_000);
    assert_eq!(cap(1, 4), 3_750);
    assert_eq!(cap(1, 10), 1_500);
    assert_eq!(cap(1, 1), 10_000);
    assert_eq!(
        cap(0, 0),
        10_000,
        "no configured endpoint: no known capacity"
    );
    // Every healthy endpoint carries at most 1.5 × the share it has with all healthy.
    for total in 1..=12u32 {
        for healthy in 1..=total {
            let per_endpoint = f64::from(cap(healthy, total)) / f64::from(healthy);
            let share = 10_000.0 / f64::from(total);
            assert!(per_endpoint <= 1.5 * share + 1e-9, "{healthy}/{total}");
        }
    }
}

#[test]
fn the_rollback_weight_follows_the_active_capacity_and_never_rises() {
    let c = |healthy| Some(capacity(healthy, 3));
    assert_eq!(rollback_preview_bp(10_000, c(1), false), 5_000);
    assert_eq!(rollback_preview_bp(10_000, c(2), false), 0);
    assert_eq!(
        rollback_preview_bp(10_000, c(0), false),
        10_000,
        "never no backend"
    );
    assert_eq!(
        rollback_preview_bp(1_000, c(1), false),
        1_000,
        "never raised"
    );
    assert_eq!(rollback_preview_bp(10_000, c(1), true), 0, "hard: at once");
    assert_eq!(
        rollback_preview_bp(10_000, None, false),
        0,
        "no reading: at once"
    );
    let mut dead = capacity(1, 3);
    dead.preview.healthy = 0;
    assert_eq!(rollback_preview_bp(10_000, Some(dead), false), 0);
}

#[test]
fn abort_at_full_preview_waits_for_the_active_capacity_and_says_why() {
    let mut h = at_full(capacity(1, 3));
    let out = h.op(OperatorCommand::Abort);
    assert_eq!(actions(&out), [set(5_000)]);
    assert_eq!(h.r.phase, Phase::Aborting);
    let out = h.applied(5_000);
    assert_eq!(actions(&out), [], "green keeps 50% while blue has 1 of 3");
    assert_eq!(h.r.phase, Phase::Aborting);
    assert!(
        h.r.message
            .contains("blue at 50%, 1 of 3 endpoints healthy"),
        "{}",
        h.r.message
    );
    assert_eq!(
        h.r.next_wakeup(),
        None,
        "the wait for capacity has no deadline"
    );
    // A later tick changes nothing: no deadline forces blue past its capacity.
    assert_eq!(h.wait(600 * SECOND), []);
    // The same reading again is nothing new.
    assert_eq!(h.send(Input::Capacity(capacity(1, 3))), []);
    let out = h.send(Input::Capacity(capacity(2, 3)));
    assert_eq!(actions(&out), [set(0)]);
    assert_eq!(reasons(&out), ["CapacityChanged"]);
    let out = h.applied(0);
    assert_eq!(actions(&out), [Command::StopPreview]);
    assert_eq!(h.r.phase, Phase::Aborted);
}

/// Session 40: an abort holding green at 50% for blue's capacity, reattached from its record
/// (Kubernetes reloads one after every failed reconcile), keeps holding: no weight asked again,
/// no deadline, a `Reloaded` Event; once the reading read since allows less, it goes lower.
/// Before, each reattach asked for 50% again (a new weights generation and a deadline written
/// to status, the deadline cleared again once applied).
#[test]
fn a_reattached_capacity_wait_keeps_holding_without_asking_for_its_weight_again() {
    let mut h = at_full(capacity(1, 3));
    h.op(OperatorCommand::Abort);
    h.applied(5_000);
    let record = serde_json::to_value(&h.r).expect("record");
    let reload = crate::rollout::Reattach::Reload {
        error: "list the proxies' Leases: 500".into(),
    };
    let reattach = |h: &mut Harness| {
        h.r = serde_json::from_value(record.clone()).expect("record");
        h.send(Input::Capacity(capacity(1, 3)));
        h.send(Input::Reattached {
            deadline_left: None,
            cause: reload.clone(),
        })
    };
    let out = reattach(&mut h);
    assert_eq!(actions(&out), [], "green holds 50%: nothing to ask again");
    assert_eq!(reasons(&out), ["Reloaded"]);
    assert_eq!(h.r.next_wakeup(), None, "no deadline");
    assert_eq!((h.r.phase, h.r.preview_bp), (Phase::Aborting, 5_000));
    // Blue can carry all of it now: the reading lowers the weight, and the reattach asks again.
    h.r = serde_json::from_value(record).expect("record");
    h.send(Input::Capacity(capacity(3, 3)));
    let out = h.send(Input::Reattached {
        deadline_left: None,
        cause: reload,
    });
    assert_eq!(actions(&out), [set(0)]);
}

#[test]
fn a_rollback_with_no_healthy_active_endpoint_keeps_the_preview_serving() {
    let mut h = at_full(capacity(0, 3));
    let failed = failed_by_error_rate(0.05);
    h.wait(10 * SECOND);
    let out = h.send(Input::Verdict(failed));
    assert_eq!(
        actions(&out),
        [set(10_000)],
        "no backend is better than green"
    );
    h.applied(10_000);
    assert_eq!(h.r.phase, Phase::RollingBack);
    assert!(
        h.r.message.contains("blue at 0%, 0 of 3"),
        "{}",
        h.r.message
    );
    assert_eq!(
        actions(&h.send(Input::Capacity(capacity(1, 3)))),
        [set(5_000)]
    );
    h.applied(5_000);
    assert_eq!(actions(&h.send(Input::Capacity(capacity(3, 3)))), [set(0)]);
    assert_eq!(actions(&h.applied(0)), [Command::StopPreview]);
    assert_eq!(h.r.phase, Phase::RolledBack);
}

#[test]
fn a_preview_that_fails_hard_loses_all_its_weight_at_once() {
    // Crashed.
    let mut h = at_full(capacity(1, 3));
    let out = h.send(Input::PreviewExited {
        reason: "instance 0 exited with code 1".into(),
    });
    assert_eq!(actions(&out), [set(0)]);
    // Half or more of its requests failed.
    let mut h = at_full(capacity(1, 3));
    let failed = failed_by_error_rate(0.5);
    h.wait(10 * SECOND);
    assert_eq!(actions(&h.send(Input::Verdict(failed))), [set(0)]);
    // No healthy endpoint left.
    let mut dead = capacity(1, 3);
    dead.preview.healthy = 0;
    let mut h = at_full(dead);
    assert_eq!(actions(&h.op(OperatorCommand::Abort)), [set(0)]);
}

#[test]
fn a_preview_that_loses_its_endpoints_during_the_wait_goes_to_zero() {
    let mut h = at_full(capacity(1, 3));
    h.op(OperatorCommand::Abort);
    h.applied(5_000);
    let mut dead = capacity(1, 3);
    dead.preview.healthy = 0;
    assert_eq!(actions(&h.send(Input::Capacity(dead))), [set(0)]);
}

/// Session 44 (user44b, finding 2): an abort decided while blue had 1 of 1 endpoints healthy
/// asked for 0% at once; blue's only instance crashed in the next milliseconds, and green, the
/// only backend that could serve, was stopped anyway. A capacity reading with no healthy blue
/// endpoint before the preview is stopped gives green its share back, and the abort waits for
/// blue's capacity from there, as one decided with blue down does; once blue recovers, it ends.
#[test]
fn an_active_backend_that_goes_down_before_the_preview_stops_gets_the_preview_back() {
    let mut h = Harness::holding();
    h.send(Input::Capacity(capacity(1, 1)));
    assert_eq!(actions(&h.op(OperatorCommand::Abort)), [set(0)]);
    let out = h.send(Input::Capacity(capacity(0, 1)));
    assert_eq!(
        actions(&out),
        [set(1_000)],
        "green stopped while blue has no healthy endpoint"
    );
    assert_eq!(reasons(&out), ["CapacityChanged"]);
    assert!(
        words(&out)[0].contains("0 of 1 endpoints healthy, before 0% was applied: green is not stopped; it gets 10% back"),
        "{:?}",
        words(&out)
    );
    assert_eq!(h.r.phase, Phase::Aborting);
    // The 0% asked for before is applied after all: stale, green is not stopped.
    assert_eq!(h.applied(0), []);
    assert_eq!(actions(&h.applied(1_000)), [], "green keeps 10%");
    assert_eq!(h.r.phase, Phase::Aborting);
    assert!(
        h.r.message.contains("0 of 1 endpoints healthy")
            && h.r.message.contains("until blue can carry more"),
        "{}",
        h.r.message
    );
    assert_eq!(actions(&h.send(Input::Capacity(capacity(1, 1)))), [set(0)]);
    assert_eq!(actions(&h.applied(0)), [Command::StopPreview]);
    assert_eq!(h.r.phase, Phase::Aborted);
}

/// Session 44: the same for an automatic rollback, and for a reading that the 0% applied finds
/// already (a runtime that read it after asking for 0%, without telling the machine before):
/// green gets back what blue cannot carry, not all it had.
#[test]
fn a_rollback_whose_active_backend_lost_capacity_by_the_stop_keeps_what_it_cannot_carry() {
    let mut h = at_full(capacity(3, 3));
    h.wait(10 * SECOND);
    let failed = failed_by_error_rate(0.05);
    assert_eq!(actions(&h.send(Input::Verdict(failed))), [set(0)]);
    h.r.capacity = Some(capacity(1, 3));
    let out = h.applied(0);
    assert_eq!(actions(&out), [set(5_000)], "blue carries 50% at most");
    assert_eq!(h.r.phase, Phase::RollingBack);
    h.applied(5_000);
    assert_eq!(actions(&h.send(Input::Capacity(capacity(2, 3)))), [set(0)]);
    assert_eq!(actions(&h.applied(0)), [Command::StopPreview]);
    assert_eq!(h.r.phase, Phase::RolledBack);
}

/// Session 44: what goes back at once still does, whatever blue's capacity by the stop: a
/// preview that fails hard, and an operator's `abort --force`.
#[test]
fn a_hard_or_forced_undo_stops_the_preview_whatever_the_active_capacity() {
    let mut h = at_full(capacity(3, 3));
    let exited = Input::PreviewExited {
        reason: "instance 0 exited with code 1".into(),
    };
    assert_eq!(actions(&h.send(exited)), [set(0)]);
    assert_eq!(actions(&h.send(Input::Capacity(capacity(0, 3)))), []);
    assert_eq!(actions(&h.applied(0)), [Command::StopPreview]);
    let mut h = at_full(capacity(1, 3));
    h.op(OperatorCommand::Abort);
    h.applied(5_000);
    assert_eq!(actions(&h.op(OperatorCommand::ForceAbort)), [set(0)]);
    assert_eq!(actions(&h.send(Input::Capacity(capacity(0, 3)))), []);
    assert_eq!(actions(&h.applied(0)), [Command::StopPreview]);
    assert_eq!(h.r.phase, Phase::Aborted);
}

/// The event notes of `out`, in order.
fn words(out: &[Command]) -> Vec<String> {
    out.iter()
        .filter_map(|c| match c {
            Command::Event { message, .. } => Some(message.clone()),
            _ => None,
        })
        .collect()
}

/// The refusal of an abort during a rollback says what really happens: during a capacity wait,
/// that traffic is held on the preview on purpose and `abort --force` is the way out; once the
/// traffic goes back at once, the old words.
#[test]
fn an_abort_during_a_capacity_wait_is_refused_naming_the_wait_and_the_way_out() {
    let mut h = at_full(capacity(1, 3));
    h.op(OperatorCommand::Abort);
    h.applied(5_000);
    let message = h.r.message.clone();
    let out = h.op(OperatorCommand::Abort);
    assert_eq!(reasons(&out), ["CommandRejected"]);
    let note = words(&out).join("");
    assert!(
        note.starts_with(
            "abort rejected: already sending traffic back to blue as fast as its capacity allows \
             (blue at 50%, 1 of 3 endpoints healthy)"
        ) && note.contains("`abort --force` sends all of it back at once"),
        "{note}"
    );
    assert_eq!(h.r.message, message, "a refusal changes nothing");
    assert_eq!(h.r.phase, Phase::Aborting);
    // Blue recovers: all of it goes back at once, and the old words are true again.
    assert_eq!(actions(&h.send(Input::Capacity(capacity(3, 3)))), [set(0)]);
    let out = h.op(OperatorCommand::Abort);
    assert_eq!(
        words(&out),
        ["abort rejected: already sending all traffic back to the active backend"]
    );
    let out = h.op(OperatorCommand::ForceAbort);
    assert_eq!(
        words(&out),
        ["force-abort rejected: already sending all traffic back to blue at once"]
    );
}

/// `force-abort` during a capacity wait: 0 at once whatever blue's capacity, the reason keeps the
/// rollback's cause and names the operator's command, an `AbortForced` event says what was held.
#[test]
fn a_force_abort_ends_a_capacity_wait_at_once_and_names_the_operator() {
    let mut h = at_full(capacity(1, 3));
    let failed = failed_by_error_rate(0.05);
    h.wait(10 * SECOND);
    assert_eq!(actions(&h.send(Input::Verdict(failed))), [set(5_000)]);
    h.applied(5_000);
    assert_eq!(h.r.phase, Phase::RollingBack);
    let cause = h.r.reason.clone().expect("the rollback's cause");
    let out = h.op(OperatorCommand::ForceAbort);
    assert_eq!(actions(&out), [set(0)]);
    assert_eq!(reasons(&out), ["AbortForced"]);
    let note = words(&out).join("");
    assert_eq!(
        note,
        "force-abort by operator: all traffic sent back to blue at once (blue at 50%, 1 of 3 \
         endpoints healthy); green was kept at 50% until blue could carry more"
    );
    let reason = h.r.reason.clone().unwrap_or_default();
    assert!(reason.starts_with(&cause), "{reason}");
    assert!(
        reason.ends_with("; force-abort by operator: all traffic sent back to blue at once (blue at 50%, 1 of 3 endpoints healthy)"),
        "{reason}"
    );
    // A capacity reading meanwhile does not take it back, nor does a deadline's retry.
    assert_eq!(h.send(Input::Capacity(capacity(1, 3))), []);
    assert_eq!(actions(&h.applied(0)), [Command::StopPreview]);
    assert_eq!(h.r.phase, Phase::RolledBack, "the rollback's own outcome");
    assert!(
        h.r.message.contains("force-abort by operator"),
        "{}",
        h.r.message
    );
}

/// Before promotion `force-abort` is an abort that does not wait for blue's capacity; after the
/// swap it is refused as an abort is.
#[test]
fn a_force_abort_before_promotion_sends_everything_back_at_once() {
    let mut h = at_full(capacity(1, 3));
    let out = h.op(OperatorCommand::ForceAbort);
    assert_eq!(actions(&out), [set(0)]);
    assert_eq!(reasons(&out), ["Aborting"]);
    assert_eq!(h.r.phase, Phase::Aborting);
    assert!(
        h.r.reason
            .as_deref()
            .is_some_and(|r| r.starts_with("force-aborted by operator at step")),
        "{:?}",
        h.r.reason
    );
    assert_eq!(actions(&h.applied(0)), [Command::StopPreview]);
    assert_eq!(h.r.phase, Phase::Aborted);
    let out = h.op(OperatorCommand::ForceAbort);
    assert_eq!(
        words(&out),
        ["force-abort rejected: the rollout is already aborted"]
    );
}

#[test]
fn force_abort_has_one_name() {
    assert_eq!(OperatorCommand::ForceAbort.as_str(), "force-abort");
    assert_eq!(
        serde_json::to_value(OperatorCommand::ForceAbort).expect("json"),
        serde_json::json!("force-abort")
    );
    assert_eq!(
        serde_json::to_value(OperatorCommand::Abort).expect("json"),
        serde_json::json!("abort")
    );
}
