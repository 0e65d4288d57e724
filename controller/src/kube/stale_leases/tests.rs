//! The stale rule, and the sweep's requests against a mock API (`crate::kube::mock`): one list per
//! namespace, a delete only of the stale Lease, carrying its `uid` and `resourceVersion` as
//! preconditions; a 409 (the Lease renewed meanwhile) deletes nothing and ends quietly.

use std::time::Duration;

use serde_json::{json, Value};

use super::*;
use crate::kube::mock::{self, query};

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/proxies/leases";

/// A proxy Lease `name` renewed `ago` before `now`.
fn lease(name: &str, renewed: Timestamp) -> Value {
    json!({ "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": { "name": name, "namespace": "proxies", "uid": format!("uid-{name}"),
                          "resourceVersion": "7", "labels": { "crossfade.dev/proxy": "true" } },
            "spec": { "holderIdentity": name, "leaseDurationSeconds": 15,
                      "renewTime": renewed.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string() } })
}

fn parse(value: Value) -> Lease {
    serde_json::from_value(value).expect("a Lease")
}

#[test]
fn a_lease_is_stale_once_expired_longer_than_the_bound() {
    let now = Timestamp::now();
    let hour = Duration::from_secs(3600);
    let ago = |secs: i64| now - SignedDuration::from_secs(secs);
    // Expired at renewTime + 15 s: 3616 s ago is 1 s past the bound, 3614 s ago 1 s short.
    assert!(is_stale(&parse(lease("a", ago(3616))), now, hour));
    assert!(!is_stale(&parse(lease("b", ago(3614))), now, hour));
    assert!(!is_stale(&parse(lease("live", now)), now, hour));
    // No renewTime: from acquireTime, else the creation; none of them: never stale.
    let mut created = lease("c", now);
    created["spec"]
        .as_object_mut()
        .expect("spec")
        .remove("renewTime");
    assert!(!is_stale(&parse(created.clone()), now, hour));
    created["metadata"]["creationTimestamp"] =
        json!(ago(7200).strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
    assert!(is_stale(&parse(created), now, hour));
}

#[tokio::test]
async fn the_sweep_deletes_only_the_stale_lease_on_its_uid_and_resource_version() {
    let (client, mut server) = mock::client();
    let api: Api<Lease> = Api::namespaced(client.clone(), "proxies");
    let now = Timestamp::now();
    let old = now - SignedDuration::from_secs(7200);
    let sweep = tokio::spawn(async move { sweep(&client, &[api], STALE_AFTER).await });

    let list = server.expect("GET", LEASES).await;
    assert_eq!(list.query, query(&[("labelSelector", PROXY_SELECTOR)]));
    list.ok(
        json!({ "apiVersion": "coordination.k8s.io/v1", "kind": "LeaseList",
                    "metadata": { "resourceVersion": "9" },
                    "items": [lease("dead", old), lease("live", now), lease("gone", old)] }),
    );
    let delete = server.expect("DELETE", &format!("{LEASES}/dead")).await;
    assert_eq!(
        delete.body["preconditions"],
        json!({ "uid": "uid-dead", "resourceVersion": "7" })
    );
    delete.ok(lease("dead", old));
    // Renewed since the list: the server refuses on the precondition, and the Lease stays.
    let renewed = server.expect("DELETE", &format!("{LEASES}/gone")).await;
    assert_eq!(
        renewed.body["preconditions"],
        json!({ "uid": "uid-gone", "resourceVersion": "7" })
    );
    renewed.respond(
        409,
        mock::status(409, "Conflict", "Precondition failed: ResourceVersion in precondition: 7, ResourceVersion in object meta: 8"),
    );
    assert_eq!(sweep.await.expect("sweep"), 1, "one deleted");
    server.assert_quiet(Duration::from_secs(1)).await;
}
