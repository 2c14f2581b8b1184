//! Multi-key transactions: [`Txn`], what [`crate::Store::txn`] runs.
//!
//! A transaction is a list of [`Compare`]s and two lists of [`TxnOp`]s. If
//! every compare holds, the `success` operations run, else the `failure`
//! ones; either way atomically, all or nothing, at one point in the store's
//! history. All writes of one transaction share one revision, and a watcher
//! sees a transaction's events together, never half of one.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anykv_core::Result<()> {
//! use anykv_core::{Compare, PutOptions, Store, Txn, TxnOp, TxnOpResult};
//! let store = anykv_memory::MemoryStore::new();
//! let rev = store.put("jobs/pending/7", "payload".into(), PutOptions::new()).await?;
//!
//! // Move job 7 from pending to running, only if nobody else did.
//! let moved = store
//!     .txn(
//!         Txn::new()
//!             .when(Compare::revision("jobs/pending/7", rev))
//!             .then(TxnOp::delete("jobs/pending/7"))
//!             .then(TxnOp::put("jobs/running/7", "payload"))
//!             .or_else(TxnOp::get("jobs/pending/7")),
//!     )
//!     .await?;
//! assert!(moved.succeeded);
//! let revision = moved.revision.expect("the branch wrote");
//! assert_eq!(moved.results[0], TxnOpResult::Delete { existed: true });
//! assert_eq!(moved.results[1], TxnOpResult::Put { revision });
//!
//! // The same transaction again: the compare fails, the other branch runs.
//! let again = store
//!     .txn(
//!         Txn::new()
//!             .when(Compare::revision("jobs/pending/7", rev))
//!             .then(TxnOp::delete("jobs/pending/7"))
//!             .or_else(TxnOp::get("jobs/pending/7")),
//!     )
//!     .await?;
//! assert!(!again.succeeded);
//! assert_eq!(again.failed_compare, Some(0));
//! assert_eq!(again.results, [TxnOpResult::Get(None)]);
//! assert_eq!(again.revision, None);
//! # Ok(())
//! # }
//! ```
//!
//! # Rules
//!
//! - Keys follow [the key rules](crate::key); every key is checked, and the
//!   whole transaction refused, before anything is sent.
//! - A key appears at most once among one branch's operations (a get, a put
//!   or a delete), so the order of a branch's operations never matters and
//!   a get returns the key as it was before the transaction. Compares may
//!   name any keys, written ones included, and the same key more than once.
//! - A branch holds at most [`crate::Capabilities::max_txn_ops`]
//!   operations; compares count against the same limit
//!   ([`Txn::validate`]).
//! - A put takes a TTL or a lease as [`crate::Store::put`] does; a put
//!   bound to a lease that is gone fails the whole transaction with
//!   [`crate::Error::LeaseLost`] and writes nothing.
//! - A delete of an absent key is not an error (`existed: false`) and
//!   writes nothing; a branch whose deletes all miss and has no put writes
//!   nothing and has no revision.
//! - A transaction whose outcome is unknown (the connection failed after
//!   sending it) fails with `Timeout` or `Unavailable`: it may have been
//!   applied, wholly or not at all.

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::key::normalize_key;
use crate::types::{Capabilities, KvPair, PutOptions};

pub use crate::types::DEFAULT_MAX_TXN_OPS;

/// One condition of a [`Txn`], on one key of the store's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key is present at exactly this revision.
    Revision {
        /// The key.
        key: String,
        /// The revision it must have.
        revision: u64,
    },
    /// The key is absent.
    Absent {
        /// The key.
        key: String,
    },
    /// The key is present, at any revision.
    Present {
        /// The key.
        key: String,
    },
    /// The key is present with exactly this value.
    Value {
        /// The key.
        key: String,
        /// The value it must hold, byte for byte.
        value: Bytes,
    },
}

impl Compare {
    /// `key` is present at exactly `revision`.
    pub fn revision(key: impl Into<String>, revision: u64) -> Self {
        Compare::Revision {
            key: key.into(),
            revision,
        }
    }

    /// `key` is absent.
    pub fn absent(key: impl Into<String>) -> Self {
        Compare::Absent { key: key.into() }
    }

    /// `key` is present.
    pub fn present(key: impl Into<String>) -> Self {
        Compare::Present { key: key.into() }
    }

    /// `key` is present and holds exactly `value`.
    pub fn value(key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        Compare::Value {
            key: key.into(),
            value: value.into(),
        }
    }

    /// The key compared.
    pub fn key(&self) -> &str {
        match self {
            Compare::Revision { key, .. }
            | Compare::Absent { key }
            | Compare::Present { key }
            | Compare::Value { key, .. } => key,
        }
    }

