//! 1xx informational responses from a backend, forwarded to the client: RFC 9110 §15.2, "A proxy
//! MUST forward 1xx responses unless the proxy itself requested the generation of the 1xx
//! response". `103 Early Hints` (RFC 8297) is the one that matters most today: a backend sends the
//! page's `Link: <...>; rel=preload` fields while it renders, and a browser fetches them meanwhile
//! (browsers act on it over HTTP/2 and later). `102 Processing` (RFC 2518) and any other 1xx go
//! the same way.
//!
//! Not forwarded here: `100 Continue`, which the proxy asked for itself ([`crate::expect`]: the
//! client gets its own 100 from the proxy's server when its body is wanted), and `101 Switching
//! Protocols`, a final answer to an upgrade ([`crate::tunnel`]). Each forwarded response loses its
//! hop-by-hop fields (RFC 9110 §7.6.1) and gets this proxy's `Via` entry (§7.6.3, [`crate::via`]),
//! as a final response does. An HTTP/1.0 client gets none
//! (RFC 9110 §15.2; hyper drops them), and neither does a client whose final response has started
//! (a 1xx cannot follow it).
//!
//! How they travel: the client's side is a hyper `InformationalSender` (vendor/hyper patch 24),
//! one per HTTP/1.1 connection ([`crate::server`] keeps it in the connection's state) or one per
//! HTTP/2 request that can use it ([`wants_informational`], in the request's extensions). The backend's side is a [`Relay`] per upstream
//! HTTP/1.1 connection, whose connection-wide callback (vendor/hyper patch 25) hyper calls with
//! each 1xx it reads; each request sent on the connection first points the relay at its client
//! ([`Relay::point`]), one uncontended lock. An h2c backend's 1xx come through the request's own
//! callback ([`on_h2c_request`]).

use std::sync::{Arc, Mutex, PoisonError};

use http::header::{ACCEPT, VIA};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version};
use hyper::ext::InformationalSender;

use crate::headers::{strip_hop_by_hop, Direction};

/// Where the 1xx responses of the request in flight on one upstream HTTP/1.1 connection go.
pub(crate) struct Relay {
    to: Mutex<Option<InformationalSender>>,
    /// This proxy's `Via` entries: what it forwards from the connection gets `1.1 <pseudonym>`.
    via: Arc<crate::via::Lazy>,
}

impl Relay {
    /// A relay pointed at no client yet, whose forwarded responses get `via`'s entry.
    pub(crate) fn new(via: Arc<crate::via::Lazy>) -> Relay {
        Relay {
            to: Mutex::new(None),
            via,
        }
    }

    /// The request about to be sent on the connection has `to` as its client's sender (`None`:
    /// its client gets none, and the last request's client no longer does).
    pub(crate) fn point(&self, to: Option<InformationalSender>) {
        *self.to.lock().unwrap_or_else(PoisonError::into_inner) = to;
    }

    /// Forwards a backend's 1xx (its `status` and `headers`) to the client of the request in
    /// flight, if it is one to forward ([`forwardable`]).
    pub(crate) fn forward(&self, status: StatusCode, headers: &HeaderMap) {
        let to = self.to.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(to) = to.as_ref() {
            let via = self.via.get().map(|via| via.value(Version::HTTP_11));
            send(to, status, headers, via);
        }
    }
}

/// Registers on `request` (to an h2c backend) a callback that forwards its 1xx responses to `to`,
/// with `via` (this proxy's entry, `2 <pseudonym>`, or `None` when `via` is off). One allocation
/// per request, paid only by requests to h2c backends.
pub(crate) fn on_h2c_request<B>(
    request: &mut Request<B>,
    to: InformationalSender,
    via: Option<HeaderValue>,
) {
    hyper::ext::on_informational(request, move |response| {
        send(&to, response.status(), response.headers(), via.as_ref());
    });
}

