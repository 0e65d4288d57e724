//! Which tunnels a table swap drains, and when (on paused time).

use std::time::Duration;

use tokio::sync::watch;

use crate::config::{BackendConfig, ProxyConfig, RouteConfig};
use crate::metrics::ProxyMetrics;
use crate::tunnel::Open;
use crate::weight::{Percent, Slot, Weights};
use crate::Proxy;

const DRAIN: Duration = Duration::from_secs(4);

fn addr(port: u16) -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], port))
}

fn route(name: &str, blue: &[u16], green: &[u16]) -> RouteConfig {
    let backend = |ports: &[u16], weight: u32| BackendConfig {
        endpoints: ports.iter().map(|&p| addr(p)).collect(),
        weight: Some(Percent(weight)),
        ..BackendConfig::default()
    };
    RouteConfig {
        name: name.into(),
        path_prefix: format!("/{name}"),
        blue: backend(blue, 10_000),
        green: backend(green, 0),
        ..RouteConfig::default()
    }
}

fn proxy(routes: Vec<RouteConfig>) -> Proxy {
    let config = ProxyConfig {
        routes,
        drain_timeout: DRAIN,
        ..ProxyConfig::default()
    };
    Proxy::new(&config, ProxyMetrics::default()).unwrap()
}

/// Opens a tunnel to endpoint `index` of `route`'s `slot` as a 101 does.
fn open(proxy: &Proxy, route: &str, slot: Slot, index: usize) -> (Open, watch::Receiver<u64>) {
    let table = proxy.shared.table.load();
    let upstream = table.route(route).unwrap().backend(slot).upstream();
    Open::new(upstream.stats(), upstream.tunnels(index).unwrap())
}

fn replace(proxy: &Proxy, routes: Vec<RouteConfig>) {
    proxy
        .update(|r| {
            *r = routes;
            Ok(())
        })
        .unwrap();
}

/// Lets the spawned drain run up to `by` later.
async fn advance(by: Duration) {
    tokio::time::advance(by).await;
    tokio::task::yield_now().await;
}

#[tokio::test(start_paused = true)]
async fn a_removed_endpoints_tunnels_close_at_the_drain_timeout_and_the_others_stay() {
    let proxy = proxy(vec![route("web", &[1, 2], &[3])]);
    let (_a, mut to_removed) = open(&proxy, "web", Slot::Blue, 0);
    let (_b, mut to_kept) = open(&proxy, "web", Slot::Blue, 1);
    replace(&proxy, vec![route("web", &[2], &[3])]);
    advance(DRAIN - Duration::from_millis(1)).await;
    assert!(
        !to_removed.has_changed().unwrap(),
        "closed before the drain timeout"
    );
    advance(Duration::from_millis(2)).await;
    assert!(
        to_removed.has_changed().unwrap(),
        "not closed at the drain timeout"
    );
    assert!(
        !to_kept.has_changed().unwrap(),
        "a kept endpoint's tunnel was closed"
    );
    to_removed.mark_unchanged();
    to_kept.mark_unchanged();
    advance(DRAIN * 2).await;
    assert!(!to_removed.has_changed().unwrap() && !to_kept.has_changed().unwrap());
}

#[tokio::test(start_paused = true)]
async fn a_removed_routes_tunnels_close_at_the_drain_timeout() {
    let proxy = proxy(vec![route("web", &[1], &[3]), route("api", &[4], &[5])]);
    let (_blue, blue) = open(&proxy, "web", Slot::Blue, 0);
    let (_green, green) = open(&proxy, "web", Slot::Green, 0);
    let (_other, mut other) = open(&proxy, "api", Slot::Blue, 0);
    replace(&proxy, vec![route("api", &[4], &[5])]);
    advance(DRAIN + Duration::from_millis(1)).await;
    assert!(blue.has_changed().unwrap() && green.has_changed().unwrap());
    assert!(
        !other.has_changed().unwrap(),
        "another route's tunnel was closed"
    );
    other.mark_unchanged();
}

#[tokio::test(start_paused = true)]
async fn weight_changes_and_unchanged_reloads_close_no_tunnel() {
    let proxy = proxy(vec![route("web", &[1], &[3])]);
    let (_blue, blue) = open(&proxy, "web", Slot::Blue, 0);
    let (_green, green) = open(&proxy, "web", Slot::Green, 0);
    proxy
        .set_weights("web", Weights::all_to(Slot::Green))
        .unwrap();
    proxy.reload_routes(vec![route("web", &[1], &[3])]).unwrap();
    // The same endpoints in another order, and one more: none removed.
    replace(&proxy, vec![route("web", &[6, 1], &[3])]);
    advance(DRAIN * 3).await;
    assert!(!blue.has_changed().unwrap() && !green.has_changed().unwrap());
    assert_eq!(proxy.upgraded("web", Slot::Blue), 1);
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_put_back_before_the_drain_timeout_keeps_its_tunnels() {
    let proxy = proxy(vec![route("web", &[1, 2], &[3])]);
    let (_a, to_a) = open(&proxy, "web", Slot::Blue, 0);
    replace(&proxy, vec![route("web", &[2], &[3])]);
    advance(DRAIN / 2).await;
    replace(&proxy, vec![route("web", &[2, 1], &[3])]);
    advance(DRAIN * 2).await;
    assert!(
        !to_a.has_changed().unwrap(),
        "the endpoint came back, yet its tunnel was closed"
    );
}

#[tokio::test(start_paused = true)]
async fn a_tunnel_opened_after_the_swap_to_a_removed_endpoint_is_closed_too() {
    let proxy = proxy(vec![route("web", &[1, 2], &[3])]);
    // A request that read the old table before the swap, upgraded after it.
    let old = proxy.shared.table.load_full();
    replace(&proxy, vec![route("web", &[2], &[3])]);
    let upstream = old.route("web").unwrap().backend(Slot::Blue).upstream();
    let (_late, late) = Open::new(upstream.stats(), upstream.tunnels(0).unwrap());
    advance(DRAIN + Duration::from_millis(1)).await;
    assert!(late.has_changed().unwrap());
}
