//! Operator commands (pause, resume, promote, abort), post-promotion waits and restarts.

use super::*;

type Setup = fn() -> Harness;

fn pending() -> Harness {
    Harness::new(config())
}

fn provisioning() -> Harness {
    let mut h = pending();
    h.send(Input::Start);
    h
}

fn weight_pending() -> Harness {
    let mut h = provisioning();
    h.send(Input::PreviewReady);
    h
}

fn paused() -> Harness {
    let mut h = Harness::holding();
    h.op(OperatorCommand::Pause);
    h
}

fn promote_pending() -> Harness {
    let mut h = Harness::holding();
    h.op(OperatorCommand::Promote);
    h
}

fn promoted() -> Harness {
    let mut h = promote_pending();
    h.applied(10_000);
    assert_eq!(h.r.phase, Phase::Promoted);
    h
}

fn retiring() -> Harness {
    let mut h = promoted();
    h.send(Input::RolesSwapped);
    h
}

fn completed() -> Harness {
    let mut h = retiring();
    h.send(Input::ActiveDrained);
    h.send(Input::ActiveStopped);
    h
}

fn rolling_back() -> Harness {
    let mut h = Harness::holding();
    h.window(Outcome::Fail);
    h
}

fn rolled_back() -> Harness {
    let mut h = rolling_back();
    h.applied(0);
    h
}

fn aborted() -> Harness {
    let mut h = paused();
    h.op(OperatorCommand::Abort);
    h.applied(0);
    h
}

#[test]
fn abort_wins_in_every_phase_before_promotion() {
    let table: [(&str, Setup); 6] = [
        ("provisioning", provisioning),
        ("waiting for step 1's weight", weight_pending),
        ("holding step 1", Harness::holding),
        ("paused", paused),
        ("promote pending (C10 B)", promote_pending),
        ("paused before ready", || {
            let mut h = provisioning();
            h.op(OperatorCommand::Pause);
            h
        }),
    ];
    for (name, setup) in table {
        let mut h = setup();
        let out = h.op(OperatorCommand::Abort);
        assert_eq!(
            (actions(&out), reasons(&out)),
            (vec![set(0)], vec!["Aborting"]),
            "{name}"
        );
        assert!(
            !h.r.promote_requested,
            "{name}: a pending promote is cancelled"
        );
        for _ in 0..3 {
            h.wait(Duration::from_secs(10));
        }
        h.send(Input::PreviewReady);
        assert_eq!(
            h.applied(10_000),
            [],
            "{name}: a late promote ack is ignored"
        );
        let out = h.applied(0);
        assert_eq!(
            (actions(&out), reasons(&out)),
            (vec![Command::StopPreview], vec!["Aborted"]),
            "{name}"
        );
        assert_eq!(h.r.phase, Phase::Aborted, "{name}");
        let after_abort = h.log.iter().skip_while(|c| **c != set(0));
        let later_weight = after_abort
            .clone()
            .any(|c| matches!(c, Command::SetWeights { preview_bp } if *preview_bp > 0));
        assert!(!later_weight, "{name}: no later step applied: {:?}", h.log);
        assert!(!h.log.contains(&Command::SwapRoles), "{name}");
    }
}

#[test]
fn c10_abort_during_a_hold_applies_no_later_step() {
    let mut h = Harness::holding();
    h.wait(Duration::from_secs(5));
    let out = h.op(OperatorCommand::Abort);
    assert_eq!(actions(&out), [set(0)]);
    assert!(
        h.r.next_wakeup().unwrap() >= h.now + Duration::from_secs(60),
        "only the deadline remains"
    );
    assert_eq!(
        h.wait(Duration::from_secs(5)),
        [],
        "the hold's end does nothing now"
    );
    h.applied(0);
    assert_eq!(h.r.phase, Phase::Aborted);
    assert_eq!(
        h.r.reason.as_deref(),
        Some("aborted by operator at step 1/3 (10%)")
    );
    assert!(!h.log.contains(&set(5000)));
}

