//! Pure: the objects the Kubernetes driver creates (preview Deployment, per-backend Services) and
//! how it reads a Deployment's availability. No I/O, unit-tested without an API server.

use std::collections::BTreeMap;

use crossfade_proxy::weight::Slot;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use super::KubeDriverError;
use crate::kube::crd::TrafficShift;
use crate::kube::trigger::MANAGED_BY;

/// Label naming the backend (`blue` or `green`) of the pods and Services Crossfade creates.
pub const BACKEND_LABEL: &str = "crossfade.dev/backend";
/// Label naming the TrafficShift that created a pod, Deployment or Service.
pub const SHIFT_LABEL: &str = "crossfade.dev/trafficshift";

/// Whether a Deployment has rolled out its current spec, read as `kubectl rollout status` does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Availability {
    /// Every desired replica runs the current template and is available.
    Available,
    /// Not yet; the text says what is missing (`1 of 2 updated replicas are available`).
    Waiting(String),
    /// The Deployment controller gave up: condition `Progressing=False`, reason
    /// `ProgressDeadlineExceeded` (its own `progressDeadlineSeconds`); the text is its message.
    Failed(String),
}

/// `<trafficshift>-green`: the preview Deployment's name.
pub fn preview_name(shift: &TrafficShift) -> String {
    format!("{}-green", shift.name_any())
}

/// `<trafficshift>-blue` or `<trafficshift>-green`: the per-backend Service's name.
pub fn service_name(shift: &TrafficShift, slot: Slot) -> String {
    format!("{}-{slot}", shift.name_any())
}

/// The labels that select the preview's pods: backend `green` of this TrafficShift.
pub fn green_selector(shift: &TrafficShift) -> BTreeMap<String, String> {
    BTreeMap::from([
        (BACKEND_LABEL.to_owned(), Slot::Green.to_string()),
        (SHIFT_LABEL.to_owned(), shift.name_any()),
    ])
}

/// The target Deployment's `matchLabels`, which select its pods (the blue backend).
///
/// # Errors
/// [`KubeDriverError::Invalid`] when it has none (a Service cannot express `matchExpressions`).
pub fn blue_selector(target: &Deployment) -> Result<BTreeMap<String, String>, KubeDriverError> {
    match &spec_of(target)?.selector.match_labels {
        Some(labels) if !labels.is_empty() => Ok(labels.clone()),
        _ => Err(invalid(
            target,
            "spec.selector has no matchLabels; a Service cannot select its pods",
        )),
    }
}

/// The preview Deployment: a copy of `target`'s pod template with the TrafficShift's images,
/// `target`'s replicas, owned by the TrafficShift.
///
/// The preview's pods carry the template's labels **except the keys of `target`'s selector**, plus
/// [`BACKEND_LABEL`]`=green` and [`SHIFT_LABEL`]: neither the target Deployment nor a Service that
/// selects the target's pods picks them up, so they get traffic only through `<name>-green` and
/// its weight.
///
/// # Errors
/// [`KubeDriverError::Invalid`] naming `spec.images.<container>` when the template has no such
/// container, or when the target has no pod spec.
pub fn preview_deployment(
    shift: &TrafficShift,
    target: &Deployment,
) -> Result<Deployment, KubeDriverError> {
    let spec = spec_of(target)?;
    let mut template = spec.template.clone();
    let pod = template
        .spec
        .as_mut()
        .ok_or_else(|| invalid(target, "spec.template.spec is missing"))?;
    if let Some(missing) = missing_containers(shift, target).into_iter().next() {
        return Err(KubeDriverError::Invalid {
            object: format!("trafficshift {}", key(shift)),
            message: missing,
        });
    }
    for (container, image) in &shift.spec.images {
        if let Some(c) = pod.containers.iter_mut().find(|c| &c.name == container) {
            c.image = Some(image.0.clone());
        }
    }
    let meta = template.metadata.get_or_insert_with(Default::default);
    let mut labels = meta.labels.take().unwrap_or_default();
    let selector = &spec.selector;
    for k in selector.match_labels.iter().flat_map(|m| m.keys()) {
        labels.remove(k);
    }
    for e in selector.match_expressions.iter().flatten() {
        labels.remove(&e.key);
    }
    labels.extend(green_selector(shift));
    meta.labels = Some(labels);
    Ok(Deployment {
        metadata: owned_meta(shift, preview_name(shift), Slot::Green),
        spec: Some(DeploymentSpec {
            replicas: Some(spec.replicas.unwrap_or(1)),
            selector: LabelSelector {
                match_labels: Some(green_selector(shift)),
                match_expressions: None,
            },
            template,
            min_ready_seconds: spec.min_ready_seconds,
            progress_deadline_seconds: spec.progress_deadline_seconds,
            revision_history_limit: spec.revision_history_limit,
            strategy: spec.strategy.clone(),
            paused: None,
        }),
        status: None,
    })
}

