//! The store and its `Store` implementation for keys and values: reads
//! behind a shared `sync`, writes as multi-ops that check versions, and
//! compare-and-swap on `mzxid`s. Watches are in `watch.rs`, leases in
//! `lease.rs`, locks in `lock.rs`; what they share is in `state.rs`.

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use anykv_core::backend::{check_write, compare_outcome, WatchTarget};
use anykv_core::{
    async_trait, key, Bytes, Capabilities, Error, KvPair, Lease, ListOptions, LockGuard,
    LockOptions, PutOptions, Result, ServerStatus, Store, StoreStats, StoreStatus, Txn,
    TxnResponse, WatchOptions, WatchStream,
};
use futures::FutureExt;
use zookeeper_client as zk;

use crate::client::{
    map_err, multi_err, serves_session, srvr, unexpected_reply, with_deadline, ZkClient,
};
use crate::config::{ZkConfig, BACKEND, MIN_TTL};
use crate::layout::{child, DELETED_FLAG, TTL_FLAG, VALUE};
use crate::lease::delete_leased;
use crate::nodes::{delete_value, list_under, make_dirs};
use crate::page::{list_page, PageRequest};
use crate::state::{Mode, StoreState, PRESENT_KEYS};
use crate::{lease, lock, txn, watch};

/// How often a write retries after a definite, not-applied failure (a
/// parent reaped, a version moved) before giving up.
const WRITE_ATTEMPTS: usize = 64;

/// A store on a ZooKeeper ensemble. Cheap to clone. See the
/// [crate documentation](crate).
#[derive(Clone)]
pub struct ZkStore {
    state: Arc<StoreState>,
}

impl fmt::Debug for ZkStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZkStore")
            .field("config", self.state.client.config())
            .field("closed", &self.state.is_closed())
            .finish()
    }
}

impl ZkStore {
    /// Connects and opens a store as configured (within
    /// `connect_timeout`).
    pub async fn open(config: ZkConfig) -> Result<ZkStore> {
        let root = config.validate()?;
        let mut config = config;
        config.root = root;
        let max_value_size = config.max_value_size;
        let client = ZkClient::connect(config).await?;
        let mut capabilities = Capabilities::new(BACKEND);
        capabilities.watch_every_revision = false;
        capabilities.watch_resume = false;
        capabilities.min_ttl = MIN_TTL;
        capabilities.max_value_size = max_value_size;
        capabilities.transactions = true;
        capabilities.max_txn_ops = anykv_core::DEFAULT_MAX_TXN_OPS;
        Ok(ZkStore {
            state: Arc::new(StoreState::new(client, capabilities)),
        })
    }

    /// Opens the store a `zk://` URL names, as `anykv::open` does: several
    /// servers (`zk://a:2181,b:2181/root`) go through
    /// [`anykv_core::parse_url`].
    pub async fn open_url(url: &str) -> Result<ZkStore> {
        let parsed = anykv_core::parse_url(url)?;
        Self::open(ZkConfig::from_url(&parsed)?).await
    }

    /// The configuration the store was opened with (its root canonical;
    /// its `Debug` hides the password).
    pub fn config(&self) -> &ZkConfig {
        self.state.client.config()
    }

    /// Whether reads are sent behind a `sync`: true unless the store talks
    /// to a standalone server, where every read already sees every write
    /// completed before it (checked with the `srvr` command on each new
    /// session; see the crate docs).
    pub fn syncs_reads(&self) -> bool {
        self.state.client.syncs_reads()
    }

    /// The id of the store's own ZooKeeper session.
    pub fn session_id(&self) -> i64 {
        self.state.client.session_id()
    }

    /// How a write with `options` makes the value node, after checking the
    /// options and the value's size.
    fn write_mode(&self, canonical: &str, value: &Bytes, options: &PutOptions) -> Result<Mode> {
        let max = self.state.capabilities.max_value_size;
        check_write(BACKEND, canonical, value.len(), max, options)?;
        if let Some(ttl) = options.ttl {
            return Ok(Mode::Ttl(ttl.max(MIN_TTL)));
        }
        if let Some(lease) = options.lease {
            let l = self.state.leases.lock().get(&lease.0).cloned();
            return match l {
                Some(l) if l.is_live() => Ok(Mode::Lease(l)),
                _ => Err(Error::LeaseLost {
                    backend: BACKEND,
                    lease: lease.0,
                }),
            };
        }
        Ok(Mode::Plain)
    }

