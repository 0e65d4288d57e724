//! Weights kept across restarts (`state_file`): the document a `crossfade proxy CONFIG` saves at
//! every change of its routing table, and the rule by which a start takes it back.
//!
//! Weights set through the admin API live in the routing table; a plain restart (a crash,
//! `systemctl restart`) would build the table from the config file alone and put the file's
//! weights back (trial 11, L6). With `state_file`, every published table is first saved
//! ([`WeightStore`], installed by [`Proxy::keep_weights_in`]; the caller writes it atomically), and a
//! start applies the saved weights of each route by the rule a SIGHUP reload follows
//! ([`crate::reload`]), with one more condition, since a restart may come with any edit:
//!
//! - a saved route that is in the file with the **same endpoints** in each backend (in any order),
//!   and whose weights **in the file** are those the file gave when it was saved, gets its saved
//!   weights: the operator changed nothing the weights were chosen for;
//! - a saved route whose endpoints or file weights changed since, or that the edited route cannot
//!   take (weight on a backend that lost its endpoints), keeps the file's weights, and the saved
//!   ones are reported as ignored with the reason;
//! - a saved route no longer in the file is reported as ignored; a route of the file that the
//!   document does not have keeps the file's weights.
//!
//! This module is pure: no file is read or written here.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::config::{check_routes, RouteConfig};
use crate::error::{Error, Result};
use crate::handle::Proxy;
use crate::reload::FileWeights;
use crate::weight::{Percent, Slot, Weights};

/// The version of [`SavedWeights`] this build writes and reads.
pub const SAVED_WEIGHTS_VERSION: u32 = 1;

/// The state file's document: per route, the weights in force and what they were chosen for.
///
/// JSON: `{"version": 1, "routes": {"web": {"weights": {"blue": 0, "green": 10000},
/// "file_weights": {"blue": 10000, "green": 0}, "blue": ["127.0.0.1:9001"], "green":
/// ["127.0.0.1:9002"]}}}`; weights in basis points.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedWeights {
    /// The document's format, [`SAVED_WEIGHTS_VERSION`].
    pub version: u32,
    /// By route name.
    pub routes: BTreeMap<String, SavedRoute>,
}

/// One route as saved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedRoute {
    /// The weights in force, in basis points.
    pub weights: Weights,
    /// The weights the config file gave the route at its last load (the reload baseline,
    /// [`FileWeights`]), in basis points: an edit of them in the file since wins at the next start.
    pub file_weights: Weights,
    /// The blue backend's endpoints.
    pub blue: Vec<SocketAddr>,
    /// The green backend's endpoints.
    pub green: Vec<SocketAddr>,
}

/// What a start did with one saved route ([`Proxy::restore_weights`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Restored {
    /// The saved weights replaced the file's.
    Applied {
        /// The route's name.
        route: String,
        /// The weights restored.
        saved: Weights,
        /// The file's weights they replaced.
        file: Weights,
    },
    /// The saved weights were not used; the route (if any) keeps the file's.
    Ignored {
        /// The route's name.
        route: String,
        /// Why, lowercase (`not in the config file`, `green's endpoints changed ...`).
        why: String,
    },
}

/// Where a proxy saves its weights at every change of its routing table (`state_file`).
///
/// [`WeightStore::save`] is called under the routing table's writer lock, before the table is
/// published: a change whose save fails is not made, so an admin API answer of 200 means the
/// weights are on disk.
pub trait WeightStore: Send + Sync + fmt::Debug {
    /// Saves `weights` durably (atomically replacing what was saved before).
    ///
    /// # Errors
    /// A message naming the file and the failure; the change is then refused
    /// ([`Error::WeightsNotSaved`]).
    fn save(&self, weights: &SavedWeights) -> std::result::Result<(), String>;

    /// The file saved to, as `GET /status` reports it (`state_file`).
    fn path(&self) -> &std::path::Path;
}

// === impl SavedWeights ===

impl SavedWeights {
    /// The document for `routes` (a table's, with their weights in force) and `file`, the config
    /// file's weights at its last load.
    pub fn of(routes: &[RouteConfig], file: &FileWeights) -> SavedWeights {
        let routes = routes.iter().map(|route| {
            let weights = route.weights();
            let saved = SavedRoute {
                weights,
                file_weights: file.get(&route.name).unwrap_or(weights),
                blue: route.blue.endpoints.clone(),
                green: route.green.endpoints.clone(),
            };
            (route.name.clone(), saved)
        });
        SavedWeights {
            version: SAVED_WEIGHTS_VERSION,
            routes: routes.collect(),
        }
    }

