//! The suite's teeth: the memory backend wrapped in deliberately broken
//! variants, each of which the suite must report as failing. A suite that
//! passes a broken backend is itself broken.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anykv_conformance::{all_cases, run_cases, Outcome, Report, StoreFactory};
use anykv_core::{
    async_trait, key, lost_signal, Bytes, Capabilities, Error, KvPair, Lease, LeaseId, LockGuard,
    LockOptions, LostTrigger, PutOptions, Release, Result, Store, StoreStats, Txn, TxnOp,
    TxnOpResult, TxnResponse, WatchEvent, WatchOptions, WatchStream,
};
use anykv_memory::{MemoryConfig, MemoryStore};
use futures::StreamExt;
use parking_lot::Mutex;

/// One way of breaking the contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Breakage {
    /// Compare-and-swap writes whatever revision was expected.
    CasIgnoresRevision,
    /// Watches swallow `Delete` events.
    WatchDropsDeletes,
    /// Watches deliver every put twice.
    WatchDuplicates,
    /// `list("a")` matches `ab` too: a string prefix, not a segment one.
    ListIgnoresBoundaries,
    /// Every `lock` call succeeds at once.
    LockAdmitsTwo,
    /// Every holder gets the same fencing token.
    FencingTokenConstant,
    /// A `lock()` dropped after the lock was granted but before it
    /// returned keeps the lock for ever instead of giving it back.
    LockLeaksDroppedAttempt,
    /// The lock keeps a visible `___lock/...` key, as libkv did.
    LockBookkeepingVisible,
    /// TTLs are dropped: keys live for ever.
    TtlIgnored,
    /// Keys expire at 30 % of their TTL: early enough that a loaded
    /// machine delaying the expiry cannot hide it.
    TtlEarly,
    /// Watches lose what changes in the 50 ms after their snapshot, as
    /// libkv's did between its initial read and its watch start.
    WatchGap,
    /// Leases are dropped: keys outlive them.
    LeaseIgnored,
    /// Revisions are per-key versions that restart after delete (ABA).
    RevisionsReusedAfterRecreate,
    /// Invalid keys are written under an escaped name instead of refused.
    InvalidKeysAccepted,
    /// Watches drop `Put` events when more than 20 come within 100 ms: fine
    /// when calm, lossy under load.
    WatchLossyUnderLoad,
    /// A TTL put also starts a timer that deletes the key at the deadline,
    /// whatever was written since (a stale deadline kills a rewrite).
    StaleTtlTimer,
    /// Compare-and-swap compares values: an expected revision whose value
    /// equals the current value passes, as libkv's value-compares did.
    CasComparesValues,
    /// Calls on a frozen server fail with a generic `Backend` error, not
    /// `Timeout`.
    OutageAsBackendError,
    /// Transactions run their success branch whatever the compares say.
    TxnIgnoresCompares,
    /// Transactions check their compares by reading, then apply their
    /// operations one plain call at a time: each write at its own revision,
    /// others' writes in between, a failure halfway leaving the first half.
    TxnOneOpAtATime,
    /// Transactions say they allow 4 operations but send any number.
    TxnLimitUnenforced,
    /// Puts in a transaction lose their TTL or lease.
    TxnDropsPutOptions,
    /// Watches drop an event whose revision equals the one before it, as a
    /// change feed that deduplicates by revision would.
    WatchDedupesByRevision,
    /// A backend that does nothing and says yes to everything.
    NothingAtAll,
}

#[derive(Debug)]
struct Broken {
    inner: MemoryStore,
    breakage: Breakage,
    caps: Capabilities,
    versions: Mutex<HashMap<String, u64>>,
    /// Every value each key had, by revision (for `CasComparesValues`).
    values: Mutex<HashMap<(String, u64), Bytes>>,
}

/// Holds a granted guard while a broken `lock()` is still running; if the
/// call is dropped there, the guard is forgotten, so the lock stays held.
struct LeakedIfDropped(Option<LockGuard>);

impl Drop for LeakedIfDropped {
    fn drop(&mut self) {
        if let Some(g) = self.0.take() {
            std::mem::forget(g);
        }
    }
}

