//! What reaches an HTTP/1.1 backend of the request head (trial 3): HTTP/2 cookie crumbs joined into
//! one `Cookie` line, a client's `X-Crossfade-Shadow` removed, a `Host` for HTTP/1.0 requests.

use http::{HeaderMap, Request};
use tokio::net::TcpStream;

use crate::support::*;

/// Sends `GET path` with `headers` over a raw h2 (prior knowledge) connection to `proxy`, each
/// header as its own field, and waits for the response; returns its status.
async fn h2_get(proxy: std::net::SocketAddr, path: &str, headers: &[(&str, &str)]) -> u16 {
    let stream = TcpStream::connect(proxy).await.unwrap();
    let (client, connection) = h2::client::handshake(stream).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let mut request = Request::get(format!("http://{proxy}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let (response, _) = client
        .send_request(request.body(()).unwrap(), true)
        .unwrap();
    let response = response.await.unwrap();
    response.status().as_u16()
}

fn cookies(headers: &HeaderMap) -> Vec<&str> {
    headers
        .get_all("cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect()
}

/// RFC 9113 §8.2.3: an HTTP/2 client's split `cookie` fields ("crumbs") reach an HTTP/1.1 backend
/// as one `Cookie` line joined with "; ", so a server that joins repeated fields with "," (WSGI)
/// does not read `session=abc,csrf=xyz`; a single field is passed as it came.
#[tokio::test]
async fn http2_cookie_crumbs_reach_an_http1_backend_as_one_line() {
    let blue = backend("blue").await;
    let running = start(config(vec![route(&[blue.addr], &[], 10_000)])).await;
    let crumbs = [("cookie", "session=abc"), ("cookie", "csrf=xyz")];
    assert_eq!(h2_get(running.addr, "/echo", &crumbs).await, 200);
    assert_eq!(
        h2_get(running.addr, "/echo", &[("cookie", "only=1")]).await,
        200
    );
    let seen = blue.seen.lock().unwrap();
    assert_eq!(cookies(&seen[0]), ["session=abc; csrf=xyz"]);
    assert_eq!(cookies(&seen[1]), ["only=1"]);
}

/// Trial 3 finding 5: `X-Crossfade-Shadow` marks the proxy's own mirrors (docs/shadow.md), so one a
/// client sends is removed from the live request, over HTTP/1.1 and HTTP/2; the other headers stay.
#[tokio::test]
async fn a_client_sent_shadow_header_never_reaches_the_backend() {
    let blue = backend("blue").await;
    let running = start(config(vec![route(&[blue.addr], &[], 10_000)])).await;
    let request = Request::get(running.url("/echo"))
        .header("x-crossfade-shadow", "1")
        .header("x-kept", "yes")
        .body(http_body_util::Full::default())
        .unwrap();
    assert_eq!(send(&client(), request).await.0, 200);
    let spoofed = [("X-Crossfade-Shadow", "1"), ("x-kept", "yes")];
    assert_eq!(h2_get(running.addr, "/echo", &spoofed).await, 200);
    let seen = blue.seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    for headers in seen.iter() {
        assert!(headers.get("x-crossfade-shadow").is_none(), "{headers:?}");
        assert_eq!(headers["x-kept"], "yes");
    }
}

/// Sends `head` on a fresh connection and reads until the proxy closes it (HTTP/1.0: no
/// keep-alive); returns the status line.
async fn http10(proxy: std::net::SocketAddr, head: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    answer.lines().next().unwrap_or_default().to_owned()
}

/// Trial 3 finding 8 (RFC 9112 §3.2): an HTTP/1.0 request without `Host` (HAProxy's default
/// health check) reaches the HTTP/1.1 backend with `Host: <endpoint ip:port>`, as nginx sends its
/// `$proxy_host`; one with a `Host` keeps it.
#[tokio::test]
async fn an_http10_request_without_host_reaches_the_backend_with_the_endpoints_authority() {
    let blue = backend("blue").await;
    let running = start(config(vec![route(&[blue.addr], &[], 10_000)])).await;
    let status = http10(running.addr, "OPTIONS /echo HTTP/1.0\r\n\r\n").await;
    assert_eq!(status, "HTTP/1.0 200 OK");
    let status = http10(
        running.addr,
        "GET /echo HTTP/1.0\r\nHost: shop.example\r\n\r\n",
    )
    .await;
    assert_eq!(status, "HTTP/1.0 200 OK");
    let seen = blue.seen.lock().unwrap();
    let hosts: Vec<Vec<&str>> = seen
        .iter()
        .map(|h| {
            h.get_all("host")
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect()
        })
        .collect();
    assert_eq!(
        hosts,
        [vec![blue.addr.to_string().as_str()], vec!["shop.example"]]
    );
}
