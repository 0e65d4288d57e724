//! The seams between the rollout runtime and the data plane: a [`TrafficSetter`] publishes weights and
//! endpoints, a [`MetricsSource`] reads per-backend counters for analysis. Both are implemented here for
//! an in-process [`Proxy`] (local mode); the Kubernetes mode implements them against the cluster.

use std::net::SocketAddr;
use std::sync::Arc;

use crossfade_proxy::config::{ShadowConfig, UpstreamProtocol};
use crossfade_proxy::weight::{Slot, Weights};
use crossfade_proxy::{BackendSnapshot, Proxy, ProxyEvent, RouteOwner, ShadowSnapshot};
use tokio::sync::broadcast;

use crate::driver::EndpointGate;
use crate::error::{Error, Result};
use crate::rollout::Capacity;

/// Publishes a route's traffic configuration. Every call that changes something returns the routing
/// table generation that carries the change (one generation per call).
pub trait TrafficSetter: Send + Sync + 'static {
    /// Sets the route's weights (basis points; see [`Weights::check`]).
    ///
    /// # Errors
    /// When the route does not exist or the weights are invalid for it (e.g. weight on a slot without
    /// endpoints); nothing changes then.
    fn set_weights(&self, route: &str, weights: Weights) -> Result<u64>;

    /// Replaces the endpoints of `slot` on the route and the protocol the data plane speaks to
    /// them (the workload's `protocol`: a backend's `protocol`, which its requests, retries and
    /// health checks use), leaving the weights as they are. Removing a backend's endpoints passes
    /// an empty list and the default protocol. A slot that was the route's backup
    /// ([`TrafficSetter::promote_slot`]) is no longer one.
    ///
    /// # Errors
    /// When the route does not exist, or removing endpoints would leave weight on an empty slot.
    fn set_endpoints(
        &self,
        route: &str,
        slot: Slot,
        endpoints: Vec<SocketAddr>,
        protocol: UpstreamProtocol,
    ) -> Result<u64>;

    /// Makes `slot` the route's active slot with all of the route's weight, in one generation: the role
    /// swap at the end of a rollout never exposes a table where the roles and weights disagree (C12).
    /// The other slot, which served until now, becomes the route's backup
    /// (`crossfade_proxy::config::RouteConfig::backup`): it takes the requests the promoted slot
    /// cannot serve until its endpoints are removed at its retirement.
    ///
    /// # Errors
    /// When the route does not exist or `slot` has no endpoints.
    fn promote_slot(&self, route: &str, slot: Slot) -> Result<u64>;

    /// Withdraws `endpoint` of `slot` on the route from every request (`withdrawn: true`) or
    /// restores it, leaving weights and endpoint lists as they are: the caller runs the
    /// endpoint's server and knows it is gone (a supervised process exited and its restart has
    /// not passed readiness), so whatever answers on its address is not the backend. Returns
    /// whether it changed (false too for an endpoint the slot does not have). The default does
    /// nothing: a data plane that cannot withdraw keeps its own health checks and ejection.
    ///
    /// # Errors
    /// When the route does not exist.
    fn withdraw(
        &self,
        route: &str,
        slot: Slot,
        endpoint: SocketAddr,
        withdrawn: bool,
    ) -> Result<bool> {
        let _ = (route, slot, endpoint, withdrawn);
        Ok(false)
    }

    /// Replaces `from` by `to` among `slot`'s endpoints on the route (one table generation),
    /// leaving the others, the weights and the protocol as they are: a supervised instance
    /// whose port was taken was restarted on `to` and passed readiness there. `Ok(None)` when
    /// the slot no longer has `from` (its endpoints were replaced or removed meanwhile: a
    /// retirement wins); else the generation that carries the change. The default changes
    /// nothing and says so (`Ok(None)`).
    ///
    /// # Errors
    /// When the route does not exist, or the edited table breaks a rule (`to` is another
    /// backend's endpoint).
    fn replace_endpoint(
        &self,
        route: &str,
        slot: Slot,
        from: SocketAddr,
        to: SocketAddr,
    ) -> Result<Option<u64>> {
        let _ = (route, slot, from, to);
        Ok(None)
    }

    /// What still holds `slot` on the route: requests in flight and open upgraded connections. A
    /// drain waits until both are 0 (or its deadline).
    fn held(&self, route: &str, slot: Slot) -> Held;

    /// The drain deadline of `slot` passed: closes its upgraded connections that are still open
    /// (WebSockets get a close frame 1001 "going away", RFC 6455 §7.4.1; every one a graceful TCP
    /// shutdown) and returns how many there were. The count in [`Held::upgraded`] reaches 0 once
    /// they are closed, within [`crossfade_proxy::tunnel::CLOSE_WAIT`] for an in-process proxy.
    fn close_upgraded(&self, route: &str, slot: Slot) -> u64;

    /// Makes `owner` (a rollout) the owner of the route's weights: manual writes on the data
    /// plane's admin API are refused (409) until [`TrafficSetter::release`]. Claiming again
    /// replaces the record (the rollout claims once more, `promoted`, at its role swap). The
    /// default owns nothing (a data plane without manual writers).
    ///
    /// # Errors
    /// When the route does not exist.
    fn claim(&self, route: &str, owner: RouteOwner) -> Result<()> {
        let _ = (route, owner);
        Ok(())
    }

    /// Ends rollout `rollout`'s ownership of the route (nothing when another owns it now).
    fn release(&self, route: &str, rollout: u64) {
        let _ = (route, rollout);
    }

    /// Turns shadow traffic on the route on (`Some`: the active backend's requests mirrored to the
    /// preview and the answers compared, see [`ShadowConfig`]) or off (`None`). The default
    /// mirrors nothing: a data plane without shadow traffic, whose shadow analysis then never has
    /// comparisons and so never passes.
    ///
    /// # Errors
    /// When the route does not exist or the settings are invalid; nothing changes then.
    fn set_shadow(&self, route: &str, shadow: Option<ShadowConfig>) -> Result<()> {
        let _ = (route, shadow);
        Ok(())
    }

    /// How many of `slot`'s endpoints on the route take requests now (pass their health checks and
    /// are not ejected), of how many are configured; `None` when the data plane does not tell (the
    /// default) or has no such route. An endpoint in `down` counts as not healthy whatever the
    /// data plane says: the caller knows that it cannot serve (a supervised instance that exited
    /// and waits for its restart, or was restarted and is not ready yet), which the data plane
    /// learns only once a request to it fails. A rollback moves weight back to the active backend no faster than this allows
    /// ([`crate::rollout::rollback_preview_bp`]); without it, at once.
    fn capacity(&self, route: &str, slot: Slot, down: &[SocketAddr]) -> Option<Capacity> {
        let _ = (route, slot, down);
        None
    }

    /// `slot`'s endpoints on the route that take requests again only because their outlier
    /// ejection ran out, the ejection not decayed yet (`ejections` above 0 in the proxy's status):
    /// re-admitted on a timer, with nothing to show they serve. Empty when the data plane does not
    /// tell (the default). [`crate::runtime`] does not retire the backend that backs up a
    /// promoted static backend on such an endpoint's word: a dead static green is re-admitted at
    /// each backoff's end, and blue was retired at the first one, leaving the route to 502.
    fn on_probation(&self, route: &str, slot: Slot) -> Vec<SocketAddr> {
        let _ = (route, slot);
        Vec::new()
    }

    /// The data plane's health events (a tripped breaker ends the rollout), when it has any.
    fn events(&self) -> Option<broadcast::Receiver<ProxyEvent>> {
        None
    }
}

