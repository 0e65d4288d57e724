//! A YAML reader's error with its position always given and, for a misspelt key, the known key it
//! most likely meant (trial 9, I15: `lisen:` on the first line said neither).

/// `error` in a user's words ([`super::user_words`]), always with its line and column, and with
/// `; did you mean `listen`?` after an unknown field (or an unknown variant of a keyword such as
/// `on_inconclusive`) that is a small edit away from exactly one known field (or variant) of the
/// place it was written, or differs from it only in letter case (see [`suggestion`]). A YAML 1.1
/// boolean (`yes`, `off`) where a boolean belongs is told to be written `true` or `false`.
///
/// serde_yaml_ng leaves out a position at line 1 column 1 (the document's first key), so the
/// first line's misspelt key came without one while every other line's had it; the position is
/// added from [`serde_yaml_ng::Error::location`] for an unknown field.
pub fn yaml_words(error: &serde_yaml_ng::Error) -> String {
    let mut text = super::user_words(error);
    if yaml_1_1_boolean(&text) {
        return format!(
            "{text}; write true or false (YAML 1.2, which this reader follows, reads yes, no, on \
             and off as text)"
        );
    }
    if !text.contains("unknown field `") && !text.contains("unknown variant `") {
        return text;
    }
    if let (Some(at), false) = (error.location(), text.contains(" at line ")) {
        text = format!("{text} at line {} column {}", at.line(), at.column());
    }
    if text.contains("unknown field `<<`") {
        // A YAML 1.1 merge key, which the reader does not apply (trial 17, T13: the common
        // idiom got only "unknown field `<<`").
        text = format!(
            "{text}; YAML merge keys (`<<: *anchor`) are not supported: write the keys out (an \
             alias `*anchor` for a whole value works)"
        );
    } else if let Some(known) = suggestion(&text) {
        text = format!("{text}; did you mean `{known}`?");
    }
    text
}

/// Whether `message` refuses a YAML 1.1 boolean (`trust_forwarded_for: yes`, `enabled: off`)
/// where a boolean belongs: YAML 1.2 reads those words as strings, so the reader's `invalid type:
/// string "yes", expected a boolean` did not say what to write (trial 19).
fn yaml_1_1_boolean(message: &str) -> bool {
    let Some((_, rest)) = message.split_once("invalid type: string \"") else {
        return false;
    };
    let Some((word, rest)) = rest.split_once('"') else {
        return false;
    };
    let old = ["yes", "no", "on", "off", "y", "n"];
    rest.starts_with(", expected a boolean") && old.contains(&word.to_ascii_lowercase().as_str())
}

/// The known field an `unknown field `X`, expected one of `a`, `b`` message most likely meant
/// ([`closest`] among the fields the message lists); likewise the value an `unknown variant `X``
/// message meant (`on_inconclusive: Pause` → `pause`; trial 18, T17).
pub fn suggestion(message: &str) -> Option<&str> {
    let (_, rest) = message
        .split_once("unknown field `")
        .or_else(|| message.split_once("unknown variant `"))?;
    let (unknown, rest) = rest.split_once('`')?;
    let (_, expected) = rest.split_once("expected")?;
    closest(unknown, expected.split('`').skip(1).step_by(2))
}

/// The one of `known` that `unknown` most likely meant: the one equal to it but for letter case
/// (`Routes`, `ROUTES` → `routes`; keys are case-sensitive), else the one closest in edits
/// (insert, delete, replace, swap two neighbours) when it is at most 2 edits away, fewer than
/// half of `unknown`'s length, and no other is as close. `None` when `unknown` is itself one of
/// `known`, or nothing is close enough to tell.
pub fn closest<'a>(unknown: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let known: Vec<&'a str> = known.into_iter().collect();
    if known.contains(&unknown) {
        return None;
    }
    let mut cased = known.iter().filter(|k| k.eq_ignore_ascii_case(unknown));
    if let (Some(k), None) = (cased.next(), cased.next()) {
        return Some(*k);
    }
    let mut best: Option<(usize, &'a str)> = None;
    let mut tie = false;
    for known in known {
        let d = edits(unknown, known);
        match best {
            Some((b, _)) if d > b => {}
            Some((b, _)) if d == b => tie = true,
            _ => (best, tie) = (Some((d, known)), false),
        }
    }
    let (d, known) = best?;
    let close = d <= 2 && 2 * d < unknown.chars().count();
    (close && !tie).then_some(known)
}

