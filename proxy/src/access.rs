//! The access log (`access_log`): one JSON line per request (JSON Lines), written by a thread of
//! its own so that the request path never waits on a disk; and the rate-limited warning for the
//! upstream failures the proxy answers 502/504 ([`warn`]).
//!
//! A request with the log on takes a [`Pending`] line (one allocation and a few reference-count
//! increments: the method, URI and `Host` are shared, not copied) which travels with its response
//! body and is queued when the body ends or is dropped; the writer thread formats and writes it.
//! The queue is bounded ([`QUEUE_LINES`]): when the writer falls behind, lines are dropped and
//! counted in `crossfade_access_log_dropped_total{reason="queue_full"}`, never waited for. Lines
//! whose write fails (a full disk, an I/O error) are counted in
//! `crossfade_access_log_dropped_total{reason="write_error"}`, and the first failure of a run
//! of failures is logged. With the log `off` (the
//! default) a request pays one branch on an `Option`.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderValue, Method, Request, Uri, Version};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use tokio::time::Instant;

use crate::config::{ConfigError, Problem};
use crate::error::Error;
use crate::local::LocalReason;
use crate::weight::Slot;

pub(crate) mod warn;
mod writer;

pub(crate) use warn::LogLimit;

/// Lines the queue to the writer holds. A line waits there as one pointer; 8,192 of them cover a
/// 100 ms stall of the disk at 80,000 requests per second before any is dropped, for 64 KiB.
pub const QUEUE_LINES: usize = 8192;

/// Where the access log goes: `access_log: off` (the default), `stdout`, or a file path (absolute,
/// or relative to the config file's directory, see
/// [`ProxyConfig::resolve_paths`](crate::config::ProxyConfig::resolve_paths)) that lines are
/// appended to. Read at start: a
/// reload does not change it (a SIGHUP reopens the file, for logrotate).
///
/// In YAML a string: `off`, `stdout`, or anything else as a path (`./off` for a file named `off`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum AccessLogConfig {
    /// No access log (the default): nothing is recorded and a request pays one branch.
    #[default]
    Off,
    /// To the process's standard output (the proxy's own log goes to standard error).
    Stdout,
    /// Appended to this file, created if missing (mode 0644 less the umask).
    File(PathBuf),
}

/// What a request's line says about where it went, set where that is known: an attempt (an
/// upgrade's too) records it as it is sent ([`Pending::dispatched`]), a refused request's answer
/// carries it as a response extension (only while the log is on), a proxy's own answer after an
/// attempt gives it from its [`Error`].
#[derive(Clone, Debug, Default)]
pub(crate) struct Served {
    pub(crate) route: Option<Arc<str>>,
    pub(crate) backend: Option<Slot>,
    pub(crate) endpoint: Option<SocketAddr>,
    /// Requests sent upstream for it: 0 (answered by the proxy before any), 1, or 2 after a retry.
    pub(crate) attempts: u8,
    /// For the proxy's own answers: the upstream failure kind (`reset`...) or the local reason
    /// (`no_route`...), as in the metric labels.
    pub(crate) error: Option<&'static str>,
}

/// The access log of a running proxy: the queue to its writer thread.
#[derive(Clone, Debug)]
pub(crate) struct AccessLog {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Whether the log goes to a file (which a SIGHUP reopens).
    file: bool,
    queue: SyncSender<writer::Message>,
    /// Lines dropped because the queue was full.
    dropped: AtomicU64,
    /// Lines lost because their write failed (counted by the writer thread).
    write_failed: Arc<AtomicU64>,
    /// Set by a SIGHUP: the writer reopens its file before its next write.
    reopen: Arc<AtomicBool>,
    /// The proxy's `Shared::abandoning`, set when a stop drops what its drain left after
    /// `drain_timeout`: lines that end unfinished from then on say so ([`Pending::end`]: error
    /// [`DRAIN_TIMEOUT`], status [`NO_RESPONSE`] when no response head was sent).
    abandoning: Arc<AtomicBool>,
}

/// One request's line, from its arrival until its response body ends (or is dropped), when it is
/// queued. Never blocks: a full queue drops the line and counts it.
#[derive(Debug)]
pub(crate) struct Pending(Option<Box<Entry>>);

/// A line on its way: the record, and the log it goes to.
#[derive(Debug)]
pub(crate) struct Entry {
    record: Record,
    log: Arc<Inner>,
    started: Instant,
}

/// What one line is written from (see [`writer`] for the fields as written).
#[derive(Debug)]
struct Record {
    time: SystemTime,
    client: HeaderValue,
    /// The request's ID (`request_id`), when request IDs are on.
    request_id: Option<HeaderValue>,
    method: Method,
    uri: Uri,
    host: Option<HeaderValue>,
    version: Version,
    status: u16,
    served: Served,
    bytes: u64,
    completed: bool,
    duration: Duration,
}

