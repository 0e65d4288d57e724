//! The `crossfade` command line: parses arguments, sets up logging, and wires the proxy and controller
//! crates together. No rollout or routing logic lives here.
//!
//! # Layout
//! - `serve`: `crossfade run` and `crossfade proxy` (load a file, start the proxy, admin API, controller).
//! - `remote`: `crossfade migrate|status|pause|resume|promote|abort` against a running instance
//!   (the same verbs with `--kube` go to `cluster`).
//! - `report`: `crossfade report` (the HTML report of a finished rollout).
//! - `demo`: the self-contained demo (sample service, built-in load, live progress, summary).
//! - `load`: the demo's load generator.
//! - `sample_app`: the bundled sample service (`crossfade sample-app`).
//! - `kube`: `crossfade controller --kube` (the Kubernetes controller) and `crossfade proxy --kube`.
//! - `upgrade`: `crossfade proxy --upgrade-socket`: the binary upgraded in place (SIGUSR2).
//! - `pid_file`: `crossfade proxy --pid-file`: the serving process's ID, kept true over upgrades.
//! - `notify`: `crossfade proxy` (with CONFIG or `--kube`) and `crossfade run` under systemd
//!   `Type=notify`: the sd_notify(3) messages.
//! - `cluster`: `crossfade status|promote|abort|pause|resume|retry --kube NAME` and the
//!   `kubectl crossfade` plugin (`argv[0]` `kubectl-crossfade`).
//! - `closed_stdout`: whether stdout cannot be written, closed at start (`crossfade crdgen >&-`,
//!   marked before std's runtime by `closed_stdout.c`, linked in by `build.rs`) or read-only, which
//!   makes a command that prints fail as a full disk does.

mod closed_stdout;
mod cluster;
mod demo;
mod earlier;
mod fd_limit;
mod file_kind;
mod flags;
mod kube;
mod load;
mod log_queue;
mod modes;
mod notify;
mod pid_file;
mod remote;
mod report;
mod sample_app;
mod serve;
mod token;
mod upgrade;
#[cfg(test)]
mod version;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use crossfade_controller::kube::ops::Verb;
use crossfade_controller::rollout::OperatorCommand;

/// What `crossfade --version` prints after the name: the package version and the commit the binary
/// was built from, `0.1.0 (74414d6)`, `0.1.0 (74414d6-dirty)` for sources that differ from it, or
/// `0.1.0 (unknown commit)` for a build without git (see `build.rs`).
pub const VERSION: &str = env!("CROSSFADE_VERSION");

/// The commit alone, as `GET /status` and `crossfade_build_info` name it: `74414d6`,
/// `74414d6-dirty`, or `unknown` (see `build.rs`).
const COMMIT: &str = env!("CROSSFADE_BUILD_COMMIT");

