//! The sequential judge: green against blue on the same traffic, with always-valid tests over the
//! rollout's cumulative counts, so it may look after every batch of requests.
//!
//! Two relative metrics, each with two tests (see [`super::evidence`] for the statistics):
//!
//! - **errors**: errors / requests. *Worse*: e-value against `H0: r ≤ 1`, where `r` is green's
//!   error rate as a multiple of blue's. *Not worse*: e-value against `H0: r ≥ r1`, where
//!   `r1 = (p_blue + max_error_rate_increase) / p_blue` (blue's rate smoothed as
//!   `(errors + ½) / (requests + 1)`, so 0/0 is never 0%), averaged with a one-sample e-value
//!   against `H0: green's rate ≥ max_error_rate_increase`, which implies the former for any blue
//!   rate and, unlike the ratio test, gathers evidence when neither side has errors.
//! - **slow requests**: the share of requests slower than `L`, the lower bound of the histogram
//!   bucket that holds blue's p99 (so `L` is a bucket bound and counts above it are exact).
//!   *Worse*: `H0: r ≤ 1`. *Not worse*: `H0: r ≥ r1`, where `r1` is how much more often a green
//!   whose latencies are blue's grown by `max_latency_increase` would exceed `L` (read off blue's
//!   own histogram, interpolated inside its bucket).
//!
//! With `fail_when_worse_than: allowance` the *worse* tests are against the allowance instead:
//! slow requests `H0: r ≤ r1` (alternatives [`beyond_alternatives`]); errors the same ratio test
//! and an absolute one (`H0: p_green ≤ p_blue + max_error_rate_increase`, see
//! `beyond_absolute`), each at half the level, since the ratio test cannot gather evidence
//! against a blue without errors.
//!
//! At a step where blue takes no traffic (green at 100%, [`Judge::judge_without_active_traffic`])
//! blue's counts are those of the earlier steps: a *worse* e-value is then the smaller of the two
//! (worse than blue, and worse beyond the allowance), so a fail needs evidence of both and a drift
//! of the service's own within the allowance is not read as green being worse (docs/judgement.md,
//! "A step where blue takes no traffic").
//!
//! Hard ceilings stay, as one-sample tests of the same kind: `max_error_rate` (green's error rate
//! above it) and `max_p99` (more than 1% of green's requests slower than it; requests still
//! unanswered that have waited longer than `max_p99` count as slower, as in the threshold judge).
//!
//! Rules, in order:
//! 1. fewer than `min_requests` green requests → **inconclusive** (but **fail** when green's requests
//!    unanswered past `max_p99` alone are more than 1% of `min_requests`, as in the threshold
//!    judge: see [`super`]); it counts toward
//!    `max_inconclusive` only while green has served no request at all (see rule 4);
//! 2. any "worse" or ceiling e-value at or above `k / alpha` (`k` tests share `alpha`, Bonferroni)
//!    → **fail**: P(ever failing a green no worse than blue) ≤ `alpha`, at every look (with
//!    `allowance`: a green no worse than blue by more than the allowed increases);
//! 3. both "not worse" e-values at or above `1 / beta`, error rate within `max_error_rate` and p99
//!    within `max_p99` → **pass**: P(passing a green worse by the allowed increase) ≤ `beta`;
//! 4. otherwise **inconclusive**: evidence is still being
//!    gathered ([`Verdict::accumulating`]), which does not count toward `max_inconclusive` (the step's `progress_deadline`
//!    bounds the wait). No latency samples, or too few blue ones to place `L`, never pass.

#[cfg(test)]
mod tests;

use crossfade_proxy::histogram::{HistogramSnapshot, LATENCY_BOUNDS_SECONDS};

use super::evidence::{
    beyond_alternatives, not_worse_alternatives, rate_evidence, ratio_evidence, worse_alternatives,
    Tally,
};
use super::{millis, Finding, Judge, Metric, Outcome, ThresholdJudge, Verdict, Window};
use crate::spec::{fraction_percent, AnalysisConfig, FailWhenWorseThan};

