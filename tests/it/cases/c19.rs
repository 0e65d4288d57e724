//! C19 — hop-by-hop headers forwarded; `X-Forwarded-For` duplicated or spoofable; `Host` handling
//! (golang/go#16875, heimdall#653, pingora PR#734).
//!
//! Right outcome: the backend never receives `Connection`, `Keep-Alive`, headers named in
//! `Connection`, `Proxy-*`, or `TE` other than `trailers`; it sees exactly one `X-Forwarded-For` line,
//! `6.6.6.6, 127.0.0.1` (only `127.0.0.1` when inbound values are not trusted) and `Host:
//! shop.example` unchanged; the client never receives the backend's hop-by-hop `X-Backend-Hop` or
//! `Keep-Alive`; blue and green see and answer exactly the same. 240 requests at 50/50 (the case's
//! 1,000 scaled down), half with the case's headers, half with a variant of the same family.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::raw::RawResponse;
use crate::support::{proxy_config, temp_dir, RawConn, RunningProxy, SampleApp};

/// The case's request.
const CASE: &str = "GET /echo-headers HTTP/1.1\r\n\
    Host: shop.example\r\n\
    Connection: keep-alive, X-Hop-Secret\r\n\
    X-Hop-Secret: 1\r\n\
    Keep-Alive: timeout=5\r\n\
    TE: gzip\r\n\
    Proxy-Authorization: Basic abc\r\n\
    X-Forwarded-For: 6.6.6.6\r\n\
    Forwarded: for=6.6.6.6\r\n\r\n";

/// The same family: `Connection` over two lines in mixed case naming two headers, `TE` with
/// `trailers` (which may pass) among others, `Proxy-Connection`, and the standard `Forwarded` (RFC
/// 7239) over two lines, which an upstream reads as `X-Forwarded-For`'s successor.
const VARIANT: &str = "GET /echo-headers HTTP/1.1\r\n\
    Host: shop.example\r\n\
    connection: X-Hop-Secret\r\n\
    Connection: keep-alive, x-other-HOP\r\n\
    X-Hop-Secret: 1\r\n\
    X-Other-Hop: 2\r\n\
    Keep-Alive: timeout=5\r\n\
    TE: trailers, gzip\r\n\
    Proxy-Authorization: Basic abc\r\n\
    Proxy-Connection: keep-alive\r\n\
    X-Forwarded-For: 6.6.6.6\r\n\
    Forwarded: for=6.6.6.6;proto=https\r\n\
    Forwarded: for=7.7.7.7\r\n\r\n";

/// What the backend sees of each request's `Forwarded` when inbound values are trusted: the
/// client's elements, then this proxy's, last, in one line.
const FORWARDED_TRUSTED: [(&str, &str); 2] = [
    ("case", "for=6.6.6.6, for=127.0.0.1"),
    (
        "variant",
        "for=6.6.6.6;proto=https, for=7.7.7.7, for=127.0.0.1",
    ),
];

/// Headers the backend must never see (`Connection` has its own rule: [`connection_of_te`]).
const HOP_BY_HOP: [&str; 6] = [
    "keep-alive",
    "x-hop-secret",
    "x-other-hop",
    "proxy-authorization",
    "proxy-connection",
    "transfer-encoding",
];

/// Response headers that differ per instance or per response by design.
const PER_RESPONSE: [&str; 5] = [
    "date",
    "x-pool",
    "x-instance",
    "x-version",
    "content-length",
];

const CONNECTIONS: usize = 4;
const PER_CONNECTION: usize = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c19_hop_by_hop_headers_stay_on_their_hop_for_both_pools() {
    let dir = temp_dir();
    let blue = SampleApp::start(dir.path(), "blue", "blue-0", &[]).await;
    let green = SampleApp::start(dir.path(), "green", "green-0", &[]).await;
    let config = proxy_config(&[blue.addr], &[green.addr]);
    let proxy = RunningProxy::start(dir.path(), "proxy.yaml", &config).await;
    proxy.set_weights(5_000, 5_000).await;

    let seen = exchange_all(&proxy, CONNECTIONS, PER_CONNECTION, true).await;
    assert_same_for_both_pools(&seen);

    // Not trusting inbound values: only the peer's address.
    let mut config = proxy_config(&[blue.addr], &[green.addr]);
    config["trust_forwarded_for"] = json!(false);
    let proxy = RunningProxy::start(dir.path(), "untrusting.yaml", &config).await;
    proxy.set_weights(5_000, 5_000).await;
    let seen = exchange_all(&proxy, 2, 20, false).await;
    assert_same_for_both_pools(&seen);
}

