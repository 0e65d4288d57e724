//! Relative file paths in a `crossfade proxy` config follow the config file, not the working
//! directory (trial 11, L8): a config that `crossfade check` accepts in `/etc/crossfade` starts
//! the same under systemd, whose working directory is `/`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

use crate::support::spec::write_json;
use crate::support::{
    proxy_config, run_to_end_in, temp_dir, wait_until, Admin, Crossfade, SampleApp,
};

/// `dir/etc/proxy.yaml` naming `tls/tls.crt`, `tls/tls.key` and `logs/access.log`, relative, with
/// the pair written under `dir/etc/tls` (unless `missing`); and `dir/elsewhere`, an empty
/// directory to start from. Returns the config, its path, the CA's path and `elsewhere`.
fn layout(
    dir: &Path,
    backend: std::net::SocketAddr,
    missing: bool,
) -> (Value, PathBuf, PathBuf, PathBuf) {
    let etc = dir.join("etc");
    let elsewhere = dir.join("elsewhere");
    for sub in [etc.join("tls"), etc.join("logs"), elsewhere.clone()] {
        std::fs::create_dir_all(&sub).unwrap();
    }
    let (ca, chain, key) = crate::clients::certificates("paths");
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca).unwrap();
    if !missing {
        std::fs::write(etc.join("tls/tls.crt"), chain).unwrap();
        std::fs::write(etc.join("tls/tls.key"), key).unwrap();
    }
    let mut config = proxy_config(&[backend], &[]);
    config["tls"] = json!({ "cert": "tls/tls.crt", "key": "tls/tls.key", "watch_interval": "0s" });
    config["access_log"] = json!("logs/access.log");
    let path = write_json(&etc, "proxy.yaml", &config);
    (config, path, ca_path, elsewhere)
}

