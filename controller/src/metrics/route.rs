//! [`RouteMetrics`]: one route's rollout state, verdicts, outcomes and events into the families.

use std::sync::PoisonError;
use std::time::Duration;

use crossfade_proxy::weight::{Slot, FULL_BP};
use tokio::time::Instant;

use super::info::{put, unix_now, workload_labels, BackendInfo};
use super::DeploymentInfo;
use super::{
    BackendLabels, CheckLabels, CheckResultLabels, GateLabels, Late, MetricLabels, OutcomeLabels,
    PhaseLabels, ReasonLabels, RouteLabels, RouteMetrics, Seen, EVENT_REASONS, GATE_POINTS, PHASES,
};
use crate::analysis::{Metric, Outcome};
use crate::rollout::{Phase, Rollout};
use crate::spec::{GatePoint, WorkloadSpec};

impl RouteMetrics {
    /// Kubernetes, while `Promoted`: the Unix time `at` (seconds) the target Deployment's rolling
    /// update last made progress (`crossfade_rollout_target_progress_timestamp_seconds`); `None`
    /// removes the series. A transition out of `Promoted` removes it too.
    pub fn target_progress(&mut self, at: Option<f64>) {
        let labels = RouteLabels {
            route: self.route.clone(),
        };
        match at {
            Some(at) => {
                self.metrics.target_progress.get_or_create(&labels).set(at);
            }
            None => {
                self.metrics.target_progress.remove(&labels);
            }
        }
    }

    /// Records the rollout's state after a transition: phase, step, desired weights, thresholds,
    /// and, when it just ended, its outcome and duration.
    pub fn transition(&mut self, rollout: &Rollout) {
        self.transition_at(rollout, None);
    }

    /// As [`RouteMetrics::transition`], with the Unix time `at` (seconds) of the rollout's last
    /// phase or step change when its store keeps one (Kubernetes: `rolloutState.transitionedAt`),
    /// for `crossfade_rollout_transition_timestamp_seconds` when the phase or step differs from
    /// the one last seen: a controller that takes a rollout over (a restart, a new leader) keeps
    /// its time. `None` times it now.
    pub fn transition_at(&mut self, rollout: &Rollout, at: Option<f64>) {
        // Before the dedup below: a gate halt and its refusals change neither phase nor step.
        self.gates(rollout);
        let now = Instant::now();
        let seen = self.seen.as_ref();
        let moved = seen
            .is_none_or(|s| (s.id, s.phase, s.step) != (rollout.id, rollout.phase, rollout.step));
        // A preview that gets ready while paused starts no step but shows one (`started_step`).
        let same =
            |s: &Seen| (s.preview_bp, s.ready) == (rollout.preview_bp, rollout.preview_ready);
        if !moved && seen.is_some_and(same) {
            return;
        }
        let started = match &self.seen {
            Some(s) if s.id == rollout.id => s.started,
            _ => (!rollout.is_terminal()).then_some(now),
        };
        if self.seen.as_ref().is_some_and(|s| s.id != rollout.id) {
            self.forget_analysis();
        }
        let was_running = self
            .seen
            .as_ref()
            .is_some_and(|s| s.id == rollout.id && !s.phase.is_terminal());
        if rollout.is_terminal() && was_running {
            self.finished(rollout.phase, started.map(|s| now.duration_since(s)));
        }
        self.seen = Some(Seen {
            id: rollout.id,
            phase: rollout.phase,
            step: rollout.step,
            preview_bp: rollout.preview_bp,
            ready: rollout.preview_ready,
            started,
        });
        if moved {
            let route = RouteLabels {
                route: self.route.clone(),
            };
            self.metrics
                .transition
                .get_or_create(&route)
                .set(at.unwrap_or_else(unix_now));
        }
        self.export_state(rollout);
    }

    /// Records the rollout a starting `crossfade run` loaded from its state file, as
    /// [`RouteMetrics::transition`] does, but with the time it ended (`ended_at`, Unix seconds,
    /// its timeline's end) as its last transition once it has ended: a restart or a binary
    /// upgrade changes neither its phase nor its step, so
    /// `crossfade_rollout_transition_timestamp_seconds` keeps saying when they last changed
    /// (until session 40 it said when this process started). `None` (a state file written before
    /// rollout timelines were kept), or a rollout still running, is timed now.
    pub fn loaded(&mut self, rollout: &Rollout, ended_at: Option<f64>) {
        self.transition(rollout);
        if let Some(at) = ended_at.filter(|_| rollout.is_terminal()) {
            let route = RouteLabels {
                route: self.route.clone(),
            };
            self.metrics.transition.get_or_create(&route).set(at);
        }
    }