/// Gives every broken `lock` call a lock name of its own, across clients.
static LOCK_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Broken {
    fn is(&self, b: Breakage) -> bool {
        self.breakage == b
    }

    fn mangle(&self, k: &str) -> String {
        if self.is(Breakage::InvalidKeysAccepted) && key::normalize_key(k).is_err() {
            let hex: String = k.bytes().map(|b| format!("{b:02x}")).collect();
            format!("accepted-{hex}")
        } else {
            k.to_owned()
        }
    }

    fn version_of(&self, k: &str) -> Option<u64> {
        let k = key::normalize_key(k).ok()?;
        self.versions.lock().get(&k).copied()
    }

    fn bump_version(&self, k: &str) -> u64 {
        let k = key::normalize_key(k).unwrap_or_default();
        let mut v = self.versions.lock();
        let e = v.entry(k).or_insert(0);
        *e += 1;
        *e
    }

    fn forget_version(&self, k: &str) {
        if let Ok(k) = key::normalize_key(k) {
            self.versions.lock().remove(&k);
        }
    }

    fn with_version(&self, mut kv: KvPair) -> KvPair {
        if self.is(Breakage::RevisionsReusedAfterRecreate) {
            if let Some(v) = self.versions.lock().get(&kv.key) {
                kv.revision = *v;
            }
        }
        kv
    }

    fn nothing_guard(key: &str) -> LockGuard {
        let (trigger, signal) = lost_signal();
        LockGuard::new(key.to_owned(), 1, signal, Box::new(Nothing(trigger)))
    }
}

