//! `crossfade proxy` with `state_file` (trial 11, L6): weights set through the admin API survive a
//! crash (`kill -9`) and a plain restart; a damaged state file falls back to its backup or stops
//! the start naming the file; a saved route the config no longer has is ignored with a warning;
//! a second proxy on the same file is refused, also after a binary upgrade (whose new process
//! holds the lock); a save that fails changes nothing; `/status` names the file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

use crate::support::spec::write_json;
use crate::support::{
    free_addr, proxy_config, read_json, run_to_end, temp_dir, wait_until, Admin, Crossfade,
    SampleApp,
};

const READY: Duration = Duration::from_secs(20);

/// The weights of route `name` in `/status` (`null` when there is no such route).
async fn weights(admin: &Admin, name: &str) -> Value {
    let status = admin.status().await;
    let routes = status["routes"].as_array().cloned().unwrap_or_default();
    let route = routes.iter().find(|r| r["name"] == name);
    route.map(|r| r["weights"].clone()).unwrap_or(Value::Null)
}

/// A config for `web` over the two backends, keeping its weights in `state/weights.json`
/// (relative: taken from the config file's directory), written to `dir/etc/proxy.yaml`; returns
/// it, its path and the state file's absolute path.
fn config_with_state(dir: &Path, blue: &SampleApp, green: &SampleApp) -> (Value, PathBuf, PathBuf) {
    let etc = dir.join("etc");
    std::fs::create_dir_all(etc.join("state")).unwrap();
    let mut config = proxy_config(&[blue.addr], &[green.addr]);
    config["state_file"] = json!("state/weights.json");
    let path = write_json(&etc, "proxy.yaml", &config);
    (config, path, etc.join("state/weights.json"))
}

async fn start(dir: &Path, path: &Path, admin: &Admin) -> Crossfade {
    let mut proxy = Crossfade::proxy(dir, path);
    proxy.wait_ready(admin, READY).await;
    proxy
}

fn admin_of(config: &Value) -> Admin {
    Admin::new(config["admin"].as_str().unwrap().parse().unwrap())
}

