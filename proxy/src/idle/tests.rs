use super::*;

/// A context that counts requests as the server's does.
#[derive(Default)]
struct Counted(std::sync::atomic::AtomicU64);

impl Counted {
    fn start(&self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Context for Counted {
    fn multiplexed(&self) -> bool {
        true
    }

    fn requests(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[test]
fn a_connection_is_idle_after_three_quiet_looks_and_never_with_a_request_in_flight() {
    let context = Arc::new(Counted::default());
    let mut activity = Activity::new(Arc::clone(&context), Duration::from_secs(10));
    assert!(!activity.idle());
    assert!(!activity.idle());
    assert!(activity.idle(), "three quiet looks");
    // A request in flight (its response holds a clone) keeps it busy however long.
    let request = Arc::clone(&context);
    for _ in 0..10 {
        assert!(!activity.idle());
    }
    drop(request);
    // A request that started and ended between two looks counts too.
    assert!(!activity.idle());
    context.start();
    assert!(!activity.idle());
    assert!(!activity.idle());
    assert!(!activity.idle());
    assert!(activity.idle());
}

/// A connection that never ends by itself and counts its graceful shutdowns; each poll wakes
/// its task again, as a socket would between requests.
struct Endless {
    shutdowns: std::sync::atomic::AtomicU32,
}

impl Future for Endless {
    type Output = Result<(), ()>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        cx.waker().wake_by_ref();
        match self.shutdowns.load(std::sync::atomic::Ordering::Relaxed) {
            0 => Poll::Pending,
            _ => Poll::Ready(Ok(())),
        }
    }
}

/// The drain watch is polled only when it was woken (`DrainWake`), yet a drain asked after
/// many wakes of the task by the connection (its own waker kept registered) still shuts the
/// connection down, once.
#[tokio::test]
async fn the_drain_shuts_a_connection_down_after_other_wakes() {
    let graceful = GracefulShutdown::new();
    let watcher = graceful.watcher();
    let mut connection = Box::pin(Endless {
        shutdowns: std::sync::atomic::AtomicU32::new(0),
    });
    let context = Arc::new(Counted::default());
    let activity = Activity::new(Arc::clone(&context), Duration::from_secs(3600));
    context.start();
    let deadline = Instant::now() + Duration::from_secs(3600);
    let shutdown = |c: Pin<&mut Endless>| {
        c.shutdowns
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    };
    let served = serve(connection.as_mut(), shutdown, watcher, activity, deadline);
    let mut served = Box::pin(served);
    // Many polls (the connection wakes the task at each) with no drain: still serving.
    for _ in 0..100 {
        let polled = futures_util::FutureExt::now_or_never(served.as_mut());
        assert!(polled.is_none());
    }
    let drained = tokio::spawn(graceful.shutdown());
    let (result, unasked) = tokio::time::timeout(Duration::from_secs(5), served)
        .await
        .expect("the drain ends the connection");
    assert!(result.is_ok());
    assert!(!unasked, "it had carried a request");
    assert_eq!(
        connection
            .shutdowns
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    drop(connection);
    drained.await.unwrap();
}
