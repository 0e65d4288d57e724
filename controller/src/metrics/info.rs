//! `crossfade_backend_info`: which workload each backend slot runs, as an OpenMetrics info metric
//! (a collector over a small map, since the set of series changes with every rollout). The image
//! digest is read at scrape time, since it is computed in the background ([`crate::image`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use crossfade_proxy::weight::Slot;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use super::MAX_WORKLOAD_LABEL;
use crate::spec::WorkloadSpec;

/// The `workload` label of a Kubernetes backend: `deployment/<name>`, cut to
/// [`MAX_WORKLOAD_LABEL`] characters.
pub(crate) fn deployment_workload(deployment: &str) -> String {
    format!("deployment/{deployment}")
        .chars()
        .take(MAX_WORKLOAD_LABEL)
        .collect()
}

/// The label values of one `crossfade_backend_info` series after `route` and `backend`, in label
/// order: `workload`, `image`, `image_digest`, `version`.
pub(crate) type InfoLabels<'a> = [&'a str; 4];

/// Encodes `crossfade_backend_info` (an OpenMetrics info metric, help text `help`) with one series
/// per `(route, backend, labels)` row. Shared by the controller's collector and the one of
/// `crossfade proxy --kube`, so both export the same label set.
///
/// # Errors
/// The encoder's formatting error.
pub(crate) fn encode_backend_info<'a>(
    encoder: &mut DescriptorEncoder,
    help: &str,
    rows: impl IntoIterator<Item = (&'a str, Slot, InfoLabels<'a>)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor("backend", help, None, MetricType::Info)?;
    for (route, slot, [workload, image, image_digest, version]) in rows {
        let labels: [(&str, &str); 6] = [
            ("route", route),
            ("backend", slot.as_str()),
            ("workload", workload),
            ("image", image),
            ("image_digest", image_digest),
            ("version", version),
        ];
        metric.encode_info(&labels)?;
    }
    Ok(())
}

/// Help text of `crossfade_backend_workload_timestamp_seconds`, exported next to
/// `crossfade_backend_info` by the controller and by `crossfade proxy --kube`.
pub(crate) const WORKLOAD_TIMESTAMP_HELP: &str = "Unix time at which the backend slot got the workload it runs now (its backend_info series, the digest aside); the slot's counters before it belong to the previous workload";

/// Encodes `crossfade_backend_workload_timestamp_seconds` (a gauge, Unix seconds) with one
/// series per `(route, backend, since)` row: when the slot got the workload it runs now. A rate
/// of the slot's counters over a window that starts after it covers that workload alone.
///
/// # Errors
/// The encoder's formatting error.
pub(crate) fn encode_workload_timestamps<'a>(
    encoder: &mut DescriptorEncoder,
    rows: impl IntoIterator<Item = (&'a str, Slot, f64)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(
        "backend_workload_timestamp",
        WORKLOAD_TIMESTAMP_HELP,
        Some(&Unit::Seconds),
        MetricType::Gauge,
    )?;
    for (route, slot, since) in rows {
        let labels: [(&str, &str); 2] = [("route", route), ("backend", slot.as_str())];
        metric.encode_family(&labels)?.encode_gauge(&since)?;
    }
    Ok(())
}

/// The current Unix time in seconds (0 before 1970).
pub(crate) fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// What a backend slot runs, per `(route, backend)`.
pub(super) type InfoMap = Arc<Mutex<BTreeMap<(String, Slot), BackendInfo>>>;

/// The label values of one backend's series, but the digest (looked up at scrape time).
#[derive(Clone, Debug, PartialEq)]
pub(super) struct BackendInfo {
    /// The workload's description, at most [`MAX_WORKLOAD_LABEL`] characters.
    pub(super) workload: String,
    /// The workload's `name:` (empty when unset).
    pub(super) version: String,
    /// The program a process workload runs (`None` for static endpoints and Kubernetes backends).
    pub(super) program: Option<std::path::PathBuf>,
    /// The container images a Kubernetes backend runs (`None` in local mode, where the image is
    /// the program).
    pub(super) image: Option<String>,
    /// The digests a Kubernetes backend's pods report (`None` in local mode, where the program's
    /// digest is looked up at scrape time).
    pub(super) digest: Option<String>,
    /// Unix seconds at which the slot got this workload
    /// (`crossfade_backend_workload_timestamp_seconds`); kept by [`put`] while the workload stays.
    pub(super) since: f64,
}

impl BackendInfo {
    /// Whether `self` and `other` are the same workload: the same description, version, program
    /// and images. The digest does not count: it is filled in after a start (local mode) and
    /// follows the pods (Kubernetes).
    fn same_workload(&self, other: &BackendInfo) -> bool {
        (&self.workload, &self.version, &self.program, &self.image)
            == (
                &other.workload,
                &other.version,
                &other.program,
                &other.image,
            )
    }
}

/// Puts `info` in `map` at `key`, keeping the previous entry's `since` when it is the same
/// workload, so that the timestamp moves only when the slot's workload changes.
pub(super) fn put(
    map: &mut BTreeMap<(String, Slot), BackendInfo>,
    key: (String, Slot),
    mut info: BackendInfo,
) {
    if let Some(old) = map.get(&key).filter(|old| old.same_workload(&info)) {
        info.since = old.since;
    }
    map.insert(key, info);
}

/// Encodes the map at scrape time.
#[derive(Debug)]
pub(super) struct InfoCollector {
    pub(super) info: InfoMap,
}

/// The label values of `spec`: its description cut to [`MAX_WORKLOAD_LABEL`] characters, its
/// `name:` (empty when unset) and its program. Starts hashing the program if nobody has yet.
pub(super) fn workload_labels(spec: &WorkloadSpec) -> BackendInfo {
    let workload: String = spec
        .describe()
        .replace('`', "")
        .chars()
        .take(MAX_WORKLOAD_LABEL)
        .collect();
    let program = crate::image::program(spec);
    if let Some(path) = &program {
        let _ = crate::image::digest(path);
    }
    BackendInfo {
        workload,
        version: spec.name.clone().unwrap_or_default(),
        program,
        image: None,
        digest: None,
        since: unix_now(),
    }
}

// === impl InfoCollector ===

impl Collector for InfoCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let rows: Vec<_> = {
            let info = self.info.lock().unwrap_or_else(PoisonError::into_inner);
            info.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        let labels: Vec<_> = rows
            .iter()
            .map(|((route, slot), info)| {
                let image = match (&info.image, &info.program) {
                    (Some(image), _) => image.clone(),
                    (None, Some(program)) => program.display().to_string(),
                    (None, None) => String::new(),
                };
                let digest = match &info.digest {
                    Some(digest) => Some(digest.clone()),
                    None => info.program.as_deref().and_then(crate::image::digest),
                };
                (route, *slot, info, image, digest.unwrap_or_default())
            })
            .collect();
        encode_backend_info(
            &mut encoder,
            "The workload a backend slot runs (command and arguments, endpoints, or a Deployment), its image (local mode: the program; Kubernetes: the containers' images) and digest, and its version",
            labels.iter().map(|(route, slot, info, image, digest)| {
                let values = [&*info.workload, &**image, &**digest, &*info.version];
                (route.as_str(), *slot, values)
            }),
        )?;
        encode_workload_timestamps(
            &mut encoder,
            rows.iter()
                .map(|((route, slot), info)| (route.as_str(), *slot, info.since)),
        )
    }
}
