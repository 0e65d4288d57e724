//! Where in a file a YAML reader's error is, when the reader does not say: a second document
//! (`---`), and a key given twice, which the reader places at the start of its map, or nowhere
//! for the file's top-level map (trial 18's report: a duplicate `listen:` at the top of a proxy
//! config and a second document got no line at all).

use serde_yaml_ng::Error;

/// [`super::yaml_words`] for `error`, met reading `text`, with the line of what it is about:
/// - a second YAML document says where it begins (`more than one YAML document: a second begins
///   at line 5 ...`; the reader gives no position);
/// - a key given twice (a struct's `duplicate field `listen``, [`super::unique_map`]'s `"PORT"
///   is given twice`, a map's `duplicate entry with key "x"`) is placed at its second
///   occurrence, and the first named (`duplicate field `listen` at line 7 column 1 (first at
///   line 1)`); the reader places it at the start of its map (`routes[0]: ... at line 4 column
///   5`, the route's first key), or nowhere for the top-level map. Where the key cannot be
///   found in the text (a flow map `{ a: 1, a: 2 }`), the map's start stands, and is given even
///   for the top level (`at line 1 column 1`).
pub fn yaml_words_in(text: &str, error: &Error) -> String {
    let words = super::yaml_words(error);
    if words.contains(MORE_THAN_ONE) {
        return match second_document(text) {
            Some(line) => format!(
                "more than one YAML document: a second begins at line {line}, and this file holds \
                 one (a `---` line starts a new document: remove it, or put what follows it in a \
                 file of its own)"
            ),
            None => words,
        };
    }
    let Some(key) = repeated_key(&words) else {
        return words;
    };
    let (line, column) = error
        .location()
        .map_or((1, 1), |at| (at.line(), at.column()));
    let said = words
        .rsplit_once(" at line ")
        .filter(|(_, at)| {
            at.split_once(" column ")
                .is_some_and(|(l, c)| numbers(&[l, c]))
        })
        .map_or(words.as_str(), |(said, _)| said);
    match occurrences(text, line, column, key) {
        Some((first, second)) => {
            format!("{said} at line {second} column {column} (first at line {first})")
        }
        None => format!("{said} at line {line} column {column}"),
    }
}

/// serde_yaml_ng's words for a text holding two documents.
const MORE_THAN_ONE: &str = "more than one document";

