use k8s_openapi::api::apps::v1::Deployment;
use serde_json::json;

use super::*;

/// A Deployment `shop/web` with the given containers, labels and annotations.
fn deployment(
    containers: &[&str],
    labels: serde_json::Value,
    annotations: serde_json::Value,
) -> Deployment {
    let containers: Vec<_> = containers
        .iter()
        .map(|n| json!({ "name": n, "image": format!("{n}:v1") }))
        .collect();
    serde_json::from_value(json!({
        "metadata": { "name": "web", "namespace": "shop", "uid": "u-1", "labels": labels, "annotations": annotations },
        "spec": {
            "selector": { "matchLabels": { "app": "web" } },
            "template": { "metadata": { "labels": { "app": "web" } }, "spec": { "containers": containers } }
        }
    }))
    .expect("valid deployment")
}

fn images(shift: &TrafficShift) -> Vec<(&str, &str)> {
    shift
        .spec
        .images
        .iter()
        .map(|(c, i)| (c.as_str(), i.0.as_str()))
        .collect()
}

fn problems(err: TriggerError) -> Vec<(String, String)> {
    err.problems
        .into_iter()
        .map(|p| (p.annotation, p.message))
        .collect()
}

#[test]
fn image_annotation_on_a_single_container_deployment_asks_for_that_container() {
    let d = deployment(
        &["app"],
        json!({}),
        json!({ ENABLED: "true", IMAGE: "web:v2" }),
    );
    let shift = desired_shift(&d).expect("valid").expect("a shift");
    assert_eq!(shift.metadata.name.as_deref(), Some("web"));
    assert_eq!(shift.metadata.namespace.as_deref(), Some("shop"));
    assert_eq!(shift.spec.deployment, "web");
    assert_eq!(images(&shift), [("app", "web:v2")]);
    let owner = &shift.metadata.owner_references.as_ref().expect("owner")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
        ("Deployment", "web", "u-1")
    );
}

#[test]
fn per_container_annotations_ask_for_those_containers_only() {
    let d = deployment(
        &["app", "sidecar", "log"],
        json!({ ENABLED: "true" }),
        json!({ "crossfade.dev/image.app": "web:v2", "crossfade.dev/image.log": "log:v9" }),
    );
    let shift = desired_shift(&d).expect("valid").expect("a shift");
    assert_eq!(images(&shift), [("app", "web:v2"), ("log", "log:v9")]);
}

#[test]
fn same_annotation_twice_yields_the_same_shift_and_a_new_value_supersedes_it() {
    let first = desired_shift(&deployment(
        &["app"],
        json!({}),
        json!({ ENABLED: "true", IMAGE: "web:v2" }),
    ));
    let again = desired_shift(&deployment(
        &["app"],
        json!({}),
        json!({ ENABLED: "true", IMAGE: "web:v2" }),
    ));
    assert_eq!(first, again);
    let newer = desired_shift(&deployment(
        &["app"],
        json!({}),
        json!({ ENABLED: "true", IMAGE: "web:v3" }),
    ))
    .expect("valid")
    .expect("a shift");
    let first = first.expect("valid").expect("a shift");
    assert_eq!(newer.metadata.name, first.metadata.name);
    assert_eq!(images(&newer), [("app", "web:v3")]);
}

#[test]
fn unmanaged_or_image_less_deployments_ask_for_nothing() {
    let unmanaged = deployment(&["app"], json!({}), json!({ IMAGE: "web:v2" }));
    assert_eq!(desired_shift(&unmanaged), Ok(None));
    let disabled = deployment(
        &["app"],
        json!({ ENABLED: "false" }),
        json!({ IMAGE: "web:v2" }),
    );
    assert_eq!(desired_shift(&disabled), Ok(None));
    let idle = deployment(
        &["app"],
        json!({ ENABLED: "true" }),
        json!({ "crossfade.dev/paused": "true" }),
    );
    assert_eq!(desired_shift(&idle), Ok(None));
}

