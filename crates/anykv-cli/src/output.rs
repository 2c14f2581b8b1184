//! How results are printed: values in text lines, JSON objects, and
//! standard output written line by line.

use std::io::{self, Write};

use anykv::{KvPair, WatchEvent};
use base64::Engine;
use serde_json::{json, Map, Value};

use crate::exit::{CliError, OK};

/// A value in the text lines of `txn` and `services`: printed as it is
/// when it is UTF-8 text without control characters, not empty, not
/// starting with `"` and without leading or trailing whitespace; otherwise
/// in double quotes with `\n`, `\t`, `\"`, `\\`, `\u{..}` and, for bytes
/// that are not UTF-8, `\xNN` escapes. `ls`, `get` and `watch` use
/// [`escape`] instead.
///
/// ```
/// use anykv_cli::output::display_value;
/// assert_eq!(display_value(b"10.0.0.1:80"), "10.0.0.1:80");
/// assert_eq!(display_value(b"two\nlines"), "\"two\\nlines\"");
/// assert_eq!(display_value(b""), "\"\"");
/// assert_eq!(display_value(&[0xff, b'a']), "\"\\xffa\"");
/// ```
pub fn display_value(value: &[u8]) -> String {
    if let Ok(text) = std::str::from_utf8(value) {
        let plain = !text.is_empty()
            && !text.starts_with('"')
            && text.trim() == text
            && !text.chars().any(char::is_control);
        if plain {
            return text.to_owned();
        }
    }
    let mut out = String::from("\"");
    for chunk in value.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if c.is_control() => out.extend(c.escape_default()),
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out.push('"');
    out
}

/// A key or value in a text line (`ls`, `watch`, `get` of a binary value
/// to a terminal), escaped so that every line splits unambiguously at its
/// tabs and can be decoded back to the exact bytes ([`unescape`]): a tab
/// becomes `\t`, a newline `\n`, a backslash `\\`, every other control
/// character each of its UTF-8 bytes as `\xNN`, and every byte that is not
/// part of valid UTF-8 `\xNN`. Everything else is printed as it is.
///
/// ```
/// use anykv_cli::output::{escape, unescape};
/// assert_eq!(escape(b"10.0.0.1:80"), "10.0.0.1:80");
/// assert_eq!(escape(b"two\nlines\tand\\"), "two\\nlines\\tand\\\\");
/// assert_eq!(escape(&[0xff, b'a', 0x1b]), "\\xffa\\x1b");
/// assert_eq!(unescape("\\xffa\\x1b"), Some(vec![0xff, b'a', 0x1b]));
/// ```
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\t' => out.push_str("\\t"),
                '\n' => out.push_str("\\n"),
                '\\' => out.push_str("\\\\"),
                c if c.is_control() => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        out.push_str(&format!("\\x{b:02x}"));
                    }
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Decodes what [`escape`] printed back to the exact bytes; `None` for
/// text that [`escape`] cannot have printed.
pub fn unescape(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        match bytes.get(i + 1)? {
            b't' => out.push(b'\t'),
            b'n' => out.push(b'\n'),
            b'\\' => out.push(b'\\'),
            b'x' => {
                let hex = text.get(i + 2..i + 4)?;
                if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            _ => return None,
        }
        i += 2;
    }
    Some(out)
}

/// Whether a value is text to print as it is: UTF-8 without control
/// characters other than tab, newline and carriage return.
pub fn is_text(value: &[u8]) -> bool {
    std::str::from_utf8(value).is_ok_and(|t| {
        !t.chars()
            .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    })
}

/// The longest value a `--output table` cell shows, in characters.
pub const TABLE_VALUE_WIDTH: usize = 40;

/// Rows as a table: a header, then each row, columns padded to their widest
/// cell (in characters) and separated by two spaces; the last column is not
/// padded.
///
/// ```
/// let t = anykv_cli::output::table(&["KEY", "REVISION"], &[vec!["a/b".into(), "7".into()]]);
/// assert_eq!(t, vec!["KEY  REVISION".to_string(), "a/b  7".to_string()]);
/// ```
pub fn table(header: &[&str], rows: &[Vec<String>]) -> Vec<String> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut s = String::new();
        for (i, cell) in cells.into_iter().enumerate() {
            s.push_str(cell);
            if i < last {
                let width = widths.get(i).copied().unwrap_or(0);
                let pad = width.saturating_sub(cell.chars().count()) + 2;
                s.extend(std::iter::repeat_n(' ', pad));
            }
        }
        s
    };
    let mut out = vec![line(header.to_vec())];
    out.extend(
        rows.iter()
            .map(|r| line(r.iter().map(String::as_str).collect())),
    );
    out
}

