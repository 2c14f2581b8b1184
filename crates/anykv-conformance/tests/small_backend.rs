//! A complete in-process backend in one file, built only on the public
//! API of `anykv_core` — its backend kit, `anykv_core::backend` — and run
//! against the whole conformance suite: the proof that the kit leaves a
//! backend author only the data structure to write.
//!
//! The data is a `BTreeMap` behind a mutex with a revision counter; the
//! kit gives the rest: watches and history ([`ChangeLog`]), leases
//! ([`LeaseTable`]), locks ([`LockTable`]), TTL deadlines
//! ([`ExpiryTimer`]), per-client stats and close-on-drop ([`Owner`]),
//! roots ([`Root`]) and a frozen server for the fault cases
//! ([`PauseGate`]). `cargo test -p anykv-conformance --test small_backend`.

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, LazyLock, Weak};
use std::time::{Duration, Instant};

use anykv_conformance::{conformance_tests, StoreFactory};
use anykv_core::backend::{
    check_write, compare_outcome, ChangeLog, ExpiryTimer, LeaseTable, LockTable, Owner, PauseGate,
    Root, WatchTarget,
};
use anykv_core::txn::first_failed_compare;
use anykv_core::{
    async_trait, key, Bytes, Capabilities, Error, KvPair, Lease, LeaseId, LockGuard, LockOptions,
    PutOptions, Result, Store, StoreStats, Txn, TxnOp, TxnOpResult, TxnResponse, WatchOptions,
    WatchStream,
};
use parking_lot::Mutex;

const NAME: &str = "small";
const MIN_TTL: Duration = Duration::from_millis(1);
/// How long a call waits out a paused server before `Timeout`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// A value, its revision, and what may remove it besides a delete.
struct Entry {
    value: Bytes,
    revision: u64,
    lease: Option<LeaseId>,
    expires: Option<Instant>,
}

/// The data: the last revision and the keys by full name.
#[derive(Default)]
struct Data {
    revision: u64,
    map: BTreeMap<String, Entry>,
}

/// What a real server would be: the data and the kit's tables, shared by
/// every client.
struct Server {
    data: Mutex<Data>,
    log: ChangeLog,
    leases: LeaseTable,
    locks: LockTable,
    expiry: ExpiryTimer<String>,
    gate: PauseGate,
}

impl Server {
    fn new() -> Arc<Server> {
        Arc::new_cyclic(|me: &Weak<Server>| {
            let (revoked, due) = (me.clone(), me.clone());
            Server {
                data: Mutex::default(),
                log: ChangeLog::new(NAME, 10_000, 64 << 20),
                // A revoked lease's keys go, unless rewritten since.
                leases: LeaseTable::new(NAME, MIN_TTL, move |lease, keys| {
                    if let Some(server) = revoked.upgrade() {
                        let mut d = server.data.lock();
                        for k in keys {
                            if d.map.get(&k).is_some_and(|e| e.lease == Some(lease)) {
                                server.remove(&mut d, &k);
                            }
                        }
                    }
                }),
                locks: LockTable::new(NAME),
                // A key goes at its deadline, unless rewritten since.
                expiry: ExpiryTimer::new("small-ttl", move |k: String, at| {
                    if let Some(server) = due.upgrade() {
                        let mut d = server.data.lock();
                        if d.map.get(&k).is_some_and(|e| e.expires == Some(at)) {
                            server.remove(&mut d, &k);
                        }
                    }
                }),
                gate: PauseGate::new(),
            }
        })
    }

    /// Writes `full` at a new revision; the caller holds the data lock.
    fn write(&self, d: &mut Data, full: String, value: Bytes, opts: &PutOptions) -> Result<u64> {
        if let Some(lease) = opts.lease {
            self.leases.bind(lease, &full)?;
        }
        d.revision += 1;
        let revision = d.revision;
        self.write_at(d, full, value, opts, revision);
        Ok(revision)
    }

    /// Writes `full` at `revision`, bound already to its lease if any.
    fn write_at(&self, d: &mut Data, full: String, value: Bytes, opts: &PutOptions, revision: u64) {
        let ttl = opts.ttl.map(|t| t.max(MIN_TTL));
        let expires = ttl.and_then(|t| Instant::now().checked_add(t));
        if let Some(at) = expires {
            self.expiry.schedule(at, full.clone());
        }
        self.log.record_put(&full, &value, revision);
        let lease = opts.lease;
        let entry = Entry {
            value,
            revision,
            lease,
            expires,
        };
        d.map.insert(full, entry);
    }

