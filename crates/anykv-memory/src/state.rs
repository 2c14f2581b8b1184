//! The shared state of one in-process store: the data, behind one lock
//! that is never held across an await, and the backend kit's tables for
//! history and watches, leases, locks and TTL deadlines.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use anykv_core::backend::{
    ChangeLog, ExpiryTimer, LeaseTable, LockTable, PauseGate, Root, WatchTarget,
};
use anykv_core::txn::first_failed_compare;
use anykv_core::{
    Bytes, KvPair, LeaseId, PutOptions, Result, Txn, TxnOp, TxnOpResult, TxnResponse,
};
use parking_lot::RwLock;

use crate::config::MIN_TTL;

pub(crate) const BACKEND: &str = "memory";

/// One store's data, shared by every handle opened on it.
pub(crate) struct Shared {
    /// Reads take it shared, writes exclusive; it is never held across an
    /// await.
    pub(crate) state: RwLock<State>,
    pub(crate) log: ChangeLog,
    pub(crate) leases: LeaseTable,
    pub(crate) locks: LockTable,
    pub(crate) max_value_size: usize,
    /// Closed while the store is frozen (see [`crate::pause_named`]).
    pub(crate) gate: PauseGate,
}

struct Entry {
    value: Bytes,
    revision: u64,
    lease: Option<LeaseId>,
    expires: Option<Instant>,
}

pub(crate) struct State {
    revision: u64,
    data: BTreeMap<String, Entry>,
    log: ChangeLog,
    leases: LeaseTable,
    /// Deletes TTL keys on time from a thread of its own, so a store
    /// outlives the async runtime that created it.
    expiry: ExpiryTimer<String>,
}

impl Shared {
    pub(crate) fn new(
        history_limit: usize,
        history_bytes_limit: usize,
        max_value_size: usize,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me: &Weak<Shared>| {
            let log = ChangeLog::new(BACKEND, history_limit, history_bytes_limit);
            let revoked = me.clone();
            let leases = LeaseTable::new(BACKEND, MIN_TTL, move |lease, keys| {
                if let Some(shared) = revoked.upgrade() {
                    shared.state.write().delete_bound(lease, keys);
                }
            });
            let due = me.clone();
            let expiry = ExpiryTimer::new("anykv-memory-ttl", move |key: String, at| {
                if let Some(shared) = due.upgrade() {
                    shared.state.write().expire(&key, at);
                }
            });
            Shared {
                state: RwLock::new(State {
                    revision: 0,
                    data: BTreeMap::new(),
                    log: log.clone(),
                    leases: leases.clone(),
                    expiry,
                }),
                log,
                leases,
                locks: LockTable::new(BACKEND),
                max_value_size,
                gate: PauseGate::new(),
            }
        })
    }
}

impl State {
    pub(crate) fn revision(&self) -> u64 {
        self.revision
    }

    pub(crate) fn get(&self, full: &str, root: &Root) -> Option<KvPair> {
        self.data
            .get(full)
            .map(|e| root.pair(full, e.value.clone(), e.revision))
    }

    pub(crate) fn current_revision_of(&self, full: &str) -> Option<u64> {
        self.data.get(full).map(|e| e.revision)
    }