// === impl AccessLogConfig ===

impl AccessLogConfig {
    /// Checks the log's destination as a start would open it, creating nothing: an existing file
    /// is opened for appending and dropped; for a missing one, its directory must exist and let
    /// this process create a file in it (`access(2)`, write and search), as the start's open
    /// would. `crossfade check` created the file it checked (check32).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming `access_log` when the file cannot be opened for appending
    /// (a missing directory, no permission, a directory at that path...).
    pub fn check(&self) -> Result<(), ConfigError> {
        let AccessLogConfig::File(path) = self else {
            return writer::Target::open(self).map(drop);
        };
        if path.symlink_metadata().is_ok() {
            return writer::Target::open(self).map(drop);
        }
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        let access = rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK;
        rustix::fs::access(dir, access).map_err(|e| {
            let e = std::io::Error::from(e);
            let message = format!("cannot open {} for appending: {e}", path.display());
            ConfigError::Invalid(vec![Problem::new("access_log", message)])
        })
    }

    /// The access log this config asks for, its writer thread started; `None` when `off`.
    /// `abandoning` is the proxy's flag of a stop past its drain deadline (`Shared::abandoning`),
    /// which the log's lines read.
    pub(crate) fn start(
        &self,
        abandoning: Arc<AtomicBool>,
    ) -> Result<Option<AccessLog>, ConfigError> {
        let Some(target) = writer::Target::open(self)? else {
            return Ok(None);
        };
        let file = matches!(target, writer::Target::File { .. });
        let reopen = Arc::new(AtomicBool::new(false));
        let write_failed = Arc::new(AtomicU64::new(0));
        let queue = writer::spawn(target, Arc::clone(&reopen), Arc::clone(&write_failed));
        let queue = queue.map_err(|e| {
            let message = format!("cannot start the access log's writer thread: {e}");
            ConfigError::Invalid(vec![Problem::new("access_log", message)])
        })?;
        let inner = Inner {
            file,
            queue,
            dropped: AtomicU64::new(0),
            write_failed,
            reopen,
            abandoning,
        };
        Ok(Some(AccessLog {
            inner: Arc::new(inner),
        }))
    }

    fn as_str(&self) -> std::borrow::Cow<'_, str> {
        match self {
            AccessLogConfig::Off => "off".into(),
            AccessLogConfig::Stdout => "stdout".into(),
            AccessLogConfig::File(path) => path.to_string_lossy(),
        }
    }
}

impl Serialize for AccessLogConfig {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.as_str())
    }
}

impl<'de> Deserialize<'de> for AccessLogConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<AccessLogConfig, D::Error> {
        d.deserialize_any(AccessLogVisitor)
    }
}

struct AccessLogVisitor;

impl Visitor<'_> for AccessLogVisitor {
    type Value = AccessLogConfig;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("off, stdout or a file path such as /var/log/crossfade/access.log")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<AccessLogConfig, E> {
        Ok(match text {
            "off" => AccessLogConfig::Off,
            "stdout" => AccessLogConfig::Stdout,
            "" => return Err(E::invalid_value(de::Unexpected::Str(text), &self)),
            path => {
                if let Some(keyword) = misspelt_keyword(path) {
                    return Err(E::custom(format!(
                        "{path:?} is not {keyword} (lower case, no spaces), and as a file name it \
                         would be a file named {path:?} beside the config; write {keyword}, or \
                         ./{} for such a file",
                        path.trim()
                    )));
                }
                if let Some((word, keyword, why)) = other_destination(path) {
                    return Err(E::custom(format!(
                        "{path:?} is not a destination this proxy knows ({why}), and as a file \
                         name it would be a file named {path:?} beside the config; write \
                         {keyword}, or ./{word} for such a file",
                        word = word.trim()
                    )));
                }
                AccessLogConfig::File(PathBuf::from(path))
            }
        })
    }

    fn visit_unit<E: de::Error>(self) -> Result<AccessLogConfig, E> {
        Err(crate::de::null(&self, Some("off")))
    }
}

/// The keyword (`off`, `stdout`) that `text` spells in another letter case or with spaces
/// around it: `access_log: Off` wrote every request to a file named `Off` beside the config, and
/// `"stdout "` to one named `stdout `, without a word (`./off` names such a file on purpose).
fn misspelt_keyword(text: &str) -> Option<&'static str> {
    ["off", "stdout"]
        .into_iter()
        .find(|keyword| text.trim().eq_ignore_ascii_case(keyword))
}

