//! The report's summary as plain HTML: outcome and why, versions, durations, traffic totals,
//! verdicts and events. Every text from the rollout is escaped.

use std::fmt::Write as _;

use crossfade_proxy::weight::{Percent, Slot};

use super::series::MarkerKind;
use super::{escape, human_seconds, outcome_class, row, since_start, slot_label, ReportData};
use crate::timeline::Timeline;

/// One stretch of the rollout for the durations table.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Stretch {
    /// What happened in it (`provisioning the preview`, a step's event text, `rolling back`...).
    pub(super) what: String,
    /// Seconds since the rollout's start.
    pub(super) from: f64,
    /// Seconds since the rollout's start.
    pub(super) to: f64,
}

/// The summary's HTML (the part above the charts and the tables below them).
pub(super) fn html(data: &ReportData) -> String {
    let rollout = &data.record.rollout;
    let timeline = data.timeline();
    let mut out = String::new();
    let why = rollout.reason.as_deref().unwrap_or(&rollout.message);
    let _ = write!(
        out,
        "<p class=\"outcome {}\" id=\"outcome\">{}</p>\n<p class=\"why\">{}</p>\n",
        outcome_class(rollout.phase),
        escape(&capitalised(rollout.phase.words())),
        escape(why)
    );
    facts(&mut out, data);
    versions(&mut out, data);
    durations(&mut out, timeline);
    totals(&mut out, data);
    out
}

