//! Property tests (proptest) of the pure routing rules, over generated inputs: the weighted pick,
//! sticky monotonicity, path normalisation, header hygiene and the admin API's weights body. Each
//! property is a rule a production user relies on; proptest shrinks any counterexample to a minimal
//! one. Header hygiene and the weights body are checked by their fuzz targets' own checks
//! (`fuzz/checks/*.rs`, through `crate::fuzz_checks`), so the properties assert exactly what the
//! fuzzers assert, over inputs built to reach the interesting cases.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

use crate::fuzz_checks::{admin_weights, header_hygiene};
use crate::fuzzing::admin_weights as parse_weights;
use crate::headers::Direction;
use crate::path::normalize;
use crate::sticky::{self, bucket};
use crate::weight::{draw_bp, Slot, Weights, FULL_BP};

fn weights() -> impl Strategy<Value = Weights> {
    (0..=FULL_BP).prop_map(|green| Weights::with(Slot::Green, green))
}

proptest! {
    /// Weight 0 never matches and 10000 always does, for any draw (case C03); any other split sends
    /// exactly `green` of the 10000 draws to green.
    #[test]
    fn the_pick_gives_green_exactly_its_share_of_draws(w in weights(), r in 0..FULL_BP) {
        let picked = w.pick(r);
        prop_assert_eq!(picked == Some(Slot::Green), r < w.green);
        prop_assert!(picked.is_some());
    }

    /// Any 32-bit random value lands in 0..10000.
    #[test]
    fn every_random_draw_is_a_basis_point(random in any::<u32>()) {
        prop_assert!(draw_bp(random) < FULL_BP);
    }

    /// Raising green's weight only ever moves a key from blue to green, never back (C08); lowering
    /// it only the other way. (That every replica computes the same bucket is pinned by the fixed
    /// values in `sticky::tests`.)
    #[test]
    fn sticky_assignment_is_monotone_in_the_weight(
        key in proptest::collection::vec(any::<u8>(), 1..64),
        a in 0..=FULL_BP,
        b in 0..=FULL_BP,
    ) {
        let (low, high) = (a.min(b), a.max(b));
        let k = bucket(&key);
        prop_assert!(k < FULL_BP);
        let at = |green| sticky::pick(Weights::with(Slot::Green, green), k);
        if at(low) == Some(Slot::Green) {
            prop_assert_eq!(at(high), Some(Slot::Green));
        }
        if at(high) == Some(Slot::Blue) {
            prop_assert_eq!(at(low), Some(Slot::Blue));
        }
    }

    /// The normal form is a fixed point, never climbs above the root, keeps the leading `/`, and has
    /// no `.`/`..` segment or empty segment left.
    #[test]
    fn normalising_a_path_is_idempotent_and_leaves_no_dot_segments(
        segments in proptest::collection::vec(
            prop_oneof![
                Just(".".to_string()), Just("..".to_string()), Just(String::new()),
                Just("%2e".to_string()), Just("%2E%2e".to_string()), Just("%7Euser".to_string()),
                Just("%2F".to_string()), "[a-z0-9._~-]{1,6}",
            ],
            0..8,
        ),
        trailing in any::<bool>(),
    ) {
        let mut path = format!("/{}", segments.join("/"));
        if trailing {
            path.push('/');
        }
        match normalize(&path) {
            Ok(normal) => {
                prop_assert!(normal.starts_with('/'), "{}", normal);
                let again = normalize(&normal).map(|n| n.into_owned());
                prop_assert_eq!(again, Ok(normal.to_string()));
                for segment in normal.split('/').skip(1) {
                    prop_assert!(segment != "." && segment != "..", "{} from {}", normal, path);
                }
                prop_assert!(!normal.contains("//"), "{} from {}", normal, path);
            }
            // Only a path that climbs above the root is refused here (every escape is valid).
            Err(e) => prop_assert_eq!(e, crate::path::PathError::AboveRoot, "{}", path),
        }
    }
}

/// Header names that are hop-by-hop in one direction or both (RFC 9110 §7.6.1, §11.7).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
];

/// End-to-end header names, two of which (`host`, `content-length`) must survive being named by
/// `Connection`.
const END_TO_END: [&str; 6] = [
    "host",
    "content-length",
    "content-type",
    "x-forwarded-for",
    "accept",
    "cookie",
];

