//! Kubernetes mode: the `TrafficShift` custom resource and the Deployment annotations that ask for a
//! rollout.
//!
//! # Layout
//! - [`crd`]: the `TrafficShift` resource (`crossfade.dev/v1alpha1`), its spec and status types, and
//!   the CRD manifest generated from them ([`crd::crd_yaml`], written to `deploy/crd/` by
//!   `crossfade crdgen`).
//! - [`trigger`]: pure: from a Deployment's `crossfade.dev/*` annotations to the `TrafficShift` it
//!   asks for, with errors that name the annotation.
//! - [`reconcile`]: the Deployment reconciler that applies what [`trigger`] asks for.
//! - [`shift`]: the TrafficShift controller, which drives the rollout machine through the
//!   Kubernetes driver ([`crate::driver::kube`]) and writes status and Events.
//! - [`store`]: the rollout's state in the TrafficShift status, resourceVersion-guarded.
//! - [`command`]: pure: the command annotations (`crossfade.dev/promote`, `abort`, `retry`,
//!   `resume` with nonces, `paused`) against the record of those acted on.
//! - [`proxies`]: the proxy replicas' Leases: which weights generation each has applied (closed-loop
//!   weights) and where its `/metrics` are.
//! - [`scrape`]: the analysis counters scraped from the proxies' `/metrics` ([`scrape::ProxyScraper`]).
//! - [`prometheus`]: the same counters read from a Prometheus server ([`prometheus::PrometheusMetrics`]).
//! - [`backoff`]: exponential backoff of failed reconciles, per object.
//! - [`proxy_source`]: `crossfade proxy --kube`: TrafficShifts and EndpointSlices → the proxy's
//!   routes, and the proxy's Lease.
//! - [`proxy_lease`]: the per-replica Lease (applied generations, admin URL), both sides of it.
//! - [`stale_leases`]: the leader deletes proxy Leases expired long ago (replicas killed hard).
//! - [`template`]: pure: `kubectl set image` on a managed Deployment told from Crossfade's own
//!   image changes, and turned into a rollout request.
//! - [`leader`]: leader election on a Lease: one replica acts.
//! - [`health`]: the controller's `/metrics`, `/healthz` and `/readyz` listener.
//! - [`ops`]: the operator's side of the commands (`crossfade ... --kube`).
//! - [`secrets`]: the `headersFrom` values of gates and checks, read from Secrets in the
//!   TrafficShift's namespace at each call.
//! - [`revision`]: the image digests each backend's pods run (`imageID` parsed and validated),
//!   for status and `crossfade_backend_info`.
//!
//! Not here yet: see "Not done yet" in docs/kubernetes.md.

pub mod backoff;
pub mod capacity;
pub mod command;
pub mod crd;
pub mod handover;
pub mod health;
pub mod leader;
#[cfg(test)]
pub(crate) mod mock;
pub mod ops;
pub mod prometheus;
pub mod proxies;
pub mod proxy_lease;
pub mod proxy_source;
pub mod reconcile;
pub mod revision;
pub mod scrape;
pub mod secrets;
pub mod shift;
pub mod stale_leases;
pub mod store;
pub mod template;
pub mod trigger;

use crate::text;

/// The annotation and label prefix of everything Crossfade reads or writes on Kubernetes objects.
pub const PREFIX: &str = "crossfade.dev/";

/// `error` in words for a message: an answer of the API server as `403 Forbidden: <its
/// message>`; any other error (the server not reached) as kube says it. kube's own text of an
/// answer ends with a debug dump of the whole `Status` (`(Status { status: Some(Failure), code:
/// 403, ... })`), which reached the CLI's errors and, through a Secret read by `headersFrom`, the
/// gate refusals in `status.message` (trial 30).
///
/// The message is said on one line (every run of white space one space) and at most
/// [`API_MESSAGE_MAX`] characters long, cut with its length: an answer that is not a `Status`
/// (an HTML error page of a proxy or load balancer in front of the API server, a `404 page not
/// found`) is the whole body as kube reads it, and was said as it is, many lines in one log line
/// and in `status.message`. An empty message is said as the `Status`'s reason, or `no message`; a
/// code without a standard name (or none, 0) is said as a number (or not at all).
pub fn api_error_words(error: &kube::Error) -> String {
    let kube::Error::Api(status) = error else {
        return error.to_string();
    };
    let mut message = text::one_line(&status.message);
    if message.is_empty() {
        message = text::one_line(&status.reason);
    }
    if message.is_empty() {
        message = "no message".to_owned();
    }
    if let Some(head) = text::head(&message, API_MESSAGE_MAX) {
        message = format!("{head}... ({} bytes)", status.message.len());
    }
    let name = http::StatusCode::from_u16(status.code)
        .ok()
        .and_then(|c| c.canonical_reason());
    match (status.code, name) {
        (0, _) => message,
        (code, Some(name)) => format!("{code} {name}: {message}"),
        (code, None) => format!("{code}: {message}"),
    }
}

