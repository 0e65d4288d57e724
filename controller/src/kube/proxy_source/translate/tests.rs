use serde_json::json;

use super::*;

fn view(weights: serde_json::Value, route: serde_json::Value) -> ShiftView {
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "crossfade.dev/v1alpha1", "kind": "TrafficShift",
        "metadata": { "name": "web", "namespace": "shop" },
        "spec": { "deployment": "web", "images": { "app": "web:v2" }, "route": route },
        "status": { "weights": weights }
    }))
    .unwrap();
    ShiftView::parse(&object).unwrap()
}

/// A slice with `endpoints` as (address, ready, terminating) and `ports` as (name, port).
fn slice(
    name: &str,
    endpoints: &[(&str, Option<bool>, Option<bool>)],
    ports: &[(&str, i32)],
) -> EndpointSlice {
    let endpoints: Vec<_> = endpoints
        .iter()
        .map(|(a, ready, terminating)| {
            json!({ "addresses": [a], "conditions": { "ready": ready, "terminating": terminating } })
        })
        .collect();
    let ports: Vec<_> = ports
        .iter()
        .map(|(n, p)| json!({ "name": n, "port": p }))
        .collect();
    serde_json::from_value(json!({
        "metadata": { "name": name },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": ports
    }))
    .unwrap()
}

fn addrs(list: &[&str]) -> Vec<SocketAddr> {
    list.iter().map(|a| a.parse().unwrap()).collect()
}

#[test]
fn without_status_weights_everything_goes_to_blue_on_the_in_cluster_names() {
    let blue = slice(
        "web-blue-a",
        &[("10.0.0.2", Some(true), None)],
        &[("http", 8080)],
    );
    let t = translate(&view(json!(null), json!(null)), &[&blue], &[], false).unwrap();
    assert_eq!(t.generation, 0);
    assert_eq!(t.config.name, "shop/web");
    assert_eq!(
        t.config.hosts,
        [
            "web",
            "web.shop",
            "web.shop.svc",
            "web.shop.svc.cluster.local"
        ]
    );
    assert_eq!(t.config.path_prefix, "/");
    assert_eq!(
        t.config.weights(),
        Weights {
            blue: 10_000,
            green: 0
        }
    );
    assert_eq!(t.config.blue.endpoints, addrs(&["10.0.0.2:8080"]));
    assert!(t.config.green.endpoints.is_empty());
}

#[test]
fn status_weights_give_active_to_blue_and_preview_to_green_with_their_generation() {
    let blue = slice("web-blue-a", &[("10.0.0.2", None, None)], &[("http", 80)]);
    let green = slice("web-green-a", &[("10.0.0.3", None, None)], &[("http", 80)]);
    let weights = json!({ "active": "87.5%", "preview": "12.5%", "generation": 7 });
    let t = translate(&view(weights, json!(null)), &[&blue], &[&green], false).unwrap();
    assert_eq!(t.generation, 7);
    assert_eq!(
        t.config.weights(),
        Weights {
            blue: 8_750,
            green: 1_250
        }
    );
    assert_eq!(t.config.green.endpoints, addrs(&["10.0.0.3:80"]));
}

#[test]
fn the_shadow_steps_mirror_settings_turn_mirroring_to_green_on_and_their_absence_off() {
    let blue = slice("web-blue-a", &[("10.0.0.2", None, None)], &[("http", 80)]);
    let green = slice("web-green-a", &[("10.0.0.3", None, None)], &[("http", 80)]);
    let mirror = json!({ "percent": "50%", "compareHeaders": ["etag"], "timeout": "2s",
        "ignore": { "bodyPaths": ["/now"] } });
    let weights = json!({ "active": "100%", "preview": "0%", "generation": 3, "shadow": mirror });
    let t = translate(&view(weights, json!(null)), &[&blue], &[&green], false).unwrap();
    assert_eq!(t.generation, 3);
    assert_eq!(t.config.weights(), Weights::all_to(Slot::Blue));
    let shadow = t.config.shadow.expect("mirroring on");
    assert_eq!(shadow.percent.bp(), 5000);
    assert_eq!(shadow.compare_headers, ["etag"]);
    assert_eq!(shadow.timeout, std::time::Duration::from_secs(2));
    assert_eq!(shadow.ignore.body_paths, ["/now"]);
    // Omitted fields take the proxy's defaults.
    let defaults = crossfade_proxy::config::ShadowConfig::default();
    assert_eq!(shadow.methods, defaults.methods);
    // The next publication has none: mirroring off.
    let weights = json!({ "active": "90%", "preview": "10%", "generation": 4 });
    let t = translate(&view(weights, json!(null)), &[&blue], &[&green], false).unwrap();
    assert_eq!(t.config.shadow, None);
    // Bad settings are refused by the status field, the route not served as they say.
    let weights = json!({ "active": "100%", "preview": "0%", "generation": 5,
        "shadow": { "maxInFlight": 0, "methods": ["get"] } });
    let e = translate(&view(weights, json!(null)), &[&blue], &[&green], false).unwrap_err();
    assert!(
        e.contains("status.weights.shadow.maxInFlight: 0 is outside 1 to 10000"),
        "{e}"
    );
    assert!(e.contains("status.weights.shadow.methods[0]:"), "{e}");
}

