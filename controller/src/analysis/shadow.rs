//! The shadow judge: a 0% step judged by how the preview's answers to mirrored requests compared
//! with the active backend's (`rollout.analysis.shadow`, see [`ShadowGuard`]), by how many it
//! failed to give (`max_error_rate`) and by how long it took to give them (the rollout's
//! `max_p99` and `max_p99_ratio`).
//!
//! Rules, in order:
//!
//! 1. fewer than `min_compared` comparisons in the window → **inconclusive** (0/0 is never 0%,
//!    and a window the data plane could not read has no comparisons); but with `max_p99`, when
//!    the mirrored requests still unanswered past it are more than 1% of `min_compared`, a
//!    **fail** already (any window of `min_compared` holding them has its p99 above `max_p99`:
//!    the rule of [`Finding::p99_decided`] for live requests, so that a preview that never
//!    answers fails rather than staying inconclusive);
//! 2. mismatched / compared above `max_mismatch_rate` → **fail**;
//! 3. mirrored exchanges the preview failed (a transport error, `shadow.timeout`, a body broken
//!    mid-stream: no answer to compare) over those and the compared ones above `max_error_rate` →
//!    **fail** (its 5xx answers are status mismatches already, when the active backend's were not);
//! 4. with `max_p99`: more than 1% of the mirrored exchanges certainly slower than it → **fail**
//!    ([`Finding::p99_ceiling`] over the preview's response times to mirrored requests: to the
//!    response head, or to the failure or `shadow.timeout` when none came, and the ones still
//!    waiting past the bound); a window with comparisons but no response time (a data plane that
//!    does not record them) is **inconclusive**, never a pass with the bound unchecked;
//! 5. with `max_p99_ratio`: on the **pairs** (per mirrored request both backends answered, the
//!    active backend's time to its response head and the preview's, `ShadowSnapshot::paired_*`)
//!    when the window holds at least `min_compared` of them: the preview's p99 on them above
//!    `ratio × max(the active backend's p99 on the same requests, 1ms)` → **fail**. With fewer
//!    pairs (a data plane that does not record them), as before pairs were kept: the preview's
//!    p99 to all mirrored requests against the active backend's live p99 over the window, when it
//!    served at least `min_requests` live requests. The summary says which was read
//!    (`paired: …` or `unpaired: …`). With too few of both, the ratio is not checked and the
//!    window is **inconclusive** (`shadow p99 ratio not checked: 3 pairs < 5, and against its
//!    live p99: active served 12 requests (< 20)`): never a pass with a configured bound
//!    unchecked (until session 40 it passed on the other rules);
//! 6. otherwise **pass**.
//!
//! The verdict records the comparisons, the rates and their bounds, the shadow p99 (and ratio) and
//! their bounds, and what differed (status, header, body), skips and errors. The sequential
//! judge's evidence rules (`max_latency_increase`, `max_error_rate_increase`) weigh live traffic
//! over the rollout and are not applied here; its ceilings (`max_error_rate`, `max_p99`) are.

use crossfade_proxy::shadow::SkipReason;
use crossfade_proxy::ShadowSnapshot;

use super::{millis, Finding, Metric, Outcome, ThresholdJudge, Verdict, Window};
use crate::spec::AnalysisConfig;

#[cfg(doc)]
use crate::spec::ShadowGuard;

