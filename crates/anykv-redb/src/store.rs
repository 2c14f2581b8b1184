//! The store: [`RedbStore`], a handle on an open file under a root, and
//! its `Store` implementation.

use std::any::Any;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anykv_core::backend::{check_write, compare_outcome, Owner, Root, WatchTarget};
use anykv_core::{
    async_trait, key, Bytes, Capabilities, Error, KvPair, Lease, ListOptions, LockGuard,
    LockOptions, PutOptions, Result, Store, StoreStats, Txn, TxnResponse, WatchOptions,
    WatchStream,
};
use parking_lot::RwLock;

use crate::batch::deadline_after;
use crate::config::{RedbConfig, BACKEND, MAX_TXN_OPS, MIN_TTL};
use crate::db::{blocking_here, Db};
use crate::read;
use crate::txn;
use crate::workers::blocking;

/// redb takes values of up to 3 GiB; the pair's header comes on top.
const REDB_MAX_VALUE: usize = (3 << 30) - 64;

/// A handle on a redb file under a root. Cheap to clone; clones are the
/// same client. See the [crate documentation](crate).
///
/// The file closes with the last store of the process opened on it: after
/// [`Store::close`], on the file's writer thread; when the last handle is
/// simply dropped, on the dropping thread (a sync of the file; on a
/// multi-thread Tokio runtime, inside `block_in_place`).
#[derive(Clone)]
pub struct RedbStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// What this handle holds; closed with the last clone, it gives all of
    /// it back, as `close()` does.
    owner: Owner,
    /// The open file; `None` once this handle is closed, so the file
    /// closes with its last handle.
    db: RwLock<Option<Arc<Db>>>,
    path: std::path::PathBuf,
    root: Root,
    caps: Capabilities,
    request_timeout: Duration,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Revoking leases deletes their keys: a write.
        let owner = &self.owner;
        blocking_here(|| owner.close());
    }
}

impl fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.inner.path)
            .field("root", &self.inner.root)
            .field("closed", &self.inner.owner.is_closed())
            .finish()
    }
}

impl RedbStore {
    /// Opens a store as configured: the file is created if missing, and
    /// shared with every other store of this process opened on it. `Config`
    /// for a bad root or a file that cannot be created (no such directory,
    /// no permission); `Unavailable` naming the file when another process
    /// has it open; `Backend` for a file that is not a redb file, or is
    /// corrupt.
    pub async fn open(config: RedbConfig) -> Result<Self> {
        let root = Root::new(&config.root)?;
        let opened = config.clone();
        let db = blocking(move || Db::open(&opened)).await?;
        let mut caps = Capabilities::new(BACKEND);
        caps.min_ttl = MIN_TTL;
        caps.max_value_size = config.max_value_size.min(REDB_MAX_VALUE);
        caps.transactions = true;
        caps.max_txn_ops = MAX_TXN_OPS;
        Ok(RedbStore {
            inner: Arc::new(Inner {
                owner: Owner::new(BACKEND),
                path: db.path.clone(),
                db: RwLock::new(Some(db)),
                root,
                caps,
                request_timeout: config.request_timeout,
            }),
        })
    }

    /// Opens a `redb://` URL (see the crate documentation).
    pub async fn open_url(url: &str) -> Result<Self> {
        Self::open(RedbConfig::from_url(&anykv_core::parse_url(url)?)?).await
    }

    /// This handle as the type-erased `Arc<dyn Store>` that `anykv::open`
    /// returns.
    pub fn into_dyn(self) -> Arc<dyn Store> {
        Arc::new(self)
    }

    /// The file's canonical path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The root this handle works under.
    pub fn root(&self) -> &str {
        self.inner.root.as_str()
    }

    /// The file's current revision (the last one granted); `Closed` after
    /// close.
    pub fn revision(&self) -> Result<u64> {
        Ok(self.db()?.revision())
    }

    /// Discards the history up to and including `revision`, in the file
    /// too: watches can no longer resume from before it.
    pub async fn compact(&self, revision: u64) -> Result<()> {
        let db = self.ready().await?;
        db.on_writer(move |db| db.compact(revision)).await
    }

    /// Freezes the file for every store of this process, as a paused
    /// server freezes: calls wait until [`RedbStore::resume`] or their
    /// request timeout (then `Timeout`). For testing how a program copes
    /// with a store that stops answering.
    pub fn pause(&self) -> Result<()> {
        self.db()?.gate.pause();
        Ok(())
    }

    /// Lets a file frozen by [`RedbStore::pause`] answer again.
    pub fn resume(&self) -> Result<()> {
        self.db()?.gate.resume();
        Ok(())
    }

