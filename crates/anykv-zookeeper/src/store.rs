//! The store: keys and values (leases in `lease.rs`, locks in `lock.rs`,
//! watches in `watch.rs`).

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anykv_core::{
    async_trait, key, Bytes, Capabilities, Error, KvPair, Lease, LockGuard, LockOptions,
    PutOptions, Result, Store, StoreStats, WatchOptions, WatchStream,
};
use futures::future::{BoxFuture, Shared};
use futures::FutureExt;
use parking_lot::Mutex;
use tokio::sync::watch as tokio_watch;
use zookeeper_client as zk;

use crate::client::{connect, is_standalone, map_err, multi_err, timed};
use crate::config::ZkConfig;
use crate::lease::{LeaseEntry, Pool, DELETED_FLAG};
use crate::lock::LockEntry;
use crate::paths::{self, child, node_path, unescape_segment, VALUE};
use crate::watch::{Filter, Hub};
use crate::{BACKEND, MIN_TTL};

/// How often a write retries after a definite, not-applied failure (a
/// parent reaped, a version moved) before giving up.
const WRITE_ATTEMPTS: usize = 64;

/// How many nodes one multi-read of `list` covers (two reads each: the
/// node's children and its value).
const LIST_BATCH: usize = 32;

/// How many keys a store remembers as present, for plain puts without a
/// read (see [`ZkStore::saw_present`]).
const PRESENT_KEYS: usize = 100_000;

/// The data of a key node while its value node is a TTL node.
const TTL_FLAG: &[u8] = b"t";

/// A store on a ZooKeeper ensemble. Cheap to clone. See the
/// [crate documentation](crate).
#[derive(Clone)]
pub struct ZkStore {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: ZkConfig,
    pub(crate) root_path: String,
    client: Mutex<zk::Client>,
    reconnect: tokio::sync::Mutex<()>,
    pub(crate) closed: AtomicBool,
    pub(crate) closed_tx: tokio_watch::Sender<bool>,
    /// Held while the shared watch hands events to its streams, and while
    /// `close()` marks the store closed: once `close()` returned, no
    /// stream is given anything more.
    pub(crate) gate: Mutex<()>,
    caps: Capabilities,
    pub(crate) leases: Mutex<HashMap<u64, Arc<LeaseEntry>>>,
    pub(crate) locks: Mutex<HashMap<u64, Arc<LockEntry>>>,
    pub(crate) next_lock: AtomicU64,
    /// The shared sessions of leases and locks.
    pub(crate) pool: Pool,
    pub(crate) watches: Arc<AtomicUsize>,
    pub(crate) hub: Mutex<Option<Arc<Hub>>>,
    syncs: Mutex<Syncs>,
    /// The session's server is standalone ([`is_standalone`]): reads need
    /// no `sync`. Checked again on every new session.
    standalone: AtomicBool,
    /// Keys this store last saw present (a hint, never trusted for
    /// correctness).
    present: Mutex<HashSet<String>>,
}

/// A `sync` already sent, whose reply concurrent reads share.
type SharedSync = Shared<BoxFuture<'static, std::result::Result<(), zk::Error>>>;

/// The store's `sync` requests: how many were sent, and the last one.
#[derive(Default)]
struct Syncs {
    /// Syncs sent so far; a sync is sent and counted under one lock.
    sent: u64,
    /// The last sync sent: its number, its session and its reply.
    last: Option<(u64, i64, SharedSync)>,
}

impl fmt::Debug for ZkStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZkStore")
            .field("config", &self.inner.config)
            .field("closed", &self.inner.closed.load(Ordering::Relaxed))
            .finish()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::SeqCst);
        self.closed_tx.send_replace(true);
        for (_, l) in self.leases.lock().drain() {
            l.trigger.fire();
        }
        crate::lock::fire_all(self);
        self.pool.close_all();
    }
}

enum Mode {
    Plain,
    Ttl(Duration),
    Lease(Arc<LeaseEntry>),
}

