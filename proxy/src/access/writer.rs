//! The access log's writer thread: takes lines off the queue, formats them (JSON Lines) and
//! writes them in batches, flushing after each; reopens its file on request.
//!
//! Under traffic the thread looks at the queue every [`BATCH_INTERVAL`] rather than being woken
//! for each line: a request then queues its line without a wake-up (no futex call), and the lines
//! of an interval go out in one write. Once a look finds the queue empty, the thread waits on it
//! again, so an idle proxy's writer sleeps until the next line (one wake-up per idle spell).
//!
//! The line is laid out here field by field (the keys are constants, numbers go through `itoa`);
//! every string that comes from the request or the configuration is escaped by `serde_json`. What
//! repeats from line to line is kept: the date and time to the second (lines of one second share
//! it) and the text of each endpoint address.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::Version;

use super::{AccessLogConfig, Entry, Record, QUEUE_LINES};
use crate::config::{ConfigError, Problem};

/// How long the writer waits after a batch before it looks at the queue again, while lines keep
/// coming: 10 ms. At 80,000 requests per second that is 800 lines, a tenth of the queue
/// ([`QUEUE_LINES`]); a line reaches the file at most about this much later than it would if
/// written at once.
pub(super) const BATCH_INTERVAL: Duration = Duration::from_millis(10);

/// Endpoint texts the formatter keeps (an address's text is made once, then looked up); when
/// more endpoints than this have been seen, the kept ones are forgotten and made again.
const ENDPOINT_TEXTS: usize = 4096;

