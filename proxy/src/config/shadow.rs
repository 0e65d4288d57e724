//! Per-route shadow traffic (`routes[].shadow`): which requests are mirrored to the preview backend,
//! how their answers are compared with the active backend's, and the bounds that keep a slow preview
//! from costing the client anything.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Problem;
use crate::shown::outside;
use crate::weight::{Percent, FULL_BP};

/// Most bytes of a response body that may be hashed for a comparison (`max_body_bytes`): 64 MiB.
pub const MAX_SHADOW_BODY_BYTES: u64 = 64 << 20;

/// Most mirrored exchanges a route may have in flight (`max_in_flight`).
pub const MAX_SHADOW_IN_FLIGHT: u32 = 10_000;

/// Shadow traffic with response comparison (`routes[].shadow`), opt-in.
///
/// A sampled share (`percent`) of the requests the **active** backend serves is also sent to the
/// **preview** backend, fire-and-forget: the client gets the active backend's answer as if nothing
/// happened, never the preview's and never later. The two answers are then compared: status, the
/// headers in `compare_headers`, and a SHA-256 of the body, hashed while it streams and bounded by
/// `max_body_bytes`. A route whose preview has no endpoints mirrors nothing.
///
/// Only **safe** methods (RFC 9110 §9.2.1: GET, HEAD, OPTIONS) are mirrored by default: they are
/// defined not to change state, so sending one twice is harmless even when both versions share a
/// database. An idempotent method (PUT, DELETE; §9.2.2) would be applied twice and the second
/// answer would see the first one's effect; other methods (POST) may act twice. `methods` opts
/// such methods in, for backends that can tell mirrored requests (they carry
/// `X-Crossfade-Shadow: 1`). A request body goes along: its frames are kept as they stream to the
/// active backend (never delaying them) and sent to the preview whole once it ended; a body over
/// `max_body_bytes` is not kept and the request is skipped (`request_body`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    default,
    deny_unknown_fields,
    expecting = "a map of shadow settings (percent, compare_headers, ...)"
)]
pub struct ShadowConfig {
    /// Share of the active backend's requests mirrored, in percent (`10`, `"0.5%"`): 0–100.
    /// Default 100%.
    pub percent: Percent,
    /// Response headers compared (case-insensitive names, all values in order). Default
    /// `[content-type]`. Headers that differ by nature (`date`, `server`, request ids) belong out.
    pub compare_headers: Vec<String>,
    /// Most bytes of each response body hashed, and of a request body kept for the mirror. A
    /// response body past it on either side is not compared (counted as skipped,
    /// `body_too_large`, unless status or headers already differ), and the preview's is not read
    /// further; a request body past it is not mirrored (skipped, `request_body`). Default 1 MiB,
    /// at most 64 MiB.
    #[serde(deserialize_with = "crate::de::count")]
    pub max_body_bytes: u64,
    /// Most mirrored exchanges in flight at once for the route; a sampled request past it is not
    /// mirrored (skipped, `concurrency`), so a slow preview cannot pile up tasks and memory.
    /// Default 64, at most 10000.
    #[serde(deserialize_with = "crate::de::count")]
    pub max_in_flight: u32,
    /// Longest a mirrored exchange may take, the preview's response head and body included, and
    /// longest the comparison waits for the active backend's body. Default 10 s.
    #[serde(with = "crate::duration::serde")]
    pub timeout: Duration,
    /// Methods mirrored, upper case. Default `[GET, HEAD, OPTIONS]` (safe methods, see above).
    pub methods: Vec<String>,
    /// What is left out for non-deterministic answers (see [`ShadowIgnore`]).
    pub ignore: ShadowIgnore,
    /// Mismatches logged (at `info`, what differed, never bodies or header values) per minute and
    /// route; 0 turns the log off. Default 6.
    #[serde(deserialize_with = "crate::de::count")]
    pub log_per_minute: u32,
}

/// Parts of the traffic left out of shadow comparison (`routes[].shadow.ignore`): answers that
/// legitimately differ between two correct versions (timestamps, random ids, nonces).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    default,
    deny_unknown_fields,
    expecting = "a map with paths and body_paths"
)]
pub struct ShadowIgnore {
    /// Path prefixes (whole segments, as route prefixes) never mirrored: endpoints with side
    /// effects despite a safe method (`/logout`), or not worth mirroring. Default none.
    pub paths: Vec<String>,
    /// Path prefixes whose response body is not compared (status and headers still are): answers
    /// that embed the time or a random value. Default none.
    pub body_paths: Vec<String>,
}

// === impl ShadowConfig ===

