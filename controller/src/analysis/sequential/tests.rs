//! The sequential judge's rules and its error rates under repeated looks.

use std::time::Duration;

use crossfade_proxy::histogram::LatencyHistogram;

use super::*;
use crate::spec::FailWhenWorseThan;

/// A window of `requests` requests (`errors` of them failed): `slow` take 200 ms, `slow` more
/// 120 ms, and the rest 20 ms.
fn window(requests: u64, errors: u64, slow: u64) -> Window {
    let h = LatencyHistogram::default();
    for i in 0..requests {
        let ms = match i {
            i if i < slow => 200,
            i if i < 2 * slow => 120,
            _ => 20,
        };
        h.observe(Duration::from_millis(ms));
    }
    Window::from_counters(requests, errors, h.snapshot())
}

fn judge() -> SequentialJudge {
    SequentialJudge::new(AnalysisConfig {
        judge: crate::spec::JudgeKind::Sequential,
        ..AnalysisConfig::default()
    })
}

#[test]
fn too_few_green_requests_are_inconclusive_and_only_no_traffic_counts_toward_the_limit() {
    let v = judge().judge(&window(49, 5, 0), &window(5000, 0, 0));
    assert_eq!(v.outcome, Outcome::Inconclusive);
    assert!(v.accumulating(), "traffic is arriving: keep gathering");
    assert_eq!(
        v.summary,
        "sequential, collecting evidence: 49 requests < 50 (5 errors)"
    );
    let v = judge().judge(&Window::default(), &window(5000, 0, 0));
    assert_eq!(v.outcome, Outcome::Inconclusive);
    assert!(
        !v.accumulating(),
        "no green request at all counts toward the limit"
    );
    assert_eq!(v.summary, "0 requests < 50");
}

#[test]
fn a_clearly_worse_green_fails_with_its_numbers_in_the_summary() {
    let v = judge().judge(&window(1000, 60, 0), &window(9000, 45, 0));
    assert_eq!(v.outcome, Outcome::Fail, "{v:?}");
    assert!(
        v.summary
            .starts_with("sequential: errors green 6% vs blue 0.5%: evidence green is worse"),
        "{}",
        v.summary
    );
    let f = v.finding(Metric::ErrorEvidence).unwrap();
    assert!(
        !f.ok && f.value >= f.threshold && f.threshold == 3.0 / 0.01,
        "{f:?}"
    );
}

#[test]
fn an_equal_green_with_enough_traffic_passes() {
    let v = judge().judge(&window(20_000, 100, 200), &window(180_000, 900, 1800));
    assert_eq!(v.outcome, Outcome::Pass, "{}", v.summary);
    assert!(v.finding(Metric::ErrorPassEvidence).unwrap().ok);
    assert!(v.finding(Metric::SlowPassEvidence).unwrap().ok);
    assert!(v.summary.contains("slow (> 150ms)"), "{}", v.summary);
}

#[test]
fn an_equal_green_with_little_traffic_keeps_accumulating() {
    let v = judge().judge(&window(100, 0, 1), &window(900, 4, 9));
    assert_eq!(v.outcome, Outcome::Inconclusive, "{}", v.summary);
    assert!(v.accumulating());
    assert!(v.summary.starts_with("sequential, collecting evidence: "));
}

