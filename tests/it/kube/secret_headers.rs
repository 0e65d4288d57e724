//! `headersFrom[].valueFrom.secretKeyRef` of a TrafficShift's gates, checks and Prometheus
//! metrics source (session 42), and `configMapKeyRef` (session 43), against the emulator and the
//! shared test server (`support::webhook`) admitting only the right `Authorization`: the Secret's
//! or ConfigMap's value is read at each call (a rotated one is sent at the next call), a missing
//! key or object fails the call naming the field, and the value is in no status and no Event.

use crossfade_controller::kube::crd::{Phase, TrafficShiftStatus, VerdictOutcome};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::ByteString;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

use super::cluster::Cluster;
use super::shift::{events_with, WAIT};
use crate::support::wait_until;
use crate::support::webhook::{Reply, WebhookServer};

/// The token the [`guarded`] server admits.
const NEW: &str = "Bearer new-8f2c9d";

/// A token it refuses (401).
const OLD: &str = "Bearer old-51aa07";

/// A server that answers `POST /gate` 200 and `GET /kpi` `{"data": {"rate": 1}}` only to a
/// request whose `Authorization` is [`NEW`], 401 otherwise; [`WebhookServer::auths`] has every
/// request's `Authorization` (empty when absent) in the order they came.
async fn guarded() -> WebhookServer {
    WebhookServer::start_with_auth(|path, auth| match (auth == NEW, path) {
        (true, "/kpi") => Reply::new(200, json!({ "data": { "rate": 1.0 } }).to_string()),
        (true, _) => Reply::new(200, ""),
        (false, _) => Reply::new(401, "unauthorized"),
    })
    .await
}

/// Waits until a request carried `auth`.
async fn until_sent(server: &WebhookServer, auth: &str) {
    let what = format!("a request with {auth:?}");
    wait_until(WAIT, &what, || async {
        server.auths().iter().any(|a| a == auth).then_some(())
    })
    .await
}

/// Creates or replaces Secret `name` in `default` with `data` (what a real API server returns:
/// `data`, never `stringData`).
async fn put_secret(client: &kube::Client, name: &str, data: &[(&str, &str)]) {
    let data = data
        .iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
        .collect();
    let secret = Secret {
        data: Some(data),
        ..Secret::default()
    };
    put(client, name, secret).await;
}

/// Creates or replaces ConfigMap `name` in `default` with `data`.
async fn put_config_map(client: &kube::Client, name: &str, data: &[(&str, &str)]) {
    let data = data
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let config_map = ConfigMap {
        data: Some(data),
        ..ConfigMap::default()
    };
    put(client, name, config_map).await;
}

/// Creates or replaces `object` in `default` under `name`.
async fn put<K>(client: &kube::Client, name: &str, mut object: K)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    object.meta_mut().name = Some(name.to_owned());
    let api: Api<K> = Api::default_namespaced(client.clone());
    match api.get_opt(name).await.expect("get") {
        Some(_) => api.replace(name, &PostParams::default(), &object).await,
        None => api.create(&PostParams::default(), &object).await,
    }
    .expect("write");
}

/// `headersFrom` with `Authorization` from key `key` of Secret `name`.
fn authorization_from(name: &str, key: &str) -> serde_json::Value {
    json!([{ "name": "Authorization",
             "valueFrom": { "secretKeyRef": { "name": name, "key": key } } }])
}

/// The TrafficShift `web` (spec and status) and the notes of every Event, as one text.
async fn everything_written(c: &Cluster) -> String {
    let shift = c.shifts.get("web").await.expect("get trafficshift");
    let events: Api<Event> = Api::default_namespaced(c.client.clone());
    let events = events
        .list(&ListParams::default())
        .await
        .expect("list events");
    let notes: Vec<String> = events.items.into_iter().filter_map(|e| e.note).collect();
    format!(
        "{}\n{}",
        serde_json::to_string(&shift).expect("json"),
        notes.join("\n")
    )
}

