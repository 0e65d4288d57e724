//! The log's way to stderr when stderr is a pipe or a terminal: each record is written at once,
//! in order, without ever blocking the thread that logs. Runtry 30: with records written by a
//! blocking `write(2)`, a stderr nobody read for a while (a pager, a terminal paused with Ctrl-S, a
//! stuck log shipper) filled up with a chatty workload's relayed output, and then every runtime
//! thread blocked in its write: the proxy answered nothing until stderr was read again.
//!
//! Stderr is opened a second time (`/proc/self/fd/2`: a file description of its own, so the
//! non-blocking mode set on it is not shared with whoever else writes there) with `O_NONBLOCK`.
//! A record is written in place while the pipe takes it; what it does not take waits in a
//! backlog of at most [`CAPACITY`] records and [`CAPACITY_BYTES`], which a thread of its own
//! writes as the pipe drains.
//! A record that finds the backlog full is dropped and counted, and the next record written is
//! preceded by `crossfade: N log records dropped: ...`. A regular file (whose writes do not wait
//! for a reader) or a socket (which cannot be opened again) is written in place as before.

use std::collections::VecDeque;
use std::io::{ErrorKind, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// Records the backlog holds before new ones are dropped.
pub const CAPACITY: usize = 4096;

/// Bytes the backlog holds before new records are dropped, whatever their number: 4 MiB (a
/// workload's output is relayed in records of up to 16 KiB, so [`CAPACITY`] of them alone could
/// hold 64 MiB, the proxy's whole memory target with 10,000 idle connections).
pub const CAPACITY_BYTES: usize = 4 << 20;

/// The longest [`LogQueue::flush`] waits at exit for a stderr that is not read.
pub const FLUSH_WAIT: Duration = Duration::from_secs(5);

/// How often the backlog's thread tries a pipe that took nothing.
const RETRY: Duration = Duration::from_millis(10);

/// The shared writer: a `tracing_subscriber` writer factory (its `MakeWriter::make_writer`), cheap
/// to clone.
#[derive(Clone)]
pub struct LogQueue {
    shared: Arc<Shared>,
}

struct Shared {
    out: Mutex<Out>,
    pending: Condvar,
}

struct Out {
    file: Box<dyn Write + Send>,
    /// Bytes the pipe has not taken yet, in order (the first may be a record's remainder).
    backlog: VecDeque<Vec<u8>>,
    /// The bytes in `backlog`.
    backlog_bytes: usize,
    /// Records dropped since the last note.
    dropped: u64,
    capacity: usize,
}

/// One record being formatted; written (or queued) whole when `tracing_subscriber` drops it.
pub struct QueuedRecord {
    buf: Vec<u8>,
    queue: LogQueue,
}

impl LogQueue {
    /// For this process's stderr when it is a pipe or a terminal; `None` otherwise (write to it
    /// in place) or when it cannot be opened again, or the backlog's thread cannot start.
    pub fn for_stderr() -> Option<LogQueue> {
        use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
        let kind = std::fs::metadata("/proc/self/fd/2").ok()?.file_type();
        if !(kind.is_fifo() || kind.is_char_device()) {
            return None;
        }
        let file = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(nix::libc::O_NONBLOCK)
            .open("/proc/self/fd/2")
            .ok()?;
        LogQueue::start(CAPACITY, file).ok()
    }

    /// A writer to `out`, a non-blocking file (its writes fail with `WouldBlock` when full),
    /// with a backlog of `capacity` records and the thread that writes it.
    ///
    /// # Errors
    /// The operating system's error when the thread cannot be started.
    pub fn start(capacity: usize, out: impl Write + Send + 'static) -> std::io::Result<LogQueue> {
        let shared = Arc::new(Shared {
            out: Mutex::new(Out {
                file: Box::new(out),
                backlog: VecDeque::new(),
                backlog_bytes: 0,
                dropped: 0,
                capacity,
            }),
            pending: Condvar::new(),
        });
        let drains = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || drain(&drains))?;
        Ok(LogQueue { shared })
    }

    /// Waits until the backlog is written, at most `wait` (a stderr that is still not read keeps
    /// the rest), after a note of the records dropped, if any. Returns whether all was written.
    pub fn flush(&self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        {
            let mut out = self.shared.lock();
            if out.dropped > 0 {
                out.submit(Vec::new());
                self.shared.pending.notify_one();
            }
        }
        loop {
            if self.shared.lock().backlog.is_empty() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(RETRY);
        }
    }

    fn submit(&self, record: Vec<u8>) {
        let mut out = self.shared.lock();
        out.submit(record);
        if !out.backlog.is_empty() {
            self.shared.pending.notify_one();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Out> {
        self.out.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Out {
    /// Writes `record` (empty: only the note), after a note of the records dropped before it, if
    /// any: in place when nothing waits before it, the rest to the backlog; dropped (and counted)
    /// when the backlog is full.
    fn submit(&mut self, record: Vec<u8>) {
        let own = u64::from(!record.is_empty());
        if self.backlog.len() >= self.capacity || self.backlog_bytes + record.len() > CAPACITY_BYTES
        {
            self.dropped += own;
            return;
        }
        let mut bytes = record;
        if self.dropped > 0 {
            let note = format!(
                "crossfade: {} log records dropped: stderr was not read for a while (the log \
                 waits for no reader, so that serving does not)\n",
                self.dropped
            );
            bytes.splice(0..0, note.into_bytes());
            self.dropped = 0;
        }
        if bytes.is_empty() {
            return;
        }
        self.backlog_bytes += bytes.len();
        self.backlog.push_back(bytes);
        self.write_backlog();
    }

    /// Writes what the backlog holds, in order, until the file takes no more.
    fn write_backlog(&mut self) {
        while let Some(front) = self.backlog.front_mut() {
            match self.file.write(front) {
                Ok(0) => return,
                Ok(n) if n == front.len() => {
                    self.backlog_bytes -= n;
                    self.backlog.pop_front();
                }
                Ok(n) => {
                    self.backlog_bytes -= n;
                    front.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                // Nobody to tell (stderr is where it would be said): what cannot be written
                // is let go, as a blocking write's error was ignored.
                Err(_) => {
                    self.backlog_bytes -= front.len();
                    self.backlog.pop_front();
                }
            }
        }
    }
}

/// The backlog's thread: while the backlog holds something, tries it every [`RETRY`].
fn drain(shared: &Shared) {
    let mut out = shared.lock();
    loop {
        while out.backlog.is_empty() {
            out = shared
                .pending
                .wait(out)
                .unwrap_or_else(PoisonError::into_inner);
        }
        out.write_backlog();
        if !out.backlog.is_empty() {
            drop(out);
            std::thread::sleep(RETRY);
            out = shared.lock();
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogQueue {
    type Writer = QueuedRecord;

    fn make_writer(&'a self) -> QueuedRecord {
        QueuedRecord {
            buf: Vec::new(),
            queue: self.clone(),
        }
    }
}

impl Write for QueuedRecord {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for QueuedRecord {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            self.queue.submit(std::mem::take(&mut self.buf));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pipe-like writer: takes at most `room` bytes until reopened, then `WouldBlock`.
    #[derive(Clone)]
    struct Pipe {
        room: Arc<Mutex<usize>>,
        seen: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Pipe {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let mut room = self.room.lock().unwrap();
            if *room == 0 {
                return Err(ErrorKind::WouldBlock.into());
            }
            let n = bytes.len().min(*room);
            *room -= n;
            self.seen.lock().unwrap().extend_from_slice(&bytes[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn record(queue: &LogQueue, text: &str) {
        let mut writer = tracing_subscriber::fmt::MakeWriter::make_writer(queue);
        writer.write_all(text.as_bytes()).unwrap();
    }

    fn seen(pipe: &Pipe) -> String {
        String::from_utf8(pipe.seen.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn records_are_written_in_place_while_the_pipe_takes_them() {
        let pipe = Pipe {
            room: Arc::new(Mutex::new(usize::MAX)),
            seen: Arc::default(),
        };
        let queue = LogQueue::start(4, pipe.clone()).unwrap();
        record(&queue, "one\n");
        record(&queue, "two\n");
        // No wait: written before `record` returned.
        assert_eq!(seen(&pipe), "one\ntwo\n");
    }

    #[test]
    fn a_full_pipe_never_blocks_a_record_and_the_loss_is_said_once_it_drains() {
        let pipe = Pipe {
            room: Arc::new(Mutex::new(10)),
            seen: Arc::default(),
        };
        let queue = LogQueue::start(4, pipe.clone()).unwrap();
        let started = Instant::now();
        for i in 0..20 {
            record(&queue, &format!("record {i:02}\n"));
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "records were waited for: {:?}",
            started.elapsed()
        );
        // 10 bytes in place ("record 00\n"), then 4 records in the backlog, 15 dropped.
        assert_eq!(seen(&pipe), "record 00\n");
        assert!(!queue.flush(Duration::from_millis(50)), "the pipe is full");
        *pipe.room.lock().unwrap() = usize::MAX;
        assert!(queue.flush(FLUSH_WAIT), "written once the pipe drains");
        record(&queue, "after\n");
        let text = seen(&pipe);
        assert!(
            text.starts_with("record 00\nrecord 01\nrecord 02\nrecord 03\nrecord 04\n"),
            "in order: {text}"
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 7, "{text}");
        assert!(
            lines[5].starts_with("crossfade: 15 log records dropped: stderr was not read"),
            "{text}"
        );
        assert_eq!(lines[6], "after");
    }

    /// Long records (a workload's 16 KiB lines) fill the backlog's bytes before its count: it
    /// holds at most [`CAPACITY_BYTES`], and the rest is dropped and counted.
    #[test]
    fn the_backlog_is_bounded_in_bytes_too() {
        let pipe = Pipe {
            room: Arc::new(Mutex::new(0)),
            seen: Arc::default(),
        };
        let queue = LogQueue::start(CAPACITY, pipe.clone()).unwrap();
        let line = format!("{}\n", "x".repeat(16 * 1024 - 1));
        for _ in 0..1000 {
            record(&queue, &line);
        }
        let out = queue.shared.lock();
        assert_eq!(
            out.backlog.len(),
            CAPACITY_BYTES / line.len(),
            "records held"
        );
        assert!(out.backlog_bytes <= CAPACITY_BYTES, "{}", out.backlog_bytes);
        assert_eq!(out.dropped, 1000 - (CAPACITY_BYTES / line.len()) as u64);
    }
}
