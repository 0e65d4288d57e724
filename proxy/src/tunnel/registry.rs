//! The open tunnels of one backend, by endpoint, and the signals that close them.
//!
//! Each endpoint of a backend has its own close signal ([`EndpointTunnels`]), so that a drain can
//! close the tunnels to the endpoints a table swap removed and leave the others open, while a
//! retired backend's drain deadline still closes them all ([`Tunnels::close_all`]). The request
//! path takes no lock: a table's pool holds its endpoints' entries, and a tunnel holds its own.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use tokio::sync::watch;

use crate::stats::BackendStats;

/// The open tunnels of one backend of one route, and the signals that close them.
///
/// Lives in the backend's [`BackendStats`], so it survives table swaps and endpoint changes: a
/// tunnel opened under one table is still counted and still reachable by [`Tunnels::close_all`]
/// and [`Tunnels::close_endpoints`] after its endpoint or its backend left the table.
#[derive(Debug, Default)]
pub struct Tunnels {
    open: AtomicU64,
    /// Tunnels closed by `limits.tunnel_idle_timeout` since start.
    idle_closed: AtomicU64,
    /// Tunnels closed by the endpoint drain ([`Tunnels::close_endpoints`]) since start.
    drain_closed: AtomicU64,
    /// By endpoint, held weakly: an entry lives while a table's pool or an open tunnel holds it,
    /// and the next [`Tunnels::endpoints`] forgets it after that.
    endpoints: Mutex<BTreeMap<SocketAddr, Weak<EndpointTunnels>>>,
}

/// The tunnels open to one endpoint of a backend, and the signal that closes them.
#[derive(Debug, Default)]
pub(crate) struct EndpointTunnels {
    open: AtomicU64,
    /// Bumped by a close; a tunnel closes when it sees a change after it opened.
    close: watch::Sender<u64>,
}

/// Keeps one tunnel counted as open (in its backend and its endpoint); dropping it ends it.
#[derive(Debug)]
pub(crate) struct Open {
    pub(super) stats: Arc<BackendStats>,
    endpoint: Arc<EndpointTunnels>,
}

// === impl Tunnels ===

impl Tunnels {
    /// Upgraded connections open now.
    pub fn open(&self) -> u64 {
        self.open.load(Relaxed)
    }

    /// Tunnels closed since start because no byte moved either way for
    /// `limits.tunnel_idle_timeout` (the `crossfade_tunnel_idle_closes_total` counter).
    pub fn idle_closed(&self) -> u64 {
        self.idle_closed.load(Relaxed)
    }

    /// Tunnels closed since start because their endpoint left the routing table and
    /// `drain_timeout` passed ([`Tunnels::close_endpoints`], the
    /// `crossfade_tunnel_drain_closes_total` counter).
    pub fn drain_closed(&self) -> u64 {
        self.drain_closed.load(Relaxed)
    }

    pub(crate) fn count_idle_close(&self) {
        self.idle_closed.fetch_add(1, Relaxed);
    }

    /// Asks every tunnel open now to close (the drain deadline passed): WebSockets get a close
    /// frame 1001 "going away" (RFC 6455 §7.4.1) and every tunnel a graceful TCP shutdown. Tunnels
    /// opened later are not affected. Returns how many were open.
    pub fn close_all(&self) -> u64 {
        // Counted before the signal: the tunnels it wakes start ending at once.
        let open = self.open();
        for endpoint in self.live().values() {
            endpoint.close();
        }
        open
    }

    /// Asks the tunnels open now to any of `endpoints` to close, as [`Tunnels::close_all`] does;
    /// tunnels to other endpoints, and tunnels opened later, are not affected. Returns how many
    /// were open to `endpoints`, and adds them to [`Tunnels::drain_closed`]: the endpoint drain
    /// after a table swap is its one caller.
    pub fn close_endpoints(&self, endpoints: &[SocketAddr]) -> u64 {
        let live = self.live();
        let closing: Vec<_> = endpoints.iter().filter_map(|e| live.get(e)).collect();
        // Counted before the signal, as in `close_all`: the tunnels it wakes end at once, and
        // whoever sees one end must find it counted.
        let open = closing.iter().map(|e| e.open.load(Relaxed)).sum();
        self.drain_closed.fetch_add(open, Relaxed);
        for endpoint in closing {
            endpoint.close();
        }
        open
    }

    /// Upgraded connections open now to any of `endpoints`.
    pub fn open_to(&self, endpoints: &[SocketAddr]) -> u64 {
        let live = self.live();
        let open = endpoints.iter().filter_map(|e| live.get(e));
        open.map(|e| e.open.load(Relaxed)).sum()
    }

    /// The entries of `endpoints`, in their order, for a table's pool to hold (made where
    /// missing); entries nothing holds any more are forgotten.
    pub(crate) fn endpoints(&self, endpoints: &[SocketAddr]) -> Box<[Arc<EndpointTunnels>]> {
        let mut map = self.map();
        map.retain(|_, entry| entry.strong_count() > 0);
        let mut entry = |addr: SocketAddr| {
            if let Some(live) = map.get(&addr).and_then(Weak::upgrade) {
                return live;
            }
            let made = Arc::new(EndpointTunnels::default());
            map.insert(addr, Arc::downgrade(&made));
            made
        };
        endpoints.iter().map(|&addr| entry(addr)).collect()
    }

    /// The entries alive now.
    fn live(&self) -> BTreeMap<SocketAddr, Arc<EndpointTunnels>> {
        let map = self.map();
        let live = map.iter().filter_map(|(a, e)| Some((*a, e.upgrade()?)));
        live.collect()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<SocketAddr, Weak<EndpointTunnels>>> {
        self.endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

// === impl EndpointTunnels ===

impl EndpointTunnels {
    fn close(&self) {
        self.close.send_modify(|n| *n = n.wrapping_add(1));
    }
}

// === impl Open ===

impl Open {
    /// Counts a tunnel to `endpoint` (an entry of `stats`' [`Tunnels::endpoints`]) open; the
    /// receiver sees the closes asked from now on.
    pub(crate) fn new(
        stats: &Arc<BackendStats>,
        endpoint: &Arc<EndpointTunnels>,
    ) -> (Open, watch::Receiver<u64>) {
        stats.tunnels().open.fetch_add(1, Relaxed);
        endpoint.open.fetch_add(1, Relaxed);
        let close = endpoint.close.subscribe();
        let open = Open {
            stats: Arc::clone(stats),
            endpoint: Arc::clone(endpoint),
        };
        (open, close)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.endpoint.open.fetch_sub(1, Relaxed);
        self.stats.tunnels().open.fetch_sub(1, Relaxed);
    }
}
