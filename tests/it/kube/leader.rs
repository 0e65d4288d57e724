//! Two `crossfade controller --kube` processes elect a leader on a Lease: only the leader acts
//! (every Event and the rollout come from it); when it is killed, the other takes over after the
//! lease duration and resumes the rollout from status, adopting the same preview.

use std::time::Duration;

use crossfade_controller::kube::crd::Phase;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use serde_json::json;

use super::cli::spawn_controller;
use super::cluster::Cluster;
use super::emulator::Emulator;
use super::shift::WAIT;
use crate::support::{wait_until, Crossfade};

fn controller(dir: &std::path::Path, kubeconfig: &std::path::Path, identity: &str) -> Crossfade {
    let extra = ["--identity", identity, "--lease-duration", "3s"];
    spawn_controller(dir, &format!("{identity}.log"), kubeconfig, &extra)
}

async fn holder(client: &kube::Client) -> Option<String> {
    let leases: Api<Lease> = Api::default_namespaced(client.clone());
    let lease = leases
        .get_opt("crossfade-controller")
        .await
        .expect("get lease")?;
    lease.spec?.holder_identity
}

/// The reporting instance of every Event about the TrafficShift.
async fn reporters(client: &kube::Client) -> Vec<String> {
    let api: Api<Event> = Api::default_namespaced(client.clone());
    let list = api.list(&ListParams::default()).await.expect("list events");
    list.items
        .iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("TrafficShift"))
        .map(|e| e.reporting_instance.clone().unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn of_two_controllers_only_the_leader_acts_and_the_other_takes_over_when_it_dies() {
    let Some(c) = Cluster::with_target().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = c.kubeconfig(dir.path());
    let log = c.status_log();

    let mut a = controller(dir.path(), &kubeconfig, "ctl-a");
    wait_until(WAIT, "ctl-a holds the lease", || async {
        (holder(&c.client).await.as_deref() == Some("ctl-a")).then_some(())
    })
    .await;
    let mut b = controller(dir.path(), &kubeconfig, "ctl-b");

    c.create_shift(json!({ "steps": [{ "weight": 10, "hold": "1s" }, { "weight": 50, "hold": "60s" }, { "weight": 100, "hold": "300ms" }],
        "drainTimeout": "300ms", "analysis": { "minRequests": 1, "interval": "500ms", "onInconclusive": "Pause", "maxInconclusive": 100 } }))
        .await;
    c.status_until("step 1 at 10%", |s| {
        s.weights.as_ref().is_some_and(|w| w.preview.bp() == 1000)
    })
    .await;
    let preview = c.deploys.get("web-green").await.expect("preview");
    let by_a = reporters(&c.client).await;
    assert!(!by_a.is_empty());
    assert!(
        by_a.iter().all(|r| r == "ctl-a"),
        "only the leader acts: {by_a:?}"
    );
    assert_eq!(holder(&c.client).await.as_deref(), Some("ctl-a"));

    a.kill_hard();
    wait_until(WAIT, "ctl-b holds the lease", || async {
        (holder(&c.client).await.as_deref() == Some("ctl-b")).then_some(())
    })
    .await;
    // ctl-b resumes from status: the same preview, and it reports its own Events.
    wait_until(WAIT, "an Event from ctl-b", || async {
        reporters(&c.client)
            .await
            .iter()
            .any(|r| r == "ctl-b")
            .then_some(())
    })
    .await;
    let after = c
        .deploys
        .get("web-green")
        .await
        .expect("preview still there");
    assert_eq!(after.metadata.uid, preview.metadata.uid, "no second green");
    let weights = log.preview_weights();
    assert!(
        weights.windows(2).all(|w| w[0] <= w[1]),
        "traffic never went back to blue: {weights:?}"
    );
    let status = c.status().await;
    assert!(
        !matches!(
            status.phase,
            Some(Phase::RollingBack | Phase::RolledBack | Phase::Aborted)
        ),
        "{status:?}"
    );
    let exit = b.terminate(Duration::from_secs(15)).await;
    assert!(exit.success(), "{exit:?}\n{}", b.log());
    // On SIGTERM the leader releases the Lease.
    assert_eq!(holder(&c.client).await, None, "{}", b.log());
}

#[tokio::test]
async fn a_leader_cut_off_from_the_api_stops_acting_before_its_lease_can_be_taken_over() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use crossfade_controller::kube::leader::{run_elected, Election};

    let Some(emu) = Emulator::start() else { return };
    let client = emu.client();
    let acting = Arc::new(AtomicBool::new(false));
    let stopped_at = Arc::new(std::sync::Mutex::new(None));
    struct Acting(
        Arc<AtomicBool>,
        Arc<std::sync::Mutex<Option<tokio::time::Instant>>>,
    );
    impl Drop for Acting {
        fn drop(&mut self) {
            self.0.store(false, Ordering::SeqCst);
            *self.1.lock().unwrap() = Some(tokio::time::Instant::now());
        }
    }
    let election = Election {
        namespace: "default".into(),
        name: "crossfade-controller".into(),
        identity: "cut-off".into(),
        duration: Duration::from_secs(6),
    };
    let (work_acting, work_stopped) = (acting.clone(), stopped_at.clone());
    let task = tokio::spawn(run_elected(
        client.clone(),
        election,
        move || {
            let guard = Acting(work_acting.clone(), work_stopped.clone());
            async move {
                guard.0.store(true, Ordering::SeqCst);
                std::future::pending::<()>().await;
                drop(guard);
            }
        },
        std::future::pending(),
    ));
    wait_until(WAIT, "the work runs as leader", || async {
        acting.load(Ordering::SeqCst).then_some(())
    })
    .await;
    drop(client);
    let cut = tokio::time::Instant::now();
    drop(emu); // the API server is gone: no renewal can succeed from now on
    wait_until(WAIT, "the work is dropped", || async {
        (!acting.load(Ordering::SeqCst)).then_some(())
    })
    .await;
    let stopped = stopped_at.lock().unwrap().expect("stopped");
    // Every successful renewal started before the cut; a follower may take over no earlier than
    // `leaseDurationSeconds` (6 s) after the last one. The leader stops 2/3 of that (4 s) after
    // the start of its last successful renewal, so before 6 s after the cut.
    assert!(
        stopped < cut + Duration::from_secs(6),
        "stopped {:?} after the API went away",
        stopped - cut
    );
    task.abort();
}
