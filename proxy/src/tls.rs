//! TLS termination on the traffic listener: rustls (ring provider, TLS 1.2 and 1.3), ALPN `h2` then
//! `http/1.1` (RFC 7301), and certificates that can be replaced while serving.
//!
//! The listener serves one certificate pair (`tls.cert`, `tls.key`) and, with `tls.sni`, more:
//! each handshake gets the pair whose certificate names the client's SNI host name (RFC 6066 §3)
//! by the rules of RFC 6125 §6.4, else the first pair ([`names::Index`]). The index lives in an
//! `ArcSwap` read by rustls' certificate resolver at each handshake, so a reload changes what the
//! **next** handshake gets; connections already established keep their session.
//!
//! A reload reads every pair's two PEM files and, for a pair whose bytes changed, parses them and
//! checks that the key matches the leaf certificate before swapping; a pair that fails keeps its
//! old one serving (the others still reload), is logged once (not at every poll) and counted once
//! in `crossfade_tls_reloads_total{result="error"}`, and sets `crossfade_tls_last_reload_success`
//! to 0. A file that cannot be read (missing, no permission) is a failure too, reported once per
//! distinct error until a poll succeeds or fails differently. A renewal that writes the
//! certificate and the key one after the other can be seen half-written by a poll: that poll fails
//! and the next one, with both files written, succeeds.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use tokio_rustls::rustls::crypto::{ring, CryptoProvider};
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ParsedCertificate, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{Error, InconsistentKeys, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::config::{ConfigError, Problem, TlsConfig};

mod names;
mod validity;

/// ALPN protocols offered, most preferred first: HTTP/2 clients get HTTP/2 (RFC 9113 §3.2).
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The listener's TLS: the acceptor, the swappable certificates, and reload bookkeeping.
pub(crate) struct Tls {
    watch_interval: std::time::Duration,
    /// `tls.cert`/`tls.key` first, then `tls.sni`'s in order.
    pairs: Vec<Pair>,
    acceptor: TlsAcceptor,
    resolver: Arc<Resolver>,
    provider: Arc<CryptoProvider>,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    last_ok: AtomicBool,
    /// What the start found valid but most likely not meant ([`Tls::warnings`]).
    warnings: Vec<String>,
}

/// The PEM files' bytes: certificate chain, key.
type Files = (Vec<u8>, Vec<u8>);

/// What a failed reload failed on: the same failure seen again at the next poll is not news.
#[derive(Debug, PartialEq)]
enum Failure {
    /// A file could not be read; the error's text (field, path and OS error).
    Unreadable(String),
    /// Both files were read; this pair is broken.
    Pair(Files),
}

/// One certificate pair of the listener: its files, what is served from them, its last failure.
#[derive(Debug)]
struct Pair {
    /// The config field that holds it, which errors name: `tls` (its `cert` and `key`) or
    /// `tls.sni[1]`.
    field: String,
    cert: PathBuf,
    key: PathBuf,
    /// Whether the pair is served by SNI only, so its certificate must name a DNS host.
    by_sni: bool,
    current: Mutex<Arc<Loaded>>,
    /// The last failure, so that each distinct one is logged and counted once, not at every poll.
    failed: Mutex<Option<Failure>>,
}

/// Hands every handshake the pair its SNI host name picks ([`names::Index`]).
#[derive(Debug)]
struct Resolver {
    index: ArcSwap<names::Index>,
}

/// A pair as loaded: the signing key with its chain, the bytes it was made of, and the DNS names
/// its leaf certificate covers.
#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    files: Files,
    names: Vec<String>,
}

