//! From a TrafficShift's `spec.rollout` to the [`RolloutConfig`] that `crossfade run` uses: omitted
//! fields take that type's defaults, then the same validation runs, with field paths under
//! `spec.rollout`.

use crossfade_proxy::histogram::LATENCY_BOUNDS_SECONDS;

use crate::analysis::millis;
use crate::spec::{
    AnalysisConfig, InconclusivePolicy, JudgeKind, Problem, RolloutConfig, SpecError, StepConfig,
};

use super::{
    camel, AnalysisPolicy, Check, FailWhenWorseThan, Gate, Judge, OnInconclusive, RolloutPolicy,
};

impl RolloutPolicy {
    /// The rollout configuration this policy asks for, validated.
    ///
    /// # Errors
    /// [`SpecError::Invalid`] with every broken rule (steps not strictly increasing, the last step
    /// below 100%, ...), each path starting with `spec.rollout` so it names the TrafficShift field.
    pub fn to_config(&self) -> Result<RolloutConfig, SpecError> {
        let mut config = RolloutConfig::default();
        if !self.steps.is_empty() {
            config.steps = self
                .steps
                .iter()
                .map(|s| StepConfig {
                    weight: s.weight.0,
                    hold: s.hold.map(|h| h.0),
                })
                .collect();
        }
        if let Some(hold) = self.hold {
            config.hold = hold.0;
        }
        if let Some(analysis) = &self.analysis {
            analysis.apply(&mut config.analysis);
        }
        if let Some(deadline) = self.progress_deadline {
            config.progress_deadline = deadline.0;
        }
        if let Some(drain) = self.drain_timeout {
            config.drain_timeout = drain.0;
        }
        config.gates = self.gates.iter().map(Gate::to_config).collect();
        let mut more: Vec<Problem> = self
            .unready_grace_problem(config.progress_deadline)
            .into_iter()
            .collect();
        if let Some(source) = self
            .analysis
            .as_ref()
            .and_then(|a| a.metrics_source.as_ref())
        {
            more.extend(source.problems());
        }
        match (config.validate().map_err(under_spec), more.is_empty()) {
            (Ok(()), true) => Ok(config),
            (Ok(()), false) => Err(SpecError::Invalid(more)),
            (Err(SpecError::Invalid(mut problems)), _) => {
                problems.extend(more);
                Err(SpecError::Invalid(problems))
            }
            (Err(e), _) => Err(e),
        }
    }

    /// An `unreadyGrace` set to `deadline` (the progress deadline in force) or longer: a preview
    /// without ready pods would then always be rolled back by the deadline first, for another
    /// reason, and the grace never act (kubetry28: it was taken, and said nothing). Only a grace
    /// written in the spec: the default one (30s) simply gives way to a shorter deadline.
    fn unready_grace_problem(&self, deadline: std::time::Duration) -> Option<Problem> {
        let grace = self.unready_grace?.0;
        (grace >= deadline).then(|| Problem {
            path: "spec.rollout.unreadyGrace".to_owned(),
            message: format!(
                "{} leaves no time to roll back a preview without ready pods within spec.rollout.progressDeadline ({}): the deadline would roll it back first; make it shorter than the deadline",
                super::Span(grace),
                super::Span(deadline)
            ),
        })
    }
}

impl RolloutPolicy {
    /// Warnings about a policy that is valid but asks for a decision the controller cannot make
    /// exactly, each naming its field under `spec.rollout`: a `maxP99` that is not a bound of the
    /// proxies' latency buckets ([`max_p99_warning`]). Empty for most policies.
    pub fn warnings(&self) -> Vec<String> {
        let max_p99 = self.analysis.as_ref().and_then(|a| a.max_p99);
        max_p99
            .and_then(|p| max_p99_warning(p.0))
            .into_iter()
            .collect()
    }
}