/// The quantile of blue's latency whose bucket sets the slow-request bound.
pub const SLOW_QUANTILE: f64 = 0.99;

/// The share of requests slower than `max_p99` that the p99 ceiling allows.
const P99_CEILING_SHARE: f64 = 0.01;

/// Green error rates, as fractions of `max_error_rate_increase`, that the one-sample "not worse"
/// test of errors bets on (a mixture: each is one likelihood ratio against the allowance itself).
const ABSOLUTE_ALTERNATIVES: [f64; 4] = [0.1, 0.25, 0.5, 0.75];

/// The smallest "not worse" ratio used, so that a tiny allowed increase still leaves a gap.
const MIN_RATIO: f64 = 1.05;

/// Blue error rates `c` at which the fail side against the allowance may split "green is worse
/// than blue by more than the allowance" into "blue's rate is below `c`" and "green's is above
/// `c` + the allowance" (a 1-2-5 series, so some `c` is within 2.5× above any blue rate from 0.1%).
const BLUE_RATE_GRID: [f64; 9] = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5];

/// The judge that compares green with blue sequentially; see the module docs.
#[derive(Clone, Debug, PartialEq)]
pub struct SequentialJudge {
    config: AnalysisConfig,
}

/// One metric's comparison: rates and both e-values.
struct Comparison {
    green: Tally,
    blue: Tally,
    worse: f64,
    not_worse: f64,
    r1: f64,
    /// What `worse` is evidence of.
    basis: FailBasis,
}

/// What a look's *worse* e-values are evidence of.
#[derive(Clone, Copy, Debug, PartialEq)]
enum FailBasis {
    /// Green is worse than blue (`fail_when_worse_than: blue`).
    Blue,
    /// Green is worse than blue by more than the allowed increase (`allowance`).
    Allowance,
    /// Both at once (the smaller of the two e-values): a look at a step where blue takes no
    /// traffic, whatever `fail_when_worse_than` says. Nothing measured at that step compares
    /// green with blue on the same traffic, so a drift of the service's own (load, a cold cache)
    /// reads as green being worse; the allowance is the drift the spec accepts.
    Both,
}

// === impl SequentialJudge ===

impl SequentialJudge {
    /// A judge with `config`'s sequential settings and ceilings (validate the config first).
    pub fn new(config: AnalysisConfig) -> SequentialJudge {
        SequentialJudge { config }
    }

    /// Rule 1. Unlike a window, the cumulative count only grows: once green has served any request
    /// it is gathering evidence (so looking every second does not hit `max_inconclusive` before
    /// `min_requests` arrive), and only a green that has served nothing at all counts toward it.
    fn too_few(&self, preview: &Window) -> Verdict {
        let mut v = ThresholdJudge::new(self.config.clone()).too_few(preview);
        if preview.requests > 0 {
            v.findings.push(Finding {
                metric: Metric::ErrorPassEvidence,
                value: 1.0,
                threshold: 1.0 / self.config.beta,
                ok: false,
                between: None,
                unanswered: 0,
            });
            v.summary = format!("sequential, collecting evidence: {}", v.summary);
        }
        v
    }

    /// How many fail tests share `alpha`: errors and slow requests, plus each configured ceiling.
    fn fail_tests(&self) -> u32 {
        2 + u32::from(self.config.max_error_rate < 1.0) + u32::from(self.config.max_p99.is_some())
    }

    /// What the *worse* tests are evidence of: the spec's `fail_when_worse_than`, or both
    /// bases at a step where blue takes no traffic (`alone`).
    fn basis(&self, alone: bool) -> FailBasis {
        match (alone, self.config.fail_when_worse_than) {
            (true, _) => FailBasis::Both,
            (false, FailWhenWorseThan::Blue) => FailBasis::Blue,
            (false, FailWhenWorseThan::Allowance) => FailBasis::Allowance,
        }
    }

