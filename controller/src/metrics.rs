//! The controller's Prometheus metrics: rollout phase, step, desired weights, verdicts with the
//! values behind them, outcomes, durations, events, and which workload each backend slot runs.
//!
//! Names (with the registry's `crossfade` prefix; the catalogue with types and units is
//! `docs/metrics.md`, naming after <https://prometheus.io/docs/practices/naming/>):
//! - `crossfade_rollout_phase{route,phase}`: 1 for the current (or last) rollout's phase, 0 for the
//!   other phases of the closed set [`Phase`] (the `kube_pod_status_phase` pattern).
//! - `crossfade_rollout_step{route}`, `crossfade_rollout_steps{route}`: current step (from 1; 0 before
//!   the first started), step count.
//! - `crossfade_rollout_desired_weight_basis_points{route,backend}`: the weight the controller wants;
//!   the proxy's `crossfade_backend_weight_basis_points` is the weight applied.
//! - `crossfade_rollout_verdicts_total{route,outcome}`: analysis verdicts (`pass`, `fail`, `inconclusive`).
//! - `crossfade_analysis_value{route,metric}`, `crossfade_analysis_threshold{route,metric}`: the last
//!   verdict's measured values and the bounds they were held to (`requests`, `error_rate`,
//!   `p99_seconds`, `p99_ratio`; at a shadow step `shadow_compared`, `shadow_mismatch_rate`,
//!   `shadow_error_rate`, and with `max_p99` / `max_p99_ratio` `shadow_p99_seconds` / `shadow_p99_ratio`: the preview's
//!   response times to mirrored requests).
//!   Only the current (or last) rollout's: a verdict removes the values it did not measure, and a
//!   rollout's start removes the previous rollout's series (the Prometheus convention for a gauge
//!   that stops being meaningful: the series goes, it is not left at its last value).
//! - `crossfade_analysis_check_value{route,check,provider}`: the last value each
//!   `rollout.analysis.checks` entry of the current (or last) rollout read (NaN when it read
//!   none), and
//!   `crossfade_analysis_checks_total{route,check,result}`: check readings by `pass`, `fail`, `error`.
//! - `crossfade_rollouts_total{route,outcome}`: finished rollouts (`completed`, `rolled_back`, `aborted`).
//! - `crossfade_rollout_duration_seconds{route,outcome}`: histogram of start-to-end times (for a
//!   rollout that restart recovery ended, from its persisted start to the recovery).
//! - `crossfade_rollout_events_total{route,reason}`: events by reason ([`EVENT_REASONS`], else `Other`).
//! - `crossfade_rollout_transition_timestamp_seconds{route}`: Unix time of the last phase or step change.
//! - `crossfade_rollout_progress_deadline_seconds{route}`: the rollout's `progress_deadline`.
//! - `crossfade_rollout_drain_timeout_seconds{route}`: the rollout's `drain_timeout`, which
//!   bounds `Retiring` instead (`CrossfadeRolloutStuck` allows it on top of the deadline).
//! - `crossfade_rollout_target_progress_timestamp_seconds{route}`: Kubernetes mode, while
//!   `Promoted`: the Unix time the target Deployment's rolling update last made progress (its
//!   `Progressing` condition's `lastUpdateTime`). `Promoted` lasts as long as that rolling update,
//!   which the progress deadline does not bound, so `CrossfadeRolloutStuck` counts a target that
//!   progresses as a rollout that moves.
//! - `crossfade_rollout_gate_halted{route,at}`: 1 while the rollout is halted at the webhook gates
//!   of `at` ([`GATE_POINTS`]), 0 otherwise (the progress deadline is suspended meanwhile).
//! - `crossfade_rollout_gate_refusals_total{route}`: every refusal a gate answered, the same
//!   refusal asked again included (the `GateRejected` event is published once per halt and reason).
//! - `crossfade_backend_info{route,backend,workload,image,image_digest,version}`: 1 per backend slot
//!   that runs a workload, and `crossfade_backend_workload_timestamp_seconds{route,backend}`: the
//!   Unix time the slot got that workload (the digest aside), so that a rate over the slot's
//!   counters can start after it (`CrossfadePreviewErrorRateHigh`).
//! - `crossfade_instance_restarts_total{route,backend}`: instances of the serving workload started
//!   again after they exited on their own (`driver::supervisor`).
//! - `crossfade_fetch_resends_total{reason}`: GETs and HEADs of the controller's HTTP client sent
//!   once more after their connection closed or reset before the response head
//!   ([`crate::fetch::Resends`], registered here).
//!
//! Counter series, and the duration histogram's series of every outcome, are created at 0 for
//! every route as soon as it is served (`crossfade run`) or its TrafficShift first seen
//! (`crossfade controller --kube`), so that `increase()` sees the first rollback and the first
//! duration of each outcome: a series born at its first observation starts at 1, and
//! Prometheus sees no increase in it. Every series of a route goes when it stops being served:
//! in Kubernetes mode when its TrafficShift is deleted ([`RouteMetrics::forget`]), and every
//! route's when the replica stops leading ([`RolloutMetrics::forget_all`]).

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use tokio::time::Instant;

