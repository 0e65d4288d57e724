//! `crossfade_backend_info`: which workload each backend slot runs, as an OpenMetrics info metric
//! (a collector over a small map, since the set of series changes with every rollout).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use crossfade_proxy::weight::Slot;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use super::MAX_WORKLOAD_LABEL;
use crate::spec::WorkloadSpec;

/// `(workload, version)` per `(route, backend)`.
pub(super) type InfoMap = Arc<Mutex<BTreeMap<(String, Slot), (String, String)>>>;

/// Encodes the map at scrape time.
#[derive(Debug)]
pub(super) struct InfoCollector {
    pub(super) info: InfoMap,
}

/// `(workload, version)` label values: the workload's description cut to
/// [`MAX_WORKLOAD_LABEL`] characters, and its `name:` (empty when unset).
pub(super) fn workload_labels(spec: &WorkloadSpec) -> (String, String) {
    let workload: String = spec
        .describe()
        .replace('`', "")
        .chars()
        .take(MAX_WORKLOAD_LABEL)
        .collect();
    (workload, spec.name.clone().unwrap_or_default())
}

// === impl InfoCollector ===

impl Collector for InfoCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let rows: Vec<_> = {
            let info = self.info.lock().unwrap_or_else(PoisonError::into_inner);
            info.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        let mut metric = encoder.encode_descriptor(
            "backend",
            "The workload a backend slot runs (command and arguments, or endpoints) and its version",
            None,
            MetricType::Info,
        )?;
        for ((route, slot), (workload, version)) in &rows {
            let labels: [(&str, &str); 4] = [
                ("route", route),
                ("backend", slot.as_str()),
                ("workload", workload),
                ("version", version),
            ];
            metric.encode_info(&labels)?;
        }
        Ok(())
    }
}
