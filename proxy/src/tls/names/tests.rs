//! SNI picks by RFC 6125 §6.4's rules, over certificates made here (rcgen).

use super::*;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// A certificate for `names` and its signing key, as the proxy loads a pair, with the names
/// [`dns_names`] reads from it.
fn pair(names: &[&str]) -> (Arc<CertifiedKey>, Vec<String>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let cert = rcgen::CertificateParams::new(names)
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let der = cert.der().clone();
    let pkcs8: PrivateKeyDer<'static> = PrivatePkcs8KeyDer::from(key.serialize_der()).into();
    let signing = ring::default_provider()
        .key_provider
        .load_private_key(pkcs8)
        .unwrap();
    let found = dns_names(&der);
    (Arc::new(CertifiedKey::new(vec![der], signing)), found)
}

/// Which of `pairs` (by position, 0 the default) a client sending `name` gets.
fn picked(index: &Index, pairs: &[&Arc<CertifiedKey>], name: Option<&str>) -> usize {
    let key = index.pick(name);
    pairs.iter().position(|p| Arc::ptr_eq(p, key)).unwrap()
}

#[test]
fn dns_names_are_the_subject_alternative_names_lowercase_without_ip_addresses() {
    let (_, names) = pair(&["Shop.Example.", "*.api.example", "127.0.0.1"]);
    assert_eq!(names, ["shop.example", "*.api.example"]);
}

#[test]
fn exact_beats_wildcard_a_wildcard_covers_one_label_and_the_rest_get_the_default() {
    let (default, default_names) = pair(&["default.example", "a.api.example"]);
    let (shop, shop_names) = pair(&["shop.example", "www.shop.example"]);
    let (api, api_names) = pair(&["*.api.example"]);
    let index = Index::new(
        (&default, &default_names),
        [
            ("tls.sni[0]", &shop, shop_names.as_slice()),
            ("tls.sni[1]", &api, api_names.as_slice()),
        ]
        .into_iter(),
    );
    let pairs = [&default, &shop, &api];
    let pick = |name| picked(&index, &pairs, name);
    assert_eq!(pick(Some("shop.example")), 1);
    assert_eq!(pick(Some("WWW.Shop.Example")), 1, "case does not matter");
    assert_eq!(pick(Some("shop.example.")), 1, "nor a trailing dot");
    assert_eq!(
        pick(Some("b.api.example")),
        2,
        "the wildcard covers one label"
    );
    assert_eq!(
        pick(Some("a.api.example")),
        0,
        "the default's exact name beats a wildcard"
    );
    assert_eq!(pick(Some("x.b.api.example")), 0, "but not two labels");
    assert_eq!(pick(Some("api.example")), 0, "nor none");
    assert_eq!(pick(Some("other.example")), 0);
    assert_eq!(pick(None), 0, "no SNI: the default");
    assert!(index.overlaps().is_empty(), "{:?}", index.overlaps());
}

#[test]
fn a_name_two_sni_pairs_cover_goes_to_the_earlier_and_is_reported() {
    let (default, default_names) = pair(&["shop.example"]);
    let (first, first_names) = pair(&["shop.example", "*.shop.example"]);
    let (second, second_names) = pair(&["*.shop.example", "only.example"]);
    let index = Index::new(
        (&default, &default_names),
        [
            ("tls.sni[0]", &first, first_names.as_slice()),
            ("tls.sni[1]", &second, second_names.as_slice()),
        ]
        .into_iter(),
    );
    let pairs = [&default, &first, &second];
    let pick = |name| picked(&index, &pairs, name);
    assert_eq!(
        pick(Some("shop.example")),
        1,
        "an SNI pair beats the default"
    );
    assert_eq!(pick(Some("a.shop.example")), 1);
    assert_eq!(pick(Some("only.example")), 2);
    assert_eq!(
        index.overlaps(),
        [
            "tls.sni[1]'s certificate names *.shop.example, which tls.sni[0]'s names too: \
          clients asking for *.shop.example get tls.sni[0]'s"
        ]
    );
}
