//! Bad input: a spec with many mistakes; relative paths taken from the spec file's directory; and a
//! green whose command does not exist.

use std::ffi::OsStr;
use std::time::Duration;

use serde_json::json;

use crate::rollout::wait_terminal;
use crate::support::{run_to_end, temp_dir, Admin, App, Crossfade, Load, LoadConfig, Spec};

/// A spec breaking seven rules, and the field path each problem must name.
fn broken_spec() -> (Spec, [&'static str; 7]) {
    let mut spec = Spec::new()
        .blue(App::version("v1").set("instances", json!(0)))
        .green(App::version("v2").set("args", json!(["sample-app", "--version", "v2"])));
    spec.json["route"]["path_prefix"] = json!("api");
    spec.json["rollout"]["steps"] = json!([50, 20, 120]);
    spec.json["rollout"]["analysis"]["max_error_rate"] = json!(1.5);
    spec.json["rollout"]["analysis"]["min_requests"] = json!(0);
    let paths = [
        "route.path_prefix",
        "blue.instances",
        "green.args",
        "rollout.steps[1]",
        "rollout.steps[2]",
        "rollout.analysis.max_error_rate",
        "rollout.analysis.min_requests",
    ];
    (spec, paths)
}

#[tokio::test]
async fn check_and_run_list_every_problem_of_a_spec_with_its_field_path() {
    let dir = temp_dir();
    let (spec, paths) = broken_spec();
    let file = spec.write(dir.path(), "spec.yaml");

    for command in ["check", "run"] {
        let out = run_to_end(
            [command.as_ref(), file.as_os_str()],
            Duration::from_secs(20),
        )
        .await;
        assert!(
            matches!(out.code, Some(c) if c != 0),
            "{command} exit code {:?}",
            out.code
        );
        for path in paths {
            let line = format!("{path}: ");
            assert!(
                out.stderr.contains(&line),
                "{command} names {path}:\n{}",
                out.stderr
            );
        }
    }
    let listening = tokio::net::TcpStream::connect(spec.listen()).await;
    assert!(
        listening.is_err(),
        "run started nothing for an invalid spec"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relative_paths_are_resolved_from_the_spec_files_directory() {
    let dir = temp_dir();
    std::fs::create_dir(dir.path().join("work")).unwrap();
    let spec = Spec::new()
        .blue(App::version("v1").set("workdir", json!("work")))
        .state_file(std::path::Path::new("state/run.json"));
    std::fs::create_dir(dir.path().join("state")).unwrap();
    let file = spec.write(dir.path(), "spec.yaml");
    let out = run_to_end(
        [OsStr::new("check"), file.as_os_str()],
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    // The test's working directory is not the spec's: the state file lands next to the spec.
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &file);
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    let state = dir.path().join("state/run.json");
    crate::support::wait_until(Duration::from_secs(10), "the state file", || async {
        state.exists().then_some(())
    })
    .await;
    assert!(!std::path::Path::new("state/run.json").exists());
    run.terminate(Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn green_whose_command_does_not_exist_is_rolled_back_while_blue_keeps_serving() {
    let dir = temp_dir();
    let missing = dir.path().join("no-such-program");
    let green = App::version("v2")
        .set("name", json!("payments-v2"))
        .set("command", json!(missing));
    let spec = Spec::new().green(green);
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    let load = Load::start(LoadConfig::new(spec.listen()));

    let rollout = wait_terminal(&admin, Duration::from_secs(20)).await;
    load.wait_requests(100, Duration::from_secs(10)).await;
    let report = load.stop().await;

    assert_eq!(rollout["phase"], "RolledBack", "{rollout:#}");
    let message = rollout["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("payments-v2"),
        "the message names the workload: {message}"
    );
    assert_eq!(report.errors(), 0, "{report:?}");
    assert_eq!(
        report.ok_from("v1"),
        report.total(),
        "blue serves: {report:?}"
    );
    run.terminate(Duration::from_secs(15)).await;
}
