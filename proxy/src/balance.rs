//! Load balancing within a backend: which of its endpoints takes a request. Weights between blue
//! and green are never touched here; this only chooses among one backend's endpoints, after
//! health and outlier ejection have said which of them may take requests.
//!
//! Two policies ([`BalancePolicy`]):
//! - **`p2c_peak_ewma`** (opt-in): power of two random choices over a peak-EWMA cost, the
//!   balancer of linkerd2-proxy (tower's `balance::p2c` over `load::PeakEwma`, itself derived from
//!   Finagle's `PeakEwma`). Two distinct endpoints are drawn at random among those that may take
//!   requests; the one with the lower cost wins, the first drawn on a tie. An endpoint's cost is
//!   `rtt × (pending + 1)`, where `pending` counts its requests sent and not yet answered, and `rtt`
//!   is its round-trip estimate: time from dispatch (for an upload, from its end) to the response
//!   head. A sample above the
//!   estimate replaces it at once (the peak); one below moves it by the weight `1 − e^(−Δt/decay)`,
//!   `Δt` being the time since the previous sample; between samples the estimate decays toward 0
//!   with time constant `decay` (default 10 s), so an endpoint that was slow once is tried again
//!   later. An endpoint without a sample starts at `default_rtt` (default 30 ms), decaying from
//!   when it was first seen. linkerd2-proxy's defaults are the same (`EWMA_DEFAULT_RTT` 30 ms,
//!   `EWMA_DECAY` 10 s). With equal latencies the costs stay level and every endpoint gets an even
//!   share; a slow or busy endpoint costs more and gets a smaller one.
//! - **`round_robin`** (the default): each endpoint in turn, exact to ±1 request (the table's
//!   cursor).
//!
//! Why round-robin is the default: with equal latencies p2c's shares are even only over time. On
//! sub-millisecond backends a scheduling hiccup on one endpoint is a peak that keeps traffic off it
//! for a few `decay` periods: over a 3,000-request burst on a loaded 2-core machine, 9 equal
//! instances got 183–515 requests each around a mean of 353, where round-robin gives each its
//! exact share, which is what case C04 and most operators expect (nginx, HAProxy and Envoy default
//! to round-robin too). p2c pays off where endpoints' latencies really differ (a slow node, a
//! cold cache, a noisy neighbour): a 50 ms endpoint beside an immediate one got 8–15 % of requests
//! under p2c, against 50 % under round-robin.
//!
//! # Why not tower's types
//! tower (a dependency already) has the same algorithm, but as services: `PeakEwma<S>` wraps each
//! endpoint's `Service` and `Balance<D>` polls a `Discover` stream of them through a ready cache.
//! The proxy instead picks an endpoint *index* in the routing table and sends over its own pools
//! (with connection affinity, see `upstream`), so tower's balancer would have to own the pools.
//! tower's estimate also sits behind a `Mutex` per endpoint, counts pending requests with `Arc`
//! strong counts, and writes the decayed estimate at every read. Here the state is three atomics
//! per endpoint ([`EndpointLoad`]), read without writing and updated with one compare-and-swap
//! loop, so the request path stays lock-free and allocation-free. The arithmetic follows tower's
//! `RttEstimate::update` (tower 0.5 `src/load/peak_ewma.rs`) and the pick follows
//! `p2c_ready_index` (`src/balance/p2c/service.rs`), with one difference: tower stores the decay
//! at every read, so the weight a later sample gets depends on how often the balancer looked; here
//! reads are pure, which is tower's result when nothing reads between two samples.
//!
//! Failures: a failed attempt (connect refused, reset, timeout) counts as a peak sample of at least
//! `default_rtt` and never lowers the estimate, so an endpoint that fails fast does not look cheap
//! and draw more requests; ejecting it is outlier detection's job (`health`).
//!
//! `pending` ends at the response head, not at the end of the body, as with tower's default
//! `CompleteOnResponse`: a long download or stream does not make its endpoint look busy.
//!
//! Even shares are a long-run property. On sub-millisecond backends on a busy machine, one
//! scheduling hiccup is a peak many times the typical RTT and moves traffic off that endpoint for
//! a few `decay` periods, so over a few seconds equal endpoints can get quite unequal counts (case
//! C04's end-to-end run measured 183 to 515 requests around a mean of 353 over nine instances).
//! That is the algorithm's purpose (react to peaks at once); `round_robin` is the policy for
//! exactly even counts.
//!
//! Everything here is pure (no tokio, no clock read): times are nanoseconds on a clock the caller
//! reads, so tests drive it with an injected clock.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::config::{BalanceConfig, BalancePolicy};
use crate::rng::RandomSource;

