//! `crossfade status|promote|abort|pause|resume|retry --kube [-n NS] NAME`: the operator
//! commands against a TrafficShift in a cluster, as annotations on its target Deployment
//! (`crossfade_controller::kube::ops` does the work). Also the `kubectl crossfade` plugin: the
//! binary installed (or linked) as `kubectl-crossfade` implies `--kube`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crossfade_controller::kube::ops::{self, Verb};

use crate::kube::Connection;

/// The name kubectl looks for on PATH to run `kubectl crossfade ...`.
pub const PLUGIN: &str = "kubectl-crossfade";

/// Where a command goes in Kubernetes mode.
#[derive(Debug, clap::Args)]
pub struct KubeArgs {
    /// Act on TrafficShift NAME in a Kubernetes cluster (KUBECONFIG or ~/.kube/config, else the
    /// in-cluster service account) instead of on a running `crossfade run`. Implied as `kubectl crossfade`.
    #[arg(long)]
    pub kube: bool,
    /// The TrafficShift's namespace (default: the kubeconfig context's, else `default`).
    #[arg(short = 'n', long, requires = "name")]
    pub namespace: Option<String>,
    /// Use this kubeconfig file (its current context).
    #[arg(long, requires = "name")]
    pub kubeconfig: Option<PathBuf>,
    /// With --kube: how long pause, resume, promote, abort and retry wait for the controller to
    /// act on the command (e.g. `30s`, `2m`; at least 1s); status does not wait.
    #[arg(long, default_value = "30s", value_parser = crate::flags::command_wait)]
    pub wait: Duration,
    /// The TrafficShift (with --kube); the one the annotation trigger makes is named after its
    /// Deployment.
    pub name: Option<String>,
}

/// Whether this process runs as the kubectl plugin (`argv[0]` is `kubectl-crossfade`).
pub fn is_plugin() -> bool {
    std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n == PLUGIN))
        .unwrap_or(false)
}

impl KubeArgs {
    /// Whether the command goes to a cluster: `--kube`, or the plugin. A NAME without `--kube` is
    /// refused before this is asked (`modes`; trial 12, M3).
    pub fn wanted(&self) -> bool {
        self.kube || is_plugin()
    }

    /// The client, namespace and name of the TrafficShift that `verb` (`status`, `retry`...)
    /// acts on.
    ///
    /// # Errors
    /// Without a NAME: the message names `verb`, the command actually run, with an example.
    async fn target(&self, verb: &str) -> anyhow::Result<(Connection, String, String)> {
        let Some(name) = self.name.clone() else {
            return Err(crate::flags::usage(missing_name(
                verb,
                self.kube,
                is_plugin(),
            )));
        };
        if let Some(problem) = name_problem(&name, self.namespace.as_deref()) {
            return Err(crate::flags::usage(problem));
        }
        let connection = crate::kube::client(self.kubeconfig.as_deref()).await?;
        let namespace = self
            .namespace
            .clone()
            .unwrap_or_else(|| connection.client.default_namespace().to_owned());
        Ok((connection, namespace, name))
    }
}

/// Why `name` (and `-n namespace`) cannot name a TrafficShift, before any request: the route's
/// own spelling `shop/web` (how metrics, logs and the proxy name a TrafficShift's route), which
/// looked up TrafficShift `default/shop/web` and said "not found" (trial 18, T19); and a name
/// or namespace that no Kubernetes object can have (a DNS-1123 subdomain; a namespace is one
/// label), with its lower-case spelling when that one could be (`Web` → `web`).
pub fn name_problem(name: &str, namespace: Option<&str>) -> Option<String> {
    if let Some((ns, short)) = name.split_once('/') {
        return Some(format!(
            "NAME {name:?}: a TrafficShift's name has no `/` ({name} is how its route is named \
             in metrics and logs); write `-n {ns} {short}`"
        ));
    }
    let lower = |text: &str, valid: &dyn Fn(&str) -> bool| {
        let lowered = text.to_ascii_lowercase();
        if lowered != text && valid(&lowered) {
            format!("; did you mean `{lowered}`?")
        } else {
            String::new()
        }
    };
    let subdomain = |t: &str| crossfade_controller::spec::is_dns_subdomain(t);
    if !subdomain(name) {
        return Some(format!(
            "NAME {name:?} cannot be a TrafficShift's name (Kubernetes names are lower-case \
             letters, digits, `-` and `.`, at most 253){}",
            lower(name, &subdomain)
        ));
    }
    let label = |t: &str| t.len() <= 63 && !t.contains('.') && subdomain(t);
    match namespace {
        Some(ns) if !label(ns) => Some(format!(
            "-n {ns:?} cannot be a namespace (lower-case letters, digits and `-`, at most 63){}",
            lower(ns, &label)
        )),
        _ => None,
    }
}

