//! [`Proxy`], the handle to a running data plane: the one `ArcSwap<RoutingTable>`, its serialised
//! writers, the per-backend stats, and the entry points for serving and the control path.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::balance::Balance;
use crate::config::{
    check_own_addresses, check_routes, ConfigError, ProxyConfig, RouteConfig, UpstreamConfig,
};
use crate::error::{Error, Result};
use crate::health::{HealthRegistry, ProxyEvent};
use crate::limits::Limits;
use crate::metrics::ProxyMetrics;
use crate::owner::{RouteOwner, WeightWriter};
use crate::reload::FileWeights;
use crate::stats::{BackendSnapshot, BackendStats};
use crate::status::Status;
use crate::table::RoutingTable;
use crate::tls::Tls;
use crate::upstream::Upstream;
use crate::weight::{Slot, Weights};

/// The table the request path reads: routes with their upstream pools attached.
pub(crate) type Table = RoutingTable<Arc<Upstream>>;

/// Stats by (route name, slot).
pub(crate) type StatsMap = BTreeMap<(Arc<str>, Slot), Arc<BackendStats>>;

/// The data plane: serves traffic with [`Proxy::serve`] and takes routing changes from the control
/// path ([`Proxy::update`], [`Proxy::set_weights`]).
///
/// Cheap to clone (one `Arc`); clones share everything.
///
/// Every change publishes one complete routing table with a generation one above the last; a request
/// reads the table once and keeps that snapshot to its end, so no request ever sees half a change
/// and none is dropped by one (case C15).
#[derive(Clone, Debug)]
pub struct Proxy {
    pub(crate) shared: Arc<Shared>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) table: ArcSwap<Table>,
    /// Serialises writers; the request path never takes it. Holds the successor a binary upgrade
    /// is handing the routes to ([`Proxy::hand_routes_over`]): while set, no route changes.
    writer: Mutex<Option<HandingOver>>,
    /// Stats by (route, slot), kept across tables so counters survive swaps and endpoint changes.
    pub(crate) stats: Mutex<StatsMap>,
    pub(crate) upstream: UpstreamConfig,
    pub(crate) trust_forwarded_for: bool,
    /// Connections begin with a PROXY protocol header (`ProxyConfig::proxy_protocol`).
    pub(crate) proxy_protocol: bool,
    /// Connections closed for a missing or malformed PROXY protocol header.
    pub(crate) proxy_protocol_refused: std::sync::atomic::AtomicU64,
    /// HTTP/2 connections closed with GOAWAY `ENHANCE_YOUR_CALM` for premature stream resets
    /// past `limits.h2_max_premature_resets` (`crossfade_h2_calm_downs_total`).
    pub(crate) h2_calm_downs: std::sync::atomic::AtomicU64,
    /// Client connections closed because a write waited past `limits.send_timeout`
    /// (`crossfade_send_timeouts_total`).
    pub(crate) send_timeouts: std::sync::atomic::AtomicU64,
    /// HTTP/2 streams reset because a response chunk waited past `limits.send_timeout` for the
    /// client to take it (`crossfade_h2_stream_send_timeouts_total`).
    pub(crate) h2_stream_send_timeouts: std::sync::atomic::AtomicU64,
    pub(crate) drain_timeout: Duration,
    /// True while [`Proxy::serve`] accepts connections.
    pub(crate) serving: AtomicBool,
    /// Set by [`Proxy::hand_over`]: the next stop of [`Proxy::serve`] drains for a successor.
    pub(crate) handing_over: AtomicBool,
    /// True while draining (shutdown or handover): HTTP/1.x responses carry `Connection: close`.
    pub(crate) draining: AtomicBool,
    /// Set when a stop drops the connections its drain left after `drain_timeout`: the requests
    /// they carry are not counted as client aborts ([`Shared::count_client_abort`]), and their
    /// access log lines say `drain_timeout` (the access log holds this same flag).
    pub(crate) abandoning: Arc<AtomicBool>,
    /// How long idle HTTP/1.x keep-alive connections are served on once a drain began.
    pub(crate) drain_grace: Duration,
    /// Endpoint health, breakers and checker tasks, kept across tables.
    pub(crate) health: HealthRegistry,
    /// The listener's connection and request limits, and their shed counters.
    pub(crate) limits: Limits,
    /// TLS termination, when `tls` is configured.
    pub(crate) tls: Option<Arc<Tls>>,
    /// The proxy's own answers, by route, backend, reason and status class.
    pub(crate) local: crate::local::LocalReplies,
    /// Owners by route name; changed only under `writer`, so a manual write cannot slip in
    /// between an owner's check and its claim.
    pub(crate) owners: Mutex<BTreeMap<String, RouteOwner>>,
    /// The config file's weights at its last load: the baseline of [`Proxy::reload_routes`].
    pub(crate) file_weights: Mutex<FileWeights>,
    /// Where every published table's weights are saved first (`state_file`), once installed by
    /// [`Proxy::keep_weights_in`].
    pub(crate) weight_store: Mutex<Option<Arc<dyn crate::saved::WeightStore>>>,
    /// This proxy's `Via` entries (`None`: `via.enabled` is false), made at their first use (the
    /// first request, or [`Proxy::via_pseudonym`]) unless [`Proxy::inherit_via`] came first.
    via: Arc<crate::via::Lazy>,
    /// The configured listen and admin addresses: no route may have one as an endpoint.
    own: [(std::net::SocketAddr, &'static str); 2],
    /// The runtime of the first [`Proxy::serve`]: where a table swap made outside any runtime
    /// starts its drain ([`crate::drain`]).
    pub(crate) runtime: std::sync::OnceLock<tokio::runtime::Handle>,
    /// The access log, when `access_log` is not `off`.
    pub(crate) access: Option<crate::access::AccessLog>,
    /// Request IDs, when `request_id` is set.
    pub(crate) request_ids: Option<crate::request_id::RequestIds>,
}

/// A binary upgrade in progress: the routes were handed to a successor ([`Proxy::hand_routes_over`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct HandingOver {
    /// The successor's process ID, when known.
    successor: Option<u32>,
}

