//! What a cluster would do around the controller in the TrafficShift tests: a kubelet stand-in that
//! marks Deployments available, counters for analysis, and a record of every status shown.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crossfade_controller::kube::crd::{TrafficShift, TrafficShiftStatus};
use crossfade_controller::traffic::MetricsSource;
use crossfade_proxy::weight::Slot;
use crossfade_proxy::BackendSnapshot;
use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::watcher;
use serde_json::json;

/// Plays the kubelet and the Deployment controller for the named Deployments: every 100 ms, one
/// whose status has not observed its generation gets a status with all replicas updated and
/// available. Deployments not named never become available. Stops when dropped.
pub struct Kubelet {
    task: tokio::task::JoinHandle<()>,
}

impl Kubelet {
    pub fn start(client: kube::Client, names: &[&str]) -> Kubelet {
        let names: BTreeSet<String> = names.iter().map(|n| n.to_string()).collect();
        let api: Api<Deployment> = Api::default_namespaced(client);
        let task = tokio::spawn(async move {
            loop {
                if let Ok(list) = api.list(&ListParams::default()).await {
                    for d in list.items {
                        if names.contains(d.metadata.name.as_deref().unwrap_or_default()) {
                            mark_available(&api, &d).await;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Kubelet { task }
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Writes an available status for `d`'s current generation, unless it already shows one.
pub async fn mark_available(api: &Api<Deployment>, d: &Deployment) {
    let generation = d.metadata.generation.unwrap_or(1);
    let observed = d.status.as_ref().and_then(|s| s.observed_generation);
    if observed == Some(generation) {
        return;
    }
    let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = json!({ "status": {
        "observedGeneration": generation, "replicas": replicas, "updatedReplicas": replicas,
        "readyReplicas": replicas, "availableReplicas": replicas,
        "conditions": [{ "type": "Available", "status": "True", "reason": "MinimumReplicasAvailable" }]
    }});
    let name = d.metadata.name.clone().unwrap_or_default();
    let _ = api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
        .await;
}

/// A test stand-in for the proxies' counters (no proxy runs in these tests): each reading adds
/// 100 successful requests to the backend, so every analysis window passes.
#[derive(Default)]
pub struct HealthyTraffic {
    readings: Mutex<u64>,
}

impl MetricsSource for HealthyTraffic {
    fn snapshot(&self, _route: &str, _slot: Slot) -> crossfade_controller::Result<BackendSnapshot> {
        let mut n = self.readings.lock().unwrap_or_else(PoisonError::into_inner);
        *n += 1;
        Ok(BackendSnapshot {
            requests: *n * 100,
            ..BackendSnapshot::default()
        })
    }
}

/// Every status TrafficShift `name` showed, in order, as a watch saw them.
pub struct StatusLog {
    seen: Arc<Mutex<Vec<TrafficShiftStatus>>>,
    task: tokio::task::JoinHandle<()>,
}

impl StatusLog {
    pub fn start(client: kube::Client, name: &str) -> StatusLog {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let into = seen.clone();
        let api: Api<TrafficShift> = Api::default_namespaced(client);
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let name = name.to_owned();
        let task = tokio::spawn(async move {
            let mut events = watcher(api, config).boxed();
            while let Some(event) = events.next().await {
                if let Ok(watcher::Event::Apply(shift) | watcher::Event::InitApply(shift)) = event {
                    if shift.metadata.name.as_deref() != Some(&name) {
                        continue; // the emulator ignores fieldSelector
                    }
                    if let Some(status) = shift.status {
                        let mut seen = into.lock().unwrap_or_else(PoisonError::into_inner);
                        if seen.last() != Some(&status) {
                            seen.push(status);
                        }
                    }
                }
            }
        });
        StatusLog { seen, task }
    }

    pub fn all(&self) -> Vec<TrafficShiftStatus> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until the watch has seen a status for which `check` holds (it may lag a read).
    pub async fn until(&self, what: &str, check: impl Fn(&TrafficShiftStatus) -> bool) {
        crate::support::wait_until(Duration::from_secs(30), what, || async {
            self.all().iter().any(&check).then_some(())
        })
        .await
    }

    /// The preview weights shown, in basis points, consecutive repeats folded.
    pub fn preview_weights(&self) -> Vec<u32> {
        let mut out: Vec<u32> = Vec::new();
        for s in self.all() {
            if let Some(w) = s.weights {
                if out.last() != Some(&w.preview.bp()) {
                    out.push(w.preview.bp());
                }
            }
        }
        out
    }
}

impl Drop for StatusLog {
    fn drop(&mut self) {
        self.task.abort();
    }
}
