//! Shadow traffic over real sockets: requests mirrored to the preview, answers compared by kind,
//! the bounds (methods, bodies, sizes, concurrency), and that the client only ever gets the active
//! backend's answer, on time, even from a green that hangs.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use crossfade_proxy::config::{ShadowConfig, ShadowIgnore};
use crossfade_proxy::{ShadowSnapshot, Slot};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::support::*;

/// What a shadow test backend saw: (method, path, whether it carried `X-Crossfade-Shadow: 1`).
type Seen = Arc<Mutex<Vec<(Method, String, bool)>>>;

/// Bodies the backend received, in order.
type Bodies = Arc<Mutex<Vec<Bytes>>>;

/// A backend for comparisons. Blue and green answer alike except where green's `variant` says:
/// `/body` (another body), `/status` (500), `/header` (another content-type), `/hang` (green
/// never answers), `/slow` (green answers the same after 400 ms), `/big` (5000 bytes, the same on both), `/big-status` (5000 bytes, green 500),
/// `/now` (a body that differs every time), `/echo` (the request body back), `/both-slow` (both
/// answer after 800 ms), `/paced` (blue answers after 50 ms, green the same after 200 ms). Every answer carries
/// `x-pool`, never compared.
async fn shadow_backend(green: bool) -> (SocketAddr, Seen) {
    let (addr, seen, _) = recording_backend(green).await;
    (addr, seen)
}

/// [`shadow_backend`], also keeping the request bodies.
async fn recording_backend(green: bool) -> (SocketAddr, Seen, Bodies) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let bodies: Bodies = Arc::default();
    let (state, kept) = (seen.clone(), bodies.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (state, kept) = (state.clone(), kept.clone());
            let service = service_fn(move |req| answer(green, state.clone(), kept.clone(), req));
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    (addr, seen, bodies)
}

async fn answer(
    green: bool,
    seen: Seen,
    bodies: Bodies,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let shadow = req.headers().get("x-crossfade-shadow").is_some();
    seen.lock()
        .unwrap()
        .push((req.method().clone(), path.clone(), shadow));
    let received = req.into_body().collect().await.unwrap().to_bytes();
    bodies.lock().unwrap().push(received.clone());
    let (mut status, mut content_type, mut body) = (200, "text/plain", path.clone());
    match (green, path.as_str()) {
        (true, "/body") => body = "something else".into(),
        (true, "/status") => status = 500,
        (true, "/header") => content_type = "application/json",
        (true, "/hang") => tokio::time::sleep(Duration::from_secs(3600)).await,
        (true, "/slow") => tokio::time::sleep(Duration::from_millis(400)).await,
        (false, "/paced") => tokio::time::sleep(Duration::from_millis(50)).await,
        (true, "/paced") => tokio::time::sleep(Duration::from_millis(200)).await,
        (_, "/both-slow") => tokio::time::sleep(Duration::from_millis(800)).await,
        (_, "/big") => body = "x".repeat(5000),
        (g, "/big-status") => {
            body = "x".repeat(5000);
            status = if g { 500 } else { 200 };
        }
        (_, "/now") => body = format!("{:?}", std::time::SystemTime::now()),
        (_, "/echo") => body = String::from_utf8_lossy(&received).into_owned(),
        _ => {}
    }
    let response = Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("x-pool", if green { "green" } else { "blue" })
        .body(Full::from(body))
        .unwrap();
    Ok(response)
}

struct Setup {
    running: Running,
    green_seen: Seen,
}

/// A proxy with blue active at 100%, green at 0% with endpoints, and `shadow` on the route.
async fn setup(shadow: ShadowConfig) -> Setup {
    let (blue, _) = shadow_backend(false).await;
    let (green, green_seen) = shadow_backend(true).await;
    let mut route = route(&[blue], &[green], 10_000);
    route.shadow = Some(shadow);
    let running = start(config(vec![route])).await;
    Setup {
        running,
        green_seen,
    }
}

fn snapshot(running: &Running) -> ShadowSnapshot {
    running.proxy.shadow_stats("web", Slot::Green).unwrap()
}