#[test]
fn image_on_several_containers_without_a_name_is_refused_naming_the_annotation() {
    let d = deployment(
        &["app", "sidecar"],
        json!({ ENABLED: "true" }),
        json!({ IMAGE: "web:v2" }),
    );
    let err = desired_shift(&d).expect_err("ambiguous");
    assert_eq!(err.deployment, "shop/web");
    let msg = "the deployment has 2 containers (app, sidecar); name one with crossfade.dev/image.<container>";
    assert_eq!(problems(err), [(IMAGE.to_owned(), msg.to_owned())]);
}

#[test]
fn every_bad_annotation_is_reported_at_once() {
    let d = deployment(
        &["app", "sidecar"],
        json!({}),
        json!({
            ENABLED: "true",
            "crossfade.dev/image.api": "api:v2",
            "crossfade.dev/image.app": " ",
            "crossfade.dev/image.sidecar": "side car:v2",
            "crossfade.dev/imgae.app": "web:v2",
        }),
    );
    let err = desired_shift(&d).expect_err("invalid");
    let keys: Vec<_> = problems(err.clone()).into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        [
            "crossfade.dev/image.api",
            "crossfade.dev/image.app",
            "crossfade.dev/image.sidecar",
            "crossfade.dev/imgae.app"
        ]
    );
    let text = err.to_string();
    assert!(
        text.starts_with(
            "deployment shop/web: annotation crossfade.dev/image.api: no container \"api\""
        ),
        "{text}"
    );
    // Trial 20: a typo was told only "unknown crossfade.dev annotation".
    assert!(
        text.contains(
            "annotation crossfade.dev/imgae.app: unknown crossfade.dev annotation; did you mean \
             crossfade.dev/image.app? (the annotations are enabled, image, rollout, retry, \
             abort, force-abort, paused, resume, promote, image.<container>)"
        ),
        "{text}"
    );
    assert!(
        text.contains("annotation crossfade.dev/image.app: image reference is empty"),
        "{text}"
    );
}

#[test]
fn enabled_must_be_true_or_false_and_image_forms_do_not_mix() {
    let d = deployment(&["app"], json!({ ENABLED: "True" }), json!({}));
    assert_eq!(
        problems(desired_shift(&d).expect_err("bad")),
        [(
            ENABLED.to_owned(),
            "\"True\" is not \"true\" or \"false\"".to_owned()
        )]
    );
    let d = deployment(
        &["app"],
        json!({}),
        json!({ ENABLED: "true", IMAGE: "a:1", "crossfade.dev/image.app": "a:2" }),
    );
    let found = problems(desired_shift(&d).expect_err("mixed"));
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].0, IMAGE);
}

#[test]
fn a_malformed_image_reference_is_refused_at_once_naming_the_part() {
    // Trial 10, K13: it was accepted, and the rollout failed only at its 2-minute deadline.
    let d = deployment(
        &["app"],
        json!({}),
        json!({ ENABLED: "true", IMAGE: "UPPER/Case::v2@sha256:nothex" }),
    );
    assert_eq!(
        problems(desired_shift(&d).expect_err("invalid")),
        [(
            IMAGE.to_owned(),
            "\"UPPER/Case::v2@sha256:nothex\" is not an image reference: digest \
             \"sha256:nothex\": sha256 needs 64 lower-case hex digits"
                .to_owned()
        )]
    );
    let d = deployment(
        &["app"],
        json!({}),
        json!({ ENABLED: "true", IMAGE: "Crossfade-Sample:v2" }),
    );
    let err = desired_shift(&d).expect_err("invalid").to_string();
    assert!(
        err.ends_with("repository \"Crossfade-Sample\" must be lower case"),
        "{err}"
    );
}

