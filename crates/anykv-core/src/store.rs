//! The [`Store`] trait.

use std::any::Any;
use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::Result;
use crate::handles::{Lease, LockGuard};
use crate::txn::{Txn, TxnResponse};
use crate::types::{
    Capabilities, KvPair, ListOptions, LockOptions, PutOptions, StoreStats, StoreStatus,
    WatchOptions, WatchStream,
};

/// One key-value store: etcd, ZooKeeper, Redis or in-process, behind one
/// contract.
///
/// The trait is object safe; `Arc<dyn Store>` (what [`crate::open`] returns)
/// is the everyday type, cheap to clone and share between tasks.
///
/// Every key argument follows [the key rules](crate::key) and is checked
/// before anything is sent; results carry canonical keys relative to the
/// store's root. See the crate documentation for the whole contract.
#[async_trait]
pub trait Store: Send + Sync + Debug + 'static {
    /// What this backend can do, and its limits.
    ///
    /// `fn capabilities(&self) -> &Capabilities`
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> anykv_core::Result<()> {
    /// use anykv_core::{PutOptions, Store};
    /// let store = anykv_memory::MemoryStore::open_url("memory://")?;
    /// let caps = store.capabilities();
    /// assert_eq!(caps.backend, "memory");
    /// assert!(caps.watch && caps.leases && caps.locks && caps.transactions);
    /// # Ok(())
    /// # }
    /// ```
    fn capabilities(&self) -> &Capabilities;

    /// What the store holds open right now.
    ///
    /// `fn stats(&self) -> StoreStats`
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> anykv_core::Result<()> {
    /// use anykv_core::{PutOptions, Store};
    /// let store = anykv_memory::MemoryStore::open_url("memory://")?;
    /// let lease = store.grant_lease(std::time::Duration::from_secs(10)).await?;
    /// assert_eq!(store.stats().leases, 1);
    /// lease.revoke().await?;
    /// assert_eq!(store.stats().leases, 0);
    /// # Ok(())
    /// # }
    /// ```
    fn stats(&self) -> StoreStats;

    /// The concrete store, for backend-specific calls through
    /// `Arc<dyn Store>` (`store.as_any().downcast_ref::<MemoryStore>()`).
    fn as_any(&self) -> &dyn Any;

    /// The pair at `key`, or `None` if the key is absent.
    ///
    /// `async fn get(&self, key: &str) -> Result<Option<KvPair>>`
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> anykv_core::Result<()> {
    /// use anykv_core::{PutOptions, Store};
    /// let store = anykv_memory::MemoryStore::open_url("memory://")?;
    /// assert_eq!(store.get("config/color").await?, None);
    /// let rev = store.put("config/color", "blue".into(), PutOptions::new()).await?;
    /// let pair = store.get("/config/color/").await?.expect("just written");
    /// assert_eq!((pair.key.as_str(), &pair.value[..], pair.revision), ("config/color", &b"blue"[..], rev));
    /// # Ok(())
    /// # }
    /// ```
    async fn get(&self, key: &str) -> Result<Option<KvPair>>;

    /// Creates or replaces `key`; returns the new revision.
    ///
    /// `async fn put(&self, key: &str, value: Bytes, options: PutOptions) -> Result<u64>`
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> anykv_core::Result<()> {
    /// use anykv_core::{PutOptions, Store};
    /// let store = anykv_memory::MemoryStore::open_url("memory://")?;
    /// let r1 = store.put("jobs/1", "queued".into(), PutOptions::new()).await?;
    /// let r2 = store.put("jobs/1", "running".into(), PutOptions::new()).await?;
    /// assert!(r2 > r1);
    /// // A key that vanishes after a minute unless written again.
    /// let ttl = PutOptions::new().with_ttl(std::time::Duration::from_secs(60));
    /// store.put("workers/w1", "alive".into(), ttl).await?;
    /// # Ok(())
    /// # }
    /// ```
    async fn put(&self, key: &str, value: Bytes, options: PutOptions) -> Result<u64>;

    /// Deletes `key`; true if it existed.
    ///
    /// `async fn delete(&self, key: &str) -> Result<bool>`
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> anykv_core::Result<()> {
    /// use anykv_core::{PutOptions, Store};
    /// let store = anykv_memory::MemoryStore::open_url("memory://")?;
    /// store.put("k", "v".into(), PutOptions::new()).await?;
    /// assert!(store.delete("k").await?);
    /// assert!(!store.delete("k").await?);
    /// # Ok(())
    /// # }
    /// ```
    async fn delete(&self, key: &str) -> Result<bool>;

    /// Whether `key` exists.
    ///
    /// `async fn exists(&self, key: &str) -> Result<bool>`
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> anykv_core::Result<()> {
    /// use anykv_core::{PutOptions, Store};
    /// let store = anykv_memory::MemoryStore::open_url("memory://")?;
    /// store.put("a/b", "v".into(), PutOptions::new()).await?;
    /// assert!(store.exists("a/b").await?);
    /// assert!(!store.exists("a").await?); // a and a/b are independent keys
    /// # Ok(())
    /// # }
    /// ```
    async fn exists(&self, key: &str) -> Result<bool>;

    /// Every key under `prefix/` at any depth, sorted by key, the prefix key
    /// itself excluded. A prefix with nothing under it gives an empty list;
    /// the empty prefix gives the whole store.
    ///
    /// `async fn list(&self, prefix: &str) -> Result<Vec<KvPair>>`
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> anykv_core::Result<()> {
    /// use anykv_core::{PutOptions, Store};
    /// let store = anykv_memory::MemoryStore::open_url("memory://")?;
    /// for k in ["svc/a", "svc/b/x", "svcx", "svc"] {
    ///     store.put(k, "v".into(), PutOptions::new()).await?;
    /// }
    /// let keys: Vec<String> = store.list("svc").await?.into_iter().map(|p| p.key).collect();
    /// assert_eq!(keys, ["svc/a", "svc/b/x"]); // segment boundaries; the prefix key excluded
    /// # Ok(())
    /// # }
    /// ```
    async fn list(&self, prefix: &str) -> Result<Vec<KvPair>>;

    /// A page of [`Store::list`]: at most `options.limit` pairs, only keys
    /// after `options.start_after`, values left out with
    /// `options.keys_only`. A page holds exactly `limit` pairs unless the
    /// listing ends within it, so paging goes on from the last key of a
    /// full page until a page comes back shorter than the limit:
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> anykv_core::Result<()> {
    /// use anykv_core::{ListOptions, PutOptions, Store};
    /// let store = anykv_memory::MemoryStore::new();
    /// for i in 0..5 {
    ///     store.put(&format!("jobs/{i}"), "x".into(), PutOptions::new()).await?;
    /// }
    /// let mut seen = Vec::new();
    /// let mut options = ListOptions::new().with_limit(2).keys_only();
    /// loop {
    ///     let page = store.list_with("jobs", options.clone()).await?;
    ///     seen.extend(page.iter().map(|p| p.key.clone()));
    ///     match page.last() {
    ///         Some(last) if page.len() == 2 => options = options.start_after(last.key.clone()),
    ///         _ => break,
    ///     }
    /// }
    /// assert_eq!(seen, ["jobs/0", "jobs/1", "jobs/2", "jobs/3", "jobs/4"]);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// The default reads the whole listing and pages it in memory; every
    /// anykv backend reads only the page from its server.
    async fn list_with(&self, prefix: &str, options: ListOptions) -> Result<Vec<KvPair>> {
        options.validate()?;
        let all = self.list(prefix).await?;
        options.apply(all)
    }

    /// Deletes the key `prefix` and every key under `prefix/`; returns how
    /// many keys were deleted. The empty prefix empties the store's root.
    ///
    /// `async fn delete_tree(&self, prefix: &str) -> Result<u64>`
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> anykv_core::Result<()> {
    /// use anykv_core::{PutOptions, Store};
    /// let store = anykv_memory::MemoryStore::open_url("memory://")?;
    /// for k in ["tmp", "tmp/a", "tmp/b/c", "tmpx"] {
    ///     store.put(k, "v".into(), PutOptions::new()).await?;
    /// }
    /// assert_eq!(store.delete_tree("tmp").await?, 3);
    /// assert!(store.exists("tmpx").await?);
    /// # Ok(())
    /// # }
    /// ```
    async fn delete_tree(&self, prefix: &str) -> Result<u64>;

    /// Compare-and-swap. `expected: None` creates only, failing with
    /// [`crate::Error::KeyExists`] if the key is present. `Some(rev)`
    /// replaces only if the key's current revision is `rev`, failing with
    /// [`crate::Error::KeyModified`] (present at another revision) or
    /// [`crate::Error::KeyNotFound`] (absent). Returns the new revision.
    ///
    /// `async fn atomic_put(&self, key: &str, value: Bytes, expected: Option<u64>, options: PutOptions) -> Result<u64>`
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> anykv_core::Result<()> {
    /// use anykv_core::{PutOptions, Store};
    /// let store = anykv_memory::MemoryStore::open_url("memory://")?;
    /// use anykv_core::ErrorKind;
    /// let r1 = store.atomic_put("leader", "me".into(), None, PutOptions::new()).await?;
    /// let taken = store.atomic_put("leader", "you".into(), None, PutOptions::new()).await;
    /// assert_eq!(taken.unwrap_err().kind(), ErrorKind::KeyExists);
    /// store.atomic_put("leader", "me again".into(), Some(r1), PutOptions::new()).await?;
    /// let stale = store.atomic_put("leader", "x".into(), Some(r1), PutOptions::new()).await;
    /// assert_eq!(stale.unwrap_err().kind(), ErrorKind::KeyModified);
    /// # Ok(())
    /// # }
    /// ```
    async fn atomic_put(
        &self,
        key: &str,
        value: Bytes,
        expected: Option<u64>,
        options: PutOptions,
    ) -> Result<u64>;

    /// Compare-and-delete: deletes `key` only if its current revision is
    /// `expected`, failing with [`crate::Error::KeyModified`] or
    /// [`crate::Error::KeyNotFound`].
    ///
    /// `async fn atomic_delete(&self, key: &str, expected: u64) -> Result<()>`
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> anykv_core::Result<()> {
    /// use anykv_core::{PutOptions, Store};
    /// let store = anykv_memory::MemoryStore::open_url("memory://")?;
    /// use anykv_core::ErrorKind;
    /// let r1 = store.put("k", "v1".into(), PutOptions::new()).await?;
    /// let r2 = store.put("k", "v2".into(), PutOptions::new()).await?;
    /// assert_eq!(store.atomic_delete("k", r1).await.unwrap_err().kind(), ErrorKind::KeyModified);
    /// store.atomic_delete("k", r2).await?;
    /// assert_eq!(store.atomic_delete("k", r2).await.unwrap_err().kind(), ErrorKind::KeyNotFound);
    /// # Ok(())
    /// # }
    /// ```
    async fn atomic_delete(&self, key: &str, expected: u64) -> Result<()>;

    /// Runs a multi-key transaction atomically: the compares, then one of
    /// its two branches, all or nothing, every write at one revision. See
    /// [the transaction rules](crate::txn).
    ///
    /// The default refuses it with [`crate::Error::Unsupported`] (and
    /// [`Capabilities::transactions`] is off); every anykv backend runs it
    /// natively.
    ///
    /// `async fn txn(&self, txn: Txn) -> Result<TxnResponse>`
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> anykv_core::Result<()> {
    /// use anykv_core::{PutOptions, Store};
    /// let store = anykv_memory::MemoryStore::open_url("memory://")?;
    /// use anykv_core::{Compare, Txn, TxnOp};
    /// store.put("stock/apples", "3".into(), PutOptions::new()).await?;
    /// let sold = store
    ///     .txn(
    ///         Txn::new()
    ///             .when(Compare::value("stock/apples", "3"))
    ///             .then(TxnOp::put("stock/apples", "2"))
    ///             .then(TxnOp::put("orders/1", "apple")),
    ///     )
    ///     .await?;
    /// assert!(sold.succeeded);
    /// let rev = sold.revision.expect("it wrote");
    /// assert_eq!(store.get("orders/1").await?.unwrap().revision, rev);
    /// assert_eq!(store.get("stock/apples").await?.unwrap().revision, rev);
    /// # Ok(())
    /// # }
    /// ```
    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        txn.validate(self.capabilities())?;
        Err(crate::Error::Unsupported {
            operation: "txn",
            backend: self.capabilities().backend,
            reason: "this backend has no multi-key transactions".into(),
        })
    }

    /// Watches one key. See [the watch rules](crate#watch).
    ///
    /// `async fn watch(&self, key: &str, options: WatchOptions) -> Result<WatchStream>`
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> anykv_core::Result<()> {
    /// use anykv_core::{PutOptions, Store};
    /// let store = anykv_memory::MemoryStore::open_url("memory://")?;
    /// use anykv_core::{WatchEvent, WatchOptions};
    /// use futures::StreamExt;
    /// let mut events = store.watch("config/color", WatchOptions::new()).await?;
    /// // Nothing there yet: just Synced.
    /// assert!(matches!(events.next().await, Some(Ok(WatchEvent::Synced { .. }))));
    /// let rev = store.put("config/color", "red".into(), PutOptions::new()).await?;
    /// match events.next().await {
    ///     Some(Ok(WatchEvent::Put(pair))) => assert_eq!(pair.revision, rev),
    ///     other => panic!("expected the put, got {other:?}"),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    async fn watch(&self, key: &str, options: WatchOptions) -> Result<WatchStream>;

    /// Watches every key under `prefix/` (the keys `list(prefix)` returns).
    /// See [the watch rules](crate#watch).
    ///
    /// `async fn watch_tree(&self, prefix: &str, options: WatchOptions) -> Result<WatchStream>`
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> anykv_core::Result<()> {
    /// use anykv_core::{PutOptions, Store};
    /// let store = anykv_memory::MemoryStore::open_url("memory://")?;
    /// use anykv_core::{WatchEvent, WatchOptions};
    /// use futures::StreamExt;
    /// store.put("svc/a", "1".into(), PutOptions::new()).await?;
    /// let mut events = store.watch_tree("svc", WatchOptions::new()).await?;
    /// assert!(matches!(events.next().await, Some(Ok(WatchEvent::Put(p))) if p.key == "svc/a"));
    /// assert!(matches!(events.next().await, Some(Ok(WatchEvent::Synced { .. }))));
    /// store.delete("svc/a").await?;
    /// assert!(matches!(events.next().await, Some(Ok(WatchEvent::Delete { key, .. })) if key == "svc/a"));
    /// # Ok(())
    /// # }
    /// ```
    async fn watch_tree(&self, prefix: &str, options: WatchOptions) -> Result<WatchStream>;

    /// Grants a lease of `ttl` (raised to [`Capabilities::min_ttl`]), kept
    /// alive until revoked, dropped, or the store closes.
    ///
    /// `async fn grant_lease(&self, ttl: Duration) -> Result<Lease>`
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> anykv_core::Result<()> {
    /// use anykv_core::{PutOptions, Store};
    /// let store = anykv_memory::MemoryStore::open_url("memory://")?;
    /// let lease = store.grant_lease(std::time::Duration::from_secs(10)).await?;
    /// let bound = PutOptions::new().with_lease(lease.id());
    /// store.put("members/me", "10.0.0.1".into(), bound).await?;
    /// lease.revoke().await?; // or drop it, or close the store
    /// assert_eq!(store.get("members/me").await?, None);
    /// # Ok(())
    /// # }
    /// ```
    async fn grant_lease(&self, ttl: Duration) -> Result<Lease>;

    /// Waits until this store holds the lock `key` (bounded by
    /// [`LockOptions::timeout`], then [`crate::Error::LockTimeout`]; a
    /// server that does not answer is [`crate::Error::Timeout`] as for any
    /// call). Locks live
    /// in a namespace of their own: lock `a` has nothing to do with key `a`,
    /// and no lock bookkeeping is visible to `get`, `list` or watches.
    ///
    /// `async fn lock(&self, key: &str, options: LockOptions) -> Result<LockGuard>`
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> anykv_core::Result<()> {
    /// use anykv_core::{PutOptions, Store};
    /// let store = anykv_memory::MemoryStore::open_url("memory://")?;
    /// use anykv_core::LockOptions;
    /// let guard = store.lock("jobs/nightly", LockOptions::new()).await?;
    /// // Pass the fencing token along with writes the lock protects.
    /// assert!(guard.fencing_token() > 0);
    /// guard.release().await?;
    /// # Ok(())
    /// # }
    /// ```
    async fn lock(&self, key: &str, options: LockOptions) -> Result<LockGuard>;

    /// Takes the lock `key` if it is free right now; `None` if it is held.
    ///
    /// `async fn try_lock(&self, key: &str, options: LockOptions) -> Result<Option<LockGuard>>`
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> anykv_core::Result<()> {
    /// use anykv_core::{PutOptions, Store};
    /// let store = anykv_memory::MemoryStore::open_url("memory://")?;
    /// use anykv_core::LockOptions;
    /// let held = store.try_lock("l", LockOptions::new()).await?.expect("free");
    /// assert!(store.try_lock("l", LockOptions::new()).await?.is_none());
    /// held.release().await?;
    /// assert!(store.try_lock("l", LockOptions::new()).await?.is_some());
    /// # Ok(())
    /// # }
    /// ```
    async fn try_lock(&self, key: &str, options: LockOptions) -> Result<Option<LockGuard>>;

    /// What the servers behind the store say about themselves: versions,
    /// roles, the current revision; see [`StoreStatus`]. A server that does
    /// not answer is listed with its error; the call fails only when the
    /// store itself is closed or has no server it can reach.
    ///
    /// The default reports the backend, its [`Store::stats`] and no
    /// servers; every anykv backend reports its servers.
    ///
    /// `async fn status(&self) -> Result<StoreStatus>`
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> anykv_core::Result<()> {
    /// use anykv_core::{PutOptions, Store};
    /// let store = anykv_memory::MemoryStore::open_url("memory://")?;
    /// let rev = store.put("k", "v".into(), PutOptions::new()).await?;
    /// let status = store.status().await?;
    /// assert_eq!((status.backend, status.revision), ("memory", Some(rev)));
    /// # Ok(())
    /// # }
    /// ```
    async fn status(&self) -> Result<StoreStatus> {
        Ok(StoreStatus::new(
            self.capabilities().backend,
            None,
            self.stats(),
        ))
    }

    /// Ends background tasks, revokes this store's leases (their keys
    /// vanish), releases its locks, ends its watch streams, and makes every
    /// later call return [`crate::Error::Closed`]. Closing twice is fine.
    ///
    /// `async fn close(&self) -> Result<()>`
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> anykv_core::Result<()> {
    /// use anykv_core::{PutOptions, Store};
    /// let store = anykv_memory::MemoryStore::open_url("memory://")?;
    /// use anykv_core::ErrorKind;
    /// store.close().await?;
    /// store.close().await?; // twice is fine
    /// assert_eq!(store.get("k").await.unwrap_err().kind(), ErrorKind::Closed);
    /// # Ok(())
    /// # }
    /// ```
    async fn close(&self) -> Result<()>;
}
