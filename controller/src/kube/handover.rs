//! The role swap's hand-over check in Kubernetes mode (case C12): after promotion the preview
//! serves the route while the target Deployment rolls out the rollout's images, and the swap
//! sends all traffic back to the target. The target's rollout counts as done when its status
//! says so (`driver::kube::build::availability`, kubectl's rule), but the Deployment stops
//! counting an old pod as soon as it carries a `deletionTimestamp`, while the EndpointSlice
//! controller marks that pod `terminating` in its Service's slices a moment later. A swap
//! published in that moment sends requests to old-image pods, which are still up for their
//! termination grace: the old version serving again after the new one had all traffic, which is
//! what the case forbids.
//!
//! So the swap waits until every endpoint the proxies would route to
//! ([`is_ready`]: ready, not terminating) in the target Service's slices is a pod that exists and
//! is not being deleted, and at least one is listed. A live pod of other images is not waited
//! for: once the Deployment counts every replica updated and no other, such a pod is none of its
//! own (one created by hand with its labels), and the Service sends it requests whatever the
//! proxies do; waiting on it would hold the rollout for as long as it lives. Pure: the
//! reconcile lists the slices ([`crate::driver::kube::KubeDriver::endpoint_slices`]) and the
//! target's pods ([`crate::kube::revision::list_pods`]). No slice at all is no reading (no
//! EndpointSlice controller, as in the tests' API emulator): the swap goes on as before.
//! An endpoint without a `targetRef` to a Pod (a slice written by hand) cannot be checked and
//! does not hold the swap back.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::kube::proxy_source::translate::is_ready;

/// Why the target's ready endpoints may still include old pods, or `None` when the swap may be
/// published: no slice (no reading), or every ready endpoint that names a Pod names one of `pods`
/// (the target's, by its selector) that is not being deleted, and at least one endpoint is ready.
///
/// The reason names the first endpoint in the way, e.g. `pod web-7d9f-x2 (10.0.0.7) is being
/// deleted but still listed ready`.
pub fn waits_for(slices: &[EndpointSlice], pods: &[Pod]) -> Option<String> {
    if slices.is_empty() {
        return None;
    }
    let by_name: HashMap<&str, &Pod> = pods
        .iter()
        .filter_map(|p| p.metadata.name.as_deref().map(|n| (n, p)))
        .collect();
    let mut ready = 0usize;
    for endpoint in slices.iter().flat_map(|s| &s.endpoints) {
        if !is_ready(endpoint) {
            continue;
        }
        ready += 1;
        let Some(name) = endpoint
            .target_ref
            .as_ref()
            .filter(|r| r.kind.as_deref() == Some("Pod"))
            .and_then(|r| r.name.as_deref())
        else {
            continue;
        };
        let address = endpoint.addresses.first().map_or("", String::as_str);
        let Some(pod) = by_name.get(name) else {
            return Some(format!(
                "pod {name} ({address}) is still listed ready in the Service's EndpointSlices but no longer exists"
            ));
        };
        if pod.metadata.deletion_timestamp.is_some() {
            return Some(format!(
                "pod {name} ({address}) is being deleted but still listed ready"
            ));
        }
    }
    (ready == 0).then(|| "the Service's EndpointSlices list no ready endpoint yet".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn slice(endpoints: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json!({
            "addressType": "IPv4",
            "metadata": { "name": "web-blue-abc", "namespace": "shop" },
            "ports": [{ "port": 8080 }],
            "endpoints": endpoints,
        }))
        .unwrap()
    }

    fn endpoint(ip: &str, pod: &str, ready: bool, terminating: bool) -> serde_json::Value {
        json!({
            "addresses": [ip],
            "conditions": { "ready": ready, "serving": true, "terminating": terminating },
            "targetRef": { "kind": "Pod", "name": pod, "namespace": "shop" },
        })
    }

    fn pod(name: &str, image: &str, deleting: bool) -> Pod {
        let mut pod: Pod = serde_json::from_value(json!({
            "metadata": { "name": name, "namespace": "shop" },
            "spec": { "containers": [
                { "name": "app", "image": image },
                { "name": "sidecar", "image": "proxy:1" },
            ] },
        }))
        .unwrap();
        if deleting {
            pod.metadata.deletion_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                ));
        }
        pod
    }

    /// Case C12: the Deployment says rolled out while its old pod, already being deleted, is
    /// still listed ready; the swap waits for the slice to catch up.
    #[test]
    fn an_old_pod_still_listed_ready_holds_the_swap_back() {
        let pods = [
            pod("web-new-1", "shop:v2", false),
            pod("web-old-1", "shop:v1", true),
        ];
        let lagging = [slice(json!([
            endpoint("10.0.0.1", "web-new-1", true, false),
            endpoint("10.0.0.2", "web-old-1", true, false),
        ]))];
        assert_eq!(
            waits_for(&lagging, &pods).as_deref(),
            Some("pod web-old-1 (10.0.0.2) is being deleted but still listed ready")
        );
        let caught_up = [slice(json!([
            endpoint("10.0.0.1", "web-new-1", true, false),
            endpoint("10.0.0.2", "web-old-1", false, true),
        ]))];
        assert_eq!(waits_for(&caught_up, &pods), None);
    }

    /// A pod deleted while the slice still lists it ready holds the swap back; a live pod of
    /// other images (not the Deployment's: created by hand with its labels) does not.
    #[test]
    fn a_pod_gone_but_listed_holds_the_swap_back_and_a_stray_live_one_does_not() {
        let slices = [slice(json!([
            endpoint("10.0.0.1", "web-new-1", true, false),
            endpoint("10.0.0.3", "web-debug", true, false),
        ]))];
        let pods = [pod("web-new-1", "shop:v2", false)];
        assert_eq!(
            waits_for(&slices, &pods).as_deref(),
            Some(
                "pod web-debug (10.0.0.3) is still listed ready in the Service's EndpointSlices \
                 but no longer exists"
            )
        );
        let stray = [
            pod("web-new-1", "shop:v2", false),
            pod("web-debug", "shop:v1", false),
        ];
        assert_eq!(waits_for(&slices, &stray), None);
    }

    #[test]
    fn no_slice_is_no_reading_and_no_ready_endpoint_waits() {
        assert_eq!(waits_for(&[], &[]), None);
        let none_ready = [slice(json!([endpoint(
            "10.0.0.1",
            "web-new-1",
            false,
            false
        )]))];
        let pods = [pod("web-new-1", "shop:v2", false)];
        assert_eq!(
            waits_for(&none_ready, &pods).as_deref(),
            Some("the Service's EndpointSlices list no ready endpoint yet")
        );
        // A hand-written endpoint without a targetRef cannot be checked and does not hold back.
        let by_hand = [slice(json!([{ "addresses": ["10.0.0.9"] }]))];
        assert_eq!(waits_for(&by_hand, &pods), None);
    }
}