// === impl Tls ===

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("pairs", &self.pairs)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Loads every pair named in `config` and builds the acceptor; what it found valid but most
    /// likely not meant is in [`Tls::warnings`], not logged.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] with a problem per pair at fault, each naming `tls.cert` or
    /// `tls.key` (or `tls.sni[N].cert`, `tls.sni[N].key`): unreadable file, no PEM block of the
    /// right kind, a leaf certificate whose DER does not parse (`cert`), an encrypted key or one
    /// rustls cannot use, or a key that does not match the certificate (`key`); and for a
    /// `tls.sni` pair, a certificate that names no DNS host (`cert`).
    pub(crate) fn new(config: &TlsConfig) -> Result<Tls, ConfigError> {
        let provider = Arc::new(ring::default_provider());
        let named = [("tls".to_owned(), &config.cert, &config.key, false)]
            .into_iter()
            .chain(
                config
                    .sni
                    .iter()
                    .enumerate()
                    .map(|(i, pair)| (format!("tls.sni[{i}]"), &pair.cert, &pair.key, true)),
            );
        let mut pairs = Vec::new();
        let mut problems = Vec::new();
        let mut warnings = Vec::new();
        for (field, cert, key, by_sni) in named {
            let loaded = read(&field, cert, key)
                .and_then(|files| load(&field, cert, key, by_sni, files, &provider));
            match loaded {
                Ok(loaded) => {
                    if let Some(e) = out_of_date(&field, cert, &loaded.key) {
                        for problem in e.problems() {
                            // Served anyway: at a start there is no other pair, and a client
                            // that does not check dates (an internal one) still gets through.
                            warnings.push(format!(
                                "{problem}; served anyway, as there is no other certificate"
                            ));
                        }
                    }
                    pairs.push(Pair {
                        field,
                        cert: cert.clone(),
                        key: key.clone(),
                        by_sni,
                        current: Mutex::new(Arc::new(loaded)),
                        failed: Mutex::new(None),
                    });
                }
                Err(e) => problems.extend(e.problems().iter().cloned()),
            }
        }
        if !problems.is_empty() {
            return Err(ConfigError::Invalid(problems));
        }
        let index = index(&pairs);
        warnings.extend(index.overlaps().iter().cloned());
        let resolver = Arc::new(Resolver {
            index: ArcSwap::from_pointee(index),
        });
        let mut server = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| problem("tls", format!("no usable TLS version: {e}")))?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        server.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(Tls {
            watch_interval: config.watch_interval,
            pairs,
            acceptor: TlsAcceptor::from(Arc::new(server)),
            resolver,
            provider,
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            last_ok: AtomicBool::new(true),
            warnings,
        })
    }

    /// What the start found valid but most likely not meant, each naming its field: a
    /// certificate out of its validity period (served anyway), a name two `tls.sni` pairs
    /// cover. [`Tls::new`] does not log them, so that a start that checks its files first and
    /// then loads them logs each once (it logged each twice), and `crossfade check` prints them
    /// as its other warnings.
    pub(crate) fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The acceptor for new connections.
    pub(crate) fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// Whether the listener has `tls.sni` pairs, so that a client's SNI host name picks its
    /// certificate.
    pub(crate) fn picks_by_sni(&self) -> bool {
        self.pairs.len() > 1
    }

    /// The position of the pair a handshake that sent `name` in SNI gets now (0: `tls.cert` and
    /// `tls.key`; `N + 1`: `tls.sni[N]`), [`names::Index::position`]. `name` may carry a
    /// `:port` (a request's host), which is ignored.
    pub(crate) fn position(&self, name: &str) -> usize {
        let name = crate::table::strip_port(name);
        self.resolver.index.load().position(name)
    }

    /// Reads every pair's files again and swaps in the pairs whose files changed.
    ///
    /// Returns whether a new pair is now served. Unchanged files are no reload and count nothing.
    ///
    /// # Errors
    /// As [`Tls::new`], with a problem per pair that did not load; those pairs stay as they
    /// were, and the others that changed are swapped in all the same.
    pub(crate) fn reload(&self) -> Result<bool, ConfigError> {
        self.reload_logging(true)
    }

    /// [`Tls::reload`] for a caller that reports the error itself (a SIGHUP, through
    /// [`crate::Proxy::reload_tls`]): a failure is counted as by a poll, once per distinct
    /// failure, but not logged here, so that one SIGHUP logs one line (trial 29: two ERROR lines
    /// in the same millisecond, this one's and the SIGHUP's).
    ///
    /// # Errors
    /// As [`Tls::reload`].
    pub(crate) fn reload_requested(&self) -> Result<bool, ConfigError> {
        self.reload_logging(false)
    }

    /// [`Tls::reload`], logging a new failure when `log` is set.
    fn reload_logging(&self, log: bool) -> Result<bool, ConfigError> {
        let mut swapped = false;
        let mut problems = Vec::new();
        for pair in &self.pairs {
            match pair.reload(&self.provider) {
                Ok(changed) => {
                    *pair.failed.lock().unwrap_or_else(PoisonError::into_inner) = None;
                    if changed {
                        swapped = true;
                        self.reloads_ok.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(field = %pair.field, cert = %pair.cert.display(), "TLS certificate reloaded");
                    }
                }
                Err((failure, e)) => {
                    self.failed(pair, failure, &e, log);
                    problems.extend(e.problems().iter().cloned());
                }
            }
        }
        if swapped {
            let index = index(&self.pairs);
            for overlap in index.overlaps() {
                tracing::warn!("{overlap}");
            }
            self.resolver.index.store(Arc::new(index));
        }
        self.last_ok.store(problems.is_empty(), Ordering::Relaxed);
        match problems.is_empty() {
            true => Ok(swapped),
            false => Err(ConfigError::Invalid(problems)),
        }
    }

    /// Counts and (with `log`) logs a failed reload of `pair`, once per distinct failure (a
    /// broken pair, or a file that cannot be read for one reason): a poll that fails the same way
    /// again is silent.
    fn failed(&self, pair: &Pair, failure: Failure, error: &ConfigError, log: bool) {
        let mut failed = pair.failed.lock().unwrap_or_else(PoisonError::into_inner);
        if failed.as_ref() == Some(&failure) {
            return;
        }
        *failed = Some(failure);
        self.reloads_failed.fetch_add(1, Ordering::Relaxed);
        if !log {
            return;
        }
        tracing::error!(
            "TLS certificate not reloaded, the previous one stays: {}",
            crate::config::one_line(&error.to_string())
        );
    }

    /// Polls the files every `watch_interval` until dropped (nothing when it is zero).
    pub(crate) async fn watch(self: Arc<Self>) {
        let every = self.watch_interval;
        if every.is_zero() {
            return std::future::pending().await;
        }
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            // Errors are counted and logged by `reload`.
            let _ = self.reload();
        }
    }

    /// Reloads so far: `(succeeded, failed)`, counted per pair.
    pub(crate) fn reload_counts(&self) -> (u64, u64) {
        let ok = self.reloads_ok.load(Ordering::Relaxed);
        (ok, self.reloads_failed.load(Ordering::Relaxed))
    }

    /// Whether the last reload attempt succeeded for every pair (true before any).
    pub(crate) fn last_reload_ok(&self) -> bool {
        self.last_ok.load(Ordering::Relaxed)
    }
}

