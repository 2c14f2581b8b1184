//! The key rules, in one place that every backend calls.
//!
//! A key is a UTF-8 string of segments separated by `/`. Its canonical form
//! has no leading or trailing `/`: `/a/b/`, `/a/b`, `a/b/` and `a/b` are the
//! same key, and results always carry the canonical form. One leading and one
//! trailing `/` are removed; any other empty segment (`a//b`, `//a`) is an
//! error.
//!
//! A key is rejected with [`Error::InvalidKey`] when:
//! - it is empty (or `/`) where a single key is needed;
//! - it has an empty segment, or a segment `.` or `..`;
//! - it contains a control character (U+0000 to U+001F, U+007F to U+009F),
//!   a private-use character U+E000 to U+F8FF, or U+FFF0 to U+FFFF;
//! - its canonical form is longer than [`MAX_KEY_BYTES`] bytes.
//!
//! Everything else is an ordinary character on every backend: spaces, `:`,
//! `?`, `*`, `[`, `]`, `%`, `\`, emoji. Nothing is interpreted as a glob or a
//! pattern.
//!
//! A *prefix* (for `list`, `delete_tree`, `watch_tree`) follows the same rules
//! but may be empty, meaning the whole store. Prefix operations respect
//! segment boundaries: the tree of `a` is `a/...`, never `ab`.
//!
//! ```
//! use anykv_core::key;
//! assert_eq!(key::normalize_key("/a/b/").unwrap(), "a/b");
//! assert!(key::normalize_key("a//b").is_err());
//! assert_eq!(key::normalize_prefix("/").unwrap(), "");
//! assert!(key::is_in_tree("a", "a/b"));
//! assert!(!key::is_in_tree("a", "ab/c"));
//! ```

use crate::error::{Error, Result};

/// The longest canonical key, in bytes.
pub const MAX_KEY_BYTES: usize = 4096;

/// Checks a single key and returns its canonical form.
pub fn normalize_key(key: &str) -> Result<String> {
    canonical_key(key).map(str::to_owned)
}

/// Checks a prefix (which may be empty: the whole store) and returns its
/// canonical form.
pub fn normalize_prefix(prefix: &str) -> Result<String> {
    canonical_prefix(prefix).map(str::to_owned)
}

/// [`normalize_key`] without allocating: the canonical form is always a
/// slice of the key (at most one leading and one trailing `/` removed).
///
/// ```
/// assert_eq!(anykv_core::key::canonical_key("/a/b/").unwrap(), "a/b");
/// assert!(anykv_core::key::canonical_key("/").is_err());
/// ```
pub fn canonical_key(key: &str) -> Result<&str> {
    let canonical = canonical_prefix(key)?;
    if canonical.is_empty() {
        return Err(Error::invalid_key(key, "the key is empty"));
    }
    Ok(canonical)
}

/// [`normalize_prefix`] without allocating: a slice of `prefix`.
pub fn canonical_prefix(prefix: &str) -> Result<&str> {
    let trimmed = prefix.strip_prefix('/').unwrap_or(prefix);
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    if trimmed.is_empty() {
        return Ok("");
    }
    if trimmed.len() > MAX_KEY_BYTES {
        return Err(Error::invalid_key(
            &shorten(prefix),
            format!(
                "the key is {} bytes long; the maximum is {MAX_KEY_BYTES}",
                trimmed.len()
            ),
        ));
    }
    // Most keys are ASCII, where the only forbidden characters are the
    // control characters: one byte scan instead of decoding characters.
    let forbidden = if trimmed.is_ascii() {
        trimmed
            .bytes()
            .find(|b| *b < 0x20 || *b == 0x7f)
            .map(|b| ("the control character", u32::from(b)))
    } else {
        trimmed
            .chars()
            .find_map(|c| forbidden_char(c).map(|reason| (reason, c as u32)))
    };
    if let Some((reason, code)) = forbidden {
        return Err(Error::invalid_key(
            prefix,
            format!("it contains {reason} U+{code:04X}"),
        ));
    }
    for segment in trimmed.split('/') {
        match segment {
            "" => return Err(Error::invalid_key(prefix, "it has an empty segment")),
            "." | ".." => {
                return Err(Error::invalid_key(
                    prefix,
                    format!("it has a segment {segment:?}"),
                ))
            }
            _ => {}
        }
    }
    Ok(trimmed)
}

/// Checks a store's root (an etcd prefix, a ZooKeeper chroot, ...): the same
/// rules as a prefix, so the empty root is allowed.
pub fn normalize_root(root: &str) -> Result<String> {
    normalize_prefix(root).map_err(|e| match e {
        Error::InvalidKey { key, reason } => {
            Error::Config(format!("invalid root {key:?}: {reason}"))
        }
        other => other,
    })
}

fn forbidden_char(c: char) -> Option<&'static str> {
    match c {
        '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}' => Some("the control character"),
        '\u{e000}'..='\u{f8ff}' => Some("the private-use character"),
        '\u{fff0}'..='\u{ffff}' => Some("the special character"),
        _ => None,
    }
}

