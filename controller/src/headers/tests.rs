//! Header values read at each call: files (rotated, trailing line breaks), environment variables,
//! and errors that name the field and the source but never the value.

use std::collections::BTreeMap;

use super::*;
use crate::spec::headers::KeyRef;

fn from(name: &str, value_from: ValueFrom) -> HeaderFrom {
    HeaderFrom {
        name: name.into(),
        value_from,
    }
}

#[tokio::test]
async fn a_file_is_read_at_each_call_without_its_trailing_line_break() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("token");
    std::fs::write(&file, "Bearer one\n").expect("write");
    let plain = BTreeMap::from([("X-Team".to_string(), "shop".to_string())]);
    let list = [from("Authorization", ValueFrom::File(file.clone()))];
    let headers = resolve(&LOCAL, "rollout.gates[0]", &plain, &list)
        .await
        .expect("read");
    assert_eq!(headers["Authorization"], "Bearer one");
    assert_eq!(headers["X-Team"], "shop");

    std::fs::write(&file, "Bearer two\r\n").expect("rotate");
    let headers = resolve(&LOCAL, "rollout.gates[0]", &plain, &list)
        .await
        .expect("read again");
    assert_eq!(headers["Authorization"], "Bearer two", "the rotated value");
}

#[tokio::test]
async fn an_unreadable_source_is_named_with_its_field_and_header() {
    let none = BTreeMap::new();
    let missing = [from(
        "Authorization",
        ValueFrom::File("/nonexistent/crossfade/token".into()),
    )];
    let e = resolve(&LOCAL, "rollout.gates[2]", &none, &missing)
        .await
        .expect_err("no such file");
    assert!(
        e.starts_with("rollout.gates[2].headers_from[0]: header Authorization: file /nonexistent/crossfade/token: "),
        "{e}"
    );

    let unset = [
        from("X-Plain", ValueFrom::Env("PATH".into())),
        from(
            "X-Token",
            ValueFrom::Env("CROSSFADE_TEST_UNSET_VARIABLE_7".into()),
        ),
    ];
    let e = resolve(&LOCAL, "rollout.analysis.checks[0].web", &none, &unset)
        .await
        .expect_err("unset variable");
    assert_eq!(
        e,
        "rollout.analysis.checks[0].web.headers_from[1]: header X-Token: \
         environment variable CROSSFADE_TEST_UNSET_VARIABLE_7 is not set"
    );

    let secret = [from(
        "Authorization",
        ValueFrom::SecretKeyRef(KeyRef {
            name: "kpi-token".into(),
            key: "token".into(),
        }),
    )];
    let e = resolve(&LOCAL, "rollout.gates[0]", &none, &secret)
        .await
        .expect_err("no cluster");
    // Session 43: each kind names itself ("Secrets and ConfigMaps ..." was said of either).
    assert!(
        e.ends_with(": Secrets are read in Kubernetes mode only; use `file` or `env`"),
        "{e}"
    );

    let config_map = [from(
        "X-Scope-OrgID",
        ValueFrom::ConfigMapKeyRef(KeyRef {
            name: "prom-tenant".into(),
            key: "tenant".into(),
        }),
    )];
    let e = resolve(&LOCAL, "rollout.gates[0]", &none, &config_map)
        .await
        .expect_err("no cluster");
    assert_eq!(
        e,
        "rollout.gates[0].headers_from[0]: header X-Scope-OrgID: ConfigMap prom-tenant key \"tenant\": \
         ConfigMaps are read in Kubernetes mode only; use `file` or `env`"
    );
}

#[tokio::test]
async fn a_value_a_header_cannot_carry_is_refused_without_showing_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("token");
    std::fs::write(&file, "Bearer se\u{7}cret-value\n").expect("write");
    let list = [from("Authorization", ValueFrom::File(file.clone()))];
    let e = resolve(&LOCAL, "rollout.gates[0]", &BTreeMap::new(), &list)
        .await
        .expect_err("a control character");
    assert!(
        e.contains("header Authorization: the value of file ")
            && e.ends_with("has characters a header cannot carry"),
        "{e}"
    );
    assert!(!e.contains("cret-value"), "the value is not shown: {e}");
}