/// What a serving process hands its successor at a binary upgrade, as of one instant
/// ([`Proxy::hand_routes_over`]).
#[derive(Clone, Debug)]
pub struct HandedRoutes {
    /// The routes in force, in declaration order, with their current weights.
    pub routes: Vec<RouteConfig>,
    /// The config file's weights at its last load (the reload baseline, [`crate::reload`]).
    pub file_weights: FileWeights,
    /// The generation of the table in force.
    pub generation: u64,
    /// The endpoints of routes with active checks that passed a check, so that the successor
    /// fails open to them as this process would ([`Proxy::inherit_passed_checks`]).
    pub passed: Vec<crate::health::PassedCheck>,
    /// The backends whose circuit breaker is tripped, which stay so in the successor
    /// ([`Proxy::inherit_tripped_breakers`]).
    pub tripped: Vec<crate::health::TrippedBreaker>,
    /// The endpoints outlier detection ejected (or that are back from an ejection), which keep
    /// their ejection in the successor ([`Proxy::inherit_ejections`]).
    pub ejected: Vec<crate::health::EjectedEndpoint>,
}

// === impl Proxy ===

impl Proxy {
    /// Validates `config` and builds the first routing table (generation 1). `metrics` starts
    /// exporting this proxy's numbers.
    ///
    /// # Errors
    /// [`Error::Config`] listing every problem of `config`, or naming `tls.cert` or `tls.key` when
    /// the TLS certificate and key cannot be loaded, or `access_log` when its file cannot be
    /// opened for appending.
    pub fn new(config: &ProxyConfig, metrics: ProxyMetrics) -> Result<Proxy> {
        config.validate()?;
        let tls = config.tls.as_ref().map(Tls::new).transpose()?.map(Arc::new);
        for warning in tls.iter().flat_map(|tls| tls.warnings()) {
            tracing::warn!("{warning}");
        }
        let abandoning = Arc::new(AtomicBool::new(false));
        let access = config.access_log.start(Arc::clone(&abandoning))?;
        let shared = Arc::new(Shared {
            table: ArcSwap::from_pointee(RoutingTable::empty()),
            writer: Mutex::new(None),
            stats: Mutex::new(BTreeMap::new()),
            upstream: config.upstream.clone(),
            trust_forwarded_for: config.trust_forwarded_for,
            proxy_protocol: config.proxy_protocol,
            proxy_protocol_refused: std::sync::atomic::AtomicU64::new(0),
            h2_calm_downs: std::sync::atomic::AtomicU64::new(0),
            send_timeouts: std::sync::atomic::AtomicU64::new(0),
            h2_stream_send_timeouts: std::sync::atomic::AtomicU64::new(0),
            drain_timeout: config.drain_timeout,
            serving: AtomicBool::new(false),
            handing_over: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            abandoning,
            drain_grace: config.drain_grace,
            health: HealthRegistry::new(),
            limits: Limits::new(&config.limits),
            tls,
            local: crate::local::LocalReplies::default(),
            owners: Mutex::new(BTreeMap::new()),
            file_weights: Mutex::new(FileWeights::of(&config.routes)),
            weight_store: Mutex::new(None),
            via: Arc::new(crate::via::Lazy::new(config.via.clone())),
            own: config.own_addresses(),
            runtime: std::sync::OnceLock::new(),
            access,
            request_ids: config
                .request_id
                .as_ref()
                .map(crate::request_id::RequestIds::new),
        });
        let table = shared.build(1, config.routes.clone(), None);
        shared.health.sync(table.configs());
        shared.table.store(Arc::new(table));
        metrics.attach(&shared);
        Ok(Proxy { shared })
    }

