//! Request IDs (`request_id`): one ID per request, carried in a header to the backend that serves
//! it (and to a shadow copy), written in the access log's `request_id` field and, by default, sent
//! back to the client, so that one request can be followed from a client's report through the
//! proxy's log to blue's or green's own log. Off by default: a request pays one branch.
//!
//! An ID the client (or a proxy in front) sent is kept when it is well-formed ([`well_formed`]),
//! as Envoy keeps an incoming `x-request-id` and Heroku's router an `X-Request-ID`; otherwise the
//! proxy makes one: a random (version 4) UUID, RFC 9562 §5.4, in its 36-character text form, as
//! Envoy does.

use http::header::HeaderName;
use http::{HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};

use crate::config::Problem;

/// The longest incoming ID kept (bytes): room for any UUID, trace or span ID form, short enough
/// that a client cannot make log lines long with it.
pub const MAX_INCOMING_BYTES: usize = 128;

/// `request_id:` in the proxy config. Read at start (a reload does not apply a change).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    default,
    deny_unknown_fields,
    expecting = "a map with header, keep_incoming and in_response"
)]
pub struct RequestIdConfig {
    /// The header that carries the ID (case does not matter, RFC 9110 §5.1). Default
    /// `x-request-id`. Not a header the proxy manages itself (`Host`, `Via`, `Forwarded`,
    /// `X-Forwarded-*`, the hop-by-hop and framing ones), not one clients send with a meaning of
    /// its own (`Content-Type`, `Expect`, `Accept`, `Range`, `traceparent`...: the list
    /// `override_header` refuses), and not a route's `override_header` or `sticky.header`
    /// ([`RequestIdConfig::check_routes`]).
    pub header: String,
    /// Whether a well-formed ID the request already carries is kept (`true`, the default: a
    /// proxy or client in front made it); `false` replaces every incoming one.
    pub keep_incoming: bool,
    /// Whether the response to the client carries the ID too (`true`, the default), unless the
    /// backend's response already has that header, which is left as it is.
    pub in_response: bool,
}

impl Default for RequestIdConfig {
    fn default() -> Self {
        RequestIdConfig {
            header: "x-request-id".to_owned(),
            keep_incoming: true,
            in_response: true,
        }
    }
}

impl RequestIdConfig {
    /// Problems with the settings, named `request_id.header`.
    pub(crate) fn check(&self, problems: &mut Vec<Problem>) {
        if let Err(message) = self.header_name() {
            problems.push(Problem::new("request_id.header", message));
        }
    }

    /// Problems of a `header` that is also a route's `override_header` (every request would carry
    /// an ID there, which is neither `blue` nor `green`: each got 400) or its `sticky.header`
    /// (a new random ID per request would pick each one's backend), named `request_id.header`.
    pub(crate) fn check_routes(
        &self,
        routes: &[crate::config::RouteConfig],
        problems: &mut Vec<Problem>,
    ) {
        let Ok(name) = self.header_name() else {
            return;
        };
        for (i, route) in routes.iter().enumerate() {
            let sticky = route.sticky.as_ref().and_then(|s| s.header.as_deref());
            let uses = [
                ("override_header", route.override_header.as_deref()),
                ("sticky.header", sticky),
            ];
            for (field, header) in uses {
                if header.is_some_and(|h| h.eq_ignore_ascii_case(name.as_str())) {
                    let message = format!(
                        "{name} is also routes[{i}].{field} (route {:?}), which reads the header \
                         for its own purpose; give request IDs another header (x-request-id is \
                         usual)",
                        route.name
                    );
                    problems.push(Problem::new("request_id.header", message));
                }
            }
        }
    }

    /// The header name, lowercase; in words what is wrong with it otherwise.
    fn header_name(&self) -> Result<HeaderName, String> {
        let name = HeaderName::from_bytes(self.header.as_bytes()).map_err(|_| {
            format!(
                "{:?} is not a header name (a token: letters, digits and !#$%&'*+-.^_`|~, RFC 9110 §5.1)",
                self.header
            )
        })?;
        let managed = matches!(
            name.as_str(),
            "host"
                | "via"
                | "forwarded"
                | "x-forwarded-for"
                | "x-forwarded-proto"
                | "x-forwarded-host"
                | "connection"
                | "keep-alive"
                | "proxy-connection"
                | "te"
                | "trailer"
                | "transfer-encoding"
                | "upgrade"
                | "content-length"
                | "cookie"
                | "set-cookie"
                | "authorization"
        );
        if managed {
            return Err(format!(
                "{name} is a header the proxy or HTTP itself manages; name another (x-request-id is usual)"
            ));
        }
        // The ID replaces a value that is not one (a content type with parameters, an `Expect`,
        // a W3C `traceparent`), so a header with a meaning of its own to the backend loses it:
        // `Content-Type` made uploads arrive as `content-type: <uuid>`.
        if crate::sticky::CLIENT_HEADERS.contains(&name.as_str()) || has_own_meaning(&name) {
            return Err(format!(
                "{name} is a header with a meaning of its own to clients, backends or the proxy \
                 (RFC 9110 and its kin), which an ID would replace; name another (x-request-id \
                 is usual)"
            ));
        }
        Ok(name)
    }
}