/// Why `verb` cannot go on without a TrafficShift NAME: `--kube` given without one, or (`retry`,
/// which has no local form) no `--kube` at all; `plugin` when run as `kubectl crossfade`.
fn missing_name(verb: &str, kube: bool, plugin: bool) -> String {
    let (command, flag) = if plugin {
        ("kubectl crossfade", "")
    } else {
        ("crossfade", " --kube")
    };
    let example = format!("`{command} {verb}{flag} -n shop web`");
    let list = "kubectl get trafficshifts -A lists them";
    if kube || plugin {
        format!("`{command} {verb}{flag}` needs the TrafficShift's name, e.g. {example} ({list})")
    } else {
        format!(
            "`{command} {verb}` acts on a TrafficShift in a cluster only: give --kube and its \
             name, e.g. {example} ({list}); to try again on a running `crossfade run`, start \
             the rollout again with `crossfade migrate FILE`"
        )
    }
}

/// `status --kube NAME`: the TrafficShift described; one that does not decode is shown as
/// invalid with its field and reason (exit code 0: the status was read).
pub async fn status(args: &KubeArgs) -> anyhow::Result<ExitCode> {
    let (Connection { client, server }, namespace, name) = args.target("status").await?;
    let what = format!("the read of trafficshift {namespace}/{name}");
    let text = answered(what, ops::status_text(&client, &namespace, &name))
        .await
        .map_err(|e| server.explain(e))?;
    crate::print_text(&text);
    Ok(ExitCode::SUCCESS)
}

/// A command: annotate, wait until the controller acted, print its answer and the TrafficShift.
/// Exit code 0 when it was accepted, 1 when refused or not acted on in time.
pub async fn command(args: &KubeArgs, verb: Verb) -> anyhow::Result<ExitCode> {
    let (Connection { client, server }, namespace, name) = args.target(verb.as_str()).await?;
    // Each request (the read of the TrafficShift, the write of the annotations) is bounded by
    // `ops::ANSWER` on its own, and named when it is not answered (session 41).
    let sent = ops::send(&client, &namespace, &name, verb)
        .await
        .map_err(|e| server.explain(e.into()))?;
    let written: Vec<String> = sent
        .annotations
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    crate::print_err(&format!(
        "crossfade: {} on deployment {}; waiting for the controller",
        written.join(" "),
        sent.deployment
    ));
    let shift = ops::wait_acted(&client, &namespace, &name, &sent, args.wait)
        .await
        .map_err(|e| server.explain(e.into()))?;
    crate::print_text(&ops::describe(&shift));
    match ops::outcome(&shift, &sent) {
        Some(o) if !o.accepted => {
            crate::print_err(&format!(
                "crossfade: {} refused: {}",
                verb.as_str(),
                o.message
            ));
            Ok(ExitCode::FAILURE)
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// How long the API server has to answer `status` (its reads), as each request of a command
/// (`ops::ANSWER`): kube bounds
/// only the connection (30 s), so a server that takes the connection and never answers (a hung
/// API server, a port that is not one) held the command for ever (trial 23).
pub const API_ANSWER: Duration = ops::ANSWER;

/// `request`'s result, or [`crate::kube::NoAnswer`] naming `what` after [`API_ANSWER`].
async fn answered<T, E>(
    what: String,
    request: impl std::future::Future<Output = Result<T, E>>,
) -> anyhow::Result<T>
where
    E: std::error::Error + Send + Sync + 'static,
{
    match tokio::time::timeout(API_ANSWER, request).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(crate::kube::NoAnswer {
            what,
            waited: API_ANSWER,
        }
        .into()),
    }
}
