use crossfade_proxy::weight::Slot;

use super::series::{ChartData, MarkerKind};
use super::summary::stretches;
use super::*;
use crate::analysis::{Outcome, Verdict};
use crate::rollout::{Rollout, StepVerdict};
use crate::spec::WorkloadSpec;
use crate::timeline::{BackendImage, BackendSample, Sample};

fn backend(requests: u64, errors: u64, weight_bp: u32) -> BackendSample {
    BackendSample {
        requests,
        errors,
        p50_seconds: (requests > 0).then_some(0.002),
        p99_seconds: (requests > 0).then_some(0.010),
        weight_bp,
    }
}

/// A rolled-back rollout: 2 s provisioning, step 1 at 10% from +2 s, failed at +5 s, rolled back at
/// +6 s; one sample per second.
fn rolled_back() -> ReportData {
    let spec = |name: &str| WorkloadSpec {
        name: Some(name.into()),
        command: Some("sh".into()),
        ..WorkloadSpec::default()
    };
    let mut rollout = Rollout::new(7, Default::default(), Slot::Blue);
    rollout.phase = Phase::RolledBack;
    rollout.reason = Some("analysis failed: error rate 20% > 1% <b>".into());
    rollout.verdicts.push(StepVerdict {
        step: 0,
        preview_bp: 1000,
        verdict: Verdict {
            outcome: Outcome::Fail,
            findings: Vec::new(),
            summary: "error rate 20% > 1% (50 requests)".into(),
            checks: Vec::new(),
        },
    });
    let mut timeline = Timeline::starting(1000.0);
    for (t, green, green_errors, green_bp) in [
        (1, 0, 0, 0),
        (3, 10, 2, 1000),
        (5, 10, 2, 1000),
        (6, 0, 0, 0),
    ] {
        timeline.push_sample(Sample {
            at_unix_seconds: 1000.0 + f64::from(t),
            seconds: 1.0,
            blue: backend(90, 0, 10_000 - green_bp),
            green: backend(green, green_errors, green_bp),
        });
    }
    for (t, reason, message) in [
        (2.0, "PreviewReady", "green is ready"),
        (
            2.0,
            "StepStarted",
            "step 1/4: shifting 10% of traffic to green",
        ),
        (5.0, "AnalysisFailed", "error rate 20% > 1%; rolling back"),
        (
            6.0,
            "RolledBack",
            "rolled back: weight 0 applied; stopping green",
        ),
    ] {
        timeline.push_marker(1000.0 + t, reason, message);
    }
    timeline.ended_at_unix_seconds = Some(1006.0);
    timeline.images = vec![
        BackendImage::of(Slot::Blue, "active", &spec("v1")),
        BackendImage::of(Slot::Green, "preview", &spec("v2</script>")),
    ];
    ReportData {
        unfinished: false,
        route: "web".into(),
        record: RolloutRecord {
            rollout,
            preview_workload: spec("v2"),
            preview_pids: Vec::new(),
            interrupted: false,
            active_workload: Some(spec("v1")),
            timeline,
            preview_digest: None,
        },
    }
}

#[test]
fn chart_series_give_share_weight_error_rate_and_latency_per_backend() {
    let data = ChartData::from_report(&rolled_back());
    assert_eq!(data.t, vec![1.0, 3.0, 5.0, 6.0]);
    assert_eq!(
        data.green.share,
        vec![Some(0.0), Some(10.0), Some(10.0), Some(0.0)]
    );
    assert_eq!(data.green.weight, vec![0.0, 10.0, 10.0, 0.0]);
    assert_eq!(
        data.green.error_rate,
        vec![None, Some(20.0), Some(20.0), None]
    );
    assert_eq!(data.green.p99_ms, vec![None, Some(10.0), Some(10.0), None]);
    assert_eq!(data.blue.p50_ms[0], Some(2.0));
    assert_eq!(data.green.label, "v2</script> (green)");
    let kinds: Vec<MarkerKind> = data.markers.iter().map(|m| m.kind).collect();
    use MarkerKind::*;
    assert_eq!(kinds, vec![Other, Step, Fail, End]);
}

