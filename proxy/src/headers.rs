//! Header hygiene at the hop boundary (RFC 9110 §7.6.1) and the forwarding headers
//! (`X-Forwarded-For`, `-Proto`, `-Host`).
//!
//! Stripping is one pass over the header names that only records what it saw; the map is touched
//! only when a hop-by-hop header is actually present, so the common request costs no allocation.

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{
    HeaderMap, HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, COOKIE, HOST,
    PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRANSFER_ENCODING, UPGRADE, VIA,
};

/// `X-Forwarded-For` (de facto standard; RFC 7239 `Forwarded` is its successor).
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `Forwarded` (RFC 7239), the standard form of `X-Forwarded-*`, which some upstreams read first.
pub const FORWARDED: HeaderName = HeaderName::from_static("forwarded");
/// `Keep-Alive` (RFC 2068 §19.7.1.1, de facto): hop-by-hop, and a backend's idle timeout
/// (`crate::upstream::keep_alive`).
pub const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Which way a message travels through the proxy: some headers are hop-by-hop in one direction only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Client → backend: also strips `Proxy-Authorization` (credentials for this proxy).
    Request,
    /// Backend → client: also strips `Proxy-Authenticate` (a challenge from that hop).
    Response,
}

/// Bits of the hop-by-hop headers seen in the scan.
const SEEN_CONNECTION: u8 = 1;
const SEEN_TE: u8 = 2;
const SEEN_OTHER: u8 = 4;
const SEEN_HOP_BY_HOP: u8 = SEEN_CONNECTION | SEEN_TE | SEEN_OTHER;
/// Bits of the request headers the proxy sets or reads after the strip ([`RequestNames`]).
const SEEN_FORWARDED_FOR: u8 = 8;
const SEEN_FORWARDED_PROTO: u8 = 16;
const SEEN_FORWARDED_HOST: u8 = 32;
const SEEN_VIA: u8 = 64;
const SEEN_FORWARDED: u8 = 128;

/// What one pass over a request's header names found: the hop-by-hop headers
/// [`strip_request_hop_by_hop`] removes, and whether `X-Forwarded-For`, `-Proto`, `-Host` and
/// `Via` are among the names, so that a request without them pays no lookup for them
/// ([`set_forwarded_scanned`], the `Via` loop check): each `HeaderMap` lookup hashes the name and
/// probes the table, and an absent name is added by one `append` (docs/bench-2026-12-02-instructions.md).
///
/// A name found may be gone later (the strip removes what `Connection` names): "present" means
/// "may be present", and such a header takes the lookup. A name not found stays absent until the
/// proxy adds it itself (stripping and removing never add a name), so a scan stays true for
/// "absent" through [`strip_request_hop_by_hop`] and removals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestNames(u8);

impl RequestNames {
    /// Scans the names of `headers`, a request's, once.
    pub fn scan(headers: &HeaderMap) -> RequestNames {
        let mut seen = 0u8;
        for name in headers.keys() {
            seen |= classify(name, Direction::Request);
        }
        RequestNames(seen)
    }

    /// Whether the request may carry a `Via` line.
    pub fn via(self) -> bool {
        self.0 & SEEN_VIA != 0
    }

    /// Whether the request may carry a `TE` line (its `trailers` token survives the strip).
    pub fn te(self) -> bool {
        self.0 & SEEN_TE != 0
    }
}

/// Names `TE` in `Connection` when `headers`, a request's for an HTTP/1.1 upstream after
/// [`strip_request_hop_by_hop`], still carry `TE` (its `trailers` token): RFC 9110 §10.1.4 asks
/// every sender of `TE` to do so, so that a next hop that does not know `TE` drops it rather than
/// passing it on. Added as a `Connection` line of its own. hyper's client keeps the upstream
/// connection alive (it reads only `close` in a request's `Connection`), and adds `close` beside
/// `te` when it means to close. Never for HTTP/2, where `Connection` makes a request malformed
/// (RFC 9113 §8.2.2; hyper's HTTP/2 client drops it, and the `TE` it names with it).
pub fn name_te_in_connection(headers: &mut HeaderMap) {
    if headers.contains_key(TE) {
        headers.append(CONNECTION, HeaderValue::from_static("te"));
    }
}

