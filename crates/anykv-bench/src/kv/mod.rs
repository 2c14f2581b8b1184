//! The sides of every comparison behind one small trait, [`Kv`]: anykv
//! (any backend, through `Arc<dyn Store>`), the raw clients a careful
//! user would otherwise use (etcd-client, redis, zookeeper-client, and a
//! `BTreeMap` behind a `tokio::sync::RwLock` for the memory backend), and
//! on etcd and Redis OpenDAL's services ([`OpenDal`]), for the workloads
//! OpenDAL has.
//!
//! Every side gets keys relative to a namespace of its own, so the sides
//! never see each other's data.

use std::sync::Arc;

use anykv::{Bytes, Compare, LockOptions, PutOptions, Store, Txn, TxnOp, WatchEvent, WatchOptions};
use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};

use crate::{BenchError, Workload};

mod etcd;
mod memory;
mod opendal;
mod redis;
mod zookeeper;

pub use etcd::EtcdRaw;
pub use memory::MemoryBaseline;
pub use opendal::OpenDal;
pub use redis::RedisRaw;
pub use zookeeper::ZkRaw;

/// The result type of the benchmark.
pub type Result<T> = std::result::Result<T, BenchError>;

/// A stream that yields one item per change of the watched key, after the
/// watch is established.
pub type ChangeStream = BoxStream<'static, Result<()>>;

/// One side of a comparison: the operations the workloads need, done the
/// way a careful user of that client would do them.
#[async_trait]
pub trait Kv: Send + Sync + 'static {
    /// A short name for tables ("anykv", "etcd-client", ...).
    fn label(&self) -> &'static str;

    /// Whether this side has `workload` (OpenDAL has no compare-and-swap,
    /// watch or lock, and no list on Redis). A side is only asked for the
    /// operations of the workloads it has, and only their keys are
    /// written to it.
    ///
    /// `put-min` and `cas-min` compare anykv with a hand-written script
    /// that does the least work a revisioned store must; only the raw
    /// Redis side has one.
    fn supports(&self, workload: Workload) -> bool {
        !matches!(workload, Workload::PutMin | Workload::CasMin)
    }

    /// Creates or replaces `key`.
    async fn put(&self, key: &str, value: &Bytes) -> Result<()>;

    /// The value of `key`, if present.
    async fn get(&self, key: &str) -> Result<Option<Bytes>>;

    /// Deletes `key` (absent is fine).
    async fn delete(&self, key: &str) -> Result<()>;

    /// Creates `key` for compare-and-swap and returns its version.
    async fn cas_create(&self, key: &str, value: &Bytes) -> Result<u64> {
        self.put(key, value).await?;
        self.version(key).await
    }

    /// The current version (revision) of `key`, for compare-and-swap.
    async fn version(&self, key: &str) -> Result<u64>;

    /// Replaces `key` only if its version is `expected`; returns the new
    /// version, or an error if the swap failed.
    async fn cas(&self, key: &str, value: &Bytes, expected: u64) -> Result<u64>;

    /// If `a` and `b` still have the versions `expected`, writes `value`
    /// to both, atomically; returns their new versions, or an error if
    /// a compare failed. The keys exist (made by [`Kv::cas_create`]).
    async fn txn2(
        &self,
        a: &str,
        b: &str,
        value: &Bytes,
        expected: (u64, u64),
    ) -> Result<(u64, u64)>;

    /// `put-min`: writes `key` doing the least work a revisioned store
    /// must (see [`Workload::PutMin`]); anykv's `put` on the anykv side.
    async fn put_min(&self, key: &str, value: &Bytes) -> Result<()> {
        self.put(key, value).await
    }

    /// `cas-min`: creates `key` for [`Kv::cas_min`] and returns its
    /// version.
    async fn cas_min_create(&self, key: &str, value: &Bytes) -> Result<u64> {
        self.cas_create(key, value).await
    }

    /// `cas-min`: compare-and-swap doing the least work a revisioned
    /// store must (see [`Workload::CasMin`]); anykv's `atomic_put` on the
    /// anykv side.
    async fn cas_min(&self, key: &str, value: &Bytes, expected: u64) -> Result<u64> {
        self.cas(key, value, expected).await
    }

    /// Writes a key that [`Kv::list`] must find (the raw Redis side also
    /// indexes it).
    async fn put_listed(&self, key: &str, value: &Bytes) -> Result<()> {
        self.put(key, value).await
    }

    /// Deletes a key written with [`Kv::put_listed`].
    async fn delete_listed(&self, key: &str) -> Result<()> {
        self.delete(key).await
    }

    /// Every key and value under `prefix/`; returns how many.
    async fn list(&self, prefix: &str) -> Result<usize>;

    /// Acquires the lock `name` (waiting as long as it takes), then
    /// releases it. `task` tells the contenders of one process apart.
    async fn lock_release(&self, name: &str, task: usize) -> Result<()>;

    /// `n` watchers of `key`, each established before this returns.
    async fn watchers(&self, key: &str, n: usize) -> Result<Vec<ChangeStream>>;

    /// Removes what this side wrote (keys, lock bookkeeping, settings).
    async fn cleanup(&self) -> Result<()>;
}