/// What one pool saw and answered, per request kind: the echoed request headers and the names of
/// the response headers, each as a set of distinct values.
type Seen = BTreeMap<(String, &'static str), (BTreeSet<String>, BTreeSet<Vec<String>>)>;

/// Sends `per_connection` requests (alternating the case's and the variant) on each of `connections`
/// keep-alive connections, checking every exchange.
async fn exchange_all(
    proxy: &RunningProxy,
    connections: usize,
    per_connection: usize,
    trusted: bool,
) -> Seen {
    let mut seen = Seen::new();
    for _ in 0..connections {
        let mut conn = RawConn::connect(proxy.listen).await;
        for i in 0..per_connection {
            let (kind, request) = if i % 2 == 0 {
                ("case", CASE)
            } else {
                ("variant", VARIANT)
            };
            conn.send(request.as_bytes()).await;
            let response = conn.read_response().await;
            let echoed = check(&response, kind, trusted);
            let pool = response.header("x-pool").expect("X-Pool").to_owned();
            let entry = seen.entry((pool, kind)).or_default();
            entry.0.insert(echoed.to_string());
            entry.1.insert(response_names(&response));
        }
    }
    seen
}

/// Checks one exchange (of a request of `kind`, with inbound forwarding values `trusted` or not)
/// and returns the headers the backend saw.
fn check(response: &RawResponse, kind: &str, trusted: bool) -> Value {
    assert_eq!(response.status(), 200, "{}", response.status_line);
    let echoed: Value = serde_json::from_slice(&response.body).expect("JSON echo");
    let at = format!("backend saw {echoed}");
    for name in HOP_BY_HOP {
        assert!(echoed.get(name).is_none(), "{name} forwarded: {at}");
    }
    if let Some(te) = echoed.get("te") {
        assert_eq!(te, &json!(["trailers"]), "TE other than trailers: {at}");
    }
    connection_of_te(&echoed, &at);
    let (forwarded_for, forwarded) = match trusted {
        true => {
            let forwarded = FORWARDED_TRUSTED.iter().find(|(k, _)| *k == kind);
            ("6.6.6.6, 127.0.0.1", forwarded.map(|(_, f)| json!([f])))
        }
        // A client-facing proxy: no address the client wrote reaches the backend.
        false => ("127.0.0.1", None),
    };
    assert_eq!(echoed["x-forwarded-for"], json!([forwarded_for]), "{at}");
    assert_eq!(echoed.get("forwarded"), forwarded.as_ref(), "{at}");
    assert_eq!(echoed["host"], json!(["shop.example"]), "{at}");

    let at = format!("client got {:?}", response.headers);
    assert!(response.header("x-backend-hop").is_none(), "{at}");
    for value in response.all("keep-alive") {
        assert!(!value.contains("timeout=99"), "backend's Keep-Alive: {at}");
    }
    for value in response.all("connection") {
        assert!(
            !value.to_ascii_lowercase().contains("x-backend-hop"),
            "{at}"
        );
    }
    echoed
}

/// The one `Connection` an HTTP/1.1 backend may see: `te`, beside the `TE: trailers` the proxy
/// passes on (RFC 9110 §10.1.4: a sender of TE names it in `Connection`); the client's
/// `Connection` and everything it named stay on the client's hop.
fn connection_of_te(echoed: &Value, at: &str) {
    if let Some(connection) = echoed.get("connection") {
        assert!(
            echoed.get("te").is_some(),
            "connection forwarded without TE: {at}"
        );
        assert_eq!(connection, &json!(["te"]), "connection forwarded: {at}");
    }
}

/// The response's header names, without those that differ per response by design.
fn response_names(response: &RawResponse) -> Vec<String> {
    let names = response.headers.iter().map(|(n, _)| n.clone());
    let mut names: Vec<_> = names
        .filter(|n| !PER_RESPONSE.contains(&n.as_str()))
        .collect();
    names.sort();
    names
}

/// Both pools answered both kinds of request, each always the same way, and the same as the other.
fn assert_same_for_both_pools(seen: &Seen) {
    for kind in ["case", "variant"] {
        let of = |pool: &str| {
            let key = (pool.to_owned(), kind);
            seen.get(&key)
                .unwrap_or_else(|| panic!("{pool} never answered the {kind} request: {seen:?}"))
        };
        let (blue, green) = (of("blue"), of("green"));
        assert_eq!(
            blue.0.len(),
            1,
            "blue saw different headers for one request: {blue:?}"
        );
        assert_eq!(blue, green, "{kind}: blue and green differ");
    }
}

/// C19's untrusting variant ("only `<client-ip>` if the proxy is set not to trust inbound XFF") in
/// a `crossfade run`: the spec's `trust_forwarded_for: false` (until trial 29 a key the spec
/// refused, so a run's proxy, often facing clients directly, always kept a client's spoofed
/// `X-Forwarded-For`) reaches the proxy: the backend sees only the peer's address, and the case's
/// hop-by-hop headers are stripped as in `crossfade proxy`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c19_run_untrusting_spec_sends_only_the_peers_address() {
    use crate::support::{Admin, Crossfade, Spec};
    let dir = temp_dir();
    let mut spec = Spec::new();
    spec.json["trust_forwarded_for"] = json!(false);
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    let mut conn = RawConn::connect(spec.listen()).await;
    for (kind, request) in [("case", CASE), ("variant", VARIANT)] {
        conn.send(request.as_bytes()).await;
        let response = conn.read_response().await;
        check(&response, kind, false);
    }
    run.terminate(Duration::from_secs(15)).await;
}

