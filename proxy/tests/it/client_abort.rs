//! A client that goes away while its request waits for the response head (HTTP/1.1 FIN or RST,
//! HTTP/2 stream reset or connection close): the proxy drops the upstream exchange (the backend
//! sees its connection closed), the in-flight count and the unanswered slot go at once, and the
//! abort is counted in `crossfade_client_aborts_total`, never as the backend's error; while a
//! keep-alive client that waits for a slow answer and sends its next request is no abort.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use crate::limits::metric;
use crate::support::{backend, config, route, start, Running};

/// A backend below HTTP that reads each request head and never answers: it counts the heads it
/// received and the connections that then closed (EOF or reset), as the proxy's side ended them.
pub(crate) struct Hanging {
    pub(crate) addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
    event: Arc<Notify>,
}

impl Hanging {
    pub(crate) async fn start() -> Hanging {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (requests, closed) = (Arc::<AtomicUsize>::default(), Arc::<AtomicUsize>::default());
        let event = Arc::new(Notify::new());
        let (r, c, e) = (requests.clone(), closed.clone(), event.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (r, c, e) = (r.clone(), c.clone(), e.clone());
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    let mut buf = [0u8; 4096];
                    loop {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                let before = heads(&seen);
                                seen.extend_from_slice(&buf[..n]);
                                r.fetch_add(heads(&seen) - before, Ordering::SeqCst);
                                e.notify_waiters();
                            }
                        }
                    }
                    c.fetch_add(1, Ordering::SeqCst);
                    e.notify_waiters();
                });
            }
        });
        Hanging {
            addr,
            requests,
            closed,
            event,
        }
    }

    /// Waits until `what` holds, for at most `bound`; panics naming `why` otherwise.
    async fn until(&self, bound: Duration, why: &str, what: impl Fn(&Hanging) -> bool) {
        let deadline = tokio::time::Instant::now() + bound;
        while !what(self) {
            let notified = self.event.notified();
            if what(self) {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                assert!(what(self), "{why} within {bound:?}");
            }
        }
    }

    pub(crate) async fn until_requests(&self, n: usize) {
        let why = format!("{n} request(s) reached the backend");
        self.until(Duration::from_secs(5), &why, |h| {
            h.requests.load(Ordering::SeqCst) >= n
        })
        .await;
    }

    /// The backend's connections closed by the proxy: promptly, far below the 30 s response
    /// timeout the proxy would otherwise wait.
    pub(crate) async fn until_closed(&self, n: usize) {
        let why = format!("{n} upstream connection(s) closed by the proxy");
        self.until(Duration::from_secs(3), &why, |h| {
            h.closed.load(Ordering::SeqCst) >= n
        })
        .await;
    }
}

/// Request heads in `bytes` (each ends with an empty line).
fn heads(bytes: &[u8]) -> usize {
    bytes.windows(4).filter(|w| w == b"\r\n\r\n").count()
}

async fn proxy_to(blue: SocketAddr) -> Running {
    start(config(vec![route(&[blue], &[], 10_000)])).await
}

