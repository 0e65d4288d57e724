//! The bundled sample service: a small HTTP/1.1 + h2c server (h2c alone with `--h2c`) that `crossfade demo`, the integration
//! tests and the failure cases run as the blue and green backends.
//!
//! Every response carries `X-Pool`, `X-Instance` and `X-Version`, so a client can tell which backend
//! (and which endpoint of it) answered. Fault flags make it fail on purpose: a share of 500s, added
//! latency, a health check that is late or goes bad, a crash after a while, an idle keep-alive close.
//! Request bodies are read before the answer (dropped where the route does not use them), so
//! keep-alive POST clients get every answer on one connection; an answer given without the whole
//! body read says `Connection: close`.
//!
//! # Layout
//! - this file: the flags ([`SampleAppArgs`]), [`run`] (bind, signals) and [`serve`] (accept loop,
//!   graceful drain).
//! - `handler`: the routes (`/`, `/api`, `/healthz`, `/chunked`, `/echo-headers`, `/upload`,
//!   `/download`, `/slow`, `/ws`) and the fault injection that wraps them.
//! - `grpc`: gRPC calls (`content-type: application/grpc`), answered with a reply naming the
//!   version and `grpc-status` in the trailers.
//! - `websocket`: `/ws`, a WebSocket echo whose replies name the version, pool and instance.
//! - `body`: the deterministic, constant-memory streaming body used by `/chunked` and `/download`.

mod body;
mod grpc;
mod handler;
#[cfg(test)]
mod tests;
mod websocket;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use handler::App;

/// Flags of `crossfade sample-app`.
///
/// Durations are human strings (`"500ms"`, `"6s"`, `"1m"`). Only `--version` is required.
#[derive(Debug, Clone, clap::Args)]
// The sample app has a `--version <V>` flag of its own: clap must not add its `--version` here
// even when the top-level command propagates its version to subcommands.
#[command(disable_version_flag = true)]
pub struct SampleAppArgs {
    /// TCP port to listen on: 1 to 65535, or 0 for a free port that the system picks (the log's
    /// `sample-app listening` line names it).
    #[arg(long, default_value_t = 8080, allow_negative_numbers = true, value_parser = crate::flags::port)]
    pub port: u16,

    /// Address to listen on.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST), value_parser = crate::flags::ip)]
    pub bind: IpAddr,

