//! Commands that talk to a running instance's admin API: `migrate`, `status`, `pause`, `resume`,
//! `promote`, `abort`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use crossfade_controller::service::ServiceStatus;

use crate::file_kind::Kind;
use crate::token::TokenArgs;

/// Where the running instance's admin API listens.
#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// Admin API address of the running instance.
    #[arg(long, default_value_t = crate::DEFAULT_ADMIN, env = "CROSSFADE_ADMIN",
          value_parser = crate::flags::address)]
    pub admin: SocketAddr,
    /// The bearer token the admin API requires, if any.
    #[command(flatten)]
    pub token: TokenArgs,
}

/// `crossfade migrate FILE`: sends the file's `green:` (and optional `rollout:`) to `POST /rollout`.
pub async fn migrate(file: &Path, args: &AdminArgs) -> anyhow::Result<ExitCode> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut request =
        crossfade_controller::service::StartRequest::from_yaml(&text).map_err(|e| {
            let message = crate::file_kind::with_hint(e.to_string(), &text, Kind::Rollout);
            anyhow::anyhow!("{}: {message}", file.display())
        })?;
    // Relative paths follow the file, as in a spec (README "Paths").
    if let Some(green) = &mut request.green {
        green.resolve_paths(&crate::serve::base_dir(file)?);
    }
    let body = serde_json::to_vec(&request)?;
    let (status, reply) = call(args, http::Method::POST, "/rollout", body).await?;
    print_reply(status, &reply)
}

/// `crossfade status`: the rollout (`GET /rollout`) and the routes (`GET /status`), as a summary
/// (`ServiceStatus::describe`) or with `json` as one object `{"rollout": .., "proxy": ..}`.
///
/// # Errors
/// When either endpoint does not give a crossfade answer (another status than 200, or JSON without
/// the fields a `crossfade run` admin API always sends): the message names the endpoint.
pub async fn status(args: &AdminArgs, json: bool) -> anyhow::Result<ExitCode> {
    let rollout = get_checked(args, "/rollout", "running").await?;
    let routes = get_checked(args, "/status", "routes").await?;
    if json {
        let both = serde_json::json!({ "rollout": rollout, "proxy": routes });
        crate::print_out(&serde_json::to_string_pretty(&both)?);
        return Ok(ExitCode::SUCCESS);
    }
    let unreadable = |path: &str| {
        format!("GET {path} at {} answered JSON of another shape than this crossfade reads (another version?); `crossfade status --json` prints it as it is", args.admin)
    };
    let service: ServiceStatus =
        serde_json::from_value(rollout).with_context(|| unreadable("/rollout"))?;
    let proxy: crossfade_proxy::Status =
        serde_json::from_value(routes).with_context(|| unreadable("/status"))?;
    crate::print_out(service.describe(&proxy).trim_end());
    Ok(ExitCode::SUCCESS)
}

/// `GET path`, which must answer 200 with a JSON object holding `field`.
async fn get_checked(
    args: &AdminArgs,
    path: &str,
    field: &str,
) -> anyhow::Result<serde_json::Value> {
    let (status, value) = call(args, http::Method::GET, path, Vec::new()).await?;
    if status.is_success() && value.get(field).is_some() {
        return Ok(value);
    }
    let said = match value.get("error").and_then(|e| e.as_str()) {
        Some(error) => format!(" ({error})"),
        None => String::new(),
    };
    bail!(
        "GET {path} at {} answered {status}{said} without the {field:?} a crossfade admin API sends; is --admin the admin address of `crossfade run`?",
        args.admin
    )
}

/// `crossfade pause|resume|promote|abort`: `POST /rollout/{verb}`, which answers once the rollout
/// has decided: 200 with the phase it led to, or 409 with the reason it was refused (exit code 1).
pub async fn command(args: &AdminArgs, verb: &str) -> anyhow::Result<ExitCode> {
    let path = format!("/rollout/{verb}");
    let (status, reply) = call(args, http::Method::POST, &path, Vec::new()).await?;
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
    if let (false, Some(error)) = (status.is_success(), reply["error"].as_str()) {
        eprintln!("crossfade: refused ({status}): {error}");
    }
    Ok(if status.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// One request to the admin API, with the bearer token when one is set; the reply is parsed as JSON
/// (or wrapped as a string if it is not).
///
/// # Errors
/// When the instance cannot be reached (the message says which address was tried), or it answers
/// 401 (the message says whether a token was missing or refused).
pub async fn call(
    args: &AdminArgs,
    method: http::Method,
    path: &str,
    body: Vec<u8>,
) -> anyhow::Result<(http::StatusCode, serde_json::Value)> {
    let admin = args.admin;
    let token = args.token.load()?;
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
    let mut request = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, admin.to_string())
        .header(http::header::CONTENT_TYPE, "application/json");
    if let Some((token, source)) = &token {
        let value = http::HeaderValue::from_str(&format!("Bearer {token}")).with_context(|| {
            format!("the admin token from {source} is not a valid header value")
        })?;
        request = request.header(http::header::AUTHORIZATION, value);
    }
    let request = request.body(Full::new(Bytes::from(body)))?;
    let response = sender
        .send_request(request)
        .await
        .with_context(unreachable)?;
    let status = response.status();
    if status == http::StatusCode::UNAUTHORIZED {
        match &token {
            None => bail!("the admin API at {admin} requires a bearer token: set {} or pass --admin-token-file FILE", crate::token::TOKEN_ENV),
            Some((_, source)) => bail!("the admin API at {admin} refused the bearer token from {source}"),
        }
    }
    let bytes = response.into_body().collect().await?.to_bytes();
    if bytes.is_empty() && !status.is_success() {
        bail!("admin API answered {status} for {path}");
    }
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into()));
    Ok((status, value))
}