    /// Counts an event (`reason` is CamelCase); an analysis event also records the verdict.
    pub fn event(&mut self, rollout: Option<&Rollout>, reason: &str) {
        let known = EVENT_REASONS.contains(&reason);
        let labels = ReasonLabels {
            route: self.route.clone(),
            reason: if known { reason } else { "Other" }.into(),
        };
        self.metrics.events.get_or_create(&labels).inc();
        let is_verdict = matches!(
            reason,
            "AnalysisPassed" | "AnalysisFailed" | "AnalysisInconclusive"
        );
        if let Some(rollout) = rollout.filter(|_| is_verdict) {
            self.verdict(rollout);
        }
    }

    /// Counts a rollout that restart recovery ended in `phase` (a `crossfade run` restarted
    /// mid-rollout; [`crate::state::ServiceState::recover`]) as finished with that outcome, and
    /// observes `took` (from its persisted start to the recovery; `None` when the state file
    /// records no start) in `crossfade_rollout_duration_seconds`, both after the first scrape
    /// ([`RouteMetrics::count_after_first_scrape`]).
    pub fn recovered(&self, phase: Phase, took: Option<Duration>) {
        let labels = OutcomeLabels {
            route: self.route.clone(),
            outcome: outcome_of(phase).into(),
        };
        let counter = self.metrics.rollouts.get_or_create(&labels).clone();
        self.count_after_first_scrape(Late::Count(counter));
        if let Some(took) = took {
            let histogram = self.metrics.duration.get_or_create(&labels).clone();
            self.count_after_first_scrape(Late::Observe(histogram, took.as_secs_f64()));
        }
    }

    /// Counts an event recorded while starting, before the service ran (`Recovered`,
    /// `StateFileCorrupt`, `BlueChanged`, `LeftoversStopped`, `Adopted`, `Upgraded`), after the
    /// first scrape ([`RouteMetrics::count_after_first_scrape`]).
    pub fn start_event(&self, reason: &str) {
        let known = EVENT_REASONS.contains(&reason);
        let labels = ReasonLabels {
            route: self.route.clone(),
            reason: if known { reason } else { "Other" }.into(),
        };
        let counter = self.metrics.events.get_or_create(&labels).clone();
        self.count_after_first_scrape(Late::Count(counter));
    }

    /// Applies `late` (adds 1 to a counter, or observes a duration) at the end of the first
    /// scrape of the registry (at once when that scrape already happened), so that the scrape
    /// sees the series at 0 first: a count made at a process's start is otherwise invisible to
    /// `increase()`. Without a scrape it waits.
    fn count_after_first_scrape(&self, late: Late) {
        let mut deferred = self
            .metrics
            .deferred
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match deferred.0 {
            true => late.apply(),
            false => deferred.1.push(late),
        }
    }

    /// Sets `rollout_gate_halted` from the rollout's halt (none once it ended) and counts the
    /// refusals since the last call. A rollout seen first (loaded at start, or a new one) counts
    /// its refusals from 0; a count that went down belongs to a rollout rebuilt from its stored
    /// record (refusals are not persisted) and counts from 0 too.
    fn gates(&mut self, rollout: &Rollout) {
        let halted_at = rollout
            .gate
            .as_ref()
            .filter(|_| !rollout.is_terminal())
            .map(|g| gate_point(g.at));
        for at in GATE_POINTS {
            let labels = GateLabels {
                route: self.route.clone(),
                at: at.into(),
            };
            let halted = i64::from(halted_at == Some(at));
            self.metrics.gate_halted.get_or_create(&labels).set(halted);
        }
        let (id, seen) = self.refusals_seen;
        let now = rollout.gate_refusals;
        let new = if id == rollout.id && now >= seen {
            now - seen
        } else {
            now
        };
        if new > 0 {
            let labels = RouteLabels {
                route: self.route.clone(),
            };
            self.metrics
                .gate_refusals
                .get_or_create(&labels)
                .inc_by(u64::from(new));
        }
        self.refusals_seen = (rollout.id, now);
    }

