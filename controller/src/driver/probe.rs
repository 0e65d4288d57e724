//! The readiness probe: one HTTP/1.1 `GET` on a fresh connection, ready iff the status is 2xx.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

/// Probes `endpoint` once: `GET path` with `Host: <endpoint>`, the whole exchange bounded by `timeout`.
///
/// # Errors
/// A short lowercase description of why the endpoint is not ready (`connect: Connection refused`,
/// `status 503`, `timed out after 1s`).
pub async fn http_get(endpoint: SocketAddr, path: &str, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, exchange(endpoint, path)).await {
        Ok(result) => result,
        Err(_) => Err(format!("timed out after {}", crate::spec::human(timeout))),
    }
}

async fn exchange(endpoint: SocketAddr, path: &str) -> Result<(), String> {
    let stream = tokio::net::TcpStream::connect(endpoint)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let driver = tokio::spawn(conn);
    let request = http::Request::get(path)
        .header(http::header::HOST, endpoint.to_string())
        .header(http::header::USER_AGENT, "crossfade-probe")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("bad probe path {path:?}: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = response.status();
    // Read the body so the server sees a complete exchange, then let the connection close.
    let _ = response.into_body().collect().await;
    drop(sender);
    driver.abort();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("status {}", status.as_u16()))
    }
}

/// The last failed readiness probe of each endpoint of a workload being provisioned, written by
/// the driver's [`wait_ready`] and read by the runtime, which quotes it when `progress_deadline`
/// ends the wait before the readiness deadline does (trial 12 M4). Cheap to clone (shared).
#[derive(Clone, Debug, Default)]
pub struct ProbeLog(Arc<Mutex<BTreeMap<SocketAddr, String>>>);

impl ProbeLog {
    fn record(&self, endpoint: SocketAddr, last: Option<&str>) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match last {
            Some(why) => map.insert(endpoint, why.to_owned()),
            None => map.remove(&endpoint),
        };
    }

    /// Why the workload is not ready yet, by its last probe: `127.0.0.1:8081: last probe: status
    /// 503` for the first endpoint (in address order) whose last probe failed, with `; 1 more
    /// endpoint not ready` when others failed too; `None` when no probe has failed since the
    /// endpoint's last pass (or none ran yet).
    pub fn summary(&self) -> Option<String> {
        let map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let (endpoint, why) = map.iter().next()?;
        let more = match map.len() - 1 {
            0 => String::new(),
            1 => "; 1 more endpoint not ready".to_owned(),
            n => format!("; {n} more endpoints not ready"),
        };
        Some(format!("{endpoint}: last probe: {why}{more}"))
    }
}

/// Probes `endpoint` every `interval` until it answers 2xx or `deadline` has passed since the call;
/// each probe's outcome is recorded in `log` ([`ProbeLog`]).
///
/// # Errors
/// The last probe's failure when the deadline passes.
pub async fn wait_ready(
    endpoint: SocketAddr,
    path: &str,
    timeout: Duration,
    interval: Duration,
    deadline: Duration,
    log: &ProbeLog,
) -> Result<(), String> {
    let give_up = crossfade_proxy::duration::later(tokio::time::Instant::now(), deadline);
    loop {
        let last = match http_get(endpoint, path, timeout).await {
            Ok(()) => {
                log.record(endpoint, None);
                return Ok(());
            }
            Err(e) => e,
        };
        log.record(endpoint, Some(&last));
        if crossfade_proxy::duration::later(tokio::time::Instant::now(), interval) > give_up {
            return Err(last);
        }
        tokio::time::sleep(interval).await;
    }
}
