use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;

/// A `/proc/<pid>/stat` line as proc(5) describes it: a command name with a space and a `)` in
/// it, utime 250, stime 50, starttime 123456, rss 2048, then the rest of the 52 fields.
fn stat_line() -> String {
    let mut fields: Vec<String> = (3..=52).map(|n| n.to_string()).collect();
    fields[0] = "S".to_owned();
    for (n, value) in [(14, "250"), (15, "50"), (22, "123456"), (24, "2048")] {
        fields[n - 3] = value.to_owned();
    }
    format!("4242 (crossfade a) b) {}\n", fields.join(" "))
}

#[test]
fn stat_fields_are_counted_from_the_last_parenthesis_of_the_command_name() {
    let fields = parse_stat(&stat_line()).expect("parses");
    assert_eq!(
        fields,
        StatFields {
            cpu_ticks: 300,
            start_ticks: 123456,
            rss_pages: 2048,
        }
    );
    assert_eq!(parse_stat("4242 (cut short) S 1 2"), None);
    assert_eq!(parse_stat("no parenthesis at all"), None);
}

#[test]
fn boot_time_and_the_soft_fd_limit_are_read_from_their_rows() {
    let stat = "cpu  1 2 3\nintr 5\nctxt 9\nbtime 1764547200\nprocesses 77\n";
    assert_eq!(parse_btime(stat), Some(1_764_547_200));
    assert_eq!(parse_btime("cpu 1 2 3\n"), None);
    let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                  Max processes             63704                63704                processes \n\
                  Max open files            1024                 524288               files     \n";
    assert_eq!(parse_max_fds(limits), Some(1024));
    let unlimited = "Max open files            unlimited            unlimited            files\n";
    assert_eq!(parse_max_fds(unlimited), None);
}

/// The value of the unlabelled sample `name` in an OpenMetrics text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn a_scrape_ends_with_build_info_and_this_process_s_own_readings() {
    let mut registry = Registry::with_prefix("crossfade");
    registry.register(
        "routing_table_generation",
        "A family of the crossfade registry",
        prometheus_client::metrics::gauge::Gauge::<i64>::default(),
    );
    let mut text = String::new();
    encode(&mut text, &registry, Format::OpenMetrics).expect("encodes");
    assert!(
        text.contains("crossfade_routing_table_generation 0\n"),
        "{text}"
    );
    let build = format!(
        "crossfade_build_info{{version=\"{VERSION}\",revision=\"{}\",os=\"{}\",arch=\"{}\"}} 1\n",
        super::commit(),
        std::env::consts::OS,
        std::env::consts::ARCH
    );
    assert!(text.contains(&build), "{text}");
    assert!(
        text.ends_with("# EOF\n") && text.matches("# EOF").count() == 1,
        "{text}"
    );
    if !cfg!(target_os = "linux") {
        return;
    }
    let resident = sample(&text, "process_resident_memory_bytes").expect("resident memory");
    assert!(resident > 0.0, "{text}");
    let open = sample(&text, "process_open_fds").expect("open fds");
    let max = sample(&text, "process_max_fds").expect("max fds");
    assert!(open >= 1.0 && open <= max, "{text}");
    assert!(
        sample(&text, "process_cpu_seconds_total").is_some_and(|s| s >= 0.0),
        "{text}"
    );
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = sample(&text, "process_start_time_seconds").expect("start time");
    // This test binary started before the test ran, and less than an hour ago.
    assert!(started <= now + 1.0, "{started} vs now {now}");
    assert!(
        started > now - Duration::from_secs(3600).as_secs_f64(),
        "{started} vs now {now}"
    );
    assert!(
        text.contains("# TYPE process_cpu_seconds counter\n"),
        "{text}"
    );
    assert!(
        text.contains("# UNIT process_resident_memory_bytes bytes\n"),
        "{text}"
    );
}

/// docs/metrics.md, the catalogue the help texts must agree with.
const DOCS: &str = include_str!("../../../docs/metrics.md");

#[test]
fn each_help_text_is_in_the_docs_row_of_its_metric() {
    for (name, help) in [
        ("crossfade_build_info", BUILD_INFO_HELP),
        ("process_cpu_seconds_total", CPU_HELP),
        ("process_resident_memory_bytes", RESIDENT_HELP),
        ("process_start_time_seconds", START_HELP),
        ("process_open_fds", OPEN_FDS_HELP),
        ("process_max_fds", MAX_FDS_HELP),
    ] {
        let row = DOCS
            .lines()
            .find(|l| l.starts_with(&format!("| `{name}` |")))
            .unwrap_or_else(|| panic!("{name} is not in docs/metrics.md"));
        assert!(row.contains(help), "{name}: {help:?} not in\n{row}");
    }
}
