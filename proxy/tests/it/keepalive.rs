//! HTTP/2 keep-alive PINGs to clients (`limits.h2_keepalive_interval`, RFC 9113 §6.7): a client
//! that never answers one is closed once the interval and `h2_keepalive_timeout` have passed; one
//! that answers stays open, PING after PING.

use std::time::Duration;

use crossfade_proxy::{LimitsConfig, ProxyConfig};
use tokio::time::Instant;

use crate::h2raw::{RawH2, ACK, GOAWAY, PING};
use crate::support::*;

const INTERVAL: Duration = Duration::from_millis(300);
const TIMEOUT: Duration = Duration::from_millis(300);

/// A proxy sending keep-alive PINGs every [`INTERVAL`], with a header read timeout (60 s) far
/// beyond the test, so that only the PINGs can close a connection.
async fn proxy() -> Running {
    let blue = backend("blue").await;
    let config = ProxyConfig {
        limits: LimitsConfig {
            header_read_timeout: Duration::from_secs(60),
            h2_keepalive_interval: INTERVAL,
            h2_keepalive_timeout: TIMEOUT,
            ..LimitsConfig::default()
        },
        ..config(vec![route(&[blue.addr], &[], 10_000)])
    };
    start(config).await
}

#[tokio::test]
async fn an_http2_client_that_never_answers_a_ping_is_closed_after_interval_and_timeout() {
    let running = proxy().await;
    let mut raw = RawH2::connect(running.addr).await;
    let connected = Instant::now();
    let frames = raw
        .frames_until_close(
            Duration::from_secs(20),
            "the connection of a client that answers no PING",
        )
        .await;
    assert!(
        connected.elapsed() >= INTERVAL + TIMEOUT,
        "closed before a PING could time out"
    );
    assert!(
        frames.iter().any(|f| f.kind == PING && f.flags & ACK == 0),
        "closed without a PING: {frames:?}"
    );
}

#[tokio::test]
async fn an_http2_client_that_answers_pings_stays_open() {
    let running = proxy().await;
    let mut raw = RawH2::connect(running.addr).await;
    let mut answered = 0;
    let keep_answering = async {
        // Four PINGs answered: the connection outlived interval + timeout four times over.
        while answered < 4 {
            let frame = raw.frame().await.expect("closed while answering PINGs");
            assert_ne!(frame.kind, GOAWAY, "{frame:?}");
            if frame.kind == PING && frame.flags & ACK == 0 {
                raw.pong(&frame).await;
                answered += 1;
            }
        }
        // Still open and served: a PING of the client's own is answered.
        let data = *b"crossfd!";
        raw.ping(data).await;
        loop {
            let frame = raw.frame().await.expect("closed after the PINGs");
            if frame.kind == PING && frame.flags & ACK == ACK {
                assert_eq!(frame.payload, data);
                break;
            }
            if frame.kind == PING {
                raw.pong(&frame).await;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), keep_answering)
        .await
        .expect("four keep-alive PINGs within 20 s");
}

#[tokio::test]
async fn no_ping_is_sent_by_default() {
    let blue = backend("blue").await;
    let config = ProxyConfig {
        limits: LimitsConfig {
            header_read_timeout: Duration::from_secs(60),
            ..LimitsConfig::default()
        },
        ..config(vec![route(&[blue.addr], &[], 10_000)])
    };
    let running = start(config).await;
    let mut raw = RawH2::connect(running.addr).await;
    let watch = async {
        loop {
            let frame = raw.frame().await.expect("closed");
            assert_ne!(frame.kind, PING, "a PING with keep-alive off: {frame:?}");
        }
    };
    // Far longer than the interval of the tests above: nothing comes but the handshake.
    let quiet = tokio::time::timeout(Duration::from_secs(2), watch).await;
    assert!(quiet.is_err());
}
