use super::*;
use crate::config::{BackendConfig, ProxyConfig};
use crate::metrics::ProxyMetrics;
use crate::weight::Slot;

fn route(name: &str, blue: u32, green: u32) -> RouteConfig {
    let backend = |port: u16, bp: u32| BackendConfig {
        endpoints: vec![std::net::SocketAddr::from(([127, 0, 0, 1], port))],
        weight: Some(Percent(bp)),
        ..BackendConfig::default()
    };
    RouteConfig {
        name: name.into(),
        path_prefix: format!("/{name}"),
        blue: backend(1, blue),
        green: backend(2, green),
        ..RouteConfig::default()
    }
}

fn proxy(routes: Vec<RouteConfig>) -> Proxy {
    let config = ProxyConfig {
        routes,
        ..ProxyConfig::default()
    };
    Proxy::new(&config, ProxyMetrics::default()).unwrap()
}

fn weights_of(proxy: &Proxy, name: &str) -> Weights {
    proxy.route(name).unwrap().weights()
}

const SHIFTED: Weights = Weights {
    blue: 7_000,
    green: 3_000,
};

#[test]
fn a_reload_keeps_runtime_weights_when_the_files_did_not_change() {
    let proxy = proxy(vec![route("web", 10_000, 0)]);
    proxy.set_weights("web", SHIFTED).unwrap();
    // An unrelated edit: a new route.
    let report = proxy
        .reload_routes(vec![route("web", 10_000, 0), route("api", 10_000, 0)])
        .unwrap();
    assert_eq!(weights_of(&proxy, "web"), SHIFTED);
    assert_eq!(report.added, ["api"]);
    assert_eq!(report.weights.len(), 1);
    assert_eq!(report.weights[0].decision, WeightDecision::Kept);
    assert_eq!(report.weights[0].in_force, SHIFTED);
    assert!(report.weights[0]
        .to_string()
        .contains("kept the weights in force"));
    // And again: the baseline is still the file's 100/0, not the kept 70/30.
    proxy.reload_routes(vec![route("web", 10_000, 0)]).unwrap();
    assert_eq!(weights_of(&proxy, "web"), SHIFTED);
}

#[test]
fn a_reload_applies_the_files_weights_when_the_operator_edited_them() {
    let proxy = proxy(vec![route("web", 10_000, 0)]);
    proxy.set_weights("web", SHIFTED).unwrap();
    let report = proxy
        .reload_routes(vec![route("web", 5_000, 5_000)])
        .unwrap();
    assert_eq!(weights_of(&proxy, "web"), Weights::with(Slot::Blue, 5_000));
    assert_eq!(report.weights[0].decision, WeightDecision::FileChanged);
    // The new baseline is the edited file: runtime weights set now survive the next reload.
    proxy.set_weights("web", SHIFTED).unwrap();
    proxy
        .reload_routes(vec![route("web", 5_000, 5_000)])
        .unwrap();
    assert_eq!(weights_of(&proxy, "web"), SHIFTED);
}

#[test]
fn a_route_removed_from_the_file_is_removed_and_one_added_takes_the_files_weights() {
    let proxy = proxy(vec![route("web", 10_000, 0), route("old", 10_000, 0)]);
    proxy.set_weights("old", SHIFTED).unwrap();
    let report = proxy
        .reload_routes(vec![route("web", 10_000, 0), route("new", 0, 10_000)])
        .unwrap();
    let names: Vec<String> = proxy.routes().into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["web", "new"]);
    assert_eq!(report.removed, ["old"]);
    assert_eq!(weights_of(&proxy, "new"), Weights::all_to(Slot::Green));
    assert!(report.weights.is_empty());
}

#[test]
fn kept_weights_that_the_edited_route_cannot_take_give_way_to_the_files() {
    let proxy = proxy(vec![route("web", 10_000, 0)]);
    proxy.set_weights("web", SHIFTED).unwrap();
    let mut edited = route("web", 10_000, 0);
    edited.green.endpoints.clear();
    let report = proxy.reload_routes(vec![edited]).unwrap();
    assert_eq!(weights_of(&proxy, "web"), Weights::all_to(Slot::Blue));
    let WeightDecision::CannotKeep(why) = &report.weights[0].decision else {
        panic!("{:?}", report.weights[0]);
    };
    assert!(why.starts_with("green."), "{why}");
}

#[test]
fn a_refused_reload_changes_neither_the_routes_nor_the_baseline() {
    let proxy = proxy(vec![route("web", 10_000, 0)]);
    let generation = proxy.generation();
    let error = proxy.reload_routes(vec![route("web", 10_000, 0), route("web", 10_000, 0)]);
    assert!(error.is_err());
    assert_eq!(proxy.generation(), generation);
    assert_eq!(
        proxy.file_weights(),
        FileWeights::of(&[route("web", 10_000, 0)])
    );
}

#[test]
fn a_successor_judges_by_its_predecessors_file() {
    // The predecessor loaded 100/0, then 70/30 was set; the successor's own file says 50/50, an
    // edit the predecessor never loaded: the successor's first reload applies it.
    let successor = proxy(vec![route("web", 5_000, 5_000)]);
    successor
        .update(|routes| {
            *routes = vec![route("web", 7_000, 3_000)];
            Ok(())
        })
        .unwrap();
    successor.set_file_weights(FileWeights::of(&[route("web", 10_000, 0)]));
    successor
        .reload_routes(vec![route("web", 5_000, 5_000)])
        .unwrap();
    assert_eq!(
        weights_of(&successor, "web"),
        Weights::with(Slot::Blue, 5_000)
    );
}

#[test]
fn not_reloaded_names_each_changed_setting_but_not_routes() {
    let in_force = ProxyConfig {
        routes: vec![route("web", 10_000, 0)],
        ..ProxyConfig::default()
    };
    let mut file = in_force.clone();
    file.routes = vec![route("api", 0, 10_000)];
    assert!(not_reloaded(&in_force, &file).is_empty());
    file.listen = "127.0.0.1:1".parse().unwrap();
    file.limits.max_connections = 5;
    file.upstream.connect_timeout = std::time::Duration::from_secs(9);
    file.tls = Some(crate::config::TlsConfig {
        cert: "c.pem".into(),
        key: "k.pem".into(),
        sni: Vec::new(),
        watch_interval: std::time::Duration::from_secs(5),
    });
    assert_eq!(
        not_reloaded(&in_force, &file),
        [
            "limits.max_connections",
            "listen",
            "tls",
            "upstream.connect_timeout"
        ]
    );
    let mut other = file.clone();
    if let Some(tls) = &mut other.tls {
        tls.cert = "other.pem".into();
    }
    assert_eq!(not_reloaded(&file, &other), ["tls.cert"]);
}
