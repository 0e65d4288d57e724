//! Readers for the numbers of the proxy config, the rollout spec and the `TrafficShift` resource
//! that say what they expect in a user's words (trial reports 4 F7 and 5 F8): `expected a whole
//! number such as 50`, not `expected u32`; `null is not allowed here`, not `unit value`.
//!
//! Used as `#[serde(deserialize_with = "crossfade_proxy::de::count")]`. Each checks the value
//! inside the field's own deserialization, so a YAML reader's error carries the field's path
//! (`routes[0].health.rise: invalid type: string "x", expected a whole number such as 50`).
//! A range is checked by validation, with every other problem.

use std::fmt;
use std::net::SocketAddr;

use serde::de::{self, Deserializer, Visitor};

mod keyword;
mod position;
mod unknown;

pub use keyword::keyword;
pub use position::yaml_words_in;
/// serde, for [`keyword_enum!`](crate::keyword_enum)'s expansion in crates that name it otherwise.
#[doc(hidden)]
pub use serde;
pub use unknown::{closest, suggestion, yaml_words};

/// The error for `null` where `expected` is needed: YAML's `null` and `~` (and an empty value)
/// come to a deserializer as serde's "unit value", which no one wrote. `default` names the value
/// a field left out takes, when it has one worth naming.
pub fn null<E: de::Error>(expected: &dyn de::Expected, default: Option<&str>) -> E {
    match default {
        Some(default) => E::custom(format_args!(
            "null is not allowed here: expected {expected} (leave the field out for the \
             default, {default:?})"
        )),
        None => E::custom(format_args!(
            "null is not allowed here: expected {expected} (leave the field out for its default)"
        )),
    }
}

/// A YAML or JSON reader's error message in a user's words: serde's `unit value` is `null`, a
/// number too large for any integer is not said to be read `as u128` (serde's fallback for a
/// visitor that does not take one, which names a Rust type), and `expected struct StartRequest`
/// (a Rust type name) is `expected a map of fields` (trial 7, G11). A long value quoted in it
/// (serde's `invalid type: string "..."`) is cut to its start and length
/// ([`crate::shown::with_short_quotes`]).
pub fn user_words(message: impl fmt::Display) -> String {
    let message = message.to_string();
    let text = crate::shown::with_short_quotes(&message)
        .replace("invalid type: unit value", "invalid type: null")
        .replace("` as u128", "`")
        .replace("` as i128", "`");
    without_struct_names(&text)
}

/// `expected struct Name` (serde's words for a Rust struct) as `expected a map of fields`.
fn without_struct_names(text: &str) -> String {
    const STRUCT: &str = "expected struct ";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(STRUCT) {
        out.push_str(&rest[..at]);
        out.push_str("expected a map of fields");
        let after = &rest[at + STRUCT.len()..];
        let name_len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        rest = &after[name_len..];
    }
    out.push_str(rest);
    out
}

/// `#[serde(deserialize_with = "crossfade_proxy::de::count")]`: a whole number of something
/// (`rise`, `min_requests`, `max_connections`) for any unsigned field type, with errors that say
/// `expected a whole number such as 50`; a negative number, or one too large for the field, is
/// named so.
///
/// # Errors
/// Any other shape (`invalid type: string "x", expected a whole number such as 50`), a negative
/// number (`invalid value: integer `-1`, ...`), `null`, and `<n> is too large for this field`.
pub fn count<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    d.deserialize_any(Count(std::marker::PhantomData))
}

/// [`count`] for a field whose default is left to its owner (`Option<u64>`): `null` is `None`.
///
/// # Errors
/// As [`count`], `null` excepted.
pub fn count_option<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    d.deserialize_option(Maybe(Count::<T>(std::marker::PhantomData)))
}

/// `#[serde(deserialize_with = "crossfade_proxy::de::number")]`: a number (`0.05`, `3`) with
/// errors that say `expected a number such as 0.05`, not `expected f64`.
///
/// # Errors
/// Any other shape, and `null`.
pub fn number<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    d.deserialize_any(Number("a number such as 0.05"))
}