/// A destination keyword of other proxies' logs (Caddy's `output stderr`/`discard`, HAProxy's
/// `log stderr`) or other tools' (`-` for standard output, gunicorn's and uvicorn's
/// `--access-logfile -`; `none`, `disabled`, `false`, `null` for no log) that `text` spells in
/// any case: `access_log: stderr` appended every request to a file named `stderr` beside the
/// config, without a word (session 32), and so did `-` and `none` (check32). The word, the
/// keyword to write instead, and why.
fn other_destination(text: &str) -> Option<(&str, &'static str, &'static str)> {
    let word = text.trim();
    let no_log = ["none", "disabled", "false", "null"];
    if word == "-" {
        Some((word, "stdout", "standard output is stdout"))
    } else if no_log.iter().any(|w| word.eq_ignore_ascii_case(w)) {
        Some((word, "off", "no access log is off"))
    } else if word.eq_ignore_ascii_case("stderr") {
        Some((
            word,
            "stdout",
            "standard error carries the proxy's own log; access lines go to stdout or a file",
        ))
    } else if word.eq_ignore_ascii_case("discard") {
        Some((word, "off", "no access log is off"))
    } else {
        None
    }
}

// === impl AccessLog ===

impl AccessLog {
    /// The line of `request`, arriving now from the client at `client` (its IP, as formatted for
    /// `X-Forwarded-For`).
    pub(crate) fn begin<B>(
        &self,
        client: &HeaderValue,
        request: &Request<B>,
        request_id: Option<&HeaderValue>,
    ) -> Pending {
        let record = Record {
            time: SystemTime::now(),
            client: client.clone(),
            request_id: request_id.cloned(),
            method: request.method().clone(),
            uri: request.uri().clone(),
            host: request.headers().get(http::header::HOST).cloned(),
            version: request.version(),
            status: 0,
            served: Served::default(),
            bytes: 0,
            completed: false,
            duration: Duration::ZERO,
        };
        Pending(Some(Box::new(Entry {
            record,
            log: Arc::clone(&self.inner),
            started: Instant::now(),
        })))
    }

    /// Lines dropped since start because the writer fell behind.
    pub(crate) fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Lines lost since start because their write failed (a full disk...): every line of a
    /// batch whose write or flush failed, some of which may have reached the file in part.
    pub(crate) fn write_failed(&self) -> u64 {
        self.inner.write_failed.load(Ordering::Relaxed)
    }

    /// Whether the log goes to a file.
    pub(crate) fn is_file(&self) -> bool {
        self.inner.file
    }

    /// Resolves once every line queued before this call is written and flushed (a shutdown's
    /// last step: the writer thread does not outlive the process); `false` when the writer's
    /// thread is gone. The caller bounds the wait.
    pub(crate) async fn flush(&self) -> bool {
        let (answer, answered) = tokio::sync::oneshot::channel();
        // A full queue cannot take the request at once: wait for room in a blocking task (the
        // writer empties the queue within a batch interval).
        let queue = self.inner.queue.clone();
        let sent =
            tokio::task::spawn_blocking(move || queue.send(writer::Message::Flush(answer)).is_ok());
        sent.await.unwrap_or(false) && answered.await.is_ok()
    }

    /// Asks the writer to reopen its file (a SIGHUP after logrotate moved it); no effect on
    /// `stdout`.
    pub(crate) fn reopen(&self) {
        self.inner.reopen.store(true, Ordering::Relaxed);
        // Wakes an idle writer; a full queue means it is awake already.
        let _ = self.inner.queue.try_send(writer::Message::Wake);
    }
}

// === impl Pending ===

impl Pending {
    /// No line: the log is off.
    pub(crate) const OFF: Pending = Pending(None);

    /// Whether there is a line (the log is on and it was not queued yet).
    pub(crate) fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// The response is known: its status, and where it was served (a [`Served`] extension, taken
    /// out of `parts`), unless [`Pending::failed`] said so already.
    pub(crate) fn respond(&mut self, parts: &mut http::response::Parts) {
        let Some(entry) = &mut self.0 else {
            return;
        };
        entry.record.status = parts.status.as_u16();
        if let Some(served) = parts.extensions.remove::<Served>() {
            entry.record.served = served;
        }
    }

    /// The request's attempt number `attempts` was sent to `endpoint` of `backend` on `route`:
    /// where the line says it was served unless the proxy answers it ([`Pending::failed`]) or
    /// the response says otherwise ([`Pending::respond`], a refused request's `Served`).
    /// Recorded when the attempt is dispatched rather than taken from the response, so that a
    /// line whose client went away while the attempt waited (499) names it too; with the log
    /// off, one branch.
    #[inline]
    pub(crate) fn dispatched(
        &mut self,
        route: &Arc<str>,
        backend: Slot,
        endpoint: Option<SocketAddr>,
        attempts: u8,
    ) {
        if let Some(entry) = &mut self.0 {
            entry.record.served = Served {
                route: Some(Arc::clone(route)),
                backend: Some(backend),
                endpoint,
                attempts,
                error: None,
            };
        }
    }

