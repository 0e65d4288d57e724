//! `spec.route` of a TrafficShift: which requests a Crossfade proxy in the cluster matches for it,
//! and which port of the backends' endpoints it sends them to (docs/kubernetes.md, "The proxy in
//! the cluster").

use std::borrow::Cow;
use std::fmt;

use crossfade_proxy::config::{check_routes, BackendConfig, RouteConfig};
use crossfade_proxy::weight::Percent;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

/// What a proxy matches for a TrafficShift `shop/web`, and where it sends it. Every field is
/// optional.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(
    rename_all = "camelCase",
    expecting = "a map of route settings (hosts, pathPrefix, port, failOpen, sticky, responseTimeout)"
)]
pub struct RouteSpec {
    /// Host names (without port) the route answers, compared case-insensitively with the request's
    /// host; a wildcard `*.example.com` answers every name under `example.com` (one label or
    /// more, not `example.com` itself), as Gateway API HTTPRoute `hostnames` do. At equal path
    /// prefix the most specific host wins (an exact name, then the longest wildcard, then a
    /// TrafficShift without hosts), whatever the names of the TrafficShifts; two that list the
    /// same host go in namespace/name order (the proxy warns about the one that never gets it).
    /// Default: the in-cluster names of the TrafficShift, `web`, `web.shop`,
    /// `web.shop.svc` and `web.shop.svc.cluster.local`. A sidecar proxy (`--route shop/web`)
    /// answers every host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub hosts: Vec<String>,
    /// The path prefix the route answers, starting with `/`; it matches whole segments (`/api`
    /// matches `/api/x`, not `/apix`). Default `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024), regex(pattern = r"^/"))]
    pub path_prefix: Option<String>,
    /// The endpoints' port: a port name or number as listed in the backends' EndpointSlices
    /// (`ports[].name` / `ports[].port`, i.e. the container's target port). Default: the slice's
    /// only (or first) port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortRef>,
    /// Whether the route **fails open** (the proxy's `routes[].fail_open`, the run spec's
    /// `route.fail_open`): when health holds out every endpoint a request may take (from the
    /// cluster, outlier ejection after 3 upstream failures in a row: refused connects, resets,
    /// timeouts), the request still goes to one of them, by the weights, rather than getting 503
    /// "no endpoint"; the proxy counts it in `crossfade_fail_open_requests_total`. Never to a
    /// preview at weight 0. Default `true`: an ejection of every endpoint at once is more often a
    /// burst the backends survive than every pod dead. `false` answers 503 as soon as nothing
    /// can serve (for clients that retry elsewhere on 503, or fail fast).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_open: Option<bool>,
    /// Sticky, monotone assignment of users to the two backends (the proxy's `routes[].sticky`,
    /// the run spec's `route.sticky`): a user's key (a header, a cookie, or the client's address)
    /// is hashed to a bucket, and the user goes to the preview iff the bucket is below the
    /// preview's weight, so as the rollout raises it each user moves to the preview once, and a
    /// rollback or abort moves every user back at once (case C08). Every proxy replica computes
    /// the same bucket. Default: none, every request is picked by weight on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky: Option<StickySpec>,
    /// The route's request timeout (the proxy's `routes[].response_timeout`, the run spec's
    /// `route.response_timeout`): the longest wait for a response head once the whole request
    /// went upstream, past which the client gets 504 (RFC 9110 §15.6.5) and the endpoint an
    /// outlier failure, so that a hung preview holds no request longer (case C13). `"1m30s"`
    /// form, above 0, at most 8784h. Default: the proxy's `upstream.response_timeout` (30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_timeout: Option<super::Span>,
}

// === impl RouteSpec ===

