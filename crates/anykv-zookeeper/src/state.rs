//! What a store's handles, its shared watch, its leases and its locks
//! share: the connection, the closed flag, the tables of leases and locks,
//! the shared sessions and the watch feed's registration.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;

use anykv_core::backend::{EventSender, LostTrigger, WatchTarget};
use anykv_core::{Capabilities, WatchEvent};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, watch};

use crate::client::ZkClient;
use crate::sessions::{SessionPool, SharedSession};

/// The state of one open store. Its handles hold it in an `Arc`; the
/// shared watch, and leases and locks handed out, hold it weakly.
pub(crate) struct StoreState {
    /// The store's own session, its configuration, layout and closed flag.
    pub(crate) client: ZkClient,
    /// What the store can do.
    pub(crate) capabilities: Capabilities,
    /// Set once, on close (or when the last handle goes): ends the shared
    /// watch, its streams and lock waiters.
    pub(crate) shutdown: watch::Sender<bool>,
    /// Held while the shared watch hands events to its streams, and while
    /// `close()` marks the store closed: once `close()` returned, no
    /// stream is given anything more.
    pub(crate) delivery_gate: Mutex<()>,
    /// The store's leases, by id.
    pub(crate) leases: Mutex<HashMap<u64, Arc<LeaseEntry>>>,
    /// The store's held locks, by this store's lock id.
    pub(crate) locks: Mutex<HashMap<u64, Arc<HeldLock>>>,
    /// The next lock id.
    pub(crate) next_lock_id: AtomicU64,
    /// The shared sessions of leases and locks.
    pub(crate) sessions: SessionPool,
    /// How many watch streams are open.
    pub(crate) open_watches: Arc<AtomicUsize>,
    /// Where new streams register with the running shared watch; `None`
    /// while none runs.
    pub(crate) watch_feed: Mutex<Option<WatchFeed>>,
    /// Keys this store last saw present (a hint for plain puts without a
    /// read, never trusted for correctness).
    pub(crate) present_keys: Mutex<HashSet<String>>,
}

impl StoreState {
    /// The state of a store whose session is open.
    pub(crate) fn new(client: ZkClient, capabilities: Capabilities) -> Self {
        let (shutdown, _) = watch::channel(false);
        StoreState {
            client,
            capabilities,
            shutdown,
            delivery_gate: Mutex::new(()),
            leases: Mutex::new(HashMap::new()),
            locks: Mutex::new(HashMap::new()),
            next_lock_id: AtomicU64::new(1),
            sessions: SessionPool::default(),
            open_watches: Arc::new(AtomicUsize::new(0)),
            watch_feed: Mutex::new(None),
            present_keys: Mutex::new(HashSet::new()),
        }
    }

    /// Whether the store is closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.client.closed().is_closed()
    }

    /// `Err(Closed)` once the store is closed.
    pub(crate) fn ensure_open(&self) -> anykv_core::Result<()> {
        self.client.closed().ensure_open()
    }
}

impl Drop for StoreState {
    /// The last handle is gone: ends the watch and fires every lease's and
    /// lock's `lost()`; closing the shared sessions removes their nodes.
    fn drop(&mut self) {
        self.client.closed().close();
        self.shutdown.send_replace(true);
        for (_, l) in self.leases.lock().drain() {
            l.trigger.fire();
        }
        for (_, l) in self.locks.lock().drain() {
            l.trigger.fire();
        }
        self.sessions.close_all();
    }
}

/// A live lease: its session and the value nodes written with it.
pub(crate) struct LeaseEntry {
    /// The lease's id.
    pub(crate) id: u64,
    /// The shared session its keys are ephemeral nodes of.
    pub(crate) session: Arc<SharedSession>,
    /// Fires the lease's `lost()`.
    pub(crate) trigger: LostTrigger,
    /// Value node path -> (key node path, the key node's version after
    /// the write); `None` once the lease is revoked.
    nodes: Mutex<Option<HashMap<String, (String, i32)>>>,
}

impl LeaseEntry {
    /// A lease on `session` with no keys yet.
    pub(crate) fn new(id: u64, session: Arc<SharedSession>, trigger: LostTrigger) -> Self {
        LeaseEntry {
            id,
            session,
            trigger,
            nodes: Mutex::new(Some(HashMap::new())),
        }
    }

    /// Whether the lease can take writes.
    pub(crate) fn is_live(&self) -> bool {
        !self.trigger.is_fired() && !self.session.has_ended() && self.nodes.lock().is_some()
    }

    /// Notes a value node written with the lease (the key node's version
    /// after the write, which any later rewrite of the key changes).
    /// `false` if the lease was revoked meanwhile: the caller deletes
    /// what it wrote.
    pub(crate) fn record(&self, vpath: &str, dir: &str, version: i32) -> bool {
        match self.nodes.lock().as_mut() {
            Some(nodes) => {
                nodes.insert(vpath.to_owned(), (dir.to_owned(), version));
                true
            }
            None => false,
        }
    }

    /// Marks the lease revoked: the value nodes written with it (value
    /// node path -> key node path and version), once; `None` after.
    pub(crate) fn take_nodes(&self) -> Option<HashMap<String, (String, i32)>> {
        self.nodes.lock().take()
    }
}

/// A lock this store holds.
pub(crate) struct HeldLock {
    /// This store's id of the lock.
    pub(crate) id: u64,
    /// The shared session its waiter node lives on.
    pub(crate) session: Arc<SharedSession>,
    /// The holder's waiter node.
    pub(crate) node: String,
    /// Fires the guard's `lost()`.
    pub(crate) trigger: LostTrigger,
}

/// A stream waiting to join the shared watch.
pub(crate) struct NewWatch {
    /// What it covers.
    pub(crate) target: WatchTarget,
    /// Its initial state and `Synced`, sent once they are complete.
    pub(crate) initial: oneshot::Sender<Vec<WatchEvent>>,
    /// Its live events, after the initial state.
    pub(crate) events: EventSender,
}

/// The running shared watch, as new streams reach it.
pub(crate) struct WatchFeed {
    /// Where new streams register.
    pub(crate) registrations: mpsc::UnboundedSender<NewWatch>,
}

/// How many keys a store remembers as present, for plain puts without a
/// read (see `ZkStore::saw_present`).
pub(crate) const PRESENT_KEYS: usize = 100_000;

/// How a write makes the value node.
pub(crate) enum Mode {
    /// A persistent node.
    Plain,
    /// A TTL node.
    Ttl(std::time::Duration),
    /// An ephemeral node of the lease's session.
    Lease(Arc<LeaseEntry>),
}
