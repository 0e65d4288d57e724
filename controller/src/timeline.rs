//! What a rollout looked like over time: per-backend samples (requests, errors, latency quantiles,
//! weights) taken every [`SAMPLE_INTERVAL`] by the runtime, and markers (steps, verdicts, the end)
//! from its events. Kept with the rollout in the state file and bounded, so a rollout of hours costs
//! the same as one of minutes; `crossfade report` draws it ([`crate::report`]).

use crossfade_proxy::weight::Slot;
use crossfade_proxy::BackendSnapshot;
use serde::{Deserialize, Serialize};

/// Time between two samples while a rollout runs: one second, the resolution people read a demo
/// rollout at; longer rollouts are thinned by merging (see [`MAX_SAMPLES`]).
pub const SAMPLE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// The most samples a timeline keeps, about as many points as a chart one screen wide can show. When
/// full, neighbouring samples are merged pairwise, which halves the resolution and the count: 17
/// minutes at 1 s, 34 at 2 s, 68 at 4 s, ... A timeline is then under 0.5 MiB of (pretty) JSON in the
/// state file, which is rewritten at every transition, whatever the rollout's length.
pub const MAX_SAMPLES: usize = 1024;

/// The most markers a timeline keeps. When full, the oldest verdict that neither failed nor ended
/// anything (`AnalysisPassed`, `AnalysisInconclusive`) is dropped first, else the oldest marker.
pub const MAX_MARKERS: usize = 500;

/// A rollout's recorded course (module docs).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Timeline {
    /// When the rollout started, Unix seconds (wall clock).
    pub started_at_unix_seconds: f64,
    /// When it reached a terminal phase, Unix seconds; `None` while it runs.
    pub ended_at_unix_seconds: Option<f64>,
    /// Samples, oldest first, at most [`MAX_SAMPLES`].
    pub samples: Vec<Sample>,
    /// Events of the rollout, oldest first, at most [`MAX_MARKERS`].
    pub markers: Vec<Marker>,
    /// What each backend ran: the active workload and the preview, in that order.
    pub images: Vec<BackendImage>,
}

/// The workload one backend slot ran during the rollout, named as `crossfade_backend_info` names it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackendImage {
    /// The slot.
    pub backend: Slot,
    /// `active` (serving when the rollout started) or `preview` (rolled out to).
    pub role: String,
    /// The workload's `name:` (empty when unset).
    pub version: String,
    /// The workload described (command and arguments, or endpoints).
    pub workload: String,
    /// Image reference and digest (local mode: program path and SHA-256 of the file).
    #[serde(flatten)]
    pub image: crate::image::ImageRef,
}

impl BackendImage {
    /// The image of `spec` running in `backend` as `role`.
    pub fn of(backend: Slot, role: &str, spec: &crate::spec::WorkloadSpec) -> BackendImage {
        BackendImage {
            backend,
            role: role.to_owned(),
            version: spec.name.clone().unwrap_or_default(),
            workload: spec.describe(),
            image: crate::image::of(spec),
        }
    }
}

/// What both backends did during one interval (ending at `at_unix_seconds`, `seconds` long).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// End of the interval, Unix seconds.
    pub at_unix_seconds: f64,
    /// Length of the interval, seconds ([`SAMPLE_INTERVAL`], or a multiple after merging).
    pub seconds: f64,
    /// The blue slot.
    pub blue: BackendSample,
    /// The green slot.
    pub green: BackendSample,
}

/// One backend's share of a [`Sample`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BackendSample {
    /// Requests dispatched during the interval.
    pub requests: u64,
    /// 5xx responses and upstream failures during the interval.
    pub errors: u64,
    /// Median latency (dispatch to response head) in seconds; `None` without requests. After a
    /// merge, the request-weighted mean of the merged medians (an estimate).
    pub p50_seconds: Option<f64>,
    /// 99th percentile latency in seconds; `None` without requests. After a merge, the larger of
    /// the merged values (an upper bound: quantiles cannot be added).
    pub p99_seconds: Option<f64>,
    /// Weight applied in the routing table at the end of the interval, basis points.
    pub weight_bp: u32,
}

