//! Active health probes name `health.host` (default: the endpoint's `ip:port`) the same way in
//! both protocols: as `Host` over HTTP/1.1 (RFC 9112 §3.2) and as `:authority` over h2c (RFC 9113
//! §8.3.1), while the connection goes to the endpoint.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use crossfade_proxy::config::{HealthConfig, UpstreamProtocol};
use http::{Request, Response, Version};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::support::{client, config, get, refused_addr, route, start};

/// What a backend saw of one probe: the protocol, the URI's authority (HTTP/2's `:authority`)
/// and the `Host` header.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Probe {
    version: Version,
    authority: Option<String>,
    host: Option<String>,
}

/// A backend speaking HTTP/1.1 and HTTP/2 with prior knowledge that answers 200 and records every
/// request to `/healthz`.
async fn probed_backend() -> (SocketAddr, Arc<Mutex<Vec<Probe>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let record = Arc::clone(&record);
            let service = service_fn(move |request: Request<Incoming>| {
                if request.uri().path() == "/healthz" {
                    let header = request.headers().get(http::header::HOST);
                    record.lock().unwrap().push(Probe {
                        version: request.version(),
                        authority: request.uri().authority().map(|a| a.to_string()),
                        host: header.map(|h| h.to_str().unwrap().to_owned()),
                    });
                }
                async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("ok")))) }
            });
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

/// Runs a proxy with one route per `(protocol, host)` over its own backend until every backend
/// saw a probe; returns each backend's address and first probe.
async fn first_probes(cases: &[(UpstreamProtocol, Option<&str>)]) -> Vec<(SocketAddr, Probe)> {
    let mut routes = Vec::new();
    let mut backends = Vec::new();
    for (i, (protocol, host)) in cases.iter().enumerate() {
        let (addr, seen) = probed_backend().await;
        let mut route = route(&[addr], &[], 10_000);
        route.name = format!("r{i}");
        route.path_prefix = format!("/r{i}");
        route.blue.protocol = *protocol;
        route.health = Some(HealthConfig {
            interval: Duration::from_millis(50),
            timeout: Duration::from_millis(50),
            host: host.map(str::to_owned),
            ..HealthConfig::default()
        });
        routes.push(route);
        backends.push((addr, seen));
    }
    let _proxy = start(config(routes)).await;
    let mut firsts = Vec::new();
    for (addr, seen) in backends {
        let mut first = None;
        for _ in 0..100 {
            first = seen.lock().unwrap().first().cloned();
            if first.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        firsts.push((addr, first.expect("a probe within 2s")));
    }
    firsts
}

#[tokio::test]
async fn probes_name_the_configured_host_over_http1_and_h2c() {
    let host = "app.internal:8080";
    let cases = [
        (UpstreamProtocol::Http1, Some(host)),
        (UpstreamProtocol::H2c, Some(host)),
    ];
    let probes = first_probes(&cases).await;
    let (_, http1) = &probes[0];
    assert_eq!(http1.version, Version::HTTP_11);
    assert_eq!(http1.host.as_deref(), Some(host), "{http1:?}");
    let (_, h2c) = &probes[1];
    assert_eq!(h2c.version, Version::HTTP_2);
    assert_eq!(h2c.authority.as_deref(), Some(host), "{h2c:?}");
    assert_eq!(
        h2c.host, None,
        "RFC 9113 §8.3.1: :authority, no Host: {h2c:?}"
    );
}

#[tokio::test]
async fn without_a_host_probes_name_the_endpoint_in_both_protocols() {
    let cases = [
        (UpstreamProtocol::Http1, None),
        (UpstreamProtocol::H2c, None),
    ];
    let probes = first_probes(&cases).await;
    let (addr, http1) = &probes[0];
    assert_eq!(http1.host, Some(addr.to_string()), "{http1:?}");
    let (addr, h2c) = &probes[1];
    assert_eq!(h2c.authority, Some(addr.to_string()), "{h2c:?}");
}

/// A backend that answers every request, `/healthz` too, with 503.
async fn unhealthy_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = service_fn(|_: Request<Incoming>| async {
                let mut response = Response::new(Full::new(Bytes::from("unavailable")));
                *response.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                Ok::<_, Infallible>(response)
            });
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// The admin API's `GET /status` tells why each endpoint's last probe failed (trial 11, L15):
/// the status a backend answered with, or the refused connection.
#[tokio::test]
async fn status_says_why_an_endpoint_failed_its_health_checks() {
    let (unhealthy, refused) = (unhealthy_backend().await, refused_addr().await);
    let mut route = route(&[unhealthy, refused], &[], 10_000);
    // Probes get a whole second: a loaded machine does not turn the 503 into a timeout.
    route.health = Some(HealthConfig {
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
        ..HealthConfig::default()
    });
    let running = start(config(vec![route])).await;
    let client = client();
    let url = running.admin_url("/status");
    let mut causes = Vec::new();
    // Polls until both endpoints are down by their checks, with the cause (at most 20 s): never
    // up, since an endpoint is held out until its first probe passes.
    for _ in 0..400 {
        let (status, _, body) = get(&client, &url).await;
        assert_eq!(status, http::StatusCode::OK, "{body}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        let health = json["routes"][0]["blue"]["health"]
            .as_array()
            .unwrap()
            .clone();
        causes = health
            .iter()
            .map(|e| (e["checked_up"].clone(), e["last_check_failure"].clone()))
            .collect();
        if causes
            .iter()
            .all(|(up, cause)| up == false && cause.is_string())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(causes.iter().all(|(up, _)| up == false), "{causes:?}");
    assert_eq!(causes[0].1, "status 503 from GET /healthz", "{causes:?}");
    let refused_cause = causes[1].1.as_str().unwrap_or_default();
    assert!(
        refused_cause.starts_with("connect failed: ") && refused_cause.contains("refused"),
        "{causes:?}"
    );
}
