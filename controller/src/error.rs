//! The controller crate's error type.

use std::io;
use std::path::PathBuf;

use crate::spec::SpecError;

/// Everything that can go wrong in the controller crate.
///
/// Messages are lowercase, carry the identifier that failed (a file path, a field path) and say what
/// failed; `source()` gives the underlying cause.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The `crossfade run` spec did not parse or did not validate.
    #[error(transparent)]
    Spec(#[from] SpecError),

    /// Reading, writing or syncing the state file (or its directory) failed.
    #[error("state file {}: {source}", path.display())]
    StateIo {
        /// The state file concerned.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },

    /// Another process holds the state file's lock: two processes must not share one state file.
    #[error("state file {} is in use by another crossfade process ({} its lock {}.lock); give each instance its own state_file", path.display(), holder_words(.holder), path.display())]
    StateLocked {
        /// The state file concerned.
        path: PathBuf,
        /// The process ID of the holder, as its lock file says (`None` when it says none).
        holder: Option<u32>,
    },

    /// The state file exists but does not hold the expected JSON document.
    #[error("state file {} is corrupt: {source}", path.display())]
    StateCorrupt {
        /// The state file concerned.
        path: PathBuf,
        /// Why decoding failed (includes line and column).
        #[source]
        source: serde_json::Error,
    },

    /// The data plane refused or failed a change to a route (weights, endpoints, roles).
    #[error("route {route}: {message}")]
    Traffic {
        /// The route concerned.
        route: String,
        /// What the data plane said.
        message: String,
    },

    /// No report can be written: no rollout ran yet, or it has not ended (the message says which).
    #[error("no rollout report: {0}")]
    Report(String),

    /// The state could not be encoded as JSON (a map with non-string keys, a non-finite float).
    #[error("state file {}: cannot encode state: {source}", path.display())]
    StateEncode {
        /// The state file concerned.
        path: PathBuf,
        /// Why encoding failed.
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    /// Wraps a data-plane failure for `route`.
    pub fn traffic(route: &str, message: impl Into<String>) -> Error {
        Error::Traffic {
            route: route.to_owned(),
            message: message.into(),
        }
    }
}

/// The controller crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Who holds a state file's lock, as [`Error::StateLocked`] says it: `pid 123 holds`, or `a
/// process holds` when its lock file names none.
fn holder_words(holder: &Option<u32>) -> String {
    holder.map_or_else(
        || "a process holds".to_owned(),
        |pid| format!("pid {pid} holds"),
    )
}