    /// What a server restart is for a file: calls wait while the file is
    /// closed cleanly, left closed for `outage`, and opened again (keys
    /// whose deadline passed meanwhile go, with their `Delete` events).
    /// Leases, locks and watches of this process go on.
    pub async fn restart(&self, outage: Duration) -> Result<()> {
        let db = self.db()?;
        db.gate.pause();
        let reopened = db.clone().on_writer(move |db| db.restart(outage)).await;
        db.gate.resume();
        reopened
    }

    fn db(&self) -> Result<Arc<Db>> {
        self.inner.owner.ensure_open()?;
        self.inner
            .db
            .read()
            .clone()
            .ok_or_else(|| Error::closed(BACKEND))
    }

    /// The open file, after waiting out a frozen one; `Closed` after close.
    async fn ready(&self) -> Result<Arc<Db>> {
        let db = self.db()?;
        if db.gate.is_paused() {
            db.gate.pass(BACKEND, self.inner.request_timeout).await?;
            self.inner.owner.ensure_open()?;
        }
        Ok(db)
    }

    /// The full name of a key about to be written and its deadline, after
    /// every check.
    fn checked(
        &self,
        key: &str,
        value: &Bytes,
        options: &PutOptions,
    ) -> Result<(String, Option<Duration>)> {
        let root = &self.inner.root;
        let full = root.key(key)?.into_owned();
        let max = self.inner.caps.max_value_size;
        check_write(BACKEND, root.relative(&full), value.len(), max, options)?;
        Ok((full, options.ttl.map(|t| t.max(MIN_TTL))))
    }

    fn pairs(&self, pairs: Vec<KvPair>) -> Vec<KvPair> {
        let root = &self.inner.root;
        pairs
            .into_iter()
            .map(|p| root.pair(&p.key, p.value, p.revision))
            .collect()
    }

    async fn write_pair(
        &self,
        key: &str,
        value: Bytes,
        expected: Option<Option<u64>>,
        options: PutOptions,
    ) -> Result<u64> {
        let db = self.ready().await?;
        let (full, ttl) = self.checked(key, &value, &options)?;
        let shown = self.inner.root.relative(&full).to_owned();
        db.on_writer(move |db| {
            let leases = db.leases.clone();
            db.write(|b| {
                if let Some(expected) = expected {
                    let current = b.header(&full)?.map(|h| h.revision);
                    compare_outcome(BACKEND, &shown, expected, current)?;
                }
                if let Some(l) = options.lease {
                    leases.bind(l, &full)?;
                }
                let deadline = ttl.map(deadline_after);
                b.put(&full, &value, deadline, options.lease)
            })
        })
        .await
    }

    async fn watch_target(
        &self,
        target: WatchTarget,
        options: WatchOptions,
    ) -> Result<WatchStream> {
        let db = self.ready().await?;
        let inner = self.inner.clone();
        db.on_writer(move |db| {
            db.quiet(|revision| {
                let pairs = match options.from_revision {
                    None => db.read(|t| read::snapshot(t, &target))?,
                    Some(_) => Vec::new(),
                };
                let snapshot = || (pairs, revision);
                db.log.watch(
                    &inner.owner,
                    &inner.root,
                    target.clone(),
                    &options,
                    snapshot,
                )
            })
        })
        .await
    }
}

#[async_trait]
impl Store for RedbStore {
    fn capabilities(&self) -> &Capabilities {
        &self.inner.caps
    }

