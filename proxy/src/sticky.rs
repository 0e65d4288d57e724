//! Sticky, monotone assignment of users to backends, and the tester override header.
//!
//! A route with `sticky:` takes a key from each request (a named header, a cookie, or the client's
//! address), hashes it to a **bucket** in `0..10000` with [`bucket`], and sends the request to green
//! iff `bucket < green's weight` ([`pick`]). The bucket depends on the key alone, so:
//!
//! - raising green's weight only moves users from blue to green, never back (monotone);
//! - lowering it to 0 (abort, rollback) moves every user back to blue at once;
//! - every proxy replica and every version of Crossfade computes the same bucket, with no shared
//!   state: the hash is seedless and fixed (see [`bucket`]); changing it is a breaking change.
//!
//! Requests without a key fall back to the per-request weighted pick.
//!
//! Cookie mode with `set: true` mints a random key for a request that carries no valid one and sets
//! it site-wide (`Path=/`, case C08), so that a page and the assets it loads hash the same way. The
//! cookie holds a key, never a backend name: a cookie can therefore never pin a user to a backend
//! whose weight is 0 (C08's "ignored when it names a backend with weight 0" rule holds by
//! construction), and old cookies keep working after blue is retired.

use http::header::{HeaderMap, HeaderName, HeaderValue, COOKIE};
use serde::{Deserialize, Serialize};

use crate::config::Problem;
use crate::error::Error;
use crate::rng;
use crate::table::{Backend, Route};
use crate::weight::{draw_bp, Slot, Weights, FULL_BP};

/// `routes[].sticky`: where a request's stickiness key comes from. Exactly one of `header`,
/// `cookie` and `client_address` must be set.
///
/// ```yaml
/// sticky: { header: X-User }            # the header's value is the key
/// sticky: { cookie: session }           # the cookie's value is the key
/// sticky: { cookie: cf_user, set: true } # the proxy mints the cookie when it is missing
/// sticky: { client_address: true }      # the client's IP address is the key
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    default,
    deny_unknown_fields,
    expecting = "a map with one of header, cookie or client_address"
)]
pub struct StickyConfig {
    /// Name of a request header whose (first) value is the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// Name of a cookie whose value is the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    /// Use the client's IP address as the key: with `trust_forwarded_for` (the default) the
    /// right-most `X-Forwarded-For` element the request arrived with (what the trusted load
    /// balancer in front appended), else, or without that header, the TCP peer's.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub client_address: bool,
    /// Cookie mode only: when a request has no valid cookie, mint a random key and answer with
    /// `Set-Cookie: NAME=<key>; Path=/; HttpOnly; SameSite=Lax` (plus `Secure` under `tls`,
    /// RFC 6265 §4.1.2.5). Default false.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub set: bool,
}

/// Where a built route takes its key from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sticky {
    /// The first value of this header.
    Header(HeaderName),
    /// The value of this cookie; with `set`, minted when missing.
    Cookie {
        /// The cookie's name.
        name: Box<str>,
        /// Whether the proxy mints and sets the cookie.
        set: bool,
        /// Whether the minted cookie carries `Secure` (the listener is TLS: RFC 6265 §4.1.2.5,
        /// the browser then never sends it over cleartext).
        secure: bool,
    },
    /// The client's IP address.
    ClientAddress,
}

/// The backend chosen for a request, and what the response must carry for that choice to stick.
#[derive(Debug)]
pub struct Assignment<'t, U> {
    /// Where the request goes.
    pub backend: &'t Backend<U>,
    /// The tester override chose it: retries stay on this backend.
    pub forced: bool,
    /// A `Set-Cookie` value for the response (cookie mode with `set`, key minted now).
    pub set_cookie: Option<HeaderValue>,
    /// No backend the request may take had an endpoint that health admits, and its route fails
    /// open (`routes[].fail_open`): its endpoint is picked among those health holds out too
    /// (see `health::fail_open`), for its retry as well. Never set by [`assign`].
    pub fail_open: bool,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
/// Longest key taken from a request; longer values are treated as absent.
const MAX_KEY_LEN: usize = 256;

/// The bucket of a stickiness key, in `0..10000`: `fmix64(fnv1a64(key)) % 10000`.
///
/// FNV-1a 64 (offset basis `0xcbf29ce484222325`, prime `0x100000001b3`) over the key's bytes, then
/// MurmurHash3's 64-bit finaliser so that keys differing only in their last bytes spread over all
/// buckets. No seed, no process state: every replica and every release computes the same bucket.
pub fn bucket(key: &[u8]) -> u32 {
    let hash = key.iter().fold(FNV_OFFSET, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    });
    (fmix64(hash) % u64::from(FULL_BP)) as u32
}

fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

