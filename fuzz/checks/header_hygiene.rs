//! The `header_hygiene` fuzz target's check, shared with the stable replay of its committed corpus
//! (`crossfade_proxy::fuzz_checks`) and the proxy's property tests, so the three can never drift:
//! header hygiene (`strip_hop_by_hop`, RFC 9110 §7.6.1) on any header list never panics, and leaves
//! no hop-by-hop header (nor any header `Connection` named, except `Host` and `Content-Length`,
//! which stay, and `TE`, which keeps `trailers` as ever), no `Content-Length` beside a
//! `Transfer-Encoding` (RFC 9112 §6.3), `TE` at most as `trailers`, and every other header
//! untouched.

use crossfade_proxy::headers::{strip_hop_by_hop, Direction, NEVER_CONNECTION_OPTIONS};
use http::header::{HeaderMap, HeaderName, HeaderValue};

/// The headers that are hop-by-hop in both directions (besides `TE`, which may keep `trailers`).
const HOP: [&str; 5] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

/// Decodes `data` and runs [`check_headers`]. Input: the first byte picks the direction (even:
/// request, odd: response); the rest is `name: value` lines split on `\n`, values trimmed, lines
/// that are not a valid header skipped. Empty input is skipped.
pub fn check(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let direction = if first & 1 == 0 {
        Direction::Request
    } else {
        Direction::Response
    };
    let mut headers = HeaderMap::new();
    for line in rest.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    check_headers(headers, direction);
}

/// Strips `headers` travelling in `direction` and asserts the rules above; panics on a broken rule.
pub fn check_headers(mut headers: HeaderMap, direction: Direction) {
    let named: Vec<HeaderName> = headers
        .get_all("connection")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|name| !NEVER_CONNECTION_OPTIONS.contains(name))
        // `TE` named by `Connection` keeps its `trailers` (RFC 9110 §10.1.4), checked below.
        .filter(|name| name != "te")
        .collect();
    let before = headers.clone();
    strip_hop_by_hop(&mut headers, direction);

    let credential = match direction {
        Direction::Request => "proxy-authorization",
        Direction::Response => "proxy-authenticate",
    };
    for name in HOP.iter().chain([&credential]) {
        assert!(!headers.contains_key(*name), "{name} kept: {headers:?}");
    }
    for name in &named {
        assert!(
            !headers.contains_key(name),
            "{name} named by Connection kept"
        );
    }
    let te: Vec<_> = headers.get_all("te").iter().collect();
    assert!(
        te.is_empty() || te == [HeaderValue::from_static("trailers")],
        "{te:?}"
    );
    // RFC 9112 §6.3: beside a Transfer-Encoding, Content-Length does not describe the body as
    // forwarded, and goes with it.
    let by_chunks = before.contains_key("transfer-encoding");
    if by_chunks {
        assert!(
            !headers.contains_key("content-length"),
            "content-length kept beside transfer-encoding"
        );
    }
    for (name, value) in &before {
        let hop = HOP.contains(&name.as_str())
            || name == "te"
            || name == credential
            || (by_chunks && name == "content-length");
        if !hop && !named.contains(name) {
            assert!(
                headers.get_all(name).iter().any(|v| v == value),
                "{name}: {value:?} lost"
            );
        }
    }
}
