//! Sticky `header:` mode and the tester override header over real sockets (session 44; until then
//! both were unit-tested only, in `sticky/tests.rs`). The configs are read from YAML, as written
//! in README.md ("Sticky routes", "`override_header`").

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crossfade_proxy::{ProxyConfig, Slot, Weights};
use http::{Request, StatusCode};
use http_body_util::Full;

use crate::support::*;

/// Distinct sticky keys (users) per weight.
const KEYS: usize = 400;

/// The proxy config of `routes`, a YAML list (indented as under `routes:`).
fn from_yaml(routes: &str) -> ProxyConfig {
    let yaml = format!("listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nroutes:\n{routes}");
    ProxyConfig::from_yaml(&yaml).unwrap_or_else(|error| panic!("{error}\n{yaml}"))
}

/// `GET url` with the header lines `headers`; returns the status, the answering pool (`X-Pool`,
/// empty for a local answer) and the body.
async fn get_with(
    client: &TestClient,
    url: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, String, String) {
    let mut request = Request::get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let (status, headers, body) = send(client, request.body(Full::default()).unwrap()).await;
    let pool = headers
        .get("x-pool")
        .map_or("", |pool| pool.to_str().unwrap());
    (status, pool.to_owned(), body)
}

fn user(i: usize) -> String {
    format!("user-{i}")
}

/// `k` (a count out of `n`) is within 4σ of the binomial mean for share `p`: a false failure
/// about once in 16,000 runs where the draws are random.
fn within_4_sigma(k: usize, n: usize, p: f64) -> Result<(), String> {
    let (k, n) = (k as f64, n as f64);
    let tolerance = 4.0 * (n * p * (1.0 - p)).sqrt();
    match (k - n * p).abs() <= tolerance {
        true => Ok(()),
        false => Err(format!("{k} of {n}, expected {} ± {tolerance:.1}", n * p)),
    }
}

/// Sends one request per key, on a client of its own; returns each key's pool. The keys on green
/// must be within 4σ of the share of green's weight `green_bp`. (Which bucket a key has is the
/// unit tests' business, `sticky/tests.rs`: here the backends are only seen from outside.)
async fn pools_of_keys(running: &Running, green_bp: u32) -> BTreeMap<String, String> {
    let client = client();
    let mut pools = BTreeMap::new();
    for i in 0..KEYS {
        let key = user(i);
        let (status, pool, _) = get_with(&client, &running.url("/"), &[("x-user", &key)]).await;
        assert_eq!(status, StatusCode::OK, "{key} at {green_bp} bp");
        pools.insert(key, pool);
    }
    let on_green = pools.values().filter(|p| *p == "green").count();
    eprintln!("green at {green_bp} bp: {on_green} of {KEYS} keys on green");
    let share = f64::from(green_bp) / 10_000.0;
    within_4_sigma(on_green, KEYS, share)
        .unwrap_or_else(|error| panic!("keys on green at {green_bp} bp: {error}"));
    pools
}

