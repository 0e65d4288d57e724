//! A lock-free latency histogram: observed on the request path with atomics, exported on `/metrics`
//! (the [`LATENCY_BOUNDS_SECONDS`] buckets), and read as snapshots by the controller's analysis
//! (those buckets plus the [`fine`] ones, exact to within 0.78%).

pub mod fine;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use fine::{fine_bounds, fine_index, FINE_BUCKETS};

/// Upper bounds, in seconds, of the request duration buckets.
///
/// Why these: a proxied request on loopback takes ~0.1 ms, a healthy service answers in 1–100 ms, and
/// latency bounds in rollout analysis are typically set between 50 ms and a few seconds. The buckets are
/// dense (×1.33 to ×2.5 apart) across 1 ms–1 s so that a p99 estimated from them is within a factor of ~1.5
/// of the true value, and reach 30 s for the request timeout.
pub const LATENCY_BOUNDS_SECONDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// A histogram over [`LATENCY_BOUNDS_SECONDS`] and over the [`fine`] buckets, whose observations
/// are lock-free (`Relaxed` atomics).
///
/// Clones share the same counts. Sums are kept in nanoseconds to stay exact and atomic.
#[derive(Clone, Debug, Default)]
pub struct LatencyHistogram {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// One count per bound plus the `+Inf` bucket; not cumulative.
    counts: Box<[AtomicU64]>,
    /// One count per [`fine`] bucket; not cumulative.
    fine: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            counts: (0..=LATENCY_BOUNDS_SECONDS.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            fine: (0..FINE_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }
}

impl LatencyHistogram {
    /// Records one duration.
    #[inline]
    pub fn observe(&self, elapsed: std::time::Duration) {
        let secs = elapsed.as_secs_f64();
        let i = LATENCY_BOUNDS_SECONDS.partition_point(|&b| b < secs);
        self.inner.counts[i].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.inner.fine[fine_index(micros)].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.inner.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Observations so far (a scrape-time sum over the buckets).
    pub fn count(&self) -> u64 {
        self.inner
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// A point-in-time copy of the counts, the fine ones included (for the analysis).
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            fine: load(&self.inner.fine),
            ..self.coarse_snapshot()
        }
    }

    /// A point-in-time copy of the [`LATENCY_BOUNDS_SECONDS`] counts only (`fine` empty), as
    /// `/metrics` exports them.
    pub fn coarse_snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            counts: load(&self.inner.counts),
            fine: Vec::new(),
            sum_seconds: self.inner.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

fn load(counts: &[AtomicU64]) -> Vec<u64> {
    counts.iter().map(|c| c.load(Ordering::Relaxed)).collect()
}

/// Counts of a [`LatencyHistogram`] at one moment, or the difference of two moments (a window).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HistogramSnapshot {
    /// Per-bucket counts, not cumulative: `counts[i]` counts durations in
    /// `(LATENCY_BOUNDS_SECONDS[i-1], LATENCY_BOUNDS_SECONDS[i]]`; the last entry is the `+Inf` bucket.
    /// Empty means no observation.
    pub counts: Vec<u64>,
    /// Per-[`fine`]-bucket counts, not cumulative, in [`fine::fine_index`] order; empty when
    /// unknown (a snapshot read from `/metrics`, which exports only `counts`). When present,
    /// [`HistogramSnapshot::quantile`] and [`HistogramSnapshot::slower_than`] use them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fine: Vec<u64>,
    /// Sum of all observed durations, in seconds.
    pub sum_seconds: f64,
}

impl HistogramSnapshot {
    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Whether there is no observation.
    pub fn is_empty(&self) -> bool {
        self.count() == 0
    }

    /// The window between `earlier` and `self` (counts that rose in between). Saturates at 0, so a
    /// counter reset yields an empty window rather than a wrap-around.
    pub fn since(&self, earlier: &HistogramSnapshot) -> HistogramSnapshot {
        HistogramSnapshot {
            counts: minus(&self.counts, &earlier.counts),
            fine: minus(&self.fine, &earlier.fine),
            sum_seconds: (self.sum_seconds - earlier.sum_seconds).max(0.0),
        }
    }

    /// The `q` quantile (0 < q ≤ 1) in seconds: the duration of the `⌈q·n⌉`-th fastest request.
    /// `None` for an empty window.
    ///
    /// With [`HistogramSnapshot::fine`] counts: the middle of the fine bucket holding it, within
    /// 0.4% of the true value (or 0.5 µs); [`Quantile::between`] is `None`. Without (a snapshot
    /// from `/metrics`): linearly interpolated inside the [`LATENCY_BOUNDS_SECONDS`] bucket holding
    /// it, as Prometheus' `histogram_quantile` does, an estimate that can be anywhere in
    /// [`Quantile::between`] (a quantile in the `+Inf` bucket is reported as the largest bound).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        self.quantile_within(q).map(|x| x.estimate)
    }

