//! The failure cases from production (`/work/shared/cases/cases.md`), one file per case, each test
//! named after its case id. Every test runs real `crossfade` children on 127.0.0.1 and checks the
//! case's "right outcome" as far as it applies to local mode; where the full-size input is too big
//! for CI, the test says how it was scaled down and which tolerance it uses.
//!
//! # Layout
//! - `c02`: no weight for a preview until every instance passed readiness; an endpoint a reload
//!   adds gets no request before a check passed.
//! - `c03`: weight 0 means no request, ever (HTTP/1.1 and h2c clients); omitted weights never mean
//!   an equal split.
//! - `c04`: small and uneven weights keep their split whatever the instance counts.
//! - `c07`: WebSocket sessions follow the weights at upgrade time and are drained, not cut: blue
//!   retires when its upgraded connections are 0, or at the deadline after a close 1001 to each;
//!   green's sessions at an abort get the same drain before green stops.
//! - `c08`: sticky cookie assignment is monotone per user, site-wide, and undone by an abort; two
//!   proxy replicas put each user on the same pool; old cookies get green without errors once
//!   blue is retired; a `crossfade run` rollout with `route.sticky` that rolls back moves every
//!   user back to blue.
//! - `c09`: a crash-looping preview is rolled back well before the progress deadline (in
//!   Kubernetes mode too: `kube::cases`, the preview's pods in `CrashLoopBackOff`), also when a
//!   supervisor restarts it and its workload process never exits.
//! - `c10`: an operator abort wins, also over a pending promote.
//! - `c12`: the role swap is one table generation; no request goes back to the old pool.
//! - `c13`: a dead or hung preview stops getting traffic at once (WebSocket upgrades refused by
//!   it are retried on blue, as GETs are; POSTs written to it are not re-sent); the rollout rolls
//!   back within one analysis interval; in a `crossfade run` rollout a hung preview holds a
//!   request no longer than `route.response_timeout`.
//! - `c14`: the configured split returns exactly after health checks flap, of the preview or of the
//!   active pool.
//! - `c15`: weight changes under HTTP/1.1 and h2c load drop nothing and the split follows them.
//! - `c17`: stale pooled upstream connections cause no client errors; PUTs are never re-sent; a
//!   `crossfade run` spec's `upstream.idle_timeout` is the proxy's.
//! - `c18`: HTTP/1.0 clients never get a chunked body.
//! - `c19`: hop-by-hop headers stay on their hop; one `X-Forwarded-For` (and a client's `Forwarded`
//!   under the same rule); `Host` unchanged; a `crossfade run` spec's `trust_forwarded_for: false`
//!   is the proxy's; a compliant `Connection: TE` keeps `TE: trailers`.
//! - `c20`: `Expect: 100-continue`: one 100, no stall, an early 401 without the body sent; also
//!   for HTTP/2 clients, to HTTP/1.1 and to h2c backends; an HTTP/1.0 client's expectation ignored;
//!   uploads in flight on blue across a weight switch complete there, whole.

mod c02;
mod c03;
mod c04;
mod c07;
mod c08;
mod c09;
mod c10;
mod c12;
mod c13;
mod c14;
mod c15;
mod c17;
mod c18;
mod c19;
mod c20;
