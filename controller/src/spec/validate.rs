//! The spec's rules, checked all at once so that one run reports every problem.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use crossfade_proxy::weight::{Percent, Slot, FULL_BP};

use super::headers::{HeaderFrom, KeyRef, ValueFrom, MAX_HEADERS_FROM};
use super::{
    fraction_percent, human, AnalysisConfig, CheckConfig, GateConfig, GatePoint, GatePolicy,
    LatencyIncrease, ReadinessConfig, RolloutConfig, RunSpec, WorkloadSpec, MAX_INSTANCES,
    PORT_PLACEHOLDER,
};
use crate::spec::Problem;

/// The most `rollout.analysis.checks` a rollout may have: every analysis records each check's
/// result, and the last 50 verdicts are kept (in Kubernetes mode in the TrafficShift's status,
/// which etcd bounds at 1.5 MB per object). Far above what an analysis needs.
pub const MAX_CHECKS: usize = 20;

/// The most `rollout.gates` a rollout may have (the same reason as [`MAX_CHECKS`]).
pub const MAX_GATES: usize = 20;

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

    /// [`Report::positive`] for a hold or a repeating interval, which must also be at least
    /// [`crossfade_proxy::duration::MIN_INTERVAL`] (10 ms): a `1ns` hold decides a rollout before
    /// one request could be counted.
    /// Zero gets the same message as `1ns` (`0s is below the minimum of 10ms`), not "must be
    /// above 0s", which would suggest that `1ns` is fine (trial 9, I15).
    fn interval(&mut self, path: impl Into<String>, d: Duration) {
        let below = match d.is_zero() {
            true => Err(format!(
                "0s is below the minimum of {}",
                crossfade_proxy::duration::show(crossfade_proxy::duration::MIN_INTERVAL)
            )),
            false => crossfade_proxy::duration::at_least_interval(d),
        };
        if let Err(e) = below {
            self.add(path, e);
        }
    }
}

/// Every problem of `spec`, in field order; empty when it is valid.
pub(super) fn run_spec(spec: &RunSpec) -> Vec<Problem> {
    let mut problems = run_spec_with(spec, "a blue endpoint");
    // A green equal to blue rolls out what serves already: the first start ran a rollout of
    // it, and every restart then skipped it as "it serves already" (trial 22). Endpoint
    // workloads are refused above, by their shared endpoints.
    if let (Some(blue), Some(green)) = (&spec.blue, &spec.green) {
        if blue == green && green.is_command() {
            problems.push(Problem {
                path: "green".into(),
                message: "is the same workload as blue (command, args, env, name and the rest): \
                          a rollout to it would change nothing; put the new version under \
                          green:, or remove green: to only serve blue"
                    .into(),
            });
        }
    }
    problems
}

/// [`run_spec`], with `blue_is` saying whose a green endpoint that is also one of `blue`'s is:
/// `a blue endpoint` in a spec, the active workload and its slot for a `POST /rollout`, where
/// `blue` holds the active workload whatever its slot (trial 8, H8).
pub(super) fn run_spec_with(spec: &RunSpec, blue_is: &str) -> Vec<Problem> {
    let mut r = Report::default();
    proxy_rules(&mut r, spec);
    let own = [(spec.listen, "listen"), (spec.admin, "admin")];
    match &spec.blue {
        Some(blue) => workload(&mut r, "blue", blue, &own),
        None => r.add("blue", "missing"),
    }
    if let Some(green) = &spec.green {
        workload(&mut r, "green", green, &own);
        if let Some(blue) = &spec.blue {
            shared_endpoints(&mut r, blue, green, blue_is);
        }
    }
    rollout(&mut r, &spec.rollout);
    local_sources(&mut r, &spec.rollout);
    if let Some(range) = &spec.port_range {
        r.0.extend(range.problems());
        port_range_fits(&mut r, spec, range);
    }
    drain_grace(&mut r, spec);
    if spec
        .state_file
        .as_ref()
        .is_some_and(|p| p.as_os_str().is_empty())
    {
        r.add("state_file", "must not be empty");
    }
    r.0
}

