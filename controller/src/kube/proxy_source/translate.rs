//! Pure: one TrafficShift and the EndpointSlices of its two Services → the proxy route that serves
//! it, with the weights generation it carries (docs/kubernetes.md, "The proxy in the cluster").

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use crossfade_proxy::config::{check_routes, BackendConfig, RouteConfig, UpstreamProtocol};
use crossfade_proxy::weight::{Percent, Slot, Weights, FULL_BP};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use kube::api::DynamicObject;
use serde::de::DeserializeOwned;

use crate::kube::crd::{camel, MirrorPolicy, PortRef, RouteSpec, Share, WeightsStatus};

/// The label of an EndpointSlice naming the Service it belongs to (Kubernetes well-known label).
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The parts of a TrafficShift a proxy reads, each parsed on its own so that a malformed part
/// names itself and a part the proxy does not read (the rollout policy) cannot break its route.
#[derive(Clone, Debug, PartialEq)]
pub struct ShiftView {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `spec.route`, when set.
    pub route: Option<RouteSpec>,
    /// `status.weights`, when the controller has published weights.
    pub weights: Option<WeightsStatus>,
    /// `status.phase` as written (`Retiring`), when set: read as text, so that a phase this build
    /// does not know (a newer controller's) leaves the route served.
    pub phase: Option<String>,
}

/// What a route is made of, ready for the proxy's table.
#[derive(Clone, Debug, PartialEq)]
pub struct Translated {
    /// The route, named `<namespace>/<name>`.
    pub config: RouteConfig,
    /// `status.weights.generation` behind its weights; 0 without `status.weights`.
    pub generation: u64,
}

/// Why a TrafficShift's route cannot be put in the table now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unserved {
    /// Only that a backend with weight has no ready endpoints (yet): the normal first seconds of
    /// a rollout, whose Services exist before their EndpointSlices list ready pods. The message
    /// names the backend and its Service.
    NoEndpoints(String),
    /// Anything else wrong with the input (a field, a port, an address, a rule of the proxy's
    /// routes), named in the message.
    Invalid(String),
}

impl Unserved {
    /// The message, naming the field or the backend.
    pub fn message(&self) -> &str {
        match self {
            Unserved::NoEndpoints(m) | Unserved::Invalid(m) => m,
        }
    }
}

// === impl ShiftView ===

impl ShiftView {
    /// Reads a TrafficShift watched as a dynamic object.
    ///
    /// # Errors
    /// A message naming the field: `metadata.name`/`metadata.namespace` missing, or `spec.route` /
    /// `status.weights` not of their shape (`status.weights.active: "half" is not a percentage ...`).
    pub fn parse(object: &DynamicObject) -> Result<ShiftView, String> {
        let meta = &object.metadata;
        let name = meta.name.clone().ok_or("metadata.name is missing")?;
        let namespace = meta
            .namespace
            .clone()
            .ok_or("metadata.namespace is missing")?;
        let data = &object.data;
        Ok(ShiftView {
            namespace,
            name,
            route: field(data, &["spec", "route"])?,
            weights: field(data, &["status", "weights"])?,
            phase: data
                .pointer("/status/phase")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned),
        })
    }

    /// The route's name: `<namespace>/<name>`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// The value at `path` of `data`, `None` when absent or null.
fn field<T: DeserializeOwned>(
    data: &serde_json::Value,
    path: &[&str],
) -> Result<Option<T>, String> {
    let mut value = data;
    for key in path {
        match value.get(key) {
            Some(v) if !v.is_null() => value = v,
            _ => return Ok(None),
        }
    }
    let at = path.join(".");
    T::deserialize(value).map(Some).map_err(|e| {
        // serde names the inner field when it can ("missing field `preview`").
        format!("{at}: {e}")
    })
}

