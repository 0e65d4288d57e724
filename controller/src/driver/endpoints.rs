//! Static endpoints: instances Crossfade does not start (e.g. an existing VM fleet). Provisioning waits
//! until every endpoint passes its readiness probe; retiring drains them and leaves them running.

use std::net::SocketAddr;

use futures_util::future::try_join_all;

use super::{probe, DriverError};
use crate::spec::WorkloadSpec;

/// Waits until every endpoint in `spec.endpoints` answers its readiness probe with 2xx.
///
/// # Errors
/// [`DriverError::NotReady`] naming the first endpoint still failing at `spec.readiness.deadline`.
pub async fn adopt(name: &str, spec: &WorkloadSpec) -> Result<Vec<SocketAddr>, DriverError> {
    let r = &spec.readiness;
    let probes = spec.endpoints.iter().map(|&endpoint| async move {
        probe::wait_ready(endpoint, &r.path, r.timeout, r.interval, r.deadline)
            .await
            .map_err(|last| DriverError::NotReady {
                workload: name.to_owned(),
                endpoint,
                waited: r.deadline,
                last,
            })
    });
    try_join_all(probes).await?;
    Ok(spec.endpoints.clone())
}