    fn errors(&self, preview: &Window, active: &Window, basis: FailBasis) -> Comparison {
        let green = Tally {
            bad: preview.errors,
            total: preview.requests,
        };
        let blue = Tally {
            bad: active.errors,
            total: active.requests,
        };
        let p_blue = (blue.bad as f64 + 0.5) / (blue.total as f64 + 1.0);
        let increase = self.config.max_error_rate_increase;
        let r1 = ((p_blue + increase) / p_blue).max(MIN_RATIO);
        let mut comparison = compare(green, blue, r1, basis, || {
            // The ratio test against `r1` conditions on the errors seen: with none on blue's side
            // `r1` grows with blue's traffic and a broken green can never be proven beyond it. The
            // absolute split below can; either may fail (each at half the level: Bonferroni).
            let ratio = ratio_evidence(green, blue, r1, &beyond_alternatives(r1));
            ratio.max(beyond_absolute(green, blue, increase)) / 2.0
        });
        // The ratio test conditions on the errors seen on both sides: with none (a healthy green
        // and a healthy blue) it stays at 1 forever. Green's own rate below `increase` also shows
        // it is not worse than blue by `increase` (blue's rate is ≥ 0), and that one-sample test
        // gathers evidence from every request. The mean of two e-values is an e-value, so the
        // pass bar `1 / beta` keeps its guarantee.
        let alts = ABSOLUTE_ALTERNATIVES.map(|k| k * increase);
        let absolute = rate_evidence(green, increase, &alts);
        comparison.not_worse = (comparison.not_worse + absolute) / 2.0;
        comparison
    }

    /// The slow-request comparison, or why it cannot be made yet.
    fn slow(
        &self,
        preview: &Window,
        active: &Window,
        basis: FailBasis,
    ) -> Result<(f64, Comparison), String> {
        let blue_n = active.latency.count();
        if blue_n < self.config.min_requests {
            return Err(format!(
                "latency not compared yet: blue has {blue_n} latency samples (< {})",
                self.config.min_requests
            ));
        }
        if preview.latency.count() == 0 {
            return Err("latency not compared: green has no latency samples".into());
        }
        let index = slow_bound(&active.latency, SLOW_QUANTILE);
        let bound = LATENCY_BOUNDS_SECONDS[index];
        let green = above(&preview.latency, index);
        let blue = above(&active.latency, index);
        let shifted = self.config.max_latency_increase.shrink(bound);
        let r1 = match blue.rate() {
            Some(p) if p > 0.0 => share_above(&active.latency, shifted) / p,
            _ => f64::INFINITY,
        };
        let r1 = r1.clamp(MIN_RATIO, 1e6);
        let beyond = || ratio_evidence(green, blue, r1, &beyond_alternatives(r1));
        Ok((bound, compare(green, blue, r1, basis, beyond)))
    }

    /// The ceilings' e-values: (error rate, (the `max_p99` finding, its e-value)), 1 and `None`
    /// when not configured; the finding is `None` without latency samples.
    fn ceilings(&self, preview: &Window) -> (f64, Option<(Option<Finding>, f64)>) {
        let c = &self.config;
        let errors = Tally {
            bad: preview.errors,
            total: preview.requests,
        };
        let e_rate = if c.max_error_rate < 1.0 {
            let alts = [1.5, 2.0, 3.0, 5.0].map(|k| (k * c.max_error_rate).min(0.999));
            rate_evidence(errors, c.max_error_rate.max(1e-6), &alts)
        } else {
            1.0
        };
        let p99 = c.max_p99.map(|max| {
            // Requests certainly slower than `max`: exact to within 0.78% of it with the proxy's
            // fine buckets; from `/metrics`, those above the first bucket bound at or above it.
            // Requests unanswered past `max` count as slower than it.
            let slow = preview.latency.slower_than(max.as_secs_f64());
            let late = preview.unanswered_past(Some(max));
            let tally = Tally {
                bad: slow.at_least + late,
                total: slow.total + late,
            };
            let alts = [1.5, 2.0, 3.0, 5.0].map(|k| k * P99_CEILING_SHARE);
            let finding = Finding::p99_ceiling(&preview.latency, max.as_secs_f64(), late);
            (finding, rate_evidence(tally, P99_CEILING_SHARE, &alts))
        });
        (e_rate, p99)
    }
}

impl Judge for SequentialJudge {
    fn cumulative(&self) -> bool {
        true
    }