/// `port_range` must hold a port for every `{port}` instance that runs at once: blue's, and
/// during a rollout green's beside them (trial 12, M6). Only a valid range is counted, less the
/// ports of it that the proxy's own `listen` and `admin` take from the instances (user37: a
/// `listen` inside a range just wide enough passed `check`, and green then found every port
/// taken and was rolled back).
fn port_range_fits(r: &mut Report, spec: &RunSpec, range: &super::PortRange) {
    let Some(ports) = range.ports() else { return };
    let taken = taken_in_range(spec, &ports);
    let size = u64::from(*ports.end()) - u64::from(*ports.start()) + 1;
    let free = size - taken.ports;
    let started = |w: &Option<WorkloadSpec>| {
        w.as_ref()
            .filter(|w| w.is_command())
            .map(|w| u64::from(w.instances))
    };
    let (blue, green) = (started(&spec.blue), started(&spec.green));
    let needed = blue.unwrap_or(0) + green.unwrap_or(0);
    if needed <= free {
        return;
    }
    let plural = |n: u64| if n == 1 { "" } else { "s" };
    let have = match taken.ports {
        0 => format!("{range}: {size} port{}", plural(size)),
        n => format!(
            "{range}: {free} port{} left for instances ({} take{} {n} of its {size})",
            plural(free),
            taken.named.join(" and "),
            if taken.named.len() == 1 { "s" } else { "" },
        ),
    };
    let message = match (blue, green) {
        (Some(b), Some(g)) => format!(
            "{have}, but blue ({b} instance{}) and green ({g} instance{}) run together during a \
             rollout: {needed} needed; widen port_range",
            plural(b),
            plural(g)
        ),
        (Some(b), None) => {
            format!(
                "{have}, but blue has {b} instance{}: {needed} needed; widen port_range",
                plural(b)
            )
        }
        (None, _) => {
            format!(
                "{have}, but green has {needed} instance{}: {needed} needed; widen port_range",
                plural(needed)
            )
        }
    };
    r.add("port_range", message);
}

/// The ports of a `port_range` that the proxy's own listeners take from its instances.
struct Taken {
    /// How many ports of the range (`listen` and `admin` on one port count once).
    ports: u64,
    /// Each listener that takes one, as `listen 127.0.0.1:25100`.
    named: Vec<String>,
}

/// The proxy's own listeners (`listen`, `admin`) on a port of `ports` where an instance, which
/// binds its `{port}` on 127.0.0.1 (the driver's port allocation), cannot take it: on 127.0.0.1
/// itself, or on an unspecified address (`0.0.0.0`, and `[::]`, which Linux binds for IPv4 too).
fn taken_in_range(spec: &RunSpec, ports: &std::ops::RangeInclusive<u16>) -> Taken {
    let loopback = std::net::Ipv4Addr::LOCALHOST;
    let listeners: Vec<(&str, SocketAddr)> = [("listen", spec.listen), ("admin", spec.admin)]
        .into_iter()
        .filter(|(_, addr)| ports.contains(&addr.port()))
        .filter(|(_, addr)| addr.ip().is_unspecified() || addr.ip() == loopback)
        .collect();
    let mut taken: Vec<u16> = listeners.iter().map(|(_, addr)| addr.port()).collect();
    taken.dedup();
    Taken {
        ports: taken.len() as u64,
        named: listeners
            .iter()
            .map(|(field, addr)| format!("{field} {addr}"))
            .collect(),
    }
}

/// Every problem of one workload named `path` (`green`), without the checks that need the rest of
/// the spec (listen address, the other slot's endpoints).
pub(super) fn workload_spec(w: &WorkloadSpec, path: &str) -> Vec<Problem> {
    let mut r = Report::default();
    workload(&mut r, path, w, &[]);
    r.0
}

/// Every problem of a rollout config, with paths under `rollout.`.
pub(super) fn rollout_config(c: &RolloutConfig) -> Vec<Problem> {
    let mut r = Report::default();
    rollout(&mut r, c);
    r.0
}

