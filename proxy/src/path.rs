//! Request paths normalised before route matching, so that one resource has one spelling.
//!
//! Without it, `/public/../admin`, `/%61dmin` and `//admin` would miss a route on `/admin` while the
//! backend (which resolves them) serves `/admin`: the route that decides the split, the override
//! header and stickiness would not be the one the backend applies. The steps, in order:
//!
//! 1. Percent-encoding (RFC 3986 §6.2.2.1–2): a triplet for an unreserved character (`A-Z a-z
//!    0-9 - . _ ~`, §2.3) is decoded; every other triplet is kept, with its hex digits in upper
//!    case (`%2f` → `%2F`: an encoded slash stays a character of its segment, never a separator, as
//!    Envoy's default `KEEP_UNCHANGED`). A `%` not followed by two hex digits is an error.
//! 2. Slashes are merged (`//` → `/`), as Envoy's `merge_slashes` and nginx's default
//!    `merge_slashes on` do. RFC 3986 treats `//` as an empty segment, but common backends
//!    (nginx, most web frameworks' routers) ignore empty segments, so keeping them would let
//!    `//admin` reach `/admin` past a route on `/admin`.
//! 3. Dot segments are removed (RFC 3986 §5.2.4), after step 1 so that `%2E%2E` counts as `..`.
//!    A `..` that would climb above the root is an error, not silently dropped as §5.2.4 does:
//!    such a path comes from a client probing for traversal, never from a link.
//!
//! The backend receives the normalised path (as Envoy's `normalize_path` does), so that what the
//! route matched is what the backend serves. Errors are answered 400 and reach no backend. The
//! query is never changed. A request-target that is not a path (`OPTIONS *`) is left alone.

use std::borrow::Cow;

use http::uri::{PathAndQuery, Uri};

/// Why a path cannot be normalised (answered 400).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// A `%` not followed by two hexadecimal digits (RFC 3986 §2.1).
    #[error("{}", self.as_str())]
    BadPercent,
    /// More `..` segments than there are segments above them (RFC 3986 §5.2.4).
    #[error("{}", self.as_str())]
    AboveRoot,
}

impl PathError {
    /// The message for the 400 answer (static, for [`crate::Error::BadRequest`]).
    pub fn as_str(self) -> &'static str {
        match self {
            PathError::BadPercent => "malformed percent-encoding in the path",
            PathError::AboveRoot => "the path climbs above the root with \"..\"",
        }
    }
}

/// The normal form of an absolute `path` (steps in the module doc); `path` itself, borrowed, when it
/// is already normal or does not start with `/`.
///
/// # Errors
/// [`PathError::BadPercent`], [`PathError::AboveRoot`].
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') || is_normal(path) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path)?;
    let merged = merge_slashes(&decoded);
    let normal = remove_dot_segments(&merged)?;
    Ok(if normal == path {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(normal)
    })
}

/// Replaces `uri`'s path by its normal form, keeping scheme, authority and query.
///
/// # Errors
/// As [`normalize`].
pub(crate) fn normalize_uri(uri: &mut Uri) -> Result<(), PathError> {
    let Cow::Owned(path) = normalize(uri.path())? else {
        return Ok(());
    };
    let path_and_query = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    let mut parts = std::mem::take(uri).into_parts();
    // Only unreserved characters were decoded, so the result parses whenever the input did.
    parts.path_and_query =
        Some(PathAndQuery::from_maybe_shared(path_and_query).map_err(|_| PathError::BadPercent)?);
    *uri = Uri::from_parts(parts).map_err(|_| PathError::BadPercent)?;
    Ok(())
}

/// The fast path, for a `path` that starts with `/`: no `%`, no `//`, no `.` or `..` segment.
///
/// One pass over the bytes, run on every request: three searches (`%`, `//`, then the segments)
/// cost ~270 instructions for the path `/` alone (callgrind, docs/bench-2026-12-02-instructions.md).
fn is_normal(path: &str) -> bool {
    // The current segment: EMPTY right after a `/`, 1 or 2 while it is `.` or `..`, OTHER once it
    // holds anything else (the text before the first `/` counts as OTHER: a leading `/` is no `//`).
    const EMPTY: u8 = 0;
    const OTHER: u8 = 3;
    let mut segment = OTHER;
    for &byte in path.as_bytes() {
        match byte {
            b'%' => return false,
            // `//`, or a `.` or `..` segment ending.
            b'/' if segment != OTHER => return false,
            b'/' => segment = EMPTY,
            b'.' if segment != OTHER => segment += 1,
            _ => segment = OTHER,
        }
    }
    !matches!(segment, 1 | 2)
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

fn hex(byte: u8) -> Option<u8> {
    (byte as char).to_digit(16).map(|d| d as u8)
}

/// Step 1: decode unreserved triplets, upper-case the others.
fn decode_unreserved(path: &str) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            // Request paths are ASCII (the http crate rejects anything else), so byte = char.
            out.push(bytes[i] as char);
            i += 1;
            continue;
        }
        let high = bytes.get(i + 1).copied().and_then(hex);
        let low = bytes.get(i + 2).copied().and_then(hex);
        let (Some(high), Some(low)) = (high, low) else {
            return Err(PathError::BadPercent);
        };
        let byte = high << 4 | low;
        if is_unreserved(byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
        i += 3;
    }
    Ok(out)
}

