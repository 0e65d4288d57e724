//! `crossfade controller --kube`: the Kubernetes controller (Deployment reconciler and TrafficShift
//! controller) with in-cluster config or the kubeconfig, until SIGTERM or Ctrl-C; and
//! `crossfade proxy --kube`: the proxy with its routes from the cluster
//! (`crossfade_controller::kube::proxy_source`).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use std::path::PathBuf;

use anyhow::Context as _;
use crossfade_controller::kube::health::Health;
use crossfade_controller::kube::proxy_source::{self, ProxySource, SourceOptions};
use crossfade_controller::kube::scrape::ProxyScraper;
use crossfade_controller::kube::shift::PreflightError;
use crossfade_controller::metrics::RolloutMetrics;
use crossfade_proxy::config::ProxyConfig;
use crossfade_proxy::files;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::notify::ServiceManager;
use crate::serve::{
    bind, build_proxy, reload_tls, reopen_access_log, warn_not_reloaded, Signals, Stack,
};
use crate::token::TokenArgs;

/// Arguments of `crossfade controller`.
#[derive(Debug, clap::Args)]
pub struct ControllerArgs {
    /// Run against a Kubernetes cluster (KUBECONFIG or ~/.kube/config, else the in-cluster
    /// service account).
    /// Required: Kubernetes is the only controller mode (`crossfade run` is the local one).
    #[arg(long, required = true)]
    kube: bool,
    /// Watch only this namespace (default: all namespaces, which needs a ClusterRole).
    #[arg(long, env = "CROSSFADE_NAMESPACE", value_parser = crate::flags::namespace)]
    namespace: Option<String>,
    /// Use this kubeconfig file (its current context) instead of the in-cluster service account,
    /// KUBECONFIG or ~/.kube/config.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Read the proxy replicas' Leases (label crossfade.dev/proxy=true) in these namespaces only:
    /// comma-separated and/or repeated (`--proxy-namespace crossfade-proxies,shop`, as kubectl's
    /// list flags). Default: every namespace, which trusts every Lease writer of the cluster with
    /// step acknowledgements, analysis counters and the admin token (docs/security.md).
    #[arg(long, env = "CROSSFADE_PROXY_NAMESPACE", value_name = "NS[,NS...]", value_delimiter = ',', value_parser = crate::flags::namespace)]
    proxy_namespace: Vec<String>,
    /// File holding the bearer token of the proxies' admin API (surrounding whitespace ignored;
    /// the token alone, letters, digits and -._~+/ then optional '=', as the proxies accept),
    /// sent when scraping their /metrics; the proxies' --admin-token-file. Read once at start. `NAMESPACE=FILE`
    /// (repeated): the token of the proxies whose Leases are in NAMESPACE (one of
    /// --proxy-namespace), e.g. sidecars in an application namespace with their own token; a
    /// FILE without NAMESPACE= is the token of the others. (Write `./a=b` for a file named a=b.)
    #[arg(
        long,
        env = "CROSSFADE_PROXY_TOKEN_FILE",
        value_name = "[NAMESPACE=]FILE"
    )]
    proxy_token_file: Vec<String>,
    /// Address of the metrics and health listener: `GET /metrics` (OpenMetrics, or the text
    /// format 0.0.4 when `Accept` does not name it), `/healthz`, `/readyz`; no auth, read-only. Loopback by default; the Deployment manifest sets
    /// `[::]:9902` so that Prometheus and the kubelet's probes reach it.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9902", value_parser = crate::flags::address)]
    metrics: SocketAddr,
    /// How long past its expiry (renewTime + leaseDurationSeconds) a proxy replica's Lease is kept
    /// before the leader deletes it (a replica killed hard leaves it). At least 1m.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = crate::flags::stale_lease_after)]
    stale_lease_after: std::time::Duration,
    /// How often the leader looks for stale proxy Leases (one list per namespace read), the
    /// first time when it starts leading. At least 10s.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = crate::flags::stale_lease_sweep)]
    stale_lease_sweep: std::time::Duration,
    #[command(flatten)]
    election: ElectionArgs,
}

/// Leader election (`crossfade_controller::kube::leader`): of several replicas, one acts.
#[derive(Debug, clap::Args)]
struct ElectionArgs {
    /// Act without electing a leader (one replica only: two would both act). Not with the Lease
    /// flags (`--lease-name`, `--lease-namespace`, `--lease-duration`), which only election uses;
    /// `--identity` still names this replica in its Events. At start it warns when the Lease
    /// (default name and namespace) has a live holder: an elected controller acting meanwhile.
    #[arg(long, conflicts_with_all = ["lease_name", "lease_namespace", "lease_duration"])]
    no_leader_election: bool,
    /// The Lease's name.
    #[arg(long, default_value = crossfade_controller::kube::leader::DEFAULT_LEASE, value_parser = crate::flags::object_name)]
    lease_name: String,
    /// The Lease's namespace (default: env POD_NAMESPACE, else `--namespace`, else `default`).
    #[arg(long, value_parser = crate::flags::namespace)]
    lease_namespace: Option<String>,
    /// This replica's identity in the Lease and in its Events (default: env POD_NAME, else
    /// the hostname and process id; with --no-leader-election, only when given). Not empty, at
    /// most 128 bytes (the API server refuses an Event whose reportingInstance is longer).
    #[arg(long, value_parser = crate::flags::identity)]
    identity: Option<String>,
    /// How long followers wait for the leader to renew before taking over; the leader stops
    /// acting after 2/3 of it without a successful renewal. Whole seconds, at least 3s.
    #[arg(long, default_value = "15s", value_parser = crate::flags::lease_duration)]
    lease_duration: std::time::Duration,
}

