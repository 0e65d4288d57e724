//! A seeded generator (xoshiro256**, seeded by SplitMix64) and the draws the streams need.

/// xoshiro256** (Blackman & Vigna 2018): fast, and reproducible from one `u64` seed.
pub struct Rng([u64; 4]);

impl Rng {
    /// A generator whose whole stream follows from `seed`.
    pub fn new(seed: u64) -> Rng {
        let mut s = seed;
        let mut next = || {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng([next(), next(), next(), next()])
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Poisson(`mean`): inversion for small means, Hörmann's PTRS (1993, "The transformed
    /// rejection method for generating Poisson random variables") above 10, as numpy does.
    pub fn poisson(&mut self, mean: f64) -> u64 {
        if mean <= 0.0 {
            return 0;
        }
        if mean < 10.0 {
            let (mut k, mut p, mut cdf) = (0u64, (-mean).exp(), 0.0);
            let u = self.uniform();
            loop {
                cdf += p;
                if u < cdf || p == 0.0 {
                    return k;
                }
                k += 1;
                p *= mean / k as f64;
            }
        }
        self.ptrs(mean)
    }

    fn ptrs(&mut self, lam: f64) -> u64 {
        let slam = lam.sqrt();
        let loglam = lam.ln();
        let b = 0.931 + 2.53 * slam;
        let a = -0.059 + 0.02483 * b;
        let invalpha = 1.1239 + 1.1328 / (b - 3.4);
        let vr = 0.9277 - 3.6224 / (b - 2.0);
        loop {
            let u = self.uniform() - 0.5;
            let v = self.uniform();
            let us = 0.5 - u.abs();
            let k = ((2.0 * a / us + b) * u + lam + 0.43).floor();
            if us >= 0.07 && v <= vr {
                return k as u64;
            }
            if k < 0.0 || (us < 0.013 && v > us) {
                continue;
            }
            let lhs = v.ln() + invalpha.ln() - (a / (us * us) + b).ln();
            if lhs <= -lam + k * loglam - ln_factorial(k) {
                return k as u64;
            }
        }
    }

    /// Binomial(`n`, `p`) by inversion (the streams only need small `n·p`); a normal
    /// approximation beyond `n·p = 50`.
    pub fn binomial(&mut self, n: u64, p: f64) -> u64 {
        if n == 0 || p <= 0.0 {
            return 0;
        }
        let mean = n as f64 * p;
        if mean > 50.0 {
            let z = self.normal();
            let x = (mean + z * (mean * (1.0 - p)).sqrt()).round();
            return x.clamp(0.0, n as f64) as u64;
        }
        let q = 1.0 - p;
        let mut pmf = q.powf(n as f64);
        let (mut k, mut cdf) = (0u64, 0.0);
        let u = self.uniform();
        loop {
            cdf += pmf;
            if u < cdf || k == n || pmf == 0.0 && k as f64 > mean {
                return k;
            }
            pmf *= (n - k) as f64 / (k + 1) as f64 * p / q;
            k += 1;
        }
    }

    fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(f64::MIN_POSITIVE);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// ln(k!) exactly for small k, by Stirling's series above.
fn ln_factorial(k: f64) -> f64 {
    if k < 10.0 {
        return (1..=k as u64).map(|i| (i as f64).ln()).sum();
    }
    let n = k + 1.0;
    (n - 0.5) * n.ln() - n + 0.5 * std::f64::consts::TAU.ln() + 1.0 / (12.0 * n)
        - 1.0 / (360.0 * n * n * n)
}

/// The standard normal CDF (erfc by W. J. Cody's rational approximations is overkill here; this
/// is Numerical Recipes' `erfcc`, relative error < 1.2e-7).
pub fn normal_cdf(x: f64) -> f64 {
    let z = x.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let erfc = t * poly.exp();
    if x >= 0.0 {
        1.0 - 0.5 * erfc
    } else {
        0.5 * erfc
    }
}
