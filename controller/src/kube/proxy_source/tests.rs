use std::collections::BTreeSet;

use prometheus_client::registry::Registry;
use serde_json::json;

use super::*;
use crossfade_proxy::config::ProxyConfig;
use crossfade_proxy::{ProxyMetrics, Slot};

fn proxy() -> Proxy {
    let metrics = ProxyMetrics::register(&mut Registry::default());
    Proxy::new(&ProxyConfig::default(), metrics).unwrap()
}

fn shift(name: &str, weights: serde_json::Value) -> Arc<DynamicObject> {
    Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "crossfade.dev/v1alpha1", "kind": "TrafficShift",
            "metadata": { "name": name, "namespace": "shop" },
            "spec": { "deployment": name, "images": { "app": "v2" } },
            "status": { "weights": weights }
        }))
        .unwrap(),
    )
}

fn slice(service: &str, ip: &str) -> Arc<EndpointSlice> {
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {
                "name": format!("{service}-x"), "namespace": "shop",
                "labels": { SERVICE_NAME_LABEL: service }
            },
            "addressType": "IPv4",
            "endpoints": [{ "addresses": [ip] }],
            "ports": [{ "port": 80 }]
        }))
        .unwrap(),
    )
}

fn weights(active: u32, preview: u32, generation: u64) -> serde_json::Value {
    json!({ "active": active, "preview": preview, "generation": generation })
}

#[test]
fn every_trafficshift_becomes_a_route_in_one_table_generation() {
    let proxy = proxy();
    let mut applier = Applier::default();
    let shifts = [shift("web", weights(90, 10, 4)), shift("api", json!(null))];
    let slices = [
        slice("web-blue", "10.0.0.1"),
        slice("web-green", "10.0.0.2"),
        slice("api-blue", "10.0.0.3"),
        slice("unrelated", "10.0.0.9"),
    ];
    applier.apply(&proxy, None, &shifts, &slices);
    assert_eq!(proxy.generation(), 2);
    let names: Vec<String> = proxy.routes().into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["shop/api", "shop/web"]);
    assert_eq!(
        applier.applied(),
        BTreeMap::from([("shop/api".to_owned(), 0), ("shop/web".to_owned(), 4)])
    );
    let web = &proxy.routes()[1];
    assert_eq!(web.weights().of(Slot::Green), 1_000);
}

#[test]
fn a_new_generation_with_the_same_split_is_acknowledged_without_a_table_swap() {
    let proxy = proxy();
    let mut applier = Applier::default();
    let slices = [
        slice("web-blue", "10.0.0.1"),
        slice("web-green", "10.0.0.2"),
    ];
    applier.apply(&proxy, None, &[shift("web", weights(90, 10, 4))], &slices);
    applier.apply(&proxy, None, &[shift("web", weights(90, 10, 5))], &slices);
    assert_eq!(proxy.generation(), 2);
    assert_eq!(
        applier.applied(),
        BTreeMap::from([("shop/web".to_owned(), 5)])
    );
}

/// The Lease says which TrafficShift each generation is of (`crossfade.dev/applied-uid`): one
/// deleted and created again counts its generations from 1 again. A recreated object whose route
/// cannot be served yet leaves the earlier object's route, and its uid, in the table.
#[test]
fn the_applied_generation_is_reported_with_the_uid_of_its_trafficshift() {
    let proxy = proxy();
    let mut applier = Applier::default();
    let slices = [
        slice("web-blue", "10.0.0.1"),
        slice("web-green", "10.0.0.2"),
    ];
    let of = |uid: &str, weights: serde_json::Value| {
        let mut object = (*shift("web", weights)).clone();
        object.metadata.uid = Some(uid.to_owned());
        Arc::new(object)
    };
    let uid = |applier: &Applier| applier.applied_uid()["shop/web"].clone();
    applier.apply(&proxy, None, &[of("old", weights(90, 10, 7))], &slices);
    assert_eq!(
        (applier.applied()["shop/web"], uid(&applier)),
        (7, "old".into())
    );
    // Created again with the same split: no table swap, but the new object's generation.
    applier.apply(&proxy, None, &[of("new", weights(90, 10, 1))], &slices);
    assert_eq!(
        (applier.applied()["shop/web"], uid(&applier)),
        (1, "new".into())
    );
    // Created again with a route the proxy refuses: the earlier route stays, said as such.
    let mut bad = (*of("newer", weights(50, 50, 1))).clone();
    bad.data["spec"]["route"] = json!({ "pathPrefix": "no-slash" });
    applier.apply(&proxy, None, &[Arc::new(bad)], &slices);
    assert!(
        applier.errors.contains_key("shop/web"),
        "{:?}",
        applier.errors
    );
    assert_eq!(
        (applier.applied()["shop/web"], uid(&applier)),
        (1, "new".into())
    );
}

