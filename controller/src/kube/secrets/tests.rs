//! Against the mock API: each read is one `GET` of the named Secret in the TrafficShift's
//! namespace (never a list), and each failure names the Secret without a value.

use serde_json::json;

use super::*;
use crate::kube::mock::{self, status};

const PATH: &str = "/api/v1/namespaces/shop/secrets/kpi-token";

fn kpi_token() -> ValueFrom {
    ValueFrom::SecretKeyRef(KeyRef {
        name: "kpi-token".into(),
        key: "token".into(),
    })
}

fn secret(data: serde_json::Value) -> serde_json::Value {
    json!({ "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": { "name": "kpi-token", "namespace": "shop" }, "data": data })
}

/// Reads `kpi-token` once while the mock answers the one request it makes with `code` and `body`.
async fn read_answered(code: u16, body: serde_json::Value) -> Result<String, String> {
    read_from(kpi_token(), PATH, code, body).await
}

/// Reads `from` once while the mock answers the one request it makes, a `GET` of `path`, with
/// `code` and `body`.
async fn read_from(
    from: ValueFrom,
    path: &str,
    code: u16,
    body: serde_json::Value,
) -> Result<String, String> {
    let (client, mut api) = mock::client();
    let values = ClusterValues::new(client, "shop");
    let answer = async {
        api.expect("GET", path).await.respond(code, body);
    };
    let (read, ()) = tokio::join!(values.read(&from), answer);
    api.assert_quiet(std::time::Duration::from_secs(60)).await;
    read
}

#[tokio::test(start_paused = true)]
async fn a_key_is_read_with_one_get_of_its_secret_as_stored() {
    // "Bearer a1\n", base64 as the API server writes `data`.
    let read = read_answered(200, secret(json!({ "token": "QmVhcmVyIGExCg==" }))).await;
    assert_eq!(read.as_deref(), Ok("Bearer a1\n"));
}

#[tokio::test(start_paused = true)]
async fn a_missing_secret_or_key_or_a_refused_read_names_the_secret() {
    let missing = read_answered(
        404,
        status(404, "NotFound", "secrets \"kpi-token\" not found"),
    );
    assert_eq!(
        missing.await,
        Err("Secret shop/kpi-token does not exist".to_owned())
    );
    let no_key = read_answered(200, secret(json!({ "other": "eA==" }))).await;
    assert_eq!(
        no_key,
        Err("Secret shop/kpi-token has no key \"token\"".to_owned())
    );
    let forbidden = status(
        403,
        "Forbidden",
        "secrets \"kpi-token\" is forbidden: User \"system:serviceaccount:crossfade-system:crossfade-controller\" cannot get resource \"secrets\"",
    );
    let e = read_answered(403, forbidden).await.expect_err("forbidden");
    // Trial 30: the API server's words, not kube's debug dump of the whole Status.
    assert_eq!(
        e,
        "cannot read Secret shop/kpi-token: 403 Forbidden: secrets \"kpi-token\" is forbidden: User \"system:serviceaccount:crossfade-system:crossfade-controller\" cannot get resource \"secrets\" (the controller needs `get` on secrets there)"
    );
    let binary = read_answered(200, secret(json!({ "token": "//4=" }))).await;
    assert_eq!(
        binary,
        Err("Secret shop/kpi-token key \"token\" is not UTF-8 text".to_owned())
    );
}

const TENANT_PATH: &str = "/api/v1/namespaces/shop/configmaps/prom-tenant";

fn prom_tenant() -> ValueFrom {
    ValueFrom::ConfigMapKeyRef(KeyRef {
        name: "prom-tenant".into(),
        key: "tenant".into(),
    })
}

fn config_map(fields: serde_json::Value) -> serde_json::Value {
    let mut object = json!({ "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": { "name": "prom-tenant", "namespace": "shop" } });
    for (field, value) in fields.as_object().expect("a map") {
        object[field] = value.clone();
    }
    object
}

/// Session 43: `configMapKeyRef` is one `GET` of the ConfigMap: `data` first, then `binaryData`.
#[tokio::test(start_paused = true)]
async fn a_config_map_key_is_read_with_one_get_from_data_then_binary_data() {
    let read = |body| read_from(prom_tenant(), TENANT_PATH, 200, body);
    let data = config_map(json!({ "data": { "tenant": "shop-eu\n" } }));
    assert_eq!(read(data).await.as_deref(), Ok("shop-eu\n"));
    // "shop-us", base64 as the API server writes `binaryData`.
    let binary = config_map(json!({ "binaryData": { "tenant": "c2hvcC11cw==" } }));
    assert_eq!(read(binary).await.as_deref(), Ok("shop-us"));
}

#[tokio::test(start_paused = true)]
async fn a_missing_config_map_or_key_or_a_refused_read_names_the_config_map() {
    let read = |code, body| read_from(prom_tenant(), TENANT_PATH, code, body);
    let missing = status(404, "NotFound", "configmaps \"prom-tenant\" not found");
    assert_eq!(
        read(404, missing).await,
        Err("ConfigMap shop/prom-tenant does not exist".to_owned())
    );
    let other = config_map(json!({ "data": { "other": "x" }, "binaryData": { "more": "eA==" } }));
    assert_eq!(
        read(200, other).await,
        Err("ConfigMap shop/prom-tenant has no key \"tenant\"".to_owned())
    );
    let forbidden = status(403, "Forbidden", "configmaps \"prom-tenant\" is forbidden");
    assert_eq!(
        read(403, forbidden).await,
        Err("cannot read ConfigMap shop/prom-tenant: 403 Forbidden: configmaps \"prom-tenant\" is forbidden (the controller needs `get` on configmaps there)".to_owned())
    );
    let binary = config_map(json!({ "binaryData": { "tenant": "//4=" } }));
    assert_eq!(
        read(200, binary).await,
        Err("ConfigMap shop/prom-tenant key \"tenant\" is not UTF-8 text".to_owned())
    );
}

#[tokio::test(start_paused = true)]
async fn files_and_variables_are_not_read_in_kubernetes_mode() {
    let (client, mut api) = mock::client();
    let values = ClusterValues::new(client, "shop");
    for from in [
        ValueFrom::File("/var/run/secrets/kubernetes.io/serviceaccount/token".into()),
        ValueFrom::Env("HOME".into()),
    ] {
        let e = values.read(&from).await.expect_err("refused");
        assert!(
            e.ends_with("cannot be read in Kubernetes mode: only secretKeyRef or configMapKeyRef"),
            "{e}"
        );
    }
    api.assert_quiet(std::time::Duration::from_secs(60)).await;
    assert_eq!(
        values.field("rollout.analysis.checks[1].web.headers_from[0]"),
        "spec.rollout.analysis.checks[1].web.headersFrom[0]"
    );
}