#[test]
fn abort_before_start_ends_at_once() {
    let mut h = pending();
    let out = h.op(OperatorCommand::Abort);
    assert_eq!((actions(&out), reasons(&out)), (vec![], vec!["Aborted"]));
    assert_eq!(h.r.phase, Phase::Aborted);
}

#[test]
fn refused_commands_emit_command_rejected_and_change_nothing_else() {
    use OperatorCommand::*;
    let too_late = "too late: green is already promoted and the roles are swapped, nothing to \
                    abort; once this rollout has completed, roll the previous version out again \
                    (`crossfade migrate`) to go back";
    let no_pause = "too late: green is already promoted and the roles are swapped; the rollout \
                    completes by itself once blue is retired";
    let table: [(&str, Setup, OperatorCommand, &str); 13] = [
        ("promoted", promoted, Abort, too_late),
        (
            "rolled back",
            rolled_back,
            Abort,
            "the rollout is already rolled back",
        ),
        ("retiring", retiring, Abort, too_late),
        ("retiring", retiring, Pause, no_pause),
        ("retiring", retiring, Promote, "already promoted"),
        (
            "completed",
            completed,
            Abort,
            "the rollout is already completed",
        ),
        (
            "rolled back",
            rolled_back,
            Resume,
            "not paused (rolled back)",
        ),
        (
            "aborted",
            aborted,
            Promote,
            "the rollout is already aborted",
        ),
        (
            "rolling back",
            rolling_back,
            Abort,
            "already sending all traffic back to the active backend",
        ),
        ("pending", pending, Pause, "the rollout has not started"),
        (
            "holding",
            Harness::holding,
            Resume,
            "not paused (progressing)",
        ),
        ("paused", paused, Pause, "already paused"),
        (
            "promote pending",
            promote_pending,
            Promote,
            "promote already requested",
        ),
    ];
    for (name, setup, command, why) in table {
        let mut h = setup();
        let before = h.r.clone();
        let out = h.op(command);
        let note = format!("{} rejected: {why}", format!("{command:?}").to_lowercase());
        assert_eq!(
            out,
            [Command::Event {
                reason: "CommandRejected",
                message: note.clone()
            }],
            "{name}"
        );
        // The message (the situation, and a terminal rollout's outcome) is left as it was too.
        assert_eq!(h.r, before, "{name}");
    }
}

#[test]
fn pause_stops_the_clock_and_resume_restarts_the_hold() {
    let mut h = Harness::holding();
    h.wait(Duration::from_secs(5));
    let out = h.op(OperatorCommand::Pause);
    assert_eq!((actions(&out), reasons(&out)), (vec![], vec!["Paused"]));
    assert_eq!(
        h.r.message,
        "paused at step 1/3 (10%) by operator: resume, promote or abort"
    );
    assert_eq!(h.r.next_wakeup(), None);
    assert_eq!(
        h.wait(Duration::from_secs(600)),
        [],
        "no analysis, no deadline while paused"
    );
    let out = h.op(OperatorCommand::Resume);
    assert_eq!(
        (actions(&out), reasons(&out)),
        (vec![Command::OpenWindow], vec!["Resumed"])
    );
    assert_eq!(
        h.r.next_wakeup(),
        Some(h.now + Duration::from_secs(10)),
        "a full hold again"
    );
    let out = h.window(Outcome::Pass);
    assert_eq!(actions(&out), [set(5000)]);
}

#[test]
fn pause_before_ready_keeps_the_preview_at_zero_until_resumed() {
    let mut h = provisioning();
    h.op(OperatorCommand::Pause);
    assert_eq!(
        h.r.message,
        "paused while provisioning by operator: resume, promote or abort"
    );
    let out = h.send(Input::PreviewReady);
    assert_eq!(
        (actions(&out), reasons(&out)),
        (vec![], vec!["PreviewReady"])
    );
    // No step has begun: step 1 is 10%, not the 0% the preview holds (trial 30).
    assert_eq!(
        h.r.message,
        "paused before step 1/3 (10%) by operator: resume, promote or abort"
    );
    let out = h.op(OperatorCommand::Resume);
    assert_eq!(
        (actions(&out), reasons(&out)),
        (vec![set(1000)], vec!["Resumed", "StepStarted"])
    );
}