/// Each container `shift`'s `spec.images` names that `target`'s pod template does not have, as
/// `spec.images.api: deployment web has no container "api" (its containers: app, log)`, in
/// container order; empty when it has them all. A spec error, not a failure of the preview
/// (session 42: it was found only when the preview was made, and the rollout rolled back, so a
/// retry failed the same way): the containers it has are named, so the fix is at hand.
pub fn missing_containers(shift: &TrafficShift, target: &Deployment) -> Vec<String> {
    let pod = target.spec.as_ref().and_then(|s| s.template.spec.as_ref());
    let names: Vec<&str> = pod
        .iter()
        .flat_map(|p| &p.containers)
        .map(|c| c.name.as_str())
        .collect();
    let has = match names.as_slice() {
        [] => "no containers".to_owned(),
        names => format!("its containers: {}", names.join(", ")),
    };
    shift
        .spec
        .images
        .keys()
        .filter(|c| !names.contains(&c.as_str()))
        .map(|c| {
            format!(
                "spec.images.{c}: deployment {} has no container {c:?} ({has})",
                target.name_any()
            )
        })
        .collect()
}

/// The headless Service of `slot`: `blue` selects the target's pods, `green` the preview's. Ports
/// are the template's container ports (a headless Service gives clients, and the proxy, the pod
/// addresses; it load-balances nothing itself).
///
/// # Errors
/// As [`blue_selector`] for `blue`.
pub fn backend_service(
    shift: &TrafficShift,
    target: &Deployment,
    slot: Slot,
) -> Result<Service, KubeDriverError> {
    let selector = match slot {
        Slot::Blue => blue_selector(target)?,
        Slot::Green => green_selector(shift),
    };
    Ok(Service {
        metadata: owned_meta(shift, service_name(shift, slot), slot),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(selector),
            ports: Some(service_ports(target)),
            ..ServiceSpec::default()
        }),
        status: None,
    })
}

/// Why the proxies cannot reach `target`'s pods, when its pod template declares no container
/// port at all: the backend Services take their ports from `ports[].containerPort`, so theirs
/// would list none, and neither `spec.route.port` nor anything on the Service can fix that (trial
/// 10, K10). `None` when a container declares one.
pub fn no_container_port(target: &Deployment) -> Option<String> {
    if !service_ports(target).is_empty() {
        return None;
    }
    Some(format!(
        "deployment {} declares no container port; the proxies cannot reach its pods (the \
         Services {name}-blue and {name}-green take their ports from the pod template); add \
         ports[].containerPort to the container that serves, e.g. ports: [{{ name: http, \
         containerPort: 8080 }}]",
        target.metadata.name.as_deref().unwrap_or_default(),
        name = target.metadata.name.as_deref().unwrap_or_default(),
    ))
}

/// One Service port per distinct container port (and protocol) of the template.
fn service_ports(target: &Deployment) -> Vec<ServicePort> {
    let pods = target.spec.iter().flat_map(|s| &s.template.spec);
    let containers = pods.flat_map(|p| &p.containers);
    let mut ports: Vec<ServicePort> = Vec::new();
    for p in containers.flat_map(|c| c.ports.iter().flatten()) {
        let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
        let seen = |s: &ServicePort| {
            s.port == p.container_port && s.protocol.as_deref() == Some(&protocol)
        };
        if ports.iter().any(seen) {
            continue;
        }
        let name = p
            .name
            .clone()
            .unwrap_or_else(|| format!("{}-{}", protocol.to_lowercase(), p.container_port));
        ports.push(ServicePort {
            name: Some(name),
            port: p.container_port,
            target_port: Some(IntOrString::Int(p.container_port)),
            protocol: Some(protocol),
            ..ServicePort::default()
        });
    }
    ports
}

