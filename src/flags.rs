//! Value parsers for command-line flags that say what they expect in a user's words (trial
//! report 5, F8): `"x" is not a whole number (e.g. 150)`, not std's `invalid digit found in
//! string`; `"x" is not an address: expected IP:port ...`, not `invalid socket address syntax`.
//! Durations are parsed by `crossfade_proxy::duration::parse`.

use std::net::{IpAddr, SocketAddr};

/// The exit status of a usage error: clap's own, for a mistake in the command line.
pub const EXIT_USAGE: u8 = 2;

/// A mistake in the command line found after clap has parsed it: a flag's value that is wrong
/// only together with the others (`demo --steps 50,20`), or a NAME left out. `main` exits with
/// [`EXIT_USAGE`] for it, as clap does for its own usage errors, and 1 for a failure while
/// running (a file that cannot be read, a refused request), so a script tells the two apart
/// (trial 19: demo flag errors exited 1 or 2 by which check found them).
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// `message` as a [`Usage`] error.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Usage(message.into()))
}

/// Whether `error` (or what it wraps) is a [`Usage`] error.
pub fn is_usage(error: &anyhow::Error) -> bool {
    error.downcast_ref::<Usage>().is_some()
}

/// The words for a flag given a negative number (`--wait -1s`, `--rate -5`), which clap reads as
/// an unknown flag (`unexpected argument '-1s'`): `error` is clap's, `args` the command line.
/// `Some("--wait -1s: ...")` when `error` is an unknown argument that starts with `-` and a digit
/// and follows a long flag written without `=`; no flag of crossfade takes a negative value.
/// `name` is the command's (`crossfade status`), whose help says what the flag takes: not
/// always 0 or more, as it said until session 41 (`--wait` takes at least 1s).
/// Not `allow_hyphen_values` on the flags: a forgotten value would then swallow the next flag.
pub fn negative_value(
    error: &clap::Error,
    args: &[std::ffi::OsString],
    name: &str,
) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if error.kind() != ErrorKind::UnknownArgument {
        return None;
    }
    let Some(ContextValue::String(given)) = error.get(ContextKind::InvalidArg) else {
        return None;
    };
    let mut chars = given.chars();
    let negative = chars.next() == Some('-') && chars.next().is_some_and(|c| c.is_ascii_digit());
    if !negative {
        return None;
    }
    // clap names the first short-flag cluster it could not take: `-1` of `-1s`.
    let at =
        (args.iter()).position(|a| a.to_str().is_some_and(|a| a.starts_with(given.as_str())))?;
    let value = args.get(at)?.to_str()?;
    let flag = args.get(at.checked_sub(1)?)?.to_str()?;
    (flag.starts_with("--") && !flag.contains('=')).then(|| {
        format!(
            "{flag} {value}: a negative value, and no value of crossfade's flags can be negative \
             (`{name} --help` says what {flag} takes)"
        )
    })
}

/// The words for a flag's invalid value that came from its environment variable
/// (`CROSSFADE_ADMIN=localhost:9901 crossfade status`), which clap words as if the flag had been
/// given (`invalid value 'localhost:9901' for '--admin <ADMIN>'`), leaving the user looking for a
/// flag they never typed (trial 32, H). `Some` when `error` is an invalid value for a long flag
/// that `command` (or one of its subcommands) reads from an environment variable, the flag is
/// not on the command line `args`, and the variable holds that value:
/// `CROSSFADE_ADMIN=localhost:9901 (the environment variable of --admin): <clap's reason>`.
pub fn from_environment(
    error: &clap::Error,
    command: &clap::Command,
    args: &[std::ffi::OsString],
) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(
        error.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        return None;
    }
    let (Some(ContextValue::String(arg)), Some(ContextValue::String(value))) = (
        error.get(ContextKind::InvalidArg),
        error.get(ContextKind::InvalidValue),
    ) else {
        return None;
    };
    let long = arg.strip_prefix("--")?.split([' ', '=']).next()?;
    let typed = args.iter().filter_map(|a| a.to_str()).any(|a| {
        a.strip_prefix("--")
            .is_some_and(|a| a == long || a.starts_with(&format!("{long}=")))
    });
    if typed {
        return None;
    }
    let mut commands = vec![command];
    while let Some(c) = commands.pop() {
        commands.extend(c.get_subcommands());
        let found = c
            .get_arguments()
            .find(|a| a.get_long() == Some(long))
            .and_then(|a| a.get_env())
            .and_then(|name| name.to_str());
        let Some(name) = found else { continue };
        if std::env::var(name).ok().as_deref() != Some(value.as_str()) {
            continue;
        }
        let rendered = error.render().to_string();
        let reason = rendered
            .lines()
            .next()
            .and_then(|l| l.split_once(&format!("'{arg}'")).map(|(_, r)| r))
            .map(|r| r.trim_start_matches(':').trim())
            .filter(|r| !r.is_empty())
            .unwrap_or("not a valid value");
        return Some(format!(
            "{name}={value} (the environment variable of --{long}): {reason}"
        ));
    }
    None
}