/// A `BeforeStep` gate whose `Authorization` is a Secret's key: while the key is missing the gate
/// refuses with the field named and nothing is sent; once the key holds a refused token, that is
/// sent (401, still halted); once the Secret is rotated to the admitted token, the next call
/// sends it and the rollout goes on, its web check sending the same header, to completion. No
/// token is in the TrafficShift or an Event; status keeps the reference only.
#[tokio::test]
async fn a_gate_sends_the_secrets_value_of_the_moment_and_a_missing_key_halts_it_by_field() {
    let Some(c) = Cluster::with_target().await else {
        return;
    };
    let server = guarded().await;
    put_secret(&c.client, "kpi-token", &[("other", "unused")]).await;
    c.create_shift(json!({
        "steps": [{ "weight": 50, "hold": "300ms" }, { "weight": 100, "hold": "300ms" }],
        "drainTimeout": "300ms",
        "analysis": { "minRequests": 5, "interval": "300ms",
            "checks": [{ "name": "kpi", "min": 0.99,
                "web": { "url": server.url("/kpi"), "jsonPath": "$.data.rate",
                         "headersFrom": authorization_from("kpi-token", "token") } }] },
        "gates": [{ "name": "approve", "at": "BeforeStep", "url": server.url("/gate"),
                    "retry": "300ms", "headersFrom": authorization_from("kpi-token", "token") }]
    }))
    .await;
    let _ctl = c.controller();

    let named = "gate approve refused: spec.rollout.gates[0].headersFrom[0]: header \
                 Authorization: Secret default/kpi-token has no key \"token\"";
    let halted = c
        .status_until("halted on the missing key", |s| {
            s.message.as_deref().is_some_and(|m| m.contains(named))
        })
        .await;
    assert_eq!(halted.phase, Some(Phase::Progressing), "{halted:?}");
    events_with(&c.client, &["Warning GateRejected"]).await;
    assert!(server.calls().is_empty(), "nothing sent without it");

    put_secret(&c.client, "kpi-token", &[("token", OLD)]).await;
    until_sent(&server, OLD).await;
    c.status_until("refused with 401", |s| {
        s.message
            .as_deref()
            .is_some_and(|m| m.contains("gate approve refused: status 401"))
    })
    .await;

    put_secret(&c.client, "kpi-token", &[("token", NEW)]).await;
    c.status_until("Completed", |s| s.phase == Some(Phase::Completed))
        .await;
    // The gate is asked before the first step, so until it admits the new token nothing else
    // is sent: the old token before the rotation, only the new one from then on (gate and check).
    let sent = server.auths();
    let first_new = sent
        .iter()
        .position(|a| a == NEW)
        .expect("the new token sent");
    assert!(
        sent[..first_new].iter().all(|a| a == OLD) && sent[first_new..].iter().all(|a| a == NEW),
        "the old token until the rotation, then only the new one: {sent:?}"
    );
    assert!(
        !server.calls_to("/gate").is_empty() && !server.calls_to("/kpi").is_empty(),
        "the gate and the web check were both called: {:?}",
        server.calls()
    );

    let written = everything_written(&c).await;
    for token in ["new-8f2c9d", "old-51aa07"] {
        assert!(!written.contains(token), "{token} written: {written}");
    }
    assert!(
        written.contains(r#""secret_key_ref":{"key":"token","name":"kpi-token"}"#)
            || written.contains(r#""secret_key_ref":{"name":"kpi-token","key":"token"}"#),
        "status.rolloutState keeps the reference: {written}"
    );
}

/// Session 43: a web check whose `Authorization` is a ConfigMap's key (the stand-in server
/// admits one header; a ConfigMap suits a non-secret value such as a tenant ID). While the key is
/// missing each analysis is inconclusive naming the field and the ConfigMap, and nothing is sent;
/// once the key is written, the next analysis sends its value and the rollout completes.
#[tokio::test]
async fn a_check_sends_a_config_maps_value_and_a_missing_key_names_the_config_map() {
    let Some(c) = Cluster::with_target().await else {
        return;
    };
    let server = guarded().await;
    put_config_map(&c.client, "kpi-auth", &[("other", "unused")]).await;
    c.create_shift(json!({
        "steps": [{ "weight": 50, "hold": "300ms" }, { "weight": 100, "hold": "300ms" }],
        "drainTimeout": "300ms",
        "analysis": { "minRequests": 5, "interval": "300ms", "maxInconclusive": 1000,
            "checks": [{ "name": "kpi", "min": 0.99,
                "web": { "url": server.url("/kpi"), "jsonPath": "$.data.rate",
                         "headersFrom": [{ "name": "Authorization", "valueFrom":
                             { "configMapKeyRef": { "name": "kpi-auth", "key": "token" } } }] } }] }
    }))
    .await;
    let _ctl = c.controller();
    let named = "kpi: no value (web: spec.rollout.analysis.checks[0].web.headersFrom[0]: \
                 header Authorization: ConfigMap default/kpi-auth has no key \"token\")";
    let waiting = c
        .status_until("inconclusive on the missing key", |s| {
            s.last_verdict
                .as_ref()
                .is_some_and(|v| v.summary.contains(named))
        })
        .await;
    assert_eq!(waiting.phase, Some(Phase::Progressing), "{waiting:?}");
    assert!(server.calls().is_empty(), "nothing sent without it");

    put_config_map(&c.client, "kpi-auth", &[("token", NEW)]).await;
    until_sent(&server, NEW).await;
    let done = c
        .status_until("Completed", |s| s.phase == Some(Phase::Completed))
        .await;
    assert_eq!(
        done.last_verdict.map(|v| v.outcome),
        Some(VerdictOutcome::Pass)
    );
    let sent = server.auths();
    assert!(
        sent.iter().all(|a| a == NEW),
        "only the ConfigMap's value: {sent:?}"
    );
    let written = everything_written(&c).await;
    assert!(
        written.contains(r#""config_map_key_ref":{"key":"token","name":"kpi-auth"}"#)
            || written.contains(r#""config_map_key_ref":{"name":"kpi-auth","key":"token"}"#),
        "status.rolloutState keeps the reference: {written}"
    );
}

/// A web check whose Secret does not exist has no value: each analysis is inconclusive with the
/// field and the Secret named, and after `maxInconclusive` of them the rollout rolls back as for
/// any unreadable check; the server was never asked.
#[tokio::test]
async fn a_check_whose_secret_is_missing_is_inconclusive_by_field_and_rolls_back() {
    let Some(c) = Cluster::with_target().await else {
        return;
    };
    let server = guarded().await;
    c.create_shift(json!({
        "steps": [{ "weight": 50, "hold": "300ms" }, { "weight": 100, "hold": "300ms" }],
        "drainTimeout": "300ms",
        "analysis": { "minRequests": 5, "interval": "300ms", "maxInconclusive": 2,
            "checks": [{ "name": "kpi", "min": 0.99,
                "web": { "url": server.url("/kpi"), "jsonPath": "$.data.rate",
                         "headersFrom": authorization_from("kpi-token", "token") } }] }
    }))
    .await;
    let _ctl = c.controller();
    let done = c
        .status_until("RolledBack", |s| s.phase == Some(Phase::RolledBack))
        .await;
    let verdict = done.last_verdict.expect("a last verdict");
    assert_eq!(verdict.outcome, VerdictOutcome::Inconclusive, "{verdict:?}");
    let named = "kpi: no value (web: spec.rollout.analysis.checks[0].web.headersFrom[0]: \
                 header Authorization: Secret default/kpi-token does not exist)";
    assert!(verdict.summary.contains(named), "{}", verdict.summary);
    events_with(
        &c.client,
        &["Warning AnalysisInconclusive", "Warning RolledBack"],
    )
    .await;
    assert!(server.calls().is_empty(), "nothing sent without it");
}

/// Green's series of `default/web` on one proxy replica as Prometheus answers them, `requests`
/// of them (no error, all in the (1 ms, 2.5 ms] latency bucket), and blue's with none.
fn prometheus_answer(requests: u64) -> String {
    use crossfade_proxy::histogram::LATENCY_BOUNDS_SECONDS;
    let mut result = Vec::new();
    for (backend, n) in [("green", requests), ("blue", 0)] {
        let series = |name: &str, le: Option<&str>, v: u64| {
            let mut metric = json!({ "__name__": name, "route": "default/web",
                "backend": backend, "instance": "10.0.0.1:9901" });
            if let Some(le) = le {
                metric["le"] = json!(le);
            }
            json!({ "metric": metric, "value": [1_765_000_000.5, v.to_string()] })
        };
        result.push(series("crossfade_dispatched_requests_total", None, n));
        result.push(series("crossfade_backend_errors_total", None, 0));
        result.push(series("crossfade_request_duration_seconds_sum", None, 0));
        let bounds = LATENCY_BOUNDS_SECONDS.iter().map(|b| b.to_string());
        for (i, le) in bounds.chain(["+Inf".to_owned()]).enumerate() {
            let name = "crossfade_request_duration_seconds_bucket";
            result.push(series(name, Some(&le), if i >= 2 { n } else { 0 }));
        }
    }
    json!({ "status": "success", "data": { "resultType": "vector", "result": result } }).to_string()
}

/// A stand-in Prometheus that answers `/api/v1/query` only to [`NEW`] (401 otherwise), green's
/// counters rising by 100 at each query ([`prometheus_answer`]).
async fn guarded_prometheus() -> WebhookServer {
    let queries = std::sync::atomic::AtomicU64::new(0);
    WebhookServer::start_with_auth(move |path, auth| match (auth == NEW, path) {
        (true, "/api/v1/query") => {
            let n = queries.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            Reply::new(200, prometheus_answer(100 * n))
        }
        (true, _) => Reply::new(404, "not found"),
        (false, _) => Reply::new(401, "unauthorized"),
    })
    .await
}

/// TrafficShift `web` in one 100% step whose analysis reads from `prometheus` with the
/// `Authorization` of Secret `prom-token`'s key `token`, then the controllers; waits until it has
/// completed or rolled back: that status, and the controllers' handle.
async fn roll_out_reading(
    c: &Cluster,
    prometheus: &WebhookServer,
) -> (TrafficShiftStatus, tokio::task::JoinHandle<()>) {
    c.create_shift(json!({
        "steps": [{ "weight": 100, "hold": "300ms" }],
        "drainTimeout": "300ms",
        "analysis": { "minRequests": 5, "interval": "300ms", "maxInconclusive": 2,
            "metricsSource": { "prometheus": { "address": prometheus.url(""),
                "headers": { "X-Scope-OrgID": "default" },
                "headersFrom": authorization_from("prom-token", "token") } } }
    }))
    .await;
    let ctl = c.controller();
    let done = c
        .status_until("Completed or RolledBack", |s| {
            matches!(s.phase, Some(Phase::Completed | Phase::RolledBack))
        })
        .await;
    (done, ctl)
}

/// Session 42: `metricsSource.prometheus.headersFrom` of a TrafficShift. A stand-in Prometheus
/// requiring the Secret's token ([`guarded_prometheus`]): the analysis reads through it, so the
/// rollout completes; every query carried the token, which is in no status and no Event.
#[tokio::test]
async fn a_prometheus_metrics_source_sends_the_secrets_token_on_every_query() {
    let Some(c) = Cluster::with_target().await else {
        return;
    };
    let server = guarded_prometheus().await;
    put_secret(&c.client, "prom-token", &[("token", NEW)]).await;
    let (done, _ctl) = roll_out_reading(&c, &server).await;
    assert_eq!(done.phase, Some(Phase::Completed), "{done:?}");
    let verdict = done.last_verdict.clone().expect("a verdict");
    assert_eq!(verdict.outcome, VerdictOutcome::Pass, "{verdict:?}");
    let sent = server.auths();
    assert!(
        sent.len() >= 2 && sent.iter().all(|a| a == NEW),
        "every query carried the token: {sent:?}"
    );
    let calls = server.calls();
    assert!(
        calls
            .iter()
            .all(|(t, _)| t.starts_with("/api/v1/query?query=")),
        "{calls:?}"
    );
    let written = everything_written(&c).await;
    assert!(
        !written.contains("new-8f2c9d"),
        "the token written: {written}"
    );
}

/// Session 42: a metrics source whose Secret does not exist reads nothing: each window is
/// inconclusive naming the field and the Secret, the rollout rolls back, and no query was sent.
#[tokio::test]
async fn a_prometheus_metrics_source_whose_secret_is_missing_reads_nothing_and_names_it() {
    let Some(c) = Cluster::with_target().await else {
        return;
    };
    let server = guarded_prometheus().await;
    let (done, _ctl) = roll_out_reading(&c, &server).await;
    assert_eq!(done.phase, Some(Phase::RolledBack), "{done:?}");
    let verdict = done.last_verdict.expect("a last verdict");
    assert_eq!(verdict.outcome, VerdictOutcome::Inconclusive, "{verdict:?}");
    let named = "spec.rollout.analysis.metricsSource.prometheus.headersFrom[0]: header \
                 Authorization: Secret default/prom-token does not exist";
    assert!(verdict.summary.contains(named), "{}", verdict.summary);
    assert!(server.calls().is_empty(), "nothing sent without it");
}
