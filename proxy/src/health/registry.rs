//! The long-lived health state: per (route, slot) counters and breaker, per (route, slot,
//! endpoint) health and checker task, kept across table generations.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::broadcast;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::breaker::ErrorWindow;
use super::{checker, BackendHealth, EjectReason, EndpointHealth, ProxyEvent};
use crate::balance::Balance;
use crate::config::{BreakerConfig, HealthConfig, RouteConfig, UpstreamProtocol};
use crate::weight::Slot;

/// What an endpoint's checker runs: the route's checks, in its backend's protocol.
type Probe = (HealthConfig, UpstreamProtocol);

/// Capacity of the event channel; a receiver that lags further loses the oldest events.
const EVENT_CAPACITY: usize = 64;

/// What every health view shares: the clock origin, the event channel, and the wake-up of
/// requests waiting for first probes.
#[derive(Debug)]
pub(crate) struct Hub {
    start: Instant,
    events: broadcast::Sender<ProxyEvent>,
    /// Notified (all waiters) whenever a first probe has a result ([`super::first_probes`]).
    pub(crate) first_probes: tokio::sync::Notify,
}

/// Per (route, slot) state that survives every table change: counters for `/metrics` and the
/// breaker.
#[derive(Debug, Default)]
pub(crate) struct SlotHealth {
    ejections: [AtomicU64; 3],
    /// Requests sent to the backend failing open (`crossfade_fail_open_requests_total`).
    fail_open_requests: AtomicU64,
    trips: AtomicU64,
    tripped: AtomicBool,
    /// True while the route fails open (see [`super::fail_open`]): kept in both slots of the
    /// route, beside `tripped`, which the request path reads from the same line.
    failing_open: AtomicBool,
    window: ErrorWindow,
    /// The route's `breaker` in the table last synced: a trip holds only under the settings it
    /// was made with.
    breaker: Mutex<Option<BreakerConfig>>,
}

type EndpointKey = (Arc<str>, Slot, SocketAddr);

/// A backend whose circuit breaker is tripped, as a binary upgrade hands it to the successor
/// ([`HealthRegistry::tripped`]): its route's name and its slot.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TrippedBreaker {
    /// The route's name.
    pub route: String,
    /// The backend (`blue`, `green`).
    pub backend: Slot,
}

/// An endpoint ejected by outlier detection, or back from an ejection, as a binary upgrade hands
/// it to the successor ([`HealthRegistry::ejected`]): its route's name, backend and address, and
/// its ejection.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct EjectedEndpoint {
    /// The route's name.
    pub route: String,
    /// The backend (`blue`, `green`).
    pub backend: Slot,
    /// The endpoint's address.
    pub endpoint: SocketAddr,
    /// Milliseconds left of its ejection at the handover; 0 when it was back.
    pub ejected_for_ms: u64,
    /// Milliseconds since it came back from its last ejection, when it was back (its ejection
    /// count decays from then); 0 while ejected.
    pub back_for_ms: u64,
    /// The ejection count stored at its last ejection (what the backoff multiplies, before decay).
    pub count: u32,
}

/// An endpoint that passed a health check, as a binary upgrade hands it to the successor
/// ([`HealthRegistry::passed`]): its route's name, its backend and its address.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct PassedCheck {
    /// The route's name.
    pub route: String,
    /// The backend (`blue`, `green`).
    pub backend: Slot,
    /// The endpoint's address.
    pub endpoint: SocketAddr,
}

/// One route's part of the first probe round ([`HealthRegistry::first_probes_pending`]).
#[derive(Debug, Default)]
struct FirstRound {
    /// Endpoints with their first probe's result.
    probed: usize,
    /// Endpoints of the route with checks.
    endpoints: usize,
    /// The first endpoint (by slot, then address) still awaiting it.
    awaited: Option<(Slot, SocketAddr)>,
}

