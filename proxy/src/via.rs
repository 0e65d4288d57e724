//! The `Via` header (RFC 9110 §7.6.3): the proxy's entry on every message it forwards, and the
//! forwarding loops it reveals.
//!
//! Each forwarded request gets `<received-protocol> <pseudonym>` (`1.1 crossfade-3f9c…`, `2 …`
//! for an HTTP/2 client) appended to the `Via` it came with, and each forwarded response the same
//! with the backend's protocol. A request whose `Via` already names this proxy's pseudonym went
//! round a loop (two proxies pointing at each other, a DNS name or another address of this
//! host, a backend that forwards back): it is answered `508 Loop Detected` (RFC 5842 §7.2) and
//! never forwarded again, so a loop costs one extra hop instead of every connection and file
//! descriptor on the way. The static check of [`crate::loops`] refuses the loops an address
//! comparison can see before any request is sent.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use http::header::VIA;
use http::{HeaderMap, HeaderValue, Version};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::config::Problem;

/// The longest pseudonym accepted, in bytes.
pub const MAX_PSEUDONYM_BYTES: usize = 64;

/// How often a forwarding loop is logged at most: once per 10 s, with the count of the loops
/// answered since the last line (a loop repeats for every request that enters it).
pub const LOOP_LOG_PERIOD: Duration = Duration::from_secs(10);

/// The `via` section of the proxy config: whether the proxy sends `Via` and checks it for loops,
/// and under which name.
///
/// ```yaml
/// via:
///   pseudonym: edge-eu-1   # default: crossfade-<16 random hex digits>, made at start
///   enabled: true          # false: no Via added, no loop detected by it
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    default,
    deny_unknown_fields,
    expecting = "a map with pseudonym and enabled"
)]
pub struct ViaConfig {
    /// The `received-by` of this proxy's entries: a token (RFC 9110 §5.6.2) of 1 to 64 bytes.
    /// Default: `crossfade-` and 16 random hex digits, made when the proxy starts, kept over
    /// reloads (SIGHUP) and handed to the successor of a binary upgrade, so unique per proxy
    /// instance: replicas behind one name tell each other apart, and a request that passes two
    /// of them is no loop. Set it when backends' logs should name the proxy; give each instance
    /// its own, since two instances with one name see each other's requests as loops.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pseudonym: Option<String>,
    /// Whether `Via` is sent and checked (default `true`). RFC 9110 §7.6.3 says a proxy MUST
    /// send it; `false` is for a proxy that must not show itself to backends or clients, and
    /// gives up loop detection beyond [`crate::loops`]'s static check.
    #[serde(skip_serializing_if = "is_true")]
    pub enabled: Enabled,
}

/// This proxy's `Via` entries, made at their first use (the first request, the first 1xx
/// forwarded, [`crate::Proxy::via_pseudonym`]) unless a predecessor's pseudonym was inherited
/// first ([`Lazy::inherit`], a binary upgrade). One per proxy, shared by its state and every
/// backend's pool (which puts the entry on the 1xx responses it forwards): a pool is built with
/// the first routing table, before an inherited pseudonym is known, so it must not make them.
#[derive(Debug)]
pub(crate) struct Lazy {
    cell: std::sync::OnceLock<Option<Via>>,
    config: ViaConfig,
}

impl Lazy {
    /// Entries to be made from `config` at their first use.
    pub(crate) fn new(config: ViaConfig) -> Lazy {
        Lazy {
            cell: std::sync::OnceLock::new(),
            config,
        }
    }

    /// The entries, `None` when `via.enabled` is false (one atomic load once made).
    #[inline]
    pub(crate) fn get(&self) -> Option<&Via> {
        self.cell.get_or_init(|| Via::of(&self.config)).as_ref()
    }

    /// The `via` section they are made from.
    pub(crate) fn config(&self) -> &ViaConfig {
        &self.config
    }

    /// Takes `via` as the entries; false when they were made (or inherited) already.
    pub(crate) fn inherit(&self, via: Via) -> bool {
        self.cell.set(Some(via)).is_ok()
    }
}