/// Waits (up to 10 s, a hang bound, not a speed assertion) until `done` holds for the counters.
async fn settle(running: &Running, done: impl Fn(&ShadowSnapshot) -> bool) -> ShadowSnapshot {
    for _ in 0..1000 {
        let s = snapshot(running);
        if done(&s) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("shadow counters never settled: {:?}", snapshot(running));
}

/// Every request the client sends gets blue's answer (`x-pool: blue`, blue's body).
async fn get_blue(client: &TestClient, running: &Running, path: &str) -> (StatusCode, String) {
    let (status, headers, body) = get(client, &running.url(path)).await;
    assert_eq!(headers["x-pool"], "blue", "{path}: the client saw green");
    (status, body)
}

#[tokio::test]
async fn an_identical_green_matches_and_the_client_only_sees_blue() {
    let Setup {
        running,
        green_seen,
    } = setup(ShadowConfig::default()).await;
    let client = client();
    for _ in 0..20 {
        let (status, body) = get_blue(&client, &running, "/same").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "/same"));
    }
    let s = settle(&running, |s| s.compared() == 20).await;
    assert_eq!((s.mirrored, s.matched, s.mismatched), (20, 20, 0));
    assert_eq!((s.skipped, s.errors, s.in_flight), (0, 0, 0));
    let seen = green_seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 20);
    assert!(seen
        .iter()
        .all(|(m, p, shadow)| m == Method::GET && p == "/same" && *shadow));
    // Mirrored requests are not green's live traffic: the rollout's analysis never sees them.
    let live = running.proxy.backend_stats("web", Slot::Green).unwrap();
    assert_eq!((live.requests, live.in_flight), (0, 0));
}

/// Case C19 for mirrors: a mirrored request's `TE: trailers` reaches the HTTP/1.1 preview named
/// in `Connection` (RFC 9110 §10.1.4), as the live request reaches the active backend (session 40).
#[tokio::test]
async fn a_mirrored_te_trailers_is_named_in_connection_to_an_http11_preview() {
    let (blue, green) = (backend("blue").await, backend("green").await);
    let mut route = route(&[blue.addr], &[green.addr], 10_000);
    route.shadow = Some(ShadowConfig::default());
    let running = start(config(vec![route])).await;
    let request = Request::get(running.url("/echo"))
        .header("te", "trailers")
        .header("connection", "te")
        .body(Full::default())
        .unwrap();
    assert_eq!(send(&client(), request).await.0, StatusCode::OK);
    settle(&running, |s| s.mirrored == 1 && s.in_flight == 0).await;
    for (pool, seen) in [("blue", &blue.seen), ("green", &green.seen)] {
        let seen = seen.lock().unwrap();
        let [headers] = seen.as_slice() else {
            panic!("{pool} saw {} requests", seen.len());
        };
        let values = |name: &str| headers.get_all(name).iter().collect::<Vec<_>>();
        assert_eq!(values("te"), ["trailers"], "{pool}: {headers:?}");
        assert_eq!(values("connection"), ["te"], "{pool}: {headers:?}");
    }
}

/// Case C17 for mirrors: the preview's pooled connections are its live requests' too, so its
/// `Keep-Alive: timeout=N` bounds their reuse when a mirror's response carries it (session 41):
/// `timeout=1` leaves nothing after the 1 s margin, and each mirror has a connection of its own.
#[tokio::test]
async fn a_previews_keep_alive_timeout_on_a_mirrored_response_bounds_its_connections_reuse() {
    let (blue, _) = shadow_backend(false).await;
    let one = Duration::from_secs(1);
    let (green, connections) = crate::backend_keep_alive::backend("timeout=1", one).await;
    let mut route = route(&[blue], &[green], 10_000);
    route.shadow = Some(ShadowConfig::default());
    let running = start(config(vec![route])).await;
    let client = client();
    for done in 1..=3 {
        assert_eq!(get_blue(&client, &running, "/same").await.0, StatusCode::OK);
        settle(&running, |s| s.compared() + s.errors == done).await;
    }
    assert_eq!(
        *connections.lock().unwrap(),
        [1, 2, 3],
        "green's connection of each mirror"
    );
}