/// One event of the rollout on the time axis.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Marker {
    /// When, Unix seconds.
    pub at_unix_seconds: f64,
    /// The event's CamelCase reason (`StepStarted`, `AnalysisPassed`, `RolledBack`, ...).
    pub reason: String,
    /// What happened, for people.
    pub message: String,
}

/// Wall-clock now, Unix seconds (0 if the clock is before 1970).
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// Unix seconds as RFC 3339 UTC with milliseconds (`2026-12-02T13:25:47.046Z`), as `GET
/// /rollout`'s times; a time that is not finite or before 1970 reads as the epoch, one after the
/// year 9999 as its last millisecond ([`rfc3339_of`]).
pub fn rfc3339(unix_seconds: f64) -> String {
    rfc3339_of(system_time(unix_seconds))
}

/// Unix seconds as RFC 3339 UTC to the second (`2026-12-02T13:25:47Z`), as the report's facts;
/// out-of-range times as [`rfc3339`] reads them.
pub fn rfc3339_seconds(unix_seconds: f64) -> String {
    humantime::format_rfc3339_seconds(in_range(system_time(unix_seconds))).to_string()
}

/// Unix seconds as a wall-clock time: the epoch for a time before 1970 or not finite, and no
/// later than [`LAST_RFC3339`]. Stored times (the state file, a TrafficShift's status) are read
/// through it, so that one edited by hand (`1e300`, `1e12`) cannot stop a start, a status or a
/// report (until newuser34, `crossfade run` panicked at start on an event time past the year
/// 9999, and `crossfade report --state` on a rollout start time of `1e300`).
fn system_time(unix_seconds: f64) -> std::time::SystemTime {
    let since = match std::time::Duration::try_from_secs_f64(unix_seconds) {
        Ok(since) => since.min(LAST_RFC3339),
        // Too large for a duration, or +∞.
        Err(_) if unix_seconds > 0.0 => LAST_RFC3339,
        // Negative, or NaN.
        Err(_) => std::time::Duration::ZERO,
    };
    std::time::UNIX_EPOCH + since
}

/// The last time [`rfc3339_of`] writes as it is: 9999-12-31T23:59:59.999Z.
const LAST_RFC3339: std::time::Duration = std::time::Duration::from_millis(253_402_300_799_999);

/// `t` within what RFC 3339's four-digit year can write: the epoch at the earliest,
/// [`LAST_RFC3339`] at the latest.
fn in_range(t: std::time::SystemTime) -> std::time::SystemTime {
    let since = t
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .min(LAST_RFC3339);
    std::time::UNIX_EPOCH + since
}

/// A wall-clock time as RFC 3339 UTC with milliseconds (`2026-12-02T13:25:47.046Z`), truncated
/// to the millisecond: the one format of the times `GET /rollout` and `crossfade status` show
/// ([`rfc3339`] for Unix seconds, the status's hold and restart times for clock readings). A time
/// before 1970 reads as the epoch and one after the year 9999 as 9999-12-31T23:59:59.999Z, which
/// humantime cannot go past (its formatter fails there, and `to_string` panicked on it).
pub fn rfc3339_of(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(in_range(t)).to_string()
}

// === impl Timeline ===

impl Timeline {
    /// An empty timeline of a rollout that starts at `at` (Unix seconds).
    pub fn starting(at: f64) -> Timeline {
        Timeline {
            started_at_unix_seconds: at,
            ..Timeline::default()
        }
    }

    /// Appends a sample; merges pairs when [`MAX_SAMPLES`] is reached.
    pub fn push_sample(&mut self, sample: Sample) {
        self.samples.push(sample);
        if self.samples.len() >= MAX_SAMPLES {
            let old = std::mem::take(&mut self.samples);
            let mut pairs = old.chunks(2);
            self.samples = pairs.by_ref().map(Sample::merge).collect();
        }
    }

    /// Appends a marker; drops the least telling one when [`MAX_MARKERS`] is passed.
    pub fn push_marker(&mut self, at_unix_seconds: f64, reason: &str, message: &str) {
        self.markers.push(Marker {
            at_unix_seconds,
            reason: reason.to_owned(),
            message: message.to_owned(),
        });
        if self.markers.len() > MAX_MARKERS {
            let routine =
                |m: &Marker| matches!(m.reason.as_str(), "AnalysisPassed" | "AnalysisInconclusive");
            let drop = self.markers.iter().position(routine).unwrap_or(0);
            self.markers.remove(drop);
        }
    }

