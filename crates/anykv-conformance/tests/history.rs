//! The history cases have teeth: the memory backend passes them, and a
//! memory store wrapped to break linearizability fails them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anykv_conformance::{all_cases, run_cases, Outcome, Report, StoreFactory, UrlFactory};
use anykv_core::{
    async_trait, Bytes, Capabilities, KvPair, Lease, LockGuard, LockOptions, PutOptions, Result,
    Store, StoreStats, WatchOptions, WatchStream,
};
use anykv_memory::MemoryStore;
use parking_lot::Mutex;

const CASES: [&str; 2] = [
    "history_linearizable_registers",
    "history_linearizable_with_reads",
];

async fn run(factory: Arc<dyn StoreFactory>) -> Report {
    let cases = all_cases()
        .into_iter()
        .filter(|c| CASES.contains(&c.name))
        .collect::<Vec<_>>();
    assert_eq!(cases.len(), CASES.len());
    let report = run_cases(factory, cases, CASES.len()).await;
    println!("{report}");
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_backend_is_linearizable() {
    let factory = UrlFactory::new("memory://history-reference", |url| async move {
        MemoryStore::open_url(&url).map(MemoryStore::into_dyn)
    });
    let report = run(Arc::new(factory)).await;
    assert_eq!(report.passed(), CASES.len(), "{report}");
}

/// How the wrapper breaks the memory store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Breakage {
    /// `atomic_put` and `atomic_delete` ignore the expected revision.
    CasIgnoresRevision,
    /// Every other `get` returns what this client read before, if anything.
    StaleReads,
}

#[derive(Debug)]
struct Broken {
    inner: Arc<dyn Store>,
    breakage: Breakage,
    /// This client's earlier reads, and how many gets it made.
    cache: Mutex<(HashMap<String, Option<KvPair>>, u64)>,
}

#[async_trait]
impl Store for Broken {
    fn capabilities(&self) -> &Capabilities {
        self.inner.capabilities()
    }
    fn stats(&self) -> StoreStats {
        self.inner.stats()
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    async fn get(&self, key: &str) -> Result<Option<KvPair>> {
        if self.breakage == Breakage::StaleReads {
            let mut cache = self.cache.lock();
            cache.1 += 1;
            if cache.1.is_multiple_of(2) {
                if let Some(old) = cache.0.get(key) {
                    return Ok(old.clone());
                }
            }
        }
        let r = self.inner.get(key).await?;
        self.cache.lock().0.insert(key.to_owned(), r.clone());
        Ok(r)
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
        match (self.breakage, expected) {
            (Breakage::CasIgnoresRevision, Some(_)) => self.inner.put(key, value, options).await,
            _ => self.inner.atomic_put(key, value, expected, options).await,
        }
    }
    async fn atomic_delete(&self, key: &str, expected: u64) -> Result<()> {
        match self.breakage {
            Breakage::CasIgnoresRevision => self.inner.delete(key).await.map(|_| ()),
            _ => self.inner.atomic_delete(key, expected).await,
        }
    }
    async fn watch(&self, key: &str, options: WatchOptions) -> Result<WatchStream> {
        self.inner.watch(key, options).await
    }
    async fn watch_tree(&self, prefix: &str, options: WatchOptions) -> Result<WatchStream> {
        self.inner.watch_tree(prefix, options).await
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

struct BrokenFactory(Breakage);

#[async_trait]
impl StoreFactory for BrokenFactory {
    async fn open(&self, root: &str) -> Result<Arc<dyn Store>> {
        let inner =
            MemoryStore::open_url(&format!("memory://history-{:?}/{root}", self.0))?.into_dyn();
        Ok(Arc::new(Broken {
            inner,
            breakage: self.0,
            cache: Mutex::new((HashMap::new(), 0)),
        }))
    }
}

async fn must_fail(breakage: Breakage) {
    let report = run(Arc::new(BrokenFactory(breakage))).await;
    for c in &report.cases {
        match &c.outcome {
            Outcome::Failed(m) => {
                assert!(m.contains("seed "), "{m}");
                assert!(m.contains("not linearizable"), "{m}");
            }
            other => panic!("{} should fail on {breakage:?}, got {other:?}", c.name),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cas_that_ignores_the_revision_fails() {
    must_fail(Breakage::CasIgnoresRevision).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_reads_fail() {
    must_fail(Breakage::StaleReads).await;
}
