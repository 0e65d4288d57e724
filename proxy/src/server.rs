//! The accept loop: one task per client connection, served by hyper's auto (HTTP/1.1 or HTTP/2
//! prior knowledge) connection, and a graceful, bounded drain on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use http::HeaderValue;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::error::Result;
use crate::forward;
use crate::handle::Shared;
use crate::headers::peer_value;

/// Per-connection context: shared state plus what is known once per connection.
pub(crate) struct Conn {
    pub(crate) shared: Arc<Shared>,
    /// The peer's IP as an `X-Forwarded-For` element, formatted once per connection.
    pub(crate) peer: HeaderValue,
}

/// How often the drain looks whether the closed tunnels have ended.
const TUNNEL_POLL: Duration = Duration::from_millis(25);

/// Pause after an accept error (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Runs the accept loop until `shutdown`, then drains.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let builder = builder();
    let graceful = GracefulShutdown::new();
    let mut tasks = JoinSet::new();
    shared.serving.store(true, Ordering::Relaxed);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let conn = Arc::new(Conn { shared: Arc::clone(&shared), peer: peer_value(peer.ip()) });
                    spawn_connection(&builder, &graceful, &mut tasks, stream, conn);
                }
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                }
            },
            // Reap finished connection tasks so the set stays as small as the open connections.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            () = &mut shutdown => break,
        }
    }
    shared.serving.store(false, Ordering::Relaxed);
    drop(listener);
    drain(graceful, &shared).await;
    tasks.abort_all();
    Ok(())
}

fn builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    builder
}

fn spawn_connection(
    builder: &auto::Builder<TokioExecutor>,
    graceful: &GracefulShutdown,
    tasks: &mut JoinSet<()>,
    stream: TcpStream,
    conn: Arc<Conn>,
) {
    // Latency safety; no throughput effect in request/response traffic (shared/reference/perf).
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |request| {
        let conn = Arc::clone(&conn);
        async move { Ok::<_, Infallible>(forward::handle(&conn, request).await) }
    });
    let connection = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), service)
        .into_owned();
    let connection = graceful.watch(connection);
    tasks.spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "client connection ended with an error");
        }
    });
}

/// Waits for watched connections to finish, at most `drain_timeout`; the caller aborts what remains.
/// Upgraded connections are closed at once (a WebSocket gets 1001 "going away", RFC 6455 §7.4.1:
/// the proxy is going down) and waited for within the same bound.
async fn drain(graceful: GracefulShutdown, shared: &Shared) {
    let (open, timeout) = (graceful.count(), shared.drain_timeout);
    let upgraded = close_tunnels(shared);
    tracing::info!(open, upgraded, "draining client connections");
    let both = async { tokio::join!(graceful.shutdown(), tunnels_closed(shared)) };
    if tokio::time::timeout(timeout, both).await.is_err() {
        tracing::warn!(
            ?timeout,
            "drain timeout passed; closing remaining connections"
        );
    }
}

/// Asks every open tunnel to close; returns how many were open.
fn close_tunnels(shared: &Shared) -> u64 {
    let stats = shared.stats.lock().unwrap_or_else(PoisonError::into_inner);
    stats.values().map(|s| s.tunnels().close_all()).sum()
}

/// Resolves once no tunnel is open; asks again at every look, so a tunnel upgraded by a request
/// that was still in flight when the drain began is closed too.
async fn tunnels_closed(shared: &Shared) {
    while close_tunnels(shared) > 0 {
        tokio::time::sleep(TUNNEL_POLL).await;
    }
}
