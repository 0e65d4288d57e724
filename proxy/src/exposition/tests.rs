//! `Accept` negotiation, and what each format looks like for our registry.

use http::header::ACCEPT;
use http::{HeaderMap, HeaderValue};
use prometheus_client::registry::Registry;

use super::*;

fn negotiate(fields: &[&str]) -> Format {
    let mut headers = HeaderMap::new();
    for field in fields {
        headers.append(ACCEPT, HeaderValue::from_str(field).expect("header value"));
    }
    Format::negotiate(&headers)
}

/// What the scrapers that matter send, and what they get.
#[test]
fn scrapers_get_openmetrics_only_when_they_name_it() {
    let cases: &[(&str, &[&str], Format)] = &[
        ("no Accept (curl -H 'Accept:', most agents)", &[], Format::Text),
        ("curl's default", &["*/*"], Format::Text),
        (
            "Prometheus 2.42 (Debian bookworm)",
            &["application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"],
            Format::OpenMetrics,
        ),
        (
            "Prometheus 2.x before 2.33",
            &["application/openmetrics-text; version=0.0.1,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"],
            Format::OpenMetrics,
        ),
        (
            "Prometheus 3, default scrape_protocols",
            &["application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"],
            Format::OpenMetrics,
        ),
        (
            "Prometheus with scrape_protocols: [PrometheusText0.0.4]",
            &["text/plain;version=0.0.4;q=0.6,*/*;q=0.5"],
            Format::Text,
        ),
        (
            "Prometheus preferring text over OpenMetrics",
            &["text/plain;version=0.0.4;q=0.6,application/openmetrics-text;version=1.0.0;q=0.5,*/*;q=0.4"],
            Format::Text,
        ),
        ("Telegraf", &["application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3,*/*;q=0.1"], Format::Text),
        ("a JSON client (the controller's scraper)", &["application/json"], Format::Text),
        ("a browser", &["text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"], Format::Text),
    ];
    for (who, fields, expected) in cases {
        assert_eq!(negotiate(fields), *expected, "{who}: {fields:?}");
    }
}

#[test]
fn openmetrics_is_taken_with_version_1_0_0_0_0_1_or_none_and_not_with_another() {
    for range in [
        "application/openmetrics-text",
        "application/openmetrics-text; version=1.0.0",
        "application/openmetrics-text;version=0.0.1",
        "Application/OpenMetrics-Text; Version=\"1.0.0\"; charset=utf-8",
    ] {
        assert_eq!(negotiate(&[range]), Format::OpenMetrics, "{range}");
    }
    for range in [
        "application/openmetrics-text; version=2.0.0",
        "application/*",
        "application/openmetrics",
        "text/openmetrics-text",
    ] {
        assert_eq!(negotiate(&[range]), Format::Text, "{range}");
    }
}

/// RFC 9110 §12.4.2: q=0 means "not acceptable"; §12.5.1: the most specific range applies.
#[test]
fn q_zero_refuses_and_the_most_specific_range_decides() {
    let cases: &[(&str, Format)] = &[
        ("application/openmetrics-text;q=0", Format::Text),
        ("application/openmetrics-text;q=0.000", Format::Text),
        ("application/openmetrics-text;q=0.001", Format::OpenMetrics),
        // Equal weights: the one named by its type is the richer answer.
        (
            "application/openmetrics-text, text/plain",
            Format::OpenMetrics,
        ),
        (
            "text/plain, application/openmetrics-text;q=0.9",
            Format::Text,
        ),
        (
            "*/*;q=0.9, application/openmetrics-text;q=0.8",
            Format::Text,
        ),
        (
            "application/openmetrics-text;q=0.8, */*;q=0.9, text/plain;q=0.1",
            Format::OpenMetrics,
        ),
        // The versioned range is more specific than the bare one.
        (
            "application/openmetrics-text;version=1.0.0;q=0, application/openmetrics-text",
            Format::Text,
        ),
        (
            "application/openmetrics-text;q=0, application/openmetrics-text;version=1.0.0;q=0.5",
            Format::OpenMetrics,
        ),
        // `text/plain;q=0` beats `*/*`: text is refused, and OpenMetrics is acceptable.
        (
            "text/plain;q=0, */*, application/openmetrics-text;q=0.1",
            Format::OpenMetrics,
        ),
        // Nothing acceptable: Accept is disregarded (text), never 406.
        (
            "text/plain;q=0, application/openmetrics-text;q=0",
            Format::Text,
        ),
    ];
    for (field, expected) in cases {
        assert_eq!(negotiate(&[field]), *expected, "{field}");
    }
}

#[test]
fn every_accept_field_counts_and_malformed_elements_are_skipped() {
    let two = negotiate(&["application/json", "application/openmetrics-text"]);
    assert_eq!(two, Format::OpenMetrics);
    for field in [
        "application/openmetrics-text;q=2",
        "application/openmetrics-text;q=1.5",
        "application/openmetrics-text;q=0.1234",
        "application/openmetrics-text;q=x",
        "application/openmetrics-text;q=",
        "openmetrics",
        "*/openmetrics-text",
        ",, ;",
    ] {
        assert_eq!(negotiate(&[field]), Format::Text, "{field}");
    }
    // A quoted comma does not split the list; a quoted semicolon does not end the parameter.
    let quoted = r#"text/plain;foo="a,b;q=0";q=0, application/openmetrics-text;q=0.5"#;
    assert_eq!(negotiate(&[quoted]), Format::OpenMetrics);
    // An opaque (non-UTF-8) field is skipped.
    let mut headers = HeaderMap::new();
    headers.append(ACCEPT, HeaderValue::from_bytes(b"\xffx/y").expect("opaque"));
    headers.append(
        ACCEPT,
        HeaderValue::from_static("application/openmetrics-text"),
    );
    assert_eq!(Format::negotiate(&headers), Format::OpenMetrics);
}

