//! Forwarding loops: an endpoint that is the proxy itself.
//!
//! A route whose endpoint is the proxy's own listen (or admin) address sends every request back
//! into the proxy, which forwards it again: one client request becomes an unbounded chain of
//! connections. [`own_address`] is the static check every way in for an endpoint runs (a proxy
//! config, a reload, [`crate::Proxy::update`], a spec, `crossfade migrate` and `POST /rollout`).
//! Loops no address comparison can see (two proxies pointing at each other, a DNS alias, a
//! backend that forwards back) are caught on the request path by the `Via` header
//! ([`crate::via`]).

use std::net::{IpAddr, SocketAddr};

/// Whether `endpoint` reaches the socket bound at `own`: the same port, and the same address, or
/// `own` bound to a wildcard (`0.0.0.0:P`, `[::]:P`) and `endpoint` any address of this machine
/// (a loopback address, a wildcard, or an address a socket can bind here), or `endpoint` a
/// wildcard (which connects to this machine, Linux) and `own` on this machine. IPv4-mapped IPv6
/// addresses compare as IPv4. Port 0 never matches: the kernel picks another port.
///
/// Binding a probe socket (port 0, closed at once) is how "an address of this machine" is told:
/// it succeeds exactly for the addresses assigned to an interface here.
pub fn own_address(endpoint: SocketAddr, own: SocketAddr) -> bool {
    if own.port() == 0 || endpoint.port() != own.port() {
        return false;
    }
    let (ep, me) = (endpoint.ip().to_canonical(), own.ip().to_canonical());
    if ep == me {
        return true;
    }
    if me.is_unspecified() {
        // `[::]` also accepts IPv4 on a dual-stack socket (Linux default); `0.0.0.0` only IPv4.
        let family_reaches = me.is_ipv6() || ep.is_ipv4();
        return family_reaches && is_local(ep);
    }
    ep.is_unspecified() && is_local(me)
}

/// Whether `ip` is an address of this machine: loopback, a wildcard, or bindable here.
fn is_local(ip: IpAddr) -> bool {
    ip.is_loopback()
        || ip.is_unspecified()
        || std::net::TcpListener::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// The problem of one endpoint against the proxy's own addresses (`own`: the listen and the
/// admin address, each with its name), as `"127.0.0.1:8080 is the proxy's own listen address
/// (0.0.0.0:8080): requests to it would loop back into the proxy"`; `None` when it is none of them.
pub fn own_address_problem(endpoint: SocketAddr, own: &[(SocketAddr, &str)]) -> Option<String> {
    own.iter()
        .find(|(addr, _)| own_address(endpoint, *addr))
        .map(|(addr, name)| {
            let bound = if *addr == endpoint {
                String::new()
            } else {
                format!(" ({addr})")
            };
            format!(
                "{endpoint} is the proxy's own {name} address{bound}: requests to it would loop \
                 back into the proxy"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn same_address_and_wildcards_match() {
        assert!(own_address(a("127.0.0.1:80"), a("127.0.0.1:80")));
        assert!(own_address(a("127.0.0.1:80"), a("0.0.0.0:80")));
        assert!(own_address(a("127.0.0.2:80"), a("0.0.0.0:80")));
        assert!(own_address(a("[::1]:80"), a("[::]:80")));
        assert!(own_address(a("127.0.0.1:80"), a("[::]:80")));
        assert!(own_address(a("[::ffff:127.0.0.1]:80"), a("127.0.0.1:80")));
        assert!(own_address(a("0.0.0.0:80"), a("127.0.0.1:80")));
    }

    #[test]
    fn other_ports_hosts_and_port_zero_do_not() {
        assert!(!own_address(a("127.0.0.1:81"), a("0.0.0.0:80")));
        assert!(!own_address(a("127.0.0.1:81"), a("127.0.0.1:80")));
        assert!(!own_address(a("127.0.0.2:80"), a("127.0.0.1:80")));
        // TEST-NET-3 (RFC 5737) is on no interface here.
        assert!(!own_address(a("203.0.113.7:80"), a("0.0.0.0:80")));
        assert!(!own_address(a("127.0.0.1:0"), a("127.0.0.1:0")));
        // An IPv4-only wildcard does not take IPv6.
        assert!(!own_address(a("[::1]:80"), a("0.0.0.0:80")));
    }

    #[test]
    fn the_problem_names_which_address() {
        let own = [(a("0.0.0.0:80"), "listen"), (a("127.0.0.1:81"), "admin")];
        let p = own_address_problem(a("127.0.0.1:80"), &own).unwrap();
        assert!(p.contains("own listen address (0.0.0.0:80)"), "{p}");
        let p = own_address_problem(a("127.0.0.1:81"), &own).unwrap();
        assert!(
            p.starts_with("127.0.0.1:81 is the proxy's own admin address:"),
            "{p}"
        );
        assert_eq!(own_address_problem(a("127.0.0.1:82"), &own), None);
    }
}
