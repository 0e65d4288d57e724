//! A backend's `Keep-Alive` response header: how long it keeps an idle connection open, and how
//! many more requests it takes on it (case C17, sessions 41 and 42).
//!
//! `Keep-Alive: timeout=5, max=100` is de facto, not in RFC 9110 or 9112: RFC 2068 §19.7.1.1
//! reserved it, and MDN documents its `timeout` (seconds) and `max` (requests) parameters. Apache
//! sends `timeout=5, max=100`, Node.js `timeout=5` (its `server.keepAliveTimeout`, 5 s by
//! default, often set to 1–2 s). A backend that keeps idle connections for less than
//! `upstream.idle_timeout` (4 s) closes ones the pool still takes, and a request with a body that
//! meets the close is answered 502 (it is never re-sent once written). So a connection whose last
//! response said `timeout=N` is taken again only within N seconds less [`MARGIN`] after its
//! response ended, and not kept at all when that leaves nothing: the rule and the margin of
//! Node.js's own client (`http.Agent`'s `agentKeepAliveTimeoutBuffer`, 1000 ms) and of undici
//! until 6.14 (`keepAliveTimeoutThreshold`, 1 s; 2 s since), which also refuses reuse when the
//! hint less its threshold is not positive. With 1 s, Node's default 5 s gives the pool's own
//! default 4 s.
//!
//! A connection past its shorter time is never taken (the take checks it), and is closed by the
//! pool's reaper, which runs every quarter of `upstream.idle_timeout` (1 s by default): between
//! N−1 and N s after its response, about when the backend closes its side by itself (printed by
//! `proxy backend_keep_alive::c17_an_idle_connection_past_...`), and never later than a connection
//! nothing was said of. Kept so in session 42: an exact close would need a timer per idle
//! connection, registered in tokio's timer wheel at each response that comes back (~545
//! instructions per request for a request's own timer, docs/bench-2026-12-02-instructions.md), or
//! a finer reaper taking each endpoint's stack lock more often against the request path, to free
//! one file descriptor per such connection less than a second sooner.
//!
//! The margin covers what lies between the two clocks: the backend's starts when it has written
//! its response, the pool's when the proxy has read the response's last byte (later by the
//! network's delay, and by the time a slow client takes to read a body the sockets' buffers held),
//! plus the reaper's and the timer's granularity. The header's value is in whole seconds, so a
//! finer margin would buy little.
//!
//! `max=M` is how many more requests the backend takes on the connection after this response
//! (Apache's `ap_set_keepalive` sends the requests left of its `MaxKeepAliveRequests`, counting
//! down: `max=1` on the last but one, `Connection: close` on the last). So `max=0` keeps the
//! connection out of the pool, and otherwise the connection keeps the latest `M` it was told, one
//! less for each request it carries after that, and is not pooled after a response that leaves
//! none ([`Hint::max`], kept as `upstream::Link::left`). A backend that says it on each response
//! is taken at its latest word (Node.js says its `server.maxRequestsPerSocket` on each,
//! unchanged, and `Connection: close` on the last, which hyper reads); one that says it once and
//! closes after its count without a `Connection: close` no longer has a request written onto the
//! connection it closes (session 42: until then `max` above 0 was ignored).
//!
//! A malformed parameter (`timeout=soon`, `timeout=-1`, no `=`) is ignored, and the others on the
//! line still count; the client never sees an error for it. The header is hop-by-hop (RFC 9110
//! §7.6.1) and stripped toward the client whatever it says (`headers::strip_response_hop_by_hop`,
//! which hands it over).

use std::num::NonZeroU32;
use std::time::Duration;

use http::HeaderValue;

/// What is taken off the backend's idle timeout: see the module docs.
pub(crate) const MARGIN: Duration = Duration::from_secs(1);

/// What a response's `Keep-Alive` allows of its connection's reuse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reuse {
    /// As any connection: within `upstream.idle_timeout` (no hint below it, or none read).
    AsConfigured,
    /// Within this many milliseconds after the response ended, less than `upstream.idle_timeout`.
    Within(NonZeroU32),
    /// Not at all: the backend's idle timeout less [`MARGIN`] leaves nothing, or `max=0`.
    Never,
}

/// What a response's `Keep-Alive` says of its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Hint {
    /// How long the connection may idle, if it is kept at all.
    pub(crate) reuse: Reuse,
    /// `max`: how many more requests the backend takes on the connection after this response,
    /// when it said (`None`: no limit said; `Some(0)` goes with [`Reuse::Never`]).
    pub(crate) max: Option<u32>,
}

/// What `value` (a response's `Keep-Alive` line) says of a connection the pool keeps for
/// `idle_timeout` otherwise.
pub(crate) fn hint(value: &HeaderValue, idle_timeout: Duration) -> Hint {
    let (timeout, max) = parameters(value);
    // At most 9 digits (`name_and_number`), so it fits.
    let max = max.map(|max| u32::try_from(max).unwrap_or(u32::MAX));
    let reuse = match max {
        Some(0) => Reuse::Never,
        _ => reuse(timeout, idle_timeout),
    };
    Hint { reuse, max }
}