/// Headers with a meaning of their own beyond those clients send ([`crate::sticky::CLIENT_HEADERS`]),
/// which an ID would replace or, with `in_response`, set on every response the backend gave none:
/// the response fields of RFC 9110 and its kin (`Date: <uuid>`, `Location`, `Retry-After`,
/// `Refresh`...), tracing headers with a format of their own that a UUID does not have (B3,
/// AWS X-Ray, Google Cloud Trace, Jaeger, Sentry, W3C `baggage`), and, by prefix, gRPC's reserved
/// `grpc-` fields (`grpc-timeout: <uuid>` fails every call), the Fetch `sec-` request fields and
/// CORS's `access-control-` ones. Trial 29: each of these was accepted as `request_id.header`.
const OWN_MEANING: &[&str] = &[
    "date",
    "server",
    "location",
    "content-location",
    "content-disposition",
    "content-range",
    "refresh",
    "retry-after",
    "age",
    "expires",
    "etag",
    "last-modified",
    "vary",
    "allow",
    "accept-ranges",
    "www-authenticate",
    "proxy-authenticate",
    "authentication-info",
    "strict-transport-security",
    "content-security-policy",
    "content-security-policy-report-only",
    "x-frame-options",
    "x-content-type-options",
    "alt-svc",
    "link",
    "max-forwards",
    "priority",
    "early-data",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "x-amzn-trace-id",
    "x-cloud-trace-context",
    "uber-trace-id",
    "sentry-trace",
    "baggage",
];

/// Prefixes of header families with a meaning of their own (see [`OWN_MEANING`]).
const OWN_MEANING_PREFIXES: &[&str] = &["grpc-", "sec-", "access-control-"];

/// Whether `name` (lowercase) is in [`OWN_MEANING`] or starts with one of its prefixes.
fn has_own_meaning(name: &HeaderName) -> bool {
    let name = name.as_str();
    OWN_MEANING.contains(&name) || OWN_MEANING_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The running proxy's request IDs, made from a checked [`RequestIdConfig`].
#[derive(Debug)]
pub(crate) struct RequestIds {
    header: HeaderName,
    keep_incoming: bool,
    in_response: bool,
}

impl RequestIds {
    /// From `config`, checked by [`RequestIdConfig::check`] (an unusable header name falls back
    /// to `x-request-id`, which a checked config never needs).
    pub(crate) fn new(config: &RequestIdConfig) -> RequestIds {
        RequestIds {
            header: config
                .header_name()
                .unwrap_or(HeaderName::from_static("x-request-id")),
            keep_incoming: config.keep_incoming,
            in_response: config.in_response,
        }
    }

    /// Gives the request whose headers are `headers` its ID: the incoming one when it is kept (a
    /// single well-formed line), else a new one that replaces every line of the header. Returns
    /// the ID.
    pub(crate) fn stamp(&self, headers: &mut HeaderMap) -> HeaderValue {
        if let Some(kept) = self.incoming(headers) {
            return kept.clone();
        }
        let id = generate();
        headers.insert(self.header.clone(), id.clone());
        id
    }

    /// The ID of a request the proxy answers without forwarding it (a shed one), whose
    /// `headers` are not changed: the incoming one when it is kept, else a new one.
    pub(crate) fn of(&self, headers: &HeaderMap) -> HeaderValue {
        self.incoming(headers).cloned().unwrap_or_else(generate)
    }

    /// The incoming ID when it is kept: `keep_incoming`, and a single well-formed line.
    fn incoming<'h>(&self, headers: &'h HeaderMap) -> Option<&'h HeaderValue> {
        if !self.keep_incoming {
            return None;
        }
        let mut lines = headers.get_all(&self.header).iter();
        match (lines.next(), lines.next()) {
            (Some(line), None) if well_formed(line.as_bytes()) => Some(line),
            _ => None,
        }
    }

    /// The header that carries the ID.
    pub(crate) fn header(&self) -> &HeaderName {
        &self.header
    }

    /// Sets `id` on a response to the client whose headers are `headers`, with `in_response`
    /// and unless the backend already set the header.
    pub(crate) fn answer(&self, headers: &mut HeaderMap, id: &HeaderValue) {
        if !self.in_response {
            return;
        }
        if let http::header::Entry::Vacant(entry) = headers.entry(&self.header) {
            entry.insert(id.clone());
        }
    }
}

