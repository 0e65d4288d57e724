//! The per-replica Lease through which each proxy tells the controller which weights it applied:
//! both sides of the contract in docs/kubernetes.md ("The proxy in the cluster").
//!
//! ```yaml
//! apiVersion: coordination.k8s.io/v1
//! kind: Lease
//! metadata:
//!   name: crossfade-proxy-<replica>
//!   namespace: <the proxy's lease namespace>
//!   labels: { crossfade.dev/proxy: "true" }
//!   annotations:
//!     crossfade.dev/applied: '{"shop/web": 7}'       # route -> status.weights.generation applied
//!     crossfade.dev/applied-uid: '{"shop/web": "6c1f..."}' # route -> metadata.uid of that TrafficShift
//!     crossfade.dev/admin-url: "http://10.0.0.5:9901" # this replica's admin API (/metrics)
//!     crossfade.dev/refused: '{"shop/api": "spec.route.pathPrefix: ..."}' # only when it refuses one
//! spec: { holderIdentity: <replica>, leaseDurationSeconds: 15, renewTime: <now> }
//! ```
//!
//! The proxy builds it with [`ProxyLease::to_lease`]; the controller reads it back with
//! [`ProxyLease::from_lease`] and counts it while [`ProxyLease::is_live`].

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// The label every proxy Lease carries (value `"true"`), to list them with a label selector.
pub const PROXY_LABEL: &str = "crossfade.dev/proxy";

/// The annotation holding the applied generations: a JSON object, route (`<namespace>/<name>`) →
/// `status.weights.generation` of that TrafficShift in the proxy's routing table now (0 before
/// the TrafficShift has any `status.weights`).
pub const APPLIED_ANNOTATION: &str = "crossfade.dev/applied";

/// The annotation naming which TrafficShift each generation of [`APPLIED_ANNOTATION`] is of: a
/// JSON object, route (`<namespace>/<name>`) → `metadata.uid` of the TrafficShift whose
/// `status.weights.generation` the table holds. A TrafficShift deleted and created again under the
/// same name counts its generations from 1 again, so a generation alone could not tell the new
/// object's from the old one's. Optional for the reader (replicas of earlier versions never write
/// it: their generations are taken as they are); a malformed value makes the Lease malformed, as a
/// malformed [`APPLIED_ANNOTATION`] does (read as none, a stale generation of an earlier object
/// would be acknowledged again).
pub const APPLIED_UID_ANNOTATION: &str = "crossfade.dev/applied-uid";

/// The annotation holding the base URL of the replica's admin API (`http://10.0.0.5:9901`), under
/// which `/metrics` and `/status` are served.
pub const ADMIN_URL_ANNOTATION: &str = "crossfade.dev/admin-url";

/// The annotation holding the routes the replica refuses: a JSON object, route
/// (`<namespace>/<name>`) → why (the message its log has, at most [`MAX_REFUSAL_CHARS`]
/// characters). Present only while it refuses one; optional for the reader (a replica of an
/// older version never writes it), and a malformed value reads as none.
pub const REFUSED_ANNOTATION: &str = "crossfade.dev/refused";

/// Longest reason per route in [`REFUSED_ANNOTATION`], in characters; longer ones are cut with `…`.
pub const MAX_REFUSAL_CHARS: usize = 300;

/// The prefix of a proxy Lease's name; the replica's identity follows.
pub const LEASE_PREFIX: &str = "crossfade-proxy-";

/// `spec.leaseDurationSeconds` of every proxy Lease: a replica that has not renewed for this long
/// is not live. Three renewals ([`RENEW_INTERVAL`]) fit in it.
pub const LEASE_DURATION_SECONDS: i32 = 15;

/// How often a proxy renews its Lease (and right after it applies new weights).
pub const RENEW_INTERVAL: Duration = Duration::from_secs(5);