/// Optimal string alignment distance: insertions, deletions, substitutions and swaps of two
/// neighbouring characters, each one edit (`hodl` → `hold` is 1).
fn edits(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = d;
        }
    }
    rows[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_count_insertions_deletions_replacements_and_swaps() {
        assert_eq!(edits("lisen", "listen"), 1);
        assert_eq!(edits("hodl", "hold"), 1);
        assert_eq!(edits("listen_on", "listen"), 3);
        assert_eq!(edits("", "admin"), 5);
        assert_eq!(edits("admin", "admin"), 0);
    }

    #[test]
    fn a_close_known_field_is_suggested_and_a_far_or_ambiguous_one_is_not() {
        let message = |unknown: &str| {
            format!("unknown field `{unknown}`, expected one of `listen`, `admin`, `routes`, `via`")
        };
        assert_eq!(suggestion(&message("lisen")), Some("listen"));
        assert_eq!(suggestion(&message("admn")), Some("admin"));
        assert_eq!(suggestion(&message("route")), Some("routes"));
        assert_eq!(suggestion(&message("bogus")), None);
        assert_eq!(suggestion(&message("vi")), None, "1 edit of 2 letters");
        let two = "unknown field `by`, expected `from` or `to`";
        assert_eq!(suggestion(two), None);
        let tie = "unknown field `cat`, expected `bat` or `car`";
        assert_eq!(suggestion(tie), None, "two equally close");
        assert_eq!(suggestion("invalid type: string \"x\""), None);
        // Keys are case-sensitive: a mis-cased one is named whatever its distance (trial 18, T10).
        assert_eq!(suggestion(&message("ROUTES")), Some("routes"));
        assert_eq!(suggestion(&message("Via")), Some("via"));
        assert_eq!(closest("routes", ["route", "routes"]), None, "a known key");
        let variant = "unknown variant `Pause`, expected `pause` or `rollback`";
        assert_eq!(suggestion(variant), Some("pause"));
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Config {
        listen: Option<String>,
        admin: Option<String>,
        nested: Option<Nested>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Nested {
        hold: Option<String>,
    }

    fn error(yaml: &str) -> String {
        yaml_words(&serde_yaml_ng::from_str::<Config>(yaml).unwrap_err())
    }

    /// Trial 19: `trust_forwarded_for: yes` got "expected a boolean", not what to write.
    #[test]
    fn a_yaml_1_1_boolean_is_told_to_be_written_true_or_false() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Flags {
            on: Option<bool>,
            name: Option<String>,
        }
        let said = |yaml: &str| yaml_words(&serde_yaml_ng::from_str::<Flags>(yaml).unwrap_err());
        assert_eq!(
            said("name: x\non: Yes\n"),
            "on: invalid type: string \"Yes\", expected a boolean at line 2 column 5; write true \
             or false (YAML 1.2, which this reader follows, reads yes, no, on and off as text)"
        );
        assert!(said("on: off").ends_with("reads yes, no, on and off as text)"));
        assert!(
            !said("on: maybe").contains("write true"),
            "not a YAML 1.1 word"
        );
    }

    #[test]
    fn an_unknown_first_key_has_its_position_and_a_suggestion() {
        assert_eq!(
            error("lisen: x\nadmin: y\n"),
            "unknown field `lisen`, expected one of `listen`, `admin`, `nested` at line 1 \
             column 1; did you mean `listen`?"
        );
        assert_eq!(
            error("admin: y\nlisen: x\n"),
            "unknown field `lisen`, expected one of `listen`, `admin`, `nested` at line 2 \
             column 1; did you mean `listen`?"
        );
        assert_eq!(
            error("nested:\n  hodl: 5s\n"),
            "nested: unknown field `hodl`, expected `hold` at line 2 column 3; did you mean \
             `hold`?"
        );
        // Other errors are left as the reader said them.
        let other = error("listen: [1]\n");
        assert!(
            other.starts_with("listen: invalid type: sequence"),
            "{other}"
        );
        assert!(!other.contains("did you mean"), "{other}");
    }
}
