//! Raw HTTP/1.x over a `TcpStream`, for scenarios that must control every byte sent and see every
//! header received: HTTP/1.0 clients, hop-by-hop headers, how a body is delimited.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Longest wait for any one read or write.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// How a response body was delimited on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length: n`.
    Length(usize),
    /// `Transfer-Encoding: chunked` (the body returned is de-chunked).
    Chunked,
    /// Neither: the body ran until the server closed the connection.
    Close,
}

/// One response as read off the wire.
#[derive(Clone, Debug)]
pub struct RawResponse {
    /// The status line, e.g. `HTTP/1.0 200 OK`.
    pub status_line: String,
    /// Header lines in order, names lowercased, values trimmed.
    pub headers: Vec<(String, String)>,
    /// How the body was delimited.
    pub framing: Framing,
    /// The body (de-chunked when chunked).
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The status code.
    pub fn status(&self) -> u16 {
        let code = self.status_line.split_whitespace().nth(1);
        code.and_then(|c| c.parse().ok()).unwrap_or(0)
    }

    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.all(name).into_iter().next()
    }

    /// Every value of header `name` (lowercase), one per header line.
    pub fn all(&self, name: &str) -> Vec<&str> {
        let named = self.headers.iter().filter(|(n, _)| n == name);
        named.map(|(_, v)| v.as_str()).collect()
    }
}

/// A raw client connection.
pub struct RawConn {
    reader: BufReader<TcpStream>,
}

impl RawConn {
    /// Connects to `addr`.
    ///
    /// # Panics
    /// When the connection fails.
    pub async fn connect(addr: SocketAddr) -> RawConn {
        let stream = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        RawConn {
            reader: BufReader::new(stream),
        }
    }

    /// Writes `request` as is.
    ///
    /// # Panics
    /// When the write fails or stalls.
    pub async fn send(&mut self, request: &[u8]) {
        let write = self.reader.get_mut().write_all(request);
        timed(write).await.expect("write the request");
    }

    /// Reads one response to a request other than `HEAD`.
    ///
    /// # Panics
    /// When the response is malformed, the connection fails, or a read stalls.
    pub async fn read_response(&mut self) -> RawResponse {
        let status_line = self.line().await;
        assert!(
            status_line.starts_with("HTTP/1."),
            "not a status line: {status_line:?}"
        );
        let mut headers = Vec::new();
        loop {
            let line = self.line().await;
            if line.is_empty() {
                break;
            }
            let (name, value) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("not a header line: {line:?}"));
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        let mut response = RawResponse {
            status_line,
            headers,
            framing: Framing::Close,
            body: Vec::new(),
        };
        let chunked = response
            .all("transfer-encoding")
            .iter()
            .any(|v| v.to_ascii_lowercase().contains("chunked"));
        let length = response.header("content-length").map(|v| {
            v.parse::<usize>()
                .unwrap_or_else(|_| panic!("bad content-length {v:?}"))
        });
        (response.framing, response.body) = match (chunked, length) {
            (true, _) => (Framing::Chunked, self.chunked().await),
            (false, Some(n)) => (Framing::Length(n), self.exact(n).await),
            (false, None) => (Framing::Close, self.until_eof().await),
        };
        response
    }

    /// Whether the server has closed the connection (a read returns end of file within `wait`).
    pub async fn closed_within(&mut self, wait: Duration) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(wait, self.reader.read(&mut byte)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    async fn line(&mut self) -> String {
        let mut line = String::new();
        let read = timed(self.reader.read_line(&mut line)).await;
        assert!(read.expect("read a line") > 0, "connection closed early");
        line.trim_end_matches(['\r', '\n']).to_owned()
    }

    async fn exact(&mut self, n: usize) -> Vec<u8> {
        let mut body = vec![0; n];
        timed(self.reader.read_exact(&mut body))
            .await
            .expect("read the body");
        body
    }

    async fn until_eof(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        timed(self.reader.read_to_end(&mut body))
            .await
            .expect("read the body to its end");
        body
    }

    async fn chunked(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let size = self.line().await;
            let size = size.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16)
                .unwrap_or_else(|_| panic!("bad chunk size {size:?}"));
            if size == 0 {
                // Trailers, then the empty line.
                while !self.line().await.is_empty() {}
                return body;
            }
            body.extend(self.exact(size).await);
            assert!(self.line().await.is_empty(), "chunk not followed by CRLF");
        }
    }
}

async fn timed<T>(io: impl std::future::Future<Output = std::io::Result<T>>) -> std::io::Result<T> {
    tokio::time::timeout(IO_TIMEOUT, io)
        .await
        .unwrap_or_else(|_| panic!("no progress within {IO_TIMEOUT:?}"))
}