#[test]
fn the_evidence_so_far_says_what_a_pass_waits_for_and_how_much_traffic_there_is() {
    use crate::analysis::EvidenceSoFar;
    let v = judge().judge(&window(100, 0, 1), &window(900, 4, 9));
    let so_far = EvidenceSoFar::of(&v).expect("collecting evidence");
    let pass = |m| v.finding(m).unwrap().value;
    let waits_for = pass(Metric::ErrorPassEvidence).min(pass(Metric::SlowPassEvidence));
    assert_eq!(so_far.e_value, waits_for);
    assert_eq!((so_far.needed, so_far.requests), (20.0, 100));
    let fail = v.finding(Metric::ErrorEvidence).unwrap();
    let slow = v.finding(Metric::SlowEvidence).unwrap();
    let worse = if slow.value > fail.value { slow } else { fail };
    assert_eq!(so_far.fail, Some((worse.value, 300.0)));
    assert_eq!(
        so_far.describe("green"),
        format!(
            "analysis: collecting evidence, e-value {} of needed 20 (fail {} of 300), \
             100 requests on green",
            e(waits_for),
            e(worse.value)
        )
    );
    // Before `min_requests` no test runs: the line says how far the traffic is.
    let v = judge().judge(&window(49, 5, 0), &window(5000, 0, 0));
    let so_far = EvidenceSoFar::of(&v).expect("traffic is arriving");
    assert_eq!(
        so_far.describe("blue"),
        "analysis: collecting evidence, 49 of the 50 requests on blue it needs before weighing any"
    );
    // A pass, a fail, or no green traffic at all is no evidence still being collected.
    let passed = judge().judge(&window(20_000, 100, 200), &window(180_000, 900, 1800));
    assert_eq!(EvidenceSoFar::of(&passed), None);
    assert_eq!(
        EvidenceSoFar::of(&judge().judge(&Window::default(), &window(10, 0, 0))),
        None
    );
}

#[test]
fn slower_green_fails_on_slow_requests() {
    let v = judge().judge(&window(2000, 0, 200), &window(18_000, 0, 180));
    assert_eq!(v.outcome, Outcome::Fail, "{}", v.summary);
    assert!(!v.finding(Metric::SlowEvidence).unwrap().ok);
}

#[test]
fn without_blue_latency_or_green_samples_latency_never_passes() {
    let no_blue = judge().judge(&window(20_000, 0, 0), &window(10, 0, 0));
    assert_eq!(no_blue.outcome, Outcome::Inconclusive);
    assert!(
        no_blue.summary.contains("blue has 10 latency samples"),
        "{}",
        no_blue.summary
    );
    let green = Window::from_counters(20_000, 0, Default::default());
    let v = judge().judge(&green, &window(180_000, 0, 0));
    assert_eq!(v.outcome, Outcome::Inconclusive);
    assert!(
        v.summary.contains("green has no latency samples"),
        "{}",
        v.summary
    );
}

/// Session 40: the shadow step is judged by `analysis::shadow::judge` under either judge, with
/// the rollout's `max_p99_ratio` when set. Under `judge: sequential` too, a shadow window with
/// too few pairs and too few of blue's live requests to read the ratio on is inconclusive, not
/// passed on its comparisons. (At live steps the sequential judge has no such hole: it never
/// passes before blue has `min_requests` latency samples, see
/// `without_blue_latency_or_green_samples_latency_never_passes`.)
#[test]
fn under_the_sequential_judge_a_shadow_window_that_cannot_check_max_p99_ratio_is_inconclusive() {
    let analysis = AnalysisConfig {
        judge: crate::spec::JudgeKind::Sequential,
        max_p99: Some(Duration::from_secs(1)),
        max_p99_ratio: Some(2.0),
        min_requests: 20,
        shadow: Some(crate::spec::ShadowGuard {
            min_compared: 5,
            ..crate::spec::ShadowGuard::default()
        }),
        ..AnalysisConfig::default()
    };
    // Green 150 ms on 6 compared mirrored requests, 4 of them paired with blue's 50 ms; blue
    // served 12 live requests in the window.
    let (green, paired_green, paired_blue) = (
        LatencyHistogram::default(),
        LatencyHistogram::default(),
        LatencyHistogram::default(),
    );
    (0..6).for_each(|_| green.observe(Duration::from_millis(150)));
    for _ in 0..4 {
        paired_green.observe(Duration::from_millis(150));
        paired_blue.observe(Duration::from_millis(50));
    }
    let shadow = crossfade_proxy::ShadowSnapshot {
        mirrored: 6,
        matched: 6,
        latency: green.snapshot(),
        paired_preview: paired_green.snapshot(),
        paired_active: paired_blue.snapshot(),
        ..Default::default()
    };
    let blue = window(12, 0, 0);
    let v = crate::analysis::shadow::judge(&analysis, Some(&shadow), &blue);
    assert_eq!(v.outcome, Outcome::Inconclusive, "{}", v.summary);
    assert!(!v.accumulating(), "counts toward max_inconclusive");
    assert!(
        v.summary.contains(
            "shadow p99 ratio not checked: 4 pairs < 5, and against its live p99: active served \
             12 requests (< 20)"
        ),
        "{}",
        v.summary
    );
}

