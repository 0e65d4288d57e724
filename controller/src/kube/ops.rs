//! The operator's side of the command annotations, for `crossfade status|promote|abort|pause|
//! resume|retry --kube` (and the `kubectl crossfade` plugin): write the annotation on the
//! TrafficShift's target Deployment with a fresh nonce, wait until the controller has acted on
//! it (`status.commands`), and describe a TrafficShift for people.
//!
//! The CLI only wires these to arguments; what a command means is decided by the controller
//! ([`super::command`]).

use std::fmt::Write as _;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::Client;
use serde_json::json;

use super::command::{ABORT, FORCE_ABORT, PAUSED, PROMOTE, RESUME, RETRY};
use super::crd::{
    CommandOutcome, CommandsSeen, DecodeError, Phase, TrafficShift, TrafficShiftStatus,
};
use super::FIELD_MANAGER;

/// How often [`wait_acted`] reads the TrafficShift.
const POLL: Duration = Duration::from_millis(250);

/// An operator command given through the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    /// `crossfade.dev/promote=<nonce>`.
    Promote,
    /// `crossfade.dev/abort=<nonce>`.
    Abort,
    /// `crossfade.dev/force-abort=<nonce>` (`crossfade abort --force --kube`).
    ForceAbort,
    /// `crossfade.dev/retry=<nonce>`.
    Retry,
    /// `crossfade.dev/paused=true`.
    Pause,
    /// `crossfade.dev/paused=false` and `crossfade.dev/resume=<nonce>` (a pause the analysis
    /// made is resumed too).
    Resume,
}

/// What [`send`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    /// The command.
    pub verb: Verb,
    /// `namespace/name` of the Deployment annotated.
    pub deployment: String,
    /// The annotations written, key and value.
    pub annotations: Vec<(&'static str, String)>,
}

/// [`OpsError::Refused`] for an answer of the API server (`error` is `kube::Error::Api`), else
/// [`OpsError::Api`] (the server not reached: kept as the source, so that the CLI names the
/// server and where its address came from).
fn api_error(what: String, needs: String, error: kube::Error) -> OpsError {
    match error {
        kube::Error::Api(ref status) => OpsError::Refused {
            what,
            needs,
            code: status.code,
            message: super::api_error_words(&error),
        },
        source => OpsError::Api { what, source },
    }
}

/// [`OpsError::Refused`]'s words: `403 Forbidden: <message>`, with the grant `needs` for a 403
/// (trial 30: `crossfade status --kube` without RBAC printed kube's `ApiError: ...: Forbidden
/// (Status { status: Some(Failure), code: 403, ... })`).
fn refused_words(code: u16, message: &str, needs: &str) -> String {
    let hint = match code {
        403 => format!(
            "; the user of the kubeconfig (or the pod's ServiceAccount) needs {needs} (docs/kubernetes.md, \"From the command line\")"
        ),
        401 => "; the API server refused the kubeconfig's credentials".to_owned(),
        _ => String::new(),
    };
    format!("{message}{hint}")
}

