//! Leader election's exact requests and its error paths (409 Conflict, 500, a request that never
//! answers), against a mock API on paused time (`crate::kube::mock`).

use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::*;
use crate::kube::mock::{self, ApiServer, Call};

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/crossfade-system/leases";
const PATH: &str =
    "/apis/coordination.k8s.io/v1/namespaces/crossfade-system/leases/crossfade-controller";
/// A `renewTime` long past on every clock: only the follower's own observation may expire it.
const LONG_AGO: &str = "2020-01-01T00:00:00.000000Z";

fn election() -> Election {
    Election {
        namespace: "crossfade-system".into(),
        name: DEFAULT_LEASE.into(),
        identity: "me".into(),
        duration: Duration::from_secs(15),
    }
}

fn lease(rv: &str, holder: Option<&str>, renew: &str, transitions: i32) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": { "name": DEFAULT_LEASE, "namespace": "crossfade-system", "resourceVersion": rv },
        "spec": { "holderIdentity": holder, "leaseDurationSeconds": 15,
                  "acquireTime": "2026-11-30T10:00:00.000000Z", "renewTime": renew,
                  "leaseTransitions": transitions }
    })
}

/// What the work future reports: `started` when leadership begins, `stopped` when it is dropped.
type Events = mpsc::UnboundedReceiver<(&'static str, Instant)>;

struct OnDrop(mpsc::UnboundedSender<(&'static str, Instant)>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(("stopped", Instant::now()));
    }
}

/// Runs the election in a task; the work never ends on its own. Dropping the returned sender
/// (or sending on it) is the shutdown.
fn start() -> (
    ApiServer,
    Events,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let (client, server) = mock::client();
    let (tx, events) = mpsc::unbounded_channel();
    let work = move || {
        let tx = tx.clone();
        async move {
            let _ = tx.send(("started", Instant::now()));
            let _guard = OnDrop(tx);
            std::future::pending::<()>().await;
        }
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    };
    let task = tokio::spawn(run_elected(client, election(), work, shutdown));
    (server, events, stop, task)
}

/// Lets the election task run until it waits again (paused time: only ready tasks run).
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

fn spec(call: &Call) -> &Value {
    &call.body["spec"]
}

/// Acquires a free Lease (rv 7 read, rv 8 written); returns when the read arrived.
async fn acquire(server: &mut ApiServer, events: &mut Events) -> Instant {
    let get = server.expect("GET", PATH).await;
    let t0 = get.at;
    get.ok(lease("7", None, LONG_AGO, 2));
    let put = server.expect("PUT", PATH).await;
    put.ok(lease("8", Some("me"), LONG_AGO, 3));
    settle().await;
    assert_eq!(events.try_recv().map(|e| e.0), Ok("started"));
    t0
}

#[tokio::test(start_paused = true)]
async fn a_free_lease_is_taken_by_a_replace_guarded_by_the_resource_version_read() {
    let (mut server, mut events, _stop, _task) = start();
    server
        .expect("GET", PATH)
        .await
        .ok(lease("7", Some(""), LONG_AGO, 2));
    let put = server.expect("PUT", PATH).await;
    assert!(put.query.is_empty(), "{:?}", put.query);
    assert_eq!(put.content_type.as_deref(), Some("application/json"));
    assert_eq!(put.body["metadata"]["resourceVersion"], "7");
    assert_eq!(put.body["metadata"]["name"], DEFAULT_LEASE);
    let spec = spec(&put);
    assert_eq!(spec["holderIdentity"], "me");
    assert_eq!(spec["leaseDurationSeconds"], 15);
    assert_eq!(
        spec["leaseTransitions"], 3,
        "a new holder is one more transition"
    );
    assert_ne!(spec["renewTime"], LONG_AGO);
    assert_eq!(
        spec["acquireTime"], spec["renewTime"],
        "a new term starts now"
    );
    settle().await;
    assert!(
        events.try_recv().is_err(),
        "not leading before the write is answered"
    );
    put.ok(lease("8", Some("me"), LONG_AGO, 3));
    settle().await;
    assert_eq!(events.try_recv().map(|e| e.0), Ok("started"));
}

#[tokio::test(start_paused = true)]
async fn a_missing_lease_is_created_with_this_replica_as_holder() {
    let (mut server, mut events, _stop, _task) = start();
    server.expect("GET", PATH).await.respond(
        404,
        mock::status(404, "NotFound", "leases \"crossfade-controller\" not found"),
    );
    let post = server.expect("POST", LEASES).await;
    assert_eq!(post.body["metadata"]["name"], DEFAULT_LEASE);
    assert_eq!(post.body["metadata"]["resourceVersion"], Value::Null);
    assert_eq!(spec(&post)["holderIdentity"], "me");
    assert_eq!(spec(&post)["leaseTransitions"], 0);
    post.respond(201, lease("1", Some("me"), LONG_AGO, 0));
    settle().await;
    assert_eq!(events.try_recv().map(|e| e.0), Ok("started"));
}

#[tokio::test(start_paused = true)]
async fn a_conflict_when_taking_the_lease_does_not_lead_and_the_winner_is_left_alone() {
    let (mut server, mut events, _stop, _task) = start();
    server
        .expect("GET", PATH)
        .await
        .ok(lease("7", None, LONG_AGO, 2));
    let put = server.expect("PUT", PATH).await;
    let lost_at = put.at;
    put.respond(
        409,
        mock::status(409, "Conflict", "the object has been modified"),
    );
    // The winner renews every 2 s; this replica reads every retry period (2 s) and never writes.
    for i in 0..10u32 {
        let get = server.next().await;
        assert_eq!(
            get.line(),
            format!("GET {PATH}"),
            "read {i}: no write while held"
        );
        assert_eq!(get.at - lost_at, Duration::from_secs(2) * (i + 1));
        let renewed = format!("2026-11-30T10:00:{:02}.000000Z", 2 * i);
        get.ok(lease(&format!("{}", 9 + i), Some("winner"), &renewed, 3));
    }
    settle().await;
    assert!(
        events.try_recv().is_err(),
        "a replica that lost the race never leads"
    );
}

#[tokio::test(start_paused = true)]
async fn a_holder_that_stops_renewing_is_replaced_after_the_lease_duration_on_this_replicas_clock()
{
    let (mut server, mut events, _stop, _task) = start();
    let first = server.expect("GET", PATH).await;
    let t0 = first.at;
    first.ok(lease("7", Some("old"), LONG_AGO, 4));
    // renewTime is years old by the holder's clock, yet only 15 s of unchanged Lease as observed
    // here frees it: the reads at 2, 4, ... 14 s leave it alone, the one at 16 s takes it.
    loop {
        let call = server.next().await;
        if call.method == "PUT" {
            assert_eq!(call.at - t0, Duration::from_secs(16));
            assert_eq!(call.body["metadata"]["resourceVersion"], "7");
            assert_eq!(spec(&call)["holderIdentity"], "me");
            assert_eq!(spec(&call)["leaseTransitions"], 5);
            call.ok(lease("8", Some("me"), LONG_AGO, 5));
            break;
        }
        assert_eq!(call.line(), format!("GET {PATH}"));
        call.ok(lease("7", Some("old"), LONG_AGO, 4));
    }
    settle().await;
    assert_eq!(events.try_recv().map(|e| e.0), Ok("started"));
}

#[tokio::test(start_paused = true)]
async fn renewals_replace_the_lease_every_retry_period_with_the_resource_version_read() {
    let (mut server, mut events, _stop, _task) = start();
    let t0 = acquire(&mut server, &mut events).await;
    for (i, rv) in ["8", "9", "10"].into_iter().enumerate() {
        let get = server.expect("GET", PATH).await;
        assert_eq!(get.at - t0, Duration::from_secs(2) * (i as u32 + 1));
        let mut held = lease(rv, Some("me"), LONG_AGO, 3);
        held["spec"]["acquireTime"] = json!("2026-11-30T09:00:00.000000Z");
        get.ok(held);
        let put = server.expect("PUT", PATH).await;
        assert_eq!(put.body["metadata"]["resourceVersion"], rv);
        assert_eq!(spec(&put)["holderIdentity"], "me");
        assert_eq!(spec(&put)["acquireTime"], "2026-11-30T09:00:00.000000Z");
        assert_eq!(
            spec(&put)["leaseTransitions"],
            3,
            "a renewal is not a transition"
        );
        assert_ne!(spec(&put)["renewTime"], LONG_AGO);
        put.ok(lease(&format!("{rv}0"), Some("me"), LONG_AGO, 3));
    }
    settle().await;
    assert!(events.try_recv().is_err(), "still leading");
}

#[tokio::test(start_paused = true)]
async fn a_conflict_on_renewal_stops_the_work_at_once_and_the_replica_follows() {
    let (mut server, mut events, _stop, _task) = start();
    acquire(&mut server, &mut events).await;
    server
        .expect("GET", PATH)
        .await
        .ok(lease("9", Some("me"), LONG_AGO, 3));
    let put = server.expect("PUT", PATH).await;
    let refused_at = put.at;
    put.respond(
        409,
        mock::status(409, "Conflict", "the object has been modified"),
    );
    settle().await;
    assert_eq!(events.try_recv(), Ok(("stopped", refused_at)));
    // Following: it reads the Lease again and leaves the new holder alone.
    let get = server.expect("GET", PATH).await;
    assert_eq!(get.at, refused_at);
    get.ok(lease("10", Some("other"), "2026-11-30T10:00:01.000000Z", 4));
    let get = server.expect("GET", PATH).await;
    assert_eq!(get.at - refused_at, Duration::from_secs(2));
    get.ok(lease("11", Some("other"), "2026-11-30T10:00:03.000000Z", 4));
    settle().await;
    assert!(events.try_recv().is_err());
}

#[tokio::test(start_paused = true)]
async fn renewals_that_fail_or_never_answer_stop_the_work_at_the_renew_deadline() {
    let (mut server, mut events, _stop, _task) = start();
    let t0 = acquire(&mut server, &mut events).await;
    // 500s are retried every retry period while the deadline allows...
    for seconds in [2, 4] {
        let get = server.expect("GET", PATH).await;
        assert_eq!(get.at - t0, Duration::from_secs(seconds));
        get.respond(
            500,
            mock::status(500, "InternalError", "etcdserver: request timed out"),
        );
    }
    // ...and a renewal that never answers is abandoned at the deadline: 10 s after the last
    // successful write began, 5 s before any follower may take the Lease (15 s).
    let get = server.expect("GET", PATH).await;
    assert_eq!(get.at - t0, Duration::from_secs(6));
    server.hold(get);
    let (what, at) = tokio::time::timeout(Duration::from_secs(60), events.recv())
        .await
        .expect("the renewal is bounded by the deadline")
        .expect("the work is dropped");
    assert_eq!((what, at - t0), ("stopped", Duration::from_secs(10)));
    // It follows from there: the next read comes at once, and a held Lease is not taken.
    let get = server.expect("GET", PATH).await;
    assert_eq!(get.at - t0, Duration::from_secs(10));
    get.ok(lease("12", Some("other"), LONG_AGO, 4));
    server
        .expect("GET", PATH)
        .await
        .ok(lease("12", Some("other"), LONG_AGO, 4));
    settle().await;
    assert!(events.try_recv().is_err());
}

#[tokio::test(start_paused = true)]
async fn shutdown_releases_the_lease_by_emptying_the_holder() {
    let (mut server, mut events, stop, task) = start();
    acquire(&mut server, &mut events).await;
    stop.send(()).unwrap();
    settle().await;
    assert_eq!(events.try_recv().map(|e| e.0), Ok("stopped"), "work first");
    server
        .expect("GET", PATH)
        .await
        .ok(lease("9", Some("me"), LONG_AGO, 3));
    let put = server.expect("PUT", PATH).await;
    assert_eq!(put.body["metadata"]["resourceVersion"], "9");
    assert_eq!(spec(&put)["holderIdentity"], Value::Null);
    assert_eq!(spec(&put)["leaseDurationSeconds"], 1);
    put.ok(lease("10", None, LONG_AGO, 3));
    task.await.expect("run_elected returns after the release");
}

#[tokio::test(start_paused = true)]
async fn a_release_the_api_never_answers_gives_up_after_two_seconds() {
    let (mut server, mut events, stop, task) = start();
    acquire(&mut server, &mut events).await;
    stop.send(()).unwrap();
    let get = server.expect("GET", PATH).await;
    let asked = get.at;
    server.hold(get);
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("the release is bounded")
        .expect("returns");
    assert_eq!(Instant::now() - asked, Duration::from_secs(2));
}

/// Trial 10, K20: `--no-leader-election` warns about an elected controller that holds the
/// Lease; only a holder renewed within its duration counts.
#[test]
fn a_holder_counts_as_live_only_within_its_lease_duration() {
    let at = |text: &str| {
        text.parse::<k8s_openapi::jiff::Timestamp>()
            .expect("a timestamp")
    };
    let renewed = "2026-12-02T01:00:00.000000Z";
    let lease = |holder: Option<&str>| -> Lease {
        serde_json::from_value(lease("1", holder, renewed, 0)).expect("a Lease")
    };
    let holder = lease(Some("vm-20894"));
    assert_eq!(
        holder_if_live(&holder, at("2026-12-02T01:00:14Z")),
        Some("vm-20894".into())
    );
    assert_eq!(holder_if_live(&holder, at("2026-12-02T01:00:15Z")), None);
    assert_eq!(
        holder_if_live(&lease(None), at("2026-12-02T01:00:01Z")),
        None
    );
    assert_eq!(
        holder_if_live(&lease(Some("")), at("2026-12-02T01:00:01Z")),
        None
    );
    let never = Lease::default();
    assert_eq!(holder_if_live(&never, at("2026-12-02T01:00:01Z")), None);
}
