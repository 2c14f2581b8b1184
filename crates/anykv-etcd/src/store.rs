//! The store: opening it, and its `Store` implementation.
//!
//! A plain `put` (no TTL) is one etcd `Put` with `prev_kv`;
//! compare-and-swap, create-only, compare-and-delete and TTL puts are
//! single transactions (etcd applies a transaction at about half the rate
//! of a plain put) whose failure branch reads the key, so the error
//! (`KeyExists`, `KeyModified`, `KeyNotFound`) is exact. A write is sent
//! again only when the server certainly did not apply it (see `client`);
//! reads are hedged across members. `delete_tree` deletes key by key so each deleted key gets its
//! own revision. `txn` is one etcd transaction (see `txn`).

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use anykv_core::backend::{
    check_lease_ttl, check_lock_options, check_write, compare_outcome, waited_for, ClosedFlag,
    WatchTarget,
};
use anykv_core::{
    async_trait, key, Bytes, Capabilities, Error, KvPair, Lease, LeaseId, ListOptions, LockGuard,
    LockOptions, PutOptions, Result, ServerStatus, Store, StoreStats, StoreStatus, Txn as AnyTxn,
    TxnResponse as AnyTxnResponse, WatchOptions, WatchStream,
};
use etcd_client::{
    CompactionOptions, Compare, CompareOp, DeleteOptions, GetOptions, PutOptions as EtcdPutOptions,
    Txn, TxnOp, TxnOpResponse, TxnResponse,
};
use parking_lot::Mutex;

use crate::client::{header_revision, op_responses, revision, EtcdClient, BACKEND};
use crate::config::EtcdConfig;
use crate::layout::{KeyNames, Layout, TreeRange};
use crate::lease::{self, lease_error, retire_ttl_lease, LeaseRelease, MIN_TTL};
use crate::lock;
use crate::members::MemberStatus;
use crate::state::StoreState;
use crate::watch::Watches;

/// The largest value this backend accepts, in bytes: below etcd's default
/// request limit of 1.5 MiB, with room for the key.
pub const MAX_VALUE_SIZE: usize = 1_500_000;

/// A store on etcd v3. Open one with [`EtcdStore::open`],
/// [`EtcdStore::open_url`] or through `anykv::open("etcd://...")`.
#[derive(Clone)]
pub struct EtcdStore {
    state: Arc<StoreState>,
}

impl fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.state.config.endpoints)
            .field("root", &self.state.layout.root())
            .field("closed", &self.state.closed.is_closed())
            .finish()
    }
}

impl EtcdStore {
    /// Connects and checks that etcd answers (and accepts the credentials)
    /// within the connect timeout.
    pub async fn open(config: EtcdConfig) -> Result<EtcdStore> {
        config.validate()?;
        let layout = Layout::new(&config.root)?;
        let client = EtcdClient::connect(&config).await?;
        let watches = Watches::start(&client, layout.root());
        let mut capabilities = Capabilities::new(BACKEND);
        capabilities.min_ttl = MIN_TTL;
        capabilities.max_value_size = MAX_VALUE_SIZE;
        capabilities.transactions = true;
        capabilities.max_txn_ops = config.max_txn_ops;
        Ok(EtcdStore {
            state: Arc::new(StoreState {
                client,
                config,
                layout,
                capabilities,
                closed: ClosedFlag::new(BACKEND),
                watches,
                leases: Arc::new(Mutex::new(HashMap::new())),
                locks: Arc::new(Mutex::new(HashMap::new())),
                ttl_keys: Mutex::new(Default::default()),
            }),
        })
    }

    /// Opens the store a URL names: everything `anykv::open` accepts for
    /// etcd, several hosts (`etcd://a:2379,b:2379/root`) included (see the
    /// crate documentation).
    pub async fn open_url(url: &str) -> Result<EtcdStore> {
        let parsed = anykv_core::parse_url(url)?;
        Self::open(EtcdConfig::from_url(&parsed)?).await
    }

    /// The store's root prefix.
    pub fn root(&self) -> &str {
        self.state.layout.root()
    }