#[test]
fn the_error_ceiling_fails_even_when_blue_is_as_bad() {
    let v = judge().judge(&window(2000, 200, 0), &window(18_000, 1800, 0));
    assert_eq!(v.outcome, Outcome::Fail, "{}", v.summary);
    assert!(!v.finding(Metric::ErrorRate).unwrap().ok);
}

#[test]
fn an_error_rate_above_the_ceiling_before_the_evidence_is_in_is_not_shown_within_it() {
    // 5% errors in 60 green requests against max_error_rate 1%: not yet proven above the ceiling
    // (blue is as bad, so the comparison does not fail either), and never "5% ≤ 1%".
    let v = judge().judge(&window(60, 3, 0), &window(540, 27, 0));
    assert_eq!(v.outcome, Outcome::Inconclusive, "{}", v.summary);
    let f = v.finding(Metric::ErrorRate).unwrap();
    assert!(f.ok, "{f:?}");
    assert_eq!(f.to_string(), "error rate 5%, not proven above 1%");
    let listed = v
        .findings
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    assert!(!listed.contains("5% ≤ 1%"), "{listed}");
}

#[test]
fn verdicts_stay_finite_and_round_trip_through_json() {
    let v = judge().judge(&window(100_000, 50_000, 0), &window(900_000, 0, 0));
    assert!(v.findings.iter().all(|f| f.value.is_finite()), "{v:?}");
    let json = serde_json::to_string(&v).unwrap();
    let back: Verdict = serde_json::from_str(&json).unwrap();
    assert_eq!((back.outcome, &back.summary), (v.outcome, &v.summary));
}

#[test]
fn the_slow_bound_is_the_lower_edge_of_the_p99_bucket() {
    let w = window(1000, 0, 20); // 2% at 200 ms: p99 in (150, 250] ms
    assert_eq!(LATENCY_BOUNDS_SECONDS[slow_bound(&w.latency, 0.99)], 0.15);
    let w = window(1000, 0, 10); // exactly 1% slow: the bound is still below the slow ones
    assert_eq!(LATENCY_BOUNDS_SECONDS[slow_bound(&w.latency, 0.99)], 0.15);
    let w = window(1000, 0, 5); // 0.5% at 200 ms, 0.5% at 120 ms
    assert_eq!(LATENCY_BOUNDS_SECONDS[slow_bound(&w.latency, 0.99)], 0.1);
    assert_eq!(
        above(&w.latency, 9),
        Tally {
            bad: 5,
            total: 1000
        }
    );
    // Inside (10, 25] ms the survival falls from 100% to 1% log-linearly in log latency.
    let t = (0.025f64 / 0.0175).ln() / (0.025f64 / 0.01).ln();
    let share = share_above(&w.latency, 0.0175);
    assert!(
        (share - (0.01f64.ln() * (1.0 - t)).exp()).abs() < 1e-12,
        "{share}"
    );
    assert!((share_above(&w.latency, 0.025) - 0.01).abs() < 1e-12);
    assert_eq!(share_above(&w.latency, 0.0001), 1.0);
}

/// A tiny seeded generator (SplitMix64) for the property tests.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) as f64 / u64::MAX as f64
    }
}

