use std::net::SocketAddr;

use super::*;
use crate::config::{BackendConfig, RouteConfig};
use crate::table::RoutingTable;
use crate::weight::Percent;

fn table(
    sticky: Option<StickyConfig>,
    override_header: Option<&str>,
    green: u32,
) -> RoutingTable<()> {
    let backend = |port: u16, bp: u32| BackendConfig {
        endpoints: vec![SocketAddr::from(([127, 0, 0, 1], port))],
        weight: Some(Percent(bp)),
        ..BackendConfig::default()
    };
    let route = RouteConfig {
        name: "web".into(),
        blue: backend(9001, FULL_BP - green),
        green: backend(9002, green),
        sticky,
        override_header: override_header.map(str::to_owned),
        ..RouteConfig::default()
    };
    RoutingTable::build(1, vec![route], |_, _, _| ())
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(*name, HeaderValue::from_str(value).unwrap());
    }
    map
}

fn key(i: u32) -> String {
    format!("user-{i}")
}

#[test]
fn bucket_is_fixed_across_processes_and_releases() {
    // Pinned values: a change here reassigns every user of every running rollout.
    let pinned: Vec<u32> = ["", "a", "user-1", "0123456789abcdef0123456789abcdef"]
        .iter()
        .map(|k| bucket(k.as_bytes()))
        .collect();
    assert_eq!(pinned, PINNED_BUCKETS);
    assert!((0..100_000).all(|i| bucket(key(i).as_bytes()) < FULL_BP));
}

// Cross-checked with an independent implementation of the documented algorithm (Python).
const PINNED_BUCKETS: [u32; 4] = [4342, 8315, 5477, 2947];

#[test]
fn raising_the_weight_only_moves_keys_from_blue_to_green() {
    for i in 0..2_000 {
        let b = bucket(key(i).as_bytes());
        let mut was_green = false;
        for green in 0..=FULL_BP {
            let weights = Weights::with(Slot::Green, green);
            let is_green = pick(weights, b) == Some(Slot::Green);
            assert!(
                !was_green || is_green,
                "key {i} went back to blue at {green} bp"
            );
            was_green = is_green;
        }
        assert!(was_green, "key {i} not on green at 100%");
        assert_eq!(pick(Weights::all_to(Slot::Blue), b), Some(Slot::Blue));
    }
}

#[test]
fn share_of_keys_on_green_follows_the_weight_within_three_sigma() {
    const KEYS: u32 = 100_000;
    let buckets: Vec<u32> = (0..KEYS).map(|i| bucket(key(i).as_bytes())).collect();
    for green in [1, 10, 100, 500, 1_000, 2_500, 5_000, 9_000, 9_999] {
        let on_green = buckets.iter().filter(|&&b| b < green).count() as f64;
        let p = f64::from(green) / f64::from(FULL_BP);
        let n = f64::from(KEYS);
        let sigma = (n * p * (1.0 - p)).sqrt();
        // Tolerance: 3σ of the binomial, at least 3 keys for the tiny weights.
        let tolerance = (3.0 * sigma).max(3.0);
        assert!(
            (on_green - n * p).abs() <= tolerance,
            "{green} bp: {on_green} of {KEYS} keys on green, expected {} ± {tolerance:.0}",
            n * p
        );
    }
}

#[test]
fn header_key_sticks_and_missing_key_falls_back_to_the_draw() {
    let config = StickyConfig {
        header: Some("x-user".into()),
        ..StickyConfig::default()
    };
    let t = table(Some(config), None, 5_000);
    let route = &t.routes()[0];
    for i in 0..200 {
        let h = headers(&[("x-user", &key(i))]);
        let first = assign(route, &h, b"127.0.0.1", false)
            .unwrap()
            .backend
            .slot();
        for _ in 0..5 {
            assert_eq!(
                assign(route, &h, b"127.0.0.1", false)
                    .unwrap()
                    .backend
                    .slot(),
                first
            );
        }
        let expected = if bucket(key(i).as_bytes()) < 5_000 {
            Slot::Green
        } else {
            Slot::Blue
        };
        assert_eq!(first, expected);
    }
    let slots: std::collections::HashSet<Slot> = (0..200)
        .map(|_| {
            assign(route, &HeaderMap::new(), b"127.0.0.1", false)
                .unwrap()
                .backend
                .slot()
        })
        .collect();
    assert_eq!(slots.len(), 2, "no key: random per request");
}

#[test]
fn client_address_is_the_key() {
    let config = StickyConfig {
        client_address: true,
        ..StickyConfig::default()
    };
    let t = table(Some(config), None, 5_000);
    let route = &t.routes()[0];
    for i in 0..100 {
        let peer = format!("10.0.0.{i}");
        let expected = pick(Weights::with(Slot::Green, 5_000), bucket(peer.as_bytes()));
        let got = assign(route, &HeaderMap::new(), peer.as_bytes(), false).unwrap();
        assert_eq!(Some(got.backend.slot()), expected);
    }
}

