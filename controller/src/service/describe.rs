//! `crossfade status` for people: the service's rollout (`GET /rollout`) and the proxy's table
//! (`GET /status`) as a short summary. `crossfade status --json` prints both raw.

use std::fmt::Write;

use crossfade_proxy::status::{RouteStatus, SlotStatus};
use crossfade_proxy::weight::{Percent, Slot};
use crossfade_proxy::Status;

use super::clock::{short, START_FAILED};
use super::{HoldStatus, InstanceRestart, ServiceStatus};
use crate::rollout::Phase;
use crate::state::{StatusEvent, RESTART_REASONS, RESTORED};

impl ServiceStatus {
    /// A summary of the service and its route in `proxy`, one fact per line, ending in a newline:
    ///
    /// ```text
    /// route web: v1 active in slot blue (`crossfade sample-app --port {port} --version v1` ×2 instances)
    /// rollout 2: Progressing, step 2/4 (in progress), v1 (blue) to v2 (green)
    ///   step 2/4 at 25%: holding 10s, last analysis passed (error rate 0% ≤ 1%, 812 requests)
    ///   holding 10s since 2026-12-01T22:31:05.120Z: 4s elapsed, 6s left
    ///   weights: blue 75%, green 25% (table generation 7)
    ///   last verdict: pass at step 2 (25%): 812 requests ≥ 50, error rate 0% ≤ 1%
    ///   (then each check's value, `; budget 0.5 ≥ 0.2 (web)`, when the analysis has checks)
    ///   last event: StepStarted: step 2/4: green at 25%
    /// backends (requests and errors counted per slot since crossfade started, across versions):
    ///   blue      75%  v1, active: 812 requests, 0 errors, 1 in flight; 127.0.0.1:41001 up
    ///   green     25%  v2, preview: 270 requests, 0 errors, 0 in flight; 127.0.0.1:41002 up
    ///   (endpoint up/down/ejected: the proxy's view, from requests and health checks)
    /// ```
    ///
    /// Steps count from 1, as in rollout messages (the API's `step` is 0-based). A version is
    /// written next to its slot when it has a `name:` (`v1 (blue)`), since the slots' colours
    /// alternate from one rollout to the next (trial report 6, F12); each backend says its role
    /// now: `active`, `preview`, `retiring` (drained after the role swap) or `stopped`. Weights
    /// are the proxy's table in force (basis points shown as percent); a route missing from
    /// `proxy` is said so rather than left out. The hold line ([`ServiceStatus::hold`]) shows while
    /// a step holds. An endpoint's `up`/`down` is the proxy's view; an active instance waiting
    /// out its restart backoff adds what the supervisor knows: `127.0.0.1:41001 up (process
    /// exited (exit status: 1), restarting in 8s)`. After a restart from the state file, until a
    /// rollout starts again, the previous run's last event follows the restart's, with its time:
    /// `before the restart: StepStarted at 2026-12-02T13:25:47.046Z: ...`; the event that ended
    /// the rollout without it, as the restart's event already says when the rollout ended
    /// (`before the restart: Aborted: ...`).
    pub fn describe(&self, proxy: &Status) -> String {
        let mut out = String::new();
        let active = match self.active {
            Some(slot)
                if !self.active_version.is_empty() && self.active_version != slot.as_str() =>
            {
                format!("{} active in slot {slot}", self.active_version)
            }
            Some(slot) => format!("{slot} active"),
            None => "no backend active".to_owned(),
        };
        let _ = writeln!(
            out,
            "route {}: {active} ({})",
            self.route, self.active_workload
        );
        let route = proxy.routes.iter().find(|r| r.name == self.route);
        match &self.rollout {
            None => {
                let _ = writeln!(out, "rollout: none yet");
            }
            Some(rollout) => {
                let steps = rollout.config.steps.len();
                let step = match rollout.phase {
                    // Paused while provisioning: no step has begun (trial 30 read `Paused,
                    // step 1/3` of a green still starting).
                    Phase::Paused if !rollout.preview_ready => ", while provisioning".to_owned(),
                    Phase::Progressing | Phase::Paused => {
                        format!(", step {}/{steps}", rollout.step + 1)
                    }
                    _ => String::new(),
                };
                // Whether the rollout's run has ended, not the step's state: "(running)" on a
                // Paused rollout read as "the step is running" (trial report 5 F12).
                let running = if self.running { "in progress" } else { "ended" };
                // A completed rollout has swapped the roles (its `active` is the slot it promoted),
                // so it went from today's preview slot to today's active one.
                let (from, to) = match rollout.phase {
                    Phase::Completed => (rollout.preview(), rollout.active),
                    _ => (rollout.active, rollout.preview()),
                };
                let from = named(self.from_version.as_deref(), from);
                let to = named(self.to_version.as_deref(), to);
                let _ = writeln!(
                    out,
                    "rollout {}: {}{step} ({running}), {from} to {to}",
                    rollout.id,
                    rollout.phase.as_str(),
                );
                if !rollout.message.is_empty() {
                    let _ = writeln!(out, "  {}", rollout.message);
                }
                if let Some(hold) = &self.hold {
                    let _ = writeln!(out, "  {}", hold_line(hold));
                }
                // The message of a rolled-back rollout already says why.
                let reason = rollout.reason.as_deref();
                if let Some(reason) =
                    reason.filter(|r| !r.is_empty() && !rollout.message.contains(r))
                {
                    let _ = writeln!(out, "  reason: {reason}");
                }
            }
        }
        if let Some(route) = route {
            let _ = writeln!(
                out,
                "  weights: blue {}, green {} (table generation {})",
                Percent(route.weights.blue),
                Percent(route.weights.green),
                proxy.generation
            );
        }
        if let Some(last) = self.rollout.as_ref().and_then(|r| r.verdicts.last()) {
            let values: Vec<String> = last
                .verdict
                .findings
                .iter()
                .map(|f| f.to_string())
                .collect();
            let mut values = if values.is_empty() {
                last.verdict.summary.clone()
            } else {
                values.join(", ")
            };
            // The checks decide as much as the proxy's numbers (user37b: a verdict left
            // inconclusive by a check without a value read "31 requests ≥ 5, error rate 0% ≤ 1%").
            let checks: Vec<String> = last.verdict.checks.iter().map(|c| c.describe()).collect();
            if !checks.is_empty() && !values.contains(&checks.join(", ")) {
                values = format!("{values}; {}", checks.join(", "));
            }
            let _ = writeln!(
                out,
                "  last verdict: {} at step {} ({}): {values}",
                format!("{:?}", last.verdict.outcome).to_lowercase(),
                last.step + 1,
                Percent(last.preview_bp)
            );
        }
        // A refused command changed nothing (README "Operating a running instance"): the last
        // event is the last one that did, and a refusal after it has a line of its own (trial
        // 12, M10).
        let refused = |e: &&StatusEvent| e.reason == REFUSED;
        if let Some(event) = self.events.iter().rev().find(|e| !refused(e)) {
            let _ = writeln!(out, "  last event: {}: {}", event.reason, event.message);
        }
        // After a restart the previous run's last event is history, marked with its time
        // (trial 13 N15: it read as current), until a rollout starts again.
        if let Some((restart, event)) = before_restart(&self.events) {
            let (reason, message) = (&event.reason, &event.message);
            // The restart's event names the rollout's end with its time (`rollout 1 ended
            // Completed at ...`, [`crate::state::ServiceState::note_restored`]): when this is
            // that end's event, its time is not said a second time (session 41: it was said
            // twice, 20 ms apart, before the end's event was stamped with the end's time).
            let said = restart.reason == RESTORED
                && restart.message.contains(&format!(" ended {reason} at "));
            if said {
                let _ = writeln!(out, "  before the restart: {reason}: {message}");
            } else {
                let at = crate::timeline::rfc3339(event.at_unix_seconds);
                let _ = writeln!(out, "  before the restart: {reason} at {at}: {message}");
            }
        }
        if let Some(event) = self.events.last().filter(refused) {
            let _ = writeln!(
                out,
                "  last refused command: {} (nothing changed)",
                event.message
            );
        }
        match route {
            Some(route) => {
                // The proxy counts per slot, and a slot runs a new version at every other
                // rollout: say so rather than let a count read as the version's own.
                let _ = writeln!(
                    out,
                    "backends (requests and errors counted per slot since crossfade started, \
                     across versions):"
                );
                for slot in Slot::ALL {
                    let role = self.role(slot);
                    let line = backend_line(route, slot, &role, &self.restarting);
                    let _ = writeln!(out, "  {line}");
                }
                // `up` is the proxy's passive view: a process that just exited still reads up
                // until a request or health check fails on it (trial 9, I14).
                let _ = writeln!(
                    out,
                    "  (endpoint up/down/ejected: the proxy's view, from requests and health checks)"
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "backends: the proxy has no route {} (routes: {})",
                    self.route,
                    proxy
                        .routes
                        .iter()
                        .map(|r| r.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        out
    }
}

/// The latest start's event ([`RESTART_REASONS`]) and the previous run's last event (not a
/// refused command, nor a start's own event) while that start's event is the last one of
/// consequence: no rollout has started since (`Provisioning`). `None` without a restart.
fn before_restart(events: &[StatusEvent]) -> Option<(&StatusEvent, &StatusEvent)> {
    let restart = events
        .iter()
        .rposition(|e| RESTART_REASONS.contains(&e.reason.as_str()))?;
    if events[restart..].iter().any(|e| e.reason == "Provisioning") {
        return None;
    }
    let before = events[..restart]
        .iter()
        .rev()
        .find(|e| e.reason != REFUSED && !START_REASONS.contains(&e.reason.as_str()))?;
    Some((&events[restart], before))
}

/// Events a start records before its restart event ([`RESTART_REASONS`]), about itself.
const START_REASONS: [&str; 1] = ["StateFileCorrupt"];

impl ServiceStatus {
    /// What `slot` is now, with its version when it has a `name:`: `v1, active`, `preview`,
    /// `v1, retiring`, `stopped`.
    fn role(&self, slot: Slot) -> String {
        let rollout = self.rollout.as_ref().filter(|_| self.running);
        let (role, version) = match rollout {
            _ if self.active == Some(slot) => ("active", Some(self.active_version.as_str())),
            Some(r) if r.phase == Phase::Retiring => ("retiring", self.from_version.as_deref()),
            Some(r) if !r.is_terminal() => ("preview", self.to_version.as_deref()),
            _ => ("stopped", None),
        };
        match version.filter(|v| !v.is_empty() && *v != slot.as_str()) {
            Some(version) => format!("{version}, {role}"),
            None => role.to_owned(),
        }
    }
}

/// `v1 (blue)` for a version with a name of its own, else the slot alone: `blue`.
fn named(version: Option<&str>, slot: Slot) -> String {
    match version.filter(|v| !v.is_empty() && *v != slot.as_str()) {
        Some(version) => format!("{version} ({slot})"),
        None => slot.to_string(),
    }
}

/// `n` and `noun`, plural unless `n` is 1: `1 request`, `812 requests`.
fn counted(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// `holding 2m 30s since 2026-12-01T22:31:05.120Z: 1m 10s elapsed, 1m 20s left`, with `; next
/// analysis in 20s` when the analysis window closes at another time than the hold, and once the
/// hold is over what the step still waits for.
fn hold_line(hold: &HoldStatus) -> String {
    let head = format!(
        "holding {} since {}",
        short(hold.hold_seconds),
        hold.started_at
    );
    let next = if hold.next_analysis_in_seconds > 0.0 {
        format!("next analysis in {}", short(hold.next_analysis_in_seconds))
    } else {
        "analysis running now".to_owned()
    };
    if hold.left_seconds > 0.0 {
        let mut line = format!(
            "{head}: {} elapsed, {} left",
            short(hold.elapsed_seconds),
            short(hold.left_seconds)
        );
        if short(hold.next_analysis_in_seconds) != short(hold.left_seconds) {
            let _ = write!(line, "; {next}");
        }
        return line;
    }
    format!(
        "{head}: {} elapsed, hold over; the step advances after a passing analysis ({next})",
        short(hold.elapsed_seconds)
    )
}

/// `127.0.0.1:41001 up`, and for an instance from its exit until its restart is ready what the
/// driver knows: `127.0.0.1:41001 down (process exited (exit status: 1), restarting in 8s)`, then
/// `127.0.0.1:41001 down (process exited (exit status: 1); started again as pid 4242, not ready
/// yet: stopped and started again if not ready by 2026-12-01T22:31:43.010Z)` (its readiness
/// deadline; `a start failed (...); started again ...` when the start before this one
/// failed), with ` on 127.0.0.1:41007 (its port was taken)` after the pid when the restart moved
/// (its endpoint withdrawn meanwhile).
fn endpoint_text(
    backend: &SlotStatus,
    slot: Slot,
    endpoint: &std::net::SocketAddr,
    restarting: &[InstanceRestart],
) -> String {
    let health = backend.health.iter().find(|h| h.endpoint == *endpoint);
    let mut text = match health {
        Some(h) if h.healthy => format!("{endpoint} up"),
        Some(h) if h.withdrawn => format!("{endpoint} down"),
        Some(h) if h.ejected_for_ms.is_some() => format!("{endpoint} ejected"),
        Some(_) => format!("{endpoint} down"),
        None => endpoint.to_string(),
    };
    let restart = restarting
        .iter()
        .find(|r| r.backend == slot && r.endpoint == *endpoint);
    if let Some(r) = restart {
        if let Some(s) = &r.started {
            let moved = match s.endpoint == r.endpoint {
                true => String::new(),
                false => format!(" on {} (its port was taken)", s.endpoint),
            };
            // After a failed start the cause is that failure, which the start since has undone:
            // `process cannot be started again (...); started again as pid 4242` said both.
            let before = match r.cause.strip_prefix(START_FAILED) {
                Some(why) => format!("a start failed{why}"),
                None => format!("process {}", r.cause),
            };
            let by = match &s.ready_by {
                Some(by) => format!(": stopped and started again if not ready by {by}"),
                None => String::new(),
            };
            let _ = write!(
                text,
                " ({before}; started again as pid {}{moved}, not ready yet{by})",
                s.pid
            );
            return text;
        }
        let when = if r.restart_in_seconds > 0.0 {
            format!("restarting in {}", short(r.restart_in_seconds))
        } else {
            "restarting now".to_owned()
        };
        let _ = write!(text, " (process {}, {when})", r.cause);
    }
    text
}

/// `blue      75%  v1, active: 812 requests, 0 errors, 1 in flight; 127.0.0.1:41001 up,
/// 127.0.0.1:41003 down`, with `, 3 upgraded connections open` after the requests in flight
/// when WebSockets (or other upgrades) are open to it.
fn backend_line(
    route: &RouteStatus,
    slot: Slot,
    role: &str,
    restarting: &[InstanceRestart],
) -> String {
    let (backend, weight): (&SlotStatus, u32) = match slot {
        Slot::Blue => (&route.blue, route.weights.blue),
        Slot::Green => (&route.green, route.weights.green),
    };
    let mut line = format!(
        "{:<6} {:>6}  {role}: {}, {}, {} in flight",
        slot.as_str(),
        Percent(weight).to_string(),
        counted(backend.requests, "request"),
        counted(backend.errors, "error"),
        backend.in_flight
    );
    // What holds a retiring or stopping backend besides its requests (until newuser34 a drain
    // held by WebSockets read `0 in flight` and nothing else, for up to its deadline).
    if backend.upgraded > 0 {
        let _ = write!(
            line,
            ", {} open",
            counted(backend.upgraded, "upgraded connection")
        );
    }
    if backend.tripped {
        line.push_str(", circuit breaker tripped");
    }
    let endpoints: Vec<String> = backend
        .endpoints
        .iter()
        .map(|endpoint| endpoint_text(backend, slot, endpoint, restarting))
        .collect();
    if endpoints.is_empty() {
        line.push_str("; no endpoints");
    } else {
        let _ = write!(line, "; {}", endpoints.join(", "));
    }
    line
}

impl ServiceStatus {
    /// What `crossfade migrate` prints once the instance started rollout `id` (trial 12, M9):
    /// which versions it moves between (slot in brackets), the effective steps, hold and analysis
    /// bounds (after the file's `rollout:` was applied over the running spec's), with the
    /// sequential judge's settings when it judges, the `analysis.interval` when set, the shadow
    /// step's bounds, the checks' and the gates' names (`; gates approval (before_promotion)`),
    /// and how to follow it:
    ///
    /// ```text
    /// rollout 2 started on route web: v2 (green) to v3 (blue)
    ///   steps 10%, 50%, 100%; hold 5s; analysis: error rate ≤ 1%, p99 ≤ 500ms, at least 30 requests a window, roll back after 3 inconclusive windows in a row
    ///   follow it with `crossfade status --admin 127.0.0.1:9901`
    /// ```
    ///
    /// `None` when this status is not of rollout `id` (another rollout started since).
    pub fn started(&self, id: u64, admin: &str) -> Option<String> {
        let rollout = self.rollout.as_ref().filter(|r| r.id == id)?;
        let start = super::status::start_slot(rollout);
        let config = &rollout.config;
        let steps: Vec<String> = config.steps.iter().map(|s| s.weight.to_string()).collect();
        let analysis = &config.analysis;
        let mut bounds = Vec::new();
        // The judge, its look interval, the shadow step, checks and gates decide the rollout as
        // much as the bounds (user37b: a sequential judge read as the fixed thresholds, and the
        // checks and gates the running spec's `rollout:` kept went unsaid).
        if analysis.judge == crate::spec::JudgeKind::Sequential {
            bounds.push(format!(
                "sequential judge against the active backend (alpha {}, beta {}, allowing {} \
                 more errors and {} more latency, failing when worse than {})",
                crate::spec::fraction_percent(analysis.alpha),
                crate::spec::fraction_percent(analysis.beta),
                crate::spec::fraction_percent(analysis.max_error_rate_increase),
                analysis.max_latency_increase,
                analysis.fail_when_worse_than,
            ));
        }
        if let Some(interval) = analysis.interval {
            bounds.push(format!("every {}", crate::spec::human(interval)));
        }
        bounds.push(format!(
            "error rate ≤ {}",
            crate::spec::fraction_percent(analysis.max_error_rate)
        ));
        if let Some(p99) = analysis.max_p99 {
            bounds.push(format!("p99 ≤ {}", crate::spec::human(p99)));
        }
        if let Some(ratio) = analysis.max_p99_ratio {
            bounds.push(format!("p99 ≤ {ratio}× the active backend's"));
        }
        bounds.push(format!(
            "at least {} a window",
            counted(analysis.min_requests, "request")
        ));
        // What happens without enough traffic matters as much as the bounds (trial 30: a pause
        // was not said, and the operator waited for a rollback).
        let policy = match analysis.on_inconclusive {
            crate::spec::InconclusivePolicy::Pause => "pause",
            crate::spec::InconclusivePolicy::Rollback => "roll back",
        };
        bounds.push(format!(
            "{policy} after {} in a row",
            counted(analysis.max_inconclusive.into(), "inconclusive window")
        ));
        if let Some(shadow) = &analysis.shadow {
            bounds.push(format!(
                "shadow step: mismatch rate ≤ {}, at least {} compared",
                crate::spec::fraction_percent(shadow.max_mismatch_rate),
                shadow.min_compared
            ));
        }
        if !analysis.checks.is_empty() {
            let names: Vec<&str> = analysis.checks.iter().map(|c| c.name.as_str()).collect();
            bounds.push(format!("checks {}", names.join(", ")));
        }
        let gates = if config.gates.is_empty() {
            String::new()
        } else {
            let gates: Vec<String> = config
                .gates
                .iter()
                .map(|g| format!("{} ({})", g.name, g.at))
                .collect();
            format!("; gates {}", gates.join(", "))
        };
        Some(format!(
            "rollout {id} started on route {}: {} to {}\n  steps {}; hold {}; analysis: {}{gates}\n  \
             follow it with `crossfade status --admin {admin}`",
            self.route,
            named(self.from_version.as_deref(), start),
            named(self.to_version.as_deref(), start.other()),
            steps.join(", "),
            crate::spec::human(config.hold),
            bounds.join(", "),
        ))
    }
}

/// The reason of the event a refused operator command leaves (`pause rejected: already paused`).
const REFUSED: &str = "CommandRejected";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_of_one_are_singular() {
        assert_eq!(counted(1, "request"), "1 request");
        assert_eq!(counted(0, "error"), "0 errors");
        assert_eq!(counted(812, "request"), "812 requests");
    }
    use crate::analysis::{Finding, Metric, Outcome, Verdict};
    use crate::rollout::{Rollout, StepVerdict};
    use crate::spec::RolloutConfig;
    use crate::state::StatusEvent;

    fn proxy(weights: (u32, u32)) -> Status {
        let json = serde_json::json!({
            "generation": 7,
            "serving": true,
            "routes": [{
                "name": "web", "hosts": [], "path_prefix": "/", "active": "blue",
                "weights": { "blue": weights.0, "green": weights.1 },
                "blue": { "weight_bp": weights.0, "endpoints": ["127.0.0.1:41001"], "in_flight": 1,
                          "requests": 812, "errors": 0,
                          "health": [{ "endpoint": "127.0.0.1:41001", "healthy": true, "checked_up": true }] },
                "green": { "weight_bp": weights.1, "endpoints": ["127.0.0.1:41002", "127.0.0.1:41003"],
                           "in_flight": 0, "requests": 270, "errors": 3, "tripped": false,
                           "health": [
                             { "endpoint": "127.0.0.1:41002", "healthy": true, "checked_up": true },
                             { "endpoint": "127.0.0.1:41003", "healthy": false, "checked_up": false }
                           ] }
            }]
        });
        serde_json::from_value(json).unwrap()
    }

    /// A retiring (or stopping) backend held by WebSockets says so: `0 in flight` alone left the
    /// operator guessing what the drain waited for (newuser34).
    #[test]
    fn open_upgraded_connections_are_on_the_backend_line() {
        let mut status = proxy((0, 10_000));
        let route = &mut status.routes[0];
        route.blue.upgraded = 3;
        route.green.upgraded = 1;
        let blue = backend_line(route, Slot::Blue, "v1, retiring", &[]);
        assert_eq!(
            blue,
            "blue       0%  v1, retiring: 812 requests, 0 errors, 1 in flight, 3 upgraded connections open; 127.0.0.1:41001 up"
        );
        let green = backend_line(route, Slot::Green, "v2, active", &[]);
        assert!(
            green.contains("0 in flight, 1 upgraded connection open; "),
            "{green}"
        );
        route.green.upgraded = 0;
        let green = backend_line(route, Slot::Green, "v2, active", &[]);
        assert!(!green.contains("upgraded"), "{green}");
    }

    #[test]
    fn a_running_rollout_is_summarised_with_its_step_weights_verdict_and_backends() {
        let mut rollout = Rollout::new(2, RolloutConfig::default(), Slot::Blue);
        rollout.phase = Phase::Progressing;
        rollout.step = 1;
        rollout.message = "step 2/4 at 25%: holding 10s".into();
        rollout.verdicts.push(StepVerdict {
            step: 1,
            preview_bp: 2500,
            verdict: Verdict {
                outcome: Outcome::Pass,
                findings: vec![
                    Finding {
                        metric: Metric::ErrorRate,
                        value: 0.0,
                        threshold: 0.01,
                        ok: true,
                        between: None,
                        unanswered: 0,
                    },
                    Finding {
                        metric: Metric::Requests,
                        value: 812.0,
                        threshold: 50.0,
                        ok: true,
                        between: None,
                        unanswered: 0,
                    },
                ],
                summary: "error rate 0% ≤ 1%, 812 requests".into(),
                checks: Vec::new(),
            },
        });
        let status = ServiceStatus {
            route: "web".into(),
            active: Some(Slot::Blue),
            active_workload: "app v1".into(),
            rollout: Some(rollout),
            running: true,
            events: vec![StatusEvent::now("StepStarted", "step 2/4: green at 25%")],
            ..ServiceStatus::default()
        };
        // Through JSON, as the CLI gets it from the admin API.
        let status: ServiceStatus =
            serde_json::from_value(serde_json::to_value(&status).unwrap()).unwrap();
        let text = status.describe(&proxy((7500, 2500)));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "route web: blue active (app v1)");
        assert_eq!(
            lines[1],
            "rollout 2: Progressing, step 2/4 (in progress), blue to green"
        );
        assert_eq!(lines[2], "  step 2/4 at 25%: holding 10s");
        assert_eq!(
            lines[3],
            "  weights: blue 75%, green 25% (table generation 7)"
        );
        assert_eq!(
            lines[4],
            "  last verdict: pass at step 2 (25%): error rate 0% ≤ 1%, 812 requests ≥ 50"
        );
        assert_eq!(
            lines[5],
            "  last event: StepStarted: step 2/4: green at 25%"
        );
        assert_eq!(
            lines[6],
            "backends (requests and errors counted per slot since crossfade started, across versions):"
        );
        assert_eq!(
            lines[7],
            "  blue      75%  active: 812 requests, 0 errors, 1 in flight; 127.0.0.1:41001 up"
        );
        assert_eq!(
            lines[8],
            "  green     25%  preview: 270 requests, 3 errors, 0 in flight; 127.0.0.1:41002 up, 127.0.0.1:41003 down"
        );
    }

    #[test]
    fn a_completed_rollout_names_the_direction_it_went_not_the_swapped_roles() {
        // Rollout 1 went blue → green; on completion the roles swap, so its `active` is green.
        let mut rollout = Rollout::new(1, RolloutConfig::default(), Slot::Green);
        rollout.phase = Phase::Completed;
        rollout.message = "completed: green is active".into();
        let status = ServiceStatus {
            route: "web".into(),
            active: Some(Slot::Green),
            active_workload: "app v2".into(),
            rollout: Some(rollout),
            running: false,
            events: Vec::new(),
            ..ServiceStatus::default()
        };
        let text = status.describe(&proxy((0, 10_000)));
        let line = text.lines().nth(1).unwrap_or_default();
        assert_eq!(
            line, "rollout 1: Completed (ended), blue to green",
            "{text}"
        );
        // A rolled-back rollout never swapped: it went from its active slot to its preview.
        let mut status = status;
        if let Some(r) = status.rollout.as_mut() {
            r.phase = Phase::RolledBack;
            r.active = Slot::Blue;
        }
        let text = status.describe(&proxy((10_000, 0)));
        let line = text.lines().nth(1).unwrap_or_default();
        assert_eq!(
            line, "rollout 1: RolledBack (ended), blue to green",
            "{text}"
        );
    }

    /// A second rollout, v2 (green, active since the first) to v3 (blue): every line names the
    /// versions, so the alternating slot colours cannot be mistaken for versions (trial report 6,
    /// F12).
    fn second_rollout(phase: Phase, running: bool, active: Slot) -> ServiceStatus {
        let mut rollout = Rollout::new(2, RolloutConfig::default(), Slot::Green);
        rollout.phase = phase;
        if phase == Phase::Completed {
            rollout.active = Slot::Blue;
        }
        let version = if active == Slot::Blue { "v3" } else { "v2" };
        ServiceStatus {
            route: "web".into(),
            active: Some(active),
            active_workload: format!("app {version}"),
            active_version: version.into(),
            from_version: Some("v2".into()),
            to_version: Some("v3".into()),
            rollout: Some(rollout),
            running,
            events: Vec::new(),
            ..ServiceStatus::default()
        }
    }

    #[test]
    fn after_a_promotion_status_names_the_versions_and_each_slots_role() {
        let text =
            second_rollout(Phase::Progressing, true, Slot::Green).describe(&proxy((5000, 5000)));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0], "route web: v2 active in slot green (app v2)",
            "{text}"
        );
        assert!(lines[1].ends_with(", v2 (green) to v3 (blue)"), "{text}");
        assert!(
            text.contains("\n  blue      50%  v3, preview: 812 requests"),
            "{text}"
        );
        assert!(
            text.contains("\n  green     50%  v2, active: 270 requests"),
            "{text}"
        );

        // Retiring: the roles have swapped; v3 serves, v2 drains.
        let text = second_rollout(Phase::Retiring, true, Slot::Blue).describe(&proxy((10_000, 0)));
        assert!(
            text.starts_with("route web: v3 active in slot blue (app v3)\n"),
            "{text}"
        );
        assert!(text.contains("\n  blue     100%  v3, active: "), "{text}");
        assert!(text.contains("\n  green      0%  v2, retiring: "), "{text}");

        let text =
            second_rollout(Phase::Completed, false, Slot::Blue).describe(&proxy((10_000, 0)));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[1], "rollout 2: Completed (ended), v2 (green) to v3 (blue)",
            "{text}"
        );
        assert!(
            text.contains("\n  green      0%  stopped: 270 requests"),
            "{text}"
        );
        assert!(
            text.contains("counted per slot since crossfade started, across versions"),
            "{text}"
        );
    }

