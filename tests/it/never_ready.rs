//! A green whose health check never passes gets no traffic and is rolled back.

use std::time::Duration;

use serde_json::json;

use crate::rollout::wait_terminal;
use crate::support::admin::Metrics;
use crate::support::{temp_dir, wait_until, Admin, App, Crossfade, Load, LoadConfig, Spec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn green_that_never_becomes_ready_gets_no_weight_and_is_rolled_back() {
    let dir = temp_dir();
    let green = App::version("v2")
        .flags(["--unready-for", "1h"])
        .set("name", json!("checkout-v2"))
        .set(
            "readiness",
            json!({ "interval": "100ms", "deadline": "2s" }),
        );
    let spec = Spec::new().green(green);
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    let load = Load::start(LoadConfig::new(spec.listen()));

    let rollout = wait_terminal(&admin, Duration::from_secs(30)).await;
    load.wait_requests(50, Duration::from_secs(10)).await;
    let report = load.stop().await;

    assert!(
        matches!(rollout["phase"].as_str(), Some("RolledBack" | "Aborted")),
        "{rollout:#}"
    );
    let message = rollout["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("checkout-v2"),
        "the message names the workload: {message}"
    );
    assert_eq!(report.errors(), 0, "{report:?}");
    assert_eq!(
        report.ok_from("v1"),
        report.total(),
        "blue answered everything: {report:?}"
    );
    let metrics = admin.metrics().await;
    let green = metrics.sum(
        "crossfade_requests_total",
        &[("route", "web"), ("backend", "green")],
    );
    assert_eq!(green, 0.0, "no request reached green");
    let weight = metrics.get(
        "crossfade_backend_weight_basis_points",
        &[("backend", "green")],
    );
    assert_eq!(weight, Some(0.0));
    let events = admin.rollout().await["events"].clone();
    let weighted = events
        .as_array()
        .into_iter()
        .flatten()
        .any(|e| e["reason"] == "WeightsApplied");
    assert!(!weighted, "green's weight was never applied: {events:#}");
    run.terminate(Duration::from_secs(15)).await;
}

/// `/metrics` once it shows route `web`'s rollout in `phase`.
async fn shown(admin: &Admin, phase: &str) -> Metrics {
    wait_until(Duration::from_secs(20), phase, || async {
        let metrics = admin.metrics().await;
        let now = [("route", "web"), ("phase", phase)];
        (metrics.get("crossfade_rollout_phase", &now) == Some(1.0)).then_some(metrics)
    })
    .await
}

/// Session 40 (a new user's trial): `crossfade_rollout_step` said 1 while green provisioned, and
/// still 1 after an abort there, though no step had started; the dashboard's Step panel showed
/// step 1. It is 0 until a step starts, as a TrafficShift's status shows no step then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_aborted_while_green_provisions_shows_step_0_on_metrics() {
    let dir = temp_dir();
    let green = App::version("v2").flags(["--unready-for", "1h"]).set(
        "readiness",
        json!({ "interval": "100ms", "deadline": "1h" }),
    );
    let mut spec = Spec::new().green(green);
    spec.json["rollout"]["progress_deadline"] = json!("1h");
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, Duration::from_secs(30)).await;
    let step = |metrics: &Metrics| metrics.get("crossfade_rollout_step", &[("route", "web")]);
    let steps = |metrics: &Metrics| metrics.get("crossfade_rollout_steps", &[("route", "web")]);

    let provisioning = shown(&admin, "Provisioning").await;
    assert_eq!(step(&provisioning), Some(0.0), "while provisioning");
    assert_eq!(steps(&provisioning), Some(3.0));
    let (status, answer) = admin.post("/rollout/abort").await;
    assert_eq!(status, 200, "{answer}");
    let aborted = shown(&admin, "Aborted").await;
    assert_eq!(step(&aborted), Some(0.0), "after the abort");
    assert_eq!(steps(&aborted), Some(3.0));
    run.terminate(Duration::from_secs(15)).await;
}

/// SIGTERM to `crossfade run` while blue is still starting (not ready yet) stops blue's process
/// too: the start is cancelled as a green's provisioning is, instead of leaving an orphan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_before_blue_is_ready_stops_blue() {
    use crate::support::{pid_alive, wait_gone};
    let dir = temp_dir();
    let blue = App::version("v1")
        .flags(["--unready-for", "1h"])
        .set("stop_grace", json!("2s"))
        .set(
            "readiness",
            json!({ "interval": "100ms", "deadline": "5m" }),
        );
    let spec = Spec::new().blue(blue);
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    let parent = run.pid();
    let pids = wait_until(
        Duration::from_secs(15),
        "blue's process to start",
        move || async move {
            let children = crate::support::child::children_of(parent);
            (!children.is_empty()).then_some(children)
        },
    )
    .await;
    assert!(pids.iter().all(|&p| pid_alive(p)));
    run.terminate(Duration::from_secs(15)).await;
    // Within blue's stop grace (2 s) and a margin for a loaded machine.
    wait_gone(&pids, Duration::from_secs(5)).await;
    let log = run.log();
    assert!(
        log.contains("stopped by a signal before"),
        "the log says why it stopped:\n{log}"
    );
}

/// Trial 12 M4: when `progress_deadline` ends provisioning before the readiness deadline does,
/// the reason says why green was not ready, by its last probe, as the readiness deadline's
/// message does: `status 503` for a green that answers unready, `Connection refused` for a static
/// endpoint nobody listens on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_deadline_in_provisioning_names_the_last_probe() {
    let (_held, nobody) = crate::support::refused_addr();
    let unready = App::version("v2").flags(["--unready-for", "1h"]);
    let unlistened = App {
        json: json!({ "endpoints": [nobody.to_string()] }),
    };
    // The rollback's note says what happens to green: a process is stopped, static endpoints
    // (which Crossfade did not start) are left running (trial 30: it said "stopping green").
    let cases = [
        (
            unready,
            "last probe: status 503".to_owned(),
            "; stopping green (",
        ),
        (
            unlistened,
            format!("({nobody}: last probe: connect failed: Connection refused"),
            "; leaving green running (static endpoints) (",
        ),
    ];
    for (green, expected, retired) in cases {
        let dir = temp_dir();
        // The readiness deadline is far away: the progress deadline ends provisioning.
        let green = green.set(
            "readiness",
            json!({ "interval": "100ms", "deadline": "1h" }),
        );
        let mut spec = Spec::new().green(green);
        spec.json["rollout"]["progress_deadline"] = json!("8s");
        let admin = Admin::new(spec.admin());
        let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
        run.wait_ready(&admin, Duration::from_secs(30)).await;
        let rollout = wait_terminal(&admin, Duration::from_secs(60)).await;
        assert_eq!(rollout["phase"], "RolledBack", "{rollout:#}");
        let message = rollout["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("green not ready within progress_deadline 8s (")
                && message.contains(&expected),
            "{expected}: {message}"
        );
        let events = admin.rollout().await["events"].clone();
        let note = (events.as_array().into_iter().flatten())
            .find(|e| e["reason"] == "RolledBack")
            .map(|e| e["message"].as_str().unwrap_or_default().to_owned());
        assert!(
            note.as_deref().is_some_and(|n| n.contains(retired)),
            "{retired}: {events:#}"
        );
        run.terminate(Duration::from_secs(15)).await;
    }
}
