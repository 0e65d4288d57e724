//! The controller's metrics as `/metrics` shows them: names, labels, values.

use std::time::Duration;

use crossfade_proxy::weight::Slot;
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;

use super::*;
use crate::analysis::{Finding, Metric, Outcome, Verdict};
use crate::rollout::{Phase, Rollout, StepVerdict};
use crate::spec::{RolloutConfig, WorkloadSpec};

fn scrape(registry: &Registry) -> String {
    let mut text = String::new();
    encode(&mut text, registry).expect("encode");
    text
}

/// The value of the sample whose line starts with `series` (name and labels, exactly as encoded).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

fn setup() -> (Registry, RouteMetrics, Rollout) {
    let mut registry = Registry::with_prefix("crossfade");
    let metrics = RolloutMetrics::register(&mut registry).route("web");
    let rollout = Rollout::new(1, RolloutConfig::default(), Slot::Blue);
    (registry, metrics, rollout)
}

fn verdict(outcome: Outcome, error_rate: f64) -> StepVerdict {
    StepVerdict {
        step: 0,
        preview_bp: 500,
        verdict: Verdict {
            outcome,
            findings: vec![
                Finding {
                    metric: Metric::Requests,
                    value: 120.0,
                    threshold: 50.0,
                    ok: true,
                    between: None,
                    unanswered: 0,
                },
                Finding {
                    metric: Metric::ErrorRate,
                    value: error_rate,
                    threshold: 0.01,
                    ok: error_rate <= 0.01,
                    between: None,
                    unanswered: 0,
                },
            ],
            summary: String::new(),
            checks: Vec::new(),
        },
    }
}

#[test]
fn outcome_counters_exist_at_zero_before_any_rollout() {
    let (registry, _metrics, _) = setup();
    let text = scrape(&registry);
    for outcome in ROLLOUT_OUTCOMES {
        let series = format!("crossfade_rollouts_total{{route=\"web\",outcome=\"{outcome}\"}}");
        assert_eq!(value(&text, &series), Some(0.0), "{series} in\n{text}");
    }
    assert_eq!(
        value(
            &text,
            "crossfade_rollout_events_total{route=\"web\",reason=\"RolledBack\"}"
        ),
        Some(0.0)
    );
}

/// Trial 9, I12: the dashboard's mean rollout duration over `$__range` is `increase()` of the
/// histogram's `_sum` over that of its `_count`. A (route, outcome) series born at the first
/// observation starts at count 1 and shows no increase, so the first rollout of each outcome had
/// no mean: every outcome's series exists at 0 from the start, as `crossfade_rollouts_total`'s do.
#[test]
fn duration_series_exist_at_zero_for_every_outcome_before_any_rollout_ends() {
    let (registry, mut metrics, mut rollout) = setup();
    let series = |text: &str, part: &str, outcome: &str| {
        let name = format!(
            "crossfade_rollout_duration_seconds_{part}{{route=\"web\",outcome=\"{outcome}\"}}"
        );
        value(text, &name)
    };
    let before = scrape(&registry);
    rollout.phase = Phase::Progressing;
    metrics.transition(&rollout);
    let running = scrape(&registry);
    for text in [&before, &running] {
        for outcome in ROLLOUT_OUTCOMES {
            for part in ["count", "sum"] {
                assert_eq!(
                    series(text, part, outcome),
                    Some(0.0),
                    "{outcome} {part}\n{text}"
                );
            }
        }
    }

    rollout.phase = Phase::RolledBack;
    metrics.transition(&rollout);
    let ended = scrape(&registry);
    assert_eq!(series(&ended, "count", "rolled_back"), Some(1.0), "{ended}");
    assert_eq!(series(&ended, "count", "completed"), Some(0.0), "{ended}");
    assert_eq!(series(&ended, "count", "aborted"), Some(0.0), "{ended}");
}

