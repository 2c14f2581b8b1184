//! The in-process anykv backend, and the reference implementation of the
//! anykv contract: every capability on, nothing "unsupported".
//!
//! - `memory://` opens a new private store; `memory://name/root` opens a
//!   handle on the process-wide store `name`, under `root`. Handles on one
//!   name share data, revisions, leases and locks, so one test can play two
//!   processes; each handle owns its own leases, locks and watches, and
//!   closing it gives them back as a process exit would.
//! - Revisions are a store-wide counter. Watches deliver every revision and
//!   can resume from the recent history (see the parameters below); older
//!   starts yield `Compacted` from the stream.
//! - TTL keys expire on time (a thread of the store's own, so a store
//!   outlives the async runtime that created it) and emit `Delete`.
//! - Locks are FIFO queues: a release hands the lock to the next waiter
//!   directly, so waiters never stampede.
//!
//! URL parameters: `history` (changes kept for resuming watches, default
//! [`DEFAULT_HISTORY`]), `history_bytes` (bytes of keys and values kept for
//! them, default [`DEFAULT_HISTORY_BYTES`]) and `max_value_size` (bytes).
//! They apply when the named store is first created; later handles share
//! the store as it is.
//!
//! Like every anykv backend, the store's async calls run on Tokio (a lock
//! wait with a timeout uses Tokio's timer).
//!
//! ```
//! use anykv_core::{PutOptions, Store};
//! use anykv_memory::MemoryStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anykv_core::Result<()> {
//! let a = MemoryStore::open_url("memory://doc-shared/app")?;
//! let b = MemoryStore::open_url("memory://doc-shared/app")?;
//! let rev = a.put("greeting", "hello".into(), PutOptions::new()).await?;
//! let seen = b.get("greeting").await?.expect("b shares a's store");
//! assert_eq!((seen.value.as_ref(), seen.revision), (&b"hello"[..], rev));
//! # Ok(())
//! # }
//! ```

#![deny(rustdoc::broken_intra_doc_links)]

mod state;

use std::any::Any;
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use anykv_core::{
    async_trait, key, parse_param, url_params, url_root, Bytes, Capabilities, Error, KvPair, Lease,
    LeaseId, LockGuard, LockOptions, PutOptions, Release, Result, Store, StoreStats, Url,
    WatchOptions, WatchStream,
};
use parking_lot::Mutex;

mod fault;
pub use fault::{pause_named, restart_named, resume_named};
use state::{Filter, LockAttempt, Shared, BACKEND};

/// How many changes a store keeps for resuming watches, by default.
pub const DEFAULT_HISTORY: usize = 10_000;

/// How many bytes of keys and values the history holds at most, by
/// default: 64 MiB. The history keeps the last [`DEFAULT_HISTORY`] changes or
/// this many bytes, whichever is less.
pub const DEFAULT_HISTORY_BYTES: usize = 64 * 1024 * 1024;

/// The largest value a store takes, by default: 16 MiB.
pub const DEFAULT_MAX_VALUE_SIZE: usize = 16 * 1024 * 1024;

/// How long a call waits out a frozen store by default.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The smallest TTL; smaller ones are raised to it.
pub const MIN_TTL: Duration = Duration::from_millis(1);

static NAMED: LazyLock<Mutex<HashMap<String, Arc<Shared>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// How to open a [`MemoryStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoryConfig {
    /// The process-wide store to share; `None` for a new private store.
    pub name: Option<String>,
    /// The root every key lives under.
    pub root: String,
    /// Changes kept for resuming watches.
    pub history: usize,
    /// Bytes of keys and values kept for resuming watches.
    pub history_bytes: usize,
    /// The largest value, in bytes.
    pub max_value_size: usize,
    /// How long a call waits out a frozen store (see [`pause_named`])
    /// before it fails with `Timeout`; the `request_timeout` URL parameter.
    pub request_timeout: Duration,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            name: None,
            root: String::new(),
            history: DEFAULT_HISTORY,
            history_bytes: DEFAULT_HISTORY_BYTES,
            max_value_size: DEFAULT_MAX_VALUE_SIZE,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

impl MemoryConfig {
    /// A new private store with the defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Shares the process-wide store `name`.
    pub fn named(name: impl Into<String>) -> Self {
        MemoryConfig {
            name: Some(name.into()),
            ..Self::default()
        }
    }

    /// Sets the root.
    pub fn with_root(mut self, root: impl Into<String>) -> Self {
        self.root = root.into();
        self
    }

