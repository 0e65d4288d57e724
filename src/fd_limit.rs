//! The start-time check of the process's open-file limit against `limits.max_connections`
//! (trial 13 N16): each proxied connection holds a client and an upstream socket, so a soft
//! `RLIMIT_NOFILE` below twice `max_connections` lets
//! the accept loop fail with "Too many open files" before the cap sheds anyone. nginx warns in
//! the same way when `worker_connections` exceeds the open-file limit.

/// The open-file limit `max_connections` needs: twice it (a client and an upstream socket
/// each), the README's rule. The admin API's and the process's other descriptors come on top;
/// a limit just at this number is tight but not reported.
pub fn needed(max_connections: usize) -> u64 {
    (max_connections as u64).saturating_mul(2)
}

/// The soft limit on open files from the text of `/proc/self/limits` (proc(5)); `None` when the
/// line is missing or says `unlimited`.
pub fn soft_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Logs a WARN naming both numbers when this process's soft open-file limit is below what
/// `limits.max_connections` needs ([`needed`]); silent when the limit cannot be read.
pub fn warn_if_too_low(max_connections: usize) {
    let Ok(text) = std::fs::read_to_string("/proc/self/limits") else {
        return;
    };
    let Some(limit) = soft_limit(&text) else {
        return;
    };
    let needed = needed(max_connections);
    if limit < needed {
        tracing::warn!(
            open_file_limit = limit,
            max_connections,
            "limits.max_connections: {max_connections} connections need {needed} open files (a \
             client and an upstream socket each), but the process may open only {limit} \
             (RLIMIT_NOFILE, `ulimit -n`); past it accepts fail with \"Too many open files\" \
             before the cap sheds anyone: raise the limit (systemd: LimitNOFILE=) or lower \
             limits.max_connections below {}",
            limit / 2
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_open_file_limit_is_read_from_proc_self_limits() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max processes             127372               127372               processes \n\
                    Max open files            256                  524288               files     \n";
        assert_eq!(soft_limit(text), Some(256));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(soft_limit(unlimited), None);
        assert_eq!(soft_limit("Max processes 1 1 processes\n"), None);
        // The default max_connections (10000) needs 20,000 descriptors.
        assert_eq!(needed(10_000), 20_000);
        assert_eq!(needed(usize::MAX), u64::MAX);
    }
}