// === impl Pair ===

impl Pair {
    /// Reads the files and, when their bytes differ from those in force, loads the new pair.
    /// `Ok(true)` when it swapped one in; `Ok(false)` for unchanged files (back to, or still at,
    /// the pair in force: nothing is broken). The failure and its error otherwise.
    fn reload(&self, provider: &CryptoProvider) -> Result<bool, (Failure, ConfigError)> {
        let files = read(&self.field, &self.cert, &self.key)
            .map_err(|e| (Failure::Unreadable(e.to_string()), e))?;
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if files == current.files {
            return Ok(false);
        }
        let loaded = load(
            &self.field,
            &self.cert,
            &self.key,
            self.by_sni,
            files.clone(),
            provider,
        )
        .and_then(
            |loaded| match out_of_date(&self.field, &self.cert, &loaded.key) {
                Some(e) => Err(e),
                None => Ok(loaded),
            },
        );
        match loaded {
            Ok(loaded) => {
                *current = Arc::new(loaded);
                Ok(true)
            }
            Err(e) => Err((Failure::Pair(files), e)),
        }
    }
}

/// The SNI index of `pairs` as they are now: the first (`tls.cert`, `tls.key`) the default.
fn index(pairs: &[Pair]) -> names::Index {
    let loaded: Vec<Arc<Loaded>> = pairs
        .iter()
        .map(|p| Arc::clone(&p.current.lock().unwrap_or_else(PoisonError::into_inner)))
        .collect();
    // `Tls::new` made the first pair or returned an error: `pairs` is never empty.
    let (default, sni) = (&loaded[0], pairs.iter().zip(&loaded).skip(1));
    names::Index::new(
        (&default.key, &default.names),
        sni.map(|(pair, l)| (pair.field.as_str(), &l.key, l.names.as_slice())),
    )
}

