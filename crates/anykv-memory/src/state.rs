//! The shared state of one in-process store: data, history, watchers,
//! leases and locks, behind one mutex that is never held across an await.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use anykv_core::fanout::{event_channel, EventReceiver, EventSender};
use anykv_core::{
    key, lost_signal, Bytes, Error, KvPair, LostSignal, LostTrigger, Result, WatchEvent,
};
use parking_lot::{Condvar, Mutex, RwLock};
use tokio::sync::oneshot;

pub(crate) const BACKEND: &str = "memory";

/// One store's data, shared by every handle opened on it.
pub(crate) struct Shared {
    /// Reads take it shared, writes exclusive; it is never held across an
    /// await.
    pub(crate) state: RwLock<State>,
    /// Set, under its mutex, when a new deadline may be earlier than the
    /// one the expiry thread sleeps until.
    expiry_kicked: Mutex<bool>,
    /// Wakes the expiry thread when an earlier deadline appears.
    expiry_cv: Condvar,
    expiry_thread: AtomicBool,
    pub(crate) max_value_size: usize,
    /// Set while the store is frozen (see [`crate::pause_named`]).
    pub(crate) paused: AtomicBool,
    /// Wakes the calls waiting out a freeze.
    pub(crate) resumed: tokio::sync::Notify,
}

pub(crate) struct Entry {
    value: Bytes,
    revision: u64,
    lease: Option<u64>,
    expires: Option<Instant>,
}

/// One change, as kept in the history for resuming watches.
struct Change {
    key: String,
    revision: u64,
    /// `None` for a delete.
    value: Option<Bytes>,
}

pub(crate) enum Filter {
    Key(String),
    Tree(String),
}

struct Watcher {
    owner: u64,
    root: String,
    filter: Filter,
    /// Live changes at or below this revision are not delivered (a resume
    /// from a revision ahead of the store).
    after: u64,
    events: EventSender,
}

struct LeaseState {
    owner: u64,
    keys: HashSet<String>,
    trigger: LostTrigger,
}

struct Holder {
    ticket: u64,
    owner: u64,
    _trigger: LostTrigger,
}

pub(crate) type Grant = (u64, LostSignal);

struct Waiter {
    ticket: u64,
    owner: u64,
    tx: oneshot::Sender<Grant>,
}

#[derive(Default)]
struct LockState {
    holder: Option<Holder>,
    waiters: VecDeque<Waiter>,
}

#[derive(Default)]
struct Owner {
    leases: HashSet<u64>,
    watchers: HashSet<u64>,
    locks: HashSet<(String, u64)>,
}

pub(crate) struct State {
    revision: u64,
    data: BTreeMap<String, Entry>,
    history: VecDeque<Change>,
    history_limit: usize,
    history_bytes: usize,
    history_bytes_limit: usize,
    /// Every change after this revision is in `history`.
    compacted: u64,
    expiries: BTreeSet<(Instant, String)>,
    watchers: HashMap<u64, Watcher>,
    key_watchers: HashMap<String, Vec<u64>>,
    tree_watchers: HashMap<String, Vec<u64>>,
    leases: HashMap<u64, LeaseState>,
    locks: HashMap<String, LockState>,
    owners: HashMap<u64, Owner>,
    next_id: u64,
}

/// The outcome of a lock attempt made under the state lock.
pub(crate) enum LockAttempt {
    Acquired {
        ticket: u64,
        token: u64,
        lost: LostSignal,
    },
    Busy,
    /// The owner was closed.
    Closed,
    Queued {
        ticket: u64,
        rx: oneshot::Receiver<Grant>,
    },
}

/// A watch registered under the state lock, with what it must deliver
/// before live events.
pub(crate) struct Registered {
    pub(crate) id: u64,
    pub(crate) initial: Vec<WatchEvent>,
    pub(crate) events: EventReceiver,
}

