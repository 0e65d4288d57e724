//! A load generator: keep-alive HTTP/1.1 and HTTP/2 (prior knowledge) connections sending `GET` at a
//! steady total rate, one request in flight per connection, counting answers by `X-Version` and
//! `X-Pool`, non-2xx statuses and transport errors. A failed connection is counted and re-opened.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::watch;

/// What to send.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// The proxy's listen address.
    pub target: SocketAddr,
    /// HTTP/1.1 keep-alive connections. Default 4.
    pub h1: usize,
    /// HTTP/2 prior-knowledge connections. Default 2.
    pub h2: usize,
    /// Total requests per second over all connections. Default 150.
    pub rate: u32,
    /// Request path. Default `/`.
    pub path: String,
    /// One request's limit; past it the request counts as a transport error. Default 5 s.
    pub request_timeout: Duration,
    /// The load stops by itself after this long, so that a stuck test ends. Default 60 s.
    pub max_duration: Duration,
}

impl LoadConfig {
    /// The defaults documented on the fields, sent to `target`.
    pub fn new(target: SocketAddr) -> LoadConfig {
        LoadConfig {
            target,
            h1: 4,
            h2: 2,
            rate: 150,
            path: "/".into(),
            request_timeout: Duration::from_secs(5),
            max_duration: Duration::from_secs(60),
        }
    }
}

/// What the load saw.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadReport {
    /// 2xx responses by `X-Version` (`"none"` without the header).
    pub ok: BTreeMap<String, u64>,
    /// Every response by `X-Pool` (`"none"` without the header).
    pub pools: BTreeMap<String, u64>,
    /// Non-2xx responses by status code and `X-Version` (`"none"` when the proxy answered itself).
    pub bad_status: BTreeMap<(u16, String), u64>,
    /// Requests that got no response: connect, reset, protocol error or timeout.
    pub transport_errors: u64,
    /// The first few transport errors, for failure messages.
    pub error_samples: Vec<String>,
    /// Requests answered or failed, by protocol (`"h1"`, `"h2"`).
    pub by_proto: BTreeMap<String, u64>,
    /// When each client-visible error (non-2xx or transport error) was recorded, in order.
    pub error_times: Vec<tokio::time::Instant>,
    /// For each error of `error_times`, in the same order, when the connection it happened on was
    /// opened (for a failed connect, when it was tried): an error on a connection opened before a
    /// fault is the fault's, however late the client found the connection dead.
    pub error_connections: Vec<tokio::time::Instant>,
}

impl LoadReport {
    /// Requests answered or failed.
    pub fn total(&self) -> u64 {
        self.by_proto.values().sum()
    }

    /// Non-2xx responses.
    pub fn non_2xx(&self) -> u64 {
        self.bad_status.values().sum()
    }

    /// Client-visible errors: non-2xx responses plus transport errors.
    pub fn errors(&self) -> u64 {
        self.non_2xx() + self.transport_errors
    }

    /// 2xx responses from `version`.
    pub fn ok_from(&self, version: &str) -> u64 {
        self.ok.get(version).copied().unwrap_or(0)
    }

    /// The counts since `earlier` (a report of the same load taken before).
    pub fn since(&self, earlier: &LoadReport) -> LoadReport {
        fn diff<K: Ord + Clone>(a: &BTreeMap<K, u64>, b: &BTreeMap<K, u64>) -> BTreeMap<K, u64> {
            a.iter()
                .map(|(k, v)| (k.clone(), v - b.get(k).copied().unwrap_or(0)))
                .filter(|(_, v)| *v > 0)
                .collect()
        }
        LoadReport {
            ok: diff(&self.ok, &earlier.ok),
            pools: diff(&self.pools, &earlier.pools),
            bad_status: diff(&self.bad_status, &earlier.bad_status),
            transport_errors: self.transport_errors - earlier.transport_errors,
            error_samples: self.error_samples[earlier.error_samples.len()..].to_vec(),
            by_proto: diff(&self.by_proto, &earlier.by_proto),
            error_times: self.error_times[earlier.error_times.len()..].to_vec(),
            error_connections: self.error_connections[earlier.error_connections.len()..].to_vec(),
        }
    }

    /// How long after `fault` the last client-visible error was recorded: zero when none was
    /// recorded after it (the load never noticed).
    pub fn recovered_after(&self, fault: tokio::time::Instant) -> Duration {
        self.error_times.last().map_or(Duration::ZERO, |&last| {
            last.saturating_duration_since(fault)
        })
    }

    /// One line for a test's output: requests by protocol, errors and their kinds.
    pub fn summary(&self) -> String {
        format!(
            "requests {} (h1 {}, h2 {}), client-visible errors {} (non-2xx {:?}, transport {}{})",
            self.total(),
            self.by_proto.get("h1").copied().unwrap_or(0),
            self.by_proto.get("h2").copied().unwrap_or(0),
            self.errors(),
            self.bad_status,
            self.transport_errors,
            match self.error_samples.first() {
                Some(sample) => format!(", e.g. {sample}"),
                None => String::new(),
            }
        )
    }
}

