//! Table swaps under load (C15), draining removed backends, graceful shutdown.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossfade_proxy::{Slot, Weights};
use http::StatusCode;

use crate::support::*;

/// Case C15: 100 weight changes while 16 keep-alive clients send requests: no request fails and
/// the generation rises by exactly 100.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c15_weight_changes_under_load_fail_no_request() {
    let blue = backend("blue").await;
    let green = backend("green").await;
    let running = start(config(vec![route(&[blue.addr], &[green.addr], 10_000)])).await;
    let before = running.proxy.generation();
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = Vec::new();
    for _ in 0..16 {
        let (stop, ok, failed, url) = (stop.clone(), ok.clone(), failed.clone(), running.url("/"));
        load.push(tokio::spawn(async move {
            let client = client();
            while !stop.load(Ordering::Relaxed) {
                let req = http::Request::get(&url).body(Default::default()).unwrap();
                match client.request(req).await {
                    Ok(r) if r.status() == StatusCode::OK => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for i in 0..100u32 {
        let green_bp = (i * 7919) % 10_001;
        running
            .proxy
            .set_weights("web", Weights::with(Slot::Green, green_bp))
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert!(ok.load(Ordering::Relaxed) > 100);
    assert_eq!(running.proxy.generation(), before + 100);
}

/// Waits until `slot` of route `web` has `n` requests in flight: the slow request was dispatched
/// (a fixed pause was not always enough for it on a loaded machine).
async fn until_in_flight(running: &Running, slot: Slot, n: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while running.proxy.backend_stats("web", slot).unwrap().in_flight != n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{slot:?} never had {n} requests in flight"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Removing a backend's endpoint while a slow request is in flight on it: the request finishes
/// with the old pool, the in-flight count returns to 0, and new requests go elsewhere.
#[tokio::test]
async fn removed_backend_drains_its_in_flight_request() {
    let blue = backend("blue").await;
    let green = backend("green").await;
    let running = start(config(vec![route(&[blue.addr], &[green.addr], 0)])).await;
    let url = running.url("/slow/400");
    let slow = tokio::spawn(async move { get(&client(), &url).await });
    until_in_flight(&running, Slot::Green, 1).await;
    let in_flight = |slot| running.proxy.backend_stats("web", slot).unwrap().in_flight;

    let generation = running
        .proxy
        .update(|routes| {
            routes[0].set_weights(Weights::all_to(Slot::Blue));
            routes[0].green.endpoints.clear();
            Ok(())
        })
        .unwrap();
    assert_eq!(generation, 2);
    let (status, headers, _) = get(&client(), &running.url("/")).await;
    assert_eq!(
        (status, &headers["x-pool"]),
        (StatusCode::OK, &"blue".parse().unwrap())
    );

    let (status, headers, body) = slow.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (&headers["x-pool"], body.as_str()),
        (&"green".parse().unwrap(), "green")
    );
    assert_eq!(in_flight(Slot::Green), 0);
    assert_eq!(green.hits.load(Ordering::SeqCst), 1);
}

/// Shutdown stops accepting but lets the request in flight finish before `serve` returns.
#[tokio::test]
async fn shutdown_waits_for_the_request_in_flight() {
    let blue = backend("blue").await;
    let mut running = start(config(vec![route(&[blue.addr], &[], 10_000)])).await;
    let url = running.url("/slow/300");
    let slow = tokio::spawn(async move { get(&client(), &url).await });
    until_in_flight(&running, Slot::Blue, 1).await;
    running.stop();
    let (status, _, body) = slow.await.unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "blue"));
    tokio::time::timeout(Duration::from_secs(2), &mut running.task)
        .await
        .expect("serve returns after draining")
        .unwrap()
        .unwrap();
    assert!(tokio::net::TcpStream::connect(running.addr).await.is_err());
}

/// A connection whose protocol is not known yet (half of the HTTP/2 preface, then nothing) is
/// closed when the drain begins, not held until its header read deadline (10 s) or the drain
/// timeout (5 s).
#[tokio::test]
async fn shutdown_closes_a_connection_that_sent_half_a_preface() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let blue = backend("blue").await;
    let mut running = start(config(vec![route(&[blue.addr], &[], 10_000)])).await;
    let mut half = tokio::net::TcpStream::connect(running.addr).await.unwrap();
    half.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    running.stop();
    tokio::time::timeout(Duration::from_secs(2), &mut running.task)
        .await
        .expect("serve returns without waiting for the half preface")
        .unwrap()
        .unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(2), half.read_to_end(&mut rest)).await;
    assert!(matches!(read, Ok(Ok(0))), "{read:?} {rest:?}");
}

/// A weight change keeps the backends' pools: requests after 20 changes still reuse the one
/// upstream connection.
#[tokio::test]
async fn weight_changes_keep_the_upstream_pool() {
    let blue = backend("blue").await;
    let green = backend("green").await;
    let running = start(config(vec![route(&[blue.addr], &[green.addr], 10_000)])).await;
    let client = client();
    for i in 0..20 {
        assert_eq!(get(&client, &running.url("/")).await.0, StatusCode::OK);
        let weights = Weights::with(Slot::Green, i % 2);
        running.proxy.set_weights("web", weights).unwrap();
        running
            .proxy
            .set_weights("web", Weights::all_to(Slot::Blue))
            .unwrap();
    }
    assert_eq!(running.proxy.generation(), 41);
    assert_eq!(blue.opened.load(Ordering::SeqCst), 1);
}

/// An endpoint change retires the old pool: its idle connection is closed, new requests go to the
/// new endpoint.
#[tokio::test]
async fn endpoint_change_closes_the_retired_pool() {
    let old = backend("blue").await;
    let new = backend("blue").await;
    let running = start(config(vec![route(&[old.addr], &[], 10_000)])).await;
    let client = client();
    assert_eq!(get(&client, &running.url("/")).await.0, StatusCode::OK);
    assert_eq!(old.closed.load(Ordering::SeqCst), 0);
    running
        .proxy
        .update(|routes| {
            routes[0].blue.endpoints = vec![new.addr];
            Ok(())
        })
        .unwrap();
    assert_eq!(get(&client, &running.url("/")).await.0, StatusCode::OK);
    assert_eq!(new.hits.load(Ordering::SeqCst), 1);
    for _ in 0..100 {
        if old.closed.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(old.closed.load(Ordering::SeqCst), 1);
    assert_eq!(old.hits.load(Ordering::SeqCst), 1);
}