#[test]
fn resume_before_ready_goes_back_to_provisioning() {
    let mut h = provisioning();
    h.op(OperatorCommand::Pause);
    h.op(OperatorCommand::Resume);
    assert_eq!(h.r.phase, Phase::Provisioning);
    assert_eq!(
        h.send(Input::PreviewReady)
            .iter()
            .filter(|c| **c == set(1000))
            .count(),
        1
    );
}

#[test]
fn promote_skips_the_remaining_steps_without_waiting_for_analysis() {
    let mut h = Harness::holding();
    let out = h.op(OperatorCommand::Promote);
    assert_eq!(
        (actions(&out), reasons(&out)),
        (vec![set(10_000)], vec!["PromoteRequested"])
    );
    assert_eq!(
        h.r.message,
        "promoting: waiting for 100% to be applied to green"
    );
    let out = h.applied(10_000);
    assert_eq!(
        (actions(&out), reasons(&out)),
        (vec![Command::SwapRoles], vec!["Promoted"])
    );
    assert!(!h.log.contains(&Command::Analyse));
}

#[test]
fn promote_while_paused_resumes_and_promotes() {
    let mut h = paused();
    let out = h.op(OperatorCommand::Promote);
    assert_eq!(actions(&out), [set(10_000)]);
    assert_eq!(h.r.pause, None);
    h.applied(10_000);
    assert_eq!(h.r.phase, Phase::Promoted);
}

#[test]
fn promote_at_full_weight_swaps_at_once() {
    let mut h = Harness::holding();
    h.window(Outcome::Pass);
    h.applied(5000);
    h.window(Outcome::Pass);
    h.applied(10_000);
    let out = h.op(OperatorCommand::Promote);
    assert_eq!(actions(&out), [Command::SwapRoles]);
}

#[test]
fn pause_is_refused_while_a_promote_is_pending() {
    let mut h = promote_pending();
    let out = h.op(OperatorCommand::Pause);
    assert_eq!(reasons(&out), ["CommandRejected"]);
    assert_eq!(h.r.phase, Phase::Progressing);
}

#[test]
fn waits_after_promotion_are_retried_never_rolled_back() {
    let mut h = promoted();
    let out = h.wait(Duration::from_secs(60));
    assert_eq!(
        (actions(&out), reasons(&out)),
        (vec![Command::SwapRoles], vec!["DeadlineExceeded"])
    );
    assert_eq!(h.r.phase, Phase::Promoted);
    let out = h.send(Input::PreviewExited {
        reason: "exit code 1".into(),
    });
    assert_eq!(
        (actions(&out), reasons(&out)),
        (vec![], vec!["PreviewExited"])
    );
    assert_eq!(h.r.phase, Phase::Promoted, "no rollback after the swap");

    let mut h = retiring();
    let out = h.wait(Duration::from_secs(65));
    assert_eq!(reasons(&out), ["DeadlineExceeded"]);
    assert_eq!(
        actions(&out),
        [Command::DrainActive {
            deadline: h.now + Duration::from_secs(5)
        }]
    );
    h.send(Input::ActiveDrained);
    let out = h.wait(Duration::from_secs(60));
    assert_eq!(actions(&out), [Command::StopActive]);
}

