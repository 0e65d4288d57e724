//! The pure routing data: a complete, immutable routing table with its matchers, weights and
//! endpoint lists precomputed, and the per-request decisions (match route, pick backend, pick
//! endpoint). No tokio, no hyper: everything here is testable without a runtime.
//!
//! The table is generic over `U`, the per-backend payload that the machinery attaches (the upstream
//! client and the stats handles), so that building a table needs no I/O here.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;

use crate::config::{BackendConfig, RouteConfig};
use crate::shadow::ShadowRule;
use crate::sticky::Sticky;
use crate::weight::{Slot, Weights};

/// One generation of the routing table: everything a request needs, built and validated before it
/// is published, never changed afterwards.
#[derive(Debug)]
pub struct RoutingTable<U> {
    generation: u64,
    /// Matching order, one entry per route host (or one for a route without hosts): the most
    /// specific host first ([`HostRank`]), then the longest path prefix, then declaration order.
    /// The first entry that matches a request is its route.
    order: Box<[Entry]>,
    routes: Box<[Route<U>]>,
    configs: Arc<[RouteConfig]>,
}

/// A route in a built table.
#[derive(Debug)]
pub struct Route<U> {
    name: Arc<str>,
    /// Lowercase hosts; empty matches any host.
    hosts: Box<[Box<str>]>,
    path_prefix: Box<str>,
    active: Slot,
    /// [`RouteConfig::backup`].
    backup: Option<Slot>,
    weights: Weights,
    backends: [Backend<U>; 2],
    sticky: Option<Sticky>,
    override_header: Option<HeaderName>,
    response_timeout: Option<Duration>,
    /// Shadow traffic, when the route mirrors requests to its preview.
    shadow: Option<Arc<ShadowRule>>,
}

/// A backend in a built table: its endpoints, its round-robin cursor and the machinery's payload.
#[derive(Debug)]
pub struct Backend<U> {
    slot: Slot,
    endpoints: Arc<[SocketAddr]>,
    next: AtomicUsize,
    upstream: U,
}

// === impl RoutingTable ===

impl<U> RoutingTable<U> {
    /// Builds a table from route configs that have already been validated.
    ///
    /// `upstream(route, slot, backend)` builds each backend's payload; it is called once per backend,
    /// blue before green, in declaration order.
    pub fn build<F>(generation: u64, configs: Vec<RouteConfig>, mut upstream: F) -> RoutingTable<U>
    where
        F: FnMut(&RouteConfig, Slot, &BackendConfig) -> U,
    {
        let routes: Box<[Route<U>]> = configs
            .iter()
            .map(|config| Route::build(config, &mut upstream))
            .collect();
        let mut order: Vec<Entry> = routes
            .iter()
            .enumerate()
            .flat_map(|(i, route)| {
                let hosts = route.hosts.len();
                (0..hosts.max(1)).map(move |k| Entry {
                    route: i,
                    host: (hosts > 0).then_some(k),
                })
            })
            .collect();
        // Stable sort: equally specific hosts and equal prefixes keep declaration order.
        order.sort_by_key(|e| {
            let route = &routes[e.route];
            let rank = e
                .host
                .map_or(HostRank::Any, |k| HostRank::of(&route.hosts[k]));
            (
                std::cmp::Reverse(rank),
                std::cmp::Reverse(route.path_prefix.len()),
            )
        });
        RoutingTable {
            generation,
            order: order.into(),
            routes,
            configs: configs.into(),
        }
    }

    /// Makes every route's minted sticky cookie carry `Secure`: for a TLS listener (RFC 6265
    /// §4.1.2.5). Done once per table, so the request path checks nothing.
    pub fn secure_cookies(mut self) -> RoutingTable<U> {
        for route in self.routes.iter_mut() {
            if let Some(sticky) = &mut route.sticky {
                sticky.secure_cookie();
            }
        }
        self
    }