#[derive(Debug)]
struct EndpointEntry {
    health: Arc<EndpointHealth>,
    /// The running checker and the settings it runs with.
    checker: Option<(Probe, AbortHandle)>,
    /// Whether its route has active checks (in the table last synced, or built).
    checks: bool,
    /// In a table published before the proxy first served: part of the start's first probe
    /// round ([`HealthRegistry::first_probes_pending`]).
    at_start: bool,
}

#[derive(Debug, Default)]
struct Maps {
    /// The proxy serves (or did): endpoints added from now on are not the start's.
    serving: bool,
    endpoints: HashMap<EndpointKey, EndpointEntry>,
    slots: BTreeMap<(Arc<str>, Slot), Arc<SlotHealth>>,
}

/// All health state of a proxy, owned by its [`Shared`](crate::handle::Shared).
#[derive(Debug)]
pub(crate) struct HealthRegistry {
    hub: Arc<Hub>,
    maps: Mutex<Maps>,
    /// Set once the proxy serves and every endpoint of its start with checks had its first
    /// probe's result ([`HealthRegistry::first_probes_pending`]): the round is over for good.
    warmed: AtomicBool,
}

// === impl Hub ===

impl Hub {
    /// Milliseconds since the proxy was built, on tokio's clock (pausable in tests).
    #[inline]
    pub(crate) fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Nanoseconds since the proxy was built, on tokio's clock: the balancer's clock.
    #[inline]
    pub(crate) fn now_ns(&self) -> u64 {
        self.ns_at(Instant::now())
    }

    /// `at` in nanoseconds since the proxy was built (0 before it).
    #[inline]
    pub(crate) fn ns_at(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.start).as_nanos()).unwrap_or(u64::MAX)
    }

    pub(crate) fn send(&self, event: ProxyEvent) {
        // No receiver is fine: nobody listens.
        let _ = self.events.send(event);
    }
}

// === impl SlotHealth ===

impl SlotHealth {
    pub(crate) fn tripped(&self) -> bool {
        self.tripped.load(Relaxed)
    }

    /// Trips the breaker as the process this one took over from had it tripped (a binary
    /// upgrade): not counted as a trip of this process.
    fn inherit_trip(&self) {
        self.tripped.store(true, Relaxed);
    }

    /// Trips the breaker; true for the caller that tripped it.
    pub(crate) fn trip(&self) -> bool {
        let won = !self.tripped.swap(true, Relaxed);
        if won {
            self.trips.fetch_add(1, Relaxed);
        }
        won
    }

    /// Takes `breaker`, the route's settings in the table just stored. When they differ from the
    /// ones in force (the breaker was removed or changed, by SIGHUP or an update), the error
    /// window starts empty and a trip is released: it was judged under settings that no longer
    /// apply (trial 8, H5). Returns whether a trip was released.
    fn configure_breaker(&self, breaker: Option<&BreakerConfig>) -> bool {
        let mut current = self.breaker.lock().unwrap_or_else(PoisonError::into_inner);
        if current.as_ref() == breaker {
            return false;
        }
        *current = breaker.cloned();
        self.window.clear();
        self.tripped.swap(false, Relaxed)
    }

    pub(crate) fn window(&self) -> &ErrorWindow {
        &self.window
    }

    pub(crate) fn count_ejection(&self, reason: EjectReason) {
        self.ejections[reason.index()].fetch_add(1, Relaxed);
    }

    /// Ejections by reason, in [`EjectReason::ALL`] order.
    pub(crate) fn ejections(&self) -> [u64; 3] {
        self.ejections.each_ref().map(|c| c.load(Relaxed))
    }

    /// True while the route fails open.
    pub(crate) fn failing_open(&self) -> bool {
        self.failing_open.load(Relaxed)
    }

    /// Sets whether the route fails open; returns what it was.
    pub(crate) fn set_failing_open(&self, on: bool) -> bool {
        self.failing_open.swap(on, Relaxed)
    }