#[test]
fn restart_rolls_back_before_promotion_and_finishes_after() {
    let table: [(&str, Setup, Vec<Command>, Phase); 7] = [
        (
            "holding",
            Harness::holding,
            vec![set(0)],
            Phase::RollingBack,
        ),
        ("paused", paused, vec![set(0)], Phase::RollingBack),
        (
            "rolling back",
            rolling_back,
            vec![set(0)],
            Phase::RollingBack,
        ),
        (
            "promoted",
            promoted,
            vec![Command::SwapRoles],
            Phase::Promoted,
        ),
        ("retiring", retiring, vec![], Phase::Retiring),
        ("completed", completed, vec![], Phase::Completed),
        ("aborted", aborted, vec![], Phase::Aborted),
    ];
    for (name, setup, expected, phase) in table {
        let h = setup();
        let json = serde_json::to_string(&h.r).unwrap();
        let restored: Rollout = serde_json::from_str(&json).unwrap();
        let mut h = Harness {
            r: restored,
            now: h.now,
            log: Vec::new(),
        };
        let out = h.send(Input::Restarted);
        let mut expected = expected;
        if name == "retiring" {
            expected = vec![Command::DrainActive {
                deadline: h.now + Duration::from_secs(5),
            }];
        }
        assert_eq!(actions(&out), expected, "{name}");
        assert_eq!(h.r.phase, phase, "{name}");
        if !out.is_empty() {
            assert_eq!(reasons(&out), ["Restarted"], "{name}");
        }
    }
}

#[test]
fn a_decision_says_accepted_with_the_new_phase_or_refused_with_the_reason() {
    let mut h = Harness::holding();
    let out = h.op(OperatorCommand::Pause);
    let decision = Decision::of(OperatorCommand::Pause, &h.r, &out);
    assert!(decision.accepted, "{decision:?}");
    assert_eq!(decision.phase, Phase::Paused);
    assert_eq!(decision.rollout, h.r.id);

    let out = h.op(OperatorCommand::Pause);
    let decision = Decision::of(OperatorCommand::Pause, &h.r, &out);
    assert!(!decision.accepted, "{decision:?}");
    assert_eq!(decision.phase, Phase::Paused);
    assert_eq!(decision.message, "pause rejected: already paused");

    let out = h.op(OperatorCommand::Abort);
    let decision = Decision::of(OperatorCommand::Abort, &h.r, &out);
    assert!(decision.accepted, "{decision:?}");
    assert_eq!(decision.phase, Phase::Aborting);
}

#[test]
fn reattach_resumes_where_the_rollout_stood_with_fresh_timers() {
    let table: [(&str, Setup, Vec<Command>, Phase); 6] = [
        (
            "provisioning",
            provisioning,
            vec![Command::StartPreview],
            Phase::Provisioning,
        ),
        (
            "weight pending",
            weight_pending,
            vec![set(1000)],
            Phase::Progressing,
        ),
        (
            "holding",
            Harness::holding,
            vec![Command::OpenWindow],
            Phase::Progressing,
        ),
        ("paused", paused, vec![], Phase::Paused),
        (
            "rolling back",
            rolling_back,
            vec![set(0)],
            Phase::RollingBack,
        ),
        (
            "promoted",
            promoted,
            vec![Command::SwapRoles],
            Phase::Promoted,
        ),
    ];
    for (name, setup, expected, phase) in table {
        let h = setup();
        let json = serde_json::to_string(&h.r).unwrap();
        let mut h = Harness {
            r: serde_json::from_str(&json).unwrap(),
            now: h.now + Duration::from_secs(600),
            log: Vec::new(),
        };
        let out = h.send(Input::Reattached {
            deadline_left: None,
            cause: crate::rollout::Reattach::Restart,
        });
        assert_eq!(actions(&out), expected, "{name}");
        assert_eq!(h.r.phase, phase, "{name}");
        assert_eq!(reasons(&out), ["Restarted"], "{name}");
    }
    for (name, setup) in [("completed", completed as Setup), ("aborted", aborted)] {
        let mut h = setup();
        assert_eq!(
            h.send(Input::Reattached {
                deadline_left: None,
                cause: crate::rollout::Reattach::Restart,
            }),
            [],
            "{name}"
        );
    }
}

#[test]
fn a_reattached_step_holds_again_and_then_advances() {
    let h = Harness::holding();
    let json = serde_json::to_string(&h.r).unwrap();
    let mut h = Harness {
        r: serde_json::from_str(&json).unwrap(),
        now: h.now,
        log: Vec::new(),
    };
    h.send(Input::Reattached {
        deadline_left: None,
        cause: crate::rollout::Reattach::Restart,
    });
    let out = h.window(Outcome::Pass);
    assert_eq!(
        actions(&out),
        [set(5000)],
        "the step advances after a full hold"
    );
    assert_eq!(h.r.step, 1);
}