impl Shared {
    pub(crate) fn new(
        history_limit: usize,
        history_bytes_limit: usize,
        max_value_size: usize,
    ) -> Arc<Self> {
        Arc::new(Shared {
            state: RwLock::new(State {
                revision: 0,
                data: BTreeMap::new(),
                history: VecDeque::new(),
                history_limit,
                history_bytes: 0,
                history_bytes_limit,
                compacted: 0,
                expiries: BTreeSet::new(),
                watchers: HashMap::new(),
                key_watchers: HashMap::new(),
                tree_watchers: HashMap::new(),
                leases: HashMap::new(),
                locks: HashMap::new(),
                owners: HashMap::new(),
                next_id: 1,
            }),
            expiry_kicked: Mutex::new(false),
            expiry_cv: Condvar::new(),
            expiry_thread: AtomicBool::new(false),
            max_value_size,
            paused: AtomicBool::new(false),
            resumed: tokio::sync::Notify::new(),
        })
    }

    /// Makes sure a thread expires TTL keys on time, and wakes it so it sees
    /// a new, possibly earlier deadline. The thread holds only a weak
    /// reference and ends when the store is gone; it needs no async runtime,
    /// so a store outlives the runtime that created it.
    pub(crate) fn kick_expiry(self: &Arc<Self>) {
        if !self.expiry_thread.swap(true, Ordering::SeqCst) {
            let weak = Arc::downgrade(self);
            let spawned = std::thread::Builder::new()
                .name("anykv-memory-ttl".into())
                .spawn(move || expiry_loop(weak));
            if spawned.is_err() {
                self.expiry_thread.store(false, Ordering::SeqCst);
                tracing::error!("anykv-memory: could not start the TTL thread");
            }
        }
        *self.expiry_kicked.lock() = true;
        self.expiry_cv.notify_all();
    }
}

fn expiry_loop(weak: Weak<Shared>) {
    loop {
        let Some(shared) = weak.upgrade() else { return };
        let now = Instant::now();
        let wake = {
            let mut state = shared.state.write();
            state.expire_due(now);
            let idle_check = now + Duration::from_secs(1);
            state
                .expiries
                .first()
                .map(|(at, _)| (*at).min(idle_check))
                .unwrap_or(idle_check)
        };
        let mut kicked = shared.expiry_kicked.lock();
        if !*kicked {
            shared.expiry_cv.wait_until(&mut kicked, wake);
        }
        *kicked = false;
        drop(kicked);
        drop(shared);
    }
}

fn ancestors(full: &str) -> impl Iterator<Item = &str> {
    std::iter::once("").chain(
        full.char_indices()
            .filter(|(_, c)| *c == '/')
            .map(move |(i, _)| &full[..i]),
    )
}

impl State {
    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    pub(crate) fn revision(&self) -> u64 {
        self.revision
    }

    pub(crate) fn new_owner(&mut self) -> u64 {
        let id = self.next_id();
        self.owners.insert(id, Owner::default());
        id
    }

    pub(crate) fn get(&self, full: &str, root: &str) -> Option<KvPair> {
        self.data.get(full).map(|e| pair(root, full, e))
    }

    pub(crate) fn current_revision_of(&self, full: &str) -> Option<u64> {
        self.data.get(full).map(|e| e.revision)
    }

