//! Property tests (proptest) of the spec parser, [`RunSpec::from_yaml`], with the invariants its
//! fuzz target asserts, run through the same function (`fuzz/checks/spec_parser.rs`): it never
//! panics, and a spec it accepts validates again, serialises and parses back equal. Documents are
//! built from valid fragments (every one of which must be accepted), then mutated (values swapped
//! for bad ones, lines dropped, repeated, moved, re-indented, cut), plus arbitrary text.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, subsequence, Index};

use super::RunSpec;
use crate::fuzz_checks::spec_parser::check;

/// Durations short enough for every step and window to fit the shortest progress deadline (2m).
const DURATIONS: [&str; 6] = ["10ms", "250ms", "1s", "5s", "30s", "1m"];

/// Optional top-level entries, each valid on its own and with the others (one per key is used).
const TOP: [&str; 8] = [
    "listen: 0.0.0.0:8081",
    "admin: 127.0.0.1:9902",
    "route: { name: shop, hosts: [shop.example, \"a.b.example\"], path_prefix: /api/v1 }",
    "route:\n  health: { path: /ready, interval: 2s, timeout: 1s, rise: 1, fall: 3 }\n  outlier: { consecutive_failures: 5, consecutive_5xx: 2, base_ejection: 2s, max_ejection: 1m }",
    "route: { breaker: { max_error_rate: \"50%\", window: 10s, min_requests: 20 } }",
    "route: { outlier: { base_ejection: 1s, max_ejection: 1s } }",
    "state_file: /var/lib/crossfade/state.json",
    "state_file: state.json",
];

/// Optional entries of a workload, valid for both kinds.
const WORKLOAD_ANY: [&str; 6] = [
    "  name: shop-v1",
    "  protocol: h2c",
    "  protocol: http1",
    "  readiness: { path: /ready, timeout: 500ms, interval: 100ms, deadline: 20s }",
    "  stop_grace: 0s",
    "  readiness:\n    path: /\n    deadline: 1m",
];

/// Optional entries of a command workload only.
const WORKLOAD_COMMAND: [&str; 3] = [
    "  env: { RUST_LOG: info, BIND: \"127.0.0.1:{port}\" }",
    "  workdir: /srv/shop",
    "  env: { PORT: \"{port}\" }",
];

/// Optional analysis entries (one per key is used).
const ANALYSIS: [&str; 15] = [
    "    max_error_rate: \"0.5%\"",
    "    max_error_rate: 0",
    "    max_p99: 250ms",
    "    max_p99_ratio: 1.5",
    "    min_requests: 1",
    "    max_inconclusive: 4",
    "    on_inconclusive: pause",
    "    judge: sequential",
    "    alpha: 0.005",
    "    beta: 0.5",
    "    max_error_rate_increase: \"100%\"",
    "    max_latency_increase: 10ms",
    "    max_latency_increase: \"20%\"",
    "    fail_when_worse_than: allowance",
    "    checks:\n      - name: error-ratio\n        prometheus: { address: \"http://127.0.0.1:9090\", query: 'sum(rate(x{backend=\"{{ preview }}\"}[{{interval}}]))' }\n        max: 0.01\n      - name: kpi\n        web: { url: \"https://kpi.example/v/{{ preview_version }}\", json_path: \"$.data.rate\", headers: { Authorization: \"Bearer t\" } }\n        min: 0.9\n        timeout: 2s",
];

/// Optional rollout entries besides steps, hold and analysis (one per key is used).
const ROLLOUT: [&str; 4] = [
    "  progress_deadline: 3m",
    "  drain_timeout: 1s",
    "  drain_timeout: 15s",
    "  gates:\n    - { name: load-test, at: before_step, url: \"http://127.0.0.1:8080/run\", on_reject: rollback, timeout: 30s }\n    - { name: approval, at: before_promotion, url: \"https://approve.example/ask\", headers: { X-Team: t }, headers_from: [{ name: X-Token, value_from: { env: APPROVE_TOKEN } }] }",
];

/// The analysis entry that judges a first 0% step.
const SHADOW: &str =
    "    shadow: { max_mismatch_rate: \"2%\", min_compared: 20, mirror: { compare_headers: [etag] } }";