/// The route that serves `shift`: blue over the ready endpoints of `blue` (the slices of Service
/// `<name>-blue`, the active share), green over those of `green` (`<name>-green`, the preview
/// share), weighted by `status.weights` (all to blue without it), mirroring blue's requests to
/// green as `status.weights.shadow` says while it is set (the shadow step). `sidecar`: every host
/// and every path, whatever `spec.route` says of them.
///
/// Ready means `conditions.ready` is not `false` and `conditions.terminating` is not `true`; each
/// endpoint contributes its first address (the addresses of one endpoint are fungible, per the
/// EndpointSlice API), at the port `spec.route.port` names, else the slice's first port.
///
/// # Errors
/// A message naming what is wrong: `spec.route.port` not in a slice that has ready endpoints, a
/// slice of FQDN addresses, an address that is not an IP, or a rule of the proxy's routes broken
/// (weights not summing to 100%, weight on a backend without ready endpoints, a bad host or path
/// prefix, mirror settings out of bounds: `status.weights.shadow.maxInFlight: ...`).
pub fn translate(
    shift: &ShiftView,
    blue: &[&EndpointSlice],
    green: &[&EndpointSlice],
    sidecar: bool,
) -> Result<Translated, String> {
    translate_route(shift, blue, green, sidecar).map_err(|e| e.message().to_owned())
}

/// [`translate`], with its error telling a backend waiting for endpoints
/// ([`Unserved::NoEndpoints`]: every problem is weight on a backend without ready endpoints)
/// apart from broken input ([`Unserved::Invalid`]).
///
/// # Errors
/// As [`translate`]'s, sorted into those two kinds.
pub fn translate_route(
    shift: &ShiftView,
    blue: &[&EndpointSlice],
    green: &[&EndpointSlice],
    sidecar: bool,
) -> Result<Translated, Unserved> {
    let route = shift.route.clone().unwrap_or_default();
    let port = route.port.as_ref();
    let (hosts, path_prefix) = if sidecar {
        (Vec::new(), "/".to_owned())
    } else {
        let hosts = if route.hosts.is_empty() {
            default_hosts(&shift.namespace, &shift.name)
        } else {
            route.hosts.clone()
        };
        (
            hosts,
            route.path_prefix.clone().unwrap_or_else(|| "/".to_owned()),
        )
    };
    let (weights, generation) = match &shift.weights {
        Some(w) if w.active.bp() + w.preview.bp() != FULL_BP => {
            return Err(Unserved::Invalid(format!(
                "status.weights: active {} + preview {} = {}, must sum to 100%",
                w.active,
                w.preview,
                Percent(w.active.bp() + w.preview.bp())
            )));
        }
        Some(w) => (
            Weights {
                blue: w.active.bp(),
                green: w.preview.bp(),
            },
            w.generation,
        ),
        None => (Weights::all_to(Slot::Blue), 0),
    };
    let backend = |slices: &[&EndpointSlice], slot: Slot| {
        let (endpoints, protocol) = endpoints(slices, port).map_err(Unserved::Invalid)?;
        Ok::<_, Unserved>(BackendConfig {
            endpoints,
            weight: Some(Percent(weights.of(slot))),
            protocol,
        })
    };
    let config = RouteConfig {
        name: shift.key(),
        hosts,
        path_prefix,
        active: Slot::Blue,
        // After promotion the preview has served the route (all of it while the target rolled
        // out): from the swap back to the target until its Deployment is deleted, it takes the
        // requests the target cannot serve (its pods crashed), as the retiring backend does in
        // `crossfade run`. Before promotion a weight-0 preview never takes a request (C03).
        backup: matches!(shift.phase.as_deref(), Some("Promoted" | "Retiring"))
            .then_some(Slot::Green),
        blue: backend(blue, Slot::Blue)?,
        green: backend(green, Slot::Green)?,
        // The shadow step: the active backend's requests mirrored to the preview, compared.
        shadow: shift
            .weights
            .as_ref()
            .and_then(|w| w.shadow.as_ref())
            .map(MirrorPolicy::to_config),
        // spec.route.failOpen, the proxy's default (true) when not set.
        fail_open: route.fail_open.unwrap_or(true),
        // spec.route.sticky, as the proxy's routes[].sticky (case C08).
        sticky: route.sticky.as_ref().map(|s| s.to_config()),
        // spec.route.responseTimeout, as the proxy's routes[].response_timeout (case C13).
        response_timeout: route.response_timeout.map(|s| s.0),
        ..RouteConfig::default()
    };
    let mut problems = Vec::new();
    check_routes(std::slice::from_ref(&config), &mut problems);
    if !problems.is_empty() {
        // `routes[0].blue.endpoints`: the one problem at that path is weight without endpoints.
        let waiting = problems.iter().all(|p| {
            let path = p.path.strip_prefix("routes[0].").unwrap_or(&p.path);
            path == "blue.endpoints" || path == "green.endpoints"
        });
        let text: Vec<String> = problems
            .iter()
            .map(|p| {
                let path = p.path.strip_prefix("routes[0].").unwrap_or(&p.path);
                format!("{}: {}", kube_path(path, &shift.name), p.message)
            })
            .collect();
        let text = text.join("; ");
        return Err(if waiting {
            Unserved::NoEndpoints(text)
        } else {
            Unserved::Invalid(text)
        });
    }
    Ok(Translated { config, generation })
}

