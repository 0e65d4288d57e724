//! A preview at 100 % whose endpoints all die, with the active slot (blue, weight 0) healthy
//! (trial 8, H2): every request ends at blue, none gets a 502 or a 503 "no endpoint". README: a
//! request whose connect failed is retried once on another endpoint or the other backend; a
//! backend with no endpoint up sends its requests to the other backend if that has weight or is
//! the active slot.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::support::*;

/// A backend that can be killed: its listener and every connection it accepted close at once
/// (as a `kill -9` of the process would leave them), so new connects are refused.
pub(crate) struct Killable {
    pub(crate) addr: SocketAddr,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Killable {
    pub(crate) async fn start(pool: &'static str) -> Killable {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let registry = Arc::clone(&tasks);
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let service = service_fn(move |_request| async move {
                    let mut response = http::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from_static(pool.as_bytes()),
                    ));
                    response
                        .headers_mut()
                        .insert("x-pool", pool.parse().unwrap());
                    Ok::<_, std::convert::Infallible>(response)
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                let task = tokio::spawn(async move {
                    let _ = connection.await;
                });
                registry.lock().unwrap().push(task);
            }
        });
        tasks.lock().unwrap().push(accept);
        Killable { addr, tasks }
    }

    /// Closes the listener and every connection.
    pub(crate) async fn kill(&self) {
        let tasks: Vec<_> = self.tasks.lock().unwrap().drain(..).collect();
        for task in tasks {
            task.abort();
            let _ = task.await;
        }
    }
}

/// Green at 100 % (blue active at weight 0, healthy); both green endpoints killed together under
/// keep-alive GET load from four clients: no client error, and blue serves from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preview_at_100_percent_losing_every_endpoint_sends_its_requests_to_the_active_slot() {
    let blue = backend("blue").await;
    let green = [
        Killable::start("green").await,
        Killable::start("green").await,
    ];
    let web = route(&[blue.addr], &[green[0].addr, green[1].addr], 0);
    let running = start(config(vec![web])).await;
    let url = running.url("/g");
    let stop = Arc::new(AtomicBool::new(false));
    let killed = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (url, stop, killed) = (url.clone(), Arc::clone(&stop), Arc::clone(&killed));
        clients.push(tokio::spawn(async move {
            let client = client();
            // (status, pool, sent after the kill), and each failure's body and duration
            let mut answers = Vec::new();
            let mut failures = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let after = killed.load(Ordering::SeqCst);
                let sent = tokio::time::Instant::now();
                let (status, headers, body) = get(&client, &url).await;
                let pool = headers
                    .get("x-pool")
                    .map(|p| p.to_str().unwrap().to_owned());
                if !status.is_success() {
                    failures.push(format!("{status} after {:?}: {body}", sent.elapsed()));
                }
                answers.push((status, pool, after));
            }
            (answers, failures)
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    killed.store(true, Ordering::SeqCst);
    tokio::join!(green[0].kill(), green[1].kill());
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let mut answers = Vec::new();
    let mut failures = Vec::new();
    for client in clients {
        let (a, f) = client.await.unwrap();
        answers.extend(a);
        failures.extend(f);
    }
    let failed: Vec<_> = answers.iter().filter(|(s, _, _)| !s.is_success()).collect();
    let after = answers.iter().filter(|(_, _, after)| *after).count();
    println!(
        "OVERFLOW requests={} after_kill={after} failed={}",
        answers.len(),
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {failures:?}",
        failed.len(),
        answers.len()
    );
    let from_green_before = answers
        .iter()
        .filter(|(_, pool, after)| !after && pool.as_deref() == Some("green"))
        .count();
    assert!(from_green_before > 0, "green never served: {answers:?}");
    let from_blue_after = answers
        .iter()
        .filter(|(_, pool, after)| *after && pool.as_deref() == Some("blue"))
        .count();
    assert!(from_blue_after > 0, "blue never took over: {answers:?}");
}

/// The same in its simplest form, one request at a time: green at 100 % with one endpoint that
/// refuses connections; each GET (and a POST with a body) is answered by blue, the active slot,
/// while green's endpoint is ejected or not.
#[tokio::test]
async fn a_refused_connect_at_a_preview_at_100_percent_is_retried_on_the_active_slot() {
    let blue = backend("blue").await;
    let dead = refused_addr().await;
    let running = start(config(vec![route(&[blue.addr], &[dead], 0)])).await;
    let client = client();
    for i in 0..10 {
        let (status, headers, _) = get(&client, &running.url(&format!("/t{i}"))).await;
        assert_eq!(status, http::StatusCode::OK, "request {i}");
        assert_eq!(headers["x-pool"], "blue", "request {i}");
    }
    let request = http::Request::post(running.url("/upload"))
        .body(http_body_util::Full::new(bytes::Bytes::from_static(b"abc")))
        .unwrap();
    let (status, _, body) = send(&client, request).await;
    assert_eq!((status, body.as_str()), (http::StatusCode::OK, "3"));
}