/// A header name from a mix of hop-by-hop names (`Connection` more often), end-to-end names and
/// this list's own random tokens (which `Connection` values then name), written in random case.
fn header_name(tokens: Vec<String>) -> impl Strategy<Value = String> {
    (
        prop_oneof![
            2 => select(&HOP_BY_HOP[..]).prop_map(str::to_owned),
            1 => Just("connection".to_owned()),
            2 => select(&END_TO_END[..]).prop_map(str::to_owned),
            3 => select(tokens),
        ],
        any::<u64>(),
    )
        .prop_map(|(name, case)| {
            name.chars()
                .enumerate()
                .map(|(i, c)| {
                    if case >> (i % 64) & 1 == 1 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect()
        })
}

/// A header list: names as above; values that are `Connection`-style lists of those names (with
/// odd spacing and empty items), `TE` values with and without `trailers`, printable text, or bytes
/// that are not UTF-8 (obs-text).
fn header_list() -> impl Strategy<Value = Vec<(HeaderName, HeaderValue)>> {
    vec("[a-z][a-z0-9-]{0,7}", 1..4).prop_flat_map(|tokens| {
        let list = vec(
            (
                header_name(tokens.clone()),
                select(&[",", ", ", " ,", ",,", " , "][..]),
            ),
            1..4,
        )
        .prop_map(|items| {
            items
                .into_iter()
                .map(|(name, comma)| format!("{name}{comma}"))
                .collect::<String>()
        });
        let value = prop_oneof![
            3 => list.prop_map(String::into_bytes),
            1 => select(&["trailers", "Trailers, deflate", "gzip", "trailers;q=0.5", ""][..])
                .prop_map(|v| v.as_bytes().to_vec()),
            1 => "[ -~]{0,16}".prop_map(String::into_bytes),
            1 => vec(0x80u8..=0xff, 1..4),
        ];
        vec((header_name(tokens), value), 0..12).prop_map(|headers| {
            headers
                .into_iter()
                .map(|(name, value)| {
                    let name = HeaderName::from_bytes(name.as_bytes()).expect("a token");
                    let value = HeaderValue::from_bytes(&value).expect("visible ASCII or obs-text");
                    (name, value)
                })
                .collect()
        })
    })
}

/// A JSON value where a weight goes: basis points in and out of range, floats, exponents, percent
/// strings good and bad, strings without `%`, and the other JSON types.
fn weight_value() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => (0u32..=10_000).prop_map(|bp| bp.to_string()),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<f64>().prop_map(|x| x.to_string()),
        2 => (0u32..=10_100, select(&["", " "][..]))
            .prop_map(|(bp, space)| format!("\"{}{space}%\"", crate::weight::Percent(bp)
                .to_string()
                .trim_end_matches('%'))),
        2 => select(&[
            "10001", "4294967296", "-1", "-0", "1e4", "10000.0", "0.5", "\"50\"", "\"50%%\"",
            "\"-1%\"", "\"1e2%\"", "\"0.001%\"", "\"NaN%\"", "\"inf%\"", "\"%\"", "\"\"",
            "null", "true", "[]", "{}", "[5000]", "{\"bp\": 1}",
        ][..]).prop_map(str::to_owned),
    ]
}

/// A weights body built from JSON fragments: a valid split, or an object of `blue`/`green` (or
/// other, or repeated) keys with [`weight_value`]s, or not an object; sometimes cut short.
fn weights_body() -> impl Strategy<Value = Vec<u8>> {
    let key = select(
        &[
            "blue", "green", "blue", "green", "Blue", "red", "", "green ",
        ][..],
    );
    let object =
        vec((key, weight_value(), select(&["", " ", "\n\t"][..])), 0..4).prop_map(|entries| {
            let fields: Vec<String> = entries
                .into_iter()
                .map(|(k, v, space)| format!("{space}\"{k}\":{space}{v}"))
                .collect();
            format!("{{{}}}", fields.join(","))
        });
    let split = (0..=FULL_BP, any::<bool>(), any::<bool>()).prop_map(|(green, percent, swap)| {
        let blue = FULL_BP - green;
        let [blue, green] = [blue, green].map(|bp| {
            if percent {
                format!("\"{}\"", crate::weight::Percent(bp))
            } else {
                bp.to_string()
            }
        });
        if swap {
            format!(r#"{{"green": {green}, "blue": {blue}}}"#)
        } else {
            format!(r#"{{"blue": {blue}, "green": {green}}}"#)
        }
    });
    let body = prop_oneof![
        3 => split,
        6 => object,
        1 => weight_value(),
        1 => vec(weight_value(), 0..3).prop_map(|values| format!("[{}]", values.join(","))),
    ];
    let cut = prop::bool::weighted(0.15);
    (body, any::<prop::sample::Index>(), cut).prop_map(|(body, at, cut)| {
        let mut body = body.into_bytes();
        if cut {
            body.truncate(at.index(body.len() + 1));
        }
        body
    })
}

proptest! {
    /// Header hygiene (the fuzz target's check): after the strip no hop-by-hop header is left,
    /// nor any header `Connection` named (but `Host` and `Content-Length`), `TE` at most as
    /// `trailers`, and every other header is kept with every value.
    #[test]
    fn header_hygiene_strips_hop_by_hop_and_keeps_the_rest(
        headers in header_list(),
        response in any::<bool>(),
    ) {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(name, value);
        }
        let direction = if response { Direction::Response } else { Direction::Request };
        header_hygiene::check_headers(map, direction);
    }

    /// The fuzz target's own input format, on bytes: never panics, same rules.
    #[test]
    fn header_hygiene_holds_on_any_bytes(data in vec(any::<u8>(), 0..256)) {
        header_hygiene::check(&data);
    }

    /// The admin weights body (the fuzz target's check): on JSON-ish bodies and on any bytes it
    /// never panics, an accepted body is a split `Weights::check` accepts, and a refusal has a
    /// message.
    #[test]
    fn an_accepted_weights_body_is_a_valid_split(
        body in weights_body(),
        bytes in vec(any::<u8>(), 0..64),
    ) {
        admin_weights::check(&body);
        admin_weights::check(&bytes);
    }

    /// Every valid split is accepted as written, as basis points or as percent strings, and one
    /// side alone gets the rest of 100%.
    #[test]
    fn every_valid_weights_body_is_accepted_as_written(green in 0..=FULL_BP) {
        let blue = FULL_BP - green;
        let exact = Weights { blue, green };
        let body = format!(r#"{{"blue": {blue}, "green": {green}}}"#);
        prop_assert_eq!(parse_weights(body.as_bytes()), Ok(exact));
        let body = format!(
            r#"{{"green": "{}", "blue": "{}"}}"#,
            crate::weight::Percent(green),
            crate::weight::Percent(blue)
        );
        prop_assert_eq!(parse_weights(body.as_bytes()), Ok(exact));
        let body = format!(r#"{{"green": {green}}}"#);
        prop_assert_eq!(parse_weights(body.as_bytes()), Ok(exact));
        let body = format!(r#"{{"blue": "{}"}}"#, crate::weight::Percent(blue));
        prop_assert_eq!(parse_weights(body.as_bytes()), Ok(exact));
    }
}
