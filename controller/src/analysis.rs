//! Analysis: per-backend metric windows, verdicts that carry their evidence, and the threshold judge.
//!
//! The runtime snapshots each backend's cumulative counters when a window opens ([`Window`] used as a
//! counter snapshot), again when it closes, and judges the difference ([`Window::since`]). The
//! [`ThresholdJudge`] applies, in order:
//!
//! 1. fewer than `min_requests` preview requests → **inconclusive**, never a pass and never a
//!    fail (a window without traffic proves nothing; case C14);
//! 2. error rate `errors / requests` above `max_error_rate` → **fail**;
//! 3. p99 above `max_p99` → **fail**: more than 1% of the preview's requests certainly slower than
//!    `max_p99` (counted in the proxy's fine buckets, exact to within 0.78% of `max_p99`; from a
//!    scraped `/metrics`, in its buckets: exact when `max_p99` is a bucket bound, otherwise the
//!    bound acts as the next bucket bound up), never an interpolated estimate. Requests still
//!    unanswered at the window's end that have waited longer than `max_p99` ([`Window::unanswered`])
//!    count as such slow requests: whenever their answer comes, it comes too late;
//! 4. with `max_p99_ratio`, when the active backend served at least `min_requests` in the same
//!    window: preview p99 above `ratio × max(active p99, 1ms)` → **fail** (the 1 ms floor keeps a
//!    sub-millisecond active p99 from failing a healthy preview on bucket noise). With fewer, at
//!    a step where the active backend has weight, the ratio is not checked and the window is
//!    **inconclusive** (it stays open and grows; until session 40 it passed on the other rules);
//!    at a step where it has none (the preview at 100%), the rule is skipped
//!    ([`Judge::judge_without_active_traffic`]);
//! 5. otherwise **pass**.
//!
//! Before rule 1, a window below `min_requests` **fails** when its requests unanswered for longer
//! than `max_p99` alone are more than 1% of `min_requests`: whatever the rest of a window of
//! `min_requests` showed, its p99 would be above `max_p99` (a preview that never answers holds
//! its clients' requests, so its traffic may never reach `min_requests`). Below that, the
//! inconclusive summary names the requests still unanswered. Unanswered requests are not counted
//! as errors: one may still be answered well, and a response timeout counts it as an error then.
//!
//! A request whose client went away before its response head (a client abort, the proxy's
//! `crossfade_client_aborts_total`) is neither an answer nor an error: it leaves the window's
//! `requests`, so it neither counts toward `min_requests` nor dilutes the error rate, and when it
//! had waited longer than `max_p99` it counts as slower than it, as an unanswered request does
//! ([`Window::aborted`]). So a preview that hangs until its clients give up fails on its p99 (or
//! stays inconclusive when they give up before `max_p99`), never passes.
//!
//! Every verdict carries all findings (value, threshold, ok) and a human summary, so each decision is
//! explainable in status, events and the state file.
//!
//! A 0% step with `analysis.shadow` is judged by [`shadow::judge`] instead: the preview's answers
//! to mirrored requests against the active backend's, and its response times to them against
//! `max_p99` and `max_p99_ratio`.
//!
//! [`SequentialJudge`] (`analysis.judge: sequential`) instead compares green with blue over the
//! rollout's cumulative counts with always-valid tests ([`evidence`]); see its module docs and
//! docs/judgement.md.

pub mod checks;
pub mod evidence;
pub mod progress;
pub mod sequential;
pub mod shadow;
pub mod split;
#[cfg(test)]
mod tests;

use std::fmt;

use crossfade_proxy::histogram::HistogramSnapshot;
use crossfade_proxy::stats::Unanswered;
use crossfade_proxy::weight::FULL_BP;
use crossfade_proxy::BackendSnapshot;
use serde::{Deserialize, Serialize};

use crate::spec::{fraction_percent, AnalysisConfig, JudgeKind};

pub use progress::EvidenceSoFar;
pub use sequential::SequentialJudge;

