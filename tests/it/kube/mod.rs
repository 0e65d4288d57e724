//! Kubernetes mode against the kmock API emulator (`tests/kube/kmock_server.py`), one emulator per
//! test on 127.0.0.1 port 0. Skipped with a loud message when the venv is missing, except when
//! scripts/test.sh runs it or under `CI=true` (see [`emulator`]).
//!
//! # Layout
//! - [`emulator`]: [`emulator::Emulator`], the emulator child process and a kube client for it.
//! - [`objects`]: Deployments and TrafficShifts the tests create.
//! - [`fidelity`]: the emulator still behaves where the controller and the proxy rely on it (kmock
//!   hooks; Leases by server-side apply, EndpointSlices by label).
//! - [`trigger`]: annotate a Deployment → one TrafficShift; the same value again → still one; a new
//!   value → its spec updated.
//! - [`cli`]: `crossfade controller --kube` (the binary): refuses to start without the CRD; an
//!   annotation becomes a preview Deployment.
//! - [`capacity`]: C02's rollback variant in a cluster: green's weight comes back to blue as
//!   blue's ready endpoints (EndpointSlices the tests publish) grow, all at once when every one is
//!   ready; `crossfade.dev/force-abort` ends a capacity wait at once, a plain abort is refused.
//! - [`commands`]: command annotations with nonces (promote, abort, retry) and `paused`: each
//!   acts once, a re-applied nonce never again, bad values reported by annotation.
//! - [`cluster`]: the kubelet stand-in, fake proxies (Lease acks and counters), a status
//!   recorder, and [`cluster::Cluster`], the setup the TrafficShift tests share (emulator, client,
//!   kubelet, target Deployment, TrafficShift `web`, controllers).
//! - [`shift`]: the TrafficShift controller: preview, weights in status, completion on the target,
//!   rollback of a preview that never becomes available; a step waits for every live proxy
//!   replica's ack, and without a proxy it is never applied.
//! - [`resume`]: a controller restart resumes from status; a new spec supersedes the rollout; a
//!   watch cache older than the controller's own last write.
//! - [`proxy`]: `crossfade proxy --kube` in front of real backends: weights from status shift
//!   traffic and are acknowledged in its Lease, removed and not-ready endpoints drain without
//!   client errors, sidecar mode, bad input leaves routes as they were, the proxy's roles in
//!   deploy/ against its audited requests.
//! - [`e2e`]: nothing stubbed: the controller and proxy binaries, real backends under load: an
//!   annotated rollout steps on the proxy's acks, passes on its scraped metrics and completes with
//!   no client error; a green answering 500s is rolled back by that analysis.
//! - [`hooks`]: a TrafficShift's `analysis.checks` and `rollout.gates` in the running rollout
//!   (a failing PromQL check rolls green back; gates asked with the rollout's context, a refusing
//!   one halts it); bad values refused by field.
//! - [`invalid`]: a TrafficShift that does not decode or fails validation gets
//!   `Progressing=False` `InvalidSpec` naming the field and one Warning Event per generation; it
//!   does not keep the others from being reconciled.
//! - [`drift`]: the sequential judge at the 100% step: a drift of the service's own within the
//!   allowance (errors 0 → 5% once green has all the traffic) does not roll green back.
//! - [`inexact`]: a `maxP99` between the proxies' latency bucket bounds: one `InexactBound`
//!   Warning Event per rollout naming the bounds around it, the verdict's p99 an estimate in its
//!   bucket, the bound acting as the upper bucket bound; a bucket bound: no Event, decided exactly.
//! - [`secret_headers`]: gate and check headers from Secrets and ConfigMaps (`headersFrom`): read
//!   at each call (a rotated Secret is sent at the next one), a missing key, Secret or ConfigMap
//!   fails the call by field, and no value reaches status or Events.
//! - [`finalizer`]: deleting a TrafficShift mid-rollout: traffic back to blue, preview deleted,
//!   then the finalizer removed.
//! - [`lifecycle`]: a TrafficShift around its target: images the target runs start no rollout,
//!   one made again adopts the Services its predecessor left, a `spec.route` edit keeps the
//!   rollout, a missing target is waited for and a deleted one rolls back at once, and `status
//!   --kube` of a missing TrafficShift says why its Deployment made none.
//! - [`leader`]: two controller processes, one Lease: only the leader acts; killed, the other
//!   takes over and resumes from status.
//! - [`shadow`]: nothing stubbed, as [`e2e`]: the shadow step's mirror settings published with
//!   its weights and applied by the proxy; a green whose answers differ is rolled back there
//!   before any live weight, an identical green passes into the live steps.
//! - [`set_image`]: `kubectl set image` on a managed Deployment is reverted and rolled out
//!   through a preview; Crossfade's own promotion is not taken for someone else's.
//! - [`metrics`]: `crossfade controller --kube --metrics`: the rollout's phase, step, verdicts and
//!   backend images on `/metrics` under route `namespace/name`; `/healthz`, `/readyz`.
//! - [`sample`]: deploy/examples/web, the walkthrough's sample app: the kustomizations list
//!   files that exist; applied and annotated as the walkthrough says, it completes on v2 with the
//!   controller and proxy binaries, and its faulty v2 image is rolled back.
//! - [`rbac`]: `deploy/controller/rbac.yaml` allows every request a rollout makes, and grants
//!   nothing unused (the emulator's audit log).
//! - [`prometheus`]: `analysis.metricsSource.prometheus` with the binaries and a real Prometheus:
//!   a green answering 500s is rolled back on the counters read from it; an unreachable one
//!   leaves every window unread and the rollout is rolled back as inconclusive.
//! - [`pods`]: the kubelet's pods for a Deployment's template, with `imageID`s.
//! - [`digest`]: the image digests the pods report, in status (`activeRevision`,
//!   `previewRevision`) and on `crossfade_backend_info`: through promotion, and with garbage
//!   `imageID`s.
//! - [`spec_problems`]: a spec is refused naming every bad field at once, and a container the
//!   target Deployment does not have among them, before any preview (a running rollout aborted).
//! - [`provisioning`]: the message of a provisioning preview counts its ready replicas as they
//!   change, written once per change.
//! - [`stale_leases`]: the controller deletes a proxy Lease expired long ago, and keeps a live one
//!   and a stale Lease without the proxy label.
//! - [`store`]: status writes guarded by resourceVersion: 409 re-read and retried, or refused when
//!   another writer changed the rollout state.
//! - [`unpaired`]: the shadow step against proxies that record no pairs: a window too thin for
//!   `maxP99Ratio` is inconclusive and grows until the ratio decides, never passed unchecked.

mod capacity;
mod cases;
mod cli;
pub mod cluster;
mod commands;
mod digest;
mod drift;
mod e2e;
pub mod emulator;
mod fidelity;
mod finalizer;
mod hooks;
mod inexact;
mod invalid;
mod leader;
mod lifecycle;
mod metrics;
pub mod objects;
pub mod pods;
mod prometheus;
mod provisioning;
mod proxy;
mod rbac;
mod ready;
mod resume;
mod sample;
mod secret_headers;
mod set_image;
mod shadow;
mod shift;
mod spec_problems;
mod stale_leases;
mod store;
mod trigger;
mod unpaired;