    fn stats(&self) -> StoreStats {
        self.inner.owner.stats()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    async fn get(&self, key: &str) -> Result<Option<KvPair>> {
        let db = self.ready().await?;
        let full = self.inner.root.key(key)?.into_owned();
        let got = db
            .on_reader(move |db| db.read(|t| read::get(t, &full)))
            .await?;
        Ok(self.pairs(got.into_iter().collect()).pop())
    }

    async fn put(&self, key: &str, value: Bytes, options: PutOptions) -> Result<u64> {
        self.write_pair(key, value, None, options).await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        let db = self.ready().await?;
        let full = self.inner.root.key(key)?.into_owned();
        let deleted = db
            .on_writer(move |db| db.write(|b| b.delete(&full)))
            .await?;
        Ok(deleted.is_some())
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.get(key).await?.is_some())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<KvPair>> {
        self.list_with(prefix, ListOptions::new()).await
    }

    async fn list_with(&self, prefix: &str, options: ListOptions) -> Result<Vec<KvPair>> {
        let db = self.ready().await?;
        let after = options.validate()?;
        let root = &self.inner.root;
        let full = root.prefix(prefix)?.into_owned();
        let after = after.map(|a| root.under(&a).into_owned());
        let limit = options.limit.unwrap_or(usize::MAX);
        let keys_only = options.keys_only;
        let pairs = db
            .on_reader(move |db| {
                db.read(|t| read::tree(t, &full, after.as_deref(), limit, keys_only))
            })
            .await?;
        Ok(self.pairs(pairs))
    }

    async fn delete_tree(&self, prefix: &str) -> Result<u64> {
        let db = self.ready().await?;
        let full = self.inner.root.prefix(prefix)?.into_owned();
        // The prefix key itself goes too, unless it is the root.
        let with_key = !key::canonical_prefix(prefix)?.is_empty();
        db.on_writer(move |db| {
            db.write(|b| {
                let mut doomed = read::tree_keys(b.txn(), &full)?;
                if with_key {
                    doomed.insert(0, full.clone());
                }
                let mut deleted = 0;
                for k in doomed {
                    deleted += u64::from(b.delete(&k)?.is_some());
                }
                Ok(deleted)
            })
        })
        .await
    }

    async fn atomic_put(
        &self,
        key: &str,
        value: Bytes,
        expected: Option<u64>,
        options: PutOptions,
    ) -> Result<u64> {
        self.write_pair(key, value, Some(expected), options).await
    }

    async fn atomic_delete(&self, key: &str, expected: u64) -> Result<()> {
        let db = self.ready().await?;
        let full = self.inner.root.key(key)?.into_owned();
        let shown = self.inner.root.relative(&full).to_owned();
        db.on_writer(move |db| {
            db.write(|b| {
                let current = b.header(&full)?.map(|h| h.revision);
                compare_outcome(BACKEND, &shown, Some(expected), current)?;
                b.delete(&full)?;
                Ok(())
            })
        })
        .await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        let db = self.ready().await?;
        let txn = txn.validate(&self.inner.caps)?;
        let root = self.inner.root.clone();
        db.on_writer(move |db| {
            let leases = db.leases.clone();
            let mut bound = Vec::new();
            let response = db.write(|b| txn::run(b, &leases, &root, &txn, &mut bound));
            if response.is_err() {
                // Nothing was written: the keys are bound as they were.
                for (lease, full) in bound {
                    leases.unbind(lease, &full);
                }
            }
            response
        })
        .await
    }

    async fn watch(&self, key: &str, options: WatchOptions) -> Result<WatchStream> {
        let full = self.inner.root.key(key)?.into_owned();
        self.watch_target(WatchTarget::Key(full), options).await
    }

    async fn watch_tree(&self, prefix: &str, options: WatchOptions) -> Result<WatchStream> {
        let full = self.inner.root.prefix(prefix)?.into_owned();
        self.watch_target(WatchTarget::Tree(full), options).await
    }

    async fn status(&self) -> Result<anykv_core::StoreStatus> {
        let db = self.ready().await?;
        let durability = match db.config.durability {
            crate::config::Durability::Immediate => "immediate",
            crate::config::Durability::Eventual => "eventual",
        };
        let mut status = anykv_core::StoreStatus::new(BACKEND, Some(db.revision()), self.stats())
            .with_detail("file", self.inner.path.display().to_string())
            .with_detail("durability", durability)
            .with_detail("version", env!("CARGO_PKG_VERSION"));
        if !self.root().is_empty() {
            status = status.with_detail("root", self.root().to_owned());
        }
        if let Ok(meta) = std::fs::metadata(&self.inner.path) {
            status = status.with_detail("file size", format!("{} bytes", meta.len()));
        }
        Ok(status)
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<Lease> {
        let db = self.ready().await?;
        db.leases.grant(&self.inner.owner, ttl)
    }

    async fn lock(&self, key: &str, options: LockOptions) -> Result<LockGuard> {
        let db = self.ready().await?;
        let inner = &self.inner;
        db.locks
            .lock(&inner.owner, &inner.root, key, &options)
            .await
    }

    async fn try_lock(&self, key: &str, options: LockOptions) -> Result<Option<LockGuard>> {
        let db = self.ready().await?;
        let inner = &self.inner;
        db.locks.try_lock(&inner.owner, &inner.root, key, &options)
    }

    async fn close(&self) -> Result<()> {
        let inner = self.inner.clone();
        let close = move |_: &Db| {
            // Revoking the leases deletes their keys: writes.
            inner.owner.close();
            Ok(())
        };
        // The handle goes to the writer thread, where the file closes with
        // its last handle (its last write is a sync).
        let db = self.inner.db.write().take();
        match db {
            Some(db) => db.on_writer(close).await,
            // Closed already, or closing in another call.
            None => Ok(()),
        }
    }
}

/// Compacts the redb store behind a type-erased handle (see
/// [`RedbStore::compact`]); an `InvalidArgument` for any other store. This
/// is the conformance suite's compact hook for redb stores.
pub async fn compact(store: &dyn Store, revision: u64) -> Result<()> {
    store
        .as_any()
        .downcast_ref::<RedbStore>()
        .ok_or_else(|| Error::InvalidArgument(format!("{store:?} is not a redb store")))?
        .compact(revision)
        .await
}