/// What a mutation puts in place of a duration: zero, below the 10ms minimum, the minimum, above
/// the progress deadline, above the one-year bound, a bare number.
const DURATION_VALUES: [&str; 9] = ["0s", "1ns", "9ms", "10ms", "5s", "2m", "1h", "367d", "100"];

/// What a mutation puts in place of a number or percentage: zero, negative, at and above 100,
/// finer than a basis point, beyond `u32`, a bare rate.
const NUMBER_VALUES: [&str; 12] = [
    "0",
    "1",
    "-1",
    "65",
    "100",
    "101",
    "0.001",
    "\"120%\"",
    "\"50%\"",
    "\"0.001%\"",
    "\"0%\"",
    "4294967296",
];

/// What a mutation puts in place of a list: empty, repeated or out-of-order entries.
const LIST_VALUES: [&str; 6] = [
    "[]",
    "[a, a]",
    "[127.0.0.1:9000, 127.0.0.1:9000]",
    "[0]",
    "[\"\"]",
    "[100, 50]",
];

/// What a mutation puts in place of text: empty, blank, not normal, not absolute, not a URL, not a
/// header name, an address in use.
const TEXT_VALUES: [&str; 11] = [
    "\"\"",
    "\" \"",
    "/",
    "\"/a/../b\"",
    "a/b",
    "\"{port}\"",
    "127.0.0.1:8080",
    "127.0.0.1:9901",
    "\"http://x\"",
    "ftp://x",
    "\"bad header\"",
];

/// Values a mutation puts in place of a valid one that are mostly of the wrong type or odd YAML:
/// overflowing numbers, special floats, null, empty collections, tags, anchors, aliases, an
/// unclosed list, a NUL.
const ODD: [&str; 16] = [
    "\"abc\"",
    "1e400",
    "~",
    "[]",
    "{}",
    "18446744073709551616",
    "4294967296",
    "-0.0",
    ".nan",
    ".inf",
    "99999999999999999999h",
    "true",
    "!!binary aGk=",
    "&a x",
    "*a",
    "\"\\u0000\"",
];

/// Characters that mean something to YAML, which an inserted one may break or change.
const SYNTAX: [char; 16] = [
    ':', '-', '{', '}', '[', ']', ',', '"', '\'', '#', '&', '*', '!', '%', '\t', '\n',
];

/// The entries whose key (the text before the first `:`) no earlier entry has: a key twice in one
/// map is a parse error, not what the valid documents are made to test.
fn unique_keys(entries: Vec<&str>) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    entries
        .into_iter()
        .filter(|e| seen.insert(e.split(':').next().unwrap_or_default()))
        .map(str::to_owned)
        .collect()
}

/// A percentage in basis points as a spec may write it: `12.50`, `"12.50%"` or `'12.50 %'`.
fn percent(bp: u32, form: u8) -> String {
    let number = if bp.is_multiple_of(100) {
        (bp / 100).to_string()
    } else {
        format!("{}.{:02}", bp / 100, bp % 100)
    };
    match form % 3 {
        0 => number,
        1 => format!("\"{number}%\""),
        _ => format!("'{number} %'"),
    }
}

/// `rollout.steps`: strictly increasing weights ending at 100%, each bare or as a map with its own
/// hold; with `shadow`, a first 0% step (judged by `analysis.shadow`). Returns the line and
/// `shadow`.
fn steps() -> impl Strategy<Value = (String, bool)> {
    (
        vec(1u32..10_000, 0..5),
        vec((any::<u8>(), select(&DURATIONS[..]), any::<bool>()), 6),
        any::<bool>(),
    )
        .prop_map(|(mut weights, forms, shadow)| {
            weights.sort_unstable();
            weights.dedup();
            weights.push(10_000);
            if shadow {
                weights.insert(0, 0);
            }
            let steps: Vec<String> = weights
                .iter()
                .zip(&forms)
                .map(|(&bp, &(form, hold, as_map))| {
                    let weight = percent(bp, form);
                    if as_map || bp == 0 {
                        format!("{{ weight: {weight}, hold: {hold} }}")
                    } else {
                        weight
                    }
                })
                .collect();
            (format!("  steps: [{}]", steps.join(", ")), shadow)
        })
}

