//! `crossfade report`: writes the HTML report of a finished local rollout, read from a state file or
//! from a running instance's admin API (`GET /rollout/report`). Drawing is the controller's
//! (`crossfade_controller::report`); this module only fetches and writes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use crossfade_controller::report::ReportData;
use crossfade_controller::state::ServiceState;
use crossfade_controller::store::StateFile;

use crate::remote::AdminArgs;

/// Flags of `crossfade report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Read the rollout from this state file (the spec's `state_file`) instead of the admin API;
    /// `--admin` and `CROSSFADE_ADMIN` are then not used (no conflict with them: the environment
    /// variable is a default, and a file given explicitly wins). A rollout that has not ended is
    /// refused while its instance runs (it holds the file's lock), as `GET /rollout/report`
    /// refuses it; once that instance was stopped mid-rollout, it is reported, marked unfinished.
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// Where to write the report (HTML, self-contained); `-` is standard output. Checked before
    /// anything is read: not a directory, its directory exists, and not one of crossfade's own
    /// files (a state file, its backup or child journal, a spec, a proxy config, a PEM
    /// certificate or key), which the page would replace.
    #[arg(short, long, value_name = "FILE.html", value_parser = crate::flags::report_file)]
    output: PathBuf,
    #[command(flatten)]
    admin: AdminArgs,
}

impl ReportArgs {
    /// The state file to read, when `--state` was given (it wins over `--admin`).
    pub fn state(&self) -> Option<&Path> {
        self.state.as_deref()
    }
}

/// Writes the report of the last rollout, from `--state FILE` or else from `--admin`.
pub async fn run(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let data = match args.state() {
        Some(path) => from_state_file(path)?,
        None => from_admin(&args.admin).await?,
    };
    write(&data, &args.output)?;
    Ok(ExitCode::SUCCESS)
}

/// What `path` is when it is a `crossfade proxy`'s state file (its routes' weights), which
/// holds no rollout to report (newuser 33: it was called corrupt).
fn proxy_state(path: &Path) -> Option<&'static str> {
    let text = std::fs::read_to_string(path).ok()?;
    let kind = crate::file_kind::state_kind(&text)?;
    (kind == crate::file_kind::StateKind::Proxy).then(|| kind.described())
}

fn from_state_file(path: &Path) -> anyhow::Result<ReportData> {
    let state = StateFile::new(path)
        .load::<ServiceState>()
        .map_err(|e| match e {
            // Trial 19: `--state spec.yaml` was "corrupt: expected value at line 1 column 1".
            // A file of another kind is the flag's mistake, a usage error (exit 2, as
            // `-o spec.yaml` is; user44b, session 44); a corrupt state file stays exit 1.
            crossfade_controller::Error::StateCorrupt { .. } => {
                match crate::serve::settings_kind(path) {
                    Some(kind) => crate::flags::usage(format!(
                        "--state {} is {kind}, not a state file: give the file its state_file: \
                         names",
                        path.display()
                    )),
                    None => match proxy_state(path) {
                        Some(kind) => crate::flags::usage(format!(
                            "--state {} is {kind}, not a `crossfade run` state file: give the \
                             file its spec's state_file: names (a proxy has no rollouts)",
                            path.display()
                        )),
                        None => e.into(),
                    },
                }
            }
            e => e.into(),
        })?
        .with_context(|| format!("state file {} does not exist", path.display()))?;
    if let Some(record) = state.rollout.as_ref().filter(|r| !r.rollout.is_terminal()) {
        // A running instance holds the lock (`crossfade run`): the rollout is live, and its
        // report, like `GET /rollout/report`'s, is written once it has ended. Taking the lock
        // here only tests it; it is released at once.
        if let Err(crossfade_controller::Error::StateLocked { .. }) = StateFile::new(path).lock() {
            let rollout = &record.rollout;
            bail!(
                "no rollout report: rollout {} of {} is still running ({}, step {}/{}) in the \
                 crossfade instance that holds {}.lock (a report is written once it has ended; \
                 `crossfade status` shows it now)",
                rollout.id,
                state.route,
                rollout.phase.words(),
                rollout.step + 1,
                rollout.config.steps.len(),
                path.display()
            );
        }
    }
    ReportData::from_state_unfinished(&state)
        .with_context(|| format!("state file {}", path.display()))
}

async fn from_admin(admin: &AdminArgs) -> anyhow::Result<ReportData> {
    // `GET /rollout/report` may wait for its rollout's end; the read before it, bounded, finds an
    // address that takes the connection and answers nothing (session 32: `report` hung there).
    crate::remote::run_admin_rollout(admin).await?;
    let (status, body) = crate::remote::call(
        admin,
        http::Method::GET,
        "/rollout/report",
        Vec::new(),
        crate::remote::Answer::Rollout,
    )
    .await?;
    if !status.is_success() {
        match body.get("error").and_then(|e| e.as_str()) {
            Some(error) => bail!("{error}"),
            None => bail!("GET /rollout/report at {} answered {status}; is --admin the admin address of `crossfade run`?", admin.admin),
        }
    }
    let data: ReportData = serde_json::from_value(body).with_context(|| {
        format!(
            "GET /rollout/report at {} did not answer a rollout report",
            admin.admin
        )
    })?;
    data.check_finished()?;
    Ok(data)
}

/// Renders `data` and writes it to `output` (standard output for `-`), then says where on stderr.
pub fn write(data: &ReportData, output: &Path) -> anyhow::Result<()> {
    let to_stdout = output == Path::new(crate::flags::STDOUT_PATH);
    if to_stdout {
        crate::print_text(&data.render());
        if crate::stdout_failure().is_some() {
            // `main` says why, and exits 1.
            return Ok(());
        }
    } else {
        match std::fs::write(output, data.render()) {
            // A pipe closed by its reader (`-o /dev/stdout | head -c 10`), as for `-o -` and
            // every other write to stdout (`print_out`): the reader has what it wanted; until
            // session 42 this exited 1.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            written => written
                .with_context(|| format!("cannot write the report to {}", output.display()))?,
        }
    }
    // As the page's title says it: an unfinished rollout's phase is not its outcome.
    let unfinished = if data.unfinished { ", unfinished" } else { "" };
    crate::print_err(&format!(
        "crossfade: report of rollout {} ({}{unfinished}) written to {}",
        data.record.rollout.id,
        data.record.rollout.phase.words(),
        if to_stdout {
            "standard output".into()
        } else {
            output.display().to_string()
        }
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    /// Trial 19: `--state spec.yaml` (the spec given for the state file it names) was "state file
    /// spec.yaml is corrupt: expected value at line 1 column 1"; it says what the file is.
    #[test]
    fn a_settings_file_given_as_the_state_is_named_for_what_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let spec = dir.path().join("spec.yaml");
        std::fs::write(
            &spec,
            "route: { name: web }\nblue: { endpoints: [127.0.0.1:9] }\n",
        )
        .unwrap();
        let Err(error) = super::from_state_file(&spec) else {
            panic!("a spec given as the state file is refused")
        };
        // The flag's mistake: exit 2, as `-o spec.yaml` (user44b, session 44).
        assert!(crate::flags::is_usage(&error), "a usage error: {error:#}");
        assert_eq!(
            error.to_string(),
            format!(
                "--state {} is a rollout spec for `crossfade run`, not a state file: give the \
                 file its state_file: names",
                spec.display()
            )
        );
    }
}
