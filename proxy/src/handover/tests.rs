use std::path::Path;

use super::*;
use crate::config::{BackendConfig, RouteConfig};
use crate::weight::Percent;

fn routes() -> Vec<RouteConfig> {
    vec![RouteConfig {
        name: "web".into(),
        blue: BackendConfig {
            endpoints: vec!["127.0.0.1:1".parse().unwrap()],
            weight: Some(Percent(7_000)),
            ..BackendConfig::default()
        },
        green: BackendConfig {
            endpoints: vec!["127.0.0.1:2".parse().unwrap()],
            weight: Some(Percent(3_000)),
            ..BackendConfig::default()
        },
        ..RouteConfig::default()
    }]
}

fn state() -> (Vec<RouteConfig>, FileWeights) {
    let mut file = routes();
    file[0].blue.weight = Some(Percent(10_000));
    file[0].green.weight = Some(Percent(0));
    (routes(), FileWeights::of(&file))
}

async fn bound() -> (TcpListener, TcpListener) {
    let listen = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    (listen, admin)
}

fn socket(dir: &Path) -> PathBuf {
    dir.join("upgrade.sock")
}

#[tokio::test]
async fn nothing_listening_means_nothing_to_take_over() {
    let dir = tempfile::tempdir().unwrap();
    assert!(take_over(&socket(dir.path())).await.unwrap().is_none());
    // A stale socket file (its process gone) is refused, also nothing to take over.
    drop(HandoverListener::bind(&socket(dir.path())).unwrap());
    assert!(take_over(&socket(dir.path())).await.unwrap().is_none());
}

#[tokio::test]
async fn the_successor_gets_both_listening_sockets_and_the_live_routes() {
    let dir = tempfile::tempdir().unwrap();
    let path = socket(dir.path());
    let (listen, admin) = bound().await;
    let (listen_addr, admin_addr) = (listen.local_addr().unwrap(), admin.local_addr().unwrap());
    let listeners = Listeners::of(&listen, &admin).unwrap();
    let handover = HandoverListener::bind(&path)
        .unwrap()
        .announcing_via(Some("crossfade-0123456789abcdef"));
    let old = tokio::spawn(async move {
        let mut successor = handover.successor(&listeners, state).await;
        successor.draining().await;
        successor.released().await;
    });
    let (inherited, mut predecessor) = take_over(&path).await.unwrap().expect("a predecessor");
    assert_eq!(inherited.via.as_deref(), Some("crossfade-0123456789abcdef"));
    assert_eq!(inherited.listen.local_addr().unwrap(), listen_addr);
    assert_eq!(inherited.admin.local_addr().unwrap(), admin_addr);
    assert_eq!(inherited.routes, routes());
    assert_eq!(inherited.file_weights, Some(state().1));
    // The inherited socket is the same socket: a connection queued on it is accepted here.
    let client = tokio::net::TcpStream::connect(listen_addr).await.unwrap();
    let (accepted, peer) = inherited.listen.accept().await.unwrap();
    assert_eq!(peer, client.local_addr().unwrap());
    drop(accepted);
    assert!(predecessor.ready().await.unwrap(), "the old side confirms");
    predecessor.release();
    old.await.unwrap();
}

/// Step 4: the old side is not done (and so does not exit) before the successor released the
/// exchange, i.e. claimed the service (pid file, `MAINPID=`) after `draining`.
#[tokio::test]
async fn the_old_side_waits_for_the_successor_to_release_the_exchange() {
    let dir = tempfile::tempdir().unwrap();
    let path = socket(dir.path());
    let (listen, admin) = bound().await;
    let listeners = Listeners::of(&listen, &admin).unwrap();
    let handover = HandoverListener::bind(&path).unwrap();
    let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = order.clone();
    let old = tokio::spawn(async move {
        let mut successor = handover.successor(&listeners, state).await;
        successor.draining().await;
        successor.released().await;
        seen.lock().unwrap().push("released");
    });
    let (_inherited, mut predecessor) = take_over(&path).await.unwrap().unwrap();
    assert!(predecessor.ready().await.unwrap(), "the old side confirms");
    // The successor claims the service here (pid file, service manager).
    order.lock().unwrap().push("claimed");
    predecessor.release();
    old.await.unwrap();
    assert_eq!(*order.lock().unwrap(), ["claimed", "released"]);
}

#[tokio::test]
async fn a_successor_that_goes_away_before_ready_leaves_the_old_side_waiting_for_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let path = socket(dir.path());
    let (listen, admin) = bound().await;
    let listeners = Listeners::of(&listen, &admin).unwrap();
    let handover = HandoverListener::bind(&path).unwrap();
    let old = tokio::spawn(async move {
        let mut successor = handover.successor(&listeners, state).await;
        successor.draining().await;
        successor.released().await;
    });
    // Takes the sockets and dies without a word.
    let (inherited, predecessor) = take_over(&path).await.unwrap().unwrap();
    drop((inherited, predecessor));
    // A successor that says something else is not ready either.
    let mut talker = UnixStream::connect(&path).await.unwrap();
    talker.write_all(b"hello\n").await.unwrap();
    let mut rest = Vec::new();
    let _ = talker.read_to_end(&mut rest).await;
    assert!(!old.is_finished(), "the old side still serves");
    // The old side's own listener still accepts.
    let _client = tokio::net::TcpStream::connect(listen.local_addr().unwrap())
        .await
        .unwrap();
    listen.accept().await.unwrap();
    // The next successor completes.
    let (_inherited, mut predecessor) = take_over(&path).await.unwrap().unwrap();
    assert!(predecessor.ready().await.unwrap());
    predecessor.release();
    old.await.unwrap();
}

#[tokio::test]
async fn bind_replaces_only_a_stale_socket_and_refuses_anything_else() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    // A regular file (a config, a certificate...) is never removed.
    let precious = dir.path().join("precious.txt");
    std::fs::write(&precious, "important data").unwrap();
    let error = HandoverListener::bind(&precious).unwrap_err().to_string();
    assert!(
        error.contains(&format!(
            "--upgrade-socket {}: a regular file is there",
            precious.display()
        )),
        "{error}"
    );
    assert_eq!(
        std::fs::read_to_string(&precious).unwrap(),
        "important data"
    );
    let error = HandoverListener::bind(dir.path()).unwrap_err().to_string();
    assert!(error.contains("a directory is there"), "{error}");
    // Trial report 5 F9: a missing directory, named with the flag and the path, also by the check
    // made before anything is bound.
    let missing = dir.path().join("nodir").join("x.sock");
    let named = format!(
        "--upgrade-socket {}: directory {} does not exist",
        missing.display(),
        dir.path().join("nodir").display()
    );
    for error in [
        HandoverListener::bind(&missing).unwrap_err().to_string(),
        check_socket_path(&missing).unwrap_err().to_string(),
    ] {
        assert!(error.contains(&named), "{error}");
    }
    let under_file = precious.join("x.sock");
    let error = check_socket_path(&under_file).unwrap_err().to_string();
    assert!(error.contains("is not a directory"), "{error}");
    assert!(check_socket_path(&precious).is_err());
    assert!(check_socket_path(&dir.path().join("fresh.sock")).is_ok());
    // A live process's socket is not taken from it.
    let path = socket(dir.path());
    let live = HandoverListener::bind(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "only this user may take the listeners over"
    );
    let error = HandoverListener::bind(&path).unwrap_err().to_string();
    assert!(error.contains("a process listens on it"), "{error}");
    // A stale one (its process gone) is replaced.
    drop(live);
    drop(HandoverListener::bind(&path).unwrap());
}