/// The (sub)command that the command line `args` names, within `command` (the top-level one,
/// built): `crossfade run spec.yaml --linger -5s` names `run`. An error that `main` words after
/// clap refused `args` is made by this command, so that it ends with this command's usage, as
/// clap's own errors do (`Usage: crossfade run [OPTIONS] <SPEC>`), not the top-level usage
/// (session 41). Walks `args` after the program name: a subcommand's name (or alias) goes down
/// one level, the value of a long option that takes one (`--log info`) is skipped; `command`
/// itself when no subcommand is named.
pub fn named_command<'a>(
    command: &'a mut clap::Command,
    args: &[std::ffi::OsString],
) -> &'a mut clap::Command {
    let mut path: Vec<String> = Vec::new();
    let mut current: &clap::Command = command;
    let mut words = args.iter().skip(1).filter_map(|a| a.to_str());
    while let Some(word) = words.next() {
        if word == "--" {
            break;
        }
        if let Some(long) = word.strip_prefix("--") {
            let takes_value = !long.contains('=')
                && current.get_arguments().any(|a| {
                    a.get_long() == Some(long) && a.get_num_args().is_some_and(|n| n.takes_values())
                });
            if takes_value {
                words.next();
            }
            continue;
        }
        if word.starts_with('-') {
            continue;
        }
        match current.find_subcommand(word) {
            Some(sub) => {
                path.push(sub.get_name().to_owned());
                current = sub;
            }
            None => break,
        }
    }
    let mut found = command;
    for name in &path {
        found = found
            .find_subcommand_mut(name)
            .expect("a subcommand found above");
    }
    found
}

/// The words for a short flag that `command` (the subcommand `args` name, see
/// [`named_command`]) does not have, which clap words with a tip that leads nowhere (`to pass
/// '-f' as a value, use '-- -f'`): `crossfade abort -f` reads as `--force` abbreviated, but
/// crossfade's flags are long ones (session 41). `Some` when `error` is clap's unknown-argument
/// error for a single letter after one dash (`-f`; not a negative number, see
/// [`negative_value`]): `-f is not a flag of `crossfade abort` (its short flags: -n, -h); did
/// you mean --force?`, naming the long flags that start with that letter, or saying where they
/// are listed when none does.
pub fn unknown_short_flag(error: &clap::Error, command: &clap::Command) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if error.kind() != ErrorKind::UnknownArgument {
        return None;
    }
    let Some(ContextValue::String(given)) = error.get(ContextKind::InvalidArg) else {
        return None;
    };
    let mut chars = given.strip_prefix('-')?.chars();
    let letter = chars.next().filter(char::is_ascii_alphabetic)?;
    if chars.next().is_some() {
        return None;
    }
    let visible = || command.get_arguments().filter(|a| !a.is_hide_set());
    let mut shorts: Vec<String> = visible()
        .filter_map(clap::Arg::get_short)
        .map(|s| format!("-{s}"))
        .collect();
    shorts.sort_by_key(|s| s == "-h" || s == "-V");
    let longs: Vec<String> = visible()
        .filter_map(clap::Arg::get_long)
        .filter(|l| l.starts_with(letter.to_ascii_lowercase()))
        .map(|l| format!("--{l}"))
        .collect();
    let name = command
        .get_bin_name()
        .map_or_else(|| command.get_name().to_owned(), ToOwned::to_owned);
    let shorts = match shorts.as_slice() {
        [] => "it has no short flags".to_owned(),
        [one] => format!("its only short flag is {one}"),
        more => format!("its short flags: {}", more.join(", ")),
    };
    let instead = match longs.as_slice() {
        [] => format!("`{name} --help` lists its flags"),
        [one] => format!("did you mean {one}?"),
        more => format!("did you mean one of {}?", more.join(", ")),
    };
    Some(format!(
        "{given} is not a flag of `{name}` ({shorts}); {instead}"
    ))
}

/// The unsigned integer types a whole-number flag takes, each with its largest value, which the
/// error for a larger number names (session 42: `--port 99999` said "too large for this flag").
pub trait Whole: TryFrom<u64> {
    /// The largest value of the type.
    const MAX: u64;
}