/// The proxy's own rules ([`ProxyConfig::validate`](crossfade_proxy::config::ProxyConfig::validate))
/// on the config `crossfade run` derives from `spec` ([`RunSpec::proxy_config`]), each problem
/// under the spec's path: `routes[0].X` is the spec's `route.X`, and `listen` and `admin` are
/// the spec's own. This is the check `run` meets when it builds its proxy, so a spec that passes
/// here is never refused there (route name and host rules, listen and admin sharing a port).
///
/// The serving endpoints are known only once the workload has started; the config checked here
/// stands in one loopback endpoint for them (no proxy rule reads an endpoint's address, only
/// that the backend with the weight has one).
/// An endpoint standing in for the instances' ports, which are given at start, when the proxy's
/// rules are checked: never the proxy's own `listen` or `admin` address, or the rule against an
/// endpoint that loops back would refuse a valid spec under a field it does not have
/// (`route.blue.endpoints[0]`; newuser 33: `listen: 127.0.0.1:1`).
pub(super) fn stand_in(spec: &RunSpec) -> SocketAddr {
    let taken = [spec.listen.port(), spec.admin.port()];
    let port = (1..=3).find(|p| !taken.contains(p)).unwrap_or(1);
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn proxy_rules(r: &mut Report, spec: &RunSpec) {
    let stand_in = vec![stand_in(spec)];
    let Err(error) = spec
        .proxy_config(Slot::Blue, stand_in, spec.blue_protocol())
        .validate()
    else {
        return;
    };
    for problem in error.problems() {
        let path = match problem.path.strip_prefix("routes[0]") {
            Some(rest) => format!("route{rest}"),
            None => problem.path.clone(),
        };
        r.add(path, problem.message.clone());
    }
}

/// `drain_grace` at most half of the drain it is part of, the proxy's shutdown `drain_timeout`
/// (which the proxy would otherwise cut it to, unsaid). An unset one is held to it
/// ([`RunSpec::drain_grace`]).
fn drain_grace(r: &mut Report, spec: &RunSpec) {
    let drain = spec
        .proxy_config(Slot::Blue, Vec::new(), spec.blue_protocol())
        .drain_timeout;
    let Some(grace) = spec.drain_grace else {
        return;
    };
    if grace > drain / 2 {
        r.add(
            "drain_grace",
            format!(
                "{} is above {}, half of drain_timeout ({}), the proxy's drain on shutdown",
                human(grace),
                human(drain / 2),
                human(drain)
            ),
        );
    }
}

/// `own`: the proxy's listen and admin addresses, each with its name; no endpoint may be one.
fn workload(r: &mut Report, slot: &str, w: &WorkloadSpec, own: &[(SocketAddr, &str)]) {
    match w.name.as_deref() {
        Some(n) if n.trim().is_empty() => r.add(format!("{slot}.name"), "must not be empty"),
        // The name is in log lines, events and the report: a newline would split a line into
        // two, the second one forged (trial 19).
        Some(n) if n.contains(char::is_control) => r.add(
            format!("{slot}.name"),
            format!("{n:?} holds a control character (a newline, a tab...), which a log line cannot show as written"),
        ),
        Some(n) => too_long(r, &format!("{slot}.name"), n),
        _ => {}
    }
    match (&w.command, w.endpoints.is_empty()) {
        (Some(_), false) => r.add(slot, "set either command or endpoints, not both"),
        (None, true) => r.add(slot, "set either command or endpoints"),
        (Some(command), true) => command_workload(r, slot, w, command),
        (None, false) => endpoint_workload(r, slot, w, own),
    }
    readiness(r, &format!("{slot}.readiness"), &w.readiness);
}

fn command_workload(r: &mut Report, slot: &str, w: &WorkloadSpec, command: &str) {
    if command.trim().is_empty() {
        r.add(format!("{slot}.command"), "must not be empty");
    }
    // A program, argument or directory is a C string to exec(2) and chdir(2): a NUL failed the
    // start with "nul byte found in provided data" naming no field, after `check` said ok
    // (trial 32, B; the env rule below is trial 18's).
    const NUL: &str = "cannot hold a NUL character";
    if command.contains('\0') {
        r.add(format!("{slot}.command"), NUL);
    }
    for (i, arg) in w.args.iter().enumerate() {
        if arg.contains('\0') {
            r.add(format!("{slot}.args[{i}]"), NUL);
        }
    }
    if w.workdir
        .as_ref()
        .is_some_and(|d| d.as_os_str().as_encoded_bytes().contains(&0))
    {
        r.add(format!("{slot}.workdir"), NUL);
    }
    // Resolved from the spec's directory, "" was that directory, while leaving the field out
    // is Crossfade's own working directory; as `state_file: ""`, it is refused.
    if w.workdir.as_ref().is_some_and(|d| d.as_os_str().is_empty()) {
        r.add(
            format!("{slot}.workdir"),
            "must not be empty: leave it out for Crossfade's own working directory, or write . \
             for the spec file's",
        );
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
    for (name, value) in &w.env {
        // The rule of `headers_from[].value_from.env`: a process environment entry is
        // `NAME=value`, so `A=B: x` reached the process as A="B=x", and a NUL failed its start
        // (trial 18, T21).
        if name.is_empty() || name.contains(['=', '\0']) {
            r.add(
                format!("{slot}.env"),
                format!("{name:?} is not an environment variable name (not empty, no '=' or NUL)"),
            );
        }
        if value.contains('\0') {
            r.add(
                format!("{slot}.env.{name}"),
                "a value cannot hold a NUL character",
            );
        }
    }
    placeholder_spellings(r, slot, w, command);
    let in_args = w.args.iter().any(|a| a.contains(PORT_PLACEHOLDER));
    let in_env = w.env.values().any(|v| v.contains(PORT_PLACEHOLDER));
    if !in_args && !in_env {
        r.add(
            format!("{slot}.args"),
            "{port} must appear in args or env, or the instances cannot be given their ports",
        );
    }
}

/// `args` and `env` values holding a spelling of the placeholder `{port}` that the process would
/// get as written ([`misspelt_placeholder`]), each named by its field.
fn placeholder_spellings(r: &mut Report, slot: &str, w: &WorkloadSpec, command: &str) {
    let script = runs_a_shell_script(command, &w.args);
    let args = w.args.iter().enumerate().map(|(i, a)| {
        let path = format!("{slot}.args[{i}]");
        (path, a, script)
    });
    let env = w
        .env
        .iter()
        .map(|(k, v)| (format!("{slot}.env.{k}"), v, false));
    for (path, value, expanded) in args.chain(env) {
        let message = match misspelt_placeholder(value, expanded) {
            None => continue,
            Some(Misspelt::Braces(written)) => format!(
                "{value:?}: {written} is not the placeholder {PORT_PLACEHOLDER} (one pair of \
                 braces, lower case, no spaces), so it would be passed as written; write \
                 {PORT_PLACEHOLDER}"
            ),
            Some(Misspelt::Shell(written)) => format!(
                "{value:?}: {written} is a shell variable, and args and env are passed to the \
                 program as written, not through a shell, so it would get {written} itself; \
                 write {PORT_PLACEHOLDER}, which is replaced by the instance's port"
            ),
        };
        r.add(path, message);
    }
}

/// Whether `command` is a POSIX shell given a script to run (`sh -c '...'`, `bash -ec '...'`):
/// then the shell expands `$PORT` in `args` itself (from `env: { PORT: "{port}" }`).
fn runs_a_shell_script(command: &str, args: &[String]) -> bool {
    const SHELLS: [&str; 7] = ["sh", "bash", "dash", "zsh", "ksh", "ash", "mksh"];
    let name = command.rsplit('/').next().unwrap_or(command);
    let script = |a: &String| {
        a.strip_prefix('-')
            .is_some_and(|flags| !flags.starts_with('-') && flags.contains('c'))
    };
    SHELLS.contains(&name) && args.iter().any(script)
}

/// A spelling of the placeholder `{port}` that a process would get as written
/// ([`misspelt_placeholder`]).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Misspelt<'a> {
    /// Braces other than `{port}`'s: `{PORT}`, `{ port }`, `{{port}}`, `{prot}`.
    Braces(&'a str),
    /// A shell variable, `$PORT` or `${PORT}`, which no shell expands.
    Shell(&'a str),
}

/// The first group in `value` that was most likely meant as the placeholder `{port}` but is not
/// it, so that the process would get it as written:
/// - braces: `{PORT}`, `{ port }`, `{{port}}` (a template engine's spelling, as
///   `analysis.checks` write `{{ route }}`), `{prot}` (letter case aside, a small edit away, by
///   [`crossfade_proxy::de::closest`]). `{{port}}` holds `{port}`, so before this check it passed
///   and the process got `{25100}` (trial 18, T15);
/// - a shell variable, `$PORT` or `${PORT}` (letter case aside), unless `expanded` (an argument
///   of a shell script, [`runs_a_shell_script`]): args are not run through a shell, so the
///   program got the text `$PORT` (trial 18's report).
pub(super) fn misspelt_placeholder(value: &str, expanded: bool) -> Option<Misspelt<'_>> {
    let mut rest = value;
    while let Some(open) = rest.find(['{', '$']) {
        let group = &rest[open..];
        let (written, found) = match group.strip_prefix('$') {
            Some(after) => {
                let (len, name) = shell_variable(after);
                let written = &group[..1 + len];
                let port = name.eq_ignore_ascii_case("port") && !expanded;
                (written, port.then_some(Misspelt::Shell(written)))
            }
            None => {
                let written = braces(group)?;
                let word = written.trim_matches(['{', '}']).trim();
                let meant = word.eq_ignore_ascii_case("port")
                    || (!word.contains(char::is_whitespace)
                        && crossfade_proxy::de::closest(word, ["port"]).is_some());
                let misspelt = meant && written != PORT_PLACEHOLDER;
                (written, misspelt.then_some(Misspelt::Braces(written)))
            }
        };
        if found.is_some() {
            return found;
        }
        rest = &group[written.len()..];
    }
    None
}

/// The group of braces `group` opens with (`{port}`, `{{ port }}`), its closing braces included;
/// `None` when it is never closed.
fn braces(group: &str) -> Option<&str> {
    let inner = group.trim_start_matches('{');
    let close = inner.find('}')?;
    let end = close + inner[close..].len() - inner[close..].trim_start_matches('}').len();
    Some(&group[..group.len() - inner.len() + end])
}

/// The shell variable after a `$`: its length as written and its name (`{PORT}` is 6 bytes
/// naming `PORT`, `PORT/x` 4 naming `PORT`); 0 and `""` when none (`$1`, a lone `$`, `${` never
/// closed).
fn shell_variable(after: &str) -> (usize, &str) {
    if let Some(braced) = after.strip_prefix('{') {
        return match braced.find('}') {
            Some(close) => (close + 2, &braced[..close]),
            None => (0, ""),
        };
    }
    let len = after
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(after.len());
    match after.starts_with(|c: char| c.is_ascii_digit()) {
        true => (0, ""),
        false => (len, &after[..len]),
    }
}

fn endpoint_workload(r: &mut Report, slot: &str, w: &WorkloadSpec, own: &[(SocketAddr, &str)]) {
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
        if let Some(problem) = crossfade_proxy::loops::own_address_problem(*ep, own) {
            r.add(&path, problem);
        }
        if !seen.insert(*ep) {
            r.add(&path, format!("{ep} is listed twice"));
        }
    }
}

/// Blue and green must be different backends, or analysis compares a backend with itself.
fn shared_endpoints(r: &mut Report, blue: &WorkloadSpec, green: &WorkloadSpec, blue_is: &str) {
    for (i, ep) in green.endpoints.iter().enumerate() {
        if blue.endpoints.contains(ep) {
            r.add(
                format!("green.endpoints[{i}]"),
                format!("{ep} is also {blue_is}"),
            );
        }
    }
}

fn readiness(r: &mut Report, path: &str, c: &ReadinessConfig) {
    if let Some(message) = crossfade_proxy::config::probe_path_problem(&c.path) {
        r.add(format!("{path}.path"), message);
    }
    r.positive(format!("{path}.timeout"), c.timeout);
    r.interval(format!("{path}.interval"), c.interval);
    r.positive(format!("{path}.deadline"), c.deadline);
    readiness_deadline(r, path, c);
}

/// `deadline` at least `timeout + interval`: an instance's first probe runs as it starts, when it
/// is rarely listening yet, and may take its whole `timeout`; the next runs `interval` later, and
/// a deadline shorter than that allows no second probe, so an instance that does not answer the
/// very first one is never found ready (`deadline: 1ms` passed check, and every start then
/// failed at its first probe).
fn readiness_deadline(r: &mut Report, path: &str, c: &ReadinessConfig) {
    let second_probe = c.timeout.saturating_add(c.interval);
    if !c.deadline.is_zero() && c.deadline < second_probe {
        r.add(
            format!("{path}.deadline"),
            format!(
                "{} is below timeout + interval ({} + {} = {}): the first probe runs as an \
                 instance starts and may take its whole timeout, the next one interval later, so \
                 an instance not answering the first could never be found ready; make it at \
                 least {}",
                human(c.deadline),
                human(c.timeout),
                human(c.interval),
                human(second_probe),
                human(second_probe)
            ),
        );
    }
}

fn rollout(r: &mut Report, c: &RolloutConfig) {
    steps(r, c);
    r.interval("rollout.hold", c.hold);
    r.positive("rollout.progress_deadline", c.progress_deadline);
    r.positive("rollout.drain_timeout", c.drain_timeout);
    analysis(r, &c.analysis);
    let shadow_step = c.steps.first().is_some_and(|s| s.weight.bp() == 0);
    if c.analysis.shadow.is_some() && !shadow_step {
        r.add(
            "rollout.analysis.shadow",
            "judges the 0% shadow step, and rollout.steps has none: start the steps with 0 \
             (e.g. `{ weight: 0, hold: 30s }`)",
        );
    }
    fits_deadline(r, c);
    gates(r, &c.gates);
}

/// `rollout.gates`: at most [`MAX_GATES`], unique names, an `http(s)://` URL, positive timeout
/// and retry, valid headers.
fn gates(r: &mut Report, gates: &[GateConfig]) {
    if gates.len() > MAX_GATES {
        r.add(
            "rollout.gates",
            format!(
                "{} gates is more than {MAX_GATES}: each is asked at every step and recorded with \
                 the rollout; merge some into one webhook",
                gates.len()
            ),
        );
    }
    let mut names = BTreeSet::new();
    let none = std::collections::BTreeMap::new();
    for (i, g) in gates.iter().enumerate() {
        let at = format!("rollout.gates[{i}]");
        if !is_name(&g.name) {
            r.add(
                format!("{at}.name"),
                format!(
                    "{:?} is not a gate name (letters, digits, `_`, `.`, `-`)",
                    g.name
                ),
            );
        } else if g.name.chars().count() > MAX_NAME_CHARS {
            too_long(r, &format!("{at}.name"), &g.name);
        } else if !names.insert(g.name.as_str()) {
            r.add(
                format!("{at}.name"),
                format!("{:?} is used by another gate", g.name),
            );
        }
        url(r, &format!("{at}.url"), &g.url, &none);
        if g.at == GatePoint::AfterCompletion && g.on_reject == GatePolicy::Rollback {
            r.add(
                format!("{at}.on_reject"),
                "rollback cannot act after completion: the rollout has completed, so the gate \
                 is a notification whose answer changes nothing; remove it, or ask the gate \
                 before promotion to be able to roll back",
            );
        }
        r.positive(format!("{at}.timeout"), g.timeout);
        r.interval(format!("{at}.retry"), g.retry);
        request_headers(r, &at, &g.headers, &g.headers_from);
    }
}

/// The most characters of a name that becomes a metric label value and is repeated in every
/// status line, event and log line: a workload's `name` (the `version` label) and a check's or
/// gate's. 63, the Kubernetes limit for a label value and a DNS-1123 label (Kubernetes "Labels and
/// Selectors"; the TrafficShift's schema gives check and gate names the same `maxLength`), which
/// route names keep too. Prometheus sets no limit, but a label value this long is a known cost
/// (every series and scrape repeats it); a 5000-character name was accepted (trial 28).
pub(crate) const MAX_NAME_CHARS: usize = 63;

/// Adds `<at>: is N characters long, above the limit of 63` for a `name` longer than
/// [`MAX_NAME_CHARS`] (counted in characters, not bytes), quoting its start only.
fn too_long(r: &mut Report, at: &str, name: &str) {
    let count = name.chars().count();
    if count > MAX_NAME_CHARS {
        let start = crate::text::head(name, 20).unwrap_or(name);
        r.add(
            at,
            format!(
                "{start:?}... is {count} characters long, above the limit of {MAX_NAME_CHARS} \
                 for a name (a metric label and part of every status line)"
            ),
        );
    }
}

/// A name for a check or gate: `[A-Za-z0-9_.-]+`.
fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '.' | '-'))
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
        } else if w.bp() == 0 && i > 0 {
            r.add(
                &path,
                "0% sends the preview no traffic to analyse; only the first step may be 0% (a \
                 shadow step, judged by rollout.analysis.shadow)",
            );
        } else if w.bp() == 0 && c.analysis.shadow.is_none() {
            // Session 42: this said "only the first step may be 0%" of the first step.
            r.add(
                &path,
                "0% sends the preview no traffic to analyse: a first step at 0% is a shadow step, \
                 which needs rollout.analysis.shadow to judge it; or start above 0%",
            );
        } else if let Some(p) = previous.filter(|p| w <= *p) {
            r.add(&path, format!("{w} is not above the previous step ({p})"));
        }
        if let Some(hold) = step.hold {
            r.interval(format!("{path}.hold"), hold);
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
        r.interval("rollout.analysis.interval", interval);
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
            match ratio.is_finite() {
                true => format!("{ratio} is below 1 (it is preview p99 as a multiple of active p99)"),
                false => format!("{ratio} is not a number (it is preview p99 as a multiple of active p99, at least 1)"),
            },
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
    checks(r, &a.checks);
    if let Some(shadow) = &a.shadow {
        shadow_guard(r, shadow);
    }
}

