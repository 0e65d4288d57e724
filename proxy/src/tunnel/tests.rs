//! Which requests are upgrades (RFC 9110 §7.8) and the open-tunnel count.

use std::sync::Arc;

use http::{Request, Version};

use super::*;
use crate::stats::BackendStats;

fn parts(version: Version, headers: &[(&str, &str)]) -> Parts {
    let mut request = Request::get("/ws").version(version);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(()).unwrap().into_parts().0
}

#[test]
fn an_http11_request_with_connection_upgrade_and_upgrade_is_an_upgrade() {
    let websocket = [
        ("connection", "keep-alive, Upgrade"),
        ("upgrade", "WebSocket"),
    ];
    assert_eq!(
        requested(&parts(Version::HTTP_11, &websocket)),
        Some((Protocol::WebSocket, Handshake::Upgrade))
    );
    let other = [("connection", "upgrade"), ("upgrade", "foo/2, bar")];
    assert_eq!(
        requested(&parts(Version::HTTP_11, &other)),
        Some((Protocol::Other, Handshake::Upgrade))
    );
    let listed_second = [("connection", "upgrade"), ("upgrade", "foo/2, websocket")];
    assert_eq!(
        requested(&parts(Version::HTTP_11, &listed_second)),
        Some((Protocol::WebSocket, Handshake::Upgrade))
    );
}

#[test]
fn upgrade_without_connection_upgrade_or_outside_http11_is_not_an_upgrade() {
    let no_token = [("connection", "keep-alive"), ("upgrade", "websocket")];
    assert_eq!(requested(&parts(Version::HTTP_11, &no_token)), None);
    let no_upgrade = [("connection", "upgrade")];
    assert_eq!(requested(&parts(Version::HTTP_11, &no_upgrade)), None);
    let empty = [("connection", "upgrade"), ("upgrade", " , ")];
    assert_eq!(requested(&parts(Version::HTTP_11, &empty)), None);
    let both = [("connection", "upgrade"), ("upgrade", "websocket")];
    assert_eq!(requested(&parts(Version::HTTP_10, &both)), None);
    assert_eq!(requested(&parts(Version::HTTP_2, &both)), None);
}

#[test]
fn an_upgrade_to_h2c_is_never_tunnelled_and_is_left_out_of_a_list() {
    let h2c = [
        ("connection", "Upgrade, HTTP2-Settings"),
        ("upgrade", "H2C"),
    ];
    assert_eq!(requested(&parts(Version::HTTP_11, &h2c)), None);
    let both = [("connection", "upgrade"), ("upgrade", "h2c, websocket")];
    let both = parts(Version::HTTP_11, &both);
    assert_eq!(
        requested(&both),
        Some((Protocol::WebSocket, Handshake::Upgrade))
    );
    assert_eq!(
        offered(&both.headers),
        vec![HeaderValue::from_static("websocket")]
    );
}

#[test]
fn an_h2_extended_connect_for_websocket_is_a_websocket_and_no_other_connect_is() {
    let connect = |version: Version, protocol: Option<&'static str>| {
        let mut request = Request::connect("http://app.test/ws").version(version);
        if let Some(protocol) = protocol {
            request = request.extension(hyper::ext::Protocol::from_static(protocol));
        }
        request.body(()).unwrap().into_parts().0
    };
    let websocket = connect(Version::HTTP_2, Some("WebSocket"));
    assert!(extended_websocket(&websocket));
    assert_eq!(
        requested(&websocket),
        Some((Protocol::WebSocket, Handshake::ExtendedConnect))
    );
    for other in [
        connect(Version::HTTP_2, Some("connect-udp")),
        connect(Version::HTTP_2, None),
        connect(Version::HTTP_11, Some("websocket")),
    ] {
        assert!(!extended_websocket(&other), "{other:?}");
        assert_eq!(requested(&other), None, "{other:?}");
    }
}

#[tokio::test]
async fn a_tunnel_counts_until_dropped_and_sees_only_closes_asked_after_it_opened() {
    let stats = Arc::new(BackendStats::default());
    let endpoints = stats.tunnels().endpoints(&[addr(1)]);
    stats.tunnels().close_all();
    let (open, close) = Open::new(&stats, &endpoints[0]);
    assert_eq!(stats.tunnels().open(), 1);
    assert_eq!(stats.snapshot().upgraded, 1);
    assert!(
        !close.has_changed().unwrap(),
        "an earlier close reached a new tunnel"
    );
    assert_eq!(stats.tunnels().close_all(), 1);
    assert!(close.has_changed().unwrap());
    drop(open);
    assert_eq!(stats.tunnels().open(), 0);
}

fn addr(port: u16) -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], port))
}

#[tokio::test]
async fn closing_endpoints_closes_only_their_tunnels_and_counts_them() {
    let stats = Arc::new(BackendStats::default());
    let endpoints = stats.tunnels().endpoints(&[addr(1), addr(2)]);
    let (_one, one) = Open::new(&stats, &endpoints[0]);
    let (_two, two) = Open::new(&stats, &endpoints[1]);
    let (_three, three) = Open::new(&stats, &endpoints[1]);
    assert_eq!(stats.tunnels().open_to(&[addr(2), addr(9)]), 2);
    assert_eq!(stats.tunnels().close_endpoints(&[addr(2), addr(9)]), 2);
    assert!(two.has_changed().unwrap() && three.has_changed().unwrap());
    assert!(
        !one.has_changed().unwrap(),
        "a kept endpoint's tunnel was asked to close"
    );
    assert_eq!(stats.tunnels().drain_closed(), 2);
    assert_eq!(stats.tunnels().close_all(), 3);
    assert!(one.has_changed().unwrap());
    // The drain deadline's close_all is not the endpoint drain: not counted there.
    assert_eq!(stats.tunnels().drain_closed(), 2);
}

#[test]
fn an_endpoint_entry_lives_while_a_pool_or_a_tunnel_holds_it() {
    let stats = Arc::new(BackendStats::default());
    let first = stats.tunnels().endpoints(&[addr(1)]);
    let again = stats.tunnels().endpoints(&[addr(1)]);
    assert!(Arc::ptr_eq(&first[0], &again[0]), "one entry per endpoint");
    let (open, _close) = Open::new(&stats, &first[0]);
    drop((first, again));
    let while_open = stats.tunnels().endpoints(&[addr(2)]);
    assert_eq!(
        stats.tunnels().open_to(&[addr(1)]),
        1,
        "an open tunnel's entry was forgotten"
    );
    drop(open);
    drop(stats.tunnels().endpoints(&[addr(2)]));
    assert_eq!(stats.tunnels().open_to(&[addr(1)]), 0);
    drop(while_open);
}