/// Name, namespace, labels and the controller owner reference to `shift`.
fn owned_meta(shift: &TrafficShift, name: String, slot: Slot) -> ObjectMeta {
    let mut labels = green_selector(shift);
    labels.insert(BACKEND_LABEL.to_owned(), slot.to_string());
    labels.insert(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned());
    ObjectMeta {
        name: Some(name),
        namespace: shift.namespace(),
        labels: Some(labels),
        owner_references: shift.controller_owner_ref(&()).map(|r| vec![r]),
        ..ObjectMeta::default()
    }
}

/// Whether `object` is controlled by `shift` (its controller owner reference has the shift's uid).
pub fn controlled_by(object: &impl Resource, shift: &TrafficShift) -> bool {
    let uid = shift.meta().uid.as_deref();
    object
        .meta()
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.controller == Some(true) && Some(r.uid.as_str()) == uid)
}

/// Whether `deploy` has rolled out its current spec (the rule of `kubectl rollout status`): the
/// controller observed the latest generation, every desired replica was updated, no old replica
/// is left and every updated replica is available.
pub fn availability(deploy: &Deployment) -> Availability {
    let Some(status) = &deploy.status else {
        return Availability::Waiting("no status yet".into());
    };
    let stalled = status.conditions.iter().flatten().find(|c| {
        c.type_ == "Progressing"
            && c.status == "False"
            && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    });
    if let Some(c) = stalled {
        let why = c
            .message
            .clone()
            .unwrap_or_else(|| "ProgressDeadlineExceeded".into());
        return Availability::Failed(why);
    }
    let generation = deploy.metadata.generation.unwrap_or(0);
    if status.observed_generation.unwrap_or(0) < generation {
        return Availability::Waiting(format!(
            "generation {generation} not observed yet (observed {})",
            status.observed_generation.unwrap_or(0)
        ));
    }
    let desired = deploy.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if updated < desired {
        return Availability::Waiting(format!("{updated} of {desired} replicas updated"));
    }
    if total > updated {
        return Availability::Waiting(format!(
            "{} old replicas pending termination",
            total - updated
        ));
    }
    if available < updated {
        return Availability::Waiting(format!(
            "{available} of {updated} updated replicas available"
        ));
    }
    Availability::Available
}

/// `deploy`'s ready replicas (`status.readyReplicas`, 0 without a status) and the replicas its
/// spec asks for (`spec.replicas`, default 1), as `kubectl get deployment` shows `READY 1/2`;
/// negative counts (no API server writes them) read as 0.
pub fn ready_replicas(deploy: &Deployment) -> (u32, u32) {
    let count = |n: Option<i32>| u32::try_from(n.unwrap_or(0)).unwrap_or(0);
    let ready = count(deploy.status.as_ref().and_then(|s| s.ready_replicas));
    let desired = deploy.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    (ready, count(Some(desired)))
}

/// Whether every container named in the TrafficShift runs its image in `deploy`'s template.
pub fn runs_images(deploy: &Deployment, shift: &TrafficShift) -> bool {
    let pods = deploy.spec.iter().flat_map(|s| &s.template.spec);
    let containers = pods.flat_map(|p| &p.containers);
    let images: BTreeMap<&str, Option<&str>> = containers
        .map(|c| (c.name.as_str(), c.image.as_deref()))
        .collect();
    shift
        .spec
        .images
        .iter()
        .all(|(c, i)| images.get(c.as_str()) == Some(&Some(i.0.as_str())))
}

/// `namespace/name` of any object.
pub fn key(object: &impl Resource) -> String {
    let meta = object.meta();
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or("default"),
        meta.name.as_deref().unwrap_or_default()
    )
}

fn spec_of(target: &Deployment) -> Result<&DeploymentSpec, KubeDriverError> {
    target
        .spec
        .as_ref()
        .ok_or_else(|| invalid(target, "spec is missing"))
}

fn invalid(target: &Deployment, message: &str) -> KubeDriverError {
    KubeDriverError::Invalid {
        object: format!("deployment {}", key(target)),
        message: message.to_owned(),
    }
}
