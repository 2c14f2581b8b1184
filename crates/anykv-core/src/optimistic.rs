//! Optimistic read-modify-write over several keys, on any store with
//! transactions: [`optimistic`].
//!
//! A closure reads keys and stages writes through a [`TxnContext`]; on
//! commit, one [`Txn`] checks that every key read still has the revision it
//! was read at (or is still absent) and applies the writes. When another
//! client changed a key in between, the closure runs again from the start,
//! after a short backoff, up to [`Optimistic::max_attempts`] times.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anykv_core::Result<()> {
//! use anykv_core::optimistic::{optimistic, Optimistic};
//! use anykv_core::{PutOptions, Store};
//! let store = anykv_memory::MemoryStore::new();
//! store.put("bank/alice", "100".into(), PutOptions::new()).await?;
//! store.put("bank/bob", "0".into(), PutOptions::new()).await?;
//!
//! // Move 30 from alice to bob, whatever else runs at the same time.
//! let moved = optimistic(&store, &Optimistic::new(), |tx| {
//!     Box::pin(async move {
//!         let balance = |v: Option<anykv_core::Bytes>| -> u64 {
//!             v.and_then(|b| std::str::from_utf8(&b).ok()?.parse().ok()).unwrap_or(0)
//!         };
//!         let alice = balance(tx.get("bank/alice").await?);
//!         let bob = balance(tx.get("bank/bob").await?);
//!         if alice < 30 {
//!             return Ok(false);
//!         }
//!         tx.put("bank/alice", (alice - 30).to_string());
//!         tx.put("bank/bob", (bob + 30).to_string());
//!         Ok(true)
//!     })
//! })
//! .await?;
//! assert!(moved);
//! assert_eq!(store.get("bank/bob").await?.unwrap().value, "30");
//! # Ok(())
//! # }
//! ```
//!
//! The closure may run several times, so it should have no effects outside
//! the context. An error it returns ends the attempt and is returned as is,
//! with nothing written.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;

use crate::backend::compare_outcome;
use crate::error::{Error, Result};
use crate::key::normalize_key;
use crate::store::Store;
use crate::txn::{Compare, Txn, TxnOp};
use crate::types::{KvPair, PutOptions};

/// How [`optimistic`] retries after a conflict.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Optimistic {
    /// How many times the closure runs at most (at least 1).
    pub max_attempts: u32,
    /// The wait before the second attempt; doubled for each later one.
    pub backoff: Duration,
    /// The longest wait between attempts.
    pub max_backoff: Duration,
}

impl Default for Optimistic {
    fn default() -> Self {
        Optimistic {
            max_attempts: 16,
            backoff: Duration::from_millis(2),
            max_backoff: Duration::from_millis(200),
        }
    }
}

impl Optimistic {
    /// Up to 16 attempts, waiting 2 ms, then twice as long each time up to
    /// 200 ms, each wait with random jitter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the most attempts (at least 1).
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Sets the first wait and the longest one.
    pub fn with_backoff(mut self, first: Duration, max: Duration) -> Self {
        self.backoff = first;
        self.max_backoff = max.max(first);
        self
    }

    fn wait_before(&self, attempt: u32) -> Duration {
        let doubled = self
            .backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let wait = doubled.min(self.max_backoff);
        // Jitter between half and the whole wait, so clients that collided
        // do not collide again in step.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        wait / 2 + wait.mul_f64(f64::from(nanos % 1000) / 2000.0)
    }
}

/// What the closure of [`optimistic`] reads and writes through.
pub struct TxnContext<'s> {
    store: &'s dyn Store,
    /// Every key read, with what it held when read.
    reads: BTreeMap<String, Option<KvPair>>,
    /// Staged writes: a value to put, or `None` to delete.
    writes: BTreeMap<String, Option<(Bytes, PutOptions)>>,
}

