//! A fixed-horizon Mann–Whitney judge in Kayenta's style: per-interval series of error rate and
//! p99 for each version, one one-sided test per metric at the horizon.
//!
//! Kayenta (Netflix/Google, "Automated canary analysis at Netflix with Kayenta", 2018) classifies
//! each metric with a Mann–Whitney U test between the canary's and the baseline's per-interval
//! values; here the test is one-sided (green higher) at `ALPHA` per metric and either metric failing
//! fails the judge, as BASELINE.md's B1/B2 do. Intervals where a version had no requests give no
//! value for that series (Kayenta's `nanStrategy: remove`).

use crossfade_controller::analysis::Window;

use crate::rng::normal_cdf;

/// One-sided level of each metric's test.
pub const ALPHA: f64 = 0.05;

/// Per-interval points of one version.
#[derive(Default)]
pub struct Series {
    errors: Vec<f64>,
    p99: Vec<f64>,
}

impl Series {
    /// Adds one interval's window as a point (skipping values that do not exist).
    pub fn push(&mut self, w: &Window) {
        if let Some(rate) = w.error_rate() {
            self.errors.push(rate);
        }
        if let Some(p99) = w.p99() {
            self.p99.push(p99);
        }
    }
}

/// Whether green's series is significantly higher than blue's on either metric.
pub fn fails(green: &Series, blue: &Series) -> bool {
    p_greater(&green.errors, &blue.errors) < ALPHA || p_greater(&green.p99, &blue.p99) < ALPHA
}

/// One-sided p-value of "x tends to be larger than y": exact for small samples without ties,
/// otherwise the normal approximation with continuity and tie corrections. 1 without data.
pub fn p_greater(x: &[f64], y: &[f64]) -> f64 {
    let (m, n) = (x.len(), y.len());
    if m == 0 || n == 0 {
        return 1.0;
    }
    let (u, ties) = u_statistic(x, y);
    if m <= 8 && n <= 8 && !ties.iter().any(|&t| t > 1) {
        return exact_upper_tail(m, n, u);
    }
    let (mf, nf) = (m as f64, n as f64);
    let total = mf + nf;
    let tie_term: f64 = ties.iter().map(|&t| (t * t * t - t) as f64).sum();
    let var = mf * nf / 12.0 * ((total + 1.0) - tie_term / (total * (total - 1.0)));
    if var <= 0.0 {
        return 1.0;
    }
    let z = (u - mf * nf / 2.0 - 0.5) / var.sqrt();
    1.0 - normal_cdf(z)
}

/// U of `x` (pairs where x > y, ties counting ½) and the sizes of the tie groups.
fn u_statistic(x: &[f64], y: &[f64]) -> (f64, Vec<u64>) {
    let mut all: Vec<(f64, bool)> = x.iter().map(|&v| (v, true)).collect();
    all.extend(y.iter().map(|&v| (v, false)));
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut rank_sum, mut ties, mut i) = (0.0, Vec::new(), 0);
    while i < all.len() {
        let mut j = i;
        while j + 1 < all.len() && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let mid = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += all[i..=j].iter().filter(|e| e.1).count() as f64 * mid;
        ties.push((j - i + 1) as u64);
        i = j + 1;
    }
    let m = x.len() as f64;
    (rank_sum - m * (m + 1.0) / 2.0, ties)
}

/// P(U ≥ u) under the null, from the exact distribution (counts of arrangements).
fn exact_upper_tail(m: usize, n: usize, u: f64) -> f64 {
    // f[i][j][k]: arrangements of i x's and j y's with U = k.
    let max = m * n;
    let mut f = vec![vec![vec![0f64; max + 1]; n + 1]; m + 1];
    for row in f.iter_mut() {
        row[0][0] = 1.0;
    }
    for by_j in f[0].iter_mut() {
        by_j[0] = 1.0;
    }
    for i in 1..=m {
        for j in 1..=n {
            for k in 0..=max {
                // The largest value is an x (beats all j y's) or a y.
                let a = if k >= j { f[i - 1][j][k - j] } else { 0.0 };
                f[i][j][k] = a + f[i][j - 1][k];
            }
        }
    }
    let total: f64 = f[m][n].iter().sum();
    let from = u.ceil() as usize;
    f[m][n].iter().skip(from).sum::<f64>() / total
}
