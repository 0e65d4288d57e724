//! Placing a YAML reader's errors in the text: duplicate keys in block and flow maps, a second document.

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

/// Trial 19 left: a flow map's duplicate was placed at the map's start (`{`).
#[test]
fn a_key_given_twice_in_a_flow_map_is_placed_at_its_second_occurrence() {
    let said = words("routes: [{ name: a, name: b }]\n");
    assert_eq!(
        said,
        "routes[0]: duplicate field `name` at line 1 column 21 (first at line 1 column 12)"
    );
    let said = words("{ listen: a, listen: b }\n");
    assert_eq!(
        said,
        "duplicate field `listen` at line 1 column 14 (first at line 1 column 3)"
    );
    // Nested collections, quoted values that hold `, name:`, comments and line breaks are
    // skipped; a quoted key is found.
    let text = "# head\n{ routes: [{ name: x }], admin: \"a, listen: b\",\n  listen: 'c', # listen: d\n  \"listen\": e }\n";
    assert_eq!(
        words(text),
        "duplicate field `listen` at line 4 column 3 (first at line 3 column 3)"
    );
    let said =
        words("routes:\n  - { name: a, path_prefix: 'x:y', env: { A: '1' },\n      name: b }\n");
    assert_eq!(
        said,
        "routes[0]: duplicate field `name` at line 3 column 7 (first at line 2 column 7)"
    );
    let said = words("routes: [{ name: a, env: { A: '1', B: '2', A: '3' } }]\n");
    assert!(
        said.ends_with("at line 1 column 44 (first at line 1 column 28)"),
        "{said}"
    );
}

#[test]
fn a_flow_map_key_written_otherwise_keeps_the_maps_position() {
    // An explicit key (`? name`) is read, but an escape other than \" and \\ is not.
    let said = words("routes: [{ name: a, \"n\\x61me\": b }]\n");
    assert!(said.ends_with("at line 1 column 10"), "{said}");
    assert_eq!(
        flow_occurrences("{ ? a : 1, a: 2 }", 1, 1, "a"),
        Some(((1, 5), (1, 12)))
    );
    assert_eq!(flow_occurrences("{ a: 1 }", 1, 1, "a"), None);
    assert_eq!(flow_occurrences("a: 1\na: 2\n", 1, 1, "a"), None);
    assert_eq!(flow_occurrences("{ a: 1, \"a", 1, 1, "a"), None);
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

/// A tab before a key (an editor's indentation) was "found character that cannot start any
/// token" with no word of which character.
#[test]
fn a_tab_where_indentation_goes_is_named() {
    let said = words("listen: 127.0.0.1:8080\nroutes:\n\t- name: web\n");
    assert!(
        said.contains("cannot start any token")
            && said.ends_with("; the character is a tab: YAML indents with spaces only"),
        "{said}"
    );
    let said = words("listen: [\n");
    assert!(!said.contains("tab"), "{said}");
}

/// Session 44 (user44b): a token file given as a config was echoed (`invalid type: string
/// "sk_live_...", expected ...`); a document that is one scalar is named by its kind and size.
#[test]
fn a_scalar_document_is_named_by_its_kind_not_its_content() {
    for (text, kind) in [
        ("sk_live_SECRET, expected x\n", "a YAML string of 26 bytes"),
        ("123456789\n", "a YAML number"),
        ("true\n", "a YAML boolean"),
    ] {
        let said = words(text);
        assert!(
            said.starts_with(&format!("the file is {kind}, not a map of fields")),
            "{text:?}: {said}"
        );
        for secret in ["SECRET", "123456789", "true"] {
            assert!(!said.contains(secret), "{text:?}: {said}");
        }
    }
    // A map or a list says what it always said: it holds no content to leak.
    assert!(
        words("[]\n").starts_with("invalid type: sequence"),
        "{}",
        words("[]\n")
    );
}
