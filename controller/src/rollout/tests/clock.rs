//! The current step's hold clock ([`Rollout::hold_clock`]): since when, elapsed, left (trial 9,
//! I14). The harness injects `now`: no timer, no sleep.

use super::*;

fn clock_at(h: &Harness) -> HoldClock {
    h.r.hold_clock(h.now).expect("a step is holding")
}

#[test]
fn the_hold_counts_from_the_applied_weight_and_says_what_is_left() {
    let mut h = Harness::new(config());
    h.send(Input::Start);
    assert_eq!(h.r.hold_clock(h.now), None, "provisioning: no hold");
    h.send(Input::PreviewReady);
    h.now += 2 * SECOND;
    assert_eq!(h.r.hold_clock(h.now), None, "weight requested, not applied");
    h.applied(1000);
    let t0 = h.now;
    assert_eq!(
        clock_at(&h),
        HoldClock {
            started: t0,
            hold: 10 * SECOND,
            elapsed: Duration::ZERO,
            left: 10 * SECOND,
            next_analysis_in: 10 * SECOND,
        }
    );
    h.now += Duration::from_millis(4_250);
    let clock = clock_at(&h);
    assert_eq!(clock.started, t0);
    assert_eq!(clock.elapsed, Duration::from_millis(4_250));
    assert_eq!(clock.left, Duration::from_millis(5_750));
    assert_eq!(clock.next_analysis_in, Duration::from_millis(5_750));

    // The window closes: its verdict is awaited, the hold is over.
    assert_eq!(h.wait(Duration::from_millis(5_750)), [Command::Analyse]);
    let clock = clock_at(&h);
    assert_eq!((clock.elapsed, clock.left), (10 * SECOND, Duration::ZERO));
    assert_eq!(clock.next_analysis_in, Duration::ZERO, "being judged");

    // Inconclusive: the step keeps holding past its hold, the next window is timed.
    h.send(Input::Verdict(verdict(Outcome::Inconclusive)));
    h.now += 3 * SECOND;
    let clock = clock_at(&h);
    assert_eq!((clock.elapsed, clock.left), (13 * SECOND, Duration::ZERO));
    assert_eq!(clock.next_analysis_in, 7 * SECOND);

    // The next step's clock starts when its weight is applied, not when it is requested.
    h.now += 7 * SECOND;
    h.send(Input::Tick);
    h.send(Input::Verdict(verdict(Outcome::Pass)));
    assert_eq!(h.r.hold_clock(h.now), None, "50% requested");
    h.now += SECOND;
    h.applied(5000);
    assert_eq!(clock_at(&h).started, h.now);
    assert_eq!(clock_at(&h).elapsed, Duration::ZERO);
}

#[test]
fn an_analysis_interval_shorter_than_the_hold_is_timed_on_its_own() {
    let mut c = config();
    c.hold = 60 * SECOND;
    c.progress_deadline = 120 * SECOND;
    c.analysis.interval = Some(15 * SECOND);
    let mut h = Harness::new(c);
    h.send(Input::Start);
    h.send(Input::PreviewReady);
    h.applied(1000);
    h.now += 20 * SECOND;
    h.send(Input::Tick);
    h.send(Input::Verdict(verdict(Outcome::Pass)));
    let clock = clock_at(&h);
    assert_eq!(
        (clock.hold, clock.elapsed, clock.left),
        (60 * SECOND, 20 * SECOND, 40 * SECOND)
    );
    assert_eq!(
        clock.next_analysis_in,
        15 * SECOND,
        "window reopened at 20s"
    );
}

#[test]
fn resume_restarts_the_hold_from_zero() {
    let mut h = Harness::holding();
    h.now += 6 * SECOND;
    assert_eq!(clock_at(&h).elapsed, 6 * SECOND);
    h.op(OperatorCommand::Pause);
    assert_eq!(h.r.hold_clock(h.now), None, "paused: no hold runs");
    h.now += 100 * SECOND;
    let out = h.op(OperatorCommand::Resume);
    assert!(out.contains(&Command::OpenWindow), "a new window: {out:?}");
    let clock = clock_at(&h);
    assert_eq!(clock.started, h.now);
    assert_eq!((clock.elapsed, clock.left), (Duration::ZERO, 10 * SECOND));
    assert_eq!(clock.next_analysis_in, 10 * SECOND);
}

#[test]
fn a_rollout_read_back_from_its_record_shows_no_hold_it_did_not_time() {
    let mut h = Harness::holding();
    h.now += 3 * SECOND;
    assert!(h.r.hold_clock(h.now).is_some());
    let json = serde_json::to_string(&h.r).expect("serialises");
    let loaded: Rollout = serde_json::from_str(&json).expect("loads");
    assert_eq!(loaded.phase, Phase::Progressing);
    assert_eq!(loaded.hold_clock(h.now), None);
}

#[test]
fn a_halt_at_a_gate_stops_showing_a_hold() {
    let mut h = Harness::holding();
    assert!(h.r.hold_clock(h.now).is_some());
    h.r.halt_at_gate(crate::spec::GatePoint::BeforePromotion, 0);
    assert_eq!(h.r.hold_clock(h.now), None);
}
