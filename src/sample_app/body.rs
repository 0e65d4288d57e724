//! Deterministic streaming bodies: bytes of a fixed pattern, produced one chunk per poll from a
//! static buffer, so a 1 GB `/download` allocates nothing and holds no more than one chunk.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

/// Byte `i` of every generated body is `i % PERIOD`: a prime period, so a dropped, repeated or
/// reordered chunk of any power-of-two size shows up as a pattern break.
const PERIOD: usize = 251;
/// Largest chunk a body yields (`/download` uses it).
const MAX_CHUNK: usize = 64 * 1024;
/// Enough pattern to cut any chunk from, whatever the offset's phase in the period.
static PATTERN: [u8; MAX_CHUNK + PERIOD] = pattern();

/// Length of the `/chunked` body: 10 KiB, sent as three chunks (4 KiB, 4 KiB, 2 KiB).
pub const CHUNKED_BODY_LEN: usize = 10 * 1024;
/// Chunk size of the `/chunked` body.
pub const CHUNKED_CHUNK_LEN: usize = 4 * 1024;

const fn pattern() -> [u8; MAX_CHUNK + PERIOD] {
    let mut bytes = [0; MAX_CHUNK + PERIOD];
    let mut i = 0;
    while i < bytes.len() {
        bytes[i] = pattern_byte(i as u64);
        i += 1;
    }
    bytes
}

/// The byte at `offset` of a `/chunked` or `/download` body (`offset % 251`), for checking what
/// arrived through a proxy.
pub const fn pattern_byte(offset: u64) -> u8 {
    (offset % PERIOD as u64) as u8
}

/// A body of `remaining` pattern bytes, yielded `chunk` bytes at a time.
#[derive(Debug)]
pub(super) struct PatternBody {
    offset: u64,
    remaining: u64,
    chunk: usize,
    /// Whether the length is announced: `Content-Length` when true, chunked (HTTP/1.1) when false.
    announced: bool,
}

// === impl PatternBody ===

impl PatternBody {
    /// `len` bytes with a `Content-Length`, in 64 KiB chunks.
    pub(super) fn sized(len: u64) -> Self {
        Self {
            offset: 0,
            remaining: len,
            chunk: MAX_CHUNK,
            announced: true,
        }
    }

    /// `len` bytes of unannounced length, so HTTP/1.1 sends them with `Transfer-Encoding: chunked`,
    /// one chunk per `chunk` bytes (at most 64 KiB).
    pub(super) fn chunked(len: u64, chunk: usize) -> Self {
        Self {
            offset: 0,
            remaining: len,
            chunk: chunk.clamp(1, MAX_CHUNK),
            announced: false,
        }
    }
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        // Both fit in usize: `n <= chunk <= MAX_CHUNK` and `start < PERIOD`.
        let n = this.remaining.min(this.chunk as u64) as usize;
        let start = (this.offset % PERIOD as u64) as usize;
        this.offset += n as u64;
        this.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
            &PATTERN[start..start + n],
        )))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        if self.announced {
            SizeHint::with_exact(self.remaining)
        } else {
            SizeHint::default()
        }
    }
}