/// The quantile `max_p99` bounds.
pub const P99_QUANTILE: f64 = 0.99;

/// The floor under the active backend's p99 in the ratio check, in seconds.
pub const P99_RATIO_FLOOR_SECONDS: f64 = 0.001;

/// One backend's traffic over one analysis window, or (as a snapshot) its cumulative counters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// Requests sent to the backend (any outcome), but those whose client went away before their
    /// response head ([`Window::aborted`]): the requests judged.
    pub requests: u64,
    /// Requests that failed: 5xx answers and transport errors.
    pub errors: u64,
    /// Latency distribution of the completed requests.
    pub latency: HistogramSnapshot,
    /// Requests to the backend with no response head yet at the window's end (a gauge, not a
    /// difference: those sent in earlier windows included), by how long they have waited
    /// ([`BackendSnapshot::unanswered`]). Empty in a counter snapshot read before this existed.
    #[serde(default, skip_serializing_if = "Unanswered::is_empty")]
    pub unanswered: Unanswered,
    /// Requests whose client went away before their response head, by how long they had waited
    /// then ([`BackendSnapshot::aborted`]). Neither a response nor an error, so not in
    /// `requests`, `errors` or `latency`; those that had waited longer than `max_p99` count as
    /// slower than it, as unanswered ones do ([`Window::unanswered_past`]): a preview that hangs
    /// until its clients give up is judged slow, never passed on the requests it still answers.
    #[serde(default, skip_serializing_if = "HistogramSnapshot::is_empty")]
    pub aborted: HistogramSnapshot,
}

/// The quantity a [`Finding`] measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Preview requests in the window, against `min_requests`.
    Requests,
    /// Preview errors / requests (fraction), against `max_error_rate`.
    ErrorRate,
    /// Preview p99 latency in seconds, against `max_p99`.
    P99Seconds,
    /// Preview p99 / max(active p99, 1ms), against `max_p99_ratio`.
    P99Ratio,
    /// Sequential: e-value that green's error rate is above blue's (with
    /// `fail_when_worse_than: allowance`: above blue's plus `max_error_rate_increase`), against
    /// `k / alpha`.
    ErrorEvidence,
    /// Sequential: e-value that green's error rate is below blue's plus
    /// `max_error_rate_increase`, against `1 / beta` (ok once reached).
    ErrorPassEvidence,
    /// Sequential: e-value that green is slow (above blue's p99 bucket) more often than blue (with
    /// `fail_when_worse_than: allowance`: more often than `max_latency_increase` allows), against
    /// `k / alpha`.
    SlowEvidence,
    /// Sequential: e-value that green is not slower than blue by `max_latency_increase` (ok once
    /// reached).
    SlowPassEvidence,
    /// Shadow step: answers compared in the window, against `analysis.shadow.min_compared`.
    ShadowCompared,
    /// Shadow step: mismatched / compared (fraction), against `analysis.shadow.max_mismatch_rate`.
    ShadowMismatchRate,
    /// Shadow step: mirrored exchanges the preview failed (transport errors, `shadow.timeout`,
    /// broken bodies) / (those + compared) (fraction), against `max_error_rate`.
    ShadowErrorRate,
    /// Shadow step: the preview's p99 response time to mirrored requests in seconds (to the
    /// response head, or to the failure or `shadow.timeout`), against `max_p99`.
    ShadowP99Seconds,
    /// Shadow step: the preview's p99 to mirrored requests / max(active p99, 1ms) (the active
    /// backend's live requests in the same window), against `max_p99_ratio`.
    ShadowP99Ratio,
    /// The preview's share of the window's requests (fraction), against the share its weight asks
    /// for (fraction); `between` holds the range allowed ([`split::tolerance`]). Only in a verdict
    /// whose window was split outside that range ([`split::guard`]): never `ok`.
    PreviewShare,
}

/// What a window's analysis concluded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Every threshold held, with enough traffic to tell.
    Pass,
    /// A threshold was broken.
    Fail,
    /// Too little traffic to tell.
    Inconclusive,
}