    /// A table without routes, generation 0: the placeholder before the first real table.
    pub fn empty() -> RoutingTable<U> {
        RoutingTable {
            generation: 0,
            order: Box::default(),
            routes: Box::default(),
            configs: Arc::from(Vec::new()),
        }
    }

    /// The generation number: rises by exactly one per published table, except for the first
    /// table after a binary upgrade, which continues above the predecessor's last
    /// ([`crate::Proxy::inherit_routes`]).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The route configs this table was built from, in declaration order.
    pub fn configs(&self) -> &Arc<[RouteConfig]> {
        &self.configs
    }

    /// The routes in declaration order.
    pub fn routes(&self) -> &[Route<U>] {
        &self.routes
    }

    /// The route named `name`.
    pub fn route(&self, name: &str) -> Option<&Route<U>> {
        self.routes.iter().find(|r| &*r.name == name)
    }

    /// The route for a request: among routes whose hosts match `host` and whose prefix matches
    /// `path`, the most specific host entry that matches wins (an exact name before a wildcard, a
    /// longer wildcard before a shorter one, any of them before a route without hosts:
    /// [`HostRank`]), then the longest prefix, then the first declared. The host comes first as
    /// Gateway API ranks HTTPRoute rules (hostname characters before path characters), Envoy picks
    /// a virtual host before its routes and nginx a `server_name` before its locations: a route
    /// for `shop.example` on `/` takes `shop.example/api/x` from an any-host route on `/api/`.
    ///
    /// Hosts compare case-insensitively with any `:port` and the trailing dot of an absolute name
    /// removed ([`strip_root_dot`]), and IPv6 literals by address ([`normal_ipv6`]); a wildcard
    /// entry matches the names under it ([`host_matches`]). A route without hosts matches any
    /// host; a request without a host matches only such routes.
    pub fn match_route(&self, host: Option<&str>, path: &str) -> Option<&Route<U>> {
        let host = host.map(|h| strip_root_dot(strip_port(h)));
        // An IPv6 literal has many spellings (`[::1]`, `[0:0::1]`): compared in the one the
        // table's entries were written in. Other hosts borrow.
        let v6 = host.and_then(normal_ipv6);
        let host = v6.as_deref().or(host);
        self.order
            .iter()
            .find(|e| {
                let route = &self.routes[e.route];
                let host_ok = match (e.host, host) {
                    (None, _) => true,
                    (Some(k), Some(host)) => host_matches(&route.hosts[k], host),
                    (Some(_), None) => false,
                };
                host_ok && route.matches_path(path)
            })
            .map(|e| &self.routes[e.route])
    }
}

/// One entry of a table's matching order: a route, and which of its hosts (`None`: the route
/// has none and matches any host).
#[derive(Clone, Copy, Debug)]
struct Entry {
    route: usize,
    host: Option<usize>,
}

/// How specific a route's host entry is, the first criterion between routes that match a request
/// (before the path prefix's length): an exact name (`shop.example.com`) ranks above any wildcard, a
/// wildcard above a shorter one (`*.eu.example.com` above `*.example.com`: the longer suffix by
/// bytes), and any of them above a route without hosts. This is how Envoy picks a virtual host
/// and nginx a `server_name`, and Gateway API ranks HTTPRoute `hostnames` ("characters in a
/// matching non-wildcard hostname", then in a matching hostname). Two entries that rank the same
/// and match one host are the same entry, so the first declared route keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum HostRank {
    /// A route without hosts: matches any host.
    Any,
    /// `*.<suffix>`, with the length in bytes of `.<suffix>`.
    Wildcard(usize),
    /// One name.
    Exact,
}

impl HostRank {
    /// The rank of a route's `hosts` entry (already lowercase, root dot removed).
    pub(crate) fn of(entry: &str) -> HostRank {
        match entry.strip_prefix('*') {
            Some(suffix) => HostRank::Wildcard(suffix.len()),
            None => HostRank::Exact,
        }
    }
}