    fn key_mut(&mut self) -> &mut String {
        match self {
            Compare::Revision { key, .. }
            | Compare::Absent { key }
            | Compare::Present { key }
            | Compare::Value { key, .. } => key,
        }
    }

    /// Whether the compare holds for the key's current state: its value and
    /// revision, or `None` when absent.
    pub fn holds(&self, current: Option<(&[u8], u64)>) -> bool {
        match (self, current) {
            (Compare::Revision { revision, .. }, Some((_, r))) => *revision == r,
            (Compare::Absent { .. }, None) => true,
            (Compare::Present { .. }, Some(_)) => true,
            (Compare::Value { value, .. }, Some((v, _))) => value.as_ref() == v,
            _ => false,
        }
    }
}

/// One operation of a [`Txn`] branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOp {
    /// Creates or replaces the key.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: Bytes,
        /// A TTL or a lease, as [`crate::Store::put`] takes.
        options: PutOptions,
    },
    /// Deletes the key if present.
    Delete {
        /// The key.
        key: String,
    },
    /// Reads the key as it was before the transaction.
    Get {
        /// The key.
        key: String,
    },
}

impl TxnOp {
    /// A permanent put.
    pub fn put(key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        TxnOp::Put {
            key: key.into(),
            value: value.into(),
            options: PutOptions::new(),
        }
    }

    /// A put with a TTL or a lease.
    pub fn put_with(key: impl Into<String>, value: impl Into<Bytes>, options: PutOptions) -> Self {
        TxnOp::Put {
            key: key.into(),
            value: value.into(),
            options,
        }
    }

    /// A delete.
    pub fn delete(key: impl Into<String>) -> Self {
        TxnOp::Delete { key: key.into() }
    }

    /// A read.
    pub fn get(key: impl Into<String>) -> Self {
        TxnOp::Get { key: key.into() }
    }

    /// The key the operation names.
    pub fn key(&self) -> &str {
        match self {
            TxnOp::Put { key, .. } | TxnOp::Delete { key } | TxnOp::Get { key } => key,
        }
    }

    fn key_mut(&mut self) -> &mut String {
        match self {
            TxnOp::Put { key, .. } | TxnOp::Delete { key } | TxnOp::Get { key } => key,
        }
    }

    /// Whether the operation writes (a put or a delete).
    pub fn is_write(&self) -> bool {
        !matches!(self, TxnOp::Get { .. })
    }
}

/// A transaction: compares, then the `success` branch if all hold, else the
/// `failure` branch. See [the module documentation](self) for the rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Txn {
    /// Conditions that must all hold for `success` to run.
    pub compares: Vec<Compare>,
    /// What runs when every compare holds (also when there are none).
    pub success: Vec<TxnOp>,
    /// What runs when a compare does not hold.
    pub failure: Vec<TxnOp>,
}

impl Txn {
    /// An empty transaction: no compares, nothing to do.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a compare.
    pub fn when(mut self, compare: Compare) -> Self {
        self.compares.push(compare);
        self
    }

    /// Adds an operation to the `success` branch.
    pub fn then(mut self, op: TxnOp) -> Self {
        self.success.push(op);
        self
    }

    /// Adds an operation to the `failure` branch.
    pub fn or_else(mut self, op: TxnOp) -> Self {
        self.failure.push(op);
        self
    }

    /// Checks the transaction against a backend's limits and returns it
    /// with every key in canonical form: at most
    /// [`Capabilities::max_txn_ops`] compares and as many operations per
    /// branch, valid keys, each key at most once per branch, valid put
    /// options and values within [`Capabilities::max_value_size`].
    /// `Unsupported` when the backend has no transactions.
    pub fn validate(&self, caps: &Capabilities) -> Result<Txn> {
        if !caps.transactions {
            return Err(Error::Unsupported {
                operation: "txn",
                backend: caps.backend,
                reason: "this backend has no multi-key transactions".into(),
            });
        }
        let max = caps.max_txn_ops;
        for (what, n) in [
            ("compares", self.compares.len()),
            ("success operations", self.success.len()),
            ("failure operations", self.failure.len()),
        ] {
            if n > max {
                return Err(Error::InvalidArgument(format!(
                    "a transaction with {n} {what} is over {}'s limit of {max}",
                    caps.backend
                )));
            }
        }
        let mut txn = self.clone();
        for c in &mut txn.compares {
            let k = normalize_key(c.key())?;
            *c.key_mut() = k;
        }
        for (name, branch) in [("success", &mut txn.success), ("failure", &mut txn.failure)] {
            let mut seen = std::collections::HashSet::new();
            for op in branch.iter_mut() {
                let k = normalize_key(op.key())?;
                if !seen.insert(k.clone()) {
                    return Err(Error::InvalidArgument(format!(
                        "the key {k:?} appears twice in the transaction's {name} branch; \
                         a key may appear at most once per branch"
                    )));
                }
                if let TxnOp::Put { value, options, .. } = op {
                    crate::backend::check_write(
                        caps.backend,
                        &k,
                        value.len(),
                        caps.max_value_size,
                        options,
                    )?;
                }
                *op.key_mut() = k;
            }
        }
        Ok(txn)
    }
}

