//! The body of an HTTP/1.x request the proxy answered itself before reading it (trial 8, H1).
//!
//! hyper writes the proxy's answer (a 503 "no endpoint", 400, 408, 502...) and, once the request
//! body it still owed the service is dropped, reads on only what is already in its buffer; when the
//! rest has not arrived it closes the connection after the answer. Left at that, the answer does
//! not say so, and a keep-alive client sends its next request on a connection that is closing:
//! it gets an end of stream, and cannot safely retry a POST. RFC 9112 §9.6: a server that will
//! close after a response sends `Connection: close` in it.
//!
//! So every local answer to an HTTP/1.x request whose body was pending gets one of two fates:
//! - the request was refused before any attempt (nothing of its body was read), its body has a
//!   `Content-Length` of at most [`DRAIN_MAX_BYTES`] and no `Expect: 100-continue` waits for a
//!   go-ahead: the body is drained (read and discarded, each read within
//!   `limits.body_read_timeout`) and the connection stays open for the next request, as nginx
//!   discards the body of a request it answered itself to keep its connection;
//! - else (a larger or chunked body, an expectation, or an answer after an attempt that may have
//!   read part of it: 502, 504, 408...) the answer carries `Connection: close`, and the lingering
//!   close ([`crate::linger`]) follows.
//!
//! A drain that gives up (the client stalls past `limits.body_read_timeout`, or sends more than
//! announced) closes the connection as before; the client had stopped its own upload by then.
//! HTTP/2 needs none of this: an answer ends its stream (RFC 9113 §8.1), the connection stays.
//!
//! A **backend's** answer that arrives before the whole request body went upstream (its
//! [`crate::upload::Upload`] has not ended: the backend answered early, as a 401 to an upload, or
//! any hyper handler that ignores the body, may; trial 11, L1) is forwarded to an HTTP/1.x client
//! with `Connection: close` too, whatever the size of the rest (`forward::attempted`). The rest of
//! the body is the upstream exchange's, not the proxy's, when that answer goes out: the backend may
//! still read it (and sometimes does), or let it go at any time after (an HTTP/1.1 backend closes
//! or resets its connection, an h2c one resets the stream with `NO_ERROR` after its complete
//! response, RFC 9113 §8.1), and then hyper closes the client connection once the rest was not
//! read. Draining the rest instead would need the proxy to take the body back from the upstream
//! exchange at that moment, which may come long after the answer was sent, so the answer could
//! not say whether the connection stays. The upstream connection of such an exchange is not
//! reused either (`upstream::ResponseBody::not_reused`). A backend that reads the whole body
//! before answering (the common case) is unaffected: the body had ended when its answer came, and
//! both connections stay.

use std::time::Duration;

use http::header::{CONNECTION, EXPECT};
use http::{HeaderValue, Response, Version};
use http_body::Body as _;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;

/// The largest announced body (`Content-Length`, in bytes) the proxy reads and discards to keep
/// the connection after answering a request itself; a larger one gets `Connection: close`.
pub const DRAIN_MAX_BYTES: u64 = 64 * 1024;

/// Whether a request of `version` with `body` may still have body bytes the proxy has not read:
/// HTTP/1.x with a body that is not already at its end.
pub(crate) fn pending(version: Version, body: &Incoming) -> bool {
    version < Version::HTTP_2 && !body.is_end_stream()
}

/// Marks `response` as the connection's last (RFC 9112 §9.6): hyper closes after it.
pub(crate) fn close<B>(response: &mut Response<B>) {
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
}

/// Disposes of the unread `body` of a request of `version` with `headers` that the proxy refused
/// before any attempt, answered with `response`: drains a small announced body in a task of its
/// own (each read within `read_timeout`), else marks `response` with `Connection: close` (see the
/// module docs). Nothing to do for HTTP/2 or a body already at its end.
pub(crate) fn refused<B>(
    version: Version,
    headers: &http::HeaderMap,
    body: Incoming,
    read_timeout: Duration,
    response: &mut Response<B>,
) {
    if !pending(version, &body) {
        return;
    }
    let small = body
        .size_hint()
        .exact()
        .is_some_and(|len| len <= DRAIN_MAX_BYTES);
    if !small || headers.contains_key(EXPECT) {
        close(response);
        return;
    }
    tokio::spawn(drain(body, read_timeout));
}

/// Reads `body` to its end and discards it; gives up (dropping it, which makes hyper close the
/// connection) when a read waits `read_timeout`, the body fails, or more than
/// [`DRAIN_MAX_BYTES`] arrive.
async fn drain(mut body: Incoming, read_timeout: Duration) {
    let mut read = 0u64;
    loop {
        match tokio::time::timeout(read_timeout, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                read += frame.data_ref().map_or(0, |data| data.len() as u64);
                if read > DRAIN_MAX_BYTES {
                    return;
                }
            }
            Ok(None) => return,
            Ok(Some(Err(_))) | Err(_) => {
                tracing::debug!(
                    read,
                    "unread request body: drain given up, connection closes"
                );
                return;
            }
        }
    }
}
