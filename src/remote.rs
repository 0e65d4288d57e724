//! Commands that talk to a running instance's admin API: `migrate`, `status`, `pause`, `resume`,
//! `promote`, `abort`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use crossfade_controller::service::ServiceStatus;
use crossfade_proxy::files;

use crate::file_kind::Kind;
use crate::token::TokenArgs;

/// Where the running instance's admin API listens.
#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// Admin API address of the running instance.
    #[arg(long, default_value_t = crate::DEFAULT_ADMIN, env = "CROSSFADE_ADMIN",
          value_parser = crate::flags::admin_to_reach)]
    pub admin: SocketAddr,
    /// The bearer token the admin API requires, if any.
    #[command(flatten)]
    pub token: TokenArgs,
}

/// How long `crossfade migrate` waits for the instance's answer before it says why it waits.
const MIGRATE_QUIET: std::time::Duration = std::time::Duration::from_secs(1);

/// `crossfade migrate FILE`: sends the file's `green:` (and optional `rollout:`, the keys it
/// writes only) to `POST /rollout`, once [`validated_rollout_file`] finds no problem in it. The
/// machine checks (green's command and workdir) are made here only when `--admin` is a loopback
/// address, so on this machine; else the instance makes them.
///
/// Prints, once started, the rollout's id, the versions it moves between, its effective policy
/// and how to follow it ([`ServiceStatus::started`], read from `GET /rollout`; trial 12, M9);
/// with `json`, the admin API's answer as it is (`{"started": 2}`). A refusal is printed as the
/// other commands print theirs (JSON, and the reason on stderr; exit code 1).
pub async fn migrate(file: &Path, args: &AdminArgs, json: bool) -> anyhow::Result<ExitCode> {
    let request = validated_rollout_file(file, args.admin.ip().is_loopback())?;
    let body = serde_json::to_vec(&request)?;
    // No `POST` to an address that is not the admin API of `crossfade run` (trial 13, N12).
    run_admin_rollout(args).await?;
    let post = call(args, http::Method::POST, "/rollout", body, Answer::Rollout);
    tokio::pin!(post);
    // The instance holds a start while the last rollout's preview stops (newuser34 C: the command
    // sat silent for up to twice its `stop_grace`, and Ctrl-C meanwhile does not take it back).
    let answer = tokio::select! {
        answer = &mut post => answer,
        () = tokio::time::sleep(MIGRATE_QUIET) => {
            crate::print_err(&format!(
                "crossfade: waiting for the answer of {} (a start is held while the last \
                 rollout's preview is still stopping, up to twice its stop_grace); interrupting \
                 this command does not cancel the start (`crossfade abort` does, once it began)",
                args.admin
            ));
            post.await
        }
    };
    let (status, reply) = answer?;
    let started = reply.get("started").and_then(serde_json::Value::as_u64);
    let (Some(id), false, true) = (started, json, status.is_success()) else {
        return print_reply(status, &reply);
    };
    // The rollout runs already: a status that cannot be read costs only the summary.
    let summary = match call(
        args,
        http::Method::GET,
        "/rollout",
        Vec::new(),
        Answer::Read,
    )
    .await
    {
        Ok((_, value)) => serde_json::from_value::<ServiceStatus>(value)
            .ok()
            .and_then(|s| s.started(id, &args.admin.to_string())),
        Err(_) => None,
    };
    let follow = format!("follow it with `crossfade status --admin {}`", args.admin);
    crate::print_out(&summary.unwrap_or_else(|| format!("rollout {id} started; {follow}")));
    // What the instance found valid but without effect (`POST /rollout`'s `warnings`).
    let warnings = reply.get("warnings").and_then(serde_json::Value::as_array);
    for warning in warnings.into_iter().flatten().filter_map(|w| w.as_str()) {
        crate::print_err(&format!("crossfade: warning: {warning}"));
    }
    Ok(ExitCode::SUCCESS)
}