#[test]
fn a_reattached_provisioning_rolls_back_after_a_fresh_deadline() {
    let mut h = provisioning();
    h.now += Duration::from_secs(59);
    h.send(Input::Reattached {
        deadline_left: None,
        cause: crate::rollout::Reattach::Restart,
    });
    assert_eq!(h.wait(Duration::from_secs(59)), []);
    let out = h.wait(Duration::from_secs(1));
    assert_eq!(actions(&out), [set(0)]);
    assert_eq!(reasons(&out), ["DeadlineExceeded"]);
}

/// Cases31: the progress deadline keeps what was left of it across a restart (the record kept it
/// as wall-clock time): a controller restarting more often than the deadline never rolled back a
/// preview that never became ready. In a step too; at most a whole deadline.
#[test]
fn a_reattached_rollout_keeps_what_was_left_of_its_progress_deadline() {
    let mut h = provisioning();
    let out = h.send(Input::Reattached {
        deadline_left: Some(Duration::from_secs(5)),
        cause: crate::rollout::Reattach::Restart,
    });
    let note = out.iter().find_map(|c| match c {
        Command::Event { message, .. } => Some(message.clone()),
        _ => None,
    });
    assert_eq!(
        note.as_deref(),
        Some("crossfade restarted while provisioning: resuming with fresh timers (progress deadline: 5s left)")
    );
    assert_eq!(h.wait(Duration::from_secs(4)), []);
    let out = h.wait(Duration::from_secs(1));
    assert_eq!(reasons(&out), ["DeadlineExceeded"]);

    // Passed while no controller ran: at the first tick.
    let mut h = provisioning();
    h.send(Input::Reattached {
        deadline_left: Some(Duration::ZERO),
        cause: crate::rollout::Reattach::Restart,
    });
    assert_eq!(reasons(&h.wait(Duration::ZERO)), ["DeadlineExceeded"]);

    // A step's deadline the same way, but at least one hold and one analysis interval (the
    // step's progress is the controller's own work, stopped while it was down); a deadline
    // longer than the policy's (a clock set back) is cut to it (60s).
    let mut h = Harness::holding();
    let least = h.r.config.hold_of(0) + h.r.config.interval_of(0);
    h.send(Input::Reattached {
        deadline_left: Some(Duration::from_secs(3600)),
        cause: crate::rollout::Reattach::Restart,
    });
    assert_eq!(h.r.deadline(), Some(h.now + Duration::from_secs(60)));
    h.send(Input::Reattached {
        deadline_left: Some(least + Duration::from_secs(7)),
        cause: crate::rollout::Reattach::Restart,
    });
    assert_eq!(h.r.deadline(), Some(h.now + least + Duration::from_secs(7)));
    h.send(Input::Reattached {
        deadline_left: Some(Duration::ZERO),
        cause: crate::rollout::Reattach::Restart,
    });
    assert_eq!(h.r.deadline(), Some(h.now + least));
    assert!(least < Duration::from_secs(60), "the test's policy");
}

/// Session 39: after promotion the re-issued wait keeps what was left of the deadline too.
/// Before, it got a whole one at every reattach, which Kubernetes mode does after every failed
/// reconcile: a new deadline written to status each time, a write that woke the next reconcile.
#[test]
fn a_reattached_rollout_after_promotion_asks_again_by_the_deadline_it_had() {
    let mut h = promoted();
    let out = h.send(Input::Reattached {
        deadline_left: Some(Duration::from_secs(5)),
        cause: crate::rollout::Reattach::Restart,
    });
    assert_eq!(actions(&out), [Command::SwapRoles]);
    assert_eq!(h.r.deadline(), Some(h.now + Duration::from_secs(5)));
    assert_eq!(h.wait(Duration::from_secs(4)), []);
    let out = h.wait(Duration::from_secs(1));
    assert_eq!(actions(&out), [Command::SwapRoles]);
    assert_eq!(reasons(&out), ["DeadlineExceeded"]);

    // A record without one (an earlier version's): a whole deadline.
    let mut h = promoted();
    h.send(Input::Reattached {
        deadline_left: None,
        cause: crate::rollout::Reattach::Restart,
    });
    assert_eq!(h.r.deadline(), Some(h.now + h.r.config.progress_deadline));
}

