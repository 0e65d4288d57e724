use std::time::Duration;

use crossfade_proxy::weight::Percent;
use serde_json::json;

use super::*;

const COMMITTED: &str = include_str!("../../../../deploy/crd/trafficshift.yaml");

#[test]
fn committed_crd_matches_the_rust_types() {
    assert!(
        COMMITTED == crd_yaml(),
        "deploy/crd/trafficshift.yaml is out of date: run `cargo run -- crdgen > deploy/crd/trafficshift.yaml`"
    );
}

#[test]
fn spec_reads_camel_case_with_int_or_string_shares_and_go_style_durations() {
    let spec: TrafficShiftSpec = serde_json::from_value(json!({
        "deployment": "web",
        "images": { "app": "ghcr.io/acme/web:v2" },
        "rollout": {
            "steps": [{ "weight": 5, "hold": "1m30s" }, { "weight": "50.5%" }, { "weight": 100 }],
            "progressDeadline": "2m",
            "analysis": { "maxErrorRate": "1%", "maxP99": "250ms", "minRequests": 20, "onInconclusive": "Pause" }
        }
    }))
    .expect("valid spec");
    let steps = &spec.rollout.steps;
    assert_eq!(steps[0].weight, Share(Percent(500)));
    assert_eq!(steps[0].hold, Some(Span(Duration::from_secs(90))));
    assert_eq!(steps[1].weight, Share(Percent(5050)));
    assert_eq!(
        spec.rollout.progress_deadline,
        Some(Span(Duration::from_secs(120)))
    );
    let analysis = spec.rollout.analysis.as_ref().expect("analysis");
    assert_eq!(analysis.max_p99, Some(Span(Duration::from_millis(250))));
    assert_eq!(analysis.on_inconclusive, Some(OnInconclusive::Pause));
}

#[test]
fn spec_round_trips_and_writes_shares_and_durations_as_strings() {
    let spec: TrafficShiftSpec = serde_json::from_value(json!({
        "deployment": "web", "images": { "app": "web:v2" },
        "rollout": { "steps": [{ "weight": 25, "hold": "90s" }] }
    }))
    .expect("valid spec");
    let written = serde_json::to_value(&spec).expect("serialises");
    assert_eq!(
        written["rollout"]["steps"][0],
        json!({ "weight": "25%", "hold": "1m30s" })
    );
    let back: TrafficShiftSpec = serde_json::from_value(written).expect("reads back");
    assert_eq!(back, spec);
}

#[test]
fn shares_outside_0_to_100_percent_or_without_a_percent_sign_are_refused() {
    for bad in [
        json!(101),
        json!("100.01%"),
        json!("25"),
        json!("0.001%"),
        json!(-1),
    ] {
        assert!(
            serde_json::from_value::<Share>(bad.clone()).is_err(),
            "{bad} accepted"
        );
    }
}

/// A whole number too large for an integer is read as a float: named as above 100%, not as "not a
/// whole percentage" to be written as a string (session 41); a whole float is the integer.
#[test]
fn a_whole_number_read_as_a_float_is_judged_as_that_number() {
    let huge = serde_json::from_str::<Share>("100000000000000000000").expect_err("refused");
    assert!(
        huge.to_string().starts_with("1e20% is above 100%"),
        "{huge}"
    );
    let above = serde_json::from_str::<Share>("150.0").expect_err("refused");
    assert!(
        above.to_string().starts_with("150% is above 100%"),
        "{above}"
    );
    let whole = serde_json::from_str::<Share>("50.0").expect("a whole percentage");
    assert_eq!(whole, Share(Percent(5000)));
    let fraction = serde_json::from_str::<Share>("0.5").expect_err("refused");
    assert!(
        fraction.to_string().contains("is not a whole percentage"),
        "{fraction}"
    );
}