/// A running load generator; dropping it stops the load (without waiting).
pub struct Load {
    report: Arc<Mutex<LoadReport>>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts the connections of `config`.
    pub fn start(config: LoadConfig) -> Load {
        let report = Arc::new(Mutex::new(LoadReport::default()));
        let (stop, rx) = watch::channel(false);
        let conns = (config.h1 + config.h2).max(1);
        let period = Duration::from_secs_f64(conns as f64 / f64::from(config.rate.max(1)));
        let config = Arc::new(config);
        let protos = std::iter::repeat_n(Proto::H1, config.h1)
            .chain(std::iter::repeat_n(Proto::H2, config.h2));
        let tasks = protos
            .map(|proto| {
                let worker = Worker {
                    config: config.clone(),
                    proto,
                    period,
                    report: report.clone(),
                };
                tokio::spawn(worker.run(rx.clone()))
            })
            .collect();
        Load {
            report,
            stop,
            tasks,
        }
    }

    /// A copy of the counts so far.
    pub fn report(&self) -> LoadReport {
        self.report
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until at least `n` more requests than now have been answered or failed.
    ///
    /// # Panics
    /// After `timeout`.
    pub async fn wait_requests(&self, n: u64, timeout: Duration) {
        let target = self.report().total() + n;
        let what = format!("{n} more load requests");
        super::wait_until(timeout, &what, || async {
            (self.report().total() >= target).then_some(())
        })
        .await;
    }

    /// Stops sending, waits for requests in flight, and returns the final counts.
    pub async fn stop(mut self) -> LoadReport {
        let _ = self.stop.send(true);
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
        self.report()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

#[derive(Clone, Copy, Debug)]
enum Proto {
    H1,
    H2,
}

enum Conn {
    H1(http1::SendRequest<Empty<Bytes>>),
    H2(http2::SendRequest<Empty<Bytes>>),
}

struct Worker {
    config: Arc<LoadConfig>,
    proto: Proto,
    period: Duration,
    report: Arc<Mutex<LoadReport>>,
}

/// One answered request: status, `X-Version`, `X-Pool`.
type Answer = (u16, String, String);

impl Worker {
    async fn run(self, mut stop: watch::Receiver<bool>) {
        let deadline = tokio::time::sleep(self.config.max_duration);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(self.period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut conn = None;
        let mut opened = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.changed() => return,
                () = &mut deadline => return,
            }
            if conn.is_none() {
                opened = tokio::time::Instant::now();
            }
            let outcome =
                tokio::time::timeout(self.config.request_timeout, self.exchange(&mut conn))
                    .await
                    .unwrap_or_else(|_| Err("request timed out".into()));
            if outcome.is_err() {
                conn = None;
            }
            self.record(outcome, opened);
        }
    }

    async fn exchange(&self, conn: &mut Option<Conn>) -> Result<Answer, String> {
        if conn.is_none() {
            *conn = Some(self.connect().await?);
        }
        let target = self.config.target;
        let path = &self.config.path;
        let response = match conn.as_mut() {
            Some(Conn::H1(tx)) => {
                tx.ready().await.map_err(|e| format!("h1 not ready: {e}"))?;
                let request = http::Request::get(path.as_str())
                    .header(http::header::HOST, target.to_string());
                tx.send_request(request.body(Empty::new()).map_err(|e| e.to_string())?)
                    .await
            }
            Some(Conn::H2(tx)) => {
                tx.ready().await.map_err(|e| format!("h2 not ready: {e}"))?;
                let request = http::Request::get(format!("http://{target}{path}"));
                tx.send_request(request.body(Empty::new()).map_err(|e| e.to_string())?)
                    .await
            }
            None => unreachable!("connected above"),
        }
        .map_err(|e| format!("{:?} request: {e}", self.proto))?;
        let header = |name: &str| {
            let value = response.headers().get(name).and_then(|v| v.to_str().ok());
            value.unwrap_or("none").to_owned()
        };
        let answer = (
            response.status().as_u16(),
            header("x-version"),
            header("x-pool"),
        );
        let body = response.into_body().collect().await;
        body.map_err(|e| format!("{:?} body: {e}", self.proto))?;
        Ok(answer)
    }

    async fn connect(&self) -> Result<Conn, String> {
        let stream = tokio::net::TcpStream::connect(self.config.target)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(stream);
        match self.proto {
            Proto::H1 => {
                let (tx, conn) = http1::handshake(io)
                    .await
                    .map_err(|e| format!("h1 handshake: {e}"))?;
                tokio::spawn(conn);
                Ok(Conn::H1(tx))
            }
            Proto::H2 => {
                let (tx, conn) = http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(|e| format!("h2 handshake: {e}"))?;
                tokio::spawn(conn);
                Ok(Conn::H2(tx))
            }
        }
    }

    /// Counts `outcome`, of a request on a connection opened at `opened`.
    fn record(&self, outcome: Result<Answer, String>, opened: tokio::time::Instant) {
        let mut report = self.report.lock().unwrap_or_else(PoisonError::into_inner);
        let proto = match self.proto {
            Proto::H1 => "h1",
            Proto::H2 => "h2",
        };
        *report.by_proto.entry(proto.into()).or_default() += 1;
        let failed = !matches!(&outcome, Ok((status, _, _)) if (200..300).contains(status));
        if failed {
            report.error_times.push(tokio::time::Instant::now());
            report.error_connections.push(opened);
        }
        match outcome {
            Ok((status, version, pool)) => {
                *report.pools.entry(pool).or_default() += 1;
                if (200..300).contains(&status) {
                    *report.ok.entry(version).or_default() += 1;
                } else {
                    *report.bad_status.entry((status, version)).or_default() += 1;
                }
            }
            Err(error) => {
                report.transport_errors += 1;
                if report.error_samples.len() < 10 {
                    report.error_samples.push(error);
                }
            }
        }
    }
}
