//! The rules a config must follow, each broken rule reported with its field path.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;

use super::{Problem, RouteConfig, UpstreamConfig};
use crate::weight::{Percent, Slot, Weights, FULL_BP};

impl UpstreamConfig {
    pub(super) fn check(&self, problems: &mut Vec<Problem>) {
        for (field, value) in [
            ("connect_timeout", self.connect_timeout),
            ("response_timeout", self.response_timeout),
            ("idle_timeout", self.idle_timeout),
        ] {
            if value.is_zero() {
                problems.push(Problem::new(
                    format!("upstream.{field}"),
                    "must be above 0s",
                ));
            }
        }
        self.balance.check("upstream.balance", problems);
        let ratio = self.retry_budget.ratio;
        if ratio.0 > FULL_BP {
            problems.push(Problem::new(
                "upstream.retry_budget.ratio",
                format!("{ratio} is above 100%"),
            ));
        }
    }
}

/// Checks a list of routes, appending one problem per broken rule (paths start at `routes[i]`).
///
/// The proxy runs this on every table update, so an edit through
/// [`Proxy::update`](crate::Proxy::update) obeys the same rules as the config file, except the
/// one rule that only a file can break: two routes matching the same requests
/// ([`check_route_matches`], run by [`ProxyConfig::validate`](super::ProxyConfig::validate)). A
/// table built from Kubernetes is not refused as a whole when two TrafficShifts overlap: the first
/// matching route in the table is chosen.
pub fn check_routes(routes: &[RouteConfig], problems: &mut Vec<Problem>) {
    let mut first_index: HashMap<&str, usize> = HashMap::new();
    for (i, route) in routes.iter().enumerate() {
        let at = format!("routes[{i}]");
        if let Some(first) = first_index.get(route.name.as_str()) {
            problems.push(Problem::new(
                format!("{at}.name"),
                format!(
                    "duplicate route name {:?} (first at routes[{first}])",
                    route.name
                ),
            ));
        } else {
            first_index.insert(&route.name, i);
        }
        route.check(&at, problems);
    }
}

/// Refuses an endpoint that is the proxy's own listen or admin address (`own`, each with its
/// name), wildcards included ([`crate::loops::own_address`]): every request to it would loop back
/// into the proxy. One problem per such endpoint, at `routes[i].blue.endpoints[j]`.
pub fn check_own_addresses(
    routes: &[RouteConfig],
    own: &[(std::net::SocketAddr, &str)],
    problems: &mut Vec<Problem>,
) {
    for (i, route) in routes.iter().enumerate() {
        for slot in [Slot::Blue, Slot::Green] {
            for (j, ep) in route.backend(slot).endpoints.iter().enumerate() {
                if let Some(message) = crate::loops::own_address_problem(*ep, own) {
                    let path = format!("routes[{i}].{}.endpoints[{j}]", slot.as_str());
                    problems.push(Problem::new(path, message));
                }
            }
        }
    }
}

/// Refuses a route whose hosts (as a set, case-insensitive, order ignored) and `path_prefix` equal
/// an earlier route's: the table picks the first such route for every request, so the later one
/// could never be reached (as nginx refuses a duplicate `location`). The problem is reported on
/// the later route's `path_prefix` and names the earlier one: `routes[1].path_prefix: duplicate
/// match: any host with path prefix "/api/" (first at routes[0], "api"); this route would never
/// be chosen`.
pub fn check_route_matches(routes: &[RouteConfig], problems: &mut Vec<Problem>) {
    let mut first: HashMap<(BTreeSet<String>, &str), usize> = HashMap::new();
    for (i, route) in routes.iter().enumerate() {
        let hosts = lowercase(route);
        match first.get(&(hosts.clone(), route.path_prefix.as_str())) {
            Some(&earlier) => {
                let hosts = if hosts.is_empty() {
                    "any host".to_owned()
                } else {
                    format!("hosts {:?}", hosts.iter().collect::<Vec<_>>())
                };
                problems.push(Problem::new(
                    format!("routes[{i}].path_prefix"),
                    format!(
                        "duplicate match: {hosts} with path prefix {:?} (first at routes[{earlier}], \
                         {:?}); this route would never be chosen",
                        route.path_prefix, routes[earlier].name
                    ),
                ));
            }
            None => {
                first.insert((hosts, route.path_prefix.as_str()), i);
            }
        }
    }
}

