//! [`RedisStore`]: opening and closing a store, and its key-value
//! operations. Watches, leases and locks are in their own modules.
//!
//! Writes are scripts (`EVALSHA`) that check their conditions (CAS,
//! create-only, the lease) before their first write, so a failed condition
//! writes nothing; `put` and `atomic_put` calls that meet others on their
//! way share one run of the script (see `batch.rs`). Reads take the
//! cheapest path that keeps them exact: `get` is one `GET` of the key's
//! record (its header carries the revision and the deadline), and only a
//! key with a TTL deadline (whose liveness needs the server's clock) is
//! read again by the read script; `list` is one script (`ZRANGEBYLEX` and
//! an `MGET` per 256 keys, as of one instant) that reads the clock only if a
//! listed key has a deadline.

use std::any::Any;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anykv_core::backend::{check_write, compare_outcome, waited_for, WatchTarget};
use anykv_core::{
    async_trait, Bytes, Capabilities, Error, KvPair, Lease, ListOptions, LockGuard, LockOptions,
    PutOptions, Result, Store, StoreStats, StoreStatus, Txn, TxnResponse, WatchOptions,
    WatchStream,
};
use redis::Value;

use crate::batch::{self, PutWrite};
use crate::client::{Durability, RedisClient, Written};
use crate::config::{RedisConfig, Topology, BACKEND, MAX_TTL, MIN_TTL};
use crate::layout::{KeyName, Layout};
use crate::lock::Wait;
use crate::reply::{
    as_array, as_bytes, as_u64, code_pair, into_bytes, parse_state, record_value, unexpected_reply,
};
use crate::state::StoreState;
use crate::{expiry, lease, lock, recovery, scripts, status, txn, watch};

/// A handle on a Redis-backed store. Cheap to clone; clones are the same
/// client. See the [crate documentation](crate).
#[derive(Clone)]
pub struct RedisStore {
    handle: Arc<StoreHandle>,
}

/// What the clones of one store share; dropping the last one closes the
/// store in the background.
struct StoreHandle {
    state: Arc<StoreState>,
    capabilities: Capabilities,
}

impl Drop for StoreHandle {
    fn drop(&mut self) {
        let state = self.state.clone();
        if state.is_closed() {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(async move { close(&state).await });
            }
            Err(_) => state.stop_locally(),
        }
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.handle.state;
        f.debug_struct("RedisStore")
            .field("config", &s.config)
            .field("closed", &s.is_closed())
            .finish()
    }
}

/// Closes a store: revokes its leases (their keys vanish), releases its
/// locks, ends its watches and background tasks. Only the first call does
/// anything.
async fn close(state: &StoreState) {
    if !state.client.closed().close() {
        return;
    }
    state.shutdown.send_replace(true);
    let leases: Vec<u64> = state.leases.lock().keys().copied().collect();
    for id in leases {
        let _ = lease::revoke(state, id).await;
    }
    let locks: Vec<u64> = state.locks.lock().keys().copied().collect();
    for id in locks {
        let _ = lock::release(state, id).await;
    }
    state.stop_locally();
}

/// Warns when the server may evict the namespace's keys. `CONFIG` is
/// optional: a user without it gets a debug message only.
async fn warn_if_evicting(client: &RedisClient) {
    if client.is_cluster() {
        // CONFIG goes to every node of a Cluster; not worth it for a
        // warning.
        return;
    }
    let mut cmd = redis::cmd("CONFIG");
    cmd.arg("GET").arg("maxmemory-policy");
    match client
        .command_once(&cmd, "CONFIG GET maxmemory-policy")
        .await
    {
        Ok(v) => {
            let policy = match v {
                Value::Map(m) => m.into_iter().next().and_then(|(_, v)| as_bytes(&v)),
                other => as_array(other).and_then(|a| a.get(1).and_then(as_bytes)),
            };
            if let Some(p) = policy {
                let p = String::from_utf8_lossy(&p);
                if p != "noeviction" {
                    tracing::warn!(target: "anykv_redis",
                        "anykv-redis: the server's maxmemory-policy is {p:?}; evicted keys \
                         lose data and revisions, use noeviction"
                    );
                }
            }
        }
        Err(e) => {
            tracing::debug!(target: "anykv_redis", "anykv-redis: cannot check maxmemory-policy: {e}")
        }
    }
}