/// The process's allocator with the default feature `mimalloc`: mimalloc, built with its first
/// arena committed on demand (`.cargo/config.toml`). With a new connection per request it takes
/// ~11 % fewer instructions per request than glibc's malloc, whose larger and 128-byte-aligned
/// blocks (hyper's buffers, tokio's tasks and I/O registrations) leave its per-thread cache
/// (docs/bench-2026-12-03c-mimalloc.md). `--no-default-features` keeps glibc's malloc, for the
/// allocation counters of bench/allocs.sh and bench/alloc_sites.sh.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Crossfade: zero-downtime blue/green patching with weighted traffic shifting and automatic rollback.
#[derive(Debug, Parser)]
#[command(name = "crossfade", version = VERSION, about, long_about = None)]
struct Cli {
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `crossfade=debug`. Overrides RUST_LOG.
    /// A filter that does not parse is refused, as any other bad flag value is.
    #[arg(long, global = true, value_parser = log_filter)]
    log: Option<String>,
    /// Log line format on stderr: `text` for people, `json` (one object per line, with the event's
    /// fields: every rollout transition has `route`, `rollout`, `backend`, `version`, `reason`) for
    /// log pipelines.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// The `--log-format` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a complete migration on this machine: sample service v1 → v2 under live load.
    Demo(demo::DemoArgs),
    /// Serve a spec's service behind the proxy; with a `green:` section, roll out to it.
    Run {
        /// The spec file (YAML).
        spec: PathBuf,
        /// Exit when the rollout ends: code 0 if it completed, 3 if it rolled back or was aborted
        /// (a paused rollout has not ended: it waits for resume, promote or abort, also one that
        /// `on_inconclusive: pause` paused). Prints a one-line outcome on stdout, then stops: the
        /// proxy drains and every workload (the active one included) is stopped.
        #[arg(long)]
        exit_after_rollout: bool,
        /// With --exit-after-rollout: keep serving (traffic, /metrics and the admin API) this long
        /// after the outcome before stopping, so that Prometheus scrapes the final phase and
        /// `crossfade_rollouts_total` (give at least twice the scrape interval, e.g. 30s). A signal
        /// ends the wait. Default 0s: exit at once, as a CI pipeline wants.
        #[arg(long, default_value = "0s", requires = "exit_after_rollout",
              value_parser = crossfade_proxy::duration::parse)]
        linger: std::time::Duration,
        /// With --exit-after-rollout: print the outcome as one JSON object instead of a line.
        #[arg(long, requires = "exit_after_rollout")]
        json: bool,
        /// Unix socket for in-place upgrades of the binary, as `crossfade proxy --upgrade-socket`:
        /// a new `crossfade run` started with the same path (or by SIGUSR2 to this one, which
        /// starts its own executable again with the same arguments) takes over the listening
        /// sockets and the state file's lock, adopts the active workload's running instances
        /// (each must pass readiness) and serves; this one then stops accepting, drains
        /// (`drain_timeout`) and exits, leaving the workloads running. Refused while a rollout is
        /// in progress (the new process says why and exits 1). Needs the spec's `state_file`.
        /// Not with --exit-after-rollout. Only this flag: `CROSSFADE_UPGRADE_SOCKET` is
        /// `crossfade proxy`'s, and `run` does not read it.
        #[arg(long, value_name = "PATH", conflicts_with = "exit_after_rollout")]
        upgrade_socket: Option<PathBuf>,
        /// With --upgrade-socket: how long a process that SIGUSR2 starts gets to connect to the
        /// upgrade socket; one that has not by then is stopped with SIGKILL and logged. At least 1s.
        #[arg(long, value_name = "DURATION", default_value = "60s", requires = "upgrade_socket",
              value_parser = flags::upgrade_timeout)]
        upgrade_timeout: std::time::Duration,
        #[command(flatten)]
        token: token::TokenArgs,
    },
    /// Check a spec file, a `crossfade proxy` config (a file with a top-level `routes:` key), the
    /// settings file of `crossfade proxy --kube --config` (a proxy config's keys without
    /// `routes:`) or a `crossfade migrate` file (only `green:` and `rollout:`), and list every
    /// problem, without starting anything: exactly the checks `run` (or `proxy`, or `migrate`)
    /// makes before it binds or sends, the admin token included (give the same
    /// --admin-token-file or CROSSFADE_ADMIN_TOKEN).
    Check {
        /// The spec, proxy config, `--kube --config` settings or migrate file (YAML).
        spec: PathBuf,
        #[command(flatten)]
        token: token::TokenArgs,
    },
    /// Run the proxy alone (ingress or sidecar): over static endpoints from a config file, weights
    /// via the admin API (SIGHUP reloads the routes and the TLS certificate from the files; with
    /// --upgrade-socket, SIGUSR2 upgrades the binary in place); or with `--kube`, routes, weights
    /// and endpoints from the cluster's TrafficShifts and EndpointSlices.
    Proxy {
        /// The proxy config file (YAML). Not with `--kube` (its `--config` takes the settings
        /// without routes).
        #[arg(required_unless_present = "kube", conflicts_with = "kube")]
        config: Option<PathBuf>,
        #[command(flatten)]
        cluster: kube::ProxyKubeArgs,
        /// Worker threads, 1 to 1024; 1 runs everything on the calling thread (fastest on one
        /// dedicated core). Default: one per core. More threads than cores only add switching,
        /// and each takes a stack, so a value past 1024 is a typo (100000 would spawn threads
        /// until the machine stalls) and 0 would mean none; both are refused.
        #[arg(long, allow_negative_numbers = true, value_parser = |t: &str| flags::whole_in(t, 1..=1024u16))]
        workers: Option<u16>,
        /// Unix socket for in-place upgrades of the binary: a new `crossfade proxy` started with
        /// the same path (or by SIGUSR2 to this one, which starts its own executable again with
        /// the same arguments) takes over the listening sockets and the live routes; this one
        /// then stops accepting and drains (`drain_timeout`). Without it, there is no upgrade.
        /// Not with `--kube` (a new replica's rolling update is the upgrade there).
        #[arg(
            long,
            env = upgrade::SOCKET_ENV,
            value_name = "PATH",
            conflicts_with = "kube"
        )]
        upgrade_socket: Option<PathBuf>,
        /// With --upgrade-socket: how long a process that SIGUSR2 starts gets to connect to the
        /// upgrade socket (to load its config and ask for the sockets). One that has not by then
        /// (a new binary that hangs at start) is stopped with SIGKILL and logged, this one serves
        /// on, and the next SIGUSR2 starts another; until then a further SIGUSR2 is ignored
        /// (logged), so repeated signals do not pile up processes. Once connected, a new process
        /// has 60 s to be ready. At least 1s.
        #[arg(long, value_name = "DURATION", default_value = "60s", requires = "upgrade_socket",
              value_parser = flags::upgrade_timeout)]
        upgrade_timeout: std::time::Duration,
        /// Write the serving process's ID to PATH once it serves (atomically: a temporary file in
        /// the same directory, renamed), for systemd's `PIDFile=` and scripts. After a binary
        /// upgrade the new process writes its own ID there once the old one confirmed that it
        /// drains, before the old one exits; a new process that fails leaves the old one's ID
        /// there. A process that exits removes the file only while it holds its own ID. The
        /// directory must exist, and a PATH holding anything but a process ID (the config, a
        /// log) or that is no regular file (`/dev/null`) is refused, as the rename would replace it.
        /// Not with `--kube` (a pod's process is its container's).
        #[arg(long, value_name = "PATH", conflicts_with = "kube")]
        pid_file: Option<PathBuf>,
        #[command(flatten)]
        token: token::TokenArgs,
    },
    /// Start a rollout on a running `crossfade run` instance from a file with `green:` (and `rollout:`).
    Migrate {
        /// A YAML file with a `green:` workload and optionally a `rollout:` section (its keys
        /// change the running spec's `rollout:`, the others are kept).
        file: PathBuf,
        /// Print the admin API's answer as it is (`{"started": N}`, or the refusal) instead of
        /// the summary.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: remote::AdminArgs,
    },
    /// Show the running instance's rollout and routes (a summary; --json for the admin API's
    /// answers as they are); with --kube, TrafficShift NAME.
    Status {
        /// Print `GET /rollout` and `GET /status` as one JSON object (`rollout`, `proxy`) instead
        /// of the summary. Not with --kube.
        #[arg(long, conflicts_with = "kube")]
        json: bool,
        #[command(flatten)]
        admin: remote::AdminArgs,
        #[command(flatten)]
        kube: cluster::KubeArgs,
    },
    /// Pause the running rollout (analysis stops, weights stay).
    Pause {
        #[command(flatten)]
        admin: remote::AdminArgs,
        #[command(flatten)]
        kube: cluster::KubeArgs,
    },
    /// Resume a paused rollout.
    Resume {
        #[command(flatten)]
        admin: remote::AdminArgs,
        #[command(flatten)]
        kube: cluster::KubeArgs,
    },
    /// Skip the remaining steps: send 100% to the preview, then retire the active backend.
    Promote {
        #[command(flatten)]
        admin: remote::AdminArgs,
        #[command(flatten)]
        kube: cluster::KubeArgs,
    },
    /// Abort the rollout: all traffic back to the active backend, preview stopped. The traffic
    /// goes back no faster than the active backend's ready endpoints can carry it (a capacity
    /// wait); --force sends all of it back at once.
    Abort {
        /// force-abort: all traffic back to the active backend at once, whatever its capacity;
        /// also ends a rollback's or abort's capacity wait (POST /rollout/force-abort; with
        /// --kube, annotation crossfade.dev/force-abort). May overload the active backend.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        admin: remote::AdminArgs,
        #[command(flatten)]
        kube: cluster::KubeArgs,
    },
    /// Start a rolled-back or aborted rollout again from its first step (--kube only: annotates
    /// the TrafficShift's Deployment with crossfade.dev/retry).
    Retry {
        #[command(flatten)]
        kube: cluster::KubeArgs,
    },
    /// Write the HTML report (charts, verdicts, durations, versions) of the last, finished rollout,
    /// from a state file or a running instance.
    Report(report::ReportArgs),
    /// The bundled sample service used by the demo and the tests.
    SampleApp(sample_app::SampleAppArgs),
    /// Print the TrafficShift CustomResourceDefinition (YAML), as committed in deploy/crd/.
    Crdgen,
    /// Run the Kubernetes controller: annotated Deployments → TrafficShifts → rollouts.
    Controller(kube::ControllerArgs),
}