/// One measured value and the threshold it was held to.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// What was measured.
    pub metric: Metric,
    /// The measured value, in the metric's unit (count, fraction, seconds, ratio).
    pub value: f64,
    /// The configured bound, in the same unit (a minimum for `requests`, a maximum otherwise).
    pub threshold: f64,
    /// Whether the value is within the bound.
    pub ok: bool,
    /// For a p99 read from the Prometheus buckets only (a proxy scraped over `/metrics`): the
    /// bucket `(lower, upper)` in seconds known to hold it, `value` being an interpolation inside
    /// it. For a p99 ratio with either p99 from those buckets: the range `(lower, upper)` the true
    /// ratio lies in (preview's lower bound over active's upper one, and the other way round;
    /// `upper` infinite above the last bucket), `value` being the ratio of the two
    /// interpolations. `None` when `value` is exact to within 0.4% (the proxy's fine buckets; a
    /// ratio within about 0.8%) or neither a p99 nor a p99 ratio. For a
    /// [`Metric::PreviewShare`]: the range of shares `(lower, upper)` allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub between: Option<(f64, f64)>,
    /// For a p99: requests still unanswered that had waited longer than the threshold, counted
    /// as slower than it (`value` is then the answered requests' p99, or the threshold when none
    /// was answered). 0 otherwise.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unanswered: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A window's outcome with the evidence behind it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Pass, fail or inconclusive.
    pub outcome: Outcome,
    /// Every value checked, in rule order.
    pub findings: Vec<Finding>,
    /// Human summary, e.g. `error rate 2.1% > 1% (812 requests)`.
    pub summary: String,
    /// The `rollout.analysis.checks` read for this verdict, in spec order (none without checks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<checks::CheckResult>,
}

/// Decides a window's outcome from the preview's and the active backend's traffic in it.
pub trait Judge: Send + Sync {
    /// Judges one window; `active` is the active backend over the same interval, for relative rules.
    fn judge(&self, preview: &Window, active: &Window) -> Verdict;

    /// Whether the judge wants every window to start when the rollout's first window opened
    /// (cumulative counts, for sequential tests) rather than at its last conclusive verdict.
    fn cumulative(&self) -> bool {
        false
    }

    /// Judges one look at a step where the active backend takes no traffic (the preview's weight
    /// is 100%, [`FULL_BP`]): whatever the active backend shows is from earlier steps (a cumulative
    /// judge) or nothing at all. By default the same as [`Judge::judge`]. The threshold judge
    /// skips its only relative rule, `max_p99_ratio`, there (at other steps a window with too few
    /// of the active backend's requests for it is inconclusive); [`SequentialJudge`] weighs its
    /// evidence against both bases.
    fn judge_without_active_traffic(&self, preview: &Window, active: &Window) -> Verdict {
        self.judge(preview, active)
    }
}

/// Judges one look at a step where the preview's weight is `preview_bp` basis points (0 to
/// [`FULL_BP`]): [`Judge::judge_without_active_traffic`] when the active backend takes no
/// traffic, [`Judge::judge`] otherwise. The local runtime and Kubernetes mode both judge
/// through it.
pub fn judge_at(
    judge: &(dyn Judge + Send + Sync),
    preview_bp: u32,
    preview: &Window,
    active: &Window,
) -> Verdict {
    if preview_bp >= FULL_BP {
        judge.judge_without_active_traffic(preview, active)
    } else {
        judge.judge(preview, active)
    }
}

/// The judge `config.judge` names.
pub fn judge_for(config: &AnalysisConfig) -> std::sync::Arc<dyn Judge + Send + Sync> {
    match config.judge {
        JudgeKind::Threshold => std::sync::Arc::new(ThresholdJudge::new(config.clone())),
        JudgeKind::Sequential => std::sync::Arc::new(SequentialJudge::new(config.clone())),
    }
}

