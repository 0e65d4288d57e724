//! Reading the files an operator names (configuration, specs, TLS pairs, tokens, the state file):
//! only regular files, and only up to a bound, so that a path that names a device, a FIFO or a
//! huge file gets an error naming it instead of filling memory or blocking for good.
//!
//! Trial 17, T4: `tls.cert: /dev/zero` was read until the kernel's OOM killer stopped the
//! process (23 GB), and a FIFO blocked the reading thread; every such read in Crossfade goes
//! through [`read_bounded`] now (a symbolic link to a regular file, as Kubernetes mounts a
//! ConfigMap or a Secret, is followed).

use std::io::{self, Read};
use std::path::Path;

/// The most a configuration file, a spec or a rollout file may hold (16 MiB): thousands of
/// routes take some hundreds of KiB.
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// The most a PEM certificate chain or key file may hold (1 MiB): a chain is a few KiB, a CA
/// bundle some hundreds.
pub const MAX_PEM_BYTES: u64 = 1 << 20;

/// The most a token file or a header value file may hold (64 KiB).
pub const MAX_SECRET_BYTES: u64 = 64 << 10;

/// The most a state file or a child journal may hold (256 MiB): far above what a controller
/// writes, only there so that a wrong path cannot fill memory.
pub const MAX_STATE_BYTES: u64 = 256 << 20;

/// `path` with the symbolic links of its last component followed (a link to a link too, up to
/// 40 as the kernel's `ELOOP` limit), to the file they name, whether it exists yet or not; a
/// relative link target is taken from the link's directory, and the directories on the way are
/// left as written. A link that cannot be read ends the walk there. What a state file's saves,
/// lock and backup use (`crossfade_controller::store::real_path`), and so what the checks of a
/// `state_file` look at.
pub fn real_path(path: &Path) -> std::path::PathBuf {
    let mut path = path.to_path_buf();
    for _ in 0..40 {
        let is_link = std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink());
        let target = match is_link.then(|| std::fs::read_link(&path)) {
            Some(Ok(target)) => target,
            _ => break,
        };
        path = match path.parent() {
            Some(dir) if target.is_relative() => dir.join(target),
            _ => target,
        };
    }
    path
}

/// Whether `path` names a directory rather than a file by its text: it ends with `/`, `/.` or
/// `/..` (or is `.`, `..` or empty). [`Path`] drops a trailing separator (`Path::new("a/")`'s
/// `file_name` is `a`), so such a path passed the checks of a file's directory and failed only
/// when the file was written, after the listeners were bound (trial 25: `state_file: st.json/`,
/// `--pid-file x.pid/`, `--upgrade-socket u.sock/`).
pub fn names_a_directory(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    let bytes = path.as_os_str().as_bytes();
    let last = bytes.rsplit(|b| *b == b'/').next().unwrap_or_default();
    matches!(last, b"" | b"." | b"..")
}

/// What kind of file `kind` is, in words for an error naming what is at a path the proxy would
/// replace (`--pid-file`, `--upgrade-socket`): `a regular file`, `a directory`, `a symbolic link`,
/// `a device` (character or block), `a FIFO`, `a socket`, else `a special file`.
pub fn kind_in_words(kind: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt as _;
    if kind.is_file() {
        "a regular file"
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_symlink() {
        "a symbolic link"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

/// The bytes of the regular file at `path`, at most `max_bytes` of them.
///
/// # Errors
/// The OS error of `stat(2)` or the read (`NotFound` for a missing file, as `std::fs::read`);
/// `InvalidInput` "not a regular file: it is a directory" (a device, a FIFO, a socket:
/// [`kind_in_words`]);
/// `InvalidData` "holds N bytes, above the M ..." for a larger file (also when it grew past the
/// bound while read).
pub fn read_bounded(path: &Path, max_bytes: u64) -> io::Result<Vec<u8>> {
    let metadata = std::fs::metadata(path)?;
    if !metadata.is_file() {
        // Which kind it is, not a list of the kinds it might be (session 42: `crossfade run /tmp`
        // said "a directory, a device, a FIFO or a socket").
        let kind = kind_in_words(metadata.file_type());
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not a regular file: it is {kind}"),
        ));
    }
    let too_large = |len: u64| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("holds {len} bytes, above the {max_bytes} this file may hold"),
        )
    };
    if metadata.len() > max_bytes {
        return Err(too_large(metadata.len()));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
    std::fs::File::open(path)?
        .take(max_bytes + 1)
        .read_to_end(&mut bytes)?;
    let read = bytes.len() as u64;
    if read > max_bytes {
        return Err(too_large(read));
    }
    Ok(bytes)
}

