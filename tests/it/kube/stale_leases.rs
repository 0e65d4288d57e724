//! Stale proxy Leases (since session 41): the controller, at the start of its term, deletes the
//! proxy Leases (label `crossfade.dev/proxy=true`) expired more than an hour ago in the
//! namespaces it reads them from, and nothing else.

use std::time::Duration;

use crossfade_controller::kube::proxy_lease::PROXY_LABEL;
use crossfade_controller::kube::Controllers;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use serde_json::json;

use super::cluster::FakeProxies;
use super::emulator::Emulator;
use super::shift::controller_with;
use crate::support::wait_until;

/// A Lease `name` renewed at `renewed`, with the proxy label when `proxy`.
pub(super) fn lease(name: &str, renewed: Timestamp, proxy: bool) -> Lease {
    let labels = if proxy {
        json!({ PROXY_LABEL: "true" })
    } else {
        json!({})
    };
    let renew = renewed.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    serde_json::from_value(json!({
        "metadata": { "name": name, "labels": labels,
                      "annotations": { "crossfade.dev/applied": "{}",
                                       "crossfade.dev/admin-url": "http://127.0.0.1:9" } },
        "spec": { "holderIdentity": name, "leaseDurationSeconds": 15, "renewTime": renew }
    }))
    .expect("lease")
}

/// Created in `api`.
pub(super) async fn create(api: &Api<Lease>, lease: &Lease) {
    api.create(&PostParams::default(), lease)
        .await
        .expect("create lease");
}

#[tokio::test]
async fn the_controller_deletes_a_proxy_lease_expired_long_ago_and_keeps_a_live_one() {
    let Some(emu) = Emulator::start() else { return };
    let client = emu.client();
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let now = Timestamp::now();
    let two_hours_ago = now - SignedDuration::from_secs(7200);
    // 59 minutes past its expiry: within the bound.
    let recently = now - SignedDuration::from_secs(59 * 60 + 15);
    create(&leases, &lease("crossfade-proxy-dead", two_hours_ago, true)).await;
    create(&leases, &lease("crossfade-proxy-recent", recently, true)).await;
    create(&leases, &lease("crossfade-proxy-live", now, true)).await;
    create(&leases, &lease("someone-elses", two_hours_ago, false)).await;

    let metrics = FakeProxies::start(client.clone());
    let options = Controllers {
        proxy_namespaces: vec!["default".to_owned()],
        ..Controllers::new(Some("default"), metrics)
    };
    let _controller = controller_with(&client, options);
    wait_until(
        Duration::from_secs(30),
        "the stale proxy Lease deleted",
        || async {
            let gone = leases.get_opt("crossfade-proxy-dead").await.ok()?.is_none();
            gone.then_some(())
        },
    )
    .await;
    // One sweep judged them all; the next is 10 minutes away.
    for kept in [
        "crossfade-proxy-recent",
        "crossfade-proxy-live",
        "someone-elses",
    ] {
        let found = leases.get_opt(kept).await.expect("get lease");
        assert!(found.is_some(), "{kept} was deleted");
    }
}