/// Why a command could not be given or seen through.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// No TrafficShift of that name.
    #[error(
        "trafficshift {namespace}/{name} not found (kubectl get trafficshifts -n {namespace})"
    )]
    NotFound {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// No TrafficShift of that name, and the Deployment of that name tells why: its
    /// `crossfade.dev/*` annotations were refused, it is not managed, or no controller made it.
    #[error("trafficshift {namespace}/{name} not found{why}")]
    NotMade {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// `: the crossfade.dev annotations of deployment ... are refused ...` or `, although ...`.
        why: String,
    },
    /// The API server could not be reached, or its answer could not be read.
    #[error("{what}: {}", crate::kube::api_error_words(source))]
    Api {
        /// The request, e.g. `annotate deployment shop/web`.
        what: String,
        /// The client's error.
        source: kube::Error,
    },
    /// The API server refused a request. Said as `403 Forbidden: <its message>`, with what to
    /// grant for a 403 (kube's own text of it ends with a debug dump of the whole `Status`).
    #[error("{what}: {}", refused_words(*code, message, needs))]
    Refused {
        /// The request, e.g. `annotate deployment shop/web`.
        what: String,
        /// The RBAC verb and resource the request needs, e.g. `patch on deployments.apps in
        /// namespace shop`: said for a 403.
        needs: String,
        /// The HTTP status, e.g. 403.
        code: u16,
        /// The answer in words ([`super::api_error_words`]): `403 Forbidden: <its message>`.
        message: String,
    },
    /// The TrafficShift does not own its Deployment (`Progressing=False` reason `Conflict`):
    /// a command written on the Deployment would reach the one that does; or no rollout runs for
    /// it (`UpToDate`, `DeploymentMissing`: [`not_started`]), so none would act on the command.
    #[error("trafficshift {namespace}/{name} does not run: {message}; nothing was written")]
    NotOwner {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The condition's message, naming the TrafficShift that owns the Deployment.
        message: String,
    },
    /// The TrafficShift does not decode (a field of the wrong type, a duration over 366 days):
    /// no controller acts on a command for it until it is fixed (`InvalidSpec`).
    #[error("trafficshift {namespace}/{name} does not decode: {problem}; no controller acts on a command for it until the field is fixed (kubectl edit trafficshift {name} -n {namespace})")]
    Undecodable {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The field and what is wrong with it.
        problem: super::crd::DecodeError,
    },
    /// The TrafficShift's running rollout record was written by an older version of crossfade
    /// and names no target Deployment, and none can be told (the rule of the controller,
    /// `kube/shift/older.rs`: the spec has changed since that rollout started, and Service
    /// `<name>-blue` selects no one Deployment's pods): a command written on a Deployment might
    /// not reach the rollout. The controller shows the same words in condition
    /// `Progressing=False`, reason [`super::shift::TARGET_UNKNOWN`].
    #[error("trafficshift {namespace}/{name}: the controller has not named the deployment its rollout acts on yet: {message}; nothing was written")]
    TargetUnknown {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// Why, and how to name it (`kubectl edit ... --subresource=status`).
        message: String,
    },
    /// The API server took the connection but did not answer a request of a command within the
    /// time given (kube bounds only the connection: session 41).
    #[error("no answer within {}s to {request}{after}", waited.as_secs())]
    NoAnswer {
        /// What was asked, e.g. `the read of trafficshift shop/web` or `the write of
        /// crossfade.dev/abort=<nonce> on deployment shop/web`.
        request: String,
        /// How long it was waited for.
        waited: Duration,
        /// What to make of it: for a read, whether the server is one; for the write, that it may
        /// have been recorded and how to check.
        after: String,
    },
    /// The controller did not record the command in time.
    #[error("{annotations} written on deployment {deployment}, but no controller acted on it within {waited:?}; is `crossfade controller --kube` running and watching namespace {namespace}?")]
    NotActed {
        /// `key=value` pairs written.
        annotations: String,
        /// `namespace/name`.
        deployment: String,
        /// The TrafficShift's namespace.
        namespace: String,
        /// How long it waited.
        waited: Duration,
    },
}

// === impl Verb ===

impl Verb {
    /// The verb as the CLI spells it (`abort --force` for [`Verb::ForceAbort`]).
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Promote => "promote",
            Verb::Abort => "abort",
            Verb::ForceAbort => "abort --force",
            Verb::Retry => "retry",
            Verb::Pause => "pause",
            Verb::Resume => "resume",
        }
    }

    /// The annotations that give this command, with `nonce` where one is needed.
    pub fn annotations(self, nonce: &str) -> Vec<(&'static str, String)> {
        match self {
            Verb::Promote => vec![(PROMOTE, nonce.to_owned())],
            Verb::Abort => vec![(ABORT, nonce.to_owned())],
            Verb::ForceAbort => vec![(FORCE_ABORT, nonce.to_owned())],
            Verb::Retry => vec![(RETRY, nonce.to_owned())],
            Verb::Pause => vec![(PAUSED, "true".to_owned())],
            Verb::Resume => vec![(PAUSED, "false".to_owned()), (RESUME, nonce.to_owned())],
        }
    }

    /// Whether `seen` shows this command (as `sent`) acted on.
    fn acted(self, sent: &Sent, seen: &CommandsSeen) -> bool {
        let value = |key: &str| {
            sent.annotations
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v)
        };
        match self {
            Verb::Promote => seen.promote.as_ref() == value(PROMOTE),
            Verb::Abort => seen.abort.as_ref() == value(ABORT),
            Verb::ForceAbort => seen.force_abort.as_ref() == value(FORCE_ABORT),
            Verb::Retry => seen.retry.as_ref() == value(RETRY),
            Verb::Pause => seen.paused == Some(true),
            Verb::Resume => seen.resume.as_ref() == value(RESUME),
        }
    }
}