#[tokio::test]
async fn mismatches_are_counted_by_kind_in_metrics_and_status() {
    let Setup { running, .. } = setup(ShadowConfig::default()).await;
    let client = client();
    for path in ["/same", "/body", "/status", "/header", "/header"] {
        let (status, body) = get_blue(&client, &running, path).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, path));
    }
    let s = settle(&running, |s| s.compared() == 5).await;
    assert_eq!((s.matched, s.mismatched), (1, 4));
    let kinds = (s.status_mismatches, s.header_mismatches, s.body_mismatches);
    assert_eq!(kinds, (1, 2, 1));

    let (_, _, metrics) = get(&client, &running.admin_url("/metrics")).await;
    for line in [
        "crossfade_shadow_mirrored_total{route=\"web\",backend=\"green\"} 5",
        "crossfade_shadow_compared_total{route=\"web\",backend=\"green\",result=\"matched\"} 1",
        "crossfade_shadow_compared_total{route=\"web\",backend=\"green\",result=\"mismatched\"} 4",
        "crossfade_shadow_mismatches_total{route=\"web\",backend=\"green\",kind=\"status\"} 1",
        "crossfade_shadow_mismatches_total{route=\"web\",backend=\"green\",kind=\"header\"} 2",
        "crossfade_shadow_mismatches_total{route=\"web\",backend=\"green\",kind=\"body\"} 1",
        "crossfade_shadow_skipped_total{route=\"web\",backend=\"green\",reason=\"method\"} 0",
        "crossfade_shadow_errors_total{route=\"web\",backend=\"green\",kind=\"response_timeout\"} 0",
        "crossfade_shadow_in_flight{route=\"web\",backend=\"green\"} 0",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
    let (_, _, status) = get(&client, &running.admin_url("/status")).await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let green = &status["routes"][0]["green"]["shadow"];
    assert_eq!(green["mismatched"], 4, "{status}");
    assert_eq!(green["body_mismatches"], 1, "{status}");
}

#[tokio::test]
async fn a_hanging_green_never_delays_the_client_and_its_exchanges_are_capped() {
    let shadow = ShadowConfig {
        max_in_flight: 2,
        timeout: Duration::from_millis(500),
        ..ShadowConfig::default()
    };
    let Setup { running, .. } = setup(shadow).await;
    let client = client();
    for _ in 0..5 {
        // Green never answers; a client that waited for it would hang here for an hour.
        let answer = get_blue(&client, &running, "/hang");
        let (status, body) = tokio::time::timeout(Duration::from_secs(10), answer)
            .await
            .expect("the client waited for green");
        assert_eq!((status, body.as_str()), (StatusCode::OK, "/hang"));
    }
    let s = snapshot(&running);
    assert_eq!((s.mirrored, s.in_flight, s.skipped), (2, 2, 3), "{s:?}");
    // Past `timeout` the two mirrored exchanges are given up and counted as errors.
    let s = settle(&running, |s| s.in_flight == 0).await;
    assert_eq!((s.errors, s.compared()), (2, 0));
    let (_, _, metrics) = get(&client, &running.admin_url("/metrics")).await;
    for line in [
        "crossfade_shadow_skipped_total{route=\"web\",backend=\"green\",reason=\"concurrency\"} 3",
        "crossfade_shadow_errors_total{route=\"web\",backend=\"green\",kind=\"response_timeout\"} 2",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
}

/// newuser32's G: a green that answered the same but took 2 s passed its shadow step, since the
/// mirrored exchanges' time was not recorded anywhere. It is now: green's time to its response
/// head, in the live duration buckets, in the snapshot the analysis reads and on `/metrics`.
#[tokio::test]
async fn a_slow_greens_mirrored_response_time_is_recorded_in_its_shadow_histogram() {
    let Setup { running, .. } = setup(ShadowConfig::default()).await;
    let client = client();
    for _ in 0..3 {
        let (status, body) = get_blue(&client, &running, "/slow").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "/slow"));
    }
    let s = settle(&running, |s| s.compared() == 3).await;
    assert_eq!(s.matched, 3);
    assert_eq!(s.latency.count(), 3, "{:?}", s.latency.counts);
    let p99 = s.latency.quantile(0.99).unwrap();
    // Green sleeps 400 ms before its head; the upper bound only catches a wrong unit.
    assert!((0.39..5.0).contains(&p99), "shadow p99 {p99}");
    assert_eq!(
        s.latency.slower_than(0.39).at_least,
        3,
        "{:?}",
        s.latency.counts
    );
    assert!(s.unanswered.is_empty(), "{:?}", s.unanswered);

    let (_, _, metrics) = get(&client, &running.admin_url("/metrics")).await;
    let series = "crossfade_shadow_request_duration_seconds";
    let labels = "route=\"web\",backend=\"green\"";
    for line in [
        format!("# TYPE {series} histogram"),
        format!("{series}_bucket{{{labels},le=\"0.25\"}} 0"),
        format!("{series}_bucket{{{labels},le=\"0.5\"}} 3"),
        format!("{series}_count{{{labels}}} 3"),
        format!("crossfade_shadow_unanswered_requests{{{labels},longer_than=\"0\"}} 0"),
    ] {
        assert!(metrics.contains(&line), "{line} not in\n{metrics}");
    }
    // Blue's live histogram is not green's: mirrored requests never count in green's.
    let live = format!("crossfade_request_duration_seconds_count{{{labels}}}");
    assert!(!metrics.contains(&format!("{live} 3")), "{metrics}");
}