/// Headers that stay although `Connection` names them, because they are end-to-end and the proxy
/// must pass them on:
/// - `Host`: required on every HTTP/1.1 request (RFC 9112 §3.2) and what routing and
///   `X-Forwarded-Host` are made from; a client naming it would reach the backend without one
///   (its default virtual host).
/// - `Content-Length`: the message's framing (RFC 9112 §6.2), validated by hyper; it also carries
///   the length of a `HEAD` or `304` response, which has no body to count.
///
/// The `X-Forwarded-*` headers need no place here: [`set_forwarded`] sets them after the strip,
/// whatever `Connection` named (a client's own `X-Forwarded-For` chain that `Connection` names is
/// dropped, as its hop asked, and the peer is still appended).
pub const NEVER_CONNECTION_OPTIONS: [HeaderName; 2] = [HOST, CONTENT_LENGTH];

/// Removes the hop-by-hop headers of RFC 9110 §7.6.1: `Connection` and every header it names
/// (except [`NEVER_CONNECTION_OPTIONS`]), `Keep-Alive`, `Proxy-Connection`, `TE` (except the
/// `trailers` token, which RFC 9110 §10.1.4 lets a client pass on, also when `Connection` names
/// `TE` as that section asks), `Transfer-Encoding`, `Upgrade`, plus `Proxy-Authorization` on
/// requests and `Proxy-Authenticate` on responses (RFC 9110 §11.7). A `Content-Length` beside a
/// `Transfer-Encoding` goes too (RFC 9112 §6.3: the body was read by the latter).
///
/// On requests it also removes a client's [`crate::shadow::SHADOW_HEADER`]: only the proxy's own
/// mirrors may carry it (docs/shadow.md), or any client could make a backend that honours it skip
/// the side effects of a live request. It is found in the same pass, so a request without it
/// pays no lookup.
///
/// An upgrade the proxy tunnels puts `Upgrade` and `Connection: upgrade` back with [`set_upgrade`].
pub fn strip_hop_by_hop(headers: &mut HeaderMap, direction: Direction) {
    strip_scanned(headers, direction);
}

/// [`strip_hop_by_hop`] of a response from a backend, which returns the response's `Keep-Alive`
/// (its first line), removed with the rest: how long the backend keeps the connection open idle
/// (`crate::upstream::keep_alive`). Read at no cost of its own: it is taken out by the removal
/// the strip made anyway, before `Connection`'s tokens go (a backend's `Connection: keep-alive`
/// names it); a response without a hop-by-hop header returns `None` from the scan alone.
pub fn strip_response_hop_by_hop(headers: &mut HeaderMap) -> Option<HeaderValue> {
    strip_scanned(headers, Direction::Response)
}

fn strip_scanned(headers: &mut HeaderMap, direction: Direction) -> Option<HeaderValue> {
    let mut seen = 0u8;
    for name in headers.keys() {
        seen |= classify(name, direction);
    }
    strip_seen(headers, direction, seen)
}

/// Whether the scan saw a hop-by-hop name other than `Connection` and `TE` (`Transfer-Encoding`
/// among them): only then can [`transfer_coding_problem`] find anything.
pub fn saw_other_hop_by_hop(names: RequestNames) -> bool {
    names.0 & SEEN_OTHER != 0
}

/// What is wrong with a request's `Transfer-Encoding` lines ([`transfer_coding_problem`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransferCodingProblem {
    /// A coding other than `chunked` (case-insensitive, RFC 9112 §7): `gzip` in `gzip, chunked`.
    /// Answered 501.
    Unknown(String),
    /// `chunked` more than once (`chunked, chunked`, or `chunked` on two lines): RFC 9112 §6.1
    /// forbids a sender to chunk a chunked body, and hyper decodes it once, so the message's
    /// length is ambiguous between parsers (request smuggling; HAProxy refuses it too).
    /// Answered 400.
    ChunkedTwice,
}

