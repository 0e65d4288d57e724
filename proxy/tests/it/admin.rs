//! The admin API: status, weights, metrics, health and readiness.

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use serde_json::Value;

use crate::support::*;

async fn put(client: &TestClient, url: &str, body: &str) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(Method::PUT)
        .uri(url)
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let (status, _, body) = send(client, req).await;
    (status, serde_json::from_str(&body).unwrap())
}

#[tokio::test]
async fn weights_are_set_in_basis_points_or_percent() {
    let blue = backend("blue").await;
    let green = backend("green").await;
    let running = start(config(vec![route(&[blue.addr], &[green.addr], 10_000)])).await;
    let client = client();
    let url = running.admin_url("/routes/web/weights");

    let (status, body) = put(&client, &url, r#"{"blue": 9000, "green": 1000}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["generation"], 2);
    assert_eq!(
        body["weights"],
        serde_json::json!({"blue": 9000, "green": 1000})
    );

    let (status, body) = put(&client, &url, r#"{"blue": "99.9%", "green": "0.1%"}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["weights"],
        serde_json::json!({"blue": 9990, "green": 10})
    );

    let (status, body) = put(&client, &url, r#"{"green": "25%"}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["weights"],
        serde_json::json!({"blue": 7500, "green": 2500})
    );
    assert_eq!(running.proxy.generation(), 4);
}

/// Trial 44b (finding 10): `{"blue": "0%", "green": "0%"}` disables the route, after which every
/// request on it gets 503; the 200 said nothing of it and `/readyz` a plain `ready`. The answer's
/// `note` says so, and `/readyz` (still 200) lists the route; a weight above 0 serves again.
#[tokio::test]
async fn weights_that_disable_a_route_are_answered_with_a_note_and_listed_by_readyz() {
    let blue = backend("blue").await;
    let green = backend("green").await;
    let running = start(config(vec![route(&[blue.addr], &[green.addr], 10_000)])).await;
    let client = client();
    let url = running.admin_url("/routes/web/weights");

    let (status, body) = put(&client, &url, r#"{"blue": "0%", "green": "0%"}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["weights"], serde_json::json!({"blue": 0, "green": 0}));
    assert_eq!(
        body["note"],
        "route web is now disabled: with both weights 0 every request on it gets 503 until a \
         backend is given weight",
        "{body}"
    );
    let (status, _, answer) = get(&client, &running.url("/")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert!(
        answer.contains("route web is disabled (both weights are 0)"),
        "{answer}"
    );
    let (status, _, ready) = get(&client, &running.admin_url("/readyz")).await;
    assert_eq!(
        (status, ready.as_str()),
        (
            StatusCode::OK,
            "ready\nunserved: route web: disabled (both weights are 0: every request gets 503)\n"
        )
    );

    // Serving again: no note, nothing unserved.
    let (status, body) = put(&client, &url, r#"{"blue": 10000, "green": 0}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body.get("note"), None, "{body}");
    let (status, _, ready) = get(&client, &running.admin_url("/readyz")).await;
    assert_eq!((status, ready.as_str()), (StatusCode::OK, "ready\n"));
}

/// A route named `<namespace>/<name>` (as `crossfade proxy --kube` names the routes it reads from
/// TrafficShifts) is addressed with its `/` as written or percent-encoded (trial report 6, F8).
#[tokio::test]
async fn a_namespaced_route_name_is_addressable_in_the_weights_path() {
    let blue = backend("blue").await;
    let green = backend("green").await;
    let mut shop = route(&[blue.addr], &[green.addr], 10_000);
    shop.name = "shop/web".into();
    let running = start(config(vec![shop])).await;
    let client = client();

    let url = running.admin_url("/routes/shop/web/weights");
    let (status, body) = put(&client, &url, r#"{"green": 1000}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let url = running.admin_url("/routes/shop%2Fweb/weights");
    let (status, body) = put(&client, &url, r#"{"green": 2000}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(running.proxy.status().routes[0].weights.green, 2000);

    let url = running.admin_url("/routes/shop%2Fnope/weights");
    let (status, body) = put(&client, &url, r#"{"green": 2000}"#).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("shop/nope"),
        "{body}"
    );
    // Trial 20: the 404 lists the routes there are; `web` alone was told only that it is none.
    let url = running.admin_url("/routes/web/weights");
    let (status, body) = put(&client, &url, r#"{"green": 2000}"#).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(
        body["error"], "no route named \"web\" (this proxy's routes: \"shop/web\")",
        "{body}"
    );
    assert_eq!(body["routes"], serde_json::json!(["shop/web"]), "{body}");
}

/// `{"blue":10000,"blue":0,"green":0}` read as the last `blue` would disable the route: a key
/// given twice is refused (400 naming it) and the weights stay as they were.
#[tokio::test]
async fn a_key_given_twice_in_a_weights_body_is_refused_naming_it() {
    let blue = backend("blue").await;
    let green = backend("green").await;
    let running = start(config(vec![route(&[blue.addr], &[green.addr], 10_000)])).await;
    let client = client();
    let url = running.admin_url("/routes/web/weights");
    for (body, key) in [
        (r#"{"blue":10000,"blue":0,"green":0}"#, "blue"),
        (r#"{"green": "10%", "blue": "90%", "green": "0%"}"#, "green"),
    ] {
        let (status, answer) = put(&client, &url, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_eq!(answer["field"], key, "{body}: {answer}");
        let message = answer["error"].as_str().unwrap_or_default();
        assert!(message.contains("appears twice"), "{answer}");
    }
    assert_eq!(running.proxy.generation(), 1, "no body changed the weights");
    let (status, answer) = put(&client, &url, r#"{"blue": 10000, "green": 0}"#).await;
    assert_eq!(status, StatusCode::OK, "distinct keys still pass: {answer}");
}

#[tokio::test]
async fn bad_weight_bodies_get_400_naming_the_field() {
    let blue = backend("blue").await;
    let running = start(config(vec![route(&[blue.addr], &[], 10_000)])).await;
    let client = client();
    let url = running.admin_url("/routes/web/weights");
    for (body, field) in [
        (r#"{"blue": 12000}"#, Some("blue")),
        (r#"{"blue": "90"}"#, Some("blue")),
        (r#"{"blue": 9000, "green": 2000}"#, Some("green")),
        (r#"{"blue": -1}"#, Some("blue")),
        (r#"{"bleu": 10000}"#, None),
        ("not json", None),
    ] {
        let (status, answer) = put(&client, &url, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert!(answer["error"].is_string(), "{answer}");
        if let Some(field) = field {
            assert_eq!(answer["field"], field, "{body}: {answer}");
        }
        assert!(answer.get("problems").is_none(), "one fault: {answer}");
    }
    // Trial report H14: every wrong field is listed under `problems`; `error` and `field` stay
    // the first one's, as before.
    let (status, answer) = put(&client, &url, r#"{"blue":12000,"green":-2000}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["error"], "120% is above 100%", "{answer}");
    assert_eq!(answer["field"], "blue", "{answer}");
    let listed: Vec<&str> = answer["problems"]
        .as_array()
        .map(|p| p.iter().filter_map(|p| p["path"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(listed, ["blue", "green"], "{answer}");
    let green = answer["problems"][1]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(green.contains("-2000 is below 0"), "{answer}");
    // Weight on a backend without endpoints: named on the body's field, in the API's words
    // (trial 11, L12: it was the config rule's path and an "invalid config:" message).
    let (status, answer) = put(&client, &url, r#"{"green": 1000}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["field"], "green", "{answer}");
    assert_eq!(
        answer["error"], "green has no endpoints: it cannot take weight (10%)",
        "{answer}"
    );
    assert_eq!(running.proxy.generation(), 1);

    // The route before the body: an unknown route is 404 whatever the body (trial 11, L12).
    let (status, answer) = put(&client, &running.admin_url("/routes/nope/weights"), "{}").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    let (status, answer) = put(
        &client,
        &running.admin_url("/routes/nope/weights"),
        r#"{"blue": 10000}"#,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
}

#[tokio::test]
async fn status_health_and_readiness() {
    let blue = backend("blue").await;
    let running = start(config(vec![route(&[blue.addr], &[], 10_000)])).await;
    let client = client();
    get(&client, &running.url("/")).await;

    let (status, _, body) = get(&client, &running.admin_url("/status")).await;
    assert_eq!(status, StatusCode::OK);
    let status_json: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status_json["generation"], 1);
    let web = &status_json["routes"][0];
    assert_eq!(web["name"], "web");
    assert_eq!(web["path_prefix"], "/");
    assert_eq!(web["active"], "blue");
    assert_eq!(web["blue"]["weight_bp"], 10_000);
    assert_eq!(web["blue"]["endpoints"][0], blue.addr.to_string());
    assert_eq!(web["blue"]["requests"], 1);
    assert_eq!(web["green"]["weight_bp"], 0);

    assert_eq!(
        get(&client, &running.admin_url("/healthz")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        get(&client, &running.admin_url("/readyz")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        get(&client, &running.admin_url("/nope")).await.0,
        StatusCode::NOT_FOUND
    );
    let req = Request::post(running.admin_url("/status"))
        .body(Full::default())
        .unwrap();
    let (status, headers, _) = send(&client, req).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers["allow"], "GET, HEAD", "RFC 9110 §15.5.6");
    let req = Request::get(running.admin_url("/routes/web/weights"))
        .body(Full::default())
        .unwrap();
    let (status, headers, _) = send(&client, req).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers["allow"], "PUT");
}

#[tokio::test]
async fn head_is_served_for_get_endpoints_and_an_oversized_body_gets_413() {
    let blue = backend("blue").await;
    let running = start(config(vec![route(&[blue.addr], &[], 10_000)])).await;
    let client = client();
    for path in ["/status", "/metrics", "/healthz"] {
        let req = Request::head(running.admin_url(path))
            .body(Full::default())
            .unwrap();
        let (status, headers, body) = send(&client, req).await;
        assert_eq!(status, StatusCode::OK, "HEAD {path}");
        assert_eq!(body, "", "HEAD {path} has no body");
        let (_, get_headers, get_body) = get(&client, &running.admin_url(path)).await;
        assert_eq!(
            headers["content-type"], get_headers["content-type"],
            "{path}"
        );
        if path != "/metrics" {
            // (/metrics changes between two scrapes: its counters of admin requests.)
            let length = headers["content-length"].to_str().unwrap();
            assert_eq!(length, get_body.len().to_string(), "HEAD {path}");
        }
    }

    let big = format!("{{\"blue\": \"{}\"}}", "x".repeat(70 * 1024));
    let req = Request::put(running.admin_url("/routes/web/weights"))
        .body(Full::new(Bytes::from(big)))
        .unwrap();
    let (status, _, body) = send(&client, req).await;
    assert_eq!(
        status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "RFC 9110 §15.5.14: {body}"
    );
    assert!(body.contains("over the limit of 65536 bytes"), "{body}");
    let req = Request::put(running.admin_url("/routes/web/weights"))
        .body(Full::new(Bytes::from_static(b"{not json")))
        .unwrap();
    assert_eq!(send(&client, req).await.0, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn metrics_carry_the_documented_names_and_labels() {
    let blue = backend("blue").await;
    let green = backend("green").await;
    let running = start(config(vec![route(&[blue.addr], &[green.addr], 9_000)])).await;
    let client = client();
    for _ in 0..10 {
        get(&client, &running.url("/")).await;
    }
    let (status, headers, text) = get_metrics(&client, &running, Some(PROMETHEUS_ACCEPT)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let blue_stats = running
        .proxy
        .backend_stats("web", crossfade_proxy::Slot::Blue)
        .unwrap();
    for line in [
        "crossfade_routing_table_generation 1".to_owned(),
        r#"crossfade_backend_weight_basis_points{route="web",backend="blue"} 9000"#.to_owned(),
        r#"crossfade_backend_weight_basis_points{route="web",backend="green"} 1000"#.to_owned(),
        r#"crossfade_backend_active{route="web",backend="blue"} 1"#.to_owned(),
        r#"crossfade_backend_endpoints{route="web",backend="green"} 1"#.to_owned(),
        r#"crossfade_backend_healthy_endpoints{route="web",backend="blue"} 1"#.to_owned(),
        format!(
            r#"crossfade_requests_total{{route="web",backend="blue",class="2xx"}} {}"#,
            blue_stats.requests
        ),
        r#"crossfade_requests_total{route="web",backend="green",class="5xx"} 0"#.to_owned(),
        r#"crossfade_upstream_errors_total{route="web",backend="green",kind="connect_refused"} 0"#
            .to_owned(),
        r#"crossfade_retries_total{route="web",backend="blue",reason="connect_timeout"} 0"#
            .to_owned(),
        r#"crossfade_in_flight_requests{route="web",backend="blue"} 0"#.to_owned(),
        format!(
            r#"crossfade_dispatched_requests_total{{route="web",backend="blue"}} {}"#,
            blue_stats.requests
        ),
        format!(
            r#"crossfade_backend_errors_total{{route="web",backend="blue"}} {}"#,
            blue_stats.errors
        ),
        format!(
            r#"crossfade_request_duration_seconds_count{{route="web",backend="blue"}} {}"#,
            blue_stats.requests
        ),
        r#"crossfade_request_duration_seconds_bucket{le="+Inf",route="web",backend="blue"}"#
            .to_owned(),
        "# TYPE crossfade_request_duration_seconds histogram".to_owned(),
        "# UNIT crossfade_request_duration_seconds seconds".to_owned(),
        "# EOF".to_owned(),
    ] {
        assert!(text.contains(&line), "missing {line:?} in\n{text}");
    }
}

/// The `Accept` Prometheus 2.42 (Debian bookworm's, the tests' own) sends: OpenMetrics first.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// `GET /metrics` on the admin listener, with `accept` as the `Accept` header when given.
async fn get_metrics(
    client: &TestClient,
    running: &Running,
    accept: Option<&str>,
) -> (StatusCode, http::HeaderMap, String) {
    let mut req = Request::get(running.admin_url("/metrics"));
    if let Some(accept) = accept {
        req = req.header(http::header::ACCEPT, accept);
    }
    send(client, req.body(Full::new(Bytes::new())).unwrap()).await
}

/// `/metrics` answers OpenMetrics only to a scraper that names it in `Accept`, and the Prometheus
/// text format 0.0.4 to every other (no `Accept`, curl's `*/*`, a Prometheus limited to
/// `PrometheusText0.0.4`, Telegraf, a `q=0` refusal), as client_golang's promhttp does. Before,
/// every answer was OpenMetrics, which scrapers that only read 0.0.4 cannot parse.
#[tokio::test]
async fn metrics_answer_in_the_text_format_that_accept_asks_for() {
    let blue = backend("blue").await;
    let green = backend("green").await;
    let running = start(config(vec![route(&[blue.addr], &[green.addr], 10_000)])).await;
    let client = client();
    for _ in 0..3 {
        get(&client, &running.url("/")).await;
    }
    const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
    let cases: &[(Option<&str>, &str)] = &[
        (None, TEXT),
        (Some("*/*"), TEXT),
        (Some(PROMETHEUS_ACCEPT), OPENMETRICS),
        (Some("application/openmetrics-text"), OPENMETRICS),
        (Some("application/openmetrics-text; version=0.0.1"), OPENMETRICS),
        (Some("application/openmetrics-text; version=2.0.0"), TEXT),
        (Some("text/plain;version=0.0.4;q=0.6,*/*;q=0.5"), TEXT),
        (
            Some("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3,*/*;q=0.1"),
            TEXT,
        ),
        (Some("application/openmetrics-text;q=0, */*"), TEXT),
        (Some("text/plain;q=0.5, application/openmetrics-text;q=0.9"), OPENMETRICS),
    ];
    let requests = r#"crossfade_requests_total{route="web",backend="blue",class="2xx"} 3"#;
    for (accept, expected) in cases {
        let (status, headers, text) = get_metrics(&client, &running, *accept).await;
        assert_eq!(status, StatusCode::OK, "{accept:?}");
        assert_eq!(headers["content-type"], *expected, "{accept:?}");
        assert_eq!(headers["vary"], "accept", "{accept:?}");
        assert!(text.lines().any(|l| l == requests), "{accept:?}: {text}");
        let latency = "crossfade_request_duration_seconds";
        if *expected == TEXT {
            assert!(!text.contains("# EOF"), "{accept:?}: {text}");
            assert!(!text.contains("# UNIT"), "{accept:?}: {text}");
            let counter = "# TYPE crossfade_requests_total counter";
            assert!(text.lines().any(|l| l == counter), "{accept:?}: {text}");
            let info = "# TYPE crossfade_build_info gauge";
            assert!(text.lines().any(|l| l == info), "{accept:?}: {text}");
        } else {
            assert!(text.ends_with("# EOF\n"), "{accept:?}: {text}");
            let unit = format!("# UNIT {latency} seconds");
            assert!(text.lines().any(|l| l == unit), "{accept:?}: {text}");
            let counter = "# TYPE crossfade_requests counter";
            assert!(text.lines().any(|l| l == counter), "{accept:?}: {text}");
        }
        let histogram = format!("# TYPE {latency} histogram");
        assert!(text.lines().any(|l| l == histogram), "{accept:?}: {text}");
    }
    // HEAD gets the same headers, without a body (RFC 9110 §9.3.2).
    let head = Request::head(running.admin_url("/metrics"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, headers, body) = send(&client, head).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, ""));
    assert_eq!(headers["content-type"], TEXT);
}

#[tokio::test]
async fn a_route_owned_by_a_rollout_refuses_manual_weights_unless_forced() {
    use crossfade_proxy::RouteOwner;
    let blue = backend("blue").await;
    let green = backend("green").await;
    let running = start(config(vec![route(&[blue.addr], &[green.addr], 10_000)])).await;
    let client = client();
    let url = running.admin_url("/routes/web/weights");
    let owner = RouteOwner {
        rollout: 7,
        promoted: false,
    };
    running.proxy.claim("web", owner.clone()).unwrap();

    let (status, body) = put(&client, &url, r#"{"blue": 5000, "green": 5000}"#).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["owner"], serde_json::json!({ "rollout": 7 }));
    let message = body["error"].as_str().unwrap();
    assert!(message.contains("owned by rollout 7"), "{message}");
    assert!(
        message.contains("crossfade pause") && message.contains("crossfade abort"),
        "{message}"
    );
    assert!(message.contains("force=true"), "{message}");
    assert_eq!(
        running.proxy.generation(),
        1,
        "a refused write publishes nothing"
    );
    assert_eq!(running.proxy.status().routes[0].owner, Some(owner.clone()));

    // Once promoted, the rollout can be neither paused nor aborted: the answer says to wait for
    // its completion instead of suggesting commands it would refuse (trial report 6, F13).
    let promoted = RouteOwner {
        rollout: 7,
        promoted: true,
    };
    running.proxy.claim("web", promoted).unwrap();
    let (status, body) = put(&client, &url, r#"{"blue": 5000, "green": 5000}"#).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(
        body["owner"],
        serde_json::json!({ "rollout": 7, "promoted": true })
    );
    let message = body["error"].as_str().unwrap();
    assert!(
        !message.contains("pause") && !message.contains("abort"),
        "{message}"
    );
    assert!(message.contains("`crossfade status`"), "{message}");
    running.proxy.claim("web", owner.clone()).unwrap();

    let (status, body) = put(&client, &format!("{url}?force=yes"), r#"{"green": 5000}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = put(&client, &format!("{url}?force=true"), r#"{"green": 5000}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(running.proxy.generation(), 2);

    // The owner itself is never refused; another owner's release changes nothing.
    running
        .proxy
        .set_weights(
            "web",
            crossfade_proxy::Weights {
                blue: 10_000,
                green: 0,
            },
        )
        .unwrap();
    running.proxy.release(
        "web",
        &RouteOwner {
            rollout: 6,
            promoted: false,
        },
    );
    let (status, _) = put(&client, &url, r#"{"green": 100}"#).await;
    assert_eq!(status, StatusCode::CONFLICT);
    running.proxy.release("web", &owner);
    let (status, body) = put(&client, &url, r#"{"green": 100}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(running.proxy.status().routes[0].owner, None);
    assert!(running.proxy.claim("nope", owner).is_err());
}

/// Trial report 5 F14: an unknown path gets 404 naming the request and listing what this admin
/// API serves; a `/rollout` path (the rollout commands pointed at a `crossfade proxy`) is told that
/// rollouts need `crossfade run`'s admin address.
#[tokio::test]
async fn an_unknown_admin_path_gets_404_listing_the_endpoints() {
    let blue = backend("blue").await;
    let running = start(config(vec![route(&[blue.addr], &[], 10_000)])).await;
    let client = client();
    let (status, _, body) = get(&client, &running.admin_url("/bogus")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("GET /bogus: not an admin endpoint (this one serves GET /status, PUT /routes/{route}/weights, GET /metrics"),
        "{body}"
    );
    assert_eq!(
        body["endpoints"].as_array().map(Vec::len),
        Some(5),
        "{body}"
    );

    let req = Request::post(running.admin_url("/rollout/pause"))
        .body(Full::default())
        .unwrap();
    let (status, _, body) = send(&client, req).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with(
            "POST /rollout/pause: this is a `crossfade proxy` admin API, which has no rollouts;"
        ) && error.contains("need the admin address of `crossfade run`"),
        "{body}"
    );
}

/// Readiness is the proxy's own, not its backends' (trial 8, H15): with the route's only endpoint
/// ejected every request gets 503 "no endpoint", and `/readyz` still answers 200, naming the route
/// it cannot serve; a weighted backend without configured endpoints is what makes it unready.
#[tokio::test]
async fn readyz_stays_ready_while_a_route_has_no_endpoint_up_and_names_that_route() {
    let dead = refused_addr().await;
    let mut web = route(&[dead], &[], 10_000);
    // The 503s this is about: failing open, the dead endpoint would be tried (502).
    web.fail_open = false;
    web.outlier = crossfade_proxy::config::OutlierConfig {
        consecutive_failures: 1,
        base_ejection: std::time::Duration::from_secs(600),
        max_ejection: std::time::Duration::from_secs(600),
        ..crossfade_proxy::config::OutlierConfig::default()
    };
    let running = start(config(vec![web])).await;
    let client = client();
    assert_eq!(
        get(&client, &running.url("/")).await.0,
        StatusCode::BAD_GATEWAY
    );
    assert_eq!(
        get(&client, &running.url("/")).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let (status, _, body) = get(&client, &running.admin_url("/readyz")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        "ready\nunserved: route web: no endpoint up (every request gets 503 no endpoint)\n"
    );
}

/// Ready means serving from the moment the listener is handed over, not from when the spawned
/// accept loop first runs (session 15: `crossfade proxy --kube` said `READY=1` and `/readyz`
/// answered 503 "not serving yet" when the scheduler had not yet run the server's task). The
/// server's future, never polled, already counts as serving; dropped, it no longer does.
#[tokio::test(flavor = "current_thread")]
async fn the_proxy_is_ready_as_soon_as_serve_takes_the_listener_and_not_after_its_future_is_dropped(
) {
    let blue = backend("blue").await;
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = crossfade_proxy::ProxyMetrics::register(&mut registry);
    let config = config(vec![route(&[blue.addr], &[], 10_000)]);
    let proxy = crossfade_proxy::Proxy::new(&config, metrics).unwrap();
    assert_eq!(
        proxy.status().not_ready_reason().as_deref(),
        Some("not serving yet")
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = proxy.serve(listener, std::future::pending());
    assert!(proxy.status().serving);
    assert_eq!(proxy.status().not_ready_reason(), None);
    drop(server);
    assert_eq!(
        proxy.status().not_ready_reason().as_deref(),
        Some("not serving yet")
    );
}

/// Trial 17, T7: a request announcing a body over the admin API's 64 KiB limit in its
/// `Content-Length` was read up to the limit, and one that then sent less than that waited for
/// the rest until `limits.header_read_timeout` and got `408`. It gets `413` at once, before its
/// body is read.
#[tokio::test]
async fn an_announced_body_over_the_limit_gets_413_before_it_is_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let blue = backend("blue").await;
    let running = start(config(vec![route(&[blue.addr], &[], 10_000)])).await;
    let mut stream = tokio::net::TcpStream::connect(running.admin).await.unwrap();
    stream
        .write_all(
            b"PUT /routes/web/weights HTTP/1.1\r\nHost: admin\r\nContent-Length: 99999999999\r\n\r\n{}",
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0; 4096];
    while !String::from_utf8_lossy(&answer).contains("\r\n\r\n") {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");
}

/// A compressed weights body was read as JSON as it stood ("not valid JSON: expected value at
/// line 1 column 1"), and a plain one labelled gzip was applied: both get 415 naming the coding.
#[tokio::test]
async fn a_body_with_a_content_coding_gets_415_naming_it() {
    let blue = backend("blue").await;
    let green = backend("green").await;
    let running = start(config(vec![route(&[blue.addr], &[green.addr], 10_000)])).await;
    let url = running.admin_url("/routes/web/weights");
    let client = client();
    for coding in ["gzip", "identity, br"] {
        let req = Request::builder()
            .method(Method::PUT)
            .uri(&url)
            .header("content-encoding", coding)
            .body(Full::new(Bytes::from_static(
                br#"{"blue": 0, "green": 10000}"#,
            )))
            .unwrap();
        let (status, _, body) = send(&client, req).await;
        assert_eq!(
            status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{coding}: {body}"
        );
        assert!(
            body.contains(&format!(
                "Content-Encoding: {coding}: the admin API reads bodies as sent"
            )),
            "{body}"
        );
    }
    let (status, _) = put(&client, &url, r#"{"blue": 0, "green": 10000}"#).await;
    assert_eq!(status, StatusCode::OK);
}

/// `CONNECT host:port` (an authority-form target, no path) was answered `CONNECT : not an admin
/// endpoint`; the 404 names the target.
#[tokio::test]
async fn a_connect_to_the_admin_api_is_named_with_its_target() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let blue = backend("blue").await;
    let running = start(config(vec![route(&[blue.addr], &[], 10_000)])).await;
    let mut stream = tokio::net::TcpStream::connect(running.admin).await.unwrap();
    let request = "CONNECT 127.0.0.1:9 HTTP/1.1\r\nHost: 127.0.0.1:9\r\nConnection: close\r\n\r\n";
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 404 "), "{answer}");
    assert!(
        answer.contains("CONNECT 127.0.0.1:9: not an admin endpoint"),
        "{answer}"
    );
}

/// `/status` names the route's backup slot (`routes[].backup`), which takes at weight 0 what the
/// backends with weight cannot serve: before (check32) it was left out, so an operator could not
/// tell why a weight-0 backend answered requests (a `crossfade run` retiring backend, or a
/// configured backup). A route without one has no `backup` key.
#[tokio::test]
async fn status_names_the_routes_backup_slot() {
    let green = backend("green").await;
    let dead = refused_addr().await;
    let mut web = route(&[dead], &[green.addr], 10_000);
    web.backup = Some(crossfade_proxy::Slot::Green);
    let mut plain = route(&[dead], &[green.addr], 10_000);
    plain.name = "plain".into();
    plain.path_prefix = "/plain".into();
    let running = start(config(vec![plain, web])).await;
    let client = client();

    let (status, headers, _) = get(&client, &running.url("/")).await;
    assert_eq!(status, StatusCode::OK, "the backup answers");
    assert_eq!(headers["x-pool"], "green");
    let (status, _, _) = get(&client, &running.url("/plain")).await;
    assert_ne!(
        status,
        StatusCode::OK,
        "a weight-0 green that is not the backup"
    );

    let (_, _, body) = get(&client, &running.admin_url("/status")).await;
    let status_json: Value = serde_json::from_str(&body).unwrap();
    let routes = status_json["routes"].as_array().unwrap();
    let named = |name: &str| routes.iter().find(|r| r["name"] == name).unwrap().clone();
    assert_eq!(named("web")["backup"], "green", "{status_json:#}");
    assert!(named("plain").get("backup").is_none(), "{status_json:#}");
}