/// A value in a table cell: escaped as in [`escape`] and cut to
/// [`TABLE_VALUE_WIDTH`] characters, the last one `…` when cut.
pub fn table_value(value: &[u8]) -> String {
    let text = escape(value);
    if text.chars().count() <= TABLE_VALUE_WIDTH {
        return text;
    }
    let mut cut: String = text.chars().take(TABLE_VALUE_WIDTH - 1).collect();
    cut.push('…');
    cut
}

/// A one-line message: control characters (such as newlines in a server's
/// error text) escaped, so every reported thing stays on one line.
pub fn one_line(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    text.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

/// The `value` and `encoding` fields of a value in JSON: `"utf8"` with the
/// text when the bytes are UTF-8, otherwise `"base64"` with the standard,
/// padded base64 of the bytes.
pub fn json_value_fields(value: &[u8], object: &mut Map<String, Value>) {
    match std::str::from_utf8(value) {
        Ok(text) => {
            object.insert("value".into(), Value::String(text.to_owned()));
            object.insert("encoding".into(), Value::String("utf8".into()));
        }
        Err(_) => {
            let encoded = base64::engine::general_purpose::STANDARD.encode(value);
            object.insert("value".into(), Value::String(encoded));
            object.insert("encoding".into(), Value::String("base64".into()));
        }
    }
}

/// A pair as JSON: `{"key", "value", "encoding", "revision"}` (objects
/// are printed with their fields sorted by name).
///
/// ```
/// use anykv::KvPair;
/// let pair = KvPair::new("a/b", &b"hi"[..], 7);
/// assert_eq!(
///     anykv_cli::output::pair_json(&pair).to_string(),
///     r#"{"encoding":"utf8","key":"a/b","revision":7,"value":"hi"}"#
/// );
/// ```
pub fn pair_json(pair: &KvPair) -> Value {
    let mut o = Map::new();
    o.insert("key".into(), Value::String(pair.key.clone()));
    json_value_fields(&pair.value, &mut o);
    o.insert("revision".into(), json!(pair.revision));
    Value::Object(o)
}

/// A watch event as JSON: `{"event": "put", "key", "value", "encoding",
/// "revision"}`, `{"event": "delete", "key", "revision"}` or
/// `{"event": "synced", "revision"}`.
pub fn event_json(event: &WatchEvent) -> Value {
    match event {
        WatchEvent::Put(pair) => {
            let mut o = Map::new();
            o.insert("event".into(), Value::String("put".into()));
            if let Value::Object(fields) = pair_json(pair) {
                o.extend(fields);
            }
            Value::Object(o)
        }
        WatchEvent::Delete { key, revision } => {
            json!({"event": "delete", "key": key, "revision": revision})
        }
        WatchEvent::Synced { revision } => json!({"event": "synced", "revision": revision}),
    }
}

/// A watch event as a text line: `PUT<TAB>revision<TAB>key<TAB>value`
/// (key and value as in [`escape`]) or `DELETE<TAB>revision<TAB>key`;
/// `None` for `Synced`, which is progress, not a change.
pub fn event_line(event: &WatchEvent) -> Option<String> {
    match event {
        WatchEvent::Put(pair) => Some(format!(
            "PUT\t{}\t{}\t{}",
            pair.revision,
            escape(pair.key.as_bytes()),
            escape(&pair.value)
        )),
        WatchEvent::Delete { key, revision } => {
            Some(format!("DELETE\t{revision}\t{}", escape(key.as_bytes())))
        }
        WatchEvent::Synced { .. } => None,
    }
}

/// An error as JSON: `{"error": {"kind", "message", "exit_code"}}`.
pub fn error_json(error: &CliError) -> Value {
    json!({"error": {"kind": error.kind, "message": error.message, "exit_code": error.code}})
}

/// Writes to standard output, one flushed line at a time, so a reader
/// sees every line as soon as it is printed. A closed standard output
/// (a pipe into `head`) ends the command quietly with status 0.
#[derive(Debug, Clone, Copy, Default)]
pub struct Out {
    /// Print JSON instead of text.
    pub json: bool,
    /// Print aligned columns instead of tab-separated text (`get`, `ls`,
    /// `status`; other commands print text).
    pub table: bool,
}

impl Out {
    /// Writes `line` and a newline, and flushes.
    pub fn line(&self, line: &str) -> Result<(), CliError> {
        let mut stdout = io::stdout().lock();
        stdout
            .write_all(line.as_bytes())
            .and_then(|()| stdout.write_all(b"\n"))
            .and_then(|()| stdout.flush())
            .map_err(stdout_error)
    }

    /// Writes a JSON value on one line.
    pub fn json(&self, value: &Value) -> Result<(), CliError> {
        self.line(&value.to_string())
    }

    /// Writes `bytes` exactly as they are, and flushes.
    pub fn raw(&self, bytes: &[u8]) -> Result<(), CliError> {
        let mut stdout = io::stdout().lock();
        stdout
            .write_all(bytes)
            .and_then(|()| stdout.flush())
            .map_err(stdout_error)
    }
}

fn stdout_error(e: io::Error) -> CliError {
    if e.kind() == io::ErrorKind::BrokenPipe {
        CliError::quiet(OK)
    } else {
        CliError::new(
            crate::exit::FAILURE,
            "Io",
            format!("cannot write to standard output: {e}"),
        )
    }
}

/// Prints a progress or status line on standard error, prefixed `anykv: `.
pub fn progress(message: &str) {
    let mut stderr = io::stderr().lock();
    let _ = writeln!(stderr, "anykv: {message}");
    let _ = stderr.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_decode_to_the_exact_bytes() {
        let every: Vec<u8> = (0..=255u8).collect();
        let text = escape(&every);
        assert!(!text.contains('\t') && !text.contains('\n'));
        assert_eq!(unescape(&text), Some(every));
        let mixed = "k\u{e9}y\t\u{85}\\".as_bytes();
        assert_eq!(escape(mixed), "k\u{e9}y\\t\\xc2\\x85\\\\");
        assert_eq!(unescape(&escape(mixed)).as_deref(), Some(mixed));
        assert_eq!(unescape("\\q"), None);
        assert_eq!(unescape("\\x4"), None);
        assert_eq!(unescape("\\x+f"), None);
        assert!(is_text(b"two\nlines\t\r\n"));
        assert!(!is_text(&[0]));
        assert!(!is_text(&[0xff]));
        assert_eq!(table_value("x".repeat(40).as_bytes()), "x".repeat(40));
    }

    #[test]
    fn values_in_lines() {
        assert_eq!(display_value(b"plain text"), "plain text");
        assert_eq!(display_value(b" padded"), "\" padded\"");
        assert_eq!(display_value(b"\"quoted\""), "\"\\\"quoted\\\"\"");
        assert_eq!(display_value(b"a\tb\\"), "\"a\\tb\\\\\"");
        assert_eq!(display_value("h\u{e9}".as_bytes()), "h\u{e9}");
        assert_eq!(display_value(&[0, 1]), "\"\\u{0}\\u{1}\"");
    }

    #[test]
    fn json_shapes() {
        let pair = KvPair::new("k", vec![0xffu8, 0], 3);
        assert_eq!(
            pair_json(&pair),
            json!({"key": "k", "value": "/wA=", "encoding": "base64", "revision": 3})
        );
        assert_eq!(
            event_json(&WatchEvent::Put(KvPair::new("k", &b"v"[..], 4))),
            json!({"event": "put", "key": "k", "value": "v", "encoding": "utf8", "revision": 4})
        );
        assert_eq!(
            event_json(&WatchEvent::Delete {
                key: "k".into(),
                revision: 5
            }),
            json!({"event": "delete", "key": "k", "revision": 5})
        );
        assert_eq!(
            event_json(&WatchEvent::Synced { revision: 6 }),
            json!({"event": "synced", "revision": 6})
        );
    }

    #[test]
    fn event_lines() {
        assert_eq!(
            event_line(&WatchEvent::Put(KvPair::new("a b", &b"x y"[..], 9))),
            Some("PUT\t9\ta b\tx y".to_string())
        );
        assert_eq!(
            event_line(&WatchEvent::Delete {
                key: "a".into(),
                revision: 10
            }),
            Some("DELETE\t10\ta".to_string())
        );
        assert_eq!(event_line(&WatchEvent::Synced { revision: 1 }), None);
        assert_eq!(one_line("a\nb"), "a\\nb");
    }
}