/// A workload for `slot`: a command (`./app-<slot>`, 1 to 64 instances, `{port}` in args or env) or static
/// endpoints (distinct per slot: blue on 127.0.0.1, green on 10.0.0.7, never a listen address).
fn workload(slot: &'static str) -> impl Strategy<Value = Vec<String>> {
    (
        any::<bool>(),
        1u32..=64,
        1u16..4,
        subsequence(&WORKLOAD_ANY[..], 0..=2),
        subsequence(&WORKLOAD_COMMAND[..], 0..=1),
    )
        .prop_map(move |(command, instances, endpoints, any, only_command)| {
            let mut lines = vec![format!("{slot}:")];
            if command {
                // A program per slot: a green equal to blue is refused (trial 22).
                lines.push(format!("  command: ./app-{slot}"));
                let args = if only_command.contains(&WORKLOAD_COMMAND[2]) {
                    "[serve]"
                } else {
                    "[\"--port\", \"{port}\"]"
                };
                lines.push(format!("  args: {args}"));
                lines.push(format!("  instances: {instances}"));
                lines.extend(unique_keys(only_command));
            } else {
                let host = if slot == "blue" {
                    "127.0.0.1"
                } else {
                    "10.0.0.7"
                };
                let list: Vec<String> = (0..endpoints)
                    .map(|i| format!("{host}:{}", 9000 + i))
                    .collect();
                lines.push(format!("  endpoints: [{}]", list.join(", ")));
            }
            lines.extend(unique_keys(any));
            lines
        })
}

/// A whole valid spec, as its text lines.
fn valid_spec() -> impl Strategy<Value = Vec<String>> {
    (
        subsequence(&TOP[..], 0..=3),
        workload("blue"),
        proptest::option::of(workload("green")),
        steps(),
        proptest::option::of(select(&DURATIONS[..])),
        subsequence(&ANALYSIS[..], 0..=5),
        subsequence(&ROLLOUT[..], 0..=2),
    )
        .prop_map(
            |(top, blue, green, (steps, shadow), hold, analysis, rollout)| {
                let mut entries = unique_keys(top);
                entries.extend(blue);
                entries.extend(green.into_iter().flatten());
                entries.push("rollout:".to_owned());
                entries.push(steps);
                entries.extend(hold.map(|h| format!("  hold: {h}")));
                entries.extend(unique_keys(rollout));
                let mut analysis = unique_keys(analysis);
                if shadow {
                    analysis.push(SHADOW.to_owned());
                }
                if !analysis.is_empty() {
                    entries.push("  analysis:".to_owned());
                    entries.extend(analysis);
                }
                // One line each, so that mutations work on lines.
                entries
                    .iter()
                    .flat_map(|e| e.lines().map(str::to_owned).collect::<Vec<_>>())
                    .collect()
            },
        )
}

/// One change to a spec's lines; the indices pick a line, a `: ` or a character.
#[derive(Clone, Debug)]
enum Mutation {
    Delete(Index),
    Duplicate(Index),
    Swap(Index, Index),
    /// Replaces the value after one of the line's `: ` (nested flow values too) with another of the
    /// same shape (duration, number, list or text), picked from the lists above.
    Replace(Index, Index, Index),
    /// Replaces such a value with an odd one, whatever its shape.
    Odd(Index, Index, &'static str),
    /// Indents a line by two more spaces, or two fewer.
    Indent(Index, bool),
    /// Cuts the line at a character and drops every line after it.
    Cut(Index, Index),
    Insert(Index, Index, char),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        1 => any::<Index>().prop_map(Mutation::Delete),
        1 => any::<Index>().prop_map(Mutation::Duplicate),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::Swap(a, b)),
        6 => (any::<Index>(), any::<Index>(), any::<Index>())
            .prop_map(|(l, at, pick)| Mutation::Replace(l, at, pick)),
        2 => (any::<Index>(), any::<Index>(), select(&ODD[..]))
            .prop_map(|(l, at, odd)| Mutation::Odd(l, at, odd)),
        1 => (any::<Index>(), any::<bool>()).prop_map(|(l, deeper)| Mutation::Indent(l, deeper)),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(l, at)| Mutation::Cut(l, at)),
        1 => (any::<Index>(), any::<Index>(), prop_oneof![select(&SYNTAX[..]), any::<char>()])
            .prop_map(|(l, at, c)| Mutation::Insert(l, at, c)),
    ]
}