/// A store-unique id among every store of every process: lock tokens and
/// epoch candidates start with it.
fn new_instance_id() -> String {
    static STORES: AtomicU64 = AtomicU64::new(1);
    format!(
        "{}-{}-{}",
        std::process::id(),
        STORES.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    )
}

/// What a write requires of the key's current revision.
#[derive(Debug, Clone, Copy)]
enum Condition {
    /// Nothing: create or replace (`put`).
    None,
    /// Absent (create-only `atomic_put`).
    Absent,
    /// At this revision (compare-and-swap).
    Revision(u64),
}

/// The error of a write or delete that a script refused with `code`
/// (`1` exists, `2` modified with `n` the actual revision, `3` not found)
/// when it expected `expected`: the core's compare-and-swap outcome.
fn refusal(canonical: &str, expected: Option<u64>, code: i64, n: i64, what: &str) -> Error {
    let current = match code {
        1 | 2 => Some(u64::try_from(n).unwrap_or(0)),
        3 => None,
        _ => return unexpected_reply(what),
    };
    match compare_outcome(BACKEND, canonical, expected, current) {
        Err(e) => e,
        Ok(()) => unexpected_reply(what),
    }
}

impl RedisStore {
    /// Opens a store as configured: connects, checks the credentials and
    /// the namespace's keys are usable, and starts the store's watch
    /// reader and expiry sweep.
    pub async fn open(config: RedisConfig) -> Result<Self> {
        let root = config.validate()?;
        let layout = Layout::new(&config.namespace, root);
        let client = RedisClient::connect(&config, &layout).await?;
        let instance_id = new_instance_id();
        // The reader starts at the current revision of the namespace's
        // epoch (stored now if the namespace has none); this also proves
        // the credentials and the ACL allow our keys, and the XREAD that
        // the reader may read the change stream. It runs the failover
        // check, which needs `INFO`: one server whose ACL forbids it runs
        // without the check; Sentinel and Cluster deployments need it.
        let v = match client
            .read_script(&scripts::STATE, &[instance_id.as_bytes()], "open")
            .await
        {
            Err(e) if e.kind() == anykv_core::ErrorKind::PermissionDenied => {
                // Is it INFO? Then the same call without the check works.
                client.stop_checking_failovers();
                let Ok(v) = client
                    .read_script(&scripts::STATE, &[instance_id.as_bytes()], "open")
                    .await
                else {
                    return Err(e);
                };
                if config.topology != Topology::Single {
                    return Err(Error::PermissionDenied {
                        backend: BACKEND,
                        message: format!(
                            "open: the failover check needs the INFO command, which this \
                             user may not run ({e})"
                        ),
                    });
                }
                tracing::warn!(target: "anykv_redis",
                    "anykv-redis: this user may not run INFO, so writes do not check for a \
                     server that lost history (restarted without its last writes); \
                     revisions may be handed out again after such a restart"
                );
                v
            }
            other => other?,
        };
        let (epoch, revision) = parse_state(v, "open")?;
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(1)
            .arg("STREAMS")
            .arg(layout.change_log())
            .arg(format!("{revision}-0"));
        client
            .command_once(&cmd, "open (XREAD of the change stream)")
            .await?;
        warn_if_evicting(&client).await;
        let mut capabilities = Capabilities::new(BACKEND);
        capabilities.min_ttl = MIN_TTL;
        capabilities.max_value_size = config.max_value_size;
        capabilities.transactions = true;
        capabilities.max_txn_ops = anykv_core::DEFAULT_MAX_TXN_OPS;
        let state = Arc::new(StoreState::new(
            config,
            layout,
            client,
            instance_id,
            epoch,
            revision,
        ));
        tokio::spawn(watch::run_reader(state.clone()));
        tokio::spawn(expiry::run_sweep(state.clone()));
        tokio::spawn(recovery::run_recheck(state.clone()));
        Ok(RedisStore {
            handle: Arc::new(StoreHandle {
                state,
                capabilities,
            }),
        })
    }

    /// Opens a `redis://`, `rediss://`, `redis+sentinel://`,
    /// `rediss+sentinel://`, `redis+cluster://` or `rediss+cluster://` URL
    /// (see the crate documentation): everything `anykv::open` accepts for
    /// these schemes, parsed by [`anykv_core::parse_url`].
    pub async fn open_url(url: &str) -> Result<Self> {
        let parsed = anykv_core::parse_url(url)?;
        Self::open(RedisConfig::from_url(&parsed)?).await
    }