/// The tables that follow the charts: verdicts and events.
pub(super) fn details(data: &ReportData) -> String {
    let mut out = String::new();
    verdicts(&mut out, data);
    events(&mut out, data.timeline());
    out
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// Unix seconds as RFC 3339 UTC, to the second (out-of-range times as
/// [`crate::timeline::rfc3339_seconds`] reads them: a state file edited by hand cannot stop a
/// report).
fn utc(unix_seconds: f64) -> String {
    crate::timeline::rfc3339_seconds(unix_seconds)
}

fn facts(out: &mut String, data: &ReportData) {
    let (rollout, timeline) = (&data.record.rollout, data.timeline());
    let ended = timeline
        .ended_at_unix_seconds
        .map_or_else(|| "not recorded".to_owned(), utc);
    out.push_str("<table class=\"facts\">\n");
    row(out, &["route", &data.route]);
    row(out, &["rollout", &rollout.id.to_string()]);
    row(out, &["started", &utc(timeline.started_at_unix_seconds)]);
    row(out, &["ended", &ended]);
    row(out, &["took", &human_seconds(timeline.duration_seconds())]);
    let steps: Vec<String> = (0..rollout.config.steps.len())
        .map(|i| Percent(rollout.config.weight_bp(i)).to_string())
        .collect();
    row(out, &["steps", &steps.join(" → ")]);
    if data.unfinished {
        let note = format!(
            "unfinished: the state file records this rollout as {}, so its crossfade instance \
             was stopped (SIGTERM, crash) or is still running; the next `crossfade run` on this \
             file rolls it back, or completes it if it was promoted",
            rollout.phase.words()
        );
        row(out, &["note", &note]);
    }
    if data.record.interrupted {
        row(
            out,
            &["note", "ended by recovery after a restart of crossfade"],
        );
    }
    out.push_str("</table>\n");
}

fn versions(out: &mut String, data: &ReportData) {
    out.push_str("<h2>Versions</h2>\n<table class=\"versions\">\n");
    out.push_str("<tr><th>role</th><th>backend</th><th>version</th><th>workload</th><th>image</th><th>image digest</th></tr>\n");
    for image in &data.timeline().images {
        row(
            out,
            &[
                &image.role,
                image.backend.as_str(),
                &image.version,
                &image.workload.replace('`', ""),
                &image.image.image,
                &image.image.image_digest,
            ],
        );
    }
    out.push_str("</table>\n");
}

fn durations(out: &mut String, timeline: &Timeline) {
    out.push_str("<h2>Durations</h2>\n<table class=\"durations\">\n");
    out.push_str("<tr><th>stretch</th><th>from</th><th>took</th></tr>\n");
    for s in stretches(timeline) {
        row(
            out,
            &[
                &s.what,
                &format!("+{}", human_seconds(s.from)),
                &human_seconds(s.to - s.from),
            ],
        );
    }
    out.push_str("</table>\n");
}

/// The rollout cut at its steps, promotion, rollback and end (from its markers).
pub(super) fn stretches(timeline: &Timeline) -> Vec<Stretch> {
    let mut done = Vec::new();
    let mut open = Some(("provisioning the preview".to_owned(), 0.0));
    let mut close = |open: &mut Option<(String, f64)>, to: f64| {
        if let Some((what, from)) = open.take() {
            done.push(Stretch { what, from, to });
        }
    };
    for marker in &timeline.markers {
        let t = since_start(timeline, marker);
        let kind = MarkerKind::of(&marker.reason);
        match marker.reason.as_str() {
            "PreviewReady" => close(&mut open, t),
            "StepStarted" => {
                close(&mut open, t);
                open = Some((marker.message.clone(), t));
            }
            "Promoted" => {
                close(&mut open, t);
                open = Some(("promoted: draining and retiring the old active".into(), t));
            }
            "Aborting" => {
                close(&mut open, t);
                open = Some(("aborting".into(), t));
            }
            "Completed" | "RolledBack" | "Aborted" => close(&mut open, t),
            _ if kind == MarkerKind::Fail && marker.message.ends_with("rolling back") => {
                close(&mut open, t);
                open = Some(("rolling back".into(), t));
            }
            _ => {}
        }
    }
    let end = timeline.duration_seconds();
    close(&mut open, end);
    done
}

fn totals(out: &mut String, data: &ReportData) {
    out.push_str("<h2>Traffic</h2>\n<table class=\"totals\">\n");
    out.push_str("<tr><th>backend</th><th>requests</th><th>errors</th><th>error rate</th><th>weight at the end</th></tr>\n");
    let samples = &data.timeline().samples;
    for slot in [Slot::Blue, Slot::Green] {
        let requests: u64 = samples.iter().map(|s| s.backend(slot).requests).sum();
        let errors: u64 = samples.iter().map(|s| s.backend(slot).errors).sum();
        let rate = if requests == 0 {
            "–".to_owned()
        } else {
            format!("{:.2}%", 100.0 * errors as f64 / requests as f64)
        };
        let weight = samples.last().map_or(0, |s| s.backend(slot).weight_bp);
        row(
            out,
            &[
                &slot_label(data, slot),
                &requests.to_string(),
                &errors.to_string(),
                &rate,
                &Percent(weight).to_string(),
            ],
        );
    }
    out.push_str("</table>\n");
}

fn verdicts(out: &mut String, data: &ReportData) {
    let verdicts = &data.record.rollout.verdicts;
    out.push_str("<h2>Verdicts</h2>\n");
    if verdicts.is_empty() {
        out.push_str("<p>No analysis reached a verdict.</p>\n");
        return;
    }
    out.push_str("<table class=\"verdicts\">\n<tr><th>step</th><th>weight</th><th>verdict</th><th>why</th></tr>\n");
    for v in verdicts {
        let outcome = format!("{:?}", v.verdict.outcome).to_lowercase();
        let _ = writeln!(
            out,
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&outcome),
            v.step + 1,
            Percent(v.preview_bp),
            escape(&outcome),
            escape(&v.verdict.summary)
        );
    }
    out.push_str("</table>\n");
}

fn events(out: &mut String, timeline: &Timeline) {
    out.push_str("<h2>Events</h2>\n<table class=\"events\">\n<tr><th>at</th><th>reason</th><th>what happened</th></tr>\n");
    for m in &timeline.markers {
        let at = format!("+{}", human_seconds(since_start(timeline, m)));
        row(out, &[&at, &m.reason, &m.message]);
    }
    out.push_str("</table>\n");
}