    /// [`HistogramSnapshot::quantile`] with the interval known to hold it.
    pub fn quantile_within(&self, q: f64) -> Option<Quantile> {
        if !self.fine.is_empty() {
            let rank = (q.clamp(0.0, 1.0) * self.fine.iter().sum::<u64>() as f64 - 1e-9).ceil();
            let (i, _) = rank_bucket(&self.fine, rank.max(1.0))?;
            let (lower, upper) = fine_bounds(i);
            let estimate = if upper.is_finite() {
                (lower + upper) / 2.0
            } else {
                lower
            };
            return Some(Quantile {
                estimate,
                between: None,
            });
        }
        // Prometheus' rank (q·n, not rounded up), so estimates match `histogram_quantile`.
        let (i, within) = rank_bucket(&self.counts, q.clamp(0.0, 1.0) * self.count() as f64)?;
        let last = LATENCY_BOUNDS_SECONDS[LATENCY_BOUNDS_SECONDS.len() - 1];
        let Some(&upper) = LATENCY_BOUNDS_SECONDS.get(i) else {
            return Some(Quantile {
                estimate: last,
                between: Some((last, f64::INFINITY)),
            });
        };
        let lower = if i == 0 {
            0.0
        } else {
            LATENCY_BOUNDS_SECONDS[i - 1]
        };
        Some(Quantile {
            estimate: lower + (upper - lower) * within,
            between: Some((lower, upper)),
        })
    }

    /// How many requests took longer than `seconds`, as far as the buckets tell: exactly when
    /// `seconds` is a bucket bound, otherwise the requests of the bucket that straddles it are
    /// counted in [`Slower::at_most`] only. With [`HistogramSnapshot::fine`] counts that bucket is
    /// at most 0.78% of `seconds` wide (or 1 µs); without, it is a [`LATENCY_BOUNDS_SECONDS`] bucket.
    pub fn slower_than(&self, seconds: f64) -> Slower {
        if !self.fine.is_empty() {
            let mut s = Slower::default();
            for (i, &c) in self.fine.iter().enumerate() {
                let (lower, upper) = fine_bounds(i);
                // A bucket holds [lower, upper) in whole microseconds: all of it is slower than
                // `seconds` when its lower bound is above; part of it may be when its upper is.
                if lower > seconds {
                    s.at_least += c;
                }
                if upper > seconds {
                    s.at_most += c;
                }
            }
            s.total = self.fine.iter().sum();
            return s;
        }
        // Bucket i holds (B[i-1], B[i]]: all of it is slower when B[i-1] ≥ seconds.
        let first_above = LATENCY_BOUNDS_SECONDS.partition_point(|&b| b < seconds);
        let first_maybe = LATENCY_BOUNDS_SECONDS.partition_point(|&b| b <= seconds);
        Slower {
            at_least: self.counts.iter().skip(first_above + 1).sum(),
            at_most: self.counts.iter().skip(first_maybe).sum(),
            total: self.count(),
        }
    }
}

/// A quantile read from a histogram: see [`HistogramSnapshot::quantile_within`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Quantile {
    /// The value reported, in seconds.
    pub estimate: f64,
    /// `(lower, upper)` in seconds: the [`LATENCY_BOUNDS_SECONDS`] bucket known to hold the true
    /// value when only those buckets were known; `None` when the fine buckets gave it (within 0.4%).
    pub between: Option<(f64, f64)>,
}

/// Requests slower than a duration, bracketed by what the buckets can tell
/// ([`HistogramSnapshot::slower_than`]): `at_least ≤ true count ≤ at_most`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Slower {
    /// Requests certainly slower (in buckets wholly above the duration).
    pub at_least: u64,
    /// Requests possibly slower (the straddling bucket included).
    pub at_most: u64,
    /// All latency samples.
    pub total: u64,
}

// === impl Slower ===

impl Slower {
    /// Whether more than `share` (a fraction) of the requests were certainly slower: for `share`
    /// 0.01, whether the p99 is proven above the duration (p99 ≤ d ⇔ at most ⌊n/100⌋ requests
    /// took longer than d).
    pub fn proven_above(&self, share: f64) -> bool {
        self.at_least as f64 > share * self.total as f64 + 1e-9
    }
}

/// `a - b` per bucket, saturating at 0 (a counter reset yields an empty window).
fn minus(a: &[u64], b: &[u64]) -> Vec<u64> {
    a.iter()
        .enumerate()
        .map(|(i, &c)| c.saturating_sub(b.get(i).copied().unwrap_or(0)))
        .collect()
}

