//! The readiness probe: one `GET` on a fresh connection, ready iff the status is 2xx, in the
//! workload's protocol: HTTP/1.1 here, h2c (prior knowledge) by the proxy's own health probe
//! ([`crossfade_proxy::health::probe_once`]), so that both judge an h2c answer alike.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use crossfade_proxy::config::UpstreamProtocol;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

use crate::spec::ReadinessConfig;

/// Probes `endpoint` once in `protocol`: `GET path` with `Host: <endpoint>` (`:authority` over
/// h2c), the whole probe (a hint's second exchange included) bounded by `timeout`.
///
/// # Errors
/// A short lowercase description of why the endpoint is not ready (`connect: Connection refused`,
/// `status 503`, `timed out after 1s`; over h2c the proxy's health check words, `status 503 from
/// GET /healthz`). An HTTP/1.1 probe that gets no HTTP/1.1 answer from an endpoint that answers
/// h2c says so and hints at `protocol: h2c` (`h2c_hint`); an h2c probe that gets no HTTP/2
/// answer from an endpoint that answers HTTP/1.1 hints at `protocol: http1` (`http1_hint`).
pub async fn get(
    endpoint: SocketAddr,
    protocol: UpstreamProtocol,
    path: &str,
    timeout: Duration,
) -> Result<(), String> {
    // A hint's second probe gets what is left of `timeout`: the whole probe stays bounded by it.
    let start = tokio::time::Instant::now();
    let left = || timeout.saturating_sub(start.elapsed());
    if protocol == UpstreamProtocol::H2c {
        return match crossfade_proxy::health::probe_once(endpoint, protocol, path, timeout).await {
            // The proxy's words for a connection made and no HTTP/2 answer (not a refused
            // connect, a status or a timeout).
            Err(why) if why.starts_with("GET ") => {
                Err(http1_hint(endpoint, path, left(), why).await)
            }
            other => other,
        };
    }
    match tokio::time::timeout(timeout, exchange(endpoint, path)).await {
        Ok(Err(Failure::NotHttp1(why))) => Err(h2c_hint(endpoint, path, left(), why).await),
        Ok(Err(Failure::Other(why))) => Err(why),
        Ok(Ok(status)) if status.is_success() => Ok(()),
        Ok(Ok(status)) => Err(format!("status {}", status.as_u16())),
        Err(_) => Err(format!("timed out after {}", crate::spec::human(timeout))),
    }
}

/// `why` an h2c probe of `endpoint` got no HTTP/2 answer, and, when one HTTP/1.1 probe of the
/// same `path` gets an answer (any status), that the endpoint speaks HTTP/1.1, with the fix.
async fn http1_hint(endpoint: SocketAddr, path: &str, timeout: Duration, why: String) -> String {
    match tokio::time::timeout(timeout, exchange(endpoint, path)).await {
        Ok(Ok(_)) => format!(
            "{why}: the endpoint answers HTTP/1.1 and not cleartext HTTP/2 (h2c); set \
             `protocol: http1` on this workload, or serve h2c with prior knowledge"
        ),
        _ => why,
    }
}

/// Why an HTTP/1.1 probe failed.
enum Failure {
    /// The connection was made but no HTTP/1.1 answer came (it did not parse, or the connection
    /// closed or was reset without one): perhaps a server that speaks only HTTP/2, whose first
    /// bytes are a SETTINGS frame.
    NotHttp1(String),
    /// Anything else.
    Other(String),
}

/// `why` an HTTP/1.1 probe of `endpoint` got no HTTP/1.1 answer, and, when one h2c probe of the
/// same `path` gets an HTTP/2 answer (any status), that the endpoint speaks h2c, with the fix:
/// an h2c-only server (a gRPC server) declared `http1`, the default, would otherwise fail its
/// readiness deadline with a parse error alone.
async fn h2c_hint(endpoint: SocketAddr, path: &str, timeout: Duration, why: String) -> String {
    let h2c = crossfade_proxy::health::probe_once(endpoint, UpstreamProtocol::H2c, path, timeout);
    match h2c.await {
        Ok(()) => {}
        // The h2c probe got an HTTP/2 response head, only not a 2xx one.
        Err(e) if e.starts_with("status ") => {}
        Err(_) => return why,
    }
    format!(
        "{why}: the endpoint answers cleartext HTTP/2 (h2c) and not HTTP/1.1; if it speaks only \
         HTTP/2 (a gRPC server), set `protocol: h2c` on this workload"
    )
}

/// One HTTP/1.1 `GET path`: the status of the answer.
async fn exchange(endpoint: SocketAddr, path: &str) -> Result<http::StatusCode, Failure> {
    let stream = tokio::net::TcpStream::connect(endpoint)
        .await
        .map_err(|e| Failure::Other(format!("connect: {e}")))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| Failure::Other(format!("handshake: {e}")))?;
    let driver = tokio::spawn(conn);
    let request = http::Request::get(path)
        .header(http::header::HOST, endpoint.to_string())
        .header(http::header::USER_AGENT, "crossfade-probe")
        .body(Empty::<Bytes>::new())
        .map_err(|e| Failure::Other(format!("bad probe path {path:?}: {e}")))?;
    // An h2c-only server sends its SETTINGS frame, then closes with the request unread: the
    // request fails to parse an answer, or (when the close resets the connection first) on a
    // reset, so any failure of the exchange may be one.
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| Failure::NotHttp1(format!("request: {e}")))?;
    let status = response.status();
    // Read the body so the server sees a complete exchange, then let the connection close.
    let _ = response.into_body().collect().await;
    drop(sender);
    driver.abort();
    Ok(status)
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

/// Probes `endpoint` in `protocol` ([`get`]) every `readiness.interval` until it answers 2xx or
/// `readiness.deadline` has passed since the call; each probe's outcome is recorded in `log`
/// ([`ProbeLog`]).
///
/// # Errors
/// The last probe's failure when the deadline passes.
pub async fn wait_ready(
    endpoint: SocketAddr,
    protocol: UpstreamProtocol,
    readiness: &ReadinessConfig,
    log: &ProbeLog,
) -> Result<(), String> {
    let (path, timeout) = (&readiness.path, readiness.timeout);
    let (interval, deadline) = (readiness.interval, readiness.deadline);
    let give_up = crossfade_proxy::duration::later(tokio::time::Instant::now(), deadline);
    loop {
        let last = match get(endpoint, protocol, path, timeout).await {
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

#[cfg(test)]
mod tests;