    /// The `received-by` of this proxy's `Via` entries (RFC 9110 §7.6.3): `via.pseudonym`, or the
    /// random one made at start; `None` when `via.enabled` is false.
    pub fn via_pseudonym(&self) -> Option<&str> {
        self.shared.via().map(|via| via.pseudonym())
    }

    /// Takes `pseudonym` (a predecessor's, [`crate::handover::Inherited::via`]) as this proxy's
    /// `Via` pseudonym, so that a binary upgrade keeps the name: only when `via` is enabled with
    /// no configured pseudonym, `pseudonym` is a valid one, and nothing has used the proxy's own
    /// yet (call it before [`Proxy::serve`]). Returns whether it was taken.
    pub fn inherit_via(&self, pseudonym: &str) -> bool {
        let config = self.shared.via.config();
        if !config.enabled.0 || config.pseudonym.is_some() {
            return false;
        }
        match crate::via::Via::named(pseudonym.to_owned()) {
            Some(via) => self.shared.via.inherit(via),
            None => false,
        }
    }

    /// Reopens the access log's file at its configured path (`access_log`), for a SIGHUP after
    /// logrotate renamed it: the writer opens the path anew before its next write, and keeps the
    /// old file if it cannot. Returns whether there is a file to reopen (false for `off` and
    /// `stdout`).
    pub fn reopen_access_log(&self) -> bool {
        match &self.shared.access {
            Some(log) if log.is_file() => {
                log.reopen();
                true
            }
            _ => false,
        }
    }

    /// The generation of the table in force: 1 after [`Proxy::new`], then one more per change
    /// (after a binary upgrade, counted on from the predecessor's: [`Proxy::inherit_routes`]).
    pub fn generation(&self) -> u64 {
        self.shared.table.load().generation()
    }

    /// The route configs in force, in declaration order.
    pub fn routes(&self) -> Vec<RouteConfig> {
        self.shared.table.load().configs().to_vec()
    }

    /// The config in force of the route named `name` (a copy of that one route's), or `None`
    /// when no route has that name.
    pub fn route(&self, name: &str) -> Option<RouteConfig> {
        let table = self.shared.table.load();
        table.configs().iter().find(|r| r.name == name).cloned()
    }

