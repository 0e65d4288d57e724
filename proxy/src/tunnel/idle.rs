//! The tunnel's idle timeout (`limits.tunnel_idle_timeout`): a tunnel that passes no byte in
//! either direction for that long is closed the way a drain deadline closes it (a WebSocket gets
//! a close frame 1001 "going away", RFC 6455 §7.4.1; every tunnel a TCP FIN), so a peer that
//! vanished without a FIN or RST does not hold a tunnel, its two sockets and its backend's drain
//! forever.
//!
//! Each pump [`Activity::touch`]es the tunnel's clock when it reads bytes or finishes writing
//! them; [`close_signal`] turns the backend's close signal, or the idle deadline, into the one
//! signal the tunnel's pumps follow.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::Tunnels;

/// When a tunnel last moved a byte, in milliseconds since it opened (shared by its two pumps).
#[derive(Debug)]
pub(crate) struct Activity {
    opened: Instant,
    last_ms: AtomicU64,
}

// === impl Activity ===

impl Activity {
    /// A tunnel opening now.
    pub(crate) fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    /// Records that bytes moved now.
    #[inline]
    pub(crate) fn touch(&self) {
        self.last_ms.store(self.elapsed_ms(), Relaxed);
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Resolves once no byte moved for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        loop {
            let last = self.last_ms.load(Relaxed);
            let idle = self.elapsed_ms().saturating_sub(last);
            if idle >= timeout_ms {
                return;
            }
            let left = Duration::from_millis(timeout_ms - idle);
            tokio::time::sleep_until(crate::duration::later(Instant::now(), left)).await;
        }
    }
}

/// Forwards `backend`'s close signal (the drain deadline, [`Tunnels::close_all`]) to `tunnel`, or
/// signals `tunnel` itself when `activity` shows no byte for `timeout` (`None`: no idle timeout),
/// counting that in `tunnels`. Runs until the tunnel ends (it is dropped then); never resolves.
pub(crate) async fn close_signal(
    mut backend: watch::Receiver<u64>,
    tunnel: &watch::Sender<u64>,
    (activity, timeout): (&Activity, Option<Duration>),
    tunnels: &Tunnels,
) -> Infallible {
    let idle = async {
        match timeout {
            Some(timeout) => activity.idle_for(timeout).await,
            None => std::future::pending().await,
        }
    };
    let drained = async {
        if backend.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = drained => tunnel.send_modify(|n| *n = n.wrapping_add(1)),
        () = idle => {
            tunnels.count_idle_close();
            tracing::debug!(?timeout, "tunnel idle: closing it");
            tunnel.send_modify(|n| *n = n.wrapping_add(1));
        }
    }
    std::future::pending().await
}