    /// Writes `value` at `canonical`. `expected`: `None` for a plain put,
    /// `Some(None)` create-only, `Some(Some(rev))` replace at `rev`.
    ///
    /// The key's node (a container) carries `t` as its data while its
    /// value node is a TTL node (ZooKeeper's stat does not tell TTL nodes
    /// apart), and its data version counts the re-creations of the value
    /// node, so a compare-and-swap also fails if the value node was
    /// replaced (and its version restarted) between the read and the write.
    async fn write(
        &self,
        canonical: &str,
        value: Bytes,
        expected: Option<Option<u64>>,
        mode: Mode,
    ) -> Result<u64> {
        let client = self.state.client.session().await?;
        let dir = self.state.client.layout().key_dir(canonical);
        let vpath = child(&dir, VALUE);
        let what = format!("put {canonical:?}");
        let writer_client = match &mode {
            Mode::Lease(l) => l.session.session().ok_or(Error::LeaseLost {
                backend: BACKEND,
                lease: l.id,
            })?,
            _ => client.clone(),
        };
        let create_opts = match &mode {
            Mode::Plain => zk::CreateMode::Persistent.with_acls(self.state.client.acls()),
            Mode::Ttl(ttl) => zk::CreateMode::Persistent
                .with_acls(self.state.client.acls())
                .with_ttl(*ttl),
            Mode::Lease(..) => zk::CreateMode::Ephemeral.with_acls(self.state.client.acls()),
        };
        let flag: &[u8] = if matches!(mode, Mode::Ttl(_)) {
            TTL_FLAG
        } else {
            b""
        };
        // A plain put of a key this store saw present replaces the value
        // node at once, without reading: whatever the key's node and value
        // node were (in place, TTL, a lease's), the outcome is the value
        // node as `mode` makes it. If the guess was wrong (the value node
        // or the key's node is gone), nothing is applied and the put goes
        // the reading way.
        if expected.is_none() && self.state.present_keys.lock().contains(canonical) {
            let mut multi = writer_client.new_multi_writer();
            let built = multi
                .add_set_data(&dir, flag, None)
                .and_then(|()| multi.add_delete(&vpath, None))
                .and_then(|()| multi.add_create(&vpath, &value, &create_opts));
            let result = match built {
                Ok(()) => {
                    with_deadline(
                        self.state.client.request_timeout(),
                        &what,
                        multi.commit().map(|r| r.map_err(multi_err)),
                    )
                    .await?
                }
                Err(e) => Err(e),
            };
            match result.and_then(|r| last_revision(&r)) {
                Ok(st) => return self.written(canonical, &mode, &dir, &vpath, st).await,
                Err(zk::Error::NoNode | zk::Error::BadVersion | zk::Error::NodeExists) => {
                    self.state.present_keys.lock().remove(canonical);
                }
                Err(e) => return Err(self.write_err(e, &mode, &what)),
            }
        }
        // Reads without a sync first: a stale read makes the multi-op's
        // version checks fail (nothing applied, read again), and a refusal
        // (`KeyExists`, `KeyNotFound`, `KeyModified`) is only reported from
        // a read behind a sync.
        let mut synced = false;
        for _ in 0..WRITE_ATTEMPTS {
            let (dir_read, stat) = if synced {
                let (dir, vpath, what) = (&dir, &vpath, &what);
                self.state
                    .client
                    .after_sync(|c| async move { self.read_nodes(&c, dir, vpath, what).await })
                    .await?
            } else {
                self.read_nodes(&client, &dir, &vpath, &what).await?
            };
            let current = stat.as_ref().map(|st| st.mzxid as u64);
            let refused = expected
                .and_then(|expected| compare_outcome(BACKEND, canonical, expected, current).err());
            if let Some(err) = refused {
                if synced {
                    return Err(err);
                }
                synced = true;
                continue;
            }
            let Some((dir_data, dir_stat)) = dir_read else {
                make_dirs(&self.state.client, &client, &dir).await?;
                continue;
            };
            let in_place = matches!(mode, Mode::Plain)
                && dir_data.is_empty()
                && stat.as_ref().is_some_and(|st| st.ephemeral_owner == 0);
            let result: std::result::Result<zk::Stat, zk::Error> = {
                let mut multi = writer_client.new_multi_writer();
                let built = (|| -> std::result::Result<(), zk::Error> {
                    match &stat {
                        Some(st) if in_place => {
                            multi.add_check_version(&dir, dir_stat.version)?;
                            multi.add_set_data(&vpath, &value, Some(st.version))?;
                        }
                        _ => {
                            // Replace (or create) the value node: count the
                            // re-creation on the key's node, then create it
                            // with the value (the reply carries its stat).
                            multi.add_set_data(&dir, flag, Some(dir_stat.version))?;
                            if let Some(st) = &stat {
                                multi.add_delete(&vpath, Some(st.version))?;
                            }
                            multi.add_create(&vpath, &value, &create_opts)?;
                        }
                    }
                    Ok(())
                })();
                match built {
                    Err(e) => Err(e),
                    Ok(()) => with_deadline(
                        self.state.client.request_timeout(),
                        &what,
                        multi.commit().map(|r| r.map_err(multi_err)),
                    )
                    .await?
                    .and_then(|r| last_revision(&r)),
                }
            };
            match result {
                Ok(st) => {
                    self.saw_present(canonical);
                    return self.written(canonical, &mode, &dir, &vpath, st).await;
                }
                // Not applied: something changed between the read and the
                // write (or the key's node was reaped). A plain put tries
                // again; a compare-and-swap reports what it finds, read
                // behind a sync (the write may have gone through another
                // session, a lease's).
                Err(zk::Error::NoNode | zk::Error::BadVersion | zk::Error::NodeExists) => {
                    synced = true;
                    if let Some(exp) = expected {
                        let (vpath, what) = (&vpath, &what);
                        let client = &self.state.client;
                        let now = client
                            .after_sync(|c| async move { client.stat_of(&c, vpath, what).await })
                            .await?;
                        let current = now.map(|st| st.mzxid as u64);
                        let err = match (exp, current) {
                            // Create-only and still absent: the key's node
                            // was reaped under us; try again.
                            (None, None) => None,
                            (exp, current) => Some(refusal(canonical, exp, current)),
                        };
                        if let Some(err) = err {
                            return Err(err);
                        }
                    }
                }
                Err(e) => return Err(self.write_err(e, &mode, &what)),
            }
        }
        Err(Error::Backend {
            backend: BACKEND,
            message: format!("{what}: the key kept changing under the write"),
            source: None,
        })
    }