/// The first problem of a request's `Transfer-Encoding` lines, read in one pass, if any: a coding
/// other than `chunked`, else `chunked` named more than once. hyper has already refused a request
/// whose last coding is not `chunked` (RFC 9112 §6.3).
pub fn transfer_coding_problem(headers: &HeaderMap) -> Option<TransferCodingProblem> {
    let mut chunked = 0;
    let codings = (headers.get_all(TRANSFER_ENCODING).iter())
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|coding| !coding.is_empty());
    for coding in codings {
        if !coding.eq_ignore_ascii_case(b"chunked") {
            let coding = String::from_utf8_lossy(coding).into_owned();
            return Some(TransferCodingProblem::Unknown(coding));
        }
        chunked += 1;
    }
    (chunked > 1).then_some(TransferCodingProblem::ChunkedTwice)
}

/// Whether `value` can be a Host header field: `uri-host [ ":" port ]` (RFC 9112 §3.2, RFC 3986
/// §3.2.2-3): a registered name or IPv4 address (unreserved characters, percent signs,
/// sub-delims), or an IP literal in brackets (an IPv6 address, or RFC 3986's `v...` IPvFuture),
/// then an optional `:` and decimal port; empty is allowed (a target without an authority). A
/// space, `/`, `@`, `?` or `#`, a second `:` (`a:b:c`, an IPv6 address without its brackets), a
/// port that is not digits (`a:80x`) or an unclosed bracket (`[::1`) makes it invalid (400: it
/// would reach the backend and its `X-Forwarded-Host`, and from there redirects and logs).
pub fn valid_host(value: &[u8]) -> bool {
    let (host, port) = match value.strip_prefix(b"[") {
        Some(literal) => match literal.iter().position(|&b| b == b']') {
            Some(end) if ip_literal(&literal[..end]) => (&[][..], &literal[end + 1..]),
            _ => return false,
        },
        None => match value.iter().position(|&b| b == b':') {
            Some(colon) => (&value[..colon], &value[colon..]),
            None => (value, &[][..]),
        },
    };
    let port_ok = match port.split_first() {
        None => true,
        Some((b':', digits)) => digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    };
    port_ok && host.iter().copied().all(reg_name_byte)
}

/// A byte of RFC 3986's `reg-name` (and so of an IPv4 address): unreserved, `%` of a
/// pct-encoding, or a sub-delim.
fn reg_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'%'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
        )
}

/// The inside of an IP literal's brackets (RFC 3986 §3.2.2): an IPv6 address, or an IPvFuture
/// (`v` hex digits `.` then unreserved, sub-delims or `:`).
fn ip_literal(inside: &[u8]) -> bool {
    if let Some(future) = inside.strip_prefix(b"v").or(inside.strip_prefix(b"V")) {
        let dot = future.iter().position(|&b| b == b'.');
        return dot.is_some_and(|dot| {
            let (version, rest) = (&future[..dot], &future[dot + 1..]);
            !version.is_empty()
                && version.iter().all(u8::is_ascii_hexdigit)
                && !rest.is_empty()
                && rest
                    .iter()
                    .all(|&b| b != b'%' && (reg_name_byte(b) || b == b':'))
        });
    }
    std::str::from_utf8(inside).is_ok_and(|text| text.parse::<std::net::Ipv6Addr>().is_ok())
}

/// [`strip_hop_by_hop`] of a request whose names were scanned already (`names`, taken of these
/// `headers`), without a second pass over them.
pub fn strip_request_hop_by_hop(headers: &mut HeaderMap, names: RequestNames) {
    strip_seen(headers, Direction::Request, names.0);
}

