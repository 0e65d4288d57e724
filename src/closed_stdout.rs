//! Whether standard output cannot be written: closed when the process started
//! (`crossfade crdgen >&-`) or open for reading only.
//!
//! A write to a closed descriptor fails with `EBADF`, but a Rust program never sees it: before
//! `main`, std's runtime opens `/dev/null` read-write on each of the descriptors 0, 1 and 2 that
//! is closed, so that a file opened later cannot take its number. What it prints then goes
//! nowhere and the command exited 0 (session 42), where `echo hi >&-` fails. That `/dev/null`
//! cannot be told from one a user gives read-write (`1<>/dev/null`, a discarded output, taken for
//! a closed one until session 43), so `src/closed_stdout.c`, a constructor that runs before std's
//! runtime, puts a read-only `/dev/null` on a closed descriptor 1 instead: the stdout told here is
//! one open for reading only, which std's own writes would take silently too (it reads `EBADF`
//! on stdout as a closed one's, and success).

/// Whether descriptor 1 is open for reading only, read from `/proc/self/fdinfo` (Linux): a
/// stdout closed at start (`src/closed_stdout.c`) or given read-only (`1</dev/null`), on which
/// every write fails. `false` where that cannot be read.
pub fn stdout_unwritable() -> bool {
    std::fs::read_to_string("/proc/self/fdinfo/1").is_ok_and(|info| is_read_only(&info))
}

/// Whether a descriptor whose `/proc/self/fdinfo` text is `info` is open read-only (the `flags:`
/// line is octal; its low two bits are the access mode: 0 read-only, 1 write-only, 2 read-write;
/// proc(5)).
fn is_read_only(info: &str) -> bool {
    let flags = info
        .lines()
        .find_map(|line| line.strip_prefix("flags:"))
        .and_then(|octal| u32::from_str_radix(octal.trim(), 8).ok());
    flags.is_some_and(|flags| flags & 0o3 == 0o0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_read_only_descriptor_is_unwritable() {
        let info = |flags: &str| format!("pos:\t0\nflags:\t{flags}\nmnt_id:\t25\nino:\t5\n");
        // src/closed_stdout.c's open("/dev/null", O_RDONLY), with O_LARGEFILE (0100000).
        assert!(is_read_only(&info("0100000")));
        // std's runtime's and `1<>/dev/null`: O_RDWR.
        assert!(!is_read_only(&info("0100002")));
        // A shell's `>/dev/null`: O_WRONLY (O_CREAT and O_TRUNC are not kept).
        assert!(!is_read_only(&info("0100001")));
        assert!(!is_read_only("pos:\t0\n"));
    }
}
