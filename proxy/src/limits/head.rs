//! The HTTP/1.1 head limits applied to HTTP/2 requests: at most [`MAX_HEADER_LINES`] header
//! fields and `limits.max_header_bytes` bytes, both judged on the request's HTTP/1.1 form.
//!
//! hyper refuses an HTTP/1.1 head with more than 100 header lines or over `max_buf_size` (431,
//! RFC 6585 §5) before the proxy sees it. h2 has no field count at all, and its
//! `SETTINGS_MAX_HEADER_LIST_SIZE` counts 32 bytes more per field (RFC 9113 §6.5.2) and answers
//! 431 itself, below hyper, with no hook to count it. So an HTTP/2 request is judged here, as
//! its HTTP/1.1 form would be by hyper, and answered 431 (counted `bad_head`), while h2's own
//! limit is set higher ([`h2_header_list_cap`]) as a memory bound only.

use http::header::{COOKIE, HOST};
use http::request::Parts;

use crate::error::Error;

/// hyper's HTTP/1.1 limit on header lines (`DEFAULT_MAX_HEADERS`), which HTTP/2 requests get too.
pub(crate) const MAX_HEADER_LINES: usize = 100;

/// The request line's fixed bytes in HTTP/1.1 form: two spaces, `HTTP/1.1` and CRLF.
const REQUEST_LINE_EXTRA: usize = 2 + 8 + 2;

/// A header line's fixed bytes: `": "` and CRLF.
const LINE_EXTRA: usize = 4;

/// The `SETTINGS_MAX_HEADER_LIST_SIZE` h2 enforces itself for `max_header_bytes`: the bytes
/// of a list whose HTTP/1.1 form fits, counted as RFC 9113 §6.5.2 does (32 more per field, at
/// most [`MAX_HEADER_LINES`] of them and the four pseudo-header fields), so that [`check`] is
/// what refuses (and counts) such a list, not h2. Above it h2 answers 431 itself, uncounted.
pub(crate) fn h2_header_list_cap(max_header_bytes: usize) -> u32 {
    let cap = max_header_bytes + (MAX_HEADER_LINES + 4) * 32 + 64;
    u32::try_from(cap).unwrap_or(u32::MAX)
}

/// Refuses an HTTP/2 request whose HTTP/1.1 form has more than [`MAX_HEADER_LINES`] header lines
/// or more than `max_header_bytes` bytes of head: request line, `Host` from `:authority` when
/// there is no `host` field, each field a line, the `cookie` crumbs joined into one line (RFC
/// 9113 §8.2.3), and the empty line. [`Error::HeadTooLarge`] (431) when it does.
pub(crate) fn check(parts: &Parts, max_header_bytes: usize) -> Result<(), Error> {
    let headers = &parts.headers;
    // Cheap first: most requests are far below both limits.
    let request_line = parts.method.as_str().len()
        + parts.uri.path_and_query().map_or(1, |p| p.as_str().len())
        + REQUEST_LINE_EXTRA;
    let authority = parts.uri.authority().map_or(0, |a| a.as_str().len());
    let (mut lines, mut bytes, mut crumbs) = (0usize, request_line + 2, 0usize);
    if authority > 0 && !headers.contains_key(HOST) {
        lines += 1;
        bytes += "host".len() + authority + LINE_EXTRA;
    }
    for (name, value) in headers {
        if name == COOKIE {
            crumbs += 1;
            bytes += value.len() + 2;
        } else {
            lines += 1;
            bytes += name.as_str().len() + value.len() + LINE_EXTRA;
        }
    }
    if crumbs > 0 {
        // `cookie: ` and CRLF once, one `; ` fewer than crumbs.
        lines += 1;
        bytes += "cookie".len() + LINE_EXTRA - 2;
    }
    if lines > MAX_HEADER_LINES {
        return Err(Error::HeadTooLarge("more than 100 header fields"));
    }
    if bytes > max_header_bytes {
        return Err(Error::HeadTooLarge(
            "request head over limits.max_header_bytes",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use http::Request;

    use super::*;

    fn parts(fields: &[(&str, &str)]) -> Parts {
        let mut request = Request::get("http://shop.test/a?b");
        for (name, value) in fields {
            request = request.header(*name, *value);
        }
        let mut parts = request.body(()).unwrap().into_parts().0;
        parts.version = http::Version::HTTP_2;
        parts
    }

    /// The HTTP/1.1 form's length, written out.
    fn h1_len(fields: &[(&str, &str)]) -> usize {
        let mut head = String::from("GET /a?b HTTP/1.1\r\nhost: shop.test\r\n");
        for (name, value) in fields {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.len() + 2
    }

    #[test]
    fn the_byte_count_is_the_http1_forms_length() {
        let fields = [("x-a", "1"), ("accept", "text/plain")];
        let exact = h1_len(&fields);
        assert!(check(&parts(&fields), exact).is_ok());
        assert!(matches!(
            check(&parts(&fields), exact - 1),
            Err(Error::HeadTooLarge(_))
        ));
    }

    #[test]
    fn cookie_crumbs_count_as_one_joined_line() {
        let crumbs: Vec<(&str, &str)> = vec![("cookie", "a=1"); 150];
        assert!(check(&parts(&crumbs), 64 * 1024).is_ok());
        let joined = vec!["a=1"; 150].join("; ");
        let exact = h1_len(&[("cookie", &joined)]);
        assert!(check(&parts(&crumbs), exact).is_ok());
        assert!(check(&parts(&crumbs), exact - 1).is_err());
    }

    #[test]
    fn a_hundred_lines_pass_and_one_more_is_refused() {
        let names: Vec<String> = (0..100).map(|i| format!("x-{i}")).collect();
        let mut fields: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "y")).collect();
        // `host` from the authority is one of the 100 lines, as in HTTP/1.1.
        fields.pop();
        assert!(check(&parts(&fields), 64 * 1024).is_ok());
        fields.push(("x-last", "y"));
        let refused = check(&parts(&fields), 64 * 1024).unwrap_err();
        assert_eq!(
            refused.status(),
            http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
    }

    #[test]
    fn the_h2_cap_lets_every_list_this_check_passes_through() {
        // 100 lines of 32-byte overhead each, plus the pseudo-header fields, fit under the cap.
        let limit = 16 * 1024;
        let cap = h2_header_list_cap(limit) as usize;
        assert!(cap >= limit + 104 * 32, "{cap}");
    }
}
