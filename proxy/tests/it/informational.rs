//! 1xx informational responses from a backend reach the client (RFC 9110 §15.2: "A proxy MUST
//! forward 1xx responses unless the proxy itself requested the generation of the 1xx
//! response"): `103 Early Hints` (RFC 8297) and `102 Processing`, before the final response, over
//! HTTP/1.1 and HTTP/2, without their hop-by-hop fields; never a `100 Continue` the proxy did not
//! ask for, never to an HTTP/1.0 client, and never to the next request on the connection.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

const HINTS: &[u8] = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\
Connection: x-hop\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\n\r\n";
const PROCESSING: &[u8] = b"HTTP/1.1 102 Processing\r\n\r\n";

/// A final response with `body`.
fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A keep-alive HTTP/1.1 backend that answers each request by its path: `/upload` gets a 100 and
/// a 103 before its body is read, then `200 uploaded`; `/hints` gets a 103 and,
/// 100 ms later in a write of its own, `200 page`; `/together` a 102, a 103 and `200 together`
/// in one write; `/continue` a `100 Continue` no one asked for and `200 continued`; any other
/// path `200 plain`.
async fn hinting_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut pending = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match stream.read(&mut buf).await {
                            Ok(n @ 1..) => pending.extend_from_slice(&buf[..n]),
                            _ => return,
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&pending[..end]).into_owned();
                    pending.drain(..end + 4);
                    let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                    let written = match path.as_str() {
                        "/upload" => {
                            // Opens the body with its 100, hints, reads the body, answers.
                            let length: usize = head
                                .lines()
                                .find_map(|l| {
                                    l.to_ascii_lowercase()
                                        .strip_prefix("content-length:")
                                        .map(|v| v.trim().parse().unwrap())
                                })
                                .unwrap_or(0);
                            let mut opening = b"HTTP/1.1 100 Continue\r\n\r\n".to_vec();
                            opening.extend_from_slice(HINTS);
                            let _ = stream.write_all(&opening).await;
                            while pending.len() < length {
                                match stream.read(&mut buf).await {
                                    Ok(n @ 1..) => pending.extend_from_slice(&buf[..n]),
                                    _ => return,
                                }
                            }
                            pending.drain(..length);
                            stream.write_all(&ok("uploaded")).await
                        }
                        "/hints" => {
                            let _ = stream.write_all(HINTS).await;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            stream.write_all(&ok("page")).await
                        }
                        "/together" => {
                            let mut all = PROCESSING.to_vec();
                            all.extend_from_slice(HINTS);
                            all.extend_from_slice(&ok("together"));
                            stream.write_all(&all).await
                        }
                        "/continue" => {
                            let mut all = b"HTTP/1.1 100 Continue\r\n\r\n".to_vec();
                            all.extend_from_slice(&ok("continued"));
                            stream.write_all(&all).await
                        }
                        _ => stream.write_all(&ok("plain")).await,
                    };
                    if written.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Sends `head` on `stream` and reads until what came holds `until`; the bytes read.
async fn exchange(stream: &mut TcpStream, head: &str, until: &str) -> String {
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut read = Vec::new();
    let mut buf = [0u8; 4096];
    let whole = async {
        while !read.windows(until.len()).any(|w| w == until.as_bytes()) {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&read));
            read.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), whole)
        .await
        .expect("the response came whole");
    String::from_utf8(read).unwrap()
}

/// The `Via` pseudonym of the proxies here: each forwarded 1xx carries `<protocol> edge`.
const PSEUDONYM: &str = "edge";

/// A proxy named [`PSEUDONYM`] (or with `via` off when `via` is false) whose route has `route`.
async fn named(route: crossfade_proxy::config::RouteConfig, via: bool) -> Running {
    let mut config = config(vec![route]);
    config.via.pseudonym = Some(PSEUDONYM.to_owned());
    if !via {
        config.via.enabled = crossfade_proxy::via::Enabled(false);
    }
    start(config).await
}

/// `GET path` over a new HTTP/1.1 connection to `running`, read until `until`: the first head
/// (lowercased, without its blank line) and the rest.
async fn first_head_over_http1(running: &Running, path: &str, until: &str) -> (String, String) {
    let mut stream = TcpStream::connect(running.addr).await.unwrap();
    let get = format!("GET {path} HTTP/1.1\r\nHost: app.test\r\n\r\n");
    let answer = exchange(&mut stream, &get, until).await;
    let (head, rest) = answer.split_once("\r\n\r\n").unwrap();
    (head.to_ascii_lowercase(), rest.to_owned())
}

