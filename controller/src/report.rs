//! The rollout report: one self-contained HTML page for a finished local rollout, with charts of
//! traffic share (and the weights applied), error rate and latency (p50, p99) per backend over time,
//! step and verdict markers on every chart, and a summary: outcome, why, durations, what each backend
//! ran (version, program, digest), verdicts and events.
//!
//! The charts are drawn by uPlot (MIT, vendored in `report/uplot/`, see its README for the version),
//! which is inlined into the page with the data, so the page downloads nothing and works offline. The
//! summary is plain HTML, readable without JavaScript.

use std::fmt::Write as _;

use crossfade_proxy::weight::Slot;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::rollout::Phase;
use crate::state::{RolloutRecord, ServiceState};
use crate::timeline::{Marker, Timeline};

mod series;
mod summary;
#[cfg(test)]
mod tests;

pub use series::{ChartData, MarkerKind};

const TEMPLATE: &str = include_str!("report/page.html");
const UPLOT_JS: &str = include_str!("report/uplot/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("report/uplot/uPlot.min.css");

/// The version of the vendored uPlot (`report/uplot/README.md`), named in each report's footer.
pub const UPLOT_VERSION: &str = "1.6.32";

/// What a report is drawn from: the route and its last rollout with its timeline. The body of the
/// admin API's `GET /rollout/report` and what `crossfade report --state FILE` reads from a state file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReportData {
    /// The route the rollout ran on.
    pub route: String,
    /// The rollout, its workloads and its timeline.
    pub record: RolloutRecord,
    /// True when the rollout had not ended where it was read from (a state file whose instance was
    /// stopped mid-rollout, by SIGTERM or a crash): the page says it is unfinished. `false` when absent.
    #[serde(default)]
    pub unfinished: bool,
}

// === impl ReportData ===

impl ReportData {
    /// The last rollout of a local-mode state.
    ///
    /// # Errors
    /// [`Error::Report`] when the state holds no rollout, or the rollout has not ended (a report is
    /// of a finished rollout: its outcome and durations are not known before).
    pub fn from_state(state: &ServiceState) -> Result<ReportData> {
        let data = ReportData::from_state_unfinished(state)?;
        data.check_finished()?;
        Ok(data)
    }

    /// The last rollout of a local-mode state, finished or not; one that has not ended is marked
    /// [`ReportData::unfinished`] (for `crossfade report --state FILE` after the instance stopped
    /// mid-rollout: the next `crossfade run` recovers it, README "Restart").
    ///
    /// # Errors
    /// [`Error::Report`] when the state holds no rollout.
    pub fn from_state_unfinished(state: &ServiceState) -> Result<ReportData> {
        let record = state
            .rollout
            .clone()
            .ok_or_else(|| Error::Report("no rollout has run on this service yet".into()))?;
        Ok(ReportData {
            route: state.route.clone(),
            unfinished: !record.rollout.is_terminal(),
            record,
        })
    }

    /// Fails unless the rollout reached a terminal phase.
    ///
    /// # Errors
    /// [`Error::Report`] naming the rollout and the phase it is in.
    pub fn check_finished(&self) -> Result<()> {
        let rollout = &self.record.rollout;
        if rollout.is_terminal() {
            return Ok(());
        }
        Err(Error::Report(format!(
            "rollout {} is still {} (a report is written once it has completed, rolled back or been aborted)",
            rollout.id,
            rollout.phase.words()
        )))
    }

    /// The rollout's timeline.
    pub fn timeline(&self) -> &Timeline {
        &self.record.timeline
    }

    /// The report page (HTML5, UTF-8), self-contained.
    pub fn render(&self) -> String {
        let data = ChartData::from_report(self);
        // `<` escaped as `\u003c` (valid JSON) so no text of the data can close the script element.
        let json = serde_json::to_string(&data)
            .unwrap_or_else(|_| "{}".into())
            .replace('<', "\\u003c");
        let title = format!(
            "Rollout {} on route {}: {}{}",
            self.record.rollout.id,
            self.route,
            self.record.rollout.phase.words(),
            if self.unfinished { " (unfinished)" } else { "" }
        );
        fill(
            TEMPLATE,
            &[
                ("TITLE", &escape(&title)),
                ("UPLOT_CSS", UPLOT_CSS),
                ("SUMMARY", &summary::html(self)),
                ("DETAILS", &summary::details(self)),
                ("DATA", &json),
                ("UPLOT_JS", UPLOT_JS),
                ("UPLOT_VERSION", UPLOT_VERSION),
            ],
        )
    }
}

/// Phase as a CSS class and a word for the badge.
fn outcome_class(phase: Phase) -> &'static str {
    match phase {
        Phase::Completed => "completed",
        Phase::Aborted => "aborted",
        Phase::RolledBack | Phase::RollingBack => "rolled-back",
        _ => "running",
    }
}

/// Replaces each `{{NAME}}` of `template` with its value, in one pass over the template, so a
/// value that contains `{{...}}` is left as it is.
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out =
        String::with_capacity(template.len() + values.iter().map(|v| v.1.len()).sum::<usize>());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let value = after.find("}}").and_then(|end| {
            let name = &after[..end];
            let value = values.iter().find(|(n, _)| *n == name)?.1;
            Some((value, end))
        });
        match value {
            Some((value, end)) => {
                out.push_str(value);
                rest = &after[end + 2..];
            }
            None => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Text for HTML element content and quoted attribute values (the five characters of the HTML
/// standard's "escapingString", §13.3).
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Seconds as people read a duration: `850ms`, `12.3s`, `4m 05s`, `1h 02m`.
fn human_seconds(seconds: f64) -> String {
    let s = seconds.max(0.0);
    if s < 1.0 {
        return format!("{:.0}ms", s * 1e3);
    }
    if s < 60.0 {
        return format!("{s:.1}s");
    }
    let whole = s.round() as u64;
    if whole < 3600 {
        return format!("{}m {:02}s", whole / 60, whole % 60);
    }
    format!("{}h {:02}m", whole / 3600, (whole % 3600) / 60)
}

/// `blue` or `green`, with the version the slot ran when known: `v2 (green)`.
fn slot_label(data: &ReportData, slot: Slot) -> String {
    let version = data
        .timeline()
        .images
        .iter()
        .find(|i| i.backend == slot && !i.version.is_empty())
        .map(|i| i.version.clone());
    match version {
        Some(v) => format!("{v} ({slot})"),
        None => slot.to_string(),
    }
}

/// Markers `at` or after the timeline's start, as seconds since it.
fn since_start(timeline: &Timeline, marker: &Marker) -> f64 {
    marker.at_unix_seconds - timeline.started_at_unix_seconds
}

/// Appends `<tr><td>..</td>...</tr>` with each cell escaped.
fn row(out: &mut String, cells: &[&str]) {
    out.push_str("<tr>");
    for cell in cells {
        let _ = write!(out, "<td>{}</td>", escape(cell));
    }
    out.push_str("</tr>\n");
}