/// Session 40: no step has started while the preview provisions, nor in a rollout paused then
/// (step 0); a preview that gets ready while paused shows step 1, as a TrafficShift's status does,
/// though neither phase nor step index changed.
#[test]
fn the_step_is_0_until_the_preview_is_ready_also_while_paused() {
    let (registry, mut metrics, mut rollout) = setup();
    let step =
        |registry: &Registry| value(&scrape(registry), "crossfade_rollout_step{route=\"web\"}");
    rollout.phase = Phase::Provisioning;
    metrics.transition(&rollout);
    assert_eq!(step(&registry), Some(0.0));
    rollout.phase = Phase::Paused;
    metrics.transition(&rollout);
    assert_eq!(step(&registry), Some(0.0));
    rollout.preview_ready = true;
    metrics.transition(&rollout);
    assert_eq!(step(&registry), Some(1.0));
}

#[test]
fn a_step_shows_phase_step_and_desired_weights() {
    let (registry, mut metrics, mut rollout) = setup();
    rollout.phase = Phase::Progressing;
    rollout.preview_ready = true;
    rollout.step = 1;
    rollout.preview_bp = 2500;
    metrics.transition(&rollout);
    let text = scrape(&registry);
    let phase = |p: &str| {
        value(
            &text,
            &format!("crossfade_rollout_phase{{route=\"web\",phase=\"{p}\"}}"),
        )
    };
    assert_eq!(phase("Progressing"), Some(1.0), "{text}");
    assert_eq!(phase("Pending"), Some(0.0));
    assert_eq!(
        value(&text, "crossfade_rollout_step{route=\"web\"}"),
        Some(2.0)
    );
    assert_eq!(
        value(&text, "crossfade_rollout_steps{route=\"web\"}"),
        Some(4.0)
    );
    let desired = |b: &str| {
        value(
            &text,
            &format!(
                "crossfade_rollout_desired_weight_basis_points{{route=\"web\",backend=\"{b}\"}}"
            ),
        )
    };
    assert_eq!(
        (desired("blue"), desired("green")),
        (Some(7500.0), Some(2500.0))
    );
    assert_eq!(
        value(
            &text,
            "crossfade_analysis_threshold{route=\"web\",metric=\"error_rate\"}"
        ),
        Some(0.01)
    );
    assert_eq!(
        value(
            &text,
            "crossfade_rollout_progress_deadline_seconds{route=\"web\"}"
        ),
        Some(120.0)
    );
    assert_eq!(
        value(
            &text,
            "crossfade_rollout_drain_timeout_seconds{route=\"web\"}"
        ),
        Some(rollout.config.drain_timeout.as_secs_f64())
    );
}

#[test]
fn a_failed_verdict_and_rollback_are_counted_once() {
    let (registry, mut metrics, mut rollout) = setup();
    rollout.phase = Phase::Progressing;
    metrics.transition(&rollout);
    rollout.verdicts.push(verdict(Outcome::Fail, 0.2));
    metrics.event(Some(&rollout), "AnalysisFailed");
    rollout.phase = Phase::RollingBack;
    metrics.transition(&rollout);
    rollout.phase = Phase::RolledBack;
    metrics.transition(&rollout);
    metrics.transition(&rollout);
    let text = scrape(&registry);
    let total = |o: &str| {
        value(
            &text,
            &format!("crossfade_rollouts_total{{route=\"web\",outcome=\"{o}\"}}"),
        )
    };
    assert_eq!(
        (total("rolled_back"), total("completed")),
        (Some(1.0), Some(0.0)),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "crossfade_rollout_verdicts_total{route=\"web\",outcome=\"fail\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "crossfade_analysis_value{route=\"web\",metric=\"error_rate\"}"
        ),
        Some(0.2)
    );
    assert_eq!(
        value(
            &text,
            "crossfade_rollout_duration_seconds_count{route=\"web\",outcome=\"rolled_back\"}"
        ),
        Some(1.0)
    );
}

