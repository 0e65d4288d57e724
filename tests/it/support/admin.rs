//! A small client of the admin API (one HTTP/1.1 connection per request) and a `/metrics` parser.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// Longest wait for one admin request, connect included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The admin API of a running `crossfade run` or `crossfade proxy`.
#[derive(Clone, Copy, Debug)]
pub struct Admin {
    /// Its address.
    pub addr: SocketAddr,
}

impl Admin {
    /// A client of the admin API at `addr`.
    pub fn new(addr: SocketAddr) -> Admin {
        Admin { addr }
    }

    /// `method path` with an optional JSON body; the status and the body as text.
    ///
    /// # Errors
    /// Connect, protocol or timeout failures, as text.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, String), String> {
        let (status, _, body) = self.request_with(method, path, body, &[]).await?;
        Ok((status, body))
    }

    /// [`Admin::request`] with extra request headers (e.g. `Authorization`); the status, the
    /// response headers and the body as text.
    ///
    /// # Errors
    /// Connect, protocol or timeout failures, as text.
    pub async fn request_with(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<(u16, http::HeaderMap, String), String> {
        let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        self.send(method, path, bytes, headers).await
    }

    /// `method path` with `body` sent as it is (JSON that [`Value`] cannot hold, such as a number
    /// above any integer type); the status and the body as text.
    ///
    /// # Errors
    /// As [`Admin::request`].
    pub async fn request_text(
        &self,
        method: &str,
        path: &str,
        body: &str,
    ) -> Result<(u16, String), String> {
        let bytes = Bytes::from(body.to_owned());
        let (status, _, body) = self.send(method, path, bytes, &[]).await?;
        Ok((status, body))
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        bytes: Bytes,
        headers: &[(&str, &str)],
    ) -> Result<(u16, http::HeaderMap, String), String> {
        let call = async {
            let stream = tokio::net::TcpStream::connect(self.addr)
                .await
                .map_err(|e| format!("connect {}: {e}", self.addr))?;
            let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            tokio::spawn(conn);
            let mut request = http::Request::builder()
                .method(method)
                .uri(path)
                .header(http::header::HOST, self.addr.to_string())
                .header(http::header::CONTENT_TYPE, "application/json");
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            let request = request
                .body(Full::new(bytes))
                .map_err(|e| format!("request: {e}"))?;
            let response = tx
                .send_request(request)
                .await
                .map_err(|e| format!("send: {e}"))?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("body: {e}"))?;
            Ok((
                status,
                headers,
                String::from_utf8_lossy(&body.to_bytes()).into_owned(),
            ))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, call)
            .await
            .map_err(|_| format!("{method} {path}: no answer within {REQUEST_TIMEOUT:?}"))?
    }

    /// `GET path` as text.
    ///
    /// # Errors
    /// As [`Admin::request`].
    pub async fn get_text(&self, path: &str) -> Result<(u16, String), String> {
        self.request("GET", path, None).await
    }

    /// `method path` with a JSON body, answer parsed as JSON.
    ///
    /// # Panics
    /// When the request fails or the answer is not JSON.
    pub async fn json(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let (status, text) = self
            .request(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path}: answer is not JSON ({e}): {text}"));
        (status, value)
    }

    /// Starts a rollout to the workload `green` (its spec JSON) with `POST /rollout`. The previous
    /// rollout shows as over a moment before the service takes a new one, so a 409 is retried for
    /// up to 10 s.
    ///
    /// # Panics
    /// On any other answer, or a 409 that lasts.
    pub async fn start_rollout(&self, green: &Value) {
        self.start_rollout_with(&serde_json::json!({ "green": green }))
            .await;
    }

    /// [`Admin::start_rollout`] with the whole request `body` (`green`, and `rollout` settings
    /// that apply over the running instance's, e.g. `{"steps": [50, 100], "hold": "300ms"}`).
    ///
    /// # Panics
    /// As [`Admin::start_rollout`].
    pub async fn start_rollout_with(&self, body: &Value) {
        super::wait_until(
            Duration::from_secs(10),
            "POST /rollout to be accepted",
            || async {
                let (status, answer) = self.json("POST", "/rollout", Some(body)).await;
                assert!(
                    status == 202 || status == 409,
                    "POST /rollout: {status} {answer}"
                );
                (status == 202).then_some(())
            },
        )
        .await;
    }

    /// `GET path` as JSON, expecting 200.
    ///
    /// # Panics
    /// On failure or another status.
    pub async fn get(&self, path: &str) -> Value {
        let (status, value) = self.json("GET", path, None).await;
        assert_eq!(status, 200, "GET {path}: {value}");
        value
    }

    /// `POST path` (no body); status and JSON answer.
    pub async fn post(&self, path: &str) -> (u16, Value) {
        self.json("POST", path, None).await
    }

    /// `PUT path` with a JSON body; status and JSON answer.
    pub async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        self.json("PUT", path, Some(body)).await
    }

    /// `GET /rollout` (`crossfade run` only).
    pub async fn rollout(&self) -> Value {
        self.get("/rollout").await
    }

    /// The message of the last event with `reason` in `GET /rollout` (`crossfade run` only);
    /// empty when there is none.
    pub async fn last_event(&self, reason: &str) -> String {
        let status = self.rollout().await;
        (status["events"].as_array().into_iter().flatten())
            .rfind(|e| e["reason"] == reason)
            .and_then(|e| e["message"].as_str())
            .unwrap_or_default()
            .to_owned()
    }

    /// `GET /status`.
    pub async fn status(&self) -> Value {
        self.get("/status").await
    }

    /// `GET /metrics`, parsed.
    ///
    /// # Panics
    /// On failure or a status other than 200.
    pub async fn metrics(&self) -> Metrics {
        let (status, text) = self.get_text("/metrics").await.expect("GET /metrics");
        assert_eq!(status, 200, "GET /metrics: {text}");
        Metrics::parse(&text)
    }
}

