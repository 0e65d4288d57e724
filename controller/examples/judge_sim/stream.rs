//! Synthetic request streams, binned into the proxy's latency buckets as the proxy bins them.
//!
//! The model is BASELINE.md's: Poisson arrivals at `total` requests per second, each routed to
//! green with probability `weight`; errors Bernoulli per request; latency lognormal with median
//! 20 ms. One second of one backend is drawn at once: by Poisson splitting, the request count of
//! each latency bucket is an independent Poisson draw with mean `rate × P(bucket)`, exactly the
//! distribution that per-request draws followed by the proxy's `observe` would give; errors are
//! then Binomial(requests, p), independent of latency.

use crossfade_controller::analysis::Window;
use crossfade_proxy::histogram::{HistogramSnapshot, LATENCY_BOUNDS_SECONDS};

use crate::rng::{normal_cdf, Rng};

/// Median latency of both versions, in seconds.
pub const MEDIAN_SECONDS: f64 = 0.020;

/// z of the 0.99 quantile of the standard normal.
const Z99: f64 = 2.326_347_874;

/// One version's behaviour.
#[derive(Clone, Copy, Debug)]
pub struct Version {
    /// Probability that a request fails.
    pub error_rate: f64,
    /// p99 latency in seconds (the lognormal's σ follows from it and the 20 ms median).
    pub p99: f64,
}

/// Blue: 0.5% errors, p99 80 ms.
pub const BLUE: Version = Version {
    error_rate: 0.005,
    p99: 0.080,
};

/// One backend's stream: its rate and bucket probabilities.
pub struct Backend {
    rate: f64,
    error_rate: f64,
    bucket_p: Vec<f64>,
}

impl Backend {
    /// A backend receiving `rate` requests per second of `version`.
    pub fn new(rate: f64, version: Version) -> Backend {
        let mu = MEDIAN_SECONDS.ln();
        let sigma = (version.p99 / MEDIAN_SECONDS).ln() / Z99;
        let cdf = |x: f64| normal_cdf((x.ln() - mu) / sigma);
        let mut prev = 0.0;
        let mut bucket_p: Vec<f64> = LATENCY_BOUNDS_SECONDS
            .iter()
            .map(|&b| {
                let c = cdf(b);
                let p = c - prev;
                prev = c;
                p
            })
            .collect();
        bucket_p.push(1.0 - prev);
        Backend {
            rate,
            error_rate: version.error_rate,
            bucket_p,
        }
    }

    /// One second of traffic, added to the cumulative `window`; returns the second's own window.
    pub fn tick(&self, rng: &mut Rng, window: &mut Window) -> Window {
        let counts: Vec<u64> = self
            .bucket_p
            .iter()
            .map(|&p| rng.poisson(self.rate * p))
            .collect();
        let requests: u64 = counts.iter().sum();
        let errors = rng.binomial(requests, self.error_rate);
        let second = Window::from_counters(
            requests,
            errors,
            HistogramSnapshot {
                fine: Vec::new(),
                counts,
                sum_seconds: 0.0,
            },
        );
        add(window, &second);
        second
    }
}

/// `into += w`.
pub fn add(into: &mut Window, w: &Window) {
    into.requests += w.requests;
    into.errors += w.errors;
    let counts = &mut into.latency.counts;
    if counts.len() < w.latency.counts.len() {
        counts.resize(w.latency.counts.len(), 0);
    }
    for (c, x) in counts.iter_mut().zip(&w.latency.counts) {
        *c += x;
    }
}
