//! `routes[].fail_open` (default on): when health holds out every endpoint of every backend that
//! may take a request while the app still answers (a `/healthz` that 404s after a patch, a probe
//! path typo, a check slower than its timeout), requests are still served, by the configured
//! weights, and counted (`crossfade_fail_open_requests_total`, the backends' own counters); the
//! first passing check brings ordinary health selection back. Never to a weight-0 preview (C03)
//! nor to a backend whose breaker tripped; never while a backend that may take the request can
//! serve (C13); off, 503 "no endpoint" as before.

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossfade_proxy::config::{BreakerConfig, HealthConfig};
use crossfade_proxy::{EjectReason, Percent, ProxyEvent, RouteConfig, Slot};
use http::StatusCode;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::broadcast::Receiver;

use crate::support::*;

/// An app instance: `/healthz` answers 200 while `healthy`, else 404 (the patched health endpoint);
/// every other path answers 200 `pool` with `X-Pool` (500 while `failing`), counted in `hits`.
#[derive(Clone)]
struct App {
    addr: SocketAddr,
    healthy: Arc<AtomicBool>,
    failing: Arc<AtomicBool>,
    hits: Arc<AtomicUsize>,
}

async fn app(pool: &'static str) -> App {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = App {
        addr: listener.local_addr().unwrap(),
        healthy: Arc::new(AtomicBool::new(true)),
        failing: Arc::new(AtomicBool::new(false)),
        hits: Arc::default(),
    };
    let state = app.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let state = state.clone();
            let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                let status = if request.uri().path() == "/healthz" {
                    match state.healthy.load(Ordering::SeqCst) {
                        true => StatusCode::OK,
                        false => StatusCode::NOT_FOUND,
                    }
                } else {
                    state.hits.fetch_add(1, Ordering::SeqCst);
                    match state.failing.load(Ordering::SeqCst) {
                        true => StatusCode::INTERNAL_SERVER_ERROR,
                        false => StatusCode::OK,
                    }
                };
                let mut response =
                    http::Response::new(http_body_util::Full::new(bytes::Bytes::from(pool)));
                *response.status_mut() = status;
                response
                    .headers_mut()
                    .insert("x-pool", http::HeaderValue::from_static(pool));
                async move { Ok::<_, Infallible>(response) }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    app
}

/// Route `web` over `blue` and `green` at `blue_bp`, with fast checks that mark an endpoint down
/// at its first failed probe and up at its first passing one.
fn checked(blue: &[&App], green: &[&App], blue_bp: u32) -> RouteConfig {
    let addrs = |apps: &[&App]| apps.iter().map(|a| a.addr).collect::<Vec<_>>();
    let mut web = route(&addrs(blue), &addrs(green), blue_bp);
    web.health = Some(HealthConfig {
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(100),
        rise: 1,
        fall: 1,
        ..HealthConfig::default()
    });
    web
}

/// Sets every app's `/healthz` to answer 200 (`healthy`) or 404.
fn set_healthy(apps: &[&App], healthy: bool) {
    for app in apps {
        app.healthy.store(healthy, Ordering::SeqCst);
    }
}

/// Waits (at most 20 s) until the checks said each of `apps` went down (`down`) or came back up.
async fn checks_said(events: &mut Receiver<ProxyEvent>, apps: &[&App], down: bool) {
    let mut left: HashSet<SocketAddr> = apps.iter().map(|a| a.addr).collect();
    let wait = async {
        while !left.is_empty() {
            match events.recv().await {
                Ok(ProxyEvent::EndpointDown {
                    endpoint,
                    reason: EjectReason::HealthCheck,
                    ..
                }) if down => left.remove(&endpoint),
                Ok(ProxyEvent::EndpointUp { endpoint, .. }) if !down => left.remove(&endpoint),
                Ok(_) => false,
                Err(error) => panic!("events: {error}"),
            };
        }
    };
    tokio::time::timeout(Duration::from_secs(20), wait)
        .await
        .unwrap_or_else(|_| panic!("the checks never said down={down} of every endpoint"));
}