/// Warns about endpoints and headers a route is given that cannot do what they seem to (trial 11,
/// L10), each naming its field:
/// - an endpoint listed twice in one backend: the balancer sees each entry, so it silently gets
///   a double share;
/// - one endpoint in both backends: the blue/green split and each backend's analysis then
///   measure the same server;
/// - an endpoint on port 0, or a broadcast or multicast address: no connection can reach it;
/// - an endpoint on the unspecified address (`0.0.0.0`, `::`), a listener's bind-all copied into
///   the endpoints: only Linux connects it, to this host;
/// - a sticky `header` that is the `override_header`: its only accepted values are `blue` and
///   `green` (others are answered 400), so it cannot carry a per-user key;
/// - a `shadow` that mirrors nothing ([`super::ShadowConfig::warnings`]);
/// - a `backup` that backs nothing up: the active slot (which takes what the others cannot serve
///   already), or a slot without endpoints.
///
/// Warnings, not errors, by the rule of [`shadowed_routes`]: a config that loaded before must not
/// stop loading after an upgrade.
pub fn route_warnings(routes: &[RouteConfig]) -> Vec<Problem> {
    let mut warnings = Vec::new();
    for (i, route) in routes.iter().enumerate() {
        let at = format!("routes[{i}]");
        let mut seen: HashMap<std::net::SocketAddr, String> = HashMap::new();
        for slot in Slot::ALL {
            let mut own = BTreeSet::new();
            for (j, endpoint) in route.backend(slot).endpoints.iter().enumerate() {
                let path = format!("{at}.{slot}.endpoints[{j}]");
                let ip = endpoint.ip();
                let broadcast = matches!(ip, std::net::IpAddr::V4(v4) if v4.is_broadcast());
                if endpoint.port() == 0 || broadcast || ip.is_multicast() {
                    let message = format!(
                        "{endpoint} cannot be connected to (port 0, broadcast or multicast)"
                    );
                    warnings.push(Problem::new(path.clone(), message));
                } else if ip.is_unspecified() {
                    let message = format!(
                        "{endpoint} is the unspecified address, which a server binds to listen on \
                         every address, not one to connect to (Linux takes it as this host); write \
                         the backend's own address, e.g. 127.0.0.1:{}",
                        endpoint.port()
                    );
                    warnings.push(Problem::new(path.clone(), message));
                }
                if !own.insert(*endpoint) {
                    let message = format!(
                        "{endpoint} is listed twice in {slot}: it gets a double share of {slot}'s \
                         traffic; list it once"
                    );
                    warnings.push(Problem::new(path, message));
                } else if let Some(first) = seen.get(endpoint) {
                    let message = format!(
                        "{endpoint} is also {first}: both backends would be the same server, and \
                         the split and each backend's analysis would measure it twice"
                    );
                    warnings.push(Problem::new(path, message));
                } else {
                    seen.insert(*endpoint, format!("{at}.{slot}.endpoints[{j}]"));
                }
            }
        }
        if !route.path_prefix.is_ascii() {
            let encoded = percent_encode_unsendable(&route.path_prefix);
            let message = format!(
                "{:?} holds non-ASCII characters, which browsers and HTTP clients send \
                 percent-encoded ({encoded:?}): this prefix matches only clients that send them \
                 raw; write {encoded:?}",
                route.path_prefix
            );
            warnings.push(Problem::new(format!("{at}.path_prefix"), message));
        }
        let sticky = route.sticky.as_ref().and_then(|s| s.header.as_deref());
        if let (Some(sticky), Some(forced)) = (sticky, route.override_header.as_deref()) {
            if sticky.eq_ignore_ascii_case(forced) {
                let message = format!(
                    "{sticky:?} is also the override_header, whose only values are blue and green: \
                     it cannot carry a per-user key; use another header"
                );
                warnings.push(Problem::new(format!("{at}.sticky.header"), message));
            }
        }
        if let Some(shadow) = &route.shadow {
            warnings.extend(shadow.warnings(&format!("{at}.shadow")));
        }
        warnings.extend(route.backup_warning(&at));
    }
    warnings
}

