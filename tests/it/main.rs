//! Crossfade's integration tests: one binary, one module per scenario, over real sockets on 127.0.0.1
//! and real `crossfade` child processes (the binary under test, `CARGO_BIN_EXE_crossfade`).
//!
//! # Layout
//! - `rollout`: a full rollout under HTTP/1.1 and HTTP/2 load.
//! - `support`: helpers every scenario shares (ports, specs, child processes, admin client, load,
//!   metrics).

mod bad_input;
mod cases;
mod demo;
mod never_ready;
mod no_traffic;
mod restart;
mod rollback;
mod rollout;
mod support;
mod weight_swaps;
