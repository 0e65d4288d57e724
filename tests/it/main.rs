//! Crossfade's integration tests: one binary, one module per scenario, over real sockets on 127.0.0.1
//! and real `crossfade` child processes (the binary under test, `CARGO_BIN_EXE_crossfade`).
//!
//! # Layout
//! - `support`: helpers every scenario shares (ports, specs, child processes, admin client, load,
//!   metrics).
//! - `rollout`: a full rollout under HTTP/1.1 and HTTP/2 load, ending with green alone serving.
//! - `rollback`: a green failing 20% of requests is rolled back; `--exit-after-rollout` exits 3.
//! - `never_ready`: a green whose health check never passes gets no weight and is rolled back.
//! - `no_traffic`: without traffic a rollout never completes (rolls back or pauses, inconclusive).
//! - `weight_swaps`: 100 weight changes on `crossfade proxy` under load lose no request.
//! - `demo`: `crossfade demo --json`, healthy and with a failing v2.
//! - `restart`: state-file recovery after a crash mid-rollout and after a completed rollout.
//! - `bad_input`: every spec problem with its field path; a green command that does not exist.
//! - `cases`: the failure cases (C01...), one file each.
//! - `kube`: Kubernetes mode against the kmock API emulator (emulator fidelity, annotation trigger,
//!   the TrafficShift controller, the status store, RBAC, the `controller --kube` binary).
//! - `observability`: the Grafana dashboard's and the alert rules' PromQL on a real Prometheus scraping
//!   a rollback and a completed rollout.

mod bad_input;
mod cases;
mod demo;
mod kube;
mod never_ready;
mod no_traffic;
mod observability;
mod operator;
mod restart;
mod rollback;
mod rollout;
mod streaming;
mod support;
mod weight_swaps;