    /// Seconds from start to end (or to the last sample while it runs).
    pub fn duration_seconds(&self) -> f64 {
        let last = self.samples.last().map(|s| s.at_unix_seconds);
        let end = self.ended_at_unix_seconds.or(last);
        end.map_or(0.0, |e| (e - self.started_at_unix_seconds).max(0.0))
    }
}

// === impl Sample ===

impl Sample {
    /// The interval between two readings of the proxy's cumulative counters, `blue` and `green` each
    /// as `(earlier, later)`, ending at `at` after `seconds`, with the weights applied then.
    pub fn between(
        at: f64,
        seconds: f64,
        blue: (&BackendSnapshot, &BackendSnapshot),
        green: (&BackendSnapshot, &BackendSnapshot),
        weight_bp: impl Fn(Slot) -> u32,
    ) -> Sample {
        Sample {
            at_unix_seconds: at,
            seconds,
            blue: BackendSample::between(blue.0, blue.1, weight_bp(Slot::Blue)),
            green: BackendSample::between(green.0, green.1, weight_bp(Slot::Green)),
        }
    }

    /// The slot's part.
    pub fn backend(&self, slot: Slot) -> &BackendSample {
        match slot {
            Slot::Blue => &self.blue,
            Slot::Green => &self.green,
        }
    }

    /// One sample for a run of consecutive ones (one or two, from [`Timeline::push_sample`]).
    fn merge(run: &[Sample]) -> Sample {
        let Some(last) = run.last() else {
            return Sample::default();
        };
        Sample {
            at_unix_seconds: last.at_unix_seconds,
            seconds: run.iter().map(|s| s.seconds).sum(),
            blue: BackendSample::merge(run.iter().map(|s| &s.blue)),
            green: BackendSample::merge(run.iter().map(|s| &s.green)),
        }
    }
}

// === impl BackendSample ===

impl BackendSample {
    fn between(earlier: &BackendSnapshot, later: &BackendSnapshot, weight_bp: u32) -> Self {
        let latency = later.latency.since(&earlier.latency);
        BackendSample {
            requests: later.requests.saturating_sub(earlier.requests),
            errors: later.errors.saturating_sub(earlier.errors),
            p50_seconds: latency.quantile(0.5),
            p99_seconds: latency.quantile(0.99),
            weight_bp,
        }
    }