impl ElectionArgs {
    fn election(&self, namespace: Option<&str>) -> crossfade_controller::kube::leader::Election {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let identity = self
            .identity
            .clone()
            .or_else(|| env("POD_NAME"))
            .unwrap_or_else(|| {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|h| h.trim().to_owned())
                    .filter(|h| !h.is_empty())
                    .or_else(|| env("HOSTNAME"))
                    .unwrap_or_else(|| "crossfade".into());
                format!("{host}-{}", std::process::id())
            });
        crossfade_controller::kube::leader::Election {
            namespace: self
                .lease_namespace
                .clone()
                .or_else(|| env("POD_NAMESPACE"))
                .or_else(|| namespace.map(str::to_owned))
                .unwrap_or_else(|| "default".into()),
            name: self.lease_name.clone(),
            identity,
            duration: self.lease_duration,
        }
    }
}

/// The `--kube` arguments of `crossfade proxy`.
#[derive(Debug, clap::Args)]
pub struct ProxyKubeArgs {
    /// Read routes, weights and endpoints from a Kubernetes cluster (KUBECONFIG or
    /// ~/.kube/config, else the in-cluster service account) instead of a config file.
    #[arg(long)]
    kube: bool,
    /// With --kube: watch TrafficShifts and EndpointSlices in this namespace only (default: all
    /// namespaces, which needs a ClusterRole).
    #[arg(long, env = "CROSSFADE_NAMESPACE")]
    namespace: Option<String>,
    /// With --kube: use this kubeconfig file (its current context) instead of the in-cluster
    /// service account, KUBECONFIG or ~/.kube/config.
    #[arg(long, requires = "kube")]
    kubeconfig: Option<PathBuf>,
    /// With --kube, sidecar mode: serve only the TrafficShift NAMESPACE/NAME, for every host and
    /// path.
    #[arg(long, requires = "kube", value_name = "NAMESPACE/NAME")]
    route: Option<String>,
    /// With --kube: this replica's identity; its Lease is `crossfade-proxy-<replica>` (the
    /// replica itself when it starts with `crossfade-proxy-`, as the manifests' pod names do),
    /// which must be a valid Kubernetes name (lower-case letters, digits, `-`, `.`). Default: env
    /// POD_NAME, else the host name in lower case.
    #[arg(long, env = "POD_NAME")]
    replica: Option<String>,
    /// With --kube: namespace of this replica's Lease. The controller must list it in its
    /// --proxy-namespace; keep it apart from the controllers' leader Lease, since a grant to
    /// write this replica's Lease covers every Lease of the namespace (deploy/ uses
    /// crossfade-proxy-leases; docs/security.md).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// With --kube: the proxy's own settings (YAML): every key of a proxy config file but `routes`
    /// (`listen`, `admin`, `trust_forwarded_for`, `proxy_protocol`, `drain_timeout`, `drain_grace`,
    /// `limits`, `tls`,
    /// `upstream`, `via`, `access_log`, `request_id`),
    /// validated as in a config file. SIGHUP reloads the TLS certificate and key, reopens the
    /// access log's file, and warns about any other change to this file (it needs a restart).
    #[arg(
        long = "config",
        id = "settings",
        requires = "kube",
        value_name = "FILE"
    )]
    settings: Option<PathBuf>,
    /// With --kube: address of the traffic listener (with CONFIG: its `listen:`) [default:
    /// `listen` of --config, else 127.0.0.1:8080].
    #[arg(long, requires = "kube", value_parser = crate::flags::address)]
    listen: Option<SocketAddr>,
    /// With --kube: address of the admin listener (`/metrics`, `/status`; with CONFIG: its
    /// `admin:`); off loopback it needs a token [default: `admin` of --config, else
    /// 127.0.0.1:9901].
    #[arg(long, requires = "kube", value_parser = crate::flags::address)]
    admin: Option<SocketAddr>,
    /// With --kube: the admin API's base URL as the controller reaches it, written to the Lease.
    /// Default: `http://$POD_IP:<admin port>`, else `http://<admin address>` when it is a specific address,
    /// else `http://<host name>:<admin port>`.
    #[arg(long, env = "CROSSFADE_ADMIN_URL")]
    admin_url: Option<String>,
    /// With --kube: after SIGTERM, keep serving this long (the Lease already deleted) before
    /// draining, so that Services and load balancers stop sending new connections first (e.g.
    /// `5s`).
    #[arg(long, requires = "kube", value_name = "DURATION", default_value = "0s",
          value_parser = crossfade_proxy::duration::parse)]
    shutdown_delay: std::time::Duration,
}

