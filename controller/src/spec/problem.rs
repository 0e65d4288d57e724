//! Why a spec was rejected: parse errors and validation problems with their field paths.

use std::fmt;

/// Why a spec was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The YAML did not parse into a spec; the message includes line and column.
    #[error("spec does not parse: {0}")]
    Parse(String),
    /// The spec parsed but breaks rules; every problem found, in field order.
    #[error("{}", Problems(.0))]
    Invalid(Vec<Problem>),
}

/// One validation problem: the field path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Field path, e.g. `rollout.steps[2]` or `green.instances`.
    pub path: String,
    /// Lowercase message, e.g. `120% is above 100%`.
    pub message: String,
}

impl fmt::Display for Problem {
    /// `path: message`, a long value quoted in the message cut to its start and length
    /// ([`crossfade_proxy::shown::with_short_quotes`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let message = crossfade_proxy::shown::with_short_quotes(&self.message);
        write!(f, "{}: {message}", self.path)
    }
}

/// Displays problems one per line.
struct Problems<'a>(&'a [Problem]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

// === impl SpecError ===

impl SpecError {
    /// [`SpecError::Parse`] with a YAML reader's message, in a YAML user's words: serde calls
    /// `null` (`~`, or a key with no value) a "unit value", which no spec writer wrote
    /// (`rollout.analysis: invalid type: null, expected a map of analysis settings ...`; trial
    /// report 4, F7). The fields with their own readers say so themselves (`de::keyword`). An
    /// unknown field always has its line and column, and the known field it was probably meant to
    /// be when one is close (`; did you mean `listen`?`; [`crossfade_proxy::de::yaml_words`]).
    pub fn parse(error: serde_yaml_ng::Error) -> SpecError {
        SpecError::Parse(crossfade_proxy::de::yaml_words(&error))
    }

    /// [`SpecError::parse`] for `error`, met reading `text` into a spec or a rollout file; when
    /// `text` is not well-formed YAML at all (an unclosed `[`), the syntax error is reported
    /// instead (`YAML syntax: did not find expected ',' or ']' ... at line 2 column 1`): a typed
    /// reader meets the sequence before the syntax error and would report a wrong type there
    /// (`blue: invalid type: sequence, expected a map ...`; trial 12, M13). A second document
    /// and a key given twice are placed by their lines ([`crossfade_proxy::de::yaml_words_in`]).
    pub fn parse_in(text: &str, error: serde_yaml_ng::Error) -> SpecError {
        match serde_yaml_ng::from_str::<serde::de::IgnoredAny>(text) {
            Err(syntax) if !syntax.to_string().contains("more than one document") => {
                SpecError::Parse(format!("YAML syntax: {syntax}"))
            }
            _ => SpecError::Parse(crossfade_proxy::de::yaml_words_in(text, &error)),
        }
    }

    /// `Ok` without problems, else [`SpecError::Invalid`] with all of them.
    pub(super) fn check(problems: Vec<Problem>) -> Result<(), SpecError> {
        if problems.is_empty() {
            Ok(())
        } else {
            Err(SpecError::Invalid(problems))
        }
    }
}
