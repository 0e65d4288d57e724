//! A tripped circuit breaker holds only under the settings it tripped with (trial 8, H5): a reload
//! that removes or changes the route's `breaker` releases the trip; one that keeps it keeps it;
//! one that removes the route releases it too. And it trips at the response that meets its
//! condition, counted over sockets (session 44).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossfade_proxy::config::BreakerConfig;
use crossfade_proxy::{Percent, RouteConfig, Slot};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::support::*;

/// A backend that answers every request 500; counts them.
async fn failing() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&hits);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let hits = Arc::clone(&counted);
            let service = service_fn(move |_request| {
                hits.fetch_add(1, Ordering::SeqCst);
                async {
                    let mut response = http::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from_static(b"broken"),
                    ));
                    *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                    Ok::<_, Infallible>(response)
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    (addr, hits)
}

/// Route `web` at 50/50 over `blue` and `green`, with a breaker at 50 % errors over a 10 s window
/// and at least `min_requests`.
fn breaker_route(blue: SocketAddr, green: SocketAddr, min_requests: u64) -> RouteConfig {
    let mut web = route(&[blue], &[green], 5_000);
    web.breaker = Some(BreakerConfig {
        max_error_rate: Percent(5_000),
        window: Duration::from_secs(10),
        min_requests,
    });
    web
}

fn tripped(running: &Running) -> bool {
    running.proxy.status().routes[0].green.tripped
}

/// Sends GETs until green's breaker trips (at most 500).
async fn trip(running: &Running) {
    let client = client();
    for _ in 0..500 {
        if tripped(running) {
            return;
        }
        get(&client, &running.url("/")).await;
    }
    panic!("the breaker never tripped");
}

#[tokio::test]
async fn removing_or_changing_the_breaker_by_reload_releases_its_trip() {
    let blue = backend("blue").await;
    let (green, green_hits) = failing().await;
    let web = breaker_route(blue.addr, green, 5);
    let running = start(config(vec![web.clone()])).await;
    trip(&running).await;

    // The same settings again: the trip holds.
    running.proxy.reload_routes(vec![web.clone()]).unwrap();
    assert!(
        tripped(&running),
        "a reload with the same breaker released it"
    );

    // Other settings: released.
    let mut changed = web.clone();
    changed.breaker = Some(BreakerConfig {
        min_requests: 10,
        ..web.breaker.clone().unwrap()
    });
    running.proxy.reload_routes(vec![changed.clone()]).unwrap();
    assert!(!tripped(&running), "a changed breaker kept its trip");

    // Tripped again, then the breaker removed: released, and green gets requests again.
    trip(&running).await;
    let mut without = changed;
    without.breaker = None;
    running.proxy.reload_routes(vec![without]).unwrap();
    assert!(!tripped(&running), "a removed breaker kept its trip");
    let before = green_hits.load(Ordering::SeqCst);
    let client = client();
    for _ in 0..40 {
        get(&client, &running.url("/")).await;
    }
    assert!(
        green_hits.load(Ordering::SeqCst) > before,
        "green got no request at 50 % after the release"
    );
    let status = running.proxy.status();
    assert_eq!(status.routes[0].weights.of(Slot::Green), 5_000);
}

/// Trial 24: a route removed by a reload while its breaker is tripped takes the trip along: the
/// `crossfade_breaker_tripped` series of the route that is gone no longer reads 1 (it read 1 until
/// the process ended, so the dashboard showed a breaker holding a route that no longer exists),
/// and the route added back with the same settings starts untripped, its green getting its share.
#[tokio::test]
async fn a_route_removed_while_tripped_leaves_no_trip_behind() {
    let blue = backend("blue").await;
    let (green, green_hits) = failing().await;
    let web: RouteConfig = route(&[blue.addr], &[], 10_000);
    let mut api: RouteConfig = route(&[blue.addr], &[green], 5_000);
    api.name = "api".into();
    api.path_prefix = "/api".into();
    api.breaker = Some(BreakerConfig {
        max_error_rate: Percent(5_000),
        window: Duration::from_secs(10),
        min_requests: 5,
    });
    let running = start(config(vec![web.clone(), api.clone()])).await;
    let api_tripped = |running: &Running| {
        let status = running.proxy.status();
        let route = status.routes.iter().find(|r| r.name == "api").cloned();
        route.is_some_and(|r| r.green.tripped)
    };
    let client = client();
    for _ in 0..500 {
        if api_tripped(&running) {
            break;
        }
        get(&client, &running.url("/api/x")).await;
    }
    assert!(api_tripped(&running), "the breaker never tripped");
    let series = "crossfade_breaker_tripped{route=\"api\",backend=\"green\"}";
    let (_, _, metrics) = get(&client, &running.admin_url("/metrics")).await;
    assert!(metrics.contains(&format!("{series} 1")), "{metrics}");

    running.proxy.reload_routes(vec![web.clone()]).unwrap();
    let (_, _, metrics) = get(&client, &running.admin_url("/metrics")).await;
    assert!(
        !metrics.contains(&format!("{series} 1")),
        "the removed route's breaker still reads tripped:\n{metrics}"
    );

    running.proxy.reload_routes(vec![web, api]).unwrap();
    assert!(
        !api_tripped(&running),
        "the route added back started with the old trip"
    );
    let before = green_hits.load(Ordering::SeqCst);
    for _ in 0..40 {
        get(&client, &running.url("/api/x")).await;
    }
    assert!(
        green_hits.load(Ordering::SeqCst) > before,
        "green got no request at 50 % after the route came back"
    );
}