    /// Error share of the interval's requests (0 without requests).
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            return 0.0;
        }
        self.errors as f64 / self.requests as f64
    }

    fn merge<'a>(parts: impl Iterator<Item = &'a BackendSample> + Clone) -> BackendSample {
        let requests: u64 = parts.clone().map(|p| p.requests).sum();
        let weighted: f64 = parts
            .clone()
            .filter_map(|p| Some(p.p50_seconds? * p.requests as f64))
            .sum();
        let p99 = parts.clone().filter_map(|p| p.p99_seconds).reduce(f64::max);
        BackendSample {
            requests,
            errors: parts.clone().map(|p| p.errors).sum(),
            p50_seconds: (requests > 0).then(|| weighted / requests as f64),
            p99_seconds: p99,
            weight_bp: parts.last().map_or(0, |p| p.weight_bp),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: f64, requests: u64, p99: f64) -> Sample {
        let backend = BackendSample {
            requests,
            errors: requests / 10,
            p50_seconds: Some(p99 / 2.0),
            p99_seconds: Some(p99),
            weight_bp: at as u32,
        };
        Sample {
            at_unix_seconds: at,
            seconds: 1.0,
            blue: backend.clone(),
            green: backend,
        }
    }

    /// Stored times come from files people edit: every f64 formats, none panics (newuser34:
    /// past the year 9999 humantime's formatter fails, and `1e300` is no duration).
    #[test]
    fn every_unix_time_formats_within_rfc3339s_years() {
        let last = "9999-12-31T23:59:59.999Z";
        for (at, millis, seconds) in [
            (
                1_764_682_747.046,
                "2025-12-02T13:39:07.046Z",
                "2025-12-02T13:39:07Z",
            ),
            (0.0, "1970-01-01T00:00:00.000Z", "1970-01-01T00:00:00Z"),
            (-5.0, "1970-01-01T00:00:00.000Z", "1970-01-01T00:00:00Z"),
            (f64::NAN, "1970-01-01T00:00:00.000Z", "1970-01-01T00:00:00Z"),
            (
                f64::NEG_INFINITY,
                "1970-01-01T00:00:00.000Z",
                "1970-01-01T00:00:00Z",
            ),
            (
                253_402_300_799.0,
                "9999-12-31T23:59:59.000Z",
                "9999-12-31T23:59:59Z",
            ),
            (1e12, last, "9999-12-31T23:59:59Z"),
            (1e300, last, "9999-12-31T23:59:59Z"),
            (f64::INFINITY, last, "9999-12-31T23:59:59Z"),
        ] {
            assert_eq!(rfc3339(at), millis, "{at}");
            assert_eq!(rfc3339_seconds(at), seconds, "{at}");
        }
        let far = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1 << 40);
        assert_eq!(rfc3339_of(far), last);
    }

    #[test]
    fn a_full_timeline_halves_its_resolution_and_keeps_every_request() {
        let mut timeline = Timeline::starting(0.0);
        for i in 1..=MAX_SAMPLES {
            timeline.push_sample(sample(i as f64, 10, 0.001 * i as f64));
        }
        assert_eq!(timeline.samples.len(), MAX_SAMPLES / 2);
        let requests: u64 = timeline.samples.iter().map(|s| s.green.requests).sum();
        assert_eq!(requests, 10 * MAX_SAMPLES as u64);
        let first = &timeline.samples[0];
        assert_eq!(
            (first.at_unix_seconds, first.seconds, first.green.weight_bp),
            (2.0, 2.0, 2)
        );
        assert_eq!(first.green.p99_seconds, Some(0.002), "the larger p99");
        assert_eq!(first.green.errors, 2);
        let p50 = first.green.p50_seconds.unwrap_or_default();
        assert!((p50 - 0.00075).abs() < 1e-12, "weighted mean p50 {p50}");
    }

    #[test]
    fn a_long_rollout_stays_under_half_a_mebibyte_of_pretty_json() {
        let mut timeline = Timeline::starting(1.7e9);
        // Ten hours at one sample a second, with realistic (long) numbers.
        for i in 0..36_000 {
            let mut s = sample(
                1.7e9 + i as f64 + 0.123_456_7,
                123_456,
                0.009_792_857_142_857,
            );
            s.seconds = 1.000_123_456;
            timeline.push_sample(s);
        }
        assert!(timeline.samples.len() < MAX_SAMPLES);
        let bytes = serde_json::to_vec_pretty(&timeline)
            .unwrap_or_default()
            .len();
        assert!(bytes < 400 * 1024, "{bytes} bytes (nested two levels deeper in the state file: 4 more spaces on each of ~18 lines a sample, ~74 KB)");
    }

    #[test]
    fn merging_a_sample_without_requests_has_no_latency() {
        let mut empty = sample(1.0, 0, 0.0);
        empty.blue.p50_seconds = None;
        empty.blue.p99_seconds = None;
        let merged = Sample::merge(&[empty.clone(), empty]);
        assert_eq!(merged.blue.p50_seconds, None);
        assert_eq!(merged.blue.p99_seconds, None);
    }

    #[test]
    fn markers_past_the_bound_drop_routine_verdicts_first() {
        let mut timeline = Timeline::default();
        timeline.push_marker(0.0, "StepStarted", "step 1");
        for i in 0..MAX_MARKERS {
            timeline.push_marker(i as f64 + 1.0, "AnalysisPassed", "ok");
        }
        timeline.push_marker(1e6, "RolledBack", "bad");
        assert_eq!(timeline.markers.len(), MAX_MARKERS);
        assert_eq!(timeline.markers[0].reason, "StepStarted");
        assert_eq!(timeline.markers[MAX_MARKERS - 1].reason, "RolledBack");
    }

    #[test]
    fn duration_runs_from_start_to_end() {
        let mut timeline = Timeline::starting(100.0);
        timeline.push_sample(sample(104.0, 1, 0.1));
        assert_eq!(timeline.duration_seconds(), 4.0);
        timeline.ended_at_unix_seconds = Some(110.5);
        assert_eq!(timeline.duration_seconds(), 10.5);
    }
}