/// Whether an incoming ID can be kept: 1 to [`MAX_INCOMING_BYTES`] visible ASCII characters
/// (`%x21-7E`), so that it stays one token in a log line and a header; anything else (spaces,
/// control or non-ASCII bytes, an empty or oversized value) is replaced.
pub(crate) fn well_formed(id: &[u8]) -> bool {
    (1..=MAX_INCOMING_BYTES).contains(&id.len()) && id.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// A new ID: a random version 4 UUID (RFC 9562 §5.4) from `rand`'s thread-local CSPRNG, in its
/// lowercase hyphenated form (`0b6a3c1e-5d0f-4a8e-9c7b-2f1e0d3c4b5a`).
pub(crate) fn generate() -> HeaderValue {
    let uuid = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    uuid.hyphenated().encode_lower(&mut text);
    HeaderValue::from_bytes(&text).expect("a UUID's text is a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(config: RequestIdConfig) -> RequestIds {
        RequestIds::new(&config)
    }

    #[test]
    fn a_generated_id_is_a_version_4_uuid_and_differs_each_time() {
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
        let parsed = uuid::Uuid::parse_str(a.to_str().unwrap()).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
        assert_eq!(a.len(), 36);
    }

    #[test]
    fn a_single_well_formed_incoming_id_is_kept_anything_else_replaced() {
        let ids = ids(RequestIdConfig::default());
        let mut headers = HeaderMap::new();
        headers.insert("x-request-id", HeaderValue::from_static("abc-123"));
        assert_eq!(ids.stamp(&mut headers), "abc-123");
        assert_eq!(headers.get_all("x-request-id").iter().count(), 1);
        for bad in [&b"has space"[..], b"", &[b'a'; 129], b"caf\xc3\xa9"] {
            let mut headers = HeaderMap::new();
            headers.insert("x-request-id", HeaderValue::from_bytes(bad).unwrap());
            let id = ids.stamp(&mut headers);
            assert_eq!(id.len(), 36, "{bad:?}");
            assert_eq!(headers.get("x-request-id"), Some(&id));
        }
        let mut two = HeaderMap::new();
        two.append("x-request-id", HeaderValue::from_static("a"));
        two.append("x-request-id", HeaderValue::from_static("b"));
        let id = ids.stamp(&mut two);
        assert_eq!(
            two.get_all("x-request-id").iter().collect::<Vec<_>>(),
            [&id]
        );
    }

    #[test]
    fn keep_incoming_false_replaces_a_well_formed_id() {
        let ids = ids(RequestIdConfig {
            keep_incoming: false,
            ..RequestIdConfig::default()
        });
        let mut headers = HeaderMap::new();
        headers.insert("x-request-id", HeaderValue::from_static("abc-123"));
        assert_ne!(ids.stamp(&mut headers), "abc-123");
    }

    #[test]
    fn the_response_keeps_a_backends_own_id() {
        let ids = ids(RequestIdConfig::default());
        let mut headers = HeaderMap::new();
        ids.answer(&mut headers, &HeaderValue::from_static("mine"));
        assert_eq!(headers["x-request-id"], "mine");
        ids.answer(&mut headers, &HeaderValue::from_static("other"));
        assert_eq!(headers["x-request-id"], "mine");
    }

    #[test]
    fn a_header_that_is_not_a_token_or_that_the_proxy_manages_is_refused() {
        for (header, words) in [
            ("x request id", "is not a header name"),
            ("", "is not a header name"),
            ("Via", "manages"),
            ("X-Forwarded-For", "manages"),
        ] {
            let mut problems = Vec::new();
            let config = RequestIdConfig {
                header: header.to_owned(),
                ..RequestIdConfig::default()
            };
            config.check(&mut problems);
            assert_eq!(problems.len(), 1, "{header}");
            assert_eq!(problems[0].path, "request_id.header");
            assert!(
                problems[0].message.contains(words),
                "{header}: {problems:?}"
            );
        }
        let mut problems = Vec::new();
        RequestIdConfig {
            header: "X-Correlation-ID".to_owned(),
            ..RequestIdConfig::default()
        }
        .check(&mut problems);
        assert!(problems.is_empty(), "{problems:?}");
    }
}
