//! What `GET /status` and `GET /readyz` report: the table in force with each backend's counters.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use crate::handle::Shared;
use crate::weight::{Slot, Weights};

/// The proxy's state as `GET /status` returns it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Generation of the routing table in force.
    pub generation: u64,
    /// True while the proxy accepts traffic.
    pub serving: bool,
    /// The routes, in declaration order.
    pub routes: Vec<RouteStatus>,
    /// The `received-by` this proxy writes in `Via` and detects loops by (RFC 9110 §7.6.3):
    /// `via.pseudonym` or the random one made at start; `null` when `via.enabled` is false.
    /// Absent in the answers of older versions (read as `null`).
    #[serde(default)]
    pub via_pseudonym: Option<String>,
    /// The version of the build serving ([`crate::process::VERSION`]): after a binary upgrade
    /// (SIGUSR2), the new one's. Absent (read as `""`) in the answers of older versions.
    #[serde(default)]
    pub version: String,
    /// The git commit of the build serving ([`crate::process::commit`]): `74414d6`,
    /// `74414d6-dirty` for sources that differ from it, or `unknown`; with `version`, tells two
    /// builds of one version apart. Absent (read as `""`) in the answers of older versions.
    #[serde(default)]
    pub commit: String,
    /// The process ID of the process serving: after a binary upgrade, the successor's (the admin
    /// listener is handed over with the traffic one). Absent (read as 0) in older versions'.
    #[serde(default)]
    pub pid: u32,
    /// Where the weights are saved at every change (`state_file`, the path the config gave,
    /// resolved against the config file's directory); `null` when they are not (no
    /// `state_file`: admin API weights last until the process ends). Absent (read as `null`) in
    /// older versions' answers.
    #[serde(default)]
    pub state_file: Option<std::path::PathBuf>,
    /// While the first health probe round of the proxy's start is not over, one line per route
    /// with active checks that awaits a first probe's result (`route web: awaiting the first
    /// health probe of green 127.0.0.1:8081 (1 of 2 endpoints probed)`); empty (absent) once it
    /// is over, for good. `GET /readyz` answers 503 with the first line meanwhile.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub first_probes_pending: Vec<String>,
}

/// One route in [`Status`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RouteStatus {
    /// The route's name.
    pub name: String,
    /// Hosts matched (empty: any host).
    pub hosts: Vec<String>,
    /// The path prefix matched.
    pub path_prefix: String,
    /// The slot in the active role.
    pub active: Slot,
    /// The route's backup slot ([`crate::config::RouteConfig::backup`]): it takes the requests
    /// the backends with weight cannot serve, even at weight 0. `crossfade run` sets it to the
    /// retiring backend from the role swap until it is retired. Absent when none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<Slot>,
    /// The resolved split, in basis points.
    pub weights: Weights,
    /// The blue backend.
    pub blue: SlotStatus,
    /// The green backend.
    pub green: SlotStatus,
    /// The rollout that owns the route's weights now (manual writes get 409), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<crate::owner::RouteOwner>,
    /// True while the route fails open (`routes[].fail_open`, see [`crate::health`]): no backend
    /// that may take its requests has an endpoint that health admits, so a request now would go,
    /// by weight, to an endpoint health holds out rather than get 503. Reads health now, like
    /// each endpoint's `healthy`; absent when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub failing_open: bool,
}

/// One backend in [`RouteStatus`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlotStatus {
    /// Configured share, in basis points.
    pub weight_bp: u32,
    /// The endpoints.
    pub endpoints: Vec<SocketAddr>,
    /// Requests in flight now.
    pub in_flight: u64,
    /// Upgraded connections (WebSocket and other HTTP/1.1 upgrades) open now.
    #[serde(default)]
    pub upgraded: u64,
    /// Requests dispatched since start (failed attempts included).
    pub requests: u64,
    /// 5xx responses, gRPC server-fault statuses (see [`crate::grpc`]) plus upstream failures since
    /// start.
    pub errors: u64,
    /// True while the circuit breaker holds this backend at an effective weight of 0.
    #[serde(default)]
    pub tripped: bool,
    /// Each endpoint's health, in endpoint order.
    #[serde(default)]
    pub health: Vec<EndpointStatus>,
    /// Shadow traffic mirrored to this backend and how it compared; present while the route has
    /// `shadow` or once something was mirrored here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<crate::shadow::ShadowSnapshot>,
}