    fn judge(&self, preview: &Window, active: &Window) -> Verdict {
        self.look(preview, active, false)
    }

    /// At a step where blue takes no traffic (green at 100%), blue's counts are those of the
    /// earlier steps, set against green's newest requests: a fail needs evidence that green is
    /// worse than blue *and* beyond the allowed increases ([`FailBasis::Both`]), so that a drift
    /// of the service's own within the allowance is not read as green being worse.
    fn judge_without_active_traffic(&self, preview: &Window, active: &Window) -> Verdict {
        self.look(preview, active, true)
    }
}

impl SequentialJudge {
    /// One look; `alone` when blue takes no traffic at this step.
    fn look(&self, preview: &Window, active: &Window, alone: bool) -> Verdict {
        let c = &self.config;
        if preview.requests < c.min_requests {
            let threshold = ThresholdJudge::new(self.config.clone());
            return threshold
                .decided_below_min(preview)
                .unwrap_or_else(|| self.too_few(preview));
        }
        let fail_bar = f64::from(self.fail_tests()) / c.alpha;
        let pass_bar = 1.0 / c.beta;
        let basis = self.basis(alone);
        let errors = self.errors(preview, active, basis);
        let slow = self.slow(preview, active, basis);
        let (e_rate, p99) = self.ceilings(preview);
        let rate = preview.error_rate().unwrap_or(0.0);

        let mut findings = vec![Finding {
            metric: Metric::Requests,
            value: preview.requests as f64,
            threshold: c.min_requests as f64,
            ok: true,
            between: None,
            unanswered: 0,
        }];
        findings.push(Finding {
            metric: Metric::ErrorRate,
            value: rate,
            threshold: c.max_error_rate,
            ok: e_rate < fail_bar,
            between: None,
            unanswered: 0,
        });
        errors.findings(&mut findings, Metric::ErrorEvidence, fail_bar, pass_bar);
        if let Ok((_, s)) = &slow {
            s.findings(&mut findings, Metric::SlowEvidence, fail_bar, pass_bar);
        }
        if let (Some((ceiling, e)), Some(max)) = (&p99, c.max_p99) {
            // The value shown is the p99 (within 0.4% from the proxy's fine buckets); the
            // decision is the e-value of the share certainly slower than `max_p99`.
            findings.push(Finding {
                metric: Metric::P99Seconds,
                value: ceiling.map_or(0.0, |f| f.value),
                threshold: max.as_secs_f64(),
                ok: *e < fail_bar,
                between: ceiling.and_then(|f| f.between),
                unanswered: ceiling.map_or(0, |f| f.unanswered),
            });
        }

        let failed = findings
            .iter()
            .any(|f| !f.ok && f.metric != Metric::Requests && !is_pass(f.metric));
        // Passing needs the p99 not shown above `max_p99`: at most 1% of requests certainly
        // slower (never an estimate inside a bucket), and latency samples to tell.
        let within_ceilings =
            rate <= c.max_error_rate && p99.is_none_or(|(f, _)| f.is_some_and(|f| f.ok));
        let passed = !failed
            && within_ceilings
            && errors.not_worse >= pass_bar
            && slow.as_ref().is_ok_and(|(_, s)| s.not_worse >= pass_bar);
        let outcome = if failed {
            Outcome::Fail
        } else if passed {
            Outcome::Pass
        } else {
            Outcome::Inconclusive
        };
        let mut summary = summary(
            outcome,
            &errors,
            &slow,
            preview.requests,
            fail_bar,
            pass_bar,
        );
        // A broken p99 ceiling is named (the error rates are shown above), since the comparisons
        // may all look fine.
        for f in findings
            .iter()
            .filter(|f| !f.ok && f.metric == Metric::P99Seconds)
        {
            summary = format!("{summary}; {f}");
        }
        Verdict {
            outcome,
            findings,
            summary,
            checks: Vec::new(),
        }
    }
}

/// Whether `metric` is a "not worse" e-value (reaching its bar is good).
fn is_pass(metric: Metric) -> bool {
    matches!(metric, Metric::ErrorPassEvidence | Metric::SlowPassEvidence)
}

