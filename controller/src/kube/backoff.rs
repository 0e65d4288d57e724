//! Exponential backoff of failed reconciles, per object: 5 s after the first failure in a row,
//! doubling up to 5 min; a successful reconcile resets it (kube-runtime leaves the retry delay to
//! the `error_policy`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// The wait after the first failure in a row.
pub const FIRST: Duration = Duration::from_secs(5);

/// The longest wait between retries of an object that keeps failing.
pub const MAX: Duration = Duration::from_secs(300);

/// Failures in a row, by object key (a uid, or `namespace/name`).
#[derive(Debug, Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    /// Records one more failure of `key` and returns how long to wait: [`FIRST`] doubled per
    /// failure in a row before this one, at most [`MAX`].
    pub fn failed(&self, key: &str) -> Duration {
        let Ok(mut failures) = self.failures.lock() else {
            return FIRST;
        };
        let n = failures.entry(key.to_owned()).or_insert(0);
        let wait = FIRST.saturating_mul(2u32.saturating_pow((*n).min(16)));
        *n += 1;
        wait.min(MAX)
    }

    /// Forgets `key`'s failures: its next failure waits [`FIRST`] again.
    pub fn succeeded(&self, key: &str) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_per_failure_in_a_row_up_to_five_minutes_and_reset_on_success() {
        let backoff = Backoff::default();
        let waits: Vec<u64> = (0..9).map(|_| backoff.failed("a").as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(backoff.failed("b").as_secs(), 5, "per object");
        backoff.succeeded("a");
        assert_eq!(backoff.failed("a").as_secs(), 5);
    }
}