    /// The revision of a write that succeeded (`st`: the stat of the last
    /// `set_data` of its multi-op). A write with a lease notes the value
    /// node on the lease, so that revoking it deletes the node unless the
    /// key was written again; if the lease was revoked meanwhile, the node
    /// is deleted again and the put fails with `LeaseLost`.
    async fn written(
        &self,
        canonical: &str,
        mode: &Mode,
        dir: &str,
        vpath: &str,
        st: zk::Stat,
    ) -> Result<u64> {
        if let Mode::Lease(l) = mode {
            if !l.record(vpath, dir, st.version) {
                if let Some(client) = l.session.session() {
                    delete_leased(
                        &client,
                        self.state.client.request_timeout(),
                        vpath,
                        dir,
                        st.version,
                    )
                    .await;
                }
                self.state.present_keys.lock().remove(canonical);
                return Err(Error::LeaseLost {
                    backend: BACKEND,
                    lease: l.id,
                });
            }
        }
        Ok(st.mzxid as u64)
    }

    /// The key's node (data and stat) and the value node's stat, read in
    /// one multi-read request (no sync). The value node counts as absent when the
    /// key's node is.
    async fn read_nodes(
        &self,
        client: &zk::Client,
        dir: &str,
        vpath: &str,
        what: &str,
    ) -> Result<(Option<(Vec<u8>, zk::Stat)>, Option<zk::Stat>)> {
        let mut reader = client.new_multi_reader();
        reader
            .add_get_data(dir)
            .and_then(|()| reader.add_get_data(vpath))
            .map_err(|e| map_err(e, what))?;
        let results = with_deadline(self.state.client.request_timeout(), what, reader.commit())
            .await?
            .map_err(|e| map_err(e, what))?;
        let mut results = results.into_iter();
        let dir_read = match results.next() {
            Some(zk::MultiReadResult::Data { data, stat }) => Some((data, stat)),
            Some(zk::MultiReadResult::Error {
                err: zk::Error::NoNode,
            }) => None,
            Some(zk::MultiReadResult::Error { err }) => return Err(map_err(err, what)),
            other => return Err(map_err(unexpected_reply(other), what)),
        };
        let stat = match results.next() {
            Some(zk::MultiReadResult::Data { stat, .. }) if dir_read.is_some() => Some(stat),
            Some(zk::MultiReadResult::Data { .. }) => None,
            Some(zk::MultiReadResult::Error {
                err: zk::Error::NoNode,
            }) => None,
            Some(zk::MultiReadResult::Error { err }) => return Err(map_err(err, what)),
            other => return Err(map_err(unexpected_reply(other), what)),
        };
        Ok((dir_read, stat))
    }