    /// Edits the routes atomically: `edit` gets a copy of the current configs; the result is
    /// validated, built into a complete table and published once with the next generation.
    ///
    /// Writers are serialised; requests are never blocked.
    ///
    /// Upgraded connections (WebSockets) to an endpoint the edit removes, from its backend or with
    /// its route, are drained: they get `drain_timeout` to end on their own, and are then closed as
    /// by [`Proxy::close_upgraded`] (1001 "going away" for WebSockets; module `drain`).
    /// Those to endpoints still listed are left alone, whatever the weights.
    ///
    /// While a binary upgrade hands the routes to a successor ([`Proxy::hand_routes_over`]),
    /// every edit is refused with [`Error::HandingOver`]: the successor has the routes as they
    /// were, so an edit made here would be lost.
    ///
    /// With a weight store installed ([`Proxy::keep_weights_in`], `state_file`), the edited routes'
    /// weights are saved before the table is published.
    ///
    /// # Errors
    /// `edit`'s own error, [`Error::HandingOver`] during a handover, [`Error::Config`] when the
    /// edited routes break a rule, or [`Error::WeightsNotSaved`] when the weight store cannot save
    /// them. On error nothing changes and the generation stays.
    pub fn update<F>(&self, edit: F) -> Result<u64>
    where
        F: FnOnce(&mut Vec<RouteConfig>) -> Result<()>,
    {
        self.publish(edit, 0)
    }

    /// [`Proxy::update`] publishing a generation above both the current one and `floor`.
    fn publish<F>(&self, edit: F, floor: u64) -> Result<u64>
    where
        F: FnOnce(&mut Vec<RouteConfig>) -> Result<()>,
    {
        let writer = self.lock_writer();
        if let Some(handing_over) = *writer {
            return Err(Error::HandingOver {
                successor: handing_over.successor,
            });
        }
        let current = self.shared.table.load_full();
        let mut routes = current.configs().to_vec();
        edit(&mut routes)?;
        let mut problems = Vec::new();
        check_routes(&routes, &mut problems);
        check_own_addresses(&routes, &self.shared.own, &mut problems);
        ConfigError::from_problems(problems)?;
        // Saved before it is published: a change that cannot be saved is not made.
        self.save_weights(&routes)?;
        let generation = current.generation().max(floor) + 1;
        let table = self.shared.build(generation, routes, Some(&current));
        self.shared.health.sync(table.configs());
        let removed = crate::drain::removed(&current, &table);
        self.shared.table.store(Arc::new(table));
        tracing::debug!(generation, "routing table published");
        crate::drain::start(&self.shared, removed);
        Ok(generation)
    }

    /// Takes over a predecessor's routes in force at a binary upgrade ([`crate::handover`]):
    /// publishes `routes` with a generation one above both this proxy's and `generation`, the
    /// predecessor's last one, so that generations keep rising across the upgrade and a client
    /// that saw the predecessor's can tell a newer table. `None` (a predecessor that does not send
    /// it) continues this proxy's own numbering. Call it before serving.
    ///
    /// # Errors
    /// As [`Proxy::update`] ([`Error::Config`] when the routes break this binary's rules).
    pub fn inherit_routes(&self, routes: Vec<RouteConfig>, generation: Option<u64>) -> Result<u64> {
        self.publish(
            |mine| {
                *mine = routes;
                Ok(())
            },
            generation.unwrap_or(0),
        )
    }

    /// Takes over which endpoints passed a health check in the predecessor of a binary upgrade
    /// (its [`HandedRoutes::passed`]), after [`Proxy::inherit_routes`]: they still wait for their
    /// first probe here, but a route whose checks now hold out every endpoint fails open to them
    /// (`routes[].fail_open`) as the predecessor did. Without it, a route failing open (a probe
    /// path typo, a `/healthz` that answers 404) answered every request 503 from the upgrade on:
    /// no endpoint had passed a check in the new process.
    pub fn inherit_passed_checks(&self, passed: &[crate::health::PassedCheck]) {
        self.shared.health.inherit_passed(passed);
    }

