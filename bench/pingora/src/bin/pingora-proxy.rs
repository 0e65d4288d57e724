//! pingora-proxy as its users run it, doing the benchmark's 90/10 split: Cloudflare's proxy
//! framework (`pingora_proxy::ProxyHttp`) with one worker thread, its own upstream keep-alive pool
//! and HTTP/1.1 code, and a weighted random pick per request between blue's and green's one
//! endpoint each. Nothing else is configured, so what it costs is what pingora itself costs.
//!
//! ```text
//! target/release/pingora-proxy LISTEN BLUE_ADDR GREEN_ADDR GREEN_BASIS_POINTS
//! ```
//!
//! The shutdown grace periods are 0 so that bench/cpu.sh's SIGTERM ends it at once (pingora's
//! default waits minutes for connections to close).

#[allow(dead_code)]
#[path = "../../../../proxy/examples/support/floors.rs"]
mod floors;

use std::net::SocketAddr;

use async_trait::async_trait;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::Result;
use pingora_proxy::{ProxyHttp, Session};

/// Blue's and green's endpoint, and green's weight in basis points.
struct Split {
    backends: [SocketAddr; 2],
    green_bp: u64,
}

#[async_trait]
impl ProxyHttp for Split {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let slot = usize::from(floors::rng_below(10_000) < self.green_bp);
        Ok(Box::new(HttpPeer::new(
            self.backends[slot],
            false,
            String::new(),
        )))
    }
}

fn main() {
    let floors::Args {
        listen,
        backends,
        green_bp,
    } = floors::args("pingora-proxy");
    let conf = ServerConf {
        threads: 1,
        work_stealing: false,
        upstream_keepalive_pool_size: 256,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(0),
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let mut service =
        pingora_proxy::http_proxy_service(&server.configuration, Split { backends, green_bp });
    service.add_tcp(&listen.to_string());
    server.add_service(service);
    server.run_forever();
}