/// The shadow step compares green with blue on the very same requests: per mirrored request
/// both answered, blue's time to its head (as the live histogram times it) and green's are
/// recorded as a pair. Green 4× slower than blue on `/paced` shows in the pairs, and blue's live
/// histogram is its own.
#[tokio::test]
async fn a_mirrored_request_records_blues_and_greens_times_as_a_pair() {
    let Setup { running, .. } = setup(ShadowConfig::default()).await;
    let client = client();
    for _ in 0..4 {
        let (status, body) = get_blue(&client, &running, "/paced").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "/paced"));
    }
    let s = settle(&running, |s| s.compared() == 4).await;
    assert_eq!(s.paired_active.count(), 4, "{:?}", s.paired_active.counts);
    assert_eq!(s.paired_preview.count(), 4, "{:?}", s.paired_preview.counts);
    let blue = s.paired_active.quantile(0.99).unwrap();
    let green = s.paired_preview.quantile(0.99).unwrap();
    // Blue sleeps 50 ms before its head, green 200 ms; the upper bounds only catch a wrong unit
    // or the two swapped.
    assert!((0.049..0.19).contains(&blue), "blue's paired p99 {blue}");
    assert!((0.199..5.0).contains(&green), "green's paired p99 {green}");
    assert!(green / blue > 1.0, "{green} / {blue}");

    let (_, _, metrics) = get(&client, &running.admin_url("/metrics")).await;
    let labels = "route=\"web\",backend=\"green\"";
    let (active, preview) = (
        "crossfade_shadow_paired_active_duration_seconds",
        "crossfade_shadow_paired_preview_duration_seconds",
    );
    for line in [
        format!("# TYPE {active} histogram"),
        format!("# TYPE {preview} histogram"),
        format!("{active}_bucket{{{labels},le=\"0.025\"}} 0"),
        format!("{active}_bucket{{{labels},le=\"0.15\"}} 4"),
        format!("{active}_count{{{labels}}} 4"),
        format!("{preview}_bucket{{{labels},le=\"0.15\"}} 0"),
        format!("{preview}_bucket{{{labels},le=\"0.25\"}} 4"),
        format!("{preview}_count{{{labels}}} 4"),
    ] {
        assert!(metrics.contains(&line), "{line} not in\n{metrics}");
    }
    // `/status` shows the pairs in the duration buckets only, as `/metrics` has them: the fine
    // buckets (2,561 counts each) are the analysis's.
    let (_, _, status) = get(&client, &running.admin_url("/status")).await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let green = &status["routes"][0]["green"]["shadow"];
    for paired in ["paired_active", "paired_preview"] {
        let counts = green[paired]["counts"].as_array().map(Vec::len);
        assert_eq!(counts, Some(19), "{paired}: {green}");
        assert!(green[paired].get("fine").is_none(), "{paired}: {green}");
    }
}

