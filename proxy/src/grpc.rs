//! gRPC responses judged by their status: a failing gRPC call is an HTTP 200 whose `grpc-status`
//! (in the response head for a trailers-only response, else in the trailers after the body) is not
//! 0 (gRPC over HTTP/2, <https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md>).
//!
//! The codes counted as the backend's errors (next to 5xx responses) are the server-fault ones of
//! the gRPC status code list (<https://grpc.github.io/grpc/core/md_doc_statuscodes.html>): exactly
//! the codes that `google/rpc/code.proto` maps to an HTTP 5xx status, see [`SERVER_FAULT_CODES`].
//! Client-fault codes (INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED, RESOURCE_EXHAUSTED, ...,
//! mapped to 4xx) are not counted, as 4xx responses are not.

use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue};

/// The gRPC status codes counted as errors of the backend, with their HTTP mapping from
/// `google/rpc/code.proto`: UNKNOWN 2 (500), DEADLINE_EXCEEDED 4 (504), UNIMPLEMENTED 12 (501, a
/// method the new version lost), INTERNAL 13 (500), UNAVAILABLE 14 (503), DATA_LOSS 15 (500).
pub const SERVER_FAULT_CODES: [u32; 6] = [2, 4, 12, 13, 14, 15];

/// The trailer (or header) carrying the call's status code, in ASCII decimal.
const GRPC_STATUS: &str = "grpc-status";

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

fn code(value: &HeaderValue) -> Option<u32> {
    std::str::from_utf8(value.as_bytes())
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
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
}