    /// Counts a request sent to the backend failing open.
    pub(crate) fn count_fail_open(&self) {
        self.fail_open_requests.fetch_add(1, Relaxed);
    }

    /// Requests sent to the backend failing open since start.
    pub(crate) fn fail_open_requests(&self) -> u64 {
        self.fail_open_requests.load(Relaxed)
    }

    /// Breaker trips since start.
    pub(crate) fn trips(&self) -> u64 {
        self.trips.load(Relaxed)
    }
}

// === impl HealthRegistry ===

impl HealthRegistry {
    pub(crate) fn new() -> HealthRegistry {
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        HealthRegistry {
            hub: Arc::new(Hub {
                start: Instant::now(),
                events,
                first_probes: tokio::sync::Notify::new(),
            }),
            maps: Mutex::new(Maps::default()),
            warmed: AtomicBool::new(false),
        }
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<ProxyEvent> {
        self.hub.events.subscribe()
    }

    fn maps(&self) -> std::sync::MutexGuard<'_, Maps> {
        self.maps.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The health view of `route`'s backend in `slot`, reusing the state of endpoints it had;
    /// its endpoints are chosen by `balance` (the route's resolved settings).
    pub(crate) fn backend(
        &self,
        route: &RouteConfig,
        slot: Slot,
        balance: Balance,
    ) -> Arc<BackendHealth> {
        let name: Arc<str> = Arc::from(route.name.as_str());
        let mut maps = self.maps();
        let endpoints = route
            .backend(slot)
            .endpoints
            .iter()
            .map(|&addr| {
                let key = (Arc::clone(&name), slot, addr);
                let awaiting_check = route.health.is_some();
                let at_start = !maps.serving;
                let entry = maps.endpoints.entry(key).or_insert_with(|| EndpointEntry {
                    health: Arc::new(EndpointHealth::fresh(
                        addr,
                        self.hub.now_ns(),
                        awaiting_check,
                    )),
                    checker: None,
                    checks: awaiting_check,
                    at_start,
                });
                Arc::clone(&entry.health)
            })
            .collect();
        let state = Arc::clone(maps.slots.entry((Arc::clone(&name), slot)).or_default());
        Arc::new(BackendHealth {
            route: name,
            slot,
            endpoints,
            outlier: route.outlier.clone(),
            breaker: route.breaker.clone(),
            probe_timeout: route.health.as_ref().map(|h| h.timeout),
            balance,
            fail_open: route.fail_open,
            state,
            hub: Arc::clone(&self.hub),
        })
    }

    /// Brings checker tasks in line with `routes` (the table just stored): one per endpoint of a
    /// route with checks, none elsewhere; forgets endpoints that left the table. A route whose
    /// `breaker` settings changed (or went) has its breakers' windows emptied and trips released,
    /// and so does a route that left the table (trial 24: its `crossfade_breaker_tripped` read 1
    /// until the process ended, and the route added back with the same settings started tripped).
    pub(crate) fn sync(&self, routes: &[RouteConfig]) {
        let mut wanted: HashMap<EndpointKey, Option<Probe>> = HashMap::new();
        for route in routes {
            let name: Arc<str> = Arc::from(route.name.as_str());
            for slot in Slot::ALL {
                let backend = route.backend(slot);
                for &addr in &backend.endpoints {
                    let probe = route.health.clone().map(|h| (h, backend.protocol));
                    wanted.insert((Arc::clone(&name), slot, addr), probe);
                }
            }
        }
        let mut maps = self.maps();
        let Maps {
            endpoints,
            slots,
            serving,
        } = &mut *maps;
        let at_start = !*serving;
        for route in routes {
            for slot in Slot::ALL {
                let state = slots
                    .entry((Arc::from(route.name.as_str()), slot))
                    .or_default();
                if state.configure_breaker(route.breaker.as_ref()) {
                    tracing::warn!(
                        route = %route.name,
                        backend = %slot,
                        "circuit breaker released: the route's breaker settings changed"
                    );
                }
            }
        }
        for ((route, slot), state) in slots.iter() {
            // A route that left the table, or no longer fails open, is not failing open (one
            // added back starts afresh, as its breaker does); blue's flag says it once.
            let failing_open = routes
                .iter()
                .any(|r| r.name.as_str() == &**route && r.fail_open);
            if !failing_open && state.set_failing_open(false) && *slot == Slot::Blue {
                tracing::warn!(
                    %route,
                    "stopped failing open: the route left the table or its fail_open is off"
                );
            }
            let removed = !routes.iter().any(|r| r.name.as_str() == &**route);
            if removed && state.configure_breaker(None) {
                tracing::warn!(
                    route = %route,
                    backend = %slot,
                    "circuit breaker released: the route was removed"
                );
            }
        }
        endpoints.retain(|key, entry| {
            let keep = wanted.contains_key(key);
            if !keep {
                stop(entry);
            }
            keep
        });
        for (key, config) in wanted {
            let state = slots.entry((Arc::clone(&key.0), key.1)).or_default();
            let entry = endpoints
                .entry(key.clone())
                .or_insert_with(|| EndpointEntry {
                    health: Arc::new(EndpointHealth::fresh(
                        key.2,
                        self.hub.now_ns(),
                        config.is_some(),
                    )),
                    checker: None,
                    checks: config.is_some(),
                    at_start,
                });
            entry.checks = config.is_some();
            self.sync_checker(&key, entry, config.as_ref(), state);
        }
        // An endpoint awaited by a request or by readiness may have left the table.
        self.hub.first_probes.notify_waiters();
    }

    fn sync_checker(
        &self,
        key: &EndpointKey,
        entry: &mut EndpointEntry,
        probe: Option<&Probe>,
        state: &Arc<SlotHealth>,
    ) {
        let running = entry.checker.as_ref().map(|(c, _)| c);
        if running == probe {
            return;
        }
        stop(entry);
        let Some((config, protocol)) = probe else {
            entry.health.pass_first_check();
            self.hub.first_probes.notify_waiters();
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // Started by the next sync in a runtime: `Proxy::serve` syncs again.
            tracing::debug!(endpoint = %key.2, "no tokio runtime yet: active health checks start when the proxy serves");
            return;
        };
        let task = checker::Checker {
            route: Arc::clone(&key.0),
            slot: key.1,
            endpoint: Arc::downgrade(&entry.health),
            config: config.clone(),
            protocol: *protocol,
            hub: Arc::clone(&self.hub),
            state: Arc::clone(state),
        };
        let handle = runtime.spawn(task.run());
        entry.checker = Some(((config.clone(), *protocol), handle.abort_handle()));
    }

    /// The endpoints of routes with active checks that passed a check (once, or with this
    /// process's predecessor: [`EndpointHealth::passed_a_check`]), by route name, slot and
    /// address, sorted: what a binary upgrade hands its successor ([`HealthRegistry::inherit_passed`]).
    pub(crate) fn passed(&self) -> Vec<PassedCheck> {
        let maps = self.maps();
        let mut passed: Vec<PassedCheck> = maps
            .endpoints
            .iter()
            .filter(|(_, entry)| entry.checks && entry.health.passed_a_check())
            .map(|((route, slot, addr), _)| PassedCheck {
                route: route.to_string(),
                backend: *slot,
                endpoint: *addr,
            })
            .collect();
        passed.sort();
        passed
    }

    /// Withdraws `route`'s endpoint `addr` of `slot` from every request, or restores it
    /// ([`EndpointHealth::set_withdrawn`]). `None` when the registry has no such endpoint (not in
    /// the table in force); else whether it changed.
    pub(crate) fn set_withdrawn(
        &self,
        route: &str,
        slot: Slot,
        addr: SocketAddr,
        withdrawn: bool,
    ) -> Option<bool> {
        let key: EndpointKey = (Arc::from(route), slot, addr);
        let maps = self.maps();
        let entry = maps.endpoints.get(&key)?;
        Some(entry.health.set_withdrawn(withdrawn))
    }

    /// Marks the endpoints in `passed` that this registry has ([`HealthRegistry::passed`] of the
    /// process this one takes over from) as having passed a check there: they wait for their
    /// first probe here as every endpoint does, but a route whose checks hold out every endpoint
    /// fails open to them (`routes[].fail_open`) as it did in that process, rather than answer
    /// every request 503 after the upgrade. Entries this registry does not have are ignored.
    pub(crate) fn inherit_passed(&self, passed: &[PassedCheck]) {
        let maps = self.maps();
        for p in passed {
            let key = (Arc::from(p.route.as_str()), p.backend, p.endpoint);
            if let Some(entry) = maps.endpoints.get(&key).filter(|e| e.checks) {
                entry.health.inherit_pass();
            }
        }
    }

    /// The endpoints ejected by outlier detection, or back from an ejection, as of now, sorted:
    /// what a binary upgrade hands its successor ([`HealthRegistry::inherit_ejections`]).
    pub(crate) fn ejected(&self) -> Vec<EjectedEndpoint> {
        let now_ms = self.hub.now_ms();
        let maps = self.maps();
        let mut ejected: Vec<EjectedEndpoint> = maps
            .endpoints
            .iter()
            .filter_map(|((route, slot, addr), entry)| {
                let (ejected_for_ms, back_for_ms, count) = entry.health.handed_ejection(now_ms)?;
                Some(EjectedEndpoint {
                    route: route.to_string(),
                    backend: *slot,
                    endpoint: *addr,
                    ejected_for_ms,
                    back_for_ms,
                    count,
                })
            })
            .collect();
        ejected.sort();
        ejected
    }

    /// Gives the endpoints in `ejected` ([`HealthRegistry::ejected`] of the process this one takes
    /// over from) that this registry has the ejection they had there: one still running holds
    /// the endpoint out for the rest of its backoff, and the count goes on, so the next backoff
    /// is as long as it would have been. Without it, an endpoint outlier detection had taken out
    /// got requests, and their failures, again from the upgrade on until it was ejected anew.
    /// Entries this registry does not have are ignored.
    pub(crate) fn inherit_ejections(&self, ejected: &[EjectedEndpoint]) {
        let now_ms = self.hub.now_ms();
        let maps = self.maps();
        for e in ejected {
            let key = (Arc::from(e.route.as_str()), e.backend, e.endpoint);
            let Some(entry) = maps.endpoints.get(&key) else {
                continue;
            };
            entry
                .health
                .inherit_ejection(now_ms, (e.ejected_for_ms, e.back_for_ms, e.count));
            if e.ejected_for_ms > 0 {
                tracing::warn!(
                    route = %e.route, backend = %e.backend, endpoint = %e.endpoint,
                    ejected_for_ms = e.ejected_for_ms, ejections = e.count,
                    "binary upgrade: the endpoint stays ejected, as in the process taken over from"
                );
            }
        }
    }

    /// The backends whose breaker is tripped, by route name and slot, sorted: what a binary
    /// upgrade hands its successor ([`HealthRegistry::inherit_trips`]).
    pub(crate) fn tripped(&self) -> Vec<TrippedBreaker> {
        self.maps()
            .slots
            .iter()
            .filter(|(_, state)| state.tripped())
            .map(|((route, slot), _)| TrippedBreaker {
                route: route.to_string(),
                backend: *slot,
            })
            .collect()
    }

    /// Trips the breakers in `tripped` ([`HealthRegistry::tripped`] of the process this one takes
    /// over from) whose route has a `breaker` here: a trip holds until the route's weights are
    /// next set, which a binary upgrade does not do, so the preview a breaker took out gets no
    /// request from the new process either. Others are ignored.
    pub(crate) fn inherit_trips(&self, tripped: &[TrippedBreaker]) {
        let maps = self.maps();
        for t in tripped {
            let key = (Arc::from(t.route.as_str()), t.backend);
            let Some(state) = maps.slots.get(&key) else {
                continue;
            };
            let configured = state
                .breaker
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_some();
            if configured {
                state.inherit_trip();
                tracing::warn!(
                    route = %t.route, backend = %t.backend,
                    "binary upgrade: the circuit breaker stays tripped, as in the process taken over from: effective weight 0 until the weights are next set"
                );
            }
        }
    }

    /// Marks the proxy as serving (`Proxy::serve`): endpoints that tables add from now on are
    /// not part of the start's first probe round.
    pub(crate) fn serving(&self) {
        self.maps().serving = true;
    }

    /// What keeps the first probe round of the proxy's start from being over, one line per route
    /// with checks (`route web: awaiting the first health probe of green 127.0.0.1:8081 (1 of 2
    /// endpoints probed)`); empty once every such endpoint of the tables published before the
    /// proxy first served had the result of its first probe, and from then on. Endpoints added
    /// later are held out one by one until their first probe passes, without turning the proxy
    /// unready (a reload would otherwise pull every replica from its load balancer at once).
    pub(crate) fn first_probes_pending(&self) -> Vec<String> {
        if self.warmed.load(Relaxed) {
            return Vec::new();
        }
        let maps = self.maps();
        let mut routes: BTreeMap<&str, FirstRound> = BTreeMap::new();
        for ((route, slot, addr), entry) in &maps.endpoints {
            let awaiting = entry.health.awaiting_first_probe();
            if !entry.at_start || (!entry.checks && !awaiting) {
                continue;
            }
            let round = routes.entry(route).or_default();
            round.endpoints += 1;
            if !awaiting {
                round.probed += 1;
            } else if round.awaited.is_none_or(|first| (*slot, *addr) < first) {
                round.awaited = Some((*slot, *addr));
            }
        }
        let pending: Vec<String> = routes
            .into_iter()
            .filter_map(|(route, round)| {
                let (slot, addr) = round.awaited?;
                let (probed, all) = (round.probed, round.endpoints);
                Some(format!(
                    "route {route}: awaiting the first health probe of {slot} {addr} ({probed} \
                     of {all} endpoints probed)"
                ))
            })
            .collect();
        if pending.is_empty() && maps.serving {
            self.warmed.store(true, Relaxed);
        }
        pending
    }

    /// Resolves once [`HealthRegistry::first_probes_pending`] is empty (at once when it is).
    pub(crate) async fn first_probes_done(&self) {
        loop {
            let notified = self.hub.first_probes.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.first_probes_pending().is_empty() {
                return;
            }
            notified.await;
        }
    }

    /// Clears the breaker of both backends of `route` (its weights were just set).
    pub(crate) fn reset_breaker(&self, route: &str) {
        let maps = self.maps();
        for ((name, _), state) in &maps.slots {
            if &**name == route {
                state.tripped.store(false, Relaxed);
                state.window.clear();
            }
        }
    }

    /// Checker tasks running now.
    #[cfg(test)]
    pub(crate) fn running_checkers(&self) -> usize {
        let maps = self.maps();
        maps.endpoints
            .values()
            .filter(|e| e.checker.is_some())
            .count()
    }

    /// The per-slot states, for `/metrics`.
    pub(crate) fn slots(&self) -> Vec<(Arc<str>, Slot, Arc<SlotHealth>)> {
        let maps = self.maps();
        maps.slots
            .iter()
            .map(|((route, slot), state)| (Arc::clone(route), *slot, Arc::clone(state)))
            .collect()
    }
}

fn stop(entry: &mut EndpointEntry) {
    if let Some((_, handle)) = entry.checker.take() {
        handle.abort();
    }
}

impl Drop for HealthRegistry {
    fn drop(&mut self) {
        for entry in self.maps().endpoints.values_mut() {
            stop(entry);
        }
    }
}
