//! The values that cross the [`crate::Store`] trait.

use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;

use crate::error::Result;

/// A key, its value and the revision of its last write.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KvPair {
    /// The canonical key, relative to the store's root.
    pub key: String,
    /// The value, byte for byte as written.
    pub value: Bytes,
    /// The revision of the key's last write; never 0. See
    /// [the revision rules](crate#revisions).
    pub revision: u64,
}

impl KvPair {
    /// A pair.
    pub fn new(key: impl Into<String>, value: impl Into<Bytes>, revision: u64) -> Self {
        KvPair {
            key: key.into(),
            value: value.into(),
            revision,
        }
    }
}

/// The id of a [`crate::Lease`], unique within one store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseId(pub u64);

impl std::fmt::Display for LeaseId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// Options of a write.
///
/// ```
/// use std::time::Duration;
/// use anykv_core::PutOptions;
/// let opts = PutOptions::new().with_ttl(Duration::from_secs(10));
/// assert_eq!(opts.ttl, Some(Duration::from_secs(10)));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PutOptions {
    /// The key vanishes this long after the write unless written again. A
    /// write without a TTL makes the key permanent. Values below the
    /// backend's [`Capabilities::min_ttl`] are raised to it; zero is an
    /// [`crate::Error::InvalidArgument`].
    pub ttl: Option<Duration>,
    /// The key vanishes with this lease. Exclusive with `ttl`.
    pub lease: Option<LeaseId>,
}

impl PutOptions {
    /// No TTL, no lease: a permanent key.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the TTL.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Binds the key to a lease.
    pub fn with_lease(mut self, lease: LeaseId) -> Self {
        self.lease = Some(lease);
        self
    }

    /// Checks the options: a TTL must be positive, at most [`MAX_TTL`],
    /// and excludes a lease.
    pub fn validate(&self) -> Result<()> {
        if let Some(ttl) = self.ttl {
            check_ttl(ttl)?;
        }
        if self.ttl.is_some() && self.lease.is_some() {
            return Err(crate::Error::InvalidArgument(
                "a write takes a TTL or a lease, not both".into(),
            ));
        }
        Ok(())
    }
}

/// The longest TTL of a key or lease: ten years.
pub const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Checks a key's or lease's TTL: more than zero and at most [`MAX_TTL`].
pub fn check_ttl(ttl: Duration) -> Result<()> {
    if ttl.is_zero() {
        return Err(crate::Error::InvalidArgument(
            "the TTL must be greater than zero".into(),
        ));
    }
    if ttl > MAX_TTL {
        return Err(crate::Error::InvalidArgument(format!(
            "a TTL of {ttl:?} is longer than the maximum of ten years"
        )));
    }
    Ok(())
}

/// The default limit on a transaction's operations, etcd's own default for
/// `--max-txn-ops`.
pub const DEFAULT_MAX_TXN_OPS: usize = 128;

/// The default number of events a watch stream buffers for a slow consumer.
pub const DEFAULT_WATCH_BUFFER: usize = 4096;

/// The largest watch buffer.
pub const MAX_WATCH_BUFFER: usize = 1 << 20;

/// Options of a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WatchOptions {
    /// Resume after this revision: the stream starts with the first change
    /// whose revision is greater than it, with no initial state and no
    /// [`WatchEvent::Synced`]. Where that history is gone, the stream
    /// yields [`crate::Error::Compacted`] and ends. `None` (the default):
    /// the current state, then `Synced`, then every change.
    pub from_revision: Option<u64>,
    /// How many events the stream holds for a consumer that does not keep
    /// up; past that it yields [`crate::Error::WatchLagged`] and ends.
    pub buffer: usize,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            from_revision: None,
            buffer: DEFAULT_WATCH_BUFFER,
        }
    }
}

impl WatchOptions {
    /// The default: current state, `Synced`, then every change.
    pub fn new() -> Self {
        Self::default()
    }

    /// Resume after revision `revision`.
    pub fn from_revision(revision: u64) -> Self {
        WatchOptions {
            from_revision: Some(revision),
            ..Self::default()
        }
    }

    /// Sets the buffer size, kept between 1 and [`MAX_WATCH_BUFFER`].
    pub fn with_buffer(mut self, buffer: usize) -> Self {
        self.buffer = buffer.clamp(1, MAX_WATCH_BUFFER);
        self
    }

    /// Checks the options: the buffer must be between 1 and
    /// [`MAX_WATCH_BUFFER`].
    pub fn validate(&self) -> Result<()> {
        if self.buffer == 0 || self.buffer > MAX_WATCH_BUFFER {
            return Err(crate::Error::InvalidArgument(format!(
                "a watch buffer of {} events is outside 1..={MAX_WATCH_BUFFER}",
                self.buffer
            )));
        }
        Ok(())
    }
}

