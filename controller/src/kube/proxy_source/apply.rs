//! The route set of `crossfade proxy --kube`: every TrafficShift translated into a route and the
//! whole set published to the proxy in one table generation, bad input leaving a route as it was.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crossfade_proxy::config::{shadowings, RouteConfig, Shadowed};
use crossfade_proxy::Proxy;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::DynamicObject;

use super::metrics::KubeSourceMetrics;
use super::translate::{fallback, translate_route, ShiftView, Unserved, SERVICE_NAME_LABEL};
use crossfade_proxy::weight::Slot;

/// The route set in the table and what each carries.
#[derive(Default)]
pub(super) struct Applier {
    pub(super) metrics: KubeSourceMetrics,
    /// Route name → (config in the table, the TrafficShift weights behind it).
    pub(super) served: Routes,
    /// Route name → the last translation error logged, so each is logged once.
    pub(super) errors: BTreeMap<String, String>,
    /// The routes of `errors` refused only for weight on a backend without ready endpoints
    /// ([`Unserved::NoEndpoints`]): waiting, logged as a WARN, not an ERROR.
    pub(super) waiting: BTreeSet<String>,
    /// The shadowed-route warnings of the table in force, so each is logged once.
    pub(super) shadowed: BTreeSet<String>,
    /// With `--route`: whether its TrafficShift was missing at the last apply (`None` before the
    /// first), so that its absence is logged once, and its arrival once.
    pub(super) only_missing: Option<bool>,
}

/// A change of the `--route` TrafficShift's presence worth a log line ([`Applier::only_change`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum OnlyRoute {
    /// It is not there (at start, or deleted): a WARN with this message.
    Missing(String),
    /// It is there after it was missing: an INFO with this message (`... found`), to which
    /// [`Applier::apply`] adds `: its route is served` when it is; when it is not, the line after
    /// it says why (trial 11, L14: never "served" next to "not served").
    Appeared(String),
}

/// Route name → (its config, the TrafficShift weights behind it).
type Routes = BTreeMap<String, (RouteConfig, Behind)>;

/// Which TrafficShift's weights a route in the table carries: what the Lease reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Behind {
    /// `status.weights.generation`; 0 when the route carries no published split.
    pub(super) generation: u64,
    /// The TrafficShift's `metadata.uid`: a TrafficShift deleted and created again under the same
    /// name counts its generations from 1 again.
    pub(super) uid: String,
}

/// A line said, with the TrafficShift it is about (`namespace/name`) when it is about one.
pub(super) type Told = (Option<String>, Said);

/// A line the applier logs, kept so that tests can read what it said and in which order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Said {
    /// An ERROR: input that needs fixing.
    Error(String),
    /// A WARN: something that should pass by itself, or a missing `--route` TrafficShift.
    Warn(String),
    /// An INFO.
    Info(String),
}

impl Said {
    /// Logs the line, with the TrafficShift it is about as field `trafficshift` when given.
    fn log(&self, trafficshift: Option<&str>) {
        match (self, trafficshift) {
            (Said::Error(m), Some(t)) => tracing::error!(trafficshift = %t, "{m}"),
            (Said::Error(m), None) => tracing::error!("{m}"),
            (Said::Warn(m), Some(t)) => tracing::warn!(trafficshift = %t, "{m}"),
            (Said::Warn(m), None) => tracing::warn!("{m}"),
            (Said::Info(m), Some(t)) => tracing::info!(trafficshift = %t, "{m}"),
            (Said::Info(m), None) => tracing::info!("{m}"),
        }
    }
}

// === impl Applier ===

impl Applier {
    /// Route → generation of what is in the table now.
    pub(super) fn applied(&self) -> BTreeMap<String, u64> {
        self.served
            .iter()
            .map(|(name, (_, behind))| (name.clone(), behind.generation))
            .collect()
    }

    /// Route → `metadata.uid` of the TrafficShift whose generation [`Applier::applied`] reports.
    pub(super) fn applied_uid(&self) -> BTreeMap<String, String> {
        self.served
            .iter()
            .map(|(name, (_, behind))| (name.clone(), behind.uid.clone()))
            .collect()
    }