/// Behind a trusted load balancer (`trust_forwarded_for`) every connection comes from the balancer:
/// the key is the right-most `X-Forwarded-For` element, the address the balancer appended (trial 8,
/// H10); without trust, or without the header, the TCP peer.
#[test]
fn client_address_behind_a_trusted_balancer_is_the_right_most_forwarded_for_element() {
    let config = StickyConfig {
        client_address: true,
        ..StickyConfig::default()
    };
    let t = table(Some(config), None, 5_000);
    let route = &t.routes()[0];
    let lb = b"10.9.9.9";
    let slot_of = |key: &str| pick(Weights::with(Slot::Green, 5_000), bucket(key.as_bytes()));
    let mut slots = std::collections::BTreeSet::new();
    for i in 0..100 {
        let client = format!("192.0.2.{i}");
        let xff = format!("6.6.6.6, {client}");
        let h = headers(&[("x-forwarded-for", &xff)]);
        let got = assign(route, &h, lb, true).unwrap().backend.slot();
        assert_eq!(Some(got), slot_of(&client), "{xff}");
        slots.insert(got);
        // Untrusted: the balancer's address, whatever the header says.
        let got = assign(route, &h, lb, false).unwrap().backend.slot();
        assert_eq!(Some(got), slot_of("10.9.9.9"));
    }
    assert_eq!(
        slots.len(),
        2,
        "users behind one balancer were pinned together"
    );
    // Several lines, empty elements: the last line's last non-empty element.
    let h = headers(&[
        ("x-forwarded-for", "1.1.1.1"),
        ("x-forwarded-for", "192.0.2.7 , "),
    ]);
    let got = assign(route, &h, lb, true).unwrap().backend.slot();
    assert_eq!(Some(got), slot_of("192.0.2.7"));
    // No header: the peer.
    let got = assign(route, &HeaderMap::new(), lb, true)
        .unwrap()
        .backend
        .slot();
    assert_eq!(Some(got), slot_of("10.9.9.9"));
}

#[test]
fn cookie_mode_mints_a_site_wide_cookie_only_when_missing_or_invalid() {
    let config = StickyConfig {
        cookie: Some("cf_user".into()),
        set: true,
        ..StickyConfig::default()
    };
    let t = table(Some(config), None, 5_000);
    let route = &t.routes()[0];
    let minted = assign(route, &HeaderMap::new(), b"", false).unwrap();
    let cookie = minted.set_cookie.expect("a minted cookie");
    let cookie = cookie.to_str().unwrap();
    assert!(
        cookie.ends_with("; Path=/; HttpOnly; SameSite=Lax"),
        "{cookie}"
    );
    let value = cookie
        .split(';')
        .next()
        .unwrap()
        .strip_prefix("cf_user=")
        .unwrap();
    assert!(valid_key(value.as_bytes()) && value.len() == 32, "{value}");
    let expected = pick(Weights::with(Slot::Green, 5_000), bucket(value.as_bytes()));
    assert_eq!(
        Some(minted.backend.slot()),
        expected,
        "the first answer uses the minted key"
    );

    let jar = format!("theme=dark; cf_user={value}");
    let again = assign(route, &headers(&[("cookie", &jar)]), b"", false).unwrap();
    assert!(again.set_cookie.is_none());
    assert_eq!(Some(again.backend.slot()), expected);

    for bad in ["cf_user=", "cf_user=a,b", "cf_user=\"x\""] {
        let minted = assign(route, &headers(&[("cookie", bad)]), b"", false).unwrap();
        assert!(
            minted.set_cookie.is_some(),
            "{bad}: an invalid key is treated as absent"
        );
    }
}

#[test]
fn a_cookie_never_pins_a_user_to_a_backend_at_weight_zero() {
    let config = StickyConfig {
        cookie: Some("session".into()),
        ..StickyConfig::default()
    };
    let blue_only = table(Some(config.clone()), None, 0);
    let green_only = table(Some(config), None, FULL_BP);
    for i in 0..500 {
        let h = headers(&[("cookie", &format!("session={}", key(i)))]);
        let slot = |t: &RoutingTable<()>| {
            assign(&t.routes()[0], &h, b"", false)
                .unwrap()
                .backend
                .slot()
        };
        assert_eq!(slot(&blue_only), Slot::Blue);
        assert_eq!(slot(&green_only), Slot::Green);
    }
}

