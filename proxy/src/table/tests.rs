use super::*;
use crate::rng::{RandomSource, WyRand};
use crate::weight::draw_bp;

fn addrs(n: u16) -> Vec<SocketAddr> {
    (0..n)
        .map(|i| SocketAddr::from(([127, 0, 0, 1], 9000 + i)))
        .collect()
}

fn route(name: &str, hosts: &[&str], prefix: &str) -> RouteConfig {
    RouteConfig {
        name: name.to_owned(),
        hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
        path_prefix: prefix.to_owned(),
        blue: BackendConfig {
            endpoints: addrs(1),
            weight: None,
            ..BackendConfig::default()
        },
        ..RouteConfig::default()
    }
}

fn table(routes: Vec<RouteConfig>) -> RoutingTable<()> {
    RoutingTable::build(7, routes, |_, _, _| ())
}

fn matched(t: &RoutingTable<()>, host: Option<&str>, path: &str) -> Option<String> {
    t.match_route(host, path).map(|r| r.name().to_string())
}

#[test]
fn longest_prefix_wins_then_first_declared() {
    let t = table(vec![
        route("root", &[], "/"),
        route("api", &[], "/api"),
        route("api-v1", &[], "/api/v1/"),
        route("api-dup", &[], "/api"),
    ]);
    assert_eq!(matched(&t, None, "/"), Some("root".into()));
    assert_eq!(matched(&t, None, "/api"), Some("api".into()));
    assert_eq!(matched(&t, None, "/api/users"), Some("api".into()));
    assert_eq!(matched(&t, None, "/api/v1/users"), Some("api-v1".into()));
    assert_eq!(matched(&t, None, "/apix"), Some("root".into()));
    assert_eq!(t.generation(), 7);
}

#[test]
fn prefix_without_trailing_slash_matches_whole_segments_only() {
    let t = table(vec![route("api", &[], "/api")]);
    assert_eq!(matched(&t, None, "/api"), Some("api".into()));
    assert_eq!(matched(&t, None, "/api/"), Some("api".into()));
    assert_eq!(matched(&t, None, "/apix"), None);
    assert_eq!(matched(&t, None, "/"), None);
}

#[test]
fn hosts_match_case_insensitively_without_port() {
    let t = table(vec![
        route("shop", &["Shop.Example"], "/"),
        route("v6", &["[::1]"], "/"),
        route("any", &[], "/other"),
    ]);
    assert_eq!(matched(&t, Some("shop.example"), "/x"), Some("shop".into()));
    assert_eq!(
        matched(&t, Some("SHOP.example:8080"), "/x"),
        Some("shop".into())
    );
    assert_eq!(matched(&t, Some("[::1]:8080"), "/"), Some("v6".into()));
    assert_eq!(matched(&t, Some("other.example"), "/x"), None);
    assert_eq!(matched(&t, None, "/x"), None);
    assert_eq!(
        matched(&t, Some("other.example"), "/other"),
        Some("any".into())
    );
    assert_eq!(matched(&t, None, "/other"), Some("any".into()));
}

/// A wildcard entry matches the names under it, one label or more, in any case and with a port
/// or a root dot, and not the name itself.
#[test]
fn a_wildcard_host_matches_every_name_under_it_and_not_the_name_itself() {
    let t = table(vec![route(
        "tenants",
        &["*.Example.com", "exact.test"],
        "/",
    )]);
    for host in [
        "a.example.com",
        "A.B.EXAMPLE.com",
        "x-1.example.com:8443",
        "late.example.com.",
        "exact.test",
    ] {
        assert_eq!(
            matched(&t, Some(host), "/"),
            Some("tenants".into()),
            "{host}"
        );
    }
    for host in [
        "example.com",
        ".example.com",
        "aexample.com",
        "example.com.evil",
        "x.test",
    ] {
        assert_eq!(matched(&t, Some(host), "/"), None, "{host}");
    }
    assert_eq!(matched(&t, None, "/"), None);
}

