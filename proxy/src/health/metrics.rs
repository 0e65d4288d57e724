//! The health series of `/metrics`:
//! - `crossfade_ejections_total{route,backend,reason}`: endpoints taken out, by
//!   [`super::EjectReason`] (`upstream_failure`, `http_5xx`, `health_check`);
//! - `crossfade_breaker_trips_total{route,backend}`: times the breaker tripped;
//! - `crossfade_breaker_tripped{route,backend}`: 1 while the breaker holds the backend at 0;
//! - `crossfade_fail_open_requests_total{route,backend}`: requests sent to the backend while its
//!   route failed open (`routes[].fail_open`, see [`super::fail_open`]);
//! - `crossfade_endpoint_rtt_estimate_seconds{route,backend,endpoint}`: the balancer's peak-EWMA
//!   RTT estimate of each endpoint of the table in force (see [`crate::balance`]); one series per
//!   configured endpoint, so the label set is bounded by the config.

use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

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
        "Endpoints taken out of the endpoint pick, by reason",
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
    let mut fail_open = encoder.encode_descriptor(
        "fail_open_requests",
        "Requests sent to the backend while no backend of its route had an endpoint that health admits (fail_open)",
        None,
        MetricType::Counter,
    )?;
    for (route, slot, state) in &slots {
        let labels: Labels<2> = [("route", route), ("backend", slot.as_str())];
        fail_open
            .encode_family(&labels)?
            .encode_counter::<NoLabelSet, _, u64>(&state.fail_open_requests(), None)?;
    }
    encode_rtt_estimates(shared, encoder)
}

/// The RTT estimate of every endpoint of the table in force, in seconds.
fn encode_rtt_estimates(
    shared: &Shared,
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    let table = shared.table.load();
    let mut rtt = encoder.encode_descriptor(
        "endpoint_rtt_estimate",
        "The balancer's peak-EWMA estimate of the endpoint's time to the response head (the default RTT before its first response)",
        Some(&Unit::Seconds),
        MetricType::Gauge,
    )?;
    for route in table.routes() {
        for backend in route.backends() {
            let health = backend.upstream().health();
            for (endpoint, seconds) in health.rtt_estimates() {
                let endpoint = endpoint.to_string();
                let labels: Labels<3> = [
                    ("route", route.name()),
                    ("backend", backend.slot().as_str()),
                    ("endpoint", &endpoint),
                ];
                rtt.encode_family(&labels)?.encode_gauge(&seconds)?;
            }
        }
    }
    Ok(())
}
