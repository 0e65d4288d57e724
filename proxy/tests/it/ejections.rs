//! Outlier ejection over real sockets:
//! - an endpoint that live traffic ejected and that then fails its health checks (trial 8, H6):
//!   the checks' down verdict is still broadcast, logged and counted as
//!   `crossfade_ejections_total{reason="health_check"}`, before its "passed its health checks";
//! - an endpoint failing four requests in five is ejected longer and longer: its ejection count
//!   (`/status`) grows by one per ejection, a success between them notwithstanding (trial 11, L7);
//! - with checks, an ejected endpoint whose checks never failed comes back as re-admitted, not as
//!   having "passed its health checks" (trial 11, L7).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossfade_proxy::config::{HealthConfig, OutlierConfig};
use crossfade_proxy::{EjectReason, ProxyEvent};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::limits::metric;
use crate::overflow::Killable;
use crate::support::*;

/// A backend whose `/healthz` always answers 200 and whose other paths answer 500, except every
/// `every`-th request to them (the 5th, 10th... for 5), which gets 200: with 5, it fails 80 %.
async fn flapping(every: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let served = Arc::clone(&served);
            let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                let healthz = request.uri().path() == "/healthz";
                let status = if healthz
                    || (served.fetch_add(1, Ordering::SeqCst) + 1).is_multiple_of(every)
                {
                    http::StatusCode::OK
                } else {
                    http::StatusCode::INTERNAL_SERVER_ERROR
                };
                let mut response = http::Response::new(http_body_util::Full::new(
                    bytes::Bytes::from_static(b"flapping\n"),
                ));
                *response.status_mut() = status;
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::spawn(async move {
                let _ = connection.await;
            });
        }
    });
    addr
}

/// The status of route `web`'s first blue endpoint.
fn endpoint_status(running: &Running) -> crossfade_proxy::EndpointStatus {
    running.proxy.status().routes[0].blue.health[0].clone()
}

/// Waits (at most 20 s) until `check` holds of route `web`'s first blue endpoint.
async fn wait_for_endpoint(
    running: &Running,
    what: &str,
    check: impl Fn(&crossfade_proxy::EndpointStatus) -> bool,
) {
    let wait = async {
        while !check(&endpoint_status(running)) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), wait)
        .await
        .unwrap_or_else(|_| panic!("{what}: {:?}", endpoint_status(running)));
}

