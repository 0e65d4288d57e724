use std::sync::Mutex;

use super::*;

/// `/metrics` text shaped as the proxy writes it (OpenMetrics, prometheus-client's encoder) for one
/// backend of `shop/web`: `latency` holds per-bucket counts (19 entries, the last `+Inf`).
fn exposition(
    backend: &str,
    requests: u64,
    errors: u64,
    in_flight: u64,
    latency: &[u64],
) -> String {
    let labels = format!(r#"route="shop/web",backend="{backend}""#);
    let mut text = format!(
        "# HELP crossfade_dispatched_requests Attempts dispatched.\n\
         # TYPE crossfade_dispatched_requests counter\n\
         crossfade_dispatched_requests_total{{{labels}}} {requests}\n\
         # HELP crossfade_backend_errors 5xx plus failures.\n\
         # TYPE crossfade_backend_errors counter\n\
         crossfade_backend_errors_total{{{labels}}} {errors}\n\
         # TYPE crossfade_in_flight_requests gauge\n\
         crossfade_in_flight_requests{{{labels}}} {in_flight}\n\
         # TYPE crossfade_upgraded_connections gauge\n\
         crossfade_upgraded_connections{{{labels}}} 1\n\
         # TYPE crossfade_requests counter\n\
         crossfade_requests_total{{{labels},class=\"2xx\"}} {requests}\n\
         # HELP crossfade_request_duration_seconds Time to the response head.\n\
         # TYPE crossfade_request_duration_seconds histogram\n\
         # UNIT crossfade_request_duration_seconds seconds\n"
    );
    let total: u64 = latency.iter().sum();
    text.push_str(&format!(
        "crossfade_request_duration_seconds_sum{{{labels}}} {}\n",
        total as f64 * 0.002
    ));
    text.push_str(&format!(
        "crossfade_request_duration_seconds_count{{{labels}}} {total}\n"
    ));
    let mut cumulative = 0;
    let bounds = LATENCY_BOUNDS_SECONDS.iter().map(|b| format!("{b}"));
    for (le, n) in bounds.chain(["+Inf".to_owned()]).zip(latency) {
        cumulative += n;
        text.push_str(&format!(
            "crossfade_request_duration_seconds_bucket{{le=\"{le}\",{labels}}} {cumulative}\n"
        ));
    }
    text.push_str("# EOF\n");
    text
}

fn latency(at_2ms: u64) -> Vec<u64> {
    let mut counts = vec![0; LATENCY_BOUNDS_SECONDS.len() + 1];
    counts[2] = at_2ms; // (1 ms, 2.5 ms]
    counts
}

#[test]
fn the_proxys_metrics_text_reads_as_a_backend_snapshot() {
    let text = exposition("green", 120, 7, 3, &latency(113));
    let readings = parse(&text).unwrap();
    let r = &readings[&("shop/web".to_owned(), Slot::Green)];
    assert_eq!(
        (r.requests, r.errors, r.in_flight, r.upgraded),
        (120, 7, 3, 1)
    );
    assert_eq!(r.latency.counts, latency(113));
    assert!((r.latency.sum_seconds - 0.226).abs() < 1e-9);
    assert_eq!(r.latency.count(), 113);
    assert!(!readings.contains_key(&("shop/web".to_owned(), Slot::Blue)));
}

#[test]
fn other_latency_buckets_are_refused_naming_the_metric() {
    let text = exposition("blue", 1, 0, 0, &latency(1)).replace("le=\"0.0005\"", "le=\"0.0004\"");
    let err = parse(&text).unwrap_err();
    assert!(
        err.contains("crossfade_request_duration_seconds of shop/web/blue"),
        "{err}"
    );
    assert!(err.contains("latency bounds"), "{err}");
}

fn reading(requests: u64, errors: u64, at_2ms: u64) -> Reading {
    Reading {
        requests,
        errors,
        latency: HistogramSnapshot {
            fine: Vec::new(),
            counts: latency(at_2ms),
            sum_seconds: at_2ms as f64 * 0.002,
        },
        ..Reading::default()
    }
}

#[test]
fn counters_add_what_they_rose_and_a_restart_never_subtracts() {
    let mut total = BackendSnapshot::default();
    // First sight of a replica: all its counts (they started at 0 with it).
    assert!(!accumulate(&mut total, None, &reading(100, 2, 98)));
    assert_eq!(
        (total.requests, total.errors, total.latency.count()),
        (100, 2, 98)
    );
    // Rose by 50.
    assert!(!accumulate(
        &mut total,
        Some(&reading(100, 2, 98)),
        &reading(150, 3, 147)
    ));
    assert_eq!(
        (total.requests, total.errors, total.latency.count()),
        (150, 3, 147)
    );
    // Restarted: counters went down to 20; the 20 since the restart are new, nothing is lost.
    assert!(accumulate(
        &mut total,
        Some(&reading(150, 3, 147)),
        &reading(20, 0, 20)
    ));
    assert_eq!(
        (total.requests, total.errors, total.latency.count()),
        (170, 3, 167)
    );
    assert!((total.latency.sum_seconds - 167.0 * 0.002).abs() < 1e-9);
    // A restart seen only in the errors (requests rose past the old count) is one all the same.
    assert!(accumulate(
        &mut total,
        Some(&reading(20, 5, 20)),
        &reading(30, 1, 30)
    ));
    assert_eq!((total.requests, total.errors), (200, 4));
}

#[test]
fn refreshing_sums_replicas_and_reports_the_ones_it_could_not_read() {
    let scraper = ProxyScraper::new(None);
    let replica = Replica {
        lease: "crossfade-system/p-1".into(),
        uid: "u1".into(),
        applied: BTreeMap::from([("shop/web".to_owned(), 1)]),
        applied_uid: BTreeMap::new(),
        admin_url: None,
        refused: BTreeMap::new(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(scraper.refresh("shop/web", &[&replica]));
    let err = scraper
        .snapshot("shop/web", Slot::Green)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "proxy crossfade-system/p-1: its Lease has no annotation crossfade.dev/admin-url"
        ),
        "{err}"
    );
    // No replica serves the route: nothing to read, no traffic, nothing held.
    runtime.block_on(scraper.refresh("shop/web", &[]));
    let s = scraper.snapshot("shop/web", Slot::Green).unwrap();
    assert_eq!((s.requests, s.in_flight, s.upgraded), (0, 0, 0));
    let unknown = scraper
        .snapshot("shop/api", Slot::Blue)
        .unwrap_err()
        .to_string();
    assert!(
        unknown.contains("no proxy replica scraped yet"),
        "{unknown}"
    );
}

/// A `/metrics` endpoint on 127.0.0.1 answering `body()` to a request carrying `Bearer token`, and
/// 401 to any other; 406 to a request that does not ask for the text format 0.0.4 (the one
/// `prometheus-parse` reads, [`TEXT_ACCEPT`]); one connection per request (`Connection: close`).
async fn metrics_server(
    token: &'static str,
    body: std::sync::Arc<Mutex<String>>,
) -> (String, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let request = String::from_utf8_lossy(&request).to_lowercase();
            let authorised = request.contains(&format!("authorization: bearer {token}"));
            let asked = request.contains(&format!("accept: {}", TEXT_ACCEPT.to_lowercase()));
            let (status, text) = match (authorised, asked) {
                (true, true) => ("200 OK", body.lock().unwrap().clone()),
                (true, false) => ("406 Not Acceptable", "not asked for text 0.0.4".to_owned()),
                (false, _) => ("401 Unauthorized", "missing token".to_owned()),
            };
            let reply = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/openmetrics-text\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n{text}",
                text.len()
            );
            let _ = stream.write_all(reply.as_bytes()).await;
        }
    });
    (url, task)
}