fn shorten(key: &str) -> String {
    if key.len() <= 64 {
        return key.to_owned();
    }
    let mut end = 64;
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &key[..end])
}

/// Whether canonical `key` lies in the tree of canonical `prefix`: under
/// `prefix/` at any depth, never `prefix` itself, never a sibling such as
/// `prefixb`. The empty prefix holds every key.
pub fn is_in_tree(prefix: &str, key: &str) -> bool {
    if prefix.is_empty() {
        return !key.is_empty();
    }
    key.len() > prefix.len() + 1 && key.starts_with(prefix) && key.as_bytes()[prefix.len()] == b'/'
}

/// Joins a canonical root and a canonical key (or prefix).
pub fn join(root: &str, key: &str) -> String {
    match (root.is_empty(), key.is_empty()) {
        (true, _) => key.to_owned(),
        (false, true) => root.to_owned(),
        (false, false) => format!("{root}/{key}"),
    }
}

/// Strips a canonical root from a full key, giving the key relative to the
/// root; `None` if the key is not under the root.
pub fn strip_root<'a>(root: &str, full: &'a str) -> Option<&'a str> {
    if root.is_empty() {
        return Some(full);
    }
    full.strip_prefix(root)?.strip_prefix('/')
}

/// The range of byte strings holding the tree of canonical `prefix`:
/// `[start, end)` where `start` is `prefix/` and `end` is `prefix0` (`'0'`
/// follows `'/'`). For the empty prefix: `("", None)`, everything.
pub fn tree_range(prefix: &str) -> (String, Option<String>) {
    if prefix.is_empty() {
        (String::new(), None)
    } else {
        (format!("{prefix}/"), Some(format!("{prefix}0")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn forbidden_characters_are_named_ascii_or_not() {
        let reason = |k: &str| match normalize_key(k) {
            Err(Error::InvalidKey { reason, .. }) => reason,
            other => panic!("{k:?}: {other:?}"),
        };
        assert_eq!(
            reason("a\u{1}b"),
            "it contains the control character U+0001"
        );
        assert_eq!(
            reason("a\u{7f}"),
            "it contains the control character U+007F"
        );
        assert_eq!(
            reason("é\u{85}"),
            "it contains the control character U+0085"
        );
        assert_eq!(
            reason("é\u{1f}"),
            "it contains the control character U+001F"
        );
        assert_eq!(
            reason("é\u{e000}"),
            "it contains the private-use character U+E000"
        );
        assert_eq!(
            reason("\u{fff0}"),
            "it contains the special character U+FFF0"
        );
        assert_eq!(normalize_key("a~b é").unwrap(), "a~b é");
    }

    #[test]
    fn canonical_forms() {
        for k in ["a/b", "/a/b", "a/b/", "/a/b/"] {
            assert_eq!(normalize_key(k).unwrap(), "a/b");
        }
        assert_eq!(normalize_prefix("").unwrap(), "");
        assert_eq!(normalize_prefix("/").unwrap(), "");
        assert_eq!(
            normalize_key("* ? [ ] % : \\ 🦀").unwrap(),
            "* ? [ ] % : \\ 🦀"
        );
    }

    #[test]
    fn rejections() {
        let long = "x".repeat(MAX_KEY_BYTES + 1);
        for k in [
            "",
            "/",
            "//",
            "a//b",
            "//a",
            "a//",
            ".",
            "..",
            "a/./b",
            "a/..",
            "../a",
            "a\u{0}b",
            "a\nb",
            "a\u{1f}",
            "a\u{7f}",
            "a\u{85}",
            "a\u{9f}",
            "\u{e000}",
            "\u{f8ff}",
            "\u{fff0}",
            "\u{ffff}",
            long.as_str(),
        ] {
            let e = normalize_key(k).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidKey, "{k:?}");
        }
        assert!(normalize_key(&"x".repeat(MAX_KEY_BYTES)).is_ok());
        assert!(normalize_key(&format!("/{}/", "x".repeat(MAX_KEY_BYTES))).is_ok());
        assert!(normalize_key("\u{a0}\u{f900}\u{ffef}").is_ok());
    }

    #[test]
    fn trees() {
        assert!(is_in_tree("a", "a/b"));
        assert!(is_in_tree("a", "a/b/c"));
        assert!(!is_in_tree("a", "a"));
        assert!(!is_in_tree("a", "ab"));
        assert!(!is_in_tree("a", "ab/c"));
        assert!(is_in_tree("", "a"));
        assert_eq!(tree_range("a"), ("a/".to_string(), Some("a0".to_string())));
        assert_eq!(join("r", "k"), "r/k");
        assert_eq!(join("", "k"), "k");
        assert_eq!(strip_root("r", "r/k"), Some("k"));
        assert_eq!(strip_root("r", "rk"), None);
        assert_eq!(strip_root("", "k"), Some("k"));
    }

    #[test]
    fn roots() {
        assert_eq!(normalize_root("/app/").unwrap(), "app");
        assert_eq!(
            normalize_root("a/../b").unwrap_err().kind(),
            ErrorKind::Config
        );
    }
}