    #[test]
    fn a_holding_step_shows_since_when_how_long_and_what_is_left() {
        let mut status = second_rollout(Phase::Progressing, true, Slot::Green);
        let hold = |elapsed: f64, left: f64, next: f64| HoldStatus {
            started_at: "2026-12-01T22:31:05.120Z".into(),
            ends_at: "2026-12-01T22:33:35.120Z".into(),
            hold_seconds: 150.0,
            elapsed_seconds: elapsed,
            left_seconds: left,
            next_analysis_in_seconds: next,
        };
        status.hold = Some(hold(70.2, 79.8, 79.8));
        let text = status.describe(&proxy((5000, 5000)));
        assert_eq!(
            text.lines().nth(3),
            Some("  holding 2m 30s since 2026-12-01T22:31:05.120Z: 1m 10s elapsed, 1m 20s left"),
            "{text}"
        );
        status.hold = Some(hold(20.0, 130.0, 10.0));
        let text = status.describe(&proxy((5000, 5000)));
        assert!(
            text.contains(": 20s elapsed, 2m 10s left; next analysis in 10s\n"),
            "{text}"
        );
        status.hold = Some(hold(160.0, 0.0, 0.0));
        let text = status.describe(&proxy((5000, 5000)));
        assert!(
            text.contains(
                ": 2m 40s elapsed, hold over; the step advances after a passing analysis \
                 (analysis running now)\n"
            ),
            "{text}"
        );
        status.hold = None;
        let text = status.describe(&proxy((5000, 5000)));
        assert!(!text.contains("since 2026"), "{text}");
    }

