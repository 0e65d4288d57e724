//! The annotation trigger, pure: from a Deployment's `crossfade.dev/*` annotations to the
//! `TrafficShift` they ask for.
//!
//! A Deployment is managed when its label or annotation `crossfade.dev/enabled` is `"true"`. It asks
//! for a rollout with `crossfade.dev/image=REF` (the only container) or
//! `crossfade.dev/image.<container>=REF` (one container of several; repeat for more).
//!
//! `crossfade.dev/rollout` chooses the rollout policy: the TrafficShift's `spec.rollout`, written
//! as YAML or JSON (`{steps: [{weight: 10}, {weight: 100}], hold: 1m}`); without it, the default
//! policy.
//!
//! The TrafficShift is named after the Deployment and its spec depends on the annotations and the
//! container names only, so the same annotation applied twice yields the same object (one rollout,
//! not two), and a new value yields the same name with a new spec, which supersedes the old one.

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::ObjectMeta;
use kube::Resource;

use super::crd::name::check_shift_name;
use super::crd::{ImageRef, RolloutPolicy, TrafficShift, TrafficShiftSpec};

/// Label or annotation that puts a Deployment under Crossfade's management: `"true"` or `"false"`.
pub const ENABLED: &str = "crossfade.dev/enabled";
/// Annotation asking for a rollout of the Deployment's only container to an image.
pub const IMAGE: &str = "crossfade.dev/image";
/// Prefix of the annotation asking for a rollout of one named container: `crossfade.dev/image.web`.
pub const IMAGE_PREFIX: &str = "crossfade.dev/image.";
/// Annotation choosing the rollout policy: the TrafficShift's `spec.rollout` as YAML or JSON (a
/// map of its fields: `steps`, `hold`, `analysis`, `progressDeadline`, `drainTimeout`,
/// `unreadyGrace`, `gates`; docs/kubernetes.md, "The TrafficShift resource"). Absent: the default
/// policy.
pub const ROLLOUT: &str = "crossfade.dev/rollout";
/// Label Crossfade puts on the objects it creates.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "crossfade");

/// `crossfade.dev/*` annotations of the operator commands: read by the TrafficShift controller
/// ([`super::command`]), not by the trigger.
const COMMANDS: [&str; 6] = super::command::ALL;

/// Why a Deployment's annotations do not make a valid request; every problem found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("deployment {deployment}: {}", Problems(.problems))]
pub struct TriggerError {
    /// `namespace/name` of the Deployment.
    pub deployment: String,
    /// Each problem with the annotation it is about, in annotation order.
    pub problems: Vec<AnnotationProblem>,
}

/// One bad annotation (or label) and what is wrong with it; shown as `annotation KEY: MESSAGE`
/// (`label KEY: MESSAGE` for a label).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnotationProblem {
    /// The annotation's key, e.g. `crossfade.dev/image.web`.
    pub annotation: String,
    /// Whether the key is a label rather than an annotation (only [`ENABLED`] may be one).
    pub label: bool,
    /// Lowercase message, e.g. `image reference is empty`.
    pub message: String,
}

impl fmt::Display for AnnotationProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.label { "label" } else { "annotation" };
        write!(f, "{kind} {}: {}", self.annotation, self.message)
    }
}

/// The TrafficShift a Deployment's annotations ask for.
///
/// `Ok(None)` when the Deployment is not managed or asks for no image. The result has the
/// Deployment's name and namespace, the label [`MANAGED_BY`], an owner reference to the Deployment
/// when it has a uid, and the rollout policy of [`ROLLOUT`] (the default one without it).
///
/// # Errors
/// [`TriggerError`] listing every bad annotation: an `enabled` value other than `"true"`/`"false"`
/// (named as a label when it is one), a label and an annotation `enabled` that contradict,
/// an empty or blank image reference, a container the Deployment does not have, `image` on a
/// Deployment with several containers, `image` mixed with `image.<container>`, an unknown
/// `crossfade.dev/` annotation (a typo would otherwise be ignored silently), `enabled` on a
/// preview Crossfade made (see [`managed`]), `enabled` on a Deployment whose name cannot name
/// a TrafficShift ([`check_shift_name`]), or a [`ROLLOUT`] policy that is not one
/// ([`rollout_policy`]: every problem of it, each naming its field).
pub fn desired_shift(deploy: &Deployment) -> Result<Option<TrafficShift>, TriggerError> {
    let meta = &deploy.metadata;
    let name = meta.name.clone().unwrap_or_default();
    let namespace = meta.namespace.clone();
    let mut report = Report::default();
    let enabled = enabled(meta, &mut report)
        && !refused_preview(meta, &mut report)
        && nameable(meta, &mut report);
    let (images, rollout) = if enabled {
        let images = requested_images(deploy, &mut report);
        (images, annotated_policy(meta, &mut report))
    } else {
        (BTreeMap::new(), RolloutPolicy::default())
    };
    if !report.0.is_empty() {
        let deployment = format!("{}/{name}", namespace.as_deref().unwrap_or("default"));
        return Err(TriggerError {
            deployment,
            problems: report.0,
        });
    }
    if images.is_empty() {
        return Ok(None);
    }
    let spec = TrafficShiftSpec {
        deployment: name.clone(),
        images,
        rollout,
        route: None,
    };
    let mut shift = TrafficShift::new(&name, spec);
    shift.metadata = ObjectMeta {
        name: Some(name),
        namespace,
        labels: Some(BTreeMap::from([(MANAGED_BY.0.into(), MANAGED_BY.1.into())])),
        owner_references: deploy.controller_owner_ref(&()).map(|r| vec![r]),
        ..ObjectMeta::default()
    };
    Ok(Some(shift))
}