fn replica(name: &str, uid: &str, url: &str) -> Replica {
    Replica {
        lease: format!("crossfade-system/{name}"),
        uid: uid.into(),
        applied: BTreeMap::from([("shop/web".to_owned(), 1)]),
        applied_uid: BTreeMap::new(),
        admin_url: Some(url.into()),
        refused: BTreeMap::new(),
    }
}

#[tokio::test]
async fn replicas_are_scraped_with_the_token_summed_and_a_restart_never_takes_counts_back() {
    let a_body = std::sync::Arc::new(Mutex::new(exposition("green", 100, 1, 2, &latency(99))));
    let b_body = std::sync::Arc::new(Mutex::new(exposition("green", 50, 0, 1, &latency(50))));
    let (a_url, _a) = metrics_server("t0ken", a_body.clone()).await;
    let (b_url, _b) = metrics_server("t0ken", b_body.clone()).await;
    let (a, b) = (replica("a", "ua", &a_url), replica("b", "ub", &b_url));
    let scraper = ProxyScraper::new(Some("t0ken".into()));

    scraper.refresh("shop/web", &[&a, &b]).await;
    let s = scraper.snapshot("shop/web", Slot::Green).unwrap();
    assert_eq!(
        (s.requests, s.errors, s.in_flight, s.latency.count()),
        (150, 1, 3, 149)
    );

    // a served 20 more; b restarted and has served 10 since: 150 + 20 + 10.
    *a_body.lock().unwrap() = exposition("green", 120, 1, 0, &latency(119));
    *b_body.lock().unwrap() = exposition("green", 10, 0, 0, &latency(10));
    scraper.refresh("shop/web", &[&a, &b]).await;
    let s = scraper.snapshot("shop/web", Slot::Green).unwrap();
    assert_eq!(
        (s.requests, s.errors, s.in_flight, s.latency.count()),
        (180, 1, 0, 179)
    );

    // b is gone (its Lease expired): its counts stay in the sums, its gauges leave them.
    *a_body.lock().unwrap() = exposition("green", 125, 1, 4, &latency(124));
    scraper.refresh("shop/web", &[&a]).await;
    let s = scraper.snapshot("shop/web", Slot::Green).unwrap();
    assert_eq!((s.requests, s.in_flight), (185, 4));

    // Without the token the proxy answers 401: the route's counters are an error naming it.
    let anonymous = ProxyScraper::new(None);
    anonymous.refresh("shop/web", &[&a]).await;
    let err = anonymous
        .snapshot("shop/web", Slot::Green)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("proxy crossfade-system/a: scrape") && err.contains("status 401"),
        "{err}"
    );
    // ... and says what fixes it (trial 10, K23).
    assert!(
        err.contains("the controller sends no token: give it the proxies' admin token with --proxy-token-file"),
        "{err}"
    );
    let wrong = ProxyScraper::new(Some("not-it".into()));
    wrong.refresh("shop/web", &[&a]).await;
    let err = wrong
        .snapshot("shop/web", Slot::Green)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("is not the one the proxies' --admin-token-file holds"),
        "{err}"
    );
}

