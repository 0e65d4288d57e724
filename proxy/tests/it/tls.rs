//! TLS termination with a Rust client (hyper over tokio-rustls): ALPN picks HTTP/2 or HTTP/1.1, a
//! reloaded certificate reaches new connections while established ones keep going, a bad new pair
//! keeps the old one, and a missing file fails at start naming the field. Certificates are made at
//! test time (rcgen): one CA per "generation", so a client that trusts only one CA tells which
//! certificate the proxy serves.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use crossfade_proxy::{Proxy, ProxyConfig, ProxyMetrics, RouteConfig, Slot, TlsConfig, TlsPair};
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use crate::support::*;

/// A test CA and a leaf for `localhost` and 127.0.0.1 that it signed.
struct Generation {
    ca: CertificateDer<'static>,
    chain_pem: String,
    key_pem: String,
}

fn generation(name: &str) -> Generation {
    generation_with(name, |_| {})
}

/// As [`generation`], with the leaf's parameters edited by `edit` (its validity, say).
fn generation_with(name: &str, edit: impl FnOnce(&mut CertificateParams)) -> Generation {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("crossfade test CA {name}"),
    );
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf_params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    edit(&mut leaf_params);
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    Generation {
        ca: ca.der().clone(),
        chain_pem: format!("{}{}", leaf.pem(), ca.pem()),
        key_pem: leaf_key.serialize_pem(),
    }
}

/// Replaces `path`'s content at once (write aside, rename), as a certificate manager does.
fn replace(path: &Path, content: &str) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, content).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

/// A proxy config serving `routes` over TLS with `generation`'s pair, installed in `dir`
/// ([`install`]); no certificate watch (tests reload by hand).
fn over_tls(dir: &Path, generation: &Generation, routes: Vec<RouteConfig>) -> ProxyConfig {
    let (cert, key) = install(dir, generation);
    ProxyConfig {
        tls: Some(TlsConfig {
            cert,
            key,
            sni: Vec::new(),
            watch_interval: Duration::ZERO,
        }),
        ..config(routes)
    }
}

fn install(dir: &Path, generation: &Generation) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    replace(&key, &generation.key_pem);
    replace(&cert, &generation.chain_pem);
    (cert, key)
}

/// A TLS proxy over one blue backend, serving `generation` from files in `dir`.
async fn tls_proxy(dir: &Path, generation: &Generation, watch: Duration) -> Running {
    let blue = backend("blue").await;
    let (cert, key) = install(dir, generation);
    let config = ProxyConfig {
        tls: Some(TlsConfig {
            cert,
            key,
            sni: Vec::new(),
            watch_interval: watch,
        }),
        ..config(vec![route(&[blue.addr], &[], 10_000)])
    };
    start(config).await
}

