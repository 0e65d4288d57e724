//! A rollback's or abort's stop of the preview, run through the runtime with a data plane whose
//! capacity readings the test sets, and the preview a real HTTP server on 127.0.0.1 (static
//! endpoints: the local driver probes its readiness, nothing is started or stopped).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use crossfade_proxy::weight::{Slot, Weights};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::analysis::ThresholdJudge;
use crate::driver::LocalDriver;
use crate::rollout::Capacity;
use crate::spec::RolloutConfig;
use crate::traffic::Held;

/// A data plane of one route whose blue backend has one endpoint, healthy while `blue_up` says
/// so, and whose green backend is healthy. It logs what the run publishes (`green 5000` for the
/// weights, `green endpoints 1` for green's endpoints), and when `crash_at_zero` is set, the next
/// publication of green at 0% takes blue down: blue's only instance crashing just after the
/// abort was decided, before green is stopped.
#[derive(Default)]
struct Plane {
    blue_up: AtomicBool,
    crash_at_zero: AtomicBool,
    /// Green holds an upgraded connection that never closes.
    green_held: AtomicBool,
    log: Mutex<Vec<String>>,
    generation: AtomicU32,
}

impl Plane {
    fn log(&self) -> Vec<String> {
        self.log.lock().expect("log").clone()
    }

    fn note(&self, line: String) -> crate::error::Result<u64> {
        self.log.lock().expect("log").push(line);
        Ok(u64::from(self.generation.fetch_add(1, SeqCst)) + 1)
    }
}

impl TrafficSetter for Plane {
    fn set_weights(&self, _: &str, weights: Weights) -> crate::error::Result<u64> {
        let green = weights.of(Slot::Green);
        if green == 0 && self.crash_at_zero.swap(false, SeqCst) {
            self.blue_up.store(false, SeqCst);
        }
        self.note(format!("green {green}"))
    }
    fn set_endpoints(
        &self,
        _: &str,
        slot: Slot,
        endpoints: Vec<SocketAddr>,
        _: crossfade_proxy::config::UpstreamProtocol,
    ) -> crate::error::Result<u64> {
        self.note(format!("{slot} endpoints {}", endpoints.len()))
    }
    fn promote_slot(&self, _: &str, slot: Slot) -> crate::error::Result<u64> {
        self.note(format!("promote {slot}"))
    }
    fn held(&self, _: &str, slot: Slot) -> Held {
        let upgraded = u64::from(slot == Slot::Green && self.green_held.load(SeqCst));
        Held {
            in_flight: 0,
            upgraded,
        }
    }
    fn close_upgraded(&self, _: &str, _: Slot) -> u64 {
        0
    }
    fn capacity(&self, _: &str, slot: Slot, _: &[SocketAddr]) -> Option<Capacity> {
        let healthy = match slot {
            Slot::Blue => u32::from(self.blue_up.load(SeqCst)),
            Slot::Green => 1,
        };
        Some(Capacity { healthy, total: 1 })
    }
}

impl MetricsSource for Plane {
    fn snapshot(&self, _: &str, _: Slot) -> crate::error::Result<BackendSnapshot> {
        Ok(BackendSnapshot::default())
    }
}

/// Keeps the rollout's last phase and message.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Option<(Phase, String)>>>);

impl Observer for Seen {
    fn transition(&mut self, rollout: &Rollout, _: Option<&Workload>) {
        *self.0.lock().expect("seen") = Some((rollout.phase, rollout.message.clone()));
    }
    fn event(&mut self, _: &Rollout, _: &'static str, _: &str) {}
}

impl Seen {
    /// Polls every 10 ms, for up to 30 s, until the rollout's message satisfies `done`; its
    /// phase and message then.
    ///
    /// # Panics
    /// When it does not, naming `what` and the last message.
    async fn until(&self, what: &str, done: impl Fn(&str) -> bool) -> (Phase, String) {
        let last = || self.0.lock().expect("seen").clone();
        for _ in 0..3_000 {
            if let Some((phase, message)) = last().filter(|(_, m)| done(m)) {
                return (phase, message);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{what}: not within 30 s; the rollout: {:?}", last());
    }
}

/// An HTTP/1.1 server on 127.0.0.1 that answers every request 200 (green's readiness probe).
async fn ready_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
                let _ = conn.write_all(answer.as_bytes()).await;
            });
        }
    });
    addr
}

