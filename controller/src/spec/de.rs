//! Deserialisers for the spec's flexible shapes: steps as a bare percentage or a map, error rates as
//! a percentage string (a fraction in state files written before, see [`bare_rates`]).

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

/// `#[serde(with = "fraction")]` for a fraction in 0..=1 written as `"1%"` (or `0.01` in JSON that
/// crossfade wrote before; a spec's text is refused a bare number by [`bare_rates`]).
///
/// A bare number (or a numeric string without `%`) is a fraction; a string ending in `%` is a
/// percentage. Range checks are left to validation so that they are reported with the other problems.
pub(crate) mod fraction {
    use super::*;
    use serde::Serializer;

    /// Written as a percentage string (`"1%"`), the form a spec must use (see [`super::bare_rates`]),
    /// so a serialised spec reads back; exact to the last digit when two decimals are not enough.
    pub(crate) fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        let short = crate::spec::fraction_percent(*v);
        if parse(&short).is_ok_and(|back| (back - v).abs() < 1e-12) {
            s.serialize_str(&short)
        } else {
            s.collect_str(&format_args!("{}%", v * 100.0))
        }
    }

    /// A visitor rather than an untagged enum and a parse after it: an error raised inside the
    /// value's own deserialization carries the field's path
    /// (`rollout.analysis.max_error_rate_increase: ...`), one raised after it only the enclosing
    /// map's (trial report 4, F1).
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        struct Rate;
        impl de::Visitor<'_> for Rate {
            type Value = f64;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a rate such as \"1%\"")
            }
            fn visit_f64<E: de::Error>(self, value: f64) -> Result<f64, E> {
                finite(value)
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<f64, E> {
                finite(value as f64)
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<f64, E> {
                finite(value as f64)
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<f64, E> {
                // `"1e400%"` reads as infinity: echo what was written, not `inf` (trial 19).
                match parse(text).map_err(E::custom)? {
                    v if v.is_nan() => Err(E::custom(format!("{text:?} is not a number"))),
                    v if v.is_infinite() => Err(E::custom(format!(
                        "{text:?} is not a rate between 0% and 100%"
                    ))),
                    v => Ok(v),
                }
            }
            fn visit_unit<E: de::Error>(self) -> Result<f64, E> {
                Err(super::null(&self, None))
            }
        }
        fn finite<E: de::Error>(value: f64) -> Result<f64, E> {
            match value.is_finite() {
                true => Ok(value),
                false => Err(E::custom(format!("{value} is not a number"))),
            }
        }
        d.deserialize_any(Rate)
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
            .map_err(|_| format!("{text:?} is not a rate (expected e.g. \"1%\")"))
    }
}

/// The spec's rate fields (shares read by [`fraction`]), as paths from the document's top.
pub(crate) const RATE_FIELDS: [&[&str]; 3] = [
    &["rollout", "analysis", "max_error_rate"],
    &["rollout", "analysis", "max_error_rate_increase"],
    &["rollout", "analysis", "shadow", "max_mismatch_rate"],
];

/// The rule for shares in files a person writes (README "Shares"): a bare number is percent
/// (steps, weights, the proxy's `breaker.max_error_rate`, the CRD's shares), but the spec's rate
/// fields ([`RATE_FIELDS`]) read a bare number as a fraction until now, so `max_error_rate: 1`
/// meant 100%. Rather than change a meaning silently, they take only the `%` string form
/// (`"1%"`); a bare number or a numeric string without `%` (except 0, the same either way) is
/// one problem per field showing both readings. `doc` is the YAML document of a spec or a
/// `crossfade migrate` file, or the JSON body of `POST /rollout` (a request is written by hand as
/// often as by `crossfade migrate`, which writes the `%` form). State files (JSON written by
/// crossfade) are not checked: they keep the fraction form readable.
pub(crate) fn bare_rates(doc: &serde_yaml_ng::Value) -> Vec<super::Problem> {
    let mut problems = Vec::new();
    for path in RATE_FIELDS {
        let value = path.iter().try_fold(doc, |v, key| v.get(*key));
        let number = match value {
            Some(serde_yaml_ng::Value::Number(n)) => n.as_f64(),
            Some(serde_yaml_ng::Value::String(t)) if !t.trim_end().ends_with('%') => {
                t.trim().parse::<f64>().ok()
            }
            _ => None,
        };
        let Some(number) = number.filter(|n| *n != 0.0 && n.is_finite()) else {
            continue;
        };
        let percent = format!("{number}%");
        let fraction = super::fraction_percent(number);
        // Suggest only the readings that are valid rates, 0% to 100% (trial 7, G10).
        let valid: Vec<String> = [
            ((0.0..=1.0).contains(&number), &fraction),
            ((0.0..=100.0).contains(&number), &percent),
        ]
        .into_iter()
        .filter(|(ok, _)| *ok)
        .map(|(_, reading)| format!("\"{reading}\""))
        .collect();
        let advice = match valid.as_slice() {
            [] => "write the rate with a % sign, between \"0%\" and \"100%\" (both readings are \
                   outside)"
                .to_owned(),
            [one] => {
                format!("write the rate with a % sign: {one} (the other reading is above 100%)")
            }
            many => format!("write the rate with a % sign, {}", many.join(" or ")),
        };
        problems.push(super::Problem {
            path: path.join("."),
            message: format!(
                "a bare number is ambiguous for a rate: {number} reads as {fraction} as a fraction, \
                 or as {percent} as a percentage (how steps read it); {advice}"
            ),
        });
    }
    problems
}

// The keyword enums' reader is the proxy crate's, shared with the proxy config's `active`,
// `protocol` and `balance` (trial report H14).
pub(crate) use crossfade_proxy::keyword_enum;

// The numbers' readers are the proxy config's own, so that both say the same words.
pub(crate) use crossfade_proxy::de::{count, null, number, number_option};

/// `#[serde(deserialize_with = "command")]` for a workload's `command`: a string, `null` for none.
/// A list, as Kubernetes and Docker write a command (`[python3, app.py, --port, "{port}"]`), is
/// refused saying where its arguments go, in the words of `crossfade check`'s hint for a command
/// line (session 43: serde's `invalid type: sequence, expected a string`).
pub(crate) fn command<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    d.deserialize_option(Command)
}

struct Command;

impl<'de> Visitor<'de> for Command {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a program's path or name, such as ./app")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(v.to_owned()))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut words = Vec::new();
        while let Some(Word(word)) = seq.next_element()? {
            words.push(word);
        }
        let advice = "a list, where command names the program alone: write command:";
        Err(de::Error::custom(match words.split_first() {
            Some((program, [])) => format!("{advice} {program:?}"),
            Some((program, args)) => {
                format!("{advice} {program:?} and its arguments in args: {args:?}")
            }
            None => format!("{advice} the program and its arguments in args"),
        }))
    }
}

/// One item of a `command` written as a list, as text: YAML reads `100` and `true` unquoted as a
/// number and a boolean.
struct Word(String);

impl<'de> Deserialize<'de> for Word {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Word, D::Error> {
        struct Text;
        impl Visitor<'_> for Text {
            type Value = String;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a word")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
                Ok(v.to_owned())
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
                Ok(v.to_string())
            }
        }
        d.deserialize_any(Text).map(Word)
    }
}