    /// Version string: the body of `GET /` and the `X-Version` header. From env
    /// `CROSSFADE_SAMPLE_VERSION` when not given, so that an image can carry its version
    /// (deploy/examples/web/Dockerfile).
    #[arg(
        long = "version",
        value_name = "VERSION",
        env = "CROSSFADE_SAMPLE_VERSION",
        value_parser = clap::builder::NonEmptyStringValueParser::new()
    )]
    pub version: String,

    /// Pool name for the `X-Pool` header (default: the version string).
    #[arg(long)]
    pub pool: Option<String>,

    /// Instance id for the `X-Instance` header (default: `<pool>-<port>`).
    #[arg(long)]
    pub instance: Option<String>,

    /// `/healthz` answers 503 for this long after start (e.g. "6s").
    #[arg(long, value_name = "DURATION", value_parser = crossfade_proxy::duration::parse)]
    pub unready_for: Option<Duration>,

    /// `/healthz` answers 503 from this long after start on (e.g. "30s").
    #[arg(long, value_name = "DURATION", value_parser = crossfade_proxy::duration::parse)]
    pub fail_health_after: Option<Duration>,

    /// `/healthz` flaps: 200 for this long, then 503 for as long, `--health-flap-cycles` times,
    /// then 200 for good (a flapping health check, case C14).
    #[arg(long, value_name = "DURATION", value_parser = crossfade_proxy::duration::parse)]
    pub health_flap: Option<Duration>,

    /// How many 200-then-503 cycles `--health-flap` makes.
    #[arg(long, value_name = "N", default_value_t = 5, allow_negative_numbers = true, value_parser = crate::flags::whole::<u32>)]
    pub health_flap_cycles: u32,

    /// Share of non-health requests answered 500: a percentage (`20%`) or a fraction (`0.2`).
    /// Deterministic: 20% fails exactly 20 of any 100 consecutive requests (the i-th fails when
    /// `floor(i·rate)` steps up). From
    /// env `CROSSFADE_SAMPLE_ERROR_RATE` when not given (a faulty image, deploy/examples/web/).
    #[arg(long, value_name = "RATE", default_value_t = 0.0, allow_hyphen_values = true,
          value_parser = crossfade_controller::spec::parse_rate,
          env = "CROSSFADE_SAMPLE_ERROR_RATE")]
    pub error_rate: f64,

    /// Share of non-health requests answered 500 (as `--error-rate`), read from this file every
    /// 100 ms, in place of `--error-rate` while the file holds one: a service that starts
    /// failing while it runs (a dependency going bad), for drift tests. A missing file or other
    /// content means `--error-rate`.
    #[arg(long, value_name = "PATH")]
    pub error_rate_file: Option<std::path::PathBuf>,

    /// Milliseconds added to every non-health request.
    #[arg(long, value_name = "MS", default_value_t = 0, allow_negative_numbers = true, value_parser = crate::flags::whole::<u64>)]
    pub latency: u64,

    /// Milliseconds added to every non-health request, read from this file (a whole number)
    /// every 100 ms, in place of `--latency` while the file holds one: a service whose latency
    /// changes while it runs (a neighbour's load, a cold cache), for drift tests. A missing file
    /// or other content means `--latency`.
    #[arg(long, value_name = "PATH")]
    pub latency_file: Option<std::path::PathBuf>,

    /// Exit with status 1 this long after start, without draining: a crash for crash-loop tests.
    #[arg(long, value_name = "DURATION", value_parser = crossfade_proxy::duration::parse)]
    pub exit_after: Option<Duration>,

    /// From this long after start on, read every request (`/healthz` too) and never answer it,
    /// while still accepting connections: a hung process, for fault-injection tests.
    #[arg(long, value_name = "DURATION", value_parser = crossfade_proxy::duration::parse)]
    pub hang_after: Option<Duration>,

    /// Close an HTTP/1 keep-alive connection that has waited this long for its next request.
    #[arg(long, value_name = "DURATION", value_parser = crossfade_proxy::duration::parse)]
    pub idle_timeout: Option<Duration>,

    /// `/upload` answers 401 at once without reading the body (an early rejection, case C20 B),
    /// with `Connection: close` on HTTP/1 since the connection cannot carry another request.
    #[arg(long)]
    pub reject_uploads: bool,

    /// Speak only cleartext HTTP/2 with prior knowledge (h2c, RFC 9113 §3.3), as a gRPC server
    /// does: an HTTP/1.1 request gets the server's HTTP/2 SETTINGS frame and a closed
    /// connection, no HTTP/1.1 answer. A workload running it needs `protocol: h2c`. Default:
    /// HTTP/1.1 and h2c on one port.
    #[arg(long)]
    pub h2c: bool,

    /// Exit (status 1, without draining) once the process that started it is gone: its parent
    /// process is no longer `PID` (it was reparented), checked at start and every 250 ms.
    /// Without `=PID`, the parent it had when it started; a parent that died before that
    /// moment is not noticed, so a parent that can die early names itself. `crossfade demo`
    /// starts its apps with `--exit-with-parent=<its pid>`, so that a demo killed with SIGKILL,
    /// which cannot stop them, leaves none running, also one killed while they start.
    #[arg(long, value_name = "PID", num_args = 0..=1, require_equals = true,
          value_parser = crate::flags::whole::<u32>)]
    pub exit_with_parent: Option<Option<u32>>,
}

/// Runs the sample app on `--bind`:`--port` until SIGTERM or Ctrl-C, then drains in-flight
/// requests and returns `Ok(())`.
///
/// # Errors
/// The port cannot be bound, a flag value is not a valid header value, or `--exit-after` elapsed
/// (the CLI turns that error into exit status 1).
pub async fn run(args: SampleAppArgs) -> anyhow::Result<()> {
    let addr = SocketAddr::new(args.bind, args.port);
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("sample-app: bind {addr}"))?;
    serve(args, listener, shutdown_signal()?).await
}

/// Resolves on the first SIGTERM or SIGINT.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term =
        signal(SignalKind::terminate()).context("sample-app: install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("sample-app: install SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// Serves on an already-bound `listener` until `shutdown` resolves; then stops accepting, lets
/// every in-flight request finish (HTTP/1 connections close after their current response, HTTP/2
/// ones send GOAWAY) and returns `Ok(())`.
///
/// `--port` and `--bind` are ignored: the instance id defaults to `<pool>-<listener port>`.
///
/// # Errors
/// A flag value is not a valid header value, the listener fails, or `--exit-after` elapsed
/// (in which case open connections are dropped, not drained).
pub async fn serve(
    args: SampleAppArgs,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let local = listener
        .local_addr()
        .context("sample-app: listener address")?;
    let app = Arc::new(App::new(&args, local.port())?);
    let follow = follow_files(&app, &args);
    let builder = Arc::new(connection_builder(args.idle_timeout, args.h2c));
    let exit_after = exit_timer(args.exit_after);
    let orphaned = orphaned(args.exit_with_parent);
    tokio::pin!(shutdown, exit_after, orphaned);
    tracing::info!(%local, version = %args.version, "sample-app listening");

    let (drain_tx, drain_rx) = watch::channel(());
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = accepted.context("sample-app: accept")?;
                let (app, builder, drain) = (app.clone(), builder.clone(), drain_rx.clone());
                conns.spawn(serve_connection(app, (builder, args.h2c), stream, drain, peer));
            }
            Some(_) = conns.join_next() => {}
            () = &mut shutdown => break,
            () = &mut exit_after => {
                let after = crossfade_proxy::duration::show(args.exit_after.unwrap_or_default());
                anyhow::bail!("sample-app: exiting after {after} (--exit-after)");
            }
            () = &mut orphaned => {
                anyhow::bail!("sample-app: the process that started it is gone (--exit-with-parent)");
            }
        }
    }

    drop((listener, follow));
    tracing::info!(connections = conns.len(), "sample-app draining");
    let _ = drain_tx.send(());
    while conns.join_next().await.is_some() {}
    Ok(())
}