/// Every key on green in `before` is on green in `after` (README: "Raising the weight only moves
/// users blue → green"); returns how many moved from blue to green.
fn moved_only_to_green(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> usize {
    let mut moved = 0;
    for (key, was) in before {
        let now = &after[key];
        assert!(
            !(was == "green" && now == "blue"),
            "{key} moved green → blue as green's weight rose"
        );
        moved += usize::from(was == "blue" && now == "green");
    }
    moved
}

/// `sticky: { header: X-User }`: a key keeps its backend request after request; over 400 keys
/// green's share is its weight's (4σ); raising green's weight through the admin API and then by
/// a table swap moves keys from blue to green only, each key checked; green at 0 takes every key
/// back to blue; requests without the header are picked per request, so at 50/50 both backends
/// get some of them.
#[tokio::test]
async fn header_keys_stick_and_only_move_blue_to_green_as_green_rises() {
    let (blue, green) = (backend("blue").await, backend("green").await);
    let routes = format!(
        "  - name: web\n    blue: {{ endpoints: [{}], weight: 50 }}\n    green: {{ endpoints: \
         [{}], weight: 50 }}\n    sticky: {{ header: X-User }}\n",
        blue.addr, green.addr
    );
    let running = start(from_yaml(&routes)).await;
    let client = client();

    let half = pools_of_keys(&running, 5_000).await;
    // The same key, again on another connection: the same backend.
    let again = pools_of_keys(&running, 5_000).await;
    let changed: Vec<_> = half
        .keys()
        .filter(|key| half[*key] != again[*key])
        .collect();
    assert!(
        changed.is_empty(),
        "{} of {KEYS} keys changed backend at the same weight: {changed:?}",
        changed.len()
    );

    // No key: the per-request pick, 4σ around 50 % (and so both backends get some).
    let keyless = 200;
    let mut on_green = 0;
    for _ in 0..keyless {
        let (status, pool, _) = get_with(&client, &running.url("/"), &[]).await;
        assert_eq!(status, StatusCode::OK);
        on_green += usize::from(pool == "green");
    }
    eprintln!("no key at 50 %: {on_green} of {keyless} requests on green");
    let both = on_green > 0 && on_green < keyless;
    assert!(both, "keyless requests: {on_green} of {keyless} on green");
    within_4_sigma(on_green, keyless, 0.5)
        .unwrap_or_else(|error| panic!("keyless requests on green: {error}"));

    // Raised through the admin API.
    let put = Request::put(running.admin_url("/routes/web/weights"))
        .body(Full::from(r#"{"blue": 2500, "green": 7500}"#))
        .unwrap();
    let (status, _, answer) = send(&client, put).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let three_quarters = pools_of_keys(&running, 7_500).await;
    let moved = moved_only_to_green(&half, &three_quarters);
    eprintln!("50 % → 75 %: {moved} keys moved to green");
    assert!(moved > 0, "no key moved from 50 % to 75 %");

    // Raised by a table swap.
    let weights = Weights::with(Slot::Green, 9_000);
    running.proxy.set_weights("web", weights).unwrap();
    let most = pools_of_keys(&running, 9_000).await;
    let moved = moved_only_to_green(&three_quarters, &most);
    eprintln!("75 % → 90 %: {moved} keys moved to green");
    assert!(moved > 0, "no key moved from 75 % to 90 %");

    // Green 0 (an abort): every key back on blue at once.
    running
        .proxy
        .set_weights("web", Weights::with(Slot::Green, 0))
        .unwrap();
    let none = pools_of_keys(&running, 0).await;
    assert!(none.values().all(|pool| pool == "blue"), "{none:?}");
}

/// Routes `web` (green at weight 0, with an endpoint) and `empty` (on `/empty`, green with no
/// endpoint), each with `override_header` when `header` is given.
fn override_routes(blue: SocketAddr, green: SocketAddr, header: Option<&str>) -> ProxyConfig {
    let line = header.map_or(String::new(), |h| format!("    override_header: {h}\n"));
    from_yaml(&format!(
        "  - name: web\n    blue: {{ endpoints: [{blue}], weight: 100 }}\n    green: {{ endpoints: \
         [{green}], weight: 0 }}\n{line}  - name: empty\n    path_prefix: /empty\n    blue: {{ \
         endpoints: [{blue}], weight: 100 }}\n    green: {{ endpoints: [], weight: 0 }}\n{line}"
    ))
}

/// Whether the `/echo` answer (the request headers the backend saw, as JSON pairs) has `name`.
fn echoed(body: &str, name: &str) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_json::from_str(body).unwrap();
    pairs
        .into_iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, value)| value)
}

