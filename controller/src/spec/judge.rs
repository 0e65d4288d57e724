//! The analysis judge's choice and the sequential judge's allowed latency degradation.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{fraction_percent, human};

/// Which judge decides a step's analysis.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JudgeKind {
    /// Fixed bounds per window (`max_error_rate`, `max_p99`, `max_p99_ratio`, `min_requests`).
    #[default]
    Threshold,
    /// Green against blue on the same traffic with always-valid sequential tests over the
    /// rollout's cumulative counts (`alpha`, `beta`, `max_error_rate_increase`,
    /// `max_latency_increase`); the fixed bounds stay as hard ceilings.
    Sequential,
}

/// What the sequential judge's "green is worse" tests test against
/// (`rollout.analysis.fail_when_worse_than`; see docs/judgement.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FailWhenWorseThan {
    /// Fail on evidence that green is worse than blue at all (`H0: r ≤ 1`): a proven regression
    /// of any size rolls back, even one inside `max_error_rate_increase` / `max_latency_increase`.
    #[default]
    Blue,
    /// Fail only on evidence that green is worse than blue by more than the allowed increases
    /// (`H0: r ≤ r1`, the boundary the "not worse" tests use): P(ever failing a green within the
    /// allowances) ≤ `alpha`.
    Allowance,
}

super::de::keyword_enum!(
    JudgeKind,
    default Some("threshold"),
    "threshold" => JudgeKind::Threshold,
    "sequential" => JudgeKind::Sequential,
);

super::de::keyword_enum!(
    FailWhenWorseThan,
    default Some("blue"),
    "blue" => FailWhenWorseThan::Blue,
    "allowance" => FailWhenWorseThan::Allowance,
);

impl fmt::Display for FailWhenWorseThan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FailWhenWorseThan::Blue => "blue",
            FailWhenWorseThan::Allowance => "allowance",
        })
    }
}

/// How much slower than blue green may be: a percentage (`"20%"`) or a duration (`"10ms"`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LatencyIncrease {
    /// Latencies may grow by this fraction (0.2 = 20%).
    Fraction(f64),
    /// Latencies may grow by this much.
    Duration(Duration),
}

impl LatencyIncrease {
    /// The latency at which blue's tail is compared with green's, for green's threshold `seconds`:
    /// a green whose latencies are blue's grown by this increase exceeds `seconds` as often as blue
    /// exceeds the returned value.
    pub fn shrink(&self, seconds: f64) -> f64 {
        match self {
            LatencyIncrease::Fraction(f) => seconds / (1.0 + f),
            LatencyIncrease::Duration(d) => (seconds - d.as_secs_f64()).max(0.0),
        }
    }
}

impl Default for LatencyIncrease {
    fn default() -> Self {
        LatencyIncrease::Fraction(0.2)
    }
}

impl fmt::Display for LatencyIncrease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LatencyIncrease::Fraction(x) => f.write_str(&fraction_percent(*x)),
            LatencyIncrease::Duration(d) => f.write_str(&human(*d)),
        }
    }
}

impl Serialize for LatencyIncrease {
    /// Written as it displays (`"20%"`, `"10ms"`), but a percentage whose two-decimal form would
    /// read back as another value (`0.001%` shown as `0%`) is written in full, so a serialised
    /// spec reads back the same (the `spec_parser` fuzz check; as `de::fraction` does for rates).
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let short = self.to_string();
        match self {
            LatencyIncrease::Fraction(x) if parse(&short) != Ok(*self) => {
                s.collect_str(&format_args!("{}%", x * 100.0))
            }
            _ => s.serialize_str(&short),
        }
    }
}

impl<'de> Deserialize<'de> for LatencyIncrease {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A visitor, not `String::deserialize` then a parse: an error raised inside the value's
        // own deserialization carries the field's path (`rollout.analysis.max_latency_increase:`);
        // one raised after it returns only the enclosing map's (trial report 4, F1).
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = LatencyIncrease;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a latency increase such as \"20%\" or \"10ms\"")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<LatencyIncrease, E> {
                parse(text).map_err(E::custom)
            }
            // Any shape, not only strings: YAML's `null` read as a string is "null" (trial
            // report 4, F7), and a bare number has no unit to tell a percentage from a duration.
            fn visit_unit<E: serde::de::Error>(self) -> Result<LatencyIncrease, E> {
                Err(E::custom(
                    "null is not allowed here: expected a latency increase such as \"20%\" or \
                     \"10ms\" (leave the field out for the default, \"20%\")",
                ))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<LatencyIncrease, E> {
                Err(E::custom(format_args!(
                    "{v} has no unit: expected a latency increase such as \"{v}%\" or \"{v}ms\""
                )))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<LatencyIncrease, E> {
                self.visit_f64(v as f64)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<LatencyIncrease, E> {
                self.visit_f64(v as f64)
            }
        }
        d.deserialize_any(Text)
    }
}

/// Parses `"20%"` or a humantime duration (`"10ms"`, `"1s"`).
fn parse(text: &str) -> Result<LatencyIncrease, String> {
    let t = text.trim();
    if let Some(number) = t.strip_suffix('%') {
        return match number.trim().parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(LatencyIncrease::Fraction(v / 100.0)),
            _ => Err(format!("{text:?} is not a percentage")),
        };
    }
    // The duration rule of every other field, so that one past u64 seconds is "above the
    // maximum of 366 days" too, not "not a latency increase" (trial 28).
    match crossfade_proxy::duration::parse(t) {
        Ok(d) => Ok(LatencyIncrease::Duration(d)),
        Err(e) if e == crossfade_proxy::duration::above_max(t) => Err(e),
        Err(_) => Err(format!(
            "{text:?} is not a latency increase (expected e.g. \"20%\" or \"10ms\")"
        )),
    }
}
