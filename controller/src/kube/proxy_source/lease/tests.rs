//! The Lease keeper's requests on paused time, against a scripted API (a `tower` service standing
//! in for the API server: it records each request and answers from a script).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

use super::*;
use crate::kube::proxy_lease::{APPLIED_ANNOTATION, LEASE_DURATION_SECONDS, REFUSED_ANNOTATION};

/// Records `METHOD path?query` and the body of each request; answers from `replies` in order,
/// then 200 with a Lease.
#[derive(Default)]
struct Script {
    replies: Mutex<VecDeque<u16>>,
    seen: Mutex<Vec<(String, Value)>>,
}

impl Script {
    fn client(self: &Arc<Script>) -> kube::Client {
        let script = Arc::clone(self);
        let service = tower::service_fn(move |req: Request<kube::client::Body>| {
            let script = Arc::clone(&script);
            async move {
                let (parts, body) = req.into_parts();
                let bytes = body
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let line = format!("{} {}", parts.method, parts.uri);
                let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                script.seen.lock().unwrap().push((line, body));
                let code = script.replies.lock().unwrap().pop_front().unwrap_or(200);
                let reply = if code == 200 {
                    json!({ "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                            "metadata": { "name": "crossfade-proxy-r1", "namespace": "ns" } })
                } else {
                    json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure",
                            "message": "etcdserver: request timed out", "reason": "InternalError", "code": code })
                };
                let body = Full::new(Bytes::from(reply.to_string()));
                Ok::<_, Infallible>(Response::builder().status(code).body(body).unwrap())
            }
        });
        kube::Client::new(service, "default")
    }

    fn seen(&self) -> Vec<(String, Value)> {
        self.seen.lock().unwrap().clone()
    }
}

