//! Always-valid evidence from cumulative counts: e-values (mixtures of likelihood ratios) that
//! stay valid however often they are looked at.
//!
//! Each function returns an **e-value** `E`: a nonnegative statistic whose running value is a
//! (super)martingale with mean at most 1 under the null hypothesis. By Ville's inequality
//! (Ville 1939; Howard, Ramdas, McAuliffe & Sekhon, "Time-uniform, nonparametric, nonasymptotic
//! confidence sequences", Ann. Statist. 2021, §2), `P(E ever reaches 1/α) ≤ α` under the null, at
//! every look and any stopping rule: this is what lets the sequential judge look after every batch
//! of requests without inflating its false-rollback rate. Mixing the likelihood ratios of several
//! alternatives with fixed weights (Robbins 1970, "Statistical methods related to the law of the
//! iterated logarithm"; the "mixture SPRT" of Johari, Koomen, Pekelis & Walsh, "Always valid
//! inference", Oper. Res. 2022) keeps that property and gives power against every alternative in
//! the mix, which Wald's SPRT (Wald 1945) with its one alternative does not.
//!
//! Values are capped at [`MAX_E_VALUE`] so that they stay finite in JSON.

/// The largest e-value reported (larger ones are clamped): finite, so verdicts serialise.
pub const MAX_E_VALUE: f64 = 1e300;

/// One backend's count of "bad" requests (errors, or slow requests) among its requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Bad requests.
    pub bad: u64,
    /// All requests (the exposure).
    pub total: u64,
}

impl Tally {
    /// `bad / total`, or `None` without requests (0/0 is never 0%).
    pub fn rate(&self) -> Option<f64> {
        (self.total > 0).then(|| self.bad.min(self.total) as f64 / self.total as f64)
    }
}

/// E-value for the two-sample question "is green's bad rate a multiple `r` of blue's, with `r`
/// beyond `null`?", mixing the alternatives `alts` with equal weights.
///
/// The model is the conditional binomial: given both backends' request counts, each bad request
/// is green's with probability `θ(r) = n_g·r / (n_g·r + n_b)`, whatever blue's own rate is, so the
/// test needs no knowledge of blue's rate and a drift that hits both versions cancels. For
/// `H0: r ≤ null` pass alternatives above `null` (evidence that green is worse); for `H0: r ≥ null`
/// pass alternatives below it (evidence that green is not worse than `null`). Each likelihood ratio
/// is then a supermartingale under every `r` of the null, so the mixture is an e-value. (Exact for
/// a constant routing weight and rare bad events; a Poisson approximation otherwise.)
///
/// Returns 1 (no evidence) when either backend has no requests or nothing bad happened.
pub fn ratio_evidence(green: Tally, blue: Tally, null: f64, alts: &[f64]) -> f64 {
    if green.total == 0 || blue.total == 0 || alts.is_empty() || null.is_nan() || null <= 0.0 {
        return 1.0;
    }
    let (ng, nb) = (green.total as f64, blue.total as f64);
    let (eg, eb) = (
        green.bad.min(green.total) as f64,
        blue.bad.min(blue.total) as f64,
    );
    // ln θ(r) and ln(1 - θ(r)) from the counts, not from θ: for a large `r` (the fail side against
    // an allowance) θ rounds to 1 and `1 - θ` to 0, and `0 · ln 0` would be NaN.
    let ln_theta = |r: f64| {
        (
            (ng * r).ln() - (ng * r + nb).ln(),
            nb.ln() - (ng * r + nb).ln(),
        )
    };
    let (g0, b0) = ln_theta(null);
    let logs = alts.iter().map(|&r| {
        let (g, b) = ln_theta(r);
        eg * (g - g0) + eb * (b - b0)
    });
    mean_exp(logs, alts.len())
}

/// E-value for one backend's bad rate `p` against `ceiling` (a one-sample binomial mixture SPRT),
/// mixing the alternatives `alts` (each in (0, 1)) with equal weights: alternatives above `ceiling`
/// test `H0: p ≤ ceiling`, alternatives below it test `H0: p ≥ ceiling`.
pub fn rate_evidence(tally: Tally, ceiling: f64, alts: &[f64]) -> f64 {
    if tally.total == 0 || alts.is_empty() || !(ceiling > 0.0 && ceiling < 1.0) {
        return 1.0;
    }
    let bad = tally.bad.min(tally.total) as f64;
    let good = tally.total as f64 - bad;
    let logs = alts
        .iter()
        .map(|&p| bad * (p / ceiling).ln() + good * ((1.0 - p) / (1.0 - ceiling)).ln());
    mean_exp(logs, alts.len())
}

/// `mean(exp(x))` computed without overflow, clamped to [`MAX_E_VALUE`].
fn mean_exp(logs: impl Iterator<Item = f64> + Clone, n: usize) -> f64 {
    let max = logs.clone().fold(f64::NEG_INFINITY, f64::max);
    if max.is_nan() {
        return 1.0;
    }
    if max == f64::NEG_INFINITY {
        return 0.0;
    }
    let sum: f64 = logs.map(|l| (l - max).exp()).sum();
    let log_mean = max + (sum / n as f64).ln();
    log_mean.min(MAX_E_VALUE.ln()).exp()
}

/// The alternatives a "green is worse" test mixes, spread around `r1` (the regression it must
/// catch): `√r1, r1, r1², r1³`, so that both a barely-worse and a badly broken green are caught
/// quickly. `r1` must be above 1.
pub fn worse_alternatives(r1: f64) -> [f64; 4] {
    [r1.sqrt(), r1, r1 * r1, r1 * r1 * r1]
}

/// The alternatives a "green is worse than `r1`" test mixes (`H0: r ≤ r1`, the fail side against
/// the allowance): `r1·√r1, r1², r1³, r1⁴`, i.e. [`worse_alternatives`] multiplied by `r1`, so
/// they lie as far above the null in log ratio as the default fail side's (`√r1 .. r1³`) lie
/// above 1: a green beyond the allowance by the allowance again (`r1²`) is caught as fast as the
/// default catches one worse by the allowance (`r1`). `r1` must be above 1.
pub fn beyond_alternatives(r1: f64) -> [f64; 4] {
    worse_alternatives(r1).map(|r| r * r1)
}

/// The alternatives a "green is not worse than `r1`" test mixes: `1/√r1, 1, √r1`, all below `r1`.
pub fn not_worse_alternatives(r1: f64) -> [f64; 3] {
    [1.0 / r1.sqrt(), 1.0, r1.sqrt()]
}