/// The sticky pick: green iff `bucket < green`, the same rule as the per-request pick with the
/// random draw replaced by the key's bucket. For a fixed bucket the answer is monotone in green's
/// weight. `None` when the route is disabled.
pub fn pick(weights: Weights, bucket: u32) -> Option<Slot> {
    weights.pick(bucket)
}

/// Whether `value` can be a key: 1 to 256 bytes of RFC 6265 `cookie-octet`s (visible ASCII except
/// `"`, `,`, `;` and `\`). Minted keys always are; anything else in a cookie is ignored.
pub fn valid_key(value: &[u8]) -> bool {
    let octet = |b: &u8| matches!(b, 0x21 | 0x23..=0x2b | 0x2d..=0x3a | 0x3c..=0x5b | 0x5d..=0x7e);
    (1..=MAX_KEY_LEN).contains(&value.len()) && value.iter().all(octet)
}

/// A fresh random key: 128 bits as 32 lowercase hex digits. Not a secret (it only spreads users
/// over buckets), so the fast per-thread generator is enough.
pub fn new_key() -> String {
    (0..4)
        .map(|_| format!("{:08x}", rng::thread_u32()))
        .collect()
}

/// The `Set-Cookie` value that stores `key` in cookie `name` for the whole site; `secure` adds
/// `Secure` (for a TLS listener, RFC 6265 §4.1.2.5).
pub fn set_cookie(name: &str, key: &str, secure: bool) -> Option<HeaderValue> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::try_from(format!(
        "{name}={key}; Path=/; HttpOnly; SameSite=Lax{secure}"
    ))
    .ok()
}

/// The value of cookie `name` in the request's `Cookie` headers (RFC 6265 §5.4), if any.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b';'))
        .filter_map(|pair| {
            let eq = pair.iter().position(|&b| b == b'=')?;
            let (n, v) = (pair[..eq].trim_ascii(), pair[eq + 1..].trim_ascii());
            (n == name.as_bytes()).then_some(v)
        })
        .next()
}

/// Chooses the backend of `route` for a request: the override header first, then the sticky key,
/// then the per-request weighted draw.
///
/// # Errors
/// [`Error::BadOverride`] for an override value other than `blue` or `green`;
/// [`Error::RouteDisabled`] when the route's weights are both 0 and nothing forced a backend.
pub fn assign<'t, U>(
    route: &'t Route<U>,
    headers: &HeaderMap,
    peer: &[u8],
    trust_forwarded_for: bool,
) -> Result<Assignment<'t, U>, Error> {
    if let Some(slot) = forced(route, headers)? {
        let backend = route.backend(slot);
        return Ok(Assignment {
            backend,
            forced: true,
            set_cookie: None,
            fail_open: false,
        });
    }
    let (key_bucket, set_cookie) = match route.sticky() {
        None => (None, None),
        Some(sticky) => sticky.bucket(headers, peer, trust_forwarded_for),
    };
    let draw = key_bucket.unwrap_or_else(|| draw_bp(rng::thread_u32()));
    let disabled = || Error::RouteDisabled {
        route: route.name().to_string(),
    };
    let slot = pick(route.weights(), draw).ok_or_else(disabled)?;
    let backend = route.backend(slot);
    Ok(Assignment {
        backend,
        forced: false,
        set_cookie,
        fail_open: false,
    })
}

/// The slot named by the route's override header, when the route has one and the request sets it.
fn forced<U>(route: &Route<U>, headers: &HeaderMap) -> Result<Option<Slot>, Error> {
    let Some(name) = route.override_header() else {
        return Ok(None);
    };
    let named = |value: &HeaderValue| {
        let value = value.as_bytes().trim_ascii();
        if value.eq_ignore_ascii_case(b"blue") {
            Some(Slot::Blue)
        } else if value.eq_ignore_ascii_case(b"green") {
            Some(Slot::Green)
        } else {
            None
        }
    };
    let bad = || Error::BadOverride {
        header: name.to_string(),
    };
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    let slot = named(first).ok_or_else(bad)?;
    // Several fields of one name are one list (RFC 9110 §5.3): they may repeat the backend, but
    // two that disagree are as ambiguous as one bad value (trial 11, L13: the first won silently).
    if values.any(|value| named(value) != Some(slot)) {
        return Err(bad());
    }
    Ok(Some(slot))
}

// === impl Sticky ===

impl Sticky {
    /// Builds the key source of a validated config.
    pub fn of(config: &StickyConfig) -> Option<Sticky> {
        if let Some(header) = &config.header {
            return HeaderName::try_from(header.as_str())
                .ok()
                .map(Sticky::Header);
        }
        if let Some(name) = &config.cookie {
            let name = name.as_str().into();
            return Some(Sticky::Cookie {
                name,
                set: config.set,
                secure: false,
            });
        }
        config.client_address.then_some(Sticky::ClientAddress)
    }

