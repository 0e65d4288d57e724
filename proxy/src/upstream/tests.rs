use super::*;

use http_body_util::Full;
use hyper::body::Bytes;
use tokio::net::TcpListener;

/// A GET with no body, as the proxy sends it upstream.
fn get() -> Request<UpstreamBody> {
    Request::get("/")
        .body(Either::Right(Full::new(Bytes::new())))
        .unwrap()
}

/// The race of case C17 that the idle check cannot close: the backend closes a connection
/// cleanly (FIN, no byte of the request read) after the request took it from the idle stack and
/// before the request was written. hyper keeps such a request queued until its connection is
/// dropped; the link drops it as soon as it ends, so the request comes back unwritten, to be
/// re-sent on a fresh connection, instead of waiting for the response timeout (a 504 after 30 s,
/// seen under load in `overflow::a_preview_at_100_percent_losing_every_endpoint_...`).
#[tokio::test]
async fn a_request_queued_on_a_connection_the_backend_closed_comes_back_unwritten() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stream, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    // A second handle on the link's socket, to see the FIN arrive without driving the link.
    let stream = stream.unwrap().into_std().unwrap();
    let watch = stream.try_clone().unwrap();
    let link = Link::handshake(
        TcpStream::from_std(stream).unwrap(),
        Arc::new(crate::via::Lazy::new(crate::via::ViaConfig::off())),
    )
    .await
    .unwrap();
    // One exchange answered with keep-alive leaves the connection idle, as on the idle stack;
    // then the backend closes it.
    let (mut backend, _) = accepted.unwrap();
    let serve = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.ends_with(b"\r\n\r\n") {
            let n = backend.read(&mut buf).await.unwrap();
            assert!(n > 0, "the request head did not come");
            head.extend_from_slice(&buf[..n]);
        }
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        backend.write_all(ok).await.unwrap();
        backend
    });
    let (first, mut link) = exchange(link, get()).await;
    assert_eq!(first.unwrap().status(), 200);
    // As on the idle stack: driven until it waits for the next request (`take_idle` drives it
    // once more and checks that it is ready, just before the race below).
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..3 {
        assert!(link.drive(&mut cx));
    }
    assert!(link.sender.poll_ready(&mut cx).is_ready());
    drop(serve.await.unwrap());
    // The backend's FIN is queued on the link's socket before the request is handed to it.
    let mut byte = [0u8; 1];
    loop {
        match watch.peek(&mut byte) {
            Ok(0) => break,
            Ok(_) => panic!("the backend sent bytes"),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(e) => panic!("peek: {e}"),
        }
    }
    // And the runtime's reactor has seen it (it does when the runtime parks), as another worker
    // thread's reactor may between `take_idle`'s check and the exchange's first poll.
    tokio::time::sleep(Duration::from_millis(1)).await;
    let outcome = tokio::time::timeout(Duration::from_secs(10), exchange(link, get())).await;
    let (result, link) = outcome.expect("the request waited on a connection that had ended");
    let mut error = result.expect_err("a closed connection answered");
    assert!(
        error.take_message().is_some(),
        "the request was not handed back unwritten: {error:?}"
    );
    assert!(link.ended());
}
