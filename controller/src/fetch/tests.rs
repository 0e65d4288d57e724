//! Stale keep-alive connections (case C17) over real sockets: a raw HTTP/1.1 server on
//! 127.0.0.1:0 that closes or resets a connection as a request arrives on it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use super::{exchange, send, send_counted, Reply, ResendReason, Resends};

/// A request as the server saw it.
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    /// The connection's index, in accept order from 0.
    connection: usize,
    /// The request's index on its connection, from 0.
    nth: usize,
    /// How long the connection was idle before it (since the last response), none for the first.
    idle: Option<Duration>,
    method: String,
}

/// What the server does once it has read a request.
#[derive(Clone, Copy, Debug)]
enum Action {
    /// `200 OK`, body `ok`, connection kept.
    Answer,
    /// Closes the connection without an answer (FIN): its idle timer fired as the request came.
    Close,
    /// Resets the connection without an answer (RST).
    Reset,
}

type Decide = fn(&Seen) -> Action;

/// The raw server: every request it read, in order.
struct Server {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    async fn start(decide: Decide) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/metrics", listener.local_addr().expect("addr"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            for connection in 0.. {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(serve(stream, connection, decide, log.clone()));
            }
        });
        Server { url, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("log").clone()
    }
}

async fn serve(stream: TcpStream, connection: usize, decide: Decide, log: Arc<Mutex<Vec<Seen>>>) {
    let mut reader = BufReader::new(stream);
    let mut answered: Option<Instant> = None;
    for nth in 0.. {
        let Some(method) = read_request(&mut reader).await else {
            return;
        };
        let idle = answered.map(|at| at.elapsed());
        let seen = Seen {
            connection,
            nth,
            idle,
            method,
        };
        log.lock().expect("log").push(seen.clone());
        match decide(&seen) {
            Action::Answer => {
                let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                if reader.get_mut().write_all(reply).await.is_err() {
                    return;
                }
                answered = Some(Instant::now());
            }
            Action::Close => return,
            Action::Reset => {
                let _ = reader.get_ref().set_zero_linger();
                return;
            }
        }
    }
}

