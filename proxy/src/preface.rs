//! Which protocol a client connection speaks, told before hyper serves it, so that each
//! connection is served by hyper's HTTP/1.1 or HTTP/2 connection alone.
//!
//! hyper-util's `auto` connection tells the same, but it is one future sized for its largest
//! state on every connection: 1,576 B over the proxy's client stream in a debug build, against
//! 712 B for hyper's HTTP/1.1 connection alone (`tests/idle_memory.rs` counts the heap per idle
//! connection).
//!
//! Under TLS the handshake told it: ALPN `h2` is HTTP/2, anything else (`http/1.1`, no ALPN) is
//! HTTP/1.1 (RFC 9113 §3.2; prior knowledge is for cleartext only, §3.3). In cleartext the client's
//! first bytes tell: HTTP/2 with prior knowledge opens with the connection preface
//! [`PREFACE`] (RFC 9113 §3.4), which no HTTP/1.1 request line begins with. [`Rewind`] reads
//! until its bytes match the preface whole or differ from it (the first bytes of any HTTP/1.1
//! request do), as hyper-util does, and then gives what it read back to hyper before the rest.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The HTTP/2 connection preface a client with prior knowledge sends first (RFC 9113 §3.4).
pub(crate) const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The protocol a client connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// HTTP/1.0 or HTTP/1.1 (RFC 9112).
    Http1,
    /// HTTP/2 (RFC 9113).
    Http2,
}

/// How many bytes [`Rewind::detect`]'s reads may take at once: hyper's first read of a
/// connection (its `INIT_BUFFER_SIZE`, 8 KiB), so that the first segment a client sends, whole
/// request heads included, is read by one `recv(2)`.
const DETECT_CHUNK: usize = 8 * 1024;

thread_local! {
    /// Where [`Rewind::detect`] reads before it knows how much came: one buffer per thread, zeroed
    /// once, borrowed only within a read (`poll_read` is synchronous). What was read is then
    /// copied into the connection's own [`Rewind`], exactly sized.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0u8; DETECT_CHUNK]);
}

/// A client stream that gives the bytes read to tell its protocol ([`Rewind::detect`]) back to
/// the reader before the rest of the stream. Writes pass straight through.
///
/// `detect` reads the client's first segment whole (up to [`DETECT_CHUNK`] bytes), not only the
/// preface's 24 bytes: with a short first read, hyper read the rest of a request head by a second
/// `recv(2)` and, to make room for it, grew its 8 KiB read buffer to 16 KiB, copying it (a
/// `realloc` per connection; docs/bench-2026-12-02f-close.md). The bytes read are kept in an
/// exactly sized allocation until the reader has taken them, and let go then: an idle
/// connection holds none. An HTTP/1.1 connection takes them whole instead ([`Rewind::take_read`],
/// hyper's `serve_connection_with_read_buf`, vendor/hyper patch 18): hyper parses the head in
/// that allocation and reserves its own 8 KiB read buffer only when it reads next
/// (docs/bench-2026-12-03-close.md); for a client that said `close`, whose next read only
/// watches for its EOF, 1 KiB (vendor/hyper patch 19, docs/bench-2026-12-03b-alloc.md).
#[derive(Debug)]
pub(crate) struct Rewind<I> {
    io: I,
    /// Read by `detect` and still to be given back.
    read: BytesMut,
}

impl<I> Rewind<I> {
    /// Wraps `io`; nothing read yet.
    pub(crate) fn new(io: I) -> Rewind<I> {
        Rewind {
            io,
            read: BytesMut::new(),
        }
    }

    /// The bytes read by `detect` and not yet given back, taken out: reads go straight to the
    /// stream after this.
    pub(crate) fn take_read(&mut self) -> BytesMut {
        std::mem::take(&mut self.read)
    }
}

impl<I: AsyncRead + Unpin> Rewind<I> {
    /// Reads until the bytes read match [`PREFACE`] whole ([`Protocol::Http2`]) or differ from it
    /// ([`Protocol::Http1`]); the end of the stream before either is [`Protocol::Http1`] too, so
    /// that hyper's HTTP/1.1 connection sees it and ends as it does for any stream that ends
    /// before a whole request head (as hyper-util's auto connection did). Waits as long as the
    /// client sends a prefix of the preface: the caller bounds it.
    ///
    /// # Errors
    /// A read error of the stream.
    pub(crate) async fn detect(&mut self) -> io::Result<Protocol> {
        std::future::poll_fn(|cx| self.poll_detect(cx)).await
    }

