//! What the watch reader delivers to: the reader's position in the change
//! stream, the store's watches grouped by what they watch, and the lock
//! waiters that an unlock record wakes. The reader (`watch.rs`) fills it;
//! watches and lock waiters register in it.
//!
//! A fence record (`t` `f`, written by the failover check when a server
//! lacks history that other servers acknowledged) says the revisions after
//! `from` up to its own were lost or never existed: every watch that has
//! seen a revision after `from` ends with `Compacted` (what it saw was
//! rolled back), the others go on.

use std::collections::HashMap;
use std::sync::Arc;

use anykv_core::backend::{EventSender, WatchTarget};
use anykv_core::{Error, KvPair, WatchEvent};
use tokio::sync::Notify;

use crate::config::BACKEND;
use crate::layout::Layout;
use crate::reply::ChangeRecord;

/// The reader's state and everyone it delivers to. Held under the store's
/// mutex.
pub(crate) struct ChangeFeed {
    /// The last stream entry the reader delivered.
    pub(crate) position: (u64, u64),
    /// The last revision whose data entry (`{rev}-0`) the reader saw (or
    /// the revision it started at). Gaps are measured from here, never
    /// from an unlock record.
    pub(crate) last_data_revision: u64,
    /// The reader is parked: the store has no watch and no lock waiter,
    /// so it reads nothing (a write then costs the server no `XREAD`),
    /// and `position` and `last_data_revision` mean nothing. Whoever needs
    /// the reader again sets them to a revision from the server after
    /// which it must deliver everything, clears this, and wakes the reader.
    pub(crate) parked: bool,
    /// The store's watches.
    pub(crate) watches: Watches,
    /// Per lock key: the notifier and how many of this store's `lock()`
    /// calls wait on it.
    pub(crate) lock_waiters: HashMap<String, (Arc<Notify>, usize)>,
}

impl ChangeFeed {
    /// A feed whose reader starts after `revision`.
    pub(crate) fn new(revision: u64) -> Self {
        ChangeFeed {
            position: (revision, 0),
            last_data_revision: revision,
            parked: false,
            watches: Watches::default(),
            lock_waiters: HashMap::new(),
        }
    }

    /// Whether nobody needs the reader: no watch and no lock waiter.
    pub(crate) fn is_unneeded(&self) -> bool {
        self.watches.is_empty() && self.lock_waiters.is_empty()
    }

    /// Starts the parked reader after revision `rev`; does nothing if it
    /// is reading.
    pub(crate) fn resume_after(&mut self, rev: u64, wake_reader: &Notify) {
        if self.parked {
            self.parked = false;
            self.position = (rev, 0);
            self.last_data_revision = rev;
            wake_reader.notify_one();
        }
    }

    /// Ends every watch with `err`, and wakes every lock waiter (the
    /// unlock record it waits for may be lost too; it tries again).
    pub(crate) fn end_all(&mut self, err: impl Fn() -> Error) {
        for watcher in self.watches.drain() {
            // Never silent: a full buffer ends in WatchLagged.
            let _ = watcher.events.send(Err(err()));
        }
        self.wake_lock_waiters();
    }

    /// Drops every watch without an error (their streams end), and wakes
    /// every lock waiter.
    pub(crate) fn close(&mut self) {
        self.watches.clear();
        self.wake_lock_waiters();
    }

    fn wake_lock_waiters(&self) {
        for (n, _) in self.lock_waiters.values() {
            n.notify_waiters();
        }
    }

    /// Ends, with `Compacted`, every watch that has seen a revision after
    /// `from`: a failover lost those revisions, and the history goes on
    /// at `to`. Wakes every lock waiter (its unlock record may be lost).
    pub(crate) fn end_lost(&mut self, from: u64, to: u64) {
        self.watches.end_after(from, to);
        self.wake_lock_waiters();
    }

    /// Delivers stream records the reader read, in order.
    pub(crate) fn deliver(&mut self, records: Vec<ChangeRecord>, layout: &Layout) {
        for e in records {
            if (e.rev, e.seq) <= self.position {
                continue;
            }
            if e.seq == 0 && e.kind == b'f' {
                // A fence record: nothing exists between `from` and here.
                let from = std::str::from_utf8(&e.value)
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
                if self.last_data_revision < from {
                    let requested = self.last_data_revision;
                    self.end_all(|| Error::Compacted {
                        backend: BACKEND,
                        requested,
                        oldest: e.rev,
                    });
                }
                tracing::warn!(target: "anykv_redis",
                    "anykv-redis: the server's history continues at revision {} after a \
                     failover or a restart that may have lost revisions after {from}",
                    e.rev
                );
                self.end_lost(from, e.rev);
                self.last_data_revision = e.rev;
                self.position = (e.rev, 0);
                continue;
            }
            // A data entry must follow the last one seen; an unlock record
            // `{r}-n` (n >= 1) follows `{r}-0`, so one for a revision whose
            // data entry was never seen means that entry was trimmed.
            let gap = if e.seq == 0 {
                e.rev > self.last_data_revision.saturating_add(1)
            } else {
                e.rev > self.last_data_revision
            };
            if gap {
                // Entries between were trimmed before the reader saw
                // them: every watch may have missed something.
                let requested = self.last_data_revision;
                let oldest = e.rev;
                self.end_all(|| Error::Compacted {
                    backend: BACKEND,
                    requested,
                    oldest,
                });
            }
            // A transaction's changes share its revision: `{rev}-0`,
            // `{rev}-1`, ... (unlock records of that revision come after
            // them).
            if matches!(e.kind, b'p' | b'd') {
                let event = watch_event(&e, layout);
                self.watches.deliver(&e.key, (e.rev, e.seq), &event);
            } else if e.seq != 0 && e.kind == b'u' {
                if let Some((n, _)) = self.lock_waiters.get(&e.key) {
                    n.notify_waiters();
                }
            }
            self.last_data_revision = self.last_data_revision.max(e.rev);
            self.position = (e.rev, e.seq);
        }
    }
}

