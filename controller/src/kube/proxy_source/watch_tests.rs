//! The proxy's watch loop ([`reflect`]) through a `410 Gone` against a mock API
//! (`crate::kube::mock`): kube-runtime's watcher relists, and the loop keeps running, keeps the
//! last known objects during the relist, then holds exactly the relisted ones and wakes the
//! route set's recomputation; the watch's metrics count the 410 and stamp the list and the relist.

use std::time::Duration;

use futures_util::FutureExt;
use kube::ResourceExt;
use serde_json::{json, Value};

use super::*;
use crate::kube::mock::{self, query};

const SLICES: &str = "/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices";

fn slice(name: &str, rv: &str) -> Value {
    json!({ "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": { "name": name, "namespace": "shop", "resourceVersion": rv },
            "addressType": "IPv4", "endpoints": [] })
}

fn list(rv: &str, items: Vec<Value>) -> Value {
    json!({ "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList",
            "metadata": { "resourceVersion": rv }, "items": items })
}

fn names(store: &Store<EndpointSlice>) -> Vec<String> {
    let mut names: Vec<String> = store.state().iter().map(|s| s.name_any()).collect();
    names.sort();
    names
}

/// Whether the apply loop was woken since the last look (takes the wake-up).
fn woken(changed: &Notify) -> bool {
    changed.notified().now_or_never().is_some()
}

/// A consistent list (no `resourceVersion`: the most recent state, from etcd), in pages of 500.
fn list_query() -> std::collections::BTreeMap<String, String> {
    query(&[("limit", "500")])
}

fn watch_query(rv: &str) -> std::collections::BTreeMap<String, String> {
    query(&[
        ("watch", "true"),
        ("timeoutSeconds", "290"),
        ("allowWatchBookmarks", "true"),
        ("resourceVersion", rv),
    ])
}

#[tokio::test(start_paused = true)]
async fn a_410_gone_on_the_watch_relists_and_the_store_holds_exactly_the_relisted_objects() {
    let (client, mut server) = mock::client();
    let api: Api<EndpointSlice> = Api::namespaced(client, "shop");
    let writer = Writer::default();
    let store = writer.as_reader();
    let changed = Arc::new(Notify::new());
    let stream = watcher(api, watcher::Config::default());
    let metrics = KubeSourceMetrics::default().watch("EndpointSlice");
    let task = tokio::spawn(reflect(
        "endpointslices",
        metrics.clone(),
        writer,
        stream,
        changed.clone(),
    ));
    assert_eq!(metrics.read(), (0.0, 0), "nothing listed yet");

    let first = server.expect("GET", SLICES).await;
    assert_eq!(first.query, list_query());
    first.ok(list("10", vec![slice("a", "5"), slice("b", "6")]));
    let watch = server.expect("GET", SLICES).await;
    assert_eq!(watch.query, watch_query("10"));
    assert_eq!(names(&store), ["a", "b"]);
    assert!(woken(&changed));
    let (listed, errors) = metrics.read();
    assert!(listed > 0.0, "the completed list is a sync");
    assert_eq!(errors, 0);

    // An object added, then the watch's history is gone: the server ends the stream with an
    // ERROR event carrying a 410 Status (the API server's "too old resource version").
    let gone = mock::status(410, "Expired", "too old resource version: 10 (15)");
    let events = [
        json!({ "type": "ADDED", "object": slice("c", "11") }),
        json!({ "type": "ERROR", "object": gone }),
    ];
    let body: String = events.iter().map(|e| format!("{e}\n")).collect();
    watch.respond_bytes(200, body.into_bytes());

    // The relist is a fresh consistent list, never a watch from the expired version; meanwhile
    // the store still holds what it knew, so the proxy keeps routing on it.
    let relist = server.expect("GET", SLICES).await;
    assert_eq!(relist.query, list_query());
    assert_eq!(names(&store), ["a", "b", "c"]);
    assert!(woken(&changed), "the added slice woke the apply loop");
    assert!(!task.is_finished(), "a watch error does not end the loop");
    let (added, errors) = metrics.read();
    assert!(added >= listed, "the added slice is a sync");
    assert_eq!(errors, 1, "the 410 is a watch error");

    // "b" was deleted while no watch ran: only the relist can tell, and it is gone after it.
    relist.ok(list("20", vec![slice("a", "5"), slice("c", "11")]));
    let rewatch = server.expect("GET", SLICES).await;
    assert_eq!(rewatch.query, watch_query("20"));
    assert_eq!(names(&store), ["a", "c"]);
    assert!(woken(&changed), "the relist woke the apply loop");
    let (relisted, errors) = metrics.read();
    assert!(relisted >= added, "the completed relist is a sync");
    assert_eq!(errors, 1);
    server.hold(rewatch);
    server.assert_quiet(Duration::from_secs(60)).await;
    assert!(!task.is_finished());
}
