//! A TrafficShift's `analysis.checks` and `rollout.gates` reach the rollout the controller runs,
//! against the emulator and a local HTTP server standing in for Prometheus, a KPI endpoint and the
//! gates' webhooks; bad values (and `analysis.shadow`, refused in Kubernetes mode) are refused with
//! the field named in status and in a Warning Event.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

use crossfade_controller::kube::crd::{ConditionStatus, Phase};
use crossfade_controller::kube::shift::PROGRESSING;
use crossfade_controller::kube::store::ShiftRecord;
use serde_json::{json, Value};

use super::cluster::Cluster;
use super::shift::{events_with, WAIT};
use crate::support::wait_until;
use crate::support::webhook::{Call, Reply, WebhookServer};

/// A local server: `GET /api/v1/query` answers a Prometheus one-sample vector holding the value it
/// was started with, `GET /kpi/...` answers `{"data": {"rate": value}}`, `POST /gate/ok` 200 and
/// `POST /gate/switch` the status a test sets (403 `not yet` until then). Records every request.
struct Hooks {
    server: WebhookServer,
    switch: Arc<AtomicU16>,
}

impl Hooks {
    async fn start(value: f64) -> Hooks {
        let switch = Arc::new(AtomicU16::new(403));
        let status = Arc::clone(&switch);
        let server = WebhookServer::start(move |path| match path {
            "/api/v1/query" => {
                let result = json!([{ "metric": {}, "value": [1, value.to_string()] }]);
                let data = json!({ "resultType": "vector", "result": result });
                Reply::new(
                    200,
                    json!({ "status": "success", "data": data }).to_string(),
                )
            }
            p if p.starts_with("/kpi/") => {
                Reply::new(200, json!({ "data": { "rate": value } }).to_string())
            }
            "/gate/ok" => Reply::new(200, ""),
            _ => Reply::new(status.load(Ordering::SeqCst), "not yet"),
        })
        .await;
        Hooks { server, switch }
    }

    fn url(&self, path: &str) -> String {
        self.server.url(path)
    }

    /// The requests whose path and query start with `prefix`.
    fn calls(&self, prefix: &str) -> Vec<Call> {
        self.server.calls_to(prefix)
    }

    /// Waits until at least `n` requests start with `prefix`.
    async fn until_calls(&self, prefix: &str, n: usize) -> Vec<Call> {
        let what = format!("{n} requests to {prefix}");
        wait_until(WAIT, &what, || async {
            let calls = self.calls(prefix);
            (calls.len() >= n).then_some(calls)
        })
        .await
    }
}

/// The checks recorded in the rollout's verdicts (status `rolloutState`), flattened.
async fn recorded_checks(c: &Cluster) -> Vec<Value> {
    let shift = c.shifts.get("web").await.expect("get trafficshift web");
    let record = ShiftRecord::from_status(&shift).expect("the rollout's record in status");
    record
        .rollout
        .verdicts
        .iter()
        .flat_map(|v| v.verdict.checks.iter())
        .map(|c| serde_json::to_value(c).expect("a check result serialises"))
        .collect()
}

/// A PromQL check out of range fails the first analysis of a TrafficShift: green is rolled back
/// at its first step, the verdict names the check, and the query was sent with the templates
/// filled for the cluster (route `default/web`, preview Deployment `web-green`).
#[tokio::test]
async fn a_failing_promql_check_in_a_trafficshift_rolls_green_back() {
    let Some(c) = Cluster::with_target().await else {
        return;
    };
    let prometheus = Hooks::start(0.3).await;
    let query = r#"sum(rate(errors{route="{{ route }}",deployment="{{ preview_version }}"}[{{ interval }}]))"#;
    c.create_shift(json!({
        "steps": [{ "weight": 10, "hold": "60s" }, { "weight": 100, "hold": "300ms" }],
        "drainTimeout": "300ms",
        "analysis": { "minRequests": 5, "interval": "300ms", "maxInconclusive": 1000,
            "checks": [{ "name": "error-ratio", "max": 0.05,
                "prometheus": { "address": prometheus.url(""), "query": query } }] }
    }))
    .await;
    let _ctl = c.controller();
    let done = c
        .status_until("RolledBack", |s| s.phase == Some(Phase::RolledBack))
        .await;
    let verdict = done.last_verdict.expect("a last verdict");
    assert!(
        verdict.summary.contains("error-ratio") && verdict.summary.contains("> max 0.05"),
        "the verdict names the check and its bound: {verdict:?}"
    );
    let checks = recorded_checks(&c).await;
    let failed = checks
        .iter()
        .find(|c| c["ok"] == false)
        .expect("a failed check");
    assert_eq!(failed["value"], 0.3, "{failed}");
    let sent = failed["query"].as_str().unwrap_or_default();
    assert_eq!(
        sent, r#"sum(rate(errors{route="default/web",deployment="web-green"}[1s]))"#,
        "{failed}"
    );
    assert!(!prometheus.calls("/api/v1/query?query=").is_empty());
    events_with(&c.client, &["Warning AnalysisFailed", "Warning RolledBack"]).await;
}