/// The warnings `crossfade check` can give about a `crossfade migrate` file alone
/// ([`crossfade_controller::spec::warnings`]): sequential-judge keys written beside a
/// `judge: threshold` the file writes itself. Which judge a file that writes no `judge:` runs
/// under is the running instance's (its `rollout:` section), so those keys are left to
/// `POST /rollout`, which answers its warnings to `crossfade migrate`.
pub fn rollout_file_warnings(request: &crossfade_controller::service::StartRequest) -> Vec<String> {
    use crossfade_controller::spec::{warnings, RolloutConfig};
    let Some(changes) = &request.rollout else {
        return Vec::new();
    };
    let writes_judge = changes
        .0
        .get("analysis")
        .and_then(|a| a.get("judge"))
        .is_some();
    match changes.over(&RolloutConfig::default()) {
        Ok(rollout) if writes_judge => warnings::unread_judge_keys(&changes.0, &rollout),
        _ => Vec::new(),
    }
}

/// Reads a `crossfade migrate` file and lists every problem in one error (trial 7, G10): its rules
/// ([`StartRequest::read`]: `green` missing, bare-number rates, steps, the workload's fields) and,
/// with `machine`, what this machine lacks ([`WorkloadSpec::check_machine`]: green's command and
/// workdir). Relative paths are resolved from the file's directory (README "Paths"). `crossfade
/// check` runs the same on a file that looks like a rollout file.
///
/// # Errors
/// When the file cannot be read or parsed, or has any problem; the message names the file and
/// each problem's field.
///
/// [`StartRequest::read`]: crossfade_controller::service::StartRequest::read
/// [`WorkloadSpec::check_machine`]: crossfade_controller::spec::WorkloadSpec::check_machine
pub fn validated_rollout_file(
    file: &Path,
    machine: bool,
) -> anyhow::Result<crossfade_controller::service::StartRequest> {
    let text = files::read_config_string(file)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let refuse = |message: String| {
        let message = crate::file_kind::with_hint(message, &text, Kind::Rollout);
        anyhow::anyhow!("{}: {message}", file.display())
    };
    let (mut request, mut problems) = crossfade_controller::service::StartRequest::read(&text)
        .map_err(|e| refuse(e.to_string()))?;
    // Relative paths follow the file, as in a spec (README "Paths").
    let base = crate::serve::base_dir(file)?;
    if let Some(changes) = &mut request.rollout {
        changes.resolve_header_files(&base);
    }
    if let Some(green) = &mut request.green {
        green.resolve_paths(&base);
        if machine {
            problems.extend(green.check_machine("green"));
        }
    }
    if !problems.is_empty() {
        let error = crossfade_controller::spec::SpecError::Invalid(problems);
        return Err(refuse(error.to_string()));
    }
    Ok(request)
}

/// `crossfade status`: the rollout (`GET /rollout`) and the routes (`GET /status`), as a summary
/// (`ServiceStatus::describe`) or with `json` as one object `{"rollout": .., "proxy": ..}`.
///
/// # Errors
/// When either endpoint does not give a crossfade answer (another status than 200, or JSON without
/// the fields a `crossfade run` admin API always sends): the message names the endpoint.
pub async fn status(args: &AdminArgs, json: bool) -> anyhow::Result<ExitCode> {
    let rollout = run_admin_rollout(args).await?;
    let routes =
        get_checked(args, "/status", "routes")
            .await
            .map_err(|NotRunAdmin { status, said }| {
                anyhow::anyhow!(
                    "{}",
                    not_run_admin("/status", &args.admin.to_string(), status, &said, None)
                )
            })?;
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
    let summary = service.describe(&proxy);
    crate::print_out(&format!(
        "{}\ninstance: {}",
        summary.trim_end(),
        instance(&proxy.version, u64::from(proxy.pid))
    ));
    Ok(ExitCode::SUCCESS)
}