/// One TLS client connection that trusts only `ca` and offers `alpn`.
struct TlsConn {
    sender: Sender,
    version: Version,
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

async fn connect(
    running: &Running,
    ca: &CertificateDer<'static>,
    alpn: &[&[u8]],
) -> Result<TlsConn, String> {
    let tls = tls_stream(running, ca, alpn).await?;
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = TokioIo::new(tls);
    if h2 {
        let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        Ok(TlsConn {
            sender: Sender::H2(sender),
            version: Version::HTTP_2,
        })
    } else {
        let (sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        Ok(TlsConn {
            sender: Sender::H1(sender),
            version: Version::HTTP_11,
        })
    }
}

/// A TLS connection to the proxy that trusts `ca` and offers `alpn`.
async fn tls_stream(
    running: &Running,
    ca: &CertificateDer<'static>,
    alpn: &[&[u8]],
) -> Result<TlsStream<TcpStream>, String> {
    let tcp = TcpStream::connect(running.addr).await.unwrap();
    tls_over(tcp, ca, alpn).await
}

/// A rustls client that trusts only `ca` and offers `alpn` (none when empty).
fn connector(ca: &CertificateDer<'static>, alpn: &[&[u8]]) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let mut config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

/// The TLS handshake over `tcp` (a connection to the proxy), trusting `ca`, offering `alpn`.
async fn tls_over(
    tcp: TcpStream,
    ca: &CertificateDer<'static>,
    alpn: &[&[u8]],
) -> Result<TlsStream<TcpStream>, String> {
    let name = ServerName::try_from("localhost").unwrap();
    let tls = connector(ca, alpn)
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    Ok(tls)
}

impl TlsConn {
    /// `GET /` on this connection: status, version and body.
    async fn get(&mut self) -> (StatusCode, Version, String) {
        let request = Request::get("https://localhost/")
            .header("host", "localhost")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = match &mut self.sender {
            Sender::H1(s) => s.send_request(request).await,
            Sender::H2(s) => s.send_request(request).await,
        }
        .unwrap();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (
            parts.status,
            parts.version,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }
}

async fn metric(running: &Running, series: &str) -> Option<f64> {
    let (_, _, text) = get(&client(), &running.admin_url("/metrics")).await;
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

const BOTH: [&[u8]; 2] = [b"h2", b"http/1.1"];

#[tokio::test]
async fn alpn_gives_h2_clients_http2_and_the_others_http1() {
    let dir = tempfile::tempdir().unwrap();
    let first = generation("one");
    let running = tls_proxy(dir.path(), &first, Duration::ZERO).await;
    let mut h2 = connect(&running, &first.ca, &BOTH).await.unwrap();
    assert_eq!(h2.version, Version::HTTP_2);
    assert_eq!(
        h2.get().await,
        (StatusCode::OK, Version::HTTP_2, "blue".to_owned())
    );
    let mut h1 = connect(&running, &first.ca, &[b"http/1.1"]).await.unwrap();
    assert_eq!(
        h1.get().await,
        (StatusCode::OK, Version::HTTP_11, "blue".to_owned())
    );
    let mut no_alpn = connect(&running, &first.ca, &[]).await.unwrap();
    assert_eq!(no_alpn.get().await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_reloaded_certificate_reaches_new_connections_while_open_ones_keep_going() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (generation("one"), generation("two"));
    let running = tls_proxy(dir.path(), &first, Duration::ZERO).await;
    let mut open_h1 = connect(&running, &first.ca, &[b"http/1.1"]).await.unwrap();
    let mut open_h2 = connect(&running, &first.ca, &BOTH).await.unwrap();
    assert!(
        connect(&running, &second.ca, &BOTH).await.is_err(),
        "second CA not served yet"
    );
    assert!(
        !running.proxy.reload_tls().unwrap(),
        "unchanged files are no reload"
    );

    install(dir.path(), &second);
    assert!(running.proxy.reload_tls().unwrap());
    let mut fresh = connect(&running, &second.ca, &BOTH).await.unwrap();
    assert_eq!(fresh.get().await.0, StatusCode::OK);
    let refused = connect(&running, &first.ca, &BOTH)
        .await
        .err()
        .unwrap_or_default();
    assert!(
        refused.contains("certificate"),
        "the old certificate is gone: {refused:?}"
    );
    // Connections made before the reload keep their session and keep serving.
    assert_eq!(open_h1.get().await.0, StatusCode::OK);
    assert_eq!(open_h2.get().await.0, StatusCode::OK);
    let ok = r#"crossfade_tls_reloads_total{result="ok"}"#;
    assert_eq!(metric(&running, ok).await, Some(1.0));
}

#[tokio::test]
async fn changed_files_are_picked_up_without_a_signal() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (generation("one"), generation("two"));
    let running = tls_proxy(dir.path(), &first, Duration::from_millis(100)).await;
    install(dir.path(), &second);
    for _ in 0..200 {
        if connect(&running, &second.ca, &BOTH).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the new certificate was not served within 10 s of the files changing");
}

#[tokio::test]
async fn a_bad_new_pair_keeps_the_old_certificate_and_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (first, other) = (generation("one"), generation("other"));
    let running = tls_proxy(dir.path(), &first, Duration::ZERO).await;
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));

    replace(&key, &other.key_pem);
    let mismatch = running.proxy.reload_tls().unwrap_err().to_string();
    assert!(mismatch.contains("tls.key: "), "{mismatch}");
    assert!(
        mismatch.contains("cannot serve the certificate")
            && mismatch.contains("the key is not the certificate's (their public keys differ)")
            && !mismatch.contains("KeyMismatch"),
        "{mismatch}"
    );

    replace(&key, &first.key_pem);
    replace(&cert, "not a certificate\n");
    let garbage = running.proxy.reload_tls().unwrap_err().to_string();
    assert!(garbage.contains("tls.cert: "), "{garbage}");
    assert!(garbage.contains("holds no PEM certificate"), "{garbage}");

    let mut conn = connect(&running, &first.ca, &BOTH).await.unwrap();
    assert_eq!(
        conn.get().await.0,
        StatusCode::OK,
        "the old pair still serves"
    );
    let error = r#"crossfade_tls_reloads_total{result="error"}"#;
    assert_eq!(metric(&running, error).await, Some(2.0));
    assert_eq!(
        metric(&running, "crossfade_tls_last_reload_success").await,
        Some(0.0)
    );

    replace(&cert, &first.chain_pem);
    assert!(
        !running.proxy.reload_tls().unwrap(),
        "back to the pair in force"
    );
    assert_eq!(
        metric(&running, "crossfade_tls_last_reload_success").await,
        Some(1.0)
    );
}

/// A renewal that renames an expired (or not yet valid) pair into place was swapped in with "TLS
/// certificate reloaded", and every client's handshake then failed: it is a failed reload now,
/// and the pair in force serves on.
/// A renewal read half-written (a certificate or key written in place, and a poll or SIGHUP
/// between two writes) keeps the old pair, and the error says the file is cut short, naming the
/// missing `-----END ...-----` line in words. Before, the line named it as a list of byte
/// values: `bad PEM: missing section end marker: [67, 69, 82, 84, 73, 70, 73, 67, 65, 84, 69]`
/// (trial edge27).
#[tokio::test]
async fn a_half_written_renewal_is_named_as_cut_short_in_words() {
    let dir = tempfile::tempdir().unwrap();
    let first = generation("first");
    let running = tls_proxy(dir.path(), &first, Duration::ZERO).await;
    let renewed = generation("renewed");
    let cases = [
        ("tls.crt", &renewed.chain_pem, "tls.cert", "CERTIFICATE"),
        ("tls.key", &renewed.key_pem, "tls.key", "PRIVATE KEY"),
    ];
    for (file, whole, field, marker) in cases {
        install(dir.path(), &first);
        // Cut inside the first block's base64, as a write in progress leaves it.
        let cut = whole.find("-----END").unwrap() - 20;
        replace(&dir.path().join(file), &whole[..cut]);
        let error = running.proxy.reload_tls().unwrap_err().to_string();
        assert!(error.contains(&format!("{field}: ")), "{error}");
        assert!(
            error.contains(&format!(
                "a PEM block is cut short: its \"-----END {marker}-----\" line is missing"
            )),
            "{error}"
        );
        assert!(!error.contains("[67, "), "{error}");
        let (status, _, body) = connect(&running, &first.ca, &[b"http/1.1"])
            .await
            .unwrap()
            .get()
            .await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "blue"));
    }
}

#[tokio::test]
async fn an_expired_new_certificate_keeps_the_old_one_and_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let first = generation("one");
    let running = tls_proxy(dir.path(), &first, Duration::ZERO).await;
    let expired = generation_with("expired", |leaf| {
        leaf.not_before = rcgen::date_time_ymd(2020, 1, 1);
        leaf.not_after = rcgen::date_time_ymd(2020, 1, 2);
    });
    install(dir.path(), &expired);
    let error = running.proxy.reload_tls().unwrap_err().to_string();
    assert!(
        error.contains("tls.cert: ")
            && error.contains("the certificate expired at 2020-01-02T00:00:00Z (its notAfter)"),
        "{error}"
    );
    let mut conn = connect(&running, &first.ca, &BOTH).await.unwrap();
    assert_eq!(conn.get().await.0, StatusCode::OK, "the old pair serves on");
    let errors = r#"crossfade_tls_reloads_total{result="error"}"#;
    assert_eq!(metric(&running, errors).await, Some(1.0));
    assert_eq!(
        metric(&running, "crossfade_tls_last_reload_success").await,
        Some(0.0)
    );

