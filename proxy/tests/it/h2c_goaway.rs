//! An h2c backend's GOAWAY (RFC 9113 §6.8) while the proxy has streams open on its connection:
//! streams above the GOAWAY's last-stream-id were not processed and go again on a fresh
//! connection, whatever the method; a stream at or below it that the connection's close then cuts
//! short may have been processed, and is re-sent only when that is safe (a bodiless GET), never
//! with a body. The backend is raw frames, so it chooses the last-stream-id exactly (the `h2`
//! crate names the last stream it has read), and records which request bodies it processed on
//! which connection (session 42).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::h2raw::{RawH2, ACK, DATA, END_STREAM, GOAWAY, HEADERS, SETTINGS};
use crate::support::*;

/// Streams the proxy opens on the backend's first connection before its GOAWAY: 1, 3 and 5.
const STREAMS: usize = 3;

/// The END_HEADERS flag of HEADERS (RFC 9113 §6.2).
const END_HEADERS: u8 = 0x4;

/// What the backend does on its first connection once [`STREAMS`] requests are whole on it: it
/// sends GOAWAY (NO_ERROR) with `last` as the last-stream-id, answers the streams up to
/// `answered` (at most `last`), and closes the connection; the streams up to `last` count as
/// processed, answered or not.
#[derive(Clone, Copy)]
struct Goaway {
    last: u32,
    answered: u32,
}

/// Each request body the backend processed, with the number of its connection (from 1).
type Processed = Arc<Mutex<Vec<(usize, String)>>>;

async fn goaway_backend(goaway: Goaway) -> (SocketAddr, Processed) {
    let processed = Processed::default();
    let record = Arc::clone(&processed);
    let addr = crate::backend_keep_alive::accepting(move |stream, number| {
        serve(stream, number, goaway, Arc::clone(&record))
    })
    .await;
    (addr, processed)
}

/// Serves connection `number`: every request is answered `200 ok` once whole, except on the
/// first connection, which ends as `goaway` says.
async fn serve(stream: TcpStream, number: usize, goaway: Goaway, processed: Processed) {
    let mut raw = RawH2 { tcp: stream };
    let mut preface = [0u8; 24];
    if raw.tcp.read_exact(&mut preface).await.is_err() {
        return;
    }
    write_frame(&mut raw.tcp, (SETTINGS, 0, 0), &[]).await;
    let (mut bodies, mut whole) = (BTreeMap::<u32, Vec<u8>>::new(), Vec::new());
    while let Some(frame) = raw.frame().await {
        match frame.kind {
            SETTINGS if frame.flags & ACK == 0 => {
                write_frame(&mut raw.tcp, (SETTINGS, ACK, 0), &[]).await;
            }
            HEADERS | DATA => {
                let body = bodies.entry(frame.stream).or_default();
                if frame.kind == DATA {
                    body.extend_from_slice(&frame.payload);
                }
                if frame.flags & END_STREAM != 0 {
                    whole.push(frame.stream);
                }
            }
            _ => {}
        }
        let Some(&stream) = whole.last() else {
            continue;
        };
        if number > 1 {
            whole.clear();
            processed
                .lock()
                .unwrap()
                .push((number, body_text(&bodies[&stream])));
            answer(&mut raw.tcp, stream).await;
        } else if whole.len() == STREAMS {
            end_first(&mut raw, goaway, &bodies, &processed).await;
            return;
        }
    }
}

/// The first connection's end: GOAWAY, the answers `goaway` says, then a close (FIN) once the
/// proxy has read them.
async fn end_first(
    raw: &mut RawH2,
    goaway: Goaway,
    bodies: &BTreeMap<u32, Vec<u8>>,
    processed: &Processed,
) {
    let mut payload = goaway.last.to_be_bytes().to_vec();
    payload.extend_from_slice(&0u32.to_be_bytes());
    write_frame(&mut raw.tcp, (GOAWAY, 0, 0), &payload).await;
    for (&stream, body) in bodies.range(..=goaway.last) {
        processed.lock().unwrap().push((1, body_text(body)));
        if stream <= goaway.answered {
            answer(&mut raw.tcp, stream).await;
        }
    }
    raw.tcp.shutdown().await.unwrap();
    // Read on until the proxy closes too: closed with unread bytes, the socket would send a
    // reset, which may overtake the answers.
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        while raw.frame().await.is_some() {}
    });
    drained.await.expect("the proxy closes the connection");
}

fn body_text(body: &[u8]) -> String {
    String::from_utf8_lossy(body).into_owned()
}

/// `200` (HPACK static-table index 8, RFC 7541 Appendix A) with the body `ok` on `stream`.
async fn answer(tcp: &mut TcpStream, stream: u32) {
    write_frame(tcp, (HEADERS, END_HEADERS, stream), &[0x88]).await;
    write_frame(tcp, (DATA, END_STREAM, stream), b"ok").await;
}

