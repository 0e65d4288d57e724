//! Paths in a spec: relative ones resolved from the spec file's directory, and the checks that need
//! this machine (does the command exist and may it be executed, does the working directory exist).
//!
//! Relative paths follow the file that names them, as in docker compose, Kubernetes' kubeconfig
//! and Cargo manifests: the spec then means the same whatever directory `crossfade run` is started
//! from. Path-like fields: `state_file`, each workload's `workdir`, a `command` that contains a
//! `/` (`./bin/app`, `bin/app`), and a header's `value_from.file`. A bare `command` (`python3`) is
//! looked up in `PATH` at start, like a shell does. `args` and `env` values are passed as written
//! (a relative path there is relative to the process's working directory, `workdir`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::{Problem, RunSpec, WorkloadSpec};

// === impl RunSpec ===

impl RunSpec {
    /// Resolves every relative path-like field (module doc) against `base`, the spec file's
    /// directory. Absolute paths and bare command names are left alone.
    pub fn resolve_paths(&mut self, base: &Path) {
        if let Some(file) = &mut self.state_file {
            resolve(file, base);
        }
        for workload in [&mut self.blue, &mut self.green].into_iter().flatten() {
            workload.resolve_paths(base);
        }
        self.rollout.resolve_header_files(base);
        // The proxy's files, by the proxy's own rule (`tls.cert`, `tls.key`, `tls.sni`,
        // `access_log`).
        let mut files = crossfade_proxy::config::ProxyConfig {
            tls: self.tls.take(),
            access_log: std::mem::take(&mut self.access_log),
            ..crossfade_proxy::config::ProxyConfig::default()
        };
        files.resolve_paths(base);
        self.tls = files.tls;
        self.access_log = files.access_log;
    }

    /// Checks what the text alone cannot tell: for each process workload, that `command` can be
    /// executed and `workdir` is a directory (one [`Problem`] per failure, under `blue.` /
    /// `green.`); and that `state_file`'s directory exists (the file itself is created on the
    /// first save), so `run` does not stop at start with only the file's name.
    pub fn check_machine(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        // The proxy's rule for its own `state_file` (one rule, trial 25: `st.json/` passed here).
        if let Some(message) = self
            .state_file
            .as_deref()
            .and_then(crossfade_proxy::config::state_file_problem)
        {
            problems.push(Problem {
                path: "state_file".into(),
                message,
            });
        }
        for (slot, workload) in [("blue", &self.blue), ("green", &self.green)] {
            if let Some(workload) = workload {
                problems.extend(workload.check_machine(slot));
            }
        }
        problems
    }
}

// === impl WorkloadSpec ===

impl WorkloadSpec {
    /// Resolves `workdir` and a relative `command` containing `/` against `base` (module doc).
    pub fn resolve_paths(&mut self, base: &Path) {
        if let Some(dir) = &mut self.workdir {
            resolve(dir, base);
        }
        if let Some(command) = &mut self.command {
            if command.contains('/') && Path::new(command.as_str()).is_relative() {
                *command = base.join(command.as_str()).to_string_lossy().into_owned();
            }
        }
    }

    /// For a process workload: `{at}.command` must name an executable file (looked up in `PATH`, or
    /// the workload's own `env.PATH` which the process gets, when it has no `/`), and
    /// `{at}.workdir` must be a directory. Static-endpoint workloads have nothing to check here.
    pub fn check_machine(&self, at: &str) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut problem = |field: &str, message: String| {
            problems.push(Problem {
                path: format!("{at}.{field}"),
                message,
            });
        };
        if let Some(dir) = &self.workdir {
            match std::fs::metadata(dir) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => problem("workdir", format!("{} is not a directory", dir.display())),
                Err(e) => problem("workdir", format!("{}: {e}", dir.display())),
            }
        }
        if let Some(command) = &self.command {
            if let Err(message) = self.find_command(command) {
                problem("command", with_arguments_hint(command, message));
            }
        }
        problems
    }

    /// The executable `command` names: itself when it has a `/`, else the first match in `PATH`
    /// (the workload's own `env.PATH` when set). The error says what was searched.
    pub(crate) fn find_command(&self, command: &str) -> Result<PathBuf, String> {
        if command.contains('/') {
            let path = PathBuf::from(command);
            return executable(&path)
                .map(|()| path)
                .map_err(|e| format!("{command}: {e}"));
        }
        let search = self
            .env
            .get("PATH")
            .cloned()
            .or_else(|| std::env::var("PATH").ok())
            .unwrap_or_default();
        let mut found_not_executable = None;
        for dir in std::env::split_paths(&search) {
            let candidate = dir.join(command);
            match executable(&candidate) {
                Ok(()) => return Ok(candidate),
                Err(e) if candidate.exists() => found_not_executable = Some((candidate, e)),
                Err(_) => {}
            }
        }
        Err(match found_not_executable {
            Some((path, e)) => format!("{command:?} found as {}, but {e}", path.display()),
            None => format!("{command:?} not found in PATH ({search})"),
        })
    }
}

