//! Request paths are normalised before route matching (RFC 3986 §6.2.2, dot segments, merged
//! slashes); the backend gets the normalised path; what cannot be normalised is answered 400.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::*;

/// A backend answering `<pool> <path-and-query>`.
async fn path_echo(pool: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let service = service_fn(move |req: Request<Incoming>| async move {
                let target = req.uri().path_and_query().map(|p| p.as_str().to_owned());
                let body = format!("{pool} {}", target.unwrap_or_default());
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
            });
            tokio::spawn(async move {
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// Sends `GET {target}` byte for byte (no client library rewrites it) and returns status line
/// and body.
async fn raw_get(proxy: SocketAddr, target: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let request =
        format!("GET {target} HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    let status = answer[9..12].parse().unwrap();
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn equivalent_spellings_of_a_path_match_its_route_and_reach_the_backend_normalised() {
    let public = path_echo("public").await;
    let admin = path_echo("admin").await;
    let mut admin_route = route(&[admin], &[], 10_000);
    admin_route.name = "admin".into();
    admin_route.path_prefix = "/admin".into();
    let running = start(config(vec![route(&[public], &[], 10_000), admin_route])).await;
    for (target, want) in [
        ("/admin/x", "admin /admin/x"),
        ("/public/../admin/x", "admin /admin/x"),
        ("/public/%2e%2E/admin/x?q=/../", "admin /admin/x?q=/../"),
        ("/%61dmin/%7euser", "admin /admin/~user"),
        ("//admin//x/./y", "admin /admin/x/y"),
        ("/admin/../public/a%2fb", "public /public/a%2Fb"),
        ("/adminx", "public /adminx"),
    ] {
        let (status, body) = raw_get(running.addr, target).await;
        assert_eq!((status, body.as_str()), (200, want), "GET {target}");
    }
}

#[tokio::test]
async fn paths_that_cannot_be_normalised_get_400_and_reach_no_backend() {
    let blue = backend("blue").await;
    let running = start(config(vec![route(&[blue.addr], &[], 10_000)])).await;
    for target in [
        "/..",
        "/a/../../etc/passwd",
        "/%2e%2e/x",
        "/a%zz",
        "/a%4",
        "*",
    ] {
        let (status, body) = raw_get(running.addr, target).await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST.as_u16(),
            "GET {target}: {body}"
        );
    }
    // `PRI * HTTP/1.1` (the HTTP/2 preface's first line with the wrong version) is an HTTP/1.1
    // request in the asterisk form with a method other than OPTIONS (RFC 9112 §3.2.4).
    let mut stream = tokio::net::TcpStream::connect(running.addr).await.unwrap();
    let request = "PRI * HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n";
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 400 "), "PRI *: {answer}");
    assert!(answer.contains("asterisk-form"), "PRI *: {answer}");
    assert_eq!(blue.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
}

/// A backend that answers each request with its request line and `Host` header as the backend
/// read them off the wire (no server library in between to hide an absolute-form target).
async fn request_line_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let line = head.lines().next().unwrap_or_default();
                let host = head
                    .lines()
                    .find_map(|l| l.strip_prefix("host: "))
                    .unwrap_or("none");
                let body = format!("{line} | host {host}");
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    addr
}

/// An HTTP/1.1 backend gets the origin form (`GET /a?q HTTP/1.1`, RFC 9112 §3.2.1), never the
/// absolute form naming the endpoint's address, which an origin server must prefer over `Host`
/// (RFC 9112 §3.2.2): the client's host would be lost. Checked for an HTTP/1.1 client (its held
/// upstream connection) whether it sent the origin or the absolute form.
#[tokio::test]
async fn an_http1_backend_gets_the_origin_form_and_the_clients_host() {
    let backend = request_line_echo().await;
    let running = start(config(vec![route(&[backend], &[], 10_000)])).await;
    for target in ["/a/b?q=1", "http://shop.example/a/b?q=1"] {
        let (status, body) = raw_get(running.addr, target).await;
        assert_eq!(
            (status, body.as_str()),
            (200, "GET /a/b?q=1 HTTP/1.1 | host shop.example"),
            "GET {target}"
        );
    }
}