/// Feeds `looks` batches of 100 requests (10% to green) and judges after each; returns the first
/// non-inconclusive outcome, if any.
fn run(rng: &mut Rng, alpha: f64, green_errors: f64, looks: u32) -> Option<Outcome> {
    let config = AnalysisConfig {
        alpha,
        ..AnalysisConfig::default()
    };
    run_with(rng, config, green_errors, looks)
}

/// [`run`] with any analysis settings.
fn run_with(
    rng: &mut Rng,
    config: AnalysisConfig,
    green_errors: f64,
    looks: u32,
) -> Option<Outcome> {
    let j = SequentialJudge::new(config);
    let (g, b) = (LatencyHistogram::default(), LatencyHistogram::default());
    let (mut gw, mut bw) = (Window::default(), Window::default());
    for _ in 0..looks {
        for _ in 0..100 {
            let (h, w, p) = if rng.next() < 0.1 {
                (&g, &mut gw, green_errors)
            } else {
                (&b, &mut bw, 0.005)
            };
            w.requests += 1;
            w.errors += u64::from(rng.next() < p);
            let slow = rng.next() < 0.01;
            h.observe(Duration::from_millis(if slow { 90 } else { 20 }));
        }
        gw.latency = g.snapshot();
        bw.latency = b.snapshot();
        let v = j.judge(&gw, &bw);
        if v.outcome == Outcome::Fail {
            return Some(Outcome::Fail);
        }
    }
    None
}

#[test]
fn an_equal_green_is_falsely_failed_at_most_alpha_of_the_time_over_many_looks() {
    let (alpha, trials) = (0.05, 300);
    let mut rng = Rng(20_261_130);
    let fails = (0..trials)
        .filter(|_| run(&mut rng, alpha, 0.005, 100) == Some(Outcome::Fail))
        .count();
    assert!(
        fails as f64 <= alpha * trials as f64,
        "{fails} of {trials} equal greens failed (α = {alpha})"
    );
}

#[test]
fn five_points_more_errors_are_detected() {
    let mut rng = Rng(7);
    let detected = (0..50)
        .filter(|_| run(&mut rng, 0.01, 0.055, 100) == Some(Outcome::Fail))
        .count();
    assert_eq!(detected, 50);
}

#[test]
fn a_green_without_errors_passes_against_a_blue_without_errors() {
    // The ratio test alone conditions on the errors of both sides and stays at 1 with none: found
    // by tests/it/judgement.rs, where an equal green never passed.
    let (green, blue) = (window(600, 0, 6), window(2400, 0, 24));
    let v = judge().judge(&green, &blue);
    let pass = v.finding(Metric::ErrorPassEvidence).unwrap();
    assert!(pass.ok, "{v:?}");
    // Too few requests to show a rate below the 1-point allowance: not yet.
    let v = judge().judge(&window(60, 0, 0), &window(240, 0, 0));
    assert!(!v.finding(Metric::ErrorPassEvidence).unwrap().ok, "{v:?}");
}

/// The settings of tests/it/judgement.rs: errors allowed 5 points over blue, latency 250 ms, a
/// 50% error ceiling, failing only beyond the allowance.
fn allowance() -> AnalysisConfig {
    AnalysisConfig {
        judge: crate::spec::JudgeKind::Sequential,
        min_requests: 20,
        max_error_rate: 0.5,
        max_error_rate_increase: 0.05,
        max_latency_increase: crate::spec::LatencyIncrease::Duration(Duration::from_millis(250)),
        fail_when_worse_than: FailWhenWorseThan::Allowance,
        ..AnalysisConfig::default()
    }
}

