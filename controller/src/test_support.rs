//! Helpers of the crate's unit tests that start real processes.

use std::path::Path;
use std::time::Duration;

/// The first pid written to `path` (one per line, as `echo $$ >> path` writes) for which `accept`
/// holds, polled every 20 ms for up to 60 s.
///
/// # Panics
/// When none is written in time, naming `what`.
pub(crate) async fn pid_written(path: &Path, what: &str, accept: impl Fn(u32) -> bool) -> u32 {
    let found = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let first = text
                .lines()
                .next()
                .and_then(|l| l.trim().parse::<u32>().ok());
            if let Some(pid) = first.filter(|&pid| accept(pid)) {
                return pid;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("{what}: no pid in {} after 60 s", path.display()))
}

/// `sleep 600` in a process group of its own (as the driver starts instances): a process that
/// runs, for tests of what is recorded of one. The caller kills and reaps it.
pub(crate) fn sleeping_group_leader() -> std::process::Child {
    use std::os::unix::process::CommandExt;
    std::process::Command::new("sleep")
        .arg("600")
        .process_group(0)
        .spawn()
        .expect("sleep starts")
}
