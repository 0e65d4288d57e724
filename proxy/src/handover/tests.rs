use std::path::Path;

use super::*;
use crate::config::{BackendConfig, ProxyConfig, RouteConfig};
use crate::metrics::ProxyMetrics;
use crate::weight::{Percent, Weights};

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

/// The config file's weights at its last load: all blue (the routes in force are 70/30).
fn file_weights() -> FileWeights {
    let mut file = routes();
    file[0].blue.weight = Some(Percent(10_000));
    file[0].green.weight = Some(Percent(0));
    FileWeights::of(&file)
}

/// The old process's proxy: [`routes`] in force (generation 1), [`file_weights`] its baseline.
fn proxy() -> Proxy {
    let config = ProxyConfig {
        routes: routes(),
        ..ProxyConfig::default()
    };
    let proxy = Proxy::new(&config, ProxyMetrics::default()).unwrap();
    proxy.set_file_weights(file_weights());
    proxy
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
    let state = proxy();
    let old = tokio::spawn(async move {
        let mut successor = handover.successor(&listeners, &state).await;
        successor.draining().await;
        successor.released().await;
    });
    let (inherited, mut predecessor) = take_over(&path).await.unwrap().expect("a predecessor");
    assert_eq!(inherited.via.as_deref(), Some("crossfade-0123456789abcdef"));
    assert_eq!(inherited.listen.local_addr().unwrap(), listen_addr);
    assert_eq!(inherited.admin.local_addr().unwrap(), admin_addr);
    assert_eq!(inherited.routes, routes());
    assert_eq!(inherited.file_weights, Some(file_weights()));
    assert_eq!(inherited.generation, Some(1));
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
    let state = proxy();
    let old = tokio::spawn(async move {
        let mut successor = handover.successor(&listeners, &state).await;
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
    let state = proxy();
    let old = tokio::spawn(async move {
        let mut successor = handover.successor(&listeners, &state).await;
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
    // A path a Unix socket cannot have is named with its length, not as "path must be shorter
    // than SUN_LEN" from the connect.
    let long = Path::new("/run").join("x".repeat(103));
    let error = check_socket_path(&long).unwrap_err().to_string();
    assert!(
        error.contains(&format!(
            "--upgrade-socket {}: 108 bytes, above the 107 a Unix socket's path may have",
            long.display()
        )),
        "{error}"
    );
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

/// Trial report 11 L3: once the routes are handed to a successor, the old process changes them no
/// more (a change acknowledged then would be lost): refused with the successor's pid, 503 with
/// `Retry-After` on the admin API. A successor that goes away gives them back.
#[tokio::test]
async fn route_changes_are_refused_from_the_handover_of_the_routes_until_it_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = socket(dir.path());
    let (listen, admin) = bound().await;
    let listeners = Listeners::of(&listen, &admin).unwrap();
    let handover = HandoverListener::bind(&path).unwrap();
    let old = proxy();
    let shifted = Weights {
        blue: 4_000,
        green: 6_000,
    };
    assert_eq!(old.set_weights("web", shifted).unwrap(), 2);
    let serving = old.clone();
    let task = tokio::spawn(async move {
        let mut successor = handover.successor(&listeners, &serving).await;
        successor.draining().await;
        successor.released().await;
    });
    let (inherited, predecessor) = take_over(&path).await.unwrap().unwrap();
    assert_eq!(inherited.generation, Some(2));
    assert_eq!(inherited.routes[0].weights(), shifted);
    // The routes were sent: every change is refused now, naming this process (the successor).
    let pid = std::process::id();
    let refused = old.set_weights("web", Weights::with(crate::Slot::Blue, 10_000));
    assert!(
        matches!(refused, Err(Error::HandingOver { successor: Some(p) }) if p == pid),
        "{refused:?}"
    );
    let error = refused.unwrap_err();
    assert!(
        error
            .to_string()
            .contains(&format!("handing over to pid {pid}")),
        "{error}"
    );
    let reply = crate::admin::AdminReply::from_error(&error);
    assert_eq!(reply.status, http::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.retry_after, Some(1));
    assert_eq!(reply.body["handover"]["pid"], pid);
    assert!(
        old.reload_routes(routes()).is_err(),
        "a reload is refused too"
    );
    assert_eq!(old.generation(), 2, "nothing published");
    // The successor's table counts on from the old one's generation.
    let new = proxy();
    let generation = new
        .inherit_routes(inherited.routes.clone(), inherited.generation)
        .unwrap();
    assert_eq!(generation, 3);
    assert_eq!(new.set_weights("web", shifted).unwrap(), 4);
    // The successor dies before `ready`: the old process takes changes again.
    drop((inherited, predecessor));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let generation = loop {
        match old.set_weights("web", Weights::with(crate::Slot::Blue, 10_000)) {
            Ok(generation) => break generation,
            Err(Error::HandingOver { .. }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(error) => panic!("still refused: {error}"),
        }
    };
    assert_eq!(generation, 3);
    assert!(
        !task.is_finished(),
        "the old side waits for the next successor"
    );
    task.abort();
}

/// A `state_file` lock passes to the successor without a moment free: the lock file arrives as a
/// third descriptor of the same open file, whose `flock` holds while the successor has it open,
/// after the old side closed all of its own.
#[tokio::test]
async fn the_successor_gets_the_state_files_lock_and_it_outlives_the_old_side() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let path = socket(dir.path());
    let lock_path = dir.path().join("weights.json.lock");
    let open = || {
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .unwrap()
    };
    let held = open();
    held.try_lock().unwrap();
    let (listen, admin) = bound().await;
    let listeners = Listeners::of(&listen, &admin)
        .unwrap()
        .with_state_lock(held.as_fd())
        .unwrap();
    let handover = HandoverListener::bind(&path).unwrap();
    let state = proxy();
    let old = tokio::spawn(async move {
        let mut successor = handover.successor(&listeners, &state).await;
        successor.draining().await;
        successor.released().await;
    });
    let (mut inherited, mut predecessor) = take_over(&path).await.unwrap().unwrap();
    let lock = std::fs::File::from(inherited.state_lock.take().expect("the lock file"));
    assert_eq!(
        lock.metadata().unwrap().ino(),
        std::fs::metadata(&lock_path).unwrap().ino()
    );
    assert!(predecessor.ready().await.unwrap());
    predecessor.release();
    // The old side is gone: its listeners' copy and its own descriptor closed.
    old.await.unwrap();
    drop(held);
    assert!(
        matches!(open().try_lock(), Err(std::fs::TryLockError::WouldBlock)),
        "the successor's copy holds the lock"
    );
    lock.try_lock()
        .expect("the successor's copy is the locked file");
    drop(lock);
    open()
        .try_lock()
        .expect("free once the successor's copy closed");
}

/// Refuses the first successor with a reason, admits the next; counts the undos.
struct RefuseOnce {
    refused: std::sync::atomic::AtomicBool,
    undone: std::sync::atomic::AtomicUsize,
}

impl Admission for RefuseOnce {
    fn admit(
        &self,
        _: Option<u32>,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = std::result::Result<(), String>> + Send + '_>,
    > {
        let first = !self.refused.swap(true, std::sync::atomic::Ordering::SeqCst);
        Box::pin(std::future::ready(match first {
            true => Err("rollout 3 is in progress (progressing)".to_owned()),
            false => Ok(()),
        }))
    }

    fn undo(&self) {
        self.undone
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A successor the old process refuses gets the reason and no socket ([`Error::HandoverRefused`]),
/// and the routes stay writable; the next one is admitted. One that goes away before `ready` is
/// undone.
#[tokio::test]
async fn a_refused_successor_hears_why_and_the_next_one_is_admitted() {
    let dir = tempfile::tempdir().unwrap();
    let path = socket(dir.path());
    let (listen, admin) = bound().await;
    let listeners = Listeners::of(&listen, &admin).unwrap();
    let handover = HandoverListener::bind(&path).unwrap();
    let state = proxy();
    let admission = std::sync::Arc::new(RefuseOnce {
        refused: false.into(),
        undone: 0.into(),
    });
    let old = tokio::spawn({
        let (state, admission) = (state.clone(), std::sync::Arc::clone(&admission));
        async move {
            let mut successor = handover
                .successor_admitting(&listeners, &state, &*admission)
                .await;
            successor.draining().await;
            successor.released().await;
        }
    });
    match take_over(&path).await {
        Err(Error::HandoverRefused { pid, reason }) => {
            assert_eq!(pid, Some(std::process::id()));
            assert_eq!(reason, "rollout 3 is in progress (progressing)");
        }
        other => panic!("not refused: {other:?}"),
    }
    assert_eq!(
        state.handing_over_to(),
        None,
        "a refusal hands nothing over"
    );
    // Admitted, then gone before `ready`: undone, and the next one takes over.
    drop(take_over(&path).await.unwrap().expect("admitted"));
    let (_inherited, mut predecessor) = loop {
        match take_over(&path).await.unwrap() {
            Some(taken) => break taken,
            None => tokio::task::yield_now().await,
        }
    };
    assert!(predecessor.ready().await.unwrap());
    predecessor.release();
    old.await.unwrap();
    assert_eq!(
        admission.undone.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    let text = Error::HandoverRefused {
        pid: Some(42),
        reason: "why".into(),
    }
    .to_string();
    assert!(
        text.contains("pid 42") && text.contains("why") && text.contains("serves on"),
        "{text}"
    );
}