/// What one proxy replica reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyLease {
    /// The replica's identity (`--replica`, else `POD_NAME`, else the host name): the Lease's
    /// `holderIdentity` and the suffix of its name.
    pub replica: String,
    /// Base URL of the replica's admin API, e.g. `http://10.0.0.5:9901`.
    pub admin_url: String,
    /// Route → the `status.weights.generation` in its routing table now.
    pub applied: BTreeMap<String, u64>,
    /// Route → the `metadata.uid` of the TrafficShift whose generation `applied` holds; a route
    /// missing here (a replica of an earlier version) is of whichever TrafficShift has its name.
    pub applied_uid: BTreeMap<String, String>,
    /// Route → why the replica refuses the TrafficShift (its translation error); such a route is
    /// not served, or is served as it was before the change it refuses.
    pub refused: BTreeMap<String, String>,
    /// When the replica last renewed; `None` on a Lease without `renewTime`.
    pub renew_time: Option<Timestamp>,
    /// How long a renewal keeps the replica live, in seconds.
    pub lease_duration_seconds: i32,
}

/// A Lease that does not carry what a proxy Lease must; the message names the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("lease {lease}: {problem}")]
pub struct LeaseError {
    /// `<namespace>/<name>` of the Lease.
    pub lease: String,
    /// What is wrong, naming the field.
    pub problem: String,
}

/// The Lease name of `replica`: `crossfade-proxy-<replica>`, or `replica` itself when it starts
/// with `crossfade-proxy-` already, as the manifests' pod names do (`crossfade-proxy-<hash>`; trial
/// 10, K21: the Lease was `crossfade-proxy-crossfade-proxy-<hash>`).
pub fn lease_name(replica: &str) -> String {
    if replica.starts_with(LEASE_PREFIX) {
        replica.to_owned()
    } else {
        format!("{LEASE_PREFIX}{replica}")
    }
}

/// Longest object name the API server takes for a Lease (a DNS-1123 subdomain, RFC 1123).
const MAX_NAME: usize = crate::kube::crd::name::MAX_OBJECT_NAME_LEN;

/// Checks that `replica` gives a Lease name the API server accepts ([`lease_name`]): a DNS-1123
/// subdomain (RFC 1123, as Kubernetes checks object names): at most 253 characters of lower-case
/// letters, digits, `-` and `.`, each `.`-separated part starting and ending with a letter or a
/// digit. Checked at start (trial 10, K21: `--replica 'Bad_Name!'` started, and every Lease write
/// would have failed).
///
/// # Errors
/// What is wrong with it, quoting it and the Lease name.
pub fn check_replica(replica: &str) -> Result<(), String> {
    use crate::kube::crd::name::{subdomain_problem, Subdomain};
    let name = lease_name(replica);
    let why = match subdomain_problem(&name) {
        _ if replica.is_empty() => Some("it is empty".to_owned()),
        None => None,
        Some(Subdomain::Empty) => Some("it is empty".to_owned()),
        Some(Subdomain::TooLong(len)) => Some(format!(
            "the Lease name would be {len} characters, above the {MAX_NAME} Kubernetes takes"
        )),
        Some(Subdomain::BadChar(c)) => Some(format!(
            "{c:?} is not allowed (lower-case letters, digits, '-' and '.' only)"
        )),
        Some(Subdomain::BadPart) => {
            Some("each '.'-separated part must start and end with a letter or a digit".to_owned())
        }
    };
    match why {
        None => Ok(()),
        Some(why) => Err(format!(
            "{replica:?} cannot name this replica's Lease {name:?} (a DNS-1123 subdomain, as \
             Kubernetes names objects): {why}"
        )),
    }
}

// === impl ProxyLease ===

