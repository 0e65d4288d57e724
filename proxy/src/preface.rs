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

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

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

/// A client stream that gives the bytes read to tell its protocol ([`Rewind::detect`]) back to
/// the reader before the rest of the stream. Those bytes (at most [`PREFACE`]'s 24) are kept
/// inline: no allocation per connection. Writes pass straight through.
#[derive(Debug)]
pub(crate) struct Rewind<I> {
    io: I,
    read: [u8; PREFACE.len()],
    /// `read[start..end]` is still to be given back.
    start: u8,
    end: u8,
}

impl<I> Rewind<I> {
    /// Wraps `io`; nothing read yet.
    pub(crate) fn new(io: I) -> Rewind<I> {
        Rewind {
            io,
            read: [0; PREFACE.len()],
            start: 0,
            end: 0,
        }
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
            let len = usize::from(self.end);
            if len == PREFACE.len() {
                return Poll::Ready(Ok(Protocol::Http2));
            }
            let mut buf = ReadBuf::new(&mut self.read[len..]);
            ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
            let got = buf.filled().len();
            if got == 0 || self.read[len..len + got] != PREFACE[len..len + got] {
                self.end = u8::try_from(len + got).unwrap_or(u8::MAX);
                return Poll::Ready(Ok(Protocol::Http1));
            }
            self.end = u8::try_from(len + got).unwrap_or(u8::MAX);
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewind<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let (start, end) = (usize::from(self.start), usize::from(self.end));
        if start < end {
            let n = (end - start).min(buf.remaining());
            buf.put_slice(&self.read[start..start + n]);
            self.start = u8::try_from(start + n).unwrap_or(u8::MAX);
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
