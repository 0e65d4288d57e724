//! Plain forwarding over HTTP/1.1 and h2c, streamed bodies, header hygiene (C19).

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;

use crate::support::*;

#[tokio::test]
async fn get_is_forwarded_to_the_only_weighted_backend() {
    let blue = backend("blue").await;
    let green = backend("green").await;
    let running = start(config(vec![route(&[blue.addr], &[green.addr], 10_000)])).await;
    let client = client();
    for _ in 0..20 {
        let (status, headers, body) = get(&client, &running.url("/api")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["x-pool"], "blue");
        assert_eq!(body, "blue");
    }
    assert_eq!(green.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    let stats = running
        .proxy
        .backend_stats("web", crossfade_proxy::Slot::Blue)
        .unwrap();
    assert_eq!(stats.requests, 20);
    assert_eq!(stats.errors, 0);
    assert_eq!(stats.latency.count(), 20);
}

#[tokio::test]
async fn request_body_streams_upstream() {
    let blue = backend("blue").await;
    let running = start(config(vec![route(&[blue.addr], &[], 10_000)])).await;
    let body = Bytes::from(vec![7u8; 3 * 1024 * 1024]);
    let req = Request::builder()
        .method(Method::PUT)
        .uri(running.url("/upload"))
        .body(Full::new(body))
        .unwrap();
    let (status, _, answer) = send(&client(), req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer, (3 * 1024 * 1024).to_string());
}

#[tokio::test]
async fn h2c_prior_knowledge_client_is_served_and_authority_becomes_host() {
    let blue = backend("blue").await;
    let running = start(config(vec![route(&[blue.addr], &[], 10_000)])).await;
    let client = h2c_client();
    for _ in 0..5 {
        let (status, headers, _) = get(&client, &running.url("/echo")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["x-pool"], "blue");
    }
    let seen = blue.seen.lock().unwrap();
    let host = seen[0].get_all("host").iter().collect::<Vec<_>>();
    assert_eq!(host, [running.addr.to_string().as_str()]);
    assert_eq!(
        seen[0]["x-forwarded-host"],
        running.addr.to_string().as_str()
    );
}

/// Case C19: the backend never sees hop-by-hop headers, gets one X-Forwarded-For line and the
/// client's Host; the client never sees the backend's hop-by-hop headers; blue and green alike.
#[tokio::test]
async fn c19_hop_by_hop_headers_are_stripped_both_ways() {
    let blue = backend("blue").await;
    let green = backend("green").await;
    let running = start(config(vec![route(&[blue.addr], &[green.addr], 5_000)])).await;
    let client = client();
    for _ in 0..50 {
        let req = Request::get(running.url("/echo"))
            .header("connection", "keep-alive, X-Hop-Secret")
            .header("x-hop-secret", "1")
            .header("keep-alive", "timeout=5")
            .header("te", "gzip")
            .header("proxy-authorization", "Basic abc")
            .header("x-forwarded-for", "6.6.6.6")
            .header("host", "shop.example")
            .body(Full::default())
            .unwrap();
        let (status, headers, body) = send(&client, req).await;
        assert_eq!(status, StatusCode::OK);
        for hop in ["x-backend-hop", "keep-alive", "connection"] {
            assert!(!headers.contains_key(hop), "client got {hop}");
        }
        let seen: Vec<(String, String)> = serde_json::from_str(&body).unwrap();
        let names: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
        for hop in [
            "connection",
            "keep-alive",
            "x-hop-secret",
            "te",
            "proxy-authorization",
        ] {
            assert!(!names.contains(&hop), "backend got {hop}: {seen:?}");
        }
        let value = |name: &str| -> Vec<&str> {
            seen.iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .collect()
        };
        assert_eq!(value("x-forwarded-for"), ["6.6.6.6, 127.0.0.1"]);
        assert_eq!(value("host"), ["shop.example"]);
        assert_eq!(value("x-forwarded-proto"), ["http"]);
        assert_eq!(value("x-forwarded-host"), ["shop.example"]);
    }
    let (b, g) = (
        blue.seen.lock().unwrap().len(),
        green.seen.lock().unwrap().len(),
    );
    assert!(
        b > 0 && g > 0,
        "both pools must be hit: blue {b}, green {g}"
    );
}

/// What the backend behind `running` saw of a `GET /echo` with `te: trailers` from `client`,
/// which names `TE` in `Connection` too (RFC 9110 §10.1.4) when it speaks HTTP/1.1 (`http1`).
async fn echoed_with_te(
    running: &Running,
    client: &TestClient,
    http1: bool,
) -> Vec<(String, String)> {
    let mut request = Request::get(running.url("/echo")).header("te", "trailers");
    if http1 {
        request = request.header("connection", "te");
    }
    let (status, _, body) = send(client, request.body(Full::default()).unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// The values of the `name` lines in an echo's pairs.
fn values<'a>(seen: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    seen.iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// Case C19: a request's `TE: trailers` reaches an HTTP/1.1 backend with `TE` named in
/// `Connection`, as RFC 9110 §10.1.4 asks of every sender of `TE`, from an HTTP/1.1 client (which
/// named it itself) and from an HTTP/2 one; the upstream connection stays in the pool (hyper's
/// client reads only `close` in `Connection`). An h2c backend gets `te: trailers` and no
/// `Connection` (RFC 9113 §8.2.2; hyper's client would drop both). Until session 40 the HTTP/1.1
/// backend got `TE` alone.
#[tokio::test]
async fn c19_te_trailers_is_named_in_connection_to_an_http11_backend_and_not_over_h2c() {
    let http1 = backend("blue").await;
    let h2c = backend_over_h2c("blue").await;
    let to_http1 = start(config(vec![route(&[http1.addr], &[], 10_000)])).await;
    let mut over_h2c = route(&[h2c.addr], &[], 10_000);
    over_h2c.blue.protocol = crossfade_proxy::UpstreamProtocol::H2c;
    let to_h2c = start(config(vec![over_h2c])).await;
    for (client, http1_client) in [(client(), true), (h2c_client(), false)] {
        for _ in 0..2 {
            let seen = echoed_with_te(&to_http1, &client, http1_client).await;
            assert_eq!(values(&seen, "te"), ["trailers"], "{seen:?}");
            assert_eq!(values(&seen, "connection"), ["te"], "{seen:?}");
            let seen = echoed_with_te(&to_h2c, &client, http1_client).await;
            assert_eq!(values(&seen, "te"), ["trailers"], "{seen:?}");
            assert!(values(&seen, "connection").is_empty(), "{seen:?}");
        }
    }
    let opened = http1.opened.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        opened, 1,
        "four requests one after another took {opened} connections"
    );
}

#[tokio::test]
async fn untrusted_forwarded_for_is_replaced_by_the_peer() {
    let blue = backend("blue").await;
    let mut config = config(vec![route(&[blue.addr], &[], 10_000)]);
    config.trust_forwarded_for = false;
    let running = start(config).await;
    let req = Request::get(running.url("/echo"))
        .header("x-forwarded-for", "6.6.6.6")
        .body(Full::default())
        .unwrap();
    let (_, _, body) = send(&client(), req).await;
    let seen: Vec<(String, String)> = serde_json::from_str(&body).unwrap();
    let xff: Vec<_> = seen
        .iter()
        .filter(|(n, _)| n == "x-forwarded-for")
        .collect();
    assert_eq!(
        xff,
        [&("x-forwarded-for".to_owned(), "127.0.0.1".to_owned())]
    );
}

#[tokio::test]
async fn unknown_host_gets_404() {
    let blue = backend("blue").await;
    let mut web = route(&[blue.addr], &[], 10_000);
    web.hosts = vec!["shop.example".into()];
    let running = start(config(vec![web])).await;
    let req = Request::get(running.url("/"))
        .header("host", "other.example")
        .body(Full::default())
        .unwrap();
    let (status, _, body) = send(&client(), req).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, "crossfade: no route for this host and path\n");
    let req = Request::get(running.url("/"))
        .header("host", "SHOP.example:8080")
        .body(Full::default())
        .unwrap();
    assert_eq!(send(&client(), req).await.0, StatusCode::OK);
}

/// Trial 17, T5: `shop.example.` (an absolute name, with its trailing dot, as a client given a
/// fully qualified name sends it) is the host `shop.example`; it got 404 from a route on
/// `shop.example`, and a route written `shop.example.` matched only the dotted form.
#[tokio::test]
async fn a_host_with_the_trailing_dot_of_an_absolute_name_matches_its_route() {
    let blue = backend("blue").await;
    let mut web = route(&[blue.addr], &[], 10_000);
    web.hosts = vec!["shop.example".into()];
    let mut dotted = route(&[blue.addr], &[], 10_000);
    dotted.name = "dotted".into();
    dotted.path_prefix = "/dotted".into();
    dotted.hosts = vec!["api.example.".into()];
    let running = start(config(vec![web, dotted])).await;
    for (host, path, expected) in [
        ("shop.example.", "/", StatusCode::OK),
        ("Shop.Example.:8080", "/", StatusCode::OK),
        ("shop.example..", "/", StatusCode::NOT_FOUND),
        ("api.example", "/dotted", StatusCode::OK),
        ("api.example.", "/dotted", StatusCode::OK),
    ] {
        let req = Request::get(running.url(path))
            .header("host", host)
            .body(Full::default())
            .unwrap();
        assert_eq!(send(&client(), req).await.0, expected, "{host}{path}");
    }
}

/// A route on `*.shop.example` serves every tenant's subdomain, over HTTP/1.1 `Host` and HTTP/2
/// `:authority`, while a route for one of those names keeps it though it is declared after the
/// wildcard (the more specific host wins an equal prefix); the apex name and other domains are
/// no tenant's.
#[tokio::test]
async fn a_wildcard_host_route_serves_the_names_under_it() {
    let (tenants, checkout) = (backend("tenants").await, backend("checkout").await);
    let mut first = route(&[checkout.addr], &[], 10_000);
    first.name = "checkout".into();
    first.hosts = vec!["checkout.shop.example".into()];
    let mut web = route(&[tenants.addr], &[], 10_000);
    web.hosts = vec!["*.shop.example".into()];
    let running = start(config(vec![web, first])).await;
    for (host, expected) in [
        ("acme.shop.example", Some("tenants")),
        ("EU.Acme.Shop.Example:8080", Some("tenants")),
        ("acme.shop.example.", Some("tenants")),
        ("checkout.shop.example", Some("checkout")),
        ("shop.example", None),
        ("acmeshop.example", None),
        ("acme.shop.example.evil", None),
    ] {
        let req = Request::get(running.url("/"))
            .header("host", host)
            .body(Full::default())
            .unwrap();
        let (status, headers, _) = send(&client(), req).await;
        let pool = headers
            .get("x-pool")
            .map(|v| v.to_str().unwrap().to_owned());
        match expected {
            Some(name) => assert_eq!(
                (status, pool.as_deref()),
                (StatusCode::OK, Some(name)),
                "{host}"
            ),
            None => assert_eq!(status, StatusCode::NOT_FOUND, "{host}"),
        }
    }
    let req = Request::get(format!("http://acme.shop.example:{}/", running.addr.port()))
        .body(Full::<Bytes>::default())
        .unwrap();
    let h2 = tokio::net::TcpStream::connect(running.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(h2),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let response = sender.send_request(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-pool"], "tenants");
    let req = Request::get(format!(
        "http://checkout.shop.example:{}/",
        running.addr.port()
    ))
    .body(Full::<Bytes>::default())
    .unwrap();
    let response = sender.send_request(req).await.unwrap();
    assert_eq!(response.headers()["x-pool"], "checkout");
}

/// The proxy's own answers carry a `Date` (RFC 9110 §6.6.1: an origin server with a clock sends
/// one; here the proxy is the origin of its error answers), written by hyper from its cached date,
/// which vendor/hyper's patch 4 checks against the clock where the head is written rather than at
/// every poll: every answer on one keep-alive connection has it, in the IMF-fixdate form
/// (`Sun, 06 Nov 1994 08:49:37 GMT`, 29 bytes).
#[tokio::test]
async fn local_answers_carry_a_date_on_every_request_of_a_connection() {
    let blue = backend("blue").await;
    let mut web = route(&[blue.addr], &[], 10_000);
    web.hosts = vec!["shop.example".into()];
    let running = start(config(vec![web])).await;
    let client = client();
    for _ in 0..5 {
        let req = Request::get(running.url("/"))
            .header("host", "other.example")
            .body(Full::default())
            .unwrap();
        let (status, headers, _) = send(&client, req).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let date = headers
            .get(http::header::DATE)
            .expect("a Date header")
            .to_str()
            .unwrap();
        assert_eq!(date.len(), 29, "{date}");
        assert!(date.ends_with(" GMT"), "{date}");
    }
}