/// Waits (at most 20 s) for an `EndpointDown` of `endpoint` with `reason`.
async fn endpoint_down(
    events: &mut tokio::sync::broadcast::Receiver<ProxyEvent>,
    endpoint: std::net::SocketAddr,
    reason: EjectReason,
) {
    let wait = async {
        loop {
            if let Ok(ProxyEvent::EndpointDown {
                endpoint: e,
                reason: r,
                ..
            }) = events.recv().await
            {
                if e == endpoint && r == reason {
                    return;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), wait)
        .await
        .unwrap_or_else(|_| panic!("no EndpointDown of {endpoint} for {reason:?}"));
}

#[tokio::test]
async fn an_ejected_endpoint_that_then_fails_its_checks_is_reported_down_by_the_checks() {
    let (a, b) = (Killable::start("a").await, Killable::start("b").await);
    let mut web = route(&[a.addr, b.addr], &[], 10_000);
    web.health = Some(HealthConfig {
        interval: Duration::from_secs(1),
        ..HealthConfig::default()
    });
    // One failure ejects: live traffic takes `a` out long before its checks can (fall 2 × 1 s).
    web.outlier = OutlierConfig {
        consecutive_failures: 1,
        ..OutlierConfig::default()
    };
    let running = start(config(vec![web])).await;
    let mut events = running.proxy.events();
    a.kill().await;
    let client = client();
    for _ in 0..4 {
        // `a` refuses; the request goes on to `b`.
        assert_eq!(
            get(&client, &running.url("/")).await.0,
            http::StatusCode::OK
        );
    }
    endpoint_down(&mut events, a.addr, EjectReason::UpstreamFailure).await;
    endpoint_down(&mut events, a.addr, EjectReason::HealthCheck).await;
    let series = r#"crossfade_ejections_total{route="web",backend="blue",reason="health_check"}"#;
    assert_eq!(metric(&running, series).await, Some(1.0));
    let endpoint = &running.proxy.status().routes[0].blue.health[0];
    assert!(!endpoint.healthy && !endpoint.checked_up, "{endpoint:?}");
}

#[tokio::test]
async fn an_endpoint_failing_four_requests_in_five_is_ejected_longer_each_time() {
    let bad = flapping(5).await;
    let mut web = route(&[bad], &[], 10_000);
    // The quiet time that lowers the count is far longer than the test, however slow the host.
    web.outlier = OutlierConfig {
        consecutive_5xx: 3,
        base_ejection: Duration::from_millis(100),
        max_ejection: Duration::from_secs(10),
        decay_interval: Duration::from_secs(3_600),
        ..OutlierConfig::default()
    };
    let running = start(config(vec![web])).await;
    let client = client();
    let series = r#"crossfade_ejections_total{route="web",backend="blue",reason="http_5xx"}"#;
    let mut codes = Vec::new();
    for round in 1..=5u32 {
        // Re-admitted: requests reach the endpoint again until its third 5xx in a row, a 200
        // among them after the first ejection (500 500 500 | 500 200 500 500 500 | ...).
        let mut sent = 0;
        while metric(&running, series).await.unwrap_or(0.0) < f64::from(round) {
            sent += 1;
            assert!(
                sent <= 10,
                "round {round}: not ejected after 10 requests: {codes:?}"
            );
            codes.push(get(&client, &running.url("/")).await.0.as_u16());
        }
        assert_eq!(metric(&running, series).await, Some(f64::from(round)));
        // The ejection count, which the backoff multiplies: base_ejection · round.
        assert_eq!(endpoint_status(&running).ejections, round, "{codes:?}");
        wait_for_endpoint(&running, "re-admitted", |e| e.healthy).await;
    }
    assert!(
        codes.contains(&200),
        "a success came between ejections: {codes:?}"
    );
}

#[tokio::test]
async fn with_checks_an_ejection_whose_checks_never_failed_ends_in_a_readmission() {
    let bad = flapping(5).await;
    let mut web = route(&[bad], &[], 10_000);
    // Probes always pass; `fall` 5 keeps a few slow probes on a loaded host from failing them.
    web.health = Some(HealthConfig {
        interval: Duration::from_millis(200),
        timeout: Duration::from_millis(200),
        fall: 5,
        ..HealthConfig::default()
    });
    web.outlier = OutlierConfig {
        consecutive_5xx: 3,
        base_ejection: Duration::from_millis(200),
        max_ejection: Duration::from_millis(200),
        ..OutlierConfig::default()
    };
    let running = start(config(vec![web])).await;
    let mut events = running.proxy.events();
    let client = client();
    for _ in 0..3 {
        let status = get(&client, &running.url("/")).await.0;
        assert_eq!(status, http::StatusCode::INTERNAL_SERVER_ERROR);
    }
    endpoint_down(&mut events, bad, EjectReason::Http5xx).await;
    // The next word about the endpoint: re-admitted, not "passed its health checks" (its probes
    // never failed), and no health_check ejection either.
    let next = async {
        loop {
            match events.recv().await {
                Ok(event @ ProxyEvent::EndpointReadmitted { .. })
                | Ok(event @ ProxyEvent::EndpointUp { .. })
                | Ok(event @ ProxyEvent::EndpointDown { .. }) => return event,
                Ok(_) => {}
                Err(error) => panic!("events: {error}"),
            }
        }
    };
    let event = tokio::time::timeout(Duration::from_secs(20), next)
        .await
        .expect("no event about the ejected endpoint within 20 s");
    assert_eq!(
        event,
        ProxyEvent::EndpointReadmitted {
            route: "web".to_owned(),
            backend: crossfade_proxy::Slot::Blue,
            endpoint: bad,
        }
    );
    let checks = r#"crossfade_ejections_total{route="web",backend="blue",reason="health_check"}"#;
    assert_eq!(metric(&running, checks).await.unwrap_or(0.0), 0.0);
    let endpoint = endpoint_status(&running);
    assert!(endpoint.healthy && endpoint.checked_up, "{endpoint:?}");
}