impl ZkStore {
    /// Connects and opens a store as configured.
    pub async fn open(config: ZkConfig) -> Result<Self> {
        let root = key::normalize_root(&config.root)?;
        let mut config = config;
        config.root = root.clone();
        if config.servers.is_empty() {
            return Err(Error::Config("no ZooKeeper server given".into()));
        }
        let client = connect(&config, config.session_timeout, config.connect_timeout).await?;
        let standalone = is_standalone(&config).await;
        let mut caps = Capabilities::new(BACKEND);
        caps.watch_every_revision = false;
        caps.watch_resume = false;
        caps.min_ttl = MIN_TTL;
        caps.max_value_size = config.max_value_size;
        let (closed_tx, _) = tokio_watch::channel(false);
        Ok(ZkStore {
            inner: Arc::new(Inner {
                root_path: node_path(&root),
                config,
                client: Mutex::new(client),
                reconnect: tokio::sync::Mutex::new(()),
                closed: AtomicBool::new(false),
                closed_tx,
                gate: Mutex::new(()),
                caps,
                leases: Mutex::new(HashMap::new()),
                locks: Mutex::new(HashMap::new()),
                next_lock: AtomicU64::new(1),
                pool: Pool::default(),
                watches: Arc::new(AtomicUsize::new(0)),
                hub: Mutex::new(None),
                syncs: Mutex::new(Syncs::default()),
                standalone: AtomicBool::new(standalone),
                present: Mutex::new(HashSet::new()),
            }),
        })
    }

    /// Whether reads are sent behind a `sync`: true unless the store talks
    /// to a standalone server, where every read already sees every write
    /// completed before it (checked with the `srvr` command on each new
    /// session; see the crate docs).
    pub fn syncs_reads(&self) -> bool {
        !self.inner.standalone.load(Ordering::SeqCst)
    }

    /// The id of the store's own ZooKeeper session.
    pub fn session_id(&self) -> i64 {
        self.inner.client.lock().session_id().0
    }