/// [`number`] for a field whose default is no value (`Option<f64>`): `null` is `None`.
///
/// # Errors
/// As [`number`], `null` excepted.
pub fn number_option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    d.deserialize_option(Maybe(Number("a number such as 1.5")))
}

/// `#[serde(deserialize_with = "crossfade_proxy::de::address")]`: an `IP:port` socket address
/// (`127.0.0.1:8080`, `[::1]:9001`), refused in words (`"x" is not an address: expected IP:port
/// such as 127.0.0.1:8080`), not std's `invalid socket address syntax`. Host names are not
/// resolved.
///
/// # Errors
/// Text that is not an address, and any other shape.
pub fn address<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    d.deserialize_any(Address)
}

/// [`address`] for a list (`endpoints`); an entry's error names its index
/// (`blue.endpoints[1]: ...`).
///
/// # Errors
/// Any entry's, and a shape other than a list.
pub fn addresses<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    struct Entry(SocketAddr);
    impl<'de> serde::Deserialize<'de> for Entry {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Entry, D::Error> {
            address(d).map(Entry)
        }
    }
    struct List;
    impl<'de> Visitor<'de> for List {
        type Value = Vec<SocketAddr>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of addresses such as [127.0.0.1:9000]")
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut list = Vec::new();
            while let Some(Entry(addr)) = seq.next_element()? {
                list.push(addr);
            }
            Ok(list)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Err(null(&self, None))
        }
    }
    d.deserialize_any(List)
}

/// `#[serde(deserialize_with = "crossfade_proxy::de::unique_map")]`: a map of names to strings
/// (a workload's `env`, a gate's or a check's `headers`) in which a key given twice is refused,
/// naming it (`blue.env: "PORT" is given twice ...`). A struct's fields get serde's "duplicate
/// field" error, but a map kept the last value without a word (trial 18, T16: `env: { PORT:
/// "{port}", PORT: "8080" }` gave every instance port 8080), while a JSON body with a repeated
/// key is refused ([`duplicate_json_key`]).
///
/// # Errors
/// A repeated key, and any shape other than a map of strings.
pub fn unique_map<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<std::collections::BTreeMap<String, String>, D::Error> {
    struct Map;
    impl<'de> Visitor<'de> for Map {
        type Value = std::collections::BTreeMap<String, String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map of names to values, such as { NAME: value }")
        }
        fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = std::collections::BTreeMap::new();
            while let Some(key) = map.next_key::<String>()? {
                let value: String = map.next_value()?;
                if out.contains_key(&key) {
                    return Err(de::Error::custom(format_args!(
                        "{key:?} is given twice: a key may appear once (the later value would \
                         silently replace the earlier)"
                    )));
                }
                out.insert(key, value);
            }
            Ok(out)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Err(null(&self, None))
        }
    }
    d.deserialize_map(Map)
}

