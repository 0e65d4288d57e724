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
    let run = crossfade_controller::kube::run(client, namespace, Arc::new(NoProxyMetrics));
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
