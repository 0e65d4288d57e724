//! The one rule for every configured duration, shared by the proxy config, the rollout spec, the
//! `TrafficShift` resource's spans and the CLI flags: at most [`MAX`] (366 days), so that adding
//! any configured duration to an [`Instant`](std::time::Instant) can never overflow, and a typo
//! such as `10000000000000000000s` is refused naming its field instead of panicking at run time.
//!
//! Instants derived from a duration go through [`later`], which saturates to a far-future instant
//! rather than panic, as a second line of defence.

use std::time::Duration;

use humantime_serde::re::humantime;

/// The longest configured duration: 366 days (a calendar year including a leap day, so that
/// humantime's `1y` = 365.25 days is accepted). Longer values are refused at parse time.
pub const MAX: Duration = Duration::from_secs(366 * 24 * 3600);

/// The shortest hold or analysis/retry/probe interval where one is bounded below: 10 ms. A
/// sub-millisecond hold (`1ns`, or `10ms` typed for `10m` is still allowed) makes a rollout decide
/// before a single request could be counted.
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// How far [`later`] moves an instant when `now + d` would overflow: 30 years (tokio's own
/// "far future").
const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

/// `d` when it is at most [`MAX`].
///
/// # Errors
/// `"<d> is above the maximum of 366 days for a duration"` (humantime form of `d`).
pub fn bounded(d: Duration) -> Result<Duration, String> {
    if d > MAX {
        // In seconds: humantime would print `316880878140years 3months ...` for a typo.
        return Err(format!(
            "{}s is above the maximum of 366 days ({}s) for a duration",
            d.as_secs(),
            MAX.as_secs()
        ));
    }
    Ok(d)
}

/// `Err` naming the minimum when `d` is above zero but below [`MIN_INTERVAL`]; zero is left to the
/// field's own "must be above 0s" rule.
///
/// # Errors
/// `"<d> is below the minimum of 10ms"`.
pub fn at_least_interval(d: Duration) -> Result<(), String> {
    if !d.is_zero() && d < MIN_INTERVAL {
        return Err(format!(
            "{} is below the minimum of {}",
            show(d),
            show(MIN_INTERVAL)
        ));
    }
    Ok(())
}

/// Formats a duration the way a spec writes it, in humantime's units (`30s`, `1m 30s`, `250ms`,
/// `2days 3h`) but with days as the largest unit: humantime itself shows a 30-day or longer span
/// in months and years of 30.44 and 365.25 days, so `hold: 365d` read `11months 30days 3h 50m 24s`
/// (trial 30). Every duration shown to operators (messages, logs, `status`) goes through here.
pub fn show(d: Duration) -> String {
    const DAY: u64 = 24 * 3600;
    const MONTH_DAYS: u64 = 30;
    let days = d.as_secs() / DAY;
    if days < MONTH_DAYS {
        return humantime::format_duration(d).to_string();
    }
    let rest = d - Duration::from_secs(days * DAY);
    if rest.is_zero() {
        format!("{days}days")
    } else {
        format!("{days}days {}", humantime::format_duration(rest))
    }
}

/// Parses a humantime duration (`"30s"`, `"1m 30s"`, `"250ms"`) and applies [`bounded`]. The CLI's
/// `value_parser` for every duration flag, and through [`serde`] every duration of the proxy
/// config, the rollout spec and the `TrafficShift`.
///
/// # Errors
/// Each naming the text as written: `"-10s": a duration cannot be negative`; `"5" needs a unit
/// (e.g. "5ms" or "5s")` (both: a bare `500` is as likely a latency bound in milliseconds as a
/// hold in seconds); humantime's message for other malformed text; `"1000d" is above the maximum of
/// 366 days (31622400s) for a duration`. A text of more than 256 bytes is quoted by its start and
/// length ([`crate::shown::with_short_quotes`]).
pub fn parse(text: &str) -> Result<Duration, String> {
    parse_quoting_whole(text).map_err(|e| crate::shown::with_short_quotes(&e).into_owned())
}

