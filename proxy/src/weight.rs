//! Weights in basis points, the two backend slots, and the per-request weighted pick.

use std::fmt;

use crate::shown::shown;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A whole route's traffic, in basis points (10000 bp = 100 %).
pub const FULL_BP: u32 = 10_000;

/// One of a route's two backend slots.
///
/// Blue and green are names of slots, not roles: the **active** slot serves before a rollout and the
/// **preview** slot receives the patched version; after a completed rollout the roles swap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    /// The slot named `blue`.
    Blue,
    /// The slot named `green`.
    Green,
}

// Read as a keyword, so that `active: [blue]` says `expected "blue" or "green"`, not a YAML tag
// (trial report H14). No default: a route's `active` has one (blue), a state file's has none.
crate::keyword_enum!(Slot, default None, "blue" => Slot::Blue, "green" => Slot::Green);

impl Slot {
    /// Both slots, blue first.
    pub const ALL: [Slot; 2] = [Slot::Blue, Slot::Green];

    /// The other slot.
    pub fn other(self) -> Slot {
        match self {
            Slot::Blue => Slot::Green,
            Slot::Green => Slot::Blue,
        }
    }

    /// The slot's name as used in config, metrics labels and the admin API: `blue` or `green`.
    pub fn as_str(self) -> &'static str {
        match self {
            Slot::Blue => "blue",
            Slot::Green => "green",
        }
    }

    /// Index into two-element arrays: blue 0, green 1.
    pub fn index(self) -> usize {
        match self {
            Slot::Blue => 0,
            Slot::Green => 1,
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A route's split between its two slots, in basis points.
///
/// Valid splits sum to exactly 10000, or are both 0 (the route is disabled and answers 503 without
/// sending anything upstream).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Weights {
    /// Blue's share in basis points (0..=10000).
    pub blue: u32,
    /// Green's share in basis points (0..=10000).
    pub green: u32,
}

impl Weights {
    /// All traffic to `slot`.
    pub fn all_to(slot: Slot) -> Weights {
        Weights::with(slot, FULL_BP)
    }

    /// `bp` basis points to `slot` and the rest to the other slot. `bp` above 10000 is clamped.
    pub fn with(slot: Slot, bp: u32) -> Weights {
        let bp = bp.min(FULL_BP);
        match slot {
            Slot::Blue => Weights {
                blue: bp,
                green: FULL_BP - bp,
            },
            Slot::Green => Weights {
                blue: FULL_BP - bp,
                green: bp,
            },
        }
    }

    /// The share of `slot` in basis points.
    pub fn of(self, slot: Slot) -> u32 {
        match slot {
            Slot::Blue => self.blue,
            Slot::Green => self.green,
        }
    }

    /// Checks that each weight is at most 10000 bp and that they sum to 10000 or to 0.
    ///
    /// # Errors
    /// A lowercase message naming the offending value.
    pub fn check(self) -> Result<(), String> {
        for slot in Slot::ALL {
            let w = self.of(slot);
            if w > FULL_BP {
                return Err(format!("{slot}: {} is above 100%", Percent(w)));
            }
        }
        match self.blue + self.green {
            0 | FULL_BP => Ok(()),
            sum => Err(format!(
                "weights sum to {}, not 100% (or 0% to disable the route)",
                Percent(sum)
            )),
        }
    }

    /// The weighted pick: the slot that receives a request whose uniform draw is `r` in `0..10000`.
    ///
    /// Green is chosen iff `r < green`, so a weight of 0 never matches and 10000 always does (the
    /// strict `<` is what keeps weight 0 at exactly zero requests; see case C03). Returns `None` when the
    /// route is disabled (both weights 0).
    #[inline]
    pub fn pick(self, r: u32) -> Option<Slot> {
        if r < self.green {
            Some(Slot::Green)
        } else if self.blue > 0 {
            Some(Slot::Blue)
        } else {
            None
        }
    }
}

/// Maps a uniform 32-bit random value onto `0..10000` without modulo bias worth measuring
/// (Lemire's multiply-shift: the bias is below 10000 / 2^32 ≈ 2.3e-6).
#[inline]
pub fn draw_bp(random: u32) -> u32 {
    ((u64::from(random) * u64::from(FULL_BP)) >> 32) as u32
}

/// A share in basis points that reads and writes as percent.
///
/// Config and CLI accept a number (`12.5`) or a string with an optional percent sign (`"12.5%"`); both
/// mean percent. Precision is 0.01 % (one basis point); finer values are rejected, not rounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Percent(pub u32);

impl Percent {
    /// The value in basis points.
    pub fn bp(self) -> u32 {
        self.0
    }

    /// Parses `"12.5"`, `"12.5%"` or `"0.01%"` into basis points.
    ///
    /// # Errors
    /// A lowercase message when the text is not a number, is negative, or is finer than 0.01 %.
    pub fn parse(text: &str) -> Result<Percent, String> {
        let t = text.trim();
        let t = t.strip_suffix('%').unwrap_or(t).trim();
        let value: f64 = t.parse().map_err(|_| {
            format!(
                "{} is not a percentage (expected e.g. 25 or \"12.5%\")",
                shown(text)
            )
        })?;
        // `1e400` reads as infinity: echo what was written, not `inf` (trial 19); and `"-10%"`,
        // not `-10` without its `%` (user44b, session 44).
        if !value.is_finite() || value < 0.0 {
            return Err(format!(
                "{} is not a percentage between 0 and 100",
                shown(text)
            ));
        }
        // Plain decimal text is judged by its own digits: as an `f64`,
        // `100.000000000000000001` is exactly 100 (session 32: taken as 100%).
        let plain = t.strip_prefix('+').unwrap_or(t);
        if value >= 0.0 && plain.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            Percent::check_range(value)?;
            return Percent::from_decimal(plain);
        }
        Percent::from_f64(value)
    }

    /// Converts a percent value such as `12.5` into basis points.
    ///
    /// # Errors
    /// When the value is not finite, negative, finer than 0.01 %, or too large for basis points
    /// (`"1e308% is above 100%"`).
    pub fn from_f64(value: f64) -> Result<Percent, String> {
        Percent::check_range(value)?;
        // The shortest decimal that reads back as `value` (Rust's `Display` of an `f64`, which
        // never uses an exponent): a YAML `12.5` is `12.5`, and `0.07` is not `0.07000000000000001`.
        // Judged by those digits, not by `value * 100` within a tolerance, which took anything
        // closer than 1e-8% to a whole basis point as that basis point (session 32: `1e-9` was 0%,
        // a green given no request, and `100.000000001` was 100%).
        Percent::from_decimal(&value.abs().to_string())
    }

    /// Refuses what no percentage is, and what basis points cannot hold.
    fn check_range(value: f64) -> Result<(), String> {
        if !value.is_finite() || value < 0.0 {
            return Err(format!("{value} is not a percentage between 0 and 100"));
        }
        if value * 100.0 > f64::from(u32::MAX) {
            // Beyond what basis points hold: every caller refuses above 100% anyway (trial §11).
            return Err(format!("{value:e}% is above 100%"));
        }
        Ok(())
    }

    /// Basis points of `digits`, a non-negative decimal (`12.5`, `.5`, `007`) within
    /// [`Percent::check_range`]: exact, or refused when it has a non-zero digit past the second
    /// decimal.
    fn from_decimal(digits: &str) -> Result<Percent, String> {
        let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
        let fraction = fraction.trim_end_matches('0');
        if fraction.len() > 2 {
            return Err(format!("{digits}% is finer than the 0.01% resolution"));
        }
        let number = |text: &str| text.parse::<u64>().unwrap_or(0);
        let bp = number(whole) * 100 + number(&format!("{fraction:0<2}"));
        u32::try_from(bp)
            .map(Percent)
            .map_err(|_| format!("{digits}% is above 100%"))
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, frac) = (self.0 / 100, self.0 % 100);
        if frac == 0 {
            write!(f, "{whole}%")
        } else if frac % 10 == 0 {
            write!(f, "{whole}.{}%", frac / 10)
        } else {
            write!(f, "{whole}.{frac:02}%")
        }
    }
}

