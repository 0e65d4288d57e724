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

/// Raises this process's soft open-file limit (`RLIMIT_NOFILE`, getrlimit(2)) towards what
/// `limits.max_connections` needs ([`needed`]), up to the hard limit, as the Go runtime does for
/// every program since Go 1.19: the soft limit's usual default (1024) exists for `select(2)`,
/// which neither tokio nor this process uses. Logs INFO when it raised the limit, and a WARN
/// naming both numbers when even the hard limit is below what is needed; silent when the limit
/// cannot be read.
pub fn raise_or_warn(max_connections: usize) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((mut soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let needed = needed(max_connections);
    if soft >= needed {
        return;
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
    if soft < needed {
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
    }
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
}