/// One endpoint's health in [`SlotStatus`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointStatus {
    /// The endpoint.
    pub endpoint: SocketAddr,
    /// Whether it takes requests now (checks pass and not ejected).
    pub healthy: bool,
    /// The active checks' verdict (true when the route has no checks).
    pub checked_up: bool,
    /// Milliseconds left of a running ejection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ejected_for_ms: Option<u64>,
    /// The endpoint's outlier ejection count now (an integer; absent when 0): raised by one at
    /// each ejection, which lasts `base_ejection` times it (at most `max_ejection`), and lowered
    /// by one per `outlier.decay_interval` re-admitted without one (Envoy's outlier detection;
    /// see [`crate::config::OutlierConfig`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ejections: u32,
    /// Requests sent to it and awaiting their response head now (the balancer's `pending`, see
    /// [`crate::balance`]). Its RTT estimate, which decays with time, is in `/metrics` only
    /// (`crossfade_endpoint_rtt_estimate_seconds`), so that an idle proxy's status stays the same.
    #[serde(default)]
    pub pending: u32,
    /// Why the endpoint's last active health probe failed (`connect failed: ...`, `timeout after
    /// N ms waiting for GET <path>`, `status 503 from GET <path>`); absent when the route has no
    /// checks, none failed yet, or the last one passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check_failure: Option<String>,
    /// True while its first active health probe has no result yet (it is held out until one
    /// passes, see [`crate::health`]); absent when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub awaiting_first_probe: bool,
    /// True while what runs the endpoint's server has withdrawn it ([`crate::Proxy::withdraw`]:
    /// `crossfade run`'s supervised process exited and is not ready again): no request goes to
    /// it, failing open included; absent when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub withdrawn: bool,
}

// === impl Status ===

impl Status {
    pub(crate) fn of(shared: &Shared) -> Status {
        let table = shared.table.load();
        let owners = shared
            .owners
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let routes = table
            .routes()
            .iter()
            .zip(table.configs().iter())
            .map(|(route, config)| {
                let slot = |slot: Slot| {
                    let backend = route.backend(slot);
                    let snapshot = backend.upstream().stats().snapshot();
                    let health = backend.upstream().health();
                    SlotStatus {
                        weight_bp: route.weights().of(slot),
                        endpoints: backend.endpoints().to_vec(),
                        in_flight: snapshot.in_flight,
                        upgraded: snapshot.upgraded,
                        requests: snapshot.requests,
                        errors: snapshot.errors,
                        tripped: health.tripped(),
                        health: health.status(),
                        shadow: shadow_status(route, backend.upstream().stats()),
                    }
                };
                RouteStatus {
                    name: config.name.clone(),
                    hosts: config.hosts.clone(),
                    path_prefix: config.path_prefix.clone(),
                    active: route.active(),
                    backup: config.backup,
                    weights: route.weights(),
                    blue: slot(Slot::Blue),
                    green: slot(Slot::Green),
                    owner: owners.get(&config.name).cloned(),
                    failing_open: crate::health::fails_open_now(route),
                }
            })
            .collect();
        Status {
            generation: table.generation(),
            serving: shared.serving.load(Ordering::Relaxed),
            routes,
            via_pseudonym: shared.via().map(|via| via.pseudonym().to_owned()),
            version: crate::process::VERSION.to_owned(),
            commit: crate::process::commit().to_owned(),
            pid: std::process::id(),
            state_file: shared
                .weight_store
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .as_ref()
                .map(|store| store.path().to_path_buf()),
            first_probes_pending: shared.health.first_probes_pending(),
        }
    }

