//! The demo's load generator: keep-alive HTTP/1.1 and HTTP/2 (prior knowledge) connections sending
//! `GET /` at a steady total rate, counting answers by the `X-Version` header and every client-visible
//! error (non-2xx status or transport failure).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Serialize;
use tokio::sync::watch;

/// What the load generator saw so far.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LoadStats {
    /// Successful (2xx) responses by the `X-Version` header's value.
    pub by_version: BTreeMap<String, u64>,
    /// Non-2xx responses that carried an `X-Version` header (a version answered, with an error),
    /// by its value; the proxy's own answers carry none and are counted in `bad_status` only.
    pub errors_by_version: BTreeMap<String, u64>,
    /// Responses with a non-2xx status, by status code.
    pub bad_status: BTreeMap<u16, u64>,
    /// Requests that failed without a response (connect, reset, protocol).
    pub transport_errors: u64,
}

impl LoadStats {
    /// Every request answered or failed.
    pub fn total(&self) -> u64 {
        self.by_version.values().sum::<u64>() + self.errors()
    }

    /// Client-visible errors: non-2xx responses plus transport failures.
    pub fn errors(&self) -> u64 {
        self.bad_status.values().sum::<u64>() + self.transport_errors
    }
}

/// A running load generator.
pub struct Load {
    stats: Arc<Mutex<LoadStats>>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Which protocol a load connection speaks.
#[derive(Clone, Copy, Debug)]
enum Proto {
    Http1,
    Http2,
}

impl Load {
    /// Starts `h1` HTTP/1.1 and `h2` HTTP/2 connections to `target`, together sending about `rate`
    /// requests per second.
    pub fn start(target: SocketAddr, h1: usize, h2: usize, rate: u32) -> Load {
        let stats = Arc::new(Mutex::new(LoadStats::default()));
        let (stop, rx) = watch::channel(false);
        let conns = (h1 + h2).max(1);
        let period = Duration::from_secs_f64(conns as f64 / f64::from(rate.max(1)));
        let protos =
            std::iter::repeat_n(Proto::Http1, h1).chain(std::iter::repeat_n(Proto::Http2, h2));
        let tasks = protos
            .map(|proto| {
                let (stats, rx) = (stats.clone(), rx.clone());
                tokio::spawn(worker(target, proto, period, stats, rx))
            })
            .collect();
        Load { stats, stop, tasks }
    }

    /// A copy of the counts so far.
    pub fn stats(&self) -> LoadStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Stops sending, waits for requests in flight, and returns the final counts.
    pub async fn stop(mut self) -> LoadStats {
        let _ = self.stop.send(true);
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
        self.stats()
    }
}

type Sender = Box<
    dyn FnMut(
            http::Request<Empty<Bytes>>,
        ) -> futures_util::future::BoxFuture<
            'static,
            hyper::Result<http::Response<hyper::body::Incoming>>,
        > + Send,
>;

async fn connect(target: SocketAddr, proto: Proto) -> Option<Sender> {
    let stream = tokio::net::TcpStream::connect(target).await.ok()?;
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(stream);
    match proto {
        Proto::Http1 => {
            let (mut tx, conn) = hyper::client::conn::http1::handshake(io).await.ok()?;
            tokio::spawn(conn);
            Some(Box::new(move |req| Box::pin(tx.send_request(req))))
        }
        Proto::Http2 => {
            let (tx, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .ok()?;
            tokio::spawn(conn);
            Some(Box::new(move |req| {
                let mut tx = tx.clone();
                Box::pin(async move { tx.send_request(req).await })
            }))
        }
    }
}

async fn worker(
    target: SocketAddr,
    proto: Proto,
    period: Duration,
    stats: Arc<Mutex<LoadStats>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sender: Option<Sender> = None;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        if sender.is_none() {
            sender = connect(target, proto).await;
        }
        let outcome = match sender.as_mut() {
            Some(send) => exchange(send, target, proto).await,
            None => Err(()),
        };
        let Ok(mut s) = stats.lock() else { return };
        match outcome {
            Ok((status, version)) if status.is_success() => {
                let version = version.unwrap_or_else(|| "unknown".to_owned());
                *s.by_version.entry(version).or_default() += 1
            }
            Ok((status, version)) => {
                *s.bad_status.entry(status.as_u16()).or_default() += 1;
                if let Some(version) = version {
                    *s.errors_by_version.entry(version).or_default() += 1;
                }
            }
            Err(()) => {
                s.transport_errors += 1;
                sender = None;
            }
        }
    }
}

async fn exchange(
    send: &mut Sender,
    target: SocketAddr,
    proto: Proto,
) -> Result<(http::StatusCode, Option<String>), ()> {
    // HTTP/1.1 sends origin-form with a Host header; HTTP/2 carries the authority in the URI.
    let request = match proto {
        Proto::Http1 => http::Request::get("/").header(http::header::HOST, target.to_string()),
        Proto::Http2 => http::Request::get(format!("http://{target}/")),
    };
    let request = request.body(Empty::<Bytes>::new()).map_err(|_| ())?;
    let response = send(request).await.map_err(|_| ())?;
    let status = response.status();
    let version = response
        .headers()
        .get("x-version")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    response.into_body().collect().await.map_err(|_| ())?;
    Ok((status, version))
}