/// `message` (`command` names no executable) with a hint when `command` holds spaces: a program
/// and its arguments written as one command line (`python3 app.py --port {port}`), which is not
/// run through a shell, so it named a file called all of that; the arguments go in `args`.
fn with_arguments_hint(command: &str, message: String) -> String {
    let mut words = command.split_whitespace();
    let (Some(program), rest) = (words.next(), words.collect::<Vec<_>>()) else {
        return message;
    };
    let advice = "command names the program alone (it is not run through a shell): write \
                  command:";
    match &rest[..] {
        [] => message,
        // Shell quoting would be split wrongly here: say the rule, not a list.
        _ if rest.iter().any(|w| w.contains(['\'', '"', '\\'])) => format!(
            "{message}; {advice} {program:?} and each of its arguments as one item of args, \
             without shell quotes"
        ),
        _ => format!("{message}; {advice} {program:?} and its arguments in args: {rest:?}"),
    }
}

/// Whether `path` is a file this process may execute (any execute bit, as `execve` needs).
fn executable(path: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a file".into());
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err("not executable (no x permission)".into());
    }
    Ok(())
}

fn resolve(path: &mut PathBuf, base: &Path) {
    if path.is_relative() {
        *path = base.join(&*path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(command: &str) -> WorkloadSpec {
        WorkloadSpec {
            command: Some(command.into()),
            ..WorkloadSpec::default()
        }
    }

    #[test]
    fn relative_paths_follow_the_spec_file_and_bare_commands_stay_names() {
        let mut spec = RunSpec {
            state_file: Some("state/run.json".into()),
            blue: Some(WorkloadSpec {
                workdir: Some("app".into()),
                ..workload("./bin/app")
            }),
            green: Some(workload("python3")),
            ..RunSpec::default()
        };
        spec.resolve_paths(Path::new("/srv/shop"));
        assert_eq!(spec.state_file, Some("/srv/shop/state/run.json".into()));
        let blue = spec.blue.unwrap();
        assert_eq!(blue.workdir, Some("/srv/shop/app".into()));
        assert_eq!(blue.command.as_deref(), Some("/srv/shop/./bin/app"));
        assert_eq!(spec.green.unwrap().command.as_deref(), Some("python3"));
        let mut absolute = workload("/usr/bin/env");
        absolute.resolve_paths(Path::new("/srv"));
        assert_eq!(absolute.command.as_deref(), Some("/usr/bin/env"));
    }

    #[test]
    fn missing_or_unexecutable_commands_and_workdirs_are_named_by_field() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("app.sh");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        let spec = RunSpec {
            blue: Some(WorkloadSpec {
                workdir: Some(dir.path().join("nope")),
                ..workload(script.to_str().unwrap())
            }),
            green: Some(workload("crossfade-no-such-command")),
            ..RunSpec::default()
        };
        let problems: Vec<String> = spec.check_machine().iter().map(|p| p.to_string()).collect();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("blue.workdir: ") && problems[0].contains("nope"));
        assert!(
            problems[1].starts_with("blue.command: ") && problems[1].contains("not executable")
        );
        assert!(
            problems[2].starts_with("green.command: ") && problems[2].contains("not found in PATH")
        );

        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let ok = WorkloadSpec {
            workdir: Some(dir.path().into()),
            ..workload(script.to_str().unwrap())
        };
        assert!(ok.check_machine("blue").is_empty());
        assert!(
            workload("sh").check_machine("blue").is_empty(),
            "sh is on PATH"
        );
    }

    /// Trial 19: `command: "python3 app.py --port {port}"` (a command line, as a shell or a
    /// Dockerfile's shell form takes it) was refused as a file "not found in PATH", which did not
    /// say where the arguments go; the error now says to write them in `args`.
    #[test]
    fn a_command_written_with_its_arguments_is_told_to_put_them_in_args() {
        let path = std::env::var("PATH").unwrap();
        let problems = workload("python3 app.py --port {port}").check_machine("blue");
        let problems: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        let hint = "; command names the program alone (it is not run through a shell): write \
                    command: \"python3\" and its arguments in args: [\"app.py\", \"--port\", \
                    \"{port}\"]";
        assert_eq!(
            problems,
            [format!(
                "blue.command: \"python3 app.py --port {{port}}\" not found in PATH ({path}){hint}"
            )]
        );
        let quoted = workload("sh -c 'exec app'").check_machine("blue");
        assert!(
            quoted[0].message.ends_with(
                "write command: \"sh\" and each of its arguments as one item of args, without \
                 shell quotes"
            ),
            "{:?}",
            quoted[0]
        );
        let alone = workload("crossfade-no-such-command").check_machine("blue");
        assert!(!alone[0].message.contains("args"), "{:?}", alone[0]);
    }

    #[test]
    fn a_state_file_in_a_missing_directory_is_named_by_field() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("nope").join("state.json");
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "").unwrap();
        for (state_file, want) in [
            (file.clone(), "No such file or directory"),
            (plain.join("state.json"), "is not a directory"),
        ] {
            let spec = RunSpec {
                state_file: Some(state_file.clone()),
                ..RunSpec::default()
            };
            let problems: Vec<String> =
                spec.check_machine().iter().map(|p| p.to_string()).collect();
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert!(
                problems[0].starts_with("state_file: ") && problems[0].contains(want),
                "{problems:?}"
            );
        }
        // Trial 25: a path that names a directory passed, and the first save failed.
        for named in ["state.json/", "state.json/.", "sub/.."] {
            let spec = RunSpec {
                state_file: Some(dir.path().join(named)),
                ..RunSpec::default()
            };
            let problems: Vec<String> =
                spec.check_machine().iter().map(|p| p.to_string()).collect();
            assert_eq!(problems.len(), 1, "{named}: {problems:?}");
            assert!(
                problems[0].starts_with("state_file: ")
                    && problems[0].contains("names a directory, not a file"),
                "{problems:?}"
            );
        }
        let fine = RunSpec {
            state_file: Some(dir.path().join("state.json")),
            ..RunSpec::default()
        };
        assert!(fine.check_machine().is_empty());
    }

    /// Trial report §10: `crossfade check` lists the machine's problems together with the rules
    /// broken in the text, not only once the text is valid; a field refused by a rule is not
    /// reported twice.
    #[test]
    fn load_lists_rule_and_machine_problems_in_one_run() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = r#"