/// On equally long path prefixes the most specific matching host wins, whatever the order the
/// routes were declared in: an exact name over a wildcard, a longer wildcard over a shorter one,
/// any of them over a route without hosts (as Envoy, nginx and Gateway API choose). Routes from
/// a cluster come in namespace/name order, which no one chooses for this; before, the first
/// declared won, and a wildcard or any-host route declared first took the names of every later
/// route on its prefix. A longer prefix still wins first, and the same entry twice goes to the
/// first declared.
#[test]
fn the_most_specific_host_wins_on_an_equal_prefix_whatever_the_order() {
    let declared = vec![
        route("all", &[], "/"),
        route("tenants", &["*.example.com"], "/"),
        route("eu", &["*.eu.example.com"], "/"),
        route("checkout", &["Checkout.example.com", "*.shop.test"], "/"),
        route("checkout-again", &["checkout.example.com"], "/"),
        route("api", &[], "/api"),
    ];
    let mut reversed = declared.clone();
    reversed.reverse();
    // In the reversed order `checkout-again` comes first and takes the name both list.
    for (t, same_name) in [
        (table(declared), "checkout"),
        (table(reversed), "checkout-again"),
    ] {
        for (host, want) in [
            ("checkout.example.com", same_name),
            ("a.eu.example.com", "eu"),
            ("eu.example.com", "tenants"),
            ("a.example.com", "tenants"),
            ("x.shop.test", "checkout"),
            ("other.test", "all"),
        ] {
            assert_eq!(matched(&t, Some(host), "/x"), Some(want.into()), "{host}");
        }
        assert_eq!(matched(&t, None, "/x"), Some("all".into()));
        // The host first: a route for a host on / keeps /api of that host; an any-host route on
        // /api takes /api of hosts no route names, before the any-host route on /.
        assert_eq!(
            matched(&t, Some("checkout.example.com"), "/api/v1"),
            Some(same_name.into())
        );
        assert_eq!(
            matched(&t, Some("a.eu.example.com"), "/api/v1"),
            Some("eu".into())
        );
        assert_eq!(
            matched(&t, Some("other.test"), "/api/v1"),
            Some("api".into())
        );
        assert_eq!(matched(&t, None, "/api/v1"), Some("api".into()));
    }
}

/// Among routes for one host, or among routes without hosts, the longest matching prefix wins
/// whatever the order; the host still comes first (Gateway API's precedence of HTTPRoute rules:
/// hostname, then path; trial 30 found an any-host `/api/` route taking `a.example/api/x` from an
/// `a.example` route on `/`).
#[test]
fn the_host_outranks_the_path_prefix_and_the_prefix_ranks_within_a_host() {
    let declared = vec![
        route("a-root", &["a.example"], "/"),
        route("a-api", &["a.example"], "/api/"),
        route("any-api", &[], "/api/"),
        route("any-api-v2", &[], "/api/v2/"),
        route("tenants", &["*.example"], "/"),
    ];
    let mut reversed = declared.clone();
    reversed.reverse();
    for t in [table(declared), table(reversed)] {
        for (host, path, want) in [
            ("a.example", "/", "a-root"),
            ("a.example", "/api/x", "a-api"),
            ("a.example", "/api/v2/x", "a-api"),
            ("b.example", "/api/x", "tenants"),
            ("other.test", "/api/x", "any-api"),
            ("other.test", "/api/v2/x", "any-api-v2"),
        ] {
            assert_eq!(
                matched(&t, Some(host), path),
                Some(want.into()),
                "{host}{path}"
            );
        }
        assert_eq!(matched(&t, Some("other.test"), "/"), None);
    }
}

/// An IPv6 literal host matches by address, whichever of its spellings the route and the
/// request use (RFC 5952 §4 names one canonical form; clients send others).
#[test]
fn an_ipv6_literal_host_matches_in_any_spelling() {
    let t = table(vec![
        route("v6", &["[0:0::1]"], "/"),
        route("doc", &["[2001:DB8::0:1]"], "/"),
    ]);
    for (host, want) in [
        ("[::1]", Some("v6")),
        ("[0:0:0:0:0:0:0:1]:8080", Some("v6")),
        ("[2001:db8::1]", Some("doc")),
        ("[2001:0db8:0:0:0:0:0:1]", Some("doc")),
        ("[::2]", None),
        ("[not-an-address]", None),
    ] {
        assert_eq!(matched(&t, Some(host), "/"), want.map(Into::into), "{host}");
    }
}

#[test]
fn extreme_weights_are_exact() {
    let mut config = route("web", &[], "/");
    config.green.endpoints = addrs(1);
    let mut rng = WyRand::new(1);
    for (weights, expected) in [
        (Weights::all_to(Slot::Blue), Some(Slot::Blue)),
        (Weights::all_to(Slot::Green), Some(Slot::Green)),
        (Weights { blue: 0, green: 0 }, None),
    ] {
        config.set_weights(weights);
        let t = table(vec![config.clone()]);
        let r = &t.routes()[0];
        for _ in 0..100_000 {
            assert_eq!(r.pick(draw_bp(rng.next_u32())).map(Backend::slot), expected);
        }
        // The extreme draws too, not just random ones.
        assert_eq!(r.pick(0).map(Backend::slot), expected);
        assert_eq!(r.pick(9_999).map(Backend::slot), expected);
    }
}

/// Share of green picks over `n` seeded draws.
fn green_share(green_bp: u32, n: u32, seed: u64) -> f64 {
    let mut config = route("web", &[], "/");
    config.green.endpoints = addrs(2);
    config.set_weights(Weights::with(Slot::Green, green_bp));
    let t = table(vec![config]);
    let r = &t.routes()[0];
    let mut rng = WyRand::new(seed);
    let greens = (0..n)
        .filter(|_| r.pick(draw_bp(rng.next_u32())).map(Backend::slot) == Some(Slot::Green))
        .count();
    greens as f64 / f64::from(n)
}