    let future = generation_with("future", |leaf| {
        leaf.not_before = rcgen::date_time_ymd(2100, 1, 1);
        leaf.not_after = rcgen::date_time_ymd(2101, 1, 1);
    });
    install(dir.path(), &future);
    let error = running.proxy.reload_tls().unwrap_err().to_string();
    assert!(
        error.contains("the certificate is not valid before 2100-01-01T00:00:00Z"),
        "{error}"
    );
}

/// A chain written issuer first (`cat ca.crt server.crt`) was "the key is not the certificate's";
/// the order is named instead, and the old pair serves on.
#[tokio::test]
async fn a_chain_with_the_issuer_first_is_named_as_out_of_order() {
    let dir = tempfile::tempdir().unwrap();
    let first = generation("one");
    let running = tls_proxy(dir.path(), &first, Duration::ZERO).await;
    let other = generation("other");
    let (leaf, ca) = other
        .chain_pem
        .split_once("-----END CERTIFICATE-----\n")
        .unwrap();
    let reversed = format!("{ca}{leaf}-----END CERTIFICATE-----\n");
    replace(&dir.path().join("tls.key"), &other.key_pem);
    replace(&dir.path().join("tls.crt"), &reversed);
    let error = running.proxy.reload_tls().unwrap_err().to_string();
    assert!(
        error.contains("is the key of certificate 2 of 2 in")
            && error.contains("the server's own certificate must come first"),
        "{error}"
    );
    let mut conn = connect(&running, &first.ca, &BOTH).await.unwrap();
    assert_eq!(conn.get().await.0, StatusCode::OK, "the old pair serves on");
}

/// What the file watcher does at every poll, done by hand: a missing file is one failure, logged
/// and counted once however often it is polled, and a new one after the file came back.
#[tokio::test]
async fn a_missing_certificate_file_is_counted_once_however_often_it_is_polled() {
    let dir = tempfile::tempdir().unwrap();
    let first = generation("one");
    let running = tls_proxy(dir.path(), &first, Duration::ZERO).await;
    let cert = dir.path().join("tls.crt");
    let error = r#"crossfade_tls_reloads_total{result="error"}"#;

    std::fs::remove_file(&cert).unwrap();
    for _ in 0..5 {
        let missing = running.proxy.reload_tls().unwrap_err().to_string();
        assert!(missing.contains("tls.cert: cannot read "), "{missing}");
    }
    assert_eq!(metric(&running, error).await, Some(1.0));
    assert_eq!(
        metric(&running, "crossfade_tls_last_reload_success").await,
        Some(0.0)
    );
    let mut conn = connect(&running, &first.ca, &BOTH).await.unwrap();
    assert_eq!(conn.get().await.0, StatusCode::OK, "the old pair serves");

    // A different failure (now the key is missing too, with the certificate back) is news.
    std::fs::remove_file(dir.path().join("tls.key")).unwrap();
    replace(&cert, &first.chain_pem);
    for _ in 0..3 {
        assert!(running.proxy.reload_tls().is_err());
    }
    assert_eq!(metric(&running, error).await, Some(2.0));

    install(dir.path(), &first);
    assert!(
        !running.proxy.reload_tls().unwrap(),
        "back to the pair in force"
    );
    std::fs::remove_file(&cert).unwrap();
    assert!(running.proxy.reload_tls().is_err());
    assert_eq!(
        metric(&running, error).await,
        Some(3.0),
        "missing again after a recovery is a new failure"
    );
}

