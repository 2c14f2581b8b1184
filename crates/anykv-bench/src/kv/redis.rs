//! The raw Redis side: the `redis` crate, with Lua scripts for
//! compare-and-swap and unlock, and keyspace notifications for watches.

use std::sync::Arc;
use std::time::Duration;

use anykv::Bytes;
use async_trait::async_trait;
use futures::stream::{self, StreamExt};

use super::{err, ChangeStream, Kv, Result};
use crate::Workload;

const REDIS_CAS: &str = r#"
local cur = redis.call('HGET', KEYS[1], 'r')
if cur ~= ARGV[1] then return -1 end
local r = tonumber(cur) + 1
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'r', r)
return r
"#;

const REDIS_TXN2: &str = r#"
local ra = redis.call('HGET', KEYS[1], 'r')
local rb = redis.call('HGET', KEYS[2], 'r')
if ra ~= ARGV[1] or rb ~= ARGV[2] then return {-1, -1} end
local na, nb = tonumber(ra) + 1, tonumber(rb) + 1
redis.call('HSET', KEYS[1], 'v', ARGV[3], 'r', na)
redis.call('HSET', KEYS[2], 'v', ARGV[3], 'r', nb)
return {na, nb}
"#;

/// `put-min`: the least work a store with revisions and a change feed
/// must do for a write, by hand. KEYS: the revision counter, the change
/// stream, the key. ARGV: the key's name in the stream, the value, the
/// stream's length bound. The value is stored with its revision in a
/// header, as anykv stores it, so a `GET` returns both.
const REDIS_PUT_MIN: &str = r#"
local rev = redis.call('INCR', KEYS[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], rev .. '-0', 'k', ARGV[1], 't', 'p', 'v', ARGV[2])
redis.call('SET', KEYS[3], rev .. '  \n' .. ARGV[2])
return rev
"#;

/// `cas-min`: as `put-min`, after reading the key's revision from its
/// header and comparing it with ARGV[4]; -1 if it differs.
const REDIS_CAS_MIN: &str = r#"
local cur = redis.call('GETRANGE', KEYS[3], 0, 63)
if string.match(cur, '^(%d+) ') ~= ARGV[4] then return -1 end
local rev = redis.call('INCR', KEYS[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], rev .. '-0', 'k', ARGV[1], 't', 'p', 'v', ARGV[2])
redis.call('SET', KEYS[3], rev .. '  \n' .. ARGV[2])
return rev
"#;

/// The change stream's length bound of the minimum-work scripts: anykv's
/// default history.
const HISTORY: usize = anykv::redis::DEFAULT_HISTORY;

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
    txn2: redis::Script,
    put_min: redis::Script,
    cas_min: redis::Script,
    /// The minimum-work scripts' revision counter and change stream.
    min_counter: String,
    min_log: String,
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
            cas: redis::Script::new(REDIS_CAS),
            txn2: redis::Script::new(REDIS_TXN2),
            put_min: redis::Script::new(REDIS_PUT_MIN),
            cas_min: redis::Script::new(REDIS_CAS_MIN),
            min_counter: format!("{prefix}:@rev"),
            min_log: format!("{prefix}:@log"),
            prefix,
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

    async fn min_write(&self, key: &str, value: &Bytes, expected: Option<u64>) -> Result<i64> {
        let mut c = self.conn.clone();
        let script = match expected {
            Some(_) => &self.cas_min,
            None => &self.put_min,
        };
        let mut call = script.key(&self.min_counter);
        call.key(&self.min_log)
            .key(self.k(key))
            .arg(key)
            .arg(value.as_ref())
            .arg(HISTORY);
        if let Some(e) = expected {
            call.arg(e);
        }
        Ok(call.invoke_async(&mut c).await?)
    }

    /// Deletes every key of the database that matches the glob `pattern`
    /// (`SCAN MATCH`, then `DEL`).
    pub async fn delete_matching(&self, pattern: &str) -> Result<()> {
        let mut c = self.conn.clone();
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
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

#[async_trait]
impl Kv for RedisRaw {
    fn label(&self) -> &'static str {
        "redis"
    }

    fn supports(&self, _workload: Workload) -> bool {
        true
    }

    async fn put_min(&self, key: &str, value: &Bytes) -> Result<()> {
        self.min_write(key, value, None).await?;
        Ok(())
    }

    async fn cas_min_create(&self, key: &str, value: &Bytes) -> Result<u64> {
        let r = self.min_write(key, value, None).await?;
        u64::try_from(r).map_err(|_| err(format!("redis: creating {key} failed")))
    }

    async fn cas_min(&self, key: &str, value: &Bytes, expected: u64) -> Result<u64> {
        let r = self.min_write(key, value, Some(expected)).await?;
        u64::try_from(r).map_err(|_| err(format!("redis: compare-and-swap of {key} failed")))
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

    async fn txn2(
        &self,
        a: &str,
        b: &str,
        value: &Bytes,
        expected: (u64, u64),
    ) -> Result<(u64, u64)> {
        let mut c = self.conn.clone();
        let (na, nb): (i64, i64) = self
            .txn2
            .key(self.k(a))
            .key(self.k(b))
            .arg(expected.0)
            .arg(expected.1)
            .arg(value.as_ref())
            .invoke_async(&mut c)
            .await?;
        if na < 0 || nb < 0 {
            return Err(err("redis: a two-key transaction failed its compares"));
        }
        Ok((na as u64, nb as u64))
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
        self.delete_matching(&format!("{}:*", self.prefix)).await
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