/// The reuse a backend idle timeout of `timeout` seconds (when said) allows of a connection the
/// pool keeps for `idle_timeout` otherwise.
fn reuse(timeout: Option<u64>, idle_timeout: Duration) -> Reuse {
    let Some(seconds) = timeout else {
        return Reuse::AsConfigured;
    };
    let within = Duration::from_secs(seconds).saturating_sub(MARGIN);
    if within.is_zero() {
        return Reuse::Never;
    }
    if within >= idle_timeout {
        return Reuse::AsConfigured;
    }
    // Below `idle_timeout`, a duration of config, so it fits; a zero one is `Never` above.
    match u32::try_from(within.as_millis())
        .ok()
        .and_then(NonZeroU32::new)
    {
        Some(millis) => Reuse::Within(millis),
        None => Reuse::AsConfigured,
    }
}

/// The `timeout` and `max` of a `Keep-Alive` value, each the smallest given (a backend that says
/// two things is taken at the safer one); malformed ones are skipped.
fn parameters(value: &HeaderValue) -> (Option<u64>, Option<u64>) {
    let (mut timeout, mut max) = (None::<u64>, None::<u64>);
    for parameter in value.as_bytes().split(|&b| b == b',') {
        let Some((name, number)) = name_and_number(parameter) else {
            continue;
        };
        let slot = match name {
            _ if name.eq_ignore_ascii_case(b"timeout") => &mut timeout,
            _ if name.eq_ignore_ascii_case(b"max") => &mut max,
            _ => continue,
        };
        *slot = Some(slot.map_or(number, |was| was.min(number)));
    }
    (timeout, max)
}

/// `name=digits` (spaces around either, the digits possibly quoted) as its name and number;
/// `None` when it is not that shape or the number has more than 9 digits.
fn name_and_number(parameter: &[u8]) -> Option<(&[u8], u64)> {
    let equals = parameter.iter().position(|&b| b == b'=')?;
    let name = parameter[..equals].trim_ascii();
    let mut digits = parameter[equals + 1..].trim_ascii();
    if let [b'"', inner @ .., b'"'] = digits {
        digits = inner;
    }
    if name.is_empty() || digits.is_empty() || digits.len() > 9 {
        return None;
    }
    digits
        .iter()
        .try_fold(0u64, |number, &b| {
            b.is_ascii_digit()
                .then(|| number * 10 + u64::from(b - b'0'))
        })
        .map(|number| (name, number))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FOUR: Duration = Duration::from_secs(4);

    fn reuse_of(value: &'static str) -> Reuse {
        hint_of(value).reuse
    }

    fn hint_of(value: &'static str) -> Hint {
        hint(&HeaderValue::from_static(value), FOUR)
    }

    fn within(millis: u32) -> Reuse {
        Reuse::Within(NonZeroU32::new(millis).unwrap())
    }

    #[test]
    fn a_backend_idle_timeout_below_the_pools_shortens_reuse_by_the_margin() {
        assert_eq!(reuse_of("timeout=2"), within(1_000));
        assert_eq!(reuse_of("timeout=3, max=100"), within(2_000));
        assert_eq!(reuse_of("max=100, TIMEOUT = \"3\""), within(2_000));
    }

    #[test]
    fn a_backend_idle_timeout_the_margin_leaves_nothing_of_is_never_reused() {
        assert_eq!(reuse_of("timeout=1"), Reuse::Never);
        assert_eq!(reuse_of("timeout=0"), Reuse::Never);
        assert_eq!(reuse_of("timeout=5, max=0"), Reuse::Never);
        assert_eq!(reuse_of("timeout=5, timeout=1"), Reuse::Never);
    }

    #[test]
    fn a_backend_idle_timeout_at_or_above_the_pools_changes_nothing() {
        // Node.js's default 5 s less the margin is the pool's default 4 s.
        assert_eq!(reuse_of("timeout=5"), Reuse::AsConfigured);
        assert_eq!(reuse_of("timeout=600, max=99"), Reuse::AsConfigured);
        assert_eq!(reuse_of("max=1"), Reuse::AsConfigured);
    }

    #[test]
    fn malformed_parameters_are_ignored_and_the_others_still_count() {
        for value in [
            "",
            "timeout",
            "timeout=",
            "timeout=soon",
            "timeout=-1",
            "timeout=1.5",
            "timeout=9999999999",
            "=1",
            "timeout=\"1",
            "keep-alive",
        ] {
            assert_eq!(reuse_of(value), Reuse::AsConfigured, "{value:?}");
        }
        assert_eq!(reuse_of("timeout=x, max=0"), Reuse::Never);
        assert_eq!(reuse_of("max=zero, timeout=2"), within(1_000));
    }

    #[test]
    fn max_is_the_requests_left_after_this_response_the_smallest_when_said_twice() {
        assert_eq!(hint_of("timeout=5, max=100").max, Some(100));
        assert_eq!(hint_of("max=1").max, Some(1));
        assert_eq!(hint_of("max=3, MAX = \"2\"").max, Some(2));
        assert_eq!(hint_of("max=999999999").max, Some(999_999_999));
        let none_left = hint_of("timeout=2, max=0");
        assert_eq!((none_left.reuse, none_left.max), (Reuse::Never, Some(0)));
        for value in ["timeout=5", "max=-1", "max=1.5", "max=", "max=9999999999"] {
            assert_eq!(hint_of(value).max, None, "{value:?}");
        }
    }
}
