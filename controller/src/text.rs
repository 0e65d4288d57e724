//! Bounding text that goes into messages: values and answers that other parties wrote (an
//! annotation, an API server's or a gate's answer, a name in a spec) can be any length and hold
//! line breaks, and a message that carries them whole fills logs and breaks the limits of the
//! fields it goes to (a condition's 32,768 characters, an annotation's 256 KiB).
//!
//! Lengths are counted in characters (Unicode code points, as a Kubernetes schema's `maxLength`
//! counts them), never in bytes, so a cut never splits a character.

/// The first `max` characters of `text` when it has more, `None` when it has at most `max`.
/// Borrows from `text`; no allocation.
pub fn head(text: &str, max: usize) -> Option<&str> {
    text.char_indices().nth(max).map(|(at, _)| &text[..at])
}

/// `text` on one line: every run of white space (line breaks, a pretty-printed body's
/// indentation) as one space, none at either end.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_cuts_at_a_character_count_never_inside_a_character() {
        assert_eq!(head("abc", 3), None);
        assert_eq!(head("abc", 5), None);
        assert_eq!(head("abcd", 3), Some("abc"));
        assert_eq!(head("ééé", 2), Some("éé"), "two characters, four bytes");
        assert_eq!(head("", 0), None);
        assert_eq!(head("a", 0), Some(""));
    }

    #[test]
    fn one_line_joins_runs_of_white_space() {
        assert_eq!(one_line("  a\n\n  b\tc  "), "a b c");
        assert_eq!(one_line("\n"), "");
    }
}