async fn proxy() -> Running {
    let backend = hinting_backend().await;
    named(route(&[backend], &[], 10_000), true).await
}

#[tokio::test]
async fn a_backends_early_hints_reach_an_http1_client_before_its_response() {
    let running = proxy().await;
    let mut stream = TcpStream::connect(running.addr).await.unwrap();
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: app.test\r\n\r\n");

    // The 103 came 100 ms before the final response: it went out while the request waited.
    let hinted = exchange(&mut stream, &get("/hints"), "page").await;
    let (hints, rest) = hinted.split_once("\r\n\r\n").unwrap();
    assert_eq!(
        hints.to_ascii_lowercase(),
        "http/1.1 103 early hints\r\nlink: </style.css>; rel=preload; as=style\r\nvia: 1.1 edge",
        "the 103, without its hop-by-hop fields (Connection, what it names, Keep-Alive), with the \
         proxy's Via entry (RFC 9110 §7.6.3: in each message it forwards)"
    );
    assert!(rest.starts_with("HTTP/1.1 200 OK\r\n"), "{rest}");

    // On the same connection: a request whose backend sends none gets none (nothing left over).
    let plain = exchange(&mut stream, &get("/plain"), "plain").await;
    assert!(plain.starts_with("HTTP/1.1 200 OK\r\n"), "{plain}");

    // 102 and 103 read with the final response in one go still come first, in order.
    let together = exchange(&mut stream, &get("/together"), "together").await;
    let starts: Vec<&str> = together
        .split("\r\n\r\n")
        .filter_map(|part| part.lines().next())
        .collect();
    assert_eq!(
        starts.iter().take(3).copied().collect::<Vec<_>>(),
        [
            "HTTP/1.1 102 Processing",
            "HTTP/1.1 103 Early Hints",
            "HTTP/1.1 200 OK"
        ],
        "{together}"
    );

    // A `100 Continue` the proxy did not ask for is its own hop's: not forwarded.
    let continued = exchange(&mut stream, &get("/continue"), "continued").await;
    assert!(continued.starts_with("HTTP/1.1 200 OK\r\n"), "{continued}");
}

#[tokio::test]
async fn an_http10_client_gets_no_1xx() {
    let running = proxy().await;
    let mut stream = TcpStream::connect(running.addr).await.unwrap();
    let answer = exchange(
        &mut stream,
        "GET /together HTTP/1.0\r\nHost: app.test\r\n\r\n",
        "together",
    )
    .await;
    assert!(answer.contains(" 200 OK\r\n"), "{answer}");
    assert!(
        !answer.contains(" 102 ") && !answer.contains(" 103 "),
        "{answer}"
    );
}

/// The 1xx responses an HTTP/2 (h2c) `GET path` with `accept` gets, as (status, link, the `Via`
/// entries joined with `, `) in order,
/// and its final status and body.
async fn h2_informational_accepting(
    running: &Running,
    path: &str,
    accept: &str,
) -> (Vec<(u16, String, String)>, StatusCode, String) {
    let seen: Arc<Mutex<Vec<(u16, String, String)>>> = Arc::default();
    let mut request = Request::get(running.url(path))
        .header("accept", accept)
        .body(Full::<Bytes>::default())
        .unwrap();
    let record = Arc::clone(&seen);
    hyper::ext::on_informational(&mut request, move |response| {
        let link = response
            .headers()
            .get("link")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let via = response
            .headers()
            .get_all("via")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect::<Vec<_>>()
            .join(", ");
        assert!(
            response.headers().get("x-hop").is_none()
                && response.headers().get("keep-alive").is_none(),
            "hop-by-hop fields forwarded: {:?}",
            response.headers()
        );
        record
            .lock()
            .unwrap()
            .push((response.status().as_u16(), link, via));
    });
    let response = h2c_client().request(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let seen = seen.lock().unwrap().clone();
    (seen, status, String::from_utf8_lossy(&body).into_owned())
}

/// As a browser's navigation asks: accepting HTML.
async fn h2_informational(
    running: &Running,
    path: &str,
) -> (Vec<(u16, String, String)>, StatusCode, String) {
    h2_informational_accepting(running, path, "text/html,application/xhtml+xml,*/*;q=0.8").await
}

/// Over HTTP/2 a `GET` that does not accept HTML (an API call, an asset) is given no 1xx sender
/// (`interim::wants_informational`: each costs the stream a few allocations): the backend's
/// hints are dropped for it, as for an HTTP/1.0 client, and its answer comes as ever.
#[tokio::test]
async fn an_http2_get_that_does_not_accept_html_gets_no_1xx() {
    let running = proxy().await;
    let (seen, status, body) =
        h2_informational_accepting(&running, "/hints", "application/json").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "page"));
    assert!(seen.is_empty(), "{seen:?}");
}