#[test]
fn durations_cut_the_rollout_at_steps_rollback_and_end() {
    let data = rolled_back();
    let cut: Vec<(String, f64, f64)> = stretches(data.timeline())
        .into_iter()
        .map(|s| (s.what, s.from, s.to))
        .collect();
    assert_eq!(
        cut,
        vec![
            ("provisioning the preview".into(), 0.0, 2.0),
            (
                "step 1/4: shifting 10% of traffic to green".into(),
                2.0,
                5.0
            ),
            ("rolling back".into(), 5.0, 6.0),
        ]
    );
}

#[test]
fn the_page_is_self_contained_and_escapes_what_the_rollout_says() {
    let page = rolled_back().render();
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(
        page.contains("Rollout 7 on route web: rolled back"),
        "title"
    );
    assert!(page.contains("class=\"outcome rolled-back\""));
    assert!(
        page.contains("analysis failed: error rate 20% &gt; 1% &lt;b&gt;"),
        "why, escaped"
    );
    assert!(page.contains("var uPlot="), "uPlot inlined");
    assert!(!page.contains("{{"), "every placeholder filled");
    for remote in ["src=\"http", "href=\"http", "@import", "src=\"//"] {
        assert!(
            !page.contains(remote),
            "nothing loaded from the network: {remote}"
        );
    }
    // The only `</script>` are the page's own three: the data cannot close its element.
    assert_eq!(page.matches("</script>").count(), 3);
    assert!(page.contains("v2\\u003c/script> (green)"));
    assert!(
        page.contains("<td>error rate 20% &gt; 1% (50 requests)</td>"),
        "verdict"
    );
    assert!(
        page.contains("<td>+5.0s</td><td>AnalysisFailed</td>"),
        "event"
    );
    let digest = crate::image::hash_file(std::path::Path::new(
        &rolled_back().timeline().images[0].image.image,
    ));
    assert!(
        page.contains(&digest.unwrap_or_default()),
        "the program's digest"
    );
}

#[test]
fn a_report_needs_a_finished_rollout() {
    let mut state = ServiceState::default();
    let none = ReportData::from_state(&state).unwrap_err().to_string();
    assert_eq!(
        none,
        "no rollout report: no rollout has run on this service yet"
    );
    let mut record = rolled_back().record;
    record.rollout.phase = Phase::Progressing;
    state.rollout = Some(record);
    let running = ReportData::from_state(&state).unwrap_err().to_string();
    assert!(
        running.contains("rollout 7 is still progressing"),
        "{running}"
    );
}

/// Trial report 9: a rollout stopped mid-way (SIGTERM) is reported from its state file, marked
/// unfinished in the title and the facts; a finished one is not marked.
#[test]
fn an_unfinished_rollout_is_reported_from_a_state_file_and_marked() {
    let mut state = ServiceState {
        route: "web".into(),
        ..ServiceState::default()
    };
    let mut record = rolled_back().record;
    record.rollout.phase = Phase::Progressing;
    state.rollout = Some(record);
    let data = ReportData::from_state_unfinished(&state).unwrap();
    assert!(data.unfinished);
    let page = data.render();
    assert!(
        page.contains("Rollout 7 on route web: progressing (unfinished)"),
        "title"
    );
    assert!(page.contains("unfinished: the state file records this rollout as progressing"));

    state.rollout = Some(rolled_back().record);
    let data = ReportData::from_state_unfinished(&state).unwrap();
    assert!(!data.unfinished);
    assert!(!data.render().contains("unfinished"));
}

#[test]
fn placeholders_inside_values_are_left_alone() {
    let page = fill("a{{X}}b{{Y}}c{{nope}}", &[("X", "{{Y}}"), ("Y", "2")]);
    assert_eq!(page, "a{{Y}}b2c{{nope}}");
}

#[test]
fn durations_read_as_people_say_them() {
    let said: Vec<String> = [0.85, 12.34, 245.0, 3720.0].map(human_seconds).to_vec();
    assert_eq!(said, ["850ms", "12.3s", "4m 05s", "1h 02m"]);
}