/// Strips what the scan `seen`; returns the first `Keep-Alive` line removed, if any.
fn strip_seen(headers: &mut HeaderMap, direction: Direction, seen: u8) -> Option<HeaderValue> {
    if seen & SEEN_HOP_BY_HOP == 0 {
        return None;
    }
    let other = seen & SEEN_OTHER != 0;
    // Before `Connection`'s tokens go: one may name Transfer-Encoding itself, and a backend's
    // `Connection: keep-alive` names `Keep-Alive`, which would be removed there unread.
    let framed_by_chunks = other && headers.contains_key(TRANSFER_ENCODING);
    let keep_alive = other.then(|| headers.remove(KEEP_ALIVE)).flatten();
    if seen & SEEN_CONNECTION != 0 {
        remove_connection_tokens(headers);
    }
    if seen & SEEN_TE != 0 {
        keep_only_trailers(headers);
    }
    if other {
        for name in [PROXY_CONNECTION, UPGRADE] {
            headers.remove(name);
        }
        // RFC 9112 §6.3: a message framed by both was read by its Transfer-Encoding, and an
        // intermediary that forwards it MUST first remove the Content-Length, which does not
        // describe the body as forwarded (hyper's client keeps it on a response: `5` over a
        // 2-byte chunked body failed the write to the client, which got an empty reply).
        headers.remove(TRANSFER_ENCODING);
        if framed_by_chunks {
            headers.remove(CONTENT_LENGTH);
        }
        match direction {
            Direction::Request => {
                headers.remove(PROXY_AUTHORIZATION);
                headers.remove(crate::shadow::SHADOW_HEADER);
            }
            Direction::Response => {
                headers.remove(PROXY_AUTHENTICATE);
            }
        }
    }
    keep_alive
}

#[inline]
fn classify(name: &HeaderName, direction: Direction) -> u8 {
    if name == CONNECTION {
        SEEN_CONNECTION
    } else if name == TE {
        SEEN_TE
    } else if name == TRANSFER_ENCODING
        || name == UPGRADE
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
        || (direction == Direction::Request
            && (name == PROXY_AUTHORIZATION || name == crate::shadow::SHADOW_HEADER))
        || (direction == Direction::Response && name == PROXY_AUTHENTICATE)
    {
        SEEN_OTHER
    } else if direction == Direction::Request {
        forwarding(name)
    } else {
        0
    }
}

/// The bit of a request header that [`set_forwarded_scanned`] or the `Via` loop check looks up.
#[inline]
fn forwarding(name: &HeaderName) -> u8 {
    if name == VIA {
        SEEN_VIA
    } else if name == X_FORWARDED_FOR {
        SEEN_FORWARDED_FOR
    } else if name == X_FORWARDED_PROTO {
        SEEN_FORWARDED_PROTO
    } else if name == X_FORWARDED_HOST {
        SEEN_FORWARDED_HOST
    } else if name == FORWARDED {
        SEEN_FORWARDED
    } else {
        0
    }
}

/// Removes `Connection` and the headers its tokens name (RFC 9110 §7.6.1), except
/// [`NEVER_CONNECTION_OPTIONS`] and `TE`, whose `trailers` token [`keep_only_trailers`] keeps.
///
/// Allocates nothing for a request with one `Connection` line (in a map with room for one more
/// field, which `HeaderMap::entry` wants; `forward::prepare` reserves it): the first value is
/// taken out on its own (a list is made only for further lines), and a token is looked up as
/// text (`http` lowercases it on the stack) rather than made into a `HeaderName`, which
/// allocated for every name `http` does not know, `close` among them.
fn remove_connection_tokens(headers: &mut HeaderMap) {
    let (first, more): (HeaderValue, Vec<HeaderValue>) = match headers.entry(CONNECTION) {
        http::header::Entry::Occupied(entry) => {
            let mut values = entry.remove_entry_mult().1;
            match values.next() {
                Some(first) => (first, values.collect()),
                None => return,
            }
        }
        http::header::Entry::Vacant(_) => return,
    };
    for value in std::iter::once(&first).chain(&more) {
        for token in tokens(value) {
            // Unknown or malformed names cannot be present in the map, so there is nothing to remove.
            // `TE` is left to its own rule ([`keep_only_trailers`], which runs next): RFC 9110
            // §10.1.4 makes a sender of `TE` name it here, so removing it would lose the
            // `trailers` a compliant client passes on (session 40; Envoy keeps it too).
            let never = token.eq_ignore_ascii_case(TE.as_str())
                || NEVER_CONNECTION_OPTIONS
                    .iter()
                    .any(|name| name.as_str().eq_ignore_ascii_case(token));
            if !never {
                headers.remove(token);
            }
        }
    }
}