/// README, `override_header: X-Crossfade-Backend`: `blue` or `green` forces that backend even at
/// weight 0, and the header is not forwarded; any other value, or two fields naming different
/// backends, is answered 400 naming the header (and reaches no backend); a forced backend with no
/// endpoint gets 503 (a forced request never fails open).
#[tokio::test]
async fn the_override_header_forces_green_at_weight_0_and_refuses_bad_values() {
    let (blue, green) = (backend("blue").await, backend("green").await);
    let header = "X-Crossfade-Backend";
    let running = start(override_routes(blue.addr, green.addr, Some(header))).await;
    let client = client();
    let echo = running.url("/echo");

    for _ in 0..20 {
        let (status, pool, body) = get_with(&client, &echo, &[(header, "green")]).await;
        assert_eq!((status, pool.as_str()), (StatusCode::OK, "green"), "{body}");
        assert_eq!(echoed(&body, header), None, "the header was forwarded");
        let (status, pool, _) = get_with(&client, &echo, &[(header, "blue")]).await;
        assert_eq!((status, pool.as_str()), (StatusCode::OK, "blue"));
        let (status, pool, _) = get_with(&client, &echo, &[]).await;
        assert_eq!(
            (status, pool.as_str()),
            (StatusCode::OK, "blue"),
            "weight 0"
        );
    }
    // The same backend named twice is no disagreement.
    let twice = [(header, "green"), (header, "Green")];
    let (status, pool, _) = get_with(&client, &echo, &twice).await;
    assert_eq!((status, pool.as_str()), (StatusCode::OK, "green"));

    let hits = |b: &Backend| b.hits.load(std::sync::atomic::Ordering::SeqCst);
    let before = (hits(&blue), hits(&green));
    let bad: [&[(&str, &str)]; 4] = [
        &[(header, "purple")],
        &[(header, "")],
        &[(header, "green"), (header, "blue")],
        &[(header, "blue"), (header, "green")],
    ];
    for headers in bad {
        let (status, pool, body) = get_with(&client, &echo, headers).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{headers:?}: {body}");
        assert_eq!(pool, "", "{headers:?} reached {pool}");
        assert!(
            body.to_ascii_lowercase()
                .contains(&header.to_ascii_lowercase()),
            "{headers:?}: the 400 does not name the header: {body}"
        );
    }
    assert_eq!(
        (hits(&blue), hits(&green)),
        before,
        "a refused request reached a backend"
    );

    let (status, pool, body) =
        get_with(&client, &running.url("/empty"), &[(header, "green")]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{pool}: {body}");
    assert!(body.contains("no endpoint"), "{body}");
    assert_eq!(
        (hits(&blue), hits(&green)),
        before,
        "the 503 reached a backend"
    );
    let (status, pool, _) = get_with(&client, &running.url("/empty"), &[(header, "blue")]).await;
    assert_eq!((status, pool.as_str()), (StatusCode::OK, "blue"));
}

/// Off by default (README: "`override_header: X-Crossfade-Backend` (off by default)"): a route
/// without the key routes by weight whatever `X-Crossfade-Backend` says, answers no 400 for a bad
/// value, and forwards the header as any other end-to-end header (only a route's configured
/// override header is stripped).
#[tokio::test]
async fn without_override_header_the_same_header_is_ignored_and_forwarded() {
    let (blue, green) = (backend("blue").await, backend("green").await);
    let config = override_routes(blue.addr, green.addr, None);
    assert_eq!(config.routes[0].override_header, None);
    let running = start(config).await;
    let client = client();
    let header = "X-Crossfade-Backend";
    let sent: [&[(&str, &str)]; 3] = [
        &[(header, "green")],
        &[(header, "purple")],
        &[(header, "green"), (header, "blue")],
    ];
    for _ in 0..10 {
        for headers in sent {
            let (status, pool, body) = get_with(&client, &running.url("/echo"), headers).await;
            assert_eq!(
                (status, pool.as_str()),
                (StatusCode::OK, "blue"),
                "{headers:?}"
            );
            let value = echoed(&body, header);
            assert_eq!(value.as_deref(), Some(headers[0].1), "{headers:?}: {body}");
        }
        let (status, pool, _) =
            get_with(&client, &running.url("/empty"), &[(header, "green")]).await;
        assert_eq!((status, pool.as_str()), (StatusCode::OK, "blue"));
    }
    assert_eq!(green.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
}