    /// Why the proxy is not ready, or `None` when it is: it must be serving, the first health
    /// probe round of its start must be over (every endpoint of a route with active checks has
    /// the result of its first probe, [`Status::first_probes_pending`]: until then the proxy
    /// knows nothing of those endpoints, and Envoy does not serve a cluster before its first
    /// round either), and every backend with a weight above 0 must have at least one
    /// *configured* endpoint. Endpoint health itself is not part of readiness: a proxy whose
    /// endpoints are all down, whose probes said so, stays ready (see [`Status::unserved`]).
    pub fn not_ready_reason(&self) -> Option<String> {
        if !self.serving {
            return Some("not serving yet".to_owned());
        }
        if let Some(pending) = self.first_probes_pending.first() {
            return Some(pending.clone());
        }
        self.routes.iter().find_map(|route| {
            [(Slot::Blue, &route.blue), (Slot::Green, &route.green)]
                .into_iter()
                .find(|(_, s)| s.weight_bp > 0 && s.endpoints.is_empty())
                .map(|(slot, _)| {
                    format!(
                        "route {}: backend {slot} has weight but no endpoints",
                        route.name
                    )
                })
        })
    }
}

impl Status {
    /// The routes that cannot serve a request now, one line each (`route web: ...`): a disabled
    /// route (both weights 0: every request gets 503, session 44), then a route with weight where
    /// no backend that may take its requests (one with weight, or the active slot) has an
    /// endpoint up and an untripped breaker, so every request gets 503 "no endpoint", or, when the
    /// route fails open ([`RouteStatus::failing_open`]), goes to an endpoint health holds out.
    ///
    /// `GET /readyz` lists them in its 200 answer, without turning unready: readiness says the
    /// proxy itself can route (its table is loaded, it accepts), as Envoy's `/ready` and
    /// nginx-ingress's `/healthz` do. A proxy that went unready because its backends are down
    /// would be taken out of its Service or load balancer with every replica alike (they share the
    /// backends), turning a 503 with a reason into refused connections, and cascading to whatever
    /// fronts the proxy.
    pub fn unserved(&self) -> Vec<String> {
        let can_serve = |slot: &SlotStatus| !slot.tripped && slot.health.iter().any(|e| e.healthy);
        let disabled = |route: &&RouteStatus| {
            route.weights.of(Slot::Blue) + route.weights.of(Slot::Green) == 0
        };
        // A disabled route is listed too, on purpose or not: its 503s are easy to miss behind a
        // plain `ready` (trial 44b, finding 10).
        let off = (self.routes.iter().filter(disabled)).map(|route| {
            format!(
                "route {}: disabled (both weights are 0: every request gets 503)",
                route.name
            )
        });
        let down = self
            .routes
            .iter()
            .filter(|route| !disabled(route))
            .filter(|route| {
                ![(Slot::Blue, &route.blue), (Slot::Green, &route.green)]
                    .into_iter()
                    .any(|(slot, backend)| {
                        (backend.weight_bp > 0 || slot == route.active) && can_serve(backend)
                    })
            })
            .map(|route| match route.failing_open {
                true => format!(
                    "route {}: no endpoint up (failing open: requests go to endpoints health holds \
                     out)",
                    route.name
                ),
                false => format!(
                    "route {}: no endpoint up (every request gets 503 no endpoint)",
                    route.name
                ),
            });
        off.chain(down).collect()
    }
}

/// The shadow counters of a backend, while its route mirrors or once it was mirrored to.
fn shadow_status(
    route: &crate::forward::TableRoute,
    stats: &crate::stats::BackendStats,
) -> Option<crate::shadow::ShadowSnapshot> {
    let mut snapshot = stats.shadow().snapshot();
    // The duration buckets only, as `/metrics` has them: the fine ones (2,561 counts each) are
    // the analysis's.
    snapshot.latency.fine = Vec::new();
    snapshot.paired_active.fine = Vec::new();
    snapshot.paired_preview.fine = Vec::new();
    (route.shadow().is_some() || snapshot.mirrored > 0).then_some(snapshot)
}

/// Whether `n` is 0: such counts are left out of `/status`.
fn is_zero(n: &u32) -> bool {
    *n == 0
}