#[test]
fn enabled_as_a_label_is_named_a_label_and_contradictions_are_refused() {
    // Trial 10, K15.
    let d = deployment(
        &["app"],
        json!({ ENABLED: "maybe" }),
        json!({ IMAGE: "a:2" }),
    );
    let err = desired_shift(&d).expect_err("bad label");
    assert_eq!(
        err.to_string(),
        "deployment shop/web: label crossfade.dev/enabled: \"maybe\" is not \"true\" or \"false\""
    );
    for (label, annotation) in [("true", "false"), ("false", "true")] {
        let d = deployment(
            &["app"],
            json!({ ENABLED: label }),
            json!({ ENABLED: annotation, IMAGE: "a:2" }),
        );
        assert!(!managed(&d), "{label}/{annotation}");
        let err = desired_shift(&d).expect_err("contradiction").to_string();
        assert!(
            err.contains("contradicts label crossfade.dev/enabled"),
            "{err}"
        );
    }
    let d = deployment(
        &["app"],
        json!({ ENABLED: "true" }),
        json!({ ENABLED: "true", IMAGE: "a:2" }),
    );
    assert!(managed(&d));
    assert!(desired_shift(&d).expect("agree").is_some());
}

/// Trial 20: an unknown `crossfade.dev/` annotation names the one it most likely meant.
#[test]
fn an_unknown_annotation_names_the_one_it_most_likely_meant() {
    for (key, meant) in [
        ("crossfade.dev/promte", Some("crossfade.dev/promote")),
        ("crossfade.dev/Paused", Some("crossfade.dev/paused")),
        ("crossfade.dev/enable", Some("crossfade.dev/enabled")),
        ("crossfade.dev/imag.web", Some("crossfade.dev/image.web")),
        ("crossfade.dev/weights", None),
        ("crossfade.dev/promote.x", None),
    ] {
        let said = unknown_annotation(key);
        match meant {
            Some(k) => assert!(
                said.contains(&format!("did you mean {k}?")),
                "{key}: {said}"
            ),
            None => assert!(!said.contains("did you mean"), "{key}: {said}"),
        }
        assert!(said.contains("image.<container>"), "{key}: {said}");
    }
}

#[test]
fn a_preview_crossfade_made_is_refused_and_not_managed() {
    let mut preview = deployment(
        &["app"],
        json!({}),
        json!({ ENABLED: "true", IMAGE: "web:v9" }),
    );
    preview.metadata.owner_references = Some(vec![serde_json::from_value(json!({
        "apiVersion": "crossfade.dev/v1alpha1", "kind": "TrafficShift", "name": "web",
        "uid": "ts-1", "controller": true
    }))
    .expect("owner reference")]);
    assert!(!managed(&preview));
    let err = desired_shift(&preview).expect_err("refused");
    assert_eq!(
        problems(err),
        [(
            ENABLED.to_owned(),
            "this deployment is the preview of trafficshift web, made and deleted by its \
             rollout; annotate the deployment that trafficshift rolls out (its spec.deployment) \
             instead"
                .to_owned()
        )]
    );
    // Not enabled: an unmanaged Deployment like any other, nothing to say.
    preview.metadata.annotations = None;
    assert_eq!(desired_shift(&preview), Ok(None));
    // Owned by something else (e.g. a GitOps tool's custom resource): managed as usual.
    let mut owned = deployment(
        &["app"],
        json!({}),
        json!({ ENABLED: "true", IMAGE: "web:v2" }),
    );
    owned.metadata.owner_references = Some(vec![serde_json::from_value(json!({
        "apiVersion": "example.com/v1", "kind": "TrafficShift", "name": "web",
        "uid": "x-1", "controller": true
    }))
    .expect("owner reference")]);
    assert!(managed(&owned));
    assert!(desired_shift(&owned).expect("valid").is_some());
}