/// Looks every 150 requests (20% to green, 0 errors) at a service answering in 0.8 ms, of which
/// `blue_slow` and `green_slow` of the requests take 3 ms instead: the shape of the CI failure
/// (`slow (> 2.5ms) green 12.2% vs blue 4.11%`). Returns the first fail's summary, if any.
fn tail_noise(
    rng: &mut Rng,
    config: &AnalysisConfig,
    green_slow: f64,
    looks: u32,
) -> Option<String> {
    let j = SequentialJudge::new(config.clone());
    let (g, b) = (LatencyHistogram::default(), LatencyHistogram::default());
    let (mut gw, mut bw) = (Window::default(), Window::default());
    for _ in 0..looks {
        for _ in 0..150 {
            let (h, w, p) = if rng.next() < 0.2 {
                (&g, &mut gw, green_slow)
            } else {
                (&b, &mut bw, 0.04)
            };
            w.requests += 1;
            let slow = rng.next() < p;
            h.observe(Duration::from_micros(if slow { 3000 } else { 800 }));
        }
        gw.latency = g.snapshot();
        bw.latency = b.snapshot();
        let v = j.judge(&gw, &bw);
        if v.outcome == Outcome::Fail {
            return Some(v.summary);
        }
    }
    None
}

#[test]
fn with_allowance_a_tail_within_the_latency_allowance_is_never_failed() {
    // Blue's p99 bucket starts at 2.5 ms: a green 250 ms slower than blue may put every request
    // above it, so 12% against 4% is far inside the allowance.
    let mut rng = Rng(2026);
    let failed = (0..40)
        .filter_map(|_| tail_noise(&mut rng, &allowance(), 0.12, 100))
        .collect::<Vec<_>>();
    assert!(failed.is_empty(), "{failed:?}");
    // The same greens against "no worse than blue" (the default): the CI failure, reproduced.
    let blue = AnalysisConfig {
        fail_when_worse_than: FailWhenWorseThan::Blue,
        ..allowance()
    };
    let mut rng = Rng(2026);
    let failed = (0..40)
        .filter_map(|_| tail_noise(&mut rng, &blue, 0.12, 100))
        .collect::<Vec<_>>();
    assert_eq!(failed.len(), 40, "{failed:?}");
    assert!(
        failed[0].contains("slow (> 2.5ms) green") && failed[0].contains("evidence green is worse"),
        "{}",
        failed[0]
    );
}

/// A window of `requests` requests (`errors` of them failed) with `(count, ms)` latencies, the
/// rest 20 ms.
fn shaped(requests: u64, errors: u64, slow: &[(u64, u64)]) -> Window {
    let h = LatencyHistogram::default();
    let mut left = requests;
    for &(count, ms) in slow {
        for _ in 0..count {
            h.observe(Duration::from_millis(ms));
        }
        left -= count;
    }
    for _ in 0..left {
        h.observe(Duration::from_millis(20));
    }
    Window::from_counters(requests, errors, h.snapshot())
}

#[test]
fn with_allowance_a_green_far_beyond_it_still_fails() {
    // 30 points of errors against blue's none, with a 5-point allowance: the ratio test alone
    // could never show it (blue has no errors); the absolute split does, within 100 green requests.
    let v = SequentialJudge::new(allowance()).judge(&shaped(100, 30, &[]), &shaped(400, 0, &[]));
    assert_eq!(v.outcome, Outcome::Fail, "{}", v.summary);
    assert!(
        v.summary.starts_with(
            "sequential: errors green 30% vs blue 0%: evidence green is worse beyond the allowance"
        ),
        "{}",
        v.summary
    );
    assert!(!v.finding(Metric::ErrorEvidence).unwrap().ok);
    // Against a blue with errors the ratio test against r1 shows it: 20% against 2%, +5 points.
    let v = SequentialJudge::new(allowance()).judge(&shaped(500, 100, &[]), &shaped(2000, 40, &[]));
    assert_eq!(v.outcome, Outcome::Fail, "{}", v.summary);
    // Latency: 30% of green's requests at 200 ms where 1% of blue's are (blue's p99 bucket starts
    // at 150 ms), with the default 20% allowance: r1 ≈ 1.6, green 30× blue.
    let config = AnalysisConfig {
        max_latency_increase: crate::spec::LatencyIncrease::Fraction(0.2),
        ..allowance()
    };
    let v = SequentialJudge::new(config).judge(
        &shaped(2000, 0, &[(600, 200)]),
        &shaped(18_000, 0, &[(180, 200), (180, 120)]),
    );
    assert_eq!(v.outcome, Outcome::Fail, "{}", v.summary);
    assert!(
        !v.finding(Metric::SlowEvidence).unwrap().ok,
        "{}",
        v.summary
    );
    assert!(
        v.summary.contains(
            "slow (> 150ms) green 30% vs blue 1%: evidence green is worse beyond the allowance"
        ),
        "{}",
        v.summary
    );
}