/// The [`EndpointGate`] of a workload's instances in `slot` of `route`: withdraws and restores
/// their endpoints through the route's traffic setter ([`TrafficSetter::withdraw`]).
pub struct RouteGate<T: ?Sized> {
    traffic: Arc<T>,
    route: String,
    slot: Slot,
}

impl<T: TrafficSetter> RouteGate<T> {
    /// The gate of `slot`'s endpoints on `route`, as a workload attaches it
    /// ([`crate::driver::Workload::attach`]).
    pub fn shared(traffic: Arc<T>, route: &str, slot: Slot) -> Arc<dyn EndpointGate> {
        Arc::new(RouteGate {
            traffic,
            route: route.to_owned(),
            slot,
        })
    }

    fn set(&self, endpoint: SocketAddr, withdrawn: bool) {
        let (route, slot) = (&self.route, self.slot);
        if let Err(e) = self.traffic.withdraw(route, slot, endpoint, withdrawn) {
            tracing::warn!(%route, backend = %slot, %endpoint, withdrawn, "cannot change the endpoint's withdrawal: {e}");
        }
    }
}

impl<T: TrafficSetter> EndpointGate for RouteGate<T> {
    fn withdraw(&self, endpoint: SocketAddr) {
        self.set(endpoint, true);
    }

