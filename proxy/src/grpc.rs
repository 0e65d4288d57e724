//! gRPC responses judged by their status: a failing gRPC call is an HTTP 200 whose `grpc-status`
//! (in the response head for a trailers-only response, else in the trailers after the body) is not
//! 0 (gRPC over HTTP/2, <https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md>).
//!
//! The codes counted as the backend's errors (next to 5xx responses) are the server-fault ones of
//! the gRPC status code list (<https://grpc.github.io/grpc/core/md_doc_statuscodes.html>): exactly
//! the codes that `google/rpc/code.proto` maps to an HTTP 5xx status, see [`SERVER_FAULT_CODES`].
//! Client-fault codes (INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED, RESOURCE_EXHAUSTED, ...,
//! mapped to 4xx) are not counted, as 4xx responses are not.
//!
//! The proxy's own answers to a gRPC client (a connect failure, no endpoint, a shed request, a
//! timeout) are [`local_reply`]: a trailers-only response with a `grpc-status` and a
//! `grpc-message`, as Envoy answers gRPC clients, rather than an HTTP error status that a gRPC
//! client can only report as "HTTP status 502".

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, Response, StatusCode};

use crate::body::ProxyBody;

/// The gRPC status codes counted as errors of the backend, with their HTTP mapping from
/// `google/rpc/code.proto`: UNKNOWN 2 (500), DEADLINE_EXCEEDED 4 (504), UNIMPLEMENTED 12 (501, a
/// method the new version lost), INTERNAL 13 (500), UNAVAILABLE 14 (503), DATA_LOSS 15 (500).
pub const SERVER_FAULT_CODES: [u32; 6] = [2, 4, 12, 13, 14, 15];

/// The trailer (or header) carrying the call's status code, in ASCII decimal.
const GRPC_STATUS: &str = "grpc-status";

/// The trailer (or header) carrying the call's status message, percent-encoded.
const GRPC_MESSAGE: &str = "grpc-message";

/// True when `headers` announce a gRPC response: content-type `application/grpc` or
/// `application/grpc+<codec>` / `application/grpc;<params>` (gRPC over HTTP/2, "Content-Type";
/// media types compare case-insensitively, RFC 9110 §8.3.1). `application/grpc-web` is not gRPC
/// over HTTP/2 and is left out.
#[inline]
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers.get(CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes();
        let prefix = b"application/grpc";
        v.len() >= prefix.len()
            && v[..prefix.len()].eq_ignore_ascii_case(prefix)
            && matches!(v.get(prefix.len()), None | Some(b'+' | b';'))
    })
}

/// The request field carrying a gRPC call's deadline.
const GRPC_TIMEOUT: &str = "grpc-timeout";

/// The call's deadline from a gRPC request's `grpc-timeout` field: `TimeoutValue TimeoutUnit`, 1
/// to 8 ASCII digits then `H`, `M`, `S`, `m`, `u` or `n` (hours down to nanoseconds; gRPC over
/// HTTP/2, "Requests"). `None` when the field is absent, malformed, or the request is not gRPC
/// ([`is_grpc`]).
pub fn timeout(headers: &HeaderMap) -> Option<std::time::Duration> {
    use std::time::Duration;
    let value = headers.get(GRPC_TIMEOUT)?.as_bytes();
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    let d = match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    };
    is_grpc(headers).then_some(d)
}

/// What the `grpc-status` field of `fields` (a response head or trailers) says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No `grpc-status` field.
    Absent,
    /// A status that is not the server's fault (OK included).
    Fine,
    /// A [`SERVER_FAULT_CODES`] status, or one that does not parse as a decimal code (a client
    /// reads it as UNKNOWN).
    ServerFault,
}

/// Reads the `grpc-status` field of `fields`.
pub fn verdict(fields: &HeaderMap) -> Verdict {
    match fields.get(GRPC_STATUS) {
        None => Verdict::Absent,
        Some(value) => match code(value) {
            Some(code) if !SERVER_FAULT_CODES.contains(&code) => Verdict::Fine,
            _ => Verdict::ServerFault,
        },
    }
}

/// gRPC status UNAVAILABLE: the service cannot be reached now, a client may retry.
pub const UNAVAILABLE: u32 = 14;

/// gRPC status DEADLINE_EXCEEDED: no answer in time; the call may have been carried out.
pub const DEADLINE_EXCEEDED: u32 = 4;

/// The gRPC status for an HTTP `status`, by gRPC's table for HTTP errors that reach a gRPC client
/// (<https://github.com/grpc/grpc/blob/master/doc/http-grpc-status-mapping.md>, the same table as
/// Envoy's `Grpc::Utility::httpToGrpcStatus`): 400 → INTERNAL 13, 401 → UNAUTHENTICATED 16,
/// 403 → PERMISSION_DENIED 7, 404 → UNIMPLEMENTED 12, 429/502/503/504 → UNAVAILABLE 14, any
/// other → UNKNOWN 2.
pub fn code_for_http(status: StatusCode) -> u32 {
    match status.as_u16() {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502 | 503 | 504 => UNAVAILABLE,
        _ => 2,
    }
}

