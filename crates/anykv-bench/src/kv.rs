//! The two sides of every comparison behind one small trait, [`Kv`]: anykv
//! (any backend, through `Arc<dyn Store>`) and the raw clients a careful
//! user would otherwise use (etcd-client, redis, zookeeper-client, and a
//! `BTreeMap` behind a `tokio::sync::RwLock` for the memory backend).
//!
//! Every side gets keys relative to a namespace of its own, so the anykv
//! side and the raw side never see each other's data.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anykv::{Bytes, LockOptions, PutOptions, Store, WatchEvent, WatchOptions};
use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use zookeeper_client as zk;

use crate::BenchError;

/// The result type of the benchmark.
pub type Result<T> = std::result::Result<T, BenchError>;

/// A stream that yields one item per change of the watched key, after the
/// watch is established.
pub type ChangeStream = BoxStream<'static, Result<()>>;

/// One side of a comparison: the operations the workloads need, done the
/// way a careful user of that client would do them.
#[async_trait]
pub trait Kv: Send + Sync + 'static {
    /// A short name for tables ("anykv", "etcd-client", ...).
    fn label(&self) -> &'static str;

    /// Creates or replaces `key`.
    async fn put(&self, key: &str, value: &Bytes) -> Result<()>;

    /// The value of `key`, if present.
    async fn get(&self, key: &str) -> Result<Option<Bytes>>;

    /// Deletes `key` (absent is fine).
    async fn delete(&self, key: &str) -> Result<()>;

    /// Creates `key` for compare-and-swap and returns its version.
    async fn cas_create(&self, key: &str, value: &Bytes) -> Result<u64> {
        self.put(key, value).await?;
        self.version(key).await
    }

    /// The current version (revision) of `key`, for compare-and-swap.
    async fn version(&self, key: &str) -> Result<u64>;

    /// Replaces `key` only if its version is `expected`; returns the new
    /// version, or an error if the swap failed.
    async fn cas(&self, key: &str, value: &Bytes, expected: u64) -> Result<u64>;

    /// Writes a key that [`Kv::list`] must find (the raw Redis side also
    /// indexes it).
    async fn put_listed(&self, key: &str, value: &Bytes) -> Result<()> {
        self.put(key, value).await
    }

    /// Deletes a key written with [`Kv::put_listed`].
    async fn delete_listed(&self, key: &str) -> Result<()> {
        self.delete(key).await
    }

    /// Every key and value under `prefix/`; returns how many.
    async fn list(&self, prefix: &str) -> Result<usize>;

    /// Acquires the lock `name` (waiting as long as it takes), then
    /// releases it. `task` tells the contenders of one process apart.
    async fn lock_release(&self, name: &str, task: usize) -> Result<()>;

    /// `n` watchers of `key`, each established before this returns.
    async fn watchers(&self, key: &str, n: usize) -> Result<Vec<ChangeStream>>;

    /// Removes what this side wrote (keys, lock bookkeeping, settings).
    async fn cleanup(&self) -> Result<()>;
}

fn err(msg: impl Into<String>) -> BenchError {
    BenchError::new(msg)
}

// ---------------------------------------------------------------- anykv

/// The anykv side: one `Arc<dyn Store>` shared by every task.
pub struct AnykvKv {
    store: Arc<dyn Store>,
    prefix: String,
}

