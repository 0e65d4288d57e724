//! Analysis verdicts driving a step: pass, fail, inconclusive streaks, empty windows, holds.

use super::*;
use crate::analysis::Metric;

#[test]
fn failed_analysis_sets_preview_weight_zero_then_stops_the_preview() {
    let mut h = Harness::holding();
    h.window(Outcome::Pass);
    h.applied(5000);
    let out = h.window(Outcome::Fail);
    assert_eq!(actions(&out), [set(0)]);
    assert_eq!(reasons(&out), ["AnalysisFailed"]);
    assert_eq!(h.r.phase, Phase::RollingBack);
    assert!(
        !h.r.is_terminal(),
        "the preview is stopped only after weight 0 is applied"
    );
    assert_eq!(
        h.applied(5000),
        [],
        "a late ack of the old weight is ignored"
    );
    let out = h.applied(0);
    assert_eq!(actions(&out), [Command::StopPreview]);
    assert_eq!(reasons(&out), ["RolledBack"]);
    let note = out.iter().find_map(|c| match c {
        Command::Event { message, .. } => Some(message.as_str()),
        _ => None,
    });
    assert!(
        note.is_some_and(|n| n.starts_with("rolled back: ") && n.contains("stopping green")),
        "{note:?}"
    );
    assert_eq!(h.r.phase, Phase::RolledBack);
    assert_eq!(h.r.active, Slot::Blue, "the active backend is untouched");
    assert_eq!(
        h.r.reason.as_deref(),
        Some("step 2/3 at 50%: analysis failed: test failed")
    );
    assert_eq!(
        h.r.message,
        "rolled back: step 2/3 at 50%: analysis failed: test failed"
    );
    let touched_active = h.log.iter().any(|c| {
        matches!(
            c,
            Command::StopActive | Command::DrainActive { .. } | Command::SwapRoles
        )
    });
    assert!(!touched_active, "{:?}", h.log);
}

#[test]
fn inconclusive_streak_never_advances_and_follows_the_policy() {
    // (policy, final phase, last commands' actions, last event reasons)
    let table = [
        (
            InconclusivePolicy::Rollback,
            Phase::RollingBack,
            vec![set(0)],
            vec!["AnalysisInconclusive"],
        ),
        (
            InconclusivePolicy::Pause,
            Phase::Paused,
            vec![],
            vec!["AnalysisInconclusive", "Paused"],
        ),
    ];
    for (policy, phase, last_actions, last_reasons) in table {
        let mut c = config();
        c.analysis.on_inconclusive = policy;
        let mut h = Harness::new(c);
        h.send(Input::Start);
        h.send(Input::PreviewReady);
        h.applied(1000);
        for i in 1..3 {
            let out = h.window(Outcome::Inconclusive);
            assert_eq!(
                actions(&out),
                [],
                "window {i}: hold elapsed but nothing advances"
            );
            assert_eq!(h.r.inconclusive_streak, i);
        }
        let out = h.window(Outcome::Inconclusive);
        assert_eq!(
            (h.r.phase, actions(&out), reasons(&out)),
            (phase, last_actions, last_reasons)
        );
        assert!(!h.log.contains(&set(5000)), "{policy:?}: never advanced");
        assert!(!h.log.contains(&Command::SwapRoles));
    }
}

#[test]
fn paused_by_inconclusive_policy_says_why() {
    let mut c = config();
    c.analysis.on_inconclusive = InconclusivePolicy::Pause;
    c.analysis.max_inconclusive = 1;
    let mut h = Harness::new(c);
    h.send(Input::Start);
    h.send(Input::PreviewReady);
    h.applied(1000);
    h.window(Outcome::Inconclusive);
    assert_eq!(h.r.pause, Some(PauseReason::Inconclusive));
    assert_eq!(
        h.r.message,
        "paused at step 1/3 (10%) after 1 inconclusive analyses in a row \
         (last analysis inconclusive (test inconclusive)): resume, promote or abort"
    );
    assert_eq!(h.r.next_wakeup(), None, "no timer runs while paused");
}

#[test]
fn an_empty_window_never_passes() {
    let judge = ThresholdJudge::new(config().analysis);
    let mut h = Harness::holding();
    for _ in 0..2 {
        h.wait(10 * SECOND);
        let v = judge.judge(
            &Window::default(),
            &Window::from_counters(900, 0, Default::default()),
        );
        assert_eq!(v.outcome, Outcome::Inconclusive);
        let out = h.send(Input::Verdict(v));
        assert_eq!(actions(&out), []);
    }
    assert_eq!(h.r.step, 0);
    assert_eq!(h.r.preview_bp, 1000);
}