/// Writes one frame: (type, flags, stream) and its payload (RFC 9113 §4.1).
async fn write_frame(tcp: &mut TcpStream, (kind, flags, stream): (u8, u8, u32), payload: &[u8]) {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut frame = vec![len[1], len[2], len[3], kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    tcp.write_all(&frame).await.unwrap();
}

/// Sends [`STREAMS`] requests at once through a proxy in front of `backend` (h2c), a `PUT /doc`
/// with the body `call {i}` each when `with_body`, else a `GET /doc`; returns their statuses in
/// order and the proxy's `crossfade_retries_total` for `reason`s `refused_stream` and `reset`.
async fn requests_through(backend: SocketAddr, with_body: bool) -> (Vec<StatusCode>, [u64; 2]) {
    let running = start(config(vec![crate::stale::h2c_only_route(backend)])).await;
    let client = client();
    let requests = (0..STREAMS).map(|i| {
        let request = match with_body {
            true => Request::put(running.url("/doc")).body(Full::from(format!("call {i}"))),
            false => Request::get(running.url("/doc")).body(Full::default()),
        };
        send(&client, request.unwrap())
    });
    let answers = futures_util::future::join_all(requests).await;
    let statuses = answers.into_iter().map(|(status, ..)| status).collect();
    let metrics = get(&client, &running.admin_url("/metrics")).await.2;
    let retries = ["refused_stream", "reset"].map(|reason| {
        let series =
            format!(r#"crossfade_retries_total{{route="web",backend="blue",reason="{reason}"}} "#);
        let line = metrics.lines().find(|l| l.starts_with(&series));
        let value = line.and_then(|l| l.rsplit(' ').next());
        value.map_or(0, |v| v.parse().unwrap())
    });
    (statuses, retries)
}

/// The bodies `processed` holds, sorted, and how many of them the first connection processed.
fn processed_once(processed: &Processed) -> (Vec<String>, usize) {
    let processed = processed.lock().unwrap();
    let mut bodies: Vec<String> = processed.iter().map(|(_, body)| body.clone()).collect();
    bodies.sort();
    let first = processed.iter().filter(|(number, _)| *number == 1).count();
    (bodies, first)
}

/// GOAWAY with last-stream-id 1 while streams 1, 3 and 5 are open: stream 1 is answered, and the
/// PUTs of streams 3 and 5, which the backend did not process, are replayed on a fresh
/// connection: each PUT is answered 200 and processed exactly once.
#[tokio::test]
async fn an_h2c_goaway_replays_the_streams_above_its_last_stream_id_and_no_put_twice() {
    let (addr, processed) = goaway_backend(Goaway {
        last: 1,
        answered: 1,
    })
    .await;
    let (statuses, [refused, reset]) = requests_through(addr, true).await;
    assert_eq!(statuses, [StatusCode::OK; STREAMS]);
    assert_eq!(
        processed_once(&processed),
        (vec!["call 0".into(), "call 1".into(), "call 2".into()], 1),
        "(bodies processed, of them on the first connection)"
    );
    assert_eq!((refused, reset), (2, 0), "(refused_stream, reset) retries");
}

/// GOAWAY with last-stream-id 3, stream 1 answered, then the close: stream 3, at or below the
/// last-stream-id, may have been processed and is not re-sent with its body (502); stream 5 is
/// replayed. No PUT is processed twice.
#[tokio::test]
async fn an_h2c_goaway_then_close_never_resends_a_put_at_or_below_its_last_stream_id() {
    let (addr, processed) = goaway_backend(Goaway {
        last: 3,
        answered: 1,
    })
    .await;
    let (mut statuses, [refused, reset]) = requests_through(addr, true).await;
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::OK, StatusCode::OK, StatusCode::BAD_GATEWAY]
    );
    assert_eq!(
        processed_once(&processed),
        (vec!["call 0".into(), "call 1".into(), "call 2".into()], 2),
        "(bodies processed, of them on the first connection)"
    );
    assert_eq!((refused, reset), (1, 0), "(refused_stream, reset) retries");
}

/// The same with bodiless GETs: stream 5 is replayed as refused, and stream 3, cut short before
/// any response byte, is re-sent once as a reset (a GET is safe to repeat): all are answered.
#[tokio::test]
async fn an_h2c_goaway_then_close_loses_no_get() {
    let (addr, processed) = goaway_backend(Goaway {
        last: 3,
        answered: 1,
    })
    .await;
    let (statuses, [refused, reset]) = requests_through(addr, false).await;
    assert_eq!(statuses, [StatusCode::OK; STREAMS]);
    assert_eq!(processed_once(&processed).1, 2, "on the first connection");
    assert_eq!((refused, reset), (1, 1), "(refused_stream, reset) retries");
}
