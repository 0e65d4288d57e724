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

    fn drain_grace(&self) -> Duration {
        GRACE
    }

    fn abusive(&self) -> bool {
        false
    }
}

/// The contexts' `drain_grace`.
const GRACE: Duration = Duration::from_secs(2);

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
    let close = (shutdown, |_: Pin<&mut Endless>| false, shutdown);
    let served = serve(connection.as_mut(), close, watcher, activity, deadline);
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

/// Trial 11 L2: a drain that asks while the response in flight already went out promising
/// keep-alive does not shut the connection down (that would close it right after a response that
/// did not say so): it waits for that response's end, serves the connection on for the grace
/// after it, and shuts it down then, once.
#[tokio::test(start_paused = true)]
async fn a_response_that_promised_keep_alive_is_followed_by_the_grace_before_the_shutdown() {
    use futures_util::FutureExt;
    use std::sync::atomic::Ordering::Relaxed;
    let graceful = GracefulShutdown::new();
    let watcher = graceful.watcher();
    let mut connection = Box::pin(Endless {
        shutdowns: std::sync::atomic::AtomicU32::new(0),
    });
    let context = Arc::new(Counted::default());
    let activity = Activity::new(Arc::clone(&context), Duration::from_secs(3600));
    context.start();
    // The request in flight: its response holds a clone of the context until it ends.
    let response = Arc::clone(&context);
    let deadline = Instant::now() + Duration::from_secs(3600);
    let shutdown = |c: Pin<&mut Endless>| {
        c.shutdowns.fetch_add(1, Relaxed);
    };
    let close = (shutdown, |_: Pin<&mut Endless>| true, shutdown);
    let served = serve(connection.as_mut(), close, watcher, activity, deadline);
    let mut served = Box::pin(served);
    assert!(served.as_mut().now_or_never().is_none());
    let drained = tokio::spawn(graceful.shutdown());
    tokio::task::yield_now().await;
    let shutdowns = |c: &Pin<Box<Endless>>| c.shutdowns.load(Relaxed);

    // The drain asked; the response goes on, however long.
    assert!(served.as_mut().now_or_never().is_none());
    tokio::time::advance(GRACE * 3).await;
    assert!(served.as_mut().now_or_never().is_none());
    // The response ends: the grace starts.
    drop(response);
    assert!(served.as_mut().now_or_never().is_none());
    tokio::time::advance(GRACE - Duration::from_millis(10)).await;
    assert!(served.as_mut().now_or_never().is_none());
    tokio::time::advance(Duration::from_millis(20)).await;
    let (result, unasked) = served
        .as_mut()
        .now_or_never()
        .expect("shut down once the grace after the response passed");
    assert!(result.is_ok());
    assert!(!unasked, "it had carried a request");
    drop(served);
    assert_eq!(shutdowns(&connection), 1);
    drop(connection);
    drained.await.unwrap();
}
