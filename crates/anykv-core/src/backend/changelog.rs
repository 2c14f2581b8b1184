//! The change log of an in-process backend: recent history for resuming
//! watches, and the watches themselves.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Weak};

use bytes::Bytes;
use parking_lot::Mutex;

use super::owner::{Hold, HoldKind, Owner};
use super::root::Root;
use super::WatchTarget;
use crate::fanout::{event_channel, EventSender};
use crate::{key, Error, KvPair, Result, WatchEvent, WatchOptions, WatchStream};

/// Every change of a backend whose data lives in the process, kept for a
/// while so watches can resume, and fanned out to the open watches.
///
/// The backend keeps its data itself and tells the log each change with
/// [`ChangeLog::record_put`] and [`ChangeLog::record_delete`], **under the
/// lock that orders its writes**, so the log sees changes in revision
/// order. It opens watches with [`ChangeLog::watch`] under that same lock
/// (a read lock is enough), handing over a snapshot of what the watch
/// covers, so no change falls between the snapshot and the live events.
///
/// The log gives each watch what the contract asks: the snapshot in key
/// order, then `Synced`, then every change; or, resuming after a
/// revision, the history since then (no `Synced`), or `Compacted` from
/// the stream when that history is gone. The history keeps at most
/// `max_changes` changes and `max_bytes` bytes of keys and values (always
/// the newest change). Each watch has a bounded buffer (`WatchLagged` for
/// a consumer that falls behind, through [`crate::fanout`]), counts as a
/// watch of its [`Owner`] and ends when the owner closes; dropping the
/// stream unregisters it. Keys are the backend's full names; events carry
/// them relative to the watch's [`Root`].
///
/// Cloning gives another handle on the same log.
///
/// ```
/// use std::collections::BTreeMap;
/// use anykv_core::backend::{ChangeLog, Owner, Root, WatchTarget};
/// use anykv_core::{Bytes, KvPair, WatchEvent, WatchOptions};
/// use futures::StreamExt;
/// use parking_lot::Mutex;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> anykv_core::Result<()> {
/// let log = ChangeLog::new("mykv", 1000, 1 << 20);
/// let data: Mutex<(u64, BTreeMap<String, KvPair>)> = Mutex::default();
/// let put = |key: &str, value: &'static str| {
///     let mut d = data.lock();
///     d.0 += 1;
///     let rev = d.0;
///     d.1.insert(key.into(), KvPair::new(key, value, rev));
///     log.record_put(key, &Bytes::from(value), rev); // under the data lock
///     rev
/// };
/// let first = put("app/a", "1");
///
/// let owner = Owner::new("mykv");
/// let root = Root::new("app")?;
/// let target = WatchTarget::Tree(root.prefix("")?.into_owned());
/// let mut events = {
///     let d = data.lock();
///     log.watch(&owner, &root, target, &WatchOptions::new(), || {
///         (d.1.values().cloned().collect(), d.0)
///     })?
/// };
/// let second = put("app/b", "2");
/// assert_eq!(events.next().await.unwrap()?, WatchEvent::Put(KvPair::new("a", "1", first)));
/// assert_eq!(events.next().await.unwrap()?, WatchEvent::Synced { revision: first });
/// assert_eq!(events.next().await.unwrap()?, WatchEvent::Put(KvPair::new("b", "2", second)));
/// assert_eq!(owner.stats().watches, 1);
///
/// // A watch resuming after the first change replays the second.
/// let target = WatchTarget::Tree("app".into());
/// let mut resumed = log.watch(&owner, &root, target, &WatchOptions::from_revision(first), || {
///     unreachable!("a resume needs no snapshot")
/// })?;
/// assert_eq!(resumed.next().await.unwrap()?.revision(), second);
///
/// owner.close(); // ends both streams
/// assert!(events.next().await.is_none());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ChangeLog {
    shared: Arc<LogShared>,
}