/// Kube28: each replica is sent the token of its Lease's namespace (`--proxy-token-file
/// NAMESPACE=FILE`), the others the default; a refusal names the flag whose token was sent.
#[tokio::test]
async fn each_replica_is_scraped_with_the_token_of_its_lease_namespace() {
    let body = std::sync::Arc::new(Mutex::new(exposition("green", 100, 1, 0, &latency(99))));
    let (ingress_url, _i) = metrics_server("ingress-token", body.clone()).await;
    let (sidecar_url, _s) = metrics_server("shop-token", body.clone()).await;
    let ingress = replica("ingress", "ui", &ingress_url);
    let sidecar = Replica {
        lease: "shop/crossfade-proxy-web-0".to_owned(),
        ..replica("sidecar", "us", &sidecar_url)
    };
    let tokens = ProxyTokens {
        default: Some("ingress-token".to_owned()),
        by_namespace: BTreeMap::from([("shop".to_owned(), "shop-token".to_owned())]),
    };
    let scraper = ProxyScraper::with_tokens(tokens.clone());
    scraper.refresh("shop/web", &[&ingress, &sidecar]).await;
    let s = scraper.snapshot("shop/web", Slot::Green).unwrap();
    assert_eq!(s.requests, 200);

    // The sidecar's token opens no other proxy: given as the default, the ingress refuses it.
    let swapped = ProxyScraper::with_tokens(ProxyTokens {
        default: Some("shop-token".to_owned()),
        by_namespace: BTreeMap::new(),
    });
    swapped.refresh("shop/web", &[&ingress]).await;
    let err = swapped
        .snapshot("shop/web", Slot::Green)
        .unwrap_err()
        .to_string();
    assert!(err.contains("status 401"), "{err}");
    assert!(
        err.contains(
            "the token of --proxy-token-file is not the one the proxies' --admin-token-file holds"
        ),
        "{err}"
    );
    let wrong = ProxyScraper::with_tokens(ProxyTokens {
        by_namespace: BTreeMap::from([("shop".to_owned(), "ingress-token".to_owned())]),
        ..tokens
    });
    wrong.refresh("shop/web", &[&sidecar]).await;
    let err = wrong
        .snapshot("shop/web", Slot::Green)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("the token of --proxy-token-file shop=FILE is not the one the proxies' --admin-token-file holds"),
        "{err}"
    );
}

