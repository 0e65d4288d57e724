//! A lock-free latency histogram: observed on the request path with atomics, exported on `/metrics`,
//! and read as snapshots by the controller's analysis.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

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

/// A histogram over [`LATENCY_BOUNDS_SECONDS`] whose observations are lock-free (`Relaxed` atomics).
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
    sum_nanos: AtomicU64,
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            counts: (0..=LATENCY_BOUNDS_SECONDS.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
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
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.inner.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// A point-in-time copy of the counts.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            counts: self
                .inner
                .counts
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
            sum_seconds: self.inner.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

/// Counts of a [`LatencyHistogram`] at one moment, or the difference of two moments (a window).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HistogramSnapshot {
    /// Per-bucket counts, not cumulative: `counts[i]` counts durations in
    /// `(LATENCY_BOUNDS_SECONDS[i-1], LATENCY_BOUNDS_SECONDS[i]]`; the last entry is the `+Inf` bucket.
    /// Empty means no observation.
    pub counts: Vec<u64>,
    /// Sum of all observed durations, in seconds.
    pub sum_seconds: f64,
}

impl HistogramSnapshot {
    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The window between `earlier` and `self` (counts that rose in between). Saturates at 0, so a
    /// counter reset yields an empty window rather than a wrap-around.
    pub fn since(&self, earlier: &HistogramSnapshot) -> HistogramSnapshot {
        let counts = self
            .counts
            .iter()
            .enumerate()
            .map(|(i, &c)| c.saturating_sub(earlier.counts.get(i).copied().unwrap_or(0)))
            .collect();
        HistogramSnapshot {
            counts,
            sum_seconds: (self.sum_seconds - earlier.sum_seconds).max(0.0),
        }
    }

    /// Estimates the `q` quantile (0 < q ≤ 1) in seconds by linear interpolation inside the bucket that
    /// holds it, as Prometheus' `histogram_quantile` does. Returns `None` for an empty window. A quantile
    /// that falls in the `+Inf` bucket is reported as the largest finite bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            if c > 0 && (seen + c) as f64 >= rank {
                let Some(&upper) = LATENCY_BOUNDS_SECONDS.get(i) else {
                    return LATENCY_BOUNDS_SECONDS.last().copied();
                };
                let lower = if i == 0 {
                    0.0
                } else {
                    LATENCY_BOUNDS_SECONDS[i - 1]
                };
                let within = (rank - seen as f64) / c as f64;
                return Some(lower + (upper - lower) * within);
            }
            seen += c;
        }
        LATENCY_BOUNDS_SECONDS.last().copied()
    }
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
        assert_eq!(h.snapshot().quantile(0.99), Some(30.0));
    }
}
