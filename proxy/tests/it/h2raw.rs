//! A raw HTTP/2 client connection for tests that need to see (or withhold) single frames, which
//! the `h2` crate hides: it sends the preface and an empty SETTINGS, reads frames one by one
//! (RFC 9113 §4.1 framing), and answers a PING only when told to.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Frame types (RFC 9113 §6).
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;

/// The ACK flag of SETTINGS and PING.
pub const ACK: u8 = 0x1;

/// One frame as read.
#[derive(Debug)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

/// A raw HTTP/2 (prior knowledge) client connection.
pub struct RawH2 {
    pub tcp: TcpStream,
}

impl RawH2 {
    /// Connects to `addr` and sends the client preface and an empty SETTINGS frame, then nothing.
    pub async fn connect(addr: SocketAddr) -> RawH2 {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        write_frame(&mut tcp, SETTINGS, 0, &[]).await;
        RawH2 { tcp }
    }

    /// The next frame, or `None` once the proxy closed the connection (EOF or reset).
    pub async fn frame(&mut self) -> Option<Frame> {
        let mut head = [0u8; 9];
        self.tcp.read_exact(&mut head).await.ok()?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        self.tcp.read_exact(&mut payload).await.ok()?;
        Some(Frame {
            kind: head[3],
            flags: head[4],
            stream,
            payload,
        })
    }

    /// Every frame until the proxy closes the connection, reading and answering nothing else;
    /// panics with `what` if it is still open after `bound`.
    pub async fn frames_until_close(
        &mut self,
        bound: std::time::Duration,
        what: &str,
    ) -> Vec<Frame> {
        let mut frames = Vec::new();
        let read_all = async {
            while let Some(frame) = self.frame().await {
                frames.push(frame);
            }
        };
        if tokio::time::timeout(bound, read_all).await.is_err() {
            panic!("{what} still open after {bound:?}");
        }
        frames
    }

    /// Answers `ping` (a PING without ACK) with its ACK, as RFC 9113 §6.7 requires.
    pub async fn pong(&mut self, ping: &Frame) {
        write_frame(&mut self.tcp, PING, ACK, &ping.payload).await;
    }

    /// Sends a PING of its own with `data`.
    pub async fn ping(&mut self, data: [u8; 8]) {
        write_frame(&mut self.tcp, PING, 0, &data).await;
    }
}

async fn write_frame(tcp: &mut TcpStream, kind: u8, flags: u8, payload: &[u8]) {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut frame = vec![len[1], len[2], len[3], kind, flags, 0, 0, 0, 0];
    frame.extend_from_slice(payload);
    tcp.write_all(&frame).await.unwrap();
}

/// The HEADERS frame type (RFC 9113 §6.2).
pub const HEADERS: u8 = 0x1;

impl RawH2 {
    /// Sends `GET /` for `shop.test` on stream `id` (odd), ending the stream: HPACK static-table
    /// indexes for `:method GET` (2), `:scheme http` (6), `:path /` (4), and `:authority` as a
    /// literal with the name's index 1 (RFC 7541 §6.1, §6.2.1, Appendix A).
    pub async fn get(&mut self, id: u32) {
        let mut block = vec![0x82, 0x86, 0x84, 0x41, 9];
        block.extend_from_slice(b"shop.test");
        let len = u32::try_from(block.len()).unwrap().to_be_bytes();
        let end_stream_and_headers = 0x1 | 0x4;
        let mut frame = vec![len[1], len[2], len[3], HEADERS, end_stream_and_headers];
        frame.extend_from_slice(&id.to_be_bytes());
        frame.extend_from_slice(&block);
        self.tcp.write_all(&frame).await.unwrap();
    }
}

/// The DATA frame type (RFC 9113 §6.1) and the END_STREAM flag of DATA and HEADERS.
pub const DATA: u8 = 0x0;
pub const END_STREAM: u8 = 0x1;

impl RawH2 {
    /// Sends `GET path` for `shop.test` on stream `id` (odd), ending the stream: as [`RawH2::get`]
    /// with `:path` a literal with the name's index 4 (RFC 7541 §6.2.1).
    pub async fn get_path(&mut self, id: u32, path: &str) {
        let mut block = vec![0x82, 0x86, 0x44, u8::try_from(path.len()).unwrap()];
        block.extend_from_slice(path.as_bytes());
        block.extend_from_slice(&[0x41, 9]);
        block.extend_from_slice(b"shop.test");
        let len = u32::try_from(block.len()).unwrap().to_be_bytes();
        let end_stream_and_headers = 0x1 | 0x4;
        let mut frame = vec![len[1], len[2], len[3], HEADERS, end_stream_and_headers];
        frame.extend_from_slice(&id.to_be_bytes());
        frame.extend_from_slice(&block);
        self.tcp.write_all(&frame).await.unwrap();
    }
}