/// `curl --cacert CA https://localhost:PORT/`: the HTTP status, or `None` when it failed.
fn curl_https(ca: &Path, listen: &str) -> Option<String> {
    let port = listen.rsplit(':').next().unwrap();
    let output = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(ca)
        .arg("--resolve")
        .arg(format!("localhost:{port}:127.0.0.1"))
        .arg(format!("https://localhost:{port}/"))
        .output()
        .expect("run curl");
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relative_tls_and_access_log_paths_follow_the_config_file_from_another_directory() {
    let dir = temp_dir();
    let blue = SampleApp::start(dir.path(), "blue", "blue-0", &[]).await;
    let (config, path, ca, elsewhere) = layout(dir.path(), blue.addr, false);

    // `check` from a directory holding neither the pair nor `logs/`: accepted.
    let args = [Path::new("check").as_os_str(), path.as_os_str()];
    let checked = run_to_end_in(Some(&elsewhere), args, &[], Duration::from_secs(60)).await;
    assert_eq!(checked.code, Some(0), "{checked:?}");

    let admin = Admin::new(config["admin"].as_str().unwrap().parse().unwrap());
    let args = [
        Path::new("proxy").as_os_str(),
        path.as_os_str(),
        Path::new("--workers").as_os_str(),
        Path::new("2").as_os_str(),
    ];
    let mut proxy = Crossfade::spawn_in(&elsewhere, dir.path(), "proxy.log", args);
    proxy.wait_ready(&admin, Duration::from_secs(20)).await;
    let listen = config["listen"].as_str().unwrap();
    assert_eq!(
        curl_https(&ca, listen).as_deref(),
        Some("200"),
        "{}",
        proxy.log()
    );
    let access = dir.path().join("etc/logs/access.log");
    wait_until(Duration::from_secs(20), "the access log line", || {
        let text = std::fs::read_to_string(&access).unwrap_or_default();
        std::future::ready(text.contains("\"status\":200").then_some(()))
    })
    .await;
    assert!(!elsewhere.join("logs").exists());

    // A SIGHUP reads the same file the same way: nothing reported as changed, TLS still served.
    kill(Pid::from_raw(proxy.pid() as i32), Signal::SIGHUP).expect("SIGHUP the proxy");
    let log = wait_until(Duration::from_secs(20), "the reload", || {
        let log = proxy.log();
        std::future::ready(log.contains("SIGHUP: routes reloaded").then_some(log))
    })
    .await;
    assert!(!log.contains("changed settings not applied"), "{log}");
    assert_eq!(curl_https(&ca, listen).as_deref(), Some("200"), "{log}");
    proxy.terminate(Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_relative_tls_file_is_named_with_the_absolute_path_tried() {
    let dir = temp_dir();
    // No backend is ever reached: the start stops at the files.
    let backend = crate::support::free_addr();
    let (_, path, _, elsewhere) = layout(dir.path(), backend, true);
    let tried = dir.path().join("etc/tls/tls.crt");
    let expected = format!("tls.cert: cannot read {}: ", tried.display());
    let args = [Path::new("check").as_os_str(), path.as_os_str()];
    let checked = run_to_end_in(Some(&elsewhere), args, &[], Duration::from_secs(60)).await;
    assert_eq!(checked.code, Some(1), "{checked:?}");
    assert!(checked.stderr.contains(&expected), "{checked:?}");
    let key = format!(
        "tls.key: cannot read {}",
        dir.path().join("etc/tls/tls.key").display()
    );
    assert!(checked.stderr.contains(&key), "{checked:?}");

    let args = [Path::new("proxy").as_os_str(), path.as_os_str()];
    let started = run_to_end_in(Some(&elsewhere), args, &[], Duration::from_secs(60)).await;
    assert_eq!(started.code, Some(1), "{started:?}");
    assert!(started.stderr.contains(&expected), "{started:?}");
}

/// Runs `crossfade check CONFIG` and `crossfade proxy CONFIG [extra]` from `cwd` and requires
/// both to refuse with `expected` in their standard error.
async fn both_refuse(cwd: &Path, path: &Path, extra: &[&str], expected: &str) {
    for command in ["check", "proxy"] {
        let mut args = vec![Path::new(command).as_os_str(), path.as_os_str()];
        if command == "proxy" {
            args.extend(extra.iter().map(|a| Path::new(*a).as_os_str()));
        }
        let out = run_to_end_in(Some(cwd), args, &[], Duration::from_secs(60)).await;
        assert_eq!(out.code, Some(1), "{command}: {out:?}");
        assert!(
            out.stderr.contains(expected),
            "{command} says {expected:?}: {out:?}"
        );
    }
}

/// Trial 29: `access_log: proxy.yaml` (or the TLS key's file) passed `check` and the start, and
/// every request appended its JSON line to the config, so the next SIGHUP and the next start
/// could not parse it; `state_file` naming the access log was refused as a corrupt state file.
/// A file the proxy writes (the access log, the state file, its backup) that is the config file
/// or another file the config names is refused naming the field, and every file is left as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_the_proxy_writes_that_is_another_file_it_names_is_refused_and_left_as_it_was() {
    let dir = temp_dir();
    let backend = crate::support::free_addr();
    let (config, path, _, elsewhere) = layout(dir.path(), backend, false);
    let etc = dir.path().join("etc");
    let key = std::fs::read(etc.join("tls/tls.key")).unwrap();
    let cases = [
        (
            json!({ "access_log": "proxy.yaml" }),
            "access_log",
            "proxy.yaml",
            "the proxy config file",
        ),
        (
            json!({ "access_log": "../etc/tls/tls.key" }),
            "access_log",
            "../etc/tls/tls.key",
            "tls.key",
        ),
        (
            json!({ "access_log": "w.json", "state_file": "w.json" }),
            "access_log",
            "w.json",
            "state_file",
        ),
        (
            json!({ "access_log": "w.json.bak", "state_file": "w.json" }),
            "access_log",
            "w.json.bak",
            "state_file's backup",
        ),
        (
            json!({ "state_file": "tls/tls.crt" }),
            "state_file",
            "tls/tls.crt",
            "tls.cert",
        ),
        // User37: the file each save writes and renames over the state file; the log's
        // lines went into the state file until the next save.
        (
            json!({ "access_log": ".w.json.tmp", "state_file": "w.json" }),
            "access_log",
            ".w.json.tmp",
            "state_file's temporary file",
        ),
        (
            json!({ "access_log": ".w.json.bak.tmp", "state_file": "w.json" }),
            "access_log",
            ".w.json.bak.tmp",
            "state_file's backup's temporary file",
        ),
    ];
    for (keys, field, named, other) in cases {
        let mut config = config.clone();
        for (key, value) in keys.as_object().unwrap() {
            config[key] = value.clone();
        }
        write_json(&etc, "proxy.yaml", &config);
        let text = std::fs::read_to_string(&path).unwrap();
        let expected = format!("{field}: {} is also {other}", etc.join(named).display());
        both_refuse(&elsewhere, &path, &[], &expected).await;
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            text,
            "the config is unchanged"
        );
        assert_eq!(std::fs::read(etc.join("tls/tls.key")).unwrap(), key);
        assert!(
            !etc.join("w.json").exists(),
            "no state file or log was made"
        );
    }
}

/// Trial 29: `--pid-file proxy.yaml` replaced the config with the process ID (and the exit removed
/// it); `--pid-file /dev/null` would replace the device for every program. A path that is a file
/// the config names (the config itself, the access log) is refused naming both; one holding
/// anything but a process ID, or no regular file, is refused; each is left as it was. A previous
/// run's pid file is replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pid_file_path_holding_another_file_is_refused_and_a_stale_pid_file_is_replaced() {
    let dir = temp_dir();
    let blue = SampleApp::start(dir.path(), "blue", "blue-0", &[]).await;
    let (config, path, _, elsewhere) = layout(dir.path(), blue.addr, false);
    let text = std::fs::read_to_string(&path).unwrap();
    let shown = path.display().to_string();
    let log = dir.path().join("etc/logs/access.log").display().to_string();
    let not_pid = dir.path().join("notes.txt");
    std::fs::write(&not_pid, "not a pid\n").unwrap();
    let not_pid = not_pid.display().to_string();
    let clash = " the proxy writes its process ID into it, which would destroy what it holds; \
                 give --pid-file a file of its own";
    let refused = [
        (
            &shown,
            format!("--pid-file: {shown} is also the proxy config file:{clash}"),
        ),
        (
            &log,
            format!("--pid-file: {log} is also access_log:{clash}"),
        ),
        (
            &not_pid,
            format!("--pid-file {not_pid}: a file of 10 bytes is there, not a process ID"),
        ),
        (
            &"/dev/null".to_owned(),
            "--pid-file /dev/null: a device is there, not a process ID".to_owned(),
        ),
    ];
    for (pid_file, expected) in &refused {
        let args = ["proxy", &shown, "--pid-file", pid_file.as_str()];
        let out = run_to_end_in(Some(&elsewhere), args, &[], Duration::from_secs(60)).await;
        // The flag's value is wrong by itself: a usage error (user44b, session 44).
        assert_eq!(out.code, Some(2), "{out:?}");
        assert!(
            out.stderr.contains(expected.as_str()),
            "says {expected:?}: {out:?}"
        );
    }
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);

    let stale = dir.path().join("proxy.pid");
    std::fs::write(&stale, "4242\n").unwrap();
    let args = [Path::new("proxy").as_os_str(), path.as_os_str()];
    let args = args
        .into_iter()
        .chain([Path::new("--pid-file").as_os_str(), stale.as_os_str()]);
    let mut proxy = Crossfade::spawn_in(&elsewhere, dir.path(), "proxy.log", args);
    let admin = Admin::new(config["admin"].as_str().unwrap().parse().unwrap());
    proxy.wait_ready(&admin, Duration::from_secs(20)).await;
    let own = format!("{}\n", proxy.pid());
    wait_until(
        Duration::from_secs(20),
        "the proxy's pid in the file",
        || {
            let held = std::fs::read_to_string(&stale).unwrap_or_default();
            std::future::ready((held == own).then_some(()))
        },
    )
    .await;
    proxy.terminate(Duration::from_secs(20)).await;
}