    /// Sets how many changes are kept for resuming watches (at least 1).
    pub fn with_history(mut self, history: usize) -> Self {
        self.history = history.max(1);
        self
    }

    /// Sets how many bytes of keys and values the history keeps.
    pub fn with_history_bytes(mut self, bytes: usize) -> Self {
        self.history_bytes = bytes;
        self
    }

    /// Sets the largest value.
    pub fn with_max_value_size(mut self, max: usize) -> Self {
        self.max_value_size = max;
        self
    }

    /// Reads `memory://[name][/root][?history=N&history_bytes=N&max_value_size=N]`.
    pub fn from_url(url: &Url) -> Result<Self> {
        if url.scheme() != "memory" {
            return Err(Error::Config(format!(
                "the memory backend takes memory:// URLs, not {}://",
                url.scheme()
            )));
        }
        if !url.username().is_empty() || url.password().is_some() || url.port().is_some() {
            return Err(Error::Config(
                "a memory:// URL takes no user, password or port".into(),
            ));
        }
        let mut config = MemoryConfig::new();
        let name = url.host_str().unwrap_or("");
        if !name.is_empty() {
            config.name = Some(name.to_owned());
        }
        config.root = url_root(url)?;
        let known = [
            "history",
            "history_bytes",
            "max_value_size",
            "request_timeout",
            "connect_timeout",
        ];
        for (name, value) in url_params(url, &known)? {
            match name.as_str() {
                "history" => config = config.with_history(parse_param(&name, &value)?),
                "history_bytes" => config.history_bytes = parse_param(&name, &value)?,
                "request_timeout" => {
                    config.request_timeout = anykv_core::parse_duration_param(&name, &value)?
                }
                // Nothing to connect to; taken so every backend's URL
                // takes the same timeouts.
                "connect_timeout" => {
                    anykv_core::parse_duration_param(&name, &value)?;
                }
                _ => config.max_value_size = parse_param(&name, &value)?,
            }
        }
        Ok(config)
    }
}

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
    closed: AtomicBool,
    caps: Capabilities,
    request_timeout: Duration,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if !self.closed.swap(true, Ordering::SeqCst) {
            self.shared.state.write().close_owner(self.owner);
        }
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("name", &self.inner.name)
            .field("root", &self.inner.root)
            .field("closed", &self.inner.closed.load(Ordering::Relaxed))
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

    /// Opens a `memory://` URL as a shared, type-erased store.
    pub fn open_url(url: &str) -> Result<Arc<dyn Store>> {
        let parsed = anykv_core::parse_url(url)?;
        Ok(Arc::new(Self::open(MemoryConfig::from_url(&parsed)?)?))
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
                closed: AtomicBool::new(false),
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
        self.check()?;
        self.inner.shared.state.write().compact(revision);
        Ok(())
    }

    /// Fails with `Closed` after close; while the store is frozen, waits
    /// until it runs again or the request timeout passes (`Timeout`).
    async fn ready(&self) -> Result<()> {
        self.check()?;
        if self.inner.shared.paused.load(Ordering::SeqCst) {
            fault::wait_out_pause(&self.inner.shared, self.inner.request_timeout).await?;
            self.check()?;
        }
        Ok(())
    }

    fn check(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::SeqCst) {
            Err(Error::closed(BACKEND))
        } else {
            Ok(())
        }
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
        self.check()?;
        let full = self.full_key(key)?;
        options.validate()?;
        if value.len() > self.inner.shared.max_value_size {
            return Err(Error::ValueTooLarge {
                backend: BACKEND,
                key: key::normalize_key(key)?,
                size: value.len(),
                max: self.inner.shared.max_value_size,
            });
        }
        Ok((full, options.ttl.map(|t| t.max(MIN_TTL))))
    }

    fn after_write(&self, ttl: Option<Duration>) {
        if ttl.is_some() {
            self.inner.shared.kick_expiry();
        }
    }

    fn watch_filter(&self, filter: Filter, options: WatchOptions) -> Result<WatchStream> {
        options.validate()?;
        let registered = self.inner.shared.state.write().add_watcher(
            self.inner.owner,
            &self.inner.root,
            filter,
            options.from_revision,
            options.buffer,
        );
        let registered = match registered {
            Ok(r) => r,
            // A start whose history is gone is reported by the stream, the
            // one place a consumer handles compaction (it can also happen
            // mid-stream on backends that compact while watching).
            Err(e @ Error::Compacted { .. }) => {
                return Ok(Box::pin(futures::stream::once(async move { Err(e) })))
            }
            Err(e) => return Err(e),
        };
        Ok(registered.events.into_stream(
            registered.initial,
            WatchGuard {
                shared: self.inner.shared.clone(),
                id: registered.id,
            },
        ))
    }

    async fn lock_impl(
        &self,
        key: &str,
        options: LockOptions,
        wait: bool,
    ) -> Result<Option<LockGuard>> {
        self.check()?;
        let full = self.full_key(key)?;
        let canonical = key::normalize_key(key)?;
        let attempt = self
            .inner
            .shared
            .state
            .write()
            .lock(self.inner.owner, &full, wait);
        let guard = |ticket, token, lost| {
            LockGuard::new(
                canonical.clone(),
                token,
                lost,
                Box::new(LockRelease {
                    shared: self.inner.shared.clone(),
                    full: full.clone(),
                    ticket,
                }),
            )
        };
        match attempt {
            LockAttempt::Acquired {
                ticket,
                token,
                lost,
            } => Ok(Some(guard(ticket, token, lost))),
            LockAttempt::Busy => Ok(None),
            LockAttempt::Closed => Err(Error::closed(BACKEND)),
            LockAttempt::Queued { ticket, rx } => {
                let mut pending = PendingLock {
                    shared: self.inner.shared.clone(),
                    full: full.clone(),
                    ticket,
                    armed: true,
                };
                let outcome = match options.timeout {
                    Some(t) => tokio::time::timeout(t, rx).await.map_err(|_| t),
                    None => Ok(rx.await),
                };
                match outcome {
                    Ok(Ok((token, lost))) => {
                        pending.armed = false;
                        Ok(Some(guard(ticket, token, lost)))
                    }
                    Ok(Err(_)) => {
                        pending.armed = false;
                        Err(Error::closed(BACKEND))
                    }
                    // `pending` leaves the queue (or releases a lock granted
                    // in the same instant) as it drops.
                    Err(after) => Err(Error::Timeout {
                        backend: BACKEND,
                        operation: format!("lock {canonical:?}"),
                        after,
                    }),
                }
            }
        }
    }
}