/// The proxy's own answer to a gRPC client: a trailers-only response (gRPC over HTTP/2,
/// "Responses": one HEADERS frame ending the stream) with HTTP status 200,
/// `content-type: application/grpc`, `grpc-status: <code>` and `grpc-message: <message>`
/// percent-encoded as gRPC requires ([`percent_encode`]). The caller adds what else the HTTP
/// answer would carry (`Retry-After`).
pub fn local_reply(code: u32, message: &str) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::full(Bytes::new()));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(GRPC_STATUS, HeaderValue::from(code));
    // Percent-encoded text is visible ASCII and space only, always a valid header value.
    if let Ok(message) = HeaderValue::from_str(&percent_encode(message)) {
        headers.insert(GRPC_MESSAGE, message);
    }
    response
}

/// `text` as a `grpc-message` value (gRPC over HTTP/2, "Status-Message"): UTF-8 bytes, each
/// outside `%x20-%x24 / %x26-%x7E` (space and visible ASCII but `%`) written `%XX`.
pub fn percent_encode(text: &str) -> String {
    use std::fmt::Write as _;
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b' '..=b'~' if byte != b'%' => encoded.push(char::from(byte)),
            _ => {
                let _ = write!(encoded, "%{byte:02X}");
            }
        }
    }
    encoded
}

fn code(value: &HeaderValue) -> Option<u32> {
    std::str::from_utf8(value.as_bytes())
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn a_grpc_timeout_reads_as_its_duration_and_anything_else_as_none() {
        let head = |pairs: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(
                    http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            h
        };
        let grpc = ("content-type", "application/grpc");
        for (value, want) in [
            ("90S", Some(Duration::from_secs(90))),
            ("2H", Some(Duration::from_secs(7200))),
            ("3M", Some(Duration::from_secs(180))),
            ("250m", Some(Duration::from_millis(250))),
            ("7u", Some(Duration::from_micros(7))),
            ("99999999n", Some(Duration::from_nanos(99_999_999))),
            ("123456789S", None),
            ("S", None),
            ("10s", None),
            ("-1S", None),
            ("1.5S", None),
        ] {
            assert_eq!(
                timeout(&head(&[grpc, ("grpc-timeout", value)])),
                want,
                "{value}"
            );
        }
        assert_eq!(timeout(&head(&[("grpc-timeout", "90S")])), None, "not gRPC");
        assert_eq!(timeout(&head(&[grpc])), None);
    }

    use super::*;

    fn fields(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn grpc_content_types_are_recognised() {
        for ct in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC;x=1",
        ] {
            assert!(is_grpc(&fields(&[("content-type", ct)])), "{ct}");
        }
        for ct in [
            "application/grpc-web",
            "application/grpcx",
            "text/plain",
            "application/json",
        ] {
            assert!(!is_grpc(&fields(&[("content-type", ct)])), "{ct}");
        }
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn only_server_fault_codes_count() {
        assert_eq!(verdict(&HeaderMap::new()), Verdict::Absent);
        for code in 0..=16u32 {
            let value = HeaderValue::from(code);
            let mut map = HeaderMap::new();
            map.insert(GRPC_STATUS, value);
            let expected = if [2, 4, 12, 13, 14, 15].contains(&code) {
                Verdict::ServerFault
            } else {
                Verdict::Fine
            };
            assert_eq!(verdict(&map), expected, "code {code}");
        }
        assert_eq!(
            verdict(&fields(&[("grpc-status", "thirteen")])),
            Verdict::ServerFault
        );
    }

    #[test]
    fn http_statuses_map_as_grpcs_table_says() {
        for (http, grpc) in [
            (400, 13),
            (401, 16),
            (403, 7),
            (404, 12),
            (408, 2),
            (429, 14),
            (431, 2),
            (500, 2),
            (502, 14),
            (503, 14),
            (504, 14),
        ] {
            let status = StatusCode::from_u16(http).unwrap();
            assert_eq!(code_for_http(status), grpc, "{http}");
        }
    }

    #[test]
    fn a_local_reply_is_trailers_only_with_an_encoded_message() {
        let response = local_reply(UNAVAILABLE, "crossfade: 100% down (route é)\n");
        assert_eq!(response.status(), 200);
        let headers = response.headers();
        assert_eq!(headers[CONTENT_TYPE], "application/grpc");
        assert_eq!(headers[GRPC_STATUS], "14");
        assert_eq!(
            headers[GRPC_MESSAGE],
            "crossfade: 100%25 down (route %C3%A9)%0A"
        );
        assert!(is_grpc(headers));
        assert_eq!(verdict(headers), Verdict::ServerFault);
        assert!(http_body::Body::is_end_stream(response.body()), "no body");
    }
}
