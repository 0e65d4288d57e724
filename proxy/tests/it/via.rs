//! The `Via` entry (RFC 9110 §7.6.3) and the loops it reveals: two proxies pointing at each other
//! answer 508 after one round, a chain of two proxies reaches its backend with both entries, a
//! client's own `Via` is kept and extended, and `via.enabled: false` sends none.

use std::time::Duration;

use crossfade_proxy::config::ViaConfig;
use crossfade_proxy::Slot;
use http::header::VIA;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::Full;

use crate::limits::metric;
use crate::support::{
    backend, client, config, get, h2c_client, refused_addr, route, send, start, Running,
};

/// Generous bound on a loop's answer: without detection the request never comes back.
const PATIENCE: Duration = Duration::from_secs(10);

/// The `Via` lines of `headers`, in order.
fn via_lines(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(VIA)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// A proxy whose route `web` sends everything to `endpoint`, named `pseudonym`.
async fn named_proxy(pseudonym: &str, endpoint: std::net::SocketAddr) -> Running {
    let mut config = config(vec![route(&[endpoint], &[], 10_000)]);
    config.via.pseudonym = Some(pseudonym.to_owned());
    start(config).await
}

/// Points `running`'s route at `endpoint`.
fn point_at(running: &Running, endpoint: std::net::SocketAddr) {
    running
        .proxy
        .update(|routes| {
            routes[0].blue.endpoints = vec![endpoint];
            Ok(())
        })
        .unwrap();
}

#[tokio::test]
async fn two_proxies_pointing_at_each_other_answer_508_after_one_round() {
    // Default pseudonyms: random per instance.
    let a = start(config(vec![route(&[refused_addr().await], &[], 10_000)])).await;
    let b = start(config(vec![route(&[a.addr], &[], 10_000)])).await;
    point_at(&a, b.addr);
    let (pa, pb) = (
        a.proxy.via_pseudonym().unwrap().to_owned(),
        b.proxy.via_pseudonym().unwrap().to_owned(),
    );
    assert_ne!(pa, pb);
    assert!(pa.starts_with("crossfade-"), "{pa}");

    let client = client();
    let started = tokio::time::Instant::now();
    let requests = 20;
    let url = a.url("/x");
    let answers = futures_util::future::join_all(
        (0..requests).map(|_| tokio::time::timeout(PATIENCE, get(&client, &url))),
    )
    .await;
    println!(
        "{requests} looping requests answered in {:?}",
        started.elapsed()
    );
    for answer in answers {
        let (status, headers, body) = answer.expect("a looping request was never answered");
        assert_eq!(status, StatusCode::LOOP_DETECTED, "{body}");
        assert!(body.contains("forwarding loop"), "{body}");
        // A answered it on the way back in; B, then A, forwarded that answer.
        assert_eq!(
            via_lines(&headers),
            [format!("1.1 {pb}"), format!("1.1 {pa}")]
        );
    }
    // One round each: every client request went once A -> B and once B -> A, no further.
    let dispatched = |r: &Running| r.proxy.backend_stats("web", Slot::Blue).unwrap().requests;
    assert_eq!(dispatched(&a), requests);
    assert_eq!(dispatched(&b), requests);
    let series = r#"crossfade_local_responses_total{route="web",backend="none",class="5xx",reason="loop_detected"}"#;
    assert_eq!(metric(&a, series).await, Some(requests as f64));
    assert_eq!(metric(&b, series).await, None);
    let total = r#"crossfade_requests_total{route="web",backend="none",class="5xx"}"#;
    assert_eq!(metric(&a, total).await, Some(requests as f64));
    // Bounded connections: A holds at most the client's and B's (one per request in flight at
    // once), B at most A's; a loop without detection opens one more at each round.
    let open = "crossfade_client_connections";
    let (at_a, at_b) = (
        metric(&a, open).await.unwrap(),
        metric(&b, open).await.unwrap(),
    );
    println!("client connections open after the loop: A {at_a}, B {at_b}");
    assert!(at_a <= 2.0 * requests as f64, "{at_a}");
    assert!(at_b <= requests as f64, "{at_b}");
}

#[tokio::test]
async fn a_chain_of_two_proxies_reaches_the_backend_with_both_entries() {
    let app = backend("blue").await;
    let b = named_proxy("edge-b", app.addr).await;
    let a = named_proxy("edge-a", b.addr).await;

    let (status, headers, _) = get(&client(), &a.url("/x")).await;
    assert_eq!(status, StatusCode::OK);
    let seen = app.seen.lock().unwrap().clone();
    assert_eq!(via_lines(&seen[0]), ["1.1 edge-a", "1.1 edge-b"]);
    // The response passed B, then A.
    assert_eq!(via_lines(&headers), ["1.1 edge-b", "1.1 edge-a"]);

    // An HTTP/2 client's request is received over HTTP/2 by A: `2 edge-a`; B gets HTTP/1.1.
    let (status, _, _) = get(&h2c_client(), &a.url("/y")).await;
    assert_eq!(status, StatusCode::OK);
    let seen = app.seen.lock().unwrap().clone();
    assert_eq!(via_lines(&seen[1]), ["2 edge-a", "1.1 edge-b"]);
}

#[tokio::test]
async fn a_client_via_with_other_names_is_kept_and_extended_and_ours_is_refused() {
    let app = backend("blue").await;
    let proxy = named_proxy("edge-a", app.addr).await;
    let client = client();

    let request = |via: &str| {
        Request::get(proxy.url("/x"))
            .header(VIA, via)
            .header(VIA, "1.1 edge-a-2 (Crossfade, 1.1 edge-a)")
            .body(Full::default())
            .unwrap()
    };
    let (status, _, _) = send(&client, request("1.0 fred, 1.1 p.example.net")).await;
    assert_eq!(status, StatusCode::OK);
    let seen = app.seen.lock().unwrap().clone();
    assert_eq!(
        via_lines(&seen[0]),
        [
            "1.0 fred, 1.1 p.example.net",
            "1.1 edge-a-2 (Crossfade, 1.1 edge-a)",
            "1.1 edge-a"
        ]
    );

    // Our name in any entry, in any case: answered here, never forwarded.
    let (status, headers, body) = send(&client, request("1.0 fred, 1.1 EDGE-A")).await;
    assert_eq!(status, StatusCode::LOOP_DETECTED, "{body}");
    assert!(body.contains("edge-a"), "{body}");
    assert!(
        via_lines(&headers).is_empty(),
        "a local reply is not forwarded"
    );
    assert_eq!(app.hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    let series = r#"crossfade_local_responses_total{route="web",backend="none",class="5xx",reason="loop_detected"}"#;
    assert_eq!(metric(&proxy, series).await, Some(1.0));
}

#[tokio::test]
async fn via_off_sends_no_entry_and_detects_nothing() {
    let app = backend("blue").await;
    let mut config = config(vec![route(&[app.addr], &[], 10_000)]);
    config.via = ViaConfig::off();
    let proxy = start(config).await;
    assert_eq!(proxy.proxy.via_pseudonym(), None);

    let request = Request::get(proxy.url("/x"))
        .header(VIA, "1.1 crossfade-0123456789abcdef")
        .body(Full::default())
        .unwrap();
    let (status, headers, _) = send(&client(), request).await;
    assert_eq!(status, StatusCode::OK);
    assert!(via_lines(&headers).is_empty());
    let seen = app.seen.lock().unwrap().clone();
    assert_eq!(via_lines(&seen[0]), ["1.1 crossfade-0123456789abcdef"]);
}

/// What a binary upgrade's successor does with its predecessor's pseudonym
/// ([`crossfade_proxy::Proxy::inherit_via`]): takes it when it has a random one of its own and
/// has not used it yet; keeps a configured one; takes nothing with `Via` off or a bad name.
#[tokio::test]
async fn a_successor_takes_the_predecessors_pseudonym_only_in_place_of_an_unused_random_one() {
    let proxy = |via: ViaConfig| {
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = crossfade_proxy::ProxyMetrics::register(&mut registry);
        let config = crossfade_proxy::ProxyConfig {
            via,
            ..config(Vec::new())
        };
        crossfade_proxy::Proxy::new(&config, metrics).unwrap()
    };
    let fresh = proxy(ViaConfig::default());
    assert!(fresh.inherit_via("crossfade-00000000000000aa"));
    assert_eq!(fresh.via_pseudonym(), Some("crossfade-00000000000000aa"));
    assert!(!fresh.inherit_via("crossfade-00000000000000bb"), "once");

    let used = proxy(ViaConfig::default());
    let own = used.via_pseudonym().unwrap().to_owned();
    assert!(!used.inherit_via("crossfade-00000000000000aa"));
    assert_eq!(used.via_pseudonym(), Some(own.as_str()));

    let named = proxy(ViaConfig {
        pseudonym: Some("edge-1".to_owned()),
        ..ViaConfig::default()
    });
    assert!(!named.inherit_via("crossfade-00000000000000aa"));
    assert_eq!(named.via_pseudonym(), Some("edge-1"));

    assert!(!proxy(ViaConfig::off()).inherit_via("crossfade-00000000000000aa"));
    assert!(!proxy(ViaConfig::default()).inherit_via("not a token"));
}

/// The admin API's `/status` shows the pseudonym in force: the configured one, the random one the
/// proxy made (the same as its `Via` lines carry), or `null` when `via` is off.
#[tokio::test]
async fn status_shows_the_via_pseudonym_in_force() {
    let app = backend("blue").await;
    let pseudonym = |body: &str| -> serde_json::Value {
        serde_json::from_str::<serde_json::Value>(body).unwrap()["via_pseudonym"].clone()
    };
    let named = named_proxy("edge-1", app.addr).await;
    let (status, _, body) = get(&client(), &named.admin_url("/status")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(pseudonym(&body), "edge-1", "{body}");

    let random = start(config(vec![route(&[app.addr], &[], 10_000)])).await;
    let (_, _, body) = get(&client(), &random.admin_url("/status")).await;
    let shown = pseudonym(&body);
    assert!(
        shown.as_str().is_some_and(|p| p.starts_with("crossfade-")),
        "{body}"
    );
    let (_, headers, _) = get(&client(), &random.url("/x")).await;
    assert_eq!(
        via_lines(&headers),
        [format!("1.1 {}", shown.as_str().unwrap())]
    );

    let mut off = config(vec![route(&[app.addr], &[], 10_000)]);
    off.via = ViaConfig::off();
    let off = start(off).await;
    let (_, _, body) = get(&client(), &off.admin_url("/status")).await;
    assert_eq!(pseudonym(&body), serde_json::Value::Null, "{body}");
}