impl AnykvKv {
    /// The anykv side on `store`, with every key under `prefix/`.
    pub fn new(store: Arc<dyn Store>, prefix: impl Into<String>) -> Self {
        AnykvKv {
            store,
            prefix: prefix.into(),
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    fn k(&self, key: &str) -> String {
        format!("{}/{key}", self.prefix)
    }
}

#[async_trait]
impl Kv for AnykvKv {
    fn label(&self) -> &'static str {
        "anykv"
    }

    async fn put(&self, key: &str, value: &Bytes) -> Result<()> {
        self.store
            .put(&self.k(key), value.clone(), PutOptions::new())
            .await?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        Ok(self.store.get(&self.k(key)).await?.map(|p| p.value))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.store.delete(&self.k(key)).await?;
        Ok(())
    }

    async fn version(&self, key: &str) -> Result<u64> {
        match self.store.get(&self.k(key)).await? {
            Some(p) => Ok(p.revision),
            None => Err(err(format!("anykv: {key} is missing"))),
        }
    }

    async fn cas(&self, key: &str, value: &Bytes, expected: u64) -> Result<u64> {
        Ok(self
            .store
            .atomic_put(
                &self.k(key),
                value.clone(),
                Some(expected),
                PutOptions::new(),
            )
            .await?)
    }

    async fn list(&self, prefix: &str) -> Result<usize> {
        Ok(self.store.list(&self.k(prefix)).await?.len())
    }

    async fn lock_release(&self, name: &str, _task: usize) -> Result<()> {
        let guard = self.store.lock(&self.k(name), LockOptions::new()).await?;
        guard.release().await?;
        Ok(())
    }

    async fn watchers(&self, key: &str, n: usize) -> Result<Vec<ChangeStream>> {
        let full = self.k(key);
        let store = self.store.clone();
        let opened: Vec<Result<ChangeStream>> = stream::iter(0..n)
            .map(|_| {
                let store = store.clone();
                let full = full.clone();
                async move { anykv_watch(store, &full).await }
            })
            .buffer_unordered(32)
            .collect()
            .await;
        opened.into_iter().collect()
    }

    async fn cleanup(&self) -> Result<()> {
        self.store.delete_tree(&self.prefix).await?;
        Ok(())
    }
}

/// An anykv watch of one key, past its initial state and `Synced`.
pub(crate) async fn anykv_watch(store: Arc<dyn Store>, key: &str) -> Result<ChangeStream> {
    let mut s = store.watch(key, WatchOptions::new()).await?;
    loop {
        match s.next().await {
            Some(Ok(WatchEvent::Synced { .. })) => break,
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => return Err(err("anykv: the watch ended before Synced")),
        }
    }
    Ok(s.map(|e| e.map(|_| ()).map_err(BenchError::from)).boxed())
}

// ---------------------------------------------------------------- memory

struct MemState {
    map: BTreeMap<String, (Bytes, u64)>,
    revision: u64,
}

/// The memory backend's baseline: a `BTreeMap` behind a
/// `tokio::sync::RwLock`, a `broadcast` channel for watchers, and a
/// `tokio::sync::Mutex` per lock name.
pub struct MemoryBaseline {
    prefix: String,
    state: tokio::sync::RwLock<MemState>,
    changes: tokio::sync::broadcast::Sender<Arc<str>>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl MemoryBaseline {
    /// An empty map; every key is stored under `prefix/`, as the anykv
    /// side stores its keys under a prefix of its own.
    pub fn new(prefix: impl Into<String>) -> Self {
        MemoryBaseline {
            prefix: prefix.into(),
            state: tokio::sync::RwLock::new(MemState {
                map: BTreeMap::new(),
                revision: 0,
            }),
            changes: tokio::sync::broadcast::channel(4096).0,
            locks: Mutex::new(HashMap::new()),
        }
    }

    fn k(&self, key: &str) -> String {
        format!("{}/{key}", self.prefix)
    }

    fn write(&self, st: &mut MemState, key: String, value: &Bytes) -> u64 {
        st.revision += 1;
        let rev = st.revision;
        if self.changes.receiver_count() > 0 {
            let _ = self.changes.send(Arc::from(key.as_str()));
        }
        st.map.insert(key, (value.clone(), rev));
        rev
    }
}

#[async_trait]
impl Kv for MemoryBaseline {
    fn label(&self) -> &'static str {
        "BTreeMap+RwLock"
    }

    async fn put(&self, key: &str, value: &Bytes) -> Result<()> {
        let key = self.k(key);
        let mut st = self.state.write().await;
        self.write(&mut st, key, value);
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let key = self.k(key);
        Ok(self
            .state
            .read()
            .await
            .map
            .get(&key)
            .map(|(v, _)| v.clone()))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let key = self.k(key);
        let mut st = self.state.write().await;
        st.revision += 1;
        st.map.remove(&key);
        Ok(())
    }