    fn restore(&self, endpoint: SocketAddr) {
        self.set(endpoint, false);
    }

    fn moved(&self, from: SocketAddr, to: SocketAddr) {
        let (route, slot) = (&self.route, self.slot);
        match self.traffic.replace_endpoint(route, slot, from, to) {
            Ok(Some(generation)) => {
                tracing::info!(%route, backend = %slot, %from, %to, generation, "endpoint moved: its instance was restarted on another port");
            }
            Ok(None) => {
                tracing::info!(%route, backend = %slot, %from, %to, "endpoint not moved: the backend no longer has it");
            }
            Err(e) => {
                tracing::warn!(%route, backend = %slot, %from, %to, "cannot move the endpoint: {e}");
            }
        }
    }
}

/// What still holds a backend that is being drained ([`TrafficSetter::held`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Held {
    /// Requests dispatched to the backend and not finished.
    pub in_flight: u64,
    /// Upgraded connections (WebSocket and other HTTP/1.1 upgrades, RFC 9110 §7.8) open to it.
    pub upgraded: u64,
}

impl Held {
    /// True when nothing holds the backend any more.
    pub fn is_empty(&self) -> bool {
        self.in_flight == 0 && self.upgraded == 0
    }
}

/// Reads cumulative per-backend counters; the runtime turns two readings into an analysis window.
pub trait MetricsSource: Send + Sync + 'static {
    /// Counters of `slot` on `route` since the source started (monotonic).
    ///
    /// # Errors
    /// When the route is unknown to the source.
    fn snapshot(&self, route: &str, slot: Slot) -> Result<BackendSnapshot>;

    /// Shadow counters of the requests mirrored to `slot` on `route` since the source started
    /// (monotonic), or `None` when the source has no shadow traffic (the default).
    ///
    /// # Errors
    /// When the route is unknown to the source.
    fn shadow(&self, route: &str, slot: Slot) -> Result<Option<ShadowSnapshot>> {
        let _ = (route, slot);
        Ok(None)
    }
}

// === impl Proxy ===

fn route_error(route: &str, e: crossfade_proxy::Error) -> Error {
    Error::Traffic {
        route: route.to_owned(),
        message: e.to_string(),
    }
}

/// The backend in `slot` of route `route` in the proxy's `status`; `None` for an unknown route.
fn slot_status<'s>(
    status: &'s crossfade_proxy::status::Status,
    route: &str,
    slot: Slot,
) -> Option<&'s crossfade_proxy::status::SlotStatus> {
    let route = status.routes.iter().find(|r| r.name == route)?;
    Some(match slot {
        Slot::Blue => &route.blue,
        Slot::Green => &route.green,
    })
}

impl TrafficSetter for Proxy {
    fn set_weights(&self, route: &str, weights: Weights) -> Result<u64> {
        Proxy::set_weights(self, route, weights).map_err(|e| route_error(route, e))
    }

    fn withdraw(
        &self,
        route: &str,
        slot: Slot,
        endpoint: SocketAddr,
        withdrawn: bool,
    ) -> Result<bool> {
        Proxy::withdraw(self, route, slot, endpoint, withdrawn).map_err(|e| route_error(route, e))
    }

    fn replace_endpoint(
        &self,
        route: &str,
        slot: Slot,
        from: SocketAddr,
        to: SocketAddr,
    ) -> Result<Option<u64>> {
        let config = Proxy::route(self, route).ok_or_else(|| {
            route_error(
                route,
                crossfade_proxy::Error::UnknownRoute(route.to_owned()),
            )
        })?;
        if !config.backend(slot).endpoints.contains(&from) {
            return Ok(None);
        }
        // Edits the table in force at the write (a removal since the look above wins).
        let generation = self
            .update(|routes| {
                let endpoints = &mut find(routes, route)?.backend_mut(slot).endpoints;
                if let Some(e) = endpoints.iter_mut().find(|e| **e == from) {
                    *e = to;
                }
                Ok(())
            })
            .map_err(|e| route_error(route, e))?;
        Ok(Some(generation))
    }

