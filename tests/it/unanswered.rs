//! Trial 12, M16: requests a backend never answers are counted by how long they have waited
//! (`crossfade_unanswered_requests`), and the analysis counts those past `max_p99` as slow, in
//! Kubernetes mode too: there the controller's metrics source ([`ProxyScraper`]) reads them from
//! each proxy's `/metrics`.

use std::collections::BTreeMap;
use std::time::Duration;

use crossfade_controller::analysis::{Judge, Metric, Outcome, ThresholdJudge, Window};
use crossfade_controller::kube::proxies::Replica;
use crossfade_controller::kube::scrape::{ClusterMetrics, ProxyScraper};
use crossfade_controller::spec::AnalysisConfig;
use crossfade_controller::traffic::MetricsSource;
use crossfade_proxy::weight::Slot;
use crossfade_proxy::BackendSnapshot;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::{proxy_config, temp_dir, wait_until, RunningProxy, SampleApp};

/// Requests sent to the green that never answers.
const HUNG: u64 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_a_green_never_answers_reach_the_kube_metrics_source_and_fail_the_p99() {
    let dir = temp_dir();
    let blue = SampleApp::start(dir.path(), "blue", "blue-0", &[]).await;
    // 11.5 days: never, for this test.
    let hung = SampleApp::start(dir.path(), "green", "green-0", &["--latency", "999999999"]).await;
    let config = proxy_config(&[blue.addr], &[hung.addr]);
    let proxy = RunningProxy::start(dir.path(), "proxy.yaml", &config).await;
    proxy.set_weights(0, 10_000).await;

    // Each request on its own connection, kept open: none of them is ever answered.
    let mut clients = Vec::new();
    for _ in 0..HUNG {
        let mut conn = TcpStream::connect(proxy.listen).await.expect("connect");
        let request = "GET /hang HTTP/1.1\r\nHost: web\r\n\r\n";
        conn.write_all(request.as_bytes()).await.expect("send");
        clients.push(conn);
    }

    let replica = Replica {
        lease: "default/proxy-0".to_owned(),
        uid: "uid-0".to_owned(),
        applied: BTreeMap::new(),
        applied_uid: BTreeMap::new(),
        admin_url: Some(format!("http://{}", proxy.admin.addr)),
        refused: BTreeMap::new(),
    };
    let scraper = ProxyScraper::new(None);
    let green: BackendSnapshot = wait_until(
        Duration::from_secs(20),
        "3 requests unanswered for more than 500ms in green's scraped metrics",
        || async {
            scraper.refresh("web", &[&replica]).await;
            let snapshot = scraper.snapshot("web", Slot::Green).ok()?;
            (snapshot.unanswered.longer_than(0.5) == HUNG).then_some(snapshot)
        },
    )
    .await;
    assert_eq!(green.requests, HUNG, "{green:?}");
    assert_eq!(green.unanswered.total(), HUNG, "{green:?}");
    assert_eq!(green.latency.count(), 0, "nothing answered: {green:?}");
    let metrics = proxy.admin.metrics().await;
    let gauge = |longer_than| {
        let labels = [
            ("route", "web"),
            ("backend", "green"),
            ("longer_than", longer_than),
        ];
        metrics.get("crossfade_unanswered_requests", &labels)
    };
    assert_eq!(gauge("0"), Some(HUNG as f64));
    assert_eq!(gauge("0.5"), Some(HUNG as f64));

    // The judge of a 500 ms bound fails the window, below min_requests as above it.
    let config = AnalysisConfig {
        max_p99: Some(Duration::from_millis(500)),
        min_requests: 20,
        ..AnalysisConfig::default()
    };
    let window = Window::between(&BackendSnapshot::default(), &green);
    let verdict = ThresholdJudge::new(config).judge(&window, &Window::default());
    assert_eq!(verdict.outcome, Outcome::Fail, "{verdict:?}");
    assert_eq!(
        verdict.summary,
        "p99 > 500ms: 3 requests unanswered for more than 500ms (3 requests)"
    );
    let p99 = verdict.finding(Metric::P99Seconds).expect("a p99 finding");
    assert_eq!(p99.unanswered, HUNG);

    // Once green is gone (its connections reset), nothing waits on it any more.
    drop(hung);
    wait_until(
        Duration::from_secs(20),
        "green's unanswered requests to end when it stops",
        || async {
            scraper.refresh("web", &[&replica]).await;
            let snapshot = scraper.snapshot("web", Slot::Green).ok()?;
            snapshot.unanswered.is_empty().then_some(())
        },
    )
    .await;
    drop(clients);
}
