//! Which certificate pair a TLS client gets, by the host name it sends in SNI (RFC 6066 §3) and
//! the DNS names each pair's leaf certificate covers in its subjectAltName (RFC 5280 §4.2.1.6),
//! matched as RFC 6125 §6.4 says a client matches them: case aside, exactly, or by a wildcard
//! `*.example.com` standing for exactly one label (`a.example.com`, not `example.com` nor
//! `a.b.example.com`).

use std::collections::HashMap;
use std::sync::Arc;

use tokio_rustls::rustls::sign::CertifiedKey;
use x509_parser::extensions::GeneralName;

/// The DNS names in the subjectAltName of the certificate `der`, lowercase, without a trailing
/// dot; empty when it has none or cannot be read (rustls already checked that the DER parses).
/// The subject's common name is not read: RFC 6125 §6.4.4 lets a client fall back to it only
/// when the certificate has no subjectAltName, and the clients that matter no longer do.
pub(crate) fn dns_names(der: &[u8]) -> Vec<String> {
    let Ok((_, certificate)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let Ok(Some(names)) = certificate.subject_alternative_name() else {
        return Vec::new();
    };
    names
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some(normalized(dns).into_owned()),
            _ => None,
        })
        .filter(|name| !name.is_empty())
        .collect()
}

/// `name` lowercase, without a trailing dot: how names are compared.
fn normalized(name: &str) -> std::borrow::Cow<'_, str> {
    let name = name.strip_suffix('.').unwrap_or(name);
    match name.bytes().any(|b| b.is_ascii_uppercase()) {
        true => std::borrow::Cow::Owned(name.to_ascii_lowercase()),
        false => std::borrow::Cow::Borrowed(name),
    }
}

/// The pairs of a listener, indexed by the names their certificates cover. Built at start and
/// at each reload that swapped a pair; read at each handshake.
#[derive(Debug)]
pub(crate) struct Index {
    /// The first pair (`tls.cert`, `tls.key`): for a client without SNI or whose name no pair
    /// covers. Its position is 0.
    default: Arc<CertifiedKey>,
    /// By exact name: the pair's position (1 for `tls.sni[0]`, ...) and its key.
    exact: HashMap<String, (usize, Arc<CertifiedKey>)>,
    /// By the domain a wildcard stands under: `*.example.com` as `example.com`.
    wildcard: HashMap<String, (usize, Arc<CertifiedKey>)>,
    /// Names that more than one pair covers the same way, in words (logged at warn).
    overlaps: Vec<String>,
}

impl Index {
    /// Indexes the `default` pair (`tls.cert`, `tls.key`: its key and names) and the `sni`
    /// pairs (`(field, key, names)`, in order). An exact name beats a wildcard; a name covered the
    /// same way by two pairs goes to the earlier `tls.sni` pair, and to the default pair only when
    /// no `tls.sni` pair covers it (the pairs in `tls.sni` are there to be picked by name).
    pub(crate) fn new<'a>(
        default: (&'a Arc<CertifiedKey>, &'a [String]),
        sni: impl Iterator<Item = (&'a str, &'a Arc<CertifiedKey>, &'a [String])>,
    ) -> Index {
        let mut index = Index {
            default: Arc::clone(default.0),
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            overlaps: Vec::new(),
        };
        let mut holders: HashMap<(bool, &str), &str> = HashMap::new();
        let sni = sni
            .enumerate()
            .map(|(i, (field, key, names))| (i + 1, field, key, names));
        let ordered = sni.chain(std::iter::once((0, "tls", default.0, default.1)));
        for (position, field, key, names) in ordered {
            for name in names {
                let (wildcard, under) = match name.strip_prefix("*.") {
                    Some(under) => (true, under),
                    None => (false, name.as_str()),
                };
                match holders.get(&(wildcard, under)) {
                    Some(holder) if *holder != field && field != "tls" => {
                        index.overlaps.push(format!(
                            "{field}'s certificate names {name}, which {holder}'s names too: \
                             clients asking for {name} get {holder}'s"
                        ));
                    }
                    Some(_) => {}
                    None => {
                        holders.insert((wildcard, under), field);
                        let map = match wildcard {
                            true => &mut index.wildcard,
                            false => &mut index.exact,
                        };
                        map.insert(under.to_owned(), (position, Arc::clone(key)));
                    }
                }
            }
        }
        index
    }

    /// The pair for a client that sent `server_name` in SNI (`None`: no SNI).
    #[inline]
    pub(crate) fn pick(&self, server_name: Option<&str>) -> &Arc<CertifiedKey> {
        match server_name {
            Some(name) if !(self.exact.is_empty() && self.wildcard.is_empty()) => self
                .find(&normalized(name))
                .map_or(&self.default, |(_, key)| key),
            _ => &self.default,
        }
    }

    /// The position of the pair a client that sent `server_name` in SNI gets: 0 for the first
    /// pair (`tls.cert`, `tls.key`), `N + 1` for `tls.sni[N]`. Positions, unlike keys, stay the
    /// same across reloads (pairs are added or removed only by a restart), so a connection's pick
    /// can be compared with a later request's host.
    pub(crate) fn position(&self, server_name: &str) -> usize {
        self.find(&normalized(server_name))
            .map_or(0, |(position, _)| *position)
    }

    fn find(&self, name: &str) -> Option<&(usize, Arc<CertifiedKey>)> {
        self.exact.get(name).or_else(|| {
            let (_, under) = name.split_once('.')?;
            self.wildcard.get(under)
        })
    }

    /// Names that more than one `tls.sni` pair covers the same way, in words.
    pub(crate) fn overlaps(&self) -> &[String] {
        &self.overlaps
    }
}

#[cfg(test)]
mod tests;