struct LogShared {
    backend: &'static str,
    state: Mutex<LogState>,
}

struct LogState {
    history: VecDeque<Change>,
    max_changes: usize,
    max_bytes: usize,
    bytes: usize,
    /// Every change after this revision is in `history`.
    compacted: u64,
    /// The newest revision recorded.
    newest: u64,
    watchers: HashMap<u64, Watcher>,
    by_key: HashMap<String, Vec<u64>>,
    by_tree: HashMap<String, Vec<u64>>,
    next_id: u64,
}

struct Change {
    key: String,
    revision: u64,
    /// `None` for a delete.
    value: Option<Bytes>,
}

struct Watcher {
    root: Root,
    target: WatchTarget,
    /// Changes at or below this revision are not delivered (a resume from
    /// a revision ahead of the store).
    after: u64,
    events: EventSender,
    _hold: Hold,
}

impl fmt::Debug for ChangeLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.shared.state.lock();
        f.debug_struct("ChangeLog")
            .field("backend", &self.shared.backend)
            .field("history", &st.history.len())
            .field("compacted", &st.compacted)
            .field("watches", &st.watchers.len())
            .finish()
    }
}

impl ChangeLog {
    /// An empty log of `backend` keeping at most `max_changes` changes (at
    /// least 1) and `max_bytes` bytes of keys and values.
    pub fn new(backend: &'static str, max_changes: usize, max_bytes: usize) -> Self {
        ChangeLog {
            shared: Arc::new(LogShared {
                backend,
                state: Mutex::new(LogState {
                    history: VecDeque::new(),
                    max_changes: max_changes.max(1),
                    max_bytes,
                    bytes: 0,
                    compacted: 0,
                    newest: 0,
                    watchers: HashMap::new(),
                    by_key: HashMap::new(),
                    by_tree: HashMap::new(),
                    next_id: 1,
                }),
            }),
        }
    }

    /// Records that `key` (a full name) now holds `value` at `revision`,
    /// and delivers it to the watches covering it.
    pub fn record_put(&self, key: &str, value: &Bytes, revision: u64) {
        self.record(Change {
            key: key.to_owned(),
            revision,
            value: Some(value.clone()),
        });
    }

    /// Records that `key` (a full name) was deleted at `revision`, and
    /// delivers it to the watches covering it.
    pub fn record_delete(&self, key: &str, revision: u64) {
        self.record(Change {
            key: key.to_owned(),
            revision,
            value: None,
        });
    }

    fn record(&self, change: Change) {
        let mut st = self.shared.state.lock();
        st.notify(&change);
        st.newest = st.newest.max(change.revision);
        st.bytes += change_size(&change);
        st.history.push_back(change);
        while st.history.len() > 1 && (st.history.len() > st.max_changes || st.bytes > st.max_bytes)
        {
            if let Some(old) = st.history.pop_front() {
                st.bytes -= change_size(&old);
                st.compacted = old.revision;
            }
        }
    }

    /// Discards the history up to and including `revision` (at most the
    /// newest revision recorded): watches can no longer resume from
    /// before it.
    pub fn compact(&self, revision: u64) {
        let mut st = self.shared.state.lock();
        let revision = revision.min(st.newest);
        while st.history.front().is_some_and(|c| c.revision <= revision) {
            if let Some(old) = st.history.pop_front() {
                st.bytes -= change_size(&old);
            }
        }
        st.compacted = st.compacted.max(revision);
    }

    /// The oldest revision a watch can resume after.
    pub fn compacted(&self) -> u64 {
        self.shared.state.lock().compacted
    }