/// Replaces `TE` with `trailers` if any value lists it, else removes it.
fn keep_only_trailers(headers: &mut HeaderMap) {
    let wants_trailers = headers
        .get_all(TE)
        .iter()
        .any(|v| tokens(v).any(|t| t.eq_ignore_ascii_case("trailers")));
    headers.remove(TE);
    if wants_trailers {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
}

/// The comma-separated tokens of a header value, trimmed, empty ones skipped.
fn tokens(value: &HeaderValue) -> impl Iterator<Item = &str> {
    value
        .to_str()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Puts back the upgrade headers of a message the proxy tunnels, after [`strip_hop_by_hop`]:
/// `Upgrade` with the `protocols` the message carried (every line, in order) and
/// `Connection: upgrade`, which RFC 9110 §7.8 requires beside `Upgrade` on each hop (and RFC 6455
/// §4.1, §4.2.2 for a WebSocket handshake). Other headers that `Connection` named stay stripped.
/// A request's `TE: trailers` is named after it by [`name_te_in_connection`], on a `Connection`
/// line of its own after `upgrade` (the tunnel does, session 41).
pub fn set_upgrade(headers: &mut HeaderMap, protocols: Vec<HeaderValue>) {
    if protocols.is_empty() {
        return;
    }
    for protocol in protocols {
        headers.append(UPGRADE, protocol);
    }
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
}

/// Sets the forwarding headers of a request going upstream.
///
/// - `X-Forwarded-For`: exactly one line. With `trust_forwarded_for`, the client's values (all lines,
///   in order) followed by `peer`: `6.6.6.6, 127.0.0.1`; without it, `peer` only, so a client cannot
///   plant an address that the backend would trust.
/// - `X-Forwarded-Proto`: the scheme the client spoke to the proxy, `https` when `https` (the
///   listener serves TLS, `tls:`), else `http`; a client's own value is replaced, never trusted.
/// - `X-Forwarded-Host`: the request's `Host` as the client sent it, when there is one.
/// - `Forwarded` (RFC 7239), when the client sent one: under the same trust rule, with this
///   proxy's `for=` element appended, or removed ([`set_rfc7239_forwarded`]).
///
/// `peer` is the client's IP as a header value, made once per connection.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    peer: &HeaderValue,
    trust_forwarded_for: bool,
    https: bool,
) {
    set_forwarded_for(headers, peer, trust_forwarded_for);
    set_rfc7239_forwarded(headers, peer, trust_forwarded_for);
    let proto = if https { "https" } else { "http" };
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    match headers.get(HOST).cloned() {
        Some(host) => headers.insert(X_FORWARDED_HOST, host),
        None => headers.remove(X_FORWARDED_HOST),
    };
}

/// [`set_forwarded`] of a request whose names were scanned (`names`, taken of these `headers`
/// before any forwarding header was added): the same lines, in the same order; a forwarding
/// header the scan did not find is appended without looking it up first (for an absent name,
/// `insert` and `append` both add one line at the end).
pub fn set_forwarded_scanned(
    headers: &mut HeaderMap,
    peer: &HeaderValue,
    (trust_forwarded_for, https): (bool, bool),
    names: RequestNames,
) {
    if names.0 & SEEN_FORWARDED_FOR != 0 {
        set_forwarded_for(headers, peer, trust_forwarded_for);
    } else {
        headers.append(X_FORWARDED_FOR, peer.clone());
    }
    if names.0 & SEEN_FORWARDED != 0 {
        set_rfc7239_forwarded(headers, peer, trust_forwarded_for);
    }
    let proto = HeaderValue::from_static(if https { "https" } else { "http" });
    if names.0 & SEEN_FORWARDED_PROTO != 0 {
        headers.insert(X_FORWARDED_PROTO, proto);
    } else {
        headers.append(X_FORWARDED_PROTO, proto);
    }
    let seen_host = names.0 & SEEN_FORWARDED_HOST != 0;
    match headers.get(HOST).cloned() {
        Some(host) if seen_host => {
            headers.insert(X_FORWARDED_HOST, host);
        }
        Some(host) => {
            headers.append(X_FORWARDED_HOST, host);
        }
        None if seen_host => {
            headers.remove(X_FORWARDED_HOST);
        }
        None => {}
    }
}

/// The client's address as this proxy knows it, for `sticky: { client_address: true }`: with
/// `trust_forwarded_for`, the right-most element of the request's `X-Forwarded-For` (the last
/// line's last non-empty element), which the trusted load balancer in front appended for the
/// connection it received, so every user behind it keeps a key of their own; without it, or when
/// the request has no `X-Forwarded-For`, `peer` (the TCP peer's IP). The same address
/// [`set_forwarded`] leaves as the entry before its own (`peer`).
pub fn client_address<'h>(headers: &'h HeaderMap, peer: &'h [u8], trust: bool) -> &'h [u8] {
    if !trust {
        return peer;
    }
    headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .rev()
        .find_map(|line| {
            line.as_bytes()
                .rsplit(|&b| b == b',')
                .map(<[u8]>::trim_ascii)
                .find(|element| !element.is_empty())
        })
        .unwrap_or(peer)
}

/// A header's lines joined into one list value (RFC 9110 §5.3), each trimmed, empty ones
/// skipped, and followed by `, ` for the element the caller appends.
fn joined_with_room<'a>(values: impl Iterator<Item = &'a HeaderValue>) -> BytesMut {
    let mut line = BytesMut::new();
    for value in values {
        let value = value.as_bytes().trim_ascii();
        if !value.is_empty() {
            line.put_slice(value);
            line.put_slice(b", ");
        }
    }
    line
}

