//! Route reloads from a config file (SIGHUP): the file's routes replace the ones in force, but
//! weights set at runtime survive an unrelated edit.
//!
//! The rule, per route of the new file:
//! - a route also in force whose weights **in the file** are the same as when the file was last
//!   loaded keeps the weights in force (set since through the admin API or by a rollout): the
//!   operator did not touch them, so a reload for another reason (a new route, a new endpoint)
//!   must not undo a traffic shift;
//! - a route whose weights in the file changed since the last load gets the file's weights: the
//!   operator edited them on purpose;
//! - a route new in the file gets the file's weights; a route no longer in the file is removed.
//!
//! Kept weights that the edited route can no longer take (weight on a backend whose endpoints
//! the file removed) give way to the file's, and the report says why. The baseline, the weights
//! of the file as last loaded ([`FileWeights`]), lives in the [`Proxy`] and passes to a successor
//! at a binary upgrade ([`crate::handover`]), so that its first reload judges by the same file.
//!
//! Everything but `routes` is read at start only; [`not_reloaded`] names what a reloaded file
//! changed there, so that the caller can say it was not applied.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::PoisonError;

use serde::{Deserialize, Serialize};

use serde_json::Value;

use crate::config::{check_routes, ConfigError, ProxyConfig, RouteConfig};
use crate::error::{Error, Result};
use crate::handle::Proxy;
use crate::weight::{Percent, Weights};

/// Each route's weights as the config file gave them when it was last loaded (resolved, in
/// basis points: see [`RouteConfig::weights`]), by route name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FileWeights(BTreeMap<String, Weights>);

/// What a reload did to the weights of the routes in force, for the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteReload {
    /// The routing table generation published.
    pub generation: u64,
    /// Routes whose weights in force differ from the file's, and what became of them, in file
    /// order. Routes whose weights in force equal the file's are not listed.
    pub weights: Vec<WeightOutcome>,
    /// Routes new in the file.
    pub added: Vec<String>,
    /// Routes in force that the file no longer has, removed.
    pub removed: Vec<String>,
}

/// One route whose weights in force differed from the file's at a reload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightOutcome {
    /// The route's name.
    pub route: String,
    /// The weights in force before the reload (set at runtime).
    pub in_force: Weights,
    /// The weights the file gives.
    pub file: Weights,
    /// Which won, and why.
    pub decision: WeightDecision,
}

/// Which weights a reloaded route got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WeightDecision {
    /// The weights in force were kept: the file's weights for the route did not change since the
    /// last load.
    Kept,
    /// The file's weights replaced them: the operator changed them in the file since the last
    /// load.
    FileChanged,
    /// The file's weights replaced them: the route as edited cannot take the weights in force
    /// (the problem is given, e.g. weight on a backend without endpoints).
    CannotKeep(String),
}

// === impl FileWeights ===

impl FileWeights {
    /// The resolved weights of every route in `routes` (a config file's).
    pub fn of(routes: &[RouteConfig]) -> FileWeights {
        let weights = routes.iter().map(|r| (r.name.clone(), r.weights()));
        FileWeights(weights.collect())
    }

    /// The weights the file gave `route` at its last load, if it had that route.
    pub fn get(&self, route: &str) -> Option<Weights> {
        self.0.get(route).copied()
    }
}

// === impl Proxy ===

impl Proxy {
    /// Replaces the routes in force with `file`'s (a config file just read), keeping the runtime
    /// weights of routes whose weights in the file did not change since the last load (see the
    /// module docs), in one table generation; then makes `file`'s weights the baseline of the
    /// next reload.
    ///
    /// # Errors
    /// [`crate::Error::Config`] when the resulting routes break a rule; nothing changes then, the
    /// baseline included.
    pub fn reload_routes(&self, file: Vec<RouteConfig>) -> Result<RouteReload> {
        let mut report = RouteReload::default();
        let next = FileWeights::of(&file);
        let previous = self.file_weights();
        let published = self.update(|routes| {
            let baseline = self.file_weights();
            let merged = merge(routes, file, &baseline, &mut report);
            let mut problems = Vec::new();
            check_routes(&merged, &mut problems);
            ConfigError::from_problems(problems)?;
            *routes = merged;
            // Under the writer lock, and only once the routes are known to be valid: the state
            // file (when there is one) saves the new baseline with the routes.
            self.set_file_weights(next);
            Ok(())
        });
        // Nothing changed when the save failed: the baseline neither.
        if let Err(Error::WeightsNotSaved(_)) = &published {
            self.set_file_weights(previous);
        }
        report.generation = published?;
        Ok(report)
    }