    #[test]
    fn an_instance_waiting_out_its_restart_backoff_is_said_next_to_its_endpoint() {
        let mut status = second_rollout(Phase::Completed, false, Slot::Blue);
        let endpoint: std::net::SocketAddr = "127.0.0.1:41001".parse().unwrap();
        status.restarting = vec![InstanceRestart {
            backend: Slot::Blue,
            instance: 0,
            endpoint,
            cause: "exited (exit status: 1)".into(),
            restart_at: "2026-12-01T22:31:13.000Z".into(),
            restart_in_seconds: 7.6,
            due: None,
            started: None,
        }];
        // Through JSON, as the CLI gets it.
        let status: ServiceStatus =
            serde_json::from_value(serde_json::to_value(&status).unwrap()).unwrap();
        let text = status.describe(&proxy((10_000, 0)));
        assert!(
            text.contains(
                "; 127.0.0.1:41001 up (process exited (exit status: 1), restarting in 8s)\n"
            ),
            "{text}"
        );
        assert!(
            text.ends_with(
                "\n  (endpoint up/down/ejected: the proxy's view, from requests and health checks)\n"
            ),
            "{text}"
        );
        // Only the slot and endpoint it belongs to.
        assert_eq!(text.matches("restarting in").count(), 1, "{text}");
    }