    /// Translates every TrafficShift, publishes the route set when it differs from the table, and
    /// updates the per-route metrics. Returns the lines it logged about the `--route`
    /// TrafficShift's presence and the translations (in order; the table's own lines, `route ...
    /// applied`, are not in it).
    pub(super) fn apply(
        &mut self,
        proxy: &Proxy,
        only: Option<&(String, String)>,
        shifts: &[Arc<DynamicObject>],
        slices: &[Arc<EndpointSlice>],
    ) -> Vec<Told> {
        let before: Vec<String> = self
            .served
            .keys()
            .chain(self.errors.keys())
            .cloned()
            .collect();
        let change = self.only_change(only, shifts);
        let (desired, translated) = self.translate_all(only, shifts, &by_service(slices));
        let mut said = Vec::new();
        match change {
            Some(OnlyRoute::Missing(m)) => said.push((None, Said::Warn(m))),
            Some(OnlyRoute::Appeared(m)) => {
                let served =
                    only.is_some_and(|(ns, name)| desired.contains_key(&format!("{ns}/{name}")));
                let m = if served {
                    format!("{m}: its route is served")
                } else {
                    m
                };
                said.push((None, Said::Info(m)));
            }
            None => {}
        }
        said.extend(translated);
        for (trafficshift, line) in &said {
            line.log(trafficshift.as_deref());
        }
        self.swap(proxy, desired);
        for key in before {
            if !self.served.contains_key(&key) && !self.errors.contains_key(&key) {
                self.metrics.forget(&key);
            }
        }
        for key in self.served.keys().chain(self.errors.keys()) {
            let applied = self.served.get(key).map(|(_, behind)| behind.generation);
            self.metrics
                .route(key, self.errors.contains_key(key), applied);
        }
        for object in shifts {
            let key = route_key(object);
            if self.served.contains_key(&key) {
                self.metrics.backends(&key, super::info::rows(object));
            }
        }
        said
    }

    /// With `--route` (`only`), whether the presence of its TrafficShift among `shifts` changed
    /// since the last call in a way to log: missing at the first call or after it was there, or
    /// there after it was missing (trial 10, K8: a sidecar whose TrafficShift does not exist
    /// answered 404 with no word why). `None` without `--route` or without a change.
    pub(super) fn only_change(
        &mut self,
        only: Option<&(String, String)>,
        shifts: &[Arc<DynamicObject>],
    ) -> Option<OnlyRoute> {
        let (ns, name) = only?;
        let missing = !shifts.iter().any(|o| {
            o.metadata.namespace.as_deref() == Some(ns) && o.metadata.name.as_deref() == Some(name)
        });
        let before = self.only_missing.replace(missing);
        match (before, missing) {
            (None | Some(false), true) => Some(OnlyRoute::Missing(format!(
                "trafficshift {ns}/{name} (--route) not found: every request is answered 404 \
                 (no route for this host and path) until it exists; check --route's name and \
                 namespace, or create the TrafficShift"
            ))),
            (Some(true), false) => Some(OnlyRoute::Appeared(format!(
                "trafficshift {ns}/{name} (--route) found"
            ))),
            _ => None,
        }
    }