/// Trial 8, H7: a rollout's analysis series outlived it. A shadow step's mismatch rate of 100 %
/// stayed on `/metrics` through later rollouts without a shadow step, so an alert on `value >
/// threshold` kept firing after the rollback. A verdict's values replace the last verdict's, and a
/// new rollout's start removes the previous rollout's series.
#[test]
fn analysis_series_are_those_of_the_current_rollout_only() {
    let (registry, mut metrics, _) = setup();
    let series = |metric: &str| {
        let text = scrape(&registry);
        [
            format!("crossfade_analysis_value{{route=\"web\",metric=\"{metric}\"}}"),
            format!("crossfade_analysis_threshold{{route=\"web\",metric=\"{metric}\"}}"),
        ]
        .map(|s| value(&text, &s))
    };
    let mut config = RolloutConfig::default();
    config.analysis.shadow = Some(crate::spec::ShadowGuard::default());
    let mut shadowed = Rollout::new(1, config, Slot::Blue);
    shadowed.phase = Phase::Progressing;
    metrics.transition(&shadowed);
    let mut shadow = verdict(Outcome::Fail, 0.0);
    shadow.verdict.findings = vec![Finding {
        metric: Metric::ShadowMismatchRate,
        value: 1.0,
        threshold: 0.01,
        ok: false,
        between: None,
        unanswered: 0,
    }];
    shadowed.verdicts.push(shadow);
    metrics.event(Some(&shadowed), "AnalysisFailed");
    assert_eq!(series("shadow_mismatch_rate"), [Some(1.0), Some(0.01)]);

    // A live verdict of the same rollout: the shadow step's value goes, its bound stays.
    shadowed.verdicts.push(verdict(Outcome::Pass, 0.0));
    metrics.event(Some(&shadowed), "AnalysisPassed");
    assert_eq!(series("shadow_mismatch_rate"), [None, Some(0.01)]);
    assert_eq!(series("requests"), [Some(120.0), Some(50.0)]);
    shadowed.phase = Phase::RolledBack;
    metrics.transition(&shadowed);
    assert_eq!(
        series("requests"),
        [Some(120.0), Some(50.0)],
        "kept once over"
    );

    // The next rollout has no shadow step and no verdict yet: only its own bounds are shown.
    let mut next = Rollout::new(2, RolloutConfig::default(), Slot::Blue);
    next.phase = Phase::Progressing;
    metrics.transition(&next);
    assert_eq!(series("shadow_mismatch_rate"), [None, None]);
    assert_eq!(series("shadow_compared"), [None, None]);
    let min_requests = RolloutConfig::default().analysis.min_requests as f64;
    assert_eq!(series("requests"), [None, Some(min_requests)]);
}

/// A window the observed-split guard flagged carries a `preview_share` finding: its value (the
/// share the preview got) is exported, but no `crossfade_analysis_threshold` series, as
/// docs/metrics.md says: the share its weight asked for is no bound the value is held to (the
/// range allowed is on both sides of it), and, kept like every bound until the next rollout, it
/// stood on `/metrics` with the asked share of a step long left (check32: it was exported).
#[test]
fn a_preview_share_finding_exports_its_value_and_no_threshold() {
    let (registry, mut metrics, mut rollout) = setup();
    let series = |metric: &str| {
        let text = scrape(&registry);
        [
            format!("crossfade_analysis_value{{route=\"web\",metric=\"{metric}\"}}"),
            format!("crossfade_analysis_threshold{{route=\"web\",metric=\"{metric}\"}}"),
        ]
        .map(|s| value(&text, &s))
    };
    rollout.phase = Phase::Progressing;
    metrics.transition(&rollout);
    let mut guarded = verdict(Outcome::Inconclusive, 0.0);
    guarded.verdict.findings.push(Finding {
        metric: Metric::PreviewShare,
        value: 0.0,
        threshold: 0.05,
        ok: false,
        between: Some((0.02, 0.08)),
        unanswered: 0,
    });
    rollout.verdicts.push(guarded);
    metrics.event(Some(&rollout), "AnalysisInconclusive");
    assert_eq!(series("preview_share"), [Some(0.0), None]);
    assert_eq!(series("error_rate"), [Some(0.0), Some(0.01)]);
    rollout.verdicts.push(verdict(Outcome::Pass, 0.0));
    metrics.event(Some(&rollout), "AnalysisPassed");
    assert_eq!(series("preview_share"), [None, None]);
}