#[test]
fn durations_parse_go_style_units_and_refuse_the_rest() {
    assert_eq!(
        Span::parse("1h2m3s4ms"),
        Ok(Span(Duration::from_millis(3_723_004)))
    );
    assert_eq!(
        Span(Duration::from_millis(3_723_004)).to_string(),
        "1h2m3s4ms"
    );
    assert_eq!(Span(Duration::ZERO).to_string(), "0s");
    for bad in ["", "30", "s", "1 m", "1d", "-1s", "1.5s"] {
        assert!(Span::parse(bad).is_err(), "{bad:?} accepted");
    }
    // The shared bound on configured durations (trial report §1): 366 days at most.
    assert_eq!(
        Span::parse("8784h"),
        Ok(Span(crossfade_proxy::duration::MAX))
    );
    let err = Span::parse("8785h").unwrap_err();
    assert!(
        err.starts_with("\"8785h\" is above the maximum of 366 days"),
        "{err}"
    );
    // Trial report 5 F7: named as negative, not as a malformed duration.
    assert_eq!(
        Span::parse("-10s"),
        Err("\"-10s\": a duration cannot be negative".to_owned())
    );
}

#[test]
fn schema_carries_the_bounds_the_api_server_can_check() {
    let crd = serde_json::to_value(TrafficShift::crd()).expect("crd");
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert_eq!(version["subresources"]["status"], json!({}));
    let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
    assert_eq!(spec["required"], json!(["deployment", "images"]));
    assert_eq!(spec["properties"]["images"]["minProperties"], 1);
    let weight =
        &spec["properties"]["rollout"]["properties"]["steps"]["items"]["properties"]["weight"];
    assert_eq!(weight["x-kubernetes-int-or-string"], true);
    assert_eq!(weight["maximum"], 100.0);
    assert_eq!(weight["pattern"], SHARE_PATTERN);
    let status = &version["schema"]["openAPIV3Schema"]["properties"]["status"];
    assert_eq!(
        status["properties"]["conditions"]["x-kubernetes-list-map-keys"],
        json!(["type"])
    );
}

#[test]
fn set_condition_keeps_the_transition_time_unless_the_status_changes() {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;
    let at = |s: i64| Time(Timestamp::from_second(s).expect("valid"));
    let cond = |status, reason: &str, t| Condition {
        type_: "Promoted".into(),
        status,
        reason: reason.into(),
        message: String::new(),
        last_transition_time: at(t),
        observed_generation: Some(1),
    };
    let mut conditions = vec![cond(ConditionStatus::False, "Progressing", 100)];
    set_condition(&mut conditions, cond(ConditionStatus::False, "Paused", 200));
    assert_eq!(
        (
            conditions[0].reason.as_str(),
            &conditions[0].last_transition_time
        ),
        ("Paused", &at(100))
    );
    set_condition(
        &mut conditions,
        cond(ConditionStatus::True, "Promoted", 300),
    );
    assert_eq!(conditions.len(), 1);
    assert_eq!(conditions[0].last_transition_time, at(300));
}

#[test]
fn an_empty_policy_is_the_default_rollout_config() {
    let config = RolloutPolicy::default().to_config().expect("valid");
    assert_eq!(config, crate::spec::RolloutConfig::default());
}

#[test]
fn a_policy_sets_the_fields_it_names_and_keeps_the_defaults_of_the_rest() {
    let policy: RolloutPolicy = serde_json::from_value(json!({
        "steps": [{ "weight": 10, "hold": "1s" }, { "weight": 100 }],
        "hold": "2s", "progressDeadline": "5s",
        "analysis": { "maxErrorRate": "2.5%", "minRequests": 5, "onInconclusive": "Pause" }
    }))
    .expect("valid policy");
    let config = policy.to_config().expect("valid");
    assert_eq!(config.weight_bp(0), 1000);
    assert_eq!(config.hold_of(0), Duration::from_secs(1));
    assert_eq!(config.hold_of(1), Duration::from_secs(2));
    assert_eq!(config.progress_deadline, Duration::from_secs(5));
    assert_eq!(config.drain_timeout, Duration::from_secs(30));
    assert!((config.analysis.max_error_rate - 0.025).abs() < 1e-12);
    assert_eq!(config.analysis.min_requests, 5);
    assert_eq!(config.analysis.max_inconclusive, 3);
    assert_eq!(
        config.analysis.on_inconclusive,
        crate::spec::InconclusivePolicy::Pause
    );
}

#[test]
fn a_policy_breaking_rules_across_fields_names_each_spec_field() {
    let policy: RolloutPolicy = serde_json::from_value(json!({
        "steps": [{ "weight": 50 }, { "weight": 20 }]
    }))
    .expect("parses");
    let text = policy.to_config().expect_err("invalid").to_string();
    assert!(text.contains("spec.rollout.steps"), "{text}");
    assert!(!text.lines().any(|l| l.starts_with("rollout.")), "{text}");
}

