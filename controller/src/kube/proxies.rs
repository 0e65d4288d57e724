//! The proxy replicas as the controller sees them: one `coordination.k8s.io/v1` Lease per replica
//! (label `crossfade.dev/proxy=true`, read by [`super::proxy_lease::ProxyLease`]), which says which
//! weights generation of each route the replica has in its routing table and where its admin API
//! (`/metrics`) is. A replica is **live** while `spec.renewTime + spec.leaseDurationSeconds > now`,
//! the rule of Kubernetes' own leases (node heartbeats, leader election); stale Leases are ignored.
//!
//! [`acks`] decides whether a published generation is applied; [`Proxies::live`] lists the live
//! replicas. Everything but the listing is pure.

use std::collections::BTreeMap;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use super::proxy_lease::ProxyLease;
pub use super::proxy_lease::{ADMIN_URL_ANNOTATION as ADMIN_URL, APPLIED_ANNOTATION as APPLIED};

/// The label every proxy replica's Lease carries, as a label selector.
pub const PROXY_SELECTOR: &str = "crossfade.dev/proxy=true";

/// One live proxy replica, read from its Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replica {
    /// `namespace/name` of the Lease: the replica's identity.
    pub lease: String,
    /// The Lease's uid: a replica whose Lease was deleted and created again (a restart) has a new
    /// one, so its counters start from 0 again.
    pub uid: String,
    /// Route (`namespace/name`) → the weights generation the replica has applied.
    pub applied: BTreeMap<String, u64>,
    /// Route → `metadata.uid` of the TrafficShift that generation is of (its Lease's
    /// `crossfade.dev/applied-uid`); missing for a replica of an earlier version.
    pub applied_uid: BTreeMap<String, String>,
    /// The admin API base URL, without a trailing `/`.
    pub admin_url: Option<String>,
    /// Route → why the replica refuses that TrafficShift (its Lease's `crossfade.dev/refused`).
    pub refused: BTreeMap<String, String>,
}

/// Whether a published generation of a route is applied by the proxies ([`acks`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ack {
    /// Every live replica that lists the route reports the generation or a later one.
    Applied {
        /// How many live replicas list the route (0 only for a preview weight of 0, see [`acks`]).
        replicas: usize,
    },
    /// At least one live replica lists the route with an older generation.
    Behind {
        /// `lease: generation` of each replica that is behind, followed by `, refusing the
        /// latest: why` when its Lease says why it does not apply the route's latest input
        /// (`crossfade.dev/refused`: e.g. a backend given weight without ready endpoints).
        behind: Vec<String>,
    },
    /// No live replica lists the route: nothing serves it, so nothing is applied.
    NoProxy {
        /// `lease` of every live replica (none lists the route).
        live: Vec<String>,
        /// `lease: why` of each live replica that reports refusing the route.
        refused: Vec<String>,
    },
}

/// The proxies' Leases could not be listed in one namespace of `--proxy-namespace` (or in every
/// namespace, `namespace` `None`): e.g. 403 when no Role grants the controller `list leases`
/// there.
#[derive(Debug, thiserror::Error)]
#[error("list the proxies' Leases ({PROXY_SELECTOR}) in {}: {}", match namespace { Some(ns) => format!("namespace {ns} (--proxy-namespace)"), None => "every namespace".to_owned() }, crate::kube::api_error_words(source))]
pub struct ListError {
    /// The namespace whose list failed; `None` for the list of every namespace.
    pub namespace: Option<String>,
    /// The API error.
    #[source]
    pub source: kube::Error,
}

/// Why the controller does not start: the proxies' Leases cannot be listed in a namespace of
/// `--proxy-namespace` (or, without it, in every namespace) for a reason waiting will not fix
/// ([`Proxies::check_readable`]): 401, 403, 404 or another 4xx but 429, or an answer that is no
/// Lease list. Says which namespace, the verb and resource, and what to fix: for a 403 the RBAC
/// objects expected, for a 401 the credentials, for a 404 the API, for no list the address.
#[derive(Debug, thiserror::Error)]
#[error("{}", refused_words(self))]
pub struct CheckError {
    /// The namespace whose list failed; `None` for the list of every namespace.
    pub namespace: Option<String>,
    /// The API error (quoted in the message, not chained: its text would be said twice).
    pub error: kube::Error,
}