impl Whole for u16 {
    const MAX: u64 = u16::MAX as u64;
}

impl Whole for u32 {
    const MAX: u64 = u32::MAX as u64;
}

impl Whole for u64 {
    const MAX: u64 = u64::MAX;
}

/// A whole number for a flag of type `T` (`--latency 50`).
///
/// # Errors
/// `"x" is not a whole number (e.g. 150)`, a negative number, or `<n> is above <max>, the
/// largest this flag takes`.
pub fn whole<T: Whole>(text: &str) -> Result<T, String> {
    let trimmed = text.trim();
    if trimmed.starts_with('-') && trimmed[1..].chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("{text:?}: a whole number cannot be negative"));
    }
    if trimmed.is_empty() || !trimmed.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("{text:?} is not a whole number (e.g. 150)"));
    }
    trimmed
        .parse::<u64>()
        .ok()
        .and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| format!("{trimmed} is above {}, the largest this flag takes", T::MAX))
}

/// A TCP port to listen on (`crossfade sample-app --port`): 1 to 65535, or 0 for a free one that
/// the system picks.
///
/// # Errors
/// As [`whole`], and `<n> is not a port: ...` naming the range for a number above 65535.
pub fn port(text: &str) -> Result<u16, String> {
    let n = whole::<u64>(text)?;
    u16::try_from(n).map_err(|_| {
        format!("{n} is not a port: write 1 to 65535, or 0 for a free port the system picks")
    })
}

/// [`whole`] within `range` (`--rate`, `--workers`).
///
/// # Errors
/// As [`whole`], and `<n> is outside <lo> to <hi>, the range this flag takes` (in an operator's
/// words, as [`whole`] names the largest value; until session 42 it was Rust's `<lo>..=<hi>`),
/// also for a number too large for any whole-number flag.
pub fn whole_in<T>(text: &str, range: std::ops::RangeInclusive<T>) -> Result<T, String>
where
    T: TryFrom<u64> + Into<u64> + Copy + std::fmt::Display,
{
    let (lo, hi) = ((*range.start()).into(), (*range.end()).into());
    let outside = |n: &str| {
        let said = crossfade_proxy::shown::outside(n, range.start(), range.end(), "");
        format!("{said}, the range this flag takes")
    };
    let trimmed = text.trim();
    let n = match whole::<u64>(text) {
        Ok(n) => n,
        // Digits only, and still refused: above u64's largest, and so above the range's.
        Err(_) if !trimmed.is_empty() && trimmed.chars().all(|c| c.is_ascii_digit()) => {
            return Err(outside(trimmed))
        }
        Err(e) => return Err(e),
    };
    match T::try_from(n) {
        Ok(value) if (lo..=hi).contains(&n) => Ok(value),
        _ => Err(outside(&n.to_string())),
    }
}

/// An `IP:port` socket address (`127.0.0.1:9901`, `[::1]:9901`); host names are not resolved.
///
/// # Errors
/// `"x" is not an address: expected IP:port such as 127.0.0.1:9901 (host names are not resolved)`.
pub fn address(text: &str) -> Result<SocketAddr, String> {
    text.trim()
        .parse()
        .map_err(|_| crossfade_proxy::de::not_an_address(text, "127.0.0.1:9901"))
}

/// `--admin` of a command that reaches a running instance's admin API (`status`, `pause`,
/// `migrate`, `report`, ...): an [`address`] with a port other than 0. Port 0 binds a free port
/// (`run --admin 127.0.0.1:0`) but is never one to connect to: `status --admin 127.0.0.1:0`
/// tried and said "Connection refused" (session 42).
///
/// # Errors
/// As [`address`], and `<addr>: port 0 is no address to reach ...` naming the port to give.
pub fn admin_to_reach(text: &str) -> Result<SocketAddr, String> {
    let addr = address(text)?;
    match addr.port() {
        0 => Err(format!(
            "{addr}: port 0 is no address to reach (given to `run`, `proxy` or `demo`, it binds a \
             free port, which their log names): give the admin API's port, e.g. {}:9901",
            match addr.ip() {
                IpAddr::V6(_) => format!("[{}]", addr.ip()),
                IpAddr::V4(_) => addr.ip().to_string(),
            }
        )),
        _ => Ok(addr),
    }
}

/// An IP address (`127.0.0.1`, `::`).
///
/// # Errors
/// `"x" is not an IP address (e.g. 127.0.0.1 or 0.0.0.0)`.
pub fn ip(text: &str) -> Result<IpAddr, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("{text:?} is not an IP address (e.g. 127.0.0.1 or 0.0.0.0)"))
}

