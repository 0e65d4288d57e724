use super::*;

fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        headers.append(*name, HeaderValue::from_static(value));
    }
    headers
}

fn names(headers: &HeaderMap) -> Vec<&str> {
    let mut names: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
    names.sort_unstable();
    names
}

fn peer() -> HeaderValue {
    peer_value("127.0.0.1".parse().unwrap())
}

/// The request of case C19.
fn c19_request() -> HeaderMap {
    map(&[
        ("connection", "keep-alive, X-Hop-Secret"),
        ("x-hop-secret", "1"),
        ("keep-alive", "timeout=5"),
        ("te", "gzip"),
        ("proxy-authorization", "Basic abc"),
        ("x-forwarded-for", "6.6.6.6"),
        ("host", "shop.example"),
        ("accept", "*/*"),
    ])
}

#[test]
fn c19_request_loses_every_hop_by_hop_header() {
    let mut headers = c19_request();
    strip_hop_by_hop(&mut headers, Direction::Request);
    assert_eq!(names(&headers), ["accept", "host", "x-forwarded-for"]);
}

#[test]
fn te_trailers_survives_and_nothing_else_of_te() {
    let mut headers = map(&[("te", "gzip, Trailers"), ("te", "deflate")]);
    strip_hop_by_hop(&mut headers, Direction::Request);
    let te: Vec<_> = headers.get_all(TE).iter().collect();
    assert_eq!(te, ["trailers"]);
}

/// RFC 9110 §10.1.4: a sender of `TE` names it in `Connection`; its `trailers` still passes
/// (C19, session 40), and a `TE` without it still goes whole.
#[test]
fn te_trailers_named_in_connection_survives_and_nothing_else_of_te() {
    let mut headers = map(&[
        ("connection", "TE, x-a"),
        ("te", "trailers, gzip"),
        ("x-a", "1"),
    ]);
    strip_hop_by_hop(&mut headers, Direction::Request);
    let te: Vec<_> = headers.get_all(TE).iter().collect();
    assert_eq!(te, ["trailers"]);
    assert!(headers.get("x-a").is_none() && headers.get(CONNECTION).is_none());
    let mut headers = map(&[("connection", "te"), ("te", "gzip")]);
    strip_hop_by_hop(&mut headers, Direction::Request);
    assert!(headers.is_empty(), "{headers:?}");
}

/// RFC 9110 §10.1.4 (C19, session 40): the `trailers` a request keeps goes to an HTTP/1.1
/// upstream named in `Connection`; a request whose `TE` the strip removed gets no `Connection`.
#[test]
fn te_left_after_the_strip_is_named_in_connection() {
    let mut headers = map(&[("connection", "te"), ("te", "trailers")]);
    let scanned = RequestNames::scan(&headers);
    assert!(scanned.te());
    strip_request_hop_by_hop(&mut headers, scanned);
    name_te_in_connection(&mut headers);
    let connection: Vec<_> = headers.get_all(CONNECTION).iter().collect();
    assert_eq!(connection, ["te"]);
    let mut headers = map(&[("te", "gzip")]);
    strip_hop_by_hop(&mut headers, Direction::Request);
    name_te_in_connection(&mut headers);
    assert!(headers.is_empty(), "{headers:?}");
}

#[test]
fn response_loses_connection_named_and_framing_headers() {
    let mut headers = map(&[
        ("connection", "X-Backend-Hop"),
        ("x-backend-hop", "y"),
        ("keep-alive", "timeout=99"),
        ("transfer-encoding", "chunked"),
        ("proxy-authenticate", "Basic"),
        ("upgrade", "websocket"),
        ("content-type", "text/plain"),
        ("proxy-authorization", "end-to-end on a response"),
    ]);
    strip_hop_by_hop(&mut headers, Direction::Response);
    assert_eq!(names(&headers), ["content-type", "proxy-authorization"]);
}

#[test]
fn clean_headers_are_left_untouched() {
    let mut headers = map(&[("host", "a"), ("accept", "*/*"), ("user-agent", "t")]);
    let before = headers.clone();
    strip_hop_by_hop(&mut headers, Direction::Request);
    assert_eq!(headers, before);
}

#[test]
fn forwarded_for_appends_the_peer_on_one_line() {
    let mut headers = c19_request();
    headers.append(X_FORWARDED_FOR, HeaderValue::from_static("7.7.7.7"));
    strip_hop_by_hop(&mut headers, Direction::Request);
    set_forwarded(&mut headers, &peer(), true, false);
    let xff: Vec<_> = headers.get_all(X_FORWARDED_FOR).iter().collect();
    assert_eq!(xff, ["6.6.6.6, 7.7.7.7, 127.0.0.1"]);
    assert_eq!(headers[X_FORWARDED_PROTO], "http");
    assert_eq!(headers[X_FORWARDED_HOST], "shop.example");
    assert_eq!(headers[HOST], "shop.example");
}

