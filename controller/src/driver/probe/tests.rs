//! Readiness probes against real servers on 127.0.0.1: h2c-only (as a gRPC server), HTTP/1.1
//! only, and one that answers no HTTP at all.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use crossfade_proxy::config::UpstreamProtocol::{H2c, Http1};
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use super::get;

const TIMEOUT: Duration = Duration::from_secs(5);

/// How a test server answers `GET /healthz`.
#[derive(Clone, Copy)]
enum Answer {
    /// 200 `ok`.
    Ok,
    /// 200 with `grpc-status: 12` in the head (a trailers-only gRPC answer: tonic's to an
    /// unknown method).
    GrpcUnimplemented,
    /// 503.
    Unavailable,
}

fn respond(answer: Answer) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from_static(b"ok")));
    match answer {
        Answer::Ok => {}
        Answer::GrpcUnimplemented => {
            let headers = res.headers_mut();
            headers.insert("content-type", "application/grpc".parse().unwrap());
            headers.insert("grpc-status", "12".parse().unwrap());
        }
        Answer::Unavailable => *res.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE,
    }
    res
}

/// A server on 127.0.0.1:0 that speaks h2c alone (`h2c`) or HTTP/1.1 alone.
async fn server(h2c: bool, answer: Answer) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let service = service_fn(move |_: Request<Incoming>| async move {
                Ok::<_, Infallible>(respond(answer))
            });
            let io = TokioIo::new(stream);
            tokio::spawn(async move {
                let _ = if h2c {
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, service)
                        .await
                } else {
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await
                };
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_h2c_only_server_passes_an_h2c_probe_and_an_http1_probe_hints_at_h2c() {
    let addr = server(true, Answer::Ok).await;
    assert_eq!(get(addr, H2c, "/healthz", TIMEOUT).await, Ok(()));
    let why = get(addr, Http1, "/healthz", TIMEOUT).await.unwrap_err();
    assert!(why.starts_with("GET /healthz failed: "), "{why}");
    assert!(
        why.contains("the endpoint answers cleartext HTTP/2 (h2c) and not HTTP/1.1")
            && why.contains("set `protocol: h2c` on this workload"),
        "{why}"
    );
}

#[tokio::test]
async fn an_h2c_server_answering_503_fails_and_an_http1_probe_still_hints_at_h2c() {
    let addr = server(true, Answer::Unavailable).await;
    let why = get(addr, H2c, "/healthz", TIMEOUT).await.unwrap_err();
    assert_eq!(why, "status 503 from GET /healthz");
    let why = get(addr, Http1, "/healthz", TIMEOUT).await.unwrap_err();
    assert!(why.contains("set `protocol: h2c`"), "{why}");
}

/// The proxy's h2c health checks pass a 2xx head whatever its `grpc-status`; readiness is the
/// same probe.
#[tokio::test]
async fn a_grpc_answer_with_a_2xx_head_passes_an_h2c_probe() {
    let addr = server(true, Answer::GrpcUnimplemented).await;
    assert_eq!(get(addr, H2c, "/healthz", TIMEOUT).await, Ok(()));
}

#[tokio::test]
async fn an_http1_server_passes_an_http1_probe_and_an_h2c_probe_hints_at_http1() {
    let addr = server(false, Answer::Ok).await;
    assert_eq!(get(addr, Http1, "/healthz", TIMEOUT).await, Ok(()));
    let why = get(addr, H2c, "/healthz", TIMEOUT).await.unwrap_err();
    assert!(why.starts_with("GET /healthz failed: "), "{why}");
    assert!(
        why.contains(
            "the endpoint answers HTTP/1.1 and not cleartext HTTP/2 (h2c); set `protocol: http1`"
        ),
        "{why}"
    );
}

/// A server that answers no HTTP at all gets no hint: only an answer in the other protocol
/// earns one.
#[tokio::test]
async fn a_server_that_answers_no_http_gets_no_h2c_hint() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = stream.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").await;
        }
    });
    let why = get(addr, Http1, "/healthz", TIMEOUT).await.unwrap_err();
    assert!(why.starts_with("GET /healthz failed: "), "{why}");
    assert!(!why.contains("h2c"), "{why}");
    let why = get(addr, H2c, "/healthz", TIMEOUT).await.unwrap_err();
    assert!(why.starts_with("GET /healthz failed: "), "{why}");
    assert!(!why.contains("protocol"), "{why}");
}

/// The hint's second probe gets what is left of the probe's timeout: an endpoint that answers
/// the HTTP/1.1 probe with garbage after 1.5 s and then holds the h2c probe without a word
/// fails within one `timeout` (2 s), not 1.5 s plus another whole one.
#[tokio::test]
async fn a_probe_with_a_hint_attempt_stays_within_its_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        let mut first = true;
        while let Ok((mut stream, _)) = listener.accept().await {
            if first {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                let _ = stream.write_all(b"garbage\r\n\r\n").await;
                first = false;
            }
            held.push(stream);
        }
    });
    let timeout = Duration::from_secs(2);
    let start = tokio::time::Instant::now();
    let why = get(addr, Http1, "/healthz", timeout).await.unwrap_err();
    let took = start.elapsed();
    assert!(
        why.starts_with("GET /healthz failed: ") && !why.contains("h2c"),
        "{why}"
    );
    // 2 s within the rule, 3.5 s past it; the slack is for a loaded machine.
    assert!(took < Duration::from_millis(3000), "took {took:?}");
}

/// Readiness probes say who they are (`User-Agent: crossfade-probe`), in HTTP/1.1 as they did
/// before they were the proxy's health probe (check33: the header was lost then), and in h2c.
#[tokio::test]
async fn a_probe_sends_its_user_agent_in_both_protocols() {
    use http::header::USER_AGENT;
    use std::sync::{Arc, Mutex};
    for h2c in [false, true] {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(None));
        let saw = Arc::clone(&seen);
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let service = service_fn(move |request: Request<Incoming>| {
                let agent = request.headers().get(USER_AGENT).cloned();
                *saw.lock().unwrap() = agent;
                async move { Ok::<_, Infallible>(respond(Answer::Ok)) }
            });
            let io = TokioIo::new(stream);
            let _ = match h2c {
                true => {
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, service)
                        .await
                }
                false => {
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await
                }
            };
        });
        let protocol = if h2c { H2c } else { Http1 };
        assert_eq!(get(addr, protocol, "/healthz", TIMEOUT).await, Ok(()));
        let agent = seen.lock().unwrap().clone();
        assert_eq!(
            agent.as_ref().and_then(|v| v.to_str().ok()),
            Some(crossfade_proxy::health::PROBE_USER_AGENT),
            "h2c: {h2c}"
        );
    }
}