/// The judge that holds the preview to the fixed bounds of an [`AnalysisConfig`].
#[derive(Clone, Debug, PartialEq)]
pub struct ThresholdJudge {
    config: AnalysisConfig,
}

// === impl Window ===

impl Window {
    /// A window (or snapshot) from raw counters.
    pub fn from_counters(requests: u64, errors: u64, latency: HistogramSnapshot) -> Window {
        Window {
            requests,
            errors,
            latency,
            unanswered: Unanswered::default(),
            aborted: HistogramSnapshot::default(),
        }
    }

    /// The traffic a backend served between two snapshots of its proxy counters (`in_flight` is
    /// not part of a window; `unanswered` is `later`'s). Saturates like [`Window::since`].
    pub fn between(earlier: &BackendSnapshot, later: &BackendSnapshot) -> Window {
        Window::from_snapshot(later).since(&Window::from_snapshot(earlier))
    }

    /// A backend's cumulative proxy counters as a snapshot to take windows from: its requests
    /// but those its clients gave up on (a request given up on in a later window than the one it
    /// was sent in leaves that later window, saturating at 0).
    pub fn from_snapshot(s: &BackendSnapshot) -> Window {
        let requests = s.requests.saturating_sub(s.aborted.count());
        Window {
            unanswered: s.unanswered.clone(),
            aborted: s.aborted.clone(),
            ..Window::from_counters(requests, s.errors, s.latency.clone())
        }
    }

    /// The traffic between the snapshot `earlier` and this one, with this one's unanswered
    /// requests. Saturates at 0, so a counter reset gives an empty (inconclusive) window rather
    /// than a wrap-around.
    pub fn since(&self, earlier: &Window) -> Window {
        Window {
            requests: self.requests.saturating_sub(earlier.requests),
            errors: self.errors.saturating_sub(earlier.errors),
            latency: self.latency.since(&earlier.latency),
            unanswered: self.unanswered.clone(),
            aborted: self.aborted.since(&earlier.aborted),
        }
    }

    /// Requests without an answer known to have waited longer than `max_p99` (none without it):
    /// unanswered at the window's end, or given up on by their client in the window after
    /// waiting that long ([`Window::aborted`], certainly longer: in buckets wholly above it).
    pub fn unanswered_past(&self, max_p99: Option<std::time::Duration>) -> u64 {
        max_p99.map_or(0, |max| {
            let max = max.as_secs_f64();
            self.unanswered.longer_than(max) + self.aborted.slower_than(max).at_least
        })
    }

    /// `errors / requests` as a fraction; `None` without requests.
    pub fn error_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.errors.min(self.requests) as f64 / self.requests as f64)
    }

    /// The 99th percentile latency in seconds; `None` without latency samples. Within 0.4% with
    /// the proxy's fine buckets, an interpolation inside a Prometheus bucket without
    /// ([`HistogramSnapshot::quantile`]).
    pub fn p99(&self) -> Option<f64> {
        self.latency.quantile(P99_QUANTILE)
    }
}

// === impl Finding ===

impl Finding {
    fn at_most(metric: Metric, value: f64, threshold: f64) -> Finding {
        Finding {
            metric,
            value,
            threshold,
            ok: value <= threshold,
            between: None,
            unanswered: 0,
        }
    }
}

