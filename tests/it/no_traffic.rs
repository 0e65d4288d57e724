//! A rollout without any traffic has nothing to judge: it must never complete.

use std::time::Duration;

use serde_json::json;

use crate::rollout::wait_terminal;
use crate::support::{temp_dir, wait_until, Admin, App, Crossfade, Spec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_without_traffic_rolls_back_as_inconclusive() {
    let dir = temp_dir();
    let spec = Spec::new().green(App::version("v2"));
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, Duration::from_secs(15)).await;

    let rollout = wait_terminal(&admin, Duration::from_secs(30)).await;

    assert_eq!(rollout["phase"], "RolledBack", "{rollout:#}");
    assert_eq!(rollout["step"], 0, "never left the first step: {rollout:#}");
    let reason = rollout["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("inconclusive"), "reason: {reason}");
    let weights = &admin.status().await["routes"][0]["weights"];
    assert_eq!(weights, &json!({ "blue": 10000, "green": 0 }));
    run.terminate(Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_without_traffic_pauses_when_the_policy_says_pause() {
    let dir = temp_dir();
    let mut spec = Spec::new().green(App::version("v2"));
    spec.json["rollout"]["analysis"]["on_inconclusive"] = json!("pause");
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, Duration::from_secs(15)).await;

    let paused = wait_until(Duration::from_secs(30), "the rollout to pause", || async {
        let rollout = admin.rollout().await["rollout"].clone();
        (rollout["phase"] == "Paused").then_some(rollout)
    })
    .await;
    // Paused waits for an operator: a few more holds must change nothing.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = admin.rollout().await["rollout"].clone();

    assert_eq!(paused["pause"], "inconclusive", "{paused:#}");
    assert_eq!(
        (&later["phase"], &later["step"]),
        (&json!("Paused"), &json!(0)),
        "{later:#}"
    );
    let weights = &admin.status().await["routes"][0]["weights"];
    assert_eq!(
        weights,
        &json!({ "blue": 9000, "green": 1000 }),
        "the step's weight holds"
    );
    run.terminate(Duration::from_secs(15)).await;
}