    /// portnew33's leftover: between a restart and its readiness the endpoint read `down` with
    /// nothing said (the entry went with the restart); a restart that moved off a taken port did
    /// not say where the new process listens.
    #[test]
    fn an_instance_started_again_and_not_ready_yet_is_said_with_its_pid_and_new_port() {
        let mut status = second_rollout(Phase::Completed, false, Slot::Blue);
        let endpoint: std::net::SocketAddr = "127.0.0.1:41001".parse().unwrap();
        let entry = |started: std::net::SocketAddr| InstanceRestart {
            backend: Slot::Blue,
            instance: 0,
            endpoint,
            cause: "exited (signal: 9 (SIGKILL))".into(),
            restart_at: "2026-12-01T22:31:13.000Z".into(),
            restart_in_seconds: 0.0,
            due: None,
            started: Some(super::super::StartedAgain {
                pid: 4242,
                endpoint: started,
                started_at: "2026-12-01T22:31:13.010Z".into(),
                ready_by: None,
            }),
        };
        status.restarting = vec![entry(endpoint)];
        let through_json = |status: &ServiceStatus| -> ServiceStatus {
            serde_json::from_value(serde_json::to_value(status).unwrap()).unwrap()
        };
        let text = through_json(&status).describe(&proxy((10_000, 0)));
        assert!(
            text.contains(
                "; 127.0.0.1:41001 up (process exited (signal: 9 (SIGKILL)); started again as \
                 pid 4242, not ready yet)\n"
            ),
            "{text}"
        );
        status.restarting = vec![entry("127.0.0.1:41007".parse().unwrap())];
        let text = through_json(&status).describe(&proxy((10_000, 0)));
        assert!(
            text.contains(
                "started again as pid 4242 on 127.0.0.1:41007 (its port was taken), not ready \
                 yet)\n"
            ),
            "{text}"
        );
        assert!(!text.contains("restarting"), "{text}");
        // Session 35: with its readiness deadline, which a restart not ready by then is stopped
        // at (it said "not ready yet" for ever).
        let mut bounded = entry(endpoint);
        if let Some(started) = &mut bounded.started {
            started.ready_by = Some("2026-12-01T22:31:43.010Z".into());
        }
        status.restarting = vec![bounded];
        let text = through_json(&status).describe(&proxy((10_000, 0)));
        assert!(
            text.contains(
                "started again as pid 4242, not ready yet: stopped and started again if not \
                 ready by 2026-12-01T22:31:43.010Z)\n"
            ),
            "{text}"
        );
        // check34: started again after a start that failed, the failure is the last start's,
        // not the process's state now (it read `process cannot be started again (...); started
        // again as pid 4242`).
        let mut failed = entry(endpoint);
        failed.cause = format!("{START_FAILED} (No such file or directory (os error 2))");
        status.restarting = vec![failed];
        let text = through_json(&status).describe(&proxy((10_000, 0)));
        assert!(
            text.contains(
                "127.0.0.1:41001 up (a start failed (No such file or directory (os error \
                 2)); started again as pid 4242, not ready yet)\n"
            ),
            "{text}"
        );
        assert!(!text.contains("cannot be started again"), "{text}");
    }

