//! Flags that do nothing in the mode a command runs in are refused (trial 8, H4): `crossfade proxy
//! CONFIG --admin ADDR` used to start on the file's admin address without a word, so an operator
//! who moved the admin port by flag found it on the old one.
//!
//! clap's `requires = "kube"` cannot say this: a `bool` flag has a default value (`false`), and
//! clap counts a default as present, so `requires` never fires. `conflicts_with` would refuse a
//! value that came from the environment too (`POD_NAME`, `CROSSFADE_NAMESPACE`, set for a whole
//! pod or shell), where it is a default and not a request. So the check is made here, on the
//! parsed matches, and only for values given on the command line
//! ([`clap::parser::ValueSource::CommandLine`]).

use clap::parser::ValueSource;
use clap::ArgMatches;

/// A flag that one mode of a subcommand does not use: its argument id (the field name), its
/// spelling on the command line, and what to do instead.
struct Unused {
    id: &'static str,
    flag: &'static str,
    instead: &'static str,
}

/// `crossfade proxy CONFIG`: the flags of `crossfade proxy --kube`.
const PROXY_CONFIG: &[Unused] = &[
    Unused {
        id: "listen",
        flag: "--listen",
        instead: "set `listen:` in CONFIG",
    },
    Unused {
        id: "admin",
        flag: "--admin",
        instead: "set `admin:` in CONFIG",
    },
    Unused {
        id: "settings",
        flag: "--config",
        instead: "CONFIG holds the settings",
    },
    Unused {
        id: "route",
        flag: "--route",
        instead: "CONFIG's `routes:` are the routes",
    },
    Unused {
        id: "namespace",
        flag: "--namespace",
        instead: "CONFIG's `routes:` are the routes",
    },
    Unused {
        id: "kubeconfig",
        flag: "--kubeconfig",
        instead: "CONFIG's `routes:` are the routes",
    },
    Unused {
        id: "replica",
        flag: "--replica",
        instead: "a proxy with CONFIG has no Lease",
    },
    Unused {
        id: "lease_namespace",
        flag: "--lease-namespace",
        instead: "a proxy with CONFIG has no Lease",
    },
    Unused {
        id: "admin_url",
        flag: "--admin-url",
        instead: "a proxy with CONFIG has no Lease",
    },
    Unused {
        id: "shutdown_delay",
        flag: "--shutdown-delay",
        instead: "a proxy with CONFIG drains at once on SIGTERM (`drain_timeout` in CONFIG)",
    },
];

/// `crossfade status|pause|resume|promote|abort` against a running `crossfade run`: the flag
/// only `--kube` uses.
const ADMIN_MODE: &[Unused] = &[Unused {
    id: "wait",
    flag: "--wait",
    instead: "the admin API acts before it answers",
}];

/// The same commands with `--kube` or as `kubectl crossfade`: the flags of the admin API
/// mode.
const KUBE_MODE: &[Unused] = &[
    Unused {
        id: "admin",
        flag: "--admin",
        instead: "leave out --kube and NAME to talk to a running `crossfade run`",
    },
    Unused {
        id: "admin_token_file",
        flag: "--admin-token-file",
        instead: "the cluster's credentials come from the kubeconfig",
    },
    Unused {
        id: "json",
        flag: "--json",
        instead: "use `kubectl get trafficshift NAME -o json`",
    },
];

/// `crossfade pause web` without `--kube` (trial 12, M3): the NAME form is the cluster's, and a
/// name alone used to send the command to Kubernetes, whose kubeconfig error a local user could
/// not act on. It is refused (a clap usage error, exit code 2) saying both ways: the running
/// `crossfade run` at `--admin` (its address, which takes no name) and `--kube NAME` for a
/// TrafficShift; `retry`, which has no local form, points at `crossfade migrate FILE`. A NAME
/// that is a socket address is said to belong after `--admin`; one that no TrafficShift can
/// have is said so ([`crate::cluster::name_problem`]) rather than suggested with `--kube`.
/// `None` when no NAME was given.
fn name_without_kube(
    command: &mut clap::Command,
    verb: &str,
    sub: &ArgMatches,
) -> Option<clap::Error> {
    let given = sub.try_get_one::<String>("name").ok().flatten()?;
    // A NAME no TrafficShift can have (`Web_1`, `-f` after `--`) is not suggested with --kube,
    // which would refuse it (session 41).
    let cluster = match crate::cluster::name_problem(given, None) {
        None => format!(
            "for a TrafficShift named {given} in a cluster, give --kube: `crossfade {verb} --kube \
             {given}`"
        ),
        Some(problem) => format!("nor with --kube: {problem}"),
    };
    // An address given where the NAME goes (`crossfade abort 10.0.0.5:9901`): the address was
    // meant for --admin. The generic hint named the default address instead, and a copied
    // command acted on another instance (trial 28).
    let address = given.parse::<std::net::SocketAddr>().ok();
    let message = if let (Some(address), false) = (address, verb == "retry") {
        format!(
            "`crossfade {verb} {given}` without --kube: {given} is an address, and `crossfade \
             {verb}` takes the admin API's address as --admin, not as a NAME: `crossfade {verb} \
             --admin {address}` (or CROSSFADE_ADMIN={address})"
        )
    } else if verb == "retry" {
        format!(
            "`crossfade retry {given}` without --kube: a running `crossfade run` has no retry; \
             start its rollout again with `crossfade migrate FILE` (a file with `green:`); {cluster}"
        )
    } else {
        let admin = sub
            .try_get_one::<std::net::SocketAddr>("admin")
            .ok()
            .flatten()
            .map_or_else(|| "--admin".to_owned(), ToString::to_string);
        format!(
            "`crossfade {verb} {given}` without --kube: `crossfade {verb}` acts on the running \
             `crossfade run` whose admin API is at {admin} (--admin or CROSSFADE_ADMIN) and \
             takes no name: `crossfade {verb} --admin {admin}`; {cluster}"
        )
    };
    let subcommand = command.find_subcommand_mut(verb)?;
    Some(subcommand.error(clap::error::ErrorKind::ArgumentConflict, message))
}