    /// The configuration the store was opened with.
    pub fn config(&self) -> &EtcdConfig {
        &self.state.config
    }

    /// Compacts etcd's history before `revision`: a watch resuming from an
    /// older revision then yields `Compacted`. This compacts the whole
    /// etcd cluster, not just this store's root.
    pub async fn compact(&self, revision: u64) -> Result<()> {
        self.state.closed.ensure_open()?;
        let rev = i64::try_from(revision)
            .map_err(|_| Error::InvalidArgument(format!("revision {revision} is too large")))?;
        self.client()
            .send("compact", |c| {
                let mut kv = c.kv();
                async move {
                    kv.compact(rev, Some(CompactionOptions::new().with_physical()))
                        .await
                }
            })
            .await
            .map(|_| ())
    }

    /// What the store knows of each of its endpoints, in the order of
    /// [`EtcdConfig::endpoints`]: whether it is connected, up (answering
    /// its probes, with a leader) and the leader. Requests go to the
    /// leader while it is up (see the crate documentation).
    pub fn members(&self) -> Vec<MemberStatus> {
        self.client().members()
    }

    fn client(&self) -> &EtcdClient {
        &self.state.client
    }

    /// Checks that the store is open and names `key`.
    fn open_key(&self, key: &str) -> Result<KeyNames> {
        self.state.closed.ensure_open()?;
        self.state.layout.key(key)
    }

    /// Checks that the store is open and names the tree of `prefix`.
    fn open_tree(&self, prefix: &str) -> Result<TreeRange> {
        self.state.closed.ensure_open()?;
        self.state.layout.tree(prefix)
    }

    /// A pair from an etcd pair, taking its value without a copy.
    fn pair(&self, kv: etcd_client::KeyValue) -> Option<KvPair> {
        let revision = revision(kv.mod_revision());
        let (key, value) = kv.into_key_value();
        Some(KvPair::new(
            self.state.layout.relative(&key)?,
            value,
            revision,
        ))
    }

    /// Retires the TTL leases of the pairs a delete removed.
    fn retire_deleted(&self, deleted: &[etcd_client::KeyValue]) {
        for prev in deleted {
            retire_ttl_lease(self.client(), prev.lease(), 0);
        }
    }

    /// The lease of a write and the bookkeeping ops that go with it.
    async fn write_lease(&self, options: &PutOptions) -> Result<(i64, Vec<TxnOp>)> {
        if let Some(lease) = options.lease {
            // An id etcd cannot have granted (0 would mean no lease at all).
            let id = crate::txn::etcd_lease(lease.0);
            if id < 0 {
                return Err(Error::LeaseLost {
                    backend: BACKEND,
                    lease: lease.0,
                });
            }
            return Ok((id, Vec::new()));
        }
        if let Some(ttl) = options.ttl {
            let (id, marker) = lease::grant_for_ttl_put(self.client(), ttl).await?;
            return Ok((id, vec![marker]));
        }
        Ok((0, Vec::new()))
    }