/// [`CheckError`]'s message.
fn refused_words(e: &CheckError) -> String {
    let (code, why) = match &e.error {
        kube::Error::Api(s) => (Some(s.code), s.message.clone()),
        other => (None, other.to_string()),
    };
    let answer = match code {
        Some(code) => format!("{code} {}", status_name(code)),
        None => "no Lease list".to_owned(),
    };
    let list = format!("cannot list leases (coordination.k8s.io/v1, label {PROXY_SELECTOR})");
    // RBAC advice for a 403 only (kubetry28: a 401, a 404 or an answer that is no list, without
    // --proxy-namespace, were told to grant a ClusterRole, and the latter two with it too).
    let fix = match (code, &e.namespace) {
        (Some(401), _) => "the API server refused the controller's credentials (its ServiceAccount token, or the kubeconfig's user)".to_owned(),
        (Some(404), Some(ns)) => format!("the API server does not serve leases.coordination.k8s.io/v1 in namespace {ns}"),
        (Some(404), None) => "the API server does not serve leases.coordination.k8s.io/v1".to_owned(),
        (Some(403), None) => "the controller's ServiceAccount needs list and watch on leases cluster-wide (a ClusterRole and ClusterRoleBinding), or give --proxy-namespace with the namespaces where the proxies write their Leases (deploy/controller/deployment.yaml: crossfade-proxy-leases)".to_owned(),
        (Some(403), Some(ns)) => format!(
            "the controller's ServiceAccount needs list and watch on leases in namespace {ns}: a Role and RoleBinding crossfade-controller-proxy-leases in {ns} bound to ServiceAccount crossfade-system/crossfade-controller (deploy/controller/rbac.yaml makes them in crossfade-proxy-leases, deploy/examples/sidecar.yaml in an application namespace), or take {ns} out of --proxy-namespace"
        ),
        (None, _) => "the answer is not a Kubernetes list: check that the kubeconfig (or the in-cluster address) reaches the API server itself, not another server or a gateway in front of it".to_owned(),
        (Some(_), _) => "a refusal no permission fixes: see the API server's message".to_owned(),
    };
    match &e.namespace {
        None => format!(
            "{list} in every namespace (no --proxy-namespace given): {answer}: {why}; {fix}"
        ),
        Some(ns) => {
            format!("{list} in namespace {ns}, listed in --proxy-namespace: {answer}: {why}; {fix}")
        }
    }
}

/// The reason phrase of an HTTP status the API server answers a list with.
fn status_name(code: u16) -> &'static str {
    http::StatusCode::from_u16(code)
        .ok()
        .and_then(|c| c.canonical_reason())
        .unwrap_or("")
}

/// Whether listing again may succeed: the API server unreachable or timing out, 429 Too Many
/// Requests, a 5xx (an API server restarting, etcd unavailable). Anything else is an answer.
pub fn is_transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code == 429 || s.code >= 500,
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// First wait between two attempts of [`Proxies::check_readable`]; doubled after each failure up
/// to [`CHECK_RETRY_MAX`].
pub const CHECK_RETRY_FIRST: std::time::Duration = std::time::Duration::from_secs(1);

/// Longest wait between two attempts of [`Proxies::check_readable`].
pub const CHECK_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(30);

/// How long one list of [`Proxies::check_readable`] may take before it counts as a transient
/// failure (kube bounds the connection only, not the answer).
pub const CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Lists the live proxy replicas, from the Leases of the namespaces the controller trusts.
#[derive(Clone)]
pub struct Proxies {
    /// One API per trusted namespace, or one of every namespace.
    apis: Vec<Api<Lease>>,
    /// The trusted namespaces, sorted and without duplicates; empty for every namespace.
    namespaces: Vec<String>,
}

// === impl Replica ===

impl Replica {
    /// The replica `lease` describes, when it is a well-formed proxy Lease live at `now`; `None`
    /// for a stale Lease. A malformed one is logged and counts as no replica (it acknowledges
    /// nothing).
    pub fn from_lease(lease: &Lease, now: Timestamp) -> Option<Replica> {
        let read = match ProxyLease::from_lease(lease) {
            Ok(read) => read,
            Err(e) => {
                tracing::warn!("ignoring a proxy Lease: {e}");
                return None;
            }
        };
        if !read.is_live(now) {
            return None;
        }
        let url = read.admin_url.trim().trim_end_matches('/').to_owned();
        Some(Replica {
            lease: format!(
                "{}/{}",
                lease.namespace().unwrap_or_default(),
                lease.name_any()
            ),
            uid: lease.uid().unwrap_or_default(),
            applied: read.applied,
            applied_uid: read.applied_uid,
            admin_url: (!url.is_empty()).then_some(url),
            refused: read.refused,
        })
    }
}

