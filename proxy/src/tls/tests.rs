//! The PEM readers' refusals, each naming the file and field at fault.

use super::*;

fn pem(label: &str) -> Vec<u8> {
    format!("-----BEGIN {label}-----\nMAECAw==\n-----END {label}-----\n").into_bytes()
}

fn message(e: ConfigError) -> String {
    e.to_string()
}

/// An X.509 v1 certificate (`openssl x509 -req -signkey` without extensions), ECDSA P-256.
const V1_CERTIFICATE: &str = "-----BEGIN CERTIFICATE-----
MIIBCjCBsgIBATAKBggqhkjOPQQDAjASMRAwDgYDVQQDDAdleHBpcmVkMB4XDTIw
MDEwMTAwMDAwMFoXDTIwMDEwMjAwMDAwMFowEjEQMA4GA1UEAwwHZXhwaXJlZDBZ
MBMGByqGSM49AgEGCCqGSM49AwEHA0IABEwCTIGWvaSW2Mb9VwHULGEvpq4yY4Gi
tLK5Me0Tsvto0/2bVVWYX3WlhavQbDTGFIRpcQWFX2eLjS/MkqI8wEowCgYIKoZI
zj0EAwIDRwAwRAIgcmD3x+O33WSFVyiugBCpMOWjhOyvrzVz3jImQb20J8UCIBxZ
/6onhF6rD1UjNOWdGe1RPyyqCGcURGANyBSLGF5t
-----END CERTIFICATE-----
";

#[test]
fn a_v1_certificate_is_named_as_such_not_as_unparseable() {
    let e = message(parse_chain("tls", Path::new("c.pem"), V1_CERTIFICATE.as_bytes()).unwrap_err());
    assert!(
        e.contains(
            "tls.cert: c.pem: the first certificate is an X.509 v1 certificate, which this \
             proxy cannot serve"
        ) && e.contains("reissue it as v3 with a subjectAltName"),
        "{e}"
    );
}

#[test]
fn a_certificate_whose_der_does_not_parse_is_blamed_on_tls_cert() {
    let e = message(parse_chain("tls", Path::new("c.pem"), &pem("CERTIFICATE")).unwrap_err());
    assert!(
        e.contains("tls.cert: c.pem: the first certificate is not a valid X.509"),
        "{e}"
    );
}

#[test]
fn an_encrypted_key_is_named_as_such_on_tls_key() {
    let e =
        message(parse_key("tls", Path::new("k.pem"), &pem("ENCRYPTED PRIVATE KEY")).unwrap_err());
    assert!(
        e.contains("tls.key: k.pem holds an encrypted private key"),
        "{e}"
    );
    assert!(!e.contains("no items found"), "{e}");
    let legacy = b"-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nMAECAw==\n-----END RSA PRIVATE KEY-----\n";
    let e = message(parse_key("tls", Path::new("k.pem"), legacy).unwrap_err());
    assert!(e.contains("holds an encrypted private key"), "{e}");
}

#[test]
fn both_files_wrong_name_both_fields() {
    // Trial report H14: a missing cert and key named the cert only.
    let pair = |cert: &'static str, key: &'static str| (Path::new(cert), Path::new(key));
    let fields =
        |e: &ConfigError| -> Vec<String> { e.problems().iter().map(|p| p.path.clone()).collect() };
    let missing = pair("/nonexistent.crt", "/nonexistent.key");
    let e = read("tls", missing.0, missing.1).unwrap_err();
    assert_eq!(fields(&e), ["tls.cert", "tls.key"], "{e}");
    assert!(e.to_string().contains("/nonexistent.key"), "{e}");
    // The cert readable (this crate's manifest), the key not: the key alone.
    let (cert, key) = pair("Cargo.toml", "/nonexistent.key");
    let e = read("tls", cert, key).unwrap_err();
    assert_eq!(fields(&e), ["tls.key"], "{e}");
    // Both read, neither holding PEM of its kind: both named, each with its own reason.
    let provider = ring::default_provider();
    let files = (pem("PRIVATE KEY"), pem("CERTIFICATE"));
    let e = certified_key("tls", missing.0, missing.1, &files, &provider).unwrap_err();
    assert_eq!(fields(&e), ["tls.cert", "tls.key"], "{e}");
    let text = e.to_string();
    assert!(
        text.contains("holds no PEM certificate") && text.contains("holds no PEM private key"),
        "{text}"
    );
}

#[test]
fn a_key_file_without_a_key_says_which_blocks_it_needs() {
    let e = message(parse_key("tls", Path::new("k.pem"), &pem("CERTIFICATE")).unwrap_err());
    assert!(
        e.contains("tls.key: k.pem holds no PEM private key (a PRIVATE KEY"),
        "{e}"
    );
}

/// `tls: { cert: tls.key, key: tls.crt }`: each file was told it lacks its block, not that the
/// two are swapped.
#[test]
fn swapped_files_are_named_as_swapped() {
    let e = message(parse_chain("tls", Path::new("k.pem"), &pem("PRIVATE KEY")).unwrap_err());
    assert!(
        e.contains("k.pem holds no PEM certificate (a CERTIFICATE block): it holds a private key; are tls.cert and tls.key swapped?"),
        "{e}"
    );
    let e = message(parse_key("tls", Path::new("c.pem"), &pem("CERTIFICATE")).unwrap_err());
    assert!(
        e.contains("it holds a certificate; are tls.cert and tls.key swapped?"),
        "{e}"
    );
    let e = message(parse_key("tls", Path::new("x.pem"), b"not pem\n").unwrap_err());
    assert!(!e.contains("swapped"), "{e}");
}

/// A PEM file saved with a UTF-8 byte order mark (Windows Notepad) was "holds no PEM
/// certificate" although it plainly held one.
#[test]
fn a_byte_order_mark_before_the_pem_is_skipped() {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let bom = |text: String| [&b"\xEF\xBB\xBF"[..], text.as_bytes()].concat();
    let chain = parse_chain("tls", Path::new("c.pem"), &bom(cert.pem())).unwrap();
    assert_eq!(chain.len(), 1);
    assert!(parse_key("tls", Path::new("k.pem"), &bom(key.serialize_pem())).is_ok());
}
