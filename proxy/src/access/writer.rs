//! The access log's writer thread: takes lines off the queue, formats them (JSON Lines) and
//! writes them in batches, flushing whenever the queue runs empty; reopens its file on request.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

use http::Version;
use serde::Serialize;

use super::{AccessLogConfig, Entry, Record, QUEUE_LINES};
use crate::config::{ConfigError, Problem};

/// What the queue carries.
#[derive(Debug)]
pub(super) enum Message {
    Line(Box<Entry>),
    /// Look at the reopen flag (sent by a SIGHUP).
    Wake,
}

/// Where lines go.
pub(super) enum Target {
    Stdout,
    File { path: PathBuf, file: File },
}

/// The line as written: the documented fields, in this order.
#[derive(Serialize)]
struct Line<'a> {
    /// When the request arrived, RFC 3339 in UTC with microseconds.
    time: String,
    client: &'a str,
    method: &'a str,
    host: Option<std::borrow::Cow<'a, str>>,
    path: &'a str,
    protocol: &'static str,
    status: u16,
    route: Option<&'a str>,
    backend: Option<&'static str>,
    endpoint: Option<String>,
    attempts: u8,
    duration_us: u64,
    response_bytes: u64,
    completed: bool,
    error: Option<&'static str>,
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
/// sender is gone and the queue is drained.
pub(super) fn spawn(target: Target, reopen: Arc<AtomicBool>) -> io::Result<SyncSender<Message>> {
    let (queue, lines) = sync_channel(QUEUE_LINES);
    std::thread::Builder::new()
        .name("access-log".into())
        .spawn(move || run(target, &lines, &reopen))?;
    Ok(queue)
}

fn run(mut target: Target, lines: &Receiver<Message>, reopen: &AtomicBool) {
    let mut out = writer_of(&target);
    let mut failing = false;
    let mut text = Vec::with_capacity(512);
    while let Ok(first) = lines.recv() {
        let mut result = write(&mut out, first, &mut text);
        // A batch: everything queued now, then one flush.
        while let Ok(next) = lines.try_recv() {
            result = result.and(write(&mut out, next, &mut text));
        }
        result = result.and(out.flush());
        if reopen.swap(false, Ordering::Relaxed) {
            if let Some(file) = reopened(&mut target) {
                out = BufWriter::new(Box::new(file));
            }
        }
        // Once per run of failures (a full disk), not once per line.
        match result {
            Err(error) if !failing => {
                tracing::error!(%error, "access log: write failed; lines are being lost");
                failing = true;
            }
            Err(_) => {}
            Ok(()) => failing = false,
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
    BufWriter::with_capacity(64 * 1024, sink)
}

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

fn write(out: &mut impl Write, message: Message, text: &mut Vec<u8>) -> io::Result<()> {
    let Message::Line(entry) = message else {
        return Ok(());
    };
    text.clear();
    format(&entry.record, text);
    out.write_all(text)
}

/// `record` as one JSON line, newline included.
pub(super) fn format(record: &Record, text: &mut Vec<u8>) {
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
    let line = Line {
        time: humantime::format_rfc3339_micros(record.time).to_string(),
        client: record.client.to_str().unwrap_or(""),
        method: record.method.as_str(),
        host,
        path: record.uri.path(),
        protocol: protocol(record.version),
        status: record.status,
        route: served.route.as_deref(),
        backend: served.backend.map(|slot| slot.as_str()),
        endpoint: served.endpoint.map(|e| e.to_string()),
        attempts: served.attempts,
        duration_us: u64::try_from(record.duration.as_micros()).unwrap_or(u64::MAX),
        response_bytes: record.bytes,
        completed: record.completed,
        error: served.error,
    };
    // Serializing plain strings and numbers into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *text, &line);
    text.push(b'\n');
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
