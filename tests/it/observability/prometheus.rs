//! A real Prometheus (Debian's `prometheus` binary) as a child process: a temp config scraping one
//! target every 500 ms with the repository's alert rules loaded, and a client of its HTTP API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use crate::support::{free_addr, Admin};

/// Target labels the test Prometheus puts on every scraped series, as a Kubernetes scrape (a
/// ServiceMonitor) does: the dashboard's `namespace` and `service` variables select on them.
pub const TARGET_LABELS: [(&str, &str); 2] = [("namespace", "shop"), ("service", "web-frontend")];

/// The scrape and rule evaluation interval of the test Prometheus.
pub const SCRAPE_INTERVAL: &str = "500ms";

/// A running Prometheus, stopped (SIGTERM, then SIGKILL) on drop.
pub struct Prometheus {
    child: Child,
    api: Admin,
    log: PathBuf,
}

/// Where the repository keeps its alert rules.
pub fn rules_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/crossfade-rules.yaml")
}

/// Seconds since the Unix epoch, as the HTTP API takes them.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Prometheus {
    /// Starts Prometheus scraping `target`'s `/metrics` as job `crossfade` with [`TARGET_LABELS`],
    /// or returns `None` when
    /// the binary is not installed (and `CROSSFADE_REQUIRE_PROMETHEUS` is unset: the test command
    /// sets it, so there a missing binary fails).
    pub async fn start(dir: &Path, target: SocketAddr) -> Option<Prometheus> {
        let addr = free_addr();
        let config = dir.join("prometheus.yml");
        let text = format!(
            "global:\n  scrape_interval: {SCRAPE_INTERVAL}\n  scrape_timeout: 400ms\n  evaluation_interval: {SCRAPE_INTERVAL}\n\
             rule_files: [{rules:?}]\n\
             scrape_configs:\n  - job_name: crossfade\n    static_configs:\n      - targets: [\"{target}\"]\n        labels: {{{labels}}}\n",
            rules = rules_file().display().to_string(),
            labels = TARGET_LABELS.map(|(k, v)| format!("{k}: {v}")).join(", "),
        );
        std::fs::write(&config, text).expect("write prometheus.yml");
        let log = dir.join("prometheus.log");
        let stderr = std::fs::File::create(&log).expect("create prometheus.log");
        let spawned = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let required = std::env::var_os("CROSSFADE_REQUIRE_PROMETHEUS").is_some();
                assert!(
                    !required,
                    "prometheus is not installed (scripts/test.sh installs it)"
                );
                eprintln!("SKIPPED: the `prometheus` binary is not installed (apt-get install prometheus; scripts/test.sh does)");
                return None;
            }
            Err(e) => panic!("cannot start prometheus: {e}"),
        };
        let prometheus = Prometheus {
            child,
            api: Admin::new(addr),
            log,
        };
        prometheus.wait_ready().await;
        Some(prometheus)
    }

    async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while tokio::time::Instant::now() < deadline {
            if self
                .api
                .get_text("/-/ready")
                .await
                .is_ok_and(|(s, _)| s == 200)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("prometheus not ready within 20s; log:\n{}", self.log());
    }

    /// Where its HTTP API listens.
    pub fn address(&self) -> SocketAddr {
        self.api.addr
    }

    /// Prometheus' own log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET /api/v1/{path}?{params}` (values percent-encoded); the JSON answer, whatever its status.
    pub async fn api(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let query: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect();
        let uri = format!("/api/v1/{path}?{}", query.join("&"));
        let (_, text) = self
            .api
            .get_text(&uri)
            .await
            .unwrap_or_else(|e| panic!("prometheus {path}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("prometheus {path}: {e}: {text}"))
    }

    /// An instant query now.
    pub async fn query(&self, expr: &str) -> Value {
        self.api("query", &[("query", expr)]).await
    }

    /// A range query from `start` to now, one point every quarter second.
    pub async fn query_range(&self, expr: &str, start: f64) -> Value {
        let (start, end) = (format!("{start:.3}"), format!("{:.3}", unix_now()));
        let params = [
            ("query", expr),
            ("start", &start),
            ("end", &end),
            // A quarter of a second, half the scrape interval: every scraped sample is the latest
            // at some step, so a series that lives a scrape or two (an analysis value removed when
            // the next rollout starts) is seen; at 1 s the steps could fall before its nonzero
            // sample and after its removal, and a panel that showed it looked empty.
            ("step", "0.25"),
        ];
        self.api("query_range", &params).await
    }

    /// Polls an instant query until it returns at least one series.
    ///
    /// # Panics
    /// After `timeout`.
    pub async fn wait_for(&self, expr: &str, timeout: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let answer = self.query(expr).await;
            if series(&answer) > 0 {
                return answer;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "prometheus: no result for {expr} within {timeout:?}: {answer}\nlog:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        for _ in 0..50 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The number of series in a query answer (`data.result`), 0 when it failed.
pub fn series(answer: &Value) -> usize {
    answer["data"]["result"].as_array().map_or(0, Vec::len)
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
