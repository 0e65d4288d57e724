//! A certificate's validity period (RFC 5280 §4.1.2.5), read from its DER, so that a reload does
//! not swap in a certificate that every client would refuse.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Why the certificate `der` cannot be served at `now`, if it cannot: it has expired (`notAfter`
/// is past) or is not valid yet (`notBefore` is ahead), in words naming the time in UTC. `None`
/// when it is valid at `now`, and when its validity cannot be read (rustls already checked that
/// the DER parses; what it does not understand is left to the client).
pub(crate) fn problem(der: &[u8], now: SystemTime) -> Option<String> {
    let (not_before, not_after) = validity(der)?;
    let shown = |t: u64| humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(t));
    let now = now.duration_since(UNIX_EPOCH).ok()?.as_secs();
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

/// `(notBefore, notAfter)` in seconds since the Unix epoch: Certificate → tbsCertificate →
/// (an optional `[0]` version, serialNumber, signature, issuer) → validity (RFC 5280 §4.1).
fn validity(der: &[u8]) -> Option<(u64, u64)> {
    let (_, certificate, _) = tlv(der)?;
    let (_, mut tbs, _) = tlv(certificate)?;
    let (tag, _, rest) = tlv(tbs)?;
    if tag == 0xa0 {
        tbs = rest;
    }
    for _ in 0..3 {
        let (_, _, rest) = tlv(tbs)?;
        tbs = rest;
    }
    let (_, validity, _) = tlv(tbs)?;
    let (before_tag, before, rest) = tlv(validity)?;
    let (after_tag, after, _) = tlv(rest)?;
    Some((time(before_tag, before)?, time(after_tag, after)?))
}

/// One DER element of `input`: its tag, its content and what follows it (X.690 §8.1, definite
/// lengths of up to four bytes, which a certificate never exceeds).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, after) = rest.split_at(count);
        rest = after;
        bytes.iter().fold(0, |len, &b| (len << 8) | usize::from(b))
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// A UTCTime (`YYMMDDHHMMSSZ`, tag 0x17; years 50–99 are 19xx) or GeneralizedTime
/// (`YYYYMMDDHHMMSSZ`, tag 0x18), as RFC 5280 §4.1.2.5 requires them, in seconds since the epoch.
fn time(tag: u8, text: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(text).ok()?.strip_suffix('Z')?;
    let (year, rest) = match (tag, text.len()) {
        (0x17, 12) => {
            let yy: u64 = text.get(..2)?.parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        (0x18, 14) => (text.get(..4)?.parse().ok()?, &text[4..]),
        _ => return None,
    };
    let field = |i: usize| -> Option<u64> { rest.get(i..i + 2)?.parse().ok() };
    let (month, day) = (field(0)?, field(2)?);
    let (hour, minute, second) = (field(4)?, field(6)?, field(8)?);
    let days = days_from_civil(year, month, day)?;
    Some(days * 86_400 + hour * 3_600 + minute * 60 + second)
}

/// Days from 1970-01-01 to the given date of the proleptic Gregorian calendar (Howard Hinnant's
/// `days_from_civil`), for years from 1970 on; `None` for an impossible month or day.
fn days_from_civil(year: u64, month: u64, day: u64) -> Option<u64> {
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || year < 1970 {
        return None;
    }
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).checked_sub(719_468)
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

    fn at(year: u64, month: u64, day: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(days_from_civil(year, month, day).unwrap() * 86_400)
    }

    #[test]
    fn the_epoch_and_known_dates_convert_exactly() {
        assert_eq!(days_from_civil(1970, 1, 1), Some(0));
        assert_eq!(days_from_civil(2000, 3, 1), Some(11_017));
        assert_eq!(days_from_civil(2026, 12, 3), Some(20_790));
        assert_eq!(days_from_civil(2026, 13, 3), None);
    }

    #[test]
    fn an_expired_and_a_future_certificate_are_named_and_a_current_one_is_not() {
        // UTCTime before 2050, GeneralizedTime from 2050 on (RFC 5280 §4.1.2.5).
        let der = certificate((2020, 1, 1), (2020, 1, 2));
        assert_eq!(
            problem(&der, at(2026, 12, 3)).as_deref(),
            Some(
                "the certificate expired at 2020-01-02T00:00:00Z (its notAfter), so TLS clients \
                 would refuse it"
            )
        );
        assert_eq!(problem(&der, at(2020, 1, 1)), None);
        let der = certificate((2051, 6, 1), (2052, 1, 1));
        let found = problem(&der, at(2026, 12, 3)).unwrap();
        assert!(
            found.starts_with("the certificate is not valid before 2051-06-01T00:00:00Z"),
            "{found}"
        );
        assert_eq!(problem(&der, at(2051, 7, 1)), None);
        assert_eq!(problem(b"\x30\x03garbage", at(2026, 12, 3)), None);
    }
}