fn set_forwarded_for(headers: &mut HeaderMap, peer: &HeaderValue, trust: bool) {
    let mut entry = match headers.entry(X_FORWARDED_FOR) {
        http::header::Entry::Vacant(entry) => {
            entry.insert(peer.clone());
            return;
        }
        http::header::Entry::Occupied(entry) => entry,
    };
    if !trust {
        entry.insert(peer.clone());
        return;
    }
    let mut line = joined_with_room(entry.iter());
    line.put_slice(peer.as_bytes());
    // Joined valid values stay valid; fall back to the peer alone rather than fail the request.
    let joined = HeaderValue::from_maybe_shared(line.freeze()).unwrap_or_else(|_| peer.clone());
    entry.insert(joined);
}

/// A client's `Forwarded` (RFC 7239) under the `X-Forwarded-For` rule, so that no address the
/// client wrote passes as one this proxy vouches for (case C19): with `trust`, its elements (all
/// lines, in order) and then this proxy's `for=<peer>` (an IPv6 address quoted in brackets, §6),
/// in one line, the right-most element being the proxy's; without `trust`, removed. A request
/// without `Forwarded` gets none (its `X-Forwarded-*` say the same).
fn set_rfc7239_forwarded(headers: &mut HeaderMap, peer: &HeaderValue, trust: bool) {
    let http::header::Entry::Occupied(mut entry) = headers.entry(FORWARDED) else {
        return;
    };
    if !trust {
        entry.remove_entry_mult();
        return;
    }
    let mut line = joined_with_room(entry.iter());
    let ip = peer.as_bytes();
    match ip.contains(&b':') {
        true => {
            line.put_slice(b"for=\"[");
            line.put_slice(ip);
            line.put_slice(b"]\"");
        }
        false => {
            line.put_slice(b"for=");
            line.put_slice(ip);
        }
    }
    match HeaderValue::from_maybe_shared(line.freeze()) {
        Ok(joined) => {
            entry.insert(joined);
        }
        // Joined valid values stay valid; rather than pass a line it cannot vouch for, drop it.
        Err(_) => {
            entry.remove_entry_mult();
        }
    }
}

