//! The store: [`MemoryStore`], its handles on a process-wide or private
//! state, and its `Store` implementation.

use std::any::Any;
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use anykv_core::backend::ClosedFlag;
use anykv_core::{
    async_trait, key, Bytes, Capabilities, Error, KvPair, Lease, ListOptions, LockGuard,
    LockOptions, PutOptions, Result, Store, StoreStats, WatchOptions, WatchStream,
};
use parking_lot::Mutex;

use crate::config::{
    MemoryConfig, DEFAULT_HISTORY, DEFAULT_HISTORY_BYTES, DEFAULT_MAX_VALUE_SIZE,
    DEFAULT_REQUEST_TIMEOUT, MIN_TTL,
};
use crate::state::{Filter, Shared, BACKEND};
use crate::{fault, lease, lock, watch};

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
    root: String,
    owner: u64,
    closed: ClosedFlag,
    caps: Capabilities,
    request_timeout: Duration,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.closed.close() {
            self.shared.state.write().close_owner(self.owner);
        }
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("name", &self.inner.name)
            .field("root", &self.inner.root)
            .field("closed", &self.inner.closed.is_closed())
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
            String::new(),
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
        let root = key::normalize_root(&config.root)?;
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
        root: String,
        request_timeout: Duration,
        shared: Arc<Shared>,
    ) -> Self {
        let owner = shared.state.write().new_owner();
        let mut caps = Capabilities::new(BACKEND);
        caps.min_ttl = MIN_TTL;
        caps.max_value_size = shared.max_value_size;
        MemoryStore {
            inner: Arc::new(Inner {
                shared,
                name,
                root,
                owner,
                closed: ClosedFlag::new(BACKEND),
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
        &self.inner.root
    }

    /// Discards the history up to and including `revision`: watches can no
    /// longer resume from before it.
    pub fn compact(&self, revision: u64) -> Result<()> {
        self.inner.closed.ensure_open()?;
        self.inner.shared.state.write().compact(revision);
        Ok(())
    }

    /// Fails with `Closed` after close; while the store is frozen, waits
    /// until it runs again or the request timeout passes (`Timeout`).
    async fn ready(&self) -> Result<()> {
        self.inner.closed.ensure_open()?;
        if self.inner.shared.paused.load(Ordering::SeqCst) {
            fault::wait_out_pause(&self.inner.shared, self.inner.request_timeout).await?;
            self.inner.closed.ensure_open()?;
        }
        Ok(())
    }

    async fn lock_impl(
        &self,
        key: &str,
        options: LockOptions,
        wait: bool,
    ) -> Result<Option<LockGuard>> {
        self.inner.closed.ensure_open()?;
        let full = self.full_key(key)?;
        let canonical = key::normalize_key(key)?;
        lock::acquire(
            &self.inner.shared,
            self.inner.owner,
            full,
            canonical,
            options,
            wait,
        )
        .await
    }

    /// A canonical key or prefix under the store's root, copied only when
    /// there is a root to put in front.
    fn under_root<'a>(&self, canonical: &'a str) -> Cow<'a, str> {
        if self.inner.root.is_empty() {
            Cow::Borrowed(canonical)
        } else {
            Cow::Owned(key::join(&self.inner.root, canonical))
        }
    }

    fn full_key(&self, key: &str) -> Result<String> {
        Ok(self.under_root(key::canonical_key(key)?).into_owned())
    }

    fn full_prefix(&self, prefix: &str) -> Result<(bool, String)> {
        let p = key::canonical_prefix(prefix)?;
        Ok((!p.is_empty(), self.under_root(p).into_owned()))
    }

    fn check_write(
        &self,
        key: &str,
        value: &Bytes,
        options: &PutOptions,
    ) -> Result<(String, Option<Duration>)> {
        self.inner.closed.ensure_open()?;
        let full = self.full_key(key)?;
        anykv_core::backend::check_write(
            BACKEND,
            &key::normalize_key(key)?,
            value.len(),
            self.inner.shared.max_value_size,
            options,
        )?;
        Ok((full, options.ttl.map(|t| t.max(MIN_TTL))))
    }

    fn after_write(&self, ttl: Option<Duration>) {
        if ttl.is_some() {
            self.inner.shared.kick_expiry();
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn capabilities(&self) -> &Capabilities {
        &self.inner.caps
    }

    fn stats(&self) -> StoreStats {
        let (watches, leases, locks) = self
            .inner
            .shared
            .state
            .read()
            .owner_counts(self.inner.owner);
        StoreStats::new(watches, leases, locks, 0)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    async fn get(&self, key: &str) -> Result<Option<KvPair>> {
        self.ready().await?;
        let full = self.under_root(key::canonical_key(key)?);
        Ok(self.inner.shared.state.read().get(&full, &self.inner.root))
    }

    async fn put(&self, key: &str, value: Bytes, options: PutOptions) -> Result<u64> {
        self.ready().await?;
        let (full, ttl) = self.check_write(key, &value, &options)?;
        let rev =
            self.inner
                .shared
                .state
                .write()
                .put(full, value, options.lease.map(|l| l.0), ttl)?;
        self.after_write(ttl);
        Ok(rev)
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        self.ready().await?;
        let full = self.full_key(key)?;
        Ok(self.inner.shared.state.write().delete(&full).is_some())
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        self.ready().await?;
        let full = self.full_key(key)?;
        Ok(self
            .inner
            .shared
            .state
            .read()
            .current_revision_of(&full)
            .is_some())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<KvPair>> {
        self.ready().await?;
        let (_, full) = self.full_prefix(prefix)?;
        Ok(self.inner.shared.state.read().list(&full, &self.inner.root))
    }

    async fn list_with(&self, prefix: &str, options: ListOptions) -> Result<Vec<KvPair>> {
        self.ready().await?;
        let after = options.validate()?;
        let (_, full) = self.full_prefix(prefix)?;
        let after = after.map(|a| self.under_root(&a).into_owned());
        Ok(self.inner.shared.state.read().list_page(
            &full,
            &self.inner.root,
            after.as_deref(),
            options.limit.unwrap_or(usize::MAX),
            options.keys_only,
        ))
    }

    async fn delete_tree(&self, prefix: &str) -> Result<u64> {
        self.ready().await?;
        let (has_key, full) = self.full_prefix(prefix)?;
        let key = has_key.then_some(full.as_str());
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
        let rev = {
            let mut state = self.inner.shared.state.write();
            let current = state.current_revision_of(&full);
            check_expected(&full, expected, current, &self.inner.root)?;
            state.put(full, value, options.lease.map(|l| l.0), ttl)?
        };
        self.after_write(ttl);
        Ok(rev)
    }

    async fn atomic_delete(&self, key: &str, expected: u64) -> Result<()> {
        self.ready().await?;
        let full = self.full_key(key)?;
        let mut state = self.inner.shared.state.write();
        let current = state.current_revision_of(&full);
        check_expected(&full, Some(expected), current, &self.inner.root)?;
        state.delete(&full);
        Ok(())
    }

    async fn watch(&self, key: &str, options: WatchOptions) -> Result<WatchStream> {
        self.ready().await?;
        let full = self.full_key(key)?;
        watch::open(
            &self.inner.shared,
            self.inner.owner,
            &self.inner.root,
            Filter::Key(full),
            options,
        )
    }

    async fn watch_tree(&self, prefix: &str, options: WatchOptions) -> Result<WatchStream> {
        self.ready().await?;
        let (_, full) = self.full_prefix(prefix)?;
        watch::open(
            &self.inner.shared,
            self.inner.owner,
            &self.inner.root,
            Filter::Tree(full),
            options,
        )
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<Lease> {
        self.ready().await?;
        lease::grant(&self.inner.shared, self.inner.owner, ttl)
    }

    async fn lock(&self, key: &str, options: LockOptions) -> Result<LockGuard> {
        self.ready().await?;
        anykv_core::backend::check_lock_options(&options)?;
        anykv_core::waited_for(BACKEND, self.lock_impl(key, options, true).await?)
    }

    async fn try_lock(&self, key: &str, options: LockOptions) -> Result<Option<LockGuard>> {
        self.ready().await?;
        anykv_core::backend::check_lock_options(&options)?;
        self.lock_impl(key, options, false).await
    }

    async fn close(&self) -> Result<()> {
        if self.inner.closed.close() {
            self.inner
                .shared
                .state
                .write()
                .close_owner(self.inner.owner);
        }
        Ok(())
    }
}

fn check_expected(
    full: &str,
    expected: Option<u64>,
    current: Option<u64>,
    root: &str,
) -> Result<()> {
    let canonical = key::strip_root(root, full).unwrap_or(full);
    anykv_core::backend::compare_outcome(BACKEND, canonical, expected, current)
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
