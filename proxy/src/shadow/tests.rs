use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::compare::{compare, differing_headers, pick_headers, BoundedHash, Digest32, Observed};
use super::*;
use crate::config::{ProxyConfig, RouteConfig};

fn observed(status: u16, content_type: &str, body: &[u8]) -> Observed {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_str(content_type).unwrap());
    let mut hash = BoundedHash::new(16);
    hash.update(body);
    Observed {
        status: StatusCode::from_u16(status).unwrap(),
        headers: pick_headers(&headers, &[HeaderName::from_static("content-type")]),
        body: hash.finish(),
        head: std::time::Duration::ZERO,
    }
}

#[test]
fn equal_answers_match_and_each_difference_is_named() {
    let a = observed(200, "text/plain", b"hello");
    assert_eq!(compare(&a, &a.clone(), true), Ok(vec![]));
    let all = observed(500, "text/html", b"oops");
    let kinds = vec![
        MismatchKind::Status,
        MismatchKind::Header,
        MismatchKind::Body,
    ];
    assert_eq!(compare(&a, &all, true), Ok(kinds));
    assert_eq!(
        compare(&a, &all, false),
        Ok(vec![MismatchKind::Status, MismatchKind::Header]),
        "ignored bodies are not compared"
    );
    let names = [HeaderName::from_static("content-type")];
    assert_eq!(differing_headers(&names, &a, &all), vec!["content-type"]);
}

#[test]
fn a_body_past_the_bound_is_a_skip_unless_something_else_differs() {
    let small = observed(200, "text/plain", b"short");
    let big = observed(200, "text/plain", &[b'x'; 17]);
    assert_eq!(big.body, Digest32::TooLarge);
    assert_eq!(compare(&small, &big, true), Err(SkipReason::BodyTooLarge));
    assert_eq!(
        compare(&big, &big.clone(), true),
        Err(SkipReason::BodyTooLarge)
    );
    let failed = observed(503, "text/plain", &[b'x'; 17]);
    assert_eq!(compare(&big, &failed, true), Ok(vec![MismatchKind::Status]));
}

#[test]
fn the_hash_streams_and_stops_at_the_bound() {
    let mut split = BoundedHash::new(10);
    split.update(b"hello ");
    split.update(b"you");
    let mut whole = BoundedHash::new(10);
    whole.update(b"hello you");
    assert_eq!(split.finish(), whole.finish());
    let mut exact = BoundedHash::new(3);
    exact.update(b"abc");
    assert!(!exact.too_large(), "exactly the bound is still hashed");
    exact.update(b"d");
    assert!(exact.too_large());
}

#[test]
fn path_prefixes_match_whole_segments() {
    let prefixes: Box<[Box<str>]> = ["/api".into(), "/static/".into()].into();
    for (path, under) in [
        ("/api", true),
        ("/api/x", true),
        ("/apix", false),
        ("/static/a.css", true),
        ("/", false),
    ] {
        assert_eq!(ShadowRule::under(&prefixes, path), under, "{path}");
    }
}

#[test]
fn the_mismatch_log_is_rate_limited_per_minute() {
    let stats = ShadowStats::default();
    let allowed = (0..10).filter(|_| stats.may_log(7, 3)).count();
    assert_eq!(allowed, 3);
    assert!(stats.may_log(8, 3), "a new minute starts a new allowance");
    assert!(!stats.may_log(8, 0), "0 turns the log off");
}

#[test]
fn in_flight_places_are_capped_and_returned_on_drop() {
    let stats = std::sync::Arc::new(crate::stats::BackendStats::default());
    let first = ShadowStats::enter(&stats, 2).unwrap();
    let second = ShadowStats::enter(&stats, 2).unwrap();
    assert!(ShadowStats::enter(&stats, 2).is_none());
    assert_eq!(stats.shadow().in_flight(), 2);
    drop((first, second));
    assert_eq!(stats.shadow().in_flight(), 0);
}

#[test]
fn bad_shadow_settings_are_each_named() {
    let text = r#"
routes:
  - name: web
    blue: { endpoints: ["127.0.0.1:1"] }
    shadow:
      percent: 120
      compare_headers: ["bad header"]
      max_body_bytes: 0
      max_in_flight: 0
      timeout: 0s
      methods: [get, CONNECT]
      ignore: { paths: [api], body_paths: ["/ok"] }
"#;
    let error = ProxyConfig::from_yaml(text).unwrap_err();
    let paths: Vec<&str> = error.problems().iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "routes[0].shadow.percent",
            "routes[0].shadow.compare_headers[0]",
            "routes[0].shadow.max_body_bytes",
            "routes[0].shadow.max_in_flight",
            "routes[0].shadow.timeout",
            "routes[0].shadow.methods[0]",
            "routes[0].shadow.methods[1]",
            "routes[0].shadow.ignore.paths[0]",
        ],
        "{error}"
    );
    assert!(error.to_string().contains("write \"GET\""), "{error}");
    // Session 43: in words, not Rust's `1..=10000`.
    for said in [
        "routes[0].shadow.max_body_bytes: 0 is outside 1 to ",
        "routes[0].shadow.max_in_flight: 0 is outside 1 to 10000\n",
    ] {
        assert!(error.to_string().contains(said), "{said}: {error}");
    }
}

#[test]
fn defaults_mirror_every_safe_request_and_compare_content_type() {
    let text = "routes: [{ name: web, blue: { endpoints: [\"127.0.0.1:1\"] }, shadow: {} }]";
    let config = ProxyConfig::from_yaml(text).unwrap();
    let route: &RouteConfig = &config.routes[0];
    let shadow = route.shadow.as_ref().unwrap();
    assert_eq!(shadow, &crate::config::ShadowConfig::default());
    assert_eq!(shadow.percent.bp(), 10_000);
    assert_eq!(shadow.methods, ["GET", "HEAD", "OPTIONS"]);
    assert_eq!(shadow.compare_headers, ["content-type"]);
    assert_eq!(shadow.max_body_bytes, 1 << 20);
}