fn numbers(texts: &[&str]) -> bool {
    texts
        .iter()
        .all(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
}

/// The key a duplicate-key message names: serde's ``duplicate field `listen` ``, this crate's
/// `"PORT" is given twice` ([`super::unique_map`]), serde_yaml_ng's `duplicate entry with key
/// "x"` (a `Mapping`).
fn repeated_key(words: &str) -> Option<&str> {
    if let Some((_, rest)) = words.split_once("duplicate field `") {
        return rest.split_once('`').map(|(key, _)| key);
    }
    if let Some((before, _)) = words.split_once("\" is given twice") {
        return before.rsplit_once('"').map(|(_, key)| key);
    }
    let (_, rest) = words.split_once("duplicate entry with key \"")?;
    rest.split_once('"').map(|(key, _)| key)
}

/// The 1-based line where a second YAML document of `text` begins: the second `---` marker, or
/// the first one after content, or content after a `...` end marker. Document markers stand at
/// the start of a line, where no scalar can hold them (YAML 1.2 §9.1, `c-forbidden`), so a
/// plain look at the lines finds them.
fn second_document(text: &str) -> Option<usize> {
    let marker = |line: &str, mark: &str| {
        line.strip_prefix(mark)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t']))
    };
    let (mut begun, mut ended) = (false, false);
    for (i, line) in text.lines().enumerate() {
        let content = !line.trim().is_empty() && !line.trim_start().starts_with('#');
        if marker(line, "---") {
            if begun {
                return Some(i + 1);
            }
            begun = true;
        } else if marker(line, "...") {
            ended = begun;
        } else if content && !line.starts_with('%') {
            if ended {
                return Some(i + 1);
            }
            begun = true;
        }
    }
    None
}

/// The 1-based lines of the first two occurrences of `key` among the keys of the block map whose
/// first key is at `line`, `column` (1-based): lines that hold a key at that column (`key:`,
/// `"key":`, `'key':`), up to the first line indented less, which ends the map. `None` when
/// `key` is not found twice there (a flow map, a key written otherwise).
fn occurrences(text: &str, line: usize, column: usize, key: &str) -> Option<(usize, usize)> {
    let indent = column.checked_sub(1)?;
    let mut found = Vec::new();
    for (i, written) in text.lines().enumerate().skip(line.checked_sub(1)?) {
        let trimmed = written.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let at = if i + 1 == line {
            written.get(indent..)?
        } else {
            let depth = written.len() - trimmed.len();
            if depth < indent {
                break;
            }
            if depth > indent {
                continue;
            }
            trimmed
        };
        if is_key(at, key) {
            found.push(i + 1);
            if let [first, second] = found[..] {
                return Some((first, second));
            }
        }
    }
    None
}

/// Whether `at` begins with `key` written as a map key: plain, or in double or single quotes,
/// then `:` and a space or the line's end.
fn is_key(at: &str, key: &str) -> bool {
    let after = at
        .strip_prefix(key)
        .or_else(|| at.strip_prefix('"')?.strip_prefix(key)?.strip_prefix('"'))
        .or_else(|| at.strip_prefix('\'')?.strip_prefix(key)?.strip_prefix('\''));
    after
        .and_then(|rest| rest.trim_start_matches([' ', '\t']).strip_prefix(':'))
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t']))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Config {
        listen: Option<String>,
        admin: Option<String>,
        routes: Option<Vec<Route>>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Route {
        name: Option<String>,
        path_prefix: Option<String>,
        #[serde(default, deserialize_with = "crate::de::unique_map")]
        env: std::collections::BTreeMap<String, String>,
    }

    fn words(text: &str) -> String {
        yaml_words_in(text, &serde_yaml_ng::from_str::<Config>(text).unwrap_err())
    }

    #[test]
    fn a_top_level_key_given_twice_is_placed_at_its_second_occurrence() {
        let text = "listen: a\n# a comment\nadmin: b\n\n\"listen\": c\n";
        assert_eq!(
            words(text),
            "duplicate field `listen` at line 5 column 1 (first at line 1)"
        );
        // A comment before the first key: the reader placed it at the map's start then.
        let text = "# config\nadmin: b\nroutes: []\nadmin: c\n";
        assert_eq!(
            words(text),
            "duplicate field `admin` at line 4 column 1 (first at line 2)"
        );
    }

    #[test]
    fn a_nested_key_given_twice_is_placed_at_its_second_occurrence() {
        let text = "routes:\n  - name: a\n    path_prefix: /a\n  - name: b\n    env:\n      \
                    X: '1'\n    path_prefix: /b\n    path_prefix: /c\n";
        assert_eq!(
            words(text),
            "routes[1]: duplicate field `path_prefix` at line 8 column 5 (first at line 7)"
        );
        let text = "routes:\n  - name: a\n    env:\n      PORT: '1'\n      OTHER: '2'\n      \
                    'PORT': '3'\n";
        let said = words(text);
        assert!(
            said.ends_with(
                "is given twice: a key may appear once (the later value would \
                            silently replace the earlier) at line 6 column 7 (first at line 4)"
            ),
            "{said}"
        );
    }

    #[test]
    fn a_key_given_twice_in_a_flow_map_keeps_the_maps_position() {
        let said = words("routes: [{ name: a, name: b }]\n");
        assert_eq!(
            said,
            "routes[0]: duplicate field `name` at line 1 column 10"
        );
        let said = words("{ listen: a, listen: b }\n");
        assert_eq!(said, "duplicate field `listen` at line 1 column 1");
    }

    #[test]
    fn a_second_document_is_named_by_its_first_line() {
        for (text, line) in [
            ("listen: a\n---\nadmin: b\n", 2),
            ("---\nlisten: a\n---\nadmin: b\n", 3),
            ("# head\n--- # first\nlisten: a\n--- \n", 4),
            ("listen: a\n...\nadmin: b\n", 3),
            ("%YAML 1.2\n---\nlisten: a\n---\n", 4),
        ] {
            let said = words(text);
            let begins = format!("more than one YAML document: a second begins at line {line},");
            assert!(said.starts_with(&begins), "{text:?}: {said}");
        }
        assert_eq!(
            second_document("---\nlisten: '---'\nx: |\n  --- no\n"),
            None
        );
    }

    #[test]
    fn a_key_is_found_plain_or_quoted_and_only_as_a_key() {
        assert!(is_key("listen: a", "listen"));
        assert!(is_key("\"listen\" : a", "listen"));
        assert!(is_key("'listen':", "listen"));
        assert!(!is_key("listener: a", "listen"));
        assert!(!is_key("listen:a", "listen"));
        assert!(!is_key("- listen: a", "listen"));
    }
}