    /// Trips the breakers that were tripped in the predecessor of a binary upgrade (its
    /// [`HandedRoutes::tripped`]), after [`Proxy::inherit_routes`]: a trip lasts until the
    /// route's weights are next set, and an upgrade sets none. Without it, the preview a breaker
    /// had taken out got its weight's share of requests (and their errors) again from the
    /// upgrade on.
    pub fn inherit_tripped_breakers(&self, tripped: &[crate::health::TrippedBreaker]) {
        self.shared.health.inherit_trips(tripped);
    }

    /// Gives the endpoints that outlier detection had ejected in the predecessor of a binary
    /// upgrade (its [`HandedRoutes::ejected`]) their ejections here, after
    /// [`Proxy::inherit_routes`]: held out for the rest of their backoff, with their ejection
    /// count. Without it, an ejected endpoint got requests, and their failures, again from the
    /// upgrade on until it was ejected anew.
    pub fn inherit_ejections(&self, ejected: &[crate::health::EjectedEndpoint]) {
        self.shared.health.inherit_ejections(ejected);
    }

    /// Hands the routes in force to `successor` (its process ID, when known), at a binary upgrade
    /// ([`crate::handover`]): returns them with the reload baseline and the generation, all as of
    /// one instant, and from then on refuses every change of the routes ([`Proxy::update`],
    /// weights, shadow, reloads) with [`Error::HandingOver`], which the admin API answers 503 with
    /// `Retry-After`: a change acknowledged here would not be in the successor's routes. Writes
    /// in progress finish first (they hold the writer lock). [`Proxy::keep_routes`] ends it when
    /// the handover fails.
    pub fn hand_routes_over(&self, successor: Option<u32>) -> HandedRoutes {
        let mut writer = self.lock_writer();
        *writer = Some(HandingOver { successor });
        let table = self.shared.table.load();
        HandedRoutes {
            routes: table.configs().to_vec(),
            file_weights: self.file_weights(),
            generation: table.generation(),
            passed: self.shared.health.passed(),
            tripped: self.shared.health.tripped(),
            ejected: self.shared.health.ejected(),
        }
    }

    /// Whether the routes are handed to a successor ([`Proxy::hand_routes_over`], not undone by
    /// [`Proxy::keep_routes`]): `Some` with the successor's process ID when known.
    pub fn handing_over_to(&self) -> Option<Option<u32>> {
        self.lock_writer()
            .map(|handing_over| handing_over.successor)
    }

    /// Accepts changes of the routes again after [`Proxy::hand_routes_over`]: the successor
    /// failed or went away before it took over, and this process serves on.
    pub fn keep_routes(&self) {
        *self.lock_writer() = None;
    }

    /// Sets the split of `route` (one table generation).
    ///
    /// # Errors
    /// [`Error::UnknownRoute`]; [`Error::Config`] when the weights do not sum to 10000 or 0, or give
    /// weight to a backend without endpoints.
    pub fn set_weights(&self, route: &str, weights: Weights) -> Result<u64> {
        self.set_weights_as(route, weights, WeightWriter::Owner)
    }

    /// Sets the split of `route` on behalf of `writer` (one table generation): an
    /// [`WeightWriter::Operator`] is refused while the route has an owner ([`Proxy::claim`]).
    ///
    /// # Errors
    /// [`Error::Owned`] for an operator's write to an owned route; otherwise as
    /// [`Proxy::set_weights`].
    pub fn set_weights_as(
        &self,
        route: &str,
        weights: Weights,
        writer: WeightWriter,
    ) -> Result<u64> {
        let generation = self.update(|routes| {
            if writer != WeightWriter::Owner {
                if let Some(owner) = self.owner(route) {
                    if writer == WeightWriter::Operator {
                        let route = route.to_owned();
                        return Err(Error::Owned { route, owner });
                    }
                    tracing::warn!(%route, %owner, ?weights, "weights forced over the route's owner");
                }
            }
            let config = routes
                .iter_mut()
                .find(|r| r.name == route)
                .ok_or_else(|| Error::UnknownRoute(route.to_owned()))?;
            config.set_weights(weights);
            Ok(())
        })?;
        // Setting the weights is the decision a tripped breaker waits for.
        self.shared.health.reset_breaker(route);
        Ok(generation)
    }