/// Lets the keeper run until it waits again (paused time: only ready tasks run).
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn the_lease_is_applied_after_the_first_sync_every_5s_and_at_once_on_a_new_generation() {
    let script = Arc::new(Script::default());
    script.replies.lock().unwrap().extend([200, 500]);
    let leases: Api<Lease> = Api::namespaced(script.client(), "ns");
    let (applied_tx, applied) =
        watch::channel(Reported::from(BTreeMap::from([("shop/web".to_owned(), 0)])));
    let (synced_tx, synced) = watch::channel(false);
    let (stop_tx, stop) = watch::channel(false);
    let lease = ProxyLease {
        replica: "r1".into(),
        admin_url: "http://10.0.0.5:9901".into(),
        applied: BTreeMap::new(),
        applied_uid: BTreeMap::new(),
        refused: BTreeMap::new(),
        renew_time: None,
        lease_duration_seconds: LEASE_DURATION_SECONDS,
    };
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = KubeSourceMetrics::register(&mut registry);
    let keeper = tokio::spawn(keep_lease(
        leases,
        "ns".into(),
        lease,
        applied,
        synced,
        stop,
        metrics,
    ));

    // Nothing before the first route set is in the table.
    tokio::time::advance(Duration::from_secs(30)).await;
    settle().await;
    assert!(script.seen().is_empty());

    synced_tx.send_replace(true);
    settle().await;
    let seen = script.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].0,
        "PATCH /apis/coordination.k8s.io/v1/namespaces/ns/leases/crossfade-proxy-r1?&force=true&fieldManager=crossfade-proxy"
    );
    let annotations = &seen[0].1["metadata"]["annotations"];
    assert_eq!(annotations[APPLIED_ANNOTATION], r#"{"shop/web":0}"#);
    assert_eq!(seen[0].1["spec"]["holderIdentity"], "r1");

    // The renewal after 5 s fails (500): counted, and retried at the next tick.
    tokio::time::advance(Duration::from_millis(4_900)).await;
    settle().await;
    assert_eq!(script.seen().len(), 1);
    tokio::time::advance(Duration::from_millis(100)).await;
    settle().await;
    assert_eq!(script.seen().len(), 2);

    // A new generation is reported at once, not at the next tick.
    tokio::time::advance(Duration::from_secs(1)).await;
    applied_tx.send_replace(BTreeMap::from([("shop/web".to_owned(), 7)]).into());
    settle().await;
    let seen = script.seen();
    assert_eq!(seen.len(), 3);
    let annotations = &seen[2].1["metadata"]["annotations"];
    assert_eq!(annotations[APPLIED_ANNOTATION], r#"{"shop/web":7}"#);
    assert!(
        annotations.get(REFUSED_ANNOTATION).is_none(),
        "{annotations}"
    );

    // So is a refused TrafficShift, with its reason (trial 10, K9).
    applied_tx.send_replace(Reported {
        applied: BTreeMap::from([("shop/web".to_owned(), 7)]),
        applied_uid: BTreeMap::new(),
        refused: BTreeMap::from([(
            "shop/api".to_owned(),
            "spec.route.pathPrefix: bad".to_owned(),
        )]),
    });
    settle().await;
    let seen = script.seen();
    assert_eq!(seen.len(), 4);
    let annotations = &seen[3].1["metadata"]["annotations"];
    assert_eq!(
        annotations[REFUSED_ANNOTATION],
        r#"{"shop/api":"spec.route.pathPrefix: bad"}"#
    );

    stop_tx.send_replace(true);
    settle().await;
    assert!(keeper.is_finished());
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains("kube_lease_renewals_total{result=\"ok\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("kube_lease_renewals_total{result=\"error\"} 1"),
        "{text}"
    );
}

/// A keeper on a mock API (`crate::kube::mock`), synced from the start.
fn keeper_on_mock() -> (
    crate::kube::mock::ApiServer,
    watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
    Registry,
) {
    let (client, server) = crate::kube::mock::client();
    let leases: Api<Lease> = Api::namespaced(client, "ns");
    let (_applied_tx, applied) =
        watch::channel(Reported::from(BTreeMap::from([("shop/web".to_owned(), 3)])));
    let (_synced_tx, synced) = watch::channel(true);
    let (stop_tx, stop) = watch::channel(false);
    let lease = ProxyLease {
        replica: "r1".into(),
        admin_url: "http://10.0.0.5:9901".into(),
        applied: BTreeMap::new(),
        applied_uid: BTreeMap::new(),
        refused: BTreeMap::new(),
        renew_time: None,
        lease_duration_seconds: LEASE_DURATION_SECONDS,
    };
    let mut registry = Registry::default();
    let metrics = KubeSourceMetrics::register(&mut registry);
    let keeper = tokio::spawn(async move {
        // The senders live as long as the keeper (a dropped `applied` sender ends it).
        let _keep = (_applied_tx, _synced_tx);
        keep_lease(leases, "ns".into(), lease, applied, synced, stop, metrics).await;
    });
    (server, stop_tx, keeper, registry)
}

type Registry = prometheus_client::registry::Registry;

const LEASE_PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/ns/leases/crossfade-proxy-r1";

#[tokio::test(start_paused = true)]
async fn a_renewal_that_never_answers_is_given_up_after_5s_and_stop_is_not_held_up_by_it() {
    let (mut server, stop_tx, keeper, registry) = keeper_on_mock();
    let first = server.expect("PATCH", LEASE_PATH).await;
    assert_eq!(
        first.content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    let t0 = first.at;
    server.hold(first);
    // Given up at 5 s (a failed renewal), the next one 5 s later.
    let second = server.expect("PATCH", LEASE_PATH).await;
    assert_eq!(second.at - t0, Duration::from_secs(10));
    server.hold(second);
    tokio::time::advance(Duration::from_secs(1)).await;
    stop_tx.send_replace(true);
    tokio::time::timeout(Duration::from_secs(60), keeper)
        .await
        .expect("the keeper returns although the write never answers")
        .unwrap();
    assert_eq!(tokio::time::Instant::now() - t0, Duration::from_secs(15));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains("kube_lease_renewals_total{result=\"error\"} 2"),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn stop_deletes_the_lease_and_gives_up_after_5s_when_the_api_never_answers() {
    let (client, mut server) = crate::kube::mock::client();
    let leases: Api<Lease> = Api::namespaced(client, "ns");
    let (stop_lease, _) = watch::channel(false);
    let (_, synced) = watch::channel(true);
    let source = super::super::ProxySource {
        tasks: Vec::new(),
        lease_task: tokio::spawn(async {}),
        stop_lease,
        synced,
        leases,
        lease: "crossfade-proxy-r1".into(),
    };
    let stopping = tokio::spawn(source.stop());
    let delete = server.expect("DELETE", LEASE_PATH).await;
    let asked = delete.at;
    server.hold(delete);
    tokio::time::timeout(Duration::from_secs(60), stopping)
        .await
        .expect("stop returns")
        .unwrap();
    assert_eq!(tokio::time::Instant::now() - asked, Duration::from_secs(5));
}
