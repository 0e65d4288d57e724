//! C15 — hot-swapping weights drops requests (dfaas#8, dockercloud-haproxy#74).
//!
//! Right outcome: 100 weight changes 100 ms apart under load cause 0 client errors and 0 connection
//! resets; the same process keeps the same listening socket throughout; the table generation rises by
//! exactly 100; over any window longer than 2 s the observed split follows the weight in force.
//!
//! Scale: the case's 500 req/s over 32 keep-alive connections is 320 req/s here (10 req/s each), plus
//! the case's 50 new short connections per second. The split is checked over four windows of 25
//! changes (≥ 2.5 s each), counting only requests that started after a change was acknowledged and
//! finished before the next one was sent, so each has exactly one weight in force; the tolerance is
//! 4σ of the sum of those Bernoulli draws (generous: four windows, a false alarm about 1 in 4,000).
//! The case's p99 bound (within 10 % of baseline) is not asserted: on a shared 2-core CI machine
//! latency percentiles measure the machine; the test prints them. The benchmark measures it at the
//! case's full scale, beside HAProxy's runtime weight change: `bench/run.sh` (its "Live weight
//! changes (case C15)" table, `bench/peer/swaps.sh`).

use std::time::Duration;

use crossfade_proxy::rng::{RandomSource, WyRand};
use crossfade_proxy::weight::FULL_BP;
use tokio::time::Instant;

use crate::support::trace::{errors, Record};
use crate::support::{
    proxy_config, temp_dir, Load, LoadConfig, Metrics, RunningProxy, SampleApp, Trace, TraceConfig,
};

const CHANGES: usize = 100;
const GAP: Duration = Duration::from_millis(100);
/// Changes per checked window: 25 × 100 ms plus the admin round trips, > 2 s.
const WINDOW: usize = 25;
const KEEP_ALIVE_CONNS: usize = 32;
/// Requests with one weight in force that the split check needs at least (about 100 a window).
const MIN_USABLE: usize = 400;

/// One weight change as the test made it.
struct Change {
    sent: Instant,
    acked: Instant,
    green_bp: u32,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c15_weight_changes_under_load_drop_nothing_and_the_split_follows() {
    let dir = temp_dir();
    let blue = SampleApp::start(dir.path(), "blue", "blue-0", &[]).await;
    let green = SampleApp::start(dir.path(), "green", "green-0", &[]).await;
    let config = proxy_config(&[blue.addr], &[green.addr]);
    let mut proxy = RunningProxy::start(dir.path(), "proxy.yaml", &config).await;
    let pid = proxy.child.pid();
    let port = proxy.listen.port();
    let listener = listening_socket(port).expect("the proxy's listening socket");
    assert!(
        holds_socket(pid, listener),
        "pid {pid} holds socket {listener}"
    );
    let generation_before = generation(&proxy.admin.metrics().await);

    let mut load = TraceConfig::new(proxy.listen);
    (load.conns, load.rate, load.short_per_second) = (KEEP_ALIVE_CONNS, 320, 50);
    let trace = Trace::start(load);
    trace.wait_requests(300, Duration::from_secs(15)).await;
    let changes = change_weights(&proxy).await;
    trace.wait_requests(300, Duration::from_secs(15)).await;
    let connects = trace.keep_alive_connects();
    let records = trace.stop().await;

    let failed = errors(&records);
    assert!(
        failed.is_empty(),
        "{} of {} requests failed, e.g. {:?}",
        failed.len(),
        records.len(),
        &failed[..failed.len().min(3)]
    );
    assert_eq!(
        connects, KEEP_ALIVE_CONNS as u64,
        "keep-alive connections were closed or reset"
    );
    assert_eq!(proxy.child.try_exit(), None, "the proxy exited");
    assert_eq!(
        listening_socket(port),
        Some(listener),
        "the listener was re-bound"
    );
    assert!(
        holds_socket(pid, listener),
        "pid {pid} lost its listening socket"
    );
    let generation_after = generation(&proxy.admin.metrics().await);
    assert_eq!(generation_after, generation_before + CHANGES as u64);
    check_split(&records, &changes);
    report_latency(&records, &changes);
}

/// The same 100 changes under HTTP/2 (h2c prior knowledge) clients: every stream answered, no
/// connection reset or sent away (a GOAWAY would make the load re-connect and count an error for
/// the stream it refused), both pools served, one generation per change. The split is checked over
/// HTTP/1.1 above; the pick does not depend on the client's protocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c15_weight_changes_under_h2_load_drop_nothing() {
    let dir = temp_dir();
    let blue = SampleApp::start(dir.path(), "blue", "blue-0", &[]).await;
    let green = SampleApp::start(dir.path(), "green", "green-0", &[]).await;
    let config = proxy_config(&[blue.addr], &[green.addr]);
    let mut proxy = RunningProxy::start(dir.path(), "proxy.yaml", &config).await;
    let generation_before = generation(&proxy.admin.metrics().await);

