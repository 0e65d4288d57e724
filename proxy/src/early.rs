//! Early responses from a backend that resets: the answer it sent before the reset still reaches
//! the client.
//!
//! A backend may answer before it has read the request body (RFC 9110 §15.5.14 `413 Content Too
//! Large`, a 401, a 403...) and then close the connection with the rest of the body unread. Its
//! kernel then sends a TCP reset instead of a FIN (RFC 9112 §9.6 asks servers for a lingering
//! close to avoid exactly that; many do not). The proxy is still writing the body when the reset
//! arrives, and hyper's HTTP/1.1 client fails the whole exchange on the first failed write, even
//! when the response sits complete in the socket's receive buffer: the client got a 502 for a
//! request the backend had answered (seen on about a third of 8 MiB uploads over loopback).
//!
//! [`EarlyResponseIo`] wraps the upstream connection. When a write fails because the peer reset
//! or closed the connection (`ConnectionReset`, `BrokenPipe`), everything the peer sent before is
//! already in the receive buffer (TCP delivers in order): it reads that much at once (at most
//! [`SALVAGE_BYTES`]) and, if there is any, reports the write as done, and every later write
//! too, discarding the bytes, until hyper has read what was salvaged. hyper thus reads the
//! response head and body as if the backend had read the upload, delivers them, and the client
//! gets the backend's answer. Once the salvaged bytes are read, the next write fails with the
//! original error, so the connection is closed, never reused. A reset with nothing before it
//! fails at once, as before (502).
//!
//! Only the bytes of the upload that were being written when the reset came are discarded; the
//! backend had refused them already. HTTP/2 (h2c) needs none of this: an early response ends its
//! stream there (RFC 9113 §8.1), and the TCP connection stays up.

use std::io;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use rustix::net::RecvFlags;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most bytes taken out of the receive buffer after a reset, in bytes: holds any error page;
/// a larger response is read on from the socket (the kernel keeps what arrived before a reset).
pub const SALVAGE_BYTES: usize = 1024 * 1024;

/// An upstream connection that keeps an early response readable after a write fails on a reset
/// (see the module docs).
#[derive(Debug)]
pub struct EarlyResponseIo<T> {
    inner: T,
    /// After a write failed on a reset: what the peer had sent, and the write's error.
    salvaged: Option<Salvaged>,
}

#[derive(Debug)]
struct Salvaged {
    bytes: Vec<u8>,
    /// How much of `bytes` was read.
    read: usize,
    /// The failed write's error kind, returned by writes once `bytes` are read.
    error: io::ErrorKind,
}

// === impl EarlyResponseIo ===

impl<T> EarlyResponseIo<T> {
    /// Wraps a fresh upstream connection.
    pub fn new(inner: T) -> EarlyResponseIo<T> {
        EarlyResponseIo {
            inner,
            salvaged: None,
        }
    }
}

impl<T: AsyncRead + AsyncWrite + AsFd + Unpin> EarlyResponseIo<T> {
    /// Reads what is in the receive buffer now, without waiting, up to [`SALVAGE_BYTES`]. A
    /// non-blocking `recv(2)` on the socket itself: tokio's reads return `Pending` until its
    /// reactor has seen the socket's readiness, which may not have happened yet when the write
    /// failed.
    fn salvage(&mut self) -> Vec<u8> {
        let mut bytes = Vec::new();
        let mut chunk = [0u8; 8 * 1024];
        while bytes.len() < SALVAGE_BYTES {
            match rustix::net::recv(&self.inner, &mut chunk[..], RecvFlags::DONTWAIT) {
                Ok((n, _)) if n > 0 => bytes.extend_from_slice(&chunk[..n]),
                _ => break,
            }
        }
        bytes
    }

    /// A write's result, with a reset turned into a write that is reported done while an early
    /// response is read (see the module docs); `len` is what the write was asked to write.
    fn on_write(&mut self, polled: Poll<io::Result<usize>>, len: usize) -> Poll<io::Result<usize>> {
        match polled {
            Poll::Ready(Err(error)) if peer_gone(&error) => {
                let bytes = self.salvage();
                if bytes.is_empty() {
                    return Poll::Ready(Err(error));
                }
                tracing::debug!(
                    salvaged = bytes.len(),
                    %error,
                    "upstream reset during the request body: reading its early response"
                );
                self.salvaged = Some(Salvaged {
                    bytes,
                    read: 0,
                    error: error.kind(),
                });
                Poll::Ready(Ok(len))
            }
            other => other,
        }
    }

    /// After a salvage: `Ok` while its bytes are being read (the write is discarded), then the
    /// write's original error. `None` when no write failed.
    fn after_salvage(&self) -> Option<io::Result<()>> {
        let salvaged = self.salvaged.as_ref()?;
        Some(match salvaged.read < salvaged.bytes.len() {
            true => Ok(()),
            false => Err(io::Error::new(
                salvaged.error,
                "the backend reset the connection after an early response",
            )),
        })
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for EarlyResponseIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(salvaged) = &mut this.salvaged {
            let rest = &salvaged.bytes[salvaged.read..];
            if !rest.is_empty() {
                let n = rest.len().min(buf.remaining());
                buf.put_slice(&rest[..n]);
                salvaged.read += n;
                return Poll::Ready(Ok(()));
            }
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncRead + AsyncWrite + AsFd + Unpin> AsyncWrite for EarlyResponseIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(after) = this.after_salvage() {
            return Poll::Ready(after.map(|()| buf.len()));
        }
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.on_write(polled, buf.len())
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let len = bufs.iter().map(|b| b.len()).sum();
        if let Some(after) = this.after_salvage() {
            return Poll::Ready(after.map(|()| len));
        }
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.on_write(polled, len)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(after) = this.after_salvage() {
            return Poll::Ready(after);
        }
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        match polled {
            Poll::Ready(Err(error)) if peer_gone(&error) => {
                this.on_write(Poll::Ready(Err(error)), 0).map_ok(|_| ())
            }
            other => other,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Whether a write failed because the peer reset or closed the connection.
fn peer_gone(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// A connection whose peer answered `answer` and reset it; the reset has arrived.
    async fn answered_and_reset(answer: &'static [u8]) -> TcpStream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        client.write_all(b"POST / HTTP/1.1\r\n").await.unwrap();
        server.write_all(answer).await.unwrap();
        // Linger 0: close() resets, as a close with unread bytes does.
        server.set_zero_linger().unwrap();
        drop(server);
        tokio::time::sleep(Duration::from_millis(50)).await;
        client
    }

    #[tokio::test]
    async fn a_write_after_a_reset_lets_the_answer_before_it_be_read_then_fails() {
        let answer = b"HTTP/1.1 413 Content Too Large\r\ncontent-length: 0\r\n\r\n";
        let mut io = EarlyResponseIo::new(answered_and_reset(answer).await);
        // The write that meets the reset is reported done; so is the next one, while the answer
        // is unread.
        assert_eq!(io.write(b"body").await.unwrap(), 4);
        assert_eq!(io.write(b"more").await.unwrap(), 4);
        let mut got = vec![0u8; answer.len()];
        io.read_exact(&mut got).await.unwrap();
        assert_eq!(got, answer);
        // Read: now the original error, for writes and flushes alike.
        let error = io.write(b"again").await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::ConnectionReset);
        assert!(io.flush().await.is_err());
    }

    #[tokio::test]
    async fn a_reset_with_nothing_before_it_fails_the_write_at_once() {
        let mut io = EarlyResponseIo::new(answered_and_reset(b"").await);
        let error = io.write(b"body").await.unwrap_err();
        assert!(peer_gone(&error), "{error:?}");
    }
}
