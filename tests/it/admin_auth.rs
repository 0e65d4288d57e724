//! The admin API's bearer token (RFC 6750): an admin API bound to a non-loopback address refuses to
//! start without one; with one, every request but the probes needs `Authorization: Bearer`, else 401
//! with a `WWW-Authenticate: Bearer` challenge; the operator commands send it from
//! `CROSSFADE_ADMIN_TOKEN` or `--admin-token-file`.

use std::ffi::OsStr;
use std::time::Duration;

use serde_json::json;

use crate::support::{run_to_end, run_to_end_with, temp_dir, Admin, Crossfade, Spec};

const TOKEN: &str = "Zm9vYmFy-s3cret.token_~+/=";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_api_on_a_non_loopback_address_refuses_to_start_without_a_token() {
    let dir = temp_dir();
    let mut spec = Spec::new();
    // Never bound: the check runs before any listener is opened. Not port 9, the endpoint's:
    // an admin address on a wildcard with the endpoint's port would be refused as a loop first.
    spec.json["admin"] = json!("0.0.0.0:19");
    let path = spec.write(dir.path(), "spec.yaml");
    for command in ["run", "proxy"] {
        let config = if command == "run" {
            path.clone()
        } else {
            let mut config = crate::support::proxy_config(&["127.0.0.1:9".parse().unwrap()], &[]);
            config["admin"] = json!("0.0.0.0:19");
            crate::support::spec::write_json(dir.path(), "proxy.yaml", &config)
        };
        let done = run_to_end(
            [OsStr::new(command), config.as_os_str()],
            Duration::from_secs(20),
        )
        .await;
        assert_eq!(done.code, Some(1), "{command}: {}", done.stderr);
        assert!(
            done.stderr.contains("0.0.0.0:19 is not a loopback address")
                && done.stderr.contains("CROSSFADE_ADMIN_TOKEN")
                && done.stderr.contains("--admin-token-file"),
            "{command}: {}",
            done.stderr
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_the_admin_api_answers_401_to_anyone_without_it() {
    let dir = temp_dir();
    let token_file = dir.path().join("admin.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("write the token file");
    let spec = Spec::new();
    let admin = Admin::new(spec.admin());
    let spec_path = spec.write(dir.path(), "spec.yaml");
    let args = [
        OsStr::new("run"),
        spec_path.as_os_str(),
        OsStr::new("--admin-token-file"),
        token_file.as_os_str(),
    ];
    let mut run = Crossfade::spawn(dir.path(), "run.log", args);
    // `/readyz` (and `/healthz`) stay open for probes.
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    let (status, _, _) = admin
        .request_with("GET", "/healthz", None, &[])
        .await
        .unwrap();
    assert_eq!(status, 200);

    let bearer = format!("Bearer {TOKEN}");
    // RFC 6750 §3.1: no credentials or another scheme's (an unsupported method): 401 without an
    // error code; a wrong token: 401 invalid_token; `Bearer` without a token: 400 invalid_request.
    // (request headers, status, WWW-Authenticate)
    type Case<'a> = (&'a [(&'a str, &'a str)], u16, &'a str);
    let cases: [Case; 5] = [
        (&[], 401, "Bearer realm=\"crossfade-admin\""),
        (
            &[("authorization", "Bearer wrong")],
            401,
            "Bearer realm=\"crossfade-admin\", error=\"invalid_token\"",
        ),
        (
            &[("authorization", "Basic dXNlcjpwYXNz")],
            401,
            "Bearer realm=\"crossfade-admin\"",
        ),
        (
            &[("authorization", "Bearer")],
            400,
            "Bearer realm=\"crossfade-admin\", error=\"invalid_request\"",
        ),
        (
            &[("authorization", &bearer[..bearer.len() - 1])],
            401,
            "Bearer realm=\"crossfade-admin\", error=\"invalid_token\"",
        ),
    ];
    for path in ["/status", "/metrics", "/rollout"] {
        for (headers, code, challenge) in &cases {
            let (status, answer, body) = admin
                .request_with("GET", path, None, headers)
                .await
                .unwrap();
            assert_eq!(status, *code, "GET {path} {headers:?}: {body}");
            assert_eq!(
                answer["www-authenticate"], *challenge,
                "GET {path} {headers:?}"
            );
        }
        let auth = [("authorization", bearer.as_str())];
        let (status, _, body) = admin.request_with("GET", path, None, &auth).await.unwrap();
        assert_eq!(status, 200, "GET {path} with the token: {body}");
    }

    // A write without the token changes nothing.
    let weights = json!({ "blue": 10000, "green": 0 });
    let (status, _, _) = admin
        .request_with("PUT", "/routes/web/weights", Some(&weights), &[])
        .await
        .unwrap();
    assert_eq!(status, 401);
    let auth = [("authorization", bearer.as_str())];
    let (_, _, status_body) = admin
        .request_with("GET", "/status", None, &auth)
        .await
        .unwrap();
    let generation =
        serde_json::from_str::<serde_json::Value>(&status_body).unwrap()["generation"].clone();
    assert_eq!(generation, 1, "{status_body}");

    // The CLI: without a token it says what is missing; with it (env or file) it works.
    let addr = spec.admin().to_string();
    let status_args = ["status", "--admin", addr.as_str()];
    let done = run_to_end(status_args, Duration::from_secs(20)).await;
    assert_ne!(done.code, Some(0), "{}", done.stdout);
    assert!(
        done.stderr.contains("requires a bearer token"),
        "{}",
        done.stderr
    );
    let env = [("CROSSFADE_ADMIN_TOKEN", TOKEN)];
    let done = run_to_end_with(status_args, &env, Duration::from_secs(20)).await;
    assert_eq!(done.code, Some(0), "{}{}", done.stdout, done.stderr);
    let env = [("CROSSFADE_ADMIN_TOKEN", "wrong")];
    let done = run_to_end_with(status_args, &env, Duration::from_secs(20)).await;
    assert_ne!(done.code, Some(0));
    assert!(
        done.stderr
            .contains("refused the bearer token from CROSSFADE_ADMIN_TOKEN"),
        "{}",
        done.stderr
    );
    let file = token_file.to_string_lossy().into_owned();
    let with_file = [
        "status",
        "--admin",
        addr.as_str(),
        "--admin-token-file",
        file.as_str(),
    ];
    let done = run_to_end(with_file, Duration::from_secs(20)).await;
    assert_eq!(done.code, Some(0), "{}{}", done.stdout, done.stderr);

    // Session 41: an empty token file (or a token the server could never hold) was sent as
    // `Bearer` with no token, and the server's 400 read as "not an answer of the admin API of
    // `crossfade run`". The token is held to the server's rule before anything is sent.
    let empty = dir.path().join("empty.token");
    std::fs::write(&empty, "\n").expect("write the empty token file");
    let spaced = dir.path().join("spaced.token");
    std::fs::write(&spaced, "two words\n").expect("write the token file");
    for (file, why) in [
        (&empty, "it is empty"),
        (&spaced, "character ' ' is not allowed"),
    ] {
        let name = file.to_string_lossy().into_owned();
        for command in ["status", "abort"] {
            let args = [
                command,
                "--admin",
                addr.as_str(),
                "--admin-token-file",
                &name,
            ];
            let done = run_to_end(args, Duration::from_secs(20)).await;
            let said = format!("the admin token from {name} is not valid: {why}");
            assert!(
                done.code == Some(1) && done.stderr.contains(&said),
                "{args:?} says {said:?}: {:?} {}",
                done.code,
                done.stderr
            );
        }
    }
    let env = [("CROSSFADE_ADMIN_TOKEN", "")];
    let done = run_to_end_with(status_args, &env, Duration::from_secs(20)).await;
    assert!(
        done.stderr
            .contains("the admin token from CROSSFADE_ADMIN_TOKEN is not valid: it is empty"),
        "{}",
        done.stderr
    );
}

/// Trial 7, G12: an admin API that other machines can reach refuses a token shorter than 16 bytes,
/// in `check` and at the start of `run` and `proxy`, naming where the token came from and the
/// minimum; a 16-byte token passes `check`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_loopback_admin_api_refuses_a_short_token_in_check_and_at_start() {
    let dir = temp_dir();
    let mut spec = Spec::new();
    // Never bound: the check runs before any listener is opened.
    spec.json["admin"] = json!("0.0.0.0:19");
    let spec_path = spec.write(dir.path(), "spec.yaml");
    let mut config = crate::support::proxy_config(&["127.0.0.1:9".parse().unwrap()], &[]);
    config["admin"] = json!("0.0.0.0:19");
    let config_path = crate::support::spec::write_json(dir.path(), "proxy.yaml", &config);
    let cases = [
        ("check", &spec_path),
        ("check", &config_path),
        ("run", &spec_path),
        ("proxy", &config_path),
    ];
    for (command, file) in cases {
        let args = [OsStr::new(command), file.as_os_str()];
        let short = [("CROSSFADE_ADMIN_TOKEN", "abc")];
        let done = run_to_end_with(args, &short, Duration::from_secs(20)).await;
        assert_eq!(done.code, Some(1), "{command}: {}", done.stderr);
        assert!(
            done.stderr
                .contains("CROSSFADE_ADMIN_TOKEN is 3 bytes long")
                && done.stderr.contains("at least 16 bytes")
                && done.stderr.contains("0.0.0.0:19"),
            "{command} {}: {}",
            file.display(),
            done.stderr
        );
    }
    for file in [&spec_path, &config_path] {
        let args = [OsStr::new("check"), file.as_os_str()];
        let long = [("CROSSFADE_ADMIN_TOKEN", "0123456789abcdef")];
        let done = run_to_end_with(args, &long, Duration::from_secs(20)).await;
        assert_eq!(done.code, Some(0), "{}: {}", file.display(), done.stderr);
    }
}
