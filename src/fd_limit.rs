//! The start-time check of the process's open-file limit against `limits.max_connections`
//! (trial 13 N16): each proxied connection holds a client and an upstream socket, so a soft
//! `RLIMIT_NOFILE` below twice `max_connections` lets the accept loop fail with "Too many open
//! files" before the cap sheds anyone. The soft limit is raised within the hard one; nginx warns
//! in the same way when `worker_connections` exceeds the open-file limit.

/// The open-file limit `max_connections` needs: twice it (a client and an upstream socket
/// each), the README's rule. The admin API's and the process's other descriptors come on top;
/// a limit just at this number is tight but not reported.
pub fn needed(max_connections: usize) -> u64 {
    (max_connections as u64).saturating_mul(2)
}

/// Set by a serving process in the environment of the binary upgrade it starts on SIGUSR2, when
/// it has logged the open-file warning ([`raise_or_warn`]): `LIMIT/MAX_CONNECTIONS`, the two
/// numbers it named. The new process shares its log and inherits its limit, so the same warning
/// again would be one event logged twice (trial 13 N13).
pub const WARNED_ENV: &str = "CROSSFADE_UPGRADE_NOFILE_WARNED";

/// An open-file limit below what `limits.max_connections` needs, as [`raise_or_warn`] found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shortfall {
    /// The soft `RLIMIT_NOFILE` after raising it as far as the hard limit allows.
    pub open_file_limit: u64,
    /// `limits.max_connections`.
    pub max_connections: usize,
}

impl Shortfall {
    /// The value of [`WARNED_ENV`]: `LIMIT/MAX_CONNECTIONS`.
    pub fn to_env(self) -> String {
        format!("{}/{}", self.open_file_limit, self.max_connections)
    }

    /// The shortfall a serving process logged, from its [`WARNED_ENV`] value; `None` when absent
    /// or not of that form.
    pub fn from_env(value: Option<std::ffi::OsString>) -> Option<Shortfall> {
        let value = value?.into_string().ok()?;
        let (limit, max) = value.split_once('/')?;
        Some(Shortfall {
            open_file_limit: limit.parse().ok()?,
            max_connections: max.parse().ok()?,
        })
    }
}

/// Raises this process's soft open-file limit (`RLIMIT_NOFILE`, getrlimit(2)) towards what
/// `limits.max_connections` needs ([`needed`]), up to the hard limit, as the Go runtime does for
/// every program since Go 1.19: the soft limit's usual default (1024) exists for `select(2)`,
/// which neither tokio nor this process uses. Logs INFO when it raised the limit, and a WARN
/// naming both numbers when even the hard limit is below what is needed, unless `logged` (what
/// the serving process that started this one logged in the log they share, see [`WARNED_ENV`])
/// is that same shortfall: then at DEBUG. Silent when the limit cannot be read. Returns the
/// shortfall, logged here or before.
pub fn raise_or_warn(max_connections: usize, logged: Option<Shortfall>) -> Option<Shortfall> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (mut soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    let needed = needed(max_connections);
    if soft >= needed {
        return None;
    }
    let target = needed.min(hard);
    if target > soft && setrlimit(Resource::RLIMIT_NOFILE, target, hard).is_ok() {
        tracing::info!(
            from = soft,
            to = target,
            "raised the open-file limit (RLIMIT_NOFILE) for limits.max_connections"
        );
        soft = target;
    }
    if soft >= needed {
        return None;
    }
    let shortfall = Shortfall {
        open_file_limit: soft,
        max_connections,
    };
    if logged == Some(shortfall) {
        tracing::debug!(
            open_file_limit = soft,
            max_connections,
            "open-file limit below what limits.max_connections needs, as the serving process \
             logged"
        );
        return Some(shortfall);
    }
    tracing::warn!(
        open_file_limit = soft,
        max_connections,
        "limits.max_connections: {max_connections} connections need {needed} open files (a \
         client and an upstream socket each), but the process may open only {soft} \
         (RLIMIT_NOFILE, `ulimit -n`, its hard limit); past it accepts fail with \
         \"Too many open files\" before the cap sheds anyone: raise the limit (systemd: \
         LimitNOFILE=) or lower limits.max_connections below {}",
        soft / 2
    );
    Some(shortfall)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_connections_need_two_descriptors_each() {
        // The default max_connections (10000) needs 20,000 descriptors.
        assert_eq!(needed(10_000), 20_000);
        assert_eq!(needed(usize::MAX), u64::MAX);
    }

    #[test]
    fn a_shortfall_passes_through_the_environment_as_two_numbers() {
        let shortfall = Shortfall {
            open_file_limit: 4096,
            max_connections: 10_000,
        };
        assert_eq!(shortfall.to_env(), "4096/10000");
        let back = Shortfall::from_env(Some(shortfall.to_env().into()));
        assert_eq!(back, Some(shortfall));
        assert_eq!(Shortfall::from_env(Some("4096".into())), None);
        assert_eq!(Shortfall::from_env(None), None);
    }
}