#[test]
fn field_paths_inside_messages_are_spelled_as_in_the_spec() {
    let policy: RolloutPolicy =
        serde_json::from_value(json!({ "progressDeadline": "2s" })).expect("parses");
    let text = policy
        .to_config()
        .expect_err("hold 10s > deadline")
        .to_string();
    assert_eq!(
        text,
        "spec.rollout.hold: 10s leaves no time to finish a step within spec.rollout.progressDeadline (2s)"
    );
}

/// Kubetry28: an `unreadyGrace` as long as the progress deadline or longer was taken, and a
/// preview without ready pods was then rolled back by the deadline, for another reason, the
/// grace never acting. Refused naming both fields; `0s` (roll back at the first reading without
/// a ready pod) and a grace below the deadline are valid, and the default grace never refuses.
#[test]
fn an_unready_grace_the_progress_deadline_would_always_outrun_is_refused() {
    let config = |rollout: serde_json::Value| {
        serde_json::from_value::<RolloutPolicy>(rollout)
            .expect("parses")
            .to_config()
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    assert_eq!(
        config(json!({ "unreadyGrace": "5m" })),
        Err("spec.rollout.unreadyGrace: 5m leaves no time to roll back a preview without ready pods within spec.rollout.progressDeadline (2m): the deadline would roll it back first; make it shorter than the deadline".to_owned())
    );
    assert_eq!(
        config(json!({ "unreadyGrace": "45s", "progressDeadline": "45s" })),
        Err("spec.rollout.unreadyGrace: 45s leaves no time to roll back a preview without ready pods within spec.rollout.progressDeadline (45s): the deadline would roll it back first; make it shorter than the deadline".to_owned())
    );
    // Said with the other problems, not instead of them.
    let both =
        config(json!({ "unreadyGrace": "8784h", "progressDeadline": "2s" })).expect_err("invalid");
    assert!(
        both.contains("spec.rollout.hold: 10s leaves no time")
            && both.contains("spec.rollout.unreadyGrace: 8784h leaves no time"),
        "{both}"
    );
    assert_eq!(config(json!({ "unreadyGrace": "0s" })), Ok(()));
    assert_eq!(config(json!({ "unreadyGrace": "1m59s" })), Ok(()));
    assert_eq!(config(json!({ "progressDeadline": "20s" })), Ok(()));
}

#[test]
fn the_route_reads_hosts_a_path_prefix_and_a_port_by_name_or_number() {
    let spec: TrafficShiftSpec = serde_json::from_value(json!({
        "deployment": "web", "images": { "app": "web:v2" },
        "route": { "hosts": ["shop.example"], "pathPrefix": "/api", "port": "http" }
    }))
    .expect("valid spec");
    let route = spec.route.expect("route");
    assert_eq!(route.hosts, ["shop.example"]);
    assert_eq!(route.path_prefix.as_deref(), Some("/api"));
    assert_eq!(route.port, Some(PortRef::Name("http".into())));
    let by_number: RouteSpec = serde_json::from_value(json!({ "port": 8080 })).expect("number");
    assert_eq!(by_number.port, Some(PortRef::Number(8080)));
    assert!(serde_json::from_value::<RouteSpec>(json!({ "port": 70000 })).is_err());
    // failOpen (kube27): read when given, absent (the proxy's default, true) otherwise.
    assert_eq!(route.fail_open, None);
    let closed: RouteSpec = serde_json::from_value(json!({ "failOpen": false })).expect("bool");
    assert_eq!(closed.fail_open, Some(false));
    assert_eq!(
        serde_json::to_value(&closed).expect("serialises"),
        json!({ "failOpen": false })
    );
    let bad =
        serde_json::from_value::<RouteSpec>(json!({ "failOpen": "no" })).expect_err("a string");
    assert!(bad.to_string().contains("expected a boolean"), "{bad}");
    let without: TrafficShiftSpec =
        serde_json::from_value(json!({ "deployment": "web", "images": { "app": "web:v2" } }))
            .expect("valid spec");
    assert_eq!(without.route, None);
    assert!(serde_json::to_value(&without)
        .expect("serialises")
        .get("route")
        .is_none());
}

pub(super) use crate::serde_fields::accepted_fields;

/// The property names of the CRD schema at `path` under `spec`.
fn crd_properties(path: &[&str]) -> Vec<String> {
    let crd = serde_json::to_value(TrafficShift::crd()).expect("crd");
    let mut at = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    for p in path {
        at = &at["properties"][*p];
    }
    at["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("no properties at {path:?}"))
        .keys()
        .cloned()
        .collect()
}

pub(super) use super::camel;

/// Every field of `spec` is in `crd` by its camelCase name and vice versa.
fn check_carried(section: &str, spec: Vec<String>, crd: Vec<String>) {
    for field in &spec {
        assert!(
            crd.contains(&camel(field)),
            "the spec's rollout {section}.{field} is not in the TrafficShift CRD as {}: add it to \
             the kube types (controller/src/kube/crd.rs), their conversion (crd/policy.rs) and \
             regenerate deploy/crd/trafficshift.yaml; CRD has {crd:?}",
            camel(field)
        );
    }
    for name in &crd {
        assert!(
            spec.iter().any(|f| camel(f) == *name),
            "the CRD's {section}.{name} is not a spec field"
        );
    }
}

#[test]
fn every_analysis_field_the_spec_accepts_is_in_the_crd_schema_by_the_same_name() {
    let spec = accepted_fields::<crate::spec::AnalysisConfig>();
    assert!(
        spec.contains(&"fail_when_worse_than".to_string()),
        "{spec:?}"
    );
    // Kubernetes only (where a fleet of proxy replicas reports its counters): `crossfade run`
    // reads its in-process proxy's counters, exact and current.
    let crd = kube_only_left_out(crd_properties(&["rollout", "analysis"]), &["metricsSource"]);
    check_carried("analysis", spec, crd);
}

/// The CRD properties `crd` without the Kubernetes-only fields `kube_only`, each of which must
/// be among them.
fn kube_only_left_out(mut crd: Vec<String>, kube_only: &[&str]) -> Vec<String> {
    for name in kube_only {
        assert!(crd.iter().any(|c| c == name), "{name} in {crd:?}");
    }
    crd.retain(|c| !kube_only.contains(&c.as_str()));
    crd
}

/// `spec.rollout.analysis.metricsSource` (session 42): a Prometheus address and selector are read
/// as written; a bad address or selector is refused naming its field, with the other problems.
#[test]
fn a_prometheus_metrics_source_is_read_and_a_bad_one_is_refused_naming_the_field() {
    let policy = |source: serde_json::Value| {
        let rollout = json!({ "analysis": { "metricsSource": source } });
        serde_json::from_value::<RolloutPolicy>(rollout).expect("parses")
    };
    let good = policy(json!({ "prometheus": {
        "address": "http://prometheus.monitoring:9090", "selector": "job=\"crossfade-proxy\""
    }}));
    good.to_config().expect("valid");
    let source = good.analysis.and_then(|a| a.metrics_source).expect("read");
    assert_eq!(
        source.prometheus.address,
        "http://prometheus.monitoring:9090"
    );
    assert_eq!(
        source.prometheus.selector.as_deref(),
        Some("job=\"crossfade-proxy\"")
    );
    let bad = policy(json!({ "prometheus": {
        "address": "prometheus:9090", "selector": "{job=\"x\"}"
    }}));
    let text = bad.to_config().expect_err("invalid").to_string();
    let at = "spec.rollout.analysis.metricsSource.prometheus";
    assert!(
        text.contains(&format!(
            "{at}.address: \"prometheus:9090\" is not an http:// or https:// URL"
        )) && text.contains(&format!("{at}.selector: ")),
        "{text}"
    );
    let both = serde_json::from_value::<RolloutPolicy>(json!({
        "hold": "10s", "progressDeadline": "2s",
        "analysis": { "metricsSource": { "prometheus": { "address": "ftp://p" } } }
    }))
    .expect("parses");
    let text = both.to_config().expect_err("invalid").to_string();
    assert!(
        text.contains("spec.rollout.hold") && text.contains(&format!("{at}.address")),
        "{text}"
    );
}

/// Session 42: `metricsSource.prometheus.headers` and `headersFrom` are read as a check's, and
/// checked by a check's rules, each problem naming its field.
#[test]
fn a_prometheus_metrics_source_takes_headers_by_the_checks_rules() {
    let policy = |prometheus: serde_json::Value| {
        let rollout = json!({ "analysis": { "metricsSource": { "prometheus": prometheus } } });
        serde_json::from_value::<RolloutPolicy>(rollout).expect("parses")
    };
    let token = |name: &str| {
        json!({ "name": name,
                "valueFrom": { "secretKeyRef": { "name": "prom-token", "key": "token" } } })
    };
    let good = policy(json!({ "address": "http://p:9090",
        "headers": { "X-Scope-OrgID": "shop" }, "headersFrom": [token("Authorization")] }));
    good.to_config().expect("valid");
    let source = good.analysis.and_then(|a| a.metrics_source).expect("read");
    assert_eq!(source.prometheus.headers["X-Scope-OrgID"], "shop");
    assert_eq!(
        source.prometheus.headers_from_config()[0].name,
        "Authorization"
    );

    let bad = policy(json!({ "address": "http://p:9090",
        "headers": { "Bad Name": "x", "X-Scope-OrgID": "shop" },
        "headersFrom": [token("x-scope-orgid"), token("Authorization"), token("authorization")] }));
    let text = bad.to_config().expect_err("invalid").to_string();
    let at = "spec.rollout.analysis.metricsSource.prometheus";
    for expected in [
        format!("{at}.headers.Bad Name: is not a header name"),
        format!(
            "{at}.headersFrom[0].name: x-scope-orgid is also in {at}.headers: set it in one place"
        ),
        format!("{at}.headersFrom[2].name: authorization is listed twice"),
    ] {
        assert!(text.contains(&expected), "{expected}\nnot in: {text}");
    }
}

#[test]
fn every_shadow_and_mirror_field_the_spec_accepts_is_in_the_crd_schema_by_the_same_name() {
    let guard = accepted_fields::<crate::spec::ShadowGuard>();
    let at = ["rollout", "analysis", "shadow"];
    check_carried("analysis.shadow", guard, crd_properties(&at));
    let mirror = accepted_fields::<crossfade_proxy::config::ShadowConfig>();
    let at = ["rollout", "analysis", "shadow", "mirror"];
    check_carried("analysis.shadow.mirror", mirror, crd_properties(&at));
    let ignore = accepted_fields::<crossfade_proxy::config::ShadowIgnore>();
    let at = ["rollout", "analysis", "shadow", "mirror", "ignore"];
    check_carried("analysis.shadow.mirror.ignore", ignore, crd_properties(&at));
}

#[test]
fn every_rollout_field_the_spec_accepts_is_in_the_crd_schema_by_the_same_name() {
    let spec = accepted_fields::<crate::spec::RolloutConfig>();
    // Kubernetes only (how long a Deployment may show no ready replica): `crossfade run` has no
    // Deployments, its health checks eject instances instead.
    let crd = kube_only_left_out(crd_properties(&["rollout"]), &["unreadyGrace"]);
    check_carried("rollout", spec, crd);
}

#[test]
fn the_sequential_judges_fields_reach_the_rollout_config() {
    let policy: RolloutPolicy = serde_json::from_value(json!({
        "analysis": {
            "judge": "Sequential", "alpha": 0.02, "beta": 0.1,
            "maxErrorRateIncrease": "0.5%", "maxLatencyIncrease": "15ms",
            "failWhenWorseThan": "Allowance"
        }
    }))
    .expect("valid policy");
    let a = policy.to_config().expect("valid").analysis;
    assert_eq!(a.judge, crate::spec::JudgeKind::Sequential);
    assert_eq!((a.alpha, a.beta), (0.02, 0.1));
    assert!((a.max_error_rate_increase - 0.005).abs() < 1e-12);
    assert_eq!(
        a.max_latency_increase,
        crate::spec::LatencyIncrease::Duration(Duration::from_millis(15))
    );
    assert_eq!(
        a.fail_when_worse_than,
        crate::spec::FailWhenWorseThan::Allowance
    );
    let percent: AnalysisPolicy =
        serde_json::from_value(json!({ "maxLatencyIncrease": "12.5%" })).expect("valid");
    assert_eq!(
        percent.max_latency_increase.map(|i| i.0),
        Some(crate::spec::LatencyIncrease::Fraction(0.125))
    );
    assert_eq!(
        serde_json::to_value(&percent).expect("serialises"),
        json!({ "maxLatencyIncrease": "12.5%" })
    );
    let defaults = crate::spec::AnalysisConfig::default();
    let threshold: RolloutPolicy =
        serde_json::from_value(json!({ "analysis": { "judge": "Threshold" } })).expect("valid");
    assert_eq!(threshold.to_config().expect("valid").analysis, defaults);
    for bad in [
        json!({ "judge": "sequential" }),
        json!({ "failWhenWorseThan": "allowance" }),
        json!({ "maxLatencyIncrease": "fast" }),
        json!({ "maxLatencyIncrease": "10" }),
    ] {
        assert!(
            serde_json::from_value::<AnalysisPolicy>(bad.clone()).is_err(),
            "{bad} accepted"
        );
    }
}

#[test]
fn the_sequential_fields_are_refused_with_the_specs_messages_under_spec_field_names() {
    let policy: RolloutPolicy = serde_json::from_value(json!({
        "analysis": { "alpha": 0.0, "beta": 0.6, "maxErrorRateIncrease": 0, "maxLatencyIncrease": "0ms" }
    }))
    .expect("parses");
    let text = policy.to_config().expect_err("invalid").to_string();
    let spec = crate::spec::RunSpec::from_yaml(
        "blue: { endpoints: [\"127.0.0.1:1\"] }\nrollout:\n  analysis: { alpha: 0, beta: 0.6, max_error_rate_increase: \"0%\", max_latency_increase: 0ms }\n",
    )
    .expect_err("invalid")
    .to_string();
    for (kube, run) in [
        (
            "spec.rollout.analysis.alpha: 0 is not in (0, 0.5]",
            "rollout.analysis.alpha: 0 is not in (0, 0.5]",
        ),
        (
            "spec.rollout.analysis.beta: 0.6 is not in (0, 0.5]",
            "rollout.analysis.beta: 0.6 is not in (0, 0.5]",
        ),
        (
            "spec.rollout.analysis.maxErrorRateIncrease: 0% is not in (0%, 100%]",
            "rollout.analysis.max_error_rate_increase: 0% is not in (0%, 100%]",
        ),
        (
            "spec.rollout.analysis.maxLatencyIncrease: 0s must be above 0",
            "rollout.analysis.max_latency_increase: 0s must be above 0",
        ),
    ] {
        assert!(text.contains(kube), "{kube:?} not in {text}");
        assert!(spec.contains(run), "{run:?} not in {spec}");
    }
}

/// Kubernetes mode decides `maxP99` from the proxies' Prometheus buckets: a bound between two
/// bucket bounds cannot be decided exactly, and the warning names the bounds around it; a bucket
/// bound (or no `maxP99`) gives no warning.
#[test]
fn a_max_p99_off_the_bucket_bounds_is_warned_about_with_the_nearest_bounds() {
    let policy = |analysis: serde_json::Value| -> RolloutPolicy {
        serde_json::from_value(json!({ "analysis": analysis })).expect("valid policy")
    };
    let warnings = policy(json!({ "maxP99": "600ms" })).warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let w = &warnings[0];
    assert!(
        w.starts_with("spec.rollout.analysis.maxP99: 600ms is not a bound"),
        "{w}"
    );
    assert!(w.contains("the nearest are 500ms and 750ms"), "{w}");
    assert!(w.contains("this bound acts as 750ms"), "{w}");
    assert!(
        w.ends_with("Use 500ms or 750ms for an exact decision"),
        "{w}"
    );
    // Every bucket bound is exact: no warning.
    for bound in ["1ms", "250ms", "750ms", "1s", "2500ms", "30s"] {
        let p = policy(json!({ "maxP99": bound }));
        p.to_config().expect("valid");
        assert_eq!(p.warnings(), Vec::<String>::new(), "{bound}");
    }
    assert_eq!(RolloutPolicy::default().warnings(), Vec::<String>::new());
    // Between two bounds of a second or more, and above the last one.
    let w = &policy(json!({ "maxP99": "2s" })).warnings()[0];
    assert!(w.contains("the nearest are 1s and 2500ms"), "{w}");
    let w = &policy(json!({ "maxP99": "45s" })).warnings()[0];
    assert!(
        w.contains("45s is above the proxies' last latency bucket bound (30s)"),
        "{w}"
    );
}