/// As [`generation`], with a leaf that names `hosts` (DNS names, wildcards allowed) and nothing
/// else.
fn generation_for(name: &str, hosts: &[&str]) -> Generation {
    generation_with(name, |params| {
        params.subject_alt_names = hosts
            .iter()
            .map(|h| SanType::DnsName((*h).try_into().unwrap()))
            .collect();
    })
}

/// `generation`'s pair written to `<stem>.crt` and `<stem>.key` in `dir`, as a `tls.sni` entry.
fn install_as(dir: &Path, generation: &Generation, stem: &str) -> TlsPair {
    let (cert, key) = (
        dir.join(format!("{stem}.crt")),
        dir.join(format!("{stem}.key")),
    );
    replace(&key, &generation.key_pem);
    replace(&cert, &generation.chain_pem);
    TlsPair { cert, key }
}

/// A TLS handshake that sends `name` in SNI (none for an IP address, RFC 6066 §3) and trusts
/// only `ca`, then `GET /` over HTTP/1.1 with `Host: name`: the body, or the handshake's error.
async fn get_as(
    running: &Running,
    ca: &CertificateDer<'static>,
    name: &str,
) -> Result<String, String> {
    let tcp = TcpStream::connect(running.addr).await.unwrap();
    let server_name = ServerName::try_from(name.to_owned()).unwrap();
    let tls = connector(ca, &[])
        .connect(server_name, tcp)
        .await
        .map_err(|e| format!("{e:?}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = Request::get("/")
        .header("host", name)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let body = sender.send_request(request).await.unwrap().into_body();
    let body = body.collect().await.unwrap().to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// A listener serving three pairs, installed in a directory: `default` (`tls.cert`, `tls.key`),
/// `shop` (`shop.example`, `www.shop.example`) and `api` (`*.api.example`) as `tls.sni`, with one
/// route to `blue`.
struct Domains {
    default: Generation,
    shop: Generation,
    api: Generation,
    blue: Backend,
    running: Running,
}

/// Starts [`Domains`] with its files in `dir`.
async fn serve_domains(dir: &Path) -> Domains {
    let default = generation("default");
    let shop = generation_for("shop", &["shop.example", "www.shop.example"]);
    let api = generation_for("api", &["*.api.example"]);
    let blue = backend("blue").await;
    let (cert, key) = install(dir, &default);
    let sni = vec![install_as(dir, &shop, "shop"), install_as(dir, &api, "api")];
    let config = ProxyConfig {
        tls: Some(TlsConfig {
            cert,
            key,
            sni,
            watch_interval: Duration::ZERO,
        }),
        ..config(vec![route(&[blue.addr], &[], 10_000)])
    };
    let running = start(config).await;
    Domains {
        default,
        shop,
        api,
        blue,
        running,
    }
}

/// An ingress serving several domains on one listener: each client gets the certificate that
/// names the host it asked for in SNI (a wildcard covering one label), the others and clients
/// without SNI get `tls.cert`; each pair reloads on its own, and a broken one keeps its old pair
/// without holding back the others.
#[tokio::test]
async fn each_sni_host_name_gets_the_certificate_that_names_it_and_the_rest_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let Domains {
        default,
        shop,
        api,
        blue: _blue,
        running,
    } = serve_domains(dir.path()).await;
    let blue_ok = Ok("blue".to_owned());
    assert_eq!(get_as(&running, &shop.ca, "shop.example").await, blue_ok);
    assert_eq!(
        get_as(&running, &shop.ca, "WWW.shop.example").await,
        blue_ok
    );
    assert_eq!(get_as(&running, &api.ca, "v1.api.example").await, blue_ok);
    assert_eq!(get_as(&running, &default.ca, "localhost").await, blue_ok);
    assert_eq!(
        get_as(&running, &default.ca, "127.0.0.1").await,
        blue_ok,
        "no SNI: the default"
    );
    // Not the default's certificate for a name an SNI pair covers ...
    let refused = get_as(&running, &default.ca, "shop.example")
        .await
        .unwrap_err();
    assert!(refused.contains("UnknownIssuer"), "{refused}");
    // ... and the default's (from its CA, but not naming it) for a name no pair covers, or one
    // the wildcard does not cover (two labels).
    for name in ["other.example", "a.b.api.example", "api.example"] {
        let refused = get_as(&running, &default.ca, name).await.unwrap_err();
        assert!(refused.contains("NotValidForName"), "{name}: {refused}");
    }

    // A renewal of one pair reaches its name only.
    let renewed = generation_for("shop renewed", &["shop.example"]);
    install_as(dir.path(), &renewed, "shop");
    assert!(running.proxy.reload_tls().unwrap());
    assert_eq!(get_as(&running, &renewed.ca, "shop.example").await, blue_ok);
    assert_eq!(get_as(&running, &api.ca, "v1.api.example").await, blue_ok);
    assert_eq!(get_as(&running, &default.ca, "localhost").await, blue_ok);

    // A broken pair keeps its old one, names its field, and does not hold back another's
    // renewal in the same reload.
    replace(&dir.path().join("api.crt"), "not a certificate\n");
    let shop_again = generation_for("shop again", &["shop.example"]);
    install_as(dir.path(), &shop_again, "shop");
    let error = running.proxy.reload_tls().unwrap_err().to_string();
    assert!(error.contains("tls.sni[1].cert: "), "{error}");
    assert!(!error.contains("tls.sni[0]"), "{error}");
    assert_eq!(get_as(&running, &api.ca, "v1.api.example").await, blue_ok);
    assert_eq!(
        get_as(&running, &shop_again.ca, "shop.example").await,
        blue_ok
    );
    let ok = r#"crossfade_tls_reloads_total{result="ok"}"#;
    assert_eq!(metric(&running, ok).await, Some(2.0));
    assert_eq!(
        metric(&running, "crossfade_tls_last_reload_success").await,
        Some(0.0)
    );
}

/// A TLS handshake that sends `sni` in SNI (none for an IP address) and trusts only `ca`,
/// offering `alpn`, then one `GET /` per entry of `hosts` on that one connection, each with that
/// `Host` (HTTP/1.1) or `:authority` (HTTP/2): each answer's status and body.
async fn statuses_on_one_connection(
    running: &Running,
    ca: &CertificateDer<'static>,
    sni: &str,
    alpn: &[u8],
    hosts: &[&str],
) -> Vec<(StatusCode, String)> {
    let tcp = TcpStream::connect(running.addr).await.unwrap();
    let server_name = ServerName::try_from(sni.to_owned()).unwrap();
    let tls = connector(ca, &[alpn])
        .connect(server_name, tcp)
        .await
        .unwrap();
    let io = TokioIo::new(tls);
    let mut sender = match alpn {
        b"h2" => {
            let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .unwrap();
            tokio::spawn(conn);
            Sender::H2(sender)
        }
        _ => {
            let (sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            Sender::H1(sender)
        }
    };
    let mut answers = Vec::new();
    for host in hosts {
        let response = match &mut sender {
            Sender::H1(s) => {
                let request = Request::get("/").header("host", *host);
                s.send_request(request.body(Empty::new()).unwrap()).await
            }
            Sender::H2(s) => {
                let request = Request::get(format!("https://{host}/"));
                s.send_request(request.body(Empty::new()).unwrap()).await
            }
        };
        let (parts, body) = response.unwrap().into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        answers.push((parts.status, String::from_utf8_lossy(&body).into_owned()));
    }
    answers
}

/// RFC 9110 §7.4: a request is served only on a connection secured with the certificate the
/// proxy serves its host with. A request whose `Host` (or `:authority`) would pick another
/// `tls.sni` pair than the client's SNI host name picked (an HTTP/2 client that coalesced a
/// connection, a client whose SNI names one domain and whose Host another: domain fronting) gets
/// 421 Misdirected Request (§15.5.20), reaches no backend, and the connection serves on. Hosts
/// that pick the same pair (both names of one certificate, case, port, a trailing dot) are served,
/// as are clients that sent no SNI (by address) and listeners without `tls.sni`. Before, every one
/// of these requests was routed by its Host alone and served (trial edge27).
#[tokio::test]
async fn a_request_for_a_host_another_sni_certificate_serves_gets_421_on_that_connection() {
    let dir = tempfile::tempdir().unwrap();
    let Domains {
        default,
        shop,
        api: _api,
        blue,
        running,
    } = serve_domains(dir.path()).await;
    let ok = (StatusCode::OK, "blue".to_owned());
    for alpn in [&b"http/1.1"[..], b"h2"] {
        let shown = String::from_utf8_lossy(alpn);
        let hosts = [
            "shop.example",
            "v1.api.example",
            "WWW.Shop.Example.:8443",
            "other.example",
            "shop.example",
        ];
        let answers = statuses_on_one_connection(&running, &shop.ca, "shop.example", alpn, &hosts);
        let answers = answers.await;
        assert_eq!(answers[0], ok, "{shown}");
        assert_eq!(
            answers[1].0,
            StatusCode::MISDIRECTED_REQUEST,
            "{shown}: {answers:?}"
        );
        assert!(
            answers[1].1.contains("misdirected request") && answers[1].1.contains("v1.api.example"),
            "{shown}: {answers:?}"
        );
        assert_eq!(answers[2], ok, "{shown}: the same certificate's other name");
        assert_eq!(
            answers[3].0,
            StatusCode::MISDIRECTED_REQUEST,
            "{shown}: a name the default serves"
        );
        assert_eq!(answers[4], ok, "{shown}: the connection serves on");

        // A connection that got the default pair: a host an SNI pair serves is misdirected,
        // one the default serves is not.
        let hosts = ["localhost", "x.api.example", "unknown.example"];
        let answers = statuses_on_one_connection(&running, &default.ca, "localhost", alpn, &hosts);
        let answers = answers.await;
        assert_eq!(answers[0], ok, "{shown}");
        assert_eq!(answers[1].0, StatusCode::MISDIRECTED_REQUEST, "{shown}");
        assert_eq!(answers[2], ok, "{shown}");

        // No SNI (a client connecting by address): served as without tls.sni.
        let hosts = ["shop.example", "v1.api.example", "127.0.0.1"];
        let answers = statuses_on_one_connection(&running, &default.ca, "127.0.0.1", alpn, &hosts);
        assert!(answers.await.iter().all(|a| *a == ok), "{shown}");
    }
    let misdirected = r#"crossfade_local_responses_total{route="",backend="none",class="4xx",reason="misdirected"}"#;
    assert_eq!(metric(&running, misdirected).await, Some(6.0));
    assert_eq!(
        blue.hits.load(std::sync::atomic::Ordering::SeqCst),
        16,
        "no misdirected request reached the backend"
    );

    // Without tls.sni there is one certificate, and nothing to compare.
    let single = generation("single");
    let running = tls_proxy(dir.path(), &single, Duration::ZERO).await;
    let hosts = ["localhost", "shop.example"];
    let answers = statuses_on_one_connection(&running, &single.ca, "localhost", b"h2", &hosts);
    assert!(answers.await.iter().all(|(s, _)| *s == StatusCode::OK));
}

/// A `tls.sni` certificate that names no DNS host could never be picked: refused at start,
/// naming its field, with every other broken pair.
#[tokio::test]
async fn an_sni_certificate_naming_no_host_is_refused_at_start_naming_its_field() {
    let dir = tempfile::tempdir().unwrap();
    let default = generation("default");
    let by_ip = generation_for("ip only", &[]);
    let (cert, key) = install(dir.path(), &default);
    let config = ProxyConfig {
        tls: Some(TlsConfig {
            cert,
            key,
            sni: vec![
                install_as(dir.path(), &by_ip, "ip"),
                TlsPair {
                    cert: dir.path().join("absent.crt"),
                    key: dir.path().join("absent.key"),
                },
            ],
            watch_interval: Duration::ZERO,
        }),
        ..config(Vec::new())
    };
    let error = Proxy::new(&config, ProxyMetrics::default())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("tls.sni[0].cert: ") && error.contains("names no DNS host"),
        "{error}"
    );
    assert!(error.contains("tls.sni[1].cert: cannot read "), "{error}");
    assert!(error.contains("tls.sni[1].key: cannot read "), "{error}");
}

#[tokio::test]
async fn a_missing_certificate_file_fails_at_start_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = ProxyConfig {
        tls: Some(TlsConfig {
            cert: dir.path().join("absent.crt"),
            key: dir.path().join("absent.key"),
            sni: Vec::new(),
            watch_interval: Duration::ZERO,
        }),
        ..config(Vec::new())
    };
    let error = Proxy::new(&config, ProxyMetrics::default())
        .unwrap_err()
        .to_string();
    assert!(error.contains("tls.cert: cannot read "), "{error}");
    assert!(error.contains("absent.crt"), "{error}");
}

/// A request that came over TLS reaches the backend with `X-Forwarded-Proto: https`, over HTTP/2
/// and HTTP/1.1 alike, so an application that redirects plain-HTTP visitors to HTTPS does not
/// redirect its HTTPS visitors in a loop.
#[tokio::test]
async fn requests_over_tls_reach_the_backend_with_forwarded_proto_https() {
    let dir = tempfile::tempdir().unwrap();
    let first = generation("one");
    let blue = backend("blue").await;
    let config = over_tls(dir.path(), &first, vec![route(&[blue.addr], &[], 10_000)]);
    let running = start(config).await;
    for alpn in [&b"h2"[..], &b"http/1.1"[..]] {
        let mut conn = connect(&running, &first.ca, &[alpn]).await.unwrap();
        assert_eq!(conn.get().await.0, StatusCode::OK);
        let seen = blue.seen.lock().unwrap().last().cloned().unwrap();
        assert_eq!(
            seen.get("x-forwarded-proto").map(|v| v.to_str().unwrap()),
            Some("https"),
            "{}",
            String::from_utf8_lossy(alpn)
        );
    }
}

/// A browser opens a WebSocket over its TLS HTTP/2 connection (ALPN `h2`) with an extended
/// CONNECT (RFC 8441): the listener advertises it over TLS as over h2c, and the backend gets the
/// HTTP/1.1 handshake with `X-Forwarded-Proto: https`.
#[tokio::test]
async fn a_websocket_opens_over_a_tls_http2_connection() {
    use crate::upgrade::extended_connect::{echo, extended_connect};
    let dir = tempfile::tempdir().unwrap();
    let first = generation("one");
    let blue = crate::upgrade::backend::start("blue").await;
    let config = over_tls(dir.path(), &first, vec![route(&[blue.addr], &[], 10_000)]);
    let running = start(config).await;
    let conn = connect(&running, &first.ca, &[b"h2"]).await.unwrap();
    assert_eq!(conn.version, Version::HTTP_2);
    let Sender::H2(mut sender) = conn.sender else {
        panic!("ALPN h2 gave an HTTP/1.1 connection");
    };
    let (status, _, ws) = extended_connect(&mut sender, "/ws", "websocket").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(echo(&mut ws.unwrap(), "tls").await, "blue: tls");
    let seen = blue.seen.lock().unwrap()[0].clone();
    assert_eq!(seen["x-forwarded-proto"], "https");
    assert_eq!(seen["upgrade"], "websocket");
}

/// With `proxy_protocol: true` the PROXY header comes before the TLS handshake (as a balancer
/// that passes TLS through sends it): the handshake reads on from the header's end, and the
/// header's source is the client's address, over HTTP/1.1 and HTTP/2 alike.
#[tokio::test]
async fn a_proxy_protocol_header_before_the_tls_handshake_gives_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let first = generation("one");
    let blue = backend("blue").await;
    let mut config = over_tls(dir.path(), &first, vec![route(&[blue.addr], &[], 10_000)]);
    config.proxy_protocol = true;
    config.trust_forwarded_for = false;
    let running = start(config).await;
    for (alpn, client) in [
        (&b"h2"[..], "203.0.113.20"),
        (&b"http/1.1"[..], "203.0.113.11"),
    ] {
        let mut tcp = TcpStream::connect(running.addr).await.unwrap();
        let header = format!("PROXY TCP4 {client} 10.0.0.1 50000 443\r\n");
        tcp.write_all(header.as_bytes()).await.unwrap();
        let tls = tls_over(tcp, &first.ca, &[alpn]).await.unwrap();
        let io = TokioIo::new(tls);
        let request = || {
            Request::get("https://localhost/")
                .header("host", "localhost")
                .body(Empty::<Bytes>::new())
                .unwrap()
        };
        let status = if alpn == b"h2" {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .unwrap();
            tokio::spawn(conn);
            sender.send_request(request()).await.unwrap().status()
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            sender.send_request(request()).await.unwrap().status()
        };
        assert_eq!(status, StatusCode::OK);
        let seen = blue.seen.lock().unwrap().last().cloned().unwrap();
        assert_eq!(seen["x-forwarded-for"], client);
        assert_eq!(seen["x-forwarded-proto"], "https");
    }
}

