use crossfade_proxy::histogram::LATENCY_BOUNDS_SECONDS;
use serde_json::{json, Value};

use super::*;

/// One result of an instant query: series `name` of `shop/web`'s `backend` on proxy replica
/// `instance`, with `extra` labels.
fn sample(name: &str, instance: &str, backend: &str, extra: &[(&str, &str)], v: f64) -> Value {
    let mut metric = json!({
        "__name__": name, "route": "shop/web", "backend": backend,
        "instance": instance, "job": "crossfade-proxy",
    });
    for (k, value) in extra {
        metric[*k] = json!(value);
    }
    json!({ "metric": metric, "value": [1_765_000_000.5, format!("{v}")] })
}

/// What Prometheus answers for one replica's `backend`: requests, errors, and `at_2ms` requests
/// in the (1 ms, 2.5 ms] latency bucket, as the proxy exports them (cumulative `le` buckets,
/// `+Inf` written as Prometheus writes it).
fn replica(instance: &str, backend: &str, requests: u64, errors: u64, at_2ms: u64) -> Vec<Value> {
    let mut out = vec![
        sample(
            "crossfade_dispatched_requests_total",
            instance,
            backend,
            &[],
            requests as f64,
        ),
        sample(
            "crossfade_backend_errors_total",
            instance,
            backend,
            &[],
            errors as f64,
        ),
        sample("crossfade_in_flight_requests", instance, backend, &[], 1.0),
        sample(
            "crossfade_request_duration_seconds_sum",
            instance,
            backend,
            &[],
            0.002 * at_2ms as f64,
        ),
    ];
    let bounds = LATENCY_BOUNDS_SECONDS.iter().map(|b| format!("{b}"));
    for (i, le) in bounds.chain(["+Inf".to_owned()]).enumerate() {
        let cumulative = if i >= 2 { at_2ms } else { 0 };
        let name = "crossfade_request_duration_seconds_bucket";
        out.push(sample(
            name,
            instance,
            backend,
            &[("le", &le)],
            cumulative as f64,
        ));
    }
    out
}

fn answer(results: Vec<Value>) -> Value {
    json!({ "status": "success", "data": { "resultType": "vector", "result": results } })
}

/// Merges `results` as one refresh of `shop/web` and returns green's totals.
fn merged(state: &mut State, results: Vec<Value>) -> BackendSnapshot {
    let readings = answer_readings(&answer(results)).expect("readable answer");
    state.merge("shop/web", readings, "incomplete");
    state
        .snapshot("shop/web", Slot::Green, "unread")
        .expect("green's totals")
}

