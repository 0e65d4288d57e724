//! The shadow guard (`rollout.analysis.shadow`): requests mirrored to the preview during a 0% step
//! and the mismatch rate its answers may show before the preview gets any live weight.

use crossfade_proxy::config::ShadowConfig;
use serde::{Deserialize, Serialize};

use super::de;

/// Judges the preview by shadow traffic before it gets live weight (`rollout.analysis.shadow`).
///
/// While the rollout is at a **0% step** (the first step, `0` or `{ weight: 0, hold: 30s }`), the
/// proxy mirrors the active backend's requests to the preview as `mirror` says, and every analysis
/// of the step judges the comparisons made since its window opened:
///
/// 1. fewer than `min_compared` comparisons → **inconclusive**, never a pass (a preview nobody
///    compared proves nothing);
/// 2. mismatched / compared above `max_mismatch_rate` → **fail**: the rollout rolls back and the
///    preview never gets a live request;
/// 3. otherwise **pass**.
///
/// Mirroring is on only during that step: the runtime turns it on when the step's weight is
/// applied and off when the rollout moves on or ends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[serde(expecting = "a map of shadow settings (mirror, max_mismatch_rate, min_compared)")]
pub struct ShadowGuard {
    /// Highest share of compared answers that may differ (status, a compared header or the body
    /// hash), as a fraction in 0..=1, written as a percentage string (`"1%"`) in a spec (README
    /// "Shares"; a bare number other than 0 is refused). Default 0: any difference
    /// fails (set `mirror.ignore` for answers that legitimately differ).
    #[serde(with = "de::fraction")]
    pub max_mismatch_rate: f64,
    /// Fewest comparisons a window needs before its rate counts; fewer are inconclusive. Default 50.
    #[serde(deserialize_with = "de::count")]
    pub min_compared: u64,
    /// How requests are mirrored and compared: the proxy's `routes[].shadow` settings (percent,
    /// compare_headers, max_body_bytes, max_in_flight, timeout, methods, ignore, log_per_minute)
    /// with the same defaults.
    pub mirror: ShadowConfig,
}

impl Default for ShadowGuard {
    fn default() -> Self {
        ShadowGuard {
            max_mismatch_rate: 0.0,
            min_compared: 50,
            mirror: ShadowConfig::default(),
        }
    }
}