// === impl Resolver ===

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(self.index.load().pick(hello.server_name())))
    }
}

fn problem(field: &str, message: String) -> ConfigError {
    ConfigError::Invalid(vec![Problem::new(field, message)])
}

/// The bytes of the pair held by `field` (`tls`, `tls.sni[1]`): its `cert` and `key` files.
fn read(field: &str, cert: &Path, key: &Path) -> Result<Files, ConfigError> {
    let read = |name: &str, path: &Path| {
        read_pem_file(path).map_err(|message| problem(&format!("{field}.{name}"), message))
    };
    both(read("cert", cert), read("key", key))
}

/// The bytes of the PEM file at `path`, which must be a regular file (a symbolic link to one, as
/// Kubernetes mounts a Secret, is followed) of at most [`crate::files::MAX_PEM_BYTES`]. Trial 17,
/// T4: `cert: /dev/zero` read until the kernel's OOM killer stopped the process (23 GB), and a
/// FIFO would block the reading thread (the watcher polls on a runtime worker) forever.
fn read_pem_file(path: &Path) -> Result<Vec<u8>, String> {
    let shown = path.display();
    crate::files::read_bounded(path, crate::files::MAX_PEM_BYTES).map_err(|e| match e.kind() {
        std::io::ErrorKind::InvalidInput => {
            format!("{shown} is not a regular file (a PEM file is expected)")
        }
        std::io::ErrorKind::InvalidData => {
            format!("{shown} {e}: a PEM certificate chain or key is far smaller; not a PEM file?")
        }
        _ => format!("cannot read {shown}: {e}"),
    })
}

/// Both results, or every problem of either, the certificate's first: a pair whose two files are
/// both wrong names both (trial report H14), so one fix does not just reveal the next.
fn both<A, B>(
    cert: Result<A, ConfigError>,
    key: Result<B, ConfigError>,
) -> Result<(A, B), ConfigError> {
    match (cert, key) {
        (Ok(cert), Ok(key)) => Ok((cert, key)),
        (cert, key) => {
            let problems = [cert.err(), key.err()]
                .iter()
                .flatten()
                .flat_map(|e| e.problems().to_vec())
                .collect();
            Err(ConfigError::Invalid(problems))
        }
    }
}

/// Loads the pair held by `field` from its `files` ([`certified_key`]) with the DNS names its
/// leaf certificate covers; a pair served `by_sni` must name at least one.
fn load(
    field: &str,
    cert: &Path,
    key: &Path,
    by_sni: bool,
    files: Files,
    provider: &CryptoProvider,
) -> Result<Loaded, ConfigError> {
    let certified = certified_key(field, cert, key, &files, provider)?;
    let names = certified
        .end_entity_cert()
        .map(|leaf| names::dns_names(leaf))
        .unwrap_or_default();
    if by_sni && names.is_empty() {
        let message = format!(
            "{}: the certificate names no DNS host (no DNS entry in its subjectAltName), so no \
             client's SNI host name could pick it; reissue it with a subjectAltName naming the \
             hosts it is for (e.g. subjectAltName=DNS:shop.example)",
            cert.display()
        );
        return Err(problem(&format!("{field}.cert"), message));
    }
    Ok(Loaded {
        key: certified,
        files,
        names,
    })
}