#[test]
fn an_answer_reads_per_replica_with_buckets_gathered_into_histograms() {
    let mut results = replica("10.0.0.1:9901", "green", 120, 7, 113);
    results.extend(replica("10.0.0.2:9901", "green", 30, 1, 29));
    results.extend(replica("10.0.0.2:9901", "blue", 500, 0, 480));
    let readings = answer_readings(&answer(results)).expect("readable answer");
    assert_eq!(readings.len(), 2, "one entry per replica: {readings:?}");
    let (replica, first) = &readings[0];
    assert_eq!(replica, r#"instance="10.0.0.1:9901",job="crossfade-proxy""#);
    let green = &first.as_ref().expect("read")[&("shop/web".to_owned(), Slot::Green)];
    assert_eq!((green.requests, green.errors, green.in_flight), (120, 7, 1));
    assert_eq!(green.latency.counts[2], 113);
    assert_eq!(green.latency.count(), 113);
    assert!((green.latency.sum_seconds - 0.226).abs() < 1e-9);

    let mut state = State::default();
    let green = merged(&mut state, replica_pair(120, 30));
    assert_eq!(
        (green.requests, green.in_flight),
        (150, 2),
        "summed over replicas"
    );
}

/// Both replicas' green series with `a` and `b` requests (no errors, all at 2 ms).
fn replica_pair(a: u64, b: u64) -> Vec<Value> {
    let mut results = replica("10.0.0.1:9901", "green", a, 0, a);
    results.extend(replica("10.0.0.2:9901", "green", b, 0, b));
    results
}

#[test]
fn a_replica_restart_in_prometheus_never_takes_counts_back() {
    let mut state = State::default();
    assert_eq!(merged(&mut state, replica_pair(100, 50)).requests, 150);
    // Replica a restarted: Prometheus' sum falls to 10 + 60, the snapshot adds 10 and 10.
    let after = merged(&mut state, replica_pair(10, 60));
    assert_eq!(after.requests, 170, "a restart never subtracts");
    assert_eq!(after.latency.count(), 170, "nor do its latency buckets");
    // A scrape of replica b missed (its series stale): nothing added, nothing taken back.
    let missed = merged(&mut state, replica("10.0.0.1:9901", "green", 15, 0, 15));
    assert_eq!(missed.requests, 175);
    // b is scraped again: it adds what it counted meanwhile, not its whole count.
    assert_eq!(merged(&mut state, replica_pair(15, 64)).requests, 179);
}

#[test]
fn prometheus_errors_and_other_answers_say_why_and_leave_no_reading() {
    let error = json!({
        "status": "error", "errorType": "bad_data",
        "error": "1:2: parse error: unexpected character"
    });
    let why = answer_readings(&error).expect_err("an error answer");
    assert_eq!(
        why,
        "prometheus answered bad_data: 1:2: parse error: unexpected character"
    );
    let matrix = json!({ "status": "success", "data": { "resultType": "matrix", "result": [] } });
    let why = answer_readings(&matrix).expect_err("a matrix");
    assert!(
        why.contains("returned a matrix, expected a vector"),
        "{why}"
    );
    let mut odd = answer(replica("a:1", "green", 1, 0, 1));
    odd["data"]["result"][0]["value"] = json!([1.0, "many"]);
    let why = answer_readings(&odd).expect_err("no number");
    assert!(why.contains("holds no number"), "{why}");
    // Buckets of another proxy version: that replica could not be read, and the route has no
    // complete reading.
    let mut other = replica("a:1", "green", 1, 0, 1);
    other.pop();
    let readings = answer_readings(&answer(other)).expect("an answer");
    let mut state = State::default();
    state.merge("shop/web", readings, "incomplete");
    let why = state
        .snapshot("shop/web", Slot::Green, "unread")
        .expect_err("incomplete");
    assert!(
        why.to_string()
            .contains("crossfade_request_duration_seconds of shop/web/green"),
        "{why}"
    );
}

#[test]
fn the_query_selects_the_routes_families_and_the_selector() {
    let source = PrometheusMetrics::new("http://prom:9090/", Some(r#"job="edge""#)).expect("valid");
    assert_eq!(
        source.query(r#"shop/we"b"#),
        format!(
            r#"{{__name__=~"{FAMILIES}",route="shop/we\"b",backend=~"blue|green",job="edge"}}"#
        )
    );
    assert_eq!(source.address, "http://prom:9090");
}

#[test]
fn addresses_and_selectors_are_checked_naming_the_field() {
    let refused = |address: &str, selector: Option<&str>| {
        PrometheusMetrics::new(address, selector)
            .err()
            .unwrap_or_else(|| panic!("{address} {selector:?} accepted"))
    };
    let e = refused("prometheus:9090", None);
    assert!(
        e.starts_with("address: \"prometheus:9090\" is not an http"),
        "{e}"
    );
    let e = refused("ftp://prometheus:9090", None);
    assert!(e.starts_with("address: "), "{e}");
    let e = refused("http://prometheus:9090/?x=1", None);
    assert!(e.contains("has a query or fragment"), "{e}");
    let e = refused("http://p:9090", Some(r#"{job="a"}"#));
    assert!(
        e.starts_with("selector: ") && e.contains("without braces"),
        "{e}"
    );
    let e = refused("http://p:9090", Some(r#"job="a", route="x""#));
    assert!(e.contains("matches on route"), "{e}");
    assert!(PrometheusMetrics::new("https://p.example/prom", Some(" ")).is_ok());
}

#[tokio::test]
async fn an_unreachable_prometheus_leaves_the_route_without_a_reading() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = closed.local_addr().expect("addr");
    drop(closed);
    let source = PrometheusMetrics::new(&format!("http://{addr}"), None).expect("valid");
    source.refresh("shop/web", &[]).await;
    for slot in Slot::ALL {
        let why = source.snapshot("shop/web", slot).expect_err("no reading");
        let why = why.to_string();
        assert!(
            why.contains("no complete metrics") && why.contains(&format!("http://{addr}")),
            "{why}"
        );
    }
}

/// Reads every `headers_from` source as its value, or fails with its error.
struct Fixed(Result<&'static str, &'static str>);

impl Values for Fixed {
    fn read<'a>(
        &'a self,
        _: &'a crate::spec::headers::ValueFrom,
    ) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move { self.0.map(str::to_owned).map_err(str::to_owned) })
    }
}

/// A one-request-per-connection HTTP/1.1 server on 127.0.0.1:0 that records each request's
/// headers (names lowercased) and answers green's series of `shop/web` (120 requests, 7 errors)
/// only to a request with `Authorization: Bearer t1` and `X-Scope-OrgID: shop`, else `401`.
async fn guarded_prometheus() -> (String, Arc<Mutex<Vec<BTreeMap<String, String>>>>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = format!("http://{}", listener.local_addr().expect("addr"));
    let seen: Arc<Mutex<Vec<BTreeMap<String, String>>>> = Arc::default();
    let log = Arc::clone(&seen);
    let ok = answer(replica("10.0.0.1:9901", "green", 120, 7, 113)).to_string();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let mut reader = BufReader::new(stream);
            let mut headers = BTreeMap::new();
            let mut line = String::new();
            while reader.read_line(&mut line).await.is_ok_and(|n| n > 2) {
                if let Some((name, value)) = line.split_once(':') {
                    headers.insert(name.to_ascii_lowercase(), value.trim().to_owned());
                }
                line.clear();
            }
            let admitted = headers.get("authorization").map(String::as_str) == Some("Bearer t1")
                && headers.get("x-scope-orgid").map(String::as_str) == Some("shop");
            log.lock().expect("log").push(headers);
            let (status, body) = match admitted {
                true => ("200 OK", ok.as_str()),
                false => ("401 Unauthorized", "unauthorized"),
            };
            let reply = format!(
                "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = reader.get_mut().write_all(reply.as_bytes()).await;
        }
    });
    (address, seen)
}

/// Session 42: `metricsSource.prometheus.headers` and `headersFrom` are sent on the query, the
/// `headersFrom` value read through the source's [`Values`] (its trailing line break removed);
/// a server that requires them is read, and without them it answers 401 and nothing is read.
#[tokio::test]
async fn every_query_carries_the_sources_headers_read_before_it() {
    let (address, seen) = guarded_prometheus().await;
    let from = vec![HeaderFrom {
        name: "Authorization".into(),
        value_from: crate::spec::headers::ValueFrom::SecretKeyRef(crate::spec::headers::KeyRef {
            name: "prom-token".into(),
            key: "token".into(),
        }),
    }];
    let plain = BTreeMap::from([("X-Scope-OrgID".to_owned(), "shop".to_owned())]);
    let source = PrometheusMetrics::new(&address, None)
        .expect("valid")
        .with_headers(plain, from.clone(), Arc::new(Fixed(Ok("Bearer t1\n"))));
    source.refresh("shop/web", &[]).await;
    let green = source
        .snapshot("shop/web", Slot::Green)
        .expect("read through the server requiring the headers");
    assert_eq!((green.requests, green.errors), (120, 7));
    let sent = seen.lock().expect("log").clone();
    assert_eq!(sent.len(), 1, "one query: {sent:?}");
    assert_eq!(sent[0]["authorization"], "Bearer t1");
    assert_eq!(sent[0]["x-scope-orgid"], "shop");

    let bare = PrometheusMetrics::new(&address, None).expect("valid");
    bare.refresh("shop/web", &[]).await;
    let why = bare.snapshot("shop/web", Slot::Green).expect_err("refused");
    assert!(
        why.to_string().contains("status 401: unauthorized"),
        "{why}"
    );

    // A header that cannot be read: the query is not sent, and the field is named.
    let unread = PrometheusMetrics::new(&address, None)
        .expect("valid")
        .with_headers(
            BTreeMap::new(),
            from,
            Arc::new(Fixed(Err("Secret shop/prom-token does not exist"))),
        );
    unread.refresh("shop/web", &[]).await;
    let why = unread
        .snapshot("shop/web", Slot::Green)
        .expect_err("unread");
    let named = "rollout.analysis.metrics_source.prometheus.headers_from[0]: header \
                 Authorization: Secret shop/prom-token does not exist";
    assert!(why.to_string().contains(named), "{why}");
    assert_eq!(
        seen.lock().expect("log").len(),
        2,
        "nothing sent without it"
    );
}
