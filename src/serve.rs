//! `crossfade run`, `crossfade check` and `crossfade proxy`: load a file, start the proxy, its admin
//! API and (for `run`) the controller, and serve until SIGINT or SIGTERM.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use crossfade_controller::driver::children::ChildJournal;
use crossfade_controller::driver::CancellationToken;
use crossfade_controller::metrics::RolloutMetrics;
use crossfade_controller::rollout::Phase;
use crossfade_controller::service::startup::{self, GreenStart, RuntimeJournal, StartupError};
use crossfade_controller::service::{self, ServiceConfig, ServiceHandle};
use crossfade_controller::spec::{RunSpec, WorkloadSpec};
use crossfade_controller::state::{BlueCheck, ServiceState};
use crossfade_controller::store::{StateFile, StateLock};
use crossfade_proxy::admin::{serve_admin, AdminAuth, AdminExtension};
use crossfade_proxy::config::{one_line, ProxyConfig};
use crossfade_proxy::files;
use crossfade_proxy::handover::Listeners;
use crossfade_proxy::reload::{not_reloaded, RouteReload, WeightDecision};
use crossfade_proxy::saved::{Restored, SavedWeights, WeightStore, SAVED_WEIGHTS_VERSION};
use crossfade_proxy::weight::Slot;
use crossfade_proxy::{Proxy, ProxyMetrics};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;

use crate::earlier::Earlier;
use crate::file_kind::{self, Kind};
use crate::notify::ServiceManager;
use crate::pid_file::PidFile;
use crate::token::TokenArgs;

/// Exit code of `run --exit-after-rollout` and `demo` when the rollout ended rolled back or aborted.
pub const EXIT_ROLLED_BACK: u8 = 3;

