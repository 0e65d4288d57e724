//! One HTTP(S) request at a time, bounded in time and in body size: what the analysis providers
//! ([`crate::analysis::checks`]) and the rollout gates ([`crate::gates`]) send.
//!
//! HTTP/1.1 over plain TCP or rustls (the system's trusted roots, loaded once). Pooled keep-alive
//! connections are reused between analyses.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// The largest response body read, in bytes (1 MiB); a longer one is an error.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// A response: status and the whole body.
#[derive(Clone, Debug)]
pub struct Reply {
    /// The response status.
    pub status: StatusCode,
    /// The body, at most [`MAX_BODY_BYTES`].
    pub body: Bytes,
}

impl Reply {
    /// The start of the body as text, for messages: at most 200 characters, one line.
    pub fn excerpt(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let line: String = text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(200)
            .collect();
        line.trim().to_string()
    }
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;
type PlainClient = Client<HttpConnector, Full<Bytes>>;

/// The process-wide client for `https://`: built on first use; `Err` holds why TLS is unavailable
/// (no trusted roots could be loaded).
fn tls() -> &'static Result<HttpsClient, String> {
    static CLIENT: OnceLock<Result<HttpsClient, String>> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| format!("cannot load the system's trusted root certificates: {e}"))?
            .https_only()
            .enable_http1()
            .build();
        Ok(Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector))
    })
}

/// Sends one request and reads the whole response within `timeout`.
///
/// `url` must be absolute (`http://` or `https://`); `body`, when given, is sent as
/// `application/json`. Any status is a reply; only transport failures are errors.
///
/// # Errors
/// A short lowercase description naming the URL: a bad URL or header, connect/TLS failures,
/// `timed out after 5s`, a body above [`MAX_BODY_BYTES`].
pub async fn send(
    method: Method,
    url: &str,
    headers: &BTreeMap<String, String>,
    body: Option<Bytes>,
    timeout: Duration,
) -> Result<Reply, String> {
    match tokio::time::timeout(timeout, exchange(method, url, headers, body)).await {
        Ok(result) => result.map_err(|e| format!("{url}: {e}")),
        Err(_) => Err(format!(
            "{url}: timed out after {}",
            crate::spec::human(timeout)
        )),
    }
}

async fn exchange(
    method: Method,
    url: &str,
    headers: &BTreeMap<String, String>,
    body: Option<Bytes>,
) -> Result<Reply, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("bad URL: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
        return Err("not an http:// or https:// URL".into());
    }
    let https = uri.scheme_str() == Some("https");
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header(http::header::USER_AGENT, "crossfade")
        .header(http::header::ACCEPT, "application/json");
    if body.is_some() {
        request = request.header(http::header::CONTENT_TYPE, "application/json");
    }
    for (name, value) in headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let request = request
        .body(Full::new(body.unwrap_or_default()))
        .map_err(|e| format!("bad request: {e}"))?;
    let response = if https {
        tls().as_ref().map_err(Clone::clone)?.request(request).await
    } else {
        plain().request(request).await
    }
    .map_err(|e| describe(&e))?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|e| format!("reading the body: {e}"))?
        .to_bytes();
    Ok(Reply { status, body })
}

/// The client for `http://`: plain TCP, whatever the state of TLS.
fn plain() -> &'static PlainClient {
    static PLAIN: OnceLock<PlainClient> = OnceLock::new();
    PLAIN.get_or_init(|| {
        Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(HttpConnector::new())
    })
}

/// The error with its sources: `client error (Connect): tcp connect error: Connection refused`.
fn describe(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