    async fn version(&self, key: &str) -> Result<u64> {
        match self.state.read().await.map.get(&self.k(key)) {
            Some((_, r)) => Ok(*r),
            None => Err(err(format!("baseline: {key} is missing"))),
        }
    }

    async fn cas(&self, key: &str, value: &Bytes, expected: u64) -> Result<u64> {
        let full = self.k(key);
        let mut st = self.state.write().await;
        match st.map.get(&full) {
            Some((_, r)) if *r == expected => Ok(self.write(&mut st, full, value)),
            _ => Err(err(format!("baseline: compare-and-swap of {key} failed"))),
        }
    }

    async fn list(&self, prefix: &str) -> Result<usize> {
        let start = format!("{}/", self.k(prefix));
        let end = format!("{}0", self.k(prefix));
        let st = self.state.read().await;
        let pairs: Vec<(String, Bytes, u64)> = st
            .map
            .range(start..end)
            .map(|(k, (v, r))| (k[self.prefix.len() + 1..].to_owned(), v.clone(), *r))
            .collect();
        Ok(pairs.len())
    }

    async fn lock_release(&self, name: &str, _task: usize) -> Result<()> {
        let lock = {
            let mut locks = self.locks.lock().map_err(|_| err("poisoned"))?;
            locks.entry(self.k(name)).or_default().clone()
        };
        let guard = lock.lock().await;
        drop(guard);
        Ok(())
    }

    async fn watchers(&self, key: &str, n: usize) -> Result<Vec<ChangeStream>> {
        let key: Arc<str> = Arc::from(self.k(key).as_str());
        Ok((0..n)
            .map(|_| {
                let rx = self.changes.subscribe();
                let key = key.clone();
                stream::unfold(rx, move |mut rx| {
                    let key = key.clone();
                    async move {
                        loop {
                            match rx.recv().await {
                                Ok(k) if k == key => return Some((Ok(()), rx)),
                                Ok(_) => {}
                                Err(e) => {
                                    return Some((Err(err(format!("baseline watch: {e}"))), rx))
                                }
                            }
                        }
                    }
                })
                .boxed()
            })
            .collect())
    }