impl RouteSpec {
    /// The route's own settings (`hosts`, `pathPrefix`, `sticky`, `responseTimeout`) checked by the
    /// rules every Crossfade proxy applies to the route it builds from the TrafficShift
    /// (`crossfade_proxy::config::check_routes`), so that a route no proxy would serve is refused
    /// before a rollout starts (session 41: before, the controller started the rollout and the
    /// refusal was only in the proxies' logs). The weights and endpoints, which come from status
    /// and the EndpointSlices, are not this check's: it gives both backends 0%.
    ///
    /// # Errors
    /// One problem per broken rule, each naming its field: `spec.route.hosts[1]: "Bad Host" must
    /// be a host name ...`, `spec.route.pathPrefix: "api" must start with '/'`,
    /// `spec.route.responseTimeout: must be above 0s`.
    pub fn problems(&self) -> Vec<String> {
        let zero = || BackendConfig {
            weight: Some(Percent(0)),
            ..BackendConfig::default()
        };
        let config = RouteConfig {
            name: "spec/route".to_owned(),
            hosts: self.hosts.clone(),
            path_prefix: self.path_prefix.clone().unwrap_or_else(|| "/".to_owned()),
            blue: zero(),
            green: zero(),
            sticky: self.sticky.as_ref().map(StickySpec::to_config),
            response_timeout: self.response_timeout.map(|s| s.0),
            ..RouteConfig::default()
        };
        let mut problems = Vec::new();
        check_routes(std::slice::from_ref(&config), &mut problems);
        problems
            .iter()
            .map(|p| {
                let path = p.path.strip_prefix("routes[0].").unwrap_or(&p.path);
                format!("spec.route.{}: {}", super::camel(path), p.message)
            })
            .collect()
    }
}

/// `spec.route.sticky`: where a user's key comes from. Exactly one of `header`, `cookie` and
/// `clientAddress` (the proxy refuses the route otherwise, naming the field).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(
    rename_all = "camelCase",
    expecting = "a map with one of header, cookie or clientAddress"
)]
pub struct StickySpec {
    /// A request header whose (first) value is the key, e.g. `X-User`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// A cookie whose value is the key, e.g. `cf_user`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    /// `true`: the client's IP address is the key (the right-most `X-Forwarded-For` element
    /// under the proxy's `trust_forwarded_for`, else the TCP peer's).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub client_address: bool,
    /// With `cookie`: a request without a valid key gets a random one, set site-wide
    /// (`Set-Cookie: NAME=<key>; Path=/; HttpOnly; SameSite=Lax`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub set: bool,
}

impl StickySpec {
    /// The proxy's route setting with the same keys.
    pub fn to_config(&self) -> crossfade_proxy::config::StickyConfig {
        crossfade_proxy::config::StickyConfig {
            header: self.header.clone(),
            cookie: self.cookie.clone(),
            client_address: self.client_address,
            set: self.set,
        }
    }
}

/// A port by number (`8080`) or by name (`"http"`), the int-or-string shape of a Service's
/// `targetPort`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum PortRef {
    /// A port number, 1 to 65535.
    Number(u16),
    /// A port name (an IANA service name, RFC 6335 §5.1: at most 15 characters).
    Name(String),
}

impl<'de> Deserialize<'de> for PortRef {
    /// A visitor rather than an untagged enum, whose error for any other shape named a Rust type
    /// ("did not match any variant of untagged enum PortRef"; trial report 5, F8).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{self, Visitor};
        struct Port;
        impl Visitor<'_> for Port {
            type Value = PortRef;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number or name such as 8080 or \"http\"")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<PortRef, E> {
                u16::try_from(n)
                    .map(PortRef::Number)
                    .map_err(|_| E::custom(format_args!("{n} is not a port (1 to 65535)")))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<PortRef, E> {
                match u64::try_from(n) {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::custom(format_args!("{n} is not a port (1 to 65535)"))),
                }
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<PortRef, E> {
                Ok(PortRef::Name(name.to_owned()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<PortRef, E> {
                Err(crossfade_proxy::de::null(&self, None))
            }
        }
        d.deserialize_any(Port)
    }
}

impl fmt::Display for PortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortRef::Number(n) => write!(f, "{n}"),
            PortRef::Name(name) => write!(f, "{name:?}"),
        }
    }
}

impl JsonSchema for PortRef {
    fn schema_name() -> Cow<'static, str> {
        "PortRef".into()
    }

    fn inline_schema() -> bool {
        true
    }

    // The structural int-or-string form, as for `Share`: `minimum`/`maximum` bind the number,
    // `maxLength` the name.
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A port number (1-65535) or name, as in the backends' EndpointSlices.",
            "x-kubernetes-int-or-string": true,
            "minimum": 1,
            "maximum": 65535,
            "maxLength": 15,
        })
    }
}