/// Joins the `cookie` fields of an HTTP/2 request into one, separated by `"; "`, for an HTTP/1.1
/// hop: an HTTP/2 client may split its cookies into several fields ("crumbs", for HPACK), which
/// "MUST be concatenated into a single octet string using the two-octet delimiter of 0x3b, 0x20
/// ("; ") before being passed into a non-HTTP/2 context, such as an HTTP/1.1 connection" (RFC
/// 9113 §8.2.3); an HTTP/1.1 request carries at most one `Cookie` line (RFC 6265 §5.4), and servers
/// that join repeated fields with `,` (WSGI, Rack) would read `a=1,b=2` as one cookie. Empty
/// crumbs are dropped. A request with at most one `cookie` field is left untouched (no copy).
pub fn join_cookie_crumbs(headers: &mut HeaderMap) {
    let mut crumbs = headers.get_all(COOKIE).iter();
    if crumbs.next().is_none() || crumbs.next().is_none() {
        return;
    }
    let mut line = BytesMut::new();
    for crumb in headers.get_all(COOKIE) {
        let crumb = crumb.as_bytes().trim_ascii();
        if crumb.is_empty() {
            continue;
        }
        if !line.is_empty() {
            line.put_slice(b"; ");
        }
        line.put_slice(crumb);
    }
    // Valid values joined by "; " stay valid; were it not so, the crumbs are left as they came.
    if let Ok(joined) = HeaderValue::from_maybe_shared(line.freeze()) {
        headers.insert(COOKIE, joined);
    }
}

/// Gives an HTTP/1.0 client's request a `Host` for its HTTP/1.1 hop when it came without one: RFC
/// 9112 §3.2 requires `Host` on every HTTP/1.1 request (Go's net/http and nginx answer 400
/// without it), while HTTP/1.0 made it optional (HAProxy's default `option httpchk` sends
/// `OPTIONS / HTTP/1.0` with none). The value is the endpoint's `authority` (`ip:port`), as nginx
/// sends its `$proxy_host`. A request that has a `Host` keeps it.
pub fn default_host(headers: &mut HeaderMap, authority: Option<&http::uri::Authority>) {
    if headers.contains_key(HOST) {
        return;
    }
    if let Some(host) = authority.and_then(|a| HeaderValue::from_str(a.as_str()).ok()) {
        headers.insert(HOST, host);
    }
}

/// The client address as an `X-Forwarded-For` element: `127.0.0.1`, `::1` (RFC 5952's text
/// form, as `IpAddr`'s `Display` writes it). Made once per client connection and cloned into
/// each request's header: one allocation, the text and its reference count together
/// ([`Bytes::from_owner`]), and a clone counts a reference. `to_string` made three (a `String`
/// grown twice for an IPv4 address, then a shared header for the value); a value copied from a
/// slice makes a second one at its first clone. An IPv4 address's four numbers are written by
/// `itoa`: with a new connection per request, `Display`'s formatting machinery cost ~900
/// instructions per connection (`bench/profile.sh` with `PROFILE_CLOSE`, 2026-12-03).
pub fn peer_value(peer: std::net::IpAddr) -> HeaderValue {
    let mut text = [0u8; PeerText::MAX];
    let len = match peer {
        std::net::IpAddr::V4(v4) => ipv4_text(v4, &mut text),
        std::net::IpAddr::V6(v6) => {
            use std::io::Write as _;
            let mut cursor = std::io::Cursor::new(&mut text[..]);
            match write!(cursor, "{v6}") {
                Ok(()) => usize::try_from(cursor.position()).unwrap_or(0),
                Err(_) => 0,
            }
        }
    };
    if len > 0 {
        let owner = PeerText { text, len };
        if let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from_owner(owner)) {
            return value;
        }
    }
    HeaderValue::from_static("unknown")
}

/// `ip` in dotted-decimal form (`10.0.0.7`, as `Ipv4Addr`'s `Display` writes it) at the start of
/// `out`; returns its length (7 to 15 bytes).
fn ipv4_text(ip: std::net::Ipv4Addr, out: &mut [u8; PeerText::MAX]) -> usize {
    let mut digits = itoa::Buffer::new();
    let mut len = 0;
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            out[len] = b'.';
            len += 1;
        }
        let number = digits.format(octet).as_bytes();
        out[len..len + number.len()].copy_from_slice(number);
        len += number.len();
    }
    len
}

/// An address's text held inline, the owner of [`peer_value`]'s bytes.
struct PeerText {
    text: [u8; PeerText::MAX],
    len: usize,
}

impl PeerText {
    /// Room for the longest text form, an IPv4-mapped IPv6 address's 45 bytes.
    const MAX: usize = 48;
}

impl AsRef<[u8]> for PeerText {
    fn as_ref(&self) -> &[u8] {
        self.text.get(..self.len).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;