/// The route of a TrafficShift refused only because a backend with weight has no ready endpoint
/// ([`Unserved::NoEndpoints`]: its pods scaled to 0, evicted, all unready) while the other backend
/// has some: every request goes to that other backend, without mirroring, so that clients are
/// never sent to pods that are gone (the route kept as it was would still list them). Returns the
/// route (its generation the one of `status.weights`, which it does not apply as published) and
/// the backend that takes the requests; `None` when both or neither have ready endpoints, or when
/// the route is refused for another reason.
pub fn fallback(
    shift: &ShiftView,
    blue: &[&EndpointSlice],
    green: &[&EndpointSlice],
    sidecar: bool,
) -> Option<(Translated, Slot)> {
    let port = shift.route.as_ref().and_then(|r| r.port.as_ref());
    let ready =
        |slices: &[&EndpointSlice]| endpoints(slices, port).is_ok_and(|(e, _)| !e.is_empty());
    let to = match (ready(blue), ready(green)) {
        (true, false) => Slot::Blue,
        (false, true) => Slot::Green,
        _ => return None,
    };
    let mut view = shift.clone();
    let generation = view.weights.as_ref().map_or(0, |w| w.generation);
    let share = |slot: Slot| Share(Percent(if slot == to { FULL_BP } else { 0 }));
    view.weights = Some(WeightsStatus {
        active: share(Slot::Blue),
        preview: share(Slot::Green),
        generation,
        shadow: None,
    });
    translate_route(&view, blue, green, sidecar)
        .ok()
        .map(|t| (t, to))
}

/// The field a proxy route problem comes from, in the TrafficShift's words.
fn kube_path(path: &str, name: &str) -> String {
    match path {
        "path_prefix" => "spec.route.pathPrefix".to_owned(),
        "blue.weight" | "green.weight" => "status.weights".to_owned(),
        other if other.starts_with("shadow") => format!("status.weights.{}", camel(other)),
        "blue.endpoints" => format!("blue (ready endpoints of Service {name}-blue)"),
        "green.endpoints" => format!("green (ready endpoints of Service {name}-green)"),
        other if other.starts_with("hosts") => format!("spec.route.{other}"),
        other if other.starts_with("sticky") => format!("spec.route.{}", camel(other)),
        "response_timeout" => "spec.route.responseTimeout".to_owned(),
        other => other.to_owned(),
    }
}

/// The in-cluster names of a Service `name` in `namespace`, as a client in the cluster would
/// write them in `Host`: `web`, `web.shop`, `web.shop.svc`, `web.shop.svc.cluster.local`.
pub fn default_hosts(namespace: &str, name: &str) -> Vec<String> {
    vec![
        name.to_owned(),
        format!("{name}.{namespace}"),
        format!("{name}.{namespace}.svc"),
        format!("{name}.{namespace}.svc.cluster.local"),
    ]
}

/// Whether the proxies route to `endpoint`: `conditions.ready` is not `false` (unset counts as
/// ready, as the EndpointSlice API says consumers should take an unknown state) and
/// `conditions.terminating` is not `true`. The rollback's capacity counts the same endpoints
/// ([`crate::kube::capacity`]).
pub fn is_ready(endpoint: &Endpoint) -> bool {
    let c = endpoint.conditions.as_ref();
    c.and_then(|c| c.ready) != Some(false) && c.and_then(|c| c.terminating) != Some(true)
}