// === impl Comparison ===

/// Both tests of one metric. The "worse" test is against `H0: r ≤ 1` (`Blue`), the metric's
/// evidence beyond the allowance `beyond` (`Allowance`), or the smaller of the two (`Both`: a fail
/// then needs both, so either guarantee holds).
fn compare(
    green: Tally,
    blue: Tally,
    r1: f64,
    basis: FailBasis,
    beyond: impl FnOnce() -> f64,
) -> Comparison {
    let than_blue = || ratio_evidence(green, blue, 1.0, &worse_alternatives(r1));
    let worse = match basis {
        FailBasis::Blue => than_blue(),
        FailBasis::Allowance => beyond(),
        FailBasis::Both => than_blue().min(beyond()),
    };
    Comparison {
        green,
        blue,
        worse,
        not_worse: ratio_evidence(green, blue, r1, &not_worse_alternatives(r1)),
        r1,
        basis,
    }
}

/// Evidence that green's error rate exceeds blue's by more than `increase`
/// (`H0: p_green ≤ p_blue + increase`) without a ratio: for each `c` of [`BLUE_RATE_GRID`] (with
/// `c + increase < 1`), the smaller of a one-sample e-value against `p_blue ≥ c` and one against
/// `p_green ≤ c + increase`, the largest over `c`, divided by the number of `c` used.
///
/// An intersection-union test per `c` (Berger, "Multiparameter hypothesis testing and acceptance
/// sampling", Technometrics 1982): under `H0` either `p_blue ≥ c` or `p_green ≤ c + increase`
/// holds, so both e-values reach `m·b` with probability ≤ `1 / (m·b)` (Ville's inequality on the
/// true one), and over the `m` values of `c` the result reaches `b` with probability ≤ `1 / b`:
/// valid at every look, like an e-value, though not one itself.
fn beyond_absolute(green: Tally, blue: Tally, increase: f64) -> f64 {
    let grid = BLUE_RATE_GRID.iter().filter(|&&c| c + increase < 1.0);
    let m = grid.clone().count();
    let best = grid
        .map(|&c| {
            let below = rate_evidence(blue, c, &ABSOLUTE_ALTERNATIVES.map(|k| k * c));
            let h = c + increase;
            let alts = [1.5, 2.0, 3.0, 5.0].map(|k| (k * h).min((1.0 + h) / 2.0));
            below.min(rate_evidence(green, h, &alts))
        })
        .fold(0.0, f64::max);
    if m == 0 {
        1.0
    } else {
        best / m as f64
    }
}

impl Comparison {
    fn findings(&self, out: &mut Vec<Finding>, worse: Metric, fail_bar: f64, pass_bar: f64) {
        let pass = match worse {
            Metric::ErrorEvidence => Metric::ErrorPassEvidence,
            _ => Metric::SlowPassEvidence,
        };
        out.push(Finding {
            metric: worse,
            value: self.worse,
            threshold: fail_bar,
            ok: self.worse < fail_bar,
            between: None,
            unanswered: 0,
        });
        out.push(Finding {
            metric: pass,
            value: self.not_worse,
            threshold: pass_bar,
            ok: self.not_worse >= pass_bar,
            between: None,
            unanswered: 0,
        });
    }

    /// `green 1.5% vs blue 0.5% (worse: e 412 ≥ 300)`.
    fn describe(&self, fail_bar: f64, pass_bar: f64) -> String {
        let pct = |t: Tally| t.rate().map_or("-".to_string(), fraction_percent);
        let rates = format!("green {} vs blue {}", pct(self.green), pct(self.blue));
        let beyond = match self.basis {
            FailBasis::Blue => "",
            FailBasis::Allowance => " beyond the allowance",
            FailBasis::Both => " than blue and beyond the allowance",
        };
        if self.worse >= fail_bar {
            format!(
                "{rates}: evidence green is worse{beyond} {} ≥ {}",
                e(self.worse),
                e(fail_bar)
            )
        } else if self.not_worse >= pass_bar {
            format!(
                "{rates}: evidence green is not {:.2}× worse {} ≥ {}",
                self.r1,
                e(self.not_worse),
                e(pass_bar)
            )
        } else {
            format!(
                "{rates}: worse{beyond} {} / {}, not {:.2}× worse {} / {}",
                e(self.worse),
                e(fail_bar),
                self.r1,
                e(self.not_worse),
                e(pass_bar)
            )
        }
    }
}

