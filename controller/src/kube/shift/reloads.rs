//! What each TrafficShift's reloads from status in this process are to say: the first load
//! `Restarted`, a reload after a failed reconcile `Reloaded`, once per kind of failure.

use std::collections::HashMap;
use std::sync::Mutex;

use kube::runtime::finalizer::Error as FinalizerError;

use super::machine::Reload;
use super::ShiftError;
use crate::driver::kube::KubeDriverError;
use crate::kube::store::StoreError;

/// The TrafficShifts whose rollout this process has loaded, by uid, with what their reloads are
/// to say ([`Reloads::reload_of`]). An entry goes with its TrafficShift ([`Reloads::forget`]).
#[derive(Debug, Default)]
pub(super) struct Reloads {
    loads: Mutex<HashMap<String, Loads>>,
}

/// What one TrafficShift's reloads in this process are to say.
#[derive(Debug, Default)]
struct Loads {
    /// The kind ([`failure_kind`]) and words of its last failed reconcile's error, since the
    /// last one that succeeded.
    failed: Option<(String, String)>,
    /// The kind of failure whose reload was said (`Reloaded`) since then.
    said: Option<String>,
}

/// Why a rollout is reloaded when no failed reconcile was recorded for it (its machine was not
/// in memory though this process had loaded it).
const NOT_IN_MEMORY: &str = "the rollout was not in memory";

// === impl Reloads ===

impl Reloads {
    /// `None` the first time a rollout of TrafficShift `uid` is loaded in this process (its
    /// `Restarted` stands); afterwards, what a reload of it from status is to say: the error of
    /// the failed reconcile that dropped it, to be said unless a reload after that kind of
    /// failure was said already.
    pub(super) fn reload_of(&self, uid: &str) -> Option<Reload> {
        let mut loads = self.loads.lock().ok()?;
        let Some(loads) = loads.get(uid) else {
            loads.insert(uid.to_owned(), Loads::default());
            return None;
        };
        let (kind, error) = loads
            .failed
            .clone()
            .unwrap_or_else(|| (NOT_IN_MEMORY.into(), NOT_IN_MEMORY.into()));
        let say = loads.said.as_ref() != Some(&kind);
        Some(Reload { error, kind, say })
    }

    /// The reload of TrafficShift `uid` after a failure of `kind` was said.
    pub(super) fn said(&self, uid: &str, kind: &str) {
        self.with(uid, |loads| loads.said = Some(kind.to_owned()));
    }

    /// A reconcile of TrafficShift `uid` failed with `error`.
    pub(super) fn failed(&self, uid: &str, error: &FinalizerError<ShiftError>) {
        let failed = (failure_kind(error), error_words(error));
        self.with(uid, |loads| loads.failed = Some(failed));
    }

    /// A reconcile of TrafficShift `uid` succeeded: its failure is forgotten.
    pub(super) fn succeeded(&self, uid: &str) {
        self.with(uid, |loads| *loads = Loads::default());
    }

    /// TrafficShift `uid` is gone: nothing of it is kept (a later object has another uid).
    pub(super) fn forget(&self, uid: &str) {
        if let Ok(mut loads) = self.loads.lock() {
            loads.remove(uid);
        }
    }

    /// Whether anything is kept for TrafficShift `uid`.
    #[cfg(test)]
    pub(super) fn knows(&self, uid: &str) -> bool {
        self.loads.lock().is_ok_and(|l| l.contains_key(uid))
    }

    fn with(&self, uid: &str, change: impl FnOnce(&mut Loads)) {
        if let Some(loads) = self.loads.lock().ok().as_mut().and_then(|l| l.get_mut(uid)) {
            change(loads);
        }
    }
}

/// `error` in words: the reconcile's own error, not the finalizer's wrapping of it.
fn error_words(error: &FinalizerError<ShiftError>) -> String {
    match error {
        FinalizerError::ApplyFailed(e) | FinalizerError::CleanupFailed(e) => e.to_string(),
        e => e.to_string(),
    }
}