#[test]
fn a_bad_trafficshift_keeps_its_route_and_does_not_hold_back_the_others() {
    let proxy = proxy();
    let mut registry = Registry::with_prefix("crossfade");
    let mut applier = Applier {
        metrics: KubeSourceMetrics::register(&mut registry),
        ..Applier::default()
    };
    let text = |registry: &Registry| {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
        out
    };
    let slices = [
        slice("web-blue", "10.0.0.1"),
        slice("web-green", "10.0.0.2"),
        slice("api-blue", "10.0.0.3"),
    ];
    applier.apply(&proxy, None, &[shift("web", weights(90, 10, 1))], &slices);
    // web's status turns malformed while api appears: api is served, web stays at generation 1.
    let bad = shift(
        "web",
        json!({ "active": "ninety", "preview": 10, "generation": 2 }),
    );
    applier.apply(&proxy, None, &[bad, shift("api", json!(null))], &slices);
    assert_eq!(
        applier.applied(),
        BTreeMap::from([("shop/api".to_owned(), 0), ("shop/web".to_owned(), 1)])
    );
    assert_eq!(proxy.routes()[1].weights().of(Slot::Green), 1_000);
    assert!(applier.errors["shop/web"].starts_with("status.weights: "));
    let exported = text(&registry);
    assert!(
        exported.contains("crossfade_kube_trafficshift_refused{route=\"shop/web\"} 1"),
        "{exported}"
    );
    assert!(
        exported.contains("crossfade_kube_trafficshift_refused{route=\"shop/api\"} 0"),
        "{exported}"
    );
    assert!(
        exported.contains("crossfade_kube_applied_generation{route=\"shop/web\"} 1"),
        "{exported}"
    );
    // Deleted: the route goes with it.
    applier.apply(&proxy, None, &[shift("api", json!(null))], &slices);
    assert_eq!(
        applier.applied(),
        BTreeMap::from([("shop/api".to_owned(), 0)])
    );
    assert_eq!(proxy.routes().len(), 1);
    let exported = text(&registry);
    assert!(!exported.contains("shop/web"), "{exported}");
}

#[test]
fn a_sidecar_serves_only_its_trafficshift() {
    let proxy = proxy();
    let mut applier = Applier::default();
    let slices = [slice("web-blue", "10.0.0.1"), slice("api-blue", "10.0.0.3")];
    let only = ("shop".to_owned(), "web".to_owned());
    let shifts = [shift("web", json!(null)), shift("api", json!(null))];
    applier.apply(&proxy, Some(&only), &shifts, &slices);
    assert_eq!(
        applier.applied(),
        BTreeMap::from([("shop/web".to_owned(), 0)])
    );
    assert!(proxy.routes()[0].hosts.is_empty());
}

#[test]
fn the_admin_url_prefers_the_pod_ip_then_a_specific_bind_address() {
    let any: SocketAddr = "0.0.0.0:9901".parse().unwrap();
    let local: SocketAddr = "127.0.0.1:9902".parse().unwrap();
    assert_eq!(
        admin_url(any, Some("10.0.0.5"), "h"),
        "http://10.0.0.5:9901"
    );
    assert_eq!(
        admin_url(any, Some("fd00::5"), "h"),
        "http://[fd00::5]:9901"
    );
    assert_eq!(admin_url(local, None, "h"), "http://127.0.0.1:9902");
    assert_eq!(
        admin_url(any, Some("garbage"), "proxy-0"),
        "http://proxy-0:9901"
    );
}

