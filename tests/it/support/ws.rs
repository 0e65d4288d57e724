//! WebSocket sessions against the sample app's `/ws` echo through the proxy (tokio-tungstenite):
//! each sends one numbered message per second and records every reply, the backend that holds it,
//! and how the session ended (close code, clean end or error).

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

/// A running session; [`Session::close`] or [`Session::finish`] ends it.
pub struct Session {
    stop: watch::Sender<bool>,
    task: JoinHandle<SessionLog>,
    /// When the upgrade request was sent.
    pub requested: Instant,
    /// When the upgrade was answered.
    pub opened: Instant,
    /// The backend's pool (`X-Pool` of the 101).
    pub pool: String,
}

/// What one session saw.
#[derive(Clone, Debug)]
pub struct SessionLog {
    /// The pool that answered the upgrade.
    pub pool: String,
    /// When the upgrade request was sent.
    pub requested: Instant,
    /// When the upgrade was answered.
    pub opened: Instant,
    /// Messages sent (numbered from 0).
    pub sent: u64,
    /// The sequence numbers echoed back, in arrival order.
    pub replies: Vec<u64>,
    /// Pools named in the replies that differ from `pool` (must stay empty).
    pub foreign_replies: Vec<String>,
    /// The close frame the server sent, if any: code and reason.
    pub server_close: Option<(CloseCode, String)>,
    /// When it arrived.
    pub server_close_at: Option<Instant>,
    /// True when the client asked to close (before any server close).
    pub client_closed: bool,
    /// True when the stream ended cleanly (EOF after the close handshake); false on an error.
    pub clean_end: bool,
    /// The error that ended it, if one did (a reset shows here).
    pub error: Option<String>,
}

impl Session {
    /// Opens `ws://proxy/ws` and starts sending one message every `every`.
    ///
    /// # Panics
    /// When the handshake fails.
    pub async fn open(proxy: SocketAddr, every: Duration) -> Session {
        let url = format!("ws://{proxy}/ws");
        let requested = Instant::now();
        let (ws, response) = tokio_tungstenite::connect_async(url)
            .await
            .unwrap_or_else(|e| panic!("websocket handshake through {proxy}: {e}"));
        let opened = Instant::now();
        let pool = response
            .headers()
            .get("x-pool")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("<none>")
            .to_owned();
        let (stop, stopped) = watch::channel(false);
        let log = SessionLog::new(&pool, requested, opened);
        let task = tokio::spawn(run(ws, every, stopped, log));
        Session {
            stop,
            task,
            requested,
            opened,
            pool,
        }
    }

    /// Asks the session to close (a normal close from the client) without waiting.
    pub fn close(&self) {
        let _ = self.stop.send(true);
    }

    /// Waits for the session to end by itself (the server closed it), at most `timeout`.
    ///
    /// # Panics
    /// When it is still running after `timeout`.
    pub async fn finish(self, timeout: Duration) -> SessionLog {
        let pool = self.pool.clone();
        match tokio::time::timeout(timeout, self.task).await {
            Ok(log) => log.expect("session task panicked"),
            Err(_) => panic!("a {pool} session did not end within {timeout:?}"),
        }
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn run(
    mut ws: Ws,
    every: Duration,
    mut stop: watch::Receiver<bool>,
    mut log: SessionLog,
) -> SessionLog {
    let mut tick = tokio::time::interval(every);
    let mut closing = false;
    loop {
        tokio::select! {
            _ = tick.tick(), if !closing => {
                if let Err(e) = ws.send(Message::text(format!("seq {}", log.sent))).await {
                    log.error = Some(format!("send: {e}"));
                    return log;
                }
                log.sent += 1;
            }
            changed = stop.changed(), if !closing => {
                closing = true;
                if changed.is_ok() && log.server_close.is_none() {
                    log.client_closed = true;
                    let _ = ws.close(None).await;
                }
            }
            message = ws.next() => match message {
                Some(Ok(Message::Text(text))) => log.reply(text.as_str()),
                Some(Ok(Message::Close(frame))) => {
                    closing = true;
                    if !log.client_closed {
                        log.server_close = Some(frame.map_or((CloseCode::Status, String::new()), |f| {
                            (f.code, f.reason.to_string())
                        }));
                        log.server_close_at = Some(Instant::now());
                    }
                }
                Some(Ok(_)) => {}
                None => {
                    log.clean_end = true;
                    return log;
                }
                Some(Err(e)) => {
                    log.error = Some(e.to_string());
                    return log;
                }
            },
        }
    }
}

impl SessionLog {
    fn new(pool: &str, requested: Instant, opened: Instant) -> SessionLog {
        SessionLog {
            pool: pool.to_owned(),
            requested,
            opened,
            sent: 0,
            replies: Vec::new(),
            foreign_replies: Vec::new(),
            server_close: None,
            server_close_at: None,
            client_closed: false,
            clean_end: false,
            error: None,
        }
    }

    fn reply(&mut self, text: &str) {
        let reply: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
        let seq = reply["echo"]
            .as_str()
            .and_then(|e| e.strip_prefix("seq "))
            .and_then(|n| n.parse().ok());
        match seq {
            Some(seq) => self.replies.push(seq),
            None => self
                .foreign_replies
                .push(format!("unparseable reply {text}")),
        }
        if reply["pool"] != self.pool.as_str() {
            self.foreign_replies.push(text.to_owned());
        }
    }

    /// No message lost or duplicated: replies are exactly `0, 1, 2, ...` in order, and every message
    /// sent has its reply except at most the last (in flight when the session was closed).
    pub fn check_echoes(&self) -> Result<(), String> {
        let expected: Vec<u64> = (0..self.replies.len() as u64).collect();
        if self.replies != expected {
            return Err(format!(
                "replies out of order, lost or duplicated: {:?}",
                self.replies
            ));
        }
        let unanswered = self.sent - self.replies.len() as u64;
        if unanswered > 1 {
            return Err(format!("{unanswered} of {} messages unanswered", self.sent));
        }
        if !self.foreign_replies.is_empty() {
            return Err(format!(
                "replies from elsewhere: {:?}",
                self.foreign_replies
            ));
        }
        Ok(())
    }
}