    pub(crate) fn check(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::SeqCst) {
            Err(Error::closed(BACKEND))
        } else {
            Ok(())
        }
    }

    /// The store's session, re-established if it expired.
    pub(crate) async fn client(&self) -> Result<zk::Client> {
        self.check()?;
        let c = self.inner.client.lock().clone();
        if !c.state().is_terminated() {
            return Ok(c);
        }
        let _g = self.inner.reconnect.lock().await;
        let c = self.inner.client.lock().clone();
        if !c.state().is_terminated() {
            return Ok(c);
        }
        let config = &self.inner.config;
        let fresh = connect(config, config.session_timeout, self.limit()).await?;
        let standalone = is_standalone(&self.inner.config).await;
        self.inner.standalone.store(standalone, Ordering::SeqCst);
        *self.inner.client.lock() = fresh.clone();
        Ok(fresh)
    }

    /// The store's session, after a `sync`: the server it is connected to
    /// has caught up with the leader, so a read that starts after another
    /// client's write completed sees it, even on a follower.
    pub(crate) async fn synced_client(&self) -> Result<zk::Client> {
        let client = self.client().await?;
        match timed(self.limit(), "sync", client.sync("/")).await? {
            Ok(()) => Ok(client),
            Err(e) => Err(map_err(e, "sync")),
        }
    }

    /// Runs `reads` on the store's session behind a `sync` sent after
    /// this call began, without waiting a round trip for the sync's reply:
    /// the client sends requests in call order and the server serves one
    /// session's requests in order, so the reads see at least what the
    /// `sync` guarantees (every write completed before it was sent). The
    /// sync's failure wins over the reads' result.
    ///
    /// Concurrent reads share one sync: a read first notes how many syncs
    /// were sent, lets the other ready tasks run once, and then reuses the
    /// last sync if it was sent after that note (and so after the read
    /// began), or sends one of its own. A sync is sent and counted under
    /// one lock, and the reads are sent after that lock, so they follow the
    /// sync on the wire.
    pub(crate) async fn after_sync<T, F, Fut>(&self, reads: F) -> Result<T>
    where
        F: FnOnce(zk::Client) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let client = self.client().await?;
        if self.inner.standalone.load(Ordering::SeqCst) {
            return reads(client).await;
        }
        let ticket = self.inner.syncs.lock().sent;
        tokio::task::yield_now().await;
        let sync = timed(self.limit(), "sync", self.sync_after(&client, ticket));
        // The sync is on its way; the reads are sent when first polled.
        let (synced, out) = futures::join!(sync, reads(client.clone()));
        match synced? {
            Ok(()) => out,
            Err(e) => Err(map_err(e, "sync")),
        }
    }

    /// A sync on `client`'s session sent after the count of syncs was
    /// `ticket`: the last one sent, if it is, else a new one, sent now.
    fn sync_after(&self, client: &zk::Client, ticket: u64) -> SharedSync {
        let session = client.session_id().0;
        let mut syncs = self.inner.syncs.lock();
        if let Some((n, s, sync)) = &syncs.last {
            if *n > ticket && *s == session {
                return sync.clone();
            }
        }
        let c = client.clone();
        let sync = async move { c.sync("/").await }.boxed().shared();
        // The first poll sends the request; its reply comes later.
        let _ = sync.clone().now_or_never();
        syncs.sent += 1;
        let n = syncs.sent;
        syncs.last = Some((n, session, sync.clone()));
        sync
    }

    pub(crate) fn limit(&self) -> Duration {
        self.inner.config.request_timeout
    }

    fn canonical(&self, key: &str) -> Result<String> {
        key::normalize_key(key)
    }

    pub(crate) fn key_dir(&self, canonical: &str) -> String {
        node_path(&key::join(&self.inner.config.root, canonical))
    }

    pub(crate) fn value_path(&self, canonical: &str) -> String {
        child(&self.key_dir(canonical), VALUE)
    }

    pub(crate) fn acls(&self) -> zk::Acls<'static> {
        if self.inner.config.digest.is_some() {
            zk::Acls::creator_all()
        } else {
            zk::Acls::anyone_all()
        }
    }

    /// Creates the container nodes down to `dir`. Nodes above the store's
    /// root are open to anyone (as `mkdir -p` would make them), so that
    /// other users can have roots beside ours; the root and everything
    /// under it carry the store's ACLs.
    pub(crate) async fn make_dirs(&self, client: &zk::Client, dir: &str) -> Result<()> {
        if dir == "/" {
            return Ok(());
        }
        let opts = zk::CreateMode::Container.with_acls(self.acls());
        let open = zk::CreateMode::Container.with_acls(zk::Acls::anyone_all());
        let root = self.inner.root_path.as_str();
        let mut ends: Vec<usize> = dir
            .char_indices()
            .filter(|(i, c)| *c == '/' && *i > 0)
            .map(|(i, _)| i)
            .collect();
        ends.push(dir.len());
        // Try the deepest first: usually only it is missing.
        let mut start = ends.len() - 1;
        loop {
            let path = &dir[..ends[start]];
            let r = timed(
                self.limit(),
                "creating parents",
                client.create(
                    path,
                    b"",
                    if path.len() < root.len() && paths::is_ancestor(path, root) {
                        &open
                    } else {
                        &opts
                    },
                ),
            )
            .await?;
            match r {
                Ok(_) | Err(zk::Error::NodeExists) => {
                    if start + 1 == ends.len() {
                        return Ok(());
                    }
                    start += 1;
                }
                Err(zk::Error::NoNode) if start > 0 => start -= 1,
                Err(e) => return Err(map_err(e, &format!("creating {path}"))),
            }
        }
    }

    async fn read_pair(&self, canonical: &str) -> Result<Option<KvPair>> {
        let path = self.value_path(canonical);
        let limit = self.limit();
        self.after_sync(|client| async move {
            match timed(limit, "get", client.get_data(&path)).await? {
                Ok((data, stat)) => Ok(Some(KvPair::new(canonical, data, stat.mzxid as u64))),
                Err(zk::Error::NoNode) => Ok(None),
                Err(e) => Err(map_err(e, &format!("get {canonical:?}"))),
            }
        })
        .await
    }

    async fn stat_of(
        &self,
        client: &zk::Client,
        path: &str,
        what: &str,
    ) -> Result<Option<zk::Stat>> {
        match timed(self.limit(), what, client.check_stat(path)).await? {
            Ok(s) => Ok(s),
            Err(e) => Err(map_err(e, what)),
        }
    }

    fn check_value(&self, canonical: &str, value: &Bytes, options: &PutOptions) -> Result<Mode> {
        options.validate()?;
        if value.len() > self.inner.config.max_value_size {
            return Err(Error::ValueTooLarge {
                backend: BACKEND,
                key: canonical.to_owned(),
                size: value.len(),
                max: self.inner.config.max_value_size,
            });
        }
        if let Some(ttl) = options.ttl {
            return Ok(Mode::Ttl(ttl.max(MIN_TTL)));
        }
        if let Some(lease) = options.lease {
            let l = self.inner.leases.lock().get(&lease.0).cloned();
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
        let client = self.client().await?;
        let dir = self.key_dir(canonical);
        let vpath = child(&dir, VALUE);
        let what = format!("put {canonical:?}");
        let writer_client = match &mode {
            Mode::Lease(l) => l.session.client().ok_or(Error::LeaseLost {
                backend: BACKEND,
                lease: l.id,
            })?,
            _ => client.clone(),
        };
        let create_opts = match &mode {
            Mode::Plain => zk::CreateMode::Persistent.with_acls(self.acls()),
            Mode::Ttl(ttl) => zk::CreateMode::Persistent
                .with_acls(self.acls())
                .with_ttl(*ttl),
            Mode::Lease(..) => zk::CreateMode::Ephemeral.with_acls(self.acls()),
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
        if expected.is_none() && self.inner.present.lock().contains(canonical) {
            let mut multi = writer_client.new_multi_writer();
            let built = multi
                .add_set_data(&dir, flag, None)
                .and_then(|()| multi.add_delete(&vpath, None))
                .and_then(|()| multi.add_create(&vpath, &value, &create_opts));
            let result = match built {
                Ok(()) => {
                    timed(
                        self.limit(),
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
                    self.inner.present.lock().remove(canonical);
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
                self.after_sync(|c| async move { self.read_nodes(&c, dir, vpath, what).await })
                    .await?
            } else {
                self.read_nodes(&client, &dir, &vpath, &what).await?
            };
            let refused = match (expected, &stat) {
                (Some(None), Some(_)) => Some(Error::KeyExists {
                    backend: BACKEND,
                    key: canonical.to_owned(),
                }),
                (Some(Some(_)), None) => Some(Error::KeyNotFound {
                    backend: BACKEND,
                    key: canonical.to_owned(),
                }),
                (Some(Some(rev)), Some(st)) if st.mzxid as u64 != rev => Some(Error::KeyModified {
                    backend: BACKEND,
                    key: canonical.to_owned(),
                    expected: rev,
                    actual: st.mzxid as u64,
                }),
                _ => None,
            };
            if let Some(err) = refused {
                if synced {
                    return Err(err);
                }
                synced = true;
                continue;
            }
            let Some((dir_data, dir_stat)) = dir_read else {
                self.make_dirs(&client, &dir).await?;
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
                    Ok(()) => timed(
                        self.limit(),
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
                        let now = self
                            .after_sync(|c| async move { self.stat_of(&c, vpath, what).await })
                            .await?;
                        let err = match (exp, now) {
                            (None, Some(_)) => Some(Error::KeyExists {
                                backend: BACKEND,
                                key: canonical.to_owned(),
                            }),
                            (Some(_), None) => Some(Error::KeyNotFound {
                                backend: BACKEND,
                                key: canonical.to_owned(),
                            }),
                            (Some(rev), Some(st)) => Some(Error::KeyModified {
                                backend: BACKEND,
                                key: canonical.to_owned(),
                                expected: rev,
                                actual: st.mzxid as u64,
                            }),
                            // Create-only and still absent: the key's node
                            // was reaped under us; try again.
                            (None, None) => None,
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
                if let Some(client) = l.session.client() {
                    crate::lease::delete_leased(&client, self.limit(), vpath, dir, st.version)
                        .await;
                }
                self.inner.present.lock().remove(canonical);
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
        let results = timed(self.limit(), what, reader.commit())
            .await?
            .map_err(|e| map_err(e, what))?;
        let mut results = results.into_iter();
        let dir_read = match results.next() {
            Some(zk::MultiReadResult::Data { data, stat }) => Some((data, stat)),
            Some(zk::MultiReadResult::Error {
                err: zk::Error::NoNode,
            }) => None,
            Some(zk::MultiReadResult::Error { err }) => return Err(map_err(err, what)),
            other => return Err(map_err(unexpected(other), what)),
        };
        let stat = match results.next() {
            Some(zk::MultiReadResult::Data { stat, .. }) if dir_read.is_some() => Some(stat),
            Some(zk::MultiReadResult::Data { .. }) => None,
            Some(zk::MultiReadResult::Error {
                err: zk::Error::NoNode,
            }) => None,
            Some(zk::MultiReadResult::Error { err }) => return Err(map_err(err, what)),
            other => return Err(map_err(unexpected(other), what)),
        };
        Ok((dir_read, stat))
    }

    /// Notes that `canonical` exists (so the next plain put of it may
    /// replace its value node without reading first). Bounded: past
    /// [`PRESENT_KEYS`] keys the notes start over.
    fn saw_present(&self, canonical: &str) {
        let mut present = self.inner.present.lock();
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

    /// Every key under `prefix` (the prefix key itself excluded), read
    /// level by level: the children of the prefix's node, then, for each
    /// level of nodes, their children and their values together, in
    /// multi-read requests of at most [`LIST_BATCH`] nodes each.
    pub(crate) async fn list_under(
        &self,
        client: &zk::Client,
        prefix: &str,
    ) -> Result<Vec<KvPair>> {
        let start = if prefix.is_empty() {
            self.inner.root_path.clone()
        } else {
            self.key_dir(prefix)
        };
        let limit = self.limit();
        let failed = |e: zk::Error| map_err(e, &format!("list {prefix:?}"));
        let mut level = Vec::new();
        match timed(limit, "list", client.list_children(&start)).await? {
            Ok(names) => sub_nodes(&start, prefix, names, &mut level),
            Err(zk::Error::NoNode) => return Ok(Vec::new()),
            Err(e) => return Err(failed(e)),
        }
        let mut out = Vec::new();
        while !level.is_empty() {
            let replies = futures::future::join_all(level.chunks(LIST_BATCH).map(|nodes| {
                let mut reader = client.new_multi_reader();
                let built = nodes.iter().try_for_each(|(path, _)| {
                    reader.add_get_children(path)?;
                    reader.add_get_data(&child(path, VALUE))
                });
                let commit = built.map(|()| reader.commit());
                async move {
                    match commit {
                        Ok(commit) => timed(limit, "list", commit).await,
                        Err(e) => Ok(Err(e)),
                    }
                }
            }))
            .await;
            let mut next = Vec::new();
            for (nodes, reply) in level.chunks(LIST_BATCH).zip(replies) {
                let results = reply?.map_err(failed)?;
                if results.len() != 2 * nodes.len() {
                    return Err(failed(zk::Error::UnexpectedError(format!(
                        "a multi-read of {} operations answered {}",
                        2 * nodes.len(),
                        results.len()
                    ))));
                }
                let mut results = results.into_iter();
                for (path, key) in nodes {
                    let (Some(children), Some(value)) = (results.next(), results.next()) else {
                        break;
                    };
                    match children {
                        zk::MultiReadResult::Children { children } => {
                            sub_nodes(path, key, children, &mut next)
                        }
                        zk::MultiReadResult::Error {
                            err: zk::Error::NoNode,
                        } => {}
                        zk::MultiReadResult::Error { err } => return Err(failed(err)),
                        other => return Err(failed(unexpected(Some(other)))),
                    }
                    match value {
                        zk::MultiReadResult::Data { data, stat } => {
                            out.push(KvPair::new(key.clone(), data, stat.mzxid as u64))
                        }
                        zk::MultiReadResult::Error {
                            err: zk::Error::NoNode,
                        } => {}
                        zk::MultiReadResult::Error { err } => return Err(failed(err)),
                        other => return Err(failed(unexpected(Some(other)))),
                    }
                }
            }
            level = next;
        }
        out.sort_by(|a, b| a.key.as_bytes().cmp(b.key.as_bytes()));
        Ok(out)
    }

    /// Deletes a value node (at `version`, if given) in one multi-op that
    /// marks its key node as deleted: the key node's `mzxid` is then the
    /// zxid of the delete, which the watch reports as its revision.
    pub(crate) async fn delete_node(
        &self,
        client: &zk::Client,
        dir: &str,
        path: &str,
        version: Option<i32>,
        what: &str,
    ) -> Result<std::result::Result<(), zk::Error>> {
        let mut multi = client.new_multi_writer();
        let built = multi
            .add_set_data(dir, DELETED_FLAG, None)
            .and_then(|()| multi.add_delete(path, version));
        match built {
            Err(e) => Ok(Err(e)),
            Ok(()) => {
                timed(
                    self.limit(),
                    what,
                    multi.commit().map(|r| r.map(|_| ()).map_err(multi_err)),
                )
                .await
            }
        }
    }

    fn full_prefix(&self, prefix: &str) -> Result<String> {
        key::normalize_prefix(prefix)
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

/// Appends to `out` the user key nodes among `names`, the children of the
/// node `path` of key (or prefix) `key`, with their keys.
fn sub_nodes(path: &str, key: &str, names: Vec<String>, out: &mut Vec<(String, String)>) {
    for name in names {
        let Some(seg) = unescape_segment(&name) else {
            continue;
        };
        let sub = if key.is_empty() {
            seg.into_owned()
        } else {
            format!("{key}/{seg}")
        };
        out.push((child(path, &name), sub));
    }
}

/// The error for a multi-read result of the wrong kind, or a missing one.
fn unexpected(result: Option<zk::MultiReadResult>) -> zk::Error {
    zk::Error::UnexpectedError(format!("an unexpected multi-read result: {result:?}"))
}

#[async_trait]
impl Store for ZkStore {
    fn capabilities(&self) -> &Capabilities {
        &self.inner.caps
    }

    fn stats(&self) -> StoreStats {
        let leases = self.inner.leases.lock().len();
        let locks = self.inner.locks.lock().len();
        let open = usize::from(!self.inner.closed.load(Ordering::SeqCst));
        StoreStats::new(
            self.inner.watches.load(Ordering::SeqCst),
            leases,
            locks,
            open + self.inner.pool.len(),
        )
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    async fn get(&self, key: &str) -> Result<Option<KvPair>> {
        self.check()?;
        let canonical = self.canonical(key)?;
        self.read_pair(&canonical).await
    }

    async fn put(&self, key: &str, value: Bytes, options: PutOptions) -> Result<u64> {
        self.check()?;
        let canonical = self.canonical(key)?;
        let mode = self.check_value(&canonical, &value, &options)?;
        self.write(&canonical, value, None, mode).await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        self.check()?;
        let canonical = self.canonical(key)?;
        let client = self.client().await?;
        let path = self.value_path(&canonical);
        let what = format!("delete {canonical:?}");
        self.inner.present.lock().remove(&canonical);
        let dir = self.key_dir(&canonical);
        match self.delete_node(&client, &dir, &path, None, &what).await? {
            Ok(()) => Ok(true),
            Err(zk::Error::NoNode) => Ok(false),
            Err(e) => Err(map_err(e, &what)),
        }
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        self.check()?;
        let canonical = self.canonical(key)?;
        let path = self.value_path(&canonical);
        let what = format!("exists {canonical:?}");
        self.after_sync(
            |client| async move { Ok(self.stat_of(&client, &path, &what).await?.is_some()) },
        )
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<KvPair>> {
        self.check()?;
        let prefix = self.full_prefix(prefix)?;
        self.after_sync(|client| async move { self.list_under(&client, &prefix).await })
            .await
    }

    async fn delete_tree(&self, prefix: &str) -> Result<u64> {
        self.check()?;
        let prefix = self.full_prefix(prefix)?;
        let client = self.synced_client().await?;
        let mut keys: Vec<String> = self
            .list_under(&client, &prefix)
            .await?
            .into_iter()
            .map(|p| p.key)
            .collect();
        if !prefix.is_empty() {
            keys.insert(0, prefix.clone());
        }
        let mut n = 0;
        for k in keys {
            self.inner.present.lock().remove(&k);
            let dir = self.key_dir(&k);
            let path = child(&dir, VALUE);
            let what = format!("delete_tree {prefix:?}: delete {k:?}");
            match self.delete_node(&client, &dir, &path, None, &what).await? {
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
        self.check()?;
        let canonical = self.canonical(key)?;
        let mode = self.check_value(&canonical, &value, &options)?;
        self.write(&canonical, value, Some(expected), mode).await
    }

    async fn atomic_delete(&self, key: &str, expected: u64) -> Result<()> {
        self.check()?;
        let canonical = self.canonical(key)?;
        let client = self.synced_client().await?;
        let path = self.value_path(&canonical);
        let what = format!("atomic_delete {canonical:?}");
        let not_found = || Error::KeyNotFound {
            backend: BACKEND,
            key: canonical.clone(),
        };
        // The key node's version counts every re-creation of the value
        // node (whose own version restarts), so checking both in one
        // multi-op makes a concurrent delete-and-re-create fail this.
        let dir = self.key_dir(&canonical);
        let (dir_stat, st) = futures::try_join!(
            self.stat_of(&client, &dir, &what),
            self.stat_of(&client, &path, &what)
        )?;
        let (Some(dir_stat), Some(st)) = (dir_stat, st) else {
            return Err(not_found());
        };
        if st.mzxid as u64 != expected {
            return Err(Error::KeyModified {
                backend: BACKEND,
                key: canonical.clone(),
                expected,
                actual: st.mzxid as u64,
            });
        }
        let mut multi = client.new_multi_writer();
        let built = multi
            .add_set_data(&dir, DELETED_FLAG, Some(dir_stat.version))
            .and_then(|_| multi.add_delete(&path, Some(st.version)));
        let outcome = match built {
            Err(e) => Err(e),
            Ok(()) => {
                timed(
                    self.limit(),
                    &what,
                    multi.commit().map(|r| r.map(|_| ()).map_err(multi_err)),
                )
                .await?
            }
        };
        match outcome {
            Ok(()) => {
                self.inner.present.lock().remove(&canonical);
                Ok(())
            }
            Err(zk::Error::NoNode | zk::Error::BadVersion) => {
                match self.stat_of(&client, &path, &what).await? {
                    None => Err(not_found()),
                    Some(now) => Err(Error::KeyModified {
                        backend: BACKEND,
                        key: canonical.clone(),
                        expected,
                        actual: now.mzxid as u64,
                    }),
                }
            }
            Err(e) => Err(map_err(e, &what)),
        }
    }

    async fn watch(&self, key: &str, options: WatchOptions) -> Result<WatchStream> {
        self.check()?;
        let canonical = self.canonical(key)?;
        crate::watch::open(self, Filter::Key(canonical), options).await
    }

    async fn watch_tree(&self, prefix: &str, options: WatchOptions) -> Result<WatchStream> {
        self.check()?;
        let prefix = self.full_prefix(prefix)?;
        crate::watch::open(self, Filter::Tree(prefix), options).await
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<Lease> {
        self.check()?;
        anykv_core::check_ttl(ttl)?;
        self.grant(ttl.max(MIN_TTL)).await
    }

    async fn lock(&self, key: &str, options: LockOptions) -> Result<LockGuard> {
        anykv_core::backend::check_lock_options(&options)?;
        anykv_core::waited_for(BACKEND, self.lock_impl(key, options, true).await?)
    }

    async fn try_lock(&self, key: &str, options: LockOptions) -> Result<Option<LockGuard>> {
        anykv_core::backend::check_lock_options(&options)?;
        self.lock_impl(key, options, false).await
    }

    async fn close(&self) -> Result<()> {
        {
            let _gate = self.inner.gate.lock();
            if self.inner.closed.swap(true, Ordering::SeqCst) {
                return Ok(());
            }
        }
        self.inner.closed_tx.send_replace(true);
        self.inner.hub.lock().take();
        let leases: Vec<_> = self.inner.leases.lock().values().cloned().collect();
        for l in leases {
            crate::lease::revoke(&self.inner, &l).await;
        }
        crate::lock::release_all(&self.inner).await;
        self.inner.pool.close_all();
        Ok(())
    }
}
