//! The drain on paused time: it waits for in-flight requests and upgraded connections, and at its
//! deadline closes the upgraded connections left and waits for them to end.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;

use crossfade_proxy::weight::{Slot, Weights};

use super::*;
use crate::traffic::Held;

/// A data plane whose counts the test sets; a close makes the upgraded connections end after
/// `close_takes`.
#[derive(Default)]
struct FakeTraffic {
    in_flight: AtomicU64,
    upgraded: Arc<AtomicU64>,
    closes: AtomicU64,
    close_takes: Duration,
}

impl TrafficSetter for FakeTraffic {
    fn set_weights(&self, _: &str, _: Weights) -> crate::error::Result<u64> {
        Ok(1)
    }
    fn set_endpoints(
        &self,
        _: &str,
        _: Slot,
        _: Vec<SocketAddr>,
        _: crossfade_proxy::config::UpstreamProtocol,
    ) -> crate::error::Result<u64> {
        Ok(1)
    }
    fn promote_slot(&self, _: &str, _: Slot) -> crate::error::Result<u64> {
        Ok(1)
    }
    fn held(&self, _: &str, _: Slot) -> Held {
        Held {
            in_flight: self.in_flight.load(SeqCst),
            upgraded: self.upgraded.load(SeqCst),
        }
    }
    fn close_upgraded(&self, _: &str, _: Slot) -> u64 {
        self.closes.fetch_add(1, SeqCst);
        let (upgraded, takes) = (Arc::clone(&self.upgraded), self.close_takes);
        tokio::spawn(async move {
            tokio::time::sleep(takes).await;
            upgraded.store(0, SeqCst);
        });
        self.upgraded.load(SeqCst)
    }
}

#[tokio::test(start_paused = true)]
async fn the_drain_waits_for_upgraded_connections_and_ends_when_they_close() {
    let traffic = Arc::new(FakeTraffic::default());
    traffic.upgraded.store(20, SeqCst);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(30);
    let closer = Arc::clone(&traffic);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(4)).await;
        closer.upgraded.store(0, SeqCst);
    });
    let drain = wait_drained(&*traffic, "web", Slot::Blue, deadline).await;
    assert_eq!(drain, Drain::default());
    let waited = start.elapsed();
    assert!(waited >= Duration::from_secs(4), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    assert_eq!(
        traffic.closes.load(SeqCst),
        0,
        "nothing closed before the deadline"
    );
}

#[tokio::test(start_paused = true)]
async fn at_the_deadline_the_drain_closes_upgraded_connections_and_waits_for_them() {
    let traffic = Arc::new(FakeTraffic {
        close_takes: Duration::from_millis(800),
        ..FakeTraffic::default()
    });
    traffic.upgraded.store(20, SeqCst);
    let start = Instant::now();
    let drain = wait_drained(&*traffic, "web", Slot::Blue, start + Duration::from_secs(5)).await;
    let expected = Drain {
        deadline_passed: true,
        in_flight: 0,
        closed_upgraded: 20,
    };
    assert_eq!(drain, expected);
    let waited = start.elapsed();
    assert_eq!(traffic.closes.load(SeqCst), 1);
    assert_eq!(traffic.upgraded.load(SeqCst), 0);
    assert!(waited >= Duration::from_millis(5_800), "{waited:?}");
    assert!(waited < Duration::from_secs(6), "{waited:?}");
}

#[tokio::test(start_paused = true)]
async fn a_close_that_never_ends_holds_the_drain_no_longer_than_the_close_grace() {
    let traffic = Arc::new(FakeTraffic {
        close_takes: Duration::from_secs(3600),
        ..FakeTraffic::default()
    });
    traffic.upgraded.store(1, SeqCst);
    let start = Instant::now();
    wait_drained(&*traffic, "web", Slot::Blue, start + Duration::from_secs(5)).await;
    let waited = start.elapsed();
    assert!(waited >= Duration::from_secs(5) + CLOSE_GRACE, "{waited:?}");
    assert!(
        waited < Duration::from_secs(5) + CLOSE_GRACE + DRAIN_POLL * 2,
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn in_flight_requests_alone_hold_the_drain_too() {
    let traffic = Arc::new(FakeTraffic::default());
    traffic.in_flight.store(1, SeqCst);
    let start = Instant::now();
    let drain = wait_drained(&*traffic, "web", Slot::Blue, start + Duration::from_secs(2)).await;
    assert_eq!((drain.deadline_passed, drain.in_flight), (true, 1));
    assert!(start.elapsed() >= Duration::from_secs(2));
    assert_eq!(
        traffic.closes.load(SeqCst),
        0,
        "no upgraded connection to close"
    );
}

/// check32: a promoted backend that cannot serve, the old one kept for it, is logged at WARN as
/// the runtime's own line was before the machine said it (event `RetireHeld`).
#[test]
fn a_held_retirement_is_a_warning() {
    assert!(super::is_warning("RetireHeld"));
    assert!(!super::is_warning("ActiveDrained"));
}

mod stop;