#[test]
fn a_refused_command_never_changes_the_recorded_outcome() {
    // Trial report 6, F14: an abort refused while the rolled-back preview was still stopping
    // was appended to the outcome ("rolled back: ...; abort rejected: ...") for good.
    let mut h = rolled_back();
    let outcome = h.r.message.clone();
    let out = h.op(OperatorCommand::Abort);
    assert_eq!(reasons(&out), ["CommandRejected"]);
    assert_eq!(h.r.message, outcome);
    assert!(!h.r.message.contains("rejected"), "{}", h.r.message);
    // The refusal is the command's answer.
    let decision = Decision::of(OperatorCommand::Abort, &h.r, &out);
    assert!(!decision.accepted);
    assert_eq!(
        decision.message,
        "abort rejected: the rollout is already rolled back"
    );
}

/// The event notes with `reason`, in order.
fn notes_of(out: &[Command], wanted: &str) -> Vec<String> {
    out.iter()
        .filter_map(|c| match c {
            Command::Event { reason, message } if *reason == wanted => Some(message.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn an_abort_not_asked_by_the_operator_says_its_cause_and_is_never_rejected() {
    // Trial 10, K3: a supersede and a deletion were reported as "aborted by operator".
    let causes = [
        (
            AbortCause::Superseded { generation: 3 },
            "superseded by spec generation 3",
        ),
        (AbortCause::Deleted, "TrafficShift deleted"),
    ];
    for (cause, words) in causes {
        let mut h = Harness::holding();
        let out = h.send(Input::Abort(cause.clone()));
        assert_eq!(actions(&out), [set(0)], "{words}");
        assert_eq!(
            notes_of(&out, "Aborting"),
            [format!(
                "{words} at step 1/3 (10%); sending all traffic back to blue"
            )]
        );
        h.applied(0);
        assert_eq!(h.r.phase, Phase::Aborted);
        assert_eq!(
            h.r.reason.as_deref(),
            Some(format!("{words} at step 1/3 (10%)").as_str())
        );
        assert!(!h.r.message.contains("operator"), "{}", h.r.message);

        let mut h = pending();
        h.send(Input::Abort(cause.clone()));
        assert_eq!(h.r.phase, Phase::Aborted);
        assert_eq!(
            h.r.reason.as_deref(),
            Some(format!("{words} before start").as_str())
        );

        // Where an abort does not apply, nothing happens: no CommandRejected for a command
        // nobody gave.
        let setups: [(&str, Setup); 4] = [
            ("promoted", promoted),
            ("retiring", retiring),
            ("completed", completed),
            ("rolling back", rolling_back),
        ];
        for (name, setup) in setups {
            let mut h = setup();
            let phase = h.r.phase;
            let out = h.send(Input::Abort(cause.clone()));
            assert_eq!(out, [], "{words}: {name}");
            assert_eq!(h.r.phase, phase, "{words}: {name}");
        }
    }
    // The operator's own abort keeps its words, and is refused where it does not apply.
    let mut h = Harness::holding();
    let out = h.op(OperatorCommand::Abort);
    assert_eq!(
        notes_of(&out, "Aborting"),
        ["aborted by operator at step 1/3 (10%); sending all traffic back to blue"]
    );
    assert_eq!(
        reasons(&promoted().op(OperatorCommand::Abort)),
        ["CommandRejected"]
    );
}

#[test]
fn a_target_changed_under_the_rollout_rolls_back_until_the_roles_swap() {
    // Trial 10, K4: promotion wrote the rollout's image over an operator's `kubectl set image`.
    let why = "deployment web's pod template was changed by another client";
    let mut h = promoted();
    let out = h.send(Input::TargetChanged { reason: why.into() });
    assert_eq!(actions(&out), [set(0)]);
    assert_eq!(
        notes_of(&out, "TargetChanged"),
        [format!("{why}; rolling back")]
    );
    assert_eq!(h.r.phase, Phase::RollingBack);
    let out = h.applied(0);
    assert_eq!(actions(&out), [Command::StopPreview]);
    assert_eq!(h.r.phase, Phase::RolledBack);
    assert_eq!(h.r.reason.as_deref(), Some(why));
    let mut h = Harness::holding();
    h.send(Input::TargetChanged { reason: why.into() });
    assert_eq!(h.r.phase, Phase::RollingBack);
    // After the swap the target runs the new images: too late, nothing happens.
    let setups: [(&str, Setup); 3] = [
        ("retiring", retiring),
        ("completed", completed),
        ("rolling back", rolling_back),
    ];
    for (name, setup) in setups {
        let mut h = setup();
        let phase = h.r.phase;
        assert_eq!(
            h.send(Input::TargetChanged { reason: why.into() }),
            [],
            "{name}"
        );
        assert_eq!(h.r.phase, phase, "{name}");
    }
}

/// Trial 32 (newuser32, D): a weight increase waits for the preview to pass its readiness probe
/// again, and an operator's `promote` for 100% to be applied. A preview that hung then kept its
/// share unjudged until the progress deadline. Now the analysis goes on at the applied weight
/// while the next one waits: a pass changes nothing, a failure rolls back.
#[test]
fn a_failed_look_while_a_promote_waits_for_its_weight_rolls_back_and_a_pass_changes_nothing() {
    let mut h = promote_pending();
    let out = h.window(Outcome::Pass);
    assert!(out.is_empty(), "{out:?}");
    assert!(h.r.weights_pending);
    assert_eq!(h.r.phase, Phase::Progressing);
    let out = h.window(Outcome::Fail);
    assert_eq!(h.r.phase, Phase::RollingBack, "{out:?}");
    assert!(
        h.r.message
            .contains("step 1/3 at 10%, while 100% waited to be applied: analysis failed"),
        "{}",
        h.r.message
    );
}

/// The same for a step's weight increase: the look judges the weight applied before.
#[test]
fn a_failed_look_while_a_steps_weight_waits_rolls_back() {
    let mut h = Harness::holding();
    h.window(Outcome::Pass);
    assert_eq!(h.wait(SECOND), []);
    assert!(h.r.weights_pending, "step 2's 50% requested");
    let out = h.window(Outcome::Fail);
    assert_eq!(h.r.phase, Phase::RollingBack, "{out:?}");
    // No look before any weight was applied: the first step has nothing to judge.
    let mut h = weight_pending();
    assert!(!h.wait(10 * SECOND).contains(&Command::Analyse));
    assert!(!h.wait(10 * SECOND).contains(&Command::Analyse));
}

/// Trial 32 (check32's leftover): a held retirement (the promoted backend cannot serve, the old
/// one is kept as its backup) had no end an operator could choose: abort was "too late". Now an
/// abort gives all the traffic back to the old backend at once and stops the promoted one; an
/// abort in `Retiring` without a hold is still too late.
#[test]
fn an_abort_during_a_held_retirement_gives_everything_back_to_the_old_backend() {
    let mut h = retiring();
    let out = h.op(OperatorCommand::Abort);
    assert_eq!(h.r.phase, Phase::Retiring, "{out:?}");
    assert!(reasons(&out).contains(&"CommandRejected"), "{out:?}");
    h.send(Input::RetireHeld);
    let out = h.op(OperatorCommand::Abort);
    assert_eq!(
        actions(&out),
        [Command::RevertSwap, Command::StopPreview],
        "{out:?}"
    );
    assert_eq!(h.r.phase, Phase::Aborted);
    assert_eq!(h.r.active, Slot::Blue);
    assert!(!h.r.retire_held);
    assert!(
        h.r.message
            .contains("all traffic back to blue at once, green stopped"),
        "{}",
        h.r.message
    );
    assert!(h.wait(60 * SECOND).is_empty());
}