/// One event of a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The key now has this value (initial state, create or update).
    Put(KvPair),
    /// The key was deleted (by `delete`, `delete_tree`, TTL expiry or lease
    /// loss) at `revision`.
    Delete {
        /// The canonical key, relative to the store's root.
        key: String,
        /// The revision of the delete, greater than the deleted pair's.
        revision: u64,
    },
    /// Everything before this event is the complete state of what the
    /// watch covers as of `revision`; live changes follow.
    Synced {
        /// The store's revision at the snapshot.
        revision: u64,
    },
}

impl WatchEvent {
    /// The event's key, if it has one.
    pub fn key(&self) -> Option<&str> {
        match self {
            WatchEvent::Put(kv) => Some(&kv.key),
            WatchEvent::Delete { key, .. } => Some(key),
            WatchEvent::Synced { .. } => None,
        }
    }

    /// The event's revision.
    pub fn revision(&self) -> u64 {
        match self {
            WatchEvent::Put(kv) => kv.revision,
            WatchEvent::Delete { revision, .. } | WatchEvent::Synced { revision } => *revision,
        }
    }
}

/// A stream of watch events: `Send`, `'static`, and ended by dropping it.
pub type WatchStream = BoxStream<'static, Result<WatchEvent>>;

/// The default TTL of the lease behind a lock.
pub const DEFAULT_LOCK_TTL: Duration = Duration::from_secs(15);

/// Options of a lock.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockOptions {
    /// The TTL of the lease that holds the lock: if the holder dies, a waiter
    /// gets the lock within this time plus slack.
    pub ttl: Duration,
    /// How long [`crate::Store::lock`] waits for another holder before
    /// failing with [`crate::Error::LockTimeout`]; `None` waits for ever.
    pub timeout: Option<Duration>,
}

impl Default for LockOptions {
    fn default() -> Self {
        LockOptions {
            ttl: DEFAULT_LOCK_TTL,
            timeout: None,
        }
    }
}

impl LockOptions {
    /// The default: a 15 s lease, no timeout.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the lease TTL.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Sets the wait timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// What a backend can do, and its limits.
///
/// Build one with [`Capabilities::new`] and change the fields that differ.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// The backend's name, as in error messages.
    pub backend: &'static str,
    /// `watch` and `watch_tree` work.
    pub watch: bool,
    /// Every put is delivered to watchers; nothing is coalesced.
    pub watch_every_revision: bool,
    /// [`WatchOptions::from_revision`] works.
    pub watch_resume: bool,
    /// `put` with a TTL works.
    pub ttl: bool,
    /// The smallest TTL; smaller ones are raised to it.
    pub min_ttl: Duration,
    /// [`crate::Store::grant_lease`] works.
    pub leases: bool,
    /// [`crate::Store::lock`] works.
    pub locks: bool,
    /// The largest value, in bytes.
    pub max_value_size: usize,
    /// [`crate::Store::txn`] works.
    pub transactions: bool,
    /// The most operations in one branch of a transaction, and the most
    /// compares; a larger transaction is refused before anything is sent.
    pub max_txn_ops: usize,
}

impl Capabilities {
    /// Every capability on but [`Capabilities::transactions`] (a backend
    /// turns it on when it implements [`crate::Store::txn`]), `min_ttl` of
    /// 1 ms, values up to 16 MiB, transactions of up to
    /// [`crate::DEFAULT_MAX_TXN_OPS`] operations.
    pub fn new(backend: &'static str) -> Self {
        Capabilities {
            backend,
            watch: true,
            watch_every_revision: true,
            watch_resume: true,
            ttl: true,
            min_ttl: Duration::from_millis(1),
            leases: true,
            locks: true,
            max_value_size: 16 * 1024 * 1024,
            transactions: false,
            max_txn_ops: DEFAULT_MAX_TXN_OPS,
        }
    }
}

/// What a store holds open right now, for monitoring and for tests that
/// check resources are freed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreStats {
    /// Open watch streams.
    pub watches: usize,
    /// Live leases granted by this store (not counting those behind locks).
    pub leases: usize,
    /// Locks held through this store.
    pub locks: usize,
    /// Network connections the store holds open (0 for in-process stores).
    pub connections: usize,
}

impl StoreStats {
    /// Stats with the given counts.
    pub fn new(watches: usize, leases: usize, locks: usize, connections: usize) -> Self {
        StoreStats {
            watches,
            leases,
            locks,
            connections,
        }
    }
}

