//! Load that keeps a record of every request: when it started and ended, who answered (`X-Pool`,
//! `X-Instance`, `X-Version`) or how it failed. For scenarios that check *when* traffic moved, the
//! share of each instance, or the split within a time window. Keep-alive HTTP/1.1 connections at a
//! steady total rate, optionally short connections (one request each), or a fixed number of requests
//! sent back to back ([`burst`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// What to send.
#[derive(Clone, Debug)]
pub struct TraceConfig {
    /// The proxy's listen address.
    pub target: SocketAddr,
    /// Keep-alive HTTP/1.1 connections, one request in flight each. Default 8.
    pub conns: usize,
    /// Total requests per second over the keep-alive connections. Default 150.
    pub rate: u32,
    /// New connections per second, each sending one request and closing. Default 0.
    pub short_per_second: u32,
    /// Request path. Default `/api`.
    pub path: String,
    /// One request's limit; past it the request counts as failed. Default 5 s.
    pub request_timeout: Duration,
    /// The load stops by itself after this long, so that a stuck test ends. Default 60 s.
    pub max_duration: Duration,
}

impl TraceConfig {
    /// The defaults documented on the fields, sent to `target`.
    pub fn new(target: SocketAddr) -> TraceConfig {
        TraceConfig {
            target,
            conns: 8,
            rate: 150,
            short_per_second: 0,
            path: "/api".into(),
            request_timeout: Duration::from_secs(5),
            max_duration: Duration::from_secs(60),
        }
    }
}

/// Who answered a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// `X-Pool` (`"none"` without it, e.g. when the proxy answered itself).
    pub pool: String,
    /// `X-Instance` (`"none"` without it).
    pub instance: String,
    /// `X-Version` (`"none"` without it).
    pub version: String,
}

/// One request as the client saw it.
#[derive(Clone, Debug)]
pub struct Record {
    /// When the client began the request (before connecting, for a new connection).
    pub started: Instant,
    /// [`Record::started`] on the wall clock, to compare with event times and other processes.
    pub started_wall: SystemTime,
    /// When the response body was read to its end, or the request failed.
    pub finished: Instant,
    /// [`Record::finished`] on the wall clock.
    pub finished_wall: SystemTime,
    /// Whether it was sent on a short connection (one request, then closed).
    pub short: bool,
    /// The answer, or the transport failure as text.
    pub outcome: Result<Answer, String>,
}

impl Record {
    /// The answering pool, when there was an answer.
    pub fn pool(&self) -> Option<&str> {
        self.outcome.as_ref().ok().map(|a| a.pool.as_str())
    }

    /// The answering instance, when there was an answer.
    pub fn instance(&self) -> Option<&str> {
        self.outcome.as_ref().ok().map(|a| a.instance.as_str())
    }

    /// A client-visible error: a transport failure or a status other than 2xx.
    pub fn is_error(&self) -> bool {
        !matches!(&self.outcome, Ok(a) if (200..300).contains(&a.status))
    }
}

/// Records that are client-visible errors.
pub fn errors(records: &[Record]) -> Vec<&Record> {
    records.iter().filter(|r| r.is_error()).collect()
}

/// Panics naming how many of `records` failed and the first of them, if any did.
#[track_caller]
pub fn assert_no_errors(records: &[Record]) {
    let failed = errors(records);
    assert!(
        failed.is_empty(),
        "{} client errors, e.g. {:?}",
        failed.len(),
        failed.first()
    );
}

/// Records answered by `pool`.
pub fn from_pool(records: &[Record], pool: &str) -> usize {
    records.iter().filter(|r| r.pool() == Some(pool)).count()
}

