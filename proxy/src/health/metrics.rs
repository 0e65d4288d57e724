//! The health series of `/metrics`:
//! - `crossfade_ejections_total{route,backend,reason}`: endpoints taken out, by
//!   [`EjectReason`](super::EjectReason) (`upstream_failure`, `http_5xx`, `health_check`);
//! - `crossfade_breaker_trips_total{route,backend}`: times the breaker tripped;
//! - `crossfade_breaker_tripped{route,backend}`: 1 while the breaker holds the backend at 0.

use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use super::EjectReason;
use crate::handle::Shared;

type Labels<'a, const N: usize> = [(&'static str, &'a str); N];

/// Encodes the health families of `shared`.
pub(crate) fn encode(
    shared: &Shared,
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    let slots = shared.health.slots();
    let mut ejections = encoder.encode_descriptor(
        "ejections",
        "Endpoints taken out of the round-robin, by reason",
        None,
        MetricType::Counter,
    )?;
    for (route, slot, state) in &slots {
        for (reason, value) in EjectReason::ALL.iter().zip(state.ejections()) {
            let labels: Labels<3> = [
                ("route", route),
                ("backend", slot.as_str()),
                ("reason", reason.as_str()),
            ];
            ejections
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
        }
    }
    let mut trips = encoder.encode_descriptor(
        "breaker_trips",
        "Times the preview's circuit breaker tripped",
        None,
        MetricType::Counter,
    )?;
    for (route, slot, state) in &slots {
        let labels: Labels<2> = [("route", route), ("backend", slot.as_str())];
        trips
            .encode_family(&labels)?
            .encode_counter::<NoLabelSet, _, u64>(&state.trips(), None)?;
    }
    let mut tripped = encoder.encode_descriptor(
        "breaker_tripped",
        "1 while the circuit breaker holds the backend at an effective weight of 0",
        None,
        MetricType::Gauge,
    )?;
    for (route, slot, state) in &slots {
        let labels: Labels<2> = [("route", route), ("backend", slot.as_str())];
        tripped
            .encode_family(&labels)?
            .encode_gauge(&i64::from(state.tripped()))?;
    }
    Ok(())
}