/// One sample of a `/metrics` page (OpenMetrics or the Prometheus text format 0.0.4).
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The sample's name as exposed, e.g. `crossfade_requests_total`.
    pub name: String,
    /// Its labels in order.
    pub labels: Vec<(String, String)>,
    /// Its value.
    pub value: f64,
}

/// A parsed `/metrics` page.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    /// Every sample, in page order.
    pub samples: Vec<Sample>,
}

impl Metrics {
    /// Parses a `/metrics` page, OpenMetrics or the text format 0.0.4: the samples are written the
    /// same way in both (comments skipped; label values without escaped quotes).
    pub fn parse(text: &str) -> Metrics {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(parse_sample)
            .collect();
        Metrics { samples }
    }

    /// Samples named `name` whose labels include every pair in `labels`.
    pub fn find<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&str, &str)],
    ) -> impl Iterator<Item = &'a Sample> {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
    }

    /// The one sample named `name` with `labels`; `None` if absent.
    ///
    /// # Panics
    /// When several samples match (the labels are not specific enough).
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found: Vec<_> = self.find(name, labels).collect();
        assert!(
            found.len() <= 1,
            "{name}{labels:?} matches {} samples",
            found.len()
        );
        found.first().map(|s| s.value)
    }

    /// The sum of every sample named `name` with `labels` (0 when none).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.find(name, labels).map(|s| s.value).sum()
    }
}

fn parse_sample(line: &str) -> Option<Sample> {
    let (head, rest) = match line.find('{') {
        Some(_) => {
            let close = line.find('}')?;
            (&line[..close + 1], &line[close + 1..])
        }
        None => line.split_at(line.find(' ')?),
    };
    let (name, labels) = match head.split_once('{') {
        Some((name, labels)) => (name, labels.trim_end_matches('}')),
        None => (head, ""),
    };
    let labels = labels
        .split(',')
        .filter(|p| !p.is_empty())
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            Some((k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
        })
        .collect();
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}