/// A running traced load; dropping it stops the load (without waiting).
pub struct Trace {
    records: Arc<Mutex<Vec<Record>>>,
    connects: Arc<AtomicU64>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Trace {
    /// Starts the keep-alive connections (and short connections) of `config`.
    pub fn start(config: TraceConfig) -> Trace {
        let records = Arc::new(Mutex::new(Vec::new()));
        let connects = Arc::new(AtomicU64::new(0));
        let (stop, rx) = watch::channel(false);
        let config = Arc::new(config);
        let conns = config.conns.max(1);
        let period = Duration::from_secs_f64(conns as f64 / f64::from(config.rate.max(1)));
        let mut tasks: Vec<_> = (0..conns)
            .map(|_| {
                let client = Client::new(&config, &records, &connects);
                tokio::spawn(client.keep_alive(period, rx.clone()))
            })
            .collect();
        if config.short_per_second > 0 {
            let period = Duration::from_secs_f64(1.0 / f64::from(config.short_per_second));
            let client = Client::new(&config, &records, &Arc::new(AtomicU64::new(0)));
            tasks.push(tokio::spawn(client.short(period, rx.clone())));
        }
        Trace {
            records,
            connects,
            stop,
            tasks,
        }
    }

    /// A copy of the records so far, in completion order.
    pub fn records(&self) -> Vec<Record> {
        lock(&self.records).clone()
    }

    /// Requests finished so far.
    pub fn len(&self) -> usize {
        lock(&self.records).len()
    }

    /// Connections the keep-alive clients opened: one each unless a connection failed or closed.
    pub fn keep_alive_connects(&self) -> u64 {
        self.connects.load(Ordering::Relaxed)
    }

    /// Waits until at least `n` more requests than now have finished.
    ///
    /// # Panics
    /// After `timeout`.
    pub async fn wait_requests(&self, n: usize, timeout: Duration) {
        let target = self.len() + n;
        let what = format!("{n} more traced requests");
        super::wait_until(timeout, &what, || async {
            (self.len() >= target).then_some(())
        })
        .await;
    }

    /// Stops sending, waits for the requests in flight, and returns every record.
    pub async fn stop(mut self) -> Vec<Record> {
        let _ = self.stop.send(true);
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
        self.records()
    }
}

impl Drop for Trace {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Sends `total` requests to `config.path` over `config.conns` keep-alive connections, back to back
/// (no rate limit), and returns their records.
pub async fn burst(config: &TraceConfig, total: usize) -> Vec<Record> {
    let records = Arc::new(Mutex::new(Vec::with_capacity(total)));
    let config = Arc::new(config.clone());
    let conns = config.conns.max(1);
    let mut set = JoinSet::new();
    for i in 0..conns {
        let share = total / conns + usize::from(i < total % conns);
        let client = Client::new(&config, &records, &Arc::new(AtomicU64::new(0)));
        set.spawn(async move {
            let mut conn = None;
            for _ in 0..share {
                client.one(&mut conn).await;
            }
        });
    }
    while set.join_next().await.is_some() {}
    let records = lock(&records).clone();
    records
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One client task's view of the shared configuration and record list.
#[derive(Clone)]
struct Client {
    config: Arc<TraceConfig>,
    records: Arc<Mutex<Vec<Record>>>,
    connects: Arc<AtomicU64>,
}

type Sender = http1::SendRequest<Empty<Bytes>>;

impl Client {
    fn new(
        config: &Arc<TraceConfig>,
        records: &Arc<Mutex<Vec<Record>>>,
        connects: &Arc<AtomicU64>,
    ) -> Client {
        Client {
            config: config.clone(),
            records: records.clone(),
            connects: connects.clone(),
        }
    }

    /// One keep-alive connection at one request per `period`, re-opened after a failure.
    async fn keep_alive(self, period: Duration, mut stop: watch::Receiver<bool>) {
        let deadline = tokio::time::sleep(self.config.max_duration);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut conn = None;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.changed() => return,
                () = &mut deadline => return,
            }
            self.one(&mut conn).await;
        }
    }

    /// One new connection per `period`, each carrying one request (`Connection: close`).
    async fn short(self, period: Duration, mut stop: watch::Receiver<bool>) {
        let deadline = tokio::time::sleep(self.config.max_duration);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut set = JoinSet::new();
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.changed() => break,
                () = &mut deadline => break,
            }
            let client = self.clone();
            set.spawn(async move {
                let (started, started_wall) = (Instant::now(), SystemTime::now());
                let mut conn = None;
                let outcome = client.timed(&mut conn, true).await;
                client.record(started, started_wall, true, outcome);
            });
            while set.try_join_next().is_some() {}
        }
        while set.join_next().await.is_some() {}
    }

    /// Sends one request on `conn` (opening it if needed) and records it; a failure drops `conn`.
    async fn one(&self, conn: &mut Option<Sender>) {
        let (started, started_wall) = (Instant::now(), SystemTime::now());
        let outcome = self.timed(conn, false).await;
        if outcome.is_err() {
            *conn = None;
        }
        self.record(started, started_wall, false, outcome);
    }

    async fn timed(&self, conn: &mut Option<Sender>, close: bool) -> Result<Answer, String> {
        let limit = self.config.request_timeout;
        tokio::time::timeout(limit, self.exchange(conn, close))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {limit:?}")))
    }

    async fn exchange(&self, conn: &mut Option<Sender>, close: bool) -> Result<Answer, String> {
        if conn.is_none() {
            *conn = Some(self.connect().await?);
        }
        let Some(tx) = conn.as_mut() else {
            return Err("no connection".into());
        };
        tx.ready().await.map_err(|e| format!("not ready: {e}"))?;
        let mut request = http::Request::get(self.config.path.as_str())
            .header(http::header::HOST, self.config.target.to_string());
        if close {
            request = request.header(http::header::CONNECTION, "close");
        }
        let request = request.body(Empty::new()).map_err(|e| e.to_string())?;
        let response = tx
            .send_request(request)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let header = |name: &str| {
            let value = response.headers().get(name).and_then(|v| v.to_str().ok());
            value.unwrap_or("none").to_owned()
        };
        let answer = Answer {
            status: response.status().as_u16(),
            pool: header("x-pool"),
            instance: header("x-instance"),
            version: header("x-version"),
        };
        let body = response.into_body().collect().await;
        body.map_err(|e| format!("body: {e}"))?;
        Ok(answer)
    }

    async fn connect(&self) -> Result<Sender, String> {
        let stream = tokio::net::TcpStream::connect(self.config.target)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (tx, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(conn);
        self.connects.fetch_add(1, Ordering::Relaxed);
        Ok(tx)
    }

    fn record(
        &self,
        started: Instant,
        started_wall: SystemTime,
        short: bool,
        outcome: Result<Answer, String>,
    ) {
        let record = Record {
            started,
            started_wall,
            finished: Instant::now(),
            finished_wall: SystemTime::now(),
            short,
            outcome,
        };
        lock(&self.records).push(record);
    }
}