impl ProxyLease {
    /// The Lease object in `namespace`, renewed at `now` (with `apiVersion` and `kind` set, as a
    /// server-side apply body needs).
    pub fn to_lease(&self, namespace: &str, now: Timestamp) -> Lease {
        // A BTreeMap<String, u64> always serialises.
        let applied = serde_json::to_string(&self.applied).unwrap_or_else(|_| "{}".to_owned());
        // A BTreeMap<String, String> always serialises.
        let applied_uid =
            serde_json::to_string(&self.applied_uid).unwrap_or_else(|_| "{}".to_owned());
        let mut annotations = BTreeMap::from([
            (APPLIED_ANNOTATION.to_owned(), applied),
            (APPLIED_UID_ANNOTATION.to_owned(), applied_uid),
            (ADMIN_URL_ANNOTATION.to_owned(), self.admin_url.clone()),
        ]);
        if !self.refused.is_empty() {
            let refused: BTreeMap<&String, String> = self
                .refused
                .iter()
                .map(|(route, why)| (route, cut_reason(why)))
                .collect();
            // A BTreeMap of strings always serialises.
            let refused = serde_json::to_string(&refused).unwrap_or_else(|_| "{}".to_owned());
            annotations.insert(REFUSED_ANNOTATION.to_owned(), refused);
        }
        Lease {
            metadata: ObjectMeta {
                name: Some(lease_name(&self.replica)),
                namespace: Some(namespace.to_owned()),
                labels: Some(BTreeMap::from([(
                    PROXY_LABEL.to_owned(),
                    "true".to_owned(),
                )])),
                annotations: Some(annotations),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.replica.clone()),
                lease_duration_seconds: Some(self.lease_duration_seconds),
                renew_time: Some(MicroTime(now)),
                ..LeaseSpec::default()
            }),
        }
    }

    /// Reads a proxy Lease back.
    ///
    /// # Errors
    /// [`LeaseError`] naming the field when `spec.holderIdentity`, the
    /// `crossfade.dev/applied` annotation (or its JSON) or `crossfade.dev/admin-url` is missing
    /// or malformed, or `crossfade.dev/applied-uid` is there and not a JSON object of route to
    /// uid.
    pub fn from_lease(lease: &Lease) -> Result<ProxyLease, LeaseError> {
        let meta = &lease.metadata;
        let name = format!(
            "{}/{}",
            meta.namespace.as_deref().unwrap_or(""),
            meta.name.as_deref().unwrap_or("")
        );
        let bad = |problem: String| LeaseError {
            lease: name.clone(),
            problem,
        };
        let annotation = |key: &str| {
            meta.annotations
                .as_ref()
                .and_then(|a| a.get(key))
                .ok_or_else(|| bad(format!("annotation {key} is missing")))
        };
        let applied = annotation(APPLIED_ANNOTATION)?;
        let applied: BTreeMap<String, u64> = serde_json::from_str(applied).map_err(|e| {
            bad(format!(
                "annotation {APPLIED_ANNOTATION}: {e} (expected a JSON object of route to generation)"
            ))
        })?;
        let admin_url = annotation(ADMIN_URL_ANNOTATION)?.clone();
        let refused = annotation(REFUSED_ANNOTATION)
            .ok()
            .and_then(|r| serde_json::from_str(r).ok())
            .unwrap_or_default();
        let applied_uid = match annotation(APPLIED_UID_ANNOTATION) {
            // A replica of an earlier version: its generations are taken as they are.
            Err(_) => BTreeMap::new(),
            Ok(text) => serde_json::from_str(text).map_err(|e| {
                bad(format!(
                    "annotation {APPLIED_UID_ANNOTATION}: {e} (expected a JSON object of route to \
                     TrafficShift uid)"
                ))
            })?,
        };
        let spec = lease.spec.as_ref();
        let replica = spec
            .and_then(|s| s.holder_identity.clone())
            .ok_or_else(|| bad("spec.holderIdentity is missing".to_owned()))?;
        Ok(ProxyLease {
            replica,
            admin_url,
            applied,
            applied_uid,
            refused,
            renew_time: spec.and_then(|s| s.renew_time.as_ref()).map(|t| t.0),
            lease_duration_seconds: spec
                .and_then(|s| s.lease_duration_seconds)
                .unwrap_or(LEASE_DURATION_SECONDS),
        })
    }

    /// Whether the replica is live at `now`: `renewTime + leaseDurationSeconds > now`. A Lease
    /// without `renewTime` is not.
    pub fn is_live(&self, now: Timestamp) -> bool {
        let duration = SignedDuration::from_secs(i64::from(self.lease_duration_seconds));
        self.renew_time
            .and_then(|t| t.checked_add(duration).ok())
            .is_some_and(|until| until > now)
    }
}

