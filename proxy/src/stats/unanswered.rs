//! Requests sent to a backend that have no response head yet, counted by when they were sent, so
//! that the analysis can tell how many have waited longer than its latency bound: a backend that
//! never answers leaves nothing in the latency histogram (which records a request when its head
//! or its failure comes), only requests waiting.
//!
//! Lock-free and allocation-free on the request path: a ring of [`SLOTS`] atomics, one per tick
//! of 1/[`TICKS_PER_SECOND`] s of send time. Each slot holds, in one `u64`, the tick it counts
//! for (its tag, upper 40 bits) and how many requests sent in that tick still wait (lower 24 bits).
//! A request sent in tick `t` adds 1 to slot `t % SLOTS` with one compare-and-swap (when the slot
//! still holds an older tick, that tick's waiting requests move to [`Waiting::older`] and the slot
//! takes `t`), and its answer, failure or drop takes 1 from the same slot if the slot still holds
//! `t`, or from `older` if the ring has come round since. So a request's wait is known to the tick
//! for the last `SLOTS` ticks (16 s) and as "longer than 15.97 s" after that.
//!
//! Reading ([`Waiting::snapshot`], at analysis and scrape time) walks the ring: a request sent in
//! tick `t` and read in tick `n` has waited more than `n - t - 1` ticks, its certain minimum.
//! The reading races with requests coming and going as every other counter of [`super`] does; a
//! request answered while its slot moves to `older` can leave `older` one short for that instant
//! (read as at least 0).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::histogram::LATENCY_BOUNDS_SECONDS;

/// Ticks per second of the send-time slots (a tick is 31.25 ms).
pub const TICKS_PER_SECOND: u64 = 32;

/// Slots in the ring: the ticks of the last 16 s.
pub const SLOTS: usize = 512;

/// The bounds, in seconds, that `crossfade_unanswered_requests{longer_than}` is exported at: `0`
/// (every request waiting) and the [`LATENCY_BOUNDS_SECONDS`] from the first above a tick (50 ms:
/// a shorter wait is not known, the ticks are 31.25 ms) to the last within the ring's reach
/// (10 s: a wait is known to the tick up to 15.97 s). Derived from the latency buckets at compile
/// time, so that the two cannot drift apart: `0, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1,
/// 2.5, 5, 10`.
pub const UNANSWERED_BOUNDS_SECONDS: &[f64] = &UNANSWERED_BOUNDS;

/// The first of [`LATENCY_BOUNDS_SECONDS`] above one tick.
const FIRST_BOUND: usize = first_bound_above(1.0 / TICKS_PER_SECOND as f64);

/// One past the last of [`LATENCY_BOUNDS_SECONDS`] within the ring (`SLOTS - 1` ticks).
const END_BOUND: usize = first_bound_above((SLOTS - 1) as f64 / TICKS_PER_SECOND as f64);

/// `0`, then `LATENCY_BOUNDS_SECONDS[FIRST_BOUND..END_BOUND]`.
const UNANSWERED_BOUNDS: [f64; END_BOUND - FIRST_BOUND + 1] = {
    let mut bounds = [0.0; END_BOUND - FIRST_BOUND + 1];
    let mut i = FIRST_BOUND;
    while i < END_BOUND {
        bounds[i - FIRST_BOUND + 1] = LATENCY_BOUNDS_SECONDS[i];
        i += 1;
    }
    bounds
};

/// The index of the first of [`LATENCY_BOUNDS_SECONDS`] above `seconds` (their count when none
/// is). Compile-time only.
const fn first_bound_above(seconds: f64) -> usize {
    let mut i = 0;
    while i < LATENCY_BOUNDS_SECONDS.len() && LATENCY_BOUNDS_SECONDS[i] <= seconds {
        i += 1;
    }
    i
}

/// Low bits of a slot: the count.
const COUNT_BITS: u32 = 24;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

/// The instant tick 0 starts at: the first use in the process.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// The tick `at` falls in (0 before the epoch).
#[inline]
pub fn tick(at: Instant) -> u64 {
    let since = at.saturating_duration_since(epoch());
    since.as_secs() * TICKS_PER_SECOND
        + u64::from(since.subsec_nanos() / (1_000_000_000 / TICKS_PER_SECOND as u32))
}