/// Parses the chain and key and checks that the key is the leaf's; each problem names the file
/// (`{field}.cert` or `{field}.key`, `field` the pair's: `tls`, `tls.sni[1]`) at fault.
fn certified_key(
    field: &str,
    cert_path: &Path,
    key_path: &Path,
    (cert_pem, key_pem): &Files,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, ConfigError> {
    let (chain, key) = both(
        parse_chain(field, cert_path, cert_pem),
        parse_key(field, key_path, key_pem),
    )?;
    let key_field = format!("{field}.key");
    let key_path = key_path.display();
    let signing_key = provider.key_provider.load_private_key(key).map_err(|e| {
        let message = format!("{key_path}: not a private key this proxy can sign with (RSA, ECDSA P-256/P-384 or Ed25519): {e}");
        problem(&key_field, message)
    })?;
    let key = CertifiedKey::new(chain, signing_key);
    match key.keys_match() {
        // A key type whose public half rustls cannot derive: the handshake still works.
        Ok(()) | Err(Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(Arc::new(key)),
        // rustls says "keys may not be consistent: KeyMismatch": say what that means.
        Err(Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            let cert_path = cert_path.display();
            let message = match later_match(&key) {
                // `cat ca.crt server.crt > chain.pem`: the order is the fault, not the key.
                Some(n) => format!(
                    "{key_path} is the key of certificate {n} of {} in {cert_path}, not of the \
                     first: the server's own certificate must come first, then its issuers \
                     (RFC 8446 §4.4.2)",
                    key.cert.len()
                ),
                None => format!(
                    "{key_path} cannot serve the certificate in {cert_path}: the key is not the \
                     certificate's (their public keys differ): a key from another pair, or a \
                     certificate renewed without its new key"
                ),
            };
            Err(problem(&key_field, message))
        }
        Err(e) => Err(problem(
            &key_field,
            format!(
                "{key_path} cannot serve the certificate in {}: {e}",
                cert_path.display()
            ),
        )),
    }
}

/// The position (1-based) of a certificate after the first in `key`'s chain whose public key is
/// the signing key's, if one is: a chain written issuer first.
fn later_match(key: &CertifiedKey) -> Option<usize> {
    key.cert.iter().enumerate().skip(1).find_map(|(i, cert)| {
        let alone = CertifiedKey::new(vec![cert.clone()], Arc::clone(&key.key));
        alone.keys_match().is_ok().then_some(i + 1)
    })
}

/// The problem, on `tls.cert`, of a leaf certificate that has expired or is not valid yet (RFC
/// 5280 §4.1.2.5): a renewal that renames such a file into place was swapped in with "TLS
/// certificate reloaded" and every client's handshake failed. A reload refuses it (the pair in
/// force stays, and the next poll tries again, so a certificate that becomes valid is then
/// taken); a start serves it with a warning.
fn out_of_date(field: &str, cert: &Path, key: &CertifiedKey) -> Option<ConfigError> {
    let leaf = key.end_entity_cert().ok()?;
    let message = validity::problem(leaf, std::time::SystemTime::now())?;
    Some(problem(
        &format!("{field}.cert"),
        format!("{}: {message}", cert.display()),
    ))
}

/// The certificate chain, leaf first; the leaf must be a valid X.509 certificate (RFC 5280).
/// Problems name `{field}.cert`.
fn parse_chain(
    field: &str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let (pair, field) = (field, format!("{field}.cert"));
    let path = path.display();
    let pem = without_bom(pem);
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| problem(&field, format!("{path}: bad PEM: {}", pem_problem(&e))))?;
    let Some(leaf) = chain.first() else {
        let mut message = format!("{path} holds no PEM certificate (a CERTIFICATE block)");
        if holds(pem, b"PRIVATE KEY-----") {
            message.push_str(&format!(
                ": it holds a private key; are {pair}.cert and {pair}.key swapped?"
            ));
        }
        return Err(problem(&field, message));
    };
    ParsedCertificate::try_from(leaf).map_err(|e| {
        // webpki's error is not exported to match on; its name is in the text. A v1 certificate
        // (`openssl x509 -req` without extensions makes one) parses, but has no extensions, so
        // no subjectAltName either: "its DER does not parse" sent people looking for corruption.
        let message = if format!("{e:?}").contains("UnsupportedCertVersion") {
            format!("{path}: the first certificate is an X.509 v1 certificate, which this proxy cannot serve (and clients would not accept: it has no subjectAltName); reissue it as v3 with a subjectAltName naming the host (e.g. openssl x509 -req ... -extfile with subjectAltName=DNS:shop.example)")
        } else {
            format!("{path}: the first certificate is not a valid X.509 certificate (its DER does not parse): {e}")
        };
        problem(&field, message)
    })?;
    Ok(chain)
}

/// What is wrong with a PEM file, in words: the PEM reader's own text shows the marker lines
/// it means as lists of byte values (`missing section end marker: [67, 69, 82, ...]`), which is
/// what a renewal written in place and read half-written (at a reload) got in its log line.
fn pem_problem(error: &pem::Error) -> String {
    match error {
        pem::Error::MissingSectionEnd { end_marker } => format!(
            "a PEM block is cut short: its \"-----END {}-----\" line is missing (a file \
             still being written, or truncated)",
            String::from_utf8_lossy(end_marker)
        ),
        pem::Error::IllegalSectionStart { line } => format!(
            "a malformed \"-----BEGIN\" line: {:?}",
            String::from_utf8_lossy(line)
        ),
        e => e.to_string(),
    }
}

/// `pem` without a leading UTF-8 byte order mark, which some editors (Windows Notepad) write:
/// the PEM reader does not take a `-----BEGIN` line after one, so a file that plainly holds a
/// certificate was "holds no PEM certificate". The mark means nothing in a PEM file.
fn without_bom(pem: &[u8]) -> &[u8] {
    pem.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(pem)
}

/// Whether `pem` holds `marker` anywhere (a PEM block of another kind than the one looked for).
fn holds(pem: &[u8], marker: &[u8]) -> bool {
    pem.windows(marker.len()).any(|w| w == marker)
}

/// The private key: PKCS#8 (`PRIVATE KEY`), PKCS#1 (`RSA PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`),
/// unencrypted (the proxy has no passphrase to decrypt with). Problems name `{field}.key`.
fn parse_key(field: &str, path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, ConfigError> {
    let (pair, field) = (field, format!("{field}.key"));
    let path = path.display();
    let pem = without_bom(pem);
    let encrypted = [
        &b"-----BEGIN ENCRYPTED PRIVATE KEY-----"[..],
        b"Proc-Type: 4,ENCRYPTED",
    ]
    .iter()
    .any(|marker| pem.windows(marker.len()).any(|w| w == *marker));
    if encrypted {
        let message = format!(
            "{path} holds an encrypted private key, which the proxy cannot decrypt (it has no passphrase): store it unencrypted, e.g. `openssl pkey -in {path} -out plain.key`"
        );
        return Err(problem(&field, message));
    }
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| {
        let message = match e {
            pem::Error::NoItemsFound if holds(pem, b"-----BEGIN CERTIFICATE-----") => format!("{path} holds no PEM private key (a PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block): it holds a certificate; are {pair}.cert and {pair}.key swapped?"),
            pem::Error::NoItemsFound => format!("{path} holds no PEM private key (a PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block)"),
            e => format!("{path}: bad PEM private key: {}", pem_problem(&e)),
        };
        problem(&field, message)
    })
}

#[cfg(test)]
mod tests;
