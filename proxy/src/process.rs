//! What a running process says about itself on `/metrics`: `crossfade_build_info` (which build
//! serves) and the process metrics of the Prometheus client conventions (`process_*`, read from
//! `/proc` at scrape time).
//!
//! prometheus-client has no process collector (prometheus/client_rust#29 is open), and the crates
//! that have one serve another metrics facade, so this reads the four `/proc` files itself, the
//! way client_golang's process collector does on Linux
//! (<https://prometheus.io/docs/instrumenting/writing_clientlibs/#process-metrics>). Elsewhere, or
//! when a file cannot be read, the series it would give are left out, never exported as 0.

use std::fmt::Write;
use std::sync::OnceLock;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::exposition::Format;

/// This build's version: the workspace's `version` (`Cargo.toml`), the same for every crate of
/// the `crossfade` binary.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The commit the binary was built from, once [`set_commit`] gave it.
static COMMIT: OnceLock<&'static str> = OnceLock::new();

/// Names the git commit this build comes from: `74414d6`, `74414d6-dirty` (sources that differ
/// from it), or `unknown`. The `crossfade` binary calls it first thing with what its build script
/// found (the library crates are built without it); the first call counts, later ones are
/// ignored. Read by [`commit`].
pub fn set_commit(commit: &'static str) {
    let _ = COMMIT.set(commit);
}

/// The commit [`set_commit`] gave, or `unknown` before (and in a program that never calls it):
/// the `commit` of `GET /status` and the `revision` label of `crossfade_build_info`.
pub fn commit() -> &'static str {
    COMMIT.get().copied().unwrap_or("unknown")
}

/// Help text of `crossfade_build_info` (docs/metrics.md has the same words).
const BUILD_INFO_HELP: &str = "The build serving: version (Cargo package version), revision (git commit, -dirty for changed sources, or unknown), os and arch (compile target); value 1";

/// Help texts of the process metrics: client_golang's words, so that they read the same as every
/// other target's.
const CPU_HELP: &str = "Total user and system CPU time spent in seconds";
const RESIDENT_HELP: &str = "Resident memory size in bytes";
const START_HELP: &str = "Start time of the process since unix epoch in seconds";
const OPEN_FDS_HELP: &str = "Number of open file descriptors";
const MAX_FDS_HELP: &str = "Maximum number of open file descriptors";

/// Encodes `registry` (the `crossfade` one), then `crossfade_build_info` and the `process_*`
/// metrics, in `format`: the whole answer of a `GET /metrics`. OpenMetrics ends with its `# EOF`;
/// the Prometheus text format 0.0.4 has none ([`crate::exposition`] says how they differ).
///
/// The process metrics are not `crossfade_`-prefixed: their names are the ones every Prometheus
/// client exports, so the dashboards written for them work unchanged.
///
/// # Errors
/// The writer's formatting error.
pub fn encode<W: Write>(
    writer: &mut W,
    registry: &Registry,
    format: Format,
) -> Result<(), std::fmt::Error> {
    let mut own = Registry::default();
    own.register_collector(Box::new(ProcessCollector));
    match format {
        Format::OpenMetrics => {
            encode_registry(writer, registry)?;
            encode_registry(writer, &own)?;
            encode_eof(writer)
        }
        Format::Text => {
            prometheus_text::encode(writer, registry)?;
            prometheus_text::encode(writer, &own)
        }
    }
}

