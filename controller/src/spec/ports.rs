//! `port_range`: the ports `crossfade run` gives the instances of `{port}` workloads.

use std::fmt;
use std::ops::RangeInclusive;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::Problem;
use crossfade_proxy::shown::outside;

/// The ports the process driver gives `{port}` instances, both ends included: written
/// `25100-25199` or `{ from: 25100, to: 25199 }`, one port as `25100` (or `25100-25100`).
/// Default (no `port_range`): a free port from the kernel's ephemeral range, as before.
///
/// The ends are kept as written so that validation names an end outside `1..=65535` in the
/// user's number; [`PortRange::ports`] is the range once valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    /// The first port of the range.
    pub from: u64,
    /// The last port of the range (included).
    pub to: u64,
}

/// What a `port_range` of the wrong shape is told.
const EXPECTED: &str = "a port range such as 25100-25199 or { from: 25100, to: 25199 }";

// === impl PortRange ===

impl PortRange {
    /// The ports, `None` when the range breaks a rule of [`PortRange::problems`].
    pub fn ports(&self) -> Option<RangeInclusive<u16>> {
        let from = u16::try_from(self.from).ok().filter(|p| *p > 0)?;
        let to = u16::try_from(self.to).ok()?;
        (from <= to).then_some(from..=to)
    }

    /// The rules, each broken one named under `port_range`: both ends within `1..=65535`, `from`
    /// at most `to`.
    pub(super) fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        for (end, port) in [("from", self.from), ("to", self.to)] {
            if !(1..=u64::from(u16::MAX)).contains(&port) {
                problems.push(Problem {
                    path: format!("port_range.{end}"),
                    message: format!("port {}", outside(port, 1, u16::MAX, "")),
                });
            }
        }
        if problems.is_empty() && self.from > self.to {
            problems.push(Problem {
                path: "port_range".to_owned(),
                message: format!(
                    "{}: the first port is above the last (write the lower port first)",
                    self
                ),
            });
        }
        problems
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.from, self.to)
    }
}

impl Serialize for PortRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<PortRange, D::Error> {
        d.deserialize_any(RangeVisitor)
    }
}

struct RangeVisitor;

