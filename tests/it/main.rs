//! Crossfade's integration tests: one binary, one module per scenario, over real sockets on 127.0.0.1
//! and real `crossfade` child processes (the binary under test, `CARGO_BIN_EXE_crossfade`).
//!
//! # Layout
//! - `support`: helpers every scenario shares (ports, specs, child processes, admin client, load,
//!   metrics).
//! - `rollout`: a full rollout under HTTP/1.1 and HTTP/2 load, ending with green alone serving.
//! - `rollback`: a green failing 20% of requests is rolled back; `--exit-after-rollout` exits 3.
//! - `h2c_workload`: `crossfade run` with h2c-only workloads (`protocol: h2c`, `sample-app --h2c`):
//!   a rollout under gRPC calls with no failure (command workloads, and static h2c endpoints to a
//!   command green); `crossfade migrate` to an h2c green, served over
//!   h2c again after a restart from the state file; an h2c-only green left at `http1` fails
//!   readiness with a hint at `protocol: h2c`.
//! - `never_ready`: a green whose health check never passes gets no weight and is rolled back.
//! - `no_traffic`: without traffic a rollout never completes (rolls back or pauses, inconclusive).
//! - `weight_swaps`: 100 weight changes on `crossfade proxy` under load lose no request.
//! - `demo`: `crossfade demo --json`, healthy and with a failing v2.
//! - `faults`: fault injection under HTTP/1.1 and h2c load (green 500s, hang, SIGSTOP, crash and crash
//!   loop; blue crash mid-shift; short backend keep-alive; controller SIGKILL; damaged state file),
//!   each printing requests, errors and time to recover.
//! - `reload`: `crossfade proxy` reloaded by SIGHUP: admin-set weights kept unless the file's
//!   changed, removed routes gone, settings that need a restart named.
//! - `crash`: `crossfade run` SIGKILLed (alone, or with every process it started) at points
//!   covering every phase of a rollout under load, around its state-file saves; the restart
//!   serves the state file's version, leaves no orphan, recovers the rollout as documented, and
//!   a new rollout completes (`CROSSFADE_CRASH_POINTS=all`: the long schedule).
//! - `restart`: state-file recovery after a crash mid-rollout and after a completed rollout.
//! - `unsaved`: a state file that cannot be written: the rollout holds (weights and workloads
//!   unchanged) and resumes once saves work; a restart refuses naming `state_file`, stopping nothing.
//! - `admin_auth`: the admin API's bearer token: required off loopback, 401 without it, CLI sends it.
//! - `bad_input`: every spec problem with its field path; a green command that does not exist.
//! - `clients`: real clients no one here wrote (curl over HTTP/1.1, h2c and TLS with a SIGHUP
//!   certificate reload, curl -T with Expect, h2load, wrk): zero failures, the split within 6 sigma.
//! - `supervise`: a killed serving instance (blue, then promoted green) is restarted with an event
//!   and a metric while traffic stays on the instances that are up.
//! - `cases`: the failure cases (C02...C20; the cases list has no C01, C05, C06, C11 or C16), one
//!   file each.
//! - `gates`: webhook gates against a local HTTP server (every point, a rollback refusal, a timeout
//!   that halts past the progress deadline).
//! - `judgement`: analysis checks against a real Prometheus and a JSON endpoint (pass, fail, source
//!   down); a whole rollout decided by the sequential judge.
//! - `kube`: Kubernetes mode against the kmock API emulator (emulator fidelity, annotation trigger,
//!   the TrafficShift controller, the status store, RBAC, the `controller --kube` binary).
//! - `report`: `crossfade demo --report` rendered by headless Chromium (charts drawn: DOM and PNG
//!   pixels); `crossfade report` from the admin API and a state file.
//! - `upgrade`: `crossfade proxy --upgrade-socket`: the binary upgraded in place under HTTP/1.1 and
//!   h2c load with no error, a long request finishing on the old process, a WebSocket kept to the
//!   drain deadline (SIGUSR2), and new processes that fail leaving the old one serving.
//! - `user_signals`: SIGUSR1 and SIGUSR2 sent to `crossfade proxy` (no upgrade socket) and to
//!   `crossfade run` are logged as ignored; the process serves on and the workloads live.
//! - `shadow`: the 0% shadow step: a green whose body differs is rolled back before any client
//!   sees it; an identical green passes into the live steps.
//! - `port_taken`: a serving instance that is down while another server answers on its port: the
//!   proxy sends that port nothing until the instance is back; a restart whose port is taken goes
//!   to another free port, which the route, the state file and a later run's adoption follow.
//! - `port_range`: `crossfade run` gives `{port}` instances ports of the spec's `port_range`, and
//!   fails the start naming the range when every port of it is taken.
//! - `wrong_shapes`: a value of the wrong shape in a spec, a proxy config, an admin API body, a
//!   TrafficShift or a flag is refused naming its field, in the user's words (no Rust type names).
//! - `identity`: which build and process serves: `crossfade_build_info`, the `process_*` metrics,
//!   `version` and `pid` in `/status`, and `--pid-file` naming the successor after SIGUSR2.
//! - `notify`: `crossfade proxy` over a real `NOTIFY_SOCKET` (sd_notify(3), no systemd): `READY=1`
//!   (only once the first health probe round is over, also for `run`),
//!   `RELOADING=1`/`READY=1` on SIGHUP, `MAINPID=` from a SIGUSR2 successor, `STOPPING=1`; a socket
//!   gone is logged once; an unconfirmed successor claims neither the pid file nor `MAINPID`.
//! - `sample_app`: `crossfade sample-app` reads request bodies before answering, so keep-alive
//!   POST clients (0 B to 1 MiB bodies) get every answer on one connection.
//! - `allocator`: the binary's global allocator: mimalloc with its arena committed on demand (the
//!   default feature `mimalloc`), glibc's malloc without it.
//! - `observability`: the Grafana dashboard's and the alert rules' PromQL on a real Prometheus scraping
//!   a rollback (at a shadow step) and a completed rollout, and the sequential judge's evidence
//!   panel over a rollout it judges.

mod admin_auth;
mod adopt;
mod allocator;
mod bad_input;
mod cases;
mod clients;
mod config_paths;
mod crash;
mod demo;
mod faults;
mod gates;
mod h2c_workload;
mod identity;
mod judgement;
mod kube;
mod loops;
mod never_ready;
mod no_traffic;
mod notify;
mod observability;
mod operator;
mod port_range;
mod port_taken;
mod reload;
mod report;
mod restart;
mod rollback;
mod rollout;
mod run_upgrade;
mod sample_app;
mod saved_weights;
mod shadow;
mod streaming;
mod supervise;
mod support;
mod unanswered;
mod unsaved;
mod upgrade;
mod user_signals;
mod weight_swaps;
mod wrong_shapes;