/// What the queue carries.
#[derive(Debug)]
pub(super) enum Message {
    Line(Box<Entry>),
    /// Look at the reopen flag (sent by a SIGHUP).
    Wake,
    /// Write and flush everything queued before this, then answer (a shutdown's last words).
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Where lines go.
pub(super) enum Target {
    Stdout,
    File { path: PathBuf, file: File },
}

// === impl Target ===

impl Target {
    /// The destination `config` names, opened; `None` when off.
    pub(super) fn open(config: &AccessLogConfig) -> Result<Option<Target>, ConfigError> {
        Ok(Some(match config {
            AccessLogConfig::Off => return Ok(None),
            AccessLogConfig::Stdout => Target::Stdout,
            AccessLogConfig::File(path) => Target::File {
                file: append(path).map_err(|e| {
                    let message = format!("cannot open {} for appending: {e}", path.display());
                    ConfigError::Invalid(vec![Problem::new("access_log", message)])
                })?,
                path: path.clone(),
            },
        }))
    }
}

fn append(path: &Path) -> io::Result<File> {
    OpenOptions::new().append(true).create(true).open(path)
}

/// Starts the writer thread over `target`; returns the queue to it. The thread ends once every
/// sender is gone and the queue is drained. Lines lost to a failed write are added to
/// `write_failed`.
pub(super) fn spawn(
    target: Target,
    reopen: Arc<AtomicBool>,
    write_failed: Arc<AtomicU64>,
) -> io::Result<SyncSender<Message>> {
    let (queue, lines) = sync_channel(QUEUE_LINES);
    std::thread::Builder::new()
        .name("access-log".into())
        .spawn(move || run(target, &lines, &reopen, &write_failed))?;
    Ok(queue)
}

fn run(
    mut target: Target,
    lines: &Receiver<Message>,
    reopen: &AtomicBool,
    write_failed: &AtomicU64,
) {
    let mut out = writer_of(&target);
    let mut failing = false;
    let mut formatter = Formatter::default();
    let mut text = Vec::with_capacity(512);
    // Idle: wait for the first line (or a wake, or the last sender gone).
    while let Ok(first) = lines.recv() {
        let mut next = Some(first);
        loop {
            // A batch: everything queued now, then one flush.
            let (mut taken, mut result, mut flushed) = (0usize, Ok(()), Vec::new());
            let mut written = 0u64;
            loop {
                let message = match next.take() {
                    Some(message) => message,
                    None => match lines.try_recv() {
                        Ok(message) => message,
                        Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                    },
                };
                taken += 1;
                match message {
                    Message::Line(entry) => {
                        written += 1;
                        text.clear();
                        formatter.format(&entry.record, &mut text);
                        result = result.and(out.write_all(&text));
                    }
                    Message::Wake => {}
                    Message::Flush(answer) => flushed.push(answer),
                }
            }
            result = result.and(out.flush());
            if result.is_err() {
                // The batch's lines are lost (trial 13 N5: they were not counted). What the
                // buffer still holds is dropped, not written later in part after newer lines.
                write_failed.fetch_add(written, Ordering::Relaxed);
                let (sink, _unwritten) = out.into_parts();
                out = BufWriter::with_capacity(BUFFER_BYTES, sink);
            }
            for answer in flushed {
                let _ = answer.send(());
            }
            if reopen.swap(false, Ordering::Relaxed) {
                if let Some(file) = reopened(&mut target) {
                    out = BufWriter::new(Box::new(file));
                }
            }
            // Once per run of failures (a full disk), not once per line.
            match result {
                Err(error) if !failing => {
                    tracing::error!(
                        %error,
                        "access log: write failed; lines are being lost (counted in \
                         crossfade_access_log_dropped_total{{reason=\"write_error\"}})"
                    );
                    failing = true;
                }
                Err(_) => {}
                Ok(()) => failing = false,
            }
            if taken == 0 {
                break; // the queue ran dry: wait on it
            }
            std::thread::sleep(BATCH_INTERVAL);
        }
    }
}

fn writer_of(target: &Target) -> BufWriter<Box<dyn Write + Send>> {
    let sink: Box<dyn Write + Send> = match target {
        Target::Stdout => Box::new(io::stdout()),
        Target::File { file, .. } => match file.try_clone() {
            Ok(file) => Box::new(file),
            Err(error) => {
                tracing::error!(%error, "access log: cannot use the file; lines are being lost");
                Box::new(io::sink())
            }
        },
    };
    BufWriter::with_capacity(BUFFER_BYTES, sink)
}

/// The writer's buffer: 64 KiB.
const BUFFER_BYTES: usize = 64 * 1024;

/// The target's file opened again at its path (after logrotate renamed it); `None` for stdout or
/// when it cannot be opened (the old file is kept).
fn reopened(target: &mut Target) -> Option<File> {
    let Target::File { path, file } = target else {
        return None;
    };
    match append(path).and_then(|new| Ok((new.try_clone()?, new))) {
        Ok((writing, kept)) => {
            *file = kept;
            tracing::info!(path = %path.display(), "access log reopened");
            Some(writing)
        }
        Err(error) => {
            tracing::error!(path = %path.display(), %error, "access log: cannot reopen; writing on to the old file");
            None
        }
    }
}

/// Formats lines, keeping what repeats between them.
#[derive(Default)]
pub(super) struct Formatter {
    /// The second (since the Unix epoch) that `date` spells.
    second: Option<u64>,
    /// `YYYY-MM-DDTHH:MM:SS` of `second`, in UTC.
    date: String,
    /// The text of each endpoint seen (at most [`ENDPOINT_TEXTS`]).
    endpoints: HashMap<SocketAddr, Box<str>>,
}

impl Formatter {
    /// `record` as one JSON line, newline included, appended to `text`. The fields, in this
    /// order: `time` (when the request arrived, RFC 3339 in UTC with microseconds), `client`,
    /// `method`, `host`, `path`, `protocol`, `status`, `route`, `backend`, `endpoint`,
    /// `attempts`, `duration_us`, `response_bytes`, `completed`, `error`, `request_id`; a field with no value
    /// is `null`.
    pub(super) fn format(&mut self, record: &Record, text: &mut Vec<u8>) {
        // As the client sent it, port included: the request-target's authority (HTTP/2's
        // `:authority`, an absolute-form target) without any user info, else the Host header.
        let host = match record.uri.authority() {
            Some(authority) => Some(authority.as_str().rsplit('@').next().unwrap_or("").into()),
            None => record
                .host
                .as_ref()
                .map(|h| String::from_utf8_lossy(h.as_bytes())),
        };
        let served = &record.served;
        let mut numbers = itoa::Buffer::new();
        text.extend_from_slice(b"{\"time\":\"");
        self.time(record.time, text);
        text.extend_from_slice(b"\",\"client\":");
        string(text, record.client.to_str().unwrap_or(""));
        text.extend_from_slice(b",\"method\":");
        string(text, record.method.as_str());
        text.extend_from_slice(b",\"host\":");
        optional(text, host.as_deref());
        text.extend_from_slice(b",\"path\":");
        string(text, record.uri.path());
        text.extend_from_slice(b",\"protocol\":\"");
        text.extend_from_slice(protocol(record.version).as_bytes());
        text.extend_from_slice(b"\",\"status\":");
        text.extend_from_slice(numbers.format(record.status).as_bytes());
        text.extend_from_slice(b",\"route\":");
        optional(text, served.route.as_deref());
        text.extend_from_slice(b",\"backend\":");
        optional(text, served.backend.map(|slot| slot.as_str()));
        text.extend_from_slice(b",\"endpoint\":");
        let endpoint = served.endpoint.map(|e| self.endpoint(e));
        optional(text, endpoint);
        text.extend_from_slice(b",\"attempts\":");
        text.extend_from_slice(numbers.format(served.attempts).as_bytes());
        text.extend_from_slice(b",\"duration_us\":");
        let micros = u64::try_from(record.duration.as_micros()).unwrap_or(u64::MAX);
        text.extend_from_slice(numbers.format(micros).as_bytes());
        text.extend_from_slice(b",\"response_bytes\":");
        text.extend_from_slice(numbers.format(record.bytes).as_bytes());
        text.extend_from_slice(if record.completed {
            b",\"completed\":true,\"error\":"
        } else {
            b",\"completed\":false,\"error\":"
        });
        optional(text, served.error);
        text.extend_from_slice(b",\"request_id\":");
        let request_id = record.request_id.as_ref();
        optional(text, request_id.map(|id| id.to_str().unwrap_or("")));
        text.extend_from_slice(b"}\n");
    }