/// The shadow families as the proxy writes them for mirror target `green` of `shop/web`.
fn shadow_exposition(matched: u64, body: u64, skipped: (u64, u64), errors: u64) -> String {
    let l = r#"route="shop/web",backend="green""#;
    format!(
        "# TYPE crossfade_shadow_mirrored counter\n\
         crossfade_shadow_mirrored_total{{{l}}} {mirrored}\n\
         # TYPE crossfade_shadow_compared counter\n\
         crossfade_shadow_compared_total{{{l},result=\"matched\"}} {matched}\n\
         crossfade_shadow_compared_total{{{l},result=\"mismatched\"}} {body}\n\
         # TYPE crossfade_shadow_mismatches counter\n\
         crossfade_shadow_mismatches_total{{{l},kind=\"status\"}} 0\n\
         crossfade_shadow_mismatches_total{{{l},kind=\"header\"}} 1\n\
         crossfade_shadow_mismatches_total{{{l},kind=\"body\"}} {body}\n\
         # TYPE crossfade_shadow_skipped counter\n\
         crossfade_shadow_skipped_total{{{l},reason=\"method\"}} {}\n\
         crossfade_shadow_skipped_total{{{l},reason=\"concurrency\"}} {}\n\
         # TYPE crossfade_shadow_errors counter\n\
         crossfade_shadow_errors_total{{{l},kind=\"connect\"}} {errors}\n\
         crossfade_shadow_errors_total{{{l},kind=\"body\"}} 0\n\
         # TYPE crossfade_shadow_in_flight gauge\n\
         crossfade_shadow_in_flight{{{l}}} 2\n\
         # EOF\n",
        skipped.0,
        skipped.1,
        mirrored = matched + body + skipped.0 + skipped.1 + errors,
    )
}

#[test]
fn the_shadow_families_read_as_a_shadow_snapshot_with_reasons_and_kinds_summed() {
    let text = shadow_exposition(90, 10, (3, 4), 5);
    let readings = parse(&text).unwrap();
    let r = &readings[&("shop/web".to_owned(), Slot::Green)];
    let shadow = r.shadow.clone().expect("shadow counters");
    assert_eq!(
        shadow,
        ShadowSnapshot {
            mirrored: 112,
            matched: 90,
            mismatched: 10,
            status_mismatches: 0,
            header_mismatches: 1,
            body_mismatches: 10,
            skipped: 7,
            errors: 5,
            in_flight: 2,
            ..ShadowSnapshot::default()
        }
    );
    // A backend that was never a mirror target has none.
    let plain = parse(&exposition("green", 1, 0, 0, &latency(1))).unwrap();
    assert_eq!(plain[&("shop/web".to_owned(), Slot::Green)].shadow, None);
}

#[test]
fn shadow_counters_add_what_they_rose_and_a_restart_never_subtracts() {
    let snapshot = |matched: u64, mismatched: u64| ShadowSnapshot {
        mirrored: matched + mismatched,
        matched,
        mismatched,
        body_mismatches: mismatched,
        ..ShadowSnapshot::default()
    };
    let mut total = ShadowSnapshot::default();
    assert!(!accumulate_shadow(&mut total, None, &snapshot(40, 2)));
    assert!(!accumulate_shadow(
        &mut total,
        Some(&snapshot(40, 2)),
        &snapshot(70, 3)
    ));
    assert_eq!(
        (total.matched, total.mismatched, total.compared()),
        (70, 3, 73)
    );
    // Restarted: its 5 + 1 since the restart are new.
    assert!(accumulate_shadow(
        &mut total,
        Some(&snapshot(70, 3)),
        &snapshot(5, 1)
    ));
    assert_eq!(
        (total.matched, total.mismatched, total.body_mismatches),
        (75, 4, 4)
    );
}

/// `crossfade_unanswered_requests` lines for `backend` of `shop/web`: `(longer_than, count)`.
fn unanswered_lines(backend: &str, counts: &[(&str, u64)]) -> String {
    let mut text = String::from("# TYPE crossfade_unanswered_requests gauge\n");
    for (bound, n) in counts {
        text.push_str(&format!(
            "crossfade_unanswered_requests{{route=\"shop/web\",backend=\"{backend}\",longer_than=\"{bound}\"}} {n}\n"
        ));
    }
    text
}

