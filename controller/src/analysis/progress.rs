//! What a sequential judge still collecting evidence has gathered so far, for the log line at
//! each analysis interval and the rollout's message (trial report 4, F3).

use std::fmt;

use super::sequential::e;
use super::{Metric, Verdict};

/// The evidence behind an inconclusive sequential verdict that is still gathering it
/// ([`Verdict::accumulating`]): what a pass waits for, how far the fail side is, and the traffic.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EvidenceSoFar {
    /// The "not worse" e-value a pass waits for: the smaller of the errors' and the slow
    /// requests' (1, no evidence, while latency cannot be compared yet); 1 before `min_requests`.
    pub e_value: f64,
    /// The e-value a pass needs: `1 / beta`.
    pub needed: f64,
    /// The larger "worse" e-value, and the `k / alpha` a fail needs (`None` before
    /// `min_requests`, when no test has run).
    pub fail: Option<(f64, f64)>,
    /// Requests the preview served since the rollout's first window opened.
    pub requests: u64,
    /// `analysis.min_requests` while the preview has served fewer: no test runs before it.
    pub min_requests: Option<u64>,
}

impl EvidenceSoFar {
    /// The evidence of `verdict`, when it is a sequential judge's "collecting evidence" one.
    pub fn of(verdict: &Verdict) -> Option<EvidenceSoFar> {
        if !verdict.accumulating() {
            return None;
        }
        let value = |m: Metric| verdict.finding(m).map(|f| (f.value, f.threshold));
        let (errors, needed) = value(Metric::ErrorPassEvidence)?;
        let requests = verdict.finding(Metric::Requests)?;
        let slow = value(Metric::SlowPassEvidence).map_or(1.0, |(v, _)| v);
        let fail = [Metric::ErrorEvidence, Metric::SlowEvidence]
            .into_iter()
            .filter_map(value)
            .reduce(|a, b| if b.0 > a.0 { b } else { a });
        Some(EvidenceSoFar {
            e_value: errors.min(slow),
            needed,
            fail,
            requests: requests.value as u64,
            min_requests: (!requests.ok).then_some(requests.threshold as u64),
        })
    }

    /// The line for the log and the message, naming the preview slot (`green`):
    /// `analysis: collecting evidence, e-value 12 of needed 20 (fail 0.80 of 300), 2050 requests on green`.
    pub fn describe(&self, preview: impl fmt::Display) -> String {
        if let Some(min) = self.min_requests {
            return format!(
                "analysis: collecting evidence, {} of the {min} requests on {preview} it needs \
                 before weighing any",
                self.requests
            );
        }
        let fail = match self.fail {
            Some((value, needed)) => format!(" (fail {} of {})", e(value), e(needed)),
            None => String::new(),
        };
        format!(
            "analysis: collecting evidence, e-value {} of needed {}{fail}, {} requests on {preview}",
            e(self.e_value),
            e(self.needed),
            self.requests
        )
    }
}
