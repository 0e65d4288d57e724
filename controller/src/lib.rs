//! Crossfade's control plane: the `crossfade run` spec, the pure rollout state machine, analysis of
//! metric windows, and the state store that makes a rollout restart-safe.
//!
//! # Layout
//! - [`spec`]: the `crossfade run` spec (YAML) with its defaults and validation, which reports every
//!   problem with its field path.
//! - [`rollout`]: the pure rollout state machine, `Rollout::step(input, now) -> Vec<Command>`; no I/O,
//!   no clock reads.
//! - [`analysis`]: per-backend metric windows, verdicts with their evidence, the threshold judge and
//!   the sequential judge (always-valid tests of green against blue).
//! - [`store`]: the atomically replaced JSON state file.
//! - [`state`]: what a local-mode service persists and how a restart recovers from it.
//! - [`driver`]: workload drivers (local processes, static endpoints) behind one trait, and the
//!   Kubernetes driver (preview Deployment, per-backend Services).
//! - [`image`]: what a backend runs as an image reference and digest (local mode: the program's
//!   path and the SHA-256 of its file).
//! - [`traffic`]: the seams to the data plane (traffic setter, metrics source) over an in-process proxy.
//! - [`runtime`]: runs one rollout, executing the machine's commands through the seams.
//! - [`service`]: one served route: active workload, rollouts one at a time, operator commands, the
//!   admin API's `/rollout` endpoints.
//! - [`kube`]: Kubernetes mode: the `TrafficShift` custom resource, the Deployment annotation
//!   trigger and its reconciler, the TrafficShift controller and its status store.
//! - [`metrics`]: the controller's Prometheus metrics (phase, step, weights, verdicts, outcomes,
//!   which workload each backend runs).
//! - [`timeline`]: a rollout's course over time (per-backend samples, step and verdict markers),
//!   recorded by the runtime and kept bounded in the state.
//! - [`report`]: the self-contained HTML rollout report drawn from a timeline (`crossfade report`).
//! - [`error`]: the crate's error type.
//! - [`headers`]: the request headers of gates and checks at each call, with `headers_from`
//!   values read then (files and environment variables locally, Secrets in Kubernetes mode).
#![warn(missing_docs)]
// Internal docs are read with `cargo doc --document-private-items` (scripts/test.sh checks them
// so), where a public item's links to private ones resolve.
#![allow(rustdoc::private_intra_doc_links)]

pub mod analysis;
pub mod driver;
pub mod error;
pub mod fetch;
pub mod gates;
pub mod headers;
pub mod image;
pub mod kube;
pub mod metrics;
pub mod report;
pub mod rollout;
pub mod runtime;
pub mod service;
pub mod spec;
pub mod state;
pub mod store;
pub mod text;
pub mod timeline;
pub mod traffic;

// The spec parser's fuzz check (`fuzz/checks/spec_parser.rs`) names this crate as its target sees it.
#[cfg(test)]
extern crate self as crossfade_controller;
#[cfg(test)]
mod fuzz_checks;
#[cfg(test)]
mod serde_fields;
#[cfg(test)]
mod test_support;

pub use error::{Error, Result};
