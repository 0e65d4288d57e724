//! From a TrafficShift's `spec.rollout` to the [`RolloutConfig`] that `crossfade run` uses: omitted
//! fields take that type's defaults, then the same validation runs, with field paths under
//! `spec.rollout`.

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
        config.validate().map_err(under_spec)?;
        Ok(config)
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
        SpecError::Invalid(problems) => SpecError::Invalid(
            problems
                .into_iter()
                .map(|p| Problem {
                    path: format!("spec.{}", camel(&p.path)),
                    message: fields_in(&p.message),
                })
                .collect(),
        ),
        other => other,
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