    /// The routes wanted now: each TrafficShift translated, or its route as it was when that
    /// fails (said once per distinct reason, and remembered in `errors`), and the lines to log
    /// about them, each with its TrafficShift: an ERROR for broken input, a WARN for a backend
    /// with weight waiting for ready endpoints (the first seconds of every rollout), an INFO when
    /// a refused route is served again.
    fn translate_all(
        &mut self,
        only: Option<&(String, String)>,
        shifts: &[Arc<DynamicObject>],
        by_service: &BySlice<'_>,
    ) -> (Routes, Vec<Told>) {
        let mut desired: Routes = BTreeMap::new();
        let mut errors = BTreeMap::new();
        let mut waiting = BTreeSet::new();
        let mut said = Vec::new();
        for object in shifts {
            let meta = &object.metadata;
            let key = route_key(object);
            let uid = meta.uid.clone().unwrap_or_default();
            if let Some((ns, name)) = only {
                if meta.namespace.as_deref() != Some(ns) || meta.name.as_deref() != Some(name) {
                    continue;
                }
            }
            let mut to_one = None;
            let result = ShiftView::parse(object)
                .map_err(Unserved::Invalid)
                .and_then(|view| {
                    let of = |role: &str| {
                        let service = format!("{}-{role}", view.name);
                        by_service
                            .get(&(view.namespace.as_str(), service.as_str()))
                            .cloned()
                            .unwrap_or_default()
                    };
                    let (blue, green) = (of("blue"), of("green"));
                    let result = translate_route(&view, &blue, &green, only.is_some());
                    if let Err(Unserved::NoEndpoints(_)) = &result {
                        to_one = fallback(&view, &blue, &green, only.is_some());
                    }
                    result
                });
            match result {
                Ok(t) => {
                    let behind = Behind {
                        generation: t.generation,
                        uid,
                    };
                    desired.insert(key, (t.config, behind));
                }
                Err(unserved) => {
                    let kept = self.served.get(&key).cloned();
                    let mut message = unserved.message().to_owned();
                    if let Some((_, to)) = &to_one {
                        message = format!(
                            "{message} (all requests sent to {to}, the backend with ready endpoints, meanwhile)"
                        );
                    }
                    if self.errors.get(&key) != Some(&message) {
                        let line = match &to_one {
                            Some((_, to)) => fallen_back(&key, &unserved, *to),
                            None => refusal(&key, &unserved, kept.is_some()),
                        };
                        said.push((Some(key.clone()), line));
                    }
                    if matches!(unserved, Unserved::NoEndpoints(_)) {
                        waiting.insert(key.clone());
                    }
                    errors.insert(key.clone(), message);
                    match (to_one, kept) {
                        // No published split is served meanwhile: the Lease reports generation
                        // 0 for the route (kubetry28). Reporting the one last applied let a
                        // publication that this replica had applied just before the loss be
                        // acknowledged (`proxies::acks`) while it sent every request elsewhere.
                        (Some((t, _)), _) => {
                            let behind = Behind { generation: 0, uid };
                            desired.insert(key, (t.config, behind));
                        }
                        (None, Some(kept)) => {
                            desired.insert(key, kept);
                        }
                        (None, None) => {}
                    }
                }
            }
        }
        for key in self.errors.keys() {
            if !errors.contains_key(key) && desired.contains_key(key) {
                let m = if self.waiting.contains(key) {
                    format!("trafficshift {key}: endpoints ready, route served")
                } else {
                    format!("trafficshift {key}: fixed, route served")
                };
                said.push((Some(key.clone()), Said::Info(m)));
            }
        }
        self.errors = errors;
        self.waiting = waiting;
        (desired, said)
    }

    /// Publishes `desired` in one table generation unless the table already holds those routes.
    fn swap(&mut self, proxy: &Proxy, desired: Routes) {
        let same_table = desired.len() == self.served.len()
            && desired
                .iter()
                .zip(&self.served)
                .all(|((k1, (c1, _)), (k2, (c2, _)))| k1 == k2 && c1 == c2);
        if same_table {
            // Same routes; a new generation with the same split is applied as it stands.
            self.served = desired;
            return;
        }
        let routes: Vec<RouteConfig> = desired.values().map(|(c, _)| c.clone()).collect();
        match proxy.update(|table| {
            table.clone_from(&routes);
            Ok(())
        }) {
            Ok(table_generation) => {
                self.log_changes(&desired, table_generation);
                for warning in self.newly_shadowed(&routes) {
                    tracing::warn!("{warning}");
                }
                self.served = desired;
            }
            // Every route was checked on its own; what is left is a rule across routes.
            Err(e) => tracing::error!(
                "routes from the cluster not applied, the table stays: {}",
                crossfade_proxy::config::one_line(&e.to_string())
            ),
        }
    }

    /// The warnings about routes of `routes` (the table just published) that another shadows
    /// ([`shadowings`], the rule `crossfade proxy` warns by for a file's routes: trial report 6,
    /// F9), worded for TrafficShifts, that the previous table did not have: each is logged once,
    /// and again only after it went away and came back.
    pub(super) fn newly_shadowed(&mut self, routes: &[RouteConfig]) -> Vec<String> {
        let now: BTreeSet<String> = shadowings(routes)
            .iter()
            .map(|s| shadowed_words(routes, s))
            .collect();
        let new = now.difference(&self.shadowed).cloned().collect();
        self.shadowed = now;
        new
    }

    fn log_changes(&self, desired: &Routes, table_generation: u64) {
        for (key, (config, behind)) in desired {
            let generation = behind.generation;
            if self.served.get(key).map(|(c, _)| c) != Some(config) {
                let weights = config.weights();
                tracing::info!(
                    route = %key,
                    generation,
                    table_generation,
                    blue = weights.blue,
                    green = weights.green,
                    blue_endpoints = config.blue.endpoints.len(),
                    green_endpoints = config.green.endpoints.len(),
                    "route {key} applied"
                );
            }
        }
        for key in self.served.keys().filter(|k| !desired.contains_key(*k)) {
            tracing::info!(route = %key, table_generation, "route {key} removed");
        }
    }
}