impl fmt::Display for Finding {
    /// `error rate 2.1% > 1%`, `p99 120ms ≤ 250ms`, `12 requests < 50`; a value above its bound
    /// that did not fail (the sequential judge's ceilings, before the evidence is in) is
    /// `error rate 7.41%, not proven above 1%`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (good, bad) = match self.metric {
            Metric::Requests | Metric::ShadowCompared => ("≥", "<"),
            _ => ("≤", ">"),
        };
        let cmp = if self.ok { good } else { bad };
        let (v, t) = (self.value, self.threshold);
        match self.metric {
            Metric::Requests => write!(f, "{v} requests {cmp} {t}"),
            // The sequential judge's ceiling fails only on evidence: until then an error rate
            // above `max_error_rate` is not a pass and is not shown as within it.
            Metric::ErrorRate if self.ok && v > t => write!(
                f,
                "error rate {}, not proven above {}",
                fraction_percent(v),
                fraction_percent(t)
            ),
            Metric::ErrorRate => {
                write!(
                    f,
                    "error rate {} {cmp} {}",
                    fraction_percent(v),
                    fraction_percent(t)
                )
            }
            Metric::P99Seconds => self.fmt_p99(f),
            Metric::ShadowP99Seconds => {
                f.write_str("shadow ")?;
                self.fmt_p99(f)
            }
            Metric::P99Ratio | Metric::ShadowP99Ratio => {
                if self.metric == Metric::ShadowP99Ratio {
                    f.write_str("shadow ")?;
                }
                match self.between {
                    Some((lo, hi)) if hi.is_finite() => write!(
                        f,
                        "p99 ratio to active ≈ {v:.2} (between {lo:.2} and {hi:.2}) {cmp} {t:.2}"
                    ),
                    Some((lo, _)) => {
                        write!(
                            f,
                            "p99 ratio to active ≈ {v:.2} (above {lo:.2}) {cmp} {t:.2}"
                        )
                    }
                    None => write!(f, "p99 ratio to active {v:.2} {cmp} {t:.2}"),
                }
            }
            Metric::ShadowCompared => write!(f, "{v} shadow comparisons {cmp} {t}"),
            Metric::ShadowMismatchRate => write!(
                f,
                "shadow mismatch rate {} {cmp} {}",
                fraction_percent(v),
                fraction_percent(t)
            ),
            Metric::ShadowErrorRate => write!(
                f,
                "shadow error rate {} {cmp} {}",
                fraction_percent(v),
                fraction_percent(t)
            ),
            Metric::ErrorEvidence => write!(f, "evidence of more errors {v:.3} {cmp} {t:.3}"),
            Metric::SlowEvidence => write!(f, "evidence of more slow requests {v:.3} {cmp} {t:.3}"),
            Metric::ErrorPassEvidence | Metric::SlowPassEvidence => {
                let cmp = if self.ok { "≥" } else { "<" };
                write!(f, "evidence of no regression {v:.3} {cmp} {t:.3}")
            }
            Metric::PreviewShare => {
                let (lo, hi) = self.between.unwrap_or((t, t));
                let within = if self.ok { "within" } else { "outside" };
                write!(
                    f,
                    "preview share {} {within} {}–{}",
                    fraction_percent(v),
                    fraction_percent(lo),
                    fraction_percent(hi)
                )
            }
        }
    }
}

impl Finding {
    /// `p99 120ms ≤ 250ms`; from the Prometheus buckets only, `p99 ≈ 875ms (between 750ms and 1s)
    /// > 600ms`; and when the value lies above the bound but the decision did not fail (the bucket
    /// holding it straddles the bound), `p99 ≈ 601ms, not proven above 600ms` instead of `≤`.
    /// With requests unanswered past the bound, when they decided it:
    /// `p99 > 500ms: 8 requests unanswered for more than 500ms`; otherwise the p99 text and
    /// `(and 2 requests unanswered for more than 500ms)`; at a shadow step `8 mirrored requests`.
    fn fmt_p99(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (v, t) = (millis(self.value), millis(self.threshold));
        if self.unanswered > 0 {
            let waiting = match self.metric {
                Metric::ShadowP99Seconds => format!("{} mirrored", self.unanswered),
                _ => self.unanswered.to_string(),
            };
            let noun = if self.unanswered == 1 {
                "request"
            } else {
                "requests"
            };
            let late = format!("{waiting} {noun} unanswered for more than {t}");
            if !self.ok && self.value <= self.threshold {
                return write!(f, "p99 > {t}: {late}");
            }
            let answered = Finding {
                unanswered: 0,
                ..*self
            };
            answered.fmt_p99(f)?;
            return write!(f, " (and {late})");
        }
        let approx = if self.between.is_some() { "≈ " } else { "" };
        let range = match self.between {
            Some((lo, hi)) if hi.is_finite() => {
                format!(" (between {} and {})", millis(lo), millis(hi))
            }
            Some((lo, _)) => format!(" (above {})", millis(lo)),
            None => String::new(),
        };
        match (self.ok, self.value > self.threshold) {
            (true, true) => write!(f, "p99 ≈ {v}{range}, not proven above {t}"),
            (true, false) => write!(f, "p99 {approx}{v}{range} ≤ {t}"),
            (false, _) => write!(f, "p99 {approx}{v}{range} > {t}"),
        }
    }