/// The shortest `--wait` of a `--kube` command: the controller acts on an annotation within a
/// watch event and a reconcile, well under a second when it runs.
pub const MIN_COMMAND_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// `--wait` of `crossfade pause|resume|promote|abort|retry --kube`: a duration of at least
/// [`MIN_COMMAND_WAIT`]. `0s` wrote the annotation (the command was given) and at once said that
/// no controller acted on it "within 0ns", asking whether one runs, and exited 1 (trial 20).
///
/// # Errors
/// The duration parser's message, or `0s leaves the controller no time to act ...`.
pub fn command_wait(text: &str) -> Result<std::time::Duration, String> {
    duration_at_least(
        text,
        MIN_COMMAND_WAIT,
        "leaves the controller no time to act on the command, which is given either way",
        "30s",
    )
}

/// `text` as a duration of at least `min`; below it, `"{text} {why}: give at least {min}s
/// (default {default})"`.
fn duration_at_least(
    text: &str,
    min: std::time::Duration,
    why: &str,
    default: &str,
) -> Result<std::time::Duration, String> {
    let d = crossfade_proxy::duration::parse(text)?;
    if d < min {
        return Err(format!(
            "{text} {why}: give at least {}s (default {default})",
            min.as_secs()
        ));
    }
    Ok(d)
}

/// The shortest `--stale-lease-after` of `crossfade controller --kube`: four proxy Lease
/// durations (15 s) past expiry, so that a replica that missed a few renewals (an API server
/// restart) is not swept while it comes back.
pub const MIN_STALE_LEASE_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// `--stale-lease-after`: how long past its expiry a proxy Lease is kept before the leader
/// deletes it (`crossfade_controller::kube::stale_leases`), at least [`MIN_STALE_LEASE_AFTER`].
///
/// # Errors
/// The duration parser's message, or `... would sweep the Lease of a replica that missed a few
/// renewals ...`.
pub fn stale_lease_after(text: &str) -> Result<std::time::Duration, String> {
    duration_at_least(
        text,
        MIN_STALE_LEASE_AFTER,
        "would delete the Lease of a proxy replica that only missed a few renewals (it renews \
         every 5s on a 15s duration)",
        "1h",
    )
}

/// The shortest `--stale-lease-sweep` of `crossfade controller --kube`: each sweep lists the
/// proxy Leases of every namespace read, for Leases that go stale an hour apart.
pub const MIN_STALE_LEASE_SWEEP: std::time::Duration = std::time::Duration::from_secs(10);

/// `--stale-lease-sweep`: how often the leader looks for stale proxy Leases, at least
/// [`MIN_STALE_LEASE_SWEEP`].
///
/// # Errors
/// The duration parser's message, or `... lists every namespace's proxy Leases too often ...`.
pub fn stale_lease_sweep(text: &str) -> Result<std::time::Duration, String> {
    duration_at_least(
        text,
        MIN_STALE_LEASE_SWEEP,
        "would list every namespace's proxy Leases too often for Leases that go stale an hour \
         apart",
        "10m",
    )
}

/// The shortest `--upgrade-timeout` of `crossfade proxy`: a process that SIGUSR2 starts reads its
/// config and raises its open-file limit before it connects, and a deadline below this would kill
/// healthy ones on a loaded machine.
pub const MIN_UPGRADE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// `--upgrade-timeout`: a duration of at least [`MIN_UPGRADE_TIMEOUT`].
///
/// # Errors
/// The duration parser's message, or `... too short for a new process to start ...`.
pub fn upgrade_timeout(text: &str) -> Result<std::time::Duration, String> {
    duration_at_least(
        text,
        MIN_UPGRADE_TIMEOUT,
        "is too short for a new process to start and connect (it would be killed while it \
         reads its config)",
        "60s",
    )
}

/// A Kubernetes namespace (`--namespace`, `--lease-namespace`, `--proxy-namespace`): a DNS-1123
/// label, lower-case letters, digits and `-`, at most 63 (Kubernetes API conventions, "Names").
/// `Default` was accepted, and a controller watched a namespace no object can be in, finding
/// nothing, with no word (trial 20).
///
/// # Errors
/// `"Default" cannot be a namespace (...); did you mean `default`?`.
pub fn namespace(text: &str) -> Result<String, String> {
    let label = |t: &str| t.len() <= 63 && !t.contains('.') && is_name(t);
    named(
        text,
        "a namespace (lower-case letters, digits and `-`, at most 63)",
        &label,
    )
}