/// TrafficShift `namespace/name` with its default hosts and no weights yet.
fn shift_in(namespace: &str, name: &str) -> Arc<DynamicObject> {
    Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "crossfade.dev/v1alpha1", "kind": "TrafficShift",
            "metadata": { "name": name, "namespace": namespace },
            "spec": { "deployment": name, "images": { "app": "v2" } }
        }))
        .unwrap(),
    )
}

/// An EndpointSlice of Service `web-blue` in `namespace` with one endpoint.
fn blue_slice_in(namespace: &str) -> Arc<EndpointSlice> {
    let mut slice = (*slice("web-blue", "10.0.0.1")).clone();
    slice.metadata.namespace = Some(namespace.to_owned());
    Arc::new(slice)
}

#[test]
fn a_host_another_trafficshift_shadows_is_warned_about_once_naming_both() {
    // As `crossfade proxy` warns for a file's routes (trial report 6, F9): `web` in namespaces
    // default and shop share the short host "web" on "/", and the table takes default/web first.
    let proxy = proxy();
    let mut applier = Applier::default();
    let shifts = [shift_in("shop", "web"), shift_in("default", "web")];
    let slices = [blue_slice_in("shop"), blue_slice_in("default")];
    applier.apply(&proxy, None, &shifts, &slices);
    assert_eq!(proxy.routes().len(), 2);
    let warning = "host \"web\" never reaches trafficshift shop/web: trafficshift default/web \
                   comes first (routes from the cluster are in namespace/name order) with the \
                   same path prefix \"/\" and host \"web\"";
    assert_eq!(applier.shadowed, BTreeSet::from([warning.to_owned()]));
    assert_eq!(
        applier.newly_shadowed(&proxy.routes()),
        Vec::<String>::new(),
        "logged once"
    );
    applier.apply(&proxy, None, &shifts[..1], &slices);
    assert!(applier.shadowed.is_empty(), "{:?}", applier.shadowed);
    assert_eq!(
        applier.newly_shadowed(&proxy.routes()),
        Vec::<String>::new()
    );
    applier.apply(&proxy, None, &shifts, &slices);
    assert_eq!(applier.shadowed, BTreeSet::from([warning.to_owned()]));
}

#[test]
fn a_route_filter_whose_trafficshift_is_missing_is_warned_about_once_and_its_arrival_once() {
    // Trial 10, K8: `--route shop/nosuch` answered 404 with no log line.
    use super::apply::OnlyRoute;
    let proxy = proxy();
    let mut applier = Applier::default();
    let only = ("shop".to_owned(), "web".to_owned());
    let other = [shift("api", json!(null))];
    let missing = applier.only_change(Some(&only), &other);
    assert!(
        matches!(&missing, Some(OnlyRoute::Missing(m)) if m.starts_with("trafficshift shop/web (--route) not found: every request is answered 404")),
        "{missing:?}"
    );
    assert_eq!(applier.only_change(Some(&only), &other), None, "once");
    applier.apply(&proxy, Some(&only), &other, &[]);
    assert_eq!(applier.only_missing, Some(true));
    let web = [shift("web", json!(null))];
    assert_eq!(
        applier.only_change(Some(&only), &web),
        Some(OnlyRoute::Appeared(
            "trafficshift shop/web (--route) found".to_owned()
        ))
    );
    assert_eq!(applier.only_change(Some(&only), &web), None);
    // Deleted again: warned again.
    assert!(matches!(
        applier.only_change(Some(&only), &[]),
        Some(OnlyRoute::Missing(_))
    ));
    // Without --route there is nothing to say.
    assert_eq!(Applier::default().only_change(None, &[]), None);
}