/// `GET /rollout` at `--admin`, which must be the admin API of `crossfade run`: its answer.
///
/// # Errors
/// When it is not (another status than 200, or JSON without `running`): the message says what
/// answered instead, naming a `crossfade proxy`'s admin API by its build and process (trial 7,
/// G11), or the address that could not be reached.
pub async fn run_admin_rollout(args: &AdminArgs) -> anyhow::Result<serde_json::Value> {
    match get_checked(args, "/rollout", "running").await {
        Ok(rollout) => Ok(rollout),
        Err(NotRunAdmin { status, said }) => {
            // A `crossfade proxy` admin answers `/status` but has no `/rollout` (trial 7, G11);
            // its build and process are named.
            let proxy = match status {
                Some(_) => match call(args, http::Method::GET, "/status", Vec::new(), Answer::Read)
                    .await
                {
                    Ok((s, v)) if s.is_success() && v.get("routes").is_some() => Some(instance(
                        v.get("version")
                            .and_then(|v| v.as_str())
                            .unwrap_or_default(),
                        v.get("pid").and_then(|p| p.as_u64()).unwrap_or_default(),
                    )),
                    _ => None,
                },
                None => None,
            };
            bail!(
                "{}",
                not_run_admin(
                    "/rollout",
                    &args.admin.to_string(),
                    status,
                    &said,
                    proxy.as_deref()
                )
            )
        }
    }
}

/// The build and the process that answered `GET /status` (its `version` and `pid`), as
/// `crossfade 0.1.0, pid 4242`; an answer from a version before these fields (`""`, 0) is said
/// so: `crossfade (version not reported), pid not reported`.
fn instance(version: &str, pid: u64) -> String {
    let version = if version.is_empty() {
        "crossfade (version not reported)".to_owned()
    } else {
        format!("crossfade {version}")
    };
    let pid = if pid == 0 {
        "pid not reported".to_owned()
    } else {
        format!("pid {pid}")
    };
    format!("{version}, {pid}")
}

/// `GET path`, which must answer 200 with a JSON object holding `field`.
///
/// # Errors
/// [`NotRunAdmin`] with the answer's status and `error` when it does not; a transport error (the
/// address cannot be reached) is `NotRunAdmin` with no status.
async fn get_checked(
    args: &AdminArgs,
    path: &str,
    field: &str,
) -> Result<serde_json::Value, NotRunAdmin> {
    let (status, value) = match call(args, http::Method::GET, path, Vec::new(), Answer::Read).await
    {
        Ok(answer) => answer,
        Err(error) => {
            return Err(NotRunAdmin {
                status: None,
                said: format!("{error:#}"),
            })
        }
    };
    if status.is_success() && value.get(field).is_some() {
        return Ok(value);
    }
    let said = value
        .get("error")
        .and_then(|e| e.as_str())
        .unwrap_or_default()
        .to_owned();
    Err(NotRunAdmin {
        status: Some(status),
        said,
    })
}

/// An answer that is not what the admin API of `crossfade run` sends: its status (`None` when the
/// address could not be reached, `said` then being the reason) and its `error` text, if any.
struct NotRunAdmin {
    status: Option<http::StatusCode>,
    said: String,
}

/// The message for `GET path` at `admin` answering `status` with `error` text `said`, in plain
/// words (trial 7, G11): when `proxy` is set (the address answered the proxy's `/status`; it
/// holds that proxy's [`instance`]) it says this is a `crossfade proxy` admin, which build and
/// process it is, and that it is not the admin of `crossfade run`.
fn not_run_admin(
    path: &str,
    admin: &str,
    status: Option<http::StatusCode>,
    said: &str,
    proxy: Option<&str>,
) -> String {
    let Some(status) = status else {
        return said.to_owned();
    };
    let said = if said.is_empty() {
        String::new()
    } else {
        format!(": {said}")
    };
    if let Some(instance) = proxy {
        // The proxy's own 404 text says the same at length: not repeated (trial 9, I15).
        format!(
            "{admin} is the admin API of a `crossfade proxy` ({instance}; GET {path} answered \
             {status}), which has no rollouts: pass the admin address of `crossfade run` as \
             --admin; a proxy's routes and weights are at GET http://{admin}/status"
        )
    } else {
        format!(
            "GET {path} at {admin} answered {status}{said}, which is not an answer of the admin API \
             of `crossfade run`; is --admin the admin address of `crossfade run`?"
        )
    }
}

