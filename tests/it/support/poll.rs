//! A background poller of an admin endpoint (`/status`, `/rollout`) that keeps every answer with the
//! time it arrived, so a test can ask afterwards what the proxy or the rollout showed, and when.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use serde_json::Value;
use tokio::sync::watch;
use tokio::time::Instant;

use super::Admin;

/// One answer of the polled endpoint.
#[derive(Clone, Debug)]
pub struct Observation {
    /// When the request was sent: the state shown was in force at some point after this.
    pub sent: Instant,
    /// When the answer arrived: the state shown was in force at some point before this.
    pub received: Instant,
    /// [`Observation::received`] on the wall clock.
    pub received_wall: SystemTime,
    /// The answer.
    pub value: Value,
}

/// Polls `GET path` every `every` until stopped; failed requests (the process is gone) are skipped.
pub struct Poller {
    seen: Arc<Mutex<Vec<Observation>>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Poller {
    /// Starts polling `admin`'s `path`.
    pub fn start(admin: Admin, path: &str, every: Duration) -> Poller {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (stop, mut rx) = watch::channel(false);
        let (into, path) = (seen.clone(), path.to_owned());
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = rx.changed() => return,
                }
                let sent = Instant::now();
                let Ok((200, text)) = admin.get_text(&path).await else {
                    continue;
                };
                let Ok(value) = serde_json::from_str(&text) else {
                    continue;
                };
                let observation = Observation {
                    sent,
                    received: Instant::now(),
                    received_wall: SystemTime::now(),
                    value,
                };
                into.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(observation);
            }
        });
        Poller { seen, stop, task }
    }

    /// The answers so far, oldest first.
    pub fn seen(&self) -> Vec<Observation> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stops polling and returns every answer, oldest first.
    pub async fn stop(self) -> Vec<Observation> {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        let seen = self
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        seen
    }
}
