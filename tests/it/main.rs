//! Crossfade's integration tests: one binary, one module per scenario.
