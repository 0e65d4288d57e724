//! Forwarding loops refused before any request is sent (trial 8): an endpoint that is the proxy's
//! own listen or admin address, the wildcard case included, is refused naming its field by
//! `crossfade check`, `crossfade proxy` at start, a SIGHUP reload, a spec, and `POST /rollout`
//! (what `crossfade migrate` sends).

use std::net::SocketAddr;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

use crate::support::spec::write_json;
use crate::support::{
    free_addr, proxy_config, run_to_end, temp_dir, wait_until, Admin, Crossfade, SampleApp, Spec,
};

const PATIENCE: Duration = Duration::from_secs(30);

/// A proxy config whose only route's blue endpoint is `endpoint`, listening on `listen`.
fn looping(listen: SocketAddr, admin: SocketAddr, endpoint: SocketAddr) -> Value {
    let mut config = proxy_config(&[endpoint], &[]);
    config["listen"] = json!(listen.to_string());
    config["admin"] = json!(admin.to_string());
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_and_proxy_refuse_an_endpoint_that_is_the_listen_or_admin_address() {
    let dir = temp_dir();
    let (listen, admin) = (free_addr(), free_addr());
    let wildcard = SocketAddr::from(([0, 0, 0, 0], listen.port()));
    let cases = [
        ("own", looping(listen, admin, listen), "own listen address"),
        ("admin", looping(listen, admin, admin), "own admin address"),
        (
            "wildcard",
            looping(wildcard, admin, listen),
            "own listen address (0.0.0.0:",
        ),
    ];
    for (name, config, expected) in cases {
        let path = write_json(dir.path(), &format!("{name}.yaml"), &config);
        for command in ["check", "proxy"] {
            let out = run_to_end([command, path.to_str().unwrap()], PATIENCE).await;
            assert_ne!(out.code, Some(0), "{name}: {command} accepted it: {out:?}");
            let field = "routes[0].blue.endpoints[0]:";
            assert!(
                out.stderr.contains(field) && out.stderr.contains(expected),
                "{name}: {command}: {}",
                out.stderr
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sighup_reload_to_the_own_listen_address_is_refused_and_the_old_routes_serve() {
    let dir = temp_dir();
    let blue = SampleApp::start(dir.path(), "blue", "blue-0", &[]).await;
    let mut config = proxy_config(&[blue.addr], &[]);
    let path = write_json(dir.path(), "proxy.yaml", &config);
    let admin = Admin::new(config["admin"].as_str().unwrap().parse().unwrap());
    let mut proxy = Crossfade::proxy(dir.path(), &path);
    proxy.wait_ready(&admin, PATIENCE).await;

    config["routes"][0]["blue"]["endpoints"] = json!([config["listen"]]);
    write_json(dir.path(), "proxy.yaml", &config);
    kill(Pid::from_raw(proxy.pid() as i32), Signal::SIGHUP).expect("SIGHUP");
    let log = wait_until(PATIENCE, "the refused reload", || {
        let log = proxy.log();
        async move { log.contains("not reloaded").then_some(log) }
    })
    .await;
    assert!(
        log.contains("routes[0].blue.endpoints[0]") && log.contains("own listen address"),
        "{log}"
    );
    let status = admin.status().await;
    let endpoints = &status["routes"][0]["blue"]["endpoints"];
    assert!(
        endpoints.to_string().contains(&blue.addr.to_string()),
        "{status}"
    );
    proxy.terminate(PATIENCE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_to_the_own_listen_or_admin_address_is_refused_naming_the_field() {
    let dir = temp_dir();
    let spec = Spec::new();
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, PATIENCE).await;
    let loopback = SocketAddr::from(([127, 0, 0, 1], spec.listen().port()));
    for (endpoint, expected) in [
        (spec.listen(), "own listen address"),
        (spec.admin(), "own admin address"),
        (loopback, "own listen address"),
    ] {
        let body = json!({ "green": { "endpoints": [endpoint.to_string()] } });
        let (status, answer) = admin.json("POST", "/rollout", Some(&body)).await;
        assert_eq!(status, 400, "{endpoint}: {answer}");
        let text = answer.to_string();
        assert!(
            text.contains("green.endpoints[0]") && text.contains(expected),
            "{endpoint}: {text}"
        );
    }
    // The same refusal in a spec, by `crossfade check`.
    let mut looping = Spec::new();
    looping.json["green"] = json!({ "endpoints": [looping.listen().to_string()] });
    let path = looping.write(dir.path(), "looping.yaml");
    let out = run_to_end(["check", path.to_str().unwrap()], PATIENCE).await;
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(out.stderr.contains("green.endpoints[0]"), "{}", out.stderr);
    run.terminate(PATIENCE).await;
}

/// The `Via` entries of a response to `GET /` on `listen`, in order.
async fn response_via(listen: SocketAddr) -> Vec<String> {
    use http_body_util::Empty;
    use hyper_util::client::legacy::{connect::HttpConnector, Client};
    let client: Client<HttpConnector, Empty<bytes::Bytes>> =
        Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let request = http::Request::get(format!("http://{listen}/"))
        .body(Empty::new())
        .unwrap();
    let response = client.request(request).await.expect("an answer");
    assert_eq!(response.status(), 200);
    let via = response.headers().get_all(http::header::VIA).iter();
    via.map(|v| v.to_str().unwrap().to_owned()).collect()
}

/// Loops no address comparison sees are caught by `Via` (RFC 9110 §7.6.3): `crossfade run`'s
/// proxy sends the spec's `via.pseudonym` (a random one without it), and `check` refuses one
/// that is no token, naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crossfade_run_sends_the_specs_via_pseudonym_and_check_refuses_a_bad_one() {
    let dir = temp_dir();
    let mut spec = Spec::new();
    spec.json["via"] = json!({ "pseudonym": "run-edge" });
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, PATIENCE).await;
    assert_eq!(response_via(spec.listen()).await, ["1.1 run-edge"]);
    run.terminate(PATIENCE).await;

    let mut bad = Spec::new();
    bad.json["via"] = json!({ "pseudonym": "run edge" });
    let path = bad.write(dir.path(), "bad.yaml");
    let out = run_to_end(["check", path.to_str().unwrap()], PATIENCE).await;
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(
        out.stderr.contains("via.pseudonym") && out.stderr.contains("token"),
        "{}",
        out.stderr
    );
}
