//! The spec's rules, checked all at once so that one run reports every problem.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use crossfade_proxy::weight::{Percent, FULL_BP};

use super::{
    fraction_percent, human, AnalysisConfig, LatencyIncrease, ReadinessConfig, RolloutConfig,
    RouteSpec, RunSpec, WorkloadSpec, MAX_INSTANCES, PORT_PLACEHOLDER,
};
use crate::spec::Problem;

/// Collects problems in the order fields are checked.
#[derive(Default)]
struct Report(Vec<Problem>);

impl Report {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Adds `path: must be above 0s` when `d` is zero.
    fn positive(&mut self, path: impl Into<String>, d: Duration) {
        if d.is_zero() {
            self.add(path, "must be above 0s");
        }
    }
}

/// Every problem of `spec`, in field order; empty when it is valid.
pub(super) fn run_spec(spec: &RunSpec) -> Vec<Problem> {
    let mut r = Report::default();
    // Port 0 asks the kernel for a free port, so two port-0 addresses never collide.
    if spec.listen == spec.admin && spec.listen.port() != 0 {
        r.add(
            "admin",
            format!("{} is also the listen address", spec.admin),
        );
    }
    route(&mut r, &spec.route);
    match &spec.blue {
        Some(blue) => workload(&mut r, "blue", blue, Some(spec.listen)),
        None => r.add("blue", "missing"),
    }
    if let Some(green) = &spec.green {
        workload(&mut r, "green", green, Some(spec.listen));
        if let Some(blue) = &spec.blue {
            shared_endpoints(&mut r, blue, green);
        }
    }
    rollout(&mut r, &spec.rollout);
    if spec
        .state_file
        .as_ref()
        .is_some_and(|p| p.as_os_str().is_empty())
    {
        r.add("state_file", "must not be empty");
    }
    r.0
}

/// Every problem of one workload named `path` (`green`), without the checks that need the rest of
/// the spec (listen address, the other slot's endpoints).
pub(super) fn workload_spec(w: &WorkloadSpec, path: &str) -> Vec<Problem> {
    let mut r = Report::default();
    workload(&mut r, path, w, None);
    r.0
}

/// Every problem of a rollout config, with paths under `rollout.`.
pub(super) fn rollout_config(c: &RolloutConfig) -> Vec<Problem> {
    let mut r = Report::default();
    rollout(&mut r, c);
    r.0
}

fn route(r: &mut Report, route: &RouteSpec) {
    if route.name.trim().is_empty() {
        r.add("route.name", "must not be empty");
    }
    for (i, host) in route.hosts.iter().enumerate() {
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
            r.add(
                format!("route.hosts[{i}]"),
                format!("{host:?} is not a host name"),
            );
        }
    }
    if !route.path_prefix.starts_with('/') {
        r.add("route.path_prefix", "must start with '/'");
    } else {
        // The proxy matches requests in normal form (crossfade_proxy::path).
        match crossfade_proxy::path::normalize(&route.path_prefix) {
            Ok(normal) if normal == route.path_prefix => {}
            Ok(normal) => r.add(
                "route.path_prefix",
                format!("not in normal form, so no request would match it; write {normal:?}"),
            ),
            Err(e) => r.add("route.path_prefix", e.to_string()),
        }
    }
    // The proxy's own rules, under `route.`.
    let mut problems = Vec::new();
    if let Some(health) = &route.health {
        health.check("route", &mut problems);
    }
    route.outlier.check("route", &mut problems);
    if let Some(breaker) = &route.breaker {
        breaker.check("route", &mut problems);
    }
    for problem in problems {
        r.add(problem.path, problem.message);
    }
}

fn workload(r: &mut Report, slot: &str, w: &WorkloadSpec, listen: Option<SocketAddr>) {
    if w.name.as_ref().is_some_and(|n| n.trim().is_empty()) {
        r.add(format!("{slot}.name"), "must not be empty");
    }
    match (&w.command, w.endpoints.is_empty()) {
        (Some(_), false) => r.add(slot, "set either command or endpoints, not both"),
        (None, true) => r.add(slot, "set either command or endpoints"),
        (Some(command), true) => command_workload(r, slot, w, command),
        (None, false) => endpoint_workload(r, slot, w, listen),
    }
    readiness(r, &format!("{slot}.readiness"), &w.readiness);
}

