//! The raw floor: the least any Rust proxy on tokio does for the benchmark's 90/10 split, with no
//! HTTP library at all: `httparse` for the heads and hand-written I/O. Measured beside crossfade,
//! the hyper floor (`floor.rs`), nginx and HAProxy, it tells how far a proxy of our own HTTP/1.1
//! codec could go per core, which hyper's codec cannot (docs/bench-2026-12-06-rawfloor.md).
//!
//! Not a proxy to run, and far less than `floor.rs`: HTTP/1.1 only, requests and responses framed
//! by `Content-Length` alone (a request with `Transfer-Encoding` is answered 501; a response without
//! a length is read to the backend's close), no pipelining beyond what one read brings, no limits,
//! no timeouts, no header validation beyond `httparse`'s, no `Via`, no `X-Forwarded-For`. Its shape
//! is the floor's: one current-thread runtime; per client connection one lazily opened upstream
//! connection per backend, reused until it fails; hop-by-hop fields dropped both ways (RFC 9110
//! §7.6.1, the fixed list and the fields `Connection` names); a weighted random pick per request;
//! each head and body written with one `write_all` of one buffer.
//!
//! ```text
//! cargo build --release -p crossfade-proxy --example rawfloor
//! target/release/examples/rawfloor LISTEN BLUE_ADDR GREEN_ADDR GREEN_BASIS_POINTS
//! FLOOR_BIN=target/release/examples/rawfloor bench/cpu.sh ka 8 3   # in the floor's slot
//! ```

#[path = "support/floors.rs"]
mod floors;

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Most header fields a head may have.
const MAX_HEADERS: usize = 64;
/// Largest head read; a longer one closes the connection.
const MAX_HEAD: usize = 64 * 1024;

fn main() {
    let floors::Args {
        listen,
        backends,
        green_bp,
    } = floors::args("rawfloor");
    floors::run("rawfloor", listen, move |stream| {
        serve(stream, backends, green_bp)
    })
}

/// One side's buffered reader: bytes read and not yet consumed are `buf[start..]`.
struct Side {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
}

impl Side {
    fn new(stream: TcpStream) -> Side {
        Side {
            stream,
            buf: Vec::with_capacity(8192),
            start: 0,
        }
    }

    /// Reads more; `false` at the end of the stream or on an error.
    async fn fill(&mut self) -> bool {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(8192);
        }
        matches!(self.stream.read_buf(&mut self.buf).await, Ok(n) if n > 0)
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

/// What a parsed head says about the message after it.
struct Head {
    /// The head rewritten for the other side, hop-by-hop fields dropped.
    out: Vec<u8>,
    /// Body length; `None`: read to the end of the stream (a response without a length).
    length: Option<u64>,
    /// Whether the sender asked to close after this message.
    close: bool,
}

/// Serves one client connection; its upstream connections live and die with it.
async fn serve(stream: TcpStream, backends: [SocketAddr; 2], green_bp: u64) {
    let mut client = Side::new(stream);
    let mut upstreams: [Option<Side>; 2] = [None, None];
    loop {
        let Some(request) = read_request(&mut client).await else {
            return;
        };
        let slot = usize::from(floors::rng_below(10_000) < green_bp);
        let served = match request {
            Ok(head) => forward(&mut client, &mut upstreams[slot], backends[slot], head).await,
            Err(status) => {
                let _ = client.stream.write_all(status).await;
                return;
            }
        };
        if !served {
            return;
        }
    }
}

/// Reads and parses one request head. `None`: the client went away; `Err`: the answer to give.
async fn read_request(client: &mut Side) -> Option<Result<Head, &'static [u8]>> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(client.pending()) {
            Ok(httparse::Status::Complete(len)) => {
                let method = request.method.unwrap_or("GET");
                let path = request.path.unwrap_or("/");
                let mut out = Vec::with_capacity(len + 64);
                out.extend_from_slice(method.as_bytes());
                out.push(b' ');
                out.extend_from_slice(path.as_bytes());
                out.extend_from_slice(b" HTTP/1.1\r\n");
                let framing = copy_fields(request.headers, &mut out);
                let http10 = request.version == Some(0);
                client.start += len;
                let head = match framing {
                    Framing::Chunked => return Some(Err(NOT_IMPLEMENTED)),
                    Framing::Length(length, close) => Head {
                        out,
                        length: Some(length.unwrap_or(0)),
                        close: close || http10,
                    },
                };
                return Some(Ok(head));
            }
            Ok(httparse::Status::Partial) if client.pending().len() < MAX_HEAD => {
                if !client.fill().await {
                    return None;
                }
            }
            _ => return Some(Err(BAD_REQUEST)),
        }
    }
}

const BAD_REQUEST: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
const NOT_IMPLEMENTED: &[u8] =
    b"HTTP/1.1 501 Not Implemented\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
const BAD_GATEWAY: &[u8] =
    b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 12\r\nconnection: close\r\n\r\nbad gateway\n";

enum Framing {
    /// `Content-Length` (absent: `None`) and whether `Connection` says `close`.
    Length(Option<u64>, bool),
    Chunked,
}

