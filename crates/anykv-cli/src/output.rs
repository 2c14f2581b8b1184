//! How results are printed: values in text lines, JSON objects, and
//! standard output written line by line.

use std::io::{self, Write};

use anykv::{KvPair, WatchEvent};
use base64::Engine;
use serde_json::{json, Map, Value};

use crate::exit::{CliError, OK};

/// A value in a tab-separated text line (`ls`, `watch`): printed as it is
/// when it is UTF-8 text without control characters, not empty, not
/// starting with `"` and without leading or trailing whitespace; otherwise
/// in double quotes with `\n`, `\t`, `\"`, `\\`, `\u{..}` and, for bytes
/// that are not UTF-8, `\xNN` escapes. Keys never contain tabs (they
/// cannot contain control characters), so tab-separated lines are
/// unambiguous.
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
/// (value as in [`display_value`]) or `DELETE<TAB>revision<TAB>key`;
/// `None` for `Synced`, which is progress, not a change.
pub fn event_line(event: &WatchEvent) -> Option<String> {
    match event {
        WatchEvent::Put(pair) => Some(format!(
            "PUT\t{}\t{}\t{}",
            pair.revision,
            pair.key,
            display_value(&pair.value)
        )),
        WatchEvent::Delete { key, revision } => Some(format!("DELETE\t{revision}\t{key}")),
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
#[derive(Debug, Clone, Copy)]
pub struct Out {
    /// Print JSON instead of text.
    pub json: bool,
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
