//! Crossfade's control plane: the `crossfade run` spec, the pure rollout state machine, analysis of
//! metric windows, and the state store that makes a rollout restart-safe.
//!
//! # Layout
//! - [`spec`]: the `crossfade run` spec (YAML) with its defaults and validation, which reports every
//!   problem with its field path.
//! - [`rollout`]: the pure rollout state machine, `Rollout::step(input, now) -> Vec<Command>`; no I/O,
//!   no clock reads.
//! - [`analysis`]: per-backend metric windows, verdicts with their evidence, and the threshold judge.
//! - [`store`]: the atomically replaced JSON state file.
//! - [`error`]: the crate's error type.
#![warn(missing_docs)]

pub mod analysis;
pub mod error;
pub mod rollout;
pub mod spec;
pub mod store;

pub use error::{Error, Result};