/// Polls `plane`'s log every 10 ms, for up to 30 s, until `done` holds for it.
///
/// # Panics
/// When it does not, naming `what` and the log.
async fn log_until(plane: &Plane, what: &str, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    for _ in 0..3_000 {
        let log = plane.log();
        if done(&log) {
            return log;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}: not within 30 s; published: {:?}", plane.log());
}

/// Starts a run of rollout `steps: [50, 100]` with `timing` (its `hold` and `progress_deadline`,
/// YAML lines) over `plane`, green a [`ready_server`] with `stop_grace` (a duration), and waits
/// until green is published at 50%; the run's interrupt sender, its task and what it showed.
async fn run_to_half(
    plane: &Arc<Plane>,
    timing: &str,
    stop_grace: &str,
) -> (
    mpsc::UnboundedSender<Interrupt>,
    tokio::task::JoinHandle<RunResult>,
    Seen,
) {
    let green = ready_server().await;
    let config: RolloutConfig =
        serde_yaml_ng::from_str(&format!("steps: [50, 100]\n{timing}\n")).expect("rollout config");
    let judge = ThresholdJudge::new(config.analysis.clone());
    let seams = Seams {
        traffic: Arc::clone(plane),
        metrics: Arc::clone(plane),
        driver: Arc::new(LocalDriver::default()) as Arc<dyn WorkloadDriver>,
        judge: Arc::new(judge),
        supervisor: None,
    };
    let spec: WorkloadSpec = serde_yaml_ng::from_str(&format!(
        "endpoints: [\"{green}\"]\nreadiness: {{ interval: 20ms }}\nstop_grace: {stop_grace}\n"
    ))
    .expect("green spec");
    let rollout = Rollout::new(1, config, Slot::Blue);
    let run = Run::new(seams, "web".into(), rollout, Workload::detached(), spec);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let seen = Seen::default();
    let mut observer = seen.clone();
    let task = tokio::spawn(async move { run.run(&mut rx, &mut observer).await });
    log_until(plane, "green at 50%", |log| {
        log.iter().any(|l| l == "green 5000")
    })
    .await;
    (tx, task, seen)
}

/// Session 44 (user44b, finding 2): an abort decided while blue had 1 of 1 endpoints healthy,
/// whose only instance crashed right after, before green was stopped. Green is not stopped while
/// blue has no healthy endpoint: it gets its 50% back, and the abort waits for blue; once blue is
/// healthy again, the abort ends and green is stopped. Before, the capacity was read only when
/// the abort was decided: green, the only backend that could serve, was stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_backend_down_before_the_preview_stops_keeps_the_preview_serving() {
    let plane = Arc::new(Plane::default());
    plane.blue_up.store(true, SeqCst);
    let (tx, task, seen) = run_to_half(&plane, "hold: 10m\nprogress_deadline: 20m", "2s").await;
    plane.crash_at_zero.store(true, SeqCst);
    let (reply, decision) = tokio::sync::oneshot::channel();
    tx.send(Interrupt::Operator(OperatorCommand::Abort, reply))
        .expect("abort sent");
    let decision = decision.await.expect("decision");
    assert!(decision.accepted, "{decision:?}");
    assert!(
        decision
            .message
            .contains("waiting for green's weight 0% to be applied"),
        "the abort was decided with blue healthy (all traffic back at once): {decision:?}"
    );
    // Green at 0%, then either 50% again or its stop, whichever the run publishes first.
    let log = log_until(&plane, "green's 50% back, or its stop", |log| {
        let after = log.iter().skip_while(|l| *l != "green 0").skip(1);
        after
            .clone()
            .any(|l| l == "green 5000" || l == "green endpoints 0")
    })
    .await;
    assert!(
        !log.iter().any(|l| l == "green endpoints 0"),
        "green was stopped while blue had no healthy endpoint: {log:?}"
    );
    // The run steps the 50% applied after publishing it: the wait shows once it has.
    let (phase, message) = seen
        .until("the abort waiting for blue", |message| {
            message.contains("until blue can carry more")
        })
        .await;
    assert_eq!(phase, Phase::Aborting, "{message}");
    assert!(message.contains("0 of 1 endpoints healthy"), "{message}");
    assert!(
        !plane.log().iter().any(|l| l == "green endpoints 0"),
        "green was stopped while blue had no healthy endpoint: {:?}",
        plane.log()
    );
    // Blue is back: the abort ends, green at 0% and stopped.
    plane.blue_up.store(true, SeqCst);
    let result = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the abort ends once blue is healthy")
        .expect("run task");
    assert_eq!(
        result.rollout.phase,
        Phase::Aborted,
        "{}",
        result.rollout.message
    );
    let log = plane.log();
    let green: Vec<&str> = log
        .iter()
        .filter(|l| l.starts_with("green"))
        .map(String::as_str)
        .collect();
    assert_eq!(
        green,
        [
            "green endpoints 1",
            "green 5000",
            "green 0",
            "green 5000",
            "green 0",
            "green endpoints 0"
        ],
        "{log:?}"
    );
}

/// Review of session 44: an abort whose preview holds a connection for longer than the progress
/// deadline (a WebSocket, under a `stop_grace` past the deadline). The run waits for the preview
/// to drain before it tells the machine 0% is applied; the machine asks for 0 again at each
/// progress deadline, which superseded that wait, so with a wait as long as `stop_grace` the
/// abort never ended. A request for 0 while that wait runs now joins it: the abort ends, green
/// stopped after its `stop_grace`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_whose_preview_holds_a_connection_past_the_progress_deadline_ends() {
    let plane = Arc::new(Plane::default());
    plane.blue_up.store(true, SeqCst);
    plane.green_held.store(true, SeqCst);
    let (tx, task, _) = run_to_half(&plane, "hold: 1500ms\nprogress_deadline: 2s", "5s").await;
    let (reply, decision) = tokio::sync::oneshot::channel();
    tx.send(Interrupt::Operator(OperatorCommand::Abort, reply))
        .expect("abort sent");
    let decision = decision.await.expect("decision");
    assert!(decision.accepted, "{decision:?}");
    // Two drains of 5 s and their 2.5 s close graces: about 15 s; before, no end at all.
    let result = tokio::time::timeout(Duration::from_secs(45), task)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the abort never ended: green held past the progress deadline; published: {:?}",
                plane.log()
            )
        })
        .expect("run task");
    assert_eq!(
        result.rollout.phase,
        Phase::Aborted,
        "{}",
        result.rollout.message
    );
    assert!(
        plane.log().iter().any(|l| l == "green endpoints 0"),
        "green stopped: {:?}",
        plane.log()
    );
}