#[test]
fn hold_elapsed_with_an_inconclusive_last_window_keeps_analysing_until_a_pass() {
    let mut h = Harness::holding();
    h.window(Outcome::Inconclusive);
    assert_eq!(
        h.r.next_wakeup(),
        Some(h.now + 10 * SECOND),
        "next window, not an advance"
    );
    let out = h.window(Outcome::Pass);
    assert_eq!(actions(&out), [set(5000)]);
    assert_eq!(h.r.inconclusive_streak, 0);
}

/// Runs step 0 (hold 10 s, `analysis.interval` 4 s) second by second, answering each analysis
/// with the next of `outcomes` (then passes); returns the second the step ended at (it advanced
/// or rolled back) and how many analyses were asked.
fn hold_not_a_multiple_of_the_interval(outcomes: &[Outcome]) -> (Harness, u32, usize) {
    let verdicts: Vec<Verdict> = outcomes.iter().map(|o| verdict(*o)).collect();
    hold_not_a_multiple_with(config(), &verdicts)
}

/// [`hold_not_a_multiple_of_the_interval`] with config `c` (its interval set to 4 s) and each
/// analysis answered with the next of `verdicts` (then passes).
fn hold_not_a_multiple_with(mut c: RolloutConfig, verdicts: &[Verdict]) -> (Harness, u32, usize) {
    c.analysis.interval = Some(4 * SECOND);
    let mut h = Harness::new(c);
    h.send(Input::Start);
    h.send(Input::PreviewReady);
    h.applied(1000);
    let mut analyses = 0;
    let mut at = 0;
    while h.r.step == 0 && h.r.phase == Phase::Progressing && at < 30 {
        at += 1;
        for c in h.wait(SECOND) {
            if c == Command::Analyse {
                let answer = (verdicts.get(analyses).cloned()).unwrap_or(verdict(Outcome::Pass));
                analyses += 1;
                h.send(Input::Verdict(answer));
            }
        }
    }
    (h, at, analyses)
}

/// A pass before the hold ends waits for it; at its end one more look, over the traffic since
/// the last, decides: the step advanced on the pass at 8 s, so the step's last 2 s went
/// unjudged before more weight (session 31's leftover).
#[test]
fn a_pass_before_the_hold_ends_waits_for_the_hold_and_a_look_at_its_end() {
    let (h, at, analyses) = hold_not_a_multiple_of_the_interval(&[]);
    assert_eq!(
        (at, analyses),
        (10, 3),
        "advances at the hold (10s) after passes at 4s, 8s and 10s"
    );
    assert_eq!(h.r.preview_bp, 5000);
}

/// The look at the hold's end fails: the rollout rolls back instead of giving the next weight.
#[test]
fn a_failed_look_at_the_end_of_the_hold_rolls_back_rather_than_advancing() {
    let outcomes = [Outcome::Pass, Outcome::Pass, Outcome::Fail];
    let (h, at, analyses) = hold_not_a_multiple_of_the_interval(&outcomes);
    assert_eq!((at, analyses), (10, 3));
    assert_eq!(h.r.step, 0);
    assert_ne!(h.r.preview_bp, 5000, "{:?}", h.r.phase);
    assert!(
        matches!(h.r.phase, Phase::RollingBack | Phase::RolledBack),
        "{:?}",
        h.r.phase
    );
}

/// The look at the hold's end sees too few requests since the pass at 8 s (an inconclusive
/// window): the step's earlier pass stands and the step advances, as before that look existed.
/// With `max_inconclusive: 1` it rolled back a step that passed every window with enough
/// traffic (check33: hold 10s, interval 4s, min_requests 20 at about 10 requests/s to green:
/// `analysis inconclusive (1 of 1 in a row): 15 requests < 20`, exit 3).
#[test]
fn a_thin_look_at_the_end_of_the_hold_leaves_the_earlier_pass_standing() {
    for policy in [InconclusivePolicy::Rollback, InconclusivePolicy::Pause] {
        let mut c = config();
        c.analysis.max_inconclusive = 1;
        c.analysis.on_inconclusive = policy;
        let answers = [Outcome::Pass, Outcome::Pass, Outcome::Inconclusive].map(verdict);
        let (h, at, analyses) = hold_not_a_multiple_with(c, &answers);
        assert_eq!((at, analyses), (10, 3), "{policy:?}");
        assert_eq!(
            (h.r.phase, h.r.step, h.r.preview_bp),
            (Phase::Progressing, 1, 5000),
            "{policy:?}"
        );
        assert_eq!(h.r.inconclusive_streak, 0, "{policy:?}");
    }
}