/// Warns about a sticky cookie the proxy mints (`sticky: { cookie: NAME, set: true }`) whose
/// name starts with `__Secure-` or `__Host-` (any letter case) on a proxy without `tls:`
/// (`tls` false): browsers store such a cookie only when it carries `Secure` (RFC 6265bis draft,
/// §4.1.3 "Cookie Name Prefixes"; Chrome, Firefox and Safari enforce it), and the proxy's
/// `Set-Cookie` carries `Secure` only under `tls:`. No browser would keep the key, so each request
/// would be picked afresh and a page's assets split between the backends. Under `tls:` the cookie
/// (`Path=/`, no `Domain`, `Secure`) meets both prefixes' rules. A warning at
/// `routes[i].sticky.cookie`, not an error, by the rule of [`shadowed_routes`].
pub fn cookie_prefix_warnings(routes: &[RouteConfig], tls: bool) -> Vec<Problem> {
    if tls {
        return Vec::new();
    }
    let prefixed = |name: &str| {
        ["__secure-", "__host-"].iter().any(|prefix| {
            name.get(..prefix.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
        })
    };
    let mut warnings = Vec::new();
    for (i, route) in routes.iter().enumerate() {
        let Some(sticky) = route.sticky.as_ref().filter(|s| s.set) else {
            continue;
        };
        if let Some(name) = sticky.cookie.as_deref().filter(|n| prefixed(n)) {
            let message = format!(
                "{name:?}: browsers keep a cookie named __Secure-... or __Host-... only with the \
                 Secure attribute (RFC 6265bis §4.1.3), which the proxy's Set-Cookie carries only \
                 under tls:; without it no browser keeps the key and every request is picked \
                 afresh; use a name without the prefix"
            );
            warnings.push(Problem::new(format!("routes[{i}].sticky.cookie"), message));
        }
    }
    warnings
}

/// Warns about a route that an earlier one shadows without duplicating it: the table takes the
/// most specific matching host entry (an exact name, then the longest wildcard, then a route
/// without hosts: `table::HostRank`), then the longest matching prefix, then the first declared
/// route. So only a route's own entries, declared again earlier for the same `path_prefix`, take
/// its hosts: a host entry that an earlier route with the same prefix also lists never reaches
/// it, and a route whose every entry an earlier one lists is never chosen. An earlier route
/// without hosts, or with a wildcard over a later route's name (`*.example.com` over
/// `shop.example.com`), ranks below the later one and shadows nothing. Each warning names both
/// routes: `routes[1].hosts: route "shop" is never chosen: routes[0] ("all") comes first with
/// the same path prefix "/" and lists every host it names`. A route whose hosts several earlier
/// routes take between them gets a line per host and one more naming them all (`... is never
/// chosen: routes[0] ("a"), routes[1] ("b") come first ... and together list every host it
/// names`).
///
/// Warnings, not errors (unlike the exact duplicates of [`check_route_matches`], refused as nginx
/// refuses a duplicate `location`): a config that loaded before must not stop loading after an
/// upgrade, and a shared host can be meant (nginx warns "conflicting server name ... ignored"
/// and serves). `crossfade check` prints them, and `crossfade proxy` logs them at start and at
/// every reload.
pub fn shadowed_routes(routes: &[RouteConfig]) -> Vec<Problem> {
    shadowings(routes)
        .into_iter()
        .map(|s| {
            let (later, earlier) = (&routes[s.route], &routes[s.by]);
            let (i, j) = (s.by, s.route);
            let first = format!(
                "routes[{i}] ({:?}) comes first with the same path prefix {:?}",
                earlier.name, later.path_prefix
            );
            match s.host {
                None if !s.with.is_empty() => {
                    let takers: Vec<String> = std::iter::once(s.by)
                        .chain(s.with.iter().copied())
                        .map(|k| format!("routes[{k}] ({:?})", routes[k].name))
                        .collect();
                    Problem::new(
                        format!("routes[{j}].hosts"),
                        format!(
                            "route {:?} is never chosen: {} come first with the same path \
                             prefix {:?} and together list every host it names; give it a \
                             longer path_prefix, or declare it before routes[{i}]",
                            later.name,
                            takers.join(", "),
                            later.path_prefix
                        ),
                    )
                }
                None => Problem::new(
                    format!("routes[{j}].hosts"),
                    format!(
                        "route {:?} is never chosen: {first} and lists every host it names; give \
                         it a longer path_prefix, or declare it before routes[{i}]",
                        later.name
                    ),
                ),
                Some(k) => {
                    let host = &later.hosts[k];
                    let mine = s.by_host.map_or(host, |m| &earlier.hosts[m]);
                    Problem::new(
                        format!("routes[{j}].hosts[{k}]"),
                        format!(
                            "{host:?} never reaches route {:?}: {first} and host {mine:?}",
                            later.name
                        ),
                    )
                }
            }
        })
        .collect()
}

/// A route that an earlier one shadows, by index into the routes (see [`shadowed_routes`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shadowed {
    /// The route never (or, for some hosts, never) chosen.
    pub route: usize,
    /// The earlier route chosen instead: the same `path_prefix`, declared first.
    pub by: usize,
    /// With `host` `None`, the other earlier routes (same `path_prefix`, in order) that together
    /// with `by` list every host entry of the route, none of them all: each entry was said
    /// already, one [`Shadowed`] per entry, and this one says the route is never chosen at all.
    /// Empty otherwise.
    pub with: Vec<usize>,
    /// `None`: the whole route is never chosen (`by`, with `with` when it is not empty, lists
    /// every host entry it has); `Some(k)`: its host entry `hosts[k]` never reaches it, since
    /// `by` lists it too.
    pub host: Option<usize>,
    /// With `host`, the entry of `by`'s `hosts` that is the same (compared as the table
    /// compares hosts: case, root dot and IPv6 spelling aside).
    pub by_host: Option<usize>,
}

