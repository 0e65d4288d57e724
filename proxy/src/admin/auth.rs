//! Bearer-token authentication of the admin API (RFC 6750 §2.1 and §3).
//!
//! The admin API changes weights and steers rollouts, so anyone who can reach it controls the
//! traffic. On a loopback address (`127.0.0.0/8`, `::1`) only local users can, and it stays open by
//! default; on any other address a token is required ([`AdminAuth::for_listener`] refuses to start
//! without one). When a token is configured it is required on every address.
//!
//! `GET /healthz` and `GET /readyz` stay open so that liveness and readiness probes (kubelet, load
//! balancers) need no secret; they reveal only whether the process is up and ready.

use std::net::SocketAddr;

use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue, StatusCode};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AdminReply;

/// The realm named in `WWW-Authenticate` challenges (RFC 6750 §3).
const REALM: &str = "crossfade-admin";

/// The shortest token, in bytes, accepted for an admin API on a non-loopback address (a loopback
/// admin API accepts any non-empty token): 16 `b64token` characters carry about 96 bits when
/// random.
pub const MIN_REMOTE_TOKEN_BYTES: usize = 16;

/// Who may use the admin API: anyone (open), or holders of one bearer token.
///
/// The token is kept only as its SHA-256 digest, and a presented token is digested too, so the
/// comparison ([`subtle::ConstantTimeEq`]) takes the same time whatever the token's length and
/// wherever the first differing byte is.
#[derive(Clone)]
pub struct AdminAuth {
    digest: Option<[u8; 32]>,
}

/// Why the admin API cannot start with the authentication it was given.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdminAuthError {
    /// The admin address is reachable from other machines and no token was configured.
    #[error(
        "the admin API address {0} is not a loopback address, so it needs a bearer token: \
         set CROSSFADE_ADMIN_TOKEN or pass --admin-token-file FILE (or bind the admin API to \
         127.0.0.1)"
    )]
    TokenRequired(SocketAddr),
    /// The admin address is reachable from other machines and the token is shorter than
    /// [`MIN_REMOTE_TOKEN_BYTES`]: a short token can be guessed from the network.
    #[error(
        "the admin token from {origin} is {len} bytes long, but the admin API address {addr} is not \
         a loopback address, so the token must be at least {MIN_REMOTE_TOKEN_BYTES} bytes (e.g. \
         `openssl rand -base64 32`), or bind the admin API to 127.0.0.1"
    )]
    TokenTooShort {
        /// The admin API's address.
        addr: SocketAddr,
        /// Where the token came from (`CROSSFADE_ADMIN_TOKEN`, a file name).
        origin: String,
        /// The token's length in bytes.
        len: usize,
    },
    /// The token is empty or has characters outside RFC 6750's `b64token` syntax.
    #[error("the admin token from {origin} is not valid: {why}")]
    InvalidToken {
        /// Where the token came from (`CROSSFADE_ADMIN_TOKEN`, a file name).
        origin: String,
        /// What is wrong with it.
        why: String,
    },
}

// === impl AdminAuth ===

impl AdminAuth {
    /// No authentication: every request is served.
    pub fn open() -> AdminAuth {
        AdminAuth { digest: None }
    }

    /// Requests need `Authorization: Bearer <token>`.
    ///
    /// # Errors
    /// [`AdminAuthError::InvalidToken`] when `token` is empty or not an RFC 6750 §2.1 `b64token`
    /// (letters, digits, `-._~+/`, then optional trailing `=`); `source` names where it came from.
    pub fn with_token(token: &str, source: &str) -> Result<AdminAuth, AdminAuthError> {
        check_syntax(token).map_err(|why| AdminAuthError::InvalidToken {
            origin: source.to_owned(),
            why,
        })?;
        Ok(AdminAuth {
            digest: Some(Sha256::digest(token.as_bytes()).into()),
        })
    }

    /// The authentication for an admin API bound to `addr`: the token when one is given (from
    /// `source`), open on a loopback address without one.
    ///
    /// # Errors
    /// [`AdminAuthError::TokenRequired`] for a non-loopback `addr` (including `0.0.0.0` and `::`)
    /// without a token; [`AdminAuthError::InvalidToken`] as in [`AdminAuth::with_token`];
    /// [`AdminAuthError::TokenTooShort`] for a non-loopback `addr` with a token shorter than
    /// [`MIN_REMOTE_TOKEN_BYTES`].
    pub fn for_listener(
        addr: SocketAddr,
        token: Option<(&str, &str)>,
    ) -> Result<AdminAuth, AdminAuthError> {
        match token {
            Some((token, source)) => {
                let auth = AdminAuth::with_token(token, source)?;
                if !addr.ip().is_loopback() && token.len() < MIN_REMOTE_TOKEN_BYTES {
                    return Err(AdminAuthError::TokenTooShort {
                        addr,
                        origin: source.to_owned(),
                        len: token.len(),
                    });
                }
                Ok(auth)
            }
            None if addr.ip().is_loopback() => Ok(AdminAuth::open()),
            None => Err(AdminAuthError::TokenRequired(addr)),
        }
    }