    /// Opens a watch of `owner` on `target` (full names), its events
    /// relative to `root`. Without `options.from_revision`, `snapshot` gives
    /// what the target covers now — pairs named by full names, in key
    /// order — and the store's revision; it is called before the log's own
    /// lock is taken, and the caller holds its data lock throughout. With
    /// it, the stream replays the history after that revision, or yields
    /// `Compacted` and ends. `Err(Closed)` if the owner is closed, and the
    /// options' own errors.
    pub fn watch(
        &self,
        owner: &Owner,
        root: &Root,
        target: WatchTarget,
        options: &WatchOptions,
        snapshot: impl FnOnce() -> (Vec<KvPair>, u64),
    ) -> Result<WatchStream> {
        options.validate()?;
        owner.ensure_open()?;
        let current = options.from_revision.is_none().then(snapshot);
        let backend = self.shared.backend;
        let mut st = self.shared.state.lock();
        let initial = match (current, options.from_revision) {
            (Some((pairs, revision)), _) => {
                let mut events: Vec<WatchEvent> = pairs
                    .into_iter()
                    .map(|p| {
                        WatchEvent::Put(KvPair::new(root.relative(&p.key), p.value, p.revision))
                    })
                    .collect();
                events.push(WatchEvent::Synced { revision });
                events
            }
            (None, Some(from)) if from < st.compacted => {
                // Compaction is reported by the stream, the one place a
                // consumer handles it.
                let e = Error::Compacted {
                    backend,
                    requested: from,
                    oldest: st.compacted,
                };
                return Ok(Box::pin(futures::stream::once(async move { Err(e) })));
            }
            (None, from) => {
                let from = from.unwrap_or(0);
                let start = st.history.partition_point(|c| c.revision <= from);
                st.history
                    .range(start..)
                    .filter(|c| target.covers(&c.key))
                    .filter_map(|c| event(root, c))
                    .collect()
            }
        };
        let id = st.next_id;
        st.next_id += 1;
        let weak = Arc::downgrade(&self.shared);
        let gone = weak.clone();
        let hold = owner.hold(HoldKind::Watch, move || remove_watcher(&gone, id))?;
        let (tx, rx) = event_channel(backend, options.buffer);
        match &target {
            WatchTarget::Key(k) => st.by_key.entry(k.clone()).or_default().push(id),
            WatchTarget::Tree(p) => st.by_tree.entry(p.clone()).or_default().push(id),
        }
        st.watchers.insert(
            id,
            Watcher {
                root: root.clone(),
                target,
                after: options.from_revision.unwrap_or(0),
                events: tx,
                _hold: hold,
            },
        );
        Ok(rx.into_stream(initial, WatchGuard { log: weak, id }))
    }
}

/// Unregisters a watch when its stream is dropped.
struct WatchGuard {
    log: Weak<LogShared>,
    id: u64,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        remove_watcher(&self.log, self.id);
    }
}

fn remove_watcher(log: &Weak<LogShared>, id: u64) {
    if let Some(log) = log.upgrade() {
        let removed = log.state.lock().remove_watcher(id);
        drop(removed);
    }
}

impl LogState {
    fn notify(&mut self, change: &Change) {
        if self.watchers.is_empty() {
            return;
        }
        let mut targets: Vec<u64> = Vec::new();
        if let Some(ids) = self.by_key.get(&change.key) {
            targets.extend(ids);
        }
        for ancestor in ancestors(&change.key) {
            if let Some(ids) = self.by_tree.get(ancestor) {
                targets.extend(ids);
            }
        }
        let mut gone = Vec::new();
        for id in targets {
            let Some(w) = self.watchers.get(&id) else {
                continue;
            };
            if change.revision <= w.after {
                continue;
            }
            if let Some(ev) = event(&w.root, change) {
                if w.events.send(Ok(ev)).is_err() {
                    gone.push(id);
                }
            }
        }
        for id in gone {
            self.remove_watcher(id);
        }
    }

    fn remove_watcher(&mut self, id: u64) -> Option<Watcher> {
        let w = self.watchers.remove(&id)?;
        let (map, k) = match &w.target {
            WatchTarget::Key(k) => (&mut self.by_key, k),
            WatchTarget::Tree(p) => (&mut self.by_tree, p),
        };
        if let Some(ids) = map.get_mut(k) {
            ids.retain(|x| *x != id);
            if ids.is_empty() {
                map.remove(k);
            }
        }
        Some(w)
    }
}