/// A proxy serving the one route `web`, its access log in a file of its own (`log`), its drain
/// on a stop bounded by `drain_timeout` when given.
struct Logged {
    running: Running,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn logged(web: crossfade_proxy::RouteConfig, drain_timeout: Option<Duration>) -> Logged {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let mut config = config(vec![web]);
    config.access_log = crossfade_proxy::AccessLogConfig::File(log.clone());
    if let Some(drain_timeout) = drain_timeout {
        config.drain_timeout = drain_timeout;
    }
    let running = start(config).await;
    Logged {
        running,
        log,
        _dir: dir,
    }
}

/// Stops `running` and waits for its end (its drain and the access log's last flush).
async fn stop(running: &mut Running) {
    running.stop();
    let stopped = tokio::time::timeout(Duration::from_secs(10), &mut running.task).await;
    stopped.expect("stopped").unwrap().unwrap();
}

/// `line` is a request whose client went away while it waited on `endpoint` of `web`'s blue
/// backend, its `attempts`-th attempt: logged as nginx logs it, 499 `client_closed`.
fn assert_client_closed(line: &serde_json::Value, endpoint: SocketAddr, attempts: u8) {
    assert_eq!(line["status"], 499, "{line}");
    assert_eq!(line["error"], "client_closed", "{line}");
    assert_eq!(line["completed"], false, "{line}");
    assert_eq!(line["route"], "web", "{line}");
    assert_eq!(line["backend"], "blue", "{line}");
    assert_eq!(line["endpoint"], endpoint.to_string(), "{line}");
    assert_eq!(line["attempts"], attempts, "{line}");
}

pub(crate) const IN_FLIGHT: &str = "crossfade_in_flight_requests{route=\"web\",backend=\"blue\"}";
pub(crate) const ABORTS: &str = "crossfade_client_aborts_total{route=\"web\",backend=\"blue\"}";
const ABORT_WAITS: &str =
    "crossfade_client_abort_wait_seconds_count{route=\"web\",backend=\"blue\"}";
const UNANSWERED: &str =
    "crossfade_unanswered_requests{route=\"web\",backend=\"blue\",longer_than=\"0\"}";
const ERRORS: &str = "crossfade_backend_errors_total{route=\"web\",backend=\"blue\"}";

/// The counts after `aborts` aborts: nothing in flight or unanswered, no backend error.
async fn assert_released(running: &Running, aborts: f64) {
    // The abort is counted as the request's future is dropped, just before the upstream
    // connection closes: give a scrape a moment after the close.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while metric(running, ABORTS).await != Some(aborts) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(metric(running, ABORTS).await, Some(aborts));
    assert_eq!(metric(running, ABORT_WAITS).await, Some(aborts));
    assert_eq!(metric(running, IN_FLIGHT).await, Some(0.0));
    assert_eq!(metric(running, UNANSWERED).await, Some(0.0));
    assert_eq!(metric(running, ERRORS).await, Some(0.0));
    let blue = crossfade_proxy::Slot::Blue;
    let snapshot = running.proxy.backend_stats("web", blue).unwrap();
    assert_eq!(snapshot.in_flight, 0);
    assert_eq!(snapshot.errors, 0);
    assert!(snapshot.unanswered.is_empty(), "{:?}", snapshot.unanswered);
    assert_eq!(snapshot.aborted.count(), aborts as u64);
}

/// An HTTP/1.1 client that sends a request and waits for its answer on a raw connection.
async fn waiting_client(running: &Running) -> TcpStream {
    let mut stream = TcpStream::connect(running.addr).await.unwrap();
    stream
        .write_all(b"GET /hang HTTP/1.1\r\nHost: shop.test\r\n\r\n")
        .await
        .unwrap();
    stream
}

#[tokio::test]
async fn a_client_that_closes_while_its_request_waits_ends_the_upstream_exchange() {
    let hanging = Hanging::start().await;
    let Logged { running, log, _dir } = logged(route(&[hanging.addr], &[], 10_000), None).await;
    let client = waiting_client(&running).await;
    hanging.until_requests(1).await;
    assert_eq!(metric(&running, IN_FLIGHT).await, Some(1.0));
    // close(): a FIN, the client's connection gone.
    drop(client);
    hanging.until_closed(1).await;
    assert_released(&running, 1.0).await;
    // Logged as nginx logs it: 499, nothing sent; where the request waited.
    let line = first_line(&log).await;
    assert_client_closed(&line, hanging.addr, 1);
    assert_eq!(line["path"], "/hang", "{line}");
    assert_eq!(line["response_bytes"], 0, "{line}");
}

/// A client that said `Connection: close` is watched for its end with a read into a small buffer
/// (vendor/hyper patch 19) while its request waits: it is found gone all the same.
#[tokio::test]
async fn a_client_that_said_close_and_closes_while_its_request_waits_ends_the_upstream_exchange() {
    let hanging = Hanging::start().await;
    let Logged { running, log, _dir } = logged(route(&[hanging.addr], &[], 10_000), None).await;
    let mut client = TcpStream::connect(running.addr).await.unwrap();
    client
        .write_all(b"GET /hang HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    hanging.until_requests(1).await;
    assert_eq!(metric(&running, IN_FLIGHT).await, Some(1.0));
    drop(client);
    hanging.until_closed(1).await;
    assert_released(&running, 1.0).await;
    let line = first_line(&log).await;
    assert_client_closed(&line, hanging.addr, 1);
    assert_eq!(line["response_bytes"], 0, "{line}");
}

/// An upgrade (WebSocket) request whose client goes away before its 101: logged 499 with the
/// route, backend and endpoint it was sent to, one attempt, and counted as a client abort like
/// any other request. Before, the line had `null` route, backend and endpoint and 0 attempts,
/// and `crossfade_client_aborts_total` stayed at 0 (the tunnel path took neither the line nor the
/// abort count).
#[tokio::test]
async fn an_upgrade_whose_client_goes_away_before_its_101_is_logged_and_counted_as_an_abort() {
    let hanging = Hanging::start().await;
    let Logged { running, log, _dir } = logged(route(&[hanging.addr], &[], 10_000), None).await;
    let mut client = TcpStream::connect(running.addr).await.unwrap();
    let upgrade = "GET /ws HTTP/1.1\r\nHost: shop.test\r\nConnection: Upgrade\r\n\
                   Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    client.write_all(upgrade.as_bytes()).await.unwrap();
    hanging.until_requests(1).await;
    assert_eq!(metric(&running, IN_FLIGHT).await, Some(1.0));
    drop(client);
    hanging.until_closed(1).await;
    assert_released(&running, 1.0).await;
    let line = first_line(&log).await;
    assert_client_closed(&line, hanging.addr, 1);
    assert_eq!(line["path"], "/ws", "{line}");
}

/// The first line of the access log at `log`, once written (the writer thread batches).
async fn first_line(log: &std::path::Path) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().next() {
            return serde_json::from_str(line).unwrap();
        }
        assert!(tokio::time::Instant::now() < deadline, "no access log line");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A request whose first attempt failed (green's connect refused) and whose retry waits on the
/// other backend (blue, the active slot at weight 0, backs the preview up): its client going away
/// is logged with the retry's backend and endpoint, 2 attempts.
#[tokio::test]
async fn a_client_that_goes_away_while_its_retry_waits_is_logged_with_the_retry() {
    let hanging = Hanging::start().await;
    let dead = crate::support::refused_addr().await;
    let Logged { running, log, _dir } = logged(route(&[hanging.addr], &[dead], 0), None).await;
    let client = waiting_client(&running).await;
    hanging.until_requests(1).await;
    drop(client);
    hanging.until_closed(1).await;
    assert_released(&running, 1.0).await;
    assert_client_closed(&first_line(&log).await, hanging.addr, 2);
}

#[tokio::test]
async fn a_client_that_resets_while_its_request_waits_ends_the_upstream_exchange() {
    let hanging = Hanging::start().await;
    let running = proxy_to(hanging.addr).await;
    let client = waiting_client(&running).await;
    hanging.until_requests(1).await;
    // SO_LINGER 0, then close: a RST.
    client.set_zero_linger().unwrap();
    drop(client);
    hanging.until_closed(1).await;
    assert_released(&running, 1.0).await;
}

/// `nc -N`, `socat`: the request, then `shutdown(SHUT_WR)`. Before an answer is written a FIN
/// cannot be told from a close, and is taken as the client gone, as nginx
/// (`proxy_ignore_client_abort off`), Envoy and Pingora do (see `server::http1_builder`).
#[tokio::test]
async fn a_client_that_half_closes_while_its_request_waits_is_taken_as_gone() {
    let hanging = Hanging::start().await;
    let running = proxy_to(hanging.addr).await;
    let mut client = waiting_client(&running).await;
    hanging.until_requests(1).await;
    client.shutdown().await.unwrap();
    hanging.until_closed(1).await;
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), client.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the proxy closed the client's connection");
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    assert_released(&running, 1.0).await;
}

/// `limits.http1_half_close: true` (nginx's `proxy_ignore_client_abort on`): the same half-closing
/// client gets its response, answered after its FIN reached the proxy, and no abort is counted
/// (with `false` it gets nothing: the test above).
#[tokio::test]
async fn with_http1_half_close_a_client_that_half_closes_while_its_request_waits_gets_its_response()
{
    let (backend, requested, answer) = gated_backend().await;
    let mut config = config(vec![route(&[backend], &[], 10_000)]);
    config.limits.http1_half_close = true;
    let running = start(config).await;
    let mut client = waiting_client(&running).await;
    let reached = tokio::time::timeout(Duration::from_secs(5), requested.notified());
    reached
        .await
        .expect("the request reached the backend within 5s");
    // On loopback the FIN is in the proxy's socket when `shutdown` returns: the answer comes after.
    client.shutdown().await.unwrap();
    answer.notify_one();
    let mut response = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut response));
    read.await.expect("the response within 5s").unwrap();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response:?}");
    assert!(response.ends_with("\r\n\r\nhello"), "{response:?}");
    assert_eq!(metric(&running, ABORTS).await, Some(0.0));
    assert_eq!(metric(&running, IN_FLIGHT).await, Some(0.0));
}

