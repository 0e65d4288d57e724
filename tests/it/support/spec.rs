//! `crossfade run` specs and `crossfade proxy` configs for tests, built as JSON (JSON is YAML) so that a
//! test can change any field with `spec.json["rollout"]["hold"] = json!("2s")`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::{free_addr, BIN};

/// A sample-app workload (`crossfade sample-app --version V ...`) for a spec's `blue:` or `green:`.
#[derive(Clone, Debug)]
pub struct App {
    /// The workload as the spec's JSON.
    pub json: Value,
}

impl App {
    /// One instance of the sample app answering with `X-Version: version`; readiness probed every
    /// 50 ms with a 10 s deadline; stopped with a 2 s grace.
    pub fn version(version: &str) -> App {
        App {
            json: json!({
                "command": BIN,
                "args": ["sample-app", "--port", "{port}", "--version", version],
                "instances": 1,
                "readiness": { "interval": "50ms", "deadline": "10s" },
                "stop_grace": "2s",
            }),
        }
    }

    /// Appends sample-app flags, e.g. `["--error-rate", "0.2"]`.
    pub fn flags<'a>(mut self, flags: impl IntoIterator<Item = &'a str>) -> App {
        if let Some(args) = self.json["args"].as_array_mut() {
            args.extend(flags.into_iter().map(Value::from));
        }
        self
    }

    /// Sets a field of the workload, e.g. `set("instances", json!(2))`.
    pub fn set(mut self, field: &str, value: Value) -> App {
        self.json[field] = value;
        self
    }
}

/// A `crossfade run` spec: proxy and admin on free ports, route `web` on `/`, blue `v1`, no green,
/// steps 10/50/100 holding 1 s, `min_requests: 10`, 20 s progress deadline.
#[derive(Clone, Debug)]
pub struct Spec {
    /// The spec as JSON; change any field before [`Spec::write`].
    pub json: Value,
}

impl Spec {
    /// The default spec described on [`Spec`].
    pub fn new() -> Spec {
        Spec {
            json: json!({
                "listen": free_addr().to_string(),
                "admin": free_addr().to_string(),
                "route": { "name": "web", "path_prefix": "/" },
                "blue": App::version("v1").json,
                "rollout": {
                    "steps": [10, 50, 100],
                    "hold": "1s",
                    "progress_deadline": "20s",
                    "drain_timeout": "5s",
                    "analysis": { "max_error_rate": "1%", "min_requests": 10, "max_inconclusive": 3 },
                },
            }),
        }
    }

    /// Sets the blue workload.
    pub fn blue(mut self, app: App) -> Spec {
        self.json["blue"] = app.json;
        self
    }

    /// Sets the green workload (the rollout's target).
    pub fn green(mut self, app: App) -> Spec {
        self.json["green"] = app.json;
        self
    }

    /// Persists state in `path`.
    pub fn state_file(mut self, path: &Path) -> Spec {
        self.json["state_file"] = json!(path);
        self
    }

    /// The proxy's listen address.
    pub fn listen(&self) -> SocketAddr {
        addr(&self.json["listen"])
    }

    /// The admin API's address.
    pub fn admin(&self) -> SocketAddr {
        addr(&self.json["admin"])
    }

    /// Writes the spec to `dir/name` and returns the path.
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        write_json(dir, name, &self.json)
    }
}

impl Default for Spec {
    fn default() -> Self {
        Spec::new()
    }
}

/// A `crossfade proxy` config with one route `web` on `/` splitting between static `blue` and
/// `green` endpoints, blue at 100%; listen and admin on free ports.
pub fn proxy_config(blue: &[SocketAddr], green: &[SocketAddr]) -> Value {
    json!({
        "listen": free_addr().to_string(),
        "admin": free_addr().to_string(),
        "routes": [{
            "name": "web",
            "path_prefix": "/",
            "active": "blue",
            "blue": { "endpoints": blue, "weight": 100 },
            "green": { "endpoints": green, "weight": 0 },
        }],
    })
}

/// Writes `json` to `dir/name` and returns the path.
pub fn write_json(dir: &Path, name: &str, json: &Value) -> PathBuf {
    let path = dir.join(name);
    let text = serde_json::to_string_pretty(json).expect("serialise");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

/// Parses an address field of a spec or config.
pub fn addr(value: &Value) -> SocketAddr {
    value
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{value} is not an address"))
}