/// [`parse`], its errors quoting the text whole.
fn parse_quoting_whole(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.starts_with('-') {
        // humantime would say "expected number at 0" of a text that starts with one.
        return Err(format!("{text:?}: a duration cannot be negative"));
    }
    let d = humantime::parse_duration(text).map_err(|e| {
        if too_large(&e, trimmed) {
            // humantime says "number is too large ..." of a value past u64 seconds; the rule the
            // user meets is ours (trial 28).
            above_max(text)
        } else if trimmed.parse::<f64>().is_ok() {
            format!("{text:?} needs a unit (e.g. \"{trimmed}ms\" or \"{trimmed}s\")")
        } else {
            // humantime's words alone ("expected number at 0") say what it expected, not what
            // to write (session 41: `--wait bogus`).
            format!("{text:?} is not a duration (write e.g. \"30s\", \"1m 30s\", \"250ms\"): {e}")
        }
    })?;
    if d > MAX {
        return Err(above_max(text));
    }
    Ok(d)
}

/// Whether humantime's `error` for `trimmed` is a value too large for it (past `u64` seconds),
/// as opposed to its other overflow, a fraction below 1ns (`0.5ns`): the text with its fractions
/// removed still overflows, or is above [`MAX`].
fn too_large(error: &humantime::DurationError, trimmed: &str) -> bool {
    if !matches!(error, humantime::DurationError::NumberOverflow) {
        return false;
    }
    let mut whole = String::with_capacity(trimmed.len());
    let mut in_fraction = false;
    for ch in trimmed.chars() {
        if ch == '.' {
            in_fraction = true;
        } else if in_fraction && ch.is_ascii_digit() {
            // dropped
        } else {
            in_fraction = false;
            whole.push(ch);
        }
    }
    match humantime::parse_duration(&whole) {
        Ok(d) => d > MAX,
        Err(e) => matches!(e, humantime::DurationError::NumberOverflow),
    }
}

/// The message for a duration above [`MAX`], naming it as written:
/// `"1000d" is above the maximum of 366 days (31622400s) for a duration`.
pub fn above_max(text: &str) -> String {
    format!(
        "{text:?} is above the maximum of 366 days ({}s) for a duration",
        MAX.as_secs()
    )
}

/// `now + d`, or a far-future instant (30 years on) when that would overflow; never panics.
pub fn later(now: tokio::time::Instant, d: Duration) -> tokio::time::Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(FAR_FUTURE))
        .unwrap_or(now)
}

/// `#[serde(with = "crossfade_proxy::duration::serde")]`: humantime text (like `humantime_serde`)
/// bounded by [`MAX`]. The check runs inside the string visitor, so a YAML error carries the
/// field's own path (`limits.header_read_timeout: ...`).
pub mod serde {
    use std::fmt;
    use std::time::Duration;

    use ::serde::{de, Deserialize, Deserializer, Serializer};