fn command_workload(r: &mut Report, slot: &str, w: &WorkloadSpec, command: &str) {
    if command.trim().is_empty() {
        r.add(format!("{slot}.command"), "must not be empty");
    }
    if w.instances < 1 {
        r.add(
            format!("{slot}.instances"),
            format!("{} is below 1", w.instances),
        );
    } else if w.instances > MAX_INSTANCES {
        r.add(
            format!("{slot}.instances"),
            format!("{} is above {MAX_INSTANCES}", w.instances),
        );
    }
    let in_args = w.args.iter().any(|a| a.contains(PORT_PLACEHOLDER));
    let in_env = w.env.values().any(|v| v.contains(PORT_PLACEHOLDER));
    if !in_args && !in_env {
        r.add(
            format!("{slot}.args"),
            "{port} must appear in args or env, or the instances cannot be given their ports",
        );
    }
}

fn endpoint_workload(r: &mut Report, slot: &str, w: &WorkloadSpec, listen: Option<SocketAddr>) {
    let command_only = [
        ("args", !w.args.is_empty()),
        ("env", !w.env.is_empty()),
        ("workdir", w.workdir.is_some()),
        ("instances", w.instances != 1),
    ];
    for (field, set) in command_only {
        if set {
            r.add(
                format!("{slot}.{field}"),
                "only applies to a command workload",
            );
        }
    }
    let mut seen = BTreeSet::new();
    for (i, ep) in w.endpoints.iter().enumerate() {
        let path = format!("{slot}.endpoints[{i}]");
        if ep.port() == 0 {
            r.add(&path, format!("{ep}: port 0 cannot be connected to"));
        }
        if Some(*ep) == listen {
            r.add(&path, format!("{ep} is the proxy's own listen address"));
        }
        if !seen.insert(*ep) {
            r.add(&path, format!("{ep} is listed twice"));
        }
    }
}

/// Blue and green must be different backends, or analysis compares a backend with itself.
fn shared_endpoints(r: &mut Report, blue: &WorkloadSpec, green: &WorkloadSpec) {
    for (i, ep) in green.endpoints.iter().enumerate() {
        if blue.endpoints.contains(ep) {
            r.add(
                format!("green.endpoints[{i}]"),
                format!("{ep} is also a blue endpoint"),
            );
        }
    }
}

fn readiness(r: &mut Report, path: &str, c: &ReadinessConfig) {
    if !c.path.starts_with('/') {
        r.add(format!("{path}.path"), "must start with '/'");
    }
    r.positive(format!("{path}.timeout"), c.timeout);
    r.positive(format!("{path}.interval"), c.interval);
    r.positive(format!("{path}.deadline"), c.deadline);
}

fn rollout(r: &mut Report, c: &RolloutConfig) {
    steps(r, c);
    r.positive("rollout.hold", c.hold);
    r.positive("rollout.progress_deadline", c.progress_deadline);
    r.positive("rollout.drain_timeout", c.drain_timeout);
    analysis(r, &c.analysis);
    fits_deadline(r, c);
}

fn steps(r: &mut Report, c: &RolloutConfig) {
    let Some(last) = c.steps.last() else {
        r.add("rollout.steps", "must have at least one step");
        return;
    };
    let mut previous: Option<Percent> = None;
    for (i, step) in c.steps.iter().enumerate() {
        let path = format!("rollout.steps[{i}]");
        let w = step.weight;
        if w.bp() > FULL_BP {
            r.add(&path, format!("{w} is above 100%"));
        } else if w.bp() == 0 {
            r.add(
                &path,
                "0% sends the preview no traffic to analyse; steps start above 0%",
            );
        } else if let Some(p) = previous.filter(|p| w <= *p) {
            r.add(&path, format!("{w} is not above the previous step ({p})"));
        }
        if let Some(hold) = step.hold {
            r.positive(format!("{path}.hold"), hold);
        }
        // An out-of-range step is reported once, not again as the next step's predecessor.
        if w.bp() <= FULL_BP {
            previous = Some(w);
        }
    }
    if last.weight.bp() < FULL_BP {
        r.add(
            "rollout.steps",
            format!("the last step must be 100%, got {}", last.weight),
        );
    }
}

