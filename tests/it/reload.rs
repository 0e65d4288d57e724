//! `crossfade proxy` reloaded by SIGHUP (trial report 3, §3 and §9): weights set through the admin
//! API survive a reload that did not touch them in the file, an edit of them in the file wins, a
//! removed route goes, and settings a reload cannot apply are named in a warning.

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

use crate::support::spec::write_json;
use crate::support::{proxy_config, temp_dir, wait_until, Admin, Crossfade, SampleApp};

/// Sends SIGHUP and waits for the `n`th "routes reloaded" (or refused) line of the log.
async fn hang_up(proxy: &Crossfade, n: usize) -> String {
    kill(Pid::from_raw(proxy.pid() as i32), Signal::SIGHUP).expect("SIGHUP the proxy");
    wait_until(Duration::from_secs(10), "the reload", || {
        let log = proxy.log();
        let done = log.matches("SIGHUP: routes reloaded").count()
            + log.matches("not reloaded, routes unchanged").count();
        async move { (done >= n).then_some(log) }
    })
    .await
}

/// The weights of route `name` in `/status`.
async fn weights(admin: &Admin, name: &str) -> Value {
    let status = admin.status().await;
    let routes = status["routes"].as_array().cloned().unwrap_or_default();
    let route = routes.iter().find(|r| r["name"] == name);
    route.map(|r| r["weights"].clone()).unwrap_or(Value::Null)
}