/// The words for `crossfade retry --admin ADDR` (or `--admin-token-file FILE`), which clap refuses
/// as an unknown argument of `retry` with a tip (`use '-- --admin'`) that leads nowhere: `retry`
/// has no local form, so the flags of a running `crossfade run`'s admin API belong to `crossfade
/// migrate`, which starts a rollout again there (session 40). `Some` when `error` is clap's
/// unknown-argument error for one of those flags and `args` give it after the `retry`
/// subcommand; the message carries the flag and its value (`--admin=ADDR` too) into the
/// `migrate` command it suggests.
pub fn retry_with_admin_flags(error: &clap::Error, args: &[std::ffi::OsString]) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if error.kind() != ErrorKind::UnknownArgument {
        return None;
    }
    let Some(ContextValue::String(given)) = error.get(ContextKind::InvalidArg) else {
        return None;
    };
    // clap names the flag alone, also when it was given as `--admin=ADDR`.
    let flag = given
        .split_once('=')
        .map_or(given.as_str(), |(flag, _)| flag);
    if !["--admin", "--admin-token-file"].contains(&flag) {
        return None;
    }
    let args: Vec<&str> = args.iter().filter_map(|a| a.to_str()).collect();
    let at = (args.iter()).position(|a| a.split_once('=').map_or(*a, |(f, _)| f) == flag)?;
    if !args[..at].contains(&"retry") {
        return None;
    }
    let inline = args[at].split_once('=').map(|(_, value)| value);
    let value = inline
        .or_else(|| args.get(at + 1).copied())
        .unwrap_or("...");
    Some(format!(
        "`crossfade retry {flag}`: a running `crossfade run` has no retry: start the rollout \
         again with `crossfade migrate FILE {flag} {value}` (a file with `green:`); for a \
         TrafficShift in a cluster, `crossfade retry --kube -n shop web`"
    ))
}

/// The first flag given on the command line that the mode `matches` chose does not use, as a
/// clap error (exit code 2, usage appended) of the subcommand: `--admin does nothing in
/// `crossfade proxy CONFIG`: it is a `crossfade proxy --kube` flag (set `admin:` in CONFIG)`.
/// `None` when every flag given is used. `plugin` is whether this runs as `kubectl crossfade`
/// (which implies `--kube`).
pub fn unused_flag(
    command: &mut clap::Command,
    matches: &ArgMatches,
    plugin: bool,
) -> Option<clap::Error> {
    let (name, sub) = matches.subcommand()?;
    let (mode, other, unused): (String, &str, &[Unused]) = match name {
        "proxy" if !sub.get_flag("kube") => (
            "`crossfade proxy CONFIG`".into(),
            "it is a `crossfade proxy --kube` flag",
            PROXY_CONFIG,
        ),
        "status" | "pause" | "resume" | "promote" | "abort" | "retry" => {
            let kube = plugin || sub.get_flag("kube");
            if !kube {
                if let Some(error) = name_without_kube(command, name, sub) {
                    return Some(error);
                }
            }
            if name == "retry" {
                return None;
            }
            let wait = sub.try_contains_id("wait").unwrap_or(false)
                && sub.value_source("wait") == Some(ValueSource::CommandLine);
            if kube && name == "status" && wait {
                // The flag's own help says so, but it was accepted and ignored (trial 20).
                let message =
                    "--wait does nothing in `crossfade status --kube NAME`: status reads \
                               the TrafficShift once (--wait is how long pause, resume, promote, \
                               abort and retry wait for the controller)";
                let subcommand = command.find_subcommand_mut(name)?;
                return Some(subcommand.error(clap::error::ErrorKind::ArgumentConflict, message));
            }
            if kube {
                (
                    format!("`crossfade {name} --kube NAME`"),
                    "it is for the admin API of a running `crossfade run`",
                    KUBE_MODE,
                )
            } else {
                (
                    format!("`crossfade {name}` without --kube"),
                    "it is a --kube flag",
                    ADMIN_MODE,
                )
            }
        }
        _ => return None,
    };
    let given = unused.iter().find(|u| {
        sub.try_contains_id(u.id).unwrap_or(false)
            && sub.value_source(u.id) == Some(ValueSource::CommandLine)
    })?;
    let message = format!(
        "{} does nothing in {mode}: {other} ({})",
        given.flag, given.instead
    );
    let subcommand = command.find_subcommand_mut(name)?;
    Some(subcommand.error(clap::error::ErrorKind::ArgumentConflict, message))
}