#[test]
fn qvalues_follow_rfc_9110() {
    let cases = [
        ("0", Some(0)),
        ("0.", Some(0)),
        ("0.5", Some(500)),
        ("0.05", Some(50)),
        ("0.125", Some(125)),
        ("1", Some(1000)),
        ("1.0", Some(1000)),
        ("1.000", Some(1000)),
        ("1.001", None),
        ("0.1234", None),
        ("2", None),
        ("-0", None),
        ("", None),
        (".5", None),
        ("0.5x", None),
    ];
    for (text, expected) in cases {
        assert_eq!(qvalue(text), expected, "{text:?}");
    }
}

/// The same registry in both formats, through [`crate::process::encode`]: the 0.0.4 text has
/// neither `# EOF` nor `# UNIT`, names a counter's `_total` in its `# TYPE`, and writes an info
/// metric as a gauge; the samples are the same.
#[test]
fn the_text_format_differs_from_openmetrics_as_the_exposition_docs_say() {
    use prometheus_client::metrics::{counter::Counter, gauge::Gauge};
    let mut registry = Registry::with_prefix("crossfade");
    let requests = Counter::<u64>::default();
    requests.inc_by(3);
    registry.register("requests", "Requests", requests);
    let generation = Gauge::<i64>::default();
    generation.set(7);
    registry.register("routing_table_generation", "Generation", generation);
    let encode = |format| {
        let mut out = String::new();
        crate::process::encode(&mut out, &registry, format).expect("encode");
        out
    };
    let (openmetrics, text) = (encode(Format::OpenMetrics), encode(Format::Text));
    assert!(openmetrics.ends_with("# EOF\n"), "{openmetrics}");
    assert!(
        openmetrics.contains("\n# UNIT process_cpu_seconds seconds\n"),
        "{openmetrics}"
    );
    assert!(
        openmetrics.contains("\n# TYPE process_cpu_seconds counter\n"),
        "{openmetrics}"
    );
    assert!(
        openmetrics.contains("\n# TYPE crossfade_build info\n"),
        "{openmetrics}"
    );
    assert!(!text.contains("# EOF"), "{text}");
    assert!(!text.contains("# UNIT"), "{text}");
    assert!(
        text.contains("\n# TYPE process_cpu_seconds_total counter\n"),
        "{text}"
    );
    assert!(
        text.contains("\n# TYPE crossfade_build_info gauge\n"),
        "{text}"
    );
    assert!(
        openmetrics.contains("\n# TYPE crossfade_requests counter\n"),
        "{openmetrics}"
    );
    assert!(
        text.contains("\n# TYPE crossfade_requests_total counter\n"),
        "{text}"
    );
    for page in [&openmetrics, &text] {
        assert!(page.contains("\ncrossfade_requests_total 3\n"), "{page}");
        assert!(
            page.contains("\ncrossfade_routing_table_generation 7\n"),
            "{page}"
        );
    }
    let samples = |page: &str| -> Vec<String> {
        page.lines()
            .filter(|l| !l.starts_with('#'))
            // The CPU time and the open descriptors may move between the two encodings.
            .filter(|l| !l.starts_with("process_"))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(samples(&openmetrics), samples(&text));
}

mod properties {
    use proptest::collection::vec;
    use proptest::prelude::*;
    use proptest::sample::select;

    use super::*;

    /// `Accept` fields built from the pieces that matter (media ranges, versions, weights, quotes,
    /// separators), and some noise.
    fn accept() -> impl Strategy<Value = String> {
        let pieces = select(vec![
            "application/openmetrics-text",
            "text/plain",
            "text/*",
            "*/*",
            "application/*",
            "application/json",
            ";version=1.0.0",
            ";version=0.0.1",
            ";version=0.0.4",
            ";version=2.0.0",
            ";q=0",
            ";q=0.5",
            ";q=1",
            ";q=1.5",
            ";charset=utf-8",
            "\"",
            ",",
            ";",
            " ",
            "\\",
            "=",
        ]);
        vec(pieces, 0..12).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        /// Any field is answered without a panic, and OpenMetrics only when the field names it
        /// ("OpenMetrics only when asked for", as promhttp).
        #[test]
        fn openmetrics_is_only_ever_chosen_when_named(field in accept()) {
            let Ok(value) = HeaderValue::from_str(&field) else {
                return Ok(());
            };
            let mut headers = HeaderMap::new();
            headers.append(ACCEPT, value);
            let format = Format::negotiate(&headers);
            if !field.contains("application/openmetrics-text") {
                prop_assert_eq!(format, Format::Text);
            }
        }

        /// A weight that is not a qvalue never parses as one, and a qvalue's thousandths stay
        /// within 0..=1000.
        #[test]
        fn qvalues_stay_within_0_and_1(text in "[0-9.]{0,6}") {
            if let Some(q) = qvalue(&text) {
                prop_assert!(q <= 1000);
                prop_assert!(text.starts_with('0') || text.starts_with('1'));
            }
        }
    }
}