/// Longest part of an API server's message that [`api_error_words`] says, in characters.
pub const API_MESSAGE_MAX: usize = 512;

/// A watch's `error` in words, as [`api_error_words`] says an API error: kube-runtime's own text
/// carries the same debug dump of the `Status`.
pub fn watch_error_words(error: &kube::runtime::watcher::Error) -> String {
    use kube::runtime::watcher::Error;
    match error {
        Error::InitialListFailed(e) => {
            format!(
                "failed to perform initial object list: {}",
                api_error_words(e)
            )
        }
        Error::WatchStartFailed(e) => {
            format!("failed to start watching object: {}", api_error_words(e))
        }
        Error::WatchFailed(e) => format!("watch stream failed: {}", api_error_words(e)),
        Error::WatchError(status) => format!(
            "error returned by apiserver during watch: {}",
            api_error_words(&kube::Error::Api(status.clone()))
        ),
        Error::NoResourceVersion => error.to_string(),
    }
}

/// Longest part of an annotation's value that a message quotes, in characters.
pub const QUOTED_MAX: usize = 64;

/// An annotation's value quoted for a message, as `{:?}` does (`"yes"`), but only its first
/// [`QUOTED_MAX`] characters when it is longer, with its length: `"yyyy..." (40000 bytes)`. An
/// annotation may hold 256 KiB, and a message that quoted all of it went into a condition the API
/// server refuses past 32,768 characters (trial 30).
pub fn quoted(value: &str) -> String {
    match text::head(value, QUOTED_MAX) {
        None => format!("{value:?}"),
        Some(head) => format!("{:?} ({} bytes)", format!("{head}..."), value.len()),
    }
}

/// The field manager of every write Crossfade makes (server-side apply and patches).
pub const FIELD_MANAGER: &str = "crossfade";

/// What the controllers of Kubernetes mode ([`run`], [`run_elected`], [`controllers`]) watch,
/// read and report with. [`Controllers::new`] gives the production settings for a namespace and
/// an analysis source; set the other fields on it (`Controllers { poll, ..Controllers::new(..) }`).
#[derive(Clone)]
pub struct Controllers {
    /// The namespace whose Deployments and TrafficShifts are watched; every namespace when
    /// `None`.
    pub namespace: Option<String>,
    /// The namespaces whose proxy Leases are read; every namespace when empty (see
    /// [`proxies::Proxies::new`]).
    pub proxy_namespaces: Vec<String>,
    /// Where the analysis reads its counters: [`scrape::ProxyScraper`] in production.
    pub metrics: std::sync::Arc<dyn scrape::ClusterMetrics>,
    /// Fed by transitions and Events: the families of [`crate::metrics`], route
    /// `namespace/name`. [`crate::metrics::RolloutMetrics::default`] when nobody scrapes them.
    pub rollout_metrics: crate::metrics::RolloutMetrics,
    /// The reporting instance the Events name (the replica's identity); none when `None`.
    /// [`run_elected`] sets the election's identity instead.
    pub instance: Option<String>,
    /// How often a TrafficShift's reconcile looks again while it waits on the cluster (a
    /// Deployment rolling out, a preview becoming ready), as a `Duration`; its watch events wake
    /// it sooner. [`shift::POLL`] (2 s) in production; the tests lengthen it to show that a change
    /// is acted on at its watch event, not at the next poll ([`shift::Context::polling_every`]).
    pub poll: std::time::Duration,
    /// When the leader deletes stale proxy Leases ([`stale_leases`]): 1 hour past their expiry,
    /// looked for every 10 minutes, by default.
    pub stale_leases: stale_leases::StaleLeases,
}

impl Controllers {
    /// The controllers of `namespace` (every namespace when `None`) with their analysis reading
    /// `metrics`, as `crossfade controller --kube` runs them with no other flag: proxy Leases read
    /// in every namespace, rollout metrics scraped by nobody, Events naming no instance, a
    /// waiting reconcile looking again every [`shift::POLL`].
    pub fn new(
        namespace: Option<&str>,
        metrics: std::sync::Arc<dyn scrape::ClusterMetrics>,
    ) -> Controllers {
        Controllers {
            namespace: namespace.map(str::to_owned),
            proxy_namespaces: Vec::new(),
            metrics,
            rollout_metrics: crate::metrics::RolloutMetrics::default(),
            instance: None,
            poll: shift::POLL,
            stale_leases: stale_leases::StaleLeases::default(),
        }
    }
}

/// Runs the Deployment reconciler and the TrafficShift controller as `options` says
/// ([`controllers`]) until the returned future is dropped, after checking the CRD is installed.
///
/// # Errors
/// [`shift::PreflightError`] when the TrafficShift CRD is missing or the API cannot be reached.
pub async fn run(
    client: ::kube::Client,
    options: &Controllers,
) -> Result<(), shift::PreflightError> {
    shift::preflight(&client).await?;
    controllers(client, options).await;
    Ok(())
}