/// Whether `deploy` is managed: its label or annotation `crossfade.dev/enabled` is `"true"` (a bad
/// value is not; [`desired_shift`] reports it), and it is not a preview Crossfade made for a
/// rollout (its controller owner a TrafficShift): a preview is rolled out by its TrafficShift and
/// deleted at the end, so a rollout of its own would fight that one over its template; nor is a
/// Deployment whose name cannot name its TrafficShift (`nameable`).
pub fn managed(deploy: &Deployment) -> bool {
    let meta = &deploy.metadata;
    let report = &mut Report::default();
    enabled(meta, report) && preview_of(meta).is_none() && nameable(meta, report)
}

/// Whether the Deployment's name can name its TrafficShift ([`check_shift_name`]); else reports
/// it on [`ENABLED`] (as a label when only the label is set) and the Deployment is not managed:
/// the TrafficShift would be made, and refused (`InvalidObject`), and `kubectl set image` taken
/// back for a rollout that could never run (trial 30: a 60-character name, `1web`, `web.v2`).
fn nameable(meta: &ObjectMeta, report: &mut Report) -> bool {
    let name = meta.name.as_deref().unwrap_or_default();
    let Err(why) = check_shift_name(name) else {
        return true;
    };
    let label = !meta
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(ENABLED));
    let message = format!(
        "the trafficshift of this deployment would be named after it, and {why}; to roll it out, \
         apply a trafficshift of such a name with spec.deployment: {name}, and remove {ENABLED}"
    );
    report.push(ENABLED, label, message);
    false
}

/// The TrafficShift whose preview this Deployment is: its controller owner reference, when that is
/// a TrafficShift (how Crossfade makes `<name>-green`).
fn preview_of(meta: &ObjectMeta) -> Option<&str> {
    let owners = meta.owner_references.as_deref().unwrap_or_default();
    owners
        .iter()
        .find(|o| o.controller == Some(true))
        .filter(|o| {
            o.kind == TrafficShift::kind(&())
                && o.api_version.split('/').next() == Some(&*TrafficShift::group(&()))
        })
        .map(|o| o.name.as_str())
}

/// Reports [`ENABLED`] on a preview (trial 23: `kubectl annotate deployment/web-green ...`, the
/// name `kubectl get deployments` lists next to the target, started a rollout of the preview,
/// `web-green-green`, under the running one); `true` when it is one.
fn refused_preview(meta: &ObjectMeta, report: &mut Report) -> bool {
    let Some(shift) = preview_of(meta) else {
        return false;
    };
    let label = meta
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(ENABLED))
        && !meta
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(ENABLED));
    let message = format!(
        "this deployment is the preview of trafficshift {shift}, made and deleted by its rollout; \
         annotate the deployment that trafficshift rolls out (its spec.deployment) instead"
    );
    report.push(ENABLED, label, message);
    true
}