    #[test]
    fn a_rollout_paused_while_provisioning_names_no_step() {
        let mut status = second_rollout(Phase::Paused, true, Slot::Green);
        let text = status.describe(&proxy((10_000, 0)));
        assert!(
            text.contains("Paused, while provisioning (in progress)"),
            "{text}"
        );
        status.rollout.as_mut().unwrap().preview_ready = true;
        let text = status.describe(&proxy((10_000, 0)));
        assert!(text.contains("Paused, step 1/4 (in progress)"), "{text}");
    }

    #[test]
    fn no_rollout_and_a_missing_route_are_said() {
        let status = ServiceStatus {
            route: "api".into(),
            active: Some(Slot::Blue),
            active_workload: "app v1".into(),
            ..ServiceStatus::default()
        };
        let text = status.describe(&proxy((10_000, 0)));
        assert!(text.contains("rollout: none yet\n"), "{text}");
        assert!(
            text.contains("backends: the proxy has no route api (routes: web)"),
            "{text}"
        );
        assert!(!text.contains("weights:"), "{text}");
    }

    /// Trial 12, M10: a refused no-op (a second `pause`) is not shown as the last event; the
    /// last transition is, and the refusal gets its own line.
    #[test]
    fn a_refused_command_does_not_replace_the_last_event() {
        let mut rollout = Rollout::new(3, RolloutConfig::default(), Slot::Blue);
        rollout.phase = Phase::Paused;
        let status = |events: Vec<StatusEvent>| ServiceStatus {
            route: "web".into(),
            active: Some(Slot::Blue),
            active_workload: "app v1".into(),
            rollout: Some(rollout.clone()),
            running: true,
            events,
            ..ServiceStatus::default()
        };
        let paused = StatusEvent::now("Paused", "paused at step 1/4 (5%)");
        let refused = StatusEvent::now("CommandRejected", "pause rejected: already paused");
        let text = status(vec![paused.clone(), refused.clone()]).describe(&proxy((9500, 500)));
        assert!(
            text.contains("\n  last event: Paused: paused at step 1/4 (5%)\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "\n  last refused command: pause rejected: already paused (nothing changed)\n"
            ),
            "{text}"
        );
        assert!(!text.contains("last event: CommandRejected"), "{text}");
        // Once a transition follows, the refusal is history: no line of its own.
        let resumed = StatusEvent::now("Resumed", "resumed at step 1/4 (5%)");
        let text = status(vec![paused, refused, resumed]).describe(&proxy((9500, 500)));
        assert!(text.contains("\n  last event: Resumed: "), "{text}");
        assert!(!text.contains("last refused command"), "{text}");
    }