/// Whether generation `generation` of `route` (of the TrafficShift whose `metadata.uid` is `uid`),
/// which gives the preview `preview_bp` basis points, is applied by the live `replicas`.
///
/// Applied when every live replica that lists the route reports `generation` or a later one of
/// that TrafficShift, and at least one lists it. A replica whose Lease says its generation is of
/// another TrafficShift of that name (`crossfade.dev/applied-uid`: one deleted and created again,
/// whose generations count from 1 again) is behind, whatever the number. A preview weight of 0 (a
/// rollback, an abort, the weights after the role swap) is applied with no replica listing the
/// route too: no proxy serves the route, so none can send the preview a request, and a rollback
/// must not wait for proxies that are gone.
pub fn acks(replicas: &[Replica], route: &str, uid: &str, generation: u64, preview_bp: u32) -> Ack {
    let listing: Vec<(&Replica, u64)> = replicas
        .iter()
        .filter_map(|r| r.applied.get(route).map(|g| (r, *g)))
        .collect();
    let earlier = |r: &Replica| {
        r.applied_uid
            .get(route)
            .is_some_and(|of| !uid.is_empty() && of != uid)
    };
    if listing.is_empty() {
        return match preview_bp {
            0 => Ack::Applied { replicas: 0 },
            _ => Ack::NoProxy {
                live: replicas.iter().map(|r| r.lease.clone()).collect(),
                refused: replicas
                    .iter()
                    .filter_map(|r| {
                        r.refused
                            .get(route)
                            .map(|why| format!("{}: {why}", r.lease))
                    })
                    .collect(),
            },
        };
    }
    let behind: Vec<String> = listing
        .iter()
        .filter(|(r, g)| *g < generation || earlier(r))
        .map(|(r, g)| {
            let g = match earlier(r) {
                true => format!("{g} of an earlier trafficshift {route}"),
                false => g.to_string(),
            };
            match r.refused.get(route) {
                Some(why) => format!("{}: {g}, refusing the latest: {why}", r.lease),
                None => format!("{}: {g}", r.lease),
            }
        })
        .collect();
    match behind.is_empty() {
        true => Ack::Applied {
            replicas: listing.len(),
        },
        false => Ack::Behind { behind },
    }
}

/// The live replicas that list `route`.
pub fn serving<'a>(replicas: &'a [Replica], route: &str) -> Vec<&'a Replica> {
    replicas
        .iter()
        .filter(|r| r.applied.contains_key(route))
        .collect()
}

// === impl Ack ===

impl std::fmt::Display for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ack::Applied { replicas } => write!(f, "applied by {replicas} proxy replicas"),
            Ack::Behind { behind } => write!(f, "proxy replicas behind: {}", behind.join(", ")),
            Ack::NoProxy { live, .. } if live.is_empty() => write!(
                f,
                "no live proxy replica (no live Lease labelled {PROXY_SELECTOR}): start the proxy, or check its --lease-namespace and the controller's --proxy-namespace"
            ),
            Ack::NoProxy { live, refused } if !refused.is_empty() => write!(
                f,
                "{} live proxy replica(s) ({}), none serves the route; refused by {}",
                live.len(),
                live.join(", "),
                refused.join("; ")
            ),
            Ack::NoProxy { live, .. } => write!(
                f,
                "{} live proxy replica(s) ({}), none serves the route and none reports refusing it: \
                 check their --namespace/--route filters and logs (crossfade_kube_trafficshift_refused)",
                live.len(),
                live.join(", ")
            ),
        }
    }
}

// === impl Proxies ===