/// Whether `Via` is on: `true` unless set to `false`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Enabled(pub bool);

impl Default for Enabled {
    fn default() -> Self {
        Enabled(true)
    }
}

fn is_true(enabled: &Enabled) -> bool {
    enabled.0
}

// === impl ViaConfig ===

impl ViaConfig {
    /// `via` with Via turned off.
    pub fn off() -> ViaConfig {
        ViaConfig {
            pseudonym: None,
            enabled: Enabled(false),
        }
    }

    /// True for the default (left out when a config is written).
    pub fn is_default(&self) -> bool {
        *self == ViaConfig::default()
    }

    /// Appends one problem per broken rule (paths `via.pseudonym`).
    pub(crate) fn check(&self, problems: &mut Vec<Problem>) {
        if let Some(pseudonym) = &self.pseudonym {
            if let Some(message) = pseudonym_problem(pseudonym) {
                problems.push(Problem::new("via.pseudonym", message));
            }
        }
    }
}

/// What is wrong with `pseudonym` as a `Via` received-by, if anything.
fn pseudonym_problem(pseudonym: &str) -> Option<String> {
    if pseudonym.is_empty() || pseudonym.len() > MAX_PSEUDONYM_BYTES {
        let n = pseudonym.len();
        return Some(format!(
            "{n} bytes: must be 1 to {MAX_PSEUDONYM_BYTES} bytes"
        ));
    }
    // By character, not byte: a non-ASCII character is named whole (`'é'`, not its first byte).
    let bad = pseudonym
        .chars()
        .find(|c| !u8::try_from(*c).is_ok_and(is_tchar))?;
    Some(format!(
        "{pseudonym:?} has {bad:?}: use letters, digits and !#$%&'*+-.^_`|~ (a token, RFC 9110 §5.6.2)"
    ))
}

/// A `tchar` of RFC 9110 §5.6.2.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A fresh default pseudonym: `crossfade-` and 16 hex digits from std's randomly keyed hasher
/// (seeded from the OS) over the process id and the time, so that two processes, or two proxies
/// in one process, differ.
pub fn random_pseudonym() -> String {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    hasher.write_u128(now.map_or(0, |d| d.as_nanos()));
    format!("crossfade-{:016x}", hasher.finish())
}

/// The proxy's `Via` entries, made once: one per received-protocol, and the loop log's state.
#[derive(Debug)]
pub(crate) struct Via {
    pseudonym: &'static str,
    /// `0.9 p`, `1.0 p`, `1.1 p`, `2 p`, `3 p`.
    values: [HeaderValue; 5],
    loops: LoopLog,
}

// === impl Via ===

impl Via {
    /// The entries of `config` (a fresh random pseudonym when it names none), or `None` when
    /// `enabled` is false. `config` is valid ([`ViaConfig::check`]).
    ///
    /// The values are leaked (about 200 bytes once per [`crate::Proxy`]): a static value's clone
    /// is a copy, where a shared one would bounce a reference count between cores at every
    /// request.
    pub(crate) fn of(config: &ViaConfig) -> Option<Via> {
        if !config.enabled.0 {
            return None;
        }
        let pseudonym = config.pseudonym.clone().unwrap_or_else(random_pseudonym);
        Via::named(pseudonym)
    }

    /// The entries for `pseudonym`; `None` when it is no token.
    pub(crate) fn named(pseudonym: String) -> Option<Via> {
        if pseudonym_problem(&pseudonym).is_some() {
            return None;
        }
        let pseudonym: &'static str = Box::leak(pseudonym.into_boxed_str());
        let value = |protocol: &str| {
            let text: &'static str = Box::leak(format!("{protocol} {pseudonym}").into_boxed_str());
            HeaderValue::from_static(text)
        };
        Some(Via {
            pseudonym,
            values: ["0.9", "1.0", "1.1", "2", "3"].map(value),
            loops: LoopLog::new(),
        })
    }