/// The resolved balancing settings of one backend: policy, default RTT and decay, from the route's
/// `balance` over the proxy-wide `upstream.balance` over the built-in defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Balance {
    /// How an endpoint is chosen.
    pub policy: BalancePolicy,
    /// RTT estimate of an endpoint without a sample yet, in nanoseconds (above 0).
    default_rtt_ns: f64,
    /// Time constant of the estimate's decay, in nanoseconds (above 0).
    decay_ns: f64,
}

/// The live load of one endpoint: its requests in flight and its peak-EWMA RTT estimate. Shared by
/// every table generation that has the endpoint (it lives with the endpoint's health), so in-flight
/// requests of an older table count and the estimate survives weight changes.
#[derive(Debug)]
pub struct EndpointLoad {
    /// Requests sent and not yet answered (response head or failure).
    pending: AtomicU32,
    /// The estimate in nanoseconds as `f64` bits; 0 until the first sample.
    rtt: AtomicU64,
    /// When `rtt` was last updated (or the endpoint first seen), nanoseconds on the caller's clock.
    at: AtomicU64,
}

/// A request in flight to one endpoint: counted in its `pending` until dropped. Drop it when the
/// response head or a failure arrives (after [`Pending::responded`] or [`Pending::failed`]); a
/// request whose future is cancelled drops it too, so the count never leaks.
#[derive(Debug)]
#[must_use = "the request counts as pending until this is dropped"]
pub struct Pending<'a> {
    load: &'a EndpointLoad,
    balance: Balance,
}

// === impl Balance ===

impl Balance {
    /// linkerd2-proxy's `EWMA_DEFAULT_RTT`.
    pub const DEFAULT_RTT: Duration = Duration::from_millis(30);
    /// linkerd2-proxy's `EWMA_DECAY`.
    pub const DEFAULT_DECAY: Duration = Duration::from_secs(10);

    /// Settings from a validated config: a field the route sets wins, then the proxy-wide one,
    /// then the default (`round_robin`, 30 ms, 10 s). A zero duration (refused by validation)
    /// is raised to 1 ns rather than divide by zero.
    pub fn resolve(route: Option<&BalanceConfig>, global: &BalanceConfig) -> Balance {
        let route = route.cloned().unwrap_or_default();
        let policy = route.policy.or(global.policy).unwrap_or_default();
        let default_rtt = route.default_rtt.or(global.default_rtt);
        let decay = route.decay.or(global.decay);
        Balance::new(
            policy,
            default_rtt.unwrap_or(Balance::DEFAULT_RTT),
            decay.unwrap_or(Balance::DEFAULT_DECAY),
        )
    }

    /// Settings from explicit values.
    pub fn new(policy: BalancePolicy, default_rtt: Duration, decay: Duration) -> Balance {
        Balance {
            policy,
            default_rtt_ns: nanos(default_rtt).max(1.0),
            decay_ns: nanos(decay).max(1.0),
        }
    }

    /// The default RTT.
    pub fn default_rtt(&self) -> Duration {
        Duration::from_nanos(self.default_rtt_ns as u64)
    }