fn summary(
    outcome: Outcome,
    errors: &Comparison,
    slow: &Result<(f64, Comparison), String>,
    requests: u64,
    fail_bar: f64,
    pass_bar: f64,
) -> String {
    let slow = match slow {
        Ok((bound, s)) => format!(
            "slow (> {}) {}",
            millis(*bound),
            s.describe(fail_bar, pass_bar)
        ),
        Err(why) => why.clone(),
    };
    // At a step where blue takes no traffic the words say so: its rates are from earlier steps.
    let judge = match errors.basis {
        FailBasis::Both => "sequential (blue at 0%)",
        FailBasis::Blue | FailBasis::Allowance => "sequential",
    };
    let errors = format!("errors {}", errors.describe(fail_bar, pass_bar));
    match outcome {
        Outcome::Fail => format!("{judge}: {errors}; {slow} ({requests} requests)"),
        Outcome::Pass => format!("{judge}: {errors}; {slow}; {requests} requests"),
        Outcome::Inconclusive => {
            format!("{judge}, collecting evidence: {errors}; {slow}; {requests} requests")
        }
    }
}

/// An e-value for humans: `0.31`, `12`, `4.1e5`.
pub(crate) fn e(v: f64) -> String {
    if v >= 1e4 {
        format!("{v:.1e}")
    } else if v >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

// === histogram helpers ===

/// Index of the largest bucket bound that at least `1 - q` of the samples exceed: the lower edge
/// of the bucket holding the `q` quantile (the first bound when none qualifies).
pub fn slow_bound(h: &HistogramSnapshot, q: f64) -> usize {
    // The tolerance keeps float rounding (1 - 0.99 > 0.01) from skipping an exact 1%.
    let need = (1.0 - q) * h.count() as f64 - 1e-9;
    (0..LATENCY_BOUNDS_SECONDS.len())
        .rev()
        .find(|&i| above(h, i).bad as f64 >= need)
        .unwrap_or(0)
}

/// Requests slower than bound `index` (exact: bucket counts above it) among all latency samples.
pub fn above(h: &HistogramSnapshot, index: usize) -> Tally {
    Tally {
        bad: h.counts.iter().skip(index + 1).sum(),
        total: h.count(),
    }
}

/// The share of samples above `seconds`. Inside a bucket the survival function is interpolated
/// log-linearly in log latency (a power-law tail between the bucket's bounds), which follows a
/// latency tail far better than Prometheus' linear interpolation; linearly when a bound's share is 0.
pub fn share_above(h: &HistogramSnapshot, seconds: f64) -> f64 {
    let total = h.count();
    if total == 0 {
        return 0.0;
    }
    let i = LATENCY_BOUNDS_SECONDS.partition_point(|&b| b < seconds);
    let Some(&upper) = LATENCY_BOUNDS_SECONDS.get(i) else {
        return above(h, LATENCY_BOUNDS_SECONDS.len() - 1).bad as f64 / total as f64;
    };
    let n = total as f64;
    let s_upper = above(h, i).bad as f64 / n;
    let (lower, s_lower) = match i {
        0 => (0.0, 1.0),
        _ => (
            LATENCY_BOUNDS_SECONDS[i - 1],
            above(h, i - 1).bad as f64 / n,
        ),
    };
    let w = ((upper - seconds) / (upper - lower)).clamp(0.0, 1.0);
    if lower > 0.0 && s_upper > 0.0 && seconds > 0.0 {
        let t = ((upper / seconds).ln() / (upper / lower).ln()).clamp(0.0, 1.0);
        return (s_upper.ln() + t * (s_lower.ln() - s_upper.ln())).exp();
    }
    s_upper + w * (s_lower - s_upper)
}
