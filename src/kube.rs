//! `crossfade controller --kube`: the Kubernetes controller (Deployment reconciler and TrafficShift
//! controller) with in-cluster config or the kubeconfig, until SIGTERM or Ctrl-C.

use std::process::ExitCode;
use std::sync::Arc;

use std::path::PathBuf;

use anyhow::Context as _;
use crossfade_controller::kube::scrape::ProxyScraper;
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
    /// Read the proxy replicas' Leases (label crossfade.dev/proxy=true) in this namespace only
    /// (default: all namespaces).
    #[arg(long, env = "CROSSFADE_PROXY_NAMESPACE", value_name = "NS")]
    proxy_namespace: Option<String>,
    /// File holding the bearer token of the proxies' admin API (surrounding whitespace ignored),
    /// sent when scraping their /metrics; the proxies' --admin-token-file.
    #[arg(long, env = "CROSSFADE_PROXY_TOKEN_FILE", value_name = "FILE")]
    proxy_token_file: Option<PathBuf>,
}

/// Connects, checks the CRD is installed, and runs until a shutdown signal.
pub async fn controller(args: ControllerArgs) -> anyhow::Result<ExitCode> {
    debug_assert!(args.kube);
    let token = proxy_token(args.proxy_token_file.as_deref())?;
    let client = client(args.kubeconfig.as_deref()).await?;
    let namespace = args.namespace.as_deref();
    tracing::info!(
        namespace = namespace.unwrap_or("(all)"),
        "crossfade controller starting"
    );
    let scraper = Arc::new(ProxyScraper::new(token));
    let proxy_namespace = args.proxy_namespace.as_deref();
    let run = crossfade_controller::kube::run(client, namespace, proxy_namespace, scraper);
    tokio::select! {
        result = run => result.map(|()| ExitCode::SUCCESS).map_err(Into::into),
        () = shutdown() => {
            tracing::info!("crossfade controller stopping");
            Ok(ExitCode::SUCCESS)
        }
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

async fn client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
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