/// The routes that an earlier one shadows, in order, by the rule of [`shadowed_routes`], for a
/// caller that words them itself (`crossfade proxy --kube` names TrafficShifts, not indexes).
///
/// Looks at each route's earlier routes through an index of the routes seen so far by path prefix
/// and host (as the table compares hosts: [`crate::table::normal_host`]), so a route is compared
/// only with the earlier ones that list one of its hosts on its prefix: linear in the routes for
/// an ingress of one prefix and thousands of hosts, which the pairwise scan before took seconds
/// over at every `check` and reload (user39, D5: 9.8 s for 5,000 routes in a debug build).
pub fn shadowings(routes: &[RouteConfig]) -> Vec<Shadowed> {
    // Each route's hosts as the table compares them, computed once.
    let normal: Vec<Vec<String>> = routes
        .iter()
        .map(|r| {
            r.hosts
                .iter()
                .map(|h| crate::table::normal_host(h))
                .collect()
        })
        .collect();
    // The routes seen so far: by (prefix, host), those listing it, in order; by prefix, the
    // first without hosts.
    let mut listing: HashMap<(&str, &str), Vec<usize>> = HashMap::new();
    let mut hostless: HashMap<&str, usize> = HashMap::new();
    let mut found = Vec::new();
    for (j, later) in routes.iter().enumerate() {
        let prefix = later.path_prefix.as_str();
        if later.hosts.is_empty() {
            // A later route without hosts ranks below every route with hosts: only an earlier
            // one without hosts, a duplicate, shadows it.
            if let Some(&i) = hostless.get(prefix) {
                found.push(Shadowed {
                    route: j,
                    by: i,
                    with: Vec::new(),
                    host: None,
                    by_host: None,
                });
            }
        } else {
            // Only an earlier route listing one of its hosts on its prefix takes anything.
            let mut earlier: Vec<usize> = (normal[j].iter())
                .filter_map(|h| listing.get(&(prefix, h.as_str())))
                .flatten()
                .copied()
                .collect();
            earlier.sort_unstable();
            earlier.dedup();
            shadowings_of(j, &normal, &earlier, &mut found);
        }
        match later.hosts.is_empty() {
            true => {
                hostless.entry(prefix).or_insert(j);
            }
            false => {
                for host in &normal[j] {
                    let seen = listing.entry((prefix, host.as_str())).or_default();
                    if seen.last() != Some(&j) {
                        seen.push(j);
                    }
                }
            }
        }
    }
    found
}

