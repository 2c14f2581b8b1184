//! A store wrapper for the cases: it counts calls and can cut its client
//! off from the backend, as a network partition does.

use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anykv_core::{
    async_trait, Bytes, Capabilities, Error, KvPair, Lease, ListOptions, LockGuard, LockOptions,
    PutOptions, Result, Store, StoreStats, Txn, TxnResponse, WatchOptions, WatchStream,
};
use futures::StreamExt;
use tokio::sync::watch;

/// Wraps a store: while [`Tap::set_down`] holds it down, every call fails
/// with `Unavailable` and every watch stream opened through it yields
/// `Unavailable` and ends, as for a client cut off from its server. Leases
/// and locks taken through it stay with the real store (their keep-alives
/// are the store's own). It also counts `list` calls.
#[derive(Debug)]
pub struct Tap {
    inner: Arc<dyn Store>,
    down: watch::Sender<bool>,
    lists: AtomicU64,
}

impl Tap {
    /// A tap on `inner`, up.
    pub fn new(inner: Arc<dyn Store>) -> Arc<Tap> {
        Arc::new(Tap {
            inner,
            down: watch::channel(false).0,
            lists: AtomicU64::new(0),
        })
    }

    /// Cuts the client off (`true`) or lets it through again (`false`).
    pub fn set_down(&self, down: bool) {
        self.down.send_replace(down);
    }

    /// Whether it is cut off.
    pub fn is_down(&self) -> bool {
        *self.down.borrow()
    }

    /// How many `list` and `list_with` calls went through.
    pub fn lists(&self) -> u64 {
        self.lists.load(Ordering::Relaxed)
    }

    /// The wrapped store.
    pub fn inner(&self) -> &Arc<dyn Store> {
        &self.inner
    }

    fn check(&self) -> Result<()> {
        if self.is_down() {
            Err(self.unavailable())
        } else {
            Ok(())
        }
    }

    fn unavailable(&self) -> Error {
        Error::Unavailable {
            backend: self.inner.capabilities().backend,
            message: "cut off by the test's tap".into(),
            source: None,
        }
    }

    fn cut(&self, stream: WatchStream) -> WatchStream {
        let rx = self.down.subscribe();
        let error = self.unavailable();
        Box::pin(futures::stream::unfold(
            Some((stream, rx, error)),
            |state| async move {
                let (mut stream, mut rx, error) = state?;
                tokio::select! {
                    biased;
                    () = until_down(&mut rx) => Some((Err(error), None)),
                    item = stream.next() => item.map(|item| (item, Some((stream, rx, error)))),
                }
            },
        ))
    }
}

async fn until_down(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|down| *down).await.map(|_| ()).is_err() {
        std::future::pending::<()>().await;
    }
}

#[async_trait]
impl Store for Tap {
    fn capabilities(&self) -> &Capabilities {
        self.inner.capabilities()
    }

    fn stats(&self) -> StoreStats {
        self.inner.stats()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    async fn get(&self, key: &str) -> Result<Option<KvPair>> {
        self.check()?;
        self.inner.get(key).await
    }

    async fn put(&self, key: &str, value: Bytes, options: PutOptions) -> Result<u64> {
        self.check()?;
        self.inner.put(key, value, options).await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        self.check()?;
        self.inner.delete(key).await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        self.check()?;
        self.inner.exists(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<KvPair>> {
        self.lists.fetch_add(1, Ordering::Relaxed);
        self.check()?;
        self.inner.list(prefix).await
    }

    async fn list_with(&self, prefix: &str, options: ListOptions) -> Result<Vec<KvPair>> {
        self.lists.fetch_add(1, Ordering::Relaxed);
        self.check()?;
        self.inner.list_with(prefix, options).await
    }

    async fn delete_tree(&self, prefix: &str) -> Result<u64> {
        self.check()?;
        self.inner.delete_tree(prefix).await
    }

    async fn atomic_put(
        &self,
        key: &str,
        value: Bytes,
        expected: Option<u64>,
        options: PutOptions,
    ) -> Result<u64> {
        self.check()?;
        self.inner.atomic_put(key, value, expected, options).await
    }

    async fn atomic_delete(&self, key: &str, expected: u64) -> Result<()> {
        self.check()?;
        self.inner.atomic_delete(key, expected).await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        self.check()?;
        self.inner.txn(txn).await
    }

    async fn watch(&self, key: &str, options: WatchOptions) -> Result<WatchStream> {
        self.check()?;
        let stream = self.inner.watch(key, options).await?;
        Ok(self.cut(stream))
    }

    async fn watch_tree(&self, prefix: &str, options: WatchOptions) -> Result<WatchStream> {
        self.check()?;
        let stream = self.inner.watch_tree(prefix, options).await?;
        Ok(self.cut(stream))
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<Lease> {
        self.check()?;
        self.inner.grant_lease(ttl).await
    }

    async fn lock(&self, key: &str, options: LockOptions) -> Result<LockGuard> {
        self.check()?;
        self.inner.lock(key, options).await
    }

    async fn try_lock(&self, key: &str, options: LockOptions) -> Result<Option<LockGuard>> {
        self.check()?;
        self.inner.try_lock(key, options).await
    }

    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
}