/// The ready endpoints of `slices` at `port`, sorted and without repeats (a stable order keeps the
/// proxy's connection pool across table changes that do not touch this backend).
/// The ready endpoints of `slices` on the port `port` names, and how to speak to them: h2c when
/// that port's `appProtocol` is `kubernetes.io/h2c` (the standard application protocol of
/// KEP-3726, Kubernetes 1.27+), else HTTP/1.1.
fn endpoints(
    slices: &[&EndpointSlice],
    port: Option<&PortRef>,
) -> Result<(Vec<SocketAddr>, UpstreamProtocol), String> {
    let mut found = BTreeSet::new();
    let mut protocol = UpstreamProtocol::Http1;
    for slice in slices {
        let name = slice.metadata.name.as_deref().unwrap_or("?");
        let ready: Vec<&str> = slice
            .endpoints
            .iter()
            .filter(|e| is_ready(e))
            .filter_map(|e| e.addresses.first().map(String::as_str))
            .collect();
        if ready.is_empty() {
            continue;
        }
        if slice.address_type == "FQDN" {
            return Err(format!(
                "EndpointSlice {name}: addressType FQDN is not supported (the proxy balances over pod IPs)"
            ));
        }
        let (number, app_protocol) = slice_port(slice, port)
            .map_err(|problem| format!("EndpointSlice {name}: {problem}"))?;
        if app_protocol == Some(H2C_APP_PROTOCOL) {
            protocol = UpstreamProtocol::H2c;
        }
        for address in ready {
            let ip: IpAddr = address.parse().map_err(|_| {
                format!("EndpointSlice {name}: endpoint address {address:?} is not an IP address")
            })?;
            found.insert(SocketAddr::new(ip, number));
        }
    }
    Ok((found.into_iter().collect(), protocol))
}

/// The `appProtocol` of a port whose endpoints speak cleartext HTTP/2 with prior knowledge
/// (RFC 9113 §3.3), as Kubernetes defines it (KEP-3726).
pub const H2C_APP_PROTOCOL: &str = "kubernetes.io/h2c";

/// Why a slice without ports cannot be routed to, and what fixes it.
const NO_PORT: &str = "lists no port: the Deployment's pod template declares no container port; \
                       add ports[].containerPort to the container that serves (crossfade makes \
                       the Services' ports from them)";

/// The port number `port` names in `slice` (or its first port), with that port's `appProtocol`.
fn slice_port<'a>(
    slice: &'a EndpointSlice,
    port: Option<&PortRef>,
) -> Result<(u16, Option<&'a str>), String> {
    let ports = slice.ports.as_deref().unwrap_or_default();
    let listed = || {
        let all: Vec<String> = ports
            .iter()
            .map(|p| match (&p.name, p.port) {
                (Some(n), Some(v)) if !n.is_empty() => format!("{n}={v}"),
                (_, Some(v)) => v.to_string(),
                (_, None) => "(all)".to_owned(),
            })
            .collect();
        if all.is_empty() {
            "none".to_owned()
        } else {
            all.join(", ")
        }
    };
    let number = |p: i32| u16::try_from(p).ok().filter(|&p| p > 0);
    let with_number = |p: &'a k8s_openapi::api::discovery::v1::EndpointPort| {
        p.port
            .and_then(number)
            .map(|n| (n, p.app_protocol.as_deref()))
    };
    let found = match port {
        Some(PortRef::Number(n)) => ports.iter().filter_map(with_number).find(|(p, _)| p == n),
        Some(PortRef::Name(wanted)) => ports
            .iter()
            .find(|p| p.name.as_deref() == Some(wanted.as_str()))
            .and_then(with_number),
        None => ports.iter().find_map(with_number),
    };
    found.ok_or_else(|| match port {
        // Crossfade makes the Services' ports from the template's container ports, so neither
        // spec.route.port nor the Service can give a port-less slice one (trial 10, K10).
        _ if ports.is_empty() => NO_PORT.to_owned(),
        Some(port) => format!("spec.route.port: no port {port} (ports: {})", listed()),
        None => format!("lists no port number (ports: {})", listed()),
    })
}

#[cfg(test)]
mod tests;