/// `rollout.analysis.shadow`: a rate in 0..=1, at least one comparison, the proxy's mirror rules.
fn shadow_guard(r: &mut Report, g: &super::ShadowGuard) {
    let at = "rollout.analysis.shadow";
    let rate = g.max_mismatch_rate;
    if !(0.0..=1.0).contains(&rate) {
        let text = fraction_percent(rate);
        r.add(
            format!("{at}.max_mismatch_rate"),
            crossfade_proxy::shown::outside(text, "0%", "100%", ""),
        );
    }
    if g.min_compared == 0 {
        r.add(
            format!("{at}.min_compared"),
            "0 would let a window without comparisons pass; use at least 1",
        );
    }
    let mut problems = Vec::new();
    g.mirror.check(&format!("{at}.mirror"), &mut problems);
    for problem in problems {
        r.add(problem.path, problem.message);
    }
    nothing_mirrored(r, &g.mirror);
}

/// A shadow step is judged only by comparisons, so a mirror that can never send one leaves
/// every window inconclusive and the rollout rolls back (or pauses) without having judged
/// anything (trial 22: `percent: 0` loaded). A proxy route may mirror nothing on purpose; a
/// rollout's shadow step may not.
fn nothing_mirrored(r: &mut Report, m: &crossfade_proxy::config::ShadowConfig) {
    let at = "rollout.analysis.shadow.mirror";
    let why = "so the shadow step never compares an answer: every window would be inconclusive";
    for (field, what) in m.nothing_mirrored() {
        let restore = if field == "methods" {
            "; leave it out for GET, HEAD and OPTIONS"
        } else {
            ""
        };
        r.add(format!("{at}.{field}"), format!("{what}, {why}{restore}"));
    }
}