/// Whether an HTTP/2 request (its `method` and `headers`) gets the 1xx responses of its backend:
/// a `GET` or `HEAD` that accepts HTML (a browser's navigation: the requests browsers act on
/// `103 Early Hints` for, HTML Standard "process early hint headers"), and any other method
/// (uploads, `Expect`, WebDAV's `102 Processing`) except gRPC's (`application/grpc*`: gRPC
/// defines no 1xx). Each HTTP/2 request that gets them pays for its sender (hyper's extension map
/// and a small shared state: up to ~1,100 instructions, 2 % of an h2c request,
/// docs/bench-2026-12-04-informational.md), which a `GET` for an API or an asset, the
/// bulk of HTTP/2 traffic, does not need; a 1xx for a request left out is dropped, as before.
/// HTTP/1.1 requests all get them (one sender per connection).
pub(crate) fn wants_informational(method: &Method, headers: &HeaderMap) -> bool {
    if method == Method::GET || method == Method::HEAD {
        return headers
            .get_all(ACCEPT)
            .iter()
            .any(|value| contains_ignore_case(value.as_bytes(), b"text/html"));
    }
    !crate::grpc::is_grpc(headers)
}

/// Whether `haystack` holds `needle`, ASCII case ignored.
fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window.eq_ignore_ascii_case(needle))
}

/// Whether a backend's 1xx with `status` goes to the client: not 100 (the proxy's own request)
/// nor 101 (an upgrade's final answer).
pub(crate) fn forwardable(status: StatusCode) -> bool {
    status.is_informational()
        && status != StatusCode::CONTINUE
        && status != StatusCode::SWITCHING_PROTOCOLS
}

/// Sends the 1xx `status` with `headers`, less their hop-by-hop fields and with this proxy's `via`
/// entry appended (RFC 9110 §7.6.3: a proxy MUST send `Via` in each message it forwards, 1xx
/// included), to `to`; a response `to` refuses (its final response started, or 16 wait
/// unwritten) is dropped.
fn send(
    to: &InformationalSender,
    status: StatusCode,
    headers: &HeaderMap,
    via: Option<&HeaderValue>,
) {
    if !forwardable(status) {
        return;
    }
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.headers_mut() = headers.clone();
    strip_hop_by_hop(response.headers_mut(), Direction::Response);
    if let Some(via) = via {
        response.headers_mut().append(VIA, via.clone());
    }
    if to.send(response).is_err() {
        tracing::debug!(%status, "a backend's 1xx response was not forwarded: the client's final response started");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http2_requests_get_1xx_when_they_are_navigations_or_carry_content_other_than_grpc() {
        let with = |pairs: &[(&'static str, &'static str)]| {
            let mut headers = HeaderMap::new();
            for (name, value) in pairs {
                headers.append(*name, http::HeaderValue::from_static(value));
            }
            headers
        };
        let navigation = with(&[("accept", "text/html,application/xhtml+xml,*/*;q=0.8")]);
        assert!(wants_informational(&Method::GET, &navigation));
        assert!(wants_informational(
            &Method::HEAD,
            &with(&[("accept", "Text/HTML")])
        ));
        assert!(wants_informational(
            &Method::GET,
            &with(&[("accept", "image/webp"), ("accept", "text/html")])
        ));
        assert!(!wants_informational(
            &Method::GET,
            &with(&[("accept", "application/json")])
        ));
        assert!(!wants_informational(&Method::GET, &HeaderMap::new()));
        assert!(wants_informational(&Method::POST, &HeaderMap::new()));
        assert!(wants_informational(
            &Method::from_bytes(b"PROPFIND").unwrap(),
            &HeaderMap::new()
        ));
        let grpc = with(&[("content-type", "application/grpc+proto")]);
        assert!(!wants_informational(&Method::POST, &grpc));
    }

    #[test]
    fn only_informational_answers_other_than_100_and_101_are_forwarded() {
        for code in [102, 103, 104, 199] {
            assert!(forwardable(StatusCode::from_u16(code).unwrap()), "{code}");
        }
        for code in [100, 101, 200, 204, 304, 404, 500] {
            assert!(!forwardable(StatusCode::from_u16(code).unwrap()), "{code}");
        }
    }
}
