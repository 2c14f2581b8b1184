//! A store's root: where the keys a caller names live among the backend's
//! own, full names.

use std::borrow::Cow;

use bytes::Bytes;

use crate::{key, KvPair, Result};

/// The root a store was opened on, and the mapping between the keys its
/// caller passes (checked, canonical, relative to the root) and the full
/// names the backend keeps them under (`root/key`).
///
/// ```
/// use anykv_core::backend::Root;
///
/// let root = Root::new("/tenant/app/")?;
/// assert_eq!(root.key("/a/b/")?, "tenant/app/a/b");
/// assert_eq!(root.prefix("")?, "tenant/app");
/// assert_eq!(root.relative("tenant/app/a/b"), "a/b");
/// assert!(root.key("a//b").is_err());
/// assert!(Root::new("x/..").is_err());
/// # Ok::<(), anykv_core::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Root {
    root: String,
}

impl Root {
    /// A checked root (`Config` error for a bad one); `""` is the top.
    pub fn new(root: &str) -> Result<Self> {
        Ok(Root {
            root: key::normalize_root(root)?,
        })
    }

    /// The canonical root.
    pub fn as_str(&self) -> &str {
        &self.root
    }

    /// The full name of `key`, after checking it (`InvalidKey`); borrowed
    /// when the root is the top.
    pub fn key<'k>(&self, key: &'k str) -> Result<Cow<'k, str>> {
        Ok(self.under(key::canonical_key(key)?))
    }

    /// The full name of `prefix`, after checking it; the empty prefix is
    /// the root itself, whose tree is everything under the root.
    pub fn prefix<'k>(&self, prefix: &'k str) -> Result<Cow<'k, str>> {
        Ok(self.under(key::canonical_prefix(prefix)?))
    }

    /// A canonical key or prefix under the root.
    pub fn under<'k>(&self, canonical: &'k str) -> Cow<'k, str> {
        if self.root.is_empty() {
            Cow::Borrowed(canonical)
        } else {
            Cow::Owned(key::join(&self.root, canonical))
        }
    }

    /// The key relative to the root of a full name under it (a name
    /// outside the root is returned whole).
    pub fn relative<'k>(&self, full: &'k str) -> &'k str {
        key::strip_root(&self.root, full).unwrap_or(full)
    }

    /// A pair for the caller from a full name.
    pub fn pair(&self, full: &str, value: Bytes, revision: u64) -> KvPair {
        KvPair::new(self.relative(full), value, revision)
    }
}