#[test]
fn forwarded_proto_is_https_behind_tls_and_replaces_the_clients() {
    let mut headers = map(&[("x-forwarded-proto", "http")]);
    set_forwarded(&mut headers, &peer(), true, true);
    assert_eq!(headers[X_FORWARDED_PROTO], "https");
    let mut headers = map(&[("x-forwarded-proto", "https")]);
    set_forwarded(&mut headers, &peer(), true, false);
    assert_eq!(headers[X_FORWARDED_PROTO], "http");
}

#[test]
fn untrusted_forwarded_for_is_replaced_by_the_peer() {
    let mut headers = c19_request();
    set_forwarded(&mut headers, &peer(), false, false);
    let xff: Vec<_> = headers.get_all(X_FORWARDED_FOR).iter().collect();
    assert_eq!(xff, ["127.0.0.1"]);
}

#[test]
fn forwarded_for_is_created_when_absent() {
    let mut headers = map(&[("x-forwarded-host", "spoofed")]);
    set_forwarded(
        &mut headers,
        &peer_value("::1".parse().unwrap()),
        true,
        false,
    );
    assert_eq!(headers[X_FORWARDED_FOR], "::1");
    assert!(!headers.contains_key(X_FORWARDED_HOST));
}

#[test]
fn a_peer_value_holds_the_longest_address_texts_whole() {
    for text in [
        "255.255.255.255",
        "1111:2222:3333:4444:5555:6666:7777:8888",
        "::ffff:255.255.255.255",
        "::1",
    ] {
        assert_eq!(peer_value(text.parse().unwrap()), text);
    }
}

/// IPv4 addresses are written without `Display` (`ipv4_text`): the same text as `Display` for
/// every octet value in every position, one and two and three digits, zeros included.
#[test]
fn a_peer_value_writes_ipv4_as_display_does() {
    for octet in 0..=255u8 {
        for ip in [
            std::net::Ipv4Addr::new(octet, 0, 9, 10),
            std::net::Ipv4Addr::new(99, octet, 100, 0),
            std::net::Ipv4Addr::new(1, 255, octet, 7),
            std::net::Ipv4Addr::new(127, 0, 0, octet),
        ] {
            assert_eq!(peer_value(ip.into()), ip.to_string().as_str());
        }
    }
}

/// Tokens are looked up as text (`remove_connection_tokens`): any case, names longer than the
/// 64 bytes `http` lowercases on the stack, a token that is no header name, one value or several.
#[test]
fn connection_tokens_name_headers_in_any_case_and_of_any_length() {
    let long = "x-".repeat(40) + "hop";
    let mut headers = HeaderMap::new();
    headers.append(
        CONNECTION,
        HeaderValue::from_static("Close, X-HOP, bad token"),
    );
    headers.append(
        CONNECTION,
        HeaderValue::from_str(&long.to_uppercase()).unwrap(),
    );
    headers.append("x-hop", HeaderValue::from_static("1"));
    headers.append("close", HeaderValue::from_static("1"));
    headers.append(
        HeaderName::from_bytes(long.as_bytes()).unwrap(),
        HeaderValue::from_static("1"),
    );
    headers.append("accept", HeaderValue::from_static("*/*"));
    strip_hop_by_hop(&mut headers, Direction::Request);
    assert_eq!(names(&headers), ["accept"]);
}

#[test]
fn header_named_by_connection_is_stripped_even_if_it_is_forwarding() {
    let mut headers = map(&[
        ("connection", "x-forwarded-for"),
        ("x-forwarded-for", "6.6.6.6"),
    ]);
    strip_hop_by_hop(&mut headers, Direction::Request);
    set_forwarded(&mut headers, &peer(), true, false);
    assert_eq!(headers[X_FORWARDED_FOR], "127.0.0.1");
}

