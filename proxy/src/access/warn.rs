//! The warning for an upstream failure the client gets as 502 or 504: one line at WARN with the
//! route, backend, endpoint, method, path (without its query), status and failure kind, at most
//! [`WARN_LINES_PER_SECOND`] per second per backend of a route, so that a dead backend under load
//! cannot flood the log; the next line written says how many were left out (`suppressed`).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;

use http::Method;
use tokio::time::Instant;

use crate::error::{Error, ErrorKind};

/// Upstream failure lines per second per (route, backend) at most: enough to see which
/// endpoints and paths fail, few enough that 10,000 failing requests a second stay 5 lines.
pub const WARN_LINES_PER_SECOND: u64 = 5;

/// A per-second line budget, lock-free: the second and the lines written in it packed in one
/// word, and the lines left out since the last one written.
#[derive(Debug, Default)]
pub(crate) struct LogLimit {
    /// High 48 bits: the second; low 16: lines written in it.
    window: AtomicU64,
    suppressed: AtomicU64,
}

// === impl LogLimit ===

impl LogLimit {
    /// Whether a line may be written in `second` (at most `per_second`): `Some` with the lines
    /// left out since the last one written, else `None` (and this one is counted as left out).
    pub(crate) fn admit(&self, second: u64, per_second: u64) -> Option<u64> {
        let mut current = self.window.load(Relaxed);
        loop {
            let (at, count) = (current >> 16, current & 0xffff);
            let next = match at == second {
                true if count >= per_second.min(0xffff) => {
                    self.suppressed.fetch_add(1, Relaxed);
                    return None;
                }
                true => current + 1,
                false => (second << 16) | 1,
            };
            match self
                .window
                .compare_exchange_weak(current, next, Relaxed, Relaxed)
            {
                Ok(_) => return Some(self.suppressed.swap(0, Relaxed)),
                Err(seen) => current = seen,
            }
        }
    }
}

/// Seconds since the first call in this process (tokio's clock).
fn second() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_secs()
}

/// Logs `error`, an upstream failure answered to a `method` request for `path`, at WARN within
/// `limit`; any other error is not logged here.
pub(crate) fn upstream_failed(limit: &LogLimit, error: &Error, method: &Method, path: &str) {
    let Error::Upstream {
        route,
        backend,
        kind,
        source,
        endpoint,
        attempts,
    } = error
    else {
        return;
    };
    let Some(suppressed) = limit.admit(second(), WARN_LINES_PER_SECOND) else {
        return;
    };
    let endpoint = endpoint.map_or_else(|| "none".to_owned(), |e| e.to_string());
    let cause = cause(*kind, source.as_deref());
    tracing::warn!(
        %route,
        %backend,
        %endpoint,
        %method,
        path,
        status = error.status().as_u16(),
        kind = kind.as_str(),
        attempts,
        suppressed,
        cause,
        "upstream failed: {kind}"
    );
}

/// The `cause` of an upstream failure's line: its error and the error's sources, or, for a
/// failure without one (a timeout), what happened ([`ErrorKind::description`]). It was empty then
/// (trial 17, T11).
fn cause(
    kind: ErrorKind,
    source: Option<&(dyn std::error::Error + Send + Sync + 'static)>,
) -> String {
    match source {
        Some(error) => chain(error),
        None => kind.description().to_owned(),
    }
}

/// An error and its sources, `: `-joined (`connection error: connection reset by peer`).
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(source) = next {
        let more = source.to_string();
        if !text.ends_with(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        next = source.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A timeout carries no error of its own: its line says what happened instead of an empty
    /// `cause`; a failure with an error gives the error and its sources.
    #[test]
    fn a_cause_is_never_empty() {
        for kind in ErrorKind::ALL {
            assert!(!cause(kind, None).is_empty(), "{kind:?}");
        }
        let timeout = cause(ErrorKind::ResponseTimeout, None);
        assert!(timeout.contains("response_timeout"), "{timeout}");
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let text = cause(ErrorKind::ConnectRefused, Some(&refused));
        assert_eq!(text, refused.to_string());
    }
}
