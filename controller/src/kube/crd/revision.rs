//! What each backend's pods run, as their kubelets report it: `status.activeRevision` and
//! `status.previewRevision` (image references and digests per container). Filled by
//! [`crate::kube::revision`].

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Most distinct digests recorded per container and image reference; more are left out (the
/// revision is `mixed` anyway). Keeps the status and the `image_digest` label bounded.
pub const MAX_DIGESTS: usize = 4;

/// The images and digests one backend's pods run: the pods the backend's Service selects
/// (`<name>-blue`: the target Deployment's `matchLabels`; `<name>-green`: the preview's), phase
/// `Running` and not being deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevisionStatus {
    /// The Deployment whose pods these are: the target (active) or `<name>-green` (preview).
    #[schemars(length(min = 1, max = 253))]
    pub deployment: String,
    /// Running pods counted.
    #[schemars(range(min = 0))]
    pub pods: u32,
    /// One entry per container of the Deployment's pod template (template order, the image it
    /// asks for), then one per other `(container, image)` the pods run (pods of an older
    /// template during a rolling update), sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub containers: Vec<ContainerRevision>,
    /// `true` when a container runs under more than one digest across these pods: a rolling
    /// update in progress, or a mutable tag that resolved differently on different nodes. The
    /// backend's traffic then goes to more than one build.
    #[serde(default)]
    pub mixed: bool,
}

/// One container's image reference and the digests its running pods report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRevision {
    /// The container's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The image reference the pods were created with (`spec.containers[].image`).
    #[schemars(length(max = 4096))]
    pub image: String,
    /// The distinct digests in the pods' `status.containerStatuses[].imageID`, in the OCI
    /// image-spec digest form (`sha256:<64 hex>`, or `sha512:<128 hex>`), sorted, at most 4
    /// (`MAX_DIGESTS`). Empty while no running pod reports one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_DIGESTS))]
    pub digests: Vec<String>,
}

// === impl RevisionStatus ===

impl RevisionStatus {
    /// The template's containers `(name, image)`: the first entry of each container name (the
    /// template's come first, see `containers`).
    pub fn template(&self) -> Vec<(&str, &str)> {
        let mut seen = std::collections::BTreeSet::new();
        self.containers
            .iter()
            .filter(|c| seen.insert(c.name.as_str()))
            .map(|c| (c.name.as_str(), c.image.as_str()))
            .collect()
    }

    /// The `image_digest` label of `crossfade_backend_info`: per template container (the first
    /// `containers` entries named in `names`, in that order) the union of its digests joined by
    /// `|`, containers joined by `,`, parallel to the `image` label; empty when no digest is known.
    pub fn digest_label(&self, names: &[&str]) -> String {
        if self.containers.iter().all(|c| c.digests.is_empty()) {
            return String::new();
        }
        let per_container: Vec<String> = names
            .iter()
            .map(|name| {
                let mut digests: Vec<&str> = self
                    .containers
                    .iter()
                    .filter(|c| c.name == *name)
                    .flat_map(|c| c.digests.iter().map(String::as_str))
                    .collect();
                digests.sort_unstable();
                digests.dedup();
                digests.truncate(MAX_DIGESTS);
                digests.join("|")
            })
            .collect();
        per_container.join(",")
    }
}
