//! `crossfade proxy` as a child process over static endpoints, with its admin API at hand.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use super::spec::{addr, write_json};
use super::{Admin, Crossfade, Metrics};

/// A running, ready `crossfade proxy`, stopped when dropped.
pub struct RunningProxy {
    /// The process.
    pub child: Crossfade,
    /// Its admin API.
    pub admin: Admin,
    /// Where it serves traffic.
    pub listen: SocketAddr,
}

impl RunningProxy {
    /// Writes `config` (e.g. from [`super::proxy_config`]) to `dir/name` and starts a proxy on it.
    ///
    /// # Panics
    /// When the proxy is not ready within 15 s.
    pub async fn start(dir: &Path, name: &str, config: &Value) -> RunningProxy {
        let path = write_json(dir, name, config);
        let admin = Admin::new(addr(&config["admin"]));
        let mut child = Crossfade::proxy(dir, &path);
        child.wait_ready(&admin, Duration::from_secs(15)).await;
        RunningProxy {
            child,
            admin,
            listen: addr(&config["listen"]),
        }
    }

    /// `PUT /routes/web/weights` with basis points; returns the new table generation.
    ///
    /// # Panics
    /// When the proxy does not answer 200.
    pub async fn set_weights(&self, blue_bp: u32, green_bp: u32) -> u64 {
        let body = json!({ "blue": blue_bp, "green": green_bp });
        let (status, answer) = self.admin.put("/routes/web/weights", &body).await;
        assert_eq!(status, 200, "PUT weights {body}: {answer}");
        answer["generation"]
            .as_u64()
            .expect("generation in the answer")
    }
}

/// The weight gauges `(blue, green)` of route `web` in basis points
/// (`crossfade_backend_weight_basis_points`).
///
/// # Panics
/// When a gauge is missing.
pub fn weight_gauges(metrics: &Metrics) -> (u32, u32) {
    let gauge = |backend| {
        let labels = [("route", "web"), ("backend", backend)];
        let value = metrics.get("crossfade_backend_weight_basis_points", &labels);
        value.unwrap_or_else(|| panic!("no weight gauge for {backend}")) as u32
    };
    (gauge("blue"), gauge("green"))
}

/// `crossfade_requests_total` of route `web`'s `backend`, every status class summed.
pub fn requests_total(metrics: &Metrics, backend: &str) -> f64 {
    let labels = [("route", "web"), ("backend", backend)];
    metrics.sum("crossfade_requests_total", &labels)
}