/// `crossfade pause|resume|promote|abort`: `POST /rollout/{verb}`, which answers once the rollout
/// has decided: 200 with the phase it led to, or 409 with the reason it was refused (exit code 1).
///
/// A `GET /rollout` goes first (trial 13, N12): an address that is not the admin API of
/// `crossfade run` (the proxy's own listener, which forwards to the application) gets no `POST`,
/// so a mistaken `--admin` never sends a command to an application path.
pub async fn command(args: &AdminArgs, verb: &str) -> anyhow::Result<ExitCode> {
    run_admin_rollout(args).await?;
    let path = format!("/rollout/{verb}");
    let (status, reply) =
        call(args, http::Method::POST, &path, Vec::new(), Answer::Rollout).await?;
    print_reply(status, &reply)
}

fn print_reply(status: http::StatusCode, reply: &serde_json::Value) -> anyhow::Result<ExitCode> {
    // Every answer of the rollout API is an object with one of these keys. The `GET /rollout`
    // before the command made sure the address is a `crossfade run` admin API; an answer of
    // another shape now means something else answered the command (another version, or a
    // process that took the address in between), so what it did is unknown.
    let known = ["accepted", "started", "error"];
    if !known.iter().any(|k| reply.get(k).is_some()) {
        bail!("the answer ({status}) does not come from a crossfade admin API: whether the command was carried out is unknown; check with `crossfade status`");
    }
    crate::print_out(&serde_json::to_string_pretty(reply)?);
    if let (false, Some(error)) = (status.is_success(), reply["error"].as_str()) {
        crate::print_err(&format!("crossfade: refused ({status}): {error}"));
    }
    Ok(if status.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// How long the admin address has to take the connection: a loopback or LAN address answers a
/// connect in microseconds; an address that drops the SYN (a firewall, a host that is down) would
/// otherwise hold the command for the kernel's SYN retries, about two minutes.
pub const CONNECT_WITHIN: Duration = Duration::from_secs(10);

/// How long the admin API has to answer a read ([`Answer::Read`]): `GET /rollout` and `GET
/// /status` are answered from memory, in milliseconds. A process that takes the connection and
/// never answers (a stuck instance, a port that is not an admin API) held `status`, every rollout
/// command and `report` for ever (session 32); the `--kube` commands are bounded the same way
/// (`cluster::API_ANSWER`).
pub const READ_ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// How long a request to the admin API may wait for its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// A read answered from memory: at most [`READ_ANSWER_WITHIN`].
    Read,
    /// A request that waits for the rollout (a command's decision, a start held until the last
    /// preview is stopped, a report held until its rollout ended): unbounded, as the wait is the
    /// instance's work (a preview's `stop_grace`, a drain). Every such request follows a
    /// [`Answer::Read`] of `GET /rollout` at the same address, so an address that answers nothing
    /// is found by that read.
    Rollout,
}

/// One request to the admin API, with the bearer token when one is set; the reply is parsed as JSON
/// (or wrapped as a string if it is not). The connection must be taken within
/// [`CONNECT_WITHIN`]; a [`Answer::Read`] must be answered within [`READ_ANSWER_WITHIN`].
///
/// # Errors
/// When the instance cannot be reached (the message says which address was tried), does not answer
/// a read in time (the message names the request and the wait), or answers 401 (the message says
/// whether a token was missing or refused).
pub async fn call(
    args: &AdminArgs,
    method: http::Method,
    path: &str,
    body: Vec<u8>,
    answer: Answer,
) -> anyhow::Result<(http::StatusCode, serde_json::Value)> {
    let admin = args.admin;
    let request = format!("{method} {path}");
    let exchange = exchange(args, method, path, body);
    match answer {
        Answer::Rollout => exchange.await,
        Answer::Read => tokio::time::timeout(READ_ANSWER_WITHIN, exchange)
            .await
            .unwrap_or_else(|_| {
                bail!(
                    "the admin API at {admin} took the connection but did not answer {request} \
                     within {}s: is --admin the admin address of `crossfade run`, and is that \
                     process stuck (stopped with SIGSTOP, out of memory)?",
                    READ_ANSWER_WITHIN.as_secs()
                )
            }),
    }
}

/// [`call`]'s exchange, its connect bounded by [`CONNECT_WITHIN`].
async fn exchange(
    args: &AdminArgs,
    method: http::Method,
    path: &str,
    body: Vec<u8>,
) -> anyhow::Result<(http::StatusCode, serde_json::Value)> {
    let admin = args.admin;
    let token = args.token.for_request()?;
    let unreachable = || {
        format!("cannot reach the admin API at {admin} (is `crossfade run` running? see --admin)")
    };
    let stream = tokio::time::timeout(CONNECT_WITHIN, tokio::net::TcpStream::connect(admin))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "no connection within {}s (nothing at that address took it)",
                CONNECT_WITHIN.as_secs()
            )
        })
        .with_context(unreachable)?
        .with_context(unreachable)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .with_context(unreachable)?;
    tokio::spawn(conn);
    let mut request = http::Request::builder()
        .method(method.clone())
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
        // Every failure answer of crossfade's admin API has a body saying why: one without is
        // some other server's (session 44: a 404 with no body was "admin API answered 404 Not
        // Found for /rollout", neither the address nor a word that it is no admin API).
        bail!(
            "{method} {path} at {admin} answered {status} with an empty body, which is not an \
             answer of the admin API of `crossfade run`; is --admin the admin address of \
             `crossfade run`?"
        );
    }
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into()));
    Ok((status, value))
}

