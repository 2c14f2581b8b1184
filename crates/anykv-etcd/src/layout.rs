//! Where things live in etcd's key space: user keys under the root, and
//! the backend's bookkeeping under a prefix no user key can have.
//!
//! - User key `k` of root `app` is the etcd key `app/k`; the empty root
//!   puts keys at the top of etcd's key space. The tree of `p` is the
//!   range `[app/p/, app/p0)`; with the empty root and prefix the range
//!   starts at `" "`, the smallest byte a key may start with.
//! - Bookkeeping lives under `\0anykv/` (control characters are invalid in
//!   keys, so no `list` or watch of user keys ever sees it):
//!   - `\0anykv/locks/{root}/{lock}\0/{lease:016x}`: one key per holder or
//!     waiter of a lock, bound to its lease (the `\0` ends the lock's name,
//!     so lock `a` and lock `a/b` never share holders);
//!   - `\0anykv/ttl/{lease:016x}`: marks a lease granted for one TTL put.

use anykv_core::backend::WatchTarget;
use anykv_core::{key, Result};

/// The prefix of every bookkeeping key.
const BOOKKEEPING: &str = "\u{0}anykv/";

/// A key as the user named it and as etcd stores it.
pub(crate) struct KeyNames {
    /// The etcd key: the root joined with the canonical key.
    pub full: String,
    /// The canonical key, relative to the root (what errors and results
    /// carry).
    pub canonical: String,
}

/// The etcd range of a tree and the prefix's own key.
pub(crate) struct TreeRange {
    /// The prefix's own etcd key (`delete_tree` deletes it too); `None`
    /// for the whole root.
    pub own: Option<String>,
    /// The first etcd key of the range.
    pub start: Vec<u8>,
    /// The end of the range (excluded).
    pub end: Vec<u8>,
}

/// The mapping of one store's root.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    root: String,
}

impl Layout {
    /// The layout of a root given in any accepted form; a bad root is a
    /// `Config` error.
    pub fn new(root: &str) -> Result<Self> {
        Ok(Layout {
            root: key::normalize_root(root)?,
        })
    }

    /// The canonical root.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// The names of a user key (checked with the key rules).
    pub fn key(&self, key: &str) -> Result<KeyNames> {
        let canonical = key::normalize_key(key)?;
        Ok(KeyNames {
            full: key::join(&self.root, &canonical),
            canonical,
        })
    }

    /// The etcd range `[start, end)` of the tree of `prefix`, and the
    /// prefix's own key.
    pub fn tree(&self, prefix: &str) -> Result<TreeRange> {
        let p = key::normalize_prefix(prefix)?;
        let full = key::join(&self.root, &p);
        let own = (!p.is_empty()).then(|| full.clone());
        let (start, end) = tree_range(&full);
        Ok(TreeRange { own, start, end })
    }

    /// What a watch of `target` asks etcd for: a key (empty end) or a
    /// range.
    pub fn watch_range(&self, target: &WatchTarget) -> (Vec<u8>, Vec<u8>) {
        match target {
            WatchTarget::Key(k) => (key::join(&self.root, k).into_bytes(), Vec::new()),
            WatchTarget::Tree(p) => tree_range(&key::join(&self.root, p)),
        }
    }

    /// The user key of an etcd key under the root; `None` for anything
    /// else (another root's key, a non-UTF-8 key written by another
    /// client, the root itself).
    pub fn relative(&self, full: &[u8]) -> Option<String> {
        relative_key(&self.root, full)
    }

    /// The directory of lock `full`'s holders and waiters.
    pub fn lock_dir(&self, full: &str) -> String {
        format!("{BOOKKEEPING}locks/{full}\u{0}/")
    }
}

/// The etcd range `[start, end)` of the tree of the etcd key `full`.
fn tree_range(full: &str) -> (Vec<u8>, Vec<u8>) {
    if full.is_empty() {
        // Every key a user can write starts at " " or above; bookkeeping
        // keys start with NUL. `\0` as the end means "to the end".
        (b" ".to_vec(), vec![0])
    } else {
        (
            format!("{full}/").into_bytes(),
            format!("{full}0").into_bytes(),
        )
    }
}

/// The key relative to `root` of an etcd key, as [`Layout::relative`].
pub(crate) fn relative_key(root: &str, full: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(full).ok()?;
    let rel = key::strip_root(root, s)?;
    (!rel.is_empty()).then(|| rel.to_owned())
}

/// The key of one holder or waiter in a lock's directory.
pub(crate) fn lock_holder_key(dir: &str, lease: i64) -> String {
    format!("{dir}{lease:016x}")
}

/// The marker of a lease granted for one TTL put.
pub(crate) fn ttl_marker(lease: i64) -> String {
    format!("{BOOKKEEPING}ttl/{lease:016x}")
}

/// The key the first request after connecting reads (it never exists).
pub(crate) fn probe_key() -> String {
    format!("{BOOKKEEPING}probe")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_ranges() {
        let l = Layout::new("/app/").unwrap();
        assert_eq!(l.root(), "app");
        let k = l.key("/a/b/").unwrap();
        assert_eq!((k.full.as_str(), k.canonical.as_str()), ("app/a/b", "a/b"));
        let t = l.tree("p").unwrap();
        assert_eq!(t.own.as_deref(), Some("app/p"));
        assert_eq!((t.start, t.end), (b"app/p/".to_vec(), b"app/p0".to_vec()));
        assert_eq!(
            l.watch_range(&WatchTarget::Tree("p".into())),
            (b"app/p/".to_vec(), b"app/p0".to_vec())
        );
        assert_eq!(
            l.watch_range(&WatchTarget::Key("a".into())),
            (b"app/a".to_vec(), Vec::new())
        );
        assert_eq!(l.relative(b"app/a/b").as_deref(), Some("a/b"));
        assert_eq!(l.relative(b"other/a"), None);
        assert_eq!(l.relative(b"app"), None);
        let top = Layout::new("").unwrap();
        let t = top.tree("").unwrap();
        assert!(t.own.is_none());
        assert_eq!((t.start, t.end), (b" ".to_vec(), vec![0]));
        assert!(ttl_marker(1).starts_with(BOOKKEEPING));
        assert!(lock_holder_key(&l.lock_dir("app/l"), 255).ends_with("l\u{0}/00000000000000ff"));
    }
}