    /// Withdraws `endpoint` of `route`'s backend `slot` from every request (`withdrawn: true`),
    /// or restores it (`false`), without a new table generation: the weights and endpoint lists
    /// stay as they are, and the endpoint's health state with them. For what runs the
    /// endpoint's server and knows it is gone (`crossfade run`'s supervisor, from the exit of a
    /// process until its restart passed readiness): whatever answers on its address meanwhile
    /// is not the backend, so no request goes there, failing open included (Envoy's EDS
    /// `health_status`, which a control plane sets whatever the checks say). A withdrawal lasts
    /// until restored or until the endpoint leaves the backend; `/status` shows it
    /// (`withdrawn: true`). Requests already sent to it go on.
    ///
    /// Returns whether it changed; `false` too when the backend has no such endpoint (its
    /// endpoints were replaced meanwhile).
    ///
    /// # Errors
    /// [`Error::UnknownRoute`] when the table in force has no such route.
    pub fn withdraw(
        &self,
        route: &str,
        slot: Slot,
        endpoint: SocketAddr,
        withdrawn: bool,
    ) -> Result<bool> {
        // Serialised with table edits, so that the endpoint's state is the one the table uses.
        let _writer = self.lock_writer();
        if self.shared.table.load().route(route).is_none() {
            return Err(Error::UnknownRoute(route.to_owned()));
        }
        let changed = self
            .shared
            .health
            .set_withdrawn(route, slot, endpoint, withdrawn)
            .unwrap_or(false);
        if changed && withdrawn {
            tracing::info!(%route, backend = %slot, %endpoint, "endpoint withdrawn: its server is gone, no request goes to it");
        } else if changed {
            tracing::info!(%route, backend = %slot, %endpoint, "endpoint restored: its server is back");
        }
        Ok(changed)
    }

    /// Makes `owner` the owner of `route` (replacing any previous owner): from now on operators'
    /// weight writes are refused unless forced. Serialised with every writer.
    ///
    /// # Errors
    /// [`Error::UnknownRoute`] when the table in force has no such route.
    pub fn claim(&self, route: &str, owner: RouteOwner) -> Result<()> {
        let _writer = self.lock_writer();
        if self.shared.table.load().route(route).is_none() {
            return Err(Error::UnknownRoute(route.to_owned()));
        }
        tracing::debug!(%route, %owner, "route claimed");
        self.owners().insert(route.to_owned(), owner);
        Ok(())
    }

    /// Gives up `owner`'s ownership of `route` (the same rollout, promoted or not); does nothing
    /// when another rollout owns it now.
    pub fn release(&self, route: &str, owner: &RouteOwner) {
        let _writer = self.lock_writer();
        let mut owners = self.owners();
        if owners.get(route).map(|o| o.rollout) == Some(owner.rollout) {
            owners.remove(route);
            tracing::debug!(%route, %owner, "route released");
        }
    }

    /// The owner of `route`, if any.
    pub fn owner(&self, route: &str) -> Option<RouteOwner> {
        self.owners().get(route).cloned()
    }