    /// Whether a token is required.
    pub fn requires_token(&self) -> bool {
        self.digest.is_some()
    }

    /// Checks a request's `Authorization` header: `Ok` to serve it, else the answer and the
    /// `WWW-Authenticate` challenge to send, by RFC 6750 §3 and §3.1: 401 with no error code
    /// when the request carried no credentials or those of another scheme (`Basic ...`: an
    /// unsupported authentication method), 400 `invalid_request` for a malformed bearer
    /// credential (`Bearer` with no token), 401 `invalid_token` for a wrong token.
    pub(super) fn check(&self, headers: &HeaderMap) -> Result<(), (AdminReply, HeaderValue)> {
        let Some(expected) = &self.digest else {
            return Ok(());
        };
        let unauthorized = StatusCode::UNAUTHORIZED;
        let Some(value) = headers.get(AUTHORIZATION) else {
            let why = "missing Authorization: Bearer <token>";
            return Err(challenge(unauthorized, None, why));
        };
        let token = match bearer(value) {
            Bearer::Token(token) => token,
            Bearer::OtherScheme => {
                let why = "the Authorization header is not `Bearer <token>` (another scheme)";
                return Err(challenge(unauthorized, None, why));
            }
            Bearer::Malformed => {
                let why = "the Authorization header is `Bearer` with no token";
                let code = Some("invalid_request");
                return Err(challenge(StatusCode::BAD_REQUEST, code, why));
            }
        };
        let presented: [u8; 32] = Sha256::digest(token).into();
        if bool::from(presented.ct_eq(expected)) {
            Ok(())
        } else {
            let why = "the bearer token is wrong";
            Err(challenge(unauthorized, Some("invalid_token"), why))
        }
    }
}

impl std::fmt::Debug for AdminAuth {
    // Never print the digest: it would let an offline guess be checked.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAuth")
            .field("requires_token", &self.requires_token())
            .finish()
    }
}

/// What an `Authorization` header holds ([`bearer`]).
enum Bearer<'a> {
    /// The token bytes of `Bearer <token>`.
    Token(&'a [u8]),
    /// The bearer scheme with no token (`Bearer`, `Bearer   `).
    Malformed,
    /// Credentials of another scheme (`Basic ...`), or no scheme at all.
    OtherScheme,
}

/// Reads `Bearer <token>`; the scheme is case-insensitive (RFC 9110 §11.1).
fn bearer(value: &HeaderValue) -> Bearer<'_> {
    let bytes = value.as_bytes().trim_ascii();
    let Some((scheme, rest)) = bytes.split_at_checked(6) else {
        return Bearer::OtherScheme;
    };
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Bearer::OtherScheme;
    }
    if rest.is_empty() {
        return Bearer::Malformed;
    }
    if !rest.starts_with(b" ") {
        // `Bearerish ...`: another scheme's name.
        return Bearer::OtherScheme;
    }
    match rest.trim_ascii() {
        [] => Bearer::Malformed,
        token => Bearer::Token(token),
    }
}

fn challenge(status: StatusCode, error: Option<&str>, message: &str) -> (AdminReply, HeaderValue) {
    let header = match error {
        Some(code) => format!("Bearer realm=\"{REALM}\", error=\"{code}\""),
        None => format!("Bearer realm=\"{REALM}\""),
    };
    let reply = AdminReply::error(status, message, None);
    // Built only from constants above, so always a valid header value.
    let value = HeaderValue::from_str(&header)
        .unwrap_or_else(|_| HeaderValue::from_static("Bearer realm=\"crossfade-admin\""));
    (reply, value)
}