/// Sends `n` GETs to `/api` over 8 keep-alive connections; returns how many each status and
/// `X-Pool` got, as `(status, pool)` counts.
async fn requests(running: &Running, n: usize) -> Vec<((StatusCode, String), usize)> {
    let url = running.url("/api");
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let url = url.clone();
            tokio::spawn(async move {
                let client = client();
                let mut seen = Vec::new();
                for _ in (t..n).step_by(8) {
                    let (status, headers, _) = get(&client, &url).await;
                    let pool = headers
                        .get("x-pool")
                        .map_or("none", |p| p.to_str().unwrap())
                        .to_owned();
                    seen.push((status, pool));
                }
                seen
            })
        })
        .collect();
    let mut counts: std::collections::BTreeMap<(StatusCode, String), usize> = Default::default();
    for task in tasks {
        for seen in task.await.unwrap() {
            *counts.entry(seen).or_default() += 1;
        }
    }
    counts.into_iter().collect()
}

/// How many of `counts` had `status` and `pool`.
fn count(counts: &[((StatusCode, String), usize)], status: StatusCode, pool: &str) -> usize {
    counts
        .iter()
        .filter(|((s, p), _)| *s == status && p == pool)
        .map(|(_, n)| n)
        .sum()
}

/// The value of the series `series` (name and labels, as written) in `/metrics`.
async fn metric(running: &Running, series: &str) -> u64 {
    let (_, _, text) = get(&client(), &running.admin_url("/metrics")).await;
    let line = text
        .lines()
        .find(|l| {
            l.strip_prefix(series)
                .is_some_and(|rest| rest.starts_with(' '))
        })
        .unwrap_or_else(|| panic!("no {series} in\n{text}"));
    line[series.len()..].trim().parse().unwrap()
}

fn fail_open_requests(slot: &str) -> String {
    format!(r#"crossfade_fail_open_requests_total{{route="web",backend="{slot}"}}"#)
}

fn failing_open(running: &Running) -> bool {
    running.proxy.status().routes[0].failing_open
}

#[tokio::test]
async fn every_endpoint_failing_its_checks_while_the_app_answers_is_served_by_weight_until_a_check_passes(
) {
    // Every WARN line, from this test's one thread (the proxy's tasks run on it too).
    let captured = crate::access_log::Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_writer(move || writer.clone())
        .json()
        .flatten_event(true)
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);
    let said = |start: &str| {
        let warnings = captured.warnings();
        let lines = warnings.iter().filter(|l| {
            l["route"] == "web" && l["message"].as_str().is_some_and(|m| m.starts_with(start))
        });
        lines.count()
    };
    let (blue_a, blue_b, green) = (app("blue").await, app("blue").await, app("green").await);
    let web = checked(&[&blue_a, &blue_b], &[&green], 9_000);
    let running = start(config(vec![web])).await;
    running.proxy.first_probes().await;
    let mut events = running.proxy.events();
    let all = [&blue_a, &blue_b, &green];
    set_healthy(&all, false);
    checks_said(&mut events, &all, true).await;
    assert!(failing_open(&running), "{:?}", running.proxy.status());

    // 10,000 requests: every one served, split by the configured 90/10. Green's share of 10 %
    // has a standard deviation of 0.3 pp over 10,000 draws: ±1.5 pp is five of them.
    let n = 10_000;
    let counts = requests(&running, n).await;
    let (blue_ok, green_ok) = (
        count(&counts, StatusCode::OK, "blue"),
        count(&counts, StatusCode::OK, "green"),
    );
    assert_eq!(blue_ok + green_ok, n, "not all served: {counts:?}");
    let green_share = green_ok as f64 / n as f64;
    assert!(
        (0.085..=0.115).contains(&green_share),
        "green got {green_share} of the requests failing open, not 10 %: {counts:?}"
    );
    // Both endpoints of blue take its share (the balancer spreads over the held-out endpoints).
    let spread = (
        blue_a.hits.load(Ordering::SeqCst),
        blue_b.hits.load(Ordering::SeqCst),
    );
    assert!(spread.0 > 0 && spread.1 > 0, "{spread:?}");
    // Counted as failing open, and as each backend's requests (what the analysis judges).
    let sent = |slot| {
        let series = fail_open_requests(slot);
        let running = &running;
        async move { metric(running, &series).await }
    };
    assert_eq!(sent("blue").await, blue_ok as u64);
    assert_eq!(sent("green").await, green_ok as u64);
    let blue_stats = running.proxy.backend_stats("web", Slot::Blue).unwrap();
    let green_stats = running.proxy.backend_stats("web", Slot::Green).unwrap();
    assert_eq!(
        (blue_stats.requests, blue_stats.errors),
        (blue_ok as u64, 0)
    );
    assert_eq!(
        (green_stats.requests, green_stats.errors),
        (green_ok as u64, 0)
    );
    let (_, _, ready) = get(&client(), &running.admin_url("/readyz")).await;
    assert!(ready.contains("failing open"), "{ready}");
    // Said once on entering, not per request.
    assert_eq!(said("failing open:"), 1, "{:?}", captured.warnings());
    assert_eq!(said("stopped failing open"), 0);

    // One blue endpoint passes its check again: health routes exactly as without fail-open,
    // green (still held out) gives its share to blue, and nothing more is sent failing open.
    set_healthy(&[&blue_a], true);
    checks_said(&mut events, &[&blue_a], false).await;
    assert!(!failing_open(&running));
    let (a_before, b_before) = (
        blue_a.hits.load(Ordering::SeqCst),
        blue_b.hits.load(Ordering::SeqCst),
    );
    let counts = requests(&running, 400).await;
    assert_eq!(count(&counts, StatusCode::OK, "blue"), 400, "{counts:?}");
    assert_eq!(blue_a.hits.load(Ordering::SeqCst) - a_before, 400);
    assert_eq!(blue_b.hits.load(Ordering::SeqCst), b_before);
    assert_eq!(sent("blue").await, blue_ok as u64);
    assert_eq!(sent("green").await, green_ok as u64);
    // Said once on leaving.
    assert_eq!(said("stopped failing open"), 1, "{:?}", captured.warnings());
    assert_eq!(said("failing open:"), 1);
}