    /// Trial 13 N15: after a restart the last event is the restart's, and the previous run's
    /// last event is shown as history, with its time, until a rollout starts again.
    #[test]
    fn after_a_restart_the_previous_runs_last_event_is_marked_with_its_time() {
        let mut rollout = Rollout::new(1, RolloutConfig::default(), Slot::Blue);
        rollout.phase = Phase::Aborted;
        let status = |events: Vec<StatusEvent>| ServiceStatus {
            route: "web".into(),
            active: Some(Slot::Blue),
            active_workload: "app v1".into(),
            rollout: Some(rollout.clone()),
            events,
            ..ServiceStatus::default()
        };
        let at = |mut event: StatusEvent, seconds: f64| {
            event.at_unix_seconds = seconds;
            event
        };
        let aborted = at(
            StatusEvent::now("Aborted", "aborted: green at 0%"),
            1_796_217_947.5,
        );
        let refused = StatusEvent::now("CommandRejected", "pause rejected: nothing to pause");
        let restored = StatusEvent::now("Restored", "crossfade restarted from its state file");
        let events = vec![aborted.clone(), refused, restored.clone()];
        let text = status(events).describe(&proxy((10_000, 0)));
        assert!(
            text.contains("\n  last event: Restored: crossfade restarted from its state file\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "\n  before the restart: Aborted at 2026-12-02T13:25:47.500Z: aborted: green at 0%\n"
            ),
            "{text}"
        );
        // No restart: no such line; a rollout started since: neither.
        let text = status(vec![aborted.clone()]).describe(&proxy((10_000, 0)));
        assert!(!text.contains("before the restart"), "{text}");
        let provisioning = StatusEvent::now("Provisioning", "starting green");
        let text = status(vec![aborted, restored, provisioning]).describe(&proxy((10_000, 0)));
        assert!(!text.contains("before the restart"), "{text}");
    }