#[test]
fn with_allowance_more_errors_within_it_are_falsely_failed_at_most_alpha_of_the_time() {
    // +0.5 points against a 1-point allowance (blue 0.5%): worse than blue, within the allowance.
    let (alpha, trials) = (0.05, 300);
    let config = AnalysisConfig {
        alpha,
        fail_when_worse_than: FailWhenWorseThan::Allowance,
        ..AnalysisConfig::default()
    };
    let mut rng = Rng(20_261_130);
    let fails = (0..trials)
        .filter(|_| run_with(&mut rng, config.clone(), 0.01, 100) == Some(Outcome::Fail))
        .count();
    assert!(
        fails as f64 <= alpha * trials as f64,
        "{fails} of {trials} greens within the allowance failed (α = {alpha})"
    );
}

#[test]
fn with_allowance_five_points_more_errors_are_still_detected() {
    let config = AnalysisConfig {
        alpha: 0.01,
        fail_when_worse_than: FailWhenWorseThan::Allowance,
        ..AnalysisConfig::default()
    };
    let mut rng = Rng(7);
    let detected = (0..50)
        .filter(|_| run_with(&mut rng, config.clone(), 0.055, 100) == Some(Outcome::Fail))
        .count();
    assert_eq!(detected, 50);
}

#[test]
fn green_requests_unanswered_past_max_p99_fail_the_ceiling_below_and_above_min_requests() {
    let judge = SequentialJudge::new(AnalysisConfig {
        judge: crate::spec::JudgeKind::Sequential,
        max_p99: Some(Duration::from_millis(500)),
        min_requests: 200,
        ..AnalysisConfig::default()
    });
    let hung = |requests: u64, answered: u64, groups: Vec<(f64, u64)>| Window {
        requests,
        unanswered: crossfade_proxy::stats::Unanswered::from_groups(groups),
        ..window(answered, 0, 0)
    };
    // Below min_requests (200): 2 past the bound are within 1% of 200; 3 are not.
    let v = judge.judge(&hung(9, 0, vec![(0.6, 2), (0.1, 7)]), &window(5000, 0, 0));
    assert_eq!(v.outcome, Outcome::Inconclusive, "{v:?}");
    assert!(
        v.summary.ends_with("9 requests < 200; 9 still unanswered"),
        "{}",
        v.summary
    );
    let v = judge.judge(&hung(9, 0, vec![(0.6, 3), (0.1, 6)]), &window(5000, 0, 0));
    assert_eq!(v.outcome, Outcome::Fail, "{v:?}");
    assert_eq!(
        v.summary,
        "p99 > 500ms: 3 requests unanswered for more than 500ms (9 requests)"
    );
    // Above it, they weigh in the ceiling's evidence as slow requests.
    let v = judge.judge(&hung(600, 400, vec![(1.0, 200)]), &window(5000, 0, 0));
    assert_eq!(v.outcome, Outcome::Fail, "{v:?}");
    let f = v.finding(Metric::P99Seconds).unwrap();
    assert_eq!((f.unanswered, f.ok), (200, false));
    assert!(
        v.summary
            .contains("p99 > 500ms: 200 requests unanswered for more than 500ms"),
        "{}",
        v.summary
    );
}