/// The event of `change` for a watch on `root`; `None` outside the root.
fn event(root: &Root, change: &Change) -> Option<WatchEvent> {
    let rel = key::strip_root(root.as_str(), &change.key)?;
    Some(match &change.value {
        Some(v) => WatchEvent::Put(KvPair::new(rel, v.clone(), change.revision)),
        None => WatchEvent::Delete {
            key: rel.to_owned(),
            revision: change.revision,
        },
    })
}

/// The prefixes whose trees hold `full`: `""`, then each proper prefix
/// ending before a `/`.
fn ancestors(full: &str) -> impl Iterator<Item = &str> {
    std::iter::once("").chain(
        full.char_indices()
            .filter(|(_, c)| *c == '/')
            .map(move |(i, _)| &full[..i]),
    )
}

/// What a change costs the history, in bytes.
fn change_size(c: &Change) -> usize {
    c.key.len() + c.value.as_ref().map_or(0, |v| v.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn tree(p: &str) -> WatchTarget {
        WatchTarget::Tree(p.into())
    }

    #[tokio::test]
    async fn history_is_bounded_by_count_and_bytes() {
        let log = ChangeLog::new("t", 2, 1 << 20);
        let owner = Owner::new("t");
        for rev in 1..=3 {
            log.record_put("k", &Bytes::from("v"), rev);
        }
        assert_eq!(log.compacted(), 1);
        let opts = WatchOptions::from_revision(0);
        let mut w = log
            .watch(&owner, &Root::default(), tree(""), &opts, || unreachable!())
            .unwrap();
        assert!(matches!(w.next().await, Some(Err(Error::Compacted { .. }))));
        assert!(w.next().await.is_none());
        assert_eq!(owner.stats().watches, 0);

        let log = ChangeLog::new("t", 100, 10);
        log.record_put("k", &Bytes::from(vec![0; 8]), 1);
        log.record_put("k", &Bytes::from(vec![0; 8]), 2);
        assert_eq!(log.compacted(), 1, "only the newest change fits");
        log.compact(10);
        assert_eq!(log.compacted(), 2, "compaction stops at the newest change");
    }

    #[tokio::test]
    async fn lagging_and_dropped_watches_are_unregistered() {
        let log = ChangeLog::new("t", 100, 1 << 20);
        let owner = Owner::new("t");
        let root = Root::new("r").unwrap();
        let opts = WatchOptions::new().with_buffer(1);
        let mut w = log
            .watch(&owner, &root, WatchTarget::Key("r/k".into()), &opts, || {
                (Vec::new(), 0)
            })
            .unwrap();
        log.record_put("r/other", &Bytes::new(), 1);
        log.record_put("r/k", &Bytes::new(), 2);
        log.record_put("r/k", &Bytes::new(), 3);
        assert_eq!(owner.stats().watches, 0, "a lagging watch is dropped");
        assert!(matches!(
            w.next().await,
            Some(Ok(WatchEvent::Synced { .. }))
        ));
        assert_eq!(w.next().await.unwrap().unwrap().key(), Some("k"));
        assert!(matches!(
            w.next().await,
            Some(Err(Error::WatchLagged { .. }))
        ));

        let w = log
            .watch(&owner, &root, tree("r"), &WatchOptions::new(), || {
                (Vec::new(), 3)
            })
            .unwrap();
        assert_eq!(owner.stats().watches, 1);
        drop(w);
        assert_eq!(owner.stats().watches, 0);
        owner.close();
        let e = log.watch(&owner, &root, tree("r"), &WatchOptions::new(), || {
            (Vec::new(), 3)
        });
        assert_eq!(e.err().map(|e| e.kind()), Some(crate::ErrorKind::Closed));
    }
}