#[test]
fn only_ready_endpoints_that_are_not_terminating_serve_sorted_and_once() {
    let a = slice(
        "web-blue-a",
        &[
            ("10.0.0.9", Some(true), Some(false)),
            ("10.0.0.4", None, None),
            ("10.0.0.5", Some(false), None),
            ("10.0.0.6", Some(true), Some(true)),
        ],
        &[("http", 80)],
    );
    let b = slice(
        "web-blue-b",
        &[("10.0.0.4", Some(true), None)],
        &[("http", 80)],
    );
    let t = translate(&view(json!(null), json!(null)), &[&a, &b], &[], false).unwrap();
    assert_eq!(
        t.config.blue.endpoints,
        addrs(&["10.0.0.4:80", "10.0.0.9:80"])
    );
}

#[test]
fn the_port_is_found_by_name_or_number_else_the_first_one() {
    let blue = slice(
        "web-blue-a",
        &[("10.0.0.2", None, None)],
        &[("metrics", 9090), ("http", 8080)],
    );
    let by = |port: serde_json::Value| {
        let t = translate(
            &view(json!(null), json!({ "port": port })),
            &[&blue],
            &[],
            false,
        );
        t.map(|t| t.config.blue.endpoints)
    };
    assert_eq!(by(json!("http")), Ok(addrs(&["10.0.0.2:8080"])));
    assert_eq!(by(json!(8080)), Ok(addrs(&["10.0.0.2:8080"])));
    assert_eq!(by(json!(null)), Ok(addrs(&["10.0.0.2:9090"])));
    assert_eq!(
        by(json!("grpc")),
        Err("EndpointSlice web-blue-a: spec.route.port: no port \"grpc\" (ports: metrics=9090, http=8080)".to_owned())
    );
    assert_eq!(
        by(json!(7000)),
        Err("EndpointSlice web-blue-a: spec.route.port: no port 7000 (ports: metrics=9090, http=8080)".to_owned())
    );
}

#[test]
fn a_slice_without_ports_names_the_container_port_as_the_fix() {
    // Trial 10, K10: "set spec.route.port or give the Service a port" fixed nothing.
    let blue = slice("noport-blue-1", &[("10.0.0.2", None, None)], &[]);
    let advice = "EndpointSlice noport-blue-1: lists no port: the Deployment's pod template \
                  declares no container port; add ports[].containerPort to the container that \
                  serves (crossfade makes the Services' ports from them)";
    for route in [
        json!(null),
        json!({ "port": 26311 }),
        json!({ "port": "http" }),
    ] {
        let t = translate(&view(json!(null), route.clone()), &[&blue], &[], false);
        assert_eq!(
            t.map(|t| t.config.blue.endpoints),
            Err(advice.to_owned()),
            "{route}"
        );
    }
}

#[test]
fn a_slice_without_ready_endpoints_is_not_asked_for_its_port() {
    let empty = slice("web-green-a", &[("10.0.0.3", Some(false), None)], &[]);
    let blue = slice("web-blue-a", &[("10.0.0.2", None, None)], &[("http", 80)]);
    let t = translate(
        &view(json!(null), json!({ "port": "http" })),
        &[&blue],
        &[&empty],
        false,
    );
    assert!(t.is_ok(), "{t:?}");
}

#[test]
fn weights_that_do_not_sum_to_100_or_weight_without_endpoints_are_refused_naming_the_field() {
    let blue = slice("web-blue-a", &[("10.0.0.2", None, None)], &[("http", 80)]);
    let over = json!({ "active": "80%", "preview": 30, "generation": 2 });
    assert_eq!(
        translate(&view(over, json!(null)), &[&blue], &[], false),
        Err("status.weights: active 80% + preview 30% = 110%, must sum to 100%".to_owned())
    );
    let green_without = json!({ "active": 50, "preview": 50, "generation": 3 });
    assert_eq!(
        translate(&view(green_without, json!(null)), &[&blue], &[], false),
        Err(
            "green (ready endpoints of Service web-green): green has weight 50% but no endpoints"
                .to_owned()
        )
    );
}

#[test]
fn fqdn_slices_and_addresses_that_are_not_ips_are_refused() {
    let mut fqdn = slice(
        "web-blue-a",
        &[("web.example", None, None)],
        &[("http", 80)],
    );
    let bad = slice("web-blue-b", &[("not-an-ip", None, None)], &[("http", 80)]);
    let v = view(json!(null), json!(null));
    assert_eq!(
        translate(&v, &[&bad], &[], false),
        Err(
            "EndpointSlice web-blue-b: endpoint address \"not-an-ip\" is not an IP address"
                .to_owned()
        )
    );
    fqdn.address_type = "FQDN".into();
    let error = translate(&v, &[&fqdn], &[], false).unwrap_err();
    assert!(
        error.starts_with("EndpointSlice web-blue-a: addressType FQDN is not supported"),
        "{error}"
    );
}