    /// The `max_p99` finding for `latency` and `unanswered` requests that have waited longer than
    /// `max` (counted as slower than it): fails when more than 1% of the requests were certainly
    /// slower than `max` (p99 ≤ max ⇔ at most ⌊n/100⌋ requests slower), never on an estimate.
    /// `None` without latency samples and without such requests.
    pub fn p99_ceiling(latency: &HistogramSnapshot, max: f64, unanswered: u64) -> Option<Finding> {
        let p99 = latency.quantile_within(P99_QUANTILE);
        if p99.is_none() && unanswered == 0 {
            return None;
        }
        let mut slow = latency.slower_than(max);
        slow.at_least += unanswered;
        slow.total += unanswered;
        let (value, between) = p99.map_or((max, None), |p| (p.estimate, p.between));
        Some(Finding {
            metric: Metric::P99Seconds,
            value,
            threshold: max,
            ok: !slow.proven_above(1.0 - P99_QUANTILE),
            between,
            unanswered,
        })
    }

    /// Below `min_requests`: the `max_p99` finding when the `unanswered` requests past `max` alone
    /// are more than 1% of `min_requests` (every window of `min_requests` holding them fails), so
    /// the window fails with it; `None` otherwise.
    pub fn p99_decided(unanswered: u64, max: f64, min_requests: u64) -> Option<Finding> {
        let decided = unanswered as f64 > (1.0 - P99_QUANTILE) * min_requests as f64 + 1e-9;
        decided.then_some(Finding {
            metric: Metric::P99Seconds,
            value: max,
            threshold: max,
            ok: false,
            between: None,
            unanswered,
        })
    }
}

/// Seconds as milliseconds with up to one decimal: `0.1234` → `123.4ms`.
pub(crate) fn millis(seconds: f64) -> String {
    let text = format!("{:.1}", seconds * 1000.0);
    format!("{}ms", text.trim_end_matches('0').trim_end_matches('.'))
}

// === impl Verdict ===

impl Verdict {
    /// Builds a verdict whose summary shows the checks that decided it and the request count:
    /// `error rate 0% ≤ 1%, p99 12ms ≤ 250ms, 812 requests`, `error rate 2.1% > 1% (812 requests)`,
    /// `12 requests < 50`.
    fn new(outcome: Outcome, findings: Vec<Finding>, note: Option<String>) -> Verdict {
        let requests = findings
            .iter()
            .find(|f| f.metric == Metric::Requests)
            .copied();
        let checks: Vec<String> = findings
            .iter()
            .filter(|f| f.metric != Metric::Requests && (outcome == Outcome::Pass || !f.ok))
            .map(ToString::to_string)
            .collect();
        let mut summary = checks.join(", ");
        match (outcome, requests) {
            (Outcome::Pass, Some(r)) => summary = format!("{summary}, {} requests", r.value),
            (Outcome::Fail, Some(r)) => summary = format!("{summary} ({} requests)", r.value),
            (Outcome::Inconclusive, Some(r)) if !r.ok => summary = r.to_string(),
            _ => {}
        }
        if let Some(note) = note {
            summary = if summary.is_empty() {
                note
            } else {
                format!("{summary}; {note}")
            };
        }
        Verdict {
            outcome,
            findings,
            summary,
            checks: Vec::new(),
        }
    }