/// What of route `j` (with hosts; `normal`: every route's hosts as the table compares them) its
/// `earlier` routes take, in order: the routes declared before it on its path prefix that list
/// one of its hosts. Duplicates (the same hosts in the same case) are refused in a file by
/// [`check_route_matches`], so they reach this only from callers that do not refuse them:
/// `crossfade proxy --kube`, where two TrafficShifts listing the same hosts on the same prefix
/// are both served and the second is never chosen. The same hosts after the table's
/// normalisation (a root dot, an IPv6 spelling) are left to this warning in a file too, as such
/// configs loaded before it existed.
fn shadowings_of(j: usize, normal: &[Vec<String>], earlier: &[usize], found: &mut Vec<Shadowed>) {
    let hosts = &normal[j];
    // The entries of route `j` already said to be taken, each by the first earlier route that
    // lists it, which is the one the table chooses for that host: a later one listing it too
    // gets none of its requests, and naming it as well said so twice, once wrongly.
    let mut taken = vec![false; hosts.len()];
    // The earlier routes that took some of its entries, in order (one per entry taken).
    let mut takers: Vec<usize> = Vec::new();
    for &i in earlier {
        if taken.iter().all(|&t| t) {
            break;
        }
        // Only the same entry declared earlier takes a host from a route: an earlier route
        // without hosts, or with a wildcard over one of this route's names, ranks below it in
        // the table (`table::HostRank`), whatever the order.
        let cover = |host: &String| normal[i].iter().position(|m| m == host);
        if hosts.iter().all(|h| cover(h).is_some()) {
            found.push(Shadowed {
                route: j,
                by: i,
                with: Vec::new(),
                host: None,
                by_host: None,
            });
            return;
        }
        for (k, host) in hosts.iter().enumerate() {
            if taken[k] {
                continue;
            }
            if let Some(by_host) = cover(host) {
                taken[k] = true;
                takers.push(i);
                found.push(Shadowed {
                    route: j,
                    by: i,
                    with: Vec::new(),
                    host: Some(k),
                    by_host: Some(by_host),
                });
            }
        }
    }
    // Several earlier routes that each take some of its hosts and together take them all: each
    // host was said, and the route is never chosen, which the per-host lines left for the
    // reader to work out (check31).
    if taken.iter().all(|&t| t) {
        takers.dedup();
        found.push(Shadowed {
            route: j,
            by: takers[0],
            with: takers[1..].to_vec(),
            host: None,
            by_host: None,
        });
    }
}

/// What is wrong with a path prefix matched against request paths (`routes[].path_prefix`,
/// `routes[].shadow.ignore.paths[]`), if anything: it must start with `/`, hold nothing a request
/// path cannot ([`never_in_a_path`]) and be in the normal form requests are matched in
/// ([`crate::path::normalize`]), as a prefix in any other form never matches.
pub(super) fn path_prefix_problem(prefix: &str) -> Option<String> {
    if !prefix.starts_with('/') {
        return Some(format!("{prefix:?} must start with '/'"));
    }
    if let Some(message) = never_in_a_path(prefix) {
        return Some(message);
    }
    match crate::path::normalize(prefix) {
        Ok(normal) if normal == prefix => None,
        Ok(normal) => Some(format!(
            "{prefix:?} is not in normal form, so no request would match it; write {normal:?}"
        )),
        Err(e) => Some(format!("{prefix:?}: {e}")),
    }
}