    /// Runs a checked transaction (keys relative to `root`) under the data
    /// lock: every write at one new revision.
    fn txn(&self, d: &mut Data, root: &Root, txn: Txn) -> Result<TxnResponse> {
        let failed = first_failed_compare(&txn.compares, |k| {
            let e = d.map.get(root.under(k).as_ref())?;
            Some((e.value.as_ref(), e.revision))
        });
        let branch = if failed.is_none() {
            txn.success
        } else {
            txn.failure
        };
        // Leases first: a lease that is gone fails the whole transaction.
        for op in &branch {
            if let TxnOp::Put { key, options, .. } = op {
                if let Some(lease) = options.lease {
                    self.leases.bind(lease, &root.under(key))?;
                }
            }
        }
        let writes = branch.iter().any(|op| match op {
            TxnOp::Put { .. } => true,
            TxnOp::Delete { key } => d.map.contains_key(root.under(key).as_ref()),
            TxnOp::Get { .. } => false,
        });
        let revision = writes.then(|| {
            d.revision += 1;
            d.revision
        });
        let mut results = Vec::new();
        for op in branch {
            let full = root.under(op.key()).into_owned();
            results.push(match op {
                TxnOp::Get { .. } => TxnOpResult::Get(
                    d.map
                        .get(&full)
                        .map(|e| root.pair(&full, e.value.clone(), e.revision)),
                ),
                TxnOp::Put { value, options, .. } => {
                    let at = revision.unwrap_or(d.revision);
                    self.write_at(d, full, value, &options, at);
                    TxnOpResult::Put { revision: at }
                }
                TxnOp::Delete { .. } => {
                    let existed = d.map.remove(&full).is_some();
                    if let (true, Some(at)) = (existed, revision) {
                        self.log.record_delete(&full, at);
                    }
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

    /// Deletes `full` at a new revision, if present.
    fn remove(&self, d: &mut Data, full: &str) -> bool {
        if d.map.remove(full).is_none() {
            return false;
        }
        d.revision += 1;
        self.log.record_delete(full, d.revision);
        true
    }
}

/// The pairs `target` covers, by full name, in key order.
fn covered(d: &Data, target: &WatchTarget) -> Vec<KvPair> {
    let start = match target {
        WatchTarget::Key(k) => k.clone(),
        WatchTarget::Tree(p) if p.is_empty() => String::new(),
        WatchTarget::Tree(p) => format!("{p}/"),
    };
    d.map
        .range(start.clone()..)
        .take_while(|(k, _)| k.starts_with(&start))
        .filter(|(k, _)| target.covers(k))
        .map(|(k, e)| KvPair::new(k.clone(), e.value.clone(), e.revision))
        .collect()
}

/// One client: a root on the server, and what it holds.
struct Client {
    server: Arc<Server>,
    root: Root,
    owner: Owner,
    caps: Capabilities,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmallStore")
            .field("root", &self.root)
            .field("closed", &self.owner.is_closed())
            .finish()
    }
}

impl Client {
    /// `Closed` after close; waits out a paused server.
    async fn ready(&self) -> Result<()> {
        self.owner.ensure_open()?;
        self.server.gate.pass(NAME, REQUEST_TIMEOUT).await?;
        self.owner.ensure_open()
    }

    /// The full name of a key about to be written, after every check.
    fn checked(&self, key: &str, value: &Bytes, opts: &PutOptions) -> Result<String> {
        let full = self.root.key(key)?.into_owned();
        let max = self.caps.max_value_size;
        check_write(NAME, self.root.relative(&full), value.len(), max, opts)?;
        Ok(full)
    }

    fn current(&self, d: &Data, full: &str) -> Option<u64> {
        d.map.get(full).map(|e| e.revision)
    }

    fn watch_target(&self, target: WatchTarget, opts: WatchOptions) -> Result<WatchStream> {
        let d = self.server.data.lock();
        let snapshot = || (covered(&d, &target), d.revision);
        self.server
            .log
            .watch(&self.owner, &self.root, target.clone(), &opts, snapshot)
    }
}

#[async_trait]
impl Store for Client {
    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn stats(&self) -> StoreStats {
        self.owner.stats()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    async fn get(&self, key: &str) -> Result<Option<KvPair>> {
        self.ready().await?;
        let full = self.root.key(key)?;
        let d = self.server.data.lock();
        let entry = d.map.get(&*full);
        Ok(entry.map(|e| self.root.pair(&full, e.value.clone(), e.revision)))
    }

    async fn put(&self, key: &str, value: Bytes, options: PutOptions) -> Result<u64> {
        self.ready().await?;
        let full = self.checked(key, &value, &options)?;
        let mut d = self.server.data.lock();
        self.server.write(&mut d, full, value, &options)
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        self.ready().await?;
        let full = self.root.key(key)?;
        Ok(self.server.remove(&mut self.server.data.lock(), &full))
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.get(key).await?.is_some())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<KvPair>> {
        self.ready().await?;
        let target = WatchTarget::Tree(self.root.prefix(prefix)?.into_owned());
        let pairs = covered(&self.server.data.lock(), &target);
        let relative = |p: KvPair| self.root.pair(&p.key, p.value, p.revision);
        Ok(pairs.into_iter().map(relative).collect())
    }

    async fn delete_tree(&self, prefix: &str) -> Result<u64> {
        self.ready().await?;
        let full = self.root.prefix(prefix)?.into_owned();
        let mut d = self.server.data.lock();
        let mut doomed: Vec<String> = covered(&d, &WatchTarget::Tree(full.clone()))
            .into_iter()
            .map(|p| p.key)
            .collect();
        // The prefix key itself goes too, unless it is the root.
        if !key::canonical_prefix(prefix)?.is_empty() {
            doomed.insert(0, full);
        }
        let mut deleted = 0;
        for k in doomed {
            deleted += u64::from(self.server.remove(&mut d, &k));
        }
        Ok(deleted)
    }

    async fn atomic_put(
        &self,
        key: &str,
        value: Bytes,
        expected: Option<u64>,
        options: PutOptions,
    ) -> Result<u64> {
        self.ready().await?;
        let full = self.checked(key, &value, &options)?;
        let mut d = self.server.data.lock();
        let current = self.current(&d, &full);
        compare_outcome(NAME, self.root.relative(&full), expected, current)?;
        self.server.write(&mut d, full, value, &options)
    }

    async fn atomic_delete(&self, key: &str, expected: u64) -> Result<()> {
        self.ready().await?;
        let full = self.root.key(key)?;
        let mut d = self.server.data.lock();
        let current = self.current(&d, &full);
        compare_outcome(NAME, self.root.relative(&full), Some(expected), current)?;
        self.server.remove(&mut d, &full);
        Ok(())
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        self.ready().await?;
        let txn = txn.validate(&self.caps)?;
        self.server
            .txn(&mut self.server.data.lock(), &self.root, txn)
    }

    async fn watch(&self, key: &str, options: WatchOptions) -> Result<WatchStream> {
        self.ready().await?;
        let target = WatchTarget::Key(self.root.key(key)?.into_owned());
        self.watch_target(target, options)
    }

    async fn watch_tree(&self, prefix: &str, options: WatchOptions) -> Result<WatchStream> {
        self.ready().await?;
        let target = WatchTarget::Tree(self.root.prefix(prefix)?.into_owned());
        self.watch_target(target, options)
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<Lease> {
        self.ready().await?;
        self.server.leases.grant(&self.owner, ttl)
    }

    async fn lock(&self, key: &str, options: LockOptions) -> Result<LockGuard> {
        self.ready().await?;
        let locks = &self.server.locks;
        locks.lock(&self.owner, &self.root, key, &options).await
    }

    async fn try_lock(&self, key: &str, options: LockOptions) -> Result<Option<LockGuard>> {
        self.ready().await?;
        let locks = &self.server.locks;
        locks.try_lock(&self.owner, &self.root, key, &options)
    }

    async fn close(&self) -> Result<()> {
        self.owner.close();
        Ok(())
    }
}

/// One server for the whole test binary, as the suite expects: cases run
/// on their own roots of it, side by side.
static SERVER: LazyLock<Arc<Server>> = LazyLock::new(Server::new);

/// The suite's factory, with every hook: compact, pause/resume, restart.
struct SmallFactory;

#[async_trait]
impl StoreFactory for SmallFactory {
    async fn open(&self, root: &str) -> Result<Arc<dyn Store>> {
        Ok(Arc::new(Client {
            server: SERVER.clone(),
            root: Root::new(root)?,
            owner: Owner::new(NAME),
            caps: {
                let mut caps = Capabilities::new(NAME);
                caps.transactions = true;
                caps
            },
        }))
    }

    async fn compact(&self, store: &Arc<dyn Store>, revision: u64) -> Result<()> {
        let client = store.as_any().downcast_ref::<Client>();
        let client = client.ok_or_else(|| Error::InvalidArgument("not a small store".into()))?;
        client.server.log.compact(revision);
        Ok(())
    }

    async fn pause_server(&self) -> Result<()> {
        SERVER.gate.pause();
        Ok(())
    }

    async fn resume_server(&self) -> Result<()> {
        SERVER.gate.resume();
        Ok(())
    }

    async fn restart_server(&self) -> Result<()> {
        SERVER.gate.restart(Duration::from_millis(300)).await;
        Ok(())
    }

    fn request_timeout(&self) -> Duration {
        REQUEST_TIMEOUT
    }
}

conformance_tests!(SmallFactory);