/// `crossfade proxy --kube`: binds both listeners, starts watching the cluster, serves once the
/// first route set is in the table, and on SIGTERM deletes its Lease, then drains.
pub async fn proxy(args: ProxyKubeArgs, token: &TokenArgs) -> anyhow::Result<ExitCode> {
    // Before anything binds: `/readyz` may answer before this task is scheduled again.
    let mut signals = Signals::install();
    // Checked here, not by clap: in `crossfade proxy CONFIG` the environment's values of these
    // are ignored, and must not stop it.
    for (flag, value) in [
        ("--namespace", args.namespace.as_deref()),
        ("--lease-namespace", Some(args.lease_namespace.as_str())),
    ] {
        if let Some(Err(e)) = value.map(crate::flags::namespace) {
            return Err(crate::flags::usage(format!("{flag}: {e}")));
        }
    }
    let given_admin_url = match args.admin_url.as_deref().map(crate::flags::admin_url) {
        Some(Err(e)) => {
            return Err(crate::flags::usage(format!(
                "--admin-url (or env CROSSFADE_ADMIN_URL): {e}"
            )))
        }
        Some(Ok(url)) => Some(url),
        None => None,
    };
    let route = match &args.route {
        None => None,
        Some(text) => Some(parse_route(text, args.namespace.as_deref())?),
    };
    let settings = match &args.settings {
        None => ProxyConfig::default(),
        Some(path) => validated_settings(path)?,
    };
    // Before binding: a replica that cannot name its Lease would fail every write of it.
    let given = args.replica.filter(|r| !r.is_empty());
    let replica = match &given {
        Some(replica) => replica.clone(),
        // A host name may have capitals; Kubernetes names may not.
        None => SourceOptions::default_replica().to_ascii_lowercase(),
    };
    if let Err(e) = crossfade_controller::kube::proxy_lease::check_replica(&replica) {
        // A value given (flag or POD_NAME) is a usage error, exit 2 as every other bad flag
        // value; a host name that makes no Lease name is this machine's, not a usage error.
        return Err(match given {
            Some(_) => crate::flags::usage(format!("--replica (or env POD_NAME): {e}")),
            None => anyhow::anyhow!("--replica (default: the host name): {e}"),
        });
    }
    // The flags win over the file.
    let listen = args.listen.unwrap_or(settings.listen);
    let admin = args.admin.unwrap_or(settings.admin);
    // Before binding anything: an admin API open to the network never starts.
    let auth = token.auth_for(admin)?;
    let listener = bind(listen, "listen").await?;
    let admin = bind(admin, "admin").await?;
    // The bound addresses: with port 0 given, the start line is where to find them.
    let (listen_addr, admin_addr) = (listener.local_addr()?, admin.local_addr()?);
    let config = ProxyConfig {
        listen: listener.local_addr()?,
        admin: admin_addr,
        ..settings.clone()
    };
    let (proxy, mut registry) = build_proxy(&config)?;
    crate::fd_limit::raise_or_warn(config.limits.max_connections, None);
    let metrics = proxy_source::KubeSourceMetrics::register(&mut registry);
    let host = SourceOptions::default_replica();
    let admin_url = given_admin_url.unwrap_or_else(|| {
        let pod_ip = std::env::var("POD_IP").ok();
        proxy_source::admin_url(admin_addr, pod_ip.as_deref(), &host)
    });
    let options = SourceOptions {
        namespace: route.as_ref().map(|(ns, _)| ns.clone()).or(args.namespace),
        route,
        replica,
        lease_namespace: args.lease_namespace,
        admin_url,
    };
    let Connection { client, server } = client(args.kubeconfig.as_deref()).await?;
    tracing::info!(
        namespace = options.namespace.as_deref().unwrap_or("(all)"),
        route = ?options.route.as_ref().map(|(ns, n)| format!("{ns}/{n}")),
        replica = %options.replica,
        lease_namespace = %options.lease_namespace,
        admin_url = %options.admin_url,
        "crossfade proxy starting (routes from the cluster)"
    );
    // SIGTERM while the API server has not answered yet (the CRD check) ends the wait (trial 23).
    let source = tokio::select! {
        started = ProxySource::start(client, proxy.clone(), options, metrics) => {
            started.map_err(|e| server.explain(e.into()))?
        }
        () = signals.wait() => return Ok(ExitCode::SUCCESS),
    };
    tokio::select! {
        () = source.synced() => {}
        () = signals.wait() => {
            source.stop().await;
            return Ok(ExitCode::SUCCESS);
        }
    }
    let stack = Stack::serve(proxy, registry, None, auth, listener, admin);
    let via = stack.proxy.via_pseudonym().unwrap_or("off");
    tracing::info!(version = crossfade_proxy::process::VERSION, pid = std::process::id(), listen = %listen_addr, admin = %admin_addr, via, "proxy serving");
    // Under systemd `Type=notify` or `notify-reload` (see `crate::notify`): ready once the first
    // route set is in the table and both listeners serve (and a first health probe round is over,
    // the one rule of every start; cluster routes have no active checks, so at once); RELOADING=1
    // and READY=1 around a SIGHUP's reload (the TLS pair, the access log's file); stopping when
    // SIGTERM arrives, before the Lease goes and `--shutdown-delay` runs.
    let manager = ServiceManager::from_env();
    let reloading = stack.proxy.clone();
    tokio::select! {
        never = manager.ready_after_first_probes(&reloading) => match never {},
        () = signals.wait_or(|| {
            manager.reloading();
            reload_tls(&reloading);
            reopen_access_log(&reloading);
            if let Some(path) = &args.settings {
                warn_settings_not_reloaded(&settings, path);
            }
            manager.reloaded();
        }) => {}
    }
    manager.stopping();
    source.stop().await;
    if !args.shutdown_delay.is_zero() {
        let delay = crossfade_proxy::duration::show(args.shutdown_delay);
        tracing::info!("still serving for {delay} (--shutdown-delay) before draining");
        tokio::time::sleep(args.shutdown_delay).await;
    }
    stack.stop().await;
    Ok(ExitCode::SUCCESS)
}

