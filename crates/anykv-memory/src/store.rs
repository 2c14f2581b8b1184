//! The store: [`MemoryStore`], its handles on a process-wide or private
//! state, and its `Store` implementation.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use anykv_core::backend::{Owner, Root, WatchTarget};
use anykv_core::{
    async_trait, key, Bytes, Capabilities, Error, KvPair, Lease, ListOptions, LockGuard,
    LockOptions, PutOptions, Result, Store, StoreStats, Txn, TxnOp, TxnResponse, WatchOptions,
    WatchStream,
};
use parking_lot::Mutex;

use crate::config::{
    MemoryConfig, DEFAULT_HISTORY, DEFAULT_HISTORY_BYTES, DEFAULT_MAX_VALUE_SIZE,
    DEFAULT_REQUEST_TIMEOUT, MIN_TTL,
};
use crate::state::{Shared, BACKEND};

/// The process-wide stores, by name.
pub(crate) static NAMED: LazyLock<Mutex<HashMap<String, Arc<Shared>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// A handle on an in-process store. Cheap to clone; clones are the same
/// client. See the [crate documentation](crate).
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    name: Option<String>,
    root: Root,
    /// What this handle holds; dropped with the last clone, it gives all
    /// of it back, as `close()` does.
    owner: Owner,
    caps: Capabilities,
    request_timeout: Duration,
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("name", &self.inner.name)
            .field("root", &self.inner.root)
            .field("closed", &self.inner.owner.is_closed())
            .finish()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// A new private store.
    pub fn new() -> Self {
        Self::from_parts(
            None,
            Root::default(),
            DEFAULT_REQUEST_TIMEOUT,
            Shared::new(
                DEFAULT_HISTORY,
                DEFAULT_HISTORY_BYTES,
                DEFAULT_MAX_VALUE_SIZE,
            ),
        )
    }

    /// A new handle on the process-wide store `name`, at its top.
    pub fn named(name: &str) -> Self {
        match Self::open(MemoryConfig::named(name)) {
            Ok(s) => s,
            Err(_) => unreachable!("the empty root is always valid"),
        }
    }

    /// Opens a store as configured.
    pub fn open(config: MemoryConfig) -> Result<Self> {
        let root = Root::new(&config.root)?;
        let shared = match &config.name {
            None => Shared::new(config.history, config.history_bytes, config.max_value_size),
            Some(name) => NAMED
                .lock()
                .entry(name.clone())
                .or_insert_with(|| {
                    Shared::new(config.history, config.history_bytes, config.max_value_size)
                })
                .clone(),
        };
        Ok(Self::from_parts(
            config.name,
            root,
            config.request_timeout,
            shared,
        ))
    }

    /// This handle as the type-erased `Arc<dyn Store>` that
    /// `anykv::open` returns.
    pub fn into_dyn(self) -> Arc<dyn Store> {
        Arc::new(self)
    }

    /// Opens a `memory://` URL (see the crate documentation).
    pub fn open_url(url: &str) -> Result<Self> {
        Self::open(MemoryConfig::from_url(&anykv_core::parse_url(url)?)?)
    }

    fn from_parts(
        name: Option<String>,
        root: Root,
        request_timeout: Duration,
        shared: Arc<Shared>,
    ) -> Self {
        let mut caps = Capabilities::new(BACKEND);
        caps.min_ttl = MIN_TTL;
        caps.max_value_size = shared.max_value_size;
        caps.transactions = true;
        MemoryStore {
            inner: Arc::new(Inner {
                shared,
                name,
                root,
                owner: Owner::new(BACKEND),
                caps,
                request_timeout,
            }),
        }
    }

    /// The store's current revision (the last one granted).
    pub fn revision(&self) -> u64 {
        self.inner.shared.state.read().revision()
    }

    /// The root this handle works under.
    pub fn root(&self) -> &str {
        self.inner.root.as_str()
    }

    /// Discards the history up to and including `revision`: watches can no
    /// longer resume from before it.
    pub fn compact(&self, revision: u64) -> Result<()> {
        self.inner.owner.ensure_open()?;
        self.inner.shared.log.compact(revision);
        Ok(())
    }

    /// Fails with `Closed` after close; while the store is frozen, waits
    /// until it runs again or the request timeout passes (`Timeout`).
    async fn ready(&self) -> Result<()> {
        // A call that never waits would let a loop of calls hold its
        // runtime thread for ever: one call in 1,024 on a thread yields
        // first, so such a loop gives other tasks their turn at least
        // every millisecond or so, as tokio's own locks and channels do
        // once a task's budget is spent.
        if yield_turn() {
            tokio::task::yield_now().await;
        }
        self.inner.owner.ensure_open()?;
        let gate = &self.inner.shared.gate;
        if gate.is_paused() {
            gate.pass(BACKEND, self.inner.request_timeout).await?;
            self.inner.owner.ensure_open()?;
        }
        Ok(())
    }

    fn full_key(&self, key: &str) -> Result<String> {
        Ok(self.inner.root.key(key)?.into_owned())
    }

    fn check_write(
        &self,
        key: &str,
        value: &Bytes,
        options: &PutOptions,
    ) -> Result<(String, Option<Duration>)> {
        self.inner.owner.ensure_open()?;
        let full = self.full_key(key)?;
        anykv_core::backend::check_write(
            BACKEND,
            self.inner.root.relative(&full),
            value.len(),
            self.inner.shared.max_value_size,
            options,
        )?;
        Ok((full, options.ttl.map(|t| t.max(MIN_TTL))))
    }

    /// A watch stream of this handle on `target` (full names).
    fn watch_target(&self, target: WatchTarget, options: WatchOptions) -> Result<WatchStream> {
        let shared = &self.inner.shared;
        let state = shared.state.read();
        shared.log.watch(
            &self.inner.owner,
            &self.inner.root,
            target.clone(),
            &options,
            || state.snapshot(&target),
        )
    }
}
#[async_trait]
impl Store for MemoryStore {
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
        self.ready().await?;
        let full = self.inner.root.key(key)?;
        Ok(self.inner.shared.state.read().get(&full, &self.inner.root))
    }

    async fn put(&self, key: &str, value: Bytes, options: PutOptions) -> Result<u64> {
        self.ready().await?;
        let (full, ttl) = self.check_write(key, &value, &options)?;
        let lease = options.lease;
        self.inner.shared.state.write().put(full, value, lease, ttl)
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        self.ready().await?;
        let full = self.inner.root.key(key)?;
        Ok(self.inner.shared.state.write().delete(&full).is_some())
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        self.ready().await?;
        let full = self.inner.root.key(key)?;
        let state = self.inner.shared.state.read();
        Ok(state.current_revision_of(&full).is_some())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<KvPair>> {
        self.ready().await?;
        let full = self.inner.root.prefix(prefix)?;
        Ok(self.inner.shared.state.read().list(&full, &self.inner.root))
    }

    async fn list_with(&self, prefix: &str, options: ListOptions) -> Result<Vec<KvPair>> {
        self.ready().await?;
        let after = options.validate()?;
        let root = &self.inner.root;
        let full = root.prefix(prefix)?;
        let after = after.map(|a| root.under(&a).into_owned());
        Ok(self.inner.shared.state.read().list_page(
            &full,
            root,
            after.as_deref(),
            options.limit.unwrap_or(usize::MAX),
            options.keys_only,
        ))
    }

    async fn delete_tree(&self, prefix: &str) -> Result<u64> {
        self.ready().await?;
        let full = self.inner.root.prefix(prefix)?;
        // The prefix key itself goes too, unless it is the root.
        let with_key = !key::canonical_prefix(prefix)?.is_empty();
        let key = with_key.then_some(&*full);
        Ok(self.inner.shared.state.write().delete_tree(key, &full))
    }

    async fn atomic_put(
        &self,
        key: &str,
        value: Bytes,
        expected: Option<u64>,
        options: PutOptions,
    ) -> Result<u64> {
        self.ready().await?;
        let (full, ttl) = self.check_write(key, &value, &options)?;
        let mut state = self.inner.shared.state.write();
        let current = state.current_revision_of(&full);
        self.compare(&full, expected, current)?;
        state.put(full, value, options.lease, ttl)
    }

    async fn atomic_delete(&self, key: &str, expected: u64) -> Result<()> {
        self.ready().await?;
        let full = self.full_key(key)?;
        let mut state = self.inner.shared.state.write();
        let current = state.current_revision_of(&full);
        self.compare(&full, Some(expected), current)?;
        state.delete(&full);
        Ok(())
    }

    async fn status(&self) -> Result<anykv_core::StoreStatus> {
        self.ready().await?;
        let mut status = anykv_core::StoreStatus::new(BACKEND, Some(self.revision()), self.stats())
            .with_detail("version", env!("CARGO_PKG_VERSION"));
        if let Some(name) = &self.inner.name {
            status = status.with_detail("name", name.clone());
        }
        if !self.root().is_empty() {
            status = status.with_detail("root", self.root().to_owned());
        }
        Ok(status)
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        self.ready().await?;
        let mut txn = txn.validate(&self.inner.caps)?;
        for op in txn.success.iter_mut().chain(txn.failure.iter_mut()) {
            if let TxnOp::Put { options, .. } = op {
                options.ttl = options.ttl.map(|t| t.max(MIN_TTL));
            }
        }
        self.inner.shared.state.write().txn(txn, &self.inner.root)
    }

    async fn watch(&self, key: &str, options: WatchOptions) -> Result<WatchStream> {
        self.ready().await?;
        let full = self.full_key(key)?;
        self.watch_target(WatchTarget::Key(full), options)
    }

    async fn watch_tree(&self, prefix: &str, options: WatchOptions) -> Result<WatchStream> {
        self.ready().await?;
        let full = self.inner.root.prefix(prefix)?.into_owned();
        self.watch_target(WatchTarget::Tree(full), options)
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<Lease> {
        self.ready().await?;
        self.inner.shared.leases.grant(&self.inner.owner, ttl)
    }

    async fn lock(&self, key: &str, options: LockOptions) -> Result<LockGuard> {
        self.ready().await?;
        let inner = &self.inner;
        let locks = &inner.shared.locks;
        locks.lock(&inner.owner, &inner.root, key, &options).await
    }

    async fn try_lock(&self, key: &str, options: LockOptions) -> Result<Option<LockGuard>> {
        self.ready().await?;
        let inner = &self.inner;
        let locks = &inner.shared.locks;
        locks.try_lock(&inner.owner, &inner.root, key, &options)
    }

    async fn close(&self) -> Result<()> {
        self.inner.owner.close();
        Ok(())
    }
}

impl MemoryStore {
    /// The outcome of a compare-and-swap or compare-and-delete on `full`.
    fn compare(&self, full: &str, expected: Option<u64>, current: Option<u64>) -> Result<()> {
        let canonical = self.inner.root.relative(full);
        anykv_core::backend::compare_outcome(BACKEND, canonical, expected, current)
    }
}

/// Compacts the memory store behind a type-erased handle (see
/// [`MemoryStore::compact`]); an `InvalidArgument` for any other store.
/// This is the conformance suite's compact hook for memory stores.
pub fn compact(store: &dyn Store, revision: u64) -> Result<()> {
    store
        .as_any()
        .downcast_ref::<MemoryStore>()
        .ok_or_else(|| Error::InvalidArgument(format!("{store:?} is not a memory store")))?
        .compact(revision)
}

/// Whether this call of the thread is the one in 1,024 that yields first.
fn yield_turn() -> bool {
    thread_local! {
        static CALLS: std::cell::Cell<u16> = const { std::cell::Cell::new(0) };
    }
    CALLS.with(|c| {
        let n = c.get().wrapping_add(1);
        c.set(n);
        n % 1024 == 0
    })
}
