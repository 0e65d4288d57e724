//! Rollback capacity in Kubernetes mode (case C02, rollback variant; argo-rollouts#3941): how many
//! of each backend's endpoints can take requests, read from the cluster, for the rollout
//! machine's one rule ([`crate::rollout::rollback_preview_bp`]: the active backend gets at most
//! 1.5 × its healthy share), fed through the same input as in local mode
//! ([`crate::rollout::Input::Capacity`]). Pure; the reconcile lists the slices
//! ([`crate::driver::kube::KubeDriver::endpoint_slices`]) and keeps the count the target had.
//!
//! - **Healthy** endpoints of a backend are the distinct endpoints of its Service's
//!   EndpointSlices that the proxies route to ([`is_ready`]: `conditions.ready` not `false`,
//!   `conditions.terminating` not `true`).
//! - **Total** for the active backend (blue, the target Deployment) is the larger of its desired
//!   replicas (`spec.replicas`, default 1) and the most ready endpoints it had since the rollout
//!   started: a target scaled down while the preview carried its traffic (an autoscaler) is
//!   measured against what carried the traffic before, not against its smaller size now.
//! - For the preview (green) total is its endpoints listed, ready or not; only whether it has a
//!   healthy one decides (none: all traffic back at once).
//! - No EndpointSlice for the target's Service at all is **no reading**: the cluster says nothing
//!   of its endpoints (no EndpointSlice controller, as in the tests' API emulator), and a
//!   rollback then sends all traffic back at once, as before capacity was read.

use std::collections::BTreeSet;

use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::kube::proxy_source::translate::is_ready;
use crate::rollout::{Capacities, Capacity};

/// The endpoints of one Service's EndpointSlices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Endpoints {
    /// Distinct endpoints the proxies route to ([`is_ready`]).
    pub ready: u32,
    /// Distinct endpoints listed, ready or not.
    pub listed: u32,
}

/// Counts the endpoints of `slices` (the slices of one Service), each once: an endpoint is its
/// first address at the slice's ports (a pod moving between slices may be listed twice for a
/// moment). `None` when there is no slice.
pub fn count(slices: &[EndpointSlice]) -> Option<Endpoints> {
    if slices.is_empty() {
        return None;
    }
    let mut ready = BTreeSet::new();
    let mut listed = BTreeSet::new();
    for slice in slices {
        let ports: Vec<Option<i32>> = slice.ports.iter().flatten().map(|p| p.port).collect();
        for endpoint in &slice.endpoints {
            let Some(address) = endpoint.addresses.first() else {
                continue;
            };
            let id = (address.as_str(), ports.clone());
            if is_ready(endpoint) {
                ready.insert(id.clone());
            }
            listed.insert(id);
        }
    }
    let n = |set: BTreeSet<_>| u32::try_from(set.len()).unwrap_or(u32::MAX);
    Some(Endpoints {
        ready: n(ready),
        listed: n(listed),
    })
}

/// Both backends' capacity for the rollout machine: `active` from the target's Service's slices
/// (`None`: no slice, no reading), its `desired` replicas (`None` when the Deployment was not
/// read) and `most`, the most ready endpoints it had since the rollout started; `preview` from
/// the preview's Service's slices (none: no healthy endpoint). See the module docs.
pub fn capacities(
    active: Option<Endpoints>,
    preview: Option<Endpoints>,
    desired: Option<u32>,
    most: Option<u32>,
) -> Option<Capacities> {
    let active = active?;
    let preview = preview.unwrap_or_default();
    let total = desired.unwrap_or(0).max(most.unwrap_or(0));
    Some(Capacities {
        active: Capacity {
            healthy: active.ready,
            total,
        },
        preview: Capacity {
            healthy: preview.ready,
            total: preview.listed,
        },
    })
}

/// The target Deployment's desired replicas: `spec.replicas`, 1 when unset (the API's default),
/// `None` for a negative value.
pub fn desired_replicas(target: &k8s_openapi::api::apps::v1::Deployment) -> Option<u32> {
    let replicas = target.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    u32::try_from(replicas).ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::rollout::{active_cap_bp, rollback_preview_bp};

    /// A slice with one endpoint per `(address, ready, terminating)`, at port 8080.
    fn slice(endpoints: &[(&str, Option<bool>, Option<bool>)]) -> EndpointSlice {
        let endpoints: Vec<_> = endpoints
            .iter()
            .map(|(address, ready, terminating)| {
                json!({ "addresses": [address],
                    "conditions": { "ready": ready, "terminating": terminating } })
            })
            .collect();
        serde_json::from_value(json!({
            "metadata": { "name": "web-blue-x" }, "addressType": "IPv4",
            "endpoints": endpoints, "ports": [{ "name": "http", "port": 8080 }]
        }))
        .expect("slice")
    }

    #[test]
    fn ready_endpoints_are_the_ones_the_proxies_route_to_each_counted_once() {
        assert_eq!(count(&[]), None, "no slice: no reading");
        let a = slice(&[
            ("10.0.0.1", Some(true), None),
            ("10.0.0.2", None, None), // unknown counts as ready
            ("10.0.0.3", Some(false), None),
            ("10.0.0.4", Some(true), Some(true)), // terminating
        ]);
        let b = slice(&[
            ("10.0.0.1", Some(true), None),
            ("10.0.0.5", Some(true), None),
        ]);
        assert_eq!(
            count(&[a, b]),
            Some(Endpoints {
                ready: 3,
                listed: 5
            })
        );
        assert_eq!(
            count(&[slice(&[])]),
            Some(Endpoints::default()),
            "a slice without endpoints: 0 ready, a reading"
        );
    }

    #[test]
    fn the_target_is_measured_against_the_larger_of_its_replicas_and_what_it_had() {
        let ready = |n| {
            Some(Endpoints {
                ready: n,
                listed: n,
            })
        };
        let green = ready(2);
        // Scaled down from 4 to 1 while green carried the traffic: 1 of 4, not 1 of 1.
        let c = capacities(ready(1), green, Some(1), Some(4)).expect("a reading");
        assert_eq!(
            c.active,
            Capacity {
                healthy: 1,
                total: 4
            }
        );
        assert_eq!(active_cap_bp(c.active), 3_750);
        assert_eq!(rollback_preview_bp(9_000, Some(c), false), 6_250);
        // Every replica ready: all at once, as before.
        let c = capacities(ready(4), green, Some(4), Some(4)).expect("a reading");
        assert_eq!(rollback_preview_bp(9_000, Some(c), false), 0);
        // Desired replicas above what it had: they count.
        let c = capacities(ready(1), green, Some(3), Some(1)).expect("a reading");
        assert_eq!(c.active.total, 3);
        // No slice for the target: no reading (all at once).
        assert_eq!(capacities(None, green, Some(3), Some(3)), None);
        // No slice for the preview: no healthy preview endpoint (all at once).
        let c = capacities(ready(1), None, Some(4), None).expect("a reading");
        assert_eq!(rollback_preview_bp(9_000, Some(c), false), 0);
    }

    #[test]
    fn desired_replicas_default_to_one() {
        let d = |spec: serde_json::Value| {
            let d: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(json!({
                "metadata": { "name": "web" }, "spec": spec
            }))
            .expect("deployment");
            desired_replicas(&d)
        };
        let template = json!({ "selector": {}, "template": {} });
        assert_eq!(d(template.clone()), Some(1));
        let mut three = template.clone();
        three["replicas"] = json!(3);
        assert_eq!(d(three), Some(3));
        let mut negative = template;
        negative["replicas"] = json!(-1);
        assert_eq!(d(negative), None);
    }
}