    /// Notes that `canonical` exists (so the next plain put of it may
    /// replace its value node without reading first). Bounded: past
    /// [`PRESENT_KEYS`] keys the notes start over.
    fn saw_present(&self, canonical: &str) {
        let mut present = self.state.present_keys.lock();
        if !present.contains(canonical) {
            if present.len() >= PRESENT_KEYS {
                present.clear();
            }
            present.insert(canonical.to_owned());
        }
    }

    /// The error of a write the server refused for good.
    fn write_err(&self, e: zk::Error, mode: &Mode, what: &str) -> Error {
        match (e, mode) {
            (zk::Error::SessionExpired | zk::Error::ClientClosed, Mode::Lease(l)) => {
                Error::LeaseLost {
                    backend: BACKEND,
                    lease: l.id,
                }
            }
            (e, _) => map_err(e, what),
        }
    }
}

/// The stat of the last `set_data` of a write multi-op: its `mzxid` is
/// the zxid of the multi-op, which all its operations share (the value
/// node's stat, or the key node's when the value node was created; a
/// created node's stat is not in the reply).
fn last_revision(results: &[zk::MultiWriteResult]) -> std::result::Result<zk::Stat, zk::Error> {
    results
        .iter()
        .rev()
        .find_map(|r| match r {
            zk::MultiWriteResult::SetData { stat } => Some(*stat),
            _ => None,
        })
        .ok_or_else(|| zk::Error::UnexpectedError("a multi-op without its result".into()))
}

/// Why a compare-and-swap on `key` expecting `expected` was not applied,
/// from the revision `current` read behind a sync after its version check
/// failed: `KeyExists`, `KeyNotFound` or `KeyModified` (also when the
/// revision reads as expected: the check failed, so the key changed).
fn refusal(key: &str, expected: Option<u64>, current: Option<u64>) -> Error {
    match compare_outcome(BACKEND, key, expected, current) {
        Err(e) => e,
        Ok(()) => Error::KeyModified {
            backend: BACKEND,
            key: key.to_owned(),
            expected: expected.unwrap_or_default(),
            actual: current.unwrap_or_default(),
        },
    }
}

#[async_trait]
impl Store for ZkStore {
    fn capabilities(&self) -> &Capabilities {
        &self.state.capabilities
    }