    /// `put` and `atomic_put`: `expected` is `None` for a plain put,
    /// `Some(None)` for create-only, `Some(Some(rev))` for a swap at `rev`.
    async fn write(
        &self,
        key: &str,
        value: Bytes,
        expected: Option<Option<u64>>,
        options: PutOptions,
    ) -> Result<u64> {
        let KeyNames { full, canonical } = self.open_key(key)?;
        check_write(BACKEND, &canonical, value.len(), MAX_VALUE_SIZE, &options)?;
        let (lease, mut ops) = self.write_lease(&options).await?;
        // The previous pair names the TTL lease a write replaces; a plain
        // put asks for it only where this store wrote a TTL.
        let had_ttl = self.state.ttl_keys.lock().may_have(&full);
        let plain = expected.is_none() && ops.is_empty();
        let put_opts = {
            let o = if had_ttl || !plain {
                EtcdPutOptions::new().with_prev_key()
            } else {
                EtcdPutOptions::new()
            };
            if lease != 0 {
                o.with_lease(lease)
            } else {
                o
            }
        };
        if plain {
            // Nothing to compare and no TTL marker to write with the key:
            // a plain put, which etcd applies at about twice the rate of a
            // transaction.
            let rev = self.plain_put(&full, value, put_opts, lease).await?;
            if had_ttl {
                self.state.ttl_keys.lock().forget(&full);
            }
            return Ok(rev);
        }
        ops.insert(0, TxnOp::put(full.clone(), value.to_vec(), Some(put_opts)));
        let compares = match expected {
            None => Vec::new(),
            Some(None) => vec![Compare::create_revision(full.clone(), CompareOp::Equal, 0)],
            Some(Some(rev)) => crate::txn::compare_at_revision(&full, rev),
        };
        let txn = Txn::new()
            .when(compares)
            .and_then(ops)
            .or_else([TxnOp::get(full.clone(), None)]);
        // On an error the write may have been applied: its lease stays,
        // and expires with the key's TTL.
        let resp = self
            .client()
            .send("put", |c| {
                let (mut kv, txn) = (c.kv(), txn.clone());
                async move { kv.txn(txn).await }
            })
            .await
            .map_err(|e| lease_error(e, lease))?;
        if !resp.succeeded() {
            if options.ttl.is_some() && lease != 0 {
                // The fresh TTL lease binds nothing.
                lease::revoke_in_background(self.client(), lease, false);
            }
            return Err(swap_error(&canonical, expected.flatten(), &resp));
        }
        let rev = header_revision(resp.header())?;
        match options.ttl {
            Some(ttl) => self.state.ttl_keys.lock().wrote(&full, ttl),
            None if had_ttl => self.state.ttl_keys.lock().forget(&full),
            None => {}
        }
        // Retiring the old lease is best effort: the write succeeded.
        for op in op_responses(&resp).unwrap_or_default() {
            if let TxnOpResponse::Put(p) = op {
                if let Some(prev) = p.prev_key() {
                    retire_ttl_lease(self.client(), prev.lease(), lease);
                }
                break;
            }
        }
        Ok(revision(rev))
    }

    /// An unconditional put without bookkeeping ops: its previous pair
    /// (for `retire_ttl_lease`) comes back when `put_opts` ask for it.
    async fn plain_put(
        &self,
        full: &str,
        value: Bytes,
        put_opts: EtcdPutOptions,
        lease: i64,
    ) -> Result<u64> {
        let resp = self
            .client()
            .send("put", |c| {
                let mut kv = c.kv();
                let (k, v, o) = (full.to_owned(), value.to_vec(), put_opts.clone());
                async move { kv.put(k, v, Some(o)).await }
            })
            .await
            .map_err(|e| lease_error(e, lease))?;
        let rev = header_revision(resp.header())?;
        if let Some(prev) = resp.prev_key() {
            retire_ttl_lease(self.client(), prev.lease(), lease);
        }
        Ok(revision(rev))
    }

    /// Deletes one etcd key, retiring its TTL lease; whether it existed.
    async fn delete_full(&self, op: &str, full: Vec<u8>) -> Result<bool> {
        let resp = self
            .client()
            .send(op, |c| {
                let (mut kv, key) = (c.kv(), full.clone());
                async move {
                    kv.delete(key, Some(DeleteOptions::new().with_prev_key()))
                        .await
                }
            })
            .await?;
        self.retire_deleted(resp.prev_kvs());
        Ok(resp.deleted() > 0)
    }
}

/// The error of a compare-and-swap or compare-and-delete whose comparison
/// failed, from the current revision its failure branch read.
fn swap_error(canonical: &str, expected: Option<u64>, resp: &TxnResponse) -> Error {
    let replies = match op_responses(resp) {
        Ok(replies) => replies,
        Err(e) => return e,
    };
    let current = replies
        .into_iter()
        .find_map(|op| match op {
            TxnOpResponse::Get(g) => Some(g.kvs().first().map(|kv| revision(kv.mod_revision()))),
            _ => None,
        })
        .flatten();
    match compare_outcome(BACKEND, canonical, expected, current) {
        Err(e) => e,
        // The server refused a comparison its own read agrees with
        // (never seen): report the key as changed.
        Ok(()) => match expected {
            None => Error::KeyExists {
                backend: BACKEND,
                key: canonical.to_owned(),
            },
            Some(e) => Error::KeyModified {
                backend: BACKEND,
                key: canonical.to_owned(),
                expected: e,
                actual: current.unwrap_or(e),
            },
        },
    }
}