    /// Counts one restart of an instance of the workload serving in `backend`.
    pub fn restarted(&self, backend: Slot) {
        let labels = BackendLabels {
            route: self.route.clone(),
            backend: backend.as_str().into(),
        };
        self.metrics.restarts.get_or_create(&labels).inc();
    }

    /// Sets which workload each slot runs: `active` runs `active_spec`, the other slot runs
    /// `preview` (or nothing, and its series goes).
    pub fn backends(
        &self,
        active: Slot,
        active_spec: &WorkloadSpec,
        preview: Option<&WorkloadSpec>,
    ) {
        let mut info = self
            .metrics
            .info
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        put(
            &mut info,
            (self.route.clone(), active),
            workload_labels(active_spec),
        );
        let other = (self.route.clone(), active.other());
        match preview {
            Some(spec) => put(&mut info, other, workload_labels(spec)),
            None => {
                info.remove(&other);
            }
        }
    }

    /// Sets which Deployment each slot of a Kubernetes route runs: `active` runs `active_backend`,
    /// the other slot `preview` (or nothing, and its series goes). Each is a [`DeploymentInfo`]:
    /// the Deployment's name, its container images (comma-separated, container order) and the
    /// digests its pods report (parallel to the images; empty when none is known).
    pub fn deployments(
        &self,
        active: Slot,
        active_backend: DeploymentInfo<'_>,
        preview: Option<DeploymentInfo<'_>>,
    ) {
        let info = |d: DeploymentInfo<'_>| BackendInfo {
            workload: super::info::deployment_workload(d.deployment),
            version: d.deployment.to_owned(),
            program: None,
            image: Some(d.image.to_owned()),
            digest: Some(d.digest.to_owned()),
            since: unix_now(),
        };
        let mut map = self
            .metrics
            .info
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        put(&mut map, (self.route.clone(), active), info(active_backend));
        let other = (self.route.clone(), active.other());
        match preview {
            Some(d) => put(&mut map, other, info(d)),
            None => {
                map.remove(&other);
            }
        }
    }

    /// Forgets the route's backend slots (`crossfade_backend_info`), e.g. when its TrafficShift
    /// is deleted.
    pub fn forget_backends(&self) {
        let mut map = self
            .metrics
            .info
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.retain(|(route, _), _| *route != self.route);
    }

    /// Removes every series of the route: phase, step, desired weights, analysis values and
    /// thresholds, check values and readings, verdicts, outcomes, durations, events, gate and
    /// restart series, and `crossfade_backend_info` with its timestamps. For a TrafficShift that
    /// was deleted (trial 10, K19): its gauges would otherwise stay at their last values, and
    /// dashboards show the route, until the controller restarts. Removed, as Prometheus advises
    /// for a series whose object is gone (kube-state-metrics does the same); a TrafficShift made
    /// again under the same name starts its counters from 0, which `rate()` and `increase()`
    /// read as a counter reset.
    pub fn forget(mut self) {
        self.forget_analysis();
        self.forget_backends();
        let m = &self.metrics;
        let route = || self.route.clone();
        for phase in PHASES {
            m.phase.remove(&PhaseLabels {
                route: route(),
                phase: phase.as_str().into(),
            });
        }
        let labels = RouteLabels { route: route() };
        m.step.remove(&labels);
        m.steps.remove(&labels);
        m.transition.remove(&labels);
        m.deadline.remove(&labels);
        m.drain.remove(&labels);
        m.target_progress.remove(&labels);
        m.gate_refusals.remove(&labels);
        for slot in Slot::ALL {
            let labels = BackendLabels {
                route: route(),
                backend: slot.as_str().into(),
            };
            m.desired.remove(&labels);
            m.restarts.remove(&labels);
        }
        for outcome in super::VERDICT_OUTCOMES {
            m.verdicts.remove(&OutcomeLabels {
                route: route(),
                outcome: outcome.into(),
            });
        }
        for outcome in super::ROLLOUT_OUTCOMES {
            let labels = OutcomeLabels {
                route: route(),
                outcome: outcome.into(),
            };
            m.rollouts.remove(&labels);
            m.duration.remove(&labels);
        }
        for reason in EVENT_REASONS {
            m.events.remove(&ReasonLabels {
                route: route(),
                reason: reason.into(),
            });
        }
        for at in GATE_POINTS {
            m.gate_halted.remove(&GateLabels {
                route: route(),
                at: at.into(),
            });
        }
        for check in &self.checks_seen {
            for result in ["pass", "fail", "error"] {
                m.checks.remove(&CheckResultLabels {
                    route: route(),
                    check: check.clone(),
                    result: result.into(),
                });
            }
        }
    }

    fn finished(&self, phase: Phase, took: Option<Duration>) {
        let labels = OutcomeLabels {
            route: self.route.clone(),
            outcome: outcome_of(phase).into(),
        };
        self.metrics.rollouts.get_or_create(&labels).inc();
        if let Some(took) = took {
            self.metrics
                .duration
                .get_or_create(&labels)
                .observe(took.as_secs_f64());
        }
    }

    fn export_state(&mut self, rollout: &Rollout) {
        let m = &self.metrics;
        for phase in PHASES {
            let labels = PhaseLabels {
                route: self.route.clone(),
                phase: phase.as_str().into(),
            };
            m.phase
                .get_or_create(&labels)
                .set(i64::from(phase == rollout.phase));
        }
        let route = RouteLabels {
            route: self.route.clone(),
        };
        // 0 while no step has started (provisioning, or a rollout that ended there).
        let step = rollout.started_step().map_or(0, |s| count(s + 1));
        m.step.get_or_create(&route).set(step);
        m.steps
            .get_or_create(&route)
            .set(count(rollout.config.steps.len()));
        let deadline = rollout.config.progress_deadline.as_secs_f64();
        m.deadline.get_or_create(&route).set(deadline);
        let drain = rollout.config.drain_timeout.as_secs_f64();
        m.drain.get_or_create(&route).set(drain);
        if rollout.phase != Phase::Promoted {
            m.target_progress.remove(&route);
        }
        for slot in Slot::ALL {
            let labels = BackendLabels {
                route: self.route.clone(),
                backend: slot.as_str().into(),
            };
            m.desired
                .get_or_create(&labels)
                .set(i64::from(desired_bp(rollout, slot)));
        }
        self.thresholds(rollout);
    }

    /// The configured bounds, known before the first verdict.
    fn thresholds(&mut self, rollout: &Rollout) {
        let a = &rollout.config.analysis;
        let bounds = [
            (Metric::Requests, Some(a.min_requests as f64)),
            (Metric::ErrorRate, Some(a.max_error_rate)),
            (Metric::P99Seconds, a.max_p99.map(|d| d.as_secs_f64())),
            (Metric::P99Ratio, a.max_p99_ratio),
            (
                Metric::ShadowCompared,
                a.shadow.as_ref().map(|g| g.min_compared as f64),
            ),
            (
                Metric::ShadowMismatchRate,
                a.shadow.as_ref().map(|g| g.max_mismatch_rate),
            ),
            (
                Metric::ShadowErrorRate,
                a.shadow.as_ref().map(|_| a.max_error_rate),
            ),
            (
                Metric::ShadowP99Seconds,
                a.shadow.as_ref().and(a.max_p99).map(|d| d.as_secs_f64()),
            ),
            (
                Metric::ShadowP99Ratio,
                a.shadow.as_ref().and(a.max_p99_ratio),
            ),
        ];
        for (metric, bound) in bounds {
            if let Some(bound) = bound {
                let labels = self.metric(metric);
                self.metrics.threshold.get_or_create(&labels).set(bound);
                self.exported(labels.metric);
            }
        }
    }

    /// Notes that the `analysis_value`/`analysis_threshold` series `metric` is exported.
    fn exported(&mut self, metric: String) {
        if !self.analysis_series.contains(&metric) {
            self.analysis_series.push(metric);
        }
    }

    /// Removes the analysis series of the route's previous rollout (values, thresholds, check
    /// values): a rollout without a shadow step must not show the last one's mismatch rate, nor
    /// an alert on `value > threshold` keep firing for a rollout rolled back long ago (trial 8,
    /// H7). Removed, not set to 0 or NaN, as Prometheus advises for a series that no longer
    /// means anything.
    fn forget_analysis(&mut self) {
        for metric in std::mem::take(&mut self.analysis_series) {
            let labels = MetricLabels {
                route: self.route.clone(),
                metric,
            };
            self.metrics.value.remove(&labels);
            self.metrics.threshold.remove(&labels);
        }
        for labels in std::mem::take(&mut self.check_series) {
            self.metrics.check_value.remove(&labels);
        }
    }

    /// The last verdict: its outcome counted, its findings exported.
    fn verdict(&mut self, rollout: &Rollout) {
        let Some(last) = rollout.verdicts.last() else {
            return;
        };
        let outcome = match last.verdict.outcome {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::Inconclusive => "inconclusive",
        };
        let labels = OutcomeLabels {
            route: self.route.clone(),
            outcome: outcome.into(),
        };
        self.metrics.verdicts.get_or_create(&labels).inc();
        // The values are this verdict's: one it did not measure (a shadow step's, seen at a live
        // step) goes.
        let measured: Vec<MetricLabels> = last
            .verdict
            .findings
            .iter()
            .map(|f| self.metric(f.metric))
            .collect();
        for metric in &self.analysis_series {
            let labels = MetricLabels {
                route: self.route.clone(),
                metric: metric.clone(),
            };
            if !measured.contains(&labels) {
                self.metrics.value.remove(&labels);
            }
        }
        for (finding, labels) in last.verdict.findings.iter().zip(measured) {
            self.metrics.value.get_or_create(&labels).set(finding.value);
            // A preview share's threshold is the share its weight asked for, no bound the value
            // is held to (the range allowed lies on both sides): it has no threshold series
            // (docs/metrics.md), and a bound, kept until the next rollout, would outlive its step.
            if finding.metric != Metric::PreviewShare {
                self.metrics
                    .threshold
                    .get_or_create(&labels)
                    .set(finding.threshold);
            }
            self.exported(labels.metric);
        }
        for check in &last.verdict.checks {
            let provider = serde_json::to_value(check.provider)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let labels = CheckLabels {
                route: self.route.clone(),
                check: check.name.clone(),
                provider,
            };
            let value = check.value.unwrap_or(f64::NAN);
            self.metrics.check_value.get_or_create(&labels).set(value);
            if !self.check_series.contains(&labels) {
                self.check_series.push(labels);
            }
            let result = match (check.value, check.ok) {
                (None, _) => "error",
                (Some(_), true) => "pass",
                (Some(_), false) => "fail",
            };
            if !self.checks_seen.contains(&check.name) {
                self.checks_seen.push(check.name.clone());
            }
            self.metrics
                .checks
                .get_or_create(&CheckResultLabels {
                    route: self.route.clone(),
                    check: check.name.clone(),
                    result: result.into(),
                })
                .inc();
        }
    }

    fn metric(&self, metric: Metric) -> MetricLabels {
        // The serialised name (`error_rate`) is the label: a closed enum, and a variant added
        // later gets its name without a change here.
        let name = serde_json::to_value(metric)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| "other".into());
        MetricLabels {
            route: self.route.clone(),
            metric: name,
        }
    }
}

/// The weight the rollout wants for `slot`: the preview's requested weight, the rest to the active
/// slot; after completion everything to the (new) active slot.
fn desired_bp(rollout: &Rollout, slot: Slot) -> u32 {
    let preview_bp = match rollout.phase {
        Phase::Completed => 0,
        _ => rollout.preview_bp.min(FULL_BP),
    };
    if slot == rollout.preview() {
        preview_bp
    } else {
        FULL_BP - preview_bp
    }
}

/// The `outcome` label of a rollout that ended in `phase`.
fn outcome_of(phase: Phase) -> &'static str {
    match phase {
        Phase::Completed => "completed",
        Phase::Aborted => "aborted",
        _ => "rolled_back",
    }
}

/// The `at` label of a gate point: its spec keyword.
fn gate_point(at: GatePoint) -> &'static str {
    match at {
        GatePoint::BeforeRollout => "before_rollout",
        GatePoint::BeforeStep => "before_step",
        GatePoint::BeforePromotion => "before_promotion",
        GatePoint::AfterCompletion => "after_completion",
    }
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