admin: 127.0.0.1:8080
blue: { command: crossfade-no-such-command, args: ["{port}"], instances: 0 }
green: { command: "", args: ["{port}"], workdir: nope }
"#;
        let problems: Vec<String> = match RunSpec::load(yaml, dir.path()) {
            Err(crate::spec::SpecError::Invalid(p)) => p.iter().map(|p| p.to_string()).collect(),
            other => panic!("expected Invalid, got {other:?}"),
        };
        let at = |field: &str| problems.iter().filter(|p| p.starts_with(field)).count();
        assert_eq!(at("admin: "), 1, "{problems:?}");
        assert_eq!(at("blue.instances: "), 1, "{problems:?}");
        assert_eq!(at("blue.command: "), 1, "{problems:?}");
        assert!(problems
            .iter()
            .any(|p| p.starts_with("blue.command: ") && p.contains("not found in PATH")));
        assert_eq!(at("green.command: "), 1, "once, by the rule: {problems:?}");
        assert!(problems.contains(&"green.command: must not be empty".to_string()));
        assert_eq!(
            at("green.workdir: "),
            1,
            "resolved from the base: {problems:?}"
        );
        assert!(problems
            .iter()
            .any(|p| p.contains(&dir.path().join("nope").display().to_string())));
    }
}