/// A Kubernetes object's name (`--lease-name`): a DNS-1123 subdomain, lower-case letters,
/// digits, `-` and `.`, at most 253. A name the API server refuses would fail every write of the
/// Lease, and the controller would never lead.
///
/// # Errors
/// `"Bad Name" cannot be a Kubernetes object's name (...)`.
pub fn object_name(text: &str) -> Result<String, String> {
    named(
        text,
        "a Kubernetes object's name (lower-case letters, digits, `-` and `.`, at most 253)",
        &is_name,
    )
}

/// Longest `--identity`, in bytes: it is each Event's `reportingInstance`, which the API server
/// refuses past 128 (Kubernetes' `ReportingInstanceLengthLimit`, events.k8s.io/v1).
pub const MAX_IDENTITY: usize = 128;

/// A leader-election identity (`--identity`): any text but an empty or blank one, which a Lease
/// reads as "no holder", so that two such replicas could both act, and at most [`MAX_IDENTITY`]
/// bytes (a longer one had every Event of the controller refused, trial 30).
///
/// # Errors
/// `"" cannot be an identity: ...`, `--identity is 129 bytes long, ...`.
pub fn identity(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        return Err(format!(
            "{text:?} cannot be an identity: a Lease with an empty holder has none, so two \
             replicas could both act (default: env POD_NAME, else the host name and pid)"
        ));
    }
    if text.len() > MAX_IDENTITY {
        return Err(format!(
            "the identity is {} bytes long, more than {MAX_IDENTITY}: it names this replica in \
             its Events (reportingInstance), which the API server refuses past {MAX_IDENTITY} \
             bytes, so no Event would be published",
            text.len()
        ));
    }
    Ok(text.to_owned())
}

/// `crossfade proxy --kube --admin-url`: where the controller scrapes this replica
/// (`<URL>/metrics`), so an absolute `http://` or `https://` URL with a host and no query or
/// fragment. Anything else was written to the Lease as given, and every scrape of the replica
/// failed (trial 20: `not a url` was accepted).
///
/// Returns the URL to write to the Lease: without the surrounding whitespace the check ignores
/// (it was written as given, `" http://10.0.0.7:9901"`, and every scrape failed) and without a
/// trailing `/` (`http://10.0.0.7:9901/` was scraped at `//metrics`).
///
/// # Errors
/// `"x" is not an http:// or https:// URL with a host (e.g. http://10.0.0.7:9901)`, or that it
/// has a query or fragment.
pub fn admin_url(text: &str) -> Result<String, String> {
    let example = "e.g. http://10.0.0.7:9901; the controller scrapes <URL>/metrics";
    let uri: http::Uri = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not an http:// or https:// URL ({example})"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(format!(
            "{text:?} is not an http:// or https:// URL with a host ({example})"
        ));
    }
    if uri.query().is_some() || text.contains('#') {
        return Err(format!(
            "{text:?} has a query or fragment, which <URL>/metrics cannot carry ({example})"
        ));
    }
    Ok(text.trim().trim_end_matches('/').to_owned())
}

fn is_name(text: &str) -> bool {
    crossfade_controller::spec::is_dns_subdomain(text)
}

/// `text` when `valid`, else why not, with its lower-case spelling when that one is valid.
fn named(text: &str, what: &str, valid: &dyn Fn(&str) -> bool) -> Result<String, String> {
    if valid(text) {
        return Ok(text.to_owned());
    }
    let lowered = text.to_ascii_lowercase();
    let hint = if lowered != text && valid(&lowered) {
        format!("; did you mean `{lowered}`?")
    } else {
        String::new()
    };
    Err(format!("{text:?} cannot be {what}{hint}"))
}

/// The shortest `--lease-duration`: a leader renews every 2/15 of it and stops acting after 2/3 of
/// it without a renewal, so below a few seconds one slow API answer ends its leadership.
pub const MIN_LEASE_DURATION: std::time::Duration = std::time::Duration::from_secs(3);

/// A leader-election lease duration (`15s`, `1m`): whole seconds, since the Lease stores
/// `leaseDurationSeconds`, and at least [`MIN_LEASE_DURATION`].
///
/// # Errors
/// The duration parser's message, or `0s is below the minimum of 3s ...`, `1.5s is not whole
/// seconds ...`.
pub fn lease_duration(text: &str) -> Result<std::time::Duration, String> {
    let d = crossfade_proxy::duration::parse(text)?;
    if d < MIN_LEASE_DURATION {
        return Err(format!(
            "{text} is below the minimum of {}s (the leader renews every 2/15 of it and stops \
             acting after 2/3 of it without a renewal)",
            MIN_LEASE_DURATION.as_secs()
        ));
    }
    if d.subsec_nanos() != 0 {
        return Err(format!(
            "{text} is not whole seconds (the Lease stores leaseDurationSeconds)"
        ));
    }
    Ok(d)
}