impl std::fmt::Debug for TxnContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxnContext")
            .field("reads", &self.reads.keys().collect::<Vec<_>>())
            .field("writes", &self.writes.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl<'s> TxnContext<'s> {
    fn new(store: &'s dyn Store) -> Self {
        TxnContext {
            store,
            reads: BTreeMap::new(),
            writes: BTreeMap::new(),
        }
    }

    /// The value of `key`: what this attempt wrote to it, else what the
    /// store holds (read once per attempt; the commit checks it is still
    /// so).
    pub async fn get(&mut self, key: &str) -> Result<Option<Bytes>> {
        let key = normalize_key(key)?;
        if let Some(staged) = self.writes.get(&key) {
            return Ok(staged.as_ref().map(|(v, _)| v.clone()));
        }
        Ok(self.read(key).await?.map(|p| p.value))
    }

    /// The pair at `key` as the store holds it, ignoring this attempt's
    /// own writes (read once per attempt; the commit checks it is still
    /// so).
    pub async fn get_pair(&mut self, key: &str) -> Result<Option<KvPair>> {
        let key = normalize_key(key)?;
        self.read(key).await
    }

    async fn read(&mut self, key: String) -> Result<Option<KvPair>> {
        if let Some(read) = self.reads.get(&key) {
            return Ok(read.clone());
        }
        let pair = self.store.get(&key).await?;
        self.reads.insert(key, pair.clone());
        Ok(pair)
    }

    /// Stages a permanent put of `key`, applied at commit.
    pub fn put(&mut self, key: &str, value: impl Into<Bytes>) {
        self.put_with(key, value, PutOptions::new());
    }

    /// Stages a put with a TTL or a lease, applied at commit.
    pub fn put_with(&mut self, key: &str, value: impl Into<Bytes>, options: PutOptions) {
        self.writes
            .insert(key.to_owned(), Some((value.into(), options)));
    }

    /// Stages a delete of `key`, applied at commit.
    pub fn delete(&mut self, key: &str) {
        self.writes.insert(key.to_owned(), None);
    }

    /// The transaction that commits this attempt.
    fn commit_txn(&self) -> Result<Txn> {
        let mut txn = Txn::new();
        for (key, read) in &self.reads {
            txn = txn.when(match read {
                Some(pair) => Compare::revision(key.clone(), pair.revision),
                None => Compare::absent(key.clone()),
            });
        }
        // Staged keys were not normalized when staged (staging cannot
        // fail); a bad one fails the commit here, with nothing written.
        let mut ops: BTreeMap<String, TxnOp> = BTreeMap::new();
        for (key, write) in &self.writes {
            let key = normalize_key(key)?;
            let op = match write {
                Some((value, options)) => {
                    TxnOp::put_with(key.clone(), value.clone(), options.clone())
                }
                None => TxnOp::delete(key.clone()),
            };
            ops.insert(key, op);
        }
        Ok(ops.into_values().fold(txn, Txn::then))
    }
}

/// Runs `f` and commits what it staged, atomically, if nothing it read has
/// changed since; otherwise runs it again, up to
/// [`Optimistic::max_attempts`] times with backoff. Returns what the
/// successful attempt returned.
///
/// After the last attempt conflicts, the error is the conflict as a
/// compare-and-swap reports it: [`Error::KeyModified`], [`Error::KeyExists`]
/// or [`Error::KeyNotFound`] for the first key read that changed. A store
/// without transactions fails with [`Error::Unsupported`].
pub async fn optimistic<'s, T, F>(store: &'s dyn Store, options: &Optimistic, mut f: F) -> Result<T>
where
    F: for<'c> FnMut(&'c mut TxnContext<'s>) -> BoxFuture<'c, Result<T>>,
{
    let backend = store.capabilities().backend;
    let attempts = options.max_attempts.max(1);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut cx = TxnContext::new(store);
        let value = f(&mut cx).await?;
        let txn = cx.commit_txn()?;
        if txn.compares.is_empty() && txn.success.is_empty() {
            return Ok(value);
        }
        let response = store.txn(txn.clone()).await?;
        if response.succeeded {
            return Ok(value);
        }
        if attempt >= attempts {
            let failed = response
                .failed_compare
                .and_then(|i| txn.compares.get(i))
                .ok_or_else(|| Error::Backend {
                    backend,
                    message: "a transaction failed without naming the compare".into(),
                    source: None,
                })?;
            let key = failed.key();
            let expected = match failed {
                Compare::Revision { revision, .. } => Some(*revision),
                _ => None,
            };
            let current = store.get(key).await?.map(|p| p.revision);
            return Err(match compare_outcome(backend, key, expected, current) {
                Err(e) => e,
                // Changed and changed back to the same revision cannot
                // happen (revisions only grow), but a key read absent may
                // have come and gone again.
                Ok(()) => Error::KeyModified {
                    backend,
                    key: key.to_owned(),
                    expected: expected.unwrap_or(0),
                    actual: current.unwrap_or(0),
                },
            });
        }
        tokio::time::sleep(options.wait_before(attempt)).await;
    }
}