/// A backend that reads one request head per connection, tells `requested`, and answers `200
/// hello` once `answer` is notified.
async fn gated_backend() -> (SocketAddr, Arc<Notify>, Arc<Notify>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (requested, answer) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let (r, a) = (requested.clone(), answer.clone());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (r, a) = (r.clone(), a.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while heads(&seen) == 0 {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                r.notify_one();
                a.notified().await;
                let response = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
                let _ = stream.write_all(response).await;
            });
        }
    });
    (addr, requested, answer)
}

#[tokio::test]
async fn an_http2_client_that_resets_its_stream_ends_the_upstream_exchange() {
    let hanging = Hanging::start().await;
    let running = proxy_to(hanging.addr).await;
    let tcp = TcpStream::connect(running.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    let driving = tokio::spawn(connection);
    let request = Request::get(running.url("/hang"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let waiting = tokio::spawn(sender.send_request(request));
    hanging.until_requests(1).await;
    // Dropping the response future resets the stream (RST_STREAM CANCEL); the connection stays.
    waiting.abort();
    hanging.until_closed(1).await;
    assert_released(&running, 1.0).await;
    assert!(
        !driving.is_finished(),
        "the HTTP/2 connection is still open"
    );
}

#[tokio::test]
async fn an_http2_client_that_closes_its_connection_ends_the_upstream_exchange() {
    let hanging = Hanging::start().await;
    let running = proxy_to(hanging.addr).await;
    // The `h2` crate's connection owns the socket (hyper's client keeps it in a task of its own
    // while a `SendRequest` lives).
    let tcp = TcpStream::connect(running.addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    let driving = tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let request = Request::get(running.url("/hang")).body(()).unwrap();
    let (_response, _stream) = client.send_request(request, true).unwrap();
    hanging.until_requests(1).await;
    // The connection (and its socket) dropped: a FIN, no RST_STREAM, no GOAWAY.
    driving.abort();
    hanging.until_closed(1).await;
    assert_released(&running, 1.0).await;
}

/// A request whose body was read whole (hyper's connection is past the message then, as for a
/// bodiless one) is given up on the same way; its wait counts from its upload's end.
#[tokio::test]
async fn a_client_that_closes_after_sending_its_whole_body_ends_the_upstream_exchange() {
    let hanging = Hanging::start().await;
    let running = proxy_to(hanging.addr).await;
    let mut client = TcpStream::connect(running.addr).await.unwrap();
    client
        .write_all(b"POST /hang HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 5\r\n\r\nhello")
        .await
        .unwrap();
    hanging.until_requests(1).await;
    // The backend has the head; give the body its moment to be read to its end by the proxy.
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(client);
    hanging.until_closed(1).await;
    assert_released(&running, 1.0).await;
}

/// An h2c backend: the proxy resets the stream (the backend's service future is dropped), the
/// connection to the backend stays for other streams.
#[tokio::test]
async fn a_client_that_goes_away_cancels_its_h2c_stream_upstream() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (started, cancelled) = (Arc::<AtomicUsize>::default(), Arc::<AtomicUsize>::default());
    let event = Arc::new(Notify::new());
    let (s, c, e) = (started.clone(), cancelled.clone(), event.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (s, c, e) = (s.clone(), c.clone(), e.clone());
            let service = hyper::service::service_fn(move |_request| {
                s.fetch_add(1, Ordering::SeqCst);
                e.notify_waiters();
                let cancelled = Cancelled(c.clone(), e.clone());
                async move {
                    let _cancelled = cancelled;
                    std::future::pending::<()>().await;
                    Ok::<_, std::convert::Infallible>(http::Response::new(Empty::<Bytes>::new()))
                }
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    let mut web = route(&[addr], &[], 10_000);
    web.blue.protocol = crossfade_proxy::UpstreamProtocol::H2c;
    let running = start(config(vec![web])).await;
    let client = waiting_client(&running).await;
    let until = |what: &Arc<AtomicUsize>, why: &str| {
        let (what, event, why) = (what.clone(), event.clone(), why.to_string());
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
            while what.load(Ordering::SeqCst) == 0 {
                let notified = event.notified();
                if what.load(Ordering::SeqCst) > 0 {
                    break;
                }
                let waited = tokio::time::timeout_at(deadline, notified).await;
                assert!(waited.is_ok() || what.load(Ordering::SeqCst) > 0, "{why}");
            }
        }
    };
    until(&started, "the request reached the h2c backend").await;
    drop(client);
    until(&cancelled, "the backend's stream cancelled within 3s").await;
    assert_released(&running, 1.0).await;
}

/// Counts its drop: the h2c backend's service future was dropped (its stream reset).
struct Cancelled(Arc<AtomicUsize>, Arc<Notify>);

impl Drop for Cancelled {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
        self.1.notify_waiters();
    }
}

/// A stop that drops what its drain left after `drain_timeout` is the proxy's doing, not the
/// client's: not counted as a client abort, and logged with status 0 (no response head sent) and
/// the error `drain_timeout`, never 499 `client_closed` (which it was before).
#[tokio::test]
async fn requests_a_stop_drops_after_its_drain_timeout_are_no_client_aborts() {
    let hanging = Hanging::start().await;
    let web = route(&[hanging.addr], &[], 10_000);
    let drain = Some(Duration::from_millis(300));
    let Logged {
        mut running,
        log,
        _dir,
    } = logged(web, drain).await;
    let _client = waiting_client(&running).await;
    hanging.until_requests(1).await;
    stop(&mut running).await;
    hanging.until_closed(1).await;
    let snapshot = running
        .proxy
        .backend_stats("web", crossfade_proxy::Slot::Blue)
        .unwrap();
    assert_eq!(snapshot.aborted.count(), 0, "counted as client aborts");
    assert_eq!(snapshot.in_flight, 0);
    // The stop flushed the log before it ended.
    let line = first_line(&log).await;
    assert_eq!(line["status"], 0, "{line}");
    assert_eq!(line["error"], "drain_timeout", "{line}");
    assert_eq!(line["completed"], false, "{line}");
    assert_eq!(line["route"], "web", "{line}");
    assert_eq!(line["backend"], "blue", "{line}");
    assert_eq!(line["endpoint"], hanging.addr.to_string(), "{line}");
    assert_eq!(line["attempts"], 1, "{line}");
}

/// A response whose body a stop cuts at its drain deadline keeps the status it sent, is not
/// `completed`, and says why: `drain_timeout` (before, its `error` was `null`, as if the body had
/// broken by itself).
#[tokio::test]
async fn a_response_body_a_stop_cuts_at_its_drain_deadline_is_logged_with_drain_timeout() {
    // A backend that sends a head and a first chunk, then nothing more.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 1024];
        while heads(&seen) == 0 {
            let n = stream.read(&mut buf).await.unwrap();
            seen.extend_from_slice(&buf[..n]);
        }
        let partial = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n";
        stream.write_all(partial.as_bytes()).await.unwrap();
        std::future::pending::<()>().await;
    });
    let drain = Some(Duration::from_millis(300));
    let Logged {
        mut running,
        log,
        _dir,
    } = logged(route(&[backend], &[], 10_000), drain).await;
    let mut client = waiting_client(&running).await;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).contains("hello") {
        let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf))
            .await
            .expect("the head and the first chunk")
            .unwrap();
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    stop(&mut running).await;
    let line = first_line(&log).await;
    assert_eq!(line["status"], 200, "{line}");
    assert_eq!(line["error"], "drain_timeout", "{line}");
    assert_eq!(line["completed"], false, "{line}");
    assert_eq!(line["response_bytes"], 5, "{line}");
    let blue = crossfade_proxy::Slot::Blue;
    let snapshot = running.proxy.backend_stats("web", blue).unwrap();
    assert_eq!(snapshot.aborted.count(), 0, "counted as a client abort");
}