#[test]
fn a_rollout_loaded_already_over_is_not_counted() {
    let (registry, mut metrics, mut rollout) = setup();
    rollout.phase = Phase::Completed;
    metrics.transition(&rollout);
    let text = scrape(&registry);
    assert_eq!(
        value(
            &text,
            "crossfade_rollouts_total{route=\"web\",outcome=\"completed\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &text,
            "crossfade_rollout_phase{route=\"web\",phase=\"Completed\"}"
        ),
        Some(1.0)
    );
}

#[test]
fn unknown_event_reasons_are_counted_as_other() {
    let (registry, mut metrics, _) = setup();
    metrics.event(None, "SomethingNew");
    let text = scrape(&registry);
    assert_eq!(
        value(
            &text,
            "crossfade_rollout_events_total{route=\"web\",reason=\"Other\"}"
        ),
        Some(1.0)
    );
    assert!(!text.contains("SomethingNew"));
}

#[test]
fn backend_info_maps_each_slot_to_its_workload_image_and_digest() {
    use std::os::unix::fs::PermissionsExt;
    let (registry, metrics, _) = setup();
    let dir = tempfile::tempdir().expect("temp dir");
    let app = dir.path().join("app");
    std::fs::write(&app, b"abc").expect("write the program");
    std::fs::set_permissions(&app, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let blue = WorkloadSpec {
        command: Some(app.display().to_string()),
        args: vec!["--port".into(), "{port}".into()],
        name: Some("v1".into()),
        ..WorkloadSpec::default()
    };
    let green = WorkloadSpec {
        endpoints: vec!["10.0.0.7:8080".parse().expect("address")],
        ..WorkloadSpec::default()
    };
    metrics.backends(Slot::Blue, &blue, Some(&green));
    let text = scrape(&registry);
    assert!(text.contains("# TYPE crossfade_backend info"), "{text}");
    // sha256("abc"), FIPS 180-2 appendix B.1: outside a runtime the digest is computed at once.
    let digest = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    let app = app.display();
    let blue_info = format!("crossfade_backend_info{{route=\"web\",backend=\"blue\",workload=\"{app} --port {{port}} ×1 instance\",image=\"{app}\",image_digest=\"{digest}\",version=\"v1\"}}");
    assert_eq!(value(&text, &blue_info), Some(1.0), "{text}");
    let green_info = "crossfade_backend_info{route=\"web\",backend=\"green\",workload=\"endpoints 10.0.0.7:8080\",image=\"\",image_digest=\"\",version=\"\"}";
    assert_eq!(value(&text, green_info), Some(1.0), "{text}");
    metrics.backends(Slot::Blue, &blue, None);
    let text = scrape(&registry);
    assert!(!text.contains("backend=\"green\",workload"), "{text}");
}

#[test]
fn kubernetes_backends_carry_the_digests_their_pods_report() {
    let (registry, metrics, _) = setup();
    let sha = |c: char| format!("sha256:{}", c.to_string().repeat(64));
    let (a, b) = (sha('a'), sha('b'));
    let active_digest = format!("{a}|{b}");
    let blue = DeploymentInfo {
        deployment: "web",
        image: "web:v1",
        digest: &active_digest,
    };
    let green = DeploymentInfo {
        deployment: "web-green",
        image: "web:v2",
        digest: "",
    };
    metrics.deployments(Slot::Blue, blue, Some(green));
    let text = scrape(&registry);
    let blue_info = format!("crossfade_backend_info{{route=\"web\",backend=\"blue\",workload=\"deployment/web\",image=\"web:v1\",image_digest=\"{a}|{b}\",version=\"web\"}}");
    assert_eq!(value(&text, &blue_info), Some(1.0), "{text}");
    let green_info = "crossfade_backend_info{route=\"web\",backend=\"green\",workload=\"deployment/web-green\",image=\"web:v2\",image_digest=\"\",version=\"web-green\"}";
    assert_eq!(value(&text, green_info), Some(1.0), "{text}");
    metrics.deployments(Slot::Blue, blue, None);
    let text = scrape(&registry);
    assert!(!text.contains("backend=\"green\",workload"), "{text}");
}

#[test]
fn a_promote_within_a_step_updates_the_desired_weight() {
    let (registry, mut metrics, mut rollout) = setup();
    rollout.phase = Phase::Progressing;
    rollout.preview_bp = 500;
    metrics.transition(&rollout);
    rollout.preview_bp = 10_000;
    metrics.transition(&rollout);
    let text = scrape(&registry);
    let green = "crossfade_rollout_desired_weight_basis_points{route=\"web\",backend=\"green\"}";
    assert_eq!(value(&text, green), Some(10_000.0), "{text}");
}

#[test]
fn a_halt_at_a_gate_shows_where_and_every_refusal_counts() {
    use crate::rollout::GateWait;
    use crate::spec::GatePoint;
    let (registry, mut metrics, mut rollout) = setup();
    let halted = |text: &str, at: &str| {
        let series = format!("crossfade_rollout_gate_halted{{route=\"web\",at=\"{at}\"}}");
        value(text, &series)
    };
    let refusals = |text: &str| value(text, "crossfade_rollout_gate_refusals_total{route=\"web\"}");
    let text = scrape(&registry);
    assert_eq!(halted(&text, "before_promotion"), Some(0.0), "{text}");
    assert_eq!(refusals(&text), Some(0.0), "{text}");

    rollout.phase = Phase::Progressing;
    rollout.gate = Some(GateWait {
        at: GatePoint::BeforePromotion,
        step: 3,
        refusal: None,
    });
    metrics.transition(&rollout);
    // The same refusal three times: phase and step stay, each one counts.
    for n in 1..=3 {
        rollout.gate_refusals = n;
        metrics.transition(&rollout);
    }
    let text = scrape(&registry);
    assert_eq!(halted(&text, "before_promotion"), Some(1.0), "{text}");
    assert_eq!(halted(&text, "before_step"), Some(0.0), "{text}");
    assert_eq!(refusals(&text), Some(3.0), "{text}");

    rollout.gate = None;
    rollout.phase = Phase::Promoted;
    metrics.transition(&rollout);
    let text = scrape(&registry);
    assert_eq!(halted(&text, "before_promotion"), Some(0.0), "{text}");
    assert_eq!(refusals(&text), Some(3.0), "{text}");

    // A rollout rebuilt from its stored record starts again at 0 refusals: nothing is lost or
    // counted twice.
    rollout.gate_refusals = 1;
    metrics.transition(&rollout);
    assert_eq!(refusals(&scrape(&registry)), Some(4.0));
}

/// A state file without the rollout's start (written before timelines were kept): counted, but
/// no duration is made up.
#[test]
fn a_recovered_rollout_without_a_persisted_start_is_counted_without_a_duration() {
    let (registry, metrics, _) = setup();
    metrics.recovered(Phase::Completed, None);
    let _ = scrape(&registry);
    let text = scrape(&registry);
    let completed = "crossfade_rollouts_total{route=\"web\",outcome=\"completed\"}";
    assert_eq!(value(&text, completed), Some(1.0), "{text}");
    let count = "crossfade_rollout_duration_seconds_count{route=\"web\",outcome=\"completed\"}";
    assert_eq!(value(&text, count), Some(0.0), "nothing observed: {text}");
}

#[test]
fn a_rollback_by_restart_recovery_is_scraped_at_zero_first_then_counted() {
    let (registry, metrics, _) = setup();
    metrics.recovered(Phase::RolledBack, Some(Duration::from_secs(90)));
    metrics.start_event("Recovered");
    let rolled_back = "crossfade_rollouts_total{route=\"web\",outcome=\"rolled_back\"}";
    let recovered = "crossfade_rollout_events_total{route=\"web\",reason=\"Recovered\"}";
    let first = scrape(&registry);
    assert_eq!(value(&first, rolled_back), Some(0.0), "{first}");
    assert_eq!(value(&first, recovered), Some(0.0), "{first}");
    // The duration from the persisted start to the recovery: observed after the first scrape
    // too, so `increase()` of the histogram's count and sum sees it (trial 9 I4's rollback now
    // has a duration).
    let count = "crossfade_rollout_duration_seconds_count{route=\"web\",outcome=\"rolled_back\"}";
    let sum = "crossfade_rollout_duration_seconds_sum{route=\"web\",outcome=\"rolled_back\"}";
    assert_eq!(value(&first, count), Some(0.0), "{first}");
    let second = scrape(&registry);
    assert_eq!(value(&second, rolled_back), Some(1.0), "{second}");
    assert_eq!(value(&second, recovered), Some(1.0), "{second}");
    assert_eq!(value(&second, count), Some(1.0), "{second}");
    assert_eq!(value(&second, sum), Some(90.0), "{second}");
    // After the first scrape a count is immediate, and applied once only.
    metrics.start_event("BlueChanged");
    let third = scrape(&registry);
    assert_eq!(value(&third, rolled_back), Some(1.0), "{third}");
    assert_eq!(value(&third, count), Some(1.0), "{third}");
    let blue_changed = "crossfade_rollout_events_total{route=\"web\",reason=\"BlueChanged\"}";
    assert_eq!(value(&third, blue_changed), Some(1.0), "{third}");
}

/// Sets every slot's `crossfade_backend_workload_timestamp_seconds` to `since` (as if long ago).
fn backdate(metrics: &RouteMetrics, since: f64) {
    let mut info = metrics.metrics.info.lock().expect("info map");
    for entry in info.values_mut() {
        entry.since = since;
    }
}

/// Trial 9 I6: `CrossfadePreviewErrorRateHigh` must not judge a rate window that reaches back
/// into the slot's previous workload, so each slot exports when it got the workload it runs now.
/// The stamp stays while the workload stays and moves when another workload enters the slot.
#[test]
fn each_slot_exports_when_it_got_its_workload_and_keeps_it_while_the_workload_stays() {
    let (registry, metrics, _) = setup();
    let spec = |name: &str| WorkloadSpec {
        endpoints: vec!["10.0.0.7:8080".parse().expect("address")],
        name: Some(name.into()),
        ..WorkloadSpec::default()
    };
    let blue_series =
        "crossfade_backend_workload_timestamp_seconds{route=\"web\",backend=\"blue\"}";
    let green_series =
        "crossfade_backend_workload_timestamp_seconds{route=\"web\",backend=\"green\"}";
    let before = info::unix_now();
    metrics.backends(Slot::Blue, &spec("v1"), Some(&spec("v2")));
    let text = scrape(&registry);
    assert!(
        text.contains("# TYPE crossfade_backend_workload_timestamp_seconds gauge"),
        "{text}"
    );
    assert!(
        text.contains("# UNIT crossfade_backend_workload_timestamp_seconds seconds"),
        "{text}"
    );
    for series in [blue_series, green_series] {
        let since = value(&text, series).expect(series);
        assert!(since >= before.floor(), "{series} {since} < {before}");
    }
    backdate(&metrics, 1000.0);
    // Blue keeps v1: its stamp stays. Green's v2 is rolled back and v3 enters the slot.
    let before = info::unix_now();
    metrics.backends(Slot::Blue, &spec("v1"), Some(&spec("v3")));
    let text = scrape(&registry);
    assert_eq!(value(&text, blue_series), Some(1000.0), "{text}");
    let green = value(&text, green_series).expect("green's stamp");
    assert!(green >= before.floor(), "{green} < {before}");
    // An empty slot has no stamp.
    metrics.backends(Slot::Blue, &spec("v1"), None);
    let text = scrape(&registry);
    assert_eq!(value(&text, green_series), None, "{text}");
}

/// Kubernetes mode: the green slot's Deployment keeps its name (`<name>-green`) from rollout to
/// rollout, so a new preview is told by its images; new digests alone (pods reporting, a rolling
/// update of the same template) keep the stamp.
#[test]
fn a_kubernetes_slot_is_stamped_again_when_its_images_change_not_its_digests() {
    let (registry, metrics, _) = setup();
    let green_series =
        "crossfade_backend_workload_timestamp_seconds{route=\"web\",backend=\"green\"}";
    let blue = DeploymentInfo {
        deployment: "web",
        image: "web:v1",
        digest: "",
    };
    let green = |image, digest| DeploymentInfo {
        deployment: "web-green",
        image,
        digest,
    };
    metrics.deployments(Slot::Blue, blue, Some(green("web:v2", "")));
    backdate(&metrics, 1000.0);
    let digest = format!("sha256:{}", "a".repeat(64));
    metrics.deployments(Slot::Blue, blue, Some(green("web:v2", &digest)));
    let text = scrape(&registry);
    assert_eq!(value(&text, green_series), Some(1000.0), "{text}");
    let before = info::unix_now();
    metrics.deployments(Slot::Blue, blue, Some(green("web:v3", "")));
    let text = scrape(&registry);
    let since = value(&text, green_series).expect("green's stamp");
    assert!(since >= before.floor(), "{since} < {before}");
}

/// Trial 10, K19: a deleted TrafficShift's series stayed on the controller's `/metrics` (its
/// phase gauge at 1, its desired weights) until a restart. [`RouteMetrics::forget`] removes every
/// series of the route, counters and checks included, and leaves the other routes' alone.
#[test]
fn a_forgotten_route_leaves_no_series_and_the_others_stay() {
    let mut registry = Registry::with_prefix("crossfade");
    let families = RolloutMetrics::register(&mut registry);
    let mut gone = families.route("default/gone");
    let mut kept = families.route("default/kept");
    let mut config = RolloutConfig::default();
    config.analysis.shadow = Some(crate::spec::ShadowGuard::default());
    let mut rollout = Rollout::new(1, config, Slot::Blue);
    rollout.phase = Phase::Progressing;
    let mut judged = verdict(Outcome::Pass, 0.0);
    judged.verdict.checks = vec![crate::analysis::checks::CheckResult {
        name: "latency".into(),
        provider: crate::spec::checks::ProviderKind::Prometheus,
        query: "q".into(),
        value: Some(0.1),
        min: None,
        max: Some(1.0),
        ok: true,
        error: None,
    }];
    rollout.verdicts.push(judged);
    for metrics in [&mut gone, &mut kept] {
        metrics.transition(&rollout);
        metrics.event(Some(&rollout), "AnalysisPassed");
        metrics.deployments(
            Slot::Blue,
            DeploymentInfo {
                deployment: "web",
                image: "web:v1",
                digest: "",
            },
            Some(DeploymentInfo {
                deployment: "web-green",
                image: "web:v2",
                digest: "",
            }),
        );
    }
    let samples = |text: &str, route: &str| {
        let label = format!("route=\"{route}\"");
        text.lines()
            .filter(|l| !l.starts_with('#') && l.contains(&label))
            .count()
    };
    let before = scrape(&registry);
    assert!(
        before.contains("crossfade_analysis_checks_total{route=\"default/gone\",check=\"latency\",result=\"pass\"} 1"),
        "{before}"
    );
    assert!(
        before.contains("crossfade_backend_info{route=\"default/gone\""),
        "{before}"
    );
    let kept_before = samples(&before, "default/kept");
    assert_eq!(samples(&before, "default/gone"), kept_before, "{before}");

    gone.forget();
    let after = scrape(&registry);
    assert_eq!(samples(&after, "default/gone"), 0, "{after}");
    assert_eq!(samples(&after, "default/kept"), kept_before, "{after}");
}