/// Copies the end-to-end fields of a head into `out` and ends it; says how the body is framed.
fn copy_fields(headers: &[httparse::Header<'_>], out: &mut Vec<u8>) -> Framing {
    let mut length = None;
    let mut close = false;
    let mut chunked = false;
    let connection: Vec<&[u8]> = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| h.value.split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .collect();
    for h in headers {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            length = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok());
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            chunked = true;
            continue;
        } else if name.eq_ignore_ascii_case(b"connection") {
            close |= connection.iter().any(|t| t.eq_ignore_ascii_case(b"close"));
            continue;
        }
        let hop = HOP_BY_HOP.iter().any(|n| name.eq_ignore_ascii_case(n))
            || connection.iter().any(|t| name.eq_ignore_ascii_case(t));
        if hop {
            continue;
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if chunked {
        Framing::Chunked
    } else {
        Framing::Length(length, close)
    }
}

/// The fixed hop-by-hop fields (RFC 9110 §7.6.1), besides `Connection` and `Transfer-Encoding`.
const HOP_BY_HOP: [&[u8]; 5] = [
    b"keep-alive",
    b"proxy-connection",
    b"te",
    b"trailer",
    b"upgrade",
];

/// Sends the request to the backend in `slot` and its response to the client; `false` when the
/// client connection must end.
async fn forward(
    client: &mut Side,
    upstream: &mut Option<Side>,
    backend: SocketAddr,
    mut request: Head,
) -> bool {
    // The request's body, as far as it is buffered, goes in the same write as its head.
    let length = request.length.unwrap_or(0);
    let buffered = (client.pending().len() as u64).min(length) as usize;
    request.out.extend_from_slice(&client.pending()[..buffered]);
    client.start += buffered;
    let mut rest = length - buffered as u64;
    if upstream.is_none() {
        let Ok(stream) = TcpStream::connect(backend).await else {
            let _ = client.stream.write_all(BAD_GATEWAY).await;
            return false;
        };
        let _ = stream.set_nodelay(true);
        *upstream = Some(Side::new(stream));
    }
    let Some(up) = upstream.as_mut() else {
        return false;
    };
    if up.stream.write_all(&request.out).await.is_err() {
        *upstream = None;
        let _ = client.stream.write_all(BAD_GATEWAY).await;
        return false;
    }
    while rest > 0 {
        if !client.fill().await {
            return false;
        }
        let n = (client.pending().len() as u64).min(rest) as usize;
        if up.stream.write_all(&client.pending()[..n]).await.is_err() {
            return false;
        }
        client.start += n;
        rest -= n as u64;
    }
    let Some(response) = read_response(up).await else {
        *upstream = None;
        let _ = client.stream.write_all(BAD_GATEWAY).await;
        return false;
    };
    relay_response(client, upstream, response, request.close).await
}

/// Reads and parses one response head from the backend; `None` when it closed or sent garbage.
async fn read_response(up: &mut Side) -> Option<Head> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(up.pending()) {
            Ok(httparse::Status::Complete(len)) => {
                let code = response.code.unwrap_or(502);
                let reason = response.reason.unwrap_or("");
                let mut out = Vec::with_capacity(len + 64);
                out.extend_from_slice(b"HTTP/1.1 ");
                out.extend_from_slice(code.to_string().as_bytes());
                out.push(b' ');
                out.extend_from_slice(reason.as_bytes());
                out.extend_from_slice(b"\r\n");
                let framing = copy_fields(response.headers, &mut out);
                up.start += len;
                let Framing::Length(length, close) = framing else {
                    return None;
                };
                let bodiless = code == 204 || code == 304;
                return Some(Head {
                    out,
                    length: if bodiless { Some(0) } else { length },
                    close,
                });
            }
            Ok(httparse::Status::Partial) if up.pending().len() < MAX_HEAD => {
                if !up.fill().await {
                    return None;
                }
            }
            _ => return None,
        }
    }
}

/// Writes the response head and body to the client; `false` when the client connection ends.
async fn relay_response(
    client: &mut Side,
    upstream: &mut Option<Side>,
    mut response: Head,
    client_close: bool,
) -> bool {
    let Some(up) = upstream.as_mut() else {
        return false;
    };
    let to_close = response.length.is_none();
    if client_close || to_close {
        // The head was ended by `copy_fields`: put `Connection: close` before its blank line.
        response.out.truncate(response.out.len() - 2);
        response.out.extend_from_slice(b"connection: close\r\n\r\n");
    }
    let mut rest = response.length.unwrap_or(u64::MAX);
    let buffered = (up.pending().len() as u64).min(rest) as usize;
    response.out.extend_from_slice(&up.pending()[..buffered]);
    up.start += buffered;
    rest -= buffered as u64;
    if client.stream.write_all(&response.out).await.is_err() {
        return false;
    }
    while rest > 0 {
        if !up.fill().await {
            if to_close {
                break;
            }
            *upstream = None;
            return false;
        }
        let n = (up.pending().len() as u64).min(rest) as usize;
        if client.stream.write_all(&up.pending()[..n]).await.is_err() {
            return false;
        }
        up.start += n;
        rest -= n as u64;
    }
    if response.close || to_close {
        *upstream = None;
    }
    !(client_close || to_close)
}
