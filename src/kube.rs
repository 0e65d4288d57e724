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
use crossfade_controller::metrics::RolloutMetrics;
use crossfade_proxy::config::ProxyConfig;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::serve::{
    bind, build_proxy, reload_tls, reopen_access_log, warn_not_reloaded, Signals, Stack,
};
use crate::token::TokenArgs;

/// Arguments of `crossfade controller`.
#[derive(Debug, clap::Args)]
pub struct ControllerArgs {
    /// Run against a Kubernetes cluster (in-cluster config, else KUBECONFIG or ~/.kube/config).
    /// Required: Kubernetes is the only controller mode (`crossfade run` is the local one).
    #[arg(long, required = true)]
    kube: bool,
    /// Watch only this namespace (default: all namespaces, which needs a ClusterRole).
    #[arg(long, env = "CROSSFADE_NAMESPACE")]
    namespace: Option<String>,
    /// Use this kubeconfig file (its current context) instead of the in-cluster service account,
    /// KUBECONFIG or ~/.kube/config.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Read the proxy replicas' Leases (label crossfade.dev/proxy=true) in this namespace only
    /// (default: all namespaces).
    #[arg(long, env = "CROSSFADE_PROXY_NAMESPACE", value_name = "NS")]
    proxy_namespace: Option<String>,
    /// File holding the bearer token of the proxies' admin API (surrounding whitespace ignored),
    /// sent when scraping their /metrics; the proxies' --admin-token-file.
    #[arg(long, env = "CROSSFADE_PROXY_TOKEN_FILE", value_name = "FILE")]
    proxy_token_file: Option<PathBuf>,
    /// Address of the metrics and health listener: `GET /metrics` (OpenMetrics), `/healthz`,
    /// `/readyz`; no auth, read-only. Loopback by default; the Deployment manifest sets
    /// `0.0.0.0:9902` so that Prometheus and the kubelet's probes reach it.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9902", value_parser = crate::flags::address)]
    metrics: SocketAddr,
    #[command(flatten)]
    election: ElectionArgs,
}

