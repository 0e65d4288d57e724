//! `crossfade proxy` over two static sample-app backends, its weights changed 100 times under load.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::spec::{addr, write_json};
use crate::support::{
    free_addr, proxy_config, temp_dir, wait_until, Admin, Crossfade, Load, LoadConfig, Metrics,
};

/// Starts `crossfade sample-app --version VERSION` on a free port and waits until it answers.
async fn sample_app(dir: &Path, version: &str) -> (Crossfade, SocketAddr) {
    let addr = free_addr();
    let port = addr.port().to_string();
    let args = ["sample-app", "--port", &port, "--version", version];
    let child = Crossfade::spawn(dir, &format!("sample-{version}.log"), args);
    let app = Admin::new(addr);
    wait_until(
        Duration::from_secs(10),
        "the sample app to answer",
        || async {
            app.get_text("/healthz")
                .await
                .ok()
                .filter(|(s, _)| *s == 200)
                .map(drop)
        },
    )
    .await;
    (child, addr)
}

/// The i-th weight change: basis points or percent strings, one side or both, extremes included;
/// the last (i = 99) sends everything to green.
fn weights(i: u32) -> Value {
    let green_bp = match i % 10 {
        _ if i == 99 => 10_000,
        0 => 0,
        5 => 10_000,
        _ => (i * 1013) % 10_001,
    };
    match i % 3 {
        0 => json!({ "blue": 10_000 - green_bp, "green": green_bp }),
        1 => json!({ "green": format!("{}%", f64::from(green_bp) / 100.0) }),
        _ => json!({ "blue": format!("{}%", f64::from(10_000 - green_bp) / 100.0) }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_weight_changes_under_keep_alive_load_lose_no_request() {
    let dir = temp_dir();
    let (_blue, blue_addr) = sample_app(dir.path(), "v1").await;
    let (_green, green_addr) = sample_app(dir.path(), "v2").await;
    let config = proxy_config(&[blue_addr], &[green_addr]);
    let admin = Admin::new(addr(&config["admin"]));
    let mut proxy = Crossfade::proxy(dir.path(), &write_json(dir.path(), "proxy.yaml", &config));
    proxy.wait_ready(&admin, Duration::from_secs(15)).await;
    let load = Load::start(LoadConfig::new(addr(&config["listen"])));
    let generation = |m: &Metrics| m.get("crossfade_routing_table_generation", &[]);
    let before = generation(&admin.metrics().await).expect("a generation gauge");

    for i in 0..100 {
        let body = weights(i);
        let (status, answer) = admin.put("/routes/web/weights", &body).await;
        assert_eq!(status, 200, "PUT {body}: {answer}");
        let expected = before as u64 + u64::from(i) + 1;
        assert_eq!(
            answer["generation"], expected,
            "one generation per change: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let at_full = load.report();
    load.wait_requests(100, Duration::from_secs(10)).await;
    let report = load.stop().await;
    let after = report.since(&at_full);

    assert_eq!(report.errors(), 0, "client-visible errors: {report:?}");
    assert!(
        report.ok_from("v1") > 0 && report.ok_from("v2") > 0,
        "both served: {report:?}"
    );
    assert!(
        after.total() >= 100 && after.ok_from("v2") == after.total(),
        "all green at 100%: {after:?}"
    );
    let after_metric = generation(&admin.metrics().await).expect("a generation gauge");
    assert_eq!(after_metric - before, 100.0, "one generation per change");
    proxy.terminate(Duration::from_secs(15)).await;
}