#[cfg(test)]
mod tests {
    use super::{instance, not_run_admin};

    #[test]
    fn the_instance_names_version_and_pid_and_says_when_they_are_not_reported() {
        assert_eq!(instance("0.1.0", 4242), "crossfade 0.1.0, pid 4242");
        assert_eq!(
            instance("", 0),
            "crossfade (version not reported), pid not reported"
        );
    }

    #[test]
    fn a_proxy_admin_is_named_in_plain_words() {
        // Trial 7, G11: no `without the "running" a crossfade admin API sends`.
        let text = not_run_admin(
            "/rollout",
            "127.0.0.1:9901",
            Some(http::StatusCode::NOT_FOUND),
            "use the admin address of crossfade run",
            Some("crossfade 0.1.0, pid 4242"),
        );
        assert_eq!(
            text,
            "127.0.0.1:9901 is the admin API of a `crossfade proxy` (crossfade 0.1.0, pid 4242; GET \
             /rollout answered 404 Not Found), which has no rollouts: pass the admin address of \
             `crossfade run` as --admin; a proxy's routes and weights are at GET \
             http://127.0.0.1:9901/status"
        );
        // Trial 9, I15: the proxy's own long 404 text is not repeated inside.
        assert!(
            !text.contains("use the admin address of crossfade run"),
            "{text}"
        );
        let text = not_run_admin(
            "/rollout",
            "127.0.0.1:9901",
            Some(http::StatusCode::NOT_FOUND),
            "",
            None,
        );
        assert_eq!(
            text,
            "GET /rollout at 127.0.0.1:9901 answered 404 Not Found, which is not an answer of the \
             admin API of `crossfade run`; is --admin the admin address of `crossfade run`?"
        );
        for proxy in [None, Some("crossfade 0.1.0, pid 1")] {
            let text = not_run_admin("/rollout", "a", Some(http::StatusCode::OK), "", proxy);
            assert!(
                !text.contains("\"running\"") && !text.contains("sends"),
                "{text}"
            );
        }
    }
}