    /// Session 41: when the previous run's last event is the one that ended the rollout, the
    /// restart's event already says when (`rollout 1 ended Aborted at ...`), and the end's time
    /// is said once: `before the restart: Aborted: ...` (it was said twice, 20 ms apart).
    #[test]
    fn after_a_restart_the_rollouts_end_is_said_once() {
        let mut rollout = Rollout::new(1, RolloutConfig::default(), Slot::Blue);
        rollout.phase = Phase::Aborted;
        let mut aborted = StatusEvent::now("Aborted", "aborted: green at 0%");
        aborted.at_unix_seconds = 1_796_217_947.5;
        let restored = StatusEvent::now(
            "Restored",
            "crossfade restarted from its state file (pid 7); rollout 1 ended Aborted at \
             2026-12-02T13:25:47.500Z, before the restart",
        );
        let status = ServiceStatus {
            route: "web".into(),
            active: Some(Slot::Blue),
            active_workload: "app v1".into(),
            rollout: Some(rollout),
            events: vec![aborted, restored],
            ..ServiceStatus::default()
        };
        let text = status.describe(&proxy((10_000, 0)));
        assert!(
            text.contains("\n  before the restart: Aborted: aborted: green at 0%\n"),
            "{text}"
        );
        assert_eq!(
            text.matches("2026-12-02T13:25:47.500Z").count(),
            1,
            "{text}"
        );
    }