/// Judges one window of shadow traffic (the counters' difference over the window) under
/// `analysis` (its `shadow` guard, default when absent, and its latency bounds); `None` when the
/// data plane has no shadow counters, which is inconclusive. `active` is the active backend's
/// live traffic over the same window, for `max_p99_ratio`.
pub fn judge(
    analysis: &AnalysisConfig,
    window: Option<&ShadowSnapshot>,
    active: &Window,
) -> Verdict {
    let guard = analysis.shadow.clone().unwrap_or_default();
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
    let max_p99 = analysis.max_p99.map(|d| d.as_secs_f64());
    let late = max_p99.map_or(0, |max| w.unanswered.longer_than(max));
    if !compared.ok {
        let decided = max_p99.and_then(|max| Finding::p99_decided(late, max, guard.min_compared));
        if let Some(p99) = decided {
            let p99 = shadow(p99);
            findings.push(p99);
            let summary = format!("{p99} ({compared}: {detail})");
            return verdict(Outcome::Fail, findings, summary);
        }
        let summary = match window {
            None => "no shadow counters from the data plane (0 shadow comparisons)".to_string(),
            Some(_) => format!("{compared} ({detail})"),
        };
        return verdict(Outcome::Inconclusive, findings, summary);
    }
    let rate = w.mismatched as f64 / w.compared() as f64;
    let rate = Finding::at_most(Metric::ShadowMismatchRate, rate, guard.max_mismatch_rate);
    findings.push(rate);
    // The exchanges the preview failed have no answer to compare: they are judged as errors.
    let failed = w.errors as f64 / (w.compared() + w.errors) as f64;
    let bound = analysis.max_error_rate;
    findings.push(Finding::at_most(Metric::ShadowErrorRate, failed, bound));
    // The configured latency bounds that could not be checked, each saying why: the verdict is
    // then no pass (a fail of another rule still fails).
    let mut unchecked = Vec::new();
    // A latency bound with no response time to hold it to (a data plane that does not record
    // them). `max_p99` is checked still when mirrored requests wait past it.
    let untimed = w.latency.is_empty();
    if untimed && ((max_p99.is_some() && late == 0) || analysis.max_p99_ratio.is_some()) {
        unchecked.push(UNTIMED.to_string());
    }
    if let Some(p99) = max_p99.and_then(|max| Finding::p99_ceiling(&w.latency, max, late)) {
        findings.push(shadow(p99));
    }
    // What the ratio was read from, shown after it.
    let mut basis = None;
    if analysis.max_p99_ratio.is_some() && !untimed {
        match ratio(analysis, guard.min_compared, w, active) {
            Ok(Some((finding, read))) => {
                findings.push(shadow(finding));
                basis = Some(read);
            }
            Ok(None) => {}
            // Session 40: too few pairs and too few of the active backend's live requests to
            // read the ratio on. This passed on the other rules, so a green could reach live
            // weight with its configured `max_p99_ratio` never checked; the window now stays
            // open and grows until it can be (or `max_inconclusive` ends the step).
            Err(skipped) => unchecked.push(skipped),
        }
    }
    let outcome = match (findings.iter().all(|f| f.ok), unchecked.is_empty()) {
        (false, _) => Outcome::Fail,
        (true, false) => Outcome::Inconclusive,
        (true, true) => Outcome::Pass,
    };
    let shown: Vec<String> = findings[1..]
        .iter()
        .filter(|f| outcome != Outcome::Fail || !f.ok)
        .map(|f| match (&basis, f.metric) {
            (Some(basis), Metric::ShadowP99Ratio) => format!("{f} ({basis})"),
            _ => f.to_string(),
        })
        .collect();
    let mut summary = format!("{} ({} compared: {detail})", shown.join(", "), w.compared());
    if !unchecked.is_empty() {
        summary = format!("{summary}; {}", unchecked.join("; "));
    }
    verdict(outcome, findings, summary)
}