/// `rollout.analysis.checks`: at most [`MAX_CHECKS`], unique names, one provider each, a range,
/// URLs and templates that parse, a JSONPath that parses.
fn checks(r: &mut Report, checks: &[CheckConfig]) {
    if checks.len() > MAX_CHECKS {
        r.add(
            "rollout.analysis.checks",
            format!(
                "{} checks is more than {MAX_CHECKS}: every analysis records each check's result \
                 with the rollout (in Kubernetes mode in the TrafficShift's status, which the API \
                 server keeps under 1.5 MB)",
                checks.len()
            ),
        );
    }
    let mut names = BTreeSet::new();
    let vars = super::checks::sample_variables();
    for (i, c) in checks.iter().enumerate() {
        let at = format!("rollout.analysis.checks[{i}]");
        if !is_name(&c.name) {
            r.add(
                format!("{at}.name"),
                format!(
                    "{:?} is not a check name (letters, digits, `_`, `.`, `-`)",
                    c.name
                ),
            );
        } else if c.name.chars().count() > MAX_NAME_CHARS {
            too_long(r, &format!("{at}.name"), &c.name);
        } else if !names.insert(c.name.as_str()) {
            r.add(
                format!("{at}.name"),
                format!("{:?} is used by another check", c.name),
            );
        }
        match (&c.prometheus, &c.web) {
            (Some(p), None) => {
                url(r, &format!("{at}.prometheus.address"), &p.address, &vars);
                template(r, &format!("{at}.prometheus.query"), &p.query, &vars);
                request_headers(r, &format!("{at}.prometheus"), &p.headers, &p.headers_from);
            }
            (None, Some(w)) => {
                url(r, &format!("{at}.web.url"), &w.url, &vars);
                if let Err(e) = serde_json_path::JsonPath::parse(&w.json_path) {
                    r.add(
                        format!("{at}.web.json_path"),
                        format!(
                            "{:?} is not a JSONPath (RFC 9535, e.g. `$.data.rate`): {e}",
                            w.json_path
                        ),
                    );
                }
                request_headers(r, &format!("{at}.web"), &w.headers, &w.headers_from);
            }
            (None, None) => r.add(at.clone(), "needs a provider: `prometheus` or `web`"),
            (Some(_), Some(_)) => r.add(at.clone(), "has both `prometheus` and `web`; use one"),
        }
        let finite = |v: Option<f64>| v.is_none_or(f64::is_finite);
        match (c.min, c.max) {
            (None, None) => r.add(
                at.clone(),
                "needs `min`, `max` or both: the range that passes",
            ),
            _ if !finite(c.min) || !finite(c.max) => {
                r.add(at.clone(), "`min` and `max` must be finite numbers")
            }
            (Some(min), Some(max)) if min > max => {
                r.add(format!("{at}.min"), format!("{min} is above max {max}"));
            }
            _ => {}
        }
        r.positive(format!("{at}.timeout"), c.timeout);
    }
}