#[tokio::test]
async fn with_fail_open_off_a_route_whose_endpoints_all_fail_their_checks_answers_503() {
    let (blue, green) = (app("blue").await, app("green").await);
    let mut web = checked(&[&blue], &[&green], 5_000);
    web.fail_open = false;
    let running = start(config(vec![web])).await;
    running.proxy.first_probes().await;
    let mut events = running.proxy.events();
    set_healthy(&[&blue, &green], false);
    checks_said(&mut events, &[&blue, &green], true).await;
    assert!(!failing_open(&running));
    let counts = requests(&running, 200).await;
    assert_eq!(
        count(&counts, StatusCode::SERVICE_UNAVAILABLE, "none"),
        200,
        "{counts:?}"
    );
    assert_eq!(blue.hits.load(Ordering::SeqCst), 0);
    assert_eq!(green.hits.load(Ordering::SeqCst), 0);
    assert_eq!(metric(&running, &fail_open_requests("blue")).await, 0);
}

#[tokio::test]
async fn a_backend_failing_its_checks_beside_one_that_passes_gets_nothing_and_nothing_fails_open() {
    // C13's rule is unchanged: the other backend can serve, so it takes the whole route.
    let (blue, green) = (app("blue").await, app("green").await);
    let running = start(config(vec![checked(&[&blue], &[&green], 5_000)])).await;
    running.proxy.first_probes().await;
    let mut events = running.proxy.events();
    set_healthy(&[&green], false);
    checks_said(&mut events, &[&green], true).await;
    let counts = requests(&running, 400).await;
    assert_eq!(count(&counts, StatusCode::OK, "blue"), 400, "{counts:?}");
    assert_eq!(green.hits.load(Ordering::SeqCst), 0);
    assert!(!failing_open(&running));
    assert_eq!(metric(&running, &fail_open_requests("blue")).await, 0);
    assert_eq!(metric(&running, &fail_open_requests("green")).await, 0);
}

#[tokio::test]
async fn a_weight_0_preview_never_gets_a_request_failing_open() {
    // C03: blue (active) at 100 %, green (preview) at 0 %, both held out by their checks.
    let (blue, green) = (app("blue").await, app("green").await);
    let running = start(config(vec![checked(&[&blue], &[&green], 10_000)])).await;
    running.proxy.first_probes().await;
    let mut events = running.proxy.events();
    set_healthy(&[&blue, &green], false);
    checks_said(&mut events, &[&blue, &green], true).await;
    let counts = requests(&running, 1_000).await;
    assert_eq!(count(&counts, StatusCode::OK, "blue"), 1_000, "{counts:?}");
    assert_eq!(green.hits.load(Ordering::SeqCst), 0);
    assert_eq!(metric(&running, &fail_open_requests("green")).await, 0);
}