    fn stats(&self) -> StoreStats {
        let s = &self.state;
        let leases = s.leases.lock().len();
        let locks = s.locks.lock().len();
        let own_session = usize::from(!s.is_closed());
        StoreStats::new(
            s.open_watches.load(std::sync::atomic::Ordering::SeqCst),
            leases,
            locks,
            own_session + s.sessions.len(),
        )
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    async fn get(&self, key: &str) -> Result<Option<KvPair>> {
        self.state.ensure_open()?;
        let canonical = key::normalize_key(key)?;
        let client = &self.state.client;
        let path = client.layout().value_path(&canonical);
        let limit = client.request_timeout();
        let canonical = canonical.as_str();
        client
            .after_sync(|session| async move {
                match with_deadline(limit, "get", session.get_data(&path)).await? {
                    Ok((data, stat)) => Ok(Some(KvPair::new(canonical, data, stat.mzxid as u64))),
                    Err(zk::Error::NoNode) => Ok(None),
                    Err(e) => Err(map_err(e, &format!("get {canonical:?}"))),
                }
            })
            .await
    }

    async fn put(&self, key: &str, value: Bytes, options: PutOptions) -> Result<u64> {
        self.state.ensure_open()?;
        let canonical = key::normalize_key(key)?;
        let mode = self.write_mode(&canonical, &value, &options)?;
        self.write(&canonical, value, None, mode).await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        self.state.ensure_open()?;
        let canonical = key::normalize_key(key)?;
        let client = &self.state.client;
        let session = client.session().await?;
        let dir = client.layout().key_dir(&canonical);
        let path = child(&dir, VALUE);
        let what = format!("delete {canonical:?}");
        self.state.present_keys.lock().remove(&canonical);
        match delete_value(client, &session, &dir, &path, None, &what).await? {
            Ok(()) => Ok(true),
            Err(zk::Error::NoNode) => Ok(false),
            Err(e) => Err(map_err(e, &what)),
        }
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        self.state.ensure_open()?;
        let canonical = key::normalize_key(key)?;
        let client = &self.state.client;
        let path = client.layout().value_path(&canonical);
        let what = format!("exists {canonical:?}");
        client
            .after_sync(|session| async move {
                Ok(client.stat_of(&session, &path, &what).await?.is_some())
            })
            .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<KvPair>> {
        self.state.ensure_open()?;
        let prefix = key::normalize_prefix(prefix)?;
        let client = &self.state.client;
        client
            .after_sync(|session| async move { list_under(client, &session, &prefix).await })
            .await
    }

    async fn list_with(&self, prefix: &str, options: ListOptions) -> Result<Vec<KvPair>> {
        self.state.ensure_open()?;
        let after = options.validate()?;
        let prefix = key::normalize_prefix(prefix)?;
        let request = PageRequest {
            prefix: &prefix,
            after: after.as_deref(),
            limit: options.limit.unwrap_or(usize::MAX),
            keys_only: options.keys_only,
        };
        let client = &self.state.client;
        client
            .after_sync(|session| async move { list_page(client, &session, request).await })
            .await
    }

    async fn delete_tree(&self, prefix: &str) -> Result<u64> {
        self.state.ensure_open()?;
        let prefix = key::normalize_prefix(prefix)?;
        let client = &self.state.client;
        let session = client.synced_session().await?;
        let mut keys: Vec<String> = list_under(client, &session, &prefix)
            .await?
            .into_iter()
            .map(|p| p.key)
            .collect();
        if !prefix.is_empty() {
            keys.insert(0, prefix.clone());
        }
        let mut n = 0;
        for k in keys {
            self.state.present_keys.lock().remove(&k);
            let dir = client.layout().key_dir(&k);
            let path = child(&dir, VALUE);
            let what = format!("delete_tree {prefix:?}: delete {k:?}");
            match delete_value(client, &session, &dir, &path, None, &what).await? {
                Ok(()) => n += 1,
                Err(zk::Error::NoNode) => {}
                Err(e) => return Err(map_err(e, &what)),
            }
        }
        Ok(n)
    }

    async fn atomic_put(
        &self,
        key: &str,
        value: Bytes,
        expected: Option<u64>,
        options: PutOptions,
    ) -> Result<u64> {
        self.state.ensure_open()?;
        let canonical = key::normalize_key(key)?;
        let mode = self.write_mode(&canonical, &value, &options)?;
        self.write(&canonical, value, Some(expected), mode).await
    }

    async fn atomic_delete(&self, key: &str, expected: u64) -> Result<()> {
        self.state.ensure_open()?;
        let canonical = key::normalize_key(key)?;
        let client = &self.state.client;
        let session = client.synced_session().await?;
        let dir = client.layout().key_dir(&canonical);
        let path = child(&dir, VALUE);
        let what = format!("atomic_delete {canonical:?}");
        // The key node's version counts every re-creation of the value
        // node (whose own version restarts), so checking both in one
        // multi-op makes a concurrent delete-and-re-create fail this.
        let (dir_stat, st) = futures::try_join!(
            client.stat_of(&session, &dir, &what),
            client.stat_of(&session, &path, &what)
        )?;
        let Some((dir_stat, st)) = dir_stat.zip(st) else {
            return compare_outcome(BACKEND, &canonical, Some(expected), None);
        };
        compare_outcome(BACKEND, &canonical, Some(expected), Some(st.mzxid as u64))?;
        let mut multi = session.new_multi_writer();
        let built = multi
            .add_set_data(&dir, DELETED_FLAG, Some(dir_stat.version))
            .and_then(|_| multi.add_delete(&path, Some(st.version)));
        let outcome = match built {
            Err(e) => Err(e),
            Ok(()) => {
                with_deadline(
                    client.request_timeout(),
                    &what,
                    multi.commit().map(|r| r.map(|_| ()).map_err(multi_err)),
                )
                .await?
            }
        };
        match outcome {
            Ok(()) => {
                self.state.present_keys.lock().remove(&canonical);
                Ok(())
            }
            Err(zk::Error::NoNode | zk::Error::BadVersion) => {
                let now = client.stat_of(&session, &path, &what).await?;
                Err(refusal(
                    &canonical,
                    Some(expected),
                    now.map(|st| st.mzxid as u64),
                ))
            }
            Err(e) => Err(map_err(e, &what)),
        }
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        self.state.ensure_open()?;
        let txn = txn.validate(&self.state.capabilities)?;
        txn::run(&self.state, txn, |key, value, options| {
            self.write_mode(key, value, options)
        })
        .await
    }

    async fn watch(&self, key: &str, options: WatchOptions) -> Result<WatchStream> {
        self.state.ensure_open()?;
        let canonical = key::normalize_key(key)?;
        watch::open(&self.state, WatchTarget::Key(canonical), options).await
    }

    async fn watch_tree(&self, prefix: &str, options: WatchOptions) -> Result<WatchStream> {
        self.state.ensure_open()?;
        let prefix = key::normalize_prefix(prefix)?;
        watch::open(&self.state, WatchTarget::Tree(prefix), options).await
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<Lease> {
        lease::grant(&self.state, ttl).await
    }

    async fn lock(&self, key: &str, options: LockOptions) -> Result<LockGuard> {
        let guard = lock::acquire(&self.state, key, options, true).await?;
        anykv_core::backend::waited_for(BACKEND, guard)
    }

    async fn try_lock(&self, key: &str, options: LockOptions) -> Result<Option<LockGuard>> {
        lock::acquire(&self.state, key, options, false).await
    }

    /// Every server of the URL as its `srvr` four-letter command describes
    /// it (version and mode; asked within the request timeout), and the
    /// store's own session: see "Status" in the crate docs.
    async fn status(&self) -> Result<StoreStatus> {
        self.state.ensure_open()?;
        let client = &self.state.client;
        let limit = client.request_timeout();
        let servers = &client.config().servers;
        let id = client.session_id();
        let asks =
            futures::future::join_all(servers.iter().map(|s| async move {
                futures::join!(srvr(s, limit), serves_session(s, id, limit))
            }));
        let root = client.layout().root_path().to_owned();
        let session = async {
            let session = client.session().await?;
            client.stat_of(&session, &root, "status").await
        };
        let (answers, session) = futures::join!(asks, session);
        let connected: Vec<&String> = servers
            .iter()
            .zip(&answers)
            .filter(|(_, (_, cons))| *cons == Some(true))
            .map(|(s, _)| s)
            .collect();
        let answers: Vec<_> = answers.into_iter().map(|(a, _)| a).collect();
        if let Err(e) = &session {
            if e.kind() == anykv_core::ErrorKind::Closed {
                return Err(Error::closed(BACKEND));
            }
        }
        let none_answered = answers.iter().all(|a| a.is_err());
        if none_answered {
            if let Err(e) = session {
                let errors: Vec<String> = servers
                    .iter()
                    .zip(&answers)
                    .filter_map(|(s, a)| a.as_ref().err().map(|e| format!("{s}: {e}")))
                    .collect();
                return Err(Error::Unavailable {
                    backend: BACKEND,
                    message: format!(
                        "status: no server answered ({}; session: {e})",
                        errors.join("; ")
                    ),
                    source: None,
                });
            }
        }
        let mut status = StoreStatus::new(BACKEND, None, self.stats());
        let mut zxids = Vec::new();
        for (server, answer) in servers.iter().zip(answers) {
            status = status.with_server(match answer {
                Ok(reply) => {
                    if let Some(z) = reply.zxid {
                        zxids.push((format!("zxid {server}"), format!("0x{z:x}")));
                    }
                    ServerStatus::new(server.clone(), reply.version, reply.mode)
                }
                Err(e) => ServerStatus::unreachable(server.clone(), e),
            });
        }
        status = status
            .with_detail("session_id", format!("0x{:x}", client.session_id()))
            .with_detail(
                "session_timeout",
                format!("{:?}", client.granted_session_timeout()),
            )
            .with_detail("root", root)
            .with_detail("syncs_reads", client.syncs_reads().to_string())
            .with_detail(
                "loss_policy",
                format!("{:?}", client.config().loss_policy).to_lowercase(),
            );
        if let [server] = connected.as_slice() {
            status = status.with_detail("connected_server", (*server).clone());
        }
        if let Err(e) = session {
            status = status.with_detail("session_error", e.to_string());
        }
        for (name, value) in zxids {
            status = status.with_detail(name, value);
        }
        Ok(status)
    }

    async fn close(&self) -> Result<()> {
        {
            let _gate = self.state.delivery_gate.lock();
            if !self.state.client.closed().close() {
                return Ok(());
            }
        }
        self.state.shutdown.send_replace(true);
        self.state.watch_feed.lock().take();
        lease::revoke_all(&self.state).await;
        lock::release_all(&self.state).await;
        self.state.sessions.close_all();
        Ok(())
    }
}