    /// The decay's time constant.
    pub fn decay(&self) -> Duration {
        Duration::from_nanos(self.decay_ns as u64)
    }

    /// `e^(−elapsed/decay)`: how much of an estimate is left after `elapsed_ns`.
    #[inline]
    fn kept(&self, elapsed_ns: u64) -> f64 {
        (-(elapsed_ns as f64) / self.decay_ns).exp()
    }
}

impl Default for Balance {
    fn default() -> Self {
        Balance::resolve(None, &BalanceConfig::default())
    }
}

// === impl EndpointLoad ===

impl EndpointLoad {
    /// An endpoint first seen at `now_ns`: nothing pending, no sample (it starts at the default RTT,
    /// decaying from `now_ns`).
    pub fn new(now_ns: u64) -> EndpointLoad {
        EndpointLoad {
            pending: AtomicU32::new(0),
            rtt: AtomicU64::new(0),
            at: AtomicU64::new(now_ns),
        }
    }

    /// Requests in flight now.
    pub fn pending(&self) -> u32 {
        self.pending.load(Relaxed)
    }

    /// The RTT estimate at `now_ns`, in nanoseconds: the last one decayed since it was set.
    #[inline]
    pub fn rtt_ns(&self, balance: &Balance, now_ns: u64) -> f64 {
        let (prior, at) = self.prior(balance);
        prior * balance.kept(now_ns.saturating_sub(at))
    }

    /// The cost at `now_ns`: `rtt × (pending + 1)`, in nanoseconds.
    #[inline]
    pub fn cost(&self, balance: &Balance, now_ns: u64) -> f64 {
        self.rtt_ns(balance, now_ns) * (f64::from(self.pending()) + 1.0)
    }

    /// Counts a request sent to this endpoint until the returned guard drops.
    #[inline]
    pub fn dispatch(&self, balance: &Balance) -> Pending<'_> {
        self.pending.fetch_add(1, Relaxed);
        Pending {
            load: self,
            balance: *balance,
        }
    }

    /// Folds in a sample: the response head came `rtt_ns` after dispatch, at `now_ns`.
    ///
    /// Above the estimate decayed to now, the sample replaces it (the peak); below, the estimate
    /// moves toward it by `1 − e^(−Δt/decay)` (tower's `RttEstimate::update`).
    pub fn observe(&self, balance: &Balance, rtt_ns: u64, now_ns: u64) {
        let sample = rtt_ns as f64;
        self.update(balance, now_ns, |prior, kept| {
            let decayed = prior * kept;
            if sample > decayed {
                sample
            } else {
                decayed + sample * (1.0 - kept)
            }
        });
    }

    /// Folds in a failed attempt that took `elapsed_ns`: a peak sample of at least the default RTT
    /// that never lowers the estimate (see the module docs).
    pub fn observe_failure(&self, balance: &Balance, elapsed_ns: u64, now_ns: u64) {
        let sample = (elapsed_ns as f64).max(balance.default_rtt_ns);
        self.update(balance, now_ns, |prior, kept| (prior * kept).max(sample));
    }

    /// The last estimate (or the default RTT before any sample) and when it was set.
    #[inline]
    fn prior(&self, balance: &Balance) -> (f64, u64) {
        let bits = self.rtt.load(Relaxed);
        let at = self.at.load(Relaxed);
        let prior = match bits {
            0 => balance.default_rtt_ns,
            bits => f64::from_bits(bits),
        };
        (prior, at)
    }

    /// One lock-free update: `next(prior, kept)` from the estimate and the share of it kept since
    /// it was set, retried until no other update came in between, so a peak is never lost. The
    /// timestamp follows the estimate; a reader between the two sees the new estimate a little
    /// more decayed, never a wrong order of magnitude.
    fn update(&self, balance: &Balance, now_ns: u64, next: impl Fn(f64, f64) -> f64) {
        let mut bits = self.rtt.load(Relaxed);
        loop {
            let at = self.at.load(Relaxed);
            let prior = match bits {
                0 => balance.default_rtt_ns,
                bits => f64::from_bits(bits),
            };
            let kept = balance.kept(now_ns.saturating_sub(at));
            // At least 1 ns: 0 means "no sample yet".
            let value = next(prior, kept).max(1.0);
            match self
                .rtt
                .compare_exchange_weak(bits, value.to_bits(), Relaxed, Relaxed)
            {
                Ok(_) => break,
                Err(current) => bits = current,
            }
        }
        self.at.fetch_max(now_ns, Relaxed);
    }
}

