//! The charts' data, computed from a timeline: one x axis (seconds since the rollout's start) and per
//! backend the series the page hands to uPlot, `null` where an interval had no requests.

use crossfade_proxy::weight::Slot;
use serde::Serialize;

use super::{since_start, slot_label, ReportData};
use crate::timeline::{BackendSample, Sample};

/// Everything the page's script draws (serialised into the page as JSON).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ChartData {
    /// Sample times, seconds since the rollout started.
    pub t: Vec<f64>,
    /// The blue slot's series.
    pub blue: BackendSeries,
    /// The green slot's series.
    pub green: BackendSeries,
    /// Step, verdict and end markers, and the other events (drawn fainter).
    pub markers: Vec<ChartMarker>,
}

/// One backend's series, index-aligned with [`ChartData::t`].
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BackendSeries {
    /// Legend label, e.g. `v2 (green)`.
    pub label: String,
    /// Share of the route's requests in the interval, percent; `None` when the route had none.
    pub share: Vec<Option<f64>>,
    /// Weight applied at the end of the interval, percent.
    pub weight: Vec<f64>,
    /// Errors (5xx and upstream failures) per request in the interval, percent; `None` without
    /// requests.
    pub error_rate: Vec<Option<f64>>,
    /// Median latency in the interval, milliseconds.
    pub p50_ms: Vec<Option<f64>>,
    /// 99th percentile latency in the interval, milliseconds.
    pub p99_ms: Vec<Option<f64>>,
    /// Requests in the interval.
    pub requests: Vec<u64>,
}

/// What a marker stands for, which decides its colour and glyph on the charts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MarkerKind {
    /// A step started (its weight is being applied).
    Step,
    /// An analysis passed.
    Pass,
    /// An analysis failed, or the preview failed, exited or missed its deadline.
    Fail,
    /// An analysis had too little traffic to decide.
    Inconclusive,
    /// The rollout was promoted or ended (completed, rolled back, aborted).
    End,
    /// Anything else (provisioning, readiness, weights applied, pauses, gates...).
    Other,
}

/// One marker on the charts.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChartMarker {
    /// Seconds since the rollout started.
    pub t: f64,
    /// Its kind.
    pub kind: MarkerKind,
    /// The event's reason.
    pub reason: String,
    /// The event's message.
    pub message: String,
}

// === impl MarkerKind ===

impl MarkerKind {
    /// The kind of an event `reason`.
    pub fn of(reason: &str) -> MarkerKind {
        match reason {
            "StepStarted" => MarkerKind::Step,
            "AnalysisPassed" => MarkerKind::Pass,
            "AnalysisFailed" | "PreviewFailed" | "PreviewExited" | "DeadlineExceeded"
            | "GateRejected" => MarkerKind::Fail,
            "AnalysisInconclusive" => MarkerKind::Inconclusive,
            "Promoted" | "Completed" | "RolledBack" | "Aborted" => MarkerKind::End,
            _ => MarkerKind::Other,
        }
    }
}

// === impl ChartData ===

impl ChartData {
    /// The series of `data`'s timeline.
    pub fn from_report(data: &ReportData) -> ChartData {
        let timeline = data.timeline();
        let start = timeline.started_at_unix_seconds;
        let samples = &timeline.samples;
        ChartData {
            t: samples.iter().map(|s| s.at_unix_seconds - start).collect(),
            blue: BackendSeries::of(samples, Slot::Blue, slot_label(data, Slot::Blue)),
            green: BackendSeries::of(samples, Slot::Green, slot_label(data, Slot::Green)),
            markers: timeline
                .markers
                .iter()
                .map(|m| ChartMarker {
                    t: since_start(timeline, m),
                    kind: MarkerKind::of(&m.reason),
                    reason: m.reason.clone(),
                    message: m.message.clone(),
                })
                .collect(),
        }
    }
}

// === impl BackendSeries ===

impl BackendSeries {
    fn of(samples: &[Sample], slot: Slot, label: String) -> BackendSeries {
        let mut series = BackendSeries {
            label,
            ..BackendSeries::default()
        };
        for sample in samples {
            let b: &BackendSample = sample.backend(slot);
            let total = sample.blue.requests + sample.green.requests;
            series
                .share
                .push((total > 0).then(|| 100.0 * b.requests as f64 / total as f64));
            series.weight.push(f64::from(b.weight_bp) / 100.0);
            series
                .error_rate
                .push((b.requests > 0).then(|| 100.0 * b.error_rate()));
            series.p50_ms.push(b.p50_seconds.map(|s| s * 1e3));
            series.p99_ms.push(b.p99_seconds.map(|s| s * 1e3));
            series.requests.push(b.requests);
        }
        series
    }
}
