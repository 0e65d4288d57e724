//! Static endpoints: instances Crossfade does not start (e.g. an existing VM fleet). Provisioning waits
//! until every endpoint passes its readiness probe; retiring drains them and leaves them running.

use std::net::SocketAddr;

use futures_util::future::try_join_all;
use tokio_util::sync::CancellationToken;

use super::{probe, DriverError};
use crate::spec::WorkloadSpec;

/// Waits until every endpoint in `spec.endpoints` answers its readiness probe with 2xx, or until
/// `cancel` is cancelled; each probe's outcome is recorded in `log`.
///
/// # Errors
/// [`DriverError::NotReady`] naming the first endpoint still failing at `spec.readiness.deadline`;
/// [`DriverError::Cancelled`] when `cancel` was cancelled first (nothing to stop: Crossfade did not
/// start these endpoints).
pub async fn adopt(
    name: &str,
    spec: &WorkloadSpec,
    cancel: &CancellationToken,
    log: &probe::ProbeLog,
) -> Result<Vec<SocketAddr>, DriverError> {
    let r = &spec.readiness;
    let probes = spec.endpoints.iter().map(|&endpoint| async move {
        probe::wait_ready(endpoint, spec.protocol, r, log)
            .await
            .map_err(|last| DriverError::NotReady {
                workload: name.to_owned(),
                endpoint,
                waited: r.deadline,
                last,
            })
    });
    tokio::select! {
        ready = try_join_all(probes) => ready?,
        () = cancel.cancelled() => {
            return Err(DriverError::Cancelled { workload: name.to_owned() });
        }
    };
    Ok(spec.endpoints.clone())
}