/// Over TLS too, a connection answered before its upload was read (here the proxy's own 503) is
/// closed by lingering (RFC 9112 §9.6): the proxy sends `close_notify` and its FIN after the
/// answer, then reads and discards the client's bytes until the client closes, instead of
/// resetting under the upload.
#[tokio::test]
async fn over_tls_a_connection_answered_before_its_upload_lingers_until_the_client_closes() {
    let dir = tempfile::tempdir().unwrap();
    let first = generation("one");
    let mut closed = route(&[], &[], 10_000);
    closed.blue.weight = Some(crossfade_proxy::Percent(0));
    closed.green.weight = Some(crossfade_proxy::Percent(0));
    let config = over_tls(dir.path(), &first, vec![closed]);
    let running = start(config).await;
    let mut tls = tls_stream(&running, &first.ca, &[b"http/1.1"])
        .await
        .unwrap();
    let head = "POST / HTTP/1.1\r\nhost: localhost\r\ncontent-length: 10000000\r\n\r\n";
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(&[b'x'; 64 * 1024]).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut answer)).await;
    assert!(matches!(read, Ok(Ok(_))), "{read:?}");
    assert!(answer.starts_with(b"HTTP/1.1 503"), "{answer:?}");
    // The proxy still reads: more of the upload is taken, not reset.
    tls.write_all(&[b'x'; 64 * 1024]).await.unwrap();
    drop(tls);
    let series = "crossfade_lingering_closes_total{end=\"closed\"}";
    for _ in 0..100 {
        if metric(&running, series).await == Some(1.0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{series} is {:?}, not 1", metric(&running, series).await);
}

/// Trial report 3 §12: under `tls`, the minted sticky cookie carries `Secure` (RFC 6265
/// §4.1.2.5), so a browser never sends the key over cleartext.
#[tokio::test]
async fn a_minted_sticky_cookie_is_secure_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let first = generation("one");
    let blue = backend("blue").await;
    let mut sticky = route(&[blue.addr], &[], 10_000);
    sticky.sticky = Some(crossfade_proxy::config::StickyConfig {
        cookie: Some("cf_user".into()),
        set: true,
        ..Default::default()
    });
    let config = over_tls(dir.path(), &first, vec![sticky]);
    let running = start(config).await;
    let mut tls = tls_stream(&running, &first.ca, &[b"http/1.1"])
        .await
        .unwrap();
    tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    let cookie = answer
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no Set-Cookie: {answer}"));
    assert!(
        cookie.ends_with("; Path=/; HttpOnly; SameSite=Lax; Secure"),
        "{cookie}"
    );
}