fn main() -> std::process::ExitCode {
    crossfade_proxy::process::set_commit(COMMIT);
    // As `kubectl-crossfade` (a kubectl plugin), help and errors name `kubectl crossfade`.
    let mut command = Cli::command();
    if cluster::is_plugin() {
        command = command.bin_name("kubectl crossfade");
    }
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let matches = match command.try_get_matches_from_mut(&args) {
        Ok(matches) => matches,
        Err(error) => {
            let named = flags::named_command(&mut command, &args);
            let name = named.get_bin_name().unwrap_or(named.get_name()).to_owned();
            let reworded = flags::negative_value(&error, &args, &name)
                .or_else(|| flags::from_environment(&error, &command, &args))
                .or_else(|| modes::retry_with_admin_flags(&error, &args));
            // Ended with the usage of the subcommand given, as clap's own errors are (session 41).
            let named = flags::named_command(&mut command, &args);
            match reworded.or_else(|| flags::unknown_short_flag(&error, named)) {
                Some(message) => named
                    .error(clap::error::ErrorKind::InvalidValue, message)
                    .exit(),
                None => exit_clap(error),
            }
        }
    };
    if let Some(error) = modes::unused_flag(&mut command, &matches, cluster::is_plugin()) {
        error.exit();
    }
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let default_log = match cli.command {
        // The demo prints its own event list: its warnings (the rollout's transitions) would say
        // each one twice (trial 12, M11); `--log warn` shows them.
        Command::Demo(_) => "error",
        _ => "info",
    };
    let log = init_tracing(cli.log.as_deref(), default_log, cli.log_format);
    let runtime = match cli.command {
        Command::Proxy {
            workers: Some(1), ..
        } => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Command::Proxy {
            workers: Some(n), ..
        } => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(usize::from(n))
            .enable_all()
            .build(),
        _ => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            print_err(&format!("crossfade: cannot start the async runtime: {e}"));
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(dispatch(cli.command));
    // What the log queued is written before the error below and before the exit.
    if let Some(log) = &log {
        log.flush(log_queue::FLUSH_WAIT);
    }
    let result = match (result, stdout_failure()) {
        (Ok(code), Some(failure)) if code == std::process::ExitCode::SUCCESS => {
            Err(anyhow::anyhow!(failure))
        }
        // An exit code of its own (3: the rollout did not complete) is kept, but the lost output
        // is said (session 42: `demo > /dev/full` of a rollback exited 3 without a word of it).
        (Ok(code), Some(failure)) => {
            print_err(&format!("crossfade: {failure}"));
            Ok(code)
        }
        (result, _) => result,
    };
    match result {
        Ok(code) => code,
        // A process started by SIGUSR2 shares the serving process's log: its reason is one
        // record there, with time and level (trial 5 F2). That the old one keeps serving is
        // the old one's to say, when it sees this one exit (trial 13 N13: both said it).
        Err(e) if upgrade::successor_of_sigusr2() => {
            let reason = crossfade_proxy::config::one_line(&report(&e));
            tracing::error!(
                pid = std::process::id(),
                "binary upgrade: the new process cannot start: {}",
                reason.strip_prefix("binary upgrade: ").unwrap_or(&reason)
            );
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            print_err(&format!("crossfade: {}", report(&e)));
            if flags::is_usage(&e) {
                std::process::ExitCode::from(flags::EXIT_USAGE)
            } else {
                std::process::ExitCode::FAILURE
            }
        }
    }
}

/// Ends the process as clap's `Error::exit` does, except that help or a version that could not be
/// written to stdout (`crossfade --help > /dev/full`) exits 1 saying why instead of 0.
fn exit_clap(error: clap::Error) -> ! {
    if error.use_stderr() {
        error.exit()
    }
    note_closed_stdout();
    if let Err(e) = error.print() {
        note_stdout_error(&e);
    }
    if let Some(failure) = stdout_failure() {
        print_err(&format!("crossfade: {failure}"));
        std::process::exit(1)
    }
    std::process::exit(error.exit_code())
}

/// `error` and its causes, `: `-separated, each cause left out when the text before it already says
/// it: many errors (ours, serde's, io's wrappers) put their cause in their own message *and* return
/// it from `source()`, and `{:#}` would print it twice. A kube error is said in
/// [`crossfade_controller::kube::api_error_words`].
fn report(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        // kube's own text of an API server's answer ends with a debug dump of its `Status`.
        let message = match cause.downcast_ref::<::kube::Error>() {
            Some(e) => crossfade_controller::kube::api_error_words(e),
            None => cause.to_string(),
        };
        if text.contains(&message) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&message);
    }
    text
}

