use super::*;

impl Context for () {
    fn multiplexed(&self) -> bool {
        true
    }
}

#[test]
fn a_connection_is_idle_after_three_quiet_looks_and_never_with_a_request_in_flight() {
    let context = Arc::new(());
    let started = Arc::new(Notify::new());
    let mut activity = Activity::new(
        Arc::clone(&context),
        Arc::clone(&started),
        Duration::from_secs(10),
    );
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
    started.notify_one();
    assert!(!activity.idle());
    assert!(!activity.idle());
    assert!(!activity.idle());
    assert!(activity.idle());
}
