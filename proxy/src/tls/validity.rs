//! A certificate's validity period (RFC 5280 §4.1.2.5), read from its DER by `x509-parser`, so
//! that a reload does not swap in a certificate that every client would refuse.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Why the certificate `der` cannot be served at `now`, if it cannot: it has expired (`notAfter`
/// is past) or is not valid yet (`notBefore` is ahead), in words naming the time in UTC. `None`
/// when it is valid at `now`, and when its validity cannot be read (rustls already checked that
/// the DER parses; what it does not understand is left to the client).
pub(crate) fn problem(der: &[u8], now: SystemTime) -> Option<String> {
    let (not_before, not_after) = validity(der)?;
    let shown = |t: i64| match u64::try_from(t) {
        Ok(secs) => {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
        }
        Err(_) => format!("{t} s before 1970"),
    };
    let now = i64::try_from(now.duration_since(UNIX_EPOCH).ok()?.as_secs()).ok()?;
    if now > not_after {
        Some(format!(
            "the certificate expired at {} (its notAfter), so TLS clients would refuse it",
            shown(not_after)
        ))
    } else if now < not_before {
        Some(format!(
            "the certificate is not valid before {} (its notBefore), so TLS clients would refuse \
             it until then",
            shown(not_before)
        ))
    } else {
        None
    }
}

/// `(notBefore, notAfter)` in seconds since the Unix epoch.
fn validity(der: &[u8]) -> Option<(i64, i64)> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der).ok()?;
    let validity = certificate.validity();
    Some((
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(not_before: (i32, u8, u8), not_after: (i32, u8, u8)) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn at(date: &str) -> SystemTime {
        humantime::parse_rfc3339(&format!("{date}T00:00:00Z")).unwrap()
    }

    #[test]
    fn an_expired_and_a_future_certificate_are_named_and_a_current_one_is_not() {
        // UTCTime before 2050, GeneralizedTime from 2050 on (RFC 5280 §4.1.2.5).
        let der = certificate((2020, 1, 1), (2020, 1, 2));
        assert_eq!(
            problem(&der, at("2026-12-03")).as_deref(),
            Some(
                "the certificate expired at 2020-01-02T00:00:00Z (its notAfter), so TLS clients \
                 would refuse it"
            )
        );
        assert_eq!(problem(&der, at("2020-01-01")), None);
        let der = certificate((2051, 6, 1), (2052, 1, 1));
        let found = problem(&der, at("2026-12-03")).unwrap();
        assert!(
            found.starts_with("the certificate is not valid before 2051-06-01T00:00:00Z"),
            "{found}"
        );
        assert_eq!(problem(&der, at("2051-07-01")), None);
        assert_eq!(problem(b"\x30\x03garbage", at("2026-12-03")), None);
    }
}