#[tokio::test]
async fn a_backends_early_hints_reach_an_http2_client_before_its_response() {
    let running = proxy().await;
    let link = "</style.css>; rel=preload; as=style".to_owned();
    let (seen, status, body) = h2_informational(&running, "/hints").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "page"));
    let via = || "1.1 edge".to_owned();
    assert_eq!(seen, [(103, link.clone(), via())]);

    let (seen, _, body) = h2_informational(&running, "/together").await;
    assert_eq!(body, "together");
    assert_eq!(seen, [(102, String::new(), via()), (103, link, via())]);

    let (seen, _, body) = h2_informational(&running, "/continue").await;
    assert_eq!(body, "continued");
    assert!(seen.is_empty(), "{seen:?}");
}

/// An h2c backend (hyper's HTTP/2 server with its 1xx sender, vendor/hyper patch 24) that sends
/// a 103 on each request's stream, then, 50 ms later, `200 h2 page`.
async fn h2c_hinting_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service =
                hyper::service::service_fn(|request: Request<hyper::body::Incoming>| async move {
                    let hints = request
                        .extensions()
                        .get::<hyper::ext::InformationalSender>()
                        .expect("the server gives each request its sender")
                        .clone();
                    let mut early = http::Response::new(());
                    *early.status_mut() = StatusCode::from_u16(103).unwrap();
                    early
                        .headers_mut()
                        .insert("link", "</app.js>; rel=preload; as=script".parse().unwrap());
                    hints.send(early).unwrap();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::<Bytes>::from(
                        "h2 page",
                    )))
                });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .informational_responses(Some(|_, _| true))
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
            );
        }
    });
    addr
}

/// The hints of an h2c backend reach both kinds of client, with the proxy's `Via` entry naming
/// the protocol they were received over (`2`, RFC 9110 §7.6.3).
#[tokio::test]
async fn an_h2c_backends_early_hints_reach_http1_and_http2_clients() {
    let backend = h2c_hinting_backend().await;
    let mut route = route(&[backend], &[], 10_000);
    route.blue.protocol = crossfade_proxy::config::UpstreamProtocol::H2c;
    let running = named(route, true).await;

    let (hints, rest) = first_head_over_http1(&running, "/x", "h2 page").await;
    assert_eq!(
        hints,
        "http/1.1 103 early hints\r\nlink: </app.js>; rel=preload; as=script\r\nvia: 2 edge"
    );
    assert!(rest.starts_with("HTTP/1.1 200 OK\r\n"), "{rest}");

    let (seen, status, body) = h2_informational(&running, "/x").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "h2 page"));
    assert_eq!(
        seen,
        [(
            103,
            "</app.js>; rel=preload; as=script".to_owned(),
            "2 edge".to_owned()
        )]
    );
}

/// With `via` off the proxy adds no `Via` to a forwarded 1xx, as to no other message, over
/// either kind of client.
#[tokio::test]
async fn with_via_off_a_forwarded_1xx_gets_no_via() {
    let backend = hinting_backend().await;
    let running = named(route(&[backend], &[], 10_000), false).await;
    let (hints, _) = first_head_over_http1(&running, "/hints", "page").await;
    assert_eq!(
        hints,
        "http/1.1 103 early hints\r\nlink: </style.css>; rel=preload; as=style"
    );
    let (seen, _, _) = h2_informational(&running, "/hints").await;
    assert_eq!(
        seen,
        [(
            103,
            "</style.css>; rel=preload; as=style".to_owned(),
            String::new()
        )]
    );
}

