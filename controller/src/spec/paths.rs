//! Paths in a spec: relative ones resolved from the spec file's directory.
//!
//! Relative paths follow the file that names them, as in docker compose, Kubernetes' kubeconfig
//! and Cargo manifests: the spec then means the same whatever directory `crossfade run` is started
//! from. Path-like fields: `state_file`, each workload's `workdir`, and a `command` that contains a
//! `/` (`./bin/app`, `bin/app`). A bare `command` (`python3`) is looked up in `PATH` at start, like
//! a shell does. `args` and `env` values are passed as written (a relative path there is relative
//! to the process's working directory, `workdir`).

use std::path::{Path, PathBuf};

use super::{RunSpec, WorkloadSpec};

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
}