    /// Whether this is an inconclusive verdict of a sequential judge that had enough traffic to
    /// weigh evidence (it carries [`Metric::ErrorPassEvidence`]): evidence is still being gathered,
    /// and the look does not count toward `max_inconclusive`.
    /// A check without a value makes the look count like any inconclusive one, and so does a
    /// window the proxies did not split as published ([`Metric::PreviewShare`], from
    /// [`split::guard`]): evidence gathered while the preview gets none or few of its requests
    /// (all its endpoints held out by health checks) would otherwise leave the step waiting for
    /// its progress deadline, look after look.
    pub fn accumulating(&self) -> bool {
        self.outcome == Outcome::Inconclusive
            && self.finding(Metric::ErrorPassEvidence).is_some()
            && self.finding(Metric::PreviewShare).is_none()
            && self.checks.iter().all(|c| c.value.is_some())
    }

    /// The finding for `metric`, if it was checked.
    pub fn finding(&self, metric: Metric) -> Option<&Finding> {
        self.findings.iter().find(|f| f.metric == metric)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Pass => "passed",
            Outcome::Fail => "failed",
            Outcome::Inconclusive => "inconclusive",
        })
    }
}

// === impl ThresholdJudge ===

impl ThresholdJudge {
    /// A judge holding previews to `config`'s thresholds (validate the config first: a
    /// `min_requests` of 0 would let an empty window pass).
    pub fn new(config: AnalysisConfig) -> ThresholdJudge {
        ThresholdJudge { config }
    }

    /// The thresholds in force.
    pub fn config(&self) -> &AnalysisConfig {
        &self.config
    }

    /// Rule 1: too few requests to count, whatever they show. Errors seen are named in the
    /// summary but decide nothing (`min_requests` is the fewest a window needs before its result
    /// counts); a crash-looping preview is caught by its exits and the progress deadline instead.
    /// Requests still unanswered are named too (`12 requests < 20; 3 still unanswered`): fewer
    /// requests than expected may be the preview holding them.
    fn too_few(&self, preview: &Window) -> Verdict {
        let requests = Finding {
            metric: Metric::Requests,
            value: preview.requests as f64,
            threshold: self.config.min_requests as f64,
            ok: false,
            between: None,
            unanswered: 0,
        };
        let note = match preview.errors {
            0 => None,
            1 => Some("1 error".to_string()),
            n => Some(format!("{n} errors")),
        };
        let mut v = Verdict::new(Outcome::Inconclusive, vec![requests], None);
        if let Some(note) = note {
            v.summary = format!("{} ({note})", v.summary);
        }
        let waiting = preview.unanswered.total();
        if waiting > 0 {
            v.summary = format!("{}; {waiting} still unanswered", v.summary);
        }
        let aborted = preview.aborted.count();
        if aborted > 0 {
            v.summary = format!("{}; {aborted} given up by their clients", v.summary);
        }
        v
    }

    /// The verdict of a window below `min_requests` whose requests unanswered past `max_p99`
    /// already decide it ([`Finding::p99_decided`]): a fail; `None` otherwise.
    pub(crate) fn decided_below_min(&self, preview: &Window) -> Option<Verdict> {
        let c = &self.config;
        let max = c.max_p99?.as_secs_f64();
        let late = preview.unanswered_past(c.max_p99);
        let p99 = Finding::p99_decided(late, max, c.min_requests)?;
        let requests = Finding {
            metric: Metric::Requests,
            value: preview.requests as f64,
            threshold: c.min_requests as f64,
            ok: false,
            between: None,
            unanswered: 0,
        };
        Some(Verdict::new(Outcome::Fail, vec![requests, p99], None))
    }