#[test]
fn small_weights_follow_the_configured_fraction() {
    // Tolerance: 4 binomial standard deviations, sqrt(p(1-p)/n), over n = 1,000,000 draws.
    let n = 1_000_000;
    for green_bp in [100, 10, 2000, 9900] {
        for seed in [1, 2, 3] {
            let p = f64::from(green_bp) / 10_000.0;
            let tolerance = 4.0 * (p * (1.0 - p) / f64::from(n)).sqrt();
            let share = green_share(green_bp, n, seed);
            assert!(
                (share - p).abs() <= tolerance,
                "green {green_bp} bp, seed {seed}: share {share}, expected {p} ± {tolerance}"
            );
        }
    }
}

#[test]
fn endpoints_round_robin_evenly_whatever_the_other_backend_holds() {
    for (blue_n, green_n) in [(9, 2), (2, 9)] {
        let mut config = route("web", &[], "/");
        config.blue.endpoints = addrs(blue_n);
        config.green.endpoints = addrs(green_n);
        config.set_weights(Weights::with(Slot::Green, 2000));
        let t = table(vec![config]);
        let r = &t.routes()[0];
        let mut rng = WyRand::new(9);
        let mut counts = [vec![0u32; blue_n.into()], vec![0u32; green_n.into()]];
        for _ in 0..100_000 {
            let backend = r.pick(draw_bp(rng.next_u32())).unwrap();
            counts[backend.slot().index()][backend.pick_endpoint().unwrap()] += 1;
        }
        for per_endpoint in &counts {
            let total: u32 = per_endpoint.iter().sum();
            let even = f64::from(total) / per_endpoint.len() as f64;
            // Round-robin is exact to ±1 request.
            assert!(per_endpoint
                .iter()
                .all(|&c| (f64::from(c) - even).abs() <= 1.0));
        }
        let green = f64::from(counts[1].iter().sum::<u32>()) / 100_000.0;
        assert!((green - 0.2).abs() < 0.006, "{green}");
    }
}

/// The other backend takes a retry when it has weight or is the active slot; a weight-0 preview
/// never does.
#[test]
fn retry_goes_to_the_other_backend_only_if_it_has_weight_or_is_active() {
    let mut config = route("web", &[], "/");
    config.green.endpoints = addrs(1);
    config.set_weights(Weights::with(Slot::Green, 1000));
    let t = table(vec![config.clone()]);
    let slot = |b: Option<&Backend<()>>| b.map(Backend::slot);
    assert_eq!(
        slot(t.routes()[0].retry_target(Slot::Green)),
        Some(Slot::Blue)
    );
    assert_eq!(
        slot(t.routes()[0].retry_target(Slot::Blue)),
        Some(Slot::Green)
    );

    config.set_weights(Weights::all_to(Slot::Blue));
    let t = table(vec![config.clone()]);
    assert_eq!(slot(t.routes()[0].retry_target(Slot::Blue)), None);

    // Green at 100 %, blue active at 0: blue backs green up (trial 8, H2).
    config.set_weights(Weights::all_to(Slot::Green));
    let t = table(vec![config.clone()]);
    assert_eq!(
        slot(t.routes()[0].retry_target(Slot::Green)),
        Some(Slot::Blue)
    );
    config.set_weights(Weights::all_to(Slot::Blue));

    config.blue.endpoints = addrs(3);
    let t = table(vec![config]);
    assert_eq!(
        slot(t.routes()[0].retry_target(Slot::Blue)),
        Some(Slot::Blue)
    );
}

#[test]
fn strip_port_removes_only_a_port_after_any_ipv6_literal() {
    for (host, bare) in [
        ("shop.example", "shop.example"),
        ("shop.example:8080", "shop.example"),
        ("shop.example:", "shop.example"),
        ("[::1]", "[::1]"),
        ("[::1]:80", "[::1]"),
        ("[fe80::1%25eth0]:443", "[fe80::1%25eth0]"),
        ("", ""),
        (":80", ""),
    ] {
        assert_eq!(super::strip_port(host), bare, "{host}");
    }
}

/// A weight-0 backend takes overflow only as the active slot or the route's backup: a weight-0
/// preview never does (C03), the retiring backend after a role swap does (trial 32).
#[test]
fn a_weight_0_backend_takes_overflow_only_when_active_or_the_backup() {
    let mut config = route("web", &[], "/");
    config.green = BackendConfig {
        endpoints: addrs(2)[1..].to_vec(),
        weight: Some(crate::weight::Percent(10_000)),
        ..BackendConfig::default()
    };
    config.blue.weight = Some(crate::weight::Percent(0));
    config.active = Slot::Green;
    let t = table(vec![config.clone()]);
    let r = t.match_route(None, "/").expect("route");
    assert!(r.takes_overflow(Slot::Green));
    assert!(
        !r.takes_overflow(Slot::Blue),
        "a weight-0 backend that is neither"
    );
    assert!(r.retry_target(Slot::Green).is_none());
    config.backup = Some(Slot::Blue);
    let t = table(vec![config]);
    let r = t.match_route(None, "/").expect("route");
    assert!(r.takes_overflow(Slot::Blue), "the backup");
    assert_eq!(
        r.retry_target(Slot::Green).map(Backend::slot),
        Some(Slot::Blue)
    );
}