#[test]
fn an_upgrade_keeps_upgrade_and_connection_upgrade_and_nothing_else_connection_named() {
    let mut headers = map(&[
        ("connection", "keep-alive, Upgrade, X-Hop"),
        ("upgrade", "websocket"),
        ("x-hop", "1"),
        ("keep-alive", "timeout=5"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("host", "chat.example"),
    ]);
    let protocols: Vec<HeaderValue> = headers.get_all(UPGRADE).iter().cloned().collect();
    strip_hop_by_hop(&mut headers, Direction::Request);
    set_upgrade(&mut headers, protocols);
    assert_eq!(
        names(&headers),
        ["connection", "host", "sec-websocket-key", "upgrade"]
    );
    assert_eq!(headers[CONNECTION], "upgrade");
    assert_eq!(headers[UPGRADE], "websocket");
}

#[test]
fn set_upgrade_without_protocols_adds_nothing() {
    let mut headers = map(&[("host", "a")]);
    set_upgrade(&mut headers, Vec::new());
    assert_eq!(names(&headers), ["host"]);
}

/// Trial report §5: `Connection: Host` must not make the proxy send an HTTP/1.1 request without
/// `Host` (RFC 9112 §3.2) or `X-Forwarded-Host`; `Content-Length` (framing) stays too, while the
/// other named headers still go.
#[test]
fn connection_cannot_remove_host_content_length_or_the_forwarding_headers() {
    let mut headers = map(&[
        (
            "connection",
            "Host, content-length, X-Forwarded-Proto, x-forwarded-host, X-Hop",
        ),
        ("connection", "HOST"),
        ("host", "shop.example"),
        ("content-length", "5"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "spoofed"),
        ("x-hop", "1"),
    ]);
    strip_hop_by_hop(&mut headers, Direction::Request);
    set_forwarded(&mut headers, &peer(), false, false);
    assert_eq!(
        names(&headers),
        [
            "content-length",
            "host",
            "x-forwarded-for",
            "x-forwarded-host",
            "x-forwarded-proto"
        ]
    );
    assert_eq!(headers[HOST], "shop.example");
    assert_eq!(headers[X_FORWARDED_HOST], "shop.example");
    assert_eq!(headers[X_FORWARDED_PROTO], "http");
    assert_eq!(headers[X_FORWARDED_FOR], "127.0.0.1");
    assert_eq!(headers[http::header::CONTENT_LENGTH], "5");

    let mut response = map(&[("connection", "content-length"), ("content-length", "12")]);
    strip_hop_by_hop(&mut response, Direction::Response);
    assert_eq!(names(&response), ["content-length"]);
}

#[test]
fn cookie_crumbs_are_joined_with_a_semicolon_and_a_single_cookie_is_untouched() {
    let mut headers = map(&[
        ("cookie", "session=abc"),
        ("cookie", ""),
        ("cookie", "csrf=xyz"),
        ("x-other", "1"),
    ]);
    join_cookie_crumbs(&mut headers);
    let cookies: Vec<_> = headers.get_all(COOKIE).iter().collect();
    assert_eq!(cookies, ["session=abc; csrf=xyz"]);
    let mut one = map(&[("cookie", "a=1, b=2")]);
    join_cookie_crumbs(&mut one);
    assert_eq!(one[COOKIE], "a=1, b=2");
    let mut none = map(&[("x-other", "1")]);
    join_cookie_crumbs(&mut none);
    assert!(none.get(COOKIE).is_none());
}

/// Every line of `headers`, in the map's order (names in their first insertion's order, each
/// name's values in order).
fn lines(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_string()))
        .collect()
}