    fn tree_iter<'a>(
        &'a self,
        full_prefix: &str,
    ) -> Box<dyn Iterator<Item = (&'a String, &'a Entry)> + 'a> {
        match key::tree_range(full_prefix) {
            (_, None) => Box::new(self.data.iter()),
            (start, Some(end)) => Box::new(self.data.range::<str, _>((
                Bound::Included(start.as_str()),
                Bound::Excluded(end.as_str()),
            ))),
        }
    }

    /// A page of [`State::list`]: keys after `after` (full), at most
    /// `limit`, values left empty with `keys_only`. Reads only the page.
    pub(crate) fn list_page(
        &self,
        full_prefix: &str,
        root: &str,
        after: Option<&str>,
        limit: usize,
        keys_only: bool,
    ) -> Vec<KvPair> {
        let start = if full_prefix.is_empty() {
            String::new()
        } else {
            format!("{full_prefix}/")
        };
        let lower = match after {
            Some(a) if a >= start.as_str() => Bound::Excluded(a),
            _ => Bound::Included(start.as_str()),
        };
        self.data
            .range::<str, _>((lower, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(start.as_str()))
            .take(limit)
            .map(|(k, e)| {
                let mut p = pair(root, k, e);
                if keys_only {
                    p.value = Bytes::new();
                }
                p
            })
            .collect()
    }

    pub(crate) fn list(&self, full_prefix: &str, root: &str) -> Vec<KvPair> {
        if full_prefix.is_empty() {
            return self.data.iter().map(|(k, e)| pair(root, k, e)).collect();
        }
        // The tree is the contiguous run of keys starting with `prefix/`.
        let mut start = String::with_capacity(full_prefix.len() + 1);
        start.push_str(full_prefix);
        start.push('/');
        self.data
            .range::<str, _>((Bound::Included(start.as_str()), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(start.as_str()))
            .map(|(k, e)| pair(root, k, e))
            .collect()
    }

    /// Writes `full`, returning its new revision. The caller has checked
    /// the value and any compare condition.
    pub(crate) fn put(
        &mut self,
        full: String,
        value: Bytes,
        lease: Option<u64>,
        ttl: Option<Duration>,
    ) -> Result<u64> {
        if let Some(l) = lease {
            if !self.leases.contains_key(&l) {
                return Err(Error::LeaseLost {
                    backend: BACKEND,
                    lease: l,
                });
            }
        }
        // Deadlines past what an Instant can hold are "never" in practice
        // (the TTL is at most ten years, checked by the caller).
        let expires = ttl.and_then(|t| Instant::now().checked_add(t));
        self.revision += 1;
        let revision = self.revision;
        let entry = Entry {
            value: value.clone(),
            revision,
            lease,
            expires,
        };
        // Rewriting a key (the common case) keeps its map key: no
        // allocation for it.
        let old = match self.data.get_mut(&full) {
            Some(slot) => Some(std::mem::replace(slot, entry)),
            None => {
                self.data.insert(full.clone(), entry);
                None
            }
        };
        if let Some(old) = old {
            if old.lease.is_some() || old.expires.is_some() {
                self.unbind(&full, &old);
            }
        }
        if let Some(l) = lease {
            if let Some(ls) = self.leases.get_mut(&l) {
                ls.keys.insert(full.clone());
            }
        }
        if let Some(at) = expires {
            self.expiries.insert((at, full.clone()));
        }
        self.record(Change {
            key: full,
            revision,
            value: Some(value),
        });
        Ok(revision)
    }

    /// Deletes `full` if present, returning the delete's revision.
    pub(crate) fn delete(&mut self, full: &str) -> Option<u64> {
        let old = self.data.remove(full)?;
        self.unbind(full, &old);
        self.revision += 1;
        let revision = self.revision;
        self.record(Change {
            key: full.to_owned(),
            revision,
            value: None,
        });
        Some(revision)
    }

    /// Deletes `full_key` (if given) and the tree of `full_prefix`, one
    /// revision per key, in key order.
    pub(crate) fn delete_tree(&mut self, full_key: Option<&str>, full_prefix: &str) -> u64 {
        let mut keys: Vec<String> = self
            .tree_iter(full_prefix)
            .map(|(k, _)| k.clone())
            .collect();
        if let Some(k) = full_key {
            if self.data.contains_key(k) {
                keys.insert(0, k.to_owned());
            }
        }
        let mut n = 0;
        for k in keys {
            if self.delete(&k).is_some() {
                n += 1;
            }
        }
        n
    }

    fn unbind(&mut self, full: &str, old: &Entry) {
        if let Some(l) = old.lease {
            if let Some(ls) = self.leases.get_mut(&l) {
                ls.keys.remove(full);
            }
        }
        if let Some(at) = old.expires {
            self.expiries.remove(&(at, full.to_owned()));
        }
    }

    /// Deletes every TTL key whose deadline has passed.
    pub(crate) fn expire_due(&mut self, now: Instant) {
        while let Some((at, k)) = self.expiries.first().cloned() {
            if at > now {
                break;
            }
            self.expiries.remove(&(at, k.clone()));
            self.delete(&k);
        }
    }

    fn record(&mut self, change: Change) {
        self.notify(&change);
        self.history_bytes += change_size(&change);
        self.history.push_back(change);
        while self.history.len() > 1
            && (self.history.len() > self.history_limit
                || self.history_bytes > self.history_bytes_limit)
        {
            if let Some(old) = self.history.pop_front() {
                self.history_bytes -= change_size(&old);
                self.compacted = old.revision;
            }
        }
    }

    /// Drops history up to `revision` (at most the current revision).
    pub(crate) fn compact(&mut self, revision: u64) {
        let revision = revision.min(self.revision);
        while self.history.front().is_some_and(|c| c.revision <= revision) {
            if let Some(old) = self.history.pop_front() {
                self.history_bytes -= change_size(&old);
            }
        }
        self.compacted = self.compacted.max(revision);
    }

    fn notify(&mut self, change: &Change) {
        if self.watchers.is_empty() {
            return;
        }
        let mut targets: Vec<u64> = Vec::new();
        if let Some(ids) = self.key_watchers.get(&change.key) {
            targets.extend(ids);
        }
        for anc in ancestors(&change.key) {
            if let Some(ids) = self.tree_watchers.get(anc) {
                targets.extend(ids);
            }
        }
        let mut dead = Vec::new();
        for id in targets {
            let Some(w) = self.watchers.get(&id) else {
                continue;
            };
            if change.revision <= w.after {
                continue;
            }
            let Some(rel) = key::strip_root(&w.root, &change.key) else {
                continue;
            };
            let event = match &change.value {
                Some(v) => WatchEvent::Put(KvPair::new(rel, v.clone(), change.revision)),
                None => WatchEvent::Delete {
                    key: rel.to_owned(),
                    revision: change.revision,
                },
            };
            if w.events.send(Ok(event)).is_err() {
                dead.push(id);
            }
        }
        for id in dead {
            self.remove_watcher(id);
        }
    }

    /// Registers a watch. With `from`, replays the history after it (or
    /// fails with `Compacted`); without, snapshots the current state. Both
    /// happen under the lock, so no change falls between the two.
    pub(crate) fn add_watcher(
        &mut self,
        owner: u64,
        root: &str,
        filter: Filter,
        from: Option<u64>,
        buffer: usize,
    ) -> Result<Registered> {
        if !self.owners.contains_key(&owner) {
            return Err(Error::closed(BACKEND));
        }
        let initial = match from {
            Some(r) => {
                if r < self.compacted {
                    return Err(Error::Compacted {
                        backend: BACKEND,
                        requested: r,
                        oldest: self.compacted,
                    });
                }
                let start = self.history.partition_point(|c| c.revision <= r);
                self.history
                    .range(start..)
                    .filter(|c| matches_filter(&filter, &c.key))
                    .filter_map(|c| {
                        let rel = key::strip_root(root, &c.key)?.to_owned();
                        Some(match &c.value {
                            Some(v) => WatchEvent::Put(KvPair::new(rel, v.clone(), c.revision)),
                            None => WatchEvent::Delete {
                                key: rel,
                                revision: c.revision,
                            },
                        })
                    })
                    .collect()
            }
            None => {
                let mut events: Vec<WatchEvent> = match &filter {
                    Filter::Key(k) => self
                        .data
                        .get(k)
                        .map(|e| WatchEvent::Put(pair(root, k, e)))
                        .into_iter()
                        .collect(),
                    Filter::Tree(p) => self
                        .tree_iter(p)
                        .map(|(k, e)| WatchEvent::Put(pair(root, k, e)))
                        .collect(),
                };
                events.push(WatchEvent::Synced {
                    revision: self.revision,
                });
                events
            }
        };
        let id = self.next_id();
        let (tx, rx) = event_channel(BACKEND, buffer);
        match &filter {
            Filter::Key(k) => self.key_watchers.entry(k.clone()).or_default().push(id),
            Filter::Tree(p) => self.tree_watchers.entry(p.clone()).or_default().push(id),
        }
        self.watchers.insert(
            id,
            Watcher {
                owner,
                root: root.to_owned(),
                filter,
                after: from.unwrap_or(0),
                events: tx,
            },
        );
        if let Some(o) = self.owners.get_mut(&owner) {
            o.watchers.insert(id);
        }
        Ok(Registered {
            id,
            initial,
            events: rx,
        })
    }

    pub(crate) fn remove_watcher(&mut self, id: u64) {
        let Some(w) = self.watchers.remove(&id) else {
            return;
        };
        let (map, k) = match &w.filter {
            Filter::Key(k) => (&mut self.key_watchers, k),
            Filter::Tree(p) => (&mut self.tree_watchers, p),
        };
        if let Some(ids) = map.get_mut(k) {
            ids.retain(|x| *x != id);
            if ids.is_empty() {
                map.remove(k);
            }
        }
        if let Some(o) = self.owners.get_mut(&w.owner) {
            o.watchers.remove(&id);
        }
    }

    pub(crate) fn grant_lease(&mut self, owner: u64) -> Result<(u64, LostSignal)> {
        if !self.owners.contains_key(&owner) {
            return Err(Error::closed(BACKEND));
        }
        let id = self.next_id();
        let (trigger, signal) = lost_signal();
        self.leases.insert(
            id,
            LeaseState {
                owner,
                keys: HashSet::new(),
                trigger,
            },
        );
        if let Some(o) = self.owners.get_mut(&owner) {
            o.leases.insert(id);
        }
        Ok((id, signal))
    }

    /// Revokes a lease: its keys are deleted (in key order) and its loss
    /// signal fires. Revoking a lease that is gone does nothing.
    pub(crate) fn revoke_lease(&mut self, id: u64) {
        let Some(ls) = self.leases.remove(&id) else {
            return;
        };
        if let Some(o) = self.owners.get_mut(&ls.owner) {
            o.leases.remove(&id);
        }
        let mut keys: Vec<String> = ls.keys.into_iter().collect();
        keys.sort();
        for k in keys {
            self.delete(&k);
        }
        ls.trigger.fire();
    }

    pub(crate) fn lock(&mut self, owner: u64, full: &str, wait: bool) -> LockAttempt {
        if !self.owners.contains_key(&owner) {
            return LockAttempt::Closed;
        }
        let ticket = self.next_id();
        let free = match self.locks.get(full) {
            None => true,
            Some(l) => l.holder.is_none() && l.waiters.is_empty(),
        };
        if free {
            let (token, lost) = self.grant_lock(full, owner, ticket);
            return LockAttempt::Acquired {
                ticket,
                token,
                lost,
            };
        }
        if !wait {
            return LockAttempt::Busy;
        }
        let (tx, rx) = oneshot::channel();
        self.locks
            .entry(full.to_owned())
            .or_default()
            .waiters
            .push_back(Waiter { ticket, owner, tx });
        LockAttempt::Queued { ticket, rx }
    }

    /// Makes `ticket` the holder; the fencing token is a new store revision,
    /// so tokens of one lock strictly increase.
    fn grant_lock(&mut self, full: &str, owner: u64, ticket: u64) -> (u64, LostSignal) {
        self.revision += 1;
        let token = self.revision;
        let (trigger, lost) = lost_signal();
        self.locks.entry(full.to_owned()).or_default().holder = Some(Holder {
            ticket,
            owner,
            _trigger: trigger,
        });
        if let Some(o) = self.owners.get_mut(&owner) {
            o.locks.insert((full.to_owned(), ticket));
        }
        (token, lost)
    }

    /// Releases the lock if `ticket` holds it, handing it to the first
    /// waiter still waiting; if `ticket` is still queued, leaves the queue.
    /// A released or lost holder's ticket never frees a newer holder.
    pub(crate) fn unlock(&mut self, full: &str, ticket: u64) {
        let Some(lock) = self.locks.get_mut(full) else {
            return;
        };
        if lock.holder.as_ref().is_some_and(|h| h.ticket == ticket) {
            let holder = lock.holder.take();
            if let Some(h) = holder {
                if let Some(o) = self.owners.get_mut(&h.owner) {
                    o.locks.remove(&(full.to_owned(), ticket));
                }
            }
            self.hand_over(full);
        } else {
            lock.waiters.retain(|w| w.ticket != ticket);
            if lock.holder.is_none() && lock.waiters.is_empty() {
                self.locks.remove(full);
            }
        }
    }

    fn hand_over(&mut self, full: &str) {
        loop {
            let Some(lock) = self.locks.get_mut(full) else {
                return;
            };
            let Some(next) = lock.waiters.pop_front() else {
                self.locks.remove(full);
                return;
            };
            if next.tx.is_closed() || !self.owners.contains_key(&next.owner) {
                continue;
            }
            let grant = self.grant_lock(full, next.owner, next.ticket);
            if next.tx.send(grant).is_ok() {
                return;
            }
            // The waiter gave up between the check and the send.
            if let Some(lock) = self.locks.get_mut(full) {
                lock.holder = None;
            }
            if let Some(o) = self.owners.get_mut(&next.owner) {
                o.locks.remove(&(full.to_owned(), next.ticket));
            }
        }
    }

    /// Counts of what `owner` holds: (watches, leases, locks).
    pub(crate) fn owner_counts(&self, owner: u64) -> (usize, usize, usize) {
        self.owners
            .get(&owner)
            .map(|o| (o.watchers.len(), o.leases.len(), o.locks.len()))
            .unwrap_or_default()
    }

    /// Gives back everything `owner` holds: its leases are revoked (their
    /// keys vanish), its locks released (the loss signals fire), its waits
    /// abandoned and its watches ended.
    pub(crate) fn close_owner(&mut self, owner: u64) {
        let Some(o) = self.owners.remove(&owner) else {
            return;
        };
        // Waits first: with the owner gone, none of its waiters can be
        // handed a lock this close releases.
        let waiting: Vec<(String, u64)> = self
            .locks
            .iter()
            .flat_map(|(k, l)| {
                l.waiters
                    .iter()
                    .filter(|w| w.owner == owner)
                    .map(move |w| (k.clone(), w.ticket))
            })
            .collect();
        for (full, ticket) in waiting {
            self.unlock(&full, ticket);
        }
        let mut leases: Vec<u64> = o.leases.into_iter().collect();
        leases.sort();
        for l in leases {
            self.revoke_lease(l);
        }
        for (full, ticket) in o.locks {
            self.unlock(&full, ticket);
        }
        for id in o.watchers {
            self.remove_watcher(id);
        }
    }
}

/// What a change costs the history, in bytes.
fn change_size(c: &Change) -> usize {
    c.key.len() + c.value.as_ref().map_or(0, |v| v.len())
}

fn matches_filter(filter: &Filter, full: &str) -> bool {
    match filter {
        Filter::Key(k) => k == full,
        Filter::Tree(p) => key::is_in_tree(p, full),
    }
}

fn pair(root: &str, full: &str, e: &Entry) -> KvPair {
    KvPair::new(
        key::strip_root(root, full).unwrap_or(full),
        e.value.clone(),
        e.revision,
    )
}