/// Encodes [`BUILD_INFO_HELP`]'s info metric and [`ProcStat`]'s readings, unprefixed.
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let labels: [(&str, &str); 4] = [
            ("version", VERSION),
            ("revision", commit()),
            ("os", std::env::consts::OS),
            ("arch", std::env::consts::ARCH),
        ];
        encoder
            .encode_descriptor("crossfade_build", BUILD_INFO_HELP, None, MetricType::Info)?
            .encode_info(&labels)?;
        let Some(stat) = ProcStat::read() else {
            return Ok(());
        };
        encoder
            .encode_descriptor(
                "process_cpu",
                CPU_HELP,
                Some(&Unit::Seconds),
                MetricType::Counter,
            )?
            .encode_counter::<NoLabelSet, f64, u64>(&stat.cpu_seconds, None)?;
        let gauges = [
            (
                "process_resident_memory",
                RESIDENT_HELP,
                Some(Unit::Bytes),
                stat.resident_bytes,
            ),
            (
                "process_start_time",
                START_HELP,
                Some(Unit::Seconds),
                stat.start_time_seconds,
            ),
            ("process_open_fds", OPEN_FDS_HELP, None, stat.open_fds),
            ("process_max_fds", MAX_FDS_HELP, None, stat.max_fds),
        ];
        for (name, help, unit, value) in gauges {
            if let Some(value) = value {
                encoder
                    .encode_descriptor(name, help, unit.as_ref(), MetricType::Gauge)?
                    .encode_gauge(&value)?;
            }
        }
        Ok(())
    }
}

/// One reading of this process's `/proc` files; a field is `None` when its file could not be read
/// or parsed.
#[derive(Clone, Debug, Default, PartialEq)]
struct ProcStat {
    /// `utime + stime` of `/proc/self/stat`, in seconds.
    cpu_seconds: f64,
    /// `rss` of `/proc/self/stat` (pages) × the page size.
    resident_bytes: Option<f64>,
    /// `/proc/stat`'s `btime` + `starttime` of `/proc/self/stat` (clock ticks since boot).
    start_time_seconds: Option<f64>,
    /// Entries of `/proc/self/fd`.
    open_fds: Option<f64>,
    /// The soft limit of "Max open files" in `/proc/self/limits`; `None` when unlimited.
    max_fds: Option<f64>,
}

/// The fields of `/proc/self/stat` used here, in the units the kernel gives them (proc(5)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct StatFields {
    /// Fields 14 and 15, `utime` + `stime`, in clock ticks.
    cpu_ticks: u64,
    /// Field 22, `starttime`: clock ticks after boot.
    start_ticks: u64,
    /// Field 24, `rss`, in pages.
    rss_pages: u64,
}

// === impl ProcStat ===

impl ProcStat {
    /// Reads `/proc/self/stat` and the others; `None` when `/proc/self/stat` cannot be read (not
    /// Linux, or no `/proc` mounted).
    fn read() -> Option<ProcStat> {
        let stat = parse_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
        let ticks = rustix::param::clock_ticks_per_second() as f64;
        let page = rustix::param::page_size() as f64;
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|text| parse_btime(&text));
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|entries| entries.count() as f64);
        let max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|text| parse_max_fds(&text));
        Some(ProcStat {
            cpu_seconds: stat.cpu_ticks as f64 / ticks,
            resident_bytes: Some(stat.rss_pages as f64 * page),
            start_time_seconds: boot.map(|boot| boot as f64 + stat.start_ticks as f64 / ticks),
            open_fds,
            max_fds: max_fds.map(|max| max as f64),
        })
    }
}

/// The fields of a `/proc/<pid>/stat` line. The command name (field 2) is in parentheses and may
/// hold spaces and parentheses itself, so the fields are counted from its last `)`.
fn parse_stat(text: &str) -> Option<StatFields> {
    let (_, rest) = text.rsplit_once(')')?;
    // `rest` starts at field 3 (`state`): field n is at index n - 3.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(StatFields {
        cpu_ticks: field(14)?.checked_add(field(15)?)?,
        start_ticks: field(22)?,
        rss_pages: field(24)?,
    })
}

/// `btime` of `/proc/stat`: the boot time, in seconds since the Unix epoch.
fn parse_btime(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|value| value.trim().parse().ok())
}

/// The soft limit of the `Max open files` row of `/proc/<pid>/limits`; `None` when it is
/// `unlimited` or the row is missing.
fn parse_max_fds(text: &str) -> Option<u64> {
    let row = text
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?;
    row.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests;