    /// The pseudonym, as in this proxy's entries.
    pub(crate) fn pseudonym(&self) -> &'static str {
        self.pseudonym
    }

    /// This proxy's entry for a message received over `version` (RFC 9110 §7.6.3:
    /// received-protocol is the version alone for HTTP: `1.1`, `2`).
    pub(crate) fn value(&self, version: Version) -> &HeaderValue {
        let i = match version {
            Version::HTTP_09 => 0,
            Version::HTTP_10 => 1,
            Version::HTTP_2 => 3,
            Version::HTTP_3 => 4,
            _ => 2,
        };
        &self.values[i]
    }

    /// Appends this proxy's entry for a message received over `version` as a field line of its
    /// own, after the message's `Via` lines: the same list as one comma-joined line (RFC 9110
    /// §5.3), and no copy of the earlier entries.
    #[inline]
    pub(crate) fn append(&self, headers: &mut HeaderMap, version: Version) {
        headers.append(VIA, self.value(version).clone());
    }

    /// Whether a `Via` entry of `headers` names this proxy: the request has been here before.
    #[inline]
    pub(crate) fn looped(&self, headers: &HeaderMap) -> bool {
        headers
            .get_all(VIA)
            .iter()
            .any(|line| names(line.as_bytes(), self.pseudonym.as_bytes()))
    }

    /// Logs a loop answered on `route`, at most once per [`LOOP_LOG_PERIOD`].
    pub(crate) fn log_loop(&self, route: &str) {
        if let Some(answered) = self.loops.due() {
            tracing::warn!(
                %route,
                pseudonym = self.pseudonym,
                answered,
                "forwarding loop: requests came back carrying this proxy's Via entry; answered \
                 508 Loop Detected (a backend endpoint leads back to this proxy)"
            );
        }
    }
}

/// Whether the `Via` field value `line` has an entry whose received-by is `pseudonym` (ASCII
/// case-insensitive). Entries are split at commas outside comments; an entry is
/// `received-protocol RWS received-by [ RWS comment ]` (RFC 9110 §7.6.3).
pub(crate) fn names(line: &[u8], pseudonym: &[u8]) -> bool {
    let mut depth = 0u32;
    let mut escaped = false;
    let mut start = 0;
    for (i, &b) in line.iter().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if depth > 0 => escaped = true,
            b'(' => depth += 1,
            b')' => depth = depth.saturating_sub(1),
            b',' if depth == 0 => {
                if entry_names(&line[start..i], pseudonym) {
                    return true;
                }
                start = i + 1;
            }
            _ => {}
        }
    }
    entry_names(&line[start..], pseudonym)
}

/// Whether one `Via` entry's received-by (its second word) is `pseudonym`.
fn entry_names(entry: &[u8], pseudonym: &[u8]) -> bool {
    let mut words = entry
        .split(|b| *b == b' ' || *b == b'\t')
        .filter(|w| !w.is_empty());
    words.next().is_some()
        && words
            .next()
            .is_some_and(|by| by.eq_ignore_ascii_case(pseudonym))
}

/// The loop log's rate limit: the next time a line may be written, and the loops since the last.
#[derive(Debug)]
struct LoopLog {
    start: Instant,
    /// Milliseconds after `start` before which no line is written.
    next_ms: AtomicU64,
    answered: AtomicU64,
}

impl LoopLog {
    fn new() -> LoopLog {
        LoopLog {
            start: Instant::now(),
            next_ms: AtomicU64::new(0),
            answered: AtomicU64::new(0),
        }
    }

    /// Counts one loop; returns the loops answered since the last line when a line is due.
    fn due(&self) -> Option<u64> {
        self.answered.fetch_add(1, Relaxed);
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next_ms.load(Relaxed);
        let period = LOOP_LOG_PERIOD.as_millis() as u64;
        if now < next
            || self
                .next_ms
                .compare_exchange(next, now.saturating_add(period), Relaxed, Relaxed)
                .is_err()
        {
            return None;
        }
        Some(self.answered.swap(0, Relaxed).max(1))
    }
}

#[cfg(test)]
mod tests;