impl Default for ShadowConfig {
    fn default() -> Self {
        ShadowConfig {
            percent: Percent(FULL_BP),
            compare_headers: vec!["content-type".to_owned()],
            max_body_bytes: 1 << 20,
            max_in_flight: 64,
            timeout: Duration::from_secs(10),
            methods: ["GET", "HEAD", "OPTIONS"].map(str::to_owned).to_vec(),
            ignore: ShadowIgnore::default(),
            log_per_minute: 6,
        }
    }
}

impl ShadowConfig {
    /// Checks every rule, appending one problem per broken rule with its field path under `at`
    /// (the path of this config, e.g. `routes[0].shadow`).
    pub fn check(&self, at: &str, problems: &mut Vec<Problem>) {
        let mut add = |field: &str, message: String| {
            problems.push(Problem::new(format!("{at}.{field}"), message));
        };
        if self.percent.0 > FULL_BP {
            add("percent", format!("{} is above 100%", self.percent));
        }
        for (i, name) in self.compare_headers.iter().enumerate() {
            if http::HeaderName::try_from(name.as_str()).is_err() {
                add(
                    &format!("compare_headers[{i}]"),
                    format!("{name:?} is not a header name"),
                );
            }
        }
        if self.max_body_bytes == 0 || self.max_body_bytes > MAX_SHADOW_BODY_BYTES {
            let message = outside(self.max_body_bytes, 1, MAX_SHADOW_BODY_BYTES, "bytes");
            add("max_body_bytes", message);
        }
        if self.max_in_flight == 0 || self.max_in_flight > MAX_SHADOW_IN_FLIGHT {
            let message = outside(self.max_in_flight, 1, MAX_SHADOW_IN_FLIGHT, "");
            add("max_in_flight", message);
        }
        if self.timeout.is_zero() {
            add("timeout", "must be above 0s".to_owned());
        }
        for (i, method) in self.methods.iter().enumerate() {
            if let Err(message) = check_method(method) {
                add(&format!("methods[{i}]"), message);
            }
        }
        // Request path prefixes, held to the rules of a route's `path_prefix` (trial 17, T1: `"/a
        // b"` or `"/x?y"` loaded and never matched).
        for (i, prefix) in self.ignore.paths.iter().enumerate() {
            if let Some(message) = super::validate::path_prefix_problem(prefix) {
                add(&format!("ignore.paths[{i}]"), message);
            }
        }
        for (i, pointer) in self.ignore.body_paths.iter().enumerate() {
            if !pointer.starts_with('/') {
                let message = format!("{pointer:?} must start with '/'");
                add(&format!("ignore.body_paths[{i}]"), message);
            }
        }
    }
}

impl ShadowConfig {
    /// The settings that leave nothing to mirror, each as (its field under this config, what it
    /// does): `percent: 0`, `methods: []`, an `ignore.paths` prefix `/` (every path). Valid, but a
    /// route shows no comparison then, which reads as "no difference" when nothing was compared;
    /// a proxy route warns ([`ShadowConfig::warnings`]), a rollout's shadow step refuses.
    pub fn nothing_mirrored(&self) -> Vec<(String, &'static str)> {
        let mut found = Vec::new();
        if self.percent.0 == 0 {
            found.push(("percent".to_owned(), "0% mirrors no request"));
        }
        if self.methods.is_empty() {
            found.push(("methods".to_owned(), "no method is mirrored"));
        }
        if let Some(i) = self.ignore.paths.iter().position(|p| p == "/") {
            found.push((format!("ignore.paths[{i}]"), "\"/\" leaves every path out"));
        }
        found
    }

    /// [`ShadowConfig::nothing_mirrored`] as warnings under `at` (e.g. `routes[0].shadow`).
    /// Warnings, not errors: pausing the mirror this way is a legitimate edit, but one to make
    /// knowingly.
    pub fn warnings(&self, at: &str) -> Vec<Problem> {
        self.nothing_mirrored()
            .into_iter()
            .map(|(field, what)| {
                let restore = if field == "methods" {
                    "; leave `methods` out for the safe methods (GET, HEAD, OPTIONS)"
                } else {
                    ""
                };
                let message = format!(
                    "{what}, so the route gets no shadow comparison (a mismatch rate of no \
                     samples, not of 0){restore}; leave `shadow` out to turn it off"
                );
                Problem::new(format!("{at}.{field}"), message)
            })
            .collect()
    }
}

fn check_method(method: &str) -> Result<(), String> {
    match http::Method::from_bytes(method.as_bytes()) {
        Ok(m) if m == http::Method::CONNECT => {
            Err("CONNECT opens a tunnel and cannot be mirrored".to_owned())
        }
        Ok(_) if method.bytes().all(|b| !b.is_ascii_lowercase()) => Ok(()),
        Ok(_) => Err(format!(
            "{method:?}: methods are case-sensitive (RFC 9110 §9.1); write {:?}",
            method.to_ascii_uppercase()
        )),
        Err(_) => Err(format!("{method:?} is not a method")),
    }
}