/// Both controllers, the Deployment reconciler and the TrafficShift controller, as `options`
/// says, and the deletion of stale proxy Leases ([`stale_leases`]), without the CRD check. Runs
/// until dropped.
pub async fn controllers(client: ::kube::Client, options: &Controllers) {
    let proxies = proxies::Proxies::new(client.clone(), &options.proxy_namespaces);
    tokio::join!(
        stale_leases::run(client.clone(), proxies.apis(), options.stale_leases),
        reconcile::run(
            client.clone(),
            options.namespace.as_deref(),
            options.instance.as_deref()
        ),
        shift::run(client, options, proxies)
    );
}

/// As [`run`], but acting only while this replica holds the Lease of `election`
/// ([`leader::run_elected`]): the controllers start when it is acquired and are dropped when it
/// lapses; Events name `election.identity` (whatever `options.instance` says). When they are
/// dropped, every route series of `options.rollout_metrics` goes
/// ([`crate::metrics::RolloutMetrics::forget_all`]): a replica that follows exports none, whether
/// it led before or not, so that only the leader's values are scraped. Returns when `shutdown`
/// completes (the Lease released).
///
/// # Errors
/// [`shift::PreflightError`] when the TrafficShift CRD is missing or the API cannot be reached.
pub async fn run_elected(
    client: ::kube::Client,
    options: &Controllers,
    election: leader::Election,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), shift::PreflightError> {
    shift::preflight(&client).await?;
    let options = Controllers {
        instance: Some(election.identity.clone()),
        ..options.clone()
    };
    let work = || {
        let forget = ForgetOnDrop(options.rollout_metrics.clone());
        let controllers = controllers(client.clone(), &options);
        async move {
            let _forget = forget;
            controllers.await;
        }
    };
    leader::run_elected(client.clone(), election, work, shutdown).await;
    Ok(())
}

/// Removes every route series of its metrics when dropped: with the controllers of a leadership
/// term that ended ([`run_elected`]).
struct ForgetOnDrop(crate::metrics::RolloutMetrics);

impl Drop for ForgetOnDrop {
    fn drop(&mut self) {
        self.0.forget_all();
    }
}

#[cfg(test)]
mod words_tests {
    use super::*;

    fn forbidden() -> Box<kube::core::Status> {
        let mut status = kube::core::Status::failure("leases is forbidden", "Forbidden");
        status.code = 403;
        Box::new(status)
    }

    /// Trial 30: the controller's logs carried kube's debug dump of the `Status` of every refused
    /// request and failed watch; each is said as `403 Forbidden: <message>`.
    #[test]
    fn api_and_watch_errors_are_said_without_the_status_dump() {
        assert_eq!(
            api_error_words(&kube::Error::Api(forbidden())),
            "403 Forbidden: leases is forbidden"
        );
        use kube::runtime::watcher::Error;
        for (error, words) in [
            (
                Error::InitialListFailed(kube::Error::Api(forbidden())),
                "failed to perform initial object list: 403 Forbidden: leases is forbidden",
            ),
            (
                Error::WatchError(forbidden()),
                "error returned by apiserver during watch: 403 Forbidden: leases is forbidden",
            ),
        ] {
            assert_eq!(watch_error_words(&error), words);
        }
    }

    /// An answer that is not a `Status` (an HTML page of a proxy in front of the API server) is
    /// kube's whole body as the message: said on one line and cut, not as many lines in one log
    /// line and in `status.message`; an empty message and an unnamed code are said without a
    /// dangling `: ` or space (check31).
    #[test]
    fn a_multi_line_long_or_empty_answer_is_said_on_one_bounded_line() {
        let answer = |message: &str, reason: &str, code: u16| {
            let status = kube::core::Status::failure(message, reason).with_code(code);
            api_error_words(&kube::Error::Api(Box::new(status)))
        };
        let page = format!(
            "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\n{}</body>\n</html>",
            "<p>upstream unavailable</p>\n".repeat(200)
        );
        let words = answer(&page, "Failed to parse error data", 502);
        assert!(
            words.starts_with(
                "502 Bad Gateway: <html> <head><title>502 Bad Gateway</title></head> <body> <p>"
            ),
            "{words}"
        );
        assert!(!words.contains('\n') && !words.contains('\r'), "{words}");
        assert!(
            words.ends_with(&format!("... ({} bytes)", page.len())),
            "{words}"
        );
        assert!(words.chars().count() < API_MESSAGE_MAX + 60, "{words}");
        assert_eq!(answer("", "Forbidden", 403), "403 Forbidden: Forbidden");
        assert_eq!(answer("", "", 403), "403 Forbidden: no message");
        assert_eq!(answer("slow down", "", 499), "499: slow down");
        assert_eq!(answer("too old", "Expired", 0), "too old");
    }
}