/// [`read_bounded`] as UTF-8 text, without a leading byte order mark (U+FEFF), which some
/// editors (Windows Notepad) write and which means nothing in UTF-8: the YAML reader took a
/// config file starting with one for "more than one document" (YAML 1.2 §5.2 allows the mark at
/// the start of a stream).
///
/// # Errors
/// Those of [`read_bounded`], and `InvalidData` "stream did not contain valid UTF-8" (the words
/// of `std::fs::read_to_string`) followed by where, see [`not_utf8`].
pub fn read_bounded_string(path: &Path, max_bytes: u64) -> io::Result<String> {
    let mut text = String::from_utf8(read_bounded(path, max_bytes)?).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            not_utf8(e.as_bytes(), e.utf8_error()),
        )
    })?;
    if text.starts_with('\u{feff}') {
        text.drain(..'\u{feff}'.len_utf8());
    }
    Ok(text)
}

/// The error for `bytes` that are not UTF-8 (`error`): the first bad byte, its line and column
/// (counted in characters, as the YAML reader's positions are), and what to do. A config edited in
/// a Latin-1 or Windows-1252 editor (`# géré par` in a comment) was refused with the bare words
/// of `std::fs::read_to_string`, which named no place in the file (trial 39).
fn not_utf8(bytes: &[u8], error: std::str::Utf8Error) -> String {
    let valid = &bytes[..error.valid_up_to()];
    let line = 1 + valid.iter().filter(|b| **b == b'\n').count();
    let line_start = valid.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let column = 1 + String::from_utf8_lossy(&valid[line_start..])
        .chars()
        .count();
    let byte = bytes.get(error.valid_up_to()).copied().unwrap_or_default();
    format!(
        "stream did not contain valid UTF-8: byte 0x{byte:02X} at line {line}, column {column} \
         (save the file as UTF-8)"
    )
}

/// The deepest nesting of YAML flow collections (`[` and `{`) a config file may have: 128, the
/// recursion limit of the YAML deserializer (`serde_yaml_ng`), which refuses a deeper document
/// anyway, but only after its scanner, quadratic in the depth, has read it all (30 000 levels in
/// 60 KB took over 20 s, trial 28). Block nesting needs an indent per level, so its file grows
/// with the square of its depth and stays cheap.
pub const MAX_FLOW_DEPTH: usize = 128;

/// [`read_bounded_string`] with [`MAX_CONFIG_BYTES`] for a YAML (or JSON) config, spec or rollout
/// file, refused before parsing when its flow collections nest deeper than [`MAX_FLOW_DEPTH`].
///
/// # Errors
/// [`read_bounded_string`]'s, or [`io::ErrorKind::InvalidData`]: `"[" at line 1, column 132
/// nests flow collections deeper than 128 levels, more than a YAML document may have`.
pub fn read_config_string(path: &Path) -> io::Result<String> {
    let text = read_bounded_string(path, MAX_CONFIG_BYTES)?;
    flow_depth(&text).map_err(|message| io::Error::new(io::ErrorKind::InvalidData, message))?;
    Ok(text)
}

