//! C18 — an HTTP/1.0 client gets a chunked HTTP/1.1 response it cannot parse (linkerd#1847).
//!
//! Right outcome: the response to an HTTP/1.0 client has no `Transfer-Encoding`; its body is delimited
//! by closing the connection or by an accurate `Content-Length`, and its bytes match the origin's
//! (sha256). With `Connection: keep-alive`, the proxy sends a length and keeps the connection clean for
//! the next request, or closes it. Run at 50/50 so that both pools answer.

use std::collections::BTreeMap;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::support::raw::{Framing, RawResponse};
use crate::support::{proxy_config, temp_dir, RawConn, RunningProxy, SampleApp};

/// `/chunked` of the sample app: 10 KiB in chunks, no `Content-Length`.
const CHUNKED_LEN: usize = 10 * 1024;

/// Each pool must answer this many times in each variant.
const PER_POOL: u32 = 3;

/// Attempts per variant; at 50/50, missing a pool 3 times in 40 has probability below 1e-8.
const ATTEMPTS: u32 = 40;

const PLAIN: &[u8] = b"GET /chunked HTTP/1.0\r\nHost: x\r\n\r\n";
const KEEP_ALIVE: &[u8] = b"GET /chunked HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c18_http10_client_never_gets_a_chunked_body() {
    let dir = temp_dir();
    let blue = SampleApp::start(dir.path(), "blue", "blue-0", &[]).await;
    let green = SampleApp::start(dir.path(), "green", "green-0", &[]).await;
    let config = proxy_config(&[blue.addr], &[green.addr]);
    let proxy = RunningProxy::start(dir.path(), "proxy.yaml", &config).await;
    proxy.set_weights(5_000, 5_000).await;
    let origin = origin_digests(&[("blue", &blue), ("green", &green)]).await;

    let mut seen = BTreeMap::<String, u32>::new();
    for _ in 0..ATTEMPTS {
        let mut conn = RawConn::connect(proxy.listen).await;
        conn.send(PLAIN).await;
        let response = conn.read_response().await;
        eprintln!("c18 plain HTTP/1.0: {:?}", response.framing);
        let pool = check_http10(&response, &origin);
        if matches!(response.framing, Framing::Length(_)) {
            // No keep-alive asked for: HTTP/1.0 closes after the response.
            assert!(
                conn.closed_within(Duration::from_secs(5)).await,
                "left open"
            );
        }
        *seen.entry(pool).or_default() += 1;
        if seen.len() == 2 && seen.values().all(|&n| n >= PER_POOL) {
            break;
        }
    }
    assert_both_pools(&seen, "plain HTTP/1.0");

    let mut seen = BTreeMap::<String, u32>::new();
    for _ in 0..ATTEMPTS {
        let mut conn = RawConn::connect(proxy.listen).await;
        conn.send(KEEP_ALIVE).await;
        let response = conn.read_response().await;
        eprintln!("c18 HTTP/1.0 keep-alive: {:?}", response.framing);
        *seen.entry(check_http10(&response, &origin)).or_default() += 1;
        let kept = response
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("keep-alive"));
        match response.framing {
            Framing::Length(_) if kept => {
                // The next request on the same connection is answered cleanly.
                conn.send(KEEP_ALIVE).await;
                let next = conn.read_response().await;
                *seen.entry(check_http10(&next, &origin)).or_default() += 1;
            }
            Framing::Length(_) => {
                assert!(
                    conn.closed_within(Duration::from_secs(5)).await,
                    "left open"
                );
            }
            // A close-delimited body must not claim the connection stays open.
            _ => assert!(!kept, "close-delimited body with keep-alive: {response:?}"),
        }
        if seen.len() == 2 && seen.values().all(|&n| n >= PER_POOL) {
            break;
        }
    }
    assert_both_pools(&seen, "HTTP/1.0 keep-alive");
}

/// sha256 of `/chunked` fetched from each backend directly over HTTP/1.1, where it is chunked.
async fn origin_digests(apps: &[(&str, &SampleApp)]) -> BTreeMap<String, String> {
    let mut digests = BTreeMap::new();
    for (pool, app) in apps {
        let mut conn = RawConn::connect(app.addr).await;
        conn.send(b"GET /chunked HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await;
        let response = conn.read_response().await;
        assert_eq!(response.framing, Framing::Chunked, "origin: {response:?}");
        assert_eq!(response.body.len(), CHUNKED_LEN);
        digests.insert((*pool).to_owned(), sha256(&response.body));
    }
    digests
}

/// Checks one proxied response to an HTTP/1.0 client and returns its pool.
fn check_http10(response: &RawResponse, origin: &BTreeMap<String, String>) -> String {
    assert_eq!(response.status(), 200, "{}", response.status_line);
    assert_eq!(
        response.header("transfer-encoding"),
        None,
        "headers: {:?}",
        response.headers
    );
    assert_ne!(response.framing, Framing::Chunked);
    if let Framing::Length(n) = response.framing {
        assert_eq!(n, CHUNKED_LEN, "inaccurate Content-Length");
    }
    let pool = response.header("x-pool").expect("X-Pool").to_owned();
    let expected = origin.get(&pool).expect("a known pool");
    assert_eq!(
        &sha256(&response.body),
        expected,
        "{pool}: body differs from the origin's"
    );
    pool
}

fn assert_both_pools(seen: &BTreeMap<String, u32>, variant: &str) {
    eprintln!("c18 {variant}: answers per pool {seen:?}");
    for pool in ["blue", "green"] {
        let n = seen.get(pool).copied().unwrap_or(0);
        assert!(
            n >= PER_POOL,
            "{variant}: {pool} answered {n} times: {seen:?}"
        );
    }
}

fn sha256(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}