/// Step 2: `//` → `/`.
fn merge_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if c != '/' || !out.ends_with('/') {
            out.push(c);
        }
    }
    out
}

/// Step 3: RFC 3986 §5.2.4 on a path with single slashes; a final `.` or `..` leaves a trailing
/// `/` (`/a/b/..` → `/a/`).
fn remove_dot_segments(path: &str) -> Result<String, PathError> {
    let segments: Vec<&str> = path[1..].split('/').collect();
    let last = segments.len() - 1;
    let mut out: Vec<&str> = Vec::with_capacity(segments.len());
    for (i, segment) in segments.into_iter().enumerate() {
        match segment {
            "." => {}
            ".." => {
                out.pop().ok_or(PathError::AboveRoot)?;
            }
            other => out.push(other),
        }
        if i == last && matches!(segment, "." | "..") {
            out.push("");
        }
    }
    Ok(format!("/{}", out.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_3986_dot_segment_examples_are_removed() {
        // RFC 3986 §5.2.4's own examples, and §5.4's normal examples resolved against /b/c/d;p.
        assert_eq!(normalize("/a/b/c/./../../g").unwrap(), "/a/g");
        assert_eq!(normalize("/mid/content=5/../6").unwrap(), "/mid/6");
        assert_eq!(normalize("/b/c/./g").unwrap(), "/b/c/g");
        assert_eq!(normalize("/b/c/.").unwrap(), "/b/c/");
        assert_eq!(normalize("/b/c/..").unwrap(), "/b/");
        assert_eq!(normalize("/b/c/../..").unwrap(), "/");
        assert_eq!(normalize("/b/c/g.").unwrap(), "/b/c/g.");
        assert_eq!(normalize("/b/c/..g").unwrap(), "/b/c/..g");
    }

    #[test]
    fn unreserved_triplets_are_decoded_and_others_upper_cased() {
        assert_eq!(normalize("/%61dmin/%7Euser").unwrap(), "/admin/~user");
        assert_eq!(normalize("/a%2fb%3f").unwrap(), "/a%2Fb%3F");
        assert_eq!(normalize("/a/%2e%2E/b").unwrap(), "/b");
        assert_eq!(normalize("/%2F..").unwrap(), "/%2F..");
        assert_eq!(normalize("/caf%C3%A9").unwrap(), "/caf%C3%A9");
    }

    #[test]
    fn slashes_are_merged() {
        assert_eq!(normalize("//admin").unwrap(), "/admin");
        assert_eq!(normalize("/a///b//").unwrap(), "/a/b/");
        assert_eq!(normalize("/a//..//b").unwrap(), "/b");
    }

    #[test]
    fn normal_paths_are_borrowed_unchanged() {
        for path in ["/", "/api", "/api/v1/", "/a.b/..c", "*"] {
            assert!(
                matches!(normalize(path).unwrap(), Cow::Borrowed(p) if p == path),
                "{path}"
            );
        }
    }

    /// The one-pass check answers as the three searches it replaced, for every path of up to
    /// eight bytes (a `/`, then seven over the characters that matter, `/`, `.`, `%`, and one
    /// that does not).
    #[test]
    fn the_fast_path_check_agrees_with_its_definition_on_every_short_path() {
        fn by_definition(path: &str) -> bool {
            !path.contains('%')
                && !path.contains("//")
                && !path
                    .split('/')
                    .any(|segment| segment == "." || segment == "..")
        }
        let mut paths = vec![String::from("/")];
        assert!(is_normal("/"));
        let mut checked = 0;
        for _ in 0..7 {
            let mut longer = Vec::new();
            for path in &paths {
                for c in ['/', '.', '%', 'a'] {
                    let path = format!("{path}{c}");
                    assert_eq!(is_normal(&path), by_definition(&path), "{path:?}");
                    checked += 1;
                    longer.push(path);
                }
            }
            paths = longer;
        }
        assert_eq!(checked, 4 + 16 + 64 + 256 + 1024 + 4096 + 16384);
    }

    #[test]
    fn paths_above_the_root_and_bad_percent_encoding_are_errors() {
        for path in ["/..", "/../a", "/a/../..", "/%2e%2e/etc/passwd", "//../x"] {
            assert_eq!(normalize(path), Err(PathError::AboveRoot), "{path}");
        }
        for path in ["/%", "/%4", "/%zz", "/a%g1"] {
            assert_eq!(normalize(path), Err(PathError::BadPercent), "{path}");
        }
    }

    #[test]
    fn the_uri_keeps_its_query_and_authority() {
        let mut uri: Uri = "http://shop.example/a/../b%7e?x=%2e%2e&y=/../"
            .parse()
            .unwrap();
        normalize_uri(&mut uri).unwrap();
        assert_eq!(uri, "http://shop.example/b~?x=%2e%2e&y=/../");
        let mut uri: Uri = "/ok?q".parse().unwrap();
        normalize_uri(&mut uri).unwrap();
        assert_eq!(uri, "/ok?q");
    }
}