/// A rollout of two steps judged after every 100 requests: `first` looks with 10% of them to
/// green (both versions failing 0.5% of requests, as [`run`]), then `alone` looks with all of them
/// to green, where the service fails `then` of its requests (blue takes none: its counts stay
/// those of the first step). The second step is judged as the runtime judges a step without
/// blue traffic when `without_blue` is set, otherwise as any other. Returns the first fail's
/// summary and whether it came at the second step.
fn two_steps(
    rng: &mut Rng,
    config: &AnalysisConfig,
    (first, alone): (u32, u32),
    then: f64,
    without_blue: bool,
) -> Option<(String, bool)> {
    let j = SequentialJudge::new(config.clone());
    let (g, b) = (LatencyHistogram::default(), LatencyHistogram::default());
    let (mut gw, mut bw) = (Window::default(), Window::default());
    for look in 0..first + alone {
        let second = look >= first;
        for _ in 0..100 {
            let (h, w, p) = if second || rng.next() < 0.1 {
                (&g, &mut gw, if second { then } else { 0.005 })
            } else {
                (&b, &mut bw, 0.005)
            };
            w.requests += 1;
            w.errors += u64::from(rng.next() < p);
            h.observe(Duration::from_millis(20));
        }
        gw.latency = g.snapshot();
        bw.latency = b.snapshot();
        let v = if second && without_blue {
            j.judge_without_active_traffic(&gw, &bw)
        } else {
            j.judge(&gw, &bw)
        };
        if v.outcome == Outcome::Fail {
            return Some((v.summary, second));
        }
    }
    None
}

#[test]
fn at_a_step_without_blue_traffic_a_drift_within_the_allowance_is_failed_at_most_alpha_of_the_time()
{
    // At 100% the service's error rate drifts from 0.5% to 1% for a reason of its own (load): +0.5
    // points, within the default 1-point allowance. Blue takes no traffic to show the same drift.
    let (alpha, trials) = (0.05, 300);
    let config = AnalysisConfig {
        alpha,
        ..AnalysisConfig::default()
    };
    let mut rng = Rng(20_261_205);
    let fails: Vec<_> = (0..trials)
        .filter_map(|_| two_steps(&mut rng, &config, (50, 100), 0.01, true))
        .collect();
    assert!(
        fails.len() as f64 <= alpha * trials as f64,
        "{} of {trials} drifts within the allowance failed (α = {alpha}): {:?}",
        fails.len(),
        fails.first()
    );
    // Judged as a step with blue traffic (the judge before it knew the difference), the drift
    // reads as green being worse: session 37's rollback at the 100% step, reproduced.
    let mut rng = Rng(20_261_205);
    let fails = (0..60)
        .filter_map(|_| two_steps(&mut rng, &config, (50, 100), 0.01, false))
        .filter(|(_, second)| *second)
        .count();
    assert!(fails > 30, "{fails} of 60");
}

#[test]
fn at_a_step_without_blue_traffic_a_green_beyond_the_allowance_still_fails() {
    // Green breaks under the whole load: 5.5% errors at 100%, 5 points beyond blue's 0.5%. The
    // error ceiling (1% by default) would fail it too: off, to show the comparison does.
    let config = AnalysisConfig {
        alpha: 0.01,
        max_error_rate: 1.0,
        ..AnalysisConfig::default()
    };
    let mut rng = Rng(7);
    let fails: Vec<_> = (0..50)
        .filter_map(|_| two_steps(&mut rng, &config, (50, 100), 0.055, true))
        .collect();
    assert_eq!(fails.len(), 50, "{fails:?}");
    let (summary, second) = &fails[0];
    assert!(*second, "{summary}");
    assert!(
        summary.starts_with("sequential (blue at 0%): errors green ")
            && summary.contains("evidence green is worse than blue and beyond the allowance"),
        "{summary}"
    );
    // With `fail_when_worse_than: allowance` too.
    let config = AnalysisConfig {
        fail_when_worse_than: FailWhenWorseThan::Allowance,
        ..config
    };
    let mut rng = Rng(7);
    let fails = (0..50)
        .filter_map(|_| two_steps(&mut rng, &config, (50, 100), 0.055, true))
        .count();
    assert_eq!(fails, 50);
}
