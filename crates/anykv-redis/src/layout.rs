//! How keys, roots and the backend's bookkeeping map to Redis key names.
//!
//! With namespace `ns`, every key begins with `{ns}:` (a hash tag, so all of
//! a namespace's keys live in one slot: a Redis Cluster runs each script on
//! the one node that serves it). User keys are stored as their full
//! canonical key (`root/key`), and user keys contain no control characters,
//! so the internal names below never collide with them:
//!
//! | Redis key | type | holds |
//! |---|---|---|
//! | `{ns}:k:<root/key>` | string | the key's record: a header `<revision> <deadline> <lease>\n` (the expiry deadline in ms of the server's clock and the lease id, each empty when none; at most 64 bytes), then the value |
//! | `{ns}:idx` | sorted set, score 0 | every key; `list` and `delete_tree` read it with `ZRANGEBYLEX [root/prefix/ (root/prefix0` |
//! | `{ns}:rev` | string | the revision counter: one per namespace, shared by all roots, so roots nest |
//! | `{ns}:log` | stream | one entry `{revision}-0` per revision: `k` key, `t` `p`ut or `d`elete, `v` value (a transaction that writes several keys adds `{revision}-1`, `{revision}-2`, ... for the others); lock releases add `{revision}-n` entries with `t` `u` that use no revision; the failover check adds a fence record `{to}-0` with `t` `f` and `v` the revision the counter jumped from |
//! | `{ns}:ttl` | sorted set | TTL keys scored by deadline |
//! | `{ns}:leases` | sorted set | live leases scored by deadline |
//! | `{ns}:lease:<id>` | set | the keys bound to a lease |
//! | `{ns}:lid`, `{ns}:fence` | strings | lease ids and lock fencing tokens |
//! | `{ns}:epoch` | string | a random id set (`NX`) by the first store that opens the namespace; a new one means the server lost the namespace |
//! | `{ns}:replid` | string | the server replication id (`master_replid`) the counters were last checked under |
//! | `{ns}:fenced` | string | `from:to` of the counters' last jump |
//! | `{ns}:lock:<root/name>` | string with `PX` | a lock's holder token |
//! | `{ns}:layout` | string | the records' layout, `2` (layout 1, of earlier versions, kept a hash per key; a namespace in it is refused at open) |
//!
//! The scripts (`scripts.rs`) build the same names from the prefix they
//! are given; this module names what the Rust side touches directly.

use anykv_core::{key, Result};

/// A store's names on the server: its namespace's key prefix and its root.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    /// `{ns}:`, the prefix of every Redis key of the namespace.
    prefix: String,
    /// The store's root, canonical.
    root: String,
}

/// A user key (or lock name) as the server and the caller see it.
#[derive(Debug, Clone)]
pub(crate) struct KeyName {
    /// `root/key`: the name in the index, the change stream and the
    /// `{ns}:k:` record.
    pub(crate) full: String,
    /// The key relative to the root, canonical: what results carry.
    pub(crate) canonical: String,
}

/// A tree (`list`, `delete_tree`, `watch_tree`) as an index range.
#[derive(Debug, Clone)]
pub(crate) struct TreeRange {
    /// The prefix with the root joined in (`""`: the whole namespace).
    pub(crate) full: String,
    /// The `ZRANGEBYLEX` bounds of the keys under `full/`.
    pub(crate) min: String,
    /// See `min`.
    pub(crate) max: String,
    /// Whether the caller named a prefix (`delete_tree` then deletes that
    /// key too); `false` for the store's whole root.
    pub(crate) names_a_key: bool,
}

impl Layout {
    /// The layout of `namespace`, for a store on the canonical `root`.
    pub(crate) fn new(namespace: &str, root: String) -> Self {
        Layout {
            prefix: format!("{{{namespace}}}:"),
            root,
        }
    }

    /// The store's root inside the namespace (`""` for none).
    pub(crate) fn root(&self) -> &str {
        &self.root
    }

    /// `{ns}:`: every script's first argument.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The change stream, `{ns}:log`.
    pub(crate) fn change_log(&self) -> String {
        format!("{}log", self.prefix)
    }

    /// The string holding a key's record (header and value),
    /// `{ns}:k:<full>`.
    pub(crate) fn record(&self, full: &str) -> String {
        let mut name = String::with_capacity(self.prefix.len() + 2 + full.len());
        name.push_str(&self.prefix);
        name.push_str("k:");
        name.push_str(full);
        name
    }

    /// Checks a key (or a lock name) with the key rules and places it
    /// under the root.
    pub(crate) fn key(&self, key: &str) -> Result<KeyName> {
        let canonical = key::normalize_key(key)?;
        Ok(KeyName {
            full: key::join(&self.root, &canonical),
            canonical,
        })
    }

    /// Checks a prefix with the key rules and gives its index range.
    pub(crate) fn tree(&self, prefix: &str) -> Result<TreeRange> {
        let p = key::normalize_prefix(prefix)?;
        let full = key::join(&self.root, &p);
        let (min, max) = if full.is_empty() {
            ("-".to_owned(), "+".to_owned())
        } else {
            let (a, b) = key::tree_range(&full);
            (
                format!("[{a}"),
                format!("({}", b.unwrap_or_else(|| format!("{full}0"))),
            )
        };
        Ok(TreeRange {
            full,
            min,
            max,
            names_a_key: !p.is_empty(),
        })
    }

    /// A full key relative to the root (unchanged if it is not under it).
    pub(crate) fn relative<'a>(&self, full: &'a str) -> &'a str {
        key::strip_root(&self.root, full).unwrap_or(full)
    }

    /// Like [`Layout::relative`], reusing the string when nothing is
    /// stripped.
    pub(crate) fn relative_owned(&self, full: String) -> String {
        match key::strip_root(&self.root, &full) {
            Some(rel) if rel.len() == full.len() => full,
            Some(rel) => rel.to_owned(),
            None => full,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let l = Layout::new("ns", "app".into());
        assert_eq!(l.prefix(), "{ns}:");
        assert_eq!(l.change_log(), "{ns}:log");
        let k = l.key("/a/b/").unwrap();
        assert_eq!((k.full.as_str(), k.canonical.as_str()), ("app/a/b", "a/b"));
        assert_eq!(l.record(&k.full), "{ns}:k:app/a/b");
        assert_eq!(l.relative("app/a/b"), "a/b");
        assert_eq!(l.relative_owned("app/a/b".into()), "a/b");
        let t = l.tree("").unwrap();
        assert_eq!(t.full, "app");
        assert!(!t.names_a_key);
        let t = l.tree("a").unwrap();
        assert!(t.names_a_key);
        let whole = Layout::new("ns", String::new()).tree("").unwrap();
        assert_eq!((whole.min.as_str(), whole.max.as_str()), ("-", "+"));
    }
}