#[test]
fn a_route_filter_whose_trafficshift_comes_before_its_endpoints_waits_and_never_says_served() {
    // Trial 11, L14: "blue has weight 100% but no endpoints; route not served" (ERROR) then
    // "found: its route is served" 0.1 ms later, for the normal first seconds of a rollout.
    use super::apply::Said;
    let proxy = proxy();
    let mut applier = Applier::default();
    let only = ("shop".to_owned(), "web".to_owned());
    let said = applier.apply(&proxy, Some(&only), &[], &[]);
    assert!(
        matches!(&said[..], [(None, Said::Warn(m))] if m.contains("(--route) not found")),
        "{said:?}"
    );
    let web = [shift("web", json!(null))];
    let said = applier.apply(&proxy, Some(&only), &web, &[]);
    let key = Some("shop/web".to_owned());
    assert_eq!(
        said,
        [
            (
                None,
                Said::Info("trafficshift shop/web (--route) found".to_owned())
            ),
            (
                key.clone(),
                Said::Warn(
                    "trafficshift shop/web: waiting for endpoints: blue (ready endpoints of \
                     Service web-blue): blue has weight 100% but no endpoints; route not served \
                     until they are ready"
                        .to_owned()
                )
            ),
        ]
    );
    assert!(proxy.routes().is_empty(), "not served, as said");
    assert!(
        applier.apply(&proxy, Some(&only), &web, &[]).is_empty(),
        "said once"
    );
    let slices = [slice("web-blue", "10.0.0.1")];
    let said = applier.apply(&proxy, Some(&only), &web, &slices);
    assert_eq!(
        said,
        [(
            key,
            Said::Info("trafficshift shop/web: endpoints ready, route served".to_owned())
        )]
    );
    assert_eq!(proxy.routes().len(), 1);
    // A TrafficShift that comes with its endpoints: one line, served.
    let proxy = self::proxy();
    let mut applier = Applier::default();
    applier.apply(&proxy, Some(&only), &[], &[]);
    assert_eq!(
        applier.apply(&proxy, Some(&only), &web, &slices),
        [(
            None,
            Said::Info("trafficshift shop/web (--route) found: its route is served".to_owned())
        )]
    );
}

#[test]
fn broken_input_is_an_error_and_missing_endpoints_a_wait() {
    use super::apply::{refusal, Said};
    use super::translate::Unserved;
    let invalid = Unserved::Invalid("status.weights: bad".to_owned());
    let waiting =
        Unserved::NoEndpoints("blue (ready endpoints of Service web-blue): none".to_owned());
    assert!(
        matches!(refusal("shop/web", &invalid, false), Said::Error(m) if m.ends_with("route not served until this is fixed"))
    );
    assert!(
        matches!(refusal("shop/web", &invalid, true), Said::Error(m) if m.ends_with("route left as it was"))
    );
    assert!(
        matches!(refusal("shop/web", &waiting, false), Said::Warn(m) if m.starts_with("trafficshift shop/web: waiting for endpoints: blue"))
    );
    assert!(
        matches!(refusal("shop/web", &waiting, true), Said::Warn(m) if m.ends_with("route left as it was until they are ready"))
    );
    // Weights that do not sum to 100% are broken input, whatever the endpoints; weight on a
    // backend without them alone is a wait.
    let blue = slice("web-blue", "10.0.0.1");
    let shift = shift("web", weights(80, 30, 2));
    let view = super::translate::ShiftView::parse(&shift).unwrap();
    let result = super::translate::translate_route(&view, &[&blue], &[], true);
    assert!(matches!(result, Err(Unserved::Invalid(_))), "{result:?}");
    let shift = self::shift("web", weights(50, 50, 3));
    let view = super::translate::ShiftView::parse(&shift).unwrap();
    let result = super::translate::translate_route(&view, &[&blue], &[], true);
    assert!(
        matches!(result, Err(Unserved::NoEndpoints(_))),
        "{result:?}"
    );
}

/// An EndpointSlice of `service` whose one endpoint is not ready (its pod unready or going).
fn unready_slice(service: &str, ip: &str) -> Arc<EndpointSlice> {
    let mut slice = (*slice(service, ip)).clone();
    slice.endpoints[0].conditions = Some(k8s_openapi::api::discovery::v1::EndpointConditions {
        ready: Some(false),
        serving: Some(false),
        terminating: Some(true),
    });
    Arc::new(slice)
}