/// A green that never answers leaves no response to time, yet it must not look fast: its
/// mirrored requests count as waiting while they wait, then as samples at the timeout.
#[tokio::test]
async fn a_green_that_never_answers_is_timed_while_it_waits_and_at_the_timeout() {
    let shadow = ShadowConfig {
        timeout: Duration::from_millis(1500),
        ..ShadowConfig::default()
    };
    let Setup { running, .. } = setup(shadow).await;
    let client = client();
    get_blue(&client, &running, "/hang").await;
    let s = settle(&running, |s| s.unanswered.longer_than(0.25) == 1).await;
    assert_eq!(s.latency.count(), 0, "{:?}", s.latency.counts);
    let (_, _, metrics) = get(&client, &running.admin_url("/metrics")).await;
    let line = "crossfade_shadow_unanswered_requests{route=\"web\",backend=\"green\",longer_than=\"0.25\"} 1";
    assert!(metrics.contains(line), "{line} not in\n{metrics}");
    let s = settle(&running, |s| s.in_flight == 0).await;
    assert_eq!((s.errors, s.latency.count()), (1, 1));
    // Timed at the 1.5 s timeout (the fine bucket holding 1.5 s may begin just below it).
    assert_eq!(
        s.latency.slower_than(1.45).at_least,
        1,
        "{:?}",
        s.latency.counts
    );
    // Paired with blue's time to its head (blue had answered whole): green at the timeout, a
    // lower bound, so the pairs do not leave out the slowest green of all.
    assert_eq!(s.paired_preview.slower_than(1.45).at_least, 1);
    assert_eq!(s.paired_active.slower_than(1.0).at_most, 0);
    assert_eq!(s.paired_active.count(), 1);
    assert!(s.unanswered.is_empty(), "{:?}", s.unanswered);
}

/// A request both backends take longer than `shadow.timeout` to answer (slow by nature) is not
/// the preview's failure: it is skipped `primary_incomplete` (blue's answer was not complete
/// either), still timed, and not counted in `errors`, which the shadow step holds to
/// `max_error_rate` (check33: counted as an error, it failed an identical green). A preview
/// that times out where blue answered in time is an error still (the test above).
#[tokio::test]
async fn a_request_both_backends_answer_after_the_timeout_is_skipped_not_the_previews_error() {
    let shadow = ShadowConfig {
        timeout: Duration::from_millis(300),
        ..ShadowConfig::default()
    };
    let Setup { running, .. } = setup(shadow).await;
    let client = client();
    get_blue(&client, &running, "/both-slow").await;
    let s = settle(&running, |s| s.in_flight == 0 && s.skipped == 1).await;
    assert_eq!((s.errors, s.compared()), (0, 0), "{s:?}");
    assert_eq!(s.latency.count(), 1, "timed: {:?}", s.latency.counts);
    let (_, _, metrics) = get(&client, &running.admin_url("/metrics")).await;
    let line = "crossfade_shadow_skipped_total{route=\"web\",backend=\"green\",reason=\"primary_incomplete\"} 1";
    assert!(metrics.contains(line), "{line} not in\n{metrics}");
}

#[tokio::test]
async fn only_safe_methods_are_mirrored_unless_methods_opt_in() {
    let Setup {
        running,
        green_seen,
    } = setup(ShadowConfig::default()).await;
    let client = client();
    let request = |method: Method| {
        Request::builder()
            .method(method)
            .uri(running.url("/same"))
            .body(Full::default())
            .unwrap()
    };
    for method in [Method::POST, Method::DELETE, Method::PATCH] {
        assert_eq!(send(&client, request(method)).await.1["x-pool"], "blue");
    }
    let s = snapshot(&running);
    assert_eq!((s.mirrored, s.skipped), (0, 3), "{s:?}");
    assert!(green_seen.lock().unwrap().is_empty());
    let (_, _, metrics) = get(&client, &running.admin_url("/metrics")).await;
    let line =
        "crossfade_shadow_skipped_total{route=\"web\",backend=\"green\",reason=\"method\"} 3";
    assert!(metrics.contains(line), "{line} not in\n{metrics}");

    let opted_in = ShadowConfig {
        methods: vec!["POST".into()],
        ..ShadowConfig::default()
    };
    running.proxy.set_shadow("web", Some(opted_in)).unwrap();
    send(&client, request(Method::POST)).await;
    settle(&running, |s| s.matched == 1).await;
    let seen = green_seen.lock().unwrap().clone();
    assert_eq!(seen, vec![(Method::POST, "/same".to_owned(), true)]);
}