/// curl prints the 103 before the response's own head (`-D -` dumps every head it reads), over
/// HTTP/1.1 and h2c with prior knowledge (one request per connection: Debian's curl 7.88 fails
/// a reused h2c connection, curl issue 10634).
#[tokio::test]
async fn curl_sees_the_early_hints_over_http1_and_h2c() {
    if !crate::support::have_tool("informational", "curl", "curl") {
        return;
    }
    let running = proxy().await;
    let url = running.url("/hints");
    for flag in ["--http1.1", "--http2-prior-knowledge"] {
        let output = tokio::process::Command::new("curl")
            .args([
                "-sS",
                flag,
                "-H",
                "accept: text/html",
                "-D",
                "-",
                "-o",
                "/dev/null",
                &url,
            ])
            .output()
            .await
            .unwrap();
        let heads = String::from_utf8_lossy(&output.stdout).to_ascii_lowercase();
        assert!(
            output.status.success(),
            "{flag}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let hints = heads
            .find(" 103")
            .unwrap_or_else(|| panic!("{flag}: no 103 in {heads}"));
        let link = heads.find("link: </style.css>; rel=preload; as=style");
        let ok = heads
            .find(" 200")
            .unwrap_or_else(|| panic!("{flag}: no 200 in {heads}"));
        assert!(
            link.is_some_and(|link| hints < link && link < ok),
            "{flag}: {heads}"
        );
        assert!(!heads.contains("x-hop"), "{flag}: {heads}");
    }
}

/// A request that expects `100-continue`: the backend's 100 is the proxy's own business (it opens
/// the body, and the client gets the proxy's 100), its 103 is the client's: both callbacks of the
/// upstream connection see them (vendor/hyper patch 25).
#[tokio::test]
async fn an_upload_expecting_100_continue_gets_its_100_and_the_backends_hints() {
    let running = proxy().await;
    let mut stream = TcpStream::connect(running.addr).await.unwrap();
    let head = "POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\n\
                Expect: 100-continue\r\n\r\n";
    let before_body = exchange(&mut stream, head, "100 Continue\r\n\r\n").await;
    let rest = exchange(&mut stream, "hello", "uploaded").await;
    let all = format!("{before_body}{rest}");
    let starts: Vec<&str> = all
        .split("\r\n\r\n")
        .filter_map(|part| part.lines().next())
        .filter(|line| line.starts_with("HTTP/"))
        .collect();
    assert_eq!(
        starts.iter().filter(|s| s.contains(" 100 ")).count(),
        1,
        "{all}"
    );
    assert_eq!(
        starts.iter().filter(|s| s.contains(" 103 ")).count(),
        1,
        "{all}"
    );
    assert_eq!(starts.last(), Some(&"HTTP/1.1 200 OK"), "{all}");
}

/// A keep-alive HTTP/1.1 backend that answers the first request of each connection with a 103 and
/// `200 page`, and drops the connection unanswered at its next request: a pooled connection the
/// backend closes as it is reused (case C17), which the proxy re-sends on a new one.
async fn hinting_once_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut read = Vec::new();
                let mut buf = [0u8; 4096];
                for answer in [true, false] {
                    while !read.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(n @ 1..) => read.extend_from_slice(&buf[..n]),
                            _ => return,
                        }
                    }
                    read.clear();
                    if answer {
                        let mut all = HINTS.to_vec();
                        all.extend_from_slice(&ok("page"));
                        if stream.write_all(&all).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

/// A request re-sent after its pooled connection failed (C17) still gets its new backend
/// connection's 1xx: over HTTP/2 its sender lives in the request's extensions, which the retry
/// rebuilds; over HTTP/1.1 it is the connection's.
#[tokio::test]
async fn a_request_resent_after_a_stale_pooled_connection_gets_the_1xx_of_its_resend() {
    let backend = hinting_once_backend().await;
    let running = named(route(&[backend], &[], 10_000), true).await;
    let link = "</style.css>; rel=preload; as=style".to_owned();
    for attempt in 1..=3 {
        // The first goes on a new connection; each later one takes the pooled connection, which
        // the backend drops, and is re-sent on a new one.
        let (seen, status, body) = h2_informational(&running, "/hints").await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "page"),
            "request {attempt}"
        );
        assert_eq!(
            seen,
            [(103, link.clone(), "1.1 edge".to_owned())],
            "request {attempt} over HTTP/2"
        );
        let (hints, rest) = first_head_over_http1(&running, "/hints", "page").await;
        assert_eq!(
            hints,
            "http/1.1 103 early hints\r\nlink: </style.css>; rel=preload; as=style\r\nvia: 1.1 edge",
            "request {attempt} over HTTP/1.1"
        );
        assert!(rest.starts_with("HTTP/1.1 200 OK\r\n"), "{rest}");
    }
    // Each request but the first took a pooled connection and was re-sent.
    let metrics = get(&client(), &running.admin_url("/metrics")).await.2;
    let line = r#"crossfade_retries_total{route="web",backend="blue",reason="reset"} 5"#;
    assert!(metrics.contains(line), "{line} not in\n{metrics}");
}
