//! Which text format a `GET /metrics` answers in: OpenMetrics 1.0 when the scraper asks for it by
//! name, else the Prometheus text format 0.0.4, chosen from the request's `Accept` (RFC 9110
//! §12.5.1) as client_golang's `promhttp` chooses (`expfmt.NegotiateIncludingOpenMetrics`). Shared
//! by the proxy's admin API ([`crate::admin`]) and the controller's metrics listener.
//!
//! Scrapers that do not ask for OpenMetrics (a Prometheus whose `scrape_protocols` lists only
//! `PrometheusText0.0.4`, Prometheus versions older than its OpenMetrics support, Telegraf, the
//! Datadog, Vector and VictoriaMetrics agents, `curl`) read the 0.0.4 format: they get it. Both
//! are encoded by prometheus-client from the same registry ([`crate::process::encode`]): its
//! `encoding::text` writes OpenMetrics and its `encoding::prometheus_text` (since 0.26) the 0.0.4
//! format, which differs as the Prometheus exposition-format docs say
//! (<https://prometheus.io/docs/instrumenting/exposition_formats/>, and the OpenMetrics 1.0 spec,
//! <https://prometheus.io/docs/specs/om/open_metrics_spec/>): no `# EOF` and no `# UNIT` lines;
//! a counter's `# HELP` and `# TYPE` name its `_total` sample; an info metric is a `gauge` named
//! `…_info`; no exemplars. prometheus-client writes no `_created` samples in either format.

use http::header::ACCEPT;
use http::HeaderMap;

/// `Content-Type` of an OpenMetrics 1.0 answer (OpenMetrics 1.0, "Overall Structure").
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `Content-Type` of a Prometheus text format 0.0.4 answer (client_golang's `expfmt.FmtText`,
/// prometheus-client's `prometheus_text::CONTENT_TYPE`).
pub const TEXT_CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// A text format `/metrics` can answer in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text ([`OPENMETRICS_CONTENT_TYPE`]).
    OpenMetrics,
    /// The Prometheus text format 0.0.4 ([`TEXT_CONTENT_TYPE`]).
    Text,
}

// === impl Format ===

impl Format {
    /// The format to answer a request with headers `headers` in.
    ///
    /// Every `Accept` field of the request counts, as one list (RFC 9110 §5.3). Each media range
    /// weighs its `q` (RFC 9110 §12.4.2; 1 without one, 0 means "not acceptable"); the weight a
    /// format gets is that of the most specific range that names it (§12.5.1):
    /// - OpenMetrics: only a range that names it, `application/openmetrics-text`, with `version`
    ///   `1.0.0` or `0.0.1` (more specific) or none (Prometheus asks for both versions; their text
    ///   is the same for what we export). Wildcards do not count, as in `promhttp`: a scraper
    ///   that never names OpenMetrics may not parse it.
    /// - text: `text/plain` with `version=0.0.4` (most specific) or none, then `text/*`, then
    ///   `*/*`.
    ///
    /// Parameters other than `version` and `q` (`charset`, `escaping`) are not compared: our
    /// names and labels need no escaping and are UTF-8. A range with another `version` names
    /// another format and gives none a weight. A list element that is not a media range, or whose
    /// `q` is not a qvalue, is skipped.
    ///
    /// OpenMetrics wins when its weight is above 0 and not below the text format's (a scraper
    /// naming both at the same weight gets the richer one). Otherwise the answer is text, also
    /// when no format is acceptable: §12.5.1 lets a server disregard `Accept` rather than
    /// answer 406, and `promhttp` does the same; a scraper that gets nothing cannot alert.
    pub fn negotiate(headers: &HeaderMap) -> Format {
        let mut openmetrics = Weight::NONE;
        let mut text = Weight::NONE;
        let fields = headers.get_all(ACCEPT).iter();
        for field in fields.filter_map(|v| v.to_str().ok()) {
            for element in split_list(field) {
                let Some(range) = MediaRange::parse(element) else {
                    continue;
                };
                openmetrics.consider(range.openmetrics(), range.q);
                text.consider(range.text(), range.q);
            }
        }
        let openmetrics = openmetrics.q.unwrap_or(0);
        let text = text.q.unwrap_or(0);
        if openmetrics > 0 && openmetrics >= text {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }

    /// The `Content-Type` of an answer in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
            Format::Text => TEXT_CONTENT_TYPE,
        }
    }
}

/// The weight of one format so far: the `q` (in thousandths) of the most specific range that
/// named it, and that specificity; among ranges as specific, the highest `q`.
#[derive(Clone, Copy, Debug)]
struct Weight {
    specificity: u8,
    q: Option<u16>,
}