    /// Writes `d` in humantime form (`"1m 30s"`).
    ///
    /// # Errors
    /// The serializer's.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        humantime_serde::serialize(d, s)
    }

    /// Reads humantime text and refuses values above [`super::MAX`].
    ///
    /// # Errors
    /// A message naming the text when it is not a duration, or the [`super::bounded`] message.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        // Any shape, not only strings: YAML's `null` read as a string is "null", which made
        // `"null" is not a duration: expected number at 0` (trial report 4, F7).
        d.deserialize_any(Bounded)
    }

    struct Bounded;

    impl de::Visitor<'_> for Bounded {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration with a unit, e.g. \"30s\", \"1m 30s\", \"250ms\"")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
            super::parse(text).map_err(E::custom)
        }

        /// A bare number gets the text's message (`"5" needs a unit (e.g. "5ms" or "5s")`).
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            self.visit_str(&v.to_string())
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            self.visit_str(&v.to_string())
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
            self.visit_str(&v.to_string())
        }

        fn visit_unit<E: de::Error>(self) -> Result<Duration, E> {
            Err(E::custom(format_args!(
                "null is not allowed here: expected {} (leave the field out for its default)",
                &self as &dyn de::Expected
            )))
        }
    }

    /// A [`Duration`] read through [`deserialize`], for the `Option` form.
    struct Wrapped(Duration);

    impl<'de> Deserialize<'de> for Wrapped {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            deserialize(d).map(Wrapped)
        }
    }

    /// The same for `Option<Duration>`.
    pub mod option {
        use std::time::Duration;

        use ::serde::{Deserialize, Deserializer, Serializer};

        /// Writes `Some(d)` in humantime form, `None` as null.
        ///
        /// # Errors
        /// The serializer's.
        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            humantime_serde::serialize(d, s)
        }

        /// Reads optional humantime text and refuses values above [`super::super::MAX`].
        ///
        /// # Errors
        /// As [`super::deserialize`].
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            Ok(Option::<super::Wrapped>::deserialize(d)?.map(|w| w.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_uses_days_as_the_largest_unit_and_reads_back_as_the_same_duration() {
        for (text, shown) in [
            ("365d", "365days"),
            ("366days", "366days"),
            ("30d", "30days"),
            ("40d 3h 2m", "40days 3h 2m"),
            ("29d 23h", "29days 23h"),
            ("1d", "1day"),
            ("90m", "1h 30m"),
            ("250ms", "250ms"),
            ("1y", "365days 6h"),
        ] {
            let d = parse(text).unwrap();
            assert_eq!(show(d), shown, "{text}");
            assert_eq!(parse(&show(d)), Ok(d), "{text} reads back");
        }
    }

    #[test]
    fn bounds_refuse_huge_and_accept_a_year() {
        assert!(parse("1y").is_ok());
        assert_eq!(parse("366days"), Ok(MAX));
        let e = parse("10000000000000000000s").unwrap_err();
        assert!(
            e.starts_with("\"10000000000000000000s\" is above the maximum of 366 days"),
            "{e}"
        );
        assert!(parse("5").unwrap_err().contains("needs a unit"));
        // Past u64 seconds, humantime's own overflow (trial 28): the same message.
        for text in [
            "99999999999999999999s",
            "99999999999999999999.5ms",
            "600000000000years",
        ] {
            assert_eq!(parse(text), Err(above_max(text)));
        }
        // humantime's other overflow, a fraction below 1ns, keeps its message.
        assert!(parse("0.5ns").unwrap_err().contains("below 1ns"));
        assert_eq!(
            parse("1000d").unwrap_err(),
            "\"1000d\" is above the maximum of 366 days (31622400s) for a duration"
        );
        assert!(at_least_interval(Duration::from_nanos(1)).is_err());
        assert!(at_least_interval(Duration::ZERO).is_ok());
        assert!(at_least_interval(MIN_INTERVAL).is_ok());
    }

    /// New-user audit D4: a 100,000-byte duration (a CLI flag's, which no YAML reader shortens)
    /// is quoted by its start and length, each time the message quotes it.
    #[test]
    fn an_oversized_duration_is_quoted_by_its_start_and_length() {
        let digits = "0".repeat(100_000);
        let (start, unit) = ("0".repeat(64), "0".repeat(64));
        assert_eq!(
            parse(&digits),
            Err(format!(
                "\"{start}\"… (100000 bytes) needs a unit (e.g. \"{unit}\"… (100002 bytes) or \"{unit}\"… (100001 bytes))"
            ))
        );
    }

    /// Session 41: a text that is no duration at all says what to write, beside humantime's own
    /// words (`--wait bogus` said only `expected number at 0`).
    #[test]
    fn a_text_that_is_no_duration_says_what_to_write() {
        assert_eq!(
            parse("bogus"),
            Err("\"bogus\" is not a duration (write e.g. \"30s\", \"1m 30s\", \"250ms\"): expected number at 0".into())
        );
    }

    /// Trial report 5 F7: humantime's "expected number at 0" for a text that starts with one.
    #[test]
    fn a_negative_duration_is_refused_as_negative() {
        for text in ["-10s", " -1ms", "-0s", "-5"] {
            assert_eq!(
                parse(text),
                Err(format!("{text:?}: a duration cannot be negative"))
            );
        }
        #[derive(Debug, ::serde::Deserialize)]
        struct Field {
            #[serde(with = "super::serde")]
            #[allow(dead_code)]
            hold: Duration,
        }
        let e = serde_yaml_ng::from_str::<Field>("hold: -10s").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("hold: \"-10s\": a duration cannot be negative"),
            "{e}"
        );
    }

    #[test]
    fn later_saturates_instead_of_panicking() {
        let now = tokio::time::Instant::now();
        assert!(later(now, Duration::MAX) > now);
        assert_eq!(
            later(now, Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
    }
}
