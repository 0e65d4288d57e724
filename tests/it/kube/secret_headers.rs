//! `headersFrom[].valueFrom.secretKeyRef` of a TrafficShift's gates and checks, against the
//! emulator and the shared test server (`support::webhook`) admitting only the right
//! `Authorization`: the Secret's value is read at each call (a rotated one is sent at the next
//! call), a missing key or Secret fails the call naming the field, and the value is in no status
//! and no Event.

use crossfade_controller::kube::crd::{Phase, VerdictOutcome};
use k8s_openapi::api::core::v1::Secret;
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
    let api: Api<Secret> = Api::default_namespaced(client.clone());
    let data = data
        .iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
        .collect();
    let mut secret = Secret {
        data: Some(data),
        ..Secret::default()
    };
    secret.metadata.name = Some(name.to_owned());
    match api.get_opt(name).await.expect("get secret") {
        Some(_) => api.replace(name, &PostParams::default(), &secret).await,
        None => api.create(&PostParams::default(), &secret).await,
    }
    .expect("write secret");
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