/// Why `max_p99` cannot be decided exactly in Kubernetes mode, or `None` when it is one of the
/// proxy's latency bucket bounds ([`LATENCY_BOUNDS_SECONDS`]). The controller reads each proxy's
/// `crossfade_request_duration_seconds` buckets, not the fine ones `crossfade run` judges by, and
/// counts the requests above the bound in them: a bound between two bucket bounds acts as the
/// upper one (docs/judgement.md, "How exact the p99 is"). The message names the bounds around it.
fn max_p99_warning(max_p99: std::time::Duration) -> Option<String> {
    let max = max_p99.as_secs_f64();
    let exact = |b: f64| (b - max).abs() <= 1e-9 * b;
    if LATENCY_BOUNDS_SECONDS.iter().any(|&b| exact(b)) {
        return None;
    }
    let field = "spec.rollout.analysis.maxP99";
    let shown = super::Span(max_p99).to_string();
    let below = LATENCY_BOUNDS_SECONDS.iter().rev().find(|&&b| b < max);
    let above = LATENCY_BOUNDS_SECONDS.iter().find(|&&b| b > max);
    Some(match (below, above) {
        (_, None) => format!(
            "{field}: {shown} is above the proxies' last latency bucket bound ({}): the controller \
             reads p99 from those buckets and cannot tell any latency above it from another, so \
             this bound is never proven exceeded; use {} or less",
            bound(*LATENCY_BOUNDS_SECONDS.last().unwrap_or(&max)),
            bound(*LATENCY_BOUNDS_SECONDS.last().unwrap_or(&max)),
        ),
        (below, Some(&above)) => {
            let (lower, choice) = match below {
                Some(&b) => (bound(b), format!("{} or {}", bound(b), bound(above))),
                None => ("0ms".to_owned(), bound(above)),
            };
            format!(
                "{field}: {shown} is not a bound of the proxies' latency buckets \
                 (crossfade_request_duration_seconds), the nearest are {lower} and {}: the \
                 controller reads p99 from those buckets, so a green whose p99 lies between them \
                 is not proven above {shown} and this bound acts as {}; p99 in verdicts is an \
                 estimate inside the bucket. Use {choice} for an exact decision",
                bound(above),
                bound(above),
            )
        }
    })
}

/// A bucket bound as a TrafficShift duration is written: whole seconds as `1s`, `30s`, the rest
/// in milliseconds (`750ms`, `2500ms`; `0.5ms`, which no TrafficShift duration can state).
fn bound(seconds: f64) -> String {
    if seconds >= 1.0 && seconds.fract() == 0.0 {
        format!("{seconds}s")
    } else {
        millis(seconds)
    }
}

impl AnalysisPolicy {
    fn apply(&self, to: &mut AnalysisConfig) {
        if let Some(i) = self.interval {
            to.interval = Some(i.0);
        }
        if let Some(rate) = self.max_error_rate {
            to.max_error_rate = f64::from(rate.bp()) / 10_000.0;
        }
        if let Some(p99) = self.max_p99 {
            to.max_p99 = Some(p99.0);
        }
        if let Some(ratio) = self.max_p99_ratio {
            to.max_p99_ratio = Some(ratio);
        }
        if let Some(n) = self.min_requests {
            to.min_requests = n;
        }
        if let Some(n) = self.max_inconclusive {
            to.max_inconclusive = n;
        }
        if let Some(policy) = self.on_inconclusive {
            to.on_inconclusive = match policy {
                OnInconclusive::Pause => InconclusivePolicy::Pause,
                OnInconclusive::Rollback => InconclusivePolicy::Rollback,
            };
        }
        if let Some(judge) = self.judge {
            to.judge = match judge {
                Judge::Threshold => JudgeKind::Threshold,
                Judge::Sequential => JudgeKind::Sequential,
            };
        }
        if let Some(alpha) = self.alpha {
            to.alpha = alpha;
        }
        if let Some(beta) = self.beta {
            to.beta = beta;
        }
        if let Some(increase) = self.max_error_rate_increase {
            to.max_error_rate_increase = f64::from(increase.bp()) / 10_000.0;
        }
        if let Some(increase) = self.max_latency_increase {
            to.max_latency_increase = increase.0;
        }
        to.checks = self.checks.iter().map(Check::to_config).collect();
        to.shadow = self.shadow.as_ref().map(super::ShadowPolicy::to_guard);
        if let Some(against) = self.fail_when_worse_than {
            to.fail_when_worse_than = match against {
                FailWhenWorseThan::Blue => crate::spec::FailWhenWorseThan::Blue,
                FailWhenWorseThan::Allowance => crate::spec::FailWhenWorseThan::Allowance,
            };
        }
    }
}

/// `rollout.steps[2]: ...` → `spec.rollout.steps[2]: ...`; analysis field names in camelCase.
fn under_spec(e: SpecError) -> SpecError {
    match e {
        SpecError::Invalid(problems) => {
            SpecError::Invalid(problems.into_iter().map(under_spec_problem).collect())
        }
        other => other,
    }
}

/// One problem of the spec's rules with its path and the fields in its message as the
/// TrafficShift spells them: `rollout.gates[0].headers_from[1].name` →
/// `spec.rollout.gates[0].headersFrom[1].name`.
pub(super) fn under_spec_problem(p: Problem) -> Problem {
    Problem {
        path: format!("spec.{}", camel(&p.path)),
        message: fields_in(&p.message),
    }
}

/// Field paths quoted in a message (`within rollout.progress_deadline`) as the TrafficShift spells
/// them (`within spec.rollout.progressDeadline`).
fn fields_in(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find("rollout.") {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
            .unwrap_or(tail.len());
        out.push_str("spec.");
        out.push_str(&camel(&tail[..end]));
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}