#[test]
fn spec_route_sets_hosts_and_path_prefix_except_for_a_sidecar() {
    let blue = slice("web-blue-a", &[("10.0.0.2", None, None)], &[("http", 80)]);
    let v = view(
        json!(null),
        json!({ "hosts": ["shop.example"], "pathPrefix": "/api" }),
    );
    let ingress = translate(&v, &[&blue], &[], false).unwrap();
    assert_eq!(ingress.config.hosts, ["shop.example"]);
    assert_eq!(ingress.config.path_prefix, "/api");
    let sidecar = translate(&v, &[&blue], &[], true).unwrap();
    assert!(sidecar.config.hosts.is_empty());
    assert_eq!(sidecar.config.path_prefix, "/");
    let bad = view(json!(null), json!({ "pathPrefix": "/a/../b" }));
    let error = translate(&bad, &[&blue], &[], false).unwrap_err();
    assert!(
        error.starts_with("spec.route.pathPrefix: \"/a/../b\" is not in normal form"),
        "{error}"
    );
}

#[test]
fn a_malformed_part_names_itself() {
    let parse = |data: serde_json::Value| {
        let mut object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "crossfade.dev/v1alpha1", "kind": "TrafficShift",
            "metadata": { "name": "web", "namespace": "shop" }
        }))
        .unwrap();
        object.data = data;
        ShiftView::parse(&object)
    };
    let error = parse(json!({ "status": { "weights": { "active": "50%" } } })).unwrap_err();
    assert_eq!(error, "status.weights: missing field `preview`");
    let error = parse(json!({ "spec": { "route": { "port": -1 } } })).unwrap_err();
    assert!(error.starts_with("spec.route: "), "{error}");
    // Whatever else the spec holds (the rollout policy) is not the proxy's to judge.
    let fine =
        parse(json!({ "spec": { "rollout": "nonsense" }, "status": { "phase": 3 } })).unwrap();
    assert_eq!((fine.route, fine.weights), (None, None));
}

#[test]
fn a_port_whose_app_protocol_is_kubernetes_h2c_is_spoken_to_in_h2c() {
    let mut grpc = slice(
        "web-green-a",
        &[("10.0.0.3", None, None)],
        &[("http", 8080), ("grpc", 9000)],
    );
    let plain = slice(
        "web-blue-a",
        &[("10.0.0.2", None, None)],
        &[("http", 8080), ("grpc", 9000)],
    );
    grpc.ports.as_mut().unwrap()[1].app_protocol = Some(H2C_APP_PROTOCOL.to_owned());
    let t = |port: serde_json::Value| {
        translate(
            &view(json!(null), json!({ "port": port })),
            &[&plain],
            &[&grpc],
            false,
        )
        .unwrap()
        .config
    };
    let by_grpc = t(json!("grpc"));
    assert_eq!(by_grpc.green.protocol, UpstreamProtocol::H2c);
    assert_eq!(by_grpc.green.endpoints, addrs(&["10.0.0.3:9000"]));
    assert_eq!(by_grpc.blue.protocol, UpstreamProtocol::Http1);
    assert_eq!(t(json!("http")).green.protocol, UpstreamProtocol::Http1);
}

/// After promotion (`Promoted`, `Retiring`) the preview backs the target up (it has served the
/// route); before it, and with a phase this build does not know, a weight-0 preview takes
/// nothing (C03).
#[test]
fn the_preview_is_the_routes_backup_only_once_promoted() {
    let blue = slice("web-blue-a", &[("10.0.0.2", None, None)], &[("http", 80)]);
    let green = slice("web-green-a", &[("10.0.0.3", None, None)], &[("http", 80)]);
    let weights = json!({ "active": "100%", "preview": "0%", "generation": 9 });
    for (phase, backup) in [
        (json!("Progressing"), None),
        (json!("Promoted"), Some(Slot::Green)),
        (json!("Retiring"), Some(Slot::Green)),
        (json!("Completed"), None),
        (json!("Transcending"), None),
        (json!(null), None),
    ] {
        let mut shift = view(weights.clone(), json!(null));
        shift.phase = phase.as_str().map(str::to_owned);
        let t = translate(&shift, &[&blue], &[&green], false).unwrap();
        assert_eq!(t.config.backup, backup, "{phase}");
    }
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "crossfade.dev/v1alpha1", "kind": "TrafficShift",
        "metadata": { "name": "web", "namespace": "shop" },
        "spec": { "deployment": "web", "images": { "app": "web:v2" } },
        "status": { "weights": weights, "phase": "Retiring" }
    }))
    .unwrap();
    assert_eq!(
        ShiftView::parse(&object).unwrap().phase.as_deref(),
        Some("Retiring")
    );
}