/// Everything `crossfade proxy --kube --config FILE` checks of its settings file before it binds
/// anything, and so what `crossfade check FILE` checks of one: every key of a proxy config but
/// `routes` (and `state_file`, refused: the weights live in the cluster), each rule as in a config
/// file, with `tls.cert`, `tls.key` and `access_log` taken from the file's directory and read or
/// opened as a start does.
///
/// # Errors
/// The file cannot be read, or its problems, all at once, under `proxy config FILE is not valid`.
pub fn validated_settings(path: &std::path::Path) -> anyhow::Result<ProxyConfig> {
    let text = files::read_config_string(path)
        .with_context(|| format!("cannot read proxy config {}", path.display()))?;
    let mut settings = ProxyConfig::settings_from_yaml(&text)
        .map_err(|e| anyhow::anyhow!("proxy config {} is not valid:\n{e}", path.display()))?;
    // `tls.cert`, `tls.key` and `access_log` follow the file, as in `crossfade proxy CONFIG`.
    settings.resolve_paths(&crate::serve::base_dir(path)?);
    // Checked here, as `crossfade proxy CONFIG` does, so that a TLS pair or an access log that
    // cannot be opened is named with the file, before anything binds (it was found by the
    // proxy's start, after binding, without the file's name).
    settings
        .check_files(Some(path))
        .map_err(|e| anyhow::anyhow!("proxy config {} is not valid:\n{e}", path.display()))?;
    Ok(settings)
}

/// SIGHUP with `--config`: the settings file is read again only to warn about changes, which
/// need a restart (the routes come from the cluster; the TLS pair is reloaded on its own).
fn warn_settings_not_reloaded(in_force: &ProxyConfig, path: &std::path::Path) {
    let file = files::read_config_string(path)
        .map_err(|e| e.to_string())
        .and_then(|text| ProxyConfig::settings_from_yaml(&text).map_err(|e| e.to_string()))
        .and_then(|mut file| {
            let base = crate::serve::base_dir(path).map_err(|e| format!("{e:#}"))?;
            file.resolve_paths(&base);
            Ok(file)
        });
    match file {
        Ok(file) => warn_not_reloaded(in_force, &file, path),
        Err(e) => tracing::warn!("SIGHUP: cannot read {} to compare it: {e}", path.display()),
    }
}

/// `--route NAMESPACE/NAME`, checked against `--namespace` when both are given. The namespace
/// must be one ([`crate::flags::namespace`]) and the name one a TrafficShift can have
/// ([`check_shift_name`](crossfade_controller::kube::crd::name::check_shift_name)): a sidecar
/// given `Shop/web` or `shop/Web` waited for a TrafficShift that can never exist, logged as one
/// not created yet (trial 30); it is a usage error instead.
fn parse_route(text: &str, namespace: Option<&str>) -> anyhow::Result<(String, String)> {
    let (ns, name) = text
        .split_once('/')
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains('/'))
        .ok_or_else(|| {
            crate::flags::usage(format!(
                "--route {text:?}: expected NAMESPACE/NAME of a TrafficShift"
            ))
        })?;
    let named = crate::flags::namespace(ns)
        .map(drop)
        .and_then(|()| crossfade_controller::kube::crd::name::check_shift_name(name));
    if let Err(e) = named {
        return Err(crate::flags::usage(format!("--route {text:?}: {e}")));
    }
    if let Some(other) = namespace.filter(|other| *other != ns) {
        return Err(crate::flags::usage(format!(
            "--route {text}: its namespace {ns:?} differs from --namespace {other:?}"
        )));
    }
    Ok((ns.to_owned(), name.to_owned()))
}