/// The byte offset of the character `at` picks in `line`, or of its end.
fn char_offset(line: &str, at: Index) -> usize {
    let chars = line.chars().count() + 1;
    line.char_indices()
        .map(|(i, _)| i)
        .nth(at.index(chars))
        .unwrap_or(line.len())
}

/// The byte range of the value after one of the `: ` in `line` (`at` picks which): up to the next
/// `,`, `}` or `]` outside the brackets the value itself opens, or the end of the line. `None`
/// when the line has no `key: value`.
fn value_at(line: &str, at: Index) -> Option<(usize, usize)> {
    let starts: Vec<usize> = line.match_indices(": ").map(|(i, _)| i + 2).collect();
    if starts.is_empty() {
        return None;
    }
    let start = starts[at.index(starts.len())];
    let mut depth = 0usize;
    for (i, c) in line[start..].char_indices() {
        match c {
            '[' | '{' => depth += 1,
            ']' | '}' if depth == 0 => return Some((start, start + i)),
            ']' | '}' => depth -= 1,
            ',' if depth == 0 => return Some((start, start + i)),
            _ => {}
        }
    }
    Some((start, line.len()))
}

fn apply(lines: &mut Vec<String>, mutation: &Mutation) {
    let n = lines.len();
    if n == 0 {
        return;
    }
    match mutation {
        Mutation::Delete(l) => {
            lines.remove(l.index(n));
        }
        Mutation::Duplicate(l) => {
            let line = lines[l.index(n)].clone();
            lines.insert(l.index(n), line);
        }
        Mutation::Swap(a, b) => lines.swap(a.index(n), b.index(n)),
        Mutation::Replace(l, at, pick) => {
            let line = &mut lines[l.index(n)];
            if let Some((start, end)) = value_at(line, *at) {
                let value = &line[start..end];
                let values: &[&str] = if value.starts_with('[') {
                    &LIST_VALUES
                } else if value
                    .trim_matches(['"', '\'', ' ', '%'])
                    .parse::<f64>()
                    .is_ok()
                {
                    &NUMBER_VALUES
                } else if value.starts_with(|c: char| c.is_ascii_digit())
                    && value.ends_with(|c: char| c.is_ascii_alphabetic())
                {
                    &DURATION_VALUES
                } else {
                    &TEXT_VALUES
                };
                line.replace_range(start..end, values[pick.index(values.len())]);
            }
        }
        Mutation::Odd(l, at, odd) => {
            let line = &mut lines[l.index(n)];
            if let Some((start, end)) = value_at(line, *at) {
                line.replace_range(start..end, odd);
            }
        }
        Mutation::Indent(l, deeper) => {
            let line = &mut lines[l.index(n)];
            if *deeper {
                line.insert_str(0, "  ");
            } else if let Some(rest) = line.strip_prefix("  ") {
                *line = rest.to_owned();
            }
        }
        Mutation::Cut(l, at) => {
            let l = l.index(n);
            lines.truncate(l + 1);
            let cut = char_offset(&lines[l], *at);
            lines[l].truncate(cut);
        }
        Mutation::Insert(l, at, c) => {
            let line = &mut lines[l.index(n)];
            let at = char_offset(line, *at);
            line.insert(at, *c);
        }
    }
}

proptest! {
    /// Every spec built from valid fragments is accepted, validates again and round-trips.
    #[test]
    fn every_spec_of_valid_fragments_is_accepted_and_round_trips(lines in valid_spec()) {
        let text = lines.join("\n");
        if let Err(e) = RunSpec::from_yaml(&text) {
            prop_assert!(false, "refused: {}\n--- spec\n{}", e, text);
        }
        check(text.as_bytes());
    }

    /// A valid spec after a few mutations: never panics; whatever is still accepted validates
    /// again and round-trips.
    #[test]
    fn a_mutated_spec_is_refused_or_round_trips(
        mut lines in valid_spec(),
        mutations in vec(mutation(), 1..3),
    ) {
        for m in &mutations {
            apply(&mut lines, m);
        }
        check(lines.join("\n").as_bytes());
    }

    /// Any text, and any bytes (as lossy text, like the fuzz target): never panics, and whatever is
    /// accepted round-trips.
    #[test]
    fn any_text_is_refused_or_round_trips(text in any::<String>(), bytes in vec(any::<u8>(), 0..256)) {
        check(text.as_bytes());
        check(&bytes);
    }
}