impl<'de> Visitor<'de> for RangeVisitor {
    type Value = PortRange;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(EXPECTED)
    }

    fn visit_u64<E: de::Error>(self, port: u64) -> Result<PortRange, E> {
        Ok(PortRange {
            from: port,
            to: port,
        })
    }

    fn visit_i64<E: de::Error>(self, port: i64) -> Result<PortRange, E> {
        Err(E::invalid_value(de::Unexpected::Signed(port), &self))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<PortRange, E> {
        let port = |part: &str| part.trim().parse::<u64>().ok();
        let parsed = match text.split_once('-') {
            Some((from, to)) => port(from).zip(port(to)),
            None => port(text).map(|p| (p, p)),
        };
        parsed
            .map(|(from, to)| PortRange { from, to })
            .ok_or_else(|| {
                E::custom(format_args!(
                    "{text:?} is not a port range: expected {EXPECTED}"
                ))
            })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PortRange, A::Error> {
        let (mut from, mut to) = (None, None);
        while let Some(key) = map.next_key::<String>()? {
            let slot = match key.as_str() {
                "from" => &mut from,
                "to" => &mut to,
                other => return Err(de::Error::unknown_field(other, &["from", "to"])),
            };
            *slot = Some(map.next_value_seed(Port)?);
        }
        match (from, to) {
            (Some(from), Some(to)) => Ok(PortRange { from, to }),
            (None, _) => Err(de::Error::missing_field("from")),
            (_, None) => Err(de::Error::missing_field("to")),
        }
    }

    fn visit_unit<E: de::Error>(self) -> Result<PortRange, E> {
        Err(super::de::null(&self, None))
    }
}

/// One end of the map form: a whole number (checked against `1..=65535` by validation).
struct Port;

impl<'de> de::DeserializeSeed<'de> for Port {
    type Value = u64;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<u64, D::Error> {
        super::de::count(d)
    }
}

#[cfg(test)]
mod tests {
    use crate::spec::{RunSpec, SpecError};

    fn spec(port_range: &str) -> Result<RunSpec, SpecError> {
        RunSpec::from_yaml(&format!(
            "port_range: {port_range}\nblue: {{ command: ./app, args: [\"{{port}}\"] }}"
        ))
    }

    #[test]
    fn a_port_range_reads_as_text_a_map_or_one_port() {
        for (written, ports) in [
            ("25100-25199", 25100..=25199),
            ("\"25100 - 25199\"", 25100..=25199),
            ("{ from: 25100, to: 25199 }", 25100..=25199),
            ("25100", 25100..=25100),
            ("1-65535", 1..=65535),
        ] {
            let read = spec(written).unwrap_or_else(|e| panic!("{written}: {e}"));
            let range = read.port_range.and_then(|r| r.ports());
            assert_eq!(range, Some(ports), "{written}");
        }
        let default = RunSpec::from_yaml("blue: { command: ./app, args: [\"{port}\"] }");
        assert_eq!(default.map(|s| s.port_range), Ok(None));
    }

    /// Trial 12, M6: blue and green run side by side during a rollout, so the range must hold
    /// both workloads' instances; `check` says how many ports it has and how many are needed.
    #[test]
    fn a_port_range_smaller_than_blue_and_green_together_is_refused_with_the_numbers() {
        let workload = |name: &str, n: u32| {
            format!("{{ command: ./app, args: [\"{{port}}\", {name}], instances: {n} }}")
        };
        let spec = |range: &str, green: Option<u32>| {
            let mut text = format!("port_range: {range}\nblue: {}\n", workload("v1", 2));
            if let Some(n) = green {
                text += &format!("green: {}\n", workload("v2", n));
            }
            RunSpec::from_yaml(&text)
        };
        let message = spec("27200-27201", Some(2))
            .expect_err("4 instances in 2 ports")
            .to_string();
        assert_eq!(
            message,
            "port_range: 27200-27201: 2 ports, but blue (2 instances) and green (2 instances) run \
             together during a rollout: 4 needed; widen port_range"
        );
        let message = spec("27200", None)
            .expect_err("2 instances in 1 port")
            .to_string();
        assert!(
            message.contains("port_range: 27200-27200: 1 port, but blue has 2 instances: 2 needed"),
            "{message}"
        );
        assert!(
            spec("27200-27203", Some(2)).is_ok(),
            "4 ports for 4 instances"
        );
        assert!(spec("27200-27201", None).is_ok(), "blue alone fits");
        // Static endpoints take no port of the range.
        let text = format!(
            "port_range: 27200-27201\nblue: {}\ngreen: {{ endpoints: [127.0.0.1:9000] }}\n",
            workload("v1", 2)
        );
        assert!(RunSpec::from_yaml(&text).is_ok());
    }

    /// User37: the proxy's own `listen` and `admin` inside the range take their ports from the
    /// instances (each instance binds 127.0.0.1), so a range just wide enough for blue and green
    /// passed `check`, and green then found every port taken and was rolled back. Counted when
    /// bound on 127.0.0.1 or on every address, once per port; not on another address.
    #[test]
    fn the_proxys_own_listeners_inside_port_range_leave_fewer_ports_for_instances() {
        let spec = |listen: &str, admin: &str| {
            RunSpec::from_yaml(&format!(
                "listen: \"{listen}\"\nadmin: \"{admin}\"\nport_range: 27200-27203\n\
                 blue: {{ command: ./app, args: [\"{{port}}\", v1], instances: 2 }}\n\
                 green: {{ command: ./app, args: [\"{{port}}\", v2], instances: 2 }}\n"
            ))
        };
        let message = spec("127.0.0.1:27200", "127.0.0.1:27201")
            .expect_err("4 instances in the 2 ports listen and admin leave")
            .to_string();
        assert_eq!(
            message,
            "port_range: 27200-27203: 2 ports left for instances (listen 127.0.0.1:27200 and \
             admin 127.0.0.1:27201 take 2 of its 4), but blue (2 instances) and green (2 \
             instances) run together during a rollout: 4 needed; widen port_range"
        );
        for (listen, admin) in [
            ("0.0.0.0:27203", "127.0.0.1:9901"),
            ("[::]:27202", "127.0.0.1:1"),
        ] {
            let message = spec(listen, admin).expect_err(listen).to_string();
            assert!(
                message.contains(&format!(
                    "3 ports left for instances (listen {listen} takes 1 of its 4)"
                )),
                "{message}"
            );
        }
        assert!(
            spec("10.0.0.5:27200", "127.0.0.1:9901").is_ok(),
            "a listener on another address leaves 127.0.0.1's port free"
        );
        assert!(
            spec("127.0.0.1:8080", "127.0.0.1:9901").is_ok(),
            "listeners outside the range take none of it"
        );
    }

    #[test]
    fn a_bad_port_range_is_refused_naming_the_field() {
        for (written, expected) in [
            (
                "25199-25100",
                "port_range: 25199-25100: the first port is above the last",
            ),
            ("0-10", "port_range.from: port 0 is outside 1 to 65535"),
            (
                "70000-70001",
                "port_range.from: port 70000 is outside 1 to 65535",
            ),
            (
                "{ from: 1, to: 65536 }",
                "port_range.to: port 65536 is outside 1 to 65535",
            ),
            (
                "abc",
                "port_range: \"abc\" is not a port range: expected a port range such as",
            ),
            ("1-x", "port_range: \"1-x\" is not a port range"),
            (
                "[1, 2]",
                "port_range: invalid type: sequence, expected a port range such as",
            ),
            (
                "-5",
                "port_range: invalid value: integer `-5`, expected a port range",
            ),
            ("{ from: 1 }", "port_range: missing field `to`"),
            (
                "{ from: 1, to: 2, by: 1 }",
                "port_range: unknown field `by`, expected `from` or `to`",
            ),
            (
                "{ from: x, to: 2 }",
                "port_range.from: invalid type: string \"x\", expected a whole number",
            ),
        ] {
            let message = spec(written).expect_err(written).to_string();
            assert!(
                message.contains(expected),
                "{written}:\n  got  {message}\n  want {expected}"
            );
        }
    }
}