/// `Err` naming the line and column of the first `[` or `{` deeper than [`MAX_FLOW_DEPTH`]. A
/// linear scan, not a parser: quoted scalars (`'...'` with `''`, `"..."` with `\`) and comments
/// (`#` at a line's start or after a space) are skipped; a bracket inside a plain scalar counts,
/// which can only overstate the depth of a document that is at least that full of unclosed
/// brackets.
fn flow_depth(text: &str) -> Result<(), String> {
    let (mut depth, mut line, mut column) = (0usize, 1usize, 0usize);
    let mut chars = text.chars().peekable();
    let mut previous = '\n';
    while let Some(ch) = chars.next() {
        column += 1;
        match ch {
            '\n' => {
                line += 1;
                column = 0;
            }
            '#' if previous.is_whitespace() => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        line += 1;
                        column = 0;
                        break;
                    }
                }
                previous = '\n';
                continue;
            }
            '\'' | '"' if matches!(previous, ' ' | '\t' | '\n' | '[' | '{' | ',' | ':') => {
                let mut escaped = false;
                while let Some(c) = chars.next() {
                    column += 1;
                    if c == '\n' {
                        line += 1;
                        column = 0;
                    }
                    if ch == '"' {
                        if escaped {
                            escaped = false;
                        } else if c == '\\' {
                            escaped = true;
                        } else if c == '"' {
                            break;
                        }
                    } else if c == '\'' {
                        if chars.peek() == Some(&'\'') {
                            chars.next();
                            column += 1;
                        } else {
                            break;
                        }
                    }
                }
            }
            '[' | '{' => {
                depth += 1;
                if depth > MAX_FLOW_DEPTH {
                    return Err(format!(
                        "{ch:?} at line {line}, column {column} nests flow collections deeper \
                         than {MAX_FLOW_DEPTH} levels, more than a YAML document may have"
                    ));
                }
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        previous = ch;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trial 28: 128 levels pass, 129 are refused naming where; brackets in quotes and comments
    /// do not count.
    #[test]
    fn flow_collections_nested_deeper_than_128_levels_are_refused_naming_where() {
        let nested = |n: usize| format!("a: {}{}\n", "[".repeat(n), "]".repeat(n));
        assert_eq!(flow_depth(&nested(MAX_FLOW_DEPTH)), Ok(()));
        assert_eq!(
            flow_depth(&nested(MAX_FLOW_DEPTH + 1)),
            Err(
                "'[' at line 1, column 132 nests flow collections deeper than 128 levels, \
                 more than a YAML document may have"
                    .into()
            )
        );
        let quoted = format!(
            "a: '{0}''{0}'\nb: \"{0}\\\"{0}\"\n# {0}\nc: [x] # {0}\n",
            "[".repeat(200)
        );
        assert_eq!(flow_depth(&quoted), Ok(()));
    }

    #[test]
    fn a_leading_byte_order_mark_is_left_out_and_one_later_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.yaml");
        std::fs::write(&file, "\u{feff}listen: 127.0.0.1:8080\n").unwrap();
        let text = read_bounded_string(&file, MAX_CONFIG_BYTES).unwrap();
        assert_eq!(text, "listen: 127.0.0.1:8080\n");
        std::fs::write(&file, "a: \"\u{feff}\"\n").unwrap();
        let text = read_bounded_string(&file, MAX_CONFIG_BYTES).unwrap();
        assert_eq!(text, "a: \"\u{feff}\"\n");
    }

    #[test]
    fn a_regular_file_within_the_bound_is_read_and_others_are_refused_by_what_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.yaml");
        std::fs::write(&file, "listen: 127.0.0.1:8080\n").unwrap();
        assert_eq!(
            read_bounded_string(&file, MAX_CONFIG_BYTES).unwrap(),
            "listen: 127.0.0.1:8080\n"
        );
        let large = read_bounded(&file, 4).unwrap_err();
        assert_eq!(large.kind(), io::ErrorKind::InvalidData);
        assert!(
            large.to_string().contains("holds 23 bytes, above the 4"),
            "{large}"
        );
        let device = read_bounded(Path::new("/dev/zero"), MAX_CONFIG_BYTES).unwrap_err();
        assert_eq!(device.kind(), io::ErrorKind::InvalidInput, "{device}");
        let directory = read_bounded(dir.path(), MAX_CONFIG_BYTES).unwrap_err();
        assert_eq!(directory.kind(), io::ErrorKind::InvalidInput, "{directory}");
        let missing = read_bounded(&dir.path().join("none"), MAX_CONFIG_BYTES).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
        std::fs::write(&file, [0xff, 0xfe]).unwrap();
        let binary = read_bounded_string(&file, MAX_CONFIG_BYTES).unwrap_err();
        assert_eq!(binary.kind(), io::ErrorKind::InvalidData);
    }

    /// Trial 39: a Latin-1 `é` in a comment on line 3 is named by its byte, line and column.
    #[test]
    fn a_file_that_is_not_utf8_is_refused_naming_the_byte_its_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.yaml");
        std::fs::write(
            &file,
            b"listen: 127.0.0.1:8080\n\nroutes: [] # g\xc3\xa9r\xe9 ici\n",
        )
        .unwrap();
        let error = read_config_string(&file).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert_eq!(
            error.to_string(),
            "stream did not contain valid UTF-8: byte 0xE9 at line 3, column 17 \
             (save the file as UTF-8)"
        );
        std::fs::write(&file, [0xff, 0xfe]).unwrap();
        let error = read_config_string(&file).unwrap_err();
        assert!(
            error.to_string().contains("byte 0xFF at line 1, column 1 "),
            "{error}"
        );
    }

    #[test]
    fn a_path_ending_with_a_separator_or_a_dot_segment_names_a_directory() {
        for path in ["a/", "/run/x.sock/", "a/.", "a/..", ".", "..", "/", ""] {
            assert!(names_a_directory(Path::new(path)), "{path:?}");
        }
        for path in ["a", "/run/x.sock", "a/.b", "a/b..", "./a", "../a"] {
            assert!(!names_a_directory(Path::new(path)), "{path:?}");
        }
    }
}
