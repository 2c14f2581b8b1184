//! The state one store's handles, background tasks, watches, leases and
//! locks share.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{watch, Notify};

use crate::batch::Batcher;
use crate::client::RedisClient;
use crate::config::RedisConfig;
use crate::feed::ChangeFeed;
use crate::keepalive::KeepAliveTask;
use crate::layout::Layout;

/// Everything one store owns. Its handles, the watch reader, the expiry
/// sweep and every lease's and lock's keep-alive hold it in an `Arc`.
pub(crate) struct StoreState {
    /// The configuration the store was opened with.
    pub(crate) config: RedisConfig,
    /// The store's names on the server.
    pub(crate) layout: Layout,
    /// The connection, and the closed flag.
    pub(crate) client: Arc<RedisClient>,
    /// Set once, on close: stops the reader and the sweep.
    pub(crate) shutdown: watch::Sender<bool>,
    /// The watch reader's position and whom it delivers to.
    pub(crate) feed: Mutex<ChangeFeed>,
    /// The store's leases, by id.
    pub(crate) leases: Mutex<HashMap<u64, KeepAliveTask>>,
    /// The store's held locks, by this store's lock id.
    pub(crate) locks: Mutex<HashMap<u64, HeldLock>>,
    /// Ids of watches, locks and epoch candidates, unique in the store.
    next_id: AtomicU64,
    /// Unique among all stores: lock tokens start with it.
    pub(crate) instance_id: String,
    /// Whether the watch reader has a connection it reads on.
    pub(crate) reader_connected: AtomicBool,
    /// Wakes the watch reader when it is parked (see
    /// [`ChangeFeed::parked`]).
    pub(crate) wake_reader: Notify,
    /// The namespace's epoch (`{ns}:epoch`) as this store knows it.
    pub(crate) epoch: Mutex<String>,
    /// Wakes every lease's and lock's keep-alive to refresh at once: the
    /// store's calls succeed again after failing, perhaps on a new
    /// primary that lacks the lease or the lock.
    pub(crate) recheck: Notify,
    /// `put` and `atomic_put` calls waiting to be sent together.
    pub(crate) batcher: Arc<Batcher>,
}

/// A lock this store holds.
pub(crate) struct HeldLock {
    /// The lock's full name (root joined in).
    pub(crate) full: String,
    /// The holder token the server stores for it.
    pub(crate) token: String,
    /// Its keep-alive.
    pub(crate) keepalive: KeepAliveTask,
}

impl StoreState {
    /// The state of a store just opened, whose reader starts after
    /// `revision` of the namespace's `epoch`.
    pub(crate) fn new(
        config: RedisConfig,
        layout: Layout,
        client: RedisClient,
        instance_id: String,
        epoch: String,
        revision: u64,
    ) -> Self {
        let (shutdown, _) = watch::channel(false);
        let client = Arc::new(client);
        StoreState {
            config,
            layout,
            batcher: Arc::new(Batcher::new(client.clone())),
            client,
            shutdown,
            feed: Mutex::new(ChangeFeed::new(revision)),
            leases: Mutex::new(HashMap::new()),
            locks: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            instance_id,
            reader_connected: AtomicBool::new(false),
            wake_reader: Notify::new(),
            epoch: Mutex::new(epoch),
            recheck: Notify::new(),
        }
    }

    /// A new id, unique in this store.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether the store is closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.client.closed().is_closed()
    }

    /// `Err(Closed)` once the store is closed.
    pub(crate) fn ensure_open(&self) -> anykv_core::Result<()> {
        self.client.closed().ensure_open()
    }

    /// Marks the store closed and stops its background work without
    /// talking to the server: the reader, the sweep, the watches (their
    /// streams end), lock waiters, and every keep-alive (their `lost()`
    /// fires).
    pub(crate) fn stop_locally(&self) {
        self.client.closed().close();
        self.shutdown.send_replace(true);
        self.feed.lock().close();
        for (_, lease) in self.leases.lock().drain() {
            lease.stop();
        }
        for (_, lock) in self.locks.lock().drain() {
            lock.keepalive.stop();
        }
    }
}