/// Trial 29: a SIGHUP that found a broken TLS renewal (a certificate of another pair, its key
/// unchanged) logged it twice in the same millisecond ("TLS certificate not reloaded, the previous
/// one stays" from the reload and "SIGHUP: TLS certificate not reloaded, the old one stays"),
/// where the README says once. One line per SIGHUP, the old pair serving, counted once; in the
/// words the polling's reload logs, "the previous one stays" (user40: the SIGHUP said "the old
/// one stays").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_tls_renewal_on_sighup_is_logged_once_and_the_old_pair_serves() {
    let dir = temp_dir();
    let blue = SampleApp::start(dir.path(), "blue", "blue-0", &[]).await;
    let (config, path, ca, elsewhere) = layout(dir.path(), blue.addr, false);
    let args = [Path::new("proxy").as_os_str(), path.as_os_str()];
    let mut proxy = Crossfade::spawn_in(&elsewhere, dir.path(), "proxy.log", args);
    let admin = Admin::new(config["admin"].as_str().unwrap().parse().unwrap());
    proxy.wait_ready(&admin, Duration::from_secs(20)).await;
    let (_, other, _) = crate::clients::certificates("other");
    std::fs::write(dir.path().join("etc/tls/tls.crt"), other).unwrap();
    kill(Pid::from_raw(proxy.pid() as i32), Signal::SIGHUP).expect("SIGHUP the proxy");
    let log = wait_until(Duration::from_secs(20), "the reload", || {
        let log = proxy.log();
        std::future::ready(log.contains("SIGHUP: routes reloaded").then_some(log))
    })
    .await;
    let lines = log.matches("TLS certificate not reloaded").count();
    assert_eq!(lines, 1, "{log}");
    let words = "SIGHUP: TLS certificate not reloaded, the previous one stays: ";
    assert!(log.contains(words), "{words:?} in\n{log}");
    let listen = config["listen"].as_str().unwrap();
    assert_eq!(curl_https(&ca, listen).as_deref(), Some("200"), "{log}");
    let (_, metrics) = admin.get_text("/metrics").await.expect("GET /metrics");
    let counted = "crossfade_tls_reloads_total{result=\"error\"} 1";
    assert!(metrics.contains(counted), "{counted} in\n{metrics}");
    proxy.terminate(Duration::from_secs(20)).await;
}