/// Why `text` is not an `IP:port` socket address, in words, `example` showing the form: an IP
/// with a port above 65535 says so (`"127.0.0.1:70000" is not an address: port 70000 is above
/// 65535`; trial 12, M13), as do an IPv6 address and port without brackets (`did you mean
/// "[::1]:8080"?`) and an IP without a port (`it has no port`); anything else gets the form
/// (`"x" is not an address: expected IP:port such as 127.0.0.1:8080 (host names are not
/// resolved)`). Shared by the spec, config and flag readers.
pub fn not_an_address(text: &str, example: &str) -> String {
    let written = text.trim();
    if let Some((host, port)) = written.rsplit_once(':') {
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let digits = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
        // An IPv6 address with a zone (RFC 6874 writes `[fe80::1%25eth0]` in URIs, `ip` prints
        // `fe80::1%eth0`): the address parser, as in most proxies' configs, takes none, and the
        // form alone did not say which part is refused.
        if let Some((ip, zone)) = host.split_once('%') {
            if ip.parse::<std::net::Ipv6Addr>().is_ok() {
                return format!(
                    "{text:?} is not an address: an IPv6 zone ({zone:?}) is not supported; use \
                     an address that needs none (a global or unique-local one, not link-local \
                     fe80::/10)"
                );
            }
        }
        let bracketed = written.starts_with('[');
        let in_range = port.parse::<u16>().is_ok();
        // An IPv6 address and a port without the brackets (`::1:8080`, itself an IPv6 address):
        // it was told "port 8080 is above 65535" (trial 29).
        if digits && in_range && !bracketed && host.parse::<std::net::Ipv6Addr>().is_ok() {
            return format!(
                "{text:?} is not an address: an IPv6 address with a port is written in brackets \
                 (quoted in YAML): did you mean \"[{host}]:{port}\"?"
            );
        }
        if digits && !in_range && host.parse::<std::net::IpAddr>().is_ok() {
            // An IP and a number that together do not parse: the number is out of range.
            return format!(
                "{text:?} is not an address: port {} is above 65535",
                port.trim_start_matches('0')
            );
        }
    }
    // An IP alone (`127.0.0.1`, `[::1]`): the port is what is missing.
    let bare = written
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(written);
    if bare.parse::<std::net::IpAddr>().is_ok() {
        return format!(
            "{text:?} is not an address: it has no port; expected IP:port such as {example}"
        );
    }
    format!(
        "{text:?} is not an address: expected IP:port such as {example} (host names are not \
         resolved)"
    )
}

struct Address;

/// The error for a list or a map where an address belongs: what an unquoted IPv6 address
/// (`[::1]:8080`) is in YAML, whose brackets open a flow list (trial 17, T2: "invalid type:
/// sequence, expected an address" did not say that the README's `[::1]:9001` needs quotes).
fn unquoted_ipv6<E: de::Error>(shape: &str) -> E {
    E::custom(format_args!(
        "invalid type: {shape}, expected an address such as 127.0.0.1:8080; an IPv6 address \
         must be quoted in YAML (\"[::1]:8080\"), as unquoted brackets make a list"
    ))
}

impl<'de> Visitor<'de> for Address {
    type Value = SocketAddr;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an address such as 127.0.0.1:8080")
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<SocketAddr, A::Error> {
        Err(unquoted_ipv6("a list"))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<SocketAddr, A::Error> {
        Err(unquoted_ipv6("a map"))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<SocketAddr, E> {
        text.trim()
            .parse()
            .map_err(|_| E::custom(not_an_address(text, "127.0.0.1:8080")))
    }

    fn visit_unit<E: de::Error>(self) -> Result<SocketAddr, E> {
        Err(null(&self, None))
    }
}

struct Count<T>(std::marker::PhantomData<T>);

impl<T: TryFrom<u64>> Visitor<'_> for Count<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a whole number such as 50")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::custom(format_args!("{v} is too large for this field")))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(E::invalid_value(de::Unexpected::Signed(v), &self)),
        }
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<T, E> {
        Err(E::custom(format_args!("{v} is too large for this field")))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<T, E> {
        match v {
            v if v < 0 => Err(E::custom(format_args!(
                "invalid value: integer `{v}`, expected {}",
                &self as &dyn de::Expected
            ))),
            v => Err(E::custom(format_args!("{v} is too large for this field"))),
        }
    }

    fn visit_unit<E: de::Error>(self) -> Result<T, E> {
        Err(null(&self, None))
    }
}

struct Number(&'static str);

impl Visitor<'_> for Number {
    type Value = f64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
        Ok(v as f64)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
        Ok(v as f64)
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<f64, E> {
        Ok(v as f64)
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<f64, E> {
        Ok(v as f64)
    }

    fn visit_unit<E: de::Error>(self) -> Result<f64, E> {
        Err(null(&self, None))
    }
}

/// An `Option` of what `V` reads: `null` (or a missing value) is `None`.
struct Maybe<V>(V);

impl<'de, V: Visitor<'de>> Visitor<'de> for Maybe<V> {
    type Value = Option<V::Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.expecting(f)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self.0).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Fields {
        #[serde(default, deserialize_with = "count")]
        rise: u32,
        #[serde(default, deserialize_with = "count_option")]
        min: Option<u64>,
        #[serde(default, deserialize_with = "number_option")]
        ratio: Option<f64>,
    }