#[tokio::test]
async fn request_bodies_go_along_within_the_bound_and_past_it_the_request_is_skipped() {
    let (blue, _, blue_bodies) = recording_backend(false).await;
    let (green, _, green_bodies) = recording_backend(true).await;
    let mut route = route(&[blue], &[green], 10_000);
    route.shadow = Some(ShadowConfig {
        methods: vec!["POST".into()],
        max_body_bytes: 1000,
        ..ShadowConfig::default()
    });
    let running = start(config(vec![route])).await;
    let client = client();
    let post = |body: Bytes| {
        let request = Request::post(running.url("/echo"))
            .body(Full::new(body))
            .unwrap();
        send(&client, request)
    };
    let small = Bytes::from(vec![b'a'; 600]);
    let (status, headers, echoed) = post(small.clone()).await;
    assert_eq!(
        (status, headers["x-pool"].to_str().unwrap()),
        (StatusCode::OK, "blue")
    );
    assert_eq!(echoed.as_bytes(), &small[..]);
    settle(&running, |s| s.matched == 1).await;
    assert_eq!(green_bodies.lock().unwrap().clone(), vec![small.clone()]);

    // Over the bound: blue still gets (and echoes) all of it; green gets nothing.
    let large = Bytes::from(vec![b'b'; 5000]);
    let (_, _, echoed) = post(large.clone()).await;
    assert_eq!(echoed.len(), 5000);
    let s = settle(&running, |s| s.skipped == 1).await;
    assert_eq!((s.mirrored, s.in_flight), (1, 0), "{s:?}");
    assert_eq!(green_bodies.lock().unwrap().len(), 1);
    assert_eq!(blue_bodies.lock().unwrap().clone(), vec![small, large]);
    let (_, _, metrics) = get(&client, &running.admin_url("/metrics")).await;
    let line =
        "crossfade_shadow_skipped_total{route=\"web\",backend=\"green\",reason=\"request_body\"} 1";
    assert!(metrics.contains(line), "{line} not in\n{metrics}");
}

#[tokio::test]
async fn bodies_past_the_bound_are_not_compared_unless_the_status_already_differs() {
    let shadow = ShadowConfig {
        max_body_bytes: 1000,
        ..ShadowConfig::default()
    };
    let Setup { running, .. } = setup(shadow).await;
    let client = client();
    let (_, body) = get_blue(&client, &running, "/big").await;
    assert_eq!(body.len(), 5000, "the client gets blue's whole body");
    get_blue(&client, &running, "/big-status").await;
    let s = settle(&running, |s| s.skipped + s.compared() == 2).await;
    assert_eq!((s.skipped, s.mismatched, s.status_mismatches), (1, 1, 1));
    assert_eq!(s.body_mismatches, 0);
    let (_, _, metrics) = get(&client, &running.admin_url("/metrics")).await;
    let line =
        "crossfade_shadow_skipped_total{route=\"web\",backend=\"green\",reason=\"body_too_large\"} 1";
    assert!(metrics.contains(line), "{line} not in\n{metrics}");
}

#[tokio::test]
async fn ignore_leaves_out_paths_and_non_deterministic_bodies() {
    let shadow = ShadowConfig {
        ignore: ShadowIgnore {
            paths: vec!["/status".into()],
            body_paths: vec!["/now".into()],
        },
        ..ShadowConfig::default()
    };
    let Setup {
        running,
        green_seen,
    } = setup(shadow).await;
    let client = client();
    for path in ["/status", "/now", "/now", "/body"] {
        get_blue(&client, &running, path).await;
    }
    let s = settle(&running, |s| s.compared() == 3).await;
    assert_eq!((s.mirrored, s.matched, s.mismatched), (3, 2, 1), "{s:?}");
    assert_eq!(s.body_mismatches, 1, "only /body's differs");
    let paths: Vec<String> = green_seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.1.clone())
        .collect();
    assert!(!paths.contains(&"/status".to_owned()), "{paths:?}");
}

#[tokio::test]
async fn percent_samples_and_off_mirrors_nothing() {
    let half = ShadowConfig {
        percent: crossfade_proxy::Percent(5_000),
        ..ShadowConfig::default()
    };
    let Setup {
        running,
        green_seen,
    } = setup(half).await;
    let client = client();
    for _ in 0..400 {
        get_blue(&client, &running, "/same").await;
    }
    // Binomial(400, 0.5): mean 200, sd 10; 130..=270 is seven standard deviations each way.
    let mirrored = settle(&running, |s| s.compared() == s.mirrored)
        .await
        .mirrored;
    assert!((130..=270).contains(&mirrored), "{mirrored} of 400");

    running.proxy.set_shadow("web", None).unwrap();
    let before = green_seen.lock().unwrap().len();
    for _ in 0..50 {
        get_blue(&client, &running, "/same").await;
    }
    assert_eq!(green_seen.lock().unwrap().len(), before);
    assert_eq!(snapshot(&running).mirrored, mirrored);
}

