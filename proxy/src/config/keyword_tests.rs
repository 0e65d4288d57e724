//! Trial report H14: a keyword field of the proxy config (`active`, `protocol`, `balance`) given a
//! value of the wrong shape names the field and the words it takes, never a YAML tag.

use super::{ConfigError, ProxyConfig};

/// A config whose `@` is the value under test, and the field's path in messages.
const PLACES: [(&str, &str); 7] = [
    (
        "routes[0].active",
        "routes: [{ name: web, active: @, blue: { endpoints: [127.0.0.1:9000] } }]",
    ),
    (
        "routes[0].blue.protocol",
        "routes: [{ name: web, blue: { endpoints: [127.0.0.1:9000], protocol: @ } }]",
    ),
    (
        "routes[0].green.protocol",
        "routes: [{ name: web, blue: { endpoints: [127.0.0.1:9000] }, green: { protocol: @ } }]",
    ),
    (
        "routes[0].balance.policy",
        "routes: [{ name: web, blue: { endpoints: [127.0.0.1:9000] }, balance: { policy: @ } }]",
    ),
    (
        "upstream.balance.policy",
        "upstream: { balance: { policy: @ } }\nroutes: [{ name: web, blue: { endpoints: [127.0.0.1:9000] } }]",
    ),
    (
        "routes[0].balance",
        "routes: [{ name: web, blue: { endpoints: [127.0.0.1:9000] }, balance: @ }]",
    ),
    (
        "upstream.balance",
        "upstream: { balance: @ }\nroutes: [{ name: web, blue: { endpoints: [127.0.0.1:9000] } }]",
    ),
];

/// The words each field takes, as its messages quote them.
fn words(field: &str) -> &'static str {
    match field {
        f if f.ends_with("active") => "\"blue\" or \"green\"",
        f if f.ends_with("protocol") => "\"http1\" or \"h2c\"",
        f if f.ends_with("policy") => "\"p2c_peak_ewma\" or \"round_robin\"",
        // The shorthand takes the policy alone or a map.
        _ => "`p2c_peak_ewma`, `round_robin`, or a map",
    }
}

fn parse_error(yaml: &str) -> String {
    match ProxyConfig::from_yaml(yaml) {
        Err(ConfigError::Parse(message)) => message,
        other => panic!("{yaml}: expected a parse error, got {other:?}"),
    }
}

#[test]
fn a_keyword_of_the_wrong_shape_names_its_field_and_the_words_it_takes() {
    for (field, template) in PLACES {
        let words = words(field);
        let shorthand = field.ends_with("balance");
        let mut table = vec![
            (
                "[blue]",
                format!("invalid type: sequence, expected {words}"),
            ),
            ("1", format!("invalid type: integer `1`, expected {words}")),
            (
                "true",
                format!("invalid type: boolean `true`, expected {words}"),
            ),
        ];
        if !shorthand {
            // A map is the shorthand's long form; anywhere else it is a wrong shape.
            table.push(("{ a: 1 }", format!("invalid type: map, expected {words}")));
            table.push((
                "\"\"",
                format!("invalid value: string \"\", expected {words}"),
            ));
        }
        if !shorthand && !field.ends_with("policy") {
            // `policy: ~` is a policy left out (the proxy-wide one, then `round_robin`).
            table.push(("~", format!("null is not allowed here: expected {words}")));
        }
        for (value, expected) in table {
            let message = parse_error(&template.replace('@', value));
            let want = format!("{field}: {expected}");
            assert!(
                message.starts_with(&want),
                "{field} = {value}:\n  got  {message}\n  want {want}"
            );
            assert!(
                !message.contains("YAML tag"),
                "{field} = {value}: {message}"
            );
        }
        // An unknown word lists the words.
        let message = parse_error(&template.replace('@', "nope"));
        assert!(
            message.starts_with(&format!("{field}: unknown variant `nope`, expected `")),
            "{field}: {message}"
        );
    }
}

#[test]
fn a_keyword_left_out_takes_its_default_and_the_words_still_read() {
    let config =
        ProxyConfig::from_yaml("routes: [{ name: web, blue: { endpoints: [127.0.0.1:9000] } }]")
            .expect("valid");
    let route = &config.routes[0];
    assert_eq!(route.active, crate::weight::Slot::Blue);
    assert_eq!(route.blue.protocol, super::UpstreamProtocol::Http1);
    let config = ProxyConfig::from_yaml(
        "upstream: { balance: p2c_peak_ewma }\nroutes: [{ name: web, active: green, \
         balance: { policy: round_robin }, blue: { endpoints: [127.0.0.1:9000], protocol: h2c }, \
         green: { endpoints: [127.0.0.1:9001] } }]",
    )
    .expect("valid");
    let route = &config.routes[0];
    assert_eq!(route.active, crate::weight::Slot::Green);
    assert_eq!(route.blue.protocol, super::UpstreamProtocol::H2c);
    assert_eq!(
        config.upstream.balance.policy,
        Some(super::BalancePolicy::P2cPeakEwma)
    );
    assert_eq!(
        route.balance.as_ref().and_then(|b| b.policy),
        Some(super::BalancePolicy::RoundRobin)
    );
    // Written and read back (JSON, as the admin API and state files carry them).
    let json = serde_json::to_string(&config).expect("serializes");
    let back: ProxyConfig = serde_json::from_str(&json).expect("reads back");
    assert_eq!(back, config);
}