/// Parses where an HTML report goes (`demo --report`, `report --output`): a file path that can
/// be written once the report is drawn, so a mistake (a directory, a missing parent directory) is
/// a usage error (exit 2) before anything runs, naming the path (trial 22, finding 13: `report -o
/// DIR` failed only after fetching, with exit 1). [`STDOUT_PATH`] (`-`) is standard output.
pub fn report_file(text: &str) -> Result<std::path::PathBuf, String> {
    if text == STDOUT_PATH {
        return Ok(text.into());
    }
    if text.is_empty() {
        return Err(
            "an empty path names no file; give a file to write the report to, e.g. report.html"
                .into(),
        );
    }
    let path = std::path::PathBuf::from(text);
    // Trial 25: `r.html/` (not a directory yet) passed, and the write failed after the demo.
    if crossfade_proxy::files::names_a_directory(&path) && !path.is_dir() {
        return Err(format!(
            "{} names a directory, not a file; give a file to write the report to, e.g. {}",
            path.display(),
            path.join("report.html").display()
        ));
    }
    if path.is_dir() {
        return Err(format!(
            "{} is a directory; give a file to write the report to, e.g. {}",
            path.display(),
            path.join("report.html").display()
        ));
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent.filter(|p| !p.is_dir()) {
        return Err(format!(
            "the directory {} of {} does not exist",
            parent.display(),
            path.display()
        ));
    }
    if let Some(what) = crossfade_file(&path) {
        return Err(format!(
            "{} is {what}: the report would replace what it holds; give the report a file of \
             its own, e.g. report.html",
            path.display()
        ));
    }
    writable(&path)?;
    Ok(path)
}

/// What an existing `path` is when it is one of crossfade's own files, which a report written
/// over it would destroy: a spec, a proxy config or rollout file ([`file_kind::settings_file`]),
/// a state file of either command or its backup ([`file_kind::state_kind`]), a state file's
/// child journal (`<state_file>.children`), or a PEM certificate or key (`tls.cert`). User37:
/// `crossfade report --state state.json -o state.json` replaced the state file of a running
/// `crossfade run` with the page.
///
/// [`file_kind::settings_file`]: crate::file_kind::settings_file
/// [`file_kind::state_kind`]: crate::file_kind::state_kind
fn crossfade_file(path: &std::path::Path) -> Option<&'static str> {
    let text = crossfade_proxy::files::read_config_string(path).ok()?;
    if let Some(kind) = crate::file_kind::settings_file(&text) {
        return Some(kind);
    }
    if let Some(kind) = crate::file_kind::state_kind(&text) {
        return Some(kind.described());
    }
    // A page (an earlier report) never counts as PEM, whatever text its events quote.
    let page = text.trim_start().starts_with('<');
    if !page && text.lines().any(|line| line.starts_with("-----BEGIN ")) {
        return Some("a PEM file (a TLS certificate or key, such as a config's tls.cert)");
    }
    let doc: serde_json::Value = serde_json::from_str(&text).ok()?;
    let journal = doc.get("version").is_some() && doc.get("children").is_some_and(|c| c.is_array());
    journal
        .then_some("the child journal of a `crossfade run` state file (the processes it started)")
}

/// Whether the report file `path` can be written: opened for appending (an existing file is not
/// changed) and, when this made it, removed again. Session 32: `demo --report /sys/r.html` (no
/// permission there) ran the whole demo and failed at its end, with exit 1.
/// The `--output` that means standard output (`crossfade report -o - | gzip`), as most tools
/// read it; until session 42 it wrote a file named `-`.
pub const STDOUT_PATH: &str = "-";

/// [`report_file`] for `demo --report`, whose standard output carries the demo's summary: `-`
/// is refused there.
///
/// # Errors
/// As [`report_file`], and for `-`.
pub fn demo_report_file(text: &str) -> Result<std::path::PathBuf, String> {
    if text == STDOUT_PATH {
        return Err(
            "`-` (standard output) carries the demo's summary; give the report a file, e.g. \
             report.html"
                .into(),
        );
    }
    report_file(text)
}