async fn dispatch(command: Command) -> anyhow::Result<std::process::ExitCode> {
    match command {
        Command::Demo(args) => demo::run(args).await,
        Command::Run {
            spec,
            exit_after_rollout,
            linger,
            json,
            upgrade_socket,
            upgrade_timeout,
            token,
        } => {
            if let Some(socket) = upgrade_socket.as_deref() {
                let upgrade = upgrade::Upgrade {
                    socket,
                    start_timeout: upgrade_timeout,
                };
                return upgrade::run(&spec, &token, upgrade).await;
            }
            upgrade::note_proxy_socket_variable();
            let exit = exit_after_rollout.then_some(serve::ExitAfter { linger, json });
            serve::run(&spec, exit, &token).await
        }
        Command::Check { spec, token } => serve::check(&spec, &token),
        Command::Proxy {
            config: Some(config),
            token,
            upgrade_socket,
            upgrade_timeout,
            pid_file,
            ..
        } => {
            let upgrade = upgrade_socket.as_deref().map(|socket| upgrade::Upgrade {
                socket,
                start_timeout: upgrade_timeout,
            });
            serve::proxy(&config, &token, upgrade, pid_file.as_deref()).await
        }
        Command::Proxy { cluster, token, .. } => kube::proxy(cluster, &token).await,
        Command::Migrate { file, json, admin } => remote::migrate(&file, &admin, json).await,
        Command::Status { kube, .. } if kube.wanted() => cluster::status(&kube).await,
        Command::Status { admin, json, .. } => remote::status(&admin, json).await,
        Command::Pause { kube, .. } if kube.wanted() => cluster::command(&kube, Verb::Pause).await,
        Command::Pause { admin, .. } => remote::command(&admin, "pause").await,
        Command::Resume { kube, .. } if kube.wanted() => {
            cluster::command(&kube, Verb::Resume).await
        }
        Command::Resume { admin, .. } => remote::command(&admin, "resume").await,
        Command::Promote { kube, .. } if kube.wanted() => {
            cluster::command(&kube, Verb::Promote).await
        }
        Command::Promote { admin, .. } => remote::command(&admin, "promote").await,
        Command::Abort { kube, force, .. } if kube.wanted() => {
            let verb = if force { Verb::ForceAbort } else { Verb::Abort };
            cluster::command(&kube, verb).await
        }
        Command::Abort { admin, force, .. } => {
            let command = if force {
                OperatorCommand::ForceAbort
            } else {
                OperatorCommand::Abort
            };
            remote::command(&admin, command.as_str()).await
        }
        Command::Retry { kube } => cluster::command(&kube, Verb::Retry).await,
        Command::Report(args) => report::run(args).await,
        Command::SampleApp(args) => sample_app::run(args)
            .await
            .map(|()| std::process::ExitCode::SUCCESS),
        Command::Controller(args) => kube::controller(args).await,
        Command::Crdgen => {
            print_text(&crossfade_controller::kube::crd::crd_yaml());
            Ok(std::process::ExitCode::SUCCESS)
        }
    }
}