/// A URL template whose rendering is an absolute `http://` or `https://` URL.
fn url(r: &mut Report, path: &str, text: &str, vars: &std::collections::BTreeMap<&str, String>) {
    let rendered = match super::checks::render(text, vars) {
        Ok(t) => t,
        Err(e) => return r.add(path, e),
    };
    match rendered.parse::<http::Uri>() {
        Ok(uri)
            if matches!(uri.scheme_str(), Some("http" | "https")) && uri.authority().is_some() => {}
        _ => r.add(path, format!("{text:?} is not an http:// or https:// URL")),
    }
}

fn template(
    r: &mut Report,
    path: &str,
    text: &str,
    vars: &std::collections::BTreeMap<&str, String>,
) {
    if text.trim().is_empty() {
        r.add(path, "is empty");
    } else if let Err(e) = super::checks::render(text, vars) {
        r.add(path, e);
    }
}

/// What is wrong with the request headers of the query or call at field `at`: its `headers`
/// (names and values as RFC 9110 §5 allows) and its `headers_from` ([`headers_from`]), each
/// problem naming its field under `at` in the spec's snake_case (`rollout.gates[0].headers_from[1].name`).
/// The rules of gates' and checks' headers, for another field that sends a request (session 42:
/// a TrafficShift's `metricsSource.prometheus`).
pub fn request_header_problems(
    at: &str,
    plain: &std::collections::BTreeMap<String, String>,
    from: &[HeaderFrom],
) -> Vec<Problem> {
    let mut r = Report::default();
    request_headers(&mut r, at, plain, from);
    r.0
}