/// A web check in range and three gates: `BeforeStep` asked before each step with the rollout's
/// context, `BeforePromotion` refusing (403) halts the rollout with a Warning `GateRejected` and
/// is asked again every `retry` until it approves, then the rollout completes and `AfterCompletion`
/// is told.
#[tokio::test]
async fn a_trafficshifts_gates_are_asked_and_a_refusing_one_halts_it_until_it_approves() {
    let Some(c) = Cluster::with_target().await else {
        return;
    };
    let hooks = Hooks::start(1.0).await;
    c.create_shift(json!({
        "steps": [{ "weight": 50, "hold": "300ms" }, { "weight": 100, "hold": "300ms" }],
        "drainTimeout": "300ms",
        "analysis": { "minRequests": 5, "interval": "300ms",
            "checks": [{ "name": "kpi", "min": 0.99,
                "web": { "url": hooks.url("/kpi/{{ preview_version }}"), "jsonPath": "$.data.rate" } }] },
        "gates": [
            { "name": "steps", "at": "BeforeStep", "url": hooks.url("/gate/ok") },
            { "name": "approve", "at": "BeforePromotion", "url": hooks.url("/gate/switch"), "retry": "300ms" },
            { "name": "done", "at": "AfterCompletion", "url": hooks.url("/gate/ok") }
        ]
    }))
    .await;
    let _ctl = c.controller();
    hooks.until_calls("/gate/switch", 2).await;
    let halted = c
        .status_until("halted before promotion", |s| {
            s.message
                .as_deref()
                .is_some_and(|m| m.contains("halted before promotion"))
        })
        .await;
    assert_eq!(halted.phase, Some(Phase::Progressing), "{halted:?}");
    assert!(
        halted
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("gate approve refused: status 403"),
        "{halted:?}"
    );
    events_with(&c.client, &["Warning GateRejected"]).await;
    hooks.switch.store(200, Ordering::SeqCst);
    c.status_until("Completed", |s| s.phase == Some(Phase::Completed))
        .await;

    let steps: Vec<Value> = hooks
        .calls("/gate/ok")
        .into_iter()
        .map(|(_, b)| b)
        .collect();
    let before: Vec<&Value> = steps.iter().filter(|b| b["gate"] == "steps").collect();
    assert_eq!(
        before.len(),
        2,
        "asked before each of the 2 steps: {steps:?}"
    );
    for (i, body) in before.iter().enumerate() {
        assert_eq!(body["at"], "before_step");
        assert_eq!(body["step"], i + 1);
        assert_eq!(body["route"], "default/web");
        assert_eq!(body["preview_version"], "web-green");
        assert_eq!(body["active_version"], "web");
    }
    assert_eq!(before[0]["preview_weight_bp"], 5000);
    let done = hooks
        .until_calls("/gate/ok", 3)
        .await
        .into_iter()
        .find(|(_, b)| b["gate"] == "done")
        .expect("after_completion told");
    assert_eq!(done.1["at"], "after_completion");
    assert!(
        !hooks.calls("/kpi/web-green").is_empty(),
        "the web check's URL, filled"
    );
    let checks = recorded_checks(&c).await;
    assert!(
        checks
            .iter()
            .any(|c| c["name"] == "kpi" && c["ok"] == true && c["value"] == 1.0),
        "{checks:?}"
    );
}

/// Bad checks, gates and shadow mirror settings are refused before anything is created:
/// `Progressing=False` reason `InvalidSpec` with every problem by its field, and a Warning Event
/// `InvalidSpec`.
#[tokio::test]
async fn bad_checks_gates_and_mirror_settings_in_a_trafficshift_are_refused_by_field() {
    let Some(c) = Cluster::with_target().await else {
        return;
    };
    c.create_shift(json!({
        "steps": [{ "weight": 0 }, { "weight": 100 }],
        "analysis": {
            "checks": [{ "name": "c", "max": 1,
                "prometheus": { "address": "http://prometheus:9090", "query": "up{ns=\"{{ namespace }}\"}" } }],
            "shadow": { "maxMismatchRate": "1%", "mirror": { "maxInFlight": 0 } }
        },
        "gates": [{ "name": "g", "at": "BeforeStep", "url": "http://hooks", "retry": "0s" }]
    }))
    .await;
    let _ctl = c.controller();
    let refused = c
        .status_until("InvalidSpec", |s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == PROGRESSING && c.reason == "InvalidSpec")
        })
        .await;
    let condition = refused
        .conditions
        .iter()
        .find(|c| c.type_ == PROGRESSING)
        .expect("Progressing");
    assert_eq!(condition.status, ConditionStatus::False);
    for wanted in [
        "spec.rollout.analysis.checks[0].prometheus.query: unknown variable {{ namespace }}",
        "spec.rollout.gates[0].retry:",
        "spec.rollout.analysis.shadow.mirror.maxInFlight: 0 is outside 1 to 10000",
    ] {
        assert!(
            condition.message.contains(wanted),
            "{wanted:?} not in {}",
            condition.message
        );
    }
    events_with(&c.client, &["Warning InvalidSpec"]).await;
    assert_eq!(refused.weights, None, "no weight published: {refused:?}");
    assert!(
        c.deploys.get_opt("web-green").await.expect("get").is_none(),
        "no preview Deployment for a refused spec"
    );
}