/// `crossfade check FILE`: the validation `crossfade run` (or, for a proxy config, a file with a
/// top-level `routes:` key, `crossfade proxy`) runs before it binds anything, and nothing else:
/// [`validated_spec`] or [`validated_proxy_config`], the same function the server calls. A file
/// with only `green:` and `rollout:` ([`file_kind::guess`]) is a `crossfade migrate` file, checked
/// as `migrate` checks it ([`crate::remote::validated_rollout_file`]). Prints
/// every problem; `token` is read as the server reads it (an admin API on a non-loopback address
/// needs one).
pub fn check(path: &Path, token: &TokenArgs) -> anyhow::Result<ExitCode> {
    let text = files::read_config_string(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    // Not any of crossfade's files (session 41: deploy/examples/sidecar.yaml was checked as a
    // proxy config, its RBAC `rules:` read as a near miss of `routes:`).
    if let Some(kinds) = file_kind::kubernetes_kinds(&text) {
        anyhow::bail!(
            "{} is a Kubernetes manifest ({kinds}), which {} takes, not crossfade: `crossfade \
             check` takes a spec, a proxy config, the settings file of `crossfade proxy --kube \
             --config` or a `crossfade migrate` file",
            path.display(),
            file_kind::kubectl_for(&kinds)
        );
    }
    if is_proxy_config(&text) {
        return check_proxy_config(path, token);
    }
    // A `crossfade migrate` file (`green:` and optional `rollout:`, trial 7, G10): the checks
    // `migrate` makes before it sends it, this machine's included.
    if file_kind::guess(&text) == Some(Kind::Rollout) {
        let request = crate::remote::validated_rollout_file(path, true)?;
        for warning in crate::remote::rollout_file_warnings(&request) {
            crate::print_out(&format!("{}: warning: {warning}", path.display()));
        }
        crate::print_out(&format!(
            "{}: ok (rollout file for `crossfade migrate`, green: {})",
            path.display(),
            request
                .green
                .as_ref()
                .map(|g| g.describe())
                .unwrap_or_default()
        ));
        return Ok(ExitCode::SUCCESS);
    }
    // The settings file of `crossfade proxy --kube --config` (a proxy config without `routes:`,
    // deploy/examples/sidecar.yaml's): the checks of that start (trial 25: it was read as a spec).
    if file_kind::kube_settings(&text) {
        let settings = crate::kube::validated_settings(path)?;
        token.auth_for(settings.admin)?;
        for warning in settings.warnings() {
            crate::print_out(&format!("{}: warning: {warning}", path.display()));
        }
        for warning in settings.file_warnings() {
            crate::print_out(&format!("{}: warning: {warning}", path.display()));
        }
        crate::print_out(&format!(
            "{}: ok (settings for `crossfade proxy --kube --config`, admin {}; without `routes:` \
             it is no config for `crossfade proxy CONFIG`)",
            path.display(),
            settings.admin
        ));
        return Ok(ExitCode::SUCCESS);
    }
    let (spec, _, warnings) = validated_spec(path, token)?;
    for warning in &warnings {
        crate::print_out(&format!("{}: warning: {warning}", path.display()));
    }
    for line in check_spec_state_file(&spec)? {
        crate::print_out(&format!("{}: {line}", path.display()));
    }
    crate::print_out(&format!(
        "{}: ok (route {}, blue: {}{})",
        path.display(),
        spec.route.name,
        spec.blue.as_ref().map(|b| b.describe()).unwrap_or_default(),
        spec.green
            .as_ref()
            .map(|g| format!(", green: {}", g.describe()))
            .unwrap_or_default()
    ));
    Ok(ExitCode::SUCCESS)
}

/// `crossfade check` on a spec with `state_file`: what a `crossfade run` start would refuse about
/// the file, found by reading it without changing it (no lock taken, nothing renamed): a path
/// that is not a regular file (a directory, a device) or cannot be read, a file corrupt with no
/// usable backup ([`corrupt_hint`]'s words), another route's state ([`ServiceState::check_route`])
/// and a `blue:` edited after a rollout promoted another workload ([`BlueCheck::Conflict`]). A
/// corrupt file whose backup a start would use is a warning line. Trial 18, T14: `check` said
/// `ok` to each of these and `run` then refused to start.
///
/// # Errors
/// Each as `run` words it, naming `state_file` (or `blue:` for the conflict).
fn check_spec_state_file(spec: &RunSpec) -> anyhow::Result<Vec<String>> {
    let Some(path) = &spec.state_file else {
        return Ok(Vec::new());
    };
    let file = StateFile::new(path);
    file.check_creatable()
        .map_err(|e| anyhow::anyhow!("state_file: {e}"))?;
    let journal = ("its child journal", ChildJournal::path_for(file.path()));
    file.check_companions(&[journal])
        .map_err(|e| anyhow::anyhow!("state_file: {e}"))?;
    let (loaded, corrupt) = file
        .read_or_backup::<ServiceState>()
        .map_err(corrupt_hint)?;
    let mut lines = Vec::new();
    if let Some(e) = corrupt {
        lines.push(format!(
            "warning: {e}; a start would use its backup {} (and keep the corrupt file as \
             {}.corrupt)",
            file.backup_path().display(),
            path.display()
        ));
    }
    let Some(mut state) = loaded else {
        return Ok(lines);
    };
    if let Err(message) = state.check_route(&spec.route.name) {
        anyhow::bail!("state file {}: {message}", path.display());
    }
    // The workload serving before the recovery: served again if one it completes promoted a
    // workload that cannot start (`startup::recover`'s fallback).
    let before = (
        state.active.unwrap_or(Slot::Blue),
        state.active_workload.clone(),
    );
    let recovery = state.recover();
    if let Some(blue) = &spec.blue {
        match state.check_blue(blue) {
            BlueCheck::Conflict(message) => anyhow::bail!("{message} ({})", path.display()),
            // The edited blue: serves, and `check` has looked at it with the spec.
            BlueCheck::Edited(_) => {}
            // What the state file records as serving starts, not the spec's blue (newuser34 A).
            BlueCheck::Serve | BlueCheck::ServeRecorded => {
                let checked = startup::check_recorded_active(&state, blue, file.path());
                match (checked, recovery.ended) {
                    (Ok(()), _) => {}
                    // Completing a rollout, `run` falls back rather than refuse (check34: `check`
                    // refused a start that `run` served).
                    (Err(problems), Some(Phase::Completed)) => {
                        let replaced = before.1.as_ref().unwrap_or(blue).label(before.0);
                        let promoted = (state.active_workload.as_ref())
                            .map_or("the promoted workload", |w| {
                                w.label(state.active.unwrap_or(before.0.other()))
                            });
                        // The problems, without the note that says to remove the state file.
                        let problems = problems.rsplit_once('\n').map_or(&*problems, |(p, _)| p);
                        let problems = problems.replace('\n', "; ");
                        lines.push(format!(
                            "warning: {problems}: state file {} records a rollout that \
                             promoted {promoted} and did not end; a start completes it, and as \
                             {promoted} cannot start here, {replaced}, which it replaced, serves \
                             again and the rollout is recorded rolled back",
                            path.display()
                        ));
                    }
                    (Err(problems), _) => anyhow::bail!(problems),
                }
            }
        }
    }
    Ok(lines)
}

/// Whether `text` is a `crossfade proxy` config rather than a spec: one with a top-level `routes`
/// key (a spec has one `route`), read from its lines when it does not parse
/// ([`crate::file_kind::guess`]), so that a config with a syntax error gets the proxy's parse
/// error with its line and column.
fn is_proxy_config(text: &str) -> bool {
    crate::file_kind::guess(text) == Some(crate::file_kind::Kind::ProxyConfig)
}

/// `crossfade check` on a proxy config: the checks of a `crossfade proxy` start
/// ([`validated_proxy_config`]), without binding or probing anything.
fn check_proxy_config(path: &Path, token: &TokenArgs) -> anyhow::Result<ExitCode> {
    let (config, _) = validated_proxy_config(path, token)?;
    for warning in config.warnings() {
        crate::print_out(&format!("{}: warning: {warning}", path.display()));
    }
    for warning in config.file_warnings() {
        crate::print_out(&format!("{}: warning: {warning}", path.display()));
    }
    if let Some(state) = &config.state_file {
        for line in check_state_file(state, &config)? {
            crate::print_out(&format!("{}: {line}", path.display()));
        }
    }
    let names: Vec<&str> = config.routes.iter().map(|r| r.name.as_str()).collect();
    crate::print_out(&format!(
        "{}: ok (proxy config, {} route{}: {})",
        path.display(),
        names.len(),
        if names.len() == 1 { "" } else { "s" },
        names.join(", ")
    ));
    Ok(ExitCode::SUCCESS)
}

/// Everything `crossfade run` checks before it binds anything, and so everything `crossfade check`
/// checks on a spec: the spec's rules with the proxy's rules on the route it derives
/// ([`RunSpec::load`]), this machine's commands and working directories, and the admin API's
/// token for the spec's `admin` address. With them, the spec's warnings
/// ([`RunSpec::warnings`]: what is valid but does nothing or cannot be told apart), which
/// `check` prints and `run` logs.
///
/// # Errors
/// The spec's problems, all at once (under the spec's own field paths), or the token's.
pub fn validated_spec(
    path: &Path,
    token: &TokenArgs,
) -> anyhow::Result<(RunSpec, AdminAuth, Vec<String>)> {
    let (spec, warnings) = load_spec(path)?;
    let auth = token.auth_for(spec.admin)?;
    Ok((spec, auth, warnings))
}

/// Everything `crossfade proxy CONFIG` checks before it binds anything, and so everything
/// `crossfade check` checks on a proxy config: every rule ([`ProxyConfig::from_yaml`], as a
/// SIGHUP reload checks it too), the TLS files and the access log's, relative paths taken from
/// the config file's directory ([`ProxyConfig::load`], [`ProxyConfig::check_files`]), and the
/// admin API's token for the config's `admin` address.
///
/// # Errors
/// The config's problems, all at once, or the token's.
pub fn validated_proxy_config(
    path: &Path,
    token: &TokenArgs,
) -> anyhow::Result<(ProxyConfig, AdminAuth)> {
    let text = read_proxy_config(path)?;
    let config = ProxyConfig::load(&text, &base_dir(path)?)
        .and_then(|config| config.check_files(Some(path)).map(|()| config))
        .map_err(|e| {
            let message = file_kind::with_hint(e.to_string(), &text, Kind::ProxyConfig);
            anyhow::anyhow!("proxy config {} is not valid:\n{message}", path.display())
        })?;
    let auth = token.auth_for(config.admin)?;
    Ok((config, auth))
}

/// What a start would do with the state file `path` of `config`, without writing anything: one
/// line per saved route (restored, or ignored and why), and a note when the file is damaged but
/// its backup would serve.
///
/// # Errors
/// As a start refuses it ([`saved_weights`]): the file and its backup both corrupt, a document of
/// another version, a file that cannot be read.
fn check_state_file(path: &Path, config: &ProxyConfig) -> anyhow::Result<Vec<String>> {
    let file = StateFile::new(path);
    file.check_creatable()
        .map_err(|e| anyhow::anyhow!("state_file: {e}"))?;
    file.check_companions(&[])
        .map_err(|e| anyhow::anyhow!("state_file: {e}"))?;
    let (saved, corrupt) = file
        .read_or_backup::<SavedWeights>()
        .map_err(weights_corrupt)?;
    let mut lines = Vec::new();
    if let Some(e) = corrupt {
        lines.push(format!(
            "warning: {e}; a start would use its backup {}",
            file.backup_path().display()
        ));
    }
    let Some(saved) = saved else {
        return Ok(lines);
    };
    check_version(&saved, path)?;
    let mut routes = config.routes.clone();
    for outcome in saved.restore(&mut routes) {
        lines.push(format!(
            "state file {}: at start: {outcome}",
            path.display()
        ));
    }
    Ok(lines)
}

/// The proxy's `state_file` as a [`WeightStore`]: saved as `crossfade run` saves its rollout
/// state ([`StateFile::save`]: a temporary file, fsync, rename, directory fsync, and a `.bak`
/// copy the same way).
#[derive(Debug)]
struct WeightFile(StateFile);

impl WeightStore for WeightFile {
    /// A failure before the file itself is replaced refuses the change (the file keeps the weights
    /// in force). A failure of the backup alone does not: the file already holds the change,
    /// which a restart would restore, so refusing it would leave the file ahead of the weights
    /// served; it is logged as an error (the backup is one change behind until a save succeeds).
    fn save(&self, weights: &SavedWeights) -> Result<(), String> {
        match self.0.save(weights) {
            Ok(()) => Ok(()),
            Err(crossfade_controller::Error::StateIo { path, source })
                if path == self.0.backup_path() =>
            {
                tracing::error!(
                    "state file {} saved, but not its backup {}: {source}; the backup holds the \
                     weights before this change until a save succeeds",
                    self.0.path().display(),
                    path.display()
                );
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

/// Takes `config`'s `state_file` lock ([`StateFile::lock`], `<state_file>.lock`), which the
/// returned guard holds for the process's life, so that no two proxies (nor a proxy and a
/// `crossfade run`) save to one file. `handed` is the lock file a binary upgrade's old process
/// handed over (see [`crossfade_proxy::handover`]): adopted when it is this file's, so the lock
/// passes on without a moment free; else the lock is taken as on a fresh start. `None` without
/// `state_file`.
///
/// # Errors
/// Naming `state_file`: the lock is held by another process (its pid when its lock file says
/// it), or the lock file cannot be created.
pub fn lock_state_file(
    config: &ProxyConfig,
    handed: Option<std::os::fd::OwnedFd>,
) -> anyhow::Result<Option<StateLock>> {
    let Some(path) = &config.state_file else {
        return Ok(None);
    };
    let file = StateFile::new(path);
    let refused = |e: crossfade_controller::Error| anyhow::anyhow!("state_file: {e}");
    if let Some(handed) = handed {
        if let Some(lock) = file.adopt_lock(handed).map_err(refused)? {
            return Ok(Some(lock));
        }
    }
    file.lock().map(Some).map_err(refused)
}

/// Where the weights of a starting `crossfade proxy CONFIG` come from, and from now on go: without
/// `state_file`, the config file alone (returns `from the config file` for the start line). With
/// it, unless the routes were `inherited` from a binary upgrade's old process (which saved them
/// last), the saved weights are restored ([`crossfade_proxy::saved`]: an INFO line per route
/// restored, a WARN per saved route ignored, with why), then every change of the routes is saved
/// before it takes effect, and once now; returns `state file PATH`, or, when no saved route was
/// restored (none saved yet, or every one ignored), `from the config file (state file PATH ...)`
/// saying which.
///
/// # Errors
/// The state file and its backup both corrupt (a refusal naming the file and what to do: with no
/// known-good weights, guessing could send traffic back to a backend the operator moved it off);
/// a document of another version; a file that cannot be read or saved.
pub fn saved_weights(
    proxy: &Proxy,
    config: &ProxyConfig,
    inherited: bool,
) -> anyhow::Result<String> {
    let Some(path) = &config.state_file else {
        return Ok("from the config file (no state_file: weights set through the admin API last until the process ends)".to_owned());
    };
    let file = StateFile::new(path);
    let mut source = format!("state file {}", path.display());
    if !inherited {
        let (saved, damaged) = file
            .load_or_backup::<SavedWeights>()
            .map_err(weights_corrupt)?;
        if let Some(note) = damaged {
            tracing::error!("{note}");
        }
        let restored = match saved {
            Some(saved) => restore(proxy, &saved, path)?,
            None => Restoring::NoneSaved,
        };
        if let Some(source_now) = restored.unrestored_source(path) {
            source = source_now;
        }
    }
    proxy
        .keep_weights_in(Arc::new(WeightFile(file)))
        .map_err(|e| anyhow::anyhow!("state_file: {e}"))?;
    Ok(source)
}

/// What a start took from its state file, for the start line's `weights=`.
enum Restoring {
    /// Neither the file nor its backup exists: a first start, or both were removed.
    NoneSaved,
    /// The saved document, with how many of its routes were restored and how many ignored.
    Saved { applied: usize, ignored: usize },
}

impl Restoring {
    /// The start line's `weights=` when no saved route was restored (the config file's weights
    /// serve, and the line must not name the state file as their source); `None` when some were.
    fn unrestored_source(&self, path: &Path) -> Option<String> {
        let why = match *self {
            Restoring::Saved { applied: 1.., .. } => return None,
            Restoring::NoneSaved | Restoring::Saved { ignored: 0, .. } => format!(
                "state file {} holds no route yet: a first start, or the file and its backup \
                 were removed",
                path.display()
            ),
            Restoring::Saved { ignored, .. } => format!(
                "state file {}: none of its {ignored} saved routes restored, as the warnings \
                 above say",
                path.display()
            ),
        };
        Some(format!(
            "from the config file ({why}; every change is saved there from now on)"
        ))
    }
}

/// Restores `saved` over the config file's weights, one log line per saved route: INFO when
/// restored, WARN with why when ignored.
///
/// # Errors
/// A document of another version; a restore the routing table refuses.
fn restore(proxy: &Proxy, saved: &SavedWeights, path: &Path) -> anyhow::Result<Restoring> {
    check_version(saved, path)?;
    let (mut applied, mut ignored) = (0, 0);
    for outcome in proxy
        .restore_weights(saved)
        .map_err(|e| anyhow::anyhow!("{e}"))?
    {
        match outcome {
            Restored::Applied { .. } => {
                applied += 1;
                tracing::info!("state file {}: {outcome}", path.display())
            }
            Restored::Ignored { .. } => {
                ignored += 1;
                tracing::warn!("state file {}: {outcome}", path.display())
            }
        }
    }
    Ok(Restoring::Saved { applied, ignored })
}

/// A saved document of another format version is refused, naming the file.
fn check_version(saved: &SavedWeights, path: &Path) -> anyhow::Result<()> {
    if saved.version != SAVED_WEIGHTS_VERSION {
        anyhow::bail!(
            "state file {} has format version {}, this crossfade reads version {}: remove it (and \
             its .bak) to start from the config file's weights",
            path.display(),
            saved.version,
            SAVED_WEIGHTS_VERSION
        );
    }
    Ok(())
}

/// The first save of a start failed (`error` names the file and the OS error): nothing was
/// stopped or started yet, and nothing will be.
fn unwritable(error: crossfade_controller::Error) -> anyhow::Error {
    anyhow::anyhow!(
        "state_file: {error}; refusing to start: nothing was started, and what the previous run \
         left running (if anything) was neither stopped nor taken over, since a decision that \
         cannot be saved would be undone by the next start; make the file's directory writable \
         (or free space) and start again"
    )
}

/// What the would-be state file at `path` is when it is one of crossfade's settings files
/// ([`file_kind::settings_file`]): not corrupt state, which its error must not call it.
pub(crate) fn settings_kind(path: &Path) -> Option<&'static str> {
    let text = files::read_config_string(path).ok()?;
    file_kind::settings_file(&text)
}

/// The error for a `state_file` at `path` that holds one of crossfade's settings files (the
/// config or spec itself, another one): it is not corrupt state, and the corrupt-state advice,
/// to remove the file and its backup, would remove settings.
///
/// A state file of the other command (`expected` is this command's kind) is said to be that, as
/// removing it would lose the other process's state.
fn settings_as_state(path: &Path, expected: file_kind::StateKind) -> Option<anyhow::Error> {
    if let Some(kind) = settings_kind(path) {
        return Some(anyhow::anyhow!(
            "state_file: {} is {kind}, not a state file: crossfade writes its state there, so \
             name a path of its own (nothing was started, and the file was left as it was)",
            path.display()
        ));
    }
    let text = files::read_config_string(path).ok()?;
    let kind = file_kind::state_kind(&text).filter(|kind| *kind != expected)?;
    Some(anyhow::anyhow!(
        "state_file: {} is {}, not this command's: give each crossfade process a state_file of \
         its own (nothing was started, and the file was left as it was)",
        path.display(),
        kind.described()
    ))
}

/// The error for a state file at `path` that could not be read as state (`source`), nor its
/// backup: a settings file named as the state file says so ([`settings_as_state`]); corrupt state
/// says what is unknown for it (`unknown`) and that removing both files starts from `afresh`.
/// `expected` is the kind of state this command keeps there.
/// The backup's own state is said (`backup`, [`backup_state`]): missing, or corrupt and why.
/// The state file's cause is written into the message rather than chained: [`report`] leaves out
/// a cause whose text was already said, and a backup damaged alike (both files empty) says the
/// same text, which left the message ending in `; the state file` (trial 39).
///
/// [`report`]: crate::report()
fn state_corrupt(
    expected: file_kind::StateKind,
    path: &Path,
    source: impl std::error::Error,
    backup: &str,
    unknown: &str,
    afresh: &str,
) -> anyhow::Error {
    settings_as_state(path, expected).unwrap_or_else(|| {
        anyhow::anyhow!(
            "state file {} is corrupt and its backup {}.bak {backup}, so {unknown} (restore \
             either file, or remove both to start from {afresh}); the state file: {source}",
            path.display(),
            path.display()
        )
    })
}

/// What is wrong with the backup of the state file at `path`, read as `T`: `is missing`, `is
/// corrupt too (CAUSE)` or `cannot be read (CAUSE)`; until trial 28 the operator read "missing
/// or corrupt too", and could not tell whether a backup was there to restore.
fn backup_state<T: serde::de::DeserializeOwned>(path: &Path) -> String {
    let mut backup = path.as_os_str().to_owned();
    backup.push(".bak");
    match StateFile::new(Path::new(&backup)).load::<T>() {
        Ok(None) => "is missing".to_owned(),
        Err(crossfade_controller::Error::StateCorrupt { source, .. }) => {
            format!("is corrupt too ({source})")
        }
        Err(e) => format!("cannot be read ({e})"),
        // Written meanwhile (another process?): the next start reads it.
        Ok(Some(_)) => "was unreadable a moment ago".to_owned(),
    }
}

/// A corrupt state file without a usable backup: the error, plus what the operator can do.
fn weights_corrupt(error: crossfade_controller::Error) -> anyhow::Error {
    match error {
        crossfade_controller::Error::StateCorrupt { path, source } => state_corrupt(
            file_kind::StateKind::Proxy,
            &path,
            source,
            &backup_state::<SavedWeights>(&path),
            "the weights last in force are unknown and the proxy was not started",
            "the config file's weights",
        ),
        other => other.into(),
    }
}

/// The text of the proxy config at `path`, at start and on SIGHUP alike.
///
/// # Errors
/// `cannot read proxy config PATH: <the OS error>` (a missing or unreadable file, not UTF-8).
fn read_proxy_config(path: &Path) -> anyhow::Result<String> {
    files::read_config_string(path)
        .with_context(|| format!("cannot read proxy config {}", path.display()))
}

/// Reads, validates and resolves a spec: relative paths are taken from the spec file's directory,
/// and every process workload's command and working directory must exist on this machine. With
/// the spec, its warnings ([`RunSpec::warnings`]).
fn load_spec(path: &Path) -> anyhow::Result<(RunSpec, Vec<String>)> {
    let text = files::read_config_string(path)
        .with_context(|| format!("cannot read spec {}", path.display()))?;
    let spec = RunSpec::load(&text, &base_dir(path)?).map_err(|e| {
        let message = file_kind::with_hint(e.to_string(), &text, Kind::Spec);
        anyhow::anyhow!("spec {} is not valid:\n{message}", path.display())
    })?;
    // The files the proxy reads and writes, by the proxy's rules (`crossfade proxy`'s
    // `check_files`): TLS files that load, an access log that opens for appending, none of them
    // the spec itself, the state file or each other, nor a file only `run` has: a workload's
    // program (an access log or state file there would overwrite it, and the next start of an
    // instance would run what was written) or the state file's child journal. The spec's fields
    // have the proxy's names.
    let mut files = spec.proxy_config(Slot::Blue, Vec::new(), spec.blue_protocol());
    files.state_file = spec.state_file.clone();
    files
        .check_files_among(
            Some(path),
            &run_own_files(&spec),
            crossfade_proxy::config::FilesOf::Run,
        )
        .map_err(|e| anyhow::anyhow!("spec {} is not valid:\n{e}", path.display()))?;
    let mut warnings = spec.warnings(&text);
    warnings.extend(files.file_warnings());
    Ok((spec, warnings))
}

/// The files a `crossfade run` of `spec` has beside the proxy's own, which no file its proxy
/// writes may be: each process workload's program (`blue.command`, `green.command`, resolved as
/// it is started) and, with `state_file`, the child journal beside the file it names
/// (`<state_file>.children`, which `run` rewrites at every start and stop of a process).
fn run_own_files(spec: &RunSpec) -> Vec<crossfade_proxy::config::OtherFile> {
    use crossfade_proxy::config::OtherFile;
    let mut files = Vec::new();
    for (slot, workload) in [("blue", &spec.blue), ("green", &spec.green)] {
        if let Some(program) = workload
            .as_ref()
            .and_then(crossfade_controller::image::program)
        {
            files.push(OtherFile {
                field: format!("{slot}.command"),
                path: program,
                writes: None,
            });
        }
    }
    if let Some(state_file) = &spec.state_file {
        let journal = ChildJournal::path_for(&crossfade_proxy::files::real_path(state_file));
        // Written as `.NAME.tmp` and renamed into place, as the state file is.
        let name = journal.file_name().unwrap_or_default().to_string_lossy();
        let temporary = journal.with_file_name(format!(".{name}.tmp"));
        files.push(OtherFile {
            field: "state_file's child journal".to_owned(),
            path: journal,
            writes: Some("records every process it starts in it"),
        });
        files.push(OtherFile {
            field: "state_file's child journal's temporary file".to_owned(),
            path: temporary,
            writes: Some("writes the journal into it, then renames it over the journal"),
        });
    }
    files
}

/// The absolute directory of a file named on the command line, from which its relative paths are
/// resolved.
pub fn base_dir(file: &Path) -> anyhow::Result<std::path::PathBuf> {
    let absolute = std::path::absolute(file)
        .with_context(|| format!("cannot resolve the path {}", file.display()))?;
    Ok(absolute
        .parent()
        .map_or_else(|| std::path::PathBuf::from("/"), Path::to_path_buf))
}

/// `crossfade proxy CONFIG`: the proxy alone over static endpoints; with `upgrade`, it can be
/// upgraded in place (see `upgrade`); with `pid_file`, its ID is written there once it serves
/// (see `pid_file`).
pub async fn proxy(
    path: &Path,
    token: &TokenArgs,
    upgrade: Option<crate::upgrade::Upgrade<'_>>,
    pid_file: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    // Before anything binds: `/readyz` may answer before this task is scheduled again.
    let mut signals =
        Signals::install().usr2_ignored_because("binary upgrade needs --upgrade-socket");
    // Before binding anything: an admin API open to the network never starts.
    let (config, auth) = validated_proxy_config(path, token)?;
    if let Some(pid_file) = pid_file {
        let writes = "writes its process ID into it";
        let clashes = config.flag_file_clashes(Some(path), "--pid-file", pid_file, writes);
        if let Some(clash) = clashes.first() {
            // The flag's value is wrong by itself: a usage error (exit 2; user44b, session 44).
            return Err(crate::flags::usage(clash.clone()));
        }
    }
    let pid_file = pid_file.map(PidFile::check).transpose()?;
    if let Some(upgrade) = upgrade {
        // It warns about the file's routes when it serves them (not when it takes over).
        return crate::upgrade::proxy(path, &config, auth, upgrade, pid_file.as_ref()).await;
    }
    warn_about(&config, path, "");
    // Held until this process exits; before binding, so that a refused start binds nothing.
    let _state_lock = lock_state_file(&config, None)?;
    let listener = bind_proxy(config.listen, "listen", None).await?;
    let admin = bind_proxy(config.admin, "admin", None).await?;
    // The bound addresses: with port 0 in the file, the start line is where to find them.
    let (listen_addr, admin_addr) = (listener.local_addr()?, admin.local_addr()?);
    let (proxy, registry) = build_proxy(&config)?;
    crate::fd_limit::raise_or_warn(config.limits.max_connections, None);
    // Before serving: no request sees the file's weights when saved ones win.
    let weights = saved_weights(&proxy, &config, false)?;
    let stack = Stack::serve(proxy, registry, None, auth, listener, admin);
    if let Some(Err(e)) = pid_file.as_ref().map(PidFile::write) {
        stack.stop().await;
        return Err(e);
    }
    let via = stack.proxy.via_pseudonym().unwrap_or("off");
    tracing::info!(version = crossfade_proxy::process::VERSION, pid = std::process::id(), listen = %listen_addr, admin = %admin_addr, via, weights, "proxy serving");
    let manager = ServiceManager::from_env();
    let proxy = stack.proxy.clone();
    tokio::select! {
        never = manager.ready_after_first_probes(&proxy) => match never {},
        () = signals.wait_or(|| reload_notifying(&manager, &proxy, path, &config)) => {}
    }
    manager.stopping();
    stop_noting_signals(stack, config.drain_timeout, signals.into_drain()).await;
    if let Some(pid_file) = pid_file {
        pid_file.remove_if_mine();
    }
    Ok(ExitCode::SUCCESS)
}

/// The proxy and its admin API, serving until [`Stack::stop`].
pub struct Stack {
    /// The proxy handle (routing table, stats).
    pub proxy: Proxy,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Stack {
    /// Starts serving `proxy` and its admin API (guarded by `auth`) on already-bound listeners.
    pub fn serve(
        proxy: Proxy,
        registry: Registry,
        extension: Option<Arc<dyn AdminExtension>>,
        auth: AdminAuth,
        listener: TcpListener,
        admin: TcpListener,
    ) -> Stack {
        let (stop, rx) = watch::channel(false);
        let stopped = move || {
            let mut rx = rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };
        // Called here, not in the task: `Proxy::serve` marks the proxy serving (`GET /readyz`)
        // when it is called, and the caller says `READY=1` as soon as this returns, before the
        // task may have run once (a race that answered `/readyz` 503 after `READY=1`).
        let serve = proxy.serve(listener, stopped());
        let serving = tokio::spawn(async move {
            if let Err(e) = serve.await {
                tracing::error!("proxy: {e}");
            }
        });
        let p = proxy.clone();
        let s2 = stopped();
        let admin_task = tokio::spawn(async move {
            if let Err(e) = serve_admin(p, Arc::new(registry), extension, auth, admin, s2).await {
                tracing::error!("admin API: {e}");
            }
        });
        Stack {
            proxy,
            stop,
            tasks: vec![serving, admin_task],
        }
    }

    /// Tells the proxy and the admin API to stop accepting and drain, without waiting.
    pub fn stop_accepting(&self) {
        let _ = self.stop.send(true);
    }

    /// Stops accepting, drains in-flight requests, and returns when both listeners are closed.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// A proxy with its metrics registered in a fresh `crossfade` registry.
///
/// # Errors
/// When the config is invalid (every problem listed).
pub fn build_proxy(config: &ProxyConfig) -> anyhow::Result<(Proxy, Registry)> {
    let mut registry = Registry::with_prefix("crossfade");
    let metrics = ProxyMetrics::register(&mut registry);
    let proxy = Proxy::new(config, metrics).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((proxy, registry))
}

pub(crate) async fn bind(addr: std::net::SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot bind the {what} address {addr}"))
}

/// [`bind`] for `crossfade proxy CONFIG`, whose address is most often in use because a proxy
/// serves there already: a new binary started by hand to replace it (without the running one's
/// `--upgrade-socket`, or with another) failed with "Address already in use" alone. `socket` is
/// this process's `--upgrade-socket`, under which nothing listened.
pub(crate) async fn bind_proxy(
    addr: std::net::SocketAddr,
    what: &str,
    socket: Option<&Path>,
) -> anyhow::Result<TcpListener> {
    let error = match TcpListener::bind(addr).await {
        Ok(listener) => return Ok(listener),
        Err(error) => error,
    };
    let mut message = format!("cannot bind the {what} address {addr}: {error}");
    if error.kind() == std::io::ErrorKind::AddrInUse {
        message.push_str(&match socket {
            None => " (another process listens there: a proxy serving already? To replace one \
                      in place, start this one with the --upgrade-socket that one was started \
                      with, or send that one SIGUSR2)"
                .to_owned(),
            Some(socket) => format!(
                " (another process listens there, and none on --upgrade-socket {}: a proxy \
                 serving already, started without --upgrade-socket or with another path? Give \
                 this one the same --upgrade-socket as that one)",
                socket.display()
            ),
        });
    }
    Err(anyhow::anyhow!(message))
}

/// SIGTERM, SIGINT and SIGHUP, caught from the moment [`Signals::install`] returns. A command
/// installs them before it binds anything, so that a signal sent as soon as it answers `/readyz`
/// (a supervisor, a test, an orchestrator's preStop) is handled (drain, stop the workloads, exit
/// 0) rather than killing the process by the default action: once the admin API serves, another
/// worker thread can answer before the main task reaches its wait (seen under CPU load).
///
/// SIGUSR1 and SIGUSR2 are caught too: their default action (POSIX) ends the process at once,
/// without a drain and leaving `crossfade run`'s workloads orphaned. Where they mean nothing
/// (everywhere but `crossfade proxy --upgrade-socket`'s SIGUSR2) each one is logged as a warning
/// naming why it is ignored, and the process keeps serving.
pub struct Signals {
    /// `None` when a handler could not be installed: then only Ctrl-C stops the process.
    caught: Option<(Signal, Signal, Signal)>,
    /// SIGUSR1 and SIGUSR2; `None` when a handler could not be installed.
    user: Option<(Signal, Signal)>,
    /// Why SIGUSR2 is ignored by this command, for its warning.
    usr2_why: &'static str,
}

impl Signals {
    /// Installs the handlers; signals that arrive from now on are kept until [`Signals::wait_or`].
    pub fn install() -> Signals {
        let caught = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(term), Ok(int), Ok(hup)) => Some((term, int, hup)),
            _ => {
                tracing::warn!(
                    "cannot install SIGTERM/SIGHUP handlers; only Ctrl-C stops crossfade"
                );
                None
            }
        };
        let user = match (
            signal(SignalKind::user_defined1()),
            signal(SignalKind::user_defined2()),
        ) {
            (Ok(usr1), Ok(usr2)) => Some((usr1, usr2)),
            _ => {
                tracing::warn!(
                    "cannot install SIGUSR1/SIGUSR2 handlers; either one ends crossfade"
                );
                None
            }
        };
        Signals {
            caught,
            user,
            usr2_why:
                "this command has no binary upgrade (crossfade proxy and crossfade run have one with \
                 --upgrade-socket)",
        }
    }

    /// Names why SIGUSR2 is ignored in its warning (e.g. `binary upgrade needs --upgrade-socket`).
    pub fn usr2_ignored_because(mut self, why: &'static str) -> Signals {
        self.usr2_why = why;
        self
    }

    /// Resolves on SIGINT or SIGTERM (caught since [`Signals::install`]); each SIGHUP calls
    /// `on_hangup`; each SIGUSR1 or SIGUSR2 is logged as ignored.
    pub async fn wait_or(&mut self, mut on_hangup: impl FnMut()) {
        let Some((term, int, hup)) = &mut self.caught else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        let usr2_why = self.usr2_why;
        let (mut usr1, mut usr2) = match &mut self.user {
            Some((usr1, usr2)) => (Some(usr1), Some(usr2)),
            None => (None, None),
        };
        loop {
            tokio::select! {
                _ = int.recv() => break,
                _ = term.recv() => break,
                _ = hup.recv() => on_hangup(),
                _ = recv_or_never(&mut usr1) => {
                    tracing::warn!("SIGUSR1 ignored: crossfade gives it no meaning");
                }
                _ = recv_or_never(&mut usr2) => tracing::warn!("SIGUSR2 ignored: {usr2_why}"),
            }
        }
        tracing::info!("shutting down: draining in-flight requests");
    }

    /// The streams for [`stop_noting_signals`], once [`Signals::wait_or`] has returned.
    pub fn into_drain(self) -> DrainSignals {
        let (term, int, hup) = match self.caught {
            Some((term, int, hup)) => (Some(term), Some(int), Some(hup)),
            None => (None, None, None),
        };
        DrainSignals {
            term,
            int,
            hup,
            usr2: self.user.map(|(_, usr2)| usr2),
        }
    }

    /// [`Signals::wait_or`] for a process with nothing to reload: SIGHUP is logged and ignored.
    pub async fn wait(&mut self) {
        self.wait_or(|| tracing::info!("SIGHUP ignored: there is nothing to reload"))
            .await;
    }
}

/// [`Stack::stop`], logging each SIGTERM, SIGINT, SIGHUP or SIGUSR2 that arrives during the drain
/// (trial 13 N14: a second Ctrl-C was ignored without a word; trial 17 T9: a SIGUSR2 too). The drain goes on to its end: in-flight
/// requests keep their `drain_timeout`, as a service manager that repeats its stop signal expects
/// (systemd and the kubelet escalate with SIGKILL, which the log names as the way to stop at once).
pub async fn stop_noting_signals(
    stack: Stack,
    drain_timeout: std::time::Duration,
    signals: DrainSignals,
) {
    let started = tokio::time::Instant::now();
    noting_signals(stack.stop(), signals, |name| {
        let left = drain_timeout.saturating_sub(started.elapsed());
        tracing::warn!(
            signal = name,
            "{name} ignored: already draining; in-flight requests get at most {}s more \
             (drain_timeout); SIGKILL stops the process at once",
            left.as_secs()
        );
    })
    .await;
}

/// Runs `work` (a drain, a stop) to its end, calling `note` with the name of each SIGTERM,
/// SIGINT, SIGHUP or SIGUSR2 that arrives meanwhile (`"SIGTERM"`...), so that none is swallowed
/// without a word; `work` is never cut short by them.
pub async fn noting_signals<F: std::future::Future>(
    work: F,
    signals: DrainSignals,
    mut note: impl FnMut(&'static str),
) -> F::Output {
    let DrainSignals {
        mut term,
        mut int,
        mut hup,
        mut usr2,
    } = signals;
    tokio::pin!(work);
    loop {
        let (mut t, mut i, mut h) = (term.as_mut(), int.as_mut(), hup.as_mut());
        let mut u = usr2.as_mut();
        let name = tokio::select! {
            out = &mut work => return out,
            () = recv_or_never(&mut t) => "SIGTERM",
            () = recv_or_never(&mut i) => "SIGINT",
            () = recv_or_never(&mut h) => "SIGHUP",
            // Trial 17, T9: a SIGUSR2 to a process draining after an upgrade (its successor serves)
            // was swallowed without a word.
            () = recv_or_never(&mut u) => "SIGUSR2",
        };
        note(name);
    }
}

/// The signal streams [`stop_noting_signals`] logs during a drain: the very ones the serving loop
/// waited on, so that a signal that arrives between the loop's end and the drain is kept (a
/// stream installed afresh sees only later deliveries: a second SIGTERM sent right after the
/// first went unlogged). `None` where a handler could not be installed.
pub struct DrainSignals {
    /// SIGTERM.
    pub term: Option<Signal>,
    /// SIGINT.
    pub int: Option<Signal>,
    /// SIGHUP.
    pub hup: Option<Signal>,
    /// SIGUSR2.
    pub usr2: Option<Signal>,
}

/// The next delivery of `signal`; never, when it could not be installed.
pub(crate) async fn recv_or_never(signal: &mut Option<&mut Signal>) {
    match signal {
        Some(signal) => {
            signal.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// Re-reads a proxy config and applies its routes in one table generation, and reloads the TLS
/// certificate and key files. A route keeps weights set at runtime (admin API) unless its weights
/// in the file changed since the last load ([`crossfade_proxy::reload`]); each route whose weights
/// differ is logged with the weights that won; the access log's file is reopened (logrotate).
/// Listener addresses, limits, the TLS file names and
/// upstream settings need a restart: a change to them (against `in_force`, the config read at
/// start) is logged as a warning naming each changed key. A config with errors changes no route, a
/// bad certificate keeps the old one.
pub fn reload(proxy: &Proxy, path: &Path, in_force: &ProxyConfig) {
    reload_tls(proxy);
    reopen_access_log(proxy);
    // The start's wording for a missing file (trial 7, G9), not a bare OS error.
    let result = read_proxy_config(path)
        .and_then(|text| Ok((text, base_dir(path)?)))
        .map_err(|e| format!("{e:#}"))
        .and_then(|(text, base)| ProxyConfig::load(&text, &base).map_err(|e| e.to_string()))
        .and_then(|config| {
            warn_not_reloaded(in_force, &config, path);
            warn_about(&config, path, "SIGHUP: ");
            proxy
                .reload_routes(config.routes)
                .map_err(|e| e.to_string())
        });
    match result {
        Ok(report) => log_reload(&report, path),
        // One line: a log shipper makes one record per line (trial 5 F2).
        Err(e) => tracing::error!(
            "SIGHUP: {} not reloaded, routes unchanged: {}",
            path.display(),
            one_line(&e)
        ),
    }
}

/// [`reload`] framed by `RELOADING=1` and `READY=1` to the service manager (see `notify`):
/// neither is sent before the start's own `READY=1` ([`ServiceManager::ready_after_first_probes`]).
pub fn reload_notifying(
    manager: &ServiceManager,
    proxy: &Proxy,
    path: &Path,
    in_force: &ProxyConfig,
) {
    manager.reloading();
    reload(proxy, path, in_force);
    manager.reloaded();
}

/// The one rule for how long a proxy that starts waits, before it says that it serves, for the
/// first health probe round of its routes with active checks ([`Proxy::first_probes`]: every
/// endpoint of such a route has the result of its first probe, passed or failed): the longest
/// `health.timeout` of its routes plus one second. `None` without routes with active checks
/// (nothing to wait for).
///
/// Each probe ends within its route's `health.timeout`, so the round is normally over well
/// within the bound; the second is room for checker tasks that a busy machine runs late, and the
/// bound keeps a checker that cannot run from holding the start for ever.
pub fn first_probe_bound(proxy: &Proxy) -> Option<std::time::Duration> {
    let longest = proxy
        .routes()
        .iter()
        .filter_map(|route| route.health.as_ref().map(|h| h.timeout))
        .max()?;
    Some(longest + std::time::Duration::from_secs(1))
}

/// Waits for the start's first health probe round of `proxy` ([`Proxy::first_probes`]), at most
/// [`first_probe_bound`]; at once without routes with active checks. Its endpoints of such routes
/// are held out until their first probe passes and `/readyz` answers 503 until the round is over,
/// so whoever learns from this process that it serves (a binary upgrade's old process, which
/// stops accepting then; a service manager's `READY=1`, which starts the units ordered after it)
/// is told only once the round is over. Logged as `{who}: probing the endpoints of routes with
/// active health checks {before}` at INFO; a round not over within the bound as `{who}: the first
/// health probe round is not over after N ms; {anyway}` at WARN, and the caller goes on (holding
/// requests as any proxy does for first probes).
pub async fn first_probe_round(proxy: &Proxy, who: &str, before: &str, anyway: &str) {
    let Some(bound) = first_probe_bound(proxy) else {
        return;
    };
    tracing::info!("{who}: probing the endpoints of routes with active health checks {before}");
    if tokio::time::timeout(bound, proxy.first_probes())
        .await
        .is_err()
    {
        tracing::warn!(
            "{who}: the first health probe round is not over after {} ms; {anyway}",
            bound.as_millis()
        );
    }
}

/// Logs each of `config`'s warnings (a route shadowed by an earlier one, named with both), one
/// line each, `prefix` first (`SIGHUP: ` on a reload).
pub fn warn_about(config: &ProxyConfig, path: &Path, prefix: &str) {
    for warning in config.warnings() {
        tracing::warn!("{prefix}{}: {warning}", path.display());
    }
}

/// Warns about each setting of `file` that differs from `in_force` (read at start) and that a
/// reload does not apply, so that no change is ignored silently; with what a start would refuse
/// in the files those settings name ([`start_would_refuse`]).
pub fn warn_not_reloaded(in_force: &ProxyConfig, file: &ProxyConfig, path: &Path) {
    let changed = not_reloaded(in_force, file);
    if !changed.is_empty() {
        let refused = start_would_refuse(file, &changed, path)
            .map(|e| format!("; a start or a binary upgrade would refuse this file: {e}"))
            .unwrap_or_default();
        tracing::warn!(
            "SIGHUP: {}: changed settings not applied, they need a restart or a binary upgrade \
             (the values read at start stay in force): {}{refused}",
            path.display(),
            changed.join(", ")
        );
    }
}

/// The settings that name a file a start reads or writes ([`ProxyConfig::check_files`]).
const FILE_SETTINGS: [&str; 3] = ["tls", "access_log", "state_file"];

/// Why a start would refuse `file` ([`ProxyConfig::check_files`], one line), when one of the
/// `changed` settings that a reload does not apply names a file: a SIGHUP checks the values but
/// not those files, so a `tls:` added with a certificate that is not there was only named as
/// needing a restart, and the restart failed (trial 39). `None` when no such setting changed
/// (a TLS pair in force is reloaded on its own, see [`reload_tls`]) or the files are fine.
fn start_would_refuse(file: &ProxyConfig, changed: &[String], path: &Path) -> Option<String> {
    let names_a_file = |key: &String| {
        let top = key.split('.').next().unwrap_or_default();
        FILE_SETTINGS.contains(&top)
    };
    if !changed.iter().any(names_a_file) {
        return None;
    }
    let refused = file.check_files(Some(path)).err()?;
    Some(one_line(&refused.to_string()))
}

/// Logs a route reload: each route whose runtime weights were kept (info) or replaced by the
/// file's (warn: a traffic shift), then the reload itself.
fn log_reload(report: &RouteReload, path: &Path) {
    for outcome in &report.weights {
        match outcome.decision {
            WeightDecision::Kept => tracing::info!("SIGHUP: {outcome}"),
            _ => tracing::warn!("SIGHUP: {outcome}"),
        }
    }
    tracing::info!(
        generation = report.generation,
        added = ?report.added,
        removed = ?report.removed,
        "SIGHUP: routes reloaded from {}",
        path.display()
    );
}

/// Reopens the access log's file on SIGHUP (after logrotate renamed it; the writer keeps the
/// old file if the path cannot be opened, and logs why).
pub fn reopen_access_log(proxy: &Proxy) {
    if proxy.reopen_access_log() {
        tracing::info!("SIGHUP: access log file to be reopened");
    }
}

/// Reloads the TLS certificate and key files on SIGHUP (a bad pair keeps the previous one serving).
pub fn reload_tls(proxy: &Proxy) {
    match proxy.reload_tls() {
        Ok(true) => tracing::info!("SIGHUP: TLS certificate reloaded"),
        Ok(false) => {}
        Err(e) => tracing::error!(
            "SIGHUP: TLS certificate not reloaded, the previous one stays: {}",
            one_line(&e.to_string())
        ),
    }
}

/// [`start`] ended early because SIGTERM or SIGINT asked the process to stop while the active
/// workload was still starting; what it had started is stopped. A requested stop, not a failure:
/// [`run`] exits as it does for a signal once serving (see there).
#[derive(Debug)]
pub struct StoppedWhileStarting(String);

impl std::fmt::Display for StoppedWhileStarting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StoppedWhileStarting {}

/// Cancels a token on SIGTERM or SIGINT while it lives (a task, aborted on drop): the start of the
/// active workload, which has no service to stop yet, ends early and stops what it started; a
/// further signal meanwhile is logged as ignored. Other listeners of the same signals (the
/// command's own wait) see the signal as well.
struct CancelOnSignal(tokio::task::JoinHandle<()>);

impl CancelOnSignal {
    fn spawn(cancel: CancellationToken) -> CancelOnSignal {
        use tokio::signal::unix::{signal, SignalKind};
        // Installed now, not when the task first runs: a signal from here on is caught.
        let caught = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        );
        let task = tokio::spawn(async move {
            let (Ok(mut term), Ok(mut int)) = caught else {
                return;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::info!("signal received before the active workload was ready; stopping it");
            cancel.cancel();
            // Until the start has stopped what it started (each instance's stop_grace), a
            // further signal is said to be ignored (trial 25: swallowed without a word).
            loop {
                let name = tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "SIGINT",
                };
                tracing::warn!(
                    signal = name,
                    "{name} ignored: already stopping the starting workload (each instance gets \
                     its stop_grace before SIGKILL); SIGKILL stops crossfade at once, and the \
                     next `crossfade run` stops what it leaves running"
                );
            }
        });
        CancelOnSignal(task)
    }
}

impl Drop for CancelOnSignal {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A running `crossfade run`: proxy, admin API and the controller service.
pub struct Running {
    /// Where the proxy listens (the bound address, also when the spec said port 0).
    pub listen: std::net::SocketAddr,
    /// Where the admin API listens.
    pub admin: std::net::SocketAddr,
    /// The route served.
    pub route: String,
    /// Proxy and admin API.
    pub stack: Stack,
    /// The controller service.
    pub service: ServiceHandle,
    /// The rollout this start began (the spec's green); `None` when it began none (no green, or
    /// the state file says this green was already rolled out, rolled back or aborted).
    pub started: Option<u64>,
    /// How the spec's green ended in an earlier run, when that is why this start began no
    /// rollout: the outcome `--exit-after-rollout` reports.
    pub earlier: Option<Earlier>,
    /// The child journal of a run without `state_file`, to [`RuntimeJournal::forget`] once every
    /// workload is stopped.
    pub runtime_journal: Option<RuntimeJournal>,
    /// Duplicates of the listening sockets and the state file's lock, kept for a binary upgrade's
    /// handover (`--upgrade-socket`).
    pub listeners: Option<Listeners>,
    /// The state as recovered at start (what [`roll_out_green`] judges the spec's green by).
    state: ServiceState,
    /// The slot the active workload served in at start.
    active_slot: Slot,
    /// The active workload's label at start.
    serving: String,
    /// The state file's lock, held while this instance runs.
    _state_lock: Option<StateLock>,
}

/// Starts everything a spec describes; with `green:`, also starts the rollout (unless the state file
/// says this green workload is already active or was already rolled back). `auth` guards the admin
/// API. The recovery of the previous run's state and processes, and the start of the active
/// workload, are [`startup::recover_locked`]'s; this locks the state file, binds, wires and serves.
pub async fn start(spec: &RunSpec, auth: AdminAuth, upgradable: bool) -> anyhow::Result<Running> {
    // The state file's lock before the sockets: a second run on the same state file and the same
    // ports is told that another crossfade process holds the file, not only that the address is
    // in use (session 44).
    let lock = startup::lock_state_file(spec).map_err(start_error)?;
    let listener = bind(spec.listen, "listen").await?;
    let admin = bind(spec.admin, "admin").await?;
    let listen_addr = listener.local_addr()?;
    // SIGTERM or SIGINT before the active workload is ready cancels the start, which stops what
    // it started (as a green's provisioning is stopped), rather than leaving its processes behind.
    let cancel = CancellationToken::new();
    let cancel_on_signal = CancelOnSignal::spawn(cancel.clone());
    let recovered = startup::recover_locked(spec, lock, listen_addr, cancel)
        .await
        .map_err(start_error)?;
    // Ready: from here the command's own wait handles a signal.
    drop(cancel_on_signal);
    // The spec's own warnings are logged by `run` as it loads the file.
    let green = spec.green.as_ref();
    let start = Start {
        first_probes: false,
        green,
        upgradable,
        handed: None,
    };
    serve_recovered(spec, auth, (listener, admin), recovered, start).await
}

/// How [`serve_recovered`] starts.
#[derive(Clone, Copy, Debug, Default)]
pub struct Start<'a> {
    /// Await the first health probe round before serving (a binary upgrade's new process: the
    /// old one serves meanwhile).
    pub first_probes: bool,
    /// The workload to roll out to before serving (the spec's `green:`, unless the state file
    /// says it was tried: [`startup::start_green`]).
    pub green: Option<&'a WorkloadSpec>,
    /// Keep duplicates of the listening sockets and the state file's lock for a binary
    /// upgrade's handover ([`Running::listeners`]).
    pub upgradable: bool,
    /// What a binary upgrade's old process handed over with the sockets (its routing table's
    /// generation and its health view), taken on as `crossfade proxy`'s new process takes it
    /// ([`Handed`]).
    pub handed: Option<&'a Handed>,
}

/// What a binary upgrade's old process handed over with the sockets beside its routes (which
/// `crossfade run`'s new process builds afresh from the spec and the adopted instances): its
/// routing table's last generation (this process's count on from it) and what it knew of its
/// endpoints' health: the endpoints that passed a check (a route failing open still fails open to
/// them), the tripped breakers (they stay tripped) and the ejected endpoints (out for the rest of
/// their backoff).
#[derive(Debug, Default)]
pub struct Handed {
    /// [`crossfade_proxy::handover::Inherited::generation`]: `None` from an old process that does
    /// not send it.
    pub generation: Option<u64>,
    /// [`crossfade_proxy::handover::Inherited::passed`].
    pub passed: Vec<crossfade_proxy::health::PassedCheck>,
    /// [`crossfade_proxy::handover::Inherited::tripped`].
    pub tripped: Vec<crossfade_proxy::health::TrippedBreaker>,
    /// [`crossfade_proxy::handover::Inherited::ejected`].
    pub ejected: Vec<crossfade_proxy::health::EjectedEndpoint>,
}

/// [`startup::StartupError`] as `crossfade run` reports it.
pub fn start_error(e: StartupError) -> anyhow::Error {
    match e {
        StartupError::Load(e) => corrupt_hint(e),
        StartupError::Save(e) => unwritable(e),
        StartupError::Lock(e) => e.into(),
        StartupError::Stopped(why) => anyhow::Error::new(StoppedWhileStarting(why)),
        e @ (StartupError::Refused(_) | StartupError::Workload(_)) => e.into(),
    }
}

/// Starts the rollout to the spec's `green` on `running` unless the state file says this green
/// already serves or was already tried ([`startup::start_green`]); sets `running.started` or
/// `running.earlier`.
///
/// # Errors
/// The service's refusal of the start, as its admin API would say it.
pub async fn roll_out_green(running: &mut Running, green: &WorkloadSpec) -> anyhow::Result<()> {
    // The state as this process started with it: a new process that took over has not started a
    // rollout since (the old one refused the handover during one).
    let (state, active_slot, serving) = (&running.state, running.active_slot, &running.serving);
    match startup::start_green(&running.service, state, green, active_slot, serving).await {
        Ok(GreenStart::Started(id)) => running.started = Some(id),
        Ok(GreenStart::AlreadyTried { tried, label, why }) => {
            running.earlier = Some(Earlier::of(state, &tried, &label, &why));
        }
        Err(e) => anyhow::bail!(e),
    }
    Ok(())
}

/// Wires and serves what [`startup::recover`] (or, in a binary upgrade's new process,
/// [`startup::take_over`]) left, on `listener` and `admin`: builds the proxy over the active
/// workload's endpoints, spawns the controller service, starts the rollout to `green` (the
/// spec's, unless the state file says it was tried: [`roll_out_green`]) and only then serves, so
/// that nobody who saw `/readyz` answer 200 is told that no rollout has run yet. With
/// `first_probes`, the first health probe round of routes with active checks is awaited before
/// serving (a binary upgrade's new process: the old one serves meanwhile).
///
/// # Errors
/// A proxy config that cannot be built, an address that cannot be read, the service's refusal
/// of the rollout to `green`, a descriptor that cannot be duplicated.
pub async fn serve_recovered(
    spec: &RunSpec,
    auth: AdminAuth,
    (listener, admin): (TcpListener, TcpListener),
    recovered: startup::Recovered,
    start: Start<'_>,
) -> anyhow::Result<Running> {
    let Start {
        first_probes,
        green,
        upgradable,
        handed,
    } = start;
    let (listen_addr, admin_addr) = (listener.local_addr()?, admin.local_addr()?);
    let (active_slot, active_spec) = (recovered.active_slot, recovered.active_spec);
    let config = spec.proxy_config(
        active_slot,
        recovered.active.endpoints(),
        active_spec.protocol,
    );
    let (proxy, mut registry) = build_proxy(&config)?;
    if let Some(handed) = handed {
        // Generations keep rising across the upgrade, as `crossfade proxy`'s do: until session
        // 35 this process numbered its tables from 1 again, so the admin API, `/metrics`
        // (`crossfade_routing_table_generation`), `crossfade status` and the rollout's events
        // went back in time at each upgrade. The routes are this process's own, republished
        // above the old process's last generation before anything reads them.
        proxy
            .inherit_routes(proxy.routes(), handed.generation)
            .map_err(|e| anyhow::anyhow!("the routes built from the spec: {e}"))?;
        proxy.inherit_passed_checks(&handed.passed);
        proxy.inherit_tripped_breakers(&handed.tripped);
        proxy.inherit_ejections(&handed.ejected);
    }
    let rollout_metrics = RolloutMetrics::register(&mut registry);
    let shared = Arc::new(proxy.clone());
    // What the log says when the spec's green is not rolled out again.
    let serving = active_spec.label(active_slot).to_owned();
    let state = recovered.state.clone();
    let service = service::spawn(ServiceConfig {
        route: spec.route.name.clone(),
        active_slot,
        active_spec,
        active: recovered.active,
        rollout: spec.rollout.clone(),
        store: recovered.store,
        state: recovered.state,
        start_events: recovered.start_events,
        recovered: recovered.recovered,
        traffic: shared.clone(),
        metrics: shared,
        driver: recovered.driver,
        rollout_metrics,
        listen: listen_addr,
        admin: admin_addr,
        port_range: spec.port_range,
    });
    if first_probes {
        first_probe_round(
            &proxy,
            "binary upgrade",
            "before taking over the traffic (the old process serves meanwhile)",
            "taking over all the same",
        )
        .await;
    }
    let mut started = None;
    let mut earlier = None;
    if let Some(green) = green {
        match startup::start_green(&service, &state, green, active_slot, &serving).await {
            Ok(GreenStart::Started(id)) => started = Some(id),
            Ok(GreenStart::AlreadyTried { tried, label, why }) => {
                earlier = Some(Earlier::of(&state, &tried, &label, &why));
            }
            Err(e) => anyhow::bail!(e),
        }
    }
    let listeners = match upgradable {
        true => {
            let listeners = Listeners::of(&listener, &admin)?;
            Some(match &recovered.lock {
                Some(lock) => listeners.with_state_lock(std::os::fd::AsFd::as_fd(lock))?,
                None => listeners,
            })
        }
        false => None,
    };
    let extension: Arc<dyn AdminExtension> = Arc::new(service.clone());
    let stack = Stack::serve(proxy, registry, Some(extension), auth, listener, admin);
    Ok(Running {
        listeners,
        listen: listen_addr,
        admin: admin_addr,
        route: spec.route.name.clone(),
        stack,
        service,
        started,
        earlier,
        runtime_journal: recovered.runtime_journal,
        state,
        active_slot,
        serving,
        _state_lock: recovered.lock,
    })
}

/// A corrupt state file without a usable backup: the error, plus what the operator can do. Nothing
/// is started, since neither the spec's `blue:` nor its `green:` is known to be the active version.
fn corrupt_hint(error: crossfade_controller::Error) -> anyhow::Error {
    match error {
        crossfade_controller::Error::StateCorrupt { path, source } => state_corrupt(
            file_kind::StateKind::Run,
            &path,
            source,
            &backup_state::<ServiceState>(&path),
            "the last active version is unknown and nothing was started",
            "the spec alone: its blue: serves",
        ),
        // A path that is not a regular file, or cannot be read (trial 18, T14: named no field).
        e @ crossfade_controller::Error::StateIo { .. } => {
            anyhow::anyhow!("state_file: {e}; `crossfade run` refuses to start")
        }
        other => other.into(),
    }
}

/// What `run --exit-after-rollout` does once the rollout has ended.
#[derive(Clone, Copy, Debug, Default)]
pub struct ExitAfter {
    /// How long to keep serving (traffic, `/metrics`, the admin API) after the outcome, so that a
    /// scrape sees the final phase; a signal ends it early.
    pub linger: std::time::Duration,
    /// Print the outcome as one JSON object rather than a line.
    pub json: bool,
}

/// `crossfade run SPEC`: serve until a signal (or, with `exit_after`, until the rollout ends,
/// then print its outcome on stdout and keep serving for `linger`).
///
/// A signal is a requested stop, answered with the same code whenever it comes, also while the
/// active workload is still starting ([`StoppedWhileStarting`], logged): 0, as systemd
/// (`SuccessExitStatus`) and Kubernetes expect of a clean exit after SIGTERM; with
/// `exit_after`, [`EXIT_ROLLED_BACK`], since the rollout asked for did not complete.
pub async fn run(
    path: &Path,
    exit_after: Option<ExitAfter>,
    token: &TokenArgs,
) -> anyhow::Result<ExitCode> {
    // Before anything binds: `/readyz` may answer before this task is scheduled again.
    let mut signals =
        Signals::install().usr2_ignored_because("binary upgrade needs --upgrade-socket");
    let (spec, auth, warnings) = validated_spec(path, token)?;
    // The outcome line is what a CI job reads from standard output: an access log there would
    // bury it among a JSON line per request (also after it, from the drain).
    // A usage error (exit 2, README "Exit code"): the spec alone is valid (`check` takes it, a
    // plain `run` serves it); this flag is what rules it out.
    if exit_after.is_some() && spec.access_log == crossfade_proxy::config::AccessLogConfig::Stdout {
        return Err(crate::flags::usage(
            "access_log: stdout cannot be used with --exit-after-rollout, whose outcome line is \
             all that standard output may carry (a job reads it there); write the access log to \
             a file (access_log: access.log, beside the spec) or leave it off",
        ));
    }
    for warning in &warnings {
        tracing::warn!("spec {}: {warning}", path.display());
    }
    let stopped = match exit_after {
        Some(_) => ExitCode::from(EXIT_ROLLED_BACK),
        None => ExitCode::SUCCESS,
    };
    let running = match start(&spec, auth, false).await {
        Ok(running) => running,
        Err(e) if e.is::<StoppedWhileStarting>() => {
            tracing::info!("{e}");
            return Ok(stopped);
        }
        Err(e) => return Err(e),
    };
    tracing::info!(version = crossfade_proxy::process::VERSION, pid = std::process::id(), listen = %running.listen, admin = %running.admin, "serving route {}", running.route);
    // Under systemd `Type=notify` (see `notify`): ready once the proxy and the admin API serve,
    // blue is up and the first health probe round is over; stopping when the drain starts.
    // A SIGHUP only reloads TLS files and reopens the access log: no RELOADING=1.
    let manager = ServiceManager::from_env();
    let proxy = running.stack.proxy.clone();
    // SIGHUP reloads what the spec's proxy settings name: the TLS files (a bad pair keeps the
    // old one) and the access log's file (reopened, for logrotate); else it is ignored.
    let hangup = || run_hangup(&spec, &proxy);
    let serve = async {
        let Some(exit) = exit_after else {
            signals.wait_or(hangup).await;
            return stopped;
        };
        let status = tokio::select! {
            status = running.service.idle() => status,
            () = signals.wait_or(hangup) => {
                // Stopped before the rollout ended: said on stdout too, so that a pipeline
                // reading the outcome gets one rather than nothing (trial 28).
                crate::print_out(&interrupted_line(&running.service.status(), exit.json));
                return stopped;
            }
        };
        let (code, line) = match &running.earlier {
            Some(earlier) => (earlier.code(), earlier.line(&status, exit.json)),
            None => {
                let code = outcome_code(&status);
                let earlier = running.started.is_none();
                let line = outcome_line(&status, &code, exit.json, earlier);
                (code, line)
            }
        };
        crate::print_out(&line);
        if !exit.linger.is_zero() {
            tracing::info!(
                "rollout ended; serving {} more (--linger) before stopping, so that /metrics is \
                 scraped with the outcome",
                format!("{:?}", exit.linger)
            );
            tokio::select! {
                () = tokio::time::sleep(exit.linger) => {}
                () = signals.wait_or(hangup) => {}
            }
        }
        code
    };
    // A controller task that dies (a panic) must not leave a process that serves but cannot be
    // steered and exits 0 (trial report §1): stop serving and fail with the reason.
    let code = tokio::select! {
        biased;
        () = running.service.stopped() => None,
        code = serve => Some(code),
        never = manager.ready_after_first_probes(&proxy) => match never {},
    };
    manager.stopping();
    let Some(code) = code else {
        running.stack.stop().await;
        anyhow::bail!(
            "the rollout controller of route {} stopped unexpectedly (see the error above); \
             the rollout can no longer be steered, so crossfade stops (the state file keeps the \
             last recorded phase for the next start)",
            running.route
        );
    };
    // The drain, then the workloads' stop (each up to its stop_grace): a second Ctrl-C or
    // SIGTERM meanwhile is said to be ignored, as `crossfade proxy` says it (trial 25: `run`
    // swallowed it without a word for as long as a stubborn workload took to be killed).
    let stopping = async {
        running.stack.stop().await;
        running.service.shutdown().await;
    };
    noting_signals(stopping, signals.into_drain(), |name| {
        tracing::warn!(
            signal = name,
            "{name} ignored: already stopping (the proxy drains, then each workload gets its \
             stop_grace before SIGKILL); SIGKILL stops crossfade at once, and the next \
             `crossfade run` takes over or stops what it leaves running"
        );
    })
    .await;
    if let Some(journal) = &running.runtime_journal {
        journal.forget();
    }
    Ok(code)
}

/// A SIGHUP to `crossfade run`: reloads what the spec's proxy settings name, the TLS files (a bad
/// pair keeps the old one) and the access log's file (reopened, for logrotate); else it is
/// ignored, and said so.
pub fn run_hangup(spec: &RunSpec, proxy: &Proxy) {
    let (tls, log) = (spec.tls.is_some(), proxy.reopen_access_log());
    if tls {
        reload_tls(proxy);
    }
    if log {
        tracing::info!("SIGHUP: access log file to be reopened");
    }
    if !tls && !log {
        tracing::info!("SIGHUP ignored: there is nothing to reload (no tls, no access_log file)");
    }
}

/// `run --exit-after-rollout`'s outcome on stdout: `rollout 2 RolledBack (v1 -> v2), exit 3: step
/// 1/3 at 10%: analysis failed: ...`, or with `json` one object with `route`, `rollout`,
/// `outcome`, `from_version`, `to_version`, `message`, `exit_code` and `earlier_run`. Without a
/// rollout (the spec's green was already active or rolled back), `no rollout ran`. With `earlier`
/// (this run started no rollout: the state file says how the spec's green ended), the rollout
/// shown is an earlier run's, and the line says so (`rollout 1 (an earlier run's; not started
/// again) RolledBack ...`, `"earlier_run": true`), so it is not read as this run's outcome.
pub fn outcome_line(
    status: &service::ServiceStatus,
    code: &ExitCode,
    json: bool,
    earlier: bool,
) -> String {
    let exit_code = if *code == ExitCode::SUCCESS {
        0
    } else {
        EXIT_ROLLED_BACK
    };
    let rollout = status.rollout.as_ref();
    if json {
        return serde_json::json!({
            "route": status.route,
            "rollout": rollout.map(|r| r.id),
            "outcome": rollout.map(|r| r.phase.as_str()),
            "from_version": status.from_version,
            "to_version": status.to_version,
            "message": rollout.map(|r| r.message.clone()),
            "exit_code": exit_code,
            "earlier_run": earlier && rollout.is_some(),
        })
        .to_string();
    }
    let Some(r) = rollout else {
        return format!("route {}: no rollout ran, exit {exit_code}", status.route);
    };
    let when = match earlier {
        true => " (an earlier run's; not started again)",
        false => "",
    };
    format!(
        "rollout {}{when} {} ({} -> {}), exit {exit_code}: {}",
        r.id,
        r.phase,
        status.from_version.as_deref().unwrap_or("?"),
        status.to_version.as_deref().unwrap_or("?"),
        r.message
    )
}

/// `run --exit-after-rollout`'s line on stdout when a signal stops it before the rollout ended:
/// `rollout 1 interrupted (v1 -> v2), exit 3: stopped by a signal while Progressing, before the
/// rollout ended (step 1/2 at 50%: ...); ...`, or with `json` the object of [`outcome_line`]
/// whose `outcome` is the phase it was stopped in and `interrupted` is true. Exit code 3: the
/// rollout asked for did not complete.
pub fn interrupted_line(status: &service::ServiceStatus, json: bool) -> String {
    let rollout = status.rollout.as_ref().filter(|_| status.running);
    let after = "with a state file, the next `crossfade run` rolls it back (or completes it, \
                 past its promotion)";
    if json {
        return serde_json::json!({
            "route": status.route,
            "rollout": rollout.map(|r| r.id),
            "outcome": rollout.map(|r| r.phase.as_str()),
            "from_version": rollout.and(status.from_version.as_deref()),
            "to_version": rollout.and(status.to_version.as_deref()),
            "message": rollout.map(|r| format!(
                "stopped by a signal while {}, before the rollout ended ({}); {after}",
                r.phase, r.message
            )),
            "exit_code": EXIT_ROLLED_BACK,
            "earlier_run": false,
            "interrupted": true,
        })
        .to_string();
    }
    let Some(r) = rollout else {
        return format!(
            "route {}: no rollout ran, exit {EXIT_ROLLED_BACK}: stopped by a signal",
            status.route
        );
    };
    format!(
        "rollout {} interrupted ({} -> {}), exit {EXIT_ROLLED_BACK}: stopped by a signal while \
         {}, before the rollout ended ({}); {after}",
        r.id,
        status.from_version.as_deref().unwrap_or("?"),
        status.to_version.as_deref().unwrap_or("?"),
        r.phase,
        r.message
    )
}

/// 0 when the last rollout completed (or none ran), [`EXIT_ROLLED_BACK`] otherwise.
pub fn outcome_code(status: &service::ServiceStatus) -> ExitCode {
    match &status.rollout {
        Some(r) if r.phase != Phase::Completed => ExitCode::from(EXIT_ROLLED_BACK),
        _ => ExitCode::SUCCESS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `crossfade proxy` and `crossfade run` send `READY=1` right after [`Stack::serve`]: the
    /// proxy must count as serving (`GET /readyz` 200) by then, before its task first runs. On
    /// this single-threaded runtime no spawned task runs until the test awaits.
    #[tokio::test(flavor = "current_thread")]
    async fn the_stack_serves_when_serve_returns_before_its_tasks_run() {
        let (proxy, registry) = build_proxy(&ProxyConfig::default()).expect("the default config");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        assert!(!proxy.status().serving);
        let stack = Stack::serve(
            proxy.clone(),
            registry,
            None,
            AdminAuth::open(),
            listener,
            admin,
        );
        assert!(
            proxy.status().serving,
            "serving as soon as Stack::serve returns"
        );
        stack.stop().await;
        assert!(!proxy.status().serving, "not serving once stopped");
    }
}
