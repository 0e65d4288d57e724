//! One failed active probe below `fall` keeps the endpoint up (README: "`fall` failures in a row
//! mark it down"), over real sockets (session 44; until then only the unit test
//! `health::tests::one_failed_probe_below_fall_keeps_the_endpoint_up` showed it).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use crossfade_proxy::config::HealthConfig;
use crossfade_proxy::{ProxyEvent, Status};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};

use crate::support::*;

/// The probe that fails (503), and the one held until the test has looked.
const FAILED_PROBE: usize = 2;
const HELD_PROBE: usize = 3;

/// An endpoint whose `/healthz` answers 200 but for its [`FAILED_PROBE`]th probe (503), and that
/// holds its [`HELD_PROBE`]th until `release` has a permit, saying on `held` when it arrives.
/// Other paths answer 200 `flaky`.
async fn flaky() -> (SocketAddr, mpsc::Receiver<()>, Arc<Semaphore>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (held, arrived) = mpsc::channel(1);
    let release = Arc::new(Semaphore::new(0));
    let probes = Arc::new(AtomicUsize::new(0));
    let gate = Arc::clone(&release);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (held, gate, probes) = (held.clone(), Arc::clone(&gate), Arc::clone(&probes));
            let service = service_fn(move |request: Request<Incoming>| {
                let (held, gate, probes) = (held.clone(), Arc::clone(&gate), Arc::clone(&probes));
                async move {
                    let mut status = StatusCode::OK;
                    if request.uri().path() == "/healthz" {
                        match probes.fetch_add(1, Ordering::SeqCst) + 1 {
                            FAILED_PROBE => status = StatusCode::SERVICE_UNAVAILABLE,
                            HELD_PROBE => {
                                held.send(()).await.unwrap();
                                gate.acquire().await.unwrap().forget();
                            }
                            _ => {}
                        }
                    }
                    let mut response = Response::new(Full::new(Bytes::from_static(b"flaky")));
                    *response.status_mut() = status;
                    Ok::<_, Infallible>(response)
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    (addr, arrived, release)
}

/// `rise: 2, fall: 2` (the defaults), probes every 500 ms. The endpoint is blue's only one, and
/// the route does not fail open, so a request gets 503 "no endpoint" whenever the checks hold it
/// out. While the third probe is held at the endpoint (the second one failed), the endpoint is
/// still up: `/status` says so and names the failure, a request reaches it, and no down event
/// was sent.
#[tokio::test]
async fn one_failed_probe_below_fall_keeps_the_endpoint_serving() {
    let (addr, mut held, release) = flaky().await;
    let mut web = route(&[addr], &[], 10_000);
    web.fail_open = false;
    web.health = Some(HealthConfig {
        interval: Duration::from_millis(500),
        timeout: Duration::from_millis(500),
        ..HealthConfig::default()
    });
    assert_eq!(web.health.as_ref().map(|h| h.fall), Some(2));
    let running = start(config(vec![web])).await;
    let mut events = running.proxy.events();
    tokio::time::timeout(Duration::from_secs(10), held.recv())
        .await
        .expect("the third probe within 10 s")
        .unwrap();

    let client = client();
    let (status, _, body) = get(&client, &running.url("/")).await;
    let (_, _, json) = get(&client, &running.admin_url("/status")).await;
    release.add_permits(1);
    let shown: Status = serde_json::from_str(&json).unwrap();
    let endpoint = &shown.routes[0].blue.health[0];
    let failure = endpoint.last_check_failure.as_deref().unwrap_or_default();
    assert!(
        failure.contains("503"),
        "the second probe did not fail: {endpoint:?}"
    );
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "flaky"),
        "a request after one failed probe: {endpoint:?}"
    );
    assert!(endpoint.healthy && endpoint.checked_up, "{endpoint:?}");
    let down = std::iter::from_fn(|| events.try_recv().ok())
        .find(|event| matches!(event, ProxyEvent::EndpointDown { .. }));
    assert!(down.is_none(), "{down:?}");
}