    fn owners(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, RouteOwner>> {
        self.shared
            .owners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn lock_writer(&self) -> std::sync::MutexGuard<'_, Option<HandingOver>> {
        self.shared
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Health events ([`ProxyEvent`]): breaker trips, endpoints taken out and back. Each receiver
    /// sees the events sent after it subscribed.
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<ProxyEvent> {
        self.shared.health.subscribe()
    }

    /// The counters of `route`'s backend in `slot` (they survive table swaps), or `None` when the
    /// table in force has no such route.
    pub fn backend_stats(&self, route: &str, slot: Slot) -> Option<BackendSnapshot> {
        let table = self.shared.table.load();
        let route = table.route(route)?;
        Some(route.backend(slot).upstream().stats().snapshot())
    }

    /// The shadow counters of requests mirrored to `route`'s backend in `slot` (they survive
    /// table swaps), or `None` when the table in force has no such route.
    pub fn shadow_stats(&self, route: &str, slot: Slot) -> Option<crate::ShadowSnapshot> {
        let table = self.shared.table.load();
        let route = table.route(route)?;
        Some(route.backend(slot).upstream().stats().shadow().snapshot())
    }

    /// Turns shadow traffic on `route` on with `shadow`, or off with `None` (one table
    /// generation). Mirrored exchanges already in flight finish and are counted.
    ///
    /// # Errors
    /// [`Error::UnknownRoute`]; [`Error::Config`] when `shadow` breaks a rule (naming
    /// `routes[i].shadow.<field>`).
    pub fn set_shadow(&self, route: &str, shadow: Option<crate::ShadowConfig>) -> Result<u64> {
        self.update(|routes| {
            let config = routes
                .iter_mut()
                .find(|r| r.name == route)
                .ok_or_else(|| Error::UnknownRoute(route.to_owned()))?;
            config.shadow = shadow;
            Ok(())
        })
    }

    /// Closes every upgraded connection open now to `route`'s backend in `slot`, because its drain
    /// deadline passed: a WebSocket gets a close frame 1001 "going away" (RFC 6455 §7.4.1) on both
    /// sides at a frame boundary, then a graceful TCP shutdown (FIN); any other upgrade gets the
    /// graceful shutdown. Each close takes at most 2 s; the backend's `upgraded` count reaches 0
    /// when they are done. Connections upgraded later are not affected.
    ///
    /// Returns how many were open, or `None` when the proxy never had that route. Works on a
    /// backend that already left the table, since its counters outlive it.
    pub fn close_upgraded(&self, route: &str, slot: Slot) -> Option<u64> {
        let stats = self
            .shared
            .stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let open = stats.get(&(Arc::from(route), slot))?.tunnels().close_all();
        if open > 0 {
            tracing::info!(%route, backend = %slot, open, "closing upgraded connections: the drain of their backend reached its deadline");
        }
        Some(open)
    }

    /// Upgraded connections open now to `route`'s backend in `slot` (0 for an unknown route), counted
    /// whether or not the backend is still in the table.
    pub fn upgraded(&self, route: &str, slot: Slot) -> u64 {
        let stats = self
            .shared
            .stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        stats
            .get(&(Arc::from(route), slot))
            .map_or(0, |s| s.tunnels().open())
    }

    /// Resolves once the first health probe round of this proxy's start is over: every endpoint
    /// of a route with active checks has the result of its first probe (passed or failed; see
    /// [`crate::health`]), which is when `GET /readyz` stops answering 503 for it. At once
    /// without such routes. Each probe ends within its route's `health.timeout`, so this does
    /// too unless checks cannot run (no tokio runtime, before [`Proxy::serve`]); a caller that
    /// must not wait longer bounds it. A binary upgrade's successor awaits it before it takes
    /// over the traffic (see [`crate::handover`]).
    pub async fn first_probes(&self) {
        self.shared.health.first_probes_done().await;
    }

    /// What `GET /status` answers: the generation and, per route, weights, endpoints and counters.
    pub fn status(&self) -> Status {
        Status::of(&self.shared)
    }

    /// Reads the TLS certificate and key files again and serves the new pair to new connections
    /// when they changed (established connections keep theirs). Returns whether a new pair is now
    /// served: false without `tls` or when the files are unchanged.
    ///
    /// # Errors
    /// [`Error::Config`] naming `tls.cert` or `tls.key` when the new pair cannot be used; the
    /// previous pair keeps serving. It is counted (`crossfade_tls_reloads_total{result="error"}`,
    /// once per distinct failure) but not logged here: the caller says it, once.
    pub fn reload_tls(&self) -> Result<bool> {
        match &self.shared.tls {
            Some(tls) => Ok(tls.reload_requested()?),
            None => Ok(false),
        }
    }

    /// Makes the next stop of [`Proxy::serve`] a handover to a successor process that now accepts
    /// on the same listening socket (a binary upgrade, see [`crate::handover`]) rather than a
    /// shutdown. Keep-alive connections are closed as in a shutdown (see [`Proxy::serve`]); the
    /// drain differs in one way: upgraded connections (WebSockets) stay open until they end or
    /// `drain_timeout` passes, and only then get 1001 "going away" (RFC 6455 §7.4.1).
    pub fn hand_over(&self) {
        self.shared.handing_over.store(true, Ordering::Relaxed);
    }

    /// Serves client connections from `listener` (HTTP/1.1, and HTTP/2: with prior knowledge in
    /// cleartext, by ALPN under `tls`) until `shutdown` completes; then stops accepting and
    /// drains for up to `drain_timeout`, and returns. The drain cuts no keep-alive connection
    /// while its client may be sending on it: HTTP/1.x responses carry `Connection: close` (RFC
    /// 9112 §9.6) and a connection with a request in flight closes after its response; HTTP/2
    /// connections get GOAWAY at once (RFC 9113 §6.8) and finish their streams; idle HTTP/1.x
    /// connections are served on for `drain_grace` (at most half of `drain_timeout`) and closed
    /// then. Under `tls` the certificate files are
    /// polled for changes while serving. The `limits` apply (see [`crate::config::LimitsConfig`]).
    /// Upgraded connections are closed at once as by [`Proxy::close_upgraded`] (WebSockets get 1001
    /// "going away") within the same drain bound.
    ///
    /// The proxy counts as serving ([`crate::status::Status::serving`], `GET /readyz`) from this
    /// call on, before the returned future is first polled: the listener already queues
    /// connections, so a caller may say it is ready (sd_notify `READY=1`) as soon as this
    /// returns. It stops counting when the accept loop stops, or when the future is dropped.
    ///
    /// # Errors
    /// None today: accept errors (such as running out of file descriptors) are logged and retried.
    pub fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> impl Future<Output = Result<()>> + Send + 'static {
        crate::server::serve(Arc::clone(&self.shared), listener, shutdown)
    }
}

// === impl Shared ===

impl Shared {
    /// Counts a request whose client went away after it waited `waited` for its answer as a
    /// client abort of `stats`' backend ([`BackendStats::record_client_abort`]), unless a stop
    /// is dropping what its drain left after `drain_timeout` ([`Shared::abandoning`]), which is
    /// the proxy's doing. True when counted. Shared by ordinary requests (`forward::Awaiting`)
    /// and upgrades (`tunnel::Awaiting`).
    #[cold]
    pub(crate) fn count_client_abort(&self, stats: &BackendStats, waited: Duration) -> bool {
        if self.abandoning.load(Ordering::Relaxed) {
            return false;
        }
        stats.record_client_abort(waited);
        true
    }