    /// Makes a minted cookie carry `Secure` (the listener is TLS).
    pub fn secure_cookie(&mut self) {
        if let Sticky::Cookie { secure, .. } = self {
            *secure = true;
        }
    }

    /// The request's bucket (`None`: no key, use the random draw) and, when a key was minted, the
    /// `Set-Cookie` value that carries it.
    ///
    /// `peer` is the TCP peer's IP; with `trust_forwarded_for` the client address is the
    /// right-most `X-Forwarded-For` element when there is one
    /// ([`crate::headers::client_address`]).
    pub fn bucket(
        &self,
        headers: &HeaderMap,
        peer: &[u8],
        trust_forwarded_for: bool,
    ) -> (Option<u32>, Option<HeaderValue>) {
        let key = match self {
            Sticky::Header(name) => headers.get(name).map(|v| v.as_bytes().trim_ascii()),
            Sticky::Cookie { name, .. } => cookie(headers, name),
            Sticky::ClientAddress => Some(crate::headers::client_address(
                headers,
                peer,
                trust_forwarded_for,
            )),
        };
        if let Some(key) = key.filter(|k| valid_key(k)) {
            return (Some(bucket(key)), None);
        }
        match self {
            Sticky::Cookie {
                name,
                set: true,
                secure,
            } => {
                let key = new_key();
                (
                    Some(bucket(key.as_bytes())),
                    set_cookie(name, &key, *secure),
                )
            }
            _ => (None, None),
        }
    }
}

// === impl StickyConfig ===

impl StickyConfig {
    /// Appends one problem per broken rule; `at` is the field path of this config.
    pub fn check(&self, at: &str, problems: &mut Vec<Problem>) {
        let sources = [
            self.header.is_some(),
            self.cookie.is_some(),
            self.client_address,
        ];
        if sources.iter().filter(|&&s| s).count() != 1 {
            let message = "set exactly one of header, cookie, client_address";
            problems.push(Problem::new(at, message));
        }
        if let Some(header) = &self.header {
            if HeaderName::try_from(header.as_str()).is_err() {
                let message = format!("{header:?} is not a valid header name");
                problems.push(Problem::new(format!("{at}.header"), message));
            }
        }
        if let Some(cookie) = &self.cookie {
            if !valid_cookie_name(cookie) {
                let message = format!("{cookie:?} is not a valid cookie name (RFC 6265 token)");
                problems.push(Problem::new(format!("{at}.cookie"), message));
            }
        }
        if self.set && self.cookie.is_none() {
            problems.push(Problem::new(
                format!("{at}.set"),
                "only applies with cookie",
            ));
        }
    }
}

/// Request headers that ordinary clients and intermediaries send: the RFC 9110 fields of
/// requests (§7.2 Host, §7.6 Connection and friends, §8 content, §10.1 request context, §11
/// authentication, §12.5 content negotiation, §13.1 preconditions, §14.2 Range), RFC 9111's
/// `Cache-Control`/`Pragma`, RFC 6265's `Cookie`, RFC 6454's `Origin`, RFC 7239's `Forwarded`
/// and the de-facto `X-Forwarded-*`, W3C Trace Context, and the proxy's own shadow marker. As an
/// `override_header` each would turn (nearly) every request into a 400 and be stripped from
/// everything forwarded.
pub(crate) const CLIENT_HEADERS: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "upgrade",
    "via",
    "content-length",
    "content-type",
    "content-encoding",
    "content-language",
    "expect",
    "from",
    "referer",
    "user-agent",
    "authorization",
    "proxy-authorization",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
    "if-range",
    "range",
    "cache-control",
    "pragma",
    "cookie",
    "origin",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "traceparent",
    "tracestate",
    "x-crossfade-shadow",
];

/// Checks `routes[].override_header`: a valid header name, and not one of the headers ordinary
/// clients send ([`CLIENT_HEADERS`], compared case-insensitively), since any value but `blue` or
/// `green` is answered 400.
pub fn check_override_header(header: &str, at: &str, problems: &mut Vec<Problem>) {
    let Ok(name) = HeaderName::try_from(header) else {
        let message = format!("{header:?} is not a valid header name");
        problems.push(Problem::new(at, message));
        return;
    };
    if CLIENT_HEADERS.contains(&name.as_str()) {
        let message = format!(
            "{header:?} is a header ordinary clients send, so their requests would be answered \
             400 (only blue or green is accepted) and lose the header; use one only testers send, \
             e.g. X-Crossfade-Backend"
        );
        problems.push(Problem::new(at, message));
    }
}

/// An RFC 6265 cookie name: an RFC 9110 token (visible ASCII without separators), 1 to 64 bytes.
fn valid_cookie_name(name: &str) -> bool {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    (1..=64).contains(&name.len()) && name.bytes().all(token)
}

#[cfg(test)]
mod tests;
