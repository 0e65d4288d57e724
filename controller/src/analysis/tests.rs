//! Judge rules at their boundaries, window arithmetic and verdict serialisation.

use std::time::Duration;

use crossfade_proxy::histogram::{HistogramSnapshot, LatencyHistogram};

use super::*;

/// A window of `requests` requests with `errors` errors, each taking `latency`.
fn window(requests: u64, errors: u64, latency: Duration) -> Window {
    let h = LatencyHistogram::default();
    for _ in 0..requests {
        h.observe(latency);
    }
    Window::from_counters(requests, errors, h.snapshot())
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn judge(edit: impl FnOnce(&mut AnalysisConfig)) -> ThresholdJudge {
    let mut c = AnalysisConfig::default();
    edit(&mut c);
    ThresholdJudge::new(c)
}

fn finding(v: &Verdict, metric: Metric) -> Finding {
    *v.finding(metric)
        .unwrap_or_else(|| panic!("no {metric:?} in {v:?}"))
}

#[test]
fn fewer_requests_than_min_requests_is_inconclusive_never_a_pass() {
    let j = judge(|_| {});
    for requests in [0, 1, 49] {
        let v = j.judge(&window(requests, 0, ms(5)), &window(1000, 0, ms(5)));
        assert_eq!(v.outcome, Outcome::Inconclusive, "{requests}");
        let f = finding(&v, Metric::Requests);
        assert_eq!((f.value, f.threshold, f.ok), (requests as f64, 50.0, false));
        assert_eq!(v.summary, format!("{requests} requests < 50"));
    }
    let v = j.judge(&window(50, 0, ms(5)), &Window::default());
    assert_eq!(v.outcome, Outcome::Pass, "exactly min_requests counts");
}

#[test]
fn errors_below_min_requests_are_reported_but_decide_nothing() {
    let v = judge(|_| {}).judge(&window(10, 4, ms(5)), &Window::default());
    assert_eq!(v.outcome, Outcome::Inconclusive);
    assert_eq!(v.summary, "10 requests < 50 (4 errors)");
    assert_eq!(v.findings.len(), 1, "{v:?}");
}

#[test]
fn error_rate_at_the_threshold_passes_and_above_it_fails() {
    let j = judge(|_| {});
    let v = j.judge(&window(100, 1, ms(5)), &Window::default());
    assert_eq!(v.outcome, Outcome::Pass);
    assert_eq!(v.summary, "error rate 1% ≤ 1%, 100 requests");
    let v = j.judge(&window(100, 2, ms(5)), &Window::default());
    assert_eq!(v.outcome, Outcome::Fail);
    assert_eq!(v.summary, "error rate 2% > 1% (100 requests)");
    let v = j.judge(&window(1000, 21, ms(5)), &Window::default());
    assert_eq!(v.summary, "error rate 2.1% > 1% (1000 requests)");
}

/// A window of requests taking `(count, latency)` each, without errors.
fn mixed(parts: &[(u64, Duration)]) -> Window {
    let h = LatencyHistogram::default();
    for &(n, d) in parts {
        (0..n).for_each(|_| h.observe(d));
    }
    Window::from_counters(parts.iter().map(|p| p.0).sum(), 0, h.snapshot())
}

/// `w` as scraped from a proxy's `/metrics`: the Prometheus buckets only.
fn coarse(w: Window) -> Window {
    let latency = HistogramSnapshot {
        fine: Vec::new(),
        ..w.latency
    };
    Window { latency, ..w }
}

#[test]
fn p99_above_max_p99_fails() {
    let j = judge(|c| c.max_p99 = Some(ms(250)));
    // Fine bucket [199.68 ms, 200.704 ms): reported at its middle.
    let v = j.judge(&window(100, 0, ms(200)), &Window::default());
    assert_eq!(v.outcome, Outcome::Pass);
    let f = finding(&v, Metric::P99Seconds);
    assert!(
        (f.value - 0.200192).abs() < 1e-9 && f.threshold == 0.25 && f.ok && f.between.is_none(),
        "{f:?}"
    );
    let v =
        judge(|c| c.max_p99 = Some(ms(100))).judge(&window(100, 0, ms(200)), &Window::default());
    assert_eq!(v.outcome, Outcome::Fail);
    assert_eq!(v.summary, "p99 200.2ms > 100ms (100 requests)");
}

#[test]
fn a_green_within_max_p99_between_bucket_bounds_passes_and_one_above_fails() {
    // Trial 9, I2: every request ~521 ms against max_p99 600 ms was "p99 747.5ms > 600ms".
    let j = judge(|c| c.max_p99 = Some(ms(600)));
    let v = j.judge(&window(102, 0, ms(521)), &Window::default());
    assert_eq!(v.outcome, Outcome::Pass, "{v:?}");
    assert_eq!(
        v.summary,
        "error rate 0% ≤ 1%, p99 521.2ms ≤ 600ms, 102 requests"
    );
    let v = j.judge(&window(102, 0, ms(650)), &Window::default());
    assert_eq!(v.outcome, Outcome::Fail, "{v:?}");
    assert_eq!(v.summary, "p99 649.2ms > 600ms (102 requests)");
    // 800 ms was "p99 997.5ms".
    let v = j.judge(&window(100, 0, ms(800)), &Window::default());
    assert_eq!(v.summary, "p99 800.8ms > 600ms (100 requests)");
}

#[test]
fn max_p99_fails_only_when_more_than_one_percent_of_requests_are_slower() {
    let j = judge(|c| c.max_p99 = Some(ms(600)));
    // 1 of 100 slower: the p99 (the 99th fastest) is 521 ms.
    let v = j.judge(&mixed(&[(99, ms(521)), (1, ms(5000))]), &Window::default());
    assert_eq!(v.outcome, Outcome::Pass, "{v:?}");
    let v = j.judge(&mixed(&[(98, ms(521)), (2, ms(650))]), &Window::default());
    assert_eq!(v.outcome, Outcome::Fail, "{v:?}");
    // Just inside and just outside the bound, beyond the fine bucket that straddles it.
    let v = j.judge(
        &window(100, 0, Duration::from_micros(595_000)),
        &Window::default(),
    );
    assert_eq!(v.outcome, Outcome::Pass, "{v:?}");
    let v = j.judge(
        &window(100, 0, Duration::from_micros(605_000)),
        &Window::default(),
    );
    assert_eq!(v.outcome, Outcome::Fail, "{v:?}");
    // Inside that bucket (at most 0.78% of the bound wide) nothing is proven: no false rollback.
    let v = j.judge(
        &window(100, 0, Duration::from_micros(600_500)),
        &Window::default(),
    );
    assert_eq!(v.outcome, Outcome::Pass, "{v:?}");
    assert_eq!(
        v.summary,
        "error rate 0% ≤ 1%, p99 ≈ 600.1ms, not proven above 600ms, 100 requests"
    );
}

#[test]
fn from_prometheus_buckets_the_p99_is_shown_as_a_range_and_never_fails_on_an_estimate() {
    let j = judge(|c| c.max_p99 = Some(ms(600)));
    let v = j.judge(&coarse(window(102, 0, ms(521))), &Window::default());
    assert_eq!(v.outcome, Outcome::Pass, "{v:?}");
    let f = finding(&v, Metric::P99Seconds);
    assert_eq!(f.between, Some((0.5, 0.75)));
    assert_eq!(
        v.summary,
        "error rate 0% ≤ 1%, p99 ≈ 747.5ms (between 500ms and 750ms), not proven above 600ms, \
         102 requests"
    );
    let v = j.judge(&coarse(window(100, 0, ms(800))), &Window::default());
    assert_eq!(v.outcome, Outcome::Fail);
    assert_eq!(
        v.summary,
        "p99 ≈ 997.5ms (between 750ms and 1000ms) > 600ms (100 requests)"
    );
    // At a bucket bound the counts are exact.
    let j = judge(|c| c.max_p99 = Some(ms(500)));
    let v = j.judge(&coarse(window(100, 0, ms(521))), &Window::default());
    assert_eq!(v.outcome, Outcome::Fail);
}

#[test]
fn p99_ratio_compares_with_active_when_active_has_enough_traffic() {
    let j = judge(|c| c.max_p99_ratio = Some(2.0));
    let slow = window(100, 0, ms(200)); // p99 200.192 ms
    let fast = window(100, 0, ms(40)); // fine bucket [39.936, 40.192) ms: p99 40.064 ms
    let v = j.judge(&slow, &fast);
    assert_eq!(v.outcome, Outcome::Fail);
    let f = finding(&v, Metric::P99Ratio);
    assert!(
        (f.value - 0.200192 / 0.040064).abs() < 1e-9 && !f.ok,
        "{f:?}"
    );
    assert_eq!(v.summary, "p99 ratio to active 5.00 > 2.00 (100 requests)");
}

/// Session 40: a window with enough of the preview's requests but too few of the active
/// backend's for `max_p99_ratio` passed on the other rules, the ratio unchecked (a 5× slower
/// preview at a 90% step with thin traffic went on to 100%, where the ratio never applies). Where
/// the active backend has weight it is inconclusive now; at 100% it has no traffic to compare
/// with, and the rule is skipped as before.
#[test]
fn too_few_active_requests_for_the_p99_ratio_are_inconclusive_where_the_active_backend_has_weight()
{
    let j = judge(|c| c.max_p99_ratio = Some(2.0));
    let slow = window(100, 0, ms(200));
    let thin = window(10, 0, ms(40));
    let v = judge_at(&j, 9000, &slow, &thin);
    assert_eq!(v.outcome, Outcome::Inconclusive, "{}", v.summary);
    assert!(v.finding(Metric::P99Ratio).is_none());
    assert_eq!(
        v.summary,
        "p99 ratio not checked: active served 10 requests (< 50)"
    );
    // Another rule that fails still fails the window.
    let v = judge_at(&j, 9000, &window(100, 50, ms(200)), &thin);
    assert_eq!(v.outcome, Outcome::Fail, "{}", v.summary);
    // At 100% the active backend takes no traffic: the ratio is skipped, and the summary says so.
    let v = judge_at(&j, FULL_BP, &slow, &thin);
    assert_eq!(v.outcome, Outcome::Pass, "{}", v.summary);
    assert!(
        v.summary
            .ends_with("; p99 ratio not checked: active served 10 requests (< 50)"),
        "{}",
        v.summary
    );
}

/// Kubernetes mode reads both p99s from the Prometheus buckets, so the ratio divides two
/// interpolations: the message says so and gives the range the true ratio lies in (preview's
/// 500–750 ms bucket over active's 75–100 ms one: 5 to 10).
#[test]
fn a_p99_ratio_from_prometheus_buckets_is_shown_as_an_estimate_with_its_range() {
    let j = judge(|c| c.max_p99_ratio = Some(2.0));
    let v = j.judge(
        &coarse(window(100, 0, ms(600))),
        &coarse(window(100, 0, ms(100))),
    );
    assert_eq!(v.outcome, Outcome::Fail);
    let f = finding(&v, Metric::P99Ratio);
    let (lo, hi) = f.between.expect("a range");
    assert!((lo - 5.0).abs() < 1e-9 && (hi - 10.0).abs() < 1e-9, "{f:?}");
    assert!((lo..=hi).contains(&f.value), "{f:?}");
    assert_eq!(
        v.summary,
        format!(
            "p99 ratio to active ≈ {:.2} (between 5.00 and 10.00) > 2.00 (100 requests)",
            f.value
        )
    );
    // Above the last bucket the range has no upper end.
    let v = j.judge(
        &coarse(window(100, 0, Duration::from_secs(40))),
        &coarse(window(100, 0, ms(100))),
    );
    let f = finding(&v, Metric::P99Ratio);
    assert_eq!(f.between.map(|b| b.1), Some(f64::INFINITY), "{f:?}");
    assert!(
        v.summary.starts_with("p99 ratio to active ≈ "),
        "{}",
        v.summary
    );
    assert!(
        v.summary.contains(" (above 300.00) > 2.00"),
        "{}",
        v.summary
    );
    // The proxy's fine buckets give no range: the plain message.
    let v = j.judge(&window(100, 0, ms(600)), &window(100, 0, ms(100)));
    assert!(finding(&v, Metric::P99Ratio).between.is_none());
    assert!(
        v.summary.starts_with("p99 ratio to active ") && !v.summary.contains('≈'),
        "{}",
        v.summary
    );
}

#[test]
fn p99_ratio_floors_a_tiny_active_p99_at_one_millisecond() {
    let j = judge(|c| c.max_p99_ratio = Some(1.5));
    let preview = window(100, 0, Duration::from_micros(800)); // p99 0.802 ms
    let active = window(100, 0, Duration::from_micros(100)); // p99 0.1005 ms
    let v = j.judge(&preview, &active);
    assert_eq!(v.outcome, Outcome::Pass, "{v:?}");
    let f = finding(&v, Metric::P99Ratio);
    assert!(
        (f.value - 0.000802 / P99_RATIO_FLOOR_SECONDS).abs() < 1e-9,
        "{f:?}"
    );
}

#[test]
fn a_verdict_carries_every_finding() {
    let j = judge(|c| {
        c.max_p99 = Some(ms(300));
        c.max_p99_ratio = Some(3.0);
    });
    let v = j.judge(&window(812, 0, ms(200)), &window(5000, 3, ms(100)));
    let metrics: Vec<Metric> = v.findings.iter().map(|f| f.metric).collect();
    assert_eq!(
        metrics,
        [
            Metric::Requests,
            Metric::ErrorRate,
            Metric::P99Seconds,
            Metric::P99Ratio
        ]
    );
    assert!(v.findings.iter().all(|f| f.ok));
    assert_eq!(
        v.summary,
        "error rate 0% ≤ 1%, p99 200.2ms ≤ 300ms, p99 ratio to active 2.00 ≤ 3.00, 812 requests"
    );
}

#[test]
fn latency_bounds_without_latency_samples_are_inconclusive() {
    let j = judge(|c| c.max_p99 = Some(ms(100)));
    let v = j.judge(
        &Window::from_counters(100, 0, Default::default()),
        &Window::default(),
    );
    assert_eq!(v.outcome, Outcome::Inconclusive);
    assert_eq!(v.summary, "no latency samples to check p99 against");
}

#[test]
fn windows_are_differences_of_snapshots_and_saturate() {
    let earlier = window(100, 5, ms(5));
    let later = window(250, 7, ms(5));
    let w = later.since(&earlier);
    assert_eq!((w.requests, w.errors, w.latency.count()), (150, 2, 150));
    let reset = earlier.since(&later);
    assert_eq!(
        (reset.requests, reset.errors, reset.latency.count()),
        (0, 0, 0)
    );
    let snap = |requests, errors| crossfade_proxy::BackendSnapshot {
        requests,
        errors,
        in_flight: 3,
        upgraded: 0,
        latency: Default::default(),
        unanswered: Default::default(),
        aborted: Default::default(),
    };
    assert_eq!(
        Window::between(&snap(10, 1), &snap(60, 4)),
        Window::from_counters(50, 3, Default::default())
    );
    assert_eq!(Window::default().error_rate(), None);
}

#[test]
fn verdicts_round_trip_through_json() {
    let v = judge(|_| {}).judge(&window(100, 2, ms(5)), &Window::default());
    let json = serde_json::to_string(&v).unwrap();
    assert!(
        json.contains("\"outcome\":\"fail\"") && json.contains("\"metric\":\"error_rate\""),
        "{json}"
    );
    assert_eq!(serde_json::from_str::<Verdict>(&json).unwrap(), v);
}

mod shadow {
    use std::time::Duration;

    use crossfade_proxy::histogram::LatencyHistogram;
    use crossfade_proxy::stats::Unanswered;
    use crossfade_proxy::ShadowSnapshot;

    use crate::analysis::{shadow::judge, Metric, Outcome, Window};
    use crate::spec::{AnalysisConfig, ShadowGuard};

    /// Shadow guard 5% / 20 comparisons, and no latency bound.
    fn analysis() -> AnalysisConfig {
        AnalysisConfig {
            shadow: Some(ShadowGuard {
                max_mismatch_rate: 0.05,
                min_compared: 20,
                ..ShadowGuard::default()
            }),
            ..AnalysisConfig::default()
        }
    }

    /// [`analysis`] with `max_p99` (and `max_p99_ratio`).
    fn bounded(max_p99: Duration, ratio: Option<f64>) -> AnalysisConfig {
        AnalysisConfig {
            max_p99: Some(max_p99),
            max_p99_ratio: ratio,
            ..analysis()
        }
    }

    fn window(matched: u64, body: u64) -> ShadowSnapshot {
        ShadowSnapshot {
            mirrored: matched + body + 1,
            matched,
            mismatched: body,
            body_mismatches: body,
            skipped: 1,
            ..ShadowSnapshot::default()
        }
    }

    /// [`window`] with every compared exchange timed at `each` (to the preview's response head).
    fn timed(matched: u64, body: u64, each: Duration) -> ShadowSnapshot {
        let h = LatencyHistogram::default();
        (0..matched + body).for_each(|_| h.observe(each));
        ShadowSnapshot {
            latency: h.snapshot(),
            ..window(matched, body)
        }
    }

    /// The active backend's live window: `n` requests at `each`.
    fn active(n: u64, each: Duration) -> Window {
        let h = LatencyHistogram::default();
        (0..n).for_each(|_| h.observe(each));
        Window::from_counters(n, 0, h.snapshot())
    }

    #[test]
    fn too_few_comparisons_or_no_counters_are_inconclusive() {
        let none = Window::default();
        let v = judge(&analysis(), Some(&window(10, 9)), &none);
        assert_eq!(v.outcome, Outcome::Inconclusive);
        assert_eq!(
            v.summary,
            "19 shadow comparisons < 20 (9 differed (0 status, 0 header, 9 body), 1 skipped, 0 errors)"
        );
        let v = judge(&analysis(), None, &none);
        assert_eq!(v.outcome, Outcome::Inconclusive);
        assert!(v.summary.contains("no shadow counters"), "{}", v.summary);
    }

    /// User38: a shadow step over a POST-only service (every request skipped for its method,
    /// which `mirror.methods` leaves out by default) rolled back saying `0 shadow comparisons <
    /// 20 (..., 2000 skipped, ...)`, with nothing on why. The skips are named by reason and key.
    #[test]
    fn too_few_comparisons_name_why_the_skipped_requests_were_skipped() {
        let skipped = ShadowSnapshot {
            mirrored: 0,
            skipped: 2003,
            skipped_by: [2000, 0, 3, 0, 0],
            ..ShadowSnapshot::default()
        };
        let v = judge(&analysis(), Some(&skipped), &Window::default());
        assert_eq!(v.outcome, Outcome::Inconclusive);
        assert_eq!(
            v.summary,
            "0 shadow comparisons < 20 (0 differed (0 status, 0 header, 0 body), 2003 skipped \
             (2000 for their method, not in mirror.methods; 3 over mirror.max_in_flight), 0 errors)"
        );
    }

    #[test]
    fn the_mismatch_rate_fails_above_its_bound_and_passes_at_it() {
        let none = Window::default();
        let v = judge(&analysis(), Some(&window(90, 10)), &none);
        assert_eq!(v.outcome, Outcome::Fail);
        assert_eq!(
            v.summary,
            "shadow mismatch rate 10% > 5% (100 compared: 10 differed (0 status, 0 header, 10 body), 1 skipped, 0 errors)"
        );
        let rate = v.finding(Metric::ShadowMismatchRate).unwrap();
        assert_eq!((rate.value, rate.threshold, rate.ok), (0.1, 0.05, false));
        let v = judge(&analysis(), Some(&window(95, 5)), &none);
        assert_eq!(v.outcome, Outcome::Pass);
        assert_eq!(v.finding(Metric::ShadowCompared).unwrap().value, 100.0);
    }

    /// newuser32's G: a green that answered exactly like blue but took 2 s per mirrored request
    /// passed a shadow step whose rollout bounds p99 at 300 ms; the live step then gave it 100%.
    #[test]
    fn a_green_that_answers_alike_but_slower_than_max_p99_fails_the_shadow_step() {
        let slow = timed(24, 0, Duration::from_millis(2010));
        let max = Duration::from_millis(300);
        let v = judge(&bounded(max, None), Some(&slow), &Window::default());
        assert_eq!(v.outcome, Outcome::Fail, "{}", v.summary);
        let p99 = v.finding(Metric::ShadowP99Seconds).unwrap();
        assert!((p99.value - 2.01).abs() < 2.01 * 0.004, "{p99:?}");
        assert_eq!((p99.threshold, p99.ok), (0.3, false));
        assert!(
            v.summary.starts_with("shadow p99 20") && v.summary.contains("ms > 300ms (24 compared"),
            "{}",
            v.summary
        );
        // The answers matched: the rate is recorded, and within its bound.
        assert!(v.finding(Metric::ShadowMismatchRate).unwrap().ok);

        let fast = timed(30, 0, Duration::from_millis(12));
        let v = judge(&bounded(max, None), Some(&fast), &Window::default());
        assert_eq!(v.outcome, Outcome::Pass, "{}", v.summary);
        assert!(
            v.summary
                .starts_with("shadow mismatch rate 0% ≤ 5%, shadow error rate 0% ≤ 1%, shadow p99 12ms ≤ 300ms (30 compared"),
            "{}",
            v.summary
        );
    }

    /// A green that never answers leaves no comparison and no response time: its mirrored
    /// requests waiting past `max_p99` fail the step rather than leave it inconclusive.
    #[test]
    fn mirrored_requests_unanswered_past_max_p99_fail_below_min_compared() {
        let hanging = ShadowSnapshot {
            mirrored: 3,
            in_flight: 3,
            unanswered: Unanswered::from_groups(vec![(0.9, 2), (0.1, 1)]),
            ..ShadowSnapshot::default()
        };
        let bound = bounded(Duration::from_millis(300), None);
        let v = judge(&bound, Some(&hanging), &Window::default());
        assert_eq!(v.outcome, Outcome::Fail, "{}", v.summary);
        assert_eq!(
            v.summary,
            "shadow p99 > 300ms: 2 mirrored requests unanswered for more than 300ms (0 shadow comparisons < 20: 0 differed (0 status, 0 header, 0 body), 0 skipped, 0 errors, 3 still unanswered)"
        );
        // Without a latency bound nothing decides it yet.
        let v = judge(&analysis(), Some(&hanging), &Window::default());
        assert_eq!(v.outcome, Outcome::Inconclusive);
    }

    /// The mirrored exchanges the preview failed (no answer to compare) are its errors: above
    /// `max_error_rate` of those and the compared ones, the step fails, although every answer
    /// it gave matched.
    #[test]
    fn mirrored_exchanges_the_preview_failed_count_against_max_error_rate() {
        let failing = ShadowSnapshot {
            errors: 10,
            ..timed(90, 0, Duration::from_millis(5))
        };
        let v = judge(&analysis(), Some(&failing), &Window::default());
        assert_eq!(v.outcome, Outcome::Fail, "{}", v.summary);
        assert_eq!(
            v.summary,
            "shadow error rate 10% > 1% (90 compared: 0 differed (0 status, 0 header, 0 body), 1 skipped, 10 errors)"
        );
        let rate = v.finding(Metric::ShadowErrorRate).unwrap();
        assert_eq!((rate.value, rate.threshold), (0.1, 0.01));
        let rare = ShadowSnapshot {
            errors: 1,
            ..timed(199, 0, Duration::from_millis(5))
        };
        let v = judge(&analysis(), Some(&rare), &Window::default());
        assert_eq!(v.outcome, Outcome::Pass, "{}", v.summary);
    }

    /// Comparisons without response times (a proxy that does not record them) leave `max_p99`
    /// unchecked: never a pass.
    #[test]
    fn comparisons_without_response_times_are_inconclusive_under_max_p99() {
        let bound = bounded(Duration::from_millis(300), None);
        let v = judge(&bound, Some(&window(30, 0)), &Window::default());
        assert_eq!(v.outcome, Outcome::Inconclusive, "{}", v.summary);
        assert!(
            v.summary.contains("shadow p99 not checked"),
            "{}",
            v.summary
        );
        // `max_p99_ratio` alone too.
        let ratio = AnalysisConfig {
            max_p99_ratio: Some(2.0),
            ..analysis()
        };
        let blue = active(100, Duration::from_millis(10));
        let v = judge(&ratio, Some(&window(30, 0)), &blue);
        assert_eq!(v.outcome, Outcome::Inconclusive, "{}", v.summary);
        // A mismatch still fails, whatever the latency.
        let v = judge(&bound, Some(&window(20, 10)), &Window::default());
        assert_eq!(v.outcome, Outcome::Fail, "{}", v.summary);
    }

    #[test]
    fn max_p99_ratio_holds_the_shadow_p99_to_the_active_backends_live_p99() {
        let bound = bounded(Duration::from_secs(5), Some(2.0));
        let green = timed(30, 0, Duration::from_millis(50));
        let blue = active(100, Duration::from_millis(10));
        let v = judge(&bound, Some(&green), &blue);
        assert_eq!(v.outcome, Outcome::Fail, "{}", v.summary);
        let ratio = v.finding(Metric::ShadowP99Ratio).unwrap();
        assert!((ratio.value - 5.0).abs() < 0.05, "{ratio:?}");
        assert!(
            v.summary.starts_with("shadow p99 ratio to active 5.0"),
            "{}",
            v.summary
        );
        // Too little active traffic to compare with: not checked, so no pass (session 40).
        let v = judge(&bound, Some(&green), &active(3, Duration::from_millis(10)));
        assert_eq!(v.outcome, Outcome::Inconclusive, "{}", v.summary);
        assert!(v.finding(Metric::ShadowP99Ratio).is_none());
        assert!(
            v.summary
                .contains("shadow p99 ratio not checked: 0 pairs < 20, and against its live p99: active served 3 requests (< 50)"),
            "{}",
            v.summary
        );
    }

    /// [`timed`] with `pairs` of the mirrored requests timed on both backends: the active
    /// backend at `blue` and the preview at `green` each.
    fn paired(green: Duration, blue: Duration, pairs: u64) -> ShadowSnapshot {
        let (a, p) = (LatencyHistogram::default(), LatencyHistogram::default());
        for _ in 0..pairs {
            a.observe(blue);
            p.observe(green);
        }
        ShadowSnapshot {
            paired_active: a.snapshot(),
            paired_preview: p.snapshot(),
            ..timed(30, 0, green)
        }
    }

    /// shadow34: the ratio is read on the pairs (both backends' times on the same mirrored
    /// requests), not against blue's live p99 over other requests: a green 3× slower than blue
    /// on the very requests it was sent fails though blue's live p99 (another mix of requests)
    /// would let it pass, and a green as fast as blue on the same requests passes though blue's
    /// live p99 is far lower.
    #[test]
    fn max_p99_ratio_is_read_on_the_pairs_when_there_are_min_compared_of_them() {
        let bound = bounded(Duration::from_secs(5), Some(2.0));
        let slow = paired(Duration::from_millis(30), Duration::from_millis(10), 30);
        // Blue's live p99 is 30 ms: against it green's 30 ms is a ratio of 1.
        let live = active(100, Duration::from_millis(30));
        let v = judge(&bound, Some(&slow), &live);
        assert_eq!(v.outcome, Outcome::Fail, "{}", v.summary);
        let ratio = v.finding(Metric::ShadowP99Ratio).unwrap();
        assert!((ratio.value - 3.0).abs() < 0.05, "{ratio:?}");
        assert!(
            v.summary.starts_with("shadow p99 ratio to active 3.0",)
                && v.summary.contains(
                    "(paired: p99 30ms vs active's 10ms on the same 30 mirrored requests)"
                ),
            "{}",
            v.summary
        );
        // As fast as blue on the same requests: passes, though blue's live p99 is 2 ms.
        let alike = paired(Duration::from_millis(30), Duration::from_millis(30), 30);
        let v = judge(&bound, Some(&alike), &active(100, Duration::from_millis(2)));
        assert_eq!(v.outcome, Outcome::Pass, "{}", v.summary);
        let ratio = v.finding(Metric::ShadowP99Ratio).unwrap();
        assert!((ratio.value - 1.0).abs() < 0.02, "{ratio:?}");
        assert!(v.summary.contains("(paired: "), "{}", v.summary);
    }

    /// Session 40: a shadow window that cannot check a configured `max_p99_ratio` (fewer pairs
    /// than `min_compared` and fewer of blue's live requests than `min_requests`) passed on its
    /// comparisons, and green got live weight with the ratio never read. It is inconclusive
    /// now, saying which counts it lacked; a rule that fails still fails it.
    #[test]
    fn a_shadow_window_that_cannot_check_max_p99_ratio_is_inconclusive_never_a_pass() {
        let bound = bounded(Duration::from_secs(5), Some(2.0));
        // 30 compared (green 150 ms each), 4 of them paired, blue 12 live requests at 50 ms.
        let few = paired(Duration::from_millis(150), Duration::from_millis(50), 4);
        let blue = active(12, Duration::from_millis(50));
        let v = judge(&bound, Some(&few), &blue);
        assert_eq!(v.outcome, Outcome::Inconclusive, "{}", v.summary);
        assert!(v.finding(Metric::ShadowP99Ratio).is_none());
        assert!(
            v.summary.ends_with(
                "; shadow p99 ratio not checked: 4 pairs < 20, and against its live p99: active \
                 served 12 requests (< 50)"
            ),
            "{}",
            v.summary
        );
        let differs = ShadowSnapshot {
            mismatched: 10,
            body_mismatches: 10,
            ..few.clone()
        };
        let v = judge(&bound, Some(&differs), &blue);
        assert_eq!(v.outcome, Outcome::Fail, "{}", v.summary);
        // Without `max_p99_ratio` the same window passes: nothing configured went unchecked.
        let v = judge(&bounded(Duration::from_secs(5), None), Some(&few), &blue);
        assert_eq!(v.outcome, Outcome::Pass, "{}", v.summary);
    }

    /// Fewer pairs than `min_compared` (a proxy that does not record them): the ratio falls back
    /// to blue's live p99, and the summary says so; with too little live traffic too, not checked.
    #[test]
    fn too_few_pairs_fall_back_to_the_active_backends_live_p99_and_say_so() {
        let bound = bounded(Duration::from_secs(5), Some(2.0));
        let few = paired(Duration::from_millis(50), Duration::from_millis(50), 5);
        let v = judge(&bound, Some(&few), &active(100, Duration::from_millis(10)));
        assert_eq!(v.outcome, Outcome::Fail, "{}", v.summary);
        assert!(
            v.summary
                .contains("(unpaired: 5 pairs < 20, against active's live p99)"),
            "{}",
            v.summary
        );
        let v = judge(&bound, Some(&few), &active(3, Duration::from_millis(10)));
        assert_eq!(v.outcome, Outcome::Inconclusive, "{}", v.summary);
        assert!(
            v.summary.contains(
                "shadow p99 ratio not checked: 5 pairs < 20, and against its live p99: active served 3 requests (< 50)"
            ),
            "{}",
            v.summary
        );
    }
}

/// `w` with requests still unanswered at its end: `(count, seconds each has certainly waited)`.
fn waiting(mut w: Window, unanswered: &[(u64, f64)]) -> Window {
    let groups = unanswered.iter().map(|&(n, s)| (s, n)).collect();
    w.unanswered = crossfade_proxy::stats::Unanswered::from_groups(groups);
    w
}

#[test]
fn a_preview_that_never_answers_fails_on_its_unanswered_requests_below_min_requests() {
    let j = judge(|c| {
        c.max_p99 = Some(ms(500));
        c.min_requests = 20;
    });
    // M16: 8 requests sent, none answered, all waiting longer than max_p99.
    let w = waiting(window(0, 0, ms(5)), &[(8, 0.6)]);
    let w = Window { requests: 8, ..w };
    let v = j.judge(&w, &window(200, 0, ms(5)));
    assert_eq!(v.outcome, Outcome::Fail, "{v:?}");
    assert_eq!(
        v.summary,
        "p99 > 500ms: 8 requests unanswered for more than 500ms (8 requests)"
    );
    let f = finding(&v, Metric::P99Seconds);
    assert_eq!((f.unanswered, f.ok, f.threshold), (8, false, 0.5));

    // 1% of min_requests is the allowance: 1 unanswered of a 100-request floor decides nothing.
    let j = judge(|c| {
        c.max_p99 = Some(ms(500));
        c.min_requests = 100;
    });
    let w = Window {
        requests: 8,
        ..waiting(Window::default(), &[(1, 2.0)])
    };
    let v = j.judge(&w, &Window::default());
    assert_eq!(v.outcome, Outcome::Inconclusive, "{v:?}");
    assert_eq!(v.summary, "8 requests < 100; 1 still unanswered");
    let w = Window {
        requests: 8,
        ..waiting(Window::default(), &[(2, 2.0)])
    };
    assert_eq!(j.judge(&w, &Window::default()).outcome, Outcome::Fail);
}

#[test]
fn requests_waiting_less_than_max_p99_are_not_slow_only_named() {
    let j = judge(|c| {
        c.max_p99 = Some(ms(500));
        c.min_requests = 20;
    });
    // Waiting 0.4 s, 0.49 s: younger than the bound, whatever comes of them.
    let w = Window {
        requests: 8,
        ..waiting(Window::default(), &[(5, 0.4), (3, 0.49)])
    };
    let v = j.judge(&w, &Window::default());
    assert_eq!(v.outcome, Outcome::Inconclusive, "{v:?}");
    assert_eq!(v.summary, "8 requests < 20; 8 still unanswered");
    // With enough answered requests, all fast, young unanswered ones change nothing.
    let w = waiting(window(100, 0, ms(5)), &[(50, 0.45)]);
    let v = j.judge(&w, &Window::default());
    assert_eq!(v.outcome, Outcome::Pass, "{v:?}");
    assert_eq!(finding(&v, Metric::P99Seconds).unanswered, 0);
    // Without max_p99 nothing is slow: the summary still names them.
    let j = judge(|c| c.min_requests = 20);
    let w = Window {
        requests: 3,
        ..waiting(Window::default(), &[(3, 30.0)])
    };
    let v = j.judge(&w, &Window::default());
    assert_eq!(v.outcome, Outcome::Inconclusive);
    assert_eq!(v.summary, "3 requests < 20; 3 still unanswered");
}

#[test]
fn unanswered_requests_past_max_p99_count_as_slow_among_enough_requests() {
    let j = judge(|c| c.max_p99 = Some(ms(500)));
    // 200 answered in 5 ms, 2 waiting past the bound: 2 ≤ ⌊202/100⌋, the p99 holds.
    let v = j.judge(
        &waiting(window(200, 0, ms(5)), &[(2, 0.6)]),
        &Window::default(),
    );
    assert_eq!(v.outcome, Outcome::Pass, "{v:?}");
    let f = finding(&v, Metric::P99Seconds);
    assert_eq!((f.unanswered, f.ok), (2, true));
    assert_eq!(
        f.to_string(),
        "p99 5ms ≤ 500ms (and 2 requests unanswered for more than 500ms)"
    );
    // 3 past the bound: proven above.
    let v = j.judge(
        &waiting(window(200, 0, ms(5)), &[(3, 0.6)]),
        &Window::default(),
    );
    assert_eq!(v.outcome, Outcome::Fail, "{v:?}");
    assert_eq!(
        v.summary,
        "p99 > 500ms: 3 requests unanswered for more than 500ms (200 requests)"
    );
    // Unanswered requests are not errors.
    assert!(finding(&v, Metric::ErrorRate).ok);
    // Enough requests sent, none answered yet: no latency sample, the unanswered ones decide.
    let w = Window {
        requests: 60,
        ..waiting(Window::default(), &[(60, 1.0)])
    };
    let v = j.judge(&w, &Window::default());
    assert_eq!(v.outcome, Outcome::Fail, "{v:?}");
    assert_eq!(
        v.summary,
        "p99 > 500ms: 60 requests unanswered for more than 500ms (60 requests)"
    );
    // ... and none of them past it yet: inconclusive as before.
    let w = Window {
        requests: 60,
        ..waiting(Window::default(), &[(60, 0.2)])
    };
    let v = j.judge(&w, &Window::default());
    assert_eq!(v.outcome, Outcome::Inconclusive, "{v:?}");
}

#[test]
fn a_slow_preview_with_unanswered_requests_names_both() {
    let j = judge(|c| c.max_p99 = Some(ms(500)));
    let v = j.judge(
        &waiting(window(100, 0, ms(1000)), &[(4, 2.0)]),
        &Window::default(),
    );
    assert_eq!(v.outcome, Outcome::Fail);
    let f = finding(&v, Metric::P99Seconds);
    assert!(f.value > 0.99 && f.value < 1.01, "{f:?}");
    assert!(
        v.summary
            .ends_with("> 500ms (and 4 requests unanswered for more than 500ms) (100 requests)"),
        "{}",
        v.summary
    );
}

#[test]
fn a_window_keeps_the_later_snapshots_unanswered_requests_and_they_round_trip() {
    let earlier = crossfade_proxy::BackendSnapshot {
        requests: 10,
        ..Default::default()
    };
    let later = crossfade_proxy::BackendSnapshot {
        requests: 18,
        unanswered: crossfade_proxy::stats::Unanswered::from_groups(vec![(0.75, 8)]),
        ..Default::default()
    };
    let w = Window::between(&earlier, &later);
    assert_eq!((w.requests, w.unanswered.total()), (8, 8));
    assert_eq!(w.unanswered_past(Some(ms(500))), 8);
    assert_eq!(w.unanswered_past(Some(ms(1000))), 0);
    assert_eq!(w.unanswered_past(None), 0);
    let text = serde_json::to_string(&w).unwrap();
    assert_eq!(serde_json::from_str::<Window>(&text).unwrap(), w);
    // A window stored before unanswered requests were counted reads as none.
    let old: Window = serde_json::from_str(
        r#"{"requests":1,"errors":0,"latency":{"counts":[],"sum_seconds":0.0}}"#,
    )
    .unwrap();
    assert!(old.unanswered.is_empty());
}

/// A backend's cumulative counters: `answered` requests answered in 5 ms, and `aborted` more sent
/// whose clients went away after waiting `waited` each (the proxy's `record_client_abort`).
fn with_aborts(answered: u64, aborted: u64, waited: Duration) -> crossfade_proxy::BackendSnapshot {
    let stats = std::sync::Arc::new(crossfade_proxy::stats::BackendStats::default());
    for _ in 0..aborted {
        stats.record_client_abort(waited);
    }
    let latency = LatencyHistogram::default();
    (0..answered).for_each(|_| latency.observe(ms(5)));
    crossfade_proxy::BackendSnapshot {
        requests: answered + aborted,
        latency: latency.snapshot(),
        aborted: stats.snapshot().aborted,
        ..Default::default()
    }
}

#[test]
fn requests_their_clients_gave_up_on_are_neither_judged_requests_nor_errors() {
    let j = judge(|c| {
        c.max_p99 = Some(ms(500));
        c.min_requests = 100;
        c.max_error_rate = 0.01;
    });
    let w = Window::between(&Default::default(), &with_aborts(100, 50, ms(100)));
    assert_eq!((w.requests, w.errors, w.aborted.count()), (100, 0, 50));
    // Given up on before max_p99: no evidence either way, the answered ones decide.
    assert_eq!(w.unanswered_past(Some(ms(500))), 0);
    assert_eq!(j.judge(&w, &window(200, 0, ms(5))).outcome, Outcome::Pass);
    // A preview that hangs until its clients give up, before max_p99: never a pass (M16's
    // unanswered requests would vanish from the gauge as they are given up on).
    let w = Window::between(&Default::default(), &with_aborts(0, 500, ms(100)));
    assert_eq!(w.requests, 0);
    let v = j.judge(&w, &window(200, 0, ms(5)));
    assert_eq!(v.outcome, Outcome::Inconclusive, "{v:?}");
    assert!(
        v.summary.ends_with("500 given up by their clients"),
        "{}",
        v.summary
    );
}

#[test]
fn requests_given_up_on_after_max_p99_count_as_slower_than_it() {
    let j = judge(|c| {
        c.max_p99 = Some(ms(500));
        c.min_requests = 100;
    });
    // 200 answered fast, 3 given up on after 2 s: more than 1% certainly slower than 500 ms.
    let w = Window::between(
        &Default::default(),
        &with_aborts(200, 3, Duration::from_secs(2)),
    );
    assert_eq!((w.requests, w.unanswered_past(Some(ms(500)))), (200, 3));
    let v = j.judge(&w, &window(200, 0, ms(5)));
    assert_eq!(v.outcome, Outcome::Fail, "{v:?}");
    assert_eq!(finding(&v, Metric::P99Seconds).unanswered, 3);
    // Below min_requests, they decide it as unanswered ones do.
    let w = Window::between(
        &Default::default(),
        &with_aborts(0, 8, Duration::from_secs(2)),
    );
    assert_eq!(j.judge(&w, &window(200, 0, ms(5))).outcome, Outcome::Fail);
    // A window stored before aborts were counted reads as none; a window with them round-trips.
    let text = serde_json::to_string(&w).unwrap();
    assert!(text.contains("\"aborted\""), "{text}");
    assert_eq!(serde_json::from_str::<Window>(&text).unwrap(), w);
}