#[test]
fn a_backend_whose_pods_all_go_gets_no_request_and_the_other_takes_them_all() {
    // Kube28: green (or blue) lost every ready pod mid-rollout; the route was "left as it was",
    // still listing the gone pods with their weight, until the progress deadline.
    use super::apply::Said;
    let proxy = proxy();
    let mut applier = Applier::default();
    let (blue, green) = (
        slice("web-blue", "10.0.0.1"),
        slice("web-green", "10.0.0.2"),
    );
    let at = |active, preview, generation| [shift("web", weights(active, preview, generation))];
    let split = |proxy: &Proxy| {
        let w = proxy.routes()[0].weights();
        (w.of(Slot::Blue), w.of(Slot::Green))
    };
    applier.apply(&proxy, None, &at(50, 50, 3), &[blue.clone(), green.clone()]);
    assert_eq!(split(&proxy), (5_000, 5_000));

    // Green's pods all unready, then its slice empty (scaled to 0): everything to blue, the
    // Lease reports generation 0 for the route (no published split is served; kubetry28: it
    // reported 3), the refusal says where the requests go.
    for lost in [unready_slice("web-green", "10.0.0.2"), {
        let mut empty = (*green).clone();
        empty.endpoints.clear();
        Arc::new(empty)
    }] {
        let said = applier.apply(&proxy, None, &at(50, 50, 3), &[blue.clone(), lost]);
        assert_eq!(split(&proxy), (10_000, 0));
        assert_eq!(proxy.routes()[0].green.endpoints, []);
        assert_eq!(
            applier.applied(),
            BTreeMap::from([("shop/web".to_owned(), 0)])
        );
        assert!(
            applier.errors["shop/web"].ends_with(
                "green has weight 50% but no endpoints (all requests sent to blue, the backend \
                 with ready endpoints, meanwhile)"
            ),
            "{:?}",
            applier.errors
        );
        if let Some((_, line)) = said.first() {
            assert!(
                matches!(line, Said::Warn(m) if m.contains("all requests sent to blue")),
                "{said:?}"
            );
        }
    }
    // A new publication while green is still gone (the controller's next step): not applied,
    // everything still to blue.
    let lost = unready_slice("web-green", "10.0.0.2");
    applier.apply(&proxy, None, &at(25, 75, 4), &[blue.clone(), lost.clone()]);
    assert_eq!(split(&proxy), (10_000, 0));
    assert_eq!(applier.applied()["shop/web"], 0);
    // The abort's weights (all to blue) apply as published.
    applier.apply(&proxy, None, &at(100, 0, 5), &[blue.clone(), lost]);
    assert_eq!(split(&proxy), (10_000, 0));
    assert_eq!(applier.applied()["shop/web"], 5);
    assert!(applier.errors.is_empty());

    // Blue lost with green healthy: green takes them all, nothing goes to the gone pods.
    let lost_blue = unready_slice("web-blue", "10.0.0.1");
    applier.apply(&proxy, None, &at(50, 50, 6), &[blue.clone(), green.clone()]);
    applier.apply(&proxy, None, &at(50, 50, 6), &[lost_blue, green.clone()]);
    assert_eq!(split(&proxy), (0, 10_000));
    assert_eq!(proxy.routes()[0].blue.endpoints, []);
    // Both back: the published split again.
    let said = applier.apply(&proxy, None, &at(50, 50, 6), &[blue, green]);
    assert_eq!(split(&proxy), (5_000, 5_000));
    assert_eq!(applier.applied()["shop/web"], 6);
    assert_eq!(
        said,
        [(
            Some("shop/web".to_owned()),
            Said::Info("trafficshift shop/web: endpoints ready, route served".to_owned())
        )]
    );

    // Neither backend has a ready endpoint: nothing better to do than keep the route.
    let none = [
        unready_slice("web-blue", "10.0.0.1"),
        unready_slice("web-green", "10.0.0.2"),
    ];
    applier.apply(&proxy, None, &at(50, 50, 7), &none);
    assert_eq!(split(&proxy), (5_000, 5_000));
}

