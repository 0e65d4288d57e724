//! Crossfade's data plane: an L7 HTTP proxy that splits each route's traffic between a blue and a green
//! backend by weight, swaps its routing table atomically, drains retired backends and exports metrics.
//!
//! # Layout
//! - [`config`]: the proxy's configuration (routes, backends, endpoints, weights) and its validation.
//! - [`weight`]: basis points, percent parsing, backend slots and the weighted pick.
//! - [`histogram`]: the lock-free latency histogram shared by `/metrics` and the controller's analysis.
#![warn(missing_docs)]

pub mod config;
pub mod histogram;
pub mod weight;