/// An interval that divides the hold (10 s, 5 s) brings the look at the hold's end with the
/// regular look at 10 s: it is the same look, and its thin window leaves the pass at 5 s
/// standing too, whichever timer fired first.
#[test]
fn a_look_due_with_the_hold_s_end_after_a_pass_is_the_look_at_its_end() {
    let mut c = config();
    c.analysis.max_inconclusive = 1;
    c.analysis.interval = Some(5 * SECOND);
    let mut h = Harness::new(c);
    h.send(Input::Start);
    h.send(Input::PreviewReady);
    h.applied(1000);
    let answers = [Outcome::Pass, Outcome::Inconclusive];
    let mut analyses = 0;
    let mut at = 0;
    while h.r.step == 0 && h.r.phase == Phase::Progressing && at < 30 {
        at += 1;
        for c in h.wait(SECOND) {
            if c == Command::Analyse {
                let outcome = answers.get(analyses).copied().unwrap_or(Outcome::Pass);
                analyses += 1;
                h.send(Input::Verdict(verdict(outcome)));
            }
        }
    }
    assert_eq!((at, analyses), (10, 2));
    assert_eq!((h.r.phase, h.r.step), (Phase::Progressing, 1));
}

/// A look at the hold's end whose window the proxies did not split as published (green served
/// none of its share since the last pass) is evidence, not a thin window: it counts toward
/// `max_inconclusive` as any inconclusive look does.
#[test]
fn a_look_at_the_end_of_the_hold_the_proxies_did_not_split_counts_as_inconclusive() {
    let mut c = config();
    c.analysis.max_inconclusive = 1;
    let off = crate::analysis::split::guard(verdict(Outcome::Pass), 1000, 0, 400);
    assert!(off.finding(Metric::PreviewShare).is_some(), "{off:?}");
    let answers = [verdict(Outcome::Pass), verdict(Outcome::Pass), off];
    let (h, at, analyses) = hold_not_a_multiple_with(c, &answers);
    assert_eq!((at, analyses), (10, 3));
    assert_eq!(h.r.step, 0);
    assert!(
        matches!(h.r.phase, Phase::RollingBack | Phase::RolledBack),
        "{:?}",
        h.r.phase
    );
}

/// Case C14 through the look at the hold's end: since the pass at 8 s, green (at 10 %) was held
/// out by health checks and served none of 120 requests, too few for the threshold judge
/// (inconclusive). That is no thin window but green out of traffic (0.9¹²⁰ ≈ 3·10⁻⁶ by
/// chance): it counts toward `max_inconclusive` and the step rolls back. The normal
/// approximation's 4σ (11 points there) let it pass as thin, and the step advanced on its
/// earlier pass.
#[test]
fn c14_a_look_at_the_end_of_the_hold_where_green_served_none_of_a_small_window_counts() {
    let mut c = config();
    c.analysis.max_inconclusive = 1;
    let applied = c.weight_bp(0);
    let thin = verdict(Outcome::Inconclusive);
    let none = crate::analysis::split::guard(thin, applied, 0, 120);
    let answers = [verdict(Outcome::Pass), verdict(Outcome::Pass), none];
    let (h, at, analyses) = hold_not_a_multiple_with(c, &answers);
    assert_eq!((at, analyses), (10, 3));
    assert_eq!(h.r.step, 0, "advanced on the earlier pass");
    assert!(
        matches!(h.r.phase, Phase::RollingBack | Phase::RolledBack),
        "{:?}",
        h.r.phase
    );
}

#[test]
fn verdict_history_is_bounded() {
    let mut c = config();
    c.analysis.max_inconclusive = 1000;
    c.progress_deadline = Duration::from_secs(100_000);
    let mut h = Harness::new(c);
    h.send(Input::Start);
    h.send(Input::PreviewReady);
    h.applied(1000);
    for _ in 0..(MAX_VERDICTS + 10) {
        h.window(Outcome::Inconclusive);
    }
    assert_eq!(h.r.verdicts.len(), MAX_VERDICTS);
}