    async fn cleanup(&self) -> Result<()> {
        let mut st = self.state.write().await;
        st.map.clear();
        Ok(())
    }
}

// ---------------------------------------------------------------- etcd

/// The raw etcd side: one `etcd_client::Client` shared by every task; keys
/// under `{root}/{namespace}/`. CAS is a transaction comparing the mod
/// revision; list is a range get; a lock is etcd's Lock API with one lease
/// per contender, granted once (as a long-lived session would); a watcher
/// is one etcd watch stream each.
pub struct EtcdRaw {
    client: etcd_client::Client,
    prefix: String,
    leases: tokio::sync::Mutex<HashMap<usize, i64>>,
}

impl EtcdRaw {
    /// Connects to `endpoint` (`host:port`) with optional credentials.
    pub async fn connect(
        endpoint: &str,
        credentials: Option<(String, String)>,
        prefix: String,
    ) -> Result<Self> {
        let mut options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(5));
        if let Some((user, password)) = credentials {
            options = options.with_user(user, password);
        }
        let client = etcd_client::Client::connect([format!("http://{endpoint}")], Some(options))
            .await
            .map_err(|e| err(format!("etcd-client: cannot connect to {endpoint}: {e}")))?;
        Ok(EtcdRaw {
            client,
            prefix,
            leases: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    fn k(&self, key: &str) -> String {
        format!("{}/{key}", self.prefix)
    }

    async fn lease_of(&self, task: usize) -> Result<i64> {
        let mut leases = self.leases.lock().await;
        if let Some(id) = leases.get(&task) {
            return Ok(*id);
        }
        let id = self.client.lease_client().grant(3600, None).await?.id();
        leases.insert(task, id);
        Ok(id)
    }
}

#[async_trait]
impl Kv for EtcdRaw {
    fn label(&self) -> &'static str {
        "etcd-client"
    }

    async fn put(&self, key: &str, value: &Bytes) -> Result<()> {
        self.client
            .kv_client()
            .put(self.k(key), value.to_vec(), None)
            .await?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let mut resp = self.client.kv_client().get(self.k(key), None).await?;
        Ok(resp
            .take_kvs()
            .into_iter()
            .next()
            .map(|kv| Bytes::from(kv.into_key_value().1)))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.client.kv_client().delete(self.k(key), None).await?;
        Ok(())
    }

    async fn version(&self, key: &str) -> Result<u64> {
        let resp = self.client.kv_client().get(self.k(key), None).await?;
        match resp.kvs().first() {
            Some(kv) => Ok(kv.mod_revision() as u64),
            None => Err(err(format!("etcd-client: {key} is missing"))),
        }
    }

    async fn cas(&self, key: &str, value: &Bytes, expected: u64) -> Result<u64> {
        use etcd_client::{Compare, CompareOp, Txn, TxnOp};
        let full = self.k(key);
        let txn = Txn::new()
            .when([Compare::mod_revision(
                full.clone(),
                CompareOp::Equal,
                expected as i64,
            )])
            .and_then([TxnOp::put(full, value.to_vec(), None)]);
        let resp = self.client.kv_client().txn(txn).await?;
        if !resp.succeeded() {
            return Err(err(format!(
                "etcd-client: compare-and-swap of {key} failed"
            )));
        }
        Ok(resp.header().map(|h| h.revision() as u64).unwrap_or(0))
    }

    async fn list(&self, prefix: &str) -> Result<usize> {
        let start = format!("{}/", self.k(prefix));
        let end = format!("{}0", self.k(prefix));
        let mut resp = self
            .client
            .kv_client()
            .get(start, Some(etcd_client::GetOptions::new().with_range(end)))
            .await?;
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = resp
            .take_kvs()
            .into_iter()
            .map(|kv| kv.into_key_value())
            .collect();
        Ok(pairs.len())
    }

    async fn lock_release(&self, name: &str, task: usize) -> Result<()> {
        let lease = self.lease_of(task).await?;
        let resp = self
            .client
            .lock_client()
            .lock(
                self.k(&format!("@locks/{name}")),
                Some(etcd_client::LockOptions::new().with_lease(lease)),
            )
            .await?;
        self.client
            .lock_client()
            .unlock(resp.key().to_vec())
            .await?;
        Ok(())
    }

    async fn watchers(&self, key: &str, n: usize) -> Result<Vec<ChangeStream>> {
        let full = self.k(key);
        let client = self.client.clone();
        let opened: Vec<Result<ChangeStream>> = stream::iter(0..n)
            .map(|_| {
                let client = client.clone();
                let full = full.clone();
                async move {
                    let mut s = client.watch_client().watch(full, None).await?;
                    // The first response confirms the watch.
                    match s.message().await? {
                        Some(r) if r.created() => {}
                        _ => return Err(err("etcd-client: the watch was not created")),
                    }
                    let st: ChangeStream =
                        stream::unfold((s, 0usize), |(mut s, mut pending)| async move {
                            loop {
                                if pending > 0 {
                                    pending -= 1;
                                    return Some((Ok(()), (s, pending)));
                                }
                                match s.message().await {
                                    Ok(Some(r)) => pending = r.events().len(),
                                    Ok(None) => return None,
                                    Err(e) => return Some((Err(e.into()), (s, 0))),
                                }
                            }
                        })
                        .boxed();
                    Ok(st)
                }
            })
            .buffer_unordered(32)
            .collect()
            .await;
        opened.into_iter().collect()
    }

    async fn cleanup(&self) -> Result<()> {
        let start = format!("{}/", self.prefix);
        let end = format!("{}0", self.prefix);
        self.client
            .kv_client()
            .delete(
                start,
                Some(etcd_client::DeleteOptions::new().with_range(end)),
            )
            .await?;
        let leases: Vec<i64> = self.leases.lock().await.drain().map(|(_, v)| v).collect();
        for id in leases {
            let _ = self.client.lease_client().revoke(id).await;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- Redis

const REDIS_CAS: &str = r#"
local cur = redis.call('HGET', KEYS[1], 'r')
if cur ~= ARGV[1] then return -1 end
local r = tonumber(cur) + 1
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'r', r)
return r
"#;

const REDIS_UNLOCK: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// The raw Redis side: one multiplexed connection shared by every task;
/// keys `{namespace}:{key}`. get/put are `GET`/`SET`; CAS is a Lua script
/// over a hash `{v, r}` holding the value and a version; list is the
/// user's own index, a sorted set read with `ZRANGEBYLEX` then `MGET`; a
/// lock is `SET NX PX` (retried every millisecond while held) and a Lua
/// compare-and-delete; watchers are keyspace notifications (`K$`, set
/// with `CONFIG SET` for the run and restored after) on one pub/sub
/// connection, fanned out in the process.
pub struct RedisRaw {
    client: redis::Client,
    conn: redis::aio::MultiplexedConnection,
    db: i64,
    prefix: String,
    cas: redis::Script,
    unlock: redis::Script,
    saved_notify: tokio::sync::Mutex<Option<String>>,
    next_token: std::sync::atomic::AtomicU64,
}

impl RedisRaw {
    /// Connects to `redis://[user:pass@]host:port/db`.
    pub async fn connect(
        host: &str,
        port: u16,
        db: i64,
        credentials: Option<(String, String)>,
        prefix: String,
    ) -> Result<Self> {
        let info = format!("redis://{host}:{port}/{db}");
        let mut info = redis::IntoConnectionInfo::into_connection_info(info.as_str())
            .map_err(|e| err(format!("redis: invalid address: {e}")))?;
        if let Some((user, password)) = credentials {
            let mut settings = info.redis_settings().clone();
            if !user.is_empty() {
                settings = settings.set_username(&user);
            }
            settings = settings.set_password(&password);
            info = info.set_redis_settings(settings);
        }
        let client = redis::Client::open(info).map_err(|e| err(format!("redis: {e}")))?;
        let conn = tokio::time::timeout(
            Duration::from_secs(5),
            client.get_multiplexed_async_connection(),
        )
        .await
        .map_err(|_| err(format!("redis: cannot connect to {host}:{port} within 5 s")))??;
        Ok(RedisRaw {
            client,
            conn,
            db,
            prefix,
            cas: redis::Script::new(REDIS_CAS),
            unlock: redis::Script::new(REDIS_UNLOCK),
            saved_notify: tokio::sync::Mutex::new(None),
            next_token: std::sync::atomic::AtomicU64::new(1),
        })
    }

    fn k(&self, key: &str) -> String {
        format!("{}:{key}", self.prefix)
    }

    fn idx(&self) -> String {
        format!("{}:@idx", self.prefix)
    }
}

#[async_trait]
impl Kv for RedisRaw {
    fn label(&self) -> &'static str {
        "redis"
    }

    async fn put(&self, key: &str, value: &Bytes) -> Result<()> {
        let mut c = self.conn.clone();
        redis::cmd("SET")
            .arg(self.k(key))
            .arg(value.as_ref())
            .query_async::<()>(&mut c)
            .await?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let mut c = self.conn.clone();
        let v: Option<Vec<u8>> = redis::cmd("GET")
            .arg(self.k(key))
            .query_async(&mut c)
            .await?;
        Ok(v.map(Bytes::from))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let mut c = self.conn.clone();
        redis::cmd("DEL")
            .arg(self.k(key))
            .query_async::<()>(&mut c)
            .await?;
        Ok(())
    }

    async fn cas_create(&self, key: &str, value: &Bytes) -> Result<u64> {
        let mut c = self.conn.clone();
        redis::cmd("HSET")
            .arg(self.k(key))
            .arg("v")
            .arg(value.as_ref())
            .arg("r")
            .arg(1)
            .query_async::<()>(&mut c)
            .await?;
        Ok(1)
    }

    async fn version(&self, key: &str) -> Result<u64> {
        let mut c = self.conn.clone();
        let v: Option<u64> = redis::cmd("HGET")
            .arg(self.k(key))
            .arg("r")
            .query_async(&mut c)
            .await?;
        v.ok_or_else(|| err(format!("redis: {key} is missing")))
    }

    async fn cas(&self, key: &str, value: &Bytes, expected: u64) -> Result<u64> {
        let mut c = self.conn.clone();
        let r: i64 = self
            .cas
            .key(self.k(key))
            .arg(expected)
            .arg(value.as_ref())
            .invoke_async(&mut c)
            .await?;
        u64::try_from(r).map_err(|_| err(format!("redis: compare-and-swap of {key} failed")))
    }

    async fn put_listed(&self, key: &str, value: &Bytes) -> Result<()> {
        let mut c = self.conn.clone();
        redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(self.k(key))
            .arg(value.as_ref())
            .ignore()
            .cmd("ZADD")
            .arg(self.idx())
            .arg(0)
            .arg(key)
            .ignore()
            .query_async::<()>(&mut c)
            .await?;
        Ok(())
    }

    async fn delete_listed(&self, key: &str) -> Result<()> {
        let mut c = self.conn.clone();
        redis::pipe()
            .atomic()
            .cmd("DEL")
            .arg(self.k(key))
            .ignore()
            .cmd("ZREM")
            .arg(self.idx())
            .arg(key)
            .ignore()
            .query_async::<()>(&mut c)
            .await?;
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<usize> {
        let mut c = self.conn.clone();
        let keys: Vec<String> = redis::cmd("ZRANGEBYLEX")
            .arg(self.idx())
            .arg(format!("[{prefix}/"))
            .arg(format!("({prefix}0"))
            .query_async(&mut c)
            .await?;
        if keys.is_empty() {
            return Ok(0);
        }
        let full: Vec<String> = keys.iter().map(|k| self.k(k)).collect();
        let values: Vec<Option<Vec<u8>>> =
            redis::cmd("MGET").arg(&full).query_async(&mut c).await?;
        let pairs: Vec<(String, Vec<u8>)> = keys
            .into_iter()
            .zip(values)
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect();
        Ok(pairs.len())
    }

    async fn lock_release(&self, name: &str, _task: usize) -> Result<()> {
        let key = self.k(&format!("@lock:{name}"));
        let token = format!(
            "{}-{}",
            std::process::id(),
            self.next_token
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let mut c = self.conn.clone();
        loop {
            let ok: Option<String> = redis::cmd("SET")
                .arg(&key)
                .arg(&token)
                .arg("NX")
                .arg("PX")
                .arg(15_000)
                .query_async(&mut c)
                .await?;
            if ok.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let _: i64 = self
            .unlock
            .key(&key)
            .arg(&token)
            .invoke_async(&mut c)
            .await?;
        Ok(())
    }

    async fn watchers(&self, key: &str, n: usize) -> Result<Vec<ChangeStream>> {
        let mut c = self.conn.clone();
        {
            let mut saved = self.saved_notify.lock().await;
            let current: Vec<String> = redis::cmd("CONFIG")
                .arg("GET")
                .arg("notify-keyspace-events")
                .query_async(&mut c)
                .await?;
            let current = current.get(1).cloned().unwrap_or_default();
            if saved.is_none() {
                *saved = Some(current.clone());
            }
            let has = |f: char| current.contains(f);
            if !(has('K') && (has('$') || has('A'))) {
                redis::cmd("CONFIG")
                    .arg("SET")
                    .arg("notify-keyspace-events")
                    .arg(format!("{current}K$"))
                    .query_async::<()>(&mut c)
                    .await?;
            }
        }
        let mut pubsub = self.client.get_async_pubsub().await?;
        pubsub
            .subscribe(format!("__keyspace@{}__:{}", self.db, self.k(key)))
            .await?;
        let (tx, _) = tokio::sync::broadcast::channel::<()>(4096);
        let sender = tx.clone();
        let task = tokio::spawn(async move {
            let mut messages = pubsub.into_on_message();
            while messages.next().await.is_some() {
                let _ = sender.send(());
            }
        });
        let guard = Arc::new(AbortOnDrop(task.abort_handle()));
        Ok((0..n)
            .map(|_| {
                let rx = tx.subscribe();
                let guard = guard.clone();
                stream::unfold((rx, guard), |(mut rx, guard)| async move {
                    match rx.recv().await {
                        Ok(()) => Some((Ok(()), (rx, guard))),
                        Err(e) => Some((Err(err(format!("redis watch: {e}"))), (rx, guard))),
                    }
                })
                .boxed()
            })
            .collect())
    }

    async fn cleanup(&self) -> Result<()> {
        let mut c = self.conn.clone();
        if let Some(saved) = self.saved_notify.lock().await.take() {
            redis::cmd("CONFIG")
                .arg("SET")
                .arg("notify-keyspace-events")
                .arg(saved)
                .query_async::<()>(&mut c)
                .await?;
        }
        let pattern = format!("{}:*", self.prefix);
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut c)
                .await?;
            if !keys.is_empty() {
                redis::cmd("DEL")
                    .arg(&keys)
                    .query_async::<()>(&mut c)
                    .await?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

// ---------------------------------------------------------------- ZooKeeper

/// The raw ZooKeeper side: one session shared by every task; a key is the
/// znode `{root}/{namespace}/{key}` holding the value. get is `get_data`;
/// put is `set_data` (creating the node if it is absent); CAS is
/// `set_data` with the expected data version; list is `get_children` then
/// `get_data` of every child, sent together; a lock is the
/// ephemeral-sequential recipe (the lowest sequence holds it, a waiter
/// watches its predecessor); watchers are persistent watches of the node.
pub struct ZkRaw {
    client: zk::Client,
    base: String,
    dirs: Mutex<HashSet<String>>,
}

impl ZkRaw {
    /// Connects to `host:port` (with digest credentials, if given); every
    /// node lives under the absolute path `base`.
    pub async fn connect(
        cluster: &str,
        credentials: Option<(String, String)>,
        base: String,
    ) -> Result<Self> {
        let mut connector = zk::Client::connector()
            .with_session_timeout(Duration::from_secs(10))
            .with_connection_timeout(Duration::from_secs(5));
        if let Some((user, password)) = credentials {
            connector = connector.with_auth("digest", format!("{user}:{password}").as_bytes());
        }
        let client = tokio::time::timeout(Duration::from_secs(15), connector.connect(cluster))
            .await
            .map_err(|_| err(format!("zookeeper: cannot connect to {cluster}")))??;
        Ok(ZkRaw {
            client,
            base,
            dirs: Mutex::new(HashSet::new()),
        })
    }

    fn p(&self, key: &str) -> String {
        format!("{}/{key}", self.base)
    }

    fn opts() -> zk::CreateOptions<'static> {
        zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all())
    }

    async fn ensure_dir(&self, dir: &str) -> Result<()> {
        if self.dirs.lock().map_err(|_| err("poisoned"))?.contains(dir) {
            return Ok(());
        }
        match self.client.mkdir(dir, &Self::opts()).await {
            Ok(()) | Err(zk::Error::NodeExists) => {}
            Err(e) => return Err(e.into()),
        }
        self.dirs
            .lock()
            .map_err(|_| err("poisoned"))?
            .insert(dir.to_owned());
        Ok(())
    }

    async fn delete_recursive(&self, path: &str) -> Result<()> {
        let children = match self.client.list_children(path).await {
            Ok(c) => c,
            Err(zk::Error::NoNode) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let results: Vec<Result<()>> = stream::iter(children)
            .map(|c| {
                let child = format!("{path}/{c}");
                async move { Box::pin(self.delete_recursive(&child)).await }
            })
            .buffer_unordered(64)
            .collect()
            .await;
        for r in results {
            r?;
        }
        match self.client.delete(path, None).await {
            Ok(()) | Err(zk::Error::NoNode) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map(|(p, _)| p).unwrap_or("/")
}

#[async_trait]
impl Kv for ZkRaw {
    fn label(&self) -> &'static str {
        "zookeeper-client"
    }

    async fn put(&self, key: &str, value: &Bytes) -> Result<()> {
        let path = self.p(key);
        match self.client.set_data(&path, value, None).await {
            Ok(_) => Ok(()),
            Err(zk::Error::NoNode) => {
                self.ensure_dir(parent(&path)).await?;
                match self.client.create(&path, value, &Self::opts()).await {
                    Ok(_) => Ok(()),
                    Err(zk::Error::NodeExists) => {
                        self.client.set_data(&path, value, None).await?;
                        Ok(())
                    }
                    Err(e) => Err(e.into()),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        match self.client.get_data(&self.p(key)).await {
            Ok((data, _)) => Ok(Some(Bytes::from(data))),
            Err(zk::Error::NoNode) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete(&self, key: &str) -> Result<()> {
        match self.client.delete(&self.p(key), None).await {
            Ok(()) | Err(zk::Error::NoNode) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn version(&self, key: &str) -> Result<u64> {
        let (_, stat) = self.client.get_data(&self.p(key)).await?;
        Ok(stat.version as u64)
    }

    async fn cas(&self, key: &str, value: &Bytes, expected: u64) -> Result<u64> {
        let stat = self
            .client
            .set_data(&self.p(key), value, Some(expected as i32))
            .await?;
        Ok(stat.version as u64)
    }

    async fn list(&self, prefix: &str) -> Result<usize> {
        let dir = self.p(prefix);
        let children = match self.client.list_children(&dir).await {
            Ok(c) => c,
            Err(zk::Error::NoNode) => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        let reads = futures::future::join_all(children.iter().map(|c| {
            let path = format!("{dir}/{c}");
            let client = self.client.clone();
            async move { client.get_data(&path).await }
        }))
        .await;
        let mut pairs = Vec::with_capacity(children.len());
        for (name, r) in children.into_iter().zip(reads) {
            match r {
                Ok((data, _)) => pairs.push((name, data)),
                Err(zk::Error::NoNode) => {}
                Err(e) => return Err(e.into()),
            }
        }
        pairs.sort();
        Ok(pairs.len())
    }

    async fn lock_release(&self, name: &str, _task: usize) -> Result<()> {
        let dir = self.p(&format!("@locks/{name}"));
        self.ensure_dir(&dir).await?;
        let mode = zk::CreateMode::EphemeralSequential.with_acls(zk::Acls::anyone_all());
        let (_, seq) = self
            .client
            .create(&format!("{dir}/lock-"), b"", &mode)
            .await?;
        let mine = format!("lock-{seq}");
        loop {
            let mut children = self.client.list_children(&dir).await?;
            children.sort();
            let Some(pos) = children.iter().position(|c| *c == mine) else {
                return Err(err("zookeeper: the lock node vanished"));
            };
            if pos == 0 {
                break;
            }
            let pred = format!("{dir}/{}", children[pos - 1]);
            let (stat, watcher) = self.client.check_and_watch_stat(&pred).await?;
            if stat.is_some() {
                watcher.changed().await;
            }
        }
        self.client.delete(&format!("{dir}/{mine}"), None).await?;
        Ok(())
    }

    async fn watchers(&self, key: &str, n: usize) -> Result<Vec<ChangeStream>> {
        let path = self.p(key);
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let w = self
                .client
                .watch(&path, zk::AddWatchMode::Persistent)
                .await?;
            out.push(
                stream::unfold(w, |mut w| async move {
                    loop {
                        let e = w.changed().await;
                        match e.event_type {
                            zk::EventType::NodeDataChanged => return Some((Ok(()), w)),
                            zk::EventType::Session if e.session_state.is_terminated() => {
                                return Some((Err(err("zookeeper: the session ended")), w))
                            }
                            _ => {}
                        }
                    }
                })
                .boxed(),
            );
        }
        Ok(out)
    }

    async fn cleanup(&self) -> Result<()> {
        self.delete_recursive(&self.base).await
    }
}