/// The bucket holding `rank` (1-based, at most the total) of `counts` and the rank's position
/// inside it (0..=1); `None` when empty.
fn rank_bucket(counts: &[u64], rank: f64) -> Option<(usize, f64)> {
    let mut seen = 0u64;
    for (i, &c) in counts.iter().enumerate() {
        if c > 0 && (seen + c) as f64 >= rank {
            return Some((i, (rank - seen as f64) / c as f64));
        }
        seen += c;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn window_quantile_interpolates_inside_its_bucket() {
        let h = LatencyHistogram::default();
        let before = h.snapshot();
        for _ in 0..99 {
            h.observe(Duration::from_micros(800)); // (0.5 ms, 1 ms]
        }
        h.observe(Duration::from_millis(200)); // (150 ms, 250 ms]
        let w = h.snapshot().since(&before);
        assert_eq!(w.count(), 100);
        let p50 = w.quantile(0.5).unwrap();
        assert!(p50 > 0.0005 && p50 <= 0.001, "{p50}");
        let p100 = w.quantile(1.0).unwrap();
        assert!(p100 > 0.15 && p100 <= 0.25, "{p100}");
        assert!((w.sum_seconds - (99.0 * 0.0008 + 0.2)).abs() < 1e-9);
    }

    #[test]
    fn empty_window_has_no_quantile() {
        assert_eq!(HistogramSnapshot::default().quantile(0.99), None);
    }

    #[test]
    fn overflow_bucket_reports_largest_bound() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_secs(100));
        assert_eq!(h.coarse_snapshot().quantile(0.99), Some(30.0));
        // The fine buckets end at 2^26 µs (67.1 s): their overflow reports that lower bound.
        assert_eq!(h.snapshot().quantile(0.99), Some(67.108864));
    }

    fn observed(durations: &[(u32, Duration)]) -> HistogramSnapshot {
        let h = LatencyHistogram::default();
        for &(n, d) in durations {
            (0..n).for_each(|_| h.observe(d));
        }
        h.snapshot()
    }

    #[test]
    fn fine_quantile_is_within_half_a_percent_where_the_buckets_interpolate_far_off() {
        // Trial 9, I2: every request ~521 ms; the 500–750 ms bucket made it "p99 747.5ms".
        let w = observed(&[(102, Duration::from_micros(521_337))]);
        let p99 = w.quantile_within(0.99).unwrap();
        assert!(
            (p99.estimate - 0.521_337).abs() <= 0.521_337 * 0.004,
            "{p99:?}"
        );
        assert_eq!(p99.between, None);
        let coarse = HistogramSnapshot {
            fine: Vec::new(),
            ..w
        };
        let p99 = coarse.quantile_within(0.99).unwrap();
        assert_eq!(p99.between, Some((0.5, 0.75)));
        assert!((p99.estimate - 0.7475).abs() < 1e-9, "{p99:?}");
    }

    #[test]
    fn fine_quantile_takes_the_rank_rounded_up() {
        // 99 fast and 1 slow of 100: the p99 is the 99th fastest, a fast one.
        let w = observed(&[
            (99, Duration::from_millis(100)),
            (1, Duration::from_secs(2)),
        ]);
        assert!((w.quantile(0.99).unwrap() - 0.1).abs() < 0.1 * 0.004);
        let w = observed(&[
            (98, Duration::from_millis(100)),
            (2, Duration::from_secs(2)),
        ]);
        assert!((w.quantile(0.99).unwrap() - 2.0).abs() < 2.0 * 0.004);
    }

    #[test]
    fn slower_than_counts_exactly_outside_the_straddling_fine_bucket() {
        let w = observed(&[
            (97, Duration::from_millis(521)),
            (2, Duration::from_millis(650)),
            (1, Duration::from_micros(600_100)), // in the bucket that holds 600 ms
        ]);
        let s = w.slower_than(0.6);
        assert_eq!((s.at_least, s.at_most, s.total), (2, 3, 100));
        assert!(s.proven_above(0.01));
        assert!(!w.slower_than(0.7).proven_above(0.01));
        // 1 of 100 above is a p99 at or below the bound: not proven above it.
        let w = observed(&[
            (99, Duration::from_millis(521)),
            (1, Duration::from_millis(650)),
        ]);
        assert!(!w.slower_than(0.6).proven_above(0.01));
    }

    #[test]
    fn slower_than_without_fine_buckets_is_exact_at_a_bound_and_brackets_elsewhere() {
        let w = HistogramSnapshot {
            fine: Vec::new(),
            ..observed(&[
                (90, Duration::from_millis(521)),
                (10, Duration::from_millis(800)),
            ])
        };
        let at_bound = w.slower_than(0.75);
        assert_eq!((at_bound.at_least, at_bound.at_most), (10, 10));
        let inside = w.slower_than(0.6);
        assert_eq!(
            (inside.at_least, inside.at_most, inside.total),
            (10, 100, 100)
        );
    }
}