/// One backend's requests waiting for a response head, by send tick (see the module docs).
#[derive(Debug)]
pub struct Waiting {
    slots: Box<[AtomicU64]>,
    /// Requests whose slot was taken by a later tick: sent at least `SLOTS` ticks before that.
    older: AtomicI64,
}

/// Requests waiting for a response head, grouped by how long each has certainly waited.
///
/// From a proxy's own counters the groups are its ticks (within 31.25 ms); read from `/metrics`
/// they are the exported bounds (`crossfade_unanswered_requests{longer_than}`), each request in
/// the group of the highest bound it is known to have waited past. Summed over replicas in
/// Kubernetes mode.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Unanswered {
    /// `(seconds, requests)`: requests that have waited longer than `seconds` (and are not known
    /// to have waited longer than the next group's), ascending by `seconds`; `seconds` 0 for the
    /// ones with no wait known beyond that. Groups with no request are left out.
    pub waited: Vec<(f64, u64)>,
}

// === impl Waiting ===

impl Default for Waiting {
    fn default() -> Waiting {
        Waiting {
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            older: AtomicI64::new(0),
        }
    }
}

impl Waiting {
    /// Counts a request sent in tick `at`; returns the tick it is counted under, which
    /// [`Waiting::end`] takes. That is `at`, or, when this thread read the clock so long before
    /// that the slot already holds a later tick, that later one (the request then looks younger,
    /// never older, than it is).
    #[inline]
    pub fn start(&self, at: u64) -> u64 {
        let slot = &self.slots[(at % SLOTS as u64) as usize];
        let mut current = slot.load(Relaxed);
        loop {
            let (tag, count) = (current >> COUNT_BITS, current & COUNT_MASK);
            let (next, moved, counted) = if tag < at {
                ((at << COUNT_BITS) | 1, count, at)
            } else {
                (current + 1, 0, tag)
            };
            match slot.compare_exchange_weak(current, next, Relaxed, Relaxed) {
                Ok(_) => {
                    if moved > 0 {
                        self.older.fetch_add(moved as i64, Relaxed);
                    }
                    return counted;
                }
                Err(now) => current = now,
            }
        }
    }

    /// Ends the wait of a request counted under tick `tag` ([`Waiting::start`]'s answer).
    #[inline]
    pub fn end(&self, tag: u64) {
        let slot = &self.slots[(tag % SLOTS as u64) as usize];
        let mut current = slot.load(Relaxed);
        while current >> COUNT_BITS == tag && current & COUNT_MASK > 0 {
            match slot.compare_exchange_weak(current, current - 1, Relaxed, Relaxed) {
                Ok(_) => return,
                Err(now) => current = now,
            }
        }
        // The ring came round: the request was moved to `older` (or is about to be).
        self.older.fetch_sub(1, Relaxed);
    }

    /// The requests waiting at tick `now`, grouped by tick.
    pub fn snapshot(&self, now: u64) -> Unanswered {
        let per_tick = 1.0 / TICKS_PER_SECOND as f64;
        let mut waited: Vec<(f64, u64)> = Vec::new();
        for slot in self.slots.iter() {
            let current = slot.load(Relaxed);
            let (tag, count) = (current >> COUNT_BITS, current & COUNT_MASK);
            if count > 0 {
                // Sent in [tag, tag + 1), read in [now, now + 1): more than now - tag - 1 ticks.
                let ticks = now.saturating_sub(tag).saturating_sub(1);
                waited.push((ticks as f64 * per_tick, count));
            }
        }
        let older = self.older.load(Relaxed).max(0) as u64;
        if older > 0 {
            waited.push(((SLOTS - 1) as f64 * per_tick, older));
        }
        Unanswered::from_groups(waited)
    }
}

// === impl Unanswered ===

impl Unanswered {
    /// Groups in any order, merged and sorted (groups of equal `seconds` added up, empty ones
    /// left out).
    pub fn from_groups(mut groups: Vec<(f64, u64)>) -> Unanswered {
        groups.retain(|&(seconds, count)| count > 0 && seconds.is_finite());
        groups.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut waited: Vec<(f64, u64)> = Vec::with_capacity(groups.len());
        for (seconds, count) in groups {
            match waited.last_mut() {
                Some(last) if last.0 == seconds => last.1 += count,
                _ => waited.push((seconds, count)),
            }
        }
        Unanswered { waited }
    }