/// `--log`'s value checked by `EnvFilter`'s own parser (trial 11, L16: a typo such as
/// `crossfade=verbose` was ignored with one line on stderr and the default level used, which a
/// production proxy's operator would not notice).
fn log_filter(value: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(value)
        .map(|_| value.to_owned())
        .map_err(|e| format!("{e} (e.g. `info`, `crossfade=debug`, `warn,crossfade_proxy=trace`)"))
}

/// Installs the log: records go to stderr through a [`log_queue::LogQueue`] when stderr is a
/// pipe or a terminal (never blocking a thread), else straight to it; the caller flushes the
/// queue before it exits.
fn init_tracing(
    flag: Option<&str>,
    default: &str,
    format: LogFormat,
) -> Option<log_queue::LogQueue> {
    use tracing_subscriber::EnvFilter;
    let filter = match flag {
        Some(f) => EnvFilter::new(quiet_client_noise(f)),
        None => std::env::var(EnvFilter::DEFAULT_ENV)
            .ok()
            .and_then(|f| EnvFilter::try_new(quiet_client_noise(&f)).ok())
            .unwrap_or_else(|| EnvFilter::new(quiet_client_noise(default))),
    };
    use std::io::IsTerminal;
    use tracing_subscriber::fmt::writer::BoxMakeWriter;
    let queue = log_queue::LogQueue::for_stderr();
    let writer = match &queue {
        Some(queue) => BoxMakeWriter::new(queue.clone()),
        None => BoxMakeWriter::new(std::io::stderr),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false);
    match format {
        // Flattened: `{"timestamp":..,"level":"INFO","message":..,"route":"web","rollout":1,..}`.
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
    queue
}

/// Log targets whose messages only repeat what crossfade reports itself, each with the crate
/// name that, named in the filter, turns it back on:
/// - rustls's ClientHello parser warns about every IP address sent as SNI (wrk and other clients
///   do, RFC 6066 §3 forbids it, rustls ignores it and carries on). A client-controlled warning
///   per connection floods the log, so these are shown at error level only.
/// - kube's HTTP client logs `ERROR failed with error client error (Connect)` for every request
///   that fails (trial 10, K22), without saying to which server; crossfade's own message names
///   the failed request, the API server and where its address came from.
///
/// Unless the filter says something about that crate already (`--log info,rustls=debug`,
/// `--log debug,kube_client=debug`).
const CLIENT_NOISE: [(&str, &str); 2] = [
    ("rustls", "rustls::msgs::handshake=error"),
    ("kube_client", "kube_client::client::builder=off"),
];

/// `filter` with each [`CLIENT_NOISE`] directive appended whose crate it does not name.
fn quiet_client_noise(filter: &str) -> String {
    let mut out = filter.to_owned();
    for (name, directive) in CLIENT_NOISE {
        if !filter.contains(name) {
            out.push(',');
            out.push_str(directive);
        }
    }
    out
}

/// Prints `text` and a newline on stdout. A closed pipe (`crossfade status | head`) is not an error
/// worth a panic: the reader has what it wanted. Any other failure (a full disk: `crossfade check
/// spec.yaml > /dev/full` exited 0, trial 30) is kept for [`stdout_failure`], which turns the exit
/// into a failure.
pub fn print_out(text: &str) {
    print_text(&format!("{text}\n"));
}

/// Prints `text` as it is on stdout, as [`print_out`] does.
pub fn print_text(text: &str) {
    use std::io::Write;
    note_closed_stdout();
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        note_stdout_error(&e);
    }
}