/// Connects, checks the CRD is installed, and runs until a shutdown signal.
pub async fn controller(args: ControllerArgs) -> anyhow::Result<ExitCode> {
    debug_assert!(args.kube);
    // Before anything binds: `/readyz` may answer before this task is scheduled again.
    let mut signals = Signals::install();
    let tokens = proxy_tokens(&args.proxy_token_file, &args.proxy_namespace)?;
    let Connection {
        client,
        server: api,
    } = client(args.kubeconfig.as_deref()).await?;
    let namespace = args.namespace.as_deref();
    let listener = bind(args.metrics, "metrics").await?;
    let metrics_addr = listener.local_addr()?;
    let mut registry = prometheus_client::registry::Registry::with_prefix("crossfade");
    let rollout_metrics = RolloutMetrics::register(&mut registry);
    let health = Health::new(registry);
    let server = tokio::spawn(health.clone().serve(listener));
    let _server = AbortOnDrop(server);
    tracing::info!(
        namespace = namespace.unwrap_or("(all)"),
        proxy_namespaces = %match args.proxy_namespace.is_empty() {
            true => "(all)".to_owned(),
            false => args.proxy_namespace.join(","),
        },
        metrics = %metrics_addr,
        version = crossfade_proxy::process::VERSION,
        pid = std::process::id(),
        "crossfade controller starting"
    );
    if let Some(warning) = tokenless(&tokens, &args.proxy_namespace) {
        tracing::warn!("{warning}");
    }
    // Ready once the CRD is there (checked again by `run`): the same check that makes it exit.
    // SIGTERM while the API server has not answered yet ends the wait (trial 23). In the
    // cluster, an API server not reachable yet is waited for ([`ApiServer::waits_for`]).
    let mut wait = crossfade_controller::kube::proxies::CHECK_RETRY_FIRST;
    loop {
        tokio::select! {
            checked = crossfade_controller::kube::shift::preflight(&client) => match checked {
                Ok(()) => break,
                Err(e) if api.waits_for(&e) => {
                    let e = api.explain(e.into());
                    tracing::warn!(retry_in = ?wait, "{}; trying again", crate::report(&e));
                }
                Err(e) => return Err(api.explain(e.into())),
            },
            () = signals.wait() => {
                tracing::info!("crossfade controller stopping");
                return Ok(ExitCode::SUCCESS);
            }
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = signals.wait() => {
                tracing::info!("crossfade controller stopping");
                return Ok(ExitCode::SUCCESS);
            }
        }
        wait = (wait * 2).min(crossfade_controller::kube::proxies::CHECK_RETRY_MAX);
    }
    // What the controllers watch, listable: a refusal ends the start naming the grant (trial 30).
    tokio::select! {
        checked = crossfade_controller::kube::shift::check_watches(&client, namespace) => checked?,
        () = signals.wait() => {
            tracing::info!("crossfade controller stopping");
            return Ok(ExitCode::SUCCESS);
        }
    }
    let proxy_namespaces = args.proxy_namespace.as_slice();
    // Each namespace of --proxy-namespace readable, once (kube28): a refusal ends the start
    // naming it; an API server not answering is waited for (not ready meanwhile).
    let proxies =
        crossfade_controller::kube::proxies::Proxies::new(client.clone(), proxy_namespaces);
    let retrying = |failure: &str, wait: std::time::Duration| {
        tracing::warn!(retry_in = ?wait, "{failure}; trying again");
    };
    tokio::select! {
        checked = proxies.check_readable(retrying) => {
            for (namespace, leases) in checked? {
                tracing::info!(
                    namespace = namespace.as_deref().unwrap_or("(all)"),
                    leases,
                    "proxy Leases readable"
                );
            }
        }
        () = signals.wait() => {
            tracing::info!("crossfade controller stopping");
            return Ok(ExitCode::SUCCESS);
        }
    }
    health.set_ready();
    let scraper = Arc::new(ProxyScraper::with_tokens(tokens));
    let options = crossfade_controller::kube::Controllers {
        proxy_namespaces: proxy_namespaces.to_vec(),
        rollout_metrics,
        instance: args.election.identity.clone(),
        stale_leases: crossfade_controller::kube::stale_leases::StaleLeases {
            after: args.stale_lease_after,
            every: args.stale_lease_sweep,
        },
        ..crossfade_controller::kube::Controllers::new(namespace, scraper)
    };
    if !args.election.no_leader_election {
        let election = args.election.election(namespace);
        tracing::info!(lease = %format!("{}/{}", election.namespace, election.name),
            identity = %election.identity, "waiting to lead");
        let run = crossfade_controller::kube::run_elected(client, &options, election, async move {
            signals.wait().await
        });
        run.await.map_err(|e| api.explain(e.into()))?;
        tracing::info!("crossfade controller stopping");
        return Ok(ExitCode::SUCCESS);
    }
    warn_if_led(&client, &args.election.election(namespace)).await;
    // The CRD was checked above (preflight): the controllers themselves, Events naming
    // `--identity` when given.
    let run = crossfade_controller::kube::controllers(client, &options);
    tokio::select! {
        () = run => Ok(ExitCode::SUCCESS),
        () = signals.wait() => {
            tracing::info!("crossfade controller stopping");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `--no-leader-election`: a WARN when the election's Lease has a live holder, i.e. an elected
/// controller acts on this cluster, and this one would act next to it (trial 10, K20). A Lease
/// that cannot be read (no RBAC for it, say) is only logged at debug level: the warning is a
/// courtesy, not a guard.
async fn warn_if_led(
    client: &kube::Client,
    election: &crossfade_controller::kube::leader::Election,
) {
    let lease = format!("{}/{}", election.namespace, election.name);
    match crossfade_controller::kube::leader::live_holder(
        client.clone(),
        &election.namespace,
        &election.name,
    )
    .await
    {
        Ok(Some(holder)) => tracing::warn!(
            lease = %lease,
            holder = %holder,
            "--no-leader-election, but lease {lease} is held by {holder}, renewed within its \
             duration: an elected controller is acting; both would act on the same \
             TrafficShifts (stop one of them)"
        ),
        Ok(None) => {}
        Err(e) => tracing::debug!(lease = %lease, "cannot read the leader lease: {e}"),
    }
}

/// Aborts the task when dropped (the metrics listener goes with the controller).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The proxies' admin tokens from `--proxy-token-file [NAMESPACE=]FILE` (`entries`): at most one
/// default, at most one per namespace, each namespace one of `proxy_namespaces` when that is
/// given (a token for a namespace whose Leases are never read is a mistake). An entry is
/// `NAMESPACE=FILE` when it has a `=` with no `/` before it.
///
/// # Errors
/// A usage error naming the entry for a bad namespace, a repeat or a namespace not read; an
/// unreadable or empty file, naming it.
fn proxy_tokens(
    entries: &[String],
    proxy_namespaces: &[String],
) -> anyhow::Result<crossfade_controller::kube::scrape::ProxyTokens> {
    let mut tokens = crossfade_controller::kube::scrape::ProxyTokens::default();
    for entry in entries {
        let (namespace, path) = match entry.split_once('=') {
            Some((ns, path)) if !ns.contains('/') => {
                let ns = crate::flags::namespace(ns)
                    .map_err(|e| crate::flags::usage(format!("--proxy-token-file {entry}: {e}")))?;
                (Some(ns), path)
            }
            _ => (None, entry.as_str()),
        };
        if path.is_empty() {
            return Err(crate::flags::usage(format!(
                "--proxy-token-file {entry}: no FILE after NAMESPACE= (write NAMESPACE=FILE)"
            )));
        }
        let path = std::path::Path::new(path);
        let text = files::read_bounded_string(path, files::MAX_SECRET_BYTES)
            .with_context(|| format!("--proxy-token-file {entry}: cannot read it"))?;
        let token = text.trim();
        anyhow::ensure!(
            !token.is_empty(),
            "--proxy-token-file {entry}: the file is empty"
        );
        if let Err(why) = token_syntax(token) {
            anyhow::bail!("--proxy-token-file {entry}: {why}");
        }
        let token = token.to_owned();
        match namespace {
            None if tokens.default.is_some() => {
                return Err(crate::flags::usage(format!(
                    "--proxy-token-file {entry}: a second file without NAMESPACE=: one token is the default, write NAMESPACE=FILE for the proxies of a namespace"
                )));
            }
            None => tokens.default = Some(token),
            Some(ns) if !proxy_namespaces.is_empty() && !proxy_namespaces.contains(&ns) => {
                return Err(crate::flags::usage(format!(
                    "--proxy-token-file {entry}: namespace {ns} is not in --proxy-namespace ({}): no proxy Lease is read there",
                    proxy_namespaces.join(",")
                )));
            }
            Some(ns) if tokens.by_namespace.contains_key(&ns) => {
                return Err(crate::flags::usage(format!(
                    "--proxy-token-file {entry}: namespace {ns} is given a token twice"
                )));
            }
            Some(ns) => {
                tokens.by_namespace.insert(ns, token);
            }
        }
    }
    Ok(tokens)
}

/// The warning for `--proxy-token-file NAMESPACE=FILE` given without a default `FILE`: the
/// proxies whose Leases are in a namespace read (`proxy_namespaces`, empty for every namespace)
/// that has no token of its own are scraped without one, and an admin API off loopback (every
/// proxy in a cluster) answers 401 to each scrape. `None` when every namespace read has a token,
/// or when no token is given at all (proxies whose admin API is on loopback need none).
fn tokenless(
    tokens: &crossfade_controller::kube::scrape::ProxyTokens,
    proxy_namespaces: &[String],
) -> Option<String> {
    if tokens.default.is_some() || tokens.by_namespace.is_empty() {
        return None;
    }
    let given: Vec<&str> = tokens.by_namespace.keys().map(String::as_str).collect();
    let place = if proxy_namespaces.is_empty() {
        format!("every namespace but {}", given.join(", "))
    } else {
        let mut left: Vec<&str> = proxy_namespaces
            .iter()
            .map(String::as_str)
            .filter(|ns| !tokens.by_namespace.contains_key(*ns))
            .collect();
        left.sort_unstable();
        left.dedup();
        if left.is_empty() {
            return None;
        }
        format!("namespace {} (--proxy-namespace)", left.join(", "))
    };
    Some(format!(
        "--proxy-token-file gives tokens for namespace {} only, and no FILE without NAMESPACE=: the proxies whose Leases are in {place} are scraped without a token, and an admin API off loopback answers 401, each analysis they take part in inconclusive; give them a token (FILE, or NAMESPACE=FILE)",
        given.join(", ")
    ))
}

/// Why the proxies' admin API could never accept `token` (already trimmed, not empty) as its
/// `--admin-token-file`, in words that say how to fix the file: the proxies refuse at start a
/// token outside RFC 6750's `b64token` ([`AdminAuth::with_token`]), so a controller sending one
/// would get 401 (or an invalid header) from every proxy, each analysis inconclusive.
///
/// [`AdminAuth::with_token`]: crossfade_proxy::admin::AdminAuth::with_token
///
/// # Errors
/// The reason: a `Bearer ` scheme written before the token, more than one line, or the first
/// character outside the syntax.
fn token_syntax(token: &str) -> Result<(), String> {
    let Err(crossfade_proxy::admin::AdminAuthError::InvalidToken { why, .. }) =
        crossfade_proxy::admin::AdminAuth::with_token(token, "")
    else {
        return Ok(());
    };
    let scheme = token
        .split_once(char::is_whitespace)
        .is_some_and(|(first, _)| first.eq_ignore_ascii_case("bearer"));
    let hint = if scheme {
        "it starts with the scheme `Bearer`: the file holds the token alone (the controller sends `Authorization: Bearer <token>`)"
    } else if token.lines().nth(1).is_some() {
        "it holds more than one line: the file holds one token, the proxies' --admin-token-file"
    } else {
        "it is not one the proxies' --admin-token-file accepts"
    };
    Err(format!("{hint}; {why}"))
}

/// A Kubernetes client and the API server it talks to.
pub struct Connection {
    /// The client.
    pub client: kube::Client,
    /// Its API server and where that came from, for the errors that cannot reach it.
    pub server: ApiServer,
}

/// An API server's URL and where crossfade found it: `http://127.0.0.1:26399 (from --kubeconfig
/// k.yaml, context kmock)`, `https://10.96.0.1:443 (from the in-cluster service account)`.
#[derive(Clone, Debug)]
pub struct ApiServer {
    url: String,
    from: String,
    /// Found through the in-cluster service account (no kubeconfig).
    in_cluster: bool,
}

impl std::fmt::Display for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (from {})", self.url, self.from)
    }
}

impl ApiServer {
    /// Whether `crossfade controller --kube` waits, rather than exits, when its first request
    /// fails with `error`: only in the cluster (the in-cluster service account), and only when
    /// the API server could not be reached or did not answer. A pod started before the API
    /// server (or its Service, or the node's network) is reachable then waits, not ready,
    /// instead of crash-looping; with a kubeconfig, an address that does not answer is most
    /// often the wrong context or a stopped cluster, said at once (trial 10, K22).
    pub fn waits_for(&self, error: &PreflightError) -> bool {
        self.in_cluster
            && match error {
                PreflightError::NoAnswer => true,
                PreflightError::Unreachable(e) => {
                    crossfade_controller::kube::proxies::is_transient(e)
                }
                PreflightError::CrdMissing | PreflightError::Refused(_) => false,
            }
    }

    /// `error`, led by the API server's URL and its origin when it is one of not reaching the
    /// server (a connection refused, a DNS or TLS failure, a timeout: kube's `HyperError` and
    /// `ServiceError`); other errors (a 404, a refused command) as they are (trial 10, K22: the
    /// message said "Connection refused" without saying to what).
    pub fn explain(&self, error: anyhow::Error) -> anyhow::Error {
        let unreachable = error.chain().any(|cause| {
            matches!(
                cause.downcast_ref::<kube::Error>(),
                Some(kube::Error::HyperError(_) | kube::Error::Service(_))
            ) || matches!(
                cause.downcast_ref::<PreflightError>(),
                Some(PreflightError::NoAnswer)
            ) || cause.downcast_ref::<NoAnswer>().is_some()
                || matches!(
                    cause.downcast_ref::<crossfade_controller::kube::ops::OpsError>(),
                    Some(crossfade_controller::kube::ops::OpsError::NoAnswer { .. })
                )
        });
        if unreachable {
            error.context(format!("Kubernetes API server {self}"))
        } else {
            error
        }
    }
}

/// An API server that took the connection but did not answer a command's request within the
/// time given (kube bounds only the connection: `status --kube` waited for ever, trial 23).
#[derive(Debug)]
pub struct NoAnswer {
    /// What was asked, e.g. `status of trafficshift default/web`.
    pub what: String,
    /// How long it was waited for.
    pub waited: std::time::Duration,
}

impl std::fmt::Display for NoAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "no answer within {}s to {} (the server took the connection: is it a Kubernetes API \
             server, and is it up?)",
            self.waited.as_secs(),
            self.what
        )
    }
}