impl Proxies {
    /// Reads the Leases of `namespaces` (`--proxy-namespace`), every namespace when it is empty.
    /// A Lease is trusted with the step acknowledgements, the analysis counters and the admin
    /// token (docs/security.md, "Proxy Leases are trusted"): list the namespaces where only the
    /// proxies may write Leases. Duplicates are read once.
    pub fn new(client: Client, namespaces: &[String]) -> Proxies {
        let mut namespaces = namespaces.to_vec();
        namespaces.sort();
        namespaces.dedup();
        let apis = if namespaces.is_empty() {
            vec![Api::all(client)]
        } else {
            namespaces
                .iter()
                .map(|ns| Api::namespaced(client.clone(), ns))
                .collect()
        };
        Proxies { apis, namespaces }
    }

    /// The Lease APIs this reads from, one per namespace (for the watches).
    pub fn apis(&self) -> Vec<Api<Lease>> {
        self.apis.clone()
    }

    /// The namespaces read, sorted; empty for every namespace.
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    /// Checks once, at start, that the Leases can be listed in every namespace read (one list
    /// per namespace, labelled [`PROXY_SELECTOR`]), so that a namespace the controller may not
    /// read fails the start naming it rather than the first step that counts the proxies.
    /// Transient failures ([`is_transient`], or no answer within [`CHECK_TIMEOUT`]) are retried
    /// with a backoff from [`CHECK_RETRY_FIRST`] doubling to [`CHECK_RETRY_MAX`], without end
    /// (an API server not reachable yet is waited for, not crash-looped on), each reported to
    /// `retrying` (the failure, the wait before the next attempt). Returns how many proxy Leases
    /// each namespace has (`None`: every namespace).
    ///
    /// # Errors
    /// [`CheckError`] for the first namespace that answers with a refusal (401, 403, 404, ...).
    pub async fn check_readable(
        &self,
        mut retrying: impl FnMut(&str, std::time::Duration),
    ) -> Result<Vec<(Option<String>, usize)>, CheckError> {
        let params = ListParams::default().labels(PROXY_SELECTOR);
        let mut found = Vec::new();
        let mut wait = CHECK_RETRY_FIRST;
        for (i, api) in self.apis.iter().enumerate() {
            let namespace = self.namespaces.get(i).cloned();
            let place = match &namespace {
                Some(ns) => format!("namespace {ns} (--proxy-namespace)"),
                None => "every namespace".to_owned(),
            };
            loop {
                let failure = match tokio::time::timeout(CHECK_TIMEOUT, api.list(&params)).await {
                    Ok(Ok(list)) => {
                        found.push((namespace, list.items.len()));
                        break;
                    }
                    Ok(Err(error)) if !is_transient(&error) => {
                        return Err(CheckError { namespace, error });
                    }
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => format!("no answer within {}s", CHECK_TIMEOUT.as_secs()),
                };
                retrying(
                    &format!("list the proxies' Leases ({PROXY_SELECTOR}) in {place}: {failure}"),
                    wait,
                );
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(CHECK_RETRY_MAX);
            }
        }
        Ok(found)
    }

    /// The live replicas now (one list of the Leases labelled [`PROXY_SELECTOR`] per namespace).
    ///
    /// # Errors
    /// [`ListError`] naming the namespace of the first list that fails: a listed namespace the
    /// controller may not read fails every reconcile that counts replicas (rather than leave
    /// out replicas the operator said to count) until RBAC grants it.
    pub async fn live(&self) -> Result<Vec<Replica>, ListError> {
        let params = ListParams::default().labels(PROXY_SELECTOR);
        let mut live = Vec::new();
        for (i, api) in self.apis.iter().enumerate() {
            let leases = api.list(&params).await.map_err(|source| ListError {
                namespace: self.namespaces.get(i).cloned(),
                source,
            })?;
            let now = Timestamp::now();
            live.extend(
                leases
                    .items
                    .iter()
                    .filter_map(|l| Replica::from_lease(l, now)),
            );
        }
        Ok(live)
    }
}