    /// The store's configuration (its `Debug` hides the password).
    pub fn config(&self) -> &RedisConfig {
        &self.handle.state.config
    }

    /// Trims the change stream so that watches can no longer resume from
    /// `revision` or before (`XTRIM {ns}:log MINID revision+1`). The
    /// conformance suite's compact hook.
    pub async fn compact(&self, revision: u64) -> Result<()> {
        let s = &self.handle.state;
        s.ensure_open()?;
        let mut cmd = redis::cmd("XTRIM");
        cmd.arg(s.layout.change_log())
            .arg("MINID")
            .arg(format!("{}-0", revision.saturating_add(1)));
        s.client.command_once(&cmd, "compact").await?;
        Ok(())
    }

    fn state(&self) -> &Arc<StoreState> {
        &self.handle.state
    }

    /// `put` and `atomic_put`: one script that checks `condition` (and the
    /// lease) before it writes anything.
    async fn write(
        &self,
        key: &str,
        value: Bytes,
        condition: Condition,
        options: PutOptions,
    ) -> Result<u64> {
        let s = self.state();
        s.ensure_open()?;
        let name = s.layout.key(key)?;
        check_write(
            BACKEND,
            &name.canonical,
            value.len(),
            s.config.max_value_size,
            &options,
        )?;
        let (mode, expected) = match condition {
            Condition::None => ("put", None),
            Condition::Absent => ("create", None),
            Condition::Revision(r) => ("cas", Some(r)),
        };
        let ttl_ms = options
            .ttl
            .map(|t| t.clamp(MIN_TTL, MAX_TTL).as_millis() as u64)
            .unwrap_or(0);
        let KeyName { full, canonical } = name;
        let (value, replicas) = batch::put(
            &s.batcher,
            PutWrite {
                full,
                canonical: canonical.clone(),
                value,
                mode,
                expected: expected.unwrap_or(0),
                ttl_ms,
                lease: options.lease.map(|l| l.0).unwrap_or(0),
            },
        )
        .await?;
        let canonical = &canonical;
        match code_pair(value, "put")? {
            (0, n) => {
                replicas.check(|| format!("put {canonical:?}"))?;
                u64::try_from(n).map_err(|_| unexpected_reply("put"))
            }
            (4, _) => Err(Error::LeaseLost {
                backend: BACKEND,
                lease: options.lease.map(|l| l.0).unwrap_or(0),
            }),
            (code, n) => Err(refusal(canonical, expected, code, n, "put")),
        }
    }

    /// Reads pairs: one key, or a range of the index. Returns the store's
    /// revision (0 unless `with_revision`) and the pairs, as of one
    /// instant.
    async fn read_pairs(
        &self,
        single: &str,
        min: &str,
        max: &str,
        with_revision: bool,
        what: &str,
    ) -> Result<(u64, Vec<KvPair>)> {
        read_pairs(self.state(), single, min, max, with_revision, what).await
    }

    /// `get`: one `GET` of the key's record. Only a key with a deadline
    /// needs the server's clock to know whether it is still live; that
    /// one is read again with the read script (one instant, `TIME`).
    async fn get_pair(&self, name: KeyName) -> Result<Option<KvPair>> {
        let s = self.state();
        let mut cmd = redis::cmd("GET");
        cmd.arg(s.layout.record(&name.full));
        let record = match s.client.read_command(&cmd, "get").await? {
            Value::Nil => return Ok(None),
            Value::BulkString(b) => b,
            _ => return Err(unexpected_reply("get")),
        };
        let (header, value) = record_value(record).ok_or_else(|| unexpected_reply("get"))?;
        if header.has_deadline {
            let (_, mut pairs) = self.read_pairs(&name.full, "", "", false, "get").await?;
            return Ok(pairs.pop());
        }
        Ok(Some(KvPair {
            key: name.canonical,
            value,
            revision: header.revision,
        }))
    }
}