async fn started(dir: &Path, config: &Value) -> (Crossfade, Admin) {
    let path = write_json(dir, "proxy.yaml", config);
    let admin = Admin::new(config["admin"].as_str().unwrap().parse().unwrap());
    let mut proxy = Crossfade::proxy(dir, &path);
    proxy.wait_ready(&admin, Duration::from_secs(15)).await;
    (proxy, admin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sighup_keeps_admin_set_weights_unless_the_file_changed_them() {
    let dir = temp_dir();
    let blue = SampleApp::start(dir.path(), "blue", "blue-0", &[]).await;
    let green = SampleApp::start(dir.path(), "green", "green-0", &[]).await;
    let mut config = proxy_config(&[blue.addr], &[green.addr]);
    let (mut proxy, admin) = started(dir.path(), &config).await;
    let shifted = json!({ "blue": 7000, "green": 3000 });
    let (status, body) = admin
        .put(
            "/routes/web/weights",
            &json!({ "blue": "70%", "green": "30%" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // An unrelated edit (a new route): the shift stays, and the log says so.
    let mut api = config["routes"][0].clone();
    api["name"] = json!("api");
    api["path_prefix"] = json!("/api");
    config["routes"] = json!([config["routes"][0].clone(), api]);
    write_json(dir.path(), "proxy.yaml", &config);
    let log = hang_up(&proxy, 1).await;
    assert_eq!(weights(&admin, "web").await, shifted, "{log}");
    assert_eq!(
        weights(&admin, "api").await,
        json!({ "blue": 10000, "green": 0 })
    );
    assert!(
        log.contains("route web: kept the weights in force (blue 70%, green 30%)"),
        "{log}"
    );

    // The operator edits web's weights in the file: the file wins, logged as a replacement; the
    // route removed from the file goes.
    config["routes"] = json!([config["routes"][0].clone()]);
    config["routes"][0]["blue"]["weight"] = json!(50);
    config["routes"][0]["green"]["weight"] = json!(50);
    write_json(dir.path(), "proxy.yaml", &config);
    let log = hang_up(&proxy, 2).await;
    assert_eq!(
        weights(&admin, "web").await,
        json!({ "blue": 5000, "green": 5000 }),
        "{log}"
    );
    assert_eq!(weights(&admin, "api").await, Value::Null, "api removed");
    assert!(
        log.contains(
            "route web: weights blue 70%, green 30% replaced by the file's (blue 50%, green 50%)"
        ),
        "{log}"
    );
    proxy.terminate(Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sighup_names_the_changed_settings_it_cannot_apply() {
    let dir = temp_dir();
    let blue = SampleApp::start(dir.path(), "blue", "blue-0", &[]).await;
    let mut config = proxy_config(&[blue.addr], &[]);
    let (mut proxy, admin) = started(dir.path(), &config).await;
    let listen = config["listen"].clone();
    config["listen"] = json!(crate::support::free_addr().to_string());
    config["limits"] = json!({ "max_connections": 5 });
    config["upstream"] = json!({ "connect_timeout": "1s" });
    write_json(dir.path(), "proxy.yaml", &config);
    let log = hang_up(&proxy, 1).await;
    assert!(
        log.contains(
            "changed settings not applied, they need a restart or a binary upgrade (the values \
             read at start stay in force): limits.max_connections, listen, upstream.connect_timeout"
        ),
        "{log}"
    );
    // The routes were reloaded all the same, on the old listener.
    assert_eq!(admin.status().await["routes"][0]["name"], "web");
    let old: std::net::SocketAddr = listen.as_str().unwrap().parse().unwrap();
    assert!(tokio::net::TcpStream::connect(old).await.is_ok(), "{log}");
    proxy.terminate(Duration::from_secs(15)).await;
}

/// The ERROR line of a log with `ERROR` and `needle` in it, and every line of `log` that has no
/// timestamp (a record split over several lines leaves such lines).
fn error_line<'a>(log: &'a str, needle: &str) -> (Option<&'a str>, Vec<&'a str>) {
    let line = log
        .lines()
        .find(|l| l.contains("ERROR") && l.contains(needle));
    let orphans = log
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    (line, orphans)
}

/// Trial report 5 F2: a refused reload is one log record, and that line names every field that is
/// wrong (journald and Docker's log driver make one record per line).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_sighup_is_one_error_line_naming_each_field() {
    let dir = temp_dir();
    let blue = SampleApp::start(dir.path(), "blue", "blue-0", &[]).await;
    let green = SampleApp::start(dir.path(), "green", "green-0", &[]).await;
    let mut config = proxy_config(&[blue.addr], &[green.addr]);
    let (mut proxy, admin) = started(dir.path(), &config).await;
    config["routes"][0]["blue"]["weight"] = json!(90);
    config["routes"][0]["green"]["weight"] = json!(20);
    config["routes"][0]["path_prefix"] = json!("api");
    write_json(dir.path(), "proxy.yaml", &config);
    let log = hang_up(&proxy, 1).await;
    let (line, orphans) = error_line(&log, "not reloaded, routes unchanged");
    let line = line.unwrap_or_else(|| panic!("no ERROR line: {log}"));
    assert!(
        line.ends_with(
            "not reloaded, routes unchanged: invalid config: routes[0].path_prefix: \"api\" must \
             start with '/'; routes[0].green.weight: blue 90% + green 20% = 110%, must sum to 100% \
             (or both 0% to disable the route)"
        ),
        "{line}"
    );
    assert!(
        orphans.is_empty(),
        "lines without a timestamp: {orphans:?}\n{log}"
    );
    assert_eq!(
        weights(&admin, "web").await,
        json!({ "blue": 10000, "green": 0 })
    );
    proxy.terminate(Duration::from_secs(15)).await;
}

/// Trial 7, G9: a SIGHUP on a deleted config says `cannot read proxy config PATH: ...`, as the start
/// does, and keeps the routes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sighup_on_a_deleted_config_says_it_cannot_read_it() {
    let dir = temp_dir();
    let blue = SampleApp::start(dir.path(), "blue", "blue-0", &[]).await;
    let config = proxy_config(&[blue.addr], &[]);
    let (mut proxy, admin) = started(dir.path(), &config).await;
    let path = dir.path().join("proxy.yaml");
    std::fs::remove_file(&path).expect("remove the config");
    let log = hang_up(&proxy, 1).await;
    let (line, _) = error_line(&log, "not reloaded, routes unchanged");
    let line = line.unwrap_or_else(|| panic!("no ERROR line: {log}"));
    let expected = format!(
        "not reloaded, routes unchanged: cannot read proxy config {}: ",
        path.display()
    );
    assert!(line.contains(&expected), "{line}");
    assert_eq!(admin.status().await["routes"][0]["name"], "web");
    proxy.terminate(Duration::from_secs(15)).await;
}

/// Trial 39 (user39): a SIGHUP on a file that adds `tls:` with a certificate that is not there, or
/// moves `state_file` into a directory that is not there, only named `tls` and `state_file` as
/// needing a restart, and the restart then refused the file. The warning now says what the
/// start would refuse, naming the field; the routes are reloaded all the same, as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sighup_warns_when_a_setting_it_cannot_apply_names_a_file_a_start_would_refuse() {
    let dir = temp_dir();
    let blue = SampleApp::start(dir.path(), "blue", "blue-0", &[]).await;
    let mut config = proxy_config(&[blue.addr], &[]);
    let (mut proxy, admin) = started(dir.path(), &config).await;
    config["tls"] = json!({ "cert": "missing.crt", "key": "missing.key" });
    config["state_file"] = json!("no-such-dir/weights.json");
    config["routes"][0]["path_prefix"] = json!("/api");
    write_json(dir.path(), "proxy.yaml", &config);
    let log = hang_up(&proxy, 1).await;
    let line = log
        .lines()
        .find(|l| l.contains("changed settings not applied"))
        .unwrap_or_else(|| panic!("no warning: {log}"));
    let cert = dir.path().join("missing.crt");
    let said = format!(
        "(the values read at start stay in force): state_file, tls; a start or a binary upgrade \
         would refuse this file: invalid config: tls.cert: cannot read {}: ",
        cert.display()
    );
    assert!(line.contains(&said), "{line}");
    assert_eq!(admin.status().await["routes"][0]["path_prefix"], "/api");
    proxy.terminate(Duration::from_secs(15)).await;
}