impl std::error::Error for NoAnswer {}

/// A client from `kubeconfig` (its current context), else from KUBECONFIG or ~/.kube/config (its
/// current context), else the in-cluster service account: the order of `kube::Client::try_default`,
/// with where the API server came from kept for errors ([`ApiServer`]).
pub async fn client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<Connection> {
    let context_of = |file: &Kubeconfig| {
        file.current_context
            .as_deref()
            .map(|c| format!(", context {c}"))
            .unwrap_or_default()
    };
    let mut in_cluster = false;
    let (config, from) = match kubeconfig {
        Some(path) => {
            // kube's errors already carry their cause in their message: no context chain on top.
            let bad =
                |e: &dyn std::fmt::Display| anyhow::anyhow!("--kubeconfig {}: {e}", path.display());
            let file = Kubeconfig::read_from(path).map_err(|e| match e {
                // kube's own words quote the path twice (`'"/x"'`, session 41).
                kube::config::KubeconfigError::ReadConfig(io, _) => bad(&io),
                e => bad(&e),
            })?;
            let from = format!("--kubeconfig {}{}", path.display(), context_of(&file));
            let config = kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(|e| bad(&e))?;
            (config, from)
        }
        None => match kube::Config::from_kubeconfig(&KubeConfigOptions::default()).await {
            Ok(config) => {
                let file = match std::env::var("KUBECONFIG") {
                    Ok(paths) if !paths.is_empty() => format!("KUBECONFIG {paths}"),
                    _ => "~/.kube/config".to_owned(),
                };
                let context = Kubeconfig::read()
                    .map(|k| context_of(&k))
                    .unwrap_or_default();
                (config, format!("{file}{context}"))
            }
            Err(kubeconfig) => match kube::Config::incluster() {
                Ok(config) => {
                    in_cluster = true;
                    (config, "the in-cluster service account".to_owned())
                }
                Err(in_cluster) => anyhow::bail!(
                    "no Kubernetes configuration (in-cluster service account, KUBECONFIG or \
                     ~/.kube/config): kubeconfig: {kubeconfig}; in-cluster: {in_cluster}"
                ),
            },
        },
    };
    let server = ApiServer {
        url: config
            .cluster_url
            .to_string()
            .trim_end_matches('/')
            .to_owned(),
        from,
        in_cluster,
    };
    let client = kube::Client::try_from(config).context("kubernetes client")?;
    Ok(Connection { client, server })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(in_cluster: bool) -> ApiServer {
        ApiServer {
            url: "https://10.96.0.1:443".to_owned(),
            from: "the in-cluster service account".to_owned(),
            in_cluster,
        }
    }

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(
            serde_json::from_value(serde_json::json!({
                "status": "Failure", "message": "m", "reason": "r", "code": code
            }))
            .expect("status"),
        )
    }

    /// Kube28: `--proxy-token-file [NAMESPACE=]FILE`: one default, one per namespace of
    /// `--proxy-namespace`; the rest refused naming the entry.
    #[test]
    fn proxy_token_files_give_a_default_and_one_token_per_lease_namespace() {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write");
            path.display().to_string()
        };
        let (ingress, shop) = (write("ingress", "i-token\n"), write("shop", " s-token "));
        let namespaces = ["crossfade-proxy-leases".to_owned(), "shop".to_owned()];
        let tokens =
            proxy_tokens(&[ingress.clone(), format!("shop={shop}")], &namespaces).expect("valid");
        assert_eq!(tokens.default.as_deref(), Some("i-token"));
        assert_eq!(
            tokens.by_namespace,
            std::collections::BTreeMap::from([("shop".to_owned(), "s-token".to_owned())])
        );
        // A path with a `/` before its `=` is a file, whatever follows.
        let odd = write("a=b", "odd");
        let tokens = proxy_tokens(std::slice::from_ref(&odd), &[]).expect("a file");
        assert_eq!(tokens.default.as_deref(), Some("odd"));
        let refused = |entries: &[String]| {
            let e = proxy_tokens(entries, &namespaces).expect_err("refused");
            (crate::flags::is_usage(&e), crate::report(&e))
        };
        assert_eq!(
            refused(&[format!("elsewhere={shop}")]),
            (true, format!("--proxy-token-file elsewhere={shop}: namespace elsewhere is not in --proxy-namespace (crossfade-proxy-leases,shop): no proxy Lease is read there"))
        );
        assert_eq!(
            refused(&[ingress.clone(), shop.clone()]),
            (true, format!("--proxy-token-file {shop}: a second file without NAMESPACE=: one token is the default, write NAMESPACE=FILE for the proxies of a namespace"))
        );
        assert_eq!(
            refused(&[format!("shop={shop}"), format!("shop={ingress}")]),
            (
                true,
                format!("--proxy-token-file shop={ingress}: namespace shop is given a token twice")
            )
        );
        let (usage, text) = refused(&[format!("Shop={shop}")]);
        assert!(
            usage && text.starts_with(&format!("--proxy-token-file Shop={shop}: ")),
            "{text}"
        );
        // Kubetry28: `shop=` names no file; a token no proxy accepts is refused at start.
        assert_eq!(
            refused(&["shop=".to_owned()]),
            (
                true,
                "--proxy-token-file shop=: no FILE after NAMESPACE= (write NAMESPACE=FILE)"
                    .to_owned()
            )
        );
        let bearer = write("bearer", "Bearer s-token\n");
        let (usage, text) = refused(&[format!("shop={bearer}")]);
        assert!(
            !usage
                && text.starts_with(&format!(
                    "--proxy-token-file shop={bearer}: it starts with the scheme `Bearer`"
                )),
            "{text}"
        );
        // Kubetry28: namespaced tokens without a default leave the others' proxies without one.
        let shop_only = proxy_tokens(&[format!("shop={shop}")], &namespaces).expect("valid");
        assert_eq!(
            tokenless(&shop_only, &namespaces).as_deref(),
            Some("--proxy-token-file gives tokens for namespace shop only, and no FILE without NAMESPACE=: the proxies whose Leases are in namespace crossfade-proxy-leases (--proxy-namespace) are scraped without a token, and an admin API off loopback answers 401, each analysis they take part in inconclusive; give them a token (FILE, or NAMESPACE=FILE)")
        );
        let everywhere = proxy_tokens(&[format!("shop={shop}")], &[]).expect("valid");
        assert!(
            tokenless(&everywhere, &[])
                .is_some_and(|w| w.contains("the proxies whose Leases are in every namespace but shop are scraped without a token")),
            "{everywhere:?}"
        );
        let shop_alone = ["shop".to_owned()];
        assert_eq!(tokenless(&shop_only, &shop_alone), None);
        let both =
            proxy_tokens(&[ingress.clone(), format!("shop={shop}")], &namespaces).expect("valid");
        assert_eq!(tokenless(&both, &namespaces), None);
        assert_eq!(tokenless(&Default::default(), &namespaces), None);
        let empty = write("empty", "\n");
        assert_eq!(
            refused(&[format!("shop={empty}")]),
            (
                false,
                format!("--proxy-token-file shop={empty}: the file is empty")
            )
        );
    }

    /// Kube28: in the cluster, an API server that cannot be reached or answers 5xx at the first
    /// request is waited for (the pod does not crash-loop); a refusal, a missing CRD, or any
    /// failure with a kubeconfig ends the start at once.
    #[test]
    fn only_an_in_cluster_controller_waits_for_an_api_server_it_cannot_reach_yet() {
        let in_cluster = server(true);
        assert!(in_cluster.waits_for(&PreflightError::NoAnswer));
        assert!(in_cluster.waits_for(&PreflightError::Unreachable(api_error(500))));
        assert!(in_cluster.waits_for(&PreflightError::Unreachable(api_error(429))));
        assert!(!in_cluster.waits_for(&PreflightError::Unreachable(api_error(403))));
        assert!(!in_cluster.waits_for(&PreflightError::Unreachable(api_error(401))));
        assert!(!in_cluster.waits_for(&PreflightError::CrdMissing));
        let laptop = server(false);
        assert!(!laptop.waits_for(&PreflightError::NoAnswer));
        assert!(!laptop.waits_for(&PreflightError::Unreachable(api_error(500))));
    }
}