/// Why no request path can ever start with `prefix`, when it holds a character that a request
/// path cannot: the query's `?` and the fragment's `#` (the route is matched on the path alone,
/// and clients never send a fragment), or a space, a control character, `<`, `>` or a backquote
/// (RFC 3986 §3.3 has no place for them, and the proxy answers a request line with one 400).
/// Such a route would be valid and never chosen (trial 17, T1: `path_prefix: "/api?v=2"` and
/// `"/a b"` loaded without a word and every request went elsewhere).
fn never_in_a_path(prefix: &str) -> Option<String> {
    if let Some(at) = prefix.find(['?', '#']) {
        let before = &prefix[..at];
        let what = match prefix.as_bytes()[at] {
            b'?' => "a prefix matches the path only, never the query ('?' starts it)",
            _ => "'#' starts a fragment, which clients never send",
        };
        return Some(format!(
            "{prefix:?}: {what}, so no request would match it; write {before:?}"
        ));
    }
    let bad = prefix.chars().find(|&c| unsendable(c) && c.is_ascii())?;
    Some(format!(
        "{prefix:?}: {bad:?} cannot appear in a request path (RFC 3986 §3.3), so no request would \
         match it; write it percent-encoded: {:?}",
        percent_encode_unsendable(prefix)
    ))
}

/// Whether a client sends `c` in a path only percent-encoded: ASCII controls, space, `<`, `>`,
/// a backquote, and every non-ASCII character (sent as its UTF-8 bytes, each `%XX`).
fn unsendable(c: char) -> bool {
    !c.is_ascii() || c.is_ascii_control() || matches!(c, ' ' | '<' | '>' | '`')
}