/// A queued lock request; dropped before it is granted (timeout, or the
/// caller's future dropped), it leaves the queue, or releases the lock if it
/// was granted in that same instant.
struct PendingLock {
    shared: Arc<Shared>,
    full: String,
    ticket: u64,
    armed: bool,
}

impl Drop for PendingLock {
    fn drop(&mut self) {
        if self.armed {
            self.shared.state.write().unlock(&self.full, self.ticket);
        }
    }
}

struct LockRelease {
    shared: Arc<Shared>,
    full: String,
    ticket: u64,
}

#[async_trait]
impl Release for LockRelease {
    async fn release(&self) -> Result<()> {
        self.release_in_background();
        Ok(())
    }

    fn release_in_background(&self) {
        self.shared.state.write().unlock(&self.full, self.ticket);
    }
}

struct LeaseRelease {
    shared: Arc<Shared>,
    id: u64,
}

#[async_trait]
impl Release for LeaseRelease {
    async fn release(&self) -> Result<()> {
        self.release_in_background();
        Ok(())
    }

    fn release_in_background(&self) {
        self.shared.state.write().revoke_lease(self.id);
    }
}

struct WatchGuard {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.shared.state.write().remove_watcher(self.id);
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
        self.watch_filter(Filter::Key(full), options)
    }

    async fn watch_tree(&self, prefix: &str, options: WatchOptions) -> Result<WatchStream> {
        self.ready().await?;
        let (_, full) = self.full_prefix(prefix)?;
        self.watch_filter(Filter::Tree(full), options)
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<Lease> {
        self.ready().await?;
        anykv_core::check_ttl(ttl)?;
        let (id, lost) = self
            .inner
            .shared
            .state
            .write()
            .grant_lease(self.inner.owner)?;
        Ok(Lease::new(
            LeaseId(id),
            ttl.max(MIN_TTL),
            lost,
            Box::new(LeaseRelease {
                shared: self.inner.shared.clone(),
                id,
            }),
        ))
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
        if !self.inner.closed.swap(true, Ordering::SeqCst) {
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

/// Registers the `memory` scheme with [`anykv_core::registry`], so
/// `anykv_core::open("memory://...")` opens a [`MemoryStore`].
pub fn register() {
    anykv_core::register("memory", |url: Url| async move {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::open(MemoryConfig::from_url(&url)?)?);
        Ok(store)
    });
}