#[test]
fn override_header_forces_a_backend_even_at_weight_zero() {
    let t = table(None, Some("X-Crossfade-Backend"), 0);
    let route = &t.routes()[0];
    let forced = |value: &str| {
        assign(
            route,
            &headers(&[("x-crossfade-backend", value)]),
            b"",
            false,
        )
    };
    for _ in 0..50 {
        let green = forced("green").unwrap();
        assert_eq!((green.backend.slot(), green.forced), (Slot::Green, true));
        assert_eq!(forced(" Blue ").unwrap().backend.slot(), Slot::Blue);
        assert_eq!(
            assign(route, &HeaderMap::new(), b"", false)
                .unwrap()
                .backend
                .slot(),
            Slot::Blue
        );
    }
    let error = forced("purple").unwrap_err();
    assert_eq!(error.status(), http::StatusCode::BAD_REQUEST);
    assert!(error.to_string().contains("x-crossfade-backend"), "{error}");
    // Trial 11, L13: two fields that disagree are refused, not decided by their order.
    let twice = |a: &str, b: &str| {
        assign(
            route,
            &headers(&[("x-crossfade-backend", a), ("x-crossfade-backend", b)]),
            b"",
            false,
        )
    };
    for (a, b) in [("green", "blue"), ("blue", "green"), ("green", "purple")] {
        let error = twice(a, b).unwrap_err();
        assert_eq!(error.status(), http::StatusCode::BAD_REQUEST, "{a}, {b}");
    }
    assert_eq!(twice("green", "Green").unwrap().backend.slot(), Slot::Green);
    let off = table(None, None, 0);
    let ignored = assign(
        &off.routes()[0],
        &headers(&[("x-crossfade-backend", "green")]),
        b"",
        false,
    );
    assert_eq!(
        ignored.unwrap().backend.slot(),
        Slot::Blue,
        "off by default"
    );
}

#[test]
fn sticky_config_needs_exactly_one_valid_source() {
    let check = |config: StickyConfig| {
        let mut problems = Vec::new();
        config.check("routes[0].sticky", &mut problems);
        problems.iter().map(ToString::to_string).collect::<Vec<_>>()
    };
    assert!(check(StickyConfig {
        header: Some("X-User".into()),
        ..Default::default()
    })
    .is_empty());
    assert_eq!(
        check(StickyConfig::default()),
        ["routes[0].sticky: set exactly one of header, cookie, client_address"]
    );
    let both = StickyConfig {
        header: Some("bad header".into()),
        cookie: Some("a;b".into()),
        set: true,
        ..Default::default()
    };
    assert_eq!(
        check(both),
        [
            "routes[0].sticky: set exactly one of header, cookie, client_address",
            "routes[0].sticky.header: \"bad header\" is not a valid header name",
            "routes[0].sticky.cookie: \"a;b\" is not a valid cookie name (RFC 6265 token)",
        ]
    );
    let set_without_cookie = StickyConfig {
        client_address: true,
        set: true,
        ..Default::default()
    };
    assert_eq!(
        check(set_without_cookie),
        ["routes[0].sticky.set: only applies with cookie"]
    );
}

#[test]
fn route_config_reads_sticky_and_override_from_yaml() {
    let yaml = r#"
routes:
  - name: web
    sticky: { cookie: session, set: true }
    override_header: X-Crossfade-Backend
    blue: { endpoints: [127.0.0.1:9001] }
  - name: bad
    path_prefix: /bad
    sticky: { header: X-User, client_address: true }
    override_header: "not a header"
    blue: { endpoints: [127.0.0.1:9001] }
"#;
    let config: crate::ProxyConfig = serde_yaml_ng::from_str(yaml).unwrap();
    let route = &config.routes[0];
    assert_eq!(
        route.sticky.as_ref().and_then(|s| s.cookie.as_deref()),
        Some("session")
    );
    let problems: Vec<String> = config
        .validate()
        .unwrap_err()
        .problems()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        problems,
        [
            "routes[1].sticky: set exactly one of header, cookie, client_address",
            "routes[1].override_header: \"not a header\" is not a valid header name",
        ]
    );
}

/// Trial 2 report F4: `override_header: host` started and answered every request 400.
#[test]
fn an_override_header_that_ordinary_clients_send_is_refused_naming_the_field() {
    for header in ["host", "Host", "User-Agent", "cookie", "X-Forwarded-For"] {
        let mut problems = Vec::new();
        check_override_header(header, "routes[0].override_header", &mut problems);
        let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(problems.len(), 1, "{header}: {problems:?}");
        assert!(
            problems[0].starts_with("routes[0].override_header: ")
                && problems[0].contains("ordinary clients send"),
            "{problems:?}"
        );
    }
    let mut problems = Vec::new();
    check_override_header(
        "X-Crossfade-Backend",
        "routes[0].override_header",
        &mut problems,
    );
    assert!(problems.is_empty(), "{problems:?}");
}
