//! Commands that talk to a running instance's admin API: `migrate`, `status`, `pause`, `resume`,
//! `promote`, `abort`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// Where the running instance's admin API listens.
#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// Admin API address of the running instance.
    #[arg(long, default_value_t = crate::DEFAULT_ADMIN, env = "CROSSFADE_ADMIN")]
    pub admin: SocketAddr,
}

/// `crossfade migrate FILE`: sends the file's `green:` (and optional `rollout:`) to `POST /rollout`.
pub async fn migrate(file: &Path, args: &AdminArgs) -> anyhow::Result<ExitCode> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let request = crossfade_controller::service::StartRequest::from_yaml(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let body = serde_json::to_vec(&request)?;
    let (status, reply) = call(args.admin, http::Method::POST, "/rollout", body).await?;
    print_reply(status, &reply)
}

/// `crossfade status`: prints the rollout (`GET /rollout`) and the routes (`GET /status`).
pub async fn status(args: &AdminArgs) -> anyhow::Result<ExitCode> {
    let (status, rollout) = call(args.admin, http::Method::GET, "/rollout", Vec::new()).await?;
    let (_, routes) = call(args.admin, http::Method::GET, "/status", Vec::new()).await?;
    let both = serde_json::json!({ "rollout": rollout, "proxy": routes });
    crate::print_out(&serde_json::to_string_pretty(&both)?);
    Ok(if status.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `crossfade pause|resume|promote|abort`: `POST /rollout/{verb}`.
pub async fn command(args: &AdminArgs, verb: &str) -> anyhow::Result<ExitCode> {
    let path = format!("/rollout/{verb}");
    let (status, reply) = call(args.admin, http::Method::POST, &path, Vec::new()).await?;
    print_reply(status, &reply)
}

fn print_reply(status: http::StatusCode, reply: &serde_json::Value) -> anyhow::Result<ExitCode> {
    // Every answer of the rollout API is an object with one of these keys; anything else means the
    // address is not a crossfade admin API (e.g. the proxy's own listener, which would forward the
    // command to the application) and nothing was done.
    let known = ["accepted", "started", "error"];
    if !known.iter().any(|k| reply.get(k).is_some()) {
        bail!("the answer ({status}) does not come from a crossfade admin API, so nothing was done; is --admin the admin address rather than the proxy's listener?");
    }
    crate::print_out(&serde_json::to_string_pretty(reply)?);
    Ok(if status.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// One request to the admin API; the reply is parsed as JSON (or wrapped as a string if it is not).
///
/// # Errors
/// When the instance cannot be reached: the message says which address was tried.
pub async fn call(
    admin: SocketAddr,
    method: http::Method,
    path: &str,
    body: Vec<u8>,
) -> anyhow::Result<(http::StatusCode, serde_json::Value)> {
    let unreachable = || {
        format!("cannot reach the admin API at {admin} (is `crossfade run` running? see --admin)")
    };
    let stream = tokio::net::TcpStream::connect(admin)
        .await
        .with_context(unreachable)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .with_context(unreachable)?;
    tokio::spawn(conn);
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, admin.to_string())
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))?;
    let response = sender
        .send_request(request)
        .await
        .with_context(unreachable)?;
    let status = response.status();
    let bytes = response.into_body().collect().await?.to_bytes();
    if bytes.is_empty() && !status.is_success() {
        bail!("admin API answered {status} for {path}");
    }
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into()));
    Ok((status, value))
}
