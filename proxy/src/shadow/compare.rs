//! What is compared of an answer ([`Observed`]: status, chosen headers, a bounded streaming body
//! hash) and the comparison itself.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use super::stats::{MismatchKind, SkipReason};

/// The compared part of one answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Observed {
    pub(crate) status: StatusCode,
    /// The values of each of the rule's `compare_headers`, in rule order.
    pub(crate) headers: Vec<Vec<HeaderValue>>,
    pub(crate) body: Digest32,
    /// The backend's time to its response head: for the active backend, from the request's
    /// dispatch (for an upload, from its end when that came later) as the live
    /// `crossfade_request_duration_seconds` counts it; for the preview, from sending the mirrored
    /// request. Not compared: the shadow step pairs the two times ([`super::ShadowStats`]).
    pub(crate) head: Duration,
}

/// A body's digest, or why there is none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Digest32 {
    /// SHA-256 of the whole body, and its length in bytes.
    Hash([u8; 32], u64),
    /// Longer than `max_body_bytes`: not hashed to its end.
    TooLarge,
}

/// A SHA-256 over a body as it streams, giving up past `max` bytes (constant memory).
#[derive(Debug)]
pub(crate) struct BoundedHash {
    hasher: Option<Sha256>,
    len: u64,
    max: u64,
}

/// What the active backend's response body reports to its comparison when it ends: the head seen
/// at dispatch, and the body hashed as the client reads it.
#[derive(Debug)]
pub(crate) struct Tap {
    status: StatusCode,
    headers: Vec<Vec<HeaderValue>>,
    hash: BoundedHash,
    head: Duration,
    done: oneshot::Sender<Observed>,
}

// === impl BoundedHash ===

impl BoundedHash {
    pub(crate) fn new(max: u64) -> BoundedHash {
        BoundedHash {
            hasher: Some(Sha256::new()),
            len: 0,
            max,
        }
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        self.len = self.len.saturating_add(data.len() as u64);
        if self.len > self.max {
            self.hasher = None;
        } else if let Some(hasher) = &mut self.hasher {
            hasher.update(data);
        }
    }

    /// True once the body went past the bound.
    pub(crate) fn too_large(&self) -> bool {
        self.hasher.is_none()
    }

    pub(crate) fn finish(self) -> Digest32 {
        match self.hasher {
            Some(hasher) => Digest32::Hash(hasher.finalize().into(), self.len),
            None => Digest32::TooLarge,
        }
    }
}

// === impl Tap ===

impl Tap {
    pub(crate) fn new(
        status: StatusCode,
        headers: &HeaderMap,
        names: &[HeaderName],
        max: u64,
        head: Duration,
        done: oneshot::Sender<Observed>,
    ) -> Tap {
        Tap {
            status,
            headers: pick_headers(headers, names),
            hash: BoundedHash::new(max),
            head,
            done,
        }
    }

    /// A data frame went to the client.
    pub(crate) fn frame(&mut self, data: &Bytes) {
        self.hash.update(data);
    }

    /// The body ended: the comparison gets the answer. (Dropped without this, the comparison
    /// counts a skip, `primary_incomplete`.)
    pub(crate) fn end(self) {
        let observed = Observed {
            status: self.status,
            headers: self.headers,
            body: self.hash.finish(),
            head: self.head,
        };
        let _ = self.done.send(observed);
    }
}

/// The values of each header of `names`, in order.
pub(crate) fn pick_headers(headers: &HeaderMap, names: &[HeaderName]) -> Vec<Vec<HeaderValue>> {
    names
        .iter()
        .map(|name| headers.get_all(name).iter().cloned().collect())
        .collect()
}

/// Compares the active backend's answer with the preview's: every kind that differs (empty: they
/// match), or a skip when the bodies could not be compared and nothing else differed. With
/// `compare_body` false the bodies are left out (`ignore.body_paths`).
pub(crate) fn compare(
    active: &Observed,
    preview: &Observed,
    compare_body: bool,
) -> Result<Vec<MismatchKind>, SkipReason> {
    let mut kinds = Vec::new();
    if active.status != preview.status {
        kinds.push(MismatchKind::Status);
    }
    if active.headers != preview.headers {
        kinds.push(MismatchKind::Header);
    }
    if !compare_body {
        return Ok(kinds);
    }
    match (active.body, preview.body) {
        (Digest32::Hash(a, _), Digest32::Hash(b, _)) if a != b => kinds.push(MismatchKind::Body),
        (Digest32::Hash(..), Digest32::Hash(..)) => {}
        _ if kinds.is_empty() => return Err(SkipReason::BodyTooLarge),
        _ => {}
    }
    Ok(kinds)
}

/// The names of the compared headers that differ (for the mismatch log: names only, never values).
pub(crate) fn differing_headers<'a>(
    names: &'a [HeaderName],
    active: &Observed,
    preview: &Observed,
) -> Vec<&'a str> {
    names
        .iter()
        .zip(active.headers.iter().zip(&preview.headers))
        .filter(|(_, (a, b))| a != b)
        .map(|(name, _)| name.as_str())
        .collect()
}

/// `12 bytes sha256:0a1b2c3d` or `over the limit`, for the mismatch log.
pub(crate) fn describe(body: Digest32) -> String {
    match body {
        Digest32::Hash(hash, len) => {
            let prefix: String = hash[..4].iter().map(|b| format!("{b:02x}")).collect();
            format!("{len} bytes sha256:{prefix}")
        }
        Digest32::TooLarge => "over max_body_bytes".to_owned(),
    }
}