/// A route's `hosts` entry as the table compares it: without an absolute name's trailing dot
/// ([`strip_root_dot`]), lower case, an IPv6 literal in its canonical spelling ([`normal_ipv6`]).
pub(crate) fn normal_host(entry: &str) -> String {
    let entry = strip_root_dot(entry);
    normal_ipv6(entry).unwrap_or_else(|| entry.to_ascii_lowercase())
}

/// The canonical spelling (RFC 5952 §4: lowercase, longest zero run as `::`) of a bracketed IPv6
/// literal host, `[0:0::1]` → `[::1]`; `None` for any other host (kept as it is), including a
/// malformed literal. An allocation only for a request whose host is an IPv6 literal.
pub(crate) fn normal_ipv6(host: &str) -> Option<String> {
    let inner = host.strip_prefix('[')?.strip_suffix(']')?;
    let address: std::net::Ipv6Addr = inner.parse().ok()?;
    Some(format!("[{address}]"))
}

/// Whether a route's `hosts` entry `mine` (lowercase) matches the request's `host` (`:port` and
/// root dot removed), ASCII case ignored: the same name, or for a wildcard `*.example.com` any
/// name that ends in `.example.com` after one or more labels of its own (`shop.example.com`,
/// `a.b.example.com`; not `example.com`), as Gateway API matches an HTTPRoute's wildcard
/// `hostnames` and nginx a `server_name *.example.com`.
#[inline]
pub(crate) fn host_matches(mine: &str, host: &str) -> bool {
    match mine.strip_prefix('*') {
        None => mine.eq_ignore_ascii_case(host),
        Some(suffix) => {
            host.len() > suffix.len()
                && host.as_bytes()[host.len() - suffix.len()..]
                    .eq_ignore_ascii_case(suffix.as_bytes())
        }
    }
}

/// Removes a `:port` suffix, keeping IPv6 literals (`[::1]:80` → `[::1]`) whole.
///
/// One backward scan for the last `:` or `]`: a `:` after any `]` starts the port, and a `]` last
/// ends an IPv6 literal without one. (Two `str::rfind`s cost ~180 instructions per request in
/// the callgrind profile of `bench/profile.sh`; this is a short byte loop.)
pub(crate) fn strip_port(host: &str) -> &str {
    match host.bytes().rposition(|b| b == b':' || b == b']') {
        Some(colon) if host.as_bytes()[colon] == b':' => &host[..colon],
        _ => host,
    }
}

/// Removes the trailing dot of an absolute domain name (`shop.example.` → `shop.example`): both
/// name one host (RFC 1034 §3.1), and a client given a fully qualified name with its dot (a
/// resolver search-list workaround, `curl http://shop.example./`) sends it in `Host`. Matched
/// with it, such a request got 404 from a route on `shop.example` (trial 17, T5); nginx drops the
/// dot from the host it matches `server_name` against. A lone `.` is kept.
pub(crate) fn strip_root_dot(host: &str) -> &str {
    match host.strip_suffix('.') {
        Some(name) if !name.is_empty() => name,
        _ => host,
    }
}

// === impl Route ===

impl<U> Route<U> {
    fn build<F>(config: &RouteConfig, upstream: &mut F) -> Route<U>
    where
        F: FnMut(&RouteConfig, Slot, &BackendConfig) -> U,
    {
        let backend = |slot: Slot, upstream: &mut F| {
            let cfg = config.backend(slot);
            Backend {
                slot,
                endpoints: cfg.endpoints.as_slice().into(),
                next: AtomicUsize::new(0),
                upstream: upstream(config, slot, cfg),
            }
        };
        let blue = backend(Slot::Blue, upstream);
        let green = backend(Slot::Green, upstream);
        Route {
            name: config.name.as_str().into(),
            hosts: config.hosts.iter().map(|h| normal_host(h).into()).collect(),
            path_prefix: config.path_prefix.as_str().into(),
            active: config.active,
            backup: config.backup,
            weights: config.weights(),
            backends: [blue, green],
            sticky: config.sticky.as_ref().and_then(Sticky::of),
            response_timeout: config.response_timeout,
            shadow: config.shadow.as_ref().map(|c| Arc::new(ShadowRule::of(c))),
            override_header: config
                .override_header
                .as_deref()
                .and_then(|h| HeaderName::try_from(h).ok()),
        }
    }