/// Trial 30: a Deployment may be named what no Service can be (63 characters, a leading digit,
/// dots); its TrafficShift's Services `<name>-blue`/`<name>-green` would be refused by the API
/// server at the rollout's start. The trigger refuses such a Deployment on `enabled` instead,
/// saying how to roll it out, and does not manage it (no `kubectl set image` taken back).
#[test]
fn a_deployment_whose_name_no_service_can_take_is_refused_and_not_managed() {
    let longest = format!("w{}", "e".repeat(56));
    let mut fine = deployment(
        &["app"],
        json!({}),
        json!({ ENABLED: "true", IMAGE: "web:v2" }),
    );
    fine.metadata.name = Some(longest.clone());
    assert!(managed(&fine));
    assert!(desired_shift(&fine).expect("57 characters").is_some());
    for (name, why, label) in [
        (
            format!("{longest}b"),
            "is 58 characters long, more than 57",
            false,
        ),
        (
            "1web".to_owned(),
            "does not start with a lower-case letter",
            false,
        ),
        ("web.v2".to_owned(), "has '.'", true),
    ] {
        let (labels, annotations) = match label {
            true => (json!({ ENABLED: "true" }), json!({ IMAGE: "web:v2" })),
            false => (json!({}), json!({ ENABLED: "true", IMAGE: "web:v2" })),
        };
        let mut d = deployment(&["app"], labels, annotations);
        d.metadata.name = Some(name.clone());
        assert!(!managed(&d), "{name}");
        let err = desired_shift(&d).expect_err(&name);
        assert_eq!(err.problems.len(), 1, "{err}");
        let problem = &err.problems[0];
        assert_eq!(
            (problem.annotation.as_str(), problem.label),
            (ENABLED, label)
        );
        assert!(problem.message.contains(why), "{name}: {problem}");
        assert!(
            problem.message.contains(&format!(
                "apply a trafficshift of such a name with spec.deployment: {name}"
            )),
            "{problem}"
        );
    }
    let mut off = deployment(&["app"], json!({}), json!({ IMAGE: "web:v2" }));
    off.metadata.name = Some("1web".into());
    assert_eq!(desired_shift(&off), Ok(None), "not managed: not looked at");
}

/// Session 42: `crossfade.dev/rollout` chooses the policy; before, a TrafficShift the trigger made
/// always had the default one.
#[test]
fn the_rollout_annotation_sets_the_policy_and_without_it_the_default_is_taken() {
    let policy = "{steps: [{weight: 10}, {weight: 50, hold: 1m}, {weight: 100}], hold: 30s, analysis: {maxErrorRate: 2%}}";
    let d = deployment(
        &["app"],
        json!({}),
        json!({ ENABLED: "true", IMAGE: "web:v2", ROLLOUT: policy }),
    );
    let shift = desired_shift(&d).expect("valid").expect("a shift");
    let config = shift.spec.rollout.to_config().expect("a valid policy");
    let weights: Vec<u32> = config.steps.iter().map(|s| s.weight.0).collect();
    assert_eq!(weights, [1000, 5000, 10000]);
    assert_eq!(
        config.steps[1].hold,
        Some(std::time::Duration::from_secs(60))
    );
    assert_eq!(config.hold, std::time::Duration::from_secs(30));
    let json = r#"{"steps": [{"weight": 25}, {"weight": 100}]}"#;
    assert_eq!(
        rollout_policy(json).expect("JSON is YAML").steps.len(),
        2,
        "JSON is accepted"
    );
    let plain = deployment(
        &["app"],
        json!({}),
        json!({ ENABLED: "true", IMAGE: "web:v2" }),
    );
    let shift = desired_shift(&plain).expect("valid").expect("a shift");
    assert_eq!(shift.spec.rollout, RolloutPolicy::default());
}