/// The routes whose applied generation differs between two readings of one Lease (`before` is
/// `None` for a new Lease, `after` for a deleted one): the TrafficShifts a Lease change concerns.
pub fn changed_routes(
    before: Option<&BTreeMap<String, u64>>,
    after: Option<&BTreeMap<String, u64>>,
) -> Vec<String> {
    let empty = BTreeMap::new();
    let (before, after) = (before.unwrap_or(&empty), after.unwrap_or(&empty));
    let mut routes: Vec<String> = after
        .iter()
        .filter(|(route, g)| before.get(*route) != Some(g))
        .map(|(route, _)| route.clone())
        .collect();
    routes.extend(
        before
            .keys()
            .filter(|route| !after.contains_key(*route))
            .cloned(),
    );
    routes
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    use k8s_openapi::jiff::SignedDuration;

    /// A Lease renewed `renewed_ago_s` before [`now`].
    fn lease(name: &str, renewed_ago_s: i64, duration_s: i32, applied: &str) -> Lease {
        let mut l = Lease::default();
        l.metadata.name = Some(name.into());
        l.metadata.namespace = Some("crossfade-system".into());
        l.metadata.uid = Some(format!("uid-{name}"));
        l.metadata.annotations = Some(BTreeMap::from([
            (APPLIED.to_owned(), applied.to_owned()),
            (ADMIN_URL.to_owned(), "http://10.0.0.5:9901/".to_owned()),
        ]));
        let now = now();
        l.spec = Some(LeaseSpec {
            holder_identity: Some(name.into()),
            lease_duration_seconds: Some(duration_s),
            renew_time: Some(MicroTime(
                now.checked_sub(SignedDuration::from_secs(renewed_ago_s))
                    .unwrap(),
            )),
            ..LeaseSpec::default()
        });
        l
    }

    /// The fixed "now" of these tests.
    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap()
    }

    fn replicas(leases: &[Lease]) -> Vec<Replica> {
        let now = now();
        leases
            .iter()
            .filter_map(|l| Replica::from_lease(l, now))
            .collect()
    }

    #[test]
    fn a_replica_reads_its_applied_generations_and_admin_url_while_live() {
        let r = &replicas(&[lease("p-1", 1, 15, r#"{"shop/web": 7, "shop/api": 3}"#)])[0];
        assert_eq!(r.lease, "crossfade-system/p-1");
        assert_eq!(r.uid, "uid-p-1");
        assert_eq!(r.applied["shop/web"], 7);
        assert_eq!(r.applied["shop/api"], 3);
        assert_eq!(r.admin_url.as_deref(), Some("http://10.0.0.5:9901"));
        assert!(replicas(&[lease("p-1", 15, 15, "{}")]).is_empty(), "stale");
        assert!(
            replicas(&[lease("p-2", 1, 15, r#"{"shop/web": -1}"#)]).is_empty(),
            "malformed"
        );
    }

    #[test]
    fn weights_are_applied_when_every_live_replica_listing_the_route_has_the_generation() {
        let all = replicas(&[
            lease("p-1", 1, 15, r#"{"shop/web": 7}"#),
            lease("p-2", 2, 15, r#"{"shop/web": 6, "shop/api": 9}"#),
            lease("stale", 30, 15, r#"{"shop/web": 1}"#),
            lease("other", 1, 15, r#"{"shop/api": 1}"#),
        ]);
        assert_eq!(all.len(), 3, "the stale lease is ignored");
        assert_eq!(
            acks(&all, "shop/web", "uid-web", 6, 500),
            Ack::Applied { replicas: 2 }
        );
        assert_eq!(
            acks(&all, "shop/web", "uid-web", 7, 500),
            Ack::Behind {
                behind: vec!["crossfade-system/p-2: 6".into()]
            }
        );
        assert_eq!(
            acks(&all, "shop/web", "uid-web", 7, 500).to_string(),
            "proxy replicas behind: crossfade-system/p-2: 6"
        );
        // A later generation counts: the replica has moved past this one.
        assert_eq!(
            acks(&all, "shop/api", "uid-web", 1, 500),
            Ack::Applied { replicas: 2 }
        );
    }

    /// A TrafficShift deleted and created again under its name counts its generations from 1
    /// again: a replica still holding the earlier object's generation 7 has not applied the new
    /// object's generation 2, though 7 ≥ 2 (closing note of session 30). A replica that does not
    /// say which object (an earlier version's Lease) is taken at its word.
    #[test]
    fn a_generation_of_an_earlier_trafficshift_of_that_name_is_not_applied() {
        let with_uid = |name: &str, applied: &str, uid: &str| {
            let mut l = lease(name, 1, 15, applied);
            l.metadata.annotations.as_mut().unwrap().insert(
                super::super::proxy_lease::APPLIED_UID_ANNOTATION.to_owned(),
                serde_json::json!({ "shop/web": uid }).to_string(),
            );
            l
        };
        let all = replicas(&[
            with_uid("p-1", r#"{"shop/web": 2}"#, "uid-new"),
            with_uid("p-2", r#"{"shop/web": 7}"#, "uid-old"),
            lease("p-3", 1, 15, r#"{"shop/web": 7}"#),
        ]);
        assert_eq!(
            acks(&all, "shop/web", "uid-new", 2, 500).to_string(),
            "proxy replicas behind: crossfade-system/p-2: 7 of an earlier trafficshift shop/web"
        );
        // Once p-2 has the new object's weights, the generation is applied by all three.
        let all = replicas(&[
            with_uid("p-1", r#"{"shop/web": 2}"#, "uid-new"),
            with_uid("p-2", r#"{"shop/web": 2}"#, "uid-new"),
            lease("p-3", 1, 15, r#"{"shop/web": 7}"#),
        ]);
        assert_eq!(
            acks(&all, "shop/web", "uid-new", 2, 500),
            Ack::Applied { replicas: 3 }
        );
        // Withdrawing the preview (weight 0) waits for p-2 too.
        let all = replicas(&[with_uid("p-2", r#"{"shop/web": 7}"#, "uid-old")]);
        assert!(matches!(
            acks(&all, "shop/web", "uid-new", 3, 0),
            Ack::Behind { .. }
        ));
    }

    /// Trial 26: a replica that keeps an older generation because it refuses the latest input
    /// (green given 50% with no ready endpoint, its pods scaled away by hand) was shown only as
    /// `proxy replicas behind: ...: 12` in `WeightsNotApplied`; its Lease says why, and so does
    /// the message now.
    #[test]
    fn a_replica_behind_because_it_refuses_the_route_says_why() {
        let mut refusing = lease("p-2", 1, 15, r#"{"shop/web": 6}"#);
        let why =
            "green (ready endpoints of Service web-green): green has weight 50% but no endpoints";
        refusing.metadata.annotations.as_mut().unwrap().insert(
            super::super::proxy_lease::REFUSED_ANNOTATION.to_owned(),
            serde_json::json!({ "shop/web": why }).to_string(),
        );
        let all = replicas(&[lease("p-1", 1, 15, r#"{"shop/web": 7}"#), refusing]);
        assert_eq!(
            acks(&all, "shop/web", "uid-web", 7, 5000).to_string(),
            format!("proxy replicas behind: crossfade-system/p-2: 6, refusing the latest: {why}")
        );
        // Another route's refusal is not this one's.
        assert_eq!(
            acks(&all, "shop/api", "uid-web", 1, 500),
            Ack::NoProxy {
                live: vec!["crossfade-system/p-1".into(), "crossfade-system/p-2".into()],
                refused: Vec::new()
            }
        );
    }

    #[test]
    fn without_a_live_replica_only_a_preview_weight_of_zero_is_applied() {
        let all = replicas(&[lease("stale", 30, 15, r#"{"shop/web": 9}"#)]);
        let none = Ack::NoProxy {
            live: Vec::new(),
            refused: Vec::new(),
        };
        assert_eq!(acks(&all, "shop/web", "uid-web", 3, 500), none);
        assert_eq!(acks(&[], "shop/web", "uid-web", 3, 10_000), none);
        assert_eq!(
            acks(&all, "shop/web", "uid-web", 3, 0),
            Ack::Applied { replicas: 0 }
        );
        // A replica that lists the route and is behind holds a weight of 0 as any other.
        let behind = replicas(&[lease("p-1", 1, 15, r#"{"shop/web": 2}"#)]);
        assert!(matches!(
            acks(&behind, "shop/web", "uid-web", 3, 0),
            Ack::Behind { .. }
        ));
    }

    /// Kube27: a namespace of `--proxy-namespace` the controller may not read fails the count,
    /// naming the namespace and the flag (not left out silently: its replicas would go uncounted).
    /// Kube28: the start's check of the proxies' Leases tries again after a transient failure
    /// (500, or no answer), waiting 1 s then 2 s, and ends on a refusal naming what to grant;
    /// without --proxy-namespace, cluster-wide.
    #[tokio::test(start_paused = true)]
    async fn the_start_check_tries_transient_failures_again_and_names_a_refusal() {
        use crate::kube::mock;
        let (client, mut server) = mock::client();
        let proxies = Proxies::new(client, &[]);
        let check = tokio::spawn(async move {
            let mut retries = Vec::new();
            let result = proxies
                .check_readable(|failure, wait| retries.push((failure.to_owned(), wait)))
                .await;
            (result, retries)
        });
        let path = "/apis/coordination.k8s.io/v1/leases";
        let first = server.expect("GET", path).await;
        let started = first.at;
        first.respond(
            500,
            mock::status(500, "InternalError", "etcdserver: request timed out"),
        );
        let hung = server.expect("GET", path).await;
        assert_eq!(hung.at - started, CHECK_RETRY_FIRST);
        let hung_at = hung.at;
        server.hold(hung);
        let third = server.expect("GET", path).await;
        assert_eq!(third.at - hung_at, CHECK_TIMEOUT + CHECK_RETRY_FIRST * 2);
        third.respond(
            403,
            mock::status(403, "Forbidden", "leases.coordination.k8s.io is forbidden: User \"u\" cannot list resource \"leases\" in API group \"coordination.k8s.io\" at the cluster scope"),
        );
        let (result, retries) = check.await.expect("task");
        let err = result.expect_err("403");
        assert_eq!(err.namespace, None);
        assert_eq!(
            err.to_string(),
            "cannot list leases (coordination.k8s.io/v1, label crossfade.dev/proxy=true) in every namespace (no --proxy-namespace given): 403 Forbidden: leases.coordination.k8s.io is forbidden: User \"u\" cannot list resource \"leases\" in API group \"coordination.k8s.io\" at the cluster scope; the controller's ServiceAccount needs list and watch on leases cluster-wide (a ClusterRole and ClusterRoleBinding), or give --proxy-namespace with the namespaces where the proxies write their Leases (deploy/controller/deployment.yaml: crossfade-proxy-leases)"
        );
        assert_eq!(retries.len(), 2, "{retries:?}");
        assert!(
            retries[0].0.starts_with(
                "list the proxies' Leases (crossfade.dev/proxy=true) in every namespace: "
            ),
            "{retries:?}"
        );
        assert!(
            retries[0].0.contains("etcdserver: request timed out"),
            "{retries:?}"
        );
        assert_eq!(retries[1].0, "list the proxies' Leases (crossfade.dev/proxy=true) in every namespace: no answer within 30s");
        assert_eq!(
            (retries[0].1, retries[1].1),
            (CHECK_RETRY_FIRST, CHECK_RETRY_FIRST * 2)
        );
    }

    /// Kubetry28: the RBAC advice is for a 403 only. Without --proxy-namespace, a 401 was told
    /// to grant a ClusterRole; with or without it, so were a 404 (no such API) and an answer
    /// that is no list (another server than the API server).
    #[test]
    fn the_start_check_advises_rbac_for_a_403_only() {
        let api = |code: u16| {
            kube::Error::Api(
                serde_json::from_value(serde_json::json!({
                    "status": "Failure", "message": "m", "reason": "r", "code": code
                }))
                .expect("status"),
            )
        };
        let no_list = || {
            kube::Error::SerdeError(
                serde_json::from_str::<serde_json::Value>("<html>").expect_err("not json"),
            )
        };
        let words = |namespace: Option<&str>, error| {
            CheckError {
                namespace: namespace.map(str::to_owned),
                error,
            }
            .to_string()
        };
        for ns in [None, Some("shop")] {
            let forbidden = words(ns, api(403));
            assert!(
                forbidden.contains("needs list and watch on leases"),
                "{forbidden}"
            );
            for (what, text) in [
                ("401", words(ns, api(401))),
                ("404", words(ns, api(404))),
                ("400", words(ns, api(400))),
                ("no list", words(ns, no_list())),
            ] {
                assert!(
                    !text.contains("needs list and watch") && !text.contains("ClusterRole"),
                    "{ns:?} {what}: {text}"
                );
            }
        }
        assert_eq!(
            words(None, api(401)),
            "cannot list leases (coordination.k8s.io/v1, label crossfade.dev/proxy=true) in every namespace (no --proxy-namespace given): 401 Unauthorized: m; the API server refused the controller's credentials (its ServiceAccount token, or the kubeconfig's user)"
        );
        let html = words(Some("shop"), no_list());
        assert!(
            html.starts_with("cannot list leases (coordination.k8s.io/v1, label crossfade.dev/proxy=true) in namespace shop, listed in --proxy-namespace: no Lease list: ")
                && html.ends_with("; the answer is not a Kubernetes list: check that the kubeconfig (or the in-cluster address) reaches the API server itself, not another server or a gateway in front of it"),
            "{html}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_trusted_namespace_that_cannot_be_listed_is_named() {
        use crate::kube::mock;
        let (client, mut server) = mock::client();
        let proxies = Proxies::new(
            client,
            &["shop".to_owned(), "crossfade-proxy-leases".to_owned()],
        );
        let listing = tokio::spawn(async move { proxies.live().await });
        let ok = server
            .expect(
                "GET",
                "/apis/coordination.k8s.io/v1/namespaces/crossfade-proxy-leases/leases",
            )
            .await;
        assert_eq!(
            ok.query.get("labelSelector").map(String::as_str),
            Some(PROXY_SELECTOR)
        );
        ok.respond(
            200,
            serde_json::json!({ "apiVersion": "coordination.k8s.io/v1", "kind": "LeaseList",
                "metadata": {}, "items": [] }),
        );
        let forbidden = server
            .expect("GET", "/apis/coordination.k8s.io/v1/namespaces/shop/leases")
            .await;
        forbidden.respond(
            403,
            mock::status(403, "Forbidden", "leases.coordination.k8s.io is forbidden: User \"system:serviceaccount:crossfade-system:crossfade-controller\" cannot list resource \"leases\" in API group \"coordination.k8s.io\" in the namespace \"shop\""),
        );
        let err = listing.await.expect("task").expect_err("403");
        assert_eq!(err.namespace.as_deref(), Some("shop"));
        let text = err.to_string();
        assert!(
            text.starts_with(
                "list the proxies' Leases (crossfade.dev/proxy=true) in namespace shop (--proxy-namespace): "
            ) && text.contains("forbidden"),
            "{text}"
        );
    }

    #[test]
    fn a_lease_change_concerns_the_routes_whose_generation_moved() {
        let a = BTreeMap::from([("shop/web".to_owned(), 3), ("shop/api".to_owned(), 1)]);
        let b = BTreeMap::from([("shop/web".to_owned(), 4), ("shop/api".to_owned(), 1)]);
        assert_eq!(changed_routes(Some(&a), Some(&b)), vec!["shop/web"]);
        assert!(changed_routes(Some(&a), Some(&a)).is_empty());
        let mut new = changed_routes(None, Some(&a));
        new.sort();
        assert_eq!(new, vec!["shop/api", "shop/web"]);
        let mut gone = changed_routes(Some(&a), None);
        gone.sort();
        assert_eq!(gone, vec!["shop/api", "shop/web"]);
    }

    #[test]
    fn without_a_replica_serving_the_route_the_live_ones_say_why() {
        // Trial 10, K9: a live proxy that refuses the route is not "no live proxy".
        let mut refusing = lease("laptop", 1, 15, r#"{"shop/api": 2}"#);
        refusing.metadata.annotations.as_mut().unwrap().insert(
            super::super::proxy_lease::REFUSED_ANNOTATION.to_owned(),
            r#"{"shop/web": "spec.route.pathPrefix: \"nope\" must start with '/'"}"#.to_owned(),
        );
        let silent = lease("other", 1, 15, r#"{"shop/api": 2}"#);
        let live = replicas(&[refusing, silent.clone()]);
        let ack = acks(&live, "shop/web", "uid-web", 3, 500);
        assert_eq!(
            ack.to_string(),
            "2 live proxy replica(s) (crossfade-system/laptop, crossfade-system/other), none \
             serves the route; refused by crossfade-system/laptop: spec.route.pathPrefix: \
             \"nope\" must start with '/'"
        );
        let ack = acks(&replicas(&[silent]), "shop/web", "uid-web", 3, 500);
        assert!(
            ack.to_string().starts_with(
                "1 live proxy replica(s) (crossfade-system/other), none serves the route and none \
                 reports refusing it"
            ),
            "{ack}"
        );
        assert!(acks(&[], "shop/web", "uid-web", 3, 500)
            .to_string()
            .starts_with(
                "no live proxy replica (no live Lease labelled crossfade.dev/proxy=true)"
            ));
    }
}
