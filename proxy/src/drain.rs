//! The drain of upgraded connections to the endpoints a table swap removed (from a backend, or
//! with their route): they get `drain_timeout` to end on their own, then are closed as at a
//! retired backend's drain deadline (a WebSocket gets 1001 "going away" on both sides, RFC 6455
//! §7.4.1; any other tunnel a graceful TCP shutdown).
//!
//! One rule for every writer, since every change goes through one table swap
//! ([`crate::Proxy::update`]): a SIGHUP reload, the admin API, a rollout's endpoint changes and
//! the tables built from Kubernetes objects. Tunnels to endpoints still in the table are never
//! touched, so a weight change leaves every WebSocket open. Why close at all: an endpoint leaves
//! the table because its instance is going away, and nothing else would close a tunnel to it (the
//! idle timeout does not while the application pings); as with the connections an ingress drains
//! from a host that left its upstream set, the peers get the drain timeout to part on their own,
//! then a clean close rather than a reset when the instance stops.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};

use tokio::runtime::Handle;
use tokio::time::Instant;

use crate::handle::{Shared, Table};
use crate::stats::BackendStats;
use crate::weight::Slot;

/// The endpoints one backend lost in a swap, and the stats its tunnels count in.
#[derive(Debug)]
pub(crate) struct Removed {
    route: Arc<str>,
    slot: Slot,
    endpoints: Vec<SocketAddr>,
    stats: Arc<BackendStats>,
}

/// What `next` removes from `previous`: per backend, the endpoints `next` no longer lists for
/// the same route and slot (all of them when the route left the table).
pub(crate) fn removed(previous: &Table, next: &Table) -> Vec<Removed> {
    let mut removed = Vec::new();
    for route in previous.routes() {
        let kept = next.route(route.name());
        for backend in route.backends() {
            let slot = backend.slot();
            let now = kept.map_or(&[][..], |r| &r.backend(slot).endpoints()[..]);
            let endpoints = gone(backend.endpoints(), now);
            if !endpoints.is_empty() {
                let (route, stats) = (Arc::clone(route.name()), backend.upstream().stats());
                let stats = Arc::clone(stats);
                removed.push(Removed {
                    route,
                    slot,
                    endpoints,
                    stats,
                });
            }
        }
    }
    removed
}

/// The endpoints of `before` that `now` does not list.
fn gone(before: &[SocketAddr], now: &[SocketAddr]) -> Vec<SocketAddr> {
    let now: HashSet<&SocketAddr> = now.iter().collect();
    let gone = before.iter().filter(|e| !now.contains(e)).copied();
    gone.collect()
}

/// Starts the drain of the tunnels to `removed` endpoints: once `drain_timeout` has passed,
/// those still open are closed, unless a later swap put their endpoint back in its backend.
/// Tunnels to those endpoints that a request still in flight opens meanwhile are closed too.
/// Does nothing when no runtime was ever there to serve a tunnel.
pub(crate) fn start(shared: &Arc<Shared>, removed: Vec<Removed>) {
    if removed.is_empty() {
        return;
    }
    let Some(runtime) = Handle::try_current()
        .ok()
        .or_else(|| shared.runtime.get().cloned())
    else {
        return;
    };
    let timeout = shared.drain_timeout;
    for r in &removed {
        let open = r.stats.tunnels().open_to(&r.endpoints);
        if open > 0 {
            let (route, backend, endpoints) = (&r.route, r.slot, &r.endpoints);
            // `drain_timeout` is the latest they are closed; a controller retiring or stopping
            // the backend may close them sooner, at its own drain deadline
            // (`Proxy::close_upgraded`, logged on its own).
            tracing::info!(%route, %backend, open, ?endpoints, drain_timeout = ?timeout, "endpoints removed: draining their upgraded connections, closed at drain_timeout at the latest");
        }
    }
    let deadline = crate::duration::later(Instant::now(), timeout);
    let shared = Arc::downgrade(shared);
    runtime.spawn(close_at(deadline, shared, removed));
}

/// At `deadline`, closes the tunnels still open to the `removed` endpoints that the table in
/// force does not list.
async fn close_at(deadline: Instant, shared: Weak<Shared>, removed: Vec<Removed>) {
    tokio::time::sleep_until(deadline).await;
    let Some(shared) = shared.upgrade() else {
        return;
    };
    let table = shared.table.load();
    for r in removed {
        let now = table
            .route(&r.route)
            .map_or(&[][..], |route| &route.backend(r.slot).endpoints()[..]);
        let endpoints = gone(&r.endpoints, now);
        let closed_upgraded = r.stats.tunnels().close_endpoints(&endpoints);
        if closed_upgraded > 0 {
            let (route, backend) = (&r.route, r.slot);
            tracing::warn!(%route, %backend, closed_upgraded, ?endpoints, "drain deadline passed: closing upgraded connections to removed endpoints");
        }
    }
}

#[cfg(test)]
mod tests;