/// The first error met writing stdout, other than a closed pipe.
static STDOUT_ERROR: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn note_stdout_error(error: &std::io::Error) {
    if error.kind() != std::io::ErrorKind::BrokenPipe {
        let _ = STDOUT_ERROR.set(error.to_string());
    }
}

/// Notes a stdout that was closed at start (`>&-`), or is read-only, as a failure to write it:
/// std's writes take `EBADF` on stdout as success, and the command exited 0 (session 42).
fn note_closed_stdout() {
    static CLOSED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *CLOSED.get_or_init(closed_stdout::stdout_unwritable) {
        let _ = STDOUT_ERROR.set(
            "it was closed when crossfade started (`>&-`) or is open for reading only; to \
             discard the output, give `>/dev/null`"
                .into(),
        );
    }
}

/// `cannot write to standard output: <cause>` when a write to stdout failed other than on a
/// closed pipe (what was written is incomplete, as coreutils' `write error` says of `echo > /dev/full`).
fn stdout_failure() -> Option<String> {
    use std::io::Write;
    if let Err(e) = std::io::stdout().lock().flush() {
        note_stdout_error(&e);
    }
    STDOUT_ERROR
        .get()
        .map(|cause| format!("cannot write to standard output: {cause}"))
}

/// Prints `text` and a newline on stderr, as [`print_out`] on stdout: a closed pipe
/// (`crossfade demo 2>&1 | head`) loses the line but never panics, so the command ends with
/// its own exit code, not Rust's 101 for a panic (trial 22).
pub fn print_err(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// The admin address used when none is given: the default of `admin:` in specs and proxy configs.
pub const DEFAULT_ADMIN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9901);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_corrupt_state_file_is_reported_with_its_cause_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, "{ not json").unwrap();
        let store = crossfade_controller::store::StateFile::new(&path);
        let error = store
            .load::<crossfade_controller::state::ServiceState>()
            .map(|_| ())
            .map_err(anyhow::Error::from)
            .unwrap_err();
        let text = report(&error);
        assert!(text.starts_with("state file "), "{text}");
        assert_eq!(text.matches("key must be a string").count(), 1, "{text}");
    }

    /// Trial 30: kube's text of an API server's answer ends with a debug dump of its `Status`;
    /// every error that carries one says `403 Forbidden: <message>`, at the CLI and in the logs.
    #[test]
    fn a_kube_api_error_is_said_in_words_without_its_debug_dump() {
        let forbidden = || {
            let mut status = ::kube::core::Status::failure(
                "trafficshifts.crossfade.dev is forbidden: User \"x\" cannot list",
                "Forbidden",
            );
            status.code = 403;
            ::kube::Error::Api(Box::new(status))
        };
        let start = crossfade_controller::kube::shift::PreflightError::Unreachable(forbidden());
        let list = crossfade_controller::kube::proxies::ListError {
            namespace: Some("shop".into()),
            source: forbidden(),
        };
        for error in [anyhow::Error::from(start), anyhow::Error::from(list)] {
            let text = report(&error);
            assert!(!text.contains("Status {"), "{text}");
            assert_eq!(
                text.matches("403 Forbidden: trafficshifts.crossfade.dev is forbidden")
                    .count(),
                1,
                "{text}"
            );
        }
    }

    #[test]
    fn report_reads_a_state_file_in_preference_to_the_admin_api() {
        let both = [
            "crossfade",
            "report",
            "--state",
            "s.json",
            "--admin",
            "127.0.0.1:1",
            "-o",
            "r.html",
        ];
        // `--state` wins over `--admin` (and over `CROSSFADE_ADMIN`, which fills `--admin`): a
        // file given explicitly is never overridden by an address from the environment.
        let Command::Report(args) = Cli::try_parse_from(both).expect("parses").command else {
            panic!("not the report command");
        };
        assert_eq!(args.state(), Some(std::path::Path::new("s.json")));
        assert!(
            Cli::try_parse_from(["crossfade", "report", "--state", "s.json", "-o", "r.html"])
                .is_ok()
        );
        assert!(
            Cli::try_parse_from(["crossfade", "report", "--state", "s.json"]).is_err(),
            "-o is required"
        );
    }

    /// Trial report 6, F21: `sample-app --help` spoke of the functions `run` and `serve` (not
    /// commands a user has), and `status --help` offered a `--wait` "for the command" it never
    /// sends.
    #[test]
    fn help_texts_speak_of_what_a_user_runs() {
        let mut cli = Cli::command();
        let mut help = |name: &str| {
            let command = cli.find_subcommand_mut(name).expect("a subcommand");
            command.render_long_help().to_string()
        };
        let sample = help("sample-app");
        assert!(
            !sample.contains("`serve`") && !sample.contains("`run` only"),
            "{sample}"
        );
        let status = help("status");
        assert!(status.contains("status does not wait"), "{status}");
    }

    /// Trial 10, K6: `--version` names the commit; a build without git says it does not know.
    #[test]
    fn the_version_names_the_commit_or_says_it_is_unknown() {
        assert!(
            VERSION.starts_with(concat!(env!("CARGO_PKG_VERSION"), " (")) && VERSION.ends_with(')'),
            "{VERSION}"
        );
        assert_eq!(version::commit_text(Some("74414d6"), false), "(74414d6)");
        assert_eq!(
            version::commit_text(Some("74414d6"), true),
            "(74414d6-dirty)"
        );
        assert_eq!(version::commit_text(None, true), "(unknown commit)");
        assert_eq!(version::commit_text(Some(" "), false), "(unknown commit)");
        assert_eq!(
            version::commit_id(Some("74414d6"), true).as_deref(),
            Some("74414d6-dirty")
        );
        assert_eq!(version::commit_id(Some(" "), false), None);
        let inside = VERSION
            .rsplit_once(" (")
            .map(|(_, c)| c.trim_end_matches(')'));
        let expected = if COMMIT == "unknown" {
            "unknown commit"
        } else {
            COMMIT
        };
        assert_eq!(inside, Some(expected), "{VERSION} vs {COMMIT}");
    }

    #[test]
    fn contexts_and_distinct_causes_are_all_kept() {
        let inner = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let error = anyhow::Error::from(inner).context("cannot read proxy config a.yaml");
        assert_eq!(
            report(&error),
            "cannot read proxy config a.yaml: no such file"
        );
    }
}