/// A page of the index range `min`..`max`: at most `limit` live keys,
/// values left out with `keys_only` (the read script reads only the page).
async fn read_page(
    s: &StoreState,
    min: &str,
    max: &str,
    limit: usize,
    keys_only: bool,
) -> Result<Vec<KvPair>> {
    let limit = limit.to_string();
    let keys_only: &[u8] = if keys_only { b"1" } else { b"0" };
    let v = s
        .client
        .read_script(
            &scripts::READ,
            &[
                b"".as_slice(),
                min.as_bytes(),
                max.as_bytes(),
                b"0",
                limit.as_bytes(),
                keys_only,
            ],
            "list",
        )
        .await?;
    let a = as_array(v).ok_or_else(|| unexpected_reply("list"))?;
    records(s, a.into_iter().skip(1), "list")
}

/// The pairs of the read script's `{key, record, ...}`.
fn records(
    s: &StoreState,
    mut it: impl ExactSizeIterator<Item = Value>,
    what: &str,
) -> Result<Vec<KvPair>> {
    let mut pairs = Vec::with_capacity(it.len() / 2);
    while let (Some(k), Some(record)) = (it.next(), it.next()) {
        let k = into_bytes(k)
            .and_then(|k| String::from_utf8(k).ok())
            .ok_or_else(|| unexpected_reply(what))?;
        let (header, value) = into_bytes(record)
            .and_then(record_value)
            .ok_or_else(|| unexpected_reply(what))?;
        pairs.push(KvPair {
            key: s.layout.relative_owned(k),
            value,
            revision: header.revision,
        });
    }
    Ok(pairs)
}

/// The read script: one key (`single`), or the index range `min`..`max`.
async fn read_pairs(
    s: &StoreState,
    single: &str,
    min: &str,
    max: &str,
    with_revision: bool,
    what: &str,
) -> Result<(u64, Vec<KvPair>)> {
    let flag: &[u8] = if with_revision { b"1" } else { b"0" };
    let v = s
        .client
        .read_script(
            &scripts::READ,
            &[single.as_bytes(), min.as_bytes(), max.as_bytes(), flag],
            what,
        )
        .await?;
    let a = as_array(v).ok_or_else(|| unexpected_reply(what))?;
    let mut it = a.into_iter();
    let rev = it
        .next()
        .as_ref()
        .and_then(as_u64)
        .ok_or_else(|| unexpected_reply(what))?;
    Ok((rev, records(s, it, what)?))
}

#[async_trait]
impl Store for RedisStore {
    fn capabilities(&self) -> &Capabilities {
        &self.handle.capabilities
    }