/// `<at>.headers` and `<at>.headers_from`.
fn request_headers(
    r: &mut Report,
    at: &str,
    plain: &std::collections::BTreeMap<String, String>,
    from: &[HeaderFrom],
) {
    headers(r, &format!("{at}.headers"), plain);
    headers_from(r, at, plain, from);
}

fn headers(r: &mut Report, path: &str, headers: &std::collections::BTreeMap<String, String>) {
    for (name, value) in headers {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            r.add(
                format!("{path}.{name}"),
                "is not a header name (RFC 9110 §5.1)",
            );
        } else if http::HeaderValue::from_str(value).is_err() {
            r.add(
                format!("{path}.{name}"),
                "the value has characters a header cannot carry",
            );
        }
    }
}

/// `<at>.headers_from`: at most [`MAX_HEADERS_FROM`] headers, names that are valid, listed once
/// and not also in `headers`; sources that name something (see [`HeaderFrom`]).
fn headers_from(
    r: &mut Report,
    at: &str,
    plain: &std::collections::BTreeMap<String, String>,
    list: &[HeaderFrom],
) {
    if list.len() > MAX_HEADERS_FROM as usize {
        r.add(
            format!("{at}.headers_from"),
            format!("{} headers, at most {MAX_HEADERS_FROM}", list.len()),
        );
    }
    let mut seen = BTreeSet::new();
    for (i, h) in list.iter().enumerate() {
        let path = format!("{at}.headers_from[{i}]");
        let lower = h.name.to_ascii_lowercase();
        if http::HeaderName::from_bytes(h.name.as_bytes()).is_err() {
            r.add(
                format!("{path}.name"),
                format!("{:?} is not a header name (RFC 9110 §5.1)", h.name),
            );
        } else if !seen.insert(lower.clone()) {
            r.add(
                format!("{path}.name"),
                format!("{} is listed twice", h.name),
            );
        } else if plain.keys().any(|k| k.to_ascii_lowercase() == lower) {
            r.add(
                format!("{path}.name"),
                format!("{} is also in {at}.headers: set it in one place", h.name),
            );
        }
        value_from(r, &format!("{path}.value_from"), &h.value_from);
    }
}