/// `curl --cacert CA https://localhost:PORT/` with `headers`: the status and the response head.
fn curl_https_head(ca: &Path, listen: &str, headers: &[String]) -> (String, String) {
    let port = listen.rsplit(':').next().unwrap();
    let mut command = Command::new("curl");
    command.args([
        "-sS",
        "-o",
        "/dev/null",
        "-D",
        "-",
        "-w",
        "%{http_code}",
        "--cacert",
    ]);
    command
        .arg(ca)
        .arg("--resolve")
        .arg(format!("localhost:{port}:127.0.0.1"));
    for header in headers {
        command.arg("-H").arg(header);
    }
    let output = command
        .arg(format!("https://localhost:{port}/"))
        .output()
        .expect("run curl");
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    let status = out.lines().last().unwrap_or_default().to_owned();
    (status, out)
}

/// A run spec takes the proxy settings an operator running `crossfade run` in front of a service
/// needs (until session 30 only `crossfade proxy` had them, and the spec refused the keys):
/// `tls` and `access_log` with paths relative to the spec's directory whatever the working
/// directory, `request_id` and `limits`; a SIGHUP reopens the access log (logrotate) and reloads
/// the TLS pair. And the proxy's rule for its own files holds: an `access_log` that is the spec
/// itself is refused, naming the field, before anything starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_spec_serves_tls_an_access_log_request_ids_and_limits_from_its_own_directory() {
    let dir = temp_dir();
    let etc = dir.path().join("etc");
    let elsewhere = dir.path().join("elsewhere");
    for sub in [etc.join("tls"), etc.join("logs"), elsewhere.clone()] {
        std::fs::create_dir_all(&sub).unwrap();
    }
    let (ca, chain, key) = crate::clients::certificates("run");
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca).unwrap();
    std::fs::write(etc.join("tls/tls.crt"), chain).unwrap();
    std::fs::write(etc.join("tls/tls.key"), key).unwrap();
    let mut spec = crate::support::Spec::new();
    spec.json["tls"] =
        json!({ "cert": "tls/tls.crt", "key": "tls/tls.key", "watch_interval": "0s" });
    spec.json["access_log"] = json!("logs/access.log");
    spec.json["request_id"] = json!({});
    spec.json["limits"] = json!({ "max_header_bytes": 8192 });
    let path = spec.write(&etc, "spec.yaml");

    let args = [Path::new("check").as_os_str(), path.as_os_str()];
    let checked = run_to_end_in(Some(&elsewhere), args, &[], Duration::from_secs(60)).await;
    assert_eq!(checked.code, Some(0), "{checked:?}");

    let admin = Admin::new(spec.admin());
    let args = [Path::new("run").as_os_str(), path.as_os_str()];
    let mut run = Crossfade::spawn_in(&elsewhere, dir.path(), "run.log", args);
    run.wait_ready(&admin, Duration::from_secs(30)).await;
    let listen = spec.listen().to_string();
    let (status, head) = curl_https_head(&ca_path, &listen, &[]);
    assert_eq!(status, "200", "{head}\n{}", run.log());
    let id = head
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .unwrap_or_else(|| panic!("a request id: {head}"))
        .trim()
        .to_owned();
    let access = etc.join("logs/access.log");
    wait_until(Duration::from_secs(20), "the access log line", || {
        let text = std::fs::read_to_string(&access).unwrap_or_default();
        std::future::ready(text.contains(&id).then_some(()))
    })
    .await;
    assert!(!elsewhere.join("logs").exists());
    let big = format!("x-big: {}", "a".repeat(10_000));
    let (status, head) = curl_https_head(&ca_path, &listen, &[big]);
    assert_eq!(status, "431", "limits.max_header_bytes: {head}");

    // logrotate: the file moved away, then SIGHUP; the next line goes to a new file.
    std::fs::rename(&access, etc.join("logs/access.log.1")).unwrap();
    kill(Pid::from_raw(run.pid() as i32), Signal::SIGHUP).expect("SIGHUP the run");
    wait_until(Duration::from_secs(20), "the reopen", || {
        let log = run.log();
        std::future::ready(
            log.contains("SIGHUP: access log file to be reopened")
                .then_some(()),
        )
    })
    .await;
    wait_until(Duration::from_secs(20), "a line in the new file", || {
        let (status, _) = curl_https_head(&ca_path, &listen, &[]);
        let text = std::fs::read_to_string(&access).unwrap_or_default();
        std::future::ready((status == "200" && text.contains("\"status\":200")).then_some(()))
    })
    .await;
    run.terminate(Duration::from_secs(30)).await;

    // The access log may not be the spec (nor the state file, nor a TLS file).
    spec.json["access_log"] = json!("spec.yaml");
    let path = spec.write(&etc, "spec.yaml");
    for command in ["check", "run"] {
        let args = [Path::new(command).as_os_str(), path.as_os_str()];
        let refused = run_to_end_in(Some(&elsewhere), args, &[], Duration::from_secs(60)).await;
        assert_eq!(refused.code, Some(1), "{command}: {refused:?}");
        assert!(
            refused.stderr.contains("access_log"),
            "{command}: {refused:?}"
        );
    }
    let kept = std::fs::read_to_string(&path).unwrap();
    assert!(
        kept.contains("access_log"),
        "the spec is left as it was: {kept}"
    );
}