impl Weight {
    const NONE: Weight = Weight {
        specificity: 0,
        q: None,
    };

    /// Takes a range that names the format with `specificity` (`None`: it does not) and weighs
    /// `q`.
    fn consider(&mut self, specificity: Option<u8>, q: u16) {
        let Some(specificity) = specificity else {
            return;
        };
        match self.q {
            Some(_) if specificity < self.specificity => {}
            Some(old) if specificity == self.specificity => self.q = Some(old.max(q)),
            _ => {
                self.specificity = specificity;
                self.q = Some(q);
            }
        }
    }
}

/// One element of an `Accept` list: `type/subtype`, its `version` parameter and its weight.
#[derive(Clone, Debug, PartialEq, Eq)]
struct MediaRange<'a> {
    kind: &'a str,
    subtype: &'a str,
    version: Option<&'a str>,
    /// The qvalue in thousandths: 0..=1000.
    q: u16,
}

impl<'a> MediaRange<'a> {
    /// Parses `media-range [ weight ]` (RFC 9110 §12.5.1, parameters §5.6.6); `None` when it is
    /// not one (no `/`, an empty type or subtype, `*/subtype`, a `q` that is not a qvalue).
    fn parse(element: &'a str) -> Option<MediaRange<'a>> {
        let mut parts = split_outside_quotes(element, ';');
        let (kind, subtype) = parts.next()?.trim().split_once('/')?;
        let (kind, subtype) = (kind.trim(), subtype.trim());
        if kind.is_empty() || subtype.is_empty() || (kind == "*" && subtype != "*") {
            return None;
        }
        let mut range = MediaRange {
            kind,
            subtype,
            version: None,
            q: 1000,
        };
        for parameter in parts {
            let Some((name, value)) = parameter.split_once('=') else {
                continue;
            };
            let value = unquote(value.trim());
            match name.trim() {
                n if n.eq_ignore_ascii_case("q") => range.q = qvalue(value)?,
                n if n.eq_ignore_ascii_case("version") => range.version = Some(value),
                _ => {}
            }
        }
        Some(range)
    }

    /// How specifically this range names OpenMetrics 1.0 (2 with a version it takes, 1
    /// without one), or `None`.
    fn openmetrics(&self) -> Option<u8> {
        let named = self.kind.eq_ignore_ascii_case("application")
            && self.subtype.eq_ignore_ascii_case("openmetrics-text");
        match (named, self.version) {
            (false, _) => None,
            (true, None) => Some(1),
            (true, Some("1.0.0" | "0.0.1")) => Some(2),
            (true, Some(_)) => None,
        }
    }

    /// How specifically this range covers the text format 0.0.4 (3 `text/plain;version=0.0.4`,
    /// 2 `text/plain`, 1 `text/*`, 0 `*/*`), or `None`.
    fn text(&self) -> Option<u8> {
        if self.kind == "*" {
            return Some(0);
        }
        if !self.kind.eq_ignore_ascii_case("text") {
            return None;
        }
        if self.subtype == "*" {
            return Some(1);
        }
        if !self.subtype.eq_ignore_ascii_case("plain") {
            return None;
        }
        match self.version {
            None => Some(2),
            Some("0.0.4") => Some(3),
            Some(_) => None,
        }
    }
}

/// A qvalue (RFC 9110 §12.4.2: `0[.ddd]` or `1[.000]`) in thousandths.
fn qvalue(text: &str) -> Option<u16> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = fraction
        .bytes()
        .fold(0_u16, |n, b| n * 10 + u16::from(b - b'0'))
        * 10_u16.pow(3 - fraction.len() as u32);
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// The elements of a comma-separated list (RFC 9110 §5.6.1), empty ones skipped; a comma inside
/// a quoted string does not split.
fn split_list(field: &str) -> impl Iterator<Item = &str> {
    split_outside_quotes(field, ',').filter(|e| !e.trim().is_empty())
}

/// `text` split at each `separator` outside a quoted string (RFC 9110 §5.6.4, `\` escapes).
fn split_outside_quotes(text: &str, separator: char) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let current = rest?;
        let (mut quoted, mut escaped) = (false, false);
        for (i, c) in current.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if quoted => escaped = true,
                '"' => quoted = !quoted,
                c if c == separator && !quoted => {
                    rest = Some(&current[i + c.len_utf8()..]);
                    return Some(&current[..i]);
                }
                _ => {}
            }
        }
        rest = None;
        Some(current)
    })
}

/// A parameter value without its quotes (escapes are left: no value compared here has any).
fn unquote(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
}

#[cfg(test)]
mod tests;