    let mut load = LoadConfig::new(proxy.listen);
    (load.h1, load.h2, load.rate, load.path) = (0, 8, 300, "/api".into());
    let load = Load::start(load);
    load.wait_requests(300, Duration::from_secs(20)).await;
    change_weights(&proxy).await;
    load.wait_requests(300, Duration::from_secs(20)).await;
    let report = load.stop().await;

    eprintln!("c15 h2: {}, pools {:?}", report.summary(), report.pools);
    assert_eq!(report.errors(), 0, "{}", report.summary());
    assert_eq!(report.by_proto.get("h1"), None, "{}", report.summary());
    for pool in ["blue", "green"] {
        assert!(
            report.pools.get(pool).is_some_and(|&n| n > 0),
            "{:?}",
            report.pools
        );
    }
    assert_eq!(proxy.child.try_exit(), None, "the proxy exited");
    let generation_after = generation(&proxy.admin.metrics().await);
    assert_eq!(generation_after, generation_before + CHANGES as u64);
}

/// 100 changes, 100 ms apart, to random percentages (seeded) summing to 100 %.
async fn change_weights(proxy: &RunningProxy) -> Vec<Change> {
    let mut rng = WyRand::new(0xC15);
    let mut changes = Vec::with_capacity(CHANGES);
    let mut next = Instant::now();
    for _ in 0..CHANGES {
        let green_bp = rng.next_u32() % 101 * 100;
        let sent = Instant::now();
        proxy.set_weights(FULL_BP - green_bp, green_bp).await;
        let acked = Instant::now();
        changes.push(Change {
            sent,
            acked,
            green_bp,
        });
        next += GAP;
        tokio::time::sleep_until(next).await;
    }
    changes
}

/// Per window of [`WINDOW`] changes, green's count against the weights in force.
fn check_split(records: &[Record], changes: &[Change]) {
    // Interval 0 is before the first change (green 0 %); interval k follows change k - 1.
    let mut windows = vec![(0u64, 0.0f64, 0.0f64); CHANGES.div_ceil(WINDOW)];
    let mut counted = 0;
    for record in records {
        let Some(interval) = interval_of(record, changes) else {
            continue;
        };
        let p = match interval {
            0 => 0.0,
            k => f64::from(changes[k - 1].green_bp) / f64::from(FULL_BP),
        };
        let window = &mut windows[interval.saturating_sub(1) / WINDOW];
        window.0 += u64::from(record.pool() == Some("green"));
        window.1 += p;
        window.2 += p * (1.0 - p);
        counted += 1;
    }
    // Under heavy load a request can outlast the 100 ms between changes and is left out; the
    // tolerance below follows the number counted, so only a floor that keeps the check meaningful
    // is asserted, not a share (1,235 of 3,098 were usable in one run on a machine at load 14).
    assert!(
        counted >= MIN_USABLE,
        "{counted} of {} usable",
        records.len()
    );
    for (i, (observed, expected, variance)) in windows.into_iter().enumerate() {
        let tolerance = 4.0 * variance.sqrt() + 1.0;
        eprintln!("c15 window {i}: green {observed}, expected {expected:.1} ± {tolerance:.1}");
        assert!(
            (observed as f64 - expected).abs() <= tolerance,
            "window {i}: green answered {observed}, expected {expected:.1} ± {tolerance:.1}"
        );
    }
}

/// The interval whose one weight was in force for the whole of `record`, if any.
fn interval_of(record: &Record, changes: &[Change]) -> Option<usize> {
    let k = changes.partition_point(|c| c.acked <= record.started);
    match changes.get(k) {
        Some(next) if record.finished >= next.sent => None,
        _ => Some(k),
    }
}

/// Prints p99 before and during the changes (not asserted, see the module docs).
fn report_latency(records: &[Record], changes: &[Change]) {
    let first = changes.first().map(|c| c.sent);
    let p99 = |during: bool| {
        let mut times: Vec<Duration> = records
            .iter()
            .filter(|r| first.is_some_and(|f| (r.started >= f) == during))
            .map(|r| r.finished - r.started)
            .collect();
        times.sort();
        times
            .get(times.len() * 99 / 100)
            .copied()
            .unwrap_or_default()
    };
    eprintln!(
        "c15 p99: baseline {:?}, during changes {:?}",
        p99(false),
        p99(true)
    );
}

fn generation(metrics: &Metrics) -> u64 {
    let value = metrics.get("crossfade_routing_table_generation", &[]);
    value.expect("crossfade_routing_table_generation") as u64
}

/// The inode of the socket listening on 127.0.0.1:`port` (`/proc/net/tcp`).
fn listening_socket(port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let local = format!("0100007F:{port:04X}");
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let listening = fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&"0A");
        listening.then(|| fields.get(9)?.parse().ok()).flatten()
    })
}

/// Whether process `pid` has socket `inode` open.
fn holds_socket(pid: u32, inode: u64) -> bool {
    let wanted = format!("socket:[{inode}]");
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .any(|link| link.to_string_lossy() == wanted)
}
