//! `crossfade controller --kube`: the Kubernetes controller (Deployment reconciler and TrafficShift
//! controller) with in-cluster config or the kubeconfig, until SIGTERM or Ctrl-C.

use std::process::ExitCode;
use std::sync::Arc;

use std::path::PathBuf;

use anyhow::Context as _;
use crossfade_controller::kube::shift::NoProxyMetrics;
use kube::config::{KubeConfigOptions, Kubeconfig};

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
    /// acting after 2/3 of it without a successful renewal.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
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

/// Connects, checks the CRD is installed, and runs until a shutdown signal.
pub async fn controller(args: ControllerArgs) -> anyhow::Result<ExitCode> {
    debug_assert!(args.kube);
    let client = client(args.kubeconfig.as_deref()).await?;
    let namespace = args.namespace.as_deref();
    tracing::info!(
        namespace = namespace.unwrap_or("(all)"),
        "crossfade controller starting"
    );
    let metrics = Arc::new(NoProxyMetrics);
    if !args.election.no_leader_election {
        let election = args.election.election(namespace);
        tracing::info!(lease = %format!("{}/{}", election.namespace, election.name),
            identity = %election.identity, "waiting to lead");
        let run = crossfade_controller::kube::run_elected(
            client,
            namespace,
            metrics,
            election,
            shutdown(),
        );
        run.await?;
        tracing::info!("crossfade controller stopping");
        return Ok(ExitCode::SUCCESS);
    }
    let run = crossfade_controller::kube::run(client, namespace, metrics);
    tokio::select! {
        result = run => result.map(|()| ExitCode::SUCCESS).map_err(Into::into),
        () = shutdown() => {
            tracing::info!("crossfade controller stopping");
            Ok(ExitCode::SUCCESS)
        }
    }
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

async fn shutdown() {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