/// Kubetry28: a publication this replica applied just before green lost its pods, while another
/// replica had not applied it yet, was acknowledged once that other replica did: the Lease still
/// reported its generation for the route while every request went to blue. The controller then
/// started the step's windows on weights no proxy served. Now the replica reports 0 while it
/// falls back, and the publication is behind, naming why.
#[test]
fn a_replica_that_falls_back_does_not_acknowledge_the_split_it_no_longer_serves() {
    use crate::kube::proxies::{acks, Ack, Replica};
    let proxy = proxy();
    let mut applier = Applier::default();
    let (blue, green) = (
        slice("web-blue", "10.0.0.1"),
        slice("web-green", "10.0.0.2"),
    );
    let at = |active, preview, generation| [shift("web", weights(active, preview, generation))];
    applier.apply(&proxy, None, &at(50, 50, 3), &[blue.clone(), green.clone()]);
    // Generation 4 (75%) applied here; then green's pods all go unready.
    applier.apply(&proxy, None, &at(25, 75, 4), &[blue.clone(), green.clone()]);
    let lost = unready_slice("web-green", "10.0.0.2");
    applier.apply(&proxy, None, &at(25, 75, 4), &[blue.clone(), lost]);
    let w = proxy.routes()[0].weights();
    assert_eq!((w.of(Slot::Blue), w.of(Slot::Green)), (10_000, 0));
    let this = Replica {
        lease: "crossfade-proxy-leases/crossfade-proxy-a".to_owned(),
        uid: "a".to_owned(),
        applied: applier.applied(),
        applied_uid: BTreeMap::new(),
        admin_url: None,
        refused: applier.errors.clone(),
    };
    // The other replica applied generation 4 later, its green endpoints not gone yet.
    let other = Replica {
        lease: "crossfade-proxy-leases/crossfade-proxy-b".to_owned(),
        uid: "b".to_owned(),
        applied: BTreeMap::from([("shop/web".to_owned(), 4)]),
        applied_uid: BTreeMap::new(),
        admin_url: None,
        refused: BTreeMap::new(),
    };
    let ack = acks(&[this, other], "shop/web", "", 4, 7_500);
    let Ack::Behind { behind } = &ack else {
        panic!("acknowledged while this replica sends every request to blue: {ack:?}");
    };
    assert_eq!(behind.len(), 1, "{ack:?}");
    assert!(
        behind[0].starts_with("crossfade-proxy-leases/crossfade-proxy-a: 0, refusing the latest: ")
            && behind[0].ends_with(
                "(all requests sent to blue, the backend with ready endpoints, meanwhile)"
            ),
        "{ack}"
    );
    // Green back: generation 4 as published, acknowledged.
    applier.apply(&proxy, None, &at(25, 75, 4), &[blue, green]);
    assert_eq!(applier.applied()["shop/web"], 4);
}

/// A TrafficShift's `spec.route.hosts` may hold a wildcard, as a proxy config's may: the route is
/// served with it, and a malformed one is refused naming the field, as any bad host is.
/// TrafficShift `shop/<name>` with `spec.route.hosts` and weights 90/10 at generation 1.
fn shift_with_hosts(name: &str, hosts: serde_json::Value) -> Arc<DynamicObject> {
    Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "crossfade.dev/v1alpha1", "kind": "TrafficShift",
            "metadata": { "name": name, "namespace": "shop" },
            "spec": { "deployment": name, "images": { "app": "v2" }, "route": { "hosts": hosts } },
            "status": { "weights": weights(90, 10, 1) }
        }))
        .unwrap(),
    )
}

#[test]
fn a_trafficshift_with_a_wildcard_host_is_served_and_a_malformed_one_refused() {
    let proxy = proxy();
    let mut applier = Applier::default();
    let slices = [
        slice("web-blue", "10.0.0.1"),
        slice("web-green", "10.0.0.2"),
        slice("api-blue", "10.0.0.3"),
    ];
    let shifts = [
        shift_with_hosts("web", json!(["*.tenants.example"])),
        shift_with_hosts("api", json!(["api.*.example"])),
    ];
    applier.apply(&proxy, None, &shifts, &slices);
    assert_eq!(
        applier.applied(),
        BTreeMap::from([("shop/web".to_owned(), 1)])
    );
    assert_eq!(proxy.routes()[0].hosts, ["*.tenants.example"]);
    assert!(
        applier.errors["shop/api"].contains("a wildcard is `*.` and a host name"),
        "{:?}",
        applier.errors
    );
}