    /// Where the route takes its stickiness key from, if it is sticky.
    pub fn sticky(&self) -> Option<&Sticky> {
        self.sticky.as_ref()
    }

    /// The tester override header, if the route has one.
    pub fn override_header(&self) -> Option<&HeaderName> {
        self.override_header.as_ref()
    }

    /// The route's own request timeout (see [`RouteConfig::response_timeout`]), if it has one.
    pub fn response_timeout(&self) -> Option<Duration> {
        self.response_timeout
    }

    /// The route's shadow traffic rule, if it mirrors requests to its preview.
    #[inline]
    pub fn shadow(&self) -> Option<&Arc<ShadowRule>> {
        self.shadow.as_ref()
    }

    /// The route's unique name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The slot that serves before a rollout.
    pub fn active(&self) -> Slot {
        self.active
    }

    /// The configured split, in basis points.
    pub fn weights(&self) -> Weights {
        self.weights
    }

    /// The backend in `slot`.
    pub fn backend(&self, slot: Slot) -> &Backend<U> {
        &self.backends[slot.index()]
    }

    /// Both backends, blue first.
    pub fn backends(&self) -> &[Backend<U>; 2] {
        &self.backends
    }

    /// The weighted pick for a request whose uniform draw is `r` in `0..10000` (see
    /// [`crate::weight::draw_bp`]); `None` when the route is disabled (both weights 0).
    #[inline]
    pub fn pick(&self, r: u32) -> Option<&Backend<U>> {
        self.weights.pick(r).map(|slot| self.backend(slot))
    }

    /// Whether the backend in `slot` may take requests the other backend cannot serve (its
    /// endpoints down, its connect failed): it has weight, it is the active slot, or it is the
    /// route's [backup](RouteConfig::backup). A weight-0 preview never gets a request, overflow
    /// and retries included; the active slot at weight 0 (the last step before promotion) still
    /// backs the preview up, and the retiring backend backs up the promoted one until it is
    /// retired.
    pub fn takes_overflow(&self, slot: Slot) -> bool {
        self.weights.of(slot) > 0 || slot == self.active || self.backup == Some(slot)
    }

    /// Where a request whose connect to `failed` failed could be retried, as the configuration
    /// allows (health aside): the other backend if it has endpoints and
    /// [takes overflow](Route::takes_overflow), else the same backend when it has another
    /// endpoint.
    pub fn retry_target(&self, failed: Slot) -> Option<&Backend<U>> {
        let other = self.backend(failed.other());
        if self.takes_overflow(other.slot) && !other.endpoints.is_empty() {
            return Some(other);
        }
        let same = self.backend(failed);
        (same.endpoints.len() > 1).then_some(same)
    }

    fn matches_path(&self, path: &str) -> bool {
        let prefix = &*self.path_prefix;
        match path.strip_prefix(prefix) {
            None => false,
            Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
        }
    }
}

// === impl Backend ===

impl<U> Backend<U> {
    /// The slot this backend fills.
    pub fn slot(&self) -> Slot {
        self.slot
    }

    /// The endpoints, in config order.
    pub fn endpoints(&self) -> &Arc<[SocketAddr]> {
        &self.endpoints
    }

    /// The machinery's payload for this backend.
    pub fn upstream(&self) -> &U {
        &self.upstream
    }

    /// The next endpoint index, round-robin (the `round_robin` balance policy, see
    /// [`crate::balance`]): every endpoint gets an equal share (±1 request),
    /// whatever the other backend holds (case C04). `None` when the backend has no endpoints.
    #[inline]
    pub fn pick_endpoint(&self) -> Option<usize> {
        let n = self.endpoints.len();
        if n == 0 {
            return None;
        }
        Some(self.next.fetch_add(1, Ordering::Relaxed) % n)
    }
}

#[cfg(test)]
mod tests;