    fn error(yaml: &str) -> String {
        user_words(serde_yaml_ng::from_str::<Fields>(yaml).unwrap_err())
    }

    #[test]
    fn a_struct_is_called_a_map_of_fields_not_by_its_rust_name() {
        let text = error("[1, 2]");
        assert!(text.contains("expected a map of fields"), "{text}");
        assert!(
            !text.contains("struct") && !text.contains("Fields"),
            "{text}"
        );
        assert_eq!(
            without_struct_names("a: expected struct A_b, b: expected struct C"),
            "a: expected a map of fields, b: expected a map of fields"
        );
    }

    #[test]
    fn numbers_are_refused_in_words_naming_the_field() {
        for (yaml, expected) in [
            (
                "rise: x",
                "rise: invalid type: string \"x\", expected a whole number such as 50",
            ),
            (
                "rise: -1",
                "rise: invalid value: integer `-1`, expected a whole number such as 50",
            ),
            (
                "rise: 5000000000",
                "rise: 5000000000 is too large for this field",
            ),
            (
                "rise: 99999999999999999999",
                "rise: 99999999999999999999 is too large",
            ),
            (
                "rise: ~",
                "rise: null is not allowed here: expected a whole number such as 50",
            ),
            (
                "min: [1]",
                "min: invalid type: sequence, expected a whole number such as 50",
            ),
            (
                "ratio: true",
                "ratio: invalid type: boolean `true`, expected a number such as 1.5",
            ),
        ] {
            let got = error(yaml);
            assert!(got.starts_with(expected), "{yaml}: {got}");
        }
        let read: Fields = serde_yaml_ng::from_str("rise: 3\nmin: ~\nratio: 2").unwrap();
        assert_eq!((read.rise, read.min, read.ratio), (3, None, Some(2.0)));
        let read: Fields = serde_json::from_str(r#"{"min": 7, "ratio": null}"#).unwrap();
        assert_eq!((read.min, read.ratio), (Some(7), None));
    }

    #[test]
    fn addresses_are_refused_in_words_naming_the_entry() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Listen {
            #[serde(default = "any", deserialize_with = "address")]
            listen: SocketAddr,
            #[serde(default, deserialize_with = "addresses")]
            endpoints: Vec<SocketAddr>,
        }
        fn any() -> SocketAddr {
            SocketAddr::from(([127, 0, 0, 1], 0))
        }
        let error = |yaml| user_words(serde_yaml_ng::from_str::<Listen>(yaml).unwrap_err());
        let e = error("listen: localhost:80");
        assert!(
            e.starts_with("listen: \"localhost:80\" is not an address: expected IP:port"),
            "{e}"
        );
        // An IPv6 zone is named as what is refused (with or without a port, `%25` as in URIs).
        for (yaml, zone) in [
            ("listen: \"[fe80::1%eth0]:8080\"", "eth0"),
            ("endpoints: [\"[fe80::1%25eth0]:80\"]", "25eth0"),
        ] {
            let e = error(yaml);
            assert!(
                e.contains(&format!("an IPv6 zone (\"{zone}\") is not supported")),
                "{e}"
            );
        }
        // Trial 12, M13: an address whose only fault is its port says so.
        let e = error("listen: 127.0.0.1:70000");
        assert!(
            e.starts_with(
                "listen: \"127.0.0.1:70000\" is not an address: port 70000 is above 65535"
            ),
            "{e}"
        );
        let e = error("endpoints: [\"[::1]:99999\"]");
        assert!(
            e.starts_with(
                "endpoints[0]: \"[::1]:99999\" is not an address: port 99999 is above 65535"
            ),
            "{e}"
        );
        let e = error("endpoints: [127.0.0.1:1, x]");
        assert!(
            e.starts_with("endpoints[1]: \"x\" is not an address"),
            "{e}"
        );
        let e = error("endpoints: 5");
        assert!(
            e.starts_with("endpoints: invalid type: integer `5`, expected a list of addresses"),
            "{e}"
        );
        let read: Listen =
            serde_yaml_ng::from_str("listen: \"[::1]:9\"\nendpoints: [127.0.0.1:1]").unwrap();
        assert_eq!((read.listen.port(), read.endpoints.len()), (9, 1));
    }