    /// The weights of the config file as last loaded: the baseline of the next
    /// [`Proxy::reload_routes`].
    pub fn file_weights(&self) -> FileWeights {
        let weights = self.shared.file_weights.lock();
        weights.unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Sets the baseline of the next [`Proxy::reload_routes`]: a successor at a binary upgrade
    /// takes its predecessor's, since the routes in force are the predecessor's too.
    pub fn set_file_weights(&self, weights: FileWeights) {
        let mut baseline = self
            .shared
            .file_weights
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *baseline = weights;
    }
}

/// The file's routes, with the weights in force carried over by the rule of the module docs;
/// `report` gets what was decided.
fn merge(
    live: &[RouteConfig],
    file: Vec<RouteConfig>,
    baseline: &FileWeights,
    report: &mut RouteReload,
) -> Vec<RouteConfig> {
    let in_file = |name: &str| file.iter().any(|r| r.name == name);
    report.removed = live
        .iter()
        .filter(|r| !in_file(&r.name))
        .map(|r| r.name.clone())
        .collect();
    let mut merged = Vec::with_capacity(file.len());
    for route in file {
        let Some(current) = live.iter().find(|r| r.name == route.name) else {
            report.added.push(route.name.clone());
            merged.push(route);
            continue;
        };
        let (in_force, from_file) = (current.weights(), route.weights());
        if in_force == from_file {
            merged.push(route);
            continue;
        }
        let (route, decision) = if baseline.get(&route.name) == Some(from_file) {
            keep(route, in_force)
        } else {
            (route, WeightDecision::FileChanged)
        };
        report.weights.push(WeightOutcome {
            route: route.name.clone(),
            in_force,
            file: from_file,
            decision,
        });
        merged.push(route);
    }
    merged
}

/// `route` with `weights` when it can take them, else as it is, with the reason.
fn keep(route: RouteConfig, weights: Weights) -> (RouteConfig, WeightDecision) {
    let mut kept = route.clone();
    kept.set_weights(weights);
    let mut problems = Vec::new();
    check_routes(std::slice::from_ref(&kept), &mut problems);
    if problems.is_empty() {
        return (kept, WeightDecision::Kept);
    }
    let messages: Vec<String> = problems
        .iter()
        .map(|p| p.path.replacen("routes[0].", "", 1) + ": " + &p.message)
        .collect();
    (route, WeightDecision::CannotKeep(messages.join("; ")))
}

// === impl WeightOutcome ===

impl fmt::Display for WeightOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (route, runtime, file) = (&self.route, split(self.in_force), split(self.file));
        match &self.decision {
            WeightDecision::Kept => write!(
                f,
                "route {route}: kept the weights in force ({runtime}): the file's ({file}) did not change since the last load"
            ),
            WeightDecision::FileChanged => write!(
                f,
                "route {route}: weights {runtime} replaced by the file's ({file}), changed in the file since the last load"
            ),
            WeightDecision::CannotKeep(why) => write!(
                f,
                "route {route}: weights {runtime} replaced by the file's ({file}): the route as edited cannot keep them ({why})"
            ),
        }
    }
}

/// The settings that differ between the config in force (`in_force`, read at start) and a
/// reloaded `file`, by field path (`listen`, `limits.max_connections`, `tls.cert`), sorted:
/// everything but `routes`, which a reload does not apply (listeners are bound, limits,
/// upstream settings and the TLS file names are read at start; the TLS files' contents are
/// reloaded). A section added or removed as a whole (`tls`) is named as a whole.
pub fn not_reloaded(in_force: &ProxyConfig, file: &ProxyConfig) -> Vec<String> {
    let (Ok(old), Ok(new)) = (serde_json::to_value(in_force), serde_json::to_value(file)) else {
        return Vec::new();
    };
    let (Some(old), Some(new)) = (old.as_object(), new.as_object()) else {
        return Vec::new();
    };
    let mut changed = Vec::new();
    for key in keys(old, new) {
        if key == "routes" {
            continue;
        }
        match (old.get(key), new.get(key)) {
            (Some(Value::Object(a)), Some(Value::Object(b))) => changed.extend(
                keys(a, b)
                    .filter(|k| a.get(*k) != b.get(*k))
                    .map(|k| format!("{key}.{k}")),
            ),
            (a, b) if a != b => changed.push(key.to_owned()),
            _ => {}
        }
    }
    changed.sort();
    changed
}

/// The keys of `a`, then those only in `b`.
fn keys<'a>(
    a: &'a serde_json::Map<String, Value>,
    b: &'a serde_json::Map<String, Value>,
) -> impl Iterator<Item = &'a str> {
    let extra = b.keys().filter(|k| !a.contains_key(*k));
    a.keys().chain(extra).map(String::as_str)
}

/// `blue 70%, green 30%`.
fn split(weights: Weights) -> String {
    format!(
        "blue {}, green {}",
        Percent(weights.blue),
        Percent(weights.green)
    )
}

#[cfg(test)]
mod tests;