/// A fresh nonce: the UTC time to the second and 6 random hex digits, `20261130T101502Z-9f3a2c`
/// (unique per call in practice; readable in `kubectl describe`).
pub fn nonce(now: SystemTime) -> String {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    hasher.write_u128(nanos.as_nanos());
    hasher.write_u32(std::process::id());
    let stamp = Timestamp::try_from(now).map_or_else(
        |_| "00000000T000000Z".to_owned(),
        |t| t.strftime("%Y%m%dT%H%M%SZ").to_string(),
    );
    format!("{stamp}-{:06x}", hasher.finish() & 0xff_ffff)
}

/// Writes `verb`'s annotations (JSON merge patch, field manager `crossfade`) on the target
/// Deployment of TrafficShift `namespace/name`, with a fresh [`nonce`].
///
/// # Errors
/// [`OpsError::NotFound`] without such a TrafficShift, [`OpsError::Undecodable`] for one that
/// does not decode and [`OpsError::TargetUnknown`] for a running record of an older version
/// whose target cannot be told (nothing is written), [`OpsError::Api`] when a request fails (the
/// Deployment missing included), [`OpsError::NoAnswer`] when a request (the read of the
/// TrafficShift, of the target of an older record, or the write of the annotations) is not
/// answered within [`ANSWER`]; a write not answered may still have been recorded, and says so.
pub async fn send(
    client: &Client,
    namespace: &str,
    name: &str,
    verb: Verb,
) -> Result<Sent, OpsError> {
    let answer = ANSWER;
    let shift = get_commanded(client, namespace, name, Record::Running, answer).await?;
    if let Some(message) = conflict(&shift).or_else(|| not_started(&shift)) {
        return Err(OpsError::NotOwner {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            message,
        });
    }
    let deployment = commanded_deployment(&shift);
    let annotations = verb.annotations(&nonce(SystemTime::now()));
    let map: serde_json::Map<String, serde_json::Value> = annotations
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    let patch = json!({ "metadata": { "annotations": map } });
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    let written: Vec<String> = annotations
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let request = format!(
        "the write of {} on deployment {namespace}/{deployment}",
        written.join(" ")
    );
    let after = format!(
        "; the command may or may not have been recorded: check the annotations of \
         `kubectl get deployment {deployment} -n {namespace} -o yaml`, and the last command of \
         `crossfade status --kube -n {namespace} {name}`, before sending it again"
    );
    let merge = Patch::Merge(&patch);
    let write = api.patch(&deployment, &params, &merge);
    answered(answer, request, after, write)
        .await?
        .map_err(|source| {
            api_error(
                format!("annotate deployment {namespace}/{deployment}"),
                format!("patch on deployments.apps in namespace {namespace}"),
                source,
            )
        })?;
    Ok(Sent {
        verb,
        deployment: format!("{namespace}/{deployment}"),
        annotations,
    })
}

/// The Deployment whose annotations the rollout of `shift` takes as commands: while a rollout
/// runs (in `status.rolloutState`, not ended), its own target Deployment, which a newer spec
/// naming another does not change until it has ended (`ShiftRecord::target`; [`get_commanded`]
/// names it in a record of an older version that does not); else `spec.deployment`. Before (session 35), always `spec.deployment`: after an edit of it, a
/// command (a force-abort out of a capacity wait) went to a Deployment the rollout does not read,
/// and was never acted on.
fn commanded_deployment(shift: &TrafficShift) -> String {
    super::store::ShiftRecord::from_status(shift)
        .filter(|r| !r.rollout.is_terminal())
        .map_or_else(
            || shift.spec.deployment.clone(),
            |r| r.target(shift).to_owned(),
        )
}

/// Which rollout record lets [`get_commanded`] answer for a TrafficShift that does not decode.
#[derive(Clone, Copy)]
enum Record {
    /// One still running: a command is sent to it.
    Running,
    /// Any: whether a command sent was acted on is in it, also once the rollout has ended.
    Any,
}

