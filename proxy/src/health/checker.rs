//! The active health check of one endpoint: `GET path` every `interval`, 2xx within `timeout` is
//! a success; `fall` failures in a row mark it down, `rise` successes in a row mark it up.
//!
//! Probes speak the backend's protocol (HTTP/1.1, or h2c prior knowledge). Each probe opens a
//! fresh connection (no pooling), so a process that accepts in the kernel but
//! never answers (stopped with SIGSTOP) fails by timeout, and a dead one by refusal.

use std::net::SocketAddr;
use std::sync::{Arc, Weak};

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::Empty;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::time::MissedTickBehavior;

use super::{EjectReason, EndpointHealth, Hub, ProxyEvent, SlotHealth};
use crate::config::{HealthConfig, UpstreamProtocol};
use crate::weight::Slot;

type ProbeClient = Client<HttpConnector, Empty<Bytes>>;

/// One endpoint's checker; [`Checker::run`] ends when the endpoint's state is dropped or the task
/// is aborted (the endpoint left the table).
pub(crate) struct Checker {
    pub(crate) route: Arc<str>,
    pub(crate) slot: Slot,
    pub(crate) endpoint: Weak<EndpointHealth>,
    pub(crate) config: HealthConfig,
    /// The backend's protocol, which the probes speak.
    pub(crate) protocol: UpstreamProtocol,
    pub(crate) hub: Arc<Hub>,
    pub(crate) state: Arc<SlotHealth>,
}

/// Consecutive results, the rise/fall arithmetic kept apart from I/O so it can be tested alone.
#[derive(Debug, Default)]
pub(crate) struct Streak {
    successes: u32,
    failures: u32,
}

impl Streak {
    /// Counts one probe result; returns the new verdict when `rise`/`fall` is reached, given the
    /// verdict `up` in force.
    pub(crate) fn observe(&mut self, ok: bool, up: bool, config: &HealthConfig) -> Option<bool> {
        if ok {
            self.successes += 1;
            self.failures = 0;
            (!up && self.successes >= config.rise).then_some(true)
        } else {
            self.failures += 1;
            self.successes = 0;
            (up && self.failures >= config.fall).then_some(false)
        }
    }
}

impl Checker {
    pub(crate) async fn run(self) {
        let client = client(self.protocol);
        let Some(addr) = self.endpoint.upgrade().map(|e| e.addr()) else {
            return;
        };
        let uri = probe_uri(addr, &self.config.path);
        let mut streak = Streak::default();
        let mut ticks = tokio::time::interval(self.config.interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let ok = self.probe(&client, &uri).await;
            let Some(endpoint) = self.endpoint.upgrade() else {
                return;
            };
            if let Some(up) = streak.observe(ok, endpoint.checked_up(), &self.config) {
                self.apply(&endpoint, up);
            }
        }
    }

    async fn probe(&self, client: &ProbeClient, uri: &Uri) -> bool {
        let Ok(request) = Request::get(uri.clone()).body(Empty::new()) else {
            return false;
        };
        match tokio::time::timeout(self.config.timeout, client.request(request)).await {
            Ok(Ok(response)) => response.status().is_success(),
            _ => false,
        }
    }

    fn apply(&self, endpoint: &EndpointHealth, up: bool) {
        if !endpoint.set_checked(up) {
            return;
        }
        let (route, backend, addr) = (self.route.to_string(), self.slot, endpoint.addr());
        if up {
            tracing::info!(%route, %backend, endpoint = %addr, "endpoint passed its health checks");
            self.hub.send(ProxyEvent::EndpointUp {
                route,
                backend,
                endpoint: addr,
            });
        } else {
            tracing::warn!(%route, %backend, endpoint = %addr, "endpoint failed its health checks");
            self.state.count_ejection(EjectReason::HealthCheck);
            self.hub.send(ProxyEvent::EndpointDown {
                route,
                backend,
                endpoint: addr,
                reason: EjectReason::HealthCheck,
            });
        }
    }
}

fn client(protocol: UpstreamProtocol) -> ProbeClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .http2_only(protocol == UpstreamProtocol::H2c)
        .build(connector)
}

fn probe_uri(addr: SocketAddr, path: &str) -> Uri {
    format!("http://{addr}{path}")
        .parse()
        .unwrap_or_else(|_| Uri::from_static("/"))
}