/// A client that follows RFC 9110 §10.1.4 names `TE` in `Connection` ("a sender of TE MUST also
/// send a TE connection option"), so its `TE: trailers` still means trailers to the next hop: the
/// `trailers` token reaches both pools, over HTTP/1.1 and h2c upstreams alike (gRPC servers read
/// it), while every other `TE` coding and the other headers `Connection` names stay on their hop.
/// Until session 40 `Connection: TE` dropped the whole `TE` field (Envoy keeps `trailers` there too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c19_te_trailers_named_in_connection_reaches_both_pools_as_trailers() {
    const NAMED: &str = "GET /echo-headers HTTP/1.1\r\n\
        Host: shop.example\r\n\
        Connection: TE, X-Hop-Secret\r\n\
        TE: trailers, gzip\r\n\
        X-Hop-Secret: 1\r\n\r\n";
    let dir = temp_dir();
    let blue = SampleApp::start(dir.path(), "blue", "blue-0", &[]).await;
    let green = SampleApp::start(dir.path(), "green", "green-0", &[]).await;
    for protocol in ["http1", "h2c"] {
        let mut config = proxy_config(&[blue.addr], &[green.addr]);
        for slot in ["blue", "green"] {
            config["routes"][0][slot]["protocol"] = json!(protocol);
        }
        let proxy = RunningProxy::start(dir.path(), &format!("{protocol}.yaml"), &config).await;
        proxy.set_weights(5_000, 5_000).await;
        let mut conn = RawConn::connect(proxy.listen).await;
        let mut pools = BTreeSet::new();
        for _ in 0..40 {
            conn.send(NAMED.as_bytes()).await;
            let response = conn.read_response().await;
            assert_eq!(response.status(), 200, "{}", response.status_line);
            let echoed: Value = serde_json::from_slice(&response.body).expect("JSON echo");
            let at = format!("{protocol} backend saw {echoed}");
            assert_eq!(echoed.get("te"), Some(&json!(["trailers"])), "{at}");
            assert!(
                echoed.get("x-hop-secret").is_none(),
                "x-hop-secret forwarded: {at}"
            );
            // Named again by the proxy to an HTTP/1.1 backend; over h2c never sent (RFC 9113
            // §8.2.2).
            let connection = (protocol == "http1").then(|| json!(["te"]));
            assert_eq!(echoed.get("connection"), connection.as_ref(), "{at}");
            pools.insert(response.header("x-pool").expect("X-Pool").to_owned());
        }
        assert_eq!(pools.len(), 2, "{protocol}: both pools answered: {pools:?}");
    }
}