fn err(msg: impl Into<String>) -> BenchError {
    BenchError::new(msg)
}

/// The anykv side: one `Arc<dyn Store>` shared by every task.
pub struct AnykvKv {
    store: Arc<dyn Store>,
    prefix: String,
}

impl AnykvKv {
    /// The anykv side on `store`, with every key under `prefix/`.
    pub fn new(store: Arc<dyn Store>, prefix: impl Into<String>) -> Self {
        AnykvKv {
            store,
            prefix: prefix.into(),
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    fn k(&self, key: &str) -> String {
        format!("{}/{key}", self.prefix)
    }
}

#[async_trait]
impl Kv for AnykvKv {
    fn label(&self) -> &'static str {
        "anykv"
    }

    fn supports(&self, _workload: Workload) -> bool {
        true
    }

    async fn put(&self, key: &str, value: &Bytes) -> Result<()> {
        self.store
            .put(&self.k(key), value.clone(), PutOptions::new())
            .await?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        Ok(self.store.get(&self.k(key)).await?.map(|p| p.value))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.store.delete(&self.k(key)).await?;
        Ok(())
    }

    async fn version(&self, key: &str) -> Result<u64> {
        match self.store.get(&self.k(key)).await? {
            Some(p) => Ok(p.revision),
            None => Err(err(format!("anykv: {key} is missing"))),
        }
    }

    async fn cas(&self, key: &str, value: &Bytes, expected: u64) -> Result<u64> {
        Ok(self
            .store
            .atomic_put(
                &self.k(key),
                value.clone(),
                Some(expected),
                PutOptions::new(),
            )
            .await?)
    }

    async fn txn2(
        &self,
        a: &str,
        b: &str,
        value: &Bytes,
        expected: (u64, u64),
    ) -> Result<(u64, u64)> {
        let (a, b) = (self.k(a), self.k(b));
        let r = self
            .store
            .txn(
                Txn::new()
                    .when(Compare::revision(a.clone(), expected.0))
                    .when(Compare::revision(b.clone(), expected.1))
                    .then(TxnOp::put(a, value.clone()))
                    .then(TxnOp::put(b, value.clone())),
            )
            .await?;
        match (r.succeeded, r.revision) {
            (true, Some(rev)) => Ok((rev, rev)),
            _ => Err(err("anykv: a two-key transaction failed its compares")),
        }
    }

    async fn list(&self, prefix: &str) -> Result<usize> {
        Ok(self.store.list(&self.k(prefix)).await?.len())
    }

    async fn lock_release(&self, name: &str, _task: usize) -> Result<()> {
        let guard = self.store.lock(&self.k(name), LockOptions::new()).await?;
        guard.release().await?;
        Ok(())
    }

    async fn watchers(&self, key: &str, n: usize) -> Result<Vec<ChangeStream>> {
        let full = self.k(key);
        let store = self.store.clone();
        let opened: Vec<Result<ChangeStream>> = stream::iter(0..n)
            .map(|_| {
                let store = store.clone();
                let full = full.clone();
                async move { anykv_watch(store, &full).await }
            })
            .buffer_unordered(32)
            .collect()
            .await;
        opened.into_iter().collect()
    }

    async fn cleanup(&self) -> Result<()> {
        self.store.delete_tree(&self.prefix).await?;
        Ok(())
    }
}

/// An anykv watch of one key, past its initial state and `Synced`.
pub(crate) async fn anykv_watch(store: Arc<dyn Store>, key: &str) -> Result<ChangeStream> {
    let mut s = store.watch(key, WatchOptions::new()).await?;
    loop {
        match s.next().await {
            Some(Ok(WatchEvent::Synced { .. })) => break,
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => return Err(err("anykv: the watch ended before Synced")),
        }
    }
    Ok(s.map(|e| e.map(|_| ()).map_err(BenchError::from)).boxed())
}
