//! The fine log-linear latency buckets the analysis reads: at most 1/128 (0.78%) of a bucket's lower
//! bound wide, so quantiles and "slower than" counts are exact to within 0.78% (or 1 µs).
//!
//! Layout, in whole microseconds `us` (the duration truncated): `us < 256` has a bucket per
//! microsecond; above, each power of two `[2^k, 2^(k+1))` up to 2^26 µs (67 s) is split into 128
//! equal sub-buckets (the HdrHistogram log-linear scheme: the top 8 bits of `us` pick the bucket);
//! one overflow bucket holds the rest. 2,561 counts, 20 KiB per backend.

/// Microseconds below which every microsecond has its own bucket (`2 × FINE_SUB_BUCKETS`).
const LINEAR_MICROS: u64 = 256;
/// Sub-buckets per power of two above [`LINEAR_MICROS`]: a bucket is at most 1/128 of its lower
/// bound wide.
pub const FINE_SUB_BUCKETS: u64 = 128;
/// Powers of two covered: durations from 2^26 µs (67.1 s, beyond the 30 s request timeout) on
/// share the overflow bucket.
const TOP_OCTAVE: u32 = 26;
/// The largest relative width of a fine bucket above [`LINEAR_MICROS`] (`1 / FINE_SUB_BUCKETS`).
pub const FINE_RELATIVE_WIDTH: f64 = 1.0 / FINE_SUB_BUCKETS as f64;
/// Number of fine buckets, the overflow bucket included.
pub const FINE_BUCKETS: usize =
    (LINEAR_MICROS + (TOP_OCTAVE as u64 - 8) * FINE_SUB_BUCKETS) as usize + 1;

/// The fine bucket holding a duration of `micros` whole microseconds.
#[inline]
pub fn fine_index(micros: u64) -> usize {
    if micros < LINEAR_MICROS {
        return micros as usize;
    }
    let octave = 63 - micros.leading_zeros(); // ≥ 8
    if octave >= TOP_OCTAVE {
        return FINE_BUCKETS - 1;
    }
    let sub = (micros >> (octave - 7)) - FINE_SUB_BUCKETS;
    (LINEAR_MICROS + u64::from(octave - 8) * FINE_SUB_BUCKETS + sub) as usize
}

/// The bounds of fine bucket `index` in seconds, `[lower, upper)`: it holds the durations whose
/// whole microseconds are at least `lower` and below `upper`. The overflow bucket's upper bound is
/// infinite.
pub fn fine_bounds(index: usize) -> (f64, f64) {
    let i = index as u64;
    let (lower, upper) = if i < LINEAR_MICROS {
        (i, i + 1)
    } else if index >= FINE_BUCKETS - 1 {
        return ((1u64 << TOP_OCTAVE) as f64 / 1e6, f64::INFINITY);
    } else {
        let octave = 8 + (i - LINEAR_MICROS) / FINE_SUB_BUCKETS;
        let sub = (i - LINEAR_MICROS) % FINE_SUB_BUCKETS;
        let shift = octave - 7;
        (
            (FINE_SUB_BUCKETS + sub) << shift,
            (FINE_SUB_BUCKETS + sub + 1) << shift,
        )
    };
    (lower as f64 / 1e6, upper as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_microsecond_lands_in_a_bucket_whose_bounds_hold_it() {
        let mut probes: Vec<u64> = (0..5000).collect();
        probes.extend((1..TOP_OCTAVE + 2).flat_map(|k| {
            let p = 1u64 << k;
            [p - 1, p, p + 1, p + p / 3]
        }));
        probes.extend([521_337, 600_000, 750_000, 29_999_999, u64::MAX]);
        for us in probes {
            let i = fine_index(us);
            assert!(i < FINE_BUCKETS, "{us} µs → {i}");
            let (lower, upper) = fine_bounds(i);
            let s = us as f64 / 1e6;
            assert!(lower <= s && s < upper, "{us} µs not in [{lower}, {upper})");
        }
    }

    #[test]
    fn buckets_are_contiguous_and_at_most_one_128th_wide() {
        for i in 1..FINE_BUCKETS - 1 {
            let (lower, upper) = fine_bounds(i);
            assert_eq!(lower, fine_bounds(i - 1).1, "gap before bucket {i}");
            let width = upper - lower;
            assert!(
                width <= 1e-6 + 1e-12 || width <= lower * FINE_RELATIVE_WIDTH * (1.0 + 1e-12),
                "bucket {i} [{lower}, {upper}) too wide"
            );
        }
    }
}
