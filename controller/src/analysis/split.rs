//! The observed-split guard: an analysis window in which the preview's share of the requests is far
//! from the weight the proxies were told to apply proves nothing about that weight (a proxy that
//! kept an old table, a replica that is not counted, sticky clients, a preview whose endpoints
//! health checks all hold out so that its share goes to the active backend), so it is
//! **inconclusive** rather than a pass. Both runtimes apply it ([`guard`]).
//!
//! Each request goes to the preview with probability `p` (the desired weight), so over `n`
//! requests the preview's share has a binomial standard deviation `σ = sqrt(p (1 − p) / n)`. The
//! window is out of tolerance when `|observed − p| > max(5 percentage points, 4σ)`: 4σ keeps a
//! correct proxy from tripping the guard on small windows (a false alarm about once in 15,000
//! windows under the normal approximation), and the 5-point floor tolerates what per-request
//! randomness does not explain but is harmless (retries counted on the backend they failed on,
//! requests in flight at the window's edges). A window without requests is not judged here.
//!
//! The normal approximation fails where it matters most for case C14: a preview that served *no*
//! request (health checks hold all its endpoints out) in a small window at a small weight. At 10 %
//! over 120 requests 4σ is 11 points, so 0 % looked within tolerance, though 0 of 120 has a
//! chance of 0.9¹²⁰ ≈ 3·10⁻⁶. So a window in which one backend got every request is also out of
//! tolerance when the exact binomial chance of that, `(1 − p)ⁿ` (or `pⁿ`), is below
//! [`ALL_ONE_SIDE_CHANCE`], the one-sided normal tail beyond 4σ: the same false-alarm rate.

use super::{Finding, Metric, Outcome, Verdict};

/// The least distance from the desired share that counts as out of tolerance (a fraction: 5
/// percentage points).
pub const MIN_TOLERANCE: f64 = 0.05;

/// Standard deviations of the binomial share allowed.
pub const SIGMAS: f64 = 4.0;

/// The exact binomial chance below which a window whose requests all went to one backend is out
/// of tolerance (the one-sided normal tail beyond [`SIGMAS`] = 4: 3.2·10⁻⁵).
pub const ALL_ONE_SIDE_CHANCE: f64 = 3.2e-5;

/// How far (a fraction of 1) the preview's observed share may be from `desired` (a fraction of 1)
/// over `requests` requests: `max(MIN_TOLERANCE, SIGMAS × sqrt(p (1 − p) / n))`.
pub fn tolerance(desired: f64, requests: u64) -> f64 {
    if requests == 0 {
        return 1.0;
    }
    let p = desired.clamp(0.0, 1.0);
    let sigma = (p * (1.0 - p) / requests as f64).sqrt();
    (SIGMAS * sigma).max(MIN_TOLERANCE)
}

/// Checks the window's split: `preview` and `active` requests against the preview weight
/// `desired_bp` (basis points).
///
/// # Errors
/// A message naming the observed share (with its counts) and the desired one with the tolerance,
/// e.g. `observed split: preview got 30.0% of 1000 requests (300), desired 5.0% ± 5.0%`.
pub fn check(desired_bp: u32, preview: u64, active: u64) -> Result<(), String> {
    match off(desired_bp, preview, active) {
        None => Ok(()),
        Some(off) => Err(off.to_string()),
    }
}

/// A window's split outside the tolerance: the preview's observed share against the desired one.
struct Off {
    /// Requests in the window, both backends.
    requests: u64,
    /// The preview's.
    preview: u64,
    /// The preview's share (fraction of 1).
    observed: f64,
    /// The share its weight asks for (fraction of 1).
    desired: f64,
    /// [`tolerance`] of `desired` over `requests`.
    allowed: f64,
    /// When one backend got every request and the split is off by the exact chance of that
    /// ([`ALL_ONE_SIDE_CHANCE`]) alone: that chance.
    chance: Option<f64>,
}

/// The window's split when it is outside [`tolerance`]; `None` within it or without requests.
fn off(desired_bp: u32, preview: u64, active: u64) -> Option<Off> {
    let requests = preview.saturating_add(active);
    if requests == 0 {
        return None;
    }
    let desired = f64::from(desired_bp.min(10_000)) / 10_000.0;
    let observed = preview as f64 / requests as f64;
    let allowed = tolerance(desired, requests);
    let off = |chance| Off {
        requests,
        preview,
        observed,
        desired,
        allowed,
        chance,
    };
    if (observed - desired).abs() > allowed {
        return Some(off(None));
    }
    // Every request on one side, where the weight asks for some on the other: the exact chance
    // of that (the normal approximation is too lenient there for small windows).
    let one_side = match (preview, active) {
        (0, _) => 1.0 - desired,
        (_, 0) => desired,
        _ => return None,
    };
    let chance = one_side.powf(requests as f64);
    (chance < ALL_ONE_SIDE_CHANCE).then(|| off(Some(chance)))
}