/// A second proxy on `config`'s state file, on ports of its own, beside it in `etc`: it must not
/// start, and its error names `state_file`, the file and the process holding it (`holder`).
async fn assert_second_proxy_refused(dir: &Path, config: &Value, state: &Path, holder: u32) {
    let mut other = config.clone();
    other["listen"] = json!(free_addr().to_string());
    other["admin"] = json!(free_addr().to_string());
    let other_path = write_json(&dir.join("etc"), "other.yaml", &other);
    let refused = run_to_end(
        ["proxy", other_path.to_str().unwrap()],
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(refused.code, Some(1), "{refused:?}");
    let named = format!(
        "state_file: state file {} is in use by another crossfade process (pid {holder} holds its \
         lock {}.lock)",
        state.display(),
        state.display()
    );
    assert!(refused.stderr.contains(&named), "{named}\n{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_weights_survive_a_kill_9_and_a_reload_saves_what_it_decided() {
    let dir = temp_dir();
    let blue = SampleApp::start(dir.path(), "blue", "blue-0", &[]).await;
    let green = SampleApp::start(dir.path(), "green", "green-0", &[]).await;
    let (mut config, path, state) = config_with_state(dir.path(), &blue, &green);
    let admin = admin_of(&config);
    let mut proxy = start(dir.path(), &path, &admin).await;
    let status = admin.status().await;
    assert_eq!(status.get("state_file"), Some(&json!(state)), "{status}");
    // The start line (written just after the listeners serve) names the state file, and, as it
    // holds nothing yet, the config file as the source of the weights (trial 23: it said
    // `state file PATH`, also when the file and its backup had been removed).
    let from = format!(
        "weights=\"from the config file (state file {} holds no route yet: a first start, or the \
         file and its backup were removed; every change is saved there from now on)\"",
        state.display()
    );
    wait_until(READY, "the start line", || {
        std::future::ready(proxy.log().contains(&from).then_some(()))
    })
    .await;
    let (status, body) = admin
        .put(
            "/routes/web/weights",
            &json!({ "blue": "0%", "green": "100%" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // Saved before the answer: the file has it now.
    assert_eq!(
        read_json(&state)["routes"]["web"]["weights"],
        json!({ "blue": 0, "green": 10000 })
    );

    // A crash, then a plain start: the weights are those set through the admin API.
    proxy.kill_hard();
    let mut proxy = start(dir.path(), &path, &admin).await;
    assert_eq!(
        weights(&admin, "web").await,
        json!({ "blue": 0, "green": 10000 }),
        "{}",
        proxy.log()
    );
    let log = proxy.log();
    assert!(
        log.contains("route web: weights blue 0%, green 100% restored (the config file says blue 100%, green 0%)"),
        "{log}"
    );
    let from = format!("weights=\"state file {}\"", state.display());
    wait_until(READY, "the start line", || {
        std::future::ready(proxy.log().contains(&from).then_some(()))
    })
    .await;

    // The operator edits the file's weights and reloads: the file wins (as without a state
    // file), and the state file holds the result.
    config["routes"][0]["blue"]["weight"] = json!(40);
    config["routes"][0]["green"]["weight"] = json!(60);
    write_json(&dir.path().join("etc"), "proxy.yaml", &config);
    kill(Pid::from_raw(proxy.pid() as i32), Signal::SIGHUP).expect("SIGHUP the proxy");
    let log = wait_until(READY, "the reload", || {
        let log = proxy.log();
        std::future::ready(log.contains("SIGHUP: routes reloaded").then_some(log))
    })
    .await;
    let split = json!({ "blue": 4000, "green": 6000 });
    assert_eq!(weights(&admin, "web").await, split, "{log}");
    let saved = read_json(&state);
    assert_eq!(saved["routes"]["web"]["weights"], split, "{saved}");
    assert_eq!(saved["routes"]["web"]["file_weights"], split, "{saved}");
    proxy.kill_hard();
    let mut proxy = start(dir.path(), &path, &admin).await;
    assert_eq!(weights(&admin, "web").await, split, "{}", proxy.log());
    proxy.terminate(READY).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_state_file_starts_from_its_backup_or_stops_the_start_naming_it() {
    let dir = temp_dir();
    let blue = SampleApp::start(dir.path(), "blue", "blue-0", &[]).await;
    let green = SampleApp::start(dir.path(), "green", "green-0", &[]).await;
    let (config, path, state) = config_with_state(dir.path(), &blue, &green);
    let admin = admin_of(&config);
    let mut proxy = start(dir.path(), &path, &admin).await;
    let (status, body) = admin
        .put(
            "/routes/web/weights",
            &json!({ "blue": "25%", "green": "75%" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    proxy.kill_hard();

    // The file damaged (a truncation), its backup intact: the start takes the backup, says so.
    std::fs::write(&state, "{\"version\": 1, \"rou").unwrap();
    let mut proxy = start(dir.path(), &path, &admin).await;
    let shifted = json!({ "blue": 2500, "green": 7500 });
    assert_eq!(weights(&admin, "web").await, shifted, "{}", proxy.log());
    let log = proxy.log();
    assert!(log.contains("started from its backup"), "{log}");
    proxy.kill_hard();

    // Both damaged: no start, and the error names the file and what to do.
    std::fs::write(&state, "not json").unwrap();
    let mut backup = state.as_os_str().to_owned();
    backup.push(".bak");
    std::fs::write(&backup, "").unwrap();
    let path_arg = path.to_str().unwrap();
    let refused = run_to_end(["proxy", path_arg], Duration::from_secs(60)).await;
    assert_eq!(refused.code, Some(1), "{refused:?}");
    let named = format!("state file {} is corrupt", state.display());
    assert!(refused.stderr.contains(&named), "{refused:?}");
    assert!(refused.stderr.contains("remove both"), "{refused:?}");
    // The backup's own state, with its cause (trial 28: "missing or corrupt too").
    let backup_said =
        "weights.json.bak is corrupt too (EOF while parsing a value at line 1 column 0)";
    assert!(refused.stderr.contains(backup_said), "{refused:?}");
    // `crossfade check` says the same before a restart.
    let checked = run_to_end(["check", path_arg], Duration::from_secs(60)).await;
    assert_eq!(checked.code, Some(1), "{checked:?}");
    assert!(checked.stderr.contains(&named), "{checked:?}");
    assert!(checked.stderr.contains(backup_said), "{checked:?}");
    std::fs::remove_file(&backup).unwrap();
    let refused = run_to_end(["proxy", path_arg], Duration::from_secs(60)).await;
    assert!(
        refused.stderr.contains("weights.json.bak is missing, so"),
        "{refused:?}"
    );
}

/// Trial 39 (user39): a state file and a backup damaged alike (both truncated to nothing, as a
/// full disk leaves them) made the refusal end in a dangling `; the state file`: the file's own
/// cause was left out as already said, since the backup's words held the same text. The
/// refusal now names the state file's cause itself, at start and in `crossfade check`.
#[tokio::test]
async fn a_state_file_damaged_like_its_backup_is_refused_naming_its_own_cause() {
    let dir = temp_dir();
    let unused: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let mut config = proxy_config(&[unused], &[]);
    config["state_file"] = json!("weights.json");
    let path = write_json(dir.path(), "proxy.yaml", &config);
    let state = dir.path().join("weights.json");
    std::fs::write(&state, "").unwrap();
    std::fs::write(dir.path().join("weights.json.bak"), "").unwrap();
    let cause = "EOF while parsing a value at line 1 column 0";
    let said = format!("start from the config file's weights); the state file: {cause}");
    let path_arg = path.to_str().unwrap();
    for command in ["proxy", "check"] {
        let refused = run_to_end([command, path_arg], Duration::from_secs(60)).await;
        assert_eq!(refused.code, Some(1), "{command}: {refused:?}");
        assert!(refused.stderr.contains(&said), "{command}: {refused:?}");
        assert!(
            !refused.stderr.trim_end().ends_with("the state file"),
            "{refused:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_route_the_config_no_longer_has_is_ignored_with_a_warning() {
    let dir = temp_dir();
    let blue = SampleApp::start(dir.path(), "blue", "blue-0", &[]).await;
    let green = SampleApp::start(dir.path(), "green", "green-0", &[]).await;
    let (mut config, path, state) = config_with_state(dir.path(), &blue, &green);
    let mut api = config["routes"][0].clone();
    api["name"] = json!("api");
    api["path_prefix"] = json!("/api");
    let web = config["routes"][0].clone();
    config["routes"] = json!([web.clone(), api]);
    write_json(&dir.path().join("etc"), "proxy.yaml", &config);
    let admin = admin_of(&config);
    let mut proxy = start(dir.path(), &path, &admin).await;
    for route in ["web", "api"] {
        let uri = format!("/routes/{route}/weights");
        let (status, body) = admin
            .put(&uri, &json!({ "blue": "10%", "green": "90%" }))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    proxy.kill_hard();

    config["routes"] = json!([web]);
    write_json(&dir.path().join("etc"), "proxy.yaml", &config);
    let mut proxy = start(dir.path(), &path, &admin).await;
    assert_eq!(
        weights(&admin, "web").await,
        json!({ "blue": 1000, "green": 9000 })
    );
    assert_eq!(weights(&admin, "api").await, Value::Null);
    let log = proxy.log();
    let warning = log
        .lines()
        .find(|l| l.contains("route api: saved weights ignored"))
        .unwrap_or_else(|| panic!("no warning for api:\n{log}"));
    assert!(
        warning.contains("WARN") && warning.contains("not in the config file"),
        "{warning}"
    );
    assert!(warning.contains(&state.display().to_string()), "{warning}");
    // The state file now holds what is in force, without the route.
    let saved = read_json(&state);
    assert_eq!(
        saved["routes"].as_object().map(|r| r.len()),
        Some(1),
        "{saved}"
    );
    proxy.terminate(READY).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_new_process_of_a_binary_upgrade_keeps_saving_the_weights() {
    let dir = temp_dir();
    let blue = SampleApp::start(dir.path(), "blue", "blue-0", &[]).await;
    let green = SampleApp::start(dir.path(), "green", "green-0", &[]).await;
    let (config, path, state) = config_with_state(dir.path(), &blue, &green);
    let admin = admin_of(&config);
    let socket = dir.path().join("upgrade.sock");
    let args = [
        Path::new("proxy").as_os_str(),
        path.as_os_str(),
        Path::new("--upgrade-socket").as_os_str(),
        socket.as_os_str(),
    ];
    let mut old = Crossfade::spawn(dir.path(), "old.log", args);
    old.wait_ready(&admin, READY).await;
    wait_until(READY, "the upgrade socket", || {
        std::future::ready(socket.exists().then_some(()))
    })
    .await;
    let (status, body) = admin
        .put(
            "/routes/web/weights",
            &json!({ "blue": "0%", "green": "100%" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // The new process takes the routes over, and the state file's lock with them: it starts
    // while the old process holds the lock, and holds it once the old one is gone.
    let mut new = Crossfade::spawn(dir.path(), "new.log", args);
    old.wait_exit(Duration::from_secs(60)).await;
    assert_second_proxy_refused(dir.path(), &config, &state, new.pid()).await;
    // From then on it saves the weights.
    let (status, body) = admin
        .put(
            "/routes/web/weights",
            &json!({ "blue": "30%", "green": "70%" }),
        )
        .await;
    assert_eq!(status, 200, "{body}; new process log:\n{}", new.log());
    let split = json!({ "blue": 3000, "green": 7000 });
    assert_eq!(
        read_json(&state)["routes"]["web"]["weights"],
        split,
        "{}",
        new.log()
    );

    // A crash of the new process, then a plain start: its weights.
    new.kill_hard();
    let mut proxy = start(dir.path(), &path, &admin).await;
    assert_eq!(weights(&admin, "web").await, split, "{}", proxy.log());
    proxy.terminate(READY).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_proxy_on_the_same_state_file_is_refused_naming_the_file_and_its_holder() {
    let dir = temp_dir();
    let blue = SampleApp::start(dir.path(), "blue", "blue-0", &[]).await;
    let green = SampleApp::start(dir.path(), "green", "green-0", &[]).await;
    let (config, path, state) = config_with_state(dir.path(), &blue, &green);
    let admin = admin_of(&config);
    let mut proxy = start(dir.path(), &path, &admin).await;
    let (status, body) = admin
        .put(
            "/routes/web/weights",
            &json!({ "blue": "0%", "green": "100%" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let saved = std::fs::read(&state).unwrap();
    assert_second_proxy_refused(dir.path(), &config, &state, proxy.pid()).await;
    // It saved nothing, and the first one serves on.
    assert_eq!(std::fs::read(&state).unwrap(), saved);
    assert_eq!(
        weights(&admin, "web").await,
        json!({ "blue": 0, "green": 10000 })
    );
    // Once the first one is gone (however: here a crash), the file is free again.
    proxy.kill_hard();
    let mut proxy = start(dir.path(), &path, &admin).await;
    proxy.terminate(READY).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_that_fails_changes_nothing_and_a_failed_backup_alone_is_only_logged() {
    let dir = temp_dir();
    let blue = SampleApp::start(dir.path(), "blue", "blue-0", &[]).await;
    let green = SampleApp::start(dir.path(), "green", "green-0", &[]).await;
    let (config, path, state) = config_with_state(dir.path(), &blue, &green);
    let admin = admin_of(&config);
    let mut proxy = start(dir.path(), &path, &admin).await;
    let put = |blue: &str, green: &str| {
        let body = json!({ "blue": blue, "green": green });
        async move { admin.put("/routes/web/weights", &body).await }
    };
    let (status, body) = put("0%", "100%").await;
    assert_eq!(status, 200, "{body}");
    let backup = state.with_file_name("weights.json.bak");
    let before = (
        std::fs::read(&state).unwrap(),
        std::fs::read(&backup).unwrap(),
    );

    // Tests run as root, so permissions would not stop the write: a directory where the save
    // writes its temporary file does.
    let temp = state.with_file_name(".weights.json.tmp");
    std::fs::create_dir(&temp).unwrap();
    let (status, body) = put("30%", "70%").await;
    assert_eq!(status, 500, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("weights not changed") && error.contains(&state.display().to_string()),
        "{body}"
    );
    // Nothing changed: the weights served, the file, its backup.
    let unchanged = json!({ "blue": 0, "green": 10000 });
    assert_eq!(weights(&admin, "web").await, unchanged);
    let after = (
        std::fs::read(&state).unwrap(),
        std::fs::read(&backup).unwrap(),
    );
    assert!(after == before, "the state file or its backup changed");
    std::fs::remove_dir(&temp).unwrap();

    // The backup alone cannot be written: the file holds the change, so the change is made
    // (answered 200, served) and the backup's failure logged, rather than refused while a
    // restart would restore it.
    let backup_temp = state.with_file_name(".weights.json.bak.tmp");
    std::fs::create_dir(&backup_temp).unwrap();
    let (status, body) = put("30%", "70%").await;
    assert_eq!(status, 200, "{body}; log:\n{}", proxy.log());
    let split = json!({ "blue": 3000, "green": 7000 });
    assert_eq!(weights(&admin, "web").await, split);
    assert_eq!(read_json(&state)["routes"]["web"]["weights"], split);
    assert_eq!(
        std::fs::read(&backup).unwrap(),
        before.1,
        "the backup is one change behind"
    );
    let log = proxy.log();
    assert!(
        log.lines().any(|l| l.contains("ERROR")
            && l.contains(&format!("but not its backup {}", backup.display()))),
        "{log}"
    );
    // A restart serves what the last 200 said.
    proxy.kill_hard();
    std::fs::remove_dir(&backup_temp).unwrap();
    let mut proxy = start(dir.path(), &path, &admin).await;
    assert_eq!(weights(&admin, "web").await, split, "{}", proxy.log());
    proxy.terminate(READY).await;
}