/// A TrafficShift for one name under another's wildcard gets its name whatever the two are
/// called: routes from the cluster come in namespace/name order, which no one picks for this,
/// and the table ranks the exact host above the wildcard at an equal prefix. Before, `shop/api`
/// on `*.tenants.example` sorted first and took `acme.tenants.example` from `shop/web`, with a
/// warning that the operator could only answer by renaming an object.
#[test]
fn a_trafficshift_for_a_name_under_an_earlier_wildcard_is_not_shadowed() {
    let proxy = proxy();
    let mut applier = Applier::default();
    let slices = [
        slice("web-blue", "10.0.0.1"),
        slice("web-green", "10.0.0.2"),
        slice("api-blue", "10.0.0.3"),
        slice("api-green", "10.0.0.4"),
    ];
    let shifts = [
        shift_with_hosts("api", json!(["*.tenants.example"])),
        shift_with_hosts("web", json!(["acme.tenants.example"])),
    ];
    applier.apply(&proxy, None, &shifts, &slices);
    assert_eq!(
        applier.applied(),
        BTreeMap::from([("shop/api".to_owned(), 1), ("shop/web".to_owned(), 1)])
    );
    assert!(applier.shadowed.is_empty(), "{:?}", applier.shadowed);
}

/// Two TrafficShifts listing the same hosts, in the same case, on the same path prefix: the table
/// serves both and the later one in namespace/name order is never chosen. A file refuses such a
/// pair as a duplicate match, so the shadowing rule skipped it, and the proxy said nothing here,
/// while the same hosts spelled another way (`SHOP.example.`) were warned about (check31).
#[test]
fn a_trafficshift_listing_the_same_hosts_as_an_earlier_one_is_warned_about() {
    let proxy = proxy();
    let mut applier = Applier::default();
    let slices = [
        slice("web-blue", "10.0.0.1"),
        slice("web-green", "10.0.0.2"),
        slice("api-blue", "10.0.0.3"),
        slice("api-green", "10.0.0.4"),
    ];
    let shifts = [
        shift_with_hosts("api", json!(["shop.example", "www.shop.example"])),
        shift_with_hosts("web", json!(["www.shop.example", "shop.example"])),
    ];
    applier.apply(&proxy, None, &shifts, &slices);
    assert_eq!(
        applier.applied(),
        BTreeMap::from([("shop/api".to_owned(), 1), ("shop/web".to_owned(), 1)])
    );
    let warning = "trafficshift shop/web is never chosen: trafficshift shop/api comes first \
                   (routes from the cluster are in namespace/name order) with the same path \
                   prefix \"/\" and lists every host it names; give it its own spec.route.hosts \
                   or a longer spec.route.pathPrefix";
    assert_eq!(applier.shadowed, BTreeSet::from([warning.to_owned()]));
}

/// A TrafficShift whose hosts two earlier ones take between them: a warning per host and one
/// saying it is never chosen, naming both (it got only the per-host ones).
#[test]
fn a_trafficshift_whose_hosts_earlier_ones_take_between_them_is_never_chosen() {
    let proxy = proxy();
    let mut applier = Applier::default();
    let slices = [
        slice("web-blue", "10.0.0.1"),
        slice("web-green", "10.0.0.2"),
        slice("api-blue", "10.0.0.3"),
        slice("api-green", "10.0.0.4"),
        slice("cart-blue", "10.0.0.5"),
        slice("cart-green", "10.0.0.6"),
    ];
    let shifts = [
        shift_with_hosts("api", json!(["api.shop.example"])),
        shift_with_hosts("cart", json!(["cart.shop.example"])),
        shift_with_hosts("web", json!(["cart.shop.example", "api.shop.example"])),
    ];
    applier.apply(&proxy, None, &shifts, &slices);
    let never = "trafficshift shop/web is never chosen: trafficshifts shop/api, shop/cart come \
                 first (routes from the cluster are in namespace/name order) with the same path \
                 prefix \"/\" and together list every host it names; give it its own \
                 spec.route.hosts or a longer spec.route.pathPrefix";
    assert!(applier.shadowed.contains(never), "{:?}", applier.shadowed);
    assert_eq!(applier.shadowed.len(), 3, "{:?}", applier.shadowed);
}
