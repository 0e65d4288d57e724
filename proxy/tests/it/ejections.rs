//! An endpoint that live traffic ejected and that then fails its health checks (trial 8, H6): the
//! checks' down verdict is still broadcast, logged and counted as
//! `crossfade_ejections_total{reason="health_check"}`, before its "passed its health checks".

use std::time::Duration;

use crossfade_proxy::config::{HealthConfig, OutlierConfig};
use crossfade_proxy::{EjectReason, ProxyEvent};

use crate::limits::metric;
use crate::overflow::Killable;
use crate::support::*;

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