fn analysis(r: &mut Report, a: &AnalysisConfig) {
    if let Some(interval) = a.interval {
        r.positive("rollout.analysis.interval", interval);
    }
    let rate = a.max_error_rate;
    if rate > 1.0 {
        let text = fraction_percent(rate);
        r.add(
            "rollout.analysis.max_error_rate",
            format!("{text} is above 100%"),
        );
    } else if rate < 0.0 {
        let text = fraction_percent(rate);
        r.add(
            "rollout.analysis.max_error_rate",
            format!("{text} is below 0%"),
        );
    }
    if let Some(p99) = a.max_p99 {
        r.positive("rollout.analysis.max_p99", p99);
    }
    if let Some(ratio) = a.max_p99_ratio.filter(|r| !(r.is_finite() && *r >= 1.0)) {
        r.add(
            "rollout.analysis.max_p99_ratio",
            format!("{ratio} is below 1 (it is preview p99 as a multiple of active p99)"),
        );
    }
    if a.min_requests == 0 {
        r.add(
            "rollout.analysis.min_requests",
            "0 would let a window without traffic pass; use at least 1",
        );
    }
    if a.max_inconclusive == 0 {
        r.add("rollout.analysis.max_inconclusive", "0 is below 1");
    }
    sequential(r, a);
}

/// The sequential judge's settings (checked whatever the judge, since they have defaults).
fn sequential(r: &mut Report, a: &AnalysisConfig) {
    for (name, v) in [("alpha", a.alpha), ("beta", a.beta)] {
        if !(v > 0.0 && v <= 0.5) {
            r.add(
                format!("rollout.analysis.{name}"),
                format!("{v} is not in (0, 0.5] (it is a probability of a wrong verdict)"),
            );
        }
    }
    let inc = a.max_error_rate_increase;
    if !(inc > 0.0 && inc <= 1.0) {
        let text = fraction_percent(inc);
        r.add(
            "rollout.analysis.max_error_rate_increase",
            format!("{text} is not in (0%, 100%]"),
        );
    }
    let ok = match a.max_latency_increase {
        LatencyIncrease::Fraction(f) => f > 0.0 && f.is_finite(),
        LatencyIncrease::Duration(d) => !d.is_zero(),
    };
    if !ok {
        r.add(
            "rollout.analysis.max_latency_increase",
            format!("{} must be above 0", a.max_latency_increase),
        );
    }
}

/// A step whose hold (or analysis window) is as long as the progress deadline can never finish in
/// time and would always roll back.
fn fits_deadline(r: &mut Report, c: &RolloutConfig) {
    let deadline = c.progress_deadline;
    if deadline.is_zero() {
        return;
    }
    let too_long = |d: Duration| !d.is_zero() && d >= deadline;
    let shown = human(deadline);
    let uses_default = c.steps.iter().any(|s| s.hold.is_none());
    if uses_default && too_long(c.hold) {
        r.add(
            "rollout.hold",
            format!(
                "{} leaves no time to finish a step within rollout.progress_deadline ({shown})",
                human(c.hold)
            ),
        );
    }
    for (i, step) in c.steps.iter().enumerate() {
        if let Some(hold) = step.hold.filter(|h| too_long(*h)) {
            r.add(format!("rollout.steps[{i}].hold"), format!("{} leaves no time to finish the step within rollout.progress_deadline ({shown})", human(hold)));
        }
    }
    if let Some(interval) = c.analysis.interval.filter(|i| too_long(*i)) {
        r.add("rollout.analysis.interval", format!("{} leaves no time for a window to close within rollout.progress_deadline ({shown})", human(interval)));
    }
}