    /// `routes` (a config file's, as just loaded) with the saved weights applied by the rule of
    /// the module docs, and what became of each saved route, in name order.
    pub fn restore(&self, routes: &mut [RouteConfig]) -> Vec<Restored> {
        let mut outcomes = Vec::new();
        for (name, saved) in &self.routes {
            let Some(route) = routes.iter_mut().find(|r| &r.name == name) else {
                outcomes.push(ignored(name, "not in the config file".to_owned()));
                continue;
            };
            let file = route.weights();
            if let Some(why) = saved.misfit(route) {
                outcomes.push(ignored(name, why));
                continue;
            }
            if saved.weights == file {
                continue;
            }
            let mut restored = route.clone();
            restored.set_weights(saved.weights);
            let mut problems = Vec::new();
            check_routes(std::slice::from_ref(&restored), &mut problems);
            if let Some(problem) = problems.first() {
                let field = problem.path.replacen("routes[0].", "", 1);
                let why = format!("the route cannot take them ({field}: {})", problem.message);
                outcomes.push(ignored(name, why));
                continue;
            }
            *route = restored;
            outcomes.push(Restored::Applied {
                route: name.clone(),
                saved: saved.weights,
                file,
            });
        }
        outcomes
    }
}

fn ignored(route: &str, why: String) -> Restored {
    Restored::Ignored {
        route: route.to_owned(),
        why,
    }
}

// === impl SavedRoute ===

impl SavedRoute {
    /// Why these saved weights do not fit `route` as the file now has it, or `None` when they do.
    fn misfit(&self, route: &RouteConfig) -> Option<String> {
        for (slot, saved) in [(Slot::Blue, &self.blue), (Slot::Green, &self.green)] {
            let now = &route.backend(slot).endpoints;
            if sorted(saved) != sorted(now) {
                return Some(format!(
                    "{slot}'s endpoints changed since they were saved ([{}], now [{}])",
                    list(saved),
                    list(now)
                ));
            }
        }
        let file = route.weights();
        (self.file_weights != file).then(|| {
            format!(
                "the file's weights changed since they were saved ({}, now {}): the file's win",
                split(self.file_weights),
                split(file)
            )
        })
    }
}

fn sorted(endpoints: &[SocketAddr]) -> Vec<SocketAddr> {
    let mut sorted = endpoints.to_vec();
    sorted.sort_unstable();
    sorted
}

fn list(endpoints: &[SocketAddr]) -> String {
    let listed: Vec<String> = endpoints.iter().map(ToString::to_string).collect();
    listed.join(", ")
}

/// `blue 70%, green 30%`.
fn split(weights: Weights) -> String {
    format!(
        "blue {}, green {}",
        Percent(weights.blue),
        Percent(weights.green)
    )
}

// === impl Restored ===

impl fmt::Display for Restored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Restored::Applied { route, saved, file } => write!(
                f,
                "route {route}: weights {} restored (the config file says {})",
                split(*saved),
                split(*file)
            ),
            Restored::Ignored { route, why } => write!(
                f,
                "route {route}: saved weights ignored, the config file's stay: {why}"
            ),
        }
    }
}

// === impl Proxy ===

impl Proxy {
    /// Applies `saved` (read back from the state file at start) to the routes in force, which must
    /// be the config file's as just loaded, in one table generation when any route changes; see
    /// the module docs for the rule. Returns what became of each saved route.
    ///
    /// # Errors
    /// As [`Proxy::update`].
    pub fn restore_weights(&self, saved: &SavedWeights) -> Result<Vec<Restored>> {
        let mut routes = self.routes();
        let outcomes = saved.restore(&mut routes);
        if outcomes
            .iter()
            .any(|o| matches!(o, Restored::Applied { .. }))
        {
            self.update(|live| {
                *live = routes;
                Ok(())
            })?;
        }
        Ok(outcomes)
    }

    /// From now on saves the weights to `store` before every change of the routing table is
    /// published (a change whose save fails is refused with [`Error::WeightsNotSaved`]), and saves
    /// them once now.
    ///
    /// # Errors
    /// [`Error::WeightsNotSaved`] when this first save fails; `store` is installed all the same.
    pub fn keep_weights_in(&self, store: std::sync::Arc<dyn WeightStore>) -> Result<()> {
        let _writer = self.lock_writer();
        let mut installed = self
            .shared
            .weight_store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *installed = Some(store);
        drop(installed);
        self.save_weights(&self.routes())
    }

    /// Saves `routes` (about to be published) with the current reload baseline to the installed
    /// [`WeightStore`], if any. Called under the writer lock.
    pub(crate) fn save_weights(&self, routes: &[RouteConfig]) -> Result<()> {
        let store = self
            .shared
            .weight_store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let Some(store) = store else {
            return Ok(());
        };
        let saved = SavedWeights::of(routes, &self.file_weights());
        store.save(&saved).map_err(Error::WeightsNotSaved)
    }
}

#[cfg(test)]
mod tests;
