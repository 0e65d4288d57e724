//! `crossfade_backend_info` of `crossfade proxy --kube`: what each backend of a served route
//! runs, from the TrafficShift's `status.activeRevision` (backend `blue`) and
//! `status.previewRevision` (`green`), which the controller fills from the pods
//! ([`crate::kube::revision`]). The same labels as the controller's series of that name; exported
//! by the proxy too so that joining it onto the proxy's traffic `on (job, instance, route,
//! backend)`, as the dashboard does, finds it in the same scrape target (the controller's series
//! have the controller's `job` and `instance`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use crossfade_proxy::weight::Slot;
use kube::api::DynamicObject;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

use crate::kube::crd::RevisionStatus;

/// The label values of each backend's series, by `(route, backend)`, with the Unix seconds at
/// which this replica first saw the backend run that workload
/// (`crossfade_backend_workload_timestamp_seconds`).
pub(super) type Rows = Arc<Mutex<BTreeMap<(String, Slot), (Row, f64)>>>;

/// One backend's label values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Row {
    /// `deployment/<name>`.
    workload: String,
    /// The template's images, comma-separated in container order.
    image: String,
    /// The digests its pods report, parallel to `image` ([`RevisionStatus::digest_label`]).
    image_digest: String,
    /// The Deployment's name.
    version: String,
}

/// Encodes the rows at scrape time.
#[derive(Debug)]
pub(super) struct InfoCollector {
    pub(super) rows: Rows,
}

/// The rows of a TrafficShift (as the reflector holds it): one per revision in its status that
/// reads as a [`RevisionStatus`]; a malformed one gives no row (the route is served regardless).
pub(super) fn rows(object: &DynamicObject) -> Vec<(Slot, Row)> {
    let status = object.data.get("status");
    let revision = |field: &str| {
        let value = status.and_then(|s| s.get(field))?.clone();
        serde_json::from_value::<RevisionStatus>(value).ok()
    };
    [
        (Slot::Blue, revision("activeRevision")),
        (Slot::Green, revision("previewRevision")),
    ]
    .into_iter()
    .filter_map(|(slot, r)| Some((slot, row(&r?))))
    .collect()
}

/// Whether `a` and `b` describe the same workload: the same Deployment and images. The digests do
/// not count: they are filled in as pods report them, and change during a rolling update of the
/// same template.
pub(super) fn same_workload(a: &Row, b: &Row) -> bool {
    (&a.workload, &a.image, &a.version) == (&b.workload, &b.image, &b.version)
}

fn row(revision: &RevisionStatus) -> Row {
    let template = revision.template();
    let names: Vec<&str> = template.iter().map(|(name, _)| *name).collect();
    let images: Vec<&str> = template.iter().map(|(_, image)| *image).collect();
    Row {
        workload: crate::metrics::info::deployment_workload(&revision.deployment),
        image: images.join(","),
        image_digest: revision.digest_label(&names),
        version: revision.deployment.clone(),
    }
}

// === impl InfoCollector ===

impl Collector for InfoCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let rows: Vec<_> = {
            let rows = self.rows.lock().unwrap_or_else(PoisonError::into_inner);
            rows.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        crate::metrics::info::encode_backend_info(
            &mut encoder,
            "The Deployment a backend of a TrafficShift's route runs, its containers' images and the digests its pods report (from the TrafficShift's status)",
            rows.iter().map(|((route, slot), (row, _))| {
                let values = [&*row.workload, &*row.image, &*row.image_digest, &*row.version];
                (route.as_str(), *slot, values)
            }),
        )?;
        crate::metrics::info::encode_workload_timestamps(
            &mut encoder,
            rows.iter()
                .map(|((route, slot), (_, since))| (route.as_str(), *slot, *since)),
        )
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn shift(status: serde_json::Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "crossfade.dev/v1alpha1", "kind": "TrafficShift",
            "metadata": { "name": "web", "namespace": "shop" },
            "spec": { "deployment": "web", "images": { "app": "web:v2" } },
            "status": status
        }))
        .expect("object")
    }

    #[test]
    fn each_revision_in_status_is_a_row_with_the_template_images_and_digests() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let object = shift(json!({
            "activeRevision": { "deployment": "web", "pods": 3, "mixed": true, "containers": [
                { "name": "app", "image": "web:v2", "digests": [b] },
                { "name": "sidecar", "image": "envoy:1.30" },
                { "name": "app", "image": "web:v1", "digests": [a] } ] },
            "previewRevision": { "deployment": "web-green", "pods": 1 }
        }));
        let rows = rows(&object);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[0],
            (
                Slot::Blue,
                Row {
                    workload: "deployment/web".into(),
                    image: "web:v2,envoy:1.30".into(),
                    image_digest: format!("{a}|{b},"),
                    version: "web".into(),
                }
            )
        );
        assert_eq!(rows[1].0, Slot::Green);
        assert_eq!(rows[1].1.image_digest, "", "no digest known yet");
    }

    #[test]
    fn a_malformed_or_missing_revision_gives_no_row() {
        let object =
            shift(json!({ "activeRevision": { "deployment": 7 }, "phase": "Progressing" }));
        assert_eq!(rows(&object), []);
        assert_eq!(rows(&shift(json!(null))), []);
    }
}