/// `why` cut to [`MAX_REFUSAL_CHARS`] characters, ending in `…` when cut.
fn cut_reason(why: &str) -> String {
    match crate::text::head(why, MAX_REFUSAL_CHARS) {
        None => why.to_owned(),
        Some(_) => {
            let head = crate::text::head(why, MAX_REFUSAL_CHARS - 1).unwrap_or(why);
            format!("{head}…")
        }
    }
}

#[cfg(test)]
mod tests {
    /// Trial 10, K21: the manifests' pod name gave `crossfade-proxy-crossfade-proxy-<hash>`,
    /// and a replica that cannot name a Lease was accepted.
    #[test]
    fn replicas_name_their_lease_once_prefixed_and_bad_names_are_refused() {
        use super::{check_replica, lease_name};
        assert_eq!(lease_name("laptop"), "crossfade-proxy-laptop");
        assert_eq!(
            lease_name("crossfade-proxy-7d9f-x2"),
            "crossfade-proxy-7d9f-x2"
        );
        for good in ["laptop", "crossfade-proxy-7d9f-x2", "node-1.zone-a", "0"] {
            assert_eq!(check_replica(good), Ok(()), "{good}");
        }
        for (bad, why) in [
            ("Bad_Name!", "'B' is not allowed"),
            ("", "it is empty"),
            ("a..b", "must start and end with a letter or a digit"),
            ("x-", "must start and end with a letter or a digit"),
        ] {
            let error = check_replica(bad).expect_err(bad);
            assert!(error.contains(why), "{bad}: {error}");
        }
        let long = "a".repeat(240);
        assert!(check_replica(&long)
            .expect_err("too long")
            .contains("above the 253"));
    }

    use super::*;

    fn lease() -> ProxyLease {
        ProxyLease {
            replica: "proxy-7d9f-x2".into(),
            admin_url: "http://10.0.0.5:9901".into(),
            applied: BTreeMap::from([("shop/web".into(), 7), ("shop/api".into(), 0)]),
            applied_uid: BTreeMap::from([
                ("shop/web".into(), "6c1f".into()),
                ("shop/api".into(), "a2e0".into()),
            ]),
            refused: BTreeMap::new(),
            renew_time: None,
            lease_duration_seconds: LEASE_DURATION_SECONDS,
        }
    }