/// The watch event of a put or delete record, its key relative to the
/// store's root.
pub(crate) fn watch_event(e: &ChangeRecord, layout: &Layout) -> WatchEvent {
    let key = layout.relative(&e.key).to_owned();
    if e.kind == b'd' {
        WatchEvent::Delete {
            key,
            revision: e.rev,
        }
    } else {
        WatchEvent::Put(KvPair {
            key,
            value: e.value.clone(),
            revision: e.rev,
        })
    }
}

/// One watch as the feed sees it.
pub(crate) struct Watcher {
    /// Where its events go.
    pub(crate) events: EventSender,
    /// The last stream entry it has (in its initial state, catch-up, or
    /// channel), `(revision, seq)`: nothing at or before it is sent again.
    /// `(r, u64::MAX)` when it has all of revision `r` (a snapshot at `r`,
    /// or a resume from `r`). A position, not a revision: a transaction's
    /// changes share one revision.
    pub(crate) last: (u64, u64),
}

/// A store's watches, grouped by the key or the tree they watch, so a
/// change is offered only to the watches it matches: one lookup for the
/// key and one per tree that could hold it, however many other watches
/// the store has. Targets hold full keys (the root joined in), as the
/// change stream does.
#[derive(Default)]
pub(crate) struct Watches {
    /// Watches of one key, by full key.
    keys: HashMap<String, HashMap<u64, Watcher>>,
    /// Watches of a tree, by full prefix.
    trees: HashMap<String, HashMap<u64, Watcher>>,
    /// What each watch watches.
    targets: HashMap<u64, WatchTarget>,
}

impl Watches {
    /// How many watches there are.
    pub(crate) fn len(&self) -> usize {
        self.targets.len()
    }

    /// Whether there are none.
    pub(crate) fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// Adds watch `id` of `target`.
    pub(crate) fn insert(&mut self, id: u64, target: WatchTarget, watcher: Watcher) {
        let group = match &target {
            WatchTarget::Key(k) => self.keys.entry(k.clone()).or_default(),
            WatchTarget::Tree(p) => self.trees.entry(p.clone()).or_default(),
        };
        group.insert(id, watcher);
        self.targets.insert(id, target);
    }

    /// Removes watch `id`, if it is there.
    pub(crate) fn remove(&mut self, id: u64) {
        let _ = self.take(id);
    }

    /// Removes every watch.
    fn drain(&mut self) -> impl Iterator<Item = Watcher> + '_ {
        self.targets.clear();
        self.keys
            .drain()
            .chain(self.trees.drain())
            .flat_map(|(_, group)| group.into_values())
    }

    /// Ends every watch whose last revision is after `from` with
    /// `Compacted` (oldest: `to`).
    fn end_after(&mut self, from: u64, to: u64) {
        let ids: Vec<u64> = self
            .keys
            .values()
            .chain(self.trees.values())
            .flat_map(|group| group.iter())
            .filter(|(_, w)| w.last.0 > from)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let watcher = self.take(id);
            if let Some(w) = watcher {
                let _ = w.events.send(Err(Error::Compacted {
                    backend: BACKEND,
                    requested: w.last.0,
                    oldest: to,
                }));
            }
        }
    }

    /// Removes watch `id` and returns it.
    fn take(&mut self, id: u64) -> Option<Watcher> {
        let target = self.targets.remove(&id)?;
        let (groups, name) = match &target {
            WatchTarget::Key(k) => (&mut self.keys, k),
            WatchTarget::Tree(p) => (&mut self.trees, p),
        };
        let group = groups.get_mut(name)?;
        let watcher = group.remove(&id);
        if group.is_empty() {
            groups.remove(name);
        }
        watcher
    }

    /// Drops every watch.
    pub(crate) fn clear(&mut self) {
        self.targets.clear();
        self.keys.clear();
        self.trees.clear();
    }

    /// Sends `event`, the change of `full` at stream entry `at`, to every
    /// watch of that key or of a tree holding it that has not seen `at`
    /// yet; drops the watches that are gone.
    fn deliver(&mut self, full: &str, at: (u64, u64), event: &WatchEvent) {
        let mut gone = Vec::new();
        let mut send = |group: &mut HashMap<u64, Watcher>| {
            for (id, watcher) in group.iter_mut() {
                if at <= watcher.last {
                    continue;
                }
                watcher.last = at;
                if watcher.events.send(Ok(event.clone())).is_err() {
                    gone.push(*id);
                }
            }
        };
        if let Some(group) = self.keys.get_mut(full) {
            send(group);
        }
        if !self.trees.is_empty() && !full.is_empty() {
            // The trees holding `full`: the whole namespace (`""`), and
            // every proper prefix of it that ends before a `/`.
            if let Some(group) = self.trees.get_mut("") {
                send(group);
            }
            for (i, b) in full.bytes().enumerate() {
                if b == b'/' {
                    if let Some(group) = self.trees.get_mut(&full[..i]) {
                        send(group);
                    }
                }
            }
        }
        for id in gone {
            self.remove(id);
        }
    }
}