/// Reads one request head and its `content-length` body; its method, or none at EOF.
async fn read_request(reader: &mut BufReader<TcpStream>) -> Option<String> {
    let mut line = String::new();
    reader.read_line(&mut line).await.ok().filter(|&n| n > 0)?;
    let method = line.split(' ').next()?.to_owned();
    let mut length = 0;
    loop {
        line.clear();
        reader.read_line(&mut line).await.ok().filter(|&n| n > 0)?;
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await.ok()?;
    Some(method)
}

/// `GET url` within 5 s, its re-sends counted in `resends`.
async fn get(url: &str, resends: &Resends) -> Result<Reply, String> {
    let headers = BTreeMap::new();
    let request = (Method::GET, url, &headers, None);
    send_counted(request, Duration::from_secs(5), resends).await
}

/// The re-sends counted in `resends`: (`closed`, `reset`).
fn counted(resends: &Resends) -> (u64, u64) {
    (
        resends.get(ResendReason::Closed),
        resends.get(ResendReason::Reset),
    )
}

fn seen(connection: usize, nth: usize, method: &str) -> (usize, usize, String) {
    (connection, nth, method.to_owned())
}

fn without_idle(log: Vec<Seen>) -> Vec<(usize, usize, String)> {
    log.into_iter()
        .map(|s| (s.connection, s.nth, s.method))
        .collect()
}

#[tokio::test]
async fn gets_spaced_just_past_the_server_keep_alive_never_fail() {
    // The server's 300 ms idle timer fires exactly as the next request arrives: the race of C17.
    fn close_after_300ms_idle(seen: &Seen) -> Action {
        match seen.idle {
            Some(idle) if idle >= Duration::from_millis(300) => Action::Close,
            _ => Action::Answer,
        }
    }
    let server = Server::start(close_after_300ms_idle).await;
    let resends = Resends::default();
    for _ in 0..3 {
        let reply = get(&server.url, &resends).await.expect("no request fails");
        assert_eq!((reply.status.as_u16(), &reply.body[..]), (200, &b"ok"[..]));
        tokio::time::sleep(Duration::from_millis(350)).await;
    }
    let answered = server.seen().iter().filter(|s| s.nth == 0).count();
    assert_eq!(answered, 3, "each GET answered on a fresh connection");
    // The second and third GETs met the close (FIN) on the reused connection.
    assert_eq!(counted(&resends), (2, 0));
}

#[tokio::test]
async fn get_reset_after_its_head_was_read_is_sent_once_more_on_a_fresh_connection() {
    fn reset_reused(seen: &Seen) -> Action {
        match seen.nth {
            0 => Action::Answer,
            _ => Action::Reset,
        }
    }
    let server = Server::start(reset_reused).await;
    let resends = Resends::default();
    get(&server.url, &resends).await.expect("first GET");
    assert_eq!(counted(&resends), (0, 0));
    let reply = get(&server.url, &resends)
        .await
        .expect("the reset GET is re-sent");
    assert_eq!(reply.status.as_u16(), 200);
    assert_eq!(
        without_idle(server.seen()),
        [seen(0, 0, "GET"), seen(0, 1, "GET"), seen(1, 0, "GET")]
    );
    assert_eq!(counted(&resends), (0, 1), "one re-send, for the reset");
}

#[tokio::test]
async fn get_reset_on_its_second_attempt_too_fails_after_two_attempts() {
    fn answer_only_the_first(seen: &Seen) -> Action {
        match (seen.connection, seen.nth) {
            (0, 0) => Action::Answer,
            _ => Action::Reset,
        }
    }
    let server = Server::start(answer_only_the_first).await;
    let resends = Resends::default();
    get(&server.url, &resends).await.expect("first GET");
    let error = get(&server.url, &resends).await.expect_err("reset twice");
    assert!(error.starts_with(&server.url), "{error}");
    assert_eq!(
        without_idle(server.seen()),
        [seen(0, 0, "GET"), seen(0, 1, "GET"), seen(1, 0, "GET")]
    );
    assert_eq!(counted(&resends), (0, 1), "re-sent once, not twice");
}

#[tokio::test]
async fn post_reset_after_its_head_was_read_is_never_sent_again() {
    fn reset_reused(seen: &Seen) -> Action {
        match seen.nth {
            0 => Action::Answer,
            _ => Action::Reset,
        }
    }
    let server = Server::start(reset_reused).await;
    let headers = BTreeMap::new();
    let resends = Resends::default();
    let post = || {
        let body = Some(Bytes::from_static(b"{\"step\":1}"));
        let request = (Method::POST, server.url.as_str(), &headers, body);
        send_counted(request, Duration::from_secs(5), &resends)
    };
    post().await.expect("first POST");
    post().await.expect_err("the reset POST fails");
    assert_eq!(
        without_idle(server.seen()),
        [seen(0, 0, "POST"), seen(0, 1, "POST")]
    );
    assert_eq!(
        counted(&resends),
        (0, 0),
        "nothing re-sent, nothing counted"
    );
}

#[tokio::test(start_paused = true)]
async fn connection_idle_for_a_5s_keep_alive_is_not_reused() {
    // Node.js's keep-alive: a connection idle 5 s is closed as the next request arrives.
    fn close_after_5s_idle(seen: &Seen) -> Action {
        match seen.idle {
            Some(idle) if idle >= Duration::from_secs(5) => Action::Close,
            _ => Action::Answer,
        }
    }
    let server = Server::start(close_after_5s_idle).await;
    let headers = BTreeMap::new();
    // `exchange` has no deadline: on paused time a timer pending while a socket is not yet ready
    // would be fired by the clock's auto-advance.
    let resends = Resends::default();
    exchange(Method::GET, &server.url, &headers, None, &resends)
        .await
        .expect("first GET");
    // Past [`super::IDLE_TIMEOUT`] (4 s): a pool that kept it longer would reuse it here.
    tokio::time::advance(Duration::from_secs(5)).await;
    exchange(Method::GET, &server.url, &headers, None, &resends)
        .await
        .expect("second GET");
    assert_eq!(
        without_idle(server.seen()),
        [seen(0, 0, "GET"), seen(1, 0, "GET")],
        "the idle connection was dropped, not reused and re-sent"
    );
    assert_eq!(counted(&resends), (0, 0));
}

/// `send` counts into the process-wide counter, which the controller's registry exports as
/// `crossfade_fetch_resends_total{reason}` with both reasons from the start.
#[tokio::test]
async fn a_resend_by_send_is_exported_as_crossfade_fetch_resends_total() {
    fn reset_reused(seen: &Seen) -> Action {
        match seen.nth {
            0 => Action::Answer,
            _ => Action::Reset,
        }
    }
    let mut registry = prometheus_client::registry::Registry::with_prefix("crossfade");
    let _ = crate::metrics::RolloutMetrics::register(&mut registry);
    let scrape = |registry: &prometheus_client::registry::Registry| {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).expect("encode");
        let value = |reason: &str| {
            let series = format!("crossfade_fetch_resends_total{{reason=\"{reason}\"}} ");
            let line = text.lines().find(|l| l.starts_with(&series));
            let line = line.unwrap_or_else(|| panic!("no {series}in {text}"));
            line[series.len()..].parse::<u64>().expect("a count")
        };
        (value("closed"), value("reset"))
    };
    let (closed, reset) = scrape(&registry);
    let server = Server::start(reset_reused).await;
    let headers = BTreeMap::new();
    let get = || {
        send(
            Method::GET,
            &server.url,
            &headers,
            None,
            Duration::from_secs(5),
        )
    };
    get().await.expect("first GET");
    get().await.expect("the reset GET is re-sent");
    // Other tests in this process count into it too: at least this test's re-send.
    let (closed_now, reset_now) = scrape(&registry);
    assert!(reset_now > reset, "reset: {reset} -> {reset_now}");
    assert!(closed_now >= closed);
}

#[test]
fn an_excerpt_is_one_line_with_runs_of_white_space_as_one_space() {
    // A pretty-printed JSON error (the proxy's admin API; trial 10, K23) reads as one line.
    let reply = Reply {
        status: http::StatusCode::UNAUTHORIZED,
        body: Bytes::from_static(b"{\n  \"error\": \"missing Authorization: Bearer <token>\"\n}\n"),
        location: None,
    };
    assert_eq!(
        reply.excerpt(),
        r#"{ "error": "missing Authorization: Bearer <token>" }"#
    );
    let long = Reply {
        status: http::StatusCode::OK,
        body: Bytes::from("x".repeat(500)),
        location: None,
    };
    assert_eq!(long.excerpt().chars().count(), 200);
}