use self::info::{InfoCollector, InfoMap};
use crate::rollout::Phase;

pub(crate) mod info;
mod route;
#[cfg(test)]
mod tests;

/// Upper bounds of `crossfade_rollout_duration_seconds`, in seconds: a demo or test rollout takes
/// seconds, a production one minutes to hours (steps × hold), so the bounds grow roughly ×2–3 from
/// 5 s to 6 h.
pub const ROLLOUT_DURATION_BOUNDS_SECONDS: [f64; 12] = [
    5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 21600.0,
];

/// Every phase, in the order of [`Phase`]; the closed value set of the `phase` label.
pub const PHASES: [Phase; 11] = [
    Phase::Pending,
    Phase::Provisioning,
    Phase::Progressing,
    Phase::Paused,
    Phase::Promoted,
    Phase::Retiring,
    Phase::Completed,
    Phase::RollingBack,
    Phase::RolledBack,
    Phase::Aborting,
    Phase::Aborted,
];

/// The closed value set of the `reason` label of `crossfade_rollout_events_total`; any other reason
/// is counted as `Other`, so a new event cannot grow the series count unnoticed.
pub const EVENT_REASONS: [&str; 45] = [
    "Provisioning",
    "PreviewReady",
    "StepStarted",
    "WeightsApplied",
    "AnalysisPassed",
    "AnalysisFailed",
    "AnalysisInconclusive",
    "Paused",
    "Resumed",
    "PromoteRequested",
    "Promoted",
    "Retiring",
    "DrainDeadlinePassed",
    "RetireHeld",
    "ActiveDrained",
    "Completed",
    "PreviewFailed",
    "PreviewExited",
    "PreviewUnhealthy",
    "DeadlineExceeded",
    "Aborting",
    "Aborted",
    "RolledBack",
    "Restarted",
    "CommandRejected",
    "ActiveExited",
    "ActiveNotReady",
    "ActiveRestarted",
    "GateApproved",
    "GateRejected",
    "Recovered",
    "Restored",
    "StateFileCorrupt",
    "BlueChanged",
    "LeftoversStopped",
    "Adopted",
    "Upgraded",
    "StateNotSaved",
    "StateSaved",
    "CapacityChanged",
    "AbortForced",
    "PreviewLost",
    "TargetUnready",
    "Reloaded",
    "Other",
];

/// The closed value set of `at` on `crossfade_rollout_gate_halted`: the gate points a rollout can
/// halt at (`after_completion` is a notification and never halts).
pub const GATE_POINTS: [&str; 3] = ["before_rollout", "before_step", "before_promotion"];

/// The closed value set of `outcome` on `crossfade_rollouts_total` and the duration histogram.
pub const ROLLOUT_OUTCOMES: [&str; 3] = ["completed", "rolled_back", "aborted"];

/// The closed value set of `outcome` on `crossfade_rollout_verdicts_total`.
pub const VERDICT_OUTCOMES: [&str; 3] = ["pass", "fail", "inconclusive"];