/// Tasks that set `app`'s faults from `--latency-file` and `--error-rate-file` while it runs;
/// they end when the returned handles are dropped.
fn follow_files(app: &Arc<App>, args: &SampleAppArgs) -> Vec<AbortOnDrop> {
    let mut tasks = Vec::new();
    if let Some(path) = args.latency_file.clone() {
        let (app, fixed) = (app.clone(), args.latency);
        tasks.push(follow(path, move |text| {
            let ms = text.and_then(|s| s.trim().parse().ok());
            app.set_latency(ms.unwrap_or(fixed));
        }));
    }
    if let Some(path) = args.error_rate_file.clone() {
        let (app, fixed) = (app.clone(), args.error_rate);
        tasks.push(follow(path, move |text| {
            let rate = text.and_then(|s| crossfade_controller::spec::parse_rate(s.trim()).ok());
            app.set_error_rate(rate.unwrap_or(fixed));
        }));
    }
    tasks
}

/// A task that reads the file at `path` every 100 ms (the first time at once) and hands its
/// text to `apply` (`None` when it cannot be read).
fn follow(
    path: std::path::PathBuf,
    apply: impl Fn(Option<String>) + Send + Sync + 'static,
) -> AbortOnDrop {
    AbortOnDrop(tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(100));
        loop {
            every.tick().await;
            apply(tokio::fs::read_to_string(&path).await.ok());
        }
    }))
}

/// A task that ends when this is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Resolves once this process's parent is not `watch`'s (it was reparented: the parent died),
/// looked at once at once and then every 250 ms; `Some(None)` watches the parent it has now;
/// never when `watch` is `None`. Polling `getppid(2)` rather than `PR_SET_PDEATHSIG`, which
/// fires when the *thread* that spawned the process exits, and a tokio runtime's threads come
/// and go. A demo killed while its app started left the app running for good: the app took its
/// new parent (init) for the one to watch (CI, session 33).
async fn orphaned(watch: Option<Option<u32>>) {
    let Some(parent) = watch else {
        return std::future::pending().await;
    };
    let parent = parent
        .and_then(|pid| i32::try_from(pid).ok())
        .map(nix::unistd::Pid::from_raw)
        .unwrap_or_else(nix::unistd::getppid);
    let mut every = tokio::time::interval(Duration::from_millis(250));
    loop {
        every.tick().await;
        if nix::unistd::getppid() != parent {
            return;
        }
    }
}

/// HTTP/1.1 and HTTP/2 with prior knowledge (h2c) on one port, or h2c alone (`h2c_only`,
/// `--h2c`); `idle` is HTTP/1's keep-alive limit.
fn connection_builder(idle: Option<Duration>, h2c_only: bool) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    if h2c_only {
        builder = builder.http2_only();
    }
    if let Some(idle) = idle {
        // hyper starts the header-read timer as soon as it waits for the next request head, so
        // on a keep-alive connection it measures idle time; an idle close sends nothing.
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(idle);
    }
    builder
}

/// Serves one connection; when `drain` fires, finishes the request in flight and closes.
async fn serve_connection(
    app: Arc<App>,
    (builder, h2c_only): (Arc<auto::Builder<TokioExecutor>>, bool),
    stream: TcpStream,
    mut drain: watch::Receiver<()>,
    peer: SocketAddr,
) {
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |req| {
        let app = app.clone();
        async move { Ok::<_, std::convert::Infallible>(app.handle(req).await) }
    });
    let io = TokioIo::new(stream);
    // Both connection kinds drain alike; they share no trait to write it once for.
    macro_rules! until_drained {
        ($conn:expr) => {{
            let conn = $conn;
            tokio::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => result,
                _ = drain.changed() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            }
        }};
    }
    // hyper-util's `http2_only` is ignored by `serve_connection_with_upgrades`; h2c alone has no
    // HTTP/1.1 upgrade (`/ws`) to serve anyway.
    let result = match h2c_only {
        true => until_drained!(builder.serve_connection(io, service)),
        false => until_drained!(builder.serve_connection_with_upgrades(io, service)),
    };
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "sample-app connection ended with an error");
    }
}

/// Resolves after `after`, or never.
async fn exit_timer(after: Option<Duration>) {
    match after {
        Some(after) => tokio::time::sleep(after).await,
        None => std::future::pending().await,
    }
}
