//! The guarded accept loop of the admin API, shared with the controller's metrics and health
//! listener (`crossfade controller --kube`): any small HTTP/1.1 and HTTP/2 endpoint that
//! Prometheus and kubelet probes reach.
//!
//! Its guards: at most `limits.max_admin_connections` connections are served, and at that cap
//! the one that has waited longest for a request makes room ([`super::room`]); a connection that
//! sends no complete request head within `limits.header_read_timeout` of its accept (a slowloris,
//! or one that sends nothing) is closed, and so is a keep-alive connection idle that long between
//! requests (hyper's header read timeout); a head over `limits.max_header_bytes` gets 431. When
//! every connection has a request in flight a new one is shed (`503` with `Retry-After`,
//! [`crate::limits`]).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::room;
use crate::config::LimitsConfig;
use crate::limits::{Admission, Limits, ShedReason};
use crate::server;

/// Serves `listener` with `handle` under the guards of the module docs until `shutdown`
/// completes, then lets open requests finish (at most `drain_timeout`). `name` starts the log
/// lines (`admin`, `metrics listener`). Of `limits`, it uses `max_admin_connections` (the cap),
/// `header_read_timeout`, `max_header_bytes`, `retry_after` (a shed client's `Retry-After`) and
/// the HTTP/2 keep-alive settings. Accept errors are logged and retried after a short pause.
///
/// Dropping the returned future before it ends stops the listener and every connection at once.
pub async fn serve_guarded<H, F>(
    name: &'static str,
    limits: &LimitsConfig,
    listener: TcpListener,
    handle: H,
    drain_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) where
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let guard = Guard {
        name,
        config: limits.clone(),
        limits: Arc::new(Limits::new(&LimitsConfig {
            max_connections: limits.max_admin_connections,
            ..limits.clone()
        })),
        serve: server::builder(limits, true),
        shed: Arc::new(server::builder(limits, false)),
        graceful: GracefulShutdown::new(),
        waiting: Arc::new(room::Waiting::default()),
        handle: Arc::new(handle),
    };
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let admission = tokio::select! {
            admission = guard.limits.admission() => admission,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "{name}: accept failed");
                    tokio::time::sleep(server::ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        guard.admit(stream, admission, &mut tasks).await;
    }
    drop(listener);
    let _ = tokio::time::timeout(drain_timeout, guard.graceful.shutdown()).await;
    tasks.abort_all();
}

/// The accept loop's shared parts.
struct Guard<H> {
    name: &'static str,
    config: LimitsConfig,
    limits: Arc<Limits>,
    serve: hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    shed: Arc<hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>>,
    graceful: GracefulShutdown,
    waiting: Arc<room::Waiting>,
    handle: Arc<H>,
}

// === impl Guard ===

impl<H, F> Guard<H>
where
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    /// Serves or sheds `stream`, accepted on `admission`, in a task of `tasks`.
    async fn admit(&self, stream: TcpStream, admission: Admission, tasks: &mut JoinSet<()>) {
        let timeout = self.config.header_read_timeout;
        let deadline = crate::duration::later(Instant::now(), timeout);
        let admission = match self.limits.upgrade(admission) {
            // At the cap: the connection waiting longest for a request makes room (its task
            // frees its place as soon as it runs; bounded all the same).
            Admission::Shed(shed) if self.waiting.close_longest_waiting() => {
                let place = tokio::time::timeout(timeout, self.limits.served());
                place.await.unwrap_or(Admission::Shed(shed))
            }
            admission => admission,
        };
        match admission {
            Admission::Serve(permit) => {
                let served = self.served(stream, deadline);
                tasks.spawn(async move {
                    served.await;
                    drop(permit);
                });
            }
            Admission::Shed(permit) => {
                let (shed, limits) = (Arc::clone(&self.shed), Arc::clone(&self.limits));
                tasks.spawn(async move {
                    let answer = move |grpc| limits.answer(ShedReason::Connections, grpc);
                    server::serve_shed(&shed, TokioIo::new(stream), answer, deadline).await;
                    drop(permit);
                });
            }
        }
    }

    /// The task that serves one admitted connection until it ends, is closed to make room, or
    /// sends no request head by `deadline`.
    fn served(&self, stream: TcpStream, deadline: Instant) -> impl Future<Output = ()> + Send {
        let name = self.name;
        let first = Arc::new(Notify::new());
        let standing = self.waiting.join();
        let (started, handle) = (Arc::clone(&first), Arc::clone(&self.handle));
        let on_request = Arc::clone(&standing);
        let service = service_fn(move |request| {
            let standing = Arc::clone(&on_request);
            started.notify_one();
            standing.busy();
            let response = handle(request);
            async move {
                let response = response.await;
                standing.done();
                Ok::<_, Infallible>(response)
            }
        });
        let connection = self
            .serve
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = self.graceful.watch(connection);
        async move {
            tokio::pin!(connection);
            let close = Arc::clone(&standing.close);
            let made_room = || {
                tracing::debug!(
                    "{name}: at the connection cap (limits.max_admin_connections); closing the \
                     connection that waited longest for a request to make room for a new one"
                );
            };
            // hyper's header read timeout starts only once the protocol is known, so a client
            // that connects and sends nothing (or half a head) is closed here.
            tokio::select! {
                _ = connection.as_mut() => {}
                () = first.notified() => {
                    tokio::select! {
                        _ = connection.as_mut() => {}
                        () = close.notified() => made_room(),
                    }
                }
                () = close.notified() => made_room(),
                () = tokio::time::sleep_until(deadline) => {
                    tracing::debug!("{name}: no request within the header read timeout; closing");
                }
            }
            drop(standing);
        }
    }
}