/// What one operation of the branch that ran gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOpResult {
    /// The put's revision: the transaction's.
    Put {
        /// The new revision.
        revision: u64,
    },
    /// Whether the deleted key existed.
    Delete {
        /// True if the key was there (and is now gone).
        existed: bool,
    },
    /// The key as it was before the transaction.
    Get(Option<KvPair>),
}

/// What [`crate::Store::txn`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TxnResponse {
    /// Whether every compare held (so the `success` branch ran).
    pub succeeded: bool,
    /// When a compare did not hold: the index of the first one that did
    /// not, in the order given.
    pub failed_compare: Option<usize>,
    /// One result per operation of the branch that ran, in its order.
    pub results: Vec<TxnOpResult>,
    /// The revision of the transaction's writes, shared by all of them;
    /// `None` when the branch that ran wrote nothing.
    pub revision: Option<u64>,
}

impl TxnResponse {
    /// A response.
    pub fn new(
        succeeded: bool,
        failed_compare: Option<usize>,
        results: Vec<TxnOpResult>,
        revision: Option<u64>,
    ) -> Self {
        TxnResponse {
            succeeded,
            failed_compare,
            results,
            revision,
        }
    }

    /// The pair a get at `index` of the branch that ran read, if it read
    /// one.
    pub fn get(&self, index: usize) -> Option<&KvPair> {
        match self.results.get(index) {
            Some(TxnOpResult::Get(pair)) => pair.as_ref(),
            _ => None,
        }
    }
}

/// The first compare of `compares` that does not hold, given each key's
/// current state (`current(key)`: value and revision, or `None`): what an
/// in-process backend, or one that read the compared keys, reports as
/// [`TxnResponse::failed_compare`].
pub fn first_failed_compare<'a>(
    compares: &[Compare],
    mut current: impl FnMut(&str) -> Option<(&'a [u8], u64)>,
) -> Option<usize> {
    compares.iter().position(|c| !c.holds(current(c.key())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps() -> Capabilities {
        let mut c = Capabilities::new("test");
        c.transactions = true;
        c.max_txn_ops = 3;
        c
    }

    #[test]
    fn validate_normalizes_keys() {
        let t = Txn::new()
            .when(Compare::absent("/a/"))
            .then(TxnOp::put("b/", "x"))
            .validate(&caps())
            .unwrap();
        assert_eq!(t.compares[0].key(), "a");
        assert_eq!(t.success[0].key(), "b");
    }

    #[test]
    fn validate_refuses_duplicates_and_limits() {
        let dup = Txn::new().then(TxnOp::put("a", "x")).then(TxnOp::get("/a"));
        assert!(matches!(
            dup.validate(&caps()),
            Err(Error::InvalidArgument(m)) if m.contains("twice")
        ));
        let many = (0..4).fold(Txn::new(), |t, i| t.then(TxnOp::get(format!("k{i}"))));
        assert!(matches!(
            many.validate(&caps()),
            Err(Error::InvalidArgument(_))
        ));
        let bad = Txn::new().then(TxnOp::put("a//b", "x"));
        assert!(matches!(
            bad.validate(&caps()),
            Err(Error::InvalidKey { .. })
        ));
        assert!(matches!(
            Txn::new().validate(&Capabilities::new("none")),
            Err(Error::Unsupported { .. })
        ));
    }

    #[test]
    fn compares_hold() {
        assert!(Compare::revision("a", 3).holds(Some((b"x", 3))));
        assert!(!Compare::revision("a", 3).holds(Some((b"x", 4))));
        assert!(!Compare::revision("a", 3).holds(None));
        assert!(Compare::absent("a").holds(None));
        assert!(!Compare::absent("a").holds(Some((b"", 1))));
        assert!(Compare::present("a").holds(Some((b"", 1))));
        assert!(Compare::value("a", "x").holds(Some((b"x", 9))));
        assert!(!Compare::value("a", "x").holds(Some((b"y", 9))));
        assert!(!Compare::value("a", "").holds(None));
        let cs = [Compare::present("a"), Compare::absent("b")];
        assert_eq!(first_failed_compare(&cs, |_| None), Some(0));
        assert_eq!(
            first_failed_compare(&cs, |k| (k == "a").then_some((&b""[..], 1))),
            None
        );
    }
}