#[async_trait]
impl Store for EtcdStore {
    fn capabilities(&self) -> &Capabilities {
        &self.state.capabilities
    }

    fn stats(&self) -> StoreStats {
        StoreStats::new(
            self.state.watches.count(),
            self.state.leases.lock().len(),
            self.state.locks.lock().len(),
            usize::from(!self.state.closed.is_closed()),
        )
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    async fn get(&self, key: &str) -> Result<Option<KvPair>> {
        let KeyNames { full, canonical } = self.open_key(key)?;
        let mut resp = self
            .client()
            .read("get", |c| {
                let (mut kv, key) = (c.kv(), full.clone());
                async move { kv.get(key, None).await }
            })
            .await?;
        // The one pair of the range is the key asked for: its relative key
        // is `canonical`, and its value is taken without a copy.
        Ok(resp.take_kvs().into_iter().next().map(|kv| {
            let revision = revision(kv.mod_revision());
            KvPair::new(canonical, kv.into_key_value().1, revision)
        }))
    }

    async fn put(&self, key: &str, value: Bytes, options: PutOptions) -> Result<u64> {
        self.write(key, value, None, options).await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        let names = self.open_key(key)?;
        self.delete_full("delete", names.full.into_bytes()).await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        let names = self.open_key(key)?;
        let resp = self
            .client()
            .read("exists", |c| {
                let (mut kv, key) = (c.kv(), names.full.clone());
                async move { kv.get(key, Some(GetOptions::new().with_count_only())).await }
            })
            .await?;
        Ok(resp.count() > 0)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<KvPair>> {
        let TreeRange { start, end, .. } = self.open_tree(prefix)?;
        let mut resp = self
            .client()
            .read("list", |c| {
                let (mut kv, start, end) = (c.kv(), start.clone(), end.clone());
                async move { kv.get(start, Some(GetOptions::new().with_range(end))).await }
            })
            .await?;
        Ok(resp
            .take_kvs()
            .into_iter()
            .filter_map(|kv| self.pair(kv))
            .collect())
    }

    async fn list_with(&self, prefix: &str, options: ListOptions) -> Result<Vec<KvPair>> {
        let after = options.validate()?;
        let TreeRange { start, end, .. } = self.open_tree(prefix)?;
        let limit = options.limit.unwrap_or(usize::MAX);
        // The first etcd key after `after`: its own name plus a zero byte.
        let mut from = match after {
            Some(a) => {
                let mut k = self.state.layout.key(&a)?.full.into_bytes();
                k.push(0);
                k.max(start)
            }
            None => start,
        };
        let mut out = Vec::new();
        // Keys under the root that are not the user's (bookkeeping) are
        // skipped, so a short page is read on until it is full or the
        // range ends.
        while out.len() < limit {
            let want = i64::try_from(limit - out.len()).unwrap_or(i64::MAX);
            let mut get = GetOptions::new().with_range(end.clone()).with_limit(want);
            if options.keys_only {
                get = get.with_keys_only();
            }
            let mut resp = self
                .client()
                .read("list", |c| {
                    let (mut kv, from, get) = (c.kv(), from.clone(), get.clone());
                    async move { kv.get(from, Some(get)).await }
                })
                .await?;
            let more = resp.more();
            let kvs = resp.take_kvs();
            let last = kvs.last().map(|kv| kv.key().to_vec());
            out.extend(kvs.into_iter().filter_map(|kv| self.pair(kv)));
            match last {
                Some(mut l) if more => {
                    l.push(0);
                    from = l;
                }
                _ => break,
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    async fn delete_tree(&self, prefix: &str) -> Result<u64> {
        let TreeRange { own, start, end } = self.open_tree(prefix)?;
        let resp = self
            .client()
            .read("delete_tree", |c| {
                let (mut kv, start, end) = (c.kv(), start.clone(), end.clone());
                async move {
                    kv.get(
                        start,
                        Some(GetOptions::new().with_range(end).with_keys_only()),
                    )
                    .await
                }
            })
            .await?;
        let mut keys: Vec<Vec<u8>> = resp.kvs().iter().map(|kv| kv.key().to_vec()).collect();
        if let Some(own) = own {
            keys.push(own.into_bytes());
        }
        keys.sort();
        let mut count = 0;
        for k in keys {
            if self.delete_full("delete_tree", k).await? {
                count += 1;
            }
        }
        Ok(count)
    }

    async fn atomic_put(
        &self,
        key: &str,
        value: Bytes,
        expected: Option<u64>,
        options: PutOptions,
    ) -> Result<u64> {
        self.write(key, value, Some(expected), options).await
    }

    async fn atomic_delete(&self, key: &str, expected: u64) -> Result<()> {
        let KeyNames { full, canonical } = self.open_key(key)?;
        let txn = Txn::new()
            .when(crate::txn::compare_at_revision(&full, expected))
            .and_then([TxnOp::delete(
                full.clone(),
                Some(DeleteOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(full.clone(), None)]);
        let resp = self
            .client()
            .send("atomic_delete", |c| {
                let (mut kv, txn) = (c.kv(), txn.clone());
                async move { kv.txn(txn).await }
            })
            .await?;
        if !resp.succeeded() {
            return Err(swap_error(&canonical, Some(expected), &resp));
        }
        // A deleted TTL key's lease (and marker) goes with it.
        for op in op_responses(&resp).unwrap_or_default() {
            if let TxnOpResponse::Delete(d) = op {
                self.retire_deleted(d.prev_kvs());
            }
        }
        Ok(())
    }

    async fn txn(&self, txn: AnyTxn) -> Result<AnyTxnResponse> {
        crate::txn::run(&self.state, txn).await
    }

    async fn watch(&self, key: &str, options: WatchOptions) -> Result<WatchStream> {
        let names = self.open_key(key)?;
        let target = WatchTarget::Key(names.canonical);
        let state = &self.state;
        state
            .watches
            .open(&state.client, &state.layout, &target, options)
            .await
    }

    async fn watch_tree(&self, prefix: &str, options: WatchOptions) -> Result<WatchStream> {
        self.state.closed.ensure_open()?;
        let target = WatchTarget::Tree(key::normalize_prefix(prefix)?);
        let state = &self.state;
        state
            .watches
            .open(&state.client, &state.layout, &target, options)
            .await
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<Lease> {
        self.state.closed.ensure_open()?;
        check_lease_ttl(ttl)?;
        let granted = lease::grant(self.client(), ttl).await?;
        let release = LeaseRelease::keep(
            self.client(),
            &self.state.leases,
            granted.id,
            granted.kept,
            true,
        );
        Ok(Lease::new(
            LeaseId(revision(granted.id)),
            granted.ttl,
            granted.lost,
            Box::new(release),
        ))
    }

    async fn lock(&self, key: &str, options: LockOptions) -> Result<LockGuard> {
        check_lock_options(&options)?;
        waited_for(
            BACKEND,
            lock::acquire(&self.state, key, options, true).await?,
        )
    }

    async fn try_lock(&self, key: &str, options: LockOptions) -> Result<Option<LockGuard>> {
        check_lock_options(&options)?;
        lock::acquire(&self.state, key, options, false).await
    }

    /// Each endpoint's answer to etcd's maintenance `Status`: its version
    /// and role (`leader` when its member id is the leader's, `learner`
    /// when it says so, else `follower`), or its error; the details name
    /// the cluster id, the leader, and per member (prefixed with its
    /// address) its member id, database size and size in use, raft term,
    /// index and applied index, and any alarms it reports. The revision is
    /// the highest any member's reply header carries.
    async fn status(&self) -> Result<StoreStatus> {
        self.state.closed.ensure_open()?;
        let answers = self.client().member_statuses().await;
        let mut status = StoreStatus::new(BACKEND, None, self.stats());
        let (mut cluster_id, mut leader) = (None, None);
        let mut member_details = Vec::new();
        let mut revision_seen = None::<i64>;
        for (address, answer) in &answers {
            let s = match answer {
                Ok(s) => s,
                Err(e) => {
                    status = status.with_server(ServerStatus::unreachable(address, e.clone()));
                    continue;
                }
            };
            let (member_id, cluster, rev) = s
                .header()
                .map_or((0, 0, 0), |h| (h.member_id(), h.cluster_id(), h.revision()));
            if rev > 0 {
                revision_seen = Some(revision_seen.map_or(rev, |r| r.max(rev)));
            }
            if cluster != 0 {
                cluster_id.get_or_insert(cluster);
            }
            let role = if s.is_learner() {
                "learner"
            } else if member_id != 0 && s.leader() == member_id {
                leader = Some(address.clone());
                "leader"
            } else {
                "follower"
            };
            if leader.is_none() && s.leader() != 0 {
                leader = Some(format!("{:x}", s.leader()));
            }
            status = status.with_server(ServerStatus::new(
                address,
                Some(s.version().to_owned()),
                Some(role.to_owned()),
            ));
            let mut add = |name: &str, value: String| {
                member_details.push((format!("{address} {name}"), value));
            };
            add("member_id", format!("{member_id:x}"));
            add("db_size", s.db_size().to_string());
            add("db_size_in_use", s.raft_used_db_size().to_string());
            add("raft_term", s.raft_term().to_string());
            add("raft_index", s.raft_index().to_string());
            add("raft_applied_index", s.raft_applied_index().to_string());
            if !s.errors().is_empty() {
                add("errors", s.errors().join("; "));
            }
        }
        if status.servers.iter().all(|m| m.error.is_some()) {
            let why: Vec<String> = status
                .servers
                .iter()
                .map(|m| format!("{}: {}", m.address, m.error.as_deref().unwrap_or("")))
                .collect();
            return Err(Error::Unavailable {
                backend: BACKEND,
                message: format!("status: no etcd member answered ({})", why.join("; ")),
                source: None,
            });
        }
        status.revision = revision_seen.map(revision);
        if let Some(id) = cluster_id {
            status = status.with_detail("cluster_id", format!("{id:x}"));
        }
        status = status.with_detail("leader", leader.unwrap_or_else(|| "none".into()));
        if !self.root().is_empty() {
            status = status.with_detail("root", self.root().to_owned());
        }
        status.details.extend(member_details);
        Ok(status)
    }

    async fn close(&self) -> Result<()> {
        if !self.state.closed.close() {
            return Ok(());
        }
        self.state.watches.close();
        let leases: Vec<_> = self.state.leases.lock().drain().collect();
        let locks: Vec<_> = self.state.locks.lock().drain().collect();
        let mut result = Ok(());
        for (id, kept, delete_keys) in leases
            .into_iter()
            .map(|(i, k)| (i, k, true))
            .chain(locks.into_iter().map(|(i, k)| (i, k, false)))
        {
            // Keys first, then `lost()`: a holder never sees its lease lost
            // while its keys still stand.
            kept.stop_keep_alive();
            let r = lease::revoke(self.client(), id, delete_keys).await;
            kept.fire_lost();
            if let Err(e) = r {
                result = Err(e);
            }
        }
        self.client().stop_probes();
        result
    }
}

/// The conformance suite's compact hook: compacts etcd's history before
/// `revision` through an etcd store behind `Arc<dyn Store>`; an
/// `InvalidArgument` for any other store.
pub async fn compact(store: &dyn Store, revision: u64) -> Result<()> {
    let etcd = store
        .as_any()
        .downcast_ref::<EtcdStore>()
        .ok_or_else(|| Error::InvalidArgument(format!("{store:?} is not an etcd store")))?;
    etcd.compact(revision).await
}