/// Leader election (`crossfade_controller::kube::leader`): of several replicas, one acts.
#[derive(Debug, clap::Args)]
struct ElectionArgs {
    /// Act without electing a leader (one replica only: two would both act).
    #[arg(long)]
    no_leader_election: bool,
    /// The Lease's name.
    #[arg(long, default_value = crossfade_controller::kube::leader::DEFAULT_LEASE)]
    lease_name: String,
    /// The Lease's namespace (default: env POD_NAMESPACE, else `--namespace`, else `default`).
    #[arg(long)]
    lease_namespace: Option<String>,
    /// This replica's identity in the Lease and in its Events (default: env POD_NAME, else
    /// the hostname and process id).
    #[arg(long)]
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
    /// Read routes, weights and endpoints from a Kubernetes cluster (in-cluster config, else
    /// KUBECONFIG or ~/.kube/config) instead of a config file.
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
    /// With --kube: this replica's identity; its Lease is `crossfade-proxy-<replica>`. Default:
    /// env POD_NAME, else the host name.
    #[arg(long, env = "POD_NAME")]
    replica: Option<String>,
    /// With --kube: namespace of this replica's Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// With --kube: the proxy's own settings (YAML): every key of a proxy config file but `routes`
    /// (`listen`, `admin`, `trust_forwarded_for`, `drain_timeout`, `drain_grace`, `limits`, `tls`,
    /// `upstream`, `via`, `access_log`),
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
    let route = match &args.route {
        None => None,
        Some(text) => Some(parse_route(text, args.namespace.as_deref())?),
    };
    let settings = match &args.settings {
        None => ProxyConfig::default(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read proxy config {}", path.display()))?;
            ProxyConfig::settings_from_yaml(&text).map_err(|e| {
                anyhow::anyhow!("proxy config {} is not valid:\n{e}", path.display())
            })?
        }
    };
    // The flags win over the file.
    let listen = args.listen.unwrap_or(settings.listen);
    let admin = args.admin.unwrap_or(settings.admin);
    // Before binding anything: an admin API open to the network never starts.
    let auth = token.auth_for(admin)?;
    let listener = bind(listen, "listen").await?;
    let admin = bind(admin, "admin").await?;
    let admin_addr = admin.local_addr()?;
    let config = ProxyConfig {
        listen: listener.local_addr()?,
        admin: admin_addr,
        ..settings.clone()
    };
    let (proxy, mut registry) = build_proxy(&config)?;
    let metrics = proxy_source::KubeSourceMetrics::register(&mut registry);
    let replica = args
        .replica
        .filter(|r| !r.is_empty())
        .unwrap_or_else(SourceOptions::default_replica);
    let host = SourceOptions::default_replica();
    let admin_url = args.admin_url.unwrap_or_else(|| {
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
    let client = client(args.kubeconfig.as_deref()).await?;
    tracing::info!(
        namespace = options.namespace.as_deref().unwrap_or("(all)"),
        route = ?options.route.as_ref().map(|(ns, n)| format!("{ns}/{n}")),
        replica = %options.replica,
        lease_namespace = %options.lease_namespace,
        admin_url = %options.admin_url,
        "crossfade proxy starting (routes from the cluster)"
    );
    let source = ProxySource::start(client, proxy.clone(), options, metrics).await?;
    tokio::select! {
        () = source.synced() => {}
        () = signals.wait() => {
            source.stop().await;
            return Ok(ExitCode::SUCCESS);
        }
    }
    let stack = Stack::serve(proxy, registry, None, auth, listener, admin);
    let via = stack.proxy.via_pseudonym().unwrap_or("off");
    tracing::info!(version = crossfade_proxy::process::VERSION, pid = std::process::id(), listen = %config.listen, admin = %admin_addr, via, "proxy serving");
    let reloading = stack.proxy.clone();
    signals
        .wait_or(|| {
            reload_tls(&reloading);
            reopen_access_log(&reloading);
            if let Some(path) = &args.settings {
                warn_settings_not_reloaded(&settings, path);
            }
        })
        .await;
    source.stop().await;
    if !args.shutdown_delay.is_zero() {
        let delay = humantime::format_duration(args.shutdown_delay);
        tracing::info!("still serving for {delay} (--shutdown-delay) before draining");
        tokio::time::sleep(args.shutdown_delay).await;
    }
    stack.stop().await;
    Ok(ExitCode::SUCCESS)
}

/// SIGHUP with `--config`: the settings file is read again only to warn about changes, which
/// need a restart (the routes come from the cluster; the TLS pair is reloaded on its own).
fn warn_settings_not_reloaded(in_force: &ProxyConfig, path: &std::path::Path) {
    let file = std::fs::read_to_string(path)
        .map_err(|e| e.to_string())
        .and_then(|text| ProxyConfig::settings_from_yaml(&text).map_err(|e| e.to_string()));
    match file {
        Ok(file) => warn_not_reloaded(in_force, &file, path),
        Err(e) => tracing::warn!("SIGHUP: cannot read {} to compare it: {e}", path.display()),
    }
}

/// `--route NAMESPACE/NAME`, checked against `--namespace` when both are given.
fn parse_route(text: &str, namespace: Option<&str>) -> anyhow::Result<(String, String)> {
    let (ns, name) = text
        .split_once('/')
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains('/'))
        .with_context(|| format!("--route {text:?}: expected NAMESPACE/NAME of a TrafficShift"))?;
    if let Some(other) = namespace.filter(|other| *other != ns) {
        anyhow::bail!("--route {text}: its namespace {ns:?} differs from --namespace {other:?}");
    }
    Ok((ns.to_owned(), name.to_owned()))
}

/// Connects, checks the CRD is installed, and runs until a shutdown signal.
pub async fn controller(args: ControllerArgs) -> anyhow::Result<ExitCode> {
    debug_assert!(args.kube);
    // Before anything binds: `/readyz` may answer before this task is scheduled again.
    let mut signals = Signals::install();
    let token = proxy_token(args.proxy_token_file.as_deref())?;
    let client = client(args.kubeconfig.as_deref()).await?;
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
        metrics = %metrics_addr,
        version = crossfade_proxy::process::VERSION,
        pid = std::process::id(),
        "crossfade controller starting"
    );
    // Ready once the CRD is there (checked again by `run`): the same check that makes it exit.
    crossfade_controller::kube::shift::preflight(&client).await?;
    health.set_ready();
    let scraper = Arc::new(ProxyScraper::new(token));
    let proxy_namespace = args.proxy_namespace.as_deref();
    if !args.election.no_leader_election {
        let election = args.election.election(namespace);
        tracing::info!(lease = %format!("{}/{}", election.namespace, election.name),
            identity = %election.identity, "waiting to lead");
        let run = crossfade_controller::kube::run_elected(
            client,
            namespace,
            proxy_namespace,
            scraper,
            rollout_metrics,
            election,
            async move { signals.wait().await },
        );
        run.await?;
        tracing::info!("crossfade controller stopping");
        return Ok(ExitCode::SUCCESS);
    }
    let run = crossfade_controller::kube::run(
        client,
        namespace,
        proxy_namespace,
        scraper,
        rollout_metrics,
    );
    tokio::select! {
        result = run => result.map(|()| ExitCode::SUCCESS).map_err(Into::into),
        () = signals.wait() => {
            tracing::info!("crossfade controller stopping");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Aborts the task when dropped (the metrics listener goes with the controller).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The proxies' admin token from `--proxy-token-file`, if given.
fn proxy_token(path: Option<&std::path::Path>) -> anyhow::Result<Option<String>> {
    let Some(path) = path else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--proxy-token-file {}: cannot read it", path.display()))?;
    let token = text.trim();
    anyhow::ensure!(
        !token.is_empty(),
        "--proxy-token-file {}: the file is empty",
        path.display()
    );
    Ok(Some(token.to_owned()))
}

/// A client from `kubeconfig` (its current context), else in-cluster config, KUBECONFIG or
/// ~/.kube/config.
pub async fn client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    let Some(path) = kubeconfig else {
        return kube::Client::try_default().await.context(
            "no Kubernetes configuration (in-cluster service account, KUBECONFIG or ~/.kube/config)",
        );
    };
    // kube's errors already carry their cause in their message: no context chain on top.
    let bad = |e: &dyn std::fmt::Display| anyhow::anyhow!("--kubeconfig {}: {e}", path.display());
    let file = Kubeconfig::read_from(path).map_err(|e| bad(&e))?;
    let config = kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
        .await
        .map_err(|e| bad(&e))?;
    kube::Client::try_from(config).context("kubernetes client")
}