#[tokio::test]
async fn requests_served_by_green_or_forced_are_not_mirrored() {
    let (blue, _) = shadow_backend(false).await;
    let (green, green_seen) = shadow_backend(true).await;
    let mut route = route(&[blue], &[green], 0);
    route.shadow = Some(ShadowConfig::default());
    route.override_header = Some("x-backend".into());
    let running = start(config(vec![route])).await;
    let client = client();
    for _ in 0..5 {
        let (_, headers, _) = get(&client, &running.url("/same")).await;
        assert_eq!(headers["x-pool"], "green");
    }
    let forced = Request::get(running.url("/same"))
        .header("x-backend", "blue")
        .body(Full::default())
        .unwrap();
    assert_eq!(send(&client, forced).await.1["x-pool"], "blue");
    assert_eq!(snapshot(&running).mirrored, 0);
    let shadowed = green_seen.lock().unwrap().iter().filter(|s| s.2).count();
    assert_eq!(shadowed, 0);
}

#[tokio::test]
async fn answers_without_a_body_are_compared_too() {
    let Setup { running, .. } = setup(ShadowConfig::default()).await;
    let client = client();
    for path in ["/same", "/status"] {
        let head = Request::head(running.url(path))
            .body(Full::default())
            .unwrap();
        let (status, headers, body) = send(&client, head).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, ""));
        assert_eq!(headers["x-pool"], "blue");
    }
    let s = settle(&running, |s| s.compared() == 2).await;
    assert_eq!(
        (s.matched, s.mismatched, s.status_mismatches),
        (1, 1, 1),
        "{s:?}"
    );
    assert_eq!((s.body_mismatches, s.skipped), (0, 0), "{s:?}");
}

/// A green that answers the first request of each connection as [`shadow_backend`] does (status
/// 200, `text/plain`, the path as body) and then reads the next request and closes the connection
/// without answering: a backend's keep-alive close racing the proxy's reuse of its idle pooled
/// connection (case C17), on every reuse. Counts the requests it answered.
async fn closing_green() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = answered.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream);
                // The request's head (bodiless GETs only): its path, or `None` at EOF.
                async fn head(reader: &mut BufReader<tokio::net::TcpStream>) -> Option<String> {
                    let mut path = None;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return None;
                        }
                        if line == "\r\n" {
                            return path;
                        }
                        path = path.or_else(|| line.split(' ').nth(1).map(str::to_owned));
                    }
                }
                let Some(path) = head(&mut reader).await else {
                    return;
                };
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-pool: green\r\n\
                     content-length: {}\r\n\r\n{path}",
                    path.len()
                );
                reader.get_mut().write_all(answer.as_bytes()).await.unwrap();
                // The next request is read, then the connection dropped unanswered.
                head(&mut reader).await;
            });
        }
    });
    (addr, answered)
}

/// C17 with shadow on: a mirrored GET whose reused idle connection to green is closed by green as
/// the request goes out (a reset before any response byte) is sent once more on a fresh
/// connection, as the live request path does for an idempotent bodiless request; so green's
/// keep-alive close is not counted as green failing, and every mirrored request is compared.
/// (Claim of C17 for the mirror path: "when a reused idle connection fails before any response
/// byte arrives, an idempotent request is resent once on a fresh connection".)
#[tokio::test]
async fn a_mirrored_get_reset_on_a_reused_connection_is_resent_once_on_a_fresh_one() {
    let (blue, _) = shadow_backend(false).await;
    let (green, answered) = closing_green().await;
    let mut route = route(&[blue], &[green], 10_000);
    route.shadow = Some(ShadowConfig::default());
    let running = start(config(vec![route])).await;
    let client = client();
    for done in 1..=6 {
        let (status, body) = get_blue(&client, &running, "/same").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "/same"));
        // One at a time: each mirror finds the previous one's connection idle in the pool.
        settle(&running, |s| s.compared() + s.errors == done).await;
    }
    let s = snapshot(&running);
    assert_eq!((s.mirrored, s.matched, s.errors), (6, 6, 0), "{s:?}");
    assert_eq!(answered.load(std::sync::atomic::Ordering::SeqCst), 6);
    // Every mirror after the first found its connection closed and was re-sent: counted, as the
    // live path's re-sends are (trial 29 left them uncounted).
    let (_, _, metrics) = get(&client, &running.admin_url("/metrics")).await;
    let resent = "crossfade_shadow_resent_total{route=\"web\",backend=\"green\"} ";
    let count = metrics.lines().find_map(|line| line.strip_prefix(resent));
    assert_eq!(count, Some("5"), "{resent} in\n{metrics}");
}