/// Options of [`crate::Store::list_with`]: a page of a listing.
///
/// ```
/// use anykv_core::ListOptions;
/// let first = ListOptions::new().with_limit(1000).keys_only();
/// let next = ListOptions::new().with_limit(1000).start_after("jobs/0999");
/// assert_eq!(next.start_after.as_deref(), Some("jobs/0999"));
/// # let _ = first;
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListOptions {
    /// At most this many pairs (`None`: all). Zero is `InvalidArgument`.
    pub limit: Option<usize>,
    /// Only keys after this one in byte order (canonical, relative to the
    /// root; need not exist): the last key of the previous page.
    pub start_after: Option<String>,
    /// Only keys and revisions: every value comes back empty, and the
    /// backend does not fetch them.
    pub keys_only: bool,
}

impl ListOptions {
    /// Everything, values included: what [`crate::Store::list`] returns.
    pub fn new() -> Self {
        Self::default()
    }

    /// At most `limit` pairs.
    pub fn with_limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Only keys after `key` (the last key of the previous page).
    pub fn start_after(mut self, key: impl Into<String>) -> Self {
        self.start_after = Some(key.into());
        self
    }

    /// Keys and revisions only, values left empty.
    pub fn keys_only(mut self) -> Self {
        self.keys_only = true;
        self
    }

    /// Checks the options: a limit of at least 1, and a `start_after`
    /// that is a valid key (it is returned in canonical form).
    pub fn validate(&self) -> Result<Option<String>> {
        if self.limit == Some(0) {
            return Err(crate::Error::InvalidArgument(
                "a listing's limit must be at least 1".into(),
            ));
        }
        self.start_after
            .as_deref()
            .map(crate::key::normalize_key)
            .transpose()
    }

    /// Applies the options to a whole, sorted listing: what a backend
    /// without a native page does (it reads everything first).
    pub fn apply(&self, pairs: Vec<KvPair>) -> Result<Vec<KvPair>> {
        let after = self.validate()?;
        let limit = self.limit.unwrap_or(usize::MAX);
        Ok(pairs
            .into_iter()
            .filter(|p| after.as_deref().is_none_or(|a| p.key.as_str() > a))
            .take(limit)
            .map(|mut p| {
                if self.keys_only {
                    p.value = Bytes::new();
                }
                p
            })
            .collect())
    }
}

/// What [`crate::Store::status`] reports: the backend, the servers behind
/// it and what they say about themselves — what `etcdctl endpoint status`
/// or `redis-cli INFO` give, the same shape for every backend.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreStatus {
    /// The backend's name.
    pub backend: &'static str,
    /// The store's current revision, where the backend can read it
    /// without writing.
    pub revision: Option<u64>,
    /// One entry per server the store talks to (none for an in-process
    /// store).
    pub servers: Vec<ServerStatus>,
    /// What the store holds open.
    pub stats: StoreStats,
    /// Anything else worth showing, as name and value (a file's path, a
    /// Redis mode, a ZooKeeper session id).
    pub details: Vec<(String, String)>,
}

impl StoreStatus {
    /// A status with no servers and no details.
    pub fn new(backend: &'static str, revision: Option<u64>, stats: StoreStats) -> Self {
        StoreStatus {
            backend,
            revision,
            servers: Vec::new(),
            stats,
            details: Vec::new(),
        }
    }

    /// Adds a server.
    pub fn with_server(mut self, server: ServerStatus) -> Self {
        self.servers.push(server);
        self
    }

    /// Adds a detail.
    pub fn with_detail(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.details.push((name.into(), value.into()));
        self
    }
}

/// One server behind a store, as [`StoreStatus`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStatus {
    /// The address the store uses (`host:port`), never with credentials.
    pub address: String,
    /// The server's software version, when it says.
    pub version: Option<String>,
    /// Its role: `leader`, `follower`, `primary`, `replica`, `standalone`…
    pub role: Option<String>,
    /// `None` when it answered; otherwise why not (the store may still
    /// work through other servers).
    pub error: Option<String>,
}

impl ServerStatus {
    /// A server that answered.
    pub fn new(address: impl Into<String>, version: Option<String>, role: Option<String>) -> Self {
        ServerStatus {
            address: address.into(),
            version,
            role,
            error: None,
        }
    }

    /// A server that did not answer, and why.
    pub fn unreachable(address: impl Into<String>, error: impl Into<String>) -> Self {
        ServerStatus {
            address: address.into(),
            version: None,
            role: None,
            error: Some(error.into()),
        }
    }
}