    /// The response's status is `status`.
    pub(crate) fn answered(&mut self, status: http::StatusCode) {
        if let Some(entry) = &mut self.0 {
            entry.record.status = status.as_u16();
        }
    }

    /// The request failed with `error`, which the proxy answers itself. An error met after the
    /// request was sent upstream that names no endpoint of its own (its client's body failed or
    /// stalled: [`Error::RequestBodyFailed`], [`Error::RequestBodyTimeout`]) keeps the endpoint
    /// and attempts of the attempt it was sent with ([`Pending::dispatched`]): that request
    /// reached the backend (until newuser34 such a line said `attempts` 0, `endpoint` null).
    pub(crate) fn failed(&mut self, error: &Error) {
        if let Some(entry) = &mut self.0 {
            let mut served = Served::of_error(error);
            if let Error::RequestBodyFailed { .. } | Error::RequestBodyTimeout { .. } = error {
                served.endpoint = entry.record.served.endpoint;
                served.attempts = entry.record.served.attempts;
            }
            entry.record.served = served;
        }
    }

    /// Counts `len` response body bytes sent.
    pub(crate) fn sent(&mut self, len: usize) {
        if let Some(entry) = &mut self.0 {
            entry.record.bytes += len as u64;
        }
    }

    /// The response body ended (`completed`) or failed; queues the line.
    pub(crate) fn end(&mut self, completed: bool) {
        let Some(mut entry) = self.0.take() else {
            return;
        };
        if !completed && entry.log.abandoning.load(Ordering::Relaxed) {
            // A stop dropped it once its drain timed out (its response body, or the request
            // before any response head: `Pending`'s drop): the proxy's doing, not the client's,
            // and the error says so, with the status sent, or 0 when none was
            // ([`NO_RESPONSE`]): what nginx (`$status` 000: `ngx_http_log_status` writes 0 when
            // no status was set) and Envoy (`%RESPONSE_CODE%` 0: "the server never sent the
            // beginning of a response") log for a request that got no response head.
            entry.record.served.error = Some(DRAIN_TIMEOUT);
        }
        entry.record.completed = completed;
        entry.record.duration = entry.started.elapsed();
        let log = Arc::clone(&entry.log);
        match log.queue.try_send(writer::Message::Line(entry)) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => {
                log.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        // A body dropped before its end: the client went away, or a bodiless answer (which hyper
        // does not poll) was sent, or a stop dropped it when its drain timed out.
        if let Some(entry) = &mut self.0 {
            // A stop's drop at its drain deadline is not the client's: `end` logs it.
            let abandoned = entry.log.abandoning.load(Ordering::Relaxed);
            if entry.record.status == NO_RESPONSE && !abandoned {
                // Dropped before any response: the request's future was dropped because its
                // client went away while it waited (`forward::Awaiting`). Logged as nginx logs
                // it: 499, its "client closed request" (ngx_http_request.h,
                // NGX_HTTP_CLIENT_CLOSED_REQUEST), with the error `client_closed`; the route,
                // backend, endpoint and attempts are the waiting attempt's
                // ([`Pending::dispatched`]), or `null` and 0 when none was sent.
                entry.record.status = CLIENT_CLOSED_REQUEST;
                entry.record.served.error = Some("client_closed");
            }
        }
        self.end(false);
    }
}

/// The status an access log line gives a request whose client went away before its response
/// head: nginx's 499 (not an HTTP status: never sent, only logged).
pub(crate) const CLIENT_CLOSED_REQUEST: u16 = 499;

/// The status an access log line gives a request the proxy dropped without a response head (a
/// stop's drain deadline): 0, no status sent, as Envoy's `%RESPONSE_CODE%` and nginx's `000`.
pub(crate) const NO_RESPONSE: u16 = 0;

/// The `error` of an access log line whose request a stop dropped once its `drain_timeout`
/// passed (with status [`NO_RESPONSE`] when no response head was sent).
pub(crate) const DRAIN_TIMEOUT: &str = "drain_timeout";

// === impl Served ===

impl Served {
    /// Where a proxy's own answer to `error` was meant to go, and why it was made.
    pub(crate) fn of_error(error: &Error) -> Served {
        let Some((route, backend, reason)) = LocalReason::of(error) else {
            return Served::default();
        };
        let route = (!route.is_empty()).then(|| Arc::from(route));
        match error {
            Error::Upstream {
                kind,
                endpoint,
                attempts,
                ..
            } => Served {
                route,
                backend,
                endpoint: *endpoint,
                attempts: *attempts,
                error: Some(kind.as_str()),
            },
            _ => Served {
                route,
                backend,
                endpoint: None,
                attempts: 0,
                error: Some(reason.as_str()),
            },
        }
    }
}

#[cfg(test)]
mod tests;