impl Serialize for Percent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(f64::from(self.0) / 100.0)
    }
}

impl<'de> Deserialize<'de> for Percent {
    /// A number (percent) or a string (`"12.5%"`), read by a visitor rather than an untagged
    /// enum, whose error for any other shape (`null`, a list) was "data did not match any variant
    /// of untagged enum Raw" (trial report 4, F7).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{Error, Visitor};
        struct Shares;
        impl Visitor<'_> for Shares {
            type Value = Percent;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a percentage such as 25 or \"12.5%\"")
            }
            fn visit_f64<E: Error>(self, v: f64) -> Result<Percent, E> {
                Percent::from_f64(v).map_err(E::custom)
            }
            fn visit_u64<E: Error>(self, v: u64) -> Result<Percent, E> {
                self.visit_f64(v as f64)
            }
            fn visit_i64<E: Error>(self, v: i64) -> Result<Percent, E> {
                self.visit_f64(v as f64)
            }
            fn visit_str<E: Error>(self, v: &str) -> Result<Percent, E> {
                Percent::parse(v).map_err(E::custom)
            }
            fn visit_unit<E: Error>(self) -> Result<Percent, E> {
                Err(E::custom(format_args!(
                    "null is not allowed here: expected {}",
                    &self as &dyn serde::de::Expected
                )))
            }
        }
        d.deserialize_any(Shares)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_weight_never_picked_and_full_weight_always_picked() {
        let none = Weights::all_to(Slot::Blue);
        let all = Weights::all_to(Slot::Green);
        for r in 0..FULL_BP {
            assert_eq!(none.pick(r), Some(Slot::Blue));
            assert_eq!(all.pick(r), Some(Slot::Green));
        }
        assert_eq!(none.pick(draw_bp(u32::MAX)), Some(Slot::Blue));
        assert_eq!(draw_bp(u32::MAX), FULL_BP - 1);
        assert_eq!(draw_bp(0), 0);
    }

    /// Session 32: a value finer than 0.01% by less than 1e-8% was rounded to the nearest basis
    /// point, against the rule that finer values are refused, not rounded: `1e-9` (or
    /// `"0.000000001%"`) gave green 0%, no request at all, and `"100.000000000000000001%"`, above
    /// 100%, was 100%. Every spelling is judged by its digits.
    #[test]
    fn a_value_finer_than_a_basis_point_by_any_amount_is_refused() {
        for text in [
            "0.000000001",
            "0.000000001%",
            "100.000000000000000001%",
            "100.00000001",
            "12.3400000001",
            "1e-9",
        ] {
            let error = Percent::parse(text).unwrap_err();
            assert!(
                error.contains("finer than the 0.01% resolution"),
                "{text}: {error}"
            );
        }
        for value in [1e-9, 100.000_000_01, 0.07 + 1e-12] {
            let error = Percent::from_f64(value).unwrap_err();
            assert!(error.contains("finer"), "{value}: {error}");
        }
        assert_eq!(
            Percent::parse("100.000000000000000001%").unwrap_err(),
            "100.000000000000000001% is finer than the 0.01% resolution"
        );
        // Exact values still read exactly, whatever their spelling or float error.
        for (text, bp) in [
            ("0.07", 7),
            ("12.50%", 1250),
            ("+5", 500),
            (".5", 50),
            ("5.", 500),
            ("007", 700),
            ("1e2", 10_000),
            ("-0", 0),
            ("0.010000%", 1),
        ] {
            assert_eq!(Percent::parse(text).map(Percent::bp), Ok(bp), "{text}");
        }
        for (value, bp) in [(0.07, 7), (12.5, 1250), (33.33, 3333), (0.01, 1), (-0.0, 0)] {
            assert_eq!(Percent::from_f64(value).map(Percent::bp), Ok(bp), "{value}");
        }
    }

    /// Trial report §11: a value too large for basis points is "above 100%", not "finer".
    #[test]
    fn a_huge_percentage_is_above_100_percent() {
        assert_eq!(
            Percent::from_f64(1e308).unwrap_err(),
            "1e308% is above 100%"
        );
        assert!(Percent::from_f64(100.005).unwrap_err().contains("finer"));
    }

    #[test]
    fn disabled_route_picks_nothing() {
        assert_eq!(Weights { blue: 0, green: 0 }.pick(0), None);
    }

    #[test]
    fn percent_parses_numbers_and_strings_to_basis_points() {
        assert_eq!(Percent::parse("12.5%").unwrap().bp(), 1250);
        assert_eq!(Percent::parse("0.01").unwrap().bp(), 1);
        assert_eq!(Percent::parse(" 100 % ").unwrap().bp(), 10_000);
        assert!(Percent::parse("0.001").unwrap_err().contains("resolution"));
        assert!(Percent::parse("-1").is_err());
        assert!(Percent::parse("abc")
            .unwrap_err()
            .contains("not a percentage"));
        // Trial 19: `1e400%` reads as infinity; the error echoes what was written, not `inf`.
        assert_eq!(
            Percent::parse("1e400%").unwrap_err(),
            "\"1e400%\" is not a percentage between 0 and 100"
        );
        // Session 44: `"-10%"` was `-10 is not a percentage ...`, the `%` written dropped.
        assert_eq!(
            Percent::parse("-10%").unwrap_err(),
            "\"-10%\" is not a percentage between 0 and 100"
        );
        assert_eq!(Percent(1250).to_string(), "12.5%");
        assert_eq!(Percent(5).to_string(), "0.05%");
    }

    #[test]
    fn weights_must_sum_to_full_or_zero() {
        assert!(Weights {
            blue: 9000,
            green: 1000
        }
        .check()
        .is_ok());
        assert!(Weights { blue: 0, green: 0 }.check().is_ok());
        assert!(Weights {
            blue: 5000,
            green: 1000
        }
        .check()
        .unwrap_err()
        .contains("sum to 60%"));
        assert!(Weights {
            blue: 12000,
            green: 0
        }
        .check()
        .unwrap_err()
        .contains("above 100%"));
    }
}