fn writable(path: &std::path::Path) -> Result<(), String> {
    let existed = path.exists();
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| format!("cannot write the report to {}: {e}", path.display()))?;
    if !existed {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Session 42: the stale proxy Lease bound and sweep period were fields only; as flags their
    /// defaults parse and a value below the minimum says why and what to give.
    #[test]
    fn stale_lease_flags_take_their_defaults_and_refuse_too_short_values() {
        let secs = std::time::Duration::from_secs;
        assert_eq!(stale_lease_after("1h"), Ok(secs(3600)));
        assert_eq!(stale_lease_sweep("10m"), Ok(secs(600)));
        let short = stale_lease_after("30s").unwrap_err();
        assert!(
            short.starts_with("30s would delete the Lease of a proxy replica"),
            "{short}"
        );
        assert!(short.ends_with("give at least 60s (default 1h)"), "{short}");
        let often = stale_lease_sweep("1s").unwrap_err();
        assert!(
            often.ends_with("give at least 10s (default 10m)"),
            "{often}"
        );
        assert!(stale_lease_sweep("soon").is_err());
    }

    #[test]
    fn flag_values_are_refused_in_words() {
        assert_eq!(whole::<u16>("8080"), Ok(8080));
        assert_eq!(
            whole::<u16>("x"),
            Err("\"x\" is not a whole number (e.g. 150)".into())
        );
        assert_eq!(
            whole::<u16>("1.5"),
            Err("\"1.5\" is not a whole number (e.g. 150)".into())
        );
        assert_eq!(
            whole::<u16>("-1"),
            Err("\"-1\": a whole number cannot be negative".into())
        );
        assert_eq!(
            whole::<u32>("4294967296"),
            Err("4294967296 is above 4294967295, the largest this flag takes".into())
        );
        assert_eq!(
            whole::<u64>("99999999999999999999"),
            Err(
                "99999999999999999999 is above 18446744073709551615, the largest this flag takes"
                    .into()
            )
        );
        assert_eq!(report_file("-"), Ok("-".into()));
        assert!(demo_report_file("-")
            .unwrap_err()
            .contains("carries the demo's summary"));
        assert_eq!(port("0"), Ok(0));
        assert_eq!(port("65535"), Ok(65535));
        assert_eq!(
            port("99999"),
            Err(
                "99999 is not a port: write 1 to 65535, or 0 for a free port the system picks"
                    .into()
            )
        );
        assert_eq!(
            address("127.0.0.1:9901"),
            Ok(SocketAddr::from(([127, 0, 0, 1], 9901)))
        );
        assert!(address("localhost:9901")
            .unwrap_err()
            .contains("expected IP:port"));
        assert!(ip("x").unwrap_err().contains("is not an IP address"));
        let workers = |text: &str| whole_in(text, 1..=1024u16);
        for n in ["0", "1025", "100000", "99999999999999999999"] {
            assert_eq!(
                workers(n),
                Err(format!(
                    "{n} is outside 1 to 1024, the range this flag takes"
                ))
            );
        }
        assert_eq!(workers("8"), Ok(8));
        assert_eq!(workers("1024"), Ok(1024));
        assert!(workers("x").unwrap_err().contains("is not a whole number"));
        assert_eq!(
            admin_to_reach("127.0.0.1:9901"),
            Ok(SocketAddr::from(([127, 0, 0, 1], 9901)))
        );
        assert_eq!(
            admin_to_reach("127.0.0.1:0"),
            Err(
                "127.0.0.1:0: port 0 is no address to reach (given to `run`, `proxy` or `demo`, \
                 it binds a free port, which their log names): give the admin API's port, e.g. \
                 127.0.0.1:9901"
                    .into()
            )
        );
        assert!(admin_to_reach("localhost:9901")
            .unwrap_err()
            .contains("expected IP:port"));
    }

    #[test]
    fn kubernetes_names_are_checked_before_any_request() {
        assert_eq!(namespace("shop"), Ok("shop".into()));
        assert_eq!(
            namespace("Default"),
            Err(
                "\"Default\" cannot be a namespace (lower-case letters, digits and `-`, at most \
                 63); did you mean `default`?"
                    .into()
            )
        );
        assert!(namespace("a.b").is_err());
        assert!(namespace("").is_err());
        assert!(namespace(&"a".repeat(64)).is_err());
        assert_eq!(
            object_name("crossfade-controller"),
            Ok("crossfade-controller".into())
        );
        assert!(object_name("a.b").is_ok());
        assert!(object_name("Bad Name")
            .unwrap_err()
            .starts_with("\"Bad Name\" cannot be a Kubernetes object's name"));
        assert!(identity("").is_err());
        assert!(identity("  ").is_err());
        assert_eq!(identity("pod-1"), Ok("pod-1".into()));
        let longest = "i".repeat(MAX_IDENTITY);
        assert_eq!(identity(&longest), Ok(longest.clone()));
        assert!(identity(&format!("{longest}i"))
            .unwrap_err()
            .starts_with("the identity is 129 bytes long, more than 128: it names this replica"));
    }

    #[test]
    fn an_admin_url_is_an_http_url_with_a_host() {
        for (ok, stored) in [
            ("http://10.0.0.7:9901", "http://10.0.0.7:9901"),
            (
                "https://proxy.example/admin/",
                "https://proxy.example/admin",
            ),
            ("http://[::1]:9901", "http://[::1]:9901"),
            // Stored as checked: the Lease got the spaces, and the scrapes `//metrics`.
            (" http://10.0.0.7:9901/\n", "http://10.0.0.7:9901"),
        ] {
            assert_eq!(admin_url(ok).as_deref(), Ok(stored), "{ok:?}");
        }
        for (bad, why) in [
            ("not a url", "is not an http:// or https:// URL"),
            ("10.0.0.7:9901", "is not an http:// or https:// URL"),
            (
                "ftp://10.0.0.7",
                "is not an http:// or https:// URL with a host",
            ),
            ("http://10.0.0.7:9901?x=1", "has a query or fragment"),
            ("http://10.0.0.7:9901#x", "has a query or fragment"),
        ] {
            let e = admin_url(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn a_command_wait_is_at_least_a_second() {
        assert_eq!(command_wait("30s"), Ok(std::time::Duration::from_secs(30)));
        assert_eq!(command_wait("1s"), Ok(MIN_COMMAND_WAIT));
        for text in ["0s", "999ms"] {
            let e = command_wait(text).unwrap_err();
            assert!(
                e.starts_with(&format!("{text} leaves the controller no time")),
                "{e}"
            );
        }
        assert!(command_wait("soon").is_err());
    }

    #[test]
    fn a_lease_duration_is_whole_seconds_and_at_least_three() {
        // Trial 10, K20: 0s was accepted and written as leaseDurationSeconds 1.
        assert_eq!(
            lease_duration("15s"),
            Ok(std::time::Duration::from_secs(15))
        );
        assert_eq!(lease_duration("3s"), Ok(MIN_LEASE_DURATION));
        assert!(lease_duration("0s")
            .unwrap_err()
            .starts_with("0s is below the minimum of 3s"));
        assert!(lease_duration("2999ms")
            .unwrap_err()
            .contains("below the minimum"));
        assert!(lease_duration("3500ms")
            .unwrap_err()
            .contains("is not whole seconds"));
        assert!(lease_duration("soon").is_err());
    }

    /// check32: `report -o ''` said ` names a directory, not a file` (an empty name first).
    #[test]
    fn an_empty_report_file_is_refused_in_words() {
        assert_eq!(
            report_file(""),
            Err(
                "an empty path names no file; give a file to write the report to, e.g. \
                 report.html"
                    .into()
            )
        );
    }

    #[test]
    fn an_upgrade_timeout_is_at_least_one_second() {
        assert_eq!(
            upgrade_timeout("60s"),
            Ok(std::time::Duration::from_secs(60))
        );
        assert_eq!(upgrade_timeout("1s"), Ok(MIN_UPGRADE_TIMEOUT));
        assert!(upgrade_timeout("0s")
            .unwrap_err()
            .starts_with("0s is too short for a new process to start"));
        assert!(upgrade_timeout("999ms").is_err());
        assert!(upgrade_timeout("soon").is_err());
    }

    /// The subcommand a command line names, past a global option's value that spells another
    /// subcommand's name (`--log run`) and past `=` forms; the top-level command when none.
    #[test]
    fn the_named_command_is_found_past_option_values() {
        let mut command = clap::Command::new("crossfade")
            .arg(clap::Arg::new("log").long("log").global(true))
            .subcommand(clap::Command::new("run").arg(clap::Arg::new("spec")))
            .subcommand(clap::Command::new("status"));
        command.build();
        let named = |command: &mut clap::Command, line: &[&str]| {
            let args: Vec<std::ffi::OsString> = line.iter().map(Into::into).collect();
            named_command(command, &args).get_name().to_owned()
        };
        assert_eq!(named(&mut command, &["crossfade", "run", "x"]), "run");
        assert_eq!(
            named(&mut command, &["crossfade", "--log", "run", "status"]),
            "status"
        );
        assert_eq!(
            named(&mut command, &["crossfade", "--log=info", "status", "run"]),
            "status"
        );
        assert_eq!(named(&mut command, &["crossfade", "-x"]), "crossfade");
        assert_eq!(
            named(&mut command, &["crossfade", "--", "run"]),
            "crossfade"
        );
    }
}
