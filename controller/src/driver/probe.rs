//! The readiness probe: one `GET` on a fresh connection, ready iff the status is 2xx, in the
//! workload's protocol (HTTP/1.1 or h2c with prior knowledge), by the proxy's own health probe
//! ([`crossfade_proxy::health::probe_once`]), so that both judge an answer alike.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crossfade_proxy::config::UpstreamProtocol;
use crossfade_proxy::health::{probe_once, ProbeFailure};

use crate::spec::ReadinessConfig;

/// Probes `endpoint` once in `protocol` with the proxy's own health probe
/// ([`crossfade_proxy::health::probe_once`]: `GET path` on a fresh connection, `Host:
/// <endpoint>` or `:authority` over h2c, ready iff the response head is 2xx), so that readiness
/// and the proxy's health checks judge an endpoint alike; the whole probe (a hint's second
/// exchange included) is bounded by `timeout`.
///
/// # Errors
/// Why the endpoint is not ready, in the health checks' words ([`ProbeFailure`]: `connect
/// failed: Connection refused (os error 111)`, `status 503 from GET /healthz`, `timeout after
/// 1000 ms waiting for GET /healthz`). A probe that gets no answer in `protocol` from an endpoint
/// that answers the other one says so and hints at the workload's `protocol:` ([`hint`]): an
/// h2c-only server (a gRPC server) left at `http1`, the default, would otherwise fail its
/// readiness deadline with a parse error alone.
pub async fn get(
    endpoint: SocketAddr,
    protocol: UpstreamProtocol,
    path: &str,
    timeout: Duration,
) -> Result<(), String> {
    // A hint's second probe gets what is left of `timeout`: the whole probe stays bounded by it.
    let start = tokio::time::Instant::now();
    match probe_once(endpoint, protocol, path, timeout).await {
        Ok(()) => Ok(()),
        // A connection made and no answer in `protocol`: perhaps one in the other.
        Err(why @ ProbeFailure::NoAnswer { .. }) => {
            let left = timeout.saturating_sub(start.elapsed());
            Err(hint(endpoint, protocol, path, left, why).await)
        }
        Err(why) => Err(why.to_string()),
    }
}

/// `why` a probe of `endpoint` in `protocol` got no answer, and, when one probe of the same
/// `path` in the other protocol gets a response head (any status) within `timeout`, that the
/// endpoint speaks that one, with the fix.
async fn hint(
    endpoint: SocketAddr,
    protocol: UpstreamProtocol,
    path: &str,
    timeout: Duration,
    why: ProbeFailure,
) -> String {
    let other = match protocol {
        UpstreamProtocol::Http1 => UpstreamProtocol::H2c,
        UpstreamProtocol::H2c => UpstreamProtocol::Http1,
    };
    match probe_once(endpoint, other, path, timeout).await {
        // A response head in the other protocol, 2xx or not.
        Ok(()) | Err(ProbeFailure::Status { .. }) => {}
        Err(_) => return why.to_string(),
    }
    match other {
        UpstreamProtocol::H2c => format!(
            "{why}: the endpoint answers cleartext HTTP/2 (h2c) and not HTTP/1.1; if it speaks \
             only HTTP/2 (a gRPC server), set `protocol: h2c` on this workload"
        ),
        UpstreamProtocol::Http1 => format!(
            "{why}: the endpoint answers HTTP/1.1 and not cleartext HTTP/2 (h2c); set \
             `protocol: http1` on this workload, or serve h2c with prior knowledge"
        ),
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