    /// `time` as RFC 3339 in UTC with microseconds (`2025-12-01T20:04:14.123456Z`), without the
    /// quotes; a time before the Unix epoch (a clock set wrong) as the epoch.
    fn time(&mut self, time: SystemTime, text: &mut Vec<u8>) {
        let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
        let second = since.as_secs();
        if self.second != Some(second) {
            let whole = UNIX_EPOCH + Duration::from_secs(second);
            // `YYYY-MM-DDTHH:MM:SSZ`: kept without its `Z`.
            self.date = humantime::format_rfc3339_seconds(whole).to_string();
            self.date.pop();
            self.second = Some(second);
        }
        text.extend_from_slice(self.date.as_bytes());
        let micros = since.subsec_micros();
        let mut digits = *b".000000Z";
        let mut rest = micros;
        for place in (1..7).rev() {
            digits[place] = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        text.extend_from_slice(&digits);
    }

    /// The text of `endpoint` (`127.0.0.1:9001`, `[::1]:9001`), made once per address.
    fn endpoint(&mut self, endpoint: SocketAddr) -> &str {
        if self.endpoints.len() >= ENDPOINT_TEXTS && !self.endpoints.contains_key(&endpoint) {
            self.endpoints.clear();
        }
        self.endpoints
            .entry(endpoint)
            .or_insert_with(|| endpoint.to_string().into())
    }
}

/// `value` as a JSON string, escaped as RFC 8259 §7 asks (by `serde_json`).
fn string(text: &mut Vec<u8>, value: &str) {
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *text, value);
}

/// `value` as a JSON string, or `null`.
fn optional(text: &mut Vec<u8>, value: Option<&str>) {
    match value {
        Some(value) => string(text, value),
        None => text.extend_from_slice(b"null"),
    }
}

fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "other",
    }
}