/// A keep-alive client that waits for a slow answer, reads it and then sends its next request (and
/// a client that pipelines it) is not gone: both answered, no abort.
#[tokio::test]
async fn a_keep_alive_client_waiting_for_a_slow_answer_is_no_abort() {
    let blue = backend("blue").await;
    let running = proxy_to(blue.addr).await;
    let mut stream = TcpStream::connect(running.addr).await.unwrap();
    for _ in 0..2 {
        stream
            .write_all(b"GET /slow/300 HTTP/1.1\r\nHost: shop.test\r\n\r\n")
            .await
            .unwrap();
        let head = read_response(&mut stream).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head:?}");
    }
    // Pipelined: the second request arrives while the first waits.
    let two = "GET /slow/300 HTTP/1.1\r\nHost: shop.test\r\n\r\n".repeat(2);
    stream.write_all(two.as_bytes()).await.unwrap();
    for _ in 0..2 {
        let head = read_response(&mut stream).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head:?}");
    }
    assert_eq!(metric(&running, ABORTS).await, Some(0.0));
    assert_eq!(metric(&running, IN_FLIGHT).await, Some(0.0));
}

/// One response (`Content-Length` delimited) off `stream`: its head.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !seen.ends_with(b"\r\n\r\n") {
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte)).await;
        assert_eq!(read.expect("an answer").unwrap(), 1, "closed mid-head");
        seen.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&seen).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")?
                .parse()
                .ok()
        })
        .expect("content-length");
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await.unwrap();
    head
}