    #[test]
    fn a_proxy_lease_has_the_shape_of_the_protocol_and_reads_back() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let written = lease().to_lease("crossfade-system", now);
        let json = serde_json::to_value(&written).unwrap();
        assert_eq!(json["metadata"]["name"], "crossfade-proxy-proxy-7d9f-x2");
        assert_eq!(json["metadata"]["labels"][PROXY_LABEL], "true");
        assert_eq!(
            json["metadata"]["annotations"][APPLIED_ANNOTATION],
            r#"{"shop/api":0,"shop/web":7}"#
        );
        assert_eq!(
            json["metadata"]["annotations"][APPLIED_UID_ANNOTATION],
            r#"{"shop/api":"a2e0","shop/web":"6c1f"}"#
        );
        assert!(
            json["metadata"]["annotations"]
                .get(REFUSED_ANNOTATION)
                .is_none(),
            "written only while a route is refused"
        );
        assert_eq!(json["spec"]["holderIdentity"], "proxy-7d9f-x2");
        assert_eq!(json["spec"]["leaseDurationSeconds"], 15);
        assert_eq!(json["spec"]["renewTime"], "2027-01-15T08:00:00.000000Z");
        let back = ProxyLease::from_lease(&written).unwrap();
        assert_eq!(
            back,
            ProxyLease {
                renew_time: Some(now),
                ..lease()
            }
        );
    }

    #[test]
    fn a_replica_is_live_until_renew_time_plus_the_duration() {
        let renewed = Timestamp::from_second(1_800_000_000).unwrap();
        let lease = ProxyLease {
            renew_time: Some(renewed),
            ..lease()
        };
        let at = |s: i64| renewed.checked_add(SignedDuration::from_secs(s)).unwrap();
        assert!(lease.is_live(at(14)));
        assert!(!lease.is_live(at(15)));
        assert!(!ProxyLease {
            renew_time: None,
            ..lease.clone()
        }
        .is_live(renewed));
    }

    #[test]
    fn a_malformed_applied_annotation_is_named() {
        let mut written = lease().to_lease("ns", Timestamp::UNIX_EPOCH);
        written
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(APPLIED_ANNOTATION.into(), "[1]".into());
        let error = ProxyLease::from_lease(&written).unwrap_err();
        assert!(
            error.to_string().starts_with("lease ns/crossfade-proxy-proxy-7d9f-x2: annotation crossfade.dev/applied: invalid type"),
            "{error}"
        );
    }

    /// A malformed `crossfade.dev/applied-uid` was read as none, so the replica's generations
    /// were taken as they are, and a stale one of a TrafficShift deleted and created again
    /// acknowledged the new object's (what the annotation is for). It makes the Lease malformed,
    /// as a malformed `crossfade.dev/applied` does (logged, acknowledging nothing); a Lease
    /// without it is an older proxy's (check31).
    #[test]
    fn a_malformed_applied_uid_annotation_is_named_and_a_missing_one_is_an_older_proxy() {
        for bad in ["[1]", r#"{"shop/web": 5}"#, "garbage", ""] {
            let mut written = lease().to_lease("ns", Timestamp::UNIX_EPOCH);
            written
                .metadata
                .annotations
                .as_mut()
                .unwrap()
                .insert(APPLIED_UID_ANNOTATION.into(), bad.into());
            let error = ProxyLease::from_lease(&written).expect_err(bad).to_string();
            assert!(
                error.starts_with(
                    "lease ns/crossfade-proxy-proxy-7d9f-x2: annotation crossfade.dev/applied-uid: "
                ) && error.ends_with("(expected a JSON object of route to TrafficShift uid)"),
                "{bad}: {error}"
            );
        }
        let mut older = lease().to_lease("ns", Timestamp::UNIX_EPOCH);
        older
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .remove(APPLIED_UID_ANNOTATION);
        let read = ProxyLease::from_lease(&older).expect("an older proxy's Lease");
        assert!(read.applied_uid.is_empty());
        assert_eq!(read.applied, lease().applied);
    }

    #[test]
    fn refused_routes_are_published_with_their_reason_and_read_back() {
        // Trial 10, K9: the controller can say why a live replica does not serve a route.
        let refusing = ProxyLease {
            refused: BTreeMap::from([
                (
                    "shop/api".into(),
                    "spec.route.pathPrefix: \"nope\" must start with '/'".into(),
                ),
                ("shop/big".into(), "x".repeat(400)),
            ]),
            ..lease()
        };
        let written = refusing.to_lease("ns", Timestamp::UNIX_EPOCH);
        let back = ProxyLease::from_lease(&written).unwrap();
        assert_eq!(
            back.refused["shop/api"],
            "spec.route.pathPrefix: \"nope\" must start with '/'"
        );
        assert_eq!(back.refused["shop/big"].chars().count(), MAX_REFUSAL_CHARS);
        assert!(back.refused["shop/big"].ends_with('…'));
        // A Lease without it (an older proxy) or with a malformed one refuses nothing.
        let mut old = written.clone();
        old.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(REFUSED_ANNOTATION.into(), "[1]".into());
        assert!(ProxyLease::from_lease(&old).unwrap().refused.is_empty());
        old.metadata
            .annotations
            .as_mut()
            .unwrap()
            .remove(REFUSED_ANNOTATION);
        assert!(ProxyLease::from_lease(&old).unwrap().refused.is_empty());
    }
}