/// What failed and how, without what the API server said about it: the object and the operation,
/// and for an answer of the API server its HTTP status and reason (`deployment default/web: patch
/// images: 403 Forbidden`), for any other API error its kind. A reload is said once per kind of
/// failure until a reconcile succeeds: before (session 40) it was once per error text, and a
/// message that changes at every retry (naming a resourceVersion, a time, a request id) was said
/// at every retry. Errors of Crossfade's own words are their words.
pub(super) fn failure_kind(error: &FinalizerError<ShiftError>) -> String {
    match error {
        FinalizerError::ApplyFailed(e) | FinalizerError::CleanupFailed(e) => shift_kind(e),
        FinalizerError::AddFinalizer(e) => format!("add finalizer: {}", api_kind(e)),
        FinalizerError::RemoveFinalizer(e) => format!("remove finalizer: {}", api_kind(e)),
        e => e.to_string(),
    }
}

/// [`failure_kind`] of a reconcile's own error.
fn shift_kind(error: &ShiftError) -> String {
    match error {
        ShiftError::Driver(KubeDriverError::Api {
            object,
            action,
            source,
        }) => format!("{object}: {action}: {}", api_kind(source)),
        ShiftError::Store(StoreError::Api { shift, source }) => {
            format!("trafficshift {shift}: write status: {}", api_kind(source))
        }
        ShiftError::Read { shift, source } => {
            format!("trafficshift {shift}: read: {}", api_kind(source))
        }
        ShiftError::Proxies(e) => {
            let ns = e.namespace.as_deref().unwrap_or("every namespace");
            format!("list the proxies' Leases in {ns}: {}", api_kind(&e.source))
        }
        e => e.to_string(),
    }
}

/// An API error's kind: an answer as its HTTP status and reason (`409 Conflict`), else what kind
/// of failure it was (`no answer`: the server not reached, or the connection broken).
fn api_kind(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => format!("{} {}", status.code, status.reason),
        kube::Error::HyperError(_) | kube::Error::Service(_) => "no answer".into(),
        kube::Error::SerdeError(_) => "an answer that does not decode".into(),
        _ => "a client error".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A status write refused with `code` `reason` and `message`.
    fn refused(code: u16, reason: &str, message: &str) -> FinalizerError<ShiftError> {
        let status = kube::core::Status::failure(message, reason).with_code(code);
        FinalizerError::ApplyFailed(ShiftError::Store(StoreError::Api {
            shift: "default/web".into(),
            source: kube::Error::Api(status.boxed()),
        }))
    }

    /// Session 40: a reload was said once per error text, and an error whose text changes at
    /// every retry (a conflict naming the resourceVersion, a message with a time) was said at
    /// every retry. Now once per kind of failure (object, operation, status and reason); another
    /// kind is said again, and so is the same one after a reconcile that succeeded.
    #[test]
    fn a_reload_is_said_once_per_kind_of_failure_whatever_its_message() {
        let reloads = Reloads::default();
        assert_eq!(reloads.reload_of("u-1"), None, "the first load: Restarted");
        let conflict = |rv: u32| {
            let message = format!("the object has been modified (resourceVersion {rv})");
            refused(409, "Conflict", &message)
        };
        let mut said = Vec::new();
        for error in [
            conflict(11),
            conflict(12),
            refused(500, "InternalError", "etcd"),
        ] {
            reloads.failed("u-1", &error);
            let reload = reloads.reload_of("u-1").expect("a reload");
            if reload.say {
                reloads.said("u-1", &reload.kind);
                said.push(reload.error);
            }
        }
        assert_eq!(
            said,
            [
                "trafficshift default/web: write status: 409 Conflict: the object has been modified (resourceVersion 11)",
                "trafficshift default/web: write status: 500 Internal Server Error: etcd",
            ]
        );
        reloads.succeeded("u-1");
        reloads.failed("u-1", &conflict(13));
        assert!(reloads.reload_of("u-1").expect("a reload").say);
    }

    /// Session 40: a TrafficShift's entry was kept after the TrafficShift went, one per
    /// TrafficShift ever loaded for the life of the process.
    #[test]
    fn a_forgotten_trafficshift_leaves_nothing_and_loads_as_new() {
        let reloads = Reloads::default();
        assert_eq!(reloads.reload_of("u-1"), None);
        reloads.forget("u-1");
        assert!(!reloads.knows("u-1"));
        assert_eq!(reloads.reload_of("u-1"), None);
    }
}
