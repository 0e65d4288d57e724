//! Deserialisers for the spec's flexible shapes: steps as a bare percentage or a map, error rates as
//! a fraction or a percentage string.

use std::fmt;
use std::time::Duration;

use crossfade_proxy::weight::Percent;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::StepConfig;

impl<'de> Deserialize<'de> for StepConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StepVisitor)
    }
}

/// The map form of a step, `{ weight: 25, hold: 30s }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepMap {
    weight: Percent,
    #[serde(default, with = "crossfade_proxy::duration::serde::option")]
    hold: Option<Duration>,
}

struct StepVisitor;

impl StepVisitor {
    fn bare<E: de::Error>(weight: Result<Percent, String>) -> Result<StepConfig, E> {
        weight
            .map(|weight| StepConfig { weight, hold: None })
            .map_err(E::custom)
    }
}

impl<'de> Visitor<'de> for StepVisitor {
    type Value = StepConfig;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a percentage (25, \"0.5%\") or a map { weight: 25, hold: 30s }")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<StepConfig, E> {
        Self::bare(Percent::from_f64(v as f64))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<StepConfig, E> {
        Self::bare(Percent::from_f64(v as f64))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<StepConfig, E> {
        Self::bare(Percent::from_f64(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<StepConfig, E> {
        Self::bare(Percent::parse(v))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<StepConfig, A::Error> {
        let m = StepMap::deserialize(de::value::MapAccessDeserializer::new(map))?;
        Ok(StepConfig {
            weight: m.weight,
            hold: m.hold,
        })
    }
}

/// `#[serde(with = "fraction")]` for a fraction in 0..=1 written as `0.01` or `"1%"`.
///
/// A bare number (or a numeric string without `%`) is a fraction; a string ending in `%` is a
/// percentage. Range checks are left to validation so that they are reported with the other problems.
pub(crate) mod fraction {
    use super::*;
    use serde::Serializer;

    pub(crate) fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(*v)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(f64),
            Text(String),
        }
        let value = match Raw::deserialize(d)? {
            Raw::Number(n) => n,
            Raw::Text(t) => parse(&t).map_err(de::Error::custom)?,
        };
        if value.is_finite() {
            Ok(value)
        } else {
            Err(de::Error::custom(format!("{value} is not a number")))
        }
    }

    /// Parses `"1%"` (percent) or `"0.01"` (fraction) into a fraction.
    pub(crate) fn parse(text: &str) -> Result<f64, String> {
        let t = text.trim();
        let (number, scale) = match t.strip_suffix('%') {
            Some(n) => (n.trim(), 100.0),
            None => (t, 1.0),
        };
        number
            .parse::<f64>()
            .map(|v| v / scale)
            .map_err(|_| format!("{text:?} is not a rate (expected e.g. 0.01 or \"1%\")"))
    }
}
