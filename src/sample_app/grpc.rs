//! gRPC calls (`content-type: application/grpc`): any method, answered as a unary call whose
//! reply names the version, so that a gRPC client (or an h2 one) can roll out through the proxy.
//!
//! The reply is one length-prefixed message (gRPC over HTTP/2, "Responses":
//! <https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md>) encoding `message Reply {
//! string version = 1; }` in protobuf, then the trailers `grpc-status: 0`. An injected error
//! (`--error-rate`) is a trailers-only response with `grpc-status: 13` (INTERNAL), which the
//! proxy counts as a server fault, as it counts a 500.

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};

use super::handler::ResBody;

/// The gRPC status of an injected error: INTERNAL, a server fault.
const INTERNAL: &str = "13";

/// The reply to a call: `Reply { version }` framed, then `grpc-status: 0` in the trailers.
pub(super) fn reply(version: &str) -> Response<ResBody> {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let body = Full::new(frame(version))
        .with_trailers(std::future::ready(Some(Ok(trailers))))
        .boxed();
    answer(body)
}

/// A trailers-only answer (the status in the head, no message) for an injected error.
pub(super) fn injected_error() -> Response<ResBody> {
    let mut res = answer(Empty::new().boxed());
    let headers = res.headers_mut();
    headers.insert("grpc-status", HeaderValue::from_static(INTERNAL));
    headers.insert(
        "grpc-message",
        HeaderValue::from_static("injected%20error%20(--error-rate)"),
    );
    res
}

/// A 200 with `content-type: application/grpc` and `body`.
fn answer(body: ResBody) -> Response<ResBody> {
    let mut res = Response::new(body);
    *res.status_mut() = StatusCode::OK;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    res
}

/// One uncompressed length-prefixed message holding protobuf field 1 (a string): `version`.
fn frame(version: &str) -> Bytes {
    let mut message = BytesMut::new();
    message.put_u8(0x0a); // field 1, wire type 2 (length-delimited)
    put_varint(&mut message, version.len() as u64);
    message.put_slice(version.as_bytes());
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.put_u8(0); // not compressed
    framed.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    framed.put_slice(&message);
    framed.freeze()
}

/// Protobuf's base-128 varint.
fn put_varint(buf: &mut BytesMut, mut n: u64) {
    while n >= 0x80 {
        buf.put_u8((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    buf.put_u8(n as u8);
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_reply_frames_the_version_as_a_protobuf_string_field() {
        assert_eq!(
            &super::frame("v2")[..],
            &[0, 0, 0, 0, 4, 0x0a, 2, b'v', b'2']
        );
    }
}