/// TrafficShift `namespace/name` as a command needs it: [`get`]'s; for one that does not decode
/// while a rollout of an earlier generation still runs from its record (being aborted, or
/// finishing after promotion, which takes the commands on its target Deployment:
/// `kube/shift.rs`, `supersede_invalid`), the TrafficShift that rollout rolls out, with the
/// object's metadata and status (with `record` [`Record::Any`], also once it has ended).
///
/// With [`Record::Running`], a running record of an older version that names no target
/// Deployment is given the one the controller gives it ([`super::shift::name_older_target`]): the
/// spec's when the spec has not changed since the rollout started, else the one Service
/// `<name>-blue` selects. Before (session 36), the live `spec.deployment` was taken: after an
/// edit of it, the command went to a Deployment that rollout does not read.
///
/// # Errors
/// As [`get`]: [`OpsError::Undecodable`] for one that does not decode with no such record;
/// [`OpsError::TargetUnknown`] for an older record whose target cannot be told, and
/// [`OpsError::Refused`] or [`OpsError::Api`] when the Service or the Deployments it is told by
/// cannot be read.
async fn get_commanded(
    client: &Client,
    namespace: &str,
    name: &str,
    record: Record,
    answer: Duration,
) -> Result<TrafficShift, OpsError> {
    let api = super::shift::invalid::api(client.clone(), namespace);
    let read = format!("the read of trafficshift {namespace}/{name}");
    let got = answered(answer, read, UNANSWERED_READ.to_owned(), api.get_opt(name)).await?;
    let mut object = found(got, namespace, name)?;
    if matches!(record, Record::Running) {
        let older = format!("service {namespace}/{name}-blue and the deployments of namespace {namespace} (the target of a rollout record of an older version)");
        let named = super::shift::name_older_target(client, &mut object);
        let reads = format!("the reads of {older}");
        let named = answered(answer, reads, UNANSWERED_READ.to_owned(), named);
        let named = named.await?.map_err(|source| {
            api_error(
                format!("read {older}"),
                format!("get on services and list on deployments.apps in namespace {namespace}"),
                source,
            )
        })?;
        if let super::shift::OlderTarget::Unknown(message) = named {
            return Err(OpsError::TargetUnknown {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                message,
            });
        }
    }
    super::shift::invalid::typed(&object).or_else(|problem| {
        let running = super::shift::record_in(&object)
            .filter(|r| matches!(record, Record::Any) || !r.rollout.is_terminal());
        running
            .map(|record| super::shift::of_record(&object, &record))
            .ok_or_else(|| OpsError::Undecodable {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                problem,
            })
    })
}

/// How long the API server has to answer each request of [`send`] (kube bounds only the
/// connection: its `Config::read_timeout` is `None` by default, and its `write_timeout` bounds
/// only the sending of a request). Before (session 41), `crossfade pause --kube` bounded the
/// whole of `send` only and said "no answer ... to the pause command", not which request, nor
/// that a write not answered may have been recorded.
pub const ANSWER: Duration = Duration::from_secs(30);

/// What [`OpsError::NoAnswer`] adds for a read not answered.
const UNANSWERED_READ: &str =
    " (the server took the connection: is it a Kubernetes API server, and is it up?)";

/// `request`'s result, or [`OpsError::NoAnswer`] naming `what` (followed by `after`) when it is
/// not answered within `answer`.
async fn answered<T>(
    answer: Duration,
    what: String,
    after: String,
    request: impl std::future::Future<Output = T>,
) -> Result<T, OpsError> {
    tokio::time::timeout(answer, request)
        .await
        .map_err(|_| OpsError::NoAnswer {
            request: what,
            waited: answer,
            after,
        })
}

/// The message of `shift`'s `Progressing=False` condition with reason `Conflict` (another
/// TrafficShift owns its Deployment), if it shows one for its current spec generation.
pub fn conflict(shift: &TrafficShift) -> Option<String> {
    let status = shift.status.as_ref()?;
    if status.observed_generation != shift.metadata.generation {
        return None;
    }
    status
        .conditions
        .iter()
        .find(|c| {
            c.type_ == super::shift::PROGRESSING
                && c.reason == "Conflict"
                && c.status == super::crd::ConditionStatus::False
        })
        .map(|c| c.message.clone())
}

