//! The reader of keyword enums (`active: blue`, `protocol: h2c`, `judge: sequential`), shared by
//! the proxy config, the rollout spec and the `TrafficShift` resource.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};

use super::null;

/// Reads a keyword field (`active`, `protocol`, `judge`, `on_inconclusive`,
/// `fail_when_worse_than`): one of `names`, returned as its index. serde's derive for a unit enum
/// tells a YAML user `invalid type: sequence, expected a YAML tag starting with '!'` for a
/// sequence or a map and ``unknown variant `null` `` for `null` (trial reports 4 F7 and H14); here
/// every wrong shape says which words the field takes, and the path of the field is added by the
/// caller's deserializer (`routes[0].active: invalid type: sequence, expected "blue" or "green"`).
/// Implemented for an enum with [`keyword_enum!`](crate::keyword_enum).
///
/// # Errors
/// A string not in `names` (``unknown variant `nope`, expected `blue` or `green` ``), the empty
/// string (`invalid value: string "", expected "blue" or "green"`), `null` (naming `default`,
/// the word a field left out takes, if it has one), any other shape (`invalid type: sequence,
/// expected "blue" or "green"`).
pub fn keyword<'de, D: Deserializer<'de>>(
    d: D,
    names: &'static [&'static str],
    default: Option<&'static str>,
) -> Result<usize, D::Error> {
    d.deserialize_any(Keyword(names, default))
}

/// The words a keyword takes, and the one a field left out takes.
struct Keyword(&'static [&'static str], Option<&'static str>);

impl Visitor<'_> for Keyword {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let quoted: Vec<String> = self.0.iter().map(|n| format!("{n:?}")).collect();
        f.write_str(&quoted.join(" or "))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<usize, E> {
        match self.0.iter().position(|name| *name == v) {
            Some(index) => Ok(index),
            None if v.is_empty() => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
            None => Err(E::unknown_variant(v, self.0)),
        }
    }

    fn visit_unit<E: de::Error>(self) -> Result<usize, E> {
        Err(match self.1 {
            Some(default) => null(&self, Some(default)),
            // A field without a default (a gate's `at`) cannot be left out either.
            None => E::custom(format_args!(
                "null is not allowed here: expected {}",
                &self as &dyn de::Expected
            )),
        })
    }
}

/// `impl Deserialize` for a unit-only (keyword) enum through [`de::keyword`](crate::de::keyword()),
/// in place of `#[derive(Deserialize)]`, whose errors speak of YAML tags:
/// `keyword_enum!(Type, default Some("word") | None, "word" => Type::Variant, ...)`, the words as
/// the enum serializes them (keep `#[derive(Serialize)]`), `default` the word a field left out
/// takes (named when `null` is refused), `None` when the type has no default of its own. The
/// enum must be `Copy`.
#[macro_export]
macro_rules! keyword_enum {
    ($ty:ty, default $default:expr, $($name:literal => $variant:expr),+ $(,)?) => {
        impl<'de> $crate::de::serde::Deserialize<'de> for $ty {
            fn deserialize<D: $crate::de::serde::Deserializer<'de>>(
                d: D,
            ) -> ::std::result::Result<Self, D::Error> {
                const NAMES: &[&str] = &[$($name),+];
                const VALUES: &[$ty] = &[$($variant),+];
                let index = $crate::de::keyword(d, NAMES, $default)?;
                // `keyword` returns an index into NAMES, as long as VALUES.
                VALUES.get(index).copied().ok_or_else(|| {
                    <D::Error as $crate::de::serde::de::Error>::custom("keyword index out of range")
                })
            }
        }
    };
}