    /// From the cumulative counts of `crossfade_unanswered_requests{longer_than}`: `(bound,
    /// requests that waited longer than bound)` in any order.
    pub fn from_cumulative(mut counts: Vec<(f64, u64)>) -> Unanswered {
        counts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let groups = counts
            .iter()
            .enumerate()
            .map(|(i, &(bound, count))| {
                let beyond = counts.get(i + 1).map_or(0, |next| next.1);
                (bound, count.saturating_sub(beyond))
            })
            .collect();
        Unanswered::from_groups(groups)
    }

    /// Every request waiting.
    pub fn total(&self) -> u64 {
        self.waited.iter().map(|g| g.1).sum()
    }

    /// Requests certainly waiting longer than `seconds` (all of them for 0): the groups at or
    /// above it. From `/metrics`, a bound between two exported ones counts as the next one up.
    pub fn longer_than(&self, seconds: f64) -> u64 {
        self.waited
            .iter()
            .filter(|g| g.0 >= seconds)
            .map(|g| g.1)
            .sum()
    }

    /// Whether no request is waiting.
    pub fn is_empty(&self) -> bool {
        self.total() == 0
    }

    /// Adds `other`'s groups (another replica's) to these.
    pub fn add(&mut self, other: &Unanswered) {
        let mut groups = std::mem::take(&mut self.waited);
        groups.extend_from_slice(&other.waited);
        *self = Unanswered::from_groups(groups);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_counts_by_its_send_tick_until_it_ends() {
        let w = Waiting::default();
        let a = w.start(100);
        let b = w.start(100);
        let c = w.start(116);
        // Read at tick 132: a and b waited more than 31 ticks, c more than 15.
        let s = w.snapshot(132);
        assert_eq!(s.total(), 3);
        assert_eq!(s.longer_than(0.0), 3);
        assert_eq!(s.longer_than(0.5), 2, "{s:?}");
        assert_eq!(s.longer_than(0.97), 0, "{s:?}");
        assert_eq!(s.longer_than(0.45), 3, "{s:?}");
        w.end(a);
        w.end(c);
        assert_eq!(w.snapshot(132).waited, vec![(31.0 / 32.0, 1)]);
        w.end(b);
        assert!(w.snapshot(132).is_empty());
    }

    #[test]
    fn a_request_older_than_the_ring_is_kept_and_ended_from_older() {
        let w = Waiting::default();
        let old = w.start(3);
        let young = w.start(3 + SLOTS as u64);
        let s = w.snapshot(3 + SLOTS as u64);
        assert_eq!(s.total(), 2);
        assert_eq!(s.longer_than(15.0), 1, "{s:?}");
        w.end(old);
        let s = w.snapshot(3 + SLOTS as u64);
        assert_eq!(s.waited, vec![(0.0, 1)]);
        w.end(young);
        assert!(w.snapshot(3 + SLOTS as u64).is_empty());
    }

    #[test]
    fn a_stale_tick_counts_under_the_later_one_it_finds() {
        let w = Waiting::default();
        let later = w.start(10 + SLOTS as u64);
        let stale = w.start(10);
        assert_eq!(stale, later);
        assert_eq!(w.snapshot(10 + SLOTS as u64).waited, vec![(0.0, 2)]);
        w.end(stale);
        w.end(later);
        assert!(w.snapshot(10 + SLOTS as u64).is_empty());
    }

    #[test]
    fn cumulative_gauges_become_groups_that_add_across_replicas() {
        let mut a = Unanswered::from_cumulative(vec![(0.5, 3), (0.0, 5), (1.0, 1)]);
        assert_eq!(a.waited, vec![(0.0, 2), (0.5, 2), (1.0, 1)]);
        assert_eq!(a.longer_than(0.3), 3);
        assert_eq!(a.longer_than(0.5), 3);
        assert_eq!(a.longer_than(0.6), 1);
        a.add(&Unanswered::from_cumulative(vec![(0.0, 1), (0.5, 1)]));
        assert_eq!(a.waited, vec![(0.0, 2), (0.5, 3), (1.0, 1)]);
        assert_eq!(a.total(), 6);
    }
}