/// Session 44: the breaker trips at the response that meets its condition, asserted by counts,
/// not by time. Green answers every request 500; blue is fine; 50/50, `min_requests: 20`,
/// `max_error_rate: 50%` and a 10 s window that the whole run fits in. Green's window then holds
/// only errors, so the condition is met by green's 20th response. No slack: the breaker counts a
/// response when its head arrives, before the proxy passes it on, and the requests are sequential,
/// so green gets exactly 20 requests and not one more. `/status` and `/metrics` show the trip, the
/// configured weights are unchanged, and blue answers every later request without an error.
#[tokio::test]
async fn a_failing_green_gets_min_requests_and_then_nothing_while_blue_serves_the_rest() {
    const MIN_REQUESTS: u64 = 20;
    const SENT: usize = 400;
    let blue = backend("blue").await;
    let (green, green_hits) = failing().await;
    let web = breaker_route(blue.addr, green, MIN_REQUESTS);
    let running = start(config(vec![web])).await;
    let mut events = running.proxy.events();
    let client = client();
    let mut answers = Vec::with_capacity(SENT);
    for _ in 0..SENT {
        let (status, headers, _) = get(&client, &running.url("/")).await;
        let pool = headers
            .get("x-pool")
            .map(|p| p.to_str().unwrap().to_owned());
        answers.push((status, pool));
    }

    let to_green = green_hits.load(Ordering::SeqCst);
    assert_eq!(
        to_green as u64, MIN_REQUESTS,
        "green got {to_green} requests; the breaker's condition was met at its {MIN_REQUESTS}th"
    );
    let errors = answers.iter().filter(|(s, _)| *s != http::StatusCode::OK);
    assert!(
        errors
            .clone()
            .all(|(s, _)| *s == http::StatusCode::INTERNAL_SERVER_ERROR),
        "{answers:?}"
    );
    assert_eq!(
        errors.count(),
        to_green,
        "an error other than green's own 500s"
    );
    let last_error = answers
        .iter()
        .rposition(|(s, _)| *s != http::StatusCode::OK)
        .unwrap();
    let after = &answers[last_error + 1..];
    assert!(
        after.len() >= SENT / 2,
        "only {} requests after the trip",
        after.len()
    );
    for (i, (status, pool)) in after.iter().enumerate() {
        assert_eq!(
            (*status, pool.as_deref()),
            (http::StatusCode::OK, Some("blue")),
            "request {} after the trip",
            i + 1
        );
    }
    eprintln!(
        "tripped at request {} of {SENT}; green got {to_green}, blue served the {} after",
        last_error + 1,
        after.len()
    );

    let (_, _, body) = get(&client, &running.admin_url("/status")).await;
    let status: crossfade_proxy::Status = serde_json::from_str(&body).unwrap();
    let green_status = &status.routes[0].green;
    assert!(green_status.tripped, "/status: {body}");
    assert_eq!(status.routes[0].weights.of(Slot::Green), 5_000, "{body}");
    assert_eq!(green_status.requests, MIN_REQUESTS, "{body}");
    let (_, _, metrics) = get(&client, &running.admin_url("/metrics")).await;
    let labels = "{route=\"web\",backend=\"green\"}";
    for series in [
        format!("crossfade_breaker_tripped{labels} 1"),
        format!("crossfade_breaker_trips_total{labels} 1"),
    ] {
        assert!(metrics.contains(&series), "no {series} in:\n{metrics}");
    }
    let tripped = std::iter::from_fn(|| events.try_recv().ok()).find_map(|event| match event {
        crossfade_proxy::ProxyEvent::BreakerTripped { requests, .. } => Some(requests),
        _ => None,
    });
    assert_eq!(tripped, Some(MIN_REQUESTS), "the BreakerTripped event");
}
