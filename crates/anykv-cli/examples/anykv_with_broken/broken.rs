//! A deliberately broken backend, `broken-memory://`, compiled only into
//! the `anykv_with_broken` example. It exists for the CLI's own tests,
//! which prove that `anykv conformance` fails a broken backend and names
//! the reasons. Never use it for anything else.
//!
//! It is the memory backend (`broken-memory://name/root` is the memory
//! store `memory://name/root`) with two real defects:
//!
//! - compare-and-swap ignores the expected revision: `atomic_put` with
//!   `Some(revision)` overwrites whatever is there, even an absent key;
//! - watches drop every `Delete` event.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use anykv::memory::MemoryStore;
use anykv::{
    async_trait, Bytes, Capabilities, Error, KvPair, Lease, LockGuard, LockOptions, PutOptions,
    Result, Store, StoreStats, Url, WatchEvent, WatchOptions, WatchStream,
};
use futures::StreamExt;

/// The URL scheme of the broken backend.
pub const SCHEME: &str = "broken-memory";

/// The memory store with the defects listed in the [module
/// documentation](self).
#[derive(Debug)]
pub struct BrokenMemoryStore {
    inner: MemoryStore,
}

impl BrokenMemoryStore {
    /// Opens `broken-memory://[name][/root]` as the memory store
    /// `memory://[name][/root]`.
    pub fn open_url(url: &Url) -> Result<Self> {
        let rest = url
            .as_str()
            .strip_prefix(SCHEME)
            .ok_or_else(|| Error::Config(format!("not a {SCHEME}:// URL")))?;
        let parsed = anykv::parse_url(&format!("memory{rest}"))?;
        let config = anykv::memory::MemoryConfig::from_url(&parsed)?;
        Ok(BrokenMemoryStore {
            inner: MemoryStore::open(config)?,
        })
    }
}

fn drop_deletes(stream: WatchStream) -> WatchStream {
    stream
        .filter(|item| {
            let keep = !matches!(item, Ok(WatchEvent::Delete { .. }));
            async move { keep }
        })
        .boxed()
}

#[async_trait]
impl Store for BrokenMemoryStore {
    fn capabilities(&self) -> &Capabilities {
        self.inner.capabilities()
    }

    fn stats(&self) -> StoreStats {
        self.inner.stats()
    }

    /// The memory store inside, so the conformance suite's compact hook
    /// (`anykv::memory::compact`) reaches it.
    fn as_any(&self) -> &dyn Any {
        self.inner.as_any()
    }

    async fn get(&self, key: &str) -> Result<Option<KvPair>> {
        self.inner.get(key).await
    }

    async fn put(&self, key: &str, value: Bytes, options: PutOptions) -> Result<u64> {
        self.inner.put(key, value, options).await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        self.inner.delete(key).await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        self.inner.exists(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<KvPair>> {
        self.inner.list(prefix).await
    }

    async fn delete_tree(&self, prefix: &str) -> Result<u64> {
        self.inner.delete_tree(prefix).await
    }

    async fn atomic_put(
        &self,
        key: &str,
        value: Bytes,
        expected: Option<u64>,
        options: PutOptions,
    ) -> Result<u64> {
        match expected {
            // The defect: the expected revision is never compared.
            Some(_) => self.inner.put(key, value, options).await,
            None => self.inner.atomic_put(key, value, None, options).await,
        }
    }

    async fn atomic_delete(&self, key: &str, expected: u64) -> Result<()> {
        self.inner.atomic_delete(key, expected).await
    }

    async fn watch(&self, key: &str, options: WatchOptions) -> Result<WatchStream> {
        Ok(drop_deletes(self.inner.watch(key, options).await?))
    }

    async fn watch_tree(&self, prefix: &str, options: WatchOptions) -> Result<WatchStream> {
        Ok(drop_deletes(self.inner.watch_tree(prefix, options).await?))
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<Lease> {
        self.inner.grant_lease(ttl).await
    }

    async fn lock(&self, key: &str, options: LockOptions) -> Result<LockGuard> {
        self.inner.lock(key, options).await
    }

    async fn try_lock(&self, key: &str, options: LockOptions) -> Result<Option<LockGuard>> {
        self.inner.try_lock(key, options).await
    }

    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
}

/// Registers `broken-memory://`.
pub fn register() {
    anykv::register(SCHEME, |url: Url| async move {
        let store: Arc<dyn Store> = Arc::new(BrokenMemoryStore::open_url(&url)?);
        Ok(store)
    });
}
