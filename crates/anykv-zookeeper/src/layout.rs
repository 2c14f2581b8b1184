//! How keys, roots and the backend's bookkeeping map to znode paths.
//!
//! Every key segment becomes one znode name. Names that start with `@` are
//! the backend's own (`@v`, `@locks`, `@lock-…`, `@clock-`); a user segment
//! that starts with `@` is stored with one more `@` in front (`@x` becomes
//! `@@x`), so the two never meet. Key `k` of root `r` is the container
//! node `/r/k`, its value the child `/r/k/@v`, and lock `k`'s waiters the
//! children of `/r/k/@locks`.

use anykv_core::key;

/// The child of a key's node that holds the key's value.
pub const VALUE: &str = "@v";
/// The child of a lock's node (the node of the key of the same name)
/// under which the lock's waiters live.
pub const LOCKS: &str = "@locks";
/// The prefix of a lock waiter's node.
pub const LOCK_PREFIX: &str = "@lock-";
/// The prefix of the ephemeral sequential nodes the watch creates under
/// the root to take a fresh zxid.
pub const CLOCK_PREFIX: &str = "@clock-";

/// The data a key's node gets from a delete: it tells the watch that the
/// node's `mzxid` is the zxid of the delete.
pub const DELETED_FLAG: &[u8] = b"d";

/// The data of a key's node while its value node is a TTL node (a stat
/// does not tell TTL nodes apart).
pub const TTL_FLAG: &[u8] = b"t";

/// One store's root and the znode paths of its keys and locks.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    /// The root, canonical.
    root: String,
    /// The root's znode path (`/` for the empty root).
    root_path: String,
}

impl Layout {
    /// The layout of a canonical root.
    pub(crate) fn new(root: &str) -> Self {
        Layout {
            root: root.to_owned(),
            root_path: node_path(root),
        }
    }

    /// The root's znode path.
    pub(crate) fn root_path(&self) -> &str {
        &self.root_path
    }

    /// The node of a canonical key (or prefix): its value node's parent.
    pub(crate) fn key_dir(&self, canonical: &str) -> String {
        node_path(&key::join(&self.root, canonical))
    }

    /// The node holding a canonical key's value.
    pub(crate) fn value_path(&self, canonical: &str) -> String {
        child(&self.key_dir(canonical), VALUE)
    }

    /// The node under which the waiters of lock `canonical` live.
    pub(crate) fn lock_dir(&self, canonical: &str) -> String {
        child(&self.key_dir(canonical), LOCKS)
    }

    /// The node a prefix's listing starts at: the root's for `""`.
    pub(crate) fn prefix_dir(&self, prefix: &str) -> String {
        if prefix.is_empty() {
            self.root_path.clone()
        } else {
            self.key_dir(prefix)
        }
    }

    /// The canonical key of a value node's path, `None` for anything that
    /// is not a user key's value node of this root.
    pub(crate) fn key_of_value_path(&self, path: &str) -> Option<String> {
        key_of_value_path(&self.root_path, path)
    }
}

/// The znode name of a user segment.
pub fn escape_segment(segment: &str) -> String {
    if segment.chars().any(|c| c > '\u{ffff}') || (segment == "zookeeper") {
        // ZooKeeper (Java, UTF-16) refuses surrogate pairs in paths, so a
        // segment with a character beyond the BMP is stored as hex; and
        // `zookeeper` is reserved at the top of the tree.
        let mut out = String::from("@%");
        for b in segment.as_bytes() {
            out.push_str(&format!("{b:02x}"));
        }
        out
    } else if segment.starts_with('@') {
        format!("@{segment}")
    } else {
        segment.to_owned()
    }
}

/// The user segment of a znode name; `None` for the backend's own names.
pub fn unescape_segment(name: &str) -> Option<std::borrow::Cow<'_, str>> {
    use std::borrow::Cow;
    if let Some(hex) = name.strip_prefix("@%") {
        if hex.len() % 2 != 0 {
            return None;
        }
        let mut bytes = Vec::with_capacity(hex.len() / 2);
        for i in (0..hex.len()).step_by(2) {
            bytes.push(u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()?);
        }
        return String::from_utf8(bytes).ok().map(Cow::Owned);
    }
    if let Some(rest) = name.strip_prefix('@') {
        if rest.starts_with('@') {
            Some(Cow::Borrowed(rest))
        } else {
            None
        }
    } else {
        Some(Cow::Borrowed(name))
    }
}

/// The znode path of a canonical key or prefix (relative to `/`); the
/// empty string gives `/`.
pub fn node_path(canonical: &str) -> String {
    if canonical.is_empty() {
        return "/".to_owned();
    }
    let mut out = String::with_capacity(canonical.len() + 8);
    for segment in canonical.split('/') {
        out.push('/');
        out.push_str(&escape_segment(segment));
    }
    out
}

/// `parent/child` for a znode path, handling `/`.
pub fn child(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// Whether znode path `a` is a strict ancestor of `b`.
pub fn is_ancestor(a: &str, b: &str) -> bool {
    a == "/" && b != "/" || (b.len() > a.len() && b.starts_with(a) && b.as_bytes()[a.len()] == b'/')
}

/// The canonical key (relative to the root whose node is `root_path`) of a
/// value node's path: `None` for anything that is not a user key's value
/// node.
pub fn key_of_value_path(root_path: &str, path: &str) -> Option<String> {
    let rest = if root_path == "/" {
        path.strip_prefix('/')?
    } else {
        path.strip_prefix(root_path)?.strip_prefix('/')?
    };
    let dir = rest.strip_suffix(VALUE)?;
    let dir = dir.strip_suffix('/')?;
    if dir.is_empty() {
        return None;
    }
    let mut key = String::with_capacity(dir.len());
    for (i, name) in dir.split('/').enumerate() {
        let seg = unescape_segment(name)?;
        if i > 0 {
            key.push('/');
        }
        key.push_str(&seg);
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        assert_eq!(node_path(""), "/");
        assert_eq!(node_path("a/@b/c"), "/a/@@b/c");
        assert_eq!(unescape_segment("@@b").as_deref(), Some("@b"));
        assert_eq!(unescape_segment("@v"), None);
        assert_eq!(unescape_segment("x").as_deref(), Some("x"));
        let crab = escape_segment("a🦀");
        assert!(crab.starts_with("@%"));
        assert_eq!(unescape_segment(&crab).as_deref(), Some("a🦀"));
        assert_eq!(
            unescape_segment(&escape_segment("zookeeper")).as_deref(),
            Some("zookeeper")
        );
        assert_eq!(
            key_of_value_path("/r", "/r/a/@@b/@v"),
            Some("a/@b".to_owned())
        );
        assert_eq!(key_of_value_path("/r", "/r/@v"), None);
        assert_eq!(key_of_value_path("/r", "/r/@locks/x/@v"), None);
        assert_eq!(key_of_value_path("/r", "/r/x/@locks/@lock-1-2"), None);
        assert_eq!(key_of_value_path("/r", "/rr/x/@v"), None);
        assert_eq!(key_of_value_path("/", "/x/@v"), Some("x".to_owned()));
        assert_eq!(child("/", "a"), "/a");
        let l = Layout::new("r");
        assert_eq!(l.value_path("a/@b"), "/r/a/@@b/@v");
        assert_eq!(l.lock_dir("l"), "/r/l/@locks");
        assert_eq!(l.prefix_dir(""), "/r");
        assert_eq!(Layout::new("").prefix_dir(""), "/");
    }
}