    /// The keys under `full_prefix/` (everything for `""`), in key order,
    /// starting after `after` (a full name) when given.
    fn tree<'a>(
        &'a self,
        full_prefix: &str,
        after: Option<&str>,
    ) -> impl Iterator<Item = (&'a String, &'a Entry)> + 'a {
        let start = if full_prefix.is_empty() {
            String::new()
        } else {
            format!("{full_prefix}/")
        };
        let lower = match after {
            Some(a) if a >= start.as_str() => Bound::Excluded(a.to_owned()),
            _ => Bound::Included(start.clone()),
        };
        self.data
            .range::<String, _>((lower, Bound::Unbounded))
            .take_while(move |(k, _)| k.starts_with(start.as_str()))
    }

    /// A page of [`State::list`]: keys after `after` (full), at most
    /// `limit`, values left empty with `keys_only`. Reads only the page.
    pub(crate) fn list_page(
        &self,
        full_prefix: &str,
        root: &Root,
        after: Option<&str>,
        limit: usize,
        keys_only: bool,
    ) -> Vec<KvPair> {
        self.tree(full_prefix, after)
            .take(limit)
            .map(|(k, e)| {
                let value = if keys_only {
                    Bytes::new()
                } else {
                    e.value.clone()
                };
                root.pair(k, value, e.revision)
            })
            .collect()
    }

    pub(crate) fn list(&self, full_prefix: &str, root: &Root) -> Vec<KvPair> {
        self.tree(full_prefix, None)
            .map(|(k, e)| root.pair(k, e.value.clone(), e.revision))
            .collect()
    }

    /// What a watch on `target` starts from: its pairs (full names) and the
    /// revision.
    pub(crate) fn snapshot(&self, target: &WatchTarget) -> (Vec<KvPair>, u64) {
        let full = |(k, e): (&String, &Entry)| KvPair::new(k.clone(), e.value.clone(), e.revision);
        let pairs = match target {
            WatchTarget::Key(k) => self.data.get_key_value(k).map(full).into_iter().collect(),
            WatchTarget::Tree(p) => self.tree(p, None).map(full).collect(),
        };
        (pairs, self.revision)
    }

    /// Writes `full`, returning its new revision. The caller has checked
    /// the value and any compare condition.
    pub(crate) fn put(
        &mut self,
        full: String,
        value: Bytes,
        lease: Option<LeaseId>,
        ttl: Option<Duration>,
    ) -> Result<u64> {
        if let Some(l) = lease {
            self.leases.bind(l, &full)?;
        }
        self.revision += 1;
        let revision = self.revision;
        self.put_at(full, value, lease, ttl, revision);
        Ok(revision)
    }

    /// Writes `full` at `revision`; the caller has bound it to `lease`.
    fn put_at(
        &mut self,
        full: String,
        value: Bytes,
        lease: Option<LeaseId>,
        ttl: Option<Duration>,
        revision: u64,
    ) {
        // Deadlines past what an Instant can hold are "never" in practice
        // (the TTL is at most ten years, checked by the caller).
        let expires = ttl.and_then(|t| Instant::now().checked_add(t));
        self.log.record_put(&full, &value, revision);
        let entry = Entry {
            value,
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
            // A key rewritten with the same lease stays bound to it.
            if let Some(l) = old.lease.filter(|l| Some(*l) != lease) {
                self.leases.unbind(l, &full);
            }
            if let Some(at) = old.expires {
                self.expiry.cancel(at, full.clone());
            }
        }
        if let Some(at) = expires {
            self.expiry.schedule(at, full);
        }
    }

    /// Runs a checked transaction (keys canonical, relative to `root`;
    /// TTLs already raised to the minimum) in one critical section: every
    /// write at one new revision, recorded together.
    pub(crate) fn txn(&mut self, txn: Txn, root: &Root) -> Result<TxnResponse> {
        let failed = first_failed_compare(&txn.compares, |k| {
            self.data
                .get(root.under(k).as_ref())
                .map(|e| (e.value.as_ref(), e.revision))
        });
        let branch = if failed.is_none() {
            txn.success
        } else {
            txn.failure
        };
        // Bind every leased put first: a lease that is gone fails the
        // whole transaction before anything is written.
        let mut bound: Vec<(LeaseId, String)> = Vec::new();
        for op in &branch {
            if let TxnOp::Put {
                key,
                options: PutOptions { lease: Some(l), .. },
                ..
            } = op
            {
                let full = root.under(key).into_owned();
                let already = self.data.get(&full).is_some_and(|e| e.lease == Some(*l));
                if let Err(e) = self.leases.bind(*l, &full) {
                    for (l, k) in bound {
                        self.leases.unbind(l, &k);
                    }
                    return Err(e);
                }
                if !already {
                    bound.push((*l, full));
                }
            }
        }
        let writes = branch.iter().any(|op| match op {
            TxnOp::Put { .. } => true,
            TxnOp::Delete { key } => self.data.contains_key(root.under(key).as_ref()),
            TxnOp::Get { .. } => false,
        });
        let revision = if writes {
            self.revision += 1;
            Some(self.revision)
        } else {
            None
        };
        let mut results = Vec::with_capacity(branch.len());
        for op in branch {
            results.push(match op {
                TxnOp::Get { key } => TxnOpResult::Get(self.get(&root.under(&key), root)),
                TxnOp::Put {
                    key,
                    value,
                    options,
                } => {
                    let revision = revision.unwrap_or(self.revision);
                    let full = root.under(&key).into_owned();
                    self.put_at(full, value, options.lease, options.ttl, revision);
                    TxnOpResult::Put { revision }
                }
                TxnOp::Delete { key } => {
                    let full = root.under(&key);
                    let existed = match (self.data.remove(full.as_ref()), revision) {
                        (Some(old), Some(revision)) => {
                            self.unbind(&full, &old);
                            self.log.record_delete(&full, revision);
                            true
                        }
                        _ => false,
                    };
                    TxnOpResult::Delete { existed }
                }
            });
        }
        Ok(TxnResponse::new(
            failed.is_none(),
            failed,
            results,
            revision,
        ))
    }

    /// Deletes `full` if present, returning the delete's revision.
    pub(crate) fn delete(&mut self, full: &str) -> Option<u64> {
        let old = self.data.remove(full)?;
        self.unbind(full, &old);
        self.revision += 1;
        let revision = self.revision;
        self.log.record_delete(full, revision);
        Some(revision)
    }

    /// Deletes `full_key` (if given) and the tree of `full_prefix`, one
    /// revision per key, in key order.
    pub(crate) fn delete_tree(&mut self, full_key: Option<&str>, full_prefix: &str) -> u64 {
        let mut keys: Vec<String> = self
            .tree(full_prefix, None)
            .map(|(k, _)| k.clone())
            .collect();
        if let Some(k) = full_key.filter(|k| self.data.contains_key(*k)) {
            keys.insert(0, k.to_owned());
        }
        let mut deleted = 0;
        for k in keys {
            if self.delete(&k).is_some() {
                deleted += 1;
            }
        }
        deleted
    }

    fn unbind(&self, full: &str, old: &Entry) {
        if let Some(l) = old.lease {
            self.leases.unbind(l, full);
        }
        if let Some(at) = old.expires {
            self.expiry.cancel(at, full.to_owned());
        }
    }

    /// Deletes `full` if its deadline is still `at`.
    fn expire(&mut self, full: &str, at: Instant) {
        if self.data.get(full).is_some_and(|e| e.expires == Some(at)) {
            self.delete(full);
        }
    }

    /// Deletes the keys of a revoked lease that are still bound to it.
    fn delete_bound(&mut self, lease: LeaseId, keys: Vec<String>) {
        for k in keys {
            if self.data.get(&k).is_some_and(|e| e.lease == Some(lease)) {
                self.delete(&k);
            }
        }
    }
}