/// `prefix` with each character of [`unsendable`] percent-encoded (its UTF-8 bytes, upper-case
/// hex, the normal form of RFC 3986 §6.2.2.1): the spelling clients send.
fn percent_encode_unsendable(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len());
    for c in prefix.chars() {
        if unsendable(c) {
            let mut bytes = [0; 4];
            for b in c.encode_utf8(&mut bytes).bytes() {
                let _ = write!(out, "%{b:02X}");
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A route's `hosts` as [`check_route_matches`] compares them: lower case, as written otherwise.
fn lowercase(route: &RouteConfig) -> BTreeSet<String> {
    route.hosts.iter().map(|h| h.to_ascii_lowercase()).collect()
}

impl RouteConfig {
    fn check(&self, at: &str, problems: &mut Vec<Problem>) {
        if let Err(message) = check_name(&self.name) {
            problems.push(Problem::new(format!("{at}.name"), message));
        }
        for (j, host) in self.hosts.iter().enumerate() {
            if let Err(message) = check_host(host) {
                problems.push(Problem::new(format!("{at}.hosts[{j}]"), message));
            }
        }
        if let Some(message) = path_prefix_problem(&self.path_prefix) {
            problems.push(Problem::new(format!("{at}.path_prefix"), message));
        }
        self.check_weights(at, problems);
        if let Some(sticky) = &self.sticky {
            sticky.check(&format!("{at}.sticky"), problems);
        }
        if let Some(header) = &self.override_header {
            let path = format!("{at}.override_header");
            crate::sticky::check_override_header(header, &path, problems);
        }
        if let Some(health) = &self.health {
            health.check(at, problems);
        }
        self.outlier.check(at, problems);
        if let Some(breaker) = &self.breaker {
            breaker.check(at, problems);
        }
        if let Some(shadow) = &self.shadow {
            shadow.check(&format!("{at}.shadow"), problems);
        }
        if let Some(balance) = &self.balance {
            balance.check(&format!("{at}.balance"), problems);
        }
        if self.response_timeout.is_some_and(|t| t.is_zero()) {
            problems.push(Problem::new(
                format!("{at}.response_timeout"),
                "must be above 0s",
            ));
        }
    }

    fn check_weights(&self, at: &str, problems: &mut Vec<Problem>) {
        let mut over = false;
        for slot in Slot::ALL {
            if let Some(w) = self.backend(slot).weight.filter(|w| w.bp() > FULL_BP) {
                problems.push(Problem::new(
                    format!("{at}.{slot}.weight"),
                    format!("{w} is above 100%"),
                ));
                over = true;
            }
        }
        let weights = self.weights();
        let sum = weights.blue + weights.green;
        if !over && sum != FULL_BP && sum != 0 {
            let preview = self.active.other();
            problems.push(Problem::new(
                format!("{at}.{preview}.weight"),
                format!(
                    "blue {} + green {} = {}, must sum to 100% (or both 0% to disable the route)",
                    Percent(weights.blue),
                    Percent(weights.green),
                    Percent(sum)
                ),
            ));
        }
        for slot in self.weighted_without_endpoints(weights) {
            // A weight above 100% is named above, on the weight.
            if self.backend(slot).weight.is_some_and(|w| w.bp() > FULL_BP) {
                continue;
            }
            problems.push(Problem::new(
                format!("{at}.{slot}.endpoints"),
                format!(
                    "{slot} has weight {} but no endpoints",
                    Percent(weights.of(slot))
                ),
            ));
        }
    }

    /// The warning for a `backup` that backs nothing up ([`route_warnings`]), at `<at>.backup`.
    fn backup_warning(&self, at: &str) -> Option<Problem> {
        let backup = self.backup?;
        let message = if backup == self.active {
            format!(
                "{backup} is the route's active slot, which takes the requests the other cannot \
                 serve already: the key changes nothing; name the other slot, or leave it out"
            )
        } else if self.backend(backup).endpoints.is_empty() {
            format!("{backup} has no endpoints: it backs nothing up; give it endpoints, or leave the key out")
        } else {
            return None;
        };
        Some(Problem::new(format!("{at}.backup"), message))
    }

    /// The slots that `weights` give a share to (above 0 basis points) while their backend lists
    /// no endpoints, blue before green: a backend without endpoints cannot take weight. The one
    /// rule behind this check (`<route>.<slot>.endpoints`, for the route's own weights) and the
    /// weights API's refusal of a body (`admin::weights`, on the body's field `blue` or
    /// `green`), each naming the slot in its own words.
    pub(crate) fn weighted_without_endpoints(
        &self,
        weights: Weights,
    ) -> impl Iterator<Item = Slot> + '_ {
        Slot::ALL
            .into_iter()
            .filter(move |&slot| weights.of(slot) > 0 && self.backend(slot).endpoints.is_empty())
    }
}

/// Route names become metric label values and URL path segments, so they are kept to a safe set:
/// 1 to 63 ASCII letters, digits, `-`, `_` or `.`; or, for a route read from Kubernetes,
/// `<namespace>/<name>` (the key of the TrafficShift it comes from): a namespace of 1 to 63 and a
/// name of 1 to 253 of the same characters, which covers the Kubernetes rules for both (a DNS label
/// and a DNS subdomain name, Kubernetes API conventions, "Names"). The one `/` stays unambiguous in
/// `/routes/{route}/weights`, whose route is everything between the fixed prefix and suffix,
/// percent-decoded (`shop/web` or `shop%2Fweb`).
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".to_owned());
    }
    let ok = |part: &str, max: usize| {
        !part.is_empty()
            && part.len() <= max
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    let fine = match name.split_once('/') {
        None => ok(name, 63),
        Some((namespace, rest)) => ok(namespace, 63) && ok(rest, 253),
    };
    if !fine {
        return Err(format!(
            "{name:?} must be 1 to 63 ASCII letters, digits, '-', '_' or '.', or <namespace>/<name> \
             of those (namespace up to 63, name up to 253)"
        ));
    }
    Ok(())
}

/// What is wrong with a `hosts` entry written as a URL (`http://shop.example/`, its host said
/// alone, without port or userinfo) or with a path (`shop.example/api`, which `path_prefix`
/// matches); `None` for neither.
fn url_or_path(host: &str) -> Option<String> {
    if let Some((_, rest)) = host.split_once("://") {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
        // Without its port: after a bracketed IPv6 address's `]`, else after the first `:`.
        let bare = match authority.find(']') {
            Some(end) => &authority[..=end],
            None => authority.split(':').next().unwrap_or_default(),
        };
        return Some(format!(
            "{host:?} is a URL, not a host name: write the host alone, {bare:?} (no scheme, port \
             or path; ports are ignored when matching)"
        ));
    }
    let (name, path) = host.split_once('/')?;
    Some(format!(
        "{host:?}: a host name holds no path; write {name:?} here and the path in path_prefix \
         (\"/{path}\")"
    ))
}

/// What is wrong with a `hosts` entry of valid characters that has an empty label, so that no
/// client's host is it: a leading dot (`.shop.example`, nginx's `server_name` form for a domain
/// and all its subdomains, which was accepted and matched nothing but that literal text, trial
/// 29) or two dots in a row; `None` otherwise (one trailing dot is an absolute name, matched as
/// without it).
fn empty_label(host: &str) -> Option<String> {
    if let Some(domain) = host.strip_prefix('.') {
        return Some(format!(
            "{host:?}: a leading dot (nginx's form for a domain and its subdomains) is not \
             supported; write {domain:?} for the name and \"*.{domain}\" for its subdomains (or \
             omit `hosts` to match any host)"
        ));
    }
    host.contains("..").then(|| {
        format!("{host:?} has an empty label (\"..\"), so no client's host is it; write the name with one dot between labels")
    })
}

/// Whether `host`, a `hosts` entry in brackets around `inside`, is an IPv6 address as a client's
/// `Host` holds one (RFC 3986 §3.2.2 `IP-literal`); else what to write. An IPv4 address is
/// written bare (`[127.0.0.1]` is no `Host` a client sends), a zone (`[fe80::1%eth0]`, RFC 6874)
/// is never in a `Host` (it names an interface of the client's own host, and browsers drop it),
/// and anything else in brackets (`[web]`, `[]`) is no address; each was accepted and matched no
/// request, whose `Host` of that form is answered 400.
fn bracketed(host: &str, inside: &str) -> Result<(), String> {
    if inside.parse::<std::net::Ipv6Addr>().is_ok() {
        return Ok(());
    }
    if inside.parse::<std::net::Ipv4Addr>().is_ok() {
        return Err(format!(
            "{host:?}: brackets are for an IPv6 address; an IPv4 address is written without \
             them, as clients send it in Host: {inside:?}"
        ));
    }
    if let Some((address, zone)) = inside.split_once('%') {
        if address.parse::<std::net::Ipv6Addr>().is_ok() {
            return Err(format!(
                "{host:?}: a zone (%{zone}) is never in a client's Host; write \"[{address}]\""
            ));
        }
    }
    Err(format!(
        "{host:?} is not a bracketed IPv6 address (such as \"[2001:db8::1]\"); a host name is \
         written without brackets"
    ))
}

fn check_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("must not be empty (omit `hosts` to match any host)".to_owned());
    }
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
    if let Some(inside) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return bracketed(host, inside);
    }
    // A wildcard: `*.` and a host name, any name under it (Gateway API `hostnames`).
    if let Some(name) = host.strip_prefix("*.") {
        if !name.is_empty() && name.chars().all(ok) && empty_label(name).is_none() {
            return Ok(());
        }
    }
    if host.chars().all(ok) {
        return empty_label(host).map_or(Ok(()), Err);
    }
    // Name the fault the host has (trial 7, G13): a wildcard is not a port.
    if host.contains('*') {
        return Err(format!(
            "{host:?}: a wildcard is `*.` and a host name (`*.example.com`: any name ending in \
             `.example.com`); `*` anywhere else, or with a port, is not supported"
        ));
    }
    // An IPv6 address is written in brackets, as in a `Host` line (RFC 3986 §3.2.2); unbracketed
    // it was told to drop its "port" (trial 17, T6).
    if host.parse::<std::net::Ipv6Addr>().is_ok() {
        return Err(format!(
            "{host:?}: an IPv6 address is written in brackets, as clients send it in Host: \
             \"[{host}]\""
        ));
    }
    // A URL or a path was told to drop its "port" (trial 29: `http://shop.example`), or only
    // which characters a host name may hold.
    if let Some(problem) = url_or_path(host) {
        return Err(problem);
    }
    if host.contains(':') {
        return Err(format!(
            "{host:?} must be a host name without port (ports are ignored when matching)"
        ));
    }
    Err(format!(
        "{host:?} must be a host name of ASCII letters, digits, '-', '.' and '_', or a bracketed \
         IPv6 address"
    ))
}