/// Under `tls` too, a client that goes away while its request waits (its TCP connection closed
/// without a `close_notify`) ends the upstream exchange and is counted as a client abort.
#[tokio::test]
async fn over_tls_a_client_that_goes_away_while_its_request_waits_is_a_client_abort() {
    use crate::client_abort::{Hanging, ABORTS, IN_FLIGHT};
    let dir = tempfile::tempdir().unwrap();
    let first = generation("one");
    let hanging = Hanging::start().await;
    let config = over_tls(
        dir.path(),
        &first,
        vec![route(&[hanging.addr], &[], 10_000)],
    );
    let running = start(config).await;
    let mut tls = tls_stream(&running, &first.ca, &[b"http/1.1"])
        .await
        .unwrap();
    tls.write_all(b"GET /hang HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    hanging.until_requests(1).await;
    drop(tls);
    hanging.until_closed(1).await;
    for _ in 0..100 {
        if metric(&running, ABORTS).await == Some(1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(metric(&running, ABORTS).await, Some(1.0));
    assert_eq!(metric(&running, IN_FLIGHT).await, Some(0.0));
}

/// Trial 17, T8: a plain HTTP/1.1 request sent to the TLS listener (a health check or a client
/// with `http://` where `https://` was meant) got no answer: the handshake failed and the
/// connection closed, curl said "Empty reply from server". It gets a `400` saying to use
/// `https://`, counted in `crossfade_local_responses_total{reason="bad_head"}`, and a TLS client
/// on the same listener is served as before.
#[tokio::test]
async fn plain_http_on_the_tls_listener_gets_a_400_saying_to_use_https() {
    let dir = tempfile::tempdir().unwrap();
    let first = generation("a");
    let running = tls_proxy(dir.path(), &first, Duration::ZERO).await;
    let mut plain = TcpStream::connect(running.addr).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: shop.example\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    plain.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer}"
    );
    assert!(answer.contains("connection: close\r\n"), "{answer}");
    assert!(
        answer.ends_with(
            "this port serves HTTPS (tls:), and the request came as plain HTTP: use https://\n"
        ),
        "{answer}"
    );
    // Counted with the other heads refused before routing.
    let bad_head =
        r#"crossfade_local_responses_total{route="",backend="none",class="4xx",reason="bad_head"}"#;
    assert_eq!(metric(&running, bad_head).await, Some(1.0));
    let mut conn = connect(&running, &first.ca, &[b"http/1.1"]).await.unwrap();
    assert_eq!(conn.version, Version::HTTP_11);
    assert_eq!(conn.get().await.0, StatusCode::OK);
}

/// C07 over TLS: a WebSocket through the TLS listener (wss) echoes, and when its backend's tunnels
/// are closed (as at a retired backend's drain deadline) it gets a close 1001 "going away" and
/// then a clean end of the TLS stream (`close_notify`), not a reset or a truncation.
#[tokio::test]
async fn c07_over_tls_a_websocket_closed_at_the_drain_deadline_gets_going_away_and_a_clean_end() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::Message;

    let dir = tempfile::tempdir().unwrap();
    let generation = generation("wss");
    let blue = crate::upgrade::backend::start("blue").await;
    let config = over_tls(
        dir.path(),
        &generation,
        vec![route(&[blue.addr], &[], 10_000)],
    );
    let running = start(config).await;
    let tls = tls_stream(&running, &generation.ca, &[b"http/1.1"])
        .await
        .unwrap();
    let url = format!("wss://localhost:{}/ws", running.addr.port());
    let (mut ws, response) = tokio_tungstenite::client_async(url, tls).await.unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws.send(Message::text("before")).await.unwrap();
    match ws.next().await {
        Some(Ok(Message::Text(reply))) => assert_eq!(reply.as_str(), "blue: before"),
        other => panic!("no echo: {other:?}"),
    }

    assert_eq!(running.proxy.close_upgraded("web", Slot::Blue), Some(1));
    match ws.next().await {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(frame.code, CloseCode::Away);
            assert_eq!(frame.reason.as_str(), "going away");
        }
        other => panic!("expected close 1001, got {other:?}"),
    }
    // tungstenite answers the close; the proxy then ends the TLS stream cleanly. A reset, or a
    // TCP end without `close_notify`, would surface here as an I/O error.
    let end = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
    assert!(matches!(end, Ok(None)), "expected a clean end, got {end:?}");
}