/// A release that releases nothing, keeping its loss signal unfired.
struct Nothing(#[allow(dead_code)] LostTrigger);

#[async_trait]
impl Release for Nothing {
    async fn release(&self) -> Result<()> {
        Ok(())
    }
    fn release_in_background(&self) {}
}

/// Wraps a real guard, reporting a constant fencing token.
struct Wrapped(Mutex<Option<LockGuard>>);

#[async_trait]
impl Release for Wrapped {
    async fn release(&self) -> Result<()> {
        let guard = self.0.lock().take();
        match guard {
            Some(g) => g.release().await,
            None => Ok(()),
        }
    }
    fn release_in_background(&self) {
        drop(self.0.lock().take());
    }
}

#[async_trait]
impl Store for Broken {
    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn stats(&self) -> StoreStats {
        if self.is(Breakage::NothingAtAll) {
            StoreStats::default()
        } else {
            self.inner.stats()
        }
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    async fn get(&self, k: &str) -> Result<Option<KvPair>> {
        if self.is(Breakage::NothingAtAll) {
            return Ok(None);
        }
        Ok(self
            .inner
            .get(&self.mangle(k))
            .await
            .map_err(|e| self.outage(e))?
            .map(|kv| self.with_version(kv)))
    }

    async fn put(&self, k: &str, value: Bytes, mut options: PutOptions) -> Result<u64> {
        match self.breakage {
            Breakage::NothingAtAll => return Ok(1),
            Breakage::TtlIgnored => options.ttl = None,
            Breakage::TtlEarly => options.ttl = options.ttl.map(|t| t * 3 / 10),
            Breakage::LeaseIgnored => options.lease = None,
            _ => {}
        }
        let ttl = options.ttl;
        let rev = self
            .inner
            .put(&self.mangle(k), value.clone(), options)
            .await
            .map_err(|e| self.outage(e))?;
        if self.is(Breakage::RevisionsReusedAfterRecreate) {
            return Ok(self.bump_version(k));
        }
        if let (Breakage::StaleTtlTimer, Some(ttl)) = (self.breakage, ttl) {
            let inner = self.inner.clone();
            let k = k.to_owned();
            tokio::spawn(async move {
                tokio::time::sleep(ttl).await;
                let _ = inner.delete(&k).await;
            });
        }
        if self.is(Breakage::CasComparesValues) {
            if let Ok(k) = key::normalize_key(k) {
                self.values.lock().insert((k, rev), value);
            }
        }
        Ok(rev)
    }

    async fn delete(&self, k: &str) -> Result<bool> {
        if self.is(Breakage::NothingAtAll) {
            return Ok(false);
        }
        self.forget_version(k);
        self.inner.delete(&self.mangle(k)).await
    }

    async fn exists(&self, k: &str) -> Result<bool> {
        if self.is(Breakage::NothingAtAll) {
            return Ok(false);
        }
        self.inner.exists(&self.mangle(k)).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<KvPair>> {
        match self.breakage {
            Breakage::NothingAtAll => Ok(Vec::new()),
            Breakage::ListIgnoresBoundaries => {
                let p = key::normalize_prefix(prefix)?;
                Ok(self
                    .inner
                    .list("")
                    .await?
                    .into_iter()
                    .filter(|kv| kv.key.starts_with(&p) && kv.key != p)
                    .collect())
            }
            _ => Ok(self
                .inner
                .list(prefix)
                .await?
                .into_iter()
                .map(|kv| self.with_version(kv))
                .collect()),
        }
    }

    async fn delete_tree(&self, prefix: &str) -> Result<u64> {
        if self.is(Breakage::NothingAtAll) {
            return Ok(0);
        }
        if self.is(Breakage::RevisionsReusedAfterRecreate) {
            let p = key::normalize_prefix(prefix)?;
            self.versions
                .lock()
                .retain(|k, _| !(p.is_empty() || *k == p || key::is_in_tree(&p, k)));
        }
        self.inner.delete_tree(prefix).await
    }

    async fn atomic_put(
        &self,
        k: &str,
        value: Bytes,
        expected: Option<u64>,
        options: PutOptions,
    ) -> Result<u64> {
        match self.breakage {
            Breakage::NothingAtAll => Ok(1),
            Breakage::CasIgnoresRevision => self.inner.put(k, value, options).await,
            Breakage::CasComparesValues => {
                let canonical = key::normalize_key(k)?;
                let expected = match (expected, self.inner.get(k).await?) {
                    (Some(e), Some(cur)) if e != cur.revision => {
                        let old = self.values.lock().get(&(canonical.clone(), e)).cloned();
                        if old.as_ref() == Some(&cur.value) {
                            Some(cur.revision)
                        } else {
                            Some(e)
                        }
                    }
                    (e, _) => e,
                };
                let rev = self
                    .inner
                    .atomic_put(k, value.clone(), expected, options)
                    .await?;
                self.values.lock().insert((canonical, rev), value);
                Ok(rev)
            }
            Breakage::RevisionsReusedAfterRecreate => {
                let current = self.version_of(k);
                let canonical = key::normalize_key(k)?;
                match (expected, current) {
                    (None, Some(_)) => Err(Error::KeyExists {
                        backend: "broken",
                        key: canonical,
                    }),
                    (Some(_), None) => Err(Error::KeyNotFound {
                        backend: "broken",
                        key: canonical,
                    }),
                    (Some(e), Some(c)) if e != c => Err(Error::KeyModified {
                        backend: "broken",
                        key: canonical,
                        expected: e,
                        actual: c,
                    }),
                    _ => {
                        self.inner.put(k, value, options).await?;
                        Ok(self.bump_version(k))
                    }
                }
            }
            _ => {
                self.inner
                    .atomic_put(&self.mangle(k), value, expected, options)
                    .await
            }
        }
    }

    async fn atomic_delete(&self, k: &str, expected: u64) -> Result<()> {
        match self.breakage {
            Breakage::NothingAtAll => Ok(()),
            Breakage::CasIgnoresRevision => self.inner.delete(k).await.map(|_| ()),
            Breakage::RevisionsReusedAfterRecreate => {
                let canonical = key::normalize_key(k)?;
                match self.version_of(k) {
                    None => Err(Error::KeyNotFound {
                        backend: "broken",
                        key: canonical,
                    }),
                    Some(c) if c != expected => Err(Error::KeyModified {
                        backend: "broken",
                        key: canonical,
                        expected,
                        actual: c,
                    }),
                    Some(_) => {
                        self.forget_version(k);
                        self.inner.delete(k).await.map(|_| ())
                    }
                }
            }
            _ => self.inner.atomic_delete(&self.mangle(k), expected).await,
        }
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        match self.breakage {
            Breakage::NothingAtAll => Ok(TxnResponse::new(true, None, Vec::new(), Some(1))),
            Breakage::TxnIgnoresCompares => {
                let mut t = txn;
                t.compares.clear();
                self.inner.txn(t).await
            }
            Breakage::TxnOneOpAtATime => self.txn_one_op_at_a_time(txn).await,
            Breakage::TxnLimitUnenforced => {
                // Past the store's own check, with the real limit.
                self.inner.txn(txn).await
            }
            Breakage::TxnDropsPutOptions => {
                let mut t = txn;
                for op in t.success.iter_mut().chain(t.failure.iter_mut()) {
                    if let TxnOp::Put { options, .. } = op {
                        *options = PutOptions::new();
                    }
                }
                self.inner.txn(t).await
            }
            _ => self.inner.txn(txn).await,
        }
    }

    async fn watch(&self, k: &str, options: WatchOptions) -> Result<WatchStream> {
        if self.is(Breakage::NothingAtAll) {
            return Ok(nothing_stream());
        }
        let s = self.inner.watch(&self.mangle(k), options).await?;
        Ok(self.break_stream(s))
    }

    async fn watch_tree(&self, prefix: &str, options: WatchOptions) -> Result<WatchStream> {
        if self.is(Breakage::NothingAtAll) {
            return Ok(nothing_stream());
        }
        let s = self.inner.watch_tree(prefix, options).await?;
        Ok(self.break_stream(s))
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<Lease> {
        if self.is(Breakage::NothingAtAll) {
            let (trigger, signal) = lost_signal();
            return Ok(Lease::new(
                LeaseId(1),
                ttl,
                signal,
                Box::new(Nothing(trigger)),
            ));
        }
        self.inner.grant_lease(ttl).await
    }

    async fn lock(&self, k: &str, options: LockOptions) -> Result<LockGuard> {
        match self.breakage {
            Breakage::NothingAtAll => Ok(Self::nothing_guard(k)),
            Breakage::LockAdmitsTwo => {
                let n = LOCK_COUNTER.fetch_add(1, Ordering::SeqCst);
                self.inner.lock(&format!("{k}/{n}"), options).await
            }
            Breakage::LockLeaksDroppedAttempt => {
                let granted = self.inner.lock(&self.mangle(k), options).await?;
                let mut pending = LeakedIfDropped(Some(granted));
                tokio::time::sleep(Duration::from_millis(10)).await;
                match pending.0.take() {
                    Some(g) => Ok(g),
                    None => unreachable!("the guard is taken only here"),
                }
            }
            _ => {
                let g = self.inner.lock(&self.mangle(k), options).await?;
                self.after_lock(k, g).await
            }
        }
    }

    async fn try_lock(&self, k: &str, options: LockOptions) -> Result<Option<LockGuard>> {
        match self.breakage {
            Breakage::NothingAtAll | Breakage::LockAdmitsTwo => {
                self.lock(k, options).await.map(Some)
            }
            _ => match self.inner.try_lock(&self.mangle(k), options).await? {
                Some(g) => self.after_lock(k, g).await.map(Some),
                None => Ok(None),
            },
        }
    }

    async fn close(&self) -> Result<()> {
        if self.is(Breakage::NothingAtAll) {
            return Ok(());
        }
        self.inner.close().await
    }
}

impl Broken {
    /// A transaction done the way it must not be: read, decide, then one
    /// plain write at a time.
    async fn txn_one_op_at_a_time(&self, txn: Txn) -> Result<TxnResponse> {
        let mut failed = None;
        for (i, c) in txn.compares.iter().enumerate() {
            let current = self.inner.get(c.key()).await?;
            if !c.holds(current.as_ref().map(|p| (p.value.as_ref(), p.revision))) {
                failed = Some(i);
                break;
            }
        }
        let branch = if failed.is_none() {
            txn.success
        } else {
            txn.failure
        };
        let mut results = Vec::new();
        let mut revision = None;
        for op in branch {
            tokio::task::yield_now().await;
            results.push(match op {
                TxnOp::Get { key } => TxnOpResult::Get(self.inner.get(&key).await?),
                TxnOp::Put {
                    key,
                    value,
                    options,
                } => {
                    let r = self.inner.put(&key, value, options).await?;
                    revision = Some(r);
                    TxnOpResult::Put { revision: r }
                }
                TxnOp::Delete { key } => TxnOpResult::Delete {
                    existed: self.inner.delete(&key).await?,
                },
            });
        }
        Ok(TxnResponse::new(
            failed.is_none(),
            failed,
            results,
            revision,
        ))
    }

    /// With `OutageAsBackendError`, a `Timeout` becomes a generic error.
    fn outage(&self, e: Error) -> Error {
        if self.is(Breakage::OutageAsBackendError) && e.kind() == anykv_core::ErrorKind::Timeout {
            Error::Backend {
                backend: "broken",
                message: format!("no response: {e}"),
                source: None,
            }
        } else {
            e
        }
    }

    async fn after_lock(&self, k: &str, g: LockGuard) -> Result<LockGuard> {
        match self.breakage {
            Breakage::FencingTokenConstant => {
                let lost = g.lost_signal();
                let key = g.key().to_owned();
                Ok(LockGuard::new(
                    key,
                    7,
                    lost,
                    Box::new(Wrapped(Mutex::new(Some(g)))),
                ))
            }
            Breakage::LockBookkeepingVisible => {
                self.inner
                    .put(
                        &format!("___lock/{k}"),
                        Bytes::from_static(b"held"),
                        PutOptions::new(),
                    )
                    .await?;
                Ok(g)
            }
            _ => Ok(g),
        }
    }

    fn break_stream(&self, s: WatchStream) -> WatchStream {
        match self.breakage {
            Breakage::WatchDropsDeletes => s
                .filter(|item| {
                    let keep = !matches!(item, Ok(WatchEvent::Delete { .. }));
                    async move { keep }
                })
                .boxed(),
            Breakage::WatchGap => {
                let opened = std::time::Instant::now();
                let mut after_synced = false;
                s.filter(move |item| {
                    let is_synced = matches!(item, Ok(WatchEvent::Synced { .. }));
                    let in_gap = opened.elapsed() < Duration::from_millis(50);
                    let keep = !(after_synced && in_gap && !is_synced);
                    after_synced |= is_synced;
                    async move { keep }
                })
                .boxed()
            }
            Breakage::WatchLossyUnderLoad => {
                let mut recent: std::collections::VecDeque<std::time::Instant> =
                    std::collections::VecDeque::new();
                s.filter(move |item| {
                    let now = std::time::Instant::now();
                    while recent
                        .front()
                        .is_some_and(|t| now.duration_since(*t) > Duration::from_millis(100))
                    {
                        recent.pop_front();
                    }
                    recent.push_back(now);
                    let keep = !(recent.len() > 20 && matches!(item, Ok(WatchEvent::Put(_))));
                    async move { keep }
                })
                .boxed()
            }
            Breakage::WatchDedupesByRevision => {
                let mut last = 0;
                s.filter(move |item| {
                    let keep = match item {
                        Ok(e @ (WatchEvent::Put(_) | WatchEvent::Delete { .. })) => {
                            let fresh = e.revision() != last;
                            last = e.revision();
                            fresh
                        }
                        _ => true,
                    };
                    async move { keep }
                })
                .boxed()
            }
            Breakage::WatchDuplicates => s
                .flat_map(|item| {
                    let twice = match &item {
                        Ok(WatchEvent::Put(kv)) => vec![Ok(WatchEvent::Put(kv.clone())), item],
                        _ => vec![item],
                    };
                    futures::stream::iter(twice)
                })
                .boxed(),
            _ => s,
        }
    }
}

fn nothing_stream() -> WatchStream {
    futures::stream::once(async { Ok(WatchEvent::Synced { revision: 1 }) })
        .chain(futures::stream::pending())
        .boxed()
}

struct BrokenFactory(Breakage);

impl BrokenFactory {
    fn name(&self) -> String {
        format!("teeth-{:?}", self.0)
    }
}

#[async_trait]
impl StoreFactory for BrokenFactory {
    async fn open(&self, root: &str) -> Result<Arc<dyn Store>> {
        let inner = MemoryStore::open(MemoryConfig::named(self.name()).with_root(root))?;
        let mut caps = inner.capabilities().clone();
        caps.backend = "broken";
        if self.0 == Breakage::TxnLimitUnenforced {
            caps.max_txn_ops = 4;
        }
        Ok(Arc::new(Broken {
            inner,
            breakage: self.0,
            caps,
            versions: Mutex::new(HashMap::new()),
            values: Mutex::new(HashMap::new()),
        }))
    }

    async fn pause_server(&self) -> Result<()> {
        anykv_memory::pause_named(&self.name())
    }

    async fn resume_server(&self) -> Result<()> {
        anykv_memory::resume_named(&self.name())
    }

    async fn restart_server(&self) -> Result<()> {
        anykv_memory::restart_named(&self.name(), Duration::from_millis(300)).await
    }

    async fn compact(&self, store: &Arc<dyn Store>, revision: u64) -> Result<()> {
        match store.as_any().downcast_ref::<Broken>() {
            Some(b) if b.breakage != Breakage::NothingAtAll => b.inner.compact(revision),
            _ => Ok(()),
        }
    }
}

/// Runs `cases` against the broken backend and asserts each of them
/// fails; returns the report.
async fn must_fail(breakage: Breakage, cases: &[&str]) -> Report {
    let selected: Vec<_> = all_cases()
        .into_iter()
        .filter(|c| cases.contains(&c.name))
        .collect();
    assert_eq!(
        selected.len(),
        cases.len(),
        "some of {cases:?} are not cases of the suite"
    );
    let all_at_once = selected.len();
    let report = run_cases(Arc::new(BrokenFactory(breakage)), selected, all_at_once).await;
    for name in cases {
        let case = report.case(name).expect("the case ran");
        assert!(
            matches!(case.outcome, Outcome::Failed(_)),
            "{breakage:?}: the suite should fail {name}, but it reported {:?}",
            case.outcome
        );
    }
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cas_that_ignores_the_revision_fails() {
    must_fail(
        Breakage::CasIgnoresRevision,
        &[
            "atomic_put_create_only",
            "atomic_put_stale_revision",
            "atomic_put_missing_key",
            "atomic_delete_stale_revision",
            "race_cas_counter_16_tasks",
            "race_create_one_winner",
            "history_linearizable_registers",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_lossy_under_load_fails() {
    must_fail(
        Breakage::WatchLossyUnderLoad,
        &[
            "load_watch_replays_to_list",
            "load_watch_every_write_exactly",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_ttl_timer_fails() {
    must_fail(
        Breakage::StaleTtlTimer,
        &[
            "contend_ttl_rewrite_before_deadline_survives",
            "rules_ttl_recreated_without_ttl_survives",
            "rules_ttl_recreated_longer_ttl_survives_old_deadline",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cas_comparing_values_fails() {
    must_fail(
        Breakage::CasComparesValues,
        &["rules_cas_compares_revisions_not_values"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_as_generic_error_fails() {
    must_fail(
        Breakage::OutageAsBackendError,
        &["fault_pause_calls_fail_typed"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_that_drops_deletes_fails() {
    must_fail(
        Breakage::WatchDropsDeletes,
        &[
            "watch_delete_event",
            "watch_tree_sees_delete_tree",
            "ttl_expiry_emits_delete",
            "watch_converges_to_final_state",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_that_duplicates_events_fails() {
    must_fail(
        Breakage::WatchDuplicates,
        &[
            "watch_every_put_in_order",
            "watch_revisions_strictly_increase",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_that_ignores_segment_boundaries_fails() {
    must_fail(
        Breakage::ListIgnoresBoundaries,
        &["list_segment_boundaries"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_that_admits_two_holders_fails() {
    must_fail(
        Breakage::LockAdmitsTwo,
        &[
            "lock_mutual_exclusion_counter",
            "lock_try_lock_fails_while_held",
            "lock_timeout",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_leaking_a_dropped_attempt_fails() {
    must_fail(
        Breakage::LockLeaksDroppedAttempt,
        &["lock_attempt_dropped_in_flight_leaves_lock_free"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn constant_fencing_tokens_fail() {
    must_fail(
        Breakage::FencingTokenConstant,
        &["lock_fencing_tokens_increase"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visible_lock_bookkeeping_fails() {
    must_fail(
        Breakage::LockBookkeepingVisible,
        &["lock_bookkeeping_invisible"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignored_ttl_fails() {
    must_fail(
        Breakage::TtlIgnored,
        &["ttl_key_expires", "ttl_expiry_emits_delete"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_ttl_fails() {
    must_fail(
        Breakage::TtlEarly,
        &["ttl_key_expires", "ttl_expiry_emits_delete"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_with_a_gap_after_its_snapshot_fails() {
    must_fail(
        Breakage::WatchGap,
        &["watch_opened_during_writes_misses_nothing"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignored_lease_fails() {
    must_fail(
        Breakage::LeaseIgnored,
        &[
            "lease_revoke_removes_keys",
            "lease_drop_removes_keys",
            "lease_close_removes_keys",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revisions_reused_after_recreate_fail() {
    must_fail(
        Breakage::RevisionsReusedAfterRecreate,
        &[
            "revision_increases_across_recreate",
            "atomic_put_old_revision_after_recreate",
            "revision_ordered_across_keys",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_invalid_keys_fail() {
    must_fail(Breakage::InvalidKeysAccepted, &["keys_invalid_rejected"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_ignoring_compares_fails() {
    must_fail(
        Breakage::TxnIgnoresCompares,
        &[
            "txn_all_or_nothing",
            "txn_compare_kinds",
            "txn_response_reports_failed_compare",
            "txn_bank_transfer_invariant",
            "txn_optimistic_under_contention",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_one_op_at_a_time_fails() {
    must_fail(
        Breakage::TxnOneOpAtATime,
        &[
            "txn_all_or_nothing",
            "txn_one_revision_for_all_writes",
            "txn_lease_lost_writes_nothing",
            "txn_limits_refused_before_sending",
            "txn_watcher_sees_whole_transactions",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_limit_unenforced_fails() {
    must_fail(
        Breakage::TxnLimitUnenforced,
        &["txn_limits_refused_before_sending"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_dropping_put_options_fails() {
    must_fail(
        Breakage::TxnDropsPutOptions,
        &["txn_put_with_ttl_and_lease"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_deduplicating_by_revision_fails() {
    must_fail(
        Breakage::WatchDedupesByRevision,
        &[
            "txn_one_revision_for_all_writes",
            "txn_watcher_sees_whole_transactions",
        ],
    )
    .await;
}

/// A backend that does nothing must fail every single case: no case of
/// the suite can pass by accident.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_does_nothing_fails_every_case() {
    let names: Vec<&str> = all_cases().iter().map(|c| c.name).collect();
    let report = must_fail(Breakage::NothingAtAll, &names).await;
    assert_eq!(report.passed(), 0, "{report}");
    assert_eq!(report.unsupported(), 0, "{report}");
}

/// The untouched memory backend passes every case through `run_all`, the
/// programmatic entry point.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_backend_passes_run_all() {
    let factory = anykv_conformance::UrlFactory::new(
        "memory://teeth-reference?request_timeout=2s",
        |url| async move { MemoryStore::open_url(&url).map(MemoryStore::into_dyn) },
    )
    .with_pause(
        || async { anykv_memory::pause_named("teeth-reference") },
        || async { anykv_memory::resume_named("teeth-reference") },
    )
    .with_restart(|| async {
        anykv_memory::restart_named("teeth-reference", Duration::from_millis(300)).await
    })
    .with_request_timeout(Duration::from_secs(2))
    .with_compact(|store, revision| async move {
        store
            .as_any()
            .downcast_ref::<MemoryStore>()
            .ok_or_else(|| Error::Config("not a memory store".into()))?
            .compact(revision)
    });
    let report = anykv_conformance::run_all(Arc::new(factory)).await;
    assert!(report.is_success(), "{report}");
    assert_eq!(report.unsupported(), 0, "{report}");
    assert_eq!(report.passed(), all_cases().len());
}