#[test]
fn unanswered_requests_read_as_groups_by_wait_and_bad_bounds_are_refused() {
    let text = exposition("green", 8, 0, 8, &latency(0)).replace(
        "# EOF\n",
        &(unanswered_lines("green", &[("0", 8), ("0.25", 8), ("0.5", 6), ("1", 2)]) + "# EOF\n"),
    );
    let readings = parse(&text).unwrap();
    let r = &readings[&("shop/web".to_owned(), Slot::Green)];
    assert_eq!(r.unanswered.waited, vec![(0.25, 2), (0.5, 4), (1.0, 2)]);
    assert_eq!(r.unanswered.longer_than(0.5), 6);
    // A bound between two exported ones counts from the next one up.
    assert_eq!(r.unanswered.longer_than(0.6), 2);
    assert_eq!(r.unanswered.total(), 8);

    let bad = text.replace("longer_than=\"0.5\"", "longer_than=\"half\"");
    let err = parse(&bad).unwrap_err();
    assert!(
        err.contains("crossfade_unanswered_requests of shop/web/green"),
        "{err}"
    );
}

/// `crossfade_client_abort_wait_seconds` of `backend`, as the proxy writes it, from per-bucket
/// counts.
fn abort_waits(backend: &str, counts: &[u64]) -> String {
    let labels = format!(r#"route="shop/web",backend="{backend}""#);
    let mut text = String::from(
        "# TYPE crossfade_client_abort_wait_seconds histogram\n\
         # UNIT crossfade_client_abort_wait_seconds seconds\n",
    );
    let total: u64 = counts.iter().sum();
    text.push_str(&format!(
        "crossfade_client_abort_wait_seconds_sum{{{labels}}} {}\n",
        total as f64
    ));
    text.push_str(&format!(
        "crossfade_client_abort_wait_seconds_count{{{labels}}} {total}\n"
    ));
    let mut cumulative = 0;
    let bounds = LATENCY_BOUNDS_SECONDS.iter().map(|b| format!("{b}"));
    for (le, n) in bounds.chain(["+Inf".to_owned()]).zip(counts) {
        cumulative += n;
        text.push_str(&format!(
            "crossfade_client_abort_wait_seconds_bucket{{le=\"{le}\",{labels}}} {cumulative}\n"
        ));
    }
    text
}

#[test]
fn client_aborts_read_by_wait_leave_the_judged_requests_and_count_slow_past_max_p99() {
    // 120 dispatched: 100 answered at 2 ms, 15 given up on within 100 ms, 5 after 1 to 2.5 s.
    let mut waits = vec![0; LATENCY_BOUNDS_SECONDS.len() + 1];
    waits[8] = 15; // (75 ms, 100 ms]
    waits[14] = 5; // (1 s, 2.5 s]
    let text = exposition("green", 120, 0, 0, &latency(100)).replace(
        "# EOF\n",
        &format!("{}# EOF\n", abort_waits("green", &waits)),
    );
    let readings = parse(&text).unwrap();
    let now = &readings[&("shop/web".to_owned(), Slot::Green)];
    assert_eq!(now.aborted.counts, waits);
    let mut total = BackendSnapshot::default();
    accumulate(&mut total, None, now);
    assert_eq!(total.aborted.count(), 20);
    let window = crate::analysis::Window::between(&BackendSnapshot::default(), &total);
    assert_eq!(window.requests, 100);
    assert_eq!(window.unanswered_past(Some(Duration::from_millis(500))), 5);
    // A replica that restarted: its abort counts went down, all of them are new.
    let mut fewer = now.clone();
    fewer.aborted.counts = latency(1);
    assert!(accumulate(&mut total, Some(now), &fewer));
    assert_eq!(total.aborted.count(), 21);
}

/// newuser32's G in Kubernetes mode: the shadow step judges the preview's response times to
/// mirrored requests, which the controller reads from every proxy replica's
/// `crossfade_shadow_request_duration_seconds` and `crossfade_shadow_unanswered_requests`.
#[test]
fn the_shadow_response_times_read_into_the_shadow_snapshot_and_add_up_over_scrapes() {
    let mut slow = vec![0; LATENCY_BOUNDS_SECONDS.len() + 1];
    slow[14] = 12; // (1 s, 2.5 s]
    let live = exposition("green", 0, 0, 0, &slow);
    let (_, histogram) = live
        .split_once("# HELP crossfade_request_duration_seconds")
        .unwrap();
    let histogram = histogram.replace(
        "crossfade_request_duration_seconds",
        "crossfade_shadow_request_duration_seconds",
    );
    let l = r#"route="shop/web",backend="green""#;
    let text = format!(
        "{}# TYPE crossfade_shadow_unanswered_requests gauge\n\
         crossfade_shadow_unanswered_requests{{{l},longer_than=\"0\"}} 3\n\
         crossfade_shadow_unanswered_requests{{{l},longer_than=\"0.25\"}} 2\n\
         crossfade_shadow_unanswered_requests{{{l},longer_than=\"0.5\"}} 0\n\
         # HELP crossfade_shadow_request_duration_seconds{histogram}",
        shadow_exposition(12, 0, (0, 0), 0).replace("# EOF\n", ""),
    );
    let readings = parse(&text).unwrap();
    let shadow = readings[&("shop/web".to_owned(), Slot::Green)]
        .shadow
        .clone()
        .expect("shadow counters");
    assert_eq!(shadow.latency.counts, slow);
    assert!((shadow.latency.sum_seconds - 0.024).abs() < 1e-9);
    assert_eq!(shadow.unanswered.longer_than(0.25), 2);
    assert_eq!(shadow.unanswered.total(), 3);
    // The live histogram of the same backend is not read from the shadow one.
    let live = &readings[&("shop/web".to_owned(), Slot::Green)].latency;
    assert!(live.is_empty(), "{live:?}");

    let mut total = ShadowSnapshot::default();
    accumulate_shadow(&mut total, None, &shadow);
    let mut later = shadow.clone();
    later.latency.counts[14] = 20;
    assert!(!accumulate_shadow(&mut total, Some(&shadow), &later));
    assert_eq!(total.latency.count(), 20);
    // Restarted: its histogram went down, so all of it is new.
    let mut restarted = ShadowSnapshot::default();
    restarted.latency.counts = vec![0; LATENCY_BOUNDS_SECONDS.len() + 1];
    restarted.latency.counts[14] = 1;
    restarted.matched = 1;
    assert!(accumulate_shadow(&mut total, Some(&later), &restarted));
    assert_eq!(total.latency.count(), 21);
}

/// shadow34: the shadow step's `max_p99_ratio` reads both backends' times on the same mirrored
/// requests, which the controller reads from every proxy replica's
/// `crossfade_shadow_paired_active_duration_seconds` and
/// `crossfade_shadow_paired_preview_duration_seconds`, summed over scrapes like the others.
#[test]
fn the_paired_response_times_read_into_the_shadow_snapshot_and_add_up_over_scrapes() {
    let (mut blue, mut green) = (latency(0), latency(0));
    blue[4] = 9; // (5 ms, 10 ms]
    green[5] = 9; // (10 ms, 25 ms]
    let histogram = |counts: &[u64], name: &str| {
        let live = exposition("green", 0, 0, 0, counts);
        let (_, histogram) = live
            .split_once("# HELP crossfade_request_duration_seconds")
            .unwrap();
        format!(
            "# HELP {name}{}",
            histogram
                .replace("crossfade_request_duration_seconds", name)
                .replace("# EOF\n", "")
        )
    };
    let text = format!(
        "{}{}{}# EOF\n",
        shadow_exposition(9, 0, (0, 0), 0).replace("# EOF\n", ""),
        histogram(&blue, "crossfade_shadow_paired_active_duration_seconds"),
        histogram(&green, "crossfade_shadow_paired_preview_duration_seconds"),
    );
    let readings = parse(&text).unwrap();
    let shadow = readings[&("shop/web".to_owned(), Slot::Green)]
        .shadow
        .clone()
        .expect("shadow counters");
    assert_eq!(shadow.paired_active.counts, blue);
    assert_eq!(shadow.paired_preview.counts, green);
    assert!(shadow.latency.is_empty(), "{:?}", shadow.latency);

    let mut total = ShadowSnapshot::default();
    accumulate_shadow(&mut total, None, &shadow);
    let mut later = shadow.clone();
    later.paired_active.counts[4] = 15;
    later.paired_preview.counts[5] = 15;
    assert!(!accumulate_shadow(&mut total, Some(&shadow), &later));
    assert_eq!(
        (total.paired_active.count(), total.paired_preview.count()),
        (15, 15)
    );
    // Restarted: either paired histogram going down alone (the other counters as they were)
    // tells it, and all of the reading is new.
    let mut restarted = later.clone();
    restarted.paired_active.counts[4] = 1;
    assert!(accumulate_shadow(&mut total, Some(&later), &restarted));
    assert_eq!(total.paired_active.count(), 16);
    let mut again = restarted.clone();
    again.paired_preview.counts[5] = 2;
    assert!(accumulate_shadow(&mut total, Some(&restarted), &again));
    assert_eq!(total.paired_preview.count(), 15 + 15 + 2);
}