impl std::fmt::Display for Off {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "observed split: preview got {:.1}% of {} requests ({}), desired {:.1}%",
            self.observed * 100.0,
            self.requests,
            self.preview,
            self.desired * 100.0,
        )?;
        match self.chance {
            None => write!(f, " ± {:.1}%", self.allowed * 100.0),
            Some(chance) => write!(
                f,
                " (all {} on one backend: a chance of {chance:.1e} at that weight)",
                self.requests
            ),
        }
    }
}

impl Off {
    /// The finding a guarded verdict carries ([`Metric::PreviewShare`]).
    fn finding(&self) -> Finding {
        let mut between = (
            (self.desired - self.allowed).max(0.0),
            (self.desired + self.allowed).min(1.0),
        );
        if self.chance.is_some() {
            // The range allowed excludes the side that got nothing: at least one request there.
            let one = 1.0 / self.requests as f64;
            match self.preview {
                0 => between.0 = between.0.max(one),
                _ => between.1 = between.1.min(1.0 - one),
            }
        }
        Finding {
            metric: Metric::PreviewShare,
            value: self.observed,
            threshold: self.desired,
            ok: false,
            between: Some(between),
            unanswered: 0,
        }
    }
}

/// The guard applied to a verdict: when the preview's share of the window's requests (`preview`
/// and `active` over the window since the last conclusive verdict) is outside [`check`]'s
/// tolerance of `desired_bp`, a pass becomes inconclusive with a summary naming both numbers
/// (`observed split: ...; the proxies do not split as published`), an inconclusive verdict
/// gets them appended, and a failure stands (the preview's own errors are its own).
///
/// Both runtimes apply it (`crossfade run` and Kubernetes mode, case C14): a window in which the
/// preview served none or few of the requests its weight asks for (its endpoints all held out by
/// health checks, a proxy that kept an old table, few sticky clients) proves nothing about that
/// weight, even when the sequential judge's cumulative evidence from earlier windows would pass.
///
/// A guarded verdict (pass or inconclusive) carries a [`Metric::PreviewShare`] finding, so the
/// look counts toward `max_inconclusive` even from a sequential judge gathering evidence
/// ([`Verdict::accumulating`]): a preview its proxies keep out of traffic ends the step by the
/// `on_inconclusive` policy after `max_inconclusive` looks, not at its progress deadline.
pub fn guard(mut verdict: Verdict, desired_bp: u32, preview: u64, active: u64) -> Verdict {
    let Some(off) = off(desired_bp, preview, active) else {
        return verdict;
    };
    let split = off.to_string();
    match verdict.outcome {
        Outcome::Fail => return verdict,
        Outcome::Pass => {
            verdict.outcome = Outcome::Inconclusive;
            verdict.summary = format!("{split}; the proxies do not split as published");
        }
        Outcome::Inconclusive => verdict.summary = format!("{}; {split}", verdict.summary),
    }
    verdict.findings.push(off.finding());
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tolerance_is_binomial_for_small_windows_and_five_points_for_large_ones() {
        // 50 requests at 5%: σ = 3.1 points, so 4σ = 12.3 points.
        assert!((tolerance(0.05, 50) - 4.0 * (0.05f64 * 0.95 / 50.0).sqrt()).abs() < 1e-12);
        assert!(tolerance(0.05, 50) > 0.12);
        // 10 000 requests at 50%: 4σ = 2 points, so the 5-point floor.
        assert_eq!(tolerance(0.5, 10_000), MIN_TOLERANCE);
        // A desired weight of 0 or 100% has no binomial spread.
        assert_eq!(tolerance(0.0, 10), MIN_TOLERANCE);
        assert_eq!(tolerance(1.0, 10), MIN_TOLERANCE);
    }

    #[test]
    fn a_split_within_tolerance_passes() {
        assert_eq!(check(500, 0, 0), Ok(()));
        assert_eq!(check(500, 52, 948), Ok(()));
        assert_eq!(
            check(500, 0, 40),
            Ok(()),
            "5% of 40 is 2 requests: 0 is within 4σ"
        );
        assert_eq!(check(5_000, 5_400, 4_600), Ok(()), "54% is within 5 points");
        assert_eq!(check(10_000, 1_000, 0), Ok(()));
    }

    #[test]
    fn a_split_far_from_the_weight_names_both_numbers() {
        assert_eq!(
            check(500, 300, 700),
            Err(
                "observed split: preview got 30.0% of 1000 requests (300), desired 5.0% ± 5.0%"
                    .into()
            )
        );
        // The proxies still send everything to the active backend.
        let err = check(2_500, 0, 400).unwrap_err();
        assert!(
            err.contains("preview got 0.0% of 400 requests (0), desired 25.0%"),
            "{err}"
        );
        // Small windows need a larger distance: 5 of 20 at 5% is 25%, beyond 4σ = 19.5 points.
        assert!(check(500, 5, 15).is_err());
        assert!(check(500, 3, 17).is_ok());
    }

    fn verdict(outcome: Outcome, summary: &str) -> Verdict {
        Verdict {
            outcome,
            findings: Vec::new(),
            summary: summary.into(),
            checks: Vec::new(),
        }
    }

    /// Case C14: green held out by health checks serves nothing at 100 %; the sequential judge's
    /// earlier evidence would pass the window, the guard makes it inconclusive.
    #[test]
    fn a_pass_over_a_window_green_served_nothing_of_becomes_inconclusive_and_a_fail_stands() {
        let pass = verdict(Outcome::Pass, "sequential: evidence");
        let guarded = guard(pass.clone(), 10_000, 0, 2_000);
        assert_eq!(guarded.outcome, Outcome::Inconclusive);
        assert_eq!(
            guarded.summary,
            "observed split: preview got 0.0% of 2000 requests (0), desired 100.0% ± 5.0%; the \
             proxies do not split as published"
        );
        assert_eq!(
            guard(pass.clone(), 10_000, 1_990, 10),
            pass,
            "within 5 points"
        );
        assert_eq!(
            guard(pass.clone(), 10_000, 0, 0),
            pass,
            "no request: not judged here"
        );
        let share = guarded
            .finding(Metric::PreviewShare)
            .expect("the split's finding");
        assert_eq!(share.to_string(), "preview share 0% outside 95%–100%");
        let fail = verdict(Outcome::Fail, "error rate 30% > 1%");
        assert_eq!(guard(fail.clone(), 1_000, 0, 2_000), fail);
        let thin = verdict(Outcome::Inconclusive, "3 requests < 50");
        assert_eq!(
            guard(thin, 5_000, 3, 997).summary,
            "3 requests < 50; observed split: preview got 0.3% of 1000 requests (3), desired \
             50.0% ± 6.3%"
        );
    }

    /// Case C14 in a small window: green held out by health checks served none of 120 requests
    /// at 10 % (or blue none at 90 %). 4σ is 11 points there, so the normal approximation let
    /// 0 % pass; the exact chance of none, 0.9¹²⁰ ≈ 3·10⁻⁶, does not. A window where none is
    /// likely enough (5 % of 40: 13 %) stays within tolerance.
    #[test]
    fn a_small_window_with_every_request_on_one_backend_is_off_by_its_exact_chance() {
        let err = check(1_000, 0, 120).unwrap_err();
        assert_eq!(
            err,
            "observed split: preview got 0.0% of 120 requests (0), desired 10.0% (all 120 on \
             one backend: a chance of 3.2e-6 at that weight)"
        );
        assert!(check(9_000, 120, 0).is_err(), "blue got none at 90%");
        assert!(check(5_000, 0, 16).is_err(), "0.5^16 = 1.5e-5");
        assert_eq!(check(5_000, 0, 14), Ok(()), "0.5^14 = 6.1e-5");
        assert_eq!(check(1_000, 0, 90), Ok(()), "0.9^90 = 7.6e-5");
        assert_eq!(check(1_000, 1, 119), Ok(()), "one request is within 4σ");
        assert_eq!(check(10_000, 120, 0), Ok(()));
        assert_eq!(check(0, 0, 120), Ok(()));
        let guarded = guard(verdict(Outcome::Pass, "passed"), 1_000, 0, 120);
        assert_eq!(guarded.outcome, Outcome::Inconclusive);
        let share = guarded.finding(Metric::PreviewShare).expect("finding");
        let (low, _) = share.between.expect("range");
        assert!(low > 0.0, "the range allowed excludes 0: {share}");
    }

    /// A sequential judge's look gathering evidence does not count toward `max_inconclusive`; the
    /// same look over a window the proxies did not split as published does.
    #[test]
    fn a_guarded_look_of_a_sequential_judge_counts_toward_max_inconclusive() {
        let mut gathering = verdict(Outcome::Inconclusive, "collecting evidence");
        gathering.findings.push(Finding {
            metric: Metric::ErrorPassEvidence,
            value: 3.0,
            threshold: 20.0,
            ok: false,
            between: None,
            unanswered: 0,
        });
        assert!(gathering.accumulating());
        assert!(guard(gathering.clone(), 1_000, 100, 900).accumulating());
        let guarded = guard(gathering, 1_000, 0, 1_000);
        assert!(!guarded.accumulating(), "{guarded:?}");
        let mut pass = verdict(Outcome::Pass, "sequential: evidence");
        pass.findings = guarded.findings[..1].to_vec();
        assert!(!guard(pass, 1_000, 0, 1_000).accumulating());
    }
}