#[tokio::test]
async fn a_tripped_preview_never_gets_a_request_failing_open_and_alone_leaves_503() {
    let (blue, green) = (app("blue").await, app("green").await);
    let mut web = checked(&[&blue], &[&green], 5_000);
    web.breaker = Some(BreakerConfig {
        max_error_rate: Percent(5_000),
        window: Duration::from_secs(60),
        min_requests: 5,
    });
    let running = start(config(vec![web.clone()])).await;
    running.proxy.first_probes().await;
    // Green (the preview) fails its requests until its breaker trips, then answers again.
    green.failing.store(true, Ordering::SeqCst);
    let client = client();
    let mut sent = 0;
    while !running.proxy.status().routes[0].green.tripped {
        assert!(sent < 1_000, "the breaker never tripped");
        get(&client, &running.url("/api")).await;
        sent += 1;
    }
    green.failing.store(false, Ordering::SeqCst);
    let green_before = green.hits.load(Ordering::SeqCst);

    let mut events = running.proxy.events();
    set_healthy(&[&blue, &green], false);
    checks_said(&mut events, &[&blue, &green], true).await;
    let counts = requests(&running, 400).await;
    assert_eq!(count(&counts, StatusCode::OK, "blue"), 400, "{counts:?}");
    assert_eq!(green.hits.load(Ordering::SeqCst), green_before);
    assert_eq!(metric(&running, &fail_open_requests("green")).await, 0);

    // The tripped preview alone: blue's only endpoint is replaced by one no check ever passed
    // (C02), and the breaker (same settings) holds. Nothing may take the requests: 503.
    let fresh = app("blue").await;
    fresh.healthy.store(false, Ordering::SeqCst);
    let mut replaced = web;
    replaced.blue.endpoints = vec![fresh.addr];
    running.proxy.reload_routes(vec![replaced]).unwrap();
    assert!(running.proxy.status().routes[0].green.tripped);
    let counts = requests(&running, 40).await;
    assert_eq!(
        count(&counts, StatusCode::SERVICE_UNAVAILABLE, "none"),
        40,
        "{counts:?}"
    );
    assert_eq!(green.hits.load(Ordering::SeqCst), green_before);
    assert_eq!(fresh.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn endpoints_all_ejected_after_a_burst_of_5xx_are_still_served_failing_open() {
    // No active checks: outlier ejection alone holds every endpoint out, for a minute.
    let (blue, green) = (app("blue").await, app("green").await);
    let mut web = route(&[blue.addr], &[green.addr], 5_000);
    web.outlier.consecutive_5xx = 1;
    web.outlier.base_ejection = Duration::from_secs(60);
    web.outlier.max_ejection = Duration::from_secs(60);
    let running = start(config(vec![web])).await;
    let mut events = running.proxy.events();
    blue.failing.store(true, Ordering::SeqCst);
    green.failing.store(true, Ordering::SeqCst);
    let client = client();
    let mut ejected = HashSet::new();
    while ejected.len() < 2 {
        get(&client, &running.url("/api")).await;
        while let Ok(event) = events.try_recv() {
            if let ProxyEvent::EndpointDown {
                endpoint,
                reason: EjectReason::Http5xx,
                ..
            } = event
            {
                ejected.insert(endpoint);
            }
        }
    }
    // The burst is over: the app answers again, but both endpoints stay ejected.
    blue.failing.store(false, Ordering::SeqCst);
    green.failing.store(false, Ordering::SeqCst);
    assert!(failing_open(&running));
    let counts = requests(&running, 400).await;
    let served = count(&counts, StatusCode::OK, "blue") + count(&counts, StatusCode::OK, "green");
    assert_eq!(served, 400, "{counts:?}");
    let sent = metric(&running, &fail_open_requests("blue")).await
        + metric(&running, &fail_open_requests("green")).await;
    assert_eq!(sent, 400);
}
