//! Case C02 at the proxy's start: an endpoint of a route with active health checks gets no
//! request before its first probe passed, a request that finds no endpoint probed yet waits for
//! the first probes (bounded by the route's `health.timeout`), and `GET /readyz` answers 503,
//! naming the route, until the first probe round is over.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use crossfade_proxy::config::HealthConfig;
use crossfade_proxy::{EndpointStatus, Slot};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::limits::{metric, wait_for};
use crate::support::{backend, client, config, get, refused_addr, route, start, Running};

/// A backend whose `/healthz` answers only once the test says with which status
/// ([`Gated::answer_probes`]); every other path answers 200 with `X-Pool`. It records, in order,
/// each probe answered and each request served.
struct Gated {
    addr: SocketAddr,
    probes: watch::Sender<Option<u16>>,
    /// `probe` and `request`, in the order they were answered.
    events: Arc<Mutex<Vec<&'static str>>>,
    /// Requests other than probes.
    hits: Arc<AtomicUsize>,
}

impl Gated {
    async fn start(pool: &'static str) -> Gated {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (probes, gate) = watch::channel(None::<u16>);
        let events = Arc::new(Mutex::new(Vec::new()));
        let hits = Arc::new(AtomicUsize::new(0));
        let (seen, counted) = (Arc::clone(&events), Arc::clone(&hits));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (gate, seen, counted) = (gate.clone(), seen.clone(), counted.clone());
                let service = service_fn(move |request: Request<Incoming>| {
                    let (mut gate, seen, counted) = (gate.clone(), seen.clone(), counted.clone());
                    async move {
                        if request.uri().path() == "/healthz" {
                            let status = *gate.wait_for(Option::is_some).await.unwrap();
                            seen.lock().unwrap().push("probe");
                            let mut response = Response::new(Full::new(Bytes::new()));
                            *response.status_mut() = StatusCode::from_u16(status.unwrap()).unwrap();
                            return Ok::<_, Infallible>(response);
                        }
                        counted.fetch_add(1, Ordering::SeqCst);
                        seen.lock().unwrap().push("request");
                        let mut response = Response::new(Full::new(Bytes::from(pool)));
                        response
                            .headers_mut()
                            .insert("x-pool", pool.parse().unwrap());
                        Ok(response)
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Gated {
            addr,
            probes,
            events,
            hits,
        }
    }

    /// Answers the probe held now, and every later one, with `status`.
    fn answer_probes(&self, status: u16) {
        self.probes.send_replace(Some(status));
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn events(&self) -> Vec<&'static str> {
        self.events.lock().unwrap().clone()
    }
}

/// Route `web` over `blue` and `green` at 50/50 with active checks every `interval` (the probe
/// timeout as long), started in-process.
async fn proxy(blue: SocketAddr, green: SocketAddr, interval: Duration) -> Running {
    let mut web = route(&[blue], &[green], 5_000);
    web.health = Some(HealthConfig {
        interval,
        timeout: interval,
        ..HealthConfig::default()
    });
    start(config(vec![web])).await
}

/// Endpoint `slot`'s only endpoint in `/status`.
fn endpoint(running: &Running, slot: Slot) -> EndpointStatus {
    let route = running.proxy.status().routes.remove(0);
    let backend = match slot {
        Slot::Blue => route.blue,
        Slot::Green => route.green,
    };
    backend.health[0].clone()
}

#[tokio::test]
async fn c02_an_endpoint_whose_first_probe_has_no_answer_or_fails_gets_no_request_and_readyz_waits_for_it(
) {
    let blue = backend("blue").await;
    let green = Gated::start("green").await;
    // Green's first probe is held for as long as the test wants (the timeout is far away).
    let running = proxy(blue.addr, green.addr, Duration::from_secs(60)).await;
    wait_for(|| async { endpoint(&running, Slot::Blue).healthy }).await;
    let awaited = endpoint(&running, Slot::Green);
    assert!(
        awaited.awaiting_first_probe && !awaited.healthy,
        "{awaited:?}"
    );
    let (status, _, body) = get(&client(), &running.admin_url("/readyz")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body,
        format!(
            "route web: awaiting the first health probe of green {} (1 of 2 endpoints probed)\n",
            green.addr
        )
    );
    let client = client();
    for _ in 0..100 {
        let (status, headers, _) = get(&client, &running.url("/")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["x-pool"], "blue", "green's share goes to blue");
    }
    assert_eq!(green.hits(), 0, "a request reached green before any probe");

    // Its first probe fails: held out, and the round is over.
    green.answer_probes(500);
    wait_for(|| async { get(&client, &running.admin_url("/readyz")).await.0 == StatusCode::OK })
        .await;
    let (_, _, body) = get(&client, &running.admin_url("/readyz")).await;
    assert_eq!(body, "ready\n");
    for _ in 0..100 {
        let (status, headers, _) = get(&client, &running.url("/")).await;
        assert_eq!(
            (status, &headers["x-pool"]),
            (StatusCode::OK, &"blue".parse().unwrap())
        );
    }
    assert_eq!(
        green.hits(),
        0,
        "a request reached green, whose probe failed"
    );
    let failed = endpoint(&running, Slot::Green);
    assert!(
        !failed.awaiting_first_probe && !failed.healthy,
        "{failed:?}"
    );
    assert_eq!(
        failed.last_check_failure.as_deref(),
        Some("status 500 from GET /healthz")
    );
    assert_eq!(running.proxy.status().routes[0].green.requests, 0);
}

/// From the very first request on (none waits for readiness here): a green endpoint that refuses
/// connections is never tried, not even once before its first probe says so.
#[tokio::test]
async fn c02_a_refused_endpoint_is_not_tried_by_the_first_requests() {
    let blue = backend("blue").await;
    let green = refused_addr().await;
    let running = proxy(blue.addr, green, Duration::from_secs(1)).await;
    let client = client();
    for _ in 0..200 {
        let (status, headers, _) = get(&client, &running.url("/")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["x-pool"], "blue");
    }
    let status = running.proxy.status();
    assert_eq!(
        status.routes[0].green.requests, 0,
        "attempts were sent to green: {:?}",
        status.routes[0].green
    );
}

/// No endpoint of the route has a probe result yet: a request waits for the first probes rather
/// than get 503, and reaches blue only after blue's probe passed.
#[tokio::test]
async fn c02_a_request_before_any_probe_passed_waits_for_the_first_one() {
    let blue = Gated::start("blue").await;
    let green = Gated::start("green").await;
    let running = proxy(blue.addr, green.addr, Duration::from_secs(60)).await;
    let url = running.url("/");
    let request = tokio::spawn(async move { get(&client(), &url).await });
    let in_flight = "crossfade_client_requests_in_flight";
    wait_for(|| async { metric(&running, in_flight).await == Some(1.0) }).await;
    assert!(!request.is_finished(), "answered before any probe passed");
    assert_eq!(blue.hits() + green.hits(), 0);

    blue.answer_probes(200);
    let (status, headers, _) = request.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-pool"], "blue");
    assert_eq!(blue.events(), ["probe", "request"]);
    assert_eq!(green.hits(), 0);
}

/// The wait is bounded: when no first probe passes within the route's `health.timeout` (both
/// hang here), the request gets the ordinary 503 "no endpoint", nothing is sent upstream, and
/// `/readyz` then says ready and names the route it cannot serve.
#[tokio::test]
async fn c02_a_request_waits_no_longer_than_the_probe_timeout_then_gets_503() {
    let blue = Gated::start("blue").await;
    let green = Gated::start("green").await;
    let running = proxy(blue.addr, green.addr, Duration::from_millis(300)).await;
    let (status, _, body) = get(&client(), &running.url("/")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body.starts_with("crossfade: no endpoint (route web"),
        "{body}"
    );
    assert_eq!(blue.hits() + green.hits(), 0);
    wait_for(|| async { get(&client(), &running.admin_url("/readyz")).await.0 == StatusCode::OK })
        .await;
    let (_, _, body) = get(&client(), &running.admin_url("/readyz")).await;
    assert_eq!(
        body,
        "ready\nunserved: route web: no endpoint up (every request gets 503 no endpoint)\n"
    );
    let (_, _, metrics) = get(&client(), &running.admin_url("/metrics")).await;
    let no_endpoint: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("crossfade_local_responses_total{"))
        .filter(|l| l.contains(r#"reason="no_endpoint""#))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(no_endpoint, 1.0, "the 503 is counted once");
}

/// Readiness covers the start's endpoints only: once ready, an endpoint a later table adds (a
/// reload, the admin API) is held out alone until its first probe passes, and `/readyz` stays
/// 200 meanwhile (turning unready would pull every replica from its load balancer at each
/// reload).
#[tokio::test]
async fn c02_an_endpoint_added_after_the_start_is_held_out_without_turning_readyz_503() {
    let blue = backend("blue").await;
    let green = backend("green").await;
    let running = proxy(blue.addr, green.addr, Duration::from_secs(60)).await;
    let client = client();
    wait_for(|| async { get(&client, &running.admin_url("/readyz")).await.0 == StatusCode::OK })
        .await;
    let added = Gated::start("added").await;
    running
        .proxy
        .update(|routes| {
            routes[0].green.endpoints.push(added.addr);
            Ok(())
        })
        .unwrap();
    let held = running.proxy.status().routes[0].green.health[1].clone();
    assert!(held.awaiting_first_probe && !held.healthy, "{held:?}");
    let (status, _, body) = get(&client, &running.admin_url("/readyz")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ready\n"));
    for _ in 0..100 {
        assert_eq!(get(&client, &running.url("/")).await.0, StatusCode::OK);
    }
    assert_eq!(
        added.hits(),
        0,
        "a request reached the endpoint before its first probe"
    );
}
