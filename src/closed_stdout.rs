//! Whether standard output was closed when the process started (`crossfade crdgen >&-`).
//!
//! A write to a closed descriptor fails with `EBADF`, but a Rust program never sees it: before
//! `main`, std's runtime opens `/dev/null` read-write on each of the descriptors 0, 1 and 2 that
//! is closed, so that a file opened later cannot take its number. What it prints then goes
//! nowhere and the command exited 0 (session 42), where `echo hi >&-` fails. The runtime's
//! `/dev/null` is told from one a user gives by its access mode: a shell's `>/dev/null` opens it
//! write-only. daemon(3) and start-stop-daemon open one `/dev/null` read-write for all three
//! descriptors: a stderr that is such a `/dev/null` too is taken for that, a discarded output,
//! not a closed one (and with stderr closed too there is nobody to tell either way).

use std::path::Path;

/// Whether descriptor 1 is the `/dev/null` that std's runtime opened on it because it was
/// closed at start, read from `/proc/self` (Linux); `false` where that cannot be read.
pub fn stdout_was_closed() -> bool {
    runtime_null(1) && !runtime_null(2)
}

/// Whether descriptor `fd` is `/dev/null` opened read-write.
fn runtime_null(fd: u32) -> bool {
    let link = std::fs::read_link(format!("/proc/self/fd/{fd}"));
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"));
    match (link, info) {
        (Ok(link), Ok(info)) => is_read_write_null(&link, &info),
        _ => false,
    }
}

/// Whether a descriptor whose `/proc/self/fd` link is `link` and whose `/proc/self/fdinfo`
/// text is `info` is `/dev/null` opened `O_RDWR` (the `flags:` line is octal; its low two bits
/// are the access mode: 0 read-only, 1 write-only, 2 read-write; proc(5)).
fn is_read_write_null(link: &Path, info: &str) -> bool {
    let flags = info
        .lines()
        .find_map(|line| line.strip_prefix("flags:"))
        .and_then(|octal| u32::from_str_radix(octal.trim(), 8).ok());
    link == Path::new("/dev/null") && flags.is_some_and(|flags| flags & 0o3 == 0o2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_read_write_dev_null_is_the_runtimes() {
        let null = Path::new("/dev/null");
        let info = |flags: &str| format!("pos:\t0\nflags:\t{flags}\nmnt_id:\t25\nino:\t5\n");
        // std's runtime: open("/dev/null", O_RDWR) with O_LARGEFILE (0100000).
        assert!(is_read_write_null(null, &info("0100002")));
        // A shell's `>/dev/null`: O_WRONLY | O_CREAT | O_TRUNC | O_LARGEFILE.
        assert!(!is_read_write_null(null, &info("0101001")));
        assert!(!is_read_write_null(Path::new("/tmp/out"), &info("0100002")));
        assert!(!is_read_write_null(null, "pos:\t0\n"));
    }
}