/// A `value_from` source that names a file, a variable or a Secret's key well-formed.
fn value_from(r: &mut Report, path: &str, from: &ValueFrom) {
    match from {
        ValueFrom::File(file) if file.as_os_str().is_empty() => {
            r.add(format!("{path}.file"), "must not be empty")
        }
        ValueFrom::Env(name) if name.is_empty() || name.contains(['=', '\0']) => r.add(
            format!("{path}.env"),
            format!("{name:?} is not an environment variable name"),
        ),
        ValueFrom::SecretKeyRef(k) => key_ref(r, &format!("{path}.secret_key_ref"), "Secret", k),
        ValueFrom::ConfigMapKeyRef(k) => {
            key_ref(r, &format!("{path}.config_map_key_ref"), "ConfigMap", k)
        }
        _ => {}
    }
}

/// A `secret_key_ref` or `config_map_key_ref` at `path` naming a `kind` object and key
/// well-formed: a DNS-1123 subdomain, and a key as both kinds allow (core/v1 validation).
fn key_ref(r: &mut Report, path: &str, kind: &str, k: &KeyRef) {
    if !is_dns_subdomain(&k.name) {
        r.add(
            format!("{path}.name"),
            format!("{:?} is not a {kind} name (a DNS-1123 subdomain)", k.name),
        );
    }
    let key_ok = !k.key.is_empty()
        && k.key.len() <= 253
        && k.key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !key_ok {
        r.add(
            format!("{path}.key"),
            format!(
                "{:?} is not a {kind} key (letters, digits, `-`, `_`, `.`)",
                k.key
            ),
        );
    }
}

/// A DNS-1123 subdomain (Kubernetes object names): at most 253 characters, dot-separated labels
/// of lowercase letters, digits and `-`, each starting and ending with a letter or digit.
pub fn is_dns_subdomain(name: &str) -> bool {
    let label = |l: &str| {
        !l.is_empty()
            && l.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    name.len() <= 253 && name.split('.').all(label)
}

/// Local mode reads no Secret and no ConfigMap: a `secret_key_ref` or `config_map_key_ref` in a
/// spec file or a `POST /rollout` is refused.
fn local_sources(r: &mut Report, c: &RolloutConfig) {
    for (at, list) in c.headers_from_lists() {
        for (i, h) in list.iter().enumerate() {
            let (field, kinds) = match h.value_from {
                ValueFrom::SecretKeyRef(_) => ("secret_key_ref", "Secrets"),
                ValueFrom::ConfigMapKeyRef(_) => ("config_map_key_ref", "ConfigMaps"),
                _ => continue,
            };
            r.add(
                format!("{at}.headers_from[{i}].value_from.{field}"),
                format!(
                    "{kinds} are read in Kubernetes mode only (a TrafficShift's headersFrom); \
                     locally use `file` or `env`"
                ),
            );
        }
    }
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
    // An analysis waits for its checks, so a source that hangs for the whole timeout would let
    // the deadline roll back first, naming the step rather than the check (trial 22).
    for (i, check) in c.analysis.checks.iter().enumerate() {
        if too_long(check.timeout) {
            r.add(format!("rollout.analysis.checks[{i}].timeout"), format!("{} leaves no time for an analysis to conclude within rollout.progress_deadline ({shown}): a source that does not answer would end the step by the deadline, not by the check", human(check.timeout)));
        }
    }
}
