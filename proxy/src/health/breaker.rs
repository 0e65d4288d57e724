//! The breaker's sliding error window: ten buckets of a tenth of the window each, in atomics.
//!
//! A bucket is claimed for a new time slice by whoever first writes to it in that slice; counts
//! that race the claim may be lost or land in the new slice. The breaker needs a rate, not an
//! audit, so that is fine.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Buckets per window: a rate over 10 % slices moves smoothly enough for a 1 s window.
const BUCKETS: u64 = 10;

/// Requests and errors over the last window, in time buckets.
#[derive(Debug, Default)]
pub struct ErrorWindow {
    buckets: [Bucket; BUCKETS as usize],
}

#[derive(Debug, Default)]
struct Bucket {
    /// Slice number + 1 (0: never used).
    slice: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
}

impl ErrorWindow {
    /// Counts one request (an error when `error`) at `now_ms`.
    pub fn record(&self, now_ms: u64, window: Duration, error: bool) {
        let slice = slice_of(now_ms, window);
        let bucket = &self.buckets[(slice % BUCKETS) as usize];
        let seen = bucket.slice.load(Relaxed);
        if seen != slice
            && bucket
                .slice
                .compare_exchange(seen, slice, Relaxed, Relaxed)
                .is_ok()
        {
            bucket.requests.store(0, Relaxed);
            bucket.errors.store(0, Relaxed);
        }
        bucket.requests.fetch_add(1, Relaxed);
        if error {
            bucket.errors.fetch_add(1, Relaxed);
        }
    }

    /// `(requests, errors)` over the window ending at `now_ms`.
    pub fn totals(&self, now_ms: u64, window: Duration) -> (u64, u64) {
        let current = slice_of(now_ms, window);
        self.buckets
            .iter()
            .filter(|b| {
                let slice = b.slice.load(Relaxed);
                // Slice 0 is "never used" (or cleared): never counted, also in the first window
                // after the clock's start, where `0 + BUCKETS > current` would let a cleared
                // bucket's old counts through.
                slice != 0 && slice + BUCKETS > current && slice <= current
            })
            .fold((0, 0), |(r, e), b| {
                (r + b.requests.load(Relaxed), e + b.errors.load(Relaxed))
            })
    }

    /// Forgets everything (the weights were set again).
    pub fn clear(&self) {
        for bucket in &self.buckets {
            bucket.slice.store(0, Relaxed);
        }
    }
}

fn slice_of(now_ms: u64, window: Duration) -> u64 {
    let width = (u64::try_from(window.as_millis()).unwrap_or(u64::MAX) / BUCKETS).max(1);
    now_ms / width + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cleared_window_counts_nothing_even_in_the_first_window_of_the_clock() {
        let window = ErrorWindow::default();
        let second = Duration::from_secs(1);
        for now in [100, 250, 400] {
            window.record(now, second, true);
        }
        assert_eq!(window.totals(400, second), (3, 3));
        window.clear();
        assert_eq!(window.totals(450, second), (0, 0));
        window.record(500, second, false);
        assert_eq!(window.totals(500, second), (1, 0));
    }
}