/// The scanned path (one pass over the names, then lookups only for the names found) leaves the
/// same lines in the same order as the strip and `set_forwarded` it replaces on the request path,
/// for every mix of forwarding headers present or absent (one or two lines each, or named by
/// `Connection`), with and without `Host`, trusted or not, behind TLS or not; and the scan finds
/// `Via` exactly when a `Via` line is there.
#[test]
fn the_scanned_request_path_sets_the_same_lines_as_strip_and_set_forwarded() {
    let optional: [&[(&'static str, &'static str)]; 7] = [
        &[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "7.7.7.7, 8.8.8.8"),
        ],
        &[("x-forwarded-proto", "https")],
        &[
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-host", "b"),
        ],
        &[("host", "shop.example")],
        &[("via", "1.1 other")],
        &[("forwarded", "for=6.6.6.6"), ("forwarded", "for=7.7.7.7")],
        &[("connection", "x-forwarded-for, X-Forwarded-Host, via")],
    ];
    let mut checked = 0;
    for mask in 0u32..(1 << optional.len()) {
        for first_line_only in [false, true] {
            let mut pairs = vec![("accept", "*/*")];
            for (i, lines) in optional.iter().enumerate() {
                if mask & (1 << i) != 0 {
                    let lines = if first_line_only { &lines[..1] } else { lines };
                    pairs.extend_from_slice(lines);
                }
            }
            pairs.push(("user-agent", "test"));
            for (trust, https) in [(false, false), (true, false), (false, true), (true, true)] {
                let mut expected = map(&pairs);
                strip_hop_by_hop(&mut expected, Direction::Request);
                set_forwarded(&mut expected, &peer(), trust, https);

                let mut headers = map(&pairs);
                let scanned = RequestNames::scan(&headers);
                assert_eq!(scanned.via(), headers.contains_key(VIA), "{pairs:?}");
                strip_request_hop_by_hop(&mut headers, scanned);
                set_forwarded_scanned(&mut headers, &peer(), (trust, https), scanned);
                assert_eq!(
                    lines(&headers),
                    lines(&expected),
                    "{pairs:?} {trust} {https}"
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 128 * 2 * 4);
}

#[test]
fn a_clients_rfc7239_forwarded_gets_the_peer_last_or_goes_when_untrusted() {
    let client = [
        ("forwarded", "for=6.6.6.6"),
        ("forwarded", " for=7.7.7.7;proto=https "),
    ];
    let mut headers = map(&client);
    set_forwarded(&mut headers, &peer(), true, false);
    let lines: Vec<_> = headers.get_all(FORWARDED).iter().collect();
    assert_eq!(
        lines,
        ["for=6.6.6.6, for=7.7.7.7;proto=https, for=127.0.0.1"]
    );

    let mut headers = map(&client);
    set_forwarded(
        &mut headers,
        &peer_value("::1".parse().unwrap()),
        true,
        false,
    );
    assert_eq!(
        headers[FORWARDED],
        "for=6.6.6.6, for=7.7.7.7;proto=https, for=\"[::1]\""
    );

    let mut headers = map(&client);
    set_forwarded(&mut headers, &peer(), false, false);
    assert!(!headers.contains_key(FORWARDED));

    // None sent, none added: the X-Forwarded-* headers carry the same.
    let mut headers = map(&[("host", "shop.example")]);
    set_forwarded(&mut headers, &peer(), true, false);
    assert!(!headers.contains_key(FORWARDED));
}

#[test]
fn a_host_is_a_host_then_an_optional_decimal_port() {
    for valid in [
        "",
        "a",
        "a.example",
        "a.example:8080",
        "a.example:",
        "10.0.0.7:80",
        "[::1]",
        "[::1]:8080",
        "[v1.x:y]",
        "xn--caf-dma.example",
        "a_b~c",
    ] {
        assert!(valid_host(valid.as_bytes()), "{valid:?} was refused");
    }
    for invalid in [
        "a b", "a/b", "u@a", "a?b", "a#b", "a:b:c", "::1", "a:80x", "a:-1", "[::1", "[::1]x",
        "[::1]:x", "[zz]", "[]", "[v1.]", "[v.x]", "a]", "a[b", "a:[::1]",
    ] {
        assert!(!valid_host(invalid.as_bytes()), "{invalid:?} was taken");
    }
}

/// RFC 9112 §6.3: a Content-Length beside a Transfer-Encoding goes, also when `Connection` names
/// the Transfer-Encoding (its tokens are removed first; the property test found this case).
#[test]
fn content_length_beside_transfer_encoding_goes_whoever_removes_the_latter() {
    for connection in ["close", "transfer-encoding", "Transfer-Encoding, x-a"] {
        for direction in [Direction::Request, Direction::Response] {
            let mut headers = map(&[
                ("content-length", "5"),
                ("transfer-encoding", "chunked"),
                ("connection", connection),
                ("x-b", "kept"),
            ]);
            strip_hop_by_hop(&mut headers, direction);
            assert_eq!(names(&headers), ["x-b"], "{connection:?} {direction:?}");
        }
    }
    // Without a Transfer-Encoding, Content-Length stays, even named by Connection.
    let mut headers = map(&[("content-length", "5"), ("connection", "content-length")]);
    strip_hop_by_hop(&mut headers, Direction::Response);
    assert_eq!(names(&headers), ["content-length"]);
}

/// A backend's `Keep-Alive` is handed over by the response strip, also when its `Connection:
/// keep-alive` names it, and still never reaches the client (session 41).
#[test]
fn the_response_strip_hands_over_the_backends_keep_alive_and_removes_it() {
    let mut headers = map(&[
        ("connection", "keep-alive"),
        ("keep-alive", "timeout=2, max=100"),
        ("keep-alive", "timeout=9"),
        ("content-length", "2"),
    ]);
    let keep_alive = strip_response_hop_by_hop(&mut headers);
    assert_eq!(keep_alive.unwrap(), "timeout=2, max=100");
    assert_eq!(names(&headers), ["content-length"]);
    let mut plain = map(&[("content-length", "2"), ("x-pool", "blue")]);
    assert_eq!(strip_response_hop_by_hop(&mut plain), None);
    assert_eq!(names(&plain), ["content-length", "x-pool"]);
}
