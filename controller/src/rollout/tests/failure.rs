//! Failures that roll back: deadlines (C09), a preview that fails or exits.

use super::*;

#[test]
fn deadlines_roll_back_with_deadline_exceeded() {
    // Provisioning never finishes.
    let mut h = Harness::new(config());
    h.send(Input::Start);
    assert_eq!(h.r.next_wakeup(), Some(h.now + 60 * SECOND));
    let out = h.wait(60 * SECOND);
    assert_eq!(
        (actions(&out), reasons(&out)),
        (vec![set(0)], vec!["DeadlineExceeded"])
    );
    assert_eq!(
        h.r.reason.as_deref(),
        Some("green not ready within progress_deadline 1m")
    );

    // A step that stays inconclusive (C09: crash-looping preview with too little traffic).
    let mut c = config();
    c.analysis.max_inconclusive = 100;
    let mut h = Harness::new(c);
    h.send(Input::Start);
    h.send(Input::PreviewReady);
    h.applied(1000);
    for _ in 0..5 {
        h.window(Outcome::Inconclusive);
    }
    let out = h.wait(10 * SECOND);
    assert_eq!(
        (actions(&out), reasons(&out)),
        (vec![set(0)], vec!["DeadlineExceeded"])
    );
    assert_eq!(
        h.r.reason.as_deref(),
        Some(
            "step 1/3 (10%) did not pass within progress_deadline 1m \
              (last analysis inconclusive: test inconclusive)"
        )
    );
}

#[test]
fn a_weight_never_applied_hits_the_deadline() {
    let mut h = Harness::new(config());
    h.send(Input::Start);
    h.send(Input::PreviewReady);
    let out = h.wait(60 * SECOND);
    assert_eq!(reasons(&out), ["DeadlineExceeded"]);
    assert!(h.r.reason.as_deref().unwrap().contains("was not applied"));
    // The rollback's own weight 0 is retried until applied; the preview is never stopped first.
    let out = h.wait(60 * SECOND);
    assert_eq!(
        (actions(&out), reasons(&out)),
        (vec![set(0)], vec!["DeadlineExceeded"])
    );
    assert!(!h.log.contains(&Command::StopPreview));
}

#[test]
fn preview_exit_or_failure_rolls_back_before_promotion() {
    let mut h = Harness::new(config());
    h.send(Input::Start);
    let out = h.send(Input::PreviewFailed {
        reason: "instance 1 not ready after 30s".into(),
    });
    assert_eq!(
        (actions(&out), reasons(&out)),
        (vec![set(0)], vec!["PreviewFailed"])
    );

    let mut h = Harness::holding();
    let out = h.send(Input::PreviewExited {
        reason: "exit code 1".into(),
    });
    assert_eq!(
        (actions(&out), reasons(&out)),
        (vec![set(0)], vec!["PreviewExited"])
    );
    assert_eq!(
        h.r.reason.as_deref(),
        Some("preview green exited: exit code 1")
    );
    assert_eq!(
        h.send(Input::PreviewExited {
            reason: "again".into()
        }),
        [],
        "already rolling back"
    );
}