/// Whether the label or annotation `crossfade.dev/enabled` says `"true"`. A bad value, or a
/// label and an annotation that contradict each other (trial 10, K15), is reported and is not
/// `"true"`: the Deployment is not managed until it is fixed.
fn enabled(meta: &ObjectMeta, report: &mut Report) -> bool {
    let label = meta.labels.as_ref().and_then(|l| l.get(ENABLED));
    let annotation = meta.annotations.as_ref().and_then(|a| a.get(ENABLED));
    let mut on = false;
    let mut valid = true;
    for (value, is_label) in [(label, true), (annotation, false)] {
        let Some(value) = value else { continue };
        match value.as_str() {
            "true" => on = true,
            "false" => {}
            other => {
                valid = false;
                let message = format!("{} is not \"true\" or \"false\"", super::quoted(other));
                report.push(ENABLED, is_label, message);
            }
        }
    }
    if let (Some(l), Some(a)) = (label, annotation) {
        if valid && l != a {
            let message = format!(
                "{a:?} contradicts label {ENABLED}={l:?}; remove one, or give both the same value"
            );
            report.push(ENABLED, false, message);
            return false;
        }
    }
    on && valid
}

/// Container name → image from the `image` annotations, checked against the pod template.
fn requested_images(deploy: &Deployment, report: &mut Report) -> BTreeMap<String, ImageRef> {
    let containers: Vec<&str> = deploy
        .spec
        .iter()
        .flat_map(|s| s.template.spec.iter())
        .flat_map(|s| s.containers.iter().map(|c| c.name.as_str()))
        .collect();
    let annotations = deploy.metadata.annotations.clone().unwrap_or_default();
    let mut images = BTreeMap::new();
    for (key, value) in &annotations {
        let Some(container) = image_target(key, &annotations, &containers, report) else {
            continue;
        };
        if let Some(image) = image_ref(key, value, report) {
            images.insert(container, image);
        }
    }
    images
}

/// The container an annotation targets, or `None` (reported) for a bad or non-image annotation.
fn image_target(
    key: &str,
    annotations: &BTreeMap<String, String>,
    containers: &[&str],
    report: &mut Report,
) -> Option<String> {
    if key == IMAGE {
        if annotations.keys().any(|k| k.starts_with(IMAGE_PREFIX)) {
            report.add(
                key,
                format!("cannot be combined with {IMAGE_PREFIX}<container>; use one form"),
            );
            return None;
        }
        return match containers {
            [only] => Some((*only).to_owned()),
            _ => {
                let msg = format!(
                    "the deployment has {} containers ({}); name one with {IMAGE_PREFIX}<container>",
                    containers.len(),
                    containers.join(", ")
                );
                report.add(key, msg);
                None
            }
        };
    }
    if let Some(container) = key.strip_prefix(IMAGE_PREFIX) {
        if containers.contains(&container) {
            return Some(container.to_owned());
        }
        let msg = format!(
            "no container {container:?} in the deployment (containers: {})",
            containers.join(", ")
        );
        report.add(key, msg);
        return None;
    }
    let own = key == ENABLED
        || key == ROLLOUT
        || key == super::template::SERVING_IMAGES
        || COMMANDS.contains(&key);
    if key.starts_with(super::PREFIX) && !own {
        report.add(key, unknown_annotation(key));
    }
    None
}

/// Why `key` (a `crossfade.dev/` annotation of no meaning) is refused: the annotations there are,
/// and the one it most likely meant (`crossfade.dev/imgae.app` → `crossfade.dev/image.app`,
/// `crossfade.dev/Paused` → `crossfade.dev/paused`), so that a typo is told what to write, not only
/// that it is unknown.
fn unknown_annotation(key: &str) -> String {
    let name = key.strip_prefix(super::PREFIX).unwrap_or(key);
    let known: Vec<&str> = [ENABLED, IMAGE, ROLLOUT]
        .into_iter()
        .chain(COMMANDS)
        .filter_map(|k| k.strip_prefix(super::PREFIX))
        .collect();
    // `image.<container>`: a typo is in the part before the container's name.
    let meant = match name.split_once('.') {
        Some((head, container)) => crossfade_proxy::de::closest(head, ["image"])
            .or((head == "image").then_some("image"))
            .map(|_| format!("{IMAGE_PREFIX}{container}")),
        None => crossfade_proxy::de::closest(name, known.iter().copied())
            .map(|k| format!("{}{k}", super::PREFIX)),
    };
    let hint = meant.map_or(String::new(), |k| format!("; did you mean {k}?"));
    format!(
        "unknown crossfade.dev annotation{hint} (the annotations are {}, image.<container>)",
        known.join(", ")
    )
}

/// The policy of the [`ROLLOUT`] annotation, or the default one when it is absent or refused
/// (reported: the Deployment is then not rolled out until it is fixed).
fn annotated_policy(meta: &ObjectMeta, report: &mut Report) -> RolloutPolicy {
    let Some(text) = meta.annotations.as_ref().and_then(|a| a.get(ROLLOUT)) else {
        return RolloutPolicy::default();
    };
    rollout_policy(text).unwrap_or_else(|problems| {
        for message in problems {
            report.add(ROLLOUT, message);
        }
        RolloutPolicy::default()
    })
}