    fn set_endpoints(
        &self,
        route: &str,
        slot: Slot,
        endpoints: Vec<SocketAddr>,
        protocol: UpstreamProtocol,
    ) -> Result<u64> {
        self.update(|routes| {
            let r = find(routes, route)?;
            // The retiring backend backs up the promoted one until its endpoints change (their
            // removal at its retirement; a new preview in its slot must never take overflow).
            if r.backup == Some(slot) {
                r.backup = None;
            }
            let backend = r.backend_mut(slot);
            backend.endpoints = endpoints;
            backend.protocol = protocol;
            Ok(())
        })
        .map_err(|e| route_error(route, e))
    }

    fn promote_slot(&self, route: &str, slot: Slot) -> Result<u64> {
        self.update(|routes| {
            let r = find(routes, route)?;
            r.active = slot;
            // The backend that served until now backs the promoted one up until it is retired.
            r.backup = Some(slot.other());
            let w = Weights::all_to(slot);
            r.blue.weight = Some(crossfade_proxy::weight::Percent(w.blue));
            r.green.weight = Some(crossfade_proxy::weight::Percent(w.green));
            Ok(())
        })
        .map_err(|e| route_error(route, e))
    }

    fn held(&self, route: &str, slot: Slot) -> Held {
        let in_flight = self.backend_stats(route, slot).map_or(0, |s| s.in_flight);
        Held {
            in_flight,
            upgraded: self.upgraded(route, slot),
        }
    }

    fn close_upgraded(&self, route: &str, slot: Slot) -> u64 {
        Proxy::close_upgraded(self, route, slot).unwrap_or(0)
    }

    fn events(&self) -> Option<broadcast::Receiver<ProxyEvent>> {
        Some(Proxy::events(self))
    }

    fn capacity(&self, route: &str, slot: Slot, down: &[SocketAddr]) -> Option<Capacity> {
        let status = self.status();
        let backend = slot_status(&status, route, slot)?;
        let healthy = backend
            .health
            .iter()
            .filter(|e| e.healthy && !down.contains(&e.endpoint))
            .count();
        Some(Capacity {
            healthy: u32::try_from(healthy).unwrap_or(u32::MAX),
            total: u32::try_from(backend.endpoints.len()).unwrap_or(u32::MAX),
        })
    }

    fn on_probation(&self, route: &str, slot: Slot) -> Vec<SocketAddr> {
        let status = self.status();
        let Some(backend) = slot_status(&status, route, slot) else {
            return Vec::new();
        };
        backend
            .health
            .iter()
            .filter(|e| e.healthy && e.ejections > 0)
            .map(|e| e.endpoint)
            .collect()
    }

    fn claim(&self, route: &str, owner: RouteOwner) -> Result<()> {
        Proxy::claim(self, route, owner).map_err(|e| route_error(route, e))
    }

    fn release(&self, route: &str, rollout: u64) {
        let owner = RouteOwner {
            rollout,
            promoted: false,
        };
        Proxy::release(self, route, &owner);
    }

    fn set_shadow(&self, route: &str, shadow: Option<ShadowConfig>) -> Result<()> {
        Proxy::set_shadow(self, route, shadow)
            .map(drop)
            .map_err(|e| route_error(route, e))
    }
}

impl MetricsSource for Proxy {
    fn snapshot(&self, route: &str, slot: Slot) -> Result<BackendSnapshot> {
        self.backend_stats(route, slot)
            .ok_or_else(|| Error::Traffic {
                route: route.to_owned(),
                message: format!("no such route (backend {slot})"),
            })
    }

    fn shadow(&self, route: &str, slot: Slot) -> Result<Option<ShadowSnapshot>> {
        self.shadow_stats(route, slot)
            .map(Some)
            .ok_or_else(|| Error::Traffic {
                route: route.to_owned(),
                message: format!("no such route (backend {slot})"),
            })
    }
}

fn find<'a>(
    routes: &'a mut [crossfade_proxy::config::RouteConfig],
    name: &str,
) -> std::result::Result<&'a mut crossfade_proxy::config::RouteConfig, crossfade_proxy::Error> {
    routes
        .iter_mut()
        .find(|r| r.name == name)
        .ok_or_else(|| crossfade_proxy::Error::UnknownRoute(name.to_owned()))
}
