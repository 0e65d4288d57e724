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
        Some(Protocol::WebSocket)
    );
    let other = [("connection", "upgrade"), ("upgrade", "foo/2, bar")];
    assert_eq!(
        requested(&parts(Version::HTTP_11, &other)),
        Some(Protocol::Other)
    );
    let listed_second = [("connection", "upgrade"), ("upgrade", "foo/2, websocket")];
    assert_eq!(
        requested(&parts(Version::HTTP_11, &listed_second)),
        Some(Protocol::WebSocket)
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

#[tokio::test]
async fn a_tunnel_counts_until_dropped_and_sees_only_closes_asked_after_it_opened() {
    let stats = Arc::new(BackendStats::default());
    stats.tunnels().close_all();
    let (open, close) = Open::new(&stats);
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
