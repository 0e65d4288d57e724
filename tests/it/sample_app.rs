//! `crossfade sample-app` as a process, spoken to over raw HTTP/1.1 (trial 11, L5): POSTs with
//! bodies of 0 B, 1 KiB and 1 MiB on one keep-alive connection are all answered, the body read
//! before each answer (an injected 500 on `/upload` included); an answer given without reading
//! the body (`--reject-uploads`) says `Connection: close` and the connection closes.

use std::time::Duration;

use crate::support::{temp_dir, RawConn, SampleApp};

/// Body sizes sent one after the other on one connection.
const SIZES: [usize; 5] = [0, 1024, 1 << 20, 1024, 0];

/// `POST path` with a `len`-byte body, sent at once (no `Expect`).
fn post(path: &str, len: usize) -> Vec<u8> {
    let head = format!("POST {path} HTTP/1.1\r\nHost: sample\r\nContent-Length: {len}\r\n\r\n");
    let mut request = head.into_bytes();
    request.resize(request.len() + len, b'x');
    request
}

/// Sends a POST of each of [`SIZES`] to `path` on `conn`, one after the other: each is answered
/// `status`, without `Connection: close`.
async fn posts_on_one_connection(conn: &mut RawConn, path: &str, status: u16) {
    for (i, len) in SIZES.into_iter().enumerate() {
        conn.send(&post(path, len)).await;
        let response = conn.read_response().await;
        let what = format!("POST {path} #{i} with {len} bytes: {:?}", response.headers);
        assert_eq!(response.status(), status, "{what}");
        assert_eq!(response.header("connection"), None, "{what}");
    }
}

#[tokio::test]
async fn keep_alive_posts_with_bodies_are_all_answered_on_one_connection() {
    let dir = temp_dir();
    let app = SampleApp::start(dir.path(), "v1", "v1-0", &["--reject-uploads"]).await;
    let mut conn = RawConn::connect(app.addr).await;
    posts_on_one_connection(&mut conn, "/", 200).await;
    posts_on_one_connection(&mut conn, "/api", 200).await;
    conn.send(b"GET /healthz HTTP/1.1\r\nHost: sample\r\n\r\n")
        .await;
    assert_eq!(conn.read_response().await.status(), 200);
    // `--reject-uploads` answers before reading the body, on purpose: it says so, and closes.
    // (A small body: sent with the head in one segment, it is all in the app's buffer when the
    // app closes, so the close is a FIN, not a reset that could discard the answer.)
    conn.send(&post("/upload", 1024)).await;
    let rejected = conn.read_response().await;
    assert_eq!(rejected.status(), 401);
    assert_eq!(rejected.header("connection"), Some("close"));
    assert!(
        conn.closed_within(Duration::from_secs(20)).await,
        "the connection closes after an answer with connection: close"
    );
}

#[tokio::test]
async fn an_injected_error_on_upload_reads_the_body_and_keeps_the_connection() {
    let dir = temp_dir();
    let app = SampleApp::start(dir.path(), "v1", "v1-0", &["--error-rate", "1"]).await;
    let mut conn = RawConn::connect(app.addr).await;
    posts_on_one_connection(&mut conn, "/upload", 500).await;
    posts_on_one_connection(&mut conn, "/", 500).await;
}

/// CI, session 33: a demo killed while its sample apps started left one running for good: the
/// app read its parent after the demo was gone and watched init instead. `--exit-with-parent=PID`
/// names the parent to watch: an app whose named parent is not its parent (here a process already
/// gone) exits at once, saying why; a bare `--exit-with-parent` under a live parent keeps serving.
#[tokio::test]
async fn an_app_whose_named_parent_is_already_gone_exits_at_once() {
    let mut gone = std::process::Command::new("true")
        .spawn()
        .expect("spawn true");
    let gone_pid = gone.id();
    gone.wait().expect("reap true");
    let flag = format!("--exit-with-parent={gone_pid}");
    let out = crate::support::child::run_to_end(
        [
            "sample-app",
            "--port",
            "0",
            "--version",
            "v1",
            flag.as_str(),
        ],
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("the process that started it is gone"),
        "{}",
        out.stderr
    );
    // Bare: the parent (this test) is alive, so it serves until stopped.
    let mut app = tokio::process::Command::new(crate::support::BIN)
        .args([
            "sample-app",
            "--port",
            "0",
            "--version",
            "v1",
            "--exit-with-parent",
        ])
        .kill_on_drop(true)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn sample-app");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(app.try_wait().expect("try_wait").is_none(), "exited");
    let _ = app.start_kill();
}