/// Reads a rollout policy written as the [`ROLLOUT`] annotation's value: the TrafficShift's
/// `spec.rollout` as YAML or JSON (YAML 1.2 flow style included: `{steps: [{weight: 10}, {weight:
/// 100}], hold: 1m}`), checked as the TrafficShift controller checks `spec.rollout`: its schema
/// (no unknown field, [`super::crd::unknown_fields`]), its types ([`super::crd::decode()`]) and
/// its rules ([`RolloutPolicy::checked`], which [`TrafficShiftSpec::validated`] uses too).
///
/// # Errors
/// Every problem found, each naming its field relative to `spec.rollout` (`steps[1].weight: 20%
/// is not above the previous step (50%)`, `holdd: unknown field; ...`): text that is not YAML,
/// or a value that is not a map, alone; else every unknown field, then every field whose type is
/// wrong (as [`super::crd::decode()`] finds them) or, when all decode, every broken rule. Before
/// (session 43) unknown fields hid the rest: `{holdd: 1m, steps: [{weight: 50}]}` was told only
/// of `holdd`, and after its fix of the last step below 100%.
pub fn rollout_policy(text: &str) -> Result<RolloutPolicy, Vec<String>> {
    let value: serde_json::Value =
        serde_yaml_ng::from_str(text).map_err(|e| vec![format!("not YAML or JSON: {e}")])?;
    if !value.is_object() {
        let shown = super::quoted(text.trim());
        return Err(vec![format!(
            "{shown} is not a map of spec.rollout's fields (e.g. {{steps: [{{weight: 10}}, {{weight: 100}}], hold: 1m}})"
        )]);
    }
    let spec = serde_json::json!({
        "deployment": "policy",
        "images": { "app": "policy:v1" },
        "rollout": value,
    });
    let unknown = super::crd::unknown_fields(&spec);
    let object = serde_json::json!({
        "apiVersion": TrafficShift::api_version(&()),
        "kind": TrafficShift::kind(&()),
        "metadata": { "name": "policy" },
        "spec": spec,
    });
    let relative = |problems: Vec<String>| problems.iter().map(|p| under_rollout(p)).collect();
    let policy = match super::crd::decode(&object) {
        Ok(shift) => shift.spec.rollout,
        Err(e) => {
            let mut problems = unknown;
            problems.extend(e.to_string().lines().map(str::to_owned));
            return Err(relative(problems));
        }
    };
    match policy.checked(unknown) {
        Ok(_) => Ok(policy),
        Err(problems) => Err(relative(problems)),
    }
}

/// A problem of `spec.rollout` named as the annotation's user wrote it, paths relative to the
/// policy: `spec.rollout.hold: ...` → `hold: ...`, `spec.rollout: ...` (the map as a whole) →
/// `the policy: ...`, also inside the message (`spec.rollout takes analysis, ...` → `the policy
/// takes analysis, ...`).
fn under_rollout(problem: &str) -> String {
    let relative = problem.replace("spec.rollout.", "");
    let relative = match relative.strip_prefix("spec.rollout:") {
        Some(rest) => format!("the policy:{rest}"),
        None => relative,
    };
    relative.replace("spec.rollout ", "the policy ")
}

/// The image reference in an annotation's value, or `None` (reported) when empty, blank, or not
/// an image reference ([`super::crd::image::check_reference`]).
fn image_ref(key: &str, value: &str, report: &mut Report) -> Option<ImageRef> {
    if value.trim().is_empty() {
        report.add(key, "image reference is empty".to_owned());
        None
    } else if value.chars().any(char::is_whitespace) {
        report.add(
            key,
            format!(
                "image reference {} contains whitespace",
                super::quoted(value)
            ),
        );
        None
    } else if let Err(why) = super::crd::image::check_reference(value) {
        let value = super::quoted(value);
        report.add(key, format!("{value} is not an image reference: {why}"));
        None
    } else {
        Some(ImageRef(value.to_owned()))
    }
}

/// Problems collected while reading the annotations.
#[derive(Default)]
struct Report(Vec<AnnotationProblem>);

impl Report {
    fn add(&mut self, annotation: &str, message: String) {
        self.push(annotation, false, message);
    }

    fn push(&mut self, key: &str, label: bool, message: String) {
        self.0.push(AnnotationProblem {
            annotation: key.to_owned(),
            label,
            message,
        });
    }
}

/// Displays problems separated by `; `.
struct Problems<'a>(&'a [AnnotationProblem]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}