/// A file that `crossfade run` has beside the proxy's own is no file its proxy writes either: an
/// `access_log` or `state_file` naming a workload's program (blue's or green's `command`, also
/// through a symbolic link) or the state file's child journal (`<state_file>.children`) is
/// refused by `check` and `run`, naming the field and the file it is, and the program is left as
/// it was. Before, `check` passed them and `run` appended a JSON line per request to the program
/// (the next start of an instance ran what was written), and a `state_file` naming the program
/// was refused as a corrupt state file, with the advice to remove it.
#[tokio::test]
async fn an_access_log_or_state_file_that_is_a_workloads_program_or_the_child_journal_is_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = temp_dir();
    let etc = dir.path().join("etc");
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    let program = format!(
        "#!/bin/sh\nexec {} sample-app --port \"$1\" --version \"$2\"\n",
        crate::support::BIN
    );
    for name in ["blue.sh", "green.sh"] {
        std::fs::write(etc.join(name), &program).unwrap();
        std::fs::set_permissions(etc.join(name), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::os::unix::fs::symlink("green.sh", etc.join("green-link")).unwrap();
    let workload =
        |command: &str, version: &str| json!({ "command": command, "args": ["{port}", version] });
    let cases = [
        ("access_log", "blue.sh", "blue.command"),
        ("access_log", "green.sh", "green.command"),
        (
            "access_log",
            "state.json.children",
            "state_file's child journal",
        ),
        ("state_file", "blue.sh", "blue.command"),
    ];
    for (field, file, is) in cases {
        let mut spec = crate::support::Spec::new();
        spec.json["blue"] = workload("./blue.sh", "v1");
        spec.json["green"] = workload("./green-link", "v2");
        spec.json["state_file"] = json!("state.json");
        spec.json[field] = json!(file);
        let path = spec.write(&etc, "spec.yaml");
        let commands: &[&str] = if file == "blue.sh" && field == "access_log" {
            &["check", "run"]
        } else {
            &["check"]
        };
        for command in commands {
            let args = [Path::new(command).as_os_str(), path.as_os_str()];
            let refused = run_to_end_in(Some(&elsewhere), args, &[], Duration::from_secs(60)).await;
            assert_eq!(
                refused.code,
                Some(1),
                "{command} {field}: {file}: {refused:?}"
            );
            let said = format!("{field}: ");
            assert!(
                refused.stderr.contains(&said) && refused.stderr.contains(&format!("is also {is}")),
                "{command} {field}: {file}: {refused:?}"
            );
        }
    }
    for name in ["blue.sh", "green.sh"] {
        assert_eq!(
            std::fs::read_to_string(etc.join(name)).unwrap(),
            program,
            "{name} left as it was"
        );
    }
    assert!(!etc.join("state.json").exists(), "nothing was started");
}

/// `run --exit-after-rollout` prints its outcome line on standard output for a job to read; a
/// spec's `access_log: stdout` put a JSON line per request around it (72 lines before it in a
/// 4-second rollout under light load, and more from the drain), so `--json`'s object could not be
/// read as stdout's one line. The start is refused naming `access_log`, with nothing started; a
/// plain `run` still takes it.
///
/// User38: the refusal exited 1, a failure while running, though the spec alone is valid and the
/// flag is what rules it out: a usage error, 2, by the README's exit-code rule. So is `run
/// --upgrade-socket` with a spec that has no `state_file` (it exited 1 too).
#[tokio::test]
async fn run_flags_the_spec_rules_out_are_refused_as_usage_errors() {
    let dir = temp_dir();
    let mut spec = crate::support::Spec::new();
    spec.json["access_log"] = json!("stdout");
    let path = spec.write(dir.path(), "spec.yaml");
    let args = [
        Path::new("run").as_os_str(),
        Path::new("--exit-after-rollout").as_os_str(),
        Path::new("--json").as_os_str(),
        path.as_os_str(),
    ];
    let refused = run_to_end_in(None, args, &[], Duration::from_secs(60)).await;
    assert_eq!(refused.code, Some(2), "{refused:?}");
    assert!(
        refused
            .stderr
            .contains("access_log: stdout cannot be used with --exit-after-rollout"),
        "{refused:?}"
    );
    assert!(refused.stdout.is_empty(), "{refused:?}");
    let args = [Path::new("check").as_os_str(), path.as_os_str()];
    let checked = run_to_end_in(None, args, &[], Duration::from_secs(60)).await;
    assert_eq!(checked.code, Some(0), "{checked:?}");

    let stateless = crate::support::Spec::new().write(dir.path(), "stateless.yaml");
    let socket = dir.path().join("upgrade.sock");
    let args = [
        Path::new("run").as_os_str(),
        Path::new("--upgrade-socket").as_os_str(),
        socket.as_os_str(),
        stateless.as_os_str(),
    ];
    let refused = run_to_end_in(None, args, &[], Duration::from_secs(60)).await;
    assert_eq!(refused.code, Some(2), "{refused:?}");
    assert!(
        refused.stderr.contains("--upgrade-socket: the spec ")
            && refused.stderr.contains("has no state_file"),
        "{refused:?}"
    );
    assert!(!socket.exists(), "nothing listens on the upgrade socket");
}

/// User37: the same clash in a `crossfade run` spec was told in a proxy config's words: the spec
/// as `the proxy config file`, and a `state_file` that is the TLS certificate as what `the proxy
/// replaces ... with the weights`, where `run` keeps its rollouts there. `check` and `run` now name
/// the spec file and what `crossfade run` writes, and start nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_whose_written_files_clash_is_refused_in_the_specs_own_words() {
    let dir = temp_dir();
    let (_, chain, key) = crate::clients::certificates("spec-files");
    std::fs::write(dir.path().join("tls.crt"), chain).unwrap();
    std::fs::write(dir.path().join("tls.key"), key).unwrap();
    let cases = [
        (
            json!({ "access_log": "spec.yaml" }),
            format!(
                "access_log: {} is also the spec file",
                dir.path().join("spec.yaml").display()
            ),
            "the proxy appends a JSON line per request to it",
        ),
        (
            json!({ "state_file": "tls.crt", "tls": { "cert": "tls.crt", "key": "tls.key" } }),
            format!(
                "state_file: {} is also tls.cert",
                dir.path().join("tls.crt").display()
            ),
            "crossfade run replaces it with the rollout's state at every transition",
        ),
        // The file the child journal is written into before its rename (user37).
        (
            json!({ "access_log": ".state.json.children.tmp", "state_file": "state.json" }),
            format!(
                "access_log: {} is also state_file's child journal's temporary file",
                dir.path().join(".state.json.children.tmp").display()
            ),
            "the proxy appends a JSON line per request to it",
        ),
    ];
    for (keys, clash, writes) in cases {
        let mut spec = crate::support::Spec::new();
        for (key, value) in keys.as_object().unwrap() {
            spec.json[key] = value.clone();
        }
        let file = spec.write(dir.path(), "spec.yaml");
        let text = std::fs::read_to_string(&file).unwrap();
        for command in ["check", "run"] {
            let args = [Path::new(command).as_os_str(), file.as_os_str()];
            let out = run_to_end_in(Some(dir.path()), args, &[], Duration::from_secs(30)).await;
            assert_eq!(out.code, Some(1), "{command}: {out:?}");
            let said = format!("{clash}: {writes}, which would destroy what it holds");
            assert!(
                out.stderr.contains(&said),
                "{command} says {said:?}: {out:?}"
            );
        }
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            text,
            "the spec is kept"
        );
        let listening = tokio::net::TcpStream::connect(spec.listen()).await;
        assert!(listening.is_err(), "run started nothing");
    }
}