/// Longest `workload` label value; longer descriptions are cut (labels stay bounded).
pub const MAX_WORKLOAD_LABEL: usize = 120;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    route: String,
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    route: String,
    backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    route: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MetricLabels {
    route: String,
    metric: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    route: String,
    check: String,
    provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckResultLabels {
    route: String,
    check: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GateLabels {
    route: String,
    at: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    route: String,
    reason: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;
type DurationFamily = Family<OutcomeLabels, Histogram, fn() -> Histogram>;

/// The controller's metric families, registered once; [`RolloutMetrics::route`] binds them to a
/// route. [`RolloutMetrics::default`] is an unregistered bundle, for services nobody scrapes.
#[derive(Clone, Debug)]
pub struct RolloutMetrics {
    phase: Family<PhaseLabels, Gauge>,
    step: Family<RouteLabels, Gauge>,
    steps: Family<RouteLabels, Gauge>,
    desired: Family<BackendLabels, Gauge>,
    verdicts: Family<OutcomeLabels, Counter>,
    value: Family<MetricLabels, FloatGauge>,
    threshold: Family<MetricLabels, FloatGauge>,
    check_value: Family<CheckLabels, FloatGauge>,
    checks: Family<CheckResultLabels, Counter>,
    rollouts: Family<OutcomeLabels, Counter>,
    duration: DurationFamily,
    events: Family<ReasonLabels, Counter>,
    transition: Family<RouteLabels, FloatGauge>,
    deadline: Family<RouteLabels, FloatGauge>,
    drain: Family<RouteLabels, FloatGauge>,
    target_progress: Family<RouteLabels, FloatGauge>,
    gate_halted: Family<GateLabels, Gauge>,
    gate_refusals: Family<RouteLabels, Counter>,
    restarts: Family<BackendLabels, Counter>,
    info: InfoMap,
    /// Counts made before the first scrape that wait for its end ([`AfterFirstScrape`]).
    deferred: Deferred,
}

/// Counts waiting for the end of the first scrape, and whether it happened.
type Deferred = Arc<Mutex<(bool, Vec<Late>)>>;

/// A count that waits for the end of the first scrape ([`AfterFirstScrape`]).
#[derive(Debug)]
enum Late {
    /// Adds 1 to the counter.
    Count(Counter),
    /// Observes the value (seconds) in the histogram: its `_count` goes up by 1 then, too.
    Observe(Histogram, f64),
}

impl Late {
    fn apply(self) {
        match self {
            Late::Count(counter) => {
                counter.inc();
            }
            Late::Observe(histogram, value) => histogram.observe(value),
        }
    }
}

/// A collector that exports nothing: at the end of each scrape it applies the counts (and the
/// duration observations) [`RouteMetrics::count_after_first_scrape`] deferred, so that a count
/// made while `crossfade run` starts (a rollback by restart recovery) is first scraped at 0 and
/// then at 1, and `increase()`
/// sees it. Prometheus cannot see an increase in a counter whose first sample is already 1 (a
/// restart after an earlier counted rollback even shows 1 → 1). Registered after the counters in
/// the same registry: prometheus-client encodes a registry's metrics before its collectors, so
/// the counts land after that scrape's counters were written.
#[derive(Debug)]
struct AfterFirstScrape {
    deferred: Deferred,
}

impl Collector for AfterFirstScrape {
    fn encode(&self, _encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut deferred = self.deferred.lock().unwrap_or_else(PoisonError::into_inner);
        deferred.0 = true;
        for late in deferred.1.drain(..) {
            late.apply();
        }
        Ok(())
    }
}

/// What a Kubernetes backend runs, for `crossfade_backend_info` ([`RouteMetrics::deployments`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeploymentInfo<'a> {
    /// The Deployment's name (`version`; `workload` is `deployment/<name>`).
    pub deployment: &'a str,
    /// Its pod template's container images, comma-separated in container order (`image`).
    pub image: &'a str,
    /// The digests its pods report, parallel to `image` (`image_digest`, see
    /// [`crate::kube::crd::RevisionStatus::digest_label`]); empty when none is known.
    pub digest: &'a str,
}

/// One route's view of [`RolloutMetrics`], fed by the service after every transition and event.
#[derive(Debug)]
pub struct RouteMetrics {
    metrics: RolloutMetrics,
    route: String,
    seen: Option<Seen>,
    /// The `metric` labels of the `analysis_value` and `analysis_threshold` series this route
    /// exported for its current (or last) rollout, removed when the next one starts.
    analysis_series: Vec<String>,
    /// The `analysis_check_value` series this route exported for its current (or last) rollout.
    check_series: Vec<CheckLabels>,
    /// The rollout id and [`crate::rollout::Rollout::gate_refusals`] last counted.
    refusals_seen: (u64, u32),
    /// The `check` labels of the `analysis_checks_total` series this route exported (any
    /// rollout's), for [`RouteMetrics::forget`].
    checks_seen: Vec<String>,
}

/// What the last transition showed, to tell a change from a repeat.
#[derive(Debug)]
struct Seen {
    id: u64,
    phase: Phase,
    step: usize,
    /// The preview weight requested (an operator's promote changes it within a step).
    preview_bp: u32,
    /// Whether the preview was ready ([`crate::rollout::Rollout::started_step`]).
    ready: bool,
    /// When this process first saw the rollout running; `None` when it was loaded already over.
    started: Option<Instant>,
}

// === impl RolloutMetrics ===

impl Default for RolloutMetrics {
    fn default() -> Self {
        RolloutMetrics {
            phase: Family::default(),
            step: Family::default(),
            steps: Family::default(),
            desired: Family::default(),
            verdicts: Family::default(),
            value: Family::default(),
            threshold: Family::default(),
            check_value: Family::default(),
            checks: Family::default(),
            rollouts: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            events: Family::default(),
            transition: Family::default(),
            deadline: Family::default(),
            drain: Family::default(),
            target_progress: Family::default(),
            gate_halted: Family::default(),
            gate_refusals: Family::default(),
            restarts: Family::default(),
            info: InfoMap::default(),
            deferred: Deferred::default(),
        }
    }
}

fn duration_histogram() -> Histogram {
    Histogram::new(ROLLOUT_DURATION_BOUNDS_SECONDS)
}

impl RolloutMetrics {
    /// Registers the controller's metrics in `registry`, which the caller created with the prefix
    /// `crossfade` (the proxy's metrics live in the same registry).
    pub fn register(registry: &mut Registry) -> RolloutMetrics {
        let m = RolloutMetrics::default();
        registry.register(
            "rollout_phase",
            "1 for the phase the route's current or last rollout is in, 0 for the others",
            m.phase.clone(),
        );
        registry.register(
            "rollout_step",
            "Current step of the rollout, counted from 1 (0 before its first step started)",
            m.step.clone(),
        );
        registry.register(
            "rollout_steps",
            "Number of steps of the rollout",
            m.steps.clone(),
        );
        registry.register(
            "rollout_desired_weight_basis_points",
            "Weight the controller wants for the backend, in basis points (applied: backend_weight_basis_points)",
            m.desired.clone(),
        );
        registry.register(
            "rollout_verdicts",
            "Analysis verdicts by outcome",
            m.verdicts.clone(),
        );
        registry.register(
            "analysis_value",
            "Value measured by the last analysis (requests: count, error_rate: fraction, p99_seconds, p99_ratio; shadow step: shadow_compared, shadow_mismatch_rate, shadow_error_rate, shadow_p99_seconds, shadow_p99_ratio)",
            m.value.clone(),
        );
        registry.register(
            "analysis_threshold",
            "Bound the analysis holds the value to (a minimum for requests, a maximum otherwise)",
            m.threshold.clone(),
        );
        registry.register(
            "analysis_check_value",
            "Value the last analysis read for each configured check, in the check's unit (NaN: none)",
            m.check_value.clone(),
        );
        registry.register(
            "analysis_checks",
            "Check readings by result (pass, fail: out of range, error: no value)",
            m.checks.clone(),
        );
        registry.register(
            "rollouts",
            "Rollouts finished, by outcome",
            m.rollouts.clone(),
        );
        registry.register_with_unit(
            "rollout_duration",
            "Time from a rollout's start to its end, by outcome",
            Unit::Seconds,
            m.duration.clone(),
        );
        registry.register(
            "rollout_events",
            "Rollout events by reason",
            m.events.clone(),
        );
        registry.register_with_unit(
            "rollout_transition_timestamp",
            "Unix time of the last change of the rollout's phase or step",
            Unit::Seconds,
            m.transition.clone(),
        );
        registry.register_with_unit(
            "rollout_progress_deadline",
            "Time a step (or provisioning) has to pass before the rollout rolls back",
            Unit::Seconds,
            m.deadline.clone(),
        );
        registry.register_with_unit(
            "rollout_drain_timeout",
            "Time the retiring backend's in-flight requests and upgraded connections get to finish after a promotion (drain_timeout)",
            Unit::Seconds,
            m.drain.clone(),
        );
        registry.register_with_unit(
            "rollout_target_progress_timestamp",
            "Kubernetes, while promoted: Unix time the target Deployment's rolling update last made progress (its Progressing condition's lastUpdateTime)",
            Unit::Seconds,
            m.target_progress.clone(),
        );
        registry.register(
            "rollout_gate_halted",
            "1 while the rollout is halted at the webhook gates of `at` (progress deadline suspended), else 0",
            m.gate_halted.clone(),
        );
        registry.register(
            "rollout_gate_refusals",
            "Refusals answered by webhook gates, each one counted (asked again after a refusal included)",
            m.gate_refusals.clone(),
        );
        registry.register(
            "instance_restarts",
            "Instances of the serving workload started again after they exited on their own",
            m.restarts.clone(),
        );
        registry.register_collector(Box::new(InfoCollector {
            info: Arc::clone(&m.info),
        }));
        registry.register_collector(Box::new(AfterFirstScrape {
            deferred: Arc::clone(&m.deferred),
        }));
        crate::fetch::Resends::register(registry);
        m
    }

    /// Removes the series of every route: all the families of this bundle (gauges, counters and
    /// the duration histogram) and `crossfade_backend_info` with its timestamps. For a replica of
    /// `crossfade controller --kube` that stops leading (trial 24): it exports what a follower
    /// exports, no route series, rather than its last values for as long as it follows (a
    /// `Progressing` phase that never moves again would fire `CrossfadeRolloutStuck` for it,
    /// and put a second phase beside the leader's on the dashboard). Should it lead again, each
    /// route's series start anew, its counters from 0 (a counter reset to `rate()` and
    /// `increase()`).
    pub fn forget_all(&self) {
        self.phase.clear();
        self.step.clear();
        self.steps.clear();
        self.desired.clear();
        self.verdicts.clear();
        self.value.clear();
        self.threshold.clear();
        self.check_value.clear();
        self.checks.clear();
        self.rollouts.clear();
        self.duration.clear();
        self.events.clear();
        self.transition.clear();
        self.deadline.clear();
        self.drain.clear();
        self.target_progress.clear();
        self.gate_halted.clear();
        self.gate_refusals.clear();
        self.restarts.clear();
        self.info
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// The metrics of `route`, with its counter series and its duration histogram's series (one
    /// per [`ROLLOUT_OUTCOMES`] entry: every bucket, `_sum` and `_count`) created at 0, so that
    /// `increase()` over a range that starts before the first rollout of an outcome ends sees it
    /// (the dashboard's "Mean rollout duration" over `$__range`).
    pub fn route(&self, route: &str) -> RouteMetrics {
        let labels = |outcome: &str| OutcomeLabels {
            route: route.into(),
            outcome: outcome.into(),
        };
        for outcome in ROLLOUT_OUTCOMES {
            let _ = self.rollouts.get_or_create(&labels(outcome));
            let _ = self.duration.get_or_create(&labels(outcome));
        }
        for outcome in VERDICT_OUTCOMES {
            let _ = self.verdicts.get_or_create(&labels(outcome));
        }
        for backend in ["blue", "green"] {
            let _ = self.restarts.get_or_create(&BackendLabels {
                route: route.into(),
                backend: backend.into(),
            });
        }
        for reason in EVENT_REASONS {
            let _ = self.events.get_or_create(&ReasonLabels {
                route: route.into(),
                reason: reason.into(),
            });
        }
        for at in GATE_POINTS {
            let _ = self.gate_halted.get_or_create(&GateLabels {
                route: route.into(),
                at: at.into(),
            });
        }
        let _ = self.gate_refusals.get_or_create(&RouteLabels {
            route: route.into(),
        });
        RouteMetrics {
            metrics: self.clone(),
            route: route.into(),
            seen: None,
            analysis_series: Vec::new(),
            check_series: Vec::new(),
            refusals_seen: (0, 0),
            checks_seen: Vec::new(),
        }
    }
}
