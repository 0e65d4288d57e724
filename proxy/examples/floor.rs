//! The floor: the least a hyper 1 proxy does for the benchmark's 90/10 split, measured beside
//! crossfade, nginx and HAProxy to tell what hyper itself costs from what crossfade adds.
//!
//! Not a proxy to run: no limits, no timeouts, no health, no retries, no metrics, no drain, no
//! HTTP/2, no configuration beyond four arguments. Its shape is the fastest one measured in
//! `shared/reference/perf/RUST-PROXIES.md` ("hyper-direct": 0.96–0.99× nginx per core there): one
//! current-thread runtime; per client connection, one lazily opened HTTP/1.1 upstream connection
//! per backend (`hyper::client::conn::http1`, reused while it is ready, reopened after an error, its
//! driver a task of its own); hyper's HTTP/1.1 server with flattened writes (no `writev`);
//! hop-by-hop header fields stripped both ways (RFC 9110 §7.6.1); a weighted random pick per
//! request. Everything else is what crossfade's request path adds, so crossfade ÷ floor is the cost
//! of its features and of its own code, and floor ÷ nginx is where hyper stands.
//!
//! ```text
//! cargo build --release -p crossfade-proxy --example floor
//! target/release/examples/floor LISTEN BLUE_ADDR GREEN_ADDR GREEN_BASIS_POINTS
//! ```
//!
//! `bench/floor.sh` runs it in the peer harness's "ours" slot (`bench/README.md`).

#[path = "support/floors.rs"]
mod floors;

use std::cell::Cell;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;

use http::header::{CONNECTION, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

type Body = Either<Incoming, Full<Bytes>>;

fn main() {
    let floors::Args {
        listen,
        backends,
        green_bp,
    } = floors::args("floor");
    floors::run("floor", listen, move |stream| {
        serve(stream, backends, green_bp)
    })
}

/// Serves one client connection; its upstream connections live and die with it.
async fn serve(stream: TcpStream, backends: [SocketAddr; 2], green_bp: u64) {
    let senders: Rc<[Cell<Option<SendRequest<Incoming>>>; 2]> = Rc::default();
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let senders = Rc::clone(&senders);
        async move {
            let slot = usize::from(floors::rng_below(10_000) < green_bp);
            Ok::<_, Infallible>(forward(&senders[slot], backends[slot], request).await)
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .writev(false)
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// Sends `request` over the client connection's upstream connection to `backend`, opening one
/// when there is none or the last one failed; a failure is a 502.
async fn forward(
    sender: &Cell<Option<SendRequest<Incoming>>>,
    backend: SocketAddr,
    mut request: Request<Incoming>,
) -> Response<Body> {
    strip_hop_by_hop(request.headers_mut());
    let mut upstream = match sender.take() {
        Some(upstream) if !upstream.is_closed() => upstream,
        _ => match connect(backend).await {
            Some(upstream) => upstream,
            None => return bad_gateway(),
        },
    };
    if upstream.ready().await.is_err() {
        return bad_gateway();
    }
    match upstream.send_request(request).await {
        Ok(response) => {
            sender.set(Some(upstream));
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, Either::Left(body))
        }
        Err(_) => bad_gateway(),
    }
}

async fn connect(backend: SocketAddr) -> Option<SendRequest<Incoming>> {
    let stream = TcpStream::connect(backend).await.ok()?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::Builder::new()
        .writev(false)
        .handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::task::spawn_local(connection);
    Some(sender)
}

fn bad_gateway() -> Response<Body> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from_static(
        b"bad gateway\n",
    ))));
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}

/// Removes the hop-by-hop fields (RFC 9110 §7.6.1): the ones `Connection` names, then the fixed
/// list.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if let Some(listed) = headers
        .get(CONNECTION)
        .and_then(|value| value.to_str().ok())
    {
        let named: Vec<HeaderName> = listed
            .split(',')
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in [
        CONNECTION,
        TRANSFER_ENCODING,
        UPGRADE,
        http::header::TE,
        http::header::TRAILER,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}