#[test]
fn a_bad_rollout_annotation_is_refused_with_every_problem_named_relative_to_the_policy() {
    let problems_of = |policy: &str| {
        let d = deployment(
            &["app"],
            json!({}),
            json!({ ENABLED: "true", IMAGE: "", ROLLOUT: policy }),
        );
        problems(desired_shift(&d).expect_err("refused"))
    };
    // The image's problem and the policy's together; every broken rule of the policy.
    let found = problems_of("{steps: [{weight: 50}, {weight: 20}], hold: 10s, drainTimeout: 0s}");
    let rollout: Vec<&str> = found
        .iter()
        .filter(|(a, _)| a == ROLLOUT)
        .map(|(_, m)| m.as_str())
        .collect();
    assert!(found.iter().any(|(a, _)| a == IMAGE), "{found:?}");
    assert!(
        rollout.iter().any(|m| m.starts_with("steps[1]")),
        "{rollout:?}"
    );
    assert!(
        rollout
            .iter()
            .any(|m| m.starts_with("steps: ") || m.contains("100%")),
        "the last step below 100% is named too: {rollout:?}"
    );
    assert!(
        rollout.iter().all(|m| !m.contains("spec.rollout")),
        "{rollout:?}"
    );
    // Unknown fields, all of them, with what the policy takes.
    let found = problems_of("{holdd: 1m, analysis: {maxErrorRatio: 1%}}");
    let rollout: Vec<&str> = found
        .iter()
        .filter(|(a, _)| a == ROLLOUT)
        .map(|(_, m)| m.as_str())
        .collect();
    assert_eq!(rollout.len(), 2, "{rollout:?}");
    let holdd = rollout
        .iter()
        .find(|m| m.starts_with("holdd: unknown field"));
    assert!(
        holdd.is_some_and(|m| m.contains("the policy takes analysis, drainTimeout")),
        "{rollout:?}"
    );
    assert!(
        rollout
            .iter()
            .any(|m| m.starts_with("analysis.maxErrorRatio: unknown field; analysis takes")),
        "{rollout:?}"
    );
    // A wrong type names its field; every such field.
    let found = rollout_policy("{hold: soon, drainTimeout: later}").expect_err("refused");
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.iter().any(|m| m.starts_with("hold: ")), "{found:?}");
    assert!(
        found.iter().any(|m| m.starts_with("drainTimeout: ")),
        "{found:?}"
    );
    // Not YAML, and not a map.
    let found = rollout_policy("{steps: [").expect_err("refused");
    assert!(found[0].starts_with("not YAML or JSON: "), "{found:?}");
    let found = rollout_policy("10,50,100").expect_err("refused");
    assert!(
        found[0].contains("is not a map of spec.rollout's fields"),
        "{found:?}"
    );
}

#[test]
fn the_rollout_annotation_is_known_and_a_typo_of_it_is_named() {
    let d = deployment(
        &["app"],
        json!({}),
        json!({ ENABLED: "true", IMAGE: "web:v2", "crossfade.dev/rollot": "{hold: 1m}" }),
    );
    let found = problems(desired_shift(&d).expect_err("refused"));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].1.contains("did you mean crossfade.dev/rollout?"),
        "{found:?}"
    );
}

/// Session 43: unknown fields hid every other problem of the policy (the TrafficShift's
/// `spec.rollout` named them together, [`TrafficShiftSpec::validated`]): the annotation names
/// every unknown field with every broken rule, or with every field whose type is wrong.
#[test]
fn unknown_fields_of_the_rollout_annotation_are_named_with_its_other_problems() {
    let d = deployment(
        &["app"],
        json!({}),
        json!({ ENABLED: "true", IMAGE: "web:v2",
            ROLLOUT: "{holdd: 1m, steps: [{weight: 50, wieght: 5}, {weight: 20}]}" }),
    );
    let err = desired_shift(&d).expect_err("refused");
    let text = err.to_string();
    let found = problems(err);
    let messages: Vec<&str> = found.iter().map(|(_, m)| m.as_str()).collect();
    assert!(found.iter().all(|(a, _)| a == ROLLOUT), "{found:?}");
    assert!(
        messages[0].starts_with("holdd: unknown field; the policy takes "),
        "{text}"
    );
    assert!(
        messages[1].starts_with("steps[0].wieght: unknown field; steps[0] takes hold, weight"),
        "{text}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("steps[1]: 20% is not above")),
        "the broken rule too: {text}"
    );
    assert!(
        text.contains("annotation crossfade.dev/rollout: holdd: unknown field")
            && text.contains("annotation crossfade.dev/rollout: steps[1]: "),
        "one message naming the annotation: {text}"
    );
    // An unknown field with a field of the wrong type: both.
    let found = rollout_policy("{holdd: 1m, hold: soon}").expect_err("refused");
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].starts_with("holdd: unknown field"), "{found:?}");
    assert!(found[1].starts_with("hold: "), "{found:?}");
}