    /// Trial 12, M9: what `crossfade migrate` prints: versions, the effective policy, and how to
    /// follow the rollout.
    #[test]
    fn a_started_rollout_is_described_with_its_versions_policy_and_how_to_follow_it() {
        let mut config = RolloutConfig::default();
        config.analysis.max_p99 = Some(std::time::Duration::from_millis(500));
        config.analysis.min_requests = 30;
        config.analysis.max_inconclusive = 2;
        config.analysis.on_inconclusive = crate::spec::InconclusivePolicy::Pause;
        let rollout = Rollout::new(2, config, Slot::Green);
        let status = ServiceStatus {
            route: "web".into(),
            from_version: Some("v2".into()),
            to_version: Some("v3".into()),
            rollout: Some(rollout),
            running: true,
            ..ServiceStatus::default()
        };
        assert_eq!(
            status.started(2, "127.0.0.1:9901").as_deref(),
            Some(
                "rollout 2 started on route web: v2 (green) to v3 (blue)\n  steps 5%, 25%, 50%, \
                 100%; hold 10s; analysis: error rate ≤ 1%, p99 ≤ 500ms, at least 30 requests a \
                 window, pause after 2 inconclusive windows in a row\n  follow it with `crossfade status --admin 127.0.0.1:9901`"
            )
        );
        assert_eq!(status.started(3, "127.0.0.1:9901"), None, "another rollout");
    }
}