/// RFC 6750 §2.1: `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn check_syntax(token: &str) -> Result<(), String> {
    if token.is_empty() {
        return Err("it is empty".into());
    }
    let body = token.trim_end_matches('=');
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-._~+/".contains(c);
    if body.is_empty() {
        return Err("it has no character before its trailing '='".into());
    }
    if let Some(bad) = body.chars().find(|&c| !allowed(c)) {
        return Err(format!(
            "character {bad:?} is not allowed (use letters, digits and -._~+/, then optional '=')"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(authorization: Option<&str>) -> HeaderMap {
        let mut map = HeaderMap::new();
        if let Some(value) = authorization {
            map.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn loopback_without_token_is_open_and_other_addresses_are_refused() {
        let local: SocketAddr = "127.0.0.1:9901".parse().unwrap();
        assert!(!AdminAuth::for_listener(local, None)
            .unwrap()
            .requires_token());
        let v6: SocketAddr = "[::1]:9901".parse().unwrap();
        assert!(!AdminAuth::for_listener(v6, None).unwrap().requires_token());
        for addr in ["0.0.0.0:9901", "[::]:9901", "10.0.0.7:9901"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let error = AdminAuth::for_listener(addr, None).unwrap_err();
            assert_eq!(error, AdminAuthError::TokenRequired(addr));
            assert!(
                error.to_string().contains("CROSSFADE_ADMIN_TOKEN"),
                "{error}"
            );
        }
    }

    #[test]
    fn a_non_loopback_admin_refuses_a_token_under_16_bytes_and_loopback_takes_any() {
        let short = "abc";
        for addr in ["0.0.0.0:9901", "[::]:9901", "10.0.0.7:9901"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let error =
                AdminAuth::for_listener(addr, Some((short, "CROSSFADE_ADMIN_TOKEN"))).unwrap_err();
            assert_eq!(
                error,
                AdminAuthError::TokenTooShort {
                    addr,
                    origin: "CROSSFADE_ADMIN_TOKEN".into(),
                    len: 3
                }
            );
            let text = error.to_string();
            assert!(
                text.contains("CROSSFADE_ADMIN_TOKEN") && text.contains("at least 16 bytes"),
                "{text}"
            );
            let fifteen = "a".repeat(MIN_REMOTE_TOKEN_BYTES - 1);
            assert!(AdminAuth::for_listener(addr, Some((&fifteen, "f"))).is_err());
            let sixteen = "a".repeat(MIN_REMOTE_TOKEN_BYTES);
            assert!(AdminAuth::for_listener(addr, Some((&sixteen, "f")))
                .unwrap()
                .requires_token());
        }
        for addr in ["127.0.0.1:9901", "[::1]:9901"] {
            let addr: SocketAddr = addr.parse().unwrap();
            assert!(AdminAuth::for_listener(addr, Some(("a", "env")))
                .unwrap()
                .requires_token());
            assert!(AdminAuth::for_listener(addr, Some(("", "env"))).is_err());
        }
    }

    #[test]
    fn a_configured_token_is_required_on_loopback_too() {
        let local: SocketAddr = "127.0.0.1:9901".parse().unwrap();
        let auth = AdminAuth::for_listener(local, Some(("s3cret", "env"))).unwrap();
        assert!(auth.requires_token());
        assert!(auth.check(&headers(None)).is_err());
    }

    #[test]
    fn only_the_right_bearer_token_passes() {
        let auth = AdminAuth::with_token("abc.DEF-123~+/==", "test").unwrap();
        assert!(auth
            .check(&headers(Some("Bearer abc.DEF-123~+/==")))
            .is_ok());
        assert!(auth
            .check(&headers(Some("bearer abc.DEF-123~+/==")))
            .is_ok());
        let (reply, challenge) = auth.check(&headers(None)).unwrap_err();
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(challenge, "Bearer realm=\"crossfade-admin\"");
        let (_, challenge) = auth.check(&headers(Some("Bearer abc"))).unwrap_err();
        assert_eq!(
            challenge,
            "Bearer realm=\"crossfade-admin\", error=\"invalid_token\""
        );
        // RFC 6750 §3.1: another scheme is an unsupported method (no error code); a bearer
        // credential without its token is a malformed request (400).
        let (reply, challenge) = auth.check(&headers(Some("Basic YTpi"))).unwrap_err();
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(challenge, "Bearer realm=\"crossfade-admin\"");
        for malformed in ["Bearer", "Bearer   ", "bearer"] {
            let (reply, challenge) = auth.check(&headers(Some(malformed))).unwrap_err();
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{malformed:?}");
            assert_eq!(
                challenge,
                "Bearer realm=\"crossfade-admin\", error=\"invalid_request\""
            );
        }
    }

    #[test]
    fn tokens_outside_the_b64token_syntax_are_refused_naming_the_source() {
        for bad in ["", "===", "has space", "quote\"", "tab\t"] {
            let error = AdminAuth::with_token(bad, "/etc/token").unwrap_err();
            assert!(error.to_string().contains("/etc/token"), "{error}");
        }
    }
}