    fn poll_detect(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Protocol>> {
        loop {
            let len = self.read.len();
            let told = len.min(PREFACE.len());
            if self.read[..told] != PREFACE[..told] {
                return Poll::Ready(Ok(Protocol::Http1));
            }
            if told == PREFACE.len() {
                return Poll::Ready(Ok(Protocol::Http2));
            }
            let (io, read) = (&mut self.io, &mut self.read);
            let got = SCRATCH.with_borrow_mut(|scratch| {
                let mut buf = ReadBuf::new(&mut scratch[..]);
                let polled = Pin::new(io).poll_read(cx, &mut buf);
                if let Poll::Ready(Ok(())) = polled {
                    match read.is_empty() {
                        // Exactly sized: one allocation of what came.
                        true => *read = BytesMut::from(buf.filled()),
                        false => read.extend_from_slice(buf.filled()),
                    }
                }
                polled.map_ok(|()| buf.filled().len())
            });
            if ready!(got)? == 0 {
                return Poll::Ready(Ok(Protocol::Http1));
            }
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewind<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.read.is_empty() {
            let n = self.read.len().min(buf.remaining());
            buf.put_slice(&self.read[..n]);
            self.read.advance(n);
            if self.read.is_empty() {
                self.read = BytesMut::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Rewind<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A stream that gives one of its chunks per read, then its end.
    struct Chunks(VecDeque<&'static [u8]>);

    impl AsyncRead for Chunks {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if let Some(chunk) = self.0.pop_front() {
                let n = chunk.len().min(buf.remaining());
                buf.put_slice(&chunk[..n]);
                if n < chunk.len() {
                    self.0.push_front(&chunk[n..]);
                }
            }
            Poll::Ready(Ok(()))
        }
    }

    /// Detects over a stream that delivers `chunks` one read each, then reads the rest back.
    async fn detect(chunks: &[&'static [u8]]) -> (Protocol, Vec<u8>) {
        let mut rewind = Rewind::new(Chunks(chunks.iter().copied().collect()));
        let protocol = rewind.detect().await.unwrap();
        let mut all = Vec::new();
        rewind.read_to_end(&mut all).await.unwrap();
        (protocol, all)
    }

    #[tokio::test]
    async fn an_http1_request_is_http1_and_read_back_whole() {
        let request = b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n";
        let (protocol, read) = detect(&[request]).await;
        assert_eq!(protocol, Protocol::Http1);
        assert_eq!(read, request);
    }

    /// The client's first segment, request head and all, reaches the reader by one read, and the
    /// connection keeps no copy of it afterwards (before, the reader got the first 24 bytes and
    /// hyper grew its buffer to read the rest).
    #[tokio::test]
    async fn the_first_segment_is_given_back_whole_by_one_read_and_then_let_go() {
        let request = b"GET /a HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n";
        let mut rewind = Rewind::new(Chunks([&request[..]].into()));
        assert_eq!(rewind.detect().await.unwrap(), Protocol::Http1);
        let mut buf = [0u8; 8192];
        let n = rewind.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], &request[..]);
        assert_eq!(rewind.read.capacity(), 0);
        assert_eq!(rewind.read(&mut buf).await.unwrap(), 0);
    }

    /// What `detect` read is taken whole, in its own allocation of exactly its size (hyper
    /// parses it there), and the reads after it come from the stream.
    #[tokio::test]
    async fn the_first_segment_is_taken_whole_and_exactly_sized() {
        let request = b"GET /a HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n";
        let mut rewind = Rewind::new(Chunks([&request[..], b"next"].into()));
        assert_eq!(rewind.detect().await.unwrap(), Protocol::Http1);
        let read = rewind.take_read();
        assert_eq!(&read[..], &request[..]);
        assert_eq!(read.capacity(), request.len());
        let mut rest = Vec::new();
        rewind.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"next");
    }

    #[tokio::test]
    async fn the_preface_in_pieces_is_http2_and_read_back_whole() {
        let (protocol, read) = detect(&[b"PRI", b" * HTTP/2.0\r\n", b"\r\nSM\r\n\r\nx"]).await;
        assert_eq!(protocol, Protocol::Http2);
        assert_eq!(read, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nx");
    }

    #[tokio::test]
    async fn a_request_that_begins_like_the_preface_is_http1() {
        let (protocol, read) = detect(&[b"PR", b"OPFIND / HTTP/1.1\r\n\r\n"]).await;
        assert_eq!(protocol, Protocol::Http1);
        assert_eq!(read, b"PROPFIND / HTTP/1.1\r\n\r\n");
    }

    #[tokio::test]
    async fn the_end_of_the_stream_is_http1() {
        assert_eq!(detect(&[]).await, (Protocol::Http1, Vec::new()));
        assert_eq!(
            detect(&[b"PRI *"]).await,
            (Protocol::Http1, b"PRI *".to_vec())
        );
    }

    #[tokio::test]
    async fn a_small_reader_gets_the_bytes_in_order() {
        let mut rewind = Rewind::new(Chunks([&b"GET /x HTTP/1.1\r\n\r\n"[..]].into()));
        assert_eq!(rewind.detect().await.unwrap(), Protocol::Http1);
        let mut two = [0u8; 2];
        rewind.read_exact(&mut two).await.unwrap();
        assert_eq!(&two, b"GE");
        let mut rest = Vec::new();
        rewind.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"T /x HTTP/1.1\r\n\r\n");
    }

    #[tokio::test]
    async fn writes_pass_through() {
        let (near, mut far) = tokio::io::duplex(64);
        let mut rewind = Rewind::new(near);
        rewind.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        let mut got = [0u8; 17];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"HTTP/1.1 200 OK\r\n");
    }
}
