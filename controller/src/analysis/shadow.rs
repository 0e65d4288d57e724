//! The shadow judge: a 0% step judged by how the preview's answers to mirrored requests compared
//! with the active backend's (`rollout.analysis.shadow`, see [`ShadowGuard`]).
//!
//! Rules, in order: fewer than `min_compared` comparisons in the window → **inconclusive** (0/0 is
//! never 0%, and a window the data plane could not read has no comparisons); mismatched / compared
//! above `max_mismatch_rate` → **fail**; otherwise **pass**. The verdict records the comparisons,
//! the rate and its bound, and what differed (status, header, body), skips and errors.

use crossfade_proxy::ShadowSnapshot;

use super::{Finding, Metric, Outcome, Verdict};
use crate::spec::ShadowGuard;

/// Judges one window of shadow comparisons (the counters' difference over the window); `None`
/// when the data plane has no shadow counters, which is inconclusive.
pub fn judge(guard: &ShadowGuard, window: Option<&ShadowSnapshot>) -> Verdict {
    let empty = ShadowSnapshot::default();
    let w = window.unwrap_or(&empty);
    let compared = Finding {
        metric: Metric::ShadowCompared,
        value: w.compared() as f64,
        threshold: guard.min_compared as f64,
        ok: w.compared() >= guard.min_compared,
        between: None,
        unanswered: 0,
    };
    let mut findings = vec![compared];
    let detail = detail(w);
    if !compared.ok {
        let summary = match window {
            None => "no shadow counters from the data plane (0 shadow comparisons)".to_string(),
            Some(_) => format!("{compared} ({detail})"),
        };
        return verdict(Outcome::Inconclusive, findings, summary);
    }
    let rate = w.mismatched as f64 / w.compared() as f64;
    let bound = guard.max_mismatch_rate;
    let rate = Finding::at_most(Metric::ShadowMismatchRate, rate, bound);
    findings.push(rate);
    let outcome = if rate.ok {
        Outcome::Pass
    } else {
        Outcome::Fail
    };
    let summary = format!("{rate} ({} compared: {detail})", w.compared());
    verdict(outcome, findings, summary)
}

/// `3 differed (0 status, 0 header, 3 body), 1 skipped, 0 errors`.
fn detail(w: &ShadowSnapshot) -> String {
    format!(
        "{} differed ({} status, {} header, {} body), {} skipped, {} errors",
        w.mismatched,
        w.status_mismatches,
        w.header_mismatches,
        w.body_mismatches,
        w.skipped,
        w.errors
    )
}

fn verdict(outcome: Outcome, findings: Vec<Finding>, summary: String) -> Verdict {
    Verdict {
        outcome,
        findings,
        summary,
        checks: Vec::new(),
    }
}