    /// This proxy's `Via` entries, `None` when `via.enabled` is false (one atomic load once made).
    #[inline]
    pub(crate) fn via(&self) -> Option<&crate::via::Via> {
        self.via.get()
    }

    /// Builds a table, reusing `previous`'s pools where a backend's endpoints are unchanged and
    /// the long-lived stats of every (route, slot).
    fn build(&self, generation: u64, routes: Vec<RouteConfig>, previous: Option<&Table>) -> Table {
        let mut stats = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
        let table = RoutingTable::build(generation, routes, |route, slot, backend| {
            let balance = Balance::resolve(route.balance.as_ref(), &self.upstream.balance);
            let reused = previous
                .and_then(|t| t.route(&route.name))
                .map(|r| r.backend(slot).upstream())
                .filter(|u| u.serves(&route.name, slot, backend))
                .filter(|u| u.health().matches(route, &balance));
            if let Some(upstream) = reused {
                return Arc::clone(upstream);
            }
            let name: Arc<str> = Arc::from(route.name.as_str());
            let stats = stats.entry((Arc::clone(&name), slot)).or_default();
            Arc::new(Upstream::new(
                name,
                (slot, backend.protocol),
                backend.endpoints.as_slice().into(),
                &self.upstream,
                Arc::clone(stats),
                self.health.backend(route, slot, balance),
                Arc::clone(&self.via),
            ))
        });
        match self.tls {
            Some(_) => table.secure_cookies(),
            None => table,
        }
    }
}
