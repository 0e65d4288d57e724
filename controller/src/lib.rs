//! Crossfade's control plane.
#![warn(missing_docs)]
