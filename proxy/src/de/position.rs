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
///   5`, the route's first key), or nowhere for the top-level map. In a flow map (`{ a: 1, a: 2
///   }`) both are placed by line and column (`at line 1 column 10 (first at line 1 column 3)`).
///   Where the key cannot be found in the text (a key written otherwise, `? a`), the map's start
///   stands, and is given even for the top level (`at line 1 column 1`).
pub fn yaml_words_in(text: &str, error: &Error) -> String {
    let words = super::yaml_words(error);
    if let Some(said) = scalar_document(text, &words) {
        return said;
    }
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
        return with_tab_hint(words, text, error);
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
    if let Some((first, second)) = occurrences(text, line, column, key) {
        return format!("{said} at line {second} column {column} (first at line {first})");
    }
    match flow_occurrences(text, line, column, key) {
        Some(((l1, c1), (l2, c2))) => {
            format!("{said} at line {l2} column {c2} (first at line {l1} column {c1})")
        }
        None => format!("{said} at line {line} column {column}"),
    }
}

/// The words for a file whose whole document is one scalar where a map belongs (a token file
/// given by mistake): what it is and its size, not its content, with what was expected and any
/// position the reader gave (`the file is a YAML string of 22 bytes, not a map of spec settings
/// (...)`). The reader's `invalid type: string "sk_live_...", expected ...` echoed a secret into
/// CI logs (session 44, user44b). `None` for anything else: `words`, the reader's, stand.
fn scalar_document(text: &str, words: &str) -> Option<String> {
    // The content comes before the reader's last `, expected `; what was expected after it.
    let (_, expected) = words
        .strip_prefix("invalid type: ")?
        .rsplit_once(", expected ")?;
    let what = match serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text).ok()? {
        serde_yaml_ng::Value::String(s) => format!("a YAML string of {} bytes", s.len()),
        serde_yaml_ng::Value::Number(_) => "a YAML number".to_owned(),
        serde_yaml_ng::Value::Bool(_) => "a YAML boolean".to_owned(),
        _ => return None,
    };
    Some(format!("the file is {what}, not {expected}"))
}

/// `words`, and when the reader stopped at a tab, that YAML indents with spaces: "found
/// character that cannot start any token" did not say which character (a tab is invisible in
/// most editors). YAML 1.2 §6.1: tabs are not indentation.
fn with_tab_hint(words: String, text: &str, error: &Error) -> String {
    let at_tab = error
        .location()
        .and_then(|at| text.get(at.index()..))
        .is_some_and(|rest| rest.starts_with('\t'));
    if at_tab {
        format!("{words}; the character is a tab: YAML indents with spaces only")
    } else {
        words
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

/// The 1-based (line, column) of the first two keys `key` of the flow map (`{ a: 1, a: 2 }`)
/// that begins at `line`, `column`, or at the first thing after comments and blank space from
/// there (the top-level map, which the reader gives no position). A scan of the map's tokens,
/// not a second YAML parser: it tells keys from values by the `{` or `,` before them at the
/// map's own depth, skips nested collections, quoted scalars and comments, and gives up (`None`)
/// on what it does not know, leaving the map's start as the position.
fn flow_occurrences(
    text: &str,
    line: usize,
    column: usize,
    key: &str,
) -> Option<((usize, usize), (usize, usize))> {
    let mut scan = Scan::at(text, line, column)?;
    scan.skip_blank();
    if scan.next()? != '{' {
        return None;
    }
    let (mut depth, mut expecting_key, mut found) = (1usize, true, Vec::new());
    while depth > 0 {
        scan.skip_blank();
        let at = (scan.line, scan.column);
        match scan.peek()? {
            '{' | '[' => {
                scan.next();
                depth += 1;
                expecting_key = false;
            }
            '}' | ']' => {
                scan.next();
                depth -= 1;
            }
            ',' => {
                scan.next();
                expecting_key = depth == 1;
            }
            ':' | '?' => {
                scan.next();
            }
            _ => {
                let token = scan.scalar()?;
                if expecting_key && depth == 1 && token == key {
                    found.push(at);
                    if let [first, second] = found[..] {
                        return Some((first, second));
                    }
                }
                expecting_key = false;
            }
        }
    }
    None
}

/// A cursor over a text's characters that keeps its 1-based line and column.
struct Scan<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    line: usize,
    column: usize,
}

// === impl Scan ===

impl<'a> Scan<'a> {
    /// A cursor at `line`, `column` (1-based, in characters) of `text`.
    fn at(text: &'a str, line: usize, column: usize) -> Option<Scan<'a>> {
        let line_start: usize = text
            .split_inclusive('\n')
            .take(line.checked_sub(1)?)
            .map(str::len)
            .sum();
        let first = text.get(line_start..)?.split_inclusive('\n').next()?;
        let skip: usize = first
            .chars()
            .take(column.checked_sub(1)?)
            .map(char::len_utf8)
            .sum();
        let start = line_start + skip;
        Some(Scan {
            chars: text.get(start..)?.chars().peekable(),
            line,
            column,
        })
    }

    fn peek(&mut self) -> Option<char> {
        self.chars.peek().copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.chars.next()?;
        if c == '\n' {
            (self.line, self.column) = (self.line + 1, 1);
        } else {
            self.column += 1;
        }
        Some(c)
    }

    /// Past spaces, line breaks and comments (`#` to the line's end; here always after a blank
    /// or a line's start, since scalars are read whole by [`Scan::scalar`]).
    fn skip_blank(&mut self) {
        while let Some(c) = self.peek() {
            match c {
                ' ' | '\t' | '\r' | '\n' => {
                    self.next();
                }
                '#' => {
                    while self.peek().is_some_and(|c| c != '\n') {
                        self.next();
                    }
                }
                _ => return,
            }
        }
    }

    /// A scalar's text: quoted (`"a"`, `'a'`; `\"`, `\\` and `''` unescaped) or plain, which
    /// ends at a flow indicator, at `:` before a blank or an indicator, or at ` #`. `None` for
    /// an unterminated quote or an escape other than those two (then the key may be spelled
    /// otherwise, and the map's start is a truer place than a guess).
    fn scalar(&mut self) -> Option<String> {
        let mut text = String::new();
        match self.peek()? {
            quote @ ('"' | '\'') => {
                self.next();
                loop {
                    match (self.next()?, quote) {
                        ('\\', '"') => match self.next()? {
                            escaped @ ('"' | '\\') => text.push(escaped),
                            _ => return None,
                        },
                        ('\'', '\'') if self.peek() == Some('\'') => {
                            self.next();
                            text.push('\'');
                        }
                        (c, q) if c == q => return Some(text),
                        (c, _) => text.push(c),
                    }
                }
            }
            _ => {
                while let Some(c) = self.peek() {
                    let ends = match c {
                        ',' | '{' | '}' | '[' | ']' | '\n' => true,
                        ':' => {
                            let mut after = self.chars.clone();
                            after.next();
                            after.peek().is_none_or(|n| {
                                matches!(n, ' ' | '\t' | '\r' | '\n' | ',' | '}' | ']')
                            })
                        }
                        '#' => text.ends_with([' ', '\t']),
                        _ => false,
                    };
                    if ends {
                        break;
                    }
                    text.push(c);
                    self.next();
                }
                Some(text.trim_end().to_owned())
            }
        }
    }
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
mod tests;
