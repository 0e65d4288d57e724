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