/// Rule 5: the `max_p99_ratio` finding (as [`Metric::P99Ratio`]) and what it was read from, or
/// why it was not checked.
///
/// On the pairs when the window holds at least `min_compared` of them: the preview's p99 over
/// the active backend's p99 on the very same mirrored requests (each timed by both, a moment
/// apart), the strongest reading there is: the same requests, the same moment, the same mix.
/// With fewer (a data plane that does not record pairs: a proxy older than the controller in
/// Kubernetes mode), the preview's p99 over all its mirrored requests against the active
/// backend's live p99 in the window, when it served at least `min_requests`, as before pairs
/// were kept; otherwise `Err` with what the window lacked, which makes it inconclusive.
fn ratio(
    analysis: &AnalysisConfig,
    min_compared: u64,
    w: &ShadowSnapshot,
    active: &Window,
) -> Result<Option<(Finding, String)>, String> {
    let pairs = w.paired_preview.count().min(w.paired_active.count());
    if pairs >= min_compared {
        let config = AnalysisConfig {
            min_requests: min_compared,
            ..analysis.clone()
        };
        let preview = Window::from_counters(pairs, 0, w.paired_preview.clone());
        let blue = Window::from_counters(pairs, 0, w.paired_active.clone());
        let finding = ThresholdJudge::new(config)
            .ratio(&preview, &blue)
            .map_err(|lacked| format!("shadow p99 ratio not checked: {lacked}"))?;
        let p99 = |h: &crossfade_proxy::histogram::HistogramSnapshot| {
            h.quantile(super::P99_QUANTILE).map_or("-".into(), millis)
        };
        let read = format!(
            "paired: p99 {} vs active's {} on the same {pairs} mirrored requests",
            p99(&w.paired_preview),
            p99(&w.paired_active)
        );
        return Ok(finding.map(|f| (f, read)));
    }
    let preview = Window::from_counters(w.compared(), 0, w.latency.clone());
    match ThresholdJudge::new(analysis.clone()).ratio(&preview, active) {
        Ok(finding) => Ok(finding.map(|f| {
            let read =
                format!("unpaired: {pairs} pairs < {min_compared}, against active's live p99");
            (f, read)
        })),
        Err(lacked) => Err(format!(
            "shadow p99 ratio not checked: {pairs} pairs < {min_compared}, and against its live \
             p99: {lacked}"
        )),
    }
}

/// The note of a window with comparisons but no response time of them, under a latency bound.
const UNTIMED: &str =
    "shadow p99 not checked: no response times of mirrored requests from the data plane";

/// A p99 finding of the live rules as its shadow-step counterpart.
fn shadow(finding: Finding) -> Finding {
    let metric = match finding.metric {
        Metric::P99Ratio => Metric::ShadowP99Ratio,
        _ => Metric::ShadowP99Seconds,
    };
    Finding { metric, ..finding }
}

/// `3 differed (0 status, 0 header, 3 body), 1 skipped, 0 errors`, and the mirrored requests
/// still waiting for the preview's answer when there are any. Skips are named by reason when the
/// proxy reports them ([`ShadowSnapshot::skipped_by`]): `2000 skipped (2000 for their method, not
/// in mirror.methods)`.
fn detail(w: &ShadowSnapshot) -> String {
    let mut text = format!(
        "{} differed ({} status, {} header, {} body), {} skipped{}, {} errors",
        w.mismatched,
        w.status_mismatches,
        w.header_mismatches,
        w.body_mismatches,
        w.skipped,
        skip_reasons(w),
        w.errors
    );
    let waiting = w.unanswered.total();
    if waiting > 0 {
        text = format!("{text}, {waiting} still unanswered");
    }
    text
}

/// ` (2000 for their method, not in mirror.methods; 3 over mirror.max_in_flight)`: each reason
/// with skips in the window, in [`SkipReason::ALL`]'s order, with the `mirror` key that decides it
/// (docs/shadow.md, "What is mirrored"); empty when none is reported by reason.
fn skip_reasons(w: &ShadowSnapshot) -> String {
    let reasons: Vec<String> = SkipReason::ALL
        .iter()
        .zip(w.skipped_by)
        .filter(|&(_, n)| n > 0)
        .map(|(reason, n)| {
            let why = match reason {
                SkipReason::Method => "for their method, not in mirror.methods",
                SkipReason::RequestBody => {
                    "for a request body above mirror.max_body_bytes, broken, or not ended within \
                     mirror.timeout"
                }
                SkipReason::Concurrency => "over mirror.max_in_flight",
                SkipReason::BodyTooLarge => {
                    "for answers above mirror.max_body_bytes with equal status and headers"
                }
                SkipReason::PrimaryIncomplete => "for the active backend's answer not completing",
            };
            format!("{n} {why}")
        })
        .collect();
    match reasons.is_empty() {
        true => String::new(),
        false => format!(" ({})", reasons.join("; ")),
    }
}

fn verdict(outcome: Outcome, findings: Vec<Finding>, summary: String) -> Verdict {
    Verdict {
        outcome,
        findings,
        summary,
        checks: Vec::new(),
    }
}