    fn stats(&self) -> StoreStats {
        let s = self.state();
        let watches = s.feed.lock().watches.len();
        let leases = s.leases.lock().len();
        let locks = s.locks.lock().len();
        let connections = if s.is_closed() {
            0
        } else {
            s.client.connections() + usize::from(s.reader_connected.load(Ordering::SeqCst))
        };
        StoreStats::new(watches, leases, locks, connections)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    async fn get(&self, key: &str) -> Result<Option<KvPair>> {
        let s = self.state();
        s.ensure_open()?;
        let name = s.layout.key(key)?;
        self.get_pair(name).await
    }

    async fn put(&self, key: &str, value: Bytes, options: PutOptions) -> Result<u64> {
        self.write(key, value, Condition::None, options).await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        let s = self.state();
        s.ensure_open()?;
        let name = s.layout.key(key)?;
        let canonical = &name.canonical;
        let v = s
            .client
            .write_script(
                &scripts::DELETE,
                &[name.full.as_bytes(), b"plain", b"0"],
                || format!("delete {canonical:?}"),
                Durability::Replicated,
            )
            .await?
            .durable(|| format!("delete {canonical:?}"))?;
        let (_, n) = code_pair(v, "delete")?;
        Ok(n == 1)
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.get(key).await?.is_some())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<KvPair>> {
        let s = self.state();
        s.ensure_open()?;
        let tree = s.layout.tree(prefix)?;
        let (_, pairs) = self
            .read_pairs("", &tree.min, &tree.max, false, "list")
            .await?;
        Ok(pairs)
    }

    async fn list_with(&self, prefix: &str, options: ListOptions) -> Result<Vec<KvPair>> {
        let s = self.state();
        s.ensure_open()?;
        let after = options.validate()?;
        let tree = s.layout.tree(prefix)?;
        let Some(limit) = options.limit else {
            let pairs = read_page(s, &tree.min, &tree.max, 0, options.keys_only).await?;
            return options.apply(pairs);
        };
        // After `after` when that is inside the tree's range.
        let min = match after {
            Some(a) => {
                let full = s.layout.key(&a)?.full;
                let inclusive_start = tree.min.get(1..).unwrap_or("");
                if tree.min == "-" || full.as_str() >= inclusive_start {
                    format!("({full}")
                } else {
                    tree.min.clone()
                }
            }
            None => tree.min.clone(),
        };
        read_page(s, &min, &tree.max, limit, options.keys_only).await
    }

    async fn delete_tree(&self, prefix: &str) -> Result<u64> {
        let s = self.state();
        s.ensure_open()?;
        let tree = s.layout.tree(prefix)?;
        let key = if tree.names_a_key {
            tree.full.as_str()
        } else {
            ""
        };
        let v = s
            .client
            .write_script(
                &scripts::DELETE_TREE,
                &[key.as_bytes(), tree.min.as_bytes(), tree.max.as_bytes()],
                "delete_tree",
                Durability::Replicated,
            )
            .await?
            .durable("delete_tree")?;
        as_u64(&v).ok_or_else(|| unexpected_reply("delete_tree"))
    }

    async fn atomic_put(
        &self,
        key: &str,
        value: Bytes,
        expected: Option<u64>,
        options: PutOptions,
    ) -> Result<u64> {
        let condition = match expected {
            None => Condition::Absent,
            Some(r) => Condition::Revision(r),
        };
        self.write(key, value, condition, options).await
    }

    async fn atomic_delete(&self, key: &str, expected: u64) -> Result<()> {
        let s = self.state();
        s.ensure_open()?;
        let name = s.layout.key(key)?;
        let canonical = &name.canonical;
        let Written { value, replicas } = s
            .client
            .write_script(
                &scripts::DELETE,
                &[
                    name.full.as_bytes(),
                    b"cas",
                    expected.to_string().as_bytes(),
                ],
                || format!("atomic_delete {canonical:?}"),
                Durability::Replicated,
            )
            .await?;
        match code_pair(value, "atomic_delete")? {
            (0, _) => replicas.check(|| format!("atomic_delete {canonical:?}")),
            (code @ (2 | 3), n) => {
                Err(refusal(canonical, Some(expected), code, n, "atomic_delete"))
            }
            _ => Err(unexpected_reply("atomic_delete")),
        }
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        txn::run(self.state(), &self.handle.capabilities, txn).await
    }

    async fn watch(&self, key: &str, options: WatchOptions) -> Result<WatchStream> {
        let s = self.state();
        s.ensure_open()?;
        let name = s.layout.key(key)?;
        let full = name.full.clone();
        watch::open_watch(s, WatchTarget::Key(name.full), options, || async move {
            read_pairs(s, &full, "", "", true, "watch").await
        })
        .await
    }

    async fn watch_tree(&self, prefix: &str, options: WatchOptions) -> Result<WatchStream> {
        let s = self.state();
        s.ensure_open()?;
        let tree = s.layout.tree(prefix)?;
        let (min, max) = (tree.min, tree.max);
        watch::open_watch(s, WatchTarget::Tree(tree.full), options, || async move {
            read_pairs(s, "", &min, &max, true, "watch").await
        })
        .await
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<Lease> {
        lease::grant(self.state(), ttl).await
    }

    async fn lock(&self, key: &str, options: LockOptions) -> Result<LockGuard> {
        let guard = lock::acquire(self.state(), key, options, Wait::UntilFree).await?;
        waited_for(BACKEND, guard)
    }

    async fn try_lock(&self, key: &str, options: LockOptions) -> Result<Option<LockGuard>> {
        lock::acquire(self.state(), key, options, Wait::Never).await
    }

    async fn status(&self) -> Result<StoreStatus> {
        status::status(self.state(), || self.stats()).await
    }

    async fn close(&self) -> Result<()> {
        close(self.state()).await;
        Ok(())
    }
}

/// Trims the change stream of the Redis store behind a type-erased handle
/// (see [`RedisStore::compact`]); `InvalidArgument` for any other store.
/// The conformance suite's compact hook.
pub async fn compact(store: &dyn Store, revision: u64) -> Result<()> {
    store
        .as_any()
        .downcast_ref::<RedisStore>()
        .ok_or_else(|| Error::InvalidArgument(format!("{store:?} is not a Redis store")))?
        .compact(revision)
        .await
}