    /// Rule 4, when it applies: preview p99 against a multiple of active's; `None` without
    /// `max_p99_ratio`, and `Err` with what the window lacked for it (`active served 12 requests
    /// (< 50)`).
    fn ratio(&self, preview: &Window, active: &Window) -> Result<Option<Finding>, String> {
        let Some(ratio) = self.config.max_p99_ratio else {
            return Ok(None);
        };
        let min = self.config.min_requests;
        let preview_p99 = preview.latency.quantile_within(P99_QUANTILE);
        match (preview_p99, active.latency.quantile_within(P99_QUANTILE)) {
            (Some(p), Some(a)) if active.requests >= min => {
                let floor = |x: f64| x.max(P99_RATIO_FLOOR_SECONDS);
                let value = p.estimate / floor(a.estimate);
                // From Prometheus buckets (Kubernetes mode) both p99s are interpolations: the
                // message gives the range the true ratio lies in.
                let between = (p.between.is_some() || a.between.is_some()).then(|| {
                    let (p_lo, p_hi) = p.between.unwrap_or((p.estimate, p.estimate));
                    let (a_lo, a_hi) = a.between.unwrap_or((a.estimate, a.estimate));
                    (p_lo / floor(a_hi), p_hi / floor(a_lo))
                });
                Ok(Some(Finding {
                    between,
                    ..Finding::at_most(Metric::P99Ratio, value, ratio)
                }))
            }
            (_, None) if active.requests >= min => Err(format!(
                "no latency samples of active's {} requests",
                active.requests
            )),
            _ => Err(format!(
                "active served {} requests (< {min})",
                active.requests
            )),
        }
    }
}

impl Judge for ThresholdJudge {
    fn judge(&self, preview: &Window, active: &Window) -> Verdict {
        self.look(preview, active, false)
    }

    /// At a step where the active backend takes no traffic (the preview at 100%) there is no
    /// p99 of it to hold the preview to: `max_p99_ratio` is skipped (the summary says so) and
    /// the other rules decide.
    fn judge_without_active_traffic(&self, preview: &Window, active: &Window) -> Verdict {
        self.look(preview, active, true)
    }
}

impl ThresholdJudge {
    /// One look; `alone` when the active backend takes no traffic at this step.
    fn look(&self, preview: &Window, active: &Window, alone: bool) -> Verdict {
        let c = &self.config;
        if preview.requests < c.min_requests {
            return self
                .decided_below_min(preview)
                .unwrap_or_else(|| self.too_few(preview));
        }
        let mut findings = vec![Finding {
            metric: Metric::Requests,
            value: preview.requests as f64,
            threshold: c.min_requests as f64,
            ok: true,
            between: None,
            unanswered: 0,
        }];
        let rate = preview.error_rate().unwrap_or(0.0);
        findings.push(Finding::at_most(Metric::ErrorRate, rate, c.max_error_rate));
        let (mut note, mut unchecked) = (None, false);
        let late = preview.unanswered_past(c.max_p99);
        match preview.p99() {
            Some(_) => {
                if let Some(max) = c.max_p99 {
                    let max = max.as_secs_f64();
                    findings.extend(Finding::p99_ceiling(&preview.latency, max, late));
                }
                match self.ratio(preview, active) {
                    Ok(finding) => findings.extend(finding),
                    Err(lacked) => {
                        note = Some(format!("p99 ratio not checked: {lacked}"));
                        // Session 40: where the active backend has weight, a window with too
                        // few of its requests passed with the configured ratio unchecked.
                        unchecked = !alone;
                    }
                }
            }
            None => {
                // Nothing answered: requests waiting past `max_p99` can still prove it broken.
                let ceiling = c
                    .max_p99
                    .and_then(|m| Finding::p99_ceiling(&preview.latency, m.as_secs_f64(), late));
                match ceiling {
                    Some(broken) if !broken.ok => findings.push(broken),
                    _ if c.max_p99.is_some() || c.max_p99_ratio.is_some() => {
                        let note = "no latency samples to check p99 against".to_string();
                        return Verdict::new(Outcome::Inconclusive, findings, Some(note));
                    }
                    _ => {}
                }
            }
        }
        let outcome = match (findings.iter().all(|f| f.ok), unchecked) {
            (false, _) => Outcome::Fail,
            (true, true) => Outcome::Inconclusive,
            (true, false) => Outcome::Pass,
        };
        Verdict::new(outcome, findings, note)
    }
}