/// The message of `shift`'s `Progressing=False` condition when no rollout runs for its current
/// spec generation because none has anything to do: reason `UpToDate` (the target already runs
/// its images), `DeploymentMissing` (no Deployment yet) or `InvalidObject` (a name no Service can
/// be made after, or an object that does not decode outside `spec`). A command would be recorded
/// by no one.
pub fn not_started(shift: &TrafficShift) -> Option<String> {
    let status = shift.status.as_ref()?;
    if status.observed_generation != shift.metadata.generation {
        return None;
    }
    let reasons = [
        super::shift::UP_TO_DATE,
        super::shift::DEPLOYMENT_MISSING,
        super::shift::INVALID_OBJECT,
    ];
    status
        .conditions
        .iter()
        .find(|c| {
            c.type_ == super::shift::PROGRESSING
                && reasons.contains(&c.reason.as_str())
                && c.status == super::crd::ConditionStatus::False
        })
        .map(|c| c.message.clone())
}

/// Waits up to `timeout` until the controller has recorded `sent` in the TrafficShift's
/// `status.commands` (reading it every 250 ms); returns the TrafficShift as it was then.
///
/// # Errors
/// [`OpsError::NotActed`] after `timeout`, also when a read is still unanswered then; or the
/// errors of reading it.
pub async fn wait_acted(
    client: &Client,
    namespace: &str,
    name: &str,
    sent: &Sent,
    timeout: Duration,
) -> Result<TrafficShift, OpsError> {
    let deadline = crossfade_proxy::duration::later(tokio::time::Instant::now(), timeout);
    loop {
        // A read still unanswered at the deadline is given up: `--wait` bounds the whole wait.
        // The rollout may have ended with the command (a force-abort): its record still says
        // whether the command was acted on.
        // Each read is also bounded by the whole wait, so the deadline comes first.
        let read = get_commanded(client, namespace, name, Record::Any, timeout);
        let read = tokio::time::timeout_at(deadline, read).await;
        let shift = match read {
            Ok(shift) => Some(shift?),
            Err(_) => None,
        };
        let seen = shift
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .and_then(|s| s.commands.as_ref());
        if let (Some(shift), true) = (&shift, seen.is_some_and(|seen| sent.verb.acted(sent, seen)))
        {
            return Ok(shift.clone());
        }
        if tokio::time::Instant::now() >= deadline {
            let annotations: Vec<String> = sent
                .annotations
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            return Err(OpsError::NotActed {
                annotations: annotations.join(" "),
                deployment: sent.deployment.clone(),
                namespace: namespace.to_owned(),
                waited: timeout,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The controller's answer to `sent`, when `status.commands.last` is about it: `Some(outcome)`.
pub fn outcome<'a>(shift: &'a TrafficShift, sent: &Sent) -> Option<&'a CommandOutcome> {
    let last = shift.status.as_ref()?.commands.as_ref()?.last.as_ref()?;
    sent.annotations
        .iter()
        .any(|(k, v)| last.annotation == *k && last.value == *v)
        .then_some(last)
}

/// TrafficShift `namespace/name`, read untyped and decoded here, so that one that does not decode
/// is named by its field (a typed read failed with kube's `Error deserializing response`, after a
/// WARN line holding the whole object; trial 34).
///
/// # Errors
/// [`OpsError::NotFound`], [`OpsError::Undecodable`] or [`OpsError::Api`].
pub async fn get(client: &Client, namespace: &str, name: &str) -> Result<TrafficShift, OpsError> {
    let api = super::shift::invalid::api(client.clone(), namespace);
    let object = found(api.get_opt(name).await, namespace, name)?;
    super::shift::invalid::typed(&object).map_err(|problem| OpsError::Undecodable {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        problem,
    })
}

/// A `get_opt` of TrafficShift `namespace/name` as [`get`] answers it: the object, or
/// [`OpsError::NotFound`] / [`OpsError::Api`].
fn found<K>(
    got: Result<Option<K>, kube::Error>,
    namespace: &str,
    name: &str,
) -> Result<K, OpsError> {
    match got {
        Ok(Some(object)) => Ok(object),
        Ok(None) => Err(OpsError::NotFound {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }),
        Err(source) => Err(api_error(
            format!("get trafficshift {namespace}/{name}"),
            format!("get on trafficshifts.crossfade.dev in namespace {namespace}"),
            source,
        )),
    }
}

/// `status --kube NAME`'s text for TrafficShift `namespace/name`: [`describe`] when it decodes;
/// else [`describe_invalid`] with the field and serde's reason ([`super::crd::decode`]), as the
/// controller shows it. Read untyped, so that one that does not decode is still shown.
///
/// # Errors
/// [`OpsError::NotMade`] when it does not exist and the Deployment of that name says why
/// ([`not_made`]), [`OpsError::NotFound`] otherwise, or [`OpsError::Api`].
pub async fn status_text(client: &Client, namespace: &str, name: &str) -> Result<String, OpsError> {
    let got = super::shift::invalid::api(client.clone(), namespace)
        .get_opt(name)
        .await;
    let object = match found(got, namespace, name) {
        Err(OpsError::NotFound { .. }) => return Err(not_made(client, namespace, name).await),
        other => other?,
    };
    Ok(match super::shift::invalid::typed(&object) {
        Ok(shift) => describe(&shift),
        Err(problem) => describe_undecodable(&object, &problem),
    })
}

/// A TrafficShift that does not decode (`object`, untyped), for people: [`describe_invalid`]
/// once no rollout runs; while one of an earlier generation still runs (it is being aborted, or
/// finishes after promotion, from its record: `kube/shift.rs`, `reconcile_undecodable`), the
/// field and reason, then that rollout's status as the controller wrote it (phase, weights,
/// message, conditions), as [`describe`] shows it. Before, such a rollout was shown as
/// `Progressing=False (InvalidSpec)` "nothing is rolled out until it is fixed", with no phase or
/// weights, while traffic was still on its preview.
pub fn describe_undecodable(object: &DynamicObject, problem: &DecodeError) -> String {
    let namespace = object.metadata.namespace.as_deref().unwrap_or("default");
    let name = object.metadata.name.as_deref().unwrap_or_default();
    let status = object
        .data
        .get("status")
        .and_then(|s| serde_json::from_value::<TrafficShiftStatus>(s.clone()).ok());
    let running = |s: &&TrafficShiftStatus| {
        s.phase.is_some_and(|p| {
            !matches!(
                p,
                Phase::Pending | Phase::Completed | Phase::RolledBack | Phase::Aborted
            )
        })
    };
    let Some(status) = status.as_ref().filter(running) else {
        return describe_invalid(namespace, name, problem);
    };
    let spec = super::crd::TrafficShiftSpec {
        deployment: String::new(),
        images: Default::default(),
        rollout: Default::default(),
        route: None,
    };
    let mut shift = TrafficShift::new(name, spec);
    shift.metadata = object.metadata.clone();
    let mut out = format!(
        "trafficshift {namespace}/{name}\n{}",
        invalid_lines(problem)
    );
    describe_status(&mut out, &shift, status);
    out
}

/// Why there is no TrafficShift `namespace/name`, from the Deployment of that name (the one the
/// annotation trigger would make it for; trial 10, K14): [`OpsError::NotMade`] when its
/// annotations were refused (the trigger's own words, [`super::trigger::desired_shift`], which the
/// controller also publishes as a Warning Event `InvalidAnnotation` on the Deployment), when it
/// asks for an image without being managed, or when it asks for a rollout no controller has made
/// yet; else (no such Deployment, no `crossfade.dev/image` annotation, or the Deployment cannot be
/// read) [`OpsError::NotFound`].
async fn not_made(client: &Client, namespace: &str, name: &str) -> OpsError {
    let not_found = OpsError::NotFound {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    };
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let Ok(Some(deploy)) = api.get_opt(name).await else {
        return not_found;
    };
    let why = match super::trigger::desired_shift(&deploy) {
        Err(e) => {
            let problems: Vec<String> = e
                .problems
                .iter()
                .map(ToString::to_string)
                .collect();
            format!(
                ": the crossfade.dev annotations of deployment {namespace}/{name} are refused, so none is made: {} (also a Warning Event InvalidAnnotation on the deployment)",
                problems.join("; ")
            )
        }
        Ok(Some(shift)) => format!(
            ", although deployment {namespace}/{name} asks for one ({}); is `crossfade controller --kube` running and watching namespace {namespace}?",
            shift.spec.images_text()
        ),
        Ok(None) => {
            let annotations = deploy.metadata.annotations.unwrap_or_default();
            let asks = annotations.keys().any(|k| {
                k == super::trigger::IMAGE || k.starts_with(super::trigger::IMAGE_PREFIX)
            });
            if !asks {
                return not_found;
            }
            format!(
                ": deployment {namespace}/{name} has {} annotations but is not managed ({} is not \"true\"), so none is made",
                super::trigger::IMAGE,
                super::trigger::ENABLED
            )
        }
    };
    OpsError::NotMade {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        why,
    }
}

/// `text` with its later lines indented under the item it belongs to: an `InvalidSpec` message
/// lists one problem a line, which printed flush left read as items of the status's own.
fn continued(text: &str) -> String {
    text.replace('\n', "\n    ")
}

/// A TrafficShift that does not decode, for people: its name, `invalid: FIELD: REASON` and the
/// condition the controller sets for it (`Progressing=False` reason `InvalidSpec`, or
/// `InvalidObject` outside `spec`), one item per line.
pub fn describe_invalid(namespace: &str, name: &str, problem: &DecodeError) -> String {
    format!(
        "trafficshift {namespace}/{name}\n{}  condition {}=False ({}): {}\n",
        invalid_lines(problem),
        super::shift::PROGRESSING,
        super::shift::invalid::reason(problem),
        continued(&super::shift::invalid::message(problem)),
    )
}

/// `  invalid: FIELD: REASON`, a line for each field that does not decode (`problem` and its
/// `more`); `(the object)` for a problem of the object itself.
fn invalid_lines(problem: &DecodeError) -> String {
    let mut out = String::new();
    for p in std::iter::once(problem).chain(&problem.more) {
        let field = match p.field.is_empty() {
            true => "(the object)",
            false => &p.field,
        };
        out.push_str(&format!("  invalid: {field}: {}\n", p.reason));
    }
    out
}

/// `Progressing (step 2/4)`; with no step started, `Provisioning`, or the phase and when it
/// came (`Aborting (during provisioning)`); `-` before the controller wrote a phase. A rollout
/// that completed after a promote before its last step says where it was promoted
/// (`Completed (promoted at step 1/4)`), not a step it never reached nor one it seems stuck at
/// (trial 10, K18). `status.step` counts from 0; this text, like the Events, from 1.
fn phase_text(shift: &TrafficShift, status: &TrafficShiftStatus) -> String {
    let Some(phase) = status.phase else {
        return "-".into();
    };
    match (status.step, phase) {
        (Some(step), _) => {
            // `stepProgress` counts the rollout's own steps; a status without it (written by an
            // older controller) is counted against the spec.
            let shown = status.step_progress.clone().unwrap_or_else(|| {
                let steps = shift.spec.rollout.steps.len();
                let steps = if steps == 0 { 4 } else { steps }; // RolloutConfig's default has 4 steps
                super::shift::step_progress(step, steps)
            });
            let skipped = shown
                .split_once('/')
                .is_some_and(|(number, steps)| number != steps);
            match phase {
                Phase::Completed if skipped => format!("{phase:?} (promoted at step {shown})"),
                _ => format!("{phase:?} (step {shown})"),
            }
        }
        (None, Phase::Pending | Phase::Provisioning) => format!("{phase:?}"),
        (None, _) => format!("{phase:?} (during provisioning)"),
    }
}

/// When the rollout in status is of an older spec generation than the header's (a new spec
/// that waits for a rollout superseded after its promotion, which finishes first; or one that
/// started none once it had ended: invalid, or up to date): which generation and images the
/// phase below belongs to (and its Deployment, when the spec now names another), and whether it
/// has ended (trial 10, K18: the header showed v4 and the phase was v3's). Read from
/// `status.rolloutState`'s `generation`, `images` and `deployment`, this crate's own record
/// ([`super::store::ShiftRecord`]).
fn older_rollout(shift: &TrafficShift, status: &TrafficShiftStatus) -> Option<String> {
    let spec = shift.metadata.generation?;
    let record = status.rollout_state.as_ref()?;
    let rolling = record.get("generation")?.as_i64()?;
    if rolling >= spec {
        return None;
    }
    let images: Vec<String> = record
        .get("images")
        .and_then(|i| i.as_object())
        .map(|m| {
            m.iter()
                .filter_map(|(c, i)| Some(format!("{c}={}", i.as_str()?)))
                .collect()
        })
        .unwrap_or_default();
    // The rollout's own target Deployment, when a newer spec names another (a record of an
    // older version does not say).
    let target = record
        .get("deployment")
        .and_then(|d| d.as_str())
        .filter(|d| *d != shift.spec.deployment);
    let words: Vec<String> = target
        .map(|d| format!("deployment {d}"))
        .into_iter()
        .chain(images)
        .collect();
    let images = if words.is_empty() {
        String::new()
    } else {
        format!(" ({})", words.join(", "))
    };
    let ended = matches!(
        status.phase,
        Some(Phase::Completed | Phase::RolledBack | Phase::Aborted)
    );
    Some(if ended {
        // No rollout of the newer generation started: it is invalid, or has nothing to roll
        // out (its conditions say which); trial 34.
        format!("last rollout: spec generation {rolling}{images}, ended; generation {spec} started none")
    } else {
        format!(
            "rolling out spec generation {rolling}{images}: generation {spec} waits for it to end"
        )
    })
}

/// A TrafficShift for people: target and images, phase, step, weights, message, conditions,
/// last verdict and the last command's outcome, one item per line.
pub fn describe(shift: &TrafficShift) -> String {
    let mut out = String::new();
    let ns = shift.metadata.namespace.as_deref().unwrap_or("default");
    let name = shift.metadata.name.as_deref().unwrap_or_default();
    let _ = writeln!(out, "trafficshift {ns}/{name}");
    let _ = writeln!(
        out,
        "  deployment: {} -> {}",
        shift.spec.deployment,
        shift.spec.images_text()
    );
    let Some(status) = &shift.status else {
        let _ = writeln!(out, "  no status yet: no controller has seen it");
        return out;
    };
    describe_status(&mut out, shift, status);
    out
}

/// [`describe`]'s lines for `status`, the status of `shift`, appended to `out`.
fn describe_status(out: &mut String, shift: &TrafficShift, status: &TrafficShiftStatus) {
    if let Some(line) = older_rollout(shift, status) {
        let _ = writeln!(out, "  {line}");
    }
    let _ = writeln!(out, "  phase: {}", phase_text(shift, status));
    if let Some(w) = &status.weights {
        let _ = writeln!(
            out,
            "  weights: active {} preview {} (generation {})",
            w.active, w.preview, w.generation
        );
    }
    if let Some(preview) = &status.preview_deployment {
        let _ = writeln!(out, "  preview deployment: {preview}");
    }
    if let Some(message) = status.message.as_deref().filter(|m| !m.is_empty()) {
        let _ = writeln!(out, "  message: {}", continued(message));
    }
    if let Some(v) = &status.last_verdict {
        let _ = writeln!(out, "  last verdict: {:?}: {}", v.outcome, v.summary);
    }
    for c in &status.conditions {
        let _ = writeln!(
            out,
            "  condition {}={:?} ({}){}",
            c.type_,
            c.status,
            c.reason,
            if c.message.is_empty() {
                String::new()
            } else {
                format!(": {}", continued(&c.message))
            }
        );
    }
    // A command given to an earlier rollout says nothing of this one (trial 10, K18): it is
    // shown only as that rollout's. A record without rollout ids (an older controller) is shown.
    if let Some(last) = status.commands.as_ref().and_then(|c| c.last.as_ref()) {
        let verdict = if last.accepted { "accepted" } else { "refused" };
        let label = match (last.rollout_id, status.rollout_id) {
            (Some(given), Some(current)) if given != current => {
                format!("last command (to rollout {given}; this is rollout {current})")
            }
            _ => "last command".to_owned(),
        };
        let _ = writeln!(
            out,
            "  {label}: {}={} {verdict}: {}",
            last.annotation, last.value, last.message
        );
    }
}

#[cfg(test)]
mod api_tests;
#[cfg(test)]
mod tests;