    #[test]
    fn a_huge_integer_is_not_said_to_be_read_as_u128() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Listed {
            hosts: Vec<String>,
        }
        let e = serde_yaml_ng::from_str::<Listed>("hosts: 99999999999999999999").unwrap_err();
        assert!(e.to_string().contains("as u128"), "{e}");
        assert_eq!(
            user_words(&e).split(" at line").next(),
            Some("hosts: invalid type: integer `99999999999999999999`, expected a sequence")
        );
    }
}

/// The first key that appears twice in one JSON object of `body`, as its path from the top
/// (`blue`, `rollout.analysis.judge`, `green.env.PORT`, `steps[2].weight`); `None` when every
/// object's keys are distinct, and also when `body` is not JSON (its reader reports that).
///
/// RFC 8259 §4 says only that names "SHOULD be unique" and leaves a repeated name's meaning to
/// the reader: serde_json keeps the last, so `{"blue":10000,"blue":0,"green":0}` would silently
/// disable a route. The admin API refuses every JSON body with a repeated key (400 naming it)
/// before any handler reads it, as the YAML reader refuses one in a file (a struct's field by
/// serde, a map's key by [`unique_map`]).
pub fn duplicate_json_key(body: &[u8]) -> Option<String> {
    use serde::de::DeserializeSeed;
    let found = std::cell::RefCell::new(None);
    let mut reader = serde_json::Deserializer::from_slice(body);
    let _ = Unique {
        path: String::new(),
        found: &found,
    }
    .deserialize(&mut reader);
    found.into_inner()
}

/// Walks one JSON value under `path`, recording in `found` the first repeated key of an object
/// (and stopping there with an error).
struct Unique<'a> {
    path: String,
    found: &'a std::cell::RefCell<Option<String>>,
}

impl Unique<'_> {
    fn child(&self, step: &str) -> Self {
        Unique {
            path: step.to_owned(),
            found: self.found,
        }
    }
}

impl<'de> de::DeserializeSeed<'de> for Unique<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Unique<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        while seq
            .next_element_seed(self.child(&format!("{}[{i}]", self.path)))?
            .is_some()
        {
            i += 1;
        }
        Ok(())
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = if self.path.is_empty() {
                key.clone()
            } else {
                format!("{}.{key}", self.path)
            };
            if !seen.insert(key) {
                *self.found.borrow_mut() = Some(path);
                return Err(de::Error::custom("duplicate key"));
            }
            map.next_value_seed(self.child(&path))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod duplicate_key_tests {
    use super::duplicate_json_key;

    #[test]
    fn a_repeated_key_is_found_with_its_path_at_any_depth() {
        for (body, key) in [
            (r#"{"blue":10000,"blue":0,"green":0}"#, Some("blue")),
            (r#"{"blue":1,"green":2}"#, None),
            (
                r#"{"green":{"env":{"A":"1","A":"2"}}}"#,
                Some("green.env.A"),
            ),
            (
                r#"{"rollout":{"steps":[{"weight":5},{"weight":9,"weight":1}]}}"#,
                Some("rollout.steps[1].weight"),
            ),
            (r#"[{"a":1},{"a":2}]"#, None),
            ("not json", None),
            ("", None),
        ] {
            assert_eq!(
                duplicate_json_key(body.as_bytes()).as_deref(),
                key,
                "{body}"
            );
        }
    }
}