// === impl Pending ===

impl Pending<'_> {
    /// The response head arrived `rtt_ns` after dispatch, at `now_ns`: a sample.
    #[inline]
    pub fn responded(self, rtt_ns: u64, now_ns: u64) {
        self.load.observe(&self.balance, rtt_ns, now_ns);
    }

    /// The attempt failed after `elapsed_ns`, at `now_ns` (see [`EndpointLoad::observe_failure`]).
    pub fn failed(self, elapsed_ns: u64, now_ns: u64) {
        self.load.observe_failure(&self.balance, elapsed_ns, now_ns);
    }
}

impl Drop for Pending<'_> {
    #[inline]
    fn drop(&mut self) {
        // Never below 0, even if a count were ever lost.
        let _ = self
            .load
            .pending
            .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1));
    }
}

// === the pick ===

/// Power of two choices among endpoints `0..n`: two distinct endpoints drawn uniformly among those
/// for which `eligible` holds, the one with the lower `cost` wins (the first drawn on a tie).
/// `None` when no endpoint is eligible; the only one when one is.
///
/// Draws two indices over all `n` first and takes them when both are eligible (the common case,
/// no scan); otherwise draws over the eligible ones only. Either way every pair of eligible
/// endpoints is equally likely, as with tower's `sample_floyd2` over its ready set.
#[inline]
pub fn p2c(
    n: usize,
    eligible: impl Fn(usize) -> bool,
    cost: impl Fn(usize) -> f64,
    rng: &mut impl RandomSource,
) -> Option<usize> {
    let cheaper = |a: usize, b: usize| if cost(b) < cost(a) { b } else { a };
    match n {
        0 => return None,
        1 => return eligible(0).then_some(0),
        _ => {}
    }
    let (a, b) = distinct_pair(n, rng);
    if eligible(a) && eligible(b) {
        return Some(cheaper(a, b));
    }
    let m = (0..n).filter(|&i| eligible(i)).count();
    let nth = |k: usize| (0..n).filter(|&i| eligible(i)).nth(k);
    match m {
        0 => None,
        1 => nth(0),
        _ => {
            let (a, b) = distinct_pair(m, rng);
            Some(cheaper(nth(a)?, nth(b)?))
        }
    }
}

/// Two distinct uniform indices in `0..n` (`n ≥ 2`), in random order.
#[inline]
fn distinct_pair(n: usize, rng: &mut impl RandomSource) -> (usize, usize) {
    let a = below(n, rng);
    let b = below(n - 1, rng);
    (a, if b >= a { b + 1 } else { b })
}

/// A uniform index in `0..n` (`n ≥ 1`) by multiply-shift (Lemire): bias below `n / 2³²`.
#[inline]
fn below(n: usize, rng: &mut impl RandomSource) -> usize {
    let n = u64::try_from(n).unwrap_or(u64::MAX);
    let index = (u64::from(rng.next_u32()) * n.min(u64::from(u32::MAX))) >> 32;
    usize::try_from(index).unwrap_or(0)
}

/// `d` in nanoseconds as `f64` (saturating far above any configured duration).
pub fn nanos(d: Duration) -> f64 {
    d.as_nanos() as f64
}

#[cfg(test)]
mod tests;