/// Trial 29: a request whose first attempt on blue failed to connect (one blue endpoint down) and
/// whose retry blue answered was skipped as `primary_incomplete`, though the client got blue's
/// complete answer: with one endpoint of two down, half the comparisons were lost. The retry's
/// answer is compared.
#[tokio::test]
async fn a_request_retried_on_the_active_backend_is_compared_with_the_retry_answer() {
    let (blue, _) = shadow_backend(false).await;
    let (green, _) = shadow_backend(true).await;
    let mut route = route(&[refused_addr().await, blue], &[green], 10_000);
    // The refusing endpoint stays in the round-robin: no outlier ejection takes it out.
    route.outlier = crossfade_proxy::config::OutlierConfig {
        consecutive_failures: 0,
        ..crossfade_proxy::config::OutlierConfig::default()
    };
    route.shadow = Some(ShadowConfig::default());
    let running = start(config(vec![route])).await;
    let client = client();
    for path in ["/same", "/body"].repeat(5) {
        let (status, body) = get_blue(&client, &running, path).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, path));
    }
    let s = settle(&running, |s| s.compared() + s.skipped == 10).await;
    assert_eq!((s.mirrored, s.matched, s.mismatched), (10, 5, 5), "{s:?}");
    assert_eq!((s.skipped, s.errors, s.in_flight), (0, 0, 0), "{s:?}");
    let (_, _, metrics) = get(&client, &running.admin_url("/metrics")).await;
    // At least every other request was retried (the round-robin's start is not fixed).
    let retried =
        "crossfade_retries_total{route=\"web\",backend=\"blue\",reason=\"connect_refused\"} ";
    let count = metrics
        .lines()
        .find_map(|line| line.strip_prefix(retried))
        .and_then(|n| n.parse::<u64>().ok());
    assert!(count.is_some_and(|n| n >= 5), "{retried} in\n{metrics}");
}

/// A mirrored upload's pair times blue from the end of the upload, as the live histogram does,
/// and green from sending the whole body: a client that takes 400 ms to upload does not make
/// blue look 400 ms slow next to green (which gets the body whole, at once), which would hide a
/// slow green from `max_p99_ratio`.
#[tokio::test]
async fn a_slow_uploads_pair_times_blue_from_the_end_of_the_upload() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (blue, _, _) = recording_backend(false).await;
    let (green, _, _) = recording_backend(true).await;
    let mut route = route(&[blue], &[green], 10_000);
    route.shadow = Some(ShadowConfig {
        methods: vec!["POST".into()],
        ..ShadowConfig::default()
    });
    let running = start(config(vec![route])).await;
    let mut stream = tokio::net::TcpStream::connect(running.addr).await.unwrap();
    let head = "POST /echo HTTP/1.1\r\nhost: shop.test\r\ncontent-length: 300\r\nconnection: close\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..3 {
        stream.write_all(&[b'u'; 100]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with(&"u".repeat(300)), "{answer}");
    let s = settle(&running, |s| s.compared() == 1).await;
    assert_eq!(s.matched, 1, "{s:?}");
    assert_eq!(s.paired_active.count(), 1);
    // The upload took at least 400 ms (its last frame 400 ms after the head); blue answered at
    // once after it. The bound is far below the upload, far above an answer.
    let blue = s.paired_active.quantile(0.99).unwrap();
    assert!(blue < 0.3, "blue timed with the client's upload: {blue} s");
    let green = s.paired_preview.quantile(0.99).unwrap();
    assert!(green < 0.3, "green's paired time {green} s");
}
