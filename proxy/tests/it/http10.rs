//! Case C18: an HTTP/1.0 client never gets `Transfer-Encoding: chunked`, whatever the backend sends.

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::support::*;

/// Reads one response head: the status line and headers (lowercased names).
async fn read_head(reader: &mut BufReader<TcpStream>) -> (String, Vec<(String, String)>) {
    let mut status = String::new();
    reader.read_line(&mut status).await.unwrap();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).await.unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            return (status.trim_end().to_owned(), headers);
        }
        let (name, value) = line.split_once(':').unwrap();
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn expected_body() -> Vec<u8> {
    chunked_body().concat()
}

#[tokio::test]
async fn c18_http10_client_gets_a_close_delimited_or_sized_body() {
    let blue = backend("blue").await;
    let green = backend("green").await;
    let running = start(config(vec![route(&[blue.addr], &[green.addr], 5_000)])).await;
    for _ in 0..6 {
        let mut stream = TcpStream::connect(running.addr).await.unwrap();
        stream
            .write_all(b"GET /chunked HTTP/1.0\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut reader = BufReader::new(stream);
        let (status, headers) = read_head(&mut reader).await;
        assert!(status.ends_with("200 OK"), "{status}");
        assert_eq!(header(&headers, "transfer-encoding"), None, "{headers:?}");
        let mut body = Vec::new();
        reader.read_to_end(&mut body).await.unwrap();
        assert_eq!(body, expected_body());
        if let Some(len) = header(&headers, "content-length") {
            assert_eq!(len, CHUNKED_LEN.to_string());
        }
    }
}

#[tokio::test]
async fn c18_http10_keep_alive_client_is_not_corrupted_on_its_next_request() {
    let blue = backend("blue").await;
    let running = start(config(vec![route(&[blue.addr], &[], 10_000)])).await;
    let stream = TcpStream::connect(running.addr).await.unwrap();
    let mut reader = BufReader::new(stream);
    let request = b"GET /chunked HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n";
    reader.get_mut().write_all(request).await.unwrap();
    let (status, headers) = read_head(&mut reader).await;
    assert!(status.ends_with("200 OK"), "{status}");
    assert_eq!(header(&headers, "transfer-encoding"), None, "{headers:?}");
    match header(&headers, "content-length") {
        // Sized: the connection may stay open and the next request must work.
        Some(len) => {
            let mut body = vec![0; len.parse().unwrap()];
            reader.read_exact(&mut body).await.unwrap();
            assert_eq!(body, expected_body());
            reader.get_mut().write_all(request).await.unwrap();
            let (status, _) = read_head(&mut reader).await;
            assert!(status.ends_with("200 OK"), "{status}");
        }
        // Close-delimited: the body runs to EOF and the connection closes.
        None => {
            assert_ne!(header(&headers, "connection"), Some("keep-alive"));
            let mut body = Vec::new();
            reader.read_to_end(&mut body).await.unwrap();
            assert_eq!(body, expected_body());
        }
    }
}

#[tokio::test]
async fn http10_keep_alive_client_keeps_its_connection_for_sized_bodies() {
    let blue = backend("blue").await;
    let running = start(config(vec![route(&[blue.addr], &[], 10_000)])).await;
    let stream = TcpStream::connect(running.addr).await.unwrap();
    let mut reader = BufReader::new(stream);
    let request = b"GET / HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n";
    for _ in 0..3 {
        reader.get_mut().write_all(request).await.unwrap();
        let (status, headers) = read_head(&mut reader).await;
        assert_eq!(status, "HTTP/1.0 200 OK");
        assert_eq!(header(&headers, "content-length"), Some("4"));
        assert_eq!(header(&headers, "connection"), Some("keep-alive"));
        let mut body = [0; 4];
        reader.read_exact(&mut body).await.unwrap();
        assert_eq!(&body, b"blue");
    }
}
