//! The PROXY protocol header (HAProxy's specification, versions 1 and 2:
//! <https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>) that an L4 load balancer in front
//! of the proxy (AWS NLB, HAProxy `send-proxy`, Envoy, GCP, ...) sends before a client connection's
//! first byte, so that the proxy learns the client's address rather than the balancer's.
//!
//! With `proxy_protocol: true` every connection to the traffic listener must begin with one; its
//! source address becomes the connection's client address (`X-Forwarded-For`, `Forwarded`, the
//! access log's `client`, a sticky `client_address` key). A v2 `LOCAL` command (the balancer's own
//! health check) and a v1 `UNKNOWN` keep the TCP peer's. A connection whose first bytes are not a
//! well-formed header (a client that connects directly, a balancer not set up to send it) is closed
//! without an answer and counted in `crossfade_proxy_protocol_refused_total`: with the setting on,
//! the proxy cannot tell a client's address from one a client made up, so it takes none unheaded.
//!
//! The header is read exactly, never past its end (the specification's rule for a receiver): what
//! follows it (a TLS ClientHello, an HTTP/2 preface, a request head) stays in the socket for the
//! next layer. It must arrive within `limits.header_read_timeout` of the accept, as the rest of the
//! first request head must.

use std::net::IpAddr;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The v2 header's fixed part: the 12-byte signature, version and command, family and protocol,
/// and the length of what follows (§2.2).
const V2_FIXED: usize = 16;

/// The v2 signature (§2.2).
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The longest v1 header, CRLF included (§2.1).
const V1_MAX: usize = 107;

/// The most a v2 header may carry after its fixed part, in bytes: its addresses and TLVs (AWS's
/// VPC endpoint id, GCP's, a TLS summary), which real balancers keep to a few hundred bytes. A
/// longer header is refused rather than buffered.
const V2_MAX_REST: usize = 4096;

/// Why a connection's header was refused: said in the debug log.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Nothing, or not all of it, came by the deadline, or the client closed first.
    #[error("no PROXY protocol header by the header read timeout, or the connection closed")]
    Missing,
    /// The first bytes are not a PROXY protocol header.
    #[error("the connection does not begin with a PROXY protocol header")]
    NotAHeader,
    /// A header that does not parse, or a v2 one longer than [`V2_MAX_REST`].
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(String),
}

/// Reads the PROXY protocol header at the start of `stream` by `deadline`: `Ok(Some(ip))` the
/// client's address it gives, `Ok(None)` when it gives none (v2 `LOCAL`, v1 `UNKNOWN`, a v2
/// unspecified or UNIX family): the TCP peer's stands. Leaves every byte after the header unread.
///
/// # Errors
/// [`Refused`] when the connection does not begin with a well-formed header by `deadline`.
pub(crate) async fn client_address(
    stream: &mut TcpStream,
    deadline: Instant,
) -> Result<Option<IpAddr>, Refused> {
    match tokio::time::timeout_at(deadline, read(stream)).await {
        Ok(result) => result,
        Err(_elapsed) => Err(Refused::Missing),
    }
}

async fn read(stream: &mut TcpStream) -> Result<Option<IpAddr>, Refused> {
    let mut first = [0u8; 1];
    match stream.peek(&mut first).await {
        Ok(1) => {}
        _ => return Err(Refused::Missing),
    }
    match first[0] {
        b'P' => v1(stream).await,
        b'\r' => v2(stream).await,
        _ => Err(Refused::NotAHeader),
    }
}

/// A v1 header: text up to CRLF, at most [`V1_MAX`] bytes. Bytes are peeked, and only those up to
/// the CRLF taken; peeked bytes without a CRLF are all the header's, taken, and more awaited.
async fn v1(stream: &mut TcpStream) -> Result<Option<IpAddr>, Refused> {
    let mut header = Vec::with_capacity(V1_MAX);
    let mut peeked = [0u8; V1_MAX];
    loop {
        let room = V1_MAX - header.len();
        let n = match stream.peek(&mut peeked[..room]).await {
            Ok(0) | Err(_) => return Err(Refused::Missing),
            Ok(n) => n,
        };
        // A CR that ended the previous read is the header's last-but-one byte.
        let joined_lf = header.last() == Some(&b'\r') && peeked[0] == b'\n';
        let end = match joined_lf {
            true => Some(1),
            false => peeked[..n]
                .windows(2)
                .position(|w| w == b"\r\n")
                .map(|at| at + 2),
        };
        let take = end.unwrap_or(n);
        let start = header.len();
        header.resize(start + take, 0);
        if stream.read_exact(&mut header[start..]).await.is_err() {
            return Err(Refused::Missing);
        }
        if end.is_some() {
            break;
        }
        if header.len() >= V1_MAX {
            return Err(Refused::Malformed(format!(
                "a v1 header longer than {V1_MAX} bytes"
            )));
        }
    }
    let parsed = ppp::v1::Header::try_from(&header[..])
        .map_err(|error| Refused::Malformed(error.to_string()))?;
    Ok(match parsed.addresses {
        ppp::v1::Addresses::Tcp4(ip) => Some(IpAddr::V4(ip.source_address)),
        ppp::v1::Addresses::Tcp6(ip) => Some(IpAddr::V6(ip.source_address)),
        ppp::v1::Addresses::Unknown => None,
    })
}

/// A v2 header: the fixed part, then as many bytes as it says.
async fn v2(stream: &mut TcpStream) -> Result<Option<IpAddr>, Refused> {
    let mut header = vec![0u8; V2_FIXED];
    if stream.read_exact(&mut header).await.is_err() {
        return Err(Refused::Missing);
    }
    if header[..12] != V2_SIGNATURE {
        return Err(Refused::NotAHeader);
    }
    let rest = usize::from(u16::from_be_bytes([header[14], header[15]]));
    if rest > V2_MAX_REST {
        return Err(Refused::Malformed(format!(
            "a v2 header of {rest} bytes after its fixed part (at most {V2_MAX_REST})"
        )));
    }
    header.resize(V2_FIXED + rest, 0);
    if stream.read_exact(&mut header[V2_FIXED..]).await.is_err() {
        return Err(Refused::Missing);
    }
    let parsed = ppp::v2::Header::try_from(&header[..])
        .map_err(|error| Refused::Malformed(error.to_string()))?;
    if parsed.command == ppp::v2::Command::Local {
        return Ok(None);
    }
    Ok(match parsed.addresses {
        ppp::v2::Addresses::IPv4(ip) => Some(IpAddr::V4(ip.source_address)),
        ppp::v2::Addresses::IPv6(ip) => Some(IpAddr::V6(ip.source_address)),
        ppp::v2::Addresses::Unspecified | ppp::v2::Addresses::Unix(_) => None,
    })
}