/// The line that says TrafficShift `key`'s weights are not applied as published because a
/// backend with weight has no ready endpoint, and that every request goes to `to`, the backend
/// that has some ([`super::translate::fallback`]): a WARN (pods gone or unready; the controller
/// aborts a rollout whose preview stays so, docs/kubernetes.md).
pub(super) fn fallen_back(key: &str, unserved: &Unserved, to: Slot) -> Said {
    Said::Warn(format!(
        "trafficshift {key}: {}; all requests sent to {to}, the backend with ready endpoints, \
         until the other has some again",
        unserved.message()
    ))
}

/// The line that says why TrafficShift `key`'s route is refused: an ERROR for broken input, a
/// WARN for a backend with weight and no ready endpoints yet (the normal first seconds of a
/// rollout: the Services are made before their EndpointSlices list ready pods). `kept`: the route
/// it had stays in the table.
pub(super) fn refusal(key: &str, unserved: &Unserved, kept: bool) -> Said {
    match (unserved, kept) {
        (Unserved::Invalid(m), true) => {
            Said::Error(format!("trafficshift {key}: {m}; route left as it was"))
        }
        (Unserved::Invalid(m), false) => Said::Error(format!(
            "trafficshift {key}: {m}; route not served until this is fixed"
        )),
        (Unserved::NoEndpoints(m), true) => Said::Warn(format!(
            "trafficshift {key}: waiting for endpoints: {m}; route left as it was until they are \
             ready"
        )),
        (Unserved::NoEndpoints(m), false) => Said::Warn(format!(
            "trafficshift {key}: waiting for endpoints: {m}; route not served until they are ready"
        )),
    }
}

/// A shadowed route in the words of TrafficShifts: the routes from the cluster are in
/// `namespace/name` order, so the earlier one is the one first in that order.
fn shadowed_words(routes: &[RouteConfig], s: &Shadowed) -> String {
    let (route, by) = (&routes[s.route], &routes[s.by]);
    let first = format!(
        "trafficshift {} comes first (routes from the cluster are in namespace/name order) with \
         the same path prefix {:?}",
        by.name, route.path_prefix
    );
    match s.host {
        None if !s.with.is_empty() => {
            let takers: Vec<&str> = std::iter::once(s.by)
                .chain(s.with.iter().copied())
                .map(|k| routes[k].name.as_str())
                .collect();
            format!(
                "trafficshift {} is never chosen: trafficshifts {} come first (routes from the \
                 cluster are in namespace/name order) with the same path prefix {:?} and \
                 together list every host it names; give it its own spec.route.hosts or a \
                 longer spec.route.pathPrefix",
                route.name,
                takers.join(", "),
                route.path_prefix
            )
        }
        None => format!(
            "trafficshift {} is never chosen: {first} and lists every host it names; give it \
             its own spec.route.hosts or a longer spec.route.pathPrefix",
            route.name
        ),
        Some(k) => {
            let host = &route.hosts[k];
            let mine = s.by_host.map_or(host, |m| &by.hosts[m]);
            format!(
                "host {host:?} never reaches trafficshift {}: {first} and host {mine:?}",
                route.name
            )
        }
    }
}

/// EndpointSlices by (namespace, Service name).
type BySlice<'a> = HashMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>;

/// Indexes `slices` by the Service they belong to (label `kubernetes.io/service-name`).
fn by_service(slices: &[Arc<EndpointSlice>]) -> BySlice<'_> {
    let mut by_service: BySlice<'_> = HashMap::new();
    for slice in slices {
        let namespace = slice.metadata.namespace.as_deref().unwrap_or_default();
        let labels = slice.metadata.labels.as_ref();
        if let Some(service) = labels.and_then(|l| l.get(SERVICE_NAME_LABEL)) {
            by_service
                .entry((namespace, service.as_str()))
                .or_default()
                .push(slice);
        }
    }
    by_service
}

/// The route of a TrafficShift: `<namespace>/<name>`.
fn route_key(object: &DynamicObject) -> String {
    let meta = &object.metadata;
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}
