//! pingora-core's HTTP/1.1 sessions (`protocols::http::v1::{server, client}::HttpSession`) in the
//! floors' shape (proxy/examples/floor.rs): one current-thread runtime; per client connection, one
//! lazily opened upstream connection per backend, reused while pingora says it may be; hop-by-hop
//! header fields removed both ways (RFC 9110 §7.6.1); a weighted random pick per request. It
//! tells pingora's HTTP/1.1 code apart from its proxy framework.
//!
//! ```text
//! target/release/pingora-sessions LISTEN BLUE_ADDR GREEN_ADDR GREEN_BASIS_POINTS
//! ```
//!
//! One handicap it cannot shed: a stream made from a `TcpStream` outside pingora's listeners has
//! no write buffer (`Stream::set_buffer` is crate-private), so the response's head and body are
//! two `sendto` calls where pingora-proxy makes one.

#[path = "../../../../proxy/examples/support/floors.rs"]
mod floors;

use std::net::SocketAddr;

use pingora_core::protocols::http::v1::client::HttpSession as Upstream;
use pingora_core::protocols::http::v1::server::HttpSession as Downstream;
use pingora_core::protocols::l4::stream::Stream as L4;
use pingora_core::protocols::Stream;
use pingora_http::{RequestHeader, ResponseHeader};
use tokio::net::TcpStream;

/// The hop-by-hop fields removed from requests and responses (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "proxy-connection",
];

fn main() {
    let floors::Args {
        listen,
        backends,
        green_bp,
    } = floors::args("pingora-sessions");
    floors::run("pingora-sessions", listen, move |stream| {
        serve(stream, backends, green_bp)
    })
}

/// Serves one client connection; its upstream connections live and die with it.
async fn serve(tcp: TcpStream, backends: [SocketAddr; 2], green_bp: u64) {
    let mut stream: Stream = Box::new(L4::from(tcp));
    let mut prefix = None;
    let mut upstreams: [Option<Stream>; 2] = [None, None];
    loop {
        let mut down = Downstream::new(stream);
        if let Some(prefix) = prefix.take() {
            down.set_pipelined_prefix(prefix);
        }
        match down.read_request().await {
            Ok(Some(_)) => {}
            _ => return,
        }
        let slot = usize::from(floors::rng_below(10_000) < green_bp);
        if forward(&mut down, &mut upstreams[slot], backends[slot])
            .await
            .is_none()
        {
            if down.response_written().is_some() {
                return; // the response is cut short: only closing can tell the client
            }
            let Ok(mut bad) = ResponseHeader::build(502, Some(1)) else {
                return;
            };
            let _ = bad.insert_header("content-length", "0");
            if down.write_response_header(Box::new(bad)).await.is_err() {
                return;
            }
            let _ = down.finish_body().await;
        }
        match down.reuse().await {
            Ok(Some(next)) => (stream, prefix) = next.into_parts(),
            _ => return,
        }
    }
}

/// Sends the request `down` read to `backend` over `slot`'s connection (opening one if there is
/// none) and the response back; `None` when anything failed, before the response head was written
/// (a 502 follows) or after it (the connection is closed).
async fn forward(
    down: &mut Downstream,
    slot: &mut Option<Stream>,
    backend: SocketAddr,
) -> Option<()> {
    let mut request: RequestHeader = down.req_header().clone();
    for name in HOP_BY_HOP {
        request.remove_header(name);
    }
    let stream = match slot.take() {
        Some(stream) => stream,
        None => {
            let tcp = TcpStream::connect(backend).await.ok()?;
            let _ = tcp.set_nodelay(true);
            Box::new(L4::from(tcp)) as Stream
        }
    };
    let mut up = Upstream::new(stream);
    up.write_request_header(Box::new(request)).await.ok()?;
    while let Some(chunk) = down.read_body_bytes().await.ok()? {
        up.write_body(&chunk).await.ok()?;
    }
    up.finish_body().await.ok()?;
    up.read_response().await.ok()?;
    up.respect_keepalive();
    let mut response: ResponseHeader = up.resp_header()?.clone();
    for name in HOP_BY_HOP {
        response.remove_header(name);
    }
    down.write_response_header(Box::new(response)).await.ok()?;
    while let Some(chunk) = up.read_body_bytes().await.ok()? {
        down.write_body(&chunk).await.ok()?;
    }
    down.finish_body().await.ok()?;
    *slot = up.reuse().await;
    Some(())
}