#[test]
fn a_sequential_judge_gathering_evidence_does_not_count_toward_max_inconclusive() {
    use crate::analysis::{EvidenceSoFar, Finding, Metric};
    let mut h = Harness::holding();
    let finding = |metric, value, threshold, ok| Finding {
        metric,
        value,
        threshold,
        ok,
        between: None,
        unanswered: 0,
    };
    let gathering = Verdict {
        outcome: Outcome::Inconclusive,
        findings: vec![
            finding(Metric::Requests, 2050.0, 50.0, true),
            finding(Metric::ErrorEvidence, 0.8, 300.0, true),
            finding(Metric::ErrorPassEvidence, 35.0, 20.0, true),
            finding(Metric::SlowEvidence, 1.5, 300.0, true),
            finding(Metric::SlowPassEvidence, 12.0, 20.0, false),
        ],
        summary: "sequential, collecting evidence".into(),
        checks: Vec::new(),
    };
    assert!(gathering.accumulating());
    let line = "analysis: collecting evidence, e-value 12 of needed 20 (fail 1.50 of 300), \
                2050 requests on green";
    for _ in 0..4 {
        let tick = h.wait(10 * SECOND);
        assert_eq!(tick, [Command::Analyse]);
        // No event, but a line for the log at every look (trial report 4, F3).
        assert_eq!(
            h.send(Input::Verdict(gathering.clone())),
            [Command::Progress {
                message: line.into(),
                evidence: EvidenceSoFar::of(&gathering).unwrap(),
            }]
        );
        // The message says what the step waits for, though no event was raised.
        assert_eq!(h.r.message, format!("step 1/3 at 10%: {line}"));
    }
    assert_eq!(
        h.r.phase,
        Phase::Progressing,
        "4 looks > max_inconclusive 3"
    );
    let out = h.window(Outcome::Pass);
    assert_eq!(
        actions(&out),
        [set(5000)],
        "the pass advances the held step"
    );
}

/// Steps 0% (shadow), 50%, 100% with `analysis.shadow`.
fn shadow_config() -> RolloutConfig {
    let mut c = config();
    c.steps[0].weight = Percent(0);
    c.analysis.shadow = Some(crate::spec::ShadowGuard::default());
    c
}

#[test]
fn a_shadow_step_holds_at_zero_and_a_failed_comparison_rolls_back_before_any_live_weight() {
    let mut h = Harness::new(shadow_config());
    h.send(Input::Start);
    assert_eq!(actions(&h.send(Input::PreviewReady)), [set(0)]);
    assert_eq!(actions(&h.applied(0)), [Command::OpenWindow]);
    assert_eq!(h.r.phase, Phase::Progressing);
    let out = h.window(Outcome::Fail);
    assert_eq!(actions(&out), [set(0)]);
    assert_eq!(h.r.phase, Phase::RollingBack);
    assert_eq!(actions(&h.applied(0)), [Command::StopPreview]);
    assert_eq!(h.r.phase, Phase::RolledBack);
    let live = h
        .log
        .iter()
        .any(|c| matches!(c, Command::SetWeights { preview_bp } if *preview_bp > 0));
    assert!(!live, "the preview never got live weight: {:?}", h.log);
}

#[test]
fn a_shadow_step_that_passes_moves_on_to_live_weight_and_an_inconclusive_one_does_not() {
    let mut h = Harness::new(shadow_config());
    h.send(Input::Start);
    h.send(Input::PreviewReady);
    h.applied(0);
    assert_eq!(actions(&h.window(Outcome::Inconclusive)), []);
    assert_eq!(h.r.step, 0, "too few comparisons never pass");
    assert_eq!(actions(&h.window(Outcome::Pass)), [set(5000)]);
    assert_eq!(h.r.step, 1);
}

#[test]
fn a_streak_that_ends_the_rollout_keeps_what_its_earlier_windows_said() {
    // Trial 10, K23: windows 1 and 2 could not be read (401 from the proxies), window 3 read an
    // empty window; the rollback's reason must not be only "0 requests < 50".
    let unread = "0 requests < 50; cannot read metrics: proxy p-1: scrape http://10.0.0.5:9901/metrics: status 401 Unauthorized";
    let mut h = Harness::holding();
    for summary in [unread, unread, "0 requests < 50"] {
        let tick = h.wait(10 * SECOND);
        assert_eq!(tick, [Command::Analyse]);
        let mut v = verdict(Outcome::Inconclusive);
        v.summary = summary.to_owned();
        h.send(Input::Verdict(v));
    }
    assert_eq!(h.r.phase, Phase::RollingBack);
    assert_eq!(
        h.r.reason.as_deref(),
        Some(
            "step 1/3 at 10%: analysis inconclusive (3 of 3 in a row): 0 requests < 50 \
             (earlier in this streak: 0 requests < 50; cannot read metrics: proxy p-1: scrape \
             http://10.0.0.5:9901/metrics: status 401 Unauthorized)"
        )
    );
    // A streak that said the same thing throughout says it once.
    let mut h = Harness::holding();
    for _ in 0..3 {
        h.window(Outcome::Inconclusive);
    }
    assert_eq!(
        h.r.reason.as_deref(),
        Some("step 1/3 at 10%: analysis inconclusive (3 of 3 in a row): test inconclusive")
    );
}
