//! A user's value quoted into an error, kept short: a value of up to [`MAX_WHOLE_BYTES`] bytes is
//! quoted whole (`"abc" is not a percentage`; a PromQL query or a URL still reads whole), a longer
//! one by its first [`MAX_SHOWN_BYTES`] bytes and its length
//! (`"xxxx…"… (100000 bytes) is not a percentage`), as `via.pseudonym` says `200002 bytes: must
//! be 1 to 64 bytes`. A 100,000-character `weight` made a 100 KB error line at `crossfade check`,
//! at start and in the log at each SIGHUP, and a 3 MB file given to `crossfade check` a 4 MB one
//! (new-user audit, D4).
//!
//! [`shown`] quotes one value; [`with_short_quotes`] shortens every long quoted value in a
//! message made elsewhere (serde's `invalid type: string "..."`, a validation problem), so every
//! config, spec and resource error passes through one of the two. [`outside`] says a number is
//! outside its allowed range in words (`0 is outside 1 to 10000`), for the config, spec and CLI
//! flag range errors (session 43: they printed Rust's `1..=65535`); the admin API words its own.

use std::borrow::Cow;
use std::fmt;

/// The most bytes of a value an error quotes whole: enough for a PromQL query, a JSONPath or a
/// URL a user wrote, far below a runaway value or a file given by mistake.
pub const MAX_WHOLE_BYTES: usize = 256;

/// The bytes a longer value is quoted by (its start), as many as a `via.pseudonym` may hold.
pub const MAX_SHOWN_BYTES: usize = 64;

/// `value` as an error quotes it: `{value:?}` when it is at most [`MAX_WHOLE_BYTES`] bytes, else
/// its first [`MAX_SHOWN_BYTES`] bytes quoted then `… (N bytes)`, N its whole length.
pub fn shown(value: &str) -> Shown<'_> {
    Shown(value)
}

/// A value quoted for an error ([`shown`]).
#[derive(Clone, Copy, Debug)]
pub struct Shown<'a>(&'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = self.0;
        if value.len() <= MAX_WHOLE_BYTES {
            return write!(f, "{value:?}");
        }
        let mut end = MAX_SHOWN_BYTES;
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        write!(f, "{:?}… ({} bytes)", &value[..end], value.len())
    }
}

/// `message` with each double-quoted value in it (written as Rust's `{:?}` writes a string) that
/// is longer than [`MAX_WHOLE_BYTES`] bytes once unescaped put as [`shown`] puts it; shorter
/// quotes, and a quote that never closes, are left as they are.
pub fn with_short_quotes(message: &str) -> Cow<'_, str> {
    if message.len() <= MAX_WHOLE_BYTES {
        return Cow::Borrowed(message);
    }
    let mut out = String::new();
    let mut rest = message;
    let mut changed = false;
    while let Some(open) = rest.find('"') {
        let Some((value, len)) = quoted(&rest[open + 1..]) else {
            break;
        };
        out.push_str(&rest[..open]);
        if value.len() > MAX_WHOLE_BYTES {
            out.push_str(&shown(&value).to_string());
            changed = true;
        } else {
            out.push_str(&rest[open..open + 1 + len + 1]);
        }
        rest = &rest[open + 1 + len + 1..];
    }
    if !changed {
        return Cow::Borrowed(message);
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// The value of a quote whose opening `"` was just before `text`, unescaped, and the length in
/// `text` of what it was written as (up to its closing `"`); `None` when it never closes.
fn quoted(text: &str) -> Option<(String, usize)> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => return Some((value, at)),
            '\\' => value.push(escaped(&mut chars)?),
            c => value.push(c),
        }
    }
    None
}

/// The character an escape stands for, its `\` just read from `chars`.
fn escaped(chars: &mut std::str::CharIndices<'_>) -> Option<char> {
    Some(match chars.next()?.1 {
        'n' => '\n',
        't' => '\t',
        'r' => '\r',
        '0' => '\0',
        'u' => {
            let hex: String = chars
                .by_ref()
                .map(|(_, c)| c)
                .skip(1)
                .take_while(|c| *c != '}')
                .collect();
            u32::from_str_radix(&hex, 16)
                .ok()
                .and_then(char::from_u32)
                .unwrap_or(char::REPLACEMENT_CHARACTER)
        }
        other => other,
    })
}

/// `<value> is outside <lo> to <hi>[ <unit>]`: a number beyond the range a field or flag takes,
/// both ends included, in an operator's words rather than Rust's `lo..=hi`. `unit` (`bytes`,
/// `basis points`) follows the range and is left out when empty; a caller puts the field path
/// before the message.
pub fn outside(
    value: impl fmt::Display,
    lo: impl fmt::Display,
    hi: impl fmt::Display,
    unit: &str,
) -> String {
    let space = if unit.is_empty() { "" } else { " " };
    format!("{value} is outside {lo} to {hi}{space}{unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_outside_its_range_is_said_in_words_with_its_unit() {
        assert_eq!(
            outside(12000, 0, 10000, "basis points"),
            "12000 is outside 0 to 10000 basis points"
        );
        assert_eq!(outside(0, 1, 65535, ""), "0 is outside 1 to 65535");
    }

    #[test]
    fn a_short_value_is_quoted_whole_and_a_long_one_by_its_start_and_length() {
        assert_eq!(shown("abc").to_string(), "\"abc\"");
        let long = "x".repeat(100_000);
        let start = "x".repeat(MAX_SHOWN_BYTES);
        assert_eq!(
            shown(&long).to_string(),
            format!("\"{start}\"… (100000 bytes)")
        );
        // Cut at a character boundary: 'é' is two bytes.
        let accented = "é".repeat(200);
        let start = "é".repeat(MAX_SHOWN_BYTES / 2);
        assert_eq!(
            shown(&accented).to_string(),
            format!("\"{start}\"… (400 bytes)")
        );
        // A query a user wrote, up to MAX_WHOLE_BYTES, is quoted whole.
        let query = "q".repeat(MAX_WHOLE_BYTES);
        assert_eq!(shown(&query).to_string(), format!("{query:?}"));
    }

    #[test]
    fn only_long_quotes_of_a_message_are_shortened() {
        let short = "routes[0].green.weight: \"abc\" is not a percentage (expected e.g. 25 or \"12.5%\") at line 4 column 22";
        assert_eq!(with_short_quotes(short), short);
        let long = "\u{1}".repeat(1000);
        let message = format!("invalid type: string {long:?}, expected \"a map\" at line 1");
        let start = "\u{1}".repeat(MAX_SHOWN_BYTES);
        assert_eq!(
            with_short_quotes(&message),
            format!("invalid type: string {start:?}… (1000 bytes), expected \"a map\" at line 1")
        );
        let whole = format!("bad query \"{}\" here", "z".repeat(MAX_WHOLE_BYTES));
        assert_eq!(with_short_quotes(&whole), whole);
        let unclosed = format!("\"{}", "y".repeat(300));
        assert_eq!(with_short_quotes(&unclosed), unclosed);
    }
}
